// How many threads biref runs, and why.
//
// By default a model runs as many threads as the process may really use: the CPUs of its
// affinity mask (taskset, cpusets, Kubernetes CPU pinning), capped by its cgroup's CPU quota
// (docker --cpus, a Kubernetes CPU limit; cgroup v2 cpu.max or v1 cpu.cfs_quota_us), never the
// machine's core count. Before each forward pass it also looks at how much of those CPUs other
// processes are using right now and leaves them out, so that two biref processes on one machine,
// or biref beside a busy program, do not make each other's threads wait at every barrier.
// LoadOptions::threads (--threads) fixes the count instead; so does OMP_NUM_THREADS.
#pragma once
#include <string>

namespace biref {

struct CpuBudget {
  int affinity_cpus = 1;    // CPUs in this process's affinity mask
  double quota_cpus = 0;    // the cgroup CPU quota in CPUs (quota / period); 0: no quota
  std::string quota_file;   // where the quota was read, when there is one
  int omp_num_threads = 0;  // OMP_NUM_THREADS from the environment, 0 when unset
  int threads = 1;          // the default thread count: the smallest of the above
  std::string reason;       // one line, e.g. "2 CPUs in the affinity mask, cgroup quota 1.0"
};

// Reads the affinity mask, the cgroup files and the environment now.
CpuBudget cpu_budget();
// How a model with automatic threads runs under `b`, one line: "automatic, up to 2 (2 CPUs in
// the affinity mask), fewer while other processes use those CPUs", or "fixed: 3 (...)".
std::string describe_automatic_threads(const CpuBudget& b);

// How OpenMP's idle threads wait, as set for this process: biref's executables (and any program
// linking libbiref statically) set GOMP_SPINCOUNT before libgomp starts, unless the environment
// already has OMP_WAIT_POLICY or GOMP_SPINCOUNT. One line, e.g. "GOMP_SPINCOUNT=10000 (biref)".
std::string omp_wait_setting();

}  // namespace biref
