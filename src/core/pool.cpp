#include "core/pool.h"

#include <algorithm>

namespace biref {

TaskQueue::TaskQueue(int threads, size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {
  threads = std::max(1, threads);
  for (int t = 0; t < threads; ++t) threads_.emplace_back([this] { loop(); });
}

TaskQueue::~TaskQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  not_empty_.notify_all();
  threads_.clear();  // joins: the queued jobs run first
}

void TaskQueue::push(std::function<void()> job) {
  std::unique_lock<std::mutex> lock(mu_);
  not_full_.wait(lock, [&] { return jobs_.size() < capacity_ || error_; });
  if (error_) return;  // a job failed: finish() reports it, nothing more runs
  jobs_.push_back(std::move(job));
  lock.unlock();
  not_empty_.notify_one();
}

void TaskQueue::finish() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [&] { return (jobs_.empty() && running_ == 0) || error_; });
  if (error_) {
    jobs_.clear();
    std::exception_ptr e = error_;
    error_ = nullptr;
    idle_.wait(lock, [&] { return running_ == 0; });
    std::rethrow_exception(e);
  }
}

void TaskQueue::loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      not_empty_.wait(lock, [&] { return !jobs_.empty() || closing_; });
      if (jobs_.empty()) return;  // closing, and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
      ++running_;
    }
    not_full_.notify_one();
    std::exception_ptr failed;
    try {
      job();
    } catch (...) {
      failed = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
      if (failed && !error_) {
        error_ = failed;
        jobs_.clear();
      }
    }
    not_full_.notify_all();
    idle_.notify_all();
  }
}

}  // namespace biref
