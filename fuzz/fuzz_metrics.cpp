// Fuzzes the evaluation metrics on small images: the input gives the sizes, the pixels and a few
// switches. A biref::Error is not expected here (both images are valid), so any exception, a
// crash, a sanitizer report or a score outside its range (see check_scores) is a finding.
//
// Input layout: [gt width] [gt height] [flags] ([pred width] [pred height] when flags bit 0)
// then the pixels, prediction first, taken from the remaining bytes cyclically (zero when none).
// Sides are 1..64 (value % 64 + 1). Flags: bit 0 the prediction has its own size (it is resized
// to the GT's), bit 1 the GT is binarised to 0/255, bit 2 the prediction is.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include <opencv2/core.hpp>

#include "eval/metrics.h"

namespace {

using biref::eval::ImageScores;
using biref::eval::Key;

struct Reader {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  uint8_t next() { return pos < size ? data[pos++] : 0; }
};

cv::Mat make_image(int width, int height, const uint8_t* pixels, size_t n, size_t& offset,
                   bool binary) {
  cv::Mat m(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t v = n == 0 ? 0 : pixels[offset++ % n];
      if (binary) v = v & 1 ? 255 : 0;
      m.at<uint8_t>(y, x) = v;
    }
  }
  return m;
}

[[noreturn]] void out_of_range(const char* what, int index, double value) {
  std::fprintf(stderr, "fuzz_metrics: %s[%d] = %.17g is outside its range\n", what, index, value);
  std::abort();
}

// Rounding may step a score a few ulps past a bound; a real error is far larger than this.
constexpr double kTolerance = 1e-9;

void check_range(const char* what, int index, double v, double lo, double hi) {
  if (std::isnan(v)) return;  // not computed, or undefined (MBA without a GT boundary)
  if (!(v >= lo - kTolerance && v <= hi + kTolerance)) out_of_range(what, index, v);
}

// The ranges of docs/spec/metrics.md: every score lies in [0, 1], except E, which reaches
// N / (N - 1 + eps) (N pixels; far above 1 for a 1-pixel image), and HCE, a count of points.
void check_scores(const ImageScores& s, int gt_pixels) {
  const double n = gt_pixels;
  const double e_max = n / (n - 1 + std::numeric_limits<double>::epsilon());
  for (int k = 0; k < biref::eval::kNumKeys; ++k) {
    const double v = s.values[size_t(k)];
    switch (Key(k)) {
      case biref::eval::kMaxE:
      case biref::eval::kMeanE:
      case biref::eval::kAdpE:
        check_range("E", k, v, 0, e_max);
        break;
      case biref::eval::kHCE:
        if (!std::isnan(v) && (v < 0 || v != std::floor(v))) out_of_range("HCE", k, v);
        break;
      default:
        check_range("score", k, v, 0, 1);
        break;
    }
  }
  for (int t = 0; t < biref::eval::kNumThresholds; ++t) {
    check_range("precision", t, s.precision[size_t(t)], 0, 1);
    check_range("recall", t, s.recall[size_t(t)], 0, 1);
    check_range("f", t, s.f[size_t(t)], 0, 1);
    check_range("e", t, s.e[size_t(t)], 0, e_max);
    check_range("biou", t, s.biou[size_t(t)], 0, 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in{data, size};
  const int gt_w = in.next() % 64 + 1, gt_h = in.next() % 64 + 1;
  const uint8_t flags = in.next();
  int pred_w = gt_w, pred_h = gt_h;
  if (flags & 1) {
    pred_w = in.next() % 64 + 1;
    pred_h = in.next() % 64 + 1;
  }
  const uint8_t* pixels = data + in.pos;
  const size_t n = size - in.pos;
  size_t offset = 0;
  const cv::Mat pred = make_image(pred_w, pred_h, pixels, n, offset, flags & 4);
  const cv::Mat gt = make_image(gt_w, gt_h, pixels, n, offset, flags & 2);
  const ImageScores s = biref::eval::score_image(pred, gt);
  if (s.groups != biref::eval::kAllGroups) std::abort();
  check_scores(s, gt_w * gt_h);
  return 0;
}
