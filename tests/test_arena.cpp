// The activation arena with several plans: mixed shapes replay their own plans from one shared
// block sized to the largest plan, least recently used plans are evicted, and a pass that
// differs from its plan falls back to the heap and records again.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "biref/biref.h"
#include "core/tensor.h"
#include "test_util.h"

namespace biref {
namespace {

// A forward-pass-like allocation pattern scaled by n: overlapping lifetimes, sizes that repeat
// and differ. `odd` > 0 changes the size of the third step's large tensor (a pass that departs
// from its plan midway). Returns a checksum that overlapping tensors would corrupt.
double run_pattern(Arena& a, const Shape& key, int64_t n, int64_t odd = 0) {
  a.begin_run(key);
  double checksum = 0;
  {
    Tensor x = a.empty({n});
    for (int64_t i = 0; i < n; ++i) x.data[i] = float(i % 97);
    for (int step = 0; step < 3; ++step) {
      Tensor t = a.empty({n});
      const int64_t m = step == 2 && odd > 0 ? odd : 4 * n;
      Tensor big = a.empty({m});
      for (int64_t i = 0; i < m; ++i) big.data[i] = x.data[i % n] + float(step);
      for (int64_t i = 0; i < n; ++i) t.data[i] = big.data[i % m] + big.data[m - 1 - i % m];
      Tensor small = a.zeros({10});
      small.data[0] = 1.f;
      for (int64_t i = 0; i < n; ++i) x.data[i] = t.data[i] * 0.5f + small.data[i % 10];
    }
    for (int64_t i = 0; i < n; ++i) checksum += x.data[i] * double(i + 1);
  }
  a.end_run();
  return checksum;
}

// The plan of one shape on its own: the block of an arena that has seen only that shape.
size_t plan_bytes(const Shape& key, int64_t n) {
  Arena a(1);
  run_pattern(a, key, n);
  return a.bytes_held();
}

TEST(ArenaPlans, AlternatingShapesReplayAfterEachShapesFirstPass) {
  Arena a;
  const double ca = run_pattern(a, {1, 3, 64, 64}, 1000);
  EXPECT_EQ(a.heap_allocations(), 10u);  // recorded
  const double cb = run_pattern(a, {1, 3, 96, 64}, 3000);
  EXPECT_EQ(a.heap_allocations(), 10u);  // a new shape records too
  EXPECT_EQ(a.plans(), 2u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(run_pattern(a, {1, 3, 64, 64}, 1000), ca);
    EXPECT_EQ(a.heap_allocations(), 0u) << "A replays from its plan, round " << r;
    EXPECT_EQ(run_pattern(a, {1, 3, 96, 64}, 3000), cb);
    EXPECT_EQ(a.heap_allocations(), 0u) << "B replays from its plan, round " << r;
  }
  EXPECT_EQ(a.plans(), 2u);
}

TEST(ArenaPlans, BlockIsTheLargestPlanNotTheSum) {
  const size_t small = plan_bytes({1}, 1000), large = plan_bytes({2}, 5000);
  // peak live of the pattern: x + t + big + small (64-byte units), far below all 10 allocations
  EXPECT_EQ(small, size_t(4032 + 4032 + 16000 + 64));
  ASSERT_GT(large, small);
  Arena a;
  run_pattern(a, {1}, 1000);
  EXPECT_EQ(a.bytes_held(), small);
  run_pattern(a, {2}, 5000);
  EXPECT_EQ(a.bytes_held(), large);  // max, not small + large
  run_pattern(a, {1}, 1000);
  EXPECT_EQ(a.heap_allocations(), 0u);
  EXPECT_EQ(a.bytes_held(), large);  // the small plan replays inside the same block
  // recorded in the other order: the same
  Arena b;
  run_pattern(b, {2}, 5000);
  run_pattern(b, {1}, 1000);
  EXPECT_EQ(b.bytes_held(), large);
  // evicting the largest plan shrinks the block to the largest one left
  b.set_max_plans(1);  // keeps {1}, the most recently used
  EXPECT_EQ(b.plans(), 1u);
  EXPECT_EQ(b.bytes_held(), small);
  run_pattern(b, {1}, 1000);
  EXPECT_EQ(b.heap_allocations(), 0u);
}

TEST(ArenaPlans, LeastRecentlyUsedPlanIsEvictedAfterNPlusOneShapes) {
  Arena a;
  const size_t N = a.max_plans();
  ASSERT_GE(N, 2u);
  std::vector<double> sums;
  for (size_t k = 0; k <= N; ++k) sums.push_back(run_pattern(a, {int64_t(k)}, 100 + 10 * k));
  EXPECT_EQ(a.plans(), N);
  // shapes 1..N are kept: each replays (and becomes more recent than the next)
  for (size_t k = 1; k <= N; ++k) {
    EXPECT_EQ(run_pattern(a, {int64_t(k)}, 100 + 10 * k), sums[k]);
    EXPECT_EQ(a.heap_allocations(), 0u) << "shape " << k;
  }
  // shape 0, the least recently used when shape N came, was evicted: it records again and
  // evicts shape 1, now the least recently used
  EXPECT_EQ(run_pattern(a, {0}, 100), sums[0]);
  EXPECT_GT(a.heap_allocations(), 0u);
  EXPECT_EQ(a.plans(), N);
  run_pattern(a, {1}, 110);
  EXPECT_GT(a.heap_allocations(), 0u);
  run_pattern(a, {0}, 100);
  EXPECT_EQ(a.heap_allocations(), 0u);
}

TEST(ArenaPlans, UsedPlanIsKeptOverAnOlderOne) {
  Arena a(3);
  run_pattern(a, {1}, 100);
  run_pattern(a, {2}, 200);
  run_pattern(a, {3}, 300);
  run_pattern(a, {1}, 100);  // {1} is now the most recent; {2} the least
  run_pattern(a, {4}, 400);  // evicts {2}
  for (int64_t k : {1, 3, 4}) {
    run_pattern(a, {k}, 100 * k);
    EXPECT_EQ(a.heap_allocations(), 0u) << "shape " << k;
  }
  run_pattern(a, {2}, 200);
  EXPECT_GT(a.heap_allocations(), 0u);
}

TEST(ArenaPlans, BrokenPlanFallsBackToHeapAndRecordsAgain) {
  Arena fresh(1);
  const double odd_sum = run_pattern(fresh, {9}, 1000, 777);  // the odd pass, on the heap
  Arena a;
  const double ca = run_pattern(a, {1}, 1000);
  const double cb = run_pattern(a, {2}, 3000);
  const size_t held = a.bytes_held();
  // shape {1} with allocations that depart from its plan midway: the first ones come from the
  // block, the rest from the heap, and the result is that of a pass on the heap
  EXPECT_EQ(run_pattern(a, {1}, 1000, 777), odd_sum);
  EXPECT_GT(a.heap_allocations(), 0u);
  EXPECT_LT(a.heap_allocations(), 10u);
  EXPECT_EQ(a.plans(), 1u);         // the broken plan is dropped, the other kept
  EXPECT_EQ(a.bytes_held(), held);  // {2} is the larger plan
  EXPECT_EQ(run_pattern(a, {2}, 3000), cb);
  EXPECT_EQ(a.heap_allocations(), 0u);
  // the next pass at {1} records again, and the one after replays
  EXPECT_EQ(run_pattern(a, {1}, 1000), ca);
  EXPECT_EQ(a.heap_allocations(), 10u);
  EXPECT_EQ(run_pattern(a, {1}, 1000), ca);
  EXPECT_EQ(a.heap_allocations(), 0u);
  // a broken plan that was the largest: the block shrinks to the largest left
  run_pattern(a, {2}, 3000, 50);
  EXPECT_EQ(a.plans(), 1u);
  EXPECT_EQ(a.bytes_held(), plan_bytes({1}, 1000));
}

TEST(ArenaPlans, AbortedPassKeepsTheOtherPlans) {
  Arena a;
  const double ca = run_pattern(a, {1}, 1000);
  const size_t held = a.bytes_held();
  a.begin_run({2});  // a new shape that throws midway
  {
    Tensor t = a.empty({5000});
    t.data[0] = 1.f;
  }
  a.abort_run();
  EXPECT_EQ(a.plans(), 1u);
  EXPECT_EQ(a.bytes_held(), held);
  EXPECT_EQ(run_pattern(a, {1}, 1000), ca);
  EXPECT_EQ(a.heap_allocations(), 0u);
  a.begin_run({1});  // a replay that throws: the plan stays
  { Tensor t = a.empty({1000}); }
  a.abort_run();
  EXPECT_EQ(run_pattern(a, {1}, 1000), ca);
  EXPECT_EQ(a.heap_allocations(), 0u);
}

using test::ScopedEnv;

TEST(ArenaPlans, PlanCountFromTheEnvironment) {
  {
    ScopedEnv env("BIREF_ARENA_PLANS", "");
    EXPECT_EQ(Arena().max_plans(), Arena::kDefaultMaxPlans);
    EXPECT_EQ(Arena::kDefaultMaxPlans, 8u);
  }
  {
    ScopedEnv env("BIREF_ARENA_PLANS", "1");
    Arena a;
    EXPECT_EQ(a.max_plans(), 1u);
    run_pattern(a, {1}, 100);
    run_pattern(a, {2}, 200);
    run_pattern(a, {1}, 100);  // one plan: alternating shapes record every time
    EXPECT_GT(a.heap_allocations(), 0u);
  }
  EXPECT_EQ(Arena(3).max_plans(), 3u);
  for (const char* bad : {"0", "-2", "x", "4x", "100000"}) {
    ScopedEnv env("BIREF_ARENA_PLANS", bad);
    EXPECT_THROW(Arena(), Error) << bad;
  }
}

TEST(ArenaPlans, ModelAlternatingSizesReplaysBitForBit) {
  HostTensor a = {{1, 3, 64, 64}, test::random_vector(3 * 64 * 64, 11)};
  HostTensor b = {{1, 3, 64, 96}, test::random_vector(3 * 64 * 96, 12)};  // 96x64 (W x H)
  auto other = Model::load("synthetic:swin_v1_t");
  other->forward(b);
  const size_t plan_b = other->activation_bytes();
  other.reset();

  auto model = Model::load("synthetic:swin_v1_t");
  const HostTensor first = model->forward(a);
  const size_t plan_a = model->activation_bytes();
  ASSERT_GT(plan_a, 0u);
  ASSERT_GT(plan_b, plan_a);
  const HostTensor lb = model->forward(b);
  EXPECT_EQ(model->activation_bytes(), plan_b);  // the larger plan only, not plan_a + plan_b
  const HostTensor again = model->forward(a);    // replays its own plan inside that block
  EXPECT_EQ(again.data, first.data);
  EXPECT_EQ(model->activation_bytes(), plan_b);
  EXPECT_EQ(model->forward(b).data, lb.data);
  std::printf("activation plans: 64x64 %.2f MiB, 96x64 %.2f MiB, held %.2f MiB\n",
              plan_a / 1048576.0, plan_b / 1048576.0, model->activation_bytes() / 1048576.0);
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

// The recording pass (a shape seen for the first time) takes its tensors from one reserved
// range and reuses a piece once its tensor is gone, so it touches about its peak, not the sum
// of everything it allocates; the range then becomes the block, already faulted in.
TEST(ArenaRecording, FreedPiecesAreReusedAndTheRangeBecomesTheBlock) {
  Arena a;
  a.begin_run({7});
  float* first = nullptr;
  {
    Tensor t = a.empty({1 << 18});  // 1 MiB
    first = t.data;
    std::memset(t.data, 1, size_t(1) << 20);
  }
  {
    Tensor t = a.empty({1 << 18});  // the same piece again
    EXPECT_EQ(t.data, first);
    Tensor u = a.empty({1 << 17});  // beside it
    EXPECT_EQ(u.data, first + (1 << 18));
  }
  {
    Tensor small = a.empty({1000});  // best fit: the start of the free range
    EXPECT_EQ(small.data, first);
  }
  a.end_run();
  EXPECT_EQ(a.heap_allocations(), 4u);
  EXPECT_EQ(a.bytes_held(), size_t(1 << 20) + size_t(1 << 19));
  a.begin_run({7});
  {
    Tensor t = a.empty({1 << 18});
    EXPECT_EQ(t.data, first) << "the block is the recording's range";
    Tensor t2 = a.empty({1 << 18});
    Tensor u = a.empty({1 << 17});
    Tensor small = a.empty({1000});
    (void)t2;
    (void)u;
    (void)small;
  }
  a.end_run();
  EXPECT_EQ(a.heap_allocations(), 0u);
}

TEST(ArenaRecording, ATensorKeptPastThePassKeepsItsMemory) {
  Arena a;
  a.begin_run({3});
  Tensor kept = a.empty({4096});
  for (int i = 0; i < 4096; ++i) kept.data[i] = float(i);
  {
    Tensor t = a.empty({4096});
    std::memset(t.data, 0, 4096 * sizeof(float));
  }
  a.end_run();  // `kept` is alive: the range is not handed over as the block
  a.begin_run({3});
  {
    Tensor x = a.empty({4096});
    Tensor y = a.empty({4096});
    for (int i = 0; i < 4096; ++i) x.data[i] = y.data[i] = -1.f;
  }
  a.end_run();
  EXPECT_EQ(a.heap_allocations(), 0u);
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(kept.data[i], float(i)) << i;
}

}  // namespace
}  // namespace biref
