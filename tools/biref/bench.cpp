// `biref bench`: latency, stage breakdown, achieved GFLOP/s against the machine's own sgemm
// measured in the same run, load time and peak memory.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>

#include "biref/biref.h"
#include "command.h"
#include "common.h"
#include "core/check.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// oneDNN's f32 GEMM on an n×n×n problem: the best of a few runs, in GFLOP/s. This is the
// machine's attainable matmul throughput right now, the baseline for the model's efficiency.
double measure_sgemm(int n, int reps) {
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (auto* v : {&a, &b})
    for (auto& x : *v) x = d(rng);
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t = Clock::now();
    dnnl_sgemm('N', 'N', n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    const double s = ms_since(t) / 1e3;
    if (r > 0) best = std::max(best, 2.0 * n * n * double(n) / s / 1e9);  // first run warms up
  }
  return best;
}

struct BenchOptions {
  std::string model = "synthetic:swin_v1_t";
  std::string size = "1024x1024";
  int runs = 5, warmup = 1, threads = 0, batch = 1;
  bool json = false, reference = false, profile = false;
};

int run_bench(const BenchOptions& o) {
  int W = 0, H = 0;
  biref::cli::parse_size(o.size, "--size", W, H);
  biref::cli::check_model_size(W, H, "--size");
  BIREF_CHECK(o.batch >= 1, "--batch ", o.batch, " must be at least 1");
  BIREF_CHECK(o.runs >= 1 && o.warmup >= 0, "--runs must be at least 1 and --warmup at least 0");
  biref::check_threads(o.threads, "--threads");
  // The input alone: B x 3 x H x W floats, computed without wrapping, before the model is loaded.
  const int64_t input_floats = biref::checked_numel({o.batch, 3, H, W});
  biref::LoadOptions lo;
  lo.threads = o.threads;
  lo.device = o.reference ? biref::Device::Reference : biref::Device::Cpu;
  const auto t_load = Clock::now();
  auto model = biref::Model::load(o.model, lo);
  const double load_ms = ms_since(t_load);
  const auto info = model->info();

  biref::HostTensor x;
  x.shape = {o.batch, 3, H, W};
  try {
    x.data.resize(size_t(input_floats));
  } catch (const std::exception&) {  // bad_alloc, or length_error past the vector's max_size
    biref::fail("cannot allocate the input of ", biref::shape_str(x.shape), " (",
                double(input_floats) * 4 / (1 << 30), " GiB)");
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& v : x.data) v = nd(rng);

  if (!o.json) {
    std::fprintf(stderr,
                 "model %s: %s, %.1f M parameters, loaded in %.0f ms; backend %s, %d threads\n",
                 info.source.c_str(), info.description.c_str(), info.parameters / 1e6, load_ms,
                 info.device.c_str(), omp_get_max_threads());
  }
  model->set_profiling(o.profile);
  std::vector<double> lat;
  std::map<std::string, std::vector<double>> stages;
  double first_ms = 0;
  for (int r = 0; r < o.warmup + o.runs; ++r) {
    const auto t = Clock::now();
    model->forward(x);
    const double ms = ms_since(t);
    if (r == 0) first_ms = ms;
    if (!o.json)
      std::fprintf(stderr, "  run %d%s: %.1f ms\n", r + 1, r < o.warmup ? " (warm-up)" : "", ms);
    if (r < o.warmup) continue;
    lat.push_back(ms);
    for (const auto& s : model->last_timings()) stages[s.name].push_back(s.ms);
  }
  const double gflop = model->last_flops() / 1e9;
  const double med = median(lat);
  const double sgemm = measure_sgemm(2048, 3);
  const double rss = biref::cli::peak_rss_mb();

  nlohmann::ordered_json j;
  j["model"] = info.source;
  j["backbone"] = info.backbone;
  j["device"] = info.device;
  j["threads"] = omp_get_max_threads();
  j["size"] = {W, H};
  j["batch"] = o.batch;
  j["runs"] = o.runs;
  j["load_ms"] = load_ms;
  j["first_run_ms"] = first_ms;
  j["median_ms"] = med;
  j["min_ms"] = *std::min_element(lat.begin(), lat.end());
  j["max_ms"] = *std::max_element(lat.begin(), lat.end());
  j["gflops"] = gflop;
  j["gflops_per_s"] = gflop / (med / 1e3);
  j["sgemm_gflops_per_s"] = sgemm;
  j["efficiency_vs_sgemm"] = gflop / (med / 1e3) / sgemm;
  j["peak_rss_mb"] = rss;
  j["activation_mb"] = double(model->activation_bytes()) / (1 << 20);
  nlohmann::ordered_json st;
  for (const char* name : {"backbone.full", "backbone.half", "squeeze", "decoder"}) {
    if (stages.count(name)) st[name] = median(stages[name]);
  }
  j["stages"] = st;
  if (o.profile) {
    nlohmann::ordered_json ops;
    for (const auto& p : model->last_op_profile()) ops[p.name] = p.ms;
    j["ops_last_run"] = ops;
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s %dx%d batch %d, %s, %d threads\n", info.backbone.c_str(), W, H, o.batch,
              info.device.c_str(), omp_get_max_threads());
  std::printf("  load            %8.0f ms\n", load_ms);
  std::printf("  first run       %8.0f ms\n", first_ms);
  std::printf("  latency median  %8.1f ms   (min %.1f, max %.1f over %d runs)\n", med,
              j["min_ms"].get<double>(), j["max_ms"].get<double>(), o.runs);
  for (auto& [name, v] : st.items())
    std::printf("    %-14s %8.1f ms\n", name.c_str(), v.get<double>());
  if (o.profile) {
    std::printf("  ops (last run, wall time):\n");
    for (const auto& p : model->last_op_profile())
      std::printf("    %-28s %8.1f ms\n", p.name.c_str(), p.ms);
  }
  std::printf("  model           %8.1f GFLOP -> %.1f GFLOP/s\n", gflop, gflop / (med / 1e3));
  std::printf("  sgemm 2048^3    %8.1f GFLOP/s (same run) -> efficiency %.0f%%\n", sgemm,
              100.0 * gflop / (med / 1e3) / sgemm);
  std::printf("  peak RSS        %8.0f MiB   (activations held: %.0f MiB)\n", rss,
              j["activation_mb"].get<double>());
  return 0;
}

}  // namespace

BIREF_COMMAND(
    bench, "Measure load time, latency per stage, GFLOP/s and peak memory",
    [](CLI::App& app) -> biref::cli::RunFn {
      auto o = std::make_shared<BenchOptions>();
      app.add_option("--model,-m", o->model, "checkpoint file or synthetic:BACKBONE[:SEED]")
          ->capture_default_str();
      app.add_option("--size,-s", o->size, "input WIDTHxHEIGHT (multiples of 32)")
          ->capture_default_str();
      app.add_option("--runs,-n", o->runs, "timed runs")->capture_default_str();
      app.add_option("--warmup", o->warmup, "untimed runs first")->capture_default_str();
      app.add_option("--threads,-t", o->threads, "threads (0: all cores)")->capture_default_str();
      app.add_option("--batch,-b", o->batch, "batch size")->capture_default_str();
      app.add_flag("--reference", o->reference, "run the naive reference kernels");
      app.add_flag("--json", o->json, "print one JSON object");
      app.add_flag("--profile", o->profile, "time every op kind (last run)");
      return [o] { return run_bench(*o); };
    });
