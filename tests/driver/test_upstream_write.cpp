// connection's writes: the requests queued during a turn of the event loop leave in one write that
// starts at the turn's end, from the loop's end-of-turn call itself, so that they are on the wire
// before the loop runs any other handler (the upstream works on them while the sidecar goes on
// with the rest of its work). And a reset that reads cannot see is noticed without a write.
//
// The upstream here is a fake one on a thread of its own: it answers the connect sequence's HELLO
// as a Redis before 6 would ("unknown command"), which leaves nothing else to send, and then only
// listens. Loopback delivers a send() into the receiving socket before it returns, so what the
// fake upstream's socket holds when a listener runs right after the connection's is what the
// connection has sent by then.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "proxy/asio.hpp"
#include "proxy/config/config.hpp"
#include "proxy/event_loop.hpp"
#include "proxy/stats.hpp"
#include "proxy/upstream/connect_fsm.hpp"
#include "proxy/upstream/connection.hpp"
#include "proxy/upstream/write_hold.hpp"
#include "tests/driver/loopback.hpp"
#include "tests/support/harness.hpp"

namespace redis_sidecar {
namespace {

constexpr std::string_view ping = "*1\r\n$4\r\nPING\r\n";

// A request of the sidecar's own (no sink: its reply is dropped), due within --command-timeout-ms
// as the near cache's and the health probe's are, so the connection's watchdog leaves it alone.
pending_reply own_request(const config& cfg) {
  pending_reply r;
  r.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg.command_timeout_ms);
  return r;
}

// Calls `f` when its turn_ended() is.
struct at_turn_end : turn_listener {
  std::function<void()> f;
  explicit at_turn_end(std::function<void()> fn) : f(std::move(fn)) {}
  void turn_ended() override { f(); }
};

// A fake upstream on a thread: accepts one connection (with TLS when given a context), reads the
// connect sequence's HELLO and refuses it. The raw socket is left to the test afterwards.
class fake_upstream {
 public:
  explicit fake_upstream(ssl::context* tls) : tls_(tls) {
    acceptor_.open(tcp::v4());
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    thread_ = std::thread([this] { serve(); });
  }
  ~fake_upstream() {
    if (thread_.joinable()) thread_.join();
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  /// Bytes the connection has sent since the handshake and nobody has read.
  std::size_t unread() {
    if (thread_.joinable()) thread_.join();
    error_code ec;
    return socket_.available(ec);
  }
  bool handshake_done() const { return done_; }
  /// What the connection sent first (read on the fake upstream's thread, valid once done).
  const std::string& hello() const { return hello_; }
  /// Why the fake upstream gave up, if it did (valid once done).
  const std::string& error() const { return error_; }
  /// Once done: reads what the connection sent (at least one request), answers `reply`, and
  /// resets the connection (SO_LINGER 0) before the connection can read the reply.
  void reply_and_reset(std::string_view reply) {
    if (thread_.joinable()) thread_.join();
    char buf[512];
    if (tls_stream_) {
      tls_stream_->read_some(asio::buffer(buf));
      asio::write(*tls_stream_, asio::buffer(reply.data(), reply.size()));
    } else {
      socket_.read_some(asio::buffer(buf));
      asio::write(socket_, asio::buffer(reply.data(), reply.size()));
    }
    socket_.set_option(asio::socket_base::linger(true, 0));
    socket_.close();
  }
  /// Once done: reads what the connection has sent, all of it (plaintext) or one TLS record's
  /// worth.
  std::string take() {
    if (thread_.joinable()) thread_.join();
    char buf[4096];
    const std::size_t n = tls_stream_ ? tls_stream_->read_some(asio::buffer(buf))
                                      : socket_.read_some(asio::buffer(buf));
    return std::string(buf, n);
  }
  /// Once done: sends `bytes` to the connection, as replies.
  void answer(std::string_view bytes) {
    if (thread_.joinable()) thread_.join();
    if (tls_stream_) {
      asio::write(*tls_stream_, asio::buffer(bytes.data(), bytes.size()));
    } else {
      asio::write(socket_, asio::buffer(bytes.data(), bytes.size()));
    }
  }
  /// Once done: the fake upstream's end of the connection vanishes without a word
  /// (test::silence()). False when that was refused.
  bool vanish() {
    if (thread_.joinable()) thread_.join();
    if (!test::silence(socket_.native_handle())) return false;
    socket_.close();
    return true;
  }

 private:
  void serve() {
    try {
      answer_hello();
    } catch (const std::exception& e) {
      error_ = e.what();
    }
    done_ = true;
  }
  void answer_hello() {
    acceptor_.accept(socket_);
    const std::string refusal = "-ERR unknown command 'HELLO'\r\n";
    if (tls_ != nullptr) {
      tls_stream_.emplace(socket_, *tls_);
      tls_stream_->handshake(ssl::stream_base::server);
      read_hello(*tls_stream_);
      asio::write(*tls_stream_, asio::buffer(refusal));
    } else {
      read_hello(socket_);
      asio::write(socket_, asio::buffer(refusal));
    }
  }
  template <class Stream>
  void read_hello(Stream& s) {
    std::string got;
    char buf[512];
    while (got.find(upstream_client_name) == std::string::npos)
      got.append(buf, s.read_some(asio::buffer(buf)));
    hello_ = got;
  }

  ssl::context* tls_;
  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  tcp::socket socket_{io_};
  std::optional<ssl::stream<tcp::socket&>> tls_stream_;
  std::thread thread_;
  std::string hello_;
  std::string error_;
  std::atomic<bool> done_{false};
};

// A connection to a fake upstream, plaintext or TLS, with the loop held open until a test lets go.
struct upstream_pair {
  /// `shared`: a pooled connection (it reconnects, and holds small writes: write_hold.hpp), not a
  /// client's dedicated one.
  explicit upstream_pair(bool tls, bool shared = false,
                         std::uint32_t write_hold_rtt_us = config{}.write_hold_rtt_us)
      : server_ctx(test::test_server_context()),
        client_ctx(make_client_ctx()),
        upstream(tls ? &server_ctx : nullptr) {
    std::string error;
    REQUIRE(parse_upstream_url(
        (tls ? "rediss://127.0.0.1:" : "redis://127.0.0.1:") + std::to_string(upstream.port()),
        cfg.upstream, error));
    cfg.upstream_set = true;
    cfg.write_hold_rtt_us = write_hold_rtt_us;
    conn = std::make_shared<connection>(io.get_executor(), cfg, tls ? &client_ctx : nullptr, st, 2,
                                        shared);
  }
  static ssl::context make_client_ctx() {
    ssl::context ctx(ssl::context::tls_client);
    ctx.load_verify_file(test::test_certificates().ca_crt);
    ctx.set_verify_mode(ssl::verify_peer);
    return ctx;
  }
  /// Starts the connection and runs the loop; calls `f` in a handler once the connection is
  /// ready and the fake upstream has answered the handshake.
  void run_when_ready(std::function<void()> f) {
    when_ready = std::move(f);
    conn->start();
    asio::post(io, [this] { wait_ready(); });
    event_loop::run(io);
  }
  void wait_ready() {
    const bool failed = upstream.handshake_done() && !upstream.error().empty();
    if (!failed &&
        (conn->current_state() != connection::state::ready || !upstream.handshake_done())) {
      poll.expires_after(std::chrono::milliseconds(2));
      poll.async_wait([this](error_code) { wait_ready(); });
      return;
    }
    REQUIRE(upstream.error().empty());
    when_ready();
  }

  /// Polls the connection until it closes by itself (closed_by_itself) or 10 s have passed (a hang
  /// guard: then closes it), and lets the loop end.
  void watch_until_closed() {
    if (watch_start == std::chrono::steady_clock::time_point{})
      watch_start = std::chrono::steady_clock::now();
    if (conn->current_state() == connection::state::closed) {
      closed_by_itself = true;
      work.reset();
      return;
    }
    if (std::chrono::steady_clock::now() - watch_start > std::chrono::seconds(10)) {
      conn->close();
      work.reset();
      return;
    }
    poll.expires_after(std::chrono::milliseconds(5));
    poll.async_wait([this](error_code) { watch_until_closed(); });
  }

  /// Runs `then` in a handler once `ready()` holds, polling every millisecond.
  void when(std::function<bool()> ready, std::function<void()> then) {
    if (ready()) return then();
    poll.expires_after(std::chrono::milliseconds(1));
    poll.async_wait([this, ready, then](error_code) { when(ready, then); });
  }
  /// Runs `f` when this turn of the loop ends, after the listeners deferred before it (the
  /// connection's write among them).
  static void after_turn(std::function<void()> f) {
    REQUIRE(event_loop::defer(std::make_shared<at_turn_end>(std::move(f))));
  }
  /// Once ready: a request written alone and answered, so that the connection has measured a round
  /// trip (write_hold.hpp); then `then`, with nothing in flight.
  void run_after_round_trip(std::function<void()> then) {
    run_when_ready([this, then] {
      REQUIRE(conn->submit(ping, own_request(cfg)));
      after_turn([this, then] {
        CHECK(upstream.take() == ping);
        upstream.answer("+PONG\r\n");
        when([this] { return conn->pending() == 0; }, then);
      });
    });
  }

  ssl::context server_ctx;
  ssl::context client_ctx;
  fake_upstream upstream;
  config cfg;
  stats st;  // before io: what io still runs or destroys may use cfg, st and the contexts
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::shared_ptr<connection> conn;
  steady_timer poll{io};
  std::function<void()> when_ready;
  std::chrono::steady_clock::time_point watch_start{};
  bool closed_by_itself = false;
};

TEST_CASE("a turn's upstream requests are on the wire when the turn ends, in one write",
          "[connection]") {
  const bool tls = GENERATE(false, true);
  INFO((tls ? "TLS" : "plaintext"));
  upstream_pair p(tls);
  std::optional<std::size_t> sent_at_turn_end;
  std::uint64_t writes_at_turn_end = 0;
  auto check = std::make_shared<at_turn_end>([&] {
    sent_at_turn_end = p.upstream.unread();
    writes_at_turn_end = p.st.upstream_writes;
    p.conn->close();
    p.work.reset();
  });
  // Two requests in one handler, then the check, deferred after the connection's own deferral:
  // the loop calls listeners in the order they deferred.
  p.run_when_ready([&] {
    REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
    REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
    CHECK(p.st.upstream_writes == 0);  // not before the turn's end
    REQUIRE(event_loop::defer(check));
  });

  REQUIRE(sent_at_turn_end.has_value());
  CHECK(p.upstream.hello().rfind("*4\r\n$5\r\nHELLO\r\n$1\r\n2\r\n", 0) == 0);
  CHECK(writes_at_turn_end == 1);
  if (tls) {
    // One TLS 1.3 record: 5 bytes of header, the two requests, a content type byte and a 16-byte
    // tag. Reading it before the end of the turn's write would have found nothing.
    CHECK(*sent_at_turn_end == 5 + 2 * ping.size() + 1 + 16);
  } else {
    CHECK(*sent_at_turn_end == 2 * ping.size());
  }
}

TEST_CASE("a connection closed while a write is out keeps its stream until the write is over",
          "[connection]") {
  const bool tls = GENERATE(false, true);
  INFO((tls ? "TLS" : "plaintext"));
  upstream_pair p(tls);
  // 8 MB the fake upstream never reads: the write stays out until the close aborts it.
  const std::string value(8 << 20, 'v');
  const std::string big =
      "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
  steady_timer later(p.io);
  p.run_when_ready([&] {
    REQUIRE(p.conn->submit(big, own_request(p.cfg)));  // more than a TLS record: written at once
    CHECK(p.st.upstream_writes == 1);
    later.expires_after(std::chrono::milliseconds(50));
    later.async_wait([&](error_code) {
      CHECK(p.upstream.unread() < big.size());   // still going
      p.conn->submit(ping, own_request(p.cfg));  // queued behind it, never written
      p.conn->close();
      p.work.reset();
    });
  });
  // The loop ran out of work: the write's completion came back and the connection's run ended.
  CHECK(p.conn->current_state() == connection::state::closed);
  CHECK(p.st.upstream_writes == 1);
  CHECK(p.st.inflight_requests == 0);
  CHECK(p.conn.use_count() == 1);  // nothing in flight holds it
}

// The reply and the reset arrive before the connection reads either: the kernel reports them in one
// readiness event, and the read that takes the reply leaves nothing queued (a reset is not in the
// kernel's hint, drained_read.hpp), so no later event or read would tell the connection. It must
// find out by itself, not at the next request's write: a reset connection that looks ready takes
// the next requests and fails them.
TEST_CASE("a reset that arrives with the last reply is noticed without a write", "[connection]") {
  const bool tls = GENERATE(false, true);
  INFO((tls ? "TLS" : "plaintext"));
  upstream_pair p(tls);
  auto reset = std::make_shared<at_turn_end>([&] { p.upstream.reply_and_reset("+PONG\r\n"); });
  p.run_when_ready([&] {
    REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
    REQUIRE(event_loop::defer(reset));  // after the connection's write: the PING is on the wire
    p.watch_until_closed();
  });
  REQUIRE(p.closed_by_itself);
  CHECK(p.st.inflight_requests == 0);  // the PONG was read first
  CHECK(p.conn->last_error().find("reset") != std::string::npos);
}

// A shared connection's write of a few requests waits while the one before it, of at least
// write_hold_policy::min_unanswered requests, is unanswered; the requests that come meanwhile join
// it, and the replies it waited for send it (write_hold.hpp).
// With holding off (--write-hold-rtt-us=0) each turn's requests leave at its end, as before.
TEST_CASE("a small write waits for the replies to the one before it, and leaves with them",
          "[connection]") {
  const bool tls = GENERATE(false, true);
  const bool hold = GENERATE(true, false);
  INFO((tls ? "TLS" : "plaintext") << (hold ? ", holding" : ", holding off"));
  // A limit of 100 ms: a loopback round trip is under it however busy the machine is.
  upstream_pair p(tls, true, hold ? 100'000 : 0);
  auto when = [&](std::function<bool()> ready, std::function<void()> then) {
    p.when(std::move(ready), std::move(then));
  };
  auto after_turn = &upstream_pair::after_turn;
  const std::string two_pings = std::string(ping) + std::string(ping);
  constexpr std::size_t batch = write_hold_policy::min_unanswered;  // B's requests
  std::string batch_pings, batch_pongs;
  for (std::size_t i = 0; i < batch; ++i) {
    batch_pings += ping;
    batch_pongs += "+PONG\r\n";
  }
  auto finish = [&] {
    p.upstream.answer("+PONG\r\n+PONG\r\n");  // C and D
    when([&] { return p.conn->pending() == 0; },
         [&] {
           p.conn->close();
           p.work.reset();
         });
  };
  auto step5 = [&] {  // B's reply has been read
    after_turn([&] {
      if (hold) {
        CHECK(p.st.upstream_writes == 3);
        CHECK(p.upstream.take() == two_pings);  // C and D in one write
      } else {
        CHECK(p.st.upstream_writes == 4);
      }
      finish();
    });
  };
  auto step4 = [&] {  // D, in a turn of its own, while B is still unanswered
    REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
    after_turn([&] {
      CHECK(p.st.upstream_writes == (hold ? 2U : 4U));
      CHECK(p.st.upstream_held_writes == (hold ? 1U : 0U));  // counted once per write
      if (hold) CHECK(p.upstream.unread() == 0);
      p.upstream.answer(batch_pongs);  // B
      when([&] { return p.conn->pending() == 2; }, step5);
    });
  };
  auto step3 = [&] {  // C, while B's requests are unanswered
    REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
    after_turn([&] {
      CHECK(p.st.upstream_writes == (hold ? 2U : 3U));
      CHECK(p.st.upstream_held_writes == (hold ? 1U : 0U));
      if (hold) CHECK(p.upstream.unread() == 0);  // nothing sent
      asio::post(p.io, step4);
    });
  };
  auto step2 = [&] {  // B, a few requests with nothing unanswered: they go at once
    for (std::size_t i = 0; i < batch; ++i) REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
    after_turn([&] {
      CHECK(p.upstream.take() == batch_pings);
      asio::post(p.io, step3);
    });
  };
  p.run_after_round_trip(step2);  // A
  CHECK(p.conn->current_state() == connection::state::closed);
  CHECK(p.st.inflight_requests == 0);
}

// A write of write_hold_policy::max_held_requests requests spreads Redis's costs already: it goes
// at once even while an earlier one is unanswered.
TEST_CASE("a write of many requests does not wait for earlier replies", "[connection]") {
  upstream_pair p(false, true, 100'000);
  p.run_after_round_trip([&] {
    // B, unanswered from now on.
    for (std::size_t i = 0; i < write_hold_policy::min_unanswered; ++i)
      REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
    upstream_pair::after_turn([&] {
      CHECK(p.upstream.take().size() == write_hold_policy::min_unanswered * ping.size());
      asio::post(p.io, [&] {
        for (std::size_t i = 0; i < write_hold_policy::max_held_requests; ++i)
          REQUIRE(p.conn->submit(ping, own_request(p.cfg)));
        upstream_pair::after_turn([&] {
          CHECK(p.st.upstream_writes == 3);
          CHECK(p.st.upstream_held_writes == 0);
          CHECK(p.upstream.unread() == write_hold_policy::max_held_requests * ping.size());
          p.conn->close();
          p.work.reset();
        });
      });
    });
  });
  CHECK(p.conn->current_state() == connection::state::closed);
}

// A sink that writes down, in order, what the connection asks of it: "p<seq>i" / "p<seq>e" for
// prefetch (index, entry), "d<seq>" for a delivery.
struct recording_sink : reply_sink, std::enable_shared_from_this<recording_sink> {
  void deliver(std::uint64_t seq, std::string_view, std::uint8_t,
               std::chrono::steady_clock::time_point) override {
    events += "d" + std::to_string(seq) + " ";
  }
  void prefetch(std::uint64_t seq, bool entry) override {
    events += "p" + std::to_string(seq) + (entry ? "e " : "i ");
  }
  pending_reply request(std::uint64_t seq, const config& cfg) {
    pending_reply r = own_request(cfg);
    r.sink = sink_ref(this);
    r.seq = seq;
    return r;
  }
  std::string events;

 private:
  std::shared_ptr<reply_sink> owner() override { return shared_from_this(); }
};

// Replies that come in one read are delivered one by one; while one is, the sinks of the next two
// start loading what delivering theirs will touch (the next one's L1 entry, the one after's index
// slot), so that a read's fills overlap their waits for memory. A reply alone in its read has
// nothing behind it to prefetch.
TEST_CASE("replies read together are prefetched one and two ahead of their delivery",
          "[connection]") {
  const bool tls = GENERATE(false, true);
  INFO((tls ? "TLS" : "plaintext"));
  upstream_pair p(tls);
  auto sink = std::make_shared<recording_sink>();
  // Then two requests whose replies come in two reads: nothing is prefetched.
  const std::function<void()> apart = [&] {
    CHECK(sink->events == "p3i p2e d1 p3e d2 d3 ");
    sink->events.clear();
    REQUIRE(p.conn->submit(ping, sink->request(4, p.cfg)));
    REQUIRE(p.conn->submit(ping, sink->request(5, p.cfg)));
    p.after_turn([&] {
      p.upstream.take();
      p.upstream.answer("+PONG\r\n");
      p.when([&] { return p.conn->pending() == 1; },
             [&] {
               p.upstream.answer("+PONG\r\n");
               p.when([&] { return p.conn->pending() == 0; },
                      [&] {
                        CHECK(sink->events == "d4 d5 ");
                        p.conn->close();
                        p.work.reset();
                      });
             });
    });
  };
  // Three requests whose replies come in one read.
  p.run_when_ready([&] {
    for (std::uint64_t seq = 1; seq <= 3; ++seq)
      REQUIRE(p.conn->submit(ping, sink->request(seq, p.cfg)));
    p.after_turn([&] {
      p.upstream.take();
      p.upstream.answer("+PONG\r\n+PONG\r\n+PONG\r\n");  // one write: one read
      p.when([&] { return p.conn->pending() == 0; }, apart);
    });
  });
  CHECK(p.conn->current_state() == connection::state::closed);
}

// An idle upstream connection whose path or peer is gone without a word (a NAT or load balancer
// that forgot the flow, a host that vanished) gets no reset and no end of stream: only sending
// something tells. TCP keepalive sends: the first probe after --tcp-keepalive seconds of quiet
// meets the peer kernel's reset here (a path that drops everything would time out after the
// probes instead), and the connection is closed before a request is written into the void.
TEST_CASE("an upstream that vanishes without a word is found by TCP keepalive", "[connection]") {
  const bool tls = GENERATE(false, true);
  INFO((tls ? "TLS" : "plaintext"));
  upstream_pair p(tls);
  p.cfg.tcp_keepalive_s = 1;
  bool vanished = false;
  steady_timer later(p.io);
  p.run_when_ready([&] {
    // Not before the connection's delayed ACK of the last reply has left (at most 200 ms on
    // Linux): arriving after the vanishing, it would be reset without any keepalive.
    later.expires_after(std::chrono::milliseconds(300));
    later.async_wait([&](error_code) {
      vanished = p.upstream.vanish();
      if (!vanished) {
        p.conn->close();
        p.work.reset();
        return;
      }
      p.watch_until_closed();
    });
  });
  INFO("TCP_REPAIR needs CAP_NET_ADMIN: run the tests as root");
  REQUIRE(vanished);
  REQUIRE(p.closed_by_itself);
  CHECK(p.conn->last_error().find("reset") != std::string::npos);
}

}  // namespace
}  // namespace redis_sidecar
