#include "weights/synthetic.h"

#include <cmath>
#include <memory>

#include "core/check.h"
#include "model/config.h"

namespace biref {

namespace {
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
}  // namespace

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char b : s) h = (h ^ b) * 0x100000001B3ull;
  return h;
}

double synthetic_u(uint64_t name_hash, uint64_t seed, uint64_t i) {
  uint64_t z = name_hash + seed * kGolden + (i + 1) * kGolden;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z = z ^ (z >> 31);
  return double(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

std::vector<float> synthetic_values(const std::string& name, const std::vector<int64_t>& shape,
                                    uint64_t seed) {
  int64_t n = 1, fan_in = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    n *= shape[d];
    if (d > 0) fan_in *= shape[d];
  }
  // The first matching rule of SYNTHETIC_WEIGHTS.md gives (scale, offset): v = offset + scale·u.
  double scale, offset = 0.0;
  if (ends_with(name, ".running_var")) {
    offset = 0.75, scale = 0.25;
  } else if (ends_with(name, ".running_mean")) {
    scale = 0.1;
  } else if (ends_with(name, "relative_position_bias_table")) {
    scale = 0.5;
  } else if (shape.size() == 1 && ends_with(name, ".weight")) {
    offset = 1.0, scale = 0.1;
  } else if (shape.size() == 1 && ends_with(name, ".bias")) {
    scale = 0.05;
  } else {
    scale = std::sqrt(3.0 / double(fan_in));
  }
  const uint64_t h = fnv1a64(name);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = float(offset + scale * synthetic_u(h, seed, uint64_t(i)));
  return v;
}

Checkpoint synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed) {
  Checkpoint ck;
  ck.path = str_cat("synthetic:", cfg.swin.name, ":", seed);
  ck.format = "synthetic";
  ck.metadata["backbone"] = cfg.swin.name;
  ck.metadata["seed"] = std::to_string(seed);
  ck.metadata["weights"] = "synthetic, see SYNTHETIC_WEIGHTS.md";
  for (const ParamSpec& p : param_specs(cfg)) {
    auto values = std::make_shared<std::vector<float>>(synthetic_values(p.name, p.shape, seed));
    TensorData t;
    t.dtype = DType::F32;
    t.shape = p.shape;
    t.data = values->data();
    t.owner = std::shared_ptr<const void>(values, values->data());
    ck.tensors.emplace(p.name, std::move(t));
  }
  return ck;
}

Checkpoint synthetic_checkpoint_from_spec(const std::string& spec) {
  std::string rest = spec.substr(std::string("synthetic:").size());
  uint64_t seed = 0;
  const size_t colon = rest.find(':');
  if (colon != std::string::npos) {
    const std::string s = rest.substr(colon + 1);
    BIREF_CHECK(!s.empty() && s.size() <= 19 && s.find_first_not_of("0123456789") == std::string::npos,
                "bad synthetic model '", spec, "': the seed must be an integer from 0 to 10^19 - 1");
    seed = std::stoull(s);
    rest = rest.substr(0, colon);
  }
  ModelConfig cfg;
  cfg.swin = swin_preset(rest);
  return synthetic_checkpoint(cfg, seed);
}

}  // namespace biref
