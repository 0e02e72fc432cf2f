// Logging: the exact text and JSON lines for a fixed time, JSON escaping of messages (quotes,
// control characters, invalid UTF-8), --log-format parsing, and whole lines under concurrent
// writers (stderr redirected to a file for the test).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "proxy/log.hpp"

namespace rlog = redis_sidecar::log;
using namespace std::chrono_literals;

namespace {

// 2026-11-30T14:00:00.123Z
const std::chrono::system_clock::time_point at =
    std::chrono::sys_days{std::chrono::year{2026} / 11 / 30} + 14h + 123ms;

}  // namespace

TEST_CASE("text lines are unchanged: timestamp, level, raw message", "[log]") {
  CHECK(
      rlog::format_line(rlog::format::text, rlog::level::info, at, "listening on 127.0.0.1:6379") ==
      "2026-11-30T14:00:00.123Z info listening on 127.0.0.1:6379\n");
  CHECK(rlog::format_line(rlog::format::text, rlog::level::warn, at + 877ms, "a \"b\"") ==
        "2026-11-30T14:00:01.000Z warn a \"b\"\n");
}

TEST_CASE("JSON lines: one object per line with ts, level, msg", "[log]") {
  CHECK(rlog::format_line(rlog::format::json, rlog::level::info, at, "hello") ==
        R"({"ts":"2026-11-30T14:00:00.123Z","level":"info","msg":"hello"})"
        "\n");
  CHECK(rlog::format_line(rlog::format::json, rlog::level::debug, at, "") ==
        R"({"ts":"2026-11-30T14:00:00.123Z","level":"debug","msg":""})"
        "\n");
  CHECK(rlog::format_line(rlog::format::json, rlog::level::error, at,
                          "upstream said \"ERR\"\r\n\tC:\\path \x01\xC3(") ==
        R"({"ts":"2026-11-30T14:00:00.123Z","level":"error",)"
        R"("msg":"upstream said \"ERR\"\r\n\tC:\\path \u0001\ufffd("})"
        "\n");
  CHECK(rlog::format_line(rlog::format::json, rlog::level::warn, at, "caf\xC3\xA9") ==
        "{\"ts\":\"2026-11-30T14:00:00.123Z\",\"level\":\"warn\",\"msg\":\"caf\xC3\xA9\"}\n");
}

TEST_CASE("log format values (--log-format)", "[log]") {
  rlog::format f = rlog::format::text;
  CHECK(rlog::parse_format("json", f));
  CHECK(f == rlog::format::json);
  CHECK(rlog::parse_format("text", f));
  CHECK(f == rlog::format::text);
  CHECK_FALSE(rlog::parse_format("JSON", f));
  CHECK_FALSE(rlog::parse_format("", f));
}

TEST_CASE("concurrent writers produce whole lines", "[log]") {
  char path[] = "/tmp/redis_sidecar_log_XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  std::fflush(stderr);
  const int saved = ::dup(2);
  REQUIRE(saved >= 0);
  ::dup2(fd, 2);
  rlog::set_format(rlog::format::json);
  constexpr int threads = 4, lines = 500;
  const std::string payload(300, 'x');
  {
    std::vector<std::thread> writers;
    for (int t = 0; t < threads; ++t)
      writers.emplace_back([&, t] {
        for (int i = 0; i < lines; ++i) rlog::info("w" + std::to_string(t) + " " + payload);
      });
    for (auto& w : writers) w.join();
  }
  rlog::set_format(rlog::format::text);
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fd);

  std::ifstream in(path);
  int count = 0;
  for (std::string line; std::getline(in, line); ++count) {
    REQUIRE(line.rfind(R"({"ts":")", 0) == 0);
    REQUIRE(line.find(R"(","level":"info","msg":"w)") == 31);
    REQUIRE(line.size() > payload.size());
    REQUIRE(line.compare(line.size() - payload.size() - 2, payload.size() + 2, payload + "\"}") ==
            0);
  }
  ::unlink(path);
  CHECK(count == threads * lines);
}
