// upstream_monitor: drives the health state machine (tier/health_fsm.hpp) with real I/O, and
// replays the fallback journal when the upstream comes back.
//
// Every --health-probe-interval-ms it sends PING on a probe connection of its own (opened again
// after each failure, so a probe also tests connect, TLS and AUTH) with a deadline of
// --health-probe-timeout-ms, and reads the pool's command-timeout counter: a reply is a good
// probe, anything else a failure with its cause. Transitions are logged once each. Entering
// fallback resets the shared connections, so requests stuck on a stalled upstream fail at once
// instead of waiting for their own deadlines. In `recovering` it replays the journal, in order,
// on a connection of its own (SELECTing each write's db), and only then declares the upstream
// healthy (L1 then forgets the values it kept through the replay: cache_tier::replay_done()); a
// write whose reply is lost to a new failure stays in the journal and is sent again.
//
// Lives on the server's io_context thread; owned by the server, outlives every session.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_set>

#include "proxy/asio.hpp"
#include "proxy/config/config.hpp"
#include "proxy/resp/request_parser.hpp"
#include "proxy/stats.hpp"
#include "proxy/tier/cache_tier.hpp"
#include "proxy/tier/health_fsm.hpp"
#include "proxy/upstream/pool.hpp"
#include "proxy/upstream/reply_sink.hpp"

namespace redis_sidecar {

class upstream_monitor : public reply_sink, public std::enable_shared_from_this<upstream_monitor> {
 public:
  upstream_monitor(asio::any_io_executor ex, const config& cfg, ssl::context* tls, stats& st,
                   pool& upstreams, cache_tier& tier);

  void start();
  void stop();
  /// Shutting down with writes in the journal: probe now and every --health-probe-interval-ms from
  /// then on, without the backoff of failed probes, so that an upstream back within the grace
  /// period is found (and the journal replayed) in time.
  void hurry();

  const health_fsm& health() const { return fsm_; }
  /// The clock health()'s times are on (steady, milliseconds).
  static std::int64_t now_ms();
  /// Called after every state change and probe (for metrics and /readyz).
  void on_change(std::function<void()> f) { on_change_ = std::move(f); }
  /// Called when fallback begins, with its cause, after the shared connections were reset: for
  /// the other connections whose requests must not wait out a stalled upstream.
  void on_fallback(std::function<void(const std::string&)> f) { on_fallback_ = std::move(f); }

  void deliver(std::uint64_t seq, std::string_view frame, std::uint8_t tag,
               std::chrono::steady_clock::time_point received) override;

 private:
  std::shared_ptr<reply_sink> owner() override { return shared_from_this(); }

  enum tag : std::uint8_t { tag_probe = 1, tag_replay = 2, tag_select = 3 };

  awaitable<void> run(std::shared_ptr<upstream_monitor> self);
  void probe();
  /// `refusal`: the failure refuses the sidecar's configuration (refusal_of()), and says how;
  /// fallback then refuses writes (a journaled write could not be replayed).
  void failure(std::string cause, std::string refusal = {});
  void transitioned();
  void replay_some();
  void replay_failed(std::string cause);
  void replay_refused();
  void reset_replay_attempt();
  void keep(int db, std::span<const std::string_view> args);
  bool touches_kept(int db, std::span<const std::string_view> args) const;
  std::shared_ptr<connection> open_connection();
  std::chrono::milliseconds next_delay();

  asio::any_io_executor ex_;
  const config& cfg_;
  ssl::context* tls_;
  stats& stats_;     // the data plane's: its command timeouts count as failures
  stats own_stats_;  // the probe's and replay's connections: kept out of the client gauges
  pool& pool_;
  cache_tier& tier_;
  health_fsm fsm_;
  unsigned replay_refusals_ = 0;  // replays refused in a row (refuses_for_now())
  // This attempt: journal records refused for now, kept at the front, and the first refusal.
  std::size_t replay_kept_ = 0;
  std::string replay_refusal_;
  std::unordered_set<std::string> kept_keys_;  // "db:key" of the kept records
  bool kept_everything_ = false;               // a kept record reaches beyond its keys
  bool select_pending_ = false;                // a SELECT sent, its answer not back yet
  bool cautious_ = false;                      // one record at a time (see transitioned())
  bool refused_not_stalled_ = false;      // the fallback being entered is replay_refused()'s
  steady_timer timer_;
  bool stopped_ = false;
  bool hurry_ = false;
  std::function<void()> on_change_;
  std::function<void(const std::string&)> on_fallback_;

  std::shared_ptr<connection> probe_conn_;
  bool probe_outstanding_ = false;
  std::chrono::steady_clock::time_point probe_sent_;
  std::uint64_t timeouts_seen_ = 0;
  std::uint64_t refusals_seen_ = 0;  // stats::upstream_refusals, as last read
  bool relogin_ = false;             // the next probe goes on a connection of its own, new
  std::uint64_t readonly_epoch_seen_ = 0;  // connection::readonly_epoch(), as last read
  unsigned failed_probes_ = 0;      // in a row, for the probe's backoff
  std::int64_t next_probe_at_ = 0;  // monotonic ms

  std::shared_ptr<connection> replay_conn_;
  std::size_t replay_outstanding_ = 0;  // journal records sent, not yet acknowledged
  int replay_db_ = 0;                   // the replay connection's db after the SELECTs sent
  resp::request_parser replay_parser_;
};

}  // namespace redis_sidecar
