#include "proxy/upstream/tls_stream.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>

namespace redis_sidecar {
namespace {

// SSL_get_error() reads the thread's error queue, so it must be empty before each SSL_ call.
// ERR_clear_error() frees every slot of the queue each time, about 800 instructions a call (the
// four calls of a `-c 1` GET were a fifth of OpenSSL's work for it); a look at its top is enough
// when the queue is already empty.
void clear_errors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

}  // namespace

// OpenSSL's side of the stream: reads come from in_, writes go to out_. Never blocks: a read with
// nothing buffered asks OpenSSL to retry (SSL_ERROR_WANT_READ), and read_some() fills in_.
struct tls_stream_bio {
  static int write(BIO* b, const char* data, std::size_t len, std::size_t* written) {
    auto* s = static_cast<tls_stream*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    s->out_.append(data, len);
    *written = len;
    return 1;
  }

  static int read(BIO* b, char* data, std::size_t len, std::size_t* read) {
    auto* s = static_cast<tls_stream*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    const std::size_t n = std::min(len, s->in_end_ - s->in_start_);
    if (n == 0) {
      BIO_set_retry_read(b);
      *read = 0;
      return 0;
    }
    std::memcpy(data, s->in_.data() + s->in_start_, n);
    s->in_start_ += n;
    *read = n;
    return 1;
  }

  static long ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }

  static const BIO_METHOD* method() {
    static BIO_METHOD* const m = [] {
      BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "redis-sidecar");
      if (bm != nullptr) {
        BIO_meth_set_write_ex(bm, write);
        BIO_meth_set_read_ex(bm, read);
        BIO_meth_set_ctrl(bm, ctrl);
        BIO_meth_set_create(bm, create);
      }
      return bm;
    }();
    return m;
  }
};

tls_stream::tls_stream(tcp::socket socket, ssl::context& ctx) : socket_(std::move(socket)) {
  enable_drained_reads(socket_.native_handle());
  const BIO_METHOD* m = tls_stream_bio::method();
  if (m == nullptr) return;
  ssl_ = SSL_new(ctx.native_handle());
  BIO* bio = ssl_ != nullptr ? BIO_new(m) : nullptr;
  if (bio == nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
    return;
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one reference, for both directions
  SSL_set_connect_state(ssl_);
  SSL_set_options(ssl_, SSL_OP_NO_RENEGOTIATION);
  // OpenSSL takes whole buffers of records from in_, not a header and then a body.
  SSL_set_read_ahead(ssl_, 1);
}

tls_stream::~tls_stream() { SSL_free(ssl_); }

void tls_stream::verify_peer(const std::string& name) {
  SSL_set_verify(ssl_, SSL_VERIFY_PEER, nullptr);
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
  error_code not_ip;
  asio::ip::make_address(name, not_ip);
  if (!not_ip)
    X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
  else
    X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
}

error_code tls_stream::ssl_error(int ret) {
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_ZERO_RETURN: return asio::error::eof;
    case SSL_ERROR_SSL:
    case SSL_ERROR_SYSCALL:
      if (const unsigned long e = ERR_get_error(); e != 0)
        return error_code(static_cast<int>(e), asio::error::get_ssl_category());
      return ssl::error::stream_truncated;
    default: return ssl::error::unspecified_system_error;
  }
}

awaitable<error_code> tls_stream::fill() {
  in_.make_room(in_start_, in_end_, input_size / 4, input_size, input_size);
  auto [ec, n] = co_await socket_.async_read_some(
      drained_read_buffer{asio::buffer(in_.data() + in_end_, in_.size() - in_end_)}, use_nothrow);
  in_end_ += n;
  if (ec) socket_error_ = ec;
  co_return ec;
}

awaitable<std::tuple<error_code>> tls_stream::handshake() {
  if (ssl_ == nullptr) co_return error_code(ssl::error::unspecified_system_error);
  for (;;) {
    clear_errors();
    const int r = SSL_do_handshake(ssl_);
    // Read the outcome now: the thread's error queue is OpenSSL's, other connections' included.
    const bool more = r != 1 && SSL_get_error(ssl_, r) == SSL_ERROR_WANT_READ;
    const error_code failed = r == 1 || more ? error_code() : ssl_error(r);
    if (!out_.empty()) {  // the next flight, or the alert of a failure
      auto [ec, n] = co_await asio::async_write(socket_, take_output(), use_nothrow);
      if (ec && !failed) co_return ec;
    }
    if (!more) co_return failed;
    if (socket_error_) co_return socket_error_;
    if (const error_code ec = co_await fill()) co_return ec;
  }
}

awaitable<std::tuple<error_code, std::size_t>> tls_stream::read_some(asio::mutable_buffer buf) {
  if (ssl_ == nullptr) co_return std::tuple(ssl::error::unspecified_system_error, std::size_t{0});
  char* const data = static_cast<char*>(buf.data());
  std::size_t total = 0;
  while (total < buf.size()) {
    clear_errors();  // also after fill(): other connections used the queue meanwhile
    std::size_t n = 0;
    const int r = SSL_read_ex(ssl_, data + total, buf.size() - total, &n);
    if (r == 1) {
      total += n;
      // Nothing left to decrypt, here or inside OpenSSL: another call could only ask for more.
      if (in_start_ == in_end_ && SSL_has_pending(ssl_) == 0) break;
      continue;
    }
    if (SSL_get_error(ssl_, r) != SSL_ERROR_WANT_READ) {
      if (total > 0) break;  // the error comes again with the next read
      co_return std::tuple(ssl_error(r), std::size_t{0});
    }
    if (total > 0) break;
    if (socket_error_) co_return std::tuple(socket_error_, std::size_t{0});
    if (const error_code ec = co_await fill()) co_return std::tuple(ec, std::size_t{0});
  }
  co_return std::tuple(error_code(), total);
}

error_code tls_stream::encrypt(asio::const_buffer buf) {
  if (ssl_ == nullptr) return ssl::error::unspecified_system_error;
  if (buf.size() == 0) return {};
  clear_errors();
  std::size_t written = 0;
  // The BIO takes every record, so the whole buffer is written in one call.
  const int r = SSL_write_ex(ssl_, buf.data(), buf.size(), &written);
  if (r != 1) return ssl_error(r);
  return {};
}

awaitable<std::tuple<error_code, std::size_t>> tls_stream::write(asio::const_buffer buf) {
  if (const error_code ec = encrypt(buf)) co_return std::tuple(ec, std::size_t{0});
  auto [ec, n] = co_await asio::async_write(socket_, take_output(), use_nothrow);
  co_return std::tuple(ec, ec ? std::size_t{0} : buf.size());
}

}  // namespace redis_sidecar
