// stats: the proxy's counters and gauges, plain integers owned by the server and updated on its
// thread. The metrics component reads them; the data plane only increments.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace redis_sidecar {

/// Kinds of errors and limit hits (bounded: these are the `kind` label values).
enum class error_kind : std::uint8_t {
  protocol,              // malformed client input (connection closed)
  max_clients,           // --max-clients reached (connection refused with an error)
  query_buffer,          // --max-query-buffer-bytes reached (connection closed)
  output_buffer,         // --max-output-bytes / --max-pubsub-output-bytes reached (closed)
  pipeline_full,         // --max-pipeline reached (reading paused until replies drain)
  auth,                  // wrong password against --requirepass
  upstream_timeout,      // a reply did not arrive within --command-timeout-ms
  upstream_unavailable,  // a request failed because the upstream could not be reached
  upstream_protocol,     // the upstream sent something unparseable (connection reset)
  count_
};

inline constexpr std::array<std::string_view, static_cast<std::size_t>(error_kind::count_)>
    error_kind_names{"protocol",         "max_clients",          "query_buffer",
                     "output_buffer",    "pipeline_full",        "auth",
                     "upstream_timeout", "upstream_unavailable", "upstream_protocol"};

struct stats {
  std::int64_t client_connections = 0;    // gauge: open client connections
  std::int64_t upstream_connections = 0;  // gauge: upstream connections in the ready state
  std::int64_t inflight_requests = 0;     // gauge: requests waiting for an upstream reply
  std::uint64_t upstream_reconnects = 0;  // counter: connect attempts after the first
  // Connect attempts the upstream refused for the sidecar's configuration (config_refusal): read
  // by the health monitor, whose probe connection may still hold an older, accepted login.
  std::uint64_t upstream_refusals = 0;
  std::uint64_t requests = 0;             // counter: requests framed from clients
  std::uint64_t upstream_writes = 0;      // counter: writes to upstream connections (batches)
  std::uint64_t upstream_held_writes = 0;  // counter: ... that waited for replies (write_hold)
  std::uint64_t busy_poll_ns = 0;         // counter: time the event loop spent polling
  std::uint64_t busy_poll_backoffs = 0;   // counter: polling stopped for waits for a CPU
  std::uint64_t naps = 0;                 // counter: naps of the event loop (--nap-us)
  // Not exported: the event loop's measure of concurrency. A client session that handles a
  // request counts itself in active_clients once per value of active_window, which the loop
  // moves on (and active_clients back to zero) every nap_policy::window.
  std::uint64_t active_window = 0;
  std::uint32_t active_clients = 0;
  std::uint64_t tls_handshakes = 0;       // counter: upstream TLS handshakes completed
  std::uint64_t tls_resumed = 0;          // counter: ... of them resuming an earlier session
  std::array<std::uint64_t, static_cast<std::size_t>(error_kind::count_)> errors{};

  void count(error_kind k) { ++errors[static_cast<std::size_t>(k)]; }
};

}  // namespace redis_sidecar
