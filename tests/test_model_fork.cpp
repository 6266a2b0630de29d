// Model::fork: one copy of the weights for many workers. A fork computes exactly what its
// parent computes, forks run concurrently on their own threads, the weights outlive the model
// they were loaded by, and a fork adds its activations to the process, not another copy of the
// weights.
#include <gtest/gtest.h>
#include <omp.h>

#include <unistd.h>
#include <fstream>

#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include "biref/biref.h"
#include "test_util.h"

namespace biref {
namespace {

size_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * size_t(sysconf(_SC_PAGESIZE));
}

HostTensor input(int64_t h, int64_t w, uint32_t seed) {
  return {{1, 3, h, w}, test::random_vector(size_t(3 * h * w), seed)};
}

TEST(ModelFork, MatchesItsParentBitForBitAndSharesTheWeights) {
  auto model = Model::load("synthetic:swin_v1_t");
  const HostTensor x = input(64, 96, 3);
  const HostTensor ref = model->forward(x);
  const size_t weights = model->weight_bytes();
  ASSERT_GT(weights, size_t(100) << 20);  // swin_v1_t: ~220 M parameters' worth, packed

  const size_t before = resident_bytes();
  auto fork = model->fork();
  EXPECT_EQ(fork->forward(x).data, ref.data);
  const double grown = double(resident_bytes()) - double(before);
  std::printf(
      "weights %.1f MiB; the fork and its first pass added %.1f MiB (activations %.1f MiB)\n",
      weights / 1048576.0, grown / 1048576.0, fork->activation_bytes() / 1048576.0);
  EXPECT_EQ(fork->weight_bytes(), weights);
  EXPECT_LT(grown, double(weights) / 4) << "a fork must not copy the weights";
  EXPECT_EQ(fork->info().backbone, model->info().backbone);

  // The weights live as long as any model that uses them.
  model.reset();
  EXPECT_EQ(fork->forward(x).data, ref.data);
  auto grandchild = fork->fork();
  fork.reset();
  EXPECT_EQ(grandchild->forward(x).data, ref.data);
}

TEST(ModelFork, ForksRunConcurrentlyAndAgreeWithOneThread) {
  auto model = Model::load("synthetic:swin_v1_t");
  const std::vector<HostTensor> inputs = {input(64, 64, 5), input(96, 64, 6), input(64, 128, 7)};
  // The reference on one thread, as each worker below runs.
  model->set_threads(1);
  std::vector<HostTensor> ref;
  for (const auto& x : inputs) ref.push_back(model->forward(x));
  EXPECT_EQ(model->last_threads(), 1);

  constexpr int kWorkers = 3, kRounds = 3;
  std::vector<std::unique_ptr<Model>> forks;
  for (int w = 0; w < kWorkers; ++w) forks.push_back(model->fork());  // fixed at 1, as the model
  std::vector<int> mismatches(kWorkers, 0);
  std::vector<std::thread> pool;
  for (int w = 0; w < kWorkers; ++w) {
    pool.emplace_back([&, w] {
      for (int r = 0; r < kRounds; ++r) {
        for (size_t i = 0; i < inputs.size(); ++i) {
          const size_t k = (i + size_t(w)) % inputs.size();  // workers on different shapes
          if (forks[size_t(w)]->forward(inputs[k]).data != ref[k].data) ++mismatches[size_t(w)];
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  for (int w = 0; w < kWorkers; ++w) {
    EXPECT_EQ(mismatches[size_t(w)], 0) << "worker " << w;
    EXPECT_EQ(forks[size_t(w)]->last_threads(), 1) << "worker " << w;
  }
}

double rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  return 0;
}

// A server unloads models to stay under its memory budget: what a model held must leave the
// process, not stay in the C allocator's free lists.
TEST(ModelFork, UnloadingAModelGivesItsMemoryBack) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's allocator keeps freed memory in quarantine";
#endif
  const double before = rss_mb();
  double loaded = 0;
  {
    auto model = Model::load("synthetic:swin_v1_t");
    auto fork = model->fork();
    fork->forward(input(64, 64, 3));
    loaded = rss_mb();
  }
  const double after = rss_mb();
  std::printf("RSS %.0f MB before, %.0f with the model, %.0f after\n", before, loaded, after);
  EXPECT_GT(loaded, before + 150);  // the weights: 170 MB
  EXPECT_LT(after, before + 40);
}

TEST(ModelFork, ReferenceBackendForksToo) {
  LoadOptions ref;
  ref.device = Device::Reference;
  auto model = Model::load("synthetic:swin_v1_t", ref);
  const HostTensor x = input(32, 32, 9);
  const HostTensor a = model->forward(x);
  auto fork = model->fork();
  EXPECT_EQ(fork->forward(x).data, a.data);
  EXPECT_EQ(fork->info().device, "reference");
}

}  // namespace
}  // namespace biref
