// The thread count: cgroup quotas (fake v1 and v2 trees, and a real v1 group where this machine
// lets us make one), the affinity mask, OMP_NUM_THREADS, the per-pass governor, the OpenMP wait
// default, and `biref bench --busy/--procs`.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "biref/biref.h"
#include "core/check.h"
#include "core/threads.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace biref;
using biref::test::read_file;
using biref::test::run_cli;

namespace {

bool environ_has(const char* name) {
  const size_t n = std::strlen(name);
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, name, n) == 0 && (*e)[n] == '=') return true;
  return false;
}

// A fake root holding cgroup files; removed with the object.
struct FakeRoot {
  fs::path dir;
  FakeRoot() {
    dir = fs::temp_directory_path() / str_cat("biref-cgroup-", getpid(), "-", counter()++);
    fs::create_directories(dir);
  }
  ~FakeRoot() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  static int& counter() {
    static int n = 0;
    return n;
  }
  void write(const std::string& path, const std::string& text) const {
    const fs::path p = dir / path.substr(1);
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::string root() const { return dir.string(); }
};

const char* kV1Mounts =
    "24 18 0:21 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
    "31 24 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
    "33 24 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
    "40 24 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
const char* kV2Mounts = "30 22 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";

}  // namespace

TEST(Threads, CgroupV1QuotaIsTheSmallestOfTheGroupAndItsAncestors) {
  FakeRoot r;
  const std::string base = "/sys/fs/cgroup/cpu,cpuacct";
  r.write(base + "/kubepods/pod1/cpu.cfs_quota_us", "200000\n");
  r.write(base + "/kubepods/pod1/cpu.cfs_period_us", "100000\n");
  r.write(base + "/kubepods/pod1/c1/cpu.cfs_quota_us", "50000\n");
  r.write(base + "/kubepods/pod1/c1/cpu.cfs_period_us", "100000\n");
  r.write(base + "/cpu.cfs_quota_us", "-1\n");
  r.write(base + "/cpu.cfs_period_us", "100000\n");
  const std::string cgroup = "5:cpuset:/\n4:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n";
  std::string file;
  EXPECT_DOUBLE_EQ(cgroup_cpu_quota(cgroup, kV1Mounts, r.root(), &file), 0.5);
  EXPECT_EQ(file, base + "/kubepods/pod1/c1/cpu.cfs_quota_us");
  // the group without a limit of its own: the parent's
  r.write(base + "/kubepods/pod1/c1/cpu.cfs_quota_us", "-1\n");
  EXPECT_DOUBLE_EQ(cgroup_cpu_quota(cgroup, kV1Mounts, r.root(), &file), 2.0);
  EXPECT_EQ(file, base + "/kubepods/pod1/cpu.cfs_quota_us");
  // no limit anywhere
  r.write(base + "/kubepods/pod1/cpu.cfs_quota_us", "-1\n");
  EXPECT_EQ(cgroup_cpu_quota(cgroup, kV1Mounts, r.root()), 0.0);
}

TEST(Threads, CgroupV1InAContainerReadsTheMountedSubtree) {
  // The container sees only its own group, mounted at the controller's usual place.
  FakeRoot r;
  const char* mounts =
      "31 24 0:28 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n";
  r.write("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "150000\n");
  r.write("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_DOUBLE_EQ(cgroup_cpu_quota("3:cpu,cpuacct:/docker/abc\n", mounts, r.root()), 1.5);
  // with a cgroup namespace the path is "/"
  EXPECT_DOUBLE_EQ(cgroup_cpu_quota("3:cpu,cpuacct:/\n", mounts, r.root()), 1.5);
}

TEST(Threads, CgroupV2CpuMaxWithNestedLimits) {
  FakeRoot r;
  r.write("/sys/fs/cgroup/user.slice/cpu.max", "100000 100000\n");
  r.write("/sys/fs/cgroup/user.slice/app/cpu.max", "max 100000\n");
  std::string file;
  EXPECT_DOUBLE_EQ(cgroup_cpu_quota("0::/user.slice/app\n", kV2Mounts, r.root(), &file), 1.0);
  EXPECT_EQ(file, "/sys/fs/cgroup/user.slice/cpu.max");
  r.write("/sys/fs/cgroup/user.slice/app/cpu.max", "25000 100000\n");
  EXPECT_DOUBLE_EQ(cgroup_cpu_quota("0::/user.slice/app\n", kV2Mounts, r.root()), 0.25);
  r.write("/sys/fs/cgroup/user.slice/app/cpu.max", "max 100000\n");
  r.write("/sys/fs/cgroup/user.slice/cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/user.slice/app\n", kV2Mounts, r.root()), 0.0);
}

TEST(Threads, CgroupHybridWithoutV1CpuUsesV2) {
  FakeRoot r;
  const char* mounts =
      "33 24 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
      "40 24 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
  r.write("/sys/fs/cgroup/unified/app/cpu.max", "300000 100000\n");
  EXPECT_DOUBLE_EQ(cgroup_cpu_quota("3:cpuset:/\n0::/app\n", mounts, r.root()), 3.0);
}

TEST(Threads, CgroupMissingOrMalformedMeansNoQuota) {
  FakeRoot r;
  EXPECT_EQ(cgroup_cpu_quota("", "", r.root()), 0.0);
  EXPECT_EQ(cgroup_cpu_quota("0::/app\n", kV2Mounts, r.root()), 0.0);  // no cpu.max file
  r.write("/sys/fs/cgroup/app/cpu.max", "garbage\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/app\n", kV2Mounts, r.root()), 0.0);
  r.write("/sys/fs/cgroup/app/cpu.max", "0 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/app\n", kV2Mounts, r.root()), 0.0);
  EXPECT_EQ(cgroup_cpu_quota("not a cgroup line\n", "no mounts here\n", r.root()), 0.0);
}

TEST(Threads, OmpNumThreadsParsing) {
  EXPECT_EQ(parse_omp_num_threads(nullptr), 0);
  EXPECT_EQ(parse_omp_num_threads("4"), 4);
  EXPECT_EQ(parse_omp_num_threads("4,2"), 4);
  EXPECT_EQ(parse_omp_num_threads(""), 0);
  EXPECT_EQ(parse_omp_num_threads("x"), 0);
  EXPECT_EQ(parse_omp_num_threads("0"), 0);
  EXPECT_EQ(parse_omp_num_threads("-3"), 0);
}

TEST(Threads, ProcStatTicksOverTheMaskOnly) {
  const std::string stat =
      "cpu  30 0 10 100 5 0 0 0 0 0\n"
      "cpu0 10 0 5 50 5 0 0 0 0 0\n"
      "cpu1 20 1 5 50 0 1 1 2 0 0\n"
      "cpu10 7 0 0 3 0 0 0 0 0 0\n"
      "intr 12345\n";
  CpuTicks t = read_cpu_ticks(stat, {1});
  EXPECT_TRUE(t.ok);
  EXPECT_EQ(t.busy, 30u);  // user nice system irq softirq steal
  EXPECT_EQ(t.total, 80u);
  t = read_cpu_ticks(stat, {0, 10});
  EXPECT_EQ(t.busy, 22u);
  EXPECT_EQ(t.total, 80u);
  EXPECT_FALSE(read_cpu_ticks(stat, {0, 3}).ok);  // a CPU of the mask is missing
}

TEST(Threads, GovernorLeavesOutWhatOtherProcessesUse) {
  // 2 CPUs, a 100-tick window each (200 in all)
  EXPECT_EQ(ThreadGovernor::decide(2, 2, 190, 200, 190), 2);  // only we were busy
  EXPECT_EQ(ThreadGovernor::decide(2, 2, 200, 200, 100), 1);  // another process held one CPU
  EXPECT_EQ(ThreadGovernor::decide(2, 2, 200, 200, 133), 1);  // beside our 2 threads: 2/3 CPU
  EXPECT_EQ(ThreadGovernor::decide(2, 2, 140, 200, 100), 2);  // 0.4 of a CPU: still worth two
  EXPECT_EQ(ThreadGovernor::decide(2, 2, 200, 200, 0), 1);    // never below one
  EXPECT_EQ(ThreadGovernor::decide(2, 8, 800, 800, 0), 1);
  EXPECT_EQ(ThreadGovernor::decide(4, 8, 300, 800, 100), 4);  // capped by the budget
  EXPECT_EQ(ThreadGovernor::decide(8, 8, 300, 800, 100), 6);
  EXPECT_EQ(ThreadGovernor::decide(2, 2, 3, 4, 0), 0);  // 2 ticks per CPU: too short, keep
  // our own time counts as ours even when /proc/stat rounds it above the busy ticks
  EXPECT_EQ(ThreadGovernor::decide(2, 2, 150, 200, 160), 2);
}

TEST(Threads, GovernorOnThisMachineStartsAtTheBudget) {
  ThreadGovernor g(2, affinity_cpus());
  EXPECT_EQ(g.last(), 2);
  const int n = g.choose();  // no time has passed: keeps the count
  EXPECT_EQ(n, 2);
  ThreadGovernor one(1, affinity_cpus());
  EXPECT_EQ(one.choose(), 1);
}

TEST(Threads, BudgetFollowsTheAffinityMask) {
  const std::vector<int> cpus = affinity_cpus();
  ASSERT_FALSE(cpus.empty());
  const CpuBudget b = cpu_budget();
  EXPECT_EQ(b.affinity_cpus, int(cpus.size()));
  std::printf("this process: %s\n", describe_automatic_threads(b).c_str());
  if (cpus.size() < 2) GTEST_SKIP() << "one CPU in this process's mask: nothing to narrow";
  // A child started while this thread runs on one CPU inherits that mask.
  cpu_set_t before, one;
  ASSERT_EQ(sched_getaffinity(0, sizeof before, &before), 0);
  CPU_ZERO(&one);
  CPU_SET(cpus.back(), &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  const auto r = run_cli("version");
  ASSERT_EQ(sched_setaffinity(0, sizeof before, &before), 0);
  ASSERT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.out.find("threads: 1 (1 CPU in the affinity mask)"), std::string::npos) << r.out;
}

TEST(Threads, OmpNumThreadsFixesTheCount) {
  const auto r = run_cli("version", "OMP_NUM_THREADS=3");
  ASSERT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.out.find("threads: fixed: 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("OMP_NUM_THREADS=3 sets it"), std::string::npos) << r.out;
}

TEST(Threads, OpenMpWaitDefaultAndTheUsersSetting) {
  // This test program links biref_omp_wait, as the tool does: libgomp is asked GOMP_SPINCOUNT
  // and gets biref's default, while the environment itself stays unchanged.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && !environ_has("GOMP_SPINCOUNT")) {
    ASSERT_NE(std::getenv("GOMP_SPINCOUNT"), nullptr);
    EXPECT_STREQ(std::getenv("GOMP_SPINCOUNT"), "10000");
    EXPECT_EQ(omp_wait_setting(), "GOMP_SPINCOUNT=10000 (biref's default)");
  }
  auto r = run_cli("version", "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY");
  ASSERT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.out.find("OpenMP wait: GOMP_SPINCOUNT=10000 (biref's default)"), std::string::npos)
      << r.out;
  r = run_cli("version", "OMP_WAIT_POLICY=passive");
  EXPECT_NE(r.out.find("OpenMP wait: OMP_WAIT_POLICY=passive (from the environment)"),
            std::string::npos)
      << r.out;
  r = run_cli("version", "GOMP_SPINCOUNT=777");
  EXPECT_NE(r.out.find("OpenMP wait: GOMP_SPINCOUNT=777 (from the environment)"), std::string::npos)
      << r.out;
}

namespace {

// A cgroup v1 `cpu` group made for one test and removed after it, where this machine lets a test
// make one (the machines of this project do; elsewhere the test is skipped, saying why).
struct CpuGroup {
  std::string dir, why;
  explicit CpuGroup(double cpus) {
    const std::string base = "/sys/fs/cgroup/cpu";
    if (access((base + "/cpu.cfs_quota_us").c_str(), W_OK) != 0) {
      why = base + " is not a writable cgroup v1 cpu controller";
      return;
    }
    dir = str_cat(base, "/biref-test-", getpid());
    std::error_code ec;
    if (!fs::create_directory(dir, ec)) {
      why = str_cat("cannot make ", dir, ": ", ec.message());
      dir.clear();
      return;
    }
    std::ofstream(dir + "/cpu.cfs_period_us") << 100000;
    std::ofstream q(dir + "/cpu.cfs_quota_us");
    q << int(cpus * 100000);
    q.close();
    if (!q) why = "cannot set the quota";
  }
  ~CpuGroup() {
    if (!dir.empty()) rmdir(dir.c_str());  // empty again once the test's process has exited
  }
  bool ok() const { return !dir.empty() && why.empty(); }
  // `biref ARGS` run inside the group
  biref::test::CliResult run(const std::string& args) const {
    // sh -c SCRIPT BIREF ARGS...: the shell joins the group, then becomes biref ($0 "$@")
    return run_cli(args, str_cat("sh -c 'echo $$ > ", dir, "/cgroup.procs && exec \"$0\" \"$@\"'"));
  }
};

}  // namespace

TEST(Threads, CgroupQuotaOfOneCpuRunsOneThread) {
  const CpuGroup g(1.0);
  if (!g.ok()) GTEST_SKIP() << g.why;
  auto r = g.run("version");
  ASSERT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.out.find("threads: 1 ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(str_cat("cgroup CPU quota 1.00 (", g.dir, "/cpu.cfs_quota_us)")),
            std::string::npos)
      << r.out;
  r = g.run("bench -s 128x128 -n 2 --warmup 0 --json");
  ASSERT_EQ(r.code, 0) << r.all();
  const auto j = nlohmann::json::parse(r.out);
  for (int t : j["threads_per_run"]) EXPECT_EQ(t, 1);
  std::printf("under a 1-CPU quota: %s, median %.1f ms at 128x128\n",
              j["threads"].get<std::string>().c_str(), j["median_ms"].get<double>());
}

TEST(Threads, BenchBusyAndProcs) {
  const int budget = cpu_budget().threads;
  if (budget < 2) GTEST_SKIP() << "one CPU to run on: nothing to share";
  auto r = run_cli(str_cat("bench -s 128x128 -n 3 --warmup 1 --json --busy ", budget - 1));
  ASSERT_EQ(r.code, 0) << r.all();
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["busy_threads"], budget - 1);
  EXPECT_EQ(j["procs"], 1);
  ASSERT_EQ(j["copies"].size(), 1u);
  // Beside busy loops on all CPUs but one, most passes run one thread.
  int one = 0;
  for (int t : j["copies"][0]["threads_per_run"]) one += t == 1;
  EXPECT_GE(one, 2) << j["copies"][0]["threads_per_run"].dump();
  std::printf("beside %d busy threads: %.1f ms against %.1f ms idle (%s)\n", budget - 1,
              j["copies"][0]["median_ms"].get<double>(), j["idle"]["median_ms"].get<double>(),
              j["copies"][0]["threads_per_run"].dump().c_str());

  r = run_cli("bench -s 128x128 -n 2 --warmup 1 --json --procs 2");
  ASSERT_EQ(r.code, 0) << r.all();
  j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["copies"].size(), 2u);
  double rate = 0;
  for (const auto& c : j["copies"]) {
    EXPECT_EQ(c["threads_per_run"].size(), 2u);
    EXPECT_EQ(c["sgemm_gflops_per_s"], 0.0);  // a copy does not measure sgemm beside the others
    rate += 1000.0 / c["median_ms"].get<double>();
  }
  EXPECT_NEAR(j["aggregate_images_per_s"].get<double>(), rate, 1e-9);
  EXPECT_NEAR(j["aggregate_vs_idle"].get<double>(),
              rate / (1000.0 / j["idle"]["median_ms"].get<double>()), 1e-9);
  std::printf("2 copies at once: %.0f%% of the idle copy's images/s\n",
              100 * j["aggregate_vs_idle"].get<double>());

  r = run_cli("bench -s 128x128 --procs 2");  // the text report
  ASSERT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.out.find("copy 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("together against"), std::string::npos) << r.out;
}

TEST(Threads, BenchRejectsBadLoadOptions) {
  for (const char* args : {"--procs 0", "--procs 65", "--busy -1", "--procs 2 --sizes 256x256",
                           "--busy 1 --profile"}) {
    const auto r = run_cli(str_cat("bench -s 128x128 ", args));
    EXPECT_EQ(r.code, 1) << args << ": " << r.all();
    EXPECT_NE(r.err.find("error:"), std::string::npos) << args << ": " << r.err;
  }
}

TEST(Threads, TheThreadCountDoesNotChangeTheLogits) {
  // The automatic count may change from one pass to the next: the answer must not.
  auto model = Model::load("synthetic:swin_v1_t");
  HostTensor x;
  x.shape = {1, 3, 64, 96};
  x.data = biref::test::random_vector(3 * 64 * 96, 5);
  model->set_threads(1);
  const HostTensor one = model->forward(x);
  EXPECT_EQ(model->last_threads(), 1);
  model->set_threads(2);
  const HostTensor two = model->forward(x);
  EXPECT_EQ(model->last_threads(), 2);
  EXPECT_EQ(one.data, two.data);
  model->set_threads(0);
  const HostTensor automatic = model->forward(x);
  EXPECT_GE(model->last_threads(), 1);
  EXPECT_LE(model->last_threads(), cpu_budget().threads);
  EXPECT_EQ(one.data, automatic.data);
  EXPECT_NE(model->info().threads.find("automatic"), std::string::npos) << model->info().threads;
}
