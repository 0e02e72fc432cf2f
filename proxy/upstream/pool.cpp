#include "proxy/upstream/pool.hpp"

#include <optional>

#include "proxy/log.hpp"

namespace redis_sidecar {

pool::pool(asio::any_io_executor ex, const config& cfg, ssl::context* tls, stats& st)
    : ex_(ex), cfg_(cfg), tls_(tls), stats_(st), idle_timer_(ex) {}

const std::shared_ptr<connection>& pool::shared(int proto, const connection* current) {
  auto& conns = shared_[proto == 3 ? 1 : 0];
  if (conns.empty()) {
    for (std::size_t i = 0; i < cfg_.pool_size; ++i) {
      auto c = std::make_shared<connection>(ex_, cfg_, tls_, stats_, proto, true);
      c->set_checks_role(true);
      c->start();
      conns.push_back(std::move(c));
    }
  }
  for (const auto& c : conns)
    if (c->batching()) return c;
  for (const auto& c : conns)
    if (c.get() == current && c->usable() && !c->retiring()) return c;
  auto& next = next_[proto == 3 ? 1 : 0];
  // Prefer a usable connection: when one is down (or waits to reconnect, retiring), new clients
  // go to the others.
  for (std::size_t i = 0; i < conns.size(); ++i) {
    const auto& c = conns[next++ % conns.size()];
    if (c->usable() && !c->retiring()) return c;
  }
  return conns[next++ % conns.size()];
}

std::shared_ptr<connection> pool::acquire_dedicated(int proto) {
  auto& idle = idle_[proto == 3 ? 1 : 0];
  while (!idle.empty()) {
    auto c = std::move(idle.back().conn);
    idle.pop_back();
    if (c->current_state() == connection::state::ready && !c->met_replica()) return c;
    c->close();
  }
  auto c = std::make_shared<connection>(ex_, cfg_, tls_, stats_, proto, false);
  c->start();
  return c;
}

void pool::release_dedicated(std::shared_ptr<connection> c) {
  auto& idle = idle_[c->proto() == 3 ? 1 : 0];
  if (c->raw() || c->owes_clients() || !c->pooled_ok() || c->met_replica() ||
      c->current_state() != connection::state::ready || idle.size() >= max_idle_dedicated ||
      closed_) {
    c->close();
    return;
  }
  c->set_owner({});
  idle.push_back({std::move(c), std::chrono::steady_clock::now()});
  arm_idle_timer();
}

void pool::arm_idle_timer() {
  if (idle_timer_armed_ || closed_ || cfg_.dedicated_idle_ms == 0) return;
  std::optional<std::chrono::steady_clock::time_point> oldest;
  for (const auto& idle : idle_)
    if (!idle.empty() && (!oldest || idle.front().since < *oldest)) oldest = idle.front().since;
  if (!oldest) return;
  idle_timer_armed_ = true;
  idle_timer_.expires_at(*oldest + std::chrono::milliseconds(cfg_.dedicated_idle_ms));
  // Cancelled only by close_all(), or by the timer's destruction with the pool: `this` is not
  // touched then.
  idle_timer_.async_wait([this](const error_code& ec) {
    if (ec) return;
    idle_timer_armed_ = false;
    close_expired_idle();
  });
}

void pool::close_expired_idle() {
  const auto cutoff =
      std::chrono::steady_clock::now() - std::chrono::milliseconds(cfg_.dedicated_idle_ms);
  std::size_t closed = 0;
  for (auto& idle : idle_) {
    std::size_t expired = 0;
    while (expired < idle.size() && idle[expired].since <= cutoff) ++expired;
    for (std::size_t i = 0; i < expired; ++i) idle[i].conn->close();
    idle.erase(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(expired));
    closed += expired;
  }
  if (closed > 0)
    log::debug("closed " + std::to_string(closed) +
               " idle dedicated upstream connection(s) after --dedicated-idle-timeout");
  arm_idle_timer();
}

void pool::warm_up() { shared(2); }

std::string_view pool::server_version() const {
  for (const auto& conns : shared_)
    for (const auto& c : conns)
      if (!c->server_version().empty()) return c->server_version();
  return {};
}

void pool::reset_shared(const std::string& reason) {
  for (auto& conns : shared_)
    for (auto& c : conns) c->reset(reason);
}

void pool::close_all() {
  for (auto& conns : shared_)
    for (auto& c : conns) c->close();
  closed_ = true;
  idle_timer_.cancel();
  for (auto& idle : idle_) {
    for (auto& entry : idle) entry.conn->close();
    idle.clear();
  }
}

}  // namespace redis_sidecar
