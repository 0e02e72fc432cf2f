// writer: appends RESP encodings to an output buffer, for replies the sidecar makes itself and for
// requests it sends (re-encoded inline commands, handshake commands). `proto` is the client's
// protocol version (2 or 3) where RESP3 has its own type and RESP2 a fallback.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace redis_sidecar::resp {

void append_simple(std::string& out, std::string_view s);  // +s\r\n (CR, LF in s: spaces)
void append_error(std::string& out, std::string_view s);   // -s\r\n (as above; s starts "ERR ...")
void append_integer(std::string& out, std::int64_t v);     // :v\r\n
void append_bulk(std::string& out, std::string_view s);    // $len\r\ns\r\n
void append_null(std::string& out, int proto);             // RESP3 "_\r\n", RESP2 "$-1\r\n"
std::string_view null_frame(int proto);                     // what append_null appends
void append_null_array(std::string& out, int proto);       // RESP3 "_\r\n", RESP2 "*-1\r\n"
void append_array_header(std::string& out, std::size_t n); // *n\r\n
void append_map_header(std::string& out, std::size_t pairs, int proto);  // RESP3 %n, RESP2 *2n
void append_set_header(std::string& out, std::size_t n, int proto);      // RESP3 ~n, RESP2 *n
void append_push_header(std::string& out, std::size_t n, int proto);     // RESP3 >n, RESP2 *n
void append_bool(std::string& out, bool b, int proto);     // RESP3 #t/#f, RESP2 :1/:0
void append_verbatim(std::string& out, std::string_view txt, int proto);  // RESP3 =n txt:, RESP2 $

/// A request as a RESP2 array of bulk strings: what the sidecar sends upstream.
void append_command(std::string& out, std::span<const std::string_view> args);

}  // namespace redis_sidecar::resp
