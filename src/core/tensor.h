// Float tensors of the engine. Activations are channels-last: [B, H, W, C] (tokens of a Swin
// stage are the same [B, h, w, C] grid). Storage is shared; a Pool recycles it.
#pragma once
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace biref {

using Shape = std::vector<int64_t>;

// Throws biref::Error on a negative dimension or a product that overflows 64 bits.
int64_t numel_of(const Shape& s);

struct Tensor {
  Shape shape;
  float* data = nullptr;
  std::shared_ptr<float> storage;  // owns `data` (or is empty for a view of foreign memory)

  int64_t numel() const { return numel_of(shape); }
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  int rank() const { return int(shape.size()); }
  bool defined() const { return data != nullptr; }

  // A new tensor on the heap (64-byte aligned, uninitialised).
  static Tensor empty(const Shape& shape);
  static Tensor zeros(const Shape& shape);
  // A view of memory the caller keeps alive.
  static Tensor wrap(float* data, const Shape& shape);
};

// Activation memory planned per input shape. The first forward pass at a shape allocates from
// the heap and records every allocation's size and lifetime; end_run() then packs those
// lifetimes into a plan (largest first, each at the lowest offset free for its lifetime). Every
// later pass at that shape is served from the planned block in the same order: no allocation in
// the steady state, and a plan is about the peak of live activations, not their sum.
//
// Several plans are kept, keyed by shape, least recently used evicted past max_plans() (8 by
// default, or $BIREF_ARENA_PLANS): mixed input sizes replay each size's plan instead of
// recording again whenever the size changes. Passes never overlap (runs are sequential), so all
// plans share ONE block, sized to the largest plan kept: memory is the largest plan, not the
// sum. Between runs the block is always exactly that size: it shrinks when the largest plan is
// evicted or dropped, and it is released while a pass records a new shape (that pass lives on
// the heap; the block is allocated again, at the new largest size, when the plan is built).
// A pass whose allocations differ from its plan falls back to the heap for the rest of the pass
// and drops the plan, so the next pass at that shape records anew.
class Arena {
 public:
  static constexpr size_t kDefaultMaxPlans = 8;
  // max_plans 0: kDefaultMaxPlans, or $BIREF_ARENA_PLANS when set (an integer from 1 to 1024;
  // anything else is a biref::Error naming the variable).
  explicit Arena(size_t max_plans = 0);
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena();

  void begin_run(const Shape& key);
  void end_run();
  void abort_run();  // a pass that threw: forget what it recorded
  Tensor empty(const Shape& shape);
  Tensor zeros(const Shape& shape);

  // At least 1; lowering it evicts the least recently used plans now. Not during a run.
  void set_max_plans(size_t n);
  size_t max_plans() const { return max_plans_; }
  size_t plans() const { return plans_.size(); }

  // The shared block: the largest plan kept (0 while a pass records a new shape).
  size_t bytes_held() const { return block_bytes_; }
  size_t heap_allocations() const { return heap_allocations_; }  // of the last pass

 private:
  struct Record;
  struct Plan {
    Shape key;
    std::vector<size_t> offsets, sizes;
    size_t bytes = 0;  // the extent of the packed lifetimes
  };
  std::list<Plan> plans_;  // most recently used first
  size_t max_plans_;
  std::shared_ptr<float> block_;
  size_t block_bytes_ = 0;
  const Plan* current_ = nullptr;  // the plan replayed by this pass
  bool running_ = false, plan_broken_ = false;
  size_t next_ = 0, heap_allocations_ = 0;
  std::shared_ptr<Record> record_;
  Plan build_plan() const;
  void evict();
  void fit_block();
};

}  // namespace biref
