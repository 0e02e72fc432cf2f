#include "proxy/event_loop.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <optional>
#include <vector>

namespace redis_sidecar::event_loop {
namespace {

struct loop_state {
  bool running = false;
  std::vector<std::shared_ptr<turn_listener>> deferred;  // in the order they were deferred
  std::vector<std::shared_ptr<turn_listener>> calling;   // the batch turn_ended() is called on
};

thread_local loop_state state;

// Calls every listener deferred so far, then those their turn_ended() deferred (the near cache's
// batch wakes the channel connection's writer), for a few rounds; what is deferred after that
// waits for the next turn.
bool end_turn() {
  if (state.deferred.empty()) return false;
  for (int round = 0; round < 4 && !state.deferred.empty(); ++round) {
    state.calling.swap(state.deferred);
    for (auto& l : state.calling) l->turn_ended();
    state.calling.clear();
  }
  return true;
}

// Runs the handlers that are ready, polling the reactor (a zero-timeout epoll_wait) whenever none
// is left, up to `limit` of them. Returns how many ran.
std::size_t poll_some(asio::io_context& io, std::size_t limit) {
  std::size_t ran = 0;
  while (ran < limit && io.poll_one() > 0) ++ran;
  return ran;
}

// Polls io until an event's first handler has run (true; the loop's look runs the rest) or the
// window is over (false).
bool poll_for(asio::io_context& io, std::chrono::microseconds window) {
  const auto until = std::chrono::steady_clock::now() + window;
  do {
    if (io.poll_one() > 0 || io.stopped()) return true;
    sched_yield();
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

// Sleeps for `length` on the thread's own timer, then runs the first handler ready, if any (the
// loop's look runs the rest). Returns whether one ran.
bool nap_then_poll(asio::io_context& io, std::chrono::microseconds length) {
  const auto ns = std::chrono::nanoseconds(length).count();
  timespec left{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (::nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
  return io.poll_one() > 0;
}

// The time the calling thread has spent runnable but waiting for a CPU, from the kernel's
// /proc/thread-self/schedstat ("<on-CPU ns> <run delay ns> <timeslices>"). Empty where the kernel
// keeps no such count (no CONFIG_SCHED_INFO) or /proc is not mounted.
class run_delay_clock {
 public:
  run_delay_clock() : fd_(::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC)) {}
  ~run_delay_clock() {
    if (fd_ >= 0) ::close(fd_);
  }
  run_delay_clock(const run_delay_clock&) = delete;
  run_delay_clock& operator=(const run_delay_clock&) = delete;

  std::optional<std::chrono::nanoseconds> read() const {
    if (fd_ < 0) return std::nullopt;
    char buf[96];
    const ssize_t n = ::pread(fd_, buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    const char* end = buf + n;
    const char* p = std::find(static_cast<const char*>(buf), end, ' ');
    std::uint64_t delay = 0;
    if (p == end || std::from_chars(p + 1, end, delay).ec != std::errc{}) return std::nullopt;
    return std::chrono::nanoseconds(delay);
  }

 private:
  int fd_;
};

// Samples the loop's run delay while it polls and asks cpu_contention_policy whether polling may
// go on. Where the run delay cannot be read, polling goes on as configured.
class contention_guard {
 public:
  using clock = cpu_contention_policy::clock;

  // Whether the loop may poll now; counts a stop in counters->busy_poll_backoffs.
  bool allow(clock::time_point now, stats* counters) {
    if (!policy_.polling_allowed(now)) {
      sampling_ = false;
      return false;
    }
    if (now - start_ < cpu_contention_policy::sample_period && sampling_) return true;
    const auto queued = delays_.read();
    if (!queued) return true;
    if (sampling_ && policy_.sampled(now, now - start_, *queued - queued_at_start_)) {
      sampling_ = false;
      if (counters != nullptr) ++counters->busy_poll_backoffs;
      return false;
    }
    sampling_ = true;
    start_ = now;
    queued_at_start_ = *queued;
    return true;
  }

 private:
  cpu_contention_policy policy_;
  run_delay_clock delays_;
  bool sampling_ = false;  // start_ and queued_at_start_ begin the current sample
  clock::time_point start_{};
  std::chrono::nanoseconds queued_at_start_{};
};

}  // namespace

void run(asio::io_context& io, std::chrono::microseconds busy_poll, stats* counters,
         std::chrono::microseconds nap) {
  struct running_guard {
    running_guard() { state.running = true; }
    ~running_guard() {
      state.running = false;
      state.deferred.clear();
    }
  } guard;
  busy_poll_policy policy(busy_poll);
  std::optional<contention_guard> contention;
  if (busy_poll.count() > 0) contention.emplace();
  turn_policy turns;
  nap_policy naps(counters != nullptr ? nap : std::chrono::microseconds::zero());
  if (naps.length().count() > 0) ::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  bool woke = false;  // the last step ran the handler of a wake-up (io.run_one()), not a turn
  bool look = true;   // the next step polls: the handlers ready, up to turn_policy::max_handlers
  bool cut = false;   // the last look stopped at turn_policy::max_handlers: more may be ready
  for (;;) {
    cut = false;
    if (look) {
      const std::size_t found = poll_some(io, turn_policy::max_handlers);
      if (woke) turns.looked(found);
      naps.ran(found);
      cut = found == turn_policy::max_handlers;
    }
    if (io.stopped()) return;
    if (woke && !look) {
      // The woken handler's turn ends alone, and the loop looks once its writes are out.
      end_turn();
      look = true;
      continue;
    }
    woke = false;
    look = true;
    // The listeners' handlers are ready now, or the turn was cut short: run them.
    if (end_turn() || cut) continue;
    const auto idle =
        contention ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    if (!contention || !contention->allow(idle, counters)) {
      if (counters != nullptr &&
          naps.nap(counters->requests, counters->upstream_writes, counters->inflight_requests)) {
        ++counters->naps;
        naps.woke(counters->requests, counters->upstream_writes);
        if (nap_then_poll(io, naps.length())) {
          naps.ran(1);
          woke = true;  // what came during the nap is looked for at once
          continue;
        }
      }
      if (counters != nullptr) naps.woke(counters->requests, counters->upstream_writes);
      io.run_one();  // block for the next event (or timer)
      naps.ran(1);
      woke = true;
      look = turns.look_after_wake();
    } else {
      const bool due = counters != nullptr && counters->inflight_requests > 0;
      const auto window = policy.window(due);
      bool woken = false;
      if (window.count() > 0) {
        woken = poll_for(io, window);
        if (counters != nullptr)
          counters->busy_poll_ns += static_cast<std::uint64_t>(
              std::chrono::nanoseconds(std::chrono::steady_clock::now() - idle).count());
      }
      if (!woken) io.run_one();
      policy.waited(due, std::chrono::steady_clock::now() - idle);
    }
    if (io.stopped()) return;
  }
}

bool defer(std::shared_ptr<turn_listener> listener) {
  if (!state.running) return false;
  state.deferred.push_back(std::move(listener));
  return true;
}

}  // namespace redis_sidecar::event_loop
