// writer: RESP encodings appended to a caller-owned buffer. Numbers go through std::to_chars into a
// stack buffer: no locale, no allocation beyond the output string's own growth.
#include "proxy/resp/writer.hpp"

#include <charconv>

namespace redis_sidecar::resp {
namespace {

// Appends `prefix`, the decimal `v` and "\r\n".
template <typename Int>
void append_line(std::string& out, char prefix, Int v) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof digits, v);
  (void)ec;  // 24 bytes hold any 64-bit integer
  out.push_back(prefix);
  out.append(digits, end);
  out.append("\r\n", 2);
}

// A simple string or error ends at its first CR or LF, so those in the text (a client's option or
// command name quoted in an error) are dropped at its end and written as spaces elsewhere, as Redis
// does in its errors: otherwise the rest of the text would reach the client as a reply of its own,
// out of step with its requests.
void append_text(std::string& out, char prefix, std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  out.push_back(prefix);
  const std::size_t start = out.size();
  out.append(s);
  for (std::size_t i = start; i < out.size(); ++i)
    if (out[i] == '\r' || out[i] == '\n') out[i] = ' ';
  out.append("\r\n", 2);
}

}  // namespace

void append_simple(std::string& out, std::string_view s) { append_text(out, '+', s); }

void append_error(std::string& out, std::string_view s) { append_text(out, '-', s); }

void append_integer(std::string& out, std::int64_t v) { append_line(out, ':', v); }

void append_bulk(std::string& out, std::string_view s) {
  append_line(out, '$', s.size());
  out.append(s);
  out.append("\r\n", 2);
}

void append_verbatim(std::string& out, std::string_view txt, int proto) {
  if (proto != 3) return append_bulk(out, txt);
  append_line(out, '=', txt.size() + 4);
  out.append("txt:", 4);
  out.append(txt);
  out.append("\r\n", 2);
}

std::string_view null_frame(int proto) { return proto >= 3 ? "_\r\n" : "$-1\r\n"; }

void append_null(std::string& out, int proto) { out.append(null_frame(proto)); }

void append_null_array(std::string& out, int proto) {
  out.append(proto >= 3 ? "_\r\n" : "*-1\r\n");
}

void append_array_header(std::string& out, std::size_t n) { append_line(out, '*', n); }

void append_map_header(std::string& out, std::size_t pairs, int proto) {
  if (proto >= 3) {
    append_line(out, '%', pairs);
  } else {
    append_line(out, '*', 2 * pairs);
  }
}

void append_set_header(std::string& out, std::size_t n, int proto) {
  append_line(out, proto >= 3 ? '~' : '*', n);
}

void append_push_header(std::string& out, std::size_t n, int proto) {
  append_line(out, proto >= 3 ? '>' : '*', n);
}

void append_bool(std::string& out, bool b, int proto) {
  if (proto >= 3) {
    out.append(b ? "#t\r\n" : "#f\r\n");
  } else {
    out.append(b ? ":1\r\n" : ":0\r\n");
  }
}

void append_command(std::string& out, std::span<const std::string_view> args) {
  std::size_t bytes = 16;
  for (const auto arg : args) bytes += arg.size() + 16;
  out.reserve(out.size() + bytes);
  append_array_header(out, args.size());
  for (const auto arg : args) append_bulk(out, arg);
}

}  // namespace redis_sidecar::resp
