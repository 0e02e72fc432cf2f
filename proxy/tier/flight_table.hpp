// flight_table: the near cache's reads in flight, by read number and by key. Each GET that L1
// cannot answer becomes a read (or joins one), so this table is on the path of every miss and
// must cost no allocation in steady state:
//
//   ring_   [ .. | head_ | live | taken | live | .. | next_ | .. ]   read r in slot r & mask
//   index_  open addressing, linear probing: read numbers of joinable reads, 0 = empty
//
// Read numbers are handed out in increasing order and replies come back nearly in that order (one
// connection, FIFO), so the reads live in a ring indexed by read number; the ring doubles when the
// oldest read still in flight is a ring's length behind. A key's joinable read, the one a later
// miss of that key joins, is found through an index holding only read numbers: keys are compared
// in place in the flights, with the hash each flight keeps. Flights are recycled with the capacity
// of their key, error and waiter list, so a warm table allocates nothing.
//
// Not thread-safe: it lives with its near cache on the server's io_context thread. The index
// hashes keys from clients with std::hash; at most half full, its probes stay short for keys
// that are not built to collide.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/upstream/reply_sink.hpp"

namespace redis_sidecar {

class flight_table {
 public:
  struct waiter {
    std::shared_ptr<reply_sink> sink;
    std::uint64_t seq;
    int proto;
  };
  struct flight {
    std::string key;
    std::size_t hash = 0;  // of key
    std::vector<waiter> waiters;
    bool invalidated = false;  // an invalidation (or a write of ours) came while it was in flight
    bool alone = false;        // read again in a transaction of its own after an abort
    std::uint32_t batch = 0;   // on a batch's first read: how many reads (read numbers) it holds
    std::string error;         // Redis refused to queue its PTTL or GET (the EXEC then aborts)
    std::int64_t sent_ms = 0;  // when its transaction went out (the steady clock, ms)

    /// On a batch's first read: the read numbers its transaction holds (at least its own).
    std::uint32_t batch_reads() const { return batch > 1 ? batch : 1; }
  };
  using flight_ptr = std::unique_ptr<flight>;

  static std::size_t hash(std::string_view key) { return std::hash<std::string_view>{}(key); }

  flight_table();

  /// Reads in flight (taken ones not counted).
  std::size_t size() const { return live_; }
  bool empty() const { return live_ == 0; }
  /// The number the next open() hands out. Read numbers start at 1; 0 means none.
  std::uint64_t next() const { return next_; }

  /// A new read of `key` (`h` = hash(key)), not joinable yet; returns its number.
  std::uint64_t open(std::string_view key, std::size_t h);
  /// Files a taken flight again under a new read number, not joinable; returns the number.
  std::uint64_t reopen(flight_ptr f);
  /// The read in flight with that number, or nullptr.
  flight* find(std::uint64_t read);

  /// The key's joinable read, or 0.
  std::uint64_t joinable(std::string_view key, std::size_t h) const;
  /// Makes `read` (in flight) its key's joinable read, in place of any other.
  void join_to(std::uint64_t read);
  /// The key has no joinable read any more; returns the one it had, or 0.
  std::uint64_t unjoin(std::string_view key, std::size_t h);
  /// No key has a joinable read any more.
  void unjoin_all();

  /// Takes a read out of the table (nullptr when it is not in flight); `*was_joinable` says
  /// whether it was its key's joinable read. Hand it back with recycle() once answered.
  flight_ptr take(std::uint64_t read, bool* was_joinable = nullptr);
  /// Keeps a taken flight's storage for a later open() (its waiters are let go now).
  void recycle(flight_ptr f);

  /// The numbers of the reads in flight, oldest first.
  std::vector<std::uint64_t> reads() const;
  /// The ring's length: at least the span from the oldest read in flight to next().
  std::size_t ring_length() const { return ring_.size(); }

 private:
  std::size_t slot_of(std::uint64_t read) const { return read & (ring_.size() - 1); }
  std::uint64_t place(flight_ptr f);
  void grow_ring();
  void grow_index();
  std::size_t position_of(std::string_view key, std::size_t h) const;
  // Index position of `read` (its key's joinable read), or npos.
  std::size_t position(std::uint64_t read) const;
  void erase_at(std::size_t pos);

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  static constexpr std::size_t first_ring = 64;   // the ring's length to begin with (index: 2x)
  static constexpr std::size_t max_spare = 1024;  // recycled flights kept at most

  std::vector<flight_ptr> ring_;      // power-of-two length; null: taken, or not in flight
  std::uint64_t head_ = 1;            // no read below it is in flight
  std::uint64_t next_ = 1;            // the next read number
  std::size_t live_ = 0;              // non-null slots
  std::vector<std::uint64_t> index_;  // power-of-two length, at most half full
  std::size_t indexed_ = 0;
  std::vector<flight_ptr> spare_;  // recycled flights
};

}  // namespace redis_sidecar
