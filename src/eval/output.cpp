#include "eval/output.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/check.h"

namespace biref::eval {

namespace fs = std::filesystem;

namespace {

// The same file however it is spelled (a/b.png, ./a/b.png, a/../a/b.png).
std::string normalised(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) p = fs::absolute(path, ec).lexically_normal();
  return p.string();
}

}  // namespace

void write_bytes(const std::string& path, std::string_view bytes, const std::string& shown) {
  FILE* f = std::fopen(path.c_str(), "wb");
  BIREF_CHECK(f, "cannot write '", shown, "': ", std::strerror(errno));
  errno = 0;
  const size_t n = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  bool good = n == bytes.size() && std::fflush(f) == 0;
  int err = good ? 0 : errno;
  if (std::fclose(f) != 0 && good) {  // close reports delayed write errors
    good = false;
    err = errno;
  }
  BIREF_CHECK(good, "cannot write '", shown,
              "': ", err ? std::strerror(err) : "write error (disk full?)");
}

size_t OutputFiles::index_of(const std::string& path) const {
  for (size_t i = 0; i < paths_.size(); ++i)
    if (paths_[i] == path) return i;
  fail("internal error: output '", path, "' was not declared");
}

void OutputFiles::add(const std::string& path) {
  BIREF_CHECK(!path.empty(), "empty output file name");
  const std::string norm = normalised(path);
  for (const std::string& p : paths_)
    BIREF_CHECK(normalised(p) != norm, "two outputs are the same file '", path, "'");
  std::error_code ec;
  BIREF_CHECK(!fs::is_directory(path, ec), "cannot write '", path, "': it is a folder");
  files_.push_back(std::make_unique<AtomicFile>(path));  // checks the folder
  paths_.push_back(path);
  written_.push_back(false);
}

void OutputFiles::write(const std::string& path, std::string_view bytes) {
  const size_t i = index_of(path);
  write_bytes(files_[i]->temp_path(), bytes, path);
  written_[i] = true;
}

void OutputFiles::commit() {
  // Check everything that can be checked before the first rename, so that a failure does not
  // leave some outputs new and the others old.
  for (size_t i = 0; i < paths_.size(); ++i) {
    BIREF_CHECK(written_[i], "internal error: output '", paths_[i], "' was not written");
    std::error_code ec;
    BIREF_CHECK(!fs::is_directory(paths_[i], ec), "cannot write '", paths_[i], "': it is a folder");
  }
  for (auto& f : files_) f->commit();
}

}  // namespace biref::eval
