// Reading input files safely: only regular files (a FIFO or device given by mistake would block
// or never end), opened without blocking, and errors that say why (the system's reason).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace biref {

// Throws biref::Error "<what> '<path>' does not exist / is a folder / is not a regular file
// (FIFO, device, socket) / cannot be opened: <reason>" unless `path` is a regular file that this
// process can open for reading. Opening never blocks.
void check_readable_file(const std::string& path, const std::string& what);

// A read-only memory mapping of a whole regular file (empty files have data() == nullptr).
class MappedFile {
 public:
  // `what` names the kind of file in errors ("image", "checkpoint").
  MappedFile(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace biref
