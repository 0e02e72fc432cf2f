// exporter: the sidecar's HTTP endpoint for operators, one port (--metrics-listen, default
// 0.0.0.0:9379) served by prometheus-cpp's Exposer (its HTTP server) on its own threads:
//   /metrics  every family of sidecar_metrics, in the Prometheus text format, and nothing else
//             (not the Exposer's own exposer_* families)
//   /healthz  200 "ok" while the process serves (liveness)
//   /readyz   200 when the last published health_snapshot says ready, else 503 (readiness);
//             the body is the snapshot as JSON (health_snapshot.hpp)
//
// Threads: start(), stop(), port() and the destructor belong to the thread that owns the exporter
// (main). publish() may be called from any thread, typically the proxy's io_context thread on each
// change or probe: it copies the snapshot under a mutex, and the HTTP threads render it from that
// copy. /metrics reads the instruments lock-free (see instruments.hpp).
//
// Errors: start() reports every failure (address in use, an address the server cannot bind, an
// IPv6 address on a server built without IPv6) as `false` and one message; nothing throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "metrics/health_snapshot.hpp"
#include "metrics/sidecar_metrics.hpp"

namespace redis_sidecar::metrics {

namespace detail {
struct exporter_state;
}

/// Whether start() could take `host:port` as an address to listen on (an IP address this build's
/// HTTP server supports), without binding it: what --check-config checks. On false `error` says
/// why, as start() would.
bool valid_listen_address(const std::string& host, std::uint16_t port, std::string& error);

class exporter {
 public:
  /// `m` must outlive the exporter. Serves nothing until start().
  explicit exporter(const sidecar_metrics& m);
  /// Stops serving: waits for in-progress requests and joins the HTTP threads.
  ~exporter();
  exporter(const exporter&) = delete;
  exporter& operator=(const exporter&) = delete;

  /// Binds `host:port` (an IP address; port 0 picks a free port, see port()) and starts `threads`
  /// HTTP threads. On failure returns false and sets `error` to one line naming the address and
  /// the cause, e.g. "cannot serve metrics on 127.0.0.1:9379: cannot bind to 127.0.0.1:9379: 98
  /// (Address already in use)".
  ///
  /// Each thread serves one connection at a time, and a connection that sends no request holds
  /// its thread until `request_timeout_ms`: so a few idle connections (a port scan, a stuck client)
  /// must not leave the kubelet's probes (1 s timeout by default) waiting. 8 threads cost about
  /// 100 KB; a request that has not come within 2 s is not a scrape's or a probe's.
  bool start(const std::string& host, std::uint16_t port, std::string& error,
             std::size_t threads = 8, std::uint32_t request_timeout_ms = 2000) noexcept;

  /// The bound port (the real one when started with port 0); 0 when not serving.
  std::uint16_t port() const noexcept;

  /// Replaces the snapshot /readyz reports. Any thread. Before the first call /readyz answers 503
  /// with a default snapshot (state "starting").
  void publish(health_snapshot s);

  /// Stops serving (idempotent). start() may be called again afterwards.
  void stop() noexcept;

 private:
  std::unique_ptr<detail::exporter_state> state_;
};

}  // namespace redis_sidecar::metrics
