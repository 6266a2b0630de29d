// A cache file of byte blobs (a model's packed weights), written once and mapped read-only by
// the processes that load the same weights afterwards, so that they neither compute the blobs
// again nor copy them into fresh memory.
//
// Layout: the blobs, each at a 64-byte aligned offset from the start of the file, padded to a
// multiple of 2 MiB; then a JSON index (the key, each blob's name, layout, offset and size, the
// checksum of the data); then a 32-byte trailer ("BIREFBLB", format, index offset and size).
// The data is written 2 MiB at a time from 2 MiB-aligned offsets: on a filesystem with large
// folios for regular files (XFS since Linux 5.18, ext4 since 6.16) the page cache then keeps it
// in 2 MiB folios, and a mapping at a 2 MiB-aligned address is mapped with huge pages, as fast
// to read from as anonymous huge pages. Elsewhere the mapping has 4 KiB pages (see
// BlobFile::huge_pages()).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace biref {

struct Blob {
  std::string name;    // what it holds (a layer's name)
  std::string layout;  // how it is laid out; a reader compares it with the layout it wants
  const void* data = nullptr;
  size_t bytes = 0;
};

class BlobFile {
 public:
  // Maps `path` and checks it: that it belongs to this user and no one else may write it, its
  // trailer, that its index is for `key`, every blob inside the file, and the checksum of the
  // data (which also faults every page in). Null, with the reason in `why`, when the file is
  // missing, someone else's, written for another key, or damaged. The mapping is read-only.
  static std::unique_ptr<BlobFile> open(const std::string& path, const std::string& key,
                                        std::string& why);
  ~BlobFile();
  BlobFile(const BlobFile&) = delete;
  BlobFile& operator=(const BlobFile&) = delete;

  // The blobs in the order they were written; `data` points into the read-only mapping.
  const std::vector<Blob>& blobs() const { return blobs_; }
  size_t data_bytes() const { return data_bytes_; }
  // Whether the kernel mapped (nearly) all of the data with huge pages.
  bool huge_pages() const { return huge_pages_; }

 private:
  BlobFile() = default;
  void* map_ = nullptr;  // the reserved range, [map_, map_ + map_len_)
  size_t map_len_ = 0;
  size_t data_bytes_ = 0;
  bool huge_pages_ = false;
  std::vector<Blob> blobs_;
};

// Writes `blobs` to `path` for `key`: complete or not at all (a temporary file beside it, renamed
// into place, without fsync: a file cut short by a crash fails open()'s checks). The folder is
// created; temporary files in it older than an hour (writers that were killed) are removed.
// Throws biref::Error naming the path when it cannot be written.
void write_blob_file(const std::string& path, const std::string& key,
                     const std::vector<Blob>& blobs);

// An order-sensitive 64-bit checksum (Fletcher-like sums over 64-bit words in 8 lanes, per
// 2 MiB block, blocks on the OpenMP threads). Detects damaged or shifted data, not tampering.
uint64_t checksum64(const void* data, size_t bytes);

// The GNU build ID of the binary (program or shared library) that holds biref's code, in hex:
// it changes whenever the code does, so that a cache written by other code is not used. "" when
// the binary has none.
std::string code_build_id();

}  // namespace biref
