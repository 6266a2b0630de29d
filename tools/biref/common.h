// Helpers shared by the subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <string>

namespace biref::cli {

// "1024x768" -> (1024, 768); throws biref::Error naming the flag on a malformed value.
void parse_size(const std::string& text, const std::string& flag, int& w, int& h);
// Whether two paths name the same file: the same inode when both exist (links and symlinks
// included), else the same normalised absolute path.
bool same_file(const std::string& a, const std::string& b);
// Throws biref::Error before anything runs when the output `out` is the input `in` (described
// by `what`, e.g. "the input image"): an output never replaces an input.
void check_not_an_input(const std::string& out, const std::string& in, const std::string& what);
// Adds --max-image-pixels N (0 or absent: $BIREF_MAX_IMAGE_PIXELS, else the built-in limit).
void add_max_image_pixels(CLI::App& app, int64_t& value);

// Peak resident set size of this process in MiB (VmHWM).
double peak_rss_mb();
bool stderr_is_terminal();
// Throws biref::Error naming `flag` unless w and h are positive multiples of 32.
void check_model_size(int w, int h, const std::string& flag);

// Progress of a long run on stderr. On a terminal, one line redrawn at most 10 times a second:
// "[#####.....] 120/500  2.31 img/s  ETA 2m44s  NAME"; elsewhere nothing (the caller prints a
// plain line per item). finish() ends the line.
class ProgressBar {
 public:
  ProgressBar(bool on, size_t total, std::string unit);
  void update(size_t done, const std::string& current = {});
  void finish();
  // Clears the bar so that a message can be printed; the next update() redraws it.
  void clear();
  bool on() const { return on_; }

 private:
  bool on_;
  size_t total_, done_ = 0;
  std::string unit_, current_;
  double start_, last_ = -1;
  bool drawn_ = false;
  void draw(double now);
};

// "2m44s", "1h02m", "12.3s"
std::string format_duration(double seconds);

}  // namespace biref::cli
