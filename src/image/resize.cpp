// Pillow's Image.resize default filter (bicubic, a = -0.5, antialiased), as the official
// dynamic-size inference shrinks each image: a separable convolution whose support widens by the
// scale factor when shrinking, coefficients normalised per output pixel then rounded to 22-bit
// fixed point, the horizontal pass first, each pass rounded and clamped to 8 bits. Written from
// docs/spec/pipeline.md; equal to Pillow 9.4 bit for bit on 8-bit images.
#include <cmath>
#include <cstdint>
#include <vector>

#include "biref/image.h"
#include "core/check.h"
#include "image/codec.h"

namespace biref {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// Per output pixel: the first input index, the count, and `ksize` fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;
};

Coeffs precompute(int in_size, int out_size) {
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;  // bicubic support 2, widened when shrinking
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.first.resize(size_t(out_size));
  c.count.resize(size_t(out_size));
  c.k.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> w(size_t(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0;
    for (int x = 0; x < xmax; ++x) {
      w[size_t(x)] = bicubic((x + xmin - center + 0.5) * ss);
      ww += w[size_t(x)];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0 ? w[size_t(x)] / ww : w[size_t(x)];
      c.k[size_t(xx) * c.ksize + x] =
          int32_t(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.first[size_t(xx)] = xmin;
    c.count[size_t(xx)] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t v) {
  if (v >= (int64_t(1) << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
}

}  // namespace

Image resize_bicubic_antialiased(const Image& in, int width, int height) {
  check_image(in, "resize");
  BIREF_CHECK(width > 0 && height > 0, "resize to ", width, "x", height,
              ": sizes must be positive");
  const int C = in.channels;
  const Coeffs ch = precompute(in.width, width), cv = precompute(in.height, height);
  // Horizontal pass over the rows the vertical pass reads.
  const int y0 = cv.first[0], y1 = cv.first[size_t(height - 1)] + cv.count[size_t(height - 1)];
  std::vector<uint8_t> tmp(size_t(width) * (y1 - y0) * C);
#pragma omp parallel for schedule(static)
  for (int y = y0; y < y1; ++y) {
    const uint8_t* row = in.pixels.data() + size_t(y) * in.width * C;
    uint8_t* out = tmp.data() + size_t(y - y0) * width * C;
    for (int xx = 0; xx < width; ++xx) {
      const int32_t* k = ch.k.data() + size_t(xx) * ch.ksize;
      const uint8_t* src = row + size_t(ch.first[size_t(xx)]) * C;
      for (int c = 0; c < C; ++c) {
        int64_t s = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < ch.count[size_t(xx)]; ++x) s += int64_t(src[size_t(x) * C + c]) * k[x];
        out[size_t(xx) * C + c] = clip8(s);
      }
    }
  }
  Image out;
  out.width = width;
  out.height = height;
  out.channels = C;
  out.pixels.resize(size_t(width) * height * C);
#pragma omp parallel for schedule(static)
  for (int yy = 0; yy < height; ++yy) {
    const int32_t* k = cv.k.data() + size_t(yy) * cv.ksize;
    const int first = cv.first[size_t(yy)] - y0, count = cv.count[size_t(yy)];
    uint8_t* dst = out.pixels.data() + size_t(yy) * width * C;
    for (int i = 0; i < width * C; ++i) {
      int64_t s = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < count; ++y) s += int64_t(tmp[size_t(first + y) * width * C + i]) * k[y];
      dst[i] = clip8(s);
    }
  }
  return out;
}

}  // namespace biref
