// limits: the announced-size limits that the framers enforce before allocating or waiting.
// Defaults are Redis' own (proto-max-bulk-len, the multibulk length cap, PROTO_INLINE_MAX_SIZE).
#pragma once

#include <cstddef>

namespace redis_sidecar::resp {

struct limits {
  std::size_t max_bulk_bytes = 512 * 1024 * 1024;  // default 512 MiB, Redis' proto-max-bulk-len
  std::size_t max_multibulk_len = 2147483647;      // default INT_MAX, as Redis
  std::size_t max_inline_bytes = 64 * 1024;        // default 64 KiB, Redis' PROTO_INLINE_MAX_SIZE
  std::size_t max_nesting = 64;                    // default 64: reply aggregates nested deeper fail
};

}  // namespace redis_sidecar::resp
