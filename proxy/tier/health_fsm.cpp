#include "proxy/tier/health_fsm.hpp"

namespace redis_sidecar {

std::string_view to_string(upstream_state s) {
  switch (s) {
    case upstream_state::connecting: return "connecting";
    case upstream_state::healthy: return "healthy";
    case upstream_state::failing: return "failing";
    case upstream_state::fallback: return "fallback";
    case upstream_state::recovering: return "recovering";
  }
  return "unknown";
}

bool health_fsm::move_to(upstream_state next, std::string_view cause) {
  if (next == state_) return false;
  transition_ = std::string(to_string(state_)) + " -> " + std::string(to_string(next));
  if (!cause.empty()) transition_ += ": " + std::string(cause);
  const bool was_l1 = serving_from_l1();
  state_ = next;
  if (serving_from_l1() != was_l1) ++fallback_switches_;
  ++transitions_;
  if (next == upstream_state::fallback) ++fallback_entries_;
  good_probes_ = 0;
  return true;
}

bool health_fsm::on_probe_ok(std::int64_t now, double latency_ms) {
  last_probe_ms_ = latency_ms;
  ++probes_;
  switch (state_) {
    case upstream_state::connecting:
      return move_to(upstream_state::healthy, "the upstream answers");
    case upstream_state::healthy: return false;
    case upstream_state::failing:
      return move_to(upstream_state::healthy, "the upstream answers again");
    case upstream_state::fallback:
      if (now < recovery_held_until_) return false;
      if (++good_probes_ < options_.recover_after_probes) return false;
      return move_to(upstream_state::recovering,
                     "the upstream answers again; replaying the fallback journal");
    case upstream_state::recovering: return false;
  }
  return false;
}

bool health_fsm::on_failure(std::int64_t now, std::string cause) {
  last_error_ = std::move(cause);
  last_error_at_ = now;
  switch (state_) {
    case upstream_state::connecting:
    case upstream_state::healthy:
      failing_since_ = now;
      if (options_.fallback_after_ms <= 0) return move_to(upstream_state::fallback, last_error_);
      return move_to(upstream_state::failing, last_error_);
    case upstream_state::failing: return on_tick(now);
    case upstream_state::fallback: good_probes_ = 0; return false;
    case upstream_state::recovering: return move_to(upstream_state::fallback, last_error_);
  }
  return false;
}

bool health_fsm::on_tick(std::int64_t now) {
  if (state_ != upstream_state::failing) return false;
  if (now - failing_since_ < options_.fallback_after_ms) return false;
  return move_to(upstream_state::fallback, last_error_);
}

bool health_fsm::on_replay_done(std::int64_t now) {
  (void)now;
  if (state_ != upstream_state::recovering) return false;
  return move_to(upstream_state::healthy, "fallback journal replayed");
}

}  // namespace redis_sidecar
