// `biref segment` and `biref bench` as a user runs them: outputs, exit codes, one-line errors,
// and no output file left behind on failure.
#include <unistd.h>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "test_util.h"
#include "weights/safetensors.h"
#include "weights/synthetic.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

using Result = test::CliResult;

Result run(const std::string& args, const std::string& env = "") {
  return test::run_cli(args, env);
}

int lines(const std::string& s) {
  return int(std::count(s.begin(), s.end(), '\n'));
}

class SegmentCli : public testing::Test {
 protected:
  void SetUp() override {
    // One folder per test process: ctest runs tests in parallel, and two of them writing the
    // same mask.png made each other's "no output left behind" checks fail.
    dir = fs::path(testing::TempDir()) / ("biref_cli_" + std::to_string(getpid()));
    fs::create_directories(dir);
    out = (dir / "mask.png").string();
    fs::remove(out);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  // An error while running: exit code 1, one line "biref segment: error: ...", no output.
  void expect_failure(const std::string& args, const std::string& needle) {
    const Result r = run(args + " -o " + out);
    expect_error_line(r, needle);
    EXPECT_FALSE(fs::exists(out)) << "output left behind by: " << args;
  }
  static void expect_error_line(const Result& r, const std::string& needle,
                                const std::string& cmd = "segment") {
    EXPECT_EQ(r.code, 1) << r.all();
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_EQ(r.err.rfind("biref " + cmd + ": error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
  fs::path dir;
  std::string out;
};

TEST_F(SegmentCli, WritesTheOfficialMask) {
  const std::string img = test::data_path("pipeline/astronaut.jpg");
  const Result r =
      run("segment " + img + " -o " + out + " --model synthetic:swin_v1_t --size 256x256");
  ASSERT_EQ(r.code, 0) << r.all();
  const cv::Mat mine = cv::imread(out, cv::IMREAD_UNCHANGED);
  const cv::Mat ref =
      cv::imread(test::data_path("pipeline/astronaut.mask.png"), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(mine.type(), CV_8UC1);
  ASSERT_EQ(mine.size(), ref.size());
  cv::Mat diff;
  cv::absdiff(mine, ref, diff);
  double mx = 0;
  cv::minMaxLoc(diff, nullptr, &mx);
  EXPECT_LE(mx, 1.0);
  // --dump writes the 18 golden points
  const std::string dump = (dir / "dump.safetensors").string();
  ASSERT_EQ(run("segment " + img + " -o " + out +
                " --model synthetic:swin_v1_t --size 64x64 -q --dump " + dump)
                .code,
            0);
  const Checkpoint ck = load_checkpoint(dump);
  EXPECT_EQ(ck.tensors.size(), 18u);
  EXPECT_EQ(ck.tensors.at("out").shape, (std::vector<int64_t>{1, 1, 64, 64}));
  EXPECT_EQ(ck.tensors.at("enc.x4").shape, (std::vector<int64_t>{1, 2880, 2, 2}));
  fs::remove(dump);
  // the image may follow --model: one value per --model (an ensemble repeats the option)
  fs::remove(out);
  const Result after = run("segment --model synthetic:swin_v1_t " + img +
                           " --size 64x64 -q -o " + out);
  EXPECT_EQ(after.code, 0) << after.all();
  EXPECT_TRUE(fs::exists(out));
  // no temporary files left in the output folder
  int files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.path().filename().string()[0] == '.';
  EXPECT_EQ(files, 0);
}

TEST_F(SegmentCli, BadInputsFailWithOneLineAndNoOutput) {
  const std::string img = test::data_path("pipeline/astronaut.jpg");
  expect_failure("segment " + (dir / "missing.jpg").string() + " --model synthetic:swin_v1_t",
                 "does not exist");
  expect_failure("segment " + img + " --model synthetic:swin_v1_t --size 250x256",
                 "multiples of 32");
  expect_failure("segment " + img + " --model synthetic:swin_v1_t --size big", "not a size");
  expect_failure("segment " + img + " --model " + (dir / "none.safetensors").string(),
                 "does not exist");
  expect_failure("segment " + img + " --model synthetic:resnet50", "unknown backbone");
  {  // an output format nobody can write is refused before the model runs
    const std::string bad_out = (dir / "mask.xyz").string();
    const Result r = run("segment " + img + " --model synthetic:swin_v1_t -o " + bad_out);
    expect_error_line(r, "unknown image format");
    EXPECT_FALSE(fs::exists(bad_out));
  }

  // a truncated checkpoint
  const std::string good = (dir / "t.safetensors").string();
  ASSERT_EQ(run("convert --synthetic swin_v1_t " + good).code, 0);
  {
    const auto size = fs::file_size(good);
    fs::resize_file(good, size / 2);
  }
  expect_failure("segment " + img + " --model " + good, "outside");

  // not BiRefNet
  std::vector<float> w(64, 0.5f);
  const std::string other = (dir / "other.safetensors").string();
  save_safetensors(other, {{"conv1.weight", {DType::F32, {64}, w.data(), nullptr}}}, {});
  expect_failure("segment " + img + " --model " + other, "not a BiRefNet checkpoint");

  // a wrongly shaped tensor in an otherwise complete checkpoint
  {
    Checkpoint ck = synthetic_checkpoint_from_spec("synthetic:swin_v1_t");
    std::vector<std::pair<std::string, TensorData>> ts(ck.tensors.begin(), ck.tensors.end());
    for (auto& [name, t] : ts)
      if (name == "decoder.lateral_block2.conv.bias") t.shape = {2, 96};
    const std::string bad = (dir / "bad.safetensors").string();
    save_safetensors(bad, ts, {});
    expect_failure("segment " + img + " --model " + bad,
                   "'decoder.lateral_block2.conv.bias' has shape [2, 96], expected [192]");
  }
  // an unwritable output folder
  const Result r =
      run("segment " + img + " --model synthetic:swin_v1_t --size 64x64 -o /nonexistent/dir/m.png");
  expect_error_line(r, "does not exist");
  // --threads out of range is an error while running (the parser took the number)
  expect_failure("segment " + img + " --model synthetic:swin_v1_t --size 64x64 --threads 100000",
                 "out of range");
  expect_failure("segment " + img + " --model synthetic:swin_v1_t --size 64x64 --threads -1",
                 "out of range");
  // the output naming the input image
  const std::string copy = (dir / "in.png").string();
  fs::copy_file(test::data_path("pipeline/chelsea.png"), copy,
                fs::copy_options::overwrite_existing);
  const Result same =
      run("segment " + copy + " --model synthetic:swin_v1_t --size 64x64 -o " + copy);
  expect_error_line(same, "in.png");
  EXPECT_EQ(fs::file_size(copy), fs::file_size(test::data_path("pipeline/chelsea.png")));
  fs::remove(copy);
}

// What the argument parser refuses: exit code 2, one line "biref[ CMD]: error: ... (see biref[
// CMD] --help)", nothing run and nothing written.
TEST_F(SegmentCli, UsageErrorsExitWithTwo) {
  const std::string img = test::data_path("pipeline/astronaut.jpg");
  auto expect_usage = [&](const std::string& args, const std::string& who,
                          const std::string& needle) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.all();
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_EQ(r.err.rfind(who + ": error: ", 0), 0u) << r.err;
    // "(see biref --help)", or "(commands: ...; see biref --help)" for an unknown command
    EXPECT_TRUE(r.err.ends_with("see " + who + " --help)\n")) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << args;
    EXPECT_FALSE(fs::exists(out)) << "output written by: " << args;
  };
  expect_usage("segmnt " + img + " -o " + out, "biref", "segmnt");
  expect_usage("--no-such-flag", "biref", "--no-such-flag");
  expect_usage("segment " + img + " -o " + out + " --model synthetic:swin_v1_t --bogus",
               "biref segment", "--bogus");
  expect_usage("segment " + img + " --model synthetic:swin_v1_t", "biref segment", "-o");
  expect_usage("segment -o " + out + " --model synthetic:swin_v1_t", "biref segment", "image");
  expect_usage("segment " + img + " -o " + out + " --model synthetic:swin_v1_t --threads abc",
               "biref segment", "abc");
  expect_usage("bench --model synthetic:swin_v1_t --runs many", "biref bench", "many");
  // help and version are successes
  for (const char* args : {"--help", "segment --help", "--version"}) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 0) << args << "\n" << r.all();
    EXPECT_FALSE(r.out.empty()) << args;
  }
}

TEST_F(SegmentCli, ZooNameRunsAtItsNativeSizeFromTheCache) {
  // A cached file stands in for the 512x512 variant (no network in tests): without --size the
  // model runs at the variant's native 512x512.
  const fs::path cache = dir / "cache";
  const fs::path file = cache / "models/ZhengPeng7/BiRefNet_512x512/model.safetensors";
  fs::create_directories(file.parent_path());
  ASSERT_EQ(run("convert --synthetic swin_v1_t " + file.string()).code, 0);
  const std::string dump = (dir / "dump512.safetensors").string();
  const std::string img = test::data_path("pipeline/chelsea.png");
  const Result r = run("segment " + img + " -o " + out + " --model 512x512 -q --dump " + dump,
                       "BIREF_CACHE=" + cache.string());
  ASSERT_EQ(r.code, 0) << r.all();
  const Checkpoint ck = load_checkpoint(dump);
  EXPECT_EQ(ck.metadata.at("size"), "512x512");
  EXPECT_EQ(ck.tensors.at("out").shape, (std::vector<int64_t>{1, 1, 512, 512}));
  const Result info = run("info 512x512", "BIREF_CACHE=" + cache.string());
  ASSERT_EQ(info.code, 0) << info.all();
  EXPECT_NE(info.out.find("native size   512x512"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("ZhengPeng7/BiRefNet_512x512"), std::string::npos) << info.out;
  fs::remove_all(cache);
  fs::remove(dump);
}

TEST(BenchCli, JsonHasTheDocumentedKeys) {
  const Result r = run("bench --model synthetic:swin_v1_t --size 64x64 --runs 2 --json");
  ASSERT_EQ(r.code, 0) << r.all();
  const auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"load_ms", "median_ms", "min_ms", "max_ms", "gflops", "gflops_per_s",
                        "sgemm_gflops_per_s", "peak_rss_mb", "stages", "isa", "precision"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_GT(j["gflops"].get<double>(), 0.0);
  EXPECT_LE(j["min_ms"].get<double>(), j["median_ms"].get<double>());
  for (const char* s : {"backbone.full", "backbone.half", "squeeze", "decoder"})
    EXPECT_TRUE(j["stages"].contains(s)) << s;
  EXPECT_EQ(j["precision"], "fp32");
}

}  // namespace
}  // namespace biref
