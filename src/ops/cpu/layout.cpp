// Data movement kernels of the CPU backend: Swin window partition and its inverse, patch
// merging, channel concatenation and broadcast, the decoder's image patches.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

void window_partition(const Tensor& x, const WindowGeometry& g, Tensor& win) {
  const int64_t B = x.dim(0), C = x.dim(3);
  const int w = g.window;
  const int band = g.rows * w;    // rows of the shifted frame in the band
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

void window_reverse_add(const Tensor& win, const WindowGeometry& g, Tensor& x) {
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

void patch_merge(const Tensor& x, Tensor& y) {
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

void concat_channels(const std::vector<const Tensor*>& parts, Tensor& y) {
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

// One output pixel at a time: its C·g² channels (one contiguous run, C planes of g² values from
// g² image pixels) filled before the next pixel's, so the writes stay within a few cache lines at
// a time and the reads of an image row serve the next output pixels from cache. (Scattering each image pixel's C values g² floats
// apart instead wrote every cache line piecemeal: 4-10 times slower at 1024².)
void image_patches(const Tensor& x, int g, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t h = H / g, w = W / g, gg = int64_t(g) * g, Cy = C * gg;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * h; ++r) {  // one output row: row i of every tile
    const int64_t b = r / h, i = r % h;
    for (int64_t j = 0; j < w; ++j) {
      float* dst = y.data + (r * w + j) * Cy;
      for (int64_t row = 0; row < g; ++row) {
        const float* src = x.data + ((b * H + row * h + i) * W + j) * C;
        for (int64_t col = 0; col < g; ++col) {
          const float* px = src + col * w * C;
          for (int64_t c = 0; c < C; ++c) dst[c * gg + row * g + col] = px[c];
        }
      }
    }
  }
}

void broadcast_channels(const Tensor& v, Tensor& y, int c_offset) {
  const int64_t B = y.dim(0), P = y.dim(1) * y.dim(2), Cy = y.dim(3), C = v.dim(3);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * P; ++r) {
    std::memcpy(y.data + r * Cy + c_offset, v.data + (r / P) * C, size_t(C) * sizeof(float));
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"
