// Observability end to end: the sidecar's /metrics, /healthz and /readyz through each upstream
// state, gauges of active things back to 0 when traffic stops, and a real Prometheus server
// scraping the sidecar and answering queries through its HTTP API.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/integration/common.hpp"
#include "tests/metrics/http_get.hpp"
#include "tests/support/tcp_relay.hpp"

namespace redis_sidecar::test {
namespace {

const std::vector<std::string> quick = {"--fallback-after-ms=200", "--health-probe-interval-ms=50",
                                        "--health-probe-timeout-ms=200", "--connect-timeout-ms=300",
                                        "--reconnect-max-ms=200"};

// The value of an unlabelled series (or one with exactly `labels`) in an exposition; -1 if absent.
double sample(const std::string& text, const std::string& name, const std::string& labels = "") {
  const std::string head = labels.empty() ? name + " " : name + "{" + labels + "} ";
  const auto pos = text.find("\n" + head);
  if (pos == std::string::npos) return -1;
  return std::atof(text.c_str() + pos + 1 + head.size());
}

std::string metrics_text(const proxied& env) {
  return "\n" + http_get(env.side->metrics_port(), "/metrics").body;
}

bool metric_becomes(const proxied& env, const std::string& name, double value) {
  return eventually([&] { return sample(metrics_text(env), name) == value; });
}

// Prometheus' instant query result for `expr`: the first sample's value, or nullopt.
std::optional<double> prom_query(std::uint16_t port, const std::string& expr) {
  std::string q;
  for (char c : expr) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_')
      q += c;
    else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      q += buf;
    }
  }
  const auto r = http_get(port, "/api/v1/query?query=" + q);
  static const std::regex value(R"re("value":\[[0-9.]+,"([^"]+)"\])re");
  std::smatch m;
  if (r.status != 200 || !std::regex_search(r.body, m, value)) return std::nullopt;
  return std::atof(m[1].str().c_str());
}

// Waits until /readyz on `port` reports the upstream in `state` ("healthy", "fallback", ...).
bool readyz_state_becomes(std::uint16_t port, const std::string& state) {
  const std::string needle = R"("state":")" + state + R"(")";
  return eventually(
      [&] { return http_get(port, "/readyz").body.find(needle) != std::string::npos; });
}

// A loopback port whose connections the kernel completes, and nobody ever reads or answers.
struct mute_listener {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // not in the sidecar: close() closes
  std::uint16_t port = 0;
  mute_listener() {
    sockaddr_in a = loopback_address(0);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t n = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) == 0);
    port = ntohs(a.sin_port);
  }
  /// Closing the listener resets the connections it holds: a handshake waiting there fails.
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  ~mute_listener() { close(); }
  mute_listener(const mute_listener&) = delete;
  mute_listener& operator=(const mute_listener&) = delete;
};

}  // namespace

TEST_CASE("healthz and readyz in each upstream state", "[observability]") {
  SIDECAR_ONLY();
  proxied env({}, quick);
  const auto port = env.side->metrics_port();
  REQUIRE(eventually([&] { return http_get(port, "/readyz").status == 200; }));
  auto ready = http_get(port, "/readyz");
  CHECK(ready.body.find(R"("status":"ready")") != std::string::npos);
  CHECK(ready.body.find(R"("state":"healthy")") != std::string::npos);
  CHECK(http_get(port, "/healthz").status == 200);

  env.redis.kill();
  // In fallback the sidecar still answers clients (from L1): ready, with the state and the cause.
  REQUIRE(readyz_state_becomes(port, "fallback"));
  ready = http_get(port, "/readyz");
  CHECK(ready.status == 200);
  CHECK(ready.body.find(R"("fallback":{"active":true})") != std::string::npos);
  CHECK(ready.body.find("Connection refused") != std::string::npos);
  CHECK(http_get(port, "/healthz").status == 200);
  env.redis.start();
  REQUIRE(readyz_state_becomes(port, "healthy"));
}

TEST_CASE("readyz is 503 and the upstream not up until the upstream first answers",
          "[observability]") {
  SIDECAR_ONLY();
  {
    // An upstream that accepts connections but never answers the TLS handshake, and deadlines
    // longer than the test: the sidecar is still connecting when asked. Then the listener goes,
    // resetting the handshake, and the sidecar fails into fallback without ever reaching it.
    mute_listener mute;
    std::vector<std::string> args = quick;
    args.insert(args.end(), {"--upstream", "rediss://127.0.0.1:" + std::to_string(mute.port),
                             "--tls-ca-file", test_certificates().ca_crt,
                             "--connect-timeout-ms=600000", "--health-probe-timeout-ms=600000"});
    sidecar side(args);
    REQUIRE(side.running());
    const auto port = side.metrics_port();
    // ("starting" until the sidecar first publishes its health, then "connecting".)
    REQUIRE(readyz_state_becomes(port, "connecting"));
    auto r = http_get(port, "/readyz");
    CHECK(r.status == 503);
    CHECK(r.body.find(R"("state":"connecting","up":false)") != std::string::npos);
    CHECK(sample("\n" + http_get(port, "/metrics").body, "redis_sidecar_upstream_up") == 0);
    mute.close();
    REQUIRE(readyz_state_becomes(port, "fallback"));
    r = http_get(port, "/readyz");
    CHECK(r.status == 503);
    CHECK(r.body.find(R"("status":"not_ready")") != std::string::npos);
    CHECK(r.body.find(R"("last_error":"")") == std::string::npos);      // the cause is shown
    CHECK(r.body.find(R"("last_error_at":"20)") != std::string::npos);  // and when it came
  }
  // An upstream down at start: the app is answered from L1 meanwhile, and the sidecar is ready
  // once the upstream answers.
  redis_server redis;
  redis.kill();
  std::vector<std::string> args = quick;
  args.insert(args.end(), {"--upstream", redis.url()});
  sidecar side(args);
  REQUIRE(side.running());
  const auto port = side.metrics_port();
  REQUIRE(readyz_state_becomes(port, "fallback"));
  CHECK(http_get(port, "/readyz").status == 503);
  CHECK(is_nil(connect(side.port()).get(), {"GET", "k"}));
  redis.start();
  REQUIRE(eventually([&] { return http_get(port, "/readyz").status == 200; }));
  CHECK(readyz_state_becomes(port, "healthy"));
}

TEST_CASE("readyz is 503 when the upstream is down and the cache is off", "[observability]") {
  SIDECAR_ONLY();
  proxied env({}, {"--cache-mode=off", "--fallback-after-ms=200", "--health-probe-interval-ms=50"});
  const auto port = env.side->metrics_port();
  REQUIRE(eventually([&] { return http_get(port, "/readyz").status == 200; }));
  env.redis.kill();
  REQUIRE(eventually([&] { return http_get(port, "/readyz").status == 503; }));
  CHECK(http_get(port, "/readyz").body.find(R"("status":"not_ready")") != std::string::npos);
  CHECK(http_get(port, "/healthz").status == 200);
}

TEST_CASE("gauges of active things return to 0, counters count", "[observability]") {
  SIDECAR_ONLY();
  proxied env({}, quick);
  {
    std::vector<context_ptr> clients;
    for (int i = 0; i < 20; ++i) clients.push_back(env.client());
    for (auto& c : clients) CHECK(str(c.get(), {"SET", "k", "v"}) == "OK");
    REQUIRE(metric_becomes(env, "redis_sidecar_client_connections", 20));
    // A blocked client is in flight.
    REQUIRE(send_only(clients[0].get(), {"BLPOP", "q", "0"}));
    CHECK(metric_becomes(env, "redis_sidecar_inflight_requests", 1));
  }
  CHECK(metric_becomes(env, "redis_sidecar_client_connections", 0));
  CHECK(metric_becomes(env, "redis_sidecar_inflight_requests", 0));
  const auto text = metrics_text(env);
  CHECK(sample(text, "redis_sidecar_requests_total") >= 21);
  CHECK(sample(text, "redis_sidecar_request_duration_seconds_count",
               R"(command="set",source="upstream")") == 20);
  CHECK(sample(text, "redis_sidecar_upstream_up") == 1);
  CHECK(sample(text, "redis_sidecar_cache_entries") == 1);
  CHECK(sample(text, "redis_sidecar_build_info", R"(version=")" REDIS_SIDECAR_VERSION R"(")") == 1);
}

// Connections to the metrics port that send nothing (a port scan, a stuck client) each hold one
// of the HTTP server's threads until its request timeout. With 2 threads and 10 s, two such
// connections left /healthz unanswered for 10 s, so a kubelet's liveness probe (1 s timeout)
// failed and the pod restarted. 6 of them now leave /healthz and /metrics answered at once.
TEST_CASE("idle connections to the metrics port do not hold up /healthz", "[observability]") {
  SIDECAR_ONLY();
  proxied env({}, quick);
  std::vector<int> idle;
  for (int i = 0; i < 6; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    const sockaddr_in addr = loopback_address(env.side->metrics_port());
    REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    idle.push_back(fd);
  }
  // http_get() gives up after 5 s without an answer.
  CHECK(http_get(env.side->metrics_port(), "/healthz").status == 200);
  CHECK(http_get(env.side->metrics_port(), "/metrics").status == 200);
  for (const int fd : idle) ::close(fd);
}

// A request behind the client's in-flight replies (a GET that misses L1 while a SET is
// upstream, CLIENT LIST after a script) waits for them and is handled again: counted once, in
// requests and hits or misses, and its latency counts from its arrival, through the wait.
TEST_CASE("a request handled again after a wait is counted once, timed from its arrival",
          "[observability]") {
  SIDECAR_ONLY();
  proxied env({}, quick);
  // L1 answers once auto mode has settled (before, GETs are neither hits nor misses); the
  // metrics are taken every 50 ms (--health-probe-interval-ms): what the start-up's own requests
  // counted shows by then.
  REQUIRE(
      eventually([&] { return metric(env, R"(redis_sidecar_cache_mode{mode="tracking"})") == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto before = metrics_text(env);
  raw_client raw(env.port());
  std::string pipeline;
  for (int i = 0; i < 10; ++i)
    pipeline +=
        "*2\r\n$4\r\nINCR\r\n$1\r\ni\r\n*2\r\n$3\r\nGET\r\n$2\r\nm" + std::to_string(i) + "\r\n";
  raw.send(pipeline);
  for (int i = 0; i < 10; ++i) {
    CHECK(read_value(raw) == ":" + std::to_string(i + 1) + "\r\n");
    CHECK(read_value(raw) == "$-1\r\n");
  }
  // The metrics are taken at the monitor's ticks: wait for one past the replies (a count above
  // 20 would never come down to it).
  std::string after;
  CHECK(eventually([&] {
    after = metrics_text(env);
    return sample(after, "redis_sidecar_requests_total") -
               sample(before, "redis_sidecar_requests_total") >=
           20;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // any late count shows
  after = metrics_text(env);
  CHECK(sample(after, "redis_sidecar_requests_total") -
            sample(before, "redis_sidecar_requests_total") ==
        20);
  CHECK(sample(after, "redis_sidecar_cache_misses_total") +
            sample(after, "redis_sidecar_cache_hits_total") -
            sample(before, "redis_sidecar_cache_misses_total") -
            sample(before, "redis_sidecar_cache_hits_total") ==
        10);
  // A script that keeps Redis busy for 300 ms, CLIENT LIST behind it: the client waits as long
  // for CLIENT LIST's reply, and so does its histogram (only a lower bound: nothing is timed).
  const std::string busy =
      "local s=redis.call('TIME') local e=s[1]*1000000+s[2]+300000 while true do local "
      "n=redis.call('TIME') if n[1]*1000000+n[2]>=e then break end end return 1";
  raw.send("*3\r\n$4\r\nEVAL\r\n$" + std::to_string(busy.size()) + "\r\n" + busy +
           "\r\n$1\r\n0\r\n*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n");
  CHECK(read_value(raw) == ":1\r\n");
  CHECK(read_value(raw).starts_with("$"));
  CHECK(eventually([&] {
    return sample(metrics_text(env), "redis_sidecar_request_duration_seconds_sum",
                  R"(command="client",source="local")") >= 0.3;
  }));
}

// 50 clients' requests that are all ready at once (they arrive while the sidecar is stopped) are
// read in turns of its event loop of at most turn_policy::max_handlers handlers (16: 4 turns), and
// each turn's requests leave in one write: each client, having nothing in flight, joins the shared
// connection whose write is already forming. Waking a writer per request would make it about 50;
// a write per pooled connection and turn, 8. The clients connect, and are accepted, before the
// sidecar stops: accepts spread over two turns would split the batch for a reason of their own.
// (Health probes write on connections of the monitor's own, which this counter leaves out.)
// The second round comes after lone requests, one at a time, each of which had a turn of its
// own: the burst after them is read in the same few turns.
TEST_CASE("requests ready in the same turn share one upstream write", "[observability]") {
  SIDECAR_ONLY();
  proxied env({}, {"--cache-mode=fallback", "--health-probe-interval-ms=300"});
  REQUIRE(str(env.client().get(), {"SET", "k", "v"}) == "OK");
  constexpr int clients = 50;
  std::vector<std::unique_ptr<raw_client>> raw;
  for (int i = 0; i < clients; ++i) raw.push_back(std::make_unique<raw_client>(env.side->port()));
  REQUIRE(metric_becomes(env, "redis_sidecar_client_connections", clients));
  REQUIRE(
      eventually([&] { return sample(metrics_text(env), "redis_sidecar_requests_total") >= 1; }));
  const auto before = metrics_text(env);
  const double writes_before = sample(before, "redis_sidecar_upstream_writes_total");
  const double requests_before = sample(before, "redis_sidecar_requests_total");
  REQUIRE(writes_before >= 1);

  const std::string get = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
  auto burst = [&](double requests_from, double writes_from) {
    REQUIRE(env.side->stop());
    for (auto& c : raw) c->send(get);
    REQUIRE(env.side->resume());
    for (auto& c : raw) CHECK(c->read_exact(7) == "$1\r\nv\r\n");
    std::string after;
    REQUIRE(eventually([&] {
      after = metrics_text(env);
      return sample(after, "redis_sidecar_requests_total") >= requests_from + clients;
    }));
    return sample(after, "redis_sidecar_upstream_writes_total") - writes_from;
  };
  // One write per turn.
  constexpr int max_handlers = 16;  // turn_policy::max_handlers (proxy/event_loop.hpp)
  constexpr int turns = (clients + max_handlers - 1) / max_handlers;
  const double writes = burst(requests_before, writes_before);
  INFO("upstream writes for " << clients << " requests: " << writes);
  CHECK(writes <= turns);

  for (int i = 0; i < 20; ++i) {
    raw[0]->send(get);
    REQUIRE(raw[0]->read_exact(7) == "$1\r\nv\r\n");
  }
  std::string quiet;
  REQUIRE(eventually([&] {
    quiet = metrics_text(env);
    return sample(quiet, "redis_sidecar_requests_total") >= requests_before + clients + 20;
  }));
  const double after_quiet = burst(sample(quiet, "redis_sidecar_requests_total"),
                                   sample(quiet, "redis_sidecar_upstream_writes_total"));
  INFO("after lone requests, upstream writes for " << clients << " requests: " << after_quiet);
  CHECK(after_quiet <= turns);
}

// A small upstream write waits while the connection's previous write, of a few requests at least,
// is unanswered, where the upstream's round trip is short (--write-hold-rtt-us, write_hold.hpp):
// Redis is paused, so the first client's 4 pipelined GETs stay unanswered, and the GETs two other
// clients send one after the other leave together when their replies come. Without holding each
// leaves in a write of its own. One pooled connection, so that every request goes on the same one.
TEST_CASE("requests that come while an upstream reply is due share one held write",
          "[observability]") {
  SIDECAR_ONLY();
  const bool hold = GENERATE(true, false);
  INFO((hold ? "holding" : "holding off"));
  // A limit of 100 ms: a loopback round trip is under it however busy the machine is.
  proxied env({}, {"--cache-mode=off", "--pool-size=1", "--health-probe-interval-ms=50",
                   "--health-probe-timeout-ms=3000", "--fallback-after-ms=10000",
                   hold ? "--write-hold-rtt-us=100000" : "--write-hold-rtt-us=0"});
  REQUIRE(str(env.client().get(), {"SET", "k", "v"}) == "OK");
  raw_client x(env.side->port()), y(env.side->port()), z(env.side->port());
  const std::string get = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
  for (int i = 0; i < 3; ++i) {  // answered writes sent alone: the round trip is measured
    x.send(get);
    REQUIRE(x.read_exact(7) == "$1\r\nv\r\n");
  }
  auto requests_reach = [&](double n) {
    return eventually([&] { return metric(env, "redis_sidecar_requests_total") >= n; });
  };
  REQUIRE(requests_reach(4));  // the SET and the 3 GETs are published: the counts below are theirs
  const double requests = metric(env, "redis_sidecar_requests_total");
  const double writes = metric(env, "redis_sidecar_upstream_writes_total");
  const double held = metric(env, "redis_sidecar_upstream_held_writes_total");
  REQUIRE(held >= 0);

  auto redis = env.upstream();
  // Redis postpones every client's commands for 1.5 s, its own CLIENT UNPAUSE too.
  REQUIRE(str(redis.get(), {"CLIENT", "PAUSE", "1500", "ALL"}) == "OK");
  constexpr int batch = 4;  // write_hold_policy::min_unanswered (proxy/upstream/write_hold.hpp)
  std::string gets, replies;
  for (int i = 0; i < batch; ++i) {
    gets += get;
    replies += "$1\r\nv\r\n";
  }
  x.send(gets);
  REQUIRE(requests_reach(requests + batch));
  y.send(get);
  REQUIRE(requests_reach(requests + batch + 1));
  z.send(get);
  REQUIRE(requests_reach(requests + batch + 2));
  CHECK(x.read_exact(replies.size()) == replies);
  for (auto* c : {&y, &z}) CHECK(c->read_exact(7) == "$1\r\nv\r\n");

  double writes_now = 0;
  REQUIRE(eventually([&] {
    writes_now = metric(env, "redis_sidecar_upstream_writes_total");
    return writes_now >= writes + (hold ? 2 : 3);
  }));
  CHECK(writes_now - writes == (hold ? 2 : 3));
  CHECK(metric(env, "redis_sidecar_upstream_held_writes_total") - held == (hold ? 1 : 0));
}

// --busy-poll-us: the time spent polling is counted (and only then: off by default).
TEST_CASE("busy polling shows in redis_sidecar_busy_poll_seconds_total", "[observability]") {
  SIDECAR_ONLY();
  proxied polling({}, {"--busy-poll-us=200", "--health-probe-interval-ms=50"});
  proxied sleeping({}, {"--health-probe-interval-ms=50"});
  for (int i = 0; i < 50; ++i) {
    REQUIRE(str(polling.client().get(), {"SET", "k", "v"}) == "OK");
    REQUIRE(str(sleeping.client().get(), {"SET", "k", "v"}) == "OK");
  }
  const char* polled = "redis_sidecar_busy_poll_seconds_total";
  CHECK(eventually([&] { return sample(metrics_text(polling), polled) > 0; }));
  REQUIRE(eventually(
      [&] { return sample(metrics_text(sleeping), "redis_sidecar_requests_total") >= 50; }));
  CHECK(sample(metrics_text(sleeping), polled) == 0);
}

// --nap-us (on by default): after serving several unpipelined clients from L1 in one wake-up,
// the event loop naps instead of waiting for the next request to wake it (nap_policy). A pipelined
// client, whose requests come 16 per read, never makes it nap. Two clients that send their GETs
// back to back, again and again, do once a wake-up finds both; every reply is still right. With
// --nap-us=0 the same traffic never naps.
TEST_CASE("the event loop naps after serving several unpipelined clients from L1",
          "[observability]") {
  SIDECAR_ONLY();
  const bool on = GENERATE(true, false);
  INFO((on ? "--nap-us=10" : "--nap-us=0"));
  proxied env({}, {"--cache-mode=ttl", "--cache-prefix=k", "--cache-ttl=1h",
                   "--health-probe-interval-ms=50", on ? "--nap-us=10" : "--nap-us=0"});
  REQUIRE(str(env.client().get(), {"SET", "k", "v"}) == "OK");
  const char* naps = "redis_sidecar_naps_total";
  const std::string get = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
  const std::string reply = "$1\r\nv\r\n";
  raw_client x(env.side->port()), y(env.side->port());
  auto naps_after = [&](double requests) {
    REQUIRE(eventually(
        [&] { return sample(metrics_text(env), "redis_sidecar_requests_total") >= requests; }));
    return sample(metrics_text(env), naps);
  };

  std::string gets, replies;
  for (int i = 0; i < 16; ++i) {
    gets += get;
    replies += reply;
  }
  for (int i = 0; i < 200; ++i) {
    x.send(gets);
    REQUIRE(x.read_exact(replies.size()) == replies);
  }
  CHECK(naps_after(1 + 16 * 200) == 0);

  auto exchange = [&](int rounds) {
    for (int i = 0; i < rounds; ++i) {
      x.send(get);
      y.send(get);
      REQUIRE(x.read_exact(reply.size()) == reply);
      REQUIRE(y.read_exact(reply.size()) == reply);
    }
  };
  if (on) {
    CHECK(eventually([&] {
      exchange(200);
      return sample(metrics_text(env), naps) > 0;
    }));
  } else {
    exchange(2000);
    CHECK(naps_after(1 + 16 * 200 + 2 * 2000) == 0);
  }
}

// Busy polling stops while its thread waits for a CPU: here a process that never sleeps shares
// the one CPU the sidecar's event loop may run on, so a polling loop spends much of its time
// queued behind it. The stop is counted; the requests are still answered.
TEST_CASE("busy polling backs off while the event loop waits for a CPU", "[observability]") {
  SIDECAR_ONLY();
  proxied env({}, {"--busy-poll-us=200", "--health-probe-interval-ms=50"});
  cpu_set_t allowed, one;
  REQUIRE(::sched_getaffinity(0, sizeof allowed, &allowed) == 0);
  int cpu = 0;
  while (cpu + 1 < CPU_SETSIZE && !CPU_ISSET(cpu, &allowed)) ++cpu;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  // The event loop runs on the sidecar's main thread, whose id is the process id.
  REQUIRE(::sched_setaffinity(env.side->pid(), sizeof one, &one) == 0);
  background_process hog({"taskset", "-c", std::to_string(cpu), "sh", "-c", "while :; do :; done"});
  const char* backoffs = "redis_sidecar_busy_poll_backoffs_total";
  auto client = env.client();
  CHECK(eventually([&] {
    for (int i = 0; i < 200; ++i) REQUIRE(str(client.get(), {"SET", "k", "v"}) == "OK");
    return sample(metrics_text(env), backoffs) > 0;
  }));
  CHECK(str(client.get(), {"GET", "k"}) == "v");
}

// Every new upstream connection offers the TLS session the server issued last: a subscriber's
// dedicated connection resumes instead of exchanging and verifying the certificate again.
TEST_CASE("upstream TLS sessions are resumed by the connections that follow",
          "[observability][tls]") {
  SIDECAR_ONLY();
  const std::string protocol = GENERATE("TLSv1.3", "TLSv1.2");
  INFO("Redis tls-protocols " << protocol);
  redis_options opts;
  opts.tls = true;
  opts.extra = {"tls-protocols \"" + protocol + "\""};
  proxied env(opts, {"--tls-ca-file", test_certificates().ca_crt, "--health-probe-interval-ms=50"});
  auto publisher = env.client();
  REQUIRE(str(publisher.get(), {"SET", "k", "v"}) == "OK");  // the shared pool is up
  for (int i = 0; i < 3; ++i) {
    // Each subscriber gets a dedicated connection of its own, a new handshake.
    auto sub = env.client();
    const std::string ch = "resume-" + std::to_string(i);
    REQUIRE(elements(sub.get(), {"SUBSCRIBE", ch}) ==
            std::vector<std::string>{"subscribe", ch, "1"});
    REQUIRE(integer(publisher.get(), {"PUBLISH", ch, "hello"}) == 1);
    auto message = next_reply(sub.get());
    REQUIRE(message);
    REQUIRE(message->type == REDIS_REPLY_ARRAY);
    REQUIRE(message->elements == 3);
    CHECK(std::string(message->element[2]->str, message->element[2]->len) == "hello");
  }
  const char* handshakes = "redis_sidecar_upstream_tls_handshakes_total";
  const char* resumed = "redis_sidecar_upstream_tls_resumed_total";
  CHECK(eventually([&] { return sample(metrics_text(env), resumed) >= 3; }));
  const auto text = metrics_text(env);
  INFO(text);
  CHECK(sample(text, handshakes) >= 5);  // the 2 shared connections, then 3 dedicated ones
  CHECK(sample(text, resumed) <= sample(text, handshakes));
}

// A restarted Redis has new ticket keys: the session the sidecar kept is declined, the reconnects
// make full handshakes, and the sessions of the new process are resumed from then on.
TEST_CASE("after Redis restarts, the old TLS session is declined and new ones are resumed",
          "[observability][tls]") {
  SIDECAR_ONLY();
  redis_options opts;
  opts.tls = true;
  proxied env(opts, {"--tls-ca-file", test_certificates().ca_crt, "--health-probe-interval-ms=50",
                     "--reconnect-max-ms=200"});
  const char* handshakes = "redis_sidecar_upstream_tls_handshakes_total";
  const char* resumed = "redis_sidecar_upstream_tls_resumed_total";
  auto subscribe_three = [&] {
    for (int i = 0; i < 3; ++i) {
      auto sub = env.client();
      REQUIRE(elements(sub.get(), {"SUBSCRIBE", "ch"}) ==
              std::vector<std::string>{"subscribe", "ch", "1"});
    }
  };
  REQUIRE(str(env.client().get(), {"SET", "k", "v"}) == "OK");
  subscribe_three();
  REQUIRE(eventually([&] { return sample(metrics_text(env), resumed) >= 3; }));
  const double before = sample(metrics_text(env), handshakes);

  env.redis.stop();
  env.redis.start();
  CHECK(eventually([&] {  // errors until the shared connections are back
    auto c = env.client();
    auto r = command(c.get(), {"SET", "k", "v2"});
    return r && r->type == REDIS_REPLY_STATUS && std::string(r->str, r->len) == "OK";
  }));
  const double resumed_after_restart = sample(metrics_text(env), resumed);
  subscribe_three();
  CHECK(eventually([&] {
    return sample(metrics_text(env), resumed) >= resumed_after_restart + 3 &&
           sample(metrics_text(env), handshakes) >= before + 3;
  }));
}

TEST_CASE("a real Prometheus scrapes the sidecar and sees hits, misses and fallback",
          "[observability][prometheus]") {
  SIDECAR_ONLY();
  proxied env({}, quick);
  char tmpl[] = "/tmp/rsit-prom-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const auto prom_port = free_port();
  {
    std::ofstream cfg(dir + "/prometheus.yml");
    cfg << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
           "scrape_configs:\n"
           "  - job_name: redis-sidecar\n"
           "    static_configs: [{targets: ['127.0.0.1:"
        << env.side->metrics_port() << "']}]\n";
  }
  std::optional<double> up, hits, misses, fallback;
  {
    background_process prom({"prometheus", "--config.file=" + dir + "/prometheus.yml",
                             "--storage.tsdb.path=" + dir + "/data",
                             "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)});
    INFO(prom.log());
    REQUIRE(eventually([&] { return (up = prom_query(prom_port, "up")) && *up == 1; },
                       std::chrono::seconds(40)));

    auto c = env.client();
    CHECK(str(c.get(), {"SET", "hot", "1"}) == "OK");
    env.redis.kill();
    REQUIRE(eventually([&] {
      auto cc = connect(env.port());
      return cc && describe(command(cc.get(), {"GET", "hot"}).get()) == "string 1";
    }));
    c = env.client();
    for (int i = 0; i < 5; ++i) CHECK(str(c.get(), {"GET", "hot"}) == "1");  // hits
    for (int i = 0; i < 3; ++i) CHECK(is_nil(c.get(), {"GET", "cold"}));     // misses
    CHECK(eventually(
        [&] {
          return (fallback = prom_query(prom_port, "redis_sidecar_fallback_active")) &&
                 *fallback == 1;
        },
        std::chrono::seconds(20)));
    CHECK(eventually(
        [&] {
          hits = prom_query(prom_port, "redis_sidecar_cache_hits_total");
          misses = prom_query(prom_port, "redis_sidecar_cache_misses_total");
          return hits && misses && *hits >= 5 && *misses >= 3;
        },
        std::chrono::seconds(20)));
    env.redis.start();
    CHECK(eventually(
        [&] {
          return (fallback = prom_query(prom_port, "redis_sidecar_fallback_active")) &&
                 *fallback == 0;
        },
        std::chrono::seconds(20)));
    CHECK(prom_query(prom_port, "redis_sidecar_fallback_transitions_total").value_or(0) == 2);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace redis_sidecar::test
