// Compares the command table with a real redis-server's `COMMAND` reply: the same set of top-level
// commands, the same arity and legacy key positions, and flags that agree with Redis' own flags
// under the rules generate_table.py applies.
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "proxy/commands/command_table.hpp"
#include "tests/support/harness.hpp"

namespace cmd = redis_sidecar::commands;
namespace rt = redis_sidecar::test;

namespace {

struct live_command {
  long long arity = 0;
  std::set<std::string> flags;
  long long first_key = 0, last_key = 0, key_step = 0;
  std::vector<live_command> subs;
  std::string name;
};

std::string text(const redisReply* r) { return std::string(r->str, r->len); }

// One element of the COMMAND reply: [name, arity, flags, first, last, step, acl, tips, specs,
// subs].
live_command parse(const redisReply* r) {
  REQUIRE(r->type == REDIS_REPLY_ARRAY);
  REQUIRE(r->elements >= 6);
  live_command c;
  c.name = text(r->element[0]);
  c.arity = r->element[1]->integer;
  for (std::size_t i = 0; i < r->element[2]->elements; ++i) {
    c.flags.insert(text(r->element[2]->element[i]));
  }
  c.first_key = r->element[3]->integer;
  c.last_key = r->element[4]->integer;
  c.key_step = r->element[5]->integer;
  if (r->elements > 9 && r->element[9]->type == REDIS_REPLY_ARRAY) {
    for (std::size_t i = 0; i < r->element[9]->elements; ++i) {
      c.subs.push_back(parse(r->element[9]->element[i]));
    }
  }
  return c;
}

std::map<std::string, live_command> live_commands() {
  rt::redis_server srv;
  rt::context_ptr c(srv.connect_direct());
  REQUIRE(c);
  const rt::reply_ptr reply = rt::command(c.get(), {"COMMAND"});
  REQUIRE(reply);
  REQUIRE(reply->type == REDIS_REPLY_ARRAY);
  std::map<std::string, live_command> out;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    live_command one = parse(reply->element[i]);
    out.emplace(one.name, std::move(one));
  }
  return out;
}

bool has(const cmd::command_info& row, std::uint32_t f) { return (row.flags & f) != 0; }

// The flags Redis' data implies for a row (our policy flags aside): see generate_table.py.
void check_redis_flags(const cmd::command_info& row, const live_command& live) {
  if (live.subs.empty()) {
    // Our policy makes scripts and PFCOUNT (it rewrites the HyperLogLog's cached cardinality)
    // writes: generate_table.py.
    const bool policy_write = has(row, cmd::script) || live.name == "pfcount";
    if (!policy_write) {
      CHECK(has(row, cmd::read) == (live.flags.count("readonly") > 0));
      CHECK(has(row, cmd::write) == (live.flags.count("write") > 0));
    }
    CHECK(has(row, cmd::admin) == (live.flags.count("admin") > 0));
    CHECK(has(row, cmd::movable_keys) == (live.flags.count("movablekeys") > 0));
    if (live.flags.count("blocking")) CHECK(has(row, cmd::blocking));
    return;
  }
  bool any_write = false, any_read = false, all_admin = true, any_keys = false;
  for (const auto& sub : live.subs) {
    if (sub.name.ends_with("|help")) continue;
    any_write = any_write || sub.flags.count("write") > 0;
    any_read = any_read || sub.flags.count("readonly") > 0;
    all_admin = all_admin && sub.flags.count("admin") > 0;
    any_keys = any_keys || sub.first_key != 0;
  }
  CHECK(has(row, cmd::write) == any_write);
  CHECK(has(row, cmd::read) == (any_read && !any_write));
  CHECK(has(row, cmd::admin) == all_admin);
  CHECK(has(row, cmd::movable_keys) == any_keys);
}

}  // namespace

TEST_CASE("command table matches a live redis-server's COMMAND reply") {
  const auto live = live_commands();
  REQUIRE(live.size() >= 200);

  for (const auto& row : cmd::all()) {
    INFO(row.name);
    const auto it = live.find(std::string(row.name));
    REQUIRE(it != live.end());
    CHECK(row.arity == it->second.arity);
    CHECK(row.first_key == it->second.first_key);
    CHECK(row.last_key == it->second.last_key);
    CHECK(row.key_step == it->second.key_step);
    check_redis_flags(row, it->second);
  }
  for (const auto& [name, info] : live) {
    INFO(name);
    const auto* row = cmd::lookup(name);
    REQUIRE(row != nullptr);
    CHECK(row->name == name);
  }
  CHECK(cmd::all().size() == live.size());
}

TEST_CASE("every live CLIENT subcommand except HELP has a sub_id") {
  const auto live = live_commands();
  const auto client = live.find("client");
  REQUIRE(client != live.end());
  REQUIRE_FALSE(client->second.subs.empty());
  std::set<cmd::sub_id> seen;
  for (const auto& sub : client->second.subs) {
    INFO(sub.name);
    REQUIRE(sub.name.starts_with("client|"));
    const std::string tail = sub.name.substr(7);
    const cmd::sub_id id = cmd::lookup_sub(cmd::command_id::client, tail);
    if (tail == "help") {
      CHECK(id == cmd::sub_id::other);
      continue;
    }
    CHECK(id != cmd::sub_id::other);
    CHECK(seen.insert(id).second);
  }
}
