// Resilience: an upstream that dies, restarts or stalls gives clients error replies (never a hang:
// hiredis' 10 s timeout turns a hang into a missing reply, which fails the test), and the sidecar
// recovers by itself. Clients that leave mid-pipeline or mid-BLPOP leave no trace upstream.
#include <chrono>
#include <cstdlib>
#include <memory>
#include <thread>

#include "tests/integration/common.hpp"
#include "tests/support/tcp_relay.hpp"

namespace redis_sidecar::test {
namespace {

bool set_and_get(redisContext* c, const std::string& key, const std::string& value) {
  auto set = command(c, {"SET", key, value});
  auto get = command(c, {"GET", key});
  return set && set->type == REDIS_REPLY_STATUS && get && get->type == REDIS_REPLY_STRING &&
         std::string(get->str, get->len) == value;
}

TEST_CASE("upstream killed and restarted: errors during the outage, then recovery",
          "[resilience]") {
  SIDECAR_ONLY();
  // Pass-through errors, so neither L1 nor fallback. A near-cache hit may answer GET k until the
  // sidecar has read its channel's end (in the same turn as the BLPOP's, on a loaded machine),
  // with the value Redis held when it died; fallback would answer a second after the kill, and
  // this test can take longer than that. Both have tests of their own.
  proxied env({}, {"--cache-mode=off", "--fallback-after-ms=3600000"});
  auto c = env.client();
  auto blocked = env.client();
  REQUIRE(set_and_get(c.get(), "k", "before"));
  REQUIRE(send_only(blocked.get(), {"BLPOP", "jobs", "0"}));
  REQUIRE(eventually([&] { return blocked_clients(env) == 1; }));

  env.redis.kill();

  // The request in flight when the upstream died gets an error.
  auto lost = next_reply(blocked.get());
  REQUIRE(lost);
  INFO("in-flight BLPOP got " << describe(lost.get()));
  CHECK(lost->type == REDIS_REPLY_ERROR);
  CHECK(std::string(lost->str).starts_with("ERR upstream"));

  // New requests during the outage get errors, in order, on old and new connections.
  for (int i = 0; i < 3; ++i) CHECK(error_of(c.get(), {"GET", "k"}).starts_with("ERR upstream"));
  for (int i = 0; i < 50; ++i) {
    const char* argv[] = {"GET", "k"};
    REQUIRE(redisAppendCommandArgv(c.get(), 2, argv, nullptr) == REDIS_OK);
  }
  int errors_seen = 0;
  for (int i = 0; i < 50; ++i) {
    auto r = next_reply(c.get());
    REQUIRE(r);
    if (r->type == REDIS_REPLY_ERROR) ++errors_seen;
  }
  CHECK(errors_seen == 50);
  {
    auto fresh = env.client();
    CHECK(error_of(fresh.get(), {"SET", "k", "x"}).starts_with("ERR upstream"));
  }

  env.redis.start();  // same port; data is gone (no persistence)
  CHECK(eventually([&] { return set_and_get(c.get(), "k", "after"); }));
  CHECK(str(c.get(), {"GET", "k"}) == "after");
  CHECK(eventually([&] { return set_and_get(blocked.get(), "b", "after"); }));
  auto fresh = env.client();
  CHECK(str(fresh.get(), {"GET", "k"}) == "after");
  CHECK(env.side->running());
}

TEST_CASE("stalled upstream: --command-timeout-ms gives an error, then recovery", "[resilience]") {
  SIDECAR_ONLY();
  // Pass-through behaviour: no L1 (the near cache would answer GET k from memory, and fallback
  // would answer it after a second; both have tests of their own).
  proxied env({},
              {"--command-timeout-ms", "500", "--connect-timeout-ms", "500", "--cache-mode=off"});
  auto c = env.client();
  REQUIRE(set_and_get(c.get(), "k", "kept"));

  env.redis.pause();
  CHECK(error_of(c.get(), {"GET", "k"}).starts_with(errors::upstream_timeout));
  CHECK(error_of(c.get(), {"GET", "k"}).starts_with("ERR upstream"));
  env.redis.resume();

  CHECK(eventually([&] {
    auto r = command(c.get(), {"GET", "k"});
    return r && r->type == REDIS_REPLY_STRING && std::string(r->str) == "kept";
  }));
  CHECK(set_and_get(c.get(), "k2", "fine"));
  auto fresh = env.client();
  CHECK(str(fresh.get(), {"GET", "k2"}) == "fine");
}

// A raw-mode client's replies pass on unread; the sidecar's markers among its requests are told
// apart by their replies. When Redis refuses requests unrun (here -BUSY, a script running past
// busy-reply-threshold), a refused marker cannot be told from the client's own refused requests:
// the client is closed rather than handed replies out of step with its requests.
TEST_CASE("a subscriber whose marker Redis refuses unrun (-BUSY) is closed, not desynchronised",
          "[resilience][pubsub]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.extra = {"busy-reply-threshold 100"};
  proxied env(opts, {"--fallback-after-ms=3600000"});
  raw_client sub(env.port());
  sub.send("SUBSCRIBE ch\r\n");
  REQUIRE(read_value(sub) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");

  raw_client script(env.redis.port());  // straight to Redis: a script that runs for a second
  script.send(
      "EVAL \"local t = tonumber(redis.call('TIME')[1]) + 1 "
      "while tonumber(redis.call('TIME')[1]) <= t do end return 1\" 0\r\n");
  auto admin = env.upstream();
  bool busy = false;
  for (int i = 0; i < 250 && !busy; ++i) {
    auto r = command(admin.get(), {"PING"});
    busy = r && r->type == REDIS_REPLY_ERROR && std::string(r->str).starts_with("BUSY");
    if (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(busy);

  sub.send("PING a\r\nCLIENT ID\r\nPING b\r\n");  // CLIENT ID's marker goes between
  CHECK(sub.closed_by_peer());
  CHECK(read_value(script) == ":1\r\n");
  auto c = env.client();
  CHECK(str(c.get(), {"PING"}) == "PONG");
  if (env.side)
    CHECK(env.side->log().find("the upstream refused a request while a marker") !=
          std::string::npos);
}

TEST_CASE("a client that leaves mid-pipeline does not disturb others", "[resilience]") {
  proxied env;
  auto setup = env.client();
  const std::string big(10000, 'z');
  REQUIRE(str(setup.get(), {"SET", "big", big}) == "OK");
  {
    raw_client leaver(env.port());
    std::string pipeline;
    for (int i = 0; i < 2000; ++i) pipeline += "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
    leaver.send(pipeline);
    // Closes without reading ~20 MB of replies.
  }
  auto c = env.client();
  int wrong = 0;
  for (int i = 0; i < 200; ++i) {
    if (!set_and_get(c.get(), "own:" + std::to_string(i), "value-" + std::to_string(i))) ++wrong;
  }
  CHECK(wrong == 0);
  CHECK(str(c.get(), {"GET", "big"}) == big);
}

// A client that stops reading is closed once its unread replies pass --max-output-bytes, as
// Redis closes one past client-output-buffer-limit: replies from Redis, answers from L1 (which
// went into the output unchecked: a client pipelining GETs of a cached 100 KB value grew the
// sidecar by ~500 MB and stalled every other client) and a MONITOR (held to the subscribers'
// limit before; Redis counts it among its normal clients). Nothing times out: each waits for
// the close to be counted.
TEST_CASE("a client that does not read is closed at --max-output-bytes, L1 hits and MONITOR too",
          "[resilience]") {
  SIDECAR_ONLY();
  proxied env({}, {"--max-output-bytes=1mb", "--max-pubsub-output-bytes=64mb"});
  REQUIRE(
      eventually([&] { return metric(env, R"(redis_sidecar_cache_mode{mode="tracking"})") == 1; }));
  auto c = env.client();
  const std::string value(100000, 'v');
  REQUIRE(str(c.get(), {"SET", "cached", value}) == "OK");
  REQUIRE(str(c.get(), {"GET", "cached"}) == value);  // read on the channel: cached
  const std::string hits_total = "redis_sidecar_cache_hits_total";
  REQUIRE(eventually([&] {  // a hit: the pipeline below is answered from L1
    return str(c.get(), {"GET", "cached"}) == value && metric(env, hits_total) > 0;
  }));
  const std::string counted = R"(redis_sidecar_errors_total{kind="output_buffer"})";
  const auto closed_for_output = [&](double n) {
    return eventually([&] { return metric(env, counted) == n; });
  };
  std::string gets;
  for (int i = 0; i < 500; ++i) gets += "*2\r\n$3\r\nGET\r\n$6\r\ncached\r\n";
  {
    raw_client hits(env.port());
    hits.send(gets);  // 50 MB of answers from L1, none read
    CHECK(closed_for_output(1));
    CHECK(hits.closed_by_peer());
  }
  CHECK(str(c.get(), {"GET", "cached"}) == value);  // the others are served on
  {
    raw_client monitor(env.port());
    monitor.send("*1\r\n$7\r\nMONITOR\r\n");
    CHECK(monitor.read_exact(5) == "+OK\r\n");
    for (int i = 0; i < 100; ++i)  // 10 MB of MONITOR lines, none read
      REQUIRE(str(c.get(), {"SET", "m" + std::to_string(i), value}) == "OK");
    CHECK(closed_for_output(2));
    CHECK(monitor.closed_by_peer());
  }
  CHECK(str(c.get(), {"PING"}) == "PONG");
}

// The series that counts a sidecar's open client connections.
const char* const client_connections = "redis_sidecar_client_connections";

// True once the raw client `c` got PONG for a PING and the sidecar counts it as its only client.
bool answered_and_counted(const proxied& env, raw_client& c) {
  c.send("*1\r\n$4\r\nPING\r\n");
  return c.read_exact(7) == "+PONG\r\n" &&
         eventually([&] { return metric(env, client_connections) == 1; });
}

// A client that resets its connection in the middle of a request, its last bytes and the reset
// landing together (the sidecar stopped meanwhile, so that it sees both in one event): the read
// that takes the bytes reports nothing left, and the reset is in no later event or read. The
// session must still go, not wait forever for the rest of the request.
TEST_CASE("a client that resets in the middle of a request is closed", "[resilience]") {
  SIDECAR_ONLY();
  proxied env;
  raw_client c(env.port());
  REQUIRE(answered_and_counted(env, c));
  REQUIRE(env.side->stop());
  c.send("*2\r\n$3\r\nGET\r\n$3\r\nke");
  c.reset();
  REQUIRE(env.side->resume());
  CHECK(eventually([&] { return metric(env, client_connections) == 0; }));
  CHECK(env.side->log().find("Connection reset by peer (seen by the reset sweep)") !=
        std::string::npos);
  auto other = env.client();
  CHECK(str(other.get(), {"PING"}) == "PONG");
}

// An app whose host is gone without a word (powered off, its network cut) leaves a session that no
// read or write ends: the sidecar has nothing to send it, and nothing arrives. TCP keepalive sends:
// the first probe, after --tcp-keepalive seconds of quiet, finds the peer gone (here its kernel
// answers with a reset; a path that drops everything times out after the probes instead).
TEST_CASE("a client that vanishes without a word is closed by TCP keepalive", "[resilience]") {
  SIDECAR_ONLY();
  proxied env({}, {"--tcp-keepalive", "1"});
  raw_client c(env.port());
  REQUIRE(answered_and_counted(env, c));
  // Not before the client's delayed ACK of the PONG has left (at most 200 ms on Linux): with the
  // PONG unacknowledged, the sidecar's retransmission would meet the reset without any keepalive.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  INFO("TCP_REPAIR needs CAP_NET_ADMIN: run the tests as root");
  REQUIRE(c.vanish());
  CHECK(eventually([&] { return metric(env, client_connections) == 0; }));
  auto other = env.client();
  CHECK(str(other.get(), {"PING"}) == "PONG");
}

TEST_CASE("a client that leaves during BLPOP does not steal a later push",
          "[resilience][blocking]") {
  // A command timeout far beyond `eventually`'s window: the blocked upstream connection must be
  // closed because its client left, not because a deadline passed.
  proxied env({}, {"--command-timeout-ms=120000"});
  {
    auto leaver = env.client();
    REQUIRE(send_only(leaver.get(), {"BLPOP", "jobs", "0"}));
    REQUIRE(eventually([&] { return blocked_clients(env) == 1; }));
  }
  CHECK(eventually([&] { return blocked_clients(env) == 0; }));
  auto c = env.client();
  CHECK(integer(c.get(), {"LPUSH", "jobs", "job-1"}) == 1);
  CHECK(integer(c.get(), {"LLEN", "jobs"}) == 1);
  CHECK(str(c.get(), {"LPOP", "jobs"}) == "job-1");
}

// A queue's worker that dies (or times out and closes) in BLPOP, and a job pushed right after,
// through the sidecar: on Redis the close comes first and the job stays queued for the next
// worker. The sidecar must show Redis the close before the push, not keep the BLPOP waiting for
// a while after its client left (it would take the job, and the job would be lost).
TEST_CASE("a job pushed right after its worker left BLPOP stays queued", "[resilience][blocking]") {
  proxied env({}, {"--command-timeout-ms=120000"});
  auto producer = env.client();
  int lost = 0;
  for (int round = 0; round < 20; ++round) {
    const std::string queue = "jobs:" + std::to_string(round);
    {
      auto worker = env.client();
      REQUIRE(send_only(worker.get(), {"BLPOP", queue, "0"}));
      REQUIRE(eventually([&] { return blocked_clients(env) == 1; }));
    }  // the worker closes here
    REQUIRE(integer(producer.get(), {"LPUSH", queue, "job"}) == 1);
    REQUIRE(eventually([&] { return blocked_clients(env) == 0; }));
    if (integer(producer.get(), {"LLEN", queue}) != 1) ++lost;
  }
  CHECK(lost == 0);
  check_still_serving(env.port());
}

}  // namespace
}  // namespace redis_sidecar::test

namespace redis_sidecar::test {

// Out of file descriptors, an accept fails and leaves the connection queued, so the next one fails
// at once too. The sidecar must neither spin on that nor stop serving the clients it has: the
// waiting connections are refused with Redis' error, the limit is logged, and new clients are
// taken again once descriptors are free. (The limit is lowered on the running process.)
TEST_CASE("out of file descriptors: new clients refused, connected ones still served",
          "[resilience][limits]") {
  SIDECAR_ONLY();
#ifdef __SANITIZE_ADDRESS__
  // UBSan checks a virtual call's target by writing its memory into a pipe, which it cannot open
  // without a free descriptor: it then reports any virtual call as one on an invalid object.
  WARN("skipped in the sanitizer build: the sanitizers themselves need free descriptors");
  return;
#endif
  proxied env;
  std::vector<context_ptr> first;
  for (int i = 0; i < 10; ++i) {
    first.push_back(env.client());
    REQUIRE(str(first.back().get(), {"PING"}) == "PONG");
  }
  const std::string lower = "prlimit --pid " + std::to_string(env.side->pid()) + " --nofile=64:64";
  REQUIRE(std::system(lower.c_str()) == 0);
  std::vector<std::unique_ptr<raw_client>> extra;
  for (int i = 0; i < 80; ++i) extra.push_back(std::make_unique<raw_client>(env.port()));
  int refused = 0;
  for (auto& c : extra) {
    c->send(resp_array({"PING"}));
    const std::string r = c->read_available(std::chrono::milliseconds(2000));
    if (r == error_bytes(errors::max_clients))
      ++refused;
    else
      CHECK(r == "+PONG\r\n");
  }
  CHECK(refused > 0);
  for (auto& c : first) CHECK(str(c.get(), {"PING"}) == "PONG");
  CHECK(env.side->log().find("out of file descriptors") != std::string::npos);
  // A connected client's command that needs a connection of its own is told whose fault it is
  // (it said "Operation canceled" before).
  CHECK_THAT(error_of(first[0].get(), {"BLPOP", "q", "0.1"}),
             Catch::Contains("the sidecar is out of file descriptors"));
  extra.clear();
  CHECK(eventually([&] { return str(env.client().get(), {"PING"}) == "PONG"; }));
}

// Clients whose connection state lives on a dedicated upstream connection (an open transaction,
// a WATCH, another db) and that wait for nothing when the upstream stalls: once fallback has begun
// their next request must not wait for --command-timeout-ms (a minute here, longer than the
// test's deadlines). Their state is gone with the stalled connection: they are closed, as when
// Redis dies, and a new connection is served from L1.
TEST_CASE("stalled upstream: clients idle on dedicated connections do not wait for the timeout",
          "[resilience][fallback]") {
  SIDECAR_ONLY();
  proxied env(
      {}, {"--fallback-after-ms=200", "--health-probe-interval-ms=50",
           "--health-probe-timeout-ms=200", "--connect-timeout-ms=300", "--reconnect-max-ms=200",
           "--command-timeout-ms=60000", "--cache-mode=fallback"});
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "a", "before"}) == "OK");
  raw_client tx(env.port()), watching(env.port()), db1(env.port());
  tx.send("MULTI\r\nSET t x\r\n");
  CHECK(tx.read_exact(14) == "+OK\r\n+QUEUED\r\n");
  watching.send("WATCH a\r\n");
  CHECK(watching.read_exact(5) == "+OK\r\n");
  db1.send("SELECT 1\r\n");
  CHECK(db1.read_exact(5) == "+OK\r\n");
  env.redis.pause();
  REQUIRE(eventually([&] {
    auto f = env.client();
    auto r = command(f.get(), {"GET", "a"});  // L1 answers GET only in fallback
    return r && r->type == REDIS_REPLY_STRING && std::string(r->str, r->len) == "before";
  }));
  tx.send("SET u y\r\n");
  watching.send("GET a\r\n");
  db1.send("GET a\r\n");
  for (raw_client* s : {&tx, &watching, &db1}) CHECK(s->closed_by_peer(std::chrono::seconds(20)));
  env.redis.resume();
}

// Two Redis servers behind one address (a relay), the sidecar in front of it: a managed Redis'
// primary endpoint. fail_over() makes b a's replica, then its primary, and demotes a to b's
// replica, as a managed failover does; the address stays on a until moved.
struct failover_rig {
  redis_server a, b;
  tcp_relay endpoint{a.port()};
  sidecar side;

  explicit failover_rig(std::vector<std::string> flags = {})
      : side([&] {
          flags.insert(flags.begin(),
                       {"--upstream", "redis://127.0.0.1:" + std::to_string(endpoint.port())});
          return flags;
        }()) {
    REQUIRE(side.running());
  }
  /// With `a_syncs` false, a is demoted to the replica of an address nobody answers: a replica
  /// that has not caught up with b yet (Redis starts its sync at the next second's replication
  /// tick, and a full one takes longer), for as long as the test needs.
  void fail_over(bool a_syncs = true) {
    const std::string a_port = std::to_string(a.port()), b_port = std::to_string(b.port());
    REQUIRE(redis_cli(b, {"REPLICAOF", "127.0.0.1", a_port}) == "OK\n");
    REQUIRE(eventually([&] {
      return redis_cli(b, {"INFO", "replication"}).find("master_link_status:up") !=
             std::string::npos;
    }));
    REQUIRE(redis_cli(b, {"REPLICAOF", "NO", "ONE"}) == "OK\n");
    const std::string to = a_syncs ? b_port : std::to_string(free_port());
    REQUIRE(redis_cli(a, {"REPLICAOF", "127.0.0.1", to}) == "OK\n");
  }
  /// Coherent on b: a write made there directly reaches the sidecar's reader `c` (through L1).
  void check_coherent_on_b(redisContext* c) {
    CHECK(redis_cli(b, {"SET", "k", "direct"}) == "OK\n");
    CHECK(eventually([&] {
      auto r = command(c, {"GET", "k"});
      return r && r->type == REDIS_REPLY_STRING && std::string(r->str, r->len) == "direct";
    }));
  }
};

// A failover behind the upstream's address (a DNS name, a cloud endpoint or a service address
// moved to the new primary, the old one demoted to its replica): the connections opened before it
// stay on the old primary, and Redis keeps them. Every write through them got -READONLY for as
// long as they lived, while the health probe's PING, which a replica answers, said healthy. A
// shared connection answered READONLY now reconnects once the replies to what it wrote are in; a
// dedicated one is not handed to another client; the near cache's channel and the health probe
// follow. Writes reach the new primary after at most one READONLY per pooled connection.
TEST_CASE("a failover behind the upstream's address: READONLY sends the pool to the new primary",
          "[resilience]") {
  SIDECAR_ONLY();
  failover_rig rig;
  auto& [a, b, endpoint, side] = rig;
  auto c = connect(side.port());
  REQUIRE(str(c.get(), {"SET", "k", "before"}) == "OK");
  // A client in another db holds a dedicated connection for as long as it stays.
  auto db1 = connect(side.port());
  REQUIRE(str(db1.get(), {"SELECT", "1"}) == "OK");
  REQUIRE(str(db1.get(), {"SET", "d", "before"}) == "OK");
  auto db1tx = connect(side.port());  // the same, writing only in transactions
  REQUIRE(str(db1tx.get(), {"SELECT", "1"}) == "OK");
  REQUIRE(str(db1tx.get(), {"MULTI"}) == "OK");
  REQUIRE(str(db1tx.get(), {"SET", "x", "before"}) == "QUEUED");
  REQUIRE(elements(db1tx.get(), {"EXEC"}) == std::vector<std::string>{"OK"});
  // A transaction leaves an idle dedicated connection on the old primary.
  REQUIRE(str(c.get(), {"MULTI"}) == "OK");
  REQUIRE(str(c.get(), {"SET", "t", "before"}) == "QUEUED");
  REQUIRE(elements(c.get(), {"EXEC"}) == std::vector<std::string>{"OK"});
  // b becomes a's replica, then its primary; a its replica; the endpoint moves to b.
  rig.fail_over();
  endpoint.retarget(b.port());

  // Writes from many clients, so that every pooled connection is used: each may answer one
  // READONLY, then writes go through, on b.
  int readonly = 0, in_a_row = 0;
  for (int i = 0; i < 200 && in_a_row < 40; ++i) {
    auto w = connect(side.port());
    auto r = must(w.get(), {"SET", "k", "after-" + std::to_string(i)});
    INFO("SET " << i << " replied " << describe(r.get()));
    if (r->type == REDIS_REPLY_ERROR) {
      CHECK(std::string(r->str).starts_with("READONLY"));
      ++readonly;
      in_a_row = 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } else {
      ++in_a_row;
    }
  }
  WARN("READONLY replies before the writes reached the new primary: " << readonly);
  CHECK(in_a_row == 40);
  CHECK(readonly <= 8);
  CHECK(redis_cli(b, {"GET", "k"}).starts_with("after-"));
  // A transaction now gets a connection that reaches b, not the idle one left on a.
  REQUIRE(str(c.get(), {"MULTI"}) == "OK");
  REQUIRE(str(c.get(), {"SET", "t", "after"}) == "QUEUED");
  CHECK(elements(c.get(), {"EXEC"}) == std::vector<std::string>{"OK"});
  CHECK(redis_cli(b, {"GET", "t"}) == "after\n");
  CHECK(side.log().find("answered READONLY: it is a replica now") != std::string::npos);
  // The client in db 1 gets its READONLY, then is closed: reconnected, it reaches b.
  CHECK(error_of(db1.get(), {"SET", "d", "after"}).starts_with("READONLY"));
  CHECK(command(db1.get(), {"PING"}) == nullptr);  // closed
  db1 = connect(side.port());
  REQUIRE(str(db1.get(), {"SELECT", "1"}) == "OK");
  CHECK(str(db1.get(), {"SET", "d", "after"}) == "OK");
  CHECK(redis_cli(b, {"-n", "1", "GET", "d"}) == "after\n");
  // Its transaction is refused (READONLY, then EXECABORT), then it is closed too.
  REQUIRE(str(db1tx.get(), {"MULTI"}) == "OK");
  CHECK(error_of(db1tx.get(), {"SET", "x", "after"}).starts_with("READONLY"));
  CHECK(error_of(db1tx.get(), {"EXEC"}).starts_with("EXECABORT"));
  CHECK(command(db1tx.get(), {"PING"}) == nullptr);  // closed
  // The near cache's channel (tracking, by default) and the health probe follow the pool: none
  // of the sidecar's connections is left on a, and b has the tracking one.
  CHECK(eventually([&] {
    return redis_cli(a, {"CLIENT", "LIST"}).find("name=redis-sidecar") == std::string::npos;
  }));
  CHECK(eventually([&] {
    return redis_cli(b, {"CLIENT", "LIST"}).find("flags=t") != std::string::npos;
  }));
  INFO(redis_cli(a, {"CLIENT", "LIST"}));
  INFO(side.log());
  auto reader = connect(side.port());
  CHECK(eventually([&] {
    auto r = command(reader.get(), {"GET", "k"});
    return r && r->type == REDIS_REPLY_STRING;
  }));
  rig.check_coherent_on_b(reader.get());
}

// A workload of reads meets no READONLY: through a failover it stayed on the demoted primary (a
// replica of the new one, as far as replication has come) for as long as the connections lived.
// The pooled connections and the near cache's channel now send HELLO once a second with their
// traffic, whose role finds the demotion: they move to the new primary, and the connections
// without traffic and the health probe follow the first that reached it; when the address moves
// only later (a DNS TTL), they follow it then. Also when a write's READONLY moved one pooled
// connection first.
TEST_CASE("a failover behind the upstream's address: a workload of reads follows it too",
          "[resilience]") {
  SIDECAR_ONLY();
  failover_rig rig;
  auto& [a, b, endpoint, side] = rig;
  auto c = connect(side.port());
  REQUIRE(str(c.get(), {"SET", "k", "v"}) == "OK");
  const auto sidecar_on = [](const redis_server& r) {
    return redis_cli(r, {"CLIENT", "LIST"}).find("name=redis-sidecar") != std::string::npos;
  };
  REQUIRE(integer(c.get(), {"HSET", "h", "f", "hv"}) == 1);
  // Reads of every path: an L1 hit, a miss (read on the near cache's channel), a pooled read.
  int reads = 0, wrong = 0;
  const auto read = [&] {
    const auto is = [&](reply_ptr r, std::string_view want) {
      ++reads;
      if (!r || r->type != REDIS_REPLY_STRING || std::string_view(r->str, r->len) != want) ++wrong;
    };
    is(command(c.get(), {"GET", "k"}), "v");
    is(command(c.get(), {"HGET", "h", "f"}), "hv");
    auto miss = command(c.get(), {"GET", "absent:" + std::to_string(reads)});
    ++reads;
    if (!miss || miss->type != REDIS_REPLY_NIL) ++wrong;
  };
  rig.fail_over();
  SECTION("the address moves with the demotion") { endpoint.retarget(b.port()); }
  SECTION("the address moves with the demotion, and a write is refused first") {
    endpoint.retarget(b.port());
    // READONLY, unless a HELLO found the demotion already and the connection moved.
    auto w = connect(side.port());
    command(w.get(), {"SET", "w", "1"});
  }
  SECTION("the address moves 3 s after the demotion") {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < until) {
      read();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    endpoint.retarget(b.port());
  }
  // Reads only, until none of the sidecar's connections is left on a.
  CHECK(eventually([&] {
    read();
    return !sidecar_on(a);
  }));
  INFO(redis_cli(a, {"CLIENT", "LIST"}));
  INFO(side.log());
  CHECK(wrong == 0);
  WARN(reads << " reads, all served");
  CHECK(side.log().find("says in HELLO it is a replica") != std::string::npos);
  CHECK(eventually([&] {  // the near cache's tracking channel is on b
    return redis_cli(b, {"CLIENT", "LIST"}).find("flags=t") != std::string::npos;
  }));
  rig.check_coherent_on_b(c.get());
  // And the pool writes there.
  CHECK(str(c.get(), {"SET", "k", "after"}) == "OK");
  CHECK(redis_cli(b, {"GET", "k"}) == "after\n");
}

// Read-your-writes through a failover: once a pooled connection has moved to the new primary, a
// client's writes go there, and its GET of the key, a miss read on the near cache's channel, must
// not be answered by the demoted node, which has not caught up yet. The channel followed the pool
// only at the health probe's next tick (a second here), and until then clients read values from
// before their own writes. It now lets go of the channel at the first miss after the pool reached
// the new primary, and the miss is read on the pool. (INCR: L1 does not take its value from the
// reply, so the GET after it is a miss in ttl mode too.)
TEST_CASE("a failover behind the upstream's address: a client reads what it wrote",
          "[resilience]") {
  SIDECAR_ONLY();
  const std::string mode = GENERATE("tracking", "ttl");  // ttl: misses are read there too
  std::vector<std::string> flags{"--health-probe-interval-ms=1000", "--cache-mode=" + mode};
  if (mode == "ttl") flags.insert(flags.end(), {"--cache-prefix=k", "--cache-ttl=1h"});
  INFO("--cache-mode=" << mode);
  failover_rig rig(flags);
  auto& [a, b, endpoint, side] = rig;
  auto c = connect(side.port());
  constexpr int keys = 50;
  for (int i = 0; i < keys; ++i)
    REQUIRE(str(c.get(), {"SET", "k" + std::to_string(i), "0"}) == "OK");
  REQUIRE(eventually([&] {  // misses are read on the channel
    return side.log().find("cache mode " + mode) != std::string::npos;
  }));
  rig.fail_over(false);
  endpoint.retarget(b.port());
  int readonly = 0, written = 0, stale = 0;
  for (int i = 0; i < keys; ++i) {
    const std::string key = "k" + std::to_string(i);
    auto r = must(c.get(), {"INCR", key});
    if (r->type == REDIS_REPLY_ERROR) {
      CHECK(std::string(r->str).starts_with("READONLY"));
      ++readonly;
      continue;
    }
    ++written;
    auto g = must(c.get(), {"GET", key});
    INFO("GET " << key << " after its INCR replied " << describe(g.get()));
    if (g->type != REDIS_REPLY_STRING || std::string_view(g->str, g->len) != "1") ++stale;
  }
  INFO(side.log());
  CHECK(readonly <= 2);
  CHECK(written >= keys - 2);
  CHECK(stale == 0);
  CHECK(redis_cli(a, {"GET", "k" + std::to_string(keys - 1)}) == "0\n");  // a is behind
}

// An upstream that is a replica by configuration answers every write READONLY, as Redis does; the
// sidecar does not churn connections for it: a pooled connection tries again after 1 s, 2 s, ...
// of its life, transactions' dedicated connections are reused (closing each after its READONLY
// opened one upstream connection per transaction), and the near cache's channel stays.
TEST_CASE("an upstream that is a replica all along: writes get READONLY, connections are reused",
          "[resilience]") {
  SIDECAR_ONLY();
  redis_server primary, replica;
  REQUIRE(redis_cli(replica, {"REPLICAOF", "127.0.0.1", std::to_string(primary.port())}) == "OK\n");
  sidecar side({"--upstream", "redis://127.0.0.1:" + std::to_string(replica.port())});
  REQUIRE(side.running());
  auto c = connect(side.port());
  REQUIRE(str(c.get(), {"PING"}) == "PONG");
  const auto connections_received = [&] {
    const std::string info = redis_cli(replica, {"INFO", "stats"});
    const auto at = info.find("total_connections_received:");
    return at == std::string::npos ? -1 : std::atol(info.c_str() + at + 27);
  };
  REQUIRE(eventually([&] {  // the pool, the probe and the channel are up
    return side.log().find("invalidation channel ready") != std::string::npos;
  }));
  const long before = connections_received();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  int transactions = 0;
  while (std::chrono::steady_clock::now() < until) {
    CHECK(error_of(c.get(), {"SET", "k", "v"}).starts_with("READONLY"));
    REQUIRE(str(c.get(), {"MULTI"}) == "OK");
    CHECK(error_of(c.get(), {"INCR", "n"}).starts_with("READONLY"));
    CHECK(error_of(c.get(), {"EXEC"}).starts_with("EXECABORT"));
    ++transactions;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const long opened = connections_received() - before;
  INFO(transactions << " transactions, " << opened << " upstream connections opened");
  CHECK(transactions > 20);
  // The pool's retries (at 0, 1 and 3 s of a stream's life, per pooled connection) and a
  // dedicated connection or two.
  CHECK(opened <= 8);
  const std::string log = side.log();
  CHECK(log.find("invalidation channel ready") == log.rfind("invalidation channel ready"));
}

}  // namespace redis_sidecar::test
