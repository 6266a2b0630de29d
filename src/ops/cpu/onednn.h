// oneDNN primitives for the CPU backend: matmul (linears, the GEMM of the deformable conv) and
// convolution, created once per layer and input shape, weights reordered once into the layout
// the primitive asks for.
//
// The packed weights (PackedWeights) are shared by every OneDnn executor of a model and never
// change once packed; each executor (one per worker thread) keeps its own stream and primitive
// cache. So N workers hold one copy of the weights.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "core/blob_file.h"
#include "core/huge_pages.h"
#include "core/tensor.h"
#include "ops/layers.h"

namespace biref::cpu {

// Weights in the layouts the primitives ask for, per layer. A layout asked for the first time is
// packed under a lock (from the layer's plain weights, or from its first packed copy once the
// plain ones are released); packed copies are never moved or freed while the store lives.
//
// While a model loads (begin_load() to end_load()) each layer's first layout may come from a
// cache file of an earlier load instead (BlobFile): the n-th layout packed is the file's n-th
// blob when its name and layout are those wanted, read in place from the file's mapping (or
// copied, when the mapping did not get huge pages). From the first blob that is not, the rest
// are packed.
class PackedWeights {
 public:
  PackedWeights();
  struct Packed {
    dnnl::memory::desc desc;
    dnnl::memory mem;
  };
  // `user` gives the layer's plain weights (in `user_desc`) when they are needed: called at most
  // once, and not at all when the layout comes from the cache or another packed copy.
  const Packed* get(uint64_t layer, const std::string& name, const dnnl::memory::desc& want,
                    const dnnl::memory::desc& user_desc,
                    const std::function<const float*()>& user);
  const dnnl::engine& engine() const { return engine_; }
  size_t bytes() const;

  void begin_load(std::unique_ptr<BlobFile> cache);
  struct LoadReport {
    size_t from_cache = 0, packed = 0;
    size_t cache_blobs = 0;  // in the cache file
    bool copied = false;  // the cache's blobs were copied (its mapping had no huge pages)
  };
  // The layouts packed at load, in order (their data lives as long as the store): what a cache
  // file for the next load holds.
  std::vector<Blob> end_load(LoadReport& report);

 private:
  dnnl::engine engine_;
  mutable std::mutex mu_;
  HugeChunks memory_;  // the packed copies, in huge pages
  std::map<uint64_t, std::vector<std::unique_ptr<Packed>>> packed_;
  bool loading_ = false, cache_usable_ = false;
  std::unique_ptr<BlobFile> cache_;
  std::vector<std::unique_ptr<BlobFile>> mapped_;  // caches whose blobs are used in place
  size_t cache_next_ = 0;
  std::vector<Blob> loaded_;
  LoadReport report_;
};

// A memory descriptor as text (data type, dims, padding, blocking, extra flags): equal texts,
// equal layouts.
std::string layout_text(const dnnl::memory::desc& d);

class OneDnn {
 public:
  // An executor on `weights` (a new store when null).
  explicit OneDnn(std::shared_ptr<PackedWeights> weights = nullptr);
  const std::shared_ptr<PackedWeights>& weights() const { return weights_; }
  // y[m, :] (+)= act(x[m, :] · Wᵀ + b), strided rows.
  void linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
              Act act, bool accumulate);
  // NHWC convolution with fused bias and activation.
  void conv2d(const Conv2d& c, const Tensor& x, Tensor& y);
  // Packs a layer's weights now (for a typical shape), so its plain weights can be released.
  // `weights` gives them ([out, in]; [out, in, k, k] folded for a convolution, valid until the
  // next call) when they are needed (not when the packed copy comes from a cache).
  void prepare(const Linear& l, const std::function<const float*()>& weights);
  void prepare(const Conv2d& c, const std::function<const float*()>& weights);

 private:
  using Packed = PackedWeights::Packed;
  struct Prim {
    dnnl::primitive prim;
    dnnl::memory::desc src, dst;
    const Packed* weights = nullptr;
    dnnl::memory bias;
  };
  dnnl::matmul::primitive_desc matmul_pd(const Linear& l, int64_t rows, int64_t ldx, int64_t ldy,
                                         Act act, bool accumulate) const;
  dnnl::convolution_forward::primitive_desc conv_pd(const Conv2d& c, int64_t B, int64_t H,
                                                    int64_t W) const;
  // The layer's weights in the layout the primitive asks for (packed on first demand, from
  // `weights` [out, in, k, k] for a convolution).
  const Packed* pack(const Linear& l, const dnnl::matmul::primitive_desc& pd,
                     const std::function<const float*()>& weights);
  const Packed* pack(const Conv2d& c, const dnnl::convolution_forward::primitive_desc& pd,
                     const std::function<const float*()>& weights);
  Prim& matmul_prim(const Linear& l, int64_t rows, int64_t ldx, int64_t ldy, Act act,
                    bool accumulate);
  Prim& conv_prim(const Conv2d& c, int64_t B, int64_t H, int64_t W);
  void trim_primitives();

  std::shared_ptr<PackedWeights> weights_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  // keyed by layer, shape (and post-ops) and thread count
  std::map<std::tuple<uint64_t, int64_t, int64_t, int64_t, int, bool, int>, Prim> matmuls_;
  std::map<std::tuple<uint64_t, int64_t, int64_t, int64_t, int>, Prim> convs_;
};

}  // namespace biref::cpu
