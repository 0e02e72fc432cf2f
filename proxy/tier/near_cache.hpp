// near_cache: the coherent near cache (--cache-mode=tracking or keyspace, or auto on a Redis that
// allows one of them), and ttl mode's reads. GET hits are answered from L1 in normal operation;
// what keeps them correct is an invalidation channel of the sidecar's own, in one of four shapes
// (ttl mode has a read connection only: its hits are bounded by --cache-ttl and the server TTL):
//
//   tracking, RESP3   one connection: CLIENT TRACKING ON; reads and ">2 invalidate" pushes
//   tracking, RESP2   a subscriber connection (CLIENT ID, SUBSCRIBE __redis__:invalidate) and a
//                     read connection with CLIENT TRACKING ON REDIRECT <id>
//   keyspace, RESP3   one connection: PSUBSCRIBE __keyspace@<db>__:*; reads and ">4 pmessage"
//   keyspace, RESP2   a subscriber connection (PSUBSCRIBE) and a read connection
//   ttl               one connection, reads only: no invalidations (ttl mode bounds staleness by
//                     --cache-ttl); what it adds is each value's server TTL, read with it
//
//   session GET miss --fetch--> [ MULTI / PTTL key / GET key / ... / EXEC ] --> read connection
//   session slot   <--value--- [ EXEC reply: ttl, value, ... ]
//   L1 erase       <--------- [ invalidation for key ]  <-- same connection (RESP3) or the
//                                                           subscriber connection (RESP2)
//
// On one connection reads and invalidations arrive in the order Redis produced them; on two they
// do not, so the rule that covers both is: a read in flight when an invalidation for its key
// arrives is answered but not stored. Concurrent misses for one key join one read (single
// flight). The server TTL comes with the read and may only shorten the local one (--cache-ttl).
// The misses of one event-loop turn share one transaction (up to max_batch_reads keys), so a
// burst of misses costs Redis two commands per key rather than five. When Redis refuses such a
// transaction (a key refused when queued, ACL's -NOPERM, aborts it; a cluster node refuses keys of
// several hash slots with -CROSSSLOT) every key of it is read again in a transaction of its own,
// where only its own error can stop it; after a -CROSSSLOT every transaction holds one key.
// When either connection is lost every entry the channel protected stops being fresh at once
// (cache_tier::channel_lost); the channel is opened again at the health probe's pace, and entries
// are filled again by new reads.
//
// Keyspace mode first checks that the upstream publishes what it needs: CONFIG GET
// notify-keyspace-events must hold K and A (or g $ x e); where CONFIG is refused, a probe writes
// one key (redis-sidecar:probe:<random hex>, PX 2000) and waits --health-probe-timeout-ms for its
// notification.
//
// In auto mode the first connections decide the mode: tracking when CLIENT TRACKING is accepted,
// else keyspace when notifications are on, else ttl when --cache-prefix is set, else fallback;
// the choice and its reasons are logged and exported. An upstream that refuses RESP3 is asked
// again in RESP2. Lives on the server's io_context thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/asio.hpp"
#include "proxy/config/config.hpp"
#include "proxy/event_loop.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/stats.hpp"
#include "proxy/tier/cache_tier.hpp"
#include "proxy/tier/channel_message.hpp"
#include "proxy/tier/flight_table.hpp"
#include "proxy/upstream/connection.hpp"
#include "proxy/upstream/reply_sink.hpp"

namespace redis_sidecar {

class near_cache : public reply_sink,
                   public connection_watcher,
                   public turn_listener,
                   public std::enable_shared_from_this<near_cache> {
 public:
  /// Keys read in one transaction at most: Redis runs a transaction without serving anyone else.
  static constexpr std::uint32_t max_batch_reads = 64;

  near_cache(asio::any_io_executor ex, const config& cfg, ssl::context* tls, cache_tier& tier);

  void start();
  void stop();

  /// True while misses can be read on the channel (a coherent mode or ttl, channel up). A channel
  /// the pool left on the old primary in a failover is let go of here, at the first miss after a
  /// pooled connection reached the new primary (the clients' writes go there from then on), not
  /// at the health probe's next tick: the demoted node, not caught up yet, would answer a client
  /// with the value from before its own write. The miss is read on the pool meanwhile.
  bool ready() {
    if (readonly_epoch_ != connection::readonly_epoch()) follow_failover();
    return ready_;
  }
  /// The read connection: a session's requests in flight there are ordered with it.
  connection* conn() const { return conn_.get(); }
  /// Reads `key` (the URL's db) on the channel, or joins a read in flight; the reply goes to
  /// `sink->deliver(seq, ...)` as RESP for protocol `proto`. Without `join`, only a read not sent
  /// yet is joined (it runs after everything the caller has seen answered). Precondition: ready().
  void fetch(std::string_view key, std::shared_ptr<reply_sink> sink, std::uint64_t seq, int proto,
             bool join = true);

  /// Called when auto mode settles (or the forced mode is refused), for metrics.
  void on_mode(std::function<void()> f) { on_mode_ = std::move(f); }

  /// The sidecar's own traffic wrote `key` of `db` (db < 0: a flush): reads of it in flight may
  /// predate the write, so they are neither stored nor joined.
  void written(int db, std::string_view key);

  /// Fallback began: reads in flight on the channel fail now with `reason` (their sessions answer
  /// the client) instead of waiting out a stalled upstream until --command-timeout-ms; the channel
  /// is lost as on any broken connection and opened again at the health probe's pace.
  void upstream_stalled(const std::string& reason);
  /// Called at every health probe tick: at most once a second, a PING on a ready RESP3 channel
  /// (the one its invalidations come on), with --command-timeout-ms to answer, as its reads have.
  /// A channel whose path died without a FIN or reset (a NAT that forgot the flow) would
  /// otherwise keep L1 answering hits that no invalidation can reach, for as long as no miss is
  /// read on it.
  void heartbeat();

  void deliver(std::uint64_t seq, std::string_view frame, std::uint8_t tag,
               std::chrono::steady_clock::time_point received) override;
  void pushed(connection* c, std::string_view frame) override;
  void closed(connection* c) override;
  /// Sends the reads of this turn's misses (see the header's paragraph on transactions).
  void turn_ended() override { flush(); }

 private:
  std::shared_ptr<reply_sink> owner() override { return shared_from_this(); }

  // What a reply answers. Control replies carry the channel's generation as their seq, so a
  // reply from a channel given up since is ignored; reads carry their read number.
  enum tag : std::uint8_t {
    tag_tracking = 1,     // CLIENT TRACKING ON [REDIRECT id]
    tag_read = 2,         // EXEC of MULTI / (PTTL / GET) x n; seq: the batch's first read
    tag_client_id = 3,    // CLIENT ID of the subscriber connection
    tag_config = 4,       // CONFIG GET notify-keyspace-events
    tag_probe = 5,        // SET of the probe key
    tag_queued = 6,       // +QUEUED (or a queue-time error) of a read's PTTL or GET; seq: the read
    tag_caching = 7,      // CLIENT CACHING YES before a batch; seq: the batch's first read
    tag_reads_probe = 8,  // EXEC of the channel's first, probing, read (MULTI / PTTL / GET / EXEC)
    tag_reads_probe_queued = 9,  // its MULTI, PTTL and GET: an error says why the EXEC failed
    tag_heartbeat = 10,          // PING or HELLO on the channel (heartbeat())
  };
  enum class channel : std::uint8_t { tracking, keyspace, reads };
  using flight = flight_table::flight;
  using flight_ptr = flight_table::flight_ptr;
  using waiter = flight_table::waiter;

  awaitable<void> run(std::shared_ptr<near_cache> self);
  /// Lets go of the channel if the connections found a failover it is left behind by; true then.
  bool follow_failover();
  std::shared_ptr<connection> make_connection(int proto, bool subscriber);
  void open();
  void control(connection& c, std::span<const std::string_view> args, tag t);
  void subscribe();
  void subscribed();
  void redirect();
  void on_config(std::string_view frame, bool error);
  void start_probe();
  void probe_done(std::uint64_t generation, bool ok);
  void become_ready(cache_tier::cache_mode m, const std::string& what);
  void refused(const std::string& why);
  void not_now(const std::string& why);
  /// The channel as the log names it.
  std::string_view channel_name() const {
    return channel_ == channel::reads ? "cache read connection" : "cache invalidation channel";
  }
  void drop_channel();
  void settle(cache_tier::cache_mode m, const std::string& why);
  void invalidate(const channel_message& m);
  void invalidate_flights(std::string_view key);
  void invalidate_all_flights();
  void enqueue(std::uint64_t read);
  void flush();
  void fail_reads(std::uint64_t first, std::uint32_t n, std::string_view frame);
  void answer_error(flight& f, std::string_view frame,
                    std::chrono::steady_clock::time_point received);
  void read_alone(flight_ptr f, bool joinable);
  void one_key_batches();
  void read_done(std::uint64_t first, std::string_view frame, bool error,
                 std::chrono::steady_clock::time_point received);
  void read_one(flight& f, std::string_view pttl, std::string_view get,
                std::chrono::steady_clock::time_point received);

  asio::any_io_executor ex_;
  const config& cfg_;
  ssl::context* tls_;
  cache_tier& tier_;
  stats own_stats_;  // the channel is the sidecar's own: kept out of the client gauges
  steady_timer timer_;
  steady_timer probe_timer_;
  bool stopped_ = false;
  bool auto_ = false;     // --cache-mode=auto: the mode is not settled yet
  bool settled_ = false;  // the mode is known (a channel works, or none can)
  bool ready_ = false;
  bool reads_refused_ = false;     // ttl mode: the upstream refused the reads' transaction
  std::string reads_probe_error_;  // the first error queuing the probing read met
  bool not_now_logged_ = false;    // not_now() logged since the channel was last ready
  std::function<void()> on_mode_;

  channel channel_ = channel::tracking;  // what open() sets up
  int proto_ = 3;                        // 2 once the upstream refused RESP3
  bool keyspace_known_ = false;          // notifications confirmed on this opening
  bool heartbeat_due_ = false;           // a heartbeat PING not answered yet (this generation)
  std::chrono::steady_clock::time_point next_heartbeat_{};
  bool keyspace_probed_ = false;         // a probe write's notification came once (CONFIG refused)
  int probe_misses_ = 0;                 // probes since then without their notification
  std::string keyspace_why_;             // how they were confirmed
  std::string refusals_;                 // why stronger modes were refused (auto), for the log
  bool probing_ = false;
  std::string probe_key_;

  std::uint64_t generation_ = 0;      // the channel's number; control replies carry it
  std::uint64_t readonly_epoch_ = 0;  // connection::readonly_epoch() when the channel opened
  std::shared_ptr<connection> conn_;  // reads (and, in RESP3, the invalidations)
  std::shared_ptr<connection> sub_;   // RESP2: the subscriber connection
  std::int64_t sub_id_ = -1;          // its CLIENT ID (tracking with REDIRECT)
  bool sub_ready_ = false;            // the subscription is confirmed

  // Reads in flight by read number, and a key's joinable read by key. A key's read is joinable
  // until something invalidates the key: a miss after that must not be answered by a read that
  // may predate the write.
  flight_table flights_;
  // The batch being gathered: reads batch_first_ .. batch_first_ + batch_count_ - 1 (read numbers
  // are handed out in order, and every new read joins the open batch).
  std::uint64_t batch_first_ = 0;
  std::uint32_t batch_count_ = 0;
  std::uint32_t batch_max_ = max_batch_reads;  // 1 on a cluster node (one_key_batches)
  bool flush_deferred_ = false;                // turn_ended() is due
  bool caching_refused_ = false;               // logged once
  std::string request_;                        // scratch for one command
  std::vector<std::string_view> elements_;     // scratch: an EXEC reply's elements
};

}  // namespace redis_sidecar
