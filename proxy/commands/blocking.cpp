#include "proxy/commands/blocking.hpp"

#include <charconv>
#include <cstdint>

#include "proxy/resp/detail/line.hpp"

namespace redis_sidecar::commands {
namespace {

// Milliseconds as Redis reads them for XREAD BLOCK and WAIT (string2ll); 0 for what it refuses.
long long positive_ms(std::string_view s) {
  std::int64_t v = 0;
  return resp::detail::parse_decimal(s, v) && v > 0 ? v : 0;
}

}  // namespace

bool parse_seconds_ms(std::string_view s, long long& ms) {
  double d = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || p != s.data() + s.size() || !(d >= 0 && d < 9e15)) return false;
  ms = static_cast<long long>(d * 1000.0);
  return true;
}

std::optional<long long> block_ms(const command_info& info,
                                  std::span<const std::string_view> args) {
  if (info.flags & blocking_opt) {  // XREAD / XREADGROUP [... BLOCK ms ...] STREAMS
    for (std::size_t i = 1; i + 1 < args.size(); ++i) {
      if (iequals(args[i], "streams")) return std::nullopt;
      if (iequals(args[i], "block")) return positive_ms(args[i + 1]);
    }
    return std::nullopt;
  }
  if (args.size() < 2) return 0;
  long long ms = 0;
  const std::string_view name = info.name;
  if (name == "wait" || name == "waitaof") return positive_ms(args.back());
  if (name == "blmpop" || name == "bzmpop") return parse_seconds_ms(args[1], ms) ? ms : 0;
  return parse_seconds_ms(args.back(), ms) ? ms : 0;  // BLPOP, BRPOP, BLMOVE, BZPOPMIN, ...
}

}  // namespace redis_sidecar::commands
