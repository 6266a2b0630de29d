// Memory asked for as transparent huge pages (madvise mode, the common default), for the large,
// long-lived or reused buffers of loading: a fresh 4 KiB page costs a fault each (measured
// ~13 µs on a virtual machine), and a model's packed weights are tens of thousands of pages.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

namespace biref {

// Faults in the pages of [begin, begin + bytes) without changing their contents, 2 MiB apiece
// on the OpenMP threads (one thread inside a parallel region). A fresh page's first touch is
// where a virtual machine pays most (the host backs the page then), and two threads fault pages
// in about twice as fast as one. Without MADV_POPULATE_WRITE (Linux < 5.14) it does nothing:
// the pages fault in on first use.
void populate(void* begin, size_t bytes);

// Allocation from 2 MiB-aligned chunks of 16 MiB or more, first fit; nothing is freed before
// the allocator is.
class HugeChunks {
 public:
  HugeChunks() = default;
  HugeChunks(const HugeChunks&) = delete;
  HugeChunks& operator=(const HugeChunks&) = delete;
  ~HugeChunks();
  // 64-byte aligned, uninitialised; throws biref::Error when out of memory.
  void* allocate(size_t bytes);

 private:
  struct Chunk {
    char* next;
    size_t left;
  };
  std::vector<std::pair<void*, size_t>> maps_;  // as mapped, for munmap
  std::vector<Chunk> chunks_;
};

// A float buffer that keeps its pages from one use to the next, for staging copies: growing
// drops the old contents. Its pages are faulted in once, 2 MiB at a time where possible.
class HugeBuffer {
 public:
  HugeBuffer() = default;
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;
  ~HugeBuffer() { release(); }
  // At least n floats, uninitialised.
  float* get(size_t n);
  void release();

 private:
  void* map_ = nullptr;
  char* data_ = nullptr;
  size_t map_len_ = 0, usable_ = 0;
};

}  // namespace biref
