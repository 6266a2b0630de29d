#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "biref/error.h"
#include "core/check.h"
#include "core/half.h"
#include "model/config.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "weights/synthetic.h"

namespace biref {
namespace {

TEST(Synthetic, CheckValuesOfTheSpec) {
  EXPECT_EQ(fnv1a64("bb.patch_embed.proj.weight"), 0x22c6623b14cdadceull);
  const uint64_t h = fnv1a64("bb.patch_embed.proj.weight");
  const double u[4] = {-0.72840525, 0.81904877, -0.83065306, -0.13274330};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(synthetic_u(h, 0, i), u[i], 1e-8);
  const auto v = synthetic_values("bb.patch_embed.proj.weight", {96, 3, 4, 4}, 0);
  const float first[4] = {-0.18210131f, 0.20476219f, -0.20766327f, -0.03318582f};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(v[i], first[i], 1e-7);
}

// The parameter list we derive from the configuration is exactly the official state_dict.
void expect_specs_match(const std::string& backbone) {
  ModelConfig cfg;
  cfg.swin = swin_preset(backbone);
  const auto specs = param_specs(cfg);
  std::ifstream f(test::data_path("param_names/" + backbone + ".txt"));
  ASSERT_TRUE(f.good());
  std::string line;
  size_t k = 0;
  while (std::getline(f, line)) {
    std::istringstream ls(line);
    std::string name, shape;
    ls >> name >> shape;
    if (name.ends_with("relative_position_index") || name.ends_with("num_batches_tracked")) continue;
    std::vector<int64_t> dims;
    std::stringstream ss(shape);
    for (std::string d; std::getline(ss, d, 'x');) dims.push_back(std::stoll(d));
    ASSERT_LT(k, specs.size()) << name;
    EXPECT_EQ(specs[k].name, name) << "entry " << k;
    EXPECT_EQ(specs[k].shape, dims) << name;
    ++k;
  }
  EXPECT_EQ(k, specs.size());
}

TEST(Config, ParamSpecsMatchOfficialStateDictT) { expect_specs_match("swin_v1_t"); }
TEST(Config, ParamSpecsMatchOfficialStateDictL) { expect_specs_match("swin_v1_l"); }

TEST(Config, DetectsEveryPreset) {
  for (const auto& name : swin_preset_names()) {
    Checkpoint ck = synthetic_checkpoint_from_spec("synthetic:" + name);
    ModelConfig cfg = detect_config(ck);
    EXPECT_EQ(cfg.swin.name, name);
    EXPECT_TRUE(cfg.decoder_bn);
    EXPECT_NO_THROW(validate_checkpoint(ck, cfg));
  }
}

TEST(Config, NamesTheMissingOrWrongTensor) {
  Checkpoint ck = synthetic_checkpoint_from_spec("synthetic:swin_v1_t");
  ModelConfig cfg = detect_config(ck);
  {
    Checkpoint c = ck;
    c.tensors.erase("decoder.ipt_blk3.conv1.bias");
    try {
      validate_checkpoint(c, cfg);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("missing tensor 'decoder.ipt_blk3.conv1.bias'"),
                std::string::npos) << e.what();
    }
  }
  {
    Checkpoint c = ck;
    c.tensors["decoder.ipt_blk3.conv1.bias"].shape = {65};
    try {
      validate_checkpoint(c, cfg);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("has shape [65], expected [64]"), std::string::npos)
          << e.what();
    }
  }
  {
    Checkpoint c = ck;
    c.tensors["decoder.extra.weight"] = c.tensors["decoder.ipt_blk3.conv1.bias"];
    try {
      validate_checkpoint(c, cfg);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("unexpected tensor 'decoder.extra.weight'"),
                std::string::npos) << e.what();
    }
  }
  // crafted shapes that would crash or exhaust memory later are refused at detection
  for (const std::vector<int64_t>& bad : {std::vector<int64_t>{96, 3, 0, 0}, {96, 3, 8, 8}, {0, 3, 4, 4},
                                          {100, 3, 4, 4}}) {
    Checkpoint c = ck;
    c.tensors["bb.patch_embed.proj.weight"].shape = bad;
    EXPECT_THROW(detect_config(c), Error) << shape_str(bad);
  }
  {
    Checkpoint c = ck;
    c.tensors["bb.layers.0.blocks.0.attn.relative_position_bias_table"].shape = {127 * 127, 3};
    try {
      detect_config(c);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("window w <= 32"), std::string::npos) << e.what();
    }
  }
  {
    Checkpoint c;
    c.path = "resnet.safetensors";
    c.tensors["conv1.weight"] = ck.tensors["decoder.ipt_blk3.conv1.bias"];
    try {
      detect_config(c);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not a BiRefNet checkpoint"), std::string::npos);
    }
  }
}

TEST(Safetensors, RoundTripAllFloatTypesAndPrefixes) {
  const std::string path = testing::TempDir() + "/rt.safetensors";
  std::vector<float> a = {1.5f, -2.25f, 3.f, 0.f, 65504.f, 1e-6f};
  std::vector<uint16_t> h(a.size()), b(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    h[i] = f32_to_f16(a[i]);
    b[i] = f32_to_bf16(a[i]);
  }
  std::vector<std::pair<std::string, TensorData>> ts;
  ts.push_back({"module.x", {DType::F32, {2, 3}, a.data(), nullptr}});
  ts.push_back({"_orig_mod.module.y", {DType::F16, {6}, h.data(), nullptr}});
  ts.push_back({"z", {DType::BF16, {3, 2}, b.data(), nullptr}});
  save_safetensors(path, ts, {{"k", "v"}});
  Checkpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.metadata.at("k"), "v");
  ASSERT_EQ(ck.tensors.size(), 3u);
  EXPECT_EQ(ck.tensors.at("x").to_f32(), a);
  auto y = ck.tensors.at("y").to_f32();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(y[i], a[i], std::fabs(a[i]) * 1e-3 + 1e-7);
  auto z = ck.tensors.at("z").to_f32();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(z[i], a[i], std::fabs(a[i]) * 8e-3);
  std::filesystem::remove(path);
}

TEST(Safetensors, RejectsTruncatedAndCorruptFiles) {
  const std::string dir = testing::TempDir();
  std::vector<float> a(1000, 1.f);
  const std::string good = dir + "/good.safetensors";
  save_safetensors(good, {{"x", {DType::F32, {1000}, a.data(), nullptr}}}, {});
  std::string bytes;
  {
    std::ifstream f(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream f(dir + "/" + name, std::ios::binary);
    f << content;
    return dir + "/" + name;
  };
  auto expect_error = [](const std::string& path, const std::string& needle) {
    try {
      load_checkpoint(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  expect_error(write("trunc.safetensors", bytes.substr(0, bytes.size() - 100)), "outside");
  expect_error(write("short.safetensors", bytes.substr(0, 5)), "truncated");
  std::string corrupt = bytes;
  corrupt[8] = '#';  // the header's opening brace
  expect_error(write("corrupt.safetensors", corrupt), "corrupt");
  std::string huge = bytes;
  huge[7] = 0x7f;
  expect_error(write("hdr.safetensors", huge), "header length");
  expect_error(write("empty.safetensors", ""), "empty");
  expect_error(dir + "/does-not-exist.safetensors", "cannot open");
}

TEST(Safetensors, RejectsShapesThatOverflowAndMisalignedDataStillReads) {
  const std::string dir = testing::TempDir();
  auto write_header = [&](const std::string& name, const std::string& json, size_t data_bytes) {
    const std::string path = dir + "/" + name;
    std::ofstream f(path, std::ios::binary);
    const uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) f.put(char((n >> (8 * i)) & 0xff));
    f << json << std::string(data_bytes, '\0');
    return path;
  };
  // 2^62 elements claimed by a header with no data: refused, not wrapped around
  const std::string huge = write_header(
      "huge.safetensors", R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0);
  try {
    load_checkpoint(huge);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos) << e.what();
  }
  // an F16 tensor at an odd offset converts correctly (no misaligned typed reads)
  const std::string odd_header = R"({"x":{"dtype":"F16","shape":[2],"data_offsets":[1,5]}})";
  const std::string odd = write_header("odd.safetensors", odd_header, 5);
  {
    std::fstream f(odd, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(8 + odd_header.size() + 1));  // the tensor's first byte
    const uint16_t one = f32_to_f16(1.f), two = f32_to_f16(-2.f);
    f.write(reinterpret_cast<const char*>(&one), 2);
    f.write(reinterpret_cast<const char*>(&two), 2);
  }
  const Checkpoint ck = load_checkpoint(odd);
  EXPECT_EQ(ck.tensors.at("x").to_f32(), (std::vector<float>{1.f, -2.f}));
}

TEST(Checkpoint, NamesFoldersAndBadSyntheticSeeds) {
  try {
    load_checkpoint(testing::TempDir());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a folder"), std::string::npos) << e.what();
  }
  try {
    load_checkpoint("synthetic:swin_v1_t:99999999999999999999");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("seed must be"), std::string::npos) << e.what();
  }
}

TEST(Half, ConversionsRoundTrip) {
  for (float f : {0.f, -0.f, 1.f, -1.5f, 3.14159f, 65504.f, 6.1035156e-05f, 5.9604645e-08f, 1e-5f}) {
    const float h = f16_to_f32(f32_to_f16(f));
    EXPECT_NEAR(h, f, std::fabs(f) * 1e-3 + 3e-8) << f;
    EXPECT_NEAR(bf16_to_f32(f32_to_bf16(f)), f, std::fabs(f) * 4e-3) << f;
  }
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite positive half survives f16->f32->f16
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h);
  }
}

}  // namespace
}  // namespace biref
