// connect_fsm: the upstream connect sequence as a sans-I/O state machine.
//
//   resolve -> connect -> [tls handshake] -> HELLO proto [AUTH user pass] SETNAME -> [SELECT db] ->
//   ready
//                                              | "unknown command" and proto 2 (Redis < 6):
//                                              +-> [AUTH [user] pass] -> [SELECT db] -> ready
//
// The driver (upstream/connection.cpp) performs each returned action and reports the outcome back:
// on_done() after resolve/connect/handshake/send, on_reply() with each decoded reply. Any failure
// ends in `failed` with a message that is safe to log (it never contains the password).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/config/url.hpp"
#include "proxy/resp/value.hpp"

namespace redis_sidecar {

/// The name upstream connections give themselves (CLIENT LIST on the upstream).
inline constexpr std::string_view upstream_client_name = "redis-sidecar";

/// A failed connection attempt that only a change of the sidecar's configuration ends, where a
/// retry cannot: the upstream refuses its credentials, a certificate (the upstream's does not
/// verify, or the upstream refuses the sidecar's, or has none to ask for), a TLS version, or the
/// URL's db; or the URL leads back to the sidecar's own listener. `none` for every other failure.
enum class config_refusal : std::uint8_t { none, credentials, certificate, own_listener, database };

class connect_fsm {
 public:
  enum class step : std::uint8_t {
    resolve,        // resolve url.host / url.port
    connect,        // TCP connect to the resolved endpoints
    tls_handshake,  // only for rediss://
    send,           // write bytes() to the upstream
    receive,        // read one reply and pass it to on_reply()
    ready,          // the connection is usable
    failed,         // give up this attempt; error() says why
  };

  /// `proto` is the RESP version the connection will speak (2 or 3).
  connect_fsm(const upstream_url& url, int proto);

  step start();
  /// Outcome of resolve, connect, tls_handshake or send. `error` is empty on success.
  step on_done(std::string_view error);
  /// A complete reply read after a `receive` action.
  step on_reply(const resp::value& reply);

  /// The request to write for a `send` action.
  std::string_view bytes() const { return out_; }
  std::string_view error() const { return error_; }
  /// Whether the failure refused the credentials (config_refusal::credentials) or not.
  config_refusal refusal() const { return refusal_; }
  /// The upstream's version from HELLO (e.g. "7.0.15"), empty if it did not say.
  std::string_view server_version() const { return version_; }
  /// The connection's client id on the upstream, from HELLO (0: not known, Redis before 6).
  std::uint64_t client_id() const { return client_id_; }
  /// What HELLO's "role" said the upstream is: a primary, a replica, or not known (no HELLO, or
  /// no such field).
  enum class server_role : std::uint8_t { unknown, primary, replica };
  server_role role() const { return role_; }
  /// The role a HELLO reply (a RESP3 map or a RESP2 flat array) gives.
  static server_role role_in_hello(const resp::value& reply);
  int proto() const { return proto_; }

 private:
  enum class phase : std::uint8_t { resolving, connecting, handshaking, hello, auth, select, done };

  step send_hello();
  step send_auth();
  step after_auth();
  step fail(std::string message);
  step refused(const resp::value& reply);

  const upstream_url& url_;
  int proto_;
  phase phase_ = phase::resolving;
  std::string out_;
  std::string error_;
  config_refusal refusal_ = config_refusal::none;
  std::string version_;
  std::uint64_t client_id_ = 0;
  server_role role_ = server_role::unknown;
};

}  // namespace redis_sidecar
