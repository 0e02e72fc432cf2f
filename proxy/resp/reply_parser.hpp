// reply_parser: frames one reply (RESP2 or RESP3, including pushes and attributes) from the
// upstream, without I/O and without allocating per reply once warm. It only finds where a frame
// ends and what kind it is; the bytes are forwarded untouched. Decoding into a tree is value.hpp's
// job, for the few replies the sidecar itself reads (handshake, probes).
//
// Resumable like request_parser: feed the bytes of the current frame from its first byte as they
// arrive. Aggregates are tracked with an explicit stack (no recursion), bounded by
// limits.max_nesting. An attribute ("|") is framed together with the value that follows it.
// Streamed types ("$?", "*?") are not produced by Redis and are a protocol error here.
//
// A push inside an aggregate is not one of its elements. Redis 7.0 writes the pushes a command
// causes to its own connection (the keyspace notification of a key it expired lazily, on a RESP3
// connection subscribed to it) into that command's reply as soon as they happen, between two
// elements of an array it is still writing. Such a push is framed on its own
// and skipped by the count of the aggregate around it; embedded_pushes() tells where each one is,
// so the caller can take them out and handle them as the pushes they are. Not so a SUBSCRIBE or
// UNSUBSCRIBE confirmation inside EXEC's array: in a RESP3 transaction that push is the queued
// command's reply, and counted as an element.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/resp/limits.hpp"
#include "proxy/resp/request_parser.hpp"  // parse_status

namespace redis_sidecar::resp {

enum class reply_error : std::uint8_t {
  none,
  bad_type,       // unknown type byte
  bad_length,     // non-numeric, negative (other than -1 where allowed) or above limits
  bad_crlf,       // payload not followed by "\r\n"
  too_deep,       // nesting above limits.max_nesting
  line_too_long,  // a simple line ("+", "-", ":", ...) above limits.max_inline_bytes without "\r\n"
};

class reply_parser {
 public:
  explicit reply_parser(const limits& l = {});

  /// Continues parsing the frame that starts at data[0] (see request_parser::parse).
  parse_status parse(std::string_view data);
  void reset();

  std::size_t frame_size() const { return frame_size_; }
  /// The type byte of the top-level value (after any attribute): '+', '-', ':', '$', '*', '%', '>',
  /// ...
  char type() const { return type_; }
  bool is_push() const { return type_ == '>'; }
  bool is_error() const { return type_ == '-' || type_ == '!'; }
  reply_error error() const { return error_; }
  /// [begin, end) offsets in the frame of each push found inside one of its aggregates, in order.
  /// The frame without them is the reply.
  const std::vector<std::pair<std::size_t, std::size_t>>& embedded_pushes() const {
    return embedded_;
  }

 private:
  parse_status fail(reply_error e);
  bool parse_whole(std::string_view data);
  parse_status read_header(std::string_view data);
  // One value ended: pops finished aggregates; true when the frame is complete. `data`: the frame.
  bool value_done(std::string_view data);
  static bool is_command_reply_push(std::string_view push);
  bool is_top_level() const;

  struct level {
    std::int64_t remaining;  // elements still expected at this open aggregate
    bool attribute;          // an attribute: its pairs, then the value it annotates
    bool embedded;           // a push inside an aggregate: not one of the parent's elements
    std::size_t begin;       // offset of its header (for an embedded push)
  };

  limits limits_;
  std::size_t pos_ = 0;         // offset of the next unread header or payload
  std::size_t scan_ = 0;        // where the search for the current line's end resumes
  std::int64_t bulk_len_ = -1;  // length of the payload we wait for, or -1
  std::size_t frame_size_ = 0;
  char type_ = 0;
  reply_error error_ = reply_error::none;
  std::vector<level> stack_;  // open aggregates, outermost first
  std::vector<std::pair<std::size_t, std::size_t>> embedded_;
};

}  // namespace redis_sidecar::resp
