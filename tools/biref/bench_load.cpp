#include "bench_load.h"

#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "core/check.h"

extern char** environ;

namespace biref::cli {

namespace {
[[noreturn]] void busy_loop() {
  volatile unsigned long long x = 0;
  for (;;) x = x + 1;
}
}  // namespace

BusyLoad::BusyLoad(int threads) {
  if (threads <= 0) return;
  pid_ = fork();
  BIREF_CHECK(pid_ >= 0, "cannot start the busy-loop process: ", std::strerror(errno));
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(0);  // the parent is already gone
    for (int t = 1; t < threads; ++t) std::thread(busy_loop).detach();
    busy_loop();
  }
}

BusyLoad::~BusyLoad() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

std::vector<std::string> run_copies(const std::vector<std::string>& args, int copies) {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  BIREF_CHECK(n > 0, "cannot find this executable (/proc/self/exe): ", std::strerror(errno));
  self[n] = 0;
  std::vector<std::string> argv_s{self};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  struct Copy {
    pid_t pid = -1;
    int out = -1;
  };
  std::vector<Copy> running;
  auto cleanup = [&] {
    for (auto& c : running) {
      if (c.pid > 0) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, nullptr, 0);
      }
      if (c.out >= 0) close(c.out);
    }
  };
  try {
    for (int i = 0; i < copies; ++i) {
      int fd[2];
      BIREF_CHECK(pipe2(fd, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
      posix_spawn_file_actions_t fa;
      posix_spawn_file_actions_init(&fa);
      posix_spawn_file_actions_adddup2(&fa, fd[1], STDOUT_FILENO);
      Copy c;
      const int rc = posix_spawn(&c.pid, self, &fa, nullptr, argv.data(), environ);
      posix_spawn_file_actions_destroy(&fa);
      close(fd[1]);
      c.out = fd[0];
      if (rc != 0) {
        close(c.out);
        fail("cannot start copy ", i + 1, " of ", self, ": ", std::strerror(rc));
      }
      running.push_back(c);
    }
    std::vector<std::string> outputs;
    for (size_t i = 0; i < running.size(); ++i) {
      std::string out;
      char buf[4096];
      for (;;) {
        const ssize_t r = read(running[i].out, buf, sizeof buf);
        if (r > 0) {
          out.append(buf, size_t(r));
        } else if (r == 0 || errno != EINTR) {
          break;
        }
      }
      close(running[i].out);
      running[i].out = -1;
      int status = 0;
      while (waitpid(running[i].pid, &status, 0) < 0 && errno == EINTR) {
      }
      running[i].pid = -1;
      BIREF_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "copy ", i + 1, " of ", copies,
                  " failed (",
                  WIFEXITED(status) ? str_cat("exit ", WEXITSTATUS(status))
                                    : str_cat("signal ", WTERMSIG(status)),
                  ")");
      outputs.push_back(std::move(out));
    }
    return outputs;
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace biref::cli
