// command_table: every Redis 7.0 command the sidecar knows, classified from data rather than from
// branches. The router asks one question per request, lookup(name), and reads the flags: where the
// request goes (a shared pooled connection, a connection dedicated to the client, or answered by the
// sidecar itself), and where its keys are (for the cache tier).
//
// Names are matched case-insensitively without allocating. Commands that have subcommands
// (CLIENT, CONFIG, OBJECT, ...) have one entry for the container; `lookup_sub` refines those the
// router treats differently (CLIENT REPLY, CLIENT SETNAME, ...). Unknown commands pass through to the
// upstream, which gives the real "unknown command" error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace redis_sidecar::commands {

/// What the sidecar must know about a command. Bits, so a command can be read and cacheable, etc.
enum flag : std::uint32_t {
  read = 1u << 0,        // reads keys (cacheable candidates are a subset)
  write = 1u << 1,       // may modify keys: invalidates them in the cache tier
  cacheable = 1u << 2,   // reply can fill the cache tier (GET, MGET)
  stateful = 1u << 3,    // needs a connection dedicated to the client while the state lasts
  blocking = 1u << 4,    // may block the connection (always, or with an option: see `blocking_opt`)
  pubsub = 1u << 5,      // enters or changes subscribed mode
  admin = 1u << 6,       // administrative (CONFIG, DEBUG, SHUTDOWN, ...)
  local = 1u << 7,       // answered by the sidecar itself (AUTH, HELLO, QUIT, RESET, ...)
  no_keys = 1u << 8,     // takes no keys
  flush = 1u << 9,       // FLUSHDB / FLUSHALL: clears a whole db or all dbs
  script = 1u << 10,     // EVAL/EVALSHA/FCALL family: keys declared by a numkeys argument
  blocking_opt = 1u << 11,  // blocking only with an option (XREAD/XREADGROUP BLOCK)
  movable_keys = 1u << 12,  // keys also depend on arguments (numkeys, STORE, a subcommand): the
                            // legacy triple below is incomplete or empty
};

/// The commands the router handles by identity. Everything else is `other`.
enum class command_id : std::uint8_t {
  other,
  auth, hello, quit, reset, select, ping, echo,
  client,  // container: see sub_id
  multi, exec, discard, watch, unwatch,
  subscribe, psubscribe, ssubscribe, unsubscribe, punsubscribe, sunsubscribe,
  monitor,
  xread, xreadgroup,
  get, mget, set, setex, psetex, mset, msetnx, getdel, getex, del, unlink,
  eval, eval_ro, evalsha, evalsha_ro, fcall, fcall_ro,
  flushdb, flushall, swapdb, move, copy,
  info, command,
};

enum class sub_id : std::uint8_t {
  other,
  client_reply, client_setname, client_getname, client_setinfo, client_id, client_info,
  client_tracking, client_caching, client_no_evict, client_kill, client_list, client_pause,
  client_unpause, client_trackinginfo, client_getredir, client_unblock, client_no_touch,
};

/// Key positions as in Redis' legacy COMMAND INFO triple: keys are at first_key, first_key+step, ...
/// up to last_key (negative: counted from the end, -1 = last argument). first_key == 0: no keys.
/// Scripts declare keys through a numkeys argument (`flag::script`): see keys_of in the router.
struct command_info {
  std::string_view name;  // lowercase
  int arity;              // Redis arity: N exact, -N at least N (counting the command name)
  std::uint32_t flags;
  int first_key;
  int last_key;
  int key_step;
  command_id id;
};

/// The entry for `name` (any case), or nullptr for commands the table does not know.
const command_info* lookup(std::string_view name);

/// For container commands: the subcommand's identity (any case), or sub_id::other.
sub_id lookup_sub(command_id container, std::string_view sub);

/// Every entry, sorted by name. For tests and for `COMMAND`-style listings.
std::span<const command_info> all();

/// Label for metrics: the table's lowercase name, or "other" (bounded cardinality).
std::string_view metric_name(const command_info* info);

/// Redis matches command names and option words ignoring ASCII case (never locale case).
constexpr char lower_ascii(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}
constexpr bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower_ascii(a[i]) != lower_ascii(b[i])) return false;
  return true;
}

}  // namespace redis_sidecar::commands
