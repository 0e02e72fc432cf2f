// lru_cache: the sidecar's in-process L1 tier. A map from (db, key) to a value and an optional
// expiry, bounded by bytes, that the proxy fills from GET/SET traffic and answers from while the
// upstream Redis is down (and later as a near cache). Eviction is CLOCK (second chance), an
// approximation of least-recently-used that costs no list move per access.
//
// Goals
//   - A hard bound on accounted bytes (options.max_bytes), where the account charges keys, values
//     and an honest per-entry overhead, so that --cache-max-bytes roughly bounds real memory.
//   - Cheap hits: get() and a same-size put() (every GET reply refills its key) set a bit in the
//     index, which find() has already read, instead of relinking the entry and its neighbours.
//   - A per-entry size limit (options.max_entry_bytes): large pairs are not kept.
//   - An optional expiry per entry, applied lazily on lookup and incrementally by expire_some().
//   - O(1) expected get, peek, put, erase, set_expiry (put: amortized, see Eviction); small memory
//     per entry (about 49 bytes beyond key and value for 16-byte keys and 64-byte values; see
//     cache/bench/cache_memory.cpp).
//   - Keys are arbitrary bytes ('\0' included); db is any int (Redis uses 0-15).
// Non-goals
//   - Thread safety: none. One thread (the proxy's io_context thread) owns the cache.
//   - Redis data types other than strings, persistence, cross-process sharing.
//   - Exceptions: none are thrown; an allocation failure makes put() return false.
//   - Exact LRU order: a hit does not move its entry (see Eviction).
//
// Eviction (CLOCK, second chance). Entries sit in a queue, head = most recently inserted or
// requeued. Each has a reference bit: clear when inserted, set by get() and by a put() that
// overwrites the value in place (same size). While a put() needs room, the tail entry is
//   - removed and counted as an expiration if expired at `now` (whatever its bit);
//   - else, if its bit is set, given a second chance: the bit is cleared and it moves to the head;
//   - else removed and counted as an eviction.
// Every requeue clears a bit, so the loop ends; a put() may requeue every entry once, but each
// requeue pays for one earlier hit, so the cost is O(1) amortized.
//
// Time: every call that needs time takes `now`, monotonic milliseconds supplied by the caller, so
// tests are deterministic. An entry with expires_at t (t != no_expiry) is live while now < t.
// no_expiry (0) is reserved: callers use a clock whose values are never 0 (steady_clock since
// boot) or add an offset.
//
// Memory layout. Each entry is one malloc block; the index is one allocation of C 8-byte slots
// (C a power of two, load <= 3/4, linear probing with backward-shift deletion):
//
//   entry block:  [ prev u32 | next u32 | expires_at i64 | db, key size, value size as LEB128
//                   varints | key bytes | value bytes ]
//   index slot:   u64 = tag << 56 | the entry block's address (0: empty)
//   tag u8:       bit 7 = 1 (used) | bit 6 = ref | bits 5-0 = hash bits 63-58
//
// The tag rides in the top byte of the address, which malloc's addresses leave clear on the
// targets we build for (x86-64: below 2^47, or 2^56 with 5-level paging only for mappings asked
// for above; AArch64: below 2^52), so that a lookup reads one word, in one cache line, before it
// follows the address. Where the allocator tags pointers in that byte (AArch64 with memory tagging:
// glibc's mem.tagging tunable, HWASan), put() refuses every block (returns false) and L1 keeps
// nothing: correct, but no cache. find() compares tags without the ref bit. The reference bit
// lives in the slot so that setting it touches no memory that find() has not just read, and it
// moves with the entry: a backward shift copies the whole slot, index growth keeps it. The queue
// links are index slot numbers, not pointers (8 bytes instead of 16); when an entry moves between
// slots (deletion's backward shift, index growth) its neighbours' links are patched.
//
// Accounting. charge(db, key, value) = key size + value size + entry_overhead(db, key, value),
// where entry_overhead = malloc_block_size(block) - key - value + index_bytes_per_entry:
//   - block = 16-byte header + the three varints + key + value bytes;
//   - malloc_block_size(n) = max(32, round_up(n + 8, 16)), glibc's chunk size for an n-byte request
//     (other allocators differ by a few bytes);
//   - index_bytes_per_entry = 16: 8 bytes per slot times 2 slots per entry, the average of the
//     1.33 to 2.67 slots per entry the index holds between growths.
// bytes() is the sum of charges of the stored entries (expired ones included until removed).
//
// Validity of string_views: the views in entry_view and entry_ref point into the cache and stay
// valid until the next non-const call on it. Views passed in are not retained.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>

#include "cache/key_hash.hpp"

namespace redis_sidecar::cache {

/// Monotonic milliseconds supplied by the caller.
using time_ms = std::int64_t;
/// The expires_at value of an entry without expiry.
inline constexpr time_ms no_expiry = 0;

/// base + ms, held within 64 bits: expiries are sums of a clock and a number a client or the
/// upstream chose, which may be anywhere in int64.
inline time_ms add_ms(time_ms base, std::int64_t ms) {
  time_ms sum = 0;
  if (!__builtin_add_overflow(base, ms, &sum)) return sum;
  return ms > 0 ? std::numeric_limits<time_ms>::max() : std::numeric_limits<time_ms>::min();
}

struct options {
  /// Bound on accounted bytes (keys + values + entry_overhead). Default 64 MiB.
  std::size_t max_bytes = 64 * 1024 * 1024;
  /// Key+value pairs larger than this (key size + value size) are not kept. Default 1 MiB.
  std::size_t max_entry_bytes = 1024 * 1024;
  /// The index's hash seed (key_hash.hpp). 0, the default: drawn from the system's random source,
  /// so clients cannot choose colliding keys. A test that fails prints the seed to replay it.
  std::uint64_t hash_seed = 0;
};

/// A found value: valid until the next non-const call on the cache.
struct entry_view {
  std::string_view value;
  time_ms expires_at;  // no_expiry: none
};

/// One stored entry as for_each() shows it (expired ones included until removed).
struct entry_ref {
  int db;
  std::string_view key;
  std::string_view value;
  time_ms expires_at;
  bool referenced;  // the reference bit (see Eviction): hit since inserted or last requeued
};

namespace detail {

/// The fixed start of every entry block; the varints, key and value follow it.
struct entry_header {
  std::uint32_t prev;  // slot of the entry nearer the head (queued later), or lru_cache::npos
  std::uint32_t next;  // slot of the entry nearer the tail (queued earlier), or lru_cache::npos
  std::int64_t expires_at;
};

constexpr std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

/// Bytes an entry block holds: header, varints, key and value.
constexpr std::size_t block_size(int db, std::size_t key_size, std::size_t value_size) {
  return sizeof(entry_header) + varint_size(static_cast<std::uint32_t>(db)) +
         varint_size(key_size) + varint_size(value_size) + key_size + value_size;
}

/// An index slot's tag sits above this bit, the entry's address below it (see the layout above).
constexpr int tag_shift = 56;
constexpr std::uint64_t address_mask = (std::uint64_t{1} << tag_shift) - 1;

/// glibc malloc's chunk size for an n-byte request on 64-bit targets.
constexpr std::size_t malloc_block_size(std::size_t n) {
  const std::size_t chunk = (n + 8 + 15) & ~std::size_t{15};
  return chunk < 32 ? 32 : chunk;
}

}  // namespace detail

class lru_cache {
 public:
  /// The slot number that means "none" in queue links.
  static constexpr std::uint32_t npos = UINT32_MAX;
  /// Index bytes charged per entry (see the accounting paragraph above).
  static constexpr std::size_t index_bytes_per_entry = 16;

  /// What the account charges per entry beyond its key and value bytes.
  static constexpr std::size_t entry_overhead(int db, std::size_t key_size,
                                              std::size_t value_size) {
    return detail::malloc_block_size(detail::block_size(db, key_size, value_size)) - key_size -
           value_size + index_bytes_per_entry;
  }
  /// The full charge of an entry: key + value + entry_overhead.
  static constexpr std::size_t charge(int db, std::size_t key_size, std::size_t value_size) {
    return key_size + value_size + entry_overhead(db, key_size, value_size);
  }

  explicit lru_cache(options o = {});
  ~lru_cache();
  lru_cache(const lru_cache&) = delete;
  lru_cache& operator=(const lru_cache&) = delete;
  lru_cache(lru_cache&& other) noexcept;
  lru_cache& operator=(lru_cache&& other) noexcept;

  /// The value and expiry when present and live at `now`; sets the entry's reference bit (it does
  /// not move). An entry found expired is removed (counted in expirations()).
  std::optional<entry_view> get(int db, std::string_view key, time_ms now);

  /// As get(), without setting the reference bit and without removing (for TTL and EXISTS).
  std::optional<entry_view> peek(int db, std::string_view key, time_ms now) const;

  /// Inserts or replaces. When the key is stored with a value of the same size and expires_at is
  /// not past at `now`, overwrites value and expiry in place and sets the reference bit, keeping
  /// the entry's place in the queue. Otherwise removes any old entry for the key and inserts at
  /// the head with the bit clear, first evicting from the tail until it fits (see Eviction: tail
  /// entries already expired count as expirations, others as evictions). Returns false, after
  /// removing any old entry for the key, when key + value is larger than max_entry_bytes, the
  /// charge is larger than max_bytes, expires_at is already past at `now`, or memory could not be
  /// allocated. The value must not point into this cache's own storage.
  bool put(int db, std::string_view key, std::string_view value, time_ms expires_at, time_ms now) {
    return put(db, key, {}, value, expires_at, now);
  }

  /// As put(), with the value given in two pieces and stored as head followed by body: a caller
  /// that puts a small header of its own before a value stores it without first copying both into
  /// one buffer. Neither piece may point into this cache's own storage.
  bool put(int db, std::string_view key, std::string_view head, std::string_view body,
           time_ms expires_at, time_ms now) {
    return put(db, key, head, body, expires_at, now, hash(db, key));
  }

  /// The key's hash in this cache's index (key_hash.hpp, with hash_seed()). The calls that take it
  /// as their last argument do what the ones without do, for a caller that looks one key up
  /// several times, or in another table hashed with the same seed (the proxy's write fence), and
  /// hashes it once. It must be this cache's hash of that db and key.
  std::uint64_t hash(int db, std::string_view key) const { return hash_key(db, key, seed_); }
  bool put(int db, std::string_view key, std::string_view head, std::string_view body,
           time_ms expires_at, time_ms now, std::uint64_t hash);

  /// Removes the entry; true if one was stored, even if already expired. Not counted as eviction
  /// or expiration.
  bool erase(int db, std::string_view key);

  /// Removes the entry; true only if it was live at `now` (as DEL counts keys). An expired entry
  /// removed here counts as an expiration.
  bool erase(int db, std::string_view key, time_ms now);

  /// Sets (or with no_expiry removes) the expiry of a live entry, leaving its reference bit. False
  /// when absent or expired at `now` (then removed, counted as an expiration). An expires_at
  /// already past removes the entry and returns true, as EXPIRE with a past time deletes the key.
  bool set_expiry(int db, std::string_view key, time_ms expires_at, time_ms now);

  /// Hints for a lookup of `key` coming soon, in two steps some operations apart, so that it does
  /// not wait for memory: prefetch_index starts loading the key's home slot of the index;
  /// prefetch_entry, later, when that slot is likely in cache, the entry it points to. Neither
  /// changes anything; given the key rather than its hash(), each hashes it.
  void prefetch_index(int db, std::string_view key) const { prefetch_index(hash(db, key)); }
  void prefetch_entry(int db, std::string_view key) const { prefetch_entry(hash(db, key)); }
  void prefetch_index(std::uint64_t hash) const;
  void prefetch_entry(std::uint64_t hash) const;

  /// The value bytes of a stored entry (expired or not), to change in place: no promotion, no
  /// change of expiry or charge. Valid until the next non-const call. nullopt when absent.
  std::optional<std::span<char>> value_in_place(int db, std::string_view key) {
    return value_in_place(db, key, hash(db, key));
  }
  std::optional<std::span<char>> value_in_place(int db, std::string_view key, std::uint64_t hash);

  /// Removes every entry (FLUSHALL) and releases the index. Counters are kept.
  void clear();

  /// Removes every entry of `db` (FLUSHDB). O(entries).
  void clear_db(int db);

  /// Incremental active expiry: examines up to max_checks entries, visiting at most
  /// min(4 * max_checks, index_slots()) index slots, resuming where the previous call stopped, and
  /// removes those expired at `now`. Returns how many it removed.
  std::size_t expire_some(time_ms now, std::size_t max_checks);

  /// Calls f(entry_ref) for every stored entry in queue order, head (most recently inserted or
  /// requeued) first, expired ones included. f must not modify the cache.
  template <class F>
  void for_each(F&& f) const {
    for (std::uint32_t s = head_; s != npos; s = entry_at(s)->next) f(ref(s));
  }

  std::size_t entries() const { return entries_; }
  std::size_t bytes() const { return bytes_; }
  std::size_t max_bytes() const { return options_.max_bytes; }
  std::size_t max_entry_bytes() const { return options_.max_entry_bytes; }
  /// Slots in the index (0 or a power of two); each costs 8 bytes.
  std::size_t index_slots() const { return capacity_; }
  /// The seed of the index's hash (options.hash_seed, or the one drawn when that was 0).
  std::uint64_t hash_seed() const { return seed_; }
  std::uint64_t evictions() const { return evictions_; }
  std::uint64_t expirations() const { return expirations_; }

 private:
  using entry_header = detail::entry_header;

  /// The entry block a used slot points to.
  entry_header* entry_at(std::uint32_t slot) const {
    return reinterpret_cast<entry_header*>(slots_[slot] & detail::address_mask);
  }
  std::uint32_t find(int db, std::string_view key, std::uint64_t hash) const;
  entry_ref ref(std::uint32_t slot) const;
  void link_front(std::uint32_t slot);
  void unlink(std::uint32_t slot);
  void move_slot(std::uint32_t from, std::uint32_t to);
  void remove(std::uint32_t slot);
  void evict_for(std::size_t needed, time_ms now);
  bool reserve_one();
  bool rehash(std::uint32_t capacity);
  void release();

  options options_;
  std::uint64_t* slots_ = nullptr;  // capacity_ slots: tag << 56 | entry address, 0 when empty
  std::uint32_t capacity_ = 0;      // 0 or a power of two
  std::uint64_t seed_;              // of the index's hash (key_hash.hpp)
  std::uint32_t head_ = npos;       // most recently inserted or requeued
  std::uint32_t tail_ = npos;       // the next eviction candidate
  std::uint32_t cursor_ = 0;        // the slot expire_some() examines next
  std::size_t entries_ = 0;
  std::size_t bytes_ = 0;
  std::uint64_t evictions_ = 0;
  std::uint64_t expirations_ = 0;
};

}  // namespace redis_sidecar::cache
