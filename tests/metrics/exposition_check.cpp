// metrics_exposition_check: starts an exporter on 127.0.0.1 (free port) with every metric family
// populated, scrapes /metrics over loopback and prints the body on stdout for
// `promtool check metrics` (see check.sh). Exit status 1 if the scrape fails.
#include <chrono>
#include <cstdio>
#include <string>

#include "metrics/exporter.hpp"
#include "metrics/sidecar_metrics.hpp"
#include "tests/metrics/http_get.hpp"

namespace m = redis_sidecar::metrics;

namespace {

void populate(m::sidecar_metrics& metrics) {
  for (std::size_t i = 0; i < m::counter_families.size(); ++i)
    metrics[static_cast<m::counter_id>(i)].inc(i + 1);
  for (std::size_t i = 0; i < m::gauge_families.size(); ++i)
    if (static_cast<m::gauge_id>(i) != m::gauge_id::start_time)
      metrics[static_cast<m::gauge_id>(i)].set(static_cast<std::int64_t>(i));
  metrics[m::gauge_id::upstream_probe_duration].set(420'000);  // 420us
  for (std::size_t k = 0; k < metrics.error_kinds().size(); ++k) metrics.count_error(k, k);
  metrics.set_cache_mode(1);
  using std::chrono::microseconds;
  metrics.observe(metrics.command_index("get"), m::source::cache, microseconds(7));
  metrics.observe(metrics.command_index("get"), m::source::upstream, microseconds(900));
  metrics.observe(metrics.command_index("set"), m::source::fallback, microseconds(30));
  metrics.observe(metrics.command_index("ping"), m::source::local, microseconds(3));
  metrics.observe(metrics.command_index("nosuch"), m::source::upstream, 12.0);
}

}  // namespace

int main() {
  m::sidecar_metrics metrics({{"get", "set", "ping"},
                              {"protocol", "max_clients", "upstream_timeout"},
                              {"auto", "fallback", "off"},
                              "0.0.0-check"});
  populate(metrics);
  m::exporter exporter(metrics);
  std::string error;
  if (!exporter.start("127.0.0.1", 0, error)) {
    std::fprintf(stderr, "metrics_exposition_check: %s\n", error.c_str());
    return 1;
  }
  const auto r = redis_sidecar::test::http_get(exporter.port(), "/metrics");
  if (r.status != 200) {
    std::fprintf(stderr, "metrics_exposition_check: GET /metrics answered %d\n", r.status);
    return 1;
  }
  std::fwrite(r.body.data(), 1, r.body.size(), stdout);
  return 0;
}
