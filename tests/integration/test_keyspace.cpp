// The near cache kept coherent by keyspace notifications, and by CLIENT TRACKING with REDIRECT
// on a RESP2 upstream, against a real redis-server: the staleness checker (a writer talking to
// Redis directly, a reader through the sidecar) in each shape of the channel, across a killed
// subscriber connection and an upstream restart; auto mode's chain (tracking -> keyspace -> ttl
// -> fallback) and its metric; detection of notifications by CONFIG GET and, where CONFIG is
// denied, by a probe write.
#include <algorithm>
#include <chrono>
#include <thread>

#include "tests/integration/near_support.hpp"

namespace redis_sidecar::test {
namespace {

using namespace near;

const std::string notify_on = "notify-keyspace-events Kg$lszxe";
const std::string no_tracking = "user default on nopass ~* &* +@all -client|tracking";
const std::string no_tracking_no_config = no_tracking + " -config";
const std::string no_hello = "rename-command HELLO \"\"";  // a RESP2-only upstream

redis_options options(std::vector<std::string> extra, std::vector<std::string> acl = {}) {
  redis_options o;
  o.extra = std::move(extra);
  o.acl = std::move(acl);
  return o;
}

// Versions from..to of `key`, each read twice first (a fill, then a hit) and then changed.
std::vector<std::chrono::microseconds> run_checker(const proxied& env, redisContext* writer,
                                                   redisContext* reader, const std::string& key,
                                                   int from, int to) {
  std::vector<std::chrono::microseconds> stale;
  for (int version = from; version <= to; ++version) {
    REQUIRE(get(reader, key) == std::to_string(version - 1));
    REQUIRE(get(reader, key) == std::to_string(version - 1));
    stale.push_back(staleness_round(env, writer, reader, key, version, true));
  }
  return stale;
}

// CLIENT KILL of the upstream connection whose CLIENT LIST line holds `field` (" psub=1 ",
// " sub=1 ").
void kill_client_with(const proxied& env, const std::string& field) {
  auto admin = env.upstream();
  const std::string clients = str(admin.get(), {"CLIENT", "LIST"});
  INFO(clients);
  const auto at = clients.find(field);
  REQUIRE(at != std::string::npos);
  const auto line = clients.rfind("id=", at);
  const std::string id = clients.substr(line + 3, clients.find(' ', line) - line - 3);
  REQUIRE(integer(admin.get(), {"CLIENT", "KILL", "ID", id}) == 1);
}

// The checker, then the subscriber connection killed, then an upstream restart: no stale hit
// while the channel is down, coherent again once it is back.
void coherent_across_failures(proxied& env, const std::string& subscriber_field,
                              const std::string& label) {
  // A forced mode is exported from the start; hits wait for the channel.
  REQUIRE(logged(env, "invalidation channel ready"));
  auto writer = env.upstream();
  auto reader = env.client();
  REQUIRE(str(writer.get(), {"SET", "ver", "0"}) == "OK");
  const double hits_before = metric(env, "redis_sidecar_cache_hits_total");
  auto stale = run_checker(env, writer.get(), reader.get(), "ver", 1, 40);
  WARN(label << " staleness: " << distribution(stale));
  CHECK(metric(env, "redis_sidecar_cache_hits_total") - hits_before >= 40);
  // Deletes invalidate too (a generic event).
  REQUIRE(get(reader.get(), "ver") == "40");
  staleness_round(env, writer.get(), reader.get(), "ver", 0);
  REQUIRE(str(writer.get(), {"SET", "ver", "40"}) == "OK");
  REQUIRE(eventually([&] { return get(reader.get(), "ver") == "40"; }));

  // The subscriber connection killed.
  const auto ready_before = count(env.side->log(), "invalidation channel ready");
  REQUIRE(get(reader.get(), "ver") == "40");
  kill_client_with(env, subscriber_field);
  REQUIRE(logged(env, "channel lost"));
  REQUIRE(str(writer.get(), {"SET", "ver", "41"}) == "OK");
  CHECK(get(reader.get(), "ver") == "41");
  REQUIRE(eventually(
      [&] { return count(env.side->log(), "invalidation channel ready") == ready_before + 1; }));
  run_checker(env, writer.get(), reader.get(), "ver", 42, 50);

  // An upstream restart (empty afterwards).
  REQUIRE(get(reader.get(), "ver") == "50");
  restart_upstream(env, writer, reader, "ver");  // empty afterwards
  REQUIRE(str(writer.get(), {"SET", "ver", "100"}) == "OK");
  REQUIRE(eventually([&] { return get(reader.get(), "ver") == "100"; }));
  REQUIRE(eventually(
      [&] { return count(env.side->log(), "invalidation channel ready") == ready_before + 2; }));
  run_checker(env, writer.get(), reader.get(), "ver", 101, 110);
}

}  // namespace

TEST_CASE("keyspace: hits coherent with direct writes, RESP3 (one connection)",
          "[near][keyspace]") {
  SIDECAR_ONLY();
  proxied env(options({notify_on}), with({"--cache-mode=keyspace"}));
  REQUIRE(mode_is(env, "keyspace"));
  CHECK(logged(env, "notify-keyspace-events is 'g$lszxeK'"));
  coherent_across_failures(env, " psub=1 ", "keyspace (RESP3)");
}

TEST_CASE("keyspace: hits coherent with direct writes, RESP2 (subscriber connection)",
          "[near][keyspace]") {
  SIDECAR_ONLY();
  proxied env(options({notify_on, no_hello}), with({"--cache-mode=keyspace"}));
  REQUIRE(mode_is(env, "keyspace"));
  CHECK(logged(env, "channel uses RESP2"));
  coherent_across_failures(env, " psub=1 ", "keyspace (RESP2)");
}

// Redis 7.0 writes the notification of a key a command expires lazily into that command's reply,
// between two elements of the array it is writing: for the near cache's own read (MULTI / PTTL /
// GET / EXEC on its RESP3 channel connection), for an app's MGET on a subscribed RESP3 connection.
// Active expiry is off, so that the reads are what expires the keys.
TEST_CASE("keyspace: a read that expires its key, the notification inside the reply (Redis 7.0)",
          "[near][keyspace][push]") {
  SIDECAR_ONLY();
  proxied env(options({notify_on, "enable-debug-command yes"}), with({"--cache-mode=keyspace"}));
  REQUIRE(mode_is(env, "keyspace"));
  REQUIRE(logged(env, "invalidation channel ready"));
  auto up = env.upstream();
  REQUIRE(str(up.get(), {"DEBUG", "SET-ACTIVE-EXPIRE", "0"}) == "OK");

  SECTION("the near cache's read: nil, the channel in step, the key not cached") {
    auto reader = env.client();
    for (int i = 0; i < 5; ++i) {
      REQUIRE(str(up.get(), {"SET", "short:" + std::to_string(i), "v", "PX", "20"}) == "OK");
    }
    REQUIRE(str(up.get(), {"SET", "kept", "v0"}) == "OK");
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    // One GET alone, then four in one pipeline (one read transaction) with a live key among them.
    CHECK(get(reader.get(), "short:0") == "(nil)");
    for (int i = 1; i < 5; ++i) queue_get(reader.get(), "short:" + std::to_string(i));
    queue_get(reader.get(), "kept");
    for (int i = 1; i < 5; ++i) CHECK(shape(next_reply(reader.get()).get()) == "nil");
    CHECK(describe(next_reply(reader.get()).get()) == "string v0");
    // The keys stay absent and later reads go on in step with the channel.
    CHECK(get(reader.get(), "short:0") == "(nil)");
    REQUIRE(str(up.get(), {"SET", "kept", "v1"}) == "OK");
    CHECK(eventually([&] { return get(reader.get(), "kept") == "v1"; }));
    CHECK(metric(env, "redis_sidecar_errors_total{kind=\"upstream_protocol\"}") == 0);
  }

  SECTION("an app's MGET on its subscribed RESP3 connection: the push, then the reply") {
    REQUIRE(str(up.get(), {"SET", "n", "2"}) == "OK");
    REQUIRE(str(up.get(), {"SET", "m", "1", "PX", "20"}) == "OK");
    raw_client app(env.port());
    value_reader in(app);
    app.send(resp_array({"HELLO", "3"}));
    REQUIRE(in.next().starts_with("%"));
    app.send(resp_array({"PSUBSCRIBE", "__keyspace@0__:m"}));
    REQUIRE(in.next() == ">3\r\n$10\r\npsubscribe\r\n$16\r\n__keyspace@0__:m\r\n:1\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    app.send(resp_array({"MGET", "n", "m", "n"}) + resp_array({"PING"}));
    CHECK(in.next() ==
          ">4\r\n$8\r\npmessage\r\n$16\r\n__keyspace@0__:m\r\n$16\r\n__keyspace@0__:m\r\n"
          "$7\r\nexpired\r\n");
    CHECK(in.next() == "*3\r\n$1\r\n2\r\n_\r\n$1\r\n2\r\n");
    CHECK(in.next() == "+PONG\r\n");
  }
}

// SORT ... STORE, SUNIONSTORE, ZUNIONSTORE, GEOSEARCHSTORE, ... replace a string key with a list,
// set or sorted set, and announce it in that type's class, not in the generic one.
TEST_CASE("keyspace: a string replaced by a list, set or sorted set command is dropped",
          "[near][keyspace]") {
  SIDECAR_ONLY();
  proxied env(options({notify_on}), with({"--cache-mode=keyspace"}));
  REQUIRE(mode_is(env, "keyspace"));
  REQUIRE(logged(env, "invalidation channel ready"));
  auto writer = env.upstream();
  auto reader = env.client();
  REQUIRE(integer(writer.get(), {"RPUSH", "src:list", "3", "1"}) == 2);
  REQUIRE(integer(writer.get(), {"SADD", "src:set", "a"}) == 1);
  REQUIRE(integer(writer.get(), {"ZADD", "src:zset", "1", "a"}) == 1);
  REQUIRE(integer(writer.get(), {"GEOADD", "src:geo", "13.361389", "38.115556", "p"}) == 1);
  const std::vector<std::vector<std::string>> replacing = {
      {"SORT", "src:list", "STORE", "dst"},
      {"SUNIONSTORE", "dst", "src:set"},
      {"SINTERSTORE", "dst", "src:set"},
      {"SDIFFSTORE", "dst", "src:set"},
      {"ZUNIONSTORE", "dst", "1", "src:zset"},
      {"ZINTERSTORE", "dst", "1", "src:zset"},
      {"ZDIFFSTORE", "dst", "1", "src:zset"},
      {"ZRANGESTORE", "dst", "src:zset", "0", "-1"},
      {"GEOSEARCHSTORE", "dst", "src:geo", "FROMLONLAT", "13.36", "38.11", "BYRADIUS", "100", "km"},
  };
  for (const auto& cmd : replacing) {
    INFO(cmd.at(0));
    REQUIRE(str(writer.get(), {"SET", "dst", "a string"}) == "OK");
    const double hits = metric(env, "redis_sidecar_cache_hits_total");
    REQUIRE(eventually([&] {
      return get(reader.get(), "dst") == "a string" &&
             metric(env, "redis_sidecar_cache_hits_total") > hits;
    }));
    REQUIRE(integer(writer.get(), cmd) >= 1);
    CHECK(eventually([&] {
      return shape(must(reader.get(), {"GET", "dst"}).get()) == "error WRONGTYPE";
    }));
  }
}

TEST_CASE("tracking with REDIRECT on a RESP2-only upstream", "[near][tracking][redirect]") {
  SIDECAR_ONLY();
  proxied env(options({no_hello}), with({}));
  REQUIRE(mode_is(env, "tracking"));
  CHECK(logged(env, "RESP2 with REDIRECT"));
  coherent_across_failures(env, " sub=1 ", "tracking (RESP2, REDIRECT)");
}

TEST_CASE("auto mode: keyspace when tracking is refused, ttl or fallback without notifications",
          "[near][auto][keyspace]") {
  SIDECAR_ONLY();
  SECTION("tracking refused, notifications on: keyspace") {
    proxied env(options({notify_on}, {no_tracking}), with({}));
    CHECK(mode_is(env, "keyspace"));
    CHECK(logged(env, "CLIENT TRACKING refused"));
    CHECK(logged(env, "cache mode keyspace"));
    auto writer = env.upstream();
    auto reader = env.client();
    REQUIRE(str(writer.get(), {"SET", "ver", "0"}) == "OK");
    run_checker(env, writer.get(), reader.get(), "ver", 1, 5);
  }
  SECTION("tracking refused, RESP2 only, notifications on: keyspace") {
    proxied env(options({notify_on, no_hello}, {no_tracking}), with({}));
    CHECK(mode_is(env, "keyspace"));
    CHECK(logged(env, "CLIENT TRACKING refused"));
  }
  SECTION("tracking refused, notifications off, prefixes set: ttl") {
    proxied env(options({}, {no_tracking}), with({"--cache-prefix=user:"}));
    CHECK(mode_is(env, "ttl"));
    CHECK(logged(env, "notify-keyspace-events is '', without Kg$lszxe"));
  }
  SECTION("tracking refused, notifications without expirations and evictions: fallback") {
    proxied env(options({"notify-keyspace-events Kg$"}, {no_tracking}), with({}));
    // The log first: before auto mode chooses, the metric says fallback too.
    CHECK(logged(env, "without lszxe"));
    CHECK(mode_is(env, "fallback"));
  }
  SECTION("--cache-mode=keyspace without notifications: fallback, said as an error") {
    proxied env(options({}), with({"--cache-mode=keyspace"}));
    CHECK(mode_is(env, "fallback"));
    CHECK(logged(env, "--cache-mode=keyspace: notify-keyspace-events is ''"));
  }
}

// The upstream restarts (or a failover lands) without the notifications it had: the channel,
// reopened, checks again and leaves keyspace mode. Before, it subscribed and said ready, and L1
// served every value written since until --cache-ttl.
TEST_CASE("keyspace: an upstream back without its notifications leaves keyspace mode",
          "[near][keyspace]") {
  SIDECAR_ONLY();
  proxied env(options({notify_on}), with({"--cache-mode=keyspace"}));
  REQUIRE(mode_is(env, "keyspace"));
  {
    auto admin = env.upstream();
    REQUIRE(str(admin.get(), {"CONFIG", "SET", "notify-keyspace-events", ""}) == "OK");
    REQUIRE(str(admin.get(), {"CONFIG", "REWRITE"}) == "OK");  // the restart's config too
  }
  env.redis.kill();
  env.redis.start();
  CHECK(mode_is(env, "fallback"));
  CHECK(logged(env, "--cache-mode=keyspace: notify-keyspace-events is ''"));
  auto writer = env.upstream();
  auto reader = env.client();
  REQUIRE(str(writer.get(), {"SET", "k", "1"}) == "OK");
  CHECK(eventually([&] { return get(reader.get(), "k") == "1"; }));  // the pool reconnected
  CHECK(get(reader.get(), "k") == "1");
  REQUIRE(str(writer.get(), {"SET", "k", "2"}) == "OK");
  CHECK(get(reader.get(), "k") == "2");
}

TEST_CASE("keyspace detection by a probe write where CONFIG is denied",
          "[near][auto][keyspace][probe]") {
  SIDECAR_ONLY();
  SECTION("notifications on: the probe's notification arrives") {
    proxied env(options({notify_on}, {no_tracking_no_config}), with({}));
    CHECK(mode_is(env, "keyspace"));
    CHECK(logged(env, "probing for keyspace notifications"));
    CHECK(logged(env, "a probe write's notification arrived"));
    // The probe key is short-lived (PX 2000) and named so it cannot clash.
    auto up = env.upstream();
    auto keys = must(up.get(), {"KEYS", "redis-sidecar:probe:*"});
    REQUIRE(keys->type == REDIS_REPLY_ARRAY);
    for (std::size_t i = 0; i < keys->elements; ++i) {
      const std::string k(keys->element[i]->str, keys->element[i]->len);
      CHECK(k.size() == std::string("redis-sidecar:probe:").size() + 16);
      const long long pttl = integer(up.get(), {"PTTL", k});
      CHECK((pttl == -2 || (pttl > 0 && pttl <= 2000)));
    }
    auto writer = env.upstream();
    auto reader = env.client();
    REQUIRE(str(writer.get(), {"SET", "ver", "0"}) == "OK");
    run_checker(env, writer.get(), reader.get(), "ver", 1, 5);
  }
  SECTION("notifications off: no notification within the probe timeout") {
    proxied env(options({}, {no_tracking_no_config}), with({"--cache-prefix=user:"}));
    CHECK(mode_is(env, "ttl"));
    CHECK(logged(env, "no keyspace notification for a probe write"));
  }
}

}  // namespace redis_sidecar::test
