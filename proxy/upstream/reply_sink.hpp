// reply_sink: whoever waits for replies from an upstream connection. Client sessions are sinks
// (replies go into their ordered slots); so are the sidecar's own users of the upstream, the health
// probe and the fallback journal's replay. One seam, so the connection never needs to know which.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

namespace redis_sidecar {

class reply_sink {
 public:
  reply_sink() = default;
  reply_sink(const reply_sink&) = delete;  // sink_refs point at this object
  reply_sink& operator=(const reply_sink&) = delete;
  virtual ~reply_sink() = default;
  /// The reply for request `seq` (the sink's own numbering), or an error frame the connection made
  /// for it ("-ERR upstream ...") when the request cannot be answered. `received`: when the read
  /// that brought it completed (one clock reading per read, shared by every reply in it).
  virtual void deliver(std::uint64_t seq, std::string_view frame, std::uint8_t tag,
                       std::chrono::steady_clock::time_point received) = 0;
  /// As deliver(), for the connection's own error frame: the request got no reply, and may yet
  /// run (its bytes can still be in Redis' buffer when the connection fails).
  virtual void deliver_failure(std::uint64_t seq, std::string_view frame, std::uint8_t tag,
                               std::chrono::steady_clock::time_point received) {
    deliver(seq, frame, tag, received);
  }
  /// The reply for request `seq` is already read and comes soon after the one being delivered:
  /// start loading the memory its delivery will touch (the L1 slot a reply fills), in two stages
  /// some replies apart, `entry` false first, so that delivering a read's replies one by one does
  /// not wait for memory at each. Changes nothing.
  virtual void prefetch(std::uint64_t /*seq*/, bool /*entry*/) {}

 protected:
  /// The shared_ptr that owns this sink (its shared_from_this()).
  virtual std::shared_ptr<reply_sink> owner() = 0;

 private:
  friend class sink_ref;
  std::uint32_t waiting_ = 0;        // sink_refs that point here
  std::shared_ptr<reply_sink> pin_;  // set while waiting_ > 0
};

/// What a pending request holds of its sink: like a shared_ptr, it keeps the sink alive until the
/// reply is delivered or the request dropped, but it counts without atomics. The sink is pinned
/// (one shared_ptr copy) while it has requests pending, so a client with 16 requests in flight
/// pays for one shared_ptr copy, not 16. Everything runs on the io_context thread.
class sink_ref {
 public:
  sink_ref() = default;
  sink_ref(std::nullptr_t) {}  // NOLINT(google-explicit-constructor): no sink, reply dropped
  explicit sink_ref(reply_sink* s) : s_(s) {
    if (s_ == nullptr) return;
    if (s_->waiting_ == 0) s_->pin_ = s_->owner();  // first: owner() may throw (bad_weak_ptr)
    ++s_->waiting_;
  }
  sink_ref(sink_ref&& other) noexcept : s_(std::exchange(other.s_, nullptr)) {}
  sink_ref& operator=(sink_ref&& other) noexcept {
    if (this != &other) {
      reset();
      s_ = std::exchange(other.s_, nullptr);
    }
    return *this;
  }
  sink_ref(const sink_ref&) = delete;
  sink_ref& operator=(const sink_ref&) = delete;
  ~sink_ref() { reset(); }

  /// Lets go of the sink; the last reference unpins it, which may destroy it.
  void reset() {
    reply_sink* s = std::exchange(s_, nullptr);
    if (s != nullptr && --s->waiting_ == 0) std::shared_ptr<reply_sink> last = std::move(s->pin_);
  }
  reply_sink* operator->() const { return s_; }
  explicit operator bool() const { return s_ != nullptr; }

 private:
  reply_sink* s_ = nullptr;
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
