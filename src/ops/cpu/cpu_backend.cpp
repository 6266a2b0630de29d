// The optimised CPU backend: oneDNN for convolutions and matmuls, our own OpenMP kernels for
// window attention, the deformable convolution's sampling, LayerNorm, resize and the glue ops.
// Each kernel is tested against its reference in tests/test_ops.cpp.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "core/check.h"
#include "ops/cpu/onednn.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace biref {

namespace {

// Region label for the shift mask of a padded coordinate: [0, n−w) -> 0, [n−w, n−s) -> 1, rest 2.
inline int region(int p, int n, int window, int shift) {
  return p < n - window ? 0 : (p < n - shift ? 1 : 2);
}

}  // namespace

void cpu_resize_bilinear_ac(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = y.dim(1), Wo = y.dim(2);
  const double sy = Ho > 1 ? double(H - 1) / double(Ho - 1) : 0.0;
  const double sx = Wo > 1 ? double(W - 1) / double(Wo - 1) : 0.0;
  // Column taps once per call.
  std::vector<int64_t> x0(Wo), x1(Wo);
  std::vector<float> lx(Wo);
  for (int64_t j = 0; j < Wo; ++j) {
    const double f = double(j) * sx;
    x0[j] = std::min<int64_t>(int64_t(f), W - 1);
    x1[j] = std::min<int64_t>(x0[j] + 1, W - 1);
    lx[j] = float(f - double(x0[j]));
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * Ho; ++r) {
    const int64_t b = r / Ho, i = r % Ho;
    const double f = double(i) * sy;
    const int64_t y0 = std::min<int64_t>(int64_t(f), H - 1), y1 = std::min<int64_t>(y0 + 1, H - 1);
    const float ly = float(f - double(y0));
    const float* r0 = x.data + (b * H + y0) * W * C;
    const float* r1 = x.data + (b * H + y1) * W * C;
    for (int64_t j = 0; j < Wo; ++j) {
      const float* a = r0 + x0[j] * C;
      const float* bb = r0 + x1[j] * C;
      const float* c = r1 + x0[j] * C;
      const float* d = r1 + x1[j] * C;
      const float wx = lx[j];
      float* o = y.data + ((b * Ho + i) * Wo + j) * C;
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) {
        const float top = a[k] + (bb[k] - a[k]) * wx;
        const float bot = c[k] + (d[k] - c[k]) * wx;
        o[k] = top + (bot - top) * ly;
      }
    }
  }
}

namespace {

// Per-thread work buffers of the kernels, grown outside parallel regions only (an exception
// inside one would terminate the process) and reused, so steady-state runs allocate nothing.
struct Scratch {
  std::vector<std::vector<float>> f;
  std::vector<std::vector<int>> i;
  void reserve(int threads, size_t floats, size_t ints) {
    if (f.size() < size_t(threads)) {
      f.resize(size_t(threads));
      i.resize(size_t(threads));
    }
    for (int t = 0; t < threads; ++t) {
      if (f[t].size() < floats) f[t].assign(floats, 0.f);
      if (i[t].size() < ints) i[t].assign(ints, 0);
    }
  }
};

// What the CPU backend derives from the weights at load: oneDNN's packed copies and the
// re-ordered weights of biref's own kernels. Filled by prepare() while the model loads, read-only
// afterwards, and shared by every fork() of the backend.
struct CpuWeights {
  std::shared_ptr<cpu::PackedWeights> dnn = std::make_shared<cpu::PackedWeights>();
  std::map<uint64_t, Linear> deform_gemms;
  std::map<uint64_t, std::vector<float>> tap_major;   // conv_single_output weights
  std::map<uint64_t, std::vector<float>> input_conv;  // conv_pair's first convolution
  std::map<uint64_t, Linear> conv_linears;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(std::shared_ptr<CpuWeights> w = std::make_shared<CpuWeights>())
      : w_(std::move(w)), dnn_(w_->dnn) {}
  const char* name() const override { return "cpu (oneDNN + OpenMP)"; }
  std::unique_ptr<Backend> fork() const override { return std::make_unique<CpuBackend>(w_); }
  size_t weight_bytes() const override {
    size_t n = w_->dnn->bytes();
    for (const auto& [id, v] : w_->tap_major) n += v.size() * sizeof(float);
    for (const auto& [id, v] : w_->input_conv) n += v.size() * sizeof(float);
    return n;
  }

  void linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
              Act act, bool accumulate) override {
    dnn_.linear(l, x, rows, ldx, y, ldy, act, accumulate);
  }

  void conv2d(const Conv2d& c, const Tensor& x, Tensor& y) override {
    BIREF_CHECK(x.dim(3) == c.in && y.dim(3) == c.out, "conv2d '", c.name, "': input has ",
                x.dim(3), " channels, expected ", c.in);
    if (is_pointwise(c)) {
      // a 1×1 convolution over NHWC pixels is a matmul over rows
      dnn_.linear(as_linear(c), x.data, x.numel() / c.in, c.in, y.data, c.out, c.act, false);
    } else if (is_single_output(c)) {
      conv_single_output(c, x, y);  // oneDNN reaches ~3 GFLOP/s on these
    } else {
      dnn_.conv2d(c, x, y);
    }
  }

  // Weights are packed at load into the layouts the kernels use; the plain copies can go.
  bool owns_weights() const override { return true; }
  void prepare(const Linear& l) override { dnn_.prepare(l); }
  // The plain weights are read from the layer (or its file mapping) through one staging buffer
  // reused by every layer, not copied into fresh memory per layer: on a virtual machine each
  // fresh page costs a fault of microseconds, and the convolutions are 67 MB for swin_v1_t.
  void prepare(const Conv2d& c) override {
    if (is_input_conv(c)) input_conv_weights(c);  // a possible first half of conv_pair
    if (is_pointwise(c)) {
      Linear& l = conv_linears_.emplace(c.id.value, linear_shape(c)).first->second;
      pack_from(l, c.folded_weight(stage_));
    } else if (is_single_output(c)) {
      tap_major(c);
    } else {
      dnn_.prepare(c, c.folded_weight(stage_));
    }
  }
  void prepare(const DeformConv& d) override {
    prepare(d.offset_mask);
    Linear& l = deform_gemms_.emplace(d.id.value, deform_gemm_shape(d)).first->second;
    float* permuted = gemm_stage_.get(size_t(l.in) * l.out);
    permute_taps(d, d.regular.folded_weight(stage_), permuted);
    pack_from(l, permuted);
  }
  void end_prepare() override {
    stage_.release();
    gemm_stage_.release();
  }

  // A "same" convolution to one channel (the composed output head at full resolution): one dot
  // product of k²·in values per pixel, accumulated in a vector register, one horizontal sum.
  void conv_single_output(const Conv2d& c, const Tensor& x, Tensor& y) {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
    const float* wt = tap_major(c).data();
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

  // One output row of a same-size k×k convolution to one channel; rows[ky] is input row
  // (oy − pad + ky), or null where that row is outside the image (zero padding).
  static void single_output_row(const Conv2d& c, const float* wt, const float* const* rows, int64_t W,
                                int64_t Ci, float* out) {
    const float bias = c.bias.empty() ? 0.f : c.bias[0];
    for (int64_t ox = 0; ox < W; ++ox) {
      cpu::v16 acc = {};
      for (int ky = 0; ky < c.k; ++ky) {
        if (!rows[ky]) continue;
        for (int kx = 0; kx < c.k; ++kx) {
          const int64_t ix = ox - c.pad + kx;
          if (ix < 0 || ix >= W) continue;
          const float* xp = rows[ky] + ix * Ci;
          const float* wp = wt + size_t(ky * c.k + kx) * Ci;
          for (int64_t i = 0; i < Ci; i += 16) acc += cpu::load16(xp + i) * cpu::load16(wp + i);
        }
      }
      float v = bias;
      for (int j = 0; j < 16; ++j) v += acc[j];
      if (c.act == Act::Relu) v = std::max(v, 0.f);
      if (c.act == Act::Sigmoid) v = 1.f / (1.f + std::exp(-v));
      if (c.act == Act::Gelu) v = 0.5f * v * (1.f + std::erf(v * 0.70710678f));
      out[ox] = v;
    }
  }

  // b(a(x)) for a same-size convolution `a` from few channels (the image) to a multiple of 16,
  // followed by a same-size convolution `b` to one channel: the input branch of the output head
  // at full resolution. Computed in bands of rows, so a's 64-channel output (1 GB at 2048²)
  // only ever exists a few rows at a time.
  void conv_pair(const Conv2d& a, const Conv2d& b, const Tensor& x, Tensor& y) override {
    if (!(is_input_conv(a) && is_single_output(b) && a.out == b.in)) {
      Backend::conv_pair(a, b, x, y);
      return;
    }
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Cm = a.out;
    const int pb = b.pad;
    constexpr int64_t kBand = 8;
    const int64_t bands = (H + kBand - 1) / kBand;
    const float* wa = input_conv_weights(a).data();
    const float* wb = tap_major(b).data();
    const int threads = omp_get_max_threads();
    scratch_.reserve(threads, size_t((kBand + 2 * pb) * W * Cm), 0);
#pragma omp parallel num_threads(threads)
    {
      float* mid = scratch_.f[size_t(omp_get_thread_num())].data();  // sized above
#pragma omp for schedule(static)
      for (int64_t job = 0; job < B * bands; ++job) {
        const int64_t bi = job / bands, r0 = (job % bands) * kBand, r1 = std::min(H, r0 + kBand);
        // a's output for rows [r0 − pb, r1 + pb) ∩ [0, H)
        const int64_t m0 = std::max<int64_t>(0, r0 - pb), m1 = std::min(H, r1 + pb);
        for (int64_t my = m0; my < m1; ++my) {
          float* mrow = mid + (my - (r0 - pb)) * W * Cm;
          for (int64_t mx = 0; mx < W; ++mx) {
            float* o = mrow + mx * Cm;
            // 64 output channels at a time in four registers; the taps stream past them
            for (int64_t c0 = 0; c0 < Cm; c0 += 64) {
              const int nv = int(std::min<int64_t>(4, (Cm - c0) / 16));
              cpu::v16 acc[4];
              for (int j = 0; j < nv; ++j) acc[j] = cpu::load16(a.bias.data() + c0 + 16 * j);
              for (int ky = 0; ky < a.k; ++ky) {
                const int64_t iy = my - a.pad + ky;
                if (iy < 0 || iy >= H) continue;
                for (int kx = 0; kx < a.k; ++kx) {
                  const int64_t ix = mx - a.pad + kx;
                  if (ix < 0 || ix >= W) continue;
                  const float* xp = x.data + ((bi * H + iy) * W + ix) * Ci;
                  const float* wp = wa + size_t((ky * a.k + kx) * Ci) * Cm + c0;
                  for (int64_t ci = 0; ci < Ci; ++ci) {
                    const float v = xp[ci];
                    const float* wr = wp + ci * Cm;
                    for (int j = 0; j < nv; ++j) acc[j] += v * cpu::load16(wr + 16 * j);
                  }
                }
              }
              for (int j = 0; j < nv; ++j) {
                if (a.act == Act::Relu) acc[j] = acc[j] > 0.f ? acc[j] : 0.f;
                cpu::store16(o + c0 + 16 * j, acc[j]);
              }
            }
          }
        }
        for (int64_t oy = r0; oy < r1; ++oy) {
          const float* rows[16];
          for (int ky = 0; ky < b.k; ++ky) {
            const int64_t my = oy - pb + ky;
            rows[ky] = (my < 0 || my >= H) ? nullptr : mid + (my - (r0 - pb)) * W * Cm;
          }
          single_output_row(b, wb, rows, W, Cm, y.data + (bi * H + oy) * W);
        }
      }
    }
  }

  void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y) override {
    const int D = ln.dim;
    const float* w = ln.weight.data();
    const float* b = ln.bias.data();
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < rows; ++m) {
      const float* xr = x + m * D;
      float* yr = y + m * D;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int i = 0; i < D; ++i) s += xr[i];
      const float mean = s / float(D);
      float v = 0.f;
#pragma omp simd reduction(+ : v)
      for (int i = 0; i < D; ++i) v += (xr[i] - mean) * (xr[i] - mean);
      const float inv = 1.f / std::sqrt(v / float(D) + ln.eps);
#pragma omp simd
      for (int i = 0; i < D; ++i) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
    }
  }

  void window_partition(const Tensor& x, const WindowGeometry& g, Tensor& win) override {
    const int64_t B = x.dim(0), C = x.dim(3);
    const int w = g.window;
    const int band = g.rows * w;     // rows of the shifted frame in the band
    const int64_t rows = B * band;  // one padded row of the shifted frame per iteration
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / band;
      const int sy = g.row0 * w + int(r % band);  // row in the shifted frame
      const int py = (sy + g.shift) % g.hp;
      const int wy = sy / w - g.row0, i = sy % w;
      for (int sx = 0; sx < g.wp; ++sx) {
        const int px = (sx + g.shift) % g.wp;
        const int wx = sx / w, j = sx % w;
        float* dst = win.data + (((b * g.windows() + wy * g.nww() + wx) * w + i) * w + j) * C;
        if (py < g.h && px < g.w) {
          std::memcpy(dst, x.data + ((b * g.h + py) * g.w + px) * C, size_t(C) * sizeof(float));
        } else {
          std::memset(dst, 0, size_t(C) * sizeof(float));
        }
      }
    }
  }

  void window_reverse_add(const Tensor& win, const WindowGeometry& g, Tensor& x) override {
    const int64_t B = x.dim(0), C = x.dim(3);
    const int w = g.window;
    const int64_t rows = B * g.h;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / g.h;
      const int py = int(r % g.h);
      const int sy = (py - g.shift + g.hp) % g.hp;
      const int wy = sy / w - g.row0, i = sy % w;
      if (wy < 0 || wy >= g.rows) continue;  // not in this band
      for (int px = 0; px < g.w; ++px) {
        const int sx = (px - g.shift + g.wp) % g.wp;
        const int wx = sx / w, j = sx % w;
        const float* src = win.data + (((b * g.windows() + wy * g.nww() + wx) * w + i) * w + j) * C;
        float* dst = x.data + ((b * g.h + py) * g.w + px) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
      }
    }
  }

  void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                        int hd, const float* rel_bias, float* out) override {
    // Every Swin v1 variant has 32 channels per head: a compile-time width keeps a query's
    // output row in registers.
    const int N = g.tokens(), NP = (N + 63) / 64 * 64, NR = (N + 3) / 4 * 4;
    const int threads = omp_get_max_threads();
    scratch_.reserve(threads, size_t(NR) * hd + size_t(hd) * NP + size_t(N) * hd + size_t(NR) * NP,
                     size_t(NP));
    if (hd == 32) {
      attention_kernel<32>(qkv, batch, g, heads, hd, rel_bias, out, scratch_, threads);
    } else {
      attention_kernel<0>(qkv, batch, g, heads, hd, rel_bias, out, scratch_, threads);
    }
  }

  // One (window, head) per job. q, kᵀ and v of the head are first gathered into contiguous
  // buffers (kᵀ padded with zeros to a multiple of 64 keys); scores are computed as 4 queries ×
  // 64 keys register tiles (16 accumulators); bias, shift mask and softmax in one pass; then P·V
  // as 4 queries × head_dim register tiles.
  template <int HD>
  static void attention_kernel(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                               int hd_rt, const float* rel_bias, float* out, Scratch& scratch,
                               int threads) {
    const int hd = HD > 0 ? HD : hd_rt;
    const int N = g.tokens(), w = g.window, C = heads * hd;
    const int NP = (N + 63) / 64 * 64;
    const int NR = (N + 3) / 4 * 4;  // query rows rounded up to the 4-row tile
    const float scale = 1.f / std::sqrt(float(hd));
    const int64_t jobs = batch * g.windows() * heads;
#pragma omp parallel num_threads(threads)
    {
      // this thread's buffers, sized before the parallel region (no allocation in here)
      float* q = scratch.f[size_t(omp_get_thread_num())].data();
      float* kt = q + size_t(NR) * hd;
      float* v = kt + size_t(hd) * NP;
      float* s = v + size_t(N) * hd;
      int* label = scratch.i[size_t(omp_get_thread_num())].data();
#pragma omp for schedule(static)
      for (int64_t job = 0; job < jobs; ++job) {
        const int64_t bw = job / heads;
        const int h = int(job % heads);
        const int widx = int(bw % g.windows());
        const float* base = qkv + bw * N * 3 * C + h * hd;
        for (int n = 0; n < N; ++n) {
          const float* row = base + int64_t(n) * 3 * C;
#pragma omp simd
          for (int d = 0; d < hd; ++d) {
            q[size_t(n) * hd + d] = row[d] * scale;
            v[size_t(n) * hd + d] = row[2 * C + d];
          }
        }
        // kᵀ: contiguous writes (the strided reads stay within the window's rows in cache)
        for (int d = 0; d < hd; ++d) {
          const float* col = base + C + d;
          float* kd = kt + size_t(d) * NP;
          for (int n = 0; n < N; ++n) kd[n] = col[int64_t(n) * 3 * C];
        }
        const bool masked = g.shift > 0;
        if (masked) {
          const int wy = g.row0 + widx / g.nww(), wx = widx % g.nww();
          for (int t = 0; t < N; ++t)
            label[t] = region(wy * w + t / w, g.hp, w, g.shift) * 3 + region(wx * w + t % w, g.wp, w, g.shift);
        }
        for (int n0 = 0; n0 < NR; n0 += 4)
          for (int m0 = 0; m0 < NP; m0 += 64) score_tile(q + size_t(n0) * hd, hd, kt + m0, NP,
                                                         s + size_t(n0) * NP + m0);
        const float* bias = rel_bias + size_t(h) * N * N;
        for (int n = 0; n < N; ++n) {
          float* sr = s + size_t(n) * NP;
          const float* br = bias + size_t(n) * N;
          float mx = -INFINITY;
          // masked keys get exactly zero weight (a row's own token is never masked)
          if (masked) {
            const int ln = label[n];
            const int* lb = label;
#pragma omp simd reduction(max : mx)
            for (int m = 0; m < N; ++m) {
              const float val = lb[m] != ln ? -INFINITY : sr[m] + br[m];
              sr[m] = val;
              mx = std::max(mx, val);
            }
          } else {
#pragma omp simd reduction(max : mx)
            for (int m = 0; m < N; ++m) {
              sr[m] += br[m];
              mx = std::max(mx, sr[m]);
            }
          }
          float sum = 0.f;
#pragma omp simd reduction(+ : sum)
          for (int m = 0; m < N; ++m) {
            const float ex = cpu::fast_exp(sr[m] - mx);  // unconditional: vectorised
            const float e = sr[m] == -INFINITY ? 0.f : ex;
            sr[m] = e;
            sum += e;
          }
          const float inv = 1.f / sum;
#pragma omp simd
          for (int m = 0; m < N; ++m) sr[m] *= inv;
        }
        for (int n0 = 0; n0 < N; n0 += 4) {
          const int rows = std::min(4, N - n0);
          pv_tile<HD>(s + size_t(n0) * NP, NP, N, v, hd, rows,
                      out + (bw * N + n0) * C + h * hd, C);
        }
      }
    }
  }

  // s[4][64] (row stride ldS) = q[4][hd] · kt[hd][64] (row stride ldK), all in registers.
  static void score_tile(const float* q, int hd, const float* kt, int ldK, float* s) {
    using v16 = cpu::v16;
    v16 acc[4][4] = {};
    for (int d = 0; d < hd; ++d) {
      const float* kr = kt + size_t(d) * ldK;
      const v16 k0 = cpu::load16(kr), k1 = cpu::load16(kr + 16), k2 = cpu::load16(kr + 32),
                k3 = cpu::load16(kr + 48);
      for (int r = 0; r < 4; ++r) {
        const float a = q[size_t(r) * hd + d];
        acc[r][0] += a * k0;
        acc[r][1] += a * k1;
        acc[r][2] += a * k2;
        acc[r][3] += a * k3;
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int j = 0; j < 4; ++j) cpu::store16(s + size_t(r) * ldK + 16 * j, acc[r][j]);
  }

  // out[r][0:hd] (row stride ldo) = Σ_m p[r][m] · v[m][0:hd] for r < rows.
  template <int HD>
  static void pv_tile(const float* p, int ldp, int N, const float* v, int hd_rt, int rows,
                      float* out, int ldo) {
    if constexpr (HD == 32) {
      using v16 = cpu::v16;
      v16 acc[4][2] = {};
      for (int m = 0; m < N; ++m) {
        const v16 v0 = cpu::load16(v + size_t(m) * 32), v1 = cpu::load16(v + size_t(m) * 32 + 16);
        for (int r = 0; r < 4; ++r) {
          const float a = p[size_t(r) * ldp + m];
          acc[r][0] += a * v0;
          acc[r][1] += a * v1;
        }
      }
      for (int r = 0; r < rows; ++r) {
        cpu::store16(out + size_t(r) * ldo, acc[r][0]);
        cpu::store16(out + size_t(r) * ldo + 16, acc[r][1]);
      }
    } else {
      for (int r = 0; r < rows; ++r) {
        float* o = out + size_t(r) * ldo;
        for (int d = 0; d < hd_rt; ++d) o[d] = 0.f;
        for (int m = 0; m < N; ++m) {
          const float a = p[size_t(r) * ldp + m];
          const float* vr = v + size_t(m) * hd_rt;
#pragma omp simd
          for (int d = 0; d < hd_rt; ++d) o[d] += a * vr[d];
        }
      }
    }
  }

  void patch_merge(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    const int64_t Ho = y.dim(1), Wo = y.dim(2);
    const int dy[4] = {0, 1, 0, 1}, dx[4] = {0, 0, 1, 1};
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * Ho; ++r) {
      const int64_t b = r / Ho, i = r % Ho;
      for (int64_t j = 0; j < Wo; ++j) {
        float* dst = y.data + ((b * Ho + i) * Wo + j) * 4 * C;
        for (int q = 0; q < 4; ++q) {
          const int64_t sy = 2 * i + dy[q], sx = 2 * j + dx[q];
          if (sy < H && sx < W) {
            std::memcpy(dst + q * C, x.data + ((b * H + sy) * W + sx) * C, size_t(C) * sizeof(float));
          } else {
            std::memset(dst + q * C, 0, size_t(C) * sizeof(float));
          }
        }
      }
    }
  }

  void resize_bilinear_ac(const Tensor& x, Tensor& y) override { cpu_resize_bilinear_ac(x, y); }

  void concat_channels(const std::vector<const Tensor*>& parts, Tensor& y) override {
    const int64_t P = y.numel() / y.dim(3), Cy = y.dim(3);
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < P; ++p) {
      int64_t c0 = 0;
      for (const Tensor* t : parts) {
        const int64_t C = t->dim(3);
        std::memcpy(y.data + p * Cy + c0, t->data + p * C, size_t(C) * sizeof(float));
        c0 += C;
      }
    }
  }

  void image_patches(const Tensor& x, int g, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    const int64_t h = H / g, w = W / g, Cy = C * g * g;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * H; ++r) {  // one input row: tile row (r / h) of the grid
      const int64_t b = r / H, yy = r % H;
      const int64_t row = yy / h, i = yy % h;
      for (int64_t xx = 0; xx < W; ++xx) {
        const int64_t col = xx / w, j = xx % w;
        const float* src = x.data + ((b * H + yy) * W + xx) * C;
        float* dst = y.data + ((b * h + i) * w + j) * Cy + row * g + col;
        for (int64_t c = 0; c < C; ++c) dst[c * g * g] = src[c];
      }
    }
  }

  void deform_conv(const DeformConv& d, const Tensor& x, const Tensor& om, Tensor& y,
                   int c_offset) override {
    const int64_t P = x.dim(0) * x.dim(1) * x.dim(2), Cy = y.dim(3);
    const int64_t tile = deform_tile(d, x.dim(3));
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t np = std::min(tile, P - p0);
      deform_rows(d, x, om, p0, np, y.data + p0 * Cy + c_offset, Cy);
    }
  }

  // The whole ASPPDeformable after its offset convolutions, one tile of positions at a time:
  // the four deformable branches and the pooled branch fill a [tile, 5·planes] buffer that
  // conv1 consumes at once, so the full-size concatenation never exists.
  void aspp_deformable(const std::array<const DeformConv*, 4>& branches,
                       const std::array<const Tensor*, 4>& offset_masks, const Tensor& x,
                       const Tensor& pooled, const Conv2d& conv1, Tensor& y) override {
    const int64_t B = x.dim(0), HW = x.dim(1) * x.dim(2), P = B * HW;
    const int64_t planes = branches[0]->regular.out, Ccat = 5 * planes;
    BIREF_CHECK(conv1.in == Ccat && conv1.k == 1, "aspp: conv1 '", conv1.name, "' does not fit");
    int64_t tile = 1024;
    for (const DeformConv* d : branches) tile = std::min(tile, deform_tile(*d, x.dim(3)));
    cat_tile_.resize(size_t(tile * Ccat));
    const Linear& head = as_linear(conv1);
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t np = std::min(tile, P - p0);
      for (int i = 0; i < 4; ++i)
        deform_rows(*branches[i], x, *offset_masks[i], p0, np, cat_tile_.data() + i * planes, Ccat);
      float* cat = cat_tile_.data();
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < np; ++t) {
        const int64_t b = (p0 + t) / HW;
        std::memcpy(cat + t * Ccat + 4 * planes, pooled.data + b * planes, size_t(planes) * sizeof(float));
      }
      dnn_.linear(head, cat, np, Ccat, y.data + p0 * conv1.out, conv1.out, conv1.act, false);
    }
  }

  void global_avg_pool(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), P = x.dim(1) * x.dim(2), C = x.dim(3);
    for (int64_t b = 0; b < B; ++b) {
      std::vector<double> acc(size_t(C), 0.0);
      for (int64_t p = 0; p < P; ++p) {
        const float* xr = x.data + (b * P + p) * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += xr[c];
      }
      for (int64_t c = 0; c < C; ++c) y.data[b * C + c] = float(acc[c] / double(P));
    }
  }

  void broadcast_channels(const Tensor& v, Tensor& y, int c_offset) override {
    const int64_t B = y.dim(0), P = y.dim(1) * y.dim(2), Cy = y.dim(3), C = v.dim(3);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * P; ++r) {
      std::memcpy(y.data + r * Cy + c_offset, v.data + (r / P) * C, size_t(C) * sizeof(float));
    }
  }

  void add(const Tensor& x, Tensor& y) override {
    const int64_t n = y.numel();
    float* yd = y.data;
    const float* xd = x.data;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) yd[i] += xd[i];
  }

  void mul_gate(const Tensor& g, Tensor& p) override {
    const int64_t P = p.numel() / p.dim(3), C = p.dim(3);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < P; ++i) {
      const float gv = g.data[i];
      float* pr = p.data + i * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) pr[c] *= gv;
    }
  }

 private:
  static bool is_pointwise(const Conv2d& c) { return c.k == 1 && c.stride == 1 && c.pad == 0; }
  static bool is_same_size(const Conv2d& c) { return c.stride == 1 && 2 * c.pad == c.k - 1 && c.k <= 15; }
  static bool is_single_output(const Conv2d& c) { return c.out == 1 && c.in % 16 == 0 && is_same_size(c); }
  // What conv_pair's banded kernel handles as its first convolution: from the image's few
  // channels, to at most 256, with no activation or ReLU.
  static bool is_input_conv(const Conv2d& c) {
    return is_same_size(c) && c.in <= 4 && c.out % 16 == 0 && c.out <= 256 &&
           (c.act == Act::None || c.act == Act::Relu);
  }

  // conv_pair's first convolution: [out, in, ky, kx] -> [ky, kx, in, out].
  const std::vector<float>& input_conv_weights(const Conv2d& c) {
    auto it = input_conv_.find(c.id.value);
    if (it != input_conv_.end()) return it->second;
    const float* cw = c.folded_weight(stage_);
    std::vector<float> w(size_t(c.out) * c.in * c.k * c.k);
    for (int o = 0; o < c.out; ++o)
      for (int i = 0; i < c.in; ++i)
        for (int t = 0; t < c.k * c.k; ++t)
          w[(size_t(t) * c.in + i) * c.out + o] = cw[(size_t(o) * c.in + i) * c.k * c.k + t];
    return input_conv_.emplace(c.id.value, std::move(w)).first->second;
  }

  // conv_single_output's weights: [in, ky, kx] -> [ky, kx, in].
  const std::vector<float>& tap_major(const Conv2d& c) {
    auto it = tap_major_.find(c.id.value);
    if (it != tap_major_.end()) return it->second;
    const float* cw = c.folded_weight(stage_);
    std::vector<float> w(size_t(c.in) * c.k * c.k);
    for (int i = 0; i < c.in; ++i)
      for (int t = 0; t < c.k * c.k; ++t) w[size_t(t) * c.in + i] = cw[size_t(i) * c.k * c.k + t];
    return tap_major_.emplace(c.id.value, std::move(w)).first->second;
  }

  // Positions per tile: about 8 MB of sampled columns.
  static int64_t deform_tile(const DeformConv& d, int64_t Ci) {
    const int64_t K = int64_t(d.k) * d.k * Ci;
    return std::max<int64_t>(64, (int64_t(8) << 20) / (K * 4));
  }

  // Rows [p0, p0 + np) of the flattened [B·H·W] output: bilinear samples with the modulation
  // applied into columns [np, k²·Ci] (tap-major), then one GEMM with the folded BatchNorm bias
  // and ReLU into a dense tile, copied to dst (row stride ldd).
  void deform_rows(const DeformConv& d, const Tensor& x, const Tensor& om, int64_t p0, int64_t np,
                   float* dst, int64_t ldd) {
    const Linear& gemm = deform_gemm(d);
    const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
    const int k = d.k, kk = k * k;
    const int64_t K = int64_t(kk) * Ci;
    if (cols_.size() < size_t(np * K)) cols_.resize(size_t(np * K));
    float* cols = cols_.data();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < np; ++t) {
      const int64_t pos = p0 + t;
      const int64_t b = pos / (H * W), p = (pos / W) % H, q = pos % W;
      const float* o = om.data + pos * 3 * kk;
      const float* xb = x.data + b * H * W * Ci;
      for (int n = 0; n < kk; ++n) {
        float* col = cols + t * K + int64_t(n) * Ci;
        const float sy = float(p - d.pad + n / k) + o[2 * n];
        const float sx = float(q - d.pad + n % k) + o[2 * n + 1];
        const float mask = 2.f / (1.f + cpu::fast_exp(-o[2 * kk + n]));
        if (!(sy > -1.f && sy < float(H) && sx > -1.f && sx < float(W))) {
          std::memset(col, 0, size_t(Ci) * sizeof(float));
          continue;
        }
        const int y0 = int(std::floor(sy)), x0 = int(std::floor(sx));
        const float ly = sy - float(y0), lx = sx - float(x0);
        const float hy = 1.f - ly, hx = 1.f - lx;
        // the four corners with their weights; a corner outside the image contributes 0
        const float* c00 = (y0 >= 0 && x0 >= 0) ? xb + (int64_t(y0) * W + x0) * Ci : nullptr;
        const float* c01 = (y0 >= 0 && x0 + 1 < W) ? xb + (int64_t(y0) * W + x0 + 1) * Ci : nullptr;
        const float* c10 = (y0 + 1 < H && x0 >= 0) ? xb + (int64_t(y0 + 1) * W + x0) * Ci : nullptr;
        const float* c11 = (y0 + 1 < H && x0 + 1 < W) ? xb + (int64_t(y0 + 1) * W + x0 + 1) * Ci : nullptr;
        const float w00 = hy * hx * mask, w01 = hy * lx * mask, w10 = ly * hx * mask, w11 = ly * lx * mask;
        if (c00 && c01 && c10 && c11) {
#pragma omp simd
          for (int64_t c = 0; c < Ci; ++c)
            col[c] = w00 * c00[c] + w01 * c01[c] + w10 * c10[c] + w11 * c11[c];
        } else {
          for (int64_t c = 0; c < Ci; ++c) {
            float v = 0.f;
            if (c00) v += w00 * c00[c];
            if (c01) v += w01 * c01[c];
            if (c10) v += w10 * c10[c];
            if (c11) v += w11 * c11[c];
            col[c] = v;
          }
        }
      }
    }
    // oneDNN's fast (brgemm) matmul wants a dense destination: GEMM into a tile, then copy.
    const int64_t Co = gemm.out;
    if (tile_out_.size() < size_t(np * Co)) tile_out_.resize(size_t(np * Co));
    dnn_.linear(gemm, cols, np, K, tile_out_.data(), Co, d.regular.act, false);
    const float* src = tile_out_.data();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < np; ++t) std::memcpy(dst + t * ldd, src + t * Co, size_t(Co) * sizeof(float));
  }

  // Packs `l` from `weights` [out, in] (valid for this call only).
  void pack_from(Linear& l, const float* weights) {
    l.mapped_weight = {weights, size_t(l.in) * l.out, nullptr};
    dnn_.prepare(l);
    l.mapped_weight = {};
  }

  // A 1×1 convolution's weight [out, in, 1, 1] is a linear's [out, in].
  static Linear linear_shape(const Conv2d& c) {
    Linear l;
    l.name = c.name;
    l.in = c.in;
    l.out = c.out;
    l.bias = c.bias;
    return l;
  }
  const Linear& as_linear(const Conv2d& c) {
    auto it = conv_linears_.find(c.id.value);
    if (it != conv_linears_.end()) return it->second;
    // not prepared: a copy of the layer's weights, packed on first use
    Linear l = linear_shape(c);
    const float* w = c.folded_weight(stage_);
    l.weight.assign(w, w + size_t(c.in) * c.out);
    return conv_linears_.emplace(c.id.value, std::move(l)).first->second;
  }

  // The regular_conv weight [out, in, k, k] as a linear over columns ordered (tap, channel).
  static Linear deform_gemm_shape(const DeformConv& d) {
    Linear l;
    l.name = d.regular.name;
    l.in = d.k * d.k * d.regular.in;
    l.out = d.regular.out;
    l.bias = d.regular.bias;
    return l;
  }
  static void permute_taps(const DeformConv& d, const float* w, float* out) {
    const Conv2d& rc = d.regular;
    const int kk = d.k * d.k;
    const size_t in = size_t(kk) * rc.in;
    for (int o = 0; o < rc.out; ++o)
      for (int c = 0; c < rc.in; ++c)
        for (int n = 0; n < kk; ++n)
          out[size_t(o) * in + size_t(n) * rc.in + c] = w[(size_t(o) * rc.in + c) * kk + n];
  }
  const Linear& deform_gemm(const DeformConv& d) {
    auto it = deform_gemms_.find(d.id.value);
    if (it != deform_gemms_.end()) return it->second;
    // not prepared: a copy of the layer's weights, packed on first use
    Linear l = deform_gemm_shape(d);
    l.weight.resize(size_t(l.in) * l.out);
    permute_taps(d, d.regular.folded_weight(stage_), l.weight.data());
    return deform_gemms_.emplace(d.id.value, std::move(l)).first->second;
  }

  std::shared_ptr<CpuWeights> w_;  // shared with the forks
  std::map<uint64_t, Linear>& deform_gemms_ = w_->deform_gemms;
  std::map<uint64_t, std::vector<float>>& tap_major_ = w_->tap_major;
  std::map<uint64_t, std::vector<float>>& input_conv_ = w_->input_conv;
  std::map<uint64_t, Linear>& conv_linears_ = w_->conv_linears;
  cpu::OneDnn dnn_;  // this executor's stream and primitives
  std::vector<float> cols_, tile_out_, cat_tile_;
  HugeBuffer stage_, gemm_stage_;  // plain weights while packing
  Scratch scratch_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace biref
