// The cache tier without I/O: filling and invalidating L1 from requests and their replies, and
// answering from L1 in fallback mode, byte for byte. Also the health state machine.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "proxy/commands/command_table.hpp"
#include "proxy/resp/writer.hpp"
#include "proxy/tier/cache_tier.hpp"
#include "proxy/tier/health_fsm.hpp"

using namespace redis_sidecar;

namespace {

constexpr std::int64_t t0 = 1'000'000;             // monotonic ms
constexpr std::int64_t wall0 = 1'800'000'000'000;  // Unix ms at t0

struct request {
  std::vector<std::string> words;
  std::vector<std::string_view> args;
  std::string frame;
  explicit request(std::vector<std::string> w) : words(std::move(w)) {
    for (const auto& s : words) args.emplace_back(s);
    resp::append_command(frame, args);
  }
  const commands::command_info& info() const { return *commands::lookup(words[0]); }
};

config make_config(std::vector<std::string> flags = {}) {
  config c;
  for (const auto& f : flags) {
    if (f == "miss=error") c.fallback_miss = "error";
    if (f == "reject") c.fallback_writes = "reject";
    if (f == "tiny-journal") c.fallback_journal_max_bytes = 200;
    if (f == "off") c.cache_mode = "off";
  }
  c.cache_ttl_ms = 60'000;
  return c;
}

// Sends `words` through the tier in normal operation with the upstream's `reply`.
void pass(cache_tier& tier, std::vector<std::string> words, std::string_view reply, int db = 0,
          std::int64_t now = t0) {
  request r(std::move(words));
  REQUIRE(tier.wants_reply(r.info()));
  tier.on_request(db, r.info(), r.args);
  tier.on_reply(db, r.info(), r.args, reply, now, wall0 + (now - t0));
}

// Serves `words` in fallback mode; returns the reply bytes.
std::string serve(cache_tier& tier, std::vector<std::string> words, int proto = 2, int db = 0,
                  std::int64_t now = t0) {
  request r(std::move(words));
  std::string out;
  tier.serve(db, commands::lookup(r.words[0]), r.args, r.frame, proto, now, wall0 + (now - t0),
             out);
  return out;
}

// What hit() answers: the value, "(nil)" for an absent key, "(miss)" when L1 may not answer.
std::string hit_text(cache_tier& tier, int db, std::string_view key, std::int64_t now = t0) {
  const auto h = tier.hit(db, key, now);
  if (!h) return "(miss)";
  return h->absent ? "(nil)" : std::string(h->value);
}

}  // namespace

TEST_CASE("tier: GET and MGET replies fill L1, nil replies drop entries", "[tier]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  pass(tier, {"GET", "a"}, "$3\r\none\r\n");
  pass(tier, {"MGET", "b", "c", "d"}, "*3\r\n$1\r\nB\r\n$-1\r\n$0\r\n\r\n");
  CHECK(serve(tier, {"GET", "a"}) == "$3\r\none\r\n");
  CHECK(serve(tier, {"MGET", "a", "b", "c", "d"}) ==
        "*4\r\n$3\r\none\r\n$1\r\nB\r\n$-1\r\n$0\r\n\r\n");
  pass(tier, {"GET", "e"}, "$5\r\nhel\r\n\r\n");  // CRLF inside a payload is payload
  CHECK(serve(tier, {"GET", "e"}) == "$5\r\nhel\r\n\r\n");
  pass(tier, {"GET", "a"}, "$-1\r\n");
  CHECK(serve(tier, {"GET", "a"}) == "$-1\r\n");
  pass(tier, {"GET", "b"}, "_\r\n");  // RESP3 null
  CHECK(serve(tier, {"EXISTS", "b", "d"}) == ":1\r\n");
  // An error to a read changes nothing (it may be the sidecar's own, for a lost upstream) ...
  pass(tier, {"GET", "d"}, "-ERR upstream unavailable: connection refused\r\n");
  CHECK(serve(tier, {"EXISTS", "d"}) == ":1\r\n");
  // ... except WRONGTYPE: the key is no string any more.
  pass(tier, {"GET", "d"},
       "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
  CHECK(serve(tier, {"EXISTS", "d"}) == ":0\r\n");
  // The tier's own bound: --cache-ttl after the fill, the value is gone.
  pass(tier, {"GET", "a"}, "$1\r\nx\r\n");
  CHECK(serve(tier, {"GET", "a"}, 2, 0, t0 + 59'999) == "$1\r\nx\r\n");
  CHECK(serve(tier, {"GET", "a"}, 2, 0, t0 + 60'000) == "$-1\r\n");
}

TEST_CASE("tier: SET forms store what the upstream acknowledged", "[tier]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  pass(tier, {"SET", "k1", "v1"}, "+OK\r\n");
  pass(tier, {"SET", "k2", "v2", "EX", "10"}, "+OK\r\n");
  pass(tier, {"SET", "k3", "v3", "NX"}, "$-1\r\n");  // not set: the key exists upstream
  pass(tier, {"SET", "k4", "v4", "GET"}, "$3\r\nold\r\n");
  pass(tier, {"SET", "k5", "v5", "KEEPTTL"}, "+OK\r\n");  // expiry unknown: not kept
  pass(tier, {"SET", "k6", "v6", "PXAT", std::to_string(wall0 + 5000)}, "+OK\r\n");
  pass(tier, {"SETEX", "k7", "100", "v7"}, "+OK\r\n");
  pass(tier, {"PSETEX", "k8", "1500", "v8"}, "+OK\r\n");
  pass(tier, {"MSET", "m1", "x", "m2", "y"}, "+OK\r\n");
  pass(tier, {"MSETNX", "n1", "x", "n2", "y"}, ":0\r\n");
  pass(tier, {"SET", "k9", "v9"}, "-OOM command not allowed\r\n");
  CHECK(serve(tier, {"GET", "k1"}) == "$2\r\nv1\r\n");
  CHECK(serve(tier, {"TTL", "k1"}) == ":-1\r\n");
  CHECK(serve(tier, {"TTL", "k2"}) == ":10\r\n");
  CHECK(serve(tier, {"PTTL", "k2"}, 2, 0, t0 + 2500) == ":7500\r\n");
  CHECK(serve(tier, {"GET", "k2"}, 2, 0, t0 + 10'000) == "$-1\r\n");  // expired with the upstream
  CHECK(serve(tier, {"EXISTS", "k3", "k5", "k9", "n1", "n2"}) == ":0\r\n");
  CHECK(serve(tier, {"GET", "k4"}) == "$2\r\nv4\r\n");
  CHECK(serve(tier, {"PTTL", "k6"}) == ":5000\r\n");
  CHECK(serve(tier, {"TTL", "k7"}) == ":100\r\n");
  CHECK(serve(tier, {"PTTL", "k8"}) == ":1500\r\n");
  CHECK(serve(tier, {"MGET", "m1", "m2"}) == "*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
}

// --cache-max-entry-bytes bounds key + value; the header L1 keeps with a value (flags, expiry,
// tracking epoch) is not counted against it (a pair of exactly the limit was refused).
TEST_CASE("tier: --cache-max-entry-bytes bounds key + value exactly", "[tier]") {
  config cfg = make_config();
  cfg.cache_max_entry_bytes = 1000;
  cache_tier tier(cfg);
  const std::string fits(999, 'f'), too_big(1000, 'b');
  pass(tier, {"SET", "k", fits, "EX", "100"}, "+OK\r\n");  // key + value = 1000
  CHECK(serve(tier, {"GET", "k"}) == "$999\r\n" + fits + "\r\n");
  pass(tier, {"SET", "k", too_big}, "+OK\r\n");  // 1001: not kept, nor the older value
  CHECK(serve(tier, {"EXISTS", "k"}) == ":0\r\n");
  pass(tier, {"GET", "j"}, "$999\r\n" + fits + "\r\n");
  CHECK(serve(tier, {"GET", "j"}) == "$999\r\n" + fits + "\r\n");
}

TEST_CASE("tier: writes invalidate the keys they touch", "[tier]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  auto fill = [&](int db = 0) {
    for (const char* k : {"a", "b", "c", "d"}) pass(tier, {"GET", k}, "$1\r\nv\r\n", db);
  };
  auto held = [&](int db = 0) { return serve(tier, {"EXISTS", "a", "b", "c", "d"}, 2, db); };
  fill();
  pass(tier, {"DEL", "a", "b"}, ":2\r\n");
  CHECK(held() == ":2\r\n");
  fill();
  pass(tier, {"INCR", "a"}, ":1\r\n");
  pass(tier, {"APPEND", "b", "x"}, ":2\r\n");
  pass(tier, {"EXPIRE", "c", "10"}, ":1\r\n");
  CHECK(held() == ":1\r\n");
  fill();
  pass(tier, {"RENAME", "a", "d"}, "+OK\r\n");
  CHECK(held() == ":2\r\n");
  fill();
  pass(tier, {"EVAL", "return 1", "2", "a", "b", "c"}, ":1\r\n");  // c is an argument, not a key
  CHECK(held() == ":2\r\n");
  fill();
  pass(tier, {"SORT", "list", "STORE", "c"}, ":0\r\n");  // movable keys: every argument counts
  CHECK(held() == ":3\r\n");
  fill();
  fill(1);
  pass(tier, {"FLUSHDB"}, "+OK\r\n", 1);
  CHECK(held(1) == ":0\r\n");
  CHECK(held(0) == ":4\r\n");
  pass(tier, {"MOVE", "a", "1"}, ":1\r\n");
  CHECK(held(0) == ":3\r\n");
  fill(1);
  pass(tier, {"FLUSHALL"}, "+OK\r\n");
  CHECK(held(0) == ":0\r\n");
  CHECK(held(1) == ":0\r\n");
  // A GET reply that raced with a write: the write's reply invalidates again.
  request get({"GET", "a"});
  request del({"DEL", "a"});
  tier.on_request(0, get.info(), get.args);
  tier.on_request(0, del.info(), del.args);
  tier.on_reply(0, get.info(), get.args, "$3\r\nold\r\n", t0, wall0);
  tier.on_reply(0, del.info(), del.args, ":1\r\n", t0, wall0);
  CHECK(held() == ":0\r\n");
}

TEST_CASE("tier: which writes hide their keys, which reach beyond them", "[tier]") {
  auto info = [](const char* name) -> const commands::command_info& {
    return *commands::lookup(name);
  };
  for (const char* name : {"SET", "setex", "PSETEX", "MSET", "MSETNX"}) {
    INFO(name);
    CHECK(cache_tier::hides_keys(info(name)));
    CHECK_FALSE(cache_tier::writes_beyond_keys(info(name)));
  }
  for (const char* name : {"GET", "GETSET", "SETNX", "SETRANGE", "DEL", "INCR", "APPEND"}) {
    INFO(name);
    CHECK_FALSE(cache_tier::hides_keys(info(name)));
  }
  for (const char* name : {"FLUSHDB", "FLUSHALL", "SWAPDB", "MOVE", "COPY"}) {
    INFO(name);
    CHECK(cache_tier::writes_beyond_keys(info(name)));
  }
  for (const char* name : {"DEL", "RENAME", "INCR", "EXPIRE", "GET", "MSET"}) {
    INFO(name);
    CHECK_FALSE(cache_tier::writes_beyond_keys(info(name)));
  }
}

TEST_CASE("tier: a SET in flight hides its key until the reply replaces or drops it", "[tier]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  pass(tier, {"GET", "k"}, "$2\r\nv1\r\n");
  pass(tier, {"GET", "m"}, "$2\r\nm1\r\n");
  const auto before = tier.counters().invalidations;

  request set({"SET", "k", "v2"});
  tier.on_request(0, set.info(), set.args);
  CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");  // its value is unknown while the write is out
  CHECK(serve(tier, {"EXISTS", "k", "m"}) == ":1\r\n");
  CHECK(tier.counters().invalidations == before + 1);
  tier.on_request(0, set.info(), set.args);  // a second write to a hidden entry: counted once
  CHECK(tier.counters().invalidations == before + 1);
  CHECK(tier.l1().entries() == 2);  // kept, for the reply to overwrite
  tier.on_reply(0, set.info(), set.args, "+OK\r\n", t0, wall0);
  CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv2\r\n");

  request longer({"SET", "k", "a longer value"});
  tier.on_request(0, longer.info(), longer.args);
  tier.on_reply(0, longer.info(), longer.args, "+OK\r\n", t0, wall0);
  CHECK(serve(tier, {"GET", "k"}) == "$14\r\na longer value\r\n");

  request failed({"SET", "k", "v3"});
  tier.on_request(0, failed.info(), failed.args);
  tier.on_reply(0, failed.info(), failed.args, "-ERR upstream connection lost\r\n", t0, wall0);
  CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
  CHECK(tier.l1().entries() == 1);  // dropped: only m is left

  request mset({"MSET", "m", "m2", "n", "n1"});
  tier.on_request(0, mset.info(), mset.args);
  CHECK(serve(tier, {"EXISTS", "m", "n"}) == ":0\r\n");
  tier.on_reply(0, mset.info(), mset.args, "+OK\r\n", t0, wall0);
  CHECK(serve(tier, {"MGET", "m", "n"}) == "*2\r\n$2\r\nm2\r\n$2\r\nn1\r\n");

  // A GET reply that raced with the SET (read before it ran) does not unhide an old value for
  // long: the SET's reply overwrites it.
  request get({"GET", "m"});
  request set_m({"SET", "m", "m3"});
  tier.on_request(0, get.info(), get.args);
  tier.on_request(0, set_m.info(), set_m.args);
  tier.on_reply(0, get.info(), get.args, "$2\r\nm2\r\n", t0, wall0);
  tier.on_reply(0, set_m.info(), set_m.args, "+OK\r\n", t0, wall0);
  CHECK(serve(tier, {"GET", "m"}) == "$2\r\nm3\r\n");

  // Fallback DEL counts what a read would have seen: a hidden entry is not there.
  request hide_m({"SET", "m", "m4"});
  tier.on_request(0, hide_m.info(), hide_m.args);
  CHECK(serve(tier, {"DEL", "m", "n"}) == ":1\r\n");
  CHECK(tier.l1().entries() == 0);

  // A transaction's queued writes: their EXEC reply does not come through on_reply, so nothing
  // is left hidden; the entry goes.
  pass(tier, {"GET", "q"}, "$2\r\nq1\r\n");
  request queued({"SET", "q", "q2"});
  tier.on_request(0, queued.info(), queued.args, {}, false);
  CHECK(tier.l1().entries() == 0);
}

// Callers that hashed a request's first key (the session, to prefetch its L1 slot) pass the hash
// in, so that the request and its reply do not hash it again: it stands for args[1] only, in the
// db it was computed for.
TEST_CASE("tier: a first key's hash given with the request and reply serves args[1] only",
          "[tier]") {
  cache_tier tier(make_config());
  request mset({"MSET", "a", "1", "b", "2"});
  const std::uint64_t a_hash = tier.key_hash(0, "a");
  const cache_tier::flight f{1, tier.write_clock()};
  tier.on_request(0, mset.info(), mset.args, f, true, a_hash);
  tier.on_reply(0, mset.info(), mset.args, "+OK\r\n", t0, wall0, f, a_hash);
  CHECK(serve(tier, {"MGET", "a", "b"}) == "*2\r\n$1\r\n1\r\n$1\r\n2\r\n");

  request get({"GET", "c"});
  tier.on_request(0, get.info(), get.args, f, true, tier.key_hash(0, "c"));
  tier.on_reply(0, get.info(), get.args, "$1\r\n3\r\n", t0, wall0, f, tier.key_hash(0, "c"));
  CHECK(serve(tier, {"GET", "c"}) == "$1\r\n3\r\n");

  // A SET hides and then stores through the hash given: a DEL, hashed here, finds the entry.
  request set({"SET", "a", "4"});
  tier.on_request(0, set.info(), set.args, f, true, a_hash);
  CHECK(serve(tier, {"GET", "a"}) == "$-1\r\n");  // hidden
  tier.on_reply(0, set.info(), set.args, "+OK\r\n", t0, wall0, f, a_hash);
  CHECK(serve(tier, {"GET", "a"}) == "$1\r\n4\r\n");
  pass(tier, {"DEL", "a"}, ":1\r\n");
  CHECK(serve(tier, {"GET", "a"}) == "$-1\r\n");
  CHECK(tier.l1().entries() == 2);  // b and c
}

TEST_CASE("tier: fallback reads", "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  pass(tier, {"GET", "a"}, "$3\r\none\r\n");
  CHECK(serve(tier, {"GET", "a"}) == "$3\r\none\r\n");
  CHECK(serve(tier, {"GET", "missing"}) == "$-1\r\n");
  CHECK(serve(tier, {"GET", "missing"}, 3) == "_\r\n");
  CHECK(serve(tier, {"MGET", "a", "missing"}, 3) == "*2\r\n$3\r\none\r\n_\r\n");
  CHECK(serve(tier, {"TTL", "missing"}) == ":-2\r\n");
  CHECK(serve(tier, {"PING"}) == "+PONG\r\n");
  CHECK(serve(tier, {"PING", "hi"}) == "$2\r\nhi\r\n");
  CHECK(serve(tier, {"ECHO", "x"}) == "$1\r\nx\r\n");
  CHECK(serve(tier, {"GET"}) == "-ERR wrong number of arguments for 'get' command\r\n");
  CHECK(serve(tier, {"HGETALL", "h"}) ==
        "-UNAVAILABLE upstream unreachable, 'hgetall' cannot be served from the local cache\r\n");
  CHECK(serve(tier, {"NOSUCHCOMMAND"}) ==
        "-UNAVAILABLE upstream unreachable, 'unknown' cannot be served from the local cache\r\n");
  CHECK(tier.counters().hits == 2);
  CHECK(tier.counters().misses == 3);
  CHECK(tier.journal().empty());

  const config strict = make_config({"miss=error"});
  cache_tier t2(strict);
  CHECK(serve(t2, {"GET", "x"}) ==
        "-UNAVAILABLE upstream unreachable and the key is not in the local cache\r\n");
  CHECK(serve(t2, {"MGET", "x"}) ==
        "-UNAVAILABLE upstream unreachable and the key is not in the local cache\r\n");
}

TEST_CASE("tier: fallback writes are journaled in order and applied to L1", "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  pass(tier, {"GET", "n"}, "$2\r\n41\r\n");
  pass(tier, {"SET", "e", "v", "EX", "100"}, "+OK\r\n");
  CHECK(serve(tier, {"SET", "k", "v"}) == "+OK\r\n");
  CHECK(serve(tier, {"SET", "k", "w", "NX"}) == "$-1\r\n");
  CHECK(serve(tier, {"SET", "k", "w", "XX", "GET"}) == "$1\r\nv\r\n");
  for (const char* flag : {"NX", "XX", "GET"})  // "new" may exist upstream: nothing to answer
    CHECK(serve(tier, {"SET", "new", "w", flag}) ==
          "-UNAVAILABLE upstream unreachable and the key is not in the local cache, so a SET with "
          "NX, XX or GET cannot be answered\r\n");
  CHECK(serve(tier, {"SET", "k", "w", "EX", "0"}) ==
        "-ERR invalid expire time in 'set' command\r\n");
  CHECK(serve(tier, {"SET", "k", "w", "EX"}) == "-ERR syntax error\r\n");
  CHECK(serve(tier, {"SET", "e", "v2", "KEEPTTL"}) == "+OK\r\n");
  CHECK(serve(tier, {"TTL", "e"}) == ":100\r\n");
  CHECK(serve(tier, {"SETEX", "s", "5", "x"}) == "+OK\r\n");
  CHECK(serve(tier, {"TTL", "s"}) == ":5\r\n");
  CHECK(serve(tier, {"MSET", "m1", "1", "m2", "2"}) == "+OK\r\n");
  CHECK(serve(tier, {"INCR", "n"}) == ":42\r\n");
  CHECK(serve(tier, {"DECRBY", "n", "50"}) == ":-8\r\n");
  CHECK(serve(tier, {"INCR", "k"}) == "-ERR value is not an integer or out of range\r\n");
  CHECK(serve(tier, {"INCR", "nothing"}) ==
        "-UNAVAILABLE upstream unreachable and the key is not in the local cache, so it cannot "
        "be incremented\r\n");
  CHECK(serve(tier, {"EXPIRE", "m1", "10"}) == ":1\r\n");
  CHECK(serve(tier, {"EXPIRE", "m1", "20", "NX"}) == ":0\r\n");
  CHECK(serve(tier, {"EXPIRE", "m1", "5", "GT"}) == ":0\r\n");
  CHECK(serve(tier, {"PEXPIRE", "m1", "5000", "LT"}) == ":1\r\n");
  CHECK(serve(tier, {"PTTL", "m1"}) == ":5000\r\n");
  CHECK(serve(tier, {"DEL", "m2", "unknown"}) == ":1\r\n");
  CHECK(serve(tier, {"GET", "n"}) == "$2\r\n-8\r\n");

  // Every accepted write, in order, and nothing else (failed conditions and errors are not).
  std::vector<std::string> journaled;
  auto& j = tier.journal();
  while (!j.empty()) {
    journaled.push_back(j.front().frame);
    j.pop_front();
  }
  std::vector<std::string> expected;
  for (std::vector<std::string> w : std::vector<std::vector<std::string>>{
           {"SET", "k", "v"},
           {"SET", "k", "w", "XX", "GET"},
           {"SET", "e", "v2", "KEEPTTL"},
           {"SETEX", "s", "5", "x"},  // as sent: the upstream's version is not known
           {"MSET", "m1", "1", "m2", "2"},
           {"INCR", "n"},
           {"DECRBY", "n", "50"},
           {"PEXPIREAT", "m1", std::to_string(wall0 + 10'000)},
           {"PEXPIREAT", "m1", std::to_string(wall0 + 5000), "LT"},
           {"DEL", "m2", "unknown"}})
    expected.push_back(request(w).frame);
  CHECK(journaled == expected);
}

// A journaled write replays after the outage: a relative expiry replayed as sent would start
// again then, and keys the sidecar already answered as expired would come back. The journal holds
// the time each expiry falls at, as Redis propagates these commands to its AOF and replicas: SET
// with PXAT (Redis 6.2 and later only), PEXPIREAT (every version), the other options kept.
TEST_CASE("tier: fallback journals relative expiries as the times they fall at",
          "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  tier.set_upstream_version("7.0.15");
  constexpr std::int64_t now = t0 + 500;
  const auto at = [](std::int64_t ms) { return std::to_string(wall0 + 500 + ms); };
  // Each write served at `now`, and the frame the journal holds for it.
  const auto journaled = [&](std::vector<std::string> words) {
    const std::size_t before = tier.journal().size();
    const std::string reply = serve(tier, std::move(words), 2, 0, now);
    INFO(reply);
    REQUIRE(tier.journal().size() == before + 1);
    return tier.journal().at(before).frame;
  };
  const auto frame = [](std::vector<std::string> words) { return request(std::move(words)).frame; };
  CHECK(journaled({"SET", "a", "v", "EX", "2"}) == frame({"SET", "a", "v", "PXAT", at(2000)}));
  CHECK(journaled({"set", "b", "v", "px", "1500"}) == frame({"SET", "b", "v", "PXAT", at(1500)}));
  CHECK(journaled({"SET", "a", "w", "XX", "EX", "5", "GET"}) ==
        frame({"SET", "a", "w", "XX", "GET", "PXAT", at(5000)}));
  CHECK(journaled({"SET", "c", "v", "EX", "abc", "EX", "7"}) ==
        frame({"SET", "c", "v", "PXAT", at(7000)}));
  CHECK(journaled({"SETEX", "d", "3", "v"}) == frame({"SET", "d", "v", "PXAT", at(3000)}));
  CHECK(journaled({"psetex", "e", "250", "v"}) == frame({"SET", "e", "v", "PXAT", at(250)}));
  // Absolute expiries, none and KEEPTTL: as sent.
  const std::string exat = std::to_string(wall0 / 1000 + 100);
  for (std::vector<std::string> w : std::vector<std::vector<std::string>>{
           {"SET", "f", "v", "EXAT", exat},
           {"SET", "g", "v", "PXAT", std::to_string(wall0 + 100'000)},
           {"SET", "h", "v"},
           {"SET", "a", "v", "KEEPTTL"},
           {"SET", "a", "v", "XX", "KEEPTTL", "GET"}})
    CHECK(journaled(w) == frame(w));
  CHECK(journaled({"EXPIRE", "a", "10"}) == frame({"PEXPIREAT", "a", at(10'000)}));
  CHECK(journaled({"PEXPIRE", "a", "20000", "gt"}) == frame({"PEXPIREAT", "a", at(20'000), "gt"}));
  CHECK(journaled({"PEXPIRE", "a", "100", "XX", "LT"}) ==
        frame({"PEXPIREAT", "a", at(100), "XX", "LT"}));
  CHECK(journaled({"EXPIRE", "missing", "5"}) == frame({"PEXPIREAT", "missing", at(5000)}));
  CHECK(journaled({"EXPIRE", "h", "-1"}) == frame({"PEXPIREAT", "h", at(-1000)}));
  // What L1 answers does not change: the expiries count from when the writes were served.
  CHECK(serve(tier, {"PTTL", "a"}, 2, 0, now) == ":100\r\n");
  CHECK(serve(tier, {"PTTL", "d"}, 2, 0, now + 1000) == ":2000\r\n");
  CHECK(serve(tier, {"EXISTS", "h"}, 2, 0, now) == ":0\r\n");
  // Refused writes (their conditions fail) journal nothing.
  const std::size_t size = tier.journal().size();
  CHECK(serve(tier, {"SET", "b", "w", "nx", "PX", "9"}, 2, 0, now) == "$-1\r\n");
  CHECK(serve(tier, {"EXPIRE", "d", "10", "NX"}, 2, 0, now) == ":0\r\n");
  CHECK(tier.journal().size() == size);
}

// SET ... PXAT came in Redis 6.2: before it, or when the upstream's version is not known (never
// reached, or no HELLO), a SET keeps its relative form (and its expiry restarts when replayed).
// PEXPIREAT is in every version.
TEST_CASE("tier: SET is journaled with PXAT only for an upstream known to be 6.2 or later",
          "[tier][fallback]") {
  const config cfg = make_config();
  for (const char* version : {"", "6.0.16", "6.1.9", "5.0.7", "7", "x.y.z", "6.", ".2"}) {
    INFO(version);
    cache_tier tier(cfg);
    if (*version != '\0') tier.set_upstream_version(version);
    for (std::vector<std::string> w :
         std::vector<std::vector<std::string>>{{"SET", "a", "v", "EX", "2"},
                                               {"SET", "a", "v", "PX", "2", "GET"},
                                               {"SETEX", "b", "3", "v"},
                                               {"PSETEX", "c", "4", "v"}}) {
      REQUIRE(serve(tier, w).front() != '-');
      CHECK(tier.journal().at(tier.journal().size() - 1).frame == request(w).frame);
    }
    CHECK(serve(tier, {"EXPIRE", "a", "5"}) == ":1\r\n");
    CHECK(tier.journal().at(tier.journal().size() - 1).frame ==
          request({"PEXPIREAT", "a", std::to_string(wall0 + 5000)}).frame);
  }
  for (const char* version : {"6.2.0", "6.2", "7.0.15", "7.2.4", "10.0.0"}) {
    INFO(version);
    cache_tier tier(cfg);
    tier.set_upstream_version(version);
    CHECK(serve(tier, {"SETEX", "b", "3", "v"}) == "+OK\r\n");
    CHECK(tier.journal().front().frame ==
          request({"SET", "b", "v", "PXAT", std::to_string(wall0 + 3000)}).frame);
  }
  // The version can change (an upgrade, a failover to another server): the newest one counts.
  cache_tier tier(cfg);
  tier.set_upstream_version("7.0.15");
  tier.set_upstream_version("6.0.0");
  CHECK(serve(tier, {"SETEX", "b", "3", "v"}) == "+OK\r\n");
  CHECK(tier.journal().front().frame == request({"SETEX", "b", "3", "v"}).frame);
}

// Expire times are numbers the client chose: the ones Redis refuses (they pass 64 bits once in
// milliseconds and added to its clock) get Redis' error in fallback too, and none overflows the
// sidecar's own arithmetic (the sanitizer build traps on signed overflow). Answers checked
// against redis-server 7.0.
// Integer arguments and values are read as Redis reads them (string2ll): a number Redis
// refuses must not be acknowledged in fallback and then refused at replay. Answers checked
// against redis-server 7.0.
TEST_CASE("tier: in fallback, integers are read as Redis reads them", "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  const std::string not_integer = "-ERR value is not an integer or out of range\r\n";
  for (const char* n : {"010", "-0", "+10", " 10", "10 ", "0x10", "1e3"}) {
    INFO(n);
    CHECK(serve(tier, {"SET", "k", "v", "EX", n}) == not_integer);
    CHECK(serve(tier, {"SETEX", "k", n, "v"}) == not_integer);
    CHECK(serve(tier, {"INCRBY", "k", n}) == not_integer);
  }
  CHECK(tier.journal().empty());
  CHECK(serve(tier, {"SET", "k", "v"}) == "+OK\r\n");
  CHECK(serve(tier, {"EXPIRE", "k", "-0"}) == not_integer);
  CHECK(serve(tier, {"EXPIRE", "k", "010"}) == not_integer);
  CHECK(serve(tier, {"GET", "k"}) == "$1\r\nv\r\n");
  for (const char* value : {"-0", "-05", "007", "+7"}) {  // stored as strings: not integers
    INFO(value);
    CHECK(serve(tier, {"SET", "n", value}) == "+OK\r\n");
    CHECK(serve(tier, {"INCR", "n"}) == not_integer);
  }
  CHECK(serve(tier, {"SET", "n", "5"}) == "+OK\r\n");
  CHECK(serve(tier, {"DECRBY", "n", "-9223372036854775808"}) ==
        "-ERR decrement would overflow\r\n");
  CHECK(serve(tier, {"INCRBY", "n", "-9223372036854775808"}) == ":-9223372036854775803\r\n");
}

TEST_CASE("tier: in fallback, expire times past 64 bits get Redis' errors", "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  const std::string max = "9223372036854775807";
  const std::string min = "-9223372036854775808";
  const std::string ms_past = std::to_string(std::numeric_limits<std::int64_t>::max() - wall0 + 1);
  const std::string ms_last = std::to_string(std::numeric_limits<std::int64_t>::max() - wall0);
  const auto err = [](std::string_view cmd) {
    return "-ERR invalid expire time in '" + std::string(cmd) + "' command\r\n";
  };
  CHECK(serve(tier, {"SET", "k", "v", "PX", max}) == err("set"));
  CHECK(serve(tier, {"SET", "k", "v", "EX", "9223372036854775"}) == err("set"));
  CHECK(serve(tier, {"SET", "k", "v", "EX", max}) == err("set"));
  CHECK(serve(tier, {"SET", "k", "v", "EXAT", max}) == err("set"));
  CHECK(serve(tier, {"SET", "k", "v", "PX", ms_past}) == err("set"));
  CHECK(serve(tier, {"SETEX", "k", max, "v"}) == err("setex"));
  CHECK(serve(tier, {"SETEX", "k", "9223372036854775", "v"}) == err("setex"));
  CHECK(serve(tier, {"PSETEX", "k", max, "v"}) == err("psetex"));
  CHECK(serve(tier, {"PSETEX", "k", ms_past, "v"}) == err("psetex"));
  CHECK(tier.journal().empty());
  // At the edge, and absolute times (nothing is added to them), Redis accepts.
  CHECK(serve(tier, {"SET", "a", "v", "PX", ms_last}) == "+OK\r\n");
  CHECK(serve(tier, {"SET", "b", "v", "PXAT", max}) == "+OK\r\n");
  CHECK(serve(tier, {"GET", "b"}) == "$1\r\nv\r\n");
  CHECK(serve(tier, {"SET", "k", "v"}) == "+OK\r\n");
  CHECK(serve(tier, {"EXPIRE", "k", max}) == err("expire"));
  CHECK(serve(tier, {"EXPIRE", "k", "9223372036854775"}) == err("expire"));
  CHECK(serve(tier, {"EXPIRE", "k", min}) == err("expire"));
  CHECK(serve(tier, {"PEXPIRE", "k", max}) == err("pexpire"));
  CHECK(serve(tier, {"PEXPIRE", "k", ms_past}) == err("pexpire"));
  CHECK(serve(tier, {"EXPIRE", "k", "x"}) == "-ERR value is not an integer or out of range\r\n");
  CHECK(serve(tier, {"GET", "k"}) == "$1\r\nv\r\n");
  CHECK(serve(tier, {"PEXPIRE", "k", min}) == ":1\r\n");  // in the past: the key is gone
  CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
}

// EXPIRE's and SET's options in fallback, read in Redis 7.0's order with its answers (each checked
// against redis-server): EXPIRE reads its options before its time and refuses NX with XX, GT or LT
// and GT with LT; SET reads every option before its expiry's value, and takes the same expiry
// option again (the last value counts) but not two different ones.
TEST_CASE("tier: in fallback, EXPIRE and SET options are read as Redis reads them",
          "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  CHECK(serve(tier, {"SET", "k", "v"}) == "+OK\r\n");
  const std::string nx_and =
      "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n";
  const std::string gt_lt = "-ERR GT and LT options at the same time are not compatible\r\n";
  CHECK(serve(tier, {"EXPIRE", "k", "10", "NX", "XX"}) == nx_and);
  CHECK(serve(tier, {"EXPIRE", "k", "10", "nx", "GT"}) == nx_and);
  CHECK(serve(tier, {"PEXPIRE", "k", "10", "LT", "NX"}) == nx_and);
  CHECK(serve(tier, {"EXPIRE", "k", "10", "GT", "lt"}) == gt_lt);
  CHECK(serve(tier, {"EXPIRE", "k", "abc", "NX", "XX"}) == nx_and);
  CHECK(serve(tier, {"EXPIRE", "k", "99999999999999999", "NX", "XX"}) == nx_and);
  CHECK(serve(tier, {"EXPIRE", "k", "abc", "foo"}) == "-ERR Unsupported option foo\r\n");
  CHECK(serve(tier, {"GET", "k"}) == "$1\r\nv\r\n");  // nothing applied

  CHECK(serve(tier, {"SET", "k", "v1", "EX", "5", "EX", "6"}) == "+OK\r\n");
  CHECK(serve(tier, {"SET", "k", "v2", "EX", "abc", "EX", "5"}) == "+OK\r\n");
  CHECK(serve(tier, {"SET", "k", "v3", "EXAT", "5", "EXAT", "99999999999"}) == "+OK\r\n");
  CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv3\r\n");
  CHECK(serve(tier, {"SET", "k", "v4", "EX", "5", "PX", "6"}) == "-ERR syntax error\r\n");
  CHECK(serve(tier, {"SET", "k", "v4", "EX", "5", "KEEPTTL"}) == "-ERR syntax error\r\n");
  CHECK(serve(tier, {"SET", "k", "v4", "EX", "abc", "FOO"}) == "-ERR syntax error\r\n");
  CHECK(serve(tier, {"SET", "k", "v4", "PX", "5", "PX", "0"}) ==
        "-ERR invalid expire time in 'set' command\r\n");
  CHECK(serve(tier, {"SET", "k", "v4", "EX", "5", "EX", "x"}) ==
        "-ERR value is not an integer or out of range\r\n");
  CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv3\r\n");
}

// An option the sidecar quotes back in its error may hold CR and LF (a bulk string holds any
// bytes): written as spaces, as Redis does, or the rest of it would reach the client as a reply of
// its own ("+OK") and every reply after it would answer the wrong request.
TEST_CASE("tier: in fallback, a client's bytes in an error cannot end the reply",
          "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  CHECK(serve(tier, {"SET", "k", "v"}) == "+OK\r\n");
  // Redis 7.0 answers exactly these (checked against redis-server).
  CHECK(serve(tier, {"PEXPIRE", "k", "10", "a\r\n+OKb"}) == "-ERR Unsupported option a  +OKb\r\n");
  CHECK(serve(tier, {"EXPIRE", "k", "10", "\n"}) == "-ERR Unsupported option \r\n");
  CHECK(serve(tier, {"EXPIRE", "k", "10", "x\r\ny\n"}) == "-ERR Unsupported option x  y\r\n");
  CHECK(serve(tier, {"GET", "k"}) == "$1\r\nv\r\n");
}

// A SETEX the upstream acknowledged with a time that passes 64 bits (Redis would have refused
// it; another server might not) stores nothing rather than overflow.
TEST_CASE("tier: an acknowledged SETEX past 64 bits is not stored", "[tier]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  pass(tier, {"SETEX", "k", "9223372036854775807", "v"}, "+OK\r\n");
  CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");  // (fallback: L1 does not hold it)
  pass(tier, {"PSETEX", "p", "9223372036854775807", "v"}, "+OK\r\n");
  CHECK(serve(tier, {"GET", "p"}) == "$1\r\nv\r\n");
}

TEST_CASE("tier: in fallback, values from GET and MGET replies have no expiry to tell",
          "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  const std::string unknown =
      "-UNAVAILABLE upstream unreachable and the local cache does not know the key's expiry\r\n";
  pass(tier, {"GET", "g"}, "$1\r\nv\r\n");  // the upstream may have had a TTL on it
  pass(tier, {"MGET", "m"}, "*1\r\n$1\r\nw\r\n");
  pass(tier, {"GET", "n"}, "$1\r\n5\r\n");
  pass(tier, {"SET", "s", "x"}, "+OK\r\n");  // a SET without EX leaves the key persistent
  CHECK(serve(tier, {"GET", "g"}) == "$1\r\nv\r\n");
  for (const char* cmd : {"TTL", "PTTL"})
    for (const char* key : {"g", "m"}) CHECK(serve(tier, {cmd, key}) == unknown);
  CHECK(serve(tier, {"TTL", "s"}) == ":-1\r\n");
  for (const char* cond : {"NX", "XX", "GT", "LT"})
    CHECK(serve(tier, {"EXPIRE", "g", "10", cond}) == unknown);
  // KEEPTTL and INCR keep the expiry as it is: still not known.
  CHECK(serve(tier, {"SET", "m", "w2", "KEEPTTL"}) == "+OK\r\n");
  CHECK(serve(tier, {"TTL", "m"}) == unknown);
  CHECK(serve(tier, {"SET", "fresh", "x", "KEEPTTL"}) == "+OK\r\n");  // L1 held no "fresh"
  CHECK(serve(tier, {"TTL", "fresh"}) == unknown);
  CHECK(serve(tier, {"INCR", "n"}) == ":6\r\n");
  CHECK(serve(tier, {"TTL", "n"}) == unknown);
  // An EXPIRE without a condition sets it: known from then on.
  CHECK(serve(tier, {"EXPIRE", "g", "10"}) == ":1\r\n");
  CHECK(serve(tier, {"TTL", "g"}) == ":10\r\n");
  CHECK(tier.journal().size() == 4);  // SET KEEPTTL twice, INCR, EXPIRE: the refused ones are not
}

TEST_CASE("tier: a full journal or reject mode refuses writes and changes nothing",
          "[tier][fallback]") {
  const config small = make_config({"tiny-journal"});
  cache_tier tier(small);
  std::string last;
  int accepted = 0;
  for (int i = 0; i < 20; ++i) {
    last = serve(tier, {"SET", "k" + std::to_string(i), "value"});
    if (last == "+OK\r\n") ++accepted;
  }
  CHECK(accepted > 0);
  CHECK(accepted < 20);
  CHECK(last ==
        "-UNAVAILABLE upstream unreachable and the fallback journal is full "
        "(--fallback-journal-max-bytes); the write was not applied\r\n");
  CHECK(serve(tier, {"EXISTS", "k19"}) == ":0\r\n");
  CHECK(tier.journal().size() == static_cast<std::size_t>(accepted));
  CHECK(tier.counters().rejected == static_cast<std::uint64_t>(20 - accepted));

  const config reject = make_config({"reject"});
  cache_tier r(reject);
  CHECK(serve(r, {"SET", "k", "v"}) ==
        "-UNAVAILABLE upstream unreachable; writes are rejected until it is back "
        "(--fallback-writes=reject)\r\n");
  CHECK(serve(r, {"DEL", "k"}).rfind("-UNAVAILABLE", 0) == 0);
  CHECK(r.journal().empty());
}

// The sidecar answers from L1 until the whole journal is replayed: a key whose last journaled
// write has been replayed keeps its value in L1 until then (the upstream holds it already), and
// only then does L1 forget it (the upstream's result is the truth from then on).
TEST_CASE("tier: replayed writes' keys are kept until the replay is done", "[tier][fallback]") {
  const config cfg = make_config({"miss=error"});
  cache_tier tier(cfg);
  CHECK(serve(tier, {"SET", "k", "v"}) == "+OK\r\n");
  CHECK(serve(tier, {"SET", "j", "w"}) == "+OK\r\n");
  request r({"SET", "k", "v"});
  tier.replayed(0, r.args);
  tier.journal().pop_front();
  CHECK(serve(tier, {"GET", "k"}) == "$1\r\nv\r\n");  // not a miss: the replay goes on
  CHECK(tier.counters().replayed == 1);
  request s({"SET", "j", "w"});
  tier.replayed(0, s.args);
  tier.journal().pop_front();
  CHECK(serve(tier, {"MGET", "k", "j"}) == "*2\r\n$1\r\nv\r\n$1\r\nw\r\n");
  tier.replay_done();
  CHECK(serve(tier, {"EXISTS", "k", "j"}) == ":0\r\n");
  tier.replay_done();  // nothing more to drop
  CHECK(tier.counters().replayed == 2);
}

// A client that writes a key while the journal replays reads its own write: the key's earlier
// journaled writes replaying do not make L1 forget it, nor does its last one before the replay is
// done.
TEST_CASE("tier: a key written again keeps its newest value until its last write replays",
          "[tier][fallback]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  CHECK(serve(tier, {"SET", "k", "v1"}) == "+OK\r\n");
  CHECK(serve(tier, {"MSET", "k", "v2", "m", "x"}) == "+OK\r\n");
  CHECK(serve(tier, {"SET", "other", "o"}) == "+OK\r\n");
  // As the upstream monitor replays: the front record, acknowledged, then dropped.
  const auto replay = [&](std::vector<std::string> words) {
    const request r(std::move(words));
    REQUIRE(tier.journal().front().frame == r.frame);
    tier.replayed(0, r.args);
    tier.journal().pop_front();
  };
  replay({"SET", "k", "v1"});  // MSET's k waits
  CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv2\r\n");
  CHECK(serve(tier, {"SET", "k", "v3"}) == "+OK\r\n");  // written during the replay
  replay({"MSET", "k", "v2", "m", "x"});                // the SET k v3 waits
  CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv3\r\n");
  CHECK(serve(tier, {"GET", "m"}) == "$1\r\nx\r\n");  // its last write replayed: kept
  replay({"SET", "other", "o"});
  CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv3\r\n");
  CHECK(serve(tier, {"GET", "other"}) == "$1\r\no\r\n");
  replay({"SET", "k", "v3"});
  CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv3\r\n");
  CHECK(tier.journal().empty());
  tier.replay_done();  // the upstream's values are the truth again
  CHECK(serve(tier, {"EXISTS", "k", "m", "other"}) == ":0\r\n");
  CHECK(tier.counters().replayed == 4);
}

// A replay that fails (the upstream is lost again) does not end with replay_done(): fallback
// resumes, and the values the clients were acknowledged are still served. They go when a later
// replay is done.
TEST_CASE("tier: after a failed replay, kept values are served until a replay is done",
          "[tier][fallback]") {
  const config cfg = make_config({"miss=error"});
  cache_tier tier(cfg);
  CHECK(serve(tier, {"SET", "a", "1"}) == "+OK\r\n");
  CHECK(serve(tier, {"SET", "b", "2"}) == "+OK\r\n");
  request r({"SET", "a", "1"});
  tier.replayed(0, r.args);
  tier.journal().pop_front();
  // The replay fails here; in fallback again, more writes.
  CHECK(serve(tier, {"GET", "a"}) == "$1\r\n1\r\n");
  CHECK(serve(tier, {"INCR", "a"}) == ":2\r\n");
  CHECK(serve(tier, {"SET", "c", "3"}) == "+OK\r\n");
  for (std::vector<std::string> w :
       std::vector<std::vector<std::string>>{{"SET", "b", "2"}, {"INCR", "a"}, {"SET", "c", "3"}}) {
    const request q(w);
    REQUIRE(tier.journal().front().frame == q.frame);
    tier.replayed(0, q.args);
    tier.journal().pop_front();
    CHECK(serve(tier, {"MGET", "a", "b"}) == "*2\r\n$1\r\n2\r\n$1\r\n2\r\n");
  }
  tier.replay_done();
  CHECK(serve(tier, {"EXISTS", "a", "b", "c"}) == ":0\r\n");
}

// The list of kept keys is bounded as the journal is: its bytes count against
// --fallback-journal-max-bytes. Replays that keep failing while fallback fills the journal again
// could otherwise grow it without end; past the bound a replayed key is dropped at once (a miss
// until the replay is done, as before keys were kept).
TEST_CASE("tier: the keys kept for the replay are bounded by the journal's size",
          "[tier][fallback]") {
  const config small = make_config({"tiny-journal"});  // 200 bytes
  cache_tier tier(small);
  int kept = 0;
  for (int i = 0; i < 40; ++i) {  // each write replayed on its own, the journal never full
    const std::string key = "key" + std::to_string(i);
    REQUIRE(serve(tier, {"SET", key, "v"}) == "+OK\r\n");
    const request r({"SET", key, "v"});
    tier.replayed(0, r.args);
    tier.journal().pop_front();
  }
  for (int i = 0; i < 40; ++i)
    kept += serve(tier, {"EXISTS", "key" + std::to_string(i)}) == ":1\r\n" ? 1 : 0;
  CHECK(kept > 0);
  CHECK(kept < 40);
  // Each is charged its key and its entry in the list: fewer than 10 fit in 200 bytes.
  CHECK(kept < 10);
  CHECK(serve(tier, {"EXISTS", "key0"}) == ":1\r\n");  // the first ones are kept
  CHECK(serve(tier, {"EXISTS", "key39"}) == ":0\r\n");
  tier.replay_done();
  CHECK(serve(tier, {"EXISTS", "key0"}) == ":0\r\n");
  // The bound applies to each replay anew.
  CHECK(serve(tier, {"SET", "again", "v"}) == "+OK\r\n");
  const request r({"SET", "again", "v"});
  tier.replayed(0, r.args);
  CHECK(serve(tier, {"GET", "again"}) == "$1\r\nv\r\n");
}

TEST_CASE("tier: --cache-mode=off stores and serves nothing", "[tier]") {
  const config cfg = make_config({"off"});
  cache_tier tier(cfg);
  request get({"GET", "a"});
  CHECK_FALSE(tier.wants_reply(get.info()));
  CHECK(serve(tier, {"GET", "a"}).rfind("-UNAVAILABLE", 0) == 0);
}

TEST_CASE("health: connecting, healthy, failing, fallback, recovering, healthy", "[health]") {
  health_fsm h({1000, 2});
  CHECK(h.state() == upstream_state::connecting);
  CHECK_FALSE(h.upstream_up());
  CHECK_FALSE(h.reached());
  CHECK_FALSE(h.serving_from_l1());
  CHECK_FALSE(h.on_tick(5000));  // waiting for the first answer is not failing
  CHECK(h.on_probe_ok(0, 0.3));
  CHECK(h.transition() == "connecting -> healthy: the upstream answers");
  CHECK(h.upstream_up());
  CHECK(h.reached());
  CHECK_FALSE(h.on_probe_ok(50, 0.3));
  CHECK(h.on_failure(100, "connection refused"));
  CHECK(h.state() == upstream_state::failing);
  CHECK(h.transition() == "healthy -> failing: connection refused");
  CHECK_FALSE(h.serving_from_l1());
  CHECK_FALSE(h.on_tick(1099));
  CHECK(h.on_tick(1100));
  CHECK(h.state() == upstream_state::fallback);
  CHECK(h.serving_from_l1());
  CHECK_FALSE(h.on_probe_ok(1200, 0.5));  // one good probe is not enough
  CHECK_FALSE(h.on_failure(1300, "timeout"));
  CHECK_FALSE(h.on_probe_ok(1400, 0.5));  // the count started again
  CHECK(h.on_probe_ok(1500, 0.5));
  CHECK(h.state() == upstream_state::recovering);
  CHECK(h.serving_from_l1());
  CHECK(h.on_replay_done(1600));
  CHECK(h.state() == upstream_state::healthy);
  CHECK(h.transitions() == 5);
  CHECK(h.fallback_entries() == 1);

  // A blip: failing, then a good probe, no fallback.
  CHECK(h.on_failure(2000, "reset"));
  CHECK(h.on_probe_ok(2100, 0.2));
  CHECK(h.state() == upstream_state::healthy);
  // The last error stays after recovery, with its time: the state says it is over.
  CHECK(h.last_error() == "reset");
  CHECK(h.last_error_at() == 2000);
  // Failure during replay goes back to fallback.
  health_fsm quick({0, 1});
  CHECK(quick.state() == upstream_state::connecting);
  CHECK(quick.on_failure(0, "refused"));
  CHECK(quick.state() == upstream_state::fallback);
  CHECK(quick.on_probe_ok(10, 0.1));
  CHECK(quick.state() == upstream_state::recovering);
  CHECK(quick.on_failure(20, "lost during replay"));
  CHECK(quick.state() == upstream_state::fallback);
  CHECK(quick.last_error() == "lost during replay");
  CHECK(quick.reached());
}

TEST_CASE("health: a replay refused for now holds recovery until the given time", "[health]") {
  health_fsm h({0, 2});
  CHECK(h.on_probe_ok(0, 0.3));
  CHECK(h.on_failure(100, "connection refused"));
  CHECK(h.state() == upstream_state::fallback);
  CHECK_FALSE(h.on_probe_ok(200, 0.3));
  CHECK(h.on_probe_ok(300, 0.3));
  CHECK(h.state() == upstream_state::recovering);
  h.hold_recovery(1300);
  CHECK(h.on_failure(310, "journal replay failed: the upstream refuses its writes (READONLY)"));
  CHECK(h.state() == upstream_state::fallback);
  for (std::int64_t t = 400; t < 1300; t += 100) CHECK_FALSE(h.on_probe_ok(t, 0.3));
  CHECK(h.last_probe_ms() == 0.3);  // probes still count as answered
  CHECK_FALSE(h.on_probe_ok(1300, 0.3));
  CHECK(h.on_probe_ok(1400, 0.3));
  CHECK(h.state() == upstream_state::recovering);
}

TEST_CASE("health: an upstream never reached fails into fallback, but is never reached",
          "[health]") {
  health_fsm h({1000, 2});
  CHECK(h.on_failure(100, "certificate verify failed"));
  CHECK(h.transition() == "connecting -> failing: certificate verify failed");
  CHECK(h.on_tick(1100));
  CHECK(h.state() == upstream_state::fallback);
  CHECK(h.serving_from_l1());
  CHECK_FALSE(h.reached());
  CHECK_FALSE(h.upstream_up());
  CHECK_FALSE(h.on_probe_ok(1200, 0.4));
  CHECK(h.on_probe_ok(1300, 0.4));
  CHECK(h.state() == upstream_state::recovering);
  CHECK(h.reached());
}

TEST_CASE("tier: coherent modes serve only entries the channel protects now", "[tier][near]") {
  config cfg = make_config();
  cfg.cache_prefix = "";
  for (const auto m : {cache_tier::cache_mode::tracking, cache_tier::cache_mode::keyspace}) {
    INFO("mode " << cache_tier::mode_name(m));
    CHECK(cache_tier::coherent(m));
    CHECK(cache_tier::parse_mode(cache_tier::mode_name(m)) == m);
    cache_tier tier(cfg);
    tier.set_mode(m);
    pass(tier, {"GET", "plain"}, "$1\r\nv\r\n");  // filled from traffic: not protected
    CHECK_FALSE(tier.hit(0, "plain", t0));
    tier.store_tracked(0, "k", "v1", 0, t0);
    REQUIRE(hit_text(tier, 0, "k") == "v1");
    CHECK_FALSE(tier.hit(1, "k", t0));  // another db
    tier.invalidated(0, "k");
    CHECK_FALSE(tier.hit(0, "k", t0));
    tier.store_tracked(0, "k", "v2", 0, t0);
    tier.channel_lost();
    CHECK_FALSE(tier.hit(0, "k", t0));  // still in L1, but no longer fresh
    tier.store_tracked(0, "k", "v3", t0 + 10, t0);
    CHECK(hit_text(tier, 0, "k", t0 + 9) == "v3");
    CHECK_FALSE(tier.hit(0, "k", t0 + 10));  // the server TTL shortened it
    CHECK(tier.counters().pushed_invalidations == 1);
  }
  CHECK_FALSE(cache_tier::coherent(cache_tier::cache_mode::ttl));
  CHECK_FALSE(cache_tier::coherent(cache_tier::cache_mode::fallback));
  CHECK(cache_tier::parse_mode("keyspace") == cache_tier::cache_mode::keyspace);
}

// Redis invalidates a tracked key once, for the first write after the channel read it: for a SET
// through the sidecar, that invalidation comes after (or before) the SET's own reply. The value the
// SET stored stays for fallback; a value read on the channel, or from a GET reply, goes.
TEST_CASE("tier: tracking mode keeps the value of its own write through the write's invalidation",
          "[tier][near][fallback]") {
  for (const auto m : {cache_tier::cache_mode::tracking, cache_tier::cache_mode::keyspace}) {
    INFO("mode " << cache_tier::mode_name(m));
    cache_tier tier(make_config());
    tier.set_mode(m);
    tier.store_tracked(0, "k", "old", 0, t0);
    pass(tier, {"SET", "k", "new"}, "+OK\r\n");
    CHECK_FALSE(tier.hit(0, "k", t0));  // not tracked: never a hit
    tier.invalidated(0, "k");           // the SET's own
    // Keyspace notifications come for every write, later ones too: nothing is kept there.
    const bool kept = m == cache_tier::cache_mode::tracking;
    CHECK(serve(tier, {"GET", "k"}) == (kept ? "$3\r\nnew\r\n" : "$-1\r\n"));
    pass(tier, {"SET", "k", "newer", "EX", "100"}, "+OK\r\n");
    tier.invalidated(0, "k");
    CHECK(serve(tier, {"GET", "k"}) == (kept ? "$5\r\nnewer\r\n" : "$-1\r\n"));
    // What the channel reads is dropped by an invalidation, as is a GET reply's value.
    tier.store_tracked(0, "k", "read", 0, t0);
    tier.invalidated(0, "k");
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
    pass(tier, {"GET", "g"}, "$1\r\nv\r\n");
    tier.invalidated(0, "g");
    CHECK(serve(tier, {"GET", "g"}) == "$-1\r\n");
    // A write in flight (its key hidden) when the invalidation comes: its reply stores the value.
    request set(std::vector<std::string>{"SET", "h", "w"});
    tier.on_request(0, set.info(), set.args);
    tier.invalidated(0, "h");
    tier.on_reply(0, set.info(), set.args, "+OK\r\n", t0, wall0);
    CHECK(serve(tier, {"GET", "h"}) == "$1\r\nw\r\n");
  }
}

TEST_CASE("tier: ttl mode serves as hits only values whose server TTL it knows", "[tier][ttl]") {
  const config cfg = make_config();  // --cache-prefix set, ttl mode
  cache_tier tier(cfg);
  tier.set_mode(cache_tier::cache_mode::ttl);
  // A GET reply carries no TTL: the key may expire on the server long before --cache-ttl.
  pass(tier, {"GET", "got"}, "$1\r\nv\r\n");
  CHECK(hit_text(tier, 0, "got") == "(miss)");
  CHECK(serve(tier, {"GET", "got"}) == "$1\r\nv\r\n");  // still there for the fallback
  // Read with its PTTL (the near cache's read connection), or written with or without EX.
  tier.store_tracked(0, "read", "r", t0 + 1000, t0);
  CHECK(hit_text(tier, 0, "read") == "r");
  CHECK(hit_text(tier, 0, "read", t0 + 1000) == "(miss)");  // expired with the server's TTL
  pass(tier, {"SET", "plain", "p"}, "+OK\r\n");
  CHECK(hit_text(tier, 0, "plain") == "p");
  pass(tier, {"SET", "ex", "e", "PX", "500"}, "+OK\r\n");
  CHECK(hit_text(tier, 0, "ex", t0 + 499) == "e");
  CHECK(hit_text(tier, 0, "ex", t0 + 500) == "(miss)");
}

TEST_CASE("tier: tracking mode answers nil for a key read as absent until it is written",
          "[tier][near]") {
  config cfg = make_config();
  cfg.cache_prefix = "";
  cache_tier tier(cfg);
  tier.set_mode(cache_tier::cache_mode::tracking);
  tier.store_tracked_absent(0, "gone", t0);
  CHECK(hit_text(tier, 0, "gone") == "(nil)");
  CHECK(hit_text(tier, 1, "gone") == "(miss)");               // another db
  CHECK(hit_text(tier, 0, "gone", t0 + 60'000) == "(miss)");  // older than --cache-ttl
  // For the fallback's answers L1 does not hold the key: GET says so as for any key it lacks.
  tier.store_tracked_absent(0, "gone", t0);
  CHECK(serve(tier, {"EXISTS", "gone"}) == ":0\r\n");
  CHECK(serve(tier, {"TTL", "gone"}) == ":-2\r\n");
  CHECK(serve(tier, {"GET", "gone"}) == "$-1\r\n");
  cache_tier strict(make_config({"miss=error"}));
  strict.set_mode(cache_tier::cache_mode::tracking);
  strict.store_tracked_absent(0, "gone", t0);
  CHECK(serve(strict, {"GET", "gone"}).starts_with("-UNAVAILABLE"));
  CHECK(serve(strict, {"INCR", "gone"}).starts_with("-UNAVAILABLE"));
  // Invalidated, the channel lost, or written through the sidecar: no longer answered.
  tier.invalidated(0, "gone");
  CHECK(hit_text(tier, 0, "gone") == "(miss)");
  tier.store_tracked_absent(0, "gone", t0);
  tier.channel_lost();
  CHECK(hit_text(tier, 0, "gone") == "(miss)");
  tier.store_tracked_absent(0, "gone", t0);
  request set({"SET", "gone", "back"});
  tier.on_request(0, set.info(), set.args);
  CHECK(hit_text(tier, 0, "gone") == "(miss)");
  tier.on_reply(0, set.info(), set.args, "+OK\r\n", t0, wall0);
  CHECK(serve(tier, {"GET", "gone"}) == "$4\r\nback\r\n");
  tier.store_tracked_absent(0, "gone", t0);
  tier.flushed();
  CHECK(hit_text(tier, 0, "gone") == "(miss)");
  // Keyspace notifications may leave out the event that creates a key: nothing is kept there,
  // nor in ttl mode.
  for (const auto m : {cache_tier::cache_mode::keyspace, cache_tier::cache_mode::ttl}) {
    tier.set_mode(m);
    tier.store_tracked_absent(0, "other", t0);
    CHECK(hit_text(tier, 0, "other") == "(miss)");
    CHECK(tier.l1().entries() == 0);
  }
}

TEST_CASE("tier: on_write hears each written key at request and at reply, and flushes", "[tier]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  std::map<std::string, int> heard;  // "db:key" -> times
  tier.on_write(
      [&](int db, std::string_view key) { ++heard[std::to_string(db) + ":" + std::string(key)]; });
  // A write is heard when it goes out and again when its reply is in (it has run by then).
  const auto sent = [&](std::vector<std::string> words, std::string_view reply, int db = 0) {
    const request r(std::move(words));
    tier.on_request(db, r.info(), r.args);
    const auto before = heard;
    tier.on_reply(db, r.info(), r.args, reply, t0, wall0);
    return before;
  };
  CHECK(sent({"SET", "k", "v"}, "+OK\r\n", 3) == std::map<std::string, int>{{"3:k", 1}});
  CHECK(heard["3:k"] >= 2);
  const auto reads = heard;
  pass(tier, {"GET", "k"}, "$1\r\nv\r\n", 3);  // reads: not writes
  CHECK(heard == reads);
  sent({"DEL", "a", "b"}, ":2\r\n");
  CHECK(heard["0:a"] >= 2);
  CHECK(heard["0:b"] >= 2);
  sent({"SET", "c", "v", "NX"}, "$-1\r\n");  // not applied, but it ran
  CHECK(heard["0:c"] >= 2);
  sent({"FLUSHALL"}, "+OK\r\n");
  CHECK(heard["-1:"] >= 2);
}

// Requests on two upstream connections: Redis may run them in either order, and their replies
// may be handled in the other. What L1 keeps must be what Redis holds, or nothing.
TEST_CASE("tier: replies raced by another connection's writes do not fill L1", "[tier][fence]") {
  const config cfg = make_config();
  cache_tier tier(cfg);
  constexpr std::uint32_t conn_a = 1, conn_b = 2;
  // A request sent on `conn` now: its flight, after on_request.
  const auto send = [&](const request& r, std::uint32_t conn) {
    const cache_tier::flight f{conn, tier.write_clock()};
    tier.on_request(0, r.info(), r.args, f);
    return f;
  };
  const auto reply = [&](const request& r, cache_tier::flight f, std::string_view bytes) {
    tier.on_reply(0, r.info(), r.args, bytes, t0, wall0, f);
  };

  SECTION("two SETs of one key, replies in the other order than they ran: the key goes") {
    const request from_a({"SET", "k", "from-A"}), from_b({"SET", "k", "from-B"});
    const auto fa = send(from_a, conn_a);  // ran first
    const auto fb = send(from_b, conn_b);  // ran last: Redis holds from-B
    reply(from_b, fb, "+OK\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$6\r\nfrom-B\r\n");  // A's is still out: B's stands so far
    reply(from_a, fa, "+OK\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");  // either could be last: neither is kept
  }
  SECTION("two SETs of one key, replies in the order they were sent: the key goes too") {
    const request from_a({"SET", "k", "from-A"}), from_b({"SET", "k", "from-B"});
    const auto fa = send(from_a, conn_a);
    const auto fb = send(from_b, conn_b);
    reply(from_a, fa, "+OK\r\n");
    reply(from_b, fb, "+OK\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
    // The next SET alone is kept again.
    const request again({"SET", "k", "again"});
    reply(again, send(again, conn_a), "+OK\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$5\r\nagain\r\n");
  }
  SECTION("a GET that ran before another connection's DEL, its reply handled after") {
    pass(tier, {"GET", "k"}, "$3\r\nold\r\n");
    const request get({"GET", "k"}), del({"DEL", "k"});
    const auto fg = send(get, conn_a);
    const auto fd = send(del, conn_b);
    reply(del, fd, ":1\r\n");
    reply(get, fg, "$3\r\nold\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
  }
  SECTION("a GET sent while another connection's SET was out, replied after the SET's") {
    const request set({"SET", "k", "new"}), get({"GET", "k"});
    const auto fs = send(set, conn_b);
    const auto fg = send(get, conn_a);  // may run before the SET: "old"
    reply(set, fs, "+OK\r\n");
    reply(get, fg, "$3\r\nold\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$3\r\nnew\r\n");  // the SET's value stands
  }
  SECTION("a GET replied before the SET it raced: the SET's reply stores over it") {
    const request set({"SET", "k", "new"}), get({"GET", "k"});
    const auto fs = send(set, conn_b);
    const auto fg = send(get, conn_a);
    reply(get, fg, "$3\r\nold\r\n");
    reply(set, fs, "+OK\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$3\r\nnew\r\n");
  }
  SECTION("one connection's requests run in order: a SET then a GET of its key are both kept") {
    const request set({"SET", "k", "v1"}), get({"GET", "k"}), set2({"SET", "k", "v2"});
    const auto fs = send(set, conn_a);
    const auto fg = send(get, conn_a);
    const auto fs2 = send(set2, conn_a);
    reply(set, fs, "+OK\r\n");
    reply(get, fg, "$2\r\nv1\r\n");
    reply(set2, fs2, "+OK\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$2\r\nv2\r\n");
  }
  SECTION("MSET keys raced one by one") {
    const request mset({"MSET", "a", "1", "b", "1"}), set_b({"SET", "b", "2"});
    const auto fm = send(mset, conn_a);
    const auto fb = send(set_b, conn_b);
    reply(set_b, fb, "+OK\r\n");
    reply(mset, fm, "+OK\r\n");
    CHECK(serve(tier, {"MGET", "a", "b"}) == "*2\r\n$1\r\n1\r\n$-1\r\n");
  }
  SECTION("a flush on another connection: reads in flight across it are not kept") {
    const request get({"GET", "k"}), flush({"FLUSHALL"});
    const auto fg = send(get, conn_a);
    const auto ff = send(flush, conn_b);
    reply(flush, ff, "+OK\r\n");
    reply(get, fg, "$3\r\nold\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
  }
  SECTION("writes acknowledged in fallback: no upstream reply overwrites them before replay") {
    const request get({"GET", "f"});
    const auto fg = send(get, conn_a);  // a client on a dedicated connection still reads upstream
    CHECK(serve(tier, {"SET", "f", "new"}) == "+OK\r\n");  // journaled
    reply(get, fg, "$3\r\nold\r\n");
    CHECK(serve(tier, {"GET", "f"}) == "$3\r\nnew\r\n");
    const request get2({"GET", "f"}), set({"SET", "g", "x"});
    reply(get2, send(get2, conn_a),
          "$3\r\nold\r\n");  // sent after it: still older than the journal
    reply(set, send(set, conn_a), "+OK\r\n");
    CHECK(serve(tier, {"GET", "f"}) == "$3\r\nnew\r\n");
    CHECK(serve(tier, {"GET", "g"}) == "$-1\r\n");
    // Replayed: the journal is empty again, and a read in flight across the replay is not kept.
    const request get3({"GET", "f"});
    const auto f3 = send(get3, conn_a);
    const request replayed({"SET", "f", "new"});
    tier.journal().pop_front();
    tier.replayed(0, replayed.args);
    reply(get3, f3, "$3\r\nold\r\n");
    CHECK(serve(tier, {"GET", "f"}) == "$3\r\nnew\r\n");  // kept until the replay is done
    tier.replay_done();
    CHECK(serve(tier, {"GET", "f"}) == "$-1\r\n");
    const request get4({"GET", "f"});
    reply(get4, send(get4, conn_a), "$3\r\nnew\r\n");
    CHECK(serve(tier, {"GET", "f"}) == "$3\r\nnew\r\n");
  }
  SECTION("a write that failed may still run: its key fills nothing until the hold ends") {
    pass(tier, {"GET", "k"}, "$3\r\nold\r\n");
    const request set({"SET", "k", "new"}), get({"GET", "k"});
    const auto fs = send(set, conn_a);
    tier.write_unsure(0, set.info(), set.args, fs, t0);  // its connection failed it
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
    reply(get, send(get, conn_b), "$3\r\nold\r\n");  // ran before the failed SET did
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
    tier.release_holds(t0 + 1'000);  // not yet: 2 x --command-timeout-ms
    const request early({"GET", "k"});
    reply(early, send(early, conn_b), "$3\r\nold\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
    tier.release_holds(t0 + 60'000);
    const request later({"GET", "k"});
    reply(later, send(later, conn_b), "$3\r\nnew\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$3\r\nnew\r\n");
  }
  SECTION("a write abandoned (its reply will not be applied) drops its key, and races reads") {
    const request set({"SET", "k", "x"}), get({"GET", "k"});
    const auto fg = send(get, conn_a);
    const auto fs = send(set, conn_b);
    tier.on_request(0, set.info(), set.args, fs, false);  // abandoned
    CHECK(tier.l1().entries() == 0);
    reply(get, fg, "$3\r\nold\r\n");
    CHECK(serve(tier, {"GET", "k"}) == "$-1\r\n");
  }
}
