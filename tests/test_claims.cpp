// Claims the rest of the suite stated but never checked, each against a truth computed apart
// from the code under test: the suite's own comparison helper, a decoder without BatchNorm,
// forward passes on 16-bit weights, `biref segment --dump`'s values, `biref bench`'s GFLOP
// against an analytic count, `biref version`, and `--threads`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>
#include <opencv2/core/version.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "biref/biref.h"
#include "model/config.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "weights/synthetic.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// A folder of its own per test, removed afterwards.
struct TempDir : test::TempDir {
  TempDir() : test::TempDir("biref-claims") {}
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// ---- The comparison helper every golden, op and pipeline test relies on ----

TEST(TestUtil, MaxAbsDiffReportsANaNWhereverItIs) {
  const std::vector<float> base = {1.f, -2.f, 3.f, 4.f, 5.f};
  EXPECT_EQ(test::max_abs_diff(base, base), 0.0);
  for (size_t i : {size_t(0), size_t(2), base.size() - 1}) {  // first, middle, last
    std::vector<float> x = base;
    x[i] = kNaN;
    for (const double d :
         {test::max_abs_diff(x, base), test::max_abs_diff(base, x), test::max_abs_diff(x, x)}) {
      EXPECT_TRUE(std::isnan(d)) << "NaN at " << i << " gave " << d;
      EXPECT_FALSE(d <= 1e30) << "an EXPECT_LE would pass";
    }
    // a larger finite difference after the NaN does not hide it either
    std::vector<float> y = base;
    y.back() += 100.f;
    if (i + 1 < base.size()) {
      EXPECT_TRUE(std::isnan(test::max_abs_diff(x, y))) << i;
    }
  }
  // infinities: against a finite value (or the opposite infinity) +inf, equal ones 0
  for (size_t i : {size_t(0), size_t(2), base.size() - 1}) {
    std::vector<float> x = base, y = base;
    x[i] = kInf;
    EXPECT_EQ(test::max_abs_diff(x, base), INFINITY) << i;
    EXPECT_EQ(test::max_abs_diff(base, x), INFINITY) << i;
    y[i] = kInf;
    EXPECT_EQ(test::max_abs_diff(x, y), 0.0) << i;
    y[i] = -kInf;
    EXPECT_EQ(test::max_abs_diff(x, y), INFINITY) << i;
  }
  // the largest difference wins wherever it is, whatever follows it
  EXPECT_EQ(test::max_abs_diff(std::vector<float>{0, 5, 0}, std::vector<float>{0, 0, 1}), 5.0);
  EXPECT_EQ(test::max_abs_diff(std::vector<float>{-3, 0}, std::vector<float>{0.5f, 0}), 3.5);
  // empty arrays are equal; arrays or tensors of different sizes never are
  EXPECT_EQ(test::max_abs_diff(std::vector<float>{}, std::vector<float>{}), 0.0);
  EXPECT_EQ(test::max_abs_diff(base.data(), base.data(), 0), 0.0);
  EXPECT_TRUE(std::isnan(test::max_abs_diff(std::vector<float>{1}, std::vector<float>{1, 2})));
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  EXPECT_TRUE(std::isnan(test::max_abs_diff(a, b)));
  EXPECT_EQ(test::max_abs_diff(a, Tensor::zeros({2, 3})), 0.0);
  Tensor c = Tensor::zeros({2, 3});
  c.data[1] = kNaN;
  EXPECT_TRUE(std::isnan(test::max_abs_diff(a, c)));
  // keep_max: a NaN, once seen, stays
  double m = 0;
  test::keep_max(m, 1.0);
  test::keep_max(m, std::nan(""));
  test::keep_max(m, 2.0);
  EXPECT_TRUE(std::isnan(m));
}

// ---- A decoder without BatchNorm ----

// Every tensor of the synthetic checkpoint, F32, into a .safetensors file.
void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  std::vector<std::pair<std::string, TensorData>> ts(ck.tensors.begin(), ck.tensors.end());
  save_safetensors(path, ts, {});
}

// The 18 named intermediates and the returned logits of one forward pass.
std::map<std::string, std::vector<float>> forward_all(Model& model, const HostTensor& input) {
  std::map<std::string, std::vector<float>> out;
  model.set_dump([&](const std::string& name, const HostTensor& t) { out[name] = t.data; });
  out["(returned)"] = model.forward(input).data;
  model.set_dump(nullptr);
  return out;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) test::keep_max(m, std::fabs(double(x)));
  return m;
}

// The official model trained with batch size 1 has no decoder BatchNorm (nn.Identity in its
// place); config detection supports it. Its parameter list is the recorded one without every
// BatchNorm (the prefixes that have a running_mean; Swin has LayerNorms only). The CPU backend
// must agree with the reference backend on it, and it must equal the same model with BatchNorm
// layers that are the identity (the BatchNorm path is the one the goldens check).
TEST(Claims, DecoderWithoutBatchNormCpuMatchesReference) {
  TempDir dir;
  ModelConfig cfg;
  cfg.swin = swin_preset("swin_v1_t");
  cfg.decoder_bn = false;
  const Checkpoint ck = synthetic_checkpoint(cfg, 0);

  // its names and shapes: the recorded official list without the BatchNorms
  std::set<std::string> bn;
  const auto official = test::recorded_params("swin_v1_t");
  for (const auto& p : official)
    if (ends_with(p.name, ".running_mean")) bn.insert(p.name.substr(0, p.name.rfind('.')));
  EXPECT_EQ(bn.size(), 5u * 8 + 3);  // 5 BasicDecBlks of 8 BatchNorms, 3 gradient gates
  std::map<std::string, std::vector<int64_t>> want;
  for (const auto& p : official)
    if (!bn.count(p.name.substr(0, p.name.rfind('.')))) want[p.name] = p.shape;
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& [name, t] : ck.tensors) got[name] = t.shape;
  EXPECT_EQ(got, want);

  const std::string file = dir / "nobn.safetensors";
  save_checkpoint(file, ck);
  EXPECT_FALSE(detect_config(load_checkpoint(file)).decoder_bn);

  // the same weights with identity BatchNorms: mean 0, var 1, weight sqrt(1 + eps), bias 0
  Checkpoint with_bn = ck;
  std::vector<std::shared_ptr<std::vector<float>>> keep;
  auto add = [&](const std::string& name, int64_t c, float v) {
    auto buf = std::make_shared<std::vector<float>>(size_t(c), v);
    keep.push_back(buf);
    with_bn.tensors[name] =
        TensorData{DType::F32, {c}, buf->data(), std::shared_ptr<const void>(buf, buf->data())};
  };
  std::map<std::string, int64_t> channels;
  for (const auto& q : official) channels[q.name] = q.shape.empty() ? 0 : q.shape[0];
  for (const std::string& p : bn) {
    const int64_t c = channels[p + ".weight"];
    ASSERT_GT(c, 0) << p;
    add(p + ".weight", c, float(std::sqrt(1.0 + 1e-5)));
    add(p + ".bias", c, 0.f);
    add(p + ".running_mean", c, 0.f);
    add(p + ".running_var", c, 1.f);
  }
  const std::string file_bn = dir / "identity-bn.safetensors";
  save_checkpoint(file_bn, with_bn);
  EXPECT_TRUE(detect_config(load_checkpoint(file_bn)).decoder_bn);

  const HostTensor input{{1, 3, 64, 96}, test::random_vector(3 * 64 * 96, 11, -2.f, 2.f)};
  LoadOptions ref_opts;
  ref_opts.device = Device::Reference;
  std::map<std::string, std::vector<float>> cpu, ref, idbn;
  {
    auto m = Model::load(file);
    EXPECT_NE(m->info().description.find("no decoder BatchNorm"), std::string::npos)
        << m->info().description;
    cpu = forward_all(*m, input);
  }
  {
    auto m = Model::load(file, ref_opts);
    ref = forward_all(*m, input);
  }
  {
    auto m = Model::load(file_bn);
    idbn = forward_all(*m, input);
  }
  ASSERT_EQ(cpu.size(), 19u);
  double worst = 0, worst_rel = 0, worst_bn = 0;
  std::printf("decoder without BatchNorm, swin_v1_t 96x64, CPU vs reference backend:\n");
  for (const auto& [name, r] : ref) {
    ASSERT_TRUE(cpu.count(name)) << name;
    const double err = test::max_abs_diff(cpu.at(name), r);
    const double scale = std::max(1.0, max_abs(r));
    const double err_bn = test::max_abs_diff(cpu.at(name), idbn.at(name));
    std::printf("  %-12s max abs err %.3e (values up to %.3g; vs identity-BN model %.3e)\n",
                name.c_str(), err, max_abs(r), err_bn);
    test::keep_max(worst, err);
    test::keep_max(worst_rel, err / scale);
    test::keep_max(worst_bn, err_bn / scale);
    // float32 against double: the golden tests' level (~7e-6 on values up to ~5)
    EXPECT_LE(err / scale, 2e-5) << name;
    EXPECT_LE(err_bn / scale, 2e-5) << name;
  }
  std::printf("  worst: %.3e abs, %.3e relative to max(1, |values|); identity-BN model %.3e\n",
              worst, worst_rel, worst_bn);
  // the output is not trivially constant
  EXPECT_GT(max_abs(ref.at("out")), 1e-3);
}

// ---- Forward passes on 16-bit weights ----

// A checkpoint stored in F16 or BF16 runs in FP32 on the widened values: it must give what the
// FP32 checkpoint holding exactly those widened values gives.
TEST(Claims, ForwardOnF16AndBf16WeightsEqualsTheWidenedF32Model) {
  TempDir dir;
  const HostTensor input{{1, 3, 64, 96}, test::random_vector(3 * 64 * 96, 12, -2.f, 2.f)};
  std::vector<float> original;
  {
    auto m = Model::load("synthetic:swin_v1_t");
    original = m->forward(input).data;
  }
  for (const std::string dtype : {"f16", "bf16"}) {
    SCOPED_TRACE(dtype);
    const std::string half = dir / (dtype + ".safetensors"),
                      wide = dir / (dtype + "-wide.safetensors");
    const test::CliResult c =
        test::run_cli("convert --synthetic swin_v1_t " + half + " --dtype " + dtype);
    ASSERT_EQ(c.code, 0) << c.err;
    int64_t changed = 0, total = 0;
    {
      const Checkpoint h = load_checkpoint(half);
      const Checkpoint f32 = synthetic_checkpoint_from_spec("synthetic:swin_v1_t");
      std::vector<std::pair<std::string, TensorData>> ts;
      std::vector<std::shared_ptr<std::vector<float>>> keep;
      for (const auto& [name, t] : h.tensors) {
        ASSERT_EQ(t.dtype, dtype == "f16" ? DType::F16 : DType::BF16) << name;
        const auto* bits = static_cast<const uint16_t*>(t.data);
        const auto src = f32.tensors.at(name).to_f32();
        auto v = std::make_shared<std::vector<float>>(size_t(t.numel()));
        for (int64_t i = 0; i < t.numel(); ++i) {
          (*v)[size_t(i)] =
              dtype == "f16" ? float(test::ref_f16_value(bits[i])) : test::ref_bf16_value(bits[i]);
          changed += (*v)[size_t(i)] != src[size_t(i)];
        }
        total += t.numel();
        keep.push_back(v);
        ts.push_back({name, TensorData{DType::F32, t.shape, v->data(),
                                       std::shared_ptr<const void>(v, v->data())}});
      }
      save_safetensors(wide, ts, {});
    }
    std::vector<float> out16, out32;
    {
      auto m = Model::load(half);
      out16 = m->forward(input).data;
    }
    {
      auto m = Model::load(wide);
      out32 = m->forward(input).data;
    }
    const double err = test::max_abs_diff(out16, out32);
    const double vs_original = test::max_abs_diff(out16, original);
    std::printf(
        "%s weights (%lld of %lld values rounded): logits vs the widened F32 model max abs "
        "err %.3e; vs the unrounded F32 model %.3e (logits up to %.3g)\n",
        dtype.c_str(), (long long)changed, (long long)total, err, vs_original, max_abs(out32));
    EXPECT_GT(changed, total / 2);  // the rounding is real
    EXPECT_LE(err, 1e-5);
    // and the comparison can see a difference of this kind: the rounding itself shows
    EXPECT_GT(vs_original, 10 * err + 1e-6);
  }
}

// ---- `biref segment --dump` ----

// The dumped `out` is the model's logits: for two pipeline cases it equals the official logits
// recorded in golden/pipeline/<name>.safetensors (swin_v1_t, seed 0, 256x256).
TEST(Claims, SegmentDumpOutIsTheRecordedLogits) {
  TempDir dir;
  std::ifstream f(test::data_path("pipeline/cases.json"));
  const auto cases = nlohmann::json::parse(f);
  const std::string model = "synthetic:" + cases["backbone"].get<std::string>() + ":" +
                            std::to_string(cases["seed"].get<int>());
  double worst = 0;
  int n = 0;
  for (auto& [name, c] : cases["cases"].items()) {
    // a JPEG and a gray image (test_pipeline checks the logits of all four in-process)
    if (name != "astronaut" && name != "camera-gray") continue;
    const int W = c["model_size_wxh"][0], H = c["model_size_wxh"][1];
    const std::string dump = dir / (name + ".dump.safetensors");
    const test::CliResult r =
        test::run_cli("segment " + test::data_path("pipeline/" + c["image"].get<std::string>()) +
                      " -o " + (dir / (name + ".png")) + " --model " + model + " --size " +
                      std::to_string(W) + "x" + std::to_string(H) + " -q --dump " + dump);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "");  // -q
    const Checkpoint got = load_checkpoint(dump);
    const Checkpoint want =
        load_checkpoint(test::data_path("pipeline/" + c["tensors"].get<std::string>()));
    EXPECT_EQ(got.tensors.size(), 18u);
    EXPECT_EQ(got.metadata.at("size"), std::to_string(W) + "x" + std::to_string(H));
    const TensorData& out = got.tensors.at("out");
    const TensorData& logits = want.tensors.at("logits");
    ASSERT_EQ(out.dtype, DType::F32);
    ASSERT_EQ(out.shape, (std::vector<int64_t>{1, 1, H, W}));
    ASSERT_EQ(out.shape, logits.shape);
    const double err = test::max_abs_diff(out.to_f32(), logits.to_f32());
    std::printf(
        "segment --dump %-12s out vs recorded logits: max abs err %.3e (logits up to %.3g)\n",
        name.c_str(), err, max_abs(logits.to_f32()));
    test::keep_max(worst, err);
    EXPECT_LE(err, 2e-4) << name;  // golden/README.md's contract
    EXPECT_LE(err, 2e-5) << name;  // the measured level (test_pipeline's logits error)
    ++n;
  }
  EXPECT_EQ(n, 2);
  std::printf("segment --dump: worst %.3e over %d images\n", worst, n);
}

// ---- `biref bench` GFLOP against an analytic count ----

// FLOPs (2 per multiply-accumulate) of one forward pass of the official model, counted from the
// recorded parameter list (golden/param_names) and the resolutions of ../shared/design/MODEL.md,
// not from the engine: every weight of rank >= 2 costs its element count per output position
// (a convolution's and a linear's MACs are weight elements x positions), at
//   - Swin, on the input and on the half-size input: patch_embed at H/4 x W/4; attn.qkv and
//     attn.proj on the window-padded token grid of their stage; mlp.fc1/fc2 on the stage's
//     tokens; downsample.reduction on the next stage's grid; plus window attention's two
//     matmuls, 2 x ws² x dim MACs per padded token;
//   - squeeze_module, decoder_block4, ipt_blk5, gdt_convs(_attn)_4: the x4 grid H/32; block3,
//     ipt_blk4, lateral_block4, gates 3: H/16; block2, ipt_blk3, lateral_block3, gates 2: H/8;
//     block1, ipt_blk2, lateral_block2: H/4; ipt_blk1: H; global_avg_pool.1 once;
//     conv_ms_spvn_* and gdt_convs_pred_* not at all (training only);
//   - the head as biref runs it (README: "split so that it runs before the final upsampling"):
//     conv_out1's decoder part at H/4, its ipt_blk1 part composed with ipt_blk1.conv_out into
//     one conv to 1 channel at H x W. `official_head` counts conv_out1 and ipt_blk1.conv_out at
//     H x W instead, as the PyTorch model runs them.
double analytic_flops(const std::string& backbone, int64_t H, int64_t W,
                      bool official_head = false) {
  const auto params = test::recorded_params(backbone);
  auto find = [&](const std::string& name) -> const std::vector<int64_t>& {
    for (const auto& p : params)
      if (p.name == name) return p.shape;
    throw std::runtime_error("no " + name);
  };
  auto numel = [](const std::vector<int64_t>& s) {
    double n = 1;
    for (int64_t d : s) n *= double(d);
    return n;
  };
  const int64_t rows = find("bb.layers.0.blocks.0.attn.relative_position_bias_table")[0];
  const int64_t ws = (int64_t(std::lround(std::sqrt(double(rows)))) + 1) / 2;  // rows = (2w-1)²
  EXPECT_EQ((2 * ws - 1) * (2 * ws - 1), rows);
  auto padded = [&](int64_t v) { return (v + ws - 1) / ws * ws; };

  double macs = 0;
  const std::regex block(
      R"(bb\.layers\.(\d)\.blocks\.\d+\.(attn|mlp)\.(qkv|proj|fc1|fc2)\.weight)");
  const std::regex down(R"(bb\.layers\.(\d)\.downsample\.reduction\.weight)");
  for (const auto& [h_in, w_in] : {std::pair{H, W}, std::pair{H / 2, W / 2}}) {
    int64_t gh[4], gw[4];  // token grid of each stage
    gh[0] = h_in / 4, gw[0] = w_in / 4;
    for (int i = 1; i < 4; ++i) gh[i] = (gh[i - 1] + 1) / 2, gw[i] = (gw[i - 1] + 1) / 2;
    for (const auto& p : params) {
      if (p.name.rfind("bb.", 0) != 0 || p.shape.size() < 2 ||
          ends_with(p.name, "relative_position_bias_table"))
        continue;
      std::smatch m;
      if (p.name == "bb.patch_embed.proj.weight") {
        macs += numel(p.shape) * double(gh[0] * gw[0]);
      } else if (std::regex_match(p.name, m, block)) {
        const int i = std::stoi(m[1]);
        const bool attn = m[2] == "attn";
        const double tokens = attn ? double(padded(gh[i]) * padded(gw[i])) : double(gh[i] * gw[i]);
        macs += numel(p.shape) * tokens;
        if (m[3] == "qkv") macs += 2.0 * tokens * double(ws * ws) * double(p.shape[1]);
      } else if (std::regex_match(p.name, m, down)) {
        const int i = std::stoi(m[1]);
        macs += numel(p.shape) * double(gh[i + 1] * gw[i + 1]);
      } else {
        ADD_FAILURE() << "no rule for " << p.name;
      }
    }
  }
  const std::vector<std::pair<std::string, int64_t>> stride = {
      {"squeeze_module.0.", 32},         {"decoder.decoder_block4.", 32},
      {"decoder.ipt_blk5.", 32},         {"decoder.gdt_convs_4.", 32},
      {"decoder.gdt_convs_attn_4.", 32}, {"decoder.decoder_block3.", 16},
      {"decoder.ipt_blk4.", 16},         {"decoder.lateral_block4.", 16},
      {"decoder.gdt_convs_3.", 16},      {"decoder.gdt_convs_attn_3.", 16},
      {"decoder.decoder_block2.", 8},    {"decoder.ipt_blk3.", 8},
      {"decoder.lateral_block3.", 8},    {"decoder.gdt_convs_2.", 8},
      {"decoder.gdt_convs_attn_2.", 8},  {"decoder.decoder_block1.", 4},
      {"decoder.ipt_blk2.", 4},          {"decoder.lateral_block2.", 4},
      {"decoder.ipt_blk1.", 1}};
  for (const auto& p : params) {
    if (p.name.rfind("bb.", 0) == 0 || p.shape.size() < 2) continue;
    if (p.name.find("conv_ms_spvn_") != std::string::npos ||
        p.name.find("gdt_convs_pred_") != std::string::npos)
      continue;
    if (p.name == "decoder.conv_out1.0.weight" || p.name == "decoder.ipt_blk1.conv_out.weight")
      continue;
    int64_t s = 0;
    for (const auto& [prefix, v] : stride)
      if (p.name.rfind(prefix, 0) == 0) s = v;
    if (s == 0) {
      ADD_FAILURE() << "no rule for " << p.name;
      continue;
    }
    const double positions =
        p.name.find("global_avg_pool.1.") != std::string::npos ? 1.0 : double((H / s) * (W / s));
    macs += numel(p.shape) * positions;
  }
  const auto& head = find("decoder.conv_out1.0.weight");        // [1, dec1 + ipt1, 1, 1]
  const auto& ipt1 = find("decoder.ipt_blk1.conv_out.weight");  // [ipt1, 64, 3, 3]
  if (official_head) {
    macs += (numel(head) + numel(ipt1)) * double(H * W);
  } else {
    const int64_t dec1 = head[1] - ipt1[0];
    macs += double(dec1) * double((H / 4) * (W / 4)) +
            double(ipt1[1] * ipt1[2] * ipt1[3]) * double(H * W);
  }
  return 2 * macs;
}

nlohmann::json bench_json(const std::string& args) {
  const test::CliResult r = test::run_cli("bench " + args + " --json");
  EXPECT_EQ(r.code, 0) << r.all();
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "bench --json printed no JSON: " << e.what() << "\n" << r.out;
    return {};
  }
}

TEST(Claims, BenchGflopIsTheAnalyticCount) {
  // README: swin_v1_t 42.0 GFLOP at 256², 613.9 at 1024²
  const double t256 = analytic_flops("swin_v1_t", 256, 256) / 1e9;
  const double t1024 = analytic_flops("swin_v1_t", 1024, 1024) / 1e9;
  std::printf(
      "analytic GFLOP, swin_v1_t: 256x256 %.4f (PyTorch's head: %.4f), 1024x1024 %.4f "
      "(%.4f); swin_v1_l 256x256 %.4f\n",
      t256, analytic_flops("swin_v1_t", 256, 256, true) / 1e9, t1024,
      analytic_flops("swin_v1_t", 1024, 1024, true) / 1e9,
      analytic_flops("swin_v1_l", 256, 256) / 1e9);
  // bench reports the analytic count, at a square size, at a non-square one that pads the
  // windows of every stage, and swin_v1_l (window 12: other padding, other widths)
  struct Case {
    const char* backbone;
    int W, H;
  };
  for (const Case& c :
       {Case{"swin_v1_t", 256, 256}, Case{"swin_v1_t", 320, 192}, Case{"swin_v1_l", 256, 256}}) {
    const int W = c.W, H = c.H;
    const auto j = bench_json(std::string("--model synthetic:") + c.backbone + " --size " +
                              std::to_string(W) + "x" + std::to_string(H) + " --runs 1 --warmup 0");
    ASSERT_TRUE(j.contains("gflops"));
    const double want = analytic_flops(c.backbone, H, W) / 1e9;
    const double got = j["gflops"].get<double>();
    std::printf("bench %s %dx%d: %.6f GFLOP, analytic %.6f\n", c.backbone, W, H, got, want);
    EXPECT_NEAR(got, want, want * 1e-9) << W << "x" << H;
    EXPECT_NEAR(j["gflops_per_s"].get<double>(), got / (j["median_ms"].get<double>() / 1e3),
                got * 1e-6 / (j["median_ms"].get<double>() / 1e3));
  }
  EXPECT_NEAR(t256, 42.0, 0.05) << "README's swin_v1_t GFLOP at 256x256";
  EXPECT_NEAR(t1024, 613.9, 0.05) << "README's swin_v1_t GFLOP at 1024x1024";
}

// ---- `biref version` ----

std::string project_version() {
  std::ifstream f(std::string(BIREF_TEST_DATA) + "/../../CMakeLists.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  std::smatch m;
  const std::string text = ss.str();
  if (!std::regex_search(text, m, std::regex(R"(project\(biref\s+VERSION\s+([0-9.]+))"))) return "";
  return m[1];
}

TEST(Claims, VersionPrintsTheVersionBackendsAndLibraries) {
  const std::string version = project_version();
  ASSERT_FALSE(version.empty()) << "no version in CMakeLists.txt";
  const test::CliResult r = test::run_cli("version");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::printf("biref version:\n%s", r.out.c_str());
  EXPECT_EQ(r.out.rfind("biref " + version + "\n", 0), 0u) << r.out;
  const dnnl_version_t* v = dnnl_version();
  const std::string onednn = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) +
                             "." + std::to_string(v->patch);
  EXPECT_NE(r.out.find("backends: cpu"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(onednn), std::string::npos) << onednn << "\n" << r.out;
  EXPECT_NE(r.out.find(std::string("OpenCV ") + CV_VERSION), std::string::npos) << r.out;
  const test::CliResult flag = test::run_cli("--version");
  EXPECT_EQ(flag.code, 0);
  EXPECT_EQ(flag.out, "biref " + version + "\n");
}

// ---- --threads ----

TEST(Claims, BenchThreadsFlagSetsTheThreadCount) {
  for (int t : {1, 2}) {
    const auto j =
        bench_json("--model synthetic:swin_v1_t --size 64x64 --runs 1 --warmup 0 --threads " +
                   std::to_string(t));
    ASSERT_TRUE(j.contains("threads"));
    EXPECT_EQ(j["threads"].get<std::string>(),
              "fixed: " + std::to_string(t) + " (LoadOptions::threads)");
    EXPECT_EQ(j["threads_per_run"], nlohmann::json::array({t}));
  }
  // the flag wins over OMP_NUM_THREADS
  const test::CliResult r = test::run_cli(
      "bench --model synthetic:swin_v1_t --size 64x64 --runs 1 --warmup 0 --threads 1 --json",
      "OMP_NUM_THREADS=2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["threads_per_run"], nlohmann::json::array({1}));
  // out of range: an error while running, one line
  const test::CliResult bad =
      test::run_cli("bench --model synthetic:swin_v1_t --size 64x64 --threads 100000");
  EXPECT_EQ(bad.code, 1) << bad.err;
  EXPECT_EQ(bad.err.rfind("biref bench: error: ", 0), 0u) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  EXPECT_NE(bad.err.find("out of range"), std::string::npos) << bad.err;
}

// --compare-precision: both precisions' runs alternated in one process. Each pair's speed-up is
// its FP32 time over its BF16 time, and the reported median is theirs; bad combinations and a
// CPU without AVX512_BF16 are one-line errors.
TEST(Claims, BenchComparePrecisionAlternatesRuns) {
  const std::string base = "--model synthetic:swin_v1_t --size 64x64 --threads 1 --compare-precision";
  if (cpu_isa_supported() < CpuIsa::avx512_bf16) {
    const test::CliResult r = test::run_cli("bench " + base);
    EXPECT_EQ(r.code, 1) << r.all();
    EXPECT_NE(r.err.find("AVX512_BF16"), std::string::npos) << r.err;
    GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  }
  const auto j = bench_json(base + " --runs 3 --warmup 1");
  ASSERT_TRUE(j.contains("fp32") && j.contains("bf16") && j.contains("speedup_per_pair")) << j;
  const auto f = j["fp32"]["runs_ms"].get<std::vector<double>>(),
             b = j["bf16"]["runs_ms"].get<std::vector<double>>(),
             s = j["speedup_per_pair"].get<std::vector<double>>();
  ASSERT_EQ(f.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  ASSERT_EQ(s.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(s[i], f[i] / b[i], 1e-9) << "pair " << i;
  std::vector<double> sorted = s;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_DOUBLE_EQ(j["speedup_median"].get<double>(), sorted[1]);
  EXPECT_DOUBLE_EQ(j["fp32"]["min_ms"].get<double>(), *std::min_element(f.begin(), f.end()));
  EXPECT_EQ(j["threads"].get<std::string>(), "fixed: 1 (LoadOptions::threads)");
  EXPECT_EQ(j["fp32"]["threads_per_run"], nlohmann::json::array({1, 1, 1}));
  EXPECT_EQ(j["bf16"]["threads_per_run"], nlohmann::json::array({1, 1, 1}));
  EXPECT_EQ(j["pairs_with_unequal_threads"].get<int>(), 0);
  // --precision names one precision: a usage error beside the comparison of both
  const test::CliResult both = test::run_cli("bench " + base + " --precision bf16");
  EXPECT_EQ(both.code, 2) << both.all();
  EXPECT_NE(both.err.find("--precision"), std::string::npos) << both.err;
  for (const char* other : {"--profile", "--reference", "--procs 2", "--sizes 64x64"}) {
    const test::CliResult r = test::run_cli("bench " + base + " " + other);
    EXPECT_EQ(r.code, 1) << other << ": " << r.all();
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("--compare-precision does not go with"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace biref
