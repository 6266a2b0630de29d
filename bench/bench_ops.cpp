// Micro-benchmarks of the CPU kernels at the shapes BiRefNet runs them (swin_v1_t, 1024² input
// where it fits in a few hundred ms). Run: build/bench/biref_microbench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "ops/cpu/gemm_bf16.h"
#include "ops/ops.h"

namespace biref {
namespace {

Tensor filled(const Shape& s, uint32_t seed) {
  Tensor t = Tensor::empty(s);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = d(rng);
  return t;
}

std::vector<float> filled(size_t n, uint32_t seed, float scale) {
  std::vector<float> v(n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  for (auto& x : v) x = d(rng);
  return v;
}

// Stage-0 MLP fc1 of swin_v1_t at 1024²: 65536 tokens × 96 -> 384, GELU fused.
void BM_LinearFc1Gelu(benchmark::State& st) {
  auto be = make_cpu_backend();
  Linear l;
  l.in = 96;
  l.out = 384;
  l.weight = filled(size_t(96) * 384, 1, 0.1f);
  l.bias = filled(384, 2, 0.1f);
  const int64_t rows = st.range(0);
  Tensor x = filled({rows, 96}, 3), y = Tensor::empty({rows, 384});
  for (auto _ : st) be->linear(l, x.data, rows, 96, y.data, 384, Act::Gelu, false);
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * 96 * 384 * st.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LinearFc1Gelu)->UseRealTime()->Arg(16384)->Arg(65536)->Unit(benchmark::kMillisecond);

// The linears' GEMM at the models' shapes, float32 (oneDNN) against bfloat16 (our AVX512_BF16
// kernel): rows, in, out. swin_v1_t stage 0 fc1 and fc2 at 1024² (a band of 16384 tokens),
// swin_v1_l stage 2 qkv (768 -> 2304, 4096 tokens), the deformable 7×7 GEMM (3136 -> 256).
Linear bench_linear(int64_t in, int64_t out) {
  Linear l;
  l.in = in;
  l.out = out;
  l.weight = filled(size_t(in * out), 1, 0.1f);
  l.bias = filled(size_t(out), 2, 0.1f);
  return l;
}
void linear_args(benchmark::internal::Benchmark* b) {
  b->Args({16384, 96, 384})->Args({16384, 384, 96})->Args({4096, 768, 2304})->Args({4096, 3136, 256});
}
void BM_LinearF32(benchmark::State& st) {
  auto be = make_cpu_backend();
  const int64_t rows = st.range(0), in = st.range(1), out = st.range(2);
  const Linear l = bench_linear(in, out);
  Tensor x = filled({rows, in}, 3), y = Tensor::empty({rows, out});
  for (auto _ : st) be->linear(l, x.data, rows, in, y.data, out, Act::Gelu, false);
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * in * out * st.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LinearF32)->Apply(linear_args)->UseRealTime()->Unit(benchmark::kMillisecond);
void BM_LinearBf16(benchmark::State& st) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) {
    st.SkipWithError("no AVX512_BF16");
    return;
  }
  const int64_t rows = st.range(0), in = st.range(1), out = st.range(2);
  const Linear l = bench_linear(in, out);
  const cpu::PackedBf16 p = cpu::avx512_bf16::pack_bf16(l.weight.data(), out, in, l.bias);
  cpu::Bf16Scratch scratch;
  Tensor x = filled({rows, in}, 3), y = Tensor::empty({rows, out});
  for (auto _ : st)
    cpu::avx512_bf16::gemm_bf16(p, x.data, rows, in, y.data, out, Act::Gelu, false, scratch);
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * in * out * st.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LinearBf16)->Apply(linear_args)->UseRealTime()->Unit(benchmark::kMillisecond);

// Window attention over side×side tokens: {side, shift, window, heads, precision (0: fp32, 1:
// bf16)}, 32 channels per head. 256/7/3: stage 0 of swin_v1_t at 1024²; 64/12/24: stage 2 of
// swin_v1_l at 1024².
void BM_WindowAttention(benchmark::State& st) {
  const bool bf16 = st.range(4) == 1;
  if (bf16 && cpu_isa_supported() < CpuIsa::avx512_bf16) {
    st.SkipWithError("no AVX512_BF16");
    return;
  }
  auto be = make_cpu_backend(cpu_isa(), bf16 ? Precision::bf16 : Precision::fp32);
  const int heads = int(st.range(3)), hd = 32, C = heads * hd;
  const WindowGeometry g =
      window_geometry(int(st.range(0)), int(st.range(0)), int(st.range(2)), int(st.range(1)));
  Tensor qkv = filled({1, g.windows(), g.tokens(), 3 * C}, 4);
  auto bias = filled(size_t(heads) * g.tokens() * g.tokens(), 5, 0.5f);
  Tensor out = Tensor::empty({1, g.windows(), g.tokens(), C});
  for (auto _ : st) be->window_attention(qkv.data, 1, g, heads, hd, bias.data(), out.data);
  st.counters["GFLOP/s"] = benchmark::Counter(
      4.0 * g.windows() * heads * g.tokens() * g.tokens() * hd * st.iterations() / 1e9,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_WindowAttention)
    ->UseRealTime()
    ->ArgsProduct({{256}, {0, 3}, {7}, {3}, {0, 1}})
    ->ArgsProduct({{64}, {0, 6}, {12}, {24}, {0, 1}})
    ->Unit(benchmark::kMillisecond);

// The ASPP's 7×7 deformable conv, 64 -> 256 channels, on an h×w map; precision 0: fp32, 1: bf16
// (the samples gathered straight into bfloat16 columns).
void BM_DeformConv7(benchmark::State& st) {
  const bool bf16 = st.range(1) == 1;
  if (bf16 && cpu_isa_supported() < CpuIsa::avx512_bf16) {
    st.SkipWithError("no AVX512_BF16");
    return;
  }
  auto be = make_cpu_backend(cpu_isa(), bf16 ? Precision::bf16 : Precision::fp32);
  const int h = int(st.range(0)), k = 7;
  DeformConv d;
  d.k = k;
  d.pad = 3;
  d.regular.in = 64;
  d.regular.out = 256;
  d.regular.k = k;
  d.regular.act = Act::Relu;
  d.regular.weight = filled(size_t(256) * 64 * 49, 6, 0.02f);
  d.regular.bias = filled(256, 7, 0.1f);
  d.offset_mask = d.regular;  // packed at prepare(), not run here
  d.offset_mask.out = 3 * k * k;
  d.offset_mask.act = Act::None;
  d.offset_mask.weight = filled(size_t(3 * k * k) * 64 * 49, 10, 0.02f);
  d.offset_mask.bias = filled(size_t(3 * k * k), 11, 0.1f);
  be->prepare(d);
  Tensor x = filled({1, h, h, 64}, 8), om = filled({1, h, h, 3 * k * k}, 9);
  Tensor y = Tensor::empty({1, h, h, 1280});
  for (auto _ : st) be->deform_conv(d, x, om, y, 0);
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * h * h * 256 * 64 * 49 * st.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DeformConv7)
    ->UseRealTime()
    ->Args({64, 0})
    ->Args({128, 0})
    ->Args({128, 1})
    ->Unit(benchmark::kMillisecond);

// The output head's image-side pair at full resolution: 3×3 from the image's 3 channels to 64,
// ReLU, then 3×3 to one channel (conv_pair), on an n×n image.
void BM_ConvPair(benchmark::State& st) {
  auto be = make_cpu_backend();
  const int n = int(st.range(0));
  Conv2d a, b;
  a.in = 3;
  a.out = 64;
  a.k = 3;
  a.pad = 1;
  a.act = Act::Relu;
  a.weight = filled(size_t(64) * 3 * 9, 12, 0.2f);
  a.bias = filled(64, 13, 0.1f);
  b.in = 64;
  b.out = 1;
  b.k = 3;
  b.pad = 1;
  b.weight = filled(size_t(64) * 9, 14, 0.05f);
  b.bias = filled(1, 15, 0.1f);
  be->prepare(a);
  be->prepare(b);
  Tensor x = filled({1, n, n, 3}, 16), y = Tensor::empty({1, n, n, 1});
  for (auto _ : st) be->conv_pair(a, b, x, y);
  const double flop = 2.0 * n * n * (64 * 27 + 64 * 9);
  st.counters["GFLOP/s"] =
      benchmark::Counter(flop * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ConvPair)->UseRealTime()->Arg(1024)->Unit(benchmark::kMillisecond);

void BM_LayerNorm(benchmark::State& st) {
  auto be = make_cpu_backend();
  LayerNorm ln;
  ln.dim = 96;
  ln.weight = filled(96, 1, 1.f);
  ln.bias = filled(96, 2, 1.f);
  const int64_t rows = 65536;
  Tensor x = filled({rows, 96}, 3), y = Tensor::empty({rows, 96});
  for (auto _ : st) be->layer_norm(ln, x.data, rows, y.data);
  st.SetBytesProcessed(st.iterations() * rows * 96 * 8);
}
BENCHMARK(BM_LayerNorm)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_ResizeAlignCorners(benchmark::State& st) {
  auto be = make_cpu_backend();
  Tensor x = filled({1, 256, 256, 96}, 1), y = Tensor::empty({1, 1024, 1024, 96});
  for (auto _ : st) be->resize_bilinear_ac(x, y);
  st.SetBytesProcessed(st.iterations() * y.numel() * 4);
}
BENCHMARK(BM_ResizeAlignCorners)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace biref

namespace biref {
namespace {
// A Swin MLP in BF16 (rows, C; swin_v1_t stages 0 and 2, swin_v1_l stages 2 and 3 at 1024²):
// fc1 (C -> 4C, GELU) and fc2 (4C -> C, residual sum) as two GEMMs through a float32 hidden
// layer (fused 0) or fused with the hidden layer in bfloat16 blocks (fused 1, mlp_bf16).
void BM_MlpBf16(benchmark::State& st) {
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) {
    st.SkipWithError("no AVX512_BF16");
    return;
  }
  const int64_t rows = st.range(0), C = st.range(1);
  const bool fused = st.range(2) == 1;
  const Linear l1 = bench_linear(C, 4 * C), l2 = bench_linear(4 * C, C);
  const cpu::PackedBf16 p1 = cpu::avx512_bf16::pack_bf16(l1.weight.data(), 4 * C, C, l1.bias);
  const cpu::PackedBf16 p2 = cpu::avx512_bf16::pack_bf16(l2.weight.data(), C, 4 * C, l2.bias);
  cpu::Bf16Scratch scratch;
  Tensor h = filled({rows, C}, 3), x = filled({rows, C}, 4), hid = Tensor::empty({rows, 4 * C});
  for (auto _ : st) {
    if (fused) {
      cpu::avx512_bf16::mlp_bf16(p1, p2, h.data, rows, x.data, scratch);
    } else {
      cpu::avx512_bf16::gemm_bf16(p1, h.data, rows, C, hid.data, 4 * C, Act::Gelu, false, scratch);
      cpu::avx512_bf16::gemm_bf16(p2, hid.data, rows, 4 * C, x.data, C, Act::None, true, scratch);
    }
  }
  st.counters["GFLOP/s"] = benchmark::Counter(16.0 * rows * C * C * st.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MlpBf16)
    ->UseRealTime()
    ->Args({16384, 96, 0})
    ->Args({16384, 96, 1})
    ->Args({4096, 384, 0})
    ->Args({4096, 384, 1})
    ->Args({4096, 768, 0})
    ->Args({4096, 768, 1})
    ->Args({1024, 1536, 0})
    ->Args({1024, 1536, 1})
    ->Unit(benchmark::kMillisecond);
}  // namespace
}  // namespace biref
