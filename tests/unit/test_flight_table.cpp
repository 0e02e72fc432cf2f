#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <string>

#include "proxy/tier/flight_table.hpp"

using redis_sidecar::flight_table;

namespace {

std::uint64_t open_key(flight_table& t, const std::string& key) {
  return t.open(key, flight_table::hash(key));
}

std::uint64_t joinable(const flight_table& t, const std::string& key) {
  return t.joinable(key, flight_table::hash(key));
}

}  // namespace

TEST_CASE("flight_table: reads are numbered from 1 in order and found until taken") {
  flight_table t;
  CHECK(t.empty());
  CHECK(t.find(0) == nullptr);
  const auto a = open_key(t, "a");
  const auto b = open_key(t, "b");
  CHECK(a == 1);
  CHECK(b == 2);
  CHECK(t.next() == 3);
  CHECK(t.size() == 2);
  REQUIRE(t.find(a) != nullptr);
  CHECK(t.find(a)->key == "a");
  CHECK(t.find(b)->key == "b");
  CHECK(t.find(3) == nullptr);

  auto fb = t.take(b);
  REQUIRE(fb);
  CHECK(fb->key == "b");
  CHECK(t.find(b) == nullptr);
  CHECK(t.take(b) == nullptr);  // taken once
  CHECK(t.size() == 1);
  CHECK(t.reads() == std::vector<std::uint64_t>{a});
}

TEST_CASE("flight_table: a key has one joinable read, replaced by join_to and ended by take") {
  flight_table t;
  const auto a1 = open_key(t, "key:a");
  CHECK(joinable(t, "key:a") == 0);  // not joinable until asked
  t.join_to(a1);
  CHECK(joinable(t, "key:a") == a1);
  CHECK(joinable(t, "key:b") == 0);

  const auto a2 = open_key(t, "key:a");
  t.join_to(a2);  // a newer read of the same key takes its place
  CHECK(joinable(t, "key:a") == a2);

  bool was = true;
  auto f1 = t.take(a1, &was);
  CHECK_FALSE(was);  // the older read was no longer the key's joinable one
  CHECK(joinable(t, "key:a") == a2);
  auto f2 = t.take(a2, &was);
  CHECK(was);
  CHECK(joinable(t, "key:a") == 0);
}

TEST_CASE("flight_table: unjoin and unjoin_all leave the reads in flight") {
  flight_table t;
  const auto a = open_key(t, "a");
  const auto b = open_key(t, "b");
  t.join_to(a);
  t.join_to(b);
  CHECK(t.unjoin("a", flight_table::hash("a")) == a);
  CHECK(t.unjoin("a", flight_table::hash("a")) == 0);
  CHECK(joinable(t, "b") == b);
  t.unjoin_all();
  CHECK(joinable(t, "b") == 0);
  CHECK(t.size() == 2);
  CHECK(t.find(a) != nullptr);
}

TEST_CASE("flight_table: recycled flights come back empty, with their storage") {
  flight_table t;
  const auto a = open_key(t, "a key longer than the small-string buffer");
  t.find(a)->waiters.push_back({nullptr, 7, 3});
  t.find(a)->invalidated = true;
  t.find(a)->alone = true;
  t.find(a)->batch = 5;
  t.find(a)->error = "-NOPERM no\r\n";
  auto f = t.take(a);
  const flight_table::flight* storage = f.get();
  t.recycle(std::move(f));

  const auto b = open_key(t, "b");
  flight_table::flight* g = t.find(b);
  CHECK(g == storage);
  CHECK(g->key == "b");
  CHECK(g->hash == flight_table::hash("b"));
  CHECK(g->waiters.empty());
  CHECK_FALSE(g->invalidated);
  CHECK_FALSE(g->alone);
  CHECK(g->batch == 0);
  CHECK(g->error.empty());
}

TEST_CASE("flight_table: reopen files a taken flight under a new number") {
  flight_table t;
  const auto a = open_key(t, "a");
  t.join_to(a);
  bool was = false;
  auto f = t.take(a, &was);
  CHECK(was);
  const auto again = t.reopen(std::move(f));
  CHECK(again == a + 1);
  CHECK(joinable(t, "a") == 0);
  t.join_to(again);
  CHECK(joinable(t, "a") == again);
  CHECK(t.find(again)->key == "a");
}

TEST_CASE("flight_table: thousands in flight, answered out of order") {
  flight_table t;
  std::vector<std::uint64_t> reads;
  for (int i = 0; i < 5000; ++i) {
    reads.push_back(open_key(t, "key:" + std::to_string(i)));
    t.join_to(reads.back());
  }
  // The oldest read stays in flight the whole time: the ring must span all of them.
  for (int i = 4999; i >= 1; i -= 2) t.recycle(t.take(reads[i]));
  for (int i = 0; i < 5000; ++i) {
    const std::string key = "key:" + std::to_string(i);
    if (i % 2 == 1) {
      CHECK(t.find(reads[i]) == nullptr);
      CHECK(joinable(t, key) == 0);
    } else {
      REQUIRE(t.find(reads[i]) != nullptr);
      CHECK(t.find(reads[i])->key == key);
      CHECK(joinable(t, key) == reads[i]);
    }
  }
  for (int i = 0; i < 5000; i += 2) t.recycle(t.take(reads[i]));
  CHECK(t.empty());
  CHECK(t.reads().empty());
  // Numbers go on after the table shrank back.
  CHECK(open_key(t, "x") == 5001);
}

TEST_CASE("flight_table: the ring stays as long as the reads in flight span") {
  flight_table t;
  std::vector<std::uint64_t> window;
  for (int i = 0; i < 100000; ++i) {
    window.push_back(open_key(t, "key:" + std::to_string(i % 1000)));
    if (window.size() > 10) {
      t.recycle(t.take(window.front()));
      window.erase(window.begin());
    }
  }
  CHECK(t.size() == 10);
  CHECK(t.ring_length() <= 64);
  // One read held back makes the ring span every read since; answering it lets the ring go back.
  const auto held = open_key(t, "held");
  for (int i = 0; i < 3000; ++i) t.recycle(t.take(open_key(t, "k")));
  CHECK(t.ring_length() >= 3000);
  for (const auto read : t.reads()) t.recycle(t.take(read));
  CHECK(t.find(held) == nullptr);
  CHECK(t.empty());
  CHECK(t.ring_length() == 64);
}

// Random operations against a model, with hashes that collide on purpose (the caller supplies the
// hash), so the index's probe runs, backward-shift deletion and growth are exercised; every so
// often the table is drained, so it also shrinks back.
TEST_CASE("flight_table: random operations agree with a model") {
  constexpr int keys = 400;  // more than the first index holds: it grows under collisions
  for (const std::size_t buckets : {std::size_t{1}, std::size_t{7}, std::size_t{0}}) {
    flight_table t;
    std::map<std::uint64_t, std::string> live;    // read -> key
    std::map<std::string, std::uint64_t> joined;  // key -> joinable read
    std::vector<flight_table::flight_ptr> taken;
    std::mt19937 rng(static_cast<unsigned>(buckets));
    const auto hash_of = [&](const std::string& k) {  // buckets 0: the real hash
      return buckets == 0 ? flight_table::hash(k) : flight_table::hash(k) % buckets;
    };
    const auto take = [&](std::map<std::uint64_t, std::string>::iterator it) {
      bool was = false;
      auto f = t.take(it->first, &was);
      REQUIRE(f);
      CHECK(f->key == it->second);
      const auto j = joined.find(it->second);
      const bool model_was = j != joined.end() && j->second == it->first;
      CHECK(was == model_was);
      if (model_was) joined.erase(j);
      live.erase(it);
      return f;
    };
    for (int step = 0; step < 30000; ++step) {
      const std::string key = "k" + std::to_string(rng() % keys);
      const std::size_t h = hash_of(key);
      switch (rng() % 6) {
        case 0:
        case 1: {
          const auto read = t.open(key, h);
          live[read] = key;
          if (rng() % 2 == 0) {
            t.join_to(read);
            joined[key] = read;
          }
          break;
        }
        case 2: {
          if (live.empty()) break;
          auto it = live.begin();
          std::advance(it, static_cast<long>(rng() % live.size()));
          auto f = take(it);
          if (rng() % 3 == 0)
            taken.push_back(std::move(f));
          else
            t.recycle(std::move(f));
          break;
        }
        case 3: {
          const auto read = t.unjoin(key, h);
          const auto j = joined.find(key);
          CHECK(read == (j == joined.end() ? 0 : j->second));
          if (j != joined.end()) joined.erase(j);
          break;
        }
        case 4: {
          if (taken.empty()) break;
          const std::string k = taken.back()->key;
          const auto read = t.reopen(std::move(taken.back()));
          taken.pop_back();
          live[read] = k;
          break;
        }
        default:
          if (rng() % 200 == 0) {
            t.unjoin_all();
            joined.clear();
          }
          break;
      }
      if (step % 5000 == 4999) {  // drain, oldest first
        while (!live.empty()) t.recycle(take(live.begin()));
        CHECK(t.empty());
      }
      if (step % 97 == 0) {
        REQUIRE(t.size() == live.size());
        for (int k = 0; k < keys; ++k) {
          const std::string name = "k" + std::to_string(k);
          const auto j = joined.find(name);
          CHECK(t.joinable(name, hash_of(name)) == (j == joined.end() ? 0 : j->second));
        }
        for (const auto& [read, k] : live) {
          REQUIRE(t.find(read) != nullptr);
          CHECK(t.find(read)->key == k);
        }
      }
    }
  }
}
