#include "metrics/sidecar_metrics.hpp"

#include <algorithm>
#include <utility>

namespace redis_sidecar::metrics {

namespace {

constexpr bool names_follow_conventions(std::span<const family_info> families) {
  for (const auto& f : families) {
    if (!f.name.starts_with(prefix) || f.help.empty()) return false;
    if ((f.type == family_type::counter) != f.name.ends_with("_total")) return false;
  }
  return true;
}
static_assert(names_follow_conventions(counter_families));
static_assert(names_follow_conventions(gauge_families));
static_assert(names_follow_conventions(labelled_families));

// The enums index the tables: each enumerator must land on its own row.
constexpr bool row(counter_id id, std::string_view name) {
  return counter_families[static_cast<std::size_t>(id)].name == name;
}
constexpr bool row(gauge_id id, std::string_view name) {
  return gauge_families[static_cast<std::size_t>(id)].name == name;
}
constexpr bool row(labelled_id id, std::string_view name) {
  return labelled_families[static_cast<std::size_t>(id)].name == name;
}
static_assert(
    row(counter_id::requests, "redis_sidecar_requests_total") &&
    row(counter_id::cache_hits, "redis_sidecar_cache_hits_total") &&
    row(counter_id::cache_misses, "redis_sidecar_cache_misses_total") &&
    row(counter_id::cache_evictions, "redis_sidecar_cache_evictions_total") &&
    row(counter_id::cache_invalidations, "redis_sidecar_cache_invalidations_total") &&
    row(counter_id::upstream_reconnects, "redis_sidecar_upstream_reconnects_total") &&
    row(counter_id::fallback_transitions, "redis_sidecar_fallback_transitions_total") &&
    row(counter_id::fallback_writes_replayed, "redis_sidecar_fallback_writes_replayed_total") &&
    row(counter_id::fallback_writes_rejected, "redis_sidecar_fallback_writes_rejected_total") &&
    row(counter_id::cache_invalidations_received,
        "redis_sidecar_cache_invalidations_received_total") &&
    row(counter_id::cache_stale_serves, "redis_sidecar_cache_stale_serves_total") &&
    row(counter_id::upstream_writes, "redis_sidecar_upstream_writes_total") &&
    row(counter_id::upstream_held_writes, "redis_sidecar_upstream_held_writes_total") &&
    row(counter_id::busy_poll, "redis_sidecar_busy_poll_seconds_total") &&
    row(counter_id::busy_poll_backoffs, "redis_sidecar_busy_poll_backoffs_total") &&
    row(counter_id::naps, "redis_sidecar_naps_total") &&
    row(counter_id::upstream_tls_handshakes, "redis_sidecar_upstream_tls_handshakes_total") &&
    row(counter_id::upstream_tls_resumed, "redis_sidecar_upstream_tls_resumed_total"));
static_assert(row(gauge_id::cache_entries, "redis_sidecar_cache_entries") &&
              row(gauge_id::cache_bytes, "redis_sidecar_cache_bytes") &&
              row(gauge_id::cache_max_bytes, "redis_sidecar_cache_max_bytes") &&
              row(gauge_id::client_connections, "redis_sidecar_client_connections") &&
              row(gauge_id::inflight_requests, "redis_sidecar_inflight_requests") &&
              row(gauge_id::upstream_up, "redis_sidecar_upstream_up") &&
              row(gauge_id::upstream_connections, "redis_sidecar_upstream_connections") &&
              row(gauge_id::upstream_probe_duration,
                  "redis_sidecar_upstream_probe_duration_seconds") &&
              row(gauge_id::fallback_active, "redis_sidecar_fallback_active") &&
              row(gauge_id::fallback_journal_bytes, "redis_sidecar_fallback_journal_bytes") &&
              row(gauge_id::fallback_journal_max_bytes,
                  "redis_sidecar_fallback_journal_max_bytes") &&
              row(gauge_id::start_time, "redis_sidecar_start_time_seconds"));
static_assert(row(labelled_id::errors, "redis_sidecar_errors_total") &&
              row(labelled_id::request_duration, "redis_sidecar_request_duration_seconds") &&
              row(labelled_id::cache_hit_ratio, "redis_sidecar_cache_hit_ratio") &&
              row(labelled_id::cache_mode, "redis_sidecar_cache_mode") &&
              row(labelled_id::build_info, "redis_sidecar_build_info"));

}  // namespace

sidecar_metrics::sidecar_metrics(label_sets labels)
    : commands_(std::move(labels.commands)),
      error_kinds_(std::move(labels.error_kinds)),
      cache_modes_(std::move(labels.cache_modes)),
      version_(std::move(labels.version)) {
  cache_mode_.set(static_cast<std::int64_t>(cache_modes_.size()));  // none yet
  const auto other = std::find(commands_.begin(), commands_.end(), "other");
  if (other == commands_.end()) {
    other_ = commands_.size();
    commands_.emplace_back("other");
  } else {
    other_ = static_cast<std::size_t>(other - commands_.begin());
  }
  latency_ = std::make_unique<latency_histogram[]>(commands_.size() * source_names.size());
  errors_ = std::make_unique<counter[]>(error_kinds_.size());
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  (*this)[gauge_id::start_time].set(std::chrono::duration_cast<std::chrono::seconds>(now).count());
}

sidecar_metrics::~sidecar_metrics() = default;

std::size_t sidecar_metrics::command_index(std::string_view name) const noexcept {
  const auto it = std::find(commands_.begin(), commands_.end(), name);
  return it == commands_.end() ? other_ : static_cast<std::size_t>(it - commands_.begin());
}

}  // namespace redis_sidecar::metrics
