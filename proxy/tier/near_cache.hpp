// near_cache: the coherent near cache (--cache-mode=tracking, or auto on a Redis that allows it).
// GET hits are answered from L1 in normal operation; what keeps them correct is Redis' CLIENT
// TRACKING on one RESP3 connection of the sidecar's own, the channel:
//
//   session GET miss --fetch--> [ MULTI / PTTL key / GET key / EXEC ] --> upstream (tracks key)
//   session slot   <--value--- [ EXEC reply: ttl, value ]  <--+
//   L1 erase       <--------- [ >invalidate [keys] push ]  <--+  same connection, in order
//
// Reads and invalidations share the connection, so they arrive in the order Redis produced them.
// Still, a read in flight when an invalidation for its key arrives is answered but not stored.
// Concurrent misses for one key join one read (single flight). The server TTL comes with the
// read and may only shorten the local one (--cache-ttl). When the channel is lost every tracked
// entry stops being fresh at once (cache_tier::channel_lost); the channel is opened again, and
// entries are filled again by new reads.
//
// In auto mode the first connection also decides the mode: tracking when CLIENT TRACKING is
// accepted, else ttl when --cache-prefix is set, else fallback; the choice and its reason are
// logged and exported. Lives on the server's io_context thread.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/asio.hpp"
#include "proxy/config/config.hpp"
#include "proxy/stats.hpp"
#include "proxy/tier/cache_tier.hpp"
#include "proxy/upstream/connection.hpp"
#include "proxy/upstream/reply_sink.hpp"

namespace redis_sidecar {

class near_cache : public reply_sink,
                   public connection_watcher,
                   public std::enable_shared_from_this<near_cache> {
 public:
  near_cache(asio::any_io_executor ex, const config& cfg, ssl::context* tls, cache_tier& tier);

  void start();
  void stop();

  /// True while misses can be read on the channel (mode tracking, channel up).
  bool ready() const { return ready_; }
  /// The channel's connection: a session's requests in flight there are ordered with it.
  connection* conn() const { return conn_.get(); }
  /// Reads `key` (the URL's db) on the channel, or joins a read in flight; the reply goes to
  /// `sink->deliver(seq, ...)` as RESP for protocol `proto`. Precondition: ready().
  void fetch(std::string_view key, std::shared_ptr<reply_sink> sink, std::uint64_t seq, int proto);

  /// Called when auto mode settles (or tracking is refused), for metrics.
  void on_mode(std::function<void()> f) { on_mode_ = std::move(f); }

  void deliver(std::uint64_t seq, std::string_view frame, std::uint8_t tag) override;
  void pushed(connection* c, std::string_view frame) override;
  void closed(connection* c) override;

 private:
  enum tag : std::uint8_t { tag_tracking = 1, tag_read = 2 };
  struct waiter {
    std::shared_ptr<reply_sink> sink;
    std::uint64_t seq;
    int proto;
  };
  struct flight {
    std::vector<waiter> waiters;
    bool invalidated = false;  // an invalidation arrived while the read was in flight
  };

  awaitable<void> run(std::shared_ptr<near_cache> self);
  void open();
  void settle(cache_tier::cache_mode m, const std::string& why);
  void answer(const std::string& key, flight& f, std::string_view value, bool found);

  asio::any_io_executor ex_;
  const config& cfg_;
  ssl::context* tls_;
  cache_tier& tier_;
  stats own_stats_;  // the channel is the sidecar's own: kept out of the client gauges
  steady_timer timer_;
  bool stopped_ = false;
  bool auto_ = false;     // --cache-mode=auto: the mode is not settled yet
  bool settled_ = false;  // the mode is known (tracking works, or was refused)
  bool ready_ = false;
  std::function<void()> on_mode_;

  std::shared_ptr<connection> conn_;
  std::unordered_map<std::string, flight> inflight_;
  std::deque<std::string> order_;  // keys of the reads sent, in order (EXEC replies match them)
  std::string request_;            // scratch for the MULTI/PTTL/GET/EXEC batch
};

}  // namespace redis_sidecar
