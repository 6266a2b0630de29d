// Reads BiRefNet's weights by their state_dict names into the module structs (modules.h).
#include <cmath>

#include "core/check.h"
#include "model/modules.h"

namespace biref {

namespace {

class WeightReader {
 public:
  WeightReader(Checkpoint& ck, const ModelConfig& cfg, bool map_weights)
      : ck_(ck), cfg_(cfg), map_weights_(map_weights) {}

  std::vector<float> take(const std::string& name) {
    auto it = ck_.tensors.find(name);
    BIREF_CHECK(it != ck_.tensors.end(), "'", ck_.path, "': missing tensor '", name, "'");
    parameters_ += it->second.numel();
    std::vector<float> values = it->second.to_f32();
    release_tensor(ck_, name);  // consumed: the checkpoint shrinks as the model grows
    return values;
  }

  Linear linear(const std::string& p, bool bias = true) {
    Linear l;
    l.name = p;
    const auto shape = ck_.tensors.at(p + ".weight").shape;  // a copy: take() erases the entry
    l.out = int(shape[0]);
    l.in = int(shape[1]);
    if (!map(p + ".weight", l.mapped_weight)) l.weight = take(p + ".weight");
    if (bias) l.bias = take(p + ".bias");
    return l;
  }

  // With map_weights: a float32 tensor that lies in the file mapping is left there, to be read in
  // place by the packing (the mapping's pages are released once packed). False otherwise.
  bool map(const std::string& name, MappedFloats& out) {
    const TensorData& w = ck_.tensors.at(name);
    if (!(map_weights_ && w.file_mapped && w.dtype == DType::F32 &&
          uintptr_t(w.data) % alignof(float) == 0))
      return false;
    out = {static_cast<const float*>(w.data), size_t(w.numel()), w.owner};
    parameters_ += w.numel();
    ck_.tensors.erase(name);
    return true;
  }

  LayerNorm layer_norm(const std::string& p) {
    LayerNorm n;
    n.name = p;
    n.weight = take(p + ".weight");
    n.bias = take(p + ".bias");
    n.dim = int(n.weight.size());
    return n;
  }

  // `mappable`: the weight may stay in the file mapping (it is not combined with another).
  Conv2d conv(const std::string& p, int stride, int pad, Act act, bool bias = true,
              bool mappable = true) {
    Conv2d c;
    c.name = p;
    const auto shape = ck_.tensors.at(p + ".weight").shape;  // a copy: take() erases the entry
    c.out = int(shape[0]);
    c.in = int(shape[1]);
    c.k = int(shape[2]);
    c.stride = stride;
    c.pad = pad;
    c.act = act;
    if (!(mappable && map(p + ".weight", c.mapped_weight))) c.weight = take(p + ".weight");
    c.bias = bias ? take(p + ".bias") : std::vector<float>(size_t(c.out), 0.f);
    return c;
  }

  // Eval-mode BatchNorm after a conv: w' = w·s, b' = (b − mean)·s + beta, s = gamma/√(var + eps).
  // A no-op when the checkpoint has no decoder BatchNorm (the official nn.Identity).
  void fold_bn(Conv2d& c, const std::string& bn) {
    if (!cfg_.decoder_bn) return;
    const auto gamma = take(bn + ".weight"), beta = take(bn + ".bias");
    const auto mean = take(bn + ".running_mean"), var = take(bn + ".running_var");
    const size_t per_out = c.weight.size() / size_t(c.out);
    // A mapped weight is scaled as it is packed (Conv2d::folded_weight, the same arithmetic).
    if (!c.mapped_weight.empty()) c.mapped_scale.resize(size_t(c.out));
    for (int o = 0; o < c.out; ++o) {
      const double s = double(gamma[o]) / std::sqrt(double(var[o]) + 1e-5);
      if (!c.mapped_weight.empty()) c.mapped_scale[size_t(o)] = s;
      for (size_t i = 0; i < per_out; ++i)
        c.weight[o * per_out + i] = float(c.weight[o * per_out + i] * s);
      c.bias[o] = float((double(c.bias[o]) - mean[o]) * s + beta[o]);
    }
  }

  DeformConv deform(const std::string& p, int k) {
    // _ASPPModuleDeformable: atrous_conv = DeformableConv2d(64, 256, k, padding=k//2), bn, ReLU
    DeformConv d;
    d.name = p;
    d.k = k;
    d.pad = k / 2;
    const std::string a = p + ".atrous_conv";
    const Conv2d off = conv(a + ".offset_conv", 1, d.pad, Act::None);
    const Conv2d mod = conv(a + ".modulator_conv", 1, d.pad, Act::None);
    // One convolution for both: outputs [2k² offsets | k² mask logits], its weight written once
    // (the two are read in place where they are mapped; neither has a BatchNorm).
    Conv2d& om = d.offset_mask;
    om.name = a + ".offset_conv+modulator_conv";
    om.in = off.in;
    om.out = off.out + mod.out;
    om.k = off.k;
    om.pad = off.pad;
    om.act = Act::None;
    const size_t n_off = size_t(off.out) * off.in * off.k * off.k;
    const size_t n_mod = size_t(mod.out) * mod.in * mod.k * mod.k;
    om.weight.reserve(n_off + n_mod);
    om.weight.insert(om.weight.end(), off.weight_data(), off.weight_data() + n_off);
    om.weight.insert(om.weight.end(), mod.weight_data(), mod.weight_data() + n_mod);
    om.bias = off.bias;
    om.bias.insert(om.bias.end(), mod.bias.begin(), mod.bias.end());
    d.regular = conv(a + ".regular_conv", 1, d.pad, Act::Relu, /*bias=*/false);
    fold_bn(d.regular, p + ".bn");
    return d;
  }

  BasicDecBlk dec_block(const std::string& p) {
    BasicDecBlk b;
    b.conv_in = conv(p + ".conv_in", 1, 1, Act::Relu);
    fold_bn(b.conv_in, p + ".bn_in");
    const std::string a = p + ".dec_att";
    b.dec_att.aspp1 = deform(a + ".aspp1", 1);
    const int ks[3] = {1, 3, 7};
    for (int i = 0; i < 3; ++i)
      b.dec_att.aspp_deforms[i] = deform(str_cat(a, ".aspp_deforms.", i), ks[i]);
    b.dec_att.global_avg_pool = conv(a + ".global_avg_pool.1", 1, 0, Act::Relu, /*bias=*/false);
    fold_bn(b.dec_att.global_avg_pool, a + ".global_avg_pool.2");
    b.dec_att.conv1 = conv(a + ".conv1", 1, 0, Act::Relu, /*bias=*/false);
    fold_bn(b.dec_att.conv1, a + ".bn1");
    b.conv_out = conv(p + ".conv_out", 1, 1, Act::None);
    fold_bn(b.conv_out, p + ".bn_out");
    return b;
  }

  int64_t parameters() const { return parameters_; }

 private:
  Checkpoint& ck_;
  const ModelConfig& cfg_;
  bool map_weights_;
  int64_t parameters_ = 0;
};

// relative_position_bias_table [(2w−1)², heads] -> bias [heads, N, N] with the standard Swin
// index idx(n, m) = (y_n − y_m + w − 1)·(2w − 1) + (x_n − x_m + w − 1).
std::vector<float> gather_relative_bias(const std::vector<float>& table, int window, int heads) {
  const int N = window * window;
  std::vector<float> bias(size_t(heads) * N * N);
  for (int n = 0; n < N; ++n)
    for (int m = 0; m < N; ++m) {
      const int idx = (n / window - m / window + window - 1) * (2 * window - 1) +
                      (n % window - m % window + window - 1);
      for (int h = 0; h < heads; ++h)
        bias[(size_t(h) * N + n) * N + m] = table[size_t(idx) * heads + h];
    }
  return bias;
}

}  // namespace

BiRefNet build_birefnet(Checkpoint& ck, const ModelConfig& cfg, bool map_weights) {
  WeightReader r(ck, cfg, map_weights);
  BiRefNet net;
  net.cfg = cfg;
  SwinTransformer& bb = net.bb;
  bb.cfg = cfg.swin;
  bb.patch_embed_proj = r.conv("bb.patch_embed.proj", cfg.swin.patch, 0, Act::None);
  bb.patch_embed_norm = r.layer_norm("bb.patch_embed.norm");
  for (int i = 0; i < 4; ++i) {
    SwinStage& st = bb.layers[i];
    for (int j = 0; j < cfg.swin.depths[i]; ++j) {
      const std::string p = str_cat("bb.layers.", i, ".blocks.", j);
      SwinBlock b;
      b.heads = cfg.swin.heads[i];
      b.norm1 = r.layer_norm(p + ".norm1");
      b.rel_bias = gather_relative_bias(r.take(p + ".attn.relative_position_bias_table"),
                                        cfg.swin.window, b.heads);
      b.qkv = r.linear(p + ".attn.qkv");
      b.proj = r.linear(p + ".attn.proj");
      b.norm2 = r.layer_norm(p + ".norm2");
      b.fc1 = r.linear(p + ".mlp.fc1");
      b.fc2 = r.linear(p + ".mlp.fc2");
      st.blocks.push_back(std::move(b));
    }
    if (i < 3) {
      const std::string p = str_cat("bb.layers.", i, ".downsample");
      st.has_downsample = true;
      st.downsample_reduction = r.linear(p + ".reduction", /*bias=*/false);
      st.downsample_norm = r.layer_norm(p + ".norm");
    }
    bb.norms[i] = r.layer_norm(str_cat("bb.norm", i));
  }
  net.squeeze_module = r.dec_block("squeeze_module.0");
  Decoder& d = net.decoder;
  for (int blk = 5; blk >= 1; --blk) {
    const std::string p = str_cat("decoder.ipt_blk", blk);
    d.ipt_blk[blk].conv1 = r.conv(p + ".conv1", 1, 1, Act::None);
    // ipt_blk1's conv_out is composed with the output head below
    d.ipt_blk[blk].conv_out = r.conv(p + ".conv_out", 1, 1, Act::None, true, blk != 1);
  }
  for (int blk = 4; blk >= 1; --blk)
    d.decoder_block[blk] = r.dec_block(str_cat("decoder.decoder_block", blk));
  {
    const Conv2d head = r.conv("decoder.conv_out1.0", 1, 0, Act::None, true, /*mappable=*/false);
    const int cd = cfg.dec_out(1), ci = head.in - cd;
    d.conv_out1_dec = head;
    d.conv_out1_dec.name = "decoder.conv_out1.0[:dec]";
    d.conv_out1_dec.in = cd;
    d.conv_out1_dec.weight.assign(head.weight.begin(), head.weight.begin() + cd);
    // compose: out[y, x] = Σ_c w1[c]·(b_o[c] + Σ W_o[c, i, ky, kx]·t[i, ...])
    const Conv2d& co = d.ipt_blk[1].conv_out;  // [ci, 64, 3, 3]
    Conv2d f;
    f.name = "decoder.ipt_blk1.conv_out+conv_out1.0[ipt:]";
    f.in = co.in;
    f.out = 1;
    f.k = co.k;
    f.pad = co.pad;
    f.weight.assign(size_t(co.in) * co.k * co.k, 0.f);
    f.bias.assign(1, 0.f);
    const size_t per = size_t(co.in) * co.k * co.k;
    for (int c = 0; c < ci; ++c) {
      const double w1 = head.weight[size_t(cd + c)];
      for (size_t j = 0; j < per; ++j)
        f.weight[j] = float(f.weight[j] + w1 * co.weight[c * per + j]);
      f.bias[0] = float(f.bias[0] + w1 * co.bias[c]);
    }
    d.ipt_blk1_conv_out = std::move(f);
    std::vector<float>().swap(d.ipt_blk[1].conv_out.weight);  // folded above; never run
  }
  for (int blk = 4; blk >= 2; --blk) {
    d.lateral_block[blk] = r.conv(str_cat("decoder.lateral_block", blk, ".conv"), 1, 0, Act::None);
    d.gdt_convs[blk] = r.conv(str_cat("decoder.gdt_convs_", blk, ".0"), 1, 1, Act::Relu);
    r.fold_bn(d.gdt_convs[blk], str_cat("decoder.gdt_convs_", blk, ".1"));
    d.gdt_convs_attn[blk] =
        r.conv(str_cat("decoder.gdt_convs_attn_", blk, ".0"), 1, 0, Act::Sigmoid);
  }
  net.parameters = r.parameters();
  return net;
}

void for_each_layer(BiRefNet& net, const LayerVisitor& v) {
  v.conv(net.bb.patch_embed_proj);
  for (SwinStage& st : net.bb.layers) {
    for (SwinBlock& b : st.blocks) {
      for (Linear* l : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) v.linear(*l);
    }
    if (st.has_downsample) v.linear(st.downsample_reduction);
  }
  auto dec_block = [&](BasicDecBlk& b) {
    v.conv(b.conv_in);
    v.deform(b.dec_att.aspp1);
    for (DeformConv& d : b.dec_att.aspp_deforms) v.deform(d);
    v.conv(b.dec_att.global_avg_pool);
    v.conv(b.dec_att.conv1);
    v.conv(b.conv_out);
  };
  dec_block(net.squeeze_module);
  Decoder& d = net.decoder;
  for (int blk = 1; blk <= 5; ++blk) {
    v.conv(d.ipt_blk[blk].conv1);
    if (blk > 1) v.conv(d.ipt_blk[blk].conv_out);  // ipt_blk1's is folded into the output head
  }
  for (int blk = 1; blk <= 4; ++blk) dec_block(d.decoder_block[blk]);
  for (int blk = 2; blk <= 4; ++blk) {
    v.conv(d.lateral_block[blk]);
    v.conv(d.gdt_convs[blk]);
    v.conv(d.gdt_convs_attn[blk]);
  }
  v.conv(d.conv_out1_dec);
  v.conv(d.ipt_blk1_conv_out);
}

}  // namespace biref
