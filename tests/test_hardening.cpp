// Bad input as a careless or hostile user gives it: predictions stored as 0/1, sizes whose
// products overflow, decompression bombs, hostile safetensors headers, outputs that name an
// input, FIFOs, truncated and unreadable images. Each must be one clear error (or, for the
// prediction files, the official evaluator's scores), never a crash, a hang or a lost file.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "biref/biref.h"
#include "biref/image.h"
#include "core/check.h"
#include "core/tensor.h"
#include "eval/dataset.h"
#include "eval/metrics.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("biref-hard-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path& p) {
  return test::read_file(p.string());
}
void spit(const fs::path& p, const std::string& bytes) {
  test::write_file(p.string(), bytes);
}

std::string to_string(const std::vector<uint8_t>& v) {
  return std::string(v.begin(), v.end());
}

// Every failure of the CLI: exit code 1 and exactly one line on stderr containing `part`.
void expect_one_line_error(const test::CliResult& r, const std::string& part, int code = 1) {
  EXPECT_EQ(r.code, code) << r.all();
  EXPECT_NE(r.err.find(part), std::string::npos) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.err;
}

using test::kSlackMb;
using test::run_cli_measured;

Image gradient_rgb(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.channels = 3;
  im.pixels.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.pixels[(size_t(y) * w + x) * 3 + c] = uint8_t((x * 7 + y * 3 + c * 50) & 255);
  return im;
}

// ---- 1. predictions stored as 0/1, or in a narrow range: scored as the official evaluator ----

cv::Mat random_mask(int h, int w, uint32_t seed, int lo, int hi) {
  cv::Mat m(h, w, CV_8UC1);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  for (int i = 0; i < h * w; ++i) m.data[i] = uint8_t(d(rng));
  return m;
}

TEST(EvalPredictionRanges, BinaryZeroOneScoresAsZero255AfterTheStretch) {
  // The official evaluator divides by 255 and min-max stretches: 0/1 and 200/201 become the same
  // {0, 1} prediction as 0/255. HCE and MBA binarise the raw value at 128 instead: 0/1 is all
  // background there, 200/201 all foreground.
  const cv::Mat gt = random_mask(61, 77, 1, 0, 1) * 255;
  const cv::Mat bits = random_mask(61, 77, 2, 0, 1);
  const eval::ImageScores full = eval::score_image(bits * 255, gt);
  const eval::ImageScores zero_one = eval::score_image(bits, gt);
  const eval::ImageScores narrow = eval::score_image(bits + 200, gt);
  const eval::ImageScores all_bg = eval::score_image(cv::Mat::zeros(gt.size(), CV_8UC1), gt);
  const eval::ImageScores all_fg =
      eval::score_image(cv::Mat(gt.size(), CV_8UC1, cv::Scalar(255)), gt);
  for (const auto& k : eval::keys_in_table_order()) {
    SCOPED_TRACE(k.name);
    const size_t i = size_t(k.key);
    if (k.key == eval::kHCE || k.key == eval::kMBA) {
      EXPECT_EQ(zero_one.values[i], all_bg.values[i]);
      EXPECT_EQ(narrow.values[i], all_fg.values[i]);
    } else {
      EXPECT_EQ(zero_one.values[i], full.values[i]);
      EXPECT_EQ(narrow.values[i], full.values[i]);
    }
  }
}

TEST(EvalPredictionRanges, PartialRangeIsStretchedLikeTheReference) {
  // Values 3..250: p = (v/255 - 3/255) / (250/255 - 3/255). MAE and MSE recomputed here pixel by
  // pixel from that definition.
  const cv::Mat gt = random_mask(40, 52, 3, 0, 1) * 255;
  cv::Mat pred = random_mask(40, 52, 4, 3, 250);
  pred.data[0] = 3;
  pred.data[1] = 250;
  const eval::ImageScores s = eval::score_image(pred, gt);
  double mae = 0, mse = 0;
  for (int i = 0; i < pred.rows * pred.cols; ++i) {
    const double p = (pred.data[i] / 255.0 - 3 / 255.0) / (250 / 255.0 - 3 / 255.0);
    const double g = gt.data[i] > 128 ? 1.0 : 0.0;
    mae += std::fabs(p - g);
    mse += (p - g) * (p - g);
  }
  const double n = double(pred.rows) * pred.cols;
  EXPECT_NEAR(s.values[eval::kMAE], mae / n, 1e-12);
  EXPECT_NEAR(s.values[eval::kMSE], mse / n, 1e-12);
  for (const auto& k : eval::keys_in_table_order()) {
    const double v = s.values[size_t(k.key)];
    EXPECT_TRUE(std::isfinite(v)) << k.name;
    if (k.key != eval::kHCE) {
      EXPECT_GE(v, 0.0) << k.name;
      EXPECT_LE(v, 1.0) << k.name;
    }
  }
}

TEST(EvalPredictionRanges, CliScoresZeroOnePngs) {
  const fs::path dir = fresh_dir("eval01");
  fs::create_directories(dir / "gt");
  fs::create_directories(dir / "pred");
  cv::imwrite((dir / "gt" / "a.png").string(), random_mask(33, 45, 5, 0, 1) * 255);
  cv::imwrite((dir / "pred" / "a.png").string(), random_mask(33, 45, 6, 0, 1));
  const auto r = test::run_cli("eval --gt " + (dir / "gt").string() + " --pred " +
                               (dir / "pred").string() + " --format csv -q");
  EXPECT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.out.find(",1,"), std::string::npos) << r.out;  // one image scored
}

// ---- 2. sizes whose products overflow -----------------------------------------------------

TEST(SizeOverflow, ShapesThatWrapAreErrors) {
  EXPECT_EQ(checked_numel({2, 3, 4}), 24);
  EXPECT_EQ(checked_numel({}), 1);
  EXPECT_EQ(checked_numel({5, 0, int64_t(1) << 62}), 0);
  const int64_t big = int64_t(1) << 30;
  // 16 x 3 x 2^30 x 2^30 wraps to 0 in 64 bits: the shape is refused by name.
  EXPECT_NE(test::error_of([&] {
              checked_numel({16, 3, big, big});
            }).find("[16, 3, 1073741824, 1073741824]"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { checked_numel({2, -3}); }).find("negative"), std::string::npos);
  HostTensor t;
  t.shape = {16, 3, big, big};
  EXPECT_NE(test::error_of([&] { t.numel(); }).find("64 bits"), std::string::npos);
  EXPECT_NE(test::error_of([&] { numel_of({big, big, big}); }).find("64 bits"), std::string::npos);
  EXPECT_NE(test::error_of([&] {
              checked_mul(int64_t(1) << 40, int64_t(1) << 40, "bytes");
            }).find("bytes"),
            std::string::npos);
}

TEST(SizeOverflow, BenchRefusesHugeSizesBeforeLoading) {
  expect_one_line_error(test::run_cli("bench --size 1073741824x1073741824 --batch 16"), "64 bits");
  // It fits in 64 bits but not in memory: a clear error, not a crash.
  expect_one_line_error(test::run_cli("bench --size 1073741824x1073741824"), "cannot allocate");
  expect_one_line_error(test::run_cli("bench --size 100x100"), "multiples of 32");
  expect_one_line_error(test::run_cli("bench --size 64x64 --batch 0"), "--batch");
}

// ---- 3. decompression bombs: the declared size is checked before decoding --------------------

TEST(ImageLimits, ProbeReadsTheSizeOfEveryFormat) {
  const Image im = gradient_rgb(37, 23);
  for (const std::string ext : {".png", ".jpg", ".webp", ".tif", ".bmp", ".ppm"}) {
    SCOPED_TRACE(ext);
    const std::vector<uint8_t> bytes = encode_image(im, ext);
    const ImageInfo info = probe_image(bytes.data(), bytes.size(), "x" + ext);
    EXPECT_EQ(info.width, 37);
    EXPECT_EQ(info.height, 23);
    const Image back = decode_image(bytes.data(), bytes.size(), "x" + ext);
    EXPECT_EQ(back.width, 37);
    EXPECT_EQ(back.height, 23);
    EXPECT_EQ(back.channels, 3);
    if (ext != ".jpg" && ext != ".webp") {  // lossless formats
      EXPECT_EQ(back.pixels, im.pixels);
    }
  }
  const std::string png = test::png_declaring(20000, 20000);
  const ImageInfo big =
      probe_image(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "bomb.png");
  EXPECT_EQ(big.format, "PNG");
  EXPECT_EQ(big.width, 20000);
  EXPECT_EQ(big.height, 20000);
  const std::string junk = "GIF89a not supported";
  EXPECT_NE(test::error_of([&] {
              probe_image(reinterpret_cast<const uint8_t*>(junk.data()), junk.size(), "x.gif");
            }).find("not an image biref reads"),
            std::string::npos);
}

TEST(ImageLimits, EveryPrefixOfAHeaderIsAnErrorNotAnOverread) {
  // Under the sanitizers this catches a header field read past the end of a short file (the
  // fuzzer found one: a 30-byte WebP whose VP8X canvas size ends at byte 31).
  const Image im = gradient_rgb(37, 23);
  for (const std::string ext : {".png", ".jpg", ".webp", ".tif", ".bmp", ".ppm"}) {
    const std::vector<uint8_t> bytes = encode_image(im, ext);
    for (size_t n = 0; n < std::min<size_t>(bytes.size(), 96); ++n) {
      std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + long(n));  // exactly n bytes
      EXPECT_THROW(decode_image(prefix.data(), n, ext), Error) << ext << " " << n;
    }
  }
  const std::string vp8x =
      std::string("RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0", 24) + std::string(6, '\x10');
  ASSERT_EQ(vp8x.size(), 30u);
  std::vector<uint8_t> exact(vp8x.begin(), vp8x.end());
  EXPECT_THROW(probe_image(exact.data(), exact.size(), "vp8x.webp"), Error);
}

TEST(ImageLimits, BombIsRefusedBeforeDecoding) {
  const std::string png = test::png_declaring(20000, 20000);
  const auto* d = reinterpret_cast<const uint8_t*>(png.data());
  const std::string err = test::error_of([&] { decode_image(d, png.size(), "bomb.png"); });
  EXPECT_NE(err.find("20000x20000"), std::string::npos) << err;
  EXPECT_NE(err.find("above the limit of 134217728 pixels"), std::string::npos) << err;
  // Allowed by a higher limit, the missing data is then a decode error (not a crash).
  DecodeOptions lax;
  lax.max_pixels = int64_t(20000) * 20000;
  DecodeOptions strict;
  strict.max_pixels = 100;
  const Image small = gradient_rgb(11, 10);
  const auto bytes = encode_image(small, ".png");
  EXPECT_NE(test::error_of([&] {
              decode_image(bytes.data(), bytes.size(), "s.png", strict);
            }).find("110 pixels"),
            std::string::npos);
  strict.max_pixels = 110;
  EXPECT_EQ(decode_image(bytes.data(), bytes.size(), "s.png", strict).width, 11);
  const std::string tiny = test::png_declaring(64, 64);
  EXPECT_NE(test::error_of([&] {
              decode_image(reinterpret_cast<const uint8_t*>(tiny.data()), tiny.size(), "t.png",
                           lax);
            }).find("t.png"),
            std::string::npos);
}

// The kind on biref::Error is what a service maps to an HTTP status.
ErrorKind kind_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no biref::Error thrown";
  return ErrorKind::Internal;
}

TEST(ErrorKinds, TellBadInputTooLargeAndMissingApart) {
  const std::string bomb = test::png_declaring(20000, 20000);
  EXPECT_EQ(kind_of([&] {
              decode_image(reinterpret_cast<const uint8_t*>(bomb.data()), bomb.size(), "b.png");
            }),
            ErrorKind::TooLarge);
  const std::string junk = "not an image at all";
  EXPECT_EQ(kind_of([&] {
              decode_image(reinterpret_cast<const uint8_t*>(junk.data()), junk.size(), "j.png");
            }),
            ErrorKind::InvalidInput);
  EXPECT_EQ(kind_of([] { read_image("/nonexistent/biref/x.png"); }), ErrorKind::NotFound);
  EXPECT_EQ(kind_of([] { Model::load("no-such-model-or-file"); }), ErrorKind::NotFound);
  EXPECT_STREQ(error_kind_name(ErrorKind::TooLarge), "too large");
  EXPECT_EQ(Error("x").kind(), ErrorKind::InvalidInput);
}

TEST(ImageLimits, SegmentAndEvalRefuseBombsInLittleMemory) {
  const fs::path dir = fresh_dir("bomb");
  spit(dir / "bomb.png", test::png_declaring(30000, 30000));
  double peak = 0;
  const auto r = run_cli_measured("segment " + (dir / "bomb.png").string() + " -o " +
                                      (dir / "m.png").string() + " --model synthetic:swin_v1_t",
                                  peak);
  expect_one_line_error(r, "above the limit");
  EXPECT_FALSE(fs::exists(dir / "m.png"));
  EXPECT_LT(peak, 400.0 + kSlackMb);  // it used to take gigabytes, or run out of memory
  // The limit is the user's: lowered by the flag or the environment, for every command.
  cv::imwrite((dir / "small.png").string(), cv::Mat(64, 64, CV_8UC3, cv::Scalar(1, 2, 3)));
  expect_one_line_error(
      test::run_cli("segment " + (dir / "small.png").string() + " -o " + (dir / "m.png").string() +
                    " --model synthetic:swin_v1_t --max-image-pixels 4000"),
      "above the limit of 4000 pixels");
  expect_one_line_error(test::run_cli("segment " + (dir / "small.png").string() + " -o " +
                                          (dir / "m.png").string() + " --model synthetic:swin_v1_t",
                                      "BIREF_MAX_IMAGE_PIXELS=4000"),
                        "above the limit of 4000 pixels");
  expect_one_line_error(test::run_cli("segment " + (dir / "small.png").string() + " -o " +
                                          (dir / "m.png").string() + " --model synthetic:swin_v1_t",
                                      "BIREF_MAX_IMAGE_PIXELS=lots"),
                        "BIREF_MAX_IMAGE_PIXELS");

  // eval: the bomb pair is reported and skipped; the other pair is scored.
  fs::create_directories(dir / "gt");
  fs::create_directories(dir / "pred");
  spit(dir / "gt" / "bomb.png", test::png_declaring(20000, 20000));
  spit(dir / "pred" / "bomb.png", test::png_declaring(20000, 20000));
  cv::imwrite((dir / "gt" / "ok.png").string(), random_mask(20, 30, 7, 0, 1) * 255);
  cv::imwrite((dir / "pred" / "ok.png").string(), random_mask(20, 30, 8, 0, 255));
  const auto e = run_cli_measured("eval --gt " + (dir / "gt").string() + " --pred " +
                                      (dir / "pred").string() + " --format csv -q",
                                  peak);
  EXPECT_EQ(e.code, 0) << e.all();
  EXPECT_NE(e.err.find("bomb.png"), std::string::npos) << e.err;
  EXPECT_NE(e.err.find("above the limit"), std::string::npos) << e.err;
  EXPECT_NE(e.out.find(",1,"), std::string::npos) << e.out;
  EXPECT_LT(peak, 400.0 + kSlackMb);
}

// ---- 7. truncated, unreadable and special files --------------------------------------------

TEST(ImageFiles, TruncatedFilesAreErrorsNamingTheFile) {
  const Image im = gradient_rgb(64, 48);
  for (const std::string ext : {".jpg", ".png", ".webp", ".tif", ".bmp", ".ppm"}) {
    SCOPED_TRACE(ext);
    const std::vector<uint8_t> bytes = encode_image(im, ext);
    for (const size_t keep : {bytes.size() / 2, size_t(20), size_t(5)}) {
      const std::string name = "cut" + std::to_string(keep) + ext;
      const std::string err = test::error_of([&] { decode_image(bytes.data(), keep, name); });
      EXPECT_NE(err.find(name), std::string::npos) << err;
    }
  }
  // Through the command: one line, no decoder chatter before it, no output.
  const fs::path dir = fresh_dir("trunc");
  for (const std::string ext : {".jpg", ".png", ".bmp", ".ppm", ".webp"}) {
    const std::vector<uint8_t> bytes = encode_image(im, ext);
    spit(dir / ("cut" + ext), to_string(bytes).substr(0, bytes.size() * 2 / 3));
    expect_one_line_error(test::run_cli("segment " + (dir / ("cut" + ext)).string() + " -o " +
                                        (dir / "m.png").string() + " --model synthetic:swin_v1_t"),
                          "is a truncated");
    EXPECT_FALSE(fs::exists(dir / "m.png"));
  }
  const std::vector<uint8_t> jpg = encode_image(im, ".jpg");
  EXPECT_NE(test::error_of([&] {
              decode_image(jpg.data(), jpg.size() - 2, "a.jpg");
            }).find("truncated JPEG file"),
            std::string::npos);
}

TEST(ImageFiles, SpecialAndUnreadableFiles) {
  const fs::path dir = fresh_dir("special");
  const std::string fifo = (dir / "fifo.png").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // A FIFO without a writer would block a plain open() forever: refused at once ("timeout"
  // ends the command after 30 s if it ever hangs, which gives a code other than 1).
  expect_one_line_error(test::run_cli("segment " + fifo + " -o " + (dir / "m.png").string() +
                                          " --model synthetic:swin_v1_t",
                                      "timeout 30"),
                        "not a regular file");
  expect_one_line_error(test::run_cli("info " + fifo, "timeout 30"), "not a regular file");
  expect_one_line_error(
      test::run_cli("segment /dev/zero -o " + (dir / "m.png").string() + " --model /dev/zero",
                    "timeout 30"),
      "not a regular file");
  // A folder is an input whose images are segmented; here the only entry is the FIFO, which
  // is not an image file.
  expect_one_line_error(test::run_cli("segment " + dir.string() + " -o " + (dir / "out").string() +
                                      " --model synthetic:swin_v1_t"),
                        "holds no images");
  // Unreadable: the system's reason, not "cannot decode". Root reads everything, so the
  // command runs as `nobody` when the tests run as root.
  const fs::path img = dir / "secret.png";
  cv::imwrite(img.string(), cv::Mat(8, 8, CV_8UC3, cv::Scalar(9, 9, 9)));
  fs::permissions(dir, fs::perms::all);  // others may enter the folder and write the output
  fs::permissions(img, fs::perms::owner_read | fs::perms::owner_write);
  std::string runner;
  if (geteuid() == 0) {
    if (std::system("command -v setpriv >/dev/null 2>&1") != 0) GTEST_SKIP() << "no setpriv";
    runner = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    // The checkout may lie in a folder that user cannot enter (e.g. under /root).
    if (test::run_cli("--version", runner).code != 0)
      GTEST_SKIP() << "user 65534 cannot run biref here";
  }
  const auto s = test::run_cli("segment " + img.string() + " -o " + (dir / "o.png").string() +
                                   " --model synthetic:swin_v1_t",
                               runner);
  expect_one_line_error(s, "Permission denied");
}

// ---- 4. hostile safetensors headers ---------------------------------------------------------

std::string safetensors_with_header(const std::string& header, size_t data_bytes = 0) {
  std::string f(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return f + header + std::string(data_bytes, '\0');
}

std::string load_error(const fs::path& p, const std::string& bytes) {
  spit(p, bytes);
  return test::error_of([&] { load_safetensors(p.string()); });
}

TEST(SafetensorsHeader, DeepNestingIsRefusedQuicklyInLittleMemory) {
  const fs::path dir = fresh_dir("st");
  std::string deep = "{\"a\":";
  deep += std::string(10 << 20, '[');
  spit(dir / "deep.safetensors", safetensors_with_header(deep));
  double peak = 0;
  const auto r = run_cli_measured("info " + (dir / "deep.safetensors").string(), peak);
  expect_one_line_error(r, "nests deeper than");
  EXPECT_LT(peak, 300.0 + kSlackMb);  // 1.55 GB before the depth limit
  // A header length above the cap is refused before parsing anything.
  std::string big_len(8, '\0');
  big_len[3] = 2;  // 32 MiB
  EXPECT_NE(
      load_error(dir / "len.safetensors", big_len + std::string(64, ' ')).find("header length"),
      std::string::npos);
  const std::string huge = safetensors_with_header("{" + std::string(17 << 20, ' ') + "}");
  EXPECT_NE(load_error(dir / "huge.safetensors", huge).find("more than the 16777216"),
            std::string::npos);
}

TEST(SafetensorsHeader, MalformedEntriesAreNamedWithReadableNumbers) {
  const fs::path dir = fresh_dir("st2");
  auto entry = [](const std::string& name, const std::string& shape, const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":" + shape +
           ",\"data_offsets\":" + offsets + "}";
  };
  struct Case {
    std::string header, expect;
  };
  const std::vector<Case> cases = {
      {"{" + entry("a", "[2]", "[0,8]") + "," + entry("b", "[2]", "[4,12]") + "}", "overlap"},
      {"{" + entry("a", "[4]", "[0,16]") + "," + entry("b", "[1]", "[4,8]") + "}", "overlap"},
      {"{" + entry("a", "[2.5]", "[0,8]") + "}", "not an integer"},
      {"{" + entry("a", "[\"2\"]", "[0,8]") + "}", "not an integer"},
      {"{" + entry("a", "2", "[0,8]") + "}", "must be a list"},
      {"{" + entry("a", "[-2]", "[0,8]") + "}", "negative dimension"},
      {"{" + entry("a", "[2]", "[-8,0]") + "}", "[-8,0] are negative"},
      {"{" + entry("a", "[2]", "[8,0]") + "}", "end before they begin"},
      {"{" + entry("a", "[2]", "[0,8.0]") + "}", "two integers"},
      {"{" + entry("a", "[2]", "[0,8,9]") + "}", "two integers"},
      {"{" + entry("a", "[4]", "[8,24]") + "}", "data [8, 24) lies outside the 16 data bytes"},
      {"{" + entry("a", "[4294967296,4294967296]", "[0,16]") + "}", "too large"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    const std::string err =
        load_error(dir / "x.safetensors", safetensors_with_header(c.header, 16));
    EXPECT_NE(err.find(c.expect), std::string::npos) << err;
    EXPECT_EQ(err.find("18446744073709551"), std::string::npos) << "wrapped value: " << err;
  }
  // Adjacent and empty tensors are fine.
  spit(dir / "ok.safetensors", safetensors_with_header("{" + entry("a", "[2]", "[0,8]") + "," +
                                                           entry("b", "[2]", "[8,16]") + "," +
                                                           entry("c", "[0]", "[8,8]") + "}",
                                                       16));
  EXPECT_EQ(load_safetensors((dir / "ok.safetensors").string()).tensors.size(), 3u);
}

TEST(CheckpointFiles, FormatIsNamedByContent) {
  const fs::path dir = fresh_dir("ck");
  std::string random_bytes;
  std::mt19937 rng(3);
  for (int i = 0; i < 4096; ++i) random_bytes += char(rng() & 0xff);
  random_bytes[0] = 'Z';
  random_bytes[8] = 'x';
  spit(dir / "model.pth", random_bytes);
  const std::string err = test::error_of([&] { load_checkpoint((dir / "model.pth").string()); });
  EXPECT_NE(err.find("neither a safetensors file nor a PyTorch checkpoint"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("not a valid safetensors"), std::string::npos) << err;
  spit(dir / "page.safetensors", "<!DOCTYPE html><html><body>Not found</body></html>");
  EXPECT_NE(test::error_of([&] {
              check_checkpoint_signature((dir / "page.safetensors").string());
            }).find("<!DOCTYPE html>"),
            std::string::npos);
}

// ---- 5. exit codes: 0 success and help, 1 errors while running, 2 usage errors ---------------

TEST(ExitCodes, UsageErrorsAreOneLineWithCode2) {
  expect_one_line_error(test::run_cli("frobnicate"), "unknown command 'frobnicate'", 2);
  expect_one_line_error(test::run_cli("segment"), "(see biref segment --help)", 2);
  expect_one_line_error(test::run_cli("segment a.png -o b.png -m x --threads abc"), "--threads", 2);
  expect_one_line_error(test::run_cli("eval --gt a --pred b --frob"), "--frob", 2);
  expect_one_line_error(test::run_cli("--frob"), "--frob", 2);
  const auto none = test::run_cli("");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("Usage: biref"), std::string::npos) << none.err;
  for (const std::string args :
       {"--help", "segment --help", "eval --help", "bench -h", "--version"}) {
    const auto r = test::run_cli(args);
    EXPECT_EQ(r.code, 0) << args << ": " << r.all();
    EXPECT_FALSE(r.out.empty()) << args;
  }
  expect_one_line_error(
      test::run_cli("segment a.png -o b.png -m synthetic:swin_v1_t --threads 1000"),
      "--threads 1000 is out of range");
  expect_one_line_error(test::run_cli("segment a.png -o b.png -m synthetic:swin_v1_t --size ''"),
                        "--size '' is not a size");
  expect_one_line_error(test::run_cli("eval --gt a --pred b --threads -1"), "--threads -1");
}

// ---- 6. an output that is an input is refused before anything runs --------------------------

TEST(OutputIsInput, SegmentConvertAndEvalNeverOverwriteAnInput) {
  const fs::path dir = fresh_dir("same");
  const fs::path img = dir / "photo.png";
  cv::imwrite(img.string(), cv::Mat(40, 40, CV_8UC3, cv::Scalar(10, 200, 30)));
  const std::string before = slurp(img);
  expect_one_line_error(test::run_cli("segment " + img.string() + " -o " + img.string() +
                                      " --model synthetic:swin_v1_t"),
                        "refusing to overwrite an input");
  // The same file under another spelling, and through a symbolic link.
  fs::create_symlink(img, dir / "link.png");
  expect_one_line_error(
      test::run_cli("segment " + img.string() + " -o " + (dir / "." / "photo.png").string() +
                    " --model synthetic:swin_v1_t"),
      "refusing to overwrite an input");
  expect_one_line_error(test::run_cli("segment " + img.string() + " -o " +
                                      (dir / "link.png").string() + " --model synthetic:swin_v1_t"),
                        "refusing to overwrite an input");
  expect_one_line_error(
      test::run_cli("segment " + img.string() + " -o " + (dir / "m.png").string() + " --dump " +
                    img.string() + " --model synthetic:swin_v1_t"),
      "refusing to overwrite an input");
  EXPECT_EQ(slurp(img), before);
  EXPECT_TRUE(fs::is_symlink(dir / "link.png"));

  const fs::path ck = dir / "w.safetensors";
  ASSERT_EQ(test::run_cli("convert --synthetic swin_v1_t " + ck.string()).code, 0);
  const std::string ck_before = slurp(ck);
  expect_one_line_error(
      test::run_cli("convert " + ck.string() + " " + ck.string() + " --dtype f16"),
      "refusing to overwrite an input");
  expect_one_line_error(
      test::run_cli("segment " + img.string() + " -o " + ck.string() + " --model " + ck.string()),
      "refusing to overwrite an input");
  EXPECT_EQ(slurp(ck), ck_before);

  fs::create_directories(dir / "gt");
  fs::create_directories(dir / "pred");
  cv::imwrite((dir / "gt" / "a.png").string(), random_mask(20, 20, 1, 0, 1) * 255);
  cv::imwrite((dir / "pred" / "a.png").string(), random_mask(20, 20, 2, 0, 255));
  const std::string gt_before = slurp(dir / "gt" / "a.png");
  const std::string eval =
      "eval --gt " + (dir / "gt").string() + " --pred " + (dir / "pred").string();
  expect_one_line_error(test::run_cli(eval + " -o " + (dir / "gt" / "a.png").string()),
                        "GT folder");
  expect_one_line_error(test::run_cli(eval + " --plot " + (dir / "gt" / "a").string()),
                        "GT folder");
  expect_one_line_error(test::run_cli(eval + " --plot " + (dir / "pred" / "curves.png").string()),
                        "prediction folder");
  EXPECT_EQ(slurp(dir / "gt" / "a.png"), gt_before);
  EXPECT_FALSE(fs::exists(dir / "pred" / "curves.png"));
  // A report beside the images under a new, non-image name is fine.
  EXPECT_EQ(test::run_cli(eval + " -q -o " + (dir / "pred" / "report.txt").string()).code, 0);
}

}  // namespace
}  // namespace biref
