// The output files of one `biref eval` run (report, PNG and SVG plots), written together: every
// file is produced in memory first, written to a temporary file beside its target, and all are
// renamed into place only once every one of them was written completely. An error on the way
// leaves no new file behind (nor a temporary one): outputs are complete or absent.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/atomic_file.h"

namespace biref::eval {

// Writes `bytes` to `path` (created or truncated), checking every write, the flush and the close
// (a full disk shows at any of them). Errors name `shown` (the target of a temporary file).
void write_bytes(const std::string& path, std::string_view bytes, const std::string& shown);

class OutputFiles {
 public:
  // Declares an output. Checks at once that its folder exists, that it is not a folder and that
  // it is not declared twice, so that a bad path fails before the long work.
  void add(const std::string& path);
  // Writes the content of a declared output to its temporary file.
  void write(const std::string& path, std::string_view bytes);
  // Renames every output into place; all must have been written. Throws biref::Error naming the
  // file; without a commit, the destructor removes the temporary files.
  void commit();
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  size_t index_of(const std::string& path) const;
  std::vector<std::string> paths_;
  std::vector<std::unique_ptr<AtomicFile>> files_;
  std::vector<bool> written_;
};

}  // namespace biref::eval
