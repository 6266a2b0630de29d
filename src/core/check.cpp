#include "core/check.h"

#include <algorithm>
#include <thread>

namespace biref {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidInput: return "invalid input";
    case ErrorKind::TooLarge: return "too large";
    case ErrorKind::NotFound: return "not found";
    case ErrorKind::Unavailable: return "unavailable";
    case ErrorKind::Internal: return "internal";
  }
  return "internal";
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  BIREF_CHECK(a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &r), what, ": ", a, " x ", b,
              " does not fit in 64 bits");
  return r;
}

int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    BIREF_CHECK(d >= 0, "shape ", shape_str(shape), " has a negative dimension");
    BIREF_CHECK(!__builtin_mul_overflow(n, d, &n), "shape ", shape_str(shape),
                " has more elements than fit in 64 bits");
  }
  return n;
}

int max_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return int(std::max(1u, hw) * 4);
}

void check_threads(int threads, const char* flag) {
  BIREF_CHECK(threads >= 0 && threads <= max_threads(), flag, " ", threads,
              " is out of range: use 0 (all cores) up to ", max_threads(), " (4 x the ",
              std::thread::hardware_concurrency(), " hardware threads of this machine)");
}

}  // namespace biref
