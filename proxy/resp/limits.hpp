// limits: the announced-size limits that the framers enforce before allocating or waiting.
// Defaults are Redis' own (proto-max-bulk-len, the multibulk length cap, PROTO_INLINE_MAX_SIZE).
#pragma once

#include <algorithm>
#include <cstddef>

namespace redis_sidecar::resp {

struct limits {
  std::size_t max_bulk_bytes = 512 * 1024 * 1024;  // default 512 MiB, Redis' proto-max-bulk-len
  std::size_t max_multibulk_len = 2147483647;      // default INT_MAX, as Redis
  std::size_t max_inline_bytes = 64 * 1024;        // default 64 KiB, Redis' PROTO_INLINE_MAX_SIZE
  std::size_t max_nesting = 1024;  // reply aggregates nested deeper fail (a Lua table can nest)
};

/// The limits of a client that has not authenticated yet (with --requirepass), Redis' own: at
/// most 10 arguments and 16 KB per argument, so that nobody can make the sidecar buffer a large
/// request before AUTH.
inline limits unauthenticated_limits(const limits& l) {
  limits r = l;
  r.max_multibulk_len = std::min<std::size_t>(l.max_multibulk_len, 10);
  r.max_bulk_bytes = std::min<std::size_t>(l.max_bulk_bytes, 16384);
  return r;
}

/// The limits replies from the upstream are framed with. What a client may send does not bound
/// what Redis sends back: a value stored through another client, a KEYS reply, a script's long
/// status or error line. A reply the framer refused would reset the connection it came on, and
/// with it every other client's requests on it, so replies get at least Redis' own maxima, and a
/// line (a status, an error) may be as long as a bulk string. Nesting keeps its own bound.
inline limits reply_limits(const limits& request) {
  limits r;
  r.max_bulk_bytes = std::max(request.max_bulk_bytes, r.max_bulk_bytes);
  r.max_multibulk_len = std::max(request.max_multibulk_len, r.max_multibulk_len);
  r.max_inline_bytes = r.max_bulk_bytes;
  r.max_nesting = request.max_nesting;
  return r;
}

}  // namespace redis_sidecar::resp
