#include "proxy/tier/near_cache.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <random>
#include <span>

#include "proxy/log.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/resp/writer.hpp"

namespace redis_sidecar {
namespace {

using clock = std::chrono::steady_clock;
using mode = cache_tier::cache_mode;

std::int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch())
      .count();
}

std::string random_hex() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::uint64_t v = rng(), i = 0; i < 16; ++i, v >>= 4) out.push_back(digits[v & 15]);
  return out;
}

// Errors Redis gives while it cannot serve for now: loading its data after a restart, running a
// slow script, a replica without its master, a cluster slot moving, a failed save refusing
// writes. They say nothing about what the upstream allows, so the channel tries again later
// instead of giving its mode up. (Not READONLY: a replica refuses the keyspace probe's write for
// as long as it is one.) `text`: an error frame or its text.
bool transient_error(std::string_view text) {
  static constexpr std::array<std::string_view, 6> codes{"LOADING",  "BUSY",        "MASTERDOWN",
                                                         "TRYAGAIN", "CLUSTERDOWN", "MISCONF"};
  return std::find(codes.begin(), codes.end(), resp::error_code(text)) != codes.end();
}

}  // namespace

near_cache::near_cache(asio::any_io_executor ex, const config& cfg, ssl::context* tls,
                       cache_tier& tier)
    : ex_(ex), cfg_(cfg), tls_(tls), tier_(tier), timer_(ex), probe_timer_(ex) {
  auto_ = cfg.cache_mode == "auto";
  if (cfg.cache_mode == "keyspace") channel_ = channel::keyspace;
  if (cfg.cache_mode == "ttl") channel_ = channel::reads;
}

namespace {
// The modes whose misses are read on a connection of the near cache's own.
bool reads_here(mode m) { return cache_tier::coherent(m) || m == mode::ttl; }
}  // namespace

void near_cache::start() {
  if (!auto_ && !reads_here(cache_tier::parse_mode(cfg_.cache_mode))) return;
  asio::co_spawn(ex_, run(shared_from_this()), asio::detached);
}

// Lets go of the channel at once: its pending reads hold this object, so keeping conn_ would be
// an ownership cycle if the io_context stops before the connection winds down.
void near_cache::stop() {
  stopped_ = true;
  timer_.cancel();
  probe_timer_.cancel();
  ready_ = false;
  if (conn_) conn_->close();
  if (sub_) sub_->close();
  conn_.reset();
  sub_.reset();
  batch_count_ = 0;
  flights_.unjoin_all();
  for (const std::uint64_t read : flights_.reads()) {
    if (auto f = flights_.take(read))
      answer_error(*f, "-ERR sidecar shutting down\r\n", clock::now());
  }
}

void near_cache::upstream_stalled(const std::string& reason) {
  if (conn_) conn_->reset(reason);
  if (sub_) sub_->reset(reason);
}

// Keeps the channel open: reconnects after each loss, at the health probe's pace.
awaitable<void> near_cache::run(std::shared_ptr<near_cache> self) {
  while (!stopped_) {
    if (!conn_ && !(settled_ && !reads_here(tier_.mode())) && !reads_refused_) open();
    timer_.expires_after(std::chrono::milliseconds(cfg_.health_probe_interval_ms));
    co_await timer_.async_wait(use_nothrow);
  }
  (void)self;
}

std::shared_ptr<connection> near_cache::make_connection(int proto, bool subscriber) {
  auto c = std::make_shared<connection>(ex_, cfg_, tls_, own_stats_, proto, false);
  c->set_quiet(true);
  c->set_subscriber(subscriber);
  c->set_watcher(weak_from_this());
  c->start();
  return c;
}

// The pool left a replica for the primary behind the upstream's address (a failover), or the
// channel's own HELLO found its primary demoted: the channel follows, so that it hears of the
// writes the pool's reads see, and reads what they wrote. (On the old primary, now a replica, it
// would hear only what replication brings it, later.) Not a channel opened on a primary after the
// demotion: it reached the new primary itself.
bool near_cache::follow_failover() {
  const bool epoch_moved = readonly_epoch_ != connection::readonly_epoch();
  readonly_epoch_ = connection::readonly_epoch();
  if (!conn_ || !((epoch_moved && conn_->left_behind()) || conn_->demoted())) return false;
  log::info(std::string(channel_name()) +
            (conn_->demoted()
                 ? " reconnects: the upstream behind its address is a replica now"
                 : " reconnects: the upstream's connections left a replica for the primary"));
  // As when the channel is lost, but the reads in flight on it are still answered.
  if (ready_) tier_.channel_lost();
  drop_channel();
  return true;
}

void near_cache::heartbeat() {
  if (follow_failover()) return;
  const auto now = clock::now();
  if (!ready_ || !conn_ || proto_ != 3 || heartbeat_due_ || now < next_heartbeat_) return;
  static constexpr std::string_view ping = "*1\r\n$4\r\nPING\r\n";
  // On a primary, HELLO: its role tells a failover that demoted it (a replica answers PING too).
  // Sent here, between whole reads, never inside a read's MULTI (flush()).
  static constexpr std::string_view hello = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
  const bool on_primary = conn_->role() == connect_fsm::server_role::primary;
  // As long as a read on the channel has: a slow upstream fails no more than it did.
  const auto deadline = now + std::chrono::milliseconds(cfg_.command_timeout_ms);
  // Overdue, the connection's watchdog resets it: closed() then stops L1's hits.
  if (conn_->submit(on_primary ? hello : ping,
                    pending_reply{sink_ref(this), generation_, deadline, tag_heartbeat}))
    heartbeat_due_ = true;
  next_heartbeat_ = now + std::chrono::seconds(1);
}

void near_cache::control(connection& c, std::span<const std::string_view> args, tag t) {
  request_.clear();
  resp::append_command(request_, args);
  c.submit(request_, pending_reply{sink_ref(this), generation_, clock::time_point::max(), t});
}

// Sets up the channel for channel_ and proto_ (see the header's table).
void near_cache::open() {
  ++generation_;
  readonly_epoch_ = connection::readonly_epoch();
  sub_id_ = -1;
  sub_ready_ = false;
  conn_ = make_connection(proto_, false);
  // The reads' own shape, once, on a key of the first prefix (if any): an ACL user without MULTI
  // or PTTL gets its EXEC refused here, before any client's read depends on it. In tracking and
  // keyspace modes every miss is read that way, so a refusal gives the mode up (else each GET
  // would get the refusal, where Redis would have answered it).
  {
    std::string_view prefix = cfg_.cache_prefix;
    prefix = prefix.substr(0, prefix.find(','));
    const std::string key = std::string(prefix) + "redis-sidecar:probe";
    const std::array<std::string_view, 1> multi{"MULTI"}, exec{"EXEC"};
    const std::array<std::string_view, 2> pttl{"PTTL", key}, get{"GET", key};
    using words = std::span<const std::string_view>;
    reads_probe_error_.clear();
    for (const words args : {words(multi), words(pttl), words(get)})
      control(*conn_, args, tag_reads_probe_queued);
    control(*conn_, exec, tag_reads_probe);
  }
  if (channel_ == channel::reads) return;
  if (proto_ == 2) sub_ = make_connection(2, true);
  if (channel_ == channel::tracking) {
    if (proto_ == 3) {
      const std::array<std::string_view, 4> on{"CLIENT", "TRACKING", "ON", "OPTIN"};
      control(*conn_, on, tag_tracking);
      return;
    }
    const std::array<std::string_view, 2> id{"CLIENT", "ID"};
    control(*sub_, id, tag_client_id);
    subscribe();  // CLIENT TRACKING ... REDIRECT follows once both are answered
    return;
  }
  // Checked at every opening, a reconnection too: a restarted upstream (or the new primary after
  // a failover) may not have the notifications a CONFIG SET gave the old one, and a channel that
  // said ready without them would leave L1 serving values written since.
  keyspace_known_ = false;
  const std::array<std::string_view, 3> get{"CONFIG", "GET", "notify-keyspace-events"};
  control(*conn_, get, tag_config);
}

// (P)SUBSCRIBE answers with pushes (RESP3) or pub/sub arrays (RESP2 subscriber mode), not with a
// reply: it goes out without an entry, and its confirmation comes to pushed().
void near_cache::subscribe() {
  connection& c = proto_ == 3 ? *conn_ : *sub_;
  request_.clear();
  const std::string pattern = keyspace_pattern(cfg_.upstream.db);
  if (channel_ == channel::tracking) {
    const std::array<std::string_view, 2> args{"SUBSCRIBE", invalidate_channel};
    resp::append_command(request_, args);
  } else {
    const std::array<std::string_view, 2> args{"PSUBSCRIBE", pattern};
    resp::append_command(request_, args);
  }
  c.send_raw(request_);
}

void near_cache::subscribed() {
  sub_ready_ = true;
  if (channel_ == channel::tracking) {
    redirect();
  } else if (keyspace_known_) {
    become_ready(mode::keyspace, "keyspace notifications, " + keyspace_why_);
  } else if (probing_) {
    start_probe();
  }
}

// RESP2 tracking: the read connection's invalidations go to the subscriber connection.
void near_cache::redirect() {
  if (!sub_ready_ || sub_id_ < 0) return;
  const std::string id = std::to_string(sub_id_);
  const std::array<std::string_view, 6> on{"CLIENT", "TRACKING", "ON", "REDIRECT", id, "OPTIN"};
  control(*conn_, on, tag_tracking);
}

void near_cache::on_config(std::string_view frame, bool error) {
  const auto v = error ? std::nullopt : resp::decode(frame);
  // [name, value] in RESP2, {name: value} in RESP3.
  if (!v || v->elements.size() != 2) {
    log::info("CONFIG GET notify-keyspace-events refused (" + resp::error_text(frame) +
              "); probing for keyspace notifications with one short-lived key");
    probing_ = true;
    subscribe();
    return;
  }
  const std::string& flags = v->elements[1].str;
  const std::string missing = missing_keyspace_flags(flags);
  if (!missing.empty()) {
    refused("notify-keyspace-events is '" + flags + "', without " + missing +
            " (keyspace mode needs K plus A, or K plus g$lszxe)");
    return;
  }
  keyspace_known_ = true;
  keyspace_why_ = "notify-keyspace-events is '" + flags + "'";
  subscribe();
}

// CONFIG is refused (managed services rename it): write one short-lived key and wait for its
// notification.
void near_cache::start_probe() {
  probe_key_ = "redis-sidecar:probe:" + random_hex();
  const std::array<std::string_view, 5> set{"SET", probe_key_, "1", "PX", "2000"};
  control(*conn_, set, tag_probe);
  probe_timer_.expires_after(std::chrono::milliseconds(cfg_.health_probe_timeout_ms));
  probe_timer_.async_wait([w = weak_from_this(), g = generation_](error_code ec) {
    if (auto self = w.lock(); self && !ec) self->probe_done(g, false);
  });
}

void near_cache::probe_done(std::uint64_t generation, bool ok) {
  if (generation != generation_ || !probing_) return;
  probing_ = false;
  probe_timer_.cancel();
  if (!ok) {
    const std::string why = "no keyspace notification for a probe write within " +
                            std::to_string(cfg_.health_probe_timeout_ms) +
                            " ms (CONFIG GET refused; notify-keyspace-events is probably off)";
    // After an earlier probe showed them, one may time out on an upstream slow after a restart:
    // it is tried again at the probe's pace (no hit is served meanwhile), the mode kept.
    if (keyspace_probed_ && ++probe_misses_ < 3) return not_now(why);
    refused(why);
    return;
  }
  keyspace_probed_ = true;
  probe_misses_ = 0;
  keyspace_known_ = true;
  keyspace_why_ = "a probe write's notification arrived (CONFIG GET refused)";
  become_ready(mode::keyspace, "keyspace notifications, " + keyspace_why_);
}

void near_cache::become_ready(mode m, const std::string& what) {
  ready_ = true;
  not_now_logged_ = false;
  log::info(std::string(channel_name()) + " ready (" + what + ")");
  settle(m, refusals_ + what);
}

// The upstream cannot keep L1 coherent the way channel_ tries: the next channel in auto mode,
// else the mode after the coherent ones.
void near_cache::refused(const std::string& why) {
  drop_channel();
  if (auto_ && channel_ == channel::tracking) {
    log::info(why + "; trying keyspace notifications");
    refusals_ = why + "; ";
    channel_ = channel::keyspace;
    open();
    return;
  }
  if (!auto_) {
    log::error("--cache-mode=" + cfg_.cache_mode + ": " + why + "; L1 serves only during outages");
    settle(mode::fallback, why);
  } else if (cfg_.cache_prefix.empty()) {
    settle(mode::fallback, refusals_ + why + "; no --cache-prefix for ttl mode");
  } else {
    settle(mode::ttl, refusals_ + why + "; using ttl mode for --cache-prefix keys");
    channel_ = channel::reads;
    open();
  }
}

// The upstream cannot set the channel up right now (transient_error()): it is opened again at
// the health probe's pace, as after a lost connection, and the mode stays what it was.
void near_cache::not_now(const std::string& why) {
  const std::string what(channel_name());
  if (!std::exchange(not_now_logged_, true))
    log::info(what + ": the upstream cannot set it up yet (" + why + "); trying again");
  else if (log::enabled(log::level::debug))
    log::debug(what + ": not yet (" + why + ")");
  drop_channel();
}

// Lets go of both connections. Reads in flight on the read connection are still answered (QUIT
// comes after them) but, like any read in flight when the channel fails, not stored.
void near_cache::drop_channel() {
  ++generation_;
  ready_ = false;
  heartbeat_due_ = false;
  probing_ = false;
  probe_timer_.cancel();
  invalidate_all_flights();
  flush();  // this turn's reads still go out, ahead of QUIT
  static constexpr std::string_view quit = "*1\r\n$4\r\nQUIT\r\n";
  if (conn_ && !conn_->submit(quit, pending_reply{nullptr, 0, clock::time_point::max(), 0}))
    conn_->close();
  if (sub_) sub_->close();
  conn_.reset();
  sub_.reset();
}

void near_cache::settle(mode m, const std::string& why) {
  if (!settled_ || tier_.mode() != m)
    log::info("cache mode " + std::string(cache_tier::mode_name(m)) + ": " + why);
  settled_ = true;
  tier_.set_mode(m);
  if (on_mode_) on_mode_();
}

void near_cache::fetch(std::string_view key, std::shared_ptr<reply_sink> sink, std::uint64_t seq,
                       int proto, bool join) {
  const std::size_t h = flight_table::hash(key);
  const std::uint64_t j = flights_.joinable(key, h);
  const bool unsent = j != 0 && batch_count_ > 0 && j >= batch_first_;
  if (j != 0 && (join || unsent)) {
    flights_.find(j)->waiters.push_back(waiter{std::move(sink), seq, proto});
    return;  // single flight: joins the read in flight
  }
  const std::uint64_t read = flights_.open(key, h);
  flights_.find(read)->waiters.push_back(waiter{std::move(sink), seq, proto});
  // The older read may predate what the caller has seen (a script's writes). On one RESP3
  // connection the invalidation of such a write follows its reply and erases what it stored; on
  // RESP2 it comes on the other connection, maybe first: that read is not stored. Later misses
  // join the newer read.
  if (j != 0 && proto_ == 2) flights_.find(j)->invalidated = true;
  flights_.join_to(read);
  enqueue(read);
}

// The read joins the open batch, which goes out at the turn's end, when full, or at once outside
// event_loop::run() (tests that drive an io_context themselves).
void near_cache::enqueue(std::uint64_t read) {
  if (batch_count_ == 0) batch_first_ = read;
  ++batch_count_;
  if (!flush_deferred_) flush_deferred_ = event_loop::defer(shared_from_this());
  if (!flush_deferred_ || batch_count_ >= batch_max_) flush();
}

// OPTIN tracking: CLIENT CACHING YES makes Redis track the keys of the next command, here the
// whole transaction, so only keys read for L1 are tracked. CLIENT CACHING and MULTI answer +OK
// (nobody waits for those), each PTTL and GET +QUEUED (or the error that will abort the EXEC, kept
// by its read); EXEC carries every result.
void near_cache::flush() {
  flush_deferred_ = false;
  if (batch_count_ == 0) return;
  const std::uint64_t first = batch_first_;
  const std::uint32_t n = std::exchange(batch_count_, 0);
  if (flight* head = flights_.find(first)) head->batch = n;
  const auto deadline = clock::now() + std::chrono::milliseconds(cfg_.command_timeout_ms);
  const auto send = [&](std::span<const std::string_view> args, pending_reply entry) {
    request_.clear();
    resp::append_command(request_, args);
    return conn_->submit(request_, std::move(entry));
  };
  bool ok = conn_ != nullptr;
  if (ok && channel_ == channel::tracking) {
    const std::array<std::string_view, 3> caching{"CLIENT", "CACHING", "YES"};
    ok = send(caching, pending_reply{sink_ref(this), first, deadline, tag_caching});
  }
  const std::array<std::string_view, 1> multi{"MULTI"};
  ok = ok && send(multi, pending_reply{nullptr, 0, deadline, 0});
  const std::int64_t sent = mono_ms();
  for (std::uint64_t read = first; ok && read != first + n; ++read) {
    flight* f = flights_.find(read);
    if (f == nullptr) continue;  // cannot happen: a batch's reads are answered after it is sent
    f->sent_ms = sent;
    const std::string_view key = f->key;
    const std::array<std::string_view, 2> pttl{"PTTL", key};
    const std::array<std::string_view, 2> get{"GET", key};
    ok = send(pttl, pending_reply{sink_ref(this), read, deadline, tag_queued}) &&
         send(get, pending_reply{sink_ref(this), read, deadline, tag_queued});
  }
  const std::array<std::string_view, 1> exec{"EXEC"};
  ok = ok && send(exec, pending_reply{sink_ref(this), first, deadline, tag_read});
  // Submitting fails only on a connection that is down, so nothing of the batch went out (or what
  // did fails too, its replies finding no read).
  if (!ok) fail_reads(first, n, "-ERR upstream connection lost\r\n");
}

// A cluster node runs no transaction over keys of several hash slots: from now on each miss is
// read in a transaction of its own.
void near_cache::one_key_batches() {
  if (batch_max_ == 1) return;
  batch_max_ = 1;
  log::info(
      "the upstream refuses transactions across hash slots (cluster mode): cache misses are read "
      "one key per transaction");
}

// Answers reads first .. first + n - 1 with `frame` and forgets them.
void near_cache::fail_reads(std::uint64_t first, std::uint32_t n, std::string_view frame) {
  for (std::uint64_t read = first; read != first + n; ++read) {
    if (auto f = flights_.take(read)) {
      answer_error(*f, frame, clock::now());
      flights_.recycle(std::move(f));
    }
  }
}

void near_cache::answer_error(flight& f, std::string_view frame, clock::time_point received) {
  for (auto& w : f.waiters) w.sink->deliver(w.seq, frame, 0, received);
}

// A read of a refused transaction goes again in a transaction of its own, where only its own
// error can stop it.
void near_cache::read_alone(flight_ptr f, bool joinable) {
  flush();
  f->alone = true;
  f->batch = 0;
  f->error.clear();
  const std::uint64_t again = flights_.reopen(std::move(f));
  if (joinable) flights_.join_to(again);
  enqueue(again);
  flush();
}

void near_cache::written(int db, std::string_view key) {
  if (flights_.empty()) return;
  if (db < 0) return invalidate_all_flights();
  if (db == cfg_.upstream.db) invalidate_flights(key);
}

void near_cache::invalidate_all_flights() {
  for (const std::uint64_t read : flights_.reads()) flights_.find(read)->invalidated = true;
  flights_.unjoin_all();
}

void near_cache::invalidate_flights(std::string_view key) {
  if (const std::uint64_t read = flights_.unjoin(key, flight_table::hash(key)))
    flights_.find(read)->invalidated = true;
}

void near_cache::deliver(std::uint64_t seq, std::string_view frame, std::uint8_t t,
                         clock::time_point received) {
  const bool error = frame.empty() || frame[0] == '-' || frame[0] == '!';
  if (t == tag_read) return read_done(seq, frame, error, received);
  if (t == tag_caching) {
    // Refused (an ACL without client|caching): Redis will not track these keys, so nothing read
    // in the batch may be stored as kept fresh by the channel.
    const flight* head = error ? flights_.find(seq) : nullptr;
    if (head == nullptr) return;
    if (!caching_refused_ && conn_ && !conn_->failing()) {
      caching_refused_ = true;
      log::warn("CLIENT CACHING YES refused by the upstream (" + resp::error_text(frame) +
                "): Redis does not track what the sidecar reads, so L1 keeps nothing for hits");
    }
    for (std::uint64_t read = seq; read != seq + head->batch_reads(); ++read)
      if (flight* f = flights_.find(read)) f->invalidated = true;
    return;
  }
  if (t == tag_queued) {
    if (!error) return;
    if (frame.starts_with("-CROSSSLOT")) one_key_batches();
    if (flight* f = flights_.find(seq); f != nullptr && f->error.empty()) f->error = frame;
    return;
  }
  if (seq != generation_) return;  // a channel given up since
  if (t == tag_heartbeat) {
    heartbeat_due_ = false;
    // HELLO's reply: a demotion found here counts for every connection (left_behind()), and
    // heartbeat() lets go of the channel (its connection's demoted()).
    if (frame.starts_with('%') && conn_) conn_->note_role(frame, received);
    return;
  }
  if (error && ((conn_ && conn_->failing()) || (sub_ && sub_->failing())))
    return;  // the connection failed, not the command: closed() follows
  if (error && t != tag_reads_probe_queued) {
    const std::string_view what =
        t == tag_reads_probe && !reads_probe_error_.empty() ? reads_probe_error_ : frame;
    if (transient_error(what)) return not_now(resp::error_text(what));
  }
  switch (t) {
    case tag_tracking:
      if (error)
        return refused("CLIENT TRACKING refused by the upstream (" + resp::error_text(frame) + ")");
      return become_ready(mode::tracking, proto_ == 3 ? "CLIENT TRACKING on"
                                                      : "CLIENT TRACKING on, RESP2 with REDIRECT");
    case tag_client_id: {
      const auto v = error ? std::nullopt : resp::decode(frame);
      if (!v || v->type != resp::value::kind::integer)
        return refused("CLIENT ID refused by the upstream (" + resp::error_text(frame) + ")");
      sub_id_ = v->integer;
      return redirect();
    }
    case tag_config: return on_config(frame, error);
    case tag_reads_probe_queued:
      if (error && reads_probe_error_.empty()) reads_probe_error_ = resp::error_text(frame);
      return;
    case tag_reads_probe: {
      // A key the user may not read (an ACL key pattern the probe key is outside of) says
      // nothing about the commands: its misses are read, and refused, as Redis would refuse them.
      const bool refused_reads =
          error && reads_probe_error_.find("permissions to access") == std::string::npos;
      const std::string why =
          reads_probe_error_.empty() ? resp::error_text(frame) : reads_probe_error_;
      if (channel_ != channel::reads) {
        if (refused_reads)
          refused("the upstream refuses the read transaction (MULTI / PTTL / GET / EXEC: " + why +
                  ")");
        return;
      }
      if (refused_reads) {
        // Without its reads ttl mode keeps what it did before them: misses go to the upstream as
        // they are, and their values are hits for up to --cache-ttl, server TTL unknown.
        log::warn(
            "ttl mode: the upstream refuses the read transaction (MULTI / PTTL / GET / EXEC: " +
            why +
            "); values are served up to --cache-ttl without their server TTL, so a key that "
            "expires on Redis may be served until then");
        reads_refused_ = true;
        tier_.serve_ttl_unknown();
        drop_channel();
        return;
      }
      return become_ready(mode::ttl, "reads bring each value's server TTL");
    }
    case tag_probe:
      if (error) {
        probing_ = false;
        const std::string why =
            "the keyspace probe write was refused (" + resp::error_text(frame) + ")";
        // Once a probe has shown the notifications, a refused one (a replica's READONLY, OOM)
        // says nothing about them: tried again later, the mode kept.
        return keyspace_probed_ && ++probe_misses_ < 3 ? not_now(why) : refused(why);
      }
      return;
    default: return;
  }
}

void near_cache::read_done(std::uint64_t first, std::string_view frame, bool error,
                           clock::time_point received) {
  const flight* head = flights_.find(first);
  if (head == nullptr) return;
  const std::uint32_t n = head->batch_reads();
  // EXEC: [PTTL, GET] per read; or an error: Redis refused the transaction, or the connection
  // failed (a null array, for a transaction WATCH aborted, cannot come: nothing is watched).
  // The elements are viewed in place (no copy of the values); the vector is moved out while in
  // use, in case an answer comes back here.
  std::vector<std::string_view> elements = std::move(elements_);
  const bool well_formed =
      !error && resp::split_array(frame, elements) && elements.size() == std::size_t{2} * n;
  const bool aborted = error && frame.starts_with("-EXECABORT");
  // Redis refused the transaction (not a failing connection): a key refused when queued (ACL's
  // -NOPERM aborts it), or the batch itself (a cluster node's -CROSSSLOT: keys of several slots).
  // Each key is read again in a transaction of its own, where only its own error can stop it.
  const bool refused = error && n > 1 && ready_ && conn_ && !conn_->failing();
  if (refused && frame.starts_with("-CROSSSLOT")) one_key_batches();
  for (std::uint32_t i = 0; i != n; ++i) {
    bool joinable = false;
    auto f = flights_.take(first + i, &joinable);
    if (!f) continue;
    if (refused && !f->alone) {
      read_alone(std::move(f), joinable);
      continue;
    }
    if (error) {
      // Aborted by another key, with the channel gone meanwhile: no GET answers -EXECABORT.
      answer_error(*f,
                   !aborted            ? frame
                   : !f->error.empty() ? std::string_view(f->error)
                                       : "-ERR upstream connection lost\r\n",
                   received);
    } else if (!well_formed) {
      answer_error(*f, "-ERR unexpected reply from upstream\r\n", received);
    } else {
      read_one(*f, elements[2 * i], elements[2 * i + 1], received);
    }
    flights_.recycle(std::move(f));
  }
  elements.clear();
  elements_ = std::move(elements);
}

// `pttl` and `get` are the two replies of one read, each a complete frame.
void near_cache::read_one(flight& f, std::string_view pttl, std::string_view get,
                          clock::time_point received) {
  const auto ttl = resp::integer_payload(pttl);
  if (!ttl) return answer_error(f, "-ERR unexpected reply from upstream\r\n", received);
  const auto payload = resp::bulk_payload(get);
  const bool absent = get == resp::null_frame(2) || get == resp::null_frame(3);
  if (!payload && !absent) {
    // WRONGTYPE (the key holds no string) is answered as Redis gave it; nothing else can come.
    const bool simple_error = !get.empty() && get[0] == '-';
    return answer_error(f, simple_error ? get : "-ERR unexpected reply from upstream\r\n",
                        received);
  }
  // The key's expiry and the value's age count from when the read went out, not from when its
  // reply came (Redis may have been busy in between): L1 never keeps it longer than Redis does.
  // PTTL 0 is a key with less than a millisecond left: not kept (0 would mean none).
  if (!f.invalidated && ready_ && *ttl != 0) {
    if (payload)
      tier_.store_tracked(cfg_.upstream.db, f.key, *payload,
                          *ttl > 0 ? cache::add_ms(f.sent_ms, *ttl) : 0, f.sent_ms);
    else
      tier_.store_tracked_absent(cfg_.upstream.db, f.key, f.sent_ms);
  }
  if (payload) {
    for (auto& w : f.waiters) w.sink->deliver(w.seq, get, 0, received);
  } else {
    for (auto& w : f.waiters) w.sink->deliver(w.seq, resp::null_frame(w.proto), 0, received);
  }
}

// Pushes of the RESP3 connection and pub/sub arrays of the RESP2 subscriber connection; see
// parse_channel_message for their shapes.
void near_cache::pushed(connection* c, std::string_view frame) {
  if (c == nullptr || (c != conn_.get() && c != sub_.get())) return;
  const auto v = resp::decode(frame);
  if (!v) return;
  const channel_message m = parse_channel_message(*v, cfg_.upstream.db);
  switch (m.what) {
    case channel_message::kind::subscribed: return subscribed();
    case channel_message::kind::keys:
    case channel_message::kind::flush: return invalidate(m);
    default: return;
  }
}

void near_cache::invalidate(const channel_message& m) {
  if (m.what == channel_message::kind::flush) {
    tier_.flushed();
    invalidate_all_flights();
    return;
  }
  for (const auto& k : m.keys) {
    tier_.invalidated(cfg_.upstream.db, k);
    invalidate_flights(k);
    if (probing_ && k == probe_key_) probe_done(generation_, true);
  }
}

void near_cache::closed(connection* c) {
  if (c == nullptr || (c != conn_.get() && c != sub_.get())) return;
  const std::string error = c->last_error();
  if (ready_) log::warn(std::string(channel_name()) + " lost: " + error);
  if (ready_) tier_.channel_lost();  // protected entries are no longer fresh
  drop_channel();
  // An upstream without RESP3 (no HELLO 3): the channel is opened again in RESP2.
  if (proto_ == 3 && error.find("RESP3") != std::string::npos) {
    log::info("the cache invalidation channel uses RESP2: " + error);
    proto_ = 2;
  }
}

}  // namespace redis_sidecar
