// url: the upstream Redis URL, parsed with Boost.URL. redis:// and rediss://, user:password@ (ACL),
// :password@, /db, IPv6 literals, percent-encoded user and password, host without port (6379).
// The password never leaves this struct unmasked except to the upstream handshake.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace redis_sidecar {

struct upstream_url {
  bool tls = false;          // rediss://
  std::string host;          // without brackets for IPv6
  std::uint16_t port = 6379;
  std::string username;      // decoded; empty: the default user
  std::string password;      // decoded; empty: no AUTH
  int db = 0;

  /// "rediss://user:****@host:port/db": safe for logs, errors, metrics and /readyz.
  std::string masked() const;
  /// "host:port", with [] around IPv6 literals.
  std::string endpoint() const;
};

/// Parses `text`. On failure returns false and sets `error` to a message that names the problem and
/// quotes the URL with any password masked.
bool parse_upstream_url(std::string_view text, upstream_url& out, std::string& error);

/// Masks the password in any text that may contain a redis URL (best effort, for log lines).
std::string mask_url(std::string_view text);

}  // namespace redis_sidecar
