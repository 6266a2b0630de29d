// Every optimised CPU kernel against its naive reference on random inputs, odd sizes included.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <tuple>

#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/kernels.h"
#include "ops/ops.h"
#include "test_util.h"

namespace biref {
namespace {

using test::max_abs_diff;
using test::random_tensor;
using test::random_vector;

// Every test of the suite runs once per instruction set this CPU supports (Ops/avx2.Name, ...):
// the CPU backend's own kernels are compiled per level (kernels.h) and each must match.
class Ops : public ::testing::TestWithParam<CpuIsa> {};

std::vector<CpuIsa> supported_isas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa i : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512_bf16})
    if (i <= cpu_isa_supported()) isas.push_back(i);
  return isas;
}

INSTANTIATE_TEST_SUITE_P(Isa, Ops, ::testing::ValuesIn(supported_isas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& p) {
                           return std::string(cpu_isa_name(p.param));
                         });

struct Backends {
  explicit Backends(CpuIsa isa) : cpu(make_cpu_backend(isa)) {}
  std::unique_ptr<Backend> ref = make_ref_backend();
  std::unique_ptr<Backend> cpu;
};

Conv2d random_conv(int in, int out, int k, int stride, int pad, Act act, uint32_t seed) {
  Conv2d c;
  c.name = "test.conv";
  c.in = in, c.out = out, c.k = k, c.stride = stride, c.pad = pad, c.act = act;
  const float s = 1.f / std::sqrt(float(in * k * k));
  c.weight = random_vector(size_t(out) * in * k * k, seed, -s, s);
  c.bias = random_vector(size_t(out), seed + 1, -0.1f, 0.1f);
  return c;
}

Linear random_linear(int in, int out, bool bias, uint32_t seed) {
  Linear l;
  l.name = "test.linear";
  l.in = in, l.out = out;
  const float s = 1.f / std::sqrt(float(in));
  l.weight = random_vector(size_t(out) * in, seed, -s, s);
  if (bias) l.bias = random_vector(size_t(out), seed + 1, -0.1f, 0.1f);
  return l;
}

TEST_P(Ops, LinearWithActivationsStridesAndAccumulate) {
  Backends b(GetParam());
  for (Act act : {Act::None, Act::Relu, Act::Gelu, Act::Sigmoid}) {
    for (int rows : {1, 7, 53}) {
      const int in = 37, out = 29, ldx = 41, ldy = 33;
      Linear l = random_linear(in, out, act != Act::Sigmoid, 3);
      Tensor x = random_tensor({rows, ldx}, 5);
      Tensor y0 = random_tensor({rows, ldy}, 6), y1 = Tensor::empty(y0.shape);
      std::copy(y0.data, y0.data + y0.numel(), y1.data);
      for (bool acc : {false, true}) {
        b.ref->linear(l, x.data, rows, ldx, y0.data, ldy, act, acc);
        b.cpu->linear(l, x.data, rows, ldx, y1.data, ldy, act, acc);
        EXPECT_LE(max_abs_diff(y0, y1), 2e-5) << "act " << int(act) << " rows " << rows;
      }
    }
  }
}

// A convolution of the tests: input [B, H, W, in] -> out channels, k×k, stride, pad, act.
struct ConvCase {
  int B, H, W, in, out, k, stride, pad;
  Act act;
  Conv2d conv(uint32_t seed) const { return random_conv(in, out, k, stride, pad, act, seed); }
  Tensor output() const {
    return Tensor::empty({B, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1, out});
  }
};

TEST_P(Ops, Conv2dShapesStridesAndActivations) {
  Backends b(GetParam());
  using Case = ConvCase;
  for (const Case& c :
       {Case{1, 9, 13, 5, 7, 3, 1, 1, Act::Relu}, Case{2, 8, 12, 3, 6, 4, 4, 0, Act::None},
        Case{1, 5, 7, 11, 3, 1, 1, 0, Act::Sigmoid}, Case{1, 11, 9, 4, 9, 7, 1, 3, Act::None},
        // one output channel (biref's own kernel), with and without activation
        Case{2, 13, 7, 32, 1, 3, 1, 1, Act::None}, Case{1, 6, 9, 16, 1, 3, 1, 1, Act::Relu},
        Case{1, 6, 9, 48, 1, 1, 1, 0, Act::Sigmoid}, Case{1, 10, 21, 16, 1, 7, 1, 3, Act::None}}) {
    Conv2d conv = c.conv(11);
    Tensor x = random_tensor({c.B, c.H, c.W, c.in}, 12);
    Tensor y0 = c.output(), y1 = Tensor::empty(y0.shape);
    b.ref->conv2d(conv, x, y0);
    b.cpu->conv2d(conv, x, y1);
    EXPECT_LE(max_abs_diff(y0, y1), 2e-5) << "k " << c.k;
  }
}

TEST_P(Ops, LayerNorm) {
  Backends b(GetParam());
  LayerNorm ln;
  ln.dim = 45;
  ln.weight = random_vector(45, 1, 0.5f, 1.5f);
  ln.bias = random_vector(45, 2);
  Tensor x = random_tensor({17, 45}, 3, -4.f, 6.f);
  Tensor y0 = Tensor::empty(x.shape), y1 = Tensor::empty(x.shape);
  b.ref->layer_norm(ln, x.data, 17, y0.data);
  b.cpu->layer_norm(ln, x.data, 17, y1.data);
  EXPECT_LE(max_abs_diff(y0, y1), 1e-5);
}

TEST_P(Ops, WindowPartitionReverseAndAttention) {
  Backends b(GetParam());
  // odd grids that need padding, with and without shift, window 7 and 12; head width 32 (every
  // Swin v1 model: the register-tiled kernel, 49 or 144 tokens per window) and others
  struct Case {
    int B, h, w, window, shift, heads, hd;
  };
  for (const Case& c : {Case{1, 9, 11, 7, 0, 2, 8}, Case{2, 9, 11, 7, 3, 3, 4},
                        Case{1, 13, 5, 12, 6, 1, 16}, Case{1, 14, 14, 7, 3, 2, 5},
                        Case{2, 15, 10, 7, 3, 3, 32}, Case{1, 14, 14, 7, 0, 1, 32},
                        Case{1, 26, 13, 12, 6, 2, 32}, Case{2, 12, 24, 12, 0, 3, 32}}) {
    const WindowGeometry g = window_geometry(c.h, c.w, c.window, c.shift);
    const int C = c.heads * c.hd;
    Tensor x = random_tensor({c.B, c.h, c.w, C}, 21);
    Tensor w0 = Tensor::empty({c.B, g.windows(), g.tokens(), C}), w1 = Tensor::empty(w0.shape);
    b.ref->window_partition(x, g, w0);
    b.cpu->window_partition(x, g, w1);
    ASSERT_EQ(max_abs_diff(w0, w1), 0.0);

    Tensor qkv = random_tensor({c.B, g.windows(), g.tokens(), 3 * C}, 22, -2.f, 2.f);
    auto bias = random_vector(size_t(c.heads) * g.tokens() * g.tokens(), 23);
    Tensor a0 = Tensor::empty(w0.shape), a1 = Tensor::empty(w0.shape);
    b.ref->window_attention(qkv.data, c.B, g, c.heads, c.hd, bias.data(), a0.data);
    b.cpu->window_attention(qkv.data, c.B, g, c.heads, c.hd, bias.data(), a1.data);
    EXPECT_LE(max_abs_diff(a0, a1), 1e-5) << "window " << c.window << " shift " << c.shift;

    Tensor x0 = random_tensor(x.shape, 24), x1 = Tensor::empty(x.shape);
    std::copy(x0.data, x0.data + x0.numel(), x1.data);
    b.ref->window_reverse_add(a0, g, x0);
    b.cpu->window_reverse_add(a0, g, x1);
    EXPECT_EQ(max_abs_diff(x0, x1), 0.0);
  }
}

TEST_P(Ops, ShiftMaskGivesZeroWeightAcrossRegions) {
  // With one token per region pair differing only in v, a masked key must not leak into the output.
  auto ref = make_ref_backend();
  const WindowGeometry g = window_geometry(7, 7, 7, 3);  // one window covering all three regions
  const int C = 1, N = g.tokens();
  std::vector<float> qkv(size_t(N) * 3 * C, 0.f), bias(size_t(N) * N, 0.f), out(size_t(N) * C);
  for (int m = 0; m < N; ++m) qkv[size_t(m) * 3 + 2] = float(m);  // v = token index
  ref->window_attention(qkv.data(), 1, g, 1, 1, bias.data(), out.data());
  // hp = 7, w = 7, s = 3: regions are rows/cols [0, 4) and [4, 7). Token 0 attends (with equal
  // weights, q = k = 0) to the 16 tokens of rows 0-3 × cols 0-3 only: mean index 12, where the
  // unmasked window would give 24.
  EXPECT_NEAR(out[0], 12.f, 1e-5);
  auto cpu = make_cpu_backend(GetParam());
  std::vector<float> out1(out.size());
  cpu->window_attention(qkv.data(), 1, g, 1, 1, bias.data(), out1.data());
  EXPECT_LE(max_abs_diff(out.data(), out1.data(), N), 1e-5);
}

TEST_P(Ops, PatchMergeOddSizes) {
  Backends b(GetParam());
  for (auto [h, w] : {std::pair{7, 9}, std::pair{8, 6}}) {
    Tensor x = random_tensor({2, h, w, 5}, 31);
    Tensor y0 = Tensor::empty({2, (h + 1) / 2, (w + 1) / 2, 20}), y1 = Tensor::empty(y0.shape);
    b.ref->patch_merge(x, y0);
    b.cpu->patch_merge(x, y1);
    EXPECT_EQ(max_abs_diff(y0, y1), 0.0);
  }
}

TEST_P(Ops, ResizeBilinearAlignCorners) {
  Backends b(GetParam());
  for (auto [ho, wo] : {std::pair{13, 29}, std::pair{4, 3}, std::pair{1, 1}, std::pair{32, 32}}) {
    Tensor x = random_tensor({2, 7, 11, 5}, 41);
    Tensor y0 = Tensor::empty({2, ho, wo, 5}), y1 = Tensor::empty(y0.shape);
    b.ref->resize_bilinear_ac(x, y0);
    b.cpu->resize_bilinear_ac(x, y1);
    EXPECT_LE(max_abs_diff(y0, y1), 2e-6) << ho << "x" << wo;
  }
  // align_corners=True keeps the corners exactly
  Tensor x = random_tensor({1, 5, 6, 1}, 42), y = Tensor::empty({1, 9, 17, 1});
  b.cpu->resize_bilinear_ac(x, y);
  EXPECT_EQ(y.data[0], x.data[0]);
  EXPECT_EQ(y.data[9 * 17 - 1], x.data[5 * 6 - 1]);
}

TEST_P(Ops, ConcatPatchesPoolBroadcastAddGate) {
  Backends b(GetParam());
  Tensor p1 = random_tensor({2, 3, 5, 4}, 51), p2 = random_tensor({2, 3, 5, 7}, 52);
  Tensor c0 = Tensor::empty({2, 3, 5, 11}), c1 = Tensor::empty(c0.shape);
  b.ref->concat_channels({&p1, &p2}, c0);
  b.cpu->concat_channels({&p1, &p2}, c1);
  EXPECT_EQ(max_abs_diff(c0, c1), 0.0);

  Tensor img = random_tensor({2, 12, 20, 3}, 53);
  Tensor q0 = Tensor::empty({2, 3, 5, 3 * 16}), q1 = Tensor::empty(q0.shape);
  b.ref->image_patches(img, 4, q0);
  b.cpu->image_patches(img, 4, q1);
  EXPECT_EQ(max_abs_diff(q0, q1), 0.0);
  // channel c·g² + row·g + col at (i, j) is image pixel (row·h + i, col·w + j) of channel c
  EXPECT_EQ(q0.data[(1 * 3 * 5 + 2 * 5 + 3) * 48 + 2 * 16 + 3 * 4 + 1],
            img.data[((1 * 12 + 3 * 3 + 2) * 20 + 1 * 5 + 3) * 3 + 2]);

  Tensor g0 = Tensor::empty({2, 1, 1, 11}), g1 = Tensor::empty(g0.shape);
  b.ref->global_avg_pool(c0, g0);
  b.cpu->global_avg_pool(c0, g1);
  EXPECT_LE(max_abs_diff(g0, g1), 1e-6);

  Tensor y0 = Tensor::zeros({2, 3, 5, 15}), y1 = Tensor::zeros(y0.shape);
  b.ref->broadcast_channels(g0, y0, 4);
  b.cpu->broadcast_channels(g0, y1, 4);
  EXPECT_EQ(max_abs_diff(y0, y1), 0.0);

  b.ref->add(c0, c0);
  b.cpu->add(c1, c1);
  EXPECT_EQ(max_abs_diff(c0, c1), 0.0);

  Tensor gate = random_tensor({2, 3, 5, 1}, 54, 0.f, 1.f);
  b.ref->mul_gate(gate, c0);
  b.cpu->mul_gate(gate, c1);
  EXPECT_EQ(max_abs_diff(c0, c1), 0.0);
}

TEST_P(Ops, DeformableConvAllKernelSizesAndBorders) {
  Backends b(GetParam());
  for (int k : {1, 3, 7}) {
    for (float offset_scale : {0.f, 0.7f, 6.f}) {  // 6: many samples fall outside the image
      DeformConv d;
      d.name = "test.deform";
      d.k = k;
      d.pad = k / 2;
      d.regular = random_conv(6, 10, k, 1, d.pad, Act::Relu, 61 + k);
      const int B = 2, H = 9, W = 11, Cy = 14, c_off = 3;
      Tensor x = random_tensor({B, H, W, 6}, 62);
      Tensor om = random_tensor({B, H, W, 3 * k * k}, 63, -offset_scale - 0.f, offset_scale + 0.f);
      for (int64_t i = 0; i < om.numel(); ++i)  // mask logits in a sane range
        if (i % (3 * k * k) >= 2 * k * k) om.data[i] = om.data[i] / (offset_scale + 1.f);
      Tensor y0 = Tensor::zeros({B, H, W, Cy}), y1 = Tensor::zeros(y0.shape);
      b.ref->deform_conv(d, x, om, y0, c_off);
      b.cpu->deform_conv(d, x, om, y1, c_off);
      EXPECT_LE(max_abs_diff(y0, y1), 2e-5) << "k " << k << " offsets " << offset_scale;
      // channels outside the slice are untouched
      EXPECT_EQ(y1.data[0], 0.f);
      EXPECT_EQ(y1.data[Cy - 1], 0.f);
    }
  }
}

TEST_P(Ops, DeformableConvWithZeroOffsetsIsAConvolution) {
  // offsets 0 and mask logits 0 (mask = 2·sigmoid(0) = 1): an ordinary convolution
  Backends b(GetParam());
  DeformConv d;
  d.k = 3;
  d.pad = 1;
  d.regular = random_conv(4, 5, 3, 1, 1, Act::None, 71);
  Tensor x = random_tensor({1, 6, 7, 4}, 72);
  Tensor om = Tensor::zeros({1, 6, 7, 27});
  Tensor y0 = Tensor::empty({1, 6, 7, 5}), y1 = Tensor::empty(y0.shape);
  b.cpu->deform_conv(d, x, om, y0, 0);
  b.ref->conv2d(d.regular, x, y1);
  EXPECT_LE(max_abs_diff(y0, y1), 2e-5);
}

}  // namespace
}  // namespace biref

#include "ops/cpu/vec_math.h"

namespace biref {
namespace {

TEST(VecMath, FastExpMatchesStdExp) {
  double worst = 0;
  for (float x = -87.f; x <= 88.f; x += 0.001953125f) {
    const double ref = std::exp(double(x));
    test::keep_max(worst, std::fabs(double(cpu::fast_exp(x)) - ref) / ref);  // keeps a NaN
  }
  std::printf("fast_exp max relative error %.2e\n", worst);
  EXPECT_LE(worst, 3e-7);
  EXPECT_EQ(cpu::fast_exp(0.f), 1.f);
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

// An ASPP case: 64 input channels and a 7×7 branch make the CPU backend's tiles (~670
// positions) smaller than the 2×20×21 positions here, so several tiles and a partial one run.
// `planes` odd: a concat of odd width (the BF16 tile's padding pair half).
struct AsppCase {
  static constexpr int B = 2, H = 20, W = 21, Ci = 64;
  int planes;
  std::array<DeformConv, 4> d;
  std::array<Tensor, 4> om;
  Conv2d conv1;
  Tensor x = random_tensor({B, H, W, Ci}, 100);
  Tensor pooled;
  explicit AsppCase(int planes_ = 16)
      : planes(planes_),
        conv1(random_conv(5 * planes, 8, 1, 1, 0, Act::Relu, 99)),
        pooled(random_tensor({B, 1, 1, planes}, 101, 0.f, 1.f)) {
    const int ks[4] = {1, 1, 3, 7};
    for (int i = 0; i < 4; ++i) {
      d[i].k = ks[i];
      d[i].pad = ks[i] / 2;
      d[i].regular = random_conv(Ci, planes, ks[i], 1, d[i].pad, Act::Relu, 80 + i);
      d[i].offset_mask = random_conv(Ci, 3 * ks[i] * ks[i], ks[i], 1, d[i].pad, Act::None, 70 + i);
      om[i] = random_tensor({B, H, W, 3 * ks[i] * ks[i]}, 90 + i, -1.5f, 1.5f);
    }
  }
  Tensor run(Backend& be) const {
    Tensor y = Tensor::empty({B, H, W, 8});
    be.aspp_deformable({&d[0], &d[1], &d[2], &d[3]}, {&om[0], &om[1], &om[2], &om[3]}, x, pooled,
                       conv1, y);
    return y;
  }
};

TEST_P(Ops, FusedAsppMatchesTheComposedReference) {
  const AsppCase c;
  auto ref = make_ref_backend();
  auto cpu = make_cpu_backend(GetParam());
  EXPECT_LE(max_abs_diff(c.run(*ref), c.run(*cpu)), 2e-5);
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

TEST_P(Ops, ConvPairFusedInBandsMatchesTwoConvolutions) {
  // image (3 channels) -> 3×3 to 32 or 80 -> 3×3 to 1, batch 2: heights within one of the CPU
  // kernel's 32-row ranges and across several (its ring of rows wrapping, rows recomputed at the
  // ranges' edges), widths that are and are not multiples of its pixel tiles, and 80 channels
  // (a whole channel tile and a narrower one)
  auto ref = make_ref_backend();
  auto cpu = make_cpu_backend(GetParam());
  struct Case {
    int H, W, Cm;
    Act act;
  };
  for (const Case& c : {Case{5, 13, 32, Act::None}, Case{8, 13, 32, Act::Relu},
                        Case{19, 13, 32, Act::None}, Case{70, 27, 80, Act::Relu},
                        Case{9, 13, 32, Act::Gelu}, Case{6, 13, 32, Act::Sigmoid}}) {
    // GELU / sigmoid between the two are not the banded kernel's: it must fall back, correctly
    Conv2d a = random_conv(3, c.Cm, 3, 1, 1, c.act, 110);
    Conv2d b = random_conv(c.Cm, 1, 3, 1, 1, Act::None, 111);
    Tensor x = random_tensor({2, c.H, c.W, 3}, 112);
    Tensor y0 = Tensor::empty({2, c.H, c.W, 1}), y1 = Tensor::empty(y0.shape);
    ref->conv_pair(a, b, x, y0);
    cpu->conv_pair(a, b, x, y1);
    EXPECT_LE(max_abs_diff(y0, y1), 2e-5) << "H " << c.H << " Cm " << c.Cm << " act " << int(c.act);
  }
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

TEST_P(Ops, WindowOpsInBandsEqualTheWholeGrid) {
  // partition + attention + reverse over bands of window rows give what one pass over all
  // windows gives, with the shift mask's regions taken from the global window position; head
  // width 4 (plain loops) and 32 (the register-tiled kernels, and BF16's where the level has it)
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(make_ref_backend());
  backends.push_back(make_cpu_backend(GetParam()));
  if (GetParam() >= CpuIsa::avx512_bf16)
    backends.push_back(make_cpu_backend(GetParam(), Precision::bf16));
  for (int hd : {4, 32}) {
    for (auto& be : backends) {
      const WindowGeometry g = window_geometry(17, 12, 7, 3);  // 3 window rows (padded to 21)
      const int heads = 2, C = heads * hd, B = 2;
      Tensor x = random_tensor({B, g.h, g.w, C}, 130);
      auto bias = random_vector(size_t(heads) * g.tokens() * g.tokens(), 131);
      // whole grid
      Tensor win = Tensor::empty({B, g.windows(), g.tokens(), C});
      be->window_partition(x, g, win);
      Tensor qkv = random_tensor({B, g.windows(), g.tokens(), 3 * C}, 132);
      Tensor att = Tensor::empty(win.shape);
      be->window_attention(qkv.data, B, g, heads, hd, bias.data(), att.data);
      Tensor whole = Tensor::zeros(x.shape);
      be->window_reverse_add(att, g, whole);
      // bands of one and two window rows; qkv rows taken from the same windows
      Tensor banded = Tensor::zeros(x.shape);
      for (auto [r0, n] : {std::pair{0, 1}, std::pair{1, 2}}) {
        const WindowGeometry gb = g.band(r0, n);
        Tensor wb = Tensor::empty({B, gb.windows(), gb.tokens(), C});
        be->window_partition(x, gb, wb);
        for (int b = 0; b < B; ++b)  // the band's windows are rows r0.. of each image's windows
          for (int64_t i = 0; i < int64_t(gb.windows()) * gb.tokens() * C; ++i)
            ASSERT_EQ(
                wb.data[int64_t(b) * gb.windows() * gb.tokens() * C + i],
                win.data[(int64_t(b) * g.windows() + int64_t(r0) * g.nww()) * g.tokens() * C + i]);
        Tensor qb = Tensor::empty({B, gb.windows(), gb.tokens(), 3 * C});
        for (int b = 0; b < B; ++b)
          std::copy_n(
              qkv.data + (int64_t(b) * g.windows() + int64_t(r0) * g.nww()) * g.tokens() * 3 * C,
              int64_t(gb.windows()) * gb.tokens() * 3 * C,
              qb.data + int64_t(b) * gb.windows() * gb.tokens() * 3 * C);
        Tensor ab = Tensor::empty(wb.shape);
        be->window_attention(qb.data, B, gb, heads, hd, bias.data(), ab.data);
        be->window_reverse_add(ab, gb, banded);
      }
      EXPECT_LE(max_abs_diff(whole, banded), 1e-6) << be->name() << " head width " << hd;
    }
  }
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

// Precision::bf16's linears and k×k convolutions (the BF16 GEMM over columns) against the
// reference on operands already rounded to bfloat16, so only the float32 sums differ; then on
// unrounded input, where the bf16 path must differ from float32 (it ran) by the rounding only.
std::vector<float> bf16_rounded(std::vector<float> v) {
  for (float& x : v) x = cpu::from_bf16(cpu::to_bf16(x));
  return v;
}
void round_bf16(Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = cpu::from_bf16(cpu::to_bf16(t.data[i]));
}

TEST(OpsBf16, PreparedLinearsAndConvolutionsRunInBf16) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  auto ref = make_ref_backend();
  auto bf = make_cpu_backend(CpuIsa::avx512_bf16, Precision::bf16);
  auto f32 = make_cpu_backend(CpuIsa::avx512_bf16, Precision::fp32);
  for (Act act : {Act::None, Act::Gelu}) {
    for (int rows : {1, 53}) {
      Linear l = random_linear(37, 29, true, 3);
      l.weight = bf16_rounded(l.weight);
      bf->prepare(l);
      Tensor x = random_tensor({rows, 41}, 5);
      round_bf16(x);
      Tensor y0 = random_tensor({rows, 33}, 6), y1 = Tensor::empty(y0.shape);
      std::copy(y0.data, y0.data + y0.numel(), y1.data);
      for (bool acc : {false, true}) {
        ref->linear(l, x.data, rows, 41, y0.data, 33, act, acc);
        bf->linear(l, x.data, rows, 41, y1.data, 33, act, acc);
        EXPECT_LE(max_abs_diff(y0, y1), 1e-5) << "act " << int(act) << " rows " << rows;
      }
    }
  }
  using Case = ConvCase;
  for (const Case& c :
       {Case{1, 9, 13, 5, 7, 3, 1, 1, Act::Relu}, Case{2, 8, 12, 3, 6, 4, 4, 0, Act::None},
        Case{1, 11, 9, 20, 70, 7, 1, 3, Act::None}, Case{2, 10, 7, 33, 16, 3, 2, 1, Act::Relu},
        Case{1, 5, 7, 64, 24, 1, 1, 0, Act::Sigmoid},
        // read in place (implicit GEMM): k 7 above, and here k 3, batch 2, two bands of rows
        Case{2, 80, 70, 24, 40, 3, 1, 1, Act::Relu}}) {
    Conv2d conv = c.conv(11);
    conv.weight = bf16_rounded(conv.weight);
    bf->prepare(conv);
    Tensor x = random_tensor({c.B, c.H, c.W, c.in}, 12);
    round_bf16(x);
    Tensor y0 = c.output(), y1 = Tensor::empty(y0.shape), y2 = Tensor::empty(y0.shape),
           y3 = Tensor::empty(y0.shape);
    ref->conv2d(conv, x, y0);
    bf->conv2d(conv, x, y1);
    EXPECT_LE(max_abs_diff(y0, y1), 2e-5) << "k " << c.k << " stride " << c.stride;
    // unrounded input: the bf16 path rounds it (differs from float32, by little)
    Tensor xu = random_tensor({c.B, c.H, c.W, c.in}, 13);
    bf->conv2d(conv, xu, y2);
    f32->conv2d(conv, xu, y3);
    const double d = max_abs_diff(y2, y3);
    EXPECT_GT(d, 0.0) << "k " << c.k << ": the bf16 path did not run";
    EXPECT_LE(d, 5e-2) << "k " << c.k;
  }
  EXPECT_GT(bf->weight_bytes(), 0u);
}

// The fused ASPP at bf16 (the deformable GEMMs and the 1×1 head on the BF16 GEMM, written into
// the concat tile's strided rows): the reference within the bf16 rounding of its operands.
TEST(OpsBf16, FusedAsppWithinTheRoundingOfItsOperands) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  auto ref = make_ref_backend();
  auto bf = make_cpu_backend(CpuIsa::avx512_bf16, Precision::bf16);
  for (int planes : {16, 15}) {
    AsppCase c(planes);
    for (const DeformConv& d : c.d) bf->prepare(d);
    bf->prepare(c.conv1);
    const Tensor y0 = c.run(*ref), y1 = c.run(*bf);
    double scale = 0;
    for (int64_t i = 0; i < y0.numel(); ++i)
      scale = std::max(scale, double(std::fabs(y0.data[i])));
    const double rel = max_abs_diff(y0, y1) / scale;
    std::printf("fused ASPP at bf16, %d planes: max error %.2e of the output's scale\n", planes,
                rel);
    EXPECT_GT(rel, 0.0);  // the bf16 path ran
    EXPECT_LE(rel, 2e-2) << planes << " planes";
  }
}

// Precision::bf16's window attention (q·kᵀ and P·V on vdpbf16ps, softmax in float32): the
// float32 reference within the rounding of q, k, v and the weights to bfloat16, at both window
// sizes, with and without the shift mask, windows that need padding, batch 2. A masked key gets
// exactly zero weight here too; another head width runs the float32 kernel.
TEST(OpsBf16, WindowAttentionWithinTheRoundingOfItsOperands) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  auto ref = make_ref_backend();
  auto bf = make_cpu_backend(CpuIsa::avx512_bf16, Precision::bf16);
  auto f32 = make_cpu_backend(CpuIsa::avx512_bf16, Precision::fp32);
  struct Case {
    int B, h, w, window, shift, heads;
  };
  for (const Case& c : {Case{2, 15, 10, 7, 3, 3}, Case{1, 14, 14, 7, 0, 2},
                        Case{1, 26, 13, 12, 6, 2}, Case{1, 12, 24, 12, 0, 1}}) {
    const WindowGeometry g = window_geometry(c.h, c.w, c.window, c.shift);
    const int C = c.heads * 32;
    const Tensor qkv = random_tensor({c.B, g.windows(), g.tokens(), 3 * C}, 170, -2.f, 2.f);
    const auto bias = random_vector(size_t(c.heads) * g.tokens() * g.tokens(), 171);
    Tensor a0 = Tensor::empty({c.B, g.windows(), g.tokens(), C}), a1 = Tensor::empty(a0.shape),
           a2 = Tensor::empty(a0.shape);
    ref->window_attention(qkv.data, c.B, g, c.heads, 32, bias.data(), a0.data);
    bf->window_attention(qkv.data, c.B, g, c.heads, 32, bias.data(), a1.data);
    f32->window_attention(qkv.data, c.B, g, c.heads, 32, bias.data(), a2.data);
    double scale = 0;
    for (int64_t i = 0; i < a0.numel(); ++i)
      scale = std::max(scale, double(std::fabs(a0.data[i])));
    const double rel = max_abs_diff(a0, a1) / scale;
    std::printf("window attention at bf16, window %d shift %d: max error %.2e of the output's "
                "scale\n", c.window, c.shift, rel);
    // the bf16 kernel ran: it differs from the float32 one by the rounding (≈ 1e-3), not by the
    // float32 kernels' 1e-7
    EXPECT_GT(max_abs_diff(a1, a2) / scale, 1e-4) << "window " << c.window;
    EXPECT_LE(rel, 2e-2) << "window " << c.window << " shift " << c.shift;
  }
  // q = k = 0: token 0 weighs the 16 tokens of its region equally (v: the token's index, exact
  // in bfloat16): mean 12, where a leak across the mask would move it
  const WindowGeometry g = window_geometry(7, 7, 7, 3);
  const int N = g.tokens();
  std::vector<float> qkv(size_t(N) * 96, 0.f), zero(size_t(N) * N, 0.f), out(size_t(N) * 32);
  for (int m = 0; m < N; ++m)
    for (int d = 0; d < 32; ++d) qkv[size_t(m) * 96 + 64 + d] = float(m);
  bf->window_attention(qkv.data(), 1, g, 1, 32, zero.data(), out.data());
  for (int d = 0; d < 32; ++d) EXPECT_EQ(out[d], 12.f) << "channel " << d;
  // a NaN in one key reaches every query's output (no shift: no query is masked from it), in
  // both precisions: never a silent zero weight
  qkv[size_t(5) * 96 + 32 + 7] = NAN;
  const WindowGeometry unshifted = window_geometry(7, 7, 7, 0);
  for (auto* be : {bf.get(), f32.get()}) {
    std::vector<float> o(out.size(), 0.f);
    be->window_attention(qkv.data(), 1, unshifted, 1, 32, zero.data(), o.data());
    EXPECT_EQ(std::count_if(o.begin(), o.end(), [](float v) { return std::isnan(v); }),
              std::ptrdiff_t(o.size()))
        << be->name();
  }
  // head width 16: the float32 kernel, bit for bit
  const WindowGeometry g16 = window_geometry(9, 11, 7, 3);
  const Tensor q16 = random_tensor({1, g16.windows(), g16.tokens(), 3 * 32}, 172);
  const auto b16 = random_vector(size_t(2) * g16.tokens() * g16.tokens(), 173);
  Tensor o0 = Tensor::empty({1, g16.windows(), g16.tokens(), 32}), o1 = Tensor::empty(o0.shape);
  f32->window_attention(q16.data, 1, g16, 2, 16, b16.data(), o0.data);
  bf->window_attention(q16.data, 1, g16, 2, 16, b16.data(), o1.data);
  EXPECT_EQ(max_abs_diff(o0, o1), 0.0);
}

// Precision::bf16's fused MLP (the hidden layer in bfloat16 blocks in cache) equals fc1 with
// GELU then fc2 added into the residual through a float32 hidden layer, bit for bit: fc2 rounds
// what it reads to bfloat16 exactly as the fused kernel stores it. Row counts that are not whole
// blocks or tiles, an odd hidden width (its zero padding pair half); a wide MLP is not fused.
TEST(OpsBf16, FusedMlpEqualsTheTwoLinearsBitForBit) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  auto bf = make_cpu_backend(CpuIsa::avx512_bf16, Precision::bf16);
  auto f32 = make_cpu_backend(CpuIsa::avx512_bf16, Precision::fp32);
  for (auto [C, hidden, rows] : {std::tuple{96, 384, 101}, std::tuple{20, 75, 7}}) {
    Linear fc1 = random_linear(C, hidden, true, 160), fc2 = random_linear(hidden, C, true, 161);
    bf->prepare(fc1);
    bf->prepare(fc2);
    const Tensor h = random_tensor({rows, C}, 162);
    Tensor x0 = random_tensor({rows, C}, 163), x1 = Tensor::empty(x0.shape),
           hid = Tensor::empty({rows, hidden});
    std::copy(x0.data, x0.data + x0.numel(), x1.data);
    bf->linear(fc1, h.data, rows, C, hid.data, hidden, Act::Gelu, false);
    bf->linear(fc2, hid.data, rows, hidden, x0.data, C, Act::None, true);
    ASSERT_TRUE(bf->fused_mlp(fc1, fc2, h.data, rows, x1.data)) << "C " << C;
    EXPECT_EQ(max_abs_diff(x0, x1), 0.0) << "C " << C;
    EXPECT_FALSE(f32->fused_mlp(fc1, fc2, h.data, rows, x1.data));  // FP32: the caller's linears
  }
  Linear wide1 = random_linear(768, 3072, true, 164), wide2 = random_linear(3072, 768, true, 165);
  bf->prepare(wide1);
  bf->prepare(wide2);
  const Tensor h = random_tensor({3, 768}, 166);
  Tensor x = random_tensor({3, 768}, 167);
  EXPECT_FALSE(bf->fused_mlp(wide1, wide2, h.data, 3, x.data));  // both weights: 9 MB
}

// Precision::bf16's deformable columns, sampled straight into bfloat16, are the float32
// columns rounded: at most one bfloat16 step apart where the two sum the corners in a different
// order (FMA contraction), and equal almost everywhere. Taps outside the image, on its borders,
// odd channel counts (masked tails) and an odd k²·Ci (the zero padding to kp) included.
TEST(OpsBf16, DeformColumnsAreTheFloat32ColumnsRounded) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  const cpu::Kernels& k32 = cpu::kernels(CpuIsa::avx512);
  int64_t values = 0, differ = 0, zeros = 0;
  for (auto [k, Ci] : {std::pair{7, 64}, std::pair{3, 37}, std::pair{1, 96}}) {
    const int B = 2, H = 11, W = 13;
    DeformConv d;
    d.k = k;
    d.pad = k / 2;
    const Tensor x = random_tensor({B, H, W, Ci}, 140);
    const Tensor om = random_tensor({B, H, W, 3 * k * k}, 141, -2.5f, 2.5f);
    const int64_t K = int64_t(k) * k * Ci, kp = (K + 1) / 2 * 2;
    const int64_t p0 = 5, np = B * H * W - 9;  // a tile that starts and ends inside an image
    std::vector<float> f32(size_t(np * K));
    std::vector<uint16_t> bf(size_t(np * kp), 0xffff);
    k32.deform_sample(d, x, om, p0, np, f32.data());
    cpu::avx512_bf16::deform_columns_bf16(d, x, om, p0, np, kp, bf.data());
    for (int64_t t = 0; t < np; ++t) {
      for (int64_t i = 0; i < K; ++i) {
        const float a = f32[size_t(t * K + i)], b = cpu::from_bf16(bf[size_t(t * kp + i)]);
        const float rounded = cpu::from_bf16(cpu::to_bf16(a));
        ++values;
        zeros += a == 0.f;
        if (b == rounded) continue;
        ++differ;
        // one bfloat16 step: 2^-7 of the value's magnitude
        ASSERT_LE(std::fabs(b - rounded), std::ldexp(std::fabs(a), -7) + 1e-30)
            << "k " << k << " Ci " << Ci << " position " << p0 + t << " column " << i;
      }
      if (kp > K) {
        ASSERT_EQ(bf[size_t(t * kp + K)], 0) << "padding column of position " << p0 + t;
      }
    }
  }
  std::printf("deformable columns in bf16: %lld of %lld differ from the rounded float32 by one "
              "step; %lld zeros\n",
              (long long)differ, (long long)values, (long long)zeros);
  EXPECT_LE(differ, values / 1000);
  EXPECT_GT(zeros, 0);  // taps outside the image were among them
}

}  // namespace
}  // namespace biref
