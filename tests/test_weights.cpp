#include <gtest/gtest.h>

#include <array>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
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
    if (name.ends_with("relative_position_index") || name.ends_with("num_batches_tracked"))
      continue;
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

TEST(Config, ParamSpecsMatchOfficialStateDictT) {
  expect_specs_match("swin_v1_t");
}
TEST(Config, ParamSpecsMatchOfficialStateDictL) {
  expect_specs_match("swin_v1_l");
}

// The official state_dict of each preset, from the recorded lists only (never from
// param_specs): swin_v1_t and swin_v1_l as recorded; swin_v1_s is swin_v1_t with 18 blocks in
// stage 3 (../shared/design/MODEL.md), every added block shaped like the recorded ones;
// swin_v1_b is swin_v1_l's structure (depths, window 12) at C = 128 instead of 192: a dimension
// scales with C exactly where the recorded swin_v1_t (C = 96) and swin_v1_l (C = 192) lists
// differ by a factor 2 at the same name.
std::vector<test::RecordedParam> official_params(const std::string& backbone) {
  if (backbone == "swin_v1_t" || backbone == "swin_v1_l") return test::recorded_params(backbone);
  const std::string stage3 = "bb.layers.2.blocks.";
  // "bb.layers.2.blocks.J.rest" -> J, or -1
  auto block_of = [&](const std::string& n) {
    return n.rfind(stage3, 0) == 0 ? std::stoi(n.substr(stage3.size())) : -1;
  };
  auto with_block = [&](const std::string& n, int j) {
    const std::string rest = n.substr(n.find('.', stage3.size()));
    return stage3 + std::to_string(j) + rest;
  };
  std::vector<test::RecordedParam> out;
  if (backbone == "swin_v1_s") {
    const auto t = test::recorded_params("swin_v1_t");
    for (size_t i = 0; i < t.size(); ++i) {
      out.push_back(t[i]);
      const bool last_of_block5 =
          block_of(t[i].name) == 5 && (i + 1 == t.size() || block_of(t[i + 1].name) != 5);
      if (!last_of_block5) continue;
      for (int j = 6; j < 18; ++j) {
        for (const auto& p : t) {
          if (block_of(p.name) != 5) continue;
          out.push_back({with_block(p.name, j), p.shape, p.dtype});
        }
      }
    }
    return out;
  }
  if (backbone == "swin_v1_b") {
    std::map<std::string, std::vector<int64_t>> t_shapes;  // stage-3 blocks keyed as block 0
    for (const auto& p : test::recorded_params("swin_v1_t"))
      t_shapes[block_of(p.name) > 0 ? with_block(p.name, 0) : p.name] = p.shape;
    for (auto p : test::recorded_params("swin_v1_l")) {
      const auto& ts = t_shapes.at(block_of(p.name) > 0 ? with_block(p.name, 0) : p.name);
      EXPECT_EQ(ts.size(), p.shape.size()) << p.name;
      for (size_t d = 0; d < p.shape.size(); ++d) {
        if (p.name.ends_with("relative_position_bias_table") && d == 0) continue;  // window 12
        if (p.shape[d] == ts[d]) continue;                                         // fixed
        EXPECT_EQ(p.shape[d], 2 * ts[d]) << p.name << " dim " << d;                // scales with C
        EXPECT_EQ(p.shape[d] % 3, 0) << p.name;
        p.shape[d] = p.shape[d] / 3 * 2;  // 192 -> 128
      }
      out.push_back(p);
    }
    return out;
  }
  ADD_FAILURE() << "no official list for " << backbone;
  return out;
}

// MODEL.md's table of the Swin variants.
struct Variant {
  const char* name;
  int C;
  std::array<int, 4> depths, heads;
  int window;
};
constexpr Variant kVariants[] = {
    {"swin_v1_t", 96, {2, 2, 6, 2}, {3, 6, 12, 24}, 7},
    {"swin_v1_s", 96, {2, 2, 18, 2}, {3, 6, 12, 24}, 7},
    {"swin_v1_b", 128, {2, 2, 18, 2}, {4, 8, 16, 32}, 12},
    {"swin_v1_l", 192, {2, 2, 18, 2}, {6, 12, 24, 48}, 12},
};

// Each preset's synthetic checkpoint has exactly the official names and shapes; a checkpoint
// built from the official list alone (no data of ours) is detected as that variant, with
// MODEL.md's widths, depths, heads and window, and validates.
TEST(Config, DetectsEveryPreset) {
  EXPECT_EQ(swin_preset_names().size(), std::size(kVariants));
  for (const Variant& v : kVariants) {
    SCOPED_TRACE(v.name);
    const auto official = official_params(v.name);
    ASSERT_FALSE(official.empty());
    // the synthetic checkpoint against the official list
    {
      const Checkpoint ck = synthetic_checkpoint_from_spec(std::string("synthetic:") + v.name);
      std::map<std::string, std::vector<int64_t>> want, got;
      for (const auto& p : official) want[p.name] = p.shape;
      for (const auto& [name, t] : ck.tensors) {
        EXPECT_EQ(t.dtype, DType::F32) << name;
        got[name] = t.shape;
      }
      EXPECT_EQ(got.size(), want.size());
      for (const auto& [name, shape] : want) {
        auto it = got.find(name);
        if (it == got.end()) {
          ADD_FAILURE() << "synthetic checkpoint lacks " << name;
          continue;
        }
        EXPECT_EQ(it->second, shape) << name;
      }
      for (const auto& [name, _] : got) EXPECT_TRUE(want.count(name)) << "unexpected " << name;
    }
    // a checkpoint made of the official list alone (every tensor reads one zero buffer)
    int64_t largest = 0;
    for (const auto& p : official) largest = std::max(largest, numel_of(p.shape));
    auto zeros = std::make_shared<std::vector<float>>(size_t(largest), 0.f);
    Checkpoint ck;
    ck.path = std::string("official-") + v.name;
    ck.format = "safetensors";
    for (const auto& p : official) {
      ck.tensors[p.name] = TensorData{DType::F32, p.shape, zeros->data(),
                                      std::shared_ptr<const void>(zeros, zeros->data())};
    }
    const ModelConfig cfg = detect_config(ck);
    EXPECT_EQ(cfg.swin.name, v.name);
    EXPECT_EQ(cfg.swin.embed_dim, v.C);
    EXPECT_EQ(cfg.swin.depths, v.depths);
    EXPECT_EQ(cfg.swin.heads, v.heads);
    EXPECT_EQ(cfg.swin.window, v.window);
    EXPECT_TRUE(cfg.decoder_bn);
    EXPECT_NO_THROW(validate_checkpoint(ck, cfg));
    // and the parameter list derived from the configuration is the official one, in order
    const auto specs = param_specs(cfg);
    ASSERT_EQ(specs.size(), official.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      ASSERT_EQ(specs[i].name, official[i].name) << "entry " << i;
      EXPECT_EQ(specs[i].shape, official[i].shape) << specs[i].name;
    }
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
                std::string::npos)
          << e.what();
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
                std::string::npos)
          << e.what();
    }
  }
  // crafted shapes that would crash or exhaust memory later are refused at detection
  for (const std::vector<int64_t>& bad :
       {std::vector<int64_t>{96, 3, 0, 0}, {96, 3, 8, 8}, {0, 3, 4, 4}, {100, 3, 4, 4}}) {
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
  // the 16-bit tensors read back as exactly the nearest half / bfloat16 of each value
  auto y = ck.tensors.at("y").to_f32();
  auto z = ck.tensors.at("z").to_f32();
  ASSERT_EQ(y.size(), a.size());
  ASSERT_EQ(z.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(double(y[i]), test::ref_f16_value(test::ref_f32_to_f16(a[i]))) << a[i];
    EXPECT_EQ(z[i], test::ref_bf16_value(test::ref_f32_to_bf16(a[i]))) << a[i];
  }
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
  expect_error(write("short.safetensors", bytes.substr(0, 5)), "neither a safetensors file");
  std::string corrupt = bytes;
  corrupt[8] = '#';  // the header's opening brace
  expect_error(write("corrupt.safetensors", corrupt), "corrupt");
  std::string huge = bytes;
  huge[7] = 0x7f;
  expect_error(write("hdr.safetensors", huge), "header length");
  expect_error(write("empty.safetensors", ""), "empty");
  expect_error(dir + "/does-not-exist.safetensors", "does not exist");
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
      "huge.safetensors",
      R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0);
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

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
// The float next to f, away from zero (up) or towards it.
float next_float(float f, bool away) {
  return from_bits(bits_of(f) + (away ? 1 : -1));
}

bool is_quiet_f16_nan(uint16_t h) {
  return (h & 0x7c00) == 0x7c00 && (h & 0x0200);
}
bool is_quiet_bf16_nan(uint16_t h) {
  return (h & 0x7f80) == 0x7f80 && (h & 0x0040);
}

struct BitCase {
  float f;
  uint16_t bits;
  const char* what;
};

// Exact binary16 bit patterns, round to nearest, ties to even (values checked against Python's
// struct 'e' packing, which rounds half to even).
TEST(Half, F16ExactBitPatterns) {
  const float tie_lo = 1 + 0x1p-11f, tie_hi = 1 + 3 * 0x1p-11f;  // halfway 3c00|3c01, 3c01|3c02
  const BitCase cases[] = {
      {1.f, 0x3c00, "one"},
      {0.f, 0x0000, "zero"},
      {-0.f, 0x8000, "negative zero keeps its sign"},
      {tie_lo, 0x3c00, "tie rounds down to even"},
      {tie_hi, 0x3c02, "tie rounds up to even"},
      {-tie_lo, 0xbc00, "negative tie down to even"},
      {-tie_hi, 0xbc02, "negative tie up to even"},
      {next_float(tie_lo, true), 0x3c01, "just above a tie rounds up"},
      {next_float(tie_lo, false), 0x3c00, "just below a tie rounds down"},
      {next_float(tie_hi, false), 0x3c01, "just below an odd-even tie rounds down"},
      {next_float(tie_hi, true), 0x3c02, "just above an odd-even tie rounds up"},
      {2 - 0x1p-11f, 0x4000, "rounding carries into the exponent"},
      {0.7f, 0x399a, "0.7 rounds up (truncation gives 0x3999)"},
      {0.1f, 0x2e66, "0.1"},
      {1.f / 3, 0x3555, "1/3"},
      {3.14159f, 0x4248, "pi"},
      {0x1p-24f, 0x0001, "smallest subnormal"},
      {0x1p-25f, 0x0000, "half the smallest subnormal: tie to even (zero)"},
      {next_float(0x1p-25f, true), 0x0001, "just above half the smallest subnormal"},
      {3 * 0x1p-25f, 0x0002, "subnormal tie up to even"},
      {5 * 0x1p-25f, 0x0002, "subnormal tie down to even"},
      {7 * 0x1p-25f, 0x0004, "subnormal tie up to even (4)"},
      {-0x1p-25f, 0x8000, "negative underflow to -0"},
      {-3 * 0x1p-25f, 0x8002, "negative subnormal tie"},
      {1023 * 0x1p-24f, 0x03ff, "largest subnormal"},
      {1023.5f * 0x1p-24f, 0x0400, "tie between the largest subnormal and the smallest normal"},
      {0x1p-14f, 0x0400, "smallest normal"},
      {1e-10f, 0x0000, "far below the subnormals"},
      {from_bits(1), 0x0000, "float subnormal"},
      {65504.f, 0x7bff, "largest half"},
      {65488.f, 0x7bfe, "tie below the largest half, to even"},
      {next_float(65520.f, false), 0x7bff, "just below the overflow threshold"},
      {65520.f, 0x7c00, "tie with 2^16 overflows to inf (even)"},
      {1e6f, 0x7c00, "overflow to inf"},
      {-1e6f, 0xfc00, "overflow to -inf"},
      {3.4028235e38f, 0x7c00, "FLT_MAX to inf"},
      {INFINITY, 0x7c00, "inf"},
      {-INFINITY, 0xfc00, "-inf"},
  };
  for (const BitCase& c : cases) {
    EXPECT_EQ(f32_to_f16(c.f), c.bits) << c.what << " (" << c.f << ")";
    EXPECT_EQ(test::ref_f32_to_f16(c.f), c.bits) << "reference: " << c.what;
  }
  // NaN stays NaN, and quiet: a payload only in the low bits must not become inf
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7fa00000u}) {
    const uint16_t h = f32_to_f16(from_bits(nan));
    EXPECT_TRUE(is_quiet_f16_nan(h)) << std::hex << nan << " -> " << h;
  }
  // f16 -> f32 is exact
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x03ff), 1023 * 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x0400), 0x1p-14f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x7c00), INFINITY);
  EXPECT_EQ(f16_to_f32(0xfc00), -INFINITY);
  EXPECT_EQ(bits_of(f16_to_f32(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));  // a signalling half NaN is not inf
}

// Every half, every tie between neighbouring halves and the floats either side of it, and a
// million random floats: f32_to_f16 equals the independent reference bit for bit, and
// f16_to_f32 gives every half's exact value.
TEST(Half, F16EqualsAnIndependentRoundingEverywhere) {
  int64_t checked = 0;
  auto check = [&](float f) {
    const uint16_t got = f32_to_f16(f), want = test::ref_f32_to_f16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(is_quiet_f16_nan(got)) << std::hex << bits_of(f);
    } else {
      ASSERT_EQ(got, want) << std::hex << "float bits 0x" << bits_of(f) << " (" << f << ")";
    }
    ++checked;
  };
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const double v = test::ref_f16_value(uint16_t(h));
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(v)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      continue;
    }
    ASSERT_EQ(double(f), v) << std::hex << h;
    ASSERT_EQ(std::signbit(f), std::signbit(v)) << std::hex << h;
    check(f);
    if ((h & 0x7fff) < 0x7bff) {  // the tie with the next half away from zero, and its neighbours
      const float tie = float((v + test::ref_f16_value(uint16_t(h + 1))) / 2);
      ASSERT_EQ(double(tie), (v + test::ref_f16_value(uint16_t(h + 1))) / 2);  // exact in float
      check(tie);
      check(next_float(tie, true));
      check(next_float(tie, false));
    }
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 1000000; ++i) check(from_bits(uint32_t(rng())));
  std::printf("f32_to_f16 equal to the reference on %lld floats\n", (long long)checked);
}

// Exact bfloat16 bit patterns, round to nearest, ties to even.
TEST(Half, Bf16ExactBitPatterns) {
  const float tie_lo = 1 + 0x1p-8f, tie_hi = 1 + 3 * 0x1p-8f;  // halfway 3f80|3f81, 3f81|3f82
  const BitCase cases[] = {
      {1.f, 0x3f80, "one"},
      {0.f, 0x0000, "zero"},
      {-0.f, 0x8000, "negative zero keeps its sign"},
      {tie_lo, 0x3f80, "tie rounds down to even"},
      {tie_hi, 0x3f82, "tie rounds up to even"},
      {-tie_lo, 0xbf80, "negative tie down to even"},
      {-tie_hi, 0xbf82, "negative tie up to even"},
      {next_float(tie_lo, true), 0x3f81, "just above a tie rounds up"},
      {next_float(tie_lo, false), 0x3f80, "just below a tie rounds down"},
      {next_float(tie_hi, false), 0x3f81, "just below an odd-even tie rounds down"},
      {next_float(tie_hi, true), 0x3f82, "just above an odd-even tie rounds up"},
      {2 - 0x1p-8f, 0x4000, "rounding carries into the exponent"},
      {0.7f, 0x3f33, "0.7 (0x3f333333) rounds down"},
      {0.1f, 0x3dcd, "0.1 (0x3dcccccd) rounds up (truncation gives 0x3dcc)"},
      {from_bits(0x00008000), 0x0000, "subnormal tie to even (zero)"},
      {from_bits(0x00008001), 0x0001, "just above a subnormal tie"},
      {from_bits(0x00018000), 0x0002, "subnormal tie up to even"},
      {from_bits(0x00000001), 0x0000, "smallest float subnormal"},
      {from_bits(0x80008000), 0x8000, "negative subnormal tie to -0"},
      {from_bits(0x007fffff), 0x0080, "largest float subnormal rounds up to the smallest normal"},
      {from_bits(0x7f7f7fff), 0x7f7f, "below the tie under the overflow threshold"},
      {from_bits(0x7f7e8000), 0x7f7e, "tie near the top, down to even"},
      {from_bits(0x7f7f8000), 0x7f80, "tie with 2^128 overflows to inf (even)"},
      {3.4028235e38f, 0x7f80, "FLT_MAX to inf"},
      {-3.4028235e38f, 0xff80, "-FLT_MAX to -inf"},
      {INFINITY, 0x7f80, "inf"},
      {-INFINITY, 0xff80, "-inf"},
  };
  for (const BitCase& c : cases) {
    EXPECT_EQ(f32_to_bf16(c.f), c.bits) << c.what << " (" << c.f << ")";
    EXPECT_EQ(test::ref_f32_to_bf16(c.f), c.bits) << "reference: " << c.what;
  }
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f810000u}) {
    const uint16_t h = f32_to_bf16(from_bits(nan));
    EXPECT_TRUE(is_quiet_bf16_nan(h)) << std::hex << nan << " -> " << h;
  }
  // bf16 -> f32 is the top half of the float, exactly
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    ASSERT_EQ(bits_of(f), h << 16) << std::hex << h;
  }
}

TEST(Half, Bf16EqualsAnIndependentRoundingEverywhere) {
  std::mt19937 rng(6);
  int64_t checked = 0;
  auto check = [&](float f) {
    const uint16_t got = f32_to_bf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(is_quiet_bf16_nan(got)) << std::hex << bits_of(f);
    } else {
      ASSERT_EQ(got, test::ref_f32_to_bf16(f)) << std::hex << "float bits 0x" << bits_of(f);
    }
    ++checked;
  };
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every bf16, the tie above it and its neighbours
    const uint32_t u = h << 16;
    check(from_bits(u));
    if ((h & 0x7fff) < 0x7f80) {
      check(from_bits(u | 0x8000));
      check(from_bits(u | 0x8001));
      check(from_bits(u | 0x7fff));
    }
  }
  for (int i = 0; i < 1000000; ++i) check(from_bits(uint32_t(rng())));
  std::printf("f32_to_bf16 equal to the reference on %lld floats\n", (long long)checked);
}

}  // namespace
}  // namespace biref
