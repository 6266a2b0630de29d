// Helpers shared by the subcommands.
#pragma once
#include <CLI/CLI.hpp>
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

}  // namespace biref::cli
