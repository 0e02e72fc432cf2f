// Table-driven tests of resp::request_parser: every input is parsed whole, split in two at every
// byte, and fed byte by byte, each time from a freshly allocated copy of the bytes received so far
// (as a session buffer that grows and compacts), and all three must give the same result.
#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "proxy/resp/request_parser.hpp"

using namespace std::string_literals;
using redis_sidecar::resp::limits;
using redis_sidecar::resp::parse_status;
using redis_sidecar::resp::request_error;
using redis_sidecar::resp::request_parser;

namespace {

struct outcome {
  parse_status status = parse_status::need_more;
  request_error error = request_error::none;
  std::size_t frame_size = 0;
  std::vector<std::string> args;
  bool is_inline = false;
  bool is_empty = false;

  bool operator==(const outcome&) const = default;
};

std::string describe(const outcome& o) {
  std::string s = "status=" + std::to_string(static_cast<int>(o.status)) +
                  " error=" + std::to_string(static_cast<int>(o.error)) +
                  " size=" + std::to_string(o.frame_size) +
                  " inline=" + std::to_string(o.is_inline) +
                  " empty=" + std::to_string(o.is_empty) + " args=[";
  for (const auto& a : o.args) s += "<" + a + ">";
  return s + "]";
}

outcome snapshot(const request_parser& p, parse_status st) {
  outcome o;
  o.status = st;
  o.error = p.error();
  if (st == parse_status::complete) {
    o.frame_size = p.frame_size();
    for (auto a : p.args()) o.args.emplace_back(a);
    o.is_inline = p.is_inline();
    o.is_empty = p.is_empty();
  }
  return o;
}

// Feeds growing prefixes of `input` ending at each of `cuts` (then the whole input), each time from
// a new heap copy so the data address changes between calls. Stops at the first non-need_more
// result.
outcome feed(const std::string& input, const std::vector<std::size_t>& cuts, const limits& l) {
  request_parser p(l);
  std::unique_ptr<std::string> previous;
  auto ends = cuts;
  ends.push_back(input.size());
  for (std::size_t end : ends) {
    auto buf = std::make_unique<std::string>(input.substr(0, end));  // allocated while old lives
    const parse_status st = p.parse(*buf);
    previous = std::move(buf);
    if (st != parse_status::need_more) return snapshot(p, st);
  }
  return snapshot(p, parse_status::need_more);
}

// Whole, every two-chunk split, and byte-at-a-time must all equal `expected`.
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

outcome complete(std::size_t size, std::vector<std::string> args, bool is_inline) {
  outcome o;
  o.status = parse_status::complete;
  o.frame_size = size;
  o.is_empty = args.empty();
  o.args = std::move(args);
  o.is_inline = is_inline;
  return o;
}

outcome failed(request_error e) { return outcome{parse_status::error, e, 0, {}, false, false}; }

outcome need_more() { return outcome{}; }

struct row {
  std::string input;
  outcome expected;
};

}  // namespace

TEST_CASE("request_parser frames multibulk requests", "[resp][request_parser]") {
  const std::vector<row> rows = {
      {"*1\r\n$4\r\nPING\r\n", complete(14, {"PING"}, false)},
      {"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", complete(26, {"SET", "k", ""}, false)},
      {"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", complete(14, {"PING"}, false)},
      {"*2\r\n$3\r\nGET\r\n$3\r\na\0b\r\n"s, complete(22, {"GET", "a\0b"s}, false)},
      {"*1\r\n$6\r\n\r\n$1\r\n\r\n", complete(16, {"\r\n$1\r\n"}, false)},
      {"*0\r\n", complete(4, {}, false)},
      {"*-1\r\n", complete(5, {}, false)},
      {"*0\r\nPING\r\n", complete(4, {}, false)},
      {"*1\r\n$10\r\n0123456789\r\n", complete(21, {"0123456789"}, false)},
      {"", need_more()},
      {"*", need_more()},
      {"*1\r", need_more()},
      {"*1\r\n$4\r\nPIN", need_more()},
      {"*1\r\n$4\r\nPING\r", need_more()},
      {"*2\r\n$4\r\nPING\r\n", need_more()},
      {"*1\r\n$536870912\r\n", need_more()},  // exactly proto-max-bulk-len: waits for the payload
      {"*2147483647\r\n", need_more()},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

TEST_CASE("request_parser rejects malformed multibulk requests", "[resp][request_parser]") {
  const std::vector<row> rows = {
      {"*abc\r\n", failed(request_error::invalid_multibulk_length)},
      {"*\r\n", failed(request_error::invalid_multibulk_length)},
      {"*-2\r\n", complete(5, {}, false)},  // Redis skips any count below 1
      {"*-50\r\n", complete(6, {}, false)},
      {"*-0\r\n", failed(request_error::invalid_multibulk_length)},
      {"*+1\r\n", failed(request_error::invalid_multibulk_length)},
      {"*01\r\n", failed(request_error::invalid_multibulk_length)},
      {"* 1\r\n", failed(request_error::invalid_multibulk_length)},
      {"*1 \r\n", failed(request_error::invalid_multibulk_length)},
      {"*2147483648\r\n", failed(request_error::invalid_multibulk_length)},
      {"*99999999999999999999\r\n", failed(request_error::invalid_multibulk_length)},
      {"*1\r\n$-1\r\n", failed(request_error::invalid_bulk_length)},
      {"*1\r\n$abc\r\n", failed(request_error::invalid_bulk_length)},
      {"*1\r\n$\r\n", failed(request_error::invalid_bulk_length)},
      {"*1\r\n$04\r\nPING\r\n", failed(request_error::invalid_bulk_length)},
      {"*1\r\n$536870913\r\n", failed(request_error::invalid_bulk_length)},
      {"*1\r\n+PING\r\n", failed(request_error::expected_bulk)},
      {"*2\r\n$1\r\na\r\n:1\r\n", failed(request_error::expected_bulk)},
      {"*1\r\nPING\r\n", failed(request_error::expected_bulk)},
      {"*1\r\n$4\r\nPINGxx", failed(request_error::bad_crlf)},
      {"*1\r\n$4\r\nPING\rx", failed(request_error::bad_crlf)},
      {"*1\r\n$4\r\nPING\n\r", failed(request_error::bad_crlf)},
      // A header ends at the first "\r\n", so a lone '\n' becomes part of the number.
      {"*1\n$4\r\n", failed(request_error::invalid_multibulk_length)},
      {"*2\r\n$1\r\na\r\n$1\r\nbc\r\n", failed(request_error::bad_crlf)},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

TEST_CASE("request_parser names the byte found where a bulk should start",
          "[resp][request_parser]") {
  for (const auto& [input, byte] : std::vector<std::pair<std::string, char>>{
           {"*1\r\n+PING\r\n", '+'}, {"*2\r\n$1\r\na\r\n:1\r\n", ':'}, {"*1\r\n\r\n", '\r'}}) {
    request_parser p;
    INFO(input);
    REQUIRE(p.parse(input) == parse_status::error);
    CHECK(p.error() == request_error::expected_bulk);
    CHECK(p.unexpected_byte() == byte);
  }
}

TEST_CASE("request_parser splits inline commands like sdssplitargs", "[resp][request_parser]") {
  const std::vector<row> rows = {
      {"PING\r\n", complete(6, {"PING"}, true)},
      {"PING\n", complete(5, {"PING"}, true)},
      {"set a b\r\nget a\r\n", complete(9, {"set", "a", "b"}, true)},
      {"  set\t a   b  \r\n", complete(16, {"set", "a", "b"}, true)},
      {"\r\n", complete(2, {}, true)},
      {"\n", complete(1, {}, true)},
      {" \t \n", complete(4, {}, true)},
      {"set \"a b\" 'c d'\n", complete(16, {"set", "a b", "c d"}, true)},
      {"\"\\x41\\x4a\\n\\r\\t\\b\\a\\\\\\\"z\"\n", complete(26, {"AJ\n\r\t\b\a\\\"z"}, true)},
      {"\"\\xZZ\\q\"\n", complete(9, {"xZZq"}, true)},
      {"'it\\'s' 'a\\nb'\n", complete(15, {"it's", "a\\nb"}, true)},
      {"a\"b c\" d\n", complete(9, {"ab c", "d"}, true)},
      {"\"\" ''\n", complete(6, {"", ""}, true)},
      {"set a\0b c\n"s, complete(10, {"set", "a"}, true)},
      {"get a\rb\n", complete(8, {"get", "a", "b"}, true)},
      {"get\va\n", complete(6, {"get\va"}, true)},
      {"\"a\"\t\"b\"\n", complete(8, {"a", "b"}, true)},
      {"PING", need_more()},
      {"PING\r", need_more()},
      {"\"abc\n", failed(request_error::unbalanced_quotes)},
      {"'abc\n", failed(request_error::unbalanced_quotes)},
      {"\"a\"b\n", failed(request_error::unbalanced_quotes)},
      {"'a'b\n", failed(request_error::unbalanced_quotes)},
      {"\"a\\\"\n", failed(request_error::unbalanced_quotes)},
      {"\"a\0\"\n"s, failed(request_error::unbalanced_quotes)},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected);
}

TEST_CASE("request_parser enforces limits as soon as a header is read", "[resp][request_parser]") {
  limits tiny;
  tiny.max_multibulk_len = 2;
  tiny.max_bulk_bytes = 3;
  tiny.max_inline_bytes = 4;
  const std::vector<row> rows = {
      // Only the header has arrived: the error must not wait for the payload.
      {"*3\r\n", failed(request_error::invalid_multibulk_length)},
      {"*2\r\n", need_more()},
      {"*1\r\n$4\r\n", failed(request_error::invalid_bulk_length)},
      {"*1\r\n$3\r\n", need_more()},
      {"*1\r\n$3\r\nabc\r\n", complete(13, {"abc"}, false)},
      // Header lines: at most 4 bytes before "\r\n".
      {"*12\r\n", failed(request_error::invalid_multibulk_length)},
      {"*1234\r\n", failed(request_error::too_big_count)},
      {"*1234", failed(request_error::too_big_count)},
      {"*123", need_more()},
      {"*123\r", need_more()},
      {"*1\r\n$1234", failed(request_error::too_big_count)},
      {"*1\r\n$123", need_more()},
      // Inline lines: at most 4 bytes before "\n" (a "\r" counts, as in Redis).
      {"PINGPONG", failed(request_error::too_big_inline)},
      {"PINGP", failed(request_error::too_big_inline)},
      {"PING\r\n", failed(request_error::too_big_inline)},
      {"PING", need_more()},
      {"PING\n", complete(5, {"PING"}, true)},
  };
  for (const auto& r : rows) check_every_split(r.input, r.expected, tiny);

  limits five = tiny;
  five.max_inline_bytes = 5;
  check_every_split("PING\r\n", complete(6, {"PING"}, true), five);
}

TEST_CASE("request_parser frames a pipeline in a compacting buffer", "[resp][request_parser]") {
  const std::string input =
      "*1\r\n$4\r\nPING\r\nset a \"b c\"\r\n*0\r\n\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
      "*-1\r\nECHO x\n*1\r\n$3\r\nDEL\r\n";
  const std::vector<std::vector<std::string>> expected = {
      {"PING"}, {"set", "a", "b c"}, {}, {}, {"GET", "a"}, {}, {"ECHO", "x"}, {"DEL"}};

  // Splits `input` into reads of `step` bytes; after each read, frames as many requests as
  // possible, erasing consumed bytes from the front of the buffer (which moves the remaining
  // bytes).
  const auto run = [&](std::size_t step) {
    std::vector<std::vector<std::string>> got;
    request_parser p;
    std::string buffer;
    for (std::size_t at = 0; at < input.size(); at += step) {
      buffer = buffer + input.substr(at, step);  // a fresh allocation every read
      for (;;) {
        const parse_status st = p.parse(buffer);
        REQUIRE(st != parse_status::error);
        if (st == parse_status::need_more) break;
        std::vector<std::string> args;
        for (auto a : p.args()) args.emplace_back(a);
        got.push_back(std::move(args));
        buffer.erase(0, p.frame_size());
        p.reset();
      }
    }
    CHECK(buffer.empty());
    return got;
  };
  for (std::size_t step = 1; step <= input.size(); ++step) {
    INFO("read size " << step);
    REQUIRE(run(step) == expected);
  }
}

TEST_CASE("request_parser handles large frames", "[resp][request_parser]") {
  SECTION("a 10,000-element array, whole and in 1000-byte reads") {
    std::string input = "*10000\r\n";
    for (int i = 0; i < 10000; ++i) {
      const std::string v = "value:" + std::to_string(i);
      input += "$" + std::to_string(v.size()) + "\r\n" + v + "\r\n";
    }
    std::vector<std::size_t> cuts;
    for (std::size_t c = 1000; c < input.size(); c += 1000) cuts.push_back(c);
    for (const auto& o : {feed(input, {}, {}), feed(input, cuts, {})}) {
      REQUIRE(o.status == parse_status::complete);
      REQUIRE(o.frame_size == input.size());
      REQUIRE(o.args.size() == 10000);
      for (int i = 0; i < 10000; i += 999) CHECK(o.args[i] == "value:" + std::to_string(i));
      CHECK(o.args.back() == "value:9999");
    }
  }
  SECTION("a 1 MiB binary bulk full of CRLFs and headers, in 4 KiB reads") {
    std::string payload;
    for (int i = 0; payload.size() < (1u << 20); ++i) payload += "\r\n$5\r\n*1\r\n"s + '\0';
    payload.resize(1u << 20);
    const std::string input =
        "*2\r\n$3\r\nSET\r\n$" + std::to_string(payload.size()) + "\r\n" + payload + "\r\n";
    std::vector<std::size_t> cuts;
    for (std::size_t c = 4096; c < input.size(); c += 4096) cuts.push_back(c);
    const outcome o = feed(input, cuts, {});
    REQUIRE(o.status == parse_status::complete);
    REQUIRE(o.frame_size == input.size());
    REQUIRE(o.args.size() == 2);
    CHECK(o.args[1] == payload);
  }
}

TEST_CASE("request_parser reuses its storage once warm", "[resp][request_parser]") {
  request_parser p;
  const std::string a = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
  REQUIRE(p.parse(a) == parse_status::complete);
  const auto* first = p.args().data();
  p.reset();
  const std::string b = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
  REQUIRE(p.parse(b) == parse_status::complete);
  CHECK(p.args().data() == first);
  CHECK(p.args()[0] == "GET");

  // A huge announced count only reserves a bounded amount, and still waits for the elements.
  p.reset();
  REQUIRE(p.parse("*2000000000\r\n$1\r\na\r\n") == parse_status::need_more);

  // After an error, the parser stays failed until reset.
  p.reset();
  REQUIRE(p.parse("*x\r\n") == parse_status::error);
  CHECK(p.parse("*1\r\n$1\r\na\r\n") == parse_status::error);
  p.reset();
  CHECK(p.parse("*1\r\n$1\r\na\r\n") == parse_status::complete);
}

// parse() again on a complete frame points its arguments at the bytes' new place: as framed whole
// in one pass, and as resumed over reads.
TEST_CASE("request_parser's arguments follow a complete frame to a new buffer",
          "[resp][request_parser]") {
  const std::string frame = "*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$2\r\nvv\r\n";
  for (const std::size_t cut : {frame.size(), std::size_t{20}}) {
    INFO("first read " << cut << " bytes");
    request_parser p;
    auto first = std::make_unique<std::string>(frame.substr(0, cut));
    if (cut < frame.size()) {
      REQUIRE(p.parse(*first) == parse_status::need_more);
      first = std::make_unique<std::string>(frame);
    }
    REQUIRE(p.parse(*first) == parse_status::complete);
    auto moved = std::make_unique<std::string>("...." + frame);
    first.reset();  // the old bytes are gone
    const std::string_view at(moved->data() + 4, frame.size());
    REQUIRE(p.parse(at) == parse_status::complete);
    REQUIRE(p.args().size() == 3);
    CHECK(p.args()[0] == "SET");
    CHECK(p.args()[1] == "key:000000000042");
    CHECK(p.args()[2] == "vv");
    CHECK(p.args()[1].data() == at.data() + 18);
    CHECK(p.frame_size() == frame.size());
  }
}
