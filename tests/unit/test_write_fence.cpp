// The write fence without I/O: which replies may fill L1, given the writes other connections sent
// or had answered while a request was in flight.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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

// Against a model that keeps every event: whatever the fence calls settled must be (no other
// connection's write to the key or flush since, and no hold on the key), with 40 keys sharing 64
// slots, three connections in phases where one writes most or all write evenly, and some
// requests in flight for long.
TEST_CASE("write_fence: never settles what a full record of the writes would not", "[fence]") {
  struct event {
    std::uint64_t clock;
    std::uint32_t conn;
    int key;  // -1: a flush
  };
  std::uint64_t state = 0x9e3779b97f4a7c15u;
  auto next = [&] {  // splitmix64
    std::uint64_t z = (state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
  };
  for (int run = 0; run < 20; ++run) {
    write_fence f(64, 0x5eed + static_cast<std::uint64_t>(run));
    std::vector<std::uint64_t> hashes;  // of "key:0" to "key:39"
    for (int k = 0; k < 40; ++k) hashes.push_back(f.hash(0, "key:" + std::to_string(k)));
    std::vector<event> events;
    std::vector<std::pair<int, std::uint32_t>> held;  // key, connection: holds not released yet
    const auto is_held = [&](int key) {
      return std::any_of(held.begin(), held.end(), [&](const auto& h) { return h.first == key; });
    };
    struct request {
      int key;
      std::uint32_t conn;
      std::uint64_t since;
    };
    std::vector<request> in_flight;
    std::vector<request> slow;
    const auto model_settled = [&](const request& q) {
      if (is_held(q.key)) return false;
      for (auto it = events.rbegin(); it != events.rend() && it->clock > q.since; ++it)
        if (it->conn != q.conn && (it->key == q.key || it->key == -1)) return false;
      return true;
    };
    int settled_count = 0;
    for (int step = 0; step < 60'000; ++step) {
      // Phases of a few thousand events: one connection writing most, or several evenly.
      const int phase = (step / 3000) % 4;
      const std::uint64_t r = next();
      std::uint32_t conn = static_cast<std::uint32_t>(r % 3);
      if (phase < 3 && (r >> 8) % 16 != 0) conn = static_cast<std::uint32_t>(phase);
      const int key = static_cast<int>((r >> 16) % 40);
      const auto h = hashes[key];
      switch ((r >> 24) % 16) {
        case 0: {  // a flush
          f.touched_all(conn);
          events.push_back({f.clock(), conn, -1});
          break;
        }
        case 1: {  // a hold, or the release of one (each an event)
          if ((r >> 32) % 2 == 0 || held.empty()) {
            f.hold(h, conn);
            held.push_back({key, conn});
            events.push_back({f.clock(), conn, key});
          } else {
            const auto [k, c] = held.back();
            held.pop_back();
            f.release(hashes[k], c);
            events.push_back({f.clock(), c, k});
          }
          break;
        }
        case 2:
        case 3:
        case 4:
        case 5: {  // a request is sent (a write is an event)
          // One in 32 stays in flight for long.
          ((r >> 56) % 32 == 0 ? slow : in_flight).push_back({key, conn, f.clock()});
          if ((r >> 32) % 2 == 0) {
            f.touched(h, conn);
            events.push_back({f.clock(), conn, key});
          }
          break;
        }
        default: {  // a reply: a read's settled(), or a write's settle()
          auto& from = (r >> 56) % 64 == 0 && !slow.empty() ? slow : in_flight;
          if (from.empty()) break;
          const std::size_t i = (r >> 40) % from.size();
          const request q = from[i];
          from.erase(from.begin() + static_cast<std::ptrdiff_t>(i));
          const auto qh = hashes[q.key];
          const bool expected = model_settled(q);
          bool got = false;
          if ((r >> 48) % 2 == 0) {
            got = f.settled(qh, q.conn, q.since);
          } else {
            got = f.settle(qh, q.conn, q.since);
            events.push_back({f.clock(), q.conn, q.key});
          }
          if (got && !expected) FAIL("settled a raced reply, run " << run << " step " << step);
          if (is_held(q.key)) CHECK(f.held(qh));
          settled_count += got ? 1 : 0;
          break;
        }
      }
    }
    CHECK(settled_count > 1000);  // it does settle what it can
  }
}
