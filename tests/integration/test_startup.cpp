// Start-up: bad configuration exits non-zero with one line naming the problem (and never echoing a
// secret), --help and --version exit 0, and the environment fallbacks (REDIS_URL,
// REDIS_SIDECAR_<FLAG>) configure a working sidecar.
#include <algorithm>
#include <regex>

#include "tests/integration/common.hpp"

namespace redis_sidecar::test {
namespace {

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// Runs the binary with a bad configuration: it must exit non-zero with one line containing
// `names`, and without `secret` (when given).
void check_rejected(std::vector<std::string> args, const std::string& names,
                    std::vector<std::string> env = {}, const std::string& secret = "") {
  auto [code, output] = run_sidecar_once(args, env);
  std::string line = trimmed(output);
  INFO("output: " << output);
  CHECK(code != 0);
  CHECK(!line.empty());
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find(names) != std::string::npos);
  if (!secret.empty()) CHECK(output.find(secret) == std::string::npos);
}

TEST_CASE("bad configuration exits non-zero with one line naming the problem", "[startup]") {
  SIDECAR_ONLY();
  check_rejected({"--upstream", "ftp://x"}, "ftp");
  check_rejected({"--upstream", "ftp://user:hunter2-secret@x:1"}, "ftp", {}, "hunter2-secret");
  check_rejected({"--upstream", "redis://127.0.0.1:1", "--pool-size", "0"}, "pool-size");
  check_rejected({"--upstream", "redis://127.0.0.1:1", "--command-timeout-ms", "soon"},
                 "command-timeout-ms");
  check_rejected({"--upstream", "redis://127.0.0.1:1", "--listen", "127.0.0.1:notaport"}, "listen");
  check_rejected({"--upstream", "redis://127.0.0.1:1", "--no-such-flag"}, "no-such-flag");
  check_rejected({"--upstream", "redis://127.0.0.1:1", "--requirepas=hunter3-secret"}, "requirepas",
                 {}, "hunter3-secret");
  check_rejected({}, "upstream");  // the harness never passes REDIS_URL on
  check_rejected({}, "REDIS_URL", {"REDIS_URL=ftp://x"});
  check_rejected({"--upstream", "redis://127.0.0.1:1", "--tls-ca-file", "/nonexistent/ca.crt"},
                 "tls-ca-file");
  check_rejected({"--upstream", "redis://127.0.0.1:1?password=hunter4-secret"}, "query", {},
                 "hunter4-secret");
}

// "redis://SECRET@host" is a password alone to some clients: the sidecar reads a user name there
// (and sends no AUTH), but never prints it, and says what to write instead.
TEST_CASE("a user name alone in the upstream URL is masked, with a warning", "[startup]") {
  SIDECAR_ONLY();
  auto [code, out] =
      run_sidecar_once({"--upstream", "redis://Zq9user-or-secret@127.0.0.1:1", "--check-config"});
  CHECK(code == 0);
  CHECK(out.find("Zq9user") == std::string::npos);
  CHECK(out.find("redis://****@127.0.0.1:1/0") != std::string::npos);
  CHECK(out.find("for a password alone write redis://:PASSWORD@host") != std::string::npos);
}

// --check-config says what a start would: an IPv6 metrics address where this build's HTTP
// server has no IPv6 (Debian's) fails both, with the same reason; an IPv4 one passes both.
TEST_CASE("check-config and a start agree on the metrics address", "[startup]") {
  SIDECAR_ONLY();
  for (const std::string listen : {"[::1]:0", "127.0.0.1:0"}) {
    INFO(listen);
    auto [checked, check_out] = run_sidecar_once(
        {"--upstream", "redis://127.0.0.1:1", "--metrics-listen", listen, "--check-config"});
    if (listen.starts_with("[")) {
      sidecar side({"--upstream", "redis://127.0.0.1:1", "--metrics-listen", listen});
      const bool started = side.running();
      CHECK((checked == 0) == started);
      if (!started) CHECK(check_out.find("metrics") != std::string::npos);
    } else {
      CHECK(checked == 0);
    }
  }
}

TEST_CASE("help and version flags exit 0", "[startup]") {
  SIDECAR_ONLY();
  auto [help_code, help] = run_sidecar_once({"--help"});
  CHECK(help_code == 0);
  CHECK(help.find("--upstream") != std::string::npos);
  CHECK(help.find("--requirepass") != std::string::npos);

  auto [version_code, version] = run_sidecar_once({"--version"});
  CHECK(version_code == 0);
  CHECK(std::regex_search(version, std::regex(R"(\d+\.\d+\.\d+)")));
}

TEST_CASE("REDIS_URL and REDIS_SIDECAR_* configure the sidecar", "[startup][auth]") {
  SIDECAR_ONLY();
  redis_server redis;
  sidecar side({}, {"REDIS_URL=" + redis.url(), "REDIS_SIDECAR_REQUIREPASS=env-pass-31",
                    "REDIS_SIDECAR_REQUIREPAS=typo"});
  REQUIRE(side.running());
  CHECK(side.log().find("REDIS_SIDECAR_REQUIREPAS names no setting of redis-sidecar and is "
                        "ignored; did you mean REDIS_SIDECAR_REQUIREPASS?") != std::string::npos);
  auto c = connect(side.port());
  CHECK(error_of(c.get(), {"SET", "k", "v"}) == errors::noauth);
  CHECK(str(c.get(), {"AUTH", "env-pass-31"}) == "OK");
  CHECK(str(c.get(), {"SET", "k", "from-env"}) == "OK");
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  CHECK(str(up.get(), {"GET", "k"}) == "from-env");
}

// Another address of this host than the one --listen names (127.0.0.2 with the sidecar on
// 0.0.0.0, 127.1 for 127.0.0.1) passes the start-up check, which compares names; once connected,
// the sidecar sees it reached its own listener and refuses the connection, instead of forwarding
// every request back to itself.
TEST_CASE("an upstream that is the sidecar's own listener under another address is refused",
          "[startup]") {
  SIDECAR_ONLY();
  for (const auto& [listen_host, upstream_host] :
       {std::pair<std::string, std::string>{"0.0.0.0", "127.0.0.2"}, {"127.0.0.1", "127.1"}}) {
    INFO(listen_host << " / " << upstream_host);
    const std::uint16_t port = free_port();
    sidecar side({"--listen", listen_host + ":" + std::to_string(port), "--upstream",
                  "redis://" + upstream_host + ":" + std::to_string(port),
                  "--connect-timeout-ms=300", "--command-timeout-ms=500"});
    REQUIRE(side.running());
    CHECK(eventually(
        [&] { return side.log().find("is this sidecar's own listener") != std::string::npos; }));
    auto c = connect(port);
    auto r = command(c.get(), {"SET", "k", "v"});
    REQUIRE(r);
    CHECK(r->type == REDIS_REPLY_ERROR);
    CHECK(side.running());
    // In fallback a write is refused, saying why, rather than journaled for a replay that
    // could never happen.
    const std::string e = write_refusal(c.get());
    INFO(e);
    CHECK(e.find("refuses the sidecar") != std::string::npos);
    CHECK(e.find("is this sidecar's own listener") != std::string::npos);
  }
}

TEST_CASE("a flag wins over the environment", "[startup]") {
  SIDECAR_ONLY();
  redis_server redis;
  sidecar side({"--upstream", redis.url()}, {"REDIS_URL=redis://127.0.0.1:1"});
  REQUIRE(side.running());
  auto c = connect(side.port());
  CHECK(str(c.get(), {"SET", "k", "flag"}) == "OK");
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  CHECK(str(up.get(), {"GET", "k"}) == "flag");
}

TEST_CASE("SIGTERM stops the sidecar", "[startup]") {
  SIDECAR_ONLY();
  redis_server redis;
  sidecar side({"--upstream", redis.url()});
  REQUIRE(side.running());
  auto c = connect(side.port());
  CHECK(str(c.get(), {"PING"}) == "PONG");
  side.terminate();
  CHECK(!side.running());
  CHECK(side.wait_exit() == 0);
}

}  // namespace
}  // namespace redis_sidecar::test
