// Table-driven tests of resp::reply_parser (every input whole, split in two at every byte, and byte
// by byte, from a fresh copy each call), RESP3 samples as Redis 7 sends them, and a differential
// test against hiredis' reader on generated RESP2 replies.
#include <hiredis/hiredis.h>
#include <catch2/catch.hpp>

#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "proxy/resp/reply_parser.hpp"

using namespace std::string_literals;
using redis_sidecar::resp::limits;
using redis_sidecar::resp::parse_status;
using redis_sidecar::resp::reply_error;
using redis_sidecar::resp::reply_parser;

namespace {

using ranges = std::vector<std::pair<std::size_t, std::size_t>>;

struct outcome {
  parse_status status = parse_status::need_more;
  reply_error error = reply_error::none;
  std::size_t frame_size = 0;
  char type = 0;
  ranges embedded;  // reply_parser::embedded_pushes()

  bool operator==(const outcome&) const = default;
};

std::string describe(const outcome& o) {
  std::string s = "status=" + std::to_string(static_cast<int>(o.status)) +
                  " error=" + std::to_string(static_cast<int>(o.error)) +
                  " size=" + std::to_string(o.frame_size) +
                  " type=" + std::string(1, o.type ? o.type : '0') + " embedded=";
  for (const auto& [b, e] : o.embedded)
    s += "[" + std::to_string(b) + "," + std::to_string(e) + ")";
  return s;
}

outcome snapshot(const reply_parser& p, parse_status st) {
  if (st != parse_status::complete) return outcome{st, p.error(), 0, 0, {}};
  return outcome{st, p.error(), p.frame_size(), p.type(), p.embedded_pushes()};
}

// Feeds growing prefixes of `input` ending at each of `cuts` (then the whole input), each from a
// new heap copy so the data address changes between calls.
outcome feed(const std::string& input, const std::vector<std::size_t>& cuts, const limits& l) {
  reply_parser p(l);
  std::unique_ptr<std::string> previous;
  auto ends = cuts;
  ends.push_back(input.size());
  for (std::size_t end : ends) {
    auto buf = std::make_unique<std::string>(input.substr(0, end));
    const parse_status st = p.parse(*buf);
    previous = std::move(buf);
    if (st != parse_status::need_more) return snapshot(p, st);
  }
  return snapshot(p, parse_status::need_more);
}

void check_every_split(const std::string& input, const outcome& expected, const limits& l = {}) {
  INFO("input: " << input);
  const outcome whole = feed(input, {}, l);
  INFO("whole: " << describe(whole) << "\nexpected: " << describe(expected));
  REQUIRE(whole == expected);
  for (std::size_t cut = 0; cut <= input.size(); ++cut) {
    const outcome split = feed(input, {cut}, l);
    INFO("split at " << cut << ": " << describe(split));
    REQUIRE(split == expected);
  }
  std::vector<std::size_t> bytes;
  for (std::size_t i = 0; i < input.size(); ++i) bytes.push_back(i);
  const outcome one_by_one = feed(input, bytes, l);
  INFO("byte by byte: " << describe(one_by_one));
  REQUIRE(one_by_one == expected);
}

outcome complete(std::size_t size, char type, ranges embedded = {}) {
  return outcome{parse_status::complete, reply_error::none, size, type, std::move(embedded)};
}
outcome failed(reply_error e) { return outcome{parse_status::error, e, 0, 0, {}}; }
outcome need_more() { return outcome{}; }

struct row {
  std::string input;
  outcome expected;
};

// HELLO 3 as redis-server 7.0 answers it.
const std::string hello3 =
    "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n"
    "$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
    "$7\r\nmodules\r\n*0\r\n";

}  // namespace

TEST_CASE("reply_parser frames RESP2 replies", "[resp][reply_parser]") {
  const std::vector<row> rows = {
      {"+OK\r\n", complete(5, '+')},
      {"-ERR unknown command\r\n", complete(22, '-')},
      {":1000\r\n", complete(7, ':')},
      {"$5\r\nhello\r\n", complete(11, '$')},
      {"$0\r\n\r\n", complete(6, '$')},
      {"$-1\r\n", complete(5, '$')},
      {"*-1\r\n", complete(5, '*')},
      {"*0\r\n", complete(4, '*')},
      {"$4\r\n\r\n\0\n\r\n"s, complete(10, '$')},
      {"*2\r\n$3\r\nfoo\r\n$-1\r\n", complete(18, '*')},
      {"*2\r\n*1\r\n:1\r\n*0\r\n+x\r\n", complete(16, '*')},
      {"*3\r\n:1\r\n*2\r\n+a\r\n-b\r\n$1\r\nc\r\n", complete(27, '*')},
      {"+OK\r\n+NEXT\r\n", complete(5, '+')},
      // A lone CR is part of the line; lines longer than the one-pass window, and bulk strings
      // with long headers or a bad terminator, take the general path with the same result.
      {"+a\rb\r\n", complete(6, '+')},
      {"-a\r\r\n", complete(5, '-')},
      {"+" + std::string(40, 'x') + "\r\n", complete(43, '+')},
      {"$100\r\n" + std::string(100, 'v') + "\r\n", complete(108, '$')},
      {"$01\r\nv\r\n", failed(reply_error::bad_length)},
      {"$1\r\nvv\r\n", failed(reply_error::bad_crlf)},
      {"", need_more()},
      {"+OK", need_more()},
      {"+OK\r", need_more()},
      {"$5\r\nhel", need_more()},
      {"$5\r\nhello\r", need_more()},
      {"*2\r\n:1\r\n", need_more()},
      {"*1\r\n*1\r\n*1\r\n", need_more()},
      {"$536870912\r\n", need_more()},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

TEST_CASE("reply_parser frames RESP3 replies as Redis 7 sends them", "[resp][reply_parser]") {
  const std::vector<row> rows = {
      {hello3, complete(hello3.size(), '%')},
      {"%1\r\n+a\r\n:1\r\n", complete(12, '%')},
      {"%0\r\n", complete(4, '%')},
      {"~2\r\n+a\r\n+b\r\n", complete(12, '~')},
      {",3.14\r\n", complete(7, ',')},
      {",inf\r\n", complete(6, ',')},
      {",-inf\r\n", complete(7, ',')},
      {"#t\r\n", complete(4, '#')},
      {"#f\r\n", complete(4, '#')},
      {"_\r\n", complete(3, '_')},
      {"(12345678901234567890\r\n", complete(23, '(')},
      {"=15\r\ntxt:Some string\r\n", complete(22, '=')},
      {"!21\r\nSYNTAX invalid syntax\r\n", complete(28, '!')},
      {">3\r\n$7\r\nmessage\r\n$7\r\nchannel\r\n$5\r\nhello\r\n", complete(41, '>')},
      {"|1\r\n+key\r\n+val\r\n:5\r\n", complete(20, ':')},
      {"|1\r\n+k\r\n+v\r\n|1\r\n+k\r\n+v\r\n*1\r\n_\r\n", complete(31, '*')},
      {"|0\r\n#t\r\n", complete(8, '#')},
      {"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n", complete(24, '*')},
      {"|1\r\n%1\r\n+a\r\n+b\r\n+v\r\n$1\r\nx\r\n", complete(27, '$')},
      {"%1\r\n*1\r\n:1\r\n~1\r\n_\r\n", complete(19, '%')},
      {"%2\r\n+a\r\n:1\r\n", need_more()},
      {"|1\r\n+key\r\n+val\r\n", need_more()},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

// Redis 7.0 writes the push a command causes (here the keyspace notification of a key its GET
// expired lazily) into the command's reply while it writes it: these are its bytes.
TEST_CASE("reply_parser frames a push inside a reply apart from it", "[resp][reply_parser]") {
  const std::string push =
      ">4\r\n$8\r\npmessage\r\n$16\r\n__keyspace@0__:*\r\n$16\r\n__keyspace@0__:k\r\n"
      "$7\r\nexpired\r\n";
  const std::size_t p = push.size();
  const std::vector<row> rows = {
      // EXEC of MULTI / PTTL k / GET k, as redis-server 7.0 wrote it
      {"*2\r\n" + push + ":-2\r\n_\r\n", complete(4 + p + 8, '*', {{4, 4 + p}})},
      // MGET n m n, m expired by it
      {"*3\r\n$1\r\n2\r\n" + push + "_\r\n$1\r\n2\r\n",
       complete(4 + 7 + p + 3 + 7, '*', {{11, 11 + p}})},
      // two pushes, one of them nested deeper, one right before the last element
      {"*2\r\n*2\r\n:1\r\n" + push + ":2\r\n" + push + ":3\r\n",
       complete(4 + 4 + 4 + p + 4 + p + 4, '*', {{12, 12 + p}, {16 + p, 16 + 2 * p}})},
      // in a map, between a key and its value
      {"%1\r\n+a\r\n" + push + ":1\r\n", complete(4 + 4 + p + 4, '%', {{8, 8 + p}})},
      // an empty push inside an array (Redis sends none, but it is framed alike)
      {"*1\r\n>0\r\n:7\r\n", complete(12, '*', {{4, 8}})},
      // a push at the top is a push frame, after an attribute too
      {push, complete(p, '>')},
      {"|1\r\n+k\r\n+v\r\n" + push, complete(12 + p, '>')},
      // pushes do not nest: inside a push (at the top or inside a reply), ">" is an element
      {">2\r\n>1\r\n:1\r\n:2\r\n", complete(16, '>')},
      {"*1\r\n>2\r\n>1\r\n:1\r\n:2\r\n:3\r\n", complete(24, '*', {{4, 20}})},
      // the aggregate still waits for the element the push interrupted
      {"*2\r\n:1\r\n" + push, need_more()},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

// A SUBSCRIBE or UNSUBSCRIBE queued in a RESP3 transaction: Redis 7.0 writes its confirmation,
// a push, as the queued command's reply, one element of EXEC's array.
TEST_CASE("reply_parser counts a (un)subscribe confirmation inside EXEC's array as an element",
          "[resp][reply_parser]") {
  const std::string unsub = ">3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:0\r\n";
  const std::string psub = ">3\r\n+psubscribe\r\n$2\r\np*\r\n:1\r\n";  // as a simple string
  const std::string message = ">3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$2\r\nhi\r\n";
  const std::size_t u = unsub.size(), s = psub.size(), m = message.size();
  const std::vector<row> rows = {
      {"*1\r\n" + unsub, complete(4 + u, '*')},
      {"*3\r\n+OK\r\n" + unsub + "$1\r\nv\r\n", complete(4 + 5 + u + 7, '*')},
      {"*2\r\n" + psub + ":5\r\n", complete(4 + s + 4, '*')},
      // a message in the same array is still a push apart from it
      {"*1\r\n" + message + unsub, complete(4 + m + u, '*', {{4, 4 + m}})},
      // the array waits for its third element: the confirmation was its second
      {"*3\r\n:1\r\n" + unsub, need_more()},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

TEST_CASE("reply_parser rejects malformed replies", "[resp][reply_parser]") {
  const std::vector<row> rows = {
      {"x\r\n", failed(reply_error::bad_type)},
      {"?", failed(reply_error::bad_type)},
      {"*1\r\n@x\r\n", failed(reply_error::bad_type)},
      {"$?\r\n", failed(reply_error::bad_length)},
      {"*?\r\n", failed(reply_error::bad_length)},
      {"$-2\r\n", failed(reply_error::bad_length)},
      {"*-2\r\n", failed(reply_error::bad_length)},
      {"%-1\r\n", failed(reply_error::bad_length)},
      {"!-1\r\n", failed(reply_error::bad_length)},
      {"$abc\r\n", failed(reply_error::bad_length)},
      {"$\r\n", failed(reply_error::bad_length)},
      {"$+5\r\n", failed(reply_error::bad_length)},
      {"$05\r\n", failed(reply_error::bad_length)},
      {"$536870913\r\n", failed(reply_error::bad_length)},
      {"*2147483648\r\n", failed(reply_error::bad_length)},
      {"%9223372036854775807\r\n", failed(reply_error::bad_length)},
      {"$3\r\nabcd\r\n", failed(reply_error::bad_crlf)},
      {"$3\r\nab\r\n\r\n", failed(reply_error::bad_crlf)},
      {"=3\r\nabc\n\n", failed(reply_error::bad_crlf)},
      {"_x\r\n", failed(reply_error::bad_crlf)},
      {"#x\r\n", failed(reply_error::bad_type)},
      {"#tt\r\n", failed(reply_error::bad_type)},
      {"#\r\n", failed(reply_error::bad_type)},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

TEST_CASE("reply_parser enforces limits before the payload arrives", "[resp][reply_parser]") {
  limits tiny;
  tiny.max_bulk_bytes = 3;
  tiny.max_multibulk_len = 2;
  tiny.max_inline_bytes = 6;
  tiny.max_nesting = 2;
  const std::vector<row> rows = {
      {"$4\r\n", failed(reply_error::bad_length)},
      {"!4\r\n", failed(reply_error::bad_length)},
      {"=4\r\n", failed(reply_error::bad_length)},
      {"$3\r\n", need_more()},
      {"*3\r\n", failed(reply_error::bad_length)},
      {"%3\r\n", failed(reply_error::bad_length)},
      {"~3\r\n", failed(reply_error::bad_length)},
      {">3\r\n", failed(reply_error::bad_length)},
      {"|3\r\n", failed(reply_error::bad_length)},
      {"*2\r\n", need_more()},
      {"*1\r\n*1\r\n", need_more()},
      {"*1\r\n*1\r\n*1\r\n", failed(reply_error::too_deep)},
      {"|1\r\n+k\r\n*1\r\n*1\r\n", failed(reply_error::too_deep)},
      {"*1\r\n*0\r\n", complete(8, '*')},  // empty aggregates open no level
      // Lines: at most 6 bytes (type byte included) before "\r\n".
      {"+ABCDE\r\n", complete(8, '+')},
      {"+ABCDEF\r\n", failed(reply_error::line_too_long)},
      {"-ERRORS", failed(reply_error::line_too_long)},
      {"+ABCDE", need_more()},
      {"+ABCDE\r", need_more()},
      {"$12345\r\n", failed(reply_error::bad_length)},
      {"$123456", failed(reply_error::bad_length)},
      {"*1\r\n:123456789", failed(reply_error::line_too_long)},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected, tiny);

  // The line limit is not applied to bulk payloads.
  limits short_lines;
  short_lines.max_inline_bytes = 4;
  const std::string big = "$100\r\n" + std::string(100, 'x') + "\r\n";
  check_every_split(big, complete(big.size(), '$'), short_lines);
}

TEST_CASE("reply_parser frames pipelines and large replies", "[resp][reply_parser]") {
  SECTION("a pipeline in a compacting buffer, at every read size") {
    const std::string input = "+OK\r\n" + hello3 +
                              ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n:7\r\n$-1\r\n"
                              "|1\r\n+a\r\n+b\r\n#t\r\n*-1\r\n_\r\n";
    const std::string expected_types = "+%>:$#*_";
    for (std::size_t step = 1; step <= input.size(); ++step) {
      INFO("read size " << step);
      std::string types, buffer;
      reply_parser p;
      for (std::size_t at = 0; at < input.size(); at += step) {
        buffer = buffer + input.substr(at, step);
        for (;;) {
          const parse_status st = p.parse(buffer);
          REQUIRE(st != parse_status::error);
          if (st == parse_status::need_more) break;
          types += p.type();
          buffer.erase(0, p.frame_size());
          p.reset();
        }
      }
      REQUIRE(types == expected_types);
      REQUIRE(buffer.empty());
    }
  }
  SECTION("a 10,000-element array of mixed types") {
    std::string input = "*10000\r\n";
    for (int i = 0; i < 10000; ++i) {
      input += i % 3 == 0   ? ":" + std::to_string(i) + "\r\n"
               : i % 3 == 1 ? "$" + std::to_string(std::to_string(i).size()) + "\r\n" +
                                  std::to_string(i) + "\r\n"
                            : "*1\r\n+x\r\n"s;
    }
    std::vector<std::size_t> cuts;
    for (std::size_t c = 997; c < input.size(); c += 997) cuts.push_back(c);
    CHECK(feed(input, {}, {}) == complete(input.size(), '*'));
    CHECK(feed(input, cuts, {}) == complete(input.size(), '*'));
    CHECK(feed(input.substr(0, input.size() - 1), cuts, {}) == need_more());
  }
}

namespace {

// Random RESP2 replies within hiredis 0.14's nesting limit.
std::string random_reply(std::mt19937_64& rng, int depth) {
  const auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const auto text = [&](std::size_t max, bool binary) {
    std::string s(rng() % (max + 1), 'a');
    for (auto& c : s) c = binary ? static_cast<char>(rng()) : static_cast<char>('a' + pick(26));
    return s;
  };
  switch (pick(depth < 5 ? 7 : 5)) {
    case 0: return "+" + text(20, false) + "\r\n";
    case 1: return "-ERR " + text(20, false) + "\r\n";
    case 2: return ":" + std::to_string(static_cast<std::int64_t>(rng())) + "\r\n";
    case 3: {
      const std::string s = text(pick(4) == 0 ? 3000 : 40, true);
      return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
    }
    case 4: return pick(2) ? "$-1\r\n" : "*-1\r\n";
    default: {
      const int n = pick(6);
      std::string s = "*" + std::to_string(n) + "\r\n";
      for (int i = 0; i < n; ++i) s += random_reply(rng, depth + 1);
      return s;
    }
  }
}

char hiredis_type(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_STATUS: return '+';
    case REDIS_REPLY_ERROR: return '-';
    case REDIS_REPLY_INTEGER: return ':';
    case REDIS_REPLY_STRING: return '$';
    case REDIS_REPLY_ARRAY: return '*';
    default: return 'n';  // nil: '$' or '*'
  }
}

}  // namespace

TEST_CASE("reply_parser agrees with hiredis on frame boundaries", "[resp][reply_parser][hiredis]") {
  std::mt19937_64 rng(20240601);
  for (int round = 0; round < 20; ++round) {
    std::string input;
    std::vector<std::size_t> ends;  // where each generated reply ends
    for (int i = 0; i < 50; ++i) {
      input += random_reply(rng, 0);
      ends.push_back(input.size());
    }
    // Ours: consume frames from the front.
    std::vector<std::size_t> ours;
    std::vector<char> our_types;
    reply_parser p;
    for (std::size_t at = 0; at < input.size();) {
      REQUIRE(p.parse(std::string_view(input).substr(at)) == parse_status::complete);
      at += p.frame_size();
      ours.push_back(at);
      our_types.push_back(p.type());
      p.reset();
    }
    // hiredis, fed byte by byte: a reply appears exactly when its last byte is fed.
    std::vector<std::size_t> theirs;
    std::vector<char> their_types;
    redisReader* reader = redisReaderCreate();
    REQUIRE(reader != nullptr);
    for (std::size_t i = 0; i < input.size(); ++i) {
      REQUIRE(redisReaderFeed(reader, input.data() + i, 1) == REDIS_OK);
      void* reply = nullptr;
      REQUIRE(redisReaderGetReply(reader, &reply) == REDIS_OK);
      if (reply != nullptr) {
        theirs.push_back(i + 1);
        their_types.push_back(hiredis_type(static_cast<redisReply*>(reply)));
        freeReplyObject(reply);
      }
    }
    redisReaderFree(reader);
    REQUIRE(ours == ends);
    REQUIRE(theirs == ends);
    REQUIRE(our_types.size() == their_types.size());
    for (std::size_t i = 0; i < our_types.size(); ++i) {
      if (their_types[i] != 'n') {
        CHECK(our_types[i] == their_types[i]);
      } else {
        CHECK((our_types[i] == '$' || our_types[i] == '*'));
      }
    }
  }
}
