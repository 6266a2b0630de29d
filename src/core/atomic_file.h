// Output files that are either complete or absent: writers write to a hidden temporary file
// beside the target and commit() renames it into place; an AtomicFile destroyed without
// commit() (an error on the way) removes the temporary file.
#pragma once
#include <string>

namespace biref {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // checks that the target's folder exists
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& temp_path() const { return temp_; }
  // Renames onto the target; throws biref::Error naming the target. `durable`: the data is
  // fsync'ed first (a cache that checks its own contents can skip it).
  void commit(bool durable = true);

 private:
  std::string path_, temp_;
  bool committed_ = false;
};

}  // namespace biref
