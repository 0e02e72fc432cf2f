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

// Asio's scheduler keeps the handlers that are ready in one queue, and the reactor (its
// epoll_wait) has a place in that queue too: poll_one() and run_one() ask the reactor whenever
// they find it at the front. Handlers a handler makes ready (an operation that completed at once,
// a post) are queued behind the reactor's place, so running them costs a zero-timeout
// epoll_wait first, and a turn that ran until nothing was left cost one more at its end. This
// lets the loop run what is queued without asking the reactor: it moves the reactor's place
// behind the handlers that wait behind it. Asio keeps the queue private; its members are reached
// by explicit instantiation, which the language exempts from access checks, and a change in
// Asio's layout fails to compile here.
namespace asio_private {
using asio::detail::scheduler;
template <typename Tag, auto Member>
struct expose {
  friend constexpr auto member(Tag) { return Member; }
};
struct queue_tag {
  friend constexpr auto member(queue_tag);
};
struct reactor_tag {
  friend constexpr auto member(reactor_tag);
};
struct mutex_tag {
  friend constexpr auto member(mutex_tag);
};
template struct expose<queue_tag, &scheduler::op_queue_>;
template struct expose<reactor_tag, &scheduler::task_operation_>;
template struct expose<mutex_tag, &scheduler::mutex_>;
}  // namespace asio_private

class ready_queue {
 public:
  explicit ready_queue(asio::io_context& io)
      : scheduler_(asio::use_service<asio::detail::scheduler>(io)) {}

  // Whether a handler is ready to run without asking the reactor. With `skip_reactor`, the
  // reactor's place at the front of the queue moves behind the handlers queued after it.
  bool handler_ready(bool skip_reactor) {
    auto& queue = scheduler_.*member(asio_private::queue_tag{});
    const asio::detail::scheduler_operation* reactor =
        &(scheduler_.*member(asio_private::reactor_tag{}));
    asio::detail::conditionally_enabled_mutex::scoped_lock lock(scheduler_.*
                                                                member(asio_private::mutex_tag{}));
    if (skip_reactor && queue.front() == reactor) {
      auto* op = queue.front();
      queue.pop();
      queue.push(op);
    }
    return queue.front() != nullptr && queue.front() != reactor;
  }

 private:
  asio::detail::scheduler& scheduler_;
};

// Polls io until an event's first handler has run (true; the turn runs the rest) or the
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
// turn runs the rest). Returns whether one ran.
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
  nap_policy naps(counters != nullptr ? nap : std::chrono::microseconds::zero());
  if (naps.length().count() > 0) ::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  ready_queue ready(io);
  std::size_t since_wait = 0;  // handlers run since the loop last asked the reactor
  for (;;) {
    // A turn: the handlers ready without asking the reactor, up to turn_policy::max_handlers.
    // Nothing left ready: the listeners' writes, then one wait for events.
    std::size_t ran = 0;
    while (ran < turn_policy::max_handlers &&
           ready.handler_ready(since_wait + ran < turn_policy::max_between_waits)) {
      io.poll_one();
      ++ran;
    }
    since_wait += ran;
    naps.ran(ran);
    if (io.stopped()) return;
    // The listeners' writes (their completions are ready now), or the rest of a cut turn.
    if (end_turn() || ran == turn_policy::max_handlers) continue;
    if (since_wait >= turn_policy::max_between_waits) {
      // Handlers are still coming: ask the reactor without waiting, then run them and its events.
      naps.ran(io.poll_one());
      since_wait = 0;
      continue;
    }
    const auto idle =
        contention ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    if (!contention || !contention->allow(idle, counters)) {
      bool woken = false;
      if (counters != nullptr && naps.enabled() &&
          naps.tick(std::chrono::steady_clock::now(), counters->active_clients)) {
        // A new window of the crowd's count. Ticked at every wait, not only before naps: ticked
        // there, most of the longer naps' gain at 50 clients went (bench/RESULTS.md).
        counters->active_clients = 0;
        ++counters->active_window;
      }
      if (counters != nullptr &&
          naps.nap(counters->requests, counters->upstream_writes, counters->inflight_requests)) {
        // The app's next requests may be here already: a nap would only hold them back.
        woken = io.poll_one() > 0;
        if (!woken) {
          ++counters->naps;
          naps.woke(counters->requests, counters->upstream_writes);
          woken = nap_then_poll(io, naps.length());
        }
      }
      if (!woken) {
        if (counters != nullptr) naps.woke(counters->requests, counters->upstream_writes);
        io.run_one();  // one wait for events: at once if some are there, else until one comes
      }
      naps.ran(1);
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
    since_wait = 1;
    if (io.stopped()) return;
  }
}

bool defer(std::shared_ptr<turn_listener> listener) {
  if (!state.running) return false;
  state.deferred.push_back(std::move(listener));
  return true;
}

}  // namespace redis_sidecar::event_loop
