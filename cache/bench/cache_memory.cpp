// cache_memory_bench: measures what lru_cache really costs per entry. Inserts N entries (default
// 1,000,000) with 16-byte keys and 64-byte values into a cache large enough to keep them all, and
// prints the real heap growth (glibc mallinfo2: in-use chunks plus mmapped blocks), the RSS growth,
// the accounted bytes, and the overhead per entry beyond key and value for both. Get, replace and
// put speeds are printed as information only. Exits 1 when the heap overhead per entry is above the
// 64-byte target or an entry is missing.
//
//   cache_memory_bench [entries]
#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "cache/lru_cache.hpp"

namespace {

using redis_sidecar::cache::lru_cache;
using redis_sidecar::cache::no_expiry;
using redis_sidecar::cache::options;

constexpr std::size_t key_size = 16;
constexpr std::size_t value_size = 64;
constexpr double target_overhead = 64;

std::size_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

std::size_t rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long total = 0;
  unsigned long resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &total, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

// Writes the 12 low decimal digits of i, zero-padded, at out.
void digits12(char* out, std::size_t i) {
  for (int d = 11; d >= 0; --d, i /= 10) out[d] = static_cast<char>('0' + i % 10);
}

// Keys "key:000000000042" (16 bytes); values 64 bytes starting "val:000000000042".
struct item {
  char key[key_size];
  char value[value_size];

  explicit item(std::size_t i) {
    std::memcpy(key, "key:", 4);
    digits12(key + 4, i);
    std::memset(value, 'v', value_size);
    std::memcpy(value, "val:", 4);
    digits12(value + 4, i);
  }
  std::string_view k() const { return {key, key_size}; }
  std::string_view v() const { return {value, value_size}; }
};

double ns_per_op(std::chrono::steady_clock::time_point start, std::size_t ops) {
  const std::chrono::duration<double, std::nano> d = std::chrono::steady_clock::now() - start;
  return d.count() / static_cast<double>(ops);
}

// Visits 0..n-1 in a scattered order (a stride coprime with n), like real traffic.
std::size_t scattered(std::size_t i, std::size_t n) { return (i * 1000003) % n; }

}  // namespace

int main(int argc, char** argv) {
  const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
  if (n == 0 || n % 1000003 == 0) {
    std::fprintf(stderr, "usage: cache_memory_bench [entries > 0]\n");
    return 2;
  }
  const std::size_t heap_before = heap_in_use();
  const std::size_t rss_before = rss_bytes();
  lru_cache cache(options{std::size_t{1} << 40, 1024 * 1024});

  auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    const item it(i);
    if (!cache.put(0, it.k(), it.v(), no_expiry, 1)) return 1;
  }
  const double put_ns = ns_per_op(start, n);
  const std::size_t heap = heap_in_use() - heap_before;
  const std::size_t rss = rss_bytes() - rss_before;

  start = std::chrono::steady_clock::now();
  std::size_t found = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const item it(scattered(i, n));
    const auto e = cache.get(0, it.k(), 1);
    found += e && e->value == it.v();
  }
  const double get_ns = ns_per_op(start, n);

  start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    const item it(scattered(i, n));
    if (!cache.put(0, it.k(), it.v(), no_expiry, 1)) return 1;
  }
  const double replace_ns = ns_per_op(start, n);

  const double per = static_cast<double>(key_size + value_size);
  const double heap_overhead = static_cast<double>(heap) / static_cast<double>(n) - per;
  const double rss_overhead = static_cast<double>(rss) / static_cast<double>(n) - per;
  const double accounted_overhead =
      static_cast<double>(cache.bytes()) / static_cast<double>(n) - per;
  std::printf("entries                        %zu (key %zu B, value %zu B)\n", cache.entries(),
              key_size, value_size);
  std::printf("index slots                    %zu (%.2f per entry)\n", cache.index_slots(),
              static_cast<double>(cache.index_slots()) / static_cast<double>(n));
  std::printf("accounted bytes                %zu\n", cache.bytes());
  std::printf("heap bytes (mallinfo2)         %zu\n", heap);
  std::printf("rss bytes (/proc/self/statm)   %zu\n", rss);
  std::printf("heap overhead per entry        %.1f B (target <= %.0f)\n", heap_overhead,
              target_overhead);
  std::printf("rss overhead per entry         %.1f B\n", rss_overhead);
  std::printf("accounted overhead per entry   %.1f B (entry_overhead %zu)\n", accounted_overhead,
              lru_cache::entry_overhead(0, key_size, value_size));
  std::printf("put (insert, index growth)     %.0f ns/op\n", put_ns);
  std::printf("get (hit, scattered)           %.0f ns/op\n", get_ns);
  std::printf("put (replace, scattered)       %.0f ns/op\n", replace_ns);
  if (found != n) {
    std::printf("FAIL: %zu of %zu entries found\n", found, n);
    return 1;
  }
  return heap_overhead <= target_overhead ? 0 : 1;
}
