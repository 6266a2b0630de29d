#include "core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/check.h"

namespace biref {

namespace {

// Opens `path` for reading without blocking (O_NONBLOCK: opening a FIFO with no writer would
// otherwise wait forever) and checks that it is a regular file. Returns the descriptor and size.
int open_regular(const std::string& path, const std::string& what, size_t& size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) fail_kind(ErrorKind::NotFound, what, " '", path, "' does not exist");
    fail("cannot open ", what, " '", path, "': ", std::strerror(err));
  }
  BIREF_CHECK(!S_ISDIR(st.st_mode), what, " '", path, "' is a folder, not a file");
  BIREF_CHECK(S_ISREG(st.st_mode), what, " '", path,
              "' is not a regular file (a FIFO, device or socket)");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  BIREF_CHECK(fd >= 0, "cannot open ", what, " '", path, "': ", std::strerror(errno));
  // The file may have been replaced between stat and open: check what was opened.
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(what, " '", path, "' is not a regular file");
  }
  size = size_t(st.st_size);
  return fd;
}

}  // namespace

void check_readable_file(const std::string& path, const std::string& what) {
  size_t size = 0;
  ::close(open_regular(path, what, size));
}

MappedFile::MappedFile(const std::string& path, const std::string& what) {
  const int fd = open_regular(path, what, size_);
  if (size_ > 0) {
    void* addr = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    BIREF_CHECK(addr != MAP_FAILED, "cannot read ", what, " '", path, "': ", std::strerror(err));
    data_ = static_cast<const uint8_t*>(addr);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace biref
