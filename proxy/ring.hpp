// ring: a FIFO over one growable array. Push at the back, pop at the front, index from the front.
// Unlike std::deque it never frees or allocates once it has grown to the working set, so the
// per-request queues (client reply slots, upstream pending replies) allocate nothing when warm.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace redis_sidecar {

template <typename T>
class ring {
 public:
  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }

  T& front() { return items_[head_]; }
  T& back() { return items_[wrap(head_ + size_ - 1)]; }
  const T& front() const { return items_[head_]; }
  const T& back() const { return items_[wrap(head_ + size_ - 1)]; }
  T& operator[](std::size_t i) { return items_[wrap(head_ + i)]; }
  const T& operator[](std::size_t i) const { return items_[wrap(head_ + i)]; }

  void push_back(T v) {
    if (size_ == items_.size()) grow();
    items_[wrap(head_ + size_)] = std::move(v);
    ++size_;
  }

  /// Removes the front element, leaving a moved-from value behind (its capacity, for strings, stays
  /// with the moved-to value the caller took, or is reset by the next push).
  void pop_front() {
    items_[head_] = T{};
    head_ = wrap(head_ + 1);
    --size_;
  }

  /// Removes the back element. Precondition: !empty().
  void pop_back() {
    back() = T{};
    --size_;
  }

  void clear() {
    while (!empty()) pop_front();
    head_ = 0;
  }

 private:
  std::size_t wrap(std::size_t i) const { return i & (items_.size() - 1); }

  void grow() {
    std::vector<T> bigger(items_.empty() ? 16 : items_.size() * 2);  // always a power of two
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move(items_[wrap(head_ + i)]);
    items_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<T> items_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace redis_sidecar
