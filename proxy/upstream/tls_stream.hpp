// tls_stream: a TLS client stream over a TCP socket, OpenSSL driven directly, for upstream
// connections.
//
// Why not asio::ssl::stream. Its engine moves every byte through a BIO pair: the socket is read 17
// KiB at a time into the engine's buffer, copied into the pair, copied again into OpenSSL's record
// buffer, decrypted, and copied out; writes take the same path back. A 100 KB reply crossed about
// 285 KB of copies inside OpenSSL and the engine, in six or more reads (bench/RESULTS.md). Here
// OpenSSL reads its records through a BIO of our own straight from one input buffer, which the
// socket fills with as much as the kernel holds, and writes its records into one output buffer
// that goes to the socket in one write.
//
// The socket's reads are drained reads (drained_read.hpp): after a read that left nothing queued,
// the next one waits for data without a recv() that fails first, as the plaintext upstream does.
//
// Use from one thread (the connection's), one read and one write at a time, as a stream: a read
// may run while a write is out. What OpenSSL writes while it reads (an alert, a key update's
// answer) goes out with the next write, ahead of its records, as TLS requires. Renegotiation is
// refused (TLS 1.2 servers may ask; Redis does not).
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <string>
#include <tuple>
#include <utility>

#include "proxy/asio.hpp"
#include "proxy/drained_read.hpp"
#include "proxy/read_buffer.hpp"

namespace redis_sidecar {

class tls_stream {
 public:
  /// Takes the connected socket over. The context's settings (CA, client certificate, versions,
  /// session cache) apply; `ok()` is false if OpenSSL could not make the session object.
  tls_stream(tcp::socket socket, ssl::context& ctx);
  ~tls_stream();
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;

  bool ok() const { return ssl_ != nullptr; }
  SSL* native_handle() { return ssl_; }
  tcp::socket& socket() { return socket_; }

  /// Verifies the server's certificate against `name` (a host name or an IP literal) during the
  /// handshake.
  void verify_peer(const std::string& name);

  /// The client handshake. Errors: the socket's, or OpenSSL's (asio::error::get_ssl_category()).
  awaitable<std::tuple<error_code>> handshake();

  /// Reads and decrypts at least one byte into `buf` (more when more records are buffered).
  /// asio::error::eof after the server's close_notify; the socket's error when it failed.
  awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer buf);

  /// Encrypts all of `buf` and writes it; then `handler(error_code, bytes)`, from the executor.
  template <typename Handler>
  void async_write(asio::const_buffer buf, Handler&& handler) {
    send_output(encrypt(buf), buf.size(), std::forward<Handler>(handler));
  }

  /// As async_write, but tries the socket at once (it must be non-blocking): when it takes every
  /// byte, returns true and never calls `handler`, the write is over. Otherwise what it did not
  /// take goes out as async_write's does, and `handler` is called then.
  template <typename Handler>
  bool write_now_or_async(asio::const_buffer buf, Handler&& handler) {
    // No write is out (the caller's writes take turns): a large one's records are let go.
    release_if_above(sending_, max_kept_output);
    const error_code ec = encrypt(buf);
    if (!ec) {
      error_code wec;  // would_block, or the socket's error, which async_write meets again
      const std::size_t n = socket_.write_some(asio::buffer(out_), wec);
      if (!wec && n == out_.size()) {
        out_.clear();
        release_if_above(out_, max_kept_output);
        return true;
      }
      if (!wec) out_.erase(0, n);
    }
    send_output(ec, buf.size(), std::forward<Handler>(handler));
    return false;
  }

  /// As async_write, awaited.
  awaitable<std::tuple<error_code, std::size_t>> write(asio::const_buffer buf);

 private:
  friend struct tls_stream_bio;
  // Room for four full TLS records (16 KiB of plaintext each): one read of the socket takes what
  // a large reply has queued. A read starts with at least a quarter of it free.
  static constexpr std::size_t input_size = 64 * 1024;
  // Output buffers grown past this for one large write are let go once it is out.
  static constexpr std::size_t max_kept_output = 1024 * 1024;

  error_code encrypt(asio::const_buffer buf);
  /// The end of a write of `bytes` plaintext bytes: `handler` gets encrypt()'s error `ec` from the
  /// executor, or the records in out_ go out and it gets the socket's result.
  template <typename Handler>
  void send_output(error_code ec, std::size_t bytes, Handler&& handler) {
    if (ec) {
      asio::post(socket_.get_executor(),
                 [h = std::forward<Handler>(handler), ec]() mutable { h(ec, std::size_t{0}); });
      return;
    }
    asio::async_write(socket_, take_output(),
                      [h = std::forward<Handler>(handler), bytes](
                          error_code e, std::size_t) mutable { h(e, e ? std::size_t{0} : bytes); });
  }
  /// Moves the records in out_ to sending_, for the write that goes out now.
  asio::const_buffer take_output() {
    sending_.swap(out_);
    out_.clear();
    return asio::buffer(sending_);
  }
  error_code ssl_error(int ret);
  /// Reads what the socket holds into in_ (waits for at least one byte).
  awaitable<error_code> fill();

  tcp::socket socket_;
  SSL* ssl_ = nullptr;
  //   in_: [ consumed by OpenSSL | unread TLS bytes | room ]
  //                              ^ in_start_        ^ in_end_
  read_buffer in_;
  std::size_t in_start_ = 0;
  std::size_t in_end_ = 0;
  error_code socket_error_;  // the socket's last read failed: every read after fails alike
  std::string out_;          // TLS records not yet handed to the socket
  std::string sending_;      // the records of the write that is out
};

}  // namespace redis_sidecar
