// subscriptions: what a subscribed client's upstream frames say about its subscriptions, without
// I/O. A subscribed client is in raw mode (client_session): its requests and frames pass through
// unread on a connection of its own. This reads just enough of the frames to see the client
// unsubscribe from everything, so that the session can leave raw mode and give the connection
// back instead of holding it until the client disconnects.
//
// Redis counts two sets apart in its confirmations (pubsub.c): channels and patterns together
// (SUBSCRIBE, PSUBSCRIBE and their UNSUBSCRIBEs), and shard channels (SSUBSCRIBE, SUNSUBSCRIBE).
// A client has left subscribed mode when both are zero.
//
// Requests sent before an UNSUBSCRIBE's confirmation came back may still be answered after it (a
// pipelined SUBSCRIBE, a BLPOP). So the session then sends a marker, PING <token>, waits for its
// reply (everything sent before it has been answered by then) and leaves raw mode only if the
// counts are still zero.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/resp/value.hpp"
#include "proxy/resp/writer.hpp"

namespace redis_sidecar {

/// One (un)subscribe confirmation: [kind, channel, count], an array in RESP2, a push in RESP3.
struct pubsub_confirmation {
  bool shard = false;    // ssubscribe, sunsubscribe
  bool pattern = false;  // psubscribe, punsubscribe
  bool unsubscribe = false;
  std::int64_t count = 0;  // subscriptions of its set left
};

/// The confirmation `frame` is, if it is one, on a connection speaking RESP `proto`: an array in
/// RESP2, only a push in RESP3 (where a script's reply could be an array of the same shape). Every
/// other frame (messages, replies) is told apart by its first bytes, without decoding.
inline std::optional<pubsub_confirmation> parse_confirmation(std::string_view frame, int proto) {
  struct head {
    std::string_view bytes;  // after the type byte, as Redis writes them (lower case)
    bool shard;
    bool pattern;
    bool unsubscribe;
  };
  static constexpr std::array<head, 6> heads{{
      {"3\r\n$9\r\nsubscribe\r\n", false, false, false},
      {"3\r\n$10\r\npsubscribe\r\n", false, true, false},
      {"3\r\n$10\r\nssubscribe\r\n", true, false, false},
      {"3\r\n$11\r\nunsubscribe\r\n", false, false, true},
      {"3\r\n$12\r\npunsubscribe\r\n", false, true, true},
      {"3\r\n$12\r\nsunsubscribe\r\n", true, false, true},
  }};
  if (frame.size() < 2 || frame[0] != (proto == 3 ? '>' : '*')) return std::nullopt;
  const std::string_view rest = frame.substr(1);
  for (const head& h : heads) {
    if (!rest.starts_with(h.bytes)) continue;
    const auto v = resp::decode(frame);
    if (!v || v->elements.size() != 3 || v->elements[2].type != resp::value::kind::integer)
      return std::nullopt;
    return pubsub_confirmation{h.shard, h.pattern, h.unsubscribe, v->elements[2].integer};
  }
  return std::nullopt;
}

/// A subscribed client's subscription counts, as its confirmations report them.
class subscription_tracker {
 public:
  /// Reads one frame from the client's connection (RESP `proto`). True when it is an unsubscribe
  /// confirmation that leaves the client with no subscription at all.
  ///
  /// In RESP2 a script's reply could have a confirmation's shape too, but only outside subscribed
  /// mode (Redis refuses EVAL there), where it can only make the client look subscribed: the safe
  /// side, as the client then keeps its connection.
  bool on_frame(std::string_view frame, int proto) {
    const auto c = parse_confirmation(frame, proto);
    if (!c) return false;
    const std::int64_t count = std::max<std::int64_t>(c->count, 0);  // (no overflow below)
    if (c->shard) {
      shard_ = count;
    } else {
      // Redis reports channels and patterns as one count; a confirmation changes one of them.
      both_ = count;
      std::int64_t& changed = c->pattern ? patterns_ : channels_;
      const std::int64_t other = c->pattern ? channels_ : patterns_;
      changed = std::max<std::int64_t>(0, count - other);
      if (count == 0) channels_ = patterns_ = 0;
    }
    return c->unsubscribe && !subscribed();
  }
  bool subscribed() const { return both_ > 0 || shard_ > 0; }
  /// CLIENT LIST's sub, psub and ssub.
  std::int64_t channels() const { return channels_; }
  std::int64_t patterns() const { return patterns_; }
  std::int64_t shard_channels() const { return shard_; }

 private:
  std::int64_t both_ = 0;  // channels and patterns, as Redis counts them
  std::int64_t channels_ = 0;
  std::int64_t patterns_ = 0;
  std::int64_t shard_ = 0;
};

/// The marker request: PING <token>. Allowed in subscribed mode too.
inline std::string marker_request(std::string_view token) {
  std::string r;
  const std::array<std::string_view, 2> words{"PING", token};
  resp::append_command(r, words);
  return r;
}

/// Whether `frame` is the marker's reply: the token as a bulk string, or, from a RESP2 client
/// still subscribed, ["pong", token].
inline bool is_marker_reply(std::string_view frame, std::string_view token) {
  std::string bulk;
  resp::append_bulk(bulk, token);
  if (frame == bulk) return true;
  static constexpr std::string_view pong = "*2\r\n$4\r\npong\r\n";
  return frame.size() == pong.size() + bulk.size() && frame.starts_with(pong) &&
         frame.substr(pong.size()) == bulk;
}

}  // namespace redis_sidecar
