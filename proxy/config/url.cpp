// url: parsing the upstream Redis URL with Boost.URL, and masking passwords in text. The userinfo
// follows redis-py: "a:b" is user a with password b, ":b" is the default user with password b, and
// "a" alone is user a without a password. Every error message quotes the URL through the masking
// helpers below, so a password never reaches a log line.
#include "proxy/config/url.hpp"

#include <algorithm>
#include <boost/url.hpp>
#include <cctype>
#include <cstddef>
#include <limits>
#include <optional>

namespace redis_sidecar {
namespace {

constexpr std::string_view mask = "****";

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Parses a non-empty run of decimal digits no greater than `max`.
std::optional<unsigned long long> parse_digits(std::string_view s, unsigned long long max) {
  if (s.empty()) return std::nullopt;
  unsigned long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned long long>(c - '0');
    if (v > max) return std::nullopt;
  }
  return v;
}

// Percent-encodes everything but RFC 3986 unreserved characters, so that a user name with '@' or
// ':' reads back unambiguously in masked().
std::string encode_user(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 0xF];
    }
  }
  return out;
}

// Where the query of a URL-like token starts: its first '?' after the userinfo (a raw '?' in a
// password is part of the userinfo, which ends at the last '@').
std::size_t query_start(std::string_view token) {
  const auto at = token.rfind('@');
  return token.find('?', at == std::string_view::npos ? 0 : at);
}

// A query may carry a password ("?password=..."): appended masked whole.
void append_masked_query(std::string_view token, std::size_t query, std::string& out) {
  if (query == std::string_view::npos) return;
  out += '?';
  if (query + 1 < token.size()) out += mask;
}

// Masks the password of one URL-like token that starts right after "scheme://". The userinfo ends
// at the last '@' of the token (a raw '@', '/' or '?' in a password must not make part of it
// leak); the password is everything after the first ':' of the userinfo. Userinfo without a ':' is
// masked whole: some clients read "redis://SECRET@host" as a password alone. The query is masked.
void mask_authority(std::string_view token, std::string& out) {
  const auto query = query_start(token);
  const auto head = token.substr(0, query);
  const auto at = head.rfind('@');
  const auto colon = head.substr(0, at).find(':');
  if (at == std::string_view::npos || (colon != std::string_view::npos && colon + 1 == at)) {
    out += head;  // no userinfo, or no password after its ':'
  } else if (colon == std::string_view::npos) {
    if (at > 0) out += mask;
    out += head.substr(at);
  } else {
    out += head.substr(0, colon + 1);
    out += mask;
    out += head.substr(at);
  }
  append_masked_query(token, query, out);
}

// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
bool is_scheme(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (const char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.')
      return false;
  return true;
}

// The URL quoted in an error message: the whole text is one URL, so a password containing spaces or
// other junk is masked too. Text without a scheme and "://" (a URL missing its scheme,
// "redis:/...") has everything before its last '@' masked, and its query.
std::string quote_masked(std::string_view text) {
  std::string out = "'";
  if (const auto sep = text.find("://");
      sep != std::string_view::npos && is_scheme(text.substr(0, sep))) {
    out += text.substr(0, sep + 3);
    mask_authority(text.substr(sep + 3), out);
  } else {
    const auto query = query_start(text);
    const auto head = text.substr(0, query);
    const auto at = head.rfind('@');
    if (at != std::string_view::npos) out += mask;
    out += head.substr(at == std::string_view::npos ? 0 : at);
    append_masked_query(text, query, out);
  }
  out += '\'';
  return out;
}

// `text` with the port `port` masked: a port that is not a number is likely a password written
// without its "@host" (redis://user:SECRET), which an error must not show.
std::string without_port(std::string_view text, std::string_view port) {
  std::string shown(text);
  if (const auto at = shown.find(":" + std::string(port)); !port.empty() && at != std::string::npos)
    shown.replace(at + 1, port.size(), mask);
  return shown;
}

// An '@' left unencoded in a password makes Boost.URL see a strange host and path; say so instead.
bool has_two_ats(std::string_view text) {
  const auto sep = text.find("://");
  if (sep == std::string_view::npos) return false;
  const auto rest = text.substr(sep + 3, text.find_first_of("?#", sep + 3) - (sep + 3));
  const auto first = rest.find('@');
  return first != std::string_view::npos && rest.find('@', first + 1) != std::string_view::npos;
}

bool fail(std::string& error, std::string_view text, std::string_view problem) {
  error = "invalid upstream URL " + quote_masked(text) + ": ";
  error += problem;
  return false;
}

// " 'name'" for the query parameters other clients' URLs take (redis-py, ioredis, node-redis),
// else nothing: a parameter the sidecar does not know may be a secret pasted in the wrong place.
std::string quote_if_known(std::string_view key) {
  static constexpr std::string_view known[] = {
      "password",
      "username",
      "user",
      "protocol",
      "ssl_cert_reqs",
      "ssl_ca_certs",
      "ssl_certfile",
      "ssl_keyfile",
      "ssl_check_hostname",
      "socket_timeout",
      "socket_connect_timeout",
      "tls",
      "ssl",
      "family",
      "client_name",
      "decode_responses",
      "health_check_interval",
      "max_connections",
      "retry_on_timeout",
      "timeout",
  };
  for (const auto k : known)
    if (iequals(key, k)) return " '" + std::string(key) + "'";
  return {};
}

bool parse_db(std::string_view digits, int& db) {
  const auto v =
      parse_digits(digits, static_cast<unsigned long long>(std::numeric_limits<int>::max()));
  if (!v) return false;
  db = static_cast<int>(*v);
  return true;
}

// The path "/N" (or none, or "/") and an optional "?db=N" query, which must agree with the path.
bool parse_db_parts(boost::urls::url_view u, std::string_view text, upstream_url& out,
                    std::string& error) {
  std::string_view path = u.encoded_path();
  bool path_has_db = false;
  if (!path.empty() && path != "/") {
    if (path.front() != '/' || !parse_db(path.substr(1), out.db))
      return fail(error, text, "the path must be a database number such as /0");
    path_has_db = true;
  }
  if (!u.has_query()) return true;
  for (const auto& p : u.params()) {
    if (p.key != "db")
      return fail(
          error, text,
          "unsupported query parameter" + quote_if_known(p.key) + " (only db is supported)");
    int db = 0;
    if (!parse_db(p.value, db)) return fail(error, text, "db must be a non-negative number");
    if (path_has_db && db != out.db)
      return fail(error, text, "the database in the path and in ?db= differ");
    out.db = db;
  }
  return true;
}

bool parse_host_port(boost::urls::url_view u, std::string_view text, upstream_url& out,
                     std::string& error) {
  switch (u.host_type()) {
    case boost::urls::host_type::ipv6:
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::name: out.host = u.host_address(); break;
    default: return fail(error, text, "unsupported host");
  }
  if (out.host.empty()) return fail(error, text, "the host is empty");
  // A name is looked up in DNS: letters, digits, '-', '.' and '_' (service names). Anything else
  // came from percent-encoding ("%2F") and names no host.
  if (u.host_type() == boost::urls::host_type::name) {
    for (const char c : out.host)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_')
        return fail(error, text, "the host name holds characters no host name has");
  }
  if (!u.has_port()) return true;
  const auto port = parse_digits(u.port(), 65535);
  if (!port || *port == 0) {
    const std::string_view p = u.port();
    const bool digits =
        std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
    return fail(error, digits ? std::string(text) : without_port(text, p),
                "the port must be a number from 1 to 65535");
  }
  out.port = static_cast<std::uint16_t>(*port);
  return true;
}

}  // namespace

std::string upstream_url::masked() const {
  std::string out = tls ? "rediss://" : "redis://";
  if (!username.empty() || !password.empty()) {
    // A user name alone is masked too: some clients read "redis://SECRET@host" as a password.
    out += password.empty() ? std::string(mask) : encode_user(username);
    if (!password.empty()) {
      out += ':';
      out += mask;
    }
    out += '@';
  }
  out += endpoint();
  out += '/';
  out += std::to_string(db);
  return out;
}

std::string upstream_url::endpoint() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = v6 ? "[" + host + "]" : host;
  out += ':';
  out += std::to_string(port);
  return out;
}

bool parse_upstream_url(std::string_view text, upstream_url& out, std::string& error) {
  text = trim(text);
  if (text.empty()) {
    error = "the upstream URL is empty";
    return false;
  }
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    return fail(error, text,
                "not a valid URL (characters such as @ : / in a password must be "
                "percent-encoded, e.g. @ as %40)");
  }
  if (has_two_ats(text))
    return fail(error, text, "more than one '@': percent-encode an '@' in a password as %40");
  const boost::urls::url_view u = *parsed;
  upstream_url result;
  const std::string_view scheme = u.scheme();
  if (iequals(scheme, "rediss")) {
    result.tls = true;
  } else if (!iequals(scheme, "redis")) {
    return fail(error, text,
                "unsupported scheme '" + std::string(scheme) + "' (use redis:// or rediss://)");
  }
  if (!u.has_authority()) return fail(error, text, "expected redis://host or rediss://host");
  if (u.has_fragment()) return fail(error, text, "a URL fragment (#...) is not supported");
  if (u.has_userinfo()) {
    result.username = u.user();
    result.password = u.password();
  }
  if (u.has_port() && u.port().empty() && !u.encoded_path().empty() &&
      u.encoded_path().front() != '/')  // "host:SECRET": Boost.URL reads SECRET as a path
    return fail(error, without_port(text, u.encoded_path().substr(0, u.encoded_path().find('/'))),
                "the port must be a number from 1 to 65535");
  if (!parse_host_port(u, text, result, error)) return false;
  if (!parse_db_parts(u, text, result, error)) return false;
  out = std::move(result);
  return true;
}

std::string mask_url(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto sep = text.find("://", pos);
    if (sep == std::string_view::npos) break;
    const auto after = sep + 3;
    // Only redis:// and rediss:// (any case); "xredis://" is masked too, which errs on the safe
    // side.
    const bool redis = (sep >= 5 && iequals(text.substr(sep - 5, 5), "redis")) ||
                       (sep >= 6 && iequals(text.substr(sep - 6, 6), "rediss"));
    out += text.substr(pos, after - pos);
    pos = after;
    if (!redis) continue;
    // The token ends at whitespace, a quote or bracket that closes a log field, or the next "://".
    auto end = pos;
    while (end < text.size() && !is_space(text[end]) && text[end] != '"' && text[end] != '\'' &&
           text[end] != '`' && text[end] != '<' && text[end] != '>')
      ++end;
    const auto next = text.substr(pos, end - pos).find("://");
    if (next != std::string_view::npos) {
      // Stop before the next scheme name so that it is scanned on its own.
      auto cut = pos + next;
      while (cut > pos && std::isalpha(static_cast<unsigned char>(text[cut - 1]))) --cut;
      end = cut;
    }
    mask_authority(text.substr(pos, end - pos), out);
    pos = end;
  }
  if (pos < text.size()) out += text.substr(pos);
  return out;
}

}  // namespace redis_sidecar
