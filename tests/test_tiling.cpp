// Tiled inference, ensembles and flip TTA: the layout, the blending (weights that sum to one, no
// seams), the guidance by the global pass, exact equality with the untiled run when one tile
// covers the image, and bounded memory on a large image.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>

#include "biref/biref.h"
#include "biref/pipeline.h"
#include "test_util.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

Image gradient(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.channels = 3;
  im.pixels.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.pixels[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(std::lround(255.0 * x / (w - 1)));
      p[1] = uint8_t(std::lround(255.0 * y / (h - 1)));
      p[2] = uint8_t((x * 7 + y * 13) % 256);
    }
  return im;
}

// A "model" that returns the input's red channel: the probability is the pixel value / 255.
void identity_red(const HostTensor& input, float* prob) {
  const int64_t B = input.shape[0], plane = input.shape[2] * input.shape[3];
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < plane; ++i)
      prob[b * plane + i] = input.data[size_t(b * 3 * plane + i)] * 0.229f + 0.485f;
}

TEST(Tiling, StartsCoverTheExtentEvenly) {
  EXPECT_EQ(tile_starts(500, 1024, 256), std::vector<int>{0});
  EXPECT_EQ(tile_starts(1024, 1024, 256), std::vector<int>{0});
  for (int extent : {1025, 2000, 4000, 8000, 6000})
    for (int overlap : {0, 64, 256, 512}) {
      const std::vector<int> s = tile_starts(extent, 1024, overlap);
      ASSERT_GE(s.size(), 2u);
      EXPECT_EQ(s.front(), 0);
      EXPECT_EQ(s.back(), extent - 1024) << extent;
      for (size_t i = 1; i < s.size(); ++i) {
        EXPECT_GE(s[i - 1] + 1024 - s[i], overlap) << extent << " " << overlap;  // overlap kept
        EXPECT_GT(s[i], s[i - 1]);
      }
      // no more tiles than needed: one fewer would not keep the overlap
      const int n = int(s.size());
      if (n > 2) {
        EXPECT_GT(double(extent - 1024) / (n - 2), 1024 - overlap);
      }
    }
  const TileLayout l = tile_layout(8000, 6000, 1024, 1024, {TileMode::On, 0, -1, 4});
  EXPECT_EQ(l.tile_w, 1024);
  EXPECT_EQ(l.overlap_x, 256);
  EXPECT_EQ(l.xs.size(), 11u);
  EXPECT_EQ(l.ys.size(), 8u);
  // A tile keeps the model's aspect ratio.
  const TileLayout wide = tile_layout(6000, 4000, 2560, 1440, {TileMode::On, 1280, -1, 4});
  EXPECT_EQ(wide.tile_h, 720);
  EXPECT_NE(test::error_of([] {
              tile_layout(4000, 4000, 1024, 1024, {TileMode::On, 16, -1, 4});
            }).find("--tile-size"),
            std::string::npos);
  EXPECT_NE(test::error_of([] {
              tile_layout(4000, 4000, 1024, 1024, {TileMode::On, 0, 600, 4});
            }).find("--overlap"),
            std::string::npos);
  EXPECT_EQ(parse_tile_mode("auto"), TileMode::Auto);
  EXPECT_NE(test::error_of([] { parse_tile_mode("yes"); }).find("'yes'"), std::string::npos);
}

// Weights sum to one at every pixel: a constant prediction stays that constant everywhere,
// guided or not, whatever the tiles and overlaps.
TEST(Tiling, ConstantPredictionStaysConstant) {
  Image im = gradient(1000, 700);
  for (const float c : {0.f, 0.2f, 0.61f, 1.f})
    for (const int guide : {-1, 4})
      for (const int overlap : {0, 37, 64}) {
        const ProbabilityFn constant = [c](const HostTensor& in, float* p) {
          std::fill(p, p + in.shape[0] * in.shape[2] * in.shape[3], c);
        };
        const Image m = tiled_mask(im, 64, 64, {TileMode::On, 256, overlap, guide}, constant);
        ASSERT_EQ(m.width, 1000);
        ASSERT_EQ(m.height, 700);
        const uint8_t want = uint8_t(std::lround(255.f * c));
        size_t wrong = 0;
        for (uint8_t v : m.pixels) wrong += v != want;
        EXPECT_EQ(wrong, 0u) << "c " << c << " guide " << guide << " overlap " << overlap;
      }
}

// Tiles that each predict a different constant blend into smooth ramps: no jump between
// neighbouring pixels larger than the ramp's slope allows, where a seam would be a step.
TEST(Tiling, NoSeamsBetweenDisagreeingTiles) {
  const Image im = gradient(1200, 900);
  int call = 0;
  const ProbabilityFn disagreeing = [&](const HostTensor& in, float* p) {
    const float c = call++ % 2 ? 0.9f : 0.1f;  // neighbouring tiles alternate
    std::fill(p, p + in.shape[2] * in.shape[3], c);
  };
  const int overlap = 96;
  const Image m = tiled_mask(im, 64, 64, {TileMode::On, 320, overlap, -1}, disagreeing);
  int max_jump = 0;
  for (int y = 0; y < m.height; ++y)
    for (int x = 0; x < m.width; ++x) {
      const int v = m.pixels[size_t(y) * m.width + x];
      if (x + 1 < m.width)
        max_jump = std::max(max_jump, std::abs(m.pixels[size_t(y) * m.width + x + 1] - v));
      if (y + 1 < m.height)
        max_jump = std::max(max_jump, std::abs(m.pixels[size_t(y + 1) * m.width + x] - v));
    }
  // smoothstep's steepest slope is 1.5 / overlap of the 0.8 (204 levels) difference: 3.2/pixel
  std::printf("largest step between neighbouring pixels: %d levels (a seam: 204)\n", max_jump);
  EXPECT_LE(max_jump, 5);
  EXPECT_GT(call, 20);
}

// On a gradient the tiles, each resized to the model size and back, reproduce the image: the
// blended result stays within resampling error of the truth everywhere, seams included.
TEST(Tiling, GradientIsReproducedWithoutSeams) {
  const Image im = gradient(1500, 1000);
  const Image m = tiled_mask(im, 128, 128, {TileMode::On, 384, 96, -1}, identity_red);
  int worst = 0;
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      worst = std::max(worst, std::abs(int(m.pixels[size_t(y) * im.width + x]) -
                                       int(im.pixels[(size_t(y) * im.width + x) * 3])));
  std::printf("gradient through 384-pixel tiles: max error %d levels\n", worst);
  EXPECT_LE(worst, 2);
}

// The global pass bounds the tiles: an object that a tile invents far from anything the whole
// image shows is removed; near the global pass's object the tiles refine it.
TEST(Tiling, GlobalPassKeepsTilesFromInventingObjects) {
  const Image im = gradient(800, 800);
  int call = 0;
  const ProbabilityFn fn = [&](const HostTensor& in, float* p) {
    const int64_t h = in.shape[2], w = in.shape[3];
    std::fill(p, p + h * w, 0.f);
    if (call++ == 0) {  // the global pass: a square in the middle of the image
      for (int64_t y = h * 3 / 8; y < h * 5 / 8; ++y)
        for (int64_t x = w * 3 / 8; x < w * 5 / 8; ++x) p[y * w + x] = 1.f;
    } else {  // every tile: "foreground" all over
      std::fill(p, p + h * w, 1.f);
    }
  };
  const Image guided = tiled_mask(im, 64, 64, {TileMode::On, 200, 50, 4}, fn);
  call = 0;
  const Image unguided = tiled_mask(im, 64, 64, {TileMode::On, 200, 50, -1}, fn);
  EXPECT_EQ(unguided.pixels[0], 255);              // invented everywhere
  EXPECT_EQ(guided.pixels[0], 0);                  // corner: far from the object
  EXPECT_EQ(guided.pixels[400 * 800 + 400], 255);  // the object itself
}

// With one tile covering the image, the tiled path computes what the untiled one does: equal
// masks, bit for bit, through a real model.
TEST(Tiling, OneTileEqualsTheUntiledRun) {
  auto model = Model::load("synthetic:swin_v1_t");
  const Image im = gradient(200, 150);
  PredictOptions plain;
  plain.width = plain.height = 64;
  PredictOptions one = plain;
  one.tile = {TileMode::On, 256, -1, 4};  // a 256-pixel tile, clipped to the 200x150 image
  ASSERT_EQ(tile_layout(200, 150, 64, 64, one.tile).count(), 1u);
  const Image a = Predictor({model.get()}, plain).mask(im);
  const Image b = Predictor({model.get()}, one).mask(im);
  EXPECT_EQ(test::byte_diff(a.pixels.data(), b.pixels.data(), a.pixels.size()).count, 0u);
  EXPECT_EQ(a.pixels, b.pixels);
  // auto: tiled only above twice the tile
  PredictOptions autotile = plain;
  autotile.tile = {TileMode::Auto, 0, -1, 4};
  const Predictor p({model.get()}, autotile);
  EXPECT_FALSE(p.tiled(128, 128));
  EXPECT_TRUE(p.tiled(129, 64));
}

TEST(Ensemble, MeanOfModelsAndFlip) {
  auto m1 = Model::load("synthetic:swin_v1_t:1");
  auto m2 = Model::load("synthetic:swin_v1_t:2");
  const Image im = gradient(96, 64);
  const HostTensor input = preprocess(im, 64, 64);
  auto probs = [&](Model& m, const HostTensor& x) {
    const HostTensor l = m.forward(x);
    std::vector<float> p(l.data.size());
    for (size_t i = 0; i < p.size(); ++i) p[i] = 1.f / (1.f + std::exp(-l.data[i]));
    return p;
  };
  const std::vector<float> p1 = probs(*m1, input), p2 = probs(*m2, input);
  std::vector<float> got(64 * 64);
  ensemble_probabilities({m1.get(), m2.get()}, false)(input, got.data());
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i)
    err = std::max(err, double(std::abs(got[i] - 0.5f * (p1[i] + p2[i]))));
  EXPECT_LT(err, 1e-7);
  // The same model twice is the model; one model gives its own probabilities exactly.
  ensemble_probabilities({m1.get()}, false)(input, got.data());
  EXPECT_EQ(got, p1);
  // Flip: the mean with the flipped input's prediction flipped back.
  HostTensor flipped = input;
  for (int64_t r = 0; r < 3 * 64; ++r)
    for (int64_t x = 0; x < 64; ++x)
      flipped.data[size_t(r * 64 + x)] = input.data[size_t(r * 64 + 63 - x)];
  const std::vector<float> pf = probs(*m1, flipped);
  ensemble_probabilities({m1.get()}, true)(input, got.data());
  err = 0;
  for (int64_t y = 0; y < 64; ++y)
    for (int64_t x = 0; x < 64; ++x) {
      const size_t i = size_t(y * 64 + x);
      err = std::max(err, double(std::abs(got[i] - 0.5f * (p1[i] + pf[size_t(y * 64 + 63 - x)]))));
    }
  EXPECT_LT(err, 1e-7);
  // A flip-symmetric image gives a flip-symmetric mask under flip TTA.
  Image sym = im;
  for (int y = 0; y < sym.height; ++y)
    for (int x = 0; x < sym.width / 2; ++x)
      for (int c = 0; c < 3; ++c)
        sym.pixels[(size_t(y) * sym.width + sym.width - 1 - x) * 3 + c] =
            sym.pixels[(size_t(y) * sym.width + x) * 3 + c];
  PredictOptions po;
  po.width = po.height = 64;
  po.flip = true;
  const Image m = Predictor({m1.get()}, po).mask(sym);
  int asym = 0;
  for (int y = 0; y < m.height; ++y)
    for (int x = 0; x < m.width; ++x)
      asym = std::max(asym, std::abs(int(m.pixels[size_t(y) * m.width + x]) -
                                     int(m.pixels[size_t(y) * m.width + m.width - 1 - x])));
  EXPECT_LE(asym, 1);
}

TEST(Predictor, BatchesEqualSingleRunsAndSizesAreChecked) {
  auto model = Model::load("synthetic:swin_v1_t");
  const Image a = gradient(100, 80), b = gradient(64, 90), c = gradient(300, 200);
  PredictOptions po;
  po.width = po.height = 64;
  po.tile = {TileMode::Auto, 64, -1, 4};  // c is tiled, a and b run as one batch
  const Predictor p({model.get()}, po);
  const std::vector<Image> got = p.masks({&a, &b, &c});
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].pixels, p.mask(a).pixels);
  EXPECT_EQ(got[1].pixels, p.mask(b).pixels);
  EXPECT_EQ(got[2].pixels, p.mask(c).pixels);
  EXPECT_EQ(got[2].width, 300);
  // dynamic: each image at its own size
  PredictOptions dyn;
  dyn.dynamic = true;
  int w = 0, h = 0;
  Predictor({model.get()}, dyn).model_size(100, 80, w, h);
  EXPECT_EQ(w, 96);
  EXPECT_EQ(h, 64);
  PredictOptions bad;
  bad.width = 100;
  EXPECT_NE(test::error_of([&] { Predictor({model.get()}, bad); }).find("multiples of 32"),
            std::string::npos);
  dyn.tile.mode = TileMode::On;
  EXPECT_NE(test::error_of([&] { Predictor({model.get()}, dyn); }).find("dynamic"),
            std::string::npos);
}

// Peak memory of a tiled run grows with the image only by the image's own buffers (decoded
// pixels, the mask): measured at 4000x3000 and 8000x6000 through the command.
TEST(Tiling, PeakMemoryGrowsOnlyWithTheImage) {
  const fs::path dir = fs::path(testing::TempDir()) / "biref_tiling_memory";
  fs::remove_all(dir);
  fs::create_directories(dir);
  double peak[2] = {0, 0};
  const int sizes[2][2] = {{4000, 3000}, {8000, 6000}};
  for (int k = 0; k < 2; ++k) {
    const int w = sizes[k][0], h = sizes[k][1];
    const std::string img =
        (dir / std::string("big").append(std::to_string(k)).append(".jpg")).string();
    cv::Mat m(h, w, CV_8UC3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(uint8_t(x), uint8_t(y), 128);
    ASSERT_TRUE(cv::imwrite(img, m));
    const auto r = test::run_cli_measured(
        "segment " + img + " -o " +
            (dir / std::string("m").append(std::to_string(k)).append(".png")).string() +
            " --model synthetic:swin_v1_t --size 128x128 "
            "--tile on --tile-size 2048 -q",
        peak[k]);
    ASSERT_EQ(r.code, 0) << r.all();
    fs::remove(img);
  }
  const double grown = peak[1] - peak[0];
  const double pixels = (8000.0 * 6000 - 4000.0 * 3000) / (1 << 20);
  std::printf("tiled peak RSS: 4000x3000 %.0f MiB, 8000x6000 %.0f MiB: +%.1f bytes per pixel\n",
              peak[0], peak[1], grown / pixels);
  // The image as decoded and converted (2 x 3 bytes), the mask and its copy for the output
  // (2 x 1): 8 bytes per pixel. A float buffer at the image's size would add 4 more.
  EXPECT_LT(grown, 10.0 * pixels + test::kSlackMb);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace biref
