#include "proxy/commands/keys.hpp"

#include <cstdint>

#include "proxy/resp/detail/line.hpp"

namespace redis_sidecar::commands {

long long script_numkeys(std::span<const std::string_view> args) {
  if (args.size() < 3) return -1;
  std::int64_t n = -1;  // read as Redis reads it (string2ll: "007" and "-0" are not numbers)
  if (!resp::detail::parse_decimal(args[2], n) || n < 0) return -1;
  return n;
}

}  // namespace redis_sidecar::commands
