// The BF16 GEMM (src/ops/cpu/gemm_bf16.h) against a double-precision product of the same
// bf16-rounded operands: the kernel's own error (float32 sums, the epilogue's erf and exp) is
// pinned tightly, and its distance from the float32 product (the bf16 rounding itself) printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "biref/isa.h"
#include "ops/cpu/gemm_bf16.h"
#include "test_util.h"

namespace biref {
namespace {

using cpu::from_bf16;
using cpu::to_bf16;

double act_ref(double v, Act act) {
  switch (act) {
    case Act::None:
      return v;
    case Act::Relu:
      return v > 0 ? v : 0;
    case Act::Gelu:
      return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    case Act::Sigmoid:
      return 1 / (1 + std::exp(-v));
  }
  return v;
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(to_bf16(1.f), 0x3f80);
  EXPECT_EQ(from_bf16(to_bf16(1.f + 1.f / 256)), 1.f);              // a tie: to even (down)
  EXPECT_EQ(from_bf16(to_bf16(1.f + 3.f / 256)), 1.f + 4.f / 256);  // a tie: to even (up)
  EXPECT_EQ(from_bf16(to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(from_bf16(to_bf16(INFINITY))));
}

// pack_bf16's layout, element by element, against the formula gemm_bf16.h gives: odd k (the
// zero pair half), n not a multiple of 16 or 64 (zero columns, a narrower last panel).
TEST(GemmBf16, PackedLayoutIsTheDocumentedOne) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  struct Shape {
    int64_t n, k;
  };
  for (const Shape& s : {Shape{1, 1}, Shape{29, 37}, Shape{200, 190}, Shape{147, 3136}}) {
    const auto w = test::random_vector(size_t(s.n * s.k), 5, -3.f, 3.f);
    const cpu::PackedBf16 p = cpu::avx512_bf16::pack_bf16(w.data(), s.n, s.k, {});
    const int64_t kp = (s.k + 1) / 2 * 2, n16 = (s.n + 15) / 16 * 16;
    ASSERT_EQ(p.kp, kp);
    ASSERT_EQ(int64_t(p.w.size()), n16 * kp);
    for (int64_t col = 0; col < n16; ++col) {
      const int64_t n0 = col / 64 * 64, wp = std::min<int64_t>(64, n16 - n0), c = col - n0;
      for (int64_t kk = 0; kk < kp; ++kk) {
        const uint16_t want =
            col < s.n && kk < s.k ? to_bf16(w[size_t(col * s.k + kk)]) : uint16_t(0);
        ASSERT_EQ(p.w[size_t(n0 * kp + ((kk / 2) * wp + c) * 2 + kk % 2)], want)
            << "n " << s.n << " k " << s.k << " column " << col << " k index " << kk;
      }
    }
  }
}

TEST(GemmBf16, MatchesTheProductOfTheRoundedOperands) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  struct Shape {
    int64_t rows, k, n;
  };
  // tails of every kind: odd k, n not a multiple of 16 or 64, rows not a multiple of 6 or 48,
  // one row, and the models' shapes (Swin-T fc1, the deformable 7×7 GEMM)
  const Shape shapes[] = {{1, 37, 29},   {7, 96, 288},   {53, 33, 17},    {100, 96, 384},
                          {97, 768, 96}, {50, 3136, 64}, {300, 190, 200}, {6, 2, 1}};
  cpu::Bf16Scratch scratch;
  double worst_kernel = 0, worst_bf16 = 0;
  for (const Shape& s : shapes) {
    for (Act act : {Act::None, Act::Relu, Act::Gelu, Act::Sigmoid}) {
      for (bool accumulate : {false, true}) {
        const int64_t ldx = s.k + 3, ldy = s.n + 5;
        const bool has_bias = act != Act::Relu;
        const float scale = 1.f / std::sqrt(float(s.k));
        const auto w = test::random_vector(size_t(s.n * s.k), 1, -scale, scale);
        const auto bias =
            has_bias ? test::random_vector(size_t(s.n), 2, -0.5f, 0.5f) : std::vector<float>{};
        const auto x = test::random_vector(size_t(s.rows * ldx), 3, -2.f, 2.f);
        auto y = test::random_vector(size_t(s.rows * ldy), 4);
        const auto y0 = y;
        const cpu::PackedBf16 p = cpu::avx512_bf16::pack_bf16(w.data(), s.n, s.k, bias);
        cpu::avx512_bf16::gemm_bf16(p, x.data(), s.rows, ldx, y.data(), ldy, act, accumulate,
                                    scratch);
        for (int64_t m = 0; m < s.rows; ++m) {
          for (int64_t j = 0; j < ldy; ++j) {
            const size_t o = size_t(m * ldy + j);
            if (j >= s.n) {  // past the columns: untouched
              ASSERT_EQ(y[o], y0[o]) << "row " << m << " col " << j;
              continue;
            }
            double rounded = has_bias ? bias[j] : 0, exact = rounded, mag = std::fabs(rounded);
            for (int64_t i = 0; i < s.k; ++i) {
              const double xr = from_bf16(to_bf16(x[m * ldx + i])),
                           wr = from_bf16(to_bf16(w[j * s.k + i]));
              rounded += xr * wr;
              exact += double(x[m * ldx + i]) * w[j * s.k + i];
              mag += std::fabs(xr * wr);
            }
            const double base = accumulate ? y0[o] : 0;
            const double want = base + act_ref(rounded, act);
            const double err = std::fabs(y[o] - want) / (mag + std::fabs(base) + 1e-3);
            test::keep_max(worst_kernel, err);
            test::keep_max(worst_bf16, std::fabs(y[o] - (base + act_ref(exact, act))) /
                                           (mag + std::fabs(base) + 1e-3));
            ASSERT_LE(err, 2e-6) << "rows " << s.rows << " k " << s.k << " n " << s.n << " act "
                                 << int(act) << " acc " << accumulate << " at " << m << "," << j
                                 << ": " << y[o] << " vs " << want;
          }
        }
      }
    }
  }
  std::printf(
      "bf16 gemm: kernel error %.2e, distance from the float32 product %.2e (relative "
      "to the sum of |products|)\n",
      worst_kernel, worst_bf16);
  EXPECT_LE(worst_bf16, 1e-2);
}

}  // namespace
}  // namespace biref
