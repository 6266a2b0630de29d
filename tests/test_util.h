// Shared helpers of the test suite.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "biref/error.h"
#include "core/tensor.h"

namespace biref::test {

inline std::string data_path(const std::string& rel) { return std::string(BIREF_TEST_DATA) + "/" + rel; }

inline Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty(shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = dist(rng);
  return t;
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (!(d <= m)) m = d;  // NaN propagates as a failure
  }
  return m;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  return max_abs_diff(a.data, b.data, a.numel());
}

// The message of the biref::Error that fn throws, or "(no error)".
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The built `biref` command, run as a user runs it.
struct CliResult {
  int code = -1;
  std::string out, err;  // stdout, stderr
  std::string all() const { return out + err; }
};

// Runs `biref ARGS`, with `env` ("NAME=VALUE ...") added to its environment.
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  namespace fs = std::filesystem;
  static std::atomic<int> counter{0};
  const std::string stem = (fs::temp_directory_path() /
                            ("biref-cli-" + std::to_string(getpid()) + "-" + std::to_string(counter++)))
                               .string();
  const std::string out = stem + ".out", err = stem + ".err";
  const std::string cmd = env + " " + BIREF_CLI + " " + args + " >" + out + " 2>" + err + " </dev/null";
  const int status = std::system(cmd.c_str());
  auto slurp = [](const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::error_code ec;
  fs::remove(out, ec);
  fs::remove(err, ec);
  return r;
}

}  // namespace biref::test
