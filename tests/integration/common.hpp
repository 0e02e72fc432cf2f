// common: what the integration tests share. A `proxied` fixture (a plaintext redis-server and a
// sidecar in front of it), small hiredis wrappers that fail the test with a readable message, a
// RESP2/RESP3 frame reader for raw sockets, a deadline poller for recovery checks, and a probe of
// the sidecar's /metrics.
//
// Direct mode: with REDIS_SIDECAR_IT_DIRECT=1 in the environment, `proxied` starts no sidecar and
// port() is the upstream's own port, so the tests that describe plain Redis behaviour can be
// checked against Redis itself. Tests of sidecar-only behaviour call SIDECAR_ONLY() first.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "proxy/errors.hpp"
#include "tests/metrics/http_get.hpp"
#include "tests/support/harness.hpp"

namespace redis_sidecar::test {

inline bool direct_mode() {
  const char* v = std::getenv("REDIS_SIDECAR_IT_DIRECT");
  return v != nullptr && std::string_view(v) == "1";
}

// Skips the rest of a test that only makes sense against the sidecar.
#define SIDECAR_ONLY()                                   \
  do {                                                   \
    if (::redis_sidecar::test::direct_mode()) {          \
      WARN("sidecar-only test: skipped in direct mode"); \
      return;                                            \
    }                                                    \
  } while (false)

/// "-<error>\r\n": the bytes a client receives for a sidecar error string.
inline std::string error_bytes(std::string_view e) { return "-" + std::string(e) + "\r\n"; }

/// A plaintext upstream and, unless in direct mode, a sidecar in front of it.
struct proxied {
  redis_server redis;
  std::optional<sidecar> side;

  explicit proxied(redis_options opts = {}, std::vector<std::string> args = {})
      : redis(std::move(opts)) {
    if (direct_mode()) return;
    args.insert(args.begin(), {"--upstream", redis.url()});
    side.emplace(std::move(args));
    if (!side->running()) FAIL("sidecar exited at start-up:\n" << side->log());
  }
  /// Where clients connect: the sidecar, or the upstream in direct mode.
  std::uint16_t port() const { return side ? side->port() : redis.port(); }
  context_ptr client() const { return connect(port()); }
  /// A connection straight to the upstream, for checking what really happened there.
  context_ptr upstream() const {
    context_ptr c{redis.connect_direct()};
    REQUIRE(c);
    return c;
  }
};

/// Sends argv and requires a reply (not an I/O error or timeout).
inline reply_ptr must(redisContext* c, const std::vector<std::string>& argv) {
  auto r = command(c, argv);
  INFO("command " << argv.at(0) << ": " << (c->err != 0 ? c->errstr : ""));
  REQUIRE(r);
  return r;
}

inline std::string describe(const redisReply* r) {
  if (r == nullptr) return "(no reply)";
  switch (r->type) {
    case REDIS_REPLY_STRING: return "string " + std::string(r->str, r->len);
    case REDIS_REPLY_STATUS: return "status " + std::string(r->str, r->len);
    case REDIS_REPLY_ERROR: return "error " + std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER: return "integer " + std::to_string(r->integer);
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_ARRAY: return "array of " + std::to_string(r->elements);
    default: return "type " + std::to_string(r->type);
  }
}

/// A bulk string or status reply's text; fails the test on any other reply.
inline std::string str(redisContext* c, const std::vector<std::string>& argv) {
  auto r = must(c, argv);
  INFO(argv.at(0) << " replied " << describe(r.get()));
  REQUIRE((r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS));
  return std::string(r->str, r->len);
}

inline long long integer(redisContext* c, const std::vector<std::string>& argv) {
  auto r = must(c, argv);
  INFO(argv.at(0) << " replied " << describe(r.get()));
  REQUIRE(r->type == REDIS_REPLY_INTEGER);
  return r->integer;
}

/// An error reply's text; fails the test on any other reply.
inline std::string error_of(redisContext* c, const std::vector<std::string>& argv) {
  auto r = must(c, argv);
  INFO(argv.at(0) << " replied " << describe(r.get()));
  REQUIRE(r->type == REDIS_REPLY_ERROR);
  return std::string(r->str, r->len);
}

inline bool is_nil(redisContext* c, const std::vector<std::string>& argv) {
  auto r = must(c, argv);
  return r->type == REDIS_REPLY_NIL;
}

/// The string elements of an array reply.
inline std::vector<std::string> strings(const redisReply* r) {
  std::vector<std::string> out;
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return out;
  for (std::size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER) {
      out.push_back(std::to_string(e->integer));
    } else if (e->str != nullptr) {
      out.emplace_back(e->str, e->len);
    } else {
      out.emplace_back("(nil)");
    }
  }
  return out;
}

inline std::vector<std::string> elements(redisContext* c, const std::vector<std::string>& argv) {
  auto r = must(c, argv);
  INFO(argv.at(0) << " replied " << describe(r.get()));
  REQUIRE(r->type == REDIS_REPLY_ARRAY);
  return strings(r.get());
}

/// `words` as a RESP array of bulk strings: a request's bytes, for raw clients.
inline std::string resp_array(const std::vector<std::string>& words) {
  std::string f = "*" + std::to_string(words.size()) + "\r\n";
  for (const auto& w : words) f += "$" + std::to_string(w.size()) + "\r\n" + w + "\r\n";
  return f;
}

/// Size of the first complete RESP2/RESP3 value in `in` starting at `pos`, or 0 if incomplete.
inline std::size_t resp_value_end(std::string_view in, std::size_t pos) {
  auto eol = in.find("\r\n", pos);
  if (pos >= in.size() || eol == std::string_view::npos) return 0;
  char type = in[pos];
  std::string_view line = in.substr(pos + 1, eol - pos - 1);
  std::size_t next = eol + 2;
  long long n = 0;
  if (std::string_view("$!=*~>%|").find(type) != std::string_view::npos) {
    n = std::strtoll(std::string(line).c_str(), nullptr, 10);
  }
  switch (type) {
    case '$':
    case '!':
    case '=':
      if (n < 0) return next;
      return in.size() >= next + n + 2 ? next + n + 2 : 0;
    case '*':
    case '~':
    case '>':
    case '%':
    case '|': {
      if (n < 0) return next;
      long long count = (type == '%' || type == '|') ? 2 * n : n;
      for (long long i = 0; i < count; ++i) {
        next = resp_value_end(in, next);
        if (next == 0) return 0;
      }
      return type == '|' ? resp_value_end(in, next) : next;  // attributes precede a value
    }
    default: return next;  // + - : _ # , (
  }
}

/// Reads exactly one RESP value from a raw client (empty string on timeout).
inline std::string read_value(raw_client& c) {
  std::string buf;
  for (;;) {
    if (!buf.empty() && resp_value_end(buf, 0) == buf.size()) return buf;
    std::string byte = c.read_exact(1);
    if (byte.empty()) return {};
    buf += byte;
  }
}

/// RESP values from a raw client, read in chunks (read_value reads a byte at a time, which large
/// replies make slow): bytes read past one value wait in the buffer for the next call.
class value_reader {
 public:
  explicit value_reader(raw_client& c) : c_(c) {}
  /// The next complete value, or an empty string on timeout or close.
  std::string next() {
    for (;;) {
      if (const std::size_t end = resp_value_end(buf_, 0); end != 0) {
        std::string v = buf_.substr(0, end);
        buf_.erase(0, end);
        return v;
      }
      const std::string more = c_.read_available();
      if (more.empty()) return {};
      buf_ += more;
    }
  }

 private:
  raw_client& c_;
  std::string buf_;
};

/// Polls `f` until it returns true or `deadline` passes. For recovery checks: the deadline is a
/// failure signal, never a speed assertion.
template <class F>
bool eventually(F f, std::chrono::milliseconds deadline = std::chrono::seconds(15)) {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return f();
}

/// Redis' blocked_clients (INFO clients): clients blocked by a command, or held by CLIENT PAUSE.
inline long long blocked_clients(const proxied& env) {
  auto up = env.upstream();
  auto text = str(up.get(), {"INFO", "clients"});
  auto pos = text.find("blocked_clients:");
  return pos == std::string::npos ? -1 : std::atoll(text.c_str() + pos + 16);
}

/// The value of one of the sidecar's /metrics series, -1 when absent.
/// The error a SET gets once the sidecar, in fallback because the upstream refuses its
/// configuration, refuses writes; whatever error it got last if that does not come in time.
inline std::string write_refusal(redisContext* c) {
  std::string e;
  eventually([&] {
    e = error_of(c, {"SET", "k", "v"});
    return e.find("refuses the sidecar") != std::string::npos;
  });
  return e;
}

inline double metric(const proxied& env, const std::string& series) {
  const std::string text = "\n" + http_get(env.side->metrics_port(), "/metrics").body;
  const auto pos = text.find("\n" + series + " ");
  return pos == std::string::npos ? -1 : std::atof(text.c_str() + pos + series.size() + 2);
}

/// A field of a CLIENT LIST / CLIENT INFO line ("" when missing); RESP3's "txt:" may precede it.
inline std::string field(const std::string& line, const std::string& name) {
  const std::string key = name + "=";
  std::size_t at = 0;
  while ((at = line.find(key, at)) != std::string::npos) {
    if (at == 0 || line[at - 1] == ' ' || line[at - 1] == ':') break;
    ++at;
  }
  if (at == std::string::npos) return "";
  const std::size_t from = at + key.size();
  return line.substr(from, line.find_first_of(" \r\n", from) - from);
}

/// CLIENT LIST's lines.
inline std::vector<std::string> lines_of(const std::string& list) {
  std::vector<std::string> out;
  std::size_t at = 0;
  for (std::size_t nl; (nl = list.find('\n', at)) != std::string::npos; at = nl + 1)
    out.push_back(list.substr(at, nl - at));
  return out;
}

/// A fresh connection still gets PONG: the server survived whatever the test did.
inline void check_still_serving(std::uint16_t port) {
  auto c = connect(port);
  CHECK(str(c.get(), {"PING"}) == "PONG");
}

}  // namespace redis_sidecar::test
