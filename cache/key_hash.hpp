// key_hash: the hash of a (db, key) pair that L1's index uses, and whoever else must spread keys
// over slots cheaply (the sidecar's write fence). Fast and non-cryptographic: MurmurHash3-x64-style
// rounds, one per 8-byte word, and its finaliser, from a random seed (L1 draws one; the write fence
// takes L1's, so that one hash serves both). Keys come
// from clients: the seed keeps them from choosing keys that collide (long probe runs in L1's
// index, a fence slot shared on purpose), and a table hashed with it stays correct, only slower
// or more conservative, when keys collide anyway.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string_view>

namespace redis_sidecar::cache {

namespace detail {

constexpr std::uint64_t hash_k1 = 0x87c37b91114253d5ULL;
constexpr std::uint64_t hash_k2 = 0x4cf5ad432745937fULL;

inline std::uint64_t rotl(std::uint64_t v, int r) { return (v << r) | (v >> (64 - r)); }

// One MurmurHash3-x64-style round per 8-byte word.
inline std::uint64_t mix(std::uint64_t h, std::uint64_t w) {
  w *= hash_k1;
  w = rotl(w, 31);
  w *= hash_k2;
  h ^= w;
  return rotl(h, 27) * 5 + 0x52dce729;
}

inline std::uint64_t finish(std::uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 33);
}

}  // namespace detail

/// A seed for a table's hash_key(), drawn from the system's random source.
inline std::uint64_t random_seed() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd();
}

/// A 64-bit hash of (db, key) from `seed` (a table's random_seed()); the size is mixed in first,
/// so keys that differ only by trailing '\0' bytes hash differently.
inline std::uint64_t hash_key(int db, std::string_view key, std::uint64_t seed) {
  std::uint64_t h = detail::mix(seed ^ static_cast<std::uint32_t>(db), key.size());
  const char* p = key.data();
  std::size_t n = key.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = detail::mix(h, w);
  }
  if (n > 0) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = detail::mix(h, w);
  }
  return detail::finish(h);
}

}  // namespace redis_sidecar::cache
