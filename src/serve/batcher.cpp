#include "serve/batcher.h"

#include <omp.h>

#include <algorithm>

#include "biref/threads.h"
#include "core/check.h"

namespace biref::serve {

namespace {
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

// ---- WorkPool ----

WorkPool::WorkPool(int threads, size_t capacity, std::function<void()> thread_init)
    : capacity_(std::max<size_t>(capacity, 1)), init_(std::move(thread_init)) {
  BIREF_CHECK(threads >= 1, "a work pool needs at least one thread, got ", threads);
  for (int t = 0; t < threads; ++t) threads_.emplace_back([this] { loop(); });
}

WorkPool::~WorkPool() {
  stop();
}

void WorkPool::submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    BIREF_CHECK_KIND(!stopping_, ErrorKind::Unavailable, "the server is shutting down");
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

bool WorkPool::try_submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || jobs_.size() >= capacity_) return false;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

size_t WorkPool::depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

void WorkPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void WorkPool::loop() {
  if (init_) init_();
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job();
    } catch (...) {
      ++exceptions_;
    }
  }
}

// ---- Batcher ----

Batcher::Batcher(const Model& model, const BatcherOptions& options,
                 std::function<void(int, double)> on_batch)
    : options_(options), on_batch_(std::move(on_batch)) {
  BIREF_CHECK(options.workers >= 1 && options.workers <= 256, "workers must be 1..256, got ",
              options.workers);
  BIREF_CHECK(options.max_batch >= 1 && options.max_batch <= 64, "max batch must be 1..64, got ",
              options.max_batch);
  BIREF_CHECK(options.max_wait_ms >= 0 && options.max_wait_ms <= 60000,
              "max wait must be 0..60000 ms, got ", options.max_wait_ms);
  BIREF_CHECK(options.capacity >= 1, "the queue capacity must be at least 1");
  if (options_.threads_per_worker <= 0) {
    // The CPUs this process may use (affinity mask, cgroup quota), shared out.
    options_.threads_per_worker = std::max(1, cpu_budget().threads / options_.workers);
  }
  // Each fork gets a fixed share: the automatic count would see the other workers' threads as
  // its own and give every worker all the CPUs.
  for (int w = 0; w < options_.workers; ++w) {
    forks_.push_back(model.fork());
    forks_.back()->set_threads(options_.threads_per_worker);
  }
  for (int w = 0; w < options_.workers; ++w) threads_.emplace_back([this, w] { loop(w); });
}

Batcher::~Batcher() {
  stop();
}

void Batcher::submit(SegmentJob job) {
  BIREF_CHECK(job.done && job.rgb, "a segment job needs an image and a completion callback");
  // Jobs that would run through the same model size (and resize) may share a batch.
  Predictor probe({forks_.front().get()}, job.options);
  int mw = 0, mh = 0;
  probe.model_size(job.rgb->width, job.rgb->height, mw, mh);
  Queued q{std::move(job), Clock::now(), ""};
  if (!probe.tiled(q.job.rgb->width, q.job.rgb->height) && !q.job.options.flip)
    q.key = str_cat(mw, "x", mh, q.job.options.dynamic ? " dynamic" : " fixed");
  {
    std::lock_guard<std::mutex> lock(mu_);
    BIREF_CHECK_KIND(!stopping_, ErrorKind::Unavailable, "the server is shutting down");
    BIREF_CHECK_KIND(queue_.size() < options_.capacity, ErrorKind::Unavailable,
                     "the model's queue is full (", options_.capacity, " images waiting)");
    queue_.push_back(std::move(q));
  }
  cv_.notify_all();
}

size_t Batcher::depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

BatcherStats Batcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void Batcher::loop(int worker) {
  omp_set_num_threads(options_.threads_per_worker);  // the pipeline's own regions
  for (;;) {
    std::vector<Queued> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
      const std::string key = batch.front().key;
      // Moves the queued jobs that may join this batch into it, up to max_batch.
      auto take_matching = [&] {
        for (auto it = queue_.begin();
             it != queue_.end() && int(batch.size()) < options_.max_batch;) {
          if (it->key == key) {
            batch.push_back(std::move(*it));
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
      };
      if (!key.empty() && options_.max_batch > 1) {
        const auto until = batch.front().enqueued +
                           std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double, std::milli>(options_.max_wait_ms));
        for (;;) {
          take_matching();
          if (int(batch.size()) >= options_.max_batch || stopping_) break;
          if (cv_.wait_until(lock, until) == std::cv_status::timeout) {
            take_matching();  // the jobs that arrived with the timeout
            break;
          }
        }
      }
    }
    run_batch(worker, batch);
  }
}

void Batcher::run_batch(int worker, std::vector<Queued>& batch) {
  const auto start = Clock::now();
  // Jobs whose client left or whose deadline passed while they waited do not run.
  std::vector<Queued*> live;
  uint64_t expired = 0, cancelled = 0;
  for (auto& q : batch) {
    if (q.job.cancelled && q.job.cancelled->load()) {
      ++cancelled;
      JobOutcome out;
      out.dropped = "cancelled";
      out.error = std::make_exception_ptr(
          Error("the client closed the connection", ErrorKind::Unavailable));
      q.job.done(std::move(out));
    } else if (start > q.job.deadline) {
      ++expired;
      JobOutcome out;
      out.dropped = "expired";
      out.queue_ms = ms_between(q.enqueued, start);
      out.error =
          std::make_exception_ptr(Error(str_cat("the request waited ", int64_t(out.queue_ms),
                                                " ms in the queue, past its deadline"),
                                        ErrorKind::Unavailable));
      q.job.done(std::move(out));
    } else {
      live.push_back(&q);
    }
  }
  std::vector<Image> masks;
  std::exception_ptr error;
  double infer_ms = 0;
  if (!live.empty()) {
    try {
      Predictor predictor({forks_[size_t(worker)].get()}, live.front()->job.options);
      std::vector<const Image*> rgbs;
      for (auto* q : live) rgbs.push_back(q->job.rgb.get());
      masks = predictor.masks(rgbs);
    } catch (...) {
      error = std::current_exception();
    }
    infer_ms = ms_between(start, Clock::now());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.expired += expired;
    stats_.cancelled += cancelled;
    if (!live.empty()) {
      ++stats_.batches;
      stats_.images += live.size();
      if (error) stats_.failed += live.size();
    }
  }
  if (!live.empty() && on_batch_) on_batch_(int(live.size()), infer_ms);
  for (size_t i = 0; i < live.size(); ++i) {
    JobOutcome out;
    out.queue_ms = ms_between(live[i]->enqueued, start);
    out.infer_ms = infer_ms;
    out.batch_size = int(live.size());
    if (error) {
      out.error = error;
    } else {
      out.mask = std::move(masks[i]);
    }
    live[i]->job.done(std::move(out));
  }
}

}  // namespace biref::serve
