#include "proxy/tier/write_fence.hpp"

#include <bit>

#include "cache/key_hash.hpp"

namespace redis_sidecar {

write_fence::write_fence(std::size_t slots)
    : slots_(std::bit_ceil(slots < 1 ? std::size_t{1} : slots)),
      mask_(slots_.size() - 1),
      seed_(cache::random_seed()) {}

const write_fence::slot& write_fence::slot_of(int db, std::string_view key) const {
  return slots_[cache::hash_key(db, key, seed_) & mask_];
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
