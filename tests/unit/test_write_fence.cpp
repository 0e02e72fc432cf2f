// The write fence without I/O: which replies may fill L1, given the writes other connections sent
// or had answered while a request was in flight.
#include <catch2/catch.hpp>

#include <string>

#include "cache/key_hash.hpp"
#include "proxy/tier/write_fence.hpp"

using redis_sidecar::write_fence;

TEST_CASE("write_fence: a key nobody wrote to is settled", "[fence]") {
  write_fence f;
  CHECK(f.clock() == 0);
  CHECK(f.settled(f.hash(0, "k"), 1, 0));
  CHECK(f.settled(f.hash(0, "k"), 2, f.clock()));
}

TEST_CASE("write_fence: another connection's write since the request unsettles it", "[fence]") {
  write_fence f;
  const auto since = f.clock();  // a GET of k goes out on connection 1
  f.touched(f.hash(0, "k"), 2);  // a SET of k goes out on connection 2
  CHECK_FALSE(f.settled(f.hash(0, "k"), 1, since));
  CHECK(f.settled(f.hash(0, "k"), 2, since));      // connection 2 itself orders its requests
  CHECK(f.settled(f.hash(0, "k"), 1, f.clock()));  // a request sent after it saw it go out first...
  const auto later = f.clock();
  f.touched(f.hash(0, "k"),
            2);  // ...but not after it came back: it may have run after that request
  CHECK_FALSE(f.settled(f.hash(0, "k"), 1, later));
  CHECK(f.settled(f.hash(0, "other"), 1, since));
  CHECK(f.settled(f.hash(1, "k"), 1, since));  // the same name in another db is another key
}

TEST_CASE("write_fence: a connection's own events do not hide another's", "[fence]") {
  write_fence f;
  const auto since = f.clock();
  f.touched(f.hash(0, "k"), 2);  // connection 2's write goes out
  f.touched(f.hash(0, "k"),
            1);  // then one of connection 1 (the slot's last event is connection 1's)
  f.touched(f.hash(0, "k"), 1);
  CHECK_FALSE(f.settled(f.hash(0, "k"), 1, since));  // connection 2's event is still since `since`
  CHECK_FALSE(f.settled(f.hash(0, "k"), 2, since));
  const auto after = f.clock();
  f.touched(f.hash(0, "k"), 1);
  CHECK(f.settled(f.hash(0, "k"), 1, after));
  CHECK_FALSE(f.settled(f.hash(0, "k"), 2, after));
  // Three connections in turn: each sees the other two.
  const auto t = f.clock();
  f.touched(f.hash(0, "k"), 3);
  f.touched(f.hash(0, "k"), 2);
  CHECK_FALSE(f.settled(f.hash(0, "k"), 3, t));
  CHECK_FALSE(f.settled(f.hash(0, "k"), 1, t));
  CHECK(f.settled(f.hash(0, "k"), 2, f.clock()));
}

TEST_CASE("write_fence: a flush unsettles every key but for its own connection", "[fence]") {
  write_fence f;
  const auto since = f.clock();
  f.touched_all(3);
  CHECK_FALSE(f.settled(f.hash(0, "a"), 1, since));
  CHECK_FALSE(f.settled(f.hash(5, "b"), 2, since));
  CHECK(f.settled(f.hash(0, "a"), 3, since));
  CHECK(f.settled(f.hash(0, "a"), 1, f.clock()));
}

TEST_CASE("write_fence: keys that share a slot only look raced", "[fence]") {
  write_fence f(1);  // one slot: every key collides
  const auto since = f.clock();
  f.touched(f.hash(0, "a"), 2);
  CHECK_FALSE(f.settled(f.hash(0, "b"), 1, since));  // conservative: b may have been written
  CHECK(f.settled(f.hash(0, "b"), 1, f.clock()));
  // A larger table keeps most keys apart.
  write_fence big(1024);
  const auto t = big.clock();
  big.touched(big.hash(0, "written"), 2);
  int raced = 0;
  for (int i = 0; i < 1000; ++i)
    raced += big.settled(big.hash(0, "key:" + std::to_string(i)), 1, t) ? 0 : 1;
  CHECK(raced < 10);
}

TEST_CASE("write_fence: a table seeded like another hashes keys as it does", "[fence]") {
  // The cache tier builds its fence with L1's seed and hashes each key once for both.
  const std::uint64_t seed = 0x5eed;
  write_fence f(1024, seed);
  CHECK(f.hash(3, "k") == redis_sidecar::cache::hash_key(3, "k", seed));
  CHECK(f.hash(3, "k") != f.hash(4, "k"));
  // Keys whose hashes share their low 10 bits (one home slot in an L1 index of 1024 slots) still
  // spread over the fence's 1024 slots: it takes other bits.
  const std::uint64_t written = f.hash(0, "written");
  const auto t = f.clock();
  f.touched(written, 2);
  int same_home = 0;
  int raced = 0;
  for (int i = 0; same_home < 200 && i < 10'000'000; ++i) {
    const std::uint64_t h = f.hash(0, "key:" + std::to_string(i));
    if ((h & 1023) != (written & 1023)) continue;
    ++same_home;
    raced += f.settled(h, 1, t) ? 0 : 1;
  }
  REQUIRE(same_home == 200);
  CHECK(raced < 10);
}

TEST_CASE("write_fence: a held key is settled for nobody until released", "[fence]") {
  write_fence f;
  f.hold(f.hash(0, "k"), 1);
  const auto after = f.clock();
  CHECK_FALSE(
      f.settled(f.hash(0, "k"), 1, after));  // not even for its own connection (a new stream)
  CHECK_FALSE(f.settled(f.hash(0, "k"), 2, after));
  CHECK(f.settled(f.hash(0, "other"), 2, after));  // other keys are not held
  f.release(f.hash(0, "k"), 1);
  CHECK_FALSE(f.settled(f.hash(0, "k"), 2, after));  // the release is an event: in flight across it
  CHECK(f.settled(f.hash(0, "k"), 2, f.clock()));
  f.release(f.hash(0, "k"), 1);  // once too often: no harm
  CHECK(f.settled(f.hash(0, "k"), 2, f.clock()));
}
