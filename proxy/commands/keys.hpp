// keys: which arguments of a request are keys, from the command table. The cache tier uses it to
// invalidate what a write touches, so it errs on the side of too many: for writes whose keys depend
// on options (SORT ... STORE, GEORADIUS ... STORE, MIGRATE, ...) every argument counts as a
// possible key, and invalidating a key that L1 does not hold costs one hash lookup.
//
// Scripts (EVAL, EVALSHA, FCALL and their _RO forms) yield the keys they declare through numkeys;
// keys a script touches without declaring them are not visible here (see README, cache tier).
#pragma once

#include <span>
#include <string_view>

#include "proxy/commands/command_table.hpp"

namespace redis_sidecar::commands {

/// Calls `f(key)` for each key argument of `args` (args[0] is the command name).
template <class F>
void for_each_key(const command_info& info, std::span<const std::string_view> args, F&& f);

/// For scripts: the declared key count, or -1 when numkeys is missing or not a valid number.
long long script_numkeys(std::span<const std::string_view> args);

template <class F>
void for_each_key(const command_info& info, std::span<const std::string_view> args, F&& f) {
  const long long n = static_cast<long long>(args.size());
  if (info.flags & script) {
    const long long keys = script_numkeys(args);
    for (long long i = 3; i - 3 < keys && i < n; ++i)  // (3 + keys overflows for numkeys near 2^63)
      f(args[static_cast<std::size_t>(i)]);
    return;
  }
  if ((info.flags & movable_keys) && (info.flags & write)) {
    for (long long i = 1; i < n; ++i) f(args[static_cast<std::size_t>(i)]);
    return;
  }
  if (info.first_key <= 0 || info.key_step <= 0) return;
  const long long last = info.last_key < 0 ? n + info.last_key : info.last_key;
  for (long long i = info.first_key; i <= last && i < n; i += info.key_step)
    f(args[static_cast<std::size_t>(i)]);
}

}  // namespace redis_sidecar::commands
