#include <gtest/gtest.h>

#include <cstring>

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
