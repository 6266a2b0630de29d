// Swin window attention on the CPU: register-tiled scores and P·V, relative-position bias,
// shift mask and softmax in one pass, no mask tensor.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

namespace {

// Region label for the shift mask of a padded coordinate: [0, n−w) -> 0, [n−w, n−s) -> 1, rest 2.
inline int region(int p, int n, int window, int shift) {
  return p < n - window ? 0 : (p < n - shift ? 1 : 2);
}

// s[4][64] (row stride ldS) = q[4][hd] · kt[hd][64] (row stride ldK), all in registers.
void score_tile(const float* q, int hd, const float* kt, int ldK, float* s) {
  using v16 = cpu::v16;
  v16 acc[4][4] = {};
  for (int d = 0; d < hd; ++d) {
    const float* kr = kt + size_t(d) * ldK;
    const v16 k0 = *cpu::v16_at(kr), k1 = *cpu::v16_at(kr + 16), k2 = *cpu::v16_at(kr + 32),
              k3 = *cpu::v16_at(kr + 48);
    for (int r = 0; r < 4; ++r) {
      const float a = q[size_t(r) * hd + d];
      acc[r][0] += a * k0;
      acc[r][1] += a * k1;
      acc[r][2] += a * k2;
      acc[r][3] += a * k3;
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 4; ++j) *cpu::v16_at(s + size_t(r) * ldK + 16 * j) = acc[r][j];
}

// out[r][0:hd] (row stride ldo) = Σ_m p[r][m] · v[m][0:hd] for r < rows.
template <int HD>
void pv_tile(const float* p, int ldp, int N, const float* v, int hd_rt, int rows, float* out,
             int ldo) {
  if constexpr (HD == 32) {
    using v16 = cpu::v16;
    v16 acc[4][2] = {};
    for (int m = 0; m < N; ++m) {
      const v16 v0 = *cpu::v16_at(v + size_t(m) * 32), v1 = *cpu::v16_at(v + size_t(m) * 32 + 16);
      for (int r = 0; r < 4; ++r) {
        const float a = p[size_t(r) * ldp + m];
        acc[r][0] += a * v0;
        acc[r][1] += a * v1;
      }
    }
    for (int r = 0; r < rows; ++r) {
      *cpu::v16_at(out + size_t(r) * ldo) = acc[r][0];
      *cpu::v16_at(out + size_t(r) * ldo + 16) = acc[r][1];
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

// One (window, head) per job. q, kᵀ and v of the head are first gathered into contiguous
// buffers (kᵀ padded with zeros to a multiple of 64 keys); scores are computed as 4 queries ×
// 64 keys register tiles (16 accumulators); bias, shift mask and softmax in one pass; then P·V
// as 4 queries × head_dim register tiles.
template <int HD>
void attention_kernel(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                      int hd_rt, const float* rel_bias, float* out, Scratch& scratch, int threads) {
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
          label[t] = region(wy * w + t / w, g.hp, w, g.shift) * 3 +
                     region(wx * w + t % w, g.wp, w, g.shift);
      }
      for (int n0 = 0; n0 < NR; n0 += 4)
        for (int m0 = 0; m0 < NP; m0 += 64)
          score_tile(q + size_t(n0) * hd, hd, kt + m0, NP, s + size_t(n0) * NP + m0);
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
        pv_tile<HD>(s + size_t(n0) * NP, NP, N, v, hd, rows, out + (bw * N + n0) * C + h * hd, C);
      }
    }
  }
}

}  // namespace

void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads, int hd,
                      const float* rel_bias, float* out, Scratch& scratch) {
  // Every Swin v1 variant has 32 channels per head: a compile-time width keeps a query's
  // output row in registers.
  const int N = g.tokens(), NP = (N + 63) / 64 * 64, NR = (N + 3) / 4 * 4;
  const int threads = omp_get_max_threads();
  scratch.reserve(threads, size_t(NR) * hd + size_t(hd) * NP + size_t(N) * hd + size_t(NR) * NP,
                  size_t(NP));
  if (hd == 32) {
    attention_kernel<32>(qkv, batch, g, heads, hd, rel_bias, out, scratch, threads);
  } else {
    attention_kernel<0>(qkv, batch, g, heads, hd, rel_bias, out, scratch, threads);
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"
