#include "common.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "biref/image.h"
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

void check_model_size(int w, int h, const std::string& flag) {
  BIREF_CHECK(w > 0 && h > 0 && w % 32 == 0 && h % 32 == 0, flag, " ", w, "x", h,
              " is not supported: width and height must be multiples of 32 (e.g. 1024x1024)");
}

bool same_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  if (a.empty() || b.empty()) return false;
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec) && !ec;
  const fs::path pa = fs::weakly_canonical(fs::absolute(a, ec), ec);
  const fs::path pb = fs::weakly_canonical(fs::absolute(b, ec), ec);
  return pa == pb;
}

void check_not_an_input(const std::string& out, const std::string& in, const std::string& what) {
  BIREF_CHECK(!same_file(out, in), "output '", out, "' is ", what, " '", in,
              "': refusing to overwrite an input (choose another output name)");
}

void add_max_image_pixels(CLI::App& app, int64_t& value) {
  app.add_option("--max-image-pixels", value,
                 "refuse images above this many pixels before decoding them (default: "
                 "$BIREF_MAX_IMAGE_PIXELS, else " +
                     std::to_string(biref::kDefaultMaxImagePixels) + ")");
}

double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0.0;
}

bool stderr_is_terminal() {
  return isatty(STDERR_FILENO) == 1;
}

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, int(s) % 3600 / 60);
  }
  return buf;
}

ProgressBar::ProgressBar(bool on, size_t total, std::string unit)
    : on_(on), total_(total), unit_(std::move(unit)), start_(now_seconds()) {}

void ProgressBar::update(size_t done, const std::string& current) {
  done_ = done;
  current_ = current;
  if (!on_) return;
  const double now = now_seconds();
  if (done != total_ && last_ >= 0 && now - last_ < 0.1) return;
  draw(now);
}

void ProgressBar::draw(double now) {
  last_ = now;
  constexpr int kBar = 24;
  const int filled = total_ ? int(kBar * done_ / total_) : kBar;
  const double elapsed = now - start_;
  std::string rate = "-", eta = "-";
  if (done_ > 0 && elapsed > 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", double(done_) / elapsed);
    rate = buf;
    eta = format_duration(elapsed / double(done_) * double(total_ - done_));
  }
  std::string name = current_;
  if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
  std::fprintf(stderr, "\r\033[K[%s%s] %zu/%zu  %s %s/s  ETA %s  %s",
               std::string(size_t(filled), '#').c_str(),
               std::string(size_t(kBar - filled), '.').c_str(), done_, total_, rate.c_str(),
               unit_.c_str(), eta.c_str(), name.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!on_ || !drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
  last_ = -1;
}

void ProgressBar::finish() {
  clear();
}

}  // namespace biref::cli
