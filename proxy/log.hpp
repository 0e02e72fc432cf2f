// log: one line per event on stderr, "ts level message". Callers mask credentials before logging
// (config/url.hpp's mask_url); the logger does not look inside messages.
#pragma once

#include <string_view>

namespace redis_sidecar::log {

enum class level { debug, info, warn, error };

void set_level(level l);
bool parse_level(std::string_view s, level& out);
bool enabled(level l);
void write(level l, std::string_view message);

inline void debug(std::string_view m) { if (enabled(level::debug)) write(level::debug, m); }
inline void info(std::string_view m) { write(level::info, m); }
inline void warn(std::string_view m) { write(level::warn, m); }
inline void error(std::string_view m) { write(level::error, m); }

}  // namespace redis_sidecar::log
