// tls_sessions: TLS session resumption towards the upstream. Every upstream connection (the shared
// pool, dedicated connections, the health probe, the near cache's channel) goes to one server with
// one client SSL_CTX, so the context keeps the latest resumable session the server issued (TLS 1.3
// tickets, TLS 1.2 session ids) and each new connection offers it. A resumed handshake skips the
// certificate chain (sent, parsed and verified once per full handshake: about 40 % of the
// sidecar's CPU for a new connection here, bench/RESULTS.md) and the server's signature, and under
// TLS 1.2 a round trip. Forward secrecy is kept: OpenSSL clients resume TLS 1.3 with (EC)DHE. A
// server that declines the session gets a full handshake, with the certificate verified as usual.
#pragma once

#include <openssl/ssl.h>

namespace redis_sidecar::tls_sessions {

/// Makes `ctx` keep the latest resumable session its connections receive. Idempotent.
void enable(SSL_CTX* ctx);
/// Offers the session `ssl`'s context keeps, if any, for the coming handshake.
void offer(SSL* ssl);

}  // namespace redis_sidecar::tls_sessions
