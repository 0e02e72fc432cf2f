// hit_ratio_window: the cache hit ratio over a recent window, from cumulative hit and miss counts
// sampled at scrape time. Prometheus users should prefer rate() over the two counters; this is the
// single number for people who want one (redis_sidecar_cache_hit_ratio).
//
// Each update() passes the current counts; the ratio is taken against the newest stored sample at
// least `window` old (or the oldest one while the history is shorter), so the window is never
// shorter than asked once history exists, and a scrape interval longer than the window still
// yields the ratio since the previous scrape. Samples closer than window/300 to the previous one
// are not stored, which bounds the history at ~300 samples however often it is scraped. Without
// traffic in the window the ratio is 0, never NaN. Time is passed in, so tests are deterministic.
//
// Not thread-safe: the exporter calls it under its own mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>

namespace redis_sidecar::metrics {

class hit_ratio_window {
 public:
  using clock = std::chrono::steady_clock;

  /// Counts start at 0 at `start`.
  hit_ratio_window(std::chrono::nanoseconds window, clock::time_point start);

  /// Records the counts at `now` (non-decreasing) and returns the ratio over the window.
  double update(clock::time_point now, std::uint64_t hits, std::uint64_t misses);

  std::size_t stored_samples() const { return samples_.size(); }

 private:
  struct sample {
    clock::time_point at;
    std::uint64_t hits;
    std::uint64_t misses;
  };

  std::chrono::nanoseconds window_;
  std::chrono::nanoseconds spacing_;  // minimum distance between stored samples
  std::deque<sample> samples_;        // oldest first; never empty
};

}  // namespace redis_sidecar::metrics
