// Fallback: when the upstream dies or stalls, GET/SET keep working from the sidecar's L1 tier,
// writes are journaled and replayed in order when the upstream returns, and everything else fails
// at once with one clear error. Real redis-server processes, killed, stopped and restarted.
#include <signal.h>

#include <chrono>
#include <thread>

#include "tests/integration/common.hpp"

namespace redis_sidecar::test {
namespace {

// Fast detection so the suite stays quick; the defaults are exercised by the last test.
const std::vector<std::string> quick = {"--fallback-after-ms=200", "--health-probe-interval-ms=50",
                                        "--health-probe-timeout-ms=200", "--connect-timeout-ms=300",
                                        "--reconnect-max-ms=200"};

std::vector<std::string> with(std::vector<std::string> extra) {
  std::vector<std::string> out = quick;
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::string reply_text(redisContext* c, const std::vector<std::string>& argv) {
  auto r = command(c, argv);
  if (!r) return "(no reply)";
  return describe(r.get());
}

// Waits until the sidecar answers `argv` from L1 as `expected` (it is in fallback mode).
bool in_fallback(const proxied& env, const std::vector<std::string>& argv,
                 const std::string& expected) {
  std::string last;
  const bool ok = eventually([&] {
    auto c = connect(env.port());
    last = c ? reply_text(c.get(), argv) : "(no connection)";
    return last == expected;
  });
  if (!ok) UNSCOPED_INFO("last reply: " << last << "\nsidecar log:\n" << env.side->log());
  return ok;
}

std::string unavailable(std::string_view command) {
  return std::string(errors::fallback_not_servable_prefix) + std::string(command) +
         std::string(errors::fallback_not_servable_suffix);
}

}  // namespace

TEST_CASE("upstream killed: L1 serves GET/SET, writes replay in order on restart", "[fallback]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  auto c = env.client();
  auto up = env.upstream();
  CHECK(str(c.get(), {"SET", "a", "1"}) == "OK");
  CHECK(str(up.get(), {"SET", "filled", "from-upstream"}) == "OK");
  CHECK(str(c.get(), {"GET", "filled"}) == "from-upstream");  // fills L1
  CHECK(str(c.get(), {"SET", "n", "41", "EX", "1000"}) == "OK");
  CHECK(str(c.get(), {"SET", "gone", "x"}) == "OK");
  CHECK(integer(c.get(), {"DEL", "gone"}) == 1);  // invalidates L1

  env.redis.kill();
  REQUIRE(in_fallback(env, {"GET", "a"}, "string 1"));
  c = env.client();
  CHECK(str(c.get(), {"GET", "filled"}) == "from-upstream");
  CHECK(is_nil(c.get(), {"GET", "gone"}));
  CHECK(is_nil(c.get(), {"GET", "never-seen"}));
  CHECK(str(c.get(), {"PING"}) == "PONG");
  // The journal, in this order: each later write depends on the one before.
  CHECK(str(c.get(), {"SET", "k", "1"}) == "OK");
  CHECK(integer(c.get(), {"INCRBY", "k", "10"}) == 11);
  CHECK(str(c.get(), {"SET", "k", "7"}) == "OK");
  CHECK(integer(c.get(), {"INCR", "k"}) == 8);
  CHECK(integer(c.get(), {"INCR", "n"}) == 42);
  CHECK(integer(c.get(), {"TTL", "n"}) > 900);
  CHECK(str(c.get(), {"SET", "t", "v", "EX", "1000"}) == "OK");
  CHECK(str(c.get(), {"MSET", "m1", "x", "m2", "y"}) == "OK");
  CHECK(integer(c.get(), {"DEL", "m2"}) == 1);
  CHECK(integer(c.get(), {"EXISTS", "m1", "m2", "k"}) == 2);
  const std::string unavailable_count =
      R"(redis_sidecar_errors_total{kind="upstream_unavailable"})";
  const double unavailable_before = metric(env, unavailable_count);
  CHECK(error_of(c.get(), {"HGETALL", "h"}) == unavailable("hgetall"));
  CHECK(error_of(c.get(), {"LPUSH", "l", "x"}) == unavailable("lpush"));
  // Counted as errors (the dashboard's errors panel stayed empty while clients got them).
  CHECK(eventually([&] { return metric(env, unavailable_count) == unavailable_before + 2; }));

  env.redis.start();  // empty: no persistence, so what it holds after recovery came from replay
  REQUIRE(eventually([&] {
    auto u = env.upstream();
    auto r = command(u.get(), {"GET", "k"});
    return r && r->type == REDIS_REPLY_STRING && std::string(r->str, r->len) == "8";
  }));
  up = env.upstream();
  // INCR is replayed as INCR: the restarted upstream lost n, so its count starts again.
  CHECK(str(up.get(), {"GET", "n"}) == "1");
  CHECK(integer(up.get(), {"TTL", "t"}) > 900);
  CHECK(str(up.get(), {"GET", "m1"}) == "x");
  CHECK(is_nil(up.get(), {"GET", "m2"}));
  // Back in normal operation: reads go to the upstream again (which never had "a" after restart).
  REQUIRE(eventually([&] {
    auto cc = connect(env.port());
    return cc && reply_text(cc.get(), {"HSET", "h", "f", "v"}) == "integer 1";
  }));
  c = env.client();
  CHECK(is_nil(c.get(), {"GET", "a"}));
  CHECK(str(c.get(), {"GET", "k"}) == "8");
  const std::string log = env.side->log();
  INFO(log);
  CHECK(log.find("healthy -> failing") != std::string::npos);
  CHECK(log.find("failing -> fallback") != std::string::npos);
  CHECK(log.find("fallback -> recovering") != std::string::npos);
  CHECK(log.find("recovering -> healthy: fallback journal replayed") != std::string::npos);
}

// The upstream comes back refusing writes for now: as a replica (-READONLY, the old primary after
// a failover) or full (-OOM). Such a reply does not answer a replayed write: it stays journaled,
// fallback goes on (L1 answering the acknowledged values) and the replay is tried again, with
// backoff, until the upstream takes it. Before, the replay took the error for an answer, dropped
// the journal and went healthy: every write acknowledged in fallback was lost.
TEST_CASE("a replay the upstream refuses for now (OOM) keeps the journal and is tried again",
          "[fallback]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "k", "v0"}) == "OK");
  env.redis.kill();
  REQUIRE(eventually([&] {
    auto cc = connect(env.port());
    return cc && reply_text(cc.get(), {"SET", "k", "v1"}) == "status OK";
  }));
  c = env.client();
  // Full, Redis refuses SET but runs DEL: the DEL of a key whose SET it refused must not run
  // before that SET does (k would exist at the end, though the client deleted it).
  CHECK(integer(c.get(), {"DEL", "k"}) == 1);
  CHECK(str(c.get(), {"SET", "other", "x"}) == "OK");
  // The sidecar is stopped while Redis comes back full, so that it replays to a full Redis.
  REQUIRE(::kill(env.side->pid(), SIGSTOP) == 0);
  env.redis.start();
  CHECK(redis_cli(env.redis, {"CONFIG", "SET", "maxmemory", "1"}) == "OK\n");
  REQUIRE(::kill(env.side->pid(), SIGCONT) == 0);
  std::string readyz;
  CHECK(eventually([&] {
    readyz = http_get(env.side->metrics_port(), "/readyz").body;
    return readyz.find("the upstream refuses its writes (OOM") != std::string::npos;
  }));
  INFO(readyz);
  c = env.client();
  CHECK(is_nil(c.get(), {"GET", "k"}));  // fallback: L1, with the journaled values
  CHECK(str(c.get(), {"GET", "other"}) == "x");
  CHECK(redis_cli(env.redis, {"GET", "other"}) == "\n");  // not replayed (Redis restarted empty)
  // Room again: the replay goes through, and the sidecar back to normal.
  CHECK(redis_cli(env.redis, {"CONFIG", "SET", "maxmemory", "0"}) == "OK\n");
  CHECK(eventually([&] { return redis_cli(env.redis, {"GET", "other"}) == "x\n"; }));
  CHECK(redis_cli(env.redis, {"EXISTS", "k"}) == "0\n");  // SET, then DEL: in order
  CHECK(eventually([&] {
    return http_get(env.side->metrics_port(), "/readyz").body.find("\"state\":\"healthy\"") !=
           std::string::npos;
  }));
}

// A journaled write the upstream's ACL refuses (NOPERM) is answered, not refused for now: the
// client would have had that error without the outage. It is logged and dropped, and the replay
// goes on: the writes behind it are applied once, and the sidecar is healthy again. (Taken for a
// refusal for now, it kept the sidecar in fallback for good and re-applied the INCR behind it at
// every retry.)
TEST_CASE("a replayed write the ACL refuses is answered: the writes behind it apply once",
          "[fallback][auth]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.requirepass = "admin-pass-77c";
  opts.acl = {"user app on >app-pass-77c ~app:* &* +@all -@dangerous"};
  redis_server redis(opts);
  sidecar side(with({"--upstream", redis.url("app", "app-pass-77c")}));
  REQUIRE(side.running());
  auto c = connect(side.port());
  REQUIRE(str(c.get(), {"SET", "app:c", "5"}) == "OK");
  redis.kill();
  CHECK(eventually([&] {
    auto cc = connect(side.port());
    return cc && reply_text(cc.get(), {"SET", "other:y", "1"}) == "status OK";  // journaled
  }));
  c = connect(side.port());
  CHECK(integer(c.get(), {"INCR", "app:c"}) == 6);
  redis.start();  // empty: the replayed INCR makes app:c 1, once
  CHECK(eventually([&] { return redis_cli(redis, {"GET", "app:c"}) == "1\n"; }));
  CHECK(eventually([&] {
    return http_get(side.metrics_port(), "/readyz").body.find("\"state\":\"healthy\"") !=
           std::string::npos;
  }));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // long enough for any retry to show
  CHECK(redis_cli(redis, {"GET", "app:c"}) == "1\n");
  CHECK(redis_cli(redis, {"EXISTS", "other:y"}) == "0\n");
  CHECK(side.log().find("the upstream refused a write: NOPERM") != std::string::npos);
}

// A relative expiry acknowledged in fallback counts from when the sidecar acknowledged it.
// Journaled as sent, the replay would start it again: keys the sidecar already answered as expired
// would come back on the upstream, for as long again. They are journaled as the times they fall at.
TEST_CASE("relative expiries written in fallback keep their times through the replay",
          "[fallback]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "marker", "m"}) == "OK");
  // The health probe has read the upstream's version (7.0: SET ... PXAT is journaled).
  REQUIRE(eventually(
      [&] { return env.side->log().find("connecting -> healthy") != std::string::npos; }));
  env.redis.kill();
  REQUIRE(in_fallback(env, {"GET", "marker"}, "string m"));
  c = env.client();
  const std::vector<std::string> expiring = {"set-ex", "set-px", "setex",
                                             "psetex", "expire", "pexpire"};
  CHECK(str(c.get(), {"SET", "set-ex", "v", "EX", "2"}) == "OK");
  CHECK(str(c.get(), {"SET", "set-px", "v", "PX", "2000"}) == "OK");
  CHECK(str(c.get(), {"SETEX", "setex", "2", "v"}) == "OK");
  CHECK(str(c.get(), {"PSETEX", "psetex", "2000", "v"}) == "OK");
  CHECK(str(c.get(), {"SET", "expire", "v"}) == "OK");
  CHECK(integer(c.get(), {"EXPIRE", "expire", "2"}) == 1);
  CHECK(str(c.get(), {"SET", "pexpire", "v"}) == "OK");
  CHECK(integer(c.get(), {"PEXPIRE", "pexpire", "2000"}) == 1);
  CHECK(str(c.get(), {"SET", "later", "v", "EX", "1000"}) == "OK");
  // The sidecar answers them as expired, 2 s on ...
  REQUIRE(eventually([&] {
    for (const auto& k : expiring)
      if (!is_nil(c.get(), {"GET", k})) return false;
    return true;
  }));
  CHECK(str(c.get(), {"GET", "later"}) == "v");
  // ... and so does the upstream once the journal is replayed (it restarts empty: everything it
  // holds came from the replay).
  env.redis.start();
  REQUIRE(eventually(
      [&] { return env.side->log().find("recovering -> healthy") != std::string::npos; }));
  auto up = env.upstream();
  for (const auto& k : expiring) {
    INFO(k);
    CHECK(integer(up.get(), {"EXISTS", k}) == 0);
  }
  CHECK(str(up.get(), {"GET", "later"}) == "v");
  CHECK(integer(up.get(), {"TTL", "later"}) > 900);
  CHECK(integer(up.get(), {"TTL", "later"}) <= 1000);
}

// The sidecar answers from L1 until the whole journal is replayed. Keys whose writes have been
// replayed are on the upstream already, but until the replay is done L1 still answers for them:
// it keeps their values until then, so they do not read as nil (or, with --fallback-miss=error,
// as errors) for the rest of the replay.
TEST_CASE("keys written in fallback stay readable through the sidecar while the journal replays",
          "[fallback]") {
  SIDECAR_ONLY();
  // GET answered from L1 in fallback only; the replay's deadline past the hold-up below.
  proxied env(
      {}, with({"--cache-mode=fallback", "--fallback-miss=error", "--command-timeout-ms=20000"}));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "marker", "m"}) == "OK");
  env.redis.pause();
  REQUIRE(in_fallback(env, {"GET", "marker"}, "string m"));
  c = env.client();
  constexpr int keys = 100;
  const auto key = [](int i) { return "key:" + std::to_string(i); };
  const auto value = [](int i) { return "value:" + std::to_string(i); };
  for (int i = 0; i < keys; ++i) REQUIRE(send_only(c.get(), {"SET", key(i), value(i)}));
  // Other writes after them, so that the replay goes on after theirs.
  constexpr int others = 50'000;
  for (int i = 0; i < others; ++i)
    REQUIRE(send_only(c.get(), {"SET", "fill:" + std::to_string(i), "x"}));
  int not_ok = 0;
  for (int i = 0; i < keys + others; ++i)
    if (describe(next_reply(c.get()).get()) != "status OK") ++not_ok;
  REQUIRE(not_ok == 0);
  env.redis.resume();
  // Once the upstream holds the last of the keys, hold the rest of the replay up: CLIENT PAUSE
  // WRITE stops the replayed writes, not the health probe's PING, so the sidecar stays in
  // `recovering`, answering from L1, until it ends.
  auto up = env.upstream();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (describe(command(up.get(), {"GET", key(keys - 1)}).get()) != "string " + value(keys - 1))
    REQUIRE(std::chrono::steady_clock::now() < deadline);
  CHECK(str(up.get(), {"CLIENT", "PAUSE", "3000", "WRITE"}) == "OK");
  const auto replay_done = [&] {
    return env.side->log().find("recovering -> healthy") != std::string::npos;
  };
  INFO("sidecar log:\n" << env.side->log());
  REQUIRE(env.side->log().find("fallback -> recovering") != std::string::npos);
  REQUIRE_FALSE(replay_done());
  for (int i = 0; i < keys; ++i)
    CHECK(reply_text(c.get(), {"GET", key(i)}) == "string " + value(i));
  CHECK_FALSE(replay_done());  // every read above was answered during the replay
  CHECK(str(up.get(), {"CLIENT", "UNPAUSE"}) == "OK");
  REQUIRE(eventually(replay_done));
  // Then from the upstream, which holds the same.
  for (int i = 0; i < keys; i += 10) CHECK(str(c.get(), {"GET", key(i)}) == value(i));
  CHECK(str(up.get(), {"GET", "fill:" + std::to_string(others - 1)}) == "x");
  // L1 let go of the kept values when the replay was done: a value changed on the upstream since
  // (not through the sidecar, not read through it) is not served from L1 in the next outage.
  CHECK(str(up.get(), {"SET", key(1), "changed"}) == "OK");
  env.redis.pause();
  const std::string miss = "error " + std::string(errors::fallback_miss);
  REQUIRE(in_fallback(env, {"GET", "never-written"}, miss));
  CHECK(reply_text(c.get(), {"GET", key(1)}) == miss);
  CHECK(reply_text(c.get(), {"GET", key(2)}) == miss);
  env.redis.resume();
}

// L1 keeps no entry larger than --cache-max-entry-bytes. A SET of one in fallback is still
// journaled and acknowledged (it reaches the upstream on recovery), but L1 cannot answer for the
// key meanwhile: GET misses (nil), and the key's older, smaller value is never served.
TEST_CASE("a SET larger than --cache-max-entry-bytes in fallback: replayed, a miss meanwhile",
          "[fallback]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-max-entry-bytes=1kb"}));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "big", "small"}) == "OK");
  CHECK(str(c.get(), {"SET", "marker", "m"}) == "OK");
  env.redis.kill();
  REQUIRE(in_fallback(env, {"GET", "marker"}, "string m"));
  c = env.client();
  CHECK(str(c.get(), {"GET", "big"}) == "small");
  const std::string large(4096, 'x');
  CHECK(str(c.get(), {"SET", "big", large}) == "OK");
  CHECK(is_nil(c.get(), {"GET", "big"}));
  CHECK(integer(c.get(), {"EXISTS", "big"}) == 0);
  env.redis.start();
  REQUIRE(eventually([&] {
    auto u = env.upstream();
    auto r = command(u.get(), {"GET", "big"});
    return r && r->type == REDIS_REPLY_STRING && std::string(r->str, r->len) == large;
  }));
}

// After a long outage the probes have backed off (up to 2 s apart). A SIGTERM with writes in the
// journal probes at once and then without backoff, so an upstream back within the grace period
// is found in time and the journal replayed; with the backoff it would be found late.
TEST_CASE("SIGTERM in fallback probes without backoff, for an upstream back in time",
          "[fallback][shutdown]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--command-timeout-ms=1000"}));
  env.redis.pause();
  REQUIRE(in_fallback(env, {"GET", "nothing"}, "nil"));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "late", "during"}) == "OK");
  c.reset();
  std::this_thread::sleep_for(std::chrono::seconds(4));  // the probes back off to 1-2 s apart
  REQUIRE(::kill(env.side->pid(), SIGTERM) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  env.redis.resume();
  const int code = env.side->wait_exit(std::chrono::seconds(20));
  INFO(env.side->log());
  CHECK(code == 0);
  auto up = env.upstream();
  CHECK(str(up.get(), {"GET", "late"}) == "during");
}

// An upstream that refuses the sidecar's password is a configuration to fix, not an outage to ride
// out: nothing journaled could be replayed before it is fixed (and restarting to fix it would lose
// the journal), so fallback serves reads from L1 but refuses writes, saying why.
TEST_CASE("a wrong upstream password: fallback refuses writes instead of journaling them",
          "[fallback][auth]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.requirepass = "right-pass-93d";
  redis_server redis(opts);
  sidecar side(with({"--upstream", redis.url("", "wrong-pass-93d")}));
  REQUIRE(side.running());
  auto c = connect(side.port());
  std::string last;
  CHECK(eventually([&] {
    last = reply_text(c.get(), {"SET", "k", "v"});
    return last.find("refuses the sidecar") != std::string::npos;
  }));
  INFO(last);
  CHECK(
      last.starts_with("error UNAVAILABLE the upstream refuses the sidecar (authentication "
                       "failed: WRONGPASS"));
  CHECK(last.find("wrong-pass-93d") == std::string::npos);
  CHECK(reply_text(c.get(), {"GET", "k"}) == "nil");  // reads are still served (from L1)
  side.terminate();
  CHECK(side.wait_exit() == 0);  // nothing was acknowledged, so nothing is lost
  CHECK(side.log().find("not replayed") == std::string::npos);
}

// Signals whose default action would end the process on the spot (a supervisor's reload, a
// closed terminal) are ignored: the writes acknowledged in fallback are still replayed.
TEST_CASE("SIGHUP, SIGUSR1 and SIGUSR2 do not stop the sidecar or lose its journal",
          "[fallback][signals]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  env.redis.pause();
  REQUIRE(in_fallback(env, {"GET", "nothing"}, "nil"));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "hup", "during"}) == "OK");
  for (const int sig : {SIGHUP, SIGUSR1, SIGUSR2}) REQUIRE(::kill(env.side->pid(), sig) == 0);
  CHECK(eventually(
      [&] { return env.side->log().find("received SIGUSR2: ignored") != std::string::npos; }));
  REQUIRE(env.side->running());
  CHECK(str(c.get(), {"GET", "hup"}) == "during");
  env.redis.resume();
  auto up = env.upstream();
  CHECK(eventually([&] {
    return describe(command(up.get(), {"GET", "hup"}).get()) == "string during";
  }));
  const std::string log = env.side->log();
  CHECK(log.find("received SIGHUP: ignored") != std::string::npos);
  CHECK(log.find("received SIGUSR1: ignored") != std::string::npos);
}

// A SIGTERM in fallback: the writes the sidecar acknowledged live only in its journal. It waits
// for the upstream to replay them, within the grace period (--command-timeout-ms), and when the
// upstream is not back in time it says how many are lost and exits with status 1.
TEST_CASE("SIGTERM in fallback replays the journal if the upstream is back in time",
          "[fallback][shutdown]") {
  SIDECAR_ONLY();
  for (const bool back_in_time : {true, false}) {
    CAPTURE(back_in_time);
    // The grace: long enough for the probe's backoff (up to 2 s) and two good probes, or short.
    proxied env({},
                with({back_in_time ? "--command-timeout-ms=10000" : "--command-timeout-ms=1000"}));
    auto c = env.client();
    CHECK(str(c.get(), {"SET", "k0", "before"}) == "OK");
    env.redis.pause();
    REQUIRE(in_fallback(env, {"GET", "k0"}, "string before"));
    c = env.client();
    for (const char* k : {"k1", "k2", "k3"}) CHECK(str(c.get(), {"SET", k, "during"}) == "OK");
    c.reset();
    REQUIRE(::kill(env.side->pid(), SIGTERM) == 0);
    if (back_in_time) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      env.redis.resume();
    }
    const int code = env.side->wait_exit(std::chrono::seconds(20));
    const std::string log = env.side->log();
    INFO(log);
    if (!back_in_time) env.redis.resume();
    auto up = env.upstream();
    if (back_in_time) {
      CHECK(code == 0);
      for (const char* k : {"k1", "k2", "k3"}) CHECK(str(up.get(), {"GET", k}) == "during");
      CHECK(log.find("not replayed") == std::string::npos);
    } else {
      CHECK(code == 1);
      CHECK(is_nil(up.get(), {"GET", "k1"}));
      CHECK(log.find("stopping with 3 writes accepted during fallback not replayed") !=
            std::string::npos);
    }
  }
}

TEST_CASE("SELECT of another db in fallback is refused at once, and the client stays in its db",
          "[fallback]") {
  SIDECAR_ONLY();
  proxied env({}, with({}));
  CHECK(str(env.client().get(), {"SET", "a", "cached"}) == "OK");
  env.redis.kill();
  REQUIRE(in_fallback(env, {"GET", "a"}, "string cached"));
  // Pipelined, as clients that SELECT on connect send it: what follows is still answered.
  raw_client raw(env.port());
  raw.send(resp_array({"SELECT", "1"}) + resp_array({"GET", "a"}) + resp_array({"SELECT", "0"}) +
           resp_array({"PING"}));
  CHECK(read_value(raw) == error_bytes(unavailable("select")));
  CHECK(read_value(raw) == "$6\r\ncached\r\n");
  CHECK(read_value(raw) == "+OK\r\n");
  CHECK(read_value(raw) == "+PONG\r\n");
}

TEST_CASE("stalled upstream: fallback starts without waiting for command timeouts", "[fallback]") {
  SIDECAR_ONLY();
  // A command timeout far longer than the test: only fallback can answer in time.
  proxied env({}, with({"--command-timeout-ms=60000"}));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "a", "before"}) == "OK");
  // Two clients on dedicated connections: one in a transaction, one blocked in BLPOP.
  auto tx = env.client();
  CHECK(str(tx.get(), {"MULTI"}) == "OK");
  CHECK(str(tx.get(), {"SET", "t", "in-tx"}) == "QUEUED");
  auto blocked = env.client();
  REQUIRE(send_only(blocked.get(), {"BLPOP", "nothing-comes", "0"}));
  // A subscriber keeps its subscription through the stall: nothing of it waits on a reply.
  auto subscriber = env.client();
  auto confirmed = command(subscriber.get(), {"SUBSCRIBE", "news"});
  REQUIRE(confirmed);
  REQUIRE(confirmed->type == REDIS_REPLY_ARRAY);
  env.redis.pause();
  // Requests in flight when the upstream stalls are answered once fallback begins, not after the
  // command timeout (hiredis would give up after 10 s): a GET miss, read on the cache's own
  // channel; a command on the shared pool; EXEC and BLPOP on dedicated connections. All are sent
  // before any reply is awaited.
  auto miss = env.client();
  auto pooled = env.client();
  REQUIRE(send_only(miss.get(), {"GET", "never-cached"}));
  REQUIRE(send_only(pooled.get(), {"STRLEN", "a"}));
  REQUIRE(send_only(tx.get(), {"EXEC"}));
  for (auto* s : {miss.get(), pooled.get(), tx.get(), blocked.get()}) {
    INFO("sidecar log:\n" << env.side->log());
    auto r = next_reply(s);
    REQUIRE(r);
    INFO(describe(r.get()));
    CHECK(r->type == REDIS_REPLY_ERROR);
  }
  REQUIRE(in_fallback(env, {"GET", "a"}, "string before"));
  c = env.client();
  CHECK(str(c.get(), {"SET", "a", "during"}) == "OK");
  CHECK(str(c.get(), {"GET", "a"}) == "during");
  env.redis.resume();
  REQUIRE(eventually([&] {
    auto u = env.upstream();
    auto r = command(u.get(), {"GET", "a"});
    return r && r->type == REDIS_REPLY_STRING && std::string(r->str, r->len) == "during";
  }));
  auto publisher = env.upstream();
  CHECK(integer(publisher.get(), {"PUBLISH", "news", "after the stall"}) == 1);
  auto message = next_reply(subscriber.get());
  REQUIRE(message);
  REQUIRE(message->type == REDIS_REPLY_ARRAY);
  REQUIRE(message->elements == 3);
  CHECK(std::string(message->element[2]->str, message->element[2]->len) == "after the stall");
}

// Writes acknowledged during fallback and during the replay go to the journal, and L1 holds the
// newest value of each key. Replaying one of a key's earlier writes must not make L1 forget the
// value a later one left: the client that wrote it would read nil until the journal is empty.
TEST_CASE("a client writing and reading one key through the replay reads its own writes",
          "[fallback]") {
  SIDECAR_ONLY();
  proxied env({}, with({"--cache-mode=fallback"}));  // GET answered from L1: fallback, no hit
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "k", "v0"}) == "OK");
  env.redis.pause();
  REQUIRE(in_fallback(env, {"GET", "k"}, "string v0"));
  c = env.client();
  int version = 0, wrong = 0;
  std::string first_wrong;
  const auto write_and_read = [&] {
    const std::string value = "v" + std::to_string(++version);
    const std::string set = reply_text(c.get(), {"SET", "k", value});
    const std::string got = reply_text(c.get(), {"GET", "k"});
    if (set == "status OK" && got == "string " + value) return;
    if (++wrong == 1) first_wrong = "SET k " + value + ": " + set + ", then GET k: " + got;
  };
  write_and_read();
  // Earlier writes of k all through the journal, between other keys' writes, so that the replay
  // comes upon one of them again and again while the client goes on.
  auto other = env.client();
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(send_only(other.get(), {"SET", "k", "earlier"}));
    for (int j = 0; j < 5; ++j)
      REQUIRE(send_only(other.get(), {"SET", "fill:" + std::to_string(i * 5 + j), "x"}));
  }
  for (int i = 0; i < 6000; ++i) REQUIRE(next_reply(other.get()));
  write_and_read();
  env.redis.resume();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int during_replay = 0;
  bool replayed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string log = env.side->log();  // read once per round
    if ((replayed = log.find("recovering -> healthy") != std::string::npos)) break;
    write_and_read();
    if (log.find("fallback -> recovering") != std::string::npos) ++during_replay;
  }
  INFO("sidecar log:\n" << env.side->log());
  REQUIRE(replayed);
  CHECK(during_replay > 0);
  INFO("first wrong answer: " << first_wrong);
  CHECK(wrong == 0);
  auto up = env.upstream();
  CHECK(str(up.get(), {"GET", "k"}) == "v" + std::to_string(version));
}

// L1 would serve a transaction's commands one by one: the writes it can serve applied, those it
// cannot refused, even after DISCARD. A transaction in fallback runs none of its commands: each is
// refused when queued and EXEC answers -EXECABORT, as Redis does after refusing a queued command.
TEST_CASE("a transaction in fallback runs none of its commands", "[fallback]") {
  SIDECAR_ONLY();
  // L1 answers GET only in fallback, so in_fallback() below tells fallback from a hit.
  proxied env({}, with({"--cache-mode=fallback"}));
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "cached", "5"}) == "OK");
  CHECK(str(c.get(), {"GET", "cached"}) == "5");
  env.redis.pause();
  REQUIRE(in_fallback(env, {"GET", "cached"}, "string 5"));
  c = env.client();
  const auto pipeline = [&](const std::vector<std::vector<std::string>>& commands) {
    for (const auto& argv : commands) REQUIRE(send_only(c.get(), argv));
    std::vector<std::string> replies;
    for (std::size_t i = 0; i < commands.size(); ++i) {
      auto r = next_reply(c.get());
      replies.push_back(r ? describe(r.get()) : "(no reply)");
    }
    return replies;
  };
  const auto queued_refusal = [](const std::string& name) {
    return "error UNAVAILABLE upstream unreachable, '" + name + "' cannot be queued, the local " +
           "cache does not serve transactions; EXEC will discard this one";
  };
  CHECK(pipeline({{"MULTI"}, {"SET", "a", "1"}, {"INCR", "cached"}, {"MULTI"}, {"EXEC"}}) ==
        std::vector<std::string>{"status OK", queued_refusal("set"), queued_refusal("incr"),
                                 "error ERR MULTI calls can not be nested",
                                 "error EXECABORT Transaction discarded because of previous "
                                 "errors."});
  CHECK(pipeline({{"MULTI"}, {"SET", "d", "1"}, {"DISCARD"}, {"SET", "e", "1"}}) ==
        std::vector<std::string>{"status OK", queued_refusal("set"), "status OK", "status OK"});
  CHECK(is_nil(c.get(), {"GET", "a"}));
  CHECK(is_nil(c.get(), {"GET", "d"}));
  CHECK(str(c.get(), {"GET", "cached"}) == "5");
  // A transaction opened in fallback stays refused after the upstream is back, until its EXEC.
  CHECK(str(c.get(), {"MULTI"}) == "OK");
  env.redis.resume();
  REQUIRE(eventually(
      [&] { return env.side->log().find("recovering -> healthy") != std::string::npos; }));
  CHECK(error_of(c.get(), {"SET", "f", "1"}) == queued_refusal("set").substr(6));
  CHECK(error_of(c.get(), {"EXEC"}).starts_with("EXECABORT"));
  // Then transactions reach the upstream again.
  CHECK(pipeline({{"MULTI"}, {"SET", "g", "1"}, {"EXEC"}}) ==
        std::vector<std::string>{"status OK", "status QUEUED", "array of 1"});
  auto up = env.upstream();
  for (const char* key : {"a", "d", "f"}) CHECK(is_nil(up.get(), {"GET", key}));
  CHECK(str(up.get(), {"GET", "cached"}) == "5");
  CHECK(str(up.get(), {"GET", "e"}) == "1");  // outside the transaction: journaled and replayed
  CHECK(str(up.get(), {"GET", "g"}) == "1");
}

TEST_CASE("fallback write policies: reject, and a full journal", "[fallback]") {
  SIDECAR_ONLY();
  SECTION("--fallback-writes=reject") {
    proxied env({}, with({"--fallback-writes=reject"}));
    auto c = env.client();
    CHECK(str(c.get(), {"SET", "a", "1"}) == "OK");
    env.redis.kill();
    REQUIRE(in_fallback(env, {"GET", "a"}, "string 1"));
    c = env.client();
    CHECK(error_of(c.get(), {"SET", "a", "2"}) == std::string(errors::fallback_writes_rejected));
    CHECK(str(c.get(), {"GET", "a"}) == "1");
  }
  SECTION("--fallback-journal-max-bytes") {
    proxied env({}, with({"--fallback-journal-max-bytes=600"}));
    auto c = env.client();
    CHECK(str(c.get(), {"SET", "a", "1"}) == "OK");
    env.redis.kill();
    REQUIRE(in_fallback(env, {"GET", "a"}, "string 1"));
    c = env.client();
    int accepted = 0;
    std::string refused;
    for (int i = 0; i < 100 && refused.empty(); ++i) {
      auto r = must(c.get(), {"SET", "key" + std::to_string(i), std::string(20, 'v')});
      if (r->type == REDIS_REPLY_STATUS)
        ++accepted;
      else
        refused = describe(r.get());
    }
    CHECK(accepted > 0);
    CHECK(refused == "error " + std::string(errors::fallback_journal_full));
    // The refused write changed nothing; the accepted ones are all replayed.
    CHECK(is_nil(c.get(), {"GET", "key" + std::to_string(accepted)}));
    env.redis.start();
    REQUIRE(eventually([&] {
      auto u = env.upstream();
      auto r = command(u.get(), {"DBSIZE"});
      return r && r->type == REDIS_REPLY_INTEGER && r->integer == accepted;
    }));
  }
}

TEST_CASE("fallback miss policy error, and the default thresholds detect an outage", "[fallback]") {
  SIDECAR_ONLY();
  proxied env({}, {"--fallback-miss=error"});  // default detection thresholds
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "a", "1"}) == "OK");
  env.redis.kill();
  REQUIRE(in_fallback(env, {"GET", "a"}, "string 1"));
  c = env.client();
  CHECK(error_of(c.get(), {"GET", "b"}) == std::string(errors::fallback_miss));
}

}  // namespace redis_sidecar::test
