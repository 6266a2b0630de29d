// BiRefNet's forward pass on a Backend, following docs/spec/model.md stage by stage.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "biref/biref.h"
#include "model/modules.h"
#include "ops/ops.h"

namespace biref {

struct ForwardContext {
  Backend& backend;
  Arena& pool;
  // Called with each named intermediate (NHWC tensor) when set.
  std::function<void(const std::string&, const Tensor&)> dump;
  std::vector<StageTiming> timings;
  double flops = 0;
  int64_t band_tokens = 32768;  // see LoadOptions
};

// x: [B, H, W, 3] normalised RGB, H and W multiples of 32 -> logits [B, H, W, 1].
Tensor birefnet_forward(const BiRefNet& net, const Tensor& x, ForwardContext& ctx);

}  // namespace biref
