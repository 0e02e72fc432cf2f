// event_loop: deferred listeners run once the turn is over (every handler ready, including the
// handlers made ready during the turn, up to a bound on a turn's handlers), before the loop waits
// for events; the loop asks the reactor for events only when nothing else is ready (up to a bound
// on the handlers between two waits); outside event_loop::run() nothing is deferred; a listener
// pending when the loop ends is released.
// Like the upstream connections (whose reads are always pending), the listeners here hold work on
// the io_context until they have run: a loop out of work has ended. A busy-polling loop serves the
// same events in the same turns, whether they come while it polls or while it sleeps.
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proxy/event_loop.hpp"

namespace redis_sidecar {
namespace {

struct recorder : turn_listener {
  std::vector<std::string>& log;
  std::string name;
  std::function<void()> then;
  recorder(std::vector<std::string>& l, std::string n) : log(l), name(std::move(n)) {}
  void turn_ended() override {
    log.push_back(name);
    if (then) then();
  }
};

// A loop held open by `work` until a test lets go, and two listeners that log when called.
struct two_listeners {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::vector<std::string> log;
  std::shared_ptr<recorder> a = std::make_shared<recorder>(log, "a ended");
  std::shared_ptr<recorder> b = std::make_shared<recorder>(log, "b ended");
};

TEST_CASE(
    "a turn runs the handlers ready and those they make ready, then its listeners; the "
    "reactor's events come in the next turn",
    "[event_loop]") {
  asio::io_context io(1);
  auto work = asio::make_work_guard(io);
  std::vector<std::string> log;
  auto listener = std::make_shared<recorder>(log, "turn ended");
  listener->then = [&] { work.reset(); };
  // Due before the loop starts, but only the reactor (an epoll_wait) can tell: the loop does not
  // ask it while handlers are ready, so the timer comes after the turn.
  steady_timer due(io, std::chrono::steady_clock::now() - std::chrono::seconds(1));
  due.async_wait([&](error_code) { log.push_back("timer already due"); });
  asio::post(io, [&] {
    log.push_back("first");
    REQUIRE(event_loop::defer(listener));
    asio::post(io, [&] { log.push_back("posted by first"); });
  });
  asio::post(io, [&] { log.push_back("second"); });
  event_loop::run(io);
  CHECK(log == std::vector<std::string>{"first", "second", "posted by first", "turn ended",
                                        "timer already due"});
}

TEST_CASE(
    "while handlers keep making more ready, the loop still asks the reactor every "
    "turn_policy::max_between_waits handlers",
    "[event_loop]") {
  asio::io_context io(1);
  std::size_t chain = 0;         // handlers of the chain run so far
  std::size_t before_timer = 0;  // of them, those that ran before the timer
  bool fired = false;
  std::function<void()> next = [&] {
    ++chain;
    if (!fired) asio::post(io, next);  // each link makes the next ready, until the timer fires
  };
  steady_timer due(io, std::chrono::steady_clock::now() - std::chrono::seconds(1));
  due.async_wait([&](error_code) {
    fired = true;
    before_timer = chain;
  });
  asio::post(io, next);
  event_loop::run(io);
  CHECK(fired);
  // Not at every link (that is Asio's own io_context::run()), nor never.
  CHECK(before_timer > turn_policy::max_handlers);
  CHECK(before_timer <= turn_policy::max_between_waits + 1);
}

TEST_CASE_METHOD(
    two_listeners,
    "what a listener makes ready runs in the next turn, and the loop ends with the work",
    "[event_loop]") {
  b->then = [&] { work.reset(); };
  a->then = [&] {
    asio::post(io, [&] {
      log.push_back("posted by a");
      REQUIRE(event_loop::defer(b));
    });
  };
  asio::post(io, [&] { REQUIRE(event_loop::defer(a)); });
  event_loop::run(io);
  CHECK(log == std::vector<std::string>{"a ended", "posted by a", "b ended"});
  CHECK(a.use_count() == 1);
  CHECK(b.use_count() == 1);
}

TEST_CASE_METHOD(two_listeners,
                 "a listener deferred by another's turn_ended is called at the same turn's end",
                 "[event_loop]") {
  auto again = std::make_shared<recorder>(log, "again");
  int rounds = 0;
  // Defers itself from its own turn_ended: called a few times at this turn's end, then not again
  // before the handlers of the next turn have run.
  again->then = [&] {
    if (++rounds < 10) REQUIRE(event_loop::defer(again));
  };
  a->then = [&] {
    asio::post(io, [&] {
      log.push_back("posted by a");
      work.reset();
    });
    REQUIRE(event_loop::defer(b));
  };
  asio::post(io, [&] {
    REQUIRE(event_loop::defer(a));
    REQUIRE(event_loop::defer(again));
  });
  event_loop::run(io);
  REQUIRE(log.size() >= 4);
  CHECK(log[0] == "a ended");
  CHECK(log[1] == "again");
  CHECK(log[2] == "b ended");
  const auto posted = std::find(log.begin(), log.end(), "posted by a");
  REQUIRE(posted != log.end());
  CHECK(std::count(log.begin(), posted, "again") == 4);  // the rounds of one turn's end
}

TEST_CASE("outside event_loop::run nothing is deferred", "[event_loop]") {
  std::vector<std::string> log;
  auto listener = std::make_shared<recorder>(log, "never");
  CHECK_FALSE(event_loop::defer(listener));
  asio::io_context io(1);
  bool ran = false;
  asio::post(io, [&] {
    CHECK_FALSE(event_loop::defer(listener));  // a plain run(), as in tests and tools
    ran = true;
  });
  io.run();
  CHECK(ran);
  CHECK(log.empty());
  CHECK(listener.use_count() == 1);
}

TEST_CASE("a listener pending when the loop is stopped is released, not called", "[event_loop]") {
  asio::io_context io(1);
  std::vector<std::string> log;
  auto listener = std::make_shared<recorder>(log, "never");
  asio::post(io, [&] {
    REQUIRE(event_loop::defer(listener));
    io.stop();
  });
  event_loop::run(io);
  CHECK(log.empty());
  CHECK(listener.use_count() == 1);
  CHECK_FALSE(event_loop::defer(listener));
}

TEST_CASE("a listener deferred as the work runs out is released: the loop has ended",
          "[event_loop]") {
  asio::io_context io(1);
  std::vector<std::string> log;
  auto listener = std::make_shared<recorder>(log, "never");
  asio::post(io, [&] { REQUIRE(event_loop::defer(listener)); });
  event_loop::run(io);
  CHECK(log.empty());
  CHECK(listener.use_count() == 1);
}

TEST_CASE("the loop blocks for events between turns and serves them", "[event_loop]") {
  asio::io_context io(1);
  auto work = asio::make_work_guard(io);
  std::vector<std::string> log;
  auto listener = std::make_shared<recorder>(log, "turn ended");
  listener->then = [&] { work.reset(); };
  steady_timer later(io, std::chrono::milliseconds(20));
  later.async_wait([&](error_code ec) {
    CHECK_FALSE(ec);
    log.push_back("timer");
    REQUIRE(event_loop::defer(listener));
  });
  event_loop::run(io);
  CHECK(log == std::vector<std::string>{"timer", "turn ended"});
}

TEST_CASE("busy_poll_policy polls while waits are short and sleeps at once after a long one",
          "[event_loop]") {
  using std::chrono::microseconds;
  for (const bool due : {false, true}) {
    INFO("replies due: " << due);
    busy_poll_policy p(microseconds(50));
    CHECK(p.window(due) == microseconds(50));  // polls from the start
    p.waited(due, microseconds(20));
    CHECK(p.window(due) == microseconds(50));
    p.waited(due, microseconds(50));  // the limit itself is short enough
    CHECK(p.window(due) == microseconds(50));
    p.waited(due, microseconds(51));
    CHECK(p.window(due) == microseconds(0));  // the event came after the limit: sleep at once
    p.waited(due, std::chrono::seconds(2));
    CHECK(p.window(due) == microseconds(0));
    p.waited(due, std::chrono::nanoseconds(30'000));  // a short wait, even a sleeping one
    CHECK(p.window(due) == microseconds(50));
  }

  busy_poll_policy off(microseconds(0));
  CHECK(off.window(false) == microseconds(0));
  off.waited(false, microseconds(0));
  CHECK(off.window(false) == microseconds(0));
  CHECK(off.window(true) == microseconds(0));
}

TEST_CASE("busy_poll_policy judges waits for replies and for requests apart", "[event_loop]") {
  using std::chrono::microseconds;
  // Redis a millisecond away, the app quick to send its next request.
  busy_poll_policy p(microseconds(150));
  p.waited(true, microseconds(1000));
  CHECK(p.window(true) == microseconds(0));
  CHECK(p.window(false) == microseconds(150));
  for (int k = 0; k < 3; ++k) {
    p.waited(false, microseconds(20));
    CHECK(p.window(true) == microseconds(0));  // a short wait for the app opens no reply window
    p.waited(true, microseconds(1000));
    CHECK(p.window(false) == microseconds(150));
  }
  p.waited(true, microseconds(100));  // Redis close by again
  CHECK(p.window(true) == microseconds(150));
}

TEST_CASE("nap_policy naps after wake-ups that served several unpipelined L1 hits, and only then",
          "[event_loop]") {
  using std::chrono::microseconds;
  nap_policy p(microseconds(10));
  CHECK(p.length() == microseconds(10));
  // Counters at the wake-up: 100 requests, 7 upstream writes. The woken handler and a look's 3.
  auto woke = [&] {
    p.woke(100, 7);
    p.ran(1);
    p.ran(3);
  };
  woke();
  CHECK(p.nap(102, 7, 0));        // two clients' GETs, answered from L1
  CHECK(p.nap(108, 7, 0));        // 8 requests in 4 handlers: the limit
  CHECK_FALSE(p.nap(109, 7, 0));  // more per handler: pipelined clients
  CHECK_FALSE(p.nap(101, 7, 0));  // one request per wake-up: a lone client
  CHECK_FALSE(p.nap(100, 7, 0));  // no request at all (a timer, a reply's write)
  CHECK_FALSE(p.nap(102, 8, 0));  // a request went upstream: Redis sets the pace
  CHECK_FALSE(p.nap(102, 7, 1));  // an upstream reply is due (a blocking command, say)
  CHECK_FALSE(p.nap(102, 7, -1));

  // A new wake-up starts the count afresh.
  p.woke(102, 7);
  CHECK_FALSE(p.nap(104, 7, 0));  // no handler ran yet
  p.ran(1);
  CHECK(p.nap(104, 7, 0));
  p.woke(200, 9);
  p.ran(2);
  CHECK(p.nap(202, 9, 0));
  CHECK_FALSE(p.nap(202, 7, 0));  // the upstream writes' count moved (any way): not L1 alone

  nap_policy off(microseconds(0));
  off.woke(0, 0);
  off.ran(10);
  CHECK_FALSE(off.nap(5, 0, 0));
}

TEST_CASE("nap_policy naps three times as long while eight or more clients are active",
          "[event_loop]") {
  using namespace std::chrono_literals;
  using clock = nap_policy::clock;
  nap_policy p(10us);
  clock::time_point t{10s};
  // The first tick only starts a window: what came before it is not known.
  CHECK(p.tick(t, 50));
  CHECK(p.length() == 10us);
  CHECK_FALSE(p.tick(t += 999us, 50));  // within the window: counting goes on
  CHECK(p.length() == 10us);
  CHECK(p.tick(t += 1us, 8));  // 8 clients in the window just over: a crowd
  CHECK(p.length() == 30us);
  CHECK_FALSE(p.tick(t += 500us, 3));
  CHECK(p.length() == 30us);      // the crowd of the last whole window holds
  CHECK(p.tick(t += 1500us, 7));  // 7 in the next window (1.5 ms, not stretched too far)
  CHECK(p.length() == 10us);
  CHECK(p.tick(t += 1ms, 20));
  CHECK(p.length() == 30us);
  // A window the loop slept through is no crowd, however many clients came over its length.
  CHECK(p.tick(t += 2ms, 100));
  CHECK(p.length() == 10us);
  CHECK(p.tick(t += 1ms, 100));
  CHECK(p.length() == 30us);

  // The crowd lengthens naps; it does not decide whether the loop naps.
  p.woke(100, 7);
  p.ran(1);
  CHECK_FALSE(p.nap(101, 7, 0));  // one request per wake-up: still no nap
  CHECK(p.nap(102, 7, 0));
  CHECK_FALSE(p.nap(102, 8, 0));

  nap_policy off(0us);
  CHECK_FALSE(off.enabled());
  off.tick(t, 100);
  off.tick(t += 1ms, 100);
  CHECK(off.length() == 0us);
  off.woke(0, 0);
  off.ran(10);
  CHECK_FALSE(off.nap(5, 0, 0));
}

TEST_CASE("cpu_contention_policy stops polling while the loop waits for a CPU, backing off",
          "[event_loop]") {
  using namespace std::chrono_literals;
  using clock = cpu_contention_policy::clock;
  cpu_contention_policy p;
  clock::time_point t{10s};
  CHECK(p.polling_allowed(t));
  // Up to 1/8 of the time queued for a CPU: a core to spare, polling goes on.
  CHECK_FALSE(p.sampled(t += 10ms, 10ms, 1250us));
  CHECK(p.polling_allowed(t));
  CHECK_FALSE(p.sampled(t += 10ms, 10ms, 0ms));

  // More than that: off for 100 ms, then tried again.
  CHECK(p.sampled(t += 10ms, 10ms, 1300us));
  CHECK_FALSE(p.polling_allowed(t));
  CHECK_FALSE(p.polling_allowed(t + 99ms));
  CHECK(p.polling_allowed(t + 100ms));

  // Each retry that finds the cores still busy doubles the time off, up to 6.4 s.
  std::vector<clock::duration> offs;
  for (int k = 0; k < 9; ++k) {
    t += 1h;  // any time after the last stop ended
    REQUIRE(p.polling_allowed(t));
    REQUIRE(p.sampled(t += 10ms, 10ms, 5ms));
    clock::duration off = 0ms;
    while (!p.polling_allowed(t + off)) off += 1ms;
    offs.push_back(off);
  }
  CHECK(offs == std::vector<clock::duration>{200ms, 400ms, 800ms, 1600ms, 3200ms, 6400ms, 6400ms,
                                             6400ms, 6400ms});

  // A retry that finds a core to spare starts over at 100 ms.
  t += 1h;
  CHECK_FALSE(p.sampled(t += 10ms, 10ms, 0ms));
  CHECK(p.sampled(t += 10ms, 10ms, 10ms));
  CHECK_FALSE(p.polling_allowed(t + 99ms));
  CHECK(p.polling_allowed(t + 100ms));
}

// A loop held open by `work`, and a listener deferred at most once per turn, as the sidecar's
// listeners are: event() logs a handler's name and defers the listener, which logs "end".
struct once_per_turn {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::vector<std::string> log;
  std::shared_ptr<recorder> listener = std::make_shared<recorder>(log, "end");
  bool deferred = false;
  std::function<void()> at_end;  // also called when the listener is
  once_per_turn() {
    listener->then = [this] {
      deferred = false;
      if (at_end) at_end();
    };
  }
  void event(std::string name) {
    log.push_back(std::move(name));
    if (!deferred) REQUIRE(event_loop::defer(listener));
    deferred = true;
  }
};

TEST_CASE_METHOD(once_per_turn,
                 "a loop serves lone events one turn each and a burst after them in few turns",
                 "[event_loop]") {
  constexpr int lone = 24;
  constexpr int burst = 64;
  std::thread other([&] {
    // Events far apart: the loop sleeps between them.
    for (int i = 0; i < lone; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      asio::post(io, [&] { event("lone"); });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    // Then a burst, ready together: one handler makes them all ready at once.
    asio::post(io, [&] {
      for (int i = 0; i < burst; ++i) asio::post(io, [&] { event("burst"); });
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    asio::post(io, [&] { work.reset(); });
  });
  event_loop::run(io);
  other.join();
  REQUIRE(std::count(log.begin(), log.end(), "lone") == lone);
  REQUIRE(std::count(log.begin(), log.end(), "burst") == burst);
  // Every event's turn ended before the loop went on to sleep: the log ends with a turn's end.
  CHECK(log.back() == "end");
  const auto first_burst = std::find(log.begin(), log.end(), "burst");
  const auto burst_turns = std::count(first_burst, log.end(), "end");
  // As few turns as the bound on a turn's handlers allows.
  INFO("the burst took " << burst_turns << " turns");
  CHECK(static_cast<std::size_t>(burst_turns) ==
        (burst + turn_policy::max_handlers - 1) / turn_policy::max_handlers);
}

TEST_CASE_METHOD(once_per_turn,
                 "a turn ends after turn_policy::max_handlers handlers and the next starts at once",
                 "[event_loop]") {
  constexpr std::size_t ready = 2 * turn_policy::max_handlers + 3;
  std::size_t ran = 0;
  at_end = [&] {
    if (ran == ready) work.reset();
  };
  // All ready before the loop starts, each with something for the turn's end.
  for (std::size_t i = 0; i < ready; ++i)
    asio::post(io, [&] {
      ++ran;
      event("handler");
    });
  event_loop::run(io);
  REQUIRE(ran == ready);
  std::vector<std::string> want;
  for (std::size_t i = 0; i < ready; ++i) {
    want.push_back("handler");
    if ((i + 1) % turn_policy::max_handlers == 0 || i + 1 == ready) want.push_back("end");
  }
  CHECK(log == want);
}

TEST_CASE("the loop does not nap while events are ready: it looks first", "[event_loop]") {
  stats counters;
  asio::io_context io(1);
  auto work = asio::make_work_guard(io);
  // Due before the loop starts: an event the reactor has ready, for a look to find.
  steady_timer due(io, std::chrono::steady_clock::now() - std::chrono::seconds(1));
  bool fired = false;
  due.async_wait([&](error_code) {
    fired = true;
    io.stop();
  });
  // One handler that serves two clients from L1: what nap_policy naps after.
  asio::post(io, [&] { counters.requests += 2; });
  event_loop::run(io, std::chrono::microseconds::zero(), &counters, std::chrono::seconds(5));
  CHECK(fired);
  CHECK(counters.naps == 0);
}

TEST_CASE("a busy-polling loop serves events that come while it polls and while it sleeps",
          "[event_loop]") {
  stats counters;
  counters.inflight_requests = GENERATE(0, 1);  // which of the policy's windows is in use
  asio::io_context io(1);
  auto work = asio::make_work_guard(io);
  std::vector<std::string> log;
  auto listener = std::make_shared<recorder>(log, "turn ended");
  int turns = 0;
  listener->then = [&] {
    if (++turns == 3) work.reset();
  };
  auto event = [&](std::string name) {
    asio::post(io, [&, name] {
      log.push_back(name);
      REQUIRE(event_loop::defer(listener));
    });
  };
  // From another thread, as the kernel would: one event within the polling window, one long after
  // it (the loop has gone to sleep by then), and one soon after that.
  std::thread other([&] {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
    event("soon");
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    event("late");
    std::this_thread::sleep_for(std::chrono::microseconds(100));
    event("soon again");
  });
  steady_timer due(io, std::chrono::milliseconds(10));  // timers fire while the loop polls too
  due.async_wait([&](error_code ec) {
    CHECK_FALSE(ec);
    log.push_back("timer");
  });
  event_loop::run(io, std::chrono::microseconds(1000), &counters);
  other.join();
  CHECK(turns == 3);
  CHECK(counters.busy_poll_ns > 0);  // it polled before "soon" came, at least
  CHECK(log.back() == "turn ended");
  const std::vector<std::string> events = {"soon", "late", "soon again"};
  std::vector<std::string> seen;
  for (const auto& l : log)
    if (l != "turn ended" && l != "timer") seen.push_back(l);
  CHECK(seen == events);
  CHECK(std::count(log.begin(), log.end(), std::string("timer")) == 1);
}

TEST_CASE("a busy-polling loop ends when stopped or out of work while it polls", "[event_loop]") {
  SECTION("stopped") {
    asio::io_context io(1);
    auto work = asio::make_work_guard(io);
    std::thread other([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      io.stop();
    });
    event_loop::run(io, std::chrono::microseconds(1000));
    other.join();
    CHECK(io.stopped());
  }
  SECTION("out of work") {
    asio::io_context io(1);
    auto work = asio::make_work_guard(io);
    std::thread other([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      asio::post(io, [&] { work.reset(); });
    });
    event_loop::run(io, std::chrono::microseconds(1000));
    other.join();
    CHECK(io.stopped());
  }
}

}  // namespace
}  // namespace redis_sidecar
