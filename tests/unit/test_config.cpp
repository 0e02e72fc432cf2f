// Configuration: flags, REDIS_SIDECAR_* variables and their precedence, --help / --version, every
// validation error's message, Unix socket listening and the self-loop check. Each test runs with
// the sidecar's variables cleared (env_guard) and restores them afterwards.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "proxy/config/config.hpp"

extern char** environ;

using redis_sidecar::config;
using redis_sidecar::parse_config;
using redis_sidecar::parse_outcome;
using redis_sidecar::usage;

namespace {

// Clears REDIS_URL and every REDIS_SIDECAR_* variable for one test and restores them afterwards.
class env_guard {
 public:
  env_guard() {
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      const auto eq = entry.find('=');
      const auto name = entry.substr(0, eq);
      if (name == "REDIS_URL" || name.rfind("REDIS_SIDECAR_", 0) == 0)
        saved_.emplace_back(name, entry.substr(eq + 1));
    }
    for (const auto& [name, value] : saved_) ::unsetenv(name.c_str());
  }
  ~env_guard() {
    for (const auto& name : set_) ::unsetenv(name.c_str());
    for (const auto& [name, value] : saved_) ::setenv(name.c_str(), value.c_str(), 1);
  }
  env_guard(const env_guard&) = delete;
  env_guard& operator=(const env_guard&) = delete;

  void set(const std::string& name, const std::string& value) {
    ::setenv(name.c_str(), value.c_str(), 1);
    set_.push_back(name);
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_;
  std::vector<std::string> set_;
};

struct result {
  parse_outcome outcome;
  config cfg;
  std::string message;
};

result parse(std::vector<std::string> args) {
  args.insert(args.begin(), "redis-sidecar");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  result r;
  r.outcome = parse_config(static_cast<int>(argv.size()), argv.data(), r.cfg, r.message);
  return r;
}

// A parse that must fail; returns its message, which must be one line.
std::string error_of(std::vector<std::string> args) {
  auto r = parse(std::move(args));
  INFO(r.message);
  REQUIRE(r.outcome == parse_outcome::exit_error);
  REQUIRE_FALSE(r.message.empty());
  CHECK(r.message.find('\n') == std::string::npos);
  return r.message;
}

config run_ok(std::vector<std::string> args) {
  auto r = parse(std::move(args));
  INFO(r.message);
  REQUIRE(r.outcome == parse_outcome::run);
  return r.cfg;
}

// A readable temporary file, removed at the end of the test.
struct temp_file {
  std::filesystem::path path;
  explicit temp_file(const std::string& name)
      : path(std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()))) {
    std::ofstream(path) << "not really PEM\n";
  }
  ~temp_file() { std::filesystem::remove(path); }
};

const std::string up = "--upstream=rediss://u:pw@redis.internal:6380/1";

}  // namespace

TEST_CASE("defaults apply when only the upstream is given", "[config]") {
  env_guard env;
  const config c = run_ok({"--upstream", "redis://redis.internal"});
  const config d;
  CHECK(c.upstream_set);
  CHECK(c.upstream_source == "--upstream");
  CHECK(c.upstream.host == "redis.internal");
  CHECK(c.listen.host == d.listen.host);
  CHECK(c.listen.port == 6379);
  CHECK(c.listen.unix_path.empty());
  CHECK(c.pool_size == d.pool_size);
  CHECK(c.connect_timeout_ms == d.connect_timeout_ms);
  CHECK(c.command_timeout_ms == d.command_timeout_ms);
  CHECK(c.max_clients == d.max_clients);
  CHECK(c.limits.max_bulk_bytes == d.limits.max_bulk_bytes);
  CHECK(c.log_level == "info");
  CHECK_FALSE(c.tls_insecure_skip_verify);
  CHECK_FALSE(c.check_config);
}

TEST_CASE("every flag sets its field, in both --flag VALUE and --flag=VALUE forms", "[config]") {
  env_guard env;
  temp_file ca("rs-ca"), cert("rs-cert"), key("rs-key");
  const config c = run_ok({up,
                           "--listen",
                           "127.0.0.1:7100",
                           "--requirepass=s3",
                           "--pool-size",
                           "3",
                           "--tls-ca-file=" + ca.path.string(),
                           "--tls-cert-file",
                           cert.path.string(),
                           "--tls-key-file",
                           key.path.string(),
                           "--tls-server-name=sni.example",
                           "--tls-insecure-skip-verify",
                           "--max-clients=11",
                           "--max-pipeline",
                           "12",
                           "--max-query-buffer-bytes=13",
                           "--max-output-bytes",
                           "14",
                           "--max-pubsub-output-bytes=15",
                           "--max-bulk-bytes",
                           "16",
                           "--max-multibulk-len=17",
                           "--max-inline-bytes",
                           "18",
                           "--max-nesting=19",
                           "--connect-timeout-ms",
                           "20",
                           "--command-timeout-ms=21",
                           "--reconnect-min-ms",
                           "22",
                           "--reconnect-max-ms=23",
                           "--log-level",
                           "debug",
                           "--check-config"});
  CHECK(c.listen.host == "127.0.0.1");
  CHECK(c.listen.port == 7100);
  CHECK(c.requirepass == "s3");
  CHECK(c.pool_size == 3);
  CHECK(c.tls_ca_file == ca.path.string());
  CHECK(c.tls_cert_file == cert.path.string());
  CHECK(c.tls_key_file == key.path.string());
  CHECK(c.tls_server_name == "sni.example");
  CHECK(c.tls_insecure_skip_verify);
  CHECK(c.max_clients == 11);
  CHECK(c.max_pipeline == 12);
  CHECK(c.max_query_buffer_bytes == 13);
  CHECK(c.max_output_bytes == 14);
  CHECK(c.max_pubsub_output_bytes == 15);
  CHECK(c.limits.max_bulk_bytes == 16);
  CHECK(c.limits.max_multibulk_len == 17);
  CHECK(c.limits.max_inline_bytes == 18);
  CHECK(c.limits.max_nesting == 19);
  CHECK(c.connect_timeout_ms == 20);
  CHECK(c.command_timeout_ms == 21);
  CHECK(c.reconnect_min_ms == 22);
  CHECK(c.reconnect_max_ms == 23);
  CHECK(c.log_level == "debug");
  CHECK(c.check_config);
  CHECK(c.upstream.tls);
  CHECK(c.upstream.password == "pw");
}

TEST_CASE("environment variables set fields and flags win over them", "[config]") {
  env_guard env;
  env.set("REDIS_SIDECAR_POOL_SIZE", "5");
  env.set("REDIS_SIDECAR_LOG_LEVEL", "error");
  env.set("REDIS_SIDECAR_MAX_BULK_BYTES", "1mb");
  env.set("REDIS_SIDECAR_CONNECT_TIMEOUT_MS", "not-a-number");  // overridden by the flag below
  const config c = run_ok({up, "--log-level=warn", "--connect-timeout-ms=99"});
  CHECK(c.pool_size == 5);
  CHECK(c.log_level == "warn");
  CHECK(c.limits.max_bulk_bytes == 1024 * 1024);
  CHECK(c.connect_timeout_ms == 99);
}

TEST_CASE("boolean flags and variables", "[config]") {
  env_guard env;
  CHECK(run_ok({up, "--tls-insecure-skip-verify"}).tls_insecure_skip_verify);
  CHECK(run_ok({up, "--tls-insecure-skip-verify=true"}).tls_insecure_skip_verify);
  CHECK_FALSE(run_ok({up, "--tls-insecure-skip-verify=false"}).tls_insecure_skip_verify);
  CHECK_THAT(error_of({up, "--tls-insecure-skip-verify=maybe"}),
             Catch::StartsWith("invalid value 'maybe' for --tls-insecure-skip-verify"));
  // A boolean flag never takes the next argument as its value.
  CHECK_THAT(error_of({up, "--check-config", "false"}),
             Catch::StartsWith("unexpected argument 'false'"));
  for (const auto& [text, expected] : std::vector<std::pair<std::string, bool>>{{"1", true},
                                                                                {"yes", true},
                                                                                {"TRUE", true},
                                                                                {"0", false},
                                                                                {"no", false},
                                                                                {"False", false}}) {
    INFO(text);
    env.set("REDIS_SIDECAR_CHECK_CONFIG", text);
    CHECK(run_ok({up}).check_config == expected);
  }
  env.set("REDIS_SIDECAR_CHECK_CONFIG", "2");
  CHECK_THAT(error_of({up}), Catch::StartsWith("invalid value '2' for REDIS_SIDECAR_CHECK_CONFIG"));
  CHECK_FALSE(run_ok({up, "--check-config=off"}).check_config);  // the flag wins
}

TEST_CASE("upstream comes from --upstream, REDIS_SIDECAR_UPSTREAM, then REDIS_URL", "[config]") {
  env_guard env;
  CHECK(error_of({}) ==
        "no upstream configured: set --upstream, REDIS_SIDECAR_UPSTREAM or REDIS_URL "
        "(e.g. rediss://user:password@host:6380/0)");
  env.set("REDIS_URL", "redis://from-redis-url:6400");
  config c = run_ok({});
  CHECK(c.upstream_source == "REDIS_URL");
  CHECK(c.upstream.host == "from-redis-url");
  env.set("REDIS_SIDECAR_UPSTREAM", "redis://from-sidecar-var:6401");
  c = run_ok({});
  CHECK(c.upstream_source == "REDIS_SIDECAR_UPSTREAM");
  CHECK(c.upstream.host == "from-sidecar-var");
  c = run_ok({"--upstream", "redis://from-flag:6402"});
  CHECK(c.upstream_source == "--upstream");
  CHECK(c.upstream.host == "from-flag");
  env.set("REDIS_SIDECAR_UPSTREAM", "");  // an empty variable counts as unset
  CHECK(run_ok({}).upstream_source == "REDIS_URL");
}

TEST_CASE("a bad upstream URL names its source and hides the password", "[config]") {
  env_guard env;
  env.set("REDIS_URL", "http://u:Hunter2Pw@h");
  const auto m = error_of({});
  CHECK_THAT(m, Catch::StartsWith("REDIS_URL: ") && Catch::Contains("unsupported scheme 'http'"));
  CHECK_THAT(m, !Catch::Contains("Hunter2"));
  const auto f = error_of({"--upstream=redis://:Hunter2Pw@h:0"});
  CHECK_THAT(f, Catch::StartsWith("--upstream: ") && !Catch::Contains("Hunter2"));
}

TEST_CASE("help and version flags exit successfully", "[config]") {
  env_guard env;
  auto r = parse({"--version"});
  CHECK(r.outcome == parse_outcome::exit_ok);
  CHECK(r.message == "redis-sidecar " REDIS_SIDECAR_VERSION);
  r = parse({"--nonsense", "--help"});  // help wins over anything else
  CHECK(r.outcome == parse_outcome::exit_ok);
  CHECK(r.message == usage());
  CHECK(parse({"-h"}).message == usage());
}

TEST_CASE("usage lists every flag with its variable and default", "[config]") {
  const std::string text = usage();
  const std::vector<std::string> flags{"listen",
                                       "requirepass",
                                       "upstream",
                                       "pool-size",
                                       "tls-ca-file",
                                       "tls-cert-file",
                                       "tls-key-file",
                                       "tls-server-name",
                                       "tls-insecure-skip-verify",
                                       "max-clients",
                                       "max-pipeline",
                                       "max-query-buffer-bytes",
                                       "max-output-bytes",
                                       "max-pubsub-output-bytes",
                                       "max-bulk-bytes",
                                       "max-multibulk-len",
                                       "max-inline-bytes",
                                       "max-nesting",
                                       "connect-timeout-ms",
                                       "command-timeout-ms",
                                       "reconnect-min-ms",
                                       "reconnect-max-ms",
                                       "log-level",
                                       "check-config"};
  for (const auto& flag : flags) {
    INFO(flag);
    std::string env = "REDIS_SIDECAR_";
    for (char ch : flag) env += ch == '-' ? '_' : static_cast<char>(ch - 'a' + 'A');
    const auto at = text.find("  --" + flag + " ");
    REQUIRE(at != std::string::npos);
    const auto line = text.substr(at, text.find('\n', at) - at);
    CHECK_THAT(line, Catch::Contains(env) && Catch::Contains("(default "));
  }
  for (const auto* group : {"Listening:", "Upstream:", "TLS:", "Limits:", "Timeouts:", "Logging:"})
    CHECK_THAT(text, Catch::Contains(std::string("\n") + group + "\n"));
  CHECK_THAT(text, Catch::Contains("--pool-size N") && Catch::Contains("(default 2)"));
  CHECK_THAT(text, Catch::Contains("(default 127.0.0.1:6379)"));
  CHECK_THAT(text, Catch::Contains("MAX_OUTPUT_BYTES") && Catch::Contains("(default 1gb)") &&
                       Catch::Contains("(default 32mb)") && Catch::Contains("(default 64kb)"));
}

TEST_CASE("flag errors name the flag and the value in one line", "[config]") {
  env_guard env;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{up, "--nope"}, "unknown flag --nope (see --help)"},
      {{up, "--nope=1"}, "unknown flag --nope (see --help)"},
      {{up, "stray"}, "unexpected argument 'stray'"},
      {{up, "--"}, "unexpected argument '--'"},
      {{up, "--pool-size"}, "missing value for --pool-size"},
      {{"--pool-size", "--log-level", "debug", up}, "missing value for --pool-size"},
      {{up, "--pool-size", "abc"},
       "invalid value 'abc' for --pool-size: expected a whole number "
       "from 1 to 256"},
      {{up, "--pool-size=0"}, "invalid value '0' for --pool-size"},
      {{up, "--pool-size=257"}, "invalid value '257' for --pool-size"},
      {{up, "--pool-size=-1"}, "invalid value '-1' for --pool-size"},
      {{up, "--pool-size=3x"}, "invalid value '3x' for --pool-size"},
      {{up, "--max-clients=0"}, "invalid value '0' for --max-clients"},
      {{up, "--connect-timeout-ms=0"}, "invalid value '0' for --connect-timeout-ms"},
      {{up, "--command-timeout-ms=4294967296"},
       "invalid value '4294967296' for --command-timeout-ms"},
      {{up, "--max-bulk-bytes=99999999999999999999"}, "invalid value '99999999999999999999'"},
      {{up, "--max-bulk-bytes=1tb"}, "invalid value '1tb' for --max-bulk-bytes"},
      {{up, "--max-multibulk-len=2147483648"},
       "invalid value '2147483648' for --max-multibulk-len"},
      {{up, "--log-level=verbose"},
       "invalid value 'verbose' for --log-level: expected debug, info, "
       "warn or error"},
      {{up, "--reconnect-min-ms=100", "--reconnect-max-ms=50"},
       "--reconnect-min-ms (100) is greater than --reconnect-max-ms (50)"},
  };
  for (const auto& [args, expected] : cases) {
    INFO(args.back());
    CHECK_THAT(error_of(args), Catch::StartsWith(expected));
  }
}

TEST_CASE("errors never echo secrets", "[config]") {
  env_guard env;
  // An unknown flag's value is not printed (it may be a mistyped --requirepass).
  CHECK_THAT(error_of({up, "--requirepas=Hunter2Pw"}), !Catch::Contains("Hunter2"));
  // A URL given to a flag that does not take one is masked.
  CHECK_THAT(error_of({up, "--listen=redis://u:Hunter2Pw@h"}),
             !Catch::Contains("Hunter2") && Catch::Contains("****"));
}

TEST_CASE("variable errors name the variable", "[config]") {
  env_guard env;
  env.set("REDIS_SIDECAR_MAX_PIPELINE", "lots");
  CHECK_THAT(error_of({up}),
             Catch::StartsWith("invalid value 'lots' for REDIS_SIDECAR_MAX_PIPELINE"));
  env.set("REDIS_SIDECAR_MAX_PIPELINE", "64");
  env.set("REDIS_SIDECAR_RECONNECT_MAX_MS", "10");
  CHECK(error_of({up}) ==
        "--reconnect-min-ms (50) is greater than REDIS_SIDECAR_RECONNECT_MAX_MS (10)");
}

TEST_CASE("sizes, log level spellings and repeated flags", "[config]") {
  env_guard env;
  CHECK(run_ok({up, "--max-output-bytes=2k"}).max_output_bytes == 2000);
  CHECK(run_ok({up, "--max-output-bytes=2KB"}).max_output_bytes == 2048);
  CHECK(run_ok({up, "--max-output-bytes=3m"}).max_output_bytes == 3000000);
  CHECK(run_ok({up, "--max-output-bytes=3mb"}).max_output_bytes == 3u * 1024 * 1024);
  CHECK(run_ok({up, "--max-output-bytes=1gb"}).max_output_bytes == 1024ull * 1024 * 1024);
  CHECK_THAT(error_of({up, "--pool-size=2k"}), Catch::StartsWith("invalid value '2k'"));
  CHECK(run_ok({up, "--log-level=WARNING"}).log_level == "warn");
  CHECK(run_ok({up, "--pool-size=3", "--pool-size=4"}).pool_size == 4);
  CHECK(run_ok({up, "--requirepass=--dashes"}).requirepass == "--dashes");
}

TEST_CASE("listen address forms (--listen), including a Unix socket", "[config]") {
  env_guard env;
  struct c {
    std::string value, host;
    int port;
    std::string unix_path;
  };
  const std::vector<c> good{
      {"127.0.0.1:7000", "127.0.0.1", 7000, ""},
      {"[::1]:7001", "::1", 7001, ""},
      {":7002", "127.0.0.1", 7002, ""},
      {"7003", "127.0.0.1", 7003, ""},
      {"localhost:7004", "localhost", 7004, ""},
      {"127.0.0.1:0", "127.0.0.1", 0, ""},
      {"unix:/tmp/redis-sidecar.sock", "127.0.0.1", 6379, "/tmp/redis-sidecar.sock"},
  };
  for (const auto& g : good) {
    INFO(g.value);
    const config cfg = run_ok({up, "--listen", g.value});
    CHECK(cfg.listen.host == g.host);
    CHECK(cfg.listen.port == g.port);
    CHECK(cfg.listen.unix_path == g.unix_path);
  }
  const std::vector<std::pair<std::string, std::string>> bad{
      {"::1:6379", "write IPv6 addresses in brackets"},
      {"[127.0.0.1]:6379", "expected an IPv6 literal"},
      {"127.0.0.1:70000", "port from 0 to 65535"},
      {"127.0.0.1:", "port from 0 to 65535"},
      {"host:port", "port from 0 to 65535"},
      {"unix:", "Unix socket path is empty"},
      {"unix:/" + std::string(200, 'x'), "Unix socket path is too long"},
  };
  for (const auto& [value, expected] : bad) {
    INFO(value);
    const auto m = error_of({up, "--listen=" + value});
    CHECK_THAT(m, Catch::StartsWith("invalid value '") && Catch::Contains("for --listen: ") &&
                      Catch::Contains(expected));
  }
}

TEST_CASE("an upstream equal to the listen address is refused", "[config]") {
  env_guard env;
  // The common mistake: the application's REDIS_URL points at the sidecar and the sidecar reads it.
  env.set("REDIS_URL", "redis://localhost:6379");
  const auto m = error_of({});
  CHECK_THAT(m, Catch::Contains("from REDIS_URL") && Catch::Contains("connect to itself") &&
                    Catch::Contains("set REDIS_SIDECAR_UPSTREAM"));
  const std::vector<std::pair<std::string, std::string>> loops{
      {"127.0.0.1:7000", "redis://127.0.0.1:7000"},
      {"127.0.0.1:7000", "redis://LOCALHOST:7000"},
      {"localhost:7000", "redis://127.0.0.1:7000"},
      {"[::1]:7000", "redis://[::1]:7000"},
      {"[::1]:7000", "redis://localhost:7000"},
      {"0.0.0.0:7000", "redis://127.0.0.1:7000"},
      {"[::]:7000", "redis://[::1]:7000"},
      {"redis.internal:7000", "rediss://redis.internal:7000"},
  };
  for (const auto& [listen, upstream] : loops) {
    INFO(listen << " " << upstream);
    CHECK_THAT(error_of({"--listen", listen, "--upstream", upstream}),
               Catch::Contains("(from --upstream) is the sidecar's own listen address"));
  }
  const std::vector<std::pair<std::string, std::string>> fine{
      {"127.0.0.1:7000", "redis://127.0.0.1:7001"},
      {"127.0.0.1:7000", "redis://[::1]:7000"},
      {"127.0.0.1:7000", "redis://redis.internal:7000"},
      {"unix:/tmp/rs.sock", "redis://127.0.0.1:6379"},
  };
  for (const auto& [listen, upstream] : fine) {
    INFO(listen << " " << upstream);
    run_ok({"--listen", listen, "--upstream", upstream});
  }
}

TEST_CASE("TLS options need rediss:// and readable files", "[config]") {
  env_guard env;
  temp_file ca("rs-ca"), cert("rs-cert");
  const std::string plain = "--upstream=redis://u:pw@redis.internal:6380";
  CHECK_THAT(
      error_of({plain, "--tls-ca-file", ca.path.string()}),
      Catch::StartsWith("--tls-ca-file given but the upstream URL is redis://; use rediss://") &&
          !Catch::Contains(":pw@"));
  CHECK_THAT(
      error_of({plain, "--tls-insecure-skip-verify"}),
      Catch::StartsWith("--tls-insecure-skip-verify given but the upstream URL is redis://"));
  env.set("REDIS_SIDECAR_TLS_SERVER_NAME", "sni.example");
  CHECK_THAT(
      error_of({plain}),
      Catch::StartsWith("REDIS_SIDECAR_TLS_SERVER_NAME given but the upstream URL is redis://"));
  CHECK(run_ok({up}).tls_server_name == "sni.example");

  CHECK_THAT(error_of({up, "--tls-cert-file", cert.path.string()}),
             Catch::StartsWith("--tls-cert-file given without --tls-key-file"));
  CHECK_THAT(error_of({up, "--tls-key-file", cert.path.string()}),
             Catch::StartsWith("--tls-key-file given without --tls-cert-file"));
  CHECK(error_of({up, "--tls-ca-file=/nonexistent/ca.pem"}) ==
        "cannot read --tls-ca-file '/nonexistent/ca.pem': No such file or directory");
  const auto dir = std::filesystem::temp_directory_path().string();
  CHECK(error_of({up, "--tls-ca-file", dir}) ==
        "cannot read --tls-ca-file '" + dir + "': it is a directory");
  CHECK_THAT(error_of({up, "--tls-cert-file", cert.path.string(), "--tls-key-file=/nonexistent/k"}),
             Catch::StartsWith("cannot read --tls-key-file '/nonexistent/k'"));
  CHECK(run_ok({up, "--tls-ca-file", ca.path.string()}).tls_ca_file == ca.path.string());
}

TEST_CASE("a failed parse leaves the config untouched", "[config]") {
  env_guard env;
  config c;
  c.pool_size = 42;
  const char* argv[] = {"redis-sidecar", "--upstream=redis://h:7000", "--pool-size=0"};
  std::string message;
  CHECK(parse_config(3, argv, c, message) == parse_outcome::exit_error);
  CHECK(c.pool_size == 42);
  CHECK_FALSE(c.upstream_set);
}

TEST_CASE("TCP keepalive is on by default, can be turned off, and is bounded", "[config]") {
  env_guard env;
  CHECK(config{}.tcp_keepalive_s == 60);
  CHECK(run_ok({up}).tcp_keepalive_s == 60);
  CHECK(run_ok({up, "--tcp-keepalive=0"}).tcp_keepalive_s == 0);
  CHECK(run_ok({up, "--tcp-keepalive", "32767"}).tcp_keepalive_s == 32767);
  env.set("REDIS_SIDECAR_TCP_KEEPALIVE", "300");
  CHECK(run_ok({up}).tcp_keepalive_s == 300);
  CHECK(run_ok({up, "--tcp-keepalive=15"}).tcp_keepalive_s == 15);
  CHECK(error_of({up, "--tcp-keepalive=32768"}) ==
        "invalid value '32768' for --tcp-keepalive: expected a whole number from 0 to 32767");
  CHECK_THAT(error_of({up, "--tcp-keepalive=60s"}),
             Catch::StartsWith("invalid value '60s' for --tcp-keepalive"));
  CHECK_THAT(usage(), Catch::Contains("\n  --tcp-keepalive SECONDS") &&
                          Catch::Contains("REDIS_SIDECAR_TCP_KEEPALIVE"));
}

TEST_CASE("idle dedicated connections close after a minute by default, or never", "[config]") {
  env_guard env;
  CHECK(config{}.dedicated_idle_ms == 60'000);
  CHECK(run_ok({up}).dedicated_idle_ms == 60'000);
  CHECK(run_ok({up, "--dedicated-idle-timeout=0"}).dedicated_idle_ms == 0);
  CHECK(run_ok({up, "--dedicated-idle-timeout", "5m"}).dedicated_idle_ms == 300'000);
  CHECK(run_ok({up, "--dedicated-idle-timeout=1500ms"}).dedicated_idle_ms == 1500);
  env.set("REDIS_SIDECAR_DEDICATED_IDLE_TIMEOUT", "10");
  CHECK(run_ok({up}).dedicated_idle_ms == 10'000);
  CHECK(run_ok({up, "--dedicated-idle-timeout=20s"}).dedicated_idle_ms == 20'000);
  CHECK_THAT(error_of({up, "--dedicated-idle-timeout=1d"}),
             Catch::StartsWith("invalid value '1d' for --dedicated-idle-timeout: expected a "
                               "duration"));
  CHECK_THAT(usage(), Catch::Contains("\n  --dedicated-idle-timeout DURATION") &&
                          Catch::Contains("REDIS_SIDECAR_DEDICATED_IDLE_TIMEOUT"));
}

TEST_CASE("busy polling is off unless asked for, and bounded", "[config]") {
  env_guard env;
  CHECK(config{}.busy_poll_us == 0);
  CHECK(run_ok({up}).busy_poll_us == 0);
  CHECK(run_ok({up, "--busy-poll-us=50"}).busy_poll_us == 50);
  CHECK(run_ok({up, "--busy-poll-us", "1000"}).busy_poll_us == 1000);
  CHECK(run_ok({up, "--busy-poll-us=0"}).busy_poll_us == 0);
  env.set("REDIS_SIDECAR_BUSY_POLL_US", "30");
  CHECK(run_ok({up}).busy_poll_us == 30);
  CHECK(run_ok({up, "--busy-poll-us=40"}).busy_poll_us == 40);
  CHECK(error_of({up, "--busy-poll-us=1001"}) ==
        "invalid value '1001' for --busy-poll-us: expected a whole number from 0 to 1000");
  CHECK_THAT(error_of({up, "--busy-poll-us=5ms"}),
             Catch::StartsWith("invalid value '5ms' for --busy-poll-us"));
  CHECK_THAT(usage(), Catch::Contains("\nLatency:\n  --busy-poll-us US") &&
                          Catch::Contains("REDIS_SIDECAR_BUSY_POLL_US"));
}

TEST_CASE("napping is on, 10 microseconds, and bounded", "[config]") {
  env_guard env;
  CHECK(config{}.nap_us == 10);
  CHECK(run_ok({up}).nap_us == 10);
  CHECK(run_ok({up, "--nap-us=0"}).nap_us == 0);
  CHECK(run_ok({up, "--nap-us", "1000"}).nap_us == 1000);
  env.set("REDIS_SIDECAR_NAP_US", "25");
  CHECK(run_ok({up}).nap_us == 25);
  CHECK(run_ok({up, "--nap-us=5"}).nap_us == 5);
  CHECK(error_of({up, "--nap-us=1001"}) ==
        "invalid value '1001' for --nap-us: expected a whole number from 0 to 1000");
  CHECK_THAT(usage(),
             Catch::Contains("\n  --nap-us US") && Catch::Contains("REDIS_SIDECAR_NAP_US"));
}

TEST_CASE("write holding is on for upstreams within 100 microseconds, and bounded", "[config]") {
  env_guard env;
  CHECK(config{}.write_hold_rtt_us == 100);
  CHECK(run_ok({up}).write_hold_rtt_us == 100);
  CHECK(run_ok({up, "--write-hold-rtt-us=0"}).write_hold_rtt_us == 0);
  CHECK(run_ok({up, "--write-hold-rtt-us", "100000"}).write_hold_rtt_us == 100000);
  env.set("REDIS_SIDECAR_WRITE_HOLD_RTT_US", "50");
  CHECK(run_ok({up}).write_hold_rtt_us == 50);
  CHECK(run_ok({up, "--write-hold-rtt-us=70"}).write_hold_rtt_us == 70);
  CHECK(error_of({up, "--write-hold-rtt-us=100001"}) ==
        "invalid value '100001' for --write-hold-rtt-us: expected a whole number from 0 to 100000");
  CHECK_THAT(usage(), Catch::Contains("\n  --write-hold-rtt-us US") &&
                          Catch::Contains("REDIS_SIDECAR_WRITE_HOLD_RTT_US"));
}

TEST_CASE("cache, fallback, metrics and logging options", "[config]") {
  env_guard env;
  const config d;
  CHECK(d.cache_mode == "auto");
  CHECK(d.cache_ttl_ms == 300'000);
  CHECK(d.fallback_writes == "journal");
  CHECK(d.fallback_miss == "nil");
  CHECK(d.metrics_enabled);
  CHECK(d.metrics_listen.host == "0.0.0.0");
  CHECK(d.metrics_listen.port == 9379);

  const std::vector<std::pair<std::string, std::uint32_t>> durations{
      {"300", 300'000},  {"300s", 300'000}, {"5m", 300'000},
      {"1h", 3'600'000}, {"1500ms", 1500},  {"1500MS", 1500}};
  for (const auto& [text, ms] : durations) {
    INFO(text);
    CHECK(run_ok({up, "--cache-ttl=" + text}).cache_ttl_ms == ms);
  }
  env.set("REDIS_SIDECAR_CACHE_TTL", "2m");
  env.set("REDIS_SIDECAR_FALLBACK_WRITES", "REJECT");
  env.set("REDIS_SIDECAR_METRICS_LISTEN", "off");
  env.set("REDIS_SIDECAR_LOG_FORMAT", "json");
  config c = run_ok({up});
  CHECK(c.cache_ttl_ms == 120'000);
  CHECK(c.fallback_writes == "reject");
  CHECK_FALSE(c.metrics_enabled);
  CHECK(c.log_format == "json");
  c = run_ok({up, "--metrics-listen=127.0.0.1:0", "--cache-mode=fallback", "--cache-max-bytes=1mb",
              "--fallback-miss=error"});
  CHECK(c.metrics_enabled);
  CHECK(c.metrics_listen.host == "127.0.0.1");
  CHECK(c.metrics_listen.port == 0);
  CHECK(c.cache_mode == "fallback");
  CHECK(c.cache_max_bytes == 1024 * 1024);
  CHECK(c.fallback_miss == "error");

  CHECK_THAT(error_of({up, "--cache-ttl=5d"}),
             Catch::StartsWith("invalid value '5d' for --cache-ttl: expected a duration"));
  CHECK_THAT(error_of({up, "--cache-ttl=0"}),
             Catch::StartsWith("invalid value '0' for --cache-ttl"));
  CHECK(error_of({up, "--cache-mode=lru"}) ==
        "invalid value 'lru' for --cache-mode: expected auto, tracking, keyspace, ttl, fallback or "
        "off");
  CHECK(error_of({up, "--fallback-writes=drop"}) ==
        "invalid value 'drop' for --fallback-writes: expected journal or reject");
  CHECK(error_of({up, "--log-format=xml"}) ==
        "invalid value 'xml' for --log-format: expected text or json");
  for (const char* bad : {"--tls-server-name=rediss://cache.example.com",
                          "--tls-server-name=cache.example.com:6380", "--tls-server-name=a b"})
    CHECK_THAT(error_of({"--upstream=rediss://h:6380", bad}),
               Catch::StartsWith("invalid value '") &&
                   Catch::Contains("for --tls-server-name: expected the host name"));
  for (const char* good : {"--tls-server-name=cache.example.com", "--tls-server-name=10.0.0.1",
                           "--tls-server-name=::1", "--tls-server-name=_svc.example.com"})
    CHECK(run_ok({"--upstream=rediss://h:6380", good}).tls_server_name ==
          std::string_view(good).substr(18));
  CHECK(error_of({up, "--listen=tcp://127.0.0.1:6379"}) ==
        "invalid value 'tcp://127.0.0.1:6379' for --listen: expected HOST:PORT without a scheme, "
        "e.g. 127.0.0.1:6379");
  CHECK_THAT(error_of({up, "--metrics-listen=http://0.0.0.0:9379"}),
             Catch::EndsWith("expected HOST:PORT without a scheme, e.g. 0.0.0.0:9379"));
  CHECK_THAT(error_of({up, "--metrics-listen=unix:/tmp/m.sock"}),
             Catch::Contains("needs a TCP HOST:PORT"));
  CHECK_THAT(error_of({up, "--metrics-listen=127.0.0.1:99999"}),
             Catch::StartsWith("invalid value '127.0.0.1:99999' for --metrics-listen"));
}

TEST_CASE("REDIS_SIDECAR_* variables that name no setting are reported, with the closest",
          "[config]") {
  const char* env[] = {"PATH=/usr/bin",
                       "REDIS_SIDECAR_CACHE_MODE=ttl",
                       "REDIS_SIDECAR_CACHE_MODEE=ttl",
                       "REDIS_SIDECAR_UPSTRAEM=redis://h",
                       "REDIS_SIDECAR_SOMETHING_ELSE_ENTIRELY=1",
                       "REDIS_SIDECAR_POOL_SIZE",
                       nullptr};
  const auto w = redis_sidecar::unknown_variables(env);
  REQUIRE(w.size() == 3);
  CHECK(w[0] ==
        "REDIS_SIDECAR_CACHE_MODEE names no setting of redis-sidecar and is ignored; did you mean "
        "REDIS_SIDECAR_CACHE_MODE?");
  CHECK(w[1].ends_with("did you mean REDIS_SIDECAR_UPSTREAM?"));
  CHECK(w[2] ==
        "REDIS_SIDECAR_SOMETHING_ELSE_ENTIRELY names no setting of redis-sidecar and is "
        "ignored");
  const char* none[] = {nullptr};
  CHECK(redis_sidecar::unknown_variables(none).empty());
}

TEST_CASE("REDIS_SIDECAR_* variables: a name cut short, and the URL's parts, get a hint",
          "[config]") {
  const char* env[] = {"REDIS_SIDECAR_TLS_CA=/ca.pem", "REDIS_SIDECAR_CA_FILE=/ca.pem",
                       "REDIS_SIDECAR_PASSWORD=x",     "REDIS_SIDECAR_UPSTREAM_HOST=h",
                       "REDIS_SIDECAR_DB=2",           "REDIS_SIDECAR_TLS=true",
                       "REDIS_SIDECAR_ABC=1",          nullptr};
  const auto w = redis_sidecar::unknown_variables(env);
  REQUIRE(w.size() == 7);
  CHECK(w[0].ends_with("; did you mean REDIS_SIDECAR_TLS_CA_FILE?"));
  CHECK(w[1].ends_with("; did you mean REDIS_SIDECAR_TLS_CA_FILE?"));
  CHECK(w[2] ==
        "REDIS_SIDECAR_PASSWORD names no setting of redis-sidecar and is ignored; the upstream's "
        "password goes in REDIS_SIDECAR_UPSTREAM (redis[s]://user:password@host:port/db), the one "
        "clients must give in REDIS_SIDECAR_REQUIREPASS");
  CHECK(w[3].ends_with("the sidecar's own in REDIS_SIDECAR_LISTEN"));
  CHECK(w[4].find("go in REDIS_SIDECAR_UPSTREAM") != std::string::npos);
  CHECK(w[5].find("TLS (rediss://) go in REDIS_SIDECAR_UPSTREAM") != std::string::npos);
  CHECK(w[6] == "REDIS_SIDECAR_ABC names no setting of redis-sidecar and is ignored");
}

TEST_CASE("secrets given as flags are overwritten in argv once parsed", "[config]") {
  std::vector<std::string> args = {"redis-sidecar",
                                   "--upstream",
                                   "rediss://app:p%40ss:w@cache.example.com:6380/2",
                                   "--requirepass=client-secret",
                                   "--pool-size",
                                   "3",
                                   "--upstream=redis://:only-pass@h",
                                   "--requirepass",
                                   "s2",
                                   "--upstream=redis://user@h:1",
                                   "--upstream"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  redis_sidecar::hide_secret_flags(static_cast<int>(argv.size()), argv.data());
  CHECK(std::string(argv[2]) == "rediss://app:********@cache.example.com:6380/2");
  CHECK(std::string(argv[3]) == "--requirepass=*************");
  CHECK(std::string(argv[4]) == "--pool-size");
  CHECK(std::string(argv[5]) == "3");
  CHECK(std::string(argv[6]) == "--upstream=redis://:*********@h");
  CHECK(std::string(argv[8]) == "**");
  CHECK(std::string(argv[9]) == "--upstream=redis://****@h:1");  // a lone user: masked too
  CHECK(std::string(argv[10]) == "--upstream");
}
