#include "proxy/log.hpp"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <initializer_list>

#include "metrics/json.hpp"

namespace redis_sidecar::log {
namespace {
// Set once at start-up; atomics because the metrics HTTP threads may log too.
std::atomic<level> g_level{level::info};
std::atomic<format> g_format{format::text};

const char* name(level l) {
  switch (l) {
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
  }
  return "info";
}

// "2026-11-30T14:00:00.123Z" (UTC, milliseconds).
std::string timestamp(std::chrono::system_clock::time_point at) {
  const auto secs = std::chrono::system_clock::to_time_t(at);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[32];
  const std::size_t n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%.*s.%03dZ", static_cast<int>(n), ts, static_cast<int>(ms));
  return out;
}
}  // namespace

void set_level(level l) { g_level.store(l, std::memory_order_relaxed); }

bool parse_level(std::string_view s, level& out) {
  for (const level l : {level::debug, level::info, level::warn, level::error}) {
    if (s != name(l)) continue;
    out = l;
    return true;
  }
  return false;
}

bool enabled(level l) { return l >= g_level.load(std::memory_order_relaxed); }

void set_format(format f) { g_format.store(f, std::memory_order_relaxed); }

bool parse_format(std::string_view s, format& out) {
  if (s != "text" && s != "json") return false;
  out = s == "json" ? format::json : format::text;
  return true;
}

std::string format_line(format f, level l, std::chrono::system_clock::time_point at,
                        std::string_view message) {
  std::string line;
  line.reserve(message.size() + 64);
  if (f == format::text) {
    line += timestamp(at);
    line += ' ';
    line += name(l);
    line += ' ';
    line += message;
  } else {
    line += R"({"ts":")";
    line += timestamp(at);
    line += R"(","level":")";
    line += name(l);
    line += R"(","msg":)";
    metrics::append_json_string(line, message);
    line += '}';
  }
  line += '\n';
  return line;
}

void write(level l, std::string_view message) {
  if (!enabled(l)) return;
  const std::string line = format_line(g_format.load(std::memory_order_relaxed), l,
                                       std::chrono::system_clock::now(), message);
  // One call per line: stdio locks the stream for its duration, so concurrent lines never mix.
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace redis_sidecar::log
