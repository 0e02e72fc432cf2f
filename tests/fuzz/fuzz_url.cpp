// libFuzzer target for the upstream URL's parser and the password masking (config/url.hpp): a
// password must never reach a log line, an error, a metric or /readyz. The input decodes into a URL
// around a known password: a scheme, a user, the password (as written, percent-encoded or not) in
// the userinfo or in a query, and the rest (host, port, path, query, junk), all fuzzer bytes.
// Checked with __builtin_trap:
//  - parse_upstream_url never throws; on failure its error, on success masked() and endpoint(),
//    hold neither the password as written nor as decoded;
//  - an accepted URL's masked() parses again to the same endpoint and db;
//  - mask_url() of a redis:// or rediss:// URL inside a log line holds no password either, when
//    the URL is one token of that line (no whitespace, quote or bracket in it, no second "://":
//    mask_url's boundary).
// Cases where the password's text also occurs elsewhere in the URL (the fuzzer may copy it) are
// not judged: the output may then hold it legitimately. Nor is masked() where the same URL with
// another password masks to the password's text as well (re-encoding can spell it).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/config/url.hpp"

namespace {

using redis_sidecar::mask_url;
using redis_sidecar::parse_upstream_url;
using redis_sidecar::upstream_url;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

class input {
 public:
  input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
  // Up to `n` bytes; '\x01' ends a part early, so parts can be short without a length byte.
  std::string part(std::size_t n) {
    std::string s;
    while (s.size() < n && pos_ < size_) {
      const char c = static_cast<char>(data_[pos_++]);
      if (c == '\x01') break;
      s += c;
    }
    return s;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// Passwords as people write them in URLs: plain, with characters that must be percent-encoded
// (written encoded), and with raw characters the parser must refuse or mask.
constexpr std::string_view passwords[][2] = {
    // {as written, as decoded}
    {"Zq9sEcret", "Zq9sEcret"}, {"Kx%40Vw%3A7", "Kx@Vw:7"}, {"Pa%2Fss%25Wd", "Pa/ss%Wd"},
    {"Tz:Yq2Lm", "Tz:Yq2Lm"},   {"Bq@Rn5Hv", "Bq@Rn5Hv"},   {"Wm/Jd4Xc", "Wm/Jd4Xc"},
    {"Gf%20Uy8Sp", "Gf Uy8Sp"}, {"Hy?Qw3Rt", "Hy?Qw3Rt"},   {"Nc#Vb6Ze", "Nc#Vb6Ze"},
    {"Dk%3FLp2%23", "Dk?Lp2#"},
};

bool once(std::string_view text, std::string_view s) {
  const auto first = text.find(s);
  return first != std::string_view::npos && text.find(s, first + 1) == std::string_view::npos;
}

bool holds(std::string_view text, std::string_view s) {
  return text.find(s) != std::string_view::npos;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `s` with every %XX decoded: a user name may hold the password in another spelling
// ("%3a" for ':'), which masked() writes back in its own.
std::string percent_decoded(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in(data, size);
  const std::uint8_t shape = in.next();
  constexpr std::string_view schemes[] = {"redis://", "rediss://", "REDISS://", "redis:/", ""};
  const auto& pw = passwords[in.next() % (sizeof(passwords) / sizeof(passwords[0]))];
  const std::string_view written = pw[0];
  const std::string_view decoded = pw[1];

  const std::string user = in.part(24);
  const std::string rest = in.part(64);
  const auto build = [&](std::string_view password) {
    std::string u(schemes[shape % 5]);
    if ((shape & 0x40) == 0) {  // in the userinfo: user:password@rest
      u += user;
      u += ':';
      u += password;
      u += '@';
      u += rest;
    } else {  // in a query: user@rest?password=... (or pasted as a parameter of its own)
      u += user;
      if (!user.empty()) u += '@';
      u += rest;
      u += (shape & 0x10) ? "?" : "?password=";
      u += password;
    }
    if (shape & 0x20) u = " \t" + u + "\n";
    return u;
  };
  const std::string url = build(written);

  // Judged only when the password's text occurs once (the fuzzer may have copied it elsewhere).
  const bool judged = once(url, written) && !holds(percent_decoded(user), decoded) &&
                      !holds(percent_decoded(rest), decoded) &&
                      (decoded == written || !holds(url, decoded));

  // Whether a text holds the password, as written or decoded.
  const auto shows_password = [&](std::string_view s) {
    return holds(s, written) || holds(s, decoded);
  };

  upstream_url u;
  std::string error;
  if (parse_upstream_url(url, u, error)) {
    const std::string masked = u.masked();
    const std::string endpoint = u.endpoint();
    // masked() writes the user name and the rest back in its own encoding, which may spell the
    // password's text by chance (user "=k%3FLp2%23" comes back as "%3Dk%3FLp2%23", which holds
    // "Dk%3FLp2%23"). The same URL with a password the fuzzer cannot have copied shows whether
    // the text comes from there: if its masked() and endpoint() hold it too, it is not the
    // password's.
    const auto spelled = [&] {
      upstream_url neutral;
      std::string neutral_error;
      return parse_upstream_url(build("Nq0Mw1Bv2"), neutral, neutral_error) &&
             (shows_password(neutral.masked()) || shows_password(neutral.endpoint()));
    };
    if (judged && (shows_password(masked) || shows_password(endpoint))) check(spelled());
    upstream_url again;
    std::string again_error;
    check(parse_upstream_url(masked, again, again_error));
    check(again.endpoint() == endpoint && again.db == u.db && again.tls == u.tls);
  } else if (judged) {
    check(!error.empty());
    check(!shows_password(error));
  }

  // In a log line, as one token.
  const std::string logged = mask_url("connecting to " + url + " failed");
  const std::string_view core = std::string_view(url).substr(
      url.find_first_not_of(" \t"), url.find_last_not_of('\n') - url.find_first_not_of(" \t") + 1);
  const bool one_token = core.find_first_of(" \t\n\r\v\f\"'`<>") == std::string_view::npos &&
                         core.find("://") != std::string_view::npos &&
                         core.find("://") == core.rfind("://");
  const bool redis_scheme = shape % 5 < 3;  // mask_url looks for redis:// and rediss:// only
  if (judged && one_token && redis_scheme) check(!holds(logged, written));
  return 0;
}
