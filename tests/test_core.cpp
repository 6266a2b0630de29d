#include <gtest/gtest.h>

#include <cstring>

#include "core/huge_pages.h"
#include "core/tensor.h"

namespace biref {
namespace {

// A forward-pass-like allocation pattern: overlapping lifetimes, sizes that repeat and differ.
double run_pattern(Arena& a, const Shape& key) {
  a.begin_run(key);
  double checksum = 0;
  {
    Tensor x = a.empty({1000});
    for (int i = 0; i < 1000; ++i) x.data[i] = float(i);
    for (int step = 0; step < 3; ++step) {
      Tensor t = a.empty({1000});
      Tensor big = a.empty({4000});
      for (int i = 0; i < 4000; ++i) big.data[i] = x.data[i % 1000] + float(step);
      for (int i = 0; i < 1000; ++i) t.data[i] = big.data[i] + big.data[3999 - i];
      Tensor small = a.zeros({10});
      small.data[0] = 1.f;
      std::memcpy(x.data, t.data, 1000 * sizeof(float));
    }
    for (int i = 0; i < 1000; ++i) checksum += x.data[i];
  }
  a.end_run();
  return checksum;
}

TEST(Arena, PlansOnceThenServesEveryAllocationFromTheBlock) {
  Arena a;
  const double first = run_pattern(a, {1});
  EXPECT_EQ(a.heap_allocations(), 10u);
  // peak live: x + t (4000 B each, 4032 in 64-byte units) + big (16000) + small (64), not the
  // sum of all 10 allocations (58 KB)
  EXPECT_EQ(a.bytes_held(), size_t(4032 + 4032 + 16000 + 64));
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(run_pattern(a, {1}), first);  // overlapping tensors would corrupt the result
    EXPECT_EQ(a.heap_allocations(), 0u);
  }
}

TEST(Arena, NewKeyOrDifferentPatternReplans) {
  Arena a;
  run_pattern(a, {1});
  const double other = run_pattern(a, {2});
  EXPECT_GT(a.heap_allocations(), 0u);  // a new key records again
  EXPECT_EQ(run_pattern(a, {2}), other);
  EXPECT_EQ(a.heap_allocations(), 0u);
  // same key, different allocations: falls back to the heap, stays correct, re-plans
  a.begin_run({2});
  Tensor odd = a.empty({12345});
  odd.data[12344] = 3.f;
  EXPECT_EQ(odd.data[12344], 3.f);
  odd = Tensor();
  a.end_run();
  EXPECT_EQ(run_pattern(a, {2}), other);
}

TEST(Arena, AbortedRunLeavesNoPlan) {
  Arena a;
  a.begin_run({7});
  Tensor t = a.empty({100});
  t = Tensor();
  a.abort_run();
  EXPECT_EQ(a.bytes_held(), 0u);
  run_pattern(a, {7});
  EXPECT_GT(a.bytes_held(), 0u);
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

TEST(HugePages, ChunksHandOutAlignedDisjointPiecesThatKeepTheirContents) {
  HugeChunks chunks;
  std::vector<std::pair<unsigned char*, size_t>> pieces;
  // small and large pieces, one larger than a chunk, across several chunks
  for (size_t bytes : {size_t(1), size_t(100), size_t(3) << 20, size_t(40) << 20, size_t(64),
                       size_t(15) << 20, size_t(7)}) {
    auto* p = static_cast<unsigned char*>(chunks.allocate(bytes));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u) << bytes;
    pieces.push_back({p, bytes});
    std::memset(p, int(pieces.size()), bytes);
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    const auto [p, n] = pieces[i];
    EXPECT_EQ(p[0], i + 1) << i;
    EXPECT_EQ(p[n - 1], i + 1) << i;
    for (size_t j = 0; j < pieces.size(); ++j) {
      if (j == i) continue;
      const bool apart = pieces[j].first >= p + n || pieces[j].first + pieces[j].second <= p;
      EXPECT_TRUE(apart) << i << " overlaps " << j;
    }
  }
}

TEST(HugePages, BufferGrowsAndKeepsItsPagesWhileLargeEnough) {
  HugeBuffer b;
  float* p = b.get(1000);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t(2) << 20), 0u);
  p[999] = 1.f;
  EXPECT_EQ(b.get(10), p);  // smaller: the same memory
  EXPECT_EQ(b.get(1000), p);
  float* q = b.get(size_t(3) << 20);  // 12 MB: grows
  q[(size_t(3) << 20) - 1] = 2.f;
  EXPECT_EQ(b.get(size_t(1) << 20), q);
  b.release();
  EXPECT_NE(b.get(4), nullptr);  // usable again after release
}

}  // namespace
}  // namespace biref
