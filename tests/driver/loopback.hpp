// Pieces the driver tests share: a connected loopback TCP pair, a TLS server context with the test
// certificate (signed for localhost and 127.0.0.1), reads driven to completion, and a TLS
// connection over loopback with the sidecar's tls_stream (or Asio's TLS stream) as its client.
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "proxy/asio.hpp"
#include "proxy/upstream/tls_stream.hpp"
#include "tests/support/harness.hpp"

namespace redis_sidecar::test {

/// A connected loopback TCP pair on `io`: {client, server}, both with TCP_NODELAY.
inline std::pair<tcp::socket, tcp::socket> loopback_pair(asio::io_context& io) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  tcp::socket server(io);
  acceptor.accept(server);
  client.set_option(tcp::no_delay(true));
  server.set_option(tcp::no_delay(true));
  return {std::move(client), std::move(server)};
}

/// A TLS server context presenting the test server certificate.
inline ssl::context test_server_context() {
  ssl::context ctx(ssl::context::tls_server);
  ctx.use_certificate_chain_file(test_certificates().server_crt);
  ctx.use_private_key_file(test_certificates().server_key, ssl::context::pem);
  return ctx;
}

/// What one read returned.
struct read_result {
  error_code ec;
  std::string bytes;
};

/// Runs `io` until `done()`; fails the test after 10 s (a guard against a hang, not a timing).
template <typename Done>
void run_until(asio::io_context& io, Done done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done() && std::chrono::steady_clock::now() < until) {
    io.restart();  // a loop that ran out of work (the last read done) has stopped
    io.run_one_for(std::chrono::milliseconds(100));
  }
  REQUIRE(done());
}

/// Starts one async_read_some of `stream` into `buf`, `room` bytes, as a `Buffer`; the result
/// lands in `out` when it completes.
template <typename Buffer, typename Stream>
void start_read_into(Stream& stream, std::string& buf, std::size_t room,
                     std::optional<read_result>& out) {
  buf.assign(room, '\0');
  stream.async_read_some(Buffer{asio::mutable_buffer(buf.data(), room)},
                         [&buf, &out](error_code ec, std::size_t n) {
                           out = read_result{ec, buf.substr(0, n)};
                         });
}

// The helpers below drive a `Pair`: anything with an `io` and a
// `start_read(std::string& buf, std::size_t room, std::optional<read_result>& out)`.

/// Runs `p`'s loop until the read that fills `out` completes.
template <typename Pair>
read_result finish(Pair& p, std::optional<read_result>& out) {
  run_until(p.io, [&] { return out.has_value(); });
  return *out;
}

/// One read of up to `room` bytes, run to completion.
template <typename Pair>
read_result read_once(Pair& p, std::size_t room) {
  std::string buf;
  std::optional<read_result> out;
  p.start_read(buf, room, out);
  return finish(p, out);
}

/// Starts a read of up to `room` bytes and lets the loop look a few times: with nothing to read,
/// the read must wait.
template <typename Pair>
void start_waiting_read(Pair& p, std::string& buf, std::optional<read_result>& out,
                        std::size_t room = 64) {
  p.start_read(buf, room, out);
  p.io.restart();
  for (int i = 0; i < 5; ++i) p.io.poll();
  REQUIRE_FALSE(out.has_value());
}

/// A TLS connection over loopback, as the sidecar's upstream: `client` is a `Client` (the
/// sidecar's tls_stream, or Asio's ssl::stream over a plain socket for comparison) on `io`;
/// `server` is Asio's TLS server with the test certificate, driven by the test. Both handshakes
/// are the test's to run (`handshake()`).
template <typename Client = tls_stream>
struct tls_loopback {
  static constexpr bool sidecar_tls = std::is_same_v<Client, tls_stream>;

  asio::io_context io{1};
  ssl::context client_ctx{ssl::context::tls_client};
  ssl::context server_ctx = test_server_context();
  std::optional<Client> client;
  std::optional<ssl::stream<tcp::socket>> server;

  /// The client trusts `ca`, but checks the server's certificate only when `handshake()` is
  /// given a name.
  explicit tls_loopback(const std::string& ca = test_certificates().ca_crt) {
    client_ctx.load_verify_file(ca);
    auto [c, s] = loopback_pair(io);
    client.emplace(std::move(c), client_ctx);
    server.emplace(std::move(s), server_ctx);
    if constexpr (sidecar_tls) REQUIRE(client->ok());
  }

  /// Runs both handshakes; returns the client's error. A tls_stream client verifies the server's
  /// certificate against `name` when it is not empty.
  error_code handshake(const std::string& name = {}) {
    std::optional<error_code> client_ec, server_ec;
    if constexpr (sidecar_tls) {
      if (!name.empty()) client->verify_peer(name);
      asio::co_spawn(io, client->handshake(), [&](std::exception_ptr, std::tuple<error_code> r) {
        client_ec = std::get<0>(r);
      });
    } else {
      client->async_handshake(ssl::stream_base::client, [&](error_code ec) { client_ec = ec; });
    }
    server->async_handshake(ssl::stream_base::server, [&](error_code ec) { server_ec = ec; });
    run_until([&] { return client_ec && server_ec; });
    return *client_ec;
  }

  template <typename Done>
  void run_until(Done done) {
    test::run_until(io, done);
  }

  /// Writes `bytes` from the server, in TLS records.
  void send(std::string_view bytes) {
    REQUIRE(asio::write(*server, asio::buffer(bytes.data(), bytes.size())) == bytes.size());
  }

  /// Starts one read of the client into `buf`, `room` bytes; `out` is set when it completes.
  void start_read(std::string& buf, std::size_t room, std::optional<read_result>& out) {
    if constexpr (sidecar_tls) {
      buf.assign(room, '\0');
      asio::co_spawn(io, client->read_some(asio::mutable_buffer(buf.data(), room)),
                     [&buf, &out](std::exception_ptr, std::tuple<error_code, std::size_t> r) {
                       out = read_result{std::get<0>(r), buf.substr(0, std::get<1>(r))};
                     });
    } else {
      start_read_into<asio::mutable_buffer>(*client, buf, room, out);
    }
  }

  /// Reads from the client until `want` bytes came or a read failed: all the bytes, and the error
  /// (none when all came).
  read_result read(std::size_t want, std::size_t room = 8192) {
    read_result all;
    while (all.bytes.size() < want && !all.ec) {
      const read_result r = read_once(*this, room);
      all.ec = r.ec;
      all.bytes += r.bytes;
    }
    return all;
  }
};

}  // namespace redis_sidecar::test
