// Helpers shared by the checkpoint harnesses: the readers take a path, so each input is written
// to one temporary file, and every tensor they return is read back in full.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "weights/checkpoint.h"

namespace biref_fuzz {

// The temporary file, created once per process under $TMPDIR (else /dev/shm, else /tmp) and
// rewritten for every input: creating a file per input would cost more than most inputs take to
// parse. It is removed at exit.
inline const std::string& temp_path(const char* tag) {
  static const std::string path = [tag] {
    const char* dir = std::getenv("TMPDIR");
    if (dir == nullptr || *dir == '\0') dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string p = std::string(dir) + "/biref-" + tag + "-XXXXXX";
    const int fd = mkstemp(p.data());
    if (fd < 0) {
      std::perror("biref fuzz: mkstemp");
      std::abort();
    }
    close(fd);
    static std::string to_remove = p;
    std::atexit([] { unlink(to_remove.c_str()); });
    return p;
  }();
  return path;
}

// Replaces the temporary file's content with the input. A failed write is the harness's fault,
// not the reader's: abort so it cannot pass for a clean run.
inline const std::string& write_temp(const char* tag, const uint8_t* data, size_t size) {
  const std::string& path = temp_path(tag);
  const int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) std::abort();
  for (size_t done = 0; done < size;) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += size_t(n);
  }
  close(fd);
  return path;
}

// Reads every byte of every tensor of a checkpoint read from the file `file` (`file_size`
// bytes), so that a view reaching outside its buffer is found: ASan catches it in a heap buffer
// (the .pth reader's storages); a memory-mapped file is not tracked by ASan, so there the view's
// range is checked against the mapping and its bytes against the file's. Small tensors are also
// converted to float32, which reads them through each dtype's conversion.
inline void touch_checkpoint(const biref::Checkpoint& ck, const uint8_t* file, size_t file_size) {
  for (const auto& [name, t] : ck.tensors) {
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();  // an accepted tensor with a negative dimension
    }
    const size_t n = t.nbytes();
    if (n == 0) continue;
    const auto* p = static_cast<const uint8_t*>(t.data);
    if (p == nullptr) std::abort();
    if (t.file_mapped) {
      // The safetensors reader's owner aliases the start of the mapping of the whole file.
      const auto* base = static_cast<const uint8_t*>(t.owner.get());
      if (p < base || n > file_size || size_t(p - base) > file_size - n) std::abort();
      if (std::memcmp(p, file + (p - base), n) != 0) std::abort();
    } else {
      uint8_t sum = 0;
      for (size_t i = 0; i < n; ++i) sum += p[i];
      // Keeps the loop from being optimised away.
      asm volatile("" : : "r"(sum));
    }
    if (t.numel() <= 4096) (void)t.to_f32();
  }
}

}  // namespace biref_fuzz
