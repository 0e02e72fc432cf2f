// tcp_relay: a TCP relay on loopback in front of a Redis port, for the network's part in a test:
//
//   - retarget(): connections made from now on go to another port, those open stay where they
//     are: a DNS name or a service address moved to another server (a failover behind an
//     endpoint), which the connections open before it do not follow;
//   - swallow_marked(): the bytes of the connections whose client ever sent `mark` are dropped
//     both ways from now on, without a word to either end: a path that died with no FIN or reset,
//     as behind a NAT that forgot the flow.
//
// One thread polls every connection; the destructor closes them all.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace redis_sidecar::test {

/// 127.0.0.1:port (0: any free port, for bind()), for tests that open sockets of their own.
sockaddr_in loopback_address(std::uint16_t port);

class tcp_relay {
 public:
  /// Listens on a free loopback port; relays to 127.0.0.1:target. Links whose client sent `mark`
  /// (when not empty) are marked, for swallow_marked().
  explicit tcp_relay(std::uint16_t target, std::string mark = {});
  ~tcp_relay();
  tcp_relay(const tcp_relay&) = delete;
  tcp_relay& operator=(const tcp_relay&) = delete;

  std::uint16_t port() const { return port_; }
  void retarget(std::uint16_t target) { target_ = target; }
  void swallow_marked() { swallow_ = true; }
  /// Connections accepted so far.
  unsigned accepted() const { return accepted_; }

 private:
  struct link {
    int client, server;
    bool marked = false;
    bool client_done = false, server_done = false;  // read to its end: polled no more
  };
  void run();

  std::string mark_;
  std::uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::vector<link> links_;  // the relay thread's
  std::atomic<std::uint16_t> target_;
  std::atomic<unsigned> accepted_{0};
  std::atomic<bool> stop_{false}, swallow_{false};
  std::thread thread_;
};

}  // namespace redis_sidecar::test
