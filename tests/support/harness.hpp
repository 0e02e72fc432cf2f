// harness: real processes for integration tests. Starts redis-server (plain or TLS, with
// certificates generated at test time by the openssl CLI, with requirepass or ACL users) and the
// built redis-sidecar binary on free loopback ports, and a small hiredis-based client.
// Every process is stopped (SIGKILL as a last resort) when its object is destroyed.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace redis_sidecar::test {

/// Certificates made once per test process in a private temp dir: a CA, a server certificate for
/// localhost/127.0.0.1 signed by it, a client certificate (mTLS) signed by it, and a second,
/// unrelated CA with a client certificate of its own (for "wrong CA" tests).
struct tls_files {
  std::string dir;
  std::string ca_crt, ca_key;
  std::string server_crt, server_key;
  std::string client_crt, client_key;
  std::string other_ca_crt;  // a CA that did not sign the server certificate
  std::string other_client_crt, other_client_key;  // a client certificate other_ca signed
};
const tls_files& test_certificates();

/// A loopback TCP port that nobody listens on right now.
std::uint16_t free_port();

/// Puts TCP socket `fd` in repair mode (TCP_REPAIR, which needs CAP_NET_ADMIN: run the tests as
/// root), so that closing it sends nothing, neither FIN nor reset: its end of the connection
/// vanishes without a word, as behind a NAT that forgot the flow or on a host that is gone, and
/// the kernel answers whatever the peer sends next with a reset. False when refused.
bool silence(int fd);

struct redis_options {
  bool tls = false;  // TLS only (port 0 for plaintext), server cert from test_certificates()
  bool tls_client_auth = false;  // require client certificates (mTLS)
  std::string requirepass;       // default user password
  std::vector<std::string>
      acl;  // extra "user ..." ACL lines, e.g. "user app on >secret ~* &* +@all"
  std::vector<std::string> extra;  // extra config lines, e.g. "notify-keyspace-events KEA"
};

class redis_server {
 public:
  explicit redis_server(redis_options opts = {});
  ~redis_server();
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::uint16_t port() const { return port_; }
  /// redis:// or rediss:// URL with the given credentials (percent-encoded), e.g.
  /// url("app", "secret", 3) or url("", "pass") for requirepass.
  std::string url(const std::string& user = "", const std::string& password = "",
                  int db = -1) const;

  void stop();    // SIGTERM and wait
  void kill();    // SIGKILL and wait
  void pause();   // SIGSTOP, waiting until it has stopped: a stalled upstream
  void resume();  // SIGCONT
  void start();   // (re)start on the same port with the same options; waits until it answers PING

  /// A direct connection to this server, authenticated as the options say (default user /
  /// requirepass), with a 10 s I/O timeout. nullptr for a TLS server (hiredis 0.14 has no TLS: use
  /// redis_cli() to inspect a TLS server) or when the connection fails. The caller owns it.
  redisContext* connect_direct() const;

 private:
  friend std::string redis_cli(const redis_server& server, std::vector<std::string> args);
  redis_options opts_;
  std::uint16_t port_ = 0;
  std::string unix_path_;  // --listen unix:PATH
  std::uint16_t metrics_port_ = 0;
  int pid_ = -1;
  std::string dir_;
};

/// Runs `redis-cli` against `server` with the right flags (--tls, CA, client certificate for
/// mTLS, -a requirepass) followed by `args`, and returns its stdout (raw output format, one value
/// per line). Works for plaintext and TLS servers; throws if redis-cli cannot be started.
std::string redis_cli(const redis_server& server, std::vector<std::string> args);

class sidecar {
 public:
  /// Starts the built binary with `args` (plus "--listen 127.0.0.1:<free port>" unless args has
  /// --listen) and `env` ("NAME=value" entries added to the environment; REDIS_URL and
  /// REDIS_SIDECAR_* from the test's own environment are never passed on). Waits up to 10 s until
  /// the port (or the unix socket of --listen unix:PATH) accepts connections or the process exits.
  explicit sidecar(std::vector<std::string> args, std::vector<std::string> env = {});
  ~sidecar();
  sidecar(const sidecar&) = delete;
  sidecar& operator=(const sidecar&) = delete;

  std::uint16_t port() const { return port_; }
  /// The /metrics, /healthz, /readyz port (a free one unless args has --metrics-listen).
  std::uint16_t metrics_port() const { return metrics_port_; }
  /// The process id, for tests that stop and continue the process (SIGSTOP, SIGCONT).
  int pid() const { return pid_; }
  /// SIGSTOP, then waits (up to 5 s) until the process has really stopped (as redis_server's
  /// pause()); false if it did not.
  bool stop();
  /// SIGCONT after stop(); false if the signal could not be sent.
  bool resume();
  bool running();
  /// Waits for exit and returns the exit code (or 128+signal); -1 if still running at the
  /// timeout. For start-up failure tests.
  int wait_exit(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Everything the process wrote to stdout and stderr so far.
  std::string log() const;
  void terminate();  // SIGTERM and wait (SIGKILL after 3 s)

 private:
  std::uint16_t port_ = 0;
  std::string unix_path_;  // --listen unix:PATH
  std::uint16_t metrics_port_ = 0;
  int pid_ = -1;
  std::string dir_;
  std::string log_path_;
  std::optional<int> exit_code_;
};

/// Any other program the tests need running (a Prometheus server, ...): started with `argv`, its
/// output captured, SIGTERM (then SIGKILL) and reaped on destruction.
class background_process {
 public:
  explicit background_process(std::vector<std::string> argv);
  ~background_process();
  background_process(const background_process&) = delete;
  background_process& operator=(const background_process&) = delete;
  bool running();
  std::string log() const;
  /// A directory of its own, removed with it (for configuration and data files).
  const std::string& dir() const { return dir_; }

 private:
  int pid_ = -1;
  std::string dir_;
  std::string log_path_;
};

/// Runs the binary to completion with args and env (no --listen added; killed after 10 s);
/// returns {exit code, stdout+stderr}.
std::pair<int, std::string> run_sidecar_once(std::vector<std::string> args,
                                             std::vector<std::string> env = {});

/// hiredis replies owned by unique_ptr.
struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;
struct context_deleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using context_ptr = std::unique_ptr<redisContext, context_deleter>;

/// A plaintext hiredis connection to 127.0.0.1:port (with a 10 s I/O timeout), or throws.
context_ptr connect(std::uint16_t port);
/// Sends argv (binary safe) and returns the reply, or nullptr on I/O error.
reply_ptr command(redisContext* c, const std::vector<std::string>& argv);
/// Sends argv without waiting for its reply (read it later with next_reply): for requests that
/// must be in flight together, or that block. False on I/O error.
bool send_only(redisContext* c, const std::vector<std::string>& argv);
/// The next reply on `c`, or nullptr on I/O error or timeout.
reply_ptr next_reply(redisContext* c);

/// A raw socket client for byte-exact tests (malformed input, RESP3 bytes, split writes).
class raw_client {
 public:
  explicit raw_client(std::uint16_t port);
  ~raw_client();
  void send(const std::string& bytes);
  /// Reads until `n` bytes arrived or timeout; returns what arrived.
  std::string read_exact(std::size_t n,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// Waits up to `timeout` for bytes and returns those one read gets (at most 64 KiB); empty on
  /// timeout or when the peer closed.
  std::string read_available(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// Reads whatever arrives until the peer is quiet for `quiet` or closes.
  std::string read_some(std::chrono::milliseconds quiet = std::chrono::milliseconds(200));
  /// True when the peer closed the connection (read returns 0) within timeout.
  bool closed_by_peer(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// Closes at once with a TCP reset instead of a FIN (SO_LINGER 0), as a process that dies with
  /// unread bytes does.
  void reset();
  /// Closes without a word (see silence()); false, leaving the connection open, when refused.
  bool vanish();
  /// Shuts the sending side only (a FIN): replies can still be read, as `nc -N` does.
  void shutdown_send();
  /// Closes at once, unread replies or not.
  void close();

 private:
  int fd_ = -1;
};

}  // namespace redis_sidecar::test
