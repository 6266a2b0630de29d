// Shared helpers of the test suite.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "biref/error.h"
#include "biref/isa.h"
#include "core/tensor.h"

namespace biref {
// Parameterised tests print the level's name ("avx2"), not its bytes.
inline void PrintTo(CpuIsa isa, std::ostream* os) { *os << cpu_isa_name(isa); }
}  // namespace biref

namespace biref::test {

// Sets (or, with nullptr, unsets) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ScopedEnv(const char* name, const std::string& value) : ScopedEnv(name, value.c_str()) {}
  ~ScopedEnv() { old_ ? setenv(name_, old_->c_str(), 1) : unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

inline std::string data_path(const std::string& rel) {
  return std::string(BIREF_TEST_DATA) + "/" + rel;
}

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

// The largest |a[i] - b[i]|, 0 for empty or equal arrays. A NaN in either array makes the result
// NaN wherever it is (so every EXPECT_LE(max_abs_diff(...), tol) fails); an infinity against a
// finite value, or against the opposite infinity, makes it +inf. Equal infinities differ by 0.
inline double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::quiet_NaN();
    if (a[i] == b[i]) continue;  // equal values, infinities of the same sign included
    m = std::max(m, std::fabs(double(a[i]) - double(b[i])));  // +inf when either is infinite
  }
  return m;
}

// A whole file as bytes ("" when it cannot be read), and a file replaced by `bytes`.
inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// A folder of its own per test (named for the test and the process), removed afterwards.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    const auto* t = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "-" + std::to_string(getpid()) + "-" + t->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// How two 8-bit images (or any byte arrays of equal length) differ: the largest |a - b| and how
// many values differ at all.
struct ByteDiff {
  int max = 0;
  int64_t count = 0;
};
inline ByteDiff byte_diff(const uint8_t* a, const uint8_t* b, size_t n) {
  ByteDiff r;
  for (size_t i = 0; i < n; ++i) {
    const int d = std::abs(int(a[i]) - int(b[i]));
    r.max = std::max(r.max, d);
    r.count += d != 0;
  }
  return r;
}

// Tensors of different shapes are never equal: NaN.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.shape != b.shape) return std::numeric_limits<double>::quiet_NaN();
  return max_abs_diff(a.data, b.data, a.numel());
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::quiet_NaN();
  return max_abs_diff(a.data(), b.data(), int64_t(a.size()));
}

// Keeps the largest of the values seen in `m`; a NaN, once seen, stays (std::max would drop it).
inline void keep_max(double& m, double v) {
  if (std::isnan(m)) return;
  if (std::isnan(v) || v > m) m = v;
}

// ---- Independent references (written from the formats' definitions, not from src/) ----

// IEEE binary16 from float, round to nearest, ties to even; overflow to inf; NaN stays a quiet
// NaN. Computed in double: the value divided by its binary16 ulp, rounded by std::nearbyint
// (ties to even in the default rounding mode), and the bits assembled from that integer.
inline uint16_t ref_f32_to_f16(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return uint16_t(sign | 0x7e00);
  const double a = std::fabs(double(f));
  if (a >= 65520.0) return uint16_t(sign | 0x7c00);  // 65504 + half an ulp (32) and above
  if (a < std::ldexp(1.0, -14)) {                    // subnormal range: ulp 2^-24
    // 1024 units carry into the smallest normal, 0x0400, by itself
    return uint16_t(sign | uint16_t(std::nearbyint(a * std::ldexp(1.0, 24))));
  }
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1): the exponent of a is e - 1
  const double q = std::nearbyint(a / std::ldexp(1.0, e - 1 - 10));  // in [1024, 2048]
  // 2048 (rounded up to the next binade) carries into the exponent field
  return uint16_t(sign | ((uint32_t(e - 1 + 15) << 10) + (uint32_t(q) - 1024)));
}

// The value of binary16 bits.
inline double ref_f16_value(uint16_t h) {
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : s * INFINITY;
  if (e == 0) return s * std::ldexp(double(m), -24);
  return s * std::ldexp(double(1024 + m), e - 15 - 10);
}

// bfloat16 (the top 16 bits of a float) from float, round to nearest, ties to even; overflow to
// inf; NaN stays a quiet NaN.
inline uint16_t ref_f32_to_bf16(float f) {
  const bool neg = std::signbit(f);
  if (std::isnan(f)) return uint16_t((neg ? 0xffc0 : 0x7fc0));
  const double a = std::fabs(double(f));
  double r;
  if (a == 0) {
    r = 0;
  } else if (a < std::ldexp(1.0, -126)) {  // float subnormal: bfloat16 ulp 2^-133
    r = std::nearbyint(a * std::ldexp(1.0, 133)) * std::ldexp(1.0, -133);
  } else {
    int e = 0;
    std::frexp(a, &e);
    const double ulp = std::ldexp(1.0, e - 1 - 7);
    r = std::nearbyint(a / ulp) * ulp;
  }
  float v = r >= std::ldexp(1.0, 128) ? INFINITY : float(r);  // r is exact in float (or inf)
  if (neg) v = -v;
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return uint16_t(u >> 16);
}

inline float ref_bf16_value(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The synthetic weights' formula of tests/golden/SYNTHETIC_WEIGHTS.md, written from that text:
// element i of tensor `name` with `shape`.
inline float ref_synthetic_value(const std::string& name, const std::vector<int64_t>& shape,
                                 uint64_t seed, uint64_t i) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char b : name) h = (h ^ b) * 0x100000001B3ull;
  const uint64_t golden = 0x9E3779B97F4A7C15ull;
  uint64_t z = h + seed * golden + (i + 1) * golden;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z = z ^ (z >> 31);
  const double u = double(z >> 11) * std::ldexp(1.0, -53) * 2 - 1;
  auto ends = [&](const char* s) {
    const std::string t = s;
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  double v;
  if (ends(".running_var")) {
    v = 0.75 + 0.25 * u;
  } else if (ends(".running_mean")) {
    v = 0.1 * u;
  } else if (ends("relative_position_bias_table")) {
    v = 0.5 * u;
  } else if (shape.size() == 1 && ends(".weight")) {
    v = 1 + 0.1 * u;
  } else if (shape.size() == 1 && ends(".bias")) {
    v = 0.05 * u;
  } else {
    double fan_in = 1;
    for (size_t d = 1; d < shape.size(); ++d) fan_in *= double(shape[d]);
    v = u * std::sqrt(3 / fan_in);
  }
  return float(v);
}

// One line of tests/golden/param_names/BACKBONE.txt: the official state_dict, recorded.
struct RecordedParam {
  std::string name;
  std::vector<int64_t> shape;  // {} for a scalar
  std::string dtype;           // "float32", "int64"
};

// Every entry of the recorded official state_dict of `backbone`, in state_dict order; without
// the buffers (`relative_position_index`, `num_batches_tracked`) unless `with_buffers`.
inline std::vector<RecordedParam> recorded_params(const std::string& backbone,
                                                  bool with_buffers = false) {
  std::ifstream f(data_path("param_names/" + backbone + ".txt"));
  if (!f.good()) throw std::runtime_error("no recorded parameter list for " + backbone);
  std::vector<RecordedParam> out;
  for (std::string line; std::getline(f, line);) {
    std::istringstream ls(line);
    RecordedParam p;
    std::string shape;
    ls >> p.name >> shape >> p.dtype;
    if (p.name.empty()) continue;
    const bool buffer =
        p.name.ends_with("relative_position_index") || p.name.ends_with("num_batches_tracked");
    if (buffer && !with_buffers) continue;
    if (shape != "scalar") {
      std::stringstream ss(shape);
      for (std::string d; std::getline(ss, d, 'x');) p.shape.push_back(std::stoll(d));
    }
    out.push_back(p);
  }
  return out;
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
// A loopback port that was free a moment ago (for servers that cannot pick their own).
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// ---- decompression bombs ----

inline uint32_t crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

inline std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

// A PNG whose IHDR (with a valid CRC) declares w x h gray pixels, followed by a tiny IDAT and
// IEND: decoders would allocate w x h before finding that the data is missing.
inline std::string png_declaring(uint32_t w, uint32_t h) {
  const std::string ihdr = "IHDR" + be32(w) + be32(h) + std::string("\x08\x00\x00\x00\x00", 5);
  const std::string idat = std::string("IDAT") + std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8);
  std::string png = "\x89PNG\r\n\x1a\n";
  png += be32(13) + ihdr + be32(crc32(ihdr));
  png += be32(8) + idat + be32(crc32(idat));
  png += be32(0) + "IEND" + be32(crc32("IEND"));
  return png;
}

struct CliResult {
  int code = -1;
  std::string out, err;  // stdout, stderr
  std::string all() const { return out + err; }
};

// Runs `biref ARGS`, with `env` ("NAME=VALUE ...") added to its environment.
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  namespace fs = std::filesystem;
  static std::atomic<int> counter{0};
  const std::string stem = (fs::temp_directory_path() / ("biref-cli-" + std::to_string(getpid()) +
                                                         "-" + std::to_string(counter++)))
                               .string();
  const std::string out = stem + ".out", err = stem + ".err";
  const std::string cmd =
      env + " " + BIREF_CLI + " " + args + " >" + out + " 2>" + err + " </dev/null";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  std::error_code ec;
  fs::remove(out, ec);
  fs::remove(err, ec);
  return r;
}

// AddressSanitizer's shadow memory and quarantine add to every process's peak; the bounds below
// are about the code's own allocations (hundreds of MB against the gigabytes they used to take).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr double kSlackMb = 600;
#else
inline constexpr double kSlackMb = 0;
#endif

// Runs `biref ARGS` like run_cli and measures its peak RSS in MiB. RUSAGE_CHILDREN holds
// the largest of every child ever waited for, so the command runs under a fresh forked process
// whose only children are the shell and biref; that process sends back what it saw.
inline CliResult run_cli_measured(const std::string& args, double& peak_mb) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe");
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const CliResult r = run_cli(args);
    rusage ru{};
    getrusage(RUSAGE_CHILDREN, &ru);
    const std::string msg = std::to_string(r.code) + "\n" + std::to_string(ru.ru_maxrss) + "\n" +
                            std::to_string(r.out.size()) + "\n" + r.out + r.err;
    for (size_t done = 0; done < msg.size();) {
      const ssize_t n = write(fds[1], msg.data() + done, msg.size() - done);
      if (n <= 0) _exit(1);
      done += size_t(n);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::istringstream in(msg);
  CliResult r;
  long long kib = 0;
  size_t out_size = 0;
  in >> r.code >> kib >> out_size;
  in.get();
  std::string rest(std::istreambuf_iterator<char>(in), {});
  r.out = rest.substr(0, out_size);
  r.err = rest.substr(std::min(out_size, rest.size()));
  peak_mb = double(kib) / 1024.0;
  std::printf("peak RSS of 'biref %s': %.0f MiB\n", args.substr(0, 40).c_str(), peak_mb);
  return r;
}

}  // namespace biref::test
