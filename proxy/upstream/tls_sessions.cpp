#include "proxy/upstream/tls_sessions.hpp"

#include <mutex>

namespace redis_sidecar::tls_sessions {
namespace {

// The session one SSL_CTX keeps: owned by the context (freed with it, see slot()). It is a copy
// no connection uses, so no connection's end can spoil it.
struct kept_session {
  std::mutex mu;  // connections live on one thread today; the lock keeps that an assumption only
  SSL_SESSION* session = nullptr;

  ~kept_session() { SSL_SESSION_free(session); }
};

void free_kept(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
               void* /*argp*/) {
  delete static_cast<kept_session*>(ptr);
}

int slot() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_kept);
  return index;
}

kept_session* kept(SSL_CTX* ctx) {
  return ctx == nullptr || slot() < 0
             ? nullptr
             : static_cast<kept_session*>(SSL_CTX_get_ex_data(ctx, slot()));
}

// OpenSSL calls this when the server issues a session (after a TLS 1.3 handshake, as tickets
// arrive; at the end of a TLS 1.2 one). The session handed over is the connection's own: OpenSSL
// marks it not resumable when that connection is freed without a close_notify sent, as the
// sidecar's are (a client leaving closes its dedicated connection at once). A copy keeps the
// ticket usable for the connections that follow. Returning 0: OpenSSL keeps its reference.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  kept_session* k = kept(SSL_get_SSL_CTX(ssl));
  if (k == nullptr || SSL_SESSION_is_resumable(session) == 0) return 0;
  SSL_SESSION* copy = SSL_SESSION_dup(session);
  if (copy == nullptr) return 0;
  std::lock_guard lock(k->mu);
  SSL_SESSION_free(k->session);
  k->session = copy;
  return 0;
}

}  // namespace

void enable(SSL_CTX* ctx) {
  if (kept(ctx) != nullptr || slot() < 0) return;
  auto* k = new kept_session;
  if (SSL_CTX_set_ex_data(ctx, slot(), k) == 0) {
    delete k;
    return;
  }
  // The client cache is this one slot: OpenSSL's internal store is for servers' lookups.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
}

// A copy again: under TLS 1.2 a resumed connection uses the offered object as its own session, and
// OpenSSL marks it not resumable when that connection is freed without a close_notify sent.
void offer(SSL* ssl) {
  kept_session* k = kept(SSL_get_SSL_CTX(ssl));
  if (k == nullptr) return;
  SSL_SESSION* copy = nullptr;
  {
    std::lock_guard lock(k->mu);
    if (k->session != nullptr) copy = SSL_SESSION_dup(k->session);
  }
  if (copy == nullptr) return;
  SSL_set_session(ssl, copy);  // takes a reference of its own
  SSL_SESSION_free(copy);
}

}  // namespace redis_sidecar::tls_sessions
