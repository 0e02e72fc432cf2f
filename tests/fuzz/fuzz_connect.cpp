// libFuzzer target for connect_fsm, the upstream connect sequence, on whatever an upstream (or a
// server in between) answers. The first byte chooses the URL (TLS, user, password, db) and the
// protocol; then each step is driven to its end: transport steps succeed or fail, and each reply is
// decoded from fuzzer bytes, or taken from a list of real ones, some of which echo the password as
// Redis echoes a command it does not know. Checked with __builtin_trap: the sequence ends in
// `ready` or `failed` within a bounded number of steps, and error() never holds the password.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/config/url.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/upstream/connect_fsm.hpp"

namespace {

using redis_sidecar::connect_fsm;
using redis_sidecar::upstream_url;
namespace resp = redis_sidecar::resp;
using step = connect_fsm::step;

constexpr std::string_view password = "Zq9sEcret";

void check(bool ok) {
  if (!ok) __builtin_trap();
}

constexpr std::string_view replies[] = {
    "+OK\r\n",
    "%2\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$2\r\nid\r\n:7\r\n",
    "*4\r\n$7\r\nversion\r\n$5\r\n6.2.0\r\n$2\r\nid\r\n:-1\r\n",
    "-ERR unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'default' 'Zq9sEcret' \r\n",
    "-ERR unknown command `HELLO`, with args beginning with: `2`, `AUTH`, `app`, `Zq9s\r\n",
    "-ERR refused HELLO 3 AUTH app Zq9sEcret\r\n",
    "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    "-NOAUTH Authentication required.\r\n",
    "-NOPROTO unsupported protocol version\r\n",
    "-NOPERM this user has no permissions to run the 'hello' command\r\n",
    "-ERR DB index is out of range\r\n",
    "-LOADING Redis is loading the dataset in memory\r\n",
    "-ERR Zq9sEcret\r\n",
    "_\r\n",
    ":1\r\n",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t shape = data[0];
  upstream_url url;
  url.tls = (shape & 1) != 0;
  url.host = "cache.example";
  url.port = 6380;
  url.username = (shape & 2) ? "app" : "";
  url.password = (shape & 4) ? std::string(password) : std::string();
  url.db = (shape & 8) ? 3 : 0;
  connect_fsm fsm(url, (shape & 16) ? 3 : 2);

  std::size_t pos = 1;
  step s = fsm.start();
  for (int steps = 0; s != step::ready && s != step::failed; ++steps) {
    check(steps < 32);
    const std::uint8_t b = pos < size ? data[pos++] : 0;
    if (s != step::receive) {
      s = fsm.on_done((b & 0x80) ? "Connection refused" : "");
      continue;
    }
    std::string frame;
    if (b < 0x40) {  // a frame from the fuzzer's bytes, `b` long at most
      frame.assign(reinterpret_cast<const char*>(data) + pos, std::min<std::size_t>(b, size - pos));
      pos += frame.size();
    } else {
      frame = replies[b % (sizeof(replies) / sizeof(replies[0]))];
    }
    const auto v = resp::decode(frame);
    s = fsm.on_reply(v ? *v : resp::value{});
  }
  if (!url.password.empty()) check(fsm.error().find(password) == std::string_view::npos);
  return 0;
}
