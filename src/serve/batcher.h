// The service's work queues: a bounded pool for decode/encode work that refuses instead of
// blocking (WorkPool), and the per-model queue with dynamic batching in front of the workers
// that run the model (Batcher). Each Batcher worker owns a fork of the model: one copy of the
// weights, an activation arena per worker.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "biref/biref.h"
#include "biref/pipeline.h"

namespace biref::serve {

using Clock = std::chrono::steady_clock;

// `threads` threads running jobs from a queue of at most `capacity`; try_submit returns false
// when the queue is full or the pool is stopping (the caller answers 503). A job's exception is
// the job's business: jobs must not throw (one that does is counted and ignored).
class WorkPool {
 public:
  // `thread_init` runs once on each thread before its first job (e.g. its OpenMP thread count).
  WorkPool(int threads, size_t capacity, std::function<void()> thread_init = {});
  ~WorkPool();  // stop()
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  bool try_submit(std::function<void()> job);
  // Queues whatever the depth: for the second half of work already admitted (encoding a result
  // that has been computed). Throws biref::Error (Unavailable) only when stopping.
  void submit(std::function<void()> job);
  size_t depth() const;  // queued, not yet running
  size_t capacity() const { return capacity_; }
  uint64_t job_exceptions() const { return exceptions_; }
  // Refuses new jobs, runs the queued ones, joins the threads. Idempotent.
  void stop();

 private:
  void loop();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  size_t capacity_;
  bool stopping_ = false;
  std::atomic<uint64_t> exceptions_{0};
  std::function<void()> init_;
  std::vector<std::thread> threads_;
};

// What a Batcher job produced.
struct JobOutcome {
  Image mask;                     // the soft mask at the image's size, unless error is set
  std::exception_ptr error;       // biref::Error (Unavailable: deadline passed, stopping), ...
  double queue_ms = 0;            // from submit() to the start of its batch
  double infer_ms = 0;            // the batch's model time
  int batch_size = 0;             // images in the batch it ran in
  const char* dropped = nullptr;  // "cancelled" (client gone) or "expired" (deadline): not run
};

struct SegmentJob {
  std::shared_ptr<const Image> rgb;  // decoded RGB (shared with whoever renders the output)
  PredictOptions options;            // model size / dynamic / tiling of this request
  Clock::time_point deadline = Clock::time_point::max();  // not started by then: refused
  // Set by the server when the client hung up: the job is dropped without running.
  std::shared_ptr<std::atomic<bool>> cancelled;
  // Called exactly once, on a worker thread (or in submit's caller when refused later by stop).
  std::function<void(JobOutcome&&)> done;
};

struct BatcherOptions {
  int workers = 1;             // threads running the model, each on its own fork
  int max_batch = 1;           // images run as one [B, 3, h, w] batch at most
  double max_wait_ms = 0;      // a batch waits this long after its first job for more
  size_t capacity = 32;        // jobs queued at most; submit() refuses beyond
  int threads_per_worker = 0;  // OpenMP threads of each worker; 0: cores / workers (at least 1)
};

struct BatcherStats {
  uint64_t batches = 0, images = 0, expired = 0, cancelled = 0, failed = 0;
};

class Batcher {
 public:
  // Forks `model` once per worker (the weights are shared). `on_batch` (optional) is called on
  // the worker thread after each batch with its size.
  Batcher(const Model& model, const BatcherOptions& options,
          std::function<void(int batch_size, double infer_ms)> on_batch = {});
  ~Batcher();  // stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues a job. Throws biref::Error (Unavailable) when the queue is full or stopping, and
  // biref::Error (InvalidInput) when its options do not fit the image (job.done is then not
  // called).
  void submit(SegmentJob job);
  size_t depth() const;
  const BatcherOptions& options() const { return options_; }
  BatcherStats stats() const;
  // Refuses new jobs, runs every queued one (drains), joins the workers. Idempotent.
  void stop();

 private:
  struct Queued {
    SegmentJob job;
    Clock::time_point enqueued;
    std::string key;  // jobs with equal keys may share a batch; "" never batches
  };
  void loop(int worker);
  void run_batch(int worker, std::vector<Queued>& batch);

  BatcherOptions options_;
  std::vector<std::unique_ptr<Model>> forks_;
  std::function<void(int, double)> on_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  bool stopping_ = false;
  BatcherStats stats_;
  std::vector<std::thread> threads_;
};

}  // namespace biref::serve
