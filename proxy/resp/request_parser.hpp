// request_parser: frames one client request (a RESP2 multibulk array or an inline command) out of a
// byte buffer, without I/O and without allocating per request once warm.
//
// The parser is resumable: feed it the bytes of the current frame as they arrive (always starting
// at the frame's first byte; the buffer may have moved between calls), and it continues where it
// stopped, so a 16 MiB value arriving in 4 KiB reads costs one scan, not 4,096. Announced lengths
// are checked against the limits before anything is allocated or awaited.
//
//   buffer: [ frame being parsed ........ | next frames ... ]
//             ^ data passed to parse()      ^ frame_size() once complete
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/resp/limits.hpp"

namespace redis_sidecar::resp {

enum class parse_status : std::uint8_t { complete, need_more, error };

/// Why a request could not be framed. Each maps to one client-visible string in proxy/errors.hpp,
/// and to one counter (`errors_total{kind}`).
enum class request_error : std::uint8_t {
  none,
  invalid_multibulk_length,  // "*abc", "*-0" or above limits.max_multibulk_len
  invalid_bulk_length,       // "$abc", "$-1" inside a request, or above limits.max_bulk_bytes
  expected_bulk,             // an element of a request array that does not start with '$'
  too_big_inline,            // inline line longer than limits.max_inline_bytes without "\n"
  too_big_count,             // a "*N" or "$N" header line longer than limits.max_inline_bytes
  unbalanced_quotes,         // inline command with unbalanced quotes
  bad_crlf,                  // bulk payload not followed by "\r\n"
};

class request_parser {
 public:
  explicit request_parser(const limits& l = {});

  /// Continues parsing the frame that starts at data[0]. `data` holds every byte of the frame
  /// received so far (and possibly bytes of later frames). Returns need_more until the frame is
  /// complete. After `complete`, `frame_size()` and `args()` describe it; after `error`, `error()`
  /// says why.
  parse_status parse(std::string_view data);

  /// Forgets the current frame. Call after consuming a complete frame, before parsing the next.
  void reset();

  /// Limits for the frames from the next one on (call between frames, as reset()).
  void set_limits(const limits& l) { limits_ = l; }

  /// Bytes the complete frame occupies in the input (for inline commands, including the line
  /// ending).
  std::size_t frame_size() const { return frame_size_; }

  /// The arguments of the complete frame. Valid until the next parse()/reset(), and only while the
  /// buffer passed to the completing parse() call is unchanged (inline args point into the parser).
  std::span<const std::string_view> args() const { return views_; }

  /// True when the frame was an inline command; forward it re-encoded as an array (see writer.hpp).
  bool is_inline() const { return inline_; }

  /// True when the frame was an empty line or "*0\r\n" / "*-1\r\n": Redis ignores those silently.
  bool is_empty() const { return frame_size_ > 0 && views_.empty(); }

  request_error error() const { return error_; }
  /// After expected_bulk: the byte found where a '$' should have been (Redis names it).
  char unexpected_byte() const { return unexpected_; }

 private:
  parse_status parse_multibulk(std::string_view data);
  bool parse_whole(std::string_view data);
  void rebase_views(const char* base);
  // parse_whole() takes frames of up to this many arguments (the views' capacity stays small).
  static constexpr std::int64_t max_whole_args = 1024;
  parse_status parse_inline(std::string_view data);
  parse_status fail(request_error e);
  void build_views(const char* base);

  limits limits_;
  // Resumption state for multibulk frames: how far we got and how many elements remain.
  std::size_t pos_ = 0;          // offset of the next unread header or payload
  std::size_t scan_ = 0;         // where the search for the current line's end resumes
  std::int64_t remaining_ = -1;  // -1: header not read yet
  std::int64_t bulk_len_ = -1;   // length of the bulk whose payload we wait for, or -1
  std::size_t frame_size_ = 0;
  bool inline_ = false;
  request_error error_ = request_error::none;
  char unexpected_ = 0;
  // (offset, length) of each arg: relative to the frame start, or to inline_scratch_ when inline.
  std::vector<std::pair<std::size_t, std::size_t>> offsets_;
  std::vector<std::string_view> views_;
  const char* base_ = nullptr;  // where a complete multibulk frame's views point (rebase_views())
  std::string inline_scratch_;  // unescaped inline arguments
};

}  // namespace redis_sidecar::resp
