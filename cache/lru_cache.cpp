// lru_cache: see lru_cache.hpp for the contract, layout and accounting.
#include "cache/lru_cache.hpp"

#include <cassert>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace redis_sidecar::cache {

namespace {

using detail::address_mask;
using detail::entry_header;

constexpr std::uint32_t min_capacity = 16;
constexpr std::uint32_t max_capacity = std::uint32_t{1} << 31;  // slot numbers stay below npos

// Slot bits (see the layout in lru_cache.hpp): the top byte is the tag, where bit 63 marks a used
// slot, ref_bit is the CLOCK reference bit, and bits 61-56 are hash bits that let find() skip
// most non-matching slots; the low 56 bits are the entry's address.
constexpr std::uint64_t ref_bit = std::uint64_t{0x40} << detail::tag_shift;
static_assert(sizeof(void*) <= sizeof(std::uint64_t));

// The tag of a new entry, in place in a slot word: reference bit clear.
std::uint64_t tag_of(std::uint64_t hash) { return ((hash >> 58) | 0x80) << detail::tag_shift; }

unsigned char* put_varint(unsigned char* p, std::uint64_t v) {
  for (; v >= 0x80; v >>= 7) *p++ = static_cast<unsigned char>(v | 0x80);
  *p++ = static_cast<unsigned char>(v);
  return p;
}

const unsigned char* get_varint(const unsigned char* p, std::uint64_t& v) {
  v = 0;
  for (int shift = 0;; shift += 7) {
    const unsigned char b = *p++;
    v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return p;
  }
}

struct decoded {
  int db;
  std::string_view key;
  std::string_view value;
};

decoded decode(const entry_header* e) {
  const auto* p = reinterpret_cast<const unsigned char*>(e + 1);
  std::uint64_t db = 0;
  std::uint64_t key_size = 0;
  std::uint64_t value_size = 0;
  p = get_varint(p, db);
  p = get_varint(p, key_size);
  p = get_varint(p, value_size);
  const auto* key = reinterpret_cast<const char*>(p);
  return {static_cast<int>(static_cast<std::uint32_t>(db)),
          {key, key_size},
          {key + key_size, value_size}};
}

std::uint64_t hash_of(const entry_header* e, std::uint64_t seed) {
  const decoded d = decode(e);
  return hash_key(d.db, d.key, seed);
}

std::size_t charge_of(const entry_header* e) {
  const decoded d = decode(e);
  return lru_cache::charge(d.db, d.key.size(), d.value.size());
}

bool is_expired(time_ms expires_at, time_ms now) {
  return expires_at != no_expiry && expires_at <= now;
}

}  // namespace

lru_cache::lru_cache(options o)
    : options_(o), seed_(o.hash_seed != 0 ? o.hash_seed : random_seed()) {}

lru_cache::~lru_cache() { release(); }

lru_cache::lru_cache(lru_cache&& other) noexcept
    : options_(other.options_),
      slots_(std::exchange(other.slots_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      seed_(other.seed_),
      head_(std::exchange(other.head_, npos)),
      tail_(std::exchange(other.tail_, npos)),
      cursor_(std::exchange(other.cursor_, 0)),
      entries_(std::exchange(other.entries_, 0)),
      bytes_(std::exchange(other.bytes_, 0)),
      evictions_(std::exchange(other.evictions_, 0)),
      expirations_(std::exchange(other.expirations_, 0)) {}

lru_cache& lru_cache::operator=(lru_cache&& other) noexcept {
  if (this != &other) {
    lru_cache moved(std::move(other));
    std::swap(options_, moved.options_);
    std::swap(slots_, moved.slots_);
    std::swap(capacity_, moved.capacity_);
    std::swap(seed_, moved.seed_);
    std::swap(head_, moved.head_);
    std::swap(tail_, moved.tail_);
    std::swap(cursor_, moved.cursor_);
    std::swap(entries_, moved.entries_);
    std::swap(bytes_, moved.bytes_);
    std::swap(evictions_, moved.evictions_);
    std::swap(expirations_, moved.expirations_);
  }
  return *this;
}

std::optional<entry_view> lru_cache::get(int db, std::string_view key, time_ms now) {
  const std::uint32_t s = find(db, key, hash(db, key));
  if (s == npos) return std::nullopt;
  entry_header* e = entry_at(s);
  if (is_expired(e->expires_at, now)) {
    remove(s);
    ++expirations_;
    return std::nullopt;
  }
  slots_[s] |= ref_bit;
  return entry_view{decode(e).value, e->expires_at};
}

std::optional<entry_view> lru_cache::peek(int db, std::string_view key, time_ms now) const {
  const std::uint32_t s = find(db, key, hash(db, key));
  if (s == npos) return std::nullopt;
  const entry_header* e = entry_at(s);
  if (is_expired(e->expires_at, now)) return std::nullopt;
  return entry_view{decode(e).value, e->expires_at};
}

bool lru_cache::put(int db, std::string_view key, std::string_view head, std::string_view body,
                    time_ms expires_at, time_ms now, std::uint64_t hash) {
  assert(hash == this->hash(db, key));
  const std::size_t value_size = head.size() + body.size();
  if (const std::uint32_t old = find(db, key, hash); old != npos) {
    entry_header* e = entry_at(old);
    const std::string_view stored = decode(e).value;
    if (stored.size() == value_size && !is_expired(expires_at, now)) {
      // The same size (a hot key refilled): overwrite in place. The charge is unchanged, so no
      // free, malloc, index change or eviction, and the reference bit stands for the move to the
      // head that would touch the neighbours' slots and blocks.
      char* to = const_cast<char*>(stored.data());
      if (!body.empty()) std::memmove(to + head.size(), body.data(), body.size());
      if (!head.empty()) std::memmove(to, head.data(), head.size());
      e->expires_at = expires_at;
      slots_[old] |= ref_bit;
      return true;
    }
    remove(old);
  }
  const std::size_t c = charge(db, key.size(), value_size);
  if (key.size() > options_.max_entry_bytes || value_size > options_.max_entry_bytes - key.size() ||
      c > options_.max_bytes || is_expired(expires_at, now)) {
    return false;
  }
  evict_for(c, now);
  if (!reserve_one()) return false;
  void* block = std::malloc(detail::block_size(db, key.size(), value_size));
  if (block == nullptr) return false;
  const auto address = reinterpret_cast<std::uintptr_t>(block);
  if ((address & ~address_mask) != 0) {  // no room for the tag (see the layout in lru_cache.hpp)
    std::free(block);
    return false;
  }
  auto* e = new (block) entry_header{npos, npos, expires_at};
  unsigned char* p = reinterpret_cast<unsigned char*>(e + 1);
  p = put_varint(p, static_cast<std::uint32_t>(db));
  p = put_varint(p, key.size());
  p = put_varint(p, value_size);
  if (!key.empty()) std::memcpy(p, key.data(), key.size());
  p += key.size();
  if (!head.empty()) std::memcpy(p, head.data(), head.size());
  if (!body.empty()) std::memcpy(p + head.size(), body.data(), body.size());

  const std::uint32_t mask = capacity_ - 1;
  std::uint32_t s = static_cast<std::uint32_t>(hash) & mask;
  while (slots_[s] != 0) s = (s + 1) & mask;
  slots_[s] = tag_of(hash) | address;
  link_front(s);
  bytes_ += c;
  ++entries_;
  return true;
}

bool lru_cache::erase(int db, std::string_view key) {
  const std::uint32_t s = find(db, key, hash(db, key));
  if (s == npos) return false;
  remove(s);
  return true;
}

bool lru_cache::erase(int db, std::string_view key, time_ms now) {
  const std::uint32_t s = find(db, key, hash(db, key));
  if (s == npos) return false;
  const bool live = !is_expired(entry_at(s)->expires_at, now);
  remove(s);
  if (!live) ++expirations_;
  return live;
}

bool lru_cache::set_expiry(int db, std::string_view key, time_ms expires_at, time_ms now) {
  const std::uint32_t s = find(db, key, hash(db, key));
  if (s == npos) return false;
  if (is_expired(entry_at(s)->expires_at, now)) {
    remove(s);
    ++expirations_;
    return false;
  }
  if (is_expired(expires_at, now)) {
    remove(s);
  } else {
    entry_at(s)->expires_at = expires_at;
  }
  return true;
}

void lru_cache::clear() {
  release();
  head_ = tail_ = npos;
  cursor_ = 0;
  entries_ = 0;
  bytes_ = 0;
}

void lru_cache::clear_db(int db) {
  // Walks the queue. remove() may shift the next entry to another slot, but blocks never move
  // and shifts patch links, so the walk resumes from the last kept entry's (updated) next link.
  const entry_header* kept = nullptr;
  std::uint32_t s = head_;
  while (s != npos) {
    if (decode(entry_at(s)).db == db) {
      remove(s);
    } else {
      kept = entry_at(s);
    }
    s = kept != nullptr ? kept->next : head_;
  }
}

std::size_t lru_cache::expire_some(time_ms now, std::size_t max_checks) {
  if (capacity_ == 0) return 0;
  // At most one pass over the index per call, so a small cache is not examined twice.
  const std::size_t max_visits =
      max_checks > capacity_ / 4 ? std::size_t{capacity_} : 4 * max_checks;
  std::size_t removed = 0;
  std::size_t checks = 0;
  // A removal does not count as a visit: the slot is examined again (a later entry may have
  // shifted into it), and entries only ever shift into the hole, never behind the cursor, so a
  // full pass sees every entry that was there when it started.
  for (std::size_t visits = 0; checks < max_checks && visits < max_visits && entries_ > 0;) {
    const std::uint32_t s = cursor_;
    if (slots_[s] != 0) {
      ++checks;
      if (is_expired(entry_at(s)->expires_at, now)) {
        remove(s);
        ++expirations_;
        ++removed;
        continue;
      }
    }
    cursor_ = (s + 1) & (capacity_ - 1);
    ++visits;
  }
  return removed;
}

std::uint32_t lru_cache::find(int db, std::string_view key, std::uint64_t hash) const {
  if (capacity_ == 0) return npos;
  const std::uint32_t mask = capacity_ - 1;
  const std::uint64_t tag = tag_of(hash);
  constexpr std::uint64_t tag_bits = ~address_mask & ~ref_bit;
  for (std::uint32_t s = static_cast<std::uint32_t>(hash) & mask; slots_[s] != 0;
       s = (s + 1) & mask) {
    if ((slots_[s] & tag_bits) != tag) continue;
    const decoded d = decode(entry_at(s));
    if (d.db == db && d.key == key) return s;
  }
  return npos;
}

void lru_cache::prefetch_index(std::uint64_t hash) const {
  if (capacity_ == 0) return;
  const std::uint32_t s = static_cast<std::uint32_t>(hash) & (capacity_ - 1);
  __builtin_prefetch(&slots_[s]);
}

void lru_cache::prefetch_entry(std::uint64_t hash) const {
  if (capacity_ == 0) return;
  const std::uint32_t s = static_cast<std::uint32_t>(hash) & (capacity_ - 1);
  if (slots_[s] == 0) return;
  // The header and key lie in the first cache line; a 64-byte value reaches into the second.
  const std::uint64_t e = slots_[s] & address_mask;  // + 64 may pass a short block
  __builtin_prefetch(reinterpret_cast<const void*>(e));
  __builtin_prefetch(reinterpret_cast<const void*>(e + 64));
}

std::optional<std::span<char>> lru_cache::value_in_place(int db, std::string_view key,
                                                         std::uint64_t hash) {
  assert(hash == this->hash(db, key));
  const std::uint32_t s = find(db, key, hash);
  if (s == npos) return std::nullopt;
  const std::string_view value = decode(entry_at(s)).value;
  return std::span<char>(const_cast<char*>(value.data()), value.size());
}

entry_ref lru_cache::ref(std::uint32_t slot) const {
  const entry_header* e = entry_at(slot);
  const decoded d = decode(e);
  return {d.db, d.key, d.value, e->expires_at, (slots_[slot] & ref_bit) != 0};
}

void lru_cache::link_front(std::uint32_t slot) {
  entry_header* e = entry_at(slot);
  e->prev = npos;
  e->next = head_;
  if (head_ != npos) {
    entry_at(head_)->prev = slot;
  } else {
    tail_ = slot;
  }
  head_ = slot;
}

void lru_cache::unlink(std::uint32_t slot) {
  const entry_header* e = entry_at(slot);
  if (e->prev != npos) {
    entry_at(e->prev)->next = e->next;
  } else {
    head_ = e->next;
  }
  if (e->next != npos) {
    entry_at(e->next)->prev = e->prev;
  } else {
    tail_ = e->prev;
  }
}

// Moves the entry in slot `from` to the empty slot `to` and patches its neighbours' links. The
// whole slot moves, tag and reference bit included.
void lru_cache::move_slot(std::uint32_t from, std::uint32_t to) {
  const entry_header* e = entry_at(from);
  slots_[to] = slots_[from];
  if (e->prev != npos) {
    entry_at(e->prev)->next = to;
  } else {
    head_ = to;
  }
  if (e->next != npos) {
    entry_at(e->next)->prev = to;
  } else {
    tail_ = to;
  }
}

// Unlinks and frees the entry, then closes the hole with a backward shift: each following entry of
// the probe run moves into the hole unless its home slot lies after the hole.
void lru_cache::remove(std::uint32_t slot) {
  entry_header* e = entry_at(slot);
  bytes_ -= charge_of(e);
  --entries_;
  unlink(slot);
  std::free(e);

  const std::uint32_t mask = capacity_ - 1;
  std::uint32_t hole = slot;
  for (std::uint32_t s = (slot + 1) & mask; slots_[s] != 0; s = (s + 1) & mask) {
    const std::uint32_t home = static_cast<std::uint32_t>(hash_of(entry_at(s), seed_)) & mask;
    if (((s - home) & mask) < ((s - hole) & mask)) continue;
    move_slot(s, hole);
    hole = s;
  }
  slots_[hole] = 0;
}

// Removes tail entries until `needed` more bytes fit, giving referenced ones a second chance
// (CLOCK; see Eviction in lru_cache.hpp). Ends: each requeue clears one of finitely many bits.
void lru_cache::evict_for(std::size_t needed, time_ms now) {
  while (tail_ != npos && bytes_ + needed > options_.max_bytes) {
    const std::uint32_t s = tail_;
    if (is_expired(entry_at(s)->expires_at, now)) {
      remove(s);
      ++expirations_;
    } else if ((slots_[s] & ref_bit) != 0) {
      slots_[s] &= ~ref_bit;
      if (s != head_) {
        unlink(s);
        link_front(s);
      }
    } else {
      remove(s);
      ++evictions_;
    }
  }
}

// Makes room in the index for one more entry, growing it at load 3/4.
bool lru_cache::reserve_one() {
  if (capacity_ == 0) return rehash(min_capacity);
  if ((static_cast<std::uint64_t>(entries_) + 1) * 4 <= static_cast<std::uint64_t>(capacity_) * 3) {
    return true;
  }
  return capacity_ < max_capacity && rehash(capacity_ * 2);
}

// Builds an index of `capacity` slots. Slots are copied whole, tags not recomputed: the hash bits
// do not depend on the capacity, and the reference bits must survive. Two passes over the old slots
// in memory order, each entry block prefetched a few slots ahead (walking the queue instead would
// wait for one cache miss per entry): the first places every entry and notes where it went, the
// second relinks the queue through those notes.
bool lru_cache::rehash(std::uint32_t capacity) {
  auto* slots = static_cast<std::uint64_t*>(std::calloc(capacity, sizeof(std::uint64_t)));
  auto* moved = static_cast<std::uint32_t*>(
      capacity_ == 0 ? nullptr : std::malloc(sizeof(std::uint32_t) * capacity_));
  if (slots == nullptr || (capacity_ != 0 && moved == nullptr)) {
    std::free(slots);
    std::free(moved);
    return false;
  }
  const std::uint32_t mask = capacity - 1;
  constexpr std::uint32_t ahead = 8;
  for (std::uint32_t s = 0; s < capacity_; ++s) {
    if (s + ahead < capacity_ && slots_[s + ahead] != 0) __builtin_prefetch(entry_at(s + ahead));
    if (slots_[s] == 0) continue;
    std::uint32_t t = static_cast<std::uint32_t>(hash_of(entry_at(s), seed_)) & mask;
    while (slots[t] != 0) t = (t + 1) & mask;
    slots[t] = slots_[s];
    moved[s] = t;
  }
  for (std::uint32_t s = 0; s < capacity_; ++s) {
    if (s + ahead < capacity_ && slots_[s + ahead] != 0) __builtin_prefetch(entry_at(s + ahead));
    if (slots_[s] == 0) continue;
    entry_header* e = entry_at(s);
    if (e->prev != npos) e->prev = moved[e->prev];
    if (e->next != npos) e->next = moved[e->next];
  }
  const std::uint32_t head = head_ == npos ? npos : moved[head_];
  const std::uint32_t tail = tail_ == npos ? npos : moved[tail_];
  std::free(moved);
  std::free(slots_);
  slots_ = slots;
  capacity_ = capacity;
  head_ = head;
  tail_ = tail;
  cursor_ = 0;
  return true;
}

// Frees every entry block and the index.
void lru_cache::release() {
  for (std::uint32_t s = 0; s < capacity_; ++s) {
    if (slots_[s] != 0) std::free(entry_at(s));
  }
  std::free(slots_);
  slots_ = nullptr;
  capacity_ = 0;
}

}  // namespace redis_sidecar::cache
