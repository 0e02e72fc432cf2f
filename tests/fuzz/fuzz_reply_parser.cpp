// libFuzzer target for resp::reply_parser and resp::decode. The first bytes choose the limits and
// the read sizes; the rest is an upstream byte stream. It is framed whole and in reads of
// pseudo-random sizes into a re-allocated, compacted buffer; both must give the same frames and
// final state. Every complete frame is also decoded, which must agree with the framer on what is a
// frame, and split into elements as the near cache does (which must agree with decode). Every
// frame also goes through the subscription tracker (a subscribed client's frames),
// which must only ever read confirmations out of complete frames, and through the near cache's
// reading of its invalidation channel. A push inside a frame (as Redis
// 7.0 writes a keyspace notification into a reply) must be one whole push frame, and the frame
// without its pushes one whole frame with none.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/resp/reply_parser.hpp"
#include "proxy/resp/value.hpp"
#include "proxy/subscriptions.hpp"
#include "proxy/tier/channel_message.hpp"

namespace {

using redis_sidecar::resp::limits;
using redis_sidecar::resp::parse_status;
using redis_sidecar::resp::reply_error;
using redis_sidecar::resp::reply_parser;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

struct frame {
  std::string bytes;
  char type;
  std::vector<std::pair<std::size_t, std::size_t>> embedded;
  bool operator==(const frame&) const = default;
};

struct run_result {
  std::vector<frame> frames;
  parse_status last = parse_status::need_more;
  reply_error error = reply_error::none;
  bool operator==(const run_result&) const = default;
};

constexpr std::string_view known_types = "+-:$*_,#(!=%~>";

// The near cache's view of a frame (split_array, bulk_payload, integer_payload) must agree with
// decode() wherever decode() accepts it, and every element it finds must be one whole frame.
void check_elements(std::string_view bytes, const redis_sidecar::resp::value* decoded) {
  using kind = redis_sidecar::resp::value::kind;
  std::vector<std::string_view> elements;
  const bool split = redis_sidecar::resp::split_array(bytes, elements);
  if (split) {
    std::size_t total = 0;
    for (const std::string_view e : elements) {
      check(e.data() >= bytes.data() && e.data() + e.size() <= bytes.data() + bytes.size());
      limits big = redis_sidecar::resp::reply_limits({});
      big.max_bulk_bytes = std::max(big.max_bulk_bytes, bytes.size());
      reply_parser p(big);
      check(p.parse(e) == parse_status::complete && p.frame_size() == e.size());
      total += e.size();
    }
    check(bytes[0] == '*' && total < bytes.size());
  }
  if (decoded != nullptr && bytes[0] == '*' && decoded->type == kind::array) {
    check(split && elements.size() == decoded->elements.size());
  }
  const auto payload = redis_sidecar::resp::bulk_payload(bytes);
  if (payload)
    check(decoded == nullptr || (decoded->type == kind::bulk_string && decoded->str == *payload));
  if (decoded != nullptr && bytes[0] == '$' && decoded->type == kind::bulk_string)
    check(payload.has_value());
  const auto integer = redis_sidecar::resp::integer_payload(bytes);
  if (integer)
    check(decoded == nullptr || (decoded->type == kind::integer && decoded->integer == *integer));
  if (decoded != nullptr && bytes[0] == ':') check(integer && *integer == decoded->integer);
}

bool drain(reply_parser& p, const limits& limits_of_run, std::string& buffer, run_result& r,
           bool decode_frames) {
  for (;;) {
    const parse_status st = p.parse(buffer);
    r.last = st;
    if (st == parse_status::error) {
      r.error = p.error();
      check(r.error != reply_error::none);
      return false;
    }
    if (st == parse_status::need_more) return true;
    check(p.frame_size() > 0 && p.frame_size() <= buffer.size());
    check(known_types.find(p.type()) != std::string_view::npos);
    frame f{buffer.substr(0, p.frame_size()), p.type(), p.embedded_pushes()};
    if (!f.embedded.empty()) {
      std::string rest;
      std::size_t at = 0;
      for (const auto& [begin, end] : f.embedded) {
        check(begin >= at && begin < end && end <= f.bytes.size());
        reply_parser push(limits_of_run);
        check(push.parse(std::string_view(f.bytes).substr(begin, end - begin)) ==
                  parse_status::complete &&
              push.frame_size() == end - begin && push.is_push() && push.embedded_pushes().empty());
        rest.append(f.bytes, at, begin - at);
        at = end;
      }
      rest.append(f.bytes, at);
      reply_parser without(limits_of_run);
      check(without.parse(rest) == parse_status::complete && without.frame_size() == rest.size() &&
            without.embedded_pushes().empty() && without.type() == f.type);
      check(!redis_sidecar::resp::decode(f.bytes).has_value());
    }
    if (decode_frames) {
      // decode() frames with default limits: it must never accept more or less than one frame.
      const auto v = redis_sidecar::resp::decode(f.bytes);
      if (v.has_value()) {
        reply_parser strict(redis_sidecar::resp::reply_limits({}));
        check(strict.parse(f.bytes) == parse_status::complete);
        check(strict.frame_size() == f.bytes.size());
      }
      std::string extended = f.bytes + "+";
      check(!redis_sidecar::resp::decode(extended).has_value());
      check_elements(f.bytes, v.has_value() ? &*v : nullptr);
      for (const int proto : {2, 3}) {
        redis_sidecar::subscription_tracker t;
        const bool unsubscribed_all = t.on_frame(f.bytes, proto);
        const auto c = redis_sidecar::parse_confirmation(f.bytes, proto);
        // (A negative count, which no Redis sends, counts as none left.)
        check(!unsubscribed_all || (c && c->unsubscribe && c->count <= 0));
        check(!c || v.has_value());
        check(!redis_sidecar::parse_confirmation(f.bytes.substr(0, f.bytes.size() - 1), proto));
      }
      if (v.has_value()) {
        // The near cache's reading of its channel: whatever the frame, keys come from elements.
        for (const int db : {0, 15}) {
          const auto m = redis_sidecar::parse_channel_message(*v, db);
          check(m.keys.size() <= f.bytes.size());
          if (m.what != redis_sidecar::channel_message::kind::keys) check(m.keys.empty());
        }
      }
    }
    r.frames.push_back(std::move(f));
    buffer.erase(0, p.frame_size());
    p.reset();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  limits l;
  if ((data[0] & 1) != 0) {  // tiny limits, to reach every limit branch
    l.max_inline_bytes = 1 + data[0] % 24;
    l.max_bulk_bytes = data[0] % 40;
    l.max_multibulk_len = data[0] % 6;
    l.max_nesting = data[0] % 5;
  }
  std::uint32_t seed = data[1] | (static_cast<std::uint32_t>(data[2]) << 8) | 1u;
  const std::string_view input(reinterpret_cast<const char*>(data) + 3, size - 3);

  run_result whole;
  {
    reply_parser p(l);
    std::string buffer(input);
    drain(p, l, buffer, whole, true);
  }

  run_result split;
  {
    reply_parser p(l);
    std::string buffer;
    std::size_t at = 0;
    bool ok = true;
    while (ok && at < input.size()) {
      seed ^= seed << 13;  // xorshift32: read sizes from 1 to 16 bytes
      seed ^= seed >> 17;
      seed ^= seed << 5;
      const std::size_t n = 1 + seed % 16;
      std::string next = buffer;  // a fresh allocation, as after compaction
      next.append(input.substr(at, n));
      buffer.swap(next);
      at += n;
      ok = drain(p, l, buffer, split, false);
    }
  }
  check(whole == split);
  return 0;
}
