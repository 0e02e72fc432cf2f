// write_hold: when a shared upstream connection's write waits for more requests.
//
// Unpipelined clients (`-c 50 -P 1`: each sends its next request once it has its reply) hand the
// sidecar a steady trickle, and a write per turn of the event loop then carries whatever arrived in
// that turn. That settles into one of two states and stays there: batches of 10 to 16 requests, or
// of 1 to 3, where each small write wakes Redis, which then spends two to three times the CPU per
// request on its reads and writes, replies trickle back, and the clients' next requests trickle in
// the same way (bench/RESULTS.md: the same build ran at 80k or at 120k GETs/s, run by run).
//
// The way out is the one Nagle's algorithm takes for small TCP segments: while the connection's
// previous write is still unanswered, a write of a few requests waits for those replies, and the
// requests that arrive meanwhile join it. Redis is busy with the previous batch anyway, and does
// the waiting requests no sooner for having them early; when the replies come the held write goes,
// and Redis reads it in one go. A write of max_held_requests or more goes at once: it already
// spreads Redis's costs. And a write waits only behind min_unanswered requests or more: behind
// fewer, the clients are few, and holding makes them take turns (two unpipelined clients ran one
// request at a time instead of two: in one of three rounds, 8k GETs/s against 12k).
//
// The wait is for the upstream's replies, so it costs the waiting requests up to a round trip to
// the upstream: nothing next to Redis (tens of microseconds), a whole request's latency again with
// Redis a millisecond away. So a connection only holds while the upstream's round trip, measured
// on its own writes, is under a limit (--write-hold-rtt-us). The round trip is the time from a
// write sent with nothing else unanswered to the read that brings its first reply; the floor is
// the least of the last window_samples of them (and of the current window's), so queueing in a
// busy Redis does not raise it, while an upstream that moved away raises it within two windows.
// Until a first round trip is measured, nothing is held.
//
// Sans-I/O: the connection reports its writes and reads and asks before each write.
#pragma once

#include <chrono>
#include <cstddef>

namespace redis_sidecar {

class write_hold_policy {
 public:
  using clock = std::chrono::steady_clock;
  /// A write of this many requests goes at once.
  static constexpr std::size_t max_held_requests = 8;
  /// A write waits only behind at least this many unanswered requests.
  static constexpr std::size_t min_unanswered = 4;
  /// Round trips per window of the floor.
  static constexpr unsigned window_samples = 64;

  /// `rtt_limit`: hold only while the measured round-trip floor is under it; zero: never hold.
  explicit write_hold_policy(std::chrono::microseconds rtt_limit) : limit_(rtt_limit) {}

  /// Whether a write of `queued` requests should wait while `unanswered` requests written before
  /// it wait for their replies.
  bool hold(std::size_t queued, std::size_t unanswered) const {
    return queued > 0 && queued < max_held_requests && unanswered >= min_unanswered &&
           rtt_floor() < limit_;
  }

  /// Whether round trips are measured: holding is on and no measured write is out.
  bool measuring() const { return limit_.count() > 0 && !probing_; }
  /// A write of requests went out at `at` with no request written before it unanswered, so the
  /// next read that brings replies brings its first (call when measuring()).
  void wrote_alone(clock::time_point at) {
    probing_ = true;
    probe_at_ = at;
  }

  /// A read at `at` brought replies to requests (at least one).
  void answered(clock::time_point at) {
    if (!probing_) return;
    probing_ = false;
    sample(at - probe_at_);
  }

  /// The stream was lost: what was written on it is not answered.
  void stream_lost() { probing_ = false; }

  /// The least round trip of the last full window and the current one; clock::duration::max()
  /// until one is measured.
  clock::duration rtt_floor() const { return floor_ < window_min_ ? floor_ : window_min_; }

 private:
  void sample(clock::duration rtt) {
    if (rtt < window_min_) window_min_ = rtt;
    if (++samples_ < window_samples) return;
    floor_ = window_min_;
    window_min_ = clock::duration::max();
    samples_ = 0;
  }

  clock::duration limit_;
  bool probing_ = false;
  clock::time_point probe_at_{};
  clock::duration floor_ = clock::duration::max();       // the last full window's least
  clock::duration window_min_ = clock::duration::max();  // the current window's least so far
  unsigned samples_ = 0;                                 // in the current window
};

}  // namespace redis_sidecar
