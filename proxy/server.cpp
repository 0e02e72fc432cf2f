#include "proxy/server.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "proxy/errors.hpp"
#include "proxy/log.hpp"
#include "proxy/tcp_keepalive.hpp"
#include "proxy/upstream/tls_sessions.hpp"

namespace redis_sidecar {

std::optional<ssl::context> make_tls_context(const config& cfg, std::string& error) {
  ssl::context ctx(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  error_code ec;
  if (!cfg.tls_ca_file.empty()) {
    ctx.load_verify_file(cfg.tls_ca_file, ec);
    if (ec) {
      error = "cannot load --tls-ca-file " + cfg.tls_ca_file + ": " + ec.message();
      return std::nullopt;
    }
  } else {
    ctx.set_default_verify_paths(ec);
    if (ec) {
      error = "cannot load the system trust store: " + ec.message();
      return std::nullopt;
    }
  }
  note_certificate_requests(ctx.native_handle());
  if (!cfg.tls_cert_file.empty()) {
    ctx.use_certificate_chain_file(cfg.tls_cert_file, ec);
    if (ec) {
      error = "cannot load --tls-cert-file " + cfg.tls_cert_file + ": " + ec.message();
      return std::nullopt;
    }
    ctx.use_private_key_file(cfg.tls_key_file, ssl::context::pem, ec);
    if (ec) {
      error = "cannot load --tls-key-file " + cfg.tls_key_file + ": " + ec.message();
      return std::nullopt;
    }
  }
  ctx.set_verify_mode(cfg.tls_insecure_skip_verify ? ssl::verify_none : ssl::verify_peer);
  tls_sessions::enable(ctx.native_handle());
  return ctx;
}

server::server(asio::io_context& io, const config& cfg, ssl::context* tls,
               metrics::sidecar_metrics& m, metrics::exporter* exp)
    : io_(io),
      cfg_(cfg),
      pool_(io.get_executor(), cfg, tls, stats_),
      tier_(cfg),
      monitor_(
          std::make_shared<upstream_monitor>(io.get_executor(), cfg, tls, stats_, pool_, tier_)),
      near_(std::make_shared<near_cache>(io.get_executor(), cfg, tls, tier_)),
      ctx_{cfg, pool_, stats_, {}, 1, false, &tier_, &monitor_->health(), &m, near_.get()},
      metrics_(m),
      exporter_(exp),
      sweep_timer_(io),
      accept_pause_(io),
      spare_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
  metrics_[metrics::gauge_id::cache_max_bytes].set(static_cast<std::int64_t>(cfg.cache_max_bytes));
  metrics_[metrics::gauge_id::fallback_journal_max_bytes].set(
      static_cast<std::int64_t>(cfg.fallback_journal_max_bytes));
  monitor_->on_change([this] {
    near_->heartbeat();
    publish();
  });
  monitor_->on_fallback([this](const std::string& reason) {
    near_->upstream_stalled(reason);
    for (client_session* s : ctx_.sessions) s->upstream_stalled(reason);
  });
  near_->on_mode([this] { publish(); });
  // Reads in flight on the channel must not answer (or fill L1 for) misses after our own writes.
  tier_.on_write([near = near_.get()](int db, std::string_view key) { near->written(db, key); });
  // Before the first probe publishes: the gauge's zero would name the first mode (tracking) while
  // auto mode has not chosen one yet.
  publish_cache_mode();
}

void server::publish_cache_mode() {
  const auto modes = metrics_.cache_modes();
  for (std::size_t i = 0; i < modes.size(); ++i)
    if (modes[i] == cache_tier::mode_name(tier_.mode())) metrics_.set_cache_mode(i);
}

void server::publish() {
  using metrics::counter_id;
  using metrics::gauge_id;
  auto add = [&](counter_id id, std::uint64_t now, std::uint64_t& last) {
    if (now > last) metrics_[id].inc(now - last);
    last = now;
  };
  const tier_counters& tc = tier_.counters();
  const health_fsm& h = monitor_->health();
  auto& p = published_;
  add(counter_id::requests, stats_.requests, p.requests);
  add(counter_id::cache_hits, tc.hits, p.hits);
  add(counter_id::cache_misses, tc.misses, p.misses);
  add(counter_id::cache_evictions, tier_.l1().evictions(), p.evictions);
  add(counter_id::cache_invalidations, tc.invalidations, p.invalidations);
  add(counter_id::upstream_reconnects, stats_.upstream_reconnects, p.reconnects);
  add(counter_id::fallback_transitions, h.fallback_switches(), p.transitions);
  add(counter_id::fallback_writes_replayed, tc.replayed, p.replayed);
  add(counter_id::fallback_writes_rejected, tc.rejected, p.rejected);
  add(counter_id::cache_invalidations_received, tc.pushed_invalidations, p.received);
  add(counter_id::cache_stale_serves, tc.stale_serves, p.stale);
  add(counter_id::upstream_writes, stats_.upstream_writes, p.upstream_writes);
  add(counter_id::upstream_held_writes, stats_.upstream_held_writes, p.upstream_held_writes);
  add(counter_id::busy_poll, stats_.busy_poll_ns, p.busy_poll_ns);
  add(counter_id::busy_poll_backoffs, stats_.busy_poll_backoffs, p.busy_poll_backoffs);
  add(counter_id::naps, stats_.naps, p.naps);
  add(counter_id::upstream_tls_handshakes, stats_.tls_handshakes, p.tls_handshakes);
  add(counter_id::upstream_tls_resumed, stats_.tls_resumed, p.tls_resumed);
  for (std::size_t k = 0; k < p.errors.size(); ++k) {
    if (stats_.errors[k] > p.errors[k]) metrics_.count_error(k, stats_.errors[k] - p.errors[k]);
    p.errors[k] = stats_.errors[k];
  }
  publish_cache_mode();
  metrics_[gauge_id::cache_entries].set(static_cast<std::int64_t>(tier_.l1().entries()));
  metrics_[gauge_id::cache_bytes].set(static_cast<std::int64_t>(tier_.l1().bytes()));
  metrics_[gauge_id::client_connections].set(stats_.client_connections);
  metrics_[gauge_id::inflight_requests].set(stats_.inflight_requests);
  metrics_[gauge_id::upstream_connections].set(stats_.upstream_connections);
  metrics_[gauge_id::upstream_up].set(h.upstream_up() ? 1 : 0);
  metrics_[gauge_id::upstream_probe_duration].set(
      static_cast<std::int64_t>(h.last_probe_ms() * 1e6));
  metrics_[gauge_id::fallback_active].set(h.serving_from_l1() ? 1 : 0);
  metrics_[gauge_id::fallback_journal_bytes].set(
      static_cast<std::int64_t>(tier_.journal().bytes()));
  if (exporter_ == nullptr) return;
  metrics::health_snapshot snap;
  // Ready while clients can be answered: from the upstream, or from L1 in fallback; but not before
  // the upstream first answered, since until then an outage and a wrong address, password or CA
  // look the same (and L1 holds nothing to serve).
  snap.ready = !ctx_.draining && h.reached() && (!h.serving_from_l1() || tier_.enabled());
  snap.upstream_state = std::string(to_string(h.state()));
  snap.upstream_up = h.upstream_up();
  snap.last_error = h.last_error();
  if (!snap.last_error.empty()) {
    // Converted once per error: the two clocks, read anew at every snapshot, would move it by a
    // millisecond now and then.
    if (h.last_error_at() != error_at_converted_) {
      const auto unix_now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
      error_at_converted_ = h.last_error_at();
      error_unix_ms_ = unix_now - (upstream_monitor::now_ms() - h.last_error_at());
    }
    snap.last_error_unix_ms = error_unix_ms_;
  }
  if (h.probes() > 0) snap.last_probe_seconds = h.last_probe_ms() / 1000.0;
  snap.cache_mode = std::string(cache_tier::mode_name(tier_.mode()));
  snap.fallback_active = h.serving_from_l1();
  snap.cache_entries = tier_.l1().entries();
  snap.cache_bytes = tier_.l1().bytes();
  exporter_->publish(std::move(snap));
}

bool server::listen(std::string& error) {
  error_code ec;
  if (!cfg_.listen.unix_path.empty()) {
    ::unlink(cfg_.listen.unix_path.c_str());  // a stale socket from an earlier run
    unix_acceptor_.emplace(io_);
    asio::local::stream_protocol::endpoint ep(cfg_.listen.unix_path);
    unix_acceptor_->open(ep.protocol(), ec);
    if (!ec) unix_acceptor_->bind(ep, ec);
    if (!ec) unix_acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      error = "cannot listen on unix:" + cfg_.listen.unix_path + ": " + ec.message();
      return false;
    }
    return true;
  }
  auto addr = asio::ip::make_address(cfg_.listen.host, ec);
  if (ec) {
    error = "--listen: '" + cfg_.listen.host + "' is not an IP address";
    return false;
  }
  tcp::endpoint ep(addr, cfg_.listen.port);
  tcp_acceptor_.emplace(io_);
  tcp_acceptor_->open(ep.protocol(), ec);
  if (!ec) tcp_acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) tcp_acceptor_->bind(ep, ec);
  if (!ec) tcp_acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + cfg_.listen.host + ":" + std::to_string(cfg_.listen.port) + ": " +
            ec.message();
    return false;
  }
  port_ = tcp_acceptor_->local_endpoint().port();
  return true;
}

void server::start() {
  pool_.warm_up();
  monitor_->start();
  near_->start();
  asio::co_spawn(io_, accept_loop(), asio::detached);
  // Unix-socket clients read the way Asio does, not drained: nothing for the sweep to find.
  if (tcp_acceptor_) asio::co_spawn(io_, reset_sweep(), asio::detached);
}

awaitable<void> server::reset_sweep() {
  std::vector<std::shared_ptr<client_session>> reset;
  while (!ctx_.draining) {
    sweep_timer_.expires_after(reset_sweep_period);
    co_await sweep_timer_.async_wait(use_nothrow);
    if (ctx_.draining) co_return;
    for (client_session* s : ctx_.sessions)
      if (s->reset_unseen()) reset.push_back(s->shared_from_this());
    for (auto& s : reset) s->close_now();  // not while walking the set: closing leaves it
    reset.clear();
    trim_after_burst();
  }
}

// A burst of clients leaves its sessions' buffers free but held by the allocator, which gives
// back only what lies at the top of the heap: RSS rose from 7 to 34 MB after 2,000 clients came
// and went, and stayed there. Once many of them are gone, malloc_trim() returns the free pages
// (a few milliseconds for a heap of tens of MB, and only after such a drop).
void server::trim_after_burst() {
  const std::size_t now = ctx_.sessions.size();
  if (sessions_peak_ < now + 256) return;
  ::malloc_trim(0);
  sessions_peak_ = now;
}

namespace {

std::string max_clients_reply() { return "-" + std::string(errors::max_clients) + "\r\n"; }

}  // namespace

bool server::throttled_count::count_and_due() {
  ++count;
  const auto now = std::chrono::steady_clock::now();
  if (now - logged < std::chrono::seconds(10)) return false;
  logged = now;
  return true;
}

server::~server() {
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

// An accept that fails for want of a file descriptor leaves the connection in the listen queue,
// so the next accept fails at once too: retried straight away, that is a busy loop starving every
// client already connected. Instead the spare descriptor makes room to take the connection and
// close it with Redis' error, the limit is logged (at most every 10 s, with how many were
// refused), and accepting pauses for 50 ms.
awaitable<void> server::out_of_descriptors(int listener) {
  stats_.count(error_kind::max_clients);
  if (spare_fd_ >= 0) {
    ::close(spare_fd_);
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      const std::string r = max_clients_reply();
      (void)!::send(fd, r.data(), r.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
    }
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  if (shed_.count_and_due()) {
    rlimit nofile{};
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    log::warn("out of file descriptors (the open-file limit is " + std::to_string(nofile.rlim_cur) +
              ", " + std::to_string(ctx_.sessions.size()) +
              " clients connected): new clients are refused (" + std::to_string(shed_.count) +
              " so far); raise the limit (ulimit -n) or lower --max-clients");
  }
  accept_pause_.expires_after(std::chrono::milliseconds(50));
  co_await accept_pause_.async_wait(use_nothrow);
}

awaitable<void> server::accept_loop() {
  for (;;) {
    if (tcp_acceptor_) {
      auto [ec, sock] = co_await tcp_acceptor_->async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || !tcp_acceptor_->is_open()) co_return;
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
        co_await out_of_descriptors(tcp_acceptor_->native_handle());
        continue;
      }
      if (ec) continue;  // the connection failed before it was taken: the next one
      error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);
      set_tcp_keepalive(sock.native_handle(), cfg_.tcp_keepalive_s);  // as no_delay: best effort
      const auto ep = sock.local_endpoint(ignored);
      client_socket generic(io_,
                            asio::generic::stream_protocol(ep.protocol().family(), IPPROTO_TCP),
                            sock.release(ignored));
      admit(std::move(generic));
    } else {
      auto [ec, sock] = co_await unix_acceptor_->async_accept(use_nothrow);
      if (ec == asio::error::operation_aborted || !unix_acceptor_->is_open()) co_return;
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
        co_await out_of_descriptors(unix_acceptor_->native_handle());
        continue;
      }
      if (ec) continue;
      error_code ignored;
      client_socket generic(io_, asio::generic::stream_protocol(AF_UNIX, 0), sock.release(ignored));
      admit(std::move(generic));
    }
  }
}

void server::admit(client_socket socket) {
  if (ctx_.sessions.size() >= cfg_.max_clients || ctx_.draining) {
    stats_.count(error_kind::max_clients);
    if (!ctx_.draining && refused_.count_and_due())
      log::warn("--max-clients " + std::to_string(cfg_.max_clients) +
                " reached: new clients are refused (" + std::to_string(refused_.count) +
                " so far)");
    const std::string r = max_clients_reply();
    error_code ignored;
    socket.non_blocking(true, ignored);
    socket.write_some(asio::buffer(r), ignored);  // best effort, never blocks
    socket.close(ignored);
    return;
  }
  std::make_shared<client_session>(std::move(socket), ctx_)->start();
  sessions_peak_ = std::max(sessions_peak_, ctx_.sessions.size());
}

awaitable<std::size_t> server::shutdown(std::chrono::milliseconds grace) {
  error_code ignored;
  ctx_.draining = true;
  sweep_timer_.cancel();
  accept_pause_.cancel();
  publish();  // /readyz: not ready from now on
  if (tcp_acceptor_) tcp_acceptor_->close(ignored);
  if (unix_acceptor_) {
    unix_acceptor_->close(ignored);
    ::unlink(cfg_.listen.unix_path.c_str());
  }
  // Copy: drain() may close sessions, which removes them from the set.
  std::vector<client_session*> open(ctx_.sessions.begin(), ctx_.sessions.end());
  for (auto* s : open) s->drain();
  steady_timer t(io_);
  const auto until = std::chrono::steady_clock::now() + grace;
  while (!ctx_.sessions.empty() && std::chrono::steady_clock::now() < until) {
    t.expires_after(std::chrono::milliseconds(20));
    co_await t.async_wait(use_nothrow);
  }
  // Clients still open after the grace period are cut off, so that no session and upstream
  // connection are left holding each other when the io_context stops.
  open.assign(ctx_.sessions.begin(), ctx_.sessions.end());
  for (auto* s : open) s->close_now();
  // Writes acknowledged in fallback live only in the journal: the monitor replays them when the
  // upstream is back, so wait for that within the grace period, and say so plainly if it was not.
  if (!tier_.journal().empty()) {
    log::warn("waiting up to " + std::to_string(grace.count()) + " ms for the upstream to replay " +
              std::to_string(tier_.journal().size()) + " writes accepted during fallback");
    monitor_->hurry();
  }
  while (!tier_.journal().empty() && std::chrono::steady_clock::now() < until) {
    t.expires_after(std::chrono::milliseconds(20));
    co_await t.async_wait(use_nothrow);
  }
  const std::size_t lost = tier_.journal().size();
  if (lost > 0) {
    log::error("stopping with " + std::to_string(lost) +
               " writes accepted during fallback not replayed (the upstream " +
               cfg_.upstream.masked() + " was not back in time): they are lost");
  }
  monitor_->stop();
  near_->stop();
  pool_.close_all();
  co_return lost;
}

}  // namespace redis_sidecar
