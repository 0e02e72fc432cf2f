// tcp_keepalive: TCP keepalive on the sidecar's upstream and client connections, set as Redis sets
// its own (redis.conf's tcp-keepalive, anetKeepAlive).
//
// Why. A managed Redis is reached through NATs and load balancers that forget a flow idle for a
// few minutes without telling either end (AWS NLB after 350 s, Azure's load balancer after 4
// minutes by default). A pooled upstream connection that sat idle longer than that looks healthy:
// the next request on it is written into the void and waits for its command timeout, and only then
// is the connection closed. Nothing else notices: the health probe has a connection of its own,
// busy every period. Keepalive probes every `seconds` of idleness keep such mappings alive, and
// when the path or the peer is gone for good the kernel fails the socket (ETIMEDOUT) after about
// 2 x `seconds`, so the connection is replaced before a request needs it. On the client side they
// end the sessions of apps whose host vanished without closing anything.
//
// What. SO_KEEPALIVE, the first probe after `seconds` idle (TCP_KEEPIDLE), then up to 3 probes
// (TCP_KEEPCNT) `seconds` / 3 apart (TCP_KEEPINTVL, at least 1 s). `seconds` 0 turns keepalive off.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

namespace redis_sidecar {

/// The most TCP_KEEPIDLE takes (Linux' MAX_TCP_KEEPIDLE), the bound of --tcp-keepalive.
inline constexpr unsigned max_tcp_keepalive_seconds = 32767;

/// Sets keepalive on the TCP socket `fd` as described above (0: off). False when the kernel
/// refused an option; the socket then keeps what was set before the failure.
inline bool set_tcp_keepalive(int fd, unsigned seconds) {
  const int on = seconds > 0 ? 1 : 0;
  if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0) return false;
  if (on == 0) return true;
  const int idle = static_cast<int>(std::min(seconds, max_tcp_keepalive_seconds));
  const int interval = std::max(1, idle / 3);
  const int count = 3;
  return ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) == 0 &&
         ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) == 0 &&
         ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) == 0;
}

}  // namespace redis_sidecar
