#include "model/config.h"

#include <cmath>
#include <set>

#include "core/check.h"

namespace biref {

namespace {

// Bounds that keep a crafted checkpoint from asking for absurd memory at load (the released
// models use C 96..192, windows 7 and 12, at most 18 blocks per stage).
constexpr int64_t kMaxEmbedDim = 1024;
constexpr int kMaxWindow = 32;
constexpr int kMaxDepth = 64;

const std::vector<SwinConfig>& presets() {
  static const std::vector<SwinConfig> p = {
      {"swin_v1_t", 96, {2, 2, 6, 2}, {3, 6, 12, 24}, 7, 4},
      {"swin_v1_s", 96, {2, 2, 18, 2}, {3, 6, 12, 24}, 7, 4},
      {"swin_v1_b", 128, {2, 2, 18, 2}, {4, 8, 16, 32}, 12, 4},
      {"swin_v1_l", 192, {2, 2, 18, 2}, {6, 12, 24, 48}, 12, 4},
  };
  return p;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}


struct SpecWriter {
  std::vector<ParamSpec>& out;
  bool used = true;
  void add(const std::string& name, std::vector<int64_t> shape) { out.push_back({name, shape, used}); }
  void linear(const std::string& p, int in, int outc, bool bias = true) {
    add(p + ".weight", {outc, in});
    if (bias) add(p + ".bias", {outc});
  }
  void conv(const std::string& p, int in, int outc, int k, bool bias = true) {
    add(p + ".weight", {outc, in, k, k});
    if (bias) add(p + ".bias", {outc});
  }
  void norm(const std::string& p, int c) {  // LayerNorm
    add(p + ".weight", {c});
    add(p + ".bias", {c});
  }
  void bn(const std::string& p, int c) {
    add(p + ".weight", {c});
    add(p + ".bias", {c});
    add(p + ".running_mean", {c});
    add(p + ".running_var", {c});
  }
};

void swin_specs(SpecWriter& w, const SwinConfig& s) {
  w.conv("bb.patch_embed.proj", 3, s.embed_dim, s.patch);
  w.norm("bb.patch_embed.norm", s.embed_dim);
  const int table = (2 * s.window - 1) * (2 * s.window - 1);
  for (int i = 0; i < 4; ++i) {
    const int d = s.dim(i);
    for (int j = 0; j < s.depths[i]; ++j) {
      const std::string b = str_cat("bb.layers.", i, ".blocks.", j);
      w.norm(b + ".norm1", d);
      w.add(b + ".attn.relative_position_bias_table", {table, s.heads[i]});
      w.linear(b + ".attn.qkv", d, 3 * d);
      w.linear(b + ".attn.proj", d, d);
      w.norm(b + ".norm2", d);
      w.linear(b + ".mlp.fc1", d, 4 * d);
      w.linear(b + ".mlp.fc2", 4 * d, d);
    }
    if (i < 3) {
      const std::string ds = str_cat("bb.layers.", i, ".downsample");
      w.linear(ds + ".reduction", 4 * d, 2 * d, /*bias=*/false);
      w.norm(ds + ".norm", 4 * d);
    }
  }
  for (int i = 0; i < 4; ++i) w.norm(str_cat("bb.norm", i), s.dim(i));
}

// BasicDecBlk(in, out) with an ASPPDeformable(64) attention; 64 = the official dec_channels_inter.
void dec_block_specs(SpecWriter& w, const std::string& p, int in, int out, bool bn) {
  const int inter = 64, planes = 256;
  w.conv(p + ".conv_in", in, inter, 3);
  const std::string a = p + ".dec_att";
  auto deform = [&](const std::string& q, int k) {
    w.conv(q + ".atrous_conv.offset_conv", inter, 2 * k * k, k);
    w.conv(q + ".atrous_conv.modulator_conv", inter, k * k, k);
    w.conv(q + ".atrous_conv.regular_conv", inter, planes, k, /*bias=*/false);
    if (bn) w.bn(q + ".bn", planes);
  };
  deform(a + ".aspp1", 1);
  const int ks[3] = {1, 3, 7};
  for (int i = 0; i < 3; ++i) deform(str_cat(a, ".aspp_deforms.", i), ks[i]);
  w.conv(a + ".global_avg_pool.1", inter, planes, 1, /*bias=*/false);
  if (bn) w.bn(a + ".global_avg_pool.2", planes);
  w.conv(a + ".conv1", 5 * planes, inter, 1, /*bias=*/false);
  if (bn) w.bn(a + ".bn1", inter);
  w.conv(p + ".conv_out", inter, out, 3);
  if (bn) {
    w.bn(p + ".bn_in", inter);
    w.bn(p + ".bn_out", out);
  }
}

}  // namespace

int ModelConfig::ipt_out(int blk) const {
  // The official ipt_blk outputs are channels[i] // 8 of [16C, 16C, 8C, 4C, 2C] for blk 5..1.
  static const int mult16[6] = {0, 2, 4, 8, 16, 16};  // multiples of C for blk 1..5
  return mult16[blk] * swin.embed_dim / 8;
}

SwinConfig swin_preset(const std::string& name) {
  for (const auto& p : presets()) {
    if (p.name == name) return p;
  }
  std::string known;
  for (const auto& n : swin_preset_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown backbone '", name, "' (known: ", known, ")");
}

std::vector<std::string> swin_preset_names() {
  std::vector<std::string> n;
  for (const auto& p : presets()) n.push_back(p.name);
  return n;
}

std::vector<ParamSpec> param_specs(const ModelConfig& cfg) {
  std::vector<ParamSpec> out;
  SpecWriter w{out};
  const int C = cfg.swin.embed_dim;
  const bool bn = cfg.decoder_bn;
  swin_specs(w, cfg.swin);
  // squeeze_module: BasicDecBlk(30C -> 16C)
  dec_block_specs(w, "squeeze_module.0", cfg.context_channels(), cfg.enc_channels(3), bn);
  // ipt_blk{5..1}: SimpleConvs(3·g², -> ipt_out), inter 64
  for (int blk = 5; blk >= 1; --blk) {
    const int g = ModelConfig::ipt_grid(blk);
    const std::string p = str_cat("decoder.ipt_blk", blk);
    w.conv(p + ".conv1", 3 * g * g, 64, 3);
    w.conv(p + ".conv_out", 64, cfg.ipt_out(blk), 3);
  }
  // decoder_block4: x4 (16C) + ipt5; block3: 8C + ipt4; block2: 4C + ipt3; block1: 2C + ipt2
  for (int blk = 4; blk >= 1; --blk) {
    const int in = (blk == 4 ? 16 * C : cfg.dec_out(blk + 1)) + cfg.ipt_out(blk + 1);
    dec_block_specs(w, str_cat("decoder.decoder_block", blk), in, cfg.dec_out(blk), bn);
  }
  w.conv("decoder.conv_out1.0", cfg.dec_out(1) + cfg.ipt_out(1), 1, 1);
  // lateral_block{4,3,2}: 1×1 on x3 (8C), x2 (4C), x1 (2C)
  for (int blk = 4; blk >= 2; --blk) {
    const int c = cfg.enc_channels(blk - 2);
    w.conv(str_cat("decoder.lateral_block", blk, ".conv"), c, c, 1);
  }
  w.used = false;  // multi-scale supervision heads: training only
  for (int blk = 4; blk >= 2; --blk) w.conv(str_cat("decoder.conv_ms_spvn_", blk), cfg.dec_out(blk), 1, 1);
  w.used = true;
  for (int blk = 4; blk >= 2; --blk) {
    const std::string p = str_cat("decoder.gdt_convs_", blk);
    w.conv(p + ".0", cfg.dec_out(blk), 16, 3);
    if (bn) w.bn(p + ".1", 16);
  }
  w.used = false;  // gradient-prediction heads: training only
  for (int blk = 4; blk >= 2; --blk) w.conv(str_cat("decoder.gdt_convs_pred_", blk, ".0"), 16, 1, 1);
  w.used = true;
  for (int blk = 4; blk >= 2; --blk) w.conv(str_cat("decoder.gdt_convs_attn_", blk, ".0"), 16, 1, 1);
  return out;
}

ModelConfig detect_config(const Checkpoint& ck) {
  const std::string& path = ck.path;
  auto find = [&](const std::string& n) -> const TensorData* {
    auto it = ck.tensors.find(n);
    return it == ck.tensors.end() ? nullptr : &it->second;
  };
  const TensorData* pe = find("bb.patch_embed.proj.weight");
  if (!pe) {
    std::string example = ck.tensors.empty() ? "none" : "'" + ck.tensors.begin()->first + "'";
    fail("'", path, "' is not a BiRefNet checkpoint: no tensor 'bb.patch_embed.proj.weight' (",
         ck.tensors.size(), " tensors, first ", example, ")");
  }
  // Patch size 4 is what the decoder's patch grids (32, 16, 8, 4 at strides 32..4) assume; C must
  // split into the decoder's C/4 and C/8 channel groups.
  BIREF_CHECK(pe->shape.size() == 4 && pe->shape[1] == 3 && pe->shape[2] == 4 && pe->shape[3] == 4 &&
                  pe->shape[0] >= 8 && pe->shape[0] <= kMaxEmbedDim && pe->shape[0] % 8 == 0,
              "'", path, "': 'bb.patch_embed.proj.weight' has shape ", shape_str(pe->shape),
              ", expected [C, 3, 4, 4] with C a multiple of 8 up to ", kMaxEmbedDim,
              " (a Swin v1 backbone)");
  ModelConfig cfg;
  SwinConfig& s = cfg.swin;
  s.embed_dim = int(pe->shape[0]);
  s.patch = int(pe->shape[2]);
  for (int i = 0; i < 4; ++i) {
    int j = 0;
    while (j <= kMaxDepth && find(str_cat("bb.layers.", i, ".blocks.", j, ".norm1.weight"))) ++j;
    BIREF_CHECK(j <= kMaxDepth, "'", path, "': Swin stage ", i, " has more than ", kMaxDepth,
                " blocks");
    BIREF_CHECK(j > 0, "'", path, "' is incomplete: no tensor 'bb.layers.", i,
                ".blocks.0.norm1.weight' (Swin stage ", i, " is missing)");
    s.depths[i] = j;
    const std::string tname = str_cat("bb.layers.", i, ".blocks.0.attn.relative_position_bias_table");
    const TensorData* t = find(tname);
    BIREF_CHECK(t, "'", path, "' is incomplete: missing tensor '", tname, "'");
    BIREF_CHECK(t->shape.size() == 2, "'", path, "': '", tname, "' has shape ", shape_str(t->shape),
                ", expected [(2w-1)^2, heads]");
    // The attention bias is expanded to heads·w⁴ values per block at load: bound w.
    const int64_t side = std::llround(std::sqrt(double(t->shape[0])));
    BIREF_CHECK(side * side == t->shape[0] && side % 2 == 1 && side <= 2 * kMaxWindow - 1, "'",
                path, "': '", tname, "' has ", t->shape[0], " rows, not (2w-1)^2 for a window w <= ",
                kMaxWindow);
    const int win = int(side + 1) / 2;
    BIREF_CHECK(i == 0 || win == s.window, "'", path, "': stage ", i, " has window ", win,
                " but stage 0 has ", s.window);
    s.window = win;
    s.heads[i] = int(t->shape[1]);
    BIREF_CHECK(s.heads[i] > 0 && s.dim(i) % s.heads[i] == 0, "'", path, "': stage ", i, " has ",
                s.heads[i], " heads, which do not divide its ", s.dim(i), " channels");
  }
  s.name = "swin_custom";
  for (const auto& p : presets()) {
    if (p.embed_dim == s.embed_dim && p.depths == s.depths && p.heads == s.heads &&
        p.window == s.window && p.patch == s.patch) {
      s.name = p.name;
    }
  }
  cfg.decoder_bn = find("squeeze_module.0.bn_in.weight") != nullptr;
  return cfg;
}

void validate_checkpoint(const Checkpoint& ck, const ModelConfig& cfg) {
  const auto specs = param_specs(cfg);
  std::set<std::string> expected;
  for (const auto& p : specs) {
    expected.insert(p.name);
    auto it = ck.tensors.find(p.name);
    if (it == ck.tensors.end()) {
      if (!p.used) continue;  // training-only heads may be dropped from a checkpoint
      fail("'", ck.path, "' is incomplete for BiRefNet ", cfg.swin.name, ": missing tensor '",
           p.name, "' ", shape_str(p.shape));
    }
    BIREF_CHECK(it->second.shape == p.shape, "'", ck.path, "': tensor '", p.name, "' has shape ",
                shape_str(it->second.shape), ", expected ", shape_str(p.shape), " for BiRefNet ",
                cfg.swin.name);
    const DType dt = it->second.dtype;
    BIREF_CHECK(dt == DType::F32 || dt == DType::F16 || dt == DType::BF16 || dt == DType::F64,
                "'", ck.path, "': tensor '", p.name, "' has dtype ", dtype_name(dt),
                ", expected a floating-point type");
  }
  for (const auto& [name, t] : ck.tensors) {
    if (expected.count(name) || is_state_dict_buffer(name)) continue;
    fail("'", ck.path, "': unexpected tensor '", name, "' ", shape_str(t.shape),
         " (not part of BiRefNet ", cfg.swin.name, ")");
  }
}

bool is_state_dict_buffer(const std::string& name) {
  return ends_with(name, ".num_batches_tracked") || ends_with(name, ".relative_position_index");
}

std::string describe(const ModelConfig& cfg) {
  const SwinConfig& s = cfg.swin;
  return str_cat(s.name, " (C=", s.embed_dim, ", depths ", s.depths[0], "-", s.depths[1], "-",
                 s.depths[2], "-", s.depths[3], ", heads ", s.heads[0], "-", s.heads[1], "-",
                 s.heads[2], "-", s.heads[3], ", window ", s.window,
                 cfg.decoder_bn ? ", decoder BatchNorm" : ", no decoder BatchNorm", ")");
}

}  // namespace biref
