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

// "[1, 3, 256, 256]"
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace biref

#define BIREF_CHECK(cond, ...)             \
  do {                                     \
    if (!(cond)) ::biref::fail(__VA_ARGS__); \
  } while (0)
