// collector: the bridge from sidecar_metrics to prometheus-cpp, internal to metrics/. At each
// scrape, prometheus-cpp's Exposer calls Collect() on an HTTP thread; the collector reads every
// instrument (relaxed loads, no lock on the data plane) and builds the families in the order of the
// declarative lists. Only histogram series with observations are exported.
//
// The header names prometheus-cpp's type by a forward declaration only, so including it pulls in
// no prometheus-cpp header.
#pragma once

#include <memory>

#include "metrics/sidecar_metrics.hpp"

namespace prometheus {
class Collectable;
}

namespace redis_sidecar::metrics::detail {

/// A Collectable reading `m`, which must outlive it. Safe to call from several threads at once.
std::shared_ptr<prometheus::Collectable> make_collector(const sidecar_metrics& m);

}  // namespace redis_sidecar::metrics::detail
