#include "biref/pipeline.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "core/check.h"
#include "image/codec.h"
#include "pipeline/resample.h"

namespace biref {

void dynamic_model_size(int width, int height, int64_t max_pixels, int& model_w, int& model_h) {
  BIREF_CHECK(width > 0 && height > 0, "dynamic size of a ", width, "x", height, " image");
  double w = width, h = height;
  if (max_pixels > 0 && double(width / 32 * 32) * double(height / 32 * 32) > double(max_pixels)) {
    const double s = std::sqrt(double(max_pixels) / (w * h));
    w *= s;
    h *= s;
  }
  model_w = std::max(32, int(w) / 32 * 32);
  model_h = std::max(32, int(h) / 32 * 32);
}

Taps align_corners_taps(int in, int out) {
  Taps t;
  t.i0.resize(size_t(out));
  t.i1.resize(size_t(out));
  t.l.resize(size_t(out));
  const double s = out > 1 ? double(in - 1) / double(out - 1) : 0.0;
  for (int j = 0; j < out; ++j) {
    const double f = double(j) * s;
    t.i0[j] = std::min(int(f), in - 1);
    t.i1[j] = std::min(t.i0[j] + 1, in - 1);
    t.l[j] = float(f - double(t.i0[j]));
  }
  return t;
}

HostTensor normalise(const cv::Mat& resized) {
  static const float mean[3] = {0.485f, 0.456f, 0.406f}, stdv[3] = {0.229f, 0.224f, 0.225f};
  const int width = resized.cols, height = resized.rows;
  HostTensor t;
  t.shape = {1, 3, height, width};
  t.data.resize(size_t(3) * width * height);
  const int64_t plane = int64_t(width) * height;
  for (int y = 0; y < height; ++y) {
    const uint8_t* row = resized.ptr<uint8_t>(y);
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) {
        const float v = float(row[x * 3 + c]) / 255.f;
        t.data[c * plane + int64_t(y) * width + x] = (v - mean[c]) / stdv[c];
      }
  }
  return t;
}

HostTensor preprocess_region(const cv::Mat& rgb, int width, int height) {
  // On the 8-bit image (OpenCV's fixed-point bilinear), exactly as the official code does.
  cv::Mat resized;
  cv::resize(rgb, resized, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  return normalise(resized);
}

HostTensor preprocess(const Image& rgb, int width, int height, InputResize resize) {
  check_image(rgb, "preprocess");
  BIREF_CHECK(rgb.channels == 3, "preprocess expects an RGB image, got ", rgb.channels,
              " channels");
  BIREF_CHECK(width > 0 && height > 0, "preprocess: bad model size ", width, "x", height);
  const cv::Mat src(rgb.height, rgb.width, CV_8UC3, const_cast<uint8_t*>(rgb.pixels.data()));
  if (resize == InputResize::OpenCvBilinear) return preprocess_region(src, width, height);
  if (width == rgb.width && height == rgb.height) return normalise(src);
  Image pillow = resize_bicubic_antialiased(rgb, width, height);
  return normalise(cv::Mat(height, width, CV_8UC3, pillow.pixels.data()));
}

namespace {
void check_logits(const HostTensor& logits) {
  BIREF_CHECK(logits.shape.size() == 4 && logits.shape[0] == 1 && logits.shape[1] == 1,
              "logits must be [1, 1, H, W], got ", shape_str(logits.shape));
  BIREF_CHECK(int64_t(logits.data.size()) == logits.shape[2] * logits.shape[3], "logits have ",
              logits.data.size(), " values for shape ", shape_str(logits.shape));
}
}  // namespace

std::vector<float> probabilities(const HostTensor& logits, int out_w, int out_h) {
  check_logits(logits);
  BIREF_CHECK(out_w > 0 && out_h > 0, "probabilities: bad output size ", out_w, "x", out_h);
  const int h = int(logits.shape[2]), w = int(logits.shape[3]);
  std::vector<float> p(logits.data.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = sigmoid(logits.data[i]);
  std::vector<float> prob(size_t(checked_mul(out_w, out_h, "probabilities")));
  const Taps tx = align_corners_taps(w, out_w), ty = align_corners_taps(h, out_h);
#pragma omp parallel for schedule(static)
  for (int y = 0; y < out_h; ++y)
    upsample_row(&p[size_t(ty.i0[y]) * w], &p[size_t(ty.i1[y]) * w], ty.l[y], tx,
                 &prob[size_t(y) * out_w]);
  return prob;
}

Image mask_from_model_probabilities(const float* prob, int w, int h, int out_w, int out_h) {
  BIREF_CHECK(w > 0 && h > 0 && out_w > 0 && out_h > 0, "mask: bad sizes ", w, "x", h, " -> ",
              out_w, "x", out_h);
  Image m;
  m.width = out_w;
  m.height = out_h;
  m.channels = 1;
  m.pixels.resize(size_t(checked_mul(out_w, out_h, "mask")));
  const Taps tx = align_corners_taps(w, out_w), ty = align_corners_taps(h, out_h);
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(out_w));
#pragma omp for schedule(static)
    for (int y = 0; y < out_h; ++y) {
      upsample_row(prob + size_t(ty.i0[y]) * w, prob + size_t(ty.i1[y]) * w, ty.l[y], tx,
                   row.data());
      uint8_t* out = &m.pixels[size_t(y) * out_w];
      for (int x = 0; x < out_w; ++x) out[x] = quantise(row[x]);
    }
  }
  return m;
}

Image mask_from_probabilities(const std::vector<float>& prob, int width, int height) {
  Image m;
  m.width = width;
  m.height = height;
  m.channels = 1;
  m.pixels.resize(size_t(width) * height);
  BIREF_CHECK(prob.size() == m.pixels.size(), "mask: ", prob.size(), " probabilities for ", width,
              "x", height);
  for (size_t i = 0; i < m.pixels.size(); ++i) m.pixels[i] = quantise(prob[i]);
  return m;
}

Image segment(Model& model, const Image& rgb, int width, int height) {
  PredictOptions o;
  o.width = width;
  o.height = height;
  return Predictor({&model}, o).mask(rgb);
}

}  // namespace biref
