// CLIENT KILL without I/O: Redis 7.0's two forms, its errors for bad filters (checked against
// redis-server 7.0.15), and which clients a filter selects.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "proxy/commands/client_kill.hpp"

using namespace redis_sidecar::commands;

namespace {

std::variant<kill_filter, std::string> parse(std::vector<std::string_view> args) {
  args.insert(args.begin(), {"CLIENT", "KILL"});
  return parse_client_kill(args);
}

std::string error_of(std::vector<std::string_view> args) {
  const auto r = parse(std::move(args));
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

kill_filter filter_of(std::vector<std::string_view> args) {
  const auto r = parse(std::move(args));
  INFO((std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : ""));
  REQUIRE(std::holds_alternative<kill_filter>(r));
  return std::get<kill_filter>(r);
}

}  // namespace

TEST_CASE("client kill: errors as Redis gives them", "[client_kill]") {
  CHECK(error_of({}) == "ERR wrong number of arguments for 'client|kill' command");
  CHECK(error_of({"ID", "0"}) == "ERR client-id should be greater than 0");
  CHECK(error_of({"ID", "-1"}) == "ERR client-id should be greater than 0");
  CHECK(error_of({"id", "abc"}) == "ERR client-id should be greater than 0");
  for (const char* id : {"01", "-0", "+1", " 1", "1 "})  // integers as Redis reads them
    CHECK(error_of({"ID", id}) == "ERR client-id should be greater than 0");
  CHECK(error_of({"ID", "99", "TYPE"}) == "ERR syntax error");
  CHECK(error_of({"ID", "99", "FOO", "bar"}) == "ERR syntax error");
  CHECK(error_of({"TYPE", "foo"}) == "ERR Unknown client type 'foo'");
  CHECK(error_of({"USER", "nobody"}) == "ERR No such user 'nobody'");
  CHECK(error_of({"USER", "default", "SKIPME", "maybe"}) == "ERR syntax error");
  CHECK(error_of({"MAXAGE", "10"}) == "ERR syntax error");  // not in Redis 7.0
  // The first bad pair decides.
  CHECK(error_of({"ID", "x", "TYPE", "foo"}) == "ERR client-id should be greater than 0");
}

TEST_CASE("client kill: the old form and filter pairs", "[client_kill]") {
  const auto old = filter_of({"127.0.0.1:5000"});
  CHECK(old.old_form);
  CHECK(old.addr == "127.0.0.1:5000");
  CHECK_FALSE(old.skipme);                // the old form may kill the caller
  CHECK(filter_of({"ID"}).addr == "ID");  // three arguments are always the old form

  const auto f = filter_of({"id", "7", "type", "PUBSUB", "addr", "a:1", "laddr", "b:2", "user",
                            "default", "skipme", "no"});
  CHECK_FALSE(f.old_form);
  CHECK(f.id == 7);
  CHECK(f.type == client_type::pubsub);
  CHECK(f.addr == "a:1");
  CHECK(f.laddr == "b:2");
  CHECK_FALSE(f.skipme);
  CHECK(filter_of({"TYPE", "slave"}).type == client_type::replica);
  CHECK(filter_of({"TYPE", "replica"}).type == client_type::replica);
  CHECK(filter_of({"TYPE", "normal"}).type == client_type::normal);
  CHECK(filter_of({"TYPE", "master"}).type == client_type::master);
  CHECK(filter_of({"ID", "1", "ID", "2"}).id == 2);  // the last one counts
}

TEST_CASE("client kill: what a filter selects", "[client_kill]") {
  const client_view me{1, "127.0.0.1:100", "127.0.0.1:6379", client_type::normal, true};
  const client_view sub{2, "127.0.0.1:200", "127.0.0.1:6379", client_type::pubsub, false};
  const client_view other{3, "[::1]:300", "[::1]:6379", client_type::normal, false};

  const auto by_id = filter_of({"ID", "2"});
  CHECK_FALSE(selects(by_id, me));
  CHECK(selects(by_id, sub));
  CHECK_FALSE(selects(by_id, other));

  const auto normal = filter_of({"TYPE", "normal"});
  CHECK_FALSE(selects(normal, me));  // SKIPME yes by default
  CHECK_FALSE(selects(normal, sub));
  CHECK(selects(normal, other));
  CHECK(selects(filter_of({"TYPE", "normal", "SKIPME", "no"}), me));

  CHECK(selects(filter_of({"127.0.0.1:100"}), me));  // the old form: the caller too
  CHECK_FALSE(selects(filter_of({"127.0.0.1:10"}), me));
  CHECK(selects(filter_of({"LADDR", "[::1]:6379"}), other));
  CHECK_FALSE(selects(filter_of({"LADDR", "[::1]:6379", "ID", "2"}), other));  // every filter
  const auto everyone = filter_of({"USER", "default"});
  CHECK(selects(everyone, sub));
  CHECK(selects(everyone, other));
  CHECK_FALSE(selects(everyone, me));
}
