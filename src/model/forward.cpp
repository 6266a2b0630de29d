#include "model/forward.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"

namespace biref {

namespace {

using Clock = std::chrono::steady_clock;

// The ops the model uses, with the FLOP count of each (2 per multiply-accumulate).
struct Runner {
  ForwardContext& ctx;
  Backend& be;
  Arena& pool;

  explicit Runner(ForwardContext& c) : ctx(c), be(c.backend), pool(c.pool) {}

  void dump(const std::string& name, const Tensor& t) {
    if (ctx.dump) ctx.dump(name, t);
  }

  // x: [B, H, W, in] -> [B, Ho, Wo, out]
  Tensor conv(const Conv2d& c, const Tensor& x) {
    const int64_t Ho = (x.dim(1) + 2 * c.pad - c.k) / c.stride + 1;
    const int64_t Wo = (x.dim(2) + 2 * c.pad - c.k) / c.stride + 1;
    Tensor y = pool.empty({x.dim(0), Ho, Wo, c.out});
    be.conv2d(c, x, y);
    ctx.flops += 2.0 * double(x.dim(0) * Ho * Wo) * c.out * c.in * c.k * c.k;
    return y;
  }

  // Rows of x: [..., in] -> y [..., out] (or += into y when accumulate).
  void linear(const Linear& l, const Tensor& x, Tensor& y, Act act = Act::None, bool accumulate = false) {
    const int64_t rows = x.numel() / l.in;
    be.linear(l, x.data, rows, l.in, y.data, l.out, act, accumulate);
    ctx.flops += 2.0 * double(rows) * l.in * l.out;
  }

  Tensor layer_norm(const LayerNorm& ln, const Tensor& x) {
    Tensor y = pool.empty(x.shape);
    be.layer_norm(ln, x.data, x.numel() / ln.dim, y.data);
    return y;
  }

  Tensor resize(const Tensor& x, int64_t h, int64_t w) {
    Tensor y = pool.empty({x.dim(0), h, w, x.dim(3)});
    be.resize_bilinear_ac(x, y);
    return y;
  }

  Tensor concat(const std::vector<const Tensor*>& parts) {
    int64_t c = 0;
    for (const Tensor* t : parts) c += t->dim(3);
    const Tensor& f = *parts[0];
    Tensor y = pool.empty({f.dim(0), f.dim(1), f.dim(2), c});
    be.concat_channels(parts, y);
    return y;
  }

  // ---- Swin Transformer (bb) ----

  // x: [B, h, w, C], updated in place.
  void swin_block(const SwinBlock& blk, const WindowGeometry& g, Tensor& x) {
    const int64_t B = x.dim(0), C = x.dim(3);
    const int hd = int(C) / blk.heads;
    // 1-3. norm1, pad, roll, partition -> windows [B, nW, N, C]
    // 4-6. attention, reverse, roll back, crop, residual
    // A band of window rows at a time (all bands read the same normalised t and add into x at
    // disjoint positions), so qkv and the attention output exist for one band only.
    Tensor t = layer_norm(blk.norm1, x);
    const int64_t tokens_per_row = B * g.nww() * g.tokens();
    const int band_rows = int(std::clamp<int64_t>(ctx.band_tokens / tokens_per_row, 1, g.nwh()));
    for (int r0 = 0; r0 < g.nwh(); r0 += band_rows) {
      const WindowGeometry gb = g.band(r0, std::min(band_rows, g.nwh() - r0));
      Tensor win = pool.empty({B, gb.windows(), gb.tokens(), C});
      be.window_partition(t, gb, win);
      // qkv [B·nW·N, 3C] -> heads -> [B·nW·N, C] -> proj
      Tensor qkv = pool.empty({B, gb.windows(), gb.tokens(), 3 * C});
      linear(blk.qkv, win, qkv);
      Tensor att = pool.empty(win.shape);
      be.window_attention(qkv.data, B, gb, blk.heads, hd, blk.rel_bias.data(), att.data);
      ctx.flops += 4.0 * double(B) * gb.windows() * blk.heads * gb.tokens() * gb.tokens() * hd;
      qkv = Tensor();
      linear(blk.proj, att, win);
      be.window_reverse_add(win, gb, x);
    }
    t = Tensor();
    // 7. x = x + fc2(GELU(fc1(norm2(x)))), per token: in bands of tokens, so the 4C-wide
    // hidden layer (the largest tensor of the backbone) exists for one band only
    const int64_t total = x.numel() / C, band = std::min<int64_t>(total, ctx.band_tokens);
    for (int64_t t0 = 0; t0 < total; t0 += band) {
      const int64_t n = std::min(band, total - t0);
      float* xr = x.data + t0 * C;
      Tensor n2 = pool.empty({n, C});
      be.layer_norm(blk.norm2, xr, n, n2.data);
      if (be.fused_mlp(blk.fc1, blk.fc2, n2.data, n, xr)) {
        ctx.flops += 4.0 * double(n) * blk.fc1.in * blk.fc1.out;
        continue;
      }
      Tensor hid = pool.empty({n, int64_t(blk.fc1.out)});
      linear(blk.fc1, n2, hid, Act::Gelu);
      n2 = Tensor();
      Tensor xv = Tensor::wrap(xr, {n, C});
      linear(blk.fc2, hid, xv, Act::None, /*accumulate=*/true);
    }
  }

  // x: [B, H, W, 3] -> f1..f4 [B, H/4·2^−i, W/4·2^−i, C·2^i]
  std::array<Tensor, 4> swin(const SwinTransformer& bb, const Tensor& x, const std::string& tag) {
    std::array<Tensor, 4> out;
    // patch_embed: conv 4×4 stride 4, then LayerNorm over channels
    Tensor t = conv(bb.patch_embed_proj, x);
    Tensor cur = layer_norm(bb.patch_embed_norm, t);
    t = Tensor();
    for (int i = 0; i < 4; ++i) {
      const SwinStage& st = bb.layers[i];
      const int h = int(cur.dim(1)), w = int(cur.dim(2));
      for (size_t j = 0; j < st.blocks.size(); ++j) {
        const int shift = (j % 2 == 1) ? bb.cfg.window / 2 : 0;
        swin_block(st.blocks[j], window_geometry(h, w, bb.cfg.window, shift), cur);
      }
      out[i] = layer_norm(bb.norms[i], cur);
      dump(str_cat("bb.", tag, ".x", i + 1), out[i]);
      if (st.has_downsample) {
        // patch merging: [B, h, w, C] -> [B, ⌈h/2⌉, ⌈w/2⌉, 4C] -> norm -> reduction -> 2C
        Tensor merged = pool.empty({cur.dim(0), (h + 1) / 2, (w + 1) / 2, 4 * cur.dim(3)});
        be.patch_merge(cur, merged);
        Tensor normed = layer_norm(st.downsample_norm, merged);
        merged = Tensor();
        cur = pool.empty({normed.dim(0), normed.dim(1), normed.dim(2), int64_t(st.downsample_reduction.out)});
        linear(st.downsample_reduction, normed, cur);
      }
    }
    return out;
  }

  // ---- Decoder modules ----

  // x: [B, h, w, 64] -> [B, h, w, 64]
  Tensor aspp(const ASPPDeformable& a, const Tensor& x) {
    const int64_t B = x.dim(0), h = x.dim(1), w = x.dim(2);
    // five branches of 256 channels -> concat (1280) -> conv1 (with bn1, ReLU); the backend
    // runs the branches and conv1 together (the CPU backend tile by tile, never building the
    // concat)
    const std::array<const DeformConv*, 4> branches = {&a.aspp1, &a.aspp_deforms[0],
                                                       &a.aspp_deforms[1], &a.aspp_deforms[2]};
    std::array<Tensor, 4> om;
    for (int i = 0; i < 4; ++i) {
      om[i] = conv(branches[i]->offset_mask, x);  // [B, h, w, 3k²]
      const Conv2d& rc = branches[i]->regular;
      ctx.flops += 2.0 * double(B * h * w) * rc.out * rc.in * rc.k * rc.k;
    }
    Tensor pooled = pool.empty({B, 1, 1, x.dim(3)});
    be.global_avg_pool(x, pooled);
    Tensor g = conv(a.global_avg_pool, pooled);  // [B, 1, 1, 256]
    Tensor y = pool.empty({B, h, w, int64_t(a.conv1.out)});
    be.aspp_deformable(branches, {&om[0], &om[1], &om[2], &om[3]}, x, g, a.conv1, y);
    ctx.flops += 2.0 * double(B * h * w) * a.conv1.out * a.conv1.in;
    return y;
  }

  // x: [B, h, w, in] -> [B, h, w, out]
  // x is taken over (moved in) so it is released right after conv_in.
  Tensor dec_block(const BasicDecBlk& b, Tensor x) {
    Tensor t = conv(b.conv_in, x);
    x = Tensor();
    Tensor a = aspp(b.dec_att, t);
    t = Tensor();
    return conv(b.conv_out, a);
  }

  // image x [B, H, W, 3] -> patches at grid g -> SimpleConvs
  Tensor ipt(const SimpleConvs& s, const Tensor& x, int64_t h, int64_t w) {
    const int g = int(x.dim(1) / h);
    BIREF_CHECK(g * h == x.dim(1) && g * w == x.dim(2), "patch grid does not divide the input");
    Tensor p;
    if (g == 1) {
      p = x;
    } else {
      p = pool.empty({x.dim(0), h, w, x.dim(3) * g * g});
      be.image_patches(x, g, p);
    }
    Tensor t = conv(s.conv1, p);
    p = Tensor();
    return conv(s.conv_out, t);
  }

  // p *= sigmoid(attn(ReLU(BN(conv(p)))))
  void gate(const Decoder& d, int k, Tensor& p) {
    Tensor g = conv(d.gdt_convs[k], p);
    Tensor a = conv(d.gdt_convs_attn[k], g);
    be.mul_gate(a, p);
  }

  Tensor forward(const BiRefNet& net, const Tensor& x) {
    const int64_t H = x.dim(1), W = x.dim(2);
    auto t0 = Clock::now();
    auto lap = [&](const char* name) {
      const auto now = Clock::now();
      ctx.timings.push_back({name, std::chrono::duration<double, std::milli>(now - t0).count()});
      t0 = now;
    };
    // 2. Encoder: the backbone on the full and the half-resolution input.
    std::array<Tensor, 4> f = swin(net.bb, x, "full");
    lap("backbone.full");
    std::array<Tensor, 4> enc;
    {
      Tensor xh = resize(x, H / 2, W / 2);
      std::array<Tensor, 4> g = swin(net.bb, xh, "half");
      for (int i = 0; i < 4; ++i) {
        Tensor gi = resize(g[i], f[i].dim(1), f[i].dim(2));
        g[i] = Tensor();
        enc[i] = concat({&f[i], &gi});
        f[i] = Tensor();
      }
    }
    lap("backbone.half");
    for (int i = 0; i < 3; ++i) dump(str_cat("enc.x", i + 1), enc[i]);
    // context: x4 = cat(x1, x2, x3 resized to x4's size, x4)
    {
      const int64_t h4 = enc[3].dim(1), w4 = enc[3].dim(2);
      Tensor r1 = resize(enc[0], h4, w4), r2 = resize(enc[1], h4, w4), r3 = resize(enc[2], h4, w4);
      enc[3] = concat({&r1, &r2, &r3, &enc[3]});
    }
    dump("enc.x4", enc[3]);
    // 3. Squeeze
    Tensor x4 = dec_block(net.squeeze_module, std::move(enc[3]));
    dump("squeeze", x4);
    lap("squeeze");
    // 4. Decoder
    const Decoder& d = net.decoder;
    Tensor p;
    {
      Tensor ip = ipt(d.ipt_blk[5], x, x4.dim(1), x4.dim(2));
      Tensor in = concat({&x4, &ip});
      x4 = Tensor();
      p = dec_block(d.decoder_block[4], std::move(in));
    }
    dump("dec.block4", p);
    gate(d, 4, p);
    for (int blk = 3; blk >= 1; --blk) {
      const int64_t h = enc[blk - 1].dim(1), w = enc[blk - 1].dim(2);  // x3, x2, x1
      Tensor t = resize(p, h, w);
      p = Tensor();
      Tensor lat = conv(d.lateral_block[blk + 1], enc[blk - 1]);
      enc[blk - 1] = Tensor();  // its last use
      be.add(lat, t);
      lat = Tensor();
      Tensor ip = ipt(d.ipt_blk[blk + 1], x, h, w);
      Tensor in = concat({&t, &ip});
      t = Tensor();
      ip = Tensor();
      p = dec_block(d.decoder_block[blk], std::move(in));
      dump(str_cat("dec.block", blk), p);
      if (blk > 1) gate(d, blk, p);
    }
    // out = conv_out1(cat(interp(p1, (H, W)), ipt_blk1(x))), computed as (see modules.h)
    // interp(conv_out1_dec(p1)) + (ipt_blk1.conv_out ∘ conv_out1_ipt)(ipt_blk1.conv1(x))
    Tensor z = conv(d.conv_out1_dec, p);
    p = Tensor();
    Tensor out = resize(z, H, W);
    z = Tensor();
    {
      // ipt_blk1.conv1 (3 -> 64) then the composed 64 -> 1 head, fused by the backend so the
      // full-resolution 64-channel map need not exist
      const Conv2d &c1 = d.ipt_blk[1].conv1, &c2 = d.ipt_blk1_conv_out;
      Tensor o2 = pool.empty({x.dim(0), H, W, 1});
      be.conv_pair(c1, c2, x, o2);
      ctx.flops += 2.0 * double(x.dim(0) * H * W) * (c1.out * c1.in * c1.k * c1.k + c2.in * c2.k * c2.k);
      be.add(o2, out);
    }
    dump("out", out);
    lap("decoder");
    return out;
  }
};

}  // namespace

Tensor birefnet_forward(const BiRefNet& net, const Tensor& x, ForwardContext& ctx) {
  BIREF_CHECK(x.rank() == 4 && x.dim(3) == 3, "input must be [B, H, W, 3], got ", shape_str(x.shape));
  const int64_t H = x.dim(1), W = x.dim(2);
  BIREF_CHECK(H >= 32 && W >= 32 && H % 32 == 0 && W % 32 == 0, "input size ", W, "x", H,
              " (WxH) is not supported: width and height must be positive multiples of 32");
  ctx.timings.clear();
  ctx.flops = 0;
  Runner r(ctx);
  return r.forward(net, x);
}

}  // namespace biref
