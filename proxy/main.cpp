// redis-sidecar: a local Redis endpoint for apps, forwarding to a remote (usually TLS) Redis over a
// small pool of connections. main() turns configuration into a running server and exit codes:
// 0 after a clean shutdown, 1 after a shutdown that lost writes accepted during fallback (the
// upstream was not back in time to replay them), 2 for bad configuration or a failed start.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <optional>

#include "metrics/exporter.hpp"
#include "metrics/sidecar_metrics.hpp"
#include "proxy/asio.hpp"
#include "proxy/commands/command_table.hpp"
#include "proxy/config/config.hpp"
#include "proxy/event_loop.hpp"
#include "proxy/log.hpp"
#include "proxy/server.hpp"
#include "proxy/stats.hpp"

namespace rs = redis_sidecar;

namespace {

int run(const rs::config& cfg) {
  std::optional<rs::ssl::context> tls;
  if (cfg.upstream.tls) {
    std::string error;
    tls = rs::make_tls_context(cfg, error);
    if (!tls) {
      rs::log::error(error);
      return 2;
    }
    if (cfg.tls_insecure_skip_verify)
      rs::log::warn(
          "--tls-insecure-skip-verify is on: the upstream certificate is not verified, so the "
          "connection (and the Redis password) can be intercepted");
  }
  for (const std::string& w : rs::unknown_variables(environ)) rs::log::warn(w);
  if (!cfg.upstream.username.empty() && cfg.upstream.password.empty())
    rs::log::warn(
        "the upstream URL names a user but no password, so the sidecar does not authenticate; "
        "for a password alone write redis://:PASSWORD@host (the user name is masked in logs in "
        "case it is one)");
  // Room for --max-clients and the sidecar's own descriptors (listeners, upstream and metrics
  // connections), as far as the hard limit allows, as Redis does for its maxclients.
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    const rlim_t want = static_cast<rlim_t>(cfg.max_clients) + 128;
    if (nofile.rlim_cur < want && nofile.rlim_cur < nofile.rlim_max) {
      nofile.rlim_cur = std::min(want, nofile.rlim_max);
      ::setrlimit(RLIMIT_NOFILE, &nofile);
      ::getrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (nofile.rlim_cur < want)
      rs::log::warn("the open-file limit (" + std::to_string(nofile.rlim_cur) +
                    ") is below --max-clients " + std::to_string(cfg.max_clients) +
                    " plus the sidecar's own 128: clients beyond it are refused; raise it "
                    "(ulimit -n, the container's nofile limit) or lower --max-clients");
  }
  if (cfg.check_config) {
    if (std::string why;
        cfg.metrics_enabled &&
        !rs::metrics::valid_listen_address(cfg.metrics_listen.host, cfg.metrics_listen.port, why)) {
      rs::log::error(why + " (--metrics-listen; 'off' disables it)");
      return 2;
    }
    std::printf("configuration OK: upstream %s\n", cfg.upstream.masked().c_str());
    return 0;
  }

  // Metrics: label values fixed now (command names in table order, so a command's index in the
  // table is its label index), served from --metrics-listen unless it is off.
  rs::metrics::label_sets labels;
  for (const auto& c : rs::commands::all()) labels.commands.emplace_back(c.name);
  for (auto k : rs::error_kind_names) labels.error_kinds.emplace_back(k);
  labels.cache_modes = {"tracking", "keyspace", "ttl", "fallback", "off"};  // the mode in effect
  labels.version = REDIS_SIDECAR_VERSION;
  rs::metrics::sidecar_metrics metrics(std::move(labels));
  std::optional<rs::metrics::exporter> exporter;
  std::string error;
  if (cfg.metrics_enabled) {
    exporter.emplace(metrics);
    if (!exporter->start(cfg.metrics_listen.host, cfg.metrics_listen.port, error)) {
      rs::log::error(error + " (--metrics-listen; 'off' disables it)");
      return 2;
    }
  }

  // One thread runs the io_context and every socket and timer on it, so the reactor need not lock
  // each descriptor's state around every operation (about two uncontended lock/unlock pairs per
  // unpipelined request). The scheduler still locks: the resolver's own thread posts its results.
  rs::asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO);
  rs::server srv(io, cfg, tls ? &*tls : nullptr, metrics, exporter ? &*exporter : nullptr);
  if (!srv.listen(error)) {
    rs::log::error(error);
    return 2;
  }
  srv.start();
  if (exporter)
    rs::log::info("metrics on http://" + cfg.metrics_listen.host + ":" +
                  std::to_string(exporter->port()) + "/metrics (/healthz, /readyz)");
  const std::string where = cfg.listen.unix_path.empty()
                                ? cfg.listen.host + ":" + std::to_string(srv.port())
                                : "unix:" + cfg.listen.unix_path;
  rs::log::info(std::string("redis-sidecar ") + REDIS_SIDECAR_VERSION + " listening on " + where +
                ", upstream " + cfg.upstream.masked() + " (from " + cfg.upstream_source + ")");

  std::size_t lost_writes = 0;
  rs::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](rs::error_code ec, int sig) {
    if (ec) return;
    rs::log::info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                  ": draining in-flight requests");
    rs::asio::co_spawn(
        io,
        [&]() -> rs::awaitable<void> {
          lost_writes = co_await srv.shutdown(std::chrono::milliseconds(cfg.command_timeout_ms));
          io.stop();
        },
        rs::asio::detached);
  });
  // Signals whose default action ends the process without a word: a stray `kill -HUP` (a
  // supervisor's reload, a closed terminal) must not drop the writes the fallback journal holds.
  rs::asio::signal_set ignored(io, SIGHUP, SIGUSR1, SIGUSR2);
  std::function<void(rs::error_code, int)> ignore = [&](rs::error_code ec, int sig) {
    if (ec) return;
    const char* name = sig == SIGHUP ? "SIGHUP" : sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2";
    rs::log::info(std::string("received ") + name +
                  ": ignored (there is nothing to reload; SIGTERM stops the sidecar)");
    ignored.async_wait(ignore);
  };
  ignored.async_wait(ignore);
  rs::event_loop::run(io, std::chrono::microseconds(cfg.busy_poll_us), &srv.counters(),
                      std::chrono::microseconds(cfg.nap_us));
  rs::log::info("stopped");
  return lost_writes > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    ::signal(SIGPIPE, SIG_IGN);
    rs::config cfg;
    std::string message;
    switch (rs::parse_config(argc, argv, cfg, message)) {
      case rs::parse_outcome::exit_ok: std::cout << message << '\n'; return 0;
      case rs::parse_outcome::exit_error:
        std::cerr << "redis-sidecar: " << message << '\n';
        return 2;
      case rs::parse_outcome::run: break;
    }
    rs::hide_secret_flags(argc, argv);
    rs::log::level lvl;
    if (rs::log::parse_level(cfg.log_level, lvl)) rs::log::set_level(lvl);
    rs::log::format fmt;
    if (rs::log::parse_format(cfg.log_format, fmt)) rs::log::set_format(fmt);
    return run(cfg);
  } catch (const std::exception& e) {  // start-up only: the data plane does not throw
    std::cerr << "redis-sidecar: " << e.what() << '\n';
    return 2;
  }
}
