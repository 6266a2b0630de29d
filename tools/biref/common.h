// Helpers shared by the subcommands.
#pragma once
#include <string>

namespace biref::cli {

// "1024x768" -> (1024, 768); throws biref::Error naming the flag on a malformed value.
void parse_size(const std::string& text, const std::string& flag, int& w, int& h);
// Peak resident set size of this process in MiB (VmHWM).
double peak_rss_mb();
bool stderr_is_terminal();

}  // namespace biref::cli
