// instruments: the counter, gauge and latency histogram the data plane updates. Each is a few
// relaxed atomics, so updating one costs a load and a store: no lock, no lookup, no allocation.
//
// Threading contract: ONE writer thread per instrument (the proxy's io_context thread), any number
// of reader threads (the HTTP server's, at scrape time). Because there is a single writer, an
// update is `store(load() + n)` rather than `fetch_add`: no other thread can write in between, so
// no update is lost, and the plain load/store compile to ordinary moves on x86-64 and AArch64
// instead of a locked read-modify-write. Relaxed ordering is enough: readers need each value to be
// untorn, not ordered against other values. A second writer thread would lose updates: give it its
// own instruments, or switch that instrument to fetch_add.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace redis_sidecar::metrics {

/// A monotonically increasing count (exported as a Prometheus counter).
class counter {
 public:
  void inc(std::uint64_t n = 1) noexcept {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down (exported as a Prometheus gauge).
class gauge {
 public:
  void set(std::int64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void inc(std::int64_t n = 1) noexcept {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void dec(std::int64_t n = 1) noexcept { inc(-n); }
  std::int64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> value_{0};
};

/// Upper bounds of the latency buckets, in nanoseconds: 10us .. 10s. A bucket counts observations
/// <= its bound (Prometheus' `le`); one more bucket (+Inf) takes the rest.
inline constexpr std::array<std::uint64_t, 19> latency_bounds_ns{
    10'000,        25'000,        50'000,        100'000,       250'000,
    500'000,       1'000'000,     2'500'000,     5'000'000,     10'000'000,
    25'000'000,    50'000'000,    100'000'000,   250'000'000,   500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

inline constexpr std::size_t latency_bucket_count = latency_bounds_ns.size() + 1;  // with +Inf

/// A latency histogram with fixed buckets. Buckets are stored non-cumulative (one store per
/// observation) and summed at scrape time; the observation count is the sum of the buckets, so a
/// scrape always sees `_count` equal to the +Inf bucket.
class latency_histogram {
 public:
  void observe(std::chrono::nanoseconds d) noexcept {
    const std::uint64_t ns = d.count() > 0 ? static_cast<std::uint64_t>(d.count()) : 0;
    std::size_t b = 0;
    while (b < latency_bounds_ns.size() && ns > latency_bounds_ns[b]) ++b;  // most stop at 0..2
    auto& bucket = buckets_[b];
    bucket.store(bucket.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    sum_ns_.store(sum_ns_.load(std::memory_order_relaxed) + ns, std::memory_order_relaxed);
  }

  /// Observations in bucket `i` alone (not cumulative); i == latency_bounds_ns.size() is +Inf.
  std::uint64_t bucket(std::size_t i) const noexcept {
    return buckets_[i].load(std::memory_order_relaxed);
  }
  std::uint64_t sum_ns() const noexcept { return sum_ns_.load(std::memory_order_relaxed); }
  /// Total observations (the sum of every bucket).
  std::uint64_t count() const noexcept {
    std::uint64_t n = 0;
    for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
    return n;
  }

 private:
  std::array<std::atomic<std::uint64_t>, latency_bucket_count> buckets_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace redis_sidecar::metrics
