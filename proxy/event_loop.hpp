// event_loop: runs an io_context in turns. A turn runs the handlers that are ready, and those they
// make ready (an operation that completed at once, a post), up to turn_policy::max_handlers; work
// deferred with event_loop::defer() runs when the turn is over. When nothing is left ready, the
// loop waits for events: one epoll_wait, which returns at once with the events already there, or
// sleeps until one comes.
//
// The upstream connections defer their writes this way, so the requests of every client that was
// ready in a turn leave in one write: one TLS record, one send, one wake-up of Redis, instead of
// one write per handful of clients. Under load this is the difference between Redis reading a
// batch of 2 and a batch of 20; bench/RESULTS.md has the numbers. The write starts in the
// listener's turn_ended() itself, not in a handler it wakes: Redis has the batch before the loop
// runs another handler, and works on it while the sidecar goes on. Under a heavy pipelined load a
// turn that ran every ready handler held a large batch back until it had read all of it, while
// Redis and the app waited; a turn ends after 16 handlers instead (turn_policy::max_handlers).
//
// One wait per pass, as nutcracker's loop does it: the loop asks the reactor for events only when
// no handler is ready without it. Asio's own run_one() and poll_one() ask it whenever its place in
// the handler queue comes up, and a handler that a handler makes ready is queued behind that
// place, so each generation of them cost a zero-timeout epoll_wait, and a turn one more at its
// end to see that nothing had come. Where a system call costs several microseconds (a VM that
// pays the hypervisor on each), that was most of the loop's waits: measured with 50 unpipelined
// apps through the pass-through sidecar, 0.52-0.84 epoll_wait per request before, 0.17-0.37 after
// (nutcracker 0.08), and 6-15 % less of the sidecar's CPU per request (bench/RESULTS.md). Before
// a nap (below) the loop looks once: with the app's next requests already there, a nap would only
// hold them back. While handlers keep making more ready, the loop still asks every
// turn_policy::max_between_waits handlers, so that a stream of reads that complete at once cannot
// starve the other connections.
//
// Busy polling (off unless asked for): when a turn leaves nothing ready, the loop can keep polling
// for up to a few tens of microseconds before it sleeps. A sleeping thread is woken by the kernel
// (on a VM, often by an inter-processor interrupt and an exit to the hypervisor), which costs a
// request tens of microseconds on each of the two hops a proxy adds; a polling thread sees the
// event as it lands. It spends CPU, so it adapts to the load (busy_poll_policy), stops while the
// cores are busy or the CPU limit is reached (cpu_contention_policy), and is opt-in.
//
// Napping (on by default, --nap-us): while the sidecar serves unpipelined clients from L1 alone,
// it is the faster end of each exchange, so it runs out of work after nearly every turn and sleeps
// until the app's next request wakes it. The app pays for that wake-up in its send (on a VM about
// 12 µs of its CPU each: an inter-processor interrupt and an exit to the hypervisor), and an app
// that waits for each reply is usually the bottleneck. So after such a turn the loop naps instead:
// it sleeps a fixed short time on a timer of its own, then runs what has arrived meanwhile. The
// app's sends find nobody to wake, and the loop serves several requests per wake-up instead of one.
// It costs no CPU, only latency of up to one nap to the requests that arrive during it, and only
// under concurrent load (nap_policy). Where requests went upstream, the loop does not nap: Redis
// then sets the pace, and the replies it sends should be forwarded at once. Among many clients
// (8 or more within the last millisecond) a nap lasts three times as long: each of them comes
// back only after the app has served the others, so a longer nap holds back nobody waiting.
//
// State is per thread: an io_context per thread gets a loop, and a deferral, of its own.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "proxy/asio.hpp"
#include "proxy/stats.hpp"

namespace redis_sidecar {

/// Something that acts once when the current turn of its thread's event loop is over.
class turn_listener {
 public:
  virtual ~turn_listener() = default;
  virtual void turn_ended() = 0;
};

/// When to poll instead of sleeping, in the manner of KVM's halt polling: the loop polls for up to
/// `limit` while its waits are short (the last wait for an event, polling or sleeping, ended within
/// the limit), and sleeps at once after a wait longer than that, so an idle or sparsely used
/// sidecar spends at most one limit of polling per quiet spell. Waits while upstream replies are
/// due and waits for the app's next request are judged apart: with Redis a millisecond away the
/// first are long and the second short, and one window for both would open after each short wait
/// only to be spent in vain on the next long one. Sans-I/O: the loop reports its waits.
class busy_poll_policy {
 public:
  explicit busy_poll_policy(std::chrono::microseconds limit)
      : limit_(limit), window_{limit, limit} {}

  /// How long to poll before sleeping now; zero: sleep at once.
  std::chrono::microseconds window(bool reply_due) const { return window_[reply_due ? 1 : 0]; }
  /// The loop waited this long for its next event (polling, then sleeping if that found nothing).
  void waited(bool reply_due, std::chrono::steady_clock::duration d) {
    window_[reply_due ? 1 : 0] = d <= limit_ ? limit_ : std::chrono::microseconds::zero();
  }

 private:
  std::chrono::microseconds limit_;
  std::array<std::chrono::microseconds, 2> window_;  // [0]: no reply due; [1]: replies due
};

/// Whether busy polling may go on, judged by how long the loop's thread waits for a CPU (the time
/// it spent runnable but queued, the kernel's run delay). Polling pays only on a CPU nobody else
/// wants: where the cores are busy (the app, Redis, other pods), a polling thread takes a core
/// another process needs and then waits in the run queue itself, so events wait for it longer
/// than a sleeping thread would have been woken. Time a CPU limit (a cgroup quota) holds the thread
/// back counts as such a wait too, so polling stops before it spends the pod's quota. When more
/// than 1/8 of a sample's time (50 ms) went to such waits, polling stops for a backoff (100 ms,
/// doubled each time a retry finds the same, up to 6.4 s) and is then tried again; a sample under
/// the threshold resets the backoff. Measured with the app's load on one core and the sidecar
/// polling on the other, 50 ms samples stayed under 0.07 (10 ms ones reached 0.3 now and then);
/// with a process that never sleeps beside them, every sample was above 1/8, most above 1/4.
/// Sans-I/O: the loop reports its samples, taken while it polls.
class cpu_contention_policy {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr auto sample_period = std::chrono::milliseconds(50);
  static constexpr auto first_backoff = std::chrono::milliseconds(100);
  static constexpr auto last_backoff = std::chrono::milliseconds(6400);

  bool polling_allowed(clock::time_point now) const { return now >= off_until_; }
  /// Of the `wall` time up to `now`, the thread spent `queued` waiting for a CPU.
  /// Returns true when this sample stops polling.
  bool sampled(clock::time_point now, clock::duration wall, clock::duration queued) {
    if (queued * 8 <= wall) {
      backoff_ = first_backoff;
      return false;
    }
    off_until_ = now + backoff_;
    backoff_ = std::min<clock::duration>(backoff_ * 2, last_backoff);
    return true;
  }

 private:
  clock::time_point off_until_{};
  clock::duration backoff_ = first_backoff;
};

/// How long a turn runs, and how long the loop goes without asking the reactor for events.
struct turn_policy {
  /// A turn ends after this many handlers, and the next starts at once: a busy moment's writes go
  /// out in parts, and Redis and the app work on the first part while the loop reads the rest.
  /// Measured with 50 apps pipelining 16 requests through a pass-through sidecar to a TLS Redis
  /// on 2 cores shared with both, against unbounded turns (bench/RESULTS.md): 1.05-1.20x the
  /// GETs/s (12 of 12 interleaved rounds, median 1.08x) at less CPU per request, 0.99-1.07x the
  /// SETs/s (median 1.04x); a bound of 8 gave about 1.06x, 4 and 32 nothing or less. Unpipelined
  /// GETs and pipelined L1 hits did not move beyond the rounds' spread.
  static constexpr std::size_t max_handlers = 16;
  /// The loop asks the reactor for events at least once every this many handlers, even while
  /// handlers keep making more ready (each a zero-timeout epoll_wait then).
  static constexpr std::size_t max_between_waits = 4 * max_handlers;
};

/// Whether the loop, out of events, naps (sleeps a fixed time, then looks) rather than sleeping
/// until an event wakes it. It naps only after a wake-up whose turns served nothing but local
/// replies (no upstream write since, no upstream reply due) to at least min_requests requests, at
/// most max_requests_per_handler of them per handler run: clients that wait for each reply, more
/// than one at a time. Measured with L1 hits on 2 cores shared with the app (redis-benchmark
/// `-P 1`, against the loop without naps; bench/RESULTS.md): 1.2x the GETs/s at 2 and 5 clients,
/// 0.95-1.03x at 10, 1.04-1.11x at 20 to 300, and less CPU per request in the app. Pipelined
/// clients (`-P 16`, many requests per read) lost about 6 % to naps, so they do not nap. A lone
/// client seldom does: a wake-up serves two of its requests only when the next comes before the
/// loop waits again.
///
/// In a crowd (crowd_clients or more distinct clients sent requests within the last window), a
/// nap lasts crowd_factor times as long. Each of those clients then waits for its reply while the
/// app serves the others, so it comes back long after a nap: the nap holds back no one who is
/// waiting, and a longer one leaves the app's sends more time to find nobody to wake. With a few
/// clients, each comes back within a nap, and a longer nap only delays it. Measured on the EPYC VM
/// (L1-hit GET at `-P 1`, against the build with 10 µs naps for all, in interleaved pairs and
/// triples; bench/RESULTS.md): 1.04-1.13x the GETs/s at 50 clients (faster in 14 of 14, p50 lower
/// in 14), 0.95-1.13x at 10 (faster in 10 of 11), 1.01-1.31x at 20 (3); unchanged below 8
/// clients. Sans-I/O: the loop reports its wake-ups, the handlers it ran, the counters as it
/// would sleep, and the clients it served in each window.
class nap_policy {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::uint64_t min_requests = 2;
  static constexpr std::uint64_t max_requests_per_handler = 2;
  static constexpr auto window = std::chrono::milliseconds(1);
  static constexpr std::uint32_t crowd_clients = 8;
  static constexpr int crowd_factor = 3;

  /// `length`: how long a nap lasts out of a crowd; zero: never nap.
  explicit nap_policy(std::chrono::microseconds length) : length_(length) {}

  bool enabled() const { return length_.count() > 0; }
  std::chrono::microseconds length() const { return crowded_ ? length_ * crowd_factor : length_; }
  /// The loop, about to wait, at `now`, with the distinct clients that sent requests since the
  /// current window began. Returns true when a new window begins: the caller counts from zero.
  bool tick(clock::time_point now, std::uint32_t clients) {
    const auto elapsed = now - window_start_;
    if (elapsed < window) return false;
    // A window the loop slept through is no crowd: clients spread over a longer time may each
    // have sent one request.
    crowded_ = elapsed < 2 * window && clients >= crowd_clients;
    window_start_ = now;
    return true;
  }
  /// The loop is woken (by an event, or at a nap's end), with these counters' values.
  void woke(std::uint64_t requests, std::uint64_t upstream_writes) {
    requests_ = requests;
    writes_ = upstream_writes;
    handlers_ = 0;
  }
  /// The loop ran `n` handlers.
  void ran(std::size_t n) { handlers_ += n; }
  /// Whether the loop, out of events with these counters' values, should nap.
  bool nap(std::uint64_t requests, std::uint64_t upstream_writes, std::int64_t inflight) const {
    if (!enabled() || inflight != 0 || upstream_writes != writes_) return false;
    const std::uint64_t served = requests - requests_;
    return served >= min_requests && served <= max_requests_per_handler * handlers_;
  }

 private:
  std::chrono::microseconds length_;
  clock::time_point window_start_{};
  bool crowded_ = false;        // in the last window
  std::uint64_t requests_ = 0;  // counters' values at the last wake-up
  std::uint64_t writes_ = 0;
  std::uint64_t handlers_ = 0;  // handlers run since the last wake-up
};

namespace event_loop {

/// Runs io until it is stopped or runs out of work, in turns (see above). A listener still
/// pending when the loop ends is released, not called: one that needs the loop to go on holds
/// work on io until it has run (an upstream connection always has a read pending). With busy_poll
/// above zero the loop polls for up to that long, as busy_poll_policy and cpu_contention_policy
/// decide, before it sleeps. `counters`, if given, tells it whether upstream replies are due
/// (inflight_requests) and gets the time spent polling (busy_poll_ns) and the times polling
/// stopped for want of a CPU (busy_poll_backoffs). With `nap` above zero and `counters` given, the
/// loop naps where nap_policy says so (counted in counters->naps; counters->active_clients tells
/// it the crowd, and it moves counters->active_window on); the thread's timer
/// slack is then set to 1 µs, so that a nap is not stretched by the kernel's default 50 µs.
void run(asio::io_context& io,
         std::chrono::microseconds busy_poll = std::chrono::microseconds::zero(),
         stats* counters = nullptr,
         std::chrono::microseconds nap = std::chrono::microseconds::zero());

/// Calls listener->turn_ended() once the current turn of this thread's loop is over, keeping the
/// listener alive until then. A listener deferred from another's turn_ended() is called at the
/// same turn's end, before any handler runs again (up to a few rounds of that). Returns false,
/// deferring nothing, when no event_loop::run() is running on this thread (a plain
/// io_context::run(), as in tests): the caller acts now.
bool defer(std::shared_ptr<turn_listener> listener);

}  // namespace event_loop
}  // namespace redis_sidecar
