// The metrics of the official BiRefNet evaluator (see metrics.h and docs/spec/metrics.md).
//
// Every per-pixel quantity except wF, HCE, MBA and BIoU depends on a pixel only through its 8-bit
// prediction value v and its GT bit, so F, E, S, MAE and MSE are computed from histograms of v
// (per GT class, and per S-measure quadrant) with value tables p(v), q(v). The formulas are the
// reference's, step for step; only sums are grouped differently (~1e-16 relative).
#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <opencv2/imgproc.hpp>

#include "core/check.h"
#include "eval/distance_transform.h"
#include "eval/skeletonize.h"

namespace biref::eval {

namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();  // numpy's _EPS
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kBetaF = 0.3;  // F-measure β²

const std::vector<KeyInfo>& all_keys() {
  static const std::vector<KeyInfo> keys = {
      {kMaxF, "maxF", "maxFm", kGroupF},
      {kWF, "wF", "wFm", kGroupWF},
      {kMAE, "MAE", "MAE", kGroupMAE},
      {kS, "S", "Sm", kGroupS},
      {kMeanE, "meanE", "meanEm", kGroupE},
      {kHCE, "HCE", "HCE", kGroupHCE},
      {kMaxE, "maxE", "maxEm", kGroupE},
      {kMeanF, "meanF", "meanFm", kGroupF},
      {kAdpE, "adpE", "adpEm", kGroupE},
      {kAdpF, "adpF", "adpFm", kGroupF},
      {kMBA, "MBA", "mBA", kGroupMBA},
      {kMaxBIoU, "maxBIoU", "maxBIoU", kGroupBIoU},
      {kMeanBIoU, "meanBIoU", "meanBIoU", kGroupBIoU},
      {kMSE, "MSE", "MSE", kGroupMSE},
  };
  return keys;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// What the reference keeps of one image, derived from the u8 prediction and the GT.
struct Prepared {
  int height = 0, width = 0;
  int64_t n = 0, n_fg = 0;             // N = H·W, G = |g|
  double p[256];                       // p(v): v/255, min-max stretched unless constant
  int q[256];                          // q(v) = trunc(p(v)·255)
  int64_t hist_fg[256], hist_bg[256];  // counts of v on g and on ¬g
  double mean_p = 0;
};

// Reduces a curve like numpy: max propagates NaN, mean is the plain mean.
double curve_max(const Curve& c) {
  double m = -std::numeric_limits<double>::infinity();
  for (double v : c) {
    if (std::isnan(v)) return kNaN;
    m = std::max(m, v);
  }
  return m;
}

double curve_mean(const Curve& c) {
  double s = 0;
  for (double v : c) s += v;
  return s / kNumThresholds;
}

// Counts per threshold t = 255 - k of values q(v) >= t, from a histogram of v.
void cumulative_from_top(const Prepared& pr, const int64_t* hist, int64_t* out) {
  int64_t by_q[256] = {};
  for (int v = 0; v < 256; ++v) by_q[pr.q[v]] += hist[v];
  int64_t acc = 0;
  for (int k = 0; k < 256; ++k) {
    acc += by_q[255 - k];
    out[k] = acc;
  }
}

double adaptive_threshold(const Prepared& pr) {
  return std::min(2 * pr.mean_p, 1.0);
}

// E-measure sum for one binarisation: tp (on g) and fp (on ¬g) predicted-foreground counts.
double e_measure(int64_t tp, int64_t fp, int64_t n_fg, int64_t n) {
  const int64_t pred_fg = tp + fp, pred_bg = n - pred_fg;
  double sum;
  if (n_fg == 0) {
    sum = double(pred_bg);
  } else if (n_fg == n) {
    sum = double(pred_fg);
  } else {
    const int64_t fn = n_fg - tp, tn = pred_bg - fn;
    const double mean_pred = double(pred_fg) / double(n), mean_gt = double(n_fg) / double(n);
    const double pf = 1 - mean_pred, pb = 0 - mean_pred, gf = 1 - mean_gt, gb = 0 - mean_gt;
    const int64_t counts[4] = {tp, fp, fn, tn};
    const double a[4] = {pf, pf, pb, pb}, b[4] = {gf, gb, gf, gb};
    sum = 0;
    for (int i = 0; i < 4; ++i) {
      const double align = 2 * (a[i] * b[i]) / (a[i] * a[i] + b[i] * b[i] + kEps);
      const double enhanced = (align + 1) * (align + 1) / 4;
      sum += enhanced * double(counts[i]);
    }
  }
  return sum / (double(n) - 1 + kEps);
}

void f_curves(const Prepared& pr, ImageScores& s) {
  int64_t tp[256], fp[256];
  cumulative_from_top(pr, pr.hist_fg, tp);
  cumulative_from_top(pr, pr.hist_bg, fp);
  const double t = double(std::max<int64_t>(pr.n_fg, 1));
  for (int k = 0; k < 256; ++k) {
    int64_t ps = tp[k] + fp[k];
    if (ps == 0) ps = 1;
    const double precision = double(tp[k]) / double(ps), recall = double(tp[k]) / t;
    const double num = (1 + kBetaF) * precision * recall;
    const double den = num == 0 ? 1 : kBetaF * precision + recall;
    s.precision[k] = precision;
    s.recall[k] = recall;
    s.f[k] = num / den;
  }
  s.values[kMaxF] = curve_max(s.f);
  s.values[kMeanF] = curve_mean(s.f);
  // Adaptive: binarise the float p at thr = min(2·mean(p), 1).
  const double thr = adaptive_threshold(pr);
  int64_t inter = 0, positive = 0;
  for (int v = 0; v < 256; ++v)
    if (pr.p[v] >= thr) {
      inter += pr.hist_fg[v];
      positive += pr.hist_fg[v] + pr.hist_bg[v];
    }
  if (inter == 0) {
    s.values[kAdpF] = 0;
  } else {
    const double pre = double(inter) / double(positive), rec = double(inter) / double(pr.n_fg);
    s.values[kAdpF] = (1 + kBetaF) * pre * rec / (kBetaF * pre + rec);
  }
}

void e_curves(const Prepared& pr, ImageScores& s) {
  int64_t tp[256], fp[256];
  cumulative_from_top(pr, pr.hist_fg, tp);
  cumulative_from_top(pr, pr.hist_bg, fp);
  for (int k = 0; k < 256; ++k) s.e[k] = e_measure(tp[k], fp[k], pr.n_fg, pr.n);
  s.values[kMaxE] = curve_max(s.e);
  s.values[kMeanE] = curve_mean(s.e);
  const double thr = adaptive_threshold(pr);
  int64_t tpa = 0, fpa = 0;
  for (int v = 0; v < 256; ++v)
    if (pr.p[v] >= thr) {
      tpa += pr.hist_fg[v];
      fpa += pr.hist_bg[v];
    }
  s.values[kAdpE] = e_measure(tpa, fpa, pr.n_fg, pr.n);
}

// Mean and sample variance (ddof = 1) of the values x(v) weighted by a histogram.
void hist_moments(const int64_t* hist, const double* x, int64_t& n, double& mean, double& ss) {
  n = 0;
  double sum = 0;
  for (int v = 0; v < 256; ++v) {
    n += hist[v];
    sum += double(hist[v]) * x[v];
  }
  mean = sum / double(n);  // NaN on an empty selection, as numpy
  ss = 0;
  for (int v = 0; v < 256; ++v)
    if (hist[v]) ss += double(hist[v]) * (x[v] - mean) * (x[v] - mean);
}

// The region term's SSIM-like score of one quadrant (histograms of v per GT class).
double quadrant_score(const Prepared& pr, const int64_t* hfg, const int64_t* hbg) {
  int64_t n_fg = 0, n_bg = 0;
  double sum = 0;
  for (int v = 0; v < 256; ++v) {
    n_fg += hfg[v];
    n_bg += hbg[v];
    sum += double(hfg[v] + hbg[v]) * pr.p[v];
  }
  const int64_t n = n_fg + n_bg;
  const double x = sum / double(n), y = double(n_fg) / double(n);
  double sxx = 0, sxy = 0;
  for (int v = 0; v < 256; ++v) {
    const int64_t c = hfg[v] + hbg[v];
    if (!c) continue;
    const double dx = pr.p[v] - x;
    sxx += double(c) * dx * dx;
    sxy += double(hfg[v]) * dx * (1 - y) + double(hbg[v]) * dx * (0 - y);
  }
  const double syy = double(n_fg) * (1 - y) * (1 - y) + double(n_bg) * y * y;
  const double dof = double(n - 1);
  const double sigma_x = sxx / dof, sigma_y = syy / dof, sigma_xy = sxy / dof;
  const double alpha = 4 * x * y * sigma_xy;
  const double beta = (x * x + y * y) * (sigma_x + sigma_y);
  if (alpha != 0) return alpha / (beta + kEps);  // NaN stays NaN, as in numpy
  if (beta == 0) return 1;
  return 0;
}

double s_measure(const Prepared& pr, const cv::Mat& pred, const cv::Mat& g) {
  const double mu = double(pr.n_fg) / double(pr.n);
  if (pr.n_fg == 0) return 1 - pr.mean_p;
  if (pr.n_fg == pr.n) return pr.mean_p;
  // Object term: s(p on g) and s(1 - p on ¬g).
  auto s_object = [](double x, double sigma) { return 2 * x / (x * x + 1 + sigma + kEps); };
  int64_t n;
  double mean, ss;
  hist_moments(pr.hist_fg, pr.p, n, mean, ss);
  const double s_fg = s_object(mean, std::sqrt(ss / double(n - 1)));
  double one_minus_p[256];
  for (int v = 0; v < 256; ++v) one_minus_p[v] = 1 - pr.p[v];
  hist_moments(pr.hist_bg, one_minus_p, n, mean, ss);
  const double s_bg = s_object(mean, std::sqrt(ss / double(n - 1)));
  const double object = mu * s_fg + (1 - mu) * s_bg;

  // Region term: split at the GT centroid (rounded half to even, +1).
  const int h = pr.height, w = pr.width;
  int64_t sum_r = 0, sum_c = 0;
  for (int r = 0; r < h; ++r) {
    const uint8_t* gr = g.ptr<uint8_t>(r);
    int64_t row_count = 0;
    for (int c = 0; c < w; ++c)
      if (gr[c]) {
        ++row_count;
        sum_c += c;
      }
    sum_r += row_count * r;
  }
  const int cy = int(std::nearbyint(double(sum_r) / double(pr.n_fg)));
  const int cx = int(std::nearbyint(double(sum_c) / double(pr.n_fg)));
  const int X = cx + 1, Y = cy + 1;
  // Quadrant histograms: 0 = [0,Y)×[0,X), 1 = [0,Y)×[X,W), 2 = [Y,H)×[0,X), 3 = [Y,H)×[X,W).
  std::vector<int64_t> qh(4 * 2 * 256, 0);
  for (int r = 0; r < h; ++r) {
    const uint8_t* pv = pred.ptr<uint8_t>(r);
    const uint8_t* gr = g.ptr<uint8_t>(r);
    const int top = r < Y ? 0 : 2;
    for (int c = 0; c < w; ++c) {
      const int quad = top + (c < X ? 0 : 1);
      qh[size_t((quad * 2 + (gr[c] ? 0 : 1)) * 256 + pv[c])]++;
    }
  }
  const double area = double(pr.n);
  const double w1 = double(int64_t(X) * Y) / area, w2 = double(int64_t(Y) * (w - X)) / area;
  const double w3 = double(int64_t(h - Y) * X) / area, w4 = 1 - w1 - w2 - w3;
  const double weights[4] = {w1, w2, w3, w4};
  double region = 0;
  for (int quad = 0; quad < 4; ++quad)
    region += weights[quad] *
              quadrant_score(pr, &qh[size_t(quad * 2 * 256)], &qh[size_t((quad * 2 + 1) * 256)]);
  const double sm = 0.5 * object + 0.5 * region;
  return sm > 0 ? sm : 0;  // Python's max(0, sm): NaN and negatives give 0
}

void biou_curves(const Prepared& pr, const cv::Mat& pred, const cv::Mat& g, ImageScores& s) {
  const int h = pr.height, w = pr.width;
  const int d = std::max(1, int(std::nearbyint(0.02 * std::sqrt(double(h) * h + double(w) * w))));
  // boundary(m) = m - erode(zero-pad(m), 3×3, d times), cropped.
  auto boundary = [&](const cv::Mat& m) {
    cv::Mat padded, eroded, out;
    cv::copyMakeBorder(m, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, cv::Scalar(0));
    cv::erode(padded, eroded, cv::Mat::ones(3, 3, CV_8U), cv::Point(-1, -1), d);
    cv::subtract(m, eroded(cv::Rect(1, 1, w, h)), out);
    return out;
  };
  uint8_t qlut[256];
  for (int v = 0; v < 256; ++v) qlut[v] = uint8_t(pr.q[v]);
  cv::Mat q;
  cv::LUT(pred, cv::Mat(1, 256, CV_8U, qlut), q);
  const cv::Mat b = boundary(q);
  cv::Mat g255 = g * 255;
  const cv::Mat gb = boundary(g255);
  int64_t hist_fg[256] = {}, hist_bg[256] = {};
  for (int r = 0; r < h; ++r) {
    const uint8_t* br = b.ptr<uint8_t>(r);
    const uint8_t* gr = gb.ptr<uint8_t>(r);
    for (int c = 0; c < w; ++c) (gr[c] > 128 ? hist_fg : hist_bg)[br[c]]++;
  }
  int64_t n_fg = 0;
  for (int v = 0; v < 256; ++v) n_fg += hist_fg[v];
  const double t = double(std::max<int64_t>(n_fg, 1));
  int64_t tp = 0, fp = 0;
  for (int k = 0; k < 256; ++k) {
    tp += hist_fg[255 - k];
    fp += hist_bg[255 - k];
    s.biou[k] = double(tp) / (t + double(fp));
  }
  s.values[kMaxBIoU] = curve_max(s.biou);
  s.values[kMeanBIoU] = curve_mean(s.biou);
}

}  // namespace

const std::vector<KeyInfo>& keys_in_table_order() {
  return all_keys();
}

const KeyInfo& key_info(Key key) {
  for (const auto& k : all_keys())
    if (k.key == key) return k;
  fail("unknown metric key ", int(key));
}

std::vector<Key> parse_metric_list(const std::string& list) {
  static const std::pair<const char*, Group> groups[] = {
      {"f", kGroupF},     {"e", kGroupE},     {"s", kGroupS},
      {"wf", kGroupWF},   {"mae", kGroupMAE}, {"mse", kGroupMSE},
      {"hce", kGroupHCE}, {"mba", kGroupMBA}, {"biou", kGroupBIoU}};
  std::vector<bool> want(kNumKeys, false);
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    const std::string l = lower(item);
    start = end + 1;
    if (l.empty()) continue;
    bool found = false;
    if (l == "all") {
      want.assign(kNumKeys, true);
      found = true;
    }
    for (const auto& [name, group] : groups)
      if (l == name) {
        for (const auto& k : all_keys())
          if (k.group == group) want[k.key] = true;
        found = true;
      }
    for (const auto& k : all_keys())
      if (l == lower(k.name) || l == lower(k.table_name)) {
        want[k.key] = true;
        found = true;
      }
    BIREF_CHECK(found, "unknown metric '", item,
                "' (use all, or F E S wF MAE MSE HCE MBA BIoU, or a key such as maxF)");
  }
  std::vector<Key> keys;
  for (const auto& k : all_keys())
    if (want[k.key]) keys.push_back(k.key);
  BIREF_CHECK(!keys.empty(), "no metric selected in '", list, "'");
  return keys;
}

unsigned groups_of(const std::vector<Key>& keys) {
  unsigned g = 0;
  for (Key k : keys) g |= key_info(k).group;
  return g;
}

std::array<double, 7> gaussian7_sigma5_factor() {
  // h(x, y) = exp(-(x² + y²) / (2σ²)) = e(x)·e(y) with e(x) = exp(-x²/50); normalised by the sum.
  std::array<double, 7> k;
  double sum = 0;
  for (int i = 0; i < 7; ++i) {
    const double x = i - 3;
    k[size_t(i)] = std::exp(-(x * x) / 50.0);
    sum += k[size_t(i)];
  }
  for (double& v : k) v /= sum;
  return k;
}

namespace {

// 2 - exp(ln(0.5)/5 · sqrt(d²)) for the integer squared distances d² < 2^20 (distances up to
// 1024 px), computed once with the very expression of the reference; larger ones are computed
// per pixel. Saves one exp per background pixel.
constexpr int64_t kWeightTableSize = int64_t(1) << 20;

double background_weight_direct(int64_t d2) {
  static const double decay = std::log(0.5) / 5;
  return 2 - std::exp(decay * std::sqrt(double(d2)));
}

const std::vector<double>& background_weight_table() {
  static const std::vector<double> table = [] {
    std::vector<double> t(static_cast<size_t>(kWeightTableSize));
    for (int64_t d2 = 0; d2 < kWeightTableSize; ++d2) t[size_t(d2)] = background_weight_direct(d2);
    return t;
  }();
  return table;
}

}  // namespace

double weighted_f_measure(const uint8_t* pred, const double* p_of_value, const uint8_t* g,
                          int height, int width) {
  BIREF_CHECK(height > 0 && width > 0, "wF of an empty image (", width, "x", height, ")");
  BIREF_CHECK(pred && p_of_value && g, "wF without prediction, value table or GT");
  for (int v = 0; v < 256; ++v)
    BIREF_CHECK(std::isfinite(p_of_value[v]), "wF: the prediction value of ", v, " is ",
                p_of_value[v], " (not a finite number)");
  const int64_t n = int64_t(height) * width;
  int64_t n_fg = 0;
  for (int64_t i = 0; i < n; ++i) n_fg += g[i] ? 1 : 0;
  if (n_fg == 0) return 0;
  // Per-thread scratch, reused from image to image (fresh pages for every megapixel image cost
  // more than the arithmetic): 8 bytes per pixel plus a few rows.
  thread_local std::vector<int32_t> nearest, dist2;
  thread_local std::vector<double> et_row, ring, ea_row;
  nearest.resize(size_t(n));
  dist2.resize(size_t(n));
  et_row.resize(size_t(width));
  ring.resize(size_t(7) * width);
  ea_row.resize(size_t(width));
  // Nearest GT-foreground pixel of every pixel (scipy's EDT of ¬g with indices).
  nearest_feature(g, height, width, nearest.data(), dist2.data());
  // E = |p - g| (1 - p on the GT, p elsewhere: the same bits); Et = E on the GT, E of the
  // nearest GT pixel elsewhere.
  auto err = [&](int64_t i) {
    const double p = p_of_value[pred[i]];
    return g[i] ? 1 - p : p;
  };
  // EA = K * Et, 7×7 with zero padding, as two 1-D passes (K is the outer product of k): the
  // horizontal pass of row r goes to ring[r % 7] just before the vertical pass needs it.
  const auto k = gaussian7_sigma5_factor();
  auto horizontal = [&](int r) {
    const int64_t row = int64_t(r) * width;
    double* src = et_row.data();
    for (int x = 0; x < width; ++x) {
      const int64_t i = row + x;
      src[x] = err(g[i] ? i : int64_t(nearest[size_t(i)]));
    }
    double* dst = ring.data() + int64_t(r % 7) * width;
    for (int x = 0; x < width; ++x) {
      if (x >= 3 && x + 3 < width) {
        dst[x] = k[0] * src[x - 3] + k[1] * src[x - 2] + k[2] * src[x - 1] + k[3] * src[x] +
                 k[4] * src[x + 1] + k[5] * src[x + 2] + k[6] * src[x + 3];
        continue;
      }
      double acc = 0;
      for (int j = -3; j <= 3; ++j) {
        const int xx = x + j;
        if (xx >= 0 && xx < width) acc += k[size_t(j + 3)] * src[xx];
      }
      dst[x] = acc;
    }
  };
  const std::vector<double>& weight = background_weight_table();
  double sum_fg = 0, sum_bg = 0;
  double* ea = ea_row.data();
  int done = 0;  // rows [0, done) have their horizontal pass in the ring
  for (int y = 0; y < height; ++y) {
    for (; done < height && done <= y + 3; ++done) horizontal(done);
    for (int x = 0; x < width; ++x) ea[x] = 0;
    for (int j = -3; j <= 3; ++j) {
      const int yy = y + j;
      if (yy < 0 || yy >= height) continue;
      const double kj = k[size_t(j + 3)];
      const double* src = ring.data() + int64_t(yy % 7) * width;
      for (int x = 0; x < width; ++x) ea[x] += kj * src[x];
    }
    // M = EA where (g and EA < E), else E; Bw = 1 on the GT, 2 - exp(ln(0.5)/5 · Dst) elsewhere.
    const int64_t row = int64_t(y) * width;
    for (int x = 0; x < width; ++x) {
      const int64_t i = row + x;
      const double ei = err(i);
      if (g[i]) {
        sum_fg += ea[x] < ei ? ea[x] : ei;
      } else {
        const int64_t d2 = dist2[size_t(i)];
        sum_bg += ei * (d2 < kWeightTableSize ? weight[size_t(d2)] : background_weight_direct(d2));
      }
    }
  }
  const double tpw = double(n_fg) - sum_fg, fpw = sum_bg;
  const double r = 1 - sum_fg / double(n_fg);
  const double prec = tpw / (tpw + fpw + kEps);
  return 2 * r * prec / (r + prec + kEps);
}

ImageScores score_image(const cv::Mat& pred_in, const cv::Mat& gt, unsigned groups) {
  BIREF_CHECK(!gt.empty(), "empty GT image");
  BIREF_CHECK(!pred_in.empty(), "empty prediction image");
  // A float prediction (which could hold NaN) is refused rather than guessed at: read or convert
  // it to 8 bits as the reference does.
  BIREF_CHECK(gt.type() == CV_8UC1, "the GT must be 8-bit single-channel (got ",
              cv::typeToString(gt.type()), ")");
  BIREF_CHECK(pred_in.type() == CV_8UC1, "the prediction must be 8-bit single-channel (got ",
              cv::typeToString(pred_in.type()), ")");
  BIREF_CHECK(gt.dims == 2 && pred_in.dims == 2, "prediction and GT must be 2-D images");
  BIREF_CHECK((groups & ~unsigned(kAllGroups)) == 0, "unknown metric groups 0x", std::hex, groups);
  // Squared distances are kept in 32 bits.
  BIREF_CHECK(gt.rows < 32768 && gt.cols < 32768, "GT of ", gt.cols, "x", gt.rows,
              " is too large (at most 32767 pixels a side)");
  cv::Mat pred = pred_in.isContinuous() ? pred_in : pred_in.clone();
  if (pred.size() != gt.size()) cv::resize(pred_in, pred, gt.size(), 0, 0, cv::INTER_LINEAR);

  ImageScores s;
  s.groups = groups;
  s.values.fill(kNaN);
  Prepared pr;
  pr.height = gt.rows;
  pr.width = gt.cols;
  pr.n = int64_t(gt.rows) * gt.cols;
  std::fill(std::begin(pr.hist_fg), std::end(pr.hist_fg), 0);
  std::fill(std::begin(pr.hist_bg), std::end(pr.hist_bg), 0);
  cv::Mat g(gt.size(), CV_8U);  // 0/1
  for (int r = 0; r < gt.rows; ++r) {
    const uint8_t* gr = gt.ptr<uint8_t>(r);
    const uint8_t* pv = pred.ptr<uint8_t>(r);
    uint8_t* go = g.ptr<uint8_t>(r);
    for (int c = 0; c < gt.cols; ++c) {
      const bool fg = gr[c] > 128;
      go[c] = fg;
      (fg ? pr.hist_fg : pr.hist_bg)[pv[c]]++;
    }
  }
  int vmin = 255, vmax = 0;
  for (int v = 0; v < 256; ++v) {
    pr.n_fg += pr.hist_fg[v];
    if (pr.hist_fg[v] + pr.hist_bg[v]) {
      vmin = std::min(vmin, v);
      vmax = std::max(vmax, v);
    }
  }
  // p = v/255, stretched to [0, 1] unless constant; q = trunc(p·255), in the reference's order.
  // Values outside [vmin, vmax] do not occur in this image: their entries (which the stretch
  // would put below 0 or above 1, and q outside the 256 thresholds) are clamped, and count 0.
  const double lo = vmin / 255.0, hi = vmax / 255.0;
  double sum_p = 0;
  for (int v = 0; v < 256; ++v) {
    double p = v / 255.0;
    if (vmax != vmin) p = v < vmin ? 0.0 : v > vmax ? 1.0 : (p - lo) / (hi - lo);
    pr.p[v] = p;
    pr.q[v] = int(p * 255);
    sum_p += double(pr.hist_fg[v] + pr.hist_bg[v]) * p;
  }
  pr.mean_p = sum_p / double(pr.n);

  if (groups & kGroupF) f_curves(pr, s);
  if (groups & kGroupE) e_curves(pr, s);
  if (groups & kGroupS) s.values[kS] = s_measure(pr, pred, g);
  if (groups & (kGroupMAE | kGroupMSE)) {
    double mae = 0, mse = 0;
    for (int v = 0; v < 256; ++v) {
      const double d1 = 1 - pr.p[v], d0 = pr.p[v];
      mae += double(pr.hist_fg[v]) * std::fabs(d1) + double(pr.hist_bg[v]) * std::fabs(d0);
      mse += double(pr.hist_fg[v]) * d1 * d1 + double(pr.hist_bg[v]) * d0 * d0;
    }
    if (groups & kGroupMAE) s.values[kMAE] = mae / double(pr.n);
    if (groups & kGroupMSE) s.values[kMSE] = mse / double(pr.n);
  }
  if (groups & kGroupWF)
    s.values[kWF] =
        weighted_f_measure(pred.ptr<uint8_t>(), pr.p, g.ptr<uint8_t>(), gt.rows, gt.cols);
  if (groups & (kGroupHCE | kGroupMBA)) {
    cv::Mat pred_bin;
    cv::compare(pred, 128, pred_bin, cv::CMP_GT);
    if (groups & kGroupHCE) {
      cv::Mat ske(gt.size(), CV_8U);
      skeletonize(g.ptr<uint8_t>(), gt.rows, gt.cols, ske.ptr<uint8_t>());
      s.values[kHCE] = human_correction_effort(pred_bin, g, ske);
    }
    if (groups & kGroupMBA) s.values[kMBA] = mean_boundary_accuracy(pred_bin, g);
  }
  if (groups & kGroupBIoU) biou_curves(pr, pred, g, s);
  return s;
}

SetAccumulator::SetAccumulator(unsigned groups) : groups_(groups) {}

void SetAccumulator::add(const ImageScores& s) {
  // Scores without some of the set's groups would add NaN (or zero curves) into its sums.
  BIREF_CHECK((s.groups & groups_) == groups_, "cannot add image scores of metric groups 0x",
              std::hex, s.groups, " to a set of groups 0x", groups_);
  ++count_;
  for (int k = 0; k < kNumKeys; ++k) sums_[size_t(k)] += s.values[size_t(k)];
  for (int i = 0; i < kNumThresholds; ++i) {
    precision_[size_t(i)] += s.precision[size_t(i)];
    recall_[size_t(i)] += s.recall[size_t(i)];
    f_[size_t(i)] += s.f[size_t(i)];
    e_[size_t(i)] += s.e[size_t(i)];
    biou_[size_t(i)] += s.biou[size_t(i)];
  }
}

SetScores SetAccumulator::finish() const {
  SetScores r;
  r.groups = groups_;
  r.count = count_;
  r.values.fill(kNaN);
  if (count_ == 0) return r;
  const double n = double(count_);
  for (int i = 0; i < kNumThresholds; ++i) {
    r.precision[size_t(i)] = precision_[size_t(i)] / n;
    r.recall[size_t(i)] = recall_[size_t(i)] / n;
    r.f[size_t(i)] = f_[size_t(i)] / n;
    r.e[size_t(i)] = e_[size_t(i)] / n;
    r.biou[size_t(i)] = biou_[size_t(i)] / n;
  }
  // Per-image scalars are averaged; the curve metrics are reduced from the mean curves.
  for (Key k : {kAdpF, kAdpE, kS, kWF, kMAE, kMSE, kHCE, kMBA})
    if (groups_ & key_info(k).group) r.values[k] = sums_[k] / n;
  if (groups_ & kGroupF) {
    r.values[kMaxF] = curve_max(r.f);
    r.values[kMeanF] = curve_mean(r.f);
  }
  if (groups_ & kGroupE) {
    r.values[kMaxE] = curve_max(r.e);
    r.values[kMeanE] = curve_mean(r.e);
  }
  if (groups_ & kGroupBIoU) {
    r.values[kMaxBIoU] = curve_max(r.biou);
    r.values[kMeanBIoU] = curve_mean(r.biou);
  }
  return r;
}

}  // namespace biref::eval
