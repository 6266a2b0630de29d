// refine_foreground: the official "blur fusion" foreground estimation (docs/spec/pipeline.md),
// two passes of estimate() with r = 90 then r = 6. Every blur is a normalised r x r box filter
// (cv::blur: anchor r/2, BORDER_REFLECT_101) computed with running sums, so its cost is
// O(pixels) whatever r; rows of the horizontal pass and column blocks of the vertical pass run in
// parallel.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "biref/pipeline.h"
#include "core/check.h"
#include "image/codec.h"

namespace biref {

namespace {

// Index i (any integer) reflected into [0, n) as BORDER_REFLECT_101 does: -1 -> 1, n -> n - 2.
int reflect101(int i, int n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
  return i;
}

// A planar float image: `channels` planes of w x h.
struct Planes {
  int w = 0, h = 0, channels = 0;
  std::vector<float> v;
  Planes(int w_, int h_, int c_) : w(w_), h(h_), channels(c_), v(size_t(w_) * h_ * c_) {}
  float* plane(int c) { return v.data() + size_t(c) * w * h; }
  const float* plane(int c) const { return v.data() + size_t(c) * w * h; }
};

// dst = box_r(src) per plane, sums in double as OpenCV's float box filter keeps them.
void box_blur(const Planes& src, Planes& dst, int r) {
  const int w = src.w, h = src.h, before = r / 2, after = r - 1 - before;
  const double scale = 1.0 / (double(r) * r);
  std::vector<double> rows(size_t(w) * h);  // horizontal window sums of one plane
  for (int c = 0; c < src.channels; ++c) {
    const float* in = src.plane(c);
    float* out = dst.plane(c);
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; ++y) {
      const float* row = in + size_t(y) * w;
      double* sum = rows.data() + size_t(y) * w;
      double s = 0;
      for (int k = -before; k <= after; ++k) s += row[reflect101(k, w)];
      sum[0] = s;
      for (int x = 1; x < w; ++x) {
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
        const double* src_row = rows.data() + size_t(reflect101(k, h)) * w + x0;
        for (int i = 0; i < n; ++i) acc[i] += src_row[i];
      }
      for (int y = 0; y < h; ++y) {
        if (y > 0) {
          const double* add = rows.data() + size_t(reflect101(y + after, h)) * w + x0;
          const double* sub = rows.data() + size_t(reflect101(y - 1 - before, h)) * w + x0;
          for (int i = 0; i < n; ++i) acc[i] += add[i] - sub[i];
        }
        float* o = out + size_t(y) * w + x0;
        for (int i = 0; i < n; ++i) o[i] = float(acc[i] * scale);
      }
    }
  }
}

// One estimate() of the reference: F and B are updated in place (F', and bB for B).
void estimate(const Planes& image, Planes& F, Planes& B, const Planes& a, int r) {
  const int w = image.w, h = image.h;
  const size_t n = size_t(w) * h;
  Planes fa(w, h, 3), bb(w, h, 3), ba(w, h, 1);
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
  box_blur(a, ba, r);
  box_blur(fa, fa, r);  // in place: the sums are taken before anything is written back
  box_blur(bb, bb, r);
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
  Planes F = image, B = image;
  estimate(image, F, B, a, 90);
  estimate(image, F, B, a, 6);
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
