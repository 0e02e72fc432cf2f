// Upstream URL parsing, masking and mask_url on log-like text. Table-driven: every accepted form,
// and every rejection with the phrase its message must contain; no message may contain a password.
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "proxy/config/url.hpp"

using redis_sidecar::mask_url;
using redis_sidecar::parse_upstream_url;
using redis_sidecar::upstream_url;

namespace {

struct good_case {
  std::string text;
  bool tls;
  std::string host;
  int port;
  std::string username;
  std::string password;
  int db;
};

struct bad_case {
  std::string text;
  std::string expected;  // a phrase the error must contain
};

}  // namespace

TEST_CASE("parse_upstream_url accepts every supported form", "[url]") {
  const std::vector<good_case> cases{
      {"redis://localhost", false, "localhost", 6379, "", "", 0},
      {"redis://localhost:6380", false, "localhost", 6380, "", "", 0},
      {"rediss://user:pass@cache.example:6380/2", true, "cache.example", 6380, "user", "pass", 2},
      {"redis://:secret@h", false, "h", 6379, "", "secret", 0},
      {"redis://alice@h", false, "h", 6379, "alice", "", 0},
      {"redis://alice:@h", false, "h", 6379, "alice", "", 0},
      {"redis://u:p%40ss@h/3", false, "h", 6379, "u", "p@ss", 3},
      {"redis://us%3Aer:p%3Aw%2F%25@h", false, "h", 6379, "us:er", "p:w/%", 0},
      {"redis://[::1]:7000/1", false, "::1", 7000, "", "", 1},
      {"rediss://[::1]", true, "::1", 6379, "", "", 0},
      {"redis://127.0.0.1:6379/", false, "127.0.0.1", 6379, "", "", 0},
      {"REDIS://H:1", false, "H", 1, "", "", 0},
      {"RedisS://h", true, "h", 6379, "", "", 0},
      {"redis://h?db=5", false, "h", 6379, "", "", 5},
      {"redis://h/5?db=5", false, "h", 6379, "", "", 5},
      {"redis://h:65535", false, "h", 65535, "", "", 0},
      {"  redis://h:7\n", false, "h", 7, "", "", 0},
      {"redis://h/2147483647", false, "h", 6379, "", "", 2147483647},
      {"redis://h/007", false, "h", 6379, "", "", 7},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    upstream_url u;
    std::string error;
    REQUIRE(parse_upstream_url(c.text, u, error));
    CHECK(error.empty());
    CHECK(u.tls == c.tls);
    CHECK(u.host == c.host);
    CHECK(u.port == c.port);
    CHECK(u.username == c.username);
    CHECK(u.password == c.password);
    CHECK(u.db == c.db);
  }
}

TEST_CASE("parse_upstream_url rejects malformed URLs with a clear message", "[url]") {
  const std::vector<bad_case> cases{
      {"", "empty"},
      {"   ", "empty"},
      {"http://h:6379", "unsupported scheme 'http'"},
      {"unix:///tmp/redis.sock", "unsupported scheme 'unix'"},
      {"tcp://h", "unsupported scheme 'tcp'"},
      {"redis:h", "expected redis://host"},
      {"localhost:6379", "unsupported scheme 'localhost'"},
      {"redis://", "host is empty"},
      {"redis://:pw@:6379", "host is empty"},
      {"redis://h:0", "port must be a number from 1 to 65535"},
      {"redis://h:65536", "port must be a number from 1 to 65535"},
      {"redis://h:99999999999999999999999", "port must be a number"},
      {"redis://h:abc", "port must be a number"},
      {"redis://h:", "port must be a number"},
      {"redis://h/-1", "database number"},
      {"redis://h/abc", "database number"},
      {"redis://h/1/2", "database number"},
      {"redis://h/2147483648", "database number"},
      {"redis://h?db=x", "db must be a non-negative number"},
      {"redis://h?db=-2", "db must be a non-negative number"},
      {"redis://h/1?db=2", "differ"},
      {"redis://h?ssl_cert_reqs=none", "unsupported query parameter 'ssl_cert_reqs'"},
      {"redis://h?x=1", "unsupported query parameter (only db"},  // unknown: not echoed
      {"redis://a%2Fb:6379", "characters no host name has"},
      {"redis://a%20b", "characters no host name has"},
      {"redis://h#x", "fragment"},
      {"redis://u:p ss@h", "percent-encoded"},
      {"redis://u:p@ss@h:1/0", "percent-encode an '@' in a password as %40"},
      {"redis://u:p@ss@h", "more than one '@'"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    upstream_url u;
    u.host = "untouched";
    std::string error;
    REQUIRE_FALSE(parse_upstream_url(c.text, u, error));
    CHECK_THAT(error, Catch::Contains(c.expected));
    CHECK(u.host == "untouched");  // `out` changes only on success
  }
}

TEST_CASE("parse_upstream_url errors never contain the password", "[url]") {
  // Every URL is invalid and carries the password "Zq7Secret" (or a piece of it) somewhere.
  const std::vector<std::string> urls{
      "redis://u:Zq7Secret@h:0",     "redis://:Zq7Secret@",
      "http://u:Zq7Secret@h",        "redis://u:Zq7Secret@h/x",
      "redis://u:Zq7Secret@h?db=x",  "redis://u:Zq7Se cret@h",
      "redis://u:Zq7Se/cret@h",      "redis://u:Zq7Se@cret@h:99999",
      "redis://u:Zq7Se%40cret@h:0",  "redis://u:Zq7Se:cret@h:0",
      "u:Zq7Secret@host:6379",       "Zq7Secret@host",
      "rediss://u:Zq7Secret@h#frag", "redis://h:6379?password=Zq7Secret",
      "redis://Zq7Secret@h:0",       "redis://h?user=u&password=Zq7Secret",
      // A query is masked wherever it is; a raw '?' in a password belongs to the userinfo;
      // a parameter the sidecar does not know is not echoed; no scheme, no "://" as a scheme.
      "redis:/?password=Zq7Secret",  "redis:h?password=Zq7Secret",
      "redis://u:Zq7Se?cret@h",      "redis://u:Zq7Se?cret@h?db=x",
      "redis://h?Zq7Secret",         "redis://h?Zq7Secret=1",
      "x!:Zq7Secret@h://",           "u:Zq7Secret@h/0?db=1",
      "redis://u:Zq7Secret",         "rediss://default:Zq7Secret/0",  // no "@host"
  };
  for (const auto& text : urls) {
    INFO(text);
    upstream_url u;
    std::string error;
    REQUIRE_FALSE(parse_upstream_url(text, u, error));
    CHECK_THAT(error, !Catch::Contains("Zq7Se") && !Catch::Contains("cret"));
    CHECK_THAT(error, Catch::Contains("****"));
  }
}

TEST_CASE("masked() hides the password and endpoint() brackets IPv6", "[url]") {
  struct c {
    std::string text, masked, endpoint;
  };
  const std::vector<c> cases{
      {"rediss://user:pw@h:6380/2", "rediss://user:****@h:6380/2", "h:6380"},
      {"redis://:pw@h", "redis://:****@h:6379/0", "h:6379"},
      {"redis://alice@h", "redis://****@h:6379/0", "h:6379"},
      {"redis://h", "redis://h:6379/0", "h:6379"},
      {"redis://a%40b:pw@[::1]:7000/1", "redis://a%40b:****@[::1]:7000/1", "[::1]:7000"},
  };
  for (const auto& x : cases) {
    INFO(x.text);
    upstream_url u;
    std::string error;
    REQUIRE(parse_upstream_url(x.text, u, error));
    CHECK(u.masked() == x.masked);
    CHECK(u.endpoint() == x.endpoint);
    // The masked form is itself a valid URL for the same endpoint.
    upstream_url again;
    REQUIRE(parse_upstream_url(u.masked(), again, error));
    CHECK(again.endpoint() == u.endpoint());
    if (!u.password.empty()) CHECK(again.username == u.username);
  }
}

TEST_CASE("mask_url masks passwords inside log text", "[url]") {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"connecting to redis://u:secret@h:6379/0 failed",
       "connecting to redis://u:****@h:6379/0 failed"},
      {"rediss://:secret@h", "rediss://:****@h"},
      {"REDIS://u:secret@h", "REDIS://u:****@h"},
      {"a=redis://u:one@h1,b=rediss://u:two@h2 done",
       "a=redis://u:****@h1,b=rediss://u:****@h2 done"},
      {"url=\"redis://u:pw@h\" next", "url=\"redis://u:****@h\" next"},
      {"<rediss://u:pw@h:1>", "<rediss://u:****@h:1>"},
      {"redis://u:p@ss@h:1/0", "redis://u:****@h:1/0"},
      {"redis://u:p/ss@h:1/0", "redis://u:****@h:1/0"},
      {"redis://u@h and redis://h:6379", "redis://****@h and redis://h:6379"},
      {"redis://Zq9secret@h:6379/0", "redis://****@h:6379/0"},
      {"http://u:pw@h", "http://u:pw@h"},
      {"no url here", "no url here"},
      {"", ""},
      {"://", "://"},
      {"redis://", "redis://"},
      {"redis://:", "redis://:"},
      {"redis://@", "redis://@"},
      {"redis://:@", "redis://:@"},
      {"rediss://u:", "rediss://u:"},
      {"redis://redis://redis://", "redis://redis://redis://"},
      {"redis://h:1/0?password=secret next", "redis://h:1/0?**** next"},
      {"redis://u:pa?ss@h:1", "redis://u:****@h:1"},
      {"redis://h?", "redis://h?"},
      {"redis://a:b@redis://c:d@e", "redis://a:****@redis://c:****@e"},
  };
  for (const auto& [in, expected] : cases) {
    INFO(in);
    CHECK(mask_url(in) == expected);
  }
}

TEST_CASE("mask_url never throws and never leaks a password in random text", "[url]") {
  std::mt19937 rng(12345);
  const std::string junk = "abc :/@?#%[]\"'<>\t\n,=redis:// rediss://";
  auto random_junk = [&](std::size_t n) {
    std::string s;
    for (std::size_t i = 0; i < n; ++i) s += junk[rng() % junk.size()];
    return s;
  };
  for (int i = 0; i < 2000; ++i) {
    // The password uses only upper-case letters, which the junk never contains.
    std::string password;
    for (int k = 0; k < 10; ++k) password += static_cast<char>('A' + rng() % 26);
    const std::string text = random_junk(rng() % 20) + " redis://user:" + password +
                             "@host:6379/0 " + random_junk(rng() % 20);
    std::string out;
    REQUIRE_NOTHROW(out = mask_url(text));
    INFO(text);
    CHECK(out.find(password) == std::string::npos);
    REQUIRE_NOTHROW(mask_url(random_junk(rng() % 64)));
  }
}
