// read_buffer: grows keeping what it was told to keep, never shrinks, lets its memory go; make_room
// resets, compacts or grows as the readers need.
#include "proxy/read_buffer.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <string_view>

namespace redis_sidecar {

TEST_CASE("read_buffer grows keeping its first bytes, and never shrinks", "[read_buffer]") {
  read_buffer b;
  CHECK(b.size() == 0);
  b.grow(16, 0);
  REQUIRE(b.size() == 16);
  std::memcpy(b.data(), "partial frame...", 16);
  b.grow(64, 13);  // a partial frame of 13 bytes is kept
  REQUIRE(b.size() == 64);
  CHECK(std::string_view(b.data(), 13) == "partial frame");
  const char* before = b.data();
  b.grow(32, 64);  // smaller: nothing changes
  CHECK(b.size() == 64);
  CHECK(b.data() == before);
  b.grow(128, 1000);  // keep is capped at what the buffer holds
  CHECK(b.size() == 128);
  CHECK(std::string_view(b.data(), 13) == "partial frame");
  b.release();
  CHECK(b.size() == 0);
  CHECK(b.data() == nullptr);
  b.grow(8, 0);
  CHECK(b.size() == 8);
}

TEST_CASE("read_buffer::make_room resets, compacts or grows, in that order", "[read_buffer]") {
  read_buffer b;
  std::size_t start = 0, end = 0;

  SECTION("an empty buffer grows to the minimum size") {
    b.make_room(start, end, 100, 256, 1024);
    CHECK(b.size() == 256);
    CHECK(start == 0);
    CHECK(end == 0);
  }

  SECTION("with nothing unread both offsets go back to the front, the memory stays") {
    b.grow(256, 0);
    const char* before = b.data();
    start = end = 200;
    b.make_room(start, end, 100, 256, 1024);
    CHECK(start == 0);
    CHECK(end == 0);
    CHECK(b.size() == 256);
    CHECK(b.data() == before);
  }

  SECTION("with nothing unread a buffer grown past max_kept is let go, then grown afresh") {
    b.grow(4096, 0);
    start = end = 10;
    b.make_room(start, end, 100, 256, 1024);
    CHECK(start == 0);
    CHECK(end == 0);
    CHECK(b.size() == 256);
  }

  // A partial frame of 10 bytes, unread at offset `at` of a 256-byte buffer; make_room(room) must
  // leave it, intact, at offset `kept_at`, without reallocating.
  const auto partial_frame_stays = [&](std::size_t at, std::size_t room, std::size_t kept_at) {
    const std::string_view frame = "*1\r\n$4\r\nPI";
    b.grow(256, 0);
    std::memcpy(b.data() + at, frame.data(), frame.size());
    start = at;
    end = at + frame.size();
    const char* before = b.data();
    b.make_room(start, end, room, 256, 1024);
    CHECK(start == kept_at);
    CHECK(end == kept_at + frame.size());
    CHECK(b.data() == before);
    CHECK(std::string_view(b.data() + start, end - start) == frame);
  };

  SECTION("unread bytes stay where they are while the room behind them is enough") {
    partial_frame_stays(50, 196, 50);
  }

  SECTION("unread bytes move to the front when the room behind them runs short") {
    partial_frame_stays(200, 100, 0);
  }

  SECTION("the buffer doubles, keeping the unread bytes, when moving them is not enough") {
    b.grow(256, 0);
    std::memset(b.data(), 'x', 256);
    std::memcpy(b.data() + 6, "$5\r\nhel", 7);
    start = 6;
    end = 250;  // 244 unread bytes: 12 of room after moving, 100 asked for
    b.make_room(start, end, 100, 256, 1024);
    CHECK(b.size() == 512);
    CHECK(start == 0);
    CHECK(end == 244);
    CHECK(std::string_view(b.data(), 7) == "$5\r\nhel");
    CHECK(b.data()[243] == 'x');
  }
}

}  // namespace redis_sidecar
