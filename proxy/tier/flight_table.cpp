#include "proxy/tier/flight_table.hpp"

#include <algorithm>
#include <utility>

namespace redis_sidecar {

flight_table::flight_table() : ring_(first_ring), index_(2 * first_ring) {}

std::uint64_t flight_table::open(std::string_view key, std::size_t h) {
  flight_ptr f;
  if (spare_.empty()) {
    f = std::make_unique<flight>();
  } else {
    f = std::move(spare_.back());
    spare_.pop_back();
  }
  f->key.assign(key);
  f->hash = h;
  return place(std::move(f));
}

std::uint64_t flight_table::reopen(flight_ptr f) { return place(std::move(f)); }

std::uint64_t flight_table::place(flight_ptr f) {
  if (next_ - head_ >= ring_.size()) grow_ring();
  const std::uint64_t read = next_++;
  ring_[slot_of(read)] = std::move(f);
  ++live_;
  return read;
}

// Doubles the ring; every read in flight keeps its number, its slot is read & the new mask.
void flight_table::grow_ring() {
  std::vector<flight_ptr> bigger(ring_.size() * 2);
  for (std::uint64_t read = head_; read != next_; ++read)
    bigger[read & (bigger.size() - 1)] = std::move(ring_[slot_of(read)]);
  ring_ = std::move(bigger);
}

flight_table::flight* flight_table::find(std::uint64_t read) {
  if (read < head_ || read >= next_) return nullptr;
  return ring_[slot_of(read)].get();
}

// The index position holding the key's joinable read, or the empty one where it would go.
std::size_t flight_table::position_of(std::string_view key, std::size_t h) const {
  const std::size_t mask = index_.size() - 1;
  std::size_t i = h & mask;
  for (; index_[i] != 0; i = (i + 1) & mask) {
    const flight& f = *ring_[slot_of(index_[i])];
    if (f.hash == h && f.key == key) break;
  }
  return i;
}

std::uint64_t flight_table::joinable(std::string_view key, std::size_t h) const {
  return index_[position_of(key, h)];
}

void flight_table::join_to(std::uint64_t read) {
  const flight* f = find(read);
  if (f == nullptr) return;
  if (2 * (indexed_ + 1) > index_.size()) grow_index();
  std::uint64_t& entry = index_[position_of(f->key, f->hash)];
  if (entry == 0) ++indexed_;
  entry = read;  // in place of the key's older read, if any
}

void flight_table::grow_index() {
  std::vector<std::uint64_t> old(index_.size() * 2);
  old.swap(index_);
  const std::size_t mask = index_.size() - 1;
  for (const std::uint64_t read : old) {
    if (read == 0) continue;
    std::size_t i = ring_[slot_of(read)]->hash & mask;
    while (index_[i] != 0) i = (i + 1) & mask;
    index_[i] = read;
  }
}

std::uint64_t flight_table::unjoin(std::string_view key, std::size_t h) {
  const std::uint64_t read = joinable(key, h);
  if (read != 0) erase_at(position(read));
  return read;
}

void flight_table::unjoin_all() {
  if (indexed_ == 0) return;
  std::fill(index_.begin(), index_.end(), 0);
  indexed_ = 0;
}

std::size_t flight_table::position(std::uint64_t read) const {
  const std::size_t mask = index_.size() - 1;
  for (std::size_t i = ring_[slot_of(read)]->hash & mask; index_[i] != 0; i = (i + 1) & mask)
    if (index_[i] == read) return i;
  return npos;
}

// Backward-shift deletion: later entries of the probe run move up into the hole when their home
// position allows it, so no tombstones accumulate.
void flight_table::erase_at(std::size_t pos) {
  const std::size_t mask = index_.size() - 1;
  std::size_t hole = pos;
  for (std::size_t i = (pos + 1) & mask; index_[i] != 0; i = (i + 1) & mask) {
    const std::size_t home = ring_[slot_of(index_[i])]->hash & mask;
    // The entry at i may fill the hole unless its home lies cyclically in (hole, i].
    const bool stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
    if (stays) continue;
    index_[hole] = index_[i];
    hole = i;
  }
  index_[hole] = 0;
  --indexed_;
}

flight_table::flight_ptr flight_table::take(std::uint64_t read, bool* was_joinable) {
  if (was_joinable != nullptr) *was_joinable = false;
  if (find(read) == nullptr) return nullptr;
  if (const std::size_t pos = position(read); pos != npos) {
    erase_at(pos);
    if (was_joinable != nullptr) *was_joinable = true;
  }
  flight_ptr f = std::move(ring_[slot_of(read)]);
  --live_;
  while (head_ != next_ && !ring_[slot_of(head_)]) ++head_;
  if (live_ == 0 && ring_.size() > 16 * first_ring) {
    // A burst of misses is over: its ring and index go back to their first size.
    ring_ = std::vector<flight_ptr>(first_ring);
    index_ = std::vector<std::uint64_t>(2 * first_ring);
  }
  return f;
}

void flight_table::recycle(flight_ptr f) {
  if (!f || spare_.size() >= max_spare) return;
  // A very long key or error would keep its memory for good: such a flight is let go.
  if (f->key.capacity() > 256 || f->error.capacity() > 256 || f->waiters.capacity() > 64) return;
  f->waiters.clear();
  f->error.clear();
  f->invalidated = false;
  f->alone = false;
  f->batch = 0;
  spare_.push_back(std::move(f));
}

std::vector<std::uint64_t> flight_table::reads() const {
  std::vector<std::uint64_t> out;
  out.reserve(live_);
  for (std::uint64_t read = head_; read != next_; ++read)
    if (ring_[slot_of(read)]) out.push_back(read);
  return out;
}

}  // namespace redis_sidecar
