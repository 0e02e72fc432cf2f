// harness: processes (redis-server, redis-cli, openssl, redis-sidecar) started with posix_spawnp,
// always reaped; certificates made by the openssl CLI; plain hiredis and raw-socket clients.
//
// Every child is reaped by whoever started it: synchronous helpers (openssl, redis-cli,
// run_sidecar_once) wait before returning, and redis_server / sidecar reap in stop paths and
// destructors (SIGTERM, up to 3 s, then SIGKILL), also when the output pipe closes early
// (SIGPIPE is ignored). Temp dirs are removed on destruction unless
// REDIS_SIDECAR_IT_KEEP=1 is set (to read logs after a failure).
#include "tests/support/harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace redis_sidecar::test {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Output cut short (`integration_tests ... | head`) must not kill the tests before their
// destructors stop the servers they started: a write to the closed pipe fails instead, and the
// children are still reaped. (A SIGKILL, a ctest timeout's, still leaves them running.)
[[maybe_unused]] const bool sigpipe_ignored = [] {
  ::signal(SIGPIPE, SIG_IGN);
  return true;
}();

// Throws, after printing the reason: the Catch2 main may be built without exception translation,
// and a test that fails because its set-up failed must still say why.
[[noreturn]] void harness_error(const std::string& what) {
  std::fprintf(stderr, "harness: %s\n", what.c_str());
  throw std::runtime_error(what);
}

std::string make_temp_dir(const char* prefix) {
  std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    harness_error("mkdtemp failed: " + std::string(std::strerror(errno)));
  }
  return tmpl;
}

void remove_temp_dir(const std::string& dir) {
  const char* keep = std::getenv("REDIS_SIDECAR_IT_KEEP");
  if (dir.empty() || (keep != nullptr && std::string(keep) == "1")) return;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) harness_error("cannot write " + path);
}

// The child's environment: ours without REDIS_URL and REDIS_SIDECAR_* (so a developer's shell
// cannot change what a test configures), plus `extra` ("NAME=value").
std::vector<std::string> child_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (entry.starts_with("REDIS_URL=") || entry.starts_with("REDIS_SIDECAR_")) continue;
    env.emplace_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Spawns argv (PATH lookup) with stdin from /dev/null and stdout+stderr into `output_path`
// (appended), or into `output_fd` when it is >= 0. Returns the pid or throws.
int spawn(std::vector<std::string> argv, std::vector<std::string> env,
          const std::string& output_path, int output_fd = -1) {
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (output_fd >= 0) {
    ::posix_spawn_file_actions_adddup2(&actions, output_fd, 1);
    ::posix_spawn_file_actions_adddup2(&actions, output_fd, 2);
    ::posix_spawn_file_actions_addclose(&actions, output_fd);
  } else {
    ::posix_spawn_file_actions_addopen(&actions, 1, output_path.c_str(),
                                       O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  auto argv_c = c_strings(argv);
  auto env_c = c_strings(env);
  pid_t pid = -1;
  // The children get SIGPIPE's default back: the sidecar must ignore it itself.
  posix_spawnattr_t attrs;
  ::posix_spawnattr_init(&attrs);
  sigset_t defaults;
  ::sigemptyset(&defaults);
  ::sigaddset(&defaults, SIGPIPE);
  ::posix_spawnattr_setsigdefault(&attrs, &defaults);
  ::posix_spawnattr_setflags(&attrs, POSIX_SPAWN_SETSIGDEF);
  int rc = ::posix_spawnp(&pid, argv_c[0], &actions, &attrs, argv_c.data(), env_c.data());
  ::posix_spawnattr_destroy(&attrs);
  ::posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) harness_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Waits up to `timeout` for pid to exit. Returns its exit code (or 128+signal), nullopt on timeout.
std::optional<int> wait_for(int pid, std::chrono::milliseconds timeout) {
  auto deadline = clock_type::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return decode_status(status);
    if (r < 0 && errno != EINTR) return -1;  // not our child any more
    if (clock_type::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
}

// SIGTERM (and SIGCONT, in case it is stopped), up to 3 s, then SIGKILL. Always reaps.
int terminate_and_reap(int pid) {
  if (pid <= 0) return -1;
  ::kill(pid, SIGTERM);
  ::kill(pid, SIGCONT);
  if (auto code = wait_for(pid, 3s)) return *code;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return decode_status(status);
}

// Runs argv to completion, returning {exit code, stdout+stderr}. Kills it after `timeout`.
std::pair<int, std::string> run_capture(std::vector<std::string> argv, std::vector<std::string> env,
                                        std::chrono::milliseconds timeout = 10s) {
  std::string dir = make_temp_dir("rsit-run");
  std::string out_path = dir + "/output";
  int pid = spawn(std::move(argv), std::move(env), out_path);
  auto code = wait_for(pid, timeout);
  int result = code ? *code : terminate_and_reap(pid);
  std::string output = read_file(out_path);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return {result, output};
}

bool port_accepts(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

bool unix_socket_accepts(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

void run_openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  auto [code, output] = run_capture(args, child_environment({}));
  if (code != 0) harness_error("openssl " + args[1] + " failed: " + output);
}

// Makes a key and a certificate signed by ca (self-signed when ca is empty).
void make_cert(const std::string& dir, const std::string& name, const std::string& cn,
               const std::string& ca, const std::string& extensions) {
  std::string key = dir + "/" + name + ".key", crt = dir + "/" + name + ".crt";
  std::vector<std::string> keyopts = {
      "-newkey", "ec",    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
      key,       "-subj", "/CN=" + cn};
  if (ca.empty()) {
    std::vector<std::string> args = {"req",     "-x509",
                                     "-days",   "3",
                                     "-out",    crt,
                                     "-addext", "basicConstraints=critical,CA:TRUE",
                                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"};
    args.insert(args.end(), keyopts.begin(), keyopts.end());
    run_openssl(args);
    return;
  }
  std::string csr = dir + "/" + name + ".csr", ext = dir + "/" + name + ".ext";
  write_file(ext, extensions);
  std::vector<std::string> req = {"req", "-new", "-out", csr};
  req.insert(req.end(), keyopts.begin(), keyopts.end());
  run_openssl(req);
  run_openssl({"x509", "-req", "-in", csr, "-CA", dir + "/" + ca + ".crt", "-CAkey",
               dir + "/" + ca + ".key", "-CAcreateserial", "-days", "3", "-out", crt, "-extfile",
               ext});
}

struct certificate_store {
  tls_files files;
  certificate_store() {
    auto& f = files;
    f.dir = make_temp_dir("rsit-certs");
    make_cert(f.dir, "ca", "redis-sidecar test CA", "", "");
    make_cert(f.dir, "other_ca", "unrelated test CA", "", "");
    make_cert(f.dir, "server", "localhost", "ca",
              "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth,clientAuth\n");
    make_cert(f.dir, "client", "redis-sidecar test client", "ca", "extendedKeyUsage=clientAuth\n");
    make_cert(f.dir, "other_client", "client of another CA", "other_ca",
              "extendedKeyUsage=clientAuth\n");
    f.ca_crt = f.dir + "/ca.crt";
    f.ca_key = f.dir + "/ca.key";
    f.server_crt = f.dir + "/server.crt";
    f.server_key = f.dir + "/server.key";
    f.client_crt = f.dir + "/client.crt";
    f.client_key = f.dir + "/client.key";
    f.other_ca_crt = f.dir + "/other_ca.crt";
    f.other_client_crt = f.dir + "/other_client.crt";
    f.other_client_key = f.dir + "/other_client.key";
  }
  ~certificate_store() { remove_temp_dir(files.dir); }
};

std::string percent_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) != 0 || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

// SIGSTOP, then waits (up to 5 s) until the process has really stopped: kill() returns before a
// process running on another core stops, and it could still handle what a test sends next.
bool stop_process(int pid) {
  if (pid <= 0 || ::kill(pid, SIGSTOP) != 0) return false;
  const auto deadline = clock_type::now() + 5s;
  while (clock_type::now() < deadline) {
    // /proc/PID/stat: "PID (comm) STATE ...": 'T' once stopped.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto paren = line.rfind(')');
    if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'T')
      return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

}  // namespace

const tls_files& test_certificates() {
  static certificate_store store;
  return store.files;
}

// Ports come from 20000-31999 at random, below Linux's ephemeral range (32768-60999): the kernel
// hands those to outgoing connections and to bind(0) in every process, so two test processes
// asking it for a "free" port at the same moment can be given the same one. A port is returned
// once per process, and only if it binds now.
std::uint16_t free_port() {
  static std::mutex mu;
  static std::set<std::uint16_t> given;
  static std::minstd_rand rng(static_cast<unsigned>(::getpid()) ^
                              static_cast<unsigned>(clock_type::now().time_since_epoch().count()));
  std::lock_guard lock(mu);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const auto port = static_cast<std::uint16_t>(20000 + rng() % 12000);
    if (given.count(port) != 0) continue;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) harness_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (!ok) continue;
    given.insert(port);
    return port;
  }
  harness_error("cannot find a free loopback port");
}

// ---------------------------------------------------------------------------------------------
// redis_server

namespace {

std::string redis_config(const redis_options& opts, std::uint16_t port, const std::string& dir) {
  std::ostringstream conf;
  conf << "bind 127.0.0.1\n"
       << "daemonize no\n"
       << "save \"\"\n"
       << "appendonly no\n"
       << "dir " << dir << "\n"
       << "logfile " << dir << "/redis.log\n";
  if (opts.tls) {
    const auto& certs = test_certificates();
    conf << "port 0\n"
         << "tls-port " << port << "\n"
         << "tls-cert-file " << certs.server_crt << "\n"
         << "tls-key-file " << certs.server_key << "\n"
         << "tls-ca-cert-file " << certs.ca_crt << "\n"
         << "tls-auth-clients " << (opts.tls_client_auth ? "yes" : "no") << "\n";
  } else {
    conf << "port " << port << "\n";
  }
  if (!opts.requirepass.empty()) conf << "requirepass " << opts.requirepass << "\n";
  for (const auto& line : opts.acl) conf << line << "\n";
  for (const auto& line : opts.extra) conf << line << "\n";
  return conf.str();
}

}  // namespace

redis_server::redis_server(redis_options opts) : opts_(std::move(opts)) {
  dir_ = make_temp_dir("rsit-redis");
  // free_port() races with other processes; a port taken meanwhile gets another try.
  for (int attempt = 1;; ++attempt) {
    port_ = free_port();
    write_file(dir_ + "/redis.conf", redis_config(opts_, port_, dir_));
    std::filesystem::remove(dir_ + "/redis.log");
    try {
      start();
      return;
    } catch (...) {
      bool port_taken = read_file(dir_ + "/redis.log").find("in use") != std::string::npos;
      if (attempt < 3 && port_taken) continue;
      remove_temp_dir(dir_);  // the destructor will not run
      throw;
    }
  }
}

redis_server::~redis_server() {
  stop();
  remove_temp_dir(dir_);
}

std::string redis_server::url(const std::string& user, const std::string& password, int db) const {
  std::string out = opts_.tls ? "rediss://" : "redis://";
  if (!user.empty() || !password.empty()) {
    out += percent_encode(user);
    if (!password.empty()) {  // appended piecewise: GCC 12 -O3 warns on "..." + string&&
      out += ':';
      out += percent_encode(password);
    }
    out += "@";
  }
  out += "127.0.0.1:";
  out += std::to_string(port_);
  if (db >= 0) {
    out += '/';
    out += std::to_string(db);
  }
  return out;
}

void redis_server::stop() {
  if (pid_ > 0) terminate_and_reap(pid_);
  pid_ = -1;
}

void redis_server::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool sidecar::stop() { return stop_process(pid_); }

bool sidecar::resume() { return pid_ > 0 && ::kill(pid_, SIGCONT) == 0; }

void redis_server::pause() { stop_process(pid_); }

void redis_server::resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

void redis_server::start() {
  if (pid_ > 0) return;
  pid_ = spawn({"redis-server", dir_ + "/redis.conf"}, child_environment({}), dir_ + "/stdout.log");
  auto deadline = clock_type::now() + 10s;
  while (clock_type::now() < deadline) {
    if (auto code = wait_for(pid_, 0ms)) {
      pid_ = -1;
      harness_error("redis-server exited with " + std::to_string(*code) + ": " +
                    read_file(dir_ + "/stdout.log") + read_file(dir_ + "/redis.log"));
    }
    if (port_accepts(port_)) {
      if (opts_.tls) {
        if (redis_cli(*this, {"PING"}).starts_with("PONG")) return;
      } else if (context_ptr c{connect_direct()}; c) {
        if (auto r = command(c.get(), {"PING"}); r && r->type == REDIS_REPLY_STATUS) return;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  terminate_and_reap(pid_);
  pid_ = -1;
  harness_error("redis-server on port " + std::to_string(port_) +
                " did not answer PING within 10 s");
}

redisContext* redis_server::connect_direct() const {
  if (opts_.tls) return nullptr;  // hiredis 0.14 has no TLS: use redis_cli() for TLS servers
  timeval tv{10, 0};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
  if (c == nullptr) return nullptr;
  if (c->err != 0) {
    redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, tv);
  if (!opts_.requirepass.empty()) {
    auto r = command(c, {"AUTH", opts_.requirepass});
    if (!r || r->type == REDIS_REPLY_ERROR) {
      redisFree(c);
      return nullptr;
    }
  }
  return c;
}

std::string redis_cli(const redis_server& server, std::vector<std::string> args) {
  std::vector<std::string> argv = {"redis-cli", "-h", "127.0.0.1", "-p",
                                   std::to_string(server.port())};
  if (server.opts_.tls) {
    const auto& certs = test_certificates();
    argv.insert(argv.end(), {"--tls", "--cacert", certs.ca_crt});
    if (server.opts_.tls_client_auth) {
      argv.insert(argv.end(), {"--cert", certs.client_crt, "--key", certs.client_key});
    }
  }
  if (!server.opts_.requirepass.empty()) {
    argv.insert(argv.end(), {"--no-auth-warning", "-a", server.opts_.requirepass});
  }
  argv.insert(argv.end(), args.begin(), args.end());

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) harness_error("pipe failed");
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  int pid = -1;
  try {
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    ::posix_spawn_file_actions_adddup2(&actions, devnull, 2);
    auto env = child_environment({});
    auto argv_c = c_strings(argv);
    auto env_c = c_strings(env);
    pid_t child = -1;
    int rc = ::posix_spawnp(&child, "redis-cli", &actions, nullptr, argv_c.data(), env_c.data());
    ::posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) harness_error(std::string("cannot start redis-cli: ") + std::strerror(rc));
    pid = child;
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    ::close(devnull);
    throw;
  }
  ::close(fds[1]);
  ::close(devnull);
  std::string out;
  char buf[4096];
  auto deadline = clock_type::now() + 10s;
  while (clock_type::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  terminate_and_reap(pid);
  return out;
}

// ---------------------------------------------------------------------------------------------
// sidecar

namespace {

std::optional<std::uint16_t> listen_port_of(const std::vector<std::string>& args,
                                            const std::string& flag = "--listen") {
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string value;
    if (args[i] == flag && i + 1 < args.size()) {
      value = args[i + 1];
    } else if (args[i].starts_with(flag + "=")) {
      value = args[i].substr(flag.size() + 1);
    } else {
      continue;
    }
    if (value == "off") return std::uint16_t{0};
    auto colon = value.rfind(':');
    if (colon == std::string::npos) return std::uint16_t{0};
    return static_cast<std::uint16_t>(std::atoi(value.c_str() + colon + 1));
  }
  return std::nullopt;
}

}  // namespace

sidecar::sidecar(std::vector<std::string> args, std::vector<std::string> env) {
  dir_ = make_temp_dir("rsit-sidecar");
  log_path_ = dir_ + "/sidecar.log";
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--listen" && args[i + 1].starts_with("unix:"))
      unix_path_ = args[i + 1].substr(5);
  if (auto port = listen_port_of(args)) {
    port_ = unix_path_.empty() ? *port : 0;
  } else {
    port_ = free_port();
    args.insert(args.begin(), {"--listen", "127.0.0.1:" + std::to_string(port_)});
  }
  // Never the default metrics port: tests run in parallel.
  if (auto port = listen_port_of(args, "--metrics-listen")) {
    metrics_port_ = *port;
  } else {
    metrics_port_ = free_port();
    args.insert(args.begin(), "--metrics-listen=127.0.0.1:" + std::to_string(metrics_port_));
  }
  args.insert(args.begin(), REDIS_SIDECAR_BINARY);
  try {
    pid_ = spawn(std::move(args), child_environment(env), log_path_);
  } catch (...) {
    remove_temp_dir(dir_);  // the destructor will not run
    throw;
  }
  auto deadline = clock_type::now() + 10s;
  while (clock_type::now() < deadline) {
    if (!running()) return;
    if (port_ != 0 && port_accepts(port_)) return;
    if (!unix_path_.empty() && unix_socket_accepts(unix_path_)) return;
    std::this_thread::sleep_for(10ms);
  }
}

// A sanitizer report in the sidecar's own log (a leak found at exit, a report from a process that
// kept running) fails the test run loudly: nothing else would notice it.
sidecar::~sidecar() {
  terminate();
  const std::string text = read_file(log_path_);
  for (const char* mark : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"}) {
    if (text.find(mark) != std::string::npos) {
      std::fprintf(stderr, "sanitizer report in the sidecar's log (%s):\n%s\n", log_path_.c_str(),
                   text.c_str());
      std::abort();
    }
  }
  remove_temp_dir(dir_);
}

bool sidecar::running() {
  if (pid_ <= 0) return false;
  if (auto code = wait_for(pid_, 0ms)) {
    exit_code_ = *code;
    pid_ = -1;
    return false;
  }
  return true;
}

int sidecar::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ > 0) {
    if (auto code = wait_for(pid_, timeout)) {
      exit_code_ = *code;
      pid_ = -1;
    }
  }
  return exit_code_.value_or(-1);
}

std::string sidecar::log() const { return read_file(log_path_); }

void sidecar::terminate() {
  if (pid_ > 0) exit_code_ = terminate_and_reap(pid_);
  pid_ = -1;
}

std::pair<int, std::string> run_sidecar_once(std::vector<std::string> args,
                                             std::vector<std::string> env) {
  args.insert(args.begin(), REDIS_SIDECAR_BINARY);
  return run_capture(std::move(args), child_environment(env));
}

// ---------------------------------------------------------------------------------------------
// hiredis helpers

context_ptr connect(std::uint16_t port) {
  timeval tv{10, 0};
  context_ptr c{redisConnectWithTimeout("127.0.0.1", port, tv)};
  if (!c) harness_error("hiredis: out of memory");
  if (c->err != 0) {
    harness_error("cannot connect to 127.0.0.1:" + std::to_string(port) + ": " + c->errstr);
  }
  redisSetTimeout(c.get(), tv);
  return c;
}

bool send_only(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data()) !=
      REDIS_OK)
    return false;
  for (int done = 0; done == 0;)
    if (redisBufferWrite(c, &done) != REDIS_OK) return false;
  return true;
}

reply_ptr next_reply(redisContext* c) {
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK) return nullptr;
  return reply_ptr{static_cast<redisReply*>(raw)};
}

reply_ptr command(redisContext* c, const std::vector<std::string>& argv) {
  return send_only(c, argv) ? next_reply(c) : nullptr;
}

// ---------------------------------------------------------------------------------------------
// raw_client

raw_client::raw_client(std::uint16_t port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) harness_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    harness_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  }
}

raw_client::~raw_client() {
  if (fd_ >= 0) ::close(fd_);
}

void raw_client::reset() {
  const linger abort{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  ::close(fd_);
  fd_ = -1;
}

void raw_client::shutdown_send() { ::shutdown(fd_, SHUT_WR); }

void raw_client::close() {
  ::close(fd_);
  fd_ = -1;
}

bool silence(int fd) {
  const int on = 1;
  return ::setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof on) == 0;
}

bool raw_client::vanish() {
  if (!silence(fd_)) return false;
  ::close(fd_);
  fd_ = -1;
  return true;
}

void raw_client::send(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) harness_error("raw_client send failed: " + std::string(std::strerror(errno)));
    off += static_cast<std::size_t>(n);
  }
}

namespace {

// One read with a poll timeout: >0 bytes appended, 0 on close or reset, -1 on timeout.
int read_once(int fd, std::string& out, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  int rc = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, timeout.count())));
  if (rc == 0) return -1;
  if (rc < 0) return errno == EINTR ? -1 : 0;
  char buf[65536];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  if (n < 0) return (errno == EINTR || errno == EAGAIN) ? -1 : 0;
  out.append(buf, static_cast<std::size_t>(n));
  return n > 0 ? 1 : 0;
}

std::chrono::milliseconds left_until(clock_type::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
  return std::max(left, 0ms);
}

}  // namespace

std::string raw_client::read_exact(std::size_t n, std::chrono::milliseconds timeout) {
  std::string out;
  auto deadline = clock_type::now() + timeout;
  while (out.size() < n && clock_type::now() < deadline) {
    // Read at most what is missing, so later bytes stay in the socket for the next call.
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left_until(deadline).count())) <= 0) continue;
    std::vector<char> buf(n - out.size());
    ssize_t got = ::recv(fd_, buf.data(), buf.size(), 0);
    if (got <= 0) {
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      break;
    }
    out.append(buf.data(), static_cast<std::size_t>(got));
  }
  return out;
}

std::string raw_client::read_available(std::chrono::milliseconds timeout) {
  std::string out;
  read_once(fd_, out, timeout);
  return out;
}

std::string raw_client::read_some(std::chrono::milliseconds quiet) {
  std::string out;
  while (read_once(fd_, out, quiet) > 0) {
  }
  return out;
}

bool raw_client::closed_by_peer(std::chrono::milliseconds timeout) {
  auto deadline = clock_type::now() + timeout;
  std::string discard;
  while (clock_type::now() < deadline) {
    int rc = read_once(fd_, discard, left_until(deadline));
    if (rc == 0) return true;
    discard.clear();
  }
  return false;
}

}  // namespace redis_sidecar::test

namespace redis_sidecar::test {

background_process::background_process(std::vector<std::string> argv) {
  dir_ = make_temp_dir("rsit-proc");
  log_path_ = dir_ + "/output.log";
  try {
    pid_ = spawn(std::move(argv), child_environment({}), log_path_);
  } catch (...) {
    remove_temp_dir(dir_);
    throw;
  }
}

background_process::~background_process() {
  terminate_and_reap(pid_);
  remove_temp_dir(dir_);
}

bool background_process::running() {
  if (pid_ <= 0) return false;
  if (wait_for(pid_, 0ms)) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string background_process::log() const {
  std::ifstream in(log_path_);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace redis_sidecar::test
