#include "proxy/upstream/pool.hpp"

namespace redis_sidecar {

pool::pool(asio::any_io_executor ex, const config& cfg, ssl::context* tls, stats& st)
    : ex_(ex), cfg_(cfg), tls_(tls), stats_(st) {}

const std::shared_ptr<connection>& pool::shared(int proto, const connection* current) {
  auto& conns = shared_[proto == 3 ? 1 : 0];
  if (conns.empty()) {
    for (std::size_t i = 0; i < cfg_.pool_size; ++i) {
      auto c = std::make_shared<connection>(ex_, cfg_, tls_, stats_, proto, true);
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
    auto c = std::move(idle.back());
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
      c->current_state() != connection::state::ready || idle.size() >= max_idle_dedicated) {
    c->close();
    return;
  }
  c->set_owner({});
  idle.push_back(std::move(c));
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
  for (auto& conns : idle_)
    for (auto& c : conns) c->close();
}

}  // namespace redis_sidecar
