// event_loop: runs an io_context in turns. A turn runs every handler that is ready, including the
// ones the reactor finds ready while the turn runs; work deferred with event_loop::defer() runs
// when the turn is over, before the loop blocks for more events.
//
// The upstream writers defer their wake-up this way, so the requests of every client that was
// ready in a turn leave in one write: one TLS record, one send, one wake-up of Redis, instead of
// one write per handful of clients. Under load this is the difference between Redis reading a
// batch of 2 and a batch of 20; bench/RESULTS.md has the numbers.
//
// State is per thread: an io_context per thread gets a loop, and a deferral, of its own.
#pragma once

#include <memory>

#include "proxy/asio.hpp"

namespace redis_sidecar {

/// Something that acts once when the current turn of its thread's event loop is over.
class turn_listener {
 public:
  virtual ~turn_listener() = default;
  virtual void turn_ended() = 0;
};

namespace event_loop {

/// Runs io until it is stopped or runs out of work, in turns (see above). A listener still
/// pending when the loop ends is released, not called: one that needs the loop to go on holds
/// work on io until it has run (the upstream writers wait on a timer).
void run(asio::io_context& io);

/// Calls listener->turn_ended() once the current turn of this thread's loop is over, keeping the
/// listener alive until then. Returns false, deferring nothing, when no event_loop::run() is
/// running on this thread (a plain io_context::run(), as in tests): the caller acts now.
bool defer(std::shared_ptr<turn_listener> listener);

}  // namespace event_loop
}  // namespace redis_sidecar
