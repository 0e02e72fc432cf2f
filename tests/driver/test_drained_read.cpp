// drained_read_buffer: a read of a TCP socket that left nothing queued makes the next read wait for
// the next readiness event, without the recv() that Asio would otherwise try first (and that fails
// with EAGAIN); nothing is ever left behind: bytes that arrive between two reads, bytes beyond a
// read that filled its buffer, and the end of the stream, also when it comes with the last bytes,
// all reach the next read. Without the kernel's hint, reads behave as Asio's own.
//
// recv() and recvmsg() are counted by defining them in this executable (calls from Asio's inline
// code and from drained_read.hpp bind to them), forwarding to the system calls.
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>

#include "proxy/drained_read.hpp"
#include "proxy/upstream/tls_stream.hpp"
#include "tests/driver/loopback.hpp"
#include "tests/support/harness.hpp"

namespace {
std::atomic<long> recv_calls{0};
}  // namespace

extern "C" ssize_t recv(int fd, void* buf, size_t n, int flags) {
  ++recv_calls;
  return ::syscall(SYS_recvfrom, fd, buf, n, flags, nullptr, nullptr);
}

extern "C" ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  ++recv_calls;
  return ::syscall(SYS_recvmsg, fd, msg, flags);
}

namespace redis_sidecar {
namespace {

using namespace std::chrono_literals;

using plain_buffer = asio::mutable_buffer;
using test::finish;
using test::read_once;
using test::read_result;
using test::start_waiting_read;

// A connected loopback TCP pair: `reader` on an io_context, read into a `Buffer`; `peer` written
// to directly.
template <typename Buffer>
struct tcp_pair {
  asio::io_context io{1};
  tcp::socket reader{io};
  tcp::socket peer{io};

  explicit tcp_pair(bool hint = true) {
    std::tie(peer, reader) = test::loopback_pair(io);
    if (hint) REQUIRE(enable_drained_reads(reader.native_handle()) == drained_reads_supported);
  }

  void send(std::string_view bytes) {
    REQUIRE(asio::write(peer, asio::buffer(bytes.data(), bytes.size())) == bytes.size());
  }

  void start_read(std::string& buf, std::size_t room, std::optional<read_result>& out) {
    test::start_read_into<Buffer>(reader, buf, room, out);
  }
};

// A TLS connection over loopback, as the sidecar's upstream, with the handshakes done (the client
// verifies nothing: reads are under test here): `client` is the sidecar's tls_stream, or, with
// `Client` = Asio's ssl::stream over a plain socket, Asio's, for comparison.
template <typename Client = tls_stream>
struct tls_pair : test::tls_loopback<Client> {
  tls_pair() { REQUIRE_FALSE(this->handshake()); }
};

}  // namespace

// Reads "abc", sent while the read waits (as the sidecar's reads wait for Redis), then starts the
// next read while nothing is queued and lets the loop look once: returns the recv()/recvmsg()
// calls that made, before `next` arrives and completes the read. ("abc" is not sent before its
// read starts: a read that takes bytes at once leaves their readiness event to come, and that
// event makes the next read try at once, as it must when nothing else is known.)
template <typename Pair>
long recvs_before_waiting(Pair& p, std::string_view next) {
  {
    std::string buf;
    std::optional<read_result> first;
    start_waiting_read(p, buf, first);
    p.send("abc");
    CHECK(finish(p, first).bytes == "abc");
  }
  std::string buf;
  std::optional<read_result> out;
  const long before = recv_calls;
  start_waiting_read(p, buf, out);
  const long calls = recv_calls - before;
  p.send(next);
  const read_result r = finish(p, out);
  CHECK_FALSE(r.ec);
  CHECK(r.bytes == next);
  return calls;
}

TEST_CASE("after a read that left nothing queued, the next waits for data without a recv first",
          "[drained_read]") {
  tcp_pair<drained_read_buffer> p;
  CHECK(recvs_before_waiting(p, "defg") == (drained_reads_supported ? 0 : 1));
}

TEST_CASE("Asio's own reads try recv first, and fail, after a short read", "[drained_read]") {
  // What drained_read_buffer saves; also shows that the recv counter sees Asio's calls.
  tcp_pair<plain_buffer> p;
  CHECK(recvs_before_waiting(p, "d") == 1);
}

TEST_CASE("without the kernel's hint, reads into a drained_read_buffer try recv first",
          "[drained_read]") {
  tcp_pair<drained_read_buffer> p(false);
  CHECK(recvs_before_waiting(p, "d") == 1);
}

TEST_CASE("the last bytes and the end of the stream, arriving together, are both read",
          "[drained_read]") {
  // The read is waiting when both come: one readiness event brings the bytes and the FIN. A rule
  // "a short read drained the socket" would leave the end of the stream unread, with no event to
  // come.
  tcp_pair<drained_read_buffer> p;
  std::string buf;
  std::optional<read_result> out;
  start_waiting_read(p, buf, out);
  p.send("bye");
  p.peer.shutdown(tcp::socket::shutdown_send);
  std::this_thread::sleep_for(20ms);  // both land before the loop looks
  const read_result last = finish(p, out);
  CHECK_FALSE(last.ec);
  CHECK(last.bytes == "bye");
  const read_result end = read_once(p, 64);
  CHECK(end.ec == asio::error::eof);
}

TEST_CASE("bytes that arrive between a short read and the next read are read", "[drained_read]") {
  tcp_pair<drained_read_buffer> p;
  std::string buf;
  std::optional<read_result> first;
  p.start_read(buf, 64, first);
  p.send("one");
  CHECK(finish(p, first).bytes == "one");
  // The reader has seen its short read; the peer writes before the next read starts.
  p.send("two");
  std::this_thread::sleep_for(20ms);  // let the bytes land (the test passes without it too)
  CHECK(read_once(p, 64).bytes == "two");

  // Again, with a pass of the reactor between the two reads: it sees the bytes' readiness event
  // while no read waits, so the next read must try at once (no other event is coming).
  p.send("three");
  std::this_thread::sleep_for(20ms);
  {
    auto work = asio::make_work_guard(p.io);
    p.io.restart();
    p.io.poll();
  }
  CHECK(read_once(p, 64).bytes == "three");
}

TEST_CASE("a read that fills its buffer is followed by reads that get the rest at once",
          "[drained_read]") {
  tcp_pair<drained_read_buffer> p;
  p.send("0123456789");
  std::string got;
  while (got.size() < 10) {
    const read_result r = read_once(p, 4);
    REQUIRE_FALSE(r.ec);
    got += r.bytes;
  }
  CHECK(got == "0123456789");
}

TEST_CASE("the end of the stream after a short read reaches the next read", "[drained_read]") {
  tcp_pair<drained_read_buffer> p;
  p.send("last");
  CHECK(read_once(p, 64).bytes == "last");
  p.peer.close();
  const read_result r = read_once(p, 64);
  CHECK(r.ec == asio::error::eof);
  CHECK(r.bytes.empty());
}

// Writes `size` random bytes to `peer` from another thread, in pieces of up to `max_piece` with
// random pauses, then ends the stream (`peer_socket`: the TCP socket under `peer`); reads them
// back through `p` with reads of random sizes, and checks that every byte arrived. Returns the
// error the last read ended with.
template <typename Pair, typename Peer>
error_code check_random_stream(Pair& p, Peer& peer, tcp::socket& peer_socket, std::size_t size,
                               std::size_t max_piece) {
  std::string sent;
  std::mt19937 rng(7);
  for (std::size_t i = 0; i < size; ++i) sent.push_back(static_cast<char>('a' + rng() % 26));
  std::thread writer([&] {
    std::mt19937 r(11);
    std::size_t at = 0;
    while (at < sent.size()) {
      const std::size_t n = std::min<std::size_t>(1 + r() % max_piece, sent.size() - at);
      asio::write(peer, asio::buffer(sent.data() + at, n));
      at += n;
      if (r() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(r() % 300));
    }
    peer_socket.shutdown(tcp::socket::shutdown_send);
  });
  std::string got;
  std::mt19937 sizes(13);
  error_code ec;
  while (!ec) {
    const read_result r = read_once(p, 1 + sizes() % 8192);
    got += r.bytes;
    ec = r.ec;
  }
  writer.join();
  CHECK(got.size() == sent.size());
  CHECK(got == sent);
  return ec;
}

TEST_CASE("every byte of a stream written in random pieces with pauses is read", "[drained_read]") {
  tcp_pair<drained_read_buffer> p;
  CHECK(check_random_stream(p, p.peer, p.peer, 200'000, 5000) == asio::error::eof);
}

TEST_CASE("TLS reads wait for the next record without a recv first", "[drained_read][tls]") {
  // tls_stream reads the socket with drained reads; Asio's SSL layer over a plain socket tries
  // recv first.
  tls_pair drained;
  CHECK(recvs_before_waiting(drained, "defg") == (drained_reads_supported ? 0 : 1));
  tls_pair<ssl::stream<tcp::socket>> asio_tls;
  CHECK(recvs_before_waiting(asio_tls, "defg") == 1);
}

TEST_CASE("every byte of a TLS stream written in random pieces with pauses is read",
          "[drained_read][tls]") {
  // Records split across reads, several records in one read, reads of a few bytes out of a
  // buffered record: every byte must still arrive. The stream ends without a TLS close_notify:
  // the read sees the socket's end of the stream.
  tls_pair p;
  CHECK(check_random_stream(p, *p.server, p.server->next_layer(), 300'000, 40'000) ==
        asio::error::eof);
}

}  // namespace redis_sidecar
