// The near cache's channel messages without I/O: the notify-keyspace-events check, keyspace
// channel names, and every shape an invalidation arrives in (RESP3 pushes, RESP2 pub/sub arrays
// for REDIRECT and keyspace notifications), decoded from the bytes Redis sends.
#include <catch2/catch.hpp>
#include <string>

#include "proxy/resp/value.hpp"
#include "proxy/tier/channel_message.hpp"
#include "proxy/upstream/reply_sink.hpp"

using namespace redis_sidecar;

namespace {

channel_message parse(std::string_view bytes, int db = 0) {
  const auto v = resp::decode(bytes);
  REQUIRE(v);
  return parse_channel_message(*v, db);
}

}  // namespace

TEST_CASE("channel: notify-keyspace-events flags keyspace mode needs", "[channel]") {
  struct row {
    std::string_view flags;
    std::string_view missing;
  };
  const row rows[] = {
      {"", "Kg$lszxe"},  {"KA", ""},       {"AK", ""},         {"KEA", ""},
      {"Kg$lszxe", ""},  {"Kxeg$lsz", ""}, {"K$", "glszxe"},   {"Kg$lszx", "e"},
      {"Eg$lszxe", "K"}, {"A", "K"},       {"KEg$lshzxe", ""}, {"Ex", "Kg$lsze"},
      {"Kglszxe", "$"},  {"Kg$xe", "lsz"}, {"Kg$lsxe", "z"},   {"g$lszxeK", ""},
  };
  for (const auto& r : rows) {
    INFO("flags '" << r.flags << "'");
    CHECK(missing_keyspace_flags(r.flags) == r.missing);
  }
}

TEST_CASE("channel: keyspace channel name to key", "[channel]") {
  CHECK(keyspace_pattern(0) == "__keyspace@0__:*");
  CHECK(keyspace_pattern(12) == "__keyspace@12__:*");
  CHECK(keyspace_key("__keyspace@0__:user:1", 0) == std::optional<std::string_view>("user:1"));
  CHECK(keyspace_key("__keyspace@0__:", 0) == std::optional<std::string_view>(""));
  CHECK(keyspace_key("__keyspace@0__:a:b:c", 0) == std::optional<std::string_view>("a:b:c"));
  CHECK(keyspace_key("__keyspace@3__:k", 3) == std::optional<std::string_view>("k"));
  CHECK_FALSE(keyspace_key("__keyspace@1__:k", 0));
  CHECK_FALSE(keyspace_key("__keyspace@10__:k", 1));
  CHECK_FALSE(keyspace_key("__keyevent@0__:set", 0));
  CHECK_FALSE(keyspace_key("__keyspace@0__", 0));
}

TEST_CASE("channel: tracking invalidations, RESP3 and RESP2 with REDIRECT", "[channel]") {
  auto m = parse(">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$3\r\nb:c\r\n");
  CHECK(m.what == channel_message::kind::keys);
  CHECK(m.keys == std::vector<std::string>{"a", "b:c"});
  CHECK(parse(">2\r\n$10\r\ninvalidate\r\n_\r\n").what == channel_message::kind::flush);
  m = parse("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$3\r\nkey\r\n");
  CHECK(m.what == channel_message::kind::keys);
  CHECK(m.keys == std::vector<std::string>{"key"});
  CHECK(parse("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*-1\r\n").what ==
        channel_message::kind::flush);
  // A message on another channel is none of the cache's business.
  CHECK(parse("*3\r\n$7\r\nmessage\r\n$5\r\nnews!\r\n*1\r\n$3\r\nkey\r\n").what ==
        channel_message::kind::other);
}

TEST_CASE("channel: keyspace notifications and subscription confirmations", "[channel]") {
  const std::string resp2 =
      "*4\r\n$8\r\npmessage\r\n$16\r\n__keyspace@0__:*\r\n$19\r\n__keyspace@0__:user\r\n$"
      "3\r\ndel\r\n";
  auto m = parse(resp2);
  CHECK(m.what == channel_message::kind::keys);
  CHECK(m.keys == std::vector<std::string>{"user"});
  CHECK(m.event == "del");
  CHECK(parse(resp2, 1).what == channel_message::kind::other);  // another db's channel
  std::string resp3 = resp2;
  resp3[0] = '>';
  m = parse(resp3);
  CHECK(m.what == channel_message::kind::keys);
  CHECK(m.event == "del");
  CHECK(parse(">3\r\n$10\r\npsubscribe\r\n$16\r\n__keyspace@0__:*\r\n:1\r\n").what ==
        channel_message::kind::subscribed);
  CHECK(parse("*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n").what ==
        channel_message::kind::subscribed);
  CHECK(parse("+OK\r\n").what == channel_message::kind::other);
  CHECK(parse("*0\r\n").what == channel_message::kind::other);
  CHECK(parse("*2\r\n$8\r\npmessage\r\n$1\r\nx\r\n").what == channel_message::kind::other);
}

TEST_CASE("channel: RESP2 pub/sub arrays a subscriber connection hands to its watcher",
          "[channel]") {
  CHECK(is_pubsub_event("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*-1\r\n"));
  CHECK(is_pubsub_event("*4\r\n$8\r\npmessage\r\n$1\r\np\r\n$1\r\nc\r\n$3\r\nset\r\n"));
  CHECK(is_pubsub_event("*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"));
  CHECK(is_pubsub_event("*3\r\n$10\r\npsubscribe\r\n$1\r\nc\r\n:1\r\n"));
  // Replies to requests follow the FIFO: a CLIENT ID, an EXEC, a GET of the value "message".
  CHECK_FALSE(is_pubsub_event(":42\r\n"));
  CHECK_FALSE(is_pubsub_event("*2\r\n:-1\r\n$7\r\nmessage\r\n"));
  CHECK_FALSE(is_pubsub_event("$7\r\nmessage\r\n"));
  CHECK_FALSE(is_pubsub_event("*3\r\n$7\r\nMESSAGE\r\n"));
  CHECK_FALSE(is_pubsub_event(""));
}
