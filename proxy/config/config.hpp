// config: every setting of the sidecar, from flags and REDIS_SIDECAR_* environment variables (a flag
// wins over the environment). Parsing never exits: it returns one clear message naming the problem,
// and main() prints it and exits 2. Each field says its default.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proxy/config/url.hpp"
#include "proxy/resp/limits.hpp"

namespace redis_sidecar {

struct listen_address {
  std::string host = "127.0.0.1";  // or an IPv6 literal without brackets
  std::uint16_t port = 6379;
  std::string unix_path;           // non-empty: listen on this Unix socket instead
};

struct config {
  listen_address listen;                 // --listen, default 127.0.0.1:6379 (unix:/path for a socket)
  upstream_url upstream;                 // --upstream, else REDIS_SIDECAR_UPSTREAM, else REDIS_URL
  bool upstream_set = false;             // false: no upstream configured (start-up fails)
  std::string upstream_source;           // which flag or variable gave the upstream, for messages

  std::string tls_ca_file;               // --tls-ca-file, default: the system trust store
  std::string tls_cert_file;             // --tls-cert-file (mTLS), default none
  std::string tls_key_file;              // --tls-key-file (mTLS), default none
  std::string tls_server_name;           // --tls-server-name, default: the URL's host
  bool tls_insecure_skip_verify = false; // --tls-insecure-skip-verify, default off

  std::string requirepass;               // --requirepass: clients must AUTH with it; default none

  std::size_t pool_size = 2;             // --pool-size: shared upstream connections per protocol (2, 3), default 2
  std::uint32_t connect_timeout_ms = 2000;  // --connect-timeout-ms: TCP + TLS + handshake, default 2000
  std::uint32_t command_timeout_ms = 5000;  // --command-timeout-ms: reply deadline, default 5000
  std::uint32_t reconnect_min_ms = 50;      // --reconnect-min-ms: first backoff, default 50
  std::uint32_t reconnect_max_ms = 5000;    // --reconnect-max-ms: backoff cap, default 5000
  std::uint32_t tcp_keepalive_s = 60;       // --tcp-keepalive: idle seconds before TCP keepalive
                                            // probes on upstream and client connections, 0 off,
                                            // default 60 (proxy/tcp_keepalive.hpp)
  std::uint32_t dedicated_idle_ms = 60'000;  // --dedicated-idle-timeout: an idle clean dedicated
                                             // connection is closed after this, 0 keeps it (at
                                             // most 16 per protocol), default 60s

  std::size_t max_clients = 10000;          // --max-clients, default 10000 (Redis' maxclients)
  std::size_t max_pipeline = 2000;          // --max-pipeline: in-flight requests per client before
                                            // the sidecar stops reading from it, default 2000
  std::size_t max_query_buffer_bytes = 1024ull * 1024 * 1024;  // --max-query-buffer-bytes, default 1 GiB
  std::size_t max_output_bytes = 1024ull * 1024 * 1024;  // --max-output-bytes: unread replies per
                                                        // client before it is closed, default 1 GiB
  std::size_t max_pubsub_output_bytes = 32ull * 1024 * 1024;  // --max-pubsub-output-bytes, default 32 MiB
  resp::limits limits;                      // --max-bulk-bytes, --max-multibulk-len, --max-inline-bytes

  // L1 cache and fallback (see cache/lru_cache.hpp and proxy/health.hpp).
  std::string cache_mode = "auto";          // --cache-mode: auto|tracking|keyspace|ttl|
                                            // fallback|off, default auto (see README)
  std::string cache_prefix;                 // --cache-prefix: comma-separated key prefixes that
                                            // ttl mode serves (and tracking limits itself to),
                                            // default none (tracking: all keys; ttl: required)
  std::size_t cache_max_bytes = 64ull * 1024 * 1024;    // --cache-max-bytes, default 64 MiB
  std::size_t cache_max_entry_bytes = 1024ull * 1024;   // --cache-max-entry-bytes, default 1 MiB
  std::uint32_t cache_ttl_ms = 300'000;     // --cache-ttl: oldest value L1 may serve, default 300s
  std::string fallback_miss = "nil";        // --fallback-miss: nil|error, GET of a key L1 lacks
                                            // during fallback, default nil (cache-aside apps)
  std::string fallback_writes = "journal";  // --fallback-writes: journal|reject, default journal
  std::size_t fallback_journal_max_bytes = 16ull * 1024 * 1024;  // --fallback-journal-max-bytes,
                                                                 // default 16 MiB
  std::uint32_t health_probe_interval_ms = 250;  // --health-probe-interval-ms, default 250
  std::uint32_t health_probe_timeout_ms = 500;   // --health-probe-timeout-ms, default 500
  std::uint32_t fallback_after_ms = 1000;   // --fallback-after-ms: failing this long -> fallback,
                                            // default 1000
  std::uint32_t recover_after_probes = 2;   // --recover-after-probes: good probes to leave
                                            // fallback, default 2

  std::uint32_t busy_poll_us = 0;           // --busy-poll-us: poll this long before sleeping
                                            // (event_loop::run), default 0: off
  std::uint32_t nap_us = 10;                // --nap-us: nap this long after turns that served
                                            // unpipelined clients from L1 (nap_policy),
                                            // default 10
  std::uint32_t write_hold_rtt_us = 100;    // --write-hold-rtt-us: shared connections hold small
                                            // writes for replies while the upstream's round
                                            // trip is under this (write_hold.hpp), default 100

  listen_address metrics_listen{"0.0.0.0", 9379, {}};  // --metrics-listen, default 0.0.0.0:9379
  bool metrics_enabled = true;              // false when --metrics-listen=off

  std::string log_level = "info";           // --log-level: debug|info|warn|error, default info
  std::string log_format = "text";          // --log-format: text|json, default text
  bool check_config = false;                // --check-config: validate and exit
};

enum class parse_outcome { run, exit_ok, exit_error };

/// Parses argv and the environment (`getenv`). `out_message` receives --help / --version text
/// (exit_ok) or the one-line error (exit_error).
parse_outcome parse_config(int argc, const char* const* argv, config& out, std::string& out_message);

/// The --help text.
std::string usage();

/// Overwrites with '*', in place, the secrets given as flags (the value of --requirepass, the
/// password in --upstream's URL), so that `ps` and /proc/PID/cmdline stop showing them once
/// parse_config() has taken them. Environment variables are not shown there.
void hide_secret_flags(int argc, char** argv);

/// A warning for each REDIS_SIDECAR_* variable in `env` (NAME=value entries, null-terminated, as
/// `environ`) that names no setting, with the closest one that does: a misspelled variable would
/// otherwise be ignored without a word, its default used instead.
std::vector<std::string> unknown_variables(const char* const* env);

}  // namespace redis_sidecar
