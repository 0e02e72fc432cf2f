// The coherent near cache against a real redis-server: hits from L1 kept correct by CLIENT
// TRACKING invalidations while another client writes to Redis directly (the staleness checker),
// across a killed tracking connection and an upstream restart; ttl mode's bounded staleness;
// auto mode's choice when tracking is refused; single flight for concurrent misses.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "tests/integration/near_support.hpp"
#include "tests/support/tcp_relay.hpp"

namespace redis_sidecar::test {
using namespace near;

// The channel's path dies without a word (no FIN, no reset): nothing read on it any more, so a
// workload of hits alone sent nothing that could find out, and L1 served a value changed on Redis
// for as long as TCP keepalive took (2 x 60 s), or forever without it. A PING every second, with
// --command-timeout-ms to answer (1 s here), finds it: hits stop, the channel is opened again.
TEST_CASE("tracking: a channel whose path died silently stops serving hits", "[near][tracking]") {
  SIDECAR_ONLY();
  redis_server redis;
  tcp_relay relay(redis.port(), "TRACKING");  // the channel's client sends CLIENT TRACKING
  sidecar side(with({"--upstream", "redis://127.0.0.1:" + std::to_string(relay.port()),
                     "--command-timeout-ms=1000"}));
  REQUIRE(side.running());
  auto direct = context_ptr(redis.connect_direct());
  auto c = connect(side.port());
  REQUIRE(str(direct.get(), {"SET", "bk", "v1"}) == "OK");
  const auto hits = [&] {
    const std::string text = "\n" + http_get(side.metrics_port(), "/metrics").body;
    const auto at = text.find("\nredis_sidecar_cache_hits_total ");
    return at == std::string::npos ? -1.0 : std::atof(text.c_str() + at + 32);
  };
  REQUIRE(eventually([&] { return get(c.get(), "bk") == "v1" && hits() > 0; }));  // a hit
  relay.swallow_marked();
  REQUIRE(str(direct.get(), {"SET", "bk", "v2"}) == "OK");  // its invalidation is swallowed
  CHECK(eventually([&] { return get(c.get(), "bk") == "v2"; }));
  CHECK(side.log().find("cache invalidation channel lost") != std::string::npos);
}

TEST_CASE("tracking: hits stay coherent with writes made directly on Redis", "[near][tracking]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto writer = env.upstream();
  auto reader = env.client();
  std::vector<std::chrono::microseconds> stale;
  REQUIRE(str(writer.get(), {"SET", "ver", "0"}) == "OK");
  for (int version = 1; version <= 60; ++version) {
    REQUIRE(get(reader.get(), "ver") == std::to_string(version - 1));  // fills L1, tracked
    REQUIRE(get(reader.get(), "ver") == std::to_string(version - 1));  // a hit
    stale.push_back(staleness_round(env, writer.get(), reader.get(), "ver", version));
  }
  WARN("tracking staleness: " << distribution(stale));
  CHECK(metric(env, "redis_sidecar_cache_hits_total") >= 60);

  SECTION("a killed tracking connection: no stale hits, then coherent again") {
    REQUIRE(get(reader.get(), "ver") == "60");
    auto admin = env.upstream();
    // The tracking connection is the one with the 't' flag.
    const std::string clients = str(admin.get(), {"CLIENT", "LIST"});
    const auto flag = clients.find(" flags=t ");
    REQUIRE(flag != std::string::npos);
    const auto line = clients.rfind("id=", flag);
    const std::string id = clients.substr(line + 3, clients.find(' ', line) - line - 3);
    REQUIRE(integer(admin.get(), {"CLIENT", "KILL", "ID", id}) == 1);
    // Until the channel is back, a write it cannot announce must not leave an old hit behind.
    REQUIRE(eventually([&] { return env.side->log().find("channel lost") != std::string::npos; }));
    REQUIRE(str(writer.get(), {"SET", "ver", "61"}) == "OK");
    CHECK(get(reader.get(), "ver") == "61");
    // The channel opens again by itself; then hits and invalidations work as before.
    REQUIRE(eventually([&] { return count(env.side->log(), "invalidation channel ready") == 2; }));
    for (int version = 62; version <= 70; ++version) {
      REQUIRE(get(reader.get(), "ver") == std::to_string(version - 1));
      staleness_round(env, writer.get(), reader.get(), "ver", version);
    }
  }
  SECTION("an upstream restart: no stale hits after it") {
    REQUIRE(get(reader.get(), "ver") == "60");
    restart_upstream(env, writer, reader, "ver");  // empty afterwards
    REQUIRE(str(writer.get(), {"SET", "ver", "100"}) == "OK");
    REQUIRE(eventually([&] { return get(reader.get(), "ver") == "100"; }));
    REQUIRE(eventually([&] { return count(env.side->log(), "invalidation channel ready") == 2; }));
    for (int version = 101; version <= 110; ++version) {
      REQUIRE(get(reader.get(), "ver") == std::to_string(version - 1));
      staleness_round(env, writer.get(), reader.get(), "ver", version);
    }
  }
}

// A client pipelines two SETs of one key and then reads it: the first SET's reply (stored in L1)
// can come while the second is still in flight, and an L1 hit must not answer the read with it.
// The window is narrow (a large second value widens it), so this runs many rounds.
TEST_CASE("ttl mode: a client reads its own pipelined writes", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  raw_client c(env.side->port());
  int violations = 0;
  for (int round = 0; round < 200; ++round) {
    const std::string small = "small" + std::to_string(round);
    const std::string big = std::to_string(round) + "-" + std::string(200'000, 'x');
    c.send(resp_array({"SET", "t:k", small}) + resp_array({"SET", "t:k", big}));
    if (round % 4 != 0) std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 4)));
    c.send(resp_array({"GET", "t:k"}));
    const std::string want = "+OK\r\n+OK\r\n$" + std::to_string(big.size()) + "\r\n" + big + "\r\n";
    const std::string got = c.read_exact(want.size());
    if (got != want) ++violations;
  }
  CHECK(violations == 0);
}

// As above, with 40 more writes behind the second SET: more writes in flight than the sidecar
// scans key by key, so reads then go to the upstream rather than risk an L1 hit on the first
// SET's value.
TEST_CASE("ttl mode: a client reads its own writes behind a deep pipeline of writes",
          "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  raw_client c(env.side->port());
  std::string fillers, filler_replies;
  for (int i = 0; i < 40; ++i) {
    fillers += resp_array({"SET", "t:filler:" + std::to_string(i), "x"});
    filler_replies += "+OK\r\n";
  }
  int violations = 0;
  for (int round = 0; round < 100; ++round) {
    const std::string small = "small" + std::to_string(round);
    const std::string big = std::to_string(round) + "-" + std::string(200'000, 'x');
    c.send(resp_array({"SET", "t:k", small}) + resp_array({"SET", "t:k", big}) + fillers);
    if (round % 4 != 0) std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 4)));
    c.send(resp_array({"GET", "t:k"}));
    const std::string want = "+OK\r\n+OK\r\n" + filler_replies + "$" + std::to_string(big.size()) +
                             "\r\n" + big + "\r\n";
    const std::string got = c.read_exact(want.size());
    if (got != want) ++violations;
  }
  CHECK(violations == 0);
}

// A SET hides its key's L1 entry until its reply overwrites it. When the client leaves before
// that reply, the reply is never applied: the hidden entry must go with the client rather than
// stay in L1, never served, until evicted. Redis is stopped so that the SET is still in flight
// when the client closes.
// A write's reply says when it has run, which L1 must hear of even when its client is gone: the
// entry the SET hid stays hidden (never served) until then, and its value is stored then.
TEST_CASE("ttl mode: a SET whose client leaves before its reply is applied when the reply comes",
          "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s",
                        "--fallback-after-ms=3600000", "--command-timeout-ms=60000"}));
  REQUIRE(mode_is(env, "ttl"));
  {
    // A reset, not a close: a client that only closed would still be owed the reply (it may
    // have shut its sending side only), and the session would wait for it.
    raw_client c(env.port());
    c.send(resp_array({"SET", "t:k", "v1"}));
    REQUIRE(read_value(c) == "+OK\r\n");  // its reply stores it
    REQUIRE(eventually([&] { return metric(env, "redis_sidecar_cache_entries") == 1; }));
    env.redis.pause();
    c.send(resp_array({"SET", "t:k", "v2"}));
    REQUIRE(eventually([&] { return metric(env, "redis_sidecar_inflight_requests") == 1; }));
    CHECK(metric(env, "redis_sidecar_cache_entries") == 1);  // hidden, still held
    c.reset();
  }
  CHECK(eventually([&] { return metric(env, "redis_sidecar_client_connections") == 0; }));
  env.redis.resume();
  // The SET had left for Redis: it ran, and its reply stored its value.
  CHECK(eventually([&] { return metric(env, "redis_sidecar_inflight_requests") == 0; }));
  const double hits = metric(env, "redis_sidecar_cache_hits_total");
  auto c = env.client();
  CHECK(get(c.get(), "t:k") == "v2");
  CHECK(eventually([&] { return metric(env, "redis_sidecar_cache_hits_total") == hits + 1; }));
}

// Two clients' SETs of one key on different upstream connections (RESP2 and RESP3 clients never
// share one): A's SET waits behind a 16 MB reply, so B's reply, though Redis ran B's SET last,
// is handled first. L1 must not keep A's value, which Redis overwrote.
TEST_CASE("ttl mode: SETs of one key raced on two connections leave no overwritten value",
          "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  auto direct = env.upstream();
  REQUIRE(str(direct.get(), {"SET", "blob", std::string(16 << 20, 'x')}) == "OK");
  raw_client a(env.port());
  value_reader a_replies(a);
  raw_client b(env.port());
  b.send(resp_array({"HELLO", "3"}));
  REQUIRE(read_value(b).substr(0, 1) == "%");
  auto reader = env.client();
  int overwritten = 0;  // rounds in which Redis ran A's SET first
  for (int round = 0; round < 4; ++round) {
    const std::string key = "t:" + std::to_string(round);
    a.send(resp_array({"GET", "blob"}) + resp_array({"SET", key, "from-A"}));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    b.send(resp_array({"SET", key, "from-B"}));
    REQUIRE(read_value(b) == "+OK\r\n");
    REQUIRE(a_replies.next().size() > 16u << 20);
    REQUIRE(a_replies.next() == "+OK\r\n");
    const std::string held = str(direct.get(), {"GET", key});
    overwritten += held == "from-B";
    INFO("round " << round << ": Redis holds " << held);
    CHECK(get(reader.get(), key) == held);
    CHECK(get(reader.get(), key) == held);  // a hit, if L1 holds the key
  }
  WARN(overwritten << " of 4 rounds ran A's SET first");
}

// A client that has subscribed has its requests passed on unread (raw); its writes must still
// make L1 forget their keys.
TEST_CASE("ttl mode: writes of a client that subscribed invalidate L1", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  auto reader = env.client();
  auto writer = env.client();
  REQUIRE(str(writer.get(), {"SET", "t:k", "old"}) == "OK");
  REQUIRE(get(reader.get(), "t:k") == "old");  // cached
  CHECK(elements(writer.get(), {"SUBSCRIBE", "ch"}) ==
        std::vector<std::string>{"subscribe", "ch", "1"});
  CHECK(elements(writer.get(), {"UNSUBSCRIBE", "ch"}) ==
        std::vector<std::string>{"unsubscribe", "ch", "0"});
  REQUIRE(str(writer.get(), {"SET", "t:k", "new"}) == "OK");
  CHECK(get(reader.get(), "t:k") == "new");
  REQUIRE(integer(writer.get(), {"DEL", "t:k"}) == 1);
  CHECK(get(reader.get(), "t:k") == "(nil)");
}

// A client in raw mode (here it runs CLIENT TRACKING itself) gets no reply read for its writes,
// but L1 must still forget the keys once they have run: this SET waits behind the client's own
// BLPOP, while another client's GET reads (and L1 keeps) the value from before it.
TEST_CASE("ttl mode: a raw-mode client's write held back by its BLPOP invalidates when it runs",
          "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  auto direct = env.upstream();
  auto other = env.client();
  raw_client app(env.port());
  value_reader replies(app);
  // The next reply to the app that is not a push (tracking sends invalidations as pushes).
  const auto next_reply = [&] {
    std::string v = replies.next();
    while (v.starts_with(">")) v = replies.next();
    return v;
  };
  app.send(resp_array({"HELLO", "3"}));
  REQUIRE(next_reply().starts_with("%"));
  app.send(resp_array({"CLIENT", "TRACKING", "ON"}));
  REQUIRE(next_reply() == "+OK\r\n");
  for (int round = 0; round < 3; ++round) {
    const std::string key = "t:raw" + std::to_string(round);
    REQUIRE(str(direct.get(), {"SET", key, "old"}) == "OK");
    if (round == 2) {  // once the client has run a transaction, as well
      app.send(resp_array({"MULTI"}) + resp_array({"EXEC"}));
      REQUIRE(next_reply() == "+OK\r\n");
      REQUIRE(next_reply() == "*0\r\n");
    }
    app.send(resp_array({"BLPOP", "t:jobs", "0.3"}) + resp_array({"SET", key, "new"}));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(get(other.get(), key) == "old");  // the SET has not run yet: L1 keeps "old"
    CHECK(next_reply() == "_\r\n");         // BLPOP timed out
    CHECK(next_reply() == "+OK\r\n");       // then the SET ran
    REQUIRE(get(direct.get(), key) == "new");
    CHECK(eventually([&] { return get(other.get(), key) == "new"; }, std::chrono::seconds(2)));
    CHECK(get(other.get(), key) == "new");
  }
  // A write queued in the client's transaction runs at its EXEC.
  REQUIRE(str(direct.get(), {"SET", "t:queued", "old"}) == "OK");
  app.send(resp_array({"MULTI"}) + resp_array({"SET", "t:queued", "new"}));
  REQUIRE(next_reply() == "+OK\r\n");
  REQUIRE(next_reply() == "+QUEUED\r\n");
  CHECK(get(other.get(), "t:queued") == "old");
  app.send(resp_array({"EXEC"}));
  REQUIRE(next_reply() == "*1\r\n+OK\r\n");
  REQUIRE(get(direct.get(), "t:queued") == "new");
  CHECK(eventually([&] { return get(other.get(), "t:queued") == "new"; }, std::chrono::seconds(2)));
}

// A write read in the same turn as the reply that ends the client's last subscription: its
// written marker must go before the marker that ends raw mode, or raw mode ends with a marker's
// reply still due, which then arrives on the connection as a reply nobody asked for.
TEST_CASE("raw mode: a write read with the end of the last subscription keeps replies aligned",
          "[near][ttl][pubsub]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  raw_client c(env.port());
  value_reader replies(c);
  c.send(resp_array({"HELLO", "3"}));
  REQUIRE(replies.next().starts_with("%"));
  c.send(resp_array({"SUBSCRIBE", "ch"}));
  REQUIRE(replies.next().starts_with(">3"));
  env.redis.pause();
  c.send(resp_array({"UNSUBSCRIBE", "ch"}));  // answered once Redis runs again
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(::kill(env.side->pid(), SIGSTOP) == 0);
  c.send(resp_array({"SET", "t:x", "v"}));  // ready first when the sidecar runs again
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  env.redis.resume();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(env.side->resume());
  CHECK(replies.next().starts_with(">3"));  // the unsubscribe confirmation
  CHECK(replies.next() == "+OK\r\n");
  c.send(resp_array({"PING"}));
  CHECK(replies.next() == "+PONG\r\n");
  c.send(resp_array({"GET", "t:x"}));
  CHECK(replies.next() == "$1\r\nv\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(env.side->log().find("nobody asked for") == std::string::npos);
}

// A write that timed out is not a write that did not run: its bytes wait in Redis' buffer and run
// when Redis does. A read sent after the timeout can run before it; L1 must not keep what it read.
// The pad makes Redis take several reads for the write, so the read on another connection runs
// first. Whether the whole pipeline reached Redis' socket before the timeout closed the connection
// depends on the kernel's buffers, so a round whose write never ran is tried again.
TEST_CASE("ttl mode: a read racing a timed-out write that still runs is not kept", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s",
                        "--command-timeout-ms=300", "--fallback-after-ms=3600000",
                        "--health-probe-timeout-ms=60000", "--health-probe-interval-ms=100"}));
  REQUIRE(mode_is(env, "ttl"));
  auto direct = env.upstream();
  int ran = 0;  // rounds whose write reached Redis
  for (int round = 0; round < 6 && ran < 2; ++round) {
    const std::string key = "t:orphan" + std::to_string(round);
    REQUIRE(str(direct.get(), {"SET", key, "old"}) == "OK");
    env.redis.pause();
    raw_client z(env.port());
    z.send(resp_array({"SET", "t:pad", std::string(64 << 10, 'p')}) +
           resp_array({"SET", key, "new"}));
    value_reader z_replies(z);
    CHECK(z_replies.next().starts_with("-"));  // timed out
    CHECK(z_replies.next().starts_with("-"));
    raw_client y(env.port());  // its read goes out after the failure, and runs first
    y.send(resp_array({"GET", key}));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    env.redis.resume();
    const std::string first = read_value(y);
    if (!eventually([&] { return get(direct.get(), key) == "new"; }, std::chrono::seconds(3)))
      continue;
    ++ran;
    auto reader = env.client();
    INFO("round " << round << ": the read after the failure got " << first);
    CHECK(get(reader.get(), key) == "new");
    CHECK(get(reader.get(), key) == "new");
  }
  CHECK(ran > 0);  // else the test shows nothing
}

// A client that leaves: the replies of what it sent still arrive, and L1 applies them in the db
// the client had SELECTed by then, not the one it started in.
TEST_CASE("ttl mode: a client that SELECTs, writes and resets leaves no value in the wrong db",
          "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  auto direct = env.upstream();
  REQUIRE(str(direct.get(), {"SET", "t:k", "db0"}) == "OK");
  auto db1 = env.upstream();
  REQUIRE(str(db1.get(), {"SELECT", "1"}) == "OK");
  int ran = 0;  // rounds whose SET reached Redis before the reset
  for (int round = 0; round < 4; ++round) {
    {  // a dedicated connection ready in the pool, so the two go out in the turn they are read
      raw_client w(env.port());
      w.send(resp_array({"WATCH", "t:w"}) + resp_array({"UNWATCH"}));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const std::string value = "db1-" + std::to_string(round);
    raw_client c(env.port());
    c.send(resp_array({"SELECT", "1"}) + resp_array({"SET", "t:k", value}));
    c.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(eventually([&] { return metric(env, "redis_sidecar_inflight_requests") == 0; }));
    ran += get(db1.get(), "t:k") == value;
    auto reader = env.client();
    CHECK(get(reader.get(), "t:k") == "db0");
    CHECK(get(reader.get(), "t:k") == "db0");
  }
  CHECK(ran > 0);  // else the test shows nothing
}

// The requests of one read are framed, and their keys hashed for L1, before the first is handled:
// in the db selected then. Writes behind a SELECT of the same read run in the new db, and their
// entries must be stored where that db's lookups find them, not where the old db's hash points
// (where no invalidation would find them either).
TEST_CASE("ttl mode: writes pipelined behind a SELECT fill L1 in the db they ran in",
          "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  auto c0 = env.client();
  REQUIRE(str(c0.get(), {"SET", "t:k", "db0"}) == "OK");  // L1 holds t:k of db 0
  raw_client w(env.port());
  w.send(resp_array({"SELECT", "1"}) + resp_array({"SET", "t:k", "db1"}) +
         resp_array({"SET", "t:j", "j1"}));
  value_reader replies(w);
  for (int i = 0; i < 3; ++i) CHECK(replies.next() == "+OK\r\n");
  CHECK(eventually([&] { return metric(env, "redis_sidecar_cache_entries") == 3; }));
  // The DEL looks both keys up in db 1: it finds and drops them.
  w.send(resp_array({"DEL", "t:k", "t:j"}));
  CHECK(replies.next() == ":2\r\n");
  CHECK(eventually([&] { return metric(env, "redis_sidecar_cache_entries") == 1; }));
  const double hits = metric(env, "redis_sidecar_cache_hits_total");
  CHECK(get(c0.get(), "t:k") == "db0");
  CHECK(eventually([&] { return metric(env, "redis_sidecar_cache_hits_total") == hits + 1; }));
}

// PFCOUNT, a read for Redis' command table, stores the cardinality it computed in the
// HyperLogLog's header: the key's bytes change, and a copy L1 holds must not outlive that.
TEST_CASE("ttl mode: PFCOUNT invalidates the HyperLogLog's L1 entry", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  auto c = env.client();
  auto direct = env.upstream();
  REQUIRE(integer(c.get(), {"PFADD", "t:hll", "a", "b", "c"}) == 1);
  const std::string before = get(c.get(), "t:hll");  // fills L1: the cardinality not yet cached
  REQUIRE(get(c.get(), "t:hll") == before);
  REQUIRE(integer(c.get(), {"PFCOUNT", "t:hll"}) == 3);
  const std::string after = get(direct.get(), "t:hll");
  REQUIRE(after != before);  // Redis rewrote the header
  CHECK(get(c.get(), "t:hll") == after);
}

TEST_CASE("ttl mode: staleness stays within --cache-ttl", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=300ms"}));
  REQUIRE(mode_is(env, "ttl"));
  auto writer = env.upstream();
  auto reader = env.client();
  REQUIRE(str(writer.get(), {"SET", "t:k", "0"}) == "OK");
  REQUIRE(str(writer.get(), {"SET", "other", "0"}) == "OK");
  int stale_reads = 0;
  for (int version = 1; version <= 5; ++version) {
    REQUIRE(get(reader.get(), "t:k") == std::to_string(version - 1));
    REQUIRE(get(reader.get(), "other") == std::to_string(version - 1));
    REQUIRE(str(writer.get(), {"SET", "t:k", std::to_string(version)}) == "OK");
    REQUIRE(str(writer.get(), {"SET", "other", std::to_string(version)}) == "OK");
    const auto acked = clock_type::now();
    CHECK(get(reader.get(), "other") == std::to_string(version));  // no prefix: never cached
    // The entry was filled before the write, so it is gone --cache-ttl after the write at latest.
    for (;;) {
      const auto started = clock_type::now();
      const std::string got = get(reader.get(), "t:k");
      if (got == std::to_string(version)) break;
      ++stale_reads;
      REQUIRE(started - acked < std::chrono::milliseconds(300));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  CHECK(stale_reads > 0);  // ttl mode really served from L1 (bounded staleness, as documented)
  // Writes through the sidecar invalidate at once.
  auto c = env.client();
  REQUIRE(get(c.get(), "t:k") == "5");
  REQUIRE(str(c.get(), {"SET", "t:k", "6"}) == "OK");
  CHECK(get(c.get(), "t:k") == "6");
}

// A key's own expiry is no write anybody announces: ttl mode reads each value with its server TTL
// and serves it no longer, whether the TTL was set on Redis directly or through the sidecar.
TEST_CASE("ttl mode: keys are not served past their expiry on Redis", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  REQUIRE(logged(env, "cache read connection ready"));
  auto c = env.client();
  auto up = env.upstream();
  const std::vector<std::string> keys = {"t:direct", "t:expire", "t:getex"};
  REQUIRE(str(up.get(), {"SET", "t:direct", "v", "PX", "2000"}) == "OK");
  REQUIRE(str(c.get(), {"SET", "t:expire", "v"}) == "OK");
  REQUIRE(integer(c.get(), {"PEXPIRE", "t:expire", "2000"}) == 1);
  REQUIRE(str(c.get(), {"SET", "t:getex", "v"}) == "OK");
  REQUIRE(str(c.get(), {"GETEX", "t:getex", "PX", "2000"}) == "v");
  const double hits = metric(env, "redis_sidecar_cache_hits_total");
  for (const auto& k : keys) {
    CHECK(get(c.get(), k) == "v");  // read with its TTL
    CHECK(get(c.get(), k) == "v");  // from L1
  }
  CHECK(eventually([&] { return metric(env, "redis_sidecar_cache_hits_total") >= hits + 3; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2300));
  for (const auto& k : keys) CHECK(get(c.get(), k) == "(nil)");
}

// Keys read in their last millisecond: Redis answers PTTL 0 for a key that still exists with less
// than a millisecond left, which L1 must not take for "no expiry". Each key is set with PX 1
// directly while the sidecar reads it, so that some of the reads land in that millisecond (about
// one in twenty here); none may be served after it.
TEST_CASE("ttl mode: a key read in its last millisecond is not kept", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s"}));
  REQUIRE(mode_is(env, "ttl"));
  REQUIRE(logged(env, "cache read connection ready"));
  auto c = env.client();
  auto up = env.upstream();
  constexpr int keys = 400;
  int read_alive = 0;
  for (int i = 0; i < keys; ++i) {
    const std::string k = "t:short:" + std::to_string(i);
    REQUIRE(send_only(up.get(), {"SET", k, "v", "PX", "1"}));
    REQUIRE(send_only(c.get(), {"GET", k}));
    REQUIRE(next_reply(up.get()));
    auto r = next_reply(c.get());
    REQUIRE(r);
    if (r->type == REDIS_REPLY_STRING) ++read_alive;
  }
  WARN(read_alive << " of " << keys << " GETs read the key before it expired");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  int served = 0;
  for (int i = 0; i < keys; ++i)
    if (get(c.get(), "t:short:" + std::to_string(i)) != "(nil)") ++served;
  CHECK(served == 0);
}

// A reply that comes late: Redis runs the request, then another client's 300 ms script, and only
// then writes the reply (Redis is paused while both arrive, so it reads them in one go, the
// sidecar's first). The value's expiry in L1 counts from when the read or the SET went out, never
// from the reply, so L1 does not keep it past its expiry on Redis.
TEST_CASE("ttl mode: a late reply does not stretch a key's expiry", "[near][ttl]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=60s",
                        "--health-probe-timeout-ms=2000", "--fallback-after-ms=5000"}));
  REQUIRE(mode_is(env, "ttl"));
  REQUIRE(logged(env, "cache read connection ready"));
  auto c = env.client();
  auto up = env.upstream();
  auto busy = env.upstream();
  const std::string spin =
      "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
      "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - s > 300000 return 1";
  for (const bool by_set : {false, true}) {
    INFO((by_set ? "SET PX through the sidecar" : "GET of a key set directly"));
    const std::string key = by_set ? "t:set" : "t:read";
    if (!by_set) REQUIRE(str(up.get(), {"SET", key, "v", "PX", "400"}) == "OK");
    env.redis.pause();
    if (by_set)
      REQUIRE(send_only(c.get(), {"SET", key, "v", "PX", "400"}));
    else
      REQUIRE(send_only(c.get(), {"GET", key}));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the sidecar sent it
    REQUIRE(send_only(busy.get(), {"EVAL", spin, "0"}));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    env.redis.resume();
    auto r = next_reply(c.get());
    REQUIRE(r);
    CHECK(describe(r.get()) == (by_set ? "status OK" : "string v"));
    REQUIRE(next_reply(busy.get()));
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // past its expiry on Redis
    CHECK(integer(up.get(), {"EXISTS", key}) == 0);
    CHECK(get(c.get(), key) == "(nil)");
  }
}

// An ACL user without transactions cannot run ttl mode's reads: the sidecar finds out before any
// client depends on them, and keeps serving as ttl mode did without them.
TEST_CASE("ttl mode with an ACL user refused MULTI: GETs work, values are hits without their TTL",
          "[near][ttl][auth]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.acl = {"user app on >app-secret-52d ~t:* &* +@all -@transaction"};
  redis_server redis(opts);
  sidecar side(with(
      {"--upstream", redis.url("app", "app-secret-52d"), "--cache-mode=ttl", "--cache-prefix=t:"}));
  REQUIRE(side.running());
  REQUIRE(eventually(
      [&] { return side.log().find("refuses the read transaction") != std::string::npos; }));
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  REQUIRE(str(up.get(), {"SET", "t:k", "v"}) == "OK");
  const int gets = cmdstat_calls(up.get(), "get");
  auto c = connect(side.port());
  CHECK(get(c.get(), "t:k") == "v");  // from the upstream
  CHECK(get(c.get(), "t:k") == "v");  // from L1
  CHECK(cmdstat_calls(up.get(), "get") == gets + 1);
  CHECK(cmdstat_calls(up.get(), "exec") <= 0);
}

// Tracking allowed but not the read transaction (an ACL user without PTTL): every miss would be
// refused where Redis answers a plain GET, so tracking (and keyspace) are given up at start-up.
TEST_CASE("auto mode: an ACL user refused PTTL gets no tracking mode, and its GETs work",
          "[near][auto][auth]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.acl = {"user app on >app-secret-61f ~* &* +@all -pttl"};
  redis_server redis(opts);
  sidecar side(with({"--upstream", redis.url("app", "app-secret-61f")}));
  REQUIRE(side.running());
  REQUIRE(eventually(
      [&] { return side.log().find("refuses the read transaction") != std::string::npos; }));
  REQUIRE(eventually([&] { return side.log().find("cache mode fallback") != std::string::npos; }));
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  REQUIRE(str(up.get(), {"SET", "k", "v"}) == "OK");
  auto c = connect(side.port());
  CHECK(get(c.get(), "k") == "v");
  CHECK(get(c.get(), "k") == "v");
}

TEST_CASE("auto mode: tracking on Redis 7, the next mode when tracking is refused",
          "[near][auto]") {
  SIDECAR_ONLY();
  redis_options refuse;
  refuse.acl = {"user default on nopass ~* &* +@all -client|tracking"};
  SECTION("tracking allowed") {
    proxied env({}, with({}));
    CHECK(mode_is(env, "tracking"));
  }
  SECTION("until the upstream answers, the mode metric names no coherent mode") {
    redis_server redis;
    redis.pause();  // the sidecar starts, its channel cannot: auto mode has not chosen yet
    sidecar side({"--upstream", redis.url(), "--health-probe-interval-ms=20"});
    REQUIRE(side.running());
    const auto mode = [&](const std::string& m) {
      const std::string text = http_get(side.metrics_port(), "/metrics").body;
      return text.find("\nredis_sidecar_cache_mode{mode=\"" + m + "\"} 1\n") != std::string::npos;
    };
    CHECK(mode("fallback"));
    CHECK_FALSE(mode("tracking"));
    redis.resume();
    CHECK(eventually([&] { return mode("tracking"); }));
  }
  SECTION("tracking refused, prefixes set: ttl") {
    proxied env(refuse, with({"--cache-prefix=user:"}));
    CHECK(mode_is(env, "ttl"));
    CHECK(env.side->log().find("CLIENT TRACKING refused") != std::string::npos);
  }
  SECTION("tracking refused, no prefixes: fallback") {
    proxied env(refuse, with({}));
    // The log first: before auto mode chooses, the metric says fallback too.
    CHECK(logged(env, "cache mode fallback"));
    CHECK(mode_is(env, "fallback"));
    auto c = env.client();
    CHECK(str(c.get(), {"SET", "k", "v"}) == "OK");
    CHECK(get(c.get(), "k") == "v");
  }
}

// Redis restarted with its data answers -LOADING until the data is in memory, and its
// connections are accepted meanwhile: the channel, back first, must wait for it, not take the
// errors for a refusal and give its mode up (tracking would settle on fallback for good, ttl mode
// would serve values past their server TTL).
TEST_CASE("an upstream restart that loads its data for seconds keeps tracking and ttl modes",
          "[near][tracking][ttl]") {
  SIDECAR_ONLY();
  redis_options opts;
  // Slow loading (1 ms per key), events served between keys; the dump is written with SAVE.
  opts.extra = {"key-load-delay 1000", "loading-process-events-interval-bytes 1024"};
  redis_server redis(opts);
  {
    auto up = context_ptr{redis.connect_direct()};
    REQUIRE(up);
    for (int i = 0; i < 2500; ++i)
      REQUIRE(send_only(up.get(), {"SET", "pad:" + std::to_string(i), "x"}));
    for (int i = 0; i < 2500; ++i) REQUIRE(next_reply(up.get()));
    REQUIRE(str(up.get(), {"SAVE"}) == "OK");
  }
  const bool tracking = GENERATE(true, false);
  INFO((tracking ? "tracking" : "ttl") << " mode");
  const std::string ready = tracking ? "invalidation channel ready" : "read connection ready";
  sidecar side(with({"--upstream", redis.url(), "--cache-prefix=t:",
                     tracking ? "--cache-mode=tracking" : "--cache-mode=ttl"}));
  REQUIRE(side.running());
  REQUIRE(eventually([&] { return count(side.log(), ready) == 1; }));
  redis.kill();
  redis.start();  // returns once PING is answered: loading is over
  INFO("sidecar log:\n" << side.log());
  CHECK(side.log().find("cannot set it up yet (LOADING") != std::string::npos);
  REQUIRE(eventually([&] { return count(side.log(), ready) == 2; }));
  const std::string metrics = http_get(side.metrics_port(), "/metrics").body;
  CHECK(metrics.find(std::string("\nredis_sidecar_cache_mode{mode=\"") +
                     (tracking ? "tracking" : "ttl") + "\"} 1\n") != std::string::npos);
  CHECK(side.log().find("refuses the read transaction") == std::string::npos);
  // Hits again, each with the key's server TTL.
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(str(up.get(), {"SET", "t:k", "v", "PX", "600000"}) == "OK");
  auto c = connect(side.port());
  REQUIRE(c);
  REQUIRE(eventually([&] { return get(c.get(), "t:k") == "v"; }));  // out of fallback
  const int gets = cmdstat_calls(up.get(), "get");
  CHECK(get(c.get(), "t:k") == "v");
  CHECK(cmdstat_calls(up.get(), "get") == gets);  // a hit
  CHECK(integer(c.get(), {"PTTL", "t:k"}) > 500000);
}

TEST_CASE("single flight: 100 concurrent misses on one key make one upstream read",
          "[near][tracking]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto up = env.upstream();
  REQUIRE(str(up.get(), {"SET", "hot", "value"}) == "OK");
  REQUIRE(str(up.get(), {"CONFIG", "RESETSTAT"}) == "OK");
  std::vector<context_ptr> clients;
  for (int i = 0; i < 100; ++i) clients.push_back(env.client());
  for (auto& c : clients) REQUIRE(send_only(c.get(), {"GET", "hot"}));
  for (auto& c : clients) {
    auto r = next_reply(c.get());
    REQUIRE(r);
    CHECK(std::string(r->str, r->len) == "value");
  }
  const std::string stats = str(up.get(), {"INFO", "commandstats"});
  INFO(stats << "\nsidecar log:\n" << env.side->log());
  CHECK(stats.find("cmdstat_get:calls=1,") != std::string::npos);
  // A key of another type: the upstream's error, not a nil.
  REQUIRE(integer(up.get(), {"LPUSH", "list", "x"}) == 1);
  CHECK(error_of(clients[0].get(), {"GET", "list"}).rfind("WRONGTYPE", 0) == 0);
  CHECK(is_nil(clients[0].get(), {"GET", "missing"}));
}

// A key the channel read is invalidated by the next write to it, the sidecar's own SET too, whose
// invalidation comes after its reply: the value that SET stored must stay for fallback. 100 keys
// written, read, written again; Redis stopped; fallback serves the second values.
TEST_CASE("tracking: a SET of a key the channel read keeps its value for fallback",
          "[near][tracking][fallback]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto c = env.client();
  for (int i = 0; i < 100; ++i) {
    const std::string k = "k" + std::to_string(i);
    REQUIRE(str(c.get(), {"SET", k, "old"}) == "OK");
    REQUIRE(get(c.get(), k) == "old");  // read on the channel: tracked
    REQUIRE(str(c.get(), {"SET", k, "new" + std::to_string(i)}) == "OK");
  }
  // Every invalidation has come once Redis answers a read of the channel after them.
  REQUIRE(get(c.get(), "flush-marker") == "(nil)");
  env.redis.pause();
  REQUIRE(eventually([&] { return metric(env, "redis_sidecar_fallback_active") == 1; }));
  c = env.client();
  int served = 0;
  for (int i = 0; i < 100; ++i)
    served += get(c.get(), "k" + std::to_string(i)) == "new" + std::to_string(i) ? 1 : 0;
  CHECK(served == 100);
  env.redis.resume();
}

// SORT ... STORE and GEORADIUS ... STORE write a key that is not their first: a GET pipelined
// behind one must wait for it, though another client's read refills L1 with the old value while
// Redis holds the write back (CLIENT PAUSE WRITE lets reads run).
TEST_CASE("tracking: a GET pipelined behind SORT ... STORE of its key reads what the write left",
          "[near][tracking]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto direct = env.upstream();
  struct variant {
    std::vector<std::string> write;
    std::string want;  // the write's reply, then the GET's
  };
  const std::vector<variant> variants = {
      {{"SORT", "nosuchlist", "STORE", "k"}, ":0\r\n$-1\r\n"},
      {{"SORT", "src", "STORE", "k"}, ":3\r\n-WRONGTYPE"},
      {{"GEORADIUS", "geo", "13.36", "38.11", "10", "km", "STORE", "k"}, ":1\r\n-WRONGTYPE"},
  };
  for (const auto& v : variants) {
    INFO(v.write.at(0) << " " << v.write.at(1));
    CHECK(integer(direct.get(), {"DEL", "src", "geo", "k"}) >= 0);
    CHECK(integer(direct.get(), {"RPUSH", "src", "3", "1", "2"}) == 3);
    CHECK(integer(direct.get(), {"GEOADD", "geo", "13.36", "38.11", "p"}) == 1);
    CHECK(str(direct.get(), {"SET", "k", "old"}) == "OK");
    auto other = env.client();
    REQUIRE(get(other.get(), "k") == "old");
    raw_client c(env.side->port());
    REQUIRE(str(direct.get(), {"CLIENT", "PAUSE", "2000", "WRITE"}) == "OK");
    c.send(resp_array(v.write));
    REQUIRE(eventually([&] { return blocked_clients(env) == 1; }));  // held back by the pause
    // Another client's read fills L1 with the old value again.
    CHECK(get(other.get(), "k") == "old");
    c.send(resp_array({"GET", "k"}));
    CHECK(str(direct.get(), {"CLIENT", "UNPAUSE"}) == "OK");
    CHECK(c.read_exact(v.want.size()).substr(0, v.want.size()) == v.want);
    c.read_some();
  }
}

TEST_CASE("tracking: a client reads its own writes while other clients keep misses in flight",
          "[near][tracking]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  // Readers keep a read of "hot" in flight on the channel most of the time; each write through
  // the sidecar must not be answered, for its writer, by a read that started before it.
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&env, &stop] {
      auto c = env.client();
      while (!stop) command(c.get(), {"GET", "hot"});
    });
  }
  auto writer = env.client();
  int mismatches = 0;
  std::string first;
  for (int i = 1; i <= 2000; ++i) {
    const std::string v = std::to_string(i);
    REQUIRE(str(writer.get(), {"SET", "hot", v}) == "OK");
    const std::string got = get(writer.get(), "hot");
    if (got != v && mismatches++ == 0) first = "wrote " + v + ", read " + got;
  }
  stop = true;
  for (auto& t : readers) t.join();
  INFO(first);
  CHECK(mismatches == 0);
}

TEST_CASE(
    "tracking: the misses of one pipeline share transactions; each key keeps its value, "
    "error and server TTL",
    "[near][tracking]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.extra = {"enable-debug-command yes"};
  proxied env(opts, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto up = env.upstream();
  // Without active expiry a key Redis holds past its TTL sends no invalidation until it is read:
  // only the server TTL read with the value ends the L1 entry in time.
  REQUIRE(str(up.get(), {"DEBUG", "SET-ACTIVE-EXPIRE", "0"}) == "OK");
  // key i: i % 3 == 0 no TTL, 1 a 3 s TTL (long enough for the first reads on a loaded machine), 2
  // absent; one list in the middle (WRONGTYPE).
  const int n = 600;
  std::vector<std::string> keys;
  for (int i = 0; i < n; ++i) {
    keys.push_back("k" + std::to_string(i));
    if (i == n / 2) keys.push_back("list");
  }
  REQUIRE(integer(up.get(), {"RPUSH", "list", "x"}) == 1);
  for (int i = 0; i < n; ++i) {
    const std::string k = "k" + std::to_string(i), v = "v" + std::to_string(i);
    if (i % 3 == 0) REQUIRE(str(up.get(), {"SET", k, v}) == "OK");
    if (i % 3 == 1) REQUIRE(str(up.get(), {"SET", k, v, "PX", "3000"}) == "OK");
  }
  const auto expected = [](const std::string& key, bool expired) -> std::string {
    if (key == "list") return "error WRONGTYPE";
    const int i = std::stoi(key.substr(1));
    if (i % 3 == 2 || (i % 3 == 1 && expired)) return "nil";
    return "string v" + std::to_string(i);
  };
  const auto read_all = [&](bool expired) {
    auto c = env.client();
    for (const auto& k : keys) queue_get(c.get(), k);
    int wrong = 0;
    std::string first;
    for (const auto& k : keys) {
      const std::string got = shape(next_reply(c.get()).get());
      if (got != expected(k, expired) && wrong++ == 0)
        first = "GET " + k + ": " + got + ", expected " + expected(k, expired);
    }
    INFO(first);
    CHECK(wrong == 0);
  };
  const auto calls = [&](const std::string& command) { return cmdstat_calls(up.get(), command); };

  REQUIRE(str(up.get(), {"CONFIG", "RESETSTAT"}) == "OK");
  read_all(false);
  INFO("sidecar log:\n" << env.side->log());
  CHECK(calls("get") == n + 1);          // each key read once
  CHECK(calls("exec") < (n + 1) / 4);    // one transaction per miss before batching
  CHECK(calls("exec") >= (n + 1) / 64);  // at most 64 keys per transaction

  std::this_thread::sleep_for(std::chrono::milliseconds(3200));
  REQUIRE(str(up.get(), {"CONFIG", "RESETSTAT"}) == "OK");
  read_all(true);
  // Keys without a TTL and absent keys are L1 hits; expired keys and the list are read again.
  CHECK(calls("get") == n / 3 + 1);
}

TEST_CASE(
    "tracking with an ACL user: a key Redis refuses gets NOPERM, the other misses of its "
    "transaction their values",
    "[near][tracking][auth]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.acl = {"user app on >app-secret-51c ~app:* &* +@all -@dangerous"};
  redis_server redis(opts);
  sidecar side_process(with({"--upstream", redis.url("app", "app-secret-51c")}));
  auto* side = &side_process;
  REQUIRE(eventually([&] { return side->log().find("cache mode tracking") != std::string::npos; }));
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  for (int i = 0; i < 20; ++i)
    REQUIRE(str(up.get(), {"SET", "app:" + std::to_string(i), "v" + std::to_string(i)}) == "OK");
  REQUIRE(str(up.get(), {"SET", "other:1", "secret"}) == "OK");
  auto c = connect(side->port());
  for (int round = 0; round < 2; ++round) {  // misses, then hits (other:1 is never cached)
    for (int i = 0; i < 20; ++i) {           // written together: one transaction upstream
      queue_get(c.get(), "app:" + std::to_string(i));
      if (i == 10) queue_get(c.get(), "other:1");
    }
    for (int i = 0; i < 20; ++i) {
      auto r = next_reply(c.get());
      CHECK(describe(r.get()) == "string v" + std::to_string(i));
      if (i == 10) {
        auto e = next_reply(c.get());
        CHECK(describe(e.get()).starts_with("error NOPERM"));
      }
    }
  }
  CHECK(error_of(c.get(), {"GET", "other:1"}).starts_with("NOPERM"));
  CHECK(str(c.get(), {"GET", "app:3"}) == "v3");
  // The refused key did abort a shared transaction (the path under test).
  const std::string errors = str(up.get(), {"INFO", "errorstats"});
  INFO(errors);
  CHECK(errors.find("errorstat_EXECABORT:count=") != std::string::npos);
}

TEST_CASE(
    "tracking on a cluster node: misses of keys in many hash slots are read one per "
    "transaction",
    "[near][tracking]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.extra = {"cluster-enabled yes"};
  redis_server redis(opts);
  auto up = context_ptr{redis.connect_direct()};
  REQUIRE(up);
  REQUIRE(str(up.get(), {"CLUSTER", "ADDSLOTSRANGE", "0", "16383"}) == "OK");
  REQUIRE(eventually([&] {
    return str(up.get(), {"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos;
  }));
  for (int i = 0; i < 50; ++i)
    REQUIRE(str(up.get(), {"SET", "c" + std::to_string(i), "v" + std::to_string(i)}) == "OK");
  sidecar side(with({"--upstream", redis.url()}));
  REQUIRE(eventually([&] { return side.log().find("cache mode tracking") != std::string::npos; }));
  auto c = connect(side.port());
  for (int round = 0; round < 3; ++round) {  // all misses, then hits
    for (int i = 0; i < 50; ++i)             // written together: the same turn, one batch at first
      queue_get(c.get(), "c" + std::to_string(i));
    int wrong = 0;
    for (int i = 0; i < 50; ++i)
      if (describe(next_reply(c.get()).get()) != "string v" + std::to_string(i)) ++wrong;
    CHECK(wrong == 0);
  }
  CHECK(side.log().find("one key per transaction") != std::string::npos);
}

// The near cache reads misses as CLIENT CACHING YES, MULTI, (PTTL, GET) x n, EXEC, and a batch of
// long keys spans more than one write of its connection. A command of the sidecar's own between
// two of them (a role check once did) would be queued inside the transaction, failing every GET
// of the batch, or would take the one-shot CACHING YES, leaving the batch's keys untracked and
// L1's values stale until --cache-ttl. Seconds of such batches: every reply right, every key
// created afterwards on Redis seen.
TEST_CASE("tracking: read batches longer than one write stay whole", "[near][tracking]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto up = env.upstream();
  auto c = env.client();
  constexpr int keys = 600;
  const auto key = [](int i) { return "batch:" + std::to_string(i) + ":" + std::string(200, 'x'); };
  // One pipeline of `verb key [value]` for every key; the replies, each as shape() gives it.
  const auto all = [&](redisContext* ctx, const char* verb, const std::string& value) {
    for (int i = 0; i < keys; ++i) {
      const std::string k = key(i);
      const char* argv[] = {verb, k.c_str(), value.c_str()};
      REQUIRE(redisAppendCommandArgv(ctx, value.empty() ? 2 : 3, argv, nullptr) == REDIS_OK);
    }
    std::vector<std::string> shapes;
    for (int i = 0; i < keys; ++i) {
      void* raw = nullptr;
      REQUIRE(redisGetReply(ctx, &raw) == REDIS_OK);
      reply_ptr r{static_cast<redisReply*>(raw)};
      shapes.push_back(shape(r.get()));
    }
    return shapes;
  };
  // Rounds of new values written on Redis directly, then read through the sidecar (misses, read
  // in batches, then hits) until every key shows its new value.
  int rounds = 0, errors = 0;
  std::string first_error;
  bool converged = true;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (converged && std::chrono::steady_clock::now() < until) {
    const std::string value = "v" + std::to_string(++rounds);
    all(up.get(), "SET", value);
    converged = eventually([&] {
      int right = 0;
      for (const auto& got : all(c.get(), "GET", "")) {
        if (got == "string " + value) ++right;
        if (got.starts_with("error") && errors++ == 0) first_error = got;
      }
      return right == keys;
    });
  }
  INFO(rounds << " rounds; first error: " << first_error);
  CHECK(converged);
  CHECK(errors == 0);
}

TEST_CASE("tracking: GET of an absent key is answered nil from L1 until anyone creates the key",
          "[near][tracking]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto up = env.upstream();
  auto c = env.client();
  const auto upstream_gets = [&] { return cmdstat_calls(up.get(), "get"); };
  REQUIRE(str(up.get(), {"CONFIG", "RESETSTAT"}) == "OK");
  for (int i = 0; i < 5; ++i) CHECK(is_nil(c.get(), {"GET", "absent"}));
  CHECK(upstream_gets() == 1);  // read once, then L1 hits
  raw_client resp3(env.side->port());
  resp3.send("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
  CHECK(resp3.read_some().starts_with("%"));
  resp3.send("*2\r\n$3\r\nGET\r\n$6\r\nabsent\r\n");
  CHECK(resp3.read_exact(3) == "_\r\n");  // a hit in the client's protocol
  CHECK(upstream_gets() == 1);

  // Created directly on Redis, by commands of every kind (no --cache-ttl would end these within
  // the wait: the default is 300 s): the invalidation ends the nil.
  const auto converges = [&](const std::string& expected) {
    return eventually([&] { return shape(command(c.get(), {"GET", "absent"}).get()) == expected; });
  };
  REQUIRE(integer(up.get(), {"RPUSH", "absent", "x"}) == 1);
  CHECK(converges("error WRONGTYPE"));
  REQUIRE(integer(up.get(), {"DEL", "absent"}) == 1);
  CHECK(converges("nil"));
  REQUIRE(str(up.get(), {"SET", "absent", "now"}) == "OK");
  CHECK(converges("string now"));
  REQUIRE(integer(up.get(), {"DEL", "absent"}) == 1);
  CHECK(converges("nil"));
  REQUIRE(integer(up.get(), {"INCR", "absent"}) == 1);
  CHECK(converges("string 1"));
  REQUIRE(integer(up.get(), {"DEL", "absent"}) == 1);
  CHECK(converges("nil"));
  REQUIRE(str(up.get(), {"SET", "other", "moved"}) == "OK");
  REQUIRE(str(up.get(), {"RENAME", "other", "absent"}) == "OK");
  CHECK(converges("string moved"));
}

TEST_CASE("tracking: a client reads back what its script wrote to keys it did not declare",
          "[near][tracking]") {
  // Redis (outside a cluster) lets a script write keys it did not declare; only the invalidation
  // pushed on the channel tells the sidecar, and it may still be on its way when the script's
  // reply is.
  SIDECAR_ONLY();
  proxied env({}, with({}));
  REQUIRE(mode_is(env, "tracking"));
  auto c = env.client();
  const std::string script = "return redis.call('SET', ARGV[1], ARGV[2])";
  int stale = 0, stale_absent = 0;
  for (int i = 0; i < 1500; ++i) {
    const std::string k = "k" + std::to_string(i), a = "a" + std::to_string(i);
    REQUIRE(str(c.get(), {"SET", k, "old"}) == "OK");
    get(c.get(), k);  // read on the channel
    get(c.get(), k);  // an L1 hit
    REQUIRE(str(c.get(), {"EVAL", script, "0", k, "new"}) == "OK");
    if (get(c.get(), k) != "new") ++stale;
    get(c.get(), a);  // absent: read on the channel
    get(c.get(), a);  // an L1 hit (nil)
    REQUIRE(str(c.get(), {"EVAL", script, "0", a, "x"}) == "OK");
    if (get(c.get(), a) != "x") ++stale_absent;
  }
  CHECK(stale == 0);
  CHECK(stale_absent == 0);
  // L1 still answers in between (the counters are published at the health probe's pace).
  CHECK(eventually([&] { return metric(env, "redis_sidecar_cache_hits_total") >= 3000; }));
}

TEST_CASE("tracking with CLIENT CACHING refused: nothing read is kept as fresh",
          "[near][tracking]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.acl = {"user default on nopass ~* &* +@all -client|caching"};
  proxied env(opts, with({}));
  REQUIRE(mode_is(env, "tracking"));  // CLIENT TRACKING ON OPTIN itself is allowed
  auto up = env.upstream();
  auto c = env.client();
  REQUIRE(str(up.get(), {"SET", "k", "v1"}) == "OK");
  CHECK(get(c.get(), "k") == "v1");
  CHECK(get(c.get(), "k") == "v1");
  // Redis tracks nothing for the sidecar, so no invalidation follows this write: only an L1 that
  // kept nothing reads it.
  REQUIRE(str(up.get(), {"SET", "k", "v2"}) == "OK");
  CHECK(get(c.get(), "k") == "v2");
  CHECK(get(c.get(), "absent") == "(nil)");
  REQUIRE(str(up.get(), {"SET", "absent", "now"}) == "OK");
  CHECK(get(c.get(), "absent") == "now");
  CHECK(logged(env, "CLIENT CACHING YES refused"));
}

}  // namespace redis_sidecar::test
