// What `biref bench --busy N --procs N` puts beside the measured run: busy-looping threads of
// another process, and copies of the benchmark running at the same time.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace biref::cli {

// A child process running `threads` busy loops until this object is destroyed (or this process
// dies: the child gets SIGKILL with its parent). Construct it before this process starts any
// thread: the child is forked.
class BusyLoad {
 public:
  explicit BusyLoad(int threads);
  ~BusyLoad();
  BusyLoad(const BusyLoad&) = delete;
  BusyLoad& operator=(const BusyLoad&) = delete;

 private:
  pid_t pid_ = -1;
};

// Starts `copies` copies of this executable with `args` (argv after the program name) at the
// same time, waits for all of them and returns each one's standard output, in order. Throws
// biref::Error naming the copy when one fails or is killed.
std::vector<std::string> run_copies(const std::vector<std::string>& args, int copies);

}  // namespace biref::cli
