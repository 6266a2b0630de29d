// Synthetic BiRefNet weights: every tensor defined by a formula of its name, shape and a seed
// (tests/golden/SYNTHETIC_WEIGHTS.md), so tests and benchmarks need no downloaded checkpoint.
#pragma once
#include <cstdint>
#include <string>

#include "weights/checkpoint.h"

namespace biref {

struct ModelConfig;

uint64_t fnv1a64(const std::string& s);
double synthetic_u(uint64_t name_hash, uint64_t seed, uint64_t i);  // in [-1, 1)
// The float32 values of tensor `name` with `shape`.
std::vector<float> synthetic_values(const std::string& name, const std::vector<int64_t>& shape,
                                    uint64_t seed);

// All state_dict tensors of BiRefNet with `cfg` (F32), training-only heads included.
Checkpoint synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed);
// "synthetic:BACKBONE" or "synthetic:BACKBONE:SEED" (seed 0 by default).
Checkpoint synthetic_checkpoint_from_spec(const std::string& spec);

}  // namespace biref
