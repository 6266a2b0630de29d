#include "core/tensor.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>

#include "core/check.h"
#include "core/huge_pages.h"

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

// A recording pass (a shape seen for the first time) allocates every tensor as it comes, and a
// pass allocates far more than it holds at once (2.7 GB over 280 tensors for a 176 MB plan, for
// swin_v1_t at 1024²). Fresh pages for each would be faulted in and zeroed by the kernel: over a
// second of system time on a first run. So the pass hands out pieces of one reserved range
// instead, best fit, and reuses a piece once its tensor is freed: it touches about its peak.
// When the pass ends with nothing left alive, that range becomes the arena's block, so the next
// pass starts on pages already resident.
struct Arena::Record {
  struct Event {
    size_t bytes;
    int64_t t_alloc, t_free;
  };
  std::mutex mu;
  Shape key;
  std::vector<Event> events;
  int64_t clock = 0;

  // The reserved range (virtual memory only until touched): [map, map + map_len), used from
  // `base` (aligned for huge pages). Pieces are offsets from base.
  char* map = nullptr;
  size_t map_len = 0;
  char* base = nullptr;
  size_t reserved = 0, extent = 0, touched = 0, populated = 0, live = 0;
  bool reserve_failed = false;
  std::map<size_t, size_t> holes;  // offset -> bytes, free pieces below `extent`

  Record() = default;
  Record(const Record&) = delete;
  Record& operator=(const Record&) = delete;
  ~Record() {
    if (map) munmap(map, map_len);
  }

  static constexpr size_t kHuge = size_t(2) << 20;
  static constexpr size_t kNone = SIZE_MAX;

  // A piece of `bytes` (a multiple of 64), or kNone when the range is full or cannot be had.
  size_t take(size_t bytes) {
    if (!map && !reserve()) return kNone;
    auto best = holes.end();
    for (auto it = holes.begin(); it != holes.end(); ++it)
      if (it->second >= bytes && (best == holes.end() || it->second < best->second)) best = it;
    size_t at = kNone;
    if (best != holes.end()) {
      at = best->first;
      const size_t rest = best->second - bytes;
      holes.erase(best);
      if (rest) holes[at + bytes] = rest;
    } else {
      // grow at the end, starting inside a free piece that reaches it
      at = extent;
      if (!holes.empty()) {
        auto last = std::prev(holes.end());
        if (last->first + last->second == extent) {
          at = last->first;
          holes.erase(last);
        }
      }
      if (at + bytes > reserved) {
        if (at != extent) holes[at] = extent - at;
        return kNone;
      }
      extent = at + bytes;
    }
    touched = std::max(touched, at + bytes);
    // New pages are faulted in here, 2 MiB apiece on all threads, rather than by the first
    // kernel that writes them: its threads write neighbouring parts of one huge page and wait
    // on each other's fault.
    if (touched > populated) {
      const size_t to = std::min(reserved, (touched + kHuge - 1) / kHuge * kHuge);
      populate(base + populated, to - populated);
      populated = to;
    }
    ++live;
    return at;
  }

  void give(size_t at, size_t bytes) {
    --live;
    auto next = holes.lower_bound(at);
    if (next != holes.end() && at + bytes == next->first) {
      bytes += next->second;
      next = holes.erase(next);
    }
    if (next != holes.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == at) {
        at = prev->first;
        bytes += prev->second;
        holes.erase(prev);
      }
    }
    if (at + bytes == extent) {
      extent = at;  // the end is free again (its pages stay touched)
    } else {
      holes[at] = bytes;
    }
  }

  bool reserve() {
    if (reserve_failed) return false;
    // As much address space as the machine has memory: no pass can hold more. MAP_NORESERVE:
    // only the pages touched count.
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const size_t want = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(1) << 34;
    map_len = want + kHuge;
    void* p = mmap(nullptr, map_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      map_len = 0;
      reserve_failed = true;
      return false;
    }
    map = static_cast<char*>(p);
    base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(map) + kHuge - 1) / kHuge * kHuge);
    reserved = want;
    madvise(base, reserved, MADV_HUGEPAGE);
    return true;
  }

  // Hands the first `bytes` of the range over as a block of its own and releases the rest.
  // Only with nothing alive in it and every byte of the block already touched.
  std::shared_ptr<float> adopt(size_t bytes) {
    if (!map || live != 0 || bytes == 0 || bytes > touched) return nullptr;
    const size_t keep = (bytes + kHuge - 1) / kHuge * kHuge;
    char* const end = map + map_len;
    if (base > map) munmap(map, size_t(base - map));
    if (base + keep < end) munmap(base + keep, size_t(end - (base + keep)));
    char* const b = base;
    map = nullptr;
    map_len = 0;
    return std::shared_ptr<float>(reinterpret_cast<float*>(b),
                                  [b, keep](float*) { munmap(b, keep); });
  }
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
  if (running_ && record_) {
    std::shared_ptr<Record> rec = record_;
    std::lock_guard<std::mutex> lock(rec->mu);
    const size_t at = rec->take(bytes);
    if (at != Record::kNone) {
      const size_t index = rec->events.size();
      rec->events.push_back({bytes, rec->clock++, INT64_MAX});
      Tensor t = Tensor::wrap(reinterpret_cast<float*>(rec->base + at), shape);
      t.storage = std::shared_ptr<float>(t.data, [rec, index, at, bytes](float*) {
        std::lock_guard<std::mutex> lock(rec->mu);
        rec->events[index].t_free = rec->clock++;
        rec->give(at, bytes);
      });
      return t;
    }
  }
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
  evict();
  size_t need = 0;
  for (const Plan& p : plans_) need = std::max(need, p.bytes);
  {
    std::lock_guard<std::mutex> lock(record_->mu);
    block_ = record_->adopt(need);
  }
  block_bytes_ = block_ ? need : 0;
  record_.reset();
  fit_block();  // when the recording's range could not be adopted
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
