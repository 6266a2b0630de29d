#include "biref/pipeline.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <opencv2/imgproc.hpp>

#include "core/check.h"
#include "image/codec.h"
#include "ops/ops.h"

namespace biref {

namespace fs = std::filesystem;

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

HostTensor preprocess(const Image& rgb, int width, int height, InputResize resize) {
  check_image(rgb, "preprocess");
  BIREF_CHECK(rgb.channels == 3, "preprocess expects an RGB image, got ", rgb.channels,
              " channels");
  BIREF_CHECK(width > 0 && height > 0, "preprocess: bad model size ", width, "x", height);
  cv::Mat src(rgb.height, rgb.width, CV_8UC3, const_cast<uint8_t*>(rgb.pixels.data()));
  cv::Mat resized;
  Image pillow;
  if (resize == InputResize::OpenCvBilinear) {
    // On the 8-bit image (OpenCV's fixed-point bilinear), exactly as the official code does.
    cv::resize(src, resized, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  } else if (width == rgb.width && height == rgb.height) {
    resized = src;
  } else {
    pillow = resize_bicubic_antialiased(rgb, width, height);
    resized = cv::Mat(height, width, CV_8UC3, pillow.pixels.data());
  }
  static const float mean[3] = {0.485f, 0.456f, 0.406f}, stdv[3] = {0.229f, 0.224f, 0.225f};
  HostTensor t;
  t.shape = {1, 3, height, width};
  t.data.resize(size_t(3) * width * height);
  const int64_t plane = int64_t(width) * height;
  for (int64_t p = 0; p < plane; ++p)
    for (int c = 0; c < 3; ++c) {
      const float v = float(resized.data[p * 3 + c]) / 255.f;
      t.data[c * plane + p] = (v - mean[c]) / stdv[c];
    }
  return t;
}

std::vector<float> probabilities(const HostTensor& logits, int out_w, int out_h) {
  BIREF_CHECK(logits.shape.size() == 4 && logits.shape[0] == 1 && logits.shape[1] == 1,
              "logits must be [1, 1, H, W], got ", shape_str(logits.shape));
  const int64_t h = logits.shape[2], w = logits.shape[3];
  BIREF_CHECK(int64_t(logits.data.size()) == h * w, "logits have ", logits.data.size(),
              " values for shape ", shape_str(logits.shape));
  BIREF_CHECK(out_w > 0 && out_h > 0, "probabilities: bad output size ", out_w, "x", out_h);
  Tensor p = Tensor::empty({1, h, w, 1});
  for (int64_t i = 0; i < h * w; ++i) p.data[i] = 1.f / (1.f + std::exp(-logits.data[i]));
  // Resized straight into the returned buffer: one full-size float copy, not two.
  std::vector<float> prob(size_t(checked_mul(out_w, out_h, "probabilities")));
  Tensor full = Tensor::wrap(prob.data(), {1, out_h, out_w, 1});
  cpu_resize_bilinear_ac(p, full);
  return prob;
}

Image mask_from_probabilities(const std::vector<float>& prob, int width, int height) {
  Image m;
  m.width = width;
  m.height = height;
  m.channels = 1;
  m.pixels.resize(size_t(width) * height);
  BIREF_CHECK(prob.size() == m.pixels.size(), "mask: ", prob.size(), " probabilities for ", width,
              "x", height);
  for (size_t i = 0; i < m.pixels.size(); ++i) {
    const float v = std::round(255.f * prob[i]);               // half away from zero
    m.pixels[i] = v >= 0.f ? uint8_t(std::min(v, 255.f)) : 0;  // NaN (a broken model) -> 0
  }
  return m;
}

Image segment(Model& model, const Image& rgb, int width, int height) {
  BIREF_CHECK(width % 32 == 0 && height % 32 == 0 && width > 0 && height > 0, "model size ", width,
              "x", height, " is not supported: width and height must be positive multiples of 32");
  const HostTensor logits = model.forward(preprocess(rgb, width, height));
  return mask_from_probabilities(probabilities(logits, rgb.width, rgb.height), rgb.width,
                                 rgb.height);
}

}  // namespace biref
