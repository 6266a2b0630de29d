// SHA-256 (FIPS 180-4), streaming: the model zoo checks each download against the digest the
// Hugging Face hub publishes for LFS files (X-Linked-Etag).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace biref {

class Sha256 {
 public:
  Sha256() { reset(); }
  void reset();
  void update(const void* data, size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The digest as 64 lowercase hex digits. Ends the stream: call reset() to hash anew.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> h_{};
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_ = 0;  // bytes hashed so far
};

std::string sha256_hex(std::string_view data);
// Hashes a whole file; throws biref::Error if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace biref
