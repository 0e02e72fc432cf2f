// channel_message: what the near cache's invalidation channel says, without I/O. The channel is
// CLIENT TRACKING (RESP3 pushes, or RESP2 messages on a connection subscribed to
// __redis__:invalidate for REDIRECT) or keyspace notifications (pmessage on __keyspace@<db>__:*).
// Every form comes down to one of: the subscription is confirmed, these keys changed, or
// everything changed. Also here: whether a server's notify-keyspace-events setting covers what
// keyspace mode needs. Header-only: small pure functions, unit-tested byte by byte.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/resp/value.hpp"

namespace redis_sidecar {

/// The notify-keyspace-events classes keyspace mode needs besides `K`: generic commands (del,
/// expire, rename, ...), string commands, expirations and evictions, and the list, set and sorted
/// set commands that replace whatever their destination key held (SORT ... STORE, SUNIONSTORE,
/// ZUNIONSTORE, GEOSEARCHSTORE, ...: their event is in their own class, not in `g`). `A` covers
/// them all.
inline constexpr std::string_view keyspace_needed_classes = "g$lszxe";

/// The flags of `notify-keyspace-events` that are missing for keyspace mode ("" when it is
/// covered): `K` and either `A` or each of `g $ l s z x e`.
inline std::string missing_keyspace_flags(std::string_view flags) {
  std::string missing;
  if (flags.find('K') == std::string_view::npos) missing.push_back('K');
  if (flags.find('A') != std::string_view::npos) return missing;
  for (char c : keyspace_needed_classes)
    if (flags.find(c) == std::string_view::npos) missing.push_back(c);
  return missing;
}

/// The pattern keyspace mode subscribes to for `db`.
inline std::string keyspace_pattern(int db) { return "__keyspace@" + std::to_string(db) + "__:*"; }

/// The key a keyspace channel (`__keyspace@<db>__:<key>`) names, when it is for `db`.
inline std::optional<std::string_view> keyspace_key(std::string_view channel, int db) {
  const std::string prefix = "__keyspace@" + std::to_string(db) + "__:";
  if (channel.size() < prefix.size() || channel.substr(0, prefix.size()) != prefix)
    return std::nullopt;
  return channel.substr(prefix.size());
}

/// The channel REDIRECT tracking invalidations are published on.
inline constexpr std::string_view invalidate_channel = "__redis__:invalidate";

struct channel_message {
  enum class kind : std::uint8_t {
    other,       // nothing the cache acts on
    subscribed,  // a (p)subscribe confirmation
    keys,        // these keys changed (keyspace: one key)
    flush,       // everything changed (tracking's null invalidation: FLUSHALL / FLUSHDB)
  };
  kind what = kind::other;
  std::vector<std::string> keys;
  std::string event;  // keyspace: the event name (set, del, expired, ...)
};

namespace detail {

inline channel_message invalidation_keys(const resp::value& keys) {
  channel_message m;
  if (keys.type == resp::value::kind::null) {
    m.what = channel_message::kind::flush;
    return m;
  }
  if (keys.type != resp::value::kind::array && keys.type != resp::value::kind::set) return m;
  m.what = channel_message::kind::keys;
  for (const auto& k : keys.elements) m.keys.push_back(k.str);
  return m;
}

}  // namespace detail

/// Classifies one decoded frame of the channel: a RESP3 push or a RESP2 pub/sub array.
///   >2 invalidate <keys|null>                   tracking, RESP3
///   *3 message __redis__:invalidate <keys|null>  tracking with REDIRECT, RESP2
///   [>*]4 pmessage <pattern> __keyspace@<db>__:<key> <event>
///   [>*]3 subscribe|psubscribe <channel> <count>
inline channel_message parse_channel_message(const resp::value& v, int db) {
  using kind = resp::value::kind;
  channel_message m;
  if ((v.type != kind::push && v.type != kind::array) || v.elements.empty()) return m;
  const auto& e = v.elements;
  const std::string& name = e[0].str;
  if (name == "invalidate" && e.size() == 2) return detail::invalidation_keys(e[1]);
  if (name == "message" && e.size() == 3 && e[1].str == invalidate_channel)
    return detail::invalidation_keys(e[2]);
  if ((name == "subscribe" || name == "psubscribe") && e.size() == 3) {
    m.what = channel_message::kind::subscribed;
    return m;
  }
  if (name == "pmessage" && e.size() == 4) {
    const auto key = keyspace_key(e[2].str, db);
    if (!key) return m;
    m.what = channel_message::kind::keys;
    m.keys.emplace_back(*key);
    m.event = e[3].str;
  }
  return m;
}

}  // namespace redis_sidecar
