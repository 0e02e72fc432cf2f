#include "tests/support/tcp_relay.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string_view>

namespace redis_sidecar::test {

sockaddr_in loopback_address(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

tcp_relay::tcp_relay(std::uint16_t target, std::string mark)
    : mark_(std::move(mark)), target_(target) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback_address(0);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd_, 64) != 0)
    throw std::runtime_error("tcp_relay: cannot listen on loopback");
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { run(); });
}

tcp_relay::~tcp_relay() {
  stop_ = true;
  thread_.join();
  for (const auto& l : links_) {
    ::close(l.client);
    ::close(l.server);
  }
  ::close(listen_fd_);
}

void tcp_relay::run() {
  std::vector<char> buf(65536);
  while (!stop_) {
    std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
    for (const auto& l : links_) {
      fds.push_back({l.client_done ? -1 : l.client, POLLIN, 0});
      fds.push_back({l.server_done ? -1 : l.server, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
    if (fds[0].revents & POLLIN) {
      const int c = ::accept(listen_fd_, nullptr, nullptr);
      const int u = ::socket(AF_INET, SOCK_STREAM, 0);
      const sockaddr_in a = loopback_address(target_);
      if (c >= 0 && ::connect(u, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
        links_.push_back({c, u});
        ++accepted_;
      } else {
        if (c >= 0) ::close(c);
        ::close(u);
      }
      continue;  // the fds vector no longer matches links_
    }
    for (std::size_t i = 0; i < links_.size(); ++i) {
      link& l = links_[i];
      for (const bool from_client : {true, false}) {
        if (!(fds[1 + 2 * i + (from_client ? 0 : 1)].revents & (POLLIN | POLLHUP | POLLERR)))
          continue;
        const int from = from_client ? l.client : l.server, to = from_client ? l.server : l.client;
        const ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
        if (n <= 0) {
          ::shutdown(to, SHUT_WR);
          (from_client ? l.client_done : l.server_done) = true;
          continue;
        }
        if (from_client && !mark_.empty() &&
            std::string_view(buf.data(), n).find(mark_) != std::string_view::npos)
          l.marked = true;
        if (l.marked && swallow_) continue;
        for (ssize_t sent = 0; sent < n;) {
          const ssize_t k = ::send(to, buf.data() + sent, n - sent, MSG_NOSIGNAL);
          if (k <= 0) break;
          sent += k;
        }
      }
    }
  }
}

}  // namespace redis_sidecar::test
