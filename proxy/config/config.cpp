// config: flags and REDIS_SIDECAR_* variables, driven by one table of options. Each option names
// its flag, its field and its bounds; the environment variable is derived from the flag
// (--tls-ca-file reads REDIS_SIDECAR_TLS_CA_FILE), and --help is generated from the same table, so
// the three never drift apart. Parsing collects the flags first and then applies, per option, the
// flag if given and else the variable: a bad variable that a flag overrides is not an error.
#include "proxy/config/config.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <variant>

#include "proxy/tcp_keepalive.hpp"

namespace redis_sidecar {
namespace {

enum class kind { text, boolean, millis, seconds, count, bytes, listen, metrics_listen, upstream, choice };

using field =
    std::variant<std::monostate, std::string config::*, bool config::*, std::uint32_t config::*,
                 std::size_t config::*, std::size_t resp::limits::*>;

struct option {
  std::string_view name;     // the flag without "--"
  std::string_view group;    // the --help section
  std::string_view metavar;  // what the value looks like, in --help
  kind type;
  field target;
  unsigned long long min = 0;  // numbers only
  unsigned long long max = 0;
  std::string_view help;
  std::string_view default_text = {};  // empty: printed from a default config
  std::string_view choices = {};       // kind::choice: the allowed values, '|' separated
};

constexpr auto u32_max = std::numeric_limits<std::uint32_t>::max();
constexpr auto size_max = std::numeric_limits<std::size_t>::max();
constexpr unsigned long long int_max = std::numeric_limits<int>::max();

const std::array options{
    option{"listen", "Listening", "HOST:PORT", kind::listen, field{}, 0, 0,
           "client address: HOST:PORT, [::1]:PORT, :PORT (127.0.0.1) or unix:/path/to.sock"},
    option{"requirepass", "Listening", "PASSWORD", kind::text, &config::requirepass, 0, 0,
           "clients must AUTH with this password", "none"},
    option{"upstream", "Upstream", "URL", kind::upstream, field{}, 0, 0,
           "redis[s]://[[user][:password]@]host[:port][/db]; also read from REDIS_URL", "none"},
    option{"pool-size", "Upstream", "N", kind::count, &config::pool_size, 1, 256,
           "shared upstream connections per protocol (RESP2, RESP3)"},
    option{"tls-ca-file", "TLS", "FILE", kind::text, &config::tls_ca_file, 0, 0,
           "PEM CA bundle that verifies the upstream", "the system trust store"},
    option{"tls-cert-file", "TLS", "FILE", kind::text, &config::tls_cert_file, 0, 0,
           "client certificate for mutual TLS (needs --tls-key-file)", "none"},
    option{"tls-key-file", "TLS", "FILE", kind::text, &config::tls_key_file, 0, 0,
           "client private key for mutual TLS (needs --tls-cert-file)", "none"},
    option{"tls-server-name", "TLS", "NAME", kind::text, &config::tls_server_name, 0, 0,
           "SNI and certificate name to verify", "the URL's host"},
    option{"tls-insecure-skip-verify", "TLS", "", kind::boolean, &config::tls_insecure_skip_verify,
           0, 0, "do not verify the upstream certificate (testing only)"},
    option{"max-clients", "Limits", "N", kind::count, &config::max_clients, 1, size_max,
           "client connections accepted at once"},
    option{"max-pipeline", "Limits", "N", kind::count, &config::max_pipeline, 1, size_max,
           "in-flight requests per client before the sidecar stops reading it"},
    option{"max-query-buffer-bytes", "Limits", "BYTES", kind::bytes,
           &config::max_query_buffer_bytes, 1, size_max, "unparsed request bytes per client"},
    option{"max-output-bytes", "Limits", "BYTES", kind::bytes, &config::max_output_bytes, 1,
           size_max, "unread reply bytes per client before it is closed"},
    option{"max-pubsub-output-bytes", "Limits", "BYTES", kind::bytes,
           &config::max_pubsub_output_bytes, 1, size_max,
           "unread reply bytes per subscribed client before it is closed"},
    option{"max-bulk-bytes", "Limits", "BYTES", kind::bytes, &resp::limits::max_bulk_bytes, 1,
           size_max, "largest bulk string in a request (replies: up to 512mb at least)"},
    option{"max-multibulk-len", "Limits", "N", kind::count, &resp::limits::max_multibulk_len, 1,
           int_max, "most arguments in one request"},
    option{"max-inline-bytes", "Limits", "BYTES", kind::bytes, &resp::limits::max_inline_bytes, 1,
           size_max, "longest inline command or request line (reply lines: as bulk strings)"},
    option{"max-nesting", "Limits", "N", kind::count, &resp::limits::max_nesting, 1, 65536,
           "deepest nesting of reply aggregates"},
    option{"connect-timeout-ms", "Timeouts", "MS", kind::millis, &config::connect_timeout_ms, 1,
           u32_max, "upstream TCP connect + TLS + handshake"},
    option{"command-timeout-ms", "Timeouts", "MS", kind::millis, &config::command_timeout_ms, 1,
           u32_max, "deadline for an upstream reply"},
    option{"reconnect-min-ms", "Timeouts", "MS", kind::millis, &config::reconnect_min_ms, 1,
           u32_max, "first reconnect backoff"},
    option{"reconnect-max-ms", "Timeouts", "MS", kind::millis, &config::reconnect_max_ms, 1,
           u32_max, "reconnect backoff cap"},
    option{"tcp-keepalive", "Timeouts", "SECONDS", kind::count, &config::tcp_keepalive_s, 0,
           max_tcp_keepalive_seconds,
           "TCP keepalive on upstream and client connections: first probe after SECONDS idle, "
           "a dead peer or path found in about 2 x SECONDS (0: off)"},
    option{"dedicated-idle-timeout", "Timeouts", "DURATION", kind::seconds,
           &config::dedicated_idle_ms, 0, u32_max,
           "close a dedicated upstream connection (MULTI, blocking, SUBSCRIBE) idle this long "
           "(300, 60s, 5m, 1500ms; 0: keep up to 16 per protocol)",
           "60s"},
    option{"cache-mode", "Cache and fallback", "MODE", kind::choice, &config::cache_mode, 0, 0,
           "tracking, keyspace, ttl, fallback, off, or auto (the strongest the upstream supports)",
           {}, "auto|tracking|keyspace|ttl|fallback|off"},
    option{"cache-prefix", "Cache and fallback", "P1,P2", kind::text, &config::cache_prefix, 0, 0,
           "key prefixes served from L1 (ttl mode needs them; tracking: all keys if none)", "none"},
    option{"cache-max-bytes", "Cache and fallback", "BYTES", kind::bytes, &config::cache_max_bytes,
           4096, size_max, "L1 size bound: keys, values and per-entry overhead"},
    option{"cache-max-entry-bytes", "Cache and fallback", "BYTES", kind::bytes,
           &config::cache_max_entry_bytes, 1, size_max, "largest key + value kept in L1"},
    option{"cache-ttl", "Cache and fallback", "DURATION", kind::seconds, &config::cache_ttl_ms, 1,
           u32_max, "oldest value L1 may serve (300, 300s, 5m, 1500ms)", "300s"},
    option{"fallback-miss", "Cache and fallback", "nil|error", kind::choice,
           &config::fallback_miss, 0, 0, "GET of a key L1 does not hold, during fallback", {},
           "nil|error"},
    option{"fallback-writes", "Cache and fallback", "journal|reject", kind::choice,
           &config::fallback_writes, 0, 0,
           "writes during fallback: journal (replayed on recovery) or reject", {},
           "journal|reject"},
    option{"fallback-journal-max-bytes", "Cache and fallback", "BYTES", kind::bytes,
           &config::fallback_journal_max_bytes, 1, size_max,
           "writes kept for replay; when full, further writes get an error"},
    option{"health-probe-interval-ms", "Cache and fallback", "MS", kind::millis,
           &config::health_probe_interval_ms, 10, u32_max, "upstream health probe period"},
    option{"health-probe-timeout-ms", "Cache and fallback", "MS", kind::millis,
           &config::health_probe_timeout_ms, 10, u32_max, "a probe slower than this fails"},
    option{"fallback-after-ms", "Cache and fallback", "MS", kind::millis,
           &config::fallback_after_ms, 0, u32_max,
           "how long the upstream may fail before fallback starts"},
    option{"recover-after-probes", "Cache and fallback", "N", kind::count,
           &config::recover_after_probes, 1, 1000, "good probes in a row that end fallback"},
    option{"busy-poll-us", "Latency", "US", kind::count, &config::busy_poll_us, 0, 1000,
           "poll for the next event this long before sleeping, while events come that soon: "
           "lower latency for CPU (0: off)"},
    option{"nap-us", "Latency", "US", kind::count, &config::nap_us, 0, 1000,
           "while unpipelined clients are served from L1 alone, sleep US between turns instead "
           "of waiting for the next request to wake the sidecar: the app's sends then wake "
           "nobody; three times US while 8 or more clients sent requests within the last "
           "millisecond (0: off)"},
    option{"write-hold-rtt-us", "Latency", "US", kind::count, &config::write_hold_rtt_us, 0,
           100000,
           "while the upstream's round trip is under US, a small write waits for the replies to "
           "the requests written before it, so that Redis reads larger batches (0: never)"},
    option{"metrics-listen", "Metrics", "HOST:PORT", kind::metrics_listen, field{}, 0, 0,
           "/metrics, /healthz and /readyz (off: disabled)", "0.0.0.0:9379"},
    option{"log-level", "Logging", "LEVEL", kind::choice, &config::log_level, 0, 0,
           "debug, info, warn or error", {}, "debug|info|warn|error"},
    option{"log-format", "Logging", "FORMAT", kind::choice, &config::log_format, 0, 0,
           "text or json (one object per line)", {}, "text|json"},
    option{"check-config", "General", "", kind::boolean, &config::check_config, 0, 0,
           "validate the configuration and exit"},
};

char upper(char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); }
char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

std::string env_name(const option& o) {
  std::string out = "REDIS_SIDECAR_";
  for (char c : o.name) out += c == '-' ? '_' : upper(c);
  return out;
}

const option* find_option(std::string_view name) {
  for (const auto& o : options)
    if (o.name == name) return &o;
  return nullptr;
}

// Built by appending: GCC 12 at -O3 warns (-Wrestrict, a known false positive) on "'" + string.
std::string quoted(std::string_view value) {
  std::string out = "'";
  out += mask_url(value);
  out += '\'';
  return out;
}

std::optional<bool> parse_bool(std::string_view v) {
  const auto s = lowercase(v);
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  return std::nullopt;
}

// Decimal digits, with Redis' size suffixes when `sizes` (k = 1000, kb = 1024, ... as redis.conf).
std::optional<unsigned long long> parse_number(std::string_view v, bool sizes) {
  std::size_t i = 0;
  unsigned long long n = 0;
  constexpr auto top = std::numeric_limits<unsigned long long>::max();
  for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) {
    const auto d = static_cast<unsigned long long>(v[i] - '0');
    if (n > (top - d) / 10) return std::nullopt;
    n = n * 10 + d;
  }
  if (i == 0) return std::nullopt;
  const auto suffix = lowercase(v.substr(i));
  if (suffix.empty()) return n;
  if (!sizes) return std::nullopt;
  unsigned long long mul = 0;
  if (suffix == "k") mul = 1000ull;
  if (suffix == "kb") mul = 1024ull;
  if (suffix == "m") mul = 1000ull * 1000;
  if (suffix == "mb") mul = 1024ull * 1024;
  if (suffix == "g") mul = 1000ull * 1000 * 1000;
  if (suffix == "gb") mul = 1024ull * 1024 * 1024;
  if (mul == 0 || n > top / mul) return std::nullopt;
  return n * mul;
}

// A duration in ms: "300" (seconds), "300s", "5m", "1h", "1500ms".
std::optional<unsigned long long> parse_duration_ms(std::string_view v) {
  std::size_t digits = 0;
  while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
  const auto n = parse_number(v.substr(0, digits), false);
  if (!n) return std::nullopt;
  const auto unit = lowercase(v.substr(digits));
  unsigned long long mul = 0;
  if (unit.empty() || unit == "s") mul = 1000;
  if (unit == "ms") mul = 1;
  if (unit == "m") mul = 60'000;
  if (unit == "h") mul = 3'600'000;
  if (mul == 0 || *n > std::numeric_limits<unsigned long long>::max() / mul) return std::nullopt;
  return *n * mul;
}

bool fail_with(std::string& why, std::string_view text) {
  why = text;
  return false;
}

// "HOST:PORT", "[v6]:PORT", ":PORT", "PORT" or "unix:/path". Port 0 asks for an ephemeral port.
bool parse_listen(std::string_view v, listen_address& out, std::string& why) {
  listen_address result;
  if (v.substr(0, 5) == "unix:") {
    result.unix_path = v.substr(5);
    if (result.unix_path.empty()) return fail_with(why, "the Unix socket path is empty");
    if (result.unix_path.size() > 107) return fail_with(why, "the Unix socket path is too long");
    out = result;
    return true;
  }
  if (const auto scheme = v.find("://"); scheme != std::string_view::npos)
    return fail_with(why, "expected HOST:PORT without a scheme" +
                              (v.find('@') == std::string_view::npos
                                   ? ", e.g. " + std::string(v.substr(scheme + 3))
                                   : std::string()));
  const auto colon = v.rfind(':');
  std::string_view host = colon == std::string_view::npos ? "" : v.substr(0, colon);
  const auto port_text = colon == std::string_view::npos ? v : v.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (host.find(':') == std::string_view::npos) return fail_with(why, "expected an IPv6 literal");
  } else if (host.find(':') != std::string_view::npos) {
    return fail_with(why, "write IPv6 addresses in brackets, e.g. [::1]:6379");
  }
  const auto port = parse_number(port_text, false);
  if (!port || *port > 65535)
    return fail_with(why, "expected HOST:PORT with a port from 0 to 65535");
  for (char c : host)
    if (std::isspace(static_cast<unsigned char>(c)) || c == '[' || c == ']' || c == '/')
      return fail_with(why, "the host is not valid");
  if (!host.empty()) result.host = host;
  result.port = static_cast<std::uint16_t>(*port);
  out = result;
  return true;
}

std::string invalid(std::string_view source, std::string_view value, std::string_view why) {
  std::string out = "invalid value " + quoted(value) + " for " + std::string(source);
  out += ": ";
  out += why;
  return out;
}

std::string number_expectation(const option& o) {
  std::string out =
      "expected a whole number from " + std::to_string(o.min) + " to " + std::to_string(o.max);
  if (o.type == kind::bytes) out += " (suffixes k, kb, m, mb, g, gb as in redis.conf)";
  return out;
}

// Sets one option from `value`, which came from `source` (a flag or a variable name). Returns the
// error message, or an empty string.
std::string apply(const option& o, std::string_view source, std::string_view value, config& cfg) {
  std::string why;
  switch (o.type) {
    case kind::text: cfg.*std::get<std::string config::*>(o.target) = value; return {};
    case kind::boolean: {
      const auto b = parse_bool(value);
      if (!b) return invalid(source, value, "expected true or false (1/0, yes/no, on/off)");
      cfg.*std::get<bool config::*>(o.target) = *b;
      return {};
    }
    case kind::seconds: {
      const auto ms = parse_duration_ms(value);
      if (!ms || *ms < o.min || *ms > o.max)
        return invalid(source, value,
                       "expected a duration: seconds (300), or with a unit: 1500ms, 300s, 5m, 1h");
      cfg.*std::get<std::uint32_t config::*>(o.target) = static_cast<std::uint32_t>(*ms);
      return {};
    }
    case kind::millis:
    case kind::count:
    case kind::bytes: {
      const auto n = parse_number(value, o.type == kind::bytes);
      if (!n || *n < o.min || *n > o.max) return invalid(source, value, number_expectation(o));
      if (const auto* f = std::get_if<std::uint32_t config::*>(&o.target))
        cfg.*(*f) = static_cast<std::uint32_t>(*n);
      else if (const auto* s = std::get_if<std::size_t config::*>(&o.target))
        cfg.*(*s) = static_cast<std::size_t>(*n);
      else
        cfg.limits.*std::get<std::size_t resp::limits::*>(o.target) = static_cast<std::size_t>(*n);
      return {};
    }
    case kind::listen:
      if (!parse_listen(value, cfg.listen, why)) return invalid(source, value, why);
      return {};
    case kind::upstream:
      if (!parse_upstream_url(value, cfg.upstream, why)) return std::string(source) + ": " + why;
      cfg.upstream_set = true;
      cfg.upstream_source = source;
      return {};
    case kind::metrics_listen:
      if (lowercase(value) == "off") {
        cfg.metrics_enabled = false;
        return {};
      }
      if (value.substr(0, 5) == "unix:")
        return invalid(source, value, "the metrics endpoint needs a TCP HOST:PORT (or off)");
      if (!parse_listen(value, cfg.metrics_listen, why)) return invalid(source, value, why);
      cfg.metrics_enabled = true;
      return {};
    case kind::choice: {
      auto v = lowercase(value);
      if (o.name == "log-level" && v == "warning") v = "warn";
      std::string_view rest = o.choices;
      while (!rest.empty()) {
        const auto bar = rest.find('|');
        if (rest.substr(0, bar) == v) {
          cfg.*std::get<std::string config::*>(o.target) = v;
          return {};
        }
        rest = bar == std::string_view::npos ? std::string_view() : rest.substr(bar + 1);
      }
      // "debug|info|warn|error" -> "expected debug, info, warn or error"
      std::string expected(o.choices);
      const auto last = expected.rfind('|');
      if (last != std::string::npos) expected.replace(last, 1, " or ");
      for (auto bar = expected.find('|'); bar != std::string::npos; bar = expected.find('|'))
        expected.replace(bar, 1, ", ");
      return invalid(source, value, "expected " + expected);
    }
  }
  return {};
}

const char* env_value(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v != nullptr && *v != '\0' ? v : nullptr;  // an empty variable counts as unset
}

// Walks argv into one value per option (the last occurrence wins).
std::string collect_flags(int argc, const char* const* argv,
                          std::array<std::optional<std::string>, options.size()>& values) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.substr(0, 2) != "--" || arg.size() == 2)
      return "unexpected argument " + quoted(arg) + " (flags start with --; see --help)";
    const auto eq = arg.find('=');
    const auto name = arg.substr(2, eq == std::string_view::npos ? std::string_view::npos : eq - 2);
    const option* o = find_option(name);
    // The value is never echoed here: "--requirepas=secret" must not print the secret.
    if (o == nullptr) return "unknown flag --" + std::string(name) + " (see --help)";
    const auto index = static_cast<std::size_t>(o - options.data());
    if (eq != std::string_view::npos) {
      values[index] = std::string(arg.substr(eq + 1));
    } else if (o->type == kind::boolean) {
      values[index] = "true";
    } else if (i + 1 < argc && std::string_view(argv[i + 1]).substr(0, 2) != "--") {
      values[index] = argv[++i];
    } else {
      return "missing value for --" + std::string(name) + " (use --" + std::string(name) + "=" +
             std::string(o->metavar) + ")";
    }
  }
  return {};
}

// Which flag or variable set each option, for validation messages.
using sources = std::array<std::string, options.size()>;

std::string_view source_of(const sources& src, std::string_view name) {
  return src[static_cast<std::size_t>(find_option(name) - options.data())];
}

std::string check_file(const sources& src, std::string_view name, const std::string& path) {
  if (path.empty()) return {};
  const std::string prefix =
      "cannot read " + std::string(source_of(src, name)) + " '" + path + "': ";
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return prefix + "it is a directory";
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return prefix + std::strerror(errno);
  std::fclose(f);
  return {};
}

std::string check_tls(const config& cfg, const sources& src) {
  const std::array<std::pair<std::string_view, bool>, 5> tls_options{{
      {"tls-ca-file", !cfg.tls_ca_file.empty()},
      {"tls-cert-file", !cfg.tls_cert_file.empty()},
      {"tls-key-file", !cfg.tls_key_file.empty()},
      {"tls-server-name", !cfg.tls_server_name.empty()},
      {"tls-insecure-skip-verify", cfg.tls_insecure_skip_verify},
  }};
  for (const auto& [name, set] : tls_options) {
    if (set && !cfg.upstream.tls)
      return std::string(source_of(src, name)) +
             " given but the upstream URL is redis://; use rediss:// (upstream " +
             cfg.upstream.masked() + " from " + cfg.upstream_source + ")";
  }
  // The name the certificate must hold: a DNS name or an IP address, not a URL or host:port.
  const std::string& sni = cfg.tls_server_name;
  if (!sni.empty() &&
      (sni.find_first_not_of(
           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:") !=
           std::string::npos ||
       std::count(sni.begin(), sni.end(), ':') == 1))  // host:port (IPv6 has two or more)
    return "invalid value '" + sni + "' for " + std::string(source_of(src, "tls-server-name")) +
           ": expected the host name (or IP address) the upstream's certificate holds, without "
           "scheme, port or path";
  if (cfg.tls_cert_file.empty() != cfg.tls_key_file.empty()) {
    const bool cert = !cfg.tls_cert_file.empty();
    return std::string(source_of(src, cert ? "tls-cert-file" : "tls-key-file")) +
           " given without " + (cert ? "--tls-key-file" : "--tls-cert-file") +
           ": mutual TLS needs both the certificate and its key";
  }
  const std::array<std::pair<std::string_view, const std::string*>, 3> files{{
      {"tls-ca-file", &cfg.tls_ca_file},
      {"tls-cert-file", &cfg.tls_cert_file},
      {"tls-key-file", &cfg.tls_key_file},
  }};
  for (const auto& [name, path] : files)
    if (auto error = check_file(src, name, *path); !error.empty()) return error;
  return {};
}

enum class host_class { v4_loopback, v6_loopback, localhost, any_v4, any_v6, other };

host_class classify(const std::string& host) {
  const auto h = lowercase(host);
  if (h == "localhost" || h == "localhost.") return host_class::localhost;
  if (h == "127.0.0.1") return host_class::v4_loopback;
  if (h == "::1" || h == "0:0:0:0:0:0:0:1") return host_class::v6_loopback;
  if (h == "0.0.0.0") return host_class::any_v4;
  if (h == "::") return host_class::any_v6;
  return host_class::other;
}

// True when connecting to `up` would reach the listener at `listen`.
bool same_endpoint(const listen_address& listen, const upstream_url& up) {
  if (!listen.unix_path.empty() || listen.port != up.port) return false;
  if (lowercase(listen.host) == lowercase(up.host)) return true;
  const auto l = classify(listen.host);
  const auto u = classify(up.host);
  if (l == host_class::other || u == host_class::other) return false;
  if (l == host_class::localhost || u == host_class::localhost || l == host_class::any_v6)
    return true;
  if (l == host_class::any_v4) return u == host_class::v4_loopback;
  return l == u;
}

std::string self_loop_message(const config& cfg) {
  std::string out = "the upstream " + cfg.upstream.masked() + " (from " + cfg.upstream_source +
                    ") is the sidecar's own listen address " + cfg.listen.host + ":" +
                    std::to_string(cfg.listen.port) + ", so it would connect to itself";
  if (cfg.upstream_source == "REDIS_URL")
    return out +
           ": REDIS_URL is usually the application's setting for reaching the sidecar; set "
           "REDIS_SIDECAR_UPSTREAM (or --upstream) to the real Redis server";
  return out + ": point the upstream at the real Redis server, or change --listen";
}

std::string validate(const config& cfg, const sources& src) {
  if (!cfg.upstream_set)
    return "no upstream configured: set --upstream, REDIS_SIDECAR_UPSTREAM or REDIS_URL "
           "(e.g. rediss://user:password@host:6380/0)";
  if (auto error = check_tls(cfg, src); !error.empty()) return error;
  if (cfg.reconnect_min_ms > cfg.reconnect_max_ms)
    return std::string(source_of(src, "reconnect-min-ms")) + " (" +
           std::to_string(cfg.reconnect_min_ms) + ") is greater than " +
           std::string(source_of(src, "reconnect-max-ms")) + " (" +
           std::to_string(cfg.reconnect_max_ms) + ")";
  if (same_endpoint(cfg.listen, cfg.upstream)) return self_loop_message(cfg);
  if (cfg.cache_mode == "ttl" && cfg.cache_prefix.empty())
    return std::string(source_of(src, "cache-mode")) +
           " is ttl but no --cache-prefix is set: ttl mode serves possibly stale values, so it "
           "must be limited to the key prefixes where that is acceptable";
  return {};
}

// A byte count as redis.conf would write it: 1gb, 32mb, 64kb, else plain bytes.
std::string bytes_text(std::size_t n) {
  constexpr std::pair<std::size_t, std::string_view> units[] = {
      {1024ull * 1024 * 1024, "gb"}, {1024ull * 1024, "mb"}, {1024, "kb"}};
  for (const auto& [unit, suffix] : units)
    if (n >= unit && n % unit == 0) return std::to_string(n / unit) + std::string(suffix);
  return std::to_string(n);
}

std::string default_text(const option& o) {
  if (!o.default_text.empty()) return std::string(o.default_text);
  const config d;
  if (o.type == kind::listen) return d.listen.host + ":" + std::to_string(d.listen.port);
  if (const auto* s = std::get_if<std::string config::*>(&o.target)) return d.*(*s);
  if (const auto* b = std::get_if<bool config::*>(&o.target)) return d.*(*b) ? "true" : "false";
  if (const auto* u = std::get_if<std::uint32_t config::*>(&o.target))
    return std::to_string(d.*(*u));
  std::size_t n = 0;
  if (const auto* z = std::get_if<std::size_t config::*>(&o.target)) n = d.*(*z);
  if (const auto* l = std::get_if<std::size_t resp::limits::*>(&o.target)) n = d.limits.*(*l);
  return o.type == kind::bytes ? bytes_text(n) : std::to_string(n);
}

std::string pad(std::string s, std::size_t width) {
  s.resize(std::max(s.size() + 1, width), ' ');
  return s;
}

parse_outcome finish(std::string& message, std::string text, parse_outcome outcome) {
  message = std::move(text);
  return outcome;
}

}  // namespace

std::vector<std::string> unknown_variables(const char* const* env) {
  constexpr std::string_view prefix = "REDIS_SIDECAR_";
  const auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
        diagonal = up;
      }
    }
    return row[b.size()];
  };
  std::vector<std::string> out;
  for (; env != nullptr && *env != nullptr; ++env) {
    const std::string_view entry = *env;
    const std::string_view name = entry.substr(0, entry.find('='));
    if (!name.starts_with(prefix)) continue;
    std::string closest;
    std::size_t best = 4;  // suggest only near misses
    bool known = false;
    for (const auto& o : options) {
      const std::string known_name = env_name(o);
      if (known_name == name) known = true;
      if (const std::size_t d = distance(name, known_name); d < best) {
        best = d;
        closest = known_name;
      }
    }
    if (known) continue;
    // Not a near miss: the shortest name the unknown one begins or ends (REDIS_SIDECAR_TLS_CA for
    // _TLS_CA_FILE, REDIS_SIDECAR_CA_FILE for _TLS_CA_FILE).
    const std::string_view word = name.substr(prefix.size());
    for (const auto& o : options) {
      if (best < 4 || word.size() < 4) break;
      const std::string known_name = env_name(o);
      const std::string_view known_word = std::string_view(known_name).substr(prefix.size());
      if ((known_word.starts_with(word) || known_word.ends_with(word)) &&
          (closest.empty() || known_name.size() < closest.size()))
        closest = known_name;
    }
    std::string line = std::string(name) + " names no setting of redis-sidecar and is ignored";
    // The parts of the upstream's address have no settings of their own: they are the URL's.
    const std::string_view part = word.starts_with("UPSTREAM_") ? word.substr(9) : word;
    constexpr std::string_view url =
        "REDIS_SIDECAR_UPSTREAM (redis[s]://user:password@host:port/db)";
    if (part == "HOST" || part == "PORT")
      line += "; the upstream's host and port go in " + std::string(url) +
              ", the sidecar's own in REDIS_SIDECAR_LISTEN";
    else if (part == "PASSWORD" || part == "PASS")
      line += "; the upstream's password goes in " + std::string(url) +
              ", the one clients must give in REDIS_SIDECAR_REQUIREPASS";
    else if (part == "USER" || part == "USERNAME" || part == "DB" || part == "DATABASE" ||
             part == "TLS" || part == "SSL" || part == "URL")
      line += "; the upstream's user, password, host, port, db and TLS (rediss://) go in " +
              std::string(url);
    else if (!closest.empty())
      line += "; did you mean " + closest + "?";
    out.push_back(std::move(line));
  }
  return out;
}

void hide_secret_flags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (!arg.starts_with("--")) continue;
    const auto eq = arg.find('=');
    const auto name = arg.substr(2, eq == std::string_view::npos ? std::string_view::npos : eq - 2);
    if (name != "upstream" && name != "requirepass") continue;
    char* value = nullptr;
    if (eq != std::string_view::npos)
      value = argv[i] + eq + 1;
    else if (i + 1 < argc)
      value = argv[++i];
    else
      continue;
    const std::size_t size = std::strlen(value);
    std::size_t from = 0, to = size;  // --requirepass: all of it
    if (name == "upstream") {         // the URL's password: between "user:" and '@'
      const std::string_view url(value, size);
      const auto scheme = url.find("://");
      const auto at = url.find('@', scheme == std::string_view::npos ? 0 : scheme + 3);
      const auto colon = url.find(':', scheme == std::string_view::npos ? 0 : scheme + 3);
      if (scheme == std::string_view::npos || at == std::string_view::npos) continue;
      // "user:password@", or a lone "SECRET@", which some clients read as a password.
      from = colon < at ? colon + 1 : scheme + 3;
      to = at;
    }
    std::memset(value + from, '*', to - from);
  }
}

parse_outcome parse_config(int argc, const char* const* argv, config& out,
                           std::string& out_message) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return finish(out_message, usage(), parse_outcome::exit_ok);
    if (arg == "--version")
      return finish(out_message, "redis-sidecar " REDIS_SIDECAR_VERSION, parse_outcome::exit_ok);
  }
  std::array<std::optional<std::string>, options.size()> values;
  if (auto error = collect_flags(argc, argv, values); !error.empty())
    return finish(out_message, std::move(error), parse_outcome::exit_error);

  config cfg;
  sources src;
  for (std::size_t i = 0; i < options.size(); ++i) {
    const option& o = options[i];
    std::string env = env_name(o);
    const char* value = nullptr;
    if (values[i]) {
      src[i] = "--" + std::string(o.name);
      value = values[i]->c_str();
    } else if ((value = env_value(env)) != nullptr) {
      src[i] = env;
    } else if (o.type == kind::upstream && (value = env_value("REDIS_URL")) != nullptr) {
      src[i] = "REDIS_URL";
    } else {
      src[i] = "--" + std::string(o.name);
      continue;
    }
    if (auto error = apply(o, src[i], value, cfg); !error.empty())
      return finish(out_message, std::move(error), parse_outcome::exit_error);
  }
  if (auto error = validate(cfg, src); !error.empty())
    return finish(out_message, std::move(error), parse_outcome::exit_error);
  out = std::move(cfg);
  out_message.clear();
  return parse_outcome::run;
}

std::string usage() {
  std::string out = "redis-sidecar " REDIS_SIDECAR_VERSION
                    ": a local Redis proxy that forwards to a remote Redis over TLS.\n\n"
                    "Usage: redis-sidecar [--flag VALUE | --flag=VALUE]...\n"
                    "Each flag can also be set by the environment variable shown; a flag wins.\n"
                    "Boolean flags take no value (or =true / =false; variables take 1/0, "
                    "true/false, yes/no).\n";
  std::string_view group;
  for (const auto& o : options) {
    if (o.group != group) {
      group = o.group;
      out += "\n" + std::string(group) + ":\n";
    }
    std::string flag = "  --" + std::string(o.name);
    if (!o.metavar.empty()) flag += " " + std::string(o.metavar);
    out += pad(flag, 36) + pad(env_name(o), 44) + std::string(o.help) + " (default " +
           default_text(o) + ")\n";
  }
  out += "  --help                            print this text and exit\n";
  out += "  --version                         print the version and exit\n";
  return out;
}

}  // namespace redis_sidecar
