// Walks the whole command table: ordering and lookups in every case, key positions against arity,
// flag invariants, the exact membership of each policy set, and the CLIENT subcommand lookup.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/commands/blocking.hpp"
#include "proxy/commands/command_table.hpp"
#include "proxy/commands/keys.hpp"

namespace cmd = redis_sidecar::commands;

namespace {

bool has(const cmd::command_info& row, std::uint32_t f) { return (row.flags & f) != 0; }

std::set<std::string> names_with(std::uint32_t f) {
  std::set<std::string> out;
  for (const auto& row : cmd::all()) {
    if (has(row, f)) out.emplace(row.name);
  }
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string mixed(std::string_view s) {
  std::string out(s);
  for (std::size_t i = 0; i < out.size(); i += 2) {
    if (out[i] >= 'a' && out[i] <= 'z') out[i] = static_cast<char>(out[i] - 'a' + 'A');
  }
  return out;
}

}  // namespace

TEST_CASE("command table rows are sorted, unique, lowercase and cover Redis 7.0") {
  const auto rows = cmd::all();
  REQUIRE(rows.size() >= 240);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    INFO(rows[i].name);
    REQUIRE_FALSE(rows[i].name.empty());
    for (char c : rows[i].name) {
      CHECK(((c >= 'a' && c <= 'z') || c == '_' || c == '-'));
    }
    if (i > 0) CHECK(rows[i - 1].name < rows[i].name);
  }
}

TEST_CASE("every command is found in lower, UPPER and MiXeD case") {
  for (const auto& row : cmd::all()) {
    INFO(row.name);
    CHECK(cmd::lookup(row.name) == &row);
    CHECK(cmd::lookup(upper(row.name)) == &row);
    CHECK(cmd::lookup(mixed(row.name)) == &row);
    CHECK(cmd::metric_name(&row) == row.name);
  }
}

TEST_CASE("unknown, empty and oversized names are not found") {
  using namespace std::string_literals;
  std::size_t longest = 0;
  for (const auto& row : cmd::all()) longest = std::max(longest, row.name.size());

  for (const std::string& name :
       {""s, "g"s, "ge"s, "getx"s, "nosuchcommand"s, "get "s, " get"s, "_get"s, "1get"s, "get\0"s,
        "\0get"s, "g\xc5t"s, "\xff"s, "zzzzzzzz"s, "georadiusbymember_rox"s, "client|reply"s,
        std::string(longest, 'z'), std::string(longest + 1, 'a'), std::string(100000, 'G')}) {
    INFO(name.size());
    CHECK(cmd::lookup(name) == nullptr);
  }
  // Same hash as bitfield_ro ('_' | 0x20 == 0x7f): the index's match is confirmed byte by byte.
  CHECK(cmd::lookup("bitfield\x7fro") == nullptr);
  CHECK(cmd::lookup("BITFIELD_RO") == cmd::lookup("bitfield_ro"));
  // A known name followed by anything is a different name.
  CHECK(cmd::lookup("GETS") == nullptr);
  CHECK(cmd::lookup(std::string_view("get", 2)) == nullptr);
  CHECK(cmd::metric_name(nullptr) == "other");
  CHECK(cmd::metric_name(cmd::lookup("nosuchcommand")) == "other");
}

TEST_CASE("key positions agree with arity") {
  for (const auto& row : cmd::all()) {
    INFO(row.name);
    REQUIRE(row.arity != 0);
    const int min_argc = std::abs(row.arity);
    CHECK(min_argc >= 1);
    if (row.first_key == 0) {
      CHECK(row.last_key == 0);
      CHECK(row.key_step == 0);
      continue;
    }
    // Keys sit inside the arguments; a variadic command may take none at its minimum
    // (SUNSUBSCRIBE).
    CHECK(row.first_key >= 1);
    CHECK(row.key_step >= 1);
    CHECK(row.first_key < (row.arity > 0 ? min_argc : min_argc + 1));
    if (row.last_key >= 0) {
      CHECK(row.last_key >= row.first_key);
      CHECK(row.last_key < min_argc);
    } else {
      CHECK(row.arity < 0);  // counted from the end: only variadic commands
      CHECK(min_argc + row.last_key + 1 >= row.first_key);
    }
  }
  const auto* mset = cmd::lookup("mset");
  REQUIRE(mset);
  CHECK(mset->arity == -3);
  CHECK((mset->first_key == 1 && mset->last_key == -1 && mset->key_step == 2));
  const auto* get = cmd::lookup("get");
  REQUIRE(get);
  CHECK((get->arity == 2 && get->first_key == 1 && get->last_key == 1 && get->key_step == 1));
  const auto* blpop = cmd::lookup("BLPOP");
  REQUIRE(blpop);
  CHECK((blpop->first_key == 1 && blpop->last_key == -2));
}

TEST_CASE("flag invariants hold for every row") {
  for (const auto& row : cmd::all()) {
    INFO(row.name);
    if (has(row, cmd::cacheable)) CHECK(has(row, cmd::read));
    if (has(row, cmd::local)) CHECK_FALSE(has(row, cmd::cacheable | cmd::stateful));
    CHECK_FALSE((has(row, cmd::read) && has(row, cmd::write)));
    if (has(row, cmd::blocking_opt)) CHECK(has(row, cmd::blocking));
    if (has(row, cmd::pubsub)) CHECK(has(row, cmd::stateful));
    if (has(row, cmd::script)) CHECK(has(row, cmd::movable_keys));
    if (has(row, cmd::flush)) CHECK(has(row, cmd::write));
    // no_keys exactly when neither the legacy triple, a numkeys argument nor a subcommand names
    // keys.
    const bool keyless =
        row.first_key == 0 && !has(row, cmd::movable_keys) && !has(row, cmd::script);
    CHECK(has(row, cmd::no_keys) == keyless);
    if (has(row, cmd::script)) {
      const bool read_only = row.name.ends_with("_ro");
      CHECK(has(row, cmd::read) == read_only);
      CHECK(has(row, cmd::write) == !read_only);
    }
  }
}

TEST_CASE("policy sets have exactly their members") {
  using set = std::set<std::string>;
  CHECK(names_with(cmd::cacheable) == set{"get", "mget"});
  CHECK(names_with(cmd::local) == set{"auth", "hello", "quit", "reset"});
  CHECK(names_with(cmd::stateful) == set{"multi", "exec", "discard", "watch", "unwatch",
                                         "subscribe", "psubscribe", "ssubscribe", "unsubscribe",
                                         "punsubscribe", "sunsubscribe", "monitor", "select"});
  CHECK(names_with(cmd::pubsub) == set{"subscribe", "psubscribe", "ssubscribe", "unsubscribe",
                                       "punsubscribe", "sunsubscribe"});
  // WAITAOF arrived in Redis 7.2 and is not a 7.0 command.
  CHECK(names_with(cmd::blocking) == set{"blpop", "brpop", "brpoplpush", "blmove", "blmpop",
                                         "bzpopmin", "bzpopmax", "bzmpop", "wait", "xread",
                                         "xreadgroup"});
  CHECK(names_with(cmd::blocking_opt) == set{"xread", "xreadgroup"});
  CHECK(names_with(cmd::script) ==
        set{"eval", "eval_ro", "evalsha", "evalsha_ro", "fcall", "fcall_ro"});
  CHECK(names_with(cmd::flush) == set{"flushdb", "flushall"});
  // PFCOUNT rewrites the HyperLogLog's cached cardinality: a write for the cache tier.
  CHECK(has(*cmd::lookup("pfcount"), cmd::write));
  CHECK_FALSE(has(*cmd::lookup("pfcount"), cmd::read));
  // Admin comes from Redis' admin flag; spot-check a few on both sides.
  const set admin = names_with(cmd::admin);
  for (const char* name : {"config", "debug", "shutdown", "monitor", "save", "slowlog", "module"}) {
    CHECK(admin.count(name) == 1);
  }
  for (const char* name : {"get", "client", "info", "ping", "flushall", "keys", "acl"}) {
    CHECK(admin.count(name) == 0);
  }
}

TEST_CASE("the router's special commands have their expected flags") {
  for (const char* name : {"select", "ping", "echo", "client"}) {
    INFO(name);
    const auto* row = cmd::lookup(name);
    REQUIRE(row);
    CHECK_FALSE(has(*row, cmd::local));
  }
  CHECK_FALSE(has(*cmd::lookup("client"), cmd::stateful));
  CHECK_FALSE(has(*cmd::lookup("publish"), cmd::pubsub | cmd::stateful));
  CHECK_FALSE(has(*cmd::lookup("getex"), cmd::cacheable));
  CHECK(has(*cmd::lookup("getex"), cmd::write));
  CHECK(has(*cmd::lookup("set"), cmd::write));
  CHECK(has(*cmd::lookup("object"), cmd::read | cmd::movable_keys));
  CHECK(has(*cmd::lookup("xgroup"), cmd::write));
  CHECK(has(*cmd::lookup("dbsize"), cmd::no_keys));
  CHECK(cmd::lookup("blpop")->flags == (cmd::write | cmd::blocking));
  CHECK(cmd::lookup("xread")->flags ==
        (cmd::read | cmd::blocking | cmd::blocking_opt | cmd::movable_keys));
}

TEST_CASE("every command_id except other names exactly one row") {
  using id = cmd::command_id;
  const std::map<std::string, id> expected = {
      {"auth", id::auth},
      {"hello", id::hello},
      {"quit", id::quit},
      {"reset", id::reset},
      {"select", id::select},
      {"ping", id::ping},
      {"echo", id::echo},
      {"client", id::client},
      {"multi", id::multi},
      {"exec", id::exec},
      {"discard", id::discard},
      {"watch", id::watch},
      {"unwatch", id::unwatch},
      {"subscribe", id::subscribe},
      {"psubscribe", id::psubscribe},
      {"ssubscribe", id::ssubscribe},
      {"unsubscribe", id::unsubscribe},
      {"punsubscribe", id::punsubscribe},
      {"sunsubscribe", id::sunsubscribe},
      {"monitor", id::monitor},
      {"xread", id::xread},
      {"xreadgroup", id::xreadgroup},
      {"get", id::get},
      {"mget", id::mget},
      {"set", id::set},
      {"setex", id::setex},
      {"psetex", id::psetex},
      {"mset", id::mset},
      {"msetnx", id::msetnx},
      {"getdel", id::getdel},
      {"getex", id::getex},
      {"del", id::del},
      {"unlink", id::unlink},
      {"eval", id::eval},
      {"eval_ro", id::eval_ro},
      {"evalsha", id::evalsha},
      {"evalsha_ro", id::evalsha_ro},
      {"fcall", id::fcall},
      {"fcall_ro", id::fcall_ro},
      {"flushdb", id::flushdb},
      {"flushall", id::flushall},
      {"swapdb", id::swapdb},
      {"move", id::move},
      {"copy", id::copy},
      {"info", id::info},
      {"command", id::command},
  };
  std::map<id, int> seen;
  for (const auto& row : cmd::all()) {
    INFO(row.name);
    if (row.id == id::other) {
      CHECK(expected.count(std::string(row.name)) == 0);
      continue;
    }
    ++seen[row.id];
    const auto it = expected.find(std::string(row.name));
    REQUIRE(it != expected.end());
    CHECK(it->second == row.id);
  }
  CHECK(seen.size() == expected.size());
  for (const auto& [value, count] : seen) {
    INFO(static_cast<int>(value));
    CHECK(count == 1);
  }
  // The enumerators are dense: other, then one per expected command.
  CHECK(static_cast<std::size_t>(id::command) == expected.size());
}

TEST_CASE("CLIENT subcommands are found in any case") {
  using sub = cmd::sub_id;
  const std::vector<std::pair<std::string, sub>> subs = {
      {"reply", sub::client_reply},
      {"setname", sub::client_setname},
      {"getname", sub::client_getname},
      {"setinfo", sub::client_setinfo},
      {"id", sub::client_id},
      {"info", sub::client_info},
      {"tracking", sub::client_tracking},
      {"caching", sub::client_caching},
      {"no-evict", sub::client_no_evict},
      {"kill", sub::client_kill},
      {"list", sub::client_list},
      {"pause", sub::client_pause},
      {"unpause", sub::client_unpause},
      {"trackinginfo", sub::client_trackinginfo},
      {"getredir", sub::client_getredir},
      {"unblock", sub::client_unblock},
      {"no-touch", sub::client_no_touch},
  };
  std::set<sub> distinct;
  for (const auto& [name, value] : subs) {
    INFO(name);
    CHECK(cmd::lookup_sub(cmd::command_id::client, name) == value);
    CHECK(cmd::lookup_sub(cmd::command_id::client, upper(name)) == value);
    CHECK(cmd::lookup_sub(cmd::command_id::client, mixed(name)) == value);
    // Only the CLIENT container has identified subcommands.
    CHECK(cmd::lookup_sub(cmd::command_id::other, name) == sub::other);
    CHECK(cmd::lookup_sub(cmd::command_id::command, name) == sub::other);
    distinct.insert(value);
  }
  // Every sub_id except other is covered above.
  CHECK(distinct.size() == subs.size());
  CHECK(static_cast<std::size_t>(sub::client_no_touch) == subs.size());
}

TEST_CASE("unknown CLIENT subcommands are other") {
  using namespace std::string_literals;
  for (const std::string& name :
       {""s, "help"s, "repl"s, "replyx"s, "no_evict"s, "noevict"s, "reply "s, "reply\0"s,
        "trackinginfoo"s, std::string(1000, 'r'), "\xff"s}) {
    INFO(name.size());
    CHECK(cmd::lookup_sub(cmd::command_id::client, name) == cmd::sub_id::other);
  }
}

// A script's keys are the numkeys arguments after it, as many as there are: numkeys is the
// client's number, so any value (2^63 - 1 included) must bound the walk without overflowing.
TEST_CASE("a script's declared keys: numkeys of any size, never past the arguments") {
  const cmd::command_info* eval = cmd::lookup("EVAL");
  REQUIRE(eval != nullptr);
  const auto keys = [&](std::vector<std::string_view> args) {
    std::vector<std::string_view> out;
    cmd::for_each_key(*eval, args, [&](std::string_view k) { out.push_back(k); });
    return out;
  };
  using v = std::vector<std::string_view>;
  CHECK(keys({"EVAL", "return 1", "2", "a", "b", "c"}) == v{"a", "b"});
  CHECK(keys({"EVAL", "return 1", "0", "a"}).empty());
  CHECK(keys({"EVAL", "return 1", "-1", "a"}).empty());
  CHECK(keys({"EVAL", "return 1", "x", "a"}).empty());
  CHECK(keys({"EVAL", "return 1", "5", "a", "b"}) == v{"a", "b"});
  CHECK(keys({"EVAL", "return 1", "9223372036854775807", "a", "b"}) == v{"a", "b"});
  CHECK(keys({"EVAL", "return 1", "9223372036854775808", "a"}).empty());  // not a long long
  // Redis reads numkeys with string2ll: these are not numbers, and it refuses the script.
  CHECK(keys({"EVAL", "return 1", "01", "a"}).empty());
  CHECK(keys({"EVAL", "return 1", "-0", "a"}).empty());
  CHECK(keys({"EVAL", "return 1", "+1", "a"}).empty());
}

// How long a blocking request may block, as Redis reads its timeout: seconds (fractions and
// exponents too) for the list and sorted-set commands, integer milliseconds for XREAD BLOCK and
// WAIT. A timeout Redis refuses is 0 here (no deadline of the sidecar's own: Redis answers with
// its error at once); any client number gives a result without overflow.
TEST_CASE("blocking timeouts read as Redis reads them") {
  const auto ms = [](std::vector<std::string_view> args) {
    const cmd::command_info* info = cmd::lookup(args[0]);
    REQUIRE(info != nullptr);
    REQUIRE((info->flags & cmd::blocking) != 0);
    return cmd::block_ms(*info, args);
  };
  using o = std::optional<long long>;
  CHECK(ms({"BLPOP", "a", "b", "0"}) == o{0});
  CHECK(ms({"BLPOP", "a", "1.5"}) == o{1500});
  CHECK(ms({"BRPOP", "a", "1e3"}) == o{1'000'000});
  CHECK(ms({"BLMOVE", "a", "b", "LEFT", "RIGHT", "2"}) == o{2000});
  CHECK(ms({"BZPOPMIN", "z", "0.001"}) == o{1});
  CHECK(ms({"BLMPOP", "3", "1", "a", "LEFT"}) == o{3000});  // the timeout comes first
  CHECK(ms({"BZMPOP", "0.25", "1", "z", "MIN"}) == o{250});
  CHECK(ms({"BLPOP", "a", "10000000000"}) == o{10'000'000'000'000});  // 317 years
  for (const std::string_view refused : {"-1", "inf", "nan", "1e300", "9e15", "x", "", "1s"})
    CHECK(ms({"BLPOP", "a", refused}) == o{0});
  CHECK(ms({"BLPOP"}) == o{0});

  CHECK(ms({"XREAD", "BLOCK", "250", "STREAMS", "s", "$"}) == o{250});
  CHECK(ms({"XREAD", "COUNT", "1", "block", "9223372036854775807", "STREAMS", "s", "$"}) ==
        o{9'223'372'036'854'775'807});
  CHECK(ms({"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"}) == o{0});
  CHECK(ms({"XREAD", "STREAMS", "s", "$"}) == std::nullopt);                  // not blocking
  CHECK(ms({"XREAD", "STREAMS", "BLOCK", "5", "s", "$"}) == std::nullopt);    // a stream's name
  CHECK(ms({"XREAD", "BLOCK"}) == std::nullopt);
  for (const std::string_view refused : {"-5", "007", "-0", "+1", "1.5", "9223372036854775808"})
    CHECK(ms({"XREAD", "BLOCK", refused, "STREAMS", "s", "$"}) == o{0});

  CHECK(ms({"WAIT", "1", "100"}) == o{100});
  CHECK(ms({"WAIT", "1", "0100"}) == o{0});
}
