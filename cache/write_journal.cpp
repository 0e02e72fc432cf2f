// write_journal: see write_journal.hpp.
#include "cache/write_journal.hpp"

#include <cassert>

namespace redis_sidecar::cache {

write_journal::write_journal(std::size_t max_bytes) : max_bytes_(max_bytes) {}

bool write_journal::push(int db, std::string_view frame) {
  const std::size_t room = max_bytes_ - bytes_;
  if (room < record_overhead || frame.size() > room - record_overhead) return false;
  records_.push_back(journal_record{db, std::string(frame)});
  bytes_ += frame.size() + record_overhead;
  return true;
}

const journal_record& write_journal::front() const {
  assert(!records_.empty());
  return records_.front();
}

void write_journal::pop_front() {
  assert(!records_.empty());
  bytes_ -= records_.front().frame.size() + record_overhead;
  records_.pop_front();
}

void write_journal::erase(std::size_t i) {
  assert(i < records_.size());
  bytes_ -= records_[i].frame.size() + record_overhead;
  records_.erase(records_.begin() + static_cast<std::ptrdiff_t>(i));
}

void write_journal::clear() {
  records_.clear();
  bytes_ = 0;
}

}  // namespace redis_sidecar::cache
