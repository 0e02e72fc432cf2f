// value: a decoded RESP2/RESP3 reply as a tree, for the few replies the sidecar reads itself
// (HELLO during the upstream handshake, probes, state-changing replies). Not used on the forwarding
// path: it allocates. Decoding takes one complete frame as framed by reply_parser.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace redis_sidecar::resp {

struct value {
  enum class kind : std::uint8_t {
    simple_string,  // '+'
    error,          // '-' and '!' (blob error)
    integer,        // ':'
    bulk_string,    // '$' and '=' (verbatim, text without the "txt:" prefix)
    null,           // '_', "$-1", "*-1"
    array,          // '*'
    map,            // '%' (elements hold key, value, key, value, ...)
    set,            // '~'
    push,           // '>'
    double_,        // ',' (text kept in `str`)
    boolean,        // '#'
    big_number,     // '(' (text kept in `str`)
  };
  kind type = kind::null;
  std::string str;           // strings, errors, doubles, big numbers
  std::int64_t integer = 0;  // integers; booleans as 0/1
  std::vector<value> elements;

  /// For maps: the value under `key` (compared case-sensitively), or nullptr.
  const value* find(std::string_view key) const;
};

/// Decodes one complete frame. Returns nullopt on malformed input (never throws, never asserts).
std::optional<value> decode(std::string_view frame);

/// Splits one complete array frame ("*<n>\r\n" and n values) into its elements, each a complete
/// frame viewed in place: for a reply read on the data path (the near cache's EXEC), where
/// decode()'s tree would copy every value. Returns false, with `out` unspecified, for anything
/// else (malformed, another type, a null array).
bool split_array(std::string_view frame, std::vector<std::string_view>& out);

/// A bulk string frame at the start of `rest` with a plain length (the framers' header fast path,
/// resp/detail/line.hpp), checked as reply_parser would: sets its header's size (up to and with
/// "\r\n") and its whole size. False for anything else (another type, a null, an unusual length
/// such as "$007", incomplete): callers then read it the general way.
bool bulk_frame(std::string_view rest, std::size_t& header, std::size_t& size);

/// The payload of a bulk string frame ("$<len>\r\n<payload>\r\n"), or nullopt for any other
/// frame. Expects a frame reply_parser accepted (as split_array's elements are).
std::optional<std::string_view> bulk_payload(std::string_view frame);

/// The value of an integer frame (":<n>\r\n"), or nullopt for any other frame.
std::optional<std::int64_t> integer_payload(std::string_view frame);

/// An upstream's error, for a log line or an error message: the frame ("-ERR ...\r\n") or its text,
/// without the type byte and line end, at most 300 bytes, and cut where Redis starts quoting the
/// request's arguments ("unknown command 'X', with args beginning with: ..."): those may be a
/// password the sidecar sent or a client's data.
std::string error_text(std::string_view frame);

/// An error's code: the first word of a simple error frame ("LOADING" of "-LOADING Redis is
/// loading ...\r\n") or of an error's text ("LOADING Redis is loading ...").
std::string_view error_code(std::string_view frame);

}  // namespace redis_sidecar::resp
