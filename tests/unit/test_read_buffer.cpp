// read_buffer: grows keeping what it was told to keep, never shrinks, lets its memory go.
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

}  // namespace redis_sidecar
