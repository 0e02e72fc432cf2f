// CLIENT KILL and CLIENT UNBLOCK name clients by the ids CLIENT ID gave them and by their own
// addresses, so the sidecar answers them for its clients (CLIENT UNBLOCK through the client's own
// upstream connection): forwarded as they are, the ids would name the upstream's connections, the
// sidecar's own among them. Except where marked sidecar-only, every test here also runs against
// Redis itself with REDIS_SIDECAR_IT_DIRECT=1.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>

#include "tests/integration/common.hpp"

namespace redis_sidecar::test {
namespace {

// The client's address as the server sees it (CLIENT KILL ADDR): its socket's local address.
std::string address_of(redisContext* c) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  REQUIRE(::getsockname(c->fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  char ip[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(sa.sin_port));
}

bool connection_closed(redisContext* c) {
  auto r = command(c, {"PING"});
  return r == nullptr;
}

}  // namespace

TEST_CASE("CLIENT KILL closes the clients its filters name", "[client][kill]") {
  proxied env;
  auto admin = env.client();
  SECTION("by ID") {
    auto victim = env.client();
    const long long id = integer(victim.get(), {"CLIENT", "ID"});
    CHECK(integer(admin.get(), {"CLIENT", "KILL", "ID", std::to_string(id)}) == 1);
    CHECK(connection_closed(victim.get()));
    CHECK(integer(admin.get(), {"CLIENT", "KILL", "ID", std::to_string(id)}) == 0);
    CHECK(str(admin.get(), {"PING"}) == "PONG");
  }
  SECTION("by address, old form and ADDR filter") {
    auto a = env.client();
    auto b = env.client();
    CHECK(str(a.get(), {"PING"}) == "PONG");  // accepted by now
    CHECK(str(b.get(), {"PING"}) == "PONG");
    CHECK(str(admin.get(), {"CLIENT", "KILL", address_of(a.get())}) == "OK");
    CHECK(connection_closed(a.get()));
    CHECK(error_of(admin.get(), {"CLIENT", "KILL", address_of(a.get())}) == "ERR No such client");
    CHECK(integer(admin.get(), {"CLIENT", "KILL", "ADDR", address_of(b.get())}) == 1);
    CHECK(connection_closed(b.get()));
  }
  SECTION("by TYPE: subscribers only, and never the caller unless SKIPME no") {
    auto sub = env.client();
    auto plain = env.client();
    CHECK(str(plain.get(), {"PING"}) == "PONG");
    CHECK(elements(sub.get(), {"SUBSCRIBE", "news"}) ==
          std::vector<std::string>{"subscribe", "news", "1"});
    CHECK(integer(admin.get(), {"CLIENT", "KILL", "TYPE", "pubsub"}) == 1);
    CHECK(connection_closed(sub.get()));
    CHECK(str(plain.get(), {"PING"}) == "PONG");
    CHECK(integer(admin.get(), {"CLIENT", "KILL", "TYPE", "pubsub"}) == 0);
    // USER default is every client; the caller is skipped by default.
    const long long killed = integer(admin.get(), {"CLIENT", "KILL", "USER", "default"});
    CHECK(killed >= 1);
    CHECK(connection_closed(plain.get()));
    CHECK(str(admin.get(), {"PING"}) == "PONG");
    // Killing itself: the reply first, then the close.
    const long long self = integer(admin.get(), {"CLIENT", "ID"});
    CHECK(integer(admin.get(), {"CLIENT", "KILL", "ID", std::to_string(self), "SKIPME", "no"}) ==
          1);
    CHECK(connection_closed(admin.get()));
  }
  SECTION("bad filters: Redis' errors") {
    CHECK(error_of(admin.get(), {"CLIENT", "KILL", "ID", "0"}) ==
          "ERR client-id should be greater than 0");
    CHECK(error_of(admin.get(), {"CLIENT", "KILL", "TYPE", "foo"}) ==
          "ERR Unknown client type 'foo'");
    CHECK(error_of(admin.get(), {"CLIENT", "KILL", "USER", "nobody"}) ==
          "ERR No such user 'nobody'");
    CHECK(error_of(admin.get(), {"CLIENT", "KILL", "ID", "5", "TYPE"}) == "ERR syntax error");
  }
}

TEST_CASE("CLIENT KILL from a subscriber: RESP3 runs it, RESP2 refuses it as Redis does",
          "[client][kill][pubsub]") {
  proxied env;
  auto victim = env.client();
  const std::string id = std::to_string(integer(victim.get(), {"CLIENT", "ID"}));
  SECTION("RESP2") {
    raw_client c(env.port());
    c.send("SUBSCRIBE ch\r\nCLIENT KILL ID " + id + "\r\n");
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c).starts_with("-ERR Can't execute 'client|kill'"));
    CHECK(str(victim.get(), {"PING"}) == "PONG");
  }
  SECTION("RESP3") {
    raw_client c(env.port());
    c.send("HELLO 3\r\nSUBSCRIBE ch\r\nCLIENT KILL ID " + id + "\r\nPING\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c) == ":1\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
    CHECK(connection_closed(victim.get()));
  }
}

// The sidecar's own upstream connections have ids on the upstream that an app could pass: CLIENT
// KILL through the sidecar never reaches them.
TEST_CASE("CLIENT KILL never closes the sidecar's upstream connections", "[client][kill]") {
  SIDECAR_ONLY();
  proxied env;
  auto c = env.client();
  CHECK(str(c.get(), {"SET", "k", "v"}) == "OK");
  auto up = env.upstream();
  const std::string before = str(up.get(), {"CLIENT", "LIST"});
  std::vector<std::string> ids;
  for (std::size_t at = before.find("id="); at != std::string::npos;
       at = before.find("\nid=", at + 1)) {
    const std::size_t start = before.find("id=", at) + 3;
    ids.push_back(before.substr(start, before.find(' ', start) - start));
  }
  REQUIRE(ids.size() >= 2);
  const long long mine = integer(c.get(), {"CLIENT", "ID"});
  for (const auto& id : ids) {
    if (id == std::to_string(mine)) continue;  // that id is this client's, through the sidecar
    INFO("upstream id " << id);
    CHECK(integer(c.get(), {"CLIENT", "KILL", "ID", id}) <= 1);
  }
  CHECK(str(c.get(), {"GET", "k"}) == "v");
  const std::string after = str(up.get(), {"CLIENT", "LIST"});
  for (const auto& id : ids) CHECK(after.find("id=" + id + " ") != std::string::npos);
}

TEST_CASE("CLIENT UNBLOCK wakes a client blocked through the sidecar", "[client][blocking]") {
  proxied env;
  auto blocked = env.client();
  auto other = env.client();
  const std::string id = std::to_string(integer(blocked.get(), {"CLIENT", "ID"}));
  CHECK(integer(other.get(), {"CLIENT", "UNBLOCK", id}) == 0);  // not blocked
  CHECK(error_of(other.get(), {"CLIENT", "UNBLOCK", "abc"}) ==
        "ERR value is not an integer or out of range");
  CHECK(error_of(other.get(), {"CLIENT", "UNBLOCK", id, "FOO"}) ==
        "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");

  REQUIRE(send_only(blocked.get(), {"BLPOP", "unblock-q", "0"}));
  REQUIRE(eventually([&] { return integer(other.get(), {"CLIENT", "UNBLOCK", id}) == 1; }));
  auto r = next_reply(blocked.get());
  REQUIRE(r);
  CHECK(r->type == REDIS_REPLY_NIL);  // as if timed out

  REQUIRE(send_only(blocked.get(), {"BLPOP", "unblock-q", "0"}));
  REQUIRE(eventually([&] {
    return integer(other.get(), {"CLIENT", "UNBLOCK", id, "ERROR"}) == 1;
  }));
  r = next_reply(blocked.get());
  REQUIRE(r);
  REQUIRE(r->type == REDIS_REPLY_ERROR);
  CHECK(std::string(r->str).starts_with("UNBLOCKED"));
  CHECK(str(blocked.get(), {"PING"}) == "PONG");
  CHECK(integer(other.get(), {"CLIENT", "UNBLOCK", "999999"}) == 0);
}

// Passed on unread (after MONITOR, CLIENT TRACKING, CLIENT REPLY, or in a MULTI there), CLIENT
// subcommands keep their replies one for one: a bare CLIENT is Redis' arity error, CLIENT ID in a
// MULTI is queued like any command, CLIENT REPLY SKIP skips CLIENT ID's reply.
TEST_CASE("CLIENT subcommands after MONITOR, CLIENT TRACKING and CLIENT REPLY",
          "[client][pubsub]") {
  proxied env;
  raw_client c(env.port());
  SECTION("a bare CLIENT after MONITOR") {
    c.send("MONITOR\r\nCLIENT\r\nPING\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "-ERR wrong number of arguments for 'client' command\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
  }
  SECTION("CLIENT ID queued in a MULTI") {
    c.send("CLIENT TRACKING on\r\nMULTI\r\nCLIENT ID\r\nEXEC\r\nPING x\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "+QUEUED\r\n");
    const std::string exec = read_value(c);
    CHECK(exec.starts_with("*1\r\n:"));
    CHECK(read_value(c) == "$1\r\nx\r\n");
  }
  SECTION("CLIENT REPLY SKIP, then CLIENT ID") {
    c.send("CLIENT TRACKING on\r\nCLIENT REPLY SKIP\r\nCLIENT ID\r\nPING after\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "$5\r\nafter\r\n");
  }
}

// RESET turns replies back on for what follows it, but is itself the command a CLIENT REPLY SKIP
// skips: the session must not wait for a +RESET that never comes (it waited forever, answering
// nothing more). After CLIENT REPLY OFF, Redis does answer RESET.
TEST_CASE("RESET after CLIENT REPLY SKIP or OFF: what follows it is answered", "[client][reset]") {
  proxied env;
  raw_client c(env.port());
  SECTION("SKIP") {
    c.send("CLIENT REPLY SKIP\r\nRESET\r\nPING\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
    c.send("ECHO hi\r\n");
    CHECK(read_value(c) == "$2\r\nhi\r\n");
  }
  SECTION("SKIP, in a pipeline with writes before it") {
    c.send("SET t:reset 1\r\nCLIENT REPLY SKIP\r\nINCR t:reset\r\nRESET\r\nGET t:reset\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "+RESET\r\n");  // SKIP skipped INCR's reply, not RESET's
    CHECK(read_value(c) == "$1\r\n2\r\n");
  }
  SECTION("OFF") {
    c.send("CLIENT REPLY OFF\r\nSET t:reset 1\r\nRESET\r\nPING\r\n");
    CHECK(read_value(c) == "+RESET\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
  }
}

// AUTH, which the sidecar answers itself, under CLIENT REPLY SKIP or OFF: skipped or unanswered as
// by Redis, and the skip does not move on to the next request (it answered AUTH, then skipped
// PING's reply).
TEST_CASE("AUTH under CLIENT REPLY SKIP or OFF is answered as Redis answers it", "[client][auth]") {
  proxied env;
  raw_client c(env.port());
  SECTION("SKIP") {
    c.send("CLIENT REPLY SKIP\r\nAUTH x\r\nPING\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
    c.send("ECHO hi\r\n");
    CHECK(read_value(c) == "$2\r\nhi\r\n");
  }
  SECTION("OFF, then ON") {
    c.send("CLIENT REPLY OFF\r\nAUTH x\r\nCLIENT REPLY ON\r\nPING\r\n");
    CHECK(read_value(c) == "+OK\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
  }
}

// Where markers cannot keep order (CLIENT REPLY OFF or SKIP, or MULTI, passed on unread), CLIENT
// KILL is refused rather than forwarded: its ids would name upstream connections.
TEST_CASE("CLIENT KILL after CLIENT REPLY passed on unread is refused, in order",
          "[client][kill]") {
  SIDECAR_ONLY();
  proxied env;
  auto victim = env.client();
  const std::string id = std::to_string(integer(victim.get(), {"CLIENT", "ID"}));
  raw_client c(env.port());
  c.send("CLIENT TRACKING on\r\nCLIENT REPLY SKIP\r\nPING skipped\r\nCLIENT KILL ID " + id +
         "\r\nPING\r\n");
  CHECK(read_value(c) == "+OK\r\n");
  CHECK(
      read_value(c).starts_with("-ERR unknown command 'CLIENT-KILL-UNSUPPORTED-BY-REDIS-SIDECAR"));
  CHECK(read_value(c) == "+PONG\r\n");
  CHECK(str(victim.get(), {"PING"}) == "PONG");
}

// Client-side caching over RESP2: one connection subscribes to __redis__:invalidate, another
// redirects its tracking messages there by the first one's CLIENT ID.
TEST_CASE("CLIENT TRACKING REDIRECT names a client by its CLIENT ID", "[client][tracking]") {
  proxied env;
  auto sink = env.client();
  auto reader = env.client();
  auto writer = env.client();
  const std::string id = std::to_string(integer(sink.get(), {"CLIENT", "ID"}));
  CHECK(elements(sink.get(), {"SUBSCRIBE", "__redis__:invalidate"}) ==
        std::vector<std::string>{"subscribe", "__redis__:invalidate", "1"});
  CHECK(error_of(reader.get(), {"CLIENT", "TRACKING", "on", "REDIRECT", "999999"}) ==
        "ERR The client ID you want redirect to does not exist");
  CHECK(str(reader.get(), {"CLIENT", "TRACKING", "on", "REDIRECT", id}) == "OK");
  CHECK(is_nil(reader.get(), {"GET", "tracked"}));
  CHECK(str(writer.get(), {"SET", "tracked", "v"}) == "OK");
  auto msg = next_reply(sink.get());
  REQUIRE(msg);
  REQUIRE(msg->type == REDIS_REPLY_ARRAY);
  REQUIRE(msg->elements == 3);
  CHECK(std::string(msg->element[0]->str) == "message");
  CHECK(std::string(msg->element[1]->str) == "__redis__:invalidate");
  REQUIRE(msg->element[2]->type == REDIS_REPLY_ARRAY);
  REQUIRE(msg->element[2]->elements == 1);
  CHECK(std::string(msg->element[2]->element[0]->str) == "tracked");
}

// The redirect target unsubscribes and subscribes again, as client libraries do when they
// reconfigure: on Redis its connection, and so the redirect, stays. Then it leaves: a RESP3
// tracking client is told so by a push naming it by the id CLIENT ID gave it.
TEST_CASE("CLIENT TRACKING REDIRECT outlasts the target's resubscribe and names it when broken",
          "[client][tracking]") {
  proxied env;
  auto writer = env.client();
  auto sink = std::make_unique<raw_client>(env.port());
  sink->send("CLIENT ID\r\nSUBSCRIBE __redis__:invalidate\r\n");
  const std::string id_reply = read_value(*sink);
  REQUIRE(id_reply.starts_with(":"));
  const std::string id = id_reply.substr(1, id_reply.size() - 3);
  CHECK(read_value(*sink) == "*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n");
  raw_client reader(env.port());
  reader.send("HELLO 3\r\nCLIENT TRACKING on REDIRECT " + id + "\r\nGET k1\r\n");
  CHECK(read_value(reader).starts_with("%7\r\n"));
  CHECK(read_value(reader) == "+OK\r\n");
  CHECK(read_value(reader) == "_\r\n");
  sink->send("UNSUBSCRIBE\r\nPING\r\nSUBSCRIBE __redis__:invalidate\r\n");
  CHECK(read_value(*sink) == "*3\r\n$11\r\nunsubscribe\r\n$20\r\n__redis__:invalidate\r\n:0\r\n");
  CHECK(read_value(*sink) == "+PONG\r\n");
  CHECK(read_value(*sink) == "*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n");
  CHECK(str(writer.get(), {"SET", "k1", "v"}) == "OK");
  CHECK(read_value(*sink) ==
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$2\r\nk1\r\n");
  reader.send("GET k2\r\n");
  CHECK(read_value(reader) == "_\r\n");
  sink.reset();  // the target leaves
  CHECK(eventually([&] {
    auto c = env.client();
    return elements(c.get(), {"PUBSUB", "NUMSUB", "__redis__:invalidate"}).at(1) == "0";
  }));
  CHECK(str(writer.get(), {"SET", "k2", "v"}) == "OK");
  CHECK(read_value(reader) == ">2\r\n$21\r\ntracking-redir-broken\r\n:" + id + "\r\n");
}

// A client waiting in a blocking command shows flag b, as in Redis, and cmd is that command.
TEST_CASE("CLIENT LIST shows a client waiting in a blocking command with flag b",
          "[client][list]") {
  proxied env;
  auto blocked = env.client();
  auto admin = env.client();
  const std::string id = std::to_string(integer(blocked.get(), {"CLIENT", "ID"}));
  const auto line = [&] {
    for (const auto& l : lines_of(str(admin.get(), {"CLIENT", "LIST"})))
      if (field(l, "id") == id) return l;
    return std::string();
  };
  CHECK(field(line(), "flags") == "N");
  REQUIRE(send_only(blocked.get(), {"BLPOP", "blocked-q", "0"}));
  CHECK(eventually([&] { return field(line(), "flags") == "b"; }));
  CHECK(field(line(), "cmd") == "blpop");
  CHECK(integer(admin.get(), {"RPUSH", "blocked-q", "job"}) == 1);
  auto popped = next_reply(blocked.get());
  REQUIRE(popped);
  REQUIRE(popped->type == REDIS_REPLY_ARRAY);
  CHECK(std::string(popped->element[1]->str) == "job");
  CHECK(field(line(), "flags") == "N");
  // XREAD blocks only with BLOCK.
  REQUIRE(send_only(blocked.get(), {"XREAD", "BLOCK", "0", "STREAMS", "blocked-s", "$"}));
  CHECK(eventually([&] { return field(line(), "flags") == "b"; }));
  CHECK(str(admin.get(), {"XADD", "blocked-s", "*", "f", "v"}).size() > 0);
  REQUIRE(next_reply(blocked.get()));
  CHECK(field(line(), "flags") == "N");
}

// CLIENT GETREDIR and CLIENT TRACKINGINFO name the redirect target by the id CLIENT ID gave it,
// in RESP2 and RESP3, pipelined with other requests, and still after the target has gone (Redis
// keeps its id, and flags the redirect as broken once a message could not be delivered).
TEST_CASE("CLIENT GETREDIR and TRACKINGINFO name the redirect target by its CLIENT ID",
          "[client][tracking]") {
  proxied env;
  auto sink = env.client();
  auto writer = env.client();
  const std::string id = std::to_string(integer(sink.get(), {"CLIENT", "ID"}));
  CHECK(elements(sink.get(), {"SUBSCRIBE", "__redis__:invalidate"}) ==
        std::vector<std::string>{"subscribe", "__redis__:invalidate", "1"});
  auto untracked = env.client();
  CHECK(integer(untracked.get(), {"CLIENT", "GETREDIR"}) == -1);

  const std::string redirect2 = "$8\r\nredirect\r\n:" + id + "\r\n";
  raw_client r2(env.port());
  r2.send("CLIENT TRACKING on REDIRECT " + id + "\r\nCLIENT GETREDIR\r\nCLIENT ID\r\n" +
          "CLIENT TRACKINGINFO\r\nPING\r\nGET tracked\r\n");
  CHECK(read_value(r2) == "+OK\r\n");
  CHECK(read_value(r2) == ":" + id + "\r\n");
  const std::string own = read_value(r2);
  CHECK(own.starts_with(":"));
  CHECK(own != ":" + id + "\r\n");
  CHECK(read_value(r2) ==
        "*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n" + redirect2 + "$8\r\nprefixes\r\n*0\r\n");
  CHECK(read_value(r2) == "+PONG\r\n");
  CHECK(read_value(r2) == "$-1\r\n");

  raw_client r3(env.port());
  r3.send("HELLO 3\r\n");
  CHECK(read_value(r3).starts_with("%7\r\n"));
  r3.send("CLIENT TRACKING on REDIRECT " + id + " BCAST PREFIX user:\r\nCLIENT TRACKINGINFO\r\n" +
          "CLIENT GETREDIR\r\n");
  CHECK(read_value(r3) == "+OK\r\n");
  CHECK(read_value(r3) == "%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$5\r\nbcast\r\n" + redirect2 +
                              "$8\r\nprefixes\r\n*1\r\n$5\r\nuser:\r\n");
  CHECK(read_value(r3) == ":" + id + "\r\n");

  // The target goes; the next invalidation for r2 cannot be delivered.
  sink.reset();
  CHECK(str(writer.get(), {"SET", "tracked", "v"}) == "OK");
  CHECK(eventually([&] {
    r2.send("CLIENT TRACKINGINFO\r\n");
    return read_value(r2).find("broken_redirect") != std::string::npos;
  }));
  r2.send("CLIENT GETREDIR\r\nCLIENT TRACKINGINFO\r\n");
  CHECK(read_value(r2) == ":" + id + "\r\n");
  CHECK(read_value(r2).find(redirect2) != std::string::npos);
}

// CLIENT LIST and CLIENT INFO show the clients with the ids CLIENT ID gave them and the
// addresses CLIENT KILL matches: what an admin reads there works with CLIENT KILL.
TEST_CASE("CLIENT INFO and CLIENT LIST describe the clients as CLIENT ID and KILL name them",
          "[client][list]") {
  proxied env;
  auto a = env.client();
  auto b = env.client();
  const std::string a_id = std::to_string(integer(a.get(), {"CLIENT", "ID"}));
  const std::string b_id = std::to_string(integer(b.get(), {"CLIENT", "ID"}));
  CHECK(str(a.get(), {"CLIENT", "SETNAME", "worker-a"}) == "OK");
  CHECK(str(a.get(), {"SELECT", "2"}) == "OK");

  const std::string info = str(a.get(), {"CLIENT", "INFO"});
  CHECK(info.ends_with("\n"));
  CHECK(lines_of(info).size() == 1);
  CHECK(field(info, "id") == a_id);
  CHECK(field(info, "addr") == address_of(a.get()));
  CHECK(field(info, "laddr") == "127.0.0.1:" + std::to_string(env.port()));
  CHECK(field(info, "name") == "worker-a");
  CHECK(field(info, "db") == "2");
  CHECK(field(info, "flags") == "N");
  CHECK(field(info, "sub") == "0");
  CHECK(field(info, "multi") == "-1");
  CHECK(field(info, "cmd") == "client|info");
  CHECK(field(info, "user") == "default");
  CHECK(field(info, "resp") == "2");
  CHECK(error_of(a.get(), {"CLIENT", "INFO", "x"}) ==
        "ERR wrong number of arguments for 'client|info' command");

  const auto all = lines_of(str(b.get(), {"CLIENT", "LIST"}));
  std::vector<std::string> ids;
  for (const auto& line : all) ids.push_back(field(line, "id"));
  CHECK(std::is_sorted(ids.begin(), ids.end(), [](const std::string& x, const std::string& y) {
    return std::stoull(x) < std::stoull(y);
  }));  // oldest first
  CHECK(std::find(ids.begin(), ids.end(), a_id) != ids.end());
  CHECK(std::find(ids.begin(), ids.end(), b_id) != ids.end());
  for (const auto& line : all) CHECK(field(line, "name") != "redis-sidecar");

  const auto by_id = lines_of(str(b.get(), {"CLIENT", "LIST", "ID", a_id, "999999", b_id}));
  REQUIRE(by_id.size() == 2);
  CHECK(field(by_id[0], "id") == a_id);
  CHECK(field(by_id[0], "cmd") == "client|info");
  CHECK(field(by_id[1], "id") == b_id);
  CHECK(field(by_id[1], "cmd") == "client|list");
  CHECK(str(b.get(), {"CLIENT", "LIST", "ID", "0"}).empty());

  // A subscriber is type pubsub, with its channels and patterns counted apart.
  auto sub = env.client();
  const std::string sub_id = std::to_string(integer(sub.get(), {"CLIENT", "ID"}));
  CHECK(elements(sub.get(), {"SUBSCRIBE", "c1"}).size() == 3);
  CHECK(elements(sub.get(), {"SUBSCRIBE", "c2"}).size() == 3);
  CHECK(elements(sub.get(), {"PSUBSCRIBE", "p*"}).size() == 3);
  const auto pubsub = lines_of(str(b.get(), {"CLIENT", "LIST", "TYPE", "pubsub"}));
  REQUIRE(pubsub.size() == 1);
  CHECK(field(pubsub[0], "id") == sub_id);
  CHECK(field(pubsub[0], "flags") == "P");
  CHECK(field(pubsub[0], "sub") == "2");
  CHECK(field(pubsub[0], "psub") == "1");
  CHECK(field(pubsub[0], "ssub") == "0");
  for (const auto& line : lines_of(str(b.get(), {"CLIENT", "LIST", "TYPE", "normal"})))
    CHECK(field(line, "id") != sub_id);
  CHECK(str(b.get(), {"CLIENT", "LIST", "TYPE", "master"}).empty());

  CHECK(error_of(b.get(), {"CLIENT", "LIST", "TYPE", "foo"}) == "ERR Unknown client type 'foo'");
  CHECK(error_of(b.get(), {"CLIENT", "LIST", "ID", "abc"}) == "ERR Invalid client ID");
  CHECK(error_of(b.get(), {"CLIENT", "LIST", "ID"}) == "ERR syntax error");
  CHECK(error_of(b.get(), {"CLIENT", "LIST", "TYPE", "normal", "ID", "1"}) == "ERR syntax error");

  // The line's id and address are the ones CLIENT KILL takes.
  CHECK(integer(b.get(), {"CLIENT", "KILL", "ID", field(by_id[0], "id")}) == 1);
  CHECK(connection_closed(a.get()));
  CHECK(lines_of(str(b.get(), {"CLIENT", "LIST", "ID", a_id})).empty());
}

// CLIENT INFO pipelined behind a transaction shows what the transaction left: here the db of the
// SELECT it ran.
TEST_CASE("CLIENT INFO behind MULTI / SELECT / EXEC shows the db the transaction selected",
          "[client][list][select]") {
  proxied env;
  raw_client c(env.port());
  c.send("MULTI\r\nSELECT 1\r\nEXEC\r\nCLIENT INFO\r\n");
  CHECK(read_value(c) == "+OK\r\n");
  CHECK(read_value(c) == "+QUEUED\r\n");
  CHECK(read_value(c) == "*1\r\n+OK\r\n");
  const std::string info = read_value(c);
  CHECK(field(info, "db") == "1");
  CHECK(field(info, "multi") == "-1");
}

// From a subscriber, in its place among the replies Redis sends (RESP3: a verbatim string).
TEST_CASE("CLIENT INFO and CLIENT LIST from a subscriber come in order", "[client][list][pubsub]") {
  proxied env;
  SECTION("RESP3") {
    raw_client c(env.port());
    c.send(
        "HELLO 3\r\nSUBSCRIBE ch\r\nPSUBSCRIBE p*\r\nPING a\r\nCLIENT INFO\r\nPING b\r\n"
        "CLIENT LIST ID 0\r\nPING c\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c) == ">3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n");
    CHECK(read_value(c) == "$1\r\na\r\n");
    const std::string info = read_value(c);
    CHECK(info.starts_with("="));
    CHECK(info.find("\r\ntxt:id=") != std::string::npos);
    CHECK(field(info, "flags") == "P");
    CHECK(field(info, "sub") == "1");
    CHECK(field(info, "psub") == "1");
    CHECK(field(info, "resp") == "3");
    CHECK(read_value(c) == "$1\r\nb\r\n");
    CHECK(read_value(c) == "=4\r\ntxt:\r\n");
    CHECK(read_value(c) == "$1\r\nc\r\n");
  }
  SECTION("RESP2: refused, as in subscribed mode everything but (un)subscribing and PING") {
    raw_client c(env.port());
    c.send("SUBSCRIBE ch\r\nPING a\r\nCLIENT INFO\r\nCLIENT LIST\r\nPING b\r\n");
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$1\r\na\r\n");
    CHECK(read_value(c).starts_with("-ERR Can't execute 'client|info': only (P|S)SUBSCRIBE"));
    CHECK(read_value(c).starts_with("-ERR Can't execute 'client|list': only (P|S)SUBSCRIBE"));
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$1\r\nb\r\n");
  }
}

// HELLO from a client in raw mode goes to its connection (whose protocol must follow) but is
// answered as outside it: the sidecar's id, the name kept; the client's protocol changes only if
// Redis accepted it, which it does not for a RESP2 subscriber.
TEST_CASE("HELLO from a subscriber: the sidecar's id, and a protocol change only if accepted",
          "[client][pubsub][hello]") {
  redis_options opts;
  if (direct_mode()) opts.requirepass = "hello-pass-5d";
  proxied env(opts, {"--requirepass", "hello-pass-5d"});
  raw_client c(env.port());
  c.send("AUTH hello-pass-5d\r\nCLIENT ID\r\n");
  CHECK(read_value(c) == "+OK\r\n");
  const std::string id_line = read_value(c);
  REQUIRE(id_line.starts_with(":"));
  const std::string id = id_line.substr(1, id_line.size() - 3);
  SECTION("RESP2 subscriber: refused, and still RESP2 after unsubscribing") {
    c.send("SUBSCRIBE ch\r\nHELLO 3\r\nPING\r\nUNSUBSCRIBE ch\r\nCLIENT INFO\r\nPING\r\n");
    CHECK(read_value(c) == "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c).starts_with("-ERR Can't execute 'hello'"));
    CHECK(read_value(c) == "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    CHECK(read_value(c) == "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n");
    const std::string info = read_value(c);
    CHECK(info.starts_with("$"));
    CHECK(field(info, "resp") == "2");
    CHECK(read_value(c) == "+PONG\r\n");
  }
  SECTION("RESP3 subscriber: answered with the sidecar's id and the name kept") {
    c.send(
        "HELLO 3\r\nSUBSCRIBE ch\r\nPING a\r\nHELLO 3 SETNAME sub-1\r\nPING b\r\n"
        "HELLO 3 AUTH default wrong\r\nHELLO 4\r\nCLIENT GETNAME\r\nCLIENT INFO\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    CHECK(read_value(c) == "$1\r\na\r\n");
    const std::string hello = read_value(c);
    CHECK(hello.starts_with("%7\r\n$6\r\nserver\r\n"));
    CHECK(hello.find("$2\r\nid\r\n:" + id + "\r\n") != std::string::npos);
    CHECK(read_value(c) == "$1\r\nb\r\n");
    CHECK(read_value(c).starts_with("-WRONGPASS"));
    CHECK(read_value(c).starts_with("-NOPROTO"));
    CHECK(read_value(c) == "$5\r\nsub-1\r\n");
    const std::string info = read_value(c);
    CHECK(field(info, "name") == "sub-1");
    CHECK(field(info, "id") == id);
    CHECK(field(info, "resp") == "3");
  }
  SECTION("RESP3 subscriber switching to RESP2: its confirmations are arrays from then on") {
    c.send("HELLO 3\r\nSUBSCRIBE ch\r\nHELLO 2\r\nUNSUBSCRIBE ch\r\nPING\r\nCLIENT INFO\r\n");
    CHECK(read_value(c).starts_with("%7\r\n"));
    CHECK(read_value(c) == ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    const std::string hello = read_value(c);
    CHECK(hello.starts_with("*14\r\n$6\r\nserver\r\n"));
    CHECK(hello.find("$2\r\nid\r\n:" + id + "\r\n") != std::string::npos);
    CHECK(read_value(c) == "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n");
    CHECK(read_value(c) == "+PONG\r\n");
    const std::string info = read_value(c);
    CHECK(info.starts_with("$"));
    CHECK(field(info, "resp") == "2");
  }
}

// Apps in the same pod can reach the sidecar over a unix socket (--listen unix:PATH). Redis 7.0
// names such a client by the socket's path, for addr and laddr alike, and flags it U.
TEST_CASE("clients over a unix socket: served, and listed as Redis lists them", "[client][unix]") {
  SIDECAR_ONLY();  // Redis would need a unixsocket of its own
  char tmpl[] = "/tmp/rsit-unix-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/sidecar.sock";
  {
    redis_server redis;
    sidecar side({"--upstream", redis.url(), "--listen", "unix:" + path});
    REQUIRE(side.running());
    context_ptr a{redisConnectUnix(path.c_str())};
    context_ptr b{redisConnectUnix(path.c_str())};
    REQUIRE((a && a->err == 0 && b && b->err == 0));
    CHECK(str(a.get(), {"SET", "unix-key", "v"}) == "OK");
    CHECK(str(b.get(), {"GET", "unix-key"}) == "v");
    const std::string info = str(a.get(), {"CLIENT", "INFO"});
    CHECK(field(info, "addr") == path + ":0");
    CHECK(field(info, "laddr") == path + ":0");
    CHECK(field(info, "flags") == "U");
    const std::string b_id = std::to_string(integer(b.get(), {"CLIENT", "ID"}));
    CHECK(field(str(a.get(), {"CLIENT", "LIST", "ID", b_id}), "addr") == path + ":0");
    CHECK(integer(a.get(), {"CLIENT", "KILL", "ADDR", path + ":0", "SKIPME", "yes"}) == 1);
    pollfd closed{b->fd, POLLIN, 0};  // (a write would raise SIGPIPE on a unix socket)
    CHECK(::poll(&closed, 1, 5000) == 1);
    char byte;
    CHECK(::recv(b->fd, &byte, 1, MSG_DONTWAIT) == 0);
    CHECK(str(a.get(), {"PING"}) == "PONG");
  }
  std::filesystem::remove_all(dir);
}

}  // namespace redis_sidecar::test
