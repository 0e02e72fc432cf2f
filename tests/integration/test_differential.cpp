// Differential tests: the same random command sequence, from the same number of clients in the
// same order, goes to a sidecar in front of one redis-server and straight to a second, reference
// redis-server; every reply must be byte for byte the same. Each client sends one command or a
// pipeline or a MULTI block and reads all its replies before the next client's turn, so both sides
// see the same order of execution and a correct sidecar cannot differ: an L1 entry served after a
// write through the sidecar made it stale, a reply given to the wrong client, a lost SELECT, a
// transaction's writes not invalidated, would all show. All writes go through the sidecar (the
// staleness of writes made behind its back is test_near_cache's subject). Run in each cache mode,
// RESP2 and RESP3, over a few keys in two dbs, so that the operations keep colliding. Some turns
// involve two clients: a message one client PUBLISHes to another's channel and pattern, a BLPOP
// one client blocks in until another pushes.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "tests/integration/near_support.hpp"

namespace redis_sidecar::test {
namespace {

std::string show(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words)
    s += (s.empty() ? "" : " ") + (w.size() > 40 ? w.substr(0, 40) + "..." : w);
  return s;
}

std::string printable(std::string_view bytes) {
  std::string s;
  for (char ch : bytes) {
    if (ch == '\r')
      s += "\\r";
    else if (ch == '\n')
      s += "\\n";
    else
      s += ch;
  }
  return s.size() > 300 ? s.substr(0, 300) + "..." : s;
}

// Random commands over keys t:0..t:5 (the prefix --cache-prefix names in ttl mode). Values carry
// the step number, so that an old value served again is told apart from the current one.
class generator {
 public:
  /// `prefix`: the keys are prefix + 0..5. `whole_db`: also SWAPDB, FLUSHDB and EXISTS of every
  /// key, which reach other clients' keys.
  generator(std::uint32_t seed, bool short_expiry, std::string prefix = "t:", bool whole_db = true)
      : rng_(seed), short_expiry_(short_expiry), prefix_(std::move(prefix)), whole_db_(whole_db) {}

  std::string key() {
    const std::uint32_t k = pick(7);
    return k < 6 ? prefix_ + std::to_string(k) : binary_key(prefix_);
  }
  /// A key with bytes that need RESP's length prefix (CR, LF, NUL, space).
  static std::string binary_key(const std::string& prefix) {
    return prefix + std::string("b\r\n\0 x", 6);
  }
  std::string value() {
    switch (pick(6)) {
      case 0: return std::to_string(static_cast<int>(pick(200)) - 100);  // INCR-able
      case 1: return std::string(64, 'x') + std::to_string(step_);
      case 2: return "";
      default: return "v" + std::to_string(step_);
    }
  }
  std::uint32_t pick(std::uint32_t n) {
    return std::uniform_int_distribution<std::uint32_t>(0, n - 1)(rng_);
  }

  /// One command that may appear anywhere (also queued inside MULTI or in a pipeline).
  /// `sleep_after`: a short expiry was set; wait for it to pass before going on.
  /// `alone`: the command is a turn of its own, so it may set a short expiry (in a pipeline or a
  /// transaction the next command could run on either side of the expiry).
  std::vector<std::string> command(bool& sleep_after, bool alone = false) {
    ++step_;
    sleep_after = false;
    const std::uint32_t r = pick(118);
    if (r < 26) return {"GET", key()};
    if (r < 34) return {"SET", key(), value()};
    if (r < 42) {  // SET with options
      std::vector<std::string> c{"SET", key(), value()};
      switch (pick(7)) {
        case 0: c.insert(c.end(), {"EX", "1000"}); break;
        case 1: c.push_back("NX"); break;
        case 2: c.push_back("XX"); break;
        case 3: c.push_back("GET"); break;
        case 4: c.push_back("KEEPTTL"); break;
        case 5: c.insert(c.end(), {"PX", "1000000", "GET"}); break;
        default:
          if (short_expiry_ && alone) {
            c.insert(c.end(), {"PX", "1"});
            sleep_after = true;
          }
          break;
      }
      return c;
    }
    if (r < 46) return {"MGET", key(), key(), key()};
    if (r < 49) return {"MSET", key(), value(), key(), value()};
    if (r < 50) return {"MSETNX", key(), value(), key(), value()};
    if (r < 54) return {"DEL", key(), key()};
    if (r < 55) return {"UNLINK", key()};
    if (r < 57) return {"EXISTS", key(), key()};
    if (r < 60) return {"INCR", key()};
    if (r < 61) return {"DECRBY", key(), "7"};
    if (r < 63) return {"APPEND", key(), value()};
    if (r < 65) return {"GETDEL", key()};
    if (r < 66) return {"GETSET", key(), value()};
    if (r < 67)
      return pick(2) ? std::vector<std::string>{"GETEX", key(), "PERSIST"}
                     : std::vector<std::string>{"GETEX", key(), "EX", "1000"};
    if (r < 69) return {"SETEX", key(), "1000", value()};
    if (r < 70) return {"PSETEX", key(), "1000000", value()};
    if (r < 71) return {"SETNX", key(), value()};
    if (r < 72) return {"SETRANGE", key(), std::to_string(pick(4)), value()};
    if (r < 73) return {"STRLEN", key()};
    if (r < 74) return {"GETRANGE", key(), "0", "3"};
    if (r < 75) return {"EXPIRE", key(), "1000"};
    if (r < 76) return {"PERSIST", key()};
    if (r < 77) {
      if (!short_expiry_ || !alone) return {"PEXPIRE", key(), "1000000"};
      sleep_after = true;
      return {"PEXPIRE", key(), "1"};
    }
    if (r < 79) return {"LPUSH", key(), value()};
    if (r < 80) return {"RPOP", key()};
    if (r < 81) return {"HSET", key(), "f", value()};
    if (r < 82) return {"TYPE", key()};
    if (r < 83) return {"RENAME", key(), key()};
    if (r < 84) return {"RENAMENX", key(), key()};
    if (r < 85) return {"COPY", key(), key(), "REPLACE"};
    if (r < 86) return {"COPY", key(), key(), "DB", std::to_string(pick(2))};
    if (r < 87) return {"MOVE", key(), std::to_string(pick(2))};
    if (r < 90) return {"SELECT", std::to_string(pick(2))};
    if (r < 92 && !whole_db_) return {"GET", key()};
    if (r < 91) return {"SWAPDB", "0", "1"};
    // Keys in the db (not DBSIZE: it counts expired keys Redis has not reclaimed yet, which
    // differs between two servers).
    if (r < 92)
      return pick(3) == 0
                 ? std::vector<std::string>{"FLUSHDB"}
                 : std::vector<std::string>{"EXISTS", "t:0", "t:1", "t:2", "t:3", "t:4", "t:5"};
    if (r < 93) return {"INCRBYFLOAT", key(), "1.5"};
    if (r < 94) return {"SETBIT", key(), "3", "1"};
    if (r < 95) return {"GETBIT", key(), "3"};
    if (r < 96) return {"LRANGE", key(), "0", "-1"};
    if (r < 97) return {"ECHO", value()};
    if (r < 98) return {"PING"};
    if (r < 100) return {"OBJECT", "ENCODING", key()};
    // Errors the sidecar must word as Redis does, client state, large values, a blocking command.
    if (r < 101) return {"NOSUCHCMD", key()};
    if (r < 102) return {"GET"};
    if (r < 103) return {"SELECT", "99"};
    if (r < 104) return {"CLIENT", "SETNAME", "n" + std::to_string(step_)};
    if (r < 105) return {"CLIENT", "GETNAME"};
    if (r < 106) return {"SET", key(), std::string(100'000 + pick(3), 'b') + std::to_string(step_)};
    if (r < 107) return {"SETRANGE", key(), "70000", "z"};
    if (r < 108) return {"PING", "hello"};
    if (r < 109) return {"WATCH", key()};  // inside MULTI: an error
    if (r < 110) return {"UNWATCH"};
    if (r < 111) return {"BLPOP", key(), "0.01"};  // in MULTI, or on a list with items: no wait
    // RESP3's other types: maps, doubles.
    if (r < 112) return {"HGETALL", key()};
    if (r < 113) return {"ZADD", key(), std::to_string(pick(5)) + ".5", value()};
    if (r < 114) return {"ZRANGE", key(), "0", "-1", "WITHSCORES"};
    if (r < 115) return {"ZSCORE", key(), value()};
    if (r < 116) return {"ZINCRBY", key(), "0.25", "v1"};
    if (r < 117) return {"HINCRBYFLOAT", key(), "f", "1.5"};
    return {"RESET"};  // back to RESP2, db 0, no name, out of MULTI
  }

 private:
  std::mt19937 rng_;
  bool short_expiry_;
  std::string prefix_;
  bool whole_db_;
  std::uint64_t step_ = 0;
};

// What one client sends in one turn: a command, a pipeline, or MULTI ... EXEC/DISCARD (sent as
// one pipeline).
struct turn {
  std::string batch;
  std::size_t replies = 0;
  bool pause = false;  // a short expiry was set: wait for it to pass
  bool compare = true;
  std::string what;  // for failure messages

  void add(const std::vector<std::string>& c, bool short_expiry = false) {
    batch += resp_array(c);
    ++replies;
    pause = pause || short_expiry;
    what += (what.empty() ? "" : " | ") + show(c);
  }
};

// hello: HELLO 2 or 3 (its reply names each server's own id and version: not compared).
// subscribed: commands in subscribed mode (errors in RESP2 but for PING, replies in RESP3).
// reply_modes: CLIENT REPLY SKIP or OFF ... ON around commands whose replies Redis then drops.
enum class shape { command, pipeline, transaction, long_pipeline, hello, subscribed, reply_modes };

shape pick_shape(generator& gen) {
  const std::uint32_t r = gen.pick(42);
  return r < 28   ? shape::command
         : r < 33 ? shape::pipeline
         : r < 38 ? shape::transaction
         : r < 39 ? shape::long_pipeline
         : r < 40 ? shape::hello
         : r < 41 ? shape::subscribed
                  : shape::reply_modes;
}

turn plan(generator& gen, shape sh) {
  turn t;
  bool s = false;
  const auto next = [&](bool alone) { return gen.command(s, alone); };
  switch (sh) {
    case shape::command: {
      const auto c = next(true);
      t.add(c, s);
      // Now and then as an inline command, when its words allow.
      const bool plain = std::all_of(c.begin(), c.end(), [](const std::string& w) {
        return !w.empty() && w.size() < 1000 &&
               w.find_first_of(std::string(" \"'\r\n\0", 6)) == std::string::npos;
      });
      if (plain && gen.pick(8) == 0) {
        t.batch.clear();
        for (const auto& w : c) t.batch += (t.batch.empty() ? "" : " ") + w;
        t.batch += "\r\n";
        t.what = "(inline) " + t.what;
      }
      break;
    }
    case shape::pipeline:
      for (std::uint32_t k = 0, n = 2 + gen.pick(7); k < n; ++k) {
        const auto c = next(false);
        t.add(c, s);
      }
      break;
    case shape::transaction:
      t.add({"MULTI"});
      for (std::uint32_t k = 0, n = 1 + gen.pick(4); k < n; ++k) {
        auto c = next(false);
        // Not in a transaction: the CLIENT subcommands the sidecar answers itself (refused
        // there: test_stateful).
        if (c[0] == "CLIENT") c = {"GET", gen.key()};
        t.add(c, s);
      }
      t.add({gen.pick(6) == 0 ? "DISCARD" : "EXEC"});
      break;
    case shape::long_pipeline:  // past the sidecar's read buffer and reply batching
      for (std::uint32_t k = 0, n = 100 + gen.pick(400); k < n; ++k) {
        const auto c = next(false);
        t.add(c, s);
      }
      break;
    case shape::hello:
      t.add({"HELLO", gen.pick(2) ? "3" : "2"});
      t.compare = false;
      break;
    case shape::subscribed:
      t.add({"SUBSCRIBE", "ch", "ch2"});
      ++t.replies;  // one confirmation per channel
      t.add({"PING"});
      t.add({"GET", gen.key()});
      t.add({"PSUBSCRIBE", "c*"});
      // Channels named: without, Redis lists them in its dict's order, which differs between
      // two servers (per-process hash seeds).
      t.add({"UNSUBSCRIBE", "ch", "ch2"});
      ++t.replies;
      t.add({"PUNSUBSCRIBE", "c*"});
      break;
    case shape::reply_modes: {
      // Not RESET here: it turns replies back on, and is answered.
      const auto quiet = [&] {
        auto c = next(false);
        if (c[0] == "RESET") c = {"GET", gen.key()};
        return c;
      };
      if (gen.pick(2) == 0) {
        t.add({"CLIENT", "REPLY", "SKIP"});
        t.add(quiet(), s);
        t.add(quiet(), s);
        t.replies -= 2;  // SKIP and the command after it are not answered
      } else {
        t.add({"CLIENT", "REPLY", "OFF"});
        for (std::uint32_t k = 0, n = 1 + gen.pick(3); k < n; ++k) {
          t.add(quiet(), s);
          --t.replies;
        }
        t.add({"CLIENT", "REPLY", "ON"});
        t.add(quiet(), s);
        t.replies -= 1;  // OFF; then ON's +OK and the last command are answered
      }
      break;
    }
  }
  return t;
}

struct run_options {
  std::vector<std::string> sidecar_args;
  bool short_expiry = true;  // PEXPIRE 1 / SET PX 1, then a pause (not in ttl mode: see below)
  int resp3_client = -1;     // which client speaks RESP3 (HELLO 3), -1: none
  int steps = 1500;
  bool expect_hits = false;  // the mode answers from L1: some GETs must have been hits
};

// One client of the sidecar and its twin on the reference.
struct client_pair {
  raw_client sidecar, reference;
  value_reader from_sidecar{sidecar}, from_reference{reference};
  client_pair(std::uint16_t a, std::uint16_t b) : sidecar(a), reference(b) {}

  // Sends `batch` (frames) to both, reads `replies` values from each and compares them. Returns
  // an empty string, or what differed.
  std::string exchange(const std::string& batch, std::size_t replies, bool compare = true) {
    sidecar.send(batch);
    reference.send(batch);
    for (std::size_t n = 0; n < replies; ++n) {
      const std::string got = from_sidecar.next();
      const std::string want = from_reference.next();
      if (want.empty()) return "the reference Redis gave no reply " + std::to_string(n + 1);
      if (compare && got != want)
        return "reply " + std::to_string(n + 1) + " differs:\n  sidecar:   " + printable(got) +
               "\n  reference: " + printable(want);
    }
    return {};
  }
};

// After a run: the hits the mode promises happened, and both servers hold the same data.
void check_end(const proxied& env, const redis_server& reference, const run_options& o,
               const std::vector<std::string>& prefixes) {
  if (o.expect_hits) CHECK(metric(env, "redis_sidecar_cache_hits_total") > 0);
  auto up = env.upstream();
  context_ptr ref{reference.connect_direct()};
  REQUIRE(ref);
  for (const char* db : {"0", "1"}) {
    REQUIRE(str(up.get(), {"SELECT", db}) == "OK");
    REQUIRE(str(ref.get(), {"SELECT", db}) == "OK");
    for (const auto& prefix : prefixes) {
      for (int k = 0; k <= 6; ++k) {
        const std::string key = k < 6 ? prefix + std::to_string(k) : generator::binary_key(prefix);
        auto x = command(up.get(), {"DUMP", key});
        auto y = command(ref.get(), {"DUMP", key});
        REQUIRE(x);
        REQUIRE(y);
        INFO("db " << db << " key " << key);
        CHECK(describe(x.get()) == describe(y.get()));
      }
    }
  }
}

// One client's part of a sequence of several: what it sends (nothing: it only reads), and how
// many replies (or messages) it reads.
struct leg {
  std::size_t client;
  std::vector<std::vector<std::string>> commands;
  std::size_t replies;
};

// Clients take turns (one seeded sequence): the first difference fails the test with the turns
// before it.
void run_differential(std::uint32_t seed, const run_options& o) {
  proxied env({}, o.sidecar_args);
  redis_server reference;
  constexpr std::size_t clients = 3;
  std::vector<std::unique_ptr<client_pair>> c;
  for (std::size_t i = 0; i < clients; ++i)
    c.push_back(std::make_unique<client_pair>(env.port(), reference.port()));
  if (o.resp3_client >= 0)  // HELLO's reply names each server's own id and version: not compared
    REQUIRE(c[static_cast<std::size_t>(o.resp3_client)]
                ->exchange(resp_array({"HELLO", "3"}), 1, false)
                .empty());
  generator gen(seed, o.short_expiry);
  std::vector<std::string> history;  // the last turns, for the failure message
  const auto fail = [&](int step, const std::string& what, const std::string& diff) {
    std::string h;
    for (const auto& l : history) h += "  " + l + "\n";
    FAIL("seed " << seed << ", step " << step << ": " << what << "\n"
                 << diff << "\nthe turns before it:\n"
                 << h);
  };
  for (int step = 0; step < o.steps; ++step) {
    const std::size_t i = gen.pick(clients);
    std::string who = "client " + std::to_string(i) + ": ";
    const shape sh = pick_shape(gen);
    const std::size_t other = (i + 1) % clients;
    // Steps of more than one client before the turn, each read in full before the next.
    std::vector<leg> legs;
    if (sh == shape::transaction && gen.pick(3) == 0) {
      // WATCH first; a write from another client before EXEC aborts the transaction on both
      // sides (a nil EXEC reply).
      const std::string key = gen.key();
      legs.push_back({i, {{"WATCH", key}}, 1});
      if (gen.pick(2) == 0) legs.push_back({other, {{"SET", key, "watched"}}, 1});
    }
    if (sh == shape::subscribed && gen.pick(2) == 0) {
      // Another client publishes to it: the message, and the pattern's, reach it in order.
      legs.push_back({i, {{"SUBSCRIBE", "ch"}, {"PSUBSCRIBE", "c*"}}, 2});
      legs.push_back({other, {{"PUBLISH", "ch", "m" + std::to_string(step)}}, 1});
      legs.push_back({i, {}, 2});
      legs.push_back({i, {{"UNSUBSCRIBE", "ch"}, {"PUNSUBSCRIBE", "c*"}}, 2});
    }
    if (sh == shape::command && gen.pick(20) == 0) {
      // A blocked client woken by another's push. In db 0 on a key no other command touches, so
      // that which of the two reaches Redis first cannot change a reply.
      legs.push_back({i, {{"SELECT", "0"}, {"BLPOP", "t:blk", "3"}}, 1});
      legs.push_back({other, {{"SELECT", "0"}, {"RPUSH", "t:blk", "p" + std::to_string(step)}}, 2});
      legs.push_back({i, {}, 1});
    }
    for (const leg& l : legs) {
      std::string batch, what;
      for (const auto& command : l.commands) {
        batch += resp_array(command);
        what += (what.empty() ? "" : " | ") + show(command);
      }
      if (what.empty()) what = "(reads " + std::to_string(l.replies) + " more)";
      who += (l.client == i ? what : "(client " + std::to_string(l.client) + ": " + what + ")") +
             " | ";
      if (const std::string diff = c[l.client]->exchange(batch, l.replies); !diff.empty())
        fail(step, who, diff);
    }
    const turn t = plan(gen, sh);
    const std::string diff = c[i]->exchange(t.batch, t.replies, t.compare);
    if (!diff.empty()) fail(step, who + t.what, diff);
    history.push_back(who + t.what);
    if (history.size() > 12) history.erase(history.begin());
    if (t.pause) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  check_end(env, reference, o, {"t:"});
}

// Clients at once, each on keys of its own (t:<client>:...), each its own seeded sequence: what a
// client sees cannot depend on the others, so it must again match the reference reply for reply,
// while the sidecar multiplexes all of them onto its shared connections. Catch's assertions are
// not thread-safe: each thread keeps its first difference, checked after the join.
void run_concurrent(std::uint32_t seed, const run_options& o) {
  proxied env({}, o.sidecar_args);
  redis_server reference;
  constexpr std::size_t clients = 8;
  std::vector<std::string> failures(clients), prefixes;
  // Every prefix before any thread: a thread reads prefixes[i] while this one would still append
  // (and move the vector's strings).
  for (std::size_t i = 0; i < clients; ++i) prefixes.push_back("t:" + std::to_string(i) + ":");
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      client_pair c(env.port(), reference.port());
      if (static_cast<int>(i) == o.resp3_client) c.exchange(resp_array({"HELLO", "3"}), 1, false);
      generator gen(seed * 100 + static_cast<std::uint32_t>(i), o.short_expiry, prefixes[i], false);
      std::string last;
      for (int step = 0; step < o.steps; ++step) {
        const turn t = plan(gen, pick_shape(gen));
        const std::string diff = c.exchange(t.batch, t.replies, t.compare);
        if (!diff.empty()) {
          failures[i] = "client " + std::to_string(i) + ", step " + std::to_string(step) + ": " +
                        t.what + "\n" + diff + "\nthe turn before it: " + last;
          return;
        }
        last = t.what;
        if (t.pause) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& f : failures) CHECK(f == "");
  check_end(env, reference, o, prefixes);
}

}  // namespace

// REDIS_SIDECAR_DIFF_SEEDS=N adds N more seeds to each section (a longer search, by hand).
std::vector<std::uint32_t> seeds(std::initializer_list<std::uint32_t> fixed, std::uint32_t base) {
  std::vector<std::uint32_t> out(fixed);
  const char* extra = std::getenv("REDIS_SIDECAR_DIFF_SEEDS");
  const long n = extra != nullptr ? std::strtol(extra, nullptr, 10) : 0;
  for (long k = 0; k < n; ++k) out.push_back(base + static_cast<std::uint32_t>(k));
  return out;
}

TEST_CASE("differential: the sidecar answers as Redis itself, reply for reply", "[differential]") {
  SIDECAR_ONLY();
  run_options o;
  SECTION("tracking (the default mode), RESP2") {
    o.expect_hits = true;
    for (std::uint32_t seed : seeds({1, 2}, 1000)) run_differential(seed, o);
  }
  SECTION("tracking, one client in RESP3") {
    o.expect_hits = true;
    o.resp3_client = 1;
    for (std::uint32_t seed : seeds({3}, 2000)) run_differential(seed, o);
  }
  SECTION("ttl mode") {
    // ttl mode answers from L1 for up to --cache-ttl whatever happens behind the sidecar's back,
    // Redis' own expiry included (a GET's reply does not say when its key expires): short
    // expiries are left out here.
    o.sidecar_args = {"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=1h"};
    o.short_expiry = false;
    o.expect_hits = true;
    for (std::uint32_t seed : seeds({4, 5}, 3000)) run_differential(seed, o);
  }
  SECTION("fallback mode (L1 filled, not serving)") {
    o.sidecar_args = {"--cache-mode=fallback"};
    for (std::uint32_t seed : seeds({6}, 4000)) run_differential(seed, o);
  }
  SECTION("pass-through, one client in RESP3, the event loop busy-polling") {
    o.sidecar_args = {"--cache-mode=off", "--busy-poll-us=50"};
    o.resp3_client = 2;
    for (std::uint32_t seed : seeds({7}, 5000)) run_differential(seed, o);
  }
}

TEST_CASE("differential: concurrent clients on keys of their own, reply for reply",
          "[differential]") {
  SIDECAR_ONLY();
  run_options o;
  o.steps = 800;
  SECTION("tracking, one client in RESP3") {
    o.expect_hits = true;
    o.resp3_client = 3;
    for (std::uint32_t seed : seeds({11}, 6000)) run_concurrent(seed, o);
  }
  SECTION("ttl mode") {
    o.sidecar_args = {"--cache-mode=ttl", "--cache-prefix=t:", "--cache-ttl=1h"};
    o.short_expiry = false;
    o.expect_hits = true;
    for (std::uint32_t seed : seeds({12}, 7000)) run_concurrent(seed, o);
  }
  SECTION("fallback mode, the event loop busy-polling") {
    o.sidecar_args = {"--cache-mode=fallback", "--busy-poll-us=50"};
    for (std::uint32_t seed : seeds({13}, 8000)) run_concurrent(seed, o);
  }
}

}  // namespace redis_sidecar::test
