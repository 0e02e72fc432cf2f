// client_list: CLIENT LIST's arguments and the lines CLIENT LIST and CLIENT INFO answer, without
// I/O. The sidecar answers both for its own clients, as it answers CLIENT ID and CLIENT KILL:
// forwarded, they would show the upstream's connections (the sidecar's shared ones, named
// redis-sidecar, and other apps'), with ids that CLIENT KILL through the sidecar does not know.
//
// Redis 7.0's forms and errors: CLIENT LIST, CLIENT LIST TYPE <type>, CLIENT LIST ID <id>...; the
// line has Redis' fields in Redis' order, so that tools that parse it read it as they read Redis'.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "proxy/commands/client_kill.hpp"

namespace redis_sidecar::commands {

struct list_filter {
  std::optional<client_type> type;
  std::vector<std::uint64_t> ids;  // CLIENT LIST ID: these, in this order (repeats repeated)
  bool by_id = false;
};

/// Parses CLIENT LIST (args[0] "CLIENT", args[1] "LIST"). On a bad argument, the error line Redis
/// gives (without the leading '-').
std::variant<list_filter, std::string> parse_client_list(std::span<const std::string_view> args);

/// One client's line: CLIENT LIST's fields as the sidecar knows them. Fields that describe Redis'
/// own buffers (argv-mem, multi-mem, oll, omem) are 0.
struct client_line {
  std::uint64_t id = 0;
  std::string_view addr;
  std::string_view laddr;
  int fd = -1;
  std::string_view name;
  std::int64_t age_s = 0;
  std::int64_t idle_s = 0;
  std::string_view flags = "N";
  int db = 0;
  std::int64_t sub = 0;
  std::int64_t psub = 0;
  std::int64_t ssub = 0;
  std::int64_t multi = -1;  // commands queued in MULTI, -1 outside one
  std::size_t qbuf = 0;     // request bytes read, not yet handled
  std::size_t qbuf_free = 0;
  std::size_t rbs = 0;  // read buffer size
  std::size_t obl = 0;  // reply bytes not yet written
  std::size_t tot_mem = 0;
  bool writing = false;     // events=rw
  std::string_view cmd;     // the last command, lower case, "client|list" for subcommands
  std::int64_t redir = -1;  // CLIENT TRACKING REDIRECT's client, -1 for none
  int resp = 2;
};

/// Appends `c`'s line, ending in "\n" as in CLIENT LIST (CLIENT INFO's reply has one line).
void append_client_line(std::string& out, const client_line& c);

}  // namespace redis_sidecar::commands
