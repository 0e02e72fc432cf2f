// reference_model: the executable specification of lru_cache, for the unit tests and the fuzzer
// (the product never includes it). A std::list in CLOCK queue order (front = most recently
// inserted or requeued), each item with its reference bit, plus a std::map, written for
// obviousness, not speed: the same operations with the same results, the same charges
// (lru_cache::charge), the same second-chance eviction and counters. compare() reports the first
// difference between a cache and a model, so tests and the fuzzer share one definition of "same".
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "cache/lru_cache.hpp"

namespace redis_sidecar::cache::detail {

class reference_model {
 public:
  struct item {
    int db;
    std::string key;
    std::string value;
    time_ms expires_at;
    bool referenced = false;  // set by get() and an in-place put(); cleared by a requeue
  };

  explicit reference_model(options o) : options_(o) {}

  std::optional<entry_view> get(int db, std::string_view key, time_ms now) {
    auto it = find(db, key);
    if (it == lru_.end()) return std::nullopt;
    if (expired(*it, now)) {
      remove(it);
      ++expirations_;
      return std::nullopt;
    }
    it->referenced = true;
    return entry_view{it->value, it->expires_at};
  }

  std::optional<entry_view> peek(int db, std::string_view key, time_ms now) const {
    const auto found = index_.find({db, std::string(key)});
    if (found == index_.end() || expired(*found->second, now)) return std::nullopt;
    return entry_view{found->second->value, found->second->expires_at};
  }

  bool put(int db, std::string_view key, std::string_view value, time_ms expires_at, time_ms now) {
    const bool past = expires_at != no_expiry && expires_at <= now;
    if (auto it = find(db, key); it != lru_.end()) {
      if (it->value.size() == value.size() && !past) {
        // In place: same charge, same queue position, reference bit set.
        it->value = value;
        it->expires_at = expires_at;
        it->referenced = true;
        return true;
      }
      remove(it);
    }
    const std::size_t c = lru_cache::charge(db, key.size(), value.size());
    if (key.size() + value.size() > options_.max_entry_bytes || c > options_.max_bytes || past) {
      return false;
    }
    while (!lru_.empty() && bytes_ + c > options_.max_bytes) {
      const auto tail = std::prev(lru_.end());
      if (expired(*tail, now)) {
        remove(tail);
        ++expirations_;
      } else if (tail->referenced) {
        tail->referenced = false;  // second chance
        lru_.splice(lru_.begin(), lru_, tail);
      } else {
        remove(tail);
        ++evictions_;
      }
    }
    lru_.push_front(item{db, std::string(key), std::string(value), expires_at, false});
    index_[{db, std::string(key)}] = lru_.begin();
    bytes_ += c;
    return true;
  }

  bool erase(int db, std::string_view key) {
    auto it = find(db, key);
    if (it == lru_.end()) return false;
    remove(it);
    return true;
  }

  bool erase(int db, std::string_view key, time_ms now) {
    auto it = find(db, key);
    if (it == lru_.end()) return false;
    const bool live = !expired(*it, now);
    remove(it);
    if (!live) ++expirations_;
    return live;
  }

  bool set_expiry(int db, std::string_view key, time_ms expires_at, time_ms now) {
    auto it = find(db, key);
    if (it == lru_.end()) return false;
    if (expired(*it, now)) {
      remove(it);
      ++expirations_;
      return false;
    }
    if (expires_at != no_expiry && expires_at <= now) {
      remove(it);
    } else {
      it->expires_at = expires_at;
    }
    return true;
  }

  void clear() {
    lru_.clear();
    index_.clear();
    bytes_ = 0;
  }

  void clear_db(int db) {
    for (auto it = lru_.begin(); it != lru_.end();) {
      auto next = std::next(it);
      if (it->db == db) remove(it);
      it = next;
    }
  }

  /// expire_some() removes entries the model cannot predict: check that the cache removed only
  /// entries expired at `now`, exactly `removed` of them, then forget them too. Returns "" or
  /// what is wrong.
  std::string apply_expire_some(const lru_cache& cache, time_ms now, std::size_t removed) {
    std::map<std::pair<int, std::string>, bool> present;
    cache.for_each([&](const entry_ref& e) { present[{e.db, std::string(e.key)}] = true; });
    std::size_t gone = 0;
    for (auto it = lru_.begin(); it != lru_.end();) {
      auto next = std::next(it);
      if (present.count({it->db, it->key}) == 0) {
        if (!expired(*it, now)) return "expire_some removed a live entry: " + it->key;
        remove(it);
        ++gone;
      }
      it = next;
    }
    if (gone != removed) return "expire_some returned a count different from the entries removed";
    expirations_ += gone;
    return "";
  }

  const std::list<item>& items() const { return lru_; }
  std::size_t entries() const { return lru_.size(); }
  std::size_t bytes() const { return bytes_; }
  std::uint64_t evictions() const { return evictions_; }
  std::uint64_t expirations() const { return expirations_; }

 private:
  using list = std::list<item>;

  static bool expired(const item& i, time_ms now) {
    return i.expires_at != no_expiry && i.expires_at <= now;
  }

  list::iterator find(int db, std::string_view key) {
    const auto found = index_.find({db, std::string(key)});
    return found == index_.end() ? lru_.end() : found->second;
  }

  void remove(list::iterator it) {
    bytes_ -= lru_cache::charge(it->db, it->key.size(), it->value.size());
    index_.erase({it->db, it->key});
    lru_.erase(it);
  }

  options options_;
  list lru_;  // queue order: most recently inserted or requeued first
  std::map<std::pair<int, std::string>, list::iterator> index_;
  std::size_t bytes_ = 0;
  std::uint64_t evictions_ = 0;
  std::uint64_t expirations_ = 0;
};

/// "" when the cache and the model hold the same entries in the same queue order with the same
/// values, expiries, reference bits, byte counts and counters; otherwise the first difference.
/// Also checks the cache's own invariants: bytes() is the sum of charges and at most max_bytes().
inline std::string compare(const lru_cache& cache, const reference_model& model) {
  std::string problem;
  std::size_t sum = 0;
  std::size_t listed = 0;
  auto expected = model.items().begin();
  cache.for_each([&](const entry_ref& e) {
    sum += lru_cache::charge(e.db, e.key.size(), e.value.size());
    ++listed;
    if (!problem.empty()) return;
    if (expected == model.items().end()) {
      problem = "the cache holds more entries than the model";
      return;
    }
    const auto& m = *expected++;
    if (e.db != m.db || e.key != m.key)
      problem = "queue order differs at key " + m.key;
    else if (e.value != m.value)
      problem = "value differs for key " + m.key;
    else if (e.expires_at != m.expires_at)
      problem = "expiry differs for key " + m.key;
    else if (e.referenced != m.referenced)
      problem = "reference bit differs for key " + m.key;
  });
  if (listed != cache.entries()) return "entries() differs from the entries listed";
  if (sum != cache.bytes()) return "bytes() differs from the sum of charges";
  if (cache.bytes() > cache.max_bytes()) return "bytes() above max_bytes()";
  if (!problem.empty()) return problem;
  if (listed != model.entries()) return "entry count differs from the model";
  if (cache.bytes() != model.bytes()) return "bytes() differs from the model";
  if (cache.evictions() != model.evictions()) return "evictions() differs from the model";
  if (cache.expirations() != model.expirations()) return "expirations() differs from the model";
  return "";
}

/// "" when two lookup results agree (presence, value, expiry).
inline std::string compare(const std::optional<entry_view>& got,
                           const std::optional<entry_view>& want) {
  if (got.has_value() != want.has_value()) return got ? "present, expected absent" : "absent";
  if (got && got->value != want->value) return "value differs";
  if (got && got->expires_at != want->expires_at) return "expiry differs";
  return "";
}

}  // namespace redis_sidecar::cache::detail
