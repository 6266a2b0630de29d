// Swin window attention on the CPU: one (window, head) per job. kᵀ is transposed in registers,
// the scores are register tiles that read q straight from the qkv rows, then scale, bias, shift
// mask and softmax run on whole vectors in two passes over the rows, and P·V reads v from the qkv
// rows and divides by the softmax sum as it stores. No mask tensor, no copies of q or v.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_level.h"
#include "ops/cpu/vec_math.h"
#include "ops/cpu/window_jobs.h"

namespace biref::cpu::BIREF_ISA {

namespace {

typedef int ivec __attribute__((vector_size(4 * kLanes)));
typedef int ivec_u __attribute__((vector_size(4 * kLanes), aligned(4), may_alias));

// Register tiles per level, in the level's own vector width: R query rows × C vectors of keys
// (scores) or R query rows × the head's 32 channels (P·V) in accumulators, sized to the
// registers: AVX-512 has 32 of 16 floats (and broadcasts straight from memory), AVX2 and SSE 16
// of 8 and 4.
#if defined(BIREF_ISA_AVX512) || defined(BIREF_ISA_AVX512_BF16)
constexpr int kScoreRows = 6, kScoreVecs = 4, kPvRows = 6;
#elif defined(BIREF_ISA_AVX2)
constexpr int kScoreRows = 2, kScoreVecs = 4, kPvRows = 2;
#else
constexpr int kScoreRows = 1, kScoreVecs = 4, kPvRows = 1;
#endif
constexpr int kHeadDim = 32;  // every Swin v1 variant: the register-tiled path
static_assert(kHeadDim % kLanes == 0);

// Every lane of the result holds the max (or sum) of v's lanes.
template <bool Max, int S = kLanes / 2, size_t... I>
[[gnu::always_inline]] inline vec all_lanes(vec v, std::index_sequence<I...> seq) {
  if constexpr (S == 0) {
    return v;
  } else {
    const vec o = __builtin_shufflevector(v, v, int(I ^ S)...);
    if constexpr (Max)
      v = v > o ? v : o;
    else
      v = v + o;
    return all_lanes<Max, S / 2>(v, seq);
  }
}
[[gnu::always_inline]] inline float hmax(vec v) {
  return all_lanes<true>(v, std::make_index_sequence<kLanes>{})[0];
}
[[gnu::always_inline]] inline float hsum(vec v) {
  return all_lanes<false>(v, std::make_index_sequence<kLanes>{})[0];
}

// e^x lane by lane: vec_math.h's fast_exp on whole vectors (the same operations, so the same
// results); a -inf lane gives exactly 0.
[[gnu::always_inline]] inline vec exp_or_zero(vec x) {
  const vec zero = {};
  const vec c = x < -87.0f ? zero - 87.0f : (x > 88.0f ? zero + 88.0f : x);
  const vec e = cpu::exp_clamped<vec, ivec>(c);
  return x == -INFINITY ? zero : e;
}

// kt[d][m] (row stride NP) = k[m][d] for d < kHeadDim, m < NP: k's rows are `ld` floats apart;
// rows m >= N are zeros.
void transpose_keys(const float* k, int64_t ld, int N, int NP, float* kt) {
  for (int m0 = 0; m0 < NP; m0 += kLanes)
    for (int d0 = 0; d0 < kHeadDim; d0 += kLanes) {
      vec r[kLanes];
      for (int i = 0; i < kLanes; ++i)
        r[i] = m0 + i < N ? vec(*at(k + int64_t(m0 + i) * ld + d0)) : vec{};
      transpose(r);
      for (int j = 0; j < kLanes; ++j) *at(kt + size_t(d0 + j) * NP + m0) = r[j];
    }
}

// s[R][C·kLanes] (row stride lds) = q[R][kHeadDim] (row stride ldq) · kt[kHeadDim][C·kLanes]
// (row stride ldk), in registers.
template <int R, int C>
void score_tile(const float* q, int64_t ldq, const float* kt, int ldk, float* s, int lds) {
  vec acc[R][C] = {};
  for (int d = 0; d < kHeadDim; ++d) {
    const float* kr = kt + size_t(d) * ldk;
    vec k[C];
    for (int c = 0; c < C; ++c) k[c] = *at(kr + kLanes * c);
    for (int r = 0; r < R; ++r) {
      const float a = q[r * ldq + d];
      for (int c = 0; c < C; ++c) acc[r][c] += a * k[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) *at(s + size_t(r) * lds + kLanes * c) = acc[r][c];
}

// The scores of R query rows against all NP keys.
template <int R>
void score_rows(const float* q, int64_t ldq, const float* kt, int NP, float* s) {
  int m0 = 0;
  for (; m0 + kScoreVecs * kLanes <= NP; m0 += kScoreVecs * kLanes)
    score_tile<R, kScoreVecs>(q, ldq, kt + m0, NP, s + m0, NP);
  switch ((NP - m0) / kLanes) {
    case 3:
      score_tile<R, 3>(q, ldq, kt + m0, NP, s + m0, NP);
      break;
    case 2:
      score_tile<R, 2>(q, ldq, kt + m0, NP, s + m0, NP);
      break;
    case 1:
      score_tile<R, 1>(q, ldq, kt + m0, NP, s + m0, NP);
      break;
    default:
      break;
  }
  static_assert(kScoreVecs <= 4);
}

template <int R = kScoreRows>
void scores(const float* q, int64_t ldq, int rows, const float* kt, int NP, float* s) {
  if constexpr (R > 0) {
    if (rows == R) return score_rows<R>(q, ldq, kt, NP, s);
    if (rows < R) return scores<R - 1>(q, ldq, rows, kt, NP, s);
  }
}

// out[r][0:kHeadDim] (row stride ldo) = inv[r] · Σ_{m<N} p[r][m] · v[m] (p's rows lds apart,
// v's ldv), for R rows.
template <int R>
void pv_tile(const float* p, int lds, int N, const float* v, int64_t ldv, const float* inv,
             float* out, int64_t ldo) {
  constexpr int V = kHeadDim / kLanes;
  vec acc[R][V] = {};
  for (int m = 0; m < N; ++m) {
    vec vv[V];
    for (int j = 0; j < V; ++j) vv[j] = *at(v + m * ldv + kLanes * j);
    for (int r = 0; r < R; ++r) {
      const float a = p[size_t(r) * lds + m];
      for (int j = 0; j < V; ++j) acc[r][j] += a * vv[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V; ++j) *at(out + r * ldo + kLanes * j) = acc[r][j] * inv[r];
}

template <int R = kPvRows>
void pv(const float* p, int lds, int rows, int N, const float* v, int64_t ldv, const float* inv,
        float* out, int64_t ldo) {
  if constexpr (R > 0) {
    if (rows == R) return pv_tile<R>(p, lds, N, v, ldv, inv, out, ldo);
    if (rows < R) return pv<R - 1>(p, lds, rows, N, v, ldv, inv, out, ldo);
  }
}

// Softmax of the N score rows (NP wide, scaled, biased and masked here; masked keys get exactly
// zero weight: a row's own token is never masked), each left as e^(s − max); inv[n] = 1/Σ.
// Two passes over all the rows, so that the rows' dependency chains (horizontal max, the
// exponential, horizontal sum, division) overlap; inv[n] holds the row's max in between.
// label: each key's shift-mask region (NP of them), or null.
void softmax_rows(float* s, int N, int NP, float scale, const float* bias, const int* label,
                  float* inv) {
  for (int n = 0; n < N; ++n) {
    float* sr = s + size_t(n) * NP;
    const float* br = bias + size_t(n) * NP;
    const ivec own = ivec{} + (label ? label[n] : 0);
    vec mx = vec{} - INFINITY;
    for (int m = 0; m < NP; m += kLanes) {
      vec x = vec(*at(sr + m)) * scale + vec(*at(br + m));
      if (label) {
        const ivec lm = *reinterpret_cast<const ivec_u*>(label + m);
        x = lm != own ? vec{} - INFINITY : x;
      }
      *at(sr + m) = x;
      mx = mx > x ? mx : x;
    }
    inv[n] = hmax(mx);
  }
  for (int n = 0; n < N; ++n) {
    float* sr = s + size_t(n) * NP;
    const float top = inv[n];
    vec sum = {};
    for (int m = 0; m < NP; m += kLanes) {
      const vec e = exp_or_zero(vec(*at(sr + m)) - top);
      *at(sr + m) = e;
      sum += e;
    }
    inv[n] = 1.f / hsum(sum);
  }
}

// One (window, head): q, k and v rows `ld` floats apart from q (k at +C, v at +2C); bias [N][NP]
// (-inf past N); out rows C apart. buf: kᵀ [32][NP], scores [N][NP], 1/Σ [N]. (A function of
// its own: clang does not give OpenMP's outlined bodies the level's target, and vectors passed
// between functions need it.)
void attend(const float* q, int64_t ld, int C, int N, int NP, float scale, const float* bias,
            const int* label, float* out, float* buf) {
  float* kt = buf;
  float* s = kt + size_t(kHeadDim) * NP;
  float* inv = s + size_t(N) * NP;
  transpose_keys(q + C, ld, N, NP, kt);
  for (int n0 = 0; n0 < N; n0 += kScoreRows)
    scores(q + n0 * ld, ld, std::min(kScoreRows, N - n0), kt, NP, s + size_t(n0) * NP);
  softmax_rows(s, N, NP, scale, bias, label, inv);
  for (int n0 = 0; n0 < N; n0 += kPvRows)
    pv(s + size_t(n0) * NP, NP, std::min(kPvRows, N - n0), N, q + 2 * C, ld, inv + n0,
       out + int64_t(n0) * C, C);
}

// The register-tiled path (head_dim 32). Per thread: kᵀ [32][NP], scores [N][NP], 1/Σ per row
// [N] and the labels of the keys [NP]. NP: N rounded up to the vector width; the bias rows are
// read NP wide, from a copy padded with -inf when N is not a multiple of it.
void attention_tiled(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                     const float* rel_bias, float* out, Scratch& scratch, int threads) {
  const int N = g.tokens(), C = heads * kHeadDim;
  const int NP = (N + kLanes - 1) / kLanes * kLanes;
  const int64_t ld = 3 * int64_t(C);
  const float scale = 1.f / std::sqrt(float(kHeadDim));
  scratch.reserve(threads, size_t(kHeadDim) * NP + size_t(N) * NP + size_t(N), size_t(NP));
  const float* bias = padded_bias(rel_bias, heads, N, NP, scratch);
  for_each_window_head(qkv, batch, g, heads, kHeadDim, NP, bias, out, scratch, threads,
                       [=](const float* q, const float* bias_h, const int* label, float* o,
                           float* buf) { attend(q, ld, C, N, NP, scale, bias_h, label, o, buf); });
}

// Any head width: plain loops (no released model has one; kept for the op's full contract).
// One (window, head) as attend() above, s: N floats.
void attend_plain(const float* q, int64_t ld, int C, int N, int hd, float scale, const float* bias,
                  const int* label, float* out, float* s) {
  const float* k = q + C;
  const float* v = q + 2 * C;
  for (int n = 0; n < N; ++n) {
    const float* bn = bias + size_t(n) * N;
    float mx = -INFINITY;
    for (int m = 0; m < N; ++m) {
      float dot = 0.f;
      for (int d = 0; d < hd; ++d) dot += q[n * ld + d] * k[m * ld + d];
      s[m] = label && label[m] != label[n] ? -INFINITY : dot * scale + bn[m];
      mx = std::max(mx, s[m]);
    }
    float sum = 0.f;
    for (int m = 0; m < N; ++m) {
      s[m] = s[m] == -INFINITY ? 0.f : cpu::fast_exp(s[m] - mx);
      sum += s[m];
    }
    float* o = out + int64_t(n) * C;
    for (int d = 0; d < hd; ++d) {
      float acc = 0.f;
      for (int m = 0; m < N; ++m) acc += s[m] * v[m * ld + d];
      o[d] = acc / sum;
    }
  }
}

}  // namespace

void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads, int hd,
                      const float* rel_bias, float* out, Scratch& scratch) {
  const int N = g.tokens();
  const int threads = omp_get_max_threads();
  if (hd == kHeadDim) {
    attention_tiled(qkv, batch, g, heads, rel_bias, out, scratch, threads);
  } else {
    scratch.reserve(threads, size_t(N), size_t(N));
    const int C = heads * hd;
    const int64_t ld = 3 * int64_t(C);
    const float scale = 1.f / std::sqrt(float(hd));
    for_each_window_head(
        qkv, batch, g, heads, hd, N, rel_bias, out, scratch, threads,
        [=](const float* q, const float* bias_h, const int* label, float* o, float* s) {
          attend_plain(q, ld, C, N, hd, scale, bias_h, label, o, s);
        });
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"
