// write_fence: whether a reply that would fill L1 tells the key's value now, given the writes to
// that key travelling on other upstream connections. Sans-I/O.
//
// Redis runs each connection's requests in the order sent, but interleaves connections as their
// bytes arrive: two requests for one key on different connections may run in either order, and
// their replies may be handled in the other. Two clients' SETs of one key, one of them queued
// behind a large reply, would leave L1 holding the value Redis overwrote; a GET that ran before
// another connection's write, and whose reply comes after the write's, the value from before it.
//
// So every write to a key is an event on that key, twice: when it is sent and when its reply is
// handled (after which it has run). A request notes the event clock when it is sent; its reply
// may fill L1 only if no other connection's event touched the key since:
//
//   request on A sent at t ............. reply handled: settled(key, A, t)?
//     write on B sent (t' > t)      -> may run before or after it: not settled
//     write on B replied (t' > t)   -> it was in flight while the request was: not settled
//     write on A, sent or replied   -> ordered with the request by A itself: settled
//
// A write whose reply is not settled drops the key instead of storing its value. A read that is
// not settled leaves L1 as it is: a write whose reply comes later stores or drops the key again.
//
// Events go to one of a fixed number of slots by the key's hash, and flushes (FLUSHALL, SWAPDB) to
// one slot that every key shares; every event also goes to a slot of all events, which answers
// at once for a reply while no other connection writes. Keys share slots: a collision only makes a
// reply look raced, so L1 drops or skips what it could have kept; nothing is allocated per request
// and nothing needs forgetting. Each slot keeps the last event, its connection, and the last event
// of any other connection, which answers "any event since t not from connection c" exactly for the
// slot.
//
// Keys are named by their hash (hash(), cache/key_hash.hpp's with the seed the fence was built
// with): the cache tier builds the fence with L1's seed, so that a key it looks up in both is
// hashed once. The slot is taken from the hash's bits 32 and up, L1's home slot from its low bits.
//
// Connections are named by a serial that is never reused (0: the connection is not known, and
// every request of that name counts as one connection). Not thread-safe: it lives with the cache
// tier on the server's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace redis_sidecar {

class write_fence {
 public:
  /// `slots` is rounded up to a power of two; `seed` is the keys' hash seed (0: drawn from the
  /// system's random source).
  explicit write_fence(std::size_t slots = 16384, std::uint64_t seed = 0);

  /// The name of `key` of `db` in the calls below.
  std::uint64_t hash(int db, std::string_view key) const;
  /// The event clock: what a request notes when it is sent.
  std::uint64_t clock() const { return clock_; }
  /// A write to the key, sent on or replied from connection `conn`.
  void touched(std::uint64_t key, std::uint32_t conn) {
    touch(slot_of(key), conn);
    touch(any_, conn);
  }
  /// A write to `key` whose running is not known to be over (its reply was an error, perhaps the
  /// sidecar's own for a connection that failed, while its bytes may still be in Redis' buffer;
  /// a raw-mode write without a marker): no reply of any connection fills L1 for the key until
  /// release(). A hold is an event at either end.
  void hold(std::uint64_t key, std::uint32_t conn) {
    slot& s = slot_of(key);
    touch(s, conn);
    ++s.holds;
    touch(any_, conn);
    ++any_.holds;
  }
  void release(std::uint64_t key, std::uint32_t conn) {
    slot& s = slot_of(key);
    touch(s, conn);
    if (s.holds > 0) --s.holds;
    touch(any_, conn);
    if (any_.holds > 0) --any_.holds;
  }
  /// True while the key is held (for reads that do not note the clock: the near cache's, whose
  /// in-flight reads hear of every write to their key, a release included).
  bool held(std::uint64_t key) const { return any_.holds != 0 && slot_of(key).holds != 0; }
  /// Starts loading the key's slot, for a write's event coming soon: the table is larger than the
  /// CPU's near caches, and a batch of writes would otherwise wait for their slots one by one.
  /// Changes nothing.
  void prefetch(std::uint64_t key) const { __builtin_prefetch(&slot_of(key), 1); }
  /// A write that may change every key (FLUSHALL, FLUSHDB, SWAPDB).
  void touched_all(std::uint32_t conn) {
    touch(all_, conn);
    touch(any_, conn);
  }
  /// True when no connection but `conn` wrote to the key, or flushed, since clock `since`.
  bool settled(std::uint64_t key, std::uint32_t conn, std::uint64_t since) const {
    if (any_.holds == 0 && settled(any_, conn, since)) return true;  // no other writes since
    const slot& s = slot_of(key);
    return s.holds == 0 && settled(all_, conn, since) && settled(s, conn, since);
  }
  /// settled(), then touched(): a write's reply, with one look at the key's slot.
  bool settle(std::uint64_t key, std::uint32_t conn, std::uint64_t since) {
    slot& s = slot_of(key);
    const bool quiet = (any_.holds == 0 && settled(any_, conn, since)) ||
                       (s.holds == 0 && settled(all_, conn, since) && settled(s, conn, since));
    touch(s, conn);
    touch(any_, conn);
    return quiet;
  }

 private:
  struct slot {
    std::uint64_t last = 0;   // the clock at the slot's last event
    std::uint64_t other = 0;  // the clock at the last event of a connection other than `conn`
    std::uint32_t conn = 0;   // the connection of the last event
    std::uint32_t holds = 0;  // hold()s not released yet (of keys in this slot)
  };
  const slot& slot_of(std::uint64_t key) const { return slots_[(key >> 32) & mask_]; }
  slot& slot_of(std::uint64_t key) { return slots_[(key >> 32) & mask_]; }
  void touch(slot& s, std::uint32_t conn);
  static bool settled(const slot& s, std::uint32_t conn, std::uint64_t since) {
    return s.last <= since || (s.conn == conn && s.other <= since);
  }

  std::vector<slot> slots_;
  std::size_t mask_;
  std::uint64_t seed_;  // of the slots' hash (cache/key_hash.hpp)
  slot all_;            // flushes
  slot any_;  // every event: when no other connection wrote since, no slot need be looked at
  std::uint64_t clock_ = 0;
};

}  // namespace redis_sidecar
