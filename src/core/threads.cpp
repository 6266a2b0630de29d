#include "core/threads.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "core/check.h"

// Defined by the biref_omp_wait object (src/core/omp_wait.cpp) when the program links it.
extern "C" [[gnu::weak]] const char* biref_omp_wait_default();

namespace biref {

namespace {

// ---- files --------------------------------------------------------------------------------

bool read_text(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream ss(s);
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

struct Mount {
  std::string root, point;  // the mounted directory of the hierarchy, and where it is mounted
};

// Finds the mount of cgroup v1's `cpu` controller (v2: the cgroup2 mount) in /proc/self/mountinfo.
bool find_mount(const std::string& mountinfo, bool v2, Mount& m) {
  std::istringstream lines(mountinfo);
  std::string line;
  while (std::getline(lines, line)) {
    // id parent major:minor root mount-point options [optional fields] - fstype source
    // super-options
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string id, parent, dev, root, point, fstype, source, super;
    pre >> id >> parent >> dev >> root >> point;
    post >> fstype >> source >> super;
    bool match = false;
    if (v2) {
      match = fstype == "cgroup2";
    } else if (fstype == "cgroup") {
      for (const auto& opt : split(super, ','))
        if (opt == "cpu") match = true;
    }
    if (match) {
      m = {root, point};
      return true;
    }
  }
  return false;
}

// The group's path in /proc/self/cgroup: v1's line listing `cpu`, or v2's "0::" line.
bool find_group(const std::string& cgroup, bool v2, std::string& path) {
  std::istringstream lines(cgroup);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1);
    bool match = false;
    if (v2) {
      match = id == "0" && controllers.empty();
    } else {
      for (const auto& c : split(controllers, ','))
        if (c == "cpu") match = true;
    }
    if (match) {
      path = line.substr(b + 1);
      return true;
    }
  }
  return false;
}

// The group's directory and each ancestor up to the mount point.
std::vector<std::string> group_dirs(const Mount& m, const std::string& group) {
  // Without a cgroup namespace the group's path is absolute and the mount may show only a
  // subtree of it (m.root, as in a container's bind mount): strip that part.
  std::string rel = group;
  if (m.root != "/" && rel.compare(0, m.root.size(), m.root) == 0) rel = rel.substr(m.root.size());
  std::vector<std::string> dirs;
  std::string dir = m.point;
  dirs.push_back(dir);
  for (const auto& part : split(rel, '/')) {
    if (part.empty() || part == "." || part == "..") continue;
    dir += "/" + part;
    dirs.push_back(dir);
  }
  std::reverse(dirs.begin(), dirs.end());  // the group first
  return dirs;
}

double parse_number(const std::string& s, bool& ok) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  ok = end != s.c_str();
  return v;
}

}  // namespace

double cgroup_cpu_quota(const std::string& proc_self_cgroup, const std::string& mountinfo,
                        const std::string& root, std::string* file) {
  double best = 0;
  auto consider = [&](double cpus, const std::string& path) {
    if (cpus > 0 && (best == 0 || cpus < best)) {
      best = cpus;
      if (file) *file = path;
    }
  };
  Mount m;
  std::string group;
  if (find_mount(mountinfo, false, m) && find_group(proc_self_cgroup, false, group)) {
    for (const auto& dir : group_dirs(m, group)) {
      std::string q, p;
      bool ok_q = false, ok_p = false;
      if (!read_text(root + dir + "/cpu.cfs_quota_us", q) ||
          !read_text(root + dir + "/cpu.cfs_period_us", p))
        continue;
      const double quota = parse_number(q, ok_q), period = parse_number(p, ok_p);
      if (ok_q && ok_p && quota > 0 && period > 0)
        consider(quota / period, dir + "/cpu.cfs_quota_us");
    }
    return best;
  }
  if (find_mount(mountinfo, true, m) && find_group(proc_self_cgroup, true, group)) {
    for (const auto& dir : group_dirs(m, group)) {
      std::string text;
      if (!read_text(root + dir + "/cpu.max", text)) continue;
      std::istringstream ss(text);
      std::string quota, period;
      ss >> quota >> period;  // "max 100000" or "150000 100000"
      bool ok_q = false, ok_p = false;
      const double q = parse_number(quota, ok_q), p = parse_number(period, ok_p);
      if (quota != "max" && ok_q && ok_p && q > 0 && p > 0) consider(q / p, dir + "/cpu.max");
    }
  }
  return best;
}

std::vector<int> affinity_cpus() {
  std::vector<int> cpus;
  for (int n = 1024; n <= 65536; n *= 4) {
    cpu_set_t* set = CPU_ALLOC(n);
    const size_t size = CPU_ALLOC_SIZE(n);
    CPU_ZERO_S(size, set);
    if (sched_getaffinity(0, size, set) == 0) {
      for (int c = 0; c < n; ++c)
        if (CPU_ISSET_S(c, size, set)) cpus.push_back(c);
      CPU_FREE(set);
      return cpus;
    }
    CPU_FREE(set);
    if (errno != EINVAL) break;  // EINVAL: the kernel's mask is larger than ours
  }
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  for (int c = 0; c < std::max(1L, n); ++c) cpus.push_back(c);
  return cpus;
}

int parse_omp_num_threads(const char* value) {
  if (!value) return 0;
  char* end = nullptr;
  const long n = std::strtol(value, &end, 10);
  if (end == value || n <= 0 || n > 1 << 16) return 0;
  return int(n);
}

CpuBudget cpu_budget() {
  CpuBudget b;
  b.affinity_cpus = std::max<int>(1, int(affinity_cpus().size()));
  std::string cgroup, mountinfo;
  if (read_text("/proc/self/cgroup", cgroup) && read_text("/proc/self/mountinfo", mountinfo))
    b.quota_cpus = cgroup_cpu_quota(cgroup, mountinfo, "", &b.quota_file);
  b.omp_num_threads = parse_omp_num_threads(std::getenv("OMP_NUM_THREADS"));
  b.threads = b.affinity_cpus;
  b.reason =
      str_cat(b.affinity_cpus, b.affinity_cpus == 1 ? " CPU" : " CPUs", " in the affinity mask");
  if (b.quota_cpus > 0) {
    // A quota of 1.5 CPUs is worth two threads; one of 1.2 is not.
    const int q = std::max(1, int(std::floor(b.quota_cpus + 0.5)));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", b.quota_cpus);
    b.reason += str_cat(", cgroup CPU quota ", buf, " (", b.quota_file, ")");
    b.threads = std::min(b.threads, q);
  }
  if (b.omp_num_threads > 0) {
    b.threads = b.omp_num_threads;
    b.reason += str_cat("; OMP_NUM_THREADS=", b.omp_num_threads, " sets it");
  }
  return b;
}

std::string describe_automatic_threads(const CpuBudget& b) {
  if (b.omp_num_threads > 0) return str_cat("fixed: ", b.threads, " (", b.reason, ")");
  if (b.threads == 1) return str_cat("1 (", b.reason, ")");
  return str_cat("automatic, up to ", b.threads, " (", b.reason,
                 "), fewer while other processes use those CPUs");
}

std::string omp_wait_setting() {
  if (biref_omp_wait_default) {
    if (const char* spin = biref_omp_wait_default())
      return str_cat("GOMP_SPINCOUNT=", spin, " (biref's default)");
  }
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  if (policy || spin)
    return str_cat(policy ? str_cat("OMP_WAIT_POLICY=", policy) : std::string(),
                   policy && spin ? " " : "", spin ? str_cat("GOMP_SPINCOUNT=", spin) : "",
                   " (from the environment)");
  return "libgomp's default (spins about 3 ms; set GOMP_SPINCOUNT or link biref_omp_wait)";
}

CpuTicks read_cpu_ticks(const std::string& text, const std::vector<int>& cpus) {
  CpuTicks t;
  std::istringstream lines(text);
  std::string line;
  size_t found = 0;
  while (std::getline(lines, line)) {
    if (line.compare(0, 3, "cpu") != 0 || line.size() < 4 || !std::isdigit(uint8_t(line[3])))
      continue;
    std::istringstream ss(line.substr(3));
    int cpu = -1;
    uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    ss >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    if (!ss && !ss.eof()) continue;
    if (!std::binary_search(cpus.begin(), cpus.end(), cpu)) continue;
    const uint64_t busy = user + nice + system + irq + softirq + steal;
    t.busy += busy;
    t.total += busy + idle + iowait;
    ++found;
  }
  t.ok = found == cpus.size() && t.total > 0;
  return t;
}

ThreadGovernor::ThreadGovernor(int max_threads, std::vector<int> cpus)
    : max_(std::max(1, max_threads)), cpus_(std::move(cpus)), current_(max_) {
  std::sort(cpus_.begin(), cpus_.end());
  if (max_ > 1) last_ = sample();
}

ThreadGovernor::Sample ThreadGovernor::sample() const {
  Sample s;
  std::string text;
  if (read_text("/proc/stat", text)) s.ticks = read_cpu_ticks(text, cpus_);
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  s.own_ticks = (double(ts.tv_sec) + ts.tv_nsec / 1e9) * double(sysconf(_SC_CLK_TCK));
  return s;
}

int ThreadGovernor::decide(int max_threads, int ncpus, double busy_ticks, double total_ticks,
                           double own_ticks) {
  const double window = total_ticks / std::max(1, ncpus);  // ticks each CPU saw
  if (window < 3) return 0;                                // too short to tell: keep the count
  const double others = std::max(0.0, busy_ticks - own_ticks) / window;  // in CPUs
  const double free_cpus = double(ncpus) - others;
  return std::clamp(int(std::floor(free_cpus + 0.5)), 1, max_threads);
}

int ThreadGovernor::choose() {
  if (max_ == 1) return 1;
  const Sample s = sample();
  if (!s.ticks.ok || !last_.ticks.ok || s.ticks.busy < last_.ticks.busy ||
      s.ticks.total < last_.ticks.total) {  // unreadable, or a CPU went offline and back
    last_ = s;
    return current_;
  }
  const int n = decide(max_, int(cpus_.size()), double(s.ticks.busy - last_.ticks.busy),
                       double(s.ticks.total - last_.ticks.total), s.own_ticks - last_.own_ticks);
  if (n == 0) return current_;
  last_ = s;
  current_ = n;
  return current_;
}

}  // namespace biref
