// `biref convert` and `biref info`, run as the built command on small inputs, bad ones included:
// each failure is one line on stderr, exit code 1 (2 for a usage error), and no output file left
// behind.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "core/half.h"
#include "model/config.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "weights/synthetic.h"

namespace biref::pth_test {
void save_state_dict_pth(const std::string& path,
                         const std::vector<std::pair<std::string, TensorData>>& tensors,
                         const std::string& prefix, const std::string& nest_key);
}

namespace biref {
namespace {

namespace fs = std::filesystem;

using CliRun = test::CliResult;

CliRun run_cli(const std::string& args, const fs::path& /*dir*/) {
  return test::run_cli(args);
}

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("biref-test-convert-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Nothing but `expected` in the folder: no temporary or partial output left.
  void expect_files(std::initializer_list<std::string> expected) const {
    std::set<std::string> have, want(expected);
    for (const auto& e : fs::directory_iterator(dir_)) have.insert(e.path().filename().string());
    EXPECT_EQ(have, want);
  }
  // An error while running: exit code 1 and exactly one line "biref CMD: error: ...".
  void expect_failure(const CliRun& r, const std::string& cmd, const std::string& needle) const {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(r.err.rfind("biref " + cmd + ": error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
  // A usage error the argument parser detects: exit code 2 and exactly one line
  // "biref CMD: error: ... (see biref CMD --help)".
  void expect_usage_error(const CliRun& r, const std::string& cmd,
                          const std::string& needle) const {
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(r.err.rfind("biref " + cmd + ": error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    const std::string tail = "(see biref " + cmd + " --help)\n";
    EXPECT_TRUE(r.err.ends_with(tail)) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
  fs::path dir_;
};

TEST_F(ConvertTest, SyntheticToSafetensors) {
  const CliRun r =
      run_cli("convert --synthetic swin_v1_t " + path("t.safetensors") + " --seed 3", dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("swin_v1_t"), std::string::npos) << r.out;
  const Checkpoint ck = load_safetensors(path("t.safetensors"));
  EXPECT_EQ(ck.metadata.at("backbone"), "swin_v1_t");
  EXPECT_EQ(ck.metadata.at("seed"), "3");
  EXPECT_EQ(ck.metadata.at("window"), "7");
  EXPECT_EQ(ck.metadata.at("dtype"), "F32");
  const ModelConfig cfg = detect_config(ck);
  EXPECT_EQ(ck.metadata.at("config"), describe(cfg));
  // exactly the recorded official state_dict (names and shapes), all F32
  const auto official = test::recorded_params("swin_v1_t");
  EXPECT_EQ(ck.tensors.size(), official.size());
  for (const auto& p : official) {
    auto it = ck.tensors.find(p.name);
    if (it == ck.tensors.end()) {
      ADD_FAILURE() << "missing " << p.name;
      continue;
    }
    EXPECT_EQ(it->second.shape, p.shape) << p.name;
    EXPECT_EQ(it->second.dtype, DType::F32) << p.name;
  }
  // the values are SYNTHETIC_WEIGHTS.md's formula at seed 3, every element, for one tensor of
  // each rule (conv weight, 1-D bias, running_var, running_mean, 1-D weight, bias table)
  for (const char* name :
       {"bb.patch_embed.proj.weight", "decoder.conv_out1.0.bias",
        "squeeze_module.0.bn_in.running_var", "decoder.gdt_convs_3.1.running_mean",
        "bb.layers.1.blocks.0.norm1.weight",
        "bb.layers.3.blocks.1.attn.relative_position_bias_table"}) {
    const TensorData& t = ck.tensors.at(name);
    const auto got = t.to_f32();
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], test::ref_synthetic_value(name, t.shape, 3, i)) << name << " element " << i;
    }
  }
  expect_files({"t.safetensors"});
}

TEST_F(ConvertTest, PthToHalfSafetensorsDropsBuffersAndStripsPrefixes) {
  // The synthetic swin_v1_t as a DataParallel + compiled training checkpoint, with buffers.
  const Checkpoint syn = synthetic_checkpoint_from_spec("synthetic:swin_v1_t");
  const ModelConfig cfg = detect_config(syn);
  std::vector<std::pair<std::string, TensorData>> tensors;
  for (const ParamSpec& p : param_specs(cfg)) tensors.emplace_back(p.name, syn.tensors.at(p.name));
  auto nbt = std::make_shared<int64_t>(42);
  TensorData b;
  b.dtype = DType::I64;
  b.data = nbt.get();
  b.owner = nbt;
  tensors.emplace_back("squeeze_module.0.bn_in.num_batches_tracked", b);
  auto rpi = std::make_shared<std::vector<int64_t>>(49 * 49, 7);
  TensorData r;
  r.dtype = DType::I64;
  r.shape = {49, 49};
  r.data = rpi->data();
  r.owner = std::shared_ptr<const void>(rpi, rpi->data());
  tensors.emplace_back("bb.layers.0.blocks.0.attn.relative_position_index", r);
  pth_test::save_state_dict_pth(path("in.pth"), tensors, "module._orig_mod.", "model");

  const CliRun run =
      run_cli("convert " + path("in.pth") + " " + path("h.safetensors") + " --dtype f16", dir_);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find("2 buffers dropped"), std::string::npos) << run.out;
  const Checkpoint ck = load_safetensors(path("h.safetensors"));
  EXPECT_EQ(ck.metadata.at("source_format"), "pth");
  EXPECT_EQ(ck.metadata.at("dtype"), "F16");
  EXPECT_EQ(ck.tensors.size(), param_specs(cfg).size());
  EXPECT_FALSE(ck.tensors.count("squeeze_module.0.bn_in.num_batches_tracked"));
  EXPECT_FALSE(ck.tensors.count("bb.layers.0.blocks.0.attn.relative_position_index"));
  for (const auto& [name, t] : ck.tensors) {
    ASSERT_EQ(t.dtype, DType::F16) << name;
    const auto want = syn.tensors.at(name).to_f32();
    const auto* got = static_cast<const uint16_t*>(t.data);
    for (size_t i = 0; i < want.size(); i += 97) {
      ASSERT_EQ(got[i], test::ref_f32_to_f16(want[i])) << name << " element " << i;
    }
  }

  // info on the .pth: nesting, buffers and the training-only heads are reported.
  const CliRun info = run_cli("info " + path("in.pth"), dir_);
  ASSERT_EQ(info.code, 0) << info.err;
  for (const char* s : {"PyTorch zip", "state_dict under 'model'", "backbone swin_v1_t", "F32 x",
                        "I64 x2", "buffers       2", "training-only ", "parameters"}) {
    EXPECT_NE(info.out.find(s), std::string::npos) << s << "\n" << info.out;
  }
  // info on the converted file.
  const CliRun info16 = run_cli("info " + path("h.safetensors"), dir_);
  ASSERT_EQ(info16.code, 0) << info16.err;
  EXPECT_NE(info16.out.find("F16 x"), std::string::npos) << info16.out;
  EXPECT_NE(info16.out.find("converted_by"), std::string::npos) << info16.out;
  expect_files({"in.pth", "h.safetensors"});
}

// --dtype bf16 stores, for every element, the nearest bfloat16 (ties to even) of the synthetic
// weights' source values (SYNTHETIC_WEIGHTS.md's formula, seed 0); converting back to F32
// widens those exactly.
TEST_F(ConvertTest, Bf16AndBackToF32) {
  ASSERT_EQ(
      run_cli("convert --synthetic swin_v1_t " + path("a.safetensors") + " --dtype bf16", dir_)
          .code,
      0);
  const CliRun r = run_cli(
      "convert " + path("a.safetensors") + " " + path("b.safetensors") + " --dtype f32", dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  const Checkpoint a = load_safetensors(path("a.safetensors"));
  const Checkpoint b = load_safetensors(path("b.safetensors"));
  EXPECT_EQ(a.metadata.at("dtype"), "BF16");
  EXPECT_EQ(b.metadata.at("dtype"), "F32");
  ASSERT_EQ(a.tensors.size(), test::recorded_params("swin_v1_t").size());
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  int64_t checked = 0, rounded = 0;
  double worst_rel = 0;
  for (const auto& [name, ta] : a.tensors) {
    const TensorData& tb = b.tensors.at(name);
    ASSERT_EQ(ta.dtype, DType::BF16) << name;
    ASSERT_EQ(tb.dtype, DType::F32) << name;
    ASSERT_EQ(ta.shape, tb.shape) << name;
    const auto* bits = static_cast<const uint16_t*>(ta.data);
    const auto widened = tb.to_f32();
    // every element of the smaller tensors, every 13th of the large ones
    const int64_t n = ta.numel(), step = n > (1 << 20) ? 13 : 1;
    for (int64_t i = 0; i < n; i += step) {
      const float src = test::ref_synthetic_value(name, ta.shape, 0, uint64_t(i));
      ASSERT_EQ(bits[i], test::ref_f32_to_bf16(src)) << name << " element " << i << " of " << src;
      ASSERT_EQ(widened[i], test::ref_bf16_value(bits[i])) << name << " element " << i;
      const double rel = src == 0 ? std::fabs(widened[i])
                                  : std::fabs(double(widened[i]) - src) / std::fabs(double(src));
      ASSERT_LE(rel, 0x1p-8) << name << " element " << i;  // within half a bf16 ulp
      test::keep_max(worst_rel, rel);
      rounded += widened[i] != src;
      ++checked;
    }
  }
  std::printf(
      "bf16 convert: %lld elements checked, %lld changed by rounding, worst relative "
      "error %.3e\n",
      (long long)checked, (long long)rounded, worst_rel);
  EXPECT_GT(rounded, checked / 2);  // the values really were rounded, not passed through
}

TEST_F(ConvertTest, InfoOnSynthetic) {
  const CliRun r = run_cli("info synthetic:swin_v1_l", dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("backbone swin_v1_l"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("window 12"), std::string::npos) << r.out;
}

TEST_F(ConvertTest, MissingInput) {
  expect_failure(run_cli("convert " + path("nope.pth") + " " + path("out.safetensors"), dir_),
                 "convert", "nope.pth");
  expect_failure(run_cli("info " + path("nope.pth"), dir_), "info", "nope.pth");
  expect_files({});
}

TEST_F(ConvertTest, NotBiRefNet) {
  // A state_dict of something else entirely.
  auto v = std::make_shared<std::vector<float>>(6, 1.f);
  TensorData t;
  t.shape = {2, 3};
  t.data = v->data();
  t.owner = std::shared_ptr<const void>(v, v->data());
  save_safetensors(path("other.safetensors"), {{"fc.weight", t}}, {});
  expect_failure(
      run_cli("convert " + path("other.safetensors") + " " + path("out.safetensors"), dir_),
      "convert", "not a BiRefNet checkpoint");
  // The .pth fixture has a patch embedding but nothing else of the model.
  const std::string plain = test::data_path("checkpoints/plain.pth");
  expect_failure(run_cli("convert " + plain + " " + path("out.safetensors"), dir_), "convert",
                 "is incomplete");
  // info still describes the file, then says why it is not BiRefNet.
  const CliRun i = run_cli("info " + plain, dir_);
  expect_failure(i, "info", "is incomplete");
  EXPECT_NE(i.out.find("PyTorch zip"), std::string::npos) << i.out;
  EXPECT_NE(i.out.find("BF16 x1, F16 x1, F32 x6, I64 x1"), std::string::npos) << i.out;
  expect_files({"other.safetensors"});
}

TEST_F(ConvertTest, IncompleteCheckpointKeepsAnExistingOutput) {
  const Checkpoint syn = synthetic_checkpoint_from_spec("synthetic:swin_v1_t");
  std::vector<std::pair<std::string, TensorData>> tensors;
  for (const auto& [name, t] : syn.tensors) {
    if (name != "decoder.conv_out1.0.weight") tensors.emplace_back(name, t);
  }
  save_safetensors(path("bad.safetensors"), tensors, {});
  {
    std::ofstream f(path("out.safetensors"));
    f << "previous";
  }
  expect_failure(
      run_cli("convert " + path("bad.safetensors") + " " + path("out.safetensors"), dir_),
      "convert", "missing tensor 'decoder.conv_out1.0.weight'");
  std::ifstream f(path("out.safetensors"));
  std::string content((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(content, "previous");
  expect_files({"bad.safetensors", "out.safetensors"});
}

TEST_F(ConvertTest, BadArguments) {
  expect_failure(run_cli("convert --synthetic swin_v9 " + path("o.safetensors"), dir_), "convert",
                 "swin_v9");
  expect_failure(run_cli("convert --synthetic swin_v1_t a b", dir_), "convert", "only the output");
  expect_failure(run_cli("convert " + path("o.safetensors"), dir_), "convert", "IN OUT");
  expect_failure(
      run_cli("convert --synthetic swin_v1_t " + path("no/such/dir/o.safetensors"), dir_),
      "convert", "o.safetensors");
  expect_usage_error(
      run_cli("convert --synthetic swin_v1_t " + path("o.safetensors") + " --dtype f8", dir_),
      "convert", "f8");
  expect_usage_error(
      run_cli("convert --synthetic swin_v1_t " + path("o.safetensors") + " --seed x", dir_),
      "convert", "--seed");
  expect_usage_error(run_cli("convert --bogus " + path("o.safetensors"), dir_), "convert",
                     "--bogus");
  expect_usage_error(run_cli("convert", dir_), "convert", "files");
  // A truncated safetensors input.
  {
    std::ofstream f(path("trunc.safetensors"), std::ios::binary);
    f.write("\x40\0\0\0\0\0\0\0{\"a\":", 13);
  }
  expect_failure(
      run_cli("convert " + path("trunc.safetensors") + " " + path("o.safetensors"), dir_),
      "convert", "trunc.safetensors");
  expect_files({"trunc.safetensors"});
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

// Issue 3's acceptance check: a synthetic swin_v1_l checkpoint converted to F16 gives, through
// `biref segment`, a mask within ±1 of the FP32 checkpoint's.
TEST_F(ConvertTest, SwinLHalfPrecisionMaskWithinOneOfFp32) {
  const std::string f32 = path("l32.safetensors"), f16 = path("l16.safetensors");
  ASSERT_EQ(run_cli("convert --synthetic swin_v1_l " + f32, dir_).code, 0);
  const CliRun c = run_cli("convert " + f32 + " " + f16 + " --dtype f16", dir_);
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_LT(fs::file_size(f16), fs::file_size(f32) * 6 / 10);
  const std::string img = test::data_path("pipeline/chelsea.png");
  for (const auto& [model, mask] :
       {std::pair{f32, path("m32.png")}, std::pair{f16, path("m16.png")}}) {
    const CliRun r = run_cli(
        "segment " + img + " -o " + mask + " --model " + model + " --size 256x256 -q", dir_);
    ASSERT_EQ(r.code, 0) << r.err;
  }
  const cv::Mat a = cv::imread(path("m32.png"), cv::IMREAD_UNCHANGED);
  const cv::Mat b = cv::imread(path("m16.png"), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(a.size(), b.size());
  cv::Mat diff;
  cv::absdiff(a, b, diff);
  double mx = 0;
  cv::minMaxLoc(diff, nullptr, &mx);
  std::printf("swin_v1_l f16 vs f32 mask: max diff %.0f, %d of %d pixels differ\n", mx,
              cv::countNonZero(diff), int(diff.total()));
  EXPECT_LE(mx, 1.0);
}

}  // namespace
}  // namespace biref
