// refine_foreground: the official "blur fusion" foreground estimation (docs/spec/pipeline.md),
// two passes of estimate() with r = 90 then r = 6. Every blur is a normalised r x r box filter
// (cv::blur: anchor r/2, BORDER_REFLECT_101) computed with running sums, so its cost is
// O(pixels) whatever r; rows of the horizontal pass and column blocks of the vertical pass run in
// parallel.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "biref/pipeline.h"
#include "core/check.h"
#include "image/codec.h"

namespace biref {

namespace {

// Index i (any integer) reflected into [0, n) as BORDER_REFLECT_101 does: -1 -> 1, n -> n - 2.
// Inside [0, n) it is i itself: one compare on the hot path.
inline int reflect101(int i, int n) {
  if (unsigned(i) < unsigned(n)) return i;
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
  return i;
}

// A planar float image: `channels` planes of w x h, left uninitialised (every user writes all of
// it first: zeroing and faulting in fresh pages took more time than the blurs themselves).
struct Planes {
  int w = 0, h = 0, channels = 0;
  std::unique_ptr<float[]> v;
  Planes(int w_, int h_, int c_) : w(w_), h(h_), channels(c_), v(new float[size_t(w_) * h_ * c_]) {}
  float* plane(int c) { return v.get() + size_t(c) * w * h; }
  const float* plane(int c) const { return v.get() + size_t(c) * w * h; }
  void copy_from(const Planes& o) {
    std::copy(o.v.get(), o.v.get() + size_t(w) * h * channels, v.get());
  }
};

// Buffers of one refine_foreground call, allocated once for its four estimates' twelve blurs.
struct Scratch {
  Planes fa, bb, ba;
  std::unique_ptr<double[]> rows;  // horizontal window sums of one plane
  Scratch(int w, int h) : fa(w, h, 3), bb(w, h, 3), ba(w, h, 1), rows(new double[size_t(w) * h]) {}
};

// dst = box_r(src) per plane, sums in double as OpenCV's float box filter keeps them.
void box_blur(const Planes& src, Planes& dst, int r, double* rows_buf) {
  const int w = src.w, h = src.h, before = r / 2, after = r - 1 - before;
  const double scale = 1.0 / (double(r) * r);
  double* const rows = rows_buf;
  for (int c = 0; c < src.channels; ++c) {
    const float* in = src.plane(c);
    float* out = dst.plane(c);
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; ++y) {
      const float* row = in + size_t(y) * w;
      double* sum = rows + size_t(y) * w;
      double s = 0;
      for (int k = -before; k <= after; ++k) s += row[reflect101(k, w)];
      sum[0] = s;
      // The window's ends reflect only within `r` of the borders: the middle indexes directly.
      const int lo = std::min(w, before + 1), hi = std::max(lo, w - after);
      for (int x = 1; x < lo; ++x) {
        s += double(row[reflect101(x + after, w)]) - double(row[reflect101(x - 1 - before, w)]);
        sum[x] = s;
      }
      for (int x = std::max(lo, 1); x < hi; ++x) {
        s += double(row[x + after]) - double(row[x - 1 - before]);
        sum[x] = s;
      }
      for (int x = std::max(hi, 1); x < w; ++x) {
        s += double(row[reflect101(x + after, w)]) - double(row[reflect101(x - 1 - before, w)]);
        sum[x] = s;
      }
    }
    // Vertical: running sums down blocks of columns (contiguous in memory).
    constexpr int kBlock = 64;
    const int blocks = (w + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < blocks; ++b) {
      const int x0 = b * kBlock, x1 = std::min(w, x0 + kBlock), n = x1 - x0;
      double acc[kBlock];
      std::fill(acc, acc + n, 0.0);
      for (int k = -before; k <= after; ++k) {
        const double* src_row = rows + size_t(reflect101(k, h)) * w + x0;
        for (int i = 0; i < n; ++i) acc[i] += src_row[i];
      }
      for (int y = 0; y < h; ++y) {
        if (y > 0) {
          const double* add = rows + size_t(reflect101(y + after, h)) * w + x0;
          const double* sub = rows + size_t(reflect101(y - 1 - before, h)) * w + x0;
          for (int i = 0; i < n; ++i) acc[i] += add[i] - sub[i];
        }
        float* o = out + size_t(y) * w + x0;
        for (int i = 0; i < n; ++i) o[i] = float(acc[i] * scale);
      }
    }
  }
}

// One estimate() of the reference: F and B are updated in place (F', and bB for B).
void estimate(const Planes& image, Planes& F, Planes& B, const Planes& a, int r, Scratch& s) {
  const int w = image.w, h = image.h;
  const size_t n = size_t(w) * h;
  Planes &fa = s.fa, &bb = s.bb, &ba = s.ba;
  const float* al = a.plane(0);
  for (int c = 0; c < 3; ++c) {
    const float *f = F.plane(c), *bk = B.plane(c);
    float *fo = fa.plane(c), *bo = bb.plane(c);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) {
      fo[i] = f[i] * al[i];
      bo[i] = bk[i] * (1.f - al[i]);
    }
  }
  box_blur(a, ba, r, s.rows.get());
  box_blur(fa, fa, r, s.rows.get());  // in place: the sums are taken before anything is written
  box_blur(bb, bb, r, s.rows.get());
  const float* bal = ba.plane(0);
  for (int c = 0; c < 3; ++c) {
    const float* im = image.plane(c);
    const float *bf_sum = fa.plane(c), *bb_sum = bb.plane(c);
    float *fo = F.plane(c), *bo = B.plane(c);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) {
      const float bF = bf_sum[i] / (bal[i] + 1e-5f);
      const float bB = bb_sum[i] / ((1.f - bal[i]) + 1e-5f);
      const float f = bF + al[i] * (im[i] - al[i] * bF - (1.f - al[i]) * bB);
      fo[i] = std::clamp(f, 0.f, 1.f);
      bo[i] = bB;
    }
  }
}

}  // namespace

Image refine_foreground(const Image& rgb, const Image& mask) {
  check_image(rgb, "refine_foreground image");
  check_image(mask, "refine_foreground mask");
  BIREF_CHECK(rgb.channels == 3, "refine_foreground expects an RGB image, got ", rgb.channels,
              " channels");
  BIREF_CHECK(mask.channels == 1 && mask.width == rgb.width && mask.height == rgb.height,
              "refine_foreground: the mask (", mask.width, "x", mask.height, ", ", mask.channels,
              " channels) must be one channel at the image's size ", rgb.width, "x", rgb.height);
  const int w = rgb.width, h = rgb.height;
  const size_t n = size_t(w) * h;
  Planes image(w, h, 3), a(w, h, 1);
  for (int c = 0; c < 3; ++c) {
    float* p = image.plane(c);
    for (size_t i = 0; i < n; ++i) p[i] = float(rgb.pixels[i * 3 + size_t(c)]) / 255.f;
  }
  for (size_t i = 0; i < n; ++i) a.v[i] = float(mask.pixels[i]) / 255.f;
  Planes F(w, h, 3), B(w, h, 3);
  F.copy_from(image);
  B.copy_from(image);
  Scratch scratch(w, h);
  estimate(image, F, B, a, 90, scratch);
  estimate(image, F, B, a, 6, scratch);
  Image out;
  out.width = w;
  out.height = h;
  out.channels = 3;
  out.pixels.resize(n * 3);
  for (int c = 0; c < 3; ++c) {
    const float* f = F.plane(c);
    for (size_t i = 0; i < n; ++i) out.pixels[i * 3 + size_t(c)] = uint8_t(f[i] * 255.f);
  }
  return out;
}

}  // namespace biref
