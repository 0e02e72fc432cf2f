// drained_read: reads of a TCP socket that skip the recv() Asio would try, and see fail, before
// each wait for data.
//
// Why. Asio (1.81, epoll) starts every read with a speculative recv(), and stops doing so only
// after a read of 0 bytes, until the next readiness event. A client that sends one request and
// waits for its reply (-P 1) thus costs the sidecar two recv() per request, one of which fails
// with EAGAIN. A system call costs 1.2-1.4 us on the VMs measured here (bench/RESULTS.md), about
// 7 % of the sidecar's CPU for a request at -c 50 -P 1. Waiting for readiness instead
// (socket::async_wait) is no cheaper: Asio re-arms the descriptor with an epoll_ctl per wait.
//
// How. Asio registers a socket with epoll once, edge-triggered, and keeps a per-descriptor flag
// "try reads at once", cleared when a read reports `done_and_exhausted` (Asio's own reads do so at
// the end of the stream) and set again by the next readiness event. Reads into a
// drained_read_buffer use recvmsg() with the kernel's TCP_INQ hint (Linux 4.18): the bytes still
// queued after the read, and 1 when a FIN has arrived, so that the end of the stream is read too.
// A hint of 0 reports done_and_exhausted: nothing is left to read, and anything that arrives later
// is a new readiness event. A short read alone would not do: the last bytes and the FIN often
// arrive together, and the end of the stream would then wait for an event that never comes.
//
// A connection reset that arrives with the last bytes, before they are read, is not in the hint:
// it comes in the same readiness event as they do, so neither the next read nor the next wait sees
// it; only a write to the socket, or its pending error (SO_ERROR), does. Upstream connections ask
// for that error after each quiet watchdog period (connection::watchdog), and the server asks every
// TCP client that read nothing for a second (server::reset_sweep): a client that reset in the
// middle of a request, or with replies off, gets no reply whose write would fail.
//
// Use: enable_drained_reads() once per socket (it asks for the hint), then read into
// drained_read_buffer (under TLS, tls_stream does so). Without the hint (not TCP, an older kernel,
// not enabled) no read reports done_and_exhausted and reads behave exactly as Asio's own. Only for
// TCP sockets: recvmsg() with room for control messages would accept descriptors passed over a unix
// socket.
//
// This specializes an Asio detail class template for a type of our own; it is compiled in only for
// the Boost version it was written against (1.81, the fixed stack). With another version
// drained_read_buffer is an ordinary buffer.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/version.hpp>
#include <cerrno>
#include <cstring>

#include "proxy/asio.hpp"

namespace redis_sidecar {

/// One mutable buffer, as a buffer sequence of its own type (see above).
struct drained_read_buffer {
  asio::mutable_buffer buffer;

  const asio::mutable_buffer* begin() const { return &buffer; }
  const asio::mutable_buffer* end() const { return &buffer + 1; }
};

/// True when reads into a drained_read_buffer can skip the speculative recv() (Boost 1.81).
inline constexpr bool drained_reads_supported = BOOST_VERSION == 108100;

/// Asks the kernel for the TCP_INQ hint on `fd`, a TCP socket. False when it cannot (reads into a
/// drained_read_buffer then behave as Asio's own).
inline bool enable_drained_reads(int fd) {
  if (!drained_reads_supported) return false;
  const int on = 1;
  return ::setsockopt(fd, IPPROTO_TCP, TCP_INQ, &on, sizeof on) == 0;
}

/// The pending error of socket `fd` (SO_ERROR, which clears it), 0 when none or on failure: where
/// a reset that came with the last bytes shows, since drained reads do not report it (see above).
inline int pending_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (fd < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return 0;
  return err;
}

}  // namespace redis_sidecar

#if BOOST_VERSION == 108100

namespace boost::asio::detail {

// As Asio's reactive_socket_recv_op_base (detail/reactive_socket_recv_op.hpp, 1.81), reading with
// recvmsg() and reporting done_and_exhausted when the TCP_INQ hint says nothing is left.
template <>
class reactive_socket_recv_op_base<redis_sidecar::drained_read_buffer> : public reactor_op {
 public:
  reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                               socket_ops::state_type state,
                               const redis_sidecar::drained_read_buffer& buffers,
                               socket_base::message_flags flags, func_type complete_func)
      : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func),
        socket_(socket),
        state_(state),
        buffer_(buffers.buffer),
        flags_(flags) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<reactive_socket_recv_op_base*>(base);
    const bool stream = (o->state_ & socket_ops::stream_oriented) != 0;
    iovec iov{o->buffer_.data(), o->buffer_.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
      n = ::recvmsg(o->socket_, &msg, o->flags_);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return not_done;
      o->ec_ = boost::system::error_code(errno, boost::asio::error::get_system_category());
      o->bytes_transferred_ = 0;
      return stream ? done_and_exhausted : done;  // as Asio's own reads of 0 bytes
    }
    o->bytes_transferred_ = static_cast<std::size_t>(n);
    if (n == 0 && stream) {
      o->ec_ = boost::asio::error::eof;
      return done_and_exhausted;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == IPPROTO_TCP && c->cmsg_type == TCP_CM_INQ &&
          c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int queued = 0;
        std::memcpy(&queued, CMSG_DATA(c), sizeof queued);
        if (queued == 0) return done_and_exhausted;
      }
    }
    return done;
  }

 private:
  socket_type socket_;
  socket_ops::state_type state_;
  boost::asio::mutable_buffer buffer_;
  socket_base::message_flags flags_;
};

}  // namespace boost::asio::detail

#endif
