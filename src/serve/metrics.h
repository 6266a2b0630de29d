// A small Prometheus registry for `biref serve`: counters, gauges (set, or computed at scrape
// time) and histograms, each family with a fixed list of label names, rendered in the text
// exposition format 0.0.4 (what GET /metrics returns, Content-Type `text/plain; version=0.0.4`).
//
// Names: a metric name is passed exactly as it is exposed. A counter's name must end in `_total`
// (registration rejects it otherwise); a histogram's name is the base of its `_bucket`, `_sum`
// and `_count` series. Names are checked at registration and a bad one throws biref::Error
// naming it; so do a duplicate name and a series name that collides with another family's.
//
// Threads: everything is thread-safe. `labels()` returns a reference to a child that lives as
// long as the registry and never moves; keep it and update it from any thread without a lookup.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

namespace biref::serve {

class Counter {
 public:
  // Adds v (>= 0; a negative or NaN v throws biref::Error, as a counter only goes up).
  void inc(double v = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  Gauge() = default;
  explicit Gauge(std::function<double()> fn) : fn_(std::move(fn)) {}
  // set/inc/dec on a callback gauge are ignored: its value is the callback's.
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double v = 1) { value_.fetch_add(v, std::memory_order_relaxed); }
  void dec(double v = 1) { value_.fetch_sub(v, std::memory_order_relaxed); }
  // The callback's value when there is one (NaN if it throws), else the stored value.
  double value() const;

 private:
  std::atomic<double> value_{0};
  std::function<double()> fn_;  // set once, at creation
};

class Histogram {
 public:
  // `bounds`: the finite upper bounds, strictly increasing (the +Inf bucket is implicit).
  explicit Histogram(const std::vector<double>* bounds);
  // Counts v in the first bucket with v <= le (NaN: only in +Inf) and adds it to the sum.
  void observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double>* bounds_;  // owned by the family
  mutable std::mutex mu_;              // count, sum and buckets change together
  std::vector<uint64_t> counts_;       // per bucket, not cumulative; last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// A family: one name, one help text, fixed label names, and one child per list of label values.
// A family without label names has its single child created at registration (rendered as 0).
template <typename Child>
class Family {
 public:
  // The child for these label values (one per label name, in order), created on first use.
  // A wrong number of values, or a value that is not UTF-8, throws biref::Error.
  Child& labels(const std::vector<std::string>& values);
  // The child of a family without labels.
  Child& get() { return labels({}); }

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  friend class Registry;
  friend class CallbackGaugeFamily;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds = {});
  void check_values(const std::vector<std::string>& values) const;
  Child& make(const std::vector<std::string>& values, std::function<double()> fn);

  std::string name_, help_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;  // histograms only
  mutable std::shared_mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Child>> children_;  // sorted by values
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// A gauge family with callback children: `family.callback({"queue"}, [&] { return depth(); })`.
// The callback runs on the scraping thread, under the registry's lock: it must not register.
class CallbackGaugeFamily {
 public:
  // Adds the child for these label values; an existing child with the same values throws.
  void callback(const std::vector<std::string>& values, std::function<double()> fn);

 private:
  friend class Registry;
  explicit CallbackGaugeFamily(GaugeFamily* family) : family_(family) {}
  GaugeFamily* family_;
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  CounterFamily& counter(const std::string& name, const std::string& help,
                         const std::vector<std::string>& label_names = {});
  GaugeFamily& gauge(const std::string& name, const std::string& help,
                     const std::vector<std::string>& label_names = {});
  // A gauge family whose children are callbacks (see CallbackGaugeFamily). Without label names,
  // pass `fn` here; with them, add children through the returned family.
  CallbackGaugeFamily gauge_callback(const std::string& name, const std::string& help,
                                     const std::vector<std::string>& label_names,
                                     std::function<double()> fn = nullptr);
  // `bounds`: finite, strictly increasing; a trailing +Inf is accepted and dropped.
  HistogramFamily& histogram(const std::string& name, const std::string& help,
                             const std::vector<double>& bounds,
                             const std::vector<std::string>& label_names = {});

  // Every family, in registration order, in the text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Entry;
  void reserve_names(const std::string& name, const std::vector<std::string>& label_names,
                     const char* type);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> families_;
  std::vector<std::string> series_names_;  // every series name taken, for collisions
};

// `count` bounds start, start*factor, start*factor^2, ... (start > 0, factor > 1, count >= 1).
std::vector<double> exponential_buckets(double start, double factor, int count);

// A sample value as Prometheus reads it: integers without exponent or fraction ("3", "-12"),
// other finite values in the shortest form that reads back exactly ("0.25", "1e-07"),
// "+Inf", "-Inf", "NaN".
std::string format_value(double v);

// The resident set size of this process in bytes, from /proc/self/statm; throws biref::Error
// naming the file when it cannot be read or parsed (a callback gauge then renders NaN).
double process_resident_bytes();

}  // namespace biref::serve
