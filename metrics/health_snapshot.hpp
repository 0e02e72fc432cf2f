// health_snapshot: what /readyz reports, as a plain struct the proxy fills on its own thread and
// hands to the exporter (exporter::publish) whenever something in it changes or a probe completes.
// The exporter keeps a copy under a mutex and renders it as JSON on request; it never reads the
// proxy's state directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace redis_sidecar::metrics {

struct health_snapshot {
  bool ready = false;                       // /readyz answers 200 when true, 503 otherwise
  std::string upstream_state = "starting";  // the proxy's word for it: "up", "down", "connecting"
  bool upstream_up = false;                 // the last health probe succeeded
  std::string last_error;                   // last upstream error, already masked; "" when none
  // When the last error came (Unix time, milliseconds); none when there was none.
  std::optional<std::int64_t> last_error_unix_ms;
  std::optional<double> last_probe_seconds;  // round trip of the last probe; none before the first
  std::string cache_mode;                    // "auto", "fallback", "off"
  bool fallback_active = false;              // L1 serves because the upstream is unreachable
  std::uint64_t cache_entries = 0;
  std::uint64_t cache_bytes = 0;
};

/// The /readyz body: one JSON object, e.g.
/// {"status":"ready","version":"0.1.0","upstream":{"state":"up","up":true,"last_error":"",
///  "last_error_at":null,"last_probe_ms":0.412},"cache":{"mode":"auto","entries":10,
///  "bytes":2048},"fallback":{"active":false}}
/// "status" is "ready" or "not_ready"; "last_probe_ms" is null before the first probe;
/// "last_error_at" is the last error's UTC time ("2026-12-07T05:32:10.123Z"), null when none.
/// The last error stays after the upstream recovered: "state" tells whether it still holds.
std::string render_health_json(const health_snapshot& s, std::string_view version);

}  // namespace redis_sidecar::metrics
