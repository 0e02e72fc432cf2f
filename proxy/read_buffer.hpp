// read_buffer: the byte buffer a socket is read into, grown without being zero-filled.
//
// Why. A std::string resized to its first read chunk writes zeros over all of it, so every
// connection made its buffer resident at once: 64 KB per client session and 32 KB per upstream
// connection, idle or not (300 clients blocked in BLPOP, each with its own upstream connection,
// took 112 KB of RSS apiece over a plaintext upstream). Here the bytes past what was kept are left
// as malloc gives them: the kernel backs only the pages reads reach, and reads of small requests
// reach only the first.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

namespace redis_sidecar {

/// Lets a write buffer go when one large request or reply grew it past `max_kept`: a pooled or
/// long-lived connection must not keep a single large value's size for good.
inline void release_if_above(std::string& s, std::size_t max_kept) {
  if (s.capacity() > max_kept) std::string().swap(s);
}

class read_buffer {
 public:
  char* data() { return bytes_.get(); }
  const char* data() const { return bytes_.get(); }
  std::size_t size() const { return size_; }

  /// Grows to `size` bytes (never shrinks), keeping the first `keep` bytes; the rest is
  /// unspecified.
  void grow(std::size_t size, std::size_t keep) {
    if (size <= size_) return;
    std::unique_ptr<char[]> bigger(new char[size]);
    if (keep > 0) std::memcpy(bigger.get(), bytes_.get(), keep < size_ ? keep : size_);
    bytes_ = std::move(bigger);
    size_ = size;
  }

  /// Makes room for a read of at least `room` bytes behind the unread bytes [start, end): with
  /// nothing unread, both go back to 0 (and a buffer grown past `max_kept` is let go); the unread
  /// bytes move to the front only when the room behind them runs short; the buffer grows
  /// (doubling, to at least `min_size`) only when that is still not enough.
  void make_room(std::size_t& start, std::size_t& end, std::size_t room, std::size_t min_size,
                 std::size_t max_kept) {
    if (start == end) {
      start = end = 0;
      if (size_ > max_kept) release();
    } else if (start > 0 && size_ - end < room) {
      std::memmove(data(), data() + start, end - start);
      end -= start;
      start = 0;
    }
    if (size_ - end < room) grow(std::max(2 * size_, min_size), end);
  }

  /// Lets the memory go.
  void release() {
    bytes_.reset();
    size_ = 0;
  }

 private:
  std::unique_ptr<char[]> bytes_;
  std::size_t size_ = 0;
};

}  // namespace redis_sidecar
