// sidecar_metrics: every metric family the sidecar exports, declared once as data (name, type,
// help), and the object that holds their instruments. The proxy creates one at start-up, resolves
// the handles it needs (`m[counter_id::cache_hits]`, a command's index in the command table) and
// from then on only increments, sets and observes on its io_context thread; the exporter
// (exporter.hpp) reads the same object from its HTTP threads at scrape time. See instruments.hpp
// for the single-writer contract.
//
// Labels are bounded by construction: `command` takes the names given at construction plus
// "other", `source` the four values of `source`, `kind` and `mode` the lists given at construction.
// Nothing here can take a key, a client address or free text as a label value.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/instruments.hpp"

namespace redis_sidecar::metrics {

inline constexpr std::string_view prefix = "redis_sidecar_";

enum class family_type : std::uint8_t { counter, gauge, histogram };

/// One metric family. `labels` names its label keys ("" for none), comma-separated.
struct family_info {
  std::string_view name;
  family_type type;
  std::string_view help;
  std::string_view labels = {};
};

/// Unlabelled counters. The order is the order of `counter_families`.
enum class counter_id : std::uint8_t {
  requests,
  cache_hits,
  cache_misses,
  cache_evictions,
  cache_invalidations,
  upstream_reconnects,
  fallback_transitions,
  fallback_writes_replayed,
  fallback_writes_rejected,
  cache_invalidations_received,
  cache_stale_serves,
  upstream_writes,
  upstream_held_writes,
  busy_poll,  // stored in nanoseconds, exported in seconds (see counter_scale)
  busy_poll_backoffs,
  naps,
  upstream_tls_handshakes,
  upstream_tls_resumed,
  count_
};

inline constexpr std::array<family_info, static_cast<std::size_t>(counter_id::count_)>
    counter_families{{
        {"redis_sidecar_requests_total", family_type::counter, "Requests framed from clients."},
        {"redis_sidecar_cache_hits_total", family_type::counter,
         "Cacheable reads answered from the L1 cache."},
        {"redis_sidecar_cache_misses_total", family_type::counter,
         "Cacheable reads the L1 cache could not answer."},
        {"redis_sidecar_cache_evictions_total", family_type::counter,
         "Entries evicted from the L1 cache to stay within its byte budget."},
        {"redis_sidecar_cache_invalidations_total", family_type::counter,
         "L1 cache entries dropped because a write or an invalidation message touched their key."},
        {"redis_sidecar_upstream_reconnects_total", family_type::counter,
         "Upstream connection attempts after the first."},
        {"redis_sidecar_fallback_transitions_total", family_type::counter,
         "Times the sidecar entered or left fallback mode."},
        {"redis_sidecar_fallback_writes_replayed_total", family_type::counter,
         "Journaled writes replayed to the upstream after an outage."},
        {"redis_sidecar_fallback_writes_rejected_total", family_type::counter,
         "Writes refused during fallback (reject mode, the journal full, the upstream refusing "
         "the sidecar), and journaled writes dropped after 5 minutes of refused replays."},
        {"redis_sidecar_cache_invalidations_received_total", family_type::counter,
         "Invalidation messages received from the upstream (tracking or keyspace notifications)."},
        {"redis_sidecar_cache_stale_serves_total", family_type::counter,
         "Fallback reads answered with an entry whose invalidation channel was lost."},
        {"redis_sidecar_upstream_writes_total", family_type::counter,
         "Writes to upstream connections; each carries every request queued for its connection "
         "when the event loop's turn ended."},
        {"redis_sidecar_upstream_held_writes_total", family_type::counter,
         "Upstream writes that waited for the replies to the requests written before them, so "
         "that the requests arriving meanwhile joined them (--write-hold-rtt-us)."},
        {"redis_sidecar_busy_poll_seconds_total", family_type::counter,
         "Time the event loop spent polling for events instead of sleeping (--busy-poll-us)."},
        {"redis_sidecar_busy_poll_backoffs_total", family_type::counter,
         "Times busy polling stopped for a while because the event loop's thread waited for a "
         "CPU (busy cores, or a CPU limit throttling the sidecar)."},
        {"redis_sidecar_naps_total", family_type::counter,
         "Times the event loop napped (slept --nap-us on its own timer) instead of waiting for "
         "the next request to wake it, after serving unpipelined clients from L1."},
        {"redis_sidecar_upstream_tls_handshakes_total", family_type::counter,
         "TLS handshakes completed by upstream connections that carry clients' requests."},
        {"redis_sidecar_upstream_tls_resumed_total", family_type::counter,
         "Upstream TLS handshakes that resumed an earlier session (no certificate exchange)."},
    }};

/// Multiplier from a counter's stored integer to its exported value.
constexpr double counter_scale(counter_id id) { return id == counter_id::busy_poll ? 1e-9 : 1.0; }

/// Unlabelled gauges. The order is the order of `gauge_families`.
enum class gauge_id : std::uint8_t {
  cache_entries,
  cache_bytes,
  cache_max_bytes,  // set once at start-up: --cache-max-bytes
  client_connections,
  inflight_requests,
  upstream_up,
  upstream_connections,
  upstream_probe_duration,  // set in nanoseconds, exported in seconds (see gauge_scale)
  fallback_active,
  fallback_journal_bytes,
  fallback_journal_max_bytes,  // set once at start-up: --fallback-journal-max-bytes
  start_time,                  // set by the constructor: Unix time in seconds
  count_
};

inline constexpr std::array<family_info, static_cast<std::size_t>(gauge_id::count_)> gauge_families{
    {
        {"redis_sidecar_cache_entries", family_type::gauge, "Entries in the L1 cache."},
        {"redis_sidecar_cache_bytes", family_type::gauge,
         "Bytes the L1 cache accounts for (keys, values and per-entry overhead)."},
        {"redis_sidecar_cache_max_bytes", family_type::gauge,
         "Byte budget of the L1 cache (--cache-max-bytes)."},
        {"redis_sidecar_client_connections", family_type::gauge, "Open client connections."},
        {"redis_sidecar_inflight_requests", family_type::gauge,
         "Requests waiting for an upstream reply."},
        {"redis_sidecar_upstream_up", family_type::gauge,
         "1 when the last upstream health probe succeeded, else 0."},
        {"redis_sidecar_upstream_connections", family_type::gauge,
         "Upstream connections in the ready state: the pool's and clients' dedicated ones (the "
         "health probe, the invalidation channel and the journal's replay have their own "
         "besides)."},
        {"redis_sidecar_upstream_probe_duration_seconds", family_type::gauge,
         "Round-trip time of the last successful upstream health probe."},
        {"redis_sidecar_fallback_active", family_type::gauge,
         "1 while the sidecar serves from L1 because the upstream is unreachable, else 0."},
        {"redis_sidecar_fallback_journal_bytes", family_type::gauge,
         "Bytes of writes journaled during fallback, waiting to be replayed."},
        {"redis_sidecar_fallback_journal_max_bytes", family_type::gauge,
         "Capacity of the fallback write journal (--fallback-journal-max-bytes)."},
        {"redis_sidecar_start_time_seconds", family_type::gauge,
         "Start time of the sidecar since the Unix epoch."},
    }};

/// Multiplier from a gauge's stored integer to its exported value.
constexpr double gauge_scale(gauge_id id) {
  return id == gauge_id::upstream_probe_duration ? 1e-9 : 1.0;
}

/// Families with labels or computed at scrape time.
enum class labelled_id : std::uint8_t {
  errors,
  request_duration,
  cache_hit_ratio,
  cache_mode,
  build_info,
  count_
};

inline constexpr std::array<family_info, static_cast<std::size_t>(labelled_id::count_)>
    labelled_families{{
        {"redis_sidecar_errors_total", family_type::counter, "Errors and limit hits, by kind.",
         "kind"},
        {"redis_sidecar_request_duration_seconds", family_type::histogram,
         "Time from a request being framed to its reply being queued, by command and by what "
         "answered it (cache, upstream, fallback, local).",
         "command,source"},
        {"redis_sidecar_cache_hit_ratio", family_type::gauge,
         "Cache hits / (hits + misses) over the last 5 minutes, computed at scrape time; 0 without "
         "traffic."},
        {"redis_sidecar_cache_mode", family_type::gauge,
         "1 for the configured cache mode, 0 for the others.", "mode"},
        {"redis_sidecar_build_info", family_type::gauge, "Always 1; the version is in the label.",
         "version"},
    }};

/// Window of redis_sidecar_cache_hit_ratio (see hit_ratio_window.hpp).
inline constexpr std::chrono::minutes hit_ratio_period{5};

/// What answered a request: the `source` label of the request duration histogram.
enum class source : std::uint8_t { cache, upstream, fallback, local, count_ };
inline constexpr std::array<std::string_view, static_cast<std::size_t>(source::count_)>
    source_names{"cache", "upstream", "fallback", "local"};

/// The label values, fixed at start-up.
struct label_sets {
  std::vector<std::string> commands;     // `command`: e.g. every name of the command table, in
                                         // table order (unique); "other" is appended unless present
  std::vector<std::string> error_kinds;  // `kind` of redis_sidecar_errors_total
  std::vector<std::string> cache_modes;  // `mode` of redis_sidecar_cache_mode
  std::string version;                   // `version` of redis_sidecar_build_info
};

/// Every instrument of the sidecar. Not copyable or movable: handles point into it.
class sidecar_metrics {
 public:
  explicit sidecar_metrics(label_sets labels);
  ~sidecar_metrics();
  sidecar_metrics(const sidecar_metrics&) = delete;
  sidecar_metrics& operator=(const sidecar_metrics&) = delete;

  // --- Writer side (the proxy's thread) ---
  counter& operator[](counter_id id) noexcept { return counters_[static_cast<std::size_t>(id)]; }
  gauge& operator[](gauge_id id) noexcept { return gauges_[static_cast<std::size_t>(id)]; }

  /// Records one request. `command` indexes `commands()`; anything out of range counts as
  /// "other". Observations below 10us land in the first bucket, above 10s in +Inf.
  void observe(std::size_t command, source s, std::chrono::nanoseconds d) noexcept {
    cell(command, s).observe(d);
  }
  void observe(std::size_t command, source s, double seconds) noexcept {
    // NaN and negatives count as 0; beyond what int64 nanoseconds hold (292 years), +Inf.
    std::int64_t ns = 0;
    if (seconds > 0)
      ns = seconds < 9e9 ? static_cast<std::int64_t>(seconds * 1e9)
                         : std::numeric_limits<std::int64_t>::max();
    observe(command, s, std::chrono::nanoseconds(ns));
  }
  /// Counts an error of kind `kind` (an index into `error_kinds()`; out of range is ignored).
  void count_error(std::size_t kind, std::uint64_t n = 1) noexcept {
    if (kind < error_kinds_.size()) errors_[kind].inc(n);
  }
  /// Marks `mode` (an index into `cache_modes()`) as the active cache mode. Until the first call
  /// no mode is marked: every redis_sidecar_cache_mode series is 0.
  void set_cache_mode(std::size_t mode) noexcept {
    cache_mode_.set(static_cast<std::int64_t>(mode));
  }

  /// The index of `name` in `commands()`, or `other_command()` if absent. For start-up only: it
  /// compares strings.
  std::size_t command_index(std::string_view name) const noexcept;

  // --- Reader side (any thread) ---
  const counter& operator[](counter_id id) const noexcept {
    return counters_[static_cast<std::size_t>(id)];
  }
  const gauge& operator[](gauge_id id) const noexcept {
    return gauges_[static_cast<std::size_t>(id)];
  }
  /// Command label values: the names given at construction, then "other" if they lacked it.
  std::span<const std::string> commands() const noexcept { return commands_; }
  std::size_t other_command() const noexcept { return other_; }
  std::span<const std::string> error_kinds() const noexcept { return error_kinds_; }
  std::span<const std::string> cache_modes() const noexcept { return cache_modes_; }
  const std::string& version() const noexcept { return version_; }

  const latency_histogram& latency(std::size_t command, source s) const noexcept {
    return latency_[cell_index(command, s)];
  }
  std::uint64_t errors(std::size_t kind) const noexcept { return errors_[kind].value(); }
  std::size_t cache_mode() const noexcept { return static_cast<std::size_t>(cache_mode_.value()); }

 private:
  std::size_t cell_index(std::size_t command, source s) const noexcept {
    if (command >= commands_.size()) command = other_;
    return command * source_names.size() + static_cast<std::size_t>(s);
  }
  latency_histogram& cell(std::size_t command, source s) noexcept {
    return latency_[cell_index(command, s)];
  }

  std::array<counter, static_cast<std::size_t>(counter_id::count_)> counters_{};
  std::array<gauge, static_cast<std::size_t>(gauge_id::count_)> gauges_{};
  std::vector<std::string> commands_;
  std::size_t other_ = 0;  // index of "other" in commands_
  std::vector<std::string> error_kinds_;
  std::vector<std::string> cache_modes_;
  std::string version_;
  std::unique_ptr<latency_histogram[]> latency_;  // commands_.size() x source_names.size()
  std::unique_ptr<counter[]> errors_;             // one per error kind
  gauge cache_mode_;                              // index into cache_modes_
};

}  // namespace redis_sidecar::metrics
