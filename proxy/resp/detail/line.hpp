// line: the header-line primitives both framers share (request_parser, reply_parser): finding the
// "\r\n" that ends a line under a length limit, Redis' strict decimal parsing, and a fast path that
// does both in one pass for the header every frame starts with ("*2\r\n", "$64\r\n").
//
// The fast path exists because header lines dominate the framers' work on small requests and
// replies: a memchr call and a separate digit loop per header cost more than one short scan. It
// accepts only a subset of what the general path accepts, with the same result, and declines
// everything else (signs, leading zeros, long numbers, missing bytes, limits), so every decision
// about malformed or partial input stays with the general path.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

namespace redis_sidecar::resp::detail {

/// Redis' string2ll: optional '-', no '+', no leading zeros except "0" itself, no spaces, no
/// overflow.
inline bool parse_decimal(std::string_view s, std::int64_t& out) {
  if (s.empty()) return false;
  if (s == "0") {
    out = 0;
    return true;
  }
  bool negative = false;
  std::size_t i = 0;
  if (s[0] == '-') {
    negative = true;
    i = 1;
    if (s.size() == 1) return false;
  }
  if (s[i] < '1' || s[i] > '9') return false;
  std::uint64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    const auto digit = static_cast<std::uint64_t>(s[i] - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return false;
    v = v * 10 + digit;
  }
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (negative) {
    if (v > max + 1) return false;
    out = v == max + 1 ? std::numeric_limits<std::int64_t>::min() : -static_cast<std::int64_t>(v);
  } else {
    if (v > max) return false;
    out = static_cast<std::int64_t>(v);
  }
  return true;
}

enum class line_result { found, need_more, too_long };

/// Looks for the "\r\n" ending the line that starts at `start`, resuming the search at `scan`. The
/// line (without its "\r\n") may hold at most `max_line` bytes. On `found`, `cr` is the index of
/// '\r'. Decisions depend only on the bytes, never on how they were split into reads: a line is
/// too long once max_line + 1 bytes are in and the last of them cannot start the "\r\n".
inline line_result find_crlf(std::string_view data, std::size_t start, std::size_t& scan,
                             std::size_t max_line, std::size_t& cr) {
  const std::size_t avail = data.size() - start;
  const std::size_t window = max_line < avail ? std::min(avail, max_line + 2) : avail;
  const std::size_t end = start + window;
  std::size_t i = std::max(scan, start);
  while (i + 1 < end) {
    const void* hit = std::memchr(data.data() + i, '\r', end - 1 - i);
    if (hit == nullptr) break;
    i = static_cast<std::size_t>(static_cast<const char*>(hit) - data.data());
    if (data[i + 1] == '\n') {
      cr = i;
      return line_result::found;
    }
    ++i;
  }
  scan = end > start ? end - 1 : start;  // the last byte may be a '\r' whose '\n' is still to come
  if (max_line >= avail) return line_result::need_more;
  if (window == max_line + 2 || data[start + max_line] != '\r') return line_result::too_long;
  return line_result::need_more;
}

/// The fast path for a header line at `start` (< data.size()): one type byte, then "0" or 1 to 18
/// digits without a leading zero, then "\r\n", all present in `data`, the line no longer than
/// `max_line`. On success sets `value` and `cr` (the index of '\r') exactly as find_crlf +
/// parse_decimal would; returns false, changing nothing, for anything else.
inline bool quick_header(std::string_view data, std::size_t start, std::size_t max_line,
                         std::int64_t& value, std::size_t& cr) {
  constexpr std::size_t max_digits = 18;  // below 10^18: no overflow check needed
  const char* const first = data.data() + start + 1;
  const char* const end = data.data() + data.size();
  // One or two digits (a count or length under 100: most headers) without the loop.
  if (end - first >= 4 && max_line >= 3) {
    const unsigned d0 = static_cast<unsigned char>(first[0]) - unsigned{'0'};
    const unsigned d1 = static_cast<unsigned char>(first[1]) - unsigned{'0'};
    if (d0 < 10 && first[1] == '\r' && first[2] == '\n') {
      value = d0;
      cr = static_cast<std::size_t>(first + 1 - data.data());
      return true;
    }
    if (d0 - 1 < 9 && d1 < 10 && first[2] == '\r' && first[3] == '\n') {
      value = d0 * 10 + d1;
      cr = static_cast<std::size_t>(first + 2 - data.data());
      return true;
    }
  }
  const char* const stop =
      end - first > static_cast<std::ptrdiff_t>(max_digits) ? first + max_digits : end;
  const char* p = first;
  std::int64_t v = 0;
  constexpr unsigned zero = '0';
  for (unsigned digit = 0; p < stop && (digit = static_cast<unsigned char>(*p) - zero) < 10; ++p)
    v = v * 10 + digit;
  const auto digits = static_cast<std::size_t>(p - first);
  if (digits == 0 || (digits > 1 && *first == '0') || digits + 1 > max_line) return false;
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return false;
  value = v;
  cr = static_cast<std::size_t>(p - data.data());
  return true;
}

}  // namespace redis_sidecar::resp::detail
