// The harness itself: TLS servers made from the generated certificates answer redis-cli (with and
// without client certificates), and restarts and pauses do what the resilience tests assume.
// These run without the sidecar, so a failure here points at the test set-up, not the product.
#include "tests/integration/common.hpp"

namespace redis_sidecar::test {
namespace {

TEST_CASE("harness: TLS redis-server with the generated certificates", "[harness][tls]") {
  redis_options opts;
  opts.tls = true;
  redis_server redis(opts);
  CHECK(redis.url() == "rediss://127.0.0.1:" + std::to_string(redis.port()));
  CHECK(redis.connect_direct() == nullptr);  // hiredis 0.14 cannot do TLS
  CHECK(redis_cli(redis, {"SET", "k", "over tls"}) == "OK\n");
  CHECK(redis_cli(redis, {"GET", "k"}) == "over tls\n");
}

TEST_CASE("harness: mTLS redis-server and a password", "[harness][tls]") {
  redis_options opts;
  opts.tls = true;
  opts.tls_client_auth = true;
  opts.requirepass = "p@ss:word/1";
  redis_server redis(opts);
  CHECK(redis_cli(redis, {"PING"}) == "PONG\n");
  CHECK(redis.url("", "p@ss:word/1", 2) ==
        "rediss://:p%40ss%3Aword%2F1@127.0.0.1:" + std::to_string(redis.port()) + "/2");
}

TEST_CASE("harness: ACL users, kill, restart, pause", "[harness]") {
  redis_options opts;
  opts.requirepass = "admin";
  opts.acl = {"user app on >secret ~app:* +@all"};
  redis_server redis(opts);
  CHECK(redis.url("app", "secret") ==
        "redis://app:secret@127.0.0.1:" + std::to_string(redis.port()));
  {
    auto c = connect(redis.port());
    CHECK(error_of(c.get(), {"GET", "x"}).starts_with("NOAUTH"));
    CHECK(str(c.get(), {"AUTH", "app", "secret"}) == "OK");
    CHECK(error_of(c.get(), {"GET", "x"}).starts_with("NOPERM"));
  }
  const auto port = redis.port();
  redis.kill();
  CHECK_THROWS(connect(port));
  redis.start();
  CHECK(redis.port() == port);
  context_ptr c{redis.connect_direct()};
  REQUIRE(c);
  CHECK(str(c.get(), {"PING"}) == "PONG");
  redis.pause();
  redisSetTimeout(c.get(), timeval{0, 300000});
  CHECK(command(c.get(), {"PING"}) == nullptr);  // stalled: no reply
  redis.resume();
  context_ptr again{redis.connect_direct()};
  REQUIRE(again);
  CHECK(str(again.get(), {"PING"}) == "PONG");
}

TEST_CASE("harness: free_port gives a port nobody listens on", "[harness]") {
  auto port = free_port();
  CHECK(port != 0);
  CHECK_THROWS(connect(port));
}

}  // namespace
}  // namespace redis_sidecar::test
