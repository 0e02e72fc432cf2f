#include "proxy/tier/upstream_monitor.hpp"

#include <algorithm>
#include <array>
#include <random>

#include "proxy/commands/keys.hpp"
#include "proxy/log.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/resp/writer.hpp"
#include "proxy/upstream/connection.hpp"

namespace redis_sidecar {
namespace {

using clock = std::chrono::steady_clock;

constexpr std::size_t replay_window = 256;  // journal records in flight during replay

// "-ERR upstream unavailable: connection refused\r\n" -> "ERR upstream unavailable: ..."

// Replies that refuse a replayed write for now rather than answer it: a replica (READONLY, the
// old primary back after a failover), maxmemory reached (OOM), a failed save or too few replicas,
// a Redis loading or busy, a login gone (NOAUTH, WRONGPASS). The write stays journaled, to be
// tried again at the next recovery. (NOPERM answers: the ACL refuses that write to that key, as
// it would have refused the client; WRONGTYPE and the like too.)
bool refuses_for_now(std::string_view frame) {
  static constexpr std::array<std::string_view, 11> codes{
      "READONLY", "OOM",      "MISCONF",     "NOREPLICAS", "MASTERDOWN", "LOADING",
      "BUSY",     "TRYAGAIN", "CLUSTERDOWN", "NOAUTH",     "WRONGPASS"};
  return std::find(codes.begin(), codes.end(), resp::error_code(frame)) != codes.end();
}

// A write the upstream has refused this long, in at least refused_write_tries replays, is
// dropped (logged as an error, counted as rejected): a value larger than maxmemory, a URL that
// names a replica.
constexpr std::int64_t refused_write_kept_ms = 5 * 60 * 1000;
constexpr std::uint32_t refused_write_tries = 3;
// Why `c` failed, when only a change of configuration ends it (its credentials refused, the
// certificate not verified, the URL leading back to the sidecar); "" for any other failure.
std::string refusal_of(const connection* c) {
  return c != nullptr && c->refusal() != config_refusal::none ? c->last_error() : std::string();
}

}  // namespace

upstream_monitor::upstream_monitor(asio::any_io_executor ex, const config& cfg, ssl::context* tls,
                                   stats& st, pool& upstreams, cache_tier& tier)
    : ex_(ex),
      cfg_(cfg),
      tls_(tls),
      stats_(st),
      pool_(upstreams),
      tier_(tier),
      fsm_(health_fsm::options{cfg.fallback_after_ms, cfg.recover_after_probes}),
      timer_(ex),
      replay_db_(cfg.upstream.db),
      replay_parser_(cfg.limits) {}

std::int64_t upstream_monitor::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch())
      .count();
}

void upstream_monitor::start() { asio::co_spawn(ex_, run(shared_from_this()), asio::detached); }

void upstream_monitor::stop() {
  stopped_ = true;
  timer_.cancel();
  // Pending probes and replays hold this object: let go of the connections now, or they and this
  // object would keep each other alive if the io_context stops before they wind down.
  if (probe_conn_) probe_conn_->close();
  if (replay_conn_) replay_conn_->close();
  probe_conn_.reset();
  replay_conn_.reset();
}

std::shared_ptr<connection> upstream_monitor::open_connection() {
  auto c = std::make_shared<connection>(ex_, cfg_, tls_, own_stats_, 2, false);
  c->set_quiet(true);
  c->start();
  return c;
}

awaitable<void> upstream_monitor::run(std::shared_ptr<upstream_monitor> self) {
  timeouts_seen_ = stats_.errors[static_cast<std::size_t>(error_kind::upstream_timeout)];
  while (!stopped_) {
    const std::int64_t now = now_ms();
    // Command timeouts on the data plane are failures too (a stalled upstream).
    const auto timeouts = stats_.errors[static_cast<std::size_t>(error_kind::upstream_timeout)];
    if (timeouts != timeouts_seen_) {
      timeouts_seen_ = timeouts;
      failure("upstream command timeout");
    }
    // The upstream refused a new connection of the data plane for the sidecar's configuration (a
    // password changed on it, which keeps the logins it already accepted, the probe's among
    // them): the next probe logs in afresh, so the refusal reaches the health state, and fallback
    // then refuses writes, instead of the sidecar staying healthy while new connections fail.
    if (stats_.upstream_refusals != refusals_seen_) {
      refusals_seen_ = stats_.upstream_refusals;
      relogin_ = true;
    }
    // The pool left a replica for the primary behind the upstream's address (a failover): the
    // probe follows it, or it would go on probing the old primary.
    if (connection::readonly_epoch() != readonly_epoch_seen_) {
      readonly_epoch_seen_ = connection::readonly_epoch();
      relogin_ = true;
    }
    if (relogin_ && !probe_outstanding_) {
      relogin_ = false;
      if (probe_conn_) probe_conn_->close();
      probe_conn_.reset();
    }
    if (fsm_.on_tick(now)) transitioned();
    if (!probe_outstanding_ && now >= next_probe_at_) {
      probe();
      next_probe_at_ = now + next_delay().count();
    }
    tier_.l1().expire_some(now, 200);
    tier_.release_holds(now);
    if (on_change_) on_change_();
    timer_.expires_after(std::chrono::milliseconds(cfg_.health_probe_interval_ms));
    co_await timer_.async_wait(use_nothrow);
  }
  (void)self;
}

void upstream_monitor::probe() {
  if (!probe_conn_ || probe_conn_->current_state() == connection::state::closed ||
      probe_conn_->current_state() == connection::state::down)
    probe_conn_ = open_connection();
  static constexpr std::string_view ping = "*1\r\n$4\r\nPING\r\n";
  probe_sent_ = clock::now();
  const auto deadline = probe_sent_ + std::chrono::milliseconds(cfg_.health_probe_timeout_ms);
  if (!probe_conn_->submit(ping, pending_reply{sink_ref(this), 0, deadline, tag_probe})) {
    ++failed_probes_;
    failure(probe_conn_->last_error().empty() ? "upstream unavailable" : probe_conn_->last_error(),
            refusal_of(probe_conn_.get()));
    probe_conn_.reset();
    return;
  }
  probe_outstanding_ = true;
}

void upstream_monitor::deliver(std::uint64_t seq, std::string_view frame, std::uint8_t t,
                               clock::time_point received) {
  (void)seq;
  const bool error = frame.empty() || frame[0] == '-' || frame[0] == '!';
  if (t == tag_probe) {
    probe_outstanding_ = false;
    if (error) {
      // Our own error frames say why the connection failed; an upstream error to PING (LOADING,
      // MASTERDOWN, NOAUTH after a password change) is a failure too.
      std::string cause = resp::error_text(frame);
      if (cause.find("command timeout") != std::string::npos)
        cause = "no reply to the health probe within " +
                std::to_string(cfg_.health_probe_timeout_ms) + " ms";
      ++failed_probes_;
      failure(std::move(cause), refusal_of(probe_conn_.get()));
      if (probe_conn_) probe_conn_->close();
      probe_conn_.reset();
      return;
    }
    const double ms = std::chrono::duration<double, std::milli>(received - probe_sent_).count();
    if (failed_probes_ > 0 && log::enabled(log::level::debug))
      log::debug("upstream " + cfg_.upstream.masked() + ": health probe answered after " +
                 std::to_string(failed_probes_) + " failed");
    failed_probes_ = 0;
    // What the upstream runs decides how fallback journals relative expiries (cache_tier.hpp).
    if (probe_conn_) tier_.set_upstream_version(probe_conn_->server_version());
    if (fsm_.on_probe_ok(now_ms(), ms)) transitioned();
    return;
  }
  if (t == tag_select) {
    // Nothing is sent behind a SELECT until it is answered: refused (-BUSY while a script runs),
    // the writes for its db would run in another one.
    if (!select_pending_) return;
    select_pending_ = false;
    if (error && replay_conn_ && replay_conn_->failing())
      return replay_failed(resp::error_text(frame));
    if (error && replay_refusal_.empty()) replay_refusal_ = resp::error_text(frame);
    if (replay_refusal_.empty()) return replay_some();
    if (replay_outstanding_ == 0) replay_refused();
    return;
  }
  if (t != tag_replay || replay_outstanding_ == 0) return;
  if (error && replay_conn_ && replay_conn_->failing()) {
    replay_failed(resp::error_text(frame));
    return;
  }
  // The reply is the record's after those this attempt kept (refused): records are answered in
  // the order they were sent.
  auto& journal = tier_.journal();
  const std::size_t index = replay_kept_;
  if (index >= journal.size()) return;
  auto& record = journal.at(index);
  --replay_outstanding_;
  const bool parsed = replay_parser_.parse(record.frame) == resp::parse_status::complete;
  const auto args = parsed ? replay_parser_.args() : std::span<const std::string_view>();
  if (error && refuses_for_now(frame)) {
    const std::int64_t now = now_ms();
    if (record.refused_since == 0) record.refused_since = now;
    const bool drop = ++record.refusals >= refused_write_tries &&
                      now - record.refused_since >= refused_write_kept_ms;
    if (!drop) {
      // Kept, in its place; no more is sent, and the records in flight behind it are still
      // answered one by one.
      keep(record.db, args);
      if (replay_refusal_.empty()) replay_refusal_ = resp::error_text(frame);
      replay_parser_.reset();
      if (replay_outstanding_ == 0) replay_refused();
      return;
    }
    log::error("fallback journal replay: dropped a write the upstream refused " +
               std::to_string(record.refusals) + " times in " +
               std::to_string((now - record.refused_since) / 60000) +
               " minutes: " + resp::error_text(frame));
    tier_.replay_dropped(record.db, args);
  } else if (replay_kept_ > 0 && touches_kept(record.db, args)) {
    // Ran behind a kept write of the same key (or a kept write reaching beyond its keys): kept
    // too, to run again after it, in order (at least once, as after a lost reply).
    keep(record.db, args);
    replay_parser_.reset();
    if (replay_outstanding_ == 0) replay_refused();
    return;
  } else {
    // The upstream answered this write; an error reply (WRONGTYPE, NOPERM) is an answer: the
    // write is done as far as replay goes, logged, not retried.
    if (error)
      log::warn("fallback journal replay: the upstream refused a write: " +
                resp::error_text(frame));
    if (parsed) tier_.replayed(record.db, args);
    cautious_ = false;
  }
  replay_parser_.reset();
  if (index == 0)
    journal.pop_front();
  else
    journal.erase(index);
  if (!replay_refusal_.empty()) {
    if (replay_outstanding_ == 0) replay_refused();
    return;
  }
  replay_some();
}

// The keys of a journaled write this attempt keeps (refused for now), or all of them for a write
// that reaches beyond its keys (FLUSHDB, SWAPDB, MOVE, COPY) or cannot be read.
void upstream_monitor::keep(int db, std::span<const std::string_view> args) {
  ++replay_kept_;
  const commands::command_info* info = args.empty() ? nullptr : commands::lookup(args[0]);
  if (info == nullptr || cache_tier::writes_beyond_keys(*info)) {
    kept_everything_ = true;
    return;
  }
  commands::for_each_key(*info, args, [&](std::string_view key) {
    kept_keys_.insert(std::to_string(db) + ':' + std::string(key));
  });
}

bool upstream_monitor::touches_kept(int db, std::span<const std::string_view> args) const {
  if (kept_everything_) return true;
  const commands::command_info* info = args.empty() ? nullptr : commands::lookup(args[0]);
  if (info == nullptr || cache_tier::writes_beyond_keys(*info)) return true;
  bool touches = false;
  commands::for_each_key(*info, args, [&](std::string_view key) {
    touches = touches || kept_keys_.contains(std::to_string(db) + ':' + std::string(key));
  });
  return touches;
}

// The attempt's records are all answered, some refused for now: fallback goes on (the upstream
// answers, so nothing that waits on it is reset) and the replay is tried again after 1 s,
// doubling up to 30 s while the refusals last.
void upstream_monitor::replay_refused() {
  const unsigned shift = std::min<unsigned>(replay_refusals_++, 5);
  fsm_.hold_recovery(now_ms() + std::min<std::int64_t>(1000LL << shift, 30000));
  const std::string cause = "the upstream refuses its writes (" + replay_refusal_ + ")";
  refused_not_stalled_ = true;
  replay_failed(cause);
  refused_not_stalled_ = false;
}

void upstream_monitor::hurry() {
  if (hurry_ || stopped_) return;
  hurry_ = true;
  next_probe_at_ = 0;
  timer_.cancel();  // the loop's next turn, now
}

// The probe period: --health-probe-interval-ms while probes succeed; after failures it backs off
// exponentially up to 2 s (never below the interval), with equal jitter, so a fleet of sidecars
// does not hammer an upstream that is coming back, in lockstep.
std::chrono::milliseconds upstream_monitor::next_delay() {
  const std::uint64_t base = cfg_.health_probe_interval_ms;
  if (failed_probes_ == 0 || hurry_) return std::chrono::milliseconds(base);
  const std::uint64_t cap = std::max<std::uint64_t>(base, 2000);
  const unsigned shift = failed_probes_ > 16 ? 16 : failed_probes_;
  const std::uint64_t ms = std::min<std::uint64_t>(base << shift, cap);
  const std::uint64_t half = ms / 2;
  thread_local std::minstd_rand rng{std::random_device{}()};
  return std::chrono::milliseconds(std::max<std::uint64_t>(base, half + rng() % (half + 1)));
}

void upstream_monitor::failure(std::string cause, std::string refusal) {
  tier_.refuse_writes(std::move(refusal));
  if (log::enabled(log::level::debug))
    log::debug("upstream " + cfg_.upstream.masked() + ": " + cause + " (" +
               std::to_string(failed_probes_) + " failed probes in a row)");
  if (fsm_.on_failure(now_ms(), std::move(cause))) transitioned();
}

void upstream_monitor::transitioned() {
  const upstream_state s = fsm_.state();
  if (s == upstream_state::healthy) {
    tier_.refuse_writes({});
    log::info("upstream " + cfg_.upstream.masked() + ": " + fsm_.transition());
  } else {
    log::warn("upstream " + cfg_.upstream.masked() + ": " + fsm_.transition());
  }
  if (s == upstream_state::fallback) {
    if (replay_conn_) replay_conn_->close();
    replay_conn_.reset();
    reset_replay_attempt();
    // Requests waiting on a stalled upstream fail now, not at their deadlines (not when the
    // upstream answers but refused the replay's writes: nothing waits on it then).
    static const std::string reason = "upstream unreachable (fallback mode)";
    if (!refused_not_stalled_) {
      pool_.reset_shared(reason);
      if (on_fallback_) on_fallback_(reason);
    }
  }
  if (s == upstream_state::recovering) {
    replay_conn_ = open_connection();
    replay_db_ = cfg_.upstream.db;
    reset_replay_attempt();
    // After refusals, one record at a time until one is answered: nothing runs behind a refused
    // one then.
    cautious_ = replay_refusals_ > 0;
    if (!tier_.journal().empty())
      log::info("replaying " + std::to_string(tier_.journal().size()) +
                " writes accepted during fallback");
    replay_some();
  }
  if (on_change_) on_change_();
}

void upstream_monitor::reset_replay_attempt() {
  replay_outstanding_ = replay_kept_ = 0;
  replay_refusal_.clear();
  kept_keys_.clear();
  kept_everything_ = false;
  select_pending_ = false;
}

void upstream_monitor::replay_some() {
  if (fsm_.state() != upstream_state::recovering || !replay_conn_ || replay_kept_ > 0 ||
      select_pending_)
    return;
  auto& journal = tier_.journal();
  if (journal.size() == replay_outstanding_) {
    if (replay_outstanding_ == 0) {
      replay_conn_->close();
      replay_conn_.reset();
      tier_.replay_done();  // L1 forgets what it kept for the replay: the upstream answers now
      replay_refusals_ = 0;
      if (fsm_.on_replay_done(now_ms())) transitioned();
    }
    return;
  }
  const auto deadline = clock::now() + std::chrono::milliseconds(cfg_.command_timeout_ms);
  const std::size_t window = cautious_ ? 1 : replay_window;
  while (replay_outstanding_ < journal.size() && replay_outstanding_ < window) {
    const auto& record = journal.at(replay_outstanding_);
    if (record.db != replay_db_) {
      std::string select;
      const std::string db = std::to_string(record.db);
      const std::array<std::string_view, 2> args{"SELECT", db};
      resp::append_command(select, args);
      if (!replay_conn_->submit(select, pending_reply{sink_ref(this), 0, deadline, tag_select}))
        return replay_failed(replay_conn_->last_error());
      replay_db_ = record.db;
      select_pending_ = true;  // the db's writes follow its answer
      return;
    }
    if (!replay_conn_->submit(record.frame, pending_reply{sink_ref(this), 0, deadline, tag_replay}))
      return replay_failed(replay_conn_->last_error());
    ++replay_outstanding_;
  }
}

void upstream_monitor::replay_failed(std::string cause) {
  reset_replay_attempt();
  std::string refusal = refusal_of(replay_conn_.get());
  if (replay_conn_) replay_conn_->close();
  replay_conn_.reset();
  failure("journal replay failed: " + cause, std::move(refusal));
}

}  // namespace redis_sidecar
