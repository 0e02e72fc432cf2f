// libFuzzer target for resp::request_parser. The first bytes choose the limits and the read sizes;
// the rest is a client byte stream. It is framed twice, whole and in reads of pseudo-random sizes
// into a buffer that is re-allocated and compacted like a session's, and both must give the same
// frames and the same final state. Invariants are checked with __builtin_trap. Every framed request
// also goes through what the sidecar reads of a client's arguments without I/O: the command
// table, the keys L1 forgets, a blocking command's timeout, and CLIENT KILL's and CLIENT LIST's
// parsers and lines.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "proxy/commands/blocking.hpp"
#include "proxy/commands/client_kill.hpp"
#include "proxy/commands/client_list.hpp"
#include "proxy/commands/command_table.hpp"
#include "proxy/commands/keys.hpp"
#include "proxy/resp/request_parser.hpp"

namespace {

using redis_sidecar::resp::limits;
using redis_sidecar::resp::parse_status;
using redis_sidecar::resp::request_error;
using redis_sidecar::resp::request_parser;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

struct frame {
  std::size_t size;
  bool is_inline;
  std::vector<std::string> args;
  bool operator==(const frame&) const = default;
};

struct run_result {
  std::vector<frame> frames;
  parse_status last = parse_status::need_more;
  request_error error = request_error::none;
  bool operator==(const run_result&) const = default;
};

// The command-level readers of one request's arguments: they must take any bytes.
void read_command(std::span<const std::string_view> args) {
  namespace cmd = redis_sidecar::commands;
  if (args.empty()) return;
  const cmd::command_info* info = cmd::lookup(args[0]);
  if (info == nullptr) return;
  std::size_t keys = 0;
  cmd::for_each_key(*info, args, [&](std::string_view k) {  // each key one of the arguments
    bool found = false;
    for (std::size_t i = 1; i < args.size() && !found; ++i) found = k.data() == args[i].data();
    check(found);
    ++keys;
  });
  check(keys < args.size());
  if (info->flags & cmd::blocking) {
    const auto ms = cmd::block_ms(*info, args);
    check(!ms || *ms >= 0);
  }
  if (info->id != cmd::command_id::client || args.size() < 2) return;
  const cmd::sub_id sub = cmd::lookup_sub(cmd::command_id::client, args[1]);
  if (sub == cmd::sub_id::client_kill && args.size() >= 3) {
    const auto parsed = cmd::parse_client_kill(args);
    if (const auto* f = std::get_if<cmd::kill_filter>(&parsed)) {
      const cmd::client_view self{7, "127.0.0.1:5000", "127.0.0.1:6379", cmd::client_type::normal,
                                  true};
      check(!(cmd::selects(*f, self) && f->skipme));
    }
  }
  if (sub == cmd::sub_id::client_list) {
    const auto parsed = cmd::parse_client_list(args);
    if (const auto* f = std::get_if<cmd::list_filter>(&parsed)) {
      check(f->ids.size() <= args.size());
      cmd::client_line line;
      line.name = args.back();  // whatever the bytes, one line
      std::string out;
      cmd::append_client_line(out, line);
      check(!out.empty() && out.back() == '\n');
    }
  }
}

// Frames everything it can from the front of `buffer`, erasing consumed bytes.
bool drain(request_parser& p, std::string& buffer, run_result& r) {
  for (;;) {
    const parse_status st = p.parse(buffer);
    r.last = st;
    if (st == parse_status::error) {
      r.error = p.error();
      check(r.error != request_error::none);
      return false;
    }
    if (st == parse_status::need_more) return true;
    check(p.frame_size() > 0 && p.frame_size() <= buffer.size());
    frame f{p.frame_size(), p.is_inline(), {}};
    for (const auto a : p.args()) {
      if (!p.is_inline()) {  // multibulk args point into the frame itself
        check(a.data() >= buffer.data() && a.data() + a.size() <= buffer.data() + p.frame_size());
      }
      f.args.emplace_back(a);
    }
    check(p.is_empty() == f.args.empty());
    read_command(p.args());
    check(p.parse(buffer) == parse_status::complete);  // asking again changes nothing
    r.frames.push_back(std::move(f));
    buffer.erase(0, p.frame_size());
    p.reset();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  limits l;
  if ((data[0] & 1) != 0) {  // tiny limits, to reach every limit branch
    l.max_inline_bytes = 1 + data[0] % 24;
    l.max_bulk_bytes = data[0] % 40;
    l.max_multibulk_len = data[0] % 6;
  }
  std::uint32_t seed = data[1] | (static_cast<std::uint32_t>(data[2]) << 8) | 1u;
  const std::string_view input(reinterpret_cast<const char*>(data) + 3, size - 3);

  run_result whole;
  {
    request_parser p(l);
    std::string buffer(input);
    drain(p, buffer, whole);
  }

  run_result split;
  {
    request_parser p(l);
    std::string buffer;
    std::size_t at = 0;
    bool ok = true;
    while (ok && at < input.size()) {
      seed ^= seed << 13;  // xorshift32: read sizes from 1 to 16 bytes
      seed ^= seed >> 17;
      seed ^= seed << 5;
      const std::size_t n = 1 + seed % 16;
      std::string next = buffer;  // a fresh allocation, as after compaction
      next.append(input.substr(at, n));
      buffer.swap(next);
      at += n;
      ok = drain(p, buffer, split);
    }
  }
  check(whole == split);
  return 0;
}
