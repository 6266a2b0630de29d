#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/check.h"

namespace biref {

namespace {
float* aligned_floats(int64_t n) {
  size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) fail("out of memory allocating ", bytes, " bytes");
  return static_cast<float*>(p);
}
}  // namespace

Tensor Tensor::empty(const Shape& shape) {
  Tensor t;
  t.shape = shape;
  t.data = aligned_floats(numel_of(shape));
  t.storage = std::shared_ptr<float>(t.data, [](float* p) { std::free(p); });
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

struct Pool::State {
  std::mutex mu;
  std::multimap<int64_t, float*> free_blocks;  // size in floats -> block
  size_t bytes = 0;
  bool alive = true;
};

std::shared_ptr<Pool::State> Pool::make_state() { return std::make_shared<State>(); }

Pool::~Pool() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto& [n, p] : state_->free_blocks) std::free(p);
  state_->free_blocks.clear();
  state_->alive = false;  // blocks still in use are freed by their tensors
}

Tensor Pool::empty(const Shape& shape) {
  const int64_t n = std::max<int64_t>(numel_of(shape), 1);
  float* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->free_blocks.find(n);
    if (it != state_->free_blocks.end()) {
      p = it->second;
      state_->free_blocks.erase(it);
    } else {
      state_->bytes += size_t(n) * sizeof(float);
    }
  }
  if (!p) {
    p = aligned_floats(n);
    ++allocations_;
  }
  std::shared_ptr<State> st = state_;
  Tensor t;
  t.shape = shape;
  t.data = p;
  t.storage = std::shared_ptr<float>(p, [st, n](float* q) {
    std::lock_guard<std::mutex> lock(st->mu);
    if (st->alive) {
      st->free_blocks.emplace(n, q);
    } else {
      std::free(q);
    }
  });
  return t;
}

Tensor Pool::zeros(const Shape& shape) {
  Tensor t = empty(shape);
  std::memset(t.data, 0, size_t(t.numel()) * sizeof(float));
  return t;
}

size_t Pool::bytes_held() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->bytes;
}

void Pool::release_free() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto& [n, p] : state_->free_blocks) {
    std::free(p);
    state_->bytes -= size_t(n) * sizeof(float);
  }
  state_->free_blocks.clear();
}

}  // namespace biref
