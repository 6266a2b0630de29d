#include "core/tensor.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/check.h"

namespace biref {

int64_t numel_of(const Shape& s) {
  return checked_numel(s);
}

namespace {

// Large blocks are mapped straight from the kernel and unmapped when freed: the C allocator keeps
// freed memory for reuse (its mmap threshold adapts upward), which would leave a first run's
// activations resident next to the planned arena.
constexpr size_t kMapThreshold = size_t(1) << 20;
// Blocks of 4 MiB and more are asked for transparent huge pages (madvise mode is the common
// default): a first pass faults in its fresh activations 2 MiB at a time instead of 4 KiB. On a
// virtual machine where a page fault cost ~13 µs, this took the first 1024² run of swin_v1_t
// from 9.2-9.7 s to 3.6-3.8 s (steady runs and peak RSS unchanged).
constexpr size_t kHugeThreshold = size_t(4) << 20;

std::shared_ptr<float> allocate_floats(int64_t n) {
  size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  if (bytes >= kMapThreshold) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("out of memory allocating ", bytes, " bytes");
    if (bytes >= kHugeThreshold) madvise(p, bytes, MADV_HUGEPAGE);
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
  Shape key;
  std::vector<Event> events;
  int64_t clock = 0;
};

namespace {
size_t round64(size_t n) {
  return (n + 63) / 64 * 64;
}
}  // namespace

namespace {
size_t max_plans_from_env() {
  const char* env = std::getenv("BIREF_ARENA_PLANS");
  if (!env || !*env) return Arena::kDefaultMaxPlans;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  BIREF_CHECK(errno == 0 && end && *end == '\0' && v >= 1 && v <= 1024, "BIREF_ARENA_PLANS='", env,
              "' is not a number of activation plans from 1 to 1024");
  return size_t(v);
}
}  // namespace

Arena::Arena(size_t max_plans) : max_plans_(max_plans ? max_plans : max_plans_from_env()) {}

Arena::~Arena() = default;

void Arena::set_max_plans(size_t n) {
  BIREF_CHECK(n >= 1, "an arena keeps at least one plan");
  BIREF_CHECK(!running_, "the arena's plan count cannot change during a pass");
  max_plans_ = n;
  evict();
  fit_block();
}

void Arena::evict() {
  while (plans_.size() > max_plans_) plans_.pop_back();
}

// The block to exactly the largest plan kept (none when no plan is kept). Freed before the new
// one is mapped, so the two are never held together.
void Arena::fit_block() {
  size_t need = 0;
  for (const Plan& p : plans_) need = std::max(need, p.bytes);
  if (need == block_bytes_ && (block_ || need == 0)) return;
  block_.reset();
  block_bytes_ = 0;
  if (need == 0) return;
  block_ = allocate_floats(int64_t(need / sizeof(float)));
  block_bytes_ = need;
}

void Arena::begin_run(const Shape& key) {
  running_ = true;
  next_ = 0;
  heap_allocations_ = 0;
  plan_broken_ = false;
  current_ = nullptr;
  for (auto it = plans_.begin(); it != plans_.end(); ++it) {
    if (it->key == key) {
      plans_.splice(plans_.begin(), plans_, it);  // most recently used
      current_ = &plans_.front();
      return;
    }
  }
  // A new shape: this pass lives on the heap and is recorded. The block is released meanwhile
  // (the old plans stay), so the recording pass and the block are not resident together.
  block_.reset();
  block_bytes_ = 0;
  record_ = std::make_shared<Record>();
  record_->key = key;
}

Tensor Arena::empty(const Shape& shape) {
  const size_t bytes = round64(size_t(std::max<int64_t>(numel_of(shape), 1)) * sizeof(float));
  if (current_ && !plan_broken_) {
    if (next_ < current_->sizes.size() && current_->sizes[next_] == bytes) {
      return Tensor::wrap(block_.get() + current_->offsets[next_++] / sizeof(float), shape);
    }
    plan_broken_ = true;  // this pass differs from the recorded one: heap until re-planned
  }
  ++heap_allocations_;
  Tensor t = Tensor::empty(shape);
  if (running_ && record_) {
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
  if (current_) {
    if (plan_broken_) {  // forget the plan; the next pass at this shape records it anew
      plans_.pop_front();
      fit_block();
    }
    current_ = nullptr;
    return;
  }
  plans_.push_front(build_plan());
  record_.reset();
  evict();
  fit_block();
}

void Arena::abort_run() {
  running_ = false;
  if (current_ && plan_broken_) plans_.pop_front();
  current_ = nullptr;
  record_.reset();
  fit_block();  // after a recording pass, the block comes back for the plans kept
}

Arena::Plan Arena::build_plan() const {
  std::vector<Record::Event> ev;
  Plan plan;
  {
    std::lock_guard<std::mutex> lock(record_->mu);
    ev = record_->events;
    plan.key = record_->key;
  }
  std::vector<size_t> order(ev.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return ev[a].bytes > ev[b].bytes; });
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
  plan.bytes = total;
  plan.offsets = std::move(offset);
  plan.sizes.resize(ev.size());
  for (size_t i = 0; i < ev.size(); ++i) plan.sizes[i] = ev[i].bytes;
  return plan;
}

}  // namespace biref
