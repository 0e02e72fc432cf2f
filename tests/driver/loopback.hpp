// Pieces the driver tests share: a connected loopback TCP pair, and a TLS server context with the
// test certificate (signed for localhost and 127.0.0.1).
#pragma once

#include <utility>

#include "proxy/asio.hpp"
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

}  // namespace redis_sidecar::test
