// Shared by the pipeline's paths: the official align_corners bilinear upsampling of
// probabilities, row by row, and the fixed-size preprocessing of an image region.
#pragma once
#include <cmath>
#include <cstdint>
#include <opencv2/core.hpp>
#include <vector>

#include "biref/biref.h"

namespace biref {

// Column (or row) taps of a bilinear align_corners=True resize from `in` to `out` samples:
// sample j reads in[i0[j]] and in[i1[j]] with weight l[j] on the second, as PyTorch computes it.
struct Taps {
  std::vector<int> i0, i1;
  std::vector<float> l;
};
Taps align_corners_taps(int in, int out);

// One output row: rows r0 and r1 of the source blended by ly, each resampled by `tx`.
inline void upsample_row(const float* r0, const float* r1, float ly, const Taps& tx, float* out) {
  const int n = int(tx.l.size());
  for (int j = 0; j < n; ++j) {
    const float a = r0[tx.i0[j]], b = r0[tx.i1[j]], c = r1[tx.i0[j]], d = r1[tx.i1[j]];
    const float wx = tx.l[j];
    const float top = a + (b - a) * wx;
    const float bot = c + (d - c) * wx;
    out[j] = top + (bot - top) * ly;
  }
}

// round(255·p), half away from zero, clamped; NaN (a broken model) -> 0.
inline uint8_t quantise(float p) {
  const float v = std::round(255.f * p);
  return v >= 0.f ? uint8_t(std::min(v, 255.f)) : 0;
}

// The logistic function as the pipeline applies it to logits.
inline float sigmoid(float x) {
  return 1.f / (1.f + std::exp(-x));
}

// An 8-bit RGB region -> [1, 3, height, width]: OpenCV's bilinear resize on the 8-bit pixels,
// v/255, ImageNet mean/std (the official fixed-size preprocessing).
HostTensor preprocess_region(const cv::Mat& rgb, int width, int height);
// The same after the region has been brought to width × height by any means.
HostTensor normalise(const cv::Mat& resized);

}  // namespace biref
