// cache_tier: what the sidecar does with its L1 cache, without I/O. Two jobs:
//
//  1. Normal operation: L1 is kept warm from the traffic that passes through. GET and MGET replies
//     fill it; SET in all its forms (and SETEX, PSETEX, MSET, MSETNX) fills it with the value the
//     upstream acknowledged; every other write invalidates the keys it touches (commands/keys.hpp),
//     once when the request goes out and again when its reply comes back, so a read reply that
//     raced with the write cannot leave an old value behind. The SET family hides its keys' entries
//     while the write is in flight instead of dropping them: its reply overwrites them, in place
//     when the size is unchanged (no free, malloc or index shift per write). Replies are applied
//     in the order each upstream connection returns them; a reply whose request another
//     connection's write to the same key may have overtaken (either way) stores nothing, and a
//     write's then drops the key (write_fence.hpp). L1 does not answer reads in this mode.
//  2. Fallback (the upstream is unreachable): `serve` answers GET, MGET, EXISTS, TTL, PTTL,
//     SET (all forms), SETEX, PSETEX, MSET, DEL, UNLINK, EXPIRE, PEXPIRE, the INCR family on
//     cached integers, PING and ECHO from L1. Writes it accepts are first appended to the write
//     journal (replayed upstream, in order, on recovery); a write the journal cannot hold is
//     refused with an error and changes nothing, so an acknowledged write is never dropped. L1
//     answers until the whole journal is replayed, so it keeps the values of the keys replayed
//     so far until then (replayed(), replay_done()).
//
// Entry lifetime: an entry expires at the upstream's expiry when a command told it (SET EX, SETEX,
// ...), and never later than --cache-ttl after it was stored, the bound on how old a value served
// from L1 may be. L1 values carry a small header so TTL/PTTL can tell the upstream's expiry from
// the staleness bound:
//
//   stored value: [ flags | 8-byte upstream expiry (ms)? | 4-byte epoch? | value ... ]
//
// flags: bit 0 an upstream expiry follows, bit 1 the entry is tracked (read on the invalidation
// channel in --cache-mode=tracking or keyspace; the epoch says on which channel connection), bit 2
// a write to the key is in flight (hidden: lookups miss until the write's reply replaces or drops
// the entry), bit 3 the key was read as absent (no value follows; tracking mode only), bit 4 the
// upstream's expiry is not known, bit 5 the value is the one this sidecar's write stored (its
// own write's invalidation does not drop it: invalidated()).
// Losing the channel starts a new epoch: every tracked entry stops being fresh at once, without a
// scan.
//
// Times: `now` is monotonic milliseconds (the cache's clock); `wall_ms` is Unix time in ms, used
// only to convert EXAT/PXAT and to journal relative expiries as absolute ones. Owned by the
// server, used on its thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache/lru_cache.hpp"
#include "cache/write_journal.hpp"
#include "proxy/commands/command_table.hpp"
#include "proxy/config/config.hpp"
#include "proxy/tier/write_fence.hpp"

namespace redis_sidecar {

struct tier_counters {
  std::uint64_t hits = 0;           // fallback reads answered with a value from L1
  std::uint64_t misses = 0;         // fallback reads of keys L1 does not hold
  std::uint64_t fills = 0;          // values stored from upstream traffic
  std::uint64_t invalidations = 0;  // keys dropped because a write touched them
  std::uint64_t served = 0;         // requests answered in fallback mode
  std::uint64_t not_servable = 0;   // requests refused in fallback mode
  std::uint64_t journaled = 0;      // writes accepted into the journal
  std::uint64_t rejected = 0;       // writes refused (journal full, or --fallback-writes=reject)
  std::uint64_t replayed = 0;       // journaled writes the upstream acknowledged after recovery
  std::uint64_t stale_serves = 0;   // fallback reads answered with an entry no longer tracked
  std::uint64_t pushed_invalidations = 0;  // invalidation messages received (tracking, keyspace)
};

class cache_tier {
 public:
  /// How L1 answers reads in normal operation (--cache-mode; `auto` resolves to one of these).
  enum class cache_mode : std::uint8_t {
    off,       // no L1
    fallback,  // L1 answers only in fallback mode
    ttl,       // hits for keys with a --cache-prefix, at most --cache-ttl old, no invalidation
               // beyond writes through this sidecar
    tracking,  // hits kept coherent by the upstream's CLIENT TRACKING invalidations
    keyspace,  // hits kept coherent by the upstream's keyspace notifications
  };
  static cache_mode parse_mode(std::string_view m);
  static std::string_view mode_name(cache_mode m);
  /// True for the modes whose hits an invalidation channel keeps coherent (tracking, keyspace).
  static bool coherent(cache_mode m) {
    return m == cache_mode::tracking || m == cache_mode::keyspace;
  }

  explicit cache_tier(const config& cfg);

  cache_mode mode() const { return mode_; }
  void set_mode(cache_mode m) { mode_ = m; }
  /// True when `key` may be served as a hit (it has a --cache-prefix, or no prefixes are set).
  bool key_cached(std::string_view key) const;
  /// A GET answered from L1: its value, or nil for a key the tracking channel read as absent.
  struct hit_value {
    std::string_view value;
    bool absent = false;
  };
  /// A GET hit in normal operation: the value when L1 may answer it (mode ttl, tracking or
  /// keyspace, a cached key, and in the coherent modes an entry the channel protects now); in
  /// tracking mode also nil for an absent key the channel protects. Counts a hit; a miss too, or,
  /// with `missed`, sets *missed instead, for a caller whose request may be retried (it counts
  /// the miss with count_miss() once the request is answered).
  std::optional<hit_value> hit(int db, std::string_view key, cache::time_ms now,
                               bool* missed = nullptr);
  /// A value read on the invalidation channel (tracking, keyspace): fresh until invalidated or
  /// the channel is lost.
  void store_tracked(int db, std::string_view key, std::string_view value,
                     std::int64_t upstream_expiry, cache::time_ms now);
  /// A key read on the tracking channel as absent. Redis tracks a missing key like any other
  /// (whatever creates it sends an invalidation), so GET may answer nil from L1 until then; only
  /// in tracking mode (keyspace notifications may leave out the event that creates a key). Only
  /// hit() sees such entries: for the fallback's answers L1 does not hold the key.
  void store_tracked_absent(int db, std::string_view key, cache::time_ms now);
  /// ttl mode without its reads (the upstream refuses their transaction): values from GET
  /// replies, whose server TTL L1 does not know, are hits too (for up to --cache-ttl).
  void serve_ttl_unknown() { ttl_unknown_hits_ = true; }
  /// The upstream refuses the sidecar itself (its credentials, its certificate check): a write
  /// journaled now could not be replayed before the configuration changes, so fallback refuses
  /// writes, saying why (`why` empty: accepted again).
  void refuse_writes(std::string why) { writes_refused_ = std::move(why); }
  /// A journaled write the upstream refused for too long, dropped: counted as rejected, and L1
  /// forgets the value it left for a key no later journaled write holds (it never reached the
  /// upstream).
  void replay_dropped(int db, std::span<const std::string_view> args);
  /// A GET that L1 was not asked to answer (right after a script) counts as a miss.
  void count_miss() { ++counters_.misses; }
  /// An invalidation message for `key` / for everything (FLUSHALL, FLUSHDB).
  void invalidated(int db, std::string_view key);
  void flushed();
  /// Called with each key the sidecar's own traffic invalidates (db < 0: a flush), so that a read
  /// in flight elsewhere (the near cache's) knows its result may predate the write.
  void on_write(std::function<void(int db, std::string_view key)> f) { on_write_ = std::move(f); }
  /// The invalidation channel was lost: tracked entries stop being fresh at once.
  void channel_lost() { ++epoch_; }

  /// The upstream's version as its connection reports it (HELLO's "version", "7.0.15"; empty:
  /// not known, e.g. Redis before 6 has no HELLO). Fallback journals a SET with a relative expiry
  /// (EX, PX, SETEX, PSETEX) as SET ... PXAT <Unix ms> only when it is 6.2 or later (PXAT came
  /// in 6.2); otherwise as sent, and its expiry then starts again when it is replayed. EXPIRE and
  /// PEXPIRE are journaled as PEXPIREAT whatever the version. The upstream monitor sets it from
  /// its probe connection.
  void set_upstream_version(std::string_view version);

  /// False with --cache-mode=off: nothing is stored, nothing is served.
  bool enabled() const { return enabled_; }

  // --- normal operation -----------------------------------------------------------------------
  /// Where a request that updates L1 went: the upstream connection's serial (requests on one
  /// connection run in the order sent) and the write clock (write_clock()) when it was sent.
  /// Replies of requests raced by another connection's writes to their keys do not fill L1
  /// (write_fence.hpp).
  struct flight {  // (no member initializers: `{}` is all zeros, and a default argument below)
    std::uint32_t conn;
    std::uint64_t since;
  };
  std::uint64_t write_clock() const { return fence_.clock(); }
  /// True when the reply to `info` updates L1: the caller keeps the request until then.
  bool wants_reply(const commands::command_info& info) const;
  /// A request sent on connection `f.conn`: invalidates the keys a write touches. The SET family's
  /// entries are hidden rather than dropped (its reply stores over them) unless `reply_stores` is
  /// false: the write's reply will not come through on_reply (a transaction's queued writes).
  /// `key1_hash`: key_hash(db, args[1]) when the caller has it at hand (it hashed the key to
  /// prefetch), or 0: hashed here. So for on_reply.
  void on_request(int db, const commands::command_info& info,
                  std::span<const std::string_view> args, flight f = {}, bool reply_stores = true,
                  std::uint64_t key1_hash = 0);
  /// True for the writes on_request hides rather than drops (the SET family: SET, SETEX, PSETEX,
  /// MSET, MSETNX): their keys' L1 slots are looked up when the request is seen.
  static bool hides_keys(const commands::command_info& info);
  /// True for the writes that may change keys other than their key arguments in the request's
  /// db: every key (FLUSHDB, FLUSHALL, SWAPDB) or keys of another db (MOVE, COPY ... DB n).
  static bool writes_beyond_keys(const commands::command_info& info);
  /// A write that may run later than L1 can tell (its reply was an error: perhaps the sidecar's
  /// own for a connection that failed, while Redis still holds its bytes; a raw-mode write no
  /// marker follows): its keys go now, and no reply fills them for 2 x --command-timeout-ms from
  /// `now`, when they go again (release_holds()).
  void write_unsure(int db, const commands::command_info& info,
                    std::span<const std::string_view> args, flight f, cache::time_ms now);
  /// Ends the holds of write_unsure() due by `now` (the health monitor calls it on its ticks).
  void release_holds(cache::time_ms now);
  /// The upstream's reply to a request that wants_reply(), in the connection's order; `f` as the
  /// request was sent.
  void on_reply(int db, const commands::command_info& info, std::span<const std::string_view> args,
                std::string_view reply, cache::time_ms now, std::int64_t wall_ms, flight f = {},
                std::uint64_t key1_hash = 0);

  // --- fallback -------------------------------------------------------------------------------
  enum class result : std::uint8_t { served, not_servable };
  /// Answers `args` from L1 into `out` (RESP for protocol `proto`), journaling writes. `frame` is
  /// the request as the client sent it; relative expiries are journaled as the absolute times
  /// they fall at (see set_upstream_version()), so that the replay keeps them where the sidecar
  /// told the client. not_servable: `out` holds the error.
  result serve(int db, const commands::command_info* info, std::span<const std::string_view> args,
               std::string_view frame, int proto, cache::time_ms now, std::int64_t wall_ms,
               std::string& out);
  /// A journaled write the upstream acknowledged on replay. L1 still answers every read until the
  /// whole journal is replayed, so it keeps the value each key's last journaled write left (what
  /// the upstream now holds too, unless another client changed it there) until replay_done();
  /// forgetting it now would answer nil, or --fallback-miss=error's error, for a key the upstream
  /// holds. If the replay fails and fallback resumes, the kept values stay (they are what the
  /// clients were told) until the next replay is done.
  void replayed(int db, std::span<const std::string_view> args);
  /// The whole journal is replayed (the upstream monitor calls it just before the upstream is
  /// healthy again): L1 forgets the keys replayed() kept. The upstream's result is the truth from
  /// now on (an INCR replayed onto a value another client changed); traffic fills L1 again.
  void replay_done();

  /// The hash of `key` of `db` in L1's index and in the write fence alike (the fence is seeded
  /// as L1 is): what prefetch() takes, so that a key prefetched in two stages is hashed once.
  std::uint64_t key_hash(int db, std::string_view key) const { return l1_.hash(db, key); }
  /// See lru_cache::prefetch_index and prefetch_entry: for the key of a reply coming soon, by its
  /// key_hash(). `write`: the request writes the key, so its event will look at the key's
  /// write_fence slot too; that slot is loaded with the index.
  void prefetch(std::uint64_t key_hash, bool entry, bool write = false) const {
    if (!enabled_) return;
    if (entry) {
      l1_.prefetch_entry(key_hash);
    } else {
      l1_.prefetch_index(key_hash);
      if (write) fence_.prefetch(key_hash);
    }
  }

  cache::write_journal& journal() { return journal_; }
  const cache::lru_cache& l1() const { return l1_; }
  cache::lru_cache& l1() { return l1_; }
  const tier_counters& counters() const { return counters_; }

 private:
  struct set_options;
  static constexpr unsigned char flag_expiry = 1;
  static constexpr unsigned char flag_tracked = 2;
  static constexpr unsigned char flag_writing = 4;
  static constexpr unsigned char flag_absent = 8;  // no value: the key was read as missing
  // The upstream's expiry of the key is not known (a value from a GET or MGET reply): TTL, and
  // the expiry conditions of EXPIRE, cannot be answered in fallback.
  static constexpr unsigned char flag_expiry_unknown = 16;
  // The value of this sidecar's own write, as its reply acknowledged it (see invalidated()).
  static constexpr unsigned char flag_written = 32;
  // The flags, the upstream's expiry and the tracking epoch that precede a value in L1.
  static constexpr std::size_t max_header_bytes = 1 + 8 + 4;
  // The fence's name for writes served in fallback and replayed from the journal.
  static constexpr std::uint32_t fallback_conn = 0xffffffff;
  // store()'s upstream_expiry for a value whose upstream expiry is not known.
  static constexpr std::int64_t expiry_unknown = -1;
  struct stored {
    std::int64_t upstream_expiry = 0;  // 0: none (the key is persistent), or not known
    bool expiry_known = true;
    /// upstream_expiry, or expiry_unknown: what store() takes to keep the expiry as it is.
    std::int64_t expiry_to_keep() const { return expiry_known ? upstream_expiry : expiry_unknown; }
    std::string_view value;
    bool tracked_fresh = false;  // tracked, and the channel it was read on is still up
    bool tracked_stale = false;  // tracked, but that channel was lost since
    bool absent = false;         // the key was read as missing (store_tracked_absent)
  };

  /// `hash`: key_hash(db, key), which the callers that also ask the fence have at hand.
  void store(int db, std::string_view key, std::uint64_t hash, std::string_view value,
             std::int64_t upstream_expiry, cache::time_ms now, bool tracked = false,
             bool absent = false, bool written = false);
  void invalidate(int db, std::string_view key);
  void hide(int db, std::string_view key, std::uint64_t hash);
  /// `hash`: key_hash(db, key).
  void read_reply(int db, std::string_view key, std::uint64_t hash,
                  std::optional<std::string_view> value, flight f, cache::time_ms now);
  /// on_reply for the GET family and the SET family, which store values.
  void store_reply(int db, const commands::command_info& info,
                   std::span<const std::string_view> args, std::string_view reply,
                   cache::time_ms now, std::int64_t wall_ms, flight f, std::uint64_t key1_hash);
  /// key_hash(db, key) of one of `args`: `key1_hash` when that is args[1] and the hash is given.
  std::uint64_t hash_of(int db, std::string_view key, std::span<const std::string_view> args,
                        std::uint64_t key1_hash) const {
    return key1_hash != 0 && args.size() > 1 && key.data() == args[1].data() &&
                   key.size() == args[1].size()
               ? key1_hash
               : key_hash(db, key);
  }
  /// The entry as stored; entries of absent keys only with `absent_too`.
  std::optional<stored> lookup(int db, std::string_view key, cache::time_ms now,
                               bool absent_too = false);
  /// One journaled write of the key (`hash`) is done with (replayed or dropped): false while a
  /// later journaled write (unreplayed_) still holds its value in L1 for the replay.
  bool last_unreplayed(std::uint64_t hash);
  bool journal_write(int db, std::span<const std::string_view> args, std::string_view frame,
                     std::string& out);

  result serve_get(int db, std::string_view key, int proto, cache::time_ms now, std::string& out);
  result serve_mget(int db, std::span<const std::string_view> args, int proto, cache::time_ms now,
                    std::string& out);
  result serve_ttl(int db, std::string_view key, bool ms, cache::time_ms now, std::string& out);
  result serve_set(int db, std::span<const std::string_view> args, std::string_view frame,
                   int proto, cache::time_ms now, std::int64_t wall_ms, std::string& out);
  result serve_expire(int db, std::span<const std::string_view> args, bool ms, cache::time_ms now,
                      std::int64_t wall_ms, std::string& out);
  result serve_incr(int db, std::span<const std::string_view> args, std::string_view frame,
                    std::int64_t sign, bool by, cache::time_ms now, std::string& out);
  result serve_write_keys(int db, std::span<const std::string_view> args, std::string_view frame,
                          cache::time_ms now, std::string& out);

  bool enabled_;
  cache_mode mode_;
  std::vector<std::string> prefixes_;  // --cache-prefix, comma separated
  bool ttl_unknown_hits_ = false;      // see serve_ttl_unknown()
  std::uint32_t epoch_ = 0;            // the invalidation channel's connection number
  bool miss_is_error_;
  bool journal_writes_;
  bool set_pxat_ = false;       // the upstream takes SET ... PXAT: see set_upstream_version()
  std::string writes_refused_;  // see refuse_writes()
  std::int64_t ttl_ms_;
  std::size_t max_entry_bytes_;  // --cache-max-entry-bytes: key + value
  cache::lru_cache l1_;
  cache::write_journal journal_;
  // Journaled writes not replayed yet, per key (by key_hash): see replayed().
  std::unordered_map<std::uint64_t, std::uint32_t> unreplayed_;
  // Keys whose last journaled write has been replayed, kept in L1 until replay_done(). Bounded as
  // the journal is: each came from a journaled write, and the list's bytes (keys and entries)
  // count against --fallback-journal-max-bytes of their own; past that (replays failing while
  // fallback fills the journal again, over and over) a replayed key is dropped at once instead.
  struct kept_key {
    int db;
    std::string key;
  };
  std::vector<kept_key> kept_;
  std::size_t kept_bytes_ = 0;
  write_fence fence_;
  struct held {
    int db;
    std::uint32_t conn;
    cache::time_ms until;
    std::string key;
  };
  std::vector<held> held_;  // see write_unsure()
  std::int64_t hold_ms_;
  tier_counters counters_;
  std::function<void(int, std::string_view)> on_write_;
};

}  // namespace redis_sidecar
