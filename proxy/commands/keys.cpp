#include "proxy/commands/keys.hpp"

#include <charconv>

namespace redis_sidecar::commands {

long long script_numkeys(std::span<const std::string_view> args) {
  if (args.size() < 3) return -1;
  long long n = -1;
  const std::string_view s = args[2];
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || p != s.data() + s.size() || n < 0) return -1;
  return n;
}

}  // namespace redis_sidecar::commands
