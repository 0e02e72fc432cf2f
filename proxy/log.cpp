#include "proxy/log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace redis_sidecar::log {
namespace {
level g_level = level::info;  // set once at start-up, before any thread starts

const char* name(level l) {
  switch (l) {
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
  }
  return "info";
}
}  // namespace

void set_level(level l) { g_level = l; }

bool parse_level(std::string_view s, level& out) {
  if (s == "debug") out = level::debug;
  else if (s == "info") out = level::info;
  else if (s == "warn") out = level::warn;
  else if (s == "error") out = level::error;
  else return false;
  return true;
}

bool enabled(level l) { return l >= g_level; }

void write(level l, std::string_view message) {
  if (!enabled(l)) return;
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  std::fprintf(stderr, "%s.%03dZ %s %.*s\n", ts, static_cast<int>(ms), name(l),
               static_cast<int>(message.size()), message.data());
}

}  // namespace redis_sidecar::log
