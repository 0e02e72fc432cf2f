#include "proxy/event_loop.hpp"

#include <sched.h>

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

// Polls io until an event's handlers have run (true) or the window is over (false).
bool poll_for(asio::io_context& io, std::chrono::microseconds window) {
  const auto until = std::chrono::steady_clock::now() + window;
  do {
    if (io.poll() > 0 || io.stopped()) return true;
    sched_yield();
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

}  // namespace

void run(asio::io_context& io, std::chrono::microseconds busy_poll, stats* counters) {
  struct running_guard {
    running_guard() { state.running = true; }
    ~running_guard() {
      state.running = false;
      state.deferred.clear();
    }
  } guard;
  busy_poll_policy policy(busy_poll);
  turn_policy turns;
  bool woke = false;  // the last step ran the handler of a wake-up (io.run_one()), not a turn
  bool look = true;   // the next step polls: every handler ready, the reactor polled until none
  for (;;) {
    if (look) {
      const std::size_t found = io.poll();
      if (woke) turns.looked(found);
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
    if (end_turn()) continue;  // the listeners' handlers are ready now: run them
    if (busy_poll.count() == 0) {
      io.run_one();  // block for the next event (or timer)
      woke = true;
      look = turns.look_after_wake();
    } else {
      const bool due = counters != nullptr && counters->inflight_requests > 0;
      const auto idle = std::chrono::steady_clock::now();
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
