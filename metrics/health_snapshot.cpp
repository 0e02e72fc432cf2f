#include "metrics/health_snapshot.hpp"

#include <cmath>
#include <cstdio>
#include <ctime>

#include "metrics/json.hpp"

namespace redis_sidecar::metrics {

namespace {

// Milliseconds with microsecond resolution, or null (JSON has no NaN or infinity).
std::string milliseconds_or_null(const std::optional<double>& seconds) {
  if (!seconds || !std::isfinite(*seconds)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", *seconds * 1000.0);
  return buf;
}

const char* boolean(bool b) { return b ? "true" : "false"; }

// "2026-12-07T05:32:10.123Z", quoted, or null.
std::string utc_time_or_null(const std::optional<std::int64_t>& unix_ms) {
  if (!unix_ms) return "null";
  const std::int64_t ms = *unix_ms < 0 ? 0 : *unix_ms;
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  if (gmtime_r(&secs, &tm) == nullptr) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace

std::string render_health_json(const health_snapshot& s, std::string_view version) {
  std::string out;
  out.reserve(256 + s.last_error.size());
  out += R"({"status":)";
  out += s.ready ? R"("ready")" : R"("not_ready")";
  out += R"(,"version":)";
  append_json_string(out, version);
  out += R"(,"upstream":{"state":)";
  append_json_string(out, s.upstream_state);
  out += R"(,"up":)";
  out += boolean(s.upstream_up);
  out += R"(,"last_error":)";
  append_json_string(out, s.last_error);
  out += R"(,"last_error_at":)";
  out += utc_time_or_null(s.last_error_unix_ms);
  out += R"(,"last_probe_ms":)";
  out += milliseconds_or_null(s.last_probe_seconds);
  out += R"(},"cache":{"mode":)";
  append_json_string(out, s.cache_mode);
  out += R"(,"entries":)";
  out += std::to_string(s.cache_entries);
  out += R"(,"bytes":)";
  out += std::to_string(s.cache_bytes);
  out += R"(},"fallback":{"active":)";
  out += boolean(s.fallback_active);
  out += "}}";
  return out;
}

}  // namespace redis_sidecar::metrics
