#include "biref/pipeline.h"

#include <cmath>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/atomic_file.h"
#include "core/check.h"
#include "ops/ops.h"

namespace biref {

namespace fs = std::filesystem;

Image read_image(const std::string& path) {
  std::error_code ec;
  BIREF_CHECK(fs::exists(path, ec), "image '", path, "' does not exist");
  BIREF_CHECK(fs::is_regular_file(path, ec), "image '", path, "' is not a file");
  const cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  BIREF_CHECK(!bgr.empty(), "cannot decode image '", path, "' (not an image, or a format OpenCV lacks)");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  Image im;
  im.width = rgb.cols;
  im.height = rgb.rows;
  im.channels = 3;
  im.pixels.assign(rgb.data, rgb.data + rgb.total() * 3);
  return im;
}

namespace {
void check_image(const Image& image, const char* what) {
  BIREF_CHECK(image.width > 0 && image.height > 0 &&
                  (image.channels == 1 || image.channels == 3 || image.channels == 4),
              what, ": not an image (", image.width, "x", image.height, ", ", image.channels,
              " channels)");
  BIREF_CHECK(image.pixels.size() == size_t(image.width) * image.height * image.channels, what,
              ": ", image.pixels.size(), " bytes of pixels for ", image.width, "x", image.height,
              "x", image.channels);
}
}  // namespace

bool can_write_image(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  return !ext.empty() && cv::haveImageWriter("x" + ext);
}

void write_image(const std::string& path, const Image& image) {
  check_image(image, "write_image");
  const int type = image.channels == 1 ? CV_8UC1 : (image.channels == 3 ? CV_8UC3 : CV_8UC4);
  cv::Mat m(image.height, image.width, type, const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat out;
  if (image.channels == 3) {
    cv::cvtColor(m, out, cv::COLOR_RGB2BGR);
  } else if (image.channels == 4) {
    cv::cvtColor(m, out, cv::COLOR_RGBA2BGRA);
  } else {
    out = m;
  }
  const fs::path target(path);
  const std::string ext = target.extension().string();
  BIREF_CHECK(!ext.empty(), "output '", path, "' has no extension (e.g. .png)");
  std::vector<uchar> buf;
  bool ok = false;
  try {
    ok = cv::imencode(ext, out, buf);
  } catch (const cv::Exception&) {
    ok = false;
  }
  BIREF_CHECK(ok, "cannot encode '", path, "': unsupported extension '", ext, "'");
  AtomicFile file(path);
  FILE* f = std::fopen(file.temp_path().c_str(), "wb");
  BIREF_CHECK(f, "cannot write '", path, "': ", std::strerror(errno));
  const size_t n = std::fwrite(buf.data(), 1, buf.size(), f);
  const bool flushed = n == buf.size() && std::fflush(f) == 0;
  const bool good = std::fclose(f) == 0 && flushed;  // close reports delayed write errors
  BIREF_CHECK(good, "error writing '", path, "' (disk full?)");
  file.commit();
}

HostTensor preprocess(const Image& rgb, int width, int height) {
  check_image(rgb, "preprocess");
  BIREF_CHECK(rgb.channels == 3, "preprocess expects an RGB image, got ", rgb.channels, " channels");
  BIREF_CHECK(width > 0 && height > 0, "preprocess: bad model size ", width, "x", height);
  cv::Mat src(rgb.height, rgb.width, CV_8UC3, const_cast<uint8_t*>(rgb.pixels.data()));
  cv::Mat resized;
  // On the 8-bit image (OpenCV's fixed-point bilinear), exactly as the official code does.
  cv::resize(src, resized, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
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
  Tensor full = Tensor::empty({1, out_h, out_w, 1});
  cpu_resize_bilinear_ac(p, full);
  return std::vector<float>(full.data, full.data + full.numel());
}

Image mask_from_probabilities(const std::vector<float>& prob, int width, int height) {
  Image m;
  m.width = width;
  m.height = height;
  m.channels = 1;
  m.pixels.resize(size_t(width) * height);
  BIREF_CHECK(prob.size() == m.pixels.size(), "mask: ", prob.size(), " probabilities for ",
              width, "x", height);
  for (size_t i = 0; i < m.pixels.size(); ++i) {
    const float v = std::round(255.f * prob[i]);  // half away from zero
    m.pixels[i] = v >= 0.f ? uint8_t(std::min(v, 255.f)) : 0;  // NaN (a broken model) -> 0
  }
  return m;
}

Image segment(Model& model, const Image& rgb, int width, int height) {
  BIREF_CHECK(width % 32 == 0 && height % 32 == 0 && width > 0 && height > 0, "model size ", width,
              "x", height, " is not supported: width and height must be positive multiples of 32");
  const HostTensor logits = model.forward(preprocess(rgb, width, height));
  return mask_from_probabilities(probabilities(logits, rgb.width, rgb.height), rgb.width, rgb.height);
}

}  // namespace biref
