#include "proxy/upstream/connect_fsm.hpp"

#include <array>
#include <charconv>

#include "proxy/commands/command_table.hpp"
#include "proxy/resp/writer.hpp"

namespace redis_sidecar {
namespace {

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && commands::iequals(s.substr(0, prefix.size()), prefix);
}

// A field of HELLO's reply: a map in RESP3, a flat array of name/value pairs in RESP2.
const resp::value* hello_field(const resp::value& reply, std::string_view name) {
  if (reply.type != resp::value::kind::array) return reply.find(name);
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
    if (reply.elements[i].str == name) return &reply.elements[i + 1];
  return nullptr;
}

// Redis' refusals of the credentials (or of a connection without them): WRONGPASS, NOPERM (an ACL
// user not allowed HELLO or AUTH), NOAUTH, and the errors of AUTH against a server without a
// password. Not LOADING, BUSY, MASTERDOWN and the like, which pass.
bool refuses_credentials(std::string_view error) {
  for (const std::string_view code :
       {"wrongpass", "noperm", "noauth", "err invalid password", "err auth"})
    if (starts_with_ci(error, code)) return true;
  return false;
}

// An upstream's error as error() quotes it: resp::error_text (which ends where Redis quotes a
// command's arguments: "unknown command `HELLO`, with args beginning with: `3`, `AUTH`, `default`,
// `<the password>`" from Redis before 6, whose HELLO that is), and the password masked wherever
// else it appears (a server in between may echo the command its own way).
// Masked before error_text cuts it to 300 bytes, so that a password across the cut cannot leave
// its first bytes behind.
std::string quoted_error(std::string_view text, std::string_view password) {
  std::string masked(text);
  if (!password.empty())
    for (auto at = masked.find(password); at != std::string::npos;
         at = masked.find(password, at + 4))
      masked.replace(at, password.size(), "****");
  return resp::error_text(masked);
}

}  // namespace

connect_fsm::connect_fsm(const upstream_url& url, int proto) : url_(url), proto_(proto) {}

connect_fsm::step connect_fsm::start() {
  phase_ = phase::resolving;
  return step::resolve;
}

connect_fsm::step connect_fsm::on_done(std::string_view error) {
  if (!error.empty()) {
    switch (phase_) {
      case phase::resolving: return fail("cannot resolve " + url_.host + ": " + std::string(error));
      case phase::connecting:
        return fail("cannot connect to " + url_.endpoint() + ": " + std::string(error));
      case phase::handshaking:
        return fail("TLS handshake with " + url_.endpoint() + " failed: " + std::string(error));
      default: {  // sending the handshake's request, or waiting for its reply
        const char* what = phase_ == phase::hello  ? "HELLO"
                           : phase_ == phase::auth ? "AUTH"
                                                   : "SELECT";
        return fail(std::string(what) + " to " + url_.endpoint() +
                    " failed: " + std::string(error));
      }
    }
  }
  switch (phase_) {
    case phase::resolving: phase_ = phase::connecting; return step::connect;
    case phase::connecting:
      if (url_.tls) {
        phase_ = phase::handshaking;
        return step::tls_handshake;
      }
      return send_hello();
    case phase::handshaking: return send_hello();
    case phase::hello:
    case phase::auth:
    case phase::select: return step::receive;  // the request went out: wait for its reply
    case phase::done: return step::ready;
  }
  return fail("connect sequence out of order");
}

connect_fsm::step connect_fsm::send_hello() {
  phase_ = phase::hello;
  out_.clear();
  const std::string proto = std::to_string(proto_);
  if (url_.password.empty()) {
    std::array<std::string_view, 4> args{"HELLO", proto, "SETNAME", upstream_client_name};
    resp::append_command(out_, args);
  } else {
    // Both arms must be string_views: mixing "default" with a std::string would make the
    // conditional a temporary std::string that dies before `args` is used.
    const std::string_view user =
        url_.username.empty() ? std::string_view("default") : std::string_view(url_.username);
    std::array<std::string_view, 7> args{
        "HELLO", proto, "AUTH", user, url_.password, "SETNAME", upstream_client_name};
    resp::append_command(out_, args);
  }
  return step::send;
}

connect_fsm::step connect_fsm::send_auth() {
  phase_ = phase::auth;
  out_.clear();
  if (url_.username.empty()) {
    std::array<std::string_view, 2> args{"AUTH", url_.password};
    resp::append_command(out_, args);
  } else {
    std::array<std::string_view, 3> args{"AUTH", url_.username, url_.password};
    resp::append_command(out_, args);
  }
  return step::send;
}

connect_fsm::step connect_fsm::after_auth() {
  if (url_.db == 0) {
    phase_ = phase::done;
    return step::ready;
  }
  phase_ = phase::select;
  out_.clear();
  const std::string db = std::to_string(url_.db);
  std::array<std::string_view, 2> args{"SELECT", db};
  resp::append_command(out_, args);
  return step::send;
}

connect_fsm::server_role connect_fsm::role_in_hello(const resp::value& reply) {
  const resp::value* v = hello_field(reply, "role");
  if (v == nullptr) return server_role::unknown;
  if (v->str == "master") return server_role::primary;
  if (v->str == "replica" || v->str == "slave") return server_role::replica;
  return server_role::unknown;
}

connect_fsm::step connect_fsm::on_reply(const resp::value& reply) {
  const bool is_error = reply.type == resp::value::kind::error;
  switch (phase_) {
    case phase::hello:
      if (!is_error) {
        if (const resp::value* v = hello_field(reply, "version")) version_ = v->str;
        role_ = role_in_hello(reply);
        if (const resp::value* v = hello_field(reply, "id");
            v != nullptr && v->type == resp::value::kind::integer && v->integer > 0)
          client_id_ = static_cast<std::uint64_t>(v->integer);
        return after_auth();
      }
      // Redis before 6 has no HELLO; it can still serve RESP2 with AUTH.
      if (starts_with_ci(reply.str, "err unknown command") && proto_ == 2) {
        if (url_.password.empty()) return after_auth();
        return send_auth();
      }
      if (starts_with_ci(reply.str, "err unknown command"))
        return fail("the upstream does not support RESP3 (no HELLO command): " +
                    quoted_error(reply.str, url_.password));
      if (starts_with_ci(reply.str, "noproto"))
        return fail("the upstream does not support RESP" + std::to_string(proto_) + ": " +
                    quoted_error(reply.str, url_.password));
      return refused(reply);
    case phase::auth:
      if (is_error) return refused(reply);
      return after_auth();
    case phase::select:
      if (is_error) {
        // The URL's db out of range, a cluster that has no SELECT, an ACL that refuses it: not
        // ended by a retry. (SELECT runs while Redis loads its data, so that is not among them.)
        const std::string_view code = resp::error_code(reply.str);
        if (code == "ERR" || code == "NOPERM") refusal_ = config_refusal::database;
        return fail("SELECT " + std::to_string(url_.db) +
                    " failed: " + quoted_error(reply.str, url_.password));
      }
      phase_ = phase::done;
      return step::ready;
    default: return fail("unexpected reply during connect");
  }
}

// HELLO or AUTH refused. Quoted through quoted_error(): Redis' refusals do not hold the password
// we sent, but a server or proxy in between may echo the command.
connect_fsm::step connect_fsm::refused(const resp::value& reply) {
  const std::string_view command = phase_ == phase::auth ? "AUTH" : "HELLO";
  const std::string text = quoted_error(reply.str, url_.password);
  if (!refuses_credentials(reply.str))
    return fail("the upstream refused " + std::string(command) + ": " + text);
  refusal_ = config_refusal::credentials;
  if (starts_with_ci(reply.str, "noauth"))
    return fail("authentication required by the upstream, but the URL has no password: " + text);
  return fail("authentication failed: " + text);
}

connect_fsm::step connect_fsm::fail(std::string message) {
  error_ = std::move(message);
  phase_ = phase::done;
  return step::failed;
}

}  // namespace redis_sidecar
