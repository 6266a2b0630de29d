#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/check.h"

namespace biref {

namespace fs = std::filesystem;

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  const fs::path target(path_);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  BIREF_CHECK(fs::is_directory(dir, ec), "cannot write '", path_, "': folder '", dir.string(),
              "' does not exist");
  std::random_device rd;
  // (built with append: gcc 12 warns falsely (-Wrestrict) on "." + std::string)
  std::string name(".");
  name.append(target.filename().string()).append(".tmp-").append(std::to_string(rd()));
  temp_ = (dir / name).string();
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  std::error_code ec;
  fs::remove(temp_, ec);
}

void AtomicFile::commit(bool durable) {
  // Data on disk before the name: a crash after the rename never exposes an empty file.
  if (durable) {
    const int fd = ::open(temp_.c_str(), O_RDONLY | O_CLOEXEC);
    BIREF_CHECK(fd >= 0, "cannot write '", path_, "': the temporary file vanished");
    const int err = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    BIREF_CHECK(err == 0, "cannot write '", path_, "': ", std::strerror(err));
  }
  std::error_code ec;
  fs::rename(temp_, path_, ec);
  BIREF_CHECK(!ec, "cannot write '", path_, "': ", ec.message());
  committed_ = true;
}

}  // namespace biref
