// The thread count: the budget (affinity mask, cgroup quota) and, per forward pass, the share of
// it other processes leave free. The file readers take a root directory so tests can run them
// on fake /proc and /sys trees.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "biref/threads.h"

namespace biref {

// The cgroup CPU quota of the process described by `proc_self_cgroup` (the text of
// /proc/self/cgroup) and `mountinfo` (/proc/self/mountinfo), in CPUs; 0 when there is none.
// The limit of every ancestor group counts (the smallest wins). cgroup v1's `cpu` controller is
// read when mounted, else v2's cpu.max. Paths are read below `root` ("" for the real ones).
// `file` gets the path of the limiting file.
double cgroup_cpu_quota(const std::string& proc_self_cgroup, const std::string& mountinfo,
                        const std::string& root, std::string* file = nullptr);

// The CPUs this process may run on (sched_getaffinity), in order.
std::vector<int> affinity_cpus();

// Parses OMP_NUM_THREADS's first number ("4", "4,2"); 0 when unset or not a positive number.
int parse_omp_num_threads(const char* value);

// Per-CPU time from /proc/stat: busy and total clock ticks summed over `cpus`.
struct CpuTicks {
  uint64_t busy = 0, total = 0;
  bool ok = false;
};
CpuTicks read_cpu_ticks(const std::string& proc_stat_text, const std::vector<int>& cpus);

// Chooses the thread count of each forward pass between 1 and `max_threads`: the CPUs of the
// affinity mask minus what other processes used of them since the last choice (a CPU counts as
// free when at least half of it was). The first choice measures from construction,
// so a model's load is the first window. Cheap: one read of /proc/stat.
class ThreadGovernor {
 public:
  ThreadGovernor(int max_threads, std::vector<int> cpus);
  int choose();
  // Pure: the count for a window where the CPUs of the mask had `busy_ticks` of `total_ticks`
  // busy, of which this process used `own_ticks`.
  static int decide(int max_threads, int ncpus, double busy_ticks, double total_ticks,
                    double own_ticks);
  int last() const { return current_; }

 private:
  struct Sample {
    CpuTicks ticks;
    double own_ticks = 0;
  };
  Sample sample() const;
  int max_;
  std::vector<int> cpus_;
  Sample last_;
  int current_;
};

}  // namespace biref
