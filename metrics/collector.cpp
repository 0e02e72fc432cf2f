#include "metrics/collector.hpp"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "metrics/hit_ratio_window.hpp"

namespace redis_sidecar::metrics::detail {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family_of(const family_info& f) {
  MetricFamily out;
  out.name = std::string(f.name);
  out.help = std::string(f.help);
  switch (f.type) {
    case family_type::counter: out.type = MetricType::Counter; break;
    case family_type::gauge: out.type = MetricType::Gauge; break;
    case family_type::histogram: out.type = MetricType::Histogram; break;
  }
  return out;
}

ClientMetric counter_sample(double v, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  return m;
}

ClientMetric gauge_sample(double v, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  return m;
}

// One histogram series, or nothing when it has no observations.
bool histogram_sample(const latency_histogram& h, ClientMetric& out) {
  std::uint64_t cumulative = 0;
  out.histogram.bucket.resize(latency_bucket_count);
  for (std::size_t i = 0; i < latency_bucket_count; ++i) {
    cumulative += h.bucket(i);
    out.histogram.bucket[i].cumulative_count = cumulative;
    out.histogram.bucket[i].upper_bound = i < latency_bounds_ns.size()
                                              ? static_cast<double>(latency_bounds_ns[i]) * 1e-9
                                              : std::numeric_limits<double>::infinity();
  }
  if (cumulative == 0) return false;
  out.histogram.sample_count = cumulative;
  out.histogram.sample_sum = static_cast<double>(h.sum_ns()) * 1e-9;
  return true;
}

class collector final : public prometheus::Collectable {
 public:
  explicit collector(const sidecar_metrics& m)
      : m_(m), ratio_(hit_ratio_period, hit_ratio_window::clock::now()) {}

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> out;
    out.reserve(counter_families.size() + gauge_families.size() + labelled_families.size());
    for (std::size_t i = 0; i < counter_families.size(); ++i) {
      const auto id = static_cast<counter_id>(i);
      out.push_back(family_of(counter_families[i]));
      out.back().metric.push_back(
          counter_sample(static_cast<double>(m_[id].value()) * counter_scale(id)));
    }
    for (std::size_t i = 0; i < gauge_families.size(); ++i) {
      const auto id = static_cast<gauge_id>(i);
      out.push_back(family_of(gauge_families[i]));
      out.back().metric.push_back(
          gauge_sample(static_cast<double>(m_[id].value()) * gauge_scale(id)));
    }
    collect_errors(out);
    collect_latency(out);
    collect_hit_ratio(out);
    collect_cache_mode(out);
    collect_build_info(out);
    return out;
  }

 private:
  static const family_info& labelled(labelled_id id) {
    return labelled_families[static_cast<std::size_t>(id)];
  }

  void collect_errors(std::vector<MetricFamily>& out) const {
    if (m_.error_kinds().empty()) return;
    out.push_back(family_of(labelled(labelled_id::errors)));
    for (std::size_t k = 0; k < m_.error_kinds().size(); ++k)
      out.back().metric.push_back(
          counter_sample(static_cast<double>(m_.errors(k)), {{"kind", m_.error_kinds()[k]}}));
  }

  void collect_latency(std::vector<MetricFamily>& out) const {
    MetricFamily f = family_of(labelled(labelled_id::request_duration));
    for (std::size_t c = 0; c < m_.commands().size(); ++c) {
      for (std::size_t s = 0; s < source_names.size(); ++s) {
        ClientMetric sample;
        if (!histogram_sample(m_.latency(c, static_cast<source>(s)), sample)) continue;
        sample.label = {{"command", m_.commands()[c]}, {"source", std::string(source_names[s])}};
        f.metric.push_back(std::move(sample));
      }
    }
    if (!f.metric.empty()) out.push_back(std::move(f));
  }

  void collect_hit_ratio(std::vector<MetricFamily>& out) const {
    double ratio = 0;
    {
      std::lock_guard lock(ratio_mutex_);
      ratio = ratio_.update(hit_ratio_window::clock::now(), m_[counter_id::cache_hits].value(),
                            m_[counter_id::cache_misses].value());
    }
    out.push_back(family_of(labelled(labelled_id::cache_hit_ratio)));
    out.back().metric.push_back(gauge_sample(ratio));
  }

  void collect_cache_mode(std::vector<MetricFamily>& out) const {
    if (m_.cache_modes().empty()) return;
    out.push_back(family_of(labelled(labelled_id::cache_mode)));
    for (std::size_t i = 0; i < m_.cache_modes().size(); ++i)
      out.back().metric.push_back(
          gauge_sample(i == m_.cache_mode() ? 1.0 : 0.0, {{"mode", m_.cache_modes()[i]}}));
  }

  void collect_build_info(std::vector<MetricFamily>& out) const {
    out.push_back(family_of(labelled(labelled_id::build_info)));
    out.back().metric.push_back(gauge_sample(1.0, {{"version", m_.version()}}));
  }

  const sidecar_metrics& m_;
  mutable std::mutex ratio_mutex_;  // scrapes may run on several HTTP threads at once
  mutable hit_ratio_window ratio_;
};

}  // namespace

std::shared_ptr<prometheus::Collectable> make_collector(const sidecar_metrics& m) {
  return std::make_shared<collector>(m);
}

}  // namespace redis_sidecar::metrics::detail
