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

inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

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

// Recycles activation buffers: a block freed by a tensor returns to the pool and is handed out
// again to the next request of the same size. After the first run at a given input shape, a
// forward pass allocates nothing (every block it needs is already in the pool).
class Pool {
 public:
  Pool() = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();

  Tensor empty(const Shape& shape);
  Tensor zeros(const Shape& shape);

  size_t bytes_held() const;     // every block the pool owns (free or in use)
  size_t allocations() const { return allocations_; }  // calls to the system allocator so far
  void release_free();           // returns free blocks to the system

 private:
  struct State;
  std::shared_ptr<State> state_ = make_state();
  size_t allocations_ = 0;
  static std::shared_ptr<State> make_state();
};

}  // namespace biref
