#include "metrics/hit_ratio_window.hpp"

namespace redis_sidecar::metrics {

hit_ratio_window::hit_ratio_window(std::chrono::nanoseconds window, clock::time_point start)
    : window_(window), spacing_(window / 300), samples_{{start, 0, 0}} {}

double hit_ratio_window::update(clock::time_point now, std::uint64_t hits, std::uint64_t misses) {
  // Keep exactly one sample at or before the window's start: it is the baseline.
  while (samples_.size() >= 2 && samples_[1].at <= now - window_) samples_.pop_front();
  const sample& base = samples_.front();
  const std::uint64_t h = hits >= base.hits ? hits - base.hits : 0;
  const std::uint64_t m = misses >= base.misses ? misses - base.misses : 0;
  const double ratio = h + m == 0 ? 0.0 : static_cast<double>(h) / static_cast<double>(h + m);
  if (now - samples_.back().at >= spacing_) samples_.push_back({now, hits, misses});
  return ratio;
}

}  // namespace redis_sidecar::metrics
