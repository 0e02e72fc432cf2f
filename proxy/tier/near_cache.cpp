#include "proxy/tier/near_cache.hpp"

#include <array>
#include <chrono>

#include "proxy/log.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/resp/writer.hpp"

namespace redis_sidecar {
namespace {

using clock = std::chrono::steady_clock;

std::int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch())
      .count();
}

std::string error_text(std::string_view frame) {
  if (!frame.empty() && (frame[0] == '-' || frame[0] == '!')) frame.remove_prefix(1);
  while (!frame.empty() && (frame.back() == '\n' || frame.back() == '\r')) frame.remove_suffix(1);
  return std::string(frame.substr(0, 300));
}

}  // namespace

near_cache::near_cache(asio::any_io_executor ex, const config& cfg, ssl::context* tls,
                       cache_tier& tier)
    : ex_(ex), cfg_(cfg), tls_(tls), tier_(tier), timer_(ex) {
  auto_ = cfg.cache_mode == "auto";
}

void near_cache::start() {
  if (!auto_ && cfg_.cache_mode != "tracking") return;  // nothing to do in the other modes
  asio::co_spawn(ex_, run(shared_from_this()), asio::detached);
}

// Lets go of the channel at once: its pending reads hold this object, so keeping conn_ would be
// an ownership cycle if the io_context stops before the connection winds down.
void near_cache::stop() {
  stopped_ = true;
  timer_.cancel();
  ready_ = false;
  if (conn_) conn_->close();
  conn_.reset();
  order_.clear();
  for (auto& [key, f] : inflight_)
    for (auto& w : f.waiters) w.sink->deliver(w.seq, "-ERR sidecar shutting down\r\n", 0);
  inflight_.clear();
}

// Keeps the channel open: reconnects after each loss, at the health probe's pace.
awaitable<void> near_cache::run(std::shared_ptr<near_cache> self) {
  while (!stopped_) {
    if (!conn_ && !(settled_ && tier_.mode() != cache_tier::cache_mode::tracking)) open();
    timer_.expires_after(std::chrono::milliseconds(cfg_.health_probe_interval_ms));
    co_await timer_.async_wait(use_nothrow);
  }
  (void)self;
}

void near_cache::open() {
  conn_ = std::make_shared<connection>(ex_, cfg_, tls_, own_stats_, 3, false);
  conn_->set_quiet(true);
  conn_->set_watcher(weak_from_this());
  conn_->start();
  static constexpr std::string_view tracking =
      "*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n";
  conn_->submit(tracking,
                pending_reply{shared_from_this(), 0, clock::time_point::max(), tag_tracking});
}

void near_cache::settle(cache_tier::cache_mode m, const std::string& why) {
  if (!settled_ || tier_.mode() != m)
    log::info("cache mode " + std::string(cache_tier::mode_name(m)) + ": " + why);
  settled_ = true;
  tier_.set_mode(m);
  if (on_mode_) on_mode_();
}

void near_cache::fetch(std::string_view key, std::shared_ptr<reply_sink> sink, std::uint64_t seq,
                       int proto) {
  auto [it, fresh] = inflight_.try_emplace(std::string(key));
  it->second.waiters.push_back(waiter{std::move(sink), seq, proto});
  if (!fresh) return;  // single flight: joins the read in flight
  // MULTI, PTTL and GET answer +OK/+QUEUED (nobody waits for those); EXEC carries both results.
  request_.clear();
  std::array<std::size_t, 4> ends{};
  const std::array<std::string_view, 1> multi{"MULTI"};
  const std::array<std::string_view, 2> pttl{"PTTL", key};
  const std::array<std::string_view, 2> get{"GET", key};
  const std::array<std::string_view, 1> exec{"EXEC"};
  resp::append_command(request_, multi);
  ends[0] = request_.size();
  resp::append_command(request_, pttl);
  ends[1] = request_.size();
  resp::append_command(request_, get);
  ends[2] = request_.size();
  resp::append_command(request_, exec);
  ends[3] = request_.size();
  const auto deadline = clock::now() + std::chrono::milliseconds(cfg_.command_timeout_ms);
  bool ok = true;
  std::size_t begin = 0;
  for (std::size_t i = 0; i < ends.size() && ok; ++i) {
    const std::string_view part = std::string_view(request_).substr(begin, ends[i] - begin);
    begin = ends[i];
    ok = i < 3 ? conn_->submit(part, pending_reply{nullptr, 0, deadline, 0})
               : conn_->submit(part, pending_reply{shared_from_this(), 0, deadline, tag_read});
  }
  if (!ok) {
    flight f = std::move(it->second);
    inflight_.erase(it);
    for (auto& w : f.waiters) w.sink->deliver(w.seq, "-ERR upstream connection lost\r\n", 0);
    return;
  }
  order_.emplace_back(key);
}

void near_cache::deliver(std::uint64_t seq, std::string_view frame, std::uint8_t t) {
  (void)seq;
  const bool error = frame.empty() || frame[0] == '-' || frame[0] == '!';
  if (t == tag_tracking) {
    if (!error) {
      ready_ = true;
      log::info("cache invalidation channel ready (CLIENT TRACKING on)");
      settle(cache_tier::cache_mode::tracking, "the upstream accepts CLIENT TRACKING");
      return;
    }
    if (conn_ && conn_->failing()) return;  // the connection failed: closed() follows
    const std::string why = "CLIENT TRACKING refused by the upstream (" + error_text(frame) + ")";
    if (auto_) {
      if (cfg_.cache_prefix.empty())
        settle(cache_tier::cache_mode::fallback, why + "; no --cache-prefix for ttl mode");
      else
        settle(cache_tier::cache_mode::ttl, why + "; using ttl mode for --cache-prefix keys");
    } else {
      log::error("--cache-mode=tracking: " + why + "; L1 serves only during outages");
      settle(cache_tier::cache_mode::fallback, why);
    }
    if (conn_) conn_->close();
    return;
  }
  if (t != tag_read || order_.empty()) return;
  const std::string key = std::move(order_.front());
  order_.pop_front();
  auto it = inflight_.find(key);
  if (it == inflight_.end()) return;
  flight f = std::move(it->second);
  inflight_.erase(it);
  if (error) {
    for (auto& w : f.waiters) w.sink->deliver(w.seq, frame, 0);
    return;
  }
  // EXEC: [PTTL, GET] (null when the transaction was aborted, which it cannot be here).
  const auto v = resp::decode(frame);
  if (!v || v->elements.size() != 2 || v->elements[0].type != resp::value::kind::integer) {
    for (auto& w : f.waiters) w.sink->deliver(w.seq, "-ERR unexpected reply from upstream\r\n", 0);
    return;
  }
  const auto& value = v->elements[1];
  if (value.type == resp::value::kind::error) {  // WRONGTYPE: the key holds no string
    const std::string e = "-" + value.str + "\r\n";
    for (auto& w : f.waiters) w.sink->deliver(w.seq, e, 0);
    return;
  }
  const bool found = value.type == resp::value::kind::bulk_string;
  if (found && !f.invalidated && ready_) {
    const std::int64_t pttl = v->elements[0].integer;
    const std::int64_t now = mono_ms();
    tier_.store_tracked(cfg_.upstream.db, key, value.str, pttl > 0 ? now + pttl : 0, now);
  }
  answer(key, f, value.str, found);
}

void near_cache::answer(const std::string& key, flight& f, std::string_view value, bool found) {
  (void)key;
  std::string bulk, null2, null3;
  if (found) resp::append_bulk(bulk, value);
  for (auto& w : f.waiters) {
    if (found) {
      w.sink->deliver(w.seq, bulk, 0);
    } else {
      std::string& n = w.proto == 3 ? null3 : null2;
      if (n.empty()) resp::append_null(n, w.proto);
      w.sink->deliver(w.seq, n, 0);
    }
  }
}

// ">2 invalidate [key ...]" or ">2 invalidate null" (FLUSHALL / FLUSHDB).
void near_cache::pushed(connection* c, std::string_view frame) {
  if (c != conn_.get()) return;
  const auto v = resp::decode(frame);
  if (!v || v->elements.size() != 2 || v->elements[0].str != "invalidate") return;
  const auto& keys = v->elements[1];
  if (keys.type == resp::value::kind::null) {
    tier_.flushed();
    for (auto& [k, f] : inflight_) f.invalidated = true;
    return;
  }
  for (const auto& k : keys.elements) {
    tier_.invalidated(cfg_.upstream.db, k.str);
    if (auto it = inflight_.find(k.str); it != inflight_.end()) it->second.invalidated = true;
  }
}

void near_cache::closed(connection* c) {
  if (c != conn_.get()) return;
  if (ready_) log::warn("cache invalidation channel lost: " + c->last_error());
  if (ready_) tier_.channel_lost();  // tracked entries are no longer fresh
  ready_ = false;
  order_.clear();
  // Reads in flight were failed by the connection already; nothing else waits.
  inflight_.clear();
  const std::string error = c->last_error();
  conn_.reset();
  // An upstream without RESP3 cannot track on one connection: settle auto mode now.
  if (!settled_ && error.find("RESP3") != std::string::npos) {
    const std::string why = "the upstream does not speak RESP3 (" + error + ")";
    if (auto_ && !cfg_.cache_prefix.empty())
      settle(cache_tier::cache_mode::ttl, why + "; using ttl mode for --cache-prefix keys");
    else
      settle(cache_tier::cache_mode::fallback, why);
  }
}

}  // namespace redis_sidecar
