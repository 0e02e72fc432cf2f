// reply_sink: whoever waits for replies from an upstream connection. Client sessions are sinks
// (replies go into their ordered slots); so are the sidecar's own users of the upstream, the health
// probe and the fallback journal's replay. One seam, so the connection never needs to know which.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace redis_sidecar {

class reply_sink {
 public:
  virtual ~reply_sink() = default;
  /// The reply for request `seq` (the sink's own numbering), or an error frame the connection made
  /// for it ("-ERR upstream ...") when the request cannot be answered.
  virtual void deliver(std::uint64_t seq, std::string_view frame, std::uint8_t tag) = 0;
};

class connection;

/// Whoever must hear about a connection's out-of-band events: RESP3 pushes that answer no request
/// (CLIENT TRACKING invalidations, keyspace notifications), the RESP2 pub/sub arrays of a
/// subscriber connection, and the end of the connection. The near cache is one.
class connection_watcher {
 public:
  virtual ~connection_watcher() = default;
  virtual void pushed(connection* c, std::string_view frame) = 0;
  /// The connection closed for good (it does not reconnect); its pending requests already failed.
  virtual void closed(connection* c) = 0;
};

/// True for a RESP2 pub/sub array a subscribed connection receives without a request of its own
/// waiting (a message, pmessage or (p)subscribe confirmation), as Redis writes them (lower case).
inline bool is_pubsub_event(std::string_view frame) {
  static constexpr std::array<std::string_view, 4> heads{
      "*3\r\n$7\r\nmessage\r\n", "*4\r\n$8\r\npmessage\r\n", "*3\r\n$9\r\nsubscribe\r\n",
      "*3\r\n$10\r\npsubscribe\r\n"};
  for (auto h : heads)
    if (frame.substr(0, h.size()) == h) return true;
  return false;
}

}  // namespace redis_sidecar
