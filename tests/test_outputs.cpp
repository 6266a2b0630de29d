// What a mask is turned into (binary mask, RGBA cut-out, refined foreground, composite) and how
// `biref segment` names and checks those outputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "biref/pipeline.h"
#include "test_util.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

Image make(int w, int h, int channels, uint8_t v) {
  Image im;
  im.width = w;
  im.height = h;
  im.channels = channels;
  im.pixels.assign(size_t(w) * h * channels, v);
  return im;
}

TEST(Outputs, ParseColor) {
  const Color a = parse_color("#0a80ff");
  EXPECT_EQ(a.r, 10);
  EXPECT_EQ(a.g, 128);
  EXPECT_EQ(a.b, 255);
  const Color b = parse_color("#f0a");
  EXPECT_EQ(b.r, 255);
  EXPECT_EQ(b.g, 0);
  EXPECT_EQ(b.b, 170);
  const Color c = parse_color("1,2,255");
  EXPECT_EQ(c.r, 1);
  EXPECT_EQ(c.g, 2);
  EXPECT_EQ(c.b, 255);
  EXPECT_EQ(parse_color("black").r, 0);
  for (const char* bad :
       {"", "#12", "#ggg", "1,2", "1,2,256", "1,2,3,", "1,,3", "purple", " 1,2,3"})
    EXPECT_NE(test::error_of([&] { parse_color(bad); }).find("is not one of"), std::string::npos)
        << bad;
}

TEST(Outputs, ThresholdCutoutAndComposite) {
  Image mask = make(3, 1, 1, 0);
  mask.pixels = {0, 128, 255};
  EXPECT_EQ(threshold_mask(mask, 127).pixels, (std::vector<uint8_t>{0, 255, 255}));
  EXPECT_EQ(threshold_mask(mask, 128).pixels, (std::vector<uint8_t>{0, 0, 255}));
  EXPECT_NE(test::error_of([&] { threshold_mask(mask, 255); }).find("0..254"), std::string::npos);

  Image rgb = make(3, 1, 3, 0);
  rgb.pixels = {10, 20, 30, 200, 100, 0, 7, 8, 9};
  const Image rgba = cutout_rgba(rgb, mask);
  EXPECT_EQ(rgba.channels, 4);
  EXPECT_EQ(rgba.pixels, (std::vector<uint8_t>{10, 20, 30, 0, 200, 100, 0, 128, 7, 8, 9, 255}));

  // a = 0: the background; a = 255: the image; a = 128: round((fg·128 + bg·127) / 255).
  const Image on_white = composite(rgb, mask, Color{255, 255, 255});
  EXPECT_EQ(on_white.pixels,
            (std::vector<uint8_t>{255, 255, 255, uint8_t((200 * 128 + 255 * 127 + 127) / 255),
                                  uint8_t((100 * 128 + 255 * 127 + 127) / 255),
                                  uint8_t((255 * 127 + 127) / 255), 7, 8, 9}));
  Image bg = make(3, 1, 3, 50);
  const Image on_image = composite(rgb, mask, Color{}, &bg);
  EXPECT_EQ(on_image.pixels[0], 50);
  EXPECT_EQ(on_image.pixels[3], uint8_t((200 * 128 + 50 * 127 + 127) / 255));
  EXPECT_EQ(on_image.pixels[8], 9);
  Image small_bg = make(2, 1, 3, 50);
  EXPECT_NE(test::error_of([&] { composite(rgb, mask, Color{}, &small_bg); }).find("image's size"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { cutout_rgba(rgb, make(3, 2, 1, 0)); }).find("image's size"),
            std::string::npos);
}

class SegmentOutputs : public testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("biref-outputs-" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
  const std::string img = test::data_path("pipeline/chelsea.png");
  const std::string model = " --model synthetic:swin_v1_t --size 64x64 -q";
};

TEST_F(SegmentOutputs, EveryKindIntoAFolderNamedAfterTheImage) {
  const fs::path out = dir / "out";  // made by segment
  const auto r =
      test::run_cli("segment " + img + " -o " + out.string() +
                    " --output mask,rgba,foreground,composite --bg-color 0,255,0" + model);
  ASSERT_EQ(r.code, 0) << r.all();
  DecodeOptions gray;
  gray.channels = 1;
  const Image mask = read_image((out / "chelsea.mask.png").string(), gray);
  const Image rgb = read_image(img);
  // The same mask as a run that writes the mask alone.
  ASSERT_EQ(test::run_cli("segment " + img + " -o " + (dir / "m.png").string() + model).code, 0);
  EXPECT_EQ(read_image((dir / "m.png").string(), gray).pixels, mask.pixels);
  // Each kind is what the library makes from that mask (PNG is lossless).
  const auto decoded_rgba = [](const fs::path& p) { return test::read_file(p.string()); };
  EXPECT_EQ(decoded_rgba(out / "chelsea.rgba.png"), [&] {
    const auto b = encode_image(cutout_rgba(rgb, mask), ".png");
    return std::string(b.begin(), b.end());
  }());
  EXPECT_EQ(decoded_rgba(out / "chelsea.foreground.png"), [&] {
    const auto b = encode_image(cutout_rgba(refine_foreground(rgb, mask), mask), ".png");
    return std::string(b.begin(), b.end());
  }());
  EXPECT_EQ(read_image((out / "chelsea.composite.png").string()).pixels,
            composite(rgb, mask, Color{0, 255, 0}).pixels);
}

TEST_F(SegmentOutputs, ThresholdDynamicSizeAndRefusals) {
  const auto r = test::run_cli(
      "segment " + test::data_path("pipeline/coffee.png") + " -o " + (dir / "t.png").string() +
      " --model synthetic:swin_v1_t --size dynamic --max-pixels 20000 --threshold 100");
  ASSERT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.err.find("at 160x96"), std::string::npos) << r.err;  // 600x400 capped to 20000 pixels
  DecodeOptions gray;
  gray.channels = 1;
  for (uint8_t v : read_image((dir / "t.png").string(), gray).pixels)
    EXPECT_TRUE(v == 0 || v == 255);

  auto expect_error = [&](const std::string& args, const std::string& part) {
    const auto e = test::run_cli("segment " + img + " " + args + model);
    EXPECT_EQ(e.code, 1) << args << ": " << e.all();
    EXPECT_NE(e.err.find(part), std::string::npos) << e.err;
    EXPECT_EQ(std::count(e.err.begin(), e.err.end(), '\n'), 1) << e.err;
  };
  expect_error("-o " + (dir / "x.jpg").string() + " --output rgba", "alpha channel");
  expect_error("-o " + (dir / "x.png").string() + " --output mask,rgba", "must be a folder");
  expect_error("-o " + (dir / "x.png").string() + " --output cutout", "not an output kind");
  expect_error("-o " + (dir / "x.png").string() + " --threshold 300", "0..254");
  expect_error("-o " + (dir / "x.png").string() + " --bg-color teal --output composite", "teal");
  fs::copy_file(img, dir / "bg.png");
  const std::string bg_before = test::read_file((dir / "bg.png").string());
  expect_error("-o " + (dir / "bg.png").string() + " --output composite --bg-image " +
                   (dir / "bg.png").string(),
               "the background image");
  EXPECT_EQ(test::read_file((dir / "bg.png").string()), bg_before);
  EXPECT_FALSE(fs::exists(dir / "x.png"));
  EXPECT_FALSE(fs::exists(dir / "x.jpg"));
}

}  // namespace
}  // namespace biref
