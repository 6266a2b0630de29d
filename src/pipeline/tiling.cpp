// Tiled inference for images much larger than the model size: a global pass, overlapping tiles
// blended with smooth weights, the result clamped by the global pass, written band by band.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <opencv2/imgproc.hpp>

#include "biref/pipeline.h"
#include "core/check.h"
#include "image/codec.h"
#include "pipeline/resample.h"

namespace biref {

TileMode parse_tile_mode(const std::string& text) {
  if (text == "off") return TileMode::Off;
  if (text == "auto") return TileMode::Auto;
  if (text == "on") return TileMode::On;
  fail("tile mode '", text, "' is not one of auto, on, off");
}

std::vector<int> tile_starts(int extent, int tile, int overlap) {
  BIREF_CHECK(extent > 0 && tile > 0 && overlap >= 0 && overlap < tile, "tiles of ", tile,
              " pixels overlapping by ", overlap, " cannot cover ", extent, " pixels");
  if (extent <= tile) return {0};
  const int n = std::max(2, (extent - overlap + (tile - overlap) - 1) / (tile - overlap));
  std::vector<int> starts(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    starts[size_t(i)] = int((int64_t(i) * (extent - tile) + (n - 1) / 2) / (n - 1));
  return starts;
}

TileLayout tile_layout(int width, int height, int model_w, int model_h, const TileOptions& o) {
  BIREF_CHECK(model_w > 0 && model_h > 0, "tiling: bad model size ", model_w, "x", model_h);
  BIREF_CHECK(o.tile_size == 0 || o.tile_size >= 32, "--tile-size ", o.tile_size,
              " is too small: use at least 32 pixels (0: the model size)");
  TileLayout l;
  l.tile_w = o.tile_size > 0 ? o.tile_size : model_w;
  l.tile_h = o.tile_size > 0
                 ? std::max(1, int(std::lround(double(o.tile_size) * model_h / model_w)))
                 : model_h;
  l.overlap_x = o.overlap < 0 ? l.tile_w / 4 : o.overlap;
  l.overlap_y = o.overlap < 0 ? l.tile_h / 4 : o.overlap;
  BIREF_CHECK(2 * l.overlap_x <= l.tile_w && 2 * l.overlap_y <= l.tile_h, "--overlap ", o.overlap,
              " is too large for tiles of ", l.tile_w, "x", l.tile_h, ": use at most half a tile");
  l.xs = tile_starts(width, l.tile_w, l.overlap_x);
  l.ys = tile_starts(height, l.tile_h, l.overlap_y);
  l.tile_w = std::min(l.tile_w, width);
  l.tile_h = std::min(l.tile_h, height);
  return l;
}

namespace {

// Blending weights along one axis: for tile i, weights[i][u] at pixel starts[i] + u. Each tile
// ramps up smoothly over `overlap` pixels from each edge that is inside the image (full weight at
// the image's borders), and the weights are divided by their sum, so they add up to one at every
// pixel (exactly one where a single tile covers it).
std::vector<std::vector<float>> blend_weights(int extent, int tile, int overlap,
                                              const std::vector<int>& starts) {
  auto ramp = [&](double d) {  // d: distance from the edge, in pixels (pixel centres)
    if (overlap <= 0 || d >= overlap) return 1.0;
    const double t = d / overlap;
    return t * t * (3 - 2 * t);  // smoothstep, > 0 for d > 0
  };
  std::vector<std::vector<double>> w(starts.size(), std::vector<double>(size_t(tile)));
  std::vector<double> sum(size_t(extent), 0.0);
  for (size_t i = 0; i < starts.size(); ++i) {
    const bool left_inside = starts[i] > 0, right_inside = starts[i] + tile < extent;
    for (int u = 0; u < tile; ++u) {
      double v = 1;
      if (left_inside) v *= ramp(u + 0.5);
      if (right_inside) v *= ramp(tile - u - 0.5);
      w[i][size_t(u)] = v;
      sum[size_t(starts[i] + u)] += v;
    }
  }
  std::vector<std::vector<float>> out(starts.size(), std::vector<float>(size_t(tile)));
  for (size_t i = 0; i < starts.size(); ++i)
    for (int u = 0; u < tile; ++u)
      out[i][size_t(u)] = float(w[i][size_t(u)] / sum[size_t(starts[i] + u)]);
  return out;
}

}  // namespace

Image tiled_mask(const Image& rgb, int model_w, int model_h, const TileOptions& options,
                 const ProbabilityFn& predict) {
  check_image(rgb, "tiled segmentation");
  BIREF_CHECK(rgb.channels == 3, "tiled segmentation expects an RGB image, got ", rgb.channels,
              " channels");
  const int W = rgb.width, H = rgb.height;
  const TileLayout l = tile_layout(W, H, model_w, model_h, options);
  const cv::Mat image(H, W, CV_8UC3, const_cast<uint8_t*>(rgb.pixels.data()));
  const size_t model_px = size_t(model_w) * model_h;

  // The global pass, and its bounds at the model's resolution.
  std::vector<float> global(model_px), lo, hi;
  predict(preprocess_region(image, model_w, model_h), global.data());
  const bool guided = options.guide_radius >= 0;
  if (guided) {
    lo.resize(model_px);
    hi.resize(model_px);
    const cv::Mat g(model_h, model_w, CV_32F, global.data());
    cv::Mat lo_m(model_h, model_w, CV_32F, lo.data()), hi_m(model_h, model_w, CV_32F, hi.data());
    const int k = 2 * options.guide_radius + 1;
    const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_RECT, cv::Size(k, k));
    cv::erode(g, lo_m, kernel);
    cv::dilate(g, hi_m, kernel);
  }
  const Taps gx = align_corners_taps(model_w, W), gy = align_corners_taps(model_h, H);

  const auto wx = blend_weights(W, l.tile_w, l.overlap_x, l.xs);
  const auto wy = blend_weights(H, l.tile_h, l.overlap_y, l.ys);
  const Taps tx = align_corners_taps(model_w, l.tile_w), ty = align_corners_taps(model_h, l.tile_h);

  Image mask;
  mask.width = W;
  mask.height = H;
  mask.channels = 1;
  mask.pixels.resize(size_t(checked_mul(W, H, "tiled mask")));
  // acc holds image rows [ys[j], ys[j] + tile_h): the weighted sum of the tiles so far.
  std::vector<float> acc(size_t(l.tile_h) * W, 0.f), prob(model_px);
  for (size_t j = 0; j < l.ys.size(); ++j) {
    const int y0 = l.ys[j];
    if (j > 0) {  // keep the rows shared with the previous tile row, clear the rest
      const int shift = y0 - l.ys[j - 1];
      std::memmove(acc.data(), acc.data() + size_t(shift) * W,
                   sizeof(float) * size_t(l.tile_h - shift) * W);
      std::fill(acc.begin() + ptrdiff_t(size_t(l.tile_h - shift) * W), acc.end(), 0.f);
    }
    for (size_t i = 0; i < l.xs.size(); ++i) {
      const int x0 = l.xs[i];
      predict(preprocess_region(image(cv::Rect(x0, y0, l.tile_w, l.tile_h)), model_w, model_h),
              prob.data());
#pragma omp parallel
      {
        std::vector<float> row(static_cast<size_t>(l.tile_w));
#pragma omp for schedule(static)
        for (int r = 0; r < l.tile_h; ++r) {
          upsample_row(&prob[size_t(ty.i0[r]) * model_w], &prob[size_t(ty.i1[r]) * model_w],
                       ty.l[r], tx, row.data());
          const float wr = wy[j][size_t(r)];
          float* a = &acc[size_t(r) * W + x0];
          for (int u = 0; u < l.tile_w; ++u) a[u] += wr * wx[i][size_t(u)] * row[size_t(u)];
        }
      }
    }
    // Rows no later tile row reaches are final: clamp by the global pass, quantise.
    const int y_end = j + 1 < l.ys.size() ? l.ys[j + 1] : H;
#pragma omp parallel
    {
      std::vector<float> rlo(static_cast<size_t>(W)), rhi(static_cast<size_t>(W));
#pragma omp for schedule(static)
      for (int y = y0; y < y_end; ++y) {
        const float* a = &acc[size_t(y - y0) * W];
        uint8_t* out = &mask.pixels[size_t(y) * W];
        if (guided) {
          upsample_row(&lo[size_t(gy.i0[y]) * model_w], &lo[size_t(gy.i1[y]) * model_w], gy.l[y],
                       gx, rlo.data());
          upsample_row(&hi[size_t(gy.i0[y]) * model_w], &hi[size_t(gy.i1[y]) * model_w], gy.l[y],
                       gx, rhi.data());
          for (int x = 0; x < W; ++x) out[x] = quantise(std::min(std::max(a[x], rlo[x]), rhi[x]));
        } else {
          for (int x = 0; x < W; ++x) out[x] = quantise(a[x]);
        }
      }
    }
  }
  return mask;
}

}  // namespace biref
