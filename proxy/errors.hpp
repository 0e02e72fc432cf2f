// errors: every error string a client can see from the sidecar itself, in one place, so tests
// compare exact bytes. Upstream errors pass through untouched and are not listed here.
#pragma once

#include <string_view>

#include "proxy/resp/request_parser.hpp"

namespace redis_sidecar::errors {

// Protocol errors: the connection is closed after the reply, as Redis does.
inline constexpr std::string_view invalid_multibulk_length =
    "ERR Protocol error: invalid multibulk length";
inline constexpr std::string_view invalid_bulk_length = "ERR Protocol error: invalid bulk length";
inline constexpr std::string_view unauthenticated_multibulk_length =
    "ERR Protocol error: unauthenticated multibulk length";
inline constexpr std::string_view unauthenticated_bulk_length =
    "ERR Protocol error: unauthenticated bulk length";
inline constexpr std::string_view too_big_inline = "ERR Protocol error: too big inline request";
inline constexpr std::string_view too_big_count = "ERR Protocol error: too big mbulk count string";
inline constexpr std::string_view unbalanced_quotes =
    "ERR Protocol error: unbalanced quotes in request";
inline constexpr std::string_view bad_crlf =
    "ERR Protocol error: expected '\\r\\n' after bulk payload";
inline constexpr std::string_view expected_bulk = "ERR Protocol error: expected '$'";

inline std::string_view for_request_error(resp::request_error e) {
  switch (e) {
    case resp::request_error::invalid_multibulk_length: return invalid_multibulk_length;
    case resp::request_error::invalid_bulk_length: return invalid_bulk_length;
    case resp::request_error::expected_bulk: return expected_bulk;
    case resp::request_error::too_big_inline: return too_big_inline;
    case resp::request_error::too_big_count: return too_big_count;
    case resp::request_error::unbalanced_quotes: return unbalanced_quotes;
    case resp::request_error::bad_crlf: return bad_crlf;
    case resp::request_error::none: break;
  }
  return "ERR Protocol error";
}

// Limits.
inline constexpr std::string_view max_clients = "ERR max number of clients reached";
inline constexpr std::string_view query_buffer =
    "ERR Protocol error: client query buffer limit reached";

// Authentication against the sidecar's own --requirepass.
inline constexpr std::string_view noauth = "NOAUTH Authentication required.";
inline constexpr std::string_view wrongpass =
    "WRONGPASS invalid username-password pair or user is disabled.";
inline constexpr std::string_view auth_not_configured =
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?";

// Arguments of commands the sidecar answers itself.
inline constexpr std::string_view syntax = "ERR syntax error";
inline constexpr std::string_view noproto = "NOPROTO unsupported protocol version";
inline constexpr std::string_view invalid_db = "ERR DB index is out of range";
inline constexpr std::string_view not_integer = "ERR value is not an integer or out of range";
// EXPIRE / PEXPIRE options Redis refuses together (fallback answers them as Redis does).
inline constexpr std::string_view expire_nx_and_others =
    "ERR NX and XX, GT or LT options at the same time are not compatible";
inline constexpr std::string_view expire_gt_and_lt =
    "ERR GT and LT options at the same time are not compatible";
inline constexpr std::string_view reset_arity = "ERR wrong number of arguments for 'reset' command";
inline constexpr std::string_view client_name_spaces =
    "ERR Client names cannot contain spaces, newlines or special characters.";
// AUTH, HELLO and the CLIENT subcommands the sidecar answers itself act on the client's session,
// which a transaction on the upstream connection cannot reach: refused inside MULTI, and, as
// Redis does after a command it refuses there, EXEC then aborts the transaction.
inline constexpr std::string_view session_command_in_multi =
    "ERR Command not allowed inside a transaction (answered by the sidecar, not queued)";
inline constexpr std::string_view execabort =
    "EXECABORT Transaction discarded because of previous errors.";

// The upstream. The reason after the colon is a fixed word or a masked message, never a password.
inline constexpr std::string_view upstream_unavailable =
    "ERR upstream unavailable";  // + ": reason"
inline constexpr std::string_view upstream_timeout = "ERR upstream command timeout";
inline constexpr std::string_view upstream_closed = "ERR upstream connection lost";
inline constexpr std::string_view upstream_protocol = "ERR upstream protocol error";

// Fallback mode (upstream unreachable, L1 serving). The command name is filled in, lowercase.
inline constexpr std::string_view fallback_not_servable_prefix =
    "UNAVAILABLE upstream unreachable, '";
inline constexpr std::string_view fallback_not_servable_suffix =
    "' cannot be served from the local cache";
// A command sent between MULTI and EXEC in fallback (its name in between).
inline constexpr std::string_view fallback_in_transaction_suffix =
    "' cannot be queued, the local cache does not serve transactions; EXEC will discard this one";
inline constexpr std::string_view fallback_miss =
    "UNAVAILABLE upstream unreachable and the key is not in the local cache";
inline constexpr std::string_view fallback_incr_miss =
    "UNAVAILABLE upstream unreachable and the key is not in the local cache, so it cannot be "
    "incremented";
inline constexpr std::string_view fallback_set_condition_miss =
    "UNAVAILABLE upstream unreachable and the key is not in the local cache, so a SET with NX, XX "
    "or GET cannot be answered";
inline constexpr std::string_view fallback_expiry_unknown =
    "UNAVAILABLE upstream unreachable and the local cache does not know the key's expiry";
inline constexpr std::string_view fallback_writes_rejected =
    "UNAVAILABLE upstream unreachable; writes are rejected until it is back "
    "(--fallback-writes=reject)";
inline constexpr std::string_view fallback_writes_misconfigured =
    "UNAVAILABLE the upstream refuses the sidecar (";
inline constexpr std::string_view fallback_journal_full =
    "UNAVAILABLE upstream unreachable and the fallback journal is full "
    "(--fallback-journal-max-bytes); the write was not applied";
inline constexpr std::string_view increment_overflow = "ERR increment or decrement would overflow";
inline constexpr std::string_view decrement_overflow = "ERR decrement would overflow";

}  // namespace redis_sidecar::errors
