// Tests of cache::write_journal: FIFO order, the byte bound (exact fit, one byte over), refused
// pushes changing nothing, and bytes() returning to zero.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "cache/write_journal.hpp"

using namespace std::string_literals;
using redis_sidecar::cache::write_journal;

namespace {

constexpr std::size_t overhead = write_journal::record_overhead;

const std::string set_a = "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n";
const std::string del_b = "*2\r\n$3\r\nDEL\r\n$1\r\nb\r\n";
const std::string binary = "*3\r\n$3\r\nSET\r\n$2\r\n\0\n\r\n$1\r\n\0\r\n"s;

}  // namespace

TEST_CASE("write_journal keeps writes in order", "[cache]") {
  write_journal j(1 << 20);
  CHECK(j.empty());
  REQUIRE(j.push(0, set_a));
  REQUIRE(j.push(3, binary));
  REQUIRE(j.push(0, del_b));
  CHECK(j.size() == 3);
  CHECK(j.bytes() == set_a.size() + binary.size() + del_b.size() + 3 * overhead);

  const std::vector<std::pair<int, std::string>> expected = {{0, set_a}, {3, binary}, {0, del_b}};
  for (const auto& [db, frame] : expected) {
    REQUIRE_FALSE(j.empty());
    CHECK(j.front().db == db);
    CHECK(j.front().frame == frame);
    j.pop_front();
  }
  CHECK(j.empty());
  CHECK(j.bytes() == 0);
}

TEST_CASE("write_journal bounds bytes and refuses without dropping", "[cache]") {
  struct row {
    const char* name;
    std::size_t max_bytes;
    std::vector<std::size_t> frames;  // sizes pushed in order
    std::vector<bool> accepted;
  };
  const row rows[] = {
      {"exact fit", 2 * (10 + overhead), {10, 10, 1}, {true, true, false}},
      {"one byte over", 2 * (10 + overhead) - 1, {10, 10}, {true, false}},
      {"a refused large frame does not block a smaller one",
       10 + 2 * overhead + 5,
       {10, 6, 5, 0},
       {true, false, true, false}},
      {"smaller than one record", overhead - 1, {0}, {false}},
      {"empty frames still charge the overhead", 2 * overhead, {0, 0, 0}, {true, true, false}},
  };
  for (const auto& r : rows) {
    SECTION(r.name) {
      write_journal j(r.max_bytes);
      std::size_t expected_bytes = 0;
      std::size_t expected_size = 0;
      for (std::size_t i = 0; i < r.frames.size(); ++i) {
        INFO("push " << i);
        const std::string frame(r.frames[i], static_cast<char>('a' + i));
        REQUIRE(j.push(static_cast<int>(i), frame) == r.accepted[i]);
        if (r.accepted[i]) {
          expected_bytes += r.frames[i] + overhead;
          ++expected_size;
        }
        CHECK(j.bytes() == expected_bytes);
        CHECK(j.size() == expected_size);
        CHECK(j.bytes() <= j.max_bytes());
      }
      if (!j.empty()) CHECK(j.front().frame == std::string(r.frames[0], 'a'));
    }
  }
}

TEST_CASE("write_journal frees room as it is replayed and on clear", "[cache]") {
  write_journal j(2 * (set_a.size() + overhead));
  REQUIRE(j.push(0, set_a));
  REQUIRE(j.push(1, set_a));
  REQUIRE_FALSE(j.push(2, set_a));
  j.pop_front();
  REQUIRE(j.push(2, set_a));
  CHECK(j.front().db == 1);
  j.clear();
  CHECK(j.empty());
  CHECK(j.bytes() == 0);
  REQUIRE(j.push(4, del_b));
  CHECK(j.front().db == 4);
}

TEST_CASE("write_journal drops a record behind older ones", "[cache]") {
  write_journal j(1 << 20);
  REQUIRE(j.push(0, set_a));
  REQUIRE(j.push(1, del_b));
  REQUIRE(j.push(2, set_a));
  const std::size_t full = j.bytes();
  j.erase(1);
  CHECK(j.size() == 2);
  CHECK(j.at(0).db == 0);
  CHECK(j.at(1).db == 2);
  CHECK(j.bytes() == full - del_b.size() - overhead);
}
