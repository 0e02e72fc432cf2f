// Tests of resp::decode (RESP2/RESP3 frames into a tree, malformed input as nullopt) and of the
// writer's exact bytes in both protocol versions, including writer -> decode round trips.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/resp/value.hpp"
#include "proxy/resp/writer.hpp"

using namespace std::string_literals;
using namespace redis_sidecar::resp;

TEST_CASE("decode reads every RESP2 and RESP3 type", "[resp][value]") {
  struct row {
    std::string frame;
    value::kind type;
    std::string str;
    std::int64_t integer;
  };
  const std::vector<row> rows = {
      {"+OK\r\n", value::kind::simple_string, "OK", 0},
      {"-ERR bad\r\n", value::kind::error, "ERR bad", 0},
      {"!8\r\nERR\r\nbad\r\n", value::kind::error, "ERR\r\nbad", 0},
      {":-42\r\n", value::kind::integer, "", -42},
      {":9223372036854775807\r\n", value::kind::integer, "", 9223372036854775807},
      {"$3\r\na\0b\r\n"s, value::kind::bulk_string, "a\0b"s, 0},
      {"$0\r\n\r\n", value::kind::bulk_string, "", 0},
      {"=15\r\ntxt:Some string\r\n", value::kind::bulk_string, "Some string", 0},
      {"$-1\r\n", value::kind::null, "", 0},
      {"*-1\r\n", value::kind::null, "", 0},
      {"_\r\n", value::kind::null, "", 0},
      {",3.14\r\n", value::kind::double_, "3.14", 0},
      {",inf\r\n", value::kind::double_, "inf", 0},
      {"#t\r\n", value::kind::boolean, "", 1},
      {"#f\r\n", value::kind::boolean, "", 0},
      {"(12345678901234567890\r\n", value::kind::big_number, "12345678901234567890", 0},
      {"|1\r\n+key\r\n+val\r\n:5\r\n", value::kind::integer, "", 5},
  };
  for (const auto& r : rows) {
    INFO(r.frame);
    const auto v = decode(r.frame);
    REQUIRE(v.has_value());
    CHECK(v->type == r.type);
    CHECK(v->str == r.str);
    CHECK(v->integer == r.integer);
    CHECK(v->elements.empty());
  }
}

TEST_CASE("decode builds aggregates", "[resp][value]") {
  SECTION("HELLO 3 reply map") {
    const std::string hello =
        "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n"
        ":3\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
        "$7\r\nmodules\r\n*0\r\n";
    const auto v = decode(hello);
    REQUIRE(v.has_value());
    REQUIRE(v->type == value::kind::map);
    REQUIRE(v->elements.size() == 14);
    CHECK(v->elements[0].str == "server");
    CHECK(v->elements[1].str == "redis");
    REQUIRE(v->find("proto") != nullptr);
    CHECK(v->find("proto")->integer == 3);
    CHECK(v->find("version")->str == "7.0.15");
    CHECK(v->find("modules")->type == value::kind::array);
    CHECK(v->find("Proto") == nullptr);
    CHECK(v->elements[1].find("x") == nullptr);  // not a map
  }
  SECTION("push, set, nested arrays and attributes inside aggregates") {
    const auto push = decode(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n");
    REQUIRE(push.has_value());
    CHECK(push->type == value::kind::push);
    REQUIRE(push->elements.size() == 3);
    CHECK(push->elements[2].str == "hi");

    const auto set = decode("~2\r\n+a\r\n:1\r\n");
    REQUIRE(set.has_value());
    CHECK(set->type == value::kind::set);
    CHECK(set->elements[1].integer == 1);

    const auto nested = decode("*2\r\n*1\r\n$-1\r\n|1\r\n+k\r\n+v\r\n%1\r\n+a\r\n#t\r\n");
    REQUIRE(nested.has_value());
    REQUIRE(nested->elements.size() == 2);
    CHECK(nested->elements[0].elements[0].type == value::kind::null);
    CHECK(nested->elements[1].type == value::kind::map);
    CHECK(nested->elements[1].find("a")->integer == 1);
  }
}

TEST_CASE("decode rejects malformed frames without throwing", "[resp][value]") {
  const std::vector<std::string> bad = {
      "",
      "+OK",
      "+OK\r\n+OK\r\n",  // more than one frame
      ":abc\r\n",
      ":+1\r\n",
      ":\r\n",
      ":99999999999999999999\r\n",
      "(12a\r\n",
      "(\r\n",
      ",\r\n",
      "#x\r\n",
      "_x\r\n",
      "=3\r\nabc\r\n",  // verbatim text needs its "txt:" prefix
      "=4\r\ntxt_\r\n",
      "$3\r\nabcd\r\n",
      "$-2\r\n",
      "*2\r\n:1\r\n",
      "%1\r\n+a\r\n",
      "x\r\n",
      "$?\r\n",
      "*1\r\n:x\r\n",
  };
  for (const auto& f : bad) {
    INFO(f);
    CHECK_FALSE(decode(f).has_value());
  }
  SECTION("deep nesting fails instead of overflowing the stack") {
    std::string deep;
    for (int i = 0; i < 100000; ++i) deep += "*1\r\n";
    deep += ":1\r\n";
    CHECK_FALSE(decode(deep).has_value());
    std::string attrs;
    for (int i = 0; i < 100000; ++i) attrs += "|1\r\n+k\r\n+v\r\n";
    attrs += ":1\r\n";
    CHECK_FALSE(decode(attrs).has_value());
    std::string ok;
    for (int i = 0; i < 64; ++i) ok += "*1\r\n";
    ok += ":1\r\n";
    CHECK(decode(ok).has_value());
  }
}

TEST_CASE("bulk_frame frames a bulk string at the start of the rest, the quick way",
          "[resp][value]") {
  std::size_t header = 0, size = 0;
  REQUIRE(bulk_frame("$3\r\none\r\n", header, size));
  CHECK(header == 4);
  CHECK(size == 9);
  REQUIRE(bulk_frame("$5\r\nhel\r\n\r\n:1\r\n", header, size));  // CRLF in the payload; more after
  CHECK(header == 4);
  CHECK(size == 11);
  REQUIRE(bulk_frame("$0\r\n\r\n", header, size));
  CHECK(size == 6);
  const std::string big(1000, 'x');
  REQUIRE(bulk_frame("$1000\r\n" + big + "\r\n", header, size));
  CHECK(header == 7);
  CHECK(size == 1009);
  // Anything else is left to the general path, `header` and `size` aside.
  for (const std::string_view other :
       {"", "$", "$3\r\n", "$3\r\non", "$3\r\none", "$3\r\noneXY", "$-1\r\n", "$03\r\none\r\n",
        "$+3\r\none\r\n", "$3x\r\none\r\n", "$\r\n\r\n", "_\r\n", "+OK\r\n", ":3\r\n",
        "$99999999999999999999\r\n"}) {
    INFO(other);
    CHECK_FALSE(bulk_frame(other, header, size));
  }
}

TEST_CASE("split_array views each element of an array frame in place", "[resp][value]") {
  std::vector<std::string_view> out;
  const std::string exec = "*4\r\n:-1\r\n$5\r\nhel\r\n\r\n:1500\r\n$-1\r\n";
  REQUIRE(split_array(exec, out));
  REQUIRE(out.size() == 4);
  CHECK(out[0] == ":-1\r\n");
  CHECK(out[1] == "$5\r\nhel\r\n\r\n");  // CRLF inside a payload is payload
  CHECK(out[2] == ":1500\r\n");
  CHECK(out[3] == "$-1\r\n");
  CHECK(out[1].data() == exec.data() + 9);  // a view, not a copy
  CHECK(bulk_payload(out[1]) == "hel\r\n");
  CHECK_FALSE(bulk_payload(out[0]).has_value());
  CHECK_FALSE(bulk_payload(out[3]).has_value());
  CHECK(bulk_payload("$0\r\n\r\n") == "");

  REQUIRE(split_array("*2\r\n*2\r\n:1\r\n_\r\n-ERR x\r\n", out));  // nested, RESP3 null
  CHECK(out == std::vector<std::string_view>{"*2\r\n:1\r\n_\r\n", "-ERR x\r\n"});
  REQUIRE(split_array("*0\r\n", out));
  CHECK(out.empty());

  const std::vector<std::string> bad = {
      "",
      "*",
      "*-1\r\n",
      "*1\r\n",
      "*x\r\n",
      ":1\r\n",
      "*1\r\n:1\r\n:2\r\n",
      "*2\r\n:1\r\n",
      "*1\r\n$3\r\nab\r\n",
      "*9999999999\r\n:1\r\n",
      "*1\r\n$2\r\nab",
      "*1\r\n!x\r\n",
      "*1\r\n$3\r\nabcX\n",
      "*1\r\n$3\r\nabc\rX",
      "*1\r\n:1\r",
      "*1\r\n$01\r\na\r\n",
  };
  for (const auto& f : bad) {
    INFO(f);
    CHECK_FALSE(split_array(f, out));
  }
  for (const auto& f : {"$3\r\nab\r\n", "$3\r\nabcd\r\n", "$-2\r\n", "+OK\r\n", "$x\r\n\r\n"}) {
    INFO(f);
    CHECK_FALSE(bulk_payload(f).has_value());
  }
}

TEST_CASE("split_array frames elements as reply_parser does", "[resp][value]") {
  // Elements of every shape the fast paths see and do not see, in random arrays.
  const std::vector<std::string> pool = {
      ":0\r\n",
      ":-2\r\n",
      ":1500\r\n",
      ":99999999999999999\r\n",
      "$0\r\n\r\n",
      "$3\r\na\r\n\r\n",
      "$-1\r\n",
      "_\r\n",
      "-WRONGTYPE x\r\n",
      "+QUEUED\r\n",
      "*2\r\n$1\r\nx\r\n:7\r\n",
      "%1\r\n+k\r\n$1\r\nv\r\n",
      "!3\r\nerr\r\n",
      ",1.5\r\n",
      "#t\r\n",
      "$20\r\n" + std::string(20, '\r') + "\r\n",
  };
  std::vector<std::string_view> out;
  std::uint32_t seed = 12345;
  for (int round = 0; round < 500; ++round) {
    std::vector<std::string> parts;
    const std::size_t n = (seed = seed * 1103515245 + 12345) % 9;
    std::string frame = "*" + std::to_string(n) + "\r\n";
    for (std::size_t i = 0; i < n; ++i) {
      parts.push_back(pool[(seed = seed * 1103515245 + 12345) >> 16 & 15]);
      frame += parts.back();
    }
    INFO(frame);
    REQUIRE(split_array(frame, out));
    REQUIRE(out.size() == n);
    for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == parts[i]);
    // Cut anywhere: never accepted.
    for (std::size_t cut = 0; cut < frame.size(); ++cut)
      CHECK_FALSE(split_array(std::string_view(frame).substr(0, cut), out));
  }
  CHECK(integer_payload(":-2\r\n") == -2);
  CHECK(integer_payload(":1500\r\n") == 1500);
  for (const auto& f : {":\r\n", ":01\r\n", ":1\r", "+1\r\n", ":1\r\n:2\r\n", ":1x\r\n"}) {
    INFO(f);
    CHECK_FALSE(integer_payload(f).has_value());
  }
}

TEST_CASE("writer emits exact bytes in both protocols", "[resp][writer]") {
  std::string out;
  const auto bytes = [&](auto&& fn) {
    out.clear();
    fn();
    return out;
  };
  CHECK(bytes([&] { append_simple(out, "OK"); }) == "+OK\r\n");
  CHECK(bytes([&] { append_error(out, "ERR syntax error"); }) == "-ERR syntax error\r\n");
  CHECK(bytes([&] { append_integer(out, 0); }) == ":0\r\n");
  CHECK(bytes([&] { append_integer(out, -9223372036854775807 - 1); }) ==
        ":-9223372036854775808\r\n");
  CHECK(bytes([&] { append_integer(out, 9223372036854775807); }) == ":9223372036854775807\r\n");
  CHECK(bytes([&] { append_bulk(out, ""); }) == "$0\r\n\r\n");
  CHECK(bytes([&] { append_bulk(out, "a\0\r\nb"s); }) == "$5\r\na\0\r\nb\r\n"s);
  for (int proto : {2, 3}) {
    INFO("proto " << proto);
    const bool v3 = proto == 3;
    CHECK(bytes([&] { append_null(out, proto); }) == (v3 ? "_\r\n" : "$-1\r\n"));
    CHECK(bytes([&] { append_null_array(out, proto); }) == (v3 ? "_\r\n" : "*-1\r\n"));
    CHECK(bytes([&] { append_map_header(out, 3, proto); }) == (v3 ? "%3\r\n" : "*6\r\n"));
    CHECK(bytes([&] { append_set_header(out, 2, proto); }) == (v3 ? "~2\r\n" : "*2\r\n"));
    CHECK(bytes([&] { append_push_header(out, 3, proto); }) == (v3 ? ">3\r\n" : "*3\r\n"));
    CHECK(bytes([&] { append_bool(out, true, proto); }) == (v3 ? "#t\r\n" : ":1\r\n"));
    CHECK(bytes([&] { append_bool(out, false, proto); }) == (v3 ? "#f\r\n" : ":0\r\n"));
    CHECK(bytes([&] { append_verbatim(out, "a=1\n", proto); }) ==
          (v3 ? "=8\r\ntxt:a=1\n\r\n" : "$4\r\na=1\n\r\n"));
  }
  CHECK(bytes([&] { append_array_header(out, 0); }) == "*0\r\n");
  CHECK(bytes([&] { append_array_header(out, 12345); }) == "*12345\r\n");

  const std::vector<std::string_view> args = {"SET", "key", "", "a b\r\n"};
  CHECK(bytes([&] { append_command(out, args); }) ==
        "*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n$5\r\na b\r\n\r\n");
  CHECK(bytes([&] { append_command(out, {}); }) == "*0\r\n");

  // Appends, never overwrites.
  out = "+A\r\n";
  append_simple(out, "B");
  CHECK(out == "+A\r\n+B\r\n");
}

TEST_CASE("simple strings and errors never end early: CR and LF become spaces", "[resp][writer]") {
  std::string out;
  redis_sidecar::resp::append_error(out, "ERR bad 'a\r\n+OK\r\n'");
  CHECK(out == "-ERR bad 'a  +OK  '\r\n");
  out.clear();
  redis_sidecar::resp::append_error(out, "ERR trailing\r\n\n");  // dropped at the end, as Redis
  CHECK(out == "-ERR trailing\r\n");
  out.clear();
  redis_sidecar::resp::append_simple(out, "\r\n");
  CHECK(out == "+\r\n");
}

TEST_CASE("writer output decodes back to what was written", "[resp][writer][value]") {
  for (int proto : {2, 3}) {
    std::string out;
    append_map_header(out, 2, proto);
    append_bulk(out, "proto");
    append_integer(out, proto);
    append_simple(out, "flag");
    append_bool(out, true, proto);
    const auto v = decode(out);
    REQUIRE(v.has_value());
    CHECK(v->type == (proto == 3 ? value::kind::map : value::kind::array));
    REQUIRE(v->elements.size() == 4);
    CHECK(v->elements[1].integer == proto);
    CHECK(v->elements[3].integer == 1);
    CHECK(v->elements[3].type == (proto == 3 ? value::kind::boolean : value::kind::integer));
    if (proto == 3) CHECK(v->find("proto")->integer == 3);

    out.clear();
    append_null(out, proto);
    REQUIRE(decode(out).has_value());
    CHECK(decode(out)->type == value::kind::null);
  }
}

// What the sidecar logs of an upstream's error: never the arguments Redis quotes back (a password
// the sidecar sent, a client's data), never more than 300 bytes.
TEST_CASE("error_text: the upstream's words, without the arguments Redis quotes", "[resp][value]") {
  using redis_sidecar::resp::error_text;
  CHECK(error_text("-WRONGTYPE Operation against a key\r\n") ==
        "WRONGTYPE Operation against a key");
  CHECK(error_text("ERR no such key") == "ERR no such key");  // a decoded reply's text
  CHECK(error_text("-ERR unknown command 'HELLO', with args beginning with: '3' 'AUTH' "
                   "'default' 'hunter2' \r\n") == "ERR unknown command 'HELLO'");
  CHECK(error_text("-ERR unknown command `HELLO`, with args beginning with: `3`, `AUTH`, \r\n") ==
        "ERR unknown command `HELLO`");
  CHECK(error_text("-" + std::string(1000, 'x') + "\r\n").size() == 300);
  CHECK(error_text("").empty());
  CHECK(error_text("-\r\n").empty());
}

// Which errors the sidecar retries or reads as "nothing ran" is decided by their first word.
TEST_CASE("error_code: an error's first word, from its frame or its text", "[resp][value]") {
  using redis_sidecar::resp::error_code;
  CHECK(error_code("-LOADING Redis is loading the dataset in memory\r\n") == "LOADING");
  CHECK(error_code("BUSY Redis is busy running a script.") == "BUSY");  // a decoded reply's text
  CHECK(error_code("-NOAUTH\r\n") == "NOAUTH");
  CHECK(error_code("-LOADINGX y\r\n") == "LOADINGX");  // a word, not a prefix
  CHECK(error_code("-\r\n").empty());
  CHECK(error_code("").empty());
}
