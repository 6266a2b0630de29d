#include "core/huge_pages.h"

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>

#include "core/check.h"

namespace biref {

namespace {

constexpr size_t kHuge = size_t(2) << 20;

// `bytes` (a multiple of 2 MiB) starting on a 2 MiB boundary, inside a mapping of bytes + 2 MiB
// whose start and length are returned in `map`.
char* map_aligned(size_t bytes, std::pair<void*, size_t>& map) {
  const size_t len = bytes + kHuge;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("out of memory allocating ", bytes, " bytes");
  char* a = reinterpret_cast<char*>((uintptr_t(p) + kHuge - 1) / kHuge * kHuge);
  madvise(a, bytes, MADV_HUGEPAGE);
  map = {p, len};
  return a;
}

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

}  // namespace

void populate(void* begin, size_t bytes) {
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14
#endif
  if (bytes == 0) return;
  char* const first = reinterpret_cast<char*>(uintptr_t(begin) / 4096 * 4096);
  char* const end = static_cast<char*>(begin) + bytes;
  char* const aligned = reinterpret_cast<char*>(uintptr_t(first) / kHuge * kHuge);
  const int64_t pieces = int64_t((end - aligned + kHuge - 1) / kHuge);
  const int threads =
      omp_in_parallel() ? 1 : int(std::min<int64_t>(omp_get_max_threads(), pieces));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < pieces; ++i) {
    char* const a = std::max(first, aligned + i * int64_t(kHuge));
    char* const b = std::min(end, aligned + (i + 1) * int64_t(kHuge));
    madvise(a, size_t(b - a), MADV_POPULATE_WRITE);
  }
}

HugeChunks::~HugeChunks() {
  for (auto& [p, n] : maps_) munmap(p, n);
}

void* HugeChunks::allocate(size_t bytes) {
  constexpr size_t kChunk = size_t(16) << 20;
  bytes = round_up(std::max<size_t>(bytes, 1), 64);
  // First fit over the chunks: a piece that does not fit the newest chunk's rest gets a new
  // chunk, and the rest is left for smaller pieces (touched pages that hold nothing would count
  // as resident, 2 MiB at a time).
  for (Chunk& c : chunks_) {
    if (c.left >= bytes) {
      void* r = c.next;
      c.next += bytes;
      c.left -= bytes;
      return r;
    }
  }
  const size_t size = std::max(kChunk, round_up(bytes, kHuge));
  std::pair<void*, size_t> map;
  char* p = map_aligned(size, map);
  maps_.push_back(map);
  chunks_.push_back({p + bytes, size - bytes});
  return p;
}

float* HugeBuffer::get(size_t n) {
  const size_t bytes = n * sizeof(float);
  if (bytes > usable_) {
    const size_t size = round_up(std::max(bytes, usable_ * 2), kHuge);
    release();
    std::pair<void*, size_t> map;
    data_ = map_aligned(size, map);
    map_ = map.first;
    map_len_ = map.second;
    usable_ = size;
  }
  return reinterpret_cast<float*>(data_);
}

void HugeBuffer::release() {
  if (map_) munmap(map_, map_len_);
  map_ = nullptr;
  data_ = nullptr;
  map_len_ = usable_ = 0;
}

}  // namespace biref
