// Tests of resp::detail's header-line primitives. The fast path (quick_header) must never disagree
// with the general path (find_crlf + parse_decimal): for every header it accepts, the general path
// accepts it too with the same value and line end, and it declines whatever is malformed, partial
// or over a limit. Checked on a table of tricky headers, on every prefix of each, under several
// line limits, and on generated numbers of every length.
#include <catch2/catch.hpp>

#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/resp/detail/line.hpp"

using namespace std::string_literals;
using redis_sidecar::resp::detail::find_crlf;
using redis_sidecar::resp::detail::line_result;
using redis_sidecar::resp::detail::parse_decimal;
using redis_sidecar::resp::detail::quick_header;

namespace {

struct general_result {
  bool ok = false;  // a complete line holding a valid decimal
  std::int64_t value = 0;
  std::size_t cr = 0;
};

general_result general(const std::string& data, std::size_t start, std::size_t max_line) {
  general_result r;
  std::size_t scan = start;
  if (find_crlf(data, start, scan, max_line, r.cr) != line_result::found) return r;
  r.ok = parse_decimal(std::string_view(data).substr(start + 1, r.cr - start - 1), r.value);
  return r;
}

// quick_header's verdict on `data` at `start` agrees with the general path's.
void check_agrees(const std::string& data, std::size_t start, std::size_t max_line) {
  std::int64_t value = -42;
  std::size_t cr = 12345;
  const bool quick = quick_header(data, start, max_line, value, cr);
  const general_result slow = general(data, start, max_line);
  INFO("data=" << data << " start=" << start << " max_line=" << max_line);
  if (quick) {
    REQUIRE(slow.ok);
    REQUIRE(value == slow.value);
    REQUIRE(cr == slow.cr);
  } else {
    REQUIRE(value == -42);  // declined: nothing changed
    REQUIRE(cr == 12345);
  }
}

// Appends the parts (g++ 12 warns falsely, -Wrestrict, on chains of std::string operator+).
std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (const auto p : parts) out.append(p);
  return out;
}

}  // namespace

TEST_CASE("quick_header takes the common headers", "[resp][line]") {
  std::int64_t v = 0;
  std::size_t cr = 0;
  REQUIRE(quick_header("*2\r\n$3\r\n", 0, 64, v, cr));
  CHECK(v == 2);
  CHECK(cr == 2);
  REQUIRE(quick_header("*2\r\n$3\r\nGET\r\n", 4, 64, v, cr));
  CHECK(v == 3);
  CHECK(cr == 6);
  REQUIRE(quick_header("$0\r\n\r\n", 0, 64, v, cr));
  CHECK(v == 0);
  REQUIRE(quick_header("$999999999999999999\r\n", 0, 64, v, cr));  // 18 digits
  CHECK(v == 999999999999999999);
}

TEST_CASE("quick_header declines what the general path must decide", "[resp][line]") {
  const std::vector<std::string> declined = {
      "$",
      "$1",
      "$1\r",
      "$\r\n",
      "$-1\r\n",
      "*-1\r\n",
      "$01\r\n",
      "$00\r\n",
      "$+1\r\n",
      "$1 \r\n",
      "$1x\r\n",
      "$1\n",
      "$1\r\r\n",
      "$ 1\r\n",
      "$1000000000000000000\r\n",
      "$9223372036854775807\r\n",
      "$99999999999999999999\r\n",
      "$1\rx",
  };
  for (const auto& d : declined) {
    std::int64_t v = -7;
    std::size_t cr = 99;
    INFO(d);
    CHECK_FALSE(quick_header(d, 0, 64, v, cr));
    CHECK(v == -7);
    CHECK(cr == 99);
  }
  // The line limit counts the type byte and the digits, as find_crlf does.
  std::int64_t v = 0;
  std::size_t cr = 0;
  CHECK(quick_header("$12\r\n", 0, 3, v, cr));
  CHECK_FALSE(quick_header("$123\r\n", 0, 3, v, cr));
  CHECK_FALSE(quick_header("$1\r\n", 0, 1, v, cr));
}

TEST_CASE("quick_header agrees with find_crlf and parse_decimal", "[resp][line]") {
  const std::vector<std::string> headers = {
      "*2\r\n",
      "$64\r\n",
      "$0\r\n",
      "*0\r\n",
      "*-1\r\n",
      "$-1\r\n",
      "$01\r\n",
      "$-0\r\n",
      "$abc\r\n",
      "$12a\r\n",
      "$\r\n",
      "$1\r\r\n",
      "$1\n\r\n",
      ":12\r\n",
      "$1\0\r\n"s,
      "$536870912\r\n",
      "*2147483647\r\n",
      "$999999999999999999\r\n",
      "$1000000000000000000\r\n",
      "$9223372036854775808\r\n",
  };
  for (const std::size_t max_line : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{5},
                                     std::size_t{19}, std::size_t{64 * 1024}}) {
    for (const auto& h : headers) {
      const std::string framed = concat({"xx", h, "$3\r\nGET\r\n"});
      for (std::size_t len = 3; len <= framed.size(); ++len)  // every prefix, as reads arrive
        check_agrees(framed.substr(0, len), 2, max_line);
    }
  }
}

TEST_CASE("quick_header agrees on generated numbers of every length", "[resp][line]") {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const int digits = 1 + static_cast<int>(rng() % 21);
    std::string n(rng() % 8 == 0 ? 1 : 0, '-');
    for (int d = 0; d < digits; ++d) n.push_back(static_cast<char>('0' + rng() % 10));
    check_agrees(concat({"$", n, "\r\n"}), 0, 64);
    check_agrees(concat({"*", n, "\r\n"}), 0, 16);
  }
}
