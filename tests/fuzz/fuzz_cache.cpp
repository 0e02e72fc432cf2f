// libFuzzer target for cache::lru_cache. The first two bytes choose the byte bound and the
// per-entry limit; the rest decodes into a sequence of operations on small keys (some binary, in
// four dbs) and values, with a fake clock that only moves forward. Every operation runs on the
// cache and on the reference model (cache/detail/reference_model.hpp); any difference in a result
// (presence, value, expiry, return value, removal count) or in the full state after the operation
// (entries in CLOCK queue order with their reference bits, bytes, counters, bytes <= max_bytes)
// aborts.
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "cache/detail/reference_model.hpp"
#include "cache/lru_cache.hpp"

namespace {

using redis_sidecar::cache::lru_cache;
using redis_sidecar::cache::no_expiry;
using redis_sidecar::cache::options;
using redis_sidecar::cache::time_ms;
using redis_sidecar::cache::detail::compare;
using redis_sidecar::cache::detail::reference_model;

void check(const std::string& problem, const char* what) {
  if (problem.empty()) return;
  std::fprintf(stderr, "divergence after %s: %s\n", what, problem.c_str());
  __builtin_trap();
}

void check_same(bool same, const char* what) {
  check(same ? std::string() : std::string("different result"), what);
}

class input {
 public:
  input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// Keys: 256 names, some empty, some with '\0' and high bytes, many sharing prefixes.
std::string key_for(std::uint8_t b) {
  std::string k;
  if (b % 17 == 0) return k;
  k = "k" + std::to_string(b % 64);
  if (b & 0x40) k += '\0';
  if (b & 0x80) k.insert(0, "\xfe\x00", 2);
  return k;
}

int db_for(std::uint8_t b) {
  constexpr int dbs[] = {0, 1, -1, INT_MAX};
  return dbs[b % 4];
}

struct fuzz_run {
  lru_cache cache;
  reference_model model;
  time_ms now = 1;

  explicit fuzz_run(options o) : cache(o), model(o) {}

  time_ms expiry(std::uint8_t b) const {
    return b < 96 ? no_expiry : now - 4 + static_cast<time_ms>(b % 40);
  }

  void step(input& in) {
    const std::uint8_t what = in.next();
    const int db = db_for(in.next());
    const std::string key = key_for(in.next());
    switch (what % 10) {
      case 0:
      case 1: {
        const std::uint8_t v = in.next();
        const std::string value(v % 72, static_cast<char>(v));
        const time_ms exp = expiry(in.next());
        check_same(cache.put(db, key, value, exp, now) == model.put(db, key, value, exp, now),
                   "put");
        break;
      }
      case 2:
      case 3: check(compare(cache.get(db, key, now), model.get(db, key, now)), "get"); break;
      case 4: check(compare(cache.peek(db, key, now), model.peek(db, key, now)), "peek"); break;
      case 5:
        if (what & 0x80) {
          check_same(cache.erase(db, key, now) == model.erase(db, key, now), "erase at now");
        } else {
          check_same(cache.erase(db, key) == model.erase(db, key), "erase");
        }
        break;
      case 6: {
        const time_ms exp = expiry(in.next());
        check_same(cache.set_expiry(db, key, exp, now) == model.set_expiry(db, key, exp, now),
                   "set_expiry");
        break;
      }
      case 7: {
        const std::size_t removed = cache.expire_some(now, in.next() % 16);
        check(model.apply_expire_some(cache, now, removed), "expire_some");
        break;
      }
      case 8:
        if (what & 0x80) {
          cache.clear();
          model.clear();
        } else {
          cache.clear_db(db);
          model.clear_db(db);
        }
        break;
      default: now += in.next() % 32; break;
    }
    check(compare(cache, model), "operation");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in(data, size);
  const std::uint8_t bound = in.next();
  const std::uint8_t limit = in.next();
  options o;
  o.max_bytes = (bound & 0x80) ? std::size_t{1} << 20 : (bound & 0x7f) * std::size_t{8};
  o.max_entry_bytes = (limit & 0x80) ? std::size_t{1} << 20 : limit;
  o.hash_seed = 0x9e3779b97f4a7c15;  // fixed: an input replays the same index layout
  fuzz_run run(o);
  while (!in.empty()) run.step(in);
  return 0;
}
