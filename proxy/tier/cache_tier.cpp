#include "proxy/tier/cache_tier.hpp"

#include <charconv>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "proxy/commands/keys.hpp"
#include "proxy/errors.hpp"
#include "proxy/resp/detail/line.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/resp/writer.hpp"

namespace redis_sidecar {
namespace {

using cache::add_ms;
using commands::command_id;
using commands::command_info;
using commands::iequals;
constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

// Expiry arithmetic on numbers a client chose: Redis refuses an expire time that does not fit in
// 64 bits once converted to milliseconds and added to its clock ("invalid expire time"); the
// sidecar refuses the same ones (against the wall clock, as Redis), and its own sums saturate, so
// no value a client or the upstream sends overflows.
enum class expire_command : std::uint8_t { set, setex, psetex, expire, pexpire };
std::string_view invalid_expire(expire_command c) {
  switch (c) {
    case expire_command::set: return "ERR invalid expire time in 'set' command";
    case expire_command::setex: return "ERR invalid expire time in 'setex' command";
    case expire_command::psetex: return "ERR invalid expire time in 'psetex' command";
    case expire_command::expire: return "ERR invalid expire time in 'expire' command";
    case expire_command::pexpire: break;
  }
  return "ERR invalid expire time in 'pexpire' command";
}

// v seconds (or milliseconds) in milliseconds, or nullopt when that passes 64 bits either way.
std::optional<std::int64_t> to_ms(std::int64_t v, bool seconds) {
  std::int64_t ms = v;
  if (seconds && __builtin_mul_overflow(v, 1000, &ms)) return std::nullopt;
  return ms;
}

// Whether `ms` from now (the wall clock, in ms) is a time Redis can hold.
bool fits_after(std::int64_t wall_ms, std::int64_t ms) { return ms <= never - wall_ms; }

// An integer as Redis reads one (string2ll: no '+', no leading zeros, no "-0").
std::optional<std::int64_t> to_int(std::string_view s) {
  std::int64_t v = 0;
  if (!resp::detail::parse_decimal(s, v)) return std::nullopt;
  return v;
}

// One element of a reply at `pos`: a bulk string (value set), a null (nullopt, ok), or anything
// else (ok = false). Advances `pos` past it.
struct bulk_read {
  bool ok = false;
  std::optional<std::string_view> value;
};

bulk_read read_bulk(std::string_view frame, std::size_t& pos) {
  bulk_read r;
  if (pos >= frame.size()) return r;
  if (std::size_t header = 0, size = 0; resp::bulk_frame(frame.substr(pos), header, size)) {
    r.ok = true;  // the usual element, framed the quick way (every GET reply with a value)
    r.value = frame.substr(pos + header, size - header - 2);
    pos += size;
    return r;
  }
  const auto eol = frame.find("\r\n", pos);
  if (eol == std::string_view::npos) return r;
  const char type = frame[pos];
  const std::string_view head = frame.substr(pos + 1, eol - pos - 1);
  if (type == '_') {
    pos = eol + 2;
    r.ok = true;
    return r;
  }
  if (type != '$') return r;
  const auto len = to_int(head);
  if (!len) return r;
  if (*len < 0) {
    pos = eol + 2;
    r.ok = true;
    return r;
  }
  const auto start = eol + 2;
  const auto size = static_cast<std::size_t>(*len);
  if (start + size + 2 > frame.size()) return r;
  r.value = frame.substr(start, size);
  r.ok = true;
  pos = start + size + 2;
  return r;
}

// Reads "*N\r\n" at the start of `frame`; -1 when it is not an array header.
std::int64_t read_array_header(std::string_view frame, std::size_t& pos) {
  if (frame.empty() || frame[0] != '*') return -1;
  const auto eol = frame.find("\r\n");
  if (eol == std::string_view::npos) return -1;
  const auto n = to_int(frame.substr(1, eol - 1));
  pos = eol + 2;
  return n ? *n : -1;
}

bool is_ok(std::string_view reply) { return reply == "+OK\r\n"; }

std::string_view lower_name(const command_info* info, std::string_view fallback) {
  return info != nullptr ? info->name : fallback;
}

// True for a version string ("7.0.15") of major.minor or later; false for anything unparsable.
bool version_at_least(std::string_view v, std::int64_t major, std::int64_t minor) {
  const auto dot = v.find('.');
  if (dot == std::string_view::npos) return false;
  const auto second = v.find('.', dot + 1);
  const auto ma = to_int(v.substr(0, dot));
  const auto mi =
      to_int(v.substr(dot + 1, second == std::string_view::npos ? v.npos : second - dot - 1));
  if (!ma || !mi) return false;
  return *ma > major || (*ma == major && *mi >= minor);
}

// The journal's form of a SET with a relative expiry (SET ... EX or PX, SETEX, PSETEX): SET key
// value with the other options as given (NX, XX, GET) and PXAT at the Unix time in ms the expiry
// falls at, as Redis itself propagates it to its AOF and replicas. Replayed after the outage, the
// key then expires when the sidecar said it would, not that much later.
std::string absolute_set(std::span<const std::string_view> args, std::int64_t at_ms) {
  const std::string at = std::to_string(at_ms);
  std::vector<std::string_view> words{"SET", args[1]};
  if (iequals(args[0], "set")) {
    words.push_back(args[2]);
    for (std::size_t i = 3; i < args.size(); ++i) {
      const std::string_view a = args[i];
      if (iequals(a, "ex") || iequals(a, "px") || iequals(a, "exat") || iequals(a, "pxat"))
        ++i;  // and its value
      else
        words.push_back(a);
    }
  } else {  // SETEX key seconds value / PSETEX key ms value
    words.push_back(args[3]);
  }
  words.push_back("PXAT");
  words.push_back(at);
  std::string frame;
  resp::append_command(frame, words);
  return frame;
}

// EXPIRE or PEXPIRE key time [NX|XX|GT|LT] as the journal keeps it: PEXPIREAT key <Unix ms>
// with the same options (in every Redis version that has PEXPIRE's options).
std::string absolute_expire(std::span<const std::string_view> args, std::int64_t at_ms) {
  const std::string at = std::to_string(at_ms);
  std::vector<std::string_view> words{"PEXPIREAT", args[1], at};
  words.insert(words.end(), args.begin() + 3, args.end());
  std::string frame;
  resp::append_command(frame, words);
  return frame;
}

}  // namespace

// SET's options, as Redis parses them (see t_string.c parseExtendedStringArgumentsOrReply).
struct cache_tier::set_options {
  bool nx = false, xx = false, get = false, keepttl = false;
  std::int64_t expiry = 0;  // monotonic ms, 0: none
  std::int64_t relative_ms = 0;  // EX or PX (SETEX, PSETEX): the time given, in ms; 0: none
  std::string_view error;   // non-empty: the request is invalid

  static set_options parse(std::span<const std::string_view> args, std::size_t first,
                           cache::time_ms now, std::int64_t wall_ms) {
    set_options o;
    // The expiry option given (EX, PX, EXAT or PXAT; again and again if the same one: the last
    // value counts) and its value, read once every option has been.
    std::string_view unit;
    std::string_view expire;
    for (std::size_t i = first; i < args.size(); ++i) {
      const std::string_view a = args[i];
      const bool last = i + 1 >= args.size();
      if (iequals(a, "nx") && !o.xx) {
        o.nx = true;
      } else if (iequals(a, "xx") && !o.nx) {
        o.xx = true;
      } else if (iequals(a, "get")) {
        o.get = true;
      } else if (iequals(a, "keepttl") && unit.empty()) {
        o.keepttl = true;
      } else if ((iequals(a, "ex") || iequals(a, "px") || iequals(a, "exat") ||
                  iequals(a, "pxat")) &&
                 !o.keepttl && (unit.empty() || iequals(a, unit)) && !last) {
        unit = a;
        expire = args[++i];
      } else {
        o.error = errors::syntax;
        return o;
      }
    }
    if (unit.empty()) return o;
    const auto v = to_int(expire);
    if (!v) {
      o.error = errors::not_integer;
      return o;
    }
    const bool seconds = iequals(unit, "ex") || iequals(unit, "exat");
    const bool absolute = iequals(unit, "exat") || iequals(unit, "pxat");
    const auto ms = to_ms(*v, seconds);
    if (*v <= 0 || !ms || (!absolute && !fits_after(wall_ms, *ms))) {
      o.error = invalid_expire(expire_command::set);
      return o;
    }
    if (!absolute) o.relative_ms = *ms;
    o.expiry = add_ms(now, absolute ? *ms - wall_ms : *ms);
    if (o.expiry <= 0) o.expiry = 1;  // already past: expires at once
    return o;
  }
};

void cache_tier::set_upstream_version(std::string_view version) {
  set_pxat_ = version_at_least(version, 6, 2);
}

cache_tier::cache_mode cache_tier::parse_mode(std::string_view m) {
  if (m == "off") return cache_mode::off;
  if (m == "ttl") return cache_mode::ttl;
  if (m == "tracking") return cache_mode::tracking;
  if (m == "keyspace") return cache_mode::keyspace;
  return cache_mode::fallback;  // "fallback", and "auto" until the upstream is probed
}

std::string_view cache_tier::mode_name(cache_mode m) {
  switch (m) {
    case cache_mode::off: return "off";
    case cache_mode::fallback: return "fallback";
    case cache_mode::ttl: return "ttl";
    case cache_mode::tracking: return "tracking";
    case cache_mode::keyspace: return "keyspace";
  }
  return "fallback";
}

cache_tier::cache_tier(const config& cfg)
    : enabled_(cfg.cache_mode != "off"),
      mode_(parse_mode(cfg.cache_mode)),
      miss_is_error_(cfg.fallback_miss == "error"),
      journal_writes_(cfg.fallback_writes == "journal"),
      ttl_ms_(cfg.cache_ttl_ms),
      max_entry_bytes_(cfg.cache_max_entry_bytes),
      // L1 also holds each value's header (store()): the limit is on key + value alone.
      l1_(cache::options{cfg.cache_max_bytes,
                         cfg.cache_max_entry_bytes > SIZE_MAX - max_header_bytes
                             ? SIZE_MAX
                             : cfg.cache_max_entry_bytes + max_header_bytes}),
      journal_(cfg.fallback_journal_max_bytes),
      fence_(enabled_ ? 16384 : 1, l1_.hash_seed()),
      hold_ms_(2 * static_cast<std::int64_t>(cfg.command_timeout_ms)) {
  std::string_view rest = cfg.cache_prefix;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto p = rest.substr(0, comma);
    if (!p.empty()) prefixes_.emplace_back(p);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
}

// ---------------------------------------------------------------------------------------------
// L1 entries

void cache_tier::store(int db, std::string_view key, std::uint64_t hash, std::string_view value,
                       std::int64_t upstream_expiry, cache::time_ms now, bool tracked, bool absent,
                       bool written) {
  // The stored value is this header (flags, then the upstream's expiry and the tracking epoch when
  // flagged) followed by the value; L1 copies the two in place, so the value is copied once.
  if (key.size() > max_entry_bytes_ || value.size() > max_entry_bytes_ - key.size()) {
    l1_.erase(db, key);  // as L1 forgets a pair too large for it: no older value stays
    return;
  }
  char header[max_header_bytes];
  std::size_t n = 0;
  header[n++] = static_cast<char>((upstream_expiry > 0 ? flag_expiry : 0) |
                                  (upstream_expiry == expiry_unknown ? flag_expiry_unknown : 0) |
                                  (tracked ? flag_tracked : 0) | (absent ? flag_absent : 0) |
                                  (written ? flag_written : 0));
  if (upstream_expiry > 0) {
    std::memcpy(header + n, &upstream_expiry, 8);
    n += 8;
  }
  if (tracked) {
    std::memcpy(header + n, &epoch_, 4);
    n += 4;
  }
  std::int64_t expires = now + ttl_ms_;
  if (upstream_expiry > 0 && upstream_expiry < expires) expires = upstream_expiry;
  if (l1_.put(db, key, std::string_view(header, n), value, expires, now, hash)) ++counters_.fills;
}

void cache_tier::invalidate(int db, std::string_view key) {
  if (l1_.erase(db, key)) ++counters_.invalidations;
  if (on_write_) on_write_(db, key);
}

// As invalidate(), for a write whose reply stores the key again (the SET family): the entry stays,
// hidden, so that the reply can overwrite it in place.
void cache_tier::hide(int db, std::string_view key, std::uint64_t hash) {
  if (const auto v = l1_.value_in_place(db, key, hash)) {
    if (v->empty()) {
      l1_.erase(db, key);
      ++counters_.invalidations;
    } else if (!((*v)[0] & flag_writing)) {
      (*v)[0] = static_cast<char>((*v)[0] | flag_writing);
      ++counters_.invalidations;
    }
  }
  if (on_write_) on_write_(db, key);
}

std::optional<cache_tier::stored> cache_tier::lookup(int db, std::string_view key,
                                                     cache::time_ms now, bool absent_too) {
  const auto e = l1_.get(db, key, now);
  if (!e || e->value.empty()) return std::nullopt;
  std::string_view v = e->value;
  const auto flags = static_cast<unsigned char>(v[0]);
  if (flags & flag_writing) return std::nullopt;
  if ((flags & flag_absent) && !absent_too) return std::nullopt;
  v.remove_prefix(1);
  stored s;
  s.absent = (flags & flag_absent) != 0;
  s.expiry_known = (flags & flag_expiry_unknown) == 0;
  if ((flags & flag_expiry) && v.size() >= 8) {
    std::memcpy(&s.upstream_expiry, v.data(), 8);
    v.remove_prefix(8);
  }
  if ((flags & flag_tracked) && v.size() >= 4) {
    std::uint32_t epoch = 0;
    std::memcpy(&epoch, v.data(), 4);
    v.remove_prefix(4);
    s.tracked_fresh = epoch == epoch_;
    s.tracked_stale = !s.tracked_fresh;
  }
  s.value = v;
  return s;
}

bool cache_tier::key_cached(std::string_view key) const {
  if (prefixes_.empty()) return true;
  for (const auto& p : prefixes_)
    if (key.substr(0, p.size()) == p) return true;
  return false;
}

std::optional<cache_tier::hit_value> cache_tier::hit(int db, std::string_view key,
                                                     cache::time_ms now, bool* missed) {
  if (mode_ != cache_mode::ttl && !coherent(mode_)) return std::nullopt;
  if (!key_cached(key)) return std::nullopt;
  const auto s = lookup(db, key, now, mode_ == cache_mode::tracking);
  // tracking, keyspace: only entries the invalidation channel protects right now; ttl: any entry
  // whose server TTL L1 knows (each is younger than --cache-ttl by construction, and a value from
  // a GET reply, which may have expired on the server meanwhile, is not served).
  if (s && (mode_ == cache_mode::ttl ? s->expiry_known || ttl_unknown_hits_ : s->tracked_fresh)) {
    ++counters_.hits;
    return hit_value{s->value, s->absent};
  }
  if (missed != nullptr)
    *missed = true;
  else
    ++counters_.misses;
  return std::nullopt;
}

void cache_tier::store_tracked(int db, std::string_view key, std::string_view value,
                               std::int64_t upstream_expiry, cache::time_ms now) {
  const std::uint64_t hash = key_hash(db, key);
  if (!fence_.held(hash)) store(db, key, hash, value, upstream_expiry, now, true);
}

void cache_tier::store_tracked_absent(int db, std::string_view key, cache::time_ms now) {
  if (mode_ != cache_mode::tracking) return;
  const std::uint64_t hash = key_hash(db, key);
  if (!fence_.held(hash)) store(db, key, hash, {}, 0, now, true, true);
}

// Tracking mode: Redis sends a key's invalidation once and tracks the key no more until the
// channel reads it again. So an invalidation that finds the value of this sidecar's own
// acknowledged write (stored untracked, never a hit) is about that very write (the key was
// tracked when it ran) or about a write that ran before it: the value stays, for fallback, where
// it would otherwise be lost to its own write's invalidation. As with every value fallback serves,
// a write made past the sidecar after it is not seen (but by a read of the channel in between).
void cache_tier::invalidated(int db, std::string_view key) {
  ++counters_.pushed_invalidations;
  // A write of the key is journaled, still to be replayed: L1 holds what the upstream will hold
  // once it is (a replay refused for now leaves fallback on, the upstream answering meanwhile).
  if (!unreplayed_.empty() && unreplayed_.contains(key_hash(db, key))) return;
  if (mode_ == cache_mode::tracking) {
    const auto v = l1_.value_in_place(db, key, key_hash(db, key));
    if (v && !v->empty() &&
        ((*v)[0] & (flag_written | flag_tracked | flag_writing | flag_absent)) == flag_written) {
      if (on_write_) on_write_(db, key);
      return;
    }
  }
  invalidate(db, key);
}

void cache_tier::flushed() {
  ++counters_.pushed_invalidations;
  if (unreplayed_.empty()) {
    l1_.clear();
    return;
  }
  // Keys with a journaled write still to be replayed keep their values (see invalidated()).
  std::vector<std::pair<int, std::string>> gone;
  l1_.for_each([&](const cache::entry_ref& e) {
    if (!unreplayed_.contains(key_hash(e.db, e.key))) gone.emplace_back(e.db, std::string(e.key));
  });
  for (const auto& [db, key] : gone) l1_.erase(db, key);
}

// ---------------------------------------------------------------------------------------------
// Normal operation

bool cache_tier::wants_reply(const command_info& info) const {
  return enabled_ && (info.flags & (commands::cacheable | commands::write)) != 0;
}

bool cache_tier::hides_keys(const command_info& info) {
  switch (info.id) {
    case command_id::set:
    case command_id::setex:
    case command_id::psetex:
    case command_id::mset:
    case command_id::msetnx: return true;
    default: return false;
  }
}

bool cache_tier::writes_beyond_keys(const command_info& info) {
  return (info.flags & commands::flush) != 0 || info.id == command_id::swapdb ||
         info.id == command_id::move || info.id == command_id::copy;
}

void cache_tier::on_request(int db, const command_info& info,
                            std::span<const std::string_view> args, flight f, bool reply_stores,
                            std::uint64_t key1_hash) {
  if (!enabled_ || !(info.flags & commands::write)) return;
  if ((info.flags & commands::flush) || info.id == command_id::swapdb) {
    if (info.id == command_id::flushdb)
      l1_.clear_db(db);
    else
      l1_.clear();
    fence_.touched_all(f.conn);
    if (on_write_) on_write_(-1, {});
    return;
  }
  if (reply_stores && hides_keys(info)) {
    commands::for_each_key(info, args, [&](std::string_view key) {
      const std::uint64_t hash = hash_of(db, key, args, key1_hash);
      hide(db, key, hash);
      fence_.touched(hash, f.conn);
    });
    return;
  }
  commands::for_each_key(info, args, [&](std::string_view key) {
    invalidate(db, key);
    fence_.touched(hash_of(db, key, args, key1_hash), f.conn);
  });
  // MOVE key db / COPY src dst DB n: the key also changes in the other db.
  if ((info.id == command_id::move && args.size() == 3) || info.id == command_id::copy) {
    for (std::size_t i = 2; i < args.size(); ++i) {
      const auto other = to_int(args[i]);
      if (other && *other >= 0 && *other <= std::numeric_limits<int>::max()) {
        for (std::size_t k = 1; k < args.size() && k < 3; ++k) {
          invalidate(static_cast<int>(*other), args[k]);
          fence_.touched(key_hash(static_cast<int>(*other), args[k]), f.conn);
        }
      }
    }
  }
}

void cache_tier::on_reply(int db, const command_info& info, std::span<const std::string_view> args,
                          std::string_view reply, cache::time_ms now, std::int64_t wall_ms,
                          flight f, std::uint64_t key1_hash) {
  if (!enabled_ || reply.empty()) return;
  const bool write = (info.flags & commands::write) != 0;
  if (on_write_ && write) {
    // The write has run: a channel read still in flight may have run before it, and its reply
    // can arrive after this one (another connection), so it must not fill L1 or be joined.
    if ((info.flags & commands::flush) || info.id == command_id::swapdb)
      on_write_(-1, {});
    else
      commands::for_each_key(info, args, [&](std::string_view key) { on_write_(db, key); });
  }
  if ((reply[0] == '-' || reply[0] == '!') && !write) {
    // A read that failed says nothing about the key (the error may be the sidecar's own, for an
    // upstream that went away), except that a key of another type is no string to keep.
    if (reply.substr(1, 9) == "WRONGTYPE")
      commands::for_each_key(info, args, [&](std::string_view key) { invalidate(db, key); });
    return;
  }
  switch (info.id) {
    case command_id::get: {  // the common case, kept short: a value, or nil
      if (args.size() != 2) return;
      std::size_t pos = 0;
      if (const auto r = read_bulk(reply, pos); r.ok)
        read_reply(db, args[1], hash_of(db, args[1], args, key1_hash), r.value, f, now);
      else
        invalidate(db, args[1]);
      return;
    }
    case command_id::mget:
    case command_id::set:
    case command_id::setex:
    case command_id::psetex:
    case command_id::mset:
    case command_id::msetnx: store_reply(db, info, args, reply, now, wall_ms, f, key1_hash); return;
    default: on_request(db, info, args, f, true, key1_hash); return;  // any other write: again
  }
}

void cache_tier::write_unsure(int db, const command_info& info,
                              std::span<const std::string_view> args, flight f,
                              cache::time_ms now) {
  if (!enabled_ || !(info.flags & commands::write)) return;
  on_request(db, info, args, f, false);
  if ((info.flags & commands::flush) || info.id == command_id::swapdb) return;  // dropped all
  commands::for_each_key(info, args, [&](std::string_view key) {
    fence_.hold(key_hash(db, key), f.conn);
    held_.push_back(held{db, f.conn, now + hold_ms_, std::string(key)});
  });
}

void cache_tier::release_holds(cache::time_ms now) {
  std::erase_if(held_, [&](const held& h) {
    if (h.until > now) return false;
    invalidate(h.db, h.key);
    fence_.release(key_hash(h.db, h.key), h.conn);
    return true;
  });
}

// A read's value (nullopt: the key is absent), if no other connection's write may have overtaken
// it. Writes acknowledged in fallback and not replayed yet are newer than anything the upstream
// says (a client on a dedicated connection still reaches it): nothing it says is kept then.
void cache_tier::read_reply(int db, std::string_view key, std::uint64_t hash,
                            std::optional<std::string_view> value, flight f, cache::time_ms now) {
  if (!journal_.empty()) return;
  if (!fence_.settled(hash, f.conn, f.since)) return;
  if (value)
    store(db, key, hash, *value, expiry_unknown, now);
  else
    invalidate(db, key);
}

void cache_tier::store_reply(int db, const command_info& info,
                             std::span<const std::string_view> args, std::string_view reply,
                             cache::time_ms now, std::int64_t wall_ms, flight f,
                             std::uint64_t key1_hash) {
  const bool journaled = !journal_.empty();  // see read_reply()
  // A write's value, if it was applied and no other connection's write may have overtaken it
  // either way; else the key goes. Then the write has run: an event on its key.
  auto wrote = [&](std::string_view key, bool applied, std::string_view value,
                   std::int64_t expiry) {
    const std::uint64_t hash = hash_of(db, key, args, key1_hash);
    if (fence_.settle(hash, f.conn, f.since) && applied && !journaled)
      store(db, key, hash, value, expiry, now, false, false, true);
    else
      invalidate(db, key);
  };
  switch (info.id) {
    case command_id::mget: {
      std::size_t pos = 0;
      if (read_array_header(reply, pos) != static_cast<std::int64_t>(args.size()) - 1) return;
      for (std::size_t i = 1; i < args.size(); ++i) {
        const auto r = read_bulk(reply, pos);
        if (!r.ok) return;
        read_reply(db, args[i], hash_of(db, args[i], args, key1_hash), r.value, f, now);
      }
      return;
    }
    case command_id::set: {
      if (args.size() < 3) return;
      // (SET key value, the common case, has no options to parse)
      const auto o = args.size() == 3 ? set_options{} : set_options::parse(args, 3, now, wall_ms);
      // Stored only when the reply proves the value was set: "+OK" without GET. With GET and no
      // condition the set always happens. KEEPTTL keeps an expiry we do not know: not stored.
      const bool applied =
          o.error.empty() && !o.keepttl &&
          ((!o.get && is_ok(reply)) || (o.get && !o.nx && !o.xx && reply[0] != '-'));
      wrote(args[1], applied, args[2], o.expiry);
      return;
    }
    case command_id::setex:
    case command_id::psetex: {
      if (args.size() < 2) return;
      const auto v = args.size() == 4 ? to_int(args[2]) : std::nullopt;
      const auto ms = v && *v > 0 ? to_ms(*v, info.id == command_id::setex) : std::nullopt;
      const bool applied = ms && is_ok(reply);
      wrote(args[1], applied, applied ? args[3] : std::string_view(),
            applied ? add_ms(now, *ms) : 0);
      return;
    }
    default: {  // MSET, MSETNX
      const bool applied = info.id == command_id::mset ? is_ok(reply) : reply == ":1\r\n";
      for (std::size_t i = 1; i + 1 < args.size(); i += 2) wrote(args[i], applied, args[i + 1], 0);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Fallback

bool cache_tier::journal_write(int db, std::span<const std::string_view> args,
                               std::string_view frame, std::string& out) {
  if (!writes_refused_.empty()) {
    ++counters_.rejected;
    resp::append_error(out, std::string(errors::fallback_writes_misconfigured) + writes_refused_ +
                                "); a write could not be replayed, so it is not accepted");
    return false;
  }
  if (!journal_writes_) {
    ++counters_.rejected;
    resp::append_error(out, errors::fallback_writes_rejected);
    return false;
  }
  if (!journal_.push(db, frame)) {
    ++counters_.rejected;
    resp::append_error(out, errors::fallback_journal_full);
    return false;
  }
  ++counters_.journaled;
  if (const command_info* info = commands::lookup(args[0]))
    commands::for_each_key(*info, args,
                           [&](std::string_view key) { ++unreplayed_[key_hash(db, key)]; });
  return true;
}

cache_tier::result cache_tier::serve(int db, const command_info* info,
                                     std::span<const std::string_view> args, std::string_view frame,
                                     int proto, cache::time_ms now, std::int64_t wall_ms,
                                     std::string& out) {
  const std::string_view name = lower_name(info, "other");
  auto not_servable = [&] {
    ++counters_.not_servable;
    std::string e(errors::fallback_not_servable_prefix);
    e += info != nullptr ? info->name : std::string_view("unknown");
    e += errors::fallback_not_servable_suffix;
    resp::append_error(out, e);
    return result::not_servable;
  };
  if (!enabled_ || info == nullptr) return not_servable();
  auto wrong_args = [&] {
    resp::append_error(out,
                       "ERR wrong number of arguments for '" + std::string(name) + "' command");
    ++counters_.served;
    return result::served;
  };
  const auto n = args.size();
  if (info->arity > 0 ? n != static_cast<std::size_t>(info->arity)
                      : n < static_cast<std::size_t>(-info->arity))
    return wrong_args();

  result r = result::served;
  if (name == "get") {
    r = serve_get(db, args[1], proto, now, out);
  } else if (name == "mget") {
    r = serve_mget(db, args, proto, now, out);
  } else if (name == "exists") {
    std::int64_t count = 0;
    for (std::size_t i = 1; i < n; ++i) count += lookup(db, args[i], now) ? 1 : 0;
    resp::append_integer(out, count);
  } else if (name == "ttl" || name == "pttl") {
    r = serve_ttl(db, args[1], name == "pttl", now, out);
  } else if (name == "set" || name == "setex" || name == "psetex") {
    r = serve_set(db, args, frame, proto, now, wall_ms, out);
  } else if (name == "mset") {
    if (n % 2 == 0) return wrong_args();
    if (journal_write(db, args, frame, out)) {
      for (std::size_t i = 1; i + 1 < n; i += 2)
        store(db, args[i], key_hash(db, args[i]), args[i + 1], 0, now);
      resp::append_simple(out, "OK");
    }
  } else if (name == "del" || name == "unlink") {
    r = serve_write_keys(db, args, frame, now, out);
  } else if (name == "expire" || name == "pexpire") {
    r = serve_expire(db, args, name == "pexpire", now, wall_ms, out);
  } else if (name == "incr" || name == "decr") {
    r = serve_incr(db, args, frame, name == "incr" ? 1 : -1, false, now, out);
  } else if (name == "incrby" || name == "decrby") {
    r = serve_incr(db, args, frame, name == "incrby" ? 1 : -1, true, now, out);
  } else if (name == "ping") {
    if (n == 1)
      resp::append_simple(out, "PONG");
    else if (n == 2)
      resp::append_bulk(out, args[1]);
    else
      return wrong_args();
  } else if (name == "echo") {
    resp::append_bulk(out, args[1]);
  } else {
    return not_servable();
  }
  if (r == result::served) ++counters_.served;
  // A write served here changed L1 (if accepted): a read of the upstream still in flight, by a
  // client on a dedicated connection, may have run before it.
  if (info->flags & commands::write)
    commands::for_each_key(*info, args, [&](std::string_view key) {
      fence_.touched(key_hash(db, key), fallback_conn);
    });
  return r;
}

cache_tier::result cache_tier::serve_get(int db, std::string_view key, int proto,
                                         cache::time_ms now, std::string& out) {
  if (const auto s = lookup(db, key, now)) {
    ++(s->tracked_stale ? counters_.stale_serves : counters_.hits);
    resp::append_bulk(out, s->value);
    return result::served;
  }
  ++counters_.misses;
  if (miss_is_error_)
    resp::append_error(out, errors::fallback_miss);
  else
    resp::append_null(out, proto);
  return result::served;
}

cache_tier::result cache_tier::serve_mget(int db, std::span<const std::string_view> args, int proto,
                                          cache::time_ms now, std::string& out) {
  const std::size_t start = out.size();
  resp::append_array_header(out, args.size() - 1);
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (const auto s = lookup(db, args[i], now)) {
      ++(s->tracked_stale ? counters_.stale_serves : counters_.hits);
      resp::append_bulk(out, s->value);
      continue;
    }
    ++counters_.misses;
    if (miss_is_error_) {
      out.resize(start);
      resp::append_error(out, errors::fallback_miss);
      return result::served;
    }
    resp::append_null(out, proto);
  }
  return result::served;
}

cache_tier::result cache_tier::serve_ttl(int db, std::string_view key, bool ms, cache::time_ms now,
                                         std::string& out) {
  const auto s = lookup(db, key, now);
  if (!s) {
    resp::append_integer(out, -2);
  } else if (!s->expiry_known) {
    resp::append_error(out, errors::fallback_expiry_unknown);
  } else if (s->upstream_expiry == 0) {
    resp::append_integer(out, -1);
  } else {
    const std::int64_t left = s->upstream_expiry > now ? s->upstream_expiry - now : 0;
    resp::append_integer(out, ms ? left : (left + 500) / 1000);
  }
  return result::served;
}

cache_tier::result cache_tier::serve_set(int db, std::span<const std::string_view> args,
                                         std::string_view frame, int proto, cache::time_ms now,
                                         std::int64_t wall_ms, std::string& out) {
  std::string_view key = args[1], value;
  set_options o;
  if (iequals(args[0], "set")) {
    value = args[2];
    o = set_options::parse(args, 3, now, wall_ms);
  } else {  // SETEX key seconds value / PSETEX key ms value
    value = args[3];
    const auto v = to_int(args[2]);
    const bool setex = iequals(args[0], "setex");
    const auto ms = v ? to_ms(*v, setex) : std::nullopt;
    if (!v) {
      o.error = errors::not_integer;
    } else if (*v <= 0 || !ms || !fits_after(wall_ms, *ms)) {
      o.error = invalid_expire(setex ? expire_command::setex : expire_command::psetex);
    } else {
      o.relative_ms = *ms;
      o.expiry = add_ms(now, *ms);
    }
  }
  if (!o.error.empty()) {
    resp::append_error(out, o.error);
    return result::served;
  }
  const auto old = lookup(db, key, now);
  if (!old && (o.nx || o.xx || o.get)) {
    // Whether the key exists upstream, and its value there, are not known: answering nil or OK
    // would be a guess, and an NX write the replay then finds refused would be an OK lost.
    ++counters_.misses;
    resp::append_error(out, errors::fallback_set_condition_miss);
    return result::served;
  }
  const bool condition = !(o.nx && old) && !(o.xx && !old);
  std::string old_value;
  if (o.get && old) old_value = old->value;
  if (condition) {
    // A relative expiry is journaled as the time it falls at (absolute_set), when the upstream
    // is known to take SET ... PXAT (Redis 6.2 and later). Else the write is journaled as sent,
    // and a replay after the outage starts its expiry again from then.
    const std::string absolute =
        o.relative_ms > 0 && set_pxat_ ? absolute_set(args, wall_ms + o.relative_ms) : "";
    if (!journal_write(db, args, absolute.empty() ? frame : absolute, out)) return result::served;
    std::int64_t expiry = o.expiry;
    // KEEPTTL keeps the upstream's expiry, which L1 knows only for a key it holds.
    if (o.keepttl) expiry = old ? old->expiry_to_keep() : expiry_unknown;
    store(db, key, key_hash(db, key), value, expiry, now);
  }
  if (o.get) {
    if (old)
      resp::append_bulk(out, old_value);
    else
      resp::append_null(out, proto);
  } else if (condition) {
    resp::append_simple(out, "OK");
  } else {
    resp::append_null(out, proto);
  }
  return result::served;
}

cache_tier::result cache_tier::serve_expire(int db, std::span<const std::string_view> args, bool ms,
                                            cache::time_ms now, std::int64_t wall_ms,
                                            std::string& out) {
  // As Redis reads them (expireGenericCommand): the options first, then the time.
  bool nx = false, xx = false, gt = false, lt = false;
  for (std::size_t i = 3; i < args.size(); ++i) {
    if (iequals(args[i], "nx"))
      nx = true;
    else if (iequals(args[i], "xx"))
      xx = true;
    else if (iequals(args[i], "gt"))
      gt = true;
    else if (iequals(args[i], "lt"))
      lt = true;
    else {
      resp::append_error(out, "ERR Unsupported option " + std::string(args[i]));
      return result::served;
    }
  }
  if (nx && (xx || gt || lt)) {
    resp::append_error(out, errors::expire_nx_and_others);
    return result::served;
  }
  if (gt && lt) {
    resp::append_error(out, errors::expire_gt_and_lt);
    return result::served;
  }
  const auto v = to_int(args[2]);
  if (!v) {
    resp::append_error(out, errors::not_integer);
    return result::served;
  }
  const auto relative = to_ms(*v, !ms);  // may be negative: the key expires at once
  if (!relative || !fits_after(wall_ms, *relative)) {
    resp::append_error(out, invalid_expire(ms ? expire_command::pexpire : expire_command::expire));
    return result::served;
  }
  // Journaled as PEXPIREAT at the time it falls at, so a replay after the outage keeps it there.
  const auto journal = [&] {
    return journal_write(db, args, absolute_expire(args, wall_ms + *relative), out);
  };
  const auto s = lookup(db, args[1], now);
  if (!s) {  // L1 does not hold the key: Redis would answer 0 if the upstream lacks it too
    if (!journal()) return result::served;
    resp::append_integer(out, 0);
    return result::served;
  }
  if ((nx || xx || gt || lt) && !s->expiry_known) {
    resp::append_error(out, errors::fallback_expiry_unknown);
    return result::served;
  }
  const std::int64_t when = add_ms(now, *relative);
  const std::int64_t current = s->upstream_expiry;  // 0: persistent (infinite)
  bool apply = true;
  if (nx && current != 0) apply = false;
  if (xx && current == 0) apply = false;
  if (gt && (current == 0 || when <= current)) apply = false;
  if (lt && current != 0 && when >= current) apply = false;
  if (!apply) {
    resp::append_integer(out, 0);
    return result::served;
  }
  if (!journal()) return result::served;
  if (when <= now) {
    invalidate(db, args[1]);
  } else {
    const std::string value(s->value);
    store(db, args[1], key_hash(db, args[1]), value, when, now);
  }
  resp::append_integer(out, 1);
  return result::served;
}

cache_tier::result cache_tier::serve_incr(int db, std::span<const std::string_view> args,
                                          std::string_view frame, std::int64_t sign, bool by,
                                          cache::time_ms now, std::string& out) {
  std::int64_t delta = 1;
  if (by) {
    const auto v = to_int(args[2]);
    if (!v) {
      resp::append_error(out, errors::not_integer);
      return result::served;
    }
    if (sign < 0 && *v == std::numeric_limits<std::int64_t>::min()) {
      resp::append_error(out, errors::decrement_overflow);
      return result::served;
    }
    delta = *v;
  }
  delta *= sign;
  const auto s = lookup(db, args[1], now);
  if (!s) {
    ++counters_.misses;
    resp::append_error(out, errors::fallback_incr_miss);
    return result::served;
  }
  const auto current = to_int(s->value);
  if (!current || s->value.size() > 20 || (s->value.size() > 1 && s->value[0] == '0')) {
    resp::append_error(out, errors::not_integer);
    return result::served;
  }
  std::int64_t next = 0;
  if (__builtin_add_overflow(*current, delta, &next)) {
    resp::append_error(out, errors::increment_overflow);
    return result::served;
  }
  const std::int64_t expiry = s->expiry_to_keep();
  if (!journal_write(db, args, frame, out)) return result::served;
  ++counters_.hits;
  const std::string text = std::to_string(next);
  store(db, args[1], key_hash(db, args[1]), text, expiry, now);
  resp::append_integer(out, next);
  return result::served;
}

cache_tier::result cache_tier::serve_write_keys(int db, std::span<const std::string_view> args,
                                                std::string_view frame, cache::time_ms now,
                                                std::string& out) {
  if (!journal_write(db, args, frame, out)) return result::served;
  std::int64_t removed = 0;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (lookup(db, args[i], now)) ++removed;  // what EXISTS would have counted
    l1_.erase(db, args[i]);
  }
  resp::append_integer(out, removed);
  return result::served;
}

// While a later write of the key waits in the journal, L1 holds what that write left, which is
// what the upstream will hold once it is replayed too (last writer wins, in replay order): a
// client that wrote the key during the replay reads its own write. Once the key's last journaled
// write is replayed, L1 still holds its value, which the upstream holds now, until the replay is
// done (replay_done()): a key L1 forgot before then would read as a miss while the sidecar still
// answers from L1.
bool cache_tier::last_unreplayed(std::uint64_t hash) {
  const auto it = unreplayed_.find(hash);
  if (it == unreplayed_.end()) return true;
  if (--it->second > 0) return false;
  unreplayed_.erase(it);
  return true;
}

void cache_tier::replayed(int db, std::span<const std::string_view> args) {
  ++counters_.replayed;
  if (args.empty()) return;
  if (const command_info* info = commands::lookup(args[0]))
    commands::for_each_key(*info, args, [&](std::string_view key) {
      const std::uint64_t hash = key_hash(db, key);
      fence_.touched(hash, fallback_conn);  // it ran just now, on its own connection
      if (!last_unreplayed(hash)) return;
      if (!l1_.value_in_place(db, key, hash)) return;  // nothing to keep
      const std::size_t bytes = sizeof(kept_key) + key.size();
      if (kept_bytes_ + bytes > journal_.max_bytes()) {  // see kept_
        l1_.erase(db, key);
        return;
      }
      kept_bytes_ += bytes;
      kept_.push_back(kept_key{db, std::string(key)});
    });
}

void cache_tier::replay_dropped(int db, std::span<const std::string_view> args) {
  ++counters_.rejected;
  if (args.empty()) return;
  if (const command_info* info = commands::lookup(args[0]))
    commands::for_each_key(*info, args, [&](std::string_view key) {
      // A later write's value: it may still reach the upstream.
      if (last_unreplayed(key_hash(db, key))) l1_.erase(db, key);
    });
}

void cache_tier::replay_done() {
  for (const kept_key& k : kept_) l1_.erase(k.db, k.key);
  std::vector<kept_key>().swap(kept_);  // its memory too: it may have held a long outage's keys
  kept_bytes_ = 0;
}

}  // namespace redis_sidecar
