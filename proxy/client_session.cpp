#include "proxy/client_session.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <tuple>
#include <utility>
#include <variant>

#include "proxy/commands/blocking.hpp"
#include "proxy/commands/client_kill.hpp"
#include "proxy/commands/client_list.hpp"
#include "proxy/drained_read.hpp"
#include "proxy/errors.hpp"
#include "proxy/log.hpp"
#include "proxy/resp/detail/line.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/resp/writer.hpp"
#include "proxy/upstream/connect_fsm.hpp"

namespace redis_sidecar {
namespace {

using clock = std::chrono::steady_clock;
using commands::command_id;
using commands::iequals;
using commands::sub_id;

constexpr std::size_t read_chunk = 64 * 1024;
// An input buffer grown past this for a large request is released once it is empty again.
constexpr std::size_t max_kept_input = 1024 * 1024;

// An integer as Redis reads one (string2ll: no '+', no leading zeros, no "-0").
bool parse_int(std::string_view s, long long& out) {
  std::int64_t v = 0;
  if (!resp::detail::parse_decimal(s, v)) return false;
  out = v;
  return true;
}

// A blocking command's own timeout beyond which its deadline is none at all: the steady clock
// counts nanoseconds in 64 bits (292 years), and a timeout of a century is a wait for good.
constexpr long long max_deadline_ms = 100LL * 365 * 24 * 3600 * 1000;

std::int64_t mono_ms(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Commands the session answers itself (or that manage the session), also in fallback mode.
bool session_command(command_id id) {
  switch (id) {
    case command_id::auth:
    case command_id::hello:
    case command_id::quit:
    case command_id::reset:
    case command_id::select:
    case command_id::client:
    case command_id::unsubscribe:
    case command_id::punsubscribe:
    case command_id::sunsubscribe: return true;
    default: return false;
  }
}

// SELECT's db when its arguments are well formed (whether the server has that db is its to say).
std::optional<int> select_db(std::span<const std::string_view> args) {
  long long db = 0;
  if (args.size() != 2 || !parse_int(args[1], db) || db < 0 || db > 1000000) return std::nullopt;
  return static_cast<int>(db);
}

// The CLIENT subcommands the session answers itself (the others go to the upstream).
bool client_sub_answered_here(sub_id sub, std::size_t argc) {
  switch (sub) {
    case sub_id::client_setname: return argc == 3;
    case sub_id::client_getname:
    case sub_id::client_id: return argc == 2;
    case sub_id::client_setinfo: return argc == 4;
    default: return false;
  }
}

// HELLO's reply, an error or a map whose first key is "server", told apart from the messages a
// subscriber may get before it.
bool is_hello_reply(std::string_view frame) {
  if (frame.starts_with('-')) return true;
  if (!frame.starts_with('%') && !frame.starts_with('*')) return false;
  const auto eol = frame.find("\r\n");
  return eol != std::string_view::npos && frame.substr(eol + 2).starts_with("$6\r\nserver\r\n");
}

// An error Redis gives before running a command, whatever the command (PING, which the markers
// are, among them; its only flag is "fast"): a script or function running too long, a dataset
// loading, a replica whose master is down, a connection no longer authenticated.
bool refuses_any_command(std::string_view frame) {
  static constexpr std::array<std::string_view, 4> codes{"BUSY", "LOADING", "MASTERDOWN", "NOAUTH"};
  return frame.starts_with('-') &&
         std::find(codes.begin(), codes.end(), resp::error_code(frame)) != codes.end();
}

// Redis' refusal, to a RESP2 subscriber, of `command` (lower case, "client|kill" for a subcommand).
void append_subscribed_refusal(std::string& r, std::string_view command) {
  resp::append_error(r, "ERR Can't execute '" + std::string(command) +
                            "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are "
                            "allowed in this context");
}

// CLIENT REPLY ON: every request is still answered (OFF and SKIP are what the markers of raw mode
// cannot work with).
bool replies_stay_on(std::span<const std::string_view> args) {
  return args.size() == 3 && iequals(args[2], "on");
}

// Sent upstream in place of CLIENT KILL in raw mode where markers cannot be used (a MULTI or
// CLIENT REPLY in raw mode): Redis refuses it, in order, and it runs nothing.
constexpr std::string_view refused_kill_frame =
    "*1\r\n$68\r\nCLIENT-KILL-UNSUPPORTED-BY-REDIS-SIDECAR-AFTER-MULTI-OR-CLIENT-REPLY\r\n";

// Sent upstream in place of the EXEC of a transaction the session refused a command of; the
// client gets EXECABORT for it.
constexpr std::string_view discard_frame = "*1\r\n$7\r\nDISCARD\r\n";

const std::string& execabort_reply() {
  static const std::string r = [] {
    std::string out;
    resp::append_error(out, errors::execabort);
    return out;
  }();
  return r;
}

bool valid_client_name(std::string_view name) {
  return std::all_of(name.begin(), name.end(), [](char c) { return c >= '!' && c <= '~'; });
}

}  // namespace

client_session::client_session(client_socket socket, session_context& ctx)
    : socket_(std::move(socket)),
      ctx_(ctx),
      cfg_(ctx.cfg),
      id_(ctx.next_client_id++),
      parser_(ctx.cfg.limits),
      writer_wake_(socket_.get_executor(), clock::time_point::max()),
      drain_wake_(socket_.get_executor(), clock::time_point::max()),
      db_(ctx.cfg.upstream.db),
      authed_(ctx.cfg.requirepass.empty()),
      op_parser_(ctx.cfg.limits) {
  apply_auth_limits();
  ctx_.sessions.insert(this);
  ++ctx_.st.client_connections;
}

client_session::~client_session() { close_now(); }

void client_session::start() {
  error_code ignored;
  socket_.non_blocking(true, ignored);  // turn_ended() writes without blocking
  // TCP clients (not unix sockets): reads after a drained one wait without a failing recv().
  drained_reads_ = enable_drained_reads(socket_.native_handle());
  if (log::enabled(log::level::debug))
    log::debug("client " + std::to_string(id_) + " connected from " + peer_address() + " (" +
               std::to_string(ctx_.sessions.size()) + " clients)");
  auto self = shared_from_this();
  asio::co_spawn(socket_.get_executor(), read_loop(self), asio::detached);
  asio::co_spawn(socket_.get_executor(), write_loop(self), asio::detached);
}

void client_session::drain() {
  if (closing_) return;
  note_close("the sidecar is shutting down");
  closing_ = true;
  drain_wake_.cancel();
  error_code ignored;
  socket_.shutdown(asio::socket_base::shutdown_receive, ignored);
  notify_writer();
}

// ---------------------------------------------------------------------------------------------
// Reading and dispatch

awaitable<void> client_session::read_loop(std::shared_ptr<client_session> self) {
  while (!closing_) {
    // Frame and handle every complete request in the buffer.
    framed_at_ = batch_now_ = clock::now();
    while (!closing_) {
      if (batch_next_ == batch_.size()) {
        if (in_start_ == in_end_) break;
        const auto st = frame_requests();
        if (batch_.empty() && st == resp::parse_status::need_more) break;
        if (batch_.empty()) {  // the next request cannot be framed
          const std::string_view avail(in_.data() + in_start_, in_end_ - in_start_);
          ctx_.st.count(error_kind::protocol);
          const std::string why = request_error_text(avail);
          log::info("client " + std::to_string(id_) + " (" + peer_address() +
                    ") closed: protocol error: " + std::string(why));
          reply_error(why);
          note_close("protocol error: ", why);
          close_after_flush();
          break;
        }
      }
      const framed& r = batch_[batch_next_];
      // A request larger than the limit is refused however it came (its end in the same read as
      // the rest too, where the check before each read never sees it unparsed).
      if (r.size > cfg_.max_query_buffer_bytes) {
        refuse_query_buffer();
        break;
      }
      const auto args = batch_args(r);
      const std::string_view frame(in_.data() + in_start_, r.size);
      outcome o;
      answered_here_ = false;
      answered_by_ = metrics::source::local;
      retrying_ = miss_pending_ = false;
      while ((o = handle(args, frame, r.is_inline, r.info, r.key)) == outcome::wait) {
        // The barrier (or --max-pipeline): wait until the in-flight replies drain. The request is
        // handled again then, as if new, but counted once: the attempt that answers it counts.
        retrying_ = true;
        miss_pending_ = false;
        reader_waiting_ = true;
        watch_for_close();
        drain_wake_.expires_at(clock::time_point::max());
        co_await drain_wake_.async_wait(use_nothrow);
        reader_waiting_ = false;
        batch_now_ = clock::now();
        if (closing_ || closed_) co_return;
      }
      if (miss_pending_) ctx_.tier->count_miss();
      if (answered_here_) ctx_.metrics->observe(command_, answered_by_, clock::now() - framed_at_);
      in_start_ += r.size;
      ++batch_next_;
      if (o == outcome::close) {
        note_close("QUIT");
        close_after_flush();
      }
      // Pipelines deeper than --max-pipeline: stop reading until replies drain.
      if (slots_.size() >= cfg_.max_pipeline && !closing_) {
        ctx_.st.count(error_kind::pipeline_full);
        reader_waiting_ = true;
        watch_for_close();
        while (slots_.size() >= cfg_.max_pipeline && !closing_ && !closed_) {
          drain_wake_.expires_at(clock::time_point::max());
          co_await drain_wake_.async_wait(use_nothrow);
        }
        reader_waiting_ = false;
        batch_now_ = clock::now();
      }
    }
    if (closing_ || closed_) break;

    // Make room and read more. in_ keeps its size between reads (bytes past in_end_ are stale)
    // and is never zero-filled (read_buffer.hpp); a partial frame moves to the front only when the
    // room behind it runs short, and in_ grows only for a frame larger than it.
    if (in_end_ - in_start_ > cfg_.max_query_buffer_bytes) {  // a request still incomplete
      refuse_query_buffer();
      break;
    }
    in_.make_room(in_start_, in_end_, read_chunk, read_chunk, max_kept_input);
    // When a read left nothing queued, the next one waits for the client without a recv() that
    // fails first (drained_read.hpp).
    const asio::mutable_buffer room(in_.data() + in_end_, in_.size() - in_end_);
    error_code ec;
    std::size_t n = 0;
    if (drained_reads_) {
      std::tie(ec, n) = co_await socket_.async_read_some(drained_read_buffer{room}, use_nothrow);
    } else {
      std::tie(ec, n) = co_await socket_.async_read_some(room, use_nothrow);
    }
    in_end_ += n;
    ++reads_;
    if (ec) {
      // The client closed or reset its connection. Redis answers what it read before it sees a
      // close, so a client that only shut its sending side (`nc -N`, a health check) still gets
      // the replies of what it sent: they are written when they come, then the connection
      // closes. Behind a blocking command in flight, the close goes on to Redis on the
      // dedicated connection (pass_shut_upstream()). Raw mode (subscriptions, MONITOR, tracking)
      // and a reset end at once. What a dedicated connection was still to send goes out before
      // it closes (drop_dedicated()). (A drain shut our receive side: closing_ is set then, and
      // in-flight replies are still written.)
      if (!closing_) {
        const bool eof = ec == asio::error::eof;
        note_close(eof ? std::string_view("the client closed the connection")
                       : std::string_view(ec.message()));
        // Not idle(): replies are due, or taken from the slots but still waiting for the turn's
        // end or half written. They are the client's too.
        if (eof && !raw_ && !idle() && !blocked()) {
          close_after_flush();
        } else if (eof && blocked()) {
          pass_shut_upstream();
        } else {
          close_now();
        }
      }
      break;
    }
  }
  // The client is gone or leaving: let the writer flush what is ready, then close.
  closing_ = true;
  notify_writer();
  (void)self;
}

// While the reader waits, nothing reads the socket, so a client that leaves would go unnoticed
// until the wait ends, which a blocking command ahead of it may put off indefinitely (its
// dedicated connection, and the command, staying behind). A readiness wait sees the close: a peek
// that reads 0 bytes (or fails) is the client gone. Bytes waiting instead (a pipeline) are left
// for the reader: the client is then noticed leaving once they are read.
void client_session::watch_for_close() {
  // Waits for shared connections end within a command timeout: only a dedicated connection
  // (blocking commands, raw mode) can hold the reader indefinitely. (The readiness wait costs an
  // epoll_ctl; barriers between the shared connections and the near cache's channel are common.)
  if (watching_close_ || closed_ || !dedicated_) return;
  watching_close_ = true;
  socket_.async_wait(
      asio::socket_base::wait_read, [self = shared_from_this()](const error_code& ec) {
        self->watching_close_ = false;
        if (ec || self->closed_ || !self->reader_waiting_) return;
        char byte;
        const auto n = ::recv(self->socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 && !self->raw_) {
          // Only its sending side shut (`nc -N`, a health check), behind requests still waiting
          // for a barrier or room in the pipeline: Redis answers what it read before it sees the
          // close, and so does the sidecar; reading ends at the close, as it comes. Behind a
          // blocking command in flight, Redis reads no more either: the close goes on to it.
          if (self->blocked()) self->pass_shut_upstream();
        } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          self->note_close("the client left while its reads waited");
          self->close_now();
        } else if (n < 0)
          self->watch_for_close();  // woken for nothing: watch on
      });
}

client_session::outcome client_session::handle(std::span<const std::string_view> args,
                                               std::string_view frame, bool is_inline,
                                               const commands::command_info* info, key_hint key) {
  if (args.empty()) return outcome::next;  // empty lines and "*0": ignored, as Redis does
  if (!retrying_) {
    ++ctx_.st.requests;
    ++requests_;
    if (active_window_ != ctx_.st.active_window) {
      active_window_ = ctx_.st.active_window;
      ++ctx_.st.active_clients;
    }
  }
  if (is_inline) {  // forward inline commands as arrays
    inline_scratch_.clear();
    resp::append_command(inline_scratch_, args);
    frame = inline_scratch_;
  }
  const command_id id = info != nullptr ? info->id : command_id::other;
  command_ = static_cast<std::uint16_t>(info != nullptr ? info - commands::all().data()
                                                        : ctx_.metrics->other_command());
  last_command_ = info;
  if (id == command_id::client) {  // CLIENT LIST's cmd names a known subcommand: client|list
    last_client_sub_.clear();
    if (args.size() >= 2 && commands::lookup_sub(command_id::client, args[1]) != sub_id::other)
      for (const char ch : args[1])
        last_client_sub_ += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }

  if (!authed_ && id != command_id::auth && id != command_id::hello && id != command_id::quit &&
      id != command_id::reset) {
    reply_error(errors::noauth);
    return outcome::next;
  }
  if (info != nullptr && (info->flags & commands::script) && (info->flags & commands::write))
    after_script_ = true;  // see near_get
  if (raw_) return handle_raw(args, frame, info);
  if (fallback_multi_) return fallback_transaction(info, args);
  if (ctx_.health->serving_from_l1() && !dedicated_ && !session_command(id))
    return id == command_id::multi || multi_open_ ? fallback_transaction(info, args)
                                                  : serve_fallback(info, args, frame);

  if (id == command_id::get && args.size() == 2 && !dedicated_ && !multi_open_) {
    if (const auto o = near_get(args[1])) return *o;
  }

  switch (id) {
    case command_id::auth: return cmd_auth(args);
    case command_id::hello: return cmd_hello(args);
    case command_id::quit: reply_simple("OK"); return outcome::close;
    case command_id::reset: return cmd_reset(args);
    case command_id::select: return cmd_select(args, frame);
    case command_id::client: return cmd_client(args, frame);
    case command_id::multi: {
      const outcome o = forward_dedicated(frame, tag_multi);
      if (o == outcome::next && !multi_open_) {  // (a nested MULTI is Redis' error to give)
        multi_open_ = true;
        transactions_.push_back(transaction{});
      }
      return o;
    }
    case command_id::watch: return forward_dedicated(frame, tag_watch);
    case command_id::exec:
    case command_id::discard:
      if (!multi_open_) return forward(frame);  // Redis' "without MULTI" error
      multi_open_ = false;
      // Redis would abort it at EXEC had it refused the command itself: DISCARD in its place.
      if (id == command_id::exec && transactions_.back().refused)
        return forward(discard_frame, tag_exec_abort);
      return forward(frame, id == command_id::exec ? tag_exec : tag_discard);
    case command_id::unwatch: return forward(frame, tag_unwatch);
    case command_id::subscribe:
    case command_id::psubscribe:
    case command_id::ssubscribe: return enter_raw(frame, false);
    case command_id::monitor: return enter_raw(frame, true);
    case command_id::unsubscribe:
    case command_id::punsubscribe:
    case command_id::sunsubscribe:
      // Inside MULTI, queued like any command: Redis answers it at EXEC.
      return multi_open_ ? forward(frame) : local_unsubscribe(args);
    default: break;
  }
  // A blocking command takes a dedicated connection (the one it has, unless it is only queued in
  // a MULTI there), with a deadline past its own timeout; not blocking this time: as any command.
  if (info != nullptr && (info->flags & commands::blocking) && (!dedicated_ || !in_multi_)) {
    if (const auto ms = commands::block_ms(*info, args)) {
      const auto deadline = *ms == 0 || *ms > max_deadline_ms
                                ? clock::time_point::max()
                                : batch_now_ + std::chrono::milliseconds(*ms) +
                                      std::chrono::milliseconds(cfg_.command_timeout_ms);
      blocking_seq_ = next_seq_;  // its reply's slot, if it goes now (CLIENT LIST's flag b)
      return forward_dedicated(frame, tag_none, deadline);
    }
  }
  cache_tier& tier = *ctx_.tier;
  const bool fills = info != nullptr && tier.wants_reply(*info);
  // The first key's hash in L1, for the work at the request and at its reply: hashed once, or
  // not at all here when the batch's prefetch hashed it (in the db it still selects).
  key_hint key1{};
  if (fills && info->first_key == 1 && args.size() > 1 &&
      (!multi_open_ || (info->flags & commands::write))) {
    key1.db = effective_db();
    key1.hash = key.hash != 0 && key.db == key1.db ? key.hash : tier.key_hash(key1.db, args[1]);
  }
  if (fills && !multi_open_) {
    fill_info_ = info;
    fill_frame_ = frame;
    fill_key_ = {};
    fill_key_hash_ = 0;
    fill_argc_ = args.size();
    // The key must lie within the frame (not so for inline commands, whose frame is rebuilt);
    // addresses compared as integers, since they may point into different buffers.
    const auto at = [](std::string_view s) { return reinterpret_cast<std::uintptr_t>(s.data()); };
    if (info->first_key == 1 && args.size() > 1 && at(args[1]) >= at(frame) &&
        at(args[1]) + args[1].size() <= at(frame) + frame.size()) {
      fill_key_ = args[1];
      fill_key_hash_ = key1.hash;
    }
  }
  sent_on_ = 0;
  const outcome o = forward(frame);
  fill_info_ = nullptr;
  // Once sent (and on which connection is known): L1 forgets, or hides, the keys of a write.
  if (fills && sent_on_ != 0 && (info->flags & commands::write)) {
    const int db = effective_db();
    tier.on_request(db, *info, args, {sent_on_, 0}, true, db == key1.db ? key1.hash : 0);
    if (multi_open_) {
      transactions_.back().writes.emplace_back(frame);
      transactions_.back().conn = sent_on_;
    }
  }
  return o;
}

std::optional<client_session::outcome> client_session::near_get(std::string_view key) {
  cache_tier& tier = *ctx_.tier;
  const auto mode = tier.mode();
  if (mode != cache_tier::cache_mode::ttl && !cache_tier::coherent(mode)) return std::nullopt;
  const int db = effective_db();
  if (writes_key_in_flight(db, key)) return std::nullopt;  // forwarded: ordered after the write
  // ttl mode: a script's undeclared keys are as stale as any write made past the sidecar.
  const bool after_script = after_script_ && cache_tier::coherent(mode);
  if (after_script) miss_pending_ = true;
  if (const auto v =
          after_script ? std::nullopt : tier.hit(db, key, mono_ms(batch_now_), &miss_pending_)) {
    reply_hit(*v);
    answered_by_ = metrics::source::cache;
    return outcome::next;
  }
  near_cache* near = ctx_.near;
  if ((!cache_tier::coherent(mode) && mode != cache_tier::cache_mode::ttl) || !near->ready() ||
      db != cfg_.upstream.db || !tier.key_cached(key))
    return std::nullopt;
  // A miss: read it on the channel (joined with other clients' reads of the key). Ordered like
  // any request on another connection: the barrier first.
  connection* channel = near->conn();
  if (channel != current_ && !slots_.empty()) return outcome::wait;
  near->fetch(key, shared_from_this(), next_seq_, proto_, !after_script);
  if (after_script && script_barrier_seq_ == std::numeric_limits<std::uint64_t>::max())
    script_barrier_seq_ = next_seq_;
  current_ = channel;
  slots_.push_back(slot{false, {}, framed_at_, command_});
  ++next_seq_;
  return outcome::next;
}

client_session::outcome client_session::serve_fallback(const commands::command_info* info,
                                                       std::span<const std::string_view> args,
                                                       std::string_view frame) {
  std::string r;
  // A command L1 cannot answer failed for want of the upstream, and is counted so.
  if (ctx_.tier->serve(effective_db(), info, args, frame, proto_, mono_ms(batch_now_), wall_ms(),
                       r) == cache_tier::result::not_servable)
    ctx_.st.count(error_kind::upstream_unavailable);
  reply(r);
  answered_by_ = metrics::source::fallback;
  return outcome::next;
}

// A transaction in fallback. L1 would answer its commands one by one as they come, so a client
// could find part of a transaction applied: the writes L1 serves, without those it refuses (an
// INCR of a key it does not hold), even without EXEC, after a DISCARD. Instead MULTI opens a
// transaction the session refuses every command of, and EXEC discards it, as Redis does with a
// transaction it refused a command of when queued; DISCARD ends it. It lasts until EXEC, DISCARD
// or RESET, upstream back or not. A transaction whose MULTI went upstream but whose dedicated
// connection is gone (MULTI failed with it) ends the same way, instead of its commands being
// served from L1 outside it.
client_session::outcome client_session::fallback_transaction(
    const commands::command_info* info, std::span<const std::string_view> args) {
  answered_by_ = metrics::source::fallback;
  const command_id id = info != nullptr ? info->id : command_id::other;
  if (!fallback_multi_) {
    fallback_multi_ = true;
    if (!multi_open_) {  // the MULTI itself (see handle())
      reply_simple("OK");
      return outcome::next;
    }
    multi_open_ = in_multi_ = false;  // a MULTI sent upstream: its EXEC will never get there
    if (!transactions_.empty()) transactions_.pop_back();
  }
  switch (id) {
    case command_id::multi: reply_error("ERR MULTI calls can not be nested"); return outcome::next;
    case command_id::exec:
      fallback_multi_ = false;
      reply_error(errors::execabort);
      return outcome::next;
    case command_id::discard:
      fallback_multi_ = false;
      reply_simple("OK");
      return outcome::next;
    case command_id::quit: reply_simple("OK"); return outcome::close;
    case command_id::reset: return cmd_reset(args);
    default: {
      std::string e(errors::fallback_not_servable_prefix);
      e += info != nullptr ? info->name : std::string_view("unknown");
      e += errors::fallback_in_transaction_suffix;
      ctx_.st.count(error_kind::upstream_unavailable);
      reply_error(e);
      return outcome::next;
    }
  }
}

// In raw mode everything goes to the dedicated connection as it is, except what the sidecar must
// answer itself (its own AUTH, HELLO's AUTH part); replies interleave with pushes as Redis sends
// them.
client_session::outcome client_session::handle_raw(std::span<const std::string_view> args,
                                                   std::string_view frame,
                                                   const commands::command_info* info) {
  if (leaving_raw_) return outcome::wait;  // see deliver_raw()
  const command_id id = info != nullptr ? info->id : command_id::other;
  // Writes in a row share one written marker: it goes before anything else does.
  if (!raw_written_.empty() &&
      !(info != nullptr && ctx_.tier->wants_reply(*info) && (info->flags & commands::write)))
    send_written_marker();
  // The request a CLIENT REPLY SKIP before it skips the reply of (Redis skips the next it reads).
  const bool skipped = std::exchange(reply_mode_, reply_mode_ == reply_mode::skip_next
                                                      ? reply_mode::on
                                                      : reply_mode_) == reply_mode::skip_next;
  if (id == command_id::auth) {  // the sidecar's to answer, in its place among the replies
    if (!markers_unusable()) return raw_answer_later(args);
    if (raw_multi_ || (!skipped && reply_mode_ == reply_mode::on)) return cmd_auth(args);
    // Replies off, or this one skipped: AUTH acts but is not answered. A skip Redis still holds
    // for the next request it reads goes to a PING of the sidecar's, so it does not land on the
    // client's next request.
    std::string unanswered;
    auth(args, unanswered);
    if (skipped && dedicated_) dedicated_->send_raw("*1\r\n$4\r\nPING\r\n");
    return outcome::next;
  }
  // RESET with arguments goes on as any request: Redis refuses it, in order, and resets nothing.
  if (id == command_id::reset && args.size() == 1) return raw_reset(frame, args);
  if (id == command_id::hello && !markers_unusable()) return raw_hello(args);
  const sub_id sub = id == command_id::client && args.size() >= 2
                         ? commands::lookup_sub(command_id::client, args[1])
                         : sub_id::other;
  switch (id) {
    case command_id::client:
      if (!markers_unusable()) {
        if (sub == sub_id::client_id && args.size() == 2)
          return raw_rewrite_reply(frame, marker::kind::client_id);
        if (sub == sub_id::client_getredir && args.size() == 2)
          return raw_rewrite_reply(frame, marker::kind::getredir);
        if (sub == sub_id::client_trackinginfo && args.size() == 2)
          return raw_rewrite_reply(frame, marker::kind::trackinginfo);
        if ((sub == sub_id::client_kill && args.size() >= 3) || sub == sub_id::client_list ||
            (sub == sub_id::client_info && args.size() == 2))
          return raw_answer_later(args);
      } else if (sub == sub_id::client_kill) {
        // Without markers CLIENT KILL can be neither run in its place nor forwarded (its ids
        // would name upstream connections): refused upstream, in order, as an unknown command.
        frame = refused_kill_frame;
        break;
      }
      if (args.size() >= 3) {
        if (const auto f = upstream_id_frame(sub, args)) {  // UNBLOCK, TRACKING ... REDIRECT
          inline_scratch_ = *f;
          frame = inline_scratch_;
        }
      }
      if (sub == sub_id::client_reply) note_client_reply(args);
      if (sub == sub_id::client_reply && !replies_stay_on(args)) raw_replies_unsure_ = true;
      if (sub == sub_id::client_unblock) break;
      if (sub != sub_id::client_getname && sub != sub_id::client_info && sub != sub_id::client_list)
        raw_sticky_ = true;
      break;
    case command_id::multi: raw_multi_ = raw_sticky_ = true; break;
    case command_id::exec:
    case command_id::discard: raw_sticky_ = true; break;
    case command_id::select:
    case command_id::watch:
    case command_id::unwatch:
    case command_id::hello:
    case command_id::monitor: raw_sticky_ = true; break;
    default:
      // A blocking command may hold the connection indefinitely: a marker behind it could park
      // the client's reading with it (see deliver_raw()).
      if (info != nullptr && (info->flags & commands::blocking)) raw_sticky_ = true;
      break;
  }
  if (id == command_id::hello && args.size() > 2) {  // without markers (see raw_hello())
    inline_scratch_.clear();
    resp::append_command(inline_scratch_, args.first(2));  // HELLO <proto>: credentials stay here
    frame = inline_scratch_;
  }
  if (id == command_id::hello && args.size() >= 2) {
    long long v = 0;
    if (parse_int(args[1], v) && (v == 2 || v == 3)) {
      proto_ = static_cast<int>(v);
      dedicated_->set_proto(proto_);
    }
  }
  if (info != nullptr) note_raw_request(*info, args);
  if (!dedicated_ || !dedicated_->send_raw(frame)) return raw_unavailable();
  if (id == command_id::exec || id == command_id::discard) raw_multi_ = false;
  if (!raw_written_.empty() && !write_deferred_) {  // the written marker: at the turn's end
    if (event_loop::defer(shared_from_this()))
      write_deferred_ = true;
    else
      send_written_marker();
  }
  if (id == command_id::quit) {
    // Redis answers what came before and the QUIT itself, then closes: the session closes once
    // the connection has (close_after_flush() waits for it), so that those replies get through.
    raw_quit_ = true;
    return outcome::close;
  }
  return outcome::next;
}

// CLIENT ID in raw mode answers the id the sidecar gave the client, as outside it, not the
// dedicated connection's; CLIENT GETREDIR and TRACKINGINFO name the redirect target by the id the
// sidecar gave it. A marker (PING <token>) goes first, and the first reply of the request's shape
// after the marker's reply is the request's (only pushes and messages may come between), rewritten
// by rewrite_due_reply(). An error passes on as Redis wrote it (RESP2 subscribed mode refuses
// CLIENT).
client_session::outcome client_session::raw_rewrite_reply(std::string_view frame,
                                                          marker::kind what) {
  marker m;
  m.what = what;
  if (!send_marker(std::move(m)) || !dedicated_->send_raw(frame)) return raw_unavailable();
  return outcome::next;
}

// The sidecar's id of the client whose upstream connection has id `upstream`: the redirect target
// of CLIENT TRACKING, whose connection is its own for as long as it stays. Not positive (none, or
// not tracking), or no such connection: as it is.
std::int64_t client_session::client_id_of_upstream(std::int64_t upstream) const {
  if (upstream <= 0) return upstream;
  const auto up = static_cast<std::uint64_t>(upstream);
  for (const client_session* s : ctx_.sessions)
    if (s->dedicated_ && s->dedicated_->upstream_id() == up)
      return static_cast<std::int64_t>(s->id_);
  if (up == redirect_upstream_) return static_cast<std::int64_t>(redirect_id_);  // gone since
  return upstream;
}

// Rewrites the reply `frame` into `out` if it is the one the front of rewrites_due_ waits for
// (true; `out` empty: pass it on as it is), else false.
bool client_session::rewrite_due_reply(std::string_view frame, std::string& out) {
  if (frame.empty()) return false;
  const marker::kind what = rewrites_due_.front();
  // TRACKINGINFO's reply: flags, redirect, prefixes; a map in RESP3.
  static constexpr std::string_view info2 = "*6\r\n$5\r\nflags\r\n";
  static constexpr std::string_view info3 = "%3\r\n$5\r\nflags\r\n";
  const bool matches =
      frame[0] == '-' ||
      (what == marker::kind::trackinginfo ? frame.starts_with(info2) || frame.starts_with(info3)
                                          : frame[0] == ':');
  if (!matches) return false;
  rewrites_due_.pop_front();
  out.clear();
  if (frame[0] == '-') return true;
  if (what == marker::kind::client_id) {
    resp::append_integer(out, static_cast<std::int64_t>(id_));
    return true;
  }
  // ":<id>\r\n", alone (GETREDIR) or as the redirect field's value (TRACKINGINFO).
  static constexpr std::string_view field = "\r\n$8\r\nredirect\r\n";
  std::size_t at = 0;
  if (what == marker::kind::trackinginfo) {
    const std::size_t f = frame.find(field);
    if (f == std::string_view::npos) return true;
    at = f + field.size();
  }
  const std::size_t end = frame.find("\r\n", at);
  long long upstream = 0;
  if (end == std::string_view::npos || end <= at || frame[at] != ':' ||
      !parse_int(frame.substr(at + 1, end - at - 1), upstream))
    return true;
  out.assign(frame.substr(0, at));
  resp::append_integer(out, client_id_of_upstream(upstream));
  out.append(frame.substr(end + 2));
  return true;
}

// What the sidecar answers itself (AUTH, CLIENT KILL, LIST, INFO) is answered in raw mode in its
// place among the replies Redis sends: when its marker's reply comes (deliver_raw()).
client_session::outcome client_session::raw_answer_later(std::span<const std::string_view> args) {
  marker m;
  m.what = marker::kind::answer;
  m.args.assign(args.begin(), args.end());
  if (!send_marker(std::move(m))) return raw_unavailable();
  return outcome::next;
}

// HELLO in raw mode goes upstream, as the connection's protocol must follow, but is checked here
// first (its AUTH part is --requirepass's) and answered as outside raw mode, with the sidecar's
// id: a marker goes first and, once its reply came, the next reply that is not a message is
// HELLO's (deliver_raw()). The client's protocol changes only if Redis accepted it (it refuses
// HELLO to a RESP2 subscriber). A HELLO that fails the checks is not sent: its error takes the
// marker's place.
client_session::outcome client_session::raw_hello(std::span<const std::string_view> args) {
  raw_sticky_ = true;
  int proto = proto_;
  std::optional<std::string_view> setname;
  marker m;
  if (auto error = check_hello(args, proto, setname)) {
    m.what = marker::kind::reply;
    m.reply = std::move(*error);
    return send_marker(std::move(m)) ? outcome::next : raw_unavailable();
  }
  m.what = marker::kind::hello;
  m.proto = proto;
  if (setname) m.setname = std::string(*setname);
  if (!send_marker(std::move(m))) return raw_unavailable();
  const std::string p = std::to_string(proto);
  std::vector<std::string_view> words{"HELLO", p};
  if (setname) words.insert(words.end(), {"SETNAME", *setname});
  std::string request;
  resp::append_command(request, words);
  if (!dedicated_->send_raw(request)) return raw_unavailable();
  return outcome::next;
}

bool client_session::answer_marked(std::span<const std::string_view> args, bool refused,
                                   std::string& r) {
  const bool is_auth = iequals(args[0], "auth");
  // A RESP2 subscriber is refused all of them by Redis, after its arity check (AUTH's is >= 2).
  if (refused && !(is_auth && args.size() < 2)) {
    std::string name = is_auth ? "auth" : "client|" + std::string(args[1]);
    for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    append_subscribed_refusal(r, name);
    return false;
  }
  if (is_auth) {
    auth(args, r);
    return false;
  }
  switch (commands::lookup_sub(command_id::client, args[1])) {
    case sub_id::client_list: client_list(args, r); return false;
    case sub_id::client_info: client_info(r); return false;
    default: return client_kill(args, r);
  }
}

void client_session::client_info(std::string& r) {
  std::string line;
  append_client_line(line, clock::now());
  resp::append_verbatim(r, line, proto_);
}

// The dedicated connection would not take a raw-mode request: the client's state is lost with it.
client_session::outcome client_session::raw_unavailable() {
  reply_error(std::string(errors::upstream_unavailable) + ": " +
              (dedicated_ ? dedicated_->last_error() : std::string("connection lost")));
  return outcome::close;
}

// <client id>:<random>: a client cannot answer the sidecar's markers itself by guessing.
std::string client_session::token_suffix() const {
  static std::mt19937_64 gen{std::random_device{}()};
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(gen()));
  return std::to_string(id_) + ":" + hex;
}

bool client_session::send_marker(marker m) {
  // Writes noted before this marker get theirs first: it must be answered while still in raw mode
  // (a leave marker ends it).
  if (m.what != marker::kind::written && !raw_written_.empty()) send_written_marker();
  if (marker_token_.empty()) marker_token_ = "redis-sidecar:marker:" + token_suffix();
  if (!dedicated_ || !dedicated_->send_raw(marker_request(marker_token_))) return false;
  markers_.push_back(std::move(m));
  return true;
}

// Raw mode reads no reply of its own, but L1 must still forget the keys of its writes: when they
// go out, in every db the client may be in (whether its SELECTs succeeded is not read either).
void client_session::note_raw_request(const commands::command_info& info,
                                      std::span<const std::string_view> args) {
  if (info.id == command_id::select) {
    const auto db = select_db(args);
    if (db && std::find(raw_dbs_.begin(), raw_dbs_.end(), *db) == raw_dbs_.end())
      raw_dbs_.push_back(*db);
    return;
  }
  cache_tier& tier = *ctx_.tier;
  if (!tier.wants_reply(info) || !(info.flags & commands::write)) return;
  const cache_tier::flight sent{dedicated_ ? dedicated_->serial() : 0, 0};
  for (const int db : raw_dbs_) tier.on_request(db, info, args, sent, false);
  // And again once it has run (a blocking command before it on the connection may hold it back
  // while other connections read the key; a MULTI until its EXEC): a marker behind it says when,
  // unless the client turned replies off (CLIENT REPLY OFF|SKIP), when no marker can be used.
  if (raw_replies_unsure_ || !dedicated_) return;
  resp::append_command(raw_written_.emplace_back(), args);
}

// Raw writes (their frames) whose written marker will not come back (the client or its
// connection is gone, and the writes may still run): held instead.
void client_session::hold_raw_writes() {
  const cache::time_ms now = mono_ms(clock::now());
  forget_raw_writes(raw_written_, raw_dbs_, now);
  raw_written_.clear();
  for (std::size_t i = 0; i < markers_.size(); ++i)
    if (markers_[i].what == marker::kind::written)
      forget_raw_writes(markers_[i].args, markers_[i].dbs, now);
}

// L1 forgets the keys of raw writes in `dbs` again: they have run (held_since empty), or may
// still run (cache_tier::write_unsure() from then).
void client_session::forget_raw_writes(const std::vector<std::string>& frames,
                                       const std::vector<int>& dbs,
                                       std::optional<cache::time_ms> held_since) {
  const cache_tier::flight sent{dedicated_ ? dedicated_->serial() : 0, 0};
  for (const std::string& write : frames) {
    if (op_parser_.parse(write) == resp::parse_status::complete) {
      if (const auto* info = commands::lookup(op_parser_.args()[0])) {
        for (const int db : dbs) {
          if (held_since)
            ctx_.tier->write_unsure(db, *info, op_parser_.args(), sent, *held_since);
          else
            ctx_.tier->on_request(db, *info, op_parser_.args(), sent, false);
        }
      }
    }
    op_parser_.reset();
  }
}

void client_session::send_written_marker() {
  if (raw_multi_ && !raw_replies_unsure_) return;  // queued: behind the EXEC (handle_raw())
  marker m;
  m.what = marker::kind::written;
  m.args = std::move(raw_written_);
  m.dbs = raw_dbs_;
  raw_written_.clear();
  if (raw_ && !markers_unusable()) send_marker(std::move(m));
}

// CLIENT REPLY ON|OFF|SKIP as Redis takes it (SKIP does nothing while replies are off; anything
// else is refused and changes nothing).
void client_session::note_client_reply(std::span<const std::string_view> args) {
  if (args.size() != 3) return;
  if (iequals(args[2], "on"))
    reply_mode_ = reply_mode::on;
  else if (iequals(args[2], "off"))
    reply_mode_ = reply_mode::off;
  else if (iequals(args[2], "skip") && reply_mode_ != reply_mode::off)
    reply_mode_ = reply_mode::skip_next;
}

client_session::outcome client_session::cmd_auth(std::span<const std::string_view> args) {
  if (multi_open_) return refuse_in_multi();
  std::string r;
  auth(args, r);
  reply(r);
  return outcome::next;
}

// AUTH against --requirepass: appends the reply to `r`.
void client_session::auth(std::span<const std::string_view> args, std::string& r) {
  if (args.size() < 2 || args.size() > 3) {  // as Redis: its arity check, then AUTH's own
    resp::append_error(r, args.size() < 2 ? "ERR wrong number of arguments for 'auth' command"
                                          : "ERR syntax error");
    return;
  }
  if (cfg_.requirepass.empty()) {
    // No password of our own: accept, so apps that keep the upstream password in their REDIS_URL
    // still connect. The upstream is authenticated by the sidecar with the URL's credentials.
    resp::append_simple(r, "OK");
    return;
  }
  const bool user_ok = args.size() == 2 || args[1] == "default";
  if (user_ok && args.back() == cfg_.requirepass) {
    authenticated();
    resp::append_simple(r, "OK");
  } else {
    ctx_.st.count(error_kind::auth);
    resp::append_error(r, errors::wrongpass);
  }
}

client_session::outcome client_session::cmd_hello(std::span<const std::string_view> args) {
  if (multi_open_) return refuse_in_multi();
  int proto = proto_;
  std::optional<std::string_view> setname;
  if (auto error = check_hello(args, proto, setname)) {
    reply(*error);
    return outcome::next;
  }
  if (proto != proto_ && !slots_.empty())
    return outcome::wait;               // replies change shape: drain first
  if (proto != proto_ && dedicated_) {  // keep the dedicated connection's protocol in step
    const std::string p = std::to_string(proto);
    if (send_own(std::array<std::string_view, 2>{"HELLO", p})) dedicated_->set_proto(proto);
  }
  proto_ = proto;
  if (setname) name_ = *setname;
  if (shared_ && shared_->proto() != proto_) shared_.reset();
  std::string r;
  append_hello_reply(r);
  reply(r);
  return outcome::next;
}

// HELLO's arguments as Redis checks them, and its AUTH part against --requirepass: the error
// reply, or nullopt with `proto` and `setname` set (and the client authenticated).
std::optional<std::string> client_session::check_hello(std::span<const std::string_view> args,
                                                       int& proto,
                                                       std::optional<std::string_view>& setname) {
  std::string r;
  if (args.size() >= 2) {
    long long v = 0;
    if (!parse_int(args[1], v)) {
      resp::append_error(r, "ERR Protocol version is not an integer or out of range");
      return r;
    }
    if (v != 2 && v != 3) {
      resp::append_error(r, errors::noproto);
      return r;
    }
    proto = static_cast<int>(v);
  }
  bool auth_ok = authed_;
  for (std::size_t i = 2; i < args.size(); ++i) {
    if (iequals(args[i], "auth") && i + 2 < args.size()) {
      if (cfg_.requirepass.empty() ||
          (args[i + 1] == "default" && args[i + 2] == cfg_.requirepass)) {
        auth_ok = true;
      } else {
        ctx_.st.count(error_kind::auth);
        resp::append_error(r, errors::wrongpass);
        return r;
      }
      i += 2;
    } else if (iequals(args[i], "setname") && i + 1 < args.size()) {
      setname = args[++i];
    } else {
      resp::append_error(
          r, std::string("ERR Syntax error in HELLO option '") + std::string(args[i]) + "'");
      return r;
    }
  }
  if (!auth_ok) {
    resp::append_error(
        r,
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
        "<proto> AUTH <user> <pass> option can be used to authenticate the client and select the "
        "RESP protocol version at the same time");
    return r;
  }
  if (setname && !valid_client_name(*setname)) {
    resp::append_error(r, errors::client_name_spaces);
    return r;
  }
  authenticated();
  return std::nullopt;
}

void client_session::append_hello_reply(std::string& r) const {
  resp::append_map_header(r, 7, proto_);
  resp::append_bulk(r, "server");
  resp::append_bulk(r, "redis");
  resp::append_bulk(r, "version");
  resp::append_bulk(r, upstream_version());
  resp::append_bulk(r, "proto");
  resp::append_integer(r, proto_);
  resp::append_bulk(r, "id");
  resp::append_integer(r, static_cast<std::int64_t>(id_));
  resp::append_bulk(r, "mode");
  resp::append_bulk(r, "standalone");
  resp::append_bulk(r, "role");
  resp::append_bulk(r, "master");
  resp::append_bulk(r, "modules");
  resp::append_array_header(r, 0);
}

client_session::outcome client_session::cmd_select(std::span<const std::string_view> args,
                                                   std::string_view frame) {
  const auto db = select_db(args);
  if (multi_open_) {
    // Queued: it runs at EXEC, if at all (transaction_ended); its arguments are Redis' to check.
    const std::size_t index = transactions_.back().queued;
    const outcome o = forward(frame);
    if (o == outcome::next && db) transactions_.back().selects.emplace_back(index, *db);
    return o;
  }
  if (args.size() != 2) {
    reply_error("ERR wrong number of arguments for 'select' command");
    return outcome::next;
  }
  if (!db) {
    // Redis' errors: not an integer, not an int, or no such db.
    long long n = 0;
    if (!parse_int(args[1], n))
      reply_error(errors::not_integer);
    else if (n < std::numeric_limits<int>::min() || n > std::numeric_limits<int>::max())
      reply_error("ERR value is out of range, value must between -2147483648 and 2147483647");
    else
      reply_error("ERR DB index is out of range");
    return outcome::next;
  }
  if (!dedicated_ && *db == cfg_.upstream.db) {  // already there: the shared connections use it
    reply_simple("OK");
    return outcome::next;
  }
  if (!dedicated_ && ctx_.health->serving_from_l1()) {
    // Another db needs a connection of its own, and in fallback there is none to be had (L1
    // answers for the URL's db): refused like any command L1 cannot serve, and the client stays
    // where it is, so what it sends next is still answered from L1.
    ctx_.st.count(error_kind::upstream_unavailable);
    reply_error(std::string(errors::fallback_not_servable_prefix) + "select" +
                std::string(errors::fallback_not_servable_suffix));
    return outcome::next;
  }
  const outcome o = forward_dedicated(frame, tag_select);
  if (o == outcome::next) select_dbs_.push_back(*db);
  return o;
}

client_session::outcome client_session::cmd_client(std::span<const std::string_view> args,
                                                   std::string_view frame) {
  const sub_id sub =
      args.size() >= 2 ? commands::lookup_sub(command_id::client, args[1]) : sub_id::other;
  const auto translated = args.size() >= 3 ? upstream_id_frame(sub, args) : std::nullopt;
  if (translated) {  // UNBLOCK, TRACKING ... REDIRECT
    inline_scratch_ = *translated;
    frame = inline_scratch_;
  }
  if (sub == sub_id::client_reply) note_client_reply(args);
  if (sub == sub_id::client_reply && !replies_stay_on(args))
    raw_replies_unsure_ = true;  // markers unusable: see handle_raw()
  if (sub == sub_id::client_reply || sub == sub_id::client_tracking ||
      sub == sub_id::client_caching)
    return enter_raw(frame, true);
  if (sub == sub_id::client_kill && args.size() >= 3) {
    if (multi_open_) return refuse_in_multi();
    std::string r;
    const bool self = client_kill(args, r);
    reply(r);
    return self ? outcome::close : outcome::next;
  }
  if (sub == sub_id::client_list || (sub == sub_id::client_info && args.size() == 2)) {
    if (multi_open_) return refuse_in_multi();
    // What the client sent before may still change what is shown (a SELECT queued in a
    // transaction changes the db at its EXEC's reply): shown once every earlier reply is in.
    if (!slots_.empty()) return outcome::wait;
    std::string r;
    if (sub == sub_id::client_list)
      client_list(args, r);
    else
      client_info(r);
    reply(r);
    return outcome::next;
  }
  if (translated) return forward(frame);
  if (!client_sub_answered_here(sub, args.size())) return forward(frame);
  if (multi_open_) return refuse_in_multi();
  std::string r;
  switch (sub) {
    case sub_id::client_setname:
      if (!valid_client_name(args[2])) {
        reply_error(errors::client_name_spaces);
        return outcome::next;
      }
      name_ = args[2];
      reply_simple("OK");
      return outcome::next;
    case sub_id::client_getname:
      if (name_.empty())
        resp::append_null(r, proto_);
      else
        resp::append_bulk(r, name_);
      break;
    case sub_id::client_id: resp::append_integer(r, static_cast<std::int64_t>(id_)); break;
    default: reply_simple("OK"); return outcome::next;  // SETINFO: kept by clients for diagnostics
  }
  reply(r);
  return outcome::next;
}

bool client_session::client_kill(std::span<const std::string_view> args, std::string& r) {
  const auto parsed = commands::parse_client_kill(args);
  if (const auto* e = std::get_if<std::string>(&parsed)) {
    resp::append_error(r, *e);
    return false;
  }
  const auto& f = std::get<commands::kill_filter>(parsed);
  std::vector<client_session*> victims;
  bool self = false;
  for (client_session* s : ctx_.sessions) {
    if (s->closing_) continue;  // leaving already
    const commands::client_view v{s->id_, s->peer_address(), s->local_address(),
                                  s->raw_ && s->subs_.subscribed() ? commands::client_type::pubsub
                                                                   : commands::client_type::normal,
                                  s == this};
    if (!commands::selects(f, v)) continue;
    if (s == this)
      self = true;
    else
      victims.push_back(s);
  }
  for (client_session* s : victims) {
    log::info("client " + std::to_string(s->id_) + " closed by CLIENT KILL from client " +
              std::to_string(id_));
    s->note_close("CLIENT KILL from client ", std::to_string(id_));
    s->close_now();
  }
  const std::size_t killed = victims.size() + (self ? 1 : 0);
  if (!f.old_form)
    resp::append_integer(r, static_cast<std::int64_t>(killed));
  else if (killed == 0)
    resp::append_error(r, "ERR No such client");
  else
    resp::append_simple(r, "OK");
  return self;
}

void client_session::client_list(std::span<const std::string_view> args, std::string& r) {
  const auto parsed = commands::parse_client_list(args);
  if (const auto* e = std::get_if<std::string>(&parsed)) {
    resp::append_error(r, *e);
    return;
  }
  const auto& f = std::get<commands::list_filter>(parsed);
  // Oldest first, as Redis lists them; CLIENT LIST ID in the order of its ids.
  std::vector<client_session*> open;
  open.reserve(ctx_.sessions.size());
  for (client_session* s : ctx_.sessions)
    if (!s->closing_ && !s->closed_) open.push_back(s);
  std::sort(open.begin(), open.end(), [](auto* a, auto* b) { return a->id_ < b->id_; });
  const auto now = clock::now();
  std::string lines;
  if (f.by_id) {
    for (const std::uint64_t id : f.ids) {  // a binary search each: ids may be many
      const auto it = std::lower_bound(open.begin(), open.end(), id,
                                       [](auto* s, std::uint64_t v) { return s->id_ < v; });
      if (it != open.end() && (*it)->id_ == id) (*it)->append_client_line(lines, now);
    }
  } else {
    for (client_session* s : open) {
      const auto type = s->raw_ && s->subs_.subscribed() ? commands::client_type::pubsub
                                                         : commands::client_type::normal;
      if (!f.type || *f.type == type) s->append_client_line(lines, now);
    }
  }
  resp::append_verbatim(r, lines, proto_);
}

// This client's CLIENT LIST line. What the sidecar knows of a raw-mode client's state comes from
// its own bookkeeping (subscription counts from the confirmations; db from its SELECTs), flags
// are P (subscribed), x (in MULTI), b (waiting for a blocking command's reply, outside raw mode),
// U (unix socket) or N, in Redis' order.
void client_session::append_client_line(std::string& out, clock::time_point now) {
  const bool subscribed = raw_ && subs_.subscribed();
  std::string flags;
  if (subscribed) flags += 'P';
  if (multi_open_ || in_multi_ || fallback_multi_) flags += 'x';
  if (blocked()) flags += 'b';
  error_code ec;
  if (const auto local = socket_.local_endpoint(ec); !ec && local.data()->sa_family == AF_UNIX)
    flags += 'U';
  if (flags.empty()) flags = "N";
  std::string cmd = last_command_ != nullptr ? std::string(last_command_->name) : "NULL";
  if (last_command_ != nullptr && last_command_->id == command_id::client &&
      !last_client_sub_.empty())
    cmd += "|" + last_client_sub_;
  commands::client_line c;
  c.id = id_;
  c.addr = peer_address();
  c.laddr = local_address();
  c.fd = socket_.native_handle();
  c.name = name_;
  c.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - created_).count();
  c.idle_s = std::chrono::duration_cast<std::chrono::seconds>(now - std::max(batch_now_, created_))
                 .count();  // since the last read (none yet: since it connected)
  c.flags = flags;
  c.db = effective_db();
  c.sub = raw_ ? subs_.channels() : 0;
  c.psub = raw_ ? subs_.patterns() : 0;
  c.ssub = raw_ ? subs_.shard_channels() : 0;
  c.multi = multi_open_ && !transactions_.empty()
                ? static_cast<std::int64_t>(transactions_.back().queued)
                : -1;
  c.qbuf = in_end_ - in_start_;
  c.qbuf_free = in_.size() - in_end_;
  c.rbs = in_.size();
  c.obl = out_.size() + wout_.size();
  c.tot_mem = sizeof(*this) + in_.size() + out_.capacity() + wout_.capacity();
  c.writing = c.obl > 0;
  c.cmd = cmd;
  c.resp = proto_;
  commands::append_client_line(out, c);
}

std::optional<std::string> client_session::upstream_id_frame(
    sub_id sub, std::span<const std::string_view> args) {
  std::size_t at = 0;  // the id's argument
  if (sub == sub_id::client_unblock && (args.size() == 3 || args.size() == 4)) at = 2;
  if (sub == sub_id::client_tracking)
    for (std::size_t i = 2; i + 1 < args.size(); ++i)
      if (iequals(args[i], "redirect")) at = i + 1;
  long long id = 0;
  if (at == 0 || !parse_int(args[at], id)) return std::nullopt;  // Redis' error, if any
  std::uint64_t upstream = 0;
  for (client_session* s : ctx_.sessions) {
    if (static_cast<long long>(s->id_) != id || !s->dedicated_) continue;
    upstream = s->dedicated_->upstream_id();
    // Tracking messages go to that connection from now on: it must not serve another client,
    // nor be let go while the client lives (when it unsubscribes to subscribe again, or its
    // BLPOP ends), or the redirect would break, where on Redis it holds.
    if (sub == sub_id::client_tracking) {
      s->dedicated_->keep_out_of_pool();
      s->redirect_target_ = true;
    }
  }
  if (sub == sub_id::client_tracking) {
    redirect_upstream_ = upstream;
    redirect_id_ = static_cast<std::uint64_t>(id);
  }
  const std::string up = std::to_string(upstream);
  std::vector<std::string_view> words(args.begin(), args.end());
  words[at] = up;
  std::string f;
  resp::append_command(f, words);
  return f;
}

namespace {

// An address as Redis writes it in CLIENT LIST: ip:port, [ipv6]:port, or a unix socket's path:0.
std::string format_address(const asio::generic::stream_protocol::endpoint& ep) {
  const sockaddr* sa = ep.data();
  char ip[INET6_ADDRSTRLEN] = {};
  switch (sa->sa_family) {
    case AF_INET: {
      const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
      ::inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
      return std::string(ip) + ":" + std::to_string(ntohs(in->sin_port));
    }
    case AF_INET6: {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
      ::inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
      return "[" + std::string(ip) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    case AF_UNIX: {
      const auto* un = reinterpret_cast<const sockaddr_un*>(sa);
      return std::string(un->sun_path) + ":0";
    }
    default: return "?:0";
  }
}

// The client's address (peer) or the listener's (local) as format_address() writes it. A unix
// socket client's address is the listener's path, as Redis 7.0 writes it for both.
std::string socket_address(const client_socket& socket, bool peer) {
  error_code ec;
  auto ep = peer ? socket.remote_endpoint(ec) : socket.local_endpoint(ec);
  if (!ec && peer && ep.data()->sa_family == AF_UNIX) ep = socket.local_endpoint(ec);
  return ec ? "?:0" : format_address(ep);
}

}  // namespace

const std::string& client_session::peer_address() {
  if (peer_address_.empty()) peer_address_ = socket_address(socket_, true);
  return peer_address_;
}

const std::string& client_session::local_address() {
  if (local_address_.empty()) local_address_ = socket_address(socket_, false);
  return local_address_;
}

// A command the session answers itself, sent inside MULTI: refused, and the transaction is
// discarded at EXEC (see errors::session_command_in_multi).
client_session::outcome client_session::refuse_in_multi() {
  transactions_.back().refused = true;
  reply_error(errors::session_command_in_multi);
  return outcome::next;
}

client_session::outcome client_session::cmd_reset(std::span<const std::string_view> args) {
  if (args.size() != 1) {  // Redis refuses it, and a transaction it was sent in fails at EXEC
    if (multi_open_) transactions_.back().refused = true;
    reply_error(errors::reset_arity);
    return outcome::next;
  }
  if (!slots_.empty()) return outcome::wait;
  reset_session();
  reply_simple("RESET");
  return outcome::next;
}

// RESET in raw mode: requests sent before it may still await their replies on the dedicated
// connection, so RESET goes there too, behind them, and reading waits until it has run, so that
// what follows RESET runs in the reset session. A marker behind RESET says when: if Redis' +RESET
// (passed on by deliver_raw) came before it, the session resets; if not, Redis refused RESET (an
// ACL's -NOPERM, passed on as well) and the session goes on as it was. After CLIENT REPLY OFF|SKIP
// no +RESET may come (SKIP skips it; Redis turns replies on only for the commands after RESET):
// the marker's reply alone says it ran. Inside a MULTI no marker can go (it would be queued if
// RESET were refused): +RESET alone ends the wait.
client_session::outcome client_session::raw_reset(std::string_view frame,
                                                  std::span<const std::string_view> args) {
  switch (raw_reset_) {
    case raw_reset_state::answered: reset_session(); return outcome::next;
    case raw_reset_state::refused: raw_reset_ = raw_reset_state::none; return outcome::next;
    case raw_reset_state::none: break;
    default: return outcome::wait;
  }
  if (!dedicated_ || !dedicated_->send_raw(frame)) return cmd_reset(args);
  raw_reset_ = raw_reset_state::sent;
  if (raw_replies_unsure_ || !raw_multi_) {
    marker m;
    m.what = marker::kind::reset;
    if (send_marker(std::move(m))) raw_reset_ = raw_reset_state::sent_marked;
  }
  return outcome::wait;
}

void client_session::reset_session() {
  drop_dedicated();
  proto_ = 2;
  db_ = cfg_.upstream.db;
  in_multi_ = watching_ = raw_ = multi_open_ = fallback_multi_ = redirect_target_ = false;
  raw_reset_ = raw_reset_state::none;
  raw_sticky_ = leaving_raw_ = raw_replies_unsure_ = raw_multi_ = false;
  reply_mode_ = reply_mode::on;
  raw_written_.clear();
  subs_ = {};
  rewrites_due_.clear();
  redirect_upstream_ = redirect_id_ = 0;
  hello_due_ = false;
  markers_.clear();
  transactions_.clear();
  raw_dbs_.clear();
  name_.clear();
  authed_ = cfg_.requirepass.empty();
  apply_auth_limits();
  if (shared_ && shared_->proto() != 2) shared_.reset();
}

// The error for the request parser_ refused: Redis' own words for a length only refused before
// AUTH (the configured limits would have taken it), and for a byte where a '$' should be.
std::string client_session::request_error_text(std::string_view request) const {
  const auto e = parser_.error();
  if (!authed_ && (e == resp::request_error::invalid_multibulk_length ||
                   e == resp::request_error::invalid_bulk_length)) {
    resp::request_parser configured(cfg_.limits);
    if (configured.parse(request) != resp::parse_status::error)
      return std::string(e == resp::request_error::invalid_multibulk_length
                             ? errors::unauthenticated_multibulk_length
                             : errors::unauthenticated_bulk_length);
  }
  if (e == resp::request_error::expected_bulk) {
    char c = parser_.unexpected_byte();
    if (c == '\r' || c == '\n') c = ' ';  // as Redis keeps an error to one line
    return std::string(errors::expected_bulk) + ", got '" + c + "'";
  }
  return std::string(errors::for_request_error(e));
}

void client_session::authenticated() {
  authed_ = true;
  apply_auth_limits();
}

// From the next request on: Redis' limits before AUTH, the configured ones after it.
void client_session::apply_auth_limits() {
  parser_.set_limits(authed_ ? cfg_.limits : resp::unauthenticated_limits(cfg_.limits));
}

// UNSUBSCRIBE and friends outside subscribed mode: Redis answers one message per channel (or one
// with a nil channel), each with count 0. Made here, since they would not map one-to-one upstream.
client_session::outcome client_session::local_unsubscribe(std::span<const std::string_view> args) {
  std::string kind(args[0]);
  std::transform(kind.begin(), kind.end(), kind.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string r;
  auto one = [&](std::string_view* channel) {
    resp::append_push_header(r, 3, proto_);
    resp::append_bulk(r, kind);
    if (channel != nullptr)
      resp::append_bulk(r, *channel);
    else
      resp::append_null(r, proto_);
    resp::append_integer(r, 0);
  };
  if (args.size() == 1) {
    one(nullptr);
  } else {
    for (std::size_t i = 1; i < args.size(); ++i) {
      std::string_view ch = args[i];
      one(&ch);
    }
  }
  reply(r);
  return outcome::next;
}

// ---------------------------------------------------------------------------------------------
// Forwarding

std::chrono::steady_clock::time_point client_session::default_deadline() const {
  return batch_now_ + std::chrono::milliseconds(cfg_.command_timeout_ms);
}

client_session::outcome client_session::forward(std::string_view frame, std::uint8_t t,
                                                clock::time_point deadline) {
  if (deadline == clock::time_point{}) deadline = default_deadline();
  if (dedicated_) return submit_to(dedicated_, frame, t, deadline);
  // Nothing in flight: free to join whichever shared connection is forming this turn's write.
  if (!shared_ || slots_.empty()) {
    const auto& c = ctx_.upstreams.shared(proto_, shared_.get());
    if (c != shared_) shared_ = c;
  }
  return submit_to(shared_, frame, t, deadline);
}

client_session::outcome client_session::forward_dedicated(std::string_view frame, std::uint8_t t,
                                                          clock::time_point deadline) {
  if (!dedicated_) {
    if (!slots_.empty()) return outcome::wait;  // the barrier: shared replies first
    dedicated_ = ctx_.upstreams.acquire_dedicated(proto_);
    dedicated_->set_owner(weak_from_this());
  }
  return forward(frame, t, deadline);
}

client_session::outcome client_session::submit_to(const std::shared_ptr<connection>& c,
                                                  std::string_view frame, std::uint8_t t,
                                                  clock::time_point deadline) {
  if (c.get() != current_ && !slots_.empty()) return outcome::wait;
  if (deadline == clock::time_point{}) deadline = default_deadline();
  if (!c->submit(frame, pending_reply{sink_ref(this), next_seq_, deadline, t})) {
    ctx_.st.count(error_kind::upstream_unavailable);
    reply_error(std::string(errors::upstream_unavailable) + ": " + c->last_error());
    return outcome::next;
  }
  current_ = c.get();
  sent_on_ = c->serial();
  if (multi_open_ && t != tag_multi && t != tag_watch) ++transactions_.back().queued;
  if (fill_info_ != nullptr) {
    if (fill_info_->flags & commands::write) ++writes_in_flight_;
    // The key is kept as 32-bit offsets into the frame: one past them (a key of 4 GiB, under a
    // raised --max-bulk-bytes) is recorded as not known, and the reply frames the request again.
    const std::size_t key_at = fill_key_.empty() ? 0 : fill_key_.data() - fill_frame_.data();
    const bool key_fits = key_at + fill_key_.size() <= std::numeric_limits<std::uint32_t>::max();
    cache_ops_.push_back(cache_op{
        next_seq_, fill_info_, effective_db(), static_cast<std::uint32_t>(fill_argc_),
        arena_base_ + cache_arena_.size(), fill_frame_.size(),
        key_fits ? static_cast<std::uint32_t>(key_at) : 0,
        key_fits ? static_cast<std::uint32_t>(fill_key_.size()) : 0, key_fits ? fill_key_hash_ : 0,
        batch_now_, cache_tier::flight{sent_on_, ctx_.tier->write_clock()}});
    cache_arena_.append(fill_frame_);
  }
  slots_.push_back(slot{false, {}, framed_at_, command_});
  ++next_seq_;
  return outcome::next;
}

// The arguments of an op's request without framing it again, when they are a command, its key and
// at most one more bulk string (GET k, INCR k, DEL k, SET k v): the name is the table's, the key
// is where the op recorded it, the value the bulk string that ends the frame. Returns their
// count, or 0.
std::size_t client_session::known_args(const cache_op& op,
                                       std::array<std::string_view, 3>& out) const {
  if (op.key_size == 0 || op.argc < 2 || op.argc > 3) return 0;
  out[0] = op.info->name;
  out[1] = op_key(op);
  if (op.argc == 3) {
    const auto value = resp::bulk_payload(op_frame(op).substr(op.key_offset + op.key_size + 2));
    if (!value) return 0;
    out[2] = *value;
  }
  return op.argc;
}

// The reply to a request that updates L1, applied in reply order. Ops whose slots were dropped
// (RESET) are skipped.
void client_session::apply_cache_op(std::uint64_t seq, std::string_view reply) {
  while (!cache_ops_.empty() && cache_ops_.front().seq < seq) {
    abandon_cache_op(cache_ops_.front());
    pop_cache_op();
  }
  if (!cache_ops_.empty() && cache_ops_.front().seq == seq) {
    const cache_op op = cache_ops_.front();
    pop_cache_op();
    // The L1 slots of the replies behind this one, if already read, are being loaded: the
    // connection asked for them (prefetch()).
    // The session's db now, not op.db: a SELECT sent before the request had replied by now,
    // and op.db assumed it would succeed. Times count from when the request was read, not from
    // its reply: a SET EX's expiry in L1 never outlasts the key's in Redis, however long the
    // reply took.
    const cache::time_ms at = mono_ms(op.read_at);
    const std::uint64_t key1_hash = op.db == db_ ? op.key_hash : 0;  // hashed in op.db
    std::array<std::string_view, 3> known;
    if (delivering_failure_ && (op.info->flags & commands::write)) {
      if (op_parser_.parse(op_frame(op)) == resp::parse_status::complete) {
        const cache::time_ms now = mono_ms(clock::now());
        ctx_.tier->write_unsure(db_, *op.info, op_parser_.args(), op.sent, now);
        if (op.db != db_) ctx_.tier->write_unsure(op.db, *op.info, op_parser_.args(), op.sent, now);
      }
      op_parser_.reset();
    } else if (const std::size_t n = known_args(op, known); n != 0) {
      ctx_.tier->on_reply(db_, *op.info, std::span(known.data(), n), reply, at, 0, op.sent,
                          key1_hash);
    } else {
      if (op_parser_.parse(op_frame(op)) == resp::parse_status::complete) {
        // Wall time matters only to SET's EXAT/PXAT options: not read for anything shorter.
        const auto args = op_parser_.args();
        const std::int64_t wall = op.info->id == command_id::set && args.size() > 3 ? wall_ms() : 0;
        ctx_.tier->on_reply(db_, *op.info, args, reply, at, wall, op.sent, key1_hash);
      }
      op_parser_.reset();
    }
  }
  if (cache_ops_.empty()) {
    arena_base_ += cache_arena_.size();
    cache_arena_.clear();
  } else if (const std::size_t used = cache_ops_.front().offset - arena_base_;
             used > 64 * 1024 && used > cache_arena_.size() / 2) {
    cache_arena_.erase(0, used);
    arena_base_ += used;
  }
}

// Frames the complete requests from in_start_ on, up to max_batch of them, into batch_ (each with
// its command looked up), then prefetches their L1 slots. Returns what framing found after the
// batch: need_more (the parser keeps that frame's progress; it starts at in_start_ once the batch
// is handled), error (parser_.error() says why, when the batch is empty; otherwise the frame is
// framed again, and refused, once the batch before it is handled), or complete. The arguments of
// every request but the last are copied out of the parser before it frames the next; the last one's
// stay in the parser until the next batch (at -P 1, the only one: no copy). A batch ends after a
// request that may change the parser's limits (AUTH, HELLO, RESET: Redis frames the next request
// under the limits they leave), and after an inline one, whose arguments point into the parser.
resp::parse_status client_session::frame_requests() {
  if (std::exchange(parser_holds_last_, false)) parser_.reset();
  batch_.clear();
  batch_args_.clear();
  batch_next_ = 0;
  std::size_t pos = in_start_;
  auto st = resp::parse_status::complete;
  for (;;) {
    st = parser_.parse(std::string_view(in_.data() + pos, in_end_ - pos));
    if (st != resp::parse_status::complete) {
      if (st == resp::parse_status::error && !batch_.empty()) parser_.reset();
      break;
    }
    const auto args = parser_.args();
    const commands::command_info* info = args.empty() ? nullptr : commands::lookup(args[0]);
    const bool is_inline = parser_.is_inline();
    pos += parser_.frame_size();
    const bool more =
        pos < in_end_ && batch_.size() + 1 < max_batch && !is_inline &&
        batch_args_.size() + args.size() <= max_batch_args &&
        (info == nullptr || (info->id != command_id::auth && info->id != command_id::hello &&
                             info->id != command_id::reset));
    if (!more) {
      batch_.push_back(framed{parser_.frame_size(), 0, 0, info, is_inline, true, {}});
      parser_holds_last_ = true;
      break;
    }
    batch_.push_back(framed{parser_.frame_size(),
                            static_cast<std::uint32_t>(batch_args_.size()),
                            static_cast<std::uint32_t>(args.size()),
                            info,
                            is_inline,
                            false,
                            {}});
    batch_args_.insert(batch_args_.end(), args.begin(), args.end());
    parser_.reset();
  }
  prefetch_batch();
  return st;
}

std::span<const std::string_view> client_session::batch_args(const framed& r) const {
  if (r.in_parser) return parser_.args();
  return {batch_args_.data() + r.first_arg, r.args};
}

// The requests of a batch that look up L1 while they are handled (the SET family hides its entry;
// GET answers hits in the serving modes) would each wait for memory in turn: start loading all
// their L1 slots first, index then entries, so that the waits overlap.
void client_session::prefetch_batch() {
  cache_tier& tier = *ctx_.tier;
  if (!tier.enabled()) return;
  const bool hits = tier.mode() == cache_tier::cache_mode::ttl || cache_tier::coherent(tier.mode());
  const int db = effective_db();
  std::array<std::uint64_t, max_batch> hashes;  // tier.key_hash() of the requests' first keys
  std::array<bool, max_batch> writes;
  std::size_t count = 0;
  for (framed& r : batch_) {
    if (r.info == nullptr) continue;
    const bool write = cache_tier::hides_keys(*r.info);
    if (write || (hits && r.info->id == command_id::get)) {
      const auto args = batch_args(r);
      if (args.size() < 2) continue;
      writes[count] = write;
      // The first key only (MSET's: not worth it); kept for handle(), which checks the db.
      hashes[count] = tier.key_hash(db, args[1]);
      r.key = key_hint{hashes[count++], db};
    }
  }
  for (std::size_t i = 0; i < count; ++i) tier.prefetch(hashes[i], false, writes[i]);
  // One lookup alone (a client that sends one request at a time) overlaps only its index slot's
  // load with handling the request up to the lookup: its entry's address is not known before.
  if (count < 2) return;
  for (std::size_t i = 0; i < count; ++i) tier.prefetch(hashes[i], true);
}

// An op of a write whose reply will never be applied: an entry it hid would stay hidden, never
// served, until evicted or expired, and the write has run (or never will) by now. Its keys go.
void client_session::abandon_cache_op(const cache_op& op) {
  if (!(op.info->flags & commands::write)) return;
  if (op_parser_.parse(op_frame(op)) == resp::parse_status::complete)
    ctx_.tier->on_request(op.db, *op.info, op_parser_.args(), op.sent, false);
  op_parser_.reset();
}

void client_session::pop_cache_op() {
  if (cache_ops_.front().info->flags & commands::write) --writes_in_flight_;
  cache_ops_.pop_front();
}

// True when a write of this client that may touch `key` of `db` is still waiting for its reply:
// an L1 hit must not answer a read of it then (the client would miss its own write). Writes whose
// keys are not known here (several keys, or not at argument 1) count as touching every key. With
// more writes in flight than a short scan covers, every key counts as written: a deep pipeline of
// writes and reads (a bulk load) then reads from the upstream, instead of scanning all its writes
// for each read (quadratic: 40,000 SET/GET pairs in one write took 2.2 s).
bool client_session::writes_key_in_flight(int db, std::string_view key) const {
  if (writes_in_flight_ == 0) return false;
  if (writes_in_flight_ > max_scanned_writes) return true;
  for (std::size_t i = 0; i < cache_ops_.size(); ++i) {
    const cache_op& op = cache_ops_[i];
    const commands::command_info& info = *op.info;
    if (!(info.flags & commands::write)) continue;
    if (cache_tier::writes_beyond_keys(info)) return true;  // in another db, or every key
    // A write whose keys depend on its arguments (SORT ... STORE, GEORADIUS ... STORE) may write
    // others than args[1].
    if (op.key_size == 0 || info.last_key != 1 || (info.flags & commands::movable_keys))
      return true;
    if (op.db != db) continue;
    if (op_key(op) == key) return true;
  }
  return false;
}

// The arena holds every live op's frame at the offset recorded when it was appended (the arena
// only drops bytes in front of the oldest op), and the key lies within the frame: no bounds to
// check on these per-reply paths.
std::string_view client_session::op_frame(const cache_op& op) const {
  return {cache_arena_.data() + (op.offset - arena_base_), op.size};
}

std::string_view client_session::op_key(const cache_op& op) const {
  return {op_frame(op).data() + op.key_offset, op.key_size};
}

// The op of a reply the connection has read ahead (see reply_sink::prefetch): the first, unless ops
// whose replies will never come (RESET dropped their slots) are still ahead of it.
void client_session::prefetch(std::uint64_t seq, bool entry) {
  for (std::size_t i = 0; i < cache_ops_.size() && i < 4; ++i) {
    if (cache_ops_[i].seq == seq) return prefetch_cache_op(cache_ops_[i], entry);
    if (cache_ops_[i].seq > seq) return;
  }
}

// The key was hashed when the request was handled, or is hashed at the first of the op's two
// stages and kept for the second. A key whose hash is 0 is merely hashed twice.
void client_session::prefetch_cache_op(cache_op& op, bool entry) {
  if (op.key_size == 0) return;
  if (op.key_hash == 0) op.key_hash = ctx_.tier->key_hash(op.db, op_key(op));
  ctx_.tier->prefetch(op.key_hash, entry, (op.info->flags & commands::write) != 0);
}

int client_session::effective_db() const { return select_dbs_.empty() ? db_ : select_dbs_.back(); }

// A request of the sidecar's own on the dedicated connection, in line with the client's; its reply
// is dropped (connection::dispatch gives it to this pending entry even in raw mode).
bool client_session::send_own(std::span<const std::string_view> words) {
  std::string req;
  resp::append_command(req, words);
  return dedicated_->submit(req, pending_reply{nullptr, 0, default_deadline(), tag_none});
}

client_session::outcome client_session::enter_raw(std::string_view frame, bool sticky) {
  if (!slots_.empty()) return outcome::wait;
  if (!dedicated_) {
    dedicated_ = ctx_.upstreams.acquire_dedicated(proto_);
    dedicated_->set_owner(weak_from_this());
  }
  // Its CLIENT GETNAME goes upstream from now on: the connection takes the client's name (empty:
  // none) instead of the sidecar's. Not inside the client's MULTI, though: queued there, it would
  // add a result to the client's EXEC (the connection then keeps the sidecar's name).
  if (!multi_open_) send_own(std::array<std::string_view, 3>{"CLIENT", "SETNAME", name_});
  dedicated_->enter_raw(shared_from_this());
  raw_ = true;
  raw_sticky_ = sticky;
  if (multi_open_ && !transactions_.empty()) {  // (P)SUBSCRIBE queued in a MULTI
    // Raw mode sees its EXEC: the writes queued before now get their written marker behind it.
    raw_multi_ = true;
    for (std::string& w : transactions_.back().writes) raw_written_.push_back(std::move(w));
    transactions_.back().writes.clear();
  }
  subs_ = {};
  raw_dbs_.assign(1, effective_db());
  if (!dedicated_->send_raw(frame)) {
    reply_error(std::string(errors::upstream_unavailable) + ": " + dedicated_->last_error());
    return outcome::close;
  }
  return outcome::next;
}

// ---------------------------------------------------------------------------------------------
// Replies

void client_session::reply(std::string_view bytes) {
  answered_here_ = true;
  if (slots_.empty()) {
    out_.append(bytes);
    notify_writer();
    check_output_limit();  // answers from L1 or the sidecar count as Redis' replies do
    return;
  }
  slots_.push_back(slot{true, std::string(bytes), {}, 0});
  ++next_seq_;
}

// An L1 hit's reply (a bulk string, or nil for an absent key): straight into the output when
// nothing is in flight, so a hit costs no allocation.
void client_session::reply_hit(const cache_tier::hit_value& v) {
  answered_here_ = true;
  const auto append = [&](std::string& out) {
    if (v.absent)
      resp::append_null(out, proto_);
    else
      resp::append_bulk(out, v.value);
  };
  if (slots_.empty()) {
    append(out_);
    notify_writer();
    check_output_limit();
    return;
  }
  slot s{true, {}, {}, 0};
  append(s.data);
  slots_.push_back(std::move(s));
  ++next_seq_;
}

void client_session::reply_error(std::string_view message) {
  std::string r;
  resp::append_error(r, message);
  reply(r);
}

void client_session::reply_simple(std::string_view s) {
  std::string r;
  resp::append_simple(r, s);
  reply(r);
}

void client_session::deliver(std::uint64_t seq, std::string_view frame, std::uint8_t t,
                             clock::time_point received) {
  if (closed_) {  // nobody to answer, but L1 still follows what ran: the db, transactions
    if (!cache_ops_.empty()) apply_cache_op(seq, frame);
    if (t != tag_none) apply_tag(frame, t);
    return;
  }
  if (seq == script_barrier_seq_) {
    after_script_ = false;
    script_barrier_seq_ = std::numeric_limits<std::uint64_t>::max();
  }
  if (!cache_ops_.empty()) apply_cache_op(seq, frame);
  if (t != tag_none) apply_tag(frame, t);
  if (t == tag_exec_abort) frame = execabort_reply();
  if (shut_passed_ && delivering_failure_) frame = {};  // Redis dropped it at the close
  const std::uint64_t index = seq - first_seq_;
  if (index >= slots_.size()) return;  // not ours any more (RESET dropped it): nothing to do
  slot& s = slots_[index];
  ctx_.metrics->observe(s.command, metrics::source::upstream, received - s.start);
  if (index == 0) {
    out_.append(frame);
    slots_.pop_front();
    ++first_seq_;
    flush_ready();
  } else {
    s.ready = true;
    s.data.assign(frame);
  }
  notify_writer();
  check_output_limit();
  if (slots_.empty()) {
    current_ = nullptr;
    maybe_release_dedicated();
  }
  if (reader_waiting_ && (slots_.empty() || slots_.size() < cfg_.max_pipeline))
    drain_wake_.cancel();
}

// A request the connection failed (timed out, connection lost): a write may still run, so L1
// holds its keys (cache_tier::write_unsure()) instead of taking the error as its reply.
void client_session::deliver_failure(std::uint64_t seq, std::string_view frame, std::uint8_t t,
                                     clock::time_point received) {
  delivering_failure_ = true;
  deliver(seq, frame, t, received);
  delivering_failure_ = false;
}

void client_session::flush_ready() {
  while (!slots_.empty() && slots_.front().ready) {
    out_.append(slots_.front().data);
    slots_.pop_front();
    ++first_seq_;
  }
}

void client_session::apply_tag(std::string_view frame, std::uint8_t t) {
  const bool ok = !frame.empty() && frame[0] != '-' && frame[0] != '!';
  switch (t) {
    case tag_multi: in_multi_ = in_multi_ || ok; break;
    case tag_exec: transaction_ended(frame, true); break;
    case tag_exec_abort:
    case tag_discard: transaction_ended(frame, false); break;
    case tag_watch: watching_ = watching_ || ok; break;
    case tag_unwatch: watching_ = false; break;
    case tag_select:
      if (!select_dbs_.empty()) {
        if (ok) db_ = select_dbs_.front();
        select_dbs_.pop_front();
      }
      break;
    default: break;
  }
  if (t == tag_exec || t == tag_exec_abort || t == tag_discard || t == tag_unwatch)
    close_if_demoted();
}

// EXEC (or DISCARD) of the oldest transaction came back. `executed`: EXEC, whose array reply
// holds a reply per queued command (or nil: WATCH aborted it; or an error: nothing ran).
void client_session::transaction_ended(std::string_view reply, bool executed) {
  in_multi_ = watching_ = false;
  if (transactions_.empty()) return;
  const transaction tx = std::move(transactions_.front());
  transactions_.pop_front();
  // The db the transaction started in, then each it SELECTed: a SELECT queued in it changed the
  // connection's db only if it ran and succeeded.
  const int before = db_;
  if (executed && !tx.selects.empty() && !reply.empty() && reply[0] == '*') {
    if (const auto v = resp::decode(reply); v && v->type == resp::value::kind::array) {
      for (const auto& [index, db] : tx.selects) {
        if (index < v->elements.size() &&
            v->elements[index].type == resp::value::kind::simple_string)
          db_ = db;
      }
    }
  }
  // The queued writes ran (or not); either way L1 forgets their keys once more, in every db they
  // may have run in: a read that raced with them on another connection is not kept (write_fence).
  // An EXEC that failed (the connection, say) may still run later: its writes are held.
  const bool failed = delivering_failure_;
  const cache::time_ms now = mono_ms(clock::now());
  for (const std::string& frame : tx.writes) {
    if (op_parser_.parse(frame) == resp::parse_status::complete && !op_parser_.args().empty()) {
      if (const auto* info = commands::lookup(op_parser_.args()[0])) {
        const auto forget = [&](int db) {
          if (failed)
            ctx_.tier->write_unsure(db, *info, op_parser_.args(), {tx.conn, 0}, now);
          else
            ctx_.tier->on_request(db, *info, op_parser_.args(), {tx.conn, 0}, false);
        };
        forget(before);
        for (const auto& [index, db] : tx.selects)
          if (db != before) forget(db);
      }
    }
    op_parser_.reset();
  }
}

bool client_session::reset_unseen() {
  if (!drained_reads_ || closed_) return false;
  if (reads_ != reads_at_sweep_) {
    reads_at_sweep_ = reads_;
    return false;
  }
  const int err = pending_error(socket_.native_handle());
  if (err == 0) return false;
  log::info("client " + std::to_string(id_) +
            " closed: " + error_code(err, asio::error::get_system_category()).message() +
            " (seen by the reset sweep)");
  note_close("reset by the client (seen by the reset sweep)");
  return true;
}

void client_session::deliver_raw(std::string_view frame) {
  if (closed_) return;
  if (frame == "+RESET\r\n") {  // see raw_reset()
    if (raw_reset_ == raw_reset_state::sent_marked) {
      raw_reset_ = raw_reset_state::sent_seen;
    } else if (raw_reset_ == raw_reset_state::sent) {
      raw_reset_ = raw_reset_state::answered;
      drain_wake_.cancel();
    }
  }
  if (!markers_.empty() && refuses_any_command(frame)) {
    // Redis refused a request without running it, as it would have refused the marker: which of
    // the replies due is the marker's can no longer be told (raw mode does not count them), so
    // the client is closed, as when its connection is lost, rather than given replies that may be
    // out of step with its requests.
    ctx_.st.count(error_kind::upstream_unavailable);
    log::warn("client " + std::to_string(id_) +
              " closed: the upstream refused a request while a marker was due (" +
              std::string(frame.substr(1, frame.find_first_of(" \r") - 1)) + ")");
    note_close("the upstream refused a request while a marker was due");
    close_now();
    return;
  }
  if (!markers_.empty() && is_marker_reply(frame, marker_token_)) {  // see marker::kind
    marker m = std::move(markers_.front());
    markers_.pop_front();
    // ["pong", token]: the reply of a RESP2 subscriber, refused what the marker stands for.
    const bool refused = frame.starts_with("*2\r\n");
    std::string r;
    bool self = false;
    switch (m.what) {
      case marker::kind::leave:  // unless a reply before it subscribed the client again
        leaving_raw_ = false;
        if (!subs_.subscribed() && !raw_sticky_ && raw_reset_ == raw_reset_state::none) leave_raw();
        drain_wake_.cancel();
        return;
      case marker::kind::client_id:
      case marker::kind::getredir:
      case marker::kind::trackinginfo: rewrites_due_.push_back(m.what); return;
      case marker::kind::hello:  // sent behind the marker: its reply is next
        hello_due_ = true;
        hello_proto_ = m.proto;
        hello_setname_ = std::move(m.setname);
        return;
      case marker::kind::reply:  // a RESP2 subscriber is refused HELLO before its checks
        if (refused)
          append_subscribed_refusal(r, "hello");
        else
          r = std::move(m.reply);
        break;
      case marker::kind::answer: {
        const std::vector<std::string_view> args(m.args.begin(), m.args.end());
        self = answer_marked(args, refused, r);
        break;
      }
      case marker::kind::written: forget_raw_writes(m.args, m.dbs, std::nullopt); return;
      case marker::kind::reset:
        raw_reset_ = raw_reset_ == raw_reset_state::sent_seen || raw_replies_unsure_
                         ? raw_reset_state::answered
                         : raw_reset_state::refused;
        drain_wake_.cancel();
        return;
    }
    out_.append(r);
    notify_writer();
    if (self) close_after_flush();
    return;
  }
  if (hello_due_ && is_hello_reply(frame)) {  // see raw_hello()
    hello_due_ = false;
    if (!frame.starts_with('-')) {
      proto_ = hello_proto_;
      dedicated_->set_proto(proto_);
      if (hello_setname_) name_ = *hello_setname_;
      std::string r;
      append_hello_reply(r);
      out_.append(r);
      notify_writer();
      return;
    }
  }
  std::string rewritten;
  if (!rewrites_due_.empty() && rewrite_due_reply(frame, rewritten) && !rewritten.empty())
    frame = rewritten;
  // RESP3's notice that the redirect target is gone names it by its upstream connection's id:
  // the client knows it by the sidecar's (as CLIENT GETREDIR says).
  static constexpr std::string_view redir_broken = ">2\r\n$21\r\ntracking-redir-broken\r\n:";
  long long upstream = 0;
  if (frame.starts_with(redir_broken) && frame.ends_with("\r\n") &&
      parse_int(frame.substr(redir_broken.size(), frame.size() - redir_broken.size() - 2),
                upstream)) {
    rewritten =
        std::string(redir_broken) + std::to_string(client_id_of_upstream(upstream)) + "\r\n";
    frame = rewritten;
  }
  const bool unsubscribed_all = subs_.on_frame(frame, proto_);
  out_.append(frame);
  notify_writer();
  // A subscriber's limit is --max-pubsub-output-bytes; a MONITOR's (and any other raw client's)
  // --max-output-bytes, as Redis counts a MONITOR among its normal clients.
  if (!subs_.subscribed()) {
    check_output_limit();
    if (closed_) return;
  } else if (out_.size() > cfg_.max_pubsub_output_bytes) {
    ctx_.st.count(error_kind::output_buffer);
    log::warn("client " + std::to_string(id_) + " closed: subscriber output above " +
              std::to_string(cfg_.max_pubsub_output_bytes) + " bytes");
    note_close("subscriber output above the limit");
    close_now();
    return;
  }
  // Unsubscribed from everything: once every request sent so far is answered (the marker's reply
  // is back), the client leaves raw mode, unless one of those replies subscribed it again.
  if (unsubscribed_all && !raw_sticky_ && !leaving_raw_ && raw_reset_ == raw_reset_state::none &&
      dedicated_) {
    marker m;
    m.what = marker::kind::leave;
    leaving_raw_ = send_marker(std::move(m));
  }
}

// Back to an ordinary session on its dedicated connection, which goes back to the pool if the
// client holds no other connection state (a db other than the default one).
void client_session::leave_raw() {
  batch_now_ = clock::now();  // the own request's deadline counts from now (default_deadline())
  dedicated_->leave_raw();
  raw_ = false;
  raw_dbs_.clear();
  subs_ = {};
  // enter_raw() gave the connection the client's name; it takes the sidecar's again (CLIENT LIST
  // on the upstream shows who holds what).
  send_own(std::array<std::string_view, 3>{"CLIENT", "SETNAME", upstream_client_name});
  maybe_release_dedicated();
}

void client_session::refuse_query_buffer() {
  ctx_.st.count(error_kind::query_buffer);
  log::warn("client " + std::to_string(id_) + " (" + peer_address() + ") closed: a request above " +
            std::to_string(cfg_.max_query_buffer_bytes) + " bytes (--max-query-buffer-bytes)");
  reply_error(errors::query_buffer);
  note_close(errors::query_buffer);
  close_after_flush();
}

void client_session::check_output_limit() {
  if (out_.size() > cfg_.max_output_bytes && !closed_) {
    ctx_.st.count(error_kind::output_buffer);
    log::warn("client " + std::to_string(id_) + " closed: unread replies above " +
              std::to_string(cfg_.max_output_bytes) + " bytes");
    note_close("unread replies above the limit");
    close_now();
  }
}

// Fallback began: a dedicated connection to the stalled upstream could only make the client's
// next request wait for --command-timeout-ms, so it goes now, owed replies or not, and a client
// whose state lived on it (a transaction, a WATCH, another db) is closed, as when Redis dies. A
// subscriber's stays: it waits for nothing, and keeps its subscriptions through a short stall.
void client_session::upstream_stalled(const std::string& reason) {
  if (dedicated_ && !raw_) dedicated_->reset(reason);
}

void client_session::dedicated_lost(connection* c) {
  if (dedicated_.get() != c) return;
  const bool dirty = !state_is_clean();
  if (raw_ && !raw_quit_)
    reply_error(std::string(errors::upstream_closed) + ": " + c->last_error());
  if (dirty) note_close("its dedicated upstream connection was lost: ", c->last_error());
  if (current_ == c) current_ = nullptr;
  dedicated_.reset();
  if (dirty) {
    // The client's connection state (subscriptions, transaction, db) is gone with the upstream
    // connection: close the client too, so it reconnects and restores it, as with Redis itself.
    raw_ = false;
    close_after_flush();
  }
}

// A client whose connection state keeps it on its dedicated connection (a SELECTed db, a
// tracking redirect) would go on writing to the demoted primary for as long as it stays: it is
// closed once the replies before are written, so that it reconnects, restores its state, and
// reaches the primary. Not in the middle of a transaction or a WATCH: once it ends (EXECABORT,
// DISCARD, UNWATCH; apply_tag()). A client whose state is clean gives the connection back, and
// the pool does not reuse it.
void client_session::dedicated_demoted(connection* c) {
  if (dedicated_.get() == c) close_if_demoted();
}

void client_session::close_if_demoted() {
  if (!dedicated_ || !dedicated_->demoted() || in_multi_ || watching_ || state_is_clean()) return;
  note_close("its upstream was demoted to a replica (a failover): ",
             "closed so that it reconnects to the primary");
  close_after_flush();
}

bool client_session::state_is_clean() const {
  return !raw_ && !in_multi_ && !watching_ && !redirect_target_ && db_ == cfg_.upstream.db;
}

void client_session::maybe_release_dedicated() {
  if (dedicated_ && state_is_clean() && slots_.empty() && select_dbs_.empty()) {
    dedicated_->set_owner({});
    ctx_.upstreams.release_dedicated(std::move(dedicated_));
    dedicated_.reset();
  }
}

void client_session::drop_dedicated() {
  if (!dedicated_) return;
  dedicated_->set_owner({});
  if (shut_passed_)
    dedicated_->close();  // Redis has the client's close: nothing more of it is to run
  else if (state_is_clean() && slots_.empty())
    ctx_.upstreams.release_dedicated(std::move(dedicated_));
  else
    dedicated_->close_after_writes();  // what the client sent still runs, as on Redis itself
  dedicated_.reset();
  current_ = nullptr;
}

std::string_view client_session::upstream_version() const {
  const std::string_view v = ctx_.upstreams.server_version();
  return v.empty() ? std::string_view("7.0.0") : v;
}

// ---------------------------------------------------------------------------------------------
// Writing and closing

// Replies go out when the event loop's turn is over (event_loop.hpp), so that every reply that
// came in this turn (a pipeline's worth, from one upstream read) leaves in one send.
void client_session::notify_writer() {
  if (!writer_waiting_ || write_deferred_) return;
  if (event_loop::defer(shared_from_this())) {
    write_deferred_ = true;
    return;
  }
  writer_waiting_ = false;
  writer_wake_.cancel();
}

// The writer is idle, so nothing is being written: when the socket takes every ready byte now,
// the writer need not wake at all (no timer, no coroutine hop); otherwise it takes over the rest.
// Large outputs go to the writer directly, which does not move the unsent rest around.
void client_session::turn_ended() {
  if (!raw_written_.empty()) send_written_marker();
  write_deferred_ = false;
  if (!writer_waiting_) return;
  if (!closing_ && !closed_ && !out_.empty() && out_.size() <= inline_write_max_bytes) {
    error_code ec;
    const std::size_t n = socket_.write_some(asio::buffer(out_), ec);  // non-blocking socket
    if (!ec && n == out_.size()) {
      out_.clear();
      return;
    }
    if (!ec) out_.erase(0, n);
  }
  writer_waiting_ = false;
  writer_wake_.cancel();
}

awaitable<void> client_session::write_loop(std::shared_ptr<client_session> self) {
  for (;;) {
    while (out_.empty() && !closing_ && !closed_) {
      writer_waiting_ = true;
      writer_wake_.expires_at(clock::time_point::max());
      co_await writer_wake_.async_wait(use_nothrow);
      writer_waiting_ = false;
    }
    if (closed_) break;
    if (out_.empty()) {
      // Closing: wait for in-flight replies unless the client itself is gone (in raw mode after
      // a QUIT, for Redis to close the connection: the replies until then are the client's).
      if ((slots_.empty() && !(raw_quit_ && dedicated_)) || !socket_.is_open()) break;
      writer_waiting_ = true;
      writer_wake_.expires_after(std::chrono::milliseconds(cfg_.command_timeout_ms));
      auto [ec] = co_await writer_wake_.async_wait(use_nothrow);
      writer_waiting_ = false;
      if (!ec) break;  // timed out waiting: give up on the rest
      continue;
    }
    wout_.clear();
    wout_.swap(out_);
    wout_busy_ = true;
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(wout_), use_nothrow);
    wout_busy_ = false;
    if (ec) {
      note_close("write failed: ", ec.message());
      break;
    }
    release_if_above(wout_, 4 * 1024 * 1024);
  }
  close_now();
  (void)self;
}

bool client_session::blocked() const {
  return !raw_ && blocking_seq_ >= first_seq_ && blocking_seq_ - first_seq_ < slots_.size() &&
         !slots_[blocking_seq_ - first_seq_].ready;
}

// A client that closed (or shut its sending side) while its blocking command was in flight. On
// its own connection Redis would answer what it read before the close (a BLPOP that finds its
// data) and drop the client at the close, taking a command that blocks off its keys: an item
// pushed after the close stays in the list. The dedicated connection shows Redis the close where
// the client's connection would have, behind what the client sent; Redis then answers or drops
// it as it would the client, and closes. The replies before Redis's close are written; the
// sidecar's own errors for the requests Redis dropped are not (deliver()), as a client of Redis
// sees none. Requests read after the blocking command but not yet sent go nowhere: Redis would
// not have run them either.
void client_session::pass_shut_upstream() {
  note_close("the client closed the connection while a blocking command waited");
  close_after_flush();
  if (!dedicated_) return;
  shut_passed_ = true;
  dedicated_->keep_out_of_pool();
  dedicated_->shut_after_writes();
}

void client_session::close_after_flush() {
  closing_ = true;
  drain_wake_.cancel();
  notify_writer();
}

void client_session::note_close(std::string_view why, std::string_view detail) {
  if (!close_reason_.empty() || !log::enabled(log::level::debug)) return;
  close_reason_.append(why).append(detail);
}

void client_session::close_now() {
  if (closed_) return;
  if (log::enabled(log::level::debug)) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - created_)
                        .count();
    log::debug("client " + std::to_string(id_) + " (" + peer_address() + ") closed after " +
               std::to_string(requests_) + " requests in " + std::to_string(ms) +
               " ms: " + (close_reason_.empty() ? std::string("closed") : close_reason_));
  }
  closed_ = true;
  closing_ = true;
  ctx_.sessions.erase(this);
  --ctx_.st.client_connections;
  error_code ignored;
  socket_.shutdown(asio::socket_base::shutdown_both, ignored);
  socket_.close(ignored);
  drain_wake_.cancel();
  writer_wake_.cancel();
  if (raw_) hold_raw_writes();
  drop_dedicated();
  shared_.reset();
  slots_.clear();
  out_.clear();
  // cache_ops_ and transactions_ stay: their replies still come (pending requests hold the
  // session), and a write's reply is when it has run, which L1 and the fence must hear of
  // (write_fence.hpp), in the db the client had SELECTed by then.
}

}  // namespace redis_sidecar
