// request_parser: multibulk and inline framing with Redis' own rules (networking.c,
// processMultibulkBuffer / processInlineBuffer, sds.c sdssplitargs).
//
// Every limit decision depends only on the bytes, never on how they were split into reads: a line
// is too long when its end is not within the first max_inline_bytes (+ terminator) bytes, whether
// or not the terminator has arrived yet. So feeding a frame whole or in pieces gives the same
// result.
#include "proxy/resp/request_parser.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "proxy/resp/detail/line.hpp"

namespace redis_sidecar::resp {
namespace {

using detail::find_crlf;
using detail::line_result;
using detail::parse_decimal;
using detail::quick_header;

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

bool is_space(char c) {  // C isspace in the "C" locale
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// sdssplitargs over one line. Redis splits a C string, so the line ends at its first NUL byte.
// Appends the unescaped arguments to `scratch` and their (offset, length) to `out`.
bool split_inline(std::string_view line, std::string& scratch,
                  std::vector<std::pair<std::size_t, std::size_t>>& out) {
  line = line.substr(0, line.find('\0'));
  const auto at = [&](std::size_t i) { return i < line.size() ? line[i] : '\0'; };
  std::size_t p = 0;
  for (;;) {
    while (p < line.size() && is_space(line[p])) ++p;
    if (p >= line.size()) return true;
    const std::size_t begin = scratch.size();
    bool in_dq = false, in_sq = false, done = false;
    while (!done) {
      const char c = at(p);
      if (in_dq) {
        if (c == '\\' && at(p + 1) == 'x' && is_hex(at(p + 2)) && is_hex(at(p + 3))) {
          scratch.push_back(static_cast<char>(hex_value(at(p + 2)) * 16 + hex_value(at(p + 3))));
          p += 3;
        } else if (c == '\\' && at(p + 1) != '\0') {
          ++p;
          switch (at(p)) {
            case 'n': scratch.push_back('\n'); break;
            case 'r': scratch.push_back('\r'); break;
            case 't': scratch.push_back('\t'); break;
            case 'b': scratch.push_back('\b'); break;
            case 'a': scratch.push_back('\a'); break;
            default: scratch.push_back(at(p)); break;
          }
        } else if (c == '"') {
          // A closing quote must be followed by a space or by the end of the line.
          if (at(p + 1) != '\0' && !is_space(at(p + 1))) return false;
          done = true;
        } else if (c == '\0') {
          return false;  // unterminated quotes
        } else {
          scratch.push_back(c);
        }
      } else if (in_sq) {
        if (c == '\\' && at(p + 1) == '\'') {
          ++p;
          scratch.push_back('\'');
        } else if (c == '\'') {
          if (at(p + 1) != '\0' && !is_space(at(p + 1))) return false;
          done = true;
        } else if (c == '\0') {
          return false;
        } else {
          scratch.push_back(c);
        }
      } else {
        switch (c) {
          case ' ':
          case '\n':
          case '\r':
          case '\t':
          case '\0': done = true; break;
          case '"': in_dq = true; break;
          case '\'': in_sq = true; break;
          default: scratch.push_back(c); break;
        }
      }
      if (p < line.size()) ++p;
    }
    out.emplace_back(begin, scratch.size() - begin);
  }
}

}  // namespace

request_parser::request_parser(const limits& l) : limits_(l) {}

void request_parser::reset() {
  pos_ = 0;
  scan_ = 0;
  remaining_ = -1;
  bulk_len_ = -1;
  frame_size_ = 0;
  inline_ = false;
  error_ = request_error::none;
  offsets_.clear();  // keeps capacity: no allocation per request once warm
  views_.clear();
  inline_scratch_.clear();
}

parse_status request_parser::fail(request_error e) {
  error_ = e;
  return parse_status::error;
}

void request_parser::build_views(const char* base) {
  views_.resize(offsets_.size());
  for (std::size_t i = 0; i < offsets_.size(); ++i)
    views_[i] = std::string_view(base + offsets_[i].first, offsets_[i].second);
}

parse_status request_parser::parse(std::string_view data) {
  if (error_ != request_error::none) return parse_status::error;
  if (frame_size_ > 0) {
    // Already complete: the buffer may have moved since, so point the views at it again.
    if (inline_)
      build_views(inline_scratch_.data());
    else
      rebase_views(data.data());
    return parse_status::complete;
  }
  // Shorter than what was already framed: a caller bug, but never read past data.size().
  if (data.empty() || data.size() < pos_) return parse_status::need_more;
  if (remaining_ < 0 && data[0] != '*') inline_ = true;
  if (inline_) return parse_inline(data);
  if (remaining_ < 0) {
    if (parse_whole(data)) return parse_status::complete;
    views_.clear();  // what parse_whole() wrote before it declined
  }
  return parse_multibulk(data);
}

// Points the views of a complete multibulk frame at the same offsets of the frame's bytes, now at
// `base`. Offsets are taken as integers: the old buffer may be gone.
void request_parser::rebase_views(const char* base) {
  const auto from = reinterpret_cast<std::uintptr_t>(base_);
  for (std::string_view& v : views_)
    v = std::string_view(base + (reinterpret_cast<std::uintptr_t>(v.data()) - from), v.size());
  base_ = base;
}

// The common case in one pass: a frame whose bytes are all in `data` and whose headers all take
// quick_header's form ("*3\r\n", "$16\r\n"), within the limits. Writes the views straight from
// the bytes, with no offsets kept for resuming. Declines (false, nothing changed but the views'
// contents) anything else: a partial frame, a header quick_header declines, a limit reached, a
// bad terminator; parse_multibulk then frames it from the start with every rule and error, and
// resumes it as more bytes come.
bool request_parser::parse_whole(std::string_view data) {
  const std::size_t max_line = limits_.max_inline_bytes;
  std::int64_t n = 0;
  std::size_t cr = 0;
  if (!quick_header(data, 0, max_line, n, cr) || n <= 0 ||
      static_cast<std::uint64_t>(n) > limits_.max_multibulk_len || n > max_whole_args)
    return false;
  const char* const base = data.data();
  const std::size_t size = data.size();
  std::size_t pos = cr + 2;
  views_.clear();
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t len = 0;
    if (pos >= size || base[pos] != '$' || !quick_header(data, pos, max_line, len, cr) ||
        static_cast<std::uint64_t>(len) > limits_.max_bulk_bytes)
      return false;
    pos = cr + 2;
    const auto ulen = static_cast<std::size_t>(len);
    if (size - pos < ulen + 2 || base[pos + ulen] != '\r' || base[pos + ulen + 1] != '\n')
      return false;
    views_.emplace_back(base + pos, ulen);
    pos += ulen + 2;
  }
  pos_ = scan_ = frame_size_ = pos;
  remaining_ = 0;
  base_ = base;
  return true;
}

parse_status request_parser::parse_multibulk(std::string_view data) {
  std::size_t cr = 0;
  if (remaining_ < 0) {
    std::int64_t n = 0;
    if (!quick_header(data, 0, limits_.max_inline_bytes, n, cr)) {
      switch (find_crlf(data, 0, scan_, limits_.max_inline_bytes, cr)) {
        case line_result::need_more: return parse_status::need_more;
        case line_result::too_long: return fail(request_error::too_big_count);
        case line_result::found: break;
      }
      if (!parse_decimal(data.substr(1, cr - 1), n))
        return fail(request_error::invalid_multibulk_length);
    }
    if (n > 0 && static_cast<std::uint64_t>(n) > limits_.max_multibulk_len) {
      return fail(request_error::invalid_multibulk_length);
    }
    pos_ = scan_ = cr + 2;
    if (n <= 0) {  // "*0", "*-1" and any other negative count: nothing, as Redis skips them
      frame_size_ = pos_;
      views_.clear();
      return parse_status::complete;
    }
    remaining_ = n;
    offsets_.clear();
    // Reserve what a sane request needs; a hostile "*2000000000" must not allocate up front.
    if (offsets_.capacity() < 1024 && offsets_.capacity() < static_cast<std::uint64_t>(n))
      offsets_.reserve(static_cast<std::size_t>(std::min<std::int64_t>(n, 1024)));
  }
  while (remaining_ > 0) {
    if (bulk_len_ < 0) {
      if (pos_ >= data.size()) return parse_status::need_more;
      if (data[pos_] != '$') {
        unexpected_ = data[pos_];
        return fail(request_error::expected_bulk);
      }
      std::int64_t len = 0;
      if (!quick_header(data, pos_, limits_.max_inline_bytes, len, cr)) {
        switch (find_crlf(data, pos_, scan_, limits_.max_inline_bytes, cr)) {
          case line_result::need_more: return parse_status::need_more;
          case line_result::too_long: return fail(request_error::too_big_count);
          case line_result::found: break;
        }
        if (!parse_decimal(data.substr(pos_ + 1, cr - pos_ - 1), len))
          return fail(request_error::invalid_bulk_length);
      }
      if (len < 0 || static_cast<std::uint64_t>(len) > limits_.max_bulk_bytes) {
        return fail(request_error::invalid_bulk_length);
      }
      bulk_len_ = len;
      pos_ = cr + 2;
    }
    // Jump straight to the payload's end: its bytes are never scanned.
    const auto len = static_cast<std::uint64_t>(bulk_len_);
    if (data.size() - pos_ < len + 2) return parse_status::need_more;
    if (data[pos_ + len] != '\r' || data[pos_ + len + 1] != '\n') {
      return fail(request_error::bad_crlf);
    }
    offsets_.emplace_back(pos_, len);
    pos_ += len + 2;
    scan_ = pos_;
    bulk_len_ = -1;
    --remaining_;
  }
  frame_size_ = pos_;
  build_views(data.data());
  base_ = data.data();
  return parse_status::complete;
}

parse_status request_parser::parse_inline(std::string_view data) {
  // The line (without its "\n") may hold at most max_inline_bytes bytes.
  const std::size_t max = limits_.max_inline_bytes;
  const std::size_t window = max < data.size() ? max + 1 : data.size();
  const std::size_t from = std::min(scan_, window);
  const void* hit = std::memchr(data.data() + from, '\n', window - from);
  if (hit == nullptr) {
    scan_ = window;
    return max < data.size() ? fail(request_error::too_big_inline) : parse_status::need_more;
  }
  const auto nl = static_cast<std::size_t>(static_cast<const char*>(hit) - data.data());
  std::string_view line = data.substr(0, nl);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  inline_scratch_.clear();
  offsets_.clear();
  if (!split_inline(line, inline_scratch_, offsets_)) return fail(request_error::unbalanced_quotes);
  frame_size_ = nl + 1;
  build_views(inline_scratch_.data());
  return parse_status::complete;
}

}  // namespace redis_sidecar::resp
