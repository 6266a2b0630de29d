// Runs the built `biref eval` on the golden set and checks its JSON against expected.json, plus
// the folder handling: several methods and datasets, missing / unreadable / unmatched files.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;

using CliRun = biref::test::CliResult;

CliRun run_cli(const std::string& args) {
  return biref::test::run_cli("eval " + args);
}

std::string golden_dir() {
  return biref::test::data_path("metrics/set-seed1");
}

nlohmann::json expected() {
  std::ifstream f(golden_dir() + "/expected.json");
  return nlohmann::json::parse(f);
}

// README: `biref eval` reproduces every value of the official evaluator within 1e-12 (HCE
// exactly); the JSON report prints doubles in full (round-trip) precision.
constexpr double kTol = 1e-12;

// Compares every key of `want` with `got` (null = NaN): HCE exactly when `exact_hce`.
void expect_values(const nlohmann::json& want, const nlohmann::json& got, const std::string& what,
                   bool exact_hce) {
  for (const auto& [key, w] : want.items()) {
    ASSERT_TRUE(got.contains(key)) << what << " lacks " << key;
    if (w.is_null()) {
      EXPECT_TRUE(got[key].is_null()) << what << " " << key;
      continue;
    }
    ASSERT_TRUE(got[key].is_number()) << what << " " << key;
    if (key == "HCE" && exact_hce)
      EXPECT_EQ(w.get<double>(), got[key].get<double>()) << what;
    else
      EXPECT_NEAR(w.get<double>(), got[key].get<double>(), kTol) << what << " " << key;
  }
}

fs::path fresh_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("biref_eval_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

TEST(EvalCli, GoldenJsonPerImage) {
  const CliRun r = run_cli("-q --gt " + golden_dir() + "/gt --pred " + golden_dir() +
                           "/pred --format json --per-image --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = nlohmann::json::parse(r.out);
  const auto want = expected();
  ASSERT_EQ(got["results"].size(), 1u);
  const auto& res = got["results"][0];
  EXPECT_EQ(res["dataset"], "set-seed1");
  EXPECT_EQ(res["method"], "pred");
  EXPECT_EQ(res["count"], 22);
  EXPECT_TRUE(got["problems"].empty());
  expect_values(want["dataset_all"], res, "dataset_all", false);
  for (const auto& [name, w] : want["images"].items()) {
    ASSERT_TRUE(res["images"].contains(name)) << name;
    expect_values(w, res["images"][name], name, true);
  }
}

// The set without the edge cases, as a second dataset in the same call, plus a second method:
// --gt NAME=DIR twice, each --pred folder holding one subfolder per dataset.
TEST(EvalCli, SeveralDatasetsAndMethods) {
  const fs::path root = fresh_dir("multi");
  for (const char* ds : {"all", "plain"}) {
    fs::create_directories(root / "gt" / ds);
    for (const char* m : {"m1", "m2"}) fs::create_directories(root / m / ds);
  }
  for (const auto& e : fs::directory_iterator(golden_dir() + "/gt")) {
    const std::string name = e.path().filename().string();
    const bool edge = name.rfind("edge_", 0) == 0;
    for (const char* ds : {"all", "plain"}) {
      if (edge && std::string(ds) == "plain") continue;
      fs::copy_file(e.path(), root / "gt" / ds / name);
      for (const char* m : {"m1", "m2"})
        fs::copy_file(fs::path(golden_dir()) / "pred" / name, root / m / ds / name);
    }
  }
  const CliRun r = run_cli(
      "-q --gt all=" + (root / "gt/all").string() + " --gt plain=" + (root / "gt/plain").string() +
      " --pred " + (root / "m1").string() + " --pred " + (root / "m2").string() + " --format json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = nlohmann::json::parse(r.out);
  const auto want = expected();
  ASSERT_EQ(got["results"].size(), 4u);
  for (const auto& res : got["results"]) {
    EXPECT_FALSE(res.contains("images"));
    const std::string set = res["dataset"] == "all" ? "dataset_all" : "dataset_without_edge_cases";
    expect_values(want[set], res, std::string(res["dataset"]) + "/" + std::string(res["method"]),
                  false);
  }
  // The table names the datasets and methods; CSV has one line per set plus a header.
  const CliRun t = run_cli("-q --gt all=" + (root / "gt/all").string() + " --gt plain=" +
                           (root / "gt/plain").string() + " --pred " + (root / "m1").string() +
                           " --pred " + (root / "m2").string() + " --metrics maxF,HCE");
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("maxFm"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("plain"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("m2"), std::string::npos) << t.out;
  const CliRun c = run_cli("-q --gt all=" + (root / "gt/all").string() + " --pred " +
                           (root / "m1").string() + " --format csv --per-image --metrics S");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(c.out.rfind("dataset,method,image,count,S\n", 0), 0u) << c.out;
  EXPECT_EQ(std::count(c.out.begin(), c.out.end(), '\n'), 1 + 22 + 1);
  fs::remove_all(root);
}

TEST(EvalCli, ReportsMissingUnreadableAndUnmatchedFiles) {
  const fs::path root = fresh_dir("problems");
  fs::create_directories(root / "gt");
  fs::create_directories(root / "pred");
  for (const char* n : {"000", "001", "002", "003"}) {
    fs::copy_file(golden_dir() + "/gt/" + n + ".png", root / "gt" / (std::string(n) + ".png"));
  }
  fs::copy_file(golden_dir() + "/pred/000.png", root / "pred/000.png");
  fs::copy_file(golden_dir() + "/pred/001.png", root / "pred/001.jpg");  // paired across extensions
  std::ofstream(root / "pred/002.png") << "not an image";                // unreadable
  // 003 has no prediction; 999 has no GT
  fs::copy_file(golden_dir() + "/pred/003.png", root / "pred/999.png");
  const CliRun r = run_cli("-q --gt " + (root / "gt").string() + " --pred " +
                           (root / "pred").string() + " --format json --per-image");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = nlohmann::json::parse(r.out);
  const auto& res = got["results"][0];
  EXPECT_EQ(res["count"], 2);
  EXPECT_TRUE(res["images"].contains("000"));
  EXPECT_TRUE(res["images"].contains("001"));
  EXPECT_NEAR(res["images"]["000"]["S"].get<double>(),
              expected()["images"]["000"]["S"].get<double>(), kTol);
  std::string problems = got["problems"].dump();
  EXPECT_NE(problems.find("002.png"), std::string::npos) << problems;
  EXPECT_NE(problems.find("unreadable"), std::string::npos) << problems;
  EXPECT_NE(problems.find("missing prediction"), std::string::npos) << problems;
  EXPECT_NE(problems.find("999.png"), std::string::npos) << problems;
  EXPECT_EQ(got["problems"].size(), 3u) << problems;
  EXPECT_NE(r.err.find("warning"), std::string::npos);

  // Nothing scorable, or bad arguments: one error line, exit code 1.
  const fs::path empty = fresh_dir("empty");
  // exit code 1 and one error line "biref eval: error: ..."; the warnings about the files that
  // could not be paired may come before it, one line each, when `warnings` says so
  auto expect_error = [](const CliRun& r, const std::string& needle, bool warnings = false) {
    EXPECT_EQ(r.code, 1) << r.err;
    std::istringstream lines(r.err);
    std::vector<std::string> all;
    for (std::string line; std::getline(lines, line);) all.push_back(line);
    ASSERT_FALSE(all.empty());
    EXPECT_TRUE(r.err.ends_with("\n")) << r.err;
    EXPECT_EQ(all.back().rfind("biref eval: error: ", 0), 0u) << r.err;
    EXPECT_NE(all.back().find(needle), std::string::npos) << r.err;
    if (!warnings) {
      EXPECT_EQ(all.size(), 1u) << r.err;
    }
    for (size_t i = 0; i + 1 < all.size(); ++i)
      EXPECT_EQ(all[i].rfind("biref eval: warning: ", 0), 0u) << r.err;
  };
  const CliRun e = run_cli("-q --gt " + (root / "gt").string() + " --pred " + empty.string());
  expect_error(e, "no image pair could be scored", /*warnings=*/true);
  const CliRun m = run_cli("--gt " + (root / "gt").string() + " --pred " +
                           (root / "pred").string() + " --metrics bogus");
  expect_error(m, "unknown metric 'bogus'");
  const CliRun d = run_cli("--gt " + (root / "nope").string() + " --pred " + empty.string());
  expect_error(d, "not found");
  // what the argument parser refuses is a usage error: exit code 2, one line
  const CliRun u = run_cli("--gt " + (root / "gt").string() + " --pred " +
                           (root / "pred").string() + " --threads abc");
  EXPECT_EQ(u.code, 2) << u.err;
  EXPECT_EQ(u.err.rfind("biref eval: error: ", 0), 0u) << u.err;
  EXPECT_TRUE(u.err.ends_with("(see biref eval --help)\n")) << u.err;
  EXPECT_EQ(std::count(u.err.begin(), u.err.end(), '\n'), 1) << u.err;
  const CliRun t = run_cli("--gt " + (root / "gt").string() + " --pred " +
                           (root / "pred").string() + " --threads 100000");
  expect_error(t, "out of range");
  fs::remove_all(root);
  fs::remove_all(empty);
}

TEST(EvalCli, PlotWritesPngAndSvg) {
  const fs::path dir = fresh_dir("plot");
  const CliRun r = run_cli("-q --gt " + golden_dir() + "/gt --pred A=" + golden_dir() +
                           "/pred --pred B=" + golden_dir() + "/gt --metrics MAE --plot " +
                           (dir / "curves.png").string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(fs::file_size(dir / "curves.png"), 1000u);
  std::ifstream svg(dir / "curves.svg");
  std::stringstream ss;
  ss << svg.rdbuf();
  EXPECT_NE(ss.str().find("<svg"), std::string::npos);
  EXPECT_NE(ss.str().find(">A</text>"), std::string::npos);
  EXPECT_NE(ss.str().find("Recall"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
