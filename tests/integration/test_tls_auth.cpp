// TLS and authentication: the sidecar reaches TLS upstreams (verified against the test CA, with
// client certificates for mTLS), authenticates with the password or ACL user of its upstream URL,
// refuses to talk to an upstream it cannot verify, never logs a password, and applies its own
// --requirepass to clients (or accepts any AUTH when it has none, for apps with a password in
// REDIS_URL).
#include <algorithm>
#include <cctype>
#include <regex>

#include "tests/integration/common.hpp"

namespace redis_sidecar::test {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return s;
}

redis_options tls_server(bool client_auth = false, const std::string& password = "") {
  redis_options opts;
  opts.tls = true;
  opts.tls_client_auth = client_auth;
  opts.requirepass = password;
  return opts;
}

redis_options password_server(const std::string& password) {
  redis_options opts;
  opts.requirepass = password;
  return opts;
}

std::unique_ptr<sidecar> start_sidecar(std::vector<std::string> args) {
  auto side = std::make_unique<sidecar>(std::move(args));
  if (!side->running()) FAIL("sidecar exited at start-up:\n" << side->log());
  return side;
}

// SET then GET through the sidecar both work.
void check_round_trip(std::uint16_t port) {
  auto c = connect(port);
  CHECK(str(c.get(), {"SET", "tls-key", "tls-value"}) == "OK");
  CHECK(str(c.get(), {"GET", "tls-key"}) == "tls-value");
}

// The error a fresh client gets for a command when the upstream is unusable.
std::string upstream_error(const sidecar& side) {
  auto c = connect(side.port());
  return error_of(c.get(), {"GET", "k"});
}

// Writes until one is acknowledged (journaled, as in an outage) or refused for the sidecar's
// configuration; the reply that ended it (what eventually() last saw otherwise).
std::string first_decided_write(redisContext* c) {
  std::string last;
  eventually([&] {
    auto r = command(c, {"SET", "k", "v"});
    last = r ? describe(r.get()) : "(no reply)";
    return last == "status OK" || last.find("refuses the sidecar") != std::string::npos;
  });
  return last;
}

TEST_CASE("TLS upstream verified with --tls-ca-file", "[tls]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  redis_server redis(tls_server());
  auto side = start_sidecar({"--upstream", redis.url(), "--tls-ca-file", certs.ca_crt});
  check_round_trip(side->port());
  CHECK(redis_cli(redis, {"GET", "tls-key"}) == "tls-value\n");
}

TEST_CASE("TLS upstream with the wrong CA: commands fail, the log says why", "[tls]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  redis_server redis(tls_server());
  auto side = start_sidecar({"--upstream", redis.url(), "--tls-ca-file", certs.other_ca_crt});
  CHECK(side->running());
  CHECK(upstream_error(*side).starts_with(errors::upstream_unavailable));
  CHECK(eventually([&] { return lower(side->log()).find("certificate") != std::string::npos; },
                   std::chrono::seconds(5)));
  CHECK(side->running());
  CHECK(redis_cli(redis, {"DBSIZE"}) == "0\n");
  // A configuration to fix, not an outage: fallback refuses writes it could never replay.
  auto c = connect(side->port());
  const std::string e = write_refusal(c.get());
  INFO(e);
  CHECK(e.find("refuses the sidecar") != std::string::npos);
  CHECK(e.find("certificate verify failed") != std::string::npos);
}

TEST_CASE("TLS upstream whose name does not match --tls-server-name is refused", "[tls]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  redis_server redis(tls_server());
  auto side = start_sidecar({"--upstream", redis.url(), "--tls-ca-file", certs.ca_crt,
                             "--tls-server-name", "not-this-host.example"});
  CHECK(upstream_error(*side).starts_with(errors::upstream_unavailable));
}

TEST_CASE("tls-insecure-skip-verify talks to an unverifiable upstream", "[tls]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  redis_server redis(tls_server());
  auto side = start_sidecar({"--upstream", redis.url(), "--tls-ca-file", certs.other_ca_crt,
                             "--tls-insecure-skip-verify"});
  check_round_trip(side->port());
}

TEST_CASE("mTLS upstream: the client certificate is presented", "[tls]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  redis_server redis(tls_server(true));
  {
    auto side =
        start_sidecar({"--upstream", redis.url(), "--tls-ca-file", certs.ca_crt, "--tls-cert-file",
                       certs.client_crt, "--tls-key-file", certs.client_key});
    check_round_trip(side->port());
    CHECK(redis_cli(redis, {"GET", "tls-key"}) == "tls-value\n");
  }
  // Without a client certificate the upstream refuses the sidecar (TLS 1.3 says so at the first
  // read, after the handshake): a configuration fault, so fallback refuses writes rather than
  // acknowledging what it could never replay.
  auto side = start_sidecar({"--upstream", redis.url(), "--tls-ca-file", certs.ca_crt});
  CHECK(upstream_error(*side).starts_with("ERR upstream"));
  auto c = connect(side->port());
  CHECK(write_refusal(c.get()).find("asks for a client certificate") != std::string::npos);
  // Under TLS 1.2 the missing certificate fails the handshake itself, with an alert that names
  // nothing (handshake_failure): writes were journaled as in an outage before, 3 of 3.
  redis_options tls12 = tls_server(true);
  tls12.extra = {"tls-protocols TLSv1.2"};
  redis_server redis12(tls12);
  auto side12 = start_sidecar({"--upstream", redis12.url(), "--tls-ca-file", certs.ca_crt});
  auto c12 = connect(side12->port());
  const std::string last = first_decided_write(c12.get());
  INFO(last);
  CHECK(last.find("asks for a client certificate") != std::string::npos);
}

// A client certificate the upstream does not trust: TLS 1.3 refuses it after the handshake, and
// the upstream's reset may take its alert with it, so without a word this looked like an outage
// (writes journaled and acknowledged, then lost; 4 of 6 starts before). A configuration fault.
TEST_CASE("mTLS upstream: a client certificate from another CA is refused, writes too", "[tls]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  redis_server redis(tls_server(true));
  for (int i = 0; i < 4; ++i) {
    auto side =
        start_sidecar({"--upstream", redis.url(), "--tls-ca-file", certs.ca_crt, "--tls-cert-file",
                       certs.other_client_crt, "--tls-key-file", certs.other_client_key});
    auto c = connect(side->port());
    // No write may be acknowledged (journaled) on the way to the refusal.
    const std::string last = first_decided_write(c.get());
    INFO(last);
    CHECK(last != "status OK");
    CHECK((last.find("unknown ca") != std::string::npos ||
           last.find("does it trust --tls-cert-file's issuer?") != std::string::npos));
  }
}

// rediss:// to a plaintext Redis port: Redis reads the ClientHello as an unfinished inline command
// and stays silent, so the handshake times out as against a stalled upstream, and writes were
// journaled (5 of 5 starts before). A plaintext PING tells the two apart: a config refusal.
TEST_CASE("a rediss:// URL for a plaintext port is refused, writes too", "[tls]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  redis_server redis;
  auto side = start_sidecar({"--upstream", "rediss://127.0.0.1:" + std::to_string(redis.port()),
                             "--tls-ca-file", certs.ca_crt, "--connect-timeout-ms=1000",
                             "--fallback-after-ms=200", "--health-probe-interval-ms=50"});
  auto c = connect(side->port());
  const std::string last = first_decided_write(c.get());
  INFO(last);
  CHECK(last.find("the port answers plaintext Redis: use a redis:// URL") != std::string::npos);
}

// redis:// to a TLS-only port (a managed Redis' usual mistake): Redis drops the connection
// without a word, which alone looks like an outage; the error says what to check.
TEST_CASE("a redis:// URL for a TLS port: the error suggests rediss://", "[tls]") {
  SIDECAR_ONLY();
  redis_server redis(tls_server(false));
  std::string url = redis.url();
  REQUIRE(url.starts_with("rediss://"));
  url.erase(5, 1);  // rediss:// -> redis://
  auto side = start_sidecar({"--upstream", url});
  CHECK(upstream_error(*side).find("if the upstream's port expects TLS, use a rediss:// URL") !=
        std::string::npos);
  CHECK(side->log().find("use a rediss:// URL") != std::string::npos);
}

// A db the upstream refuses to SELECT is the URL's fault: writes are refused, not journaled.
TEST_CASE("a URL db the upstream refuses: fallback refuses writes", "[auth]") {
  SIDECAR_ONLY();
  redis_server redis;
  auto side = start_sidecar({"--upstream", redis.url("", "", 99)});
  auto c = connect(side->port());
  CHECK(write_refusal(c.get()).find("SELECT 99 failed") != std::string::npos);
}

// The upstream's password changes while the sidecar runs: Redis keeps the logins it accepted
// (the pool's and the health probe's), but each new connection is refused. The first refusal
// (here a BLPOP's dedicated connection) makes the probe log in afresh, so the sidecar goes to
// fallback and refuses writes, instead of reporting healthy while new connections fail.
TEST_CASE("the upstream password changed under the sidecar: fallback refuses writes", "[auth]") {
  SIDECAR_ONLY();
  redis_server redis(password_server("old-pass-51b0"));
  auto side = start_sidecar({"--upstream", redis.url("", "old-pass-51b0"),
                             "--health-probe-interval-ms=50", "--fallback-after-ms=200"});
  auto c = connect(side->port());
  CHECK(str(c.get(), {"SET", "k", "before"}) == "OK");
  CHECK(redis_cli(redis, {"CONFIG", "SET", "requirepass", "new-pass-51b0"}) == "OK\n");
  auto blocked = connect(side->port());
  CHECK(error_of(blocked.get(), {"BLPOP", "list", "0.1"}).find("ERR upstream") == 0);
  // The pool's connections still write until fallback begins; then writes are refused.
  std::string last;
  CHECK(eventually([&] {
    auto r = command(c.get(), {"SET", "k", "after"});
    last = r ? describe(r.get()) : "(no reply)";
    return last.find("refuses the sidecar") != std::string::npos &&
           last.find("WRONGPASS") != std::string::npos;
  }));
  INFO(last);
  CHECK(side->log().find("new-pass-51b0") == std::string::npos);
  CHECK(side->log().find("old-pass-51b0") == std::string::npos);
}

TEST_CASE("TLS upstream with a password", "[tls][auth]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  const std::string password = "tls-pass-91c2";
  redis_server redis(tls_server(false, password));
  auto side = start_sidecar({"--upstream", redis.url("", password), "--tls-ca-file", certs.ca_crt});
  check_round_trip(side->port());
  CHECK(side->log().find(password) == std::string::npos);
}

// --log-level debug: a line for each client's arrival and departure (why, how many requests) and
// for each upstream connection made (TLS version, cipher, resumption), the password masked.
TEST_CASE("debug log level: a line per connection, the password masked", "[tls][auth]") {
  SIDECAR_ONLY();
  const auto& certs = test_certificates();
  const std::string password = "dbg-pass-5d17";
  redis_server redis(tls_server(false, password));
  auto side = start_sidecar({"--upstream", redis.url("", password), "--tls-ca-file", certs.ca_crt,
                             "--log-level", "debug"});
  {
    auto c = connect(side->port());
    CHECK(str(c.get(), {"SET", "k", "v"}) == "OK");
    CHECK(str(c.get(), {"GET", "k"}) == "v");
    CHECK(str(c.get(), {"QUIT"}) == "OK");
  }
  {
    raw_client bad(side->port());
    bad.send("*1\r\n$x\r\n");
    CHECK(read_value(bad).starts_with("-ERR Protocol error"));
  }
  REQUIRE(eventually([&] {
    return side->log().find("requests in") != std::string::npos &&
           side->log().find("ms: protocol error") != std::string::npos;
  }));
  const std::string log = side->log();
  INFO(log);
  CHECK(std::regex_search(log, std::regex(R"(client \d+ connected from 127\.0\.0\.1:\d+)")));
  CHECK(std::regex_search(log, std::regex(R"(closed after 3 requests in \d+ ms: QUIT)")));
  CHECK(std::regex_search(log, std::regex(R"(closed after 0 requests in \d+ ms: protocol error)")));
  CHECK(std::regex_search(
      log, std::regex(R"(upstream connection id=\d+ to rediss://:\*+@[^ ]+ ready in [0-9.]+ ms: )"
                      R"(RESP\d, Redis 7[0-9.]+, TLSv1\.3 \S+, (full handshake|session resumed) )"
                      R"(\(pooled\))")));
  CHECK(log.find("debug") != std::string::npos);
  CHECK(log.find(password) == std::string::npos);
}

TEST_CASE("upstream requirepass from the URL", "[auth]") {
  SIDECAR_ONLY();
  const std::string password = "up-pass-5d1e";
  redis_server redis(password_server(password));
  auto side = start_sidecar({"--upstream", redis.url("", password)});
  check_round_trip(side->port());
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  CHECK(str(up.get(), {"GET", "tls-key"}) == "tls-value");
  CHECK(side->log().find(password) == std::string::npos);
}

TEST_CASE("upstream ACL user from the URL, with its limited permissions", "[auth]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.requirepass = "admin-pass-0b7";
  opts.acl = {"user app on >app-secret-4e9 ~app:* &* +@all -@dangerous"};
  redis_server redis(opts);
  auto side = start_sidecar({"--upstream", redis.url("app", "app-secret-4e9")});
  auto c = connect(side->port());
  CHECK(str(c.get(), {"SET", "app:1", "allowed"}) == "OK");
  CHECK(str(c.get(), {"GET", "app:1"}) == "allowed");
  CHECK(error_of(c.get(), {"SET", "other:1", "denied"}).starts_with("NOPERM"));
  CHECK(error_of(c.get(), {"FLUSHALL"}).starts_with("NOPERM"));

  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  CHECK(str(up.get(), {"GET", "app:1"}) == "allowed");
  CHECK(is_nil(up.get(), {"GET", "other:1"}));
  CHECK(str(up.get(), {"CLIENT", "LIST"}).find("user=app") != std::string::npos);
  auto log = side->log();
  CHECK(log.find("app-secret-4e9") == std::string::npos);
}

TEST_CASE("wrong upstream password: commands fail and the password is never logged", "[auth]") {
  SIDECAR_ONLY();
  const std::string wrong = "wrong-pass-7f3a";
  redis_server redis(password_server("right-pass-22c8"));
  auto side = start_sidecar({"--upstream", redis.url("", wrong)});
  for (int i = 0; i < 3; ++i) {
    std::string e = upstream_error(*side);
    CHECK(e.starts_with("ERR upstream"));
    CHECK(e.find(wrong) == std::string::npos);
  }
  CHECK(side->running());
  side->terminate();
  auto log = side->log();
  CHECK(!log.empty());
  CHECK(log.find(wrong) == std::string::npos);
  CHECK(log.find("right-pass-22c8") == std::string::npos);
}

// Redis before 6 has no HELLO, and Redis quotes the arguments of a command it does not know,
// the password of HELLO's AUTH among them. A Redis 7 with HELLO renamed away answers the same way.
// The near cache's RESP3 attempt fails on it (its error once quoted that reply whole into the log);
// the sidecar goes on in RESP2 with AUTH.
TEST_CASE("an upstream without HELLO echoes the password in its error: never logged", "[auth]") {
  SIDECAR_ONLY();
  const std::string password = "nohello-pass-8c1f";
  redis_options opts = password_server(password);
  opts.extra = {"rename-command HELLO \"\""};
  redis_server redis(opts);
  auto side = start_sidecar({"--upstream", redis.url("", password), "--log-level", "debug"});
  check_round_trip(side->port());
  REQUIRE(
      eventually([&] { return side->log().find("does not support RESP3") != std::string::npos; }));
  const std::string log = side->log();
  INFO(log);
  CHECK(log.find("unknown command 'HELLO'") != std::string::npos);
  CHECK(log.find(password) == std::string::npos);
  CHECK(log.find("nohello") == std::string::npos);
  for (const char* path : {"/readyz", "/healthz", "/metrics"})
    CHECK(http_get(side->metrics_port(), path).body.find("nohello") == std::string::npos);
}

TEST_CASE("sidecar requirepass: NOAUTH, WRONGPASS, then OK", "[auth]") {
  // Direct mode checks the same bytes against a Redis with requirepass.
  redis_options opts;
  if (direct_mode()) opts.requirepass = "side-pass-8a1";
  proxied env(opts, {"--requirepass", "side-pass-8a1"});
  auto c = env.client();
  CHECK(error_of(c.get(), {"GET", "k"}) == errors::noauth);
  CHECK(error_of(c.get(), {"SET", "k", "v"}) == errors::noauth);
  CHECK(error_of(c.get(), {"AUTH", "not-it"}) == errors::wrongpass);
  CHECK(error_of(c.get(), {"GET", "k"}) == errors::noauth);
  CHECK(str(c.get(), {"AUTH", "side-pass-8a1"}) == "OK");
  CHECK(str(c.get(), {"SET", "k", "v"}) == "OK");
  CHECK(str(c.get(), {"GET", "k"}) == "v");

  auto d = env.client();
  CHECK(error_of(d.get(), {"AUTH", "default", "not-it"}) == errors::wrongpass);
  CHECK(str(d.get(), {"AUTH", "default", "side-pass-8a1"}) == "OK");
  CHECK(str(d.get(), {"GET", "k"}) == "v");

  raw_client raw(env.port());
  raw.send("*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$6\r\nnot-it\r\n");
  CHECK(read_value(raw) == error_bytes(errors::wrongpass));
  raw.send(
      "*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$13\r\nside-pass-8a1\r\n");
  CHECK(read_value(raw).starts_with("%"));
  raw.send("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
  CHECK(read_value(raw) == "$1\r\nv\r\n");
  if (env.side) CHECK(env.side->log().find("side-pass-8a1") == std::string::npos);
}

// A subscriber's requests pass through unread on a connection of its own, but AUTH is still the
// sidecar's to answer: in its place among the replies, as Redis orders them.
TEST_CASE("AUTH from a subscriber is answered in order", "[auth][pubsub]") {
  redis_options opts;
  if (direct_mode()) opts.requirepass = "side-pass-8a1";
  proxied env(opts, {"--requirepass", "side-pass-8a1"});
  SECTION("RESP3: answered") {
    raw_client c(env.port());
    c.send("HELLO 3 AUTH default side-pass-8a1\r\nSUBSCRIBE ch\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    c.send(
        "PING a\r\nAUTH not-it\r\nPING b\r\nAUTH side-pass-8a1\r\nPING c\r\nAUTH\r\n"
        "PING d\r\nAUTH a b c\r\nPING e\r\n");
    CHECK(read_value(c) == "$1\r\na\r\n");
    CHECK(read_value(c) == error_bytes(errors::wrongpass));
    CHECK(read_value(c) == "$1\r\nb\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "$1\r\nc\r\n");
    CHECK(read_value(c) == "-ERR wrong number of arguments for 'auth' command\r\n");
    CHECK(read_value(c) == "$1\r\nd\r\n");
    CHECK(read_value(c) == "-ERR syntax error\r\n");
    CHECK(read_value(c) == "$1\r\ne\r\n");
  }
  SECTION("RESP2: refused, as in subscribed mode everything but (un)subscribing and PING") {
    raw_client c(env.port());
    c.send("AUTH side-pass-8a1\r\nSUBSCRIBE ch\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    c.send("PING a\r\nAUTH side-pass-8a1\r\nPING b\r\nAUTH a b c\r\nAUTH\r\nPING c\r\n");
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$1\r\na\r\n");
    CHECK(read_value(c).starts_with("-ERR Can't execute 'auth': only (P|S)SUBSCRIBE"));
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$1\r\nb\r\n");
    CHECK(read_value(c).starts_with("-ERR Can't execute 'auth'"));
    CHECK(read_value(c) == "-ERR wrong number of arguments for 'auth' command\r\n");
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$1\r\nc\r\n");
  }
}

TEST_CASE("without --requirepass, any AUTH is accepted", "[auth]") {
  SIDECAR_ONLY();  // Redis itself would refuse AUTH without a configured password
  proxied env;
  auto c = env.client();
  CHECK(str(c.get(), {"AUTH", "anything"}) == "OK");
  CHECK(str(c.get(), {"AUTH", "someuser", "somepass"}) == "OK");
  CHECK(str(c.get(), {"SET", "k", "v"}) == "OK");

  raw_client raw(env.port());
  raw.send("*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$4\r\npass\r\n");
  CHECK(read_value(raw).starts_with("%"));
  raw.send("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
  CHECK(read_value(raw) == "$1\r\nv\r\n");
}

}  // namespace
}  // namespace redis_sidecar::test
