// write_hold_policy: a small write waits while the previous one is unanswered, only where the
// upstream's measured round trip is short; the round trip is the floor of recent windows.
#include "proxy/upstream/write_hold.hpp"

#include <catch2/catch.hpp>

#include <chrono>

namespace redis_sidecar {
namespace {

using std::chrono::microseconds;
using clock = write_hold_policy::clock;

// One measured round trip of `rtt`: a write alone, then the read that answers it.
void round_trip(write_hold_policy& p, clock::time_point& now, microseconds rtt) {
  REQUIRE(p.measuring());
  p.wrote_alone(now);
  now += rtt;
  p.answered(now);
}

}  // namespace

TEST_CASE("write_hold_policy holds nothing until a round trip is measured", "[write_hold]") {
  write_hold_policy p(microseconds(200));
  CHECK(p.rtt_floor() == clock::duration::max());
  CHECK_FALSE(p.hold(1, 4));
  clock::time_point now{};
  round_trip(p, now, microseconds(40));
  CHECK(p.rtt_floor() == microseconds(40));
  CHECK(p.hold(1, 4));
}

TEST_CASE("write_hold_policy holds a small write only behind a batch of unanswered requests",
          "[write_hold]") {
  write_hold_policy p(microseconds(200));
  clock::time_point now{};
  round_trip(p, now, microseconds(40));
  constexpr std::size_t min = write_hold_policy::min_unanswered;
  CHECK(p.hold(1, min));
  CHECK(p.hold(1, 50));
  CHECK(p.hold(write_hold_policy::max_held_requests - 1, min));
  CHECK_FALSE(p.hold(write_hold_policy::max_held_requests, min));  // large enough: goes at once
  // Behind fewer, holding would take turns with the few other clients: two clients would run one
  // request at a time instead of two.
  CHECK_FALSE(p.hold(1, min - 1));
  CHECK_FALSE(p.hold(1, 0));    // nothing to wait for
  CHECK_FALSE(p.hold(0, min));  // nothing to write
}

TEST_CASE("write_hold_policy never holds where the upstream is farther than the limit, or at 0",
          "[write_hold]") {
  clock::time_point now{};
  write_hold_policy far(microseconds(200));
  round_trip(far, now, microseconds(1000));  // a Redis a millisecond away
  CHECK_FALSE(far.hold(1, 8));
  round_trip(far, now, microseconds(200));  // the limit itself is not under it
  CHECK_FALSE(far.hold(1, 8));

  write_hold_policy off(microseconds(0));
  CHECK_FALSE(off.measuring());  // no clock reads when it is off
  CHECK_FALSE(off.hold(1, 8));
}

TEST_CASE("write_hold_policy measures only a write sent alone, from it to the first reply read",
          "[write_hold]") {
  write_hold_policy p(microseconds(200));
  clock::time_point now{};
  p.wrote_alone(now);
  CHECK_FALSE(p.measuring());  // one measurement at a time: later writes are not timed
  now += microseconds(30);
  p.answered(now);  // the measured write's first reply
  CHECK(p.rtt_floor() == microseconds(30));
  CHECK(p.measuring());
  now += microseconds(5);
  p.answered(now);  // a read with nothing measured out: no sample
  CHECK(p.rtt_floor() == microseconds(30));

  // A stream lost before the reply: that write is never answered, and measures nothing.
  p.wrote_alone(now);
  p.stream_lost();
  CHECK(p.measuring());
  now += microseconds(5000);
  p.answered(now);
  CHECK(p.rtt_floor() == microseconds(30));
}

TEST_CASE("write_hold_policy's floor is the least of the last full window and the current one",
          "[write_hold]") {
  write_hold_policy p(microseconds(200));
  clock::time_point now{};
  // A busy Redis: most round trips queue, a few do not; the floor is the few.
  for (unsigned i = 0; i < write_hold_policy::window_samples; ++i)
    round_trip(p, now, microseconds(i % 16 == 0 ? 35 : 600));
  CHECK(p.rtt_floor() == microseconds(35));
  CHECK(p.hold(2, 8));

  // The upstream moved away (a failover to another zone): every round trip is 900 µs now. The
  // floor keeps the last full window's least until a full window without it ends.
  for (unsigned i = 0; i + 1 < write_hold_policy::window_samples; ++i)
    round_trip(p, now, microseconds(900));
  CHECK(p.rtt_floor() == microseconds(35));
  round_trip(p, now, microseconds(900));
  CHECK(p.rtt_floor() == microseconds(900));
  CHECK_FALSE(p.hold(2, 8));

  // And back: a single short round trip counts at once.
  round_trip(p, now, microseconds(50));
  CHECK(p.rtt_floor() == microseconds(50));
  CHECK(p.hold(2, 8));
}

}  // namespace redis_sidecar
