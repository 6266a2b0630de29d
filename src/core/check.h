// Error helpers: BIREF_CHECK for user-facing conditions (throws biref::Error).
#pragma once
#include <sstream>
#include <string>
#include <vector>

#include "biref/error.h"

namespace biref {

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str_cat(args...));
}
// The same with a kind other than InvalidInput.
template <typename... Args>
[[noreturn]] void fail_kind(ErrorKind kind, const Args&... args) {
  throw Error(str_cat(args...), kind);
}

// "[1, 3, 256, 256]"
std::string shape_str(const std::vector<int64_t>& shape);

// The number of elements of `shape`; throws biref::Error naming the shape when a dimension is
// negative or the product does not fit in 64 bits (it would wrap, and pass every later check).
int64_t checked_numel(const std::vector<int64_t>& shape);
// a * b (both >= 0), or a biref::Error naming `what` when the product overflows.
int64_t checked_mul(int64_t a, int64_t b, const char* what);

// The largest thread count biref accepts: a few times the hardware threads (OpenMP would start
// them all, and a typo such as 1000 would only make everything slower).
int max_threads();
// Throws biref::Error naming `flag` unless 0 <= threads <= max_threads().
void check_threads(int threads, const char* flag);

}  // namespace biref

#define BIREF_CHECK(cond, ...)               \
  do {                                       \
    if (!(cond)) ::biref::fail(__VA_ARGS__); \
  } while (0)

// BIREF_CHECK with an ErrorKind: BIREF_CHECK_KIND(n <= limit, ErrorKind::TooLarge, "...").
#define BIREF_CHECK_KIND(cond, kind, ...)                  \
  do {                                                     \
    if (!(cond)) ::biref::fail_kind((kind), __VA_ARGS__); \
  } while (0)
