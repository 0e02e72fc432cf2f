// set_tcp_keepalive: what the kernel holds on a real TCP socket afterwards, as Redis' own
// tcp-keepalive sets it (first probe after N idle seconds, 3 probes N/3 apart, at least 1 s).
// That the probes find a vanished peer is shown where they matter: an upstream connection
// (test_upstream_write.cpp) and a client session (integration/test_resilience.cpp).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "proxy/asio.hpp"
#include "proxy/tcp_keepalive.hpp"

namespace redis_sidecar {
namespace {

int option(int fd, int level, int name) {
  int value = -1;
  socklen_t len = sizeof value;
  REQUIRE(::getsockopt(fd, level, name, &value, &len) == 0);
  return value;
}

TEST_CASE("set_tcp_keepalive sets Redis' keepalive, or turns it off", "[keepalive]") {
  asio::io_context io;
  tcp::socket s(io);
  s.open(tcp::v4());
  const int fd = s.native_handle();
  CHECK(option(fd, SOL_SOCKET, SO_KEEPALIVE) == 0);  // the kernel's default

  REQUIRE(set_tcp_keepalive(fd, 60));
  CHECK(option(fd, SOL_SOCKET, SO_KEEPALIVE) == 1);
  CHECK(option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 60);
  CHECK(option(fd, IPPROTO_TCP, TCP_KEEPINTVL) == 20);
  CHECK(option(fd, IPPROTO_TCP, TCP_KEEPCNT) == 3);

  REQUIRE(set_tcp_keepalive(fd, 2));  // the interval never goes below a second
  CHECK(option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 2);
  CHECK(option(fd, IPPROTO_TCP, TCP_KEEPINTVL) == 1);

  REQUIRE(set_tcp_keepalive(fd, max_tcp_keepalive_seconds));
  CHECK(option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 32767);
  CHECK(option(fd, IPPROTO_TCP, TCP_KEEPINTVL) == 10922);

  REQUIRE(set_tcp_keepalive(fd, 0));
  CHECK(option(fd, SOL_SOCKET, SO_KEEPALIVE) == 0);

  CHECK_FALSE(set_tcp_keepalive(-1, 60));  // a failure is reported, not thrown
}

}  // namespace
}  // namespace redis_sidecar
