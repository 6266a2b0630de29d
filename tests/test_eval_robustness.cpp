// Failure paths of the evaluation: outputs are complete or absent (report, PNG, SVG written
// together, write errors reported), worker failures are joined and reported instead of
// terminating the process, and the library entry points refuse bad inputs with biref::Error.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "biref/error.h"
#include "eval/dataset.h"
#include "eval/distance_transform.h"
#include "eval/metrics.h"
#include "eval/output.h"
#include "eval/plot.h"
#include "eval/skeletonize.h"
#include "test_util.h"

namespace biref::eval {
namespace {

namespace fs = std::filesystem;

std::string golden_dir() {
  return biref::test::data_path("metrics/set-seed1");
}

fs::path fresh_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("biref_evalrob_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// The names in a folder (hidden temporary files included).
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no biref::Error)";
}

std::vector<Pair> golden_pairs() {
  return pair_folders(golden_dir() + "/pred", golden_dir() + "/gt").pairs;
}

PlotSeries flat_series(const std::string& label) {
  PlotSeries s;
  s.label = label;
  s.precision.fill(0.5);
  s.recall.fill(0.5);
  s.f.fill(0.5);
  return s;
}

// ---- OutputFiles / write_bytes ----

TEST(EvalOutputs, WriteBytesReportsDiskFull) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string what =
      error_of([] { write_bytes("/dev/full", std::string(100000, 'x'), "report.json"); });
  EXPECT_NE(what.find("report.json"), std::string::npos) << what;
  EXPECT_NE(what.find("No space left"), std::string::npos) << what;
}

TEST(EvalOutputs, NothingAppearsBeforeCommit) {
  const fs::path dir = fresh_dir("commit");
  const std::string a = (dir / "a.txt").string(), b = (dir / "b.txt").string();
  {
    OutputFiles out;
    out.add(a);
    out.add(b);
    out.write(a, "first");
    EXPECT_TRUE(listing(dir).size() == 1u);  // the temporary file of a only
    EXPECT_FALSE(fs::exists(a));
    // b was never written: commit refuses before renaming anything.
    EXPECT_THROW(out.commit(), Error);
    EXPECT_FALSE(fs::exists(a));
  }
  EXPECT_TRUE(listing(dir).empty());  // temporary files removed
  {
    OutputFiles out;
    out.add(a);
    out.add(b);
    out.write(a, "first");
    out.write(b, "");
    out.commit();
  }
  EXPECT_EQ(slurp(a), "first");
  EXPECT_EQ(slurp(b), "");
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"a.txt", "b.txt"}));
  fs::remove_all(dir);
}

TEST(EvalOutputs, BadTargetsFailWhenDeclared) {
  const fs::path dir = fresh_dir("targets");
  OutputFiles out;
  EXPECT_NE(error_of([&] { out.add((dir / "missing/r.json").string()); }).find("does not exist"),
            std::string::npos);
  fs::create_directories(dir / "sub");
  EXPECT_NE(error_of([&] { out.add((dir / "sub").string()); }).find("is a folder"),
            std::string::npos);
  out.add((dir / "r.json").string());
  EXPECT_NE(error_of([&] { out.add((dir / "." / "r.json").string()); }).find("same file"),
            std::string::npos);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"sub"});
  fs::remove_all(dir);
}

// ---- Plots ----

TEST(EvalPlotOutputs, FailingSvgLeavesNoPng) {
  const fs::path dir = fresh_dir("plotfail");
  fs::create_directories(dir / "curves.svg");  // the SVG cannot be written
  const std::vector<PlotRow> rows = {{"set", {flat_series("m")}}};
  EXPECT_THROW(
      write_curve_plots(rows, (dir / "curves.png").string(), (dir / "curves.svg").string()), Error);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"curves.svg"});
  write_curve_plots(rows, (dir / "ok.png").string(), (dir / "ok.svg").string());
  EXPECT_GT(fs::file_size(dir / "ok.png"), 1000u);
  EXPECT_NE(slurp(dir / "ok.svg").find("</svg>"), std::string::npos);
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"curves.svg", "ok.png", "ok.svg"}));
  fs::remove_all(dir);
}

TEST(EvalPlotOutputs, NonFiniteCurveIsAnError) {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), 1e308 * 10}) {
    PlotSeries s = flat_series("BiRefNet");
    s.recall[17] = bad;
    const std::string what = error_of([&] { render_curve_plots({{"DIS-VD", {s}}}); });
    EXPECT_NE(what.find("'BiRefNet'"), std::string::npos) << what;
    EXPECT_NE(what.find("'DIS-VD'"), std::string::npos) << what;
  }
  // Large but finite values are clipped, not undefined.
  PlotSeries s = flat_series("far");
  s.f.fill(1e300);
  EXPECT_FALSE(render_curve_plots({{"x", {s}}}).png.empty());
}

// ---- evaluate_pairs ----

TEST(EvalDatasetFailures, ThrowingProgressIsJoinedAndReported) {
  const std::vector<Pair> pairs = golden_pairs();
  ASSERT_GE(pairs.size(), 8u);
  const int cv_threads = cv::getNumThreads();
  for (int threads : {1, 4}) {
    RunOptions ro;
    ro.groups = kGroupMAE;
    ro.threads = threads;
    ro.progress = [](size_t done, size_t) {
      if (done == 3) throw std::runtime_error("progress broke");
    };
    const std::string what = error_of([&] { evaluate_pairs(pairs, ro); });
    EXPECT_NE(what.find("progress broke"), std::string::npos) << what;
    EXPECT_NE(what.find(golden_dir() + "/pred/"), std::string::npos) << what;  // names the file
    EXPECT_EQ(cv::getNumThreads(), cv_threads) << "OpenCV's thread count not restored";
  }
  // A non-standard exception is reported too.
  RunOptions ro;
  ro.groups = kGroupMAE;
  ro.threads = 3;
  ro.progress = [](size_t done, size_t) {
    if (done == 5) throw 42;
  };
  EXPECT_NE(error_of([&] { evaluate_pairs(pairs, ro); }).find("unknown exception"),
            std::string::npos);
  EXPECT_EQ(cv::getNumThreads(), cv_threads);
  // And the same pairs then score normally.
  ro.progress = nullptr;
  EXPECT_EQ(evaluate_pairs(pairs, ro).set.count, int64_t(pairs.size()));
}

TEST(EvalDatasetFailures, PairThatThrowsInAWorkerIsSkipped) {
  const fs::path dir = fresh_dir("toolarge");
  fs::create_directories(dir / "gt");
  fs::create_directories(dir / "pred");
  // 32768 px wide: score_image refuses it (the distance transform keeps 32-bit distances).
  const cv::Mat wide(1, 32768, CV_8U, cv::Scalar(255));
  ASSERT_TRUE(cv::imwrite((dir / "gt/big.png").string(), wide));
  ASSERT_TRUE(cv::imwrite((dir / "pred/big.png").string(), wide));
  for (const char* n : {"000", "001", "002"}) {
    fs::copy_file(golden_dir() + "/gt/" + n + ".png", dir / "gt" / (std::string(n) + ".png"));
    fs::copy_file(golden_dir() + "/pred/" + n + ".png", dir / "pred" / (std::string(n) + ".png"));
  }
  const Pairing pairing = pair_folders((dir / "pred").string(), (dir / "gt").string());
  ASSERT_EQ(pairing.pairs.size(), 4u);
  RunOptions ro;
  ro.groups = kGroupMAE | kGroupS;
  ro.threads = 2;
  ro.keep_images = true;
  const DatasetResult r = evaluate_pairs(pairing.pairs, ro);
  EXPECT_EQ(r.set.count, 3);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].file.find("big.png"), std::string::npos);
  EXPECT_NE(r.problems[0].message.find("too large"), std::string::npos) << r.problems[0].message;
  fs::remove_all(dir);
}

// ---- Library entry points ----

TEST(EvalMetricInputs, MismatchedEmptyOrNonFiniteInputsAreErrors) {
  const cv::Mat a = cv::Mat::zeros(20, 30, CV_8U), b = cv::Mat::zeros(21, 30, CV_8U);
  EXPECT_NE(error_of([&] { mean_boundary_accuracy(a, b); }).find("30x21"), std::string::npos);
  EXPECT_THROW(human_correction_effort(a, a, b), Error);
  EXPECT_THROW(human_correction_effort(a, cv::Mat(), a), Error);
  EXPECT_THROW(mean_boundary_accuracy(cv::Mat(20, 30, CV_32F, cv::Scalar(0)), a), Error);

  EXPECT_NE(error_of([&] { score_image(a, cv::Mat()); }).find("empty GT"), std::string::npos);
  EXPECT_NE(error_of([&] { score_image(cv::Mat(), a); }).find("empty prediction"),
            std::string::npos);
  const cv::Mat nan_pred(20, 30, CV_32F, cv::Scalar(std::numeric_limits<double>::quiet_NaN()));
  EXPECT_NE(error_of([&] { score_image(nan_pred, a); }).find("8-bit"), std::string::npos);
  EXPECT_THROW(score_image(cv::Mat(20, 30, CV_8UC3, cv::Scalar(0)), a), Error);
  EXPECT_THROW(score_image(a, a, 1u << 20), Error);
  // A prediction of another size is resized to the GT, as the reference does.
  EXPECT_EQ(score_image(b, a, kGroupMAE).values[kMAE], 0);

  double table[256];
  for (int v = 0; v < 256; ++v) table[v] = v / 255.0;
  table[7] = std::numeric_limits<double>::quiet_NaN();
  std::vector<uint8_t> img(600, 0);
  EXPECT_NE(error_of([&] {
              weighted_f_measure(img.data(), table, img.data(), 20, 30);
            }).find("not a finite number"),
            std::string::npos);
  table[7] = 7 / 255.0;
  EXPECT_THROW(weighted_f_measure(img.data(), table, img.data(), 0, 30), Error);
  EXPECT_THROW(weighted_f_measure(nullptr, table, img.data(), 20, 30), Error);

  std::vector<int32_t> near(600);
  EXPECT_THROW(nearest_feature(img.data(), -1, 30, near.data()), Error);
  EXPECT_THROW(nearest_feature(img.data(), 40000, 1, near.data()), Error);
  EXPECT_THROW(skeletonize(img.data(), 20, -3, img.data()), Error);

  SetAccumulator acc(kGroupF | kGroupS);
  EXPECT_THROW(acc.add(score_image(a, a, kGroupS)), Error);
  acc.add(score_image(a, a, kGroupF | kGroupS | kGroupMAE));
  EXPECT_EQ(acc.count(), 1);
}

// ---- The command ----

using CliRun = biref::test::CliResult;

CliRun run_eval(const std::string& args) {
  return biref::test::run_cli("eval -q --gt " + golden_dir() + "/gt --pred " + golden_dir() +
                              "/pred --metrics MAE " + args);
}

// One line "biref eval: error: ..." on standard error, nothing on standard output.
void expect_one_error_line(const CliRun& r, const std::string& needle) {
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("biref eval: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(EvalCliOutputs, OutputIntoMissingFolderLeavesNothing) {
  const fs::path dir = fresh_dir("missing");
  const CliRun r = run_eval("-o " + (dir / "no/such/report.json").string() + " --plot " +
                            (dir / "curves").string());
  expect_one_error_line(r, "does not exist");
  EXPECT_TRUE(listing(dir).empty());  // no plots either: the run stopped before scoring
  fs::remove_all(dir);
}

TEST(EvalCliOutputs, PlotIntoReadOnlyFolderLeavesNothing) {
  const fs::path dir = fresh_dir("readonly"), out = fresh_dir("readonly_report");
  // root writes into a folder without write permission: /proc refuses new files to everyone.
  fs::path plot_dir = dir;
  if (::geteuid() == 0) {
    plot_dir = "/proc";
  } else {
    fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec);
  }
  const std::string plot = (plot_dir / ("biref_curves_" + std::to_string(::getpid()))).string();
  const CliRun r =
      run_eval("--format json -o " + (out / "report.json").string() + " --plot " + plot);
  expect_one_error_line(r, "cannot write '" + plot + ".png'");
  EXPECT_FALSE(fs::exists(plot + ".png"));
  EXPECT_FALSE(fs::exists(plot + ".svg"));
  EXPECT_TRUE(listing(out).empty()) << "the report must not appear without the plots";
  fs::permissions(dir, fs::perms::owner_all);
  EXPECT_TRUE(listing(dir).empty());
  fs::remove_all(dir);
  fs::remove_all(out);
}

TEST(EvalCliOutputs, SvgTargetIsAFolder) {
  const fs::path dir = fresh_dir("svgdir");
  fs::create_directories(dir / "curves.svg");
  const CliRun r =
      run_eval("-o " + (dir / "r.txt").string() + " --plot " + (dir / "curves").string());
  expect_one_error_line(r, "is a folder");
  EXPECT_EQ(listing(dir), std::vector<std::string>{"curves.svg"});
  fs::remove_all(dir);
}

TEST(EvalCliOutputs, ReportAndPlotsWrittenTogether) {
  const fs::path dir = fresh_dir("together");
  const CliRun r = run_eval("--format csv -o " + (dir / "r.csv").string() + " --plot " +
                            (dir / "curves.svg").string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"curves.png", "curves.svg", "r.csv"}));
  EXPECT_EQ(slurp(dir / "r.csv").rfind("dataset,method,image,count,MAE\n", 0), 0u);
  // Without -o the report goes to standard output.
  const CliRun s = run_eval("--format csv");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_EQ(s.out, slurp(dir / "r.csv"));
  // -o and --plot naming the same file.
  const CliRun t = run_eval("-o " + (dir / "x.png").string() + " --plot " + (dir / "x").string());
  expect_one_error_line(t, "same file");
  fs::remove_all(dir);
}

TEST(EvalCliOutputs, FullStdoutIsAnError) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const fs::path dir = fresh_dir("devfull");
  const std::string cmd = std::string(BIREF_CLI) + " eval -q --gt " + golden_dir() + "/gt --pred " +
                          golden_dir() + "/pred --metrics MAE >/dev/full 2>" +
                          (dir / "err").string() + " </dev/null";
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  const std::string err = slurp(dir / "err");
  EXPECT_NE(err.find("biref eval: error: cannot write the report to standard output"),
            std::string::npos)
      << err;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace biref::eval
