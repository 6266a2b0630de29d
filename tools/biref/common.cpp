#include "common.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "core/check.h"

namespace biref::cli {

void parse_size(const std::string& text, const std::string& flag, int& w, int& h) {
  const size_t x = text.find_first_of("xX");
  int a = 0, b = 0;
  try {
    size_t used = 0;
    if (x == std::string::npos) {
      a = b = std::stoi(text, &used);
      BIREF_CHECK(used == text.size(), "");
    } else {
      a = std::stoi(text.substr(0, x), &used);
      BIREF_CHECK(used == x, "");
      b = std::stoi(text.substr(x + 1), &used);
      BIREF_CHECK(used == text.size() - x - 1, "");
    }
  } catch (const std::exception&) {
    fail(flag, " '", text, "' is not a size: use WIDTHxHEIGHT, e.g. 1024x1024");
  }
  BIREF_CHECK(a > 0 && b > 0, flag, " '", text, "' must be positive");
  w = a;
  h = b;
}

double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0.0;
}

bool stderr_is_terminal() { return isatty(STDERR_FILENO) == 1; }

}  // namespace biref::cli
