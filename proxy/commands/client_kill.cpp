#include "proxy/commands/client_kill.hpp"

#include <cstdint>

#include "proxy/commands/command_table.hpp"
#include "proxy/resp/detail/line.hpp"

namespace redis_sidecar::commands {

std::optional<client_type> client_type_by_name(std::string_view name) {
  if (iequals(name, "normal")) return client_type::normal;
  if (iequals(name, "replica") || iequals(name, "slave")) return client_type::replica;
  if (iequals(name, "pubsub")) return client_type::pubsub;
  if (iequals(name, "master")) return client_type::master;
  return std::nullopt;
}

std::variant<kill_filter, std::string> parse_client_kill(std::span<const std::string_view> args) {
  kill_filter f;
  if (args.size() == 3) {
    f.old_form = true;
    f.addr = std::string(args[2]);
    f.skipme = false;  // the old form may kill the caller
    return f;
  }
  if (args.size() < 3)
    return std::string("ERR wrong number of arguments for 'client|kill' command");
  for (std::size_t i = 2; i < args.size(); i += 2) {
    if (i + 1 >= args.size()) return std::string("ERR syntax error");
    const std::string_view name = args[i];
    const std::string_view value = args[i + 1];
    if (iequals(name, "id")) {
      std::int64_t id = 0;  // read as Redis reads integers (no leading zeros, no '+')
      if (!resp::detail::parse_decimal(value, id) || id < 1)
        return std::string("ERR client-id should be greater than 0");
      f.id = static_cast<std::uint64_t>(id);
    } else if (iequals(name, "type")) {
      f.type = client_type_by_name(value);
      if (!f.type) return "ERR Unknown client type '" + std::string(value) + "'";
    } else if (iequals(name, "addr")) {
      f.addr = std::string(value);
    } else if (iequals(name, "laddr")) {
      f.laddr = std::string(value);
    } else if (iequals(name, "user")) {
      if (value != "default") return "ERR No such user '" + std::string(value) + "'";
    } else if (iequals(name, "skipme")) {
      if (iequals(value, "yes"))
        f.skipme = true;
      else if (iequals(value, "no"))
        f.skipme = false;
      else
        return std::string("ERR syntax error");
    } else {
      return std::string("ERR syntax error");
    }
  }
  return f;
}

bool selects(const kill_filter& f, const client_view& c) {
  if (f.addr && *f.addr != c.addr) return false;
  if (f.laddr && *f.laddr != c.laddr) return false;
  if (f.type && *f.type != c.type) return false;
  if (f.id != 0 && f.id != c.id) return false;
  return !(c.self && f.skipme);
}

}  // namespace redis_sidecar::commands
