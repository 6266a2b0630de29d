// Bounded worker pools: `ordered_map` (work items computed in parallel, consumed in order on the
// calling thread, with a bounded number of results waiting) and `TaskQueue` (a bounded queue of
// background jobs). Used by `biref eval` (score images in parallel, add them in file order) and
// `biref segment` (decode ahead and write behind the model).
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace biref {

// Runs produce(i) for i in [0, n) on `threads` worker threads (at least one) and consume(i, r)
// on the calling thread in index order. At most `window` items are in flight (being produced or
// waiting for consume), so memory stays at `window` results whatever n is. The first exception,
// from produce or consume, stops the workers; it is rethrown once every thread has been joined.
template <typename R>
void ordered_map(size_t n, int threads, size_t window, const std::function<R(size_t)>& produce,
                 const std::function<void(size_t, R&)>& consume) {
  if (n == 0) return;
  window = std::max<size_t>(window, 1);
  threads = std::max(1, std::min<int>(threads, int(std::min(n, window))));
  std::mutex mu;
  std::condition_variable can_take, ready;
  size_t next = 0, consumed = 0;
  bool stop = false;
  std::exception_ptr error;
  std::map<size_t, std::optional<R>> done;  // produced, waiting for their turn

  auto worker = [&]() noexcept {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        can_take.wait(lock, [&] { return stop || next >= n || next < consumed + window; });
        if (stop || next >= n) return;
        i = next++;
      }
      try {
        std::optional<R> r(produce(i));
        std::lock_guard<std::mutex> lock(mu);
        done[i] = std::move(r);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        stop = true;
        can_take.notify_all();
      }
      ready.notify_all();
    }
  };
  {
    std::vector<std::jthread> pool;  // joined on every path out of this block
    try {
      for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
    } catch (...) {
      if (pool.empty()) throw;  // not a single thread: nothing can run
    }
    try {
      for (size_t i = 0; i < n; ++i) {
        std::optional<R> r;
        {
          std::unique_lock<std::mutex> lock(mu);
          ready.wait(lock, [&] { return stop || done.count(i) > 0; });
          if (stop) break;
          r = std::move(done[i]);
          done.erase(i);
        }
        consume(i, *r);
        {
          std::lock_guard<std::mutex> lock(mu);
          consumed = i + 1;
        }
        can_take.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
      stop = true;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    can_take.notify_all();
  }
  if (error) std::rethrow_exception(error);
}

// Background jobs on `threads` threads, at most `capacity` queued: push() blocks while the queue
// is full, so a fast producer cannot pile up results in memory. The first exception of a job is
// kept; later pushes are dropped and finish() rethrows it. The destructor waits for the jobs.
class TaskQueue {
 public:
  TaskQueue(int threads, size_t capacity);
  ~TaskQueue();
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;

  void push(std::function<void()> job);
  // Waits until every pushed job has run; rethrows the first job's exception.
  void finish();

 private:
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_, idle_;
  std::deque<std::function<void()>> jobs_;
  size_t capacity_, running_ = 0;
  bool closing_ = false;
  std::exception_ptr error_;
  std::vector<std::jthread> threads_;
  void loop();
};

}  // namespace biref
