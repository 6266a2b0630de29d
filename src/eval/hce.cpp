// Human correction effort (HCE), as the official evaluator's HCEMeasure.cal_hce, and mean
// boundary accuracy (MBA). Both work on binary masks and use OpenCV exactly where the reference
// does, so morphology borders, contour order and polygon simplification match it bit for bit.
#include <cstdlib>
#include <initializer_list>
#include <opencv2/imgproc.hpp>
#include <utility>
#include <vector>

#include "core/check.h"
#include "eval/metrics.h"

namespace biref::eval {

namespace {

cv::Mat cross3() {
  return cv::getStructuringElement(cv::MORPH_CROSS, cv::Size(3, 3));
}

// The masks of one image: non-empty, 8-bit single-channel, all of the same size.
void check_masks(const char* what,
                 std::initializer_list<std::pair<const char*, const cv::Mat*>> masks) {
  const cv::Mat& first = *masks.begin()->second;
  for (const auto& [name, m] : masks) {
    BIREF_CHECK(!m->empty(), what, ": the ", name, " mask is empty");
    BIREF_CHECK(m->type() == CV_8UC1, what, ": the ", name, " mask must be 8-bit single-channel (",
                "got ", cv::typeToString(m->type()), ")");
    BIREF_CHECK(m->size() == first.size(), what, ": the ", name, " mask is ", m->cols, "x", m->rows,
                " but the ", masks.begin()->first, " mask is ", first.cols, "x", first.rows);
  }
}

// 0/1 masks as CV_8U.
cv::Mat as01(const cv::Mat& m) {
  cv::Mat r;
  cv::compare(m, 0, r, cv::CMP_NE);  // 0 / 255
  return r / 255;
}

// filter_bdy_cond + approximate_RDP of the reference: splits the contours of `mask` into the
// boundary segments that need correction (where the dilated `cond` holds and the pixel was not
// walked before), counts the polygon vertices of those segments, and adds the connected regions
// (8-connected) that have no such segment at all ("independent" regions).
double correction_points(const cv::Mat& mask, const cv::Mat& cond_in) {
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask, contours, cv::RETR_TREE, cv::CHAIN_APPROX_NONE);
  cv::Mat cond;
  cv::dilate(cond_in, cond, cross3());
  cv::Mat labels;
  const int n_labels = cv::connectedComponents(mask, labels, 8, CV_32S);  // including background
  // The reference keeps one flag per value of np.unique(labels) and clears index 0, assuming it
  // is the background: with no background pixel the one region's flag is cleared instead.
  const bool has_background = cv::countNonZero(mask) < int64_t(mask.total());
  std::vector<uint8_t> indep(static_cast<size_t>(n_labels), 1);
  indep[0] = 0;
  if (!has_background && n_labels > 1) indep[1] = 0;

  cv::Mat visited = cv::Mat::zeros(mask.size(), CV_8U);
  double vertices = 0;
  std::vector<std::vector<cv::Point>> segments;
  std::vector<cv::Point> approx;
  for (const auto& contour : contours) {
    segments.clear();
    std::vector<cv::Point> current;
    for (const cv::Point& pt : contour) {
      uint8_t& seen = visited.at<uint8_t>(pt.y, pt.x);
      if (cond.at<uint8_t>(pt.y, pt.x) == 0 || seen != 0) {
        if (!current.empty()) segments.push_back(std::move(current));
        current.clear();
        continue;
      }
      current.push_back(pt);
      seen = 1;
      indep[size_t(labels.at<int32_t>(pt.y, pt.x))] = 0;
    }
    if (!current.empty()) segments.push_back(std::move(current));
    // A boundary cut at the contour's start point: join its two ends into one segment.
    if (segments.size() > 1) {
      const cv::Point first = segments.front().front(), last = segments.back().back();
      const int dx = std::abs(first.x - last.x), dy = std::abs(first.y - last.y);
      if (std::max(dx, dy) == 1) {
        auto& tail = segments.back();
        tail.insert(tail.end(), segments.front().rbegin(), segments.front().rend());
        segments.erase(segments.begin());
      }
    }
    for (const auto& seg : segments) {
      cv::approxPolyDP(seg, approx, 2.0, false);
      vertices += double(approx.size());
    }
  }
  double independent = 0;
  for (uint8_t v : indep) independent += v;
  return vertices + independent;
}

}  // namespace

double human_correction_effort(const cv::Mat& pred_bin, const cv::Mat& gt_bin,
                               const cv::Mat& gt_skeleton) {
  check_masks("HCE", {{"GT", &gt_bin}, {"prediction", &pred_bin}, {"GT skeleton", &gt_skeleton}});
  constexpr int kRelax = 5;
  const cv::Mat gt = as01(gt_bin), pr = as01(pred_bin), ske = as01(gt_skeleton);
  const cv::Mat not_gt = 1 - gt, not_pr = 1 - pr;
  const cv::Mat tp = gt & pr, fp = pr & not_gt, fn = gt & not_pr, uni = gt | pr;
  cv::Mat uni_erode;
  // OpenCV's default border for erosion never erodes in from the image edge, as in the reference.
  cv::erode(uni, uni_erode, cross3(), cv::Point(-1, -1), kRelax);

  // Relaxed FP: FP pixels that are not within `relax` pixels of the union's boundary, grown back
  // inside the FP region.
  cv::Mat fp_ = fp & uni_erode;
  for (int i = 0; i < kRelax; ++i) {
    cv::dilate(fp_, fp_, cross3());
    fp_ &= not_gt;
  }
  fp_ &= fp;

  cv::Mat fn_ = fn & uni_erode;
  for (int i = 0; i < kRelax; ++i) {
    cv::dilate(fn_, fn_, cross3());
    fn_ &= not_pr;
  }
  fn_ &= fn;
  // Keep the thin structures: skeleton pixels that the prediction missed.
  fn_ |= ske & (1 - tp);

  const double fp_points = correction_points(fp_, tp | fn_);
  const cv::Mat fn_cond = 1 - (tp | fp_ | fn_);
  const double fn_points = correction_points(fn_, fn_cond);
  return fp_points + fn_points;
}

double mean_boundary_accuracy(const cv::Mat& pred_bin, const cv::Mat& gt_bin) {
  check_masks("MBA", {{"GT", &gt_bin}, {"prediction", &pred_bin}});
  const cv::Mat gt = as01(gt_bin), pr = as01(pred_bin);
  cv::Mat same;
  cv::compare(gt, pr, same, cv::CMP_EQ);
  const int h = gt.rows, w = gt.cols;
  constexpr int kSteps = 5;
  const double min_radius = 1, max_radius = double(w + h) / 300.0;
  double sum = 0;
  cv::Mat band, hit;
  for (int i = 0; i < kSteps; ++i) {
    // Python's int() truncates towards zero (the step is negative for images under 300 px).
    const int r = int(min_radius) + int((max_radius - min_radius) / kSteps * i);
    const cv::Mat kernel =
        cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(2 * r + 1, 2 * r + 1));
    cv::morphologyEx(gt, band, cv::MORPH_GRADIENT, kernel);
    const double n_band = cv::countNonZero(band);
    cv::bitwise_and(band, same, hit);
    const double n_hit = cv::countNonZero(hit);
    sum += n_hit / n_band;  // 0/0 = NaN, as numpy
  }
  return sum / kSteps;
}

}  // namespace biref::eval
