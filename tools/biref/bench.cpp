// `biref bench`: latency, stage breakdown, achieved GFLOP/s against the machine's own sgemm
// measured in the same run, load time and peak memory. With --sizes, also the cost per
// megapixel of a cycle of mixed input sizes against the fixed --size (the activation arena keeps
// a plan per size; $BIREF_ARENA_PLANS=1 measures with one plan, re-planned at every change).
// With --compare-precision, FP32 against BF16 run by run in one process.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <sstream>

#include "bench_load.h"
#include "biref/biref.h"
#include "biref/threads.h"
#include "command.h"
#include "common.h"
#include "core/check.h"
#include "ops/cpu/kernels.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// CPU time of this process so far, every thread, in ms: user + system, and system alone (page
// faults of fresh memory land there). Steadier than wall time on a shared machine.
struct CpuTime {
  double total = 0, sys = 0;
};
CpuTime cpu_now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return {ms(u.ru_utime) + ms(u.ru_stime), ms(u.ru_stime)};
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
  std::string sizes;  // "W1xH1,W2xH2,...": a cycle of mixed sizes after the fixed-size runs
  int runs = 5, warmup = 1, threads = 0, batch = 1;
  bool json = false, reference = false, profile = false;
  std::string precision = "fp32";
  int busy = 0;       // busy-looping threads of another process beside the run
  int procs = 1;      // copies of the benchmark at once
  bool copy = false;  // this process is one of those copies: JSON, no sgemm
  bool compare_precision = false;  // FP32 and BF16, their runs alternated
  bool no_weight_cache = false;    // pack at load, neither reading nor writing the cache
};

struct Size {
  int w = 0, h = 0;
};

std::vector<Size> parse_sizes(const std::string& list) {
  std::vector<Size> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    Size s;
    biref::cli::parse_size(item, "--sizes", s.w, s.h);
    biref::cli::check_model_size(s.w, s.h, "--sizes");
    out.push_back(s);
  }
  BIREF_CHECK(!out.empty() && list.back() != ',', "--sizes '", list,
              "' must be a comma-separated list of WIDTHxHEIGHT");
  return out;
}

// A B x 3 x H x W input of normal noise (the same seed for every size).
biref::HostTensor random_input(int batch, int W, int H) {
  biref::HostTensor x;
  x.shape = {batch, 3, H, W};
  const int64_t n = biref::checked_numel(x.shape);
  try {
    x.data.resize(size_t(n));
  } catch (const std::exception&) {  // bad_alloc, or length_error past the vector's max_size
    biref::fail("cannot allocate the input of ", biref::shape_str(x.shape), " (",
                double(n) * 4 / (1 << 30), " GiB)");
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& v : x.data) v = nd(rng);
  return x;
}

// --size into W, H, and the options every timed mode checks before it loads a model: batch,
// runs, threads, and the input's size computed without wrapping (B x 3 x H x W floats).
void check_run_options(const BenchOptions& o, int& W, int& H) {
  biref::cli::parse_size(o.size, "--size", W, H);
  biref::cli::check_model_size(W, H, "--size");
  BIREF_CHECK(o.batch >= 1, "--batch ", o.batch, " must be at least 1");
  BIREF_CHECK(o.runs >= 1 && o.warmup >= 0, "--runs must be at least 1 and --warmup at least 0");
  biref::check_threads(o.threads, "--threads");
  biref::checked_numel({o.batch, 3, H, W});
}

int run_scenario(const BenchOptions& o);
int run_compare(const BenchOptions& o);

// "2 threads in every run", or "1 thread in 4 runs, 2 in 6"
std::string threads_summary(const std::vector<int>& per_run) {
  std::map<int, int> count;
  for (int t : per_run) ++count[t];
  if (count.size() == 1)
    return biref::str_cat(count.begin()->first, count.begin()->first == 1 ? " thread" : " threads",
                          " in every run");
  std::string s;
  for (const auto& [t, n] : count)
    s += biref::str_cat(s.empty() ? "" : ", ", t, t == 1 ? " thread in " : " threads in ", n,
                        n == 1 ? " run" : " runs");
  return s;
}

// "avx512_bf16 (the best this CPU supports); oneDNN avx512_core_bf16", or "reference".
std::string kernels_line(const biref::ModelInfo& info) {
  if (info.isa.empty()) return "reference";
  return biref::describe_cpu_isa() + "; oneDNN " + biref::cpu::onednn_isa_name();
}

int run_bench(const BenchOptions& o) {
  BIREF_CHECK(o.busy >= 0 && o.busy <= 1024, "--busy ", o.busy, " is out of range (0..1024)");
  BIREF_CHECK(o.procs >= 1 && o.procs <= 64, "--procs ", o.procs, " is out of range (1..64)");
  if (o.compare_precision) return run_compare(o);
  if ((o.busy > 0 || o.procs > 1) && !o.copy) return run_scenario(o);
  int W = 0, H = 0;
  check_run_options(o, W, H);
  const std::vector<Size> mixed = o.sizes.empty() ? std::vector<Size>{} : parse_sizes(o.sizes);
  // the mixed sizes' inputs too, before the model is loaded
  for (const Size& s : mixed) biref::checked_numel({o.batch, 3, s.h, s.w});
  biref::LoadOptions lo;
  lo.threads = o.threads;
  lo.device = o.reference ? biref::Device::Reference : biref::Device::Cpu;
  lo.precision = biref::parse_precision(o.precision);
  lo.weight_cache = !o.no_weight_cache;
  const auto t_load = Clock::now();
  auto model = biref::Model::load(o.model, lo);
  const double load_ms = ms_since(t_load);
  const auto info = model->info();

  const biref::HostTensor x = random_input(o.batch, W, H);

  if (!o.json) {
    std::fprintf(stderr,
                 "model %s: %s, %.1f M parameters, loaded in %.0f ms; backend %s, kernels %s\n"
                 "threads: %s; OpenMP wait: %s\n",
                 info.source.c_str(), info.description.c_str(), info.parameters / 1e6, load_ms,
                 info.device.c_str(), kernels_line(info).c_str(), info.threads.c_str(),
                 biref::omp_wait_setting().c_str());
  }
  model->set_profiling(o.profile);
  std::vector<double> lat, cpu, sys;
  std::vector<int> run_threads;
  std::map<std::string, std::vector<double>> stages;
  double first_ms = 0;
  for (int r = 0; r < o.warmup + o.runs; ++r) {
    const auto t = Clock::now();
    const CpuTime c0 = cpu_now();
    model->forward(x);
    const double ms = ms_since(t);
    const CpuTime c1 = cpu_now();
    if (r == 0) first_ms = ms;
    if (!o.json)
      std::fprintf(stderr, "  run %d%s: %.1f ms, %d threads\n", r + 1,
                   r < o.warmup ? " (warm-up)" : "", ms, model->last_threads());
    if (r < o.warmup) continue;
    lat.push_back(ms);
    run_threads.push_back(model->last_threads());
    cpu.push_back(c1.total - c0.total);
    sys.push_back(c1.sys - c0.sys);
    for (const auto& s : model->last_timings()) stages[s.name].push_back(s.ms);
  }
  const double gflop = model->last_flops() / 1e9;
  const double med = median(lat);
  const std::vector<biref::StageTiming> op_profile = model->last_op_profile();
  const double mpixels = double(o.batch) * W * H / 1e6;  // of model input, per run

  // The mixed cycle: --warmup untimed cycles through the sizes, then --runs timed cycles. Each
  // cycle's cost is its time over its megapixels; the median over cycles is reported.
  std::vector<biref::HostTensor> mixed_inputs;
  for (const Size& s : mixed) mixed_inputs.push_back(random_input(o.batch, s.w, s.h));
  std::vector<double> cycle_ms_per_mpx, cycle_cpu_per_mpx, cycle_sys_per_mpx;
  std::vector<std::vector<double>> mixed_lat(mixed.size());
  model->set_profiling(false);
  if (!mixed.empty() && !o.json)
    std::fprintf(stderr, "mixed sizes %s: %d warm-up and %d timed cycles\n", o.sizes.c_str(),
                 o.warmup, o.runs);
  for (int c = 0; c < (mixed.empty() ? 0 : o.warmup + o.runs); ++c) {
    double cycle_ms = 0, cycle_mpx = 0;
    const CpuTime c0 = cpu_now();
    for (size_t i = 0; i < mixed.size(); ++i) {
      const auto t = Clock::now();
      model->forward(mixed_inputs[i]);
      const double ms = ms_since(t);
      if (!o.json)
        std::fprintf(stderr, "  cycle %d%s %dx%d: %.1f ms\n", c + 1,
                     c < o.warmup ? " (warm-up)" : "", mixed[i].w, mixed[i].h, ms);
      if (c < o.warmup) continue;
      mixed_lat[i].push_back(ms);
      cycle_ms += ms;
      cycle_mpx += double(o.batch) * mixed[i].w * mixed[i].h / 1e6;
    }
    const CpuTime c1 = cpu_now();
    if (c < o.warmup) continue;
    cycle_ms_per_mpx.push_back(cycle_ms / cycle_mpx);
    cycle_cpu_per_mpx.push_back((c1.total - c0.total) / cycle_mpx);
    cycle_sys_per_mpx.push_back((c1.sys - c0.sys) / cycle_mpx);
  }

  // The model's peak, read before the sgemm baseline adds its own 48 MiB of matrices (and
  // oneDNN's packing buffers) on top of everything the model keeps resident.
  const double rss = biref::cli::peak_rss_mb();
  const double sgemm = o.copy ? 0 : measure_sgemm(2048, 3);  // copies: not beside the others

  nlohmann::ordered_json j;
  j["model"] = info.source;
  j["backbone"] = info.backbone;
  j["device"] = info.device;
  j["isa"] = info.isa;
  j["precision"] = info.precision;
  j["threads"] = info.threads;
  j["omp_wait"] = biref::omp_wait_setting();
  j["threads_per_run"] = run_threads;
  j["size"] = {W, H};
  j["batch"] = o.batch;
  j["runs"] = o.runs;
  j["load_ms"] = load_ms;
  nlohmann::json ls = nlohmann::json::object();
  for (const auto& s : info.load_stages) ls[s.name] = s.ms;
  j["load_stages_ms"] = ls;
  j["weight_cache"] = info.weight_cache;
  j["first_run_ms"] = first_ms;
  j["median_ms"] = med;
  j["ms_per_mpixel"] = med / mpixels;
  j["cpu_ms_per_mpixel"] = median(cpu) / mpixels;  // user + system, all threads
  j["sys_ms_per_mpixel"] = median(sys) / mpixels;
  j["min_ms"] = *std::min_element(lat.begin(), lat.end());
  j["max_ms"] = *std::max_element(lat.begin(), lat.end());
  j["gflops"] = gflop;
  j["gflops_per_s"] = gflop / (med / 1e3);
  j["sgemm_gflops_per_s"] = sgemm;
  j["efficiency_vs_sgemm"] = gflop / (med / 1e3) / sgemm;
  j["peak_rss_mb"] = rss;
  j["activation_mb"] = double(model->activation_bytes()) / (1 << 20);
  nlohmann::ordered_json mx;
  if (!mixed.empty()) {
    const double mixed_cost = median(cycle_ms_per_mpx);
    mx["sizes"] = nlohmann::ordered_json::array();
    nlohmann::ordered_json per_size;
    for (size_t i = 0; i < mixed.size(); ++i) {
      mx["sizes"].push_back({mixed[i].w, mixed[i].h});
      per_size[std::to_string(mixed[i].w) + "x" + std::to_string(mixed[i].h)] =
          median(mixed_lat[i]);
    }
    mx["cycles"] = o.runs;
    mx["median_ms"] = per_size;
    mx["ms_per_mpixel"] = mixed_cost;
    mx["vs_fixed"] = mixed_cost / (med / mpixels);
    mx["cpu_ms_per_mpixel"] = median(cycle_cpu_per_mpx);
    mx["sys_ms_per_mpixel"] = median(cycle_sys_per_mpx);
    mx["cpu_vs_fixed"] = median(cycle_cpu_per_mpx) / (median(cpu) / mpixels);
    j["mixed"] = mx;
  }
  nlohmann::ordered_json st;
  for (const char* name : {"backbone.full", "backbone.half", "squeeze", "decoder"}) {
    if (stages.count(name)) st[name] = median(stages[name]);
  }
  j["stages"] = st;
  if (o.profile) {
    nlohmann::ordered_json ops;
    for (const auto& p : op_profile) ops[p.name] = p.ms;
    j["ops_last_run"] = ops;
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s %dx%d batch %d, %s\n", info.backbone.c_str(), W, H, o.batch, info.device.c_str());
  std::printf("  kernels         %s\n", kernels_line(info).c_str());
  std::printf("  precision       %s\n", info.precision.c_str());
  std::printf("  threads         %s; ran %s\n", info.threads.c_str(),
              threads_summary(run_threads).c_str());
  std::printf("  OpenMP wait     %s\n", biref::omp_wait_setting().c_str());
  std::string load_parts;
  for (const auto& s : info.load_stages)
    load_parts += (load_parts.empty() ? "" : ", ") + s.name + " " + std::to_string(int(s.ms + 0.5));
  std::printf("  load            %8.0f ms   (%s)\n", load_ms, load_parts.c_str());
  if (!info.weight_cache.empty())
    std::printf("  weight cache    %s\n", info.weight_cache.c_str());
  std::printf("  first run       %8.0f ms\n", first_ms);
  std::printf("  latency median  %8.1f ms   (min %.1f, max %.1f over %d runs)\n", med,
              j["min_ms"].get<double>(), j["max_ms"].get<double>(), o.runs);
  for (auto& [name, v] : st.items())
    std::printf("    %-14s %8.1f ms\n", name.c_str(), v.get<double>());
  if (o.profile) {
    std::printf("  ops (last run, wall time):\n");
    for (const auto& p : op_profile) std::printf("    %-28s %8.1f ms\n", p.name.c_str(), p.ms);
  }
  std::printf("  per megapixel   %8.1f ms   (CPU %.1f ms, of which system %.1f)\n", med / mpixels,
              j["cpu_ms_per_mpixel"].get<double>(), j["sys_ms_per_mpixel"].get<double>());
  if (!mixed.empty()) {
    std::printf("  mixed sizes (median over %d cycles):\n", o.runs);
    for (auto& [name, v] : mx["median_ms"].items())
      std::printf("    %-14s %8.1f ms\n", name.c_str(), v.get<double>());
    std::printf("    per megapixel %8.1f ms   (x%.3f the fixed size; CPU %.1f ms, x%.3f)\n",
                mx["ms_per_mpixel"].get<double>(), mx["vs_fixed"].get<double>(),
                mx["cpu_ms_per_mpixel"].get<double>(), mx["cpu_vs_fixed"].get<double>());
  }
  std::printf("  model           %8.1f GFLOP -> %.1f GFLOP/s\n", gflop, gflop / (med / 1e3));
  std::printf("  sgemm 2048^3    %8.1f GFLOP/s (same run) -> efficiency %.0f%%\n", sgemm,
              100.0 * gflop / (med / 1e3) / sgemm);
  std::printf("  peak RSS        %8.0f MiB   (activations held: %.0f MiB)\n", rss,
              j["activation_mb"].get<double>());
  return 0;
}

// --busy / --procs: the benchmark's own copies, first one alone on the idle machine (the
// baseline), then --procs of them at once beside --busy busy-looping threads of another process.
// Each copy is a separate process, as two users' runs would be.
int run_scenario(const BenchOptions& o) {
  BIREF_CHECK(o.sizes.empty() && !o.profile, "--sizes and --profile do not go with --busy/--procs");
  std::vector<std::string> args{"bench",
                                "--model",
                                o.model,
                                "--size",
                                o.size,
                                "--runs",
                                std::to_string(o.runs),
                                "--warmup",
                                std::to_string(o.warmup),
                                "--threads",
                                std::to_string(o.threads),
                                "--batch",
                                std::to_string(o.batch),
                                "--precision",
                                o.precision,
                                "--json",
                                "--copy"};
  if (o.reference) args.push_back("--reference");
  if (o.no_weight_cache) args.push_back("--no-weight-cache");
  auto parse = [](const std::string& out, const char* what) {
    try {
      return nlohmann::ordered_json::parse(out);
    } catch (const std::exception&) {
      biref::fail("the ", what, " printed no result: '", out.substr(0, 200), "'");
    }
  };
  if (!o.json) std::fprintf(stderr, "the idle baseline: one copy alone ...\n");
  const auto idle = parse(biref::cli::run_copies(args, 1).at(0), "idle copy");
  if (!o.json)
    std::fprintf(stderr, "%d %s at once, beside %d busy-looping threads ...\n", o.procs,
                 o.procs == 1 ? "copy" : "copies", o.busy);
  std::vector<nlohmann::ordered_json> copies;
  {
    // forked before anything in this process starts a thread (no model is loaded here)
    const biref::cli::BusyLoad busy(o.busy);
    for (const auto& out : biref::cli::run_copies(args, o.procs))
      copies.push_back(parse(out, "copy"));
  }
  const double per_run = o.batch * 1000.0;  // images per run, in per-ms units
  const double idle_rate = per_run / idle["median_ms"].get<double>();
  double rate = 0;
  for (const auto& c : copies) rate += per_run / c["median_ms"].get<double>();

  nlohmann::ordered_json j;
  j["size"] = idle["size"];
  j["batch"] = o.batch;
  j["busy_threads"] = o.busy;
  j["procs"] = o.procs;
  j["idle"] = idle;
  j["copies"] = copies;
  j["idle_images_per_s"] = idle_rate;
  j["aggregate_images_per_s"] = rate;
  j["aggregate_vs_idle"] = rate / idle_rate;
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto threads_of = [](const nlohmann::ordered_json& c) {
    return threads_summary(c["threads_per_run"].get<std::vector<int>>());
  };
  std::printf(
      "%s %dx%d batch %d: %s%s\n", idle["backbone"].get<std::string>().c_str(),
      idle["size"][0].get<int>(), idle["size"][1].get<int>(), o.batch,
      o.procs == 1 ? "one copy" : biref::str_cat(o.procs, " copies at once").c_str(),
      o.busy == 0 ? ""
      : o.busy == 1
          ? " beside 1 busy-looping thread of another process"
          : biref::str_cat(" beside ", o.busy, " busy-looping threads of another process").c_str());
  std::printf("  threads: %s; OpenMP wait: %s\n", idle["threads"].get<std::string>().c_str(),
              idle["omp_wait"].get<std::string>().c_str());
  auto line = [&](const std::string& name, const nlohmann::ordered_json& c) {
    std::printf("  %-12s median %8.1f ms  first run %7.0f ms  load %6.0f ms  %s\n", name.c_str(),
                c["median_ms"].get<double>(), c["first_run_ms"].get<double>(),
                c["load_ms"].get<double>(), threads_of(c).c_str());
  };
  line("idle, alone", idle);
  for (size_t i = 0; i < copies.size(); ++i) line(biref::str_cat("copy ", i + 1), copies[i]);
  std::printf("  images/s     %.2f together against %.2f for the idle copy alone: %.0f%%\n", rate,
              idle_rate, 100.0 * rate / idle_rate);
  return 0;
}

// --compare-precision: the model loaded twice in this process, in FP32 and in BF16, and their
// runs alternated (--warmup pairs, then --runs timed pairs; which one runs first alternates too),
// so that both see the same machine. Reports each precision's median and the speed-up of each
// pair. (Two separate benchmarks on a machine whose speed drifts by ±10% over minutes disagree by
// as much as the difference they measure.)
int run_compare(const BenchOptions& o) {
  BIREF_CHECK(o.sizes.empty() && !o.profile && !o.reference && o.busy == 0 && o.procs == 1,
              "--compare-precision does not go with --sizes, --profile, --reference, --busy or "
              "--procs");
  int W = 0, H = 0;
  check_run_options(o, W, H);
  // before loading anything: the FP32 model would load first and BF16 then fail
  BIREF_CHECK(biref::cpu_isa() >= biref::CpuIsa::avx512_bf16,
              "--compare-precision needs BF16, which needs a CPU with AVX512_BF16; the kernels here "
              "are ",
              biref::describe_cpu_isa());
  struct Side {
    const char* name;
    std::unique_ptr<biref::Model> model{};
    std::vector<double> lat{};
    std::vector<int> threads{};  // per timed run
  };
  std::array<Side, 2> side{Side{"fp32"}, Side{"bf16"}};
  for (Side& sd : side) {
    biref::LoadOptions lo;
    lo.threads = o.threads;
    lo.precision = biref::parse_precision(sd.name);
    lo.weight_cache = !o.no_weight_cache;
    sd.model = biref::Model::load(o.model, lo);
  }
  const auto info = side[1].model->info();
  const biref::HostTensor x = random_input(o.batch, W, H);
  if (!o.json)
    std::fprintf(stderr, "model %s: %s; kernels %s; threads: %s\n", info.source.c_str(),
                 info.description.c_str(), kernels_line(info).c_str(), info.threads.c_str());
  std::vector<double> speedup;
  int uneven = 0;  // timed pairs whose two runs used different thread counts
  for (int r = 0; r < o.warmup + o.runs; ++r) {
    double ms[2] = {0, 0};
    int threads[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      const int i = (r + k) % 2;  // FP32 first in even pairs, BF16 first in odd ones
      const auto t = Clock::now();
      side[size_t(i)].model->forward(x);
      ms[i] = ms_since(t);
      threads[i] = side[size_t(i)].model->last_threads();
    }
    const bool timed = r >= o.warmup;
    if (!o.json)
      std::fprintf(stderr, "  pair %d%s: fp32 %.1f ms (%d threads), bf16 %.1f ms (%d): %.3fx\n",
                   r + 1, timed ? "" : " (warm-up)", ms[0], threads[0], ms[1], threads[1],
                   ms[0] / ms[1]);
    if (!timed) continue;
    for (int i = 0; i < 2; ++i) {
      side[size_t(i)].lat.push_back(ms[i]);
      side[size_t(i)].threads.push_back(threads[i]);
    }
    speedup.push_back(ms[0] / ms[1]);
    uneven += threads[0] != threads[1];
  }
  const double rss = biref::cli::peak_rss_mb();

  nlohmann::ordered_json j;
  j["model"] = info.source;
  j["backbone"] = info.backbone;
  j["isa"] = info.isa;
  j["threads"] = info.threads;
  j["size"] = {W, H};
  j["batch"] = o.batch;
  j["runs"] = o.runs;
  for (const Side& sd : side) {
    nlohmann::ordered_json p;
    p["median_ms"] = median(sd.lat);
    p["min_ms"] = *std::min_element(sd.lat.begin(), sd.lat.end());
    p["max_ms"] = *std::max_element(sd.lat.begin(), sd.lat.end());
    p["runs_ms"] = sd.lat;
    p["threads_per_run"] = sd.threads;
    j[sd.name] = p;
  }
  j["speedup_per_pair"] = speedup;
  j["pairs_with_unequal_threads"] = uneven;
  j["speedup_median"] = median(speedup);
  j["speedup_of_medians"] = median(side[0].lat) / median(side[1].lat);
  j["peak_rss_mb_both_models"] = rss;
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s %dx%d batch %d, FP32 against BF16, runs alternated\n", info.backbone.c_str(), W,
              H, o.batch);
  std::printf("  kernels         %s\n", kernels_line(info).c_str());
  for (const Side& sd : side)
    std::printf("  %s            median %8.1f ms   (min %.1f, max %.1f over %d runs; %s)\n",
                sd.name, j[sd.name]["median_ms"].get<double>(), j[sd.name]["min_ms"].get<double>(),
                j[sd.name]["max_ms"].get<double>(), o.runs, threads_summary(sd.threads).c_str());
  if (uneven > 0)
    std::printf("  note            in %d of the %d pairs the two runs used different thread counts "
                "(other processes on the CPUs); --threads fixes the count\n",
                uneven, o.runs);
  std::printf("  BF16 speed-up   %.3fx median of the %d pairs (%.3f-%.3fx); %.3fx of the medians\n",
              median(speedup), o.runs, *std::min_element(speedup.begin(), speedup.end()),
              *std::max_element(speedup.begin(), speedup.end()),
              j["speedup_of_medians"].get<double>());
  std::printf("  peak RSS        %8.0f MiB   (both models loaded)\n", rss);
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
      app.add_option("--sizes", o->sizes,
                     "then cycle through W1xH1,W2xH2,... and compare ms per megapixel with --size");
      app.add_option("--runs,-n", o->runs, "timed runs (with --sizes: also timed cycles)")
          ->capture_default_str();
      app.add_option("--warmup", o->warmup, "untimed runs first (with --sizes: also cycles)")
          ->capture_default_str();
      app.add_option("--threads,-t", o->threads, "threads (0: all cores)")->capture_default_str();
      app.add_option("--batch,-b", o->batch, "batch size")->capture_default_str();
      app.add_flag("--reference", o->reference, "run the naive reference kernels");
      CLI::Option* precision =
          app.add_option("--precision", o->precision,
                         "fp32, or bf16: the matrix products in bfloat16 (AVX512_BF16)")
              ->check(CLI::IsMember({"fp32", "bf16"}))
              ->capture_default_str();
      app.add_flag("--json", o->json, "print one JSON object");
      app.add_flag("--profile", o->profile, "time every op kind (last run)");
      app.add_option("--busy", o->busy,
                     "run beside N busy-looping threads of another process (and first alone, "
                     "as the baseline)");
      app.add_option("--procs", o->procs,
                     "run N copies at once and report the images/s they reach together against "
                     "one copy alone");
      app.add_flag("--compare-precision", o->compare_precision,
                   "load the model in FP32 and in BF16 and alternate their runs: each one's "
                   "median and BF16's speed-up per pair of runs")
          ->excludes(precision);
      app.add_flag("--no-weight-cache", o->no_weight_cache,
                   "pack the weights at load without the packed-weight cache (the cold load); "
                   "BIREF_WEIGHT_CACHE=0 does it for every command");
      app.add_flag("--copy", o->copy)->group("");  // set on the copies --busy/--procs start
      return [o] { return run_bench(*o); };
    });
