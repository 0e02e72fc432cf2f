// A subscribed client's subscriptions without I/O: confirmations told apart from messages and
// replies byte by byte, the two counts Redis keeps apart, and the marker's request and reply.
#include <catch2/catch.hpp>
#include <string>

#include "proxy/subscriptions.hpp"

using namespace redis_sidecar;

TEST_CASE("subscriptions: confirmations in RESP2 and RESP3", "[subscriptions]") {
  struct row {
    std::string_view frame;
    bool shard;
    bool pattern;
    bool unsubscribe;
    std::int64_t count;
  };
  const row rows[] = {
      {"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", false, false, false, 1},
      {">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:3\r\n", false, false, false, 3},
      {"*3\r\n$10\r\npsubscribe\r\n$3\r\nch*\r\n:2\r\n", false, true, false, 2},
      {"*3\r\n$10\r\nssubscribe\r\n$2\r\nsh\r\n:1\r\n", true, false, false, 1},
      {"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n", false, false, true, 0},
      {">3\r\n$12\r\npunsubscribe\r\n$3\r\nch*\r\n:4\r\n", false, true, true, 4},
      {"*3\r\n$12\r\nsunsubscribe\r\n$2\r\nsh\r\n:0\r\n", true, false, true, 0},
      // UNSUBSCRIBE with nothing subscribed: a nil channel.
      {"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", false, false, true, 0},
      {">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n", false, false, true, 0},
  };
  for (const auto& r : rows) {
    INFO(r.frame);
    const auto c = parse_confirmation(r.frame, r.frame[0] == '>' ? 3 : 2);
    REQUIRE(c);
    CHECK(c->shard == r.shard);
    CHECK(c->pattern == r.pattern);
    CHECK(c->unsubscribe == r.unsubscribe);
    CHECK(c->count == r.count);
  }
}

TEST_CASE("subscriptions: messages, replies and malformed look-alikes are not confirmations",
          "[subscriptions]") {
  const std::string_view frames[] = {
      "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$9\r\nsubscribe\r\n",
      "*4\r\n$8\r\npmessage\r\n$3\r\nch*\r\n$2\r\nch\r\n$1\r\nx\r\n",
      ">3\r\n$8\r\nsmessage\r\n$2\r\nsh\r\n$1\r\nx\r\n",
      "*2\r\n$4\r\npong\r\n$0\r\n\r\n",
      "+PONG\r\n",
      "$9\r\nsubscribe\r\n",
      "*2\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n",             // two elements
      "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n$1\r\n1\r\n",  // count not an integer
      "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1",           // cut short
      "*3\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n:1\r\n",       // Redis writes them in lower case
      "",
      "*",
  };
  for (const auto f : frames) {
    INFO(f);
    CHECK_FALSE(parse_confirmation(f, 2));
    CHECK_FALSE(parse_confirmation(f, 3));
  }
}

// In RESP3 a script can return an array shaped like a confirmation (EVAL "return
// {'unsubscribe','a',0}" 0) while the client is subscribed: only pushes count there.
TEST_CASE("subscriptions: each protocol's own shape only", "[subscriptions]") {
  const std::string_view array = "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n";
  const std::string_view push = ">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n";
  CHECK(parse_confirmation(array, 2));
  CHECK_FALSE(parse_confirmation(array, 3));
  CHECK(parse_confirmation(push, 3));
  CHECK_FALSE(parse_confirmation(push, 2));
  subscription_tracker t;
  CHECK_FALSE(t.on_frame(">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", 3));
  CHECK_FALSE(t.on_frame(array, 3));
  CHECK(t.subscribed());
}

TEST_CASE("subscriptions: unsubscribed from everything only when both counts are zero",
          "[subscriptions]") {
  subscription_tracker t;
  CHECK_FALSE(t.subscribed());
  CHECK_FALSE(t.on_frame("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", 2));
  CHECK_FALSE(t.on_frame("*3\r\n$10\r\npsubscribe\r\n$2\r\nb*\r\n:2\r\n", 2));
  CHECK_FALSE(t.on_frame("*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n", 2));
  CHECK(t.subscribed());
  CHECK_FALSE(t.on_frame("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n", 2));
  CHECK_FALSE(t.on_frame("*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n", 2));
  CHECK_FALSE(
      t.on_frame("*3\r\n$12\r\npunsubscribe\r\n$2\r\nb*\r\n:0\r\n", 2));  // a shard one left
  CHECK(t.subscribed());
  CHECK(t.on_frame("*3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n", 2));
  CHECK_FALSE(t.subscribed());
  // Subscribed again, and gone again (RESP3 pushes this time).
  CHECK_FALSE(t.on_frame(">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", 3));
  CHECK(t.subscribed());
  CHECK(t.on_frame(">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n", 3));
  // An UNSUBSCRIBE with nothing left to unsubscribe says so again.
  CHECK(t.on_frame("*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", 2));
}

// Redis counts channels and patterns as one (CLIENT LIST shows them apart, as sub and psub): each
// confirmation changes one of the two, so the other's share is known.
TEST_CASE("subscriptions: channels, patterns and shard channels counted apart", "[subscriptions]") {
  subscription_tracker t;
  t.on_frame("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", 2);
  t.on_frame("*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n", 2);
  t.on_frame("*3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:3\r\n", 2);
  t.on_frame("*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n", 2);
  CHECK(t.channels() == 2);
  CHECK(t.patterns() == 1);
  CHECK(t.shard_channels() == 1);
  t.on_frame("*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n", 2);
  CHECK(t.channels() == 1);
  CHECK(t.patterns() == 1);
  t.on_frame("*3\r\n$12\r\npunsubscribe\r\n$2\r\nc*\r\n:1\r\n", 2);
  CHECK(t.channels() == 1);
  CHECK(t.patterns() == 0);
  t.on_frame("*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n", 2);
  CHECK(t.channels() == 0);
  CHECK(t.shard_channels() == 1);
  CHECK(t.subscribed());
  // Counts no Redis sends (negative, the smallest integer) leave every count at zero or above.
  t.on_frame("*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:1\r\n", 2);
  t.on_frame("*3\r\n$10\r\npsubscribe\r\n$1\r\nx\r\n:-9223372036854775808\r\n", 2);
  CHECK(t.channels() == 0);
  CHECK(t.patterns() == 0);
}

TEST_CASE("subscriptions: the marker request and its two reply shapes", "[subscriptions]") {
  const std::string token = "redis-sidecar:unsubscribed:7";
  CHECK(marker_request(token) == "*2\r\n$4\r\nPING\r\n$28\r\n" + token + "\r\n");
  CHECK(is_marker_reply("$28\r\n" + token + "\r\n", token));
  CHECK(is_marker_reply("*2\r\n$4\r\npong\r\n$28\r\n" + token + "\r\n", token));
  CHECK_FALSE(is_marker_reply("$28\r\nredis-sidecar:unsubscribed:8\r\n", token));
  CHECK_FALSE(is_marker_reply("*2\r\n$4\r\npong\r\n$0\r\n\r\n", token));
  CHECK_FALSE(is_marker_reply("+PONG\r\n", token));
  CHECK_FALSE(is_marker_reply("*2\r\n$4\r\npong\r\n$28\r\n" + token + "\r\nx", token));
}
