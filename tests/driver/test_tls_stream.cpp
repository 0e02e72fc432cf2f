// tls_stream, the upstream's TLS client, against Asio's TLS server over loopback: the handshake and
// its certificate checks, large writes and reads in both directions at once, the server's
// close_notify, bytes that are not TLS, records read together, and errors that other connections
// left in the thread's OpenSSL error queue. Reads byte by byte are in test_drained_read.cpp.
#include <openssl/err.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <tuple>

#include "proxy/upstream/tls_stream.hpp"
#include "tests/driver/loopback.hpp"
#include "tests/support/harness.hpp"

namespace redis_sidecar {
namespace {

using namespace std::chrono_literals;

// A loopback TCP pair whose client side is a tls_stream and whose server side is Asio's TLS server
// with the test certificates; the handshakes are each test's.
using tls_setup = test::tls_loopback<>;
using test::read_result;

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

}  // namespace

TEST_CASE("tls_stream verifies the server's certificate by host name and by IP address",
          "[tls_stream]") {
  {
    tls_setup t;
    CHECK_FALSE(t.handshake("localhost"));
    CHECK(SSL_get_verify_result(t.client->native_handle()) == X509_V_OK);
  }
  {
    tls_setup t;
    CHECK_FALSE(t.handshake("127.0.0.1"));
  }
  {
    tls_setup t;
    const error_code ec = t.handshake("not-this-host.example");
    CHECK(ec.category() == asio::error::get_ssl_category());
    CHECK(SSL_get_verify_result(t.client->native_handle()) == X509_V_ERR_HOSTNAME_MISMATCH);
  }
  {
    tls_setup t;
    CHECK(t.handshake("127.0.0.2"));
    CHECK(SSL_get_verify_result(t.client->native_handle()) == X509_V_ERR_IP_ADDRESS_MISMATCH);
  }
  {
    tls_setup t(test::test_certificates().other_ca_crt);
    CHECK(t.handshake("localhost"));
    CHECK(SSL_get_verify_result(t.client->native_handle()) != X509_V_OK);
  }
}

TEST_CASE("tls_stream moves a megabyte each way at once, every byte intact", "[tls_stream]") {
  tls_setup t;
  REQUIRE_FALSE(t.handshake("localhost"));
  const std::string up = random_bytes(1 << 20, 1);
  const std::string down = random_bytes(1 << 20, 2);

  // The client writes a megabyte while the server writes one back, before either reads: neither
  // write can finish until the other side reads, so the client's read runs while its write is out.
  std::optional<error_code> client_wrote;
  t.client->async_write(asio::buffer(up), [&](error_code ec, std::size_t n) {
    CHECK(n == (ec ? 0 : up.size()));
    client_wrote = ec;
  });
  std::optional<error_code> server_wrote;
  asio::async_write(*t.server, asio::buffer(down),
                    [&](error_code ec, std::size_t) { server_wrote = ec; });
  std::string server_got(up.size(), '\0');
  std::optional<error_code> server_read;
  asio::async_read(*t.server, asio::buffer(server_got),
                   [&](error_code ec, std::size_t) { server_read = ec; });

  const auto [ec, got] = t.read(down.size(), 65536);
  CHECK_FALSE(ec);
  CHECK(got == down);
  t.run_until([&] { return client_wrote && server_wrote && server_read; });
  CHECK_FALSE(*client_wrote);
  CHECK_FALSE(*server_read);
  CHECK(server_got == up);
}

TEST_CASE("tls_stream writes at once what the socket takes, and the rest asynchronously",
          "[tls_stream]") {
  tls_setup t;
  REQUIRE_FALSE(t.handshake("localhost"));
  error_code ignored;
  t.client->socket().non_blocking(true, ignored);
  bool called = false;
  // A small write: the socket takes it whole, the write is over, no handler runs.
  const std::string small = "*1\r\n$4\r\nPING\r\n";
  CHECK(t.client->write_now_or_async(asio::buffer(small),
                                     [&](error_code, std::size_t) { called = true; }));
  std::string got(small.size(), '\0');
  std::optional<error_code> read;
  asio::async_read(*t.server, asio::buffer(got), [&](error_code ec, std::size_t) { read = ec; });
  t.run_until([&] { return read.has_value(); });
  CHECK_FALSE(*read);
  CHECK(got == small);
  CHECK_FALSE(called);

  // 16 MB does not fit in the socket's buffers: the rest goes out as the server reads.
  const std::string big = random_bytes(16 << 20, 3);
  std::optional<std::pair<error_code, std::size_t>> wrote;
  CHECK_FALSE(t.client->write_now_or_async(
      asio::buffer(big), [&](error_code ec, std::size_t n) { wrote.emplace(ec, n); }));
  std::string server_got(big.size(), '\0');
  read.reset();
  asio::async_read(*t.server, asio::buffer(server_got),
                   [&](error_code ec, std::size_t) { read = ec; });
  t.run_until([&] { return read && wrote; });
  CHECK_FALSE(*read);
  CHECK(server_got == big);
  CHECK_FALSE(wrote->first);
  CHECK(wrote->second == big.size());
}

TEST_CASE("tls_stream reads the end of the stream after the server's close_notify",
          "[tls_stream]") {
  tls_setup t;
  REQUIRE_FALSE(t.handshake("localhost"));
  asio::write(*t.server, asio::buffer(std::string_view("last words")));
  std::optional<error_code> shut;
  t.server->async_shutdown([&](error_code ec) { shut = ec; });
  const auto [ec, got] = t.read(1000);
  CHECK(got == "last words");
  CHECK(ec == asio::error::eof);
}

TEST_CASE("tls_stream fails a read of bytes that are not TLS records, and every read after",
          "[tls_stream]") {
  tls_setup t;
  REQUIRE_FALSE(t.handshake("localhost"));
  // Written under the server's TLS layer: an HTTP reply where a record should be.
  asio::write(t.server->next_layer(),
              asio::buffer(std::string_view("HTTP/1.1 400 Bad Request\r\n")));
  const auto [ec, got] = t.read(1);
  CHECK(got.empty());
  CHECK(ec.category() == asio::error::get_ssl_category());
  const auto [ec2, again] = t.read(1);
  CHECK(again.empty());
  CHECK(ec2);
}

TEST_CASE("tls_stream returns every record it has in one read", "[tls_stream]") {
  tls_setup t;
  REQUIRE_FALSE(t.handshake("localhost"));
  // Three writes, three records, all in the client's socket before it reads.
  for (const std::string_view part : {"first ", "second ", "third"}) t.send(part);
  const read_result r = test::read_once(t, 1000);
  CHECK_FALSE(r.ec);
  CHECK(r.bytes == "first second third");
}

// SSL_get_error() takes any error in the thread's queue for the call's own. The sidecar's
// connections share one thread, so another connection's failure may leave one there at any time,
// also while a read waits for the socket.
TEST_CASE("tls_stream reads and writes past errors other connections left in the queue",
          "[tls_stream]") {
  tls_setup t;
  REQUIRE_FALSE(t.handshake("localhost"));
  const auto leave_error = [] { ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH); };

  leave_error();
  std::optional<error_code> wrote;
  t.client->async_write(asio::buffer(std::string_view("up")),
                        [&](error_code ec, std::size_t) { wrote = ec; });
  t.run_until([&] { return wrote.has_value(); });
  CHECK_FALSE(*wrote);
  std::string up(2, '\0');
  asio::read(*t.server, asio::buffer(up));
  CHECK(up == "up");

  // The read finds nothing, waits for the socket; an error is left meanwhile; then data comes.
  leave_error();
  std::string buf;
  std::optional<read_result> r;
  test::start_waiting_read(t, buf, r);
  leave_error();
  t.send("down");
  const read_result down = test::finish(t, r);
  CHECK_FALSE(down.ec);
  CHECK(down.bytes == "down");

  // As above, but what comes is the first 5 bytes of a record (written under the server's TLS
  // layer): OpenSSL wants the rest, and the read must keep waiting for it, not fail.
  r.reset();
  test::start_waiting_read(t, buf, r);
  leave_error();
  const unsigned char header[] = {23, 3, 3, 0, 64};  // application data, 64 bytes to come
  asio::write(t.server->next_layer(), asio::buffer(header));
  for (int i = 0; i < 50 && !r; ++i) t.io.run_one_for(2ms);
  CHECK_FALSE(r.has_value());
  ERR_clear_error();
  t.server->next_layer().close();  // the rest never comes: the read ends with an error
  CHECK(test::finish(t, r).ec);
}

TEST_CASE("tls_stream reports a handshake that the server ends", "[tls_stream]") {
  tls_setup t;
  t.server->next_layer().close();
  std::optional<error_code> ec;
  asio::co_spawn(t.io, t.client->handshake(),
                 [&](std::exception_ptr, std::tuple<error_code> r) { ec = std::get<0>(r); });
  t.run_until([&] { return ec.has_value(); });
  CHECK(*ec);
}

}  // namespace redis_sidecar
