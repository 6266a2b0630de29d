// refine_foreground against the official one: golden/pipeline/*.foreground.png were computed by
// the official code from each image and its golden mask.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "biref/pipeline.h"
#include "test_util.h"

namespace biref {
namespace {

TEST(Foreground, MatchesTheOfficialWithinOne) {
  std::ifstream f(test::data_path("pipeline/cases.json"));
  const auto cases = nlohmann::json::parse(f)["cases"];
  size_t total = 0, differing = 0;
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const auto& c = it.value();
    const Image rgb = read_image(test::data_path("pipeline/" + c["image"].get<std::string>()));
    DecodeOptions gray;
    gray.channels = 1;
    const Image mask =
        read_image(test::data_path("pipeline/" + c["mask"].get<std::string>()), gray);
    const Image want =
        read_image(test::data_path("pipeline/" + c["foreground"].get<std::string>()));
    const Image got = refine_foreground(rgb, mask);
    ASSERT_EQ(got.width, want.width);
    ASSERT_EQ(got.height, want.height);
    ASSERT_EQ(got.pixels.size(), want.pixels.size());
    const test::ByteDiff bd =
        test::byte_diff(got.pixels.data(), want.pixels.data(), got.pixels.size());
    const int max_diff = bd.max;
    const size_t diff = size_t(bd.count);
    std::printf("foreground %-12s max diff %d, %zu of %zu values differ\n", it.key().c_str(),
                max_diff, diff, got.pixels.size());
    EXPECT_LE(max_diff, 1) << it.key();
    total += got.pixels.size();
    differing += diff;
  }
  EXPECT_LE(differing, total / 1000);  // off by one in rare truncations of float noise
}

TEST(Foreground, SmallImagesReflectAcrossTheBorderAndBadMasksAreRefused) {
  // Smaller than the radius (90): the window reflects many times; a constant image and a full
  // mask must give the image back.
  Image rgb;
  rgb.width = 7;
  rgb.height = 3;
  rgb.channels = 3;
  rgb.pixels.assign(7 * 3 * 3, 200);
  Image mask;
  mask.width = 7;
  mask.height = 3;
  mask.channels = 1;
  mask.pixels.assign(7 * 3, 255);
  const Image out = refine_foreground(rgb, mask);
  for (uint8_t v : out.pixels) EXPECT_NEAR(int(v), 200, 1);
  mask.width = 6;
  mask.pixels.assign(6 * 3, 255);
  EXPECT_NE(test::error_of([&] { refine_foreground(rgb, mask); }).find("image's size"),
            std::string::npos);
}

}  // namespace
}  // namespace biref
