// asio: the Asio types and the completion token used everywhere on the data plane, defined once so
// every co_await reads `auto [ec, n] = co_await op(..., use_nothrow)`: errors are values, the data
// plane never throws.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>

namespace redis_sidecar {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;
using tcp = asio::ip::tcp;

inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

template <typename T = void>
using awaitable = asio::awaitable<T>;

using steady_timer = asio::steady_timer;

}  // namespace redis_sidecar
