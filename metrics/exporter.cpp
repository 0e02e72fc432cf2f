#include "metrics/exporter.hpp"

#include <CivetServer.h>
#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "metrics/collector.hpp"

namespace redis_sidecar::metrics {

namespace detail {

struct exporter_state {
  explicit exporter_state(const sidecar_metrics& m) : metrics(m), collector(make_collector(m)) {}

  const sidecar_metrics& metrics;
  std::shared_ptr<prometheus::Collectable> collector;
  std::mutex mutex;                              // guards snapshot
  health_snapshot snapshot;                      // the latest published
  std::unique_ptr<prometheus::Exposer> exposer;  // null when not serving
  std::uint16_t port = 0;
  std::string host;  // as given to start(), for waking the accept loop at stop()
};

}  // namespace detail

namespace {

// prometheus-cpp owns the civetweb server and offers no way to add a handler that sets its own
// status code; it does pass civetweb callbacks through. civetweb calls init_context on the thread
// constructing the server, before it serves any request, so that callback registers /healthz and
// /readyz on the new context with the state as handler data. The callbacks carry no user pointer,
// hence this thread_local, set only while start() constructs the Exposer.
struct start_context {
  detail::exporter_state* state;
  std::string error;  // civetweb's first log message: the precise cause of a failed start
};
thread_local start_context* starting = nullptr;

int send(mg_connection* conn, int status, const char* content_type, const std::string& body) {
  const std::string length = std::to_string(body.size());
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", content_type, -1);
  mg_response_header_add(conn, "Content-Length", length.c_str(), -1);
  mg_response_header_add(conn, "Cache-Control", "no-store", -1);
  mg_response_header_send(conn);
  const mg_request_info* request = mg_get_request_info(conn);
  if (request == nullptr || std::strcmp(request->request_method, "HEAD") != 0)
    mg_write(conn, body.data(), body.size());
  return status;
}

int serve_healthz(mg_connection* conn, void*) {
  return send(conn, 200, "text/plain; charset=utf-8", "ok\n");
}

int serve_readyz(mg_connection* conn, void* data) {
  auto* state = static_cast<detail::exporter_state*>(data);
  health_snapshot copy;
  {
    std::lock_guard lock(state->mutex);
    copy = state->snapshot;
  }
  return send(conn, copy.ready ? 200 : 503, "application/json",
              render_health_json(copy, state->metrics.version()) + "\n");
}

// The sidecar's families only: prometheus-cpp's own /metrics handler would add its exposer_*
// families (unprefixed, and summaries reading NaN before the first scrape).
int serve_metrics(mg_connection* conn, void* data) {
  auto* state = static_cast<detail::exporter_state*>(data);
  std::string body;
  try {
    body = prometheus::TextSerializer().Serialize(state->collector->Collect());
  } catch (const std::exception& e) {
    return send(conn, 500, "text/plain; charset=utf-8", std::string(e.what()) + "\n");
  }
  return send(conn, 200, "text/plain; version=0.0.4; charset=utf-8", body);
}

void on_init_context(const mg_context* ctx) {
  if (starting == nullptr) return;
  // The context is being set up by this very thread; civetweb declares it const here only
  // because the callback is meant for observation.
  auto* mutable_ctx = const_cast<mg_context*>(ctx);
  mg_set_request_handler(mutable_ctx, "/metrics$", serve_metrics, starting->state);
  mg_set_request_handler(mutable_ctx, "/healthz$", serve_healthz, starting->state);
  mg_set_request_handler(mutable_ctx, "/readyz$", serve_readyz, starting->state);
}

int on_log_message(const mg_connection*, const char* message) {
  if (starting != nullptr && starting->error.empty() && message != nullptr)
    starting->error = message;
  return 1;  // civetweb logs nowhere else (no error_log_file)
}

const CivetCallbacks& callbacks() {
  static const CivetCallbacks cb = [] {
    CivetCallbacks c;
    c.init_context = on_init_context;
    c.log_message = on_log_message;
    return c;
  }();
  return cb;
}

// civetweb's listening_ports syntax: "ADDR:PORT", "[V6ADDR]:PORT", or "PORT" for every address.
bool listening_spec(const std::string& host, std::uint16_t port, std::string& spec,
                    std::string& error) {
  if (host.find(':') == std::string::npos) {
    spec = host.empty() ? std::to_string(port) : host + ":" + std::to_string(port);
    in_addr ignored{};
    if (host.empty() || ::inet_pton(AF_INET, host.c_str(), &ignored) == 1) return true;
    error = "cannot serve metrics on " + spec + ": not an IP address (names are not resolved)";
    return false;
  }
  spec = "[" + host + "]:" + std::to_string(port);
  if (mg_check_feature(8) != 0) return true;  // 8: IPv6 support
  error = "cannot serve metrics on " + spec +
          ": this build's HTTP server has no IPv6 support; use an IPv4 address";
  return false;
}

}  // namespace

bool valid_listen_address(const std::string& host, std::uint16_t port, std::string& error) {
  std::string spec;
  return listening_spec(host, port, spec, error);
}

namespace {

// Opens and at once closes a TCP connection to host:port (IPv4; the wildcard means loopback).
void poke(const std::string& host, std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  const bool wildcard = host.empty() || host == "0.0.0.0";
  if (::inet_pton(AF_INET, wildcard ? "127.0.0.1" : host.c_str(), &addr.sin_addr) != 1) return;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  (void)::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  ::close(fd);
}

struct starting_guard {
  explicit starting_guard(start_context& c) { starting = &c; }
  ~starting_guard() { starting = nullptr; }
  starting_guard(const starting_guard&) = delete;
  starting_guard& operator=(const starting_guard&) = delete;
};

}  // namespace

exporter::exporter(const sidecar_metrics& m)
    : state_(std::make_unique<detail::exporter_state>(m)) {}

exporter::~exporter() { stop(); }

bool exporter::start(const std::string& host, std::uint16_t port, std::string& error,
                     std::size_t threads, std::uint32_t request_timeout_ms) noexcept {
  std::string spec;
  try {
    if (state_->exposer) {
      error = "the metrics exporter is already serving on port " + std::to_string(state_->port);
      return false;
    }
    if (!listening_spec(host, port, spec, error)) return false;
    start_context ctx{state_.get(), {}};
    std::unique_ptr<prometheus::Exposer> exposer;
    try {
      starting_guard guard(ctx);
      exposer = std::make_unique<prometheus::Exposer>(
          std::vector<std::string>{"listening_ports", spec, "num_threads", std::to_string(threads),
                                   "request_timeout_ms", std::to_string(request_timeout_ms)},
          &callbacks());
    } catch (const std::exception& e) {
      error = "cannot serve metrics on " + spec + ": " + (ctx.error.empty() ? e.what() : ctx.error);
      return false;
    }
    const std::vector<int> ports = exposer->GetListeningPorts();
    state_->port = ports.empty() ? 0 : static_cast<std::uint16_t>(ports.front());
    state_->host = host;
    state_->exposer = std::move(exposer);
    return true;
  } catch (const std::exception& e) {
    error = "cannot serve metrics on " + spec + ": " + e.what();
  } catch (...) {
    error = "cannot serve metrics on " + spec + ": unknown error";
  }
  return false;
}

std::uint16_t exporter::port() const noexcept { return state_->exposer ? state_->port : 0; }

void exporter::publish(health_snapshot s) {
  std::lock_guard lock(state_->mutex);
  state_->snapshot = std::move(s);
}

void exporter::stop() noexcept {
  if (!state_->exposer) return;
  // civetweb's accept loop polls its sockets with a 2 s timeout and looks at the stop flag only
  // between polls, so a plain stop takes up to 2 s (at every SIGTERM). A connection wakes the poll:
  // a helper thread keeps poking the port until the server is gone. Connections accepted before the
  // flag is set are closed by their worker at once (they send nothing).
  std::atomic<bool> done{false};
  std::thread waker;
  try {
    waker = std::thread([&done, host = state_->host, port = state_->port] {
      while (!done.load()) {
        poke(host, port);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  } catch (...) {  // no thread: the stop just takes longer
  }
  state_->exposer.reset();
  done.store(true);
  if (waker.joinable()) waker.join();
  state_->port = 0;
}

}  // namespace redis_sidecar::metrics
