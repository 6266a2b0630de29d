// BiRefNet as an ONNX graph, written from the module tree biref builds (modules.h): the same
// folded layers biref runs (BatchNorm in the convolutions, the offset and modulator convolutions
// as one, the output head before the final upsampling), in the stages of MODEL.md.
//
// Layouts: the backbone keeps its token grids channels-last [B, h, w, C] (LayerNorm and the
// linears act on the last axis); its outputs and the whole decoder are NCHW, as ONNX's Conv.
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "biref/onnx.h"
#include "core/atomic_file.h"
#include "core/check.h"
#include "model/config.h"
#include "model/modules.h"
#include "onnx_export/graph.h"
#include "weights/checkpoint.h"

namespace biref {

namespace {

using onnx_export::Attr;
using onnx_export::Dim;
using onnx_export::Graph;
using Ints = std::vector<int64_t>;

constexpr int64_t kEnd = INT64_MAX;  // Slice to the end of an axis
// Added to the attention scores of token pairs the shift mask separates: exp() of it is 0 in
// float32, as the official −inf would give, without an infinity in the graph.
constexpr float kMasked = -1e30f;

// Both dimensions known at export, and 0 (so a padding by them is no padding).
bool known_zeros(const Dim& a, const Dim& b) {
  return a.known() && a.value == 0 && b.known() && b.value == 0;
}

class Exporter {
 public:
  Exporter(Graph& g, const BiRefNet& net, const OnnxExportOptions& o) : g_(g), net_(net), o_(o) {}

  // input: [B, 3, H, W] float32 -> logits [B, 1, H, W] float32
  std::string forward(const std::string& input) {
    B_ = g_.shape_dim(input, 0);
    H_ = o_.dynamic ? g_.shape_dim(input, 2) : Dim::of(o_.height);
    W_ = o_.dynamic ? g_.shape_dim(input, 3) : Dim::of(o_.width);
    for (int i = 0; i < 4; ++i) {
      hs_[i] = g_.div(H_, Dim::of(int64_t(4) << i));
      ws_[i] = g_.div(W_, Dim::of(int64_t(4) << i));
    }
    g_.set_scope("input");
    const std::string x = g_.from_f32(input);
    // 2. Encoder: the backbone on the full and the half-resolution input (shared weights)
    std::array<std::string, 4> f = swin(x, H_, W_, "bb.full");
    g_.set_scope("encoder");
    const Dim H2 = g_.div(H_, Dim::of(2)), W2 = g_.div(W_, Dim::of(2));
    const std::string xh = resize(x, 3, H2, W2);
    std::array<std::string, 4> gh = swin(xh, H2, W2, "bb.half");
    g_.set_scope("encoder");
    std::array<std::string, 4> enc;
    for (int i = 0; i < 4; ++i) {
      const int c = net_.cfg.swin.dim(i);
      enc[i] = g_.node("Concat", {f[i], resize(gh[i], c, hs(i), ws(i))}, {{"axis", int64_t(1)}});
    }
    // context: x4 = cat(x1, x2, x3 resized to x4's size, x4)
    {
      std::vector<std::string> parts;
      for (int i = 0; i < 3; ++i)
        parts.push_back(resize(enc[i], net_.cfg.enc_channels(i), hs(3), ws(3)));
      parts.push_back(enc[3]);
      enc[3] = g_.node("Concat", parts, {{"axis", int64_t(1)}});
    }
    // 3. Squeeze
    std::string p = dec_block(net_.squeeze_module, enc[3], hs(3), ws(3), "squeeze_module.0");
    // 4. Decoder
    const Decoder& d = net_.decoder;
    {
      const std::string ip = ipt(d.ipt_blk[5], 5, x, hs(3), ws(3));
      g_.set_scope("decoder");
      const std::string in = g_.node("Concat", {p, ip}, {{"axis", int64_t(1)}});
      p = dec_block(d.decoder_block[4], in, hs(3), ws(3), "decoder.decoder_block4");
      p = gate(d, 4, p);
    }
    for (int blk = 3; blk >= 1; --blk) {
      const int i = blk - 1;  // x3, x2, x1
      g_.set_scope(str_cat("decoder.lateral_block", blk + 1));
      const std::string t = resize(p, net_.cfg.dec_out(blk + 1), hs(i), ws(i));
      const std::string lat = conv(d.lateral_block[blk + 1], enc[i]);
      const std::string sum = g_.node("Add", {t, lat});
      const std::string ip = ipt(d.ipt_blk[blk + 1], blk + 1, x, hs(i), ws(i));
      g_.set_scope("decoder");
      const std::string in = g_.node("Concat", {sum, ip}, {{"axis", int64_t(1)}});
      p = dec_block(d.decoder_block[blk], in, hs(i), ws(i), str_cat("decoder.decoder_block", blk));
      if (blk > 1) p = gate(d, blk, p);
    }
    // out = conv_out1(cat(interp(p1, (H, W)), ipt_blk1(x))), computed as biref does (modules.h):
    // interp(conv_out1_dec(p1)) + (ipt_blk1.conv_out ∘ conv_out1_ipt)(ipt_blk1.conv1(x))
    g_.set_scope("decoder.conv_out1");
    const std::string z = resize(conv(d.conv_out1_dec, p), 1, H_, W_);
    const std::string o2 = conv(d.ipt_blk1_conv_out, conv(d.ipt_blk[1].conv1, x));
    return g_.to_f32(g_.node("Add", {z, o2}));
  }

 private:
  // Token grid of backbone stage i (stride 4·2^i) at the full resolution.
  const Dim& hs(int i) const { return hs_[i]; }
  const Dim& ws(int i) const { return ws_[i]; }

  // Bilinear, align_corners=True, to [B, c, h, w] (NCHW).
  std::string resize(const std::string& x, int64_t c, const Dim& h, const Dim& w) {
    return g_.node("Resize", {x, "", "", g_.dims({B_, Dim::of(c), h, w})},
                   {{"mode", std::string("linear")},
                    {"coordinate_transformation_mode", std::string("align_corners")}});
  }

  std::string act(const std::string& y, Act a) {
    switch (a) {
      case Act::None:
        return y;
      case Act::Relu:
        return g_.node("Relu", {y});
      case Act::Sigmoid:
        return g_.from_f32(g_.node("Sigmoid", {g_.to_f32(y)}));
      case Act::Gelu: {
        // exact GELU: 0.5·y·(1 + erf(y/√2)), in the form PyTorch exports (Div by √2), which
        // ONNX Runtime's optimizer fuses into one Gelu
        const std::string e =
            g_.node("Erf", {g_.node("Div", {y, g_.scalar(float(std::sqrt(2.0)))})});
        const std::string h = g_.node("Mul", {y, g_.node("Add", {e, g_.scalar(1.f)})});
        return g_.node("Mul", {h, g_.scalar(0.5f)});
      }
    }
    return y;
  }

  // NCHW convolution with the folded weights, then the layer's activation.
  std::string conv(const Conv2d& c, const std::string& x) {
    BIREF_CHECK(!c.weight.empty(), "ONNX export: convolution '", c.name, "' has no weights");
    const std::string w = g_.weight(c.name + ".weight", {c.out, c.in, c.k, c.k}, c.weight.data());
    const std::string b = g_.weight(c.name + ".bias", {c.out}, c.bias.data());
    const int64_t p = c.pad;
    const std::string y = g_.node("Conv", {x, w, b},
                                  {{"kernel_shape", Ints{c.k, c.k}},
                                   {"strides", Ints{c.stride, c.stride}},
                                   {"pads", Ints{p, p, p, p}}});
    return act(y, c.act);
  }

  // Rows of the last axis: y = x·Wᵀ + b, then the activation.
  std::string linear(const Linear& l, const std::string& x, Act a = Act::None) {
    BIREF_CHECK(!l.weight.empty(), "ONNX export: linear '", l.name, "' has no weights");
    const std::string wname = l.name + ".weight^T";  // [in, out] for MatMul
    if (!g_.has_weight(wname)) {  // the backbone's second pass reuses the first one's
      std::vector<float> wt(size_t(l.in) * l.out);
      for (int o = 0; o < l.out; ++o)
        for (int i = 0; i < l.in; ++i) wt[size_t(i) * l.out + o] = l.weight[size_t(o) * l.in + i];
      g_.weight(wname, {l.in, l.out}, wt.data());
    }
    std::string y = g_.node("MatMul", {x, wname});
    if (!l.bias.empty())
      y = g_.node("Add", {y, g_.weight(l.name + ".bias", {l.out}, l.bias.data())});
    return act(y, a);
  }

  // Over the last axis, in float32.
  std::string layer_norm(const LayerNorm& ln, const std::string& x) {
    const std::string w = g_.weight_f32(ln.name + ".weight", {ln.dim}, ln.weight.data());
    const std::string b = g_.weight_f32(ln.name + ".bias", {ln.dim}, ln.bias.data());
    return g_.from_f32(g_.node("LayerNormalization", {g_.to_f32(x), w, b},
                               {{"axis", int64_t(-1)}, {"epsilon", ln.eps}}));
  }

  // Cyclic roll of axis `axis` by `by` (negative: towards the start), as torch.roll.
  std::string roll(const std::string& x, int64_t by, int64_t axis) {
    // roll by −s: cat(x[s:], x[:s]); by +s: cat(x[−s:], x[:−s])
    const int64_t cut = -by;  // start of the part that comes first
    const std::string a = g_.node("Slice", {x, g_.ints({cut}), g_.ints({kEnd}), g_.ints({axis})});
    const std::string b = g_.node("Slice", {x, g_.ints({0}), g_.ints({cut}), g_.ints({axis})});
    return g_.node("Concat", {a, b}, {{"axis", axis}});
  }

  // x [B, h, w, C] zero-padded by pb rows at the bottom and pr columns at the right; x itself
  // when both are known to be 0.
  std::string pad_bottom_right(const std::string& x, const Dim& pb, const Dim& pr) {
    if (known_zeros(pb, pr)) return x;
    const Dim z = Dim::of(0);
    return g_.node("Pad", {x, g_.dims({z, z, z, z, z, pb, pr, z})});
  }

  // A stage's token grid h×w padded to whole windows: the padding, the padded grid, the
  // windows across (nw) and in all (nW). The same for every block of the stage.
  struct Windows {
    Dim h, w, pb, pr, hp, wp, nw, nW;
  };
  Windows windows(const Dim& h, const Dim& w) {
    const Dim W = Dim::of(net_.cfg.swin.window);
    Windows g;
    g.h = h;
    g.w = w;
    g.pb = g_.mod(g_.sub(W, g_.mod(h, W)), W);
    g.pr = g_.mod(g_.sub(W, g_.mod(w, W)), W);
    g.hp = g_.add(h, g.pb);
    g.wp = g_.add(w, g.pr);
    g.nw = g_.div(g.wp, W);
    g.nW = g_.mul(g_.div(g.hp, W), g.nw);
    return g;
  }

  // The shift mask of a padded hp×wp grid: [nW, 1, N, N], 0 where two tokens of a window share
  // a region label, kMasked where they do not. Labels: rows [0, hp−w), [hp−w, hp−s), [hp−s, hp)
  // are 0, 1, 2 (columns likewise), label = 3·row label + column label.
  std::string shift_mask(const Windows& g, int win, int shift) {
    auto labels = [&](const Dim& n) {
      const std::string r =
          g_.node("Range", {g_.scalar_i64(0), g_.dim_scalar(n), g_.scalar_i64(1)});
      auto ge = [&](const Dim& bound) {
        const std::string c = g_.node("Less", {r, g_.dim_scalar(bound)});
        return g_.node("Cast", {g_.node("Not", {c})}, {{"to", int64_t(onnx::TensorProto::INT64)}});
      };
      return g_.node("Add", {ge(g_.sub(n, Dim::of(win))), ge(g_.sub(n, Dim::of(shift)))});
    };
    const std::string lr =
        g_.node("Mul", {g_.node("Unsqueeze", {labels(g.hp), g_.ints({1})}), g_.ints({3})});
    const std::string lc = g_.node("Unsqueeze", {labels(g.wp), g_.ints({0})});
    const std::string grid = g_.node("Add", {lr, lc});  // [hp, wp]
    const int64_t N = int64_t(win) * win;
    // windows of labels: [nh, w, nw, w] -> [nh, nw, w, w] -> [nW, N]
    std::string l =
        g_.node("Reshape", {grid, g_.dims({Dim::of(-1), Dim::of(win), g.nw, Dim::of(win)})});
    l = g_.node("Transpose", {l}, {{"perm", Ints{0, 2, 1, 3}}});
    l = g_.node("Reshape", {l, g_.ints({-1, N})});
    const std::string same = g_.node("Equal", {g_.node("Unsqueeze", {l, g_.ints({2})}),
                                               g_.node("Unsqueeze", {l, g_.ints({1})})});
    const std::string m = g_.node("Where", {same, g_.scalar_f32(0.f), g_.scalar_f32(kMasked)});
    return g_.node("Unsqueeze", {m, g_.ints({1})});  // [nW, 1, N, N]
  }

  // x: [B, h, w, C] -> x + attention(x) + MLP, the Swin block of MODEL.md §1.
  std::string swin_block(const SwinBlock& blk, const std::string& x, const Windows& g, int shift,
                         const std::string& mask) {
    const int win = net_.cfg.swin.window;
    const int64_t C = blk.qkv.in, heads = blk.heads, hd = C / heads, N = int64_t(win) * win;
    const Dim W = Dim::of(win);
    // 1. norm1, zero-pad right/bottom to multiples of the window
    std::string t = pad_bottom_right(layer_norm(blk.norm1, x), g.pb, g.pr);
    const bool padded = !known_zeros(g.pb, g.pr);
    // 2. cyclic shift by (−s, −s)
    if (shift > 0) t = roll(roll(t, -shift, 1), -shift, 2);
    // 3. windows: [B, hp, wp, C] -> [B·nh, w, nw, w, C] -> [B·nh, nw, w, w, C] -> [B·nW, N, C]
    t = g_.node("Reshape", {t, g_.dims({Dim::of(-1), W, g.nw, W, Dim::of(C)})});
    t = g_.node("Transpose", {t}, {{"perm", Ints{0, 2, 1, 3, 4}}});
    t = g_.node("Reshape", {t, g_.ints({-1, N, C})});
    // 4. attention: qkv [B·nW, N, 3C] -> [3, B·nW, heads, N, hd]
    std::string qkv = linear(blk.qkv, t);
    qkv = g_.node("Reshape", {qkv, g_.ints({-1, N, 3, heads, hd})});
    qkv = g_.node("Transpose", {qkv}, {{"perm", Ints{2, 0, 3, 1, 4}}});
    auto part = [&](int64_t i) {
      return g_.node("Gather", {qkv, g_.scalar_i64(i)}, {{"axis", int64_t(0)}});
    };
    const std::string q = g_.node("Mul", {part(0), g_.scalar(1.f / std::sqrt(float(hd)))});
    const std::string kt = g_.node("Transpose", {part(1)}, {{"perm", Ints{0, 1, 3, 2}}});
    // scores in float32: q·kᵀ + relative position bias [heads, N, N] (+ shift mask)
    std::string a = g_.to_f32(g_.node("MatMul", {q, kt}));
    a = g_.node("Add", {a, g_.weight_f32(blk.qkv.name + ".relative_position_bias[heads,N,N]",
                                         {heads, N, N}, blk.rel_bias.data())});
    if (shift > 0) {
      a = g_.node("Reshape",
                  {a, g_.dims({Dim::of(-1), g.nW, Dim::of(heads), Dim::of(N), Dim::of(N)})});
      a = g_.node("Add", {a, mask});
      a = g_.node("Reshape", {a, g_.ints({-1, heads, N, N})});
    }
    a = g_.from_f32(g_.node("Softmax", {a}, {{"axis", int64_t(-1)}}));
    std::string o = g_.node("MatMul", {a, part(2)});  // [B·nW, heads, N, hd]
    o = g_.node("Transpose", {o}, {{"perm", Ints{0, 2, 1, 3}}});
    o = linear(blk.proj, g_.node("Reshape", {o, g_.ints({-1, N, C})}));
    // 5-6. reverse the windows, roll back, crop, residual
    o = g_.node("Reshape", {o, g_.dims({Dim::of(-1), g.nw, W, W, Dim::of(C)})});
    o = g_.node("Transpose", {o}, {{"perm", Ints{0, 2, 1, 3, 4}}});
    o = g_.node("Reshape", {o, g_.dims({Dim::of(-1), g.hp, g.wp, Dim::of(C)})});
    if (shift > 0) o = roll(roll(o, shift, 1), shift, 2);
    if (padded) o = g_.node("Slice", {o, g_.ints({0, 0}), g_.dims({g.h, g.w}), g_.ints({1, 2})});
    const std::string x1 = g_.node("Add", {x, o});
    // 7. x + fc2(GELU(fc1(norm2(x))))
    const std::string m = linear(blk.fc2, linear(blk.fc1, layer_norm(blk.norm2, x1), Act::Gelu));
    return g_.node("Add", {x1, m});
  }

  // x: [B, 3, H, W] -> f1..f4 NCHW [B, C·2^i, H/4/2^i, W/4/2^i]
  std::array<std::string, 4> swin(const std::string& x, const Dim& H, const Dim& W,
                                  const std::string& tag) {
    const SwinTransformer& bb = net_.bb;
    const int win = bb.cfg.window;
    g_.set_scope(tag + ".patch_embed");
    std::string cur = conv(bb.patch_embed_proj, x);  // [B, C, H/4, W/4]
    cur = g_.node("Transpose", {cur}, {{"perm", Ints{0, 2, 3, 1}}});
    cur = layer_norm(bb.patch_embed_norm, cur);
    Dim h = g_.div(H, Dim::of(4)), w = g_.div(W, Dim::of(4));
    std::array<std::string, 4> out;
    for (int i = 0; i < 4; ++i) {
      const SwinStage& st = bb.layers[i];
      g_.set_scope(str_cat(tag, ".layers.", i));
      const Windows geometry = windows(h, w);  // one per stage, as the shift mask
      std::string mask;
      for (size_t j = 0; j < st.blocks.size(); ++j) {
        g_.set_scope(str_cat(tag, ".layers.", i, ".blocks.", j));
        const int shift = (j % 2 == 1) ? win / 2 : 0;
        if (shift > 0 && mask.empty()) mask = shift_mask(geometry, win, shift);
        cur = swin_block(st.blocks[j], cur, geometry, shift, mask);
      }
      g_.set_scope(str_cat(tag, ".norm", i));
      out[i] = g_.node("Transpose", {layer_norm(bb.norms[i], cur)}, {{"perm", Ints{0, 3, 1, 2}}});
      if (st.has_downsample) {
        // patch merging: zero-pad h, w to even (at the half resolution H/32 may be odd),
        // [B, h, w, C] -> [B, ⌈h/2⌉, ⌈w/2⌉, 4C] -> norm -> reduction -> 2C
        g_.set_scope(str_cat(tag, ".layers.", i, ".downsample"));
        const Dim two = Dim::of(2), pb = g_.mod(h, two), pr = g_.mod(w, two);
        cur = pad_bottom_right(cur, pb, pr);
        std::vector<std::string> parts;
        for (auto [r, c] : {std::pair{0, 0}, {1, 0}, {0, 1}, {1, 1}})
          parts.push_back(g_.node("Slice", {cur, g_.ints({r, c}), g_.ints({kEnd, kEnd}),
                                            g_.ints({1, 2}), g_.ints({2, 2})}));
        const std::string merged = g_.node("Concat", parts, {{"axis", int64_t(-1)}});
        cur = linear(st.downsample_reduction, layer_norm(st.downsample_norm, merged));
        h = g_.div(g_.add(h, pb), two);
        w = g_.div(g_.add(w, pr), two);
      }
    }
    return out;
  }

  // Modulated deformable convolution (torchvision deform_conv2d): x [B, C, h, w] -> [B, out, h, w]
  std::string deform(const DeformConv& d, const std::string& x, const Dim& h, const Dim& w) {
    const int64_t k = d.k, kk = k * k, C = d.regular.in, pad = d.pad;
    const std::string om = conv(d.offset_mask, x);  // [B, 3k², h, w]: 2k² offsets | k² logits
    const std::string off = g_.node("Slice", {om, g_.ints({0}), g_.ints({2 * kk}), g_.ints({1})});
    const std::string logit =
        g_.node("Slice", {om, g_.ints({2 * kk}), g_.ints({3 * kk}), g_.ints({1})});
    // mask = 2·sigmoid(logits), float32
    const std::string mask =
        g_.node("Mul", {g_.node("Sigmoid", {g_.to_f32(logit)}), g_.scalar_f32(2.f)});
    const Conv2d& rc = d.regular;
    if (o_.deform == OnnxDeform::native) {
      const std::string wgt =
          g_.weight(rc.name + ".weight", {rc.out, rc.in, k, k}, rc.weight.data());
      const std::string b = g_.weight(rc.name + ".bias", {rc.out}, rc.bias.data());
      const std::string y =
          g_.node("DeformConv", {x, wgt, off, b, g_.from_f32(mask)},
                  {{"kernel_shape", Ints{k, k}}, {"pads", Ints{pad, pad, pad, pad}}});
      return act(y, rc.act);
    }
    // Sampling points, tap n = i·k + j at pixel (p, q): y = p − pad + i + dy, x = q − pad + j + dx,
    // as GridSample coordinates with align_corners=0 (pixel centres; also valid at h or w = 1):
    // g = (2·pos + 1)/size − 1. Zero padding gives torchvision's rule: corners outside are 0.
    const std::string o32 =
        g_.node("Reshape", {g_.to_f32(off), g_.dims({Dim::of(0), Dim::of(kk), Dim::of(2), h, w})});
    auto coord = [&](int64_t axis_of_offset, const Dim& size, bool rows) {
      const std::string delta =
          g_.node("Gather", {o32, g_.scalar_i64(axis_of_offset)}, {{"axis", int64_t(2)}});
      // base position p (or q) per pixel, broadcast: [1, 1, h, 1] or [1, 1, 1, w]
      const std::string sz = g_.dim_f32(size);
      std::string pos = g_.node("Range", {g_.scalar_f32(0.f), sz, g_.scalar_f32(1.f)});
      pos = g_.node("Reshape", {pos, g_.ints(rows ? Ints{1, 1, -1, 1} : Ints{1, 1, 1, -1})});
      std::vector<float> tap(static_cast<size_t>(kk));
      for (int64_t n = 0; n < kk; ++n) tap[size_t(n)] = float((rows ? n / k : n % k) - pad);
      const std::string taps =
          g_.weight_f32(str_cat("deform.taps.k", k, rows ? ".y" : ".x"), {1, kk, 1, 1}, tap.data());
      const std::string p = g_.node("Add", {g_.node("Add", {delta, pos}), taps});  // [B, k², h, w]
      const std::string scaled = g_.node(
          "Div",
          {g_.node("Add", {g_.node("Mul", {p, g_.scalar_f32(2.f)}), g_.scalar_f32(1.f)}), sz});
      return g_.node("Unsqueeze", {g_.node("Sub", {scaled, g_.scalar_f32(1.f)}), g_.ints({-1})});
    };
    const std::string gy = coord(0, h, true), gx = coord(1, w, false);
    const std::string grid =
        g_.node("Concat", {gx, gy}, {{"axis", int64_t(-1)}});  // [B, k², h, w, 2]
    const std::string xs = g_.to_f32(x);
    const std::string b = g_.weight(rc.name + ".bias", {rc.out}, rc.bias.data());
    // One kernel row (k taps) at a time, summed: the sampled tensor [B, C, k·h, w] is k times
    // smaller than all k² taps at once (117 MB instead of 822 MB for the 7×7 branch at stride 4
    // of a 1024² input).
    std::string y;
    for (int64_t i = 0; i < k; ++i) {
      const std::string first = g_.ints({i * k}), last = g_.ints({(i + 1) * k}),
                        axis = g_.ints({1});
      // the row's grid [B, k·h, w, 2], taps stacked along the height
      const std::string gi =
          g_.node("Reshape", {g_.node("Slice", {grid, first, last, axis}),
                              g_.dims({Dim::of(0), Dim::of(-1), w, Dim::of(2)})});
      // sampled [B, C, k·h, w] (float32), times the row's mask [B, 1, k·h, w]
      std::string si = g_.node("GridSample", {xs, gi},
                               {{"mode", std::string(o_.opset >= 20 ? "linear" : "bilinear")},
                                {"padding_mode", std::string("zeros")},
                                {"align_corners", int64_t(0)}});
      const std::string mi =
          g_.node("Reshape", {g_.node("Slice", {mask, first, last, axis}),
                              g_.dims({Dim::of(0), Dim::of(1), Dim::of(-1), w})});
      si = g_.node("Mul", {si, mi});
      // [B, C·k, h, w] (channel c·k + j) -> 1×1 conv with weight[:, :, i, :] as [out, C·k, 1, 1]
      si = g_.from_f32(g_.node("Reshape", {si, g_.dims({Dim::of(0), Dim::of(C * k), h, w})}));
      std::vector<float> wi(size_t(rc.out * C * k));
      for (int64_t o = 0; o < rc.out; ++o)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t j = 0; j < k; ++j)
            wi[size_t((o * C + c) * k + j)] = rc.weight[size_t(((o * C + c) * k + i) * k + j)];
      const std::string wname = str_cat(rc.name, ".weight[:,:,", i, ",:]");
      std::vector<std::string> in = {si, g_.weight(wname, {rc.out, C * k, 1, 1}, wi.data())};
      if (i == 0) in.push_back(b);
      const std::string yi = g_.node("Conv", in, {{"kernel_shape", Ints{1, 1}}});
      y = i == 0 ? yi : g_.node("Add", {y, yi});
    }
    return act(y, rc.act);
  }

  // ASPPDeformable: x [B, 64, h, w] -> [B, 64, h, w]
  std::string aspp(const ASPPDeformable& a, const std::string& x, const Dim& h, const Dim& w,
                   const std::string& name) {
    std::vector<std::string> parts;
    g_.set_scope(name + ".aspp1");
    parts.push_back(deform(a.aspp1, x, h, w));
    for (int i = 0; i < 3; ++i) {
      g_.set_scope(str_cat(name, ".aspp_deforms.", i));
      parts.push_back(deform(a.aspp_deforms[i], x, h, w));
    }
    g_.set_scope(name + ".global_avg_pool");
    const std::string pooled = conv(a.global_avg_pool, g_.node("GlobalAveragePool", {x}));
    parts.push_back(g_.node("Expand", {pooled, g_.dims({Dim::of(1), Dim::of(1), h, w})}));
    g_.set_scope(name + ".conv1");
    return conv(a.conv1, g_.node("Concat", parts, {{"axis", int64_t(1)}}));
  }

  // BasicDecBlk at the size of x (one of the encoder grids)
  std::string dec_block(const BasicDecBlk& b, const std::string& x, const Dim& h, const Dim& w,
                        const std::string& name) {
    g_.set_scope(name + ".conv_in");
    const std::string t = conv(b.conv_in, x);
    const std::string a = aspp(b.dec_att, t, h, w, name + ".dec_att");
    g_.set_scope(name + ".conv_out");
    return conv(b.conv_out, a);
  }

  // ipt_blk: the image's g×g patches stacked on channels, then SimpleConvs.
  std::string ipt(const SimpleConvs& s, int blk, const std::string& x, const Dim& h, const Dim& w) {
    g_.set_scope(str_cat("decoder.ipt_blk", blk));
    const int64_t gr = ModelConfig::ipt_grid(blk);
    std::string p = x;
    if (gr > 1) {
      // b c (hg h) (wg w) -> b (c hg wg) h w
      p = g_.node("Reshape",
                  {x, g_.dims({Dim::of(0), Dim::of(3), Dim::of(gr), h, Dim::of(gr), w})});
      p = g_.node("Transpose", {p}, {{"perm", Ints{0, 1, 2, 4, 3, 5}}});
      p = g_.node("Reshape", {p, g_.dims({Dim::of(0), Dim::of(3 * gr * gr), h, w})});
    }
    return conv(s.conv_out, conv(s.conv1, p));
  }

  // p · sigmoid(gdt_convs_attn(gdt_convs(p)))
  std::string gate(const Decoder& d, int k, const std::string& p) {
    g_.set_scope(str_cat("decoder.gdt_convs_", k));
    const std::string a = conv(d.gdt_convs_attn[k], conv(d.gdt_convs[k], p));
    return g_.node("Mul", {p, a});
  }

  Graph& g_;
  const BiRefNet& net_;
  const OnnxExportOptions& o_;
  Dim B_, H_, W_;
  std::array<Dim, 4> hs_, ws_;
};

}  // namespace

int onnx_max_checked_opset() {
  return onnx::OpSchemaRegistry::DomainToVersionRange::Instance()
      .Map()
      .at(onnx::ONNX_DOMAIN)
      .second;
}

OnnxExportReport export_onnx(const std::string& source, const std::string& out_path,
                             const OnnxExportOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  OnnxExportOptions o = options;
  BIREF_CHECK(o.height >= 32 && o.width >= 32 && o.height % 32 == 0 && o.width % 32 == 0,
              "ONNX export size ", o.width, "x", o.height,
              " (WxH): width and height must be positive multiples of 32");
  const int min_opset = o.deform == OnnxDeform::native ? 19 : 17;
  if (o.opset == 0) o.opset = min_opset;
  BIREF_CHECK(o.opset >= min_opset && o.opset <= 21, "ONNX opset ", o.opset, " is not supported",
              o.deform == OnnxDeform::native ? " with --deform native (DeformConv needs 19..21)"
                                             : " (17..21: LayerNormalization needs 17)");
  Checkpoint ck = load_checkpoint(source);
  const ModelConfig cfg = detect_config(ck);
  validate_checkpoint(ck, cfg);
  // plain float32 weights, folded as biref runs them (not left in the file mapping)
  const BiRefNet net = build_birefnet(ck, cfg, /*map_weights=*/false);
  ck = Checkpoint();

  onnx::ModelProto model;
  // IR versions of the ONNX releases that introduced these opsets (1.12: 8, 1.14: 9, 1.16: 10)
  model.set_ir_version(o.opset <= 18 ? 8 : o.opset <= 20 ? 9 : 10);
  model.set_producer_name("biref");
  model.set_producer_version(BIREF_VERSION);
  model.set_domain("ai.biref");
  model.set_doc_string("BiRefNet (" + describe(cfg) + "), exported by biref from " + source);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(o.opset);
  onnx::GraphProto& gp = *model.mutable_graph();
  gp.set_name("birefnet");
  auto io = [&](onnx::ValueInfoProto* v, const std::string& name, int64_t channels) {
    v->set_name(name);
    onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    onnx::TensorShapeProto* s = t->mutable_shape();
    s->add_dim()->set_dim_param("batch");
    s->add_dim()->set_dim_value(channels);
    if (o.dynamic) {
      s->add_dim()->set_dim_param("height");
      s->add_dim()->set_dim_param("width");
    } else {
      s->add_dim()->set_dim_value(o.height);
      s->add_dim()->set_dim_value(o.width);
    }
  };
  io(gp.add_input(), "input_image", 3);
  Graph g(gp, o.dtype == OnnxDtype::f16);
  Exporter ex(g, net, o);
  const std::string logits = ex.forward("input_image");
  // the last node computes the logits; its output takes the graph output's name
  onnx::NodeProto* last = gp.mutable_node(gp.node_size() - 1);
  BIREF_CHECK_KIND(last->output(0) == logits, ErrorKind::Internal,
                   "ONNX export: the logits are not the last node's output");
  last->set_output(0, "output_image");
  io(gp.add_output(), "output_image", 1);

  OnnxExportReport r;
  r.backbone = cfg.swin.name;
  r.opset = o.opset;
  r.metadata = {
      {"biref.version", BIREF_VERSION},
      {"biref.source", source},
      {"biref.backbone", cfg.swin.name},
      {"biref.config", describe(cfg)},
      {"biref.dtype", o.dtype == OnnxDtype::f16 ? "f16" : "f32"},
      {"biref.deform", o.deform == OnnxDeform::native ? "native" : "decomposed"},
      {"input.size",
       o.dynamic ? str_cat("dynamic (multiples of 32; exported at ", o.width, "x", o.height, ")")
                 : str_cat(o.width, "x", o.height)},
      {"input.layout", "input_image [batch, 3, H, W] float32 RGB, (x/255 - mean)/std"},
      {"input.mean", "0.485,0.456,0.406"},
      {"input.std", "0.229,0.224,0.225"},
      {"output", "output_image [batch, 1, H, W] float32 logits; mask = sigmoid(logits)"},
  };
  for (const auto& [k, v] : r.metadata) {
    onnx::StringStringEntryProto* e = model.add_metadata_props();
    e->set_key(k);
    e->set_value(v);
  }
  r.nodes = gp.node_size();
  r.initializers = gp.initializer_size();

  if (o.check && o.opset <= onnx_max_checked_opset()) {
    try {
      onnx::checker::check_model(model);
      // strict: type checks, and a node whose shapes cannot be inferred is an error
      onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                         onnx::ShapeInferenceOptions(true, 1, true));
    } catch (const std::exception& e) {
      fail_kind(ErrorKind::Internal, "ONNX export: the graph fails the ONNX checker: ", e.what());
    }
    r.checked = true;
  } else {
    r.check_note = o.check ? str_cat("not checked: opset ", o.opset,
                                     " is newer than this build's ONNX library knows (",
                                     onnx_max_checked_opset(), ")")
                           : "not checked (check disabled)";
  }
  const size_t bytes = model.ByteSizeLong();
  BIREF_CHECK(bytes < (size_t(1) << 31), "ONNX export: the graph is ", bytes >> 20,
              " MiB, above protobuf's 2 GiB limit for one file; export --dtype f16");
  AtomicFile out(out_path);
  {
    std::ofstream f(out.temp_path(), std::ios::binary | std::ios::trunc);
    BIREF_CHECK(f && model.SerializeToOstream(&f) && f.flush(), "cannot write '", out_path, "'");
  }
  out.commit();
  r.bytes = int64_t(bytes);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace biref
