// near_support: what the near-cache integration tests share (test_near_cache.cpp,
// test_keyspace.cpp): fast-failing sidecar flags, metric and log probes, and the staleness
// checker's round (a writer changes a key directly on Redis, a reader reads it through the
// sidecar until it sees the change).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/integration/common.hpp"

namespace redis_sidecar::test::near {

using clock_type = std::chrono::steady_clock;

inline const std::vector<std::string> quick = {
    "--health-probe-interval-ms=20", "--fallback-after-ms=200", "--connect-timeout-ms=300",
    "--reconnect-max-ms=200"};

/// `quick` plus `extra`.
inline std::vector<std::string> with(std::vector<std::string> extra) {
  std::vector<std::string> out = quick;
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

inline bool mode_is(const proxied& env, const std::string& mode) {
  return eventually(
      [&] { return metric(env, "redis_sidecar_cache_mode{mode=\"" + mode + "\"}") == 1; });
}

inline bool logged(const proxied& env, const std::string& what) {
  return eventually([&] { return env.side->log().find(what) != std::string::npos; });
}

inline std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

/// How many times Redis ran `command` (lower case) since its last CONFIG RESETSTAT.
inline int cmdstat_calls(redisContext* up, const std::string& command) {
  const std::string stats = str(up, {"INFO", "commandstats"});
  const std::string field = "cmdstat_" + command + ":calls=";
  const auto pos = stats.find(field);
  return pos == std::string::npos ? 0 : std::atoi(stats.c_str() + pos + field.size());
}

/// Queues GET `key` without writing it: the next reply read writes every queued command at once,
/// so the sidecar reads them together (a pipeline in one write).
inline void queue_get(redisContext* c, const std::string& key) {
  const char* argv[] = {"GET", key.c_str()};
  REQUIRE(redisAppendCommandArgv(c, 2, argv, nullptr) == REDIS_OK);
}

/// describe(), with an error cut to its code ("error WRONGTYPE").
inline std::string shape(const redisReply* r) {
  std::string d = describe(r);
  if (r != nullptr && r->type == REDIS_REPLY_ERROR) d = d.substr(0, d.find(' ', 6));
  return d;
}

/// GET's value, "(nil)", or "(no reply)".
inline std::string get(redisContext* c, const std::string& key) {
  auto r = command(c, {"GET", key});
  if (!r) return "(no reply)";
  if (r->type == REDIS_REPLY_NIL) return "(nil)";
  return std::string(r->str, r->len);
}

/// One round of the staleness checker: the writer changes `key` directly on Redis (SET to
/// `version`, or DEL when `version` is 0); from the acknowledgement on, the reader reads through
/// the sidecar until it sees the change. Returns how long the old value was still served (0 when
/// never), and checks the strict rule: once the sidecar has received the invalidation, no read
/// returns the old value. `old_may_be_nil`: the key may have been deleted before this round.
inline std::chrono::microseconds staleness_round(const proxied& env, redisContext* writer,
                                                 redisContext* reader, const std::string& key,
                                                 int version, bool old_may_be_nil = false) {
  const std::string v = version == 0 ? "(nil)" : std::to_string(version);
  const double received_before = metric(env, "redis_sidecar_cache_invalidations_received_total");
  if (version == 0)
    REQUIRE(integer(writer, {"DEL", key}) == 1);
  else
    REQUIRE(str(writer, {"SET", key, v}) == "OK");
  const auto acked = clock_type::now();
  std::chrono::microseconds stale{0};
  for (;;) {
    const std::string got = get(reader, key);
    if (got == v) break;
    INFO("read " << got << " while expecting " << v);
    REQUIRE(got != "(no reply)");
    // Never a version from the future, never garbage.
    if (version > 0 && !(old_may_be_nil && got == "(nil)")) REQUIRE(std::stoi(got) < version);
    stale = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - acked);
    REQUIRE(stale < std::chrono::seconds(5));
  }
  INFO("version " << version << "; sidecar log:\n" << env.side->log());
  REQUIRE(eventually([&] {
    return metric(env, "redis_sidecar_cache_invalidations_received_total") > received_before;
  }));
  for (int i = 0; i < 3; ++i) REQUIRE(get(reader, key) == v);
  return stale;
}

/// Restarts the upstream (empty afterwards), waits until the sidecar answers `key` as nil, and
/// reconnects `writer` (direct) and `reader` (through the sidecar).
inline void restart_upstream(proxied& env, context_ptr& writer, context_ptr& reader,
                             const std::string& key) {
  env.redis.stop();
  env.redis.start();
  writer = env.upstream();
  REQUIRE(eventually([&] {
    auto c = connect(env.port());
    return c && get(c.get(), key) == "(nil)";
  }));
  reader = env.client();
}

/// "N writes, M with a stale read; staleness p50 .. us, p99 .. us, max .. us".
inline std::string distribution(std::vector<std::chrono::microseconds> v) {
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) { return v[static_cast<std::size_t>(q * (v.size() - 1))].count(); };
  const auto stale = std::count_if(v.begin(), v.end(), [](auto d) { return d.count() > 0; });
  return std::to_string(v.size()) + " writes, " + std::to_string(stale) +
         " with a stale read; staleness p50 " + std::to_string(at(0.5)) + " us, p99 " +
         std::to_string(at(0.99)) + " us, max " + std::to_string(v.back().count()) + " us";
}

}  // namespace redis_sidecar::test::near
