// The upstream connect sequence, action by action, for every branch: plain and TLS, with and
// without credentials, HELLO refused by old servers, authentication failures, SELECT.
#include <catch2/catch.hpp>

#include "proxy/resp/value.hpp"
#include "proxy/upstream/connect_fsm.hpp"

using redis_sidecar::connect_fsm;
using redis_sidecar::upstream_url;
using step = connect_fsm::step;
namespace resp = redis_sidecar::resp;

namespace {

resp::value reply_of(std::string_view frame) {
  auto v = resp::decode(frame);
  REQUIRE(v.has_value());
  return *v;
}

const std::string_view ok_frame = "+OK\r\n";
const std::string_view hello_frame =
    "%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n";

upstream_url url(bool tls, std::string user, std::string pass, int db) {
  upstream_url u;
  u.tls = tls;
  u.host = "cache.example";
  u.port = 6380;
  u.username = std::move(user);
  u.password = std::move(pass);
  u.db = db;
  return u;
}

// Drives resolve/connect/(handshake) successfully and returns the first `send` step.
step through_transport(connect_fsm& fsm, bool tls) {
  REQUIRE(fsm.start() == step::resolve);
  REQUIRE(fsm.on_done("") == step::connect);
  if (tls) {
    REQUIRE(fsm.on_done("") == step::tls_handshake);
  }
  return fsm.on_done("");
}

}  // namespace

TEST_CASE("plain upstream without credentials: HELLO then ready", "[connect_fsm]") {
  const auto u = url(false, "", "", 0);
  connect_fsm fsm(u, 2);
  REQUIRE(through_transport(fsm, false) == step::send);
  CHECK(fsm.bytes() == "*4\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$7\r\nSETNAME\r\n$13\r\nredis-sidecar\r\n");
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of(hello_frame)) == step::ready);
  CHECK(fsm.server_version() == "7.0.15");
}

TEST_CASE("HELLO's version and the connection's id, from a RESP3 map or a RESP2 array",
          "[connect_fsm]") {
  const auto u = url(false, "", "", 0);
  const std::string_view replies[] = {
      "%3\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:42\r\n",
      "*6\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:42\r\n",
  };
  for (const auto r : replies) {
    INFO(r);
    connect_fsm fsm(u, r[0] == '%' ? 3 : 2);
    REQUIRE(through_transport(fsm, false) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of(r)) == step::ready);
    CHECK(fsm.server_version() == "7.0.15");
    CHECK(fsm.client_id() == 42);
  }
  connect_fsm fsm(u, 2);  // no id: 0, not known
  REQUIRE(through_transport(fsm, false) == step::send);
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of(hello_frame)) == step::ready);
  CHECK(fsm.client_id() == 0);
}

// What the upstream is decides what a later READONLY means (connection::note_readonly()): a
// primary demoted since, or a replica all along.
TEST_CASE("HELLO's role: primary, replica, or not known", "[connect_fsm]") {
  using role = connect_fsm::server_role;
  const auto u = url(false, "", "", 0);
  const std::pair<std::string_view, role> cases[] = {
      {"%2\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$4\r\nrole\r\n$6\r\nmaster\r\n", role::primary},
      {"*4\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$4\r\nrole\r\n$7\r\nreplica\r\n", role::replica},
      {"*4\r\n$7\r\nversion\r\n$5\r\n5.0.0\r\n$4\r\nrole\r\n$5\r\nslave\r\n", role::replica},
      {"*4\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$4\r\nrole\r\n$8\r\nsentinel\r\n", role::unknown},
      {hello_frame, role::unknown},  // no role field
  };
  for (const auto& [frame, expected] : cases) {
    INFO(frame);
    connect_fsm fsm(u, frame[0] == '%' ? 3 : 2);
    REQUIRE(through_transport(fsm, false) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of(frame)) == step::ready);
    CHECK(fsm.role() == expected);
  }
  // Redis before 6: no HELLO, no role.
  connect_fsm fsm(u, 2);
  REQUIRE(through_transport(fsm, false) == step::send);
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of("-ERR unknown command 'HELLO'\r\n")) == step::ready);
  CHECK(fsm.role() == role::unknown);
}

TEST_CASE("TLS upstream with ACL user and db: handshake, HELLO AUTH, SELECT", "[connect_fsm]") {
  const auto u = url(true, "app", "s3cret", 5);
  connect_fsm fsm(u, 3);
  REQUIRE(through_transport(fsm, true) == step::send);
  CHECK(fsm.bytes() ==
        "*7\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\ns3cret\r\n"
        "$7\r\nSETNAME\r\n$13\r\nredis-sidecar\r\n");
  REQUIRE(fsm.on_done("") == step::receive);
  REQUIRE(fsm.on_reply(reply_of(hello_frame)) == step::send);
  CHECK(fsm.bytes() == "*2\r\n$6\r\nSELECT\r\n$1\r\n5\r\n");
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of(ok_frame)) == step::ready);
}

TEST_CASE("password only authenticates the default user", "[connect_fsm]") {
  const auto u = url(false, "", "pw", 0);
  connect_fsm fsm(u, 2);
  REQUIRE(through_transport(fsm, false) == step::send);
  CHECK(fsm.bytes().find("$7\r\ndefault\r\n$2\r\npw\r\n") != std::string_view::npos);
}

TEST_CASE("Redis without HELLO: AUTH then SELECT in RESP2", "[connect_fsm]") {
  const auto u = url(false, "", "pw", 2);
  connect_fsm fsm(u, 2);
  REQUIRE(through_transport(fsm, false) == step::send);
  REQUIRE(fsm.on_done("") == step::receive);
  REQUIRE(fsm.on_reply(reply_of("-ERR unknown command 'HELLO'\r\n")) == step::send);
  CHECK(fsm.bytes() == "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
  REQUIRE(fsm.on_done("") == step::receive);
  REQUIRE(fsm.on_reply(reply_of(ok_frame)) == step::send);
  CHECK(fsm.bytes() == "*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n");
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of(ok_frame)) == step::ready);
  CHECK(fsm.server_version().empty());
}

TEST_CASE("Redis without HELLO and without password: straight to ready", "[connect_fsm]") {
  const auto u = url(false, "", "", 0);
  connect_fsm fsm(u, 2);
  REQUIRE(through_transport(fsm, false) == step::send);
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of("-ERR unknown command 'HELLO'\r\n")) == step::ready);
}

TEST_CASE("RESP3 needs HELLO", "[connect_fsm]") {
  const auto u = url(false, "", "", 0);
  connect_fsm fsm(u, 3);
  REQUIRE(through_transport(fsm, false) == step::send);
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of("-ERR unknown command 'HELLO'\r\n")) == step::failed);
  CHECK(fsm.error().find("RESP3") != std::string_view::npos);
}

TEST_CASE("authentication failures never echo the password", "[connect_fsm]") {
  const auto u = url(true, "app", "hunter2", 0);
  SECTION("WRONGPASS") {
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, true) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of("-WRONGPASS invalid username-password pair or user is "
                                "disabled.\r\n")) == step::failed);
    CHECK(fsm.error().find("authentication failed") != std::string_view::npos);
    CHECK(fsm.error().find("hunter2") == std::string_view::npos);
  }
  SECTION("AUTH after HELLO fallback fails") {
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, true) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    REQUIRE(fsm.on_reply(reply_of("-ERR unknown command 'HELLO'\r\n")) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of("-WRONGPASS nope\r\n")) == step::failed);
    CHECK(fsm.error().find("hunter2") == std::string_view::npos);
  }
  // Redis before 6 has no HELLO and quotes the arguments of a command it does not know, the
  // password among them (whole, or its first bytes where the quote reaches 128 bytes).
  SECTION("RESP3 asked of a Redis without HELLO, which echoes the arguments") {
    for (const std::string_view frame :
         {"-ERR unknown command `HELLO`, with args beginning with: `3`, `AUTH`, `app`, "
          "`hunter2`, `SETNAME`, `redis-sidecar`, \r\n",
          "-ERR unknown command `HELLO`, with args beginning with: `3`, `AUTH`, `app`, `hun\r\n"}) {
      connect_fsm fsm(u, 3);
      REQUIRE(through_transport(fsm, true) == step::send);
      REQUIRE(fsm.on_done("") == step::receive);
      CHECK(fsm.on_reply(reply_of(frame)) == step::failed);
      INFO(fsm.error());
      CHECK(fsm.error().find("RESP3") != std::string_view::npos);
      CHECK(fsm.error().find("unknown command `HELLO`") != std::string_view::npos);
      CHECK(fsm.error().find("hun") == std::string_view::npos);
    }
  }
  SECTION("a server in between that echoes the command in its refusal") {
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, true) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of("-ERR refused: HELLO 2 AUTH app hunter2 (hunter2)\r\n")) ==
          step::failed);
    CHECK(fsm.error() == "the upstream refused HELLO: ERR refused: HELLO 2 AUTH app **** (****)");
  }
  SECTION("an echo where the 300-byte cut falls inside the password") {
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, true) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    const std::string frame = "-ERR " + std::string(292, 'x') + " hunter2\r\n";  // cut after "hun"
    CHECK(fsm.on_reply(reply_of(frame)) == step::failed);
    CHECK(fsm.error().find("hun") == std::string_view::npos);
  }
}

TEST_CASE("refusals of the credentials are told from other errors", "[connect_fsm]") {
  using redis_sidecar::config_refusal;
  const auto u = url(true, "app", "hunter2", 0);
  for (const auto& [reply, refusal] : std::vector<std::pair<std::string, config_refusal>>{
           {"-WRONGPASS invalid username-password pair\r\n", config_refusal::credentials},
           {"-NOPERM this user has no permissions to run the 'hello' command\r\n",
            config_refusal::credentials},
           {"-NOAUTH HELLO must be called with the client already authenticated\r\n",
            config_refusal::credentials},
           {"-ERR AUTH <password> called without any password configured\r\n",
            config_refusal::credentials},
           {"-LOADING Redis is loading the dataset in memory\r\n", config_refusal::none},
           {"-BUSY Redis is busy running a script\r\n", config_refusal::none},
           {"-MASTERDOWN Link with MASTER is down\r\n", config_refusal::none}}) {
    INFO(reply);
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, true) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of(reply)) == step::failed);
    CHECK(fsm.refusal() == refusal);
    CHECK((fsm.error().find("authentication") != std::string_view::npos) ==
          (refusal == config_refusal::credentials));
    CHECK(fsm.error().find("hunter2") == std::string_view::npos);
  }
  // Transport failures are never the credentials'.
  connect_fsm fsm(u, 2);
  fsm.start();
  CHECK(fsm.on_done("Host not found") == step::failed);
  CHECK(fsm.refusal() == redis_sidecar::config_refusal::none);
}

TEST_CASE("NOAUTH: the upstream wants a password the URL lacks", "[connect_fsm]") {
  const auto u = url(false, "", "", 0);
  connect_fsm fsm(u, 2);
  REQUIRE(through_transport(fsm, false) == step::send);
  REQUIRE(fsm.on_done("") == step::receive);
  CHECK(fsm.on_reply(reply_of("-NOAUTH HELLO must be called with the client already "
                              "authenticated\r\n")) == step::failed);
  CHECK(fsm.error().find("URL has no password") != std::string_view::npos);
}

TEST_CASE("NOPROTO and SELECT failures", "[connect_fsm]") {
  SECTION("NOPROTO") {
    const auto u = url(false, "", "", 0);
    connect_fsm fsm(u, 3);
    REQUIRE(through_transport(fsm, false) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of("-NOPROTO unsupported protocol version\r\n")) == step::failed);
  }
  SECTION("SELECT out of range") {
    const auto u = url(false, "", "", 99);
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, false) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    REQUIRE(fsm.on_reply(reply_of(hello_frame)) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of("-ERR DB index is out of range\r\n")) == step::failed);
    CHECK(fsm.error().find("SELECT 99") != std::string_view::npos);
    // The URL's to fix: no retry ends it.
    CHECK(fsm.refusal() == redis_sidecar::config_refusal::database);
  }
  SECTION("SELECT refused by something a retry may end") {
    const auto u = url(false, "", "", 3);
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, false) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    REQUIRE(fsm.on_reply(reply_of(hello_frame)) == step::send);
    REQUIRE(fsm.on_done("") == step::receive);
    CHECK(fsm.on_reply(reply_of("-BUSY Redis is busy running a script\r\n")) == step::failed);
    CHECK(fsm.refusal() == redis_sidecar::config_refusal::none);
  }
}

TEST_CASE("transport failures name the step and the endpoint", "[connect_fsm]") {
  const auto u = url(true, "", "", 0);
  SECTION("resolve") {
    connect_fsm fsm(u, 2);
    REQUIRE(fsm.start() == step::resolve);
    CHECK(fsm.on_done("Host not found") == step::failed);
    CHECK(fsm.error() == "cannot resolve cache.example: Host not found");
  }
  SECTION("connect") {
    connect_fsm fsm(u, 2);
    fsm.start();
    REQUIRE(fsm.on_done("") == step::connect);
    CHECK(fsm.on_done("Connection refused") == step::failed);
    CHECK(fsm.error() == "cannot connect to cache.example:6380: Connection refused");
  }
  SECTION("handshake") {
    connect_fsm fsm(u, 2);
    fsm.start();
    fsm.on_done("");
    REQUIRE(fsm.on_done("") == step::tls_handshake);
    CHECK(fsm.on_done("certificate verify failed") == step::failed);
    CHECK(fsm.error().find("TLS handshake with cache.example:6380 failed") == 0);
  }
  SECTION("write") {
    connect_fsm fsm(u, 2);
    REQUIRE(through_transport(fsm, true) == step::send);
    CHECK(fsm.on_done("Broken pipe") == step::failed);
  }
}
