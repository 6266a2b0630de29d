// DIS / SOD evaluation metrics, equal to the official BiRefNet evaluator (evaluation/metrics.py,
// which shares its definitions with PySODMetrics). The definitions, the order of every
// floating-point step that matters and the edge cases are written out in
// docs/spec/metrics.md; docs/eval.md summarises them for users.
//
// Use:
//   cv::Mat pred = cv::imread(p, cv::IMREAD_GRAYSCALE), gt = cv::imread(g, cv::IMREAD_GRAYSCALE);
//   biref::eval::ImageScores s = biref::eval::score_image(pred, gt);
//   biref::eval::SetAccumulator set;  set.add(s);  ...;  biref::eval::SetScores r = set.finish();
//   r.values[biref::eval::kMaxF] ...
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

namespace biref::eval {

// Groups of metrics that are computed together (one piece of work each); a selection is a bitmask.
enum Group : unsigned {
  kGroupF = 1u << 0,     // maxF, meanF, adpF (+ the precision / recall curves)
  kGroupE = 1u << 1,     // maxE, meanE, adpE
  kGroupS = 1u << 2,     // S
  kGroupWF = 1u << 3,    // wF
  kGroupMAE = 1u << 4,   // MAE
  kGroupMSE = 1u << 5,   // MSE
  kGroupHCE = 1u << 6,   // HCE
  kGroupMBA = 1u << 7,   // MBA
  kGroupBIoU = 1u << 8,  // maxBIoU, meanBIoU
  kAllGroups = (1u << 9) - 1,
};

// The scalar results, in the order (and under the names) of the golden expected.json.
enum Key : int {
  kMaxF,
  kMeanF,
  kAdpF,
  kMaxE,
  kMeanE,
  kAdpE,
  kS,
  kWF,
  kMAE,
  kMSE,
  kHCE,
  kMBA,
  kMaxBIoU,
  kMeanBIoU,
  kNumKeys
};

struct KeyInfo {
  Key key;
  const char* name;        // JSON / CSV name, as in expected.json: "maxF"
  const char* table_name;  // DIS5K table column: "maxFm"
  Group group;
};

// Every key in the official DIS5K table column order (maxFm, wFm, MAE, Sm, meanEm, HCE, maxEm,
// meanFm, adpEm, adpFm, mBA, maxBIoU, meanBIoU), with MSE (not in the official table) last.
const std::vector<KeyInfo>& keys_in_table_order();
const KeyInfo& key_info(Key key);

// Parses "all" or a comma-separated list of group names (F, E, S, wF, MAE, MSE, HCE, MBA, BIoU)
// and / or key names (maxF, adpE, ...), case-insensitive, into the keys to report. Throws
// biref::Error naming an unknown entry.
std::vector<Key> parse_metric_list(const std::string& list);
unsigned groups_of(const std::vector<Key>& keys);

constexpr int kNumThresholds = 256;
// Threshold curves: index k holds the value at threshold t = 255 - k (the reference's order).
using Curve = std::array<double, kNumThresholds>;

struct ImageScores {
  unsigned groups = 0;  // which groups were computed; the other values are NaN
  std::array<double, kNumKeys> values{};
  // Filled for the groups computed (F: precision, recall, f; E: e; BIoU: biou), else zero.
  Curve precision{}, recall{}, f{}, e{}, biou{};
};

// Scores one prediction against its ground truth. Both are 8-bit single-channel; the prediction
// is resized to the GT size (bilinear, as cv2.resize) when the sizes differ. Throws biref::Error
// on an empty or non-8-bit input.
ImageScores score_image(const cv::Mat& pred_u8, const cv::Mat& gt_u8, unsigned groups = kAllGroups);

// The set-level numbers: scalars averaged over the images; curves averaged element-wise first,
// then reduced (maxF = max of the mean F curve, ...).
struct SetScores {
  unsigned groups = 0;
  int64_t count = 0;
  std::array<double, kNumKeys> values{};
  Curve precision{}, recall{}, f{}, e{}, biou{};  // the mean curves
};

// Adds images one at a time (in a fixed order, so the sums and thus the results are reproducible).
class SetAccumulator {
 public:
  explicit SetAccumulator(unsigned groups = kAllGroups);
  void add(const ImageScores& s);
  SetScores finish() const;
  int64_t count() const { return count_; }

 private:
  unsigned groups_;
  int64_t count_ = 0;
  std::array<double, kNumKeys> sums_{};
  Curve precision_{}, recall_{}, f_{}, e_{}, biou_{};
};

// ---- The pieces, exposed for the unit tests and for reuse. ----

// MATLAB fspecial('gaussian', 7, 5) as the reference builds it, as its 1-D factor: the 2-D kernel
// is the outer product of this with itself (it is separable and no entry falls below eps·max).
std::array<double, 7> gaussian7_sigma5_factor();

// Weighted F-measure of the prediction (8-bit values v, H×W row-major, read as p = p_of_value[v])
// against g (nonzero = GT foreground, H×W row-major).
double weighted_f_measure(const uint8_t* pred, const double* p_of_value, const uint8_t* g,
                          int height, int width);

// Human correction effort (HCE) of binary masks (nonzero = foreground) with the GT skeleton.
double human_correction_effort(const cv::Mat& pred_bin, const cv::Mat& gt_bin,
                               const cv::Mat& gt_skeleton);

// Mean boundary accuracy of binary masks (nonzero = foreground); NaN when the GT has no boundary.
double mean_boundary_accuracy(const cv::Mat& pred_bin, const cv::Mat& gt_bin);

}  // namespace biref::eval
