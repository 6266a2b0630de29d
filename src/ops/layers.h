// Parameters of the layers the backends run, repacked once at load time.
// Weights keep the PyTorch layouts ([out, in] for linears, [out, in, kh, kw] for convolutions);
// a backend may keep its own packed copy (see CpuBackend), the reference kernels read these.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/huge_pages.h"

namespace biref {

enum class Act { None, Relu, Gelu, Sigmoid };

// A process-unique identity for a layer, the key of a backend's caches (packed weights,
// primitives). A copy is a new layer and gets a new id, so a cache never serves a stale entry
// to a layer that merely reuses an old one's address.
struct LayerId {
  uint64_t value = next();
  LayerId() = default;
  LayerId(const LayerId&) : value(next()) {}
  LayerId& operator=(const LayerId&) {
    value = next();
    return *this;
  }
  static uint64_t next() {
    static std::atomic<uint64_t> counter{1};
    return counter++;
  }
};

// y = x Wᵀ + b. weight: [out, in]; bias: [out] or empty.
// Float32 values read in place from a checkpoint's file mapping, which `owner` keeps alive.
struct MappedFloats {
  const float* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const void> owner;
  bool empty() const { return data == nullptr; }
};

struct Linear {
  LayerId id;
  std::string name;  // state_dict prefix, for errors and dumps
  int in = 0, out = 0;
  std::vector<float> weight, bias;
  // For a backend that packs its own copy: the weight [out, in] still in the file mapping,
  // instead of `weight` (so loading does not copy it twice). Empty otherwise.
  MappedFloats mapped_weight;
  const float* weight_data() const {
    return mapped_weight.empty() ? weight.data() : mapped_weight.data;
  }
  bool has_weight() const { return !weight.empty() || !mapped_weight.empty(); }
};

// Square k×k convolution, NHWC activations. BatchNorm that followed it in the PyTorch model is
// folded into weight and bias at load; `act` is the activation that follows (fused).
struct Conv2d {
  LayerId id;
  std::string name;
  int in = 0, out = 0, k = 1, stride = 1, pad = 0;
  std::vector<float> weight;  // [out, in, k, k], the BatchNorm folded in
  std::vector<float> bias;    // [out] (zeros where the module had none), the BatchNorm folded in
  Act act = Act::None;
  // For a backend that packs its own copy: the unfolded weight [out, in, k, k] still in the file
  // mapping, instead of `weight`, and the BatchNorm's per-output factor to fold in as it packs
  // (empty: 1). So loading neither copies nor touches fresh memory for it.
  MappedFloats mapped_weight;
  std::vector<double> mapped_scale;
  bool has_weight() const { return !weight.empty() || !mapped_weight.empty(); }
  // `weight`, or the mapped one before its scale.
  const float* weight_data() const {
    return mapped_weight.empty() ? weight.data() : mapped_weight.data;
  }
  // The folded weight [out, in, k, k]: `weight`, the mapped one where it needs no scale, or the
  // mapped one times its scale written to `buffer`.
  const float* folded_weight(HugeBuffer& buffer) const;
};

struct LayerNorm {
  std::string name;
  int dim = 0;
  float eps = 1e-5f;
  std::vector<float> weight, bias;
};

// Modulated deformable convolution (DCNv2, torchvision deform_conv2d semantics), stride 1,
// dilation 1, one offset group. `offset_mask` is the offset_conv and modulator_conv fused into
// one convolution with 3·k² outputs: [2·k² offsets (dy, dx per tap) | k² mask logits].
// `regular` holds the k×k weight [out, in, k, k] with the following BatchNorm folded in, and
// the activation after it.
struct DeformConv {
  LayerId id;
  std::string name;
  int k = 1, pad = 0;
  Conv2d offset_mask;
  Conv2d regular;
};

}  // namespace biref
