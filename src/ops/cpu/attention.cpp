// Swin window attention on the CPU: register-tiled scores and P·V, relative-position bias,
// shift mask and softmax in one pass, no mask tensor.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_level.h"
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

namespace {

// Region label for the shift mask of a padded coordinate: [0, n−w) -> 0, [n−w, n−s) -> 1, rest 2.
inline int region(int p, int n, int window, int shift) {
  return p < n - window ? 0 : (p < n - shift ? 1 : 2);
}

// Register tiles per level, in the level's own vector width (a 64-byte v16 below AVX-512 is
// lowered piecewise through memory): R query rows × C vectors of keys (or head dims) in
// accumulators, sized to the registers: AVX-512 32 of 16 floats, AVX2 and SSE 16 of 8 and 4.
#if defined(BIREF_ISA_AVX512)
constexpr int kScoreRows = 4, kScoreVecs = 4, kPvRows = 4;
#elif defined(BIREF_ISA_AVX2)
constexpr int kScoreRows = 2, kScoreVecs = 4, kPvRows = 2;
#else
constexpr int kScoreRows = 1, kScoreVecs = 4, kPvRows = 1;
#endif

// s[R][kLanes·C] (row stride ldK) = q[R][hd] · kt[hd][kLanes·C] (row stride ldK), in registers.
template <int R, int C>
void score_sub(const float* q, int hd, const float* kt, int ldK, float* s) {
  vec acc[R][C] = {};
  for (int d = 0; d < hd; ++d) {
    const float* kr = kt + size_t(d) * ldK;
    vec k[C];
    for (int c = 0; c < C; ++c) k[c] = *at(kr + kLanes * c);
    for (int r = 0; r < R; ++r) {
      const float a = q[size_t(r) * hd + d];
      for (int c = 0; c < C; ++c) acc[r][c] += a * k[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) *at(s + size_t(r) * ldK + kLanes * c) = acc[r][c];
}

// s[4][64] = q[4][hd] · kt[hd][64], in the level's register tiles.
void score_tile(const float* q, int hd, const float* kt, int ldK, float* s) {
  constexpr int keys = kLanes * kScoreVecs;
  for (int r0 = 0; r0 < 4; r0 += kScoreRows)
    for (int c0 = 0; c0 < 64; c0 += keys)
      score_sub<kScoreRows, kScoreVecs>(q + size_t(r0) * hd, hd, kt + c0, ldK,
                                        s + size_t(r0) * ldK + c0);
}

// out[r][0:hd] (row stride ldo) = Σ_m p[r][m] · v[m][0:hd] for r < rows (p has 4 rows).
template <int HD>
void pv_tile(const float* p, int ldp, int N, const float* v, int hd_rt, int rows, float* out,
             int ldo) {
  if constexpr (HD == 32) {
    constexpr int V = 32 / kLanes;
    for (int r0 = 0; r0 < rows; r0 += kPvRows) {
      vec acc[kPvRows][V] = {};
      for (int m = 0; m < N; ++m) {
        vec vv[V];
        for (int j = 0; j < V; ++j) vv[j] = *at(v + size_t(m) * 32 + kLanes * j);
        for (int r = 0; r < kPvRows; ++r) {
          const float a = p[size_t(r0 + r) * ldp + m];
          for (int j = 0; j < V; ++j) acc[r][j] += a * vv[j];
        }
      }
      for (int r = 0; r < kPvRows && r0 + r < rows; ++r)
        for (int j = 0; j < V; ++j) *at(out + size_t(r0 + r) * ldo + kLanes * j) = acc[r][j];
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
