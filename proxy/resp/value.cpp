// value: decodes a frame in two passes. reply_parser first checks the structure (lengths, CRLFs,
// nesting bounded by limits.max_nesting), so the recursive pass below is bounded too; it still
// checks every bound itself and reports malformed text (":abc", "=3\r\nabc") as nullopt.
#include "proxy/resp/value.hpp"

#include <algorithm>
#include <limits>

#include "proxy/resp/detail/line.hpp"
#include "proxy/resp/reply_parser.hpp"

namespace redis_sidecar::resp {
namespace {

using detail::parse_decimal;  // Redis' string2ll rules, shared with the framers

constexpr std::int64_t max_pairs = std::numeric_limits<std::int64_t>::max() / 2;

bool is_big_number(std::string_view s) {
  if (!s.empty() && s[0] == '-') s.remove_prefix(1);
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Recursive descent over a frame reply_parser accepted. Depth is bounded by max_depth regardless.
class decoder {
 public:
  decoder(std::string_view in, std::size_t max_depth) : in_(in), max_depth_(max_depth) {}

  bool read(value& out, std::size_t depth);
  std::size_t pos() const { return pos_; }

 private:
  bool line(std::string_view& body);
  bool bulk(std::int64_t len, std::string_view& payload);
  bool aggregate(value& out, std::int64_t count, std::size_t depth);

  std::string_view in_;
  std::size_t pos_ = 0;
  std::size_t max_depth_;
};

bool decoder::line(std::string_view& body) {
  const std::size_t cr = in_.find("\r\n", pos_);
  if (cr == std::string_view::npos) return false;
  body = in_.substr(pos_, cr - pos_);
  pos_ = cr + 2;
  return true;
}

bool decoder::bulk(std::int64_t len, std::string_view& payload) {
  const auto n = static_cast<std::uint64_t>(len);
  if (len < 0 || in_.size() - pos_ < n + 2) return false;
  if (in_.substr(pos_ + n, 2) != "\r\n") return false;
  payload = in_.substr(pos_, n);
  pos_ += n + 2;
  return true;
}

bool decoder::aggregate(value& out, std::int64_t count, std::size_t depth) {
  // Every element takes at least 3 bytes ("_\r\n"): never reserve more than the input can hold.
  const std::size_t cap = (in_.size() - pos_) / 3;
  out.elements.reserve(std::min(static_cast<std::size_t>(count), cap));
  for (std::int64_t i = 0; i < count; ++i) {
    out.elements.emplace_back();
    if (!read(out.elements.back(), depth + 1)) return false;
  }
  return true;
}

bool decoder::read(value& out, std::size_t depth) {
  if (depth > max_depth_ || pos_ >= in_.size()) return false;
  const char type = in_[pos_++];
  std::string_view body;
  if (!line(body)) return false;
  std::int64_t n = 0;
  std::string_view payload;
  switch (type) {
    case '+':
      out.type = value::kind::simple_string;
      out.str = body;
      return true;
    case '-':
      out.type = value::kind::error;
      out.str = body;
      return true;
    case ':': out.type = value::kind::integer; return parse_decimal(body, out.integer);
    case '_': out.type = value::kind::null; return body.empty();
    case ',':
      out.type = value::kind::double_;
      out.str = body;
      return !body.empty();
    case '(':
      out.type = value::kind::big_number;
      out.str = body;
      return is_big_number(body);
    case '#':
      out.type = value::kind::boolean;
      out.integer = body == "t" ? 1 : 0;
      return body == "t" || body == "f";
    case '$':
    case '!':
    case '=':
      if (!parse_decimal(body, n)) return false;
      if (n == -1 && type == '$') {
        out.type = value::kind::null;
        return true;
      }
      if (!bulk(n, payload)) return false;
      if (type == '=') {  // verbatim string: "txt:" or "mkd:" then the text
        if (payload.size() < 4 || payload[3] != ':') return false;
        payload.remove_prefix(4);
      }
      out.type = type == '!' ? value::kind::error : value::kind::bulk_string;
      out.str = payload;
      return true;
    case '|': {  // attribute: decoded and dropped, then the value it annotates
      if (!parse_decimal(body, n) || n < 0 || n > max_pairs) return false;
      value attributes;
      if (!aggregate(attributes, 2 * n, depth)) return false;
      return read(out, depth + 1);
    }
    default: break;
  }
  if (!parse_decimal(body, n)) return false;
  if (n == -1 && type == '*') {
    out.type = value::kind::null;
    return true;
  }
  if (n < 0) return false;
  switch (type) {
    case '*': out.type = value::kind::array; break;
    case '~': out.type = value::kind::set; break;
    case '>': out.type = value::kind::push; break;
    case '%':
      if (n > max_pairs) return false;
      out.type = value::kind::map;
      return aggregate(out, 2 * n, depth);  // key, value, key, value, ...
    default: return false;
  }
  return aggregate(out, n, depth);
}

}  // namespace

const value* value::find(std::string_view key) const {
  if (type != kind::map) return nullptr;
  for (std::size_t i = 0; i + 1 < elements.size(); i += 2) {
    const value& k = elements[i];
    const bool is_string = k.type == kind::simple_string || k.type == kind::bulk_string;
    if (is_string && k.str == key) return &elements[i + 1];
  }
  return nullptr;
}

std::optional<value> decode(std::string_view frame) {
  // The frames decoded are the sidecar's own (handshakes, probes, channel messages, confirmations):
  // a bound far below what the framer allows keeps the recursion below shallow.
  limits l = reply_limits({});
  l.max_nesting = 64;
  reply_parser framer(l);
  if (framer.parse(frame) != parse_status::complete || framer.frame_size() != frame.size() ||
      !framer.embedded_pushes().empty()) {  // the connection takes those out before decoding
    return std::nullopt;
  }
  // The framer bounds nesting by max_nesting levels; an attribute chain adds one level per link.
  decoder d(frame, 2 * l.max_nesting + 2);
  value out;
  if (!d.read(out, 0) || d.pos() != frame.size()) return std::nullopt;
  return out;
}

bool bulk_frame(std::string_view rest, std::size_t& header, std::size_t& size) {
  std::int64_t len = 0;
  std::size_t cr = 0;
  if (rest.size() < 4 || rest[0] != '$' ||
      !detail::quick_header(rest, 0, limits{}.max_inline_bytes, len, cr)) {
    return false;
  }
  header = cr + 2;
  size = header + static_cast<std::size_t>(len) + 2;
  return size <= rest.size() && rest[size - 2] == '\r' && rest[size - 1] == '\n';
}

namespace {

// The size of the element frame at the start of `rest` when it is a bulk string or an integer
// (nearly every element the near cache reads), checked as reply_parser would, or 0: reply_parser
// then frames it.
std::size_t simple_element(std::string_view rest) {
  if (std::size_t header = 0, size = 0; bulk_frame(rest, header, size)) return size;
  if (rest.size() >= 4 && rest[0] == ':') {
    const std::size_t cr = rest.find("\r\n");
    std::int64_t v = 0;
    if (cr == std::string_view::npos || !parse_decimal(rest.substr(1, cr - 1), v)) return 0;
    return cr + 2;
  }
  return 0;
}

}  // namespace

bool split_array(std::string_view frame, std::vector<std::string_view>& out) {
  out.clear();
  const std::size_t eol = frame.find("\r\n");
  std::int64_t n = 0;
  if (frame.empty() || frame[0] != '*' || eol == std::string_view::npos ||
      !parse_decimal(frame.substr(1, eol - 1), n) || n < 0 ||
      static_cast<std::uint64_t>(n) > (frame.size() - eol) / 3) {  // each element: 3 bytes or more
    return false;
  }
  std::string_view rest = frame.substr(eol + 2);
  out.reserve(static_cast<std::size_t>(n));
  // The frame is complete in memory: only its own size bounds a bulk string in it.
  limits l = reply_limits({});
  l.max_bulk_bytes = std::max(l.max_bulk_bytes, frame.size());
  reply_parser framer(l);
  for (std::int64_t i = 0; i < n; ++i) {
    std::size_t size = simple_element(rest);
    if (size == 0) {
      framer.reset();
      if (framer.parse(rest) != parse_status::complete) return false;
      size = framer.frame_size();
    }
    out.push_back(rest.substr(0, size));
    rest.remove_prefix(size);
  }
  return rest.empty();
}

std::optional<std::string_view> bulk_payload(std::string_view frame) {
  std::size_t header = 0, size = 0;
  if (!bulk_frame(frame, header, size) || size != frame.size()) return std::nullopt;
  return frame.substr(header, size - header - 2);
}

std::optional<std::int64_t> integer_payload(std::string_view frame) {
  std::int64_t v = 0;
  if (frame.size() < 4 || frame[0] != ':' || !frame.ends_with("\r\n") ||
      !parse_decimal(frame.substr(1, frame.size() - 3), v)) {
    return std::nullopt;
  }
  return v;
}

std::string error_text(std::string_view frame) {
  if (!frame.empty() && (frame[0] == '-' || frame[0] == '!')) frame.remove_prefix(1);
  while (!frame.empty() && (frame.back() == '\n' || frame.back() == '\r')) frame.remove_suffix(1);
  frame = frame.substr(0, frame.find(", with args beginning with"));  // Redis' words, since 4.0
  return std::string(frame.substr(0, 300));
}

std::string_view error_code(std::string_view frame) {
  if (frame.starts_with('-')) frame.remove_prefix(1);
  return frame.substr(0, frame.find_first_of(" \r"));
}

}  // namespace redis_sidecar::resp
