// connection: one upstream Redis connection (plain TCP or TLS), pipelined. Requests are appended to
// an output buffer and written in one batch per turn of the event loop; replies are framed as they
// arrive and handed, in order, to whoever is waiting for them (a client session's reply slot, or
// nobody for the sidecar's own requests). Owned by the pool (shared connections, reconnecting with
// backoff) or by a client session (dedicated connections, which do not reconnect). Lives on the
// server's io_context thread; nothing here is thread-safe.
//
//   client sessions --submit(bytes, entry)--> [ wbuf_ ] --write--> upstream
//                                             [ pending_: entry, entry, ... ]  (one per request)
//   client sessions <--deliver(seq, frame)--- [ rbuf_ ] <--read--- upstream
//
// In raw mode (subscribed clients, MONITOR, CLIENT REPLY OFF) there are no entries: every frame
// goes to the raw sink as it comes.
//
// In subscriber mode (the near cache's RESP2 invalidation channel) requests still have entries,
// but pub/sub arrays that answer none (message, pmessage, subscribe confirmations) go to the
// watcher, as RESP3 pushes do.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/asio.hpp"
#include "proxy/config/config.hpp"
#include "proxy/drained_read.hpp"
#include "proxy/event_loop.hpp"
#include "proxy/read_buffer.hpp"
#include "proxy/resp/reply_parser.hpp"
#include "proxy/ring.hpp"
#include "proxy/stats.hpp"
#include "proxy/upstream/connect_fsm.hpp"
#include "proxy/upstream/reply_sink.hpp"
#include "proxy/upstream/tls_stream.hpp"
#include "proxy/upstream/write_hold.hpp"

namespace redis_sidecar {

class client_session;

/// One request waiting for its reply.
struct pending_reply {
  sink_ref sink;          // nullptr: the sidecar's own request, reply dropped
  std::uint64_t seq = 0;  // the sink's reply slot
  std::chrono::steady_clock::time_point deadline;
  std::uint8_t tag = 0;  // what the sink learns from the reply (client_session::tag)
};

/// Notes on each TLS connection whether the upstream asked for a client certificate: a
/// connection attempt it then drops after the handshake (TLS 1.3 refuses a missing or untrusted
/// certificate only then, and the upstream may close before its alert is read) is the
/// configuration's fault. Called once on the context.
void note_certificate_requests(SSL_CTX* ctx);

class connection : public std::enable_shared_from_this<connection>, public turn_listener {
 public:
  /// A batch this long (a TLS record's worth) is written at once rather than at the turn's end.
  static constexpr std::size_t turn_batch_max_bytes = 16 * 1024;

  enum class state : std::uint8_t {
    connecting,  // first attempt, or reconnecting right after a loss: requests queue
    ready,       // requests are written as they come
    down,        // the last attempt failed: requests fail at once until the next attempt succeeds
    closed,      // closed for good (dedicated connections, shutdown)
  };

  /// `tls` is null for redis:// upstreams. `reconnect`: shared pool connections reconnect with
  /// backoff for as long as the process runs; dedicated ones close for good when lost.
  connection(asio::any_io_executor ex, const config& cfg, ssl::context* tls, stats& st, int proto,
             bool reconnect);

  void start();
  void close();
  /// Closes once what was submitted has been written: for a dedicated connection whose client
  /// left. Redis runs what it read before it sees a connection close, so a client's last requests
  /// run as they would have on its own connection to Redis; their replies are read and dropped
  /// until Redis closes its side too (or their deadlines pass). A connection still connecting
  /// writes them once it is ready (if it gets there), then closes the same way.
  void close_after_writes();
  /// Shuts our sending side once what was submitted has been written, keeping the owner and
  /// the replies: for a dedicated connection whose client shut its own sending side, so that
  /// Redis sees that close where the client's own connection would have shown it. Redis answers
  /// what it read before it, then closes; the connection ends then (or as close_after_writes()).
  /// False when there is nothing to pass it on to (closing, down, or its stream failed).
  bool shut_after_writes();

  /// Queues a request. Returns false (and queues nothing) when the connection is down or closed;
  /// the caller replies with last_error().
  bool submit(std::string_view request, pending_reply entry);

  /// Raw mode: from now on every frame goes to `sink` and requests are written without entries.
  void enter_raw(std::shared_ptr<client_session> sink);
  bool raw() const { return raw_sink_ != nullptr; }
  bool send_raw(std::string_view request);
  /// Back to replies matched with entries; the sink has seen every reply to its raw requests.
  void leave_raw() { raw_sink_.reset(); }

  /// A dedicated connection other clients' tracking messages are redirected to: closed when its
  /// client is done with it, never pooled for another.
  void keep_out_of_pool() { pooled_ok_ = false; }
  bool pooled_ok() const { return pooled_ok_; }
  /// The client session to tell when a dedicated connection is lost.
  void set_owner(std::weak_ptr<client_session> owner) { owner_ = std::move(owner); }
  /// Receives pushes outside raw mode and the end of the connection.
  void set_watcher(std::weak_ptr<connection_watcher> w) { watcher_ = std::move(w); }
  /// Subscriber mode: RESP2 pub/sub arrays go to the watcher instead of the pending FIFO. Send
  /// (P)SUBSCRIBE with send_raw(): its confirmations come as such arrays, not as replies.
  void set_subscriber(bool on) { subscriber_ = on; }
  /// Quiet connections log nothing themselves (the health probe: its monitor logs transitions).
  void set_quiet(bool q) { quiet_ = q; }
  /// Checks once a second, with the next write, that the upstream is still the primary its
  /// HELLO said (check_role()): for the shared connections and the near cache's reads; a
  /// connection that finds it demoted reports demoted(), and a shared one reconnects.
  void set_checks_role(bool on) { checks_role_ = on; }
  /// Drops the current stream (pending requests fail at once) and reconnects if it may.
  void reset(std::string reason);
  /// True while the connection is failing its pending requests (their frames are its own errors,
  /// not the upstream's replies).
  bool failing() const { return broken_ || state_ != state::ready; }

  state current_state() const { return state_; }
  bool usable() const { return state_ == state::connecting || state_ == state::ready; }
  std::size_t pending() const { return pending_.size(); }
  /// Some pending request is a client's (not only the sidecar's own, whose replies are dropped).
  bool owes_clients() const;
  /// Ready, with requests waiting for this turn's write.
  bool batching() const {
    return state_ == state::ready && !broken_ && !retiring_ && !wbuf_.empty();
  }
  /// Waiting for its last replies before it reconnects (a replica answered it: note_replica()).
  bool retiring() const { return retiring_; }
  /// This stream's upstream said it was a primary and answers READONLY now (demoted by a
  /// failover), or, this stream older than the demotion, a shared connection of the process has
  /// since left a demoted primary for a primary: a dedicated connection is then closed rather than
  /// kept idle or handed to a client (pool), which gets a new one that may reach the primary. (Not
  /// for an upstream that was a replica all along: its connections are kept, as any would answer
  /// READONLY.)
  bool met_replica() const {
    return demoted() || (ready_epoch_ != readonly_epoch_ && left_behind());
  }
  /// The upstream said it was a primary (HELLO's role) and answered READONLY since (for a
  /// dedicated connection, which has one stream).
  bool demoted() const { return demoted_at_ != std::chrono::steady_clock::time_point{}; }
  /// How many times a shared connection of the process, sent to reconnect by a READONLY, reached
  /// a primary: the connections of the health probe and the near cache follow it there when it
  /// changes.
  static std::uint64_t readonly_epoch() { return readonly_epoch_; }
  /// This stream may be on a node the primary left: it got through before the last demotion any
  /// connection found, or it is on a replica. One opened after it that said primary is on the
  /// new primary, so when readonly_epoch() moves again it need not follow.
  bool left_behind() const {
    return state_ != state::ready || ready_since_ < last_demotion_ ||
           role_ == connect_fsm::server_role::replica;
  }
  /// What this stream's HELLO said the upstream is (unknown before Redis 6, or before ready).
  connect_fsm::server_role role() const { return role_; }
  /// A reply to a HELLO sent on this stream (check_role()'s, or the near cache's heartbeat): when
  /// the stream said primary and the reply says replica, a demotion found (note_replica(); then
  /// demoted()).
  void note_role(std::string_view frame, std::chrono::steady_clock::time_point now);
  /// Why the connection is down, safe to show (no credentials).
  const std::string& last_error() const { return last_error_; }
  /// Whether the last connection attempt failed in a way only a change of configuration ends.
  config_refusal refusal() const { return refusal_; }
  int proto() const { return proto_; }
  void set_proto(int p) { proto_ = p; }
  const std::string& server_version() const { return server_version_; }
  /// This connection's client id on the upstream (CLIENT UNBLOCK); 0 when not known.
  std::uint64_t upstream_id() const { return upstream_id_; }
  /// This connection object's number in the process, from 1, never reused (reconnects keep it:
  /// what one stream had pending fails before the next stream sends anything).
  std::uint32_t serial() const { return serial_; }

 private:
  awaitable<void> run(std::shared_ptr<connection> self);
  awaitable<bool> connect_once();
  awaitable<bool> answers_plaintext(tcp::endpoint ep);
  void log_connected(std::chrono::steady_clock::time_point started);
  awaitable<void> read_loop();
  /// Waits until the stream has failed and its last write is over: run() keeps the stream until
  /// then, since a write in flight uses it.
  awaitable<void> write_drain();
  awaitable<void> watchdog();
  /// The socket's pending error (SO_ERROR; it clears it), 0 when none or no socket.
  int socket_error();
  awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer buf);
  awaitable<std::tuple<error_code, std::size_t>> write_all(asio::const_buffer buf);
  void teardown(std::string reason, bool timed_out);
  void fail_pending(std::string_view error_line);
  void dispatch(std::string_view frame, bool push, std::chrono::steady_clock::time_point received);
  void shut_when_written();  // lingering: once nothing is left to write, shut our side
  /// The upstream is a replica now: it answered -READONLY (`why`), or the HELLO a shared
  /// connection sends once a second (check_role()) says so (the old primary after a failover,
  /// with the URL's name or service address moved to the new one). A shared connection then
  /// writes nothing more on this stream; once the replies to what it wrote are in, it reconnects
  /// (the name resolved again) and what was queued meanwhile goes on the new stream
  /// (hand_over()). A stream that keeps landing on a replica waits 1 s, 2 s, ... 32 s of its life
  /// before the next try, so an upstream that is a replica by configuration is not reconnected
  /// per write (1 s for a minute after a primary was seen demoted: the address may move late).
  /// A dedicated connection tells its client (client_session::dedicated_demoted()).
  void note_replica(std::chrono::steady_clock::time_point now, std::string_view why);
  /// The watchdog's tick, with set_checks_role(): each second, on a stream whose HELLO said
  /// primary, HELLO again with the next write (add_role_check()), whose role tells a demotion
  /// that no write met (note_role()); on a shared stream that landed on a replica within a
  /// minute of a demotion, another try at the primary (note_replica()); and once, on a shared
  /// stream older than readonly_epoch(), a reconnect. So a workload of reads, and connections
  /// that carry none, follow a failover too.
  void check_role(std::chrono::steady_clock::time_point now);
  void add_role_check();
  /// Retiring, with nothing written left unanswered: the stream ends, its queue kept.
  void hand_over_if_answered();
  bool is_own_listener(const tcp::endpoint& ep) const;
  /// A reply with pushes inside it (reply_parser::embedded_pushes()): the pushes, then the reply
  /// without them.
  void dispatch_spliced(std::string_view frame, bool push,
                        std::chrono::steady_clock::time_point received);
  std::chrono::milliseconds backoff();
  void schedule_write();
  void turn_ended() override;
  /// Whether this turn's write waits for the replies to the previous one (write_hold.hpp).
  bool hold_now() const;
  /// The stream is gone: what it had not written is dropped (its requests have failed).
  void drop_unwritten();
  /// The stream is up and no write is out.
  bool write_may_start() const {
    return !writing_ && state_ == state::ready && !broken_ && !retiring_;
  }
  /// Writes everything queued, if write_may_start(); write_done() goes on.
  void start_write();
  void write_done(error_code ec);

  asio::any_io_executor ex_;
  const config& cfg_;
  ssl::context* tls_ctx_;
  stats& stats_;
  int proto_;
  bool reconnect_;

  std::optional<tcp::socket> plain_;
  std::optional<tls_stream> tls_;
  steady_timer write_idle_;  // write_drain() sleeps on it; cancelled at teardown and write_done()
  steady_timer tick_;        // the watchdog's period
  steady_timer backoff_timer_;

  state state_ = state::connecting;
  bool broken_ = false;  // the current stream failed; loops wind down
  bool timed_out_ = false;
  bool closing_ = false;    // close() was called
  bool lingering_ = false;  // shut_after_writes(): our side shuts once wbuf_ is written
  bool linger_when_ready_ = false;  // shut_after_writes() while connecting
  unsigned attempts_ = 0;   // consecutive failed attempts
  std::string last_error_;
  config_refusal refusal_ = config_refusal::none;
  std::string server_version_;
  std::uint64_t upstream_id_ = 0;
  std::uint32_t serial_;

  std::string wbuf_;  // requests not yet written
  std::string wbuf_inflight_;
  //   rbuf_: [ dispatched | unfinished reply ... | stale bytes, the next read lands here ]
  //                        ^ rstart_             ^ rend_                              ^ size()
  read_buffer rbuf_;
  std::size_t rstart_ = 0;
  std::size_t rend_ = 0;
  std::uint64_t reads_ = 0;        // reads completed, for the watchdog's quiet periods
  bool writing_ = false;           // a write of wbuf_inflight_ is out
  bool write_deferred_ = false;    // the write starts at the end of this turn (turn_ended())
  bool held_ = false;              // the write waits for replies; their read schedules it
  std::size_t wbuf_requests_ = 0;  // requests in wbuf_ (entries; raw sends are not counted)
  std::uint64_t answered_ = 0;     // replies matched with their requests, ever
  write_hold_policy hold_;
  resp::reply_parser parser_;
  std::string spliced_;  // a reply taken apart from the pushes inside it (dispatch_spliced)
  ring<pending_reply> pending_;
  std::shared_ptr<client_session> raw_sink_;
  std::weak_ptr<client_session> owner_;
  std::weak_ptr<connection_watcher> watcher_;
  bool counted_ready_ = false;
  bool retiring_ = false;          // note_replica(): no more writes on this stream
  bool handing_over_ = false;      // the stream ends for a new one; pending_ and wbuf_ stay
  bool left_replica_ = false;  // handed over for a READONLY; the next stream may reach a primary
  connect_fsm::server_role role_ = connect_fsm::server_role::unknown;  // this stream's HELLO's
  unsigned readonly_retires_ = 0;  // streams retired for READONLY in a row
  std::chrono::steady_clock::time_point ready_since_;
  std::chrono::steady_clock::time_point next_role_check_{};  // check_role()
  bool checks_role_ = false;                                 // set_checks_role()
  bool role_check_due_ = false;  // check_role(): add_role_check() at the next write
  bool role_check_out_ = false;  // its HELLO is written, its reply not in yet
  // The tag of check_role()'s HELLO, the sidecar's own request (no sink); others of those are 0.
  static constexpr std::uint8_t role_check_tag = 0xff;
  std::chrono::steady_clock::time_point demoted_at_{};  // a primary's last READONLY: demoted()
  std::uint64_t ready_epoch_ = 0;                   // readonly_epoch_ when this stream got through
  static inline std::uint64_t readonly_epoch_ = 0;  // see readonly_epoch()
  // The last time a connection found the primary it had reached demoted (left_behind())
  static inline std::chrono::steady_clock::time_point last_demotion_{};
  // Some upstream connection of this process got through its handshake (all live on the one
  // io_context thread): a drop after the handshake is then not taken for the configuration's.
  static inline bool any_connection_ready_ = false;
  bool quiet_ = false;
  bool subscriber_ = false;  // RESP2 pub/sub arrays go to the watcher
  bool pooled_ok_ = true;
};

}  // namespace redis_sidecar
