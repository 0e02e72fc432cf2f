// Metrics: the declarative family lists, the instruments (bucket edges, "other" command, error
// kinds), the windowed hit ratio with injected time, JSON escaping and the /readyz body, and the
// exporter end to end on 127.0.0.1:0 through a plain loopback HTTP client: exact series and values,
// cumulative buckets, only observed histogram series, /healthz, /readyz 503 -> 200, start-up
// errors.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "metrics/exporter.hpp"
#include "metrics/health_snapshot.hpp"
#include "metrics/hit_ratio_window.hpp"
#include "metrics/json.hpp"
#include "metrics/sidecar_metrics.hpp"
#include "tests/metrics/http_get.hpp"

namespace m = redis_sidecar::metrics;
using redis_sidecar::test::http_get;
using std::chrono::microseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

namespace {

m::label_sets test_labels() {
  return {{"get", "set", "ping"}, {"protocol", "auth"}, {"auto", "fallback", "off"}, "1.2.3"};
}

// "name{labels}" -> value, for every sample line of a text exposition.
std::map<std::string, double> parse_samples(const std::string& body) {
  std::map<std::string, double> out;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

std::size_t count_lines_containing(const std::string& body, const std::string& needle) {
  std::size_t n = 0;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

std::string bucket(const std::string& command, const std::string& source, const std::string& le) {
  return "redis_sidecar_request_duration_seconds_bucket{command=\"" + command + "\",source=\"" +
         source + "\",le=\"" + le + "\"}";
}

}  // namespace

TEST_CASE("every family name is unique, prefixed, and counters end in _total", "[metrics]") {
  std::set<std::string_view> names;
  std::size_t total = 0;
  auto check = [&](const m::family_info& f) {
    ++total;
    names.insert(f.name);
    CHECK(f.name.starts_with("redis_sidecar_"));
    CHECK_FALSE(f.help.empty());
    CHECK((f.type == m::family_type::counter) == f.name.ends_with("_total"));
    // Bounded labels only: never a key, an address or free text.
    CHECK(f.labels.find("key") == std::string_view::npos);
    CHECK(f.labels.find("addr") == std::string_view::npos);
  };
  for (const auto& f : m::counter_families) check(f);
  for (const auto& f : m::gauge_families) check(f);
  for (const auto& f : m::labelled_families) check(f);
  CHECK(names.size() == total);
}

TEST_CASE("counters and gauges", "[metrics]") {
  m::sidecar_metrics metrics(test_labels());
  auto& hits = metrics[m::counter_id::cache_hits];
  hits.inc();
  hits.inc(41);
  CHECK(hits.value() == 42);
  CHECK(metrics[m::counter_id::cache_misses].value() == 0);

  auto& clients = metrics[m::gauge_id::client_connections];
  clients.inc();
  clients.inc();
  clients.dec();
  CHECK(clients.value() == 1);
  clients.set(-5);
  CHECK(clients.value() == -5);
  CHECK(metrics[m::gauge_id::start_time].value() > 1'600'000'000);  // set by the constructor
}

TEST_CASE("histogram buckets: le is inclusive, below the first and above the last", "[metrics]") {
  m::latency_histogram h;
  h.observe(nanoseconds(0));                // bucket 0 (<= 10us)
  h.observe(nanoseconds(-5));               // clamped to 0
  h.observe(microseconds(10));              // exactly on the bound: bucket 0
  h.observe(nanoseconds(10'001));           // bucket 1 (<= 25us)
  h.observe(std::chrono::milliseconds(1));  // bucket 6 (<= 1ms)
  h.observe(seconds(10));                   // last finite bucket
  h.observe(seconds(11));                   // +Inf
  CHECK(h.bucket(0) == 3);
  CHECK(h.bucket(1) == 1);
  CHECK(h.bucket(6) == 1);
  CHECK(h.bucket(m::latency_bounds_ns.size() - 1) == 1);
  CHECK(h.bucket(m::latency_bounds_ns.size()) == 1);
  CHECK(h.count() == 7);
  CHECK(h.sum_ns() == 10'000u + 10'001u + 1'000'000u + 10'000'000'000u + 11'000'000'000u);
}

TEST_CASE("commands: names in order, then other; unknown indexes count as other", "[metrics]") {
  m::sidecar_metrics metrics(test_labels());
  REQUIRE(metrics.commands().size() == 4);
  CHECK(metrics.commands()[3] == "other");
  CHECK(metrics.other_command() == 3);
  CHECK(metrics.command_index("set") == 1);
  CHECK(metrics.command_index("SET") == 3);  // exact names: the proxy passes the table's
  metrics.observe(99, m::source::upstream, microseconds(5));
  metrics.observe(metrics.other_command(), m::source::upstream, 0.5);
  CHECK(metrics.latency(3, m::source::upstream).count() == 2);
  CHECK(metrics.latency(3, m::source::upstream).sum_ns() == 500'005'000u);
  // Seconds as double: NaN and negatives count as 0, absurd values land in +Inf.
  metrics.observe(1, m::source::local, std::numeric_limits<double>::quiet_NaN());
  metrics.observe(1, m::source::local, -1.0);
  metrics.observe(1, m::source::local, 1e300);
  const auto& local = metrics.latency(1, m::source::local);
  CHECK(local.bucket(0) == 2);
  CHECK(local.bucket(m::latency_bounds_ns.size()) == 1);
  CHECK(metrics.latency(0, m::source::upstream).count() == 0);

  m::sidecar_metrics with_other({{"get", "other", "set"}, {}, {}, "v"});
  CHECK(with_other.commands().size() == 3);  // no second "other"
  CHECK(with_other.other_command() == 1);
  with_other.observe(7, m::source::local, microseconds(1));
  CHECK(with_other.latency(1, m::source::local).count() == 1);
}

TEST_CASE("error kinds: counted by index, out of range ignored", "[metrics]") {
  m::sidecar_metrics metrics(test_labels());
  metrics.count_error(1);
  metrics.count_error(1, 2);
  metrics.count_error(2);  // no such kind
  CHECK(metrics.errors(0) == 0);
  CHECK(metrics.errors(1) == 3);
}

TEST_CASE("hit ratio over a window, with injected time", "[metrics]") {
  using clock = m::hit_ratio_window::clock;
  const clock::time_point t0{};
  m::hit_ratio_window w(std::chrono::minutes(5), t0);

  CHECK(w.update(t0 + seconds(10), 0, 0) == 0.0);   // no traffic: 0, not NaN
  CHECK(w.update(t0 + seconds(60), 3, 1) == 0.75);  // since start: 3 of 4
  // Misses only from here on: the hits leave once their samples are older than the window.
  CHECK(w.update(t0 + seconds(200), 3, 5) == Approx(3.0 / 8.0));
  CHECK(w.update(t0 + seconds(400), 3, 9) == Approx(0.0));  // base: the sample at 60 s
  CHECK(w.update(t0 + seconds(500), 3, 9) == 0.0);          // base: 200 s, 0 hits 4 misses
  CHECK(w.update(t0 + seconds(700), 13, 9) == 1.0);         // base: 400 s, 10 hits, 0 misses
  // Scrapes further apart than the window: the ratio since the previous scrape.
  CHECK(w.update(t0 + seconds(2000), 14, 12) == 0.25);
}

TEST_CASE("hit ratio history stays bounded under frequent scrapes", "[metrics]") {
  using clock = m::hit_ratio_window::clock;
  m::hit_ratio_window w(std::chrono::minutes(5), clock::time_point{});
  std::uint64_t hits = 0;
  for (int i = 1; i <= 20'000; ++i)
    w.update(clock::time_point{} + std::chrono::milliseconds(100 * i), ++hits, 0);
  CHECK(w.stored_samples() <= 302);
}

TEST_CASE("JSON strings: escapes and UTF-8 validation", "[metrics][json]") {
  struct json_case {
    std::string in;
    std::string out;
  };
  const std::vector<json_case> cases{
      {"plain", R"("plain")"},
      {"a\"b\\c/d", R"("a\"b\\c/d")"},
      {"\n\r\t\b\f", R"("\n\r\t\b\f")"},
      {std::string("\x00\x01\x1f\x7f", 4), R"("\u0000\u0001\u001f\u007f")"},
      {"\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "\"\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\""},
      {"\xEF\xBF\xBF\xF4\x8F\xBF\xBF", "\"\xEF\xBF\xBF\xF4\x8F\xBF\xBF\""},  // U+FFFF, U+10FFFF
      {"\xC3", R"("\ufffd")"},                                               // truncated
      {"a\xE2\x82", R"("a\ufffd\ufffd")"},                                   // truncated at the end
      {"\xC0\xAF", R"("\ufffd\ufffd")"},                                     // overlong '/'
      {"\xE0\x80\x80", R"("\ufffd\ufffd\ufffd")"},                           // overlong 3-byte
      {"\xF0\x8F\xBF\xBF", R"("\ufffd\ufffd\ufffd\ufffd")"},                 // overlong 4-byte
      {"\xED\xA0\x80", R"("\ufffd\ufffd\ufffd")"},                           // surrogate
      {"\xF4\x90\x80\x80", R"("\ufffd\ufffd\ufffd\ufffd")"},                 // above U+10FFFF
      {"\xFF\xFEx", R"("\ufffd\ufffdx")"},
      {"\xE2\x28\xA1", R"("\ufffd(\ufffd")"},  // bad continuation
  };
  for (const auto& c : cases) {
    INFO("input bytes: " << c.in.size());
    CHECK(m::json_string(c.in) == c.out);
  }
}

TEST_CASE("readyz body renders the snapshot as escaped JSON", "[metrics][json]") {
  m::health_snapshot s;
  CHECK(m::render_health_json(s, "1.2.3") ==
        R"({"status":"not_ready","version":"1.2.3","upstream":{"state":"starting","up":false,)"
        R"("last_error":"","last_error_at":null,"last_probe_ms":null},)"
        R"("cache":{"mode":"","entries":0,"bytes":0},)"
        R"("fallback":{"active":false}})");

  s.ready = true;
  s.upstream_state = "up";
  s.upstream_up = true;
  s.last_error = "READONLY \"x\"\n\xFF";
  s.last_error_unix_ms = 1796621530123;
  s.last_probe_seconds = 0.000412;
  s.cache_mode = "auto";
  s.fallback_active = true;
  s.cache_entries = 10;
  s.cache_bytes = 2048;
  CHECK(m::render_health_json(s, "1.2.3") ==
        R"({"status":"ready","version":"1.2.3","upstream":{"state":"up","up":true,)"
        R"("last_error":"READONLY \"x\"\n\ufffd","last_error_at":"2026-12-07T05:32:10.123Z",)"
        R"("last_probe_ms":0.412},)"
        R"("cache":{"mode":"auto","entries":10,"bytes":2048},"fallback":{"active":true}})");

  s.last_probe_seconds = std::numeric_limits<double>::quiet_NaN();
  CHECK(m::render_health_json(s, "v").find(R"("last_probe_ms":null)") != std::string::npos);
}

TEST_CASE("exporter serves /metrics with exact series and values", "[metrics][exporter]") {
  m::sidecar_metrics metrics(test_labels());
  m::exporter exporter(metrics);
  std::string error;
  REQUIRE(exporter.start("127.0.0.1", 0, error));
  REQUIRE(exporter.port() != 0);
  // Before the first set_cache_mode, no mode is claimed.
  std::size_t modes = 0;
  for (const auto& [series, value] : parse_samples(http_get(exporter.port(), "/metrics").body)) {
    if (!series.starts_with("redis_sidecar_cache_mode{")) continue;
    ++modes;
    CHECK(value == 0);
  }
  CHECK(modes == metrics.cache_modes().size());

  metrics[m::counter_id::requests].inc(7);
  metrics[m::counter_id::cache_hits].inc(3);
  metrics[m::counter_id::cache_misses].inc(1);
  metrics[m::gauge_id::client_connections].set(2);
  metrics[m::gauge_id::upstream_probe_duration].set(1'500'000);  // ns
  metrics.count_error(1, 4);
  metrics.set_cache_mode(2);
  const std::size_t get = metrics.command_index("get");
  metrics.observe(get, m::source::cache, microseconds(8));
  metrics.observe(get, m::source::cache, microseconds(20));
  metrics.observe(get, m::source::cache, microseconds(700));
  metrics.observe(get, m::source::upstream, seconds(20));

  const auto r = http_get(exporter.port(), "/metrics");
  REQUIRE(r.status == 200);
  const auto samples = parse_samples(r.body);
  CHECK(samples.at("redis_sidecar_requests_total") == 7);
  CHECK(samples.at("redis_sidecar_cache_hits_total") == 3);
  CHECK(samples.at("redis_sidecar_cache_misses_total") == 1);
  CHECK(samples.at("redis_sidecar_cache_evictions_total") == 0);
  CHECK(samples.at("redis_sidecar_client_connections") == 2);
  CHECK(samples.at("redis_sidecar_upstream_probe_duration_seconds") == Approx(0.0015));
  CHECK(samples.at("redis_sidecar_cache_hit_ratio") == 0.75);
  CHECK(samples.at(R"(redis_sidecar_errors_total{kind="protocol"})") == 0);
  CHECK(samples.at(R"(redis_sidecar_errors_total{kind="auth"})") == 4);
  CHECK(samples.at(R"(redis_sidecar_cache_mode{mode="auto"})") == 0);
  CHECK(samples.at(R"(redis_sidecar_cache_mode{mode="off"})") == 1);
  CHECK(samples.at(R"(redis_sidecar_build_info{version="1.2.3"})") == 1);

  // Cumulative buckets: 8us and 20us and 700us.
  CHECK(samples.at(bucket("get", "cache", "1e-05")) == 1);
  CHECK(samples.at(bucket("get", "cache", "2.5e-05")) == 2);
  CHECK(samples.at(bucket("get", "cache", "0.0005")) == 2);
  CHECK(samples.at(bucket("get", "cache", "0.001")) == 3);
  CHECK(samples.at(bucket("get", "cache", "+Inf")) == 3);
  CHECK(samples.at(
            R"(redis_sidecar_request_duration_seconds_count{command="get",source="cache"})") == 3);
  CHECK(samples.at(R"(redis_sidecar_request_duration_seconds_sum{command="get",source="cache"})") ==
        Approx(0.000728));
  CHECK(samples.at(bucket("get", "upstream", "10")) == 0);
  CHECK(samples.at(bucket("get", "upstream", "+Inf")) == 1);

  // Only the two observed (command, source) series exist: 20 buckets + count + sum each.
  CHECK(count_lines_containing(r.body, "redis_sidecar_request_duration_seconds_") ==
        2 * (m::latency_bucket_count + 2));
  CHECK(count_lines_containing(r.body, "command=\"set\"") == 0);
  CHECK(count_lines_containing(r.body, "source=\"fallback\"") == 0);
  // Every declared family is exported (the histogram has observations here).
  auto exported = [&](const m::family_info& f) {
    return r.body.find("# TYPE " + std::string(f.name) + " ") != std::string::npos;
  };
  for (const auto& f : m::counter_families) CHECK(exported(f));
  for (const auto& f : m::gauge_families) CHECK(exported(f));
  for (const auto& f : m::labelled_families) CHECK(exported(f));
  // Nothing but the sidecar's: every sample and every family carries its prefix.
  for (const auto& [series, value] : samples) CHECK(series.starts_with("redis_sidecar_"));
  CHECK(count_lines_containing(r.body, "# TYPE ") ==
        count_lines_containing(r.body, "# TYPE redis_sidecar_"));
  CHECK(r.headers.find("text/plain; version=0.0.4") != std::string::npos);
}

TEST_CASE("exporter: no histogram family before the first observation", "[metrics][exporter]") {
  m::sidecar_metrics metrics(test_labels());
  m::exporter exporter(metrics);
  std::string error;
  REQUIRE(exporter.start("127.0.0.1", 0, error));
  const auto r = http_get(exporter.port(), "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.body.find("redis_sidecar_request_duration_seconds") == std::string::npos);
  CHECK(parse_samples(r.body).at("redis_sidecar_cache_hit_ratio") == 0);
}

TEST_CASE("exporter: /healthz and /readyz", "[metrics][exporter]") {
  m::sidecar_metrics metrics(test_labels());
  m::exporter exporter(metrics);
  std::string error;
  REQUIRE(exporter.start("127.0.0.1", 0, error));

  const auto health = http_get(exporter.port(), "/healthz");
  CHECK(health.status == 200);
  CHECK(health.body == "ok\n");
  CHECK(http_get(exporter.port(), "/healthzz").status == 404);

  const auto before = http_get(exporter.port(), "/readyz");
  CHECK(before.status == 503);
  CHECK(before.headers.find("Content-Type: application/json") != std::string::npos);
  CHECK(before.body == m::render_health_json(m::health_snapshot{}, "1.2.3") + "\n");

  m::health_snapshot s;
  s.ready = true;
  s.upstream_state = "up";
  s.upstream_up = true;
  s.last_error = "tab\there \"quoted\"";
  s.last_probe_seconds = 0.002;
  s.cache_mode = "fallback";
  s.cache_entries = 3;
  s.cache_bytes = 300;
  exporter.publish(s);
  const auto after = http_get(exporter.port(), "/readyz");
  CHECK(after.status == 200);
  CHECK(after.body ==
        R"({"status":"ready","version":"1.2.3","upstream":{"state":"up","up":true,)"
        R"("last_error":"tab\there \"quoted\"","last_error_at":null,"last_probe_ms":2.000},)"
        R"("cache":{"mode":"fallback","entries":3,"bytes":300},"fallback":{"active":false}})"
        "\n");

  const auto head = http_get(exporter.port(), "/readyz", "HEAD");
  CHECK(head.status == 200);
  CHECK(head.body.empty());

  s.ready = false;
  exporter.publish(s);
  CHECK(http_get(exporter.port(), "/readyz").status == 503);
}

TEST_CASE("exporter: start-up errors are messages, not exceptions", "[metrics][exporter]") {
  m::sidecar_metrics metrics(test_labels());
  m::exporter first(metrics);
  std::string error;
  REQUIRE(first.start("127.0.0.1", 0, error));
  const auto port = std::to_string(first.port());

  m::exporter second(metrics);
  CHECK_FALSE(second.start("127.0.0.1", first.port(), error));
  CHECK(error.find("cannot serve metrics on 127.0.0.1:" + port) == 0);
  CHECK(error.find("Address already in use") != std::string::npos);
  CHECK(second.port() == 0);

  CHECK_FALSE(first.start("127.0.0.1", 0, error));  // already serving
  CHECK(error.find("already serving") != std::string::npos);

  m::exporter bad(metrics);
  CHECK_FALSE(bad.start("not-an-address", 0, error));
  CHECK(error ==
        "cannot serve metrics on not-an-address:0: not an IP address (names are not "
        "resolved)");
  CHECK_FALSE(bad.start("127.0.0.300", 0, error));
  CHECK(error.find("cannot serve metrics on 127.0.0.300:0: not an IP address") == 0);

  // IPv6 works if the HTTP server was built with it, else says so.
  m::exporter v6(metrics);
  if (!v6.start("::1", 0, error)) CHECK(error.find("no IPv6 support") != std::string::npos);
}

TEST_CASE("exporter: stop closes the port, start serves again", "[metrics][exporter]") {
  m::sidecar_metrics metrics(test_labels());
  m::exporter exporter(metrics);
  std::string error;
  REQUIRE(exporter.start("127.0.0.1", 0, error));
  const auto port = exporter.port();
  exporter.stop();
  CHECK(exporter.port() == 0);
  CHECK(http_get(port, "/healthz").status == 0);  // connection refused
  REQUIRE(exporter.start("127.0.0.1", 0, error));
  CHECK(http_get(exporter.port(), "/healthz").status == 200);
}

TEST_CASE("exporter: scrapes during updates see monotonic counters", "[metrics][exporter]") {
  m::sidecar_metrics metrics(test_labels());
  m::exporter exporter(metrics);
  std::string error;
  REQUIRE(exporter.start("127.0.0.1", 0, error));
  std::vector<double> seen;
  std::thread scraper([&] {
    for (int i = 0; i < 20; ++i) {
      const auto r = http_get(exporter.port(), "/metrics");
      if (r.status == 200) seen.push_back(parse_samples(r.body).at("redis_sidecar_requests_total"));
    }
  });
  for (int i = 0; i < 200'000; ++i) {
    metrics[m::counter_id::requests].inc();
    metrics.observe(0, m::source::cache, microseconds(i % 50));
  }
  scraper.join();
  REQUIRE(seen.size() == 20);
  for (std::size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] >= seen[i - 1]);
  const auto last = parse_samples(http_get(exporter.port(), "/metrics").body);
  CHECK(last.at("redis_sidecar_requests_total") == 200'000);
  CHECK(last.at(bucket("get", "cache", "+Inf")) == 200'000);
}
