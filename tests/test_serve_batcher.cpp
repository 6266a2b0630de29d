// The service's queues without HTTP: the work pool refuses when full and drains on stop; the
// batcher runs images of one model size together (up to max_batch, waiting at most max_wait),
// never mixes sizes, refuses beyond its capacity, drops jobs whose client left or whose
// deadline passed, and answers every queued job when stopped. Masks equal the Predictor's.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <thread>

#include "biref/pipeline.h"
#include "serve/batcher.h"

namespace biref::serve {
namespace {

std::shared_ptr<const Image> gradient(int w, int h, int seed) {
  auto im = std::make_shared<Image>();
  im->width = w;
  im->height = h;
  im->channels = 3;
  im->pixels.resize(size_t(w) * h * 3);
  for (size_t i = 0; i < im->pixels.size(); ++i) im->pixels[i] = uint8_t((i * 7 + seed * 31) % 251);
  return im;
}

PredictOptions at(int size) {
  PredictOptions po;
  po.width = po.height = size;
  return po;
}

// Collects outcomes; wait() returns once `n` have arrived (at most 60 s).
struct Outcomes {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<JobOutcome> got;
  std::function<void(JobOutcome&&)> sink() {
    return [this](JobOutcome&& o) {
      std::lock_guard<std::mutex> lock(mu);
      got.push_back(std::move(o));
      cv.notify_all();
    };
  }
  bool wait(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(60), [&] { return got.size() >= n; });
  }
};

// The sizes of the batches a Batcher ran, in order (its on_batch hook runs on worker threads).
struct BatchLog {
  std::mutex mu;
  std::vector<int> batches;
  std::function<void(int, double)> hook() {
    return [this](int size, double) {
      std::lock_guard<std::mutex> lock(mu);
      batches.push_back(size);
    };
  }
  std::vector<int> sizes() {
    std::lock_guard<std::mutex> lock(mu);
    return batches;
  }
};

TEST(ServeWorkPool, RefusesWhenFullAndRunsWhatItAcceptedOnStop) {
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> ran{0};
  WorkPool pool(1, 2);
  ASSERT_TRUE(pool.try_submit([&] {
    gate.wait();
    ++ran;
  }));  // running
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(pool.try_submit([&] { ++ran; }));
  EXPECT_TRUE(pool.try_submit([&] { ++ran; }));
  EXPECT_FALSE(pool.try_submit([&] { ++ran; })) << "the queue holds 2";
  EXPECT_EQ(pool.depth(), 2u);
  pool.submit([&] { ++ran; });  // a continuation is always taken
  release.set_value();
  pool.stop();
  EXPECT_EQ(ran, 4);
  EXPECT_FALSE(pool.try_submit([] {}));
  EXPECT_THROW(pool.submit([] {}), Error);
}

TEST(ServeBatcher, BatchesOneSizeUpToMaxBatchAndMatchesThePredictor) {
  auto model = Model::load("synthetic:swin_v1_t");
  BatcherOptions bo;
  bo.max_batch = 3;
  bo.max_wait_ms = 2000;  // long enough that the jobs below are all queued before it ends
  BatchLog log;
  Batcher batcher(*model, bo, log.hook());
  Outcomes out;
  std::vector<std::shared_ptr<const Image>> images;
  for (int i = 0; i < 4; ++i) images.push_back(gradient(40 + i, 30, i));
  for (int i = 0; i < 4; ++i) {
    SegmentJob job;
    job.rgb = images[size_t(i)];
    job.options = at(64);
    job.done = out.sink();
    batcher.submit(std::move(job));
  }
  ASSERT_TRUE(out.wait(4));
  EXPECT_EQ(log.sizes(), (std::vector<int>{3, 1}));
  const Predictor predictor({model.get()}, at(64));
  for (const auto& o : out.got) {
    ASSERT_FALSE(o.error);
    EXPECT_TRUE(o.batch_size == 3 || o.batch_size == 1);
    // a batch of 3 may block its sums differently from a batch of 1: within one level
    int worst = 256;
    for (const auto& im : images) {
      if (im->width != o.mask.width) continue;
      const Image alone = predictor.mask(*im);
      ASSERT_EQ(alone.pixels.size(), o.mask.pixels.size());
      worst = 0;
      for (size_t k = 0; k < alone.pixels.size(); ++k)
        worst = std::max(worst, std::abs(int(alone.pixels[k]) - int(o.mask.pixels[k])));
    }
    EXPECT_LE(worst, 1) << "the mask of width " << o.mask.width << " differs from the Predictor's";
  }
}

TEST(ServeBatcher, SizesDoNotMixAndMaxWaitBoundsTheWait) {
  auto model = Model::load("synthetic:swin_v1_t");
  BatcherOptions bo;
  bo.max_batch = 8;
  bo.max_wait_ms = 100;
  BatchLog log;
  Batcher batcher(*model, bo, log.hook());
  Outcomes out;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 4; ++i) {
    SegmentJob job;
    job.rgb = gradient(48, 32, i);
    job.options = at(i % 2 ? 64 : 96);  // two model sizes
    job.done = out.sink();
    batcher.submit(std::move(job));
  }
  ASSERT_TRUE(out.wait(4));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<int> sizes = log.sizes();
  std::sort(sizes.begin(), sizes.end());
  EXPECT_EQ(sizes, (std::vector<int>{2, 2})) << "one batch per model size";
  EXPECT_LT(s, 30) << "a batch that cannot fill waits max_wait, not forever";
}

TEST(ServeBatcher, RefusesBeyondCapacityDropsCancelledAndExpiredJobsAndDrainsOnStop) {
  auto model = Model::load("synthetic:swin_v1_t");
  BatcherOptions bo;
  bo.capacity = 3;
  auto batcher = std::make_unique<Batcher>(*model, bo);
  Outcomes out;
  // A large first image keeps the worker busy while the queue fills.
  SegmentJob busy;
  busy.rgb = gradient(64, 64, 0);
  busy.options = at(512);
  busy.done = out.sink();
  batcher->submit(std::move(busy));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto gone = std::make_shared<std::atomic<bool>>(false);
  SegmentJob cancelled, expired, fine;
  cancelled.rgb = expired.rgb = fine.rgb = gradient(32, 32, 1);
  cancelled.options = expired.options = fine.options = at(64);
  cancelled.cancelled = gone;
  expired.deadline = Clock::now();  // passed by the time the worker is free
  cancelled.done = expired.done = fine.done = out.sink();
  batcher->submit(std::move(cancelled));
  batcher->submit(std::move(expired));
  batcher->submit(std::move(fine));
  EXPECT_EQ(batcher->depth(), 3u);
  SegmentJob extra;
  extra.rgb = gradient(32, 32, 2);
  extra.options = at(64);
  extra.done = out.sink();
  try {
    batcher->submit(std::move(extra));
    ADD_FAILURE() << "a full queue must refuse";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unavailable);
    EXPECT_NE(std::string(e.what()).find("queue is full"), std::string::npos) << e.what();
  }
  gone->store(true);
  batcher->stop();  // drains: every queued job is answered
  ASSERT_TRUE(out.wait(4));
  int dropped_cancelled = 0, dropped_expired = 0, ok = 0;
  for (const auto& o : out.got) {
    if (o.dropped && std::string(o.dropped) == "cancelled") ++dropped_cancelled;
    if (o.dropped && std::string(o.dropped) == "expired") ++dropped_expired;
    if (!o.error) ++ok;
  }
  EXPECT_EQ(dropped_cancelled, 1);
  EXPECT_EQ(dropped_expired, 1);
  EXPECT_EQ(ok, 2);
  const BatcherStats st = batcher->stats();
  EXPECT_EQ(st.cancelled, 1u);
  EXPECT_EQ(st.expired, 1u);
  EXPECT_EQ(st.images, 2u);
  SegmentJob late;
  late.rgb = gradient(32, 32, 3);
  late.options = at(64);
  late.done = out.sink();
  EXPECT_THROW(batcher->submit(std::move(late)), Error) << "a stopped batcher refuses";
}

}  // namespace
}  // namespace biref::serve
