// Float tensors of the engine. Activations are channels-last: [B, H, W, C] (tokens of a Swin
// stage are the same [B, h, w, C] grid). Storage is shared; a Pool recycles it.
#pragma once
#include <cstdint>
#include <functional>
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
// lifetimes into one block (largest first, each at the lowest offset free for its lifetime).
// Every later pass at that shape is served from the block in the same order: no allocation in
// the steady state, and the block is about the peak of live activations, not their sum.
// A pass whose allocations differ from the plan falls back to the heap and is recorded anew.
class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena();

  void begin_run(const Shape& key);
  void end_run();
  void abort_run();  // a pass that threw: forget what it recorded
  Tensor empty(const Shape& shape);
  Tensor zeros(const Shape& shape);

  size_t bytes_held() const { return arena_bytes_; }  // the planned block
  size_t heap_allocations() const { return heap_allocations_; }  // of the last pass

 private:
  struct Record;
  Shape plan_key_;
  std::vector<size_t> plan_offsets_, plan_sizes_;
  std::shared_ptr<float> arena_block_;
  float* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  bool running_ = false, replay_ = false, plan_broken_ = false;
  size_t next_ = 0, heap_allocations_ = 0;
  std::shared_ptr<Record> record_;
  void build_plan();
  void drop_plan();
};

}  // namespace biref
