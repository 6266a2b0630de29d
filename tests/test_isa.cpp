// The run-time choice of the CPU kernels' instruction set (biref/isa.h, src/ops/cpu/dispatch.cpp):
// BIREF_ISA's parsing and bounds, the per-level tables, and the CLI's report. The kernels
// themselves are tested at every level in test_ops.cpp, the whole model in test_golden.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "biref/biref.h"
#include "biref/isa.h"
#include "ops/cpu/kernels.h"
#include "test_util.h"

namespace biref {
namespace {

TEST(Isa, NamesRoundTrip) {
  for (CpuIsa i : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512_bf16}) {
    ASSERT_TRUE(parse_cpu_isa(cpu_isa_name(i)).has_value());
    EXPECT_EQ(*parse_cpu_isa(cpu_isa_name(i)), i);
  }
  EXPECT_FALSE(parse_cpu_isa("AVX2").has_value());
  EXPECT_FALSE(parse_cpu_isa("").has_value());
}

TEST(Isa, EnvironmentSelectsALowerLevelOnly) {
  EXPECT_EQ(select_cpu_isa(nullptr, CpuIsa::avx512), CpuIsa::avx512);
  EXPECT_EQ(select_cpu_isa("", CpuIsa::avx2), CpuIsa::avx2);
  EXPECT_EQ(select_cpu_isa("generic", CpuIsa::avx512_bf16), CpuIsa::generic);
  EXPECT_EQ(select_cpu_isa("avx512", CpuIsa::avx512), CpuIsa::avx512);
  try {
    select_cpu_isa("avx512_bf16", CpuIsa::avx2);
    ADD_FAILURE() << "a level above the CPU's was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("BIREF_ISA='avx512_bf16' is above what this CPU "
                                         "supports (avx2)"),
              std::string::npos)
        << e.what();
  }
  try {
    select_cpu_isa("sse9", CpuIsa::avx512);
    ADD_FAILURE() << "an unknown level was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("BIREF_ISA='sse9'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("generic, avx2, avx512 or avx512_bf16"),
              std::string::npos);
  }
}

TEST(Isa, EveryLevelHasACompleteTable) {
  const std::pair<CpuIsa, CpuIsa> expect[] = {{CpuIsa::generic, CpuIsa::generic},
                                              {CpuIsa::avx2, CpuIsa::avx2},
                                              {CpuIsa::avx512, CpuIsa::avx512},
                                              {CpuIsa::avx512_bf16, CpuIsa::avx512}};
  for (auto [asked, got] : expect) {
    const cpu::Kernels& k = cpu::kernels(asked);
    EXPECT_EQ(k.isa, got) << cpu_isa_name(asked);
#define BIREF_KERNEL(name) EXPECT_NE(k.name, nullptr) << cpu_isa_name(asked) << " " #name;
#include "ops/cpu/kernel_names.h"
#undef BIREF_KERNEL
  }
  // the tables are distinct code, not one table three times
  EXPECT_NE(cpu::kernels(CpuIsa::generic).layer_norm, cpu::kernels(CpuIsa::avx2).layer_norm);
  EXPECT_NE(cpu::kernels(CpuIsa::avx2).layer_norm, cpu::kernels(CpuIsa::avx512).layer_norm);
}

TEST(Isa, ALevelAboveTheCpuIsRefused) {
  if (cpu_isa_supported() == CpuIsa::avx512_bf16) GTEST_SKIP() << "this CPU has every level";
  LoadOptions o;
  o.isa = CpuIsa::avx512_bf16;
  EXPECT_THROW(Model::load("synthetic:swin_v1_t", o), Error);
}

TEST(Isa, CliReportsAndHonoursTheForcedLevel) {
  const test::CliResult v = test::run_cli("version");
  ASSERT_EQ(v.code, 0) << v.all();
  EXPECT_NE(v.out.find(std::string("CPU kernels: ") + cpu_isa_name(cpu_isa_supported()) +
                       " (the best this CPU supports)"),
            std::string::npos)
      << v.out;
  if (cpu_isa_supported() < CpuIsa::avx2) GTEST_SKIP() << "no AVX2 to force";
  const test::CliResult f = test::run_cli("version", "BIREF_ISA=avx2");
  ASSERT_EQ(f.code, 0) << f.all();
  EXPECT_NE(f.out.find(std::string("CPU kernels: avx2 (BIREF_ISA; this CPU: ") +
                       cpu_isa_name(cpu_isa_supported()) + ")"),
            std::string::npos)
      << f.out;
  EXPECT_NE(f.out.find("oneDNN: avx2"), std::string::npos) << f.out;  // capped with it
  const test::CliResult b = test::run_cli(
      "bench -m synthetic:swin_v1_t -s 64x64 -n 1 --warmup 0 --json", "BIREF_ISA=avx2");
  ASSERT_EQ(b.code, 0) << b.all();
  EXPECT_EQ(nlohmann::json::parse(b.out).at("isa"), "avx2");
  // bf16 needs the AVX512_BF16 level: below it, a clear refusal, before any output
  const test::CliResult nobf = test::run_cli(
      "bench -m synthetic:swin_v1_t -s 64x64 -n 1 --precision bf16", "BIREF_ISA=avx2");
  EXPECT_NE(nobf.code, 0);
  EXPECT_NE(nobf.err.find("precision bf16 needs a CPU with AVX512_BF16; the kernels here are avx2"),
            std::string::npos)
      << nobf.all();
  const test::CliResult bad =
      test::run_cli("bench -m synthetic:swin_v1_t -s 64x64 -n 1", "BIREF_ISA=sse9");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("BIREF_ISA='sse9'"), std::string::npos) << bad.all();
}

// The binary on emulated CPUs without AVX-512 (Haswell: AVX2) and without AVX at all (Nehalem),
// under QEMU's user-mode emulator (Debian's qemu-user; skipped where it is not installed): it
// must start, choose the level the emulated CPU has (oneDNN too), and segment an image as the
// same level forced natively does. OpenCV dispatches its own resize per CPU as well, so the
// masks may differ by rounding; a wrong kernel, or an instruction the CPU lacks (SIGILL), would
// not pass.
TEST(Isa, RunsOnEmulatedCpusWithoutAvx512) {
  if (std::system("command -v qemu-x86_64 >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "qemu-x86_64 (package qemu-user) is not installed";
  const std::string image = test::data_path("pipeline/astronaut.jpg");
  const test::TempDir dir("biref-isa");
  for (auto [cpu, level, onednn] :
       {std::tuple{"Haswell", "avx2", "avx2"}, std::tuple{"Nehalem", "generic", "sse41"}}) {
    SCOPED_TRACE(cpu);
    const std::string qemu = std::string("qemu-x86_64 -cpu ") + cpu + " " + BIREF_CLI;
    const std::string v = dir / (std::string("version-") + level + ".txt");
    ASSERT_EQ(std::system((qemu + " version >" + v + " 2>/dev/null").c_str()), 0);
    const std::string version = test::read_file(v);
    EXPECT_NE(version.find(std::string("CPU kernels: ") + level +
                           " (the best this CPU supports); "
                           "oneDNN: " +
                           onednn),
              std::string::npos)
        << version;
    const std::string args = " segment -m synthetic:swin_v1_t -s 64x64 -t 2 -q -o ";
    const std::string emulated = dir / (std::string("emulated-") + level + ".png"),
                      native = dir / (std::string("native-") + level + ".png");
    ASSERT_EQ(std::system((qemu + args + emulated + " " + image + " 2>/dev/null").c_str()), 0);
    const test::CliResult r =
        test::run_cli(args.substr(1) + native + " " + image, std::string("BIREF_ISA=") + level);
    ASSERT_EQ(r.code, 0) << r.all();
    const cv::Mat a = cv::imread(emulated, cv::IMREAD_UNCHANGED),
                  b = cv::imread(native, cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(a.empty());
    ASSERT_TRUE(a.size() == b.size() && a.type() == CV_8UC1 && b.type() == CV_8UC1);
    const test::ByteDiff d = test::byte_diff(a.data, b.data, a.total());
    std::printf("%s (%s): emulated vs native mask: max difference %d, %lld pixels differ\n", cpu,
                level, d.max, (long long)d.count);
    EXPECT_LE(d.max, 2);
  }
}

}  // namespace
}  // namespace biref
