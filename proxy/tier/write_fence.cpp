#include "proxy/tier/write_fence.hpp"

#include <bit>

#include "cache/key_hash.hpp"

namespace redis_sidecar {

write_fence::write_fence(std::size_t slots, std::uint64_t seed)
    : slots_(std::bit_ceil(slots < 1 ? std::size_t{1} : slots)),
      mask_(slots_.size() - 1),
      seed_(seed != 0 ? seed : cache::random_seed()) {}

std::uint64_t write_fence::hash(int db, std::string_view key) const {
  return cache::hash_key(db, key, seed_);
}

void write_fence::touch(slot& s, std::uint32_t conn) {
  const std::uint64_t now = ++clock_;
  if (s.conn != conn) {
    s.other = s.last;
    s.conn = conn;
  }
  s.last = now;
}

}  // namespace redis_sidecar
