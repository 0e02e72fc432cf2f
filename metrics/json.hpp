// json: appends a string to a JSON document as a quoted, escaped JSON string. Used by /readyz and
// by the JSON log format (proxy/log.cpp), whose inputs may hold anything: error texts from the
// upstream, bytes of a malformed request. Header-only and standard-library-only, so the logger can
// use it without linking the metrics library.
//
// Escapes quotes, backslashes, every control character (U+0000..U+001F and DEL) and replaces each
// byte that is not part of well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above
// U+10FFFF) with U+FFFD, so the output is always valid JSON in valid UTF-8.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace redis_sidecar::metrics {

namespace detail {

// Well-formed UTF-8 (RFC 3629, table 3-7 of Unicode): by lead byte, the sequence length and the
// range allowed for the second byte; later bytes are always 80..BF.
struct utf8_lead {
  unsigned char first, last;  // lead byte range
  unsigned char length;
  unsigned char lo, hi;  // second byte range
};
inline constexpr utf8_lead utf8_leads[] = {
    {0xC2, 0xDF, 2, 0x80, 0xBF},  // U+0080..U+07FF
    {0xE0, 0xE0, 3, 0xA0, 0xBF},  // U+0800..U+0FFF (no overlongs)
    {0xE1, 0xEC, 3, 0x80, 0xBF},  // U+1000..U+CFFF
    {0xED, 0xED, 3, 0x80, 0x9F},  // U+D000..U+D7FF (no surrogates)
    {0xEE, 0xEF, 3, 0x80, 0xBF},  // U+E000..U+FFFF
    {0xF0, 0xF0, 4, 0x90, 0xBF},  // U+10000..U+3FFFF (no overlongs)
    {0xF1, 0xF3, 4, 0x80, 0xBF},  // U+40000..U+FFFFF
    {0xF4, 0xF4, 4, 0x80, 0x8F},  // U+100000..U+10FFFF (nothing above)
};

/// Length of the well-formed UTF-8 sequence starting at s[i] (a byte >= 0x80), or 0 if the bytes
/// there are not one.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  for (const auto& lead : utf8_leads) {
    if (byte(i) < lead.first || byte(i) > lead.last) continue;
    if (i + lead.length > s.size() || byte(i + 1) < lead.lo || byte(i + 1) > lead.hi) return 0;
    for (std::size_t k = i + 2; k < i + lead.length; ++k)
      if (byte(k) < 0x80 || byte(k) > 0xBF) return 0;
    return lead.length;
  }
  return 0;
}

inline void append_json_ascii(std::string& out, unsigned char c) {
  static constexpr char hex[] = "0123456789abcdef";
  switch (c) {
    case '"': out += "\\\""; return;
    case '\\': out += "\\\\"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    default: break;
  }
  if (c < 0x20 || c == 0x7F) {
    out += "\\u00";
    out += hex[c >> 4];
    out += hex[c & 0xF];
    return;
  }
  out += static_cast<char>(c);
}

}  // namespace detail

/// Appends `s` to `out` as a JSON string, quotes included.
inline void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      detail::append_json_ascii(out, c);
      ++i;
      continue;
    }
    const std::size_t n = detail::utf8_sequence_length(s, i);
    if (n == 0) {
      out += "\\ufffd";  // one replacement character per offending byte
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  out += '"';
}

/// `s` as a JSON string, quotes included.
inline std::string json_string(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  append_json_string(out, s);
  return out;
}

}  // namespace redis_sidecar::metrics
