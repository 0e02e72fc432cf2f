// pool: the upstream connections of one server. Shared connections carry stateless traffic from all
// clients, multiplexed and pipelined; there are `pool_size` of them per protocol version (RESP2 and
// RESP3 replies differ, so a RESP3 client never shares a connection with a RESP2 one), opened on
// first use. Dedicated connections serve one client while it holds connection state (MULTI, WATCH,
// blocking commands, SELECT, subscriptions); clean ones are kept idle for the next such client,
// up to --dedicated-idle-timeout (managed Redis plans count every open connection against a
// limit). Lives on the server's io_context thread.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/upstream/connection.hpp"

namespace redis_sidecar {

class pool {
 public:
  pool(asio::any_io_executor ex, const config& cfg, ssl::context* tls, stats& st);

  /// A shared connection for a request of protocol `proto` from a client with nothing in flight:
  /// one whose write for this turn is already forming, so that requests of many clients share one
  /// write and one TLS record; else `current` (the client's last one) while usable; else the next
  /// usable one, round robin. Never null; valid as long as the pool.
  const std::shared_ptr<connection>& shared(int proto, const connection* current = nullptr);

  /// A connection for one client's exclusive use: an idle clean one if any (not one that met a
  /// replica: connection::met_replica()), else a new one.
  std::shared_ptr<connection> acquire_dedicated(int proto);
  /// Gives back a dedicated connection whose state is clean (no MULTI, WATCH, subscription, db 0
  /// of the URL, no client's request pending: the sidecar's own may be) and that met no replica;
  /// kept idle up to a bound and for up to --dedicated-idle-timeout, else closed.
  void release_dedicated(std::shared_ptr<connection> c);

  /// Opens the RESP2 shared connections now (start-up), so the first client does not wait.
  void warm_up();
  /// The upstream's version as its HELLO reported it ("7.0.15"), or empty before any connect.
  std::string_view server_version() const;
  /// Drops the shared connections' streams (their pending requests fail at once); they reconnect.
  void reset_shared(const std::string& reason);
  void close_all();

 private:
  static constexpr std::size_t max_idle_dedicated = 16;  // per protocol

  struct idle_connection {
    std::shared_ptr<connection> conn;
    std::chrono::steady_clock::time_point since;  // when it was given back
  };

  /// Waits for the oldest idle connection's timeout, if any and not waiting already.
  void arm_idle_timer();
  /// Closes the idle connections whose timeout has passed, then waits for the next.
  void close_expired_idle();

  asio::any_io_executor ex_;
  const config& cfg_;
  ssl::context* tls_;
  stats& stats_;
  std::array<std::vector<std::shared_ptr<connection>>, 2> shared_;  // [0]: RESP2, [1]: RESP3
  std::array<std::size_t, 2> next_{};
  // Oldest first: acquire_dedicated() takes the newest, so the ones a burst left behind age out.
  std::array<std::vector<idle_connection>, 2> idle_;
  steady_timer idle_timer_;
  bool idle_timer_armed_ = false;
  bool closed_ = false;
};

}  // namespace redis_sidecar
