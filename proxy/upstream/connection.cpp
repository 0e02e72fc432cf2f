#include "proxy/upstream/connection.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <random>

#include "proxy/client_session.hpp"
#include "proxy/config/url.hpp"
#include "proxy/errors.hpp"
#include "proxy/log.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/tcp_keepalive.hpp"
#include "proxy/upstream/connect_fsm.hpp"
#include "proxy/upstream/tls_sessions.hpp"

namespace redis_sidecar {
namespace {

using clock = std::chrono::steady_clock;

std::uint32_t next_serial() {
  static std::atomic<std::uint32_t> last{0};
  return ++last;
}

// Room for at least one TLS record (16 KiB) per read.
constexpr std::size_t read_chunk = 16 * 1024;
// A read buffer grown past this for a large reply is released once empty.
constexpr std::size_t max_kept_rbuf = 1024 * 1024;
// The same for the buffer of requests written: one large request (a 100 MB SET) must not leave
// its size behind on a pooled connection for good.
constexpr std::size_t max_kept_wbuf = 1024 * 1024;

std::string error_frame(std::string_view prefix, std::string_view reason = {}) {
  std::string out = "-";
  out.append(prefix);
  if (!reason.empty()) {
    out.append(": ");
    // A reply line must not contain CR or LF.
    for (char c : reason) out.push_back(c == '\r' || c == '\n' ? ' ' : c);
  }
  out.append("\r\n");
  return out;
}

// TLS failures that name the sidecar's configuration rather than a transient fault: the upstream
// refused the sidecar's certificate, or asked for one the sidecar has none of (TLS 1.3 says so
// after the handshake, at the first read), or no TLS version is common to both; or the port does
// not speak TLS at all (a `rediss://` URL for a plaintext port).
bool refused_by_configuration(const error_code& ec) {
  if (ec.category() != asio::error::get_ssl_category()) return false;
  switch (ERR_GET_REASON(static_cast<unsigned long>(ec.value()))) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_WRONG_VERSION_NUMBER: return true;
    default: return false;
  }
}

// The upstream's handshake_failure alert, which names no cause (TLS 1.2's answer to a missing
// client certificate among others).
bool handshake_failure_alert(const error_code& ec) {
  return ec.category() == asio::error::get_ssl_category() &&
         ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
             SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE;
}

int certificate_requested_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool certificate_requested(SSL* ssl) {
  return ssl != nullptr && SSL_get_ex_data(ssl, certificate_requested_index()) != nullptr;
}

std::string tls_error_text(const error_code& ec, SSL* ssl) {
  if (ssl != nullptr) {
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK)
      return std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  }
  return ec.message();
}

}  // namespace

void note_certificate_requests(SSL_CTX* ctx) {
  certificate_requested_index();  // made before any handshake can need it
  // A client's cert_cb runs when the server asks for a certificate, whether or not the client has
  // one (without one, OpenSSL then sends none).
  SSL_CTX_set_cert_cb(
      ctx,
      [](SSL* ssl, void*) {
        static int requested = 1;
        SSL_set_ex_data(ssl, certificate_requested_index(), &requested);
        return 1;
      },
      nullptr);
}

connection::connection(asio::any_io_executor ex, const config& cfg, ssl::context* tls, stats& st,
                       int proto, bool reconnect)
    : ex_(ex),
      cfg_(cfg),
      tls_ctx_(tls),
      stats_(st),
      proto_(proto),
      reconnect_(reconnect),
      write_idle_(ex, clock::time_point::max()),
      tick_(ex),
      backoff_timer_(ex),
      serial_(next_serial()),
      hold_(std::chrono::microseconds(cfg.write_hold_rtt_us)),
      parser_(resp::reply_limits(cfg.limits)) {}

void connection::start() { asio::co_spawn(ex_, run(shared_from_this()), asio::detached); }

void connection::close() {
  if (closing_) return;
  closing_ = true;
  backoff_timer_.cancel();
  teardown("closed", false);
}

void connection::close_after_writes() {
  if (closing_) return;
  raw_sink_.reset();
  owner_.reset();
  if ((wbuf_.empty() && !writing_) || !shut_after_writes()) close();
}

bool connection::shut_after_writes() {
  if (closing_) return false;
  if (state_ == state::connecting) {
    linger_when_ready_ = true;  // run() goes on below once connected
    return true;
  }
  if (state_ != state::ready || broken_) return false;  // gone already: nothing to pass on
  closing_ = true;
  lingering_ = true;
  backoff_timer_.cancel();
  write_deferred_ = false;
  start_write();
  shut_when_written();
  return true;
}

void connection::shut_when_written() {
  if (!lingering_ || writing_ || !wbuf_.empty() || broken_) return;
  lingering_ = false;
  error_code ignored;
  if (tls_) tls_->socket().shutdown(tcp::socket::shutdown_send, ignored);
  if (plain_) plain_->shutdown(tcp::socket::shutdown_send, ignored);
  // Nothing waits for the replies any more: once Redis has closed its side too, or the last
  // request's deadline passed (the watchdog), the connection ends.
  if (pending_.empty()) teardown("closed", false);
}

void connection::reset(std::string reason) {
  if (state_ == state::ready && !broken_) teardown(std::move(reason), false);
}

bool connection::submit(std::string_view request, pending_reply entry) {
  if (!usable()) return false;
  wbuf_.append(request);
  pending_.push_back(std::move(entry));
  ++wbuf_requests_;
  ++stats_.inflight_requests;
  schedule_write();
  return true;
}

void connection::enter_raw(std::shared_ptr<client_session> sink) { raw_sink_ = std::move(sink); }

bool connection::owes_clients() const {
  for (std::size_t i = 0; i < pending_.size(); ++i)
    if (pending_[i].sink) return true;
  return false;
}

bool connection::send_raw(std::string_view request) {
  if (!usable()) return false;
  wbuf_.append(request);
  schedule_write();
  return true;
}

// The write of a turn's requests starts when the event loop's turn is over (event_loop.hpp), so
// that the requests of every client ready in this turn join it: from turn_ended() itself, so the
// bytes are on their way to the upstream before the loop runs another handler (Asio tries the
// send at once). A batch already a full TLS record long goes at once.
void connection::schedule_write() {
  if (!write_may_start()) return;  // write_done() or run() starts it
  if (wbuf_.size() < turn_batch_max_bytes) {
    if (write_deferred_) return;
    if (event_loop::defer(shared_from_this())) {
      write_deferred_ = true;
      return;
    }
  }
  start_write();
}

void connection::turn_ended() {
  write_deferred_ = false;
  if (hold_now()) {
    if (!held_) ++stats_.upstream_held_writes;
    held_ = true;  // the read that brings the replies schedules the write again
    return;
  }
  start_write();
}

// Only the shared connections hold (write_hold.hpp): a dedicated one serves one client, whose
// requests in flight are its own pipeline, and raw, subscriber and lingering ones keep their
// writes as they come.
bool connection::hold_now() const {
  if (!reconnect_ || raw_sink_ || subscriber_ || lingering_ || !write_may_start()) return false;
  const std::size_t queued = wbuf_requests_ <= pending_.size() ? wbuf_requests_ : pending_.size();
  return hold_.hold(queued, pending_.size() - queued);
}

// The socket (non-blocking) is tried at once: it nearly always takes a turn's batch whole, and
// then no completion handler has to run, nor the event loop poll the reactor again to reach one.
// What it does not take goes out asynchronously, write_done() following.
void connection::start_write() {
  if (!write_may_start() || wbuf_.empty()) return;
  if (role_check_due_) add_role_check();
  writing_ = true;
  wbuf_inflight_.clear();
  wbuf_inflight_.swap(wbuf_);
  if (wbuf_requests_ > 0 && wbuf_requests_ == pending_.size() && hold_.measuring())
    hold_.wrote_alone(clock::now());
  wbuf_requests_ = 0;
  held_ = false;
  ++stats_.upstream_writes;
  auto done = [self = shared_from_this()](error_code ec, std::size_t) { self->write_done(ec); };
  if (tls_) {
    if (!tls_->write_now_or_async(asio::buffer(wbuf_inflight_), std::move(done))) return;
  } else {
    error_code ec;
    const std::size_t n = plain_->write_some(asio::buffer(wbuf_inflight_), ec);
    if (ec || n < wbuf_inflight_.size()) {
      asio::async_write(*plain_, asio::buffer(wbuf_inflight_) + (ec ? 0 : n), std::move(done));
      return;
    }
  }
  writing_ = false;
  release_if_above(wbuf_inflight_, max_kept_wbuf);
  shut_when_written();
}

void connection::drop_unwritten() {
  wbuf_.clear();
  wbuf_requests_ = 0;
  held_ = false;
  hold_.stream_lost();
}

void connection::write_done(error_code ec) {
  writing_ = false;
  release_if_above(wbuf_inflight_, max_kept_wbuf);
  if (ec || broken_) {
    teardown(ec ? ec.message() : std::string(), false);
    write_idle_.cancel();  // the stream may go now (write_drain())
    return;
  }
  start_write();  // what came while this write was out
  shut_when_written();
  if (retiring_) hand_over_if_answered();
}

std::chrono::milliseconds connection::backoff() {
  // Exponential from reconnect_min_ms, capped at reconnect_max_ms, with "equal jitter": a random
  // point in the upper half, so a fleet of sidecars does not reconnect in lockstep.
  thread_local std::minstd_rand rng{std::random_device{}()};
  const unsigned shift = attempts_ > 16 ? 16 : attempts_;
  std::uint64_t ms = static_cast<std::uint64_t>(cfg_.reconnect_min_ms) << shift;
  if (ms > cfg_.reconnect_max_ms) ms = cfg_.reconnect_max_ms;
  const std::uint64_t half = ms / 2;
  return std::chrono::milliseconds(half + (half > 0 ? rng() % (half + 1) : 0));
}

awaitable<void> connection::run(std::shared_ptr<connection> self) {
  while (!closing_) {
    if (attempts_ > 0 || counted_ready_) ++stats_.upstream_reconnects;
    const auto connect_started = std::chrono::steady_clock::now();
    const bool ok = co_await connect_once();
    if (closing_) break;
    if (!ok) {
      ++attempts_;
      if (state_ != state::down && !quiet_)
        log::warn("upstream " + cfg_.upstream.masked() + " unavailable: " + last_error_);
      state_ = state::down;
      fail_pending(error_frame(errors::upstream_unavailable, last_error_));
      drop_unwritten();
      if (!reconnect_) break;
      backoff_timer_.expires_after(backoff());
      co_await backoff_timer_.async_wait(use_nothrow);
      continue;
    }
    if ((attempts_ > 0 || counted_ready_) && !quiet_)
      log::info("upstream " + cfg_.upstream.masked() + " connected");
    if (log::enabled(log::level::debug)) log_connected(connect_started);
    attempts_ = 0;
    state_ = state::ready;
    ready_since_ = clock::now();
    next_role_check_ = ready_since_ + std::chrono::seconds(1);  // HELLO just said
    role_check_due_ = false;
    // Handed over for a READONLY and landed on a primary (or on an upstream that does not say):
    // the other connections follow (readonly_epoch()).
    if (std::exchange(left_replica_, false) && role_ != connect_fsm::server_role::replica)
      ++readonly_epoch_;
    ready_epoch_ = readonly_epoch_;
    counted_ready_ = true;
    any_connection_ready_ = true;
    ++stats_.upstream_connections;
    broken_ = false;
    timed_out_ = false;
    start_write();  // the requests that queued while connecting
    if (std::exchange(linger_when_ready_, false)) {
      closing_ = lingering_ = true;
      shut_when_written();
    }
    {
      using namespace asio::experimental::awaitable_operators;
      co_await (read_loop() && write_drain() && watchdog());
    }
    --stats_.upstream_connections;
    // Handed over (note_replica()): nothing written is unanswered; what was queued meanwhile
    // stays, for the next stream, as requests that come while connecting do.
    const bool handover = std::exchange(handing_over_, false) && !closing_;
    retiring_ = false;
    if (handover) {
      held_ = false;
      hold_.stream_lost();
    } else {
      fail_pending(timed_out_ ? error_frame(errors::upstream_timeout)
                              : error_frame(errors::upstream_closed, last_error_));
      drop_unwritten();
    }
    rstart_ = rend_ = 0;
    parser_.reset();
    if (!handover && !closing_ && !quiet_) log::warn("upstream connection lost: " + last_error_);
    if (log::enabled(log::level::debug))
      log::debug("upstream connection id=" + std::to_string(upstream_id_) +
                 " ended: " + (closing_ ? std::string("closed by the sidecar") : last_error_));
    if (!reconnect_) break;
    state_ = state::connecting;  // one immediate attempt; requests queue meanwhile
  }
  state_ = state::closed;
  fail_pending(error_frame(errors::upstream_closed, last_error_));
  if (auto owner = owner_.lock()) owner->dedicated_lost(this);
  if (auto w = watcher_.lock()) w->closed(this);
  raw_sink_.reset();
  (void)self;
}

awaitable<std::tuple<error_code, std::size_t>> connection::read_some(asio::mutable_buffer buf) {
  // When a read left nothing queued, the next one waits for Redis without a recv() that fails
  // first (drained_read.hpp); under TLS, tls_stream's reads of the socket do.
  if (tls_) co_return co_await tls_->read_some(buf);
  co_return co_await plain_->async_read_some(drained_read_buffer{buf}, use_nothrow);
}

awaitable<std::tuple<error_code, std::size_t>> connection::write_all(asio::const_buffer buf) {
  if (tls_) co_return co_await tls_->write(buf);
  co_return co_await asio::async_write(*plain_, buf, use_nothrow);
}

// GCC 12 at -O2 takes the coroutine frame of connect_once() for one allocated by another operator
// new (GCC bug 109224, a false -Wmismatched-new-delete on coroutines); Asio allocates and frees it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
// One connect attempt, under a deadline that closes the socket when it fires (which aborts any
// operation in progress, TLS included).
namespace {

// True when `a` is an address of this host: loopback, or one a socket can be bound to.
bool is_local_address(const asio::ip::address& a) {
  if (a.is_loopback()) return true;
  const int fd = ::socket(a.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const asio::ip::udp::endpoint ep(a, 0);
  const bool bound = ::bind(fd, ep.data(), static_cast<socklen_t>(ep.size())) == 0;
  ::close(fd);
  return bound;
}

asio::ip::address unmapped(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return a;
}

}  // namespace

// Connected to our own listener: the URL named another address of this host (127.0.0.2, 127.1,
// ::ffff:127.0.0.1, a local interface's) that the start-up check, which compares names, let
// through. Every request would come back to the sidecar, opening connection after connection.
bool connection::is_own_listener(const tcp::endpoint& ep) const {
  if (!cfg_.listen.unix_path.empty() || ep.port() != cfg_.listen.port) return false;
  const asio::ip::address peer = unmapped(ep.address());
  error_code ec;
  const asio::ip::address listen = unmapped(asio::ip::make_address(cfg_.listen.host, ec));
  if (ec) return false;
  if (listen.is_unspecified()) return is_local_address(peer);
  return listen == peer;
}

awaitable<bool> connection::connect_once() {
  tls_.reset();
  plain_.reset();
  plain_.emplace(ex_);
  const upstream_url& url = cfg_.upstream;
  connect_fsm fsm(url, proto_);
  config_refusal refusal = config_refusal::none;  // the transport's own (the fsm's come later)

  // The deadline's handler may already be queued when the attempt ends (cancel() cannot take it
  // back): it then finds the attempt over and touches neither this frame, which is gone, nor the
  // sockets of a later attempt.
  struct attempt_state {
    bool over = false;
    bool deadline_hit = false;
  };
  auto attempt = std::make_shared<attempt_state>();
  auto self = shared_from_this();
  steady_timer deadline(ex_);
  deadline.expires_after(std::chrono::milliseconds(cfg_.connect_timeout_ms));
  deadline.async_wait([self, attempt](error_code ec) {
    if (ec || attempt->over) return;
    attempt->deadline_hit = true;
    error_code ignored;
    if (self->tls_) self->tls_->socket().close(ignored);
    if (self->plain_) self->plain_->close(ignored);
  });
  const bool& deadline_hit = attempt->deadline_hit;
  tcp::endpoint connected_to;
  bool handshake_timed_out = false;

  tcp::resolver resolver(ex_);
  tcp::resolver::results_type endpoints;
  std::string reply_buf;
  resp::reply_parser parser(resp::reply_limits(cfg_.limits));
  std::size_t parsed_from = 0;
  // A failed read or write of the attempt: its error text, and whether the upstream refused the
  // sidecar's configuration (a TLS alert about its certificate or protocol version) or dropped the
  // connection before its first reply: what a TLS-only port (a managed Redis' usual one) does with
  // a request that is not a TLS handshake, and what TLS 1.3 does after a handshake whose client
  // certificate the upstream refuses (the alert may be lost to the reset).
  bool dropped = false;
  auto io_error = [&](error_code ec) {
    if (deadline_hit) return std::string("timed out");
    if (refused_by_configuration(ec)) refusal = config_refusal::certificate;
    if (parsed_from == 0 && (ec == asio::error::connection_reset || ec == asio::error::eof ||
                             ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated))
      dropped = true;
    return ec.message();
  };

  auto step = fsm.start();
  while (step != connect_fsm::step::ready && step != connect_fsm::step::failed) {
    std::string error;
    switch (step) {
      case connect_fsm::step::resolve: {
        auto [ec, results] =
            co_await resolver.async_resolve(url.host, std::to_string(url.port), use_nothrow);
        if (ec) error = ec.message();
        endpoints = results;
        step = fsm.on_done(error);
        break;
      }
      case connect_fsm::step::connect: {
        // A socket the sidecar cannot open (out of file descriptors) is its own fault, not the
        // upstream's: said so, where the connect would report only "Operation canceled".
        error_code open_ec;
        if (!endpoints.empty()) plain_->open(endpoints.begin()->endpoint().protocol(), open_ec);
        if (open_ec) {
          error = open_ec == asio::error::no_descriptors
                      ? "the sidecar is out of file descriptors (" + open_ec.message() + ")"
                      : open_ec.message();
          step = fsm.on_done(error);
          break;
        }
        auto [ec, ep] = co_await asio::async_connect(*plain_, endpoints, use_nothrow);
        if (ec) error = deadline_hit ? "timed out" : ec.message();
        if (!ec) connected_to = ep;
        if (!ec && is_own_listener(ep)) {
          refusal = config_refusal::own_listener;
          error = "that address (" + ep.address().to_string() + ":" + std::to_string(ep.port()) +
                  ") is this sidecar's own listener (--listen " + cfg_.listen.host + ":" +
                  std::to_string(cfg_.listen.port) + "): point it at the real Redis";
        } else if (!ec) {
          error_code ignored;
          plain_->set_option(tcp::no_delay(true), ignored);
          plain_->non_blocking(true, ignored);  // start_write() tries the socket at once
          if (!set_tcp_keepalive(plain_->native_handle(), cfg_.tcp_keepalive_s))
            log::warn("upstream connection: TCP keepalive not set: " +
                      std::string(std::strerror(errno)));
          if (tls_ctx_ != nullptr) {
            tls_.emplace(std::move(*plain_), *tls_ctx_);
            plain_.reset();
            if (!tls_->ok()) error = "TLS: could not create a session (out of memory?)";
          } else {
            enable_drained_reads(plain_->native_handle());  // see read_some()
          }
        }
        step = fsm.on_done(error);
        break;
      }
      case connect_fsm::step::tls_handshake: {
        const std::string& name = cfg_.tls_server_name.empty() ? url.host : cfg_.tls_server_name;
        error_code addr_ec;
        asio::ip::make_address(name, addr_ec);
        if (addr_ec)  // SNI carries host names only, never IP literals
          SSL_ctrl(tls_->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                   const_cast<char*>(name.c_str()));
        if (!cfg_.tls_insecure_skip_verify) tls_->verify_peer(name);
        tls_sessions::offer(tls_->native_handle());
        auto [ec] = co_await tls_->handshake();
        if (ec) {
          handshake_timed_out = deadline_hit;
          error = deadline_hit ? "timed out" : tls_error_text(ec, tls_->native_handle());
          // Under TLS 1.2 a certificate the upstream asked for and did not get fails the
          // handshake itself (a handshake_failure alert, which names nothing).
          if (!deadline_hit && (SSL_get_verify_result(tls_->native_handle()) != X509_V_OK ||
                                refused_by_configuration(ec) ||
                                (cfg_.tls_cert_file.empty() && handshake_failure_alert(ec) &&
                                 certificate_requested(tls_->native_handle()))))
            refusal = config_refusal::certificate;
        } else {
          ++stats_.tls_handshakes;
          if (SSL_session_reused(tls_->native_handle()) == 1) ++stats_.tls_resumed;
        }
        step = fsm.on_done(error);
        break;
      }
      case connect_fsm::step::send: {
        auto [ec, n] = co_await write_all(asio::buffer(fsm.bytes()));
        if (ec) error = io_error(ec);
        step = fsm.on_done(error);
        break;
      }
      case connect_fsm::step::receive: {
        // Read until one complete reply is framed.
        resp::parse_status st;
        while ((st = parser.parse(std::string_view(reply_buf).substr(parsed_from))) ==
               resp::parse_status::need_more) {
          const std::size_t old = reply_buf.size();
          reply_buf.resize(old + 4096);
          auto [ec, n] = co_await read_some(asio::buffer(reply_buf.data() + old, 4096));
          reply_buf.resize(old + n);
          if (ec) {
            error = io_error(ec);
            break;
          }
        }
        if (!error.empty()) {
          step = fsm.on_done(error);
          break;
        }
        if (st == resp::parse_status::error) {
          step = fsm.on_done("protocol error in handshake reply");
          break;
        }
        auto value =
            resp::decode(std::string_view(reply_buf).substr(parsed_from, parser.frame_size()));
        parsed_from += parser.frame_size();
        parser.reset();
        if (!value) {
          step = fsm.on_done("protocol error in handshake reply");
          break;
        }
        step = fsm.on_reply(*value);
        break;
      }
      default: break;
    }
  }
  attempt->over = true;
  deadline.cancel();
  refusal_ = refusal != config_refusal::none ? refusal : fsm.refusal();
  // The upstream asked for a client certificate and dropped the connection after the handshake
  // (see note_certificate_requests()), and no connection of this process ever got through: it
  // refuses the certificate, or the lack of one. (Once one got through, a drop is an outage's: a
  // Redis restarting, a load balancer without backends.)
  const bool certificate_refused =
      step == connect_fsm::step::failed && tls_ &&
      (refusal == config_refusal::certificate || (dropped && !any_connection_ready_)) &&
      certificate_requested(tls_->native_handle());
  if (certificate_refused && refusal_ == config_refusal::none)
    refusal_ = config_refusal::certificate;
  // A TLS handshake that got no answer, before any connection ever got through: a plaintext
  // Redis reads a ClientHello as an unfinished inline command and waits, silent. One PING in
  // plaintext tells, and then it is the URL's fault (rediss:// for a plaintext port).
  bool plaintext_port = false;
  if (step == connect_fsm::step::failed && handshake_timed_out && !any_connection_ready_ &&
      refusal_ == config_refusal::none)
    plaintext_port = co_await answers_plaintext(connected_to);
  if (plaintext_port) refusal_ = config_refusal::certificate;
  if (step == connect_fsm::step::failed && refusal_ != config_refusal::none)
    ++stats_.upstream_refusals;
  if (step == connect_fsm::step::failed) {
    last_error_ = fsm.error();
    if (plaintext_port) last_error_ += " (the port answers plaintext Redis: use a redis:// URL)";
    if (certificate_refused && cfg_.tls_cert_file.empty())
      last_error_ +=
          " (the upstream asks for a client certificate: --tls-cert-file, --tls-key-file)";
    else if (certificate_refused)
      last_error_ +=
          " (the upstream asked for a client certificate and closed the connection: "
          "does it trust --tls-cert-file's issuer?)";
    else if (dropped && !tls_ctx_ && !any_connection_ready_)
      last_error_ += " (if the upstream's port expects TLS, use a rediss:// URL)";
    error_code ignored;
    if (tls_) tls_->socket().close(ignored);
    if (plain_) plain_->close(ignored);
    co_return false;
  }
  server_version_ = fsm.server_version();
  role_ = fsm.role();
  upstream_id_ = fsm.client_id();
  // Bytes after the last handshake reply belong to nobody: the upstream speaks only when asked.
  co_return true;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Whether `ep` answers a plaintext PING (+PONG, or an error such as NOAUTH) within
// --connect-timeout-ms.
awaitable<bool> connection::answers_plaintext(tcp::endpoint ep) {
  auto socket = std::make_shared<tcp::socket>(ex_);
  steady_timer deadline(ex_);
  deadline.expires_after(std::chrono::milliseconds(cfg_.connect_timeout_ms));
  deadline.async_wait([socket](error_code ec) {
    error_code ignored;
    if (!ec) socket->close(ignored);
  });
  auto [ec] = co_await socket->async_connect(ep, use_nothrow);
  if (!ec)
    std::tie(ec, std::ignore) = co_await asio::async_write(
        *socket, asio::buffer(std::string_view("*1\r\n$4\r\nPING\r\n")), use_nothrow);
  char reply[8] = {};
  std::size_t n = 0;
  if (!ec) std::tie(ec, n) = co_await socket->async_read_some(asio::buffer(reply), use_nothrow);
  deadline.cancel();
  error_code ignored;
  socket->close(ignored);
  co_return n > 0 && (reply[0] == '+' || reply[0] == '-');
}

// --log-level debug: one line per connection made, with what a TLS or RESP problem needs.
void connection::log_connected(std::chrono::steady_clock::time_point started) {
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  char took[32];
  std::snprintf(took, sizeof took, "%.1f", ms);
  std::string line = "upstream connection id=" + std::to_string(upstream_id_) + " to " +
                     cfg_.upstream.masked() + " ready in " + took + " ms: RESP" +
                     std::to_string(proto_) + ", Redis " + server_version_;
  if (tls_) {
    SSL* ssl = tls_->native_handle();
    line += std::string(", ") + SSL_get_version(ssl) + " " + SSL_get_cipher_name(ssl) +
            (SSL_session_reused(ssl) == 1 ? ", session resumed" : ", full handshake");
  }
  line += quiet_ ? " (the sidecar's own)" : reconnect_ ? " (pooled)" : " (dedicated to a client)";
  log::debug(line);
}

void connection::teardown(std::string reason, bool timed_out) {
  if (!broken_) {
    broken_ = true;
    timed_out_ = timed_out;
    if (!reason.empty()) last_error_ = std::move(reason);
  }
  error_code ignored;
  if (tls_) tls_->socket().close(ignored);
  if (plain_) plain_->close(ignored);
  write_idle_.cancel();
  tick_.cancel();
}

awaitable<void> connection::read_loop() {
  for (;;) {
    // Room behind the unfinished reply, never zero-filled; a buffer grown past max_kept_rbuf for
    // a large reply is let go once it is empty again (read_buffer.hpp).
    rbuf_.make_room(rstart_, rend_, read_chunk, 2 * read_chunk, max_kept_rbuf);
    auto [ec, n] = co_await read_some(asio::buffer(rbuf_.data() + rend_, rbuf_.size() - rend_));
    rend_ += n;
    ++reads_;
    if (ec || broken_) {
      teardown(ec == asio::error::eof ? "closed by the upstream" : ec.message(), false);
      co_return;
    }
    const auto received = clock::now();
    const std::uint64_t answered_before = answered_;
    // Frame every complete reply in the buffer.
    while (rstart_ < rend_) {
      const std::string_view avail(rbuf_.data() + rstart_, rend_ - rstart_);
      const auto st = parser_.parse(avail);
      if (st == resp::parse_status::need_more) break;
      if (st == resp::parse_status::error) {
        stats_.count(error_kind::upstream_protocol);
        log::error("upstream sent a malformed reply; resetting the connection");
        teardown("upstream protocol error", false);
        co_return;
      }
      const std::size_t size = parser_.frame_size();
      const bool push = parser_.is_push();
      rstart_ += size;
      if (parser_.embedded_pushes().empty()) {
        parser_.reset();
        dispatch(avail.substr(0, size), push, received);
      } else {
        dispatch_spliced(avail.substr(0, size), push, received);
        parser_.reset();
      }
      if (broken_) co_return;
    }
    if (answered_ != answered_before) hold_.answered(received);
    if (held_) schedule_write();  // the replies a held write waited for came
  }
}

// Redis 7.0 writes a push that a command causes to its own connection (the keyspace notification
// of a key it expired lazily, on a RESP3 connection subscribed to it) into that command's reply
// while it writes it, between two elements of an array. The pushes go first, in the order Redis
// made them, so that an invalidation reaches the near cache before the read it concerns is
// stored; the reply follows without them.
void connection::dispatch_spliced(std::string_view frame, bool push, clock::time_point received) {
  spliced_.clear();
  std::size_t at = 0;
  for (const auto& [begin, end] : parser_.embedded_pushes()) {
    spliced_.append(frame.substr(at, begin - at));
    at = end;
  }
  spliced_.append(frame.substr(at));
  for (const auto& [begin, end] : parser_.embedded_pushes()) {
    dispatch(frame.substr(begin, end - begin), true, received);
    if (broken_) return;
  }
  dispatch(spliced_, push, received);
}

void connection::dispatch(std::string_view frame, bool push, clock::time_point received) {
  // A reply still owed to a request sent before raw mode began (the HELLO that keeps a dedicated
  // connection's protocol in step) is not the raw client's.
  if (raw_sink_ && (pending_.empty() || push)) {
    raw_sink_->deliver_raw(frame);
    return;
  }
  // Outside raw mode only the near cache's channel pushes (RESP3), or receives pub/sub arrays
  // (RESP2 subscriber mode); both go to the watcher, if any.
  if (push || (subscriber_ && is_pubsub_event(frame))) {
    if (auto w = watcher_.lock()) w->pushed(this, frame);
    return;
  }
  if (pending_.empty()) {
    // Raw-mode requests have no entries: their client left (close_after_writes()) and the
    // connection lingers until Redis has read what was written; their replies go nowhere.
    if (closing_) return;
    stats_.count(error_kind::upstream_protocol);
    teardown("upstream sent a reply nobody asked for", false);
    return;
  }
  pending_reply entry = std::move(pending_.front());
  pending_.pop_front();
  ++answered_;
  --stats_.inflight_requests;
  // More of the read is left: the next replies are likely in it, each for another client when
  // clients send one request at a time. Their sinks load what delivering them touches while this
  // one is delivered (the next reply's entry, the one after's index slot).
  if (rstart_ < rend_ && !pending_.empty()) {
    if (pending_.size() > 1 && pending_[1].sink) pending_[1].sink->prefetch(pending_[1].seq, false);
    if (pending_[0].sink) pending_[0].sink->prefetch(pending_[0].seq, true);
  }
  // Redis' own text (a script's error_reply() can start "-READONLY" too).
  const bool readonly =
      frame[0] == '-' && frame.starts_with("-READONLY You can't write against a read only ");
  if (readonly) note_replica(received, "answered READONLY: it is a replica now");
  if (entry.sink) {
    entry.sink->deliver(entry.seq, frame, entry.tag, received);
  } else if (entry.tag == role_check_tag) {
    ++stats_.inflight_requests;  // add_role_check() did not count it
    role_check_out_ = false;
    note_role(frame, received);
  }
  if (readonly && !reconnect_ && demoted())
    if (auto owner = owner_.lock()) owner->dedicated_demoted(this);
  if (retiring_) hand_over_if_answered();
}

void connection::note_replica(clock::time_point now, std::string_view why) {
  // Only an upstream that said it was a primary counts as demoted: one that did not say (Redis
  // before 6) may be a replica all along, whose clients would be closed at every write.
  if (role_ == connect_fsm::server_role::primary) {
    demoted_at_ = now;
    // A stream older than the last demotion found is of the same failover, found later: moving
    // the mark would make streams that reached the new primary meanwhile look left behind.
    if (ready_since_ >= last_demotion_) last_demotion_ = now;
  }
  if (!reconnect_ || retiring_ || closing_ || broken_) return;
  // A primary demoted under this connection: a failover is under way, and the address may move
  // to the new primary only later (a DNS TTL), so for a minute the stream is renewed every
  // second while it lands on a replica; else the wait doubles.
  const auto up_for = now - ready_since_;
  const bool failing_over =
      demoted_at_ != clock::time_point{} && now - demoted_at_ < std::chrono::seconds(60);
  const auto wait = failing_over ? std::chrono::seconds(1)
                                 : std::chrono::seconds(1u << std::min(readonly_retires_ - 1, 5u));
  if (readonly_retires_ > 0 && up_for < wait) return;
  readonly_retires_ =
      readonly_retires_ == 0 || up_for > std::chrono::seconds(64) ? 1 : readonly_retires_ + 1;
  retiring_ = left_replica_ = true;  // left_replica_: however this stream ends
  if (quiet_) return;
  const std::string what = "upstream " + cfg_.upstream.masked() + " " + std::string(why) +
                           "; connection " + std::to_string(serial_) +
                           " reconnects once its replies are in, to reach the primary";
  if (readonly_retires_ == 1)
    log::warn(what);
  else if (log::enabled(log::level::debug))
    log::debug(what + " (" + std::to_string(readonly_retires_) + " times in a row)");
}

void connection::check_role(clock::time_point now) {
  if (!checks_role_ || state_ != state::ready || retiring_ || closing_ || broken_) return;
  // Another shared connection left a demoted primary and reached a primary (readonly_epoch()):
  // this stream, older or on a replica, may be on the demoted node still. It leaves
  // once, without left_replica_: reaching the primary again is no news for the others.
  if (reconnect_ && ready_epoch_ != readonly_epoch_) {
    ready_epoch_ = readonly_epoch_;
    if (!left_behind()) return;  // it reached the new primary itself
    retiring_ = true;
    hand_over_if_answered();
    return;
  }
  if (now < next_role_check_) return;
  if (role_ == connect_fsm::server_role::primary) {
    if (!role_check_out_) role_check_due_ = true;  // joins the next write (start_write())
    return;
  }
  // Landed on a replica within a minute of a demotion: the address may have moved since.
  if (reconnect_ && role_ == connect_fsm::server_role::replica && demoted() &&
      now - demoted_at_ < std::chrono::seconds(60)) {
    next_role_check_ = now + std::chrono::seconds(1);
    note_replica(now, "is still a replica, within a minute of a demotion");
    if (retiring_) hand_over_if_answered();
  }
}

// Rides on a write of clients' requests: no write of its own, and a connection that carries none
// has nothing to check for.
void connection::add_role_check() {
  // HELLO without AUTH keeps the login and, with the stream's own protocol, changes nothing.
  static constexpr std::string_view hello2 = "*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n";
  static constexpr std::string_view hello3 = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
  const auto now = clock::now();
  role_check_due_ = false;
  role_check_out_ = true;
  next_role_check_ = now + std::chrono::seconds(1);
  wbuf_.append(proto_ == 3 ? hello3 : hello2);
  pending_.push_back(pending_reply{
      nullptr, 0, now + std::chrono::milliseconds(cfg_.command_timeout_ms), role_check_tag});
  ++wbuf_requests_;
  // Not counted in flight: the gauge is the clients' requests and the sidecar's own on their
  // behalf; what takes it off counts it back (dispatch(), fail_pending()).
}

void connection::note_role(std::string_view frame, clock::time_point now) {
  if (role_ != connect_fsm::server_role::primary) return;
  const auto hello = resp::decode(frame);
  if (hello && connect_fsm::role_in_hello(*hello) == connect_fsm::server_role::replica)
    note_replica(now, "says in HELLO it is a replica now");
}

void connection::hand_over_if_answered() {
  if (!retiring_ || writing_ || broken_ || pending_.size() > wbuf_requests_) return;
  handing_over_ = true;
  teardown("reconnecting to reach the primary", false);
}

awaitable<void> connection::write_drain() {
  while (!broken_ || writing_) {
    write_idle_.expires_at(clock::time_point::max());
    co_await write_idle_.async_wait(use_nothrow);
  }
}

// Each period: the oldest request's deadline, and, on a connection that read nothing for a whole
// period, a reset the reads could not see. A reset that arrives with the last bytes, before they
// are read, comes in the same readiness event as they do, and the read that takes them reports
// nothing left (drained_read.hpp), so no read or event would tell: the connection would look
// ready until the next request's write failed. The socket's pending error tells, at the cost of
// one getsockopt() per quiet period.
awaitable<void> connection::watchdog() {
  const auto period = std::chrono::milliseconds(
      cfg_.command_timeout_ms < 400 ? std::max<std::uint32_t>(cfg_.command_timeout_ms / 4, 5)
                                    : 100);
  std::uint64_t reads_seen = reads_;
  while (!broken_) {
    tick_.expires_after(period);
    co_await tick_.async_wait(use_nothrow);
    if (broken_) co_return;
    if (reads_ == reads_seen) {
      if (const int err = socket_error(); err != 0) {
        teardown(error_code(err, asio::error::get_system_category()).message(), false);
        co_return;
      }
    }
    reads_seen = reads_;
    check_role(clock::now());
    if (broken_) co_return;  // handed over (check_role())
    if (!pending_.empty() && pending_.front().deadline < clock::now()) {
      if (!quiet_) stats_.count(error_kind::upstream_timeout);
      if (!quiet_)
        log::warn("upstream reply overdue after " + std::to_string(cfg_.command_timeout_ms) +
                  " ms; resetting the connection");
      teardown("command timeout", true);
      co_return;
    }
  }
}

int connection::socket_error() {
  return pending_error(tls_ ? tls_->socket().native_handle()
                            : (plain_ ? plain_->native_handle() : -1));
}

void connection::fail_pending(std::string_view error_line) {
  const auto now = clock::now();
  while (!pending_.empty()) {
    pending_reply entry = std::move(pending_.front());
    pending_.pop_front();
    --stats_.inflight_requests;
    if (!entry.sink && entry.tag == role_check_tag) {
      ++stats_.inflight_requests;  // add_role_check() did not count it
      role_check_out_ = false;
    }
    if (entry.sink) {
      if (error_line.find("unavailable") != std::string_view::npos)
        stats_.count(error_kind::upstream_unavailable);
      entry.sink->deliver_failure(entry.seq, error_line, entry.tag, now);
    }
  }
}

}  // namespace redis_sidecar
