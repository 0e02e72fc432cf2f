// reply_parser: frame boundaries of RESP2/RESP3 replies with an explicit stack of open aggregates.
//
// Each call resumes at pos_: completed elements are never looked at again, and a bulk payload is
// skipped by its announced length. Limit decisions depend only on the bytes, never on how they were
// split into reads, so feeding a frame whole or in pieces gives the same result.
//
// Only the structure is checked here; the text of simple lines (":", ",", "(") is left to
// value.cpp, except the two types whose body is fixed: "#" must be "t" or "f" and "_" must be
// empty.
#include "proxy/resp/reply_parser.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "proxy/resp/detail/line.hpp"

namespace redis_sidecar::resp {
namespace {

using detail::find_crlf;
using detail::line_result;
using detail::parse_decimal;
using detail::quick_header;

enum class shape { line, bulk, aggregate, unknown };

shape shape_of(char type) {
  switch (type) {
    case '+':
    case '-':
    case ':':
    case '_':
    case ',':
    case '#':
    case '(': return shape::line;
    case '$':
    case '!':
    case '=': return shape::bulk;
    case '*':
    case '%':
    case '~':
    case '>':
    case '|': return shape::aggregate;
    default: return shape::unknown;
  }
}

}  // namespace

reply_parser::reply_parser(const limits& l) : limits_(l) {}

void reply_parser::reset() {
  pos_ = 0;
  scan_ = 0;
  bulk_len_ = -1;
  frame_size_ = 0;
  type_ = 0;
  error_ = reply_error::none;
  stack_.clear();  // keeps capacity
  embedded_.clear();
}

parse_status reply_parser::fail(reply_error e) {
  error_ = e;
  return parse_status::error;
}

bool reply_parser::value_done(std::string_view data) {
  while (!stack_.empty()) {
    level& l = stack_.back();
    if (--l.remaining > 0) return false;
    const bool embedded =
        l.embedded && !is_command_reply_push(data.substr(l.begin, pos_ - l.begin));
    const std::size_t begin = l.begin;
    stack_.pop_back();
    if (embedded) {  // the aggregate around it still waits for the same element
      embedded_.emplace_back(begin, pos_);
      return false;
    }
  }
  return true;
}

// A (un)subscribe confirmation is the reply of the command that asked for it: inside EXEC's array
// (SUBSCRIBE or UNSUBSCRIBE queued in a RESP3 transaction) it is one of the array's elements, in
// its place, where messages, invalidations and keyspace notifications are not.
bool reply_parser::is_command_reply_push(std::string_view push) {
  static constexpr std::array<std::string_view, 6> kinds{
      "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe"};
  const auto header_end = push.find("\r\n");
  if (header_end == std::string_view::npos) return false;
  const std::string_view first = push.substr(header_end + 2);
  std::string_view kind;
  if (first.starts_with('+')) {
    kind = first.substr(1, first.find("\r\n") - 1);
  } else if (std::int64_t len = 0; first.starts_with('$')) {
    const auto eol = first.find("\r\n");
    if (eol == std::string_view::npos || !detail::parse_decimal(first.substr(1, eol - 1), len) ||
        len < 0 || static_cast<std::uint64_t>(len) > first.size() - eol - 2)
      return false;
    kind = first.substr(eol + 2, static_cast<std::size_t>(len));
  }
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

// True when the value whose header comes next is the frame's own value: at depth 0, or right after
// the pairs of top-level attributes.
bool reply_parser::is_top_level() const {
  return std::all_of(stack_.begin(), stack_.end(),
                     [](const level& l) { return l.attribute && l.remaining == 1; });
}

parse_status reply_parser::parse(std::string_view data) {
  if (error_ != reply_error::none) return parse_status::error;
  // Shorter than what was already framed: a caller bug, but never read past data.size().
  if (frame_size_ == 0 && data.size() < pos_) return parse_status::need_more;
  if (pos_ == 0 && frame_size_ == 0 && parse_whole(data)) return parse_status::complete;
  for (;;) {
    if (frame_size_ > 0) return parse_status::complete;
    if (bulk_len_ >= 0) {
      // Jump straight to the payload's end: its bytes are never scanned.
      const auto len = static_cast<std::uint64_t>(bulk_len_);
      if (data.size() - pos_ < len + 2) return parse_status::need_more;
      if (data[pos_ + len] != '\r' || data[pos_ + len + 1] != '\n') {
        return fail(reply_error::bad_crlf);
      }
      pos_ += len + 2;
      scan_ = pos_;
      bulk_len_ = -1;
      if (value_done(data)) frame_size_ = pos_;
      continue;
    }
    const parse_status st = read_header(data);
    if (st != parse_status::complete) return st;
  }
}

// The most common replies in one pass, when the whole frame is in `data`: a simple string, error
// or integer of up to 32 bytes ("+OK", ":1"), or a bulk string whose header takes quick_header's
// form. Leaves the parser as parse() would; declines (false, nothing changed) anything else, which
// parse() then frames with every rule, and resumes as more bytes come.
bool reply_parser::parse_whole(std::string_view data) {
  if (data.empty()) return false;
  const char type = data[0];
  std::size_t end = 0;
  if (type == '+' || type == '-' || type == ':') {
    const std::size_t n = std::min<std::size_t>(data.size(), 32);
    std::size_t cr = 1;
    while (cr < n && data[cr] != '\r') ++cr;
    // A lone CR, a line past the limit or beyond the window: the general path decides.
    if (cr + 1 >= n || data[cr + 1] != '\n' || cr > limits_.max_inline_bytes) return false;
    end = cr + 2;
  } else if (type == '$') {
    std::int64_t len = 0;
    std::size_t cr = 0;
    if (!quick_header(data, 0, limits_.max_inline_bytes, len, cr) ||
        static_cast<std::uint64_t>(len) > limits_.max_bulk_bytes)
      return false;
    const std::size_t at = cr + 2;
    const auto ulen = static_cast<std::size_t>(len);
    if (data.size() - at < ulen + 2 || data[at + ulen] != '\r' || data[at + ulen + 1] != '\n')
      return false;
    end = at + ulen + 2;
  } else {
    return false;
  }
  type_ = type;
  pos_ = scan_ = frame_size_ = end;
  return true;
}

// Reads one header line at pos_. Returns `complete` when it was consumed (the frame itself may
// still be unfinished), need_more or error otherwise.
parse_status reply_parser::read_header(std::string_view data) {
  if (pos_ >= data.size()) return parse_status::need_more;
  const std::size_t begin = pos_;
  const char type = data[pos_];
  const shape kind = shape_of(type);
  if (kind == shape::unknown) return fail(reply_error::bad_type);
  std::size_t cr = 0;
  std::int64_t n = 0;
  const bool counted =
      kind != shape::line && quick_header(data, pos_, limits_.max_inline_bytes, n, cr);
  if (!counted) {
    switch (find_crlf(data, pos_, scan_, limits_.max_inline_bytes, cr)) {
      case line_result::need_more: return parse_status::need_more;
      case line_result::too_long:
        return fail(kind == shape::line ? reply_error::line_too_long : reply_error::bad_length);
      case line_result::found: break;
    }
  }
  const std::string_view body = data.substr(pos_ + 1, cr - pos_ - 1);
  if (type != '|' && type_ == 0 && is_top_level()) type_ = type;
  pos_ = scan_ = cr + 2;

  if (kind == shape::line) {
    if (type == '_' && !body.empty()) return fail(reply_error::bad_crlf);
    if (type == '#' && body != "t" && body != "f") return fail(reply_error::bad_type);
    if (value_done(data)) frame_size_ = pos_;
    return parse_status::complete;
  }
  if (!counted && !parse_decimal(body, n)) return fail(reply_error::bad_length);
  if (n == -1 && (type == '$' || type == '*')) {  // RESP2 nulls
    if (value_done(data)) frame_size_ = pos_;
    return parse_status::complete;
  }
  if (n < 0) return fail(reply_error::bad_length);
  if (kind == shape::bulk) {
    if (static_cast<std::uint64_t>(n) > limits_.max_bulk_bytes)
      return fail(reply_error::bad_length);
    bulk_len_ = n;
    return parse_status::complete;
  }
  if (static_cast<std::uint64_t>(n) > limits_.max_multibulk_len) {
    return fail(reply_error::bad_length);
  }
  const bool pairs = type == '%' || type == '|';
  if (pairs && n > (std::numeric_limits<std::int64_t>::max() - 1) / 2) {
    return fail(reply_error::bad_length);
  }
  // An attribute is followed by the value it annotates: both count as one element of the parent.
  const std::int64_t elements = (pairs ? 2 * n : n) + (type == '|' ? 1 : 0);
  // Pushes do not nest: inside one, a push header is an ordinary element.
  const bool embedded =
      type == '>' && !is_top_level() && type_ != '>' &&
      std::none_of(stack_.begin(), stack_.end(), [](const level& l) { return l.embedded; });
  if (elements == 0) {
    if (embedded) {
      embedded_.emplace_back(begin, pos_);
    } else if (value_done(data)) {
      frame_size_ = pos_;
    }
    return parse_status::complete;
  }
  if (stack_.size() >= limits_.max_nesting) return fail(reply_error::too_deep);
  stack_.push_back(level{elements, type == '|', embedded, begin});
  return parse_status::complete;
}

}  // namespace redis_sidecar::resp
