// oneDNN primitives for the CPU backend: matmul (linears, the GEMM of the deformable conv) and
// convolution, created once per layer and input shape, weights reordered once into the layout
// the primitive asks for.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "core/tensor.h"
#include "ops/layers.h"

namespace biref::cpu {

class OneDnn {
 public:
  OneDnn();
  // y[m, :] (+)= act(x[m, :] · Wᵀ + b), strided rows.
  void linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
              Act act, bool accumulate);
  // NHWC convolution with fused bias and activation.
  void conv2d(const Conv2d& c, const Tensor& x, Tensor& y);
  // Packs a layer's weights now (for a typical shape), so its plain weights can be released.
  void prepare(const Linear& l);
  void prepare(const Conv2d& c);

 private:
  struct Packed {  // weights in a primitive's preferred layout
    dnnl::memory::desc desc;
    dnnl::memory mem;
  };
  struct Prim {
    dnnl::primitive prim;
    dnnl::memory::desc src, dst;
    const Packed* weights = nullptr;
    dnnl::memory bias;
  };
  const Packed* packed(uint64_t layer, const std::string& name, const dnnl::memory::desc& want,
                       const dnnl::memory::desc& user_desc, const float* user);
  Prim& matmul_prim(const Linear& l, int64_t rows, int64_t ldx, int64_t ldy, Act act, bool accumulate);
  Prim& conv_prim(const Conv2d& c, int64_t B, int64_t H, int64_t W);
  void trim_primitives();

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<std::tuple<uint64_t, int64_t, int64_t, int64_t, int, bool>, Prim> matmuls_;
  std::map<std::tuple<uint64_t, int64_t, int64_t, int64_t>, Prim> convs_;
  std::map<uint64_t, std::vector<std::unique_ptr<Packed>>> packed_;
};

}  // namespace biref::cpu
