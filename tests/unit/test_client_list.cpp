// CLIENT LIST without I/O: Redis 7.0's forms and errors (checked against redis-server 7.0.15) and
// the line CLIENT LIST and CLIENT INFO answer, field by field in Redis' order.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "proxy/commands/client_list.hpp"

using namespace redis_sidecar::commands;

namespace {

std::variant<list_filter, std::string> parse(std::vector<std::string_view> args) {
  args.insert(args.begin(), {"CLIENT", "LIST"});
  return parse_client_list(args);
}

std::string error_of(std::vector<std::string_view> args) {
  const auto r = parse(std::move(args));
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

list_filter filter_of(std::vector<std::string_view> args) {
  const auto r = parse(std::move(args));
  INFO((std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : ""));
  REQUIRE(std::holds_alternative<list_filter>(r));
  return std::get<list_filter>(r);
}

}  // namespace

TEST_CASE("client list: errors as Redis gives them", "[client_list]") {
  CHECK(error_of({"TYPE", "foo"}) == "ERR Unknown client type 'foo'");
  CHECK(error_of({"ID", "abc"}) == "ERR Invalid client ID");
  CHECK(error_of({"ID", "1", "1.5"}) == "ERR Invalid client ID");
  for (const char* id : {"01", "-0", "+1", " 1"})  // integers as Redis reads them
    CHECK(error_of({"ID", "1", id}) == "ERR Invalid client ID");
  CHECK(error_of({"ID"}) == "ERR syntax error");
  CHECK(error_of({"TYPE"}) == "ERR syntax error");
  CHECK(error_of({"TYPE", "normal", "ID", "1"}) == "ERR syntax error");
  CHECK(error_of({"foo"}) == "ERR syntax error");
}

TEST_CASE("client list: every client, by type, or by ids", "[client_list]") {
  const auto all = filter_of({});
  CHECK(!all.type);
  CHECK(!all.by_id);
  CHECK(filter_of({"type", "PubSub"}).type == client_type::pubsub);
  CHECK(filter_of({"TYPE", "slave"}).type == client_type::replica);
  const auto ids = filter_of({"id", "7", "0", "-3", "7", "12"});
  CHECK(ids.by_id);
  CHECK(ids.ids == std::vector<std::uint64_t>{7, 7, 12});  // ids below 1 name no client
  CHECK(filter_of({"ID", "0"}).ids.empty());
}

TEST_CASE("client list: Redis' fields in Redis' order", "[client_list]") {
  client_line c;
  c.id = 42;
  c.addr = "127.0.0.1:50000";
  c.laddr = "127.0.0.1:6379";
  c.fd = 9;
  c.age_s = 120;
  c.idle_s = 3;
  c.flags = "P";
  c.db = 2;
  c.sub = 2;
  c.psub = 1;
  c.multi = -1;
  c.qbuf = 26;
  c.qbuf_free = 65510;
  c.rbs = 65536;
  c.obl = 0;
  c.tot_mem = 66000;
  c.cmd = "client|list";
  c.resp = 3;
  std::string out = "x";
  append_client_line(out, c);
  CHECK(out ==
        "xid=42 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=9 name= age=120 idle=3 flags=P db=2 "
        "sub=2 psub=1 ssub=0 multi=-1 qbuf=26 qbuf-free=65510 argv-mem=0 multi-mem=0 rbs=65536 "
        "rbp=65536 obl=0 oll=0 omem=0 tot-mem=66000 events=r cmd=client|list user=default "
        "redir=-1 resp=3\n");
  c.name = "worker";
  c.writing = true;
  c.multi = 3;
  out.clear();
  append_client_line(out, c);
  CHECK(out.find(" name=worker ") != std::string::npos);
  CHECK(out.find(" multi=3 ") != std::string::npos);
  CHECK(out.find(" events=rw ") != std::string::npos);
}
