// `biref convert`: any checkpoint biref reads (.pth zip or legacy, .safetensors, synthetic) to a
// .safetensors file that is checked to be BiRefNet and carries its detected configuration.
//
//   biref convert IN OUT.safetensors [--dtype f32|f16|bf16]
//   biref convert --synthetic BACKBONE OUT.safetensors [--seed N] [--dtype ...]
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>

#include "command.h"
#include "common.h"
#include "core/check.h"
#include "core/half.h"
#include "model/config.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "weights/synthetic.h"

namespace biref::cli {
namespace {

struct ConvertOptions {
  std::vector<std::string> files;  // IN OUT, or OUT with --synthetic
  std::string synthetic;
  uint64_t seed = 0;
  std::string dtype;  // empty: keep each tensor's floating-point type (F64 becomes F32)
};

// `t` in `to`, converting through float32. Counts values that were finite before and are
// infinite after (F16 overflows above 65504), so the user hears about them.
TensorData convert_tensor(const TensorData& t, DType to, int64_t& overflowed) {
  if (t.dtype == to) return t;
  auto keep = [&](auto buf) {
    TensorData out;
    out.dtype = to;
    out.shape = t.shape;
    out.data = buf->data();
    out.owner = std::shared_ptr<const void>(buf, buf->data());
    return out;
  };
  if (to == DType::F32) return keep(std::make_shared<std::vector<float>>(t.to_f32()));
  // F32 sources (the common case) are read in place when aligned, rather than through a copy
  // (a memory-mapped safetensors file does not promise alignment).
  std::vector<float> copy;
  const float* f = static_cast<const float*>(t.data);
  if (t.dtype != DType::F32 || reinterpret_cast<uintptr_t>(t.data) % alignof(float) != 0) {
    copy = t.to_f32();
    f = copy.data();
  }
  const size_t n = size_t(t.numel());
  auto buf = std::make_shared<std::vector<uint16_t>>(n);
  uint16_t* h = buf->data();
  int64_t inf = 0;
  if (to == DType::F16) {
    for (size_t i = 0; i < n; ++i) {
      h[i] = f32_to_f16(f[i]);
      inf += (h[i] & 0x7fffu) == 0x7c00u && std::isfinite(f[i]);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      h[i] = f32_to_bf16(f[i]);
      inf += (h[i] & 0x7fffu) == 0x7f80u && std::isfinite(f[i]);
    }
  }
  overflowed += inf;
  return keep(buf);
}

std::string join(const std::array<int, 4>& v) {
  return str_cat(v[0], ",", v[1], ",", v[2], ",", v[3]);
}

int run_convert(const ConvertOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  Checkpoint ck;
  std::string out;
  if (!o.synthetic.empty()) {
    BIREF_CHECK(o.files.size() == 1, "with --synthetic, give only the output file (got ",
                o.files.size(), " files)");
    out = o.files[0];
    ModelConfig cfg;
    cfg.swin = swin_preset(o.synthetic);
    ck = synthetic_checkpoint(cfg, o.seed);
  } else {
    BIREF_CHECK(o.files.size() == 2, "expected IN OUT (or --synthetic BACKBONE OUT), got ",
                o.files.size(), " file", o.files.size() == 1 ? "" : "s");
    out = o.files[1];
    check_not_an_input(out, o.files[0], "the input checkpoint");
    ck = load_checkpoint(o.files[0]);
  }
  BIREF_CHECK(!out.empty(), "empty output file name");

  const ModelConfig cfg = detect_config(ck);
  validate_checkpoint(ck, cfg);

  std::optional<DType> to;
  if (o.dtype == "f32") to = DType::F32;
  if (o.dtype == "f16") to = DType::F16;
  if (o.dtype == "bf16") to = DType::BF16;

  // State_dict order, so the file reads like the official one; buffers are dropped (the engine
  // recomputes relative_position_index, and num_batches_tracked is training bookkeeping).
  std::vector<std::pair<std::string, TensorData>> tensors;
  std::map<std::string, int> dtype_count;
  int64_t params = 0, overflowed = 0;
  for (const ParamSpec& p : param_specs(cfg)) {
    auto it = ck.tensors.find(p.name);
    if (it == ck.tensors.end()) continue;  // a training-only head the source left out
    const TensorData& t = it->second;
    const DType target = to ? *to : (t.dtype == DType::F64 ? DType::F32 : t.dtype);
    tensors.emplace_back(p.name, convert_tensor(t, target, overflowed));
    ++dtype_count[dtype_name(target)];
    params += t.numel();
  }
  size_t dropped = 0;
  for (const auto& [name, t] : ck.tensors) dropped += is_state_dict_buffer(name);

  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : ck.metadata) {
    if (!k.starts_with("pth.")) meta[k] = v;  // reader notes describe the source, not this file
  }
  std::string dtypes;
  for (const auto& [name, n] : dtype_count) dtypes += (dtypes.empty() ? "" : ",") + name;
  meta["format"] = "pt";
  meta["backbone"] = cfg.swin.name;
  meta["config"] = describe(cfg);
  meta["embed_dim"] = std::to_string(cfg.swin.embed_dim);
  meta["depths"] = join(cfg.swin.depths);
  meta["heads"] = join(cfg.swin.heads);
  meta["window"] = std::to_string(cfg.swin.window);
  meta["patch"] = std::to_string(cfg.swin.patch);
  meta["decoder_bn"] = cfg.decoder_bn ? "true" : "false";
  meta["dtype"] = dtypes;
  meta["parameters"] = std::to_string(params);
  meta["source"] = ck.path;
  meta["source_format"] = ck.format;
  meta["converted_by"] = std::string("biref ") + BIREF_VERSION;

  save_safetensors(out, tensors, meta);

  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (overflowed) {
    std::fprintf(stderr,
                 "biref convert: warning: %lld values overflowed to infinity in %s; keep F32 or "
                 "use bf16\n",
                 static_cast<long long>(overflowed), dtypes.c_str());
  }
  std::printf("wrote %s: BiRefNet %s, %zu tensors, %.2fM parameters, %s", out.c_str(),
              describe(cfg).c_str(), tensors.size(), double(params) / 1e6, dtypes.c_str());
  if (dropped) std::printf(", %zu buffers dropped", dropped);
  std::printf(" (%.2f s)\n", secs);
  return 0;
}

}  // namespace
}  // namespace biref::cli

BIREF_COMMAND(
    convert, "Convert a checkpoint (.pth, .safetensors, synthetic) to .safetensors",
    [](CLI::App& app) -> biref::cli::RunFn {
      auto o = std::make_shared<biref::cli::ConvertOptions>();
      app.add_option("files", o->files,
                     "IN OUT.safetensors (or only OUT.safetensors with --synthetic)")
          ->required();
      app.add_option("--synthetic", o->synthetic,
                     "write the synthetic weights of BACKBONE (swin_v1_t|s|b|l)");
      app.add_option("--seed", o->seed, "seed of the synthetic weights")->capture_default_str();
      app.add_option("--dtype", o->dtype,
                     "floating-point type of the output (default: keep the input's)")
          ->check(CLI::IsMember({"f32", "f16", "bf16"}));
      return [o] { return biref::cli::run_convert(*o); };
    });
