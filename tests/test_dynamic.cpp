// The official dynamic-size inference: each image at its own size floored to multiples of 32,
// shrunk with Pillow's default filter (bicubic, antialiased). golden/pipeline-dynamic holds the
// official masks (swin_v1_t, synthetic seed 0).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "biref/pipeline.h"
#include "test_util.h"

namespace biref {
namespace {

TEST(DynamicSize, ModelSizeFloorsAndCaps) {
  int w = 0, h = 0;
  dynamic_model_size(451, 300, 0, w, h);
  EXPECT_EQ(w, 448);
  EXPECT_EQ(h, 288);
  dynamic_model_size(20, 1000, 0, w, h);  // never below 32
  EXPECT_EQ(w, 32);
  EXPECT_EQ(h, 992);
  dynamic_model_size(6000, 4000, int64_t(2048) * 2048, w, h);  // capped, aspect kept
  EXPECT_LE(int64_t(w) * h, int64_t(2048) * 2048);
  EXPECT_EQ(w % 32, 0);
  EXPECT_EQ(h % 32, 0);
  EXPECT_NEAR(double(w) / h, 1.5, 0.03);
  EXPECT_GE(w, 2496 - 32);
}

TEST(DynamicSize, PillowResizeIsIdentityAtTheSameSizeAndKeepsConstants) {
  Image im;
  im.width = 13;
  im.height = 9;
  im.channels = 3;
  im.pixels.resize(13 * 9 * 3);
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = uint8_t(i * 37 % 251);
  EXPECT_EQ(resize_bicubic_antialiased(im, 13, 9).pixels, im.pixels);
  im.pixels.assign(im.pixels.size(), 77);
  for (uint8_t v : resize_bicubic_antialiased(im, 5, 4).pixels) EXPECT_EQ(v, 77);
  for (uint8_t v : resize_bicubic_antialiased(im, 40, 31).pixels) EXPECT_EQ(v, 77);
}

TEST(DynamicSize, MatchesTheOfficialMasksWithinOne) {
  std::ifstream f(test::data_path("pipeline-dynamic/cases.json"));
  const auto j = nlohmann::json::parse(f);
  auto model = Model::load("synthetic:swin_v1_t:" + std::to_string(j["seed"].get<int>()));
  for (auto it = j["cases"].begin(); it != j["cases"].end(); ++it) {
    const auto& c = it.value();
    const Image rgb =
        read_image(test::data_path("pipeline-dynamic/" + c["image"].get<std::string>()));
    int w = 0, h = 0;
    dynamic_model_size(rgb.width, rgb.height, 0, w, h);
    ASSERT_EQ(w, c["model_size_wxh"][0].get<int>()) << it.key();
    ASSERT_EQ(h, c["model_size_wxh"][1].get<int>()) << it.key();
    const HostTensor logits = model->forward(preprocess(rgb, w, h, InputResize::PillowBicubic));
    const Image mask = mask_from_probabilities(probabilities(logits, rgb.width, rgb.height),
                                               rgb.width, rgb.height);
    DecodeOptions gray;
    gray.channels = 1;
    const Image want =
        read_image(test::data_path("pipeline-dynamic/" + c["mask"].get<std::string>()), gray);
    ASSERT_EQ(want.pixels.size(), mask.pixels.size());
    const test::ByteDiff bd =
        test::byte_diff(mask.pixels.data(), want.pixels.data(), mask.pixels.size());
    const int max_diff = bd.max;
    const size_t diff = size_t(bd.count);
    std::printf("dynamic %-12s model %dx%d: max diff %d, %zu of %zu pixels differ\n",
                it.key().c_str(), w, h, max_diff, diff, mask.pixels.size());
    EXPECT_LE(max_diff, 1) << it.key();
    EXPECT_LE(diff, mask.pixels.size() / 10000) << it.key();
  }
}

}  // namespace
}  // namespace biref
