// Ensembles, flip test-time augmentation and the resolution policy around the model: the
// library form of `biref segment`.
#include <algorithm>
#include <map>

#include "biref/pipeline.h"
#include "core/check.h"
#include "image/codec.h"
#include "pipeline/resample.h"

namespace biref {

namespace {

// [B, 3, h, w] with every row reversed.
HostTensor flip_width(const HostTensor& x) {
  HostTensor y;
  y.shape = x.shape;
  y.data.resize(x.data.size());
  const int64_t w = x.shape[3], rows = int64_t(x.data.size()) / std::max<int64_t>(w, 1);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = &x.data[size_t(r * w)];
    float* dst = &y.data[size_t(r * w)];
    for (int64_t i = 0; i < w; ++i) dst[i] = src[w - 1 - i];
  }
  return y;
}

void check_model_size(int w, int h) {
  BIREF_CHECK(w > 0 && h > 0 && w % 32 == 0 && h % 32 == 0, "model size ", w, "x", h,
              " is not supported: width and height must be positive multiples of 32");
}

}  // namespace

ProbabilityFn ensemble_probabilities(std::vector<Model*> models, bool flip) {
  BIREF_CHECK(!models.empty(), "an ensemble needs at least one model");
  for (Model* m : models) BIREF_CHECK(m != nullptr, "an ensemble got a null model");
  return [models, flip](const HostTensor& input, float* prob) {
    BIREF_CHECK(input.shape.size() == 4 && input.shape[1] == 3, "model input must be ",
                "[B, 3, H, W], got ", shape_str(input.shape));
    const int64_t B = input.shape[0], h = input.shape[2], w = input.shape[3];
    const size_t n = size_t(B * h * w);
    std::fill(prob, prob + n, 0.f);
    HostTensor flipped;
    if (flip) flipped = flip_width(input);
    for (Model* m : models) {
      const HostTensor logits = m->forward(input);
      for (size_t i = 0; i < n; ++i) prob[i] += sigmoid(logits.data[i]);
      if (!flip) continue;
      const HostTensor lf = m->forward(flipped);
      for (int64_t r = 0; r < B * h; ++r)
        for (int64_t x = 0; x < w; ++x)
          prob[size_t(r * w + x)] += sigmoid(lf.data[size_t(r * w + w - 1 - x)]);
    }
    const size_t passes = models.size() * (flip ? 2 : 1);
    if (passes > 1) {
      const float inv = 1.f / float(passes);
      for (size_t i = 0; i < n; ++i) prob[i] *= inv;
    }
  };
}

Predictor::Predictor(std::vector<Model*> models, const PredictOptions& options)
    : models_(std::move(models)), options_(options) {
  predict_ = ensemble_probabilities(models_, options_.flip);
  if (options_.dynamic) {
    BIREF_CHECK(options_.max_pixels >= 32 * 32, "max_pixels ", options_.max_pixels,
                " must be at least 1024");
    BIREF_CHECK(options_.tile.mode != TileMode::On,
                "tiling needs a fixed model size: it cannot be combined with the dynamic size");
  } else {
    check_model_size(options_.width, options_.height);
    tile_layout(options_.width, options_.height, options_.width, options_.height,
                options_.tile);  // checks the tile options now, not at the first large image
  }
}

void Predictor::model_size(int width, int height, int& model_w, int& model_h) const {
  if (options_.dynamic) {
    dynamic_model_size(width, height, options_.max_pixels, model_w, model_h);
  } else {
    model_w = options_.width;
    model_h = options_.height;
  }
}

bool Predictor::tiled(int width, int height) const {
  if (options_.dynamic || options_.tile.mode == TileMode::Off) return false;
  if (options_.tile.mode == TileMode::On) return true;
  const TileLayout l = tile_layout(width, height, options_.width, options_.height, options_.tile);
  return width > 2 * l.tile_w || height > 2 * l.tile_h;
}

Image Predictor::mask(const Image& rgb) const {
  check_image(rgb, "segment");
  BIREF_CHECK(rgb.channels == 3, "segment expects an RGB image, got ", rgb.channels, " channels");
  int mw = 0, mh = 0;
  model_size(rgb.width, rgb.height, mw, mh);
  if (tiled(rgb.width, rgb.height)) return tiled_mask(rgb, mw, mh, options_.tile, predict_);
  const HostTensor input = preprocess(
      rgb, mw, mh, options_.dynamic ? InputResize::PillowBicubic : InputResize::OpenCvBilinear);
  std::vector<float> prob(size_t(mw) * mh);
  predict_(input, prob.data());
  return mask_from_model_probabilities(prob.data(), mw, mh, rgb.width, rgb.height);
}

std::vector<Image> Predictor::masks(const std::vector<const Image*>& rgbs) const {
  std::vector<Image> out(rgbs.size());
  // Untiled images grouped by model size, each group one batch; the rest one at a time.
  std::map<std::pair<int, int>, std::vector<size_t>> groups;
  for (size_t i = 0; i < rgbs.size(); ++i) {
    BIREF_CHECK(rgbs[i] != nullptr, "segment: image ", i, " is null");
    const Image& rgb = *rgbs[i];
    check_image(rgb, "segment");
    BIREF_CHECK(rgb.channels == 3, "segment expects an RGB image, got ", rgb.channels, " channels");
    int mw = 0, mh = 0;
    model_size(rgb.width, rgb.height, mw, mh);
    if (tiled(rgb.width, rgb.height))
      out[i] = mask(rgb);
    else
      groups[{mw, mh}].push_back(i);
  }
  for (const auto& [size, members] : groups) {
    const auto [mw, mh] = size;
    const size_t plane = size_t(mw) * mh;
    HostTensor batch;
    batch.shape = {int64_t(members.size()), 3, mh, mw};
    batch.data.resize(members.size() * 3 * plane);
    for (size_t b = 0; b < members.size(); ++b) {
      const HostTensor one =
          preprocess(*rgbs[members[b]], mw, mh,
                     options_.dynamic ? InputResize::PillowBicubic : InputResize::OpenCvBilinear);
      std::copy(one.data.begin(), one.data.end(), batch.data.begin() + ptrdiff_t(b * 3 * plane));
    }
    std::vector<float> prob(members.size() * plane);
    predict_(batch, prob.data());
    for (size_t b = 0; b < members.size(); ++b) {
      const Image& rgb = *rgbs[members[b]];
      out[members[b]] =
          mask_from_model_probabilities(&prob[b * plane], mw, mh, rgb.width, rgb.height);
    }
  }
  return out;
}

}  // namespace biref
