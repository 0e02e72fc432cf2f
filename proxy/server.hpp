// server: the listener and the process-wide pieces every session shares (configuration, upstream
// pool, TLS context, stats). Accepts on TCP or a Unix socket, enforces --max-clients, and shuts
// down gracefully: stop accepting, let in-flight requests finish (bounded), then close. Everything
// runs on one io_context thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "metrics/exporter.hpp"
#include "metrics/sidecar_metrics.hpp"
#include "proxy/asio.hpp"
#include "proxy/client_session.hpp"
#include "proxy/config/config.hpp"
#include "proxy/stats.hpp"
#include "proxy/tier/cache_tier.hpp"
#include "proxy/tier/near_cache.hpp"
#include "proxy/tier/upstream_monitor.hpp"
#include "proxy/upstream/pool.hpp"

namespace redis_sidecar {

/// The TLS client context for rediss:// upstreams: verification on (system store or --tls-ca-file),
/// TLS 1.2 or newer, optional client certificate. Returns nullopt and sets `error` when a file
/// cannot be loaded. Start-up only.
std::optional<ssl::context> make_tls_context(const config& cfg, std::string& error);

class server {
 public:
  /// How often reset_sweep() looks at the clients: a reset no read saw is closed within two.
  static constexpr std::chrono::seconds reset_sweep_period{1};

  /// `m` and `exp` (null when --metrics-listen=off) outlive the server.
  server(asio::io_context& io, const config& cfg, ssl::context* tls, metrics::sidecar_metrics& m,
         metrics::exporter* exp);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds the listener. Returns false with a message (address in use, bad path, ...).
  bool listen(std::string& error);
  /// The bound TCP port (after listen), for logs and tests.
  std::uint16_t port() const { return port_; }
  void start();
  /// Graceful stop: no new clients, in-flight requests finish, and writes accepted in fallback
  /// are replayed if the upstream comes back (all within `grace`), then close all. Returns the
  /// journaled writes that were not replayed: they are lost, and logged as an error.
  awaitable<std::size_t> shutdown(std::chrono::milliseconds grace);

  stats& counters() { return stats_; }
  const cache_tier& tier() const { return tier_; }
  const upstream_monitor& monitor() const { return *monitor_; }
  /// Called on the io_context thread after each health change and probe (metrics, /readyz).
  void on_health_change(std::function<void()> f) { monitor_->on_change(std::move(f)); }

 private:
  awaitable<void> accept_loop();
  /// Every reset_sweep_period, closes the clients whose sockets hold a reset their reads could
  /// not see (client_session::reset_unseen()), until shutdown.
  awaitable<void> reset_sweep();
  void admit(client_socket socket);
  /// Copies the data plane's counters into the metrics and the health into /readyz. Runs on the
  /// io_context thread after each probe tick and health change.
  void publish();
  /// Sets redis_sidecar_cache_mode from the tier's mode (part of publish(), and at construction).
  void publish_cache_mode();

  /// Last values copied into monotonic counters, to add only the difference.
  struct published {
    std::uint64_t requests = 0, hits = 0, misses = 0, evictions = 0, invalidations = 0;
    std::uint64_t reconnects = 0, transitions = 0, replayed = 0, rejected = 0;
    std::uint64_t received = 0, stale = 0, upstream_writes = 0, busy_poll_ns = 0;
    std::uint64_t busy_poll_backoffs = 0, upstream_held_writes = 0, naps = 0;
    std::uint64_t tls_handshakes = 0, tls_resumed = 0;
    std::array<std::uint64_t, static_cast<std::size_t>(error_kind::count_)> errors{};
  };

  asio::io_context& io_;
  const config& cfg_;
  stats stats_;
  pool pool_;
  cache_tier tier_;
  std::shared_ptr<upstream_monitor> monitor_;
  std::shared_ptr<near_cache> near_;
  session_context ctx_;
  metrics::sidecar_metrics& metrics_;
  metrics::exporter* exporter_;
  published published_;
  std::optional<tcp::acceptor> tcp_acceptor_;
  std::optional<asio::local::stream_protocol::acceptor> unix_acceptor_;
  std::uint16_t port_ = 0;
  steady_timer sweep_timer_;
  // Out of file descriptors: accept_loop() sheds the waiting connection with the spare descriptor
  // and pauses on this timer, instead of retrying an accept that fails at once (a busy loop).
  steady_timer accept_pause_;
  int spare_fd_ = -1;
  // Refused clients, counted, and logged every 10 s at most.
  struct throttled_count {
    std::uint64_t count = 0;
    std::chrono::steady_clock::time_point logged{};
    bool count_and_due();  // counts one; true when a log line is due
  };
  throttled_count shed_;     // refused for want of a descriptor
  throttled_count refused_;  // refused at --max-clients
  awaitable<void> out_of_descriptors(int listener);
  std::size_t sessions_peak_ = 0;  // most clients at once since the last trim
  // The last upstream error's time on the steady clock, and as Unix ms for /readyz (converted once per error).
  std::int64_t error_at_converted_ = -1;
  std::int64_t error_unix_ms_ = 0;
  void trim_after_burst();
};

}  // namespace redis_sidecar
