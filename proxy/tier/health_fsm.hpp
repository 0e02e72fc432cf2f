// health_fsm: the upstream's health as the sidecar sees it, as an explicit state machine without
// I/O. The upstream monitor (tier/upstream_monitor.hpp) feeds it probe results, connection
// failures and command timeouts, with the time; it answers whether requests go upstream or are
// served from L1, and reports each transition once, with its cause.
//
//   connecting ------------------------+ failure
//        | probe ok                    v
//        v      failure                                 failing for fallback_after_ms
//   healthy ------------> failing ----------------------------------------> fallback
//      ^   <-------------   |  probe ok                                       |    ^
//      |                                              recover_after_probes    |    | failure
//      |    journal replayed                          good probes in a row    v    |
//      +--------------------------------------------------------------- recovering
//
// `connecting` is the start, until the upstream first answers: it is not up yet (a sidecar that
// never reached its upstream cannot tell an outage from a wrong address, password or CA). In
// `connecting` and `failing` requests still go upstream (a blip is not an outage); in `fallback`
// and `recovering` they are served from L1, and writes go to the journal, which the monitor
// replays in `recovering` before new traffic reaches the upstream again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace redis_sidecar {

enum class upstream_state : std::uint8_t { connecting, healthy, failing, fallback, recovering };

std::string_view to_string(upstream_state s);

class health_fsm {
 public:
  struct options {
    std::int64_t fallback_after_ms = 1000;   // failing this long -> fallback (0: at once)
    std::uint32_t recover_after_probes = 2;  // good probes in a row that end fallback
  };

  explicit health_fsm(options o) : options_(o) {}

  /// Each returns true when the state changed; transition() then describes it.
  bool on_probe_ok(std::int64_t now, double latency_ms);
  bool on_failure(std::int64_t now, std::string cause);
  bool on_tick(std::int64_t now);
  bool on_replay_done(std::int64_t now);
  /// The upstream answers but refused the replay's writes (a replica, maxmemory): good probes in
  /// fallback count toward recovery only from `until` on, so a refusal that lasts is retried at
  /// the caller's pace, not at every second probe.
  void hold_recovery(std::int64_t until) { recovery_held_until_ = until; }

  upstream_state state() const { return state_; }
  /// True while requests are answered from L1 (fallback, recovering).
  bool serving_from_l1() const {
    return state_ == upstream_state::fallback || state_ == upstream_state::recovering;
  }
  bool upstream_up() const { return state_ == upstream_state::healthy; }
  /// True once the upstream has answered a probe since the start.
  bool reached() const { return probes_ > 0; }
  /// The last failure's cause (already free of credentials), empty when none yet.
  const std::string& last_error() const { return last_error_; }
  /// When it came (the `now` it was reported with); meaningless while last_error() is empty.
  std::int64_t last_error_at() const { return last_error_at_; }
  double last_probe_ms() const { return last_probe_ms_; }
  std::uint64_t probes() const { return probes_; }  // good probes so far
  std::uint64_t transitions() const { return transitions_; }
  std::uint64_t fallback_entries() const { return fallback_entries_; }
  /// Times serving_from_l1() changed (entered or left fallback mode).
  std::uint64_t fallback_switches() const { return fallback_switches_; }
  /// "healthy -> failing: connection refused", for the log.
  const std::string& transition() const { return transition_; }

 private:
  bool move_to(upstream_state next, std::string_view cause);

  options options_;
  upstream_state state_ = upstream_state::connecting;
  std::int64_t failing_since_ = 0;
  std::uint32_t good_probes_ = 0;
  std::int64_t recovery_held_until_ = 0;
  std::string last_error_;
  std::int64_t last_error_at_ = 0;
  double last_probe_ms_ = 0;
  std::uint64_t probes_ = 0;
  std::uint64_t transitions_ = 0;
  std::uint64_t fallback_entries_ = 0;
  std::uint64_t fallback_switches_ = 0;
  std::string transition_;
};

}  // namespace redis_sidecar
