// biref's default OpenMP wait policy, for the programs that link this object (the `biref` tool,
// the tests; `biref_omp_wait` in CMake). Not part of libbiref: it changes a libc function.
//
// libgomp's idle threads spin GOMP_SPINCOUNT times (300 000 pauses, about 3 ms) before they
// sleep. On an idle machine that lets the next parallel region start at once. On a machine where
// another process holds a core, every barrier costs the waiting thread its time slice while its
// partner waits to be scheduled: 20-40 times slower with two processes on two cores. A spin of
// 10 000 (about 0.1 ms) keeps the idle speed and bounds that loss (docs/performance.md).
//
// libgomp reads its environment in its constructor, before main() and before any constructor of
// the program, when the process's environment cannot yet be changed (a .preinit_array function
// runs before libc has even set `environ`). So this object defines getenv(): the program's own
// definition comes first in symbol lookup, libgomp's call lands here, and the answer for
// GOMP_SPINCOUNT is biref's default when the environment has neither GOMP_SPINCOUNT nor
// OMP_WAIT_POLICY. Every other name, and every name that is set, reads `environ` as libc does.
// Nothing is added to the environment, so the programs this process starts see it unchanged.
#include <cstring>

extern "C" char** environ;

namespace {

constexpr const char* kSpinCount = "10000";

char* find(const char* name) {
  if (!environ || !name) return nullptr;
  const size_t n = std::strlen(name);
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return nullptr;
}

}  // namespace

extern "C" {

char* getenv(const char* name) noexcept {
  char* value = find(name);
  if (value || !name || std::strcmp(name, "GOMP_SPINCOUNT") != 0) return value;
  if (find("OMP_WAIT_POLICY")) return nullptr;  // the user's policy chooses the spin
  return const_cast<char*>(kSpinCount);
}

// The spin count this object supplies, or null when the environment sets the policy itself.
const char* biref_omp_wait_default() {
  return find("GOMP_SPINCOUNT") || find("OMP_WAIT_POLICY") ? nullptr : kSpinCount;
}

}  // extern "C"
