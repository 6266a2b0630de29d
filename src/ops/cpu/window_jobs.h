// The (window, head) jobs of Swin window attention, shared by the float32 kernel
// (attention.cpp) and the BF16 one (attention_bf16.cpp): the bias rows padded to the kernels'
// width, the shift mask's region labels, the prefetch of the next job's rows and the spread of
// the jobs over the OpenMP threads. Include after isa_begin.h (it lives in the level's
// namespace, beside the kernels that call it).
#pragma once
#if !defined(BIREF_ISA)
#error "window_jobs.h belongs to a kernel source compiled per instruction set (isa_begin.h)"
#endif
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/kernels.h"

namespace biref::cpu::BIREF_ISA {

// Region label for the shift mask of a padded coordinate: [0, n−w) -> 0, [n−w, n−s) -> 1, rest 2.
inline int shift_region(int p, int n, int window, int shift) {
  return p < n - window ? 0 : (p < n - shift ? 1 : 2);
}

// The shift-mask label of each of the N tokens of window `widx` of the band g (its row counted
// from g.row0), -1 for the padding up to NP.
inline void window_labels(const WindowGeometry& g, int widx, int NP, int* label) {
  const int w = g.window, N = g.tokens();
  const int wy = g.row0 + widx / g.nww(), wx = widx % g.nww();
  for (int t = 0; t < N; ++t)
    label[t] = shift_region(wy * w + t / w, g.hp, w, g.shift) * 3 +
               shift_region(wx * w + t % w, g.wp, w, g.shift);
  for (int t = N; t < NP; ++t) label[t] = -1;
}

// The bias [heads][N][N] as rows NP wide with -inf past N (the padding keys then get zero
// weight): rel_bias itself when NP == N, else a copy in scratch.shared.
inline const float* padded_bias(const float* rel_bias, int heads, int N, int NP, Scratch& scratch) {
  if (NP == N) return rel_bias;
  scratch.reserve_shared(size_t(heads) * N * NP);
  float* padded = scratch.shared.data();
  for (int64_t row = 0; row < int64_t(heads) * N; ++row) {
    std::memcpy(padded + row * NP, rel_bias + row * N, sizeof(float) * size_t(N));
    std::fill(padded + row * NP + N, padded + (row + 1) * NP, -INFINITY);
  }
  return padded;
}

// Runs attend(q, bias_h, label, out, buf) for every (window, head) of the batch, over `threads`
// OpenMP threads: q is the job's first q row (its k at +C, its v at +2C, rows 3C apart), bias_h
// its head's bias rows (NP wide, padded_bias), label its window's labels (window_labels) or null
// without a shift, out its first output row (rows C apart), buf the thread's scratch.f. Before
// each job the next one's q, k and v rows are prefetched: 128-byte pieces 3C floats apart, a
// pattern the hardware prefetchers do not follow, in a qkv far larger than the caches. attend
// is a function of its own, not the loop body: clang does not give OpenMP's outlined bodies the
// level's target, which the kernels' vectors need.
template <class Attend>
void for_each_window_head(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                          int hd, int NP, const float* bias, float* out, Scratch& scratch,
                          int threads, Attend attend) {
  const int N = g.tokens(), C = heads * hd;
  const int64_t ld = 3 * int64_t(C);
  const bool masked = g.shift > 0;
  const int64_t jobs = batch * g.windows() * heads;
#pragma omp parallel num_threads(threads)
  {
    // this thread's buffers, sized before the parallel region (no allocation in here)
    float* buf = scratch.f[size_t(omp_get_thread_num())].data();
    int* label = scratch.i[size_t(omp_get_thread_num())].data();
    int last_window = -1;
#pragma omp for schedule(static)
    for (int64_t job = 0; job < jobs; ++job) {
      const int64_t bw = job / heads;
      const int h = int(job % heads);
      const int widx = int(bw % g.windows());
      if (job + 1 < jobs) {
        const float* next = qkv + (job + 1) / heads * N * ld + (job + 1) % heads * hd;
        for (int n = 0; n < N; ++n)
          for (int part = 0; part < 3; ++part)
            for (int line = 0; line < hd; line += 16)
              __builtin_prefetch(next + n * ld + part * C + line, 0, 3);
      }
      if (masked && widx != last_window) {
        window_labels(g, widx, NP, label);
        last_window = widx;
      }
      attend(qkv + bw * N * ld + h * hd, bias + size_t(h) * N * NP, masked ? label : nullptr,
             out + bw * N * C + h * hd, buf);
    }
  }
}

}  // namespace biref::cpu::BIREF_ISA
