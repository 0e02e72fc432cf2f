// log: one line per event on stderr, as text ("ts level message", the default) or as JSON
// ({"ts":"...","level":"...","msg":"..."}, --log-format=json) for log collectors. Callers mask
// credentials before logging (config/url.hpp's mask_url); the logger does not look inside messages,
// but the JSON form escapes them completely (quotes, backslashes, control characters, and bytes
// that are not UTF-8, which become U+FFFD), so every line is one valid JSON object.
//
// Threads: the level and format are set once at start-up. write() may be called from any thread
// (the data plane, the metrics HTTP threads): each line is built first and written with one call,
// so lines never interleave.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace redis_sidecar::log {

enum class level { debug, info, warn, error };
enum class format { text, json };

void set_level(level l);
bool parse_level(std::string_view s, level& out);
bool enabled(level l);

void set_format(format f);
/// "text" or "json".
bool parse_format(std::string_view s, format& out);

/// The line write() prints for `message` at time `at`, newline included. For tests.
std::string format_line(format f, level l, std::chrono::system_clock::time_point at,
                        std::string_view message);

void write(level l, std::string_view message);

inline void debug(std::string_view m) {
  if (enabled(level::debug)) write(level::debug, m);
}
inline void info(std::string_view m) { write(level::info, m); }
inline void warn(std::string_view m) { write(level::warn, m); }
inline void error(std::string_view m) { write(level::error, m); }

}  // namespace redis_sidecar::log
