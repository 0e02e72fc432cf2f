#include "proxy/commands/client_list.hpp"

#include <cstdint>
#include <type_traits>

#include "proxy/commands/command_table.hpp"
#include "proxy/resp/detail/line.hpp"

namespace redis_sidecar::commands {

std::variant<list_filter, std::string> parse_client_list(std::span<const std::string_view> args) {
  list_filter f;
  if (args.size() == 2) return f;
  if (args.size() == 4 && iequals(args[2], "type")) {
    f.type = client_type_by_name(args[3]);
    if (!f.type) return "ERR Unknown client type '" + std::string(args[3]) + "'";
    return f;
  }
  if (args.size() > 3 && iequals(args[2], "id")) {
    f.by_id = true;
    for (std::size_t i = 3; i < args.size(); ++i) {
      std::int64_t id = 0;  // read as Redis reads integers (no leading zeros, no '+')
      if (!resp::detail::parse_decimal(args[i], id)) return std::string("ERR Invalid client ID");
      if (id > 0) f.ids.push_back(static_cast<std::uint64_t>(id));  // no client has id <= 0
    }
    return f;
  }
  return std::string("ERR syntax error");
}

void append_client_line(std::string& out, const client_line& c) {
  bool first = true;
  const auto field = [&out, &first](std::string_view name, auto value) {
    if (!first) out += ' ';
    first = false;
    out += name;
    out += '=';
    if constexpr (std::is_convertible_v<decltype(value), std::string_view>)
      out += std::string_view(value);
    else
      out += std::to_string(value);
  };
  field("id", c.id);
  field("addr", c.addr);
  field("laddr", c.laddr);
  field("fd", c.fd);
  field("name", c.name);
  field("age", c.age_s);
  field("idle", c.idle_s);
  field("flags", c.flags);
  field("db", c.db);
  field("sub", c.sub);
  field("psub", c.psub);
  field("ssub", c.ssub);
  field("multi", c.multi);
  field("qbuf", c.qbuf);
  field("qbuf-free", c.qbuf_free);
  field("argv-mem", 0);
  field("multi-mem", 0);
  field("rbs", c.rbs);
  field("rbp", c.rbs);  // its peak: read buffers keep their size
  field("obl", c.obl);
  field("oll", 0);
  field("omem", 0);
  field("tot-mem", c.tot_mem);
  field("events", c.writing ? "rw" : "r");
  field("cmd", c.cmd);
  field("user", "default");
  field("redir", c.redir);
  field("resp", c.resp);
  out += '\n';
}

}  // namespace redis_sidecar::commands
