// Protocol: byte-exact checks through a raw socket. Malformed requests get Redis' protocol error
// and a closed connection (and nobody else notices), inline commands work, HELLO switches one
// client between RESP2 and RESP3, and the client limit is enforced with Redis' error.
#include <chrono>
#include <thread>

#include "tests/integration/common.hpp"

namespace redis_sidecar::test {
namespace {

// Sends `request` on a fresh connection and checks that the reply is exactly `expected` (or, when
// `prefix_only`, starts with it: Redis adds detail to some messages), then that the connection is
// closed and the server still serves others.
void check_protocol_error(const proxied& env, const std::string& request, std::string_view error,
                          bool prefix_only = false) {
  INFO("request: " << request.substr(0, 40));
  raw_client raw(env.port());
  raw.send(request);
  std::string expected = error_bytes(error);
  std::string got = read_value(raw);
  if (prefix_only) {
    CHECK(got.starts_with(expected.substr(0, expected.size() - 2)));
  } else {
    CHECK(got == expected);
  }
  CHECK(raw.closed_by_peer());
  check_still_serving(env.port());
}

TEST_CASE("malformed multibulk and bulk lengths are rejected and the connection closed",
          "[protocol]") {
  proxied env;
  check_protocol_error(env, "*abc\r\n", errors::invalid_multibulk_length);
  check_protocol_error(env, "*1\r\n$abc\r\n", errors::invalid_bulk_length);
  check_protocol_error(env, "*1\r\n$-5\r\n", errors::invalid_bulk_length);
  // The byte where a '$' should be is named, as Redis names it (a line break as a space).
  check_protocol_error(env, "*1\r\n+foo\r\n", "ERR Protocol error: expected '$', got '+'");
  check_protocol_error(env, "*2\r\n$1\r\na\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'");
  check_protocol_error(env, "*1\r\n\r\n", "ERR Protocol error: expected '$', got ' '");
}

// --max-query-buffer-bytes bounds a request however it arrives: a 2 MB SET whose last megabyte
// came in one read was accepted before (2 of 6 connections of a Python client sending 64 KB
// chunks; this test's own sends did not hit it). A pipeline of small requests is not refused.
TEST_CASE("a request above --max-query-buffer-bytes is refused however it arrives", "[protocol]") {
  SIDECAR_ONLY();
  proxied env({}, {"--max-query-buffer-bytes=1mb"});
  const std::string value(1100 * 1024, 'q');  // past the limit, not by so much that sends fail
  const std::string request =
      "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
  for (int i = 0; i < 6; ++i) {
    raw_client raw(env.port());
    if (i % 2 == 0) {
      raw.send(request);
    } else {
      for (std::size_t at = 0; at < request.size(); at += 65536)
        raw.send(request.substr(at, 65536));
    }
    CHECK(read_value(raw) == error_bytes(errors::query_buffer));
    CHECK(raw.closed_by_peer());
  }
  {
    proxied small({}, {"--max-query-buffer-bytes=16kb"});
    raw_client raw(small.port());  // 28 KB of small requests in one write: none above 16 KB
    std::string pings;
    for (int i = 0; i < 2000; ++i) pings += "*1\r\n$4\r\nPING\r\n";
    raw.send(pings);
    std::string got;
    for (int i = 0; i < 2000; ++i) got += read_value(raw);
    CHECK(got.size() == 2000 * 7);
  }
  auto c = env.client();
  CHECK(is_nil(c.get(), {"GET", "big"}));
  CHECK(str(c.get(), {"SET", "small", std::string(512 * 1024, 's')}) == "OK");
}

TEST_CASE("a good request before a malformed one is still answered", "[protocol]") {
  proxied env;
  raw_client raw(env.port());
  raw.send("*1\r\n$4\r\nPING\r\n*x\r\n");
  CHECK(read_value(raw) == "+PONG\r\n");
  CHECK(read_value(raw) == error_bytes(errors::invalid_multibulk_length));
  CHECK(raw.closed_by_peer());
}

TEST_CASE("announced sizes above the limits are rejected before the payload",
          "[protocol][limits]") {
  SIDECAR_ONLY();  // Redis' own limits cannot be set this low
  proxied env(
      {}, {"--max-bulk-bytes", "1024", "--max-multibulk-len", "16", "--max-inline-bytes", "1024"});
  // Only the header is sent: the error must come without waiting for 2000 payload bytes.
  check_protocol_error(env, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n", errors::invalid_bulk_length);
  check_protocol_error(env, "*17\r\n", errors::invalid_multibulk_length);
  check_protocol_error(env, std::string(2000, 'x'), errors::too_big_inline);

  CHECK(env.side->log().find("closed: protocol error: " +
                             std::string(errors::invalid_bulk_length)) != std::string::npos);
  // Right at the limits is fine.
  auto c = env.client();
  std::vector<std::string> argv = {"MSET"};
  for (int i = 0; i < 7; ++i) argv.insert(argv.end(), {"k" + std::to_string(i), "v"});
  CHECK(argv.size() == 15);
  CHECK(str(c.get(), argv) == "OK");
  CHECK(str(c.get(), {"SET", "k", std::string(1024, 'b')}) == "OK");
  CHECK(str(c.get(), {"GET", "k"}) == std::string(1024, 'b'));
}

// What Redis sends back is not bound by what a client may send: a value stored by another client,
// a script's long status or error line, a deeply nested table. One pooled connection carries both
// clients here; a reply refused would reset it and fail the other client's requests.
TEST_CASE("replies beyond the request limits are forwarded, the shared connection kept",
          "[protocol][limits]") {
  SIDECAR_ONLY();
  proxied env({}, {"--max-bulk-bytes", "1024", "--max-inline-bytes", "1024", "--pool-size", "1",
                   "--cache-mode", "off"});
  auto c = env.client();
  auto other = env.client();
  auto up = env.upstream();
  REQUIRE(str(up.get(), {"SET", "big", std::string(4096, 'v')}) == "OK");
  CHECK(str(c.get(), {"GET", "big"}) == std::string(4096, 'v'));
  CHECK(str(c.get(), {"EVAL", "return {ok=string.rep('x', 70000)}", "0"}) ==
        std::string(70000, 'x'));
  CHECK(error_of(c.get(), {"EVAL", "return {err=string.rep('e', 70000)}", "0"})
            .find(std::string(70000, 'e')) != std::string::npos);
  CHECK(integer(other.get(), {"INCR", "n"}) == 1);
  // 100 levels: hiredis' reader stops at 9, so the bytes are compared with Redis' own.
  const std::string nested = resp_array(
      {"EVAL",
       "local t = {} local c = t for i = 1, 100 do local n = {} c[1] = n c = n end c[1] = 1 "
       "return t",
       "0"});
  raw_client via_sidecar(env.port());
  raw_client direct(env.redis.port());
  value_reader from_sidecar(via_sidecar), from_redis(direct);
  via_sidecar.send(nested);
  direct.send(nested);
  const std::string expected = from_redis.next();
  REQUIRE(expected.starts_with("*1\r\n*1\r\n"));
  CHECK(from_sidecar.next() == expected);
  CHECK(integer(other.get(), {"INCR", "n"}) == 2);
  CHECK(metric(env, "redis_sidecar_errors_total{kind=\"upstream_protocol\"}") == 0);
}

// Before AUTH (with a password required) Redis takes at most 10 arguments of at most 16 KB each,
// so that nobody can make it buffer a large request unauthenticated; so does the sidecar. After
// AUTH the configured limits apply again, and RESET brings the strict ones back.
TEST_CASE("before AUTH, requests are held to Redis' unauthenticated limits", "[protocol][auth]") {
  redis_options opts;
  if (direct_mode()) opts.requirepass = "unauth-pass-7e";
  proxied env(opts, {"--requirepass", "unauth-pass-7e"});
  const auto refused = [&](const std::string& request, std::string_view error) {
    raw_client c(env.port());
    c.send(request);
    CHECK(read_value(c) == error_bytes(error));
    CHECK(c.closed_by_peer());
  };
  std::vector<std::string> eleven(11, "x");
  eleven[0] = "ECHO";
  refused(resp_array(eleven), errors::unauthenticated_multibulk_length);
  refused("*2\r\n$4\r\nECHO\r\n$16385\r\n", errors::unauthenticated_bulk_length);
  // An announced length nobody accepts is the usual error.
  refused("*2\r\n$4\r\nECHO\r\n$x\r\n", errors::invalid_bulk_length);

  raw_client c(env.port());
  c.send(resp_array({"ECHO", std::string(16384, 'y')}));
  CHECK(read_value(c).starts_with("-NOAUTH"));
  c.send(resp_array({"AUTH", "unauth-pass-7e"}));
  CHECK(read_value(c) == "+OK\r\n");
  c.send(resp_array({"ECHO", std::string(20000, 'z')}));
  CHECK(read_value(c) == "$20000\r\n" + std::string(20000, 'z') + "\r\n");
  c.send(resp_array(eleven));
  CHECK(read_value(c).starts_with("-ERR wrong number of arguments"));
  c.send(resp_array({"RESET"}));
  CHECK(read_value(c) == "+RESET\r\n");
  c.send(resp_array(eleven));
  CHECK(read_value(c) == error_bytes(errors::unauthenticated_multibulk_length));
  CHECK(c.closed_by_peer());
}

// Redis frames each request under the limits the ones before it left, even when they arrive in
// one write: the sidecar frames a read's requests ahead, in batches, and must not frame past an
// AUTH or a RESET under the limits before it.
TEST_CASE("requests pipelined after AUTH or RESET are framed under the limits those leave",
          "[protocol][auth]") {
  redis_options opts;
  if (direct_mode()) opts.requirepass = "unauth-pass-7e";
  proxied env(opts, {"--requirepass", "unauth-pass-7e"});
  std::vector<std::string> eleven(11, "x");
  eleven[0] = "ECHO";
  raw_client c(env.port());
  c.send(resp_array({"AUTH", "unauth-pass-7e"}) + resp_array({"ECHO", std::string(20000, 'z')}) +
         resp_array(eleven) + resp_array({"RESET"}) + resp_array({"PING"}) + resp_array(eleven));
  CHECK(read_value(c) == "+OK\r\n");
  CHECK(read_value(c) == "$20000\r\n" + std::string(20000, 'z') + "\r\n");
  CHECK(read_value(c).starts_with("-ERR wrong number of arguments"));
  CHECK(read_value(c) == "+RESET\r\n");
  CHECK(read_value(c).starts_with("-NOAUTH"));
  CHECK(read_value(c) == error_bytes(errors::unauthenticated_multibulk_length));
  CHECK(c.closed_by_peer());
}

TEST_CASE("an endless inline line is rejected with too big inline request", "[protocol][limits]") {
  proxied env;
  // Redis' fixed limit is 64 KiB; the sidecar's default must not be below that either. Send
  // exactly enough to cross it so the server has read everything before it closes.
  const std::size_t size = 64 * 1024 + 1;
  raw_client raw(env.port());
  raw.send(std::string(size, 'y'));
  CHECK(read_value(raw) == error_bytes(errors::too_big_inline));
  CHECK(raw.closed_by_peer());
  check_still_serving(env.port());
}

TEST_CASE("inline commands work, with quoting", "[protocol][inline]") {
  proxied env;
  raw_client raw(env.port());
  raw.send("PING\r\n");
  CHECK(read_value(raw) == "+PONG\r\n");
  raw.send("SET k \"a b\"\r\n");
  CHECK(read_value(raw) == "+OK\r\n");
  raw.send("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
  CHECK(read_value(raw) == "$3\r\na b\r\n");
  raw.send("GET k\n");  // a bare newline ends an inline command too
  CHECK(read_value(raw) == "$3\r\na b\r\n");
  raw.send("SET q \"x\\ny\"\r\nGET q\r\n");  // escapes inside double quotes, two in one write
  CHECK(read_value(raw) == "+OK\r\n");
  CHECK(read_value(raw) == "$3\r\nx\ny\r\n");
  raw.send("\r\n\r\nPING\r\n");  // empty lines are ignored
  CHECK(read_value(raw) == "+PONG\r\n");
  // Inline and array requests mixed in one write, each answered in order with its own arguments.
  raw.send(
      "SET m \"in line\"\r\n*2\r\n$3\r\nGET\r\n$1\r\nm\r\nECHO \"one two\"\r\nGET m\r\n"
      "*2\r\n$4\r\nECHO\r\n$5\r\nthree\r\nECHO four\r\n");
  CHECK(read_value(raw) == "+OK\r\n");
  CHECK(read_value(raw) == "$7\r\nin line\r\n");
  CHECK(read_value(raw) == "$7\r\none two\r\n");
  CHECK(read_value(raw) == "$7\r\nin line\r\n");
  CHECK(read_value(raw) == "$5\r\nthree\r\n");
  CHECK(read_value(raw) == "$4\r\nfour\r\n");
  raw.send("SET k \"unterminated\r\n");
  CHECK(read_value(raw) == error_bytes(errors::unbalanced_quotes));
  CHECK(raw.closed_by_peer());
}

TEST_CASE("an array of no or negative length is skipped, as Redis does", "[protocol]") {
  proxied env;
  raw_client raw(env.port());
  raw.send("*0\r\n*-1\r\n*-5\r\nPING\r\n");
  CHECK(read_value(raw) == "+PONG\r\n");
  raw.send("*-0\r\n");
  CHECK(read_value(raw) == error_bytes(errors::invalid_multibulk_length));
  CHECK(raw.closed_by_peer());
}

TEST_CASE("requests split at every byte still work", "[protocol]") {
  proxied env;
  raw_client raw(env.port());
  const std::string request = "*3\r\n$3\r\nSET\r\n$5\r\nsplit\r\n$6\r\nval\r\nx\r\n";
  for (char ch : request) raw.send(std::string(1, ch));
  CHECK(read_value(raw) == "+OK\r\n");
  raw.send("*2\r\n$3\r\nGET\r\n$5\r\nsplit\r\n");
  CHECK(read_value(raw) == "$6\r\nval\r\nx\r\n");
}

TEST_CASE("HELLO 3 switches one client to RESP3 maps, then HELLO 2 switches back",
          "[protocol][resp3]") {
  proxied env;
  auto other = env.client();  // a RESP2 client alongside
  CHECK(integer(other.get(), {"HSET", "h", "f", "v"}) == 1);

  raw_client raw(env.port());
  raw.send("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
  std::string hello = read_value(raw);
  CHECK(hello.starts_with("%"));
  CHECK(hello.find("$5\r\nproto\r\n:3\r\n") != std::string::npos);

  raw.send("*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n");
  CHECK(read_value(raw) == "%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
  raw.send("*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n");
  CHECK(read_value(raw) == "_\r\n");
  raw.send("*3\r\n$6\r\nZSCORE\r\n$1\r\nz\r\n$1\r\nm\r\n");
  CHECK(read_value(raw) == "_\r\n");

  // Meanwhile the RESP2 client still gets RESP2.
  CHECK(elements(other.get(), {"HGETALL", "h"}) == std::vector<std::string>{"f", "v"});
  CHECK(is_nil(other.get(), {"GET", "missing"}));

  raw.send("*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n");
  std::string hello2 = read_value(raw);
  CHECK(hello2.starts_with("*"));
  raw.send("*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n");
  CHECK(read_value(raw) == "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
  raw.send("*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n");
  CHECK(read_value(raw) == "$-1\r\n");

  raw.send("*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n");
  CHECK(read_value(raw) == error_bytes(errors::noproto));
}

TEST_CASE("RESP3 pub/sub messages arrive as pushes", "[protocol][resp3][pubsub]") {
  proxied env;
  raw_client sub(env.port());
  sub.send("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
  CHECK(read_value(sub).starts_with("%"));
  sub.send("*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n");
  CHECK(read_value(sub) == ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");

  auto pub = env.client();
  CHECK(integer(pub.get(), {"PUBLISH", "ch", "hi"}) == 1);
  CHECK(read_value(sub) == ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n");

  // In RESP3 a subscribed client may still run ordinary commands.
  sub.send("*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n");
  CHECK(read_value(sub) == "_\r\n");
}

// A subscriber that sends a command and leaves without reading: its dedicated connection is
// closed once what it sent is written, and the replies Redis sends meanwhile are nobody's. They
// are not an upstream protocol error, and what the client sent still runs (RESP3 allows any
// command while subscribed), as on Redis itself.
TEST_CASE("subscribers that send a command and leave at once: their commands run, no error",
          "[protocol][pubsub]") {
  proxied env;
  for (int i = 0; i < 200; ++i) {
    raw_client sub(env.port());
    if (i % 2 == 0) {
      sub.send("*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n*1\r\n$4\r\nPING\r\n");
    } else {
      const std::string key = "left:" + std::to_string(i);
      sub.send(
          "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n"
          "*3\r\n$3\r\nSET\r\n$" +
          std::to_string(key.size()) + "\r\n" + key + "\r\n$1\r\nv\r\n");
    }
    if (i % 4 < 2) std::this_thread::sleep_for(std::chrono::milliseconds(i % 7));
    sub.close();
  }
  auto up = env.upstream();
  const auto missing = [&] {
    int n = 0;
    for (int i = 1; i < 200; i += 2)
      n += integer(up.get(), {"EXISTS", "left:" + std::to_string(i)}) == 1 ? 0 : 1;
    return n;
  };
  eventually([&] { return missing() == 0; }, std::chrono::seconds(5));
  CHECK(missing() == 0);
  CHECK(metric(env, "redis_sidecar_errors_total{kind=\"upstream_protocol\"}") == 0);
  check_still_serving(env.port());
}

TEST_CASE("subscribes and CLIENT TRACKING queued in a MULTI: EXEC has their results alone",
          "[protocol][multi]") {
  // They move the client to raw mode on its dedicated connection while the MULTI is open there:
  // nothing of the sidecar's own may be queued in the client's transaction.
  proxied env;
  const auto exec_reply = [&](const std::vector<std::vector<std::string>>& queued) {
    raw_client c(env.port());
    c.send(resp_array({"MULTI"}));
    REQUIRE(read_value(c) == "+OK\r\n");
    for (const auto& q : queued) {
      c.send(resp_array(q));
      REQUIRE(read_value(c) == "+QUEUED\r\n");
    }
    c.send(resp_array({"EXEC"}));
    return read_value(c);
  };
  CHECK(exec_reply({{"SUBSCRIBE", "c"}}) == "*1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
  CHECK(exec_reply({{"SET", "q", "1"}, {"PSUBSCRIBE", "p*"}, {"GET", "q"}}) ==
        "*3\r\n+OK\r\n*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:1\r\n$1\r\n1\r\n");
  CHECK(exec_reply({{"CLIENT", "TRACKING", "ON"}, {"GET", "q"}}) == "*2\r\n+OK\r\n$1\r\n1\r\n");
}

TEST_CASE("SELECT of a db that cannot exist gets Redis' own errors", "[protocol]") {
  proxied env;
  raw_client c(env.port());
  for (const auto& [db, error] : std::vector<std::pair<std::string, std::string_view>>{
           {"-1", "ERR DB index is out of range"},
           {"2000000000", "ERR DB index is out of range"},
           {"99999999999",
            "ERR value is out of range, value must between -2147483648 and 2147483647"},
           {"one", "ERR value is not an integer or out of range"},
           // Integers as Redis reads them: no leading zeros, no "-0", no '+'.
           {"00", "ERR value is not an integer or out of range"},
           {"-0", "ERR value is not an integer or out of range"},
           {"01", "ERR value is not an integer or out of range"},
           {"+1", "ERR value is not an integer or out of range"}}) {
    c.send(resp_array({"SELECT", db}));
    CHECK(read_value(c) == error_bytes(error));
  }
  c.send(resp_array({"HELLO", "03"}));
  CHECK(read_value(c) == error_bytes("ERR Protocol version is not an integer or out of range"));
  c.send(resp_array({"PING"}));
  CHECK(read_value(c) == "+PONG\r\n");
}

// A bulk string holds any bytes; an error that quotes one must still be one line. Redis writes CR
// and LF there as spaces; so does the sidecar, whose own errors quote HELLO's options and CLIENT
// LIST's type. Otherwise "+OK" would reach the client as a reply of its own, and every reply after
// it would answer the wrong request.
TEST_CASE("a client's CR and LF quoted in an error do not end the reply", "[protocol]") {
  proxied env;
  raw_client c(env.port());
  c.send(resp_array({"HELLO", "3", "a\r\n+OK"}));
  CHECK(read_value(c) == error_bytes("ERR Syntax error in HELLO option 'a  +OK'"));
  c.send(resp_array({"CLIENT", "LIST", "TYPE", "x\r\n+OK\r\n"}));
  CHECK(read_value(c) == error_bytes("ERR Unknown client type 'x  +OK  '"));
  c.send(resp_array({"PING"}));
  CHECK(read_value(c) == "+PONG\r\n");
}

TEST_CASE("clients above --max-clients get Redis' error and are closed", "[protocol][limits]") {
  redis_options opts;
  if (direct_mode()) opts.extra.push_back("maxclients 2");
  proxied env(opts, {"--max-clients", "2"});
  auto a = env.client();
  auto b = env.client();
  CHECK(str(a.get(), {"PING"}) == "PONG");
  CHECK(str(b.get(), {"PING"}) == "PONG");

  raw_client third(env.port());
  CHECK(read_value(third) == error_bytes(errors::max_clients));
  CHECK(third.closed_by_peer());
  if (env.side) CHECK(env.side->log().find("--max-clients 2 reached") != std::string::npos);

  b.reset();  // a slot frees up
  CHECK(eventually([&] {
    auto c = env.client();
    auto r = command(c.get(), {"PING"});
    return r && r->type == REDIS_REPLY_STATUS;
  }));
}

}  // namespace
}  // namespace redis_sidecar::test
