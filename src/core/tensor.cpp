#include "core/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/check.h"

namespace biref {

int64_t numel_of(const Shape& s) { return checked_numel(s); }

namespace {

// Large blocks are mapped straight from the kernel and unmapped when freed: the C allocator keeps
// freed memory for reuse (its mmap threshold adapts upward), which would leave a first run's
// activations resident next to the planned arena.
constexpr size_t kMapThreshold = size_t(1) << 20;

std::shared_ptr<float> allocate_floats(int64_t n) {
  size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  if (bytes >= kMapThreshold) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("out of memory allocating ", bytes, " bytes");
    return std::shared_ptr<float>(static_cast<float*>(p), [bytes](float* q) { munmap(q, bytes); });
  }
  void* p = std::aligned_alloc(64, bytes);
  if (!p) fail("out of memory allocating ", bytes, " bytes");
  return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
}

}  // namespace

Tensor Tensor::empty(const Shape& shape) {
  Tensor t;
  t.shape = shape;
  t.storage = allocate_floats(numel_of(shape));
  t.data = t.storage.get();
  return t;
}

Tensor Tensor::zeros(const Shape& shape) {
  Tensor t = empty(shape);
  std::memset(t.data, 0, size_t(t.numel()) * sizeof(float));
  return t;
}

Tensor Tensor::wrap(float* data, const Shape& shape) {
  Tensor t;
  t.shape = shape;
  t.data = data;
  return t;
}

struct Arena::Record {
  struct Event {
    size_t bytes;
    int64_t t_alloc, t_free;
  };
  std::mutex mu;
  std::vector<Event> events;
  int64_t clock = 0;
};

namespace {
size_t round64(size_t n) { return (n + 63) / 64 * 64; }
}  // namespace

Arena::~Arena() { drop_plan(); }

void Arena::drop_plan() {
  arena_block_.reset();
  arena_ = nullptr;
  arena_bytes_ = 0;
  plan_offsets_.clear();
  plan_sizes_.clear();
  plan_key_.clear();
}

void Arena::begin_run(const Shape& key) {
  running_ = true;
  next_ = 0;
  heap_allocations_ = 0;
  plan_broken_ = false;
  replay_ = arena_ != nullptr && key == plan_key_;
  if (!replay_) {
    drop_plan();  // one plan at a time: a new shape replaces the old one
    plan_key_ = key;
    record_ = std::make_shared<Record>();
  }
}

Tensor Arena::empty(const Shape& shape) {
  const size_t bytes = round64(size_t(std::max<int64_t>(numel_of(shape), 1)) * sizeof(float));
  if (replay_ && !plan_broken_) {
    if (next_ < plan_sizes_.size() && plan_sizes_[next_] == bytes) {
      return Tensor::wrap(arena_ + plan_offsets_[next_++] / sizeof(float), shape);
    }
    plan_broken_ = true;  // this pass differs from the recorded one: heap until re-planned
  }
  ++heap_allocations_;
  Tensor t = Tensor::empty(shape);
  if (running_ && !replay_) {
    std::shared_ptr<Record> rec = record_;
    size_t index;
    {
      std::lock_guard<std::mutex> lock(rec->mu);
      index = rec->events.size();
      rec->events.push_back({bytes, rec->clock++, INT64_MAX});
    }
    std::shared_ptr<float> inner = t.storage;
    t.storage = std::shared_ptr<float>(t.data, [rec, index, inner](float*) mutable {
      std::lock_guard<std::mutex> lock(rec->mu);
      rec->events[index].t_free = rec->clock++;
      inner.reset();
    });
  }
  return t;
}

Tensor Arena::zeros(const Shape& shape) {
  Tensor t = empty(shape);
  std::memset(t.data, 0, size_t(t.numel()) * sizeof(float));
  return t;
}

void Arena::end_run() {
  running_ = false;
  if (replay_) {
    if (plan_broken_) drop_plan();
    return;
  }
  build_plan();
  record_.reset();
}

void Arena::abort_run() {
  running_ = false;
  if (!replay_ || plan_broken_) drop_plan();
  record_.reset();
}

void Arena::build_plan() {
  std::vector<Record::Event> ev;
  {
    std::lock_guard<std::mutex> lock(record_->mu);
    ev = record_->events;
  }
  std::vector<size_t> order(ev.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ev[a].bytes > ev[b].bytes; });
  std::vector<size_t> offset(ev.size(), 0);
  std::vector<size_t> placed;
  size_t total = 0;
  for (size_t i : order) {
    // blocks already placed whose lifetimes overlap this one, by offset
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t j : placed) {
      if (ev[j].t_alloc < ev[i].t_free && ev[i].t_alloc < ev[j].t_free) {
        busy.push_back({offset[j], offset[j] + ev[j].bytes});
      }
    }
    std::sort(busy.begin(), busy.end());
    size_t at = 0;
    for (const auto& [b, e] : busy) {
      if (at + ev[i].bytes <= b) break;
      at = std::max(at, e);
    }
    offset[i] = at;
    total = std::max(total, at + ev[i].bytes);
    placed.push_back(i);
  }
  arena_block_ = allocate_floats(int64_t(std::max<size_t>(total, 64) / sizeof(float)));
  arena_ = arena_block_.get();
  arena_bytes_ = total;
  plan_sizes_.resize(ev.size());
  plan_offsets_ = offset;
  for (size_t i = 0; i < ev.size(); ++i) plan_sizes_[i] = ev[i].bytes;
}

}  // namespace biref
