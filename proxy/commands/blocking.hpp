// blocking: how long a blocking command may block, read from its arguments as Redis reads them.
// The session gives such a request a dedicated upstream connection and a deadline past its own
// timeout (client_session.cpp); a timeout it cannot read is Redis' to refuse, so it is taken as
// "no deadline of the sidecar's own" rather than answered here.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "proxy/commands/command_table.hpp"

namespace redis_sidecar::commands {

/// Seconds as Redis reads blocking timeouts ("0", "1.5", "1e3"), in ms. False for what Redis
/// refuses (negative, not a number, or too large for milliseconds in 64 bits: "inf", "1e300").
bool parse_seconds_ms(std::string_view s, long long& ms);

/// For commands with the `blocking` flag: how long this request may block, in ms. nullopt: it does
/// not block this time (XREAD without BLOCK). 0: for ever (a zero timeout, or one Redis refuses).
/// Never negative.
std::optional<long long> block_ms(const command_info& info, std::span<const std::string_view> args);

}  // namespace redis_sidecar::commands
