// Unit tests of the metric pieces: distance transform (with its tie rule), skeletonisation
// (against a naive full-scan port and hand-checked cases), and each metric's edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <opencv2/imgproc.hpp>
#include <random>

#include "biref/error.h"
#include "eval/distance_transform.h"
#include "eval/metrics.h"
#include "eval/skeletonize.h"

namespace biref::eval {
namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();

std::vector<int32_t> nearest_of(const std::vector<uint8_t>& f, int h, int w) {
  std::vector<int32_t> out(size_t(h) * w);
  nearest_feature(f.data(), h, w, out.data());
  return out;
}

TEST(EvalDistanceTransform, MatchesBruteForceDistance) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int h = 1 + int(rng() % 23), w = 1 + int(rng() % 29);
    const double density = (trial % 4 + 1) * 0.05;
    std::vector<uint8_t> f(size_t(h) * w);
    bool any = false;
    for (auto& v : f) {
      v = std::uniform_real_distribution<double>(0, 1)(rng) < density;
      any |= v != 0;
    }
    const auto near = nearest_of(f, h, w);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        int64_t best = -1;
        for (int j = 0; j < h * w; ++j)
          if (f[size_t(j)]) {
            const int64_t d = int64_t(j / w - y) * (j / w - y) + int64_t(j % w - x) * (j % w - x);
            if (best < 0 || d < best) best = d;
          }
        const int32_t n = near[size_t(y * w + x)];
        if (!any) {
          ASSERT_EQ(n, -1);
          continue;
        }
        ASSERT_GE(n, 0);
        ASSERT_TRUE(f[size_t(n)]) << "not a feature";
        const int64_t d = int64_t(n / w - y) * (n / w - y) + int64_t(n % w - x) * (n % w - x);
        ASSERT_EQ(d, best) << "trial " << trial << " at " << y << "," << x;
      }
  }
}

// Ties, worked through scipy's algorithm (columns first, then rows along the lower envelope).
TEST(EvalDistanceTransform, TieRule) {
  {  // one row: features at 0 and 4, pixel 2 -> the earlier column
    const auto n = nearest_of({1, 0, 0, 0, 1}, 1, 5);
    EXPECT_EQ(n[2], 0);
    EXPECT_EQ(n[1], 0);
    EXPECT_EQ(n[3], 4);
  }
  {  // one column: features at rows 0 and 4, pixel 2 -> the earlier row
    const auto n = nearest_of({1, 0, 0, 0, 1}, 5, 1);
    EXPECT_EQ(n[2], 0);
  }
  {  // the four corners of 3x3, centre -> (0, 0)
    const auto n = nearest_of({1, 0, 1, 0, 0, 0, 1, 0, 1}, 3, 3);
    EXPECT_EQ(n[4], 0);
  }
  {  // (0, 2) and (2, 0) are both at distance 2 from (2, 2): the column pass keeps (0, 2) for
     // column 2 and (2, 0) for column 0; the row pass then keeps the earlier column, (2, 0).
    const auto n = nearest_of({0, 0, 1, 0, 0, 0, 1, 0, 0}, 3, 3);
    EXPECT_EQ(n[8], 6);
    // (1, 1): (0, 2) and (2, 0) both at √2; the earlier column wins, (2, 0), although (0, 2)
    // has the smaller row.
    EXPECT_EQ(n[4], 6);
  }
  {  // no feature at all
    const auto n = nearest_of({0, 0, 0, 0}, 2, 2);
    for (int32_t v : n) EXPECT_EQ(v, -1);
  }
}

// The reference's loop, literally: scan every pixel of the padded image per sub-pass.
std::vector<uint8_t> naive_skeleton(const std::vector<uint8_t>& in, int h, int w) {
  const int W = w + 2, H = h + 2;
  std::vector<uint8_t> img(size_t(W) * H, 0);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) img[size_t((y + 1) * W + x + 1)] = in[size_t(y * w + x)] != 0;
  bool removed = true;
  while (removed) {
    removed = false;
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<uint8_t> next = img;
      for (int y = 1; y < H - 1; ++y)
        for (int x = 1; x < W - 1; ++x) {
          if (!img[size_t(y * W + x)]) continue;
          auto at = [&](int dy, int dx) { return int(img[size_t((y + dy) * W + x + dx)]); };
          const int code = at(-1, -1) + 2 * at(-1, 0) + 4 * at(-1, 1) + 8 * at(0, 1) +
                           16 * at(1, 1) + 32 * at(1, 0) + 64 * at(1, -1) + 128 * at(0, -1);
          const int c = skeleton_removal_class(code);
          if (c == 3 || (c == 1 && pass == 0) || (c == 2 && pass == 1)) {
            next[size_t(y * W + x)] = 0;
            removed = true;
          }
        }
      img = next;
    }
  }
  std::vector<uint8_t> out(size_t(h) * w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) out[size_t(y * w + x)] = img[size_t((y + 1) * W + x + 1)];
  return out;
}

std::vector<uint8_t> skeleton_of(const std::vector<uint8_t>& in, int h, int w) {
  std::vector<uint8_t> out(in.size());
  skeletonize(in.data(), h, w, out.data());
  return out;
}

TEST(EvalSkeleton, RemovalTable) {
  EXPECT_EQ(skeleton_removal_class(0), 0);    // isolated pixel stays
  EXPECT_EQ(skeleton_removal_class(255), 0);  // interior pixel stays
  EXPECT_EQ(skeleton_removal_class(8), 0);    // line end stays
  EXPECT_EQ(skeleton_removal_class(136), 0);  // W + E: inside a line, stays
  EXPECT_EQ(skeleton_removal_class(3), 1);    // NW + N
  EXPECT_EQ(skeleton_removal_class(10), 3);   // N + E
  EXPECT_EQ(skeleton_removal_class(24), 2);   // E + SE
  EXPECT_EQ(skeleton_removal_class(48), 0);   // SE + S: the table is not symmetric
  int counts[4] = {};
  for (int c = 0; c < 256; ++c) counts[skeleton_removal_class(c)]++;
  EXPECT_EQ(counts[1] + counts[2] + counts[3], 51);
}

// scikit-image's own documented example (skeletonize docstring): a 9×9 ellipse.
TEST(EvalSkeleton, EllipseFromScikitImageDocs) {
  std::vector<uint8_t> img(81);
  for (int x = 0; x < 9; ++x)
    for (int y = 0; y < 9; ++y)
      img[size_t(x * 9 + y)] = (1.0 / 3 * (x - 4) * (x - 4) + (y - 4) * (y - 4)) < 9;
  const auto s = skeleton_of(img, 9, 9);
  for (int r = 0; r < 9; ++r)
    for (int c = 0; c < 9; ++c)
      EXPECT_EQ(s[size_t(r * 9 + c)], (c == 4 && r >= 3 && r <= 6) ? 1 : 0) << r << "," << c;
}

TEST(EvalSkeleton, SmallHandCheckedCases) {
  {  // a one-pixel-wide line is its own skeleton; so is a single pixel
    std::vector<uint8_t> img(3 * 7, 0);
    for (int x = 1; x < 6; ++x) img[size_t(7 + x)] = 1;
    img[0] = 1;
    EXPECT_EQ(skeleton_of(img, 3, 7), img);
  }
  {  // a 3×3 square: sub-pass 1 removes the right column's middle and the bottom row (classes
     // 1 and 3), sub-pass 2 the top-left, top-right and middle-left; the top-middle and the
     // centre remain, and round two removes nothing.
    std::vector<uint8_t> img(25, 0);
    for (int y = 1; y <= 3; ++y)
      for (int x = 1; x <= 3; ++x) img[size_t(y * 5 + x)] = 1;
    const auto s = skeleton_of(img, 5, 5);
    EXPECT_EQ(s, naive_skeleton(img, 5, 5));
    int n = 0;
    for (uint8_t v : s) n += v;
    EXPECT_GE(n, 1);
    EXPECT_LE(n, 2);
  }
  {  // touching the image border: the reference pads with zeros
    std::vector<uint8_t> img(4 * 6, 1);
    EXPECT_EQ(skeleton_of(img, 4, 6), naive_skeleton(img, 4, 6));
  }
}

TEST(EvalSkeleton, MatchesNaiveScanOnRandomShapes) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 30; ++trial) {
    const int h = 8 + int(rng() % 40), w = 8 + int(rng() % 40);
    cv::Mat m = cv::Mat::zeros(h, w, CV_8U);
    for (int k = 0; k < 4; ++k)
      cv::ellipse(m, cv::Point(int(rng() % w), int(rng() % h)),
                  cv::Size(2 + int(rng() % 12), 2 + int(rng() % 12)), double(rng() % 180), 0, 360,
                  cv::Scalar(1), cv::FILLED);
    for (int k = 0; k < 30; ++k) m.at<uint8_t>(int(rng() % h), int(rng() % w)) ^= 1;  // noise
    std::vector<uint8_t> img(m.begin<uint8_t>(), m.end<uint8_t>());
    ASSERT_EQ(skeleton_of(img, h, w), naive_skeleton(img, h, w)) << "trial " << trial;
  }
}

cv::Mat half_gt(int h, int w) {
  cv::Mat gt = cv::Mat::zeros(h, w, CV_8U);
  gt(cv::Rect(0, 0, w / 2, h)).setTo(255);
  return gt;
}

TEST(EvalMetricEdgeCases, PerfectPrediction) {
  cv::Mat gt = cv::Mat::zeros(40, 60, CV_8U);
  cv::circle(gt, {30, 20}, 12, cv::Scalar(255), cv::FILLED);
  const ImageScores s = score_image(gt, gt);
  EXPECT_NEAR(s.values[kMaxF], 1, 1e-12);
  EXPECT_NEAR(s.values[kAdpF], 1, 1e-12);
  EXPECT_EQ(s.values[kMAE], 0);
  EXPECT_EQ(s.values[kMSE], 0);
  EXPECT_NEAR(s.values[kS], 1, 1e-12);
  EXPECT_NEAR(s.values[kWF], 1, 1e-12);
  EXPECT_EQ(s.values[kHCE], 0);
  EXPECT_EQ(s.values[kMBA], 1);
  EXPECT_NEAR(s.values[kMaxBIoU], 1, 1e-12);
  const double n = 40 * 60;
  EXPECT_NEAR(s.values[kMaxE], n / (n - 1), 1e-12);  // the E-measure can exceed 1
}

TEST(EvalMetricEdgeCases, EmptyGt) {
  const cv::Mat gt = cv::Mat::zeros(20, 30, CV_8U);
  cv::Mat pred(20, 30, CV_8U);
  for (int i = 0; i < 600; ++i) pred.data[i] = uint8_t((i * 37) % 256);
  const ImageScores s = score_image(pred, gt);
  // p is stretched from [min, max] = [0, 255]: mean p = mean(v) / 255.
  double mean_p = 0;
  for (int i = 0; i < 600; ++i) mean_p += pred.data[i] / 255.0;
  mean_p /= 600;
  EXPECT_NEAR(s.values[kS], 1 - mean_p, 1e-12);
  EXPECT_EQ(s.values[kWF], 0);
  EXPECT_EQ(s.values[kMaxF], 0);
  EXPECT_EQ(s.values[kAdpF], 0);
  EXPECT_EQ(s.values[kMaxBIoU], 0);
  EXPECT_TRUE(std::isnan(s.values[kMBA]));
  EXPECT_NEAR(s.values[kMAE], mean_p, 1e-12);
  // E at threshold 0 (index 255): everything predicted foreground, so N - TP - FP = 0.
  EXPECT_EQ(s.e[255], 0);
  EXPECT_NEAR(s.e[0], (600.0 - 3) / (599 + kEps), 1e-12);  // q >= 255: v = 255 occurs 3 times
  // The set MBA is NaN as soon as one image's is.
  SetAccumulator acc;
  acc.add(s);
  acc.add(score_image(half_gt(20, 30), half_gt(20, 30)));
  EXPECT_TRUE(std::isnan(acc.finish().values[kMBA]));
}

TEST(EvalMetricEdgeCases, FullGt) {
  const cv::Mat gt(16, 16, CV_8U, cv::Scalar(255));
  cv::Mat pred(16, 16, CV_8U);
  for (int i = 0; i < 256; ++i) pred.data[i] = uint8_t(i);
  const ImageScores s = score_image(pred, gt);
  EXPECT_NEAR(s.values[kS], 0.5, 1e-12);  // mean of 0/255 .. 255/255
  EXPECT_TRUE(std::isnan(s.values[kMBA]));
  EXPECT_NEAR(s.e[255], 256 / (255 + kEps), 1e-12);  // G = N: E = (TP + FP) / (N - 1 + eps)
}

TEST(EvalMetricEdgeCases, ConstantPrediction) {
  const cv::Mat gt = half_gt(10, 10);
  {  // constant 100: not stretched, p = 100/255; thr = 2p > p, so nothing is foreground
    const ImageScores s = score_image(cv::Mat(10, 10, CV_8U, cv::Scalar(100)), gt);
    EXPECT_NEAR(s.values[kMAE], 0.5 * (1 - 100 / 255.0) + 0.5 * (100 / 255.0), 1e-12);
    EXPECT_EQ(s.values[kAdpF], 0);
  }
  {  // constant 0: thr = 0, so the adaptive binarisation is all foreground: P = 1/2, R = 1
    const ImageScores s = score_image(cv::Mat::zeros(10, 10, CV_8U), gt);
    EXPECT_NEAR(s.values[kAdpF], 1.3 * 0.5 * 1 / (0.3 * 0.5 + 1), 1e-12);
    EXPECT_NEAR(s.values[kMAE], 0.5, 1e-12);
  }
}

TEST(EvalMetricEdgeCases, OnePixelGt) {
  cv::Mat gt = cv::Mat::zeros(12, 12, CV_8U);
  gt.at<uint8_t>(5, 6) = 255;
  cv::Mat pred = cv::Mat::zeros(12, 12, CV_8U);
  pred.at<uint8_t>(5, 6) = 200;
  pred.at<uint8_t>(0, 0) = 30;
  const ImageScores s = score_image(pred, gt);
  EXPECT_EQ(s.values[kS], 0);  // std with ddof = 1 of one value is NaN; max(0, NaN) = 0
  EXPECT_FALSE(std::isnan(s.values[kWF]));
}

TEST(EvalMetricEdgeCases, PredictionIsResizedToGt) {
  cv::Mat gt = cv::Mat::zeros(48, 64, CV_8U);
  cv::rectangle(gt, {10, 8}, {40, 30}, cv::Scalar(255), cv::FILLED);
  cv::Mat small;
  cv::resize(gt, small, {27, 19}, 0, 0, cv::INTER_AREA);
  cv::Mat big;
  cv::resize(small, big, gt.size(), 0, 0, cv::INTER_LINEAR);
  const ImageScores a = score_image(small, gt), b = score_image(big, gt);
  for (int k = 0; k < kNumKeys; ++k) EXPECT_EQ(a.values[size_t(k)], b.values[size_t(k)]) << k;
}

TEST(EvalMetricEdgeCases, GroupSelection) {
  const cv::Mat gt = half_gt(10, 10);
  const ImageScores s = score_image(gt, gt, kGroupS | kGroupHCE);
  EXPECT_FALSE(std::isnan(s.values[kS]));
  EXPECT_FALSE(std::isnan(s.values[kHCE]));
  EXPECT_TRUE(std::isnan(s.values[kMaxF]));
  EXPECT_TRUE(std::isnan(s.values[kWF]));
  EXPECT_THROW(score_image(cv::Mat(), gt), Error);
  EXPECT_THROW(score_image(cv::Mat(10, 10, CV_32F), gt), Error);
}

TEST(EvalMetricEdgeCases, GaussianKernelIsMatlabFspecial) {
  const auto k = gaussian7_sigma5_factor();
  double sum2d = 0, h[7][7], hsum = 0;
  for (int y = 0; y < 7; ++y)
    for (int x = 0; x < 7; ++x) {
      h[y][x] = std::exp(-((x - 3.0) * (x - 3.0) + (y - 3.0) * (y - 3.0)) / 50.0);
      hsum += h[y][x];
    }
  for (int y = 0; y < 7; ++y)
    for (int x = 0; x < 7; ++x) {
      EXPECT_NEAR(k[size_t(y)] * k[size_t(x)], h[y][x] / hsum, 1e-17);
      sum2d += k[size_t(y)] * k[size_t(x)];
    }
  EXPECT_NEAR(sum2d, 1, 1e-15);
}

TEST(EvalMetricList, Parse) {
  EXPECT_EQ(parse_metric_list("all").size(), size_t(kNumKeys));
  const auto f = parse_metric_list("F, hce");
  EXPECT_EQ(f.size(), 4u);
  EXPECT_EQ(groups_of(f), unsigned(kGroupF | kGroupHCE));
  EXPECT_EQ(parse_metric_list("maxF"), std::vector<Key>{kMaxF});
  EXPECT_EQ(parse_metric_list("Sm,mBA").size(), 2u);
  EXPECT_THROW(parse_metric_list("F,bogus"), Error);
  EXPECT_THROW(parse_metric_list(""), Error);
}

}  // namespace
}  // namespace biref::eval
