// libFuzzer target for cache_tier, the sidecar's L1 logic without I/O. The first bytes choose the
// configuration (mode, L1 and journal bounds, --fallback-miss, --fallback-writes, a key prefix);
// the rest decodes into a sequence of events on one tier, with clocks that only move forward:
//
//  - requests served in fallback mode (serve), built from command names and argument words a
//    client may send: option words, integers at and past every edge Redis checks, floats, binary;
//  - requests sent upstream on one of three connections (on_request) and their replies in each
//    connection's order (on_reply), or given up as unsure (write_unsure); replies of every shape,
//    whatever the command: bulk, nil, integers, errors, arrays, RESP3 nulls and maps;
//  - the invalidation channel's events (store_tracked, store_tracked_absent, invalidated,
//    flushed, channel_lost), hits (hit), holds ending (release_holds), journal replays (replayed).
//
// Checked after each event (with __builtin_trap): every answer serve() writes is exactly one
// well-formed reply in the client's protocol, an error when it says not_servable; the keys a
// served write (SET, SETEX, PSETEX, MSET, DEL, UNLINK, the INCR family) answered for read back in
// fallback as that value, or as a miss, never as anything else; L1 and the journal stay within
// their bounds. ASan and UBSan check the
// arithmetic on every number above.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/commands/command_table.hpp"
#include "proxy/config/config.hpp"
#include "proxy/resp/reply_parser.hpp"
#include "proxy/resp/writer.hpp"
#include "proxy/tier/cache_tier.hpp"

namespace {

using redis_sidecar::cache_tier;
using redis_sidecar::config;
using redis_sidecar::resp::parse_status;
using redis_sidecar::resp::reply_parser;
namespace commands = redis_sidecar::commands;
namespace resp = redis_sidecar::resp;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

class input {
 public:
  input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::string bytes(std::size_t n) {
    std::string s;
    while (n-- > 0 && !empty()) s += static_cast<char>(next());
    return s;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// What clients send to the commands the tier serves or reads, and their neighbours.
constexpr std::string_view command_names[] = {
    "GET",    "MGET",   "EXISTS", "TTL",      "PTTL",    "SET",         "SETEX",  "PSETEX",
    "MSET",   "MSETNX", "DEL",    "UNLINK",   "EXPIRE",  "PEXPIRE",     "INCR",   "DECR",
    "INCRBY", "DECRBY", "PING",   "ECHO",     "GETDEL",  "INCRBYFLOAT", "GETEX",  "APPEND",
    "HSET",   "LPUSH",  "SELECT", "MOVE",     "COPY",    "FLUSHDB",     "SWAPDB", "FLUSHALL",
    "EVAL",   "GETSET", "SETNX",  "EXPIREAT", "PERSIST", "TYPE",        "set",    "nope",
};

// Argument words: keys (with a prefix the config may cache), option words, and numbers at the
// edges of every range the tier checks (64 bits, 64 bits in ms, the wall clock added).
constexpr std::string_view words[] = {
    "k0",
    "k1",
    "c:k2",
    "c:k3",
    "",
    "v",
    "EX",
    "PX",
    "EXAT",
    "PXAT",
    "KEEPTTL",
    "NX",
    "XX",
    "GET",
    "GT",
    "LT",
    "0",
    "1",
    "-1",
    "10",
    "-0",
    "007",
    "+1",
    " 1",
    "1 ",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "9223372036854775806",
    "-9223372036854775807",
    "9223372036854775",
    "9223372036854776",
    "-9223372036854776",
    "9223372036854775807000",
    "18446744073709551616",
    "7423372036854",
    "1800000000000",
    "1800000000",
    "3.5",
    "1e10",
    "inf",
    "nan",
    "0x10",
};

std::string word(input& in) {
  const std::uint8_t b = in.next();
  constexpr std::size_t n = sizeof(words) / sizeof(words[0]);
  if (b < 224) return std::string(words[b % n]);
  return in.bytes(b % 16);  // raw bytes, binary included
}

struct request {
  std::vector<std::string> owned;
  std::vector<std::string_view> args;
  std::string frame;
  const commands::command_info* info = nullptr;

  void finish() {
    args.assign(owned.begin(), owned.end());
    frame.clear();
    resp::append_command(frame, args);
    info = commands::lookup(args[0]);
  }
};

request make_request(input& in) {
  request r;
  const std::uint8_t c = in.next();
  r.owned.emplace_back(command_names[c % (sizeof(command_names) / sizeof(command_names[0]))]);
  const std::size_t argc = in.next() % 8;
  for (std::size_t i = 0; i < argc; ++i) r.owned.push_back(word(in));
  r.finish();
  return r;
}

// A reply the upstream may send, whatever the request was.
std::string make_reply(input& in, int proto) {
  std::string out;
  const std::uint8_t b = in.next();
  switch (b % 11) {
    case 0: resp::append_simple(out, "OK"); break;
    case 1: resp::append_null(out, proto); break;
    case 2: resp::append_bulk(out, word(in)); break;
    case 3: {
      // An integer reply, from the words (not all of them integers: those come as bulk text).
      const std::string w = word(in);
      out = ":" + w + "\r\n";
      reply_parser p;
      if (p.parse(out) != parse_status::complete || p.frame_size() != out.size()) {
        out.clear();
        resp::append_integer(out, static_cast<std::int8_t>(in.next()));
      }
      break;
    }
    case 4: resp::append_error(out, "ERR no"); break;
    case 5: {
      const std::size_t n = in.next() % 5;
      resp::append_array_header(out, n);
      for (std::size_t i = 0; i < n; ++i) {
        if (in.next() & 1)
          resp::append_bulk(out, word(in));
        else
          resp::append_null(out, proto);
      }
      break;
    }
    case 6: out = "_\r\n"; break;
    case 7:
      resp::append_map_header(out, 1, 3);
      resp::append_bulk(out, "a");
      resp::append_integer(out, 1);
      break;
    case 8:
      resp::append_error(out, "WRONGTYPE Operation against a key holding the wrong kind");
      break;
    case 9: {  // any bytes that frame as one reply
      out = in.bytes(in.next() % 32);
      reply_parser p;
      if (p.parse(out) != parse_status::complete || p.frame_size() != out.size()) out = "+OK\r\n";
      break;
    }
    default: resp::append_null_array(out, proto); break;
  }
  return out;
}

// `out` is exactly one complete reply; in RESP2 of RESP2's types only.
void check_reply(std::string_view out, int proto, bool must_be_error) {
  reply_parser p;
  check(p.parse(out) == parse_status::complete);
  check(p.frame_size() == out.size());
  if (proto == 2) check(std::string_view("+-:$*").find(p.type()) != std::string_view::npos);
  if (must_be_error) check(p.is_error());
}

struct sent {
  request r;
  int db;
  cache_tier::flight f;
};

struct fuzz_run {
  config cfg;
  cache_tier tier;
  std::int64_t now = 1'000'000;
  std::int64_t wall = 1'800'000'000'000;
  std::deque<sent> conns[3];

  explicit fuzz_run(const config& c, bool watch_writes) : cfg(c), tier(cfg) {
    if (watch_writes)  // as the near cache does: every key the sidecar's writes touch
      tier.on_write([](int db, std::string_view key) { check(db >= -1 && key.size() < 4096); });
  }

  int db_of(input& in) {
    constexpr int dbs[] = {0, 0, 1, 15};
    return dbs[in.next() % 4];
  }

  std::string serve(int db, const request& r, int proto, cache_tier::result* res = nullptr) {
    std::string out;
    const auto result = tier.serve(db, r.info, r.args, r.frame, proto, now, wall, out);
    check_reply(out, proto, result == cache_tier::result::not_servable);
    if (res != nullptr) *res = result;
    return out;
  }

  // GET `key` in fallback answers `value` (nullopt: nil) or a miss (nil, or --fallback-miss=error's
  // error), nothing else.
  void check_reads_back(int db, std::string_view key, std::optional<std::string_view> value,
                        int proto) {
    request get;
    get.owned = {"GET", std::string(key)};
    get.finish();
    const std::string out = serve(db, get, proto);
    std::string expected;
    if (value) resp::append_bulk(expected, *value);
    std::string nil;
    resp::append_null(nil, proto);
    check(out == expected || out == nil || out[0] == '-');
  }

  // What a served write answered must be what a GET of its keys reads next (or a miss).
  void check_served_write(int db, const request& r, std::string_view out, int proto) {
    const std::string_view name = r.info->name;
    const auto& a = r.args;
    if (out == "+OK\r\n") {
      if (name == "set") check_reads_back(db, a[1], a[2], proto);
      if (name == "setex" || name == "psetex") check_reads_back(db, a[1], a[3], proto);
      if (name == "mset") {  // the last value given for a key is the one it holds
        for (std::size_t i = 1; i + 1 < a.size(); i += 2) {
          std::size_t last = i;
          for (std::size_t j = i + 2; j + 1 < a.size(); j += 2)
            if (a[j] == a[i]) last = j;
          check_reads_back(db, a[i], a[last + 1], proto);
        }
      }
    } else if (out[0] == ':') {
      if (name == "del" || name == "unlink")
        for (std::size_t i = 1; i < a.size(); ++i) check_reads_back(db, a[i], std::nullopt, proto);
      if (name == "incr" || name == "decr" || name == "incrby" || name == "decrby")
        check_reads_back(db, a[1], out.substr(1, out.size() - 3), proto);
    }
  }

  void step(input& in) {
    const std::uint8_t what = in.next();
    const int proto = (what & 0x80) ? 3 : 2;
    switch (what % 12) {
      case 0:
      case 1:
      case 2: {  // fallback
        const int db = db_of(in);
        request r = make_request(in);
        cache_tier::result res;
        const std::string out = serve(db, r, proto, &res);
        if (res != cache_tier::result::served || r.info == nullptr) break;
        check_served_write(db, r, out, proto);
        break;
      }
      case 3:
      case 4: {  // a request goes upstream
        const int db = db_of(in);
        request r = make_request(in);
        if (r.info == nullptr) break;
        const std::uint32_t conn = in.next() % 3;
        const cache_tier::flight f{conn, tier.write_clock()};
        const bool stores = (in.next() & 7) != 0;
        tier.on_request(db, *r.info, r.args, f, stores);
        if (stores && tier.wants_reply(*r.info)) conns[conn].push_back(sent{std::move(r), db, f});
        break;
      }
      case 5:
      case 6: {  // a reply comes back, in its connection's order
        auto& q = conns[in.next() % 3];
        if (q.empty()) break;
        sent s = std::move(q.front());
        q.pop_front();
        if (in.next() & 0x40) {
          tier.write_unsure(s.db, *s.r.info, s.r.args, s.f, now);
        } else {
          const std::string reply = make_reply(in, proto);
          tier.on_reply(s.db, *s.r.info, s.r.args, reply, now, wall, s.f);
        }
        break;
      }
      case 7: {  // the invalidation channel
        const int db = db_of(in);
        const std::string key = word(in);
        switch (in.next() % 6) {
          case 0: {
            const std::string value = word(in);
            constexpr std::int64_t expiries[] = {0, -1, 1, 1'800'000'060'000, INT64_MAX};
            tier.store_tracked(db, key, value, expiries[in.next() % 5], now);
            break;
          }
          case 1: tier.store_tracked_absent(db, key, now); break;
          case 2: tier.invalidated(db, key); break;
          case 3: tier.flushed(); break;
          case 4: tier.channel_lost(); break;
          default: {
            const auto h = tier.hit(db, key, now);
            if (h && h->absent) check(h->value.empty());
            break;
          }
        }
        break;
      }
      case 8: {  // a journaled write replayed
        const int db = db_of(in);
        request r = make_request(in);
        tier.replayed(db, r.args);
        break;
      }
      case 9: tier.release_holds(now); break;
      case 10: {
        const std::uint8_t b = in.next();
        // Up to 2^40 ms (35 years) at a time; the clocks stay far from 64 bits, as real ones.
        const std::int64_t step = b < 200 ? b : std::int64_t{1} << ((b - 200) % 41);
        if (wall > (std::int64_t{1} << 60)) break;
        now += step;
        wall += step;
        break;
      }
      default: {  // modes change at run time (auto resolving, the channel lost or back)
        constexpr cache_tier::cache_mode modes[] = {
            cache_tier::cache_mode::fallback, cache_tier::cache_mode::ttl,
            cache_tier::cache_mode::tracking, cache_tier::cache_mode::keyspace};
        const std::uint8_t m = in.next();
        if (m & 0x80) {  // the upstream refuses the sidecar's credentials, or takes them again
          tier.refuse_writes((m & 0x40) ? "bad password" : "");
        } else if (tier.enabled()) {
          tier.set_mode(modes[m % 4]);
        }
        break;
      }
    }
    check(tier.l1().bytes() <= cfg.cache_max_bytes);
    check(tier.journal().bytes() <= cfg.fallback_journal_max_bytes);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in(data, size);
  const std::uint8_t a = in.next();
  const std::uint8_t b = in.next();
  config c;
  constexpr std::string_view modes[] = {"fallback", "ttl", "tracking", "keyspace", "off"};
  c.cache_mode = std::string(modes[a % 5]);
  if (a & 0x08) c.cache_prefix = "c:";
  if (a & 0x10) c.fallback_miss = "error";
  if (a & 0x20) c.fallback_writes = "reject";
  c.cache_max_bytes = (b & 0x80) ? std::size_t{1} << 20 : std::size_t{64} + (b & 0x3f) * 8;
  c.cache_max_entry_bytes = (b & 0x40) ? std::size_t{1} << 20 : 48;
  c.fallback_journal_max_bytes = (a & 0x40) ? std::size_t{1} << 20 : 256;
  c.cache_ttl_ms = (a & 0x80) ? 60'000 : 50;
  fuzz_run run(c, (b & 0x20) != 0);
  while (!in.empty()) run.step(in);
  return 0;
}
