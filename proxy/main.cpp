// redis-sidecar: a local Redis endpoint for apps, forwarding to a remote (usually TLS) Redis over a
// small pool of connections. main() turns configuration into a running server and exit codes:
// 0 after a clean shutdown, 2 for bad configuration or a failed start.
#include <cstdio>
#include <exception>
#include <iostream>

#include "proxy/asio.hpp"
#include "proxy/config/config.hpp"
#include "proxy/log.hpp"
#include "proxy/server.hpp"

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
  if (cfg.check_config) {
    std::printf("configuration OK: upstream %s\n", cfg.upstream.masked().c_str());
    return 0;
  }

  rs::asio::io_context io(1);
  rs::server srv(io, cfg, tls ? &*tls : nullptr);
  std::string error;
  if (!srv.listen(error)) {
    rs::log::error(error);
    return 2;
  }
  srv.start();
  const std::string where = cfg.listen.unix_path.empty()
                                ? cfg.listen.host + ":" + std::to_string(srv.port())
                                : "unix:" + cfg.listen.unix_path;
  rs::log::info(std::string("redis-sidecar ") + REDIS_SIDECAR_VERSION + " listening on " + where +
                ", upstream " + cfg.upstream.masked() + " (from " + cfg.upstream_source + ")");

  rs::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](rs::error_code ec, int sig) {
    if (ec) return;
    rs::log::info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                  ": draining in-flight requests");
    rs::asio::co_spawn(
        io,
        [&]() -> rs::awaitable<void> {
          co_await srv.shutdown(std::chrono::milliseconds(cfg.command_timeout_ms));
          io.stop();
        },
        rs::asio::detached);
  });
  io.run();
  rs::log::info("stopped");
  return 0;
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
    rs::log::level lvl;
    if (rs::log::parse_level(cfg.log_level, lvl)) rs::log::set_level(lvl);
    return run(cfg);
  } catch (const std::exception& e) {  // start-up only: the data plane does not throw
    std::cerr << "redis-sidecar: " << e.what() << '\n';
    return 2;
  }
}
