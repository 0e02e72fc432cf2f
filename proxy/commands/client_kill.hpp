// client_kill: CLIENT KILL's arguments and the clients they select, without I/O. The sidecar
// answers CLIENT KILL for its own clients: the ids its clients know are the ones CLIENT ID gave
// them, and the addresses are theirs as the sidecar sees them. Forwarded, the same ids would name
// the upstream's connections, the sidecar's own shared ones among them.
//
// Redis 7.0's forms and errors: `CLIENT KILL addr:port` (+OK or "No such client"; may kill the
// caller), or filter/value pairs ID, TYPE, ADDR, LADDR, USER, SKIPME (the number killed; skips the
// caller unless SKIPME no). Every filter given must match.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace redis_sidecar::commands {

enum class client_type : std::uint8_t { normal, replica, pubsub, master };

struct kill_filter {
  bool old_form = false;  // CLIENT KILL addr:port
  std::uint64_t id = 0;   // 0: any
  std::optional<std::string> addr;
  std::optional<std::string> laddr;
  std::optional<client_type> type;
  bool skipme = true;
};

/// One client as a filter sees it (CLIENT LIST's fields of the same names).
struct client_view {
  std::uint64_t id = 0;
  std::string_view addr;
  std::string_view laddr;
  client_type type = client_type::normal;
  bool self = false;  // the client that sent CLIENT KILL
};

/// A client type by the name CLIENT KILL TYPE and CLIENT LIST TYPE take (any case; "slave" is
/// "replica").
std::optional<client_type> client_type_by_name(std::string_view name);

/// Parses CLIENT KILL (args[0] "CLIENT", args[1] "KILL", at least one more). On a bad argument,
/// the error line Redis gives (without the leading '-'). The sidecar has one user, `default`, which
/// every client is.
std::variant<kill_filter, std::string> parse_client_kill(std::span<const std::string_view> args);

/// Whether `f` selects `c`.
bool selects(const kill_filter& f, const client_view& c);

}  // namespace redis_sidecar::commands
