// The bounded worker pools of src/core/pool.h: order, bounds, and errors.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <stdexcept>
#include <thread>

#include "core/pool.h"

namespace biref {
namespace {

void nap(size_t i) {
  std::this_thread::sleep_for(std::chrono::microseconds((i * 7919) % 500));
}

TEST(OrderedMap, ConsumesInOrderWithABoundedWindow) {
  for (int threads : {1, 2, 5})
    for (size_t window : {1u, 3u, 16u}) {
      std::atomic<int> in_flight{0}, most{0};
      std::vector<size_t> seen;
      ordered_map<size_t>(
          200, threads, window,
          [&](size_t i) {
            const int now = ++in_flight;
            for (int m = most.load(); now > m && !most.compare_exchange_weak(m, now);) {
            }
            nap(i);
            return i * i;
          },
          [&](size_t i, size_t& r) {
            EXPECT_EQ(r, i * i);
            seen.push_back(i);
            --in_flight;  // consumed: no longer held
          });
      ASSERT_EQ(seen.size(), 200u);
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], i);
      EXPECT_LE(most.load(), int(window)) << threads << " threads, window " << window;
    }
  ordered_map<int>(
      0, 2, 2, [](size_t) { return 0; }, [](size_t, int&) { FAIL(); });
}

TEST(OrderedMap, TheFirstErrorStopsTheWorkAndIsRethrown) {
  std::atomic<size_t> produced{0};
  size_t consumed = 0;
  EXPECT_THROW(ordered_map<int>(
                   100000, 2, 4,
                   [&](size_t i) {
                     ++produced;
                     if (i == 50) throw std::runtime_error("bad item");
                     return int(i);
                   },
                   [&](size_t, int&) { ++consumed; }),
               std::runtime_error);
  EXPECT_LE(consumed, 50u);
  EXPECT_LT(produced.load(), 100u);  // stopped, not run to the end
  EXPECT_THROW(ordered_map<int>(
                   1000, 2, 4, [](size_t i) { return int(i); },
                   [](size_t i, int&) {
                     if (i == 10) throw std::logic_error("consumer");
                   }),
               std::logic_error);
}

TEST(TaskQueue, RunsEveryJobWithABoundedQueueAndReportsTheFirstError) {
  std::atomic<int> ran{0};
  {
    TaskQueue q(2, 3);
    for (int i = 0; i < 100; ++i)
      q.push([&, i] {
        nap(size_t(i));
        ++ran;
      });
    q.finish();
    EXPECT_EQ(ran.load(), 100);
  }
  TaskQueue q(1, 2);
  std::atomic<int> after{0};
  q.push([] { throw std::runtime_error("job failed"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (int i = 0; i < 10; ++i) q.push([&] { ++after; });  // dropped: a job has failed
  EXPECT_THROW(q.finish(), std::runtime_error);
  EXPECT_EQ(after.load(), 0);
  // usable again after the error was reported
  q.push([&] { ++after; });
  q.finish();
  EXPECT_EQ(after.load(), 1);
}

}  // namespace
}  // namespace biref
