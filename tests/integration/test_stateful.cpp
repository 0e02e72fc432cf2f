// Stateful commands: pub/sub, blocking pops, transactions with WATCH, SELECT, client names and
// RESET keep their per-connection meaning through the sidecar, even though ordinary commands share
// upstream connections. Every test here also runs against Redis itself with
// REDIS_SIDECAR_IT_DIRECT=1.
#include <algorithm>

#include "tests/integration/common.hpp"

namespace redis_sidecar::test {
namespace {

using strs = std::vector<std::string>;

long long info_field(redisContext* c, const std::string& section, const std::string& field) {
  auto text = str(c, {"INFO", section});
  auto pos = text.find(field + ":");
  if (pos == std::string::npos) return -1;
  return std::atoll(text.c_str() + pos + field.size() + 1);
}

TEST_CASE("pub/sub: SUBSCRIBE and PSUBSCRIBE receive what another client publishes",
          "[stateful][pubsub]") {
  proxied env;
  auto sub = env.client();
  auto pub = env.client();

  CHECK(elements(sub.get(), {"SUBSCRIBE", "news"}) == strs{"subscribe", "news", "1"});
  CHECK(integer(pub.get(), {"PUBLISH", "news", "hello"}) == 1);
  auto msg = next_reply(sub.get());
  REQUIRE(msg);
  CHECK(strings(msg.get()) == strs{"message", "news", "hello"});

  const std::string binary("a\0\r\nb\xff", 6);
  CHECK(integer(pub.get(), {"PUBLISH", "news", binary}) == 1);
  msg = next_reply(sub.get());
  REQUIRE(msg);
  CHECK(strings(msg.get()) == strs{"message", "news", binary});

  CHECK(elements(sub.get(), {"PSUBSCRIBE", "sport.*"}) == strs{"psubscribe", "sport.*", "2"});
  CHECK(integer(pub.get(), {"PUBLISH", "sport.tennis", "ace"}) == 1);
  msg = next_reply(sub.get());
  REQUIRE(msg);
  CHECK(strings(msg.get()) == strs{"pmessage", "sport.*", "sport.tennis", "ace"});

  CHECK(elements(sub.get(), {"UNSUBSCRIBE", "news"}) == strs{"unsubscribe", "news", "1"});
  CHECK(integer(pub.get(), {"PUBLISH", "news", "nobody"}) == 0);
  CHECK(elements(sub.get(), {"PUNSUBSCRIBE", "sport.*"}) == strs{"punsubscribe", "sport.*", "0"});
  // Out of subscribed mode, the connection is an ordinary one again.
  CHECK(str(sub.get(), {"SET", "after-pubsub", "1"}) == "OK");
  CHECK(str(sub.get(), {"GET", "after-pubsub"}) == "1");
}

// Once a client has subscribed, the sidecar passes its requests on unread ("raw"). Four things
// must still hold there: CLIENT GETNAME answers the client's name; a RESET pipelined behind
// requests waits for their replies instead of dropping them with the connection; a HELLO that
// changed the protocol just before SUBSCRIBE does not answer twice (the sidecar's own HELLO on the
// dedicated connection is not the client's); and, with an L1 tier, writes still invalidate
// (test_near_cache).
TEST_CASE("after SUBSCRIBE: pipelined RESET and HELLO keep replies one for one",
          "[stateful][pubsub]") {
  SIDECAR_ONLY();
  proxied env;
  SECTION("RESET behind a MULTI") {
    raw_client c(env.port());
    // CLIENT REPLY ON keeps the client passed on unread (an UNSUBSCRIBE from everything would end
    // that: see the next test).
    c.send("CLIENT SETNAME app\r\nSUBSCRIBE ch\r\nUNSUBSCRIBE ch\r\nCLIENT REPLY ON\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c) == "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    // Its name went with it to the upstream connection that now answers CLIENT GETNAME.
    c.send("CLIENT GETNAME\r\nCLIENT SETNAME other\r\nCLIENT GETNAME\r\n");
    CHECK(read_value(c) == "$3\r\napp\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "$5\r\nother\r\n");
    c.send("MULTI\r\nRESET\r\nINCR x\r\nEXEC\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "+RESET\r\n");
    CHECK(read_value(c) == ":1\r\n");  // after RESET: not queued
    CHECK(read_value(c) == "-ERR EXEC without MULTI\r\n");
  }
  SECTION("HELLO 2 then SUBSCRIBE, on a dedicated connection") {
    raw_client c(env.port());
    c.send("HELLO 3\r\nSELECT 1\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == "+OK\r\n");
    c.send("HELLO 2\r\nSUBSCRIBE ch\r\nPING\r\n");
    CHECK(read_value(c).starts_with("*14\r\n"));
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
  }
}

// RESET takes no arguments: with one, Redis refuses it and resets nothing, subscribed or not, and
// a transaction it was queued in fails at EXEC.
TEST_CASE("RESET with an argument is refused and resets nothing", "[stateful][pubsub]") {
  proxied env;
  raw_client c(env.port());
  const std::string refused = "-ERR wrong number of arguments for 'reset' command\r\n";
  c.send("SUBSCRIBE ch\r\nRESET x\r\nPING\r\n");
  CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
  CHECK(read_value(c) == refused);
  CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$0\r\n\r\n");  // still subscribed
  c.send("RESET\r\nPING\r\n");
  CHECK(read_value(c) == "+RESET\r\n");
  CHECK(read_value(c) == "+PONG\r\n");
  c.send("MULTI\r\nRESET x\r\nEXEC\r\nRESET x\r\nPING\r\n");
  CHECK(read_value(c) == "+OK\r\n");
  CHECK(read_value(c) == refused);
  CHECK(read_value(c) == "-EXECABORT Transaction discarded because of previous errors.\r\n");
  CHECK(read_value(c) == refused);
  CHECK(read_value(c) == "+PONG\r\n");
}

// RESP3: SUBSCRIBE and UNSUBSCRIBE queued in a transaction answer with their confirmation, a push,
// as an element of EXEC's array; what follows keeps its own reply.
TEST_CASE("RESP3: (UN)SUBSCRIBE queued in MULTI answers inside EXEC's array",
          "[stateful][pubsub]") {
  proxied env;
  raw_client c(env.port());
  auto pub = env.client();
  c.send("HELLO 3\r\n");
  CHECK(read_value(c).starts_with("%7\r\n"));
  c.send("MULTI\r\nSUBSCRIBE x\r\nEXEC\r\nPING\r\n");
  CHECK(read_value(c) == "+OK\r\n");
  CHECK(read_value(c) == "+QUEUED\r\n");
  CHECK(read_value(c) == "*1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n");
  CHECK(read_value(c) == "+PONG\r\n");
  CHECK(integer(pub.get(), {"PUBLISH", "x", "hi"}) == 1);
  CHECK(read_value(c) == ">3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$2\r\nhi\r\n");
  c.send("MULTI\r\nSET k v\r\nUNSUBSCRIBE x\r\nGET k\r\nEXEC\r\nPING after\r\n");
  CHECK(read_value(c) == "+OK\r\n");
  for (int i = 0; i < 3; ++i) CHECK(read_value(c) == "+QUEUED\r\n");
  CHECK(read_value(c) == "*3\r\n+OK\r\n>3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:0\r\n$1\r\nv\r\n");
  CHECK(read_value(c) == "$5\r\nafter\r\n");
  CHECK(integer(pub.get(), {"PUBLISH", "x", "gone"}) == 0);
}

// A client that unsubscribes from everything is an ordinary client again: its upstream connection
// goes back to the pool instead of staying its own until it disconnects. Ten clients that
// subscribe and unsubscribe in turn, and stay connected, hold no upstream connection: they take
// turns on one (the same Redis client id each time, still open afterwards; a count of Redis's
// connections would also see the pool's own still connecting on a slow machine). A client that did
// something else in subscribed mode that changed its connection (here SELECT, over RESP3) keeps its
// connection.
TEST_CASE("after the last UNSUBSCRIBE, the client's upstream connection goes back to the pool",
          "[stateful][pubsub]") {
  SIDECAR_ONLY();
  proxied env;
  auto up = env.upstream();
  // Upstream connections by name (the sidecar's own are named redis-sidecar).
  const auto named = [&](const std::string& prefix) {
    const std::string list = str(up.get(), {"CLIENT", "LIST"});
    int n = 0;
    for (std::size_t at = list.find(" name=" + prefix); at != std::string::npos;
         at = list.find(" name=" + prefix, at + 1))
      ++n;
    return n;
  };
  // The Redis client ids of the upstream connections named exactly `name`.
  const auto ids_named = [&](const std::string& name) {
    std::vector<std::string> ids;
    for (const auto& line : lines_of(str(up.get(), {"CLIENT", "LIST"})))
      if (field(line, "name") == name) ids.push_back(field(line, "id"));
    return ids;
  };
  auto warm = env.client();
  CHECK(str(warm.get(), {"PING"}) == "PONG");

  std::vector<context_ptr> clients;
  std::vector<std::string> used;  // the upstream connection each client had while subscribed
  for (int i = 0; i < 10; ++i) {
    auto c = env.client();
    const std::string ch = "ch-" + std::to_string(i);
    const std::string name = "sub-" + std::to_string(i);
    CHECK(str(c.get(), {"CLIENT", "SETNAME", name}) == "OK");
    CHECK(elements(c.get(), {"SUBSCRIBE", ch}) == strs{"subscribe", ch, "1"});
    CHECK(elements(c.get(), {"PSUBSCRIBE", ch + "*"}) == strs{"psubscribe", ch + "*", "2"});
    // Subscribed: its own connection, with its name, and no other client's.
    CHECK(named("sub-") == 1);
    const auto ids = ids_named(name);
    CHECK(ids.size() == 1);
    if (!ids.empty()) used.push_back(ids.front());
    CHECK(elements(c.get(), {"UNSUBSCRIBE", ch}) == strs{"unsubscribe", ch, "1"});
    CHECK(elements(c.get(), {"PUNSUBSCRIBE"}) == strs{"punsubscribe", ch + "*", "0"});
    CHECK(str(c.get(), {"PING"}) == "PONG");
    clients.push_back(std::move(c));
  }
  CHECK(eventually([&] { return named("sub-") == 0; }));  // renamed after the client's PING
  // They took turns on one connection, which is idle in the pool now (renamed, still open).
  REQUIRE(used.size() == 10);
  CHECK(std::count(used.begin(), used.end(), used.front()) == 10);
  const auto pooled = ids_named("redis-sidecar");
  CHECK(std::count(pooled.begin(), pooled.end(), used.front()) == 1);

  // Each is an ordinary client, and may subscribe again.
  for (int i = 0; i < 10; ++i) {
    const std::string k = "after-" + std::to_string(i);
    CHECK(str(clients[i].get(), {"CLIENT", "GETNAME"}) == "sub-" + std::to_string(i));
    CHECK(str(clients[i].get(), {"SET", k, "v"}) == "OK");
    CHECK(str(clients[i].get(), {"GET", k}) == "v");
  }
  auto& again = clients[3];
  CHECK(elements(again.get(), {"SUBSCRIBE", "news"}) == strs{"subscribe", "news", "1"});
  CHECK(integer(warm.get(), {"PUBLISH", "news", "x"}) == 1);
  auto msg = next_reply(again.get());
  REQUIRE(msg);
  CHECK(strings(msg.get()) == strs{"message", "news", "x"});
  CHECK(named("sub-3") == 1);

  SECTION("a SELECT while subscribed keeps the connection") {
    raw_client c(env.port());
    c.send("HELLO 3\r\nCLIENT SETNAME kept\r\nSUBSCRIBE k\r\nSELECT 1\r\nUNSUBSCRIBE\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$1\r\nk\r\n:1\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == ">3\r\n$11\r\nunsubscribe\r\n$1\r\nk\r\n:0\r\n");
    c.send("SET in-db-1 v\r\nPING\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
    CHECK(named("kept") == 1);
    CHECK(str(up.get(), {"SELECT", "1"}) == "OK");
    CHECK(str(up.get(), {"GET", "in-db-1"}) == "v");
  }
  SECTION("a RESP2 client subscribed again, pipelined: still in subscribed mode") {
    raw_client c(env.port());
    c.send("CLIENT SETNAME resp2\r\nSUBSCRIBE a\r\nUNSUBSCRIBE a\r\nSUBSCRIBE b\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
    CHECK(read_value(c) == "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:1\r\n");
    c.send("PING\r\n");
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$0\r\n\r\n");  // subscribed mode's PING
    CHECK(integer(warm.get(), {"PUBLISH", "b", "z"}) == 1);
    CHECK(read_value(c) == "*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\nz\r\n");
    CHECK(named("resp2") == 1);
  }
  SECTION("a RESP3 client: out of subscribed mode, then subscribed again, pipelined") {
    raw_client c(env.port());
    // The UNSUBSCRIBE's confirmation comes before the second SUBSCRIBE's: the client must stay
    // subscribed, and receive what is published.
    c.send("HELLO 3\r\nCLIENT SETNAME resp3\r\nSUBSCRIBE a\r\nUNSUBSCRIBE a\r\nSUBSCRIBE b\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
    CHECK(read_value(c) == ">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:1\r\n");
    CHECK(integer(warm.get(), {"PUBLISH", "b", "y"}) == 1);
    CHECK(read_value(c) == ">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\ny\r\n");
    CHECK(named("resp3") == 1);
    c.send("UNSUBSCRIBE\r\nGET nothing\r\n");
    CHECK(read_value(c) == ">3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n");
    CHECK(read_value(c) == "_\r\n");
    CHECK(eventually([&] { return named("resp3") == 0; }));
  }
}

// A RESP3 subscriber's script reply shaped like an unsubscribe confirmation is not one: the
// client stays subscribed. And a client that leaves while a BLPOP it sent in subscribed mode
// blocks does not leave that BLPOP behind to take an item pushed later.
TEST_CASE("subscribed clients: look-alike confirmations, and leaving mid-BLPOP",
          "[stateful][pubsub]") {
  proxied env;
  auto pub = env.client();
  SECTION("RESP3: a script's array is not a push") {
    raw_client c(env.port());
    c.send("HELLO 3\r\nSUBSCRIBE a\r\nEVAL \"return {'unsubscribe','a',0}\" 0\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
    CHECK(read_value(c) == "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
    c.send("PING\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
    CHECK(integer(pub.get(), {"PUBLISH", "a", "still"}) == 1);
    CHECK(read_value(c) == ">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nstill\r\n");
  }
  SECTION("UNSUBSCRIBE and BLPOP, then gone") {
    auto up = env.upstream();
    {
      raw_client c(env.port());
      c.send("SUBSCRIBE a\r\n");
      CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
      c.send("UNSUBSCRIBE a\r\nBLPOP gone-list 0\r\n");
      CHECK(read_value(c) == "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
      REQUIRE(eventually([&] { return info_field(up.get(), "clients", "blocked_clients") == 1; }));
      c.send("PING\r\n");  // waits behind the BLPOP, as with Redis
    }
    CHECK(eventually([&] { return info_field(up.get(), "clients", "blocked_clients") == 0; }));
    CHECK(integer(pub.get(), {"RPUSH", "gone-list", "precious"}) == 1);
    CHECK(integer(pub.get(), {"LLEN", "gone-list"}) == 1);
  }
  SECTION("RESP3: BLPOP, then RESET waiting behind it, then gone") {
    auto up = env.upstream();
    {
      raw_client c(env.port());
      c.send("HELLO 3\r\nSUBSCRIBE a\r\nBLPOP reset-list 0\r\n");
      CHECK(read_value(c).starts_with("%7\r\n"));
      CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
      REQUIRE(eventually([&] { return info_field(up.get(), "clients", "blocked_clients") == 1; }));
      c.send("RESET\r\n");  // answered after the BLPOP's reply, as by Redis
    }
    CHECK(eventually([&] { return info_field(up.get(), "clients", "blocked_clients") == 0; }));
    CHECK(integer(pub.get(), {"RPUSH", "reset-list", "precious"}) == 1);
    CHECK(integer(pub.get(), {"LLEN", "reset-list"}) == 1);
  }
}

// CLIENT ID names the client, not an upstream connection: the same before and after it subscribes
// (RESP3, where a subscriber may run any command), between messages, and after CLIENT REPLY. A
// RESP2 subscriber is refused CLIENT ID, as by Redis.
TEST_CASE("CLIENT ID stays the client's own after SUBSCRIBE", "[stateful][pubsub]") {
  proxied env;
  auto pub = env.client();
  SECTION("RESP3") {
    raw_client c(env.port());
    c.send("HELLO 3\r\nCLIENT ID\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    const std::string id = read_value(c);
    REQUIRE(id.starts_with(":"));
    c.send("SUBSCRIBE ch\r\nCLIENT ID\r\n");
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c) == id);
    CHECK(integer(pub.get(), {"PUBLISH", "ch", "x"}) == 1);
    c.send("CLIENT ID\r\nPING\r\nCLIENT ID\r\n");
    CHECK(read_value(c) == ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n");
    CHECK(read_value(c) == id);
    CHECK(read_value(c) == "+PONG\r\n");
    CHECK(read_value(c) == id);
  }
  SECTION("RESP2: refused while subscribed, the client's own after") {
    raw_client c(env.port());
    c.send("CLIENT ID\r\nSUBSCRIBE ch\r\nCLIENT ID\r\n");
    const std::string id = read_value(c);
    REQUIRE(id.starts_with(":"));
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c).starts_with("-ERR Can't execute 'client|id'"));
    c.send("UNSUBSCRIBE\r\nCLIENT ID\r\n");
    CHECK(read_value(c) == "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n");
    CHECK(read_value(c) == id);
  }
  SECTION("after CLIENT REPLY ON") {
    raw_client c(env.port());
    c.send("CLIENT ID\r\nCLIENT REPLY ON\r\nCLIENT ID\r\nSET k v\r\nCLIENT ID\r\n");
    const std::string id = read_value(c);
    REQUIRE(id.starts_with(":"));
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == id);
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == id);
  }
}

TEST_CASE("BLPOP waits for an LPUSH from another client, without holding up others",
          "[stateful][blocking]") {
  proxied env;
  auto blocked = env.client();
  auto other = env.client();
  auto up = env.upstream();

  REQUIRE(send_only(blocked.get(), {"BLPOP", "queue", "0"}));
  REQUIRE(eventually([&] { return info_field(up.get(), "clients", "blocked_clients") == 1; }));

  CHECK(str(other.get(), {"SET", "unrelated", "still-served"}) == "OK");
  CHECK(str(other.get(), {"GET", "unrelated"}) == "still-served");
  CHECK(integer(other.get(), {"LPUSH", "queue", "job-1"}) == 1);

  auto popped = next_reply(blocked.get());
  REQUIRE(popped);
  CHECK(strings(popped.get()) == strs{"queue", "job-1"});
  CHECK(integer(other.get(), {"LLEN", "queue"}) == 0);
  CHECK(str(blocked.get(), {"PING"}) == "PONG");
}

TEST_CASE("a blocking command may outlive --command-timeout-ms", "[stateful][blocking]") {
  proxied env({}, {"--command-timeout-ms", "500"});
  auto c = env.client();
  auto r = must(c.get(), {"BLPOP", "empty-queue", "2"});
  INFO("BLPOP replied " << describe(r.get()));
  CHECK(r->type == REDIS_REPLY_NIL);
  CHECK(str(c.get(), {"PING"}) == "PONG");
}

// Timeouts are the client's numbers: one of centuries (or beyond what the sidecar's clock can
// add) waits as long as Redis lets it, and one Redis refuses gets Redis' error, at once.
TEST_CASE("blocking commands with timeouts of centuries wait, absurd ones get Redis' error",
          "[stateful][blocking]") {
  proxied env({}, {"--command-timeout-ms", "500"});
  auto blocked = env.client();
  auto other = env.client();
  auto up = env.upstream();
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"BLPOP", "far-queue", "10000000000"},       // 317 years
           {"BLPOP", "far-queue", "9000000000000000"},  // Redis' largest, nearly
           {"BLMPOP", "10000000000", "1", "far-queue", "LEFT"},
           {"XREAD", "BLOCK", "9000000000000000000", "STREAMS", "far-stream", "$"}}) {
    INFO(cmd[0] << " " << cmd[1] << " " << cmd[2]);
    REQUIRE(send_only(blocked.get(), cmd));
    REQUIRE(eventually([&] { return info_field(up.get(), "clients", "blocked_clients") == 1; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // past 2 x the command timeout
    if (cmd[0] == "XREAD")
      CHECK(str(other.get(), {"XADD", "far-stream", "*", "f", "v"}).size() > 0);
    else
      CHECK(integer(other.get(), {"LPUSH", "far-queue", "job"}) == 1);
    auto r = next_reply(blocked.get());
    REQUIRE(r);
    INFO("replied " << describe(r.get()));
    CHECK(r->type == REDIS_REPLY_ARRAY);
  }
  for (const char* t : {"1e300", "inf", "nan", "9223372036854775807"}) {
    INFO(t);
    CHECK(error_of(blocked.get(), {"BLPOP", "far-queue", t}).starts_with("ERR timeout"));
  }
  CHECK(str(blocked.get(), {"PING"}) == "PONG");
}

TEST_CASE("MULTI/EXEC runs queued commands, DISCARD and EXECABORT work", "[stateful][multi]") {
  proxied env;
  auto a = env.client();
  auto b = env.client();

  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(str(a.get(), {"SET", "x", "1"}) == "QUEUED");
  CHECK(str(a.get(), {"INCR", "x"}) == "QUEUED");
  CHECK(str(a.get(), {"GET", "x"}) == "QUEUED");
  CHECK(is_nil(b.get(), {"GET", "x"}));  // nothing ran yet
  auto exec = must(a.get(), {"EXEC"});
  REQUIRE(exec->type == REDIS_REPLY_ARRAY);
  REQUIRE(exec->elements == 3);
  CHECK(exec->element[0]->type == REDIS_REPLY_STATUS);
  CHECK(exec->element[1]->integer == 2);
  CHECK(std::string(exec->element[2]->str) == "2");
  CHECK(str(b.get(), {"GET", "x"}) == "2");

  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(str(a.get(), {"SET", "d", "1"}) == "QUEUED");
  CHECK(str(a.get(), {"DISCARD"}) == "OK");
  CHECK(is_nil(a.get(), {"GET", "d"}));

  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(error_of(a.get(), {"INCR"}).starts_with("ERR wrong number of arguments"));
  CHECK(error_of(a.get(), {"EXEC"}).starts_with("EXECABORT"));
  CHECK(error_of(a.get(), {"EXEC"}) == "ERR EXEC without MULTI");
}

// A burst of transactions leaves dedicated connections idle in the pool; managed Redis plans count
// every open connection against a limit, so they are closed after --dedicated-idle-timeout. The
// newest idle one is reused first, and one closed for idleness is simply opened again.
TEST_CASE("idle dedicated connections close after --dedicated-idle-timeout", "[stateful][multi]") {
  SIDECAR_ONLY();
  proxied env({}, {"--dedicated-idle-timeout", "3s"});
  auto up = env.upstream();
  const std::string own_id = std::to_string(integer(up.get(), {"CLIENT", "ID"}));
  // The sidecar's connections to the upstream.
  const auto sidecar_connections = [&] {
    std::size_t n = 0;
    for (const auto& line : lines_of(str(up.get(), {"CLIENT", "LIST"})))
      n += field(line, "id") != own_id;
    return n;
  };
  auto warm = env.client();
  CHECK(str(warm.get(), {"SET", "n", "0"}) == "OK");
  const std::size_t base = sidecar_connections();

  std::vector<context_ptr> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(env.client());
    CHECK(str(clients.back().get(), {"MULTI"}) == "OK");
    CHECK(str(clients.back().get(), {"INCR", "n"}) == "QUEUED");
  }
  // Five transactions open at once: five dedicated connections.
  CHECK(sidecar_connections() == base + 5);
  for (auto& c : clients) {
    auto exec = must(c.get(), {"EXEC"});
    REQUIRE(exec->type == REDIS_REPLY_ARRAY);
    CHECK(exec->elements == 1);
  }
  CHECK(str(warm.get(), {"GET", "n"}) == "5");
  // Idle in the pool, then closed once the timeout has passed (the clients are still connected).
  CHECK(eventually([&] { return sidecar_connections() == base; }));
  CHECK(str(clients[2].get(), {"PING"}) == "PONG");

  // A transaction after that opens a connection again.
  CHECK(str(clients[2].get(), {"MULTI"}) == "OK");
  CHECK(str(clients[2].get(), {"INCR", "n"}) == "QUEUED");
  CHECK(sidecar_connections() == base + 1);
  auto exec = must(clients[2].get(), {"EXEC"});
  REQUIRE(exec->type == REDIS_REPLY_ARRAY);
  REQUIRE(exec->elements == 1);
  CHECK(exec->element[0]->integer == 6);
  CHECK(eventually([&] { return sidecar_connections() == base; }));
}

// Inside MULTI the commands the sidecar answers itself (they act on the client's session, not on
// the upstream connection the transaction runs on) are refused, and EXEC then discards the
// transaction, as Redis does after a command it refuses while queueing. Answering them at once
// instead would leave EXEC's array shorter than what the client queued. UNSUBSCRIBE, answered by
// the sidecar outside a transaction, is queued like any other command.
TEST_CASE("MULTI: commands the sidecar answers itself are refused and EXEC aborts",
          "[stateful][multi]") {
  SIDECAR_ONLY();
  proxied env;
  auto a = env.client();
  for (const std::vector<std::string>& session :
       std::vector<std::vector<std::string>>{{"CLIENT", "SETNAME", "in-multi"},
                                             {"CLIENT", "GETNAME"},
                                             {"CLIENT", "ID"},
                                             {"CLIENT", "SETINFO", "LIB-NAME", "x"},
                                             {"HELLO", "3"},
                                             {"AUTH", "secret"}}) {
    INFO(session[0] << " " << session[1]);
    CHECK(str(a.get(), {"MULTI"}) == "OK");
    CHECK(str(a.get(), {"SET", "m", session[1]}) == "QUEUED");
    CHECK(error_of(a.get(), session) == errors::session_command_in_multi);
    CHECK(str(a.get(), {"SET", "n", session[1]}) == "QUEUED");
    CHECK(error_of(a.get(), {"EXEC"}) == errors::execabort);
    CHECK(is_nil(a.get(), {"GET", "m"}));  // nothing ran
    CHECK(is_nil(a.get(), {"GET", "n"}));
    CHECK(error_of(a.get(), {"EXEC"}) == "ERR EXEC without MULTI");
  }
  CHECK(is_nil(a.get(), {"CLIENT", "GETNAME"}));  // the refused SETNAME did not apply either

  // DISCARD ends a transaction with a refused command as any other; the next one runs.
  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(error_of(a.get(), {"CLIENT", "ID"}) == errors::session_command_in_multi);
  CHECK(str(a.get(), {"DISCARD"}) == "OK");
  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(str(a.get(), {"SET", "m", "1"}) == "QUEUED");
  CHECK(str(a.get(), {"UNSUBSCRIBE", "ch"}) == "QUEUED");
  auto exec = must(a.get(), {"EXEC"});
  REQUIRE(exec->type == REDIS_REPLY_ARRAY);
  REQUIRE(exec->elements == 2);
  CHECK(describe(exec->element[0]) == "status OK");
  CHECK(strings(exec->element[1]) == std::vector<std::string>{"unsubscribe", "ch", "0"});
  CHECK(str(a.get(), {"GET", "m"}) == "1");
}

TEST_CASE("WATCH aborts EXEC when another client changed the key", "[stateful][multi]") {
  proxied env;
  auto a = env.client();
  auto b = env.client();

  CHECK(str(a.get(), {"SET", "k", "original"}) == "OK");
  CHECK(str(a.get(), {"WATCH", "k"}) == "OK");
  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(str(a.get(), {"SET", "k", "mine"}) == "QUEUED");
  CHECK(str(b.get(), {"SET", "k", "theirs"}) == "OK");
  auto exec = must(a.get(), {"EXEC"});
  INFO("EXEC replied " << describe(exec.get()));
  CHECK(exec->type == REDIS_REPLY_NIL);
  CHECK(str(a.get(), {"GET", "k"}) == "theirs");

  // Without interference the same transaction commits.
  CHECK(str(a.get(), {"WATCH", "k"}) == "OK");
  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(str(a.get(), {"SET", "k", "mine"}) == "QUEUED");
  CHECK(elements(a.get(), {"EXEC"}) == strs{"OK"});
  CHECK(str(b.get(), {"GET", "k"}) == "mine");
}

TEST_CASE("SELECT is per client and lands in the upstream's database", "[stateful][select]") {
  proxied env;
  auto up = env.upstream();
  {
    auto a = env.client();
    auto b = env.client();
    CHECK(str(a.get(), {"SELECT", "1"}) == "OK");
    CHECK(str(a.get(), {"SET", "k", "in-db1"}) == "OK");
    CHECK(is_nil(b.get(), {"GET", "k"}));
    CHECK(str(b.get(), {"SET", "k", "in-db0"}) == "OK");
    CHECK(str(a.get(), {"GET", "k"}) == "in-db1");
    CHECK(error_of(a.get(), {"SELECT", "100000"}) == errors::invalid_db);
    CHECK(str(a.get(), {"GET", "k"}) == "in-db1");
  }
  CHECK(str(up.get(), {"GET", "k"}) == "in-db0");
  CHECK(str(up.get(), {"SELECT", "1"}) == "OK");
  CHECK(str(up.get(), {"GET", "k"}) == "in-db1");

  // Clients that come later start in db 0: no shared connection was left in db 1.
  for (int i = 0; i < 10; ++i) {
    auto c = env.client();
    CHECK(str(c.get(), {"GET", "k"}) == "in-db0");
  }
}

// A SELECT queued in MULTI changes the db only when EXEC runs it and it succeeds; a SELECT that
// fails leaves the db as it was, also for the requests pipelined behind it. The sidecar must
// follow, or the client's next commands (and the L1 entries they fill or invalidate) land in
// another db than Redis would use.
TEST_CASE("SELECT in MULTI and a failed SELECT keep the client in the right db",
          "[stateful][select][multi]") {
  proxied env({}, {"--cache-mode=ttl", "--cache-prefix=k", "--cache-ttl=1h"});
  auto up = env.upstream();
  auto a = env.client();
  const auto value_in = [&](const char* db) {
    REQUIRE(str(up.get(), {"SELECT", db}) == "OK");
    auto r = must(up.get(), {"GET", "k"});
    return r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : std::string("(nil)");
  };

  SECTION("queued, then discarded") {
    CHECK(str(a.get(), {"MULTI"}) == "OK");
    CHECK(str(a.get(), {"SELECT", "1"}) == "QUEUED");
    CHECK(str(a.get(), {"DISCARD"}) == "OK");
    CHECK(str(a.get(), {"SET", "k", "a"}) == "OK");
    CHECK(value_in("0") == "a");
    CHECK(value_in("1") == "(nil)");
    // From db 1, a discarded SELECT 0 leaves the client in db 1.
    CHECK(str(a.get(), {"SELECT", "1"}) == "OK");
    CHECK(str(a.get(), {"MULTI"}) == "OK");
    CHECK(str(a.get(), {"SELECT", "0"}) == "QUEUED");
    CHECK(str(a.get(), {"DISCARD"}) == "OK");
    CHECK(str(a.get(), {"SET", "k", "b"}) == "OK");
    CHECK(value_in("1") == "b");
    CHECK(value_in("0") == "a");
  }
  SECTION("executed: in effect after EXEC, unless it failed there") {
    CHECK(str(a.get(), {"MULTI"}) == "OK");
    CHECK(str(a.get(), {"SET", "k", "first"}) == "QUEUED");
    CHECK(str(a.get(), {"SELECT", "1"}) == "QUEUED");
    CHECK(str(a.get(), {"SET", "k", "second"}) == "QUEUED");
    CHECK(must(a.get(), {"EXEC"})->elements == 3);
    CHECK(str(a.get(), {"SET", "k", "third"}) == "OK");
    CHECK(value_in("0") == "first");
    CHECK(value_in("1") == "third");
    CHECK(str(a.get(), {"MULTI"}) == "OK");
    CHECK(str(a.get(), {"SELECT", "99"}) == "QUEUED");  // out of range: fails at EXEC
    auto exec = must(a.get(), {"EXEC"});
    REQUIRE(exec->elements == 1);
    CHECK(exec->element[0]->type == REDIS_REPLY_ERROR);
    CHECK(str(a.get(), {"SET", "k", "fourth"}) == "OK");
    CHECK(value_in("1") == "fourth");
  }
  SECTION("a failed SELECT in a pipeline: L1 stays coherent for other clients") {
    auto b = env.client();
    CHECK(str(a.get(), {"SET", "k", "old"}) == "OK");
    CHECK(str(b.get(), {"GET", "k"}) == "old");  // cached
    // The GET's reply fills L1 after the write was sent; the write must still invalidate db 0.
    REQUIRE(send_only(a.get(), {"GET", "k"}));
    REQUIRE(send_only(a.get(), {"SELECT", "99"}));
    REQUIRE(send_only(a.get(), {"SET", "k", "new"}));
    CHECK(describe(next_reply(a.get()).get()) == "string old");
    CHECK(describe(next_reply(a.get()).get()) == "error " + std::string(errors::invalid_db));
    CHECK(describe(next_reply(a.get()).get()) == "status OK");
    CHECK(str(b.get(), {"GET", "k"}) == "new");
    CHECK(str(a.get(), {"GET", "k"}) == "new");
    CHECK(value_in("0") == "new");
  }
}

TEST_CASE("CLIENT SETNAME/GETNAME are per client, RESET restores defaults", "[stateful]") {
  proxied env;
  auto a = env.client();
  auto b = env.client();

  CHECK(is_nil(a.get(), {"CLIENT", "GETNAME"}));
  CHECK(str(a.get(), {"CLIENT", "SETNAME", "worker-a"}) == "OK");
  CHECK(str(a.get(), {"CLIENT", "GETNAME"}) == "worker-a");
  CHECK(is_nil(b.get(), {"CLIENT", "GETNAME"}));
  CHECK(error_of(a.get(), {"CLIENT", "SETNAME", "has space"}) == errors::client_name_spaces);
  CHECK(str(a.get(), {"CLIENT", "GETNAME"}) == "worker-a");

  CHECK(str(a.get(), {"SELECT", "2"}) == "OK");
  CHECK(str(a.get(), {"SET", "r", "db2"}) == "OK");
  CHECK(str(a.get(), {"MULTI"}) == "OK");
  CHECK(str(a.get(), {"RESET"}) == "RESET");
  CHECK(is_nil(a.get(), {"GET", "r"}));  // back in db 0, out of MULTI
  CHECK(str(a.get(), {"SELECT", "2"}) == "OK");
  CHECK(str(a.get(), {"GET", "r"}) == "db2");
}

}  // namespace
}  // namespace redis_sidecar::test

namespace redis_sidecar::test {

// Redis runs what it read before it sees a client leave. A client holding a connection of its own
// (a WATCH, another db, subscriptions, CLIENT TRACKING) that sends and leaves at once, or sends
// QUIT, must not lose those requests: the sidecar sends them before it closes that connection.
TEST_CASE("a client that leaves right after sending: what it sent still runs",
          "[stateful][close]") {
  proxied env;
  auto up = env.upstream();
  constexpr int rounds = 20;
  const std::vector<std::pair<std::string, std::vector<std::string>>> patterns = {
      // {what opens the connection state (its reply read first), what is sent before leaving}
      {resp_array({"WATCH", "w"}), {"MULTI", "SET %", "v", "EXEC"}},
      {resp_array({"SELECT", "5"}), {"SELECT", "0", "SET %", "v"}},
      {resp_array({"SUBSCRIBE", "chan"}), {"UNSUBSCRIBE", "SET %", "v"}},
      {resp_array({"CLIENT", "TRACKING", "on"}), {"SET %", "v", "QUIT"}},
  };
  int pattern = 0;
  for (const auto& [opening, leaving] : patterns) {
    INFO("pattern " << pattern << ": " << leaving.at(0));
    for (int i = 0; i < rounds; ++i) {
      const std::string key = "left:" + std::to_string(pattern) + ":" + std::to_string(i);
      raw_client c(env.port());
      value_reader in(c);
      c.send(opening);
      REQUIRE(!in.next().empty());
      std::string bytes;
      for (std::size_t a = 0; a < leaving.size(); ++a) {
        const std::string& w = leaving[a];
        if (w == "MULTI" || w == "EXEC" || w == "UNSUBSCRIBE" || w == "QUIT")
          bytes += resp_array({w});
        else if (w == "SELECT")
          bytes += resp_array({w, leaving[++a]});
        else if (w == "SET %")
          bytes += resp_array({"SET", key, leaving[++a]});
      }
      c.send(bytes);
      c.close();
    }
    const auto all_set = [&] {
      for (int i = 0; i < rounds; ++i)
        if (integer(up.get(),
                    {"EXISTS", "left:" + std::to_string(pattern) + ":" + std::to_string(i)}) != 1)
          return false;
      return true;
    };
    CHECK(eventually(all_set, std::chrono::seconds(5)));
    ++pattern;
  }
  check_still_serving(env.port());
}

// `printf 'PING\r\n' | nc -N`: the client shuts its sending side and reads what comes back.
TEST_CASE("a client that shuts its sending side gets the replies of what it sent",
          "[stateful][close]") {
  proxied env;
  for (const bool own_connection : {false, true}) {
    INFO((own_connection ? "on its own upstream connection (another db)" : "shared connection"));
    raw_client c(env.port());
    if (own_connection) {
      c.send(resp_array({"SELECT", "3"}));
      REQUIRE(read_value(c) == "+OK\r\n");
    }
    c.send("PING\r\n" + resp_array({"SET", "halfclosed", "v"}) + resp_array({"GET", "halfclosed"}) +
           resp_array({"INCR", "halfclosed:n"}));
    c.shutdown_send();
    std::string got;
    for (std::string more; !(more = c.read_available()).empty();) got += more;
    CHECK(got == "+PONG\r\n+OK\r\n$1\r\nv\r\n:1\r\n");
    auto up = env.upstream();
    if (own_connection) REQUIRE(str(up.get(), {"SELECT", "3"}) == "OK");
    CHECK(str(up.get(), {"GET", "halfclosed"}) == "v");
  }
}

// The same behind a command that takes the client's own connection (a blocking one, WAIT) and so
// waits for the replies before it: they all come, and a blocking command that finds its data
// answers, as Redis answers what it read before the close. One that blocks ends with the
// connection, as on Redis: the element pushed after the close stays in the list.
TEST_CASE("a client that shuts its sending side behind a blocking command gets every reply",
          "[stateful][close][blocking]") {
  proxied env;
  auto up = env.upstream();
  REQUIRE(integer(up.get(), {"RPUSH", "hc:l", "x"}) == 1);
  const auto all_of = [](raw_client& c) {
    std::string got;
    for (std::string more; !(more = c.read_available()).empty();) got += more;
    return got;
  };
  {
    raw_client c(env.port());
    c.send("PING\r\n" + resp_array({"RPUSH", "hc:l", "y"}) + resp_array({"BLPOP", "hc:l", "0"}) +
           "PING\r\n");
    c.shutdown_send();
    CHECK(all_of(c) == "+PONG\r\n:2\r\n*2\r\n$4\r\nhc:l\r\n$1\r\nx\r\n+PONG\r\n");
  }
  {
    raw_client c(env.port());
    c.send(resp_array({"SET", "hc:k", "1"}) + resp_array({"WAIT", "0", "0"}) + "PING\r\n");
    c.shutdown_send();
    CHECK(all_of(c) == "+OK\r\n:0\r\n+PONG\r\n");
  }
  {
    raw_client c(env.port());
    c.send(resp_array({"BLPOP", "hc:empty", "0"}));
    c.shutdown_send();
    CHECK(all_of(c) == "");  // as from Redis: no error of the sidecar's for the dropped BLPOP
    CHECK(c.closed_by_peer());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    REQUIRE(integer(up.get(), {"RPUSH", "hc:empty", "z"}) == 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(integer(up.get(), {"LLEN", "hc:empty"}) == 1);
  }
  CHECK(elements(up.get(), {"LRANGE", "hc:l", "0", "-1"}) == std::vector<std::string>{"y"});
}

// The same, with the replies and the client's close read in one turn of the sidecar's loop, the
// replies first: they are out of the request slots then, but not yet written (they go at the
// turn's end), and the close must wait for them. Another client's request, ready before both,
// makes the turn the same whether the loop looks for more events after a wake-up or not.
TEST_CASE("a client whose close is read in the turn its replies came still gets them",
          "[stateful][close]") {
  SIDECAR_ONLY();
  proxied env;
  for (const bool own_connection : {false, true}) {
    INFO((own_connection ? "on its own upstream connection (another db)" : "shared connection"));
    raw_client c(env.port());
    raw_client other(env.port());
    if (own_connection) {
      c.send(resp_array({"SELECT", "3"}));
      REQUIRE(read_value(c) == "+OK\r\n");
    }
    other.send(resp_array({"PING"}));
    REQUIRE(read_value(other) == "+PONG\r\n");
    env.redis.pause();
    c.send(resp_array({"SET", "closing", "v"}) + resp_array({"GET", "closing"}));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // sent on to Redis
    REQUIRE(env.side->stop());
    other.send(resp_array({"PING"}));
    env.redis.resume();
    std::this_thread::sleep_for(
        std::chrono::milliseconds(100));  // the replies wait for the sidecar
    c.shutdown_send();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(env.side->resume());
    std::string got;
    for (std::string more; !(more = c.read_available()).empty();) got += more;
    CHECK(got == "+OK\r\n$1\r\nv\r\n");
    CHECK(read_value(other) == "+PONG\r\n");
  }
}

}  // namespace redis_sidecar::test

namespace redis_sidecar::test {

// A client on its own connection (here CLIENT TRACKING, so its requests pass on unread) that
// sends QUIT gets, as from Redis, the replies of what it sent before and QUIT's +OK, then the
// close.
TEST_CASE("QUIT on a client's own connection: the replies before it, +OK, then the close",
          "[stateful][close]") {
  proxied env;
  raw_client c(env.port());
  c.send(resp_array({"CLIENT", "TRACKING", "on"}));
  REQUIRE(read_value(c) == "+OK\r\n");
  c.send(resp_array({"SET", "quitting", "v"}) + resp_array({"GET", "quitting"}) +
         resp_array({"QUIT"}) + resp_array({"SET", "after-quit", "v"}));
  std::string got;
  for (std::string more; !(more = c.read_available()).empty();) got += more;
  CHECK(got == "+OK\r\n$1\r\nv\r\n+OK\r\n");
  auto up = env.upstream();
  CHECK(str(up.get(), {"GET", "quitting"}) == "v");
  CHECK(is_nil(up.get(), {"GET", "after-quit"}));
}

}  // namespace redis_sidecar::test
