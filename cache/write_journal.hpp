// write_journal: a bounded FIFO of the writes the sidecar acknowledged while the upstream Redis was
// down, replayed in order when it recovers. An acknowledged write is never dropped: when a write
// would not fit, push() refuses it and the proxy answers that client with an error instead.
//
//   records:  [ front: oldest, replayed first | ... | newest ]
//
// Each record is the db the command ran in and the complete RESP request frame. The bound is in
// bytes: each record charges its frame size plus record_overhead. Not thread-safe: the proxy's
// io_context thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

namespace redis_sidecar::cache {

struct journal_record {
  int db;             // the database selected when the write was accepted
  std::string frame;  // the complete RESP request, as received
  // Replays that the upstream refused it for now (READONLY, OOM, ...), and when the first was.
  std::uint32_t refusals = 0;
  std::int64_t refused_since = 0;
};

class write_journal {
 public:
  /// Bytes charged per record beyond its frame: the record itself in the deque plus an allocator
  /// estimate for the frame's heap block (its 8-byte header, rounding and terminating '\0').
  static constexpr std::size_t record_overhead = sizeof(journal_record) + 24;

  /// max_bytes bounds the sum of frame sizes plus record_overhead per record.
  explicit write_journal(std::size_t max_bytes);

  /// Appends the write; false (and nothing changes) when it would exceed max_bytes().
  bool push(int db, std::string_view frame);

  /// The oldest record. Precondition: !empty().
  const journal_record& front() const;

  /// The i-th oldest record (replay pipelines several). Precondition: i < size().
  const journal_record& at(std::size_t i) const { return records_[i]; }
  journal_record& at(std::size_t i) { return records_[i]; }

  /// Drops the oldest record (after it was replayed). Precondition: !empty().
  void pop_front();

  /// Drops the i-th oldest record (replayed behind older ones the upstream refused for now).
  /// Precondition: i < size().
  void erase(std::size_t i);

  void clear();
  bool empty() const { return records_.empty(); }
  std::size_t size() const { return records_.size(); }
  std::size_t bytes() const { return bytes_; }
  std::size_t max_bytes() const { return max_bytes_; }

 private:
  std::deque<journal_record> records_;
  std::size_t bytes_ = 0;
  std::size_t max_bytes_;
};

}  // namespace redis_sidecar::cache
