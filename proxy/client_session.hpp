// client_session: one application connection. Frames requests, routes each one (answered here,
// forwarded to a shared pooled connection, or forwarded to a connection dedicated to this client
// while it holds connection state), and writes replies back in request order.
//
// Ordering: every request that expects a reply gets a slot; a reply fills its slot and the writer
// flushes filled slots from the front, all ready bytes in one write. Replies from one upstream
// connection arrive in order, so a client only ever has requests in flight on one connection: when
// the next request goes elsewhere (a shared connection -> a dedicated one, or back), reading pauses
// until the slots drain (the barrier). That keeps Redis' per-client ordering (read your writes).
//
//   in_:    [ consumed | frame being parsed ... | room ]   slots_: [ pending | ready | pending ]
//                        ^ in_start_            ^ in_end_          ^ first_seq_
//
// Raw mode (SUBSCRIBE family, MONITOR, CLIENT REPLY/TRACKING): the dedicated connection's frames
// are copied to the client as they come, and requests are forwarded without slots. A client that
// entered it by subscribing leaves it once unsubscribed from everything (subscriptions.hpp).
//
// Owned by its two coroutines (reader, writer) and, while it has requests pending upstream, by
// their entries (sink_ref, reply_sink.hpp): a client that leaves mid-pipeline leaves its entries
// queued; their replies are read and dropped, so the upstream stream stays aligned. Lives on the
// server's io_context thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "metrics/sidecar_metrics.hpp"
#include "proxy/asio.hpp"
#include "proxy/commands/command_table.hpp"
#include "proxy/config/config.hpp"
#include "proxy/event_loop.hpp"
#include "proxy/read_buffer.hpp"
#include "proxy/resp/request_parser.hpp"
#include "proxy/ring.hpp"
#include "proxy/stats.hpp"
#include "proxy/subscriptions.hpp"
#include "proxy/tier/cache_tier.hpp"
#include "proxy/tier/health_fsm.hpp"
#include "proxy/tier/near_cache.hpp"
#include "proxy/upstream/pool.hpp"

namespace redis_sidecar {

using client_socket = asio::generic::stream_protocol::socket;

class client_session;

/// What the server shares with its sessions.
struct session_context {
  const config& cfg;
  pool& upstreams;
  stats& st;
  std::unordered_set<client_session*> sessions;  // open sessions, for shutdown and --max-clients
  std::uint64_t next_client_id = 1;
  bool draining = false;                        // shutting down: sessions stop reading new requests
  cache_tier* tier = nullptr;                   // the L1 tier (always set by the server)
  const health_fsm* health = nullptr;           // the upstream's health: fallback serves from L1
  metrics::sidecar_metrics* metrics = nullptr;  // request latencies (always set by the server)
  near_cache* near = nullptr;  // tracking mode's channel (always set by the server)
};

class client_session : public reply_sink,
                       public turn_listener,
                       public std::enable_shared_from_this<client_session> {
 public:
  /// What a reply tells the session about connection state (carried in pending_reply::tag).
  // tag_exec_abort: the DISCARD sent in place of the EXEC of a transaction refused while queued
  // (its reply becomes EXECABORT).
  enum tag : std::uint8_t {
    tag_none,
    tag_multi,
    tag_exec,
    tag_exec_abort,
    tag_discard,
    tag_watch,
    tag_unwatch,
    tag_select
  };

  client_session(client_socket socket, session_context& ctx);
  ~client_session() override;

  void start();
  /// Stop reading; close once every in-flight reply has been written (graceful shutdown).
  void drain();
  /// Fallback began: requests waiting on this session's dedicated connection (EXEC, a blocking
  /// command) fail now with `reason` instead of at their deadlines; as with any lost dedicated
  /// connection, a client whose transaction or database was on it is then closed. Subscribers
  /// (raw mode) keep theirs: a stall does not end a subscription, and nothing waits on it.
  void upstream_stalled(const std::string& reason);
  /// For the server's periodic sweep: true when this TCP client read nothing since the sweep
  /// before and its socket holds an error, a reset that came with the last bytes it read and that
  /// no read or readiness event will report (drained_read.hpp). One getsockopt() per quiet client
  /// per sweep; the caller closes the session.
  bool reset_unseen();
  /// Closes at once, dropping replies not yet written (shutdown after the grace period).
  void close_now();
  bool idle() const { return slots_.empty() && out_.empty() && wout_busy_ == false; }

  /// A reply for slot `seq`, from an upstream connection (or an error made for it).
  void deliver(std::uint64_t seq, std::string_view frame, std::uint8_t tag,
               std::chrono::steady_clock::time_point received) override;
  /// A frame from the dedicated connection in raw mode.
  void deliver_failure(std::uint64_t seq, std::string_view frame, std::uint8_t tag,
                       std::chrono::steady_clock::time_point received) override;
  void deliver_raw(std::string_view frame);
  /// Loads the L1 slot that the reply for slot `seq` will fill, if it fills one.
  void prefetch(std::uint64_t seq, bool entry) override;
  /// The dedicated connection closed for good.
  void dedicated_lost(connection* c);
  /// The dedicated connection's upstream, a primary when it connected, answered READONLY: it was
  /// demoted by a failover.
  void dedicated_demoted(connection* c);

 private:
  std::shared_ptr<reply_sink> owner() override { return shared_from_this(); }

  enum class outcome : std::uint8_t { next, wait, close };

  awaitable<void> read_loop(std::shared_ptr<client_session> self);
  awaitable<void> write_loop(std::shared_ptr<client_session> self);

  // A request's first key (args[1]) hashed ahead: its cache_tier::key_hash() in `db`; hash 0
  // when not hashed. Carried to the L1 work at the request and at its reply, which would each
  // hash the key again. (No member initializers: `{}` is all zeros, and a default argument.)
  struct key_hint {
    std::uint64_t hash;
    int db;
  };
  outcome handle(std::span<const std::string_view> args, std::string_view frame, bool is_inline,
                 const commands::command_info* info, key_hint key = {});
  outcome handle_raw(std::span<const std::string_view> args, std::string_view frame,
                     const commands::command_info* info);
  outcome cmd_auth(std::span<const std::string_view> args);
  void auth(std::span<const std::string_view> args, std::string& r);
  outcome cmd_hello(std::span<const std::string_view> args);
  std::optional<std::string> check_hello(std::span<const std::string_view> args, int& proto,
                                         std::optional<std::string_view>& setname);
  void append_hello_reply(std::string& r) const;
  outcome raw_hello(std::span<const std::string_view> args);
  outcome cmd_select(std::span<const std::string_view> args, std::string_view frame);
  outcome cmd_client(std::span<const std::string_view> args, std::string_view frame);
  outcome cmd_reset(std::span<const std::string_view> args);
  outcome raw_reset(std::string_view frame, std::span<const std::string_view> args);
  outcome raw_answer_later(std::span<const std::string_view> args);
  outcome raw_unavailable();
  /// The answer to a request raw mode held for its marker (raw_answer_later()), appended to `r`;
  /// `refused`: Redis refused the marker's PING context (a RESP2 subscriber). True when this
  /// client is to close after it (CLIENT KILL of itself).
  bool answer_marked(std::span<const std::string_view> args, bool refused, std::string& r);
  void client_info(std::string& r);  // CLIENT INFO's reply
  /// CLIENT KILL over the sidecar's clients (commands/client_kill.hpp): appends the reply to `r`;
  /// true when this client is among those killed (it closes after the reply).
  bool client_kill(std::span<const std::string_view> args, std::string& r);
  /// CLIENT LIST over the sidecar's clients (commands/client_list.hpp), and CLIENT INFO.
  void client_list(std::span<const std::string_view> args, std::string& r);
  void append_client_line(std::string& out, std::chrono::steady_clock::time_point now);
  /// CLIENT UNBLOCK <id> and CLIENT TRACKING ... REDIRECT <id> name a client by the id the
  /// sidecar gave it: the request with the id of that client's own upstream connection in its
  /// place, or 0 (no such client) when it has none. nullopt: no id to translate (or not a number,
  /// which Redis refuses). For TRACKING it also keeps the pair, for GETREDIR and TRACKINGINFO.
  std::optional<std::string> upstream_id_frame(commands::sub_id sub,
                                               std::span<const std::string_view> args);
  const std::string& peer_address();
  const std::string& local_address();
  void note_raw_request(const commands::command_info& info, std::span<const std::string_view> args);
  void reset_session();  // RESET's effect on the session (not its reply)
  outcome refuse_in_multi();
  bool send_own(std::span<const std::string_view> words);
  outcome local_unsubscribe(std::span<const std::string_view> args);
  /// GET in ttl/tracking mode: a hit from L1, or a read on the near cache's channel.
  std::optional<outcome> near_get(std::string_view key);
  outcome serve_fallback(const commands::command_info* info, std::span<const std::string_view> args,
                         std::string_view frame);
  outcome fallback_transaction(const commands::command_info* info,
                               std::span<const std::string_view> args);
  void apply_cache_op(std::uint64_t seq, std::string_view reply);
  int effective_db() const;  // db_ after the SELECTs in flight

  /// Forwards to the dedicated connection if pinned, else to the shared one.
  outcome forward(std::string_view frame, std::uint8_t t = tag_none,
                  std::chrono::steady_clock::time_point deadline = {});
  /// Pins a dedicated connection (after the barrier) and forwards to it.
  outcome forward_dedicated(std::string_view frame, std::uint8_t t,
                            std::chrono::steady_clock::time_point deadline = {});
  outcome submit_to(const std::shared_ptr<connection>& c, std::string_view frame, std::uint8_t t,
                    std::chrono::steady_clock::time_point deadline);
  /// `sticky`: entered by something other than a subscription (MONITOR, CLIENT REPLY, ...), so
  /// only RESET leaves it.
  outcome enter_raw(std::string_view frame, bool sticky);
  void leave_raw();

  void reply(std::string_view bytes);  // a local reply, in order
  void reply_hit(const cache_tier::hit_value& v);
  void reply_error(std::string_view message);
  void reply_simple(std::string_view s);
  void apply_tag(std::string_view frame, std::uint8_t t);
  void flush_ready();
  void notify_writer();
  void turn_ended() override;
  void maybe_release_dedicated();
  void drop_dedicated();
  bool state_is_clean() const;
  /// dedicated_demoted(), once no transaction or WATCH is open.
  void close_if_demoted();
  void close_after_flush();
  /// Records why the session is ending, for --log-level debug's closing line; the first reason
  /// given counts. Builds nothing at other levels.
  void note_close(std::string_view why, std::string_view detail = {});
  void check_output_limit();
  /// A request above --max-query-buffer-bytes: Redis' error, then the connection closes.
  void refuse_query_buffer();
  std::chrono::steady_clock::time_point default_deadline() const;
  std::string_view upstream_version() const;

  struct slot {
    bool ready = false;
    std::string data;
    std::chrono::steady_clock::time_point start;  // when the request was framed (latency)
    std::uint16_t command = 0;                    // metrics command index
  };

  client_socket socket_;
  session_context& ctx_;
  const config& cfg_;
  std::uint64_t id_;

  read_buffer in_;
  std::size_t in_start_ = 0;
  std::size_t in_end_ = 0;  // in_[in_end_, size()) is room for the next read, not data
  resp::request_parser parser_;
  std::string inline_scratch_;  // inline commands re-encoded as arrays

  // Requests framed ahead, from in_start_ on: each read's complete requests are framed once, in
  // batches, so that their L1 slots load together before the first is handled (frame_requests()).
  struct framed {
    std::size_t size;         // bytes of the frame in in_
    std::uint32_t first_arg;  // its arguments: batch_args_[first_arg, first_arg + args), or
    std::uint32_t args;       // parser_.args() when in_parser
    const commands::command_info* info;  // commands::lookup() of its name (nullptr: unknown)
    bool is_inline;
    bool in_parser;  // the batch's last: parser_ still holds it
    key_hint key;    // set by prefetch_batch()
  };
  std::vector<framed> batch_;
  std::size_t batch_next_ = 0;  // the next of batch_ to handle
  std::vector<std::string_view> batch_args_;
  bool parser_holds_last_ = false;  // parser_ holds batch_.back()'s arguments: reset it first
  resp::parse_status frame_requests();
  std::span<const std::string_view> batch_args(const framed& r) const;
  static constexpr std::size_t max_batch = 32;         // requests framed ahead
  static constexpr std::size_t max_batch_args = 1024;  // a batch ends past this many arguments

  ring<slot> slots_;
  std::uint64_t first_seq_ = 0;  // seq of slots_.front()
  std::uint64_t next_seq_ = 0;
  // The slot of the last blocking command forwarded (BLPOP, XREAD BLOCK, WAIT ...): while it waits
  // for its reply, CLIENT LIST shows the client blocked (flag b).
  std::uint64_t blocking_seq_ = std::numeric_limits<std::uint64_t>::max();
  bool blocked() const;  // that command is waiting for its reply (CLIENT LIST's flag b)
  // The client closed behind a blocking command in flight: the close goes on to Redis.
  void pass_shut_upstream();
  bool shut_passed_ = false;  // and did: the dedicated connection shut its sending side
  bool raw_quit_ = false;     // a QUIT went to the dedicated connection in raw mode
  void authenticated();
  void apply_auth_limits();
  std::string request_error_text(std::string_view request) const;
  // After a script that may write (EVAL, EVALSHA, FCALL): it may have written keys it did not
  // declare, whose invalidations are still on their way, so GETs skip L1 and read on the channel
  // (joining no earlier read) until the first such read is answered; on the RESP3 channel that
  // reply comes after every invalidation the script caused.
  bool after_script_ = false;
  std::uint64_t script_barrier_seq_ = std::numeric_limits<std::uint64_t>::max();
  std::string out_;   // replies ready to write
  std::string wout_;  // being written
  bool wout_busy_ = false;
  steady_timer writer_wake_;
  bool writer_waiting_ = false;
  static constexpr std::size_t inline_write_max_bytes = 64 * 1024;
  bool write_deferred_ = false;  // replies go out when the event loop's turn ends (turn_ended())
  steady_timer drain_wake_;      // the reader waits on it at the barrier
  bool reader_waiting_ = false;
  bool watching_close_ = false;  // a readiness wait is out (watch_for_close())

  void watch_for_close();

  std::shared_ptr<connection> shared_;     // this client's shared connection
  std::shared_ptr<connection> dedicated_;  // while the client holds connection state
  connection* current_ = nullptr;          // where the in-flight requests are
  ring<int> select_dbs_;                   // dbs of SELECTs in flight, in order

  int proto_ = 2;
  int db_;
  // Another client's CLIENT TRACKING ... REDIRECT names this one: its dedicated connection stays
  // its own (state_is_clean()) until it leaves or resets.
  bool redirect_target_ = false;
  bool authed_;
  bool raw_ = false;
  // RESET in raw mode (raw_reset()): sent without a marker (inside a MULTI), its +RESET not back
  // yet; sent_marked: sent with a marker behind it, whose reply says whether it ran (sent_seen:
  // its +RESET came before the marker's reply); then answered (the session resets when reading
  // resumes) or refused (Redis' error passed on; the session goes on as it was).
  enum class raw_reset_state : std::uint8_t {
    none,
    sent,
    sent_marked,
    sent_seen,
    answered,
    refused
  };
  raw_reset_state raw_reset_ = raw_reset_state::none;
  std::vector<int> raw_dbs_;  // raw mode: the dbs the client may be in (note_raw_request)
  // Leaving raw mode after the last UNSUBSCRIBE: the subscription counts its confirmations
  // report; whether something else holds the client in raw mode (a sticky entry, or a request in
  // raw mode that may change connection state or hold the connection: SELECT, MULTI, WATCH,
  // HELLO, a blocking command, CLIENT but for ID, GETNAME, INFO, LIST and UNBLOCK); and the
  // leave marker (marker::kind::leave) sent to see every earlier request answered.
  subscription_tracker subs_;
  bool raw_sticky_ = false;
  // A MULTI or CLIENT REPLY in raw mode: the marker's reply may be QUEUED or never come, so no
  // markers (CLIENT ID passes on as it is, CLIENT KILL is refused, AUTH answered at once).
  bool raw_replies_unsure_ = false;
  // What the client's CLIENT REPLY commands left Redis doing with replies (raw mode), so that a
  // request the sidecar answers itself there (AUTH) is answered, or not, as Redis would: off, or
  // the one next request's skipped (note_client_reply(), handle_raw()).
  enum class reply_mode : std::uint8_t { on, off, skip_next };
  reply_mode reply_mode_ = reply_mode::on;
  void note_client_reply(std::span<const std::string_view> args);
  // A MULTI in raw mode, until its EXEC or DISCARD: no markers meanwhile (they would be queued);
  // the written marker of its writes goes behind the EXEC.
  bool raw_multi_ = false;
  bool markers_unusable() const { return raw_replies_unsure_ || raw_multi_; }
  bool leaving_raw_ = false;  // a leave marker is due: reading waits for it
  // CLIENT ID, GETREDIR and TRACKINGINFO, whose replies are rewritten, and what the sidecar answers
  // itself (AUTH, CLIENT KILL, LIST and INFO, HELLO), in raw mode (raw_rewrite_reply(),
  // raw_answer_later(), raw_hello()): the markers' token, and what each marker sent stands for, in
  // order.
  std::string marker_token_;
  struct marker {
    enum class kind : std::uint8_t {
      leave,         // the client unsubscribed from everything: raw mode ends at its reply
      client_id,     // CLIENT ID: its reply, next, gets the client's id
      getredir,      // CLIENT GETREDIR: its reply, next, names the target by the sidecar's id
      trackinginfo,  // CLIENT TRACKINGINFO: the same for its "redirect" field
      answer,        // `args` (AUTH, CLIENT KILL/LIST/INFO): answered by the sidecar now
      reply,         // `reply` (a HELLO that failed its checks here): sent now
      hello,    // HELLO sent on: its reply, next, is replaced by the sidecar's (see raw_hello())
      written,  // the writes in `args` (frames) have run: L1 forgets their keys in `dbs` again
      reset,    // the RESET before it has run, or was refused (raw_reset_state::sent_marked)
    };
    kind what = kind::client_id;
    std::vector<std::string> args;
    std::string reply;
    int proto = 2;  // hello: the protocol asked for, and the name to take
    std::optional<std::string> setname;
    std::vector<int> dbs;  // written
  };
  ring<marker> markers_;
  // Replies next in line to be rewritten (a client_id, getredir or trackinginfo marker's), in
  // order: see rewrite_due_reply().
  ring<marker::kind> rewrites_due_;
  // The last CLIENT TRACKING ... REDIRECT: the target's id here and its connection's upstream,
  // kept for CLIENT GETREDIR and TRACKINGINFO after the target has gone (Redis keeps its id).
  std::uint64_t redirect_upstream_ = 0;
  std::uint64_t redirect_id_ = 0;
  outcome raw_rewrite_reply(std::string_view frame, marker::kind what);
  bool rewrite_due_reply(std::string_view frame, std::string& out);
  std::int64_t client_id_of_upstream(std::int64_t upstream) const;
  // HELLO in raw mode (raw_hello()): its marker's reply came, its own is next.
  bool hello_due_ = false;
  int hello_proto_ = 2;
  std::optional<std::string> hello_setname_;
  bool send_marker(marker m);
  // Raw mode's writes sent since the last written marker (their frames): the marker goes behind
  // them before anything else is sent, or at the turn's end (send_written_marker()).
  std::vector<std::string> raw_written_;
  void send_written_marker();
  void hold_raw_writes();
  void forget_raw_writes(const std::vector<std::string>& frames, const std::vector<int>& dbs,
                         std::optional<cache::time_ms> held_since);
  bool delivering_failure_ = false;  // deliver() is passing on a connection's own error frame
  std::string token_suffix() const;
  std::string peer_address_;  // as CLIENT KILL ADDR / LADDR match them, made on first use
  std::string local_address_;
  bool in_multi_ = false;
  bool watching_ = false;
  bool closing_ = false;        // no more requests; close after the writer flushed
  bool closed_ = false;         // socket closed
  bool drained_reads_ = false;  // a TCP client: reads use drained_read_buffer
  std::uint64_t reads_ = 0;     // reads completed, for reset_unseen()
  std::uint64_t requests_ = 0;  // requests handled, for the debug log's closing line
  std::uint64_t active_window_ = ~std::uint64_t{0};  // stats::active_window last counted in
  std::string close_reason_;    // why the session ends, for the debug log (note_close())
  std::uint64_t reads_at_sweep_ = 0;
  std::string name_;
  const std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
  const commands::command_info* last_command_ = nullptr;  // CLIENT LIST's cmd
  std::string last_client_sub_;  // its subcommand, lower case, when it was CLIENT
  std::chrono::steady_clock::time_point batch_now_;
  // When the request being handled was read: its latency counts from here, through any wait
  // behind earlier replies (batch_now_ moves on after such a wait: deadlines, L1's clock).
  std::chrono::steady_clock::time_point framed_at_;
  bool retrying_ = false;       // handling the request again after a wait: counted already
  bool miss_pending_ = false;   // the attempt missed L1: counted once the request is answered
  std::uint16_t command_ = 0;   // metrics command index of the request being handled
  bool answered_here_ = false;  // handle() replied itself (local or from L1)
  metrics::source answered_by_ = metrics::source::local;

  // Requests whose replies update L1 (cache_tier::wants_reply), in seq order. Their frames sit in
  // one FIFO arena so recording one costs no allocation once warm:
  //   cache_arena_: [ consumed | frame of ops_.front() | frame | ... ]
  struct cache_op {
    std::uint64_t seq;
    const commands::command_info* info;
    int db;
    std::uint32_t argc;  // arguments, the command's name included
    std::size_t offset;  // into cache_arena_
    std::size_t size;
    std::uint32_t key_offset;  // the first key, within the frame (key_size 0: none known)
    std::uint32_t key_size;
    std::uint64_t key_hash;  // its cache_tier::key_hash() in db, or 0: not hashed yet
    std::chrono::steady_clock::time_point read_at;  // when the request was read
    cache_tier::flight sent;                        // on which connection, and when
  };
  const commands::command_info* fill_info_ = nullptr;  // set while handle() forwards such a request
  std::string_view fill_frame_;
  std::string_view fill_key_;        // its first key, when it lies within fill_frame_
  std::uint64_t fill_key_hash_ = 0;  // fill_key_'s key_hash() in effective_db()
  std::size_t fill_argc_ = 0;
  std::uint32_t sent_on_ = 0;  // the connection the request being handled went to (0: none)
  std::string_view op_frame(const cache_op& op) const;  // its request, in cache_arena_
  std::string_view op_key(const cache_op& op) const;    // its first key (empty: none known)
  // The arguments of its request, when it need not be framed again (GET k, SET k v): their count.
  std::size_t known_args(const cache_op& op, std::array<std::string_view, 3>& out) const;
  void prefetch_cache_op(cache_op& op, bool entry);
  void abandon_cache_op(const cache_op& op);
  void pop_cache_op();
  void prefetch_batch();
  bool writes_key_in_flight(int db, std::string_view key) const;
  static constexpr std::size_t max_scanned_writes = 32;
  std::size_t writes_in_flight_ = 0;  // write ops in cache_ops_
  ring<cache_op> cache_ops_;
  std::string cache_arena_;
  std::size_t arena_base_ = 0;  // absolute offset of cache_arena_[0]
  bool multi_open_ = false;     // MULTI sent, EXEC/DISCARD not yet
  // A MULTI in fallback, EXEC/DISCARD not yet: see fallback_transaction().
  bool fallback_multi_ = false;
  resp::request_parser op_parser_;
  // A transaction from MULTI until its EXEC (or DISCARD) comes back: transactions_.back() is the
  // open one while multi_open_, the others wait for their EXEC's reply, oldest first.
  struct transaction {
    std::vector<std::string> writes;  // frames of its writes: L1 forgets their keys again at EXEC
    std::vector<std::pair<std::size_t, int>>
        selects;             // SELECTs queued: (index in EXEC's reply, db)
    std::size_t queued = 0;  // commands queued so far
    bool refused = false;    // a command was refused while queueing: EXEC aborts (DISCARD sent)
    std::uint32_t conn = 0;  // the connection it is queued on
  };
  ring<transaction> transactions_;
  void transaction_ended(std::string_view reply, bool executed);
};

}  // namespace redis_sidecar
