// sink_ref: a pending request's hold on its reply sink. It must keep the sink alive exactly as a
// shared_ptr per request would (the sink outlives its owner's last shared_ptr while requests are
// pending, and is destroyed when the last one is delivered or dropped), while copying the owning
// shared_ptr only when the sink goes from no pending requests to one.
#include <catch2/catch.hpp>

#include <memory>
#include <utility>
#include <vector>

#include "proxy/upstream/reply_sink.hpp"

using namespace redis_sidecar;

namespace {

struct counting_sink : reply_sink, std::enable_shared_from_this<counting_sink> {
  explicit counting_sink(int& destroyed) : destroyed_(destroyed) {}
  ~counting_sink() override { ++destroyed_; }
  void deliver(std::uint64_t, std::string_view, std::uint8_t,
               std::chrono::steady_clock::time_point) override {}
  int owner_calls = 0;

 private:
  std::shared_ptr<reply_sink> owner() override {
    ++owner_calls;
    return shared_from_this();
  }
  int& destroyed_;
};

}  // namespace

TEST_CASE("sink_ref: pins once per busy period, not per request", "[sink_ref]") {
  int destroyed = 0;
  auto sink = std::make_shared<counting_sink>(destroyed);
  {
    std::vector<sink_ref> pending;
    for (int i = 0; i < 16; ++i) pending.emplace_back(sink.get());
    CHECK(sink->owner_calls == 1);
    CHECK(sink.use_count() == 2);  // ours and the pin
    pending.erase(pending.begin(), pending.begin() + 15);
    CHECK(sink.use_count() == 2);
    pending.clear();
    CHECK(sink.use_count() == 1);  // unpinned with the last one
  }
  sink_ref again(sink.get());
  CHECK(sink->owner_calls == 2);  // a new busy period pins again
  again.reset();
  CHECK_FALSE(again);
  CHECK(sink.use_count() == 1);
  CHECK(destroyed == 0);
}

TEST_CASE("sink_ref: keeps the sink alive after its owner lets go", "[sink_ref]") {
  int destroyed = 0;
  auto sink = std::make_shared<counting_sink>(destroyed);
  sink_ref first(sink.get());
  sink_ref second(sink.get());
  sink.reset();  // the client went away with two requests pending
  CHECK(destroyed == 0);
  first->deliver(1, "+OK\r\n", 0, {});
  first.reset();
  CHECK(destroyed == 0);
  second.reset();  // the last reply: the sink goes now
  CHECK(destroyed == 1);
}

TEST_CASE("sink_ref: moves transfer the hold, null refs hold nothing", "[sink_ref]") {
  int destroyed = 0;
  auto sink = std::make_shared<counting_sink>(destroyed);
  sink_ref a(sink.get());
  sink_ref b(std::move(a));
  CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  CHECK(b);
  sink_ref c;
  c = std::move(b);
  CHECK(sink.use_count() == 2);
  c = sink_ref(nullptr);  // assigning over a hold releases it
  CHECK(sink.use_count() == 1);
  sink_ref none = nullptr;
  CHECK_FALSE(none);
  sink.reset();
  CHECK(destroyed == 1);
}

TEST_CASE("sink_ref: a sink that cannot be pinned is not counted as held", "[sink_ref]") {
  int destroyed = 0;
  {
    counting_sink unowned(destroyed);  // no shared_ptr owns it: owner() throws
    CHECK_THROWS_AS(sink_ref(&unowned), std::bad_weak_ptr);
    // Had the first attempt counted itself, this one would skip pinning and hold nothing.
    CHECK_THROWS_AS(sink_ref(&unowned), std::bad_weak_ptr);
    CHECK(unowned.owner_calls == 2);
  }
  CHECK(destroyed == 1);
}
