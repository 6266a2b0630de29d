// Convolutions that oneDNN runs slowly, with their weight layouts: a same-size convolution to
// one channel (the output head at full resolution) and the image-side pair in front of it,
// computed in bands of rows.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_level.h"
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

// conv_pair's first convolution: [out, in, ky, kx] -> [ky, kx, in, out].
std::vector<float> input_conv_weights(const Conv2d& c, const float* cw) {
  std::vector<float> w(size_t(c.out) * c.in * c.k * c.k);
  for (int o = 0; o < c.out; ++o)
    for (int i = 0; i < c.in; ++i)
      for (int t = 0; t < c.k * c.k; ++t)
        w[(size_t(t) * c.in + i) * c.out + o] = cw[(size_t(o) * c.in + i) * c.k * c.k + t];
  return w;
}

// conv_single_output's weights: [in, ky, kx] -> [ky, kx, in].
std::vector<float> single_output_weights(const Conv2d& c, const float* cw) {
  std::vector<float> w(size_t(c.in) * c.k * c.k);
  for (int i = 0; i < c.in; ++i)
    for (int t = 0; t < c.k * c.k; ++t) w[size_t(t) * c.in + i] = cw[size_t(i) * c.k * c.k + t];
  return w;
}

namespace {

// Register tiles per level (vec_level.h's kLanes floats per vector): pixels × vectors of
// channels of the input convolution's accumulators, and the pixels of the single-output
// convolution computed side by side (independent chains: one accumulator per pixel would wait
// on the FMA's latency at every step).
#if defined(BIREF_ISA_AVX512)
constexpr int kInPixels = 6, kInVecs = 4, kOutPixels = 4;
#elif defined(BIREF_ISA_AVX2)
constexpr int kInPixels = 3, kInVecs = 4, kOutPixels = 4;
#else
constexpr int kInPixels = 2, kInVecs = 4, kOutPixels = 2;
#endif

// The sum of v's lanes, pairwise (a chain of kLanes dependent adds would cost more than the
// pixel's whole dot product).
[[gnu::always_inline]] inline float hsum(vec v) {
  float t[kLanes];
  *at(t) = v;
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) t[j] += t[j + w];
  return t[0];
}

[[gnu::always_inline]] inline float activate(float v, Act act) {
  if (act == Act::Relu) return std::max(v, 0.f);
  if (act == Act::Sigmoid) return 1.f / (1.f + std::exp(-v));
  if (act == Act::Gelu) return 0.5f * v * (1.f + std::erf(v * 0.70710678f));
  return v;
}

// out[ox] for P pixels from ox0: Σ over taps and channels of w · rows, P accumulators.
template <int P>
void single_output_pixels(const Conv2d& c, const float* wt, const float* const* rows, int64_t W,
                          int64_t Ci, int64_t ox0, float* out) {
  vec acc[P] = {};
  for (int ky = 0; ky < c.k; ++ky) {
    if (!rows[ky]) continue;
    for (int kx = 0; kx < c.k; ++kx) {
      const float* wp = wt + size_t(ky * c.k + kx) * Ci;
      const int64_t ix0 = ox0 - c.pad + kx;
      if (ix0 >= 0 && ix0 + P <= W) {
        const float* xp = rows[ky] + ix0 * Ci;
        for (int64_t i = 0; i < Ci; i += kLanes) {
          const vec w = *at(wp + i);
          for (int p = 0; p < P; ++p) acc[p] += *at(xp + p * Ci + i) * w;
        }
        continue;
      }
      for (int p = 0; p < P; ++p) {  // at the image's left or right edge
        const int64_t ix = ix0 + p;
        if (ix < 0 || ix >= W) continue;
        const float* xp = rows[ky] + ix * Ci;
        for (int64_t i = 0; i < Ci; i += kLanes) acc[p] += *at(xp + i) * *at(wp + i);
      }
    }
  }
  const float bias = c.bias.empty() ? 0.f : c.bias[0];
  for (int p = 0; p < P; ++p) out[ox0 + p] = activate(bias + hsum(acc[p]), c.act);
}

// One output row of a same-size k×k convolution to one channel; rows[ky] is input row
// (oy − pad + ky), or null where that row is outside the image (zero padding).
void single_output_row(const Conv2d& c, const float* wt, const float* const* rows, int64_t W,
                       int64_t Ci, float* out) {
  int64_t ox = 0;
  for (; ox + kOutPixels <= W; ox += kOutPixels)
    single_output_pixels<kOutPixels>(c, wt, rows, W, Ci, ox, out);
  for (; ox < W; ++ox) single_output_pixels<1>(c, wt, rows, W, Ci, ox, out);
}

// P pixels × V vectors of channels [c0, c0 + V·kLanes) of the input convolution `a`, over
// the zero-padded copy `xin` of its k input rows (every tap of every pixel reads memory): step
// s of the k²·in products reads xin[xoff[s] + p·in] for pixel p (from mx) and row s of wa
// ([ky, kx, in, out]).
template <int P, int V>
void input_conv_tile(const Conv2d& a, const float* wa, const float* xin, const int* xoff,
                     int steps, int64_t Ci, int64_t Cm, int64_t mx, int64_t c0, float* o) {
  vec acc[P][V];
  for (int j = 0; j < V; ++j) {
    const vec b = *at(a.bias.data() + c0 + kLanes * j);
    for (int p = 0; p < P; ++p) acc[p][j] = b;
  }
  const float* xp = xin + mx * Ci;
  const float* wp = wa + c0;
  for (int st = 0; st < steps; ++st, wp += Cm) {
    vec w[V];
    for (int j = 0; j < V; ++j) w[j] = *at(wp + kLanes * j);
    const float* xs = xp + xoff[st];
    for (int p = 0; p < P; ++p) {
      const float v = xs[p * Ci];
      for (int j = 0; j < V; ++j) acc[p][j] += v * w[j];
    }
  }
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < V; ++j) {
      vec r = acc[p][j];
      if (a.act == Act::Relu) r = r > 0.f ? r : 0.f;
      *at(o + (mx + p) * Cm + c0 + kLanes * j) = r;
    }
}

template <int P>
void input_conv_pixels(const Conv2d& a, const float* wa, const float* xin, const int* xoff,
                       int steps, int64_t Ci, int64_t Cm, int64_t mx, float* o) {
  int64_t c0 = 0;
  for (; c0 + kInVecs * kLanes <= Cm; c0 += kInVecs * kLanes)
    input_conv_tile<P, kInVecs>(a, wa, xin, xoff, steps, Ci, Cm, mx, c0, o);
  switch ((Cm - c0) / kLanes) {  // Cm is a multiple of 16: whole vectors left
    case 3:
      return input_conv_tile<P, 3>(a, wa, xin, xoff, steps, Ci, Cm, mx, c0, o);
    case 2:
      return input_conv_tile<P, 2>(a, wa, xin, xoff, steps, Ci, Cm, mx, c0, o);
    case 1:
      return input_conv_tile<P, 1>(a, wa, xin, xoff, steps, Ci, Cm, mx, c0, o);
    default:
      return;
  }
}

// Where step s of a's k²·in products reads in the padded rows of input_conv_row: the same for
// every row and pixel, so computed once per call.
std::vector<int> input_offsets(const Conv2d& a, int64_t W, int64_t Ci) {
  const int64_t ldx = (W + 2 * a.pad) * Ci;
  std::vector<int> xoff;
  xoff.reserve(size_t(a.k * a.k * Ci));
  for (int ky = 0; ky < a.k; ++ky)
    for (int kx = 0; kx < a.k; ++kx)
      for (int64_t ci = 0; ci < Ci; ++ci) xoff.push_back(int(ky * ldx + kx * Ci + ci));
  return xoff;
}

// Row `my` of a(x) for image bi, all W pixels, into o [W, Cm]; xin: scratch for the k padded
// input rows; xoff from input_offsets.
void input_conv_row(const Conv2d& a, const float* wa, const Tensor& x, int64_t bi, int64_t my,
                    const std::vector<int>& xoff, float* xin, float* o) {
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Cm = a.out;
  const int64_t ldx = (W + 2 * a.pad) * Ci;
  for (int ky = 0; ky < a.k; ++ky) {
    float* r = xin + ky * ldx;
    const int64_t iy = my - a.pad + ky;
    if (iy < 0 || iy >= H) {
      std::fill(r, r + ldx, 0.f);
      continue;
    }
    std::fill(r, r + a.pad * Ci, 0.f);
    std::memcpy(r + a.pad * Ci, x.data + (bi * H + iy) * W * Ci, size_t(W * Ci) * sizeof(float));
    std::fill(r + (a.pad + W) * Ci, r + ldx, 0.f);
  }
  const int steps = int(xoff.size());
  int64_t mx = 0;
  for (; mx + kInPixels <= W; mx += kInPixels)
    input_conv_pixels<kInPixels>(a, wa, xin, xoff.data(), steps, Ci, Cm, mx, o);
  for (; mx < W; ++mx) input_conv_pixels<1>(a, wa, xin, xoff.data(), steps, Ci, Cm, mx, o);
}

}  // namespace

// A "same" convolution to one channel (the composed output head at full resolution): one dot
// product of k²·in values per pixel, accumulated in vector registers, a few pixels side by side.
void conv_single_output(const Conv2d& c, const float* wt, const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * H; ++r) {
    const int64_t b = r / H, oy = r % H;
    const float* rows[16];
    for (int ky = 0; ky < c.k; ++ky) {
      const int64_t iy = oy - c.pad + ky;
      rows[ky] = (iy < 0 || iy >= H) ? nullptr : x.data + (b * H + iy) * W * Ci;
    }
    single_output_row(c, wt, rows, W, Ci, y.data + r * W);
  }
}

// b(a(x)) for a same-size convolution `a` from few channels (the image) to a multiple of 16,
// followed by a same-size convolution `b` to one channel: the input branch of the output head
// at full resolution. Each job is a range of output rows; a's output rows (64 channels: 1 GB at
// 2048²) exist only in a ring of b.k rows per thread (768 KB at 1024 wide: in L2), each computed
// once per range. a runs as register tiles of pixels × channels over zero-padded copies of its
// input rows.
void conv_pair(const Conv2d& a, const float* wa, const Conv2d& b, const float* wb, const Tensor& x,
               Tensor& y, Scratch& scratch) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Cm = a.out;
  const int pb = b.pad;
  // rows per job: a's rows are computed again at a range's two edges (pb each), 6% at 32
  constexpr int64_t kRows = 32;
  const int64_t ranges = (H + kRows - 1) / kRows;
  const int threads = omp_get_max_threads();
  const size_t ring_floats = size_t(b.k * W * Cm);
  scratch.reserve(threads, ring_floats + size_t(a.k * (W + 2 * a.pad) * Ci), 0);
  const std::vector<int> xoff = input_offsets(a, W, Ci);
#pragma omp parallel num_threads(threads)
  {
    float* ring = scratch.f[size_t(omp_get_thread_num())].data();  // sized above
    float* xin = ring + ring_floats;
#pragma omp for schedule(static)
    for (int64_t job = 0; job < B * ranges; ++job) {
      const int64_t bi = job / ranges, r0 = (job % ranges) * kRows, r1 = std::min(H, r0 + kRows);
      int64_t next = std::max<int64_t>(0, r0 - pb);  // a's next row to compute
      for (int64_t oy = r0; oy < r1; ++oy) {
        // row `next` replaces row next − b.k, which output row oy no longer reads
        for (; next < std::min(H, oy + pb + 1); ++next)
          input_conv_row(a, wa, x, bi, next, xoff, xin, ring + (next % b.k) * W * Cm);
        const float* rows[16];
        for (int ky = 0; ky < b.k; ++ky) {
          const int64_t my = oy - pb + ky;
          rows[ky] = (my < 0 || my >= H) ? nullptr : ring + (my % b.k) * W * Cm;
        }
        single_output_row(b, wb, rows, W, Cm, y.data + (bi * H + oy) * W);
      }
    }
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"
