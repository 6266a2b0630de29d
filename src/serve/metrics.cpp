#include "serve/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/check.h"

namespace biref::serve {

namespace {

bool is_metric_name(const std::string& s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Label names starting with "__" are reserved for Prometheus itself.
bool is_label_name(const std::string& s) {
  if (s.empty() || s.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    static const uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += n + 1;
  }
  return true;
}

// Label values: backslash, double quote and newline escaped.
void append_label_value(std::string& out, const std::string& v) {
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// HELP text: backslash and newline escaped (a double quote stays).
std::string escape_help(const std::string& h) {
  std::string out;
  for (const char c : h) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="x",b="y"} (with `extra` appended as a last pair when given), or "" without labels.
std::string label_set(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      const char* extra_name = nullptr, const std::string& extra_value = "") {
  if (names.empty() && !extra_name) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += names[i];
    out += "=\"";
    append_label_value(out, values[i]);
    out += '"';
  }
  if (extra_name) {
    if (!names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    append_label_value(out, extra_value);
    out += '"';
  }
  return out + "}";
}

std::string printable(const std::string& s) {
  std::string out;
  append_label_value(out, s);
  return out;
}

}  // namespace

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integers below 2^53 are exact in a double: print them as integers ("1000000", not "1e+06").
  if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip form
  return std::string(buf, r.ptr);
}

// ---- Children -------------------------------------------------------------------------------

void Counter::inc(double v) {
  BIREF_CHECK_KIND(v >= 0, ErrorKind::Internal, "a counter can only go up: inc(", format_value(v),
                   ")");
  value_.fetch_add(v, std::memory_order_relaxed);
}

double Gauge::value() const {
  if (!fn_) return value_.load(std::memory_order_relaxed);
  try {
    return fn_();
  } catch (...) {
    return std::numeric_limits<double>::quiet_NaN();  // a failing callback must not fail a scrape
  }
}

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(bounds->size() + 1, 0) {}

void Histogram::observe(double v) {
  // The first bound >= v; NaN compares false everywhere and lands in +Inf.
  const size_t b =
      std::isnan(v)
          ? bounds_->size()
          : size_t(std::lower_bound(bounds_->begin(), bounds_->end(), v) - bounds_->begin());
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[b];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  std::lock_guard<std::mutex> lock(mu_);
  s.cumulative.resize(counts_.size());
  uint64_t acc = 0;
  for (size_t i = 0; i < counts_.size(); ++i) s.cumulative[i] = acc += counts_[i];
  s.sum = sum_;
  s.count = count_;
  return s;
}

// ---- Families -------------------------------------------------------------------------------

template <typename Child>
Family<Child>::Family(std::string name, std::string help, std::vector<std::string> label_names,
                      std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {}

template <typename Child>
void Family<Child>::check_values(const std::vector<std::string>& values) const {
  BIREF_CHECK_KIND(values.size() == label_names_.size(), ErrorKind::Internal, "metric ", name_,
                   " has ", label_names_.size(), " label(s), given ", values.size(), " value(s)");
  for (const auto& v : values) {
    BIREF_CHECK_KIND(is_utf8(v), ErrorKind::Internal, "metric ", name_,
                     ": a label value is not UTF-8: \"", printable(v), "\"");
  }
}

template <typename Child>
Child& Family<Child>::make(const std::vector<std::string>& values, std::function<double()> fn) {
  std::unique_ptr<Child> child;
  if constexpr (std::is_same_v<Child, Histogram>) {
    child = std::make_unique<Histogram>(&bounds_);
  } else if constexpr (std::is_same_v<Child, Gauge>) {
    child = fn ? std::make_unique<Gauge>(std::move(fn)) : std::make_unique<Gauge>();
  } else {
    child = std::make_unique<Child>();
  }
  Child& ref = *child;
  children_.emplace(values, std::move(child));
  return ref;
}

template <typename Child>
Child& Family<Child>::labels(const std::vector<std::string>& values) {
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    const auto it = children_.find(values);
    if (it != children_.end()) return *it->second;
  }
  check_values(values);
  std::unique_lock<std::shared_mutex> lock(mu_);
  const auto it = children_.find(values);  // another thread may have made it meanwhile
  if (it != children_.end()) return *it->second;
  return make(values, nullptr);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void CallbackGaugeFamily::callback(const std::vector<std::string>& values,
                                   std::function<double()> fn) {
  BIREF_CHECK_KIND(fn != nullptr, ErrorKind::Internal, "metric ", family_->name_,
                   ": an empty callback");
  family_->check_values(values);
  std::unique_lock<std::shared_mutex> lock(family_->mu_);
  BIREF_CHECK_KIND(family_->children_.count(values) == 0, ErrorKind::Internal, "metric ",
                   family_->name_, ": the callback for these label values is already set");
  family_->make(values, std::move(fn));
}

// ---- Registry -------------------------------------------------------------------------------

struct Registry::Entry {
  const char* type;  // "counter", "gauge", "histogram"
  std::unique_ptr<CounterFamily> counter;
  std::unique_ptr<GaugeFamily> gauge;
  std::unique_ptr<HistogramFamily> histogram;
};

Registry::Registry() = default;
Registry::~Registry() = default;

// Checks the names of a new family and takes its series names; called under mu_.
void Registry::reserve_names(const std::string& name, const std::vector<std::string>& label_names,
                             const char* type) {
  BIREF_CHECK_KIND(is_metric_name(name), ErrorKind::Internal, "bad metric name \"", printable(name),
                   "\": use [a-zA-Z_:][a-zA-Z0-9_:]*");
  const std::string t = type;
  if (t == "counter") {
    BIREF_CHECK_KIND(ends_with(name, "_total") && name.size() > 6, ErrorKind::Internal,
                     "counter name ", name, " must end in _total");
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const auto& l = label_names[i];
    BIREF_CHECK_KIND(is_label_name(l), ErrorKind::Internal, "metric ", name, ": bad label name \"",
                     printable(l), "\": use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __");
    BIREF_CHECK_KIND(!(t == "histogram" && l == "le"), ErrorKind::Internal, "histogram ", name,
                     ": the label name le is reserved for buckets");
    for (size_t j = 0; j < i; ++j) {
      BIREF_CHECK_KIND(label_names[j] != l, ErrorKind::Internal, "metric ", name, ": label name ",
                       l, " given twice");
    }
  }
  std::vector<std::string> series = {name};
  if (t == "histogram") {
    for (const char* s : {"_bucket", "_sum", "_count"}) series.push_back(name + s);
  }
  for (const auto& s : series) {
    BIREF_CHECK_KIND(
        std::find(series_names_.begin(), series_names_.end(), s) == series_names_.end(),
        ErrorKind::Internal, "metric name ", s, " is already registered");
  }
  series_names_.insert(series_names_.end(), series.begin(), series.end());
}

CounterFamily& Registry::counter(const std::string& name, const std::string& help,
                                 const std::vector<std::string>& label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  reserve_names(name, label_names, "counter");
  auto e = std::make_unique<Entry>();
  e->type = "counter";
  e->counter.reset(new CounterFamily(name, help, label_names));
  if (label_names.empty()) e->counter->make({}, nullptr);
  families_.push_back(std::move(e));
  return *families_.back()->counter;
}

GaugeFamily& Registry::gauge(const std::string& name, const std::string& help,
                             const std::vector<std::string>& label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  reserve_names(name, label_names, "gauge");
  auto e = std::make_unique<Entry>();
  e->type = "gauge";
  e->gauge.reset(new GaugeFamily(name, help, label_names));
  if (label_names.empty()) e->gauge->make({}, nullptr);
  families_.push_back(std::move(e));
  return *families_.back()->gauge;
}

CallbackGaugeFamily Registry::gauge_callback(const std::string& name, const std::string& help,
                                             const std::vector<std::string>& label_names,
                                             std::function<double()> fn) {
  BIREF_CHECK_KIND(label_names.empty() == (fn != nullptr), ErrorKind::Internal, "gauge ", name,
                   label_names.empty() ? ": a callback gauge without labels needs its callback"
                                       : ": with label names, add callbacks per child");
  std::lock_guard<std::mutex> lock(mu_);
  reserve_names(name, label_names, "gauge");
  auto e = std::make_unique<Entry>();
  e->type = "gauge";
  e->gauge.reset(new GaugeFamily(name, help, label_names));
  if (fn) e->gauge->make({}, std::move(fn));
  families_.push_back(std::move(e));
  return CallbackGaugeFamily(families_.back()->gauge.get());
}

HistogramFamily& Registry::histogram(const std::string& name, const std::string& help,
                                     const std::vector<double>& bounds,
                                     const std::vector<std::string>& label_names) {
  std::vector<double> b = bounds;
  if (!b.empty() && b.back() == std::numeric_limits<double>::infinity()) b.pop_back();
  for (size_t i = 0; i < b.size(); ++i) {
    BIREF_CHECK_KIND(std::isfinite(b[i]), ErrorKind::Internal, "histogram ", name,
                     ": bucket bound ", format_value(b[i]), " is not finite");
    BIREF_CHECK_KIND(i == 0 || b[i] > b[i - 1], ErrorKind::Internal, "histogram ", name,
                     ": bucket bounds must increase strictly, but ", format_value(b[i]),
                     " follows ", format_value(b[i - 1]));
  }
  std::lock_guard<std::mutex> lock(mu_);
  reserve_names(name, label_names, "histogram");
  auto e = std::make_unique<Entry>();
  e->type = "histogram";
  e->histogram.reset(new HistogramFamily(name, help, label_names, std::move(b)));
  if (label_names.empty()) e->histogram->make({}, nullptr);
  families_.push_back(std::move(e));
  return *families_.back()->histogram;
}

std::string Registry::render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& e : families_) {
    const std::string* name;
    const std::string* help;
    if (e->counter) {
      name = &e->counter->name_, help = &e->counter->help_;
    } else if (e->gauge) {
      name = &e->gauge->name_, help = &e->gauge->help_;
    } else {
      name = &e->histogram->name_, help = &e->histogram->help_;
    }
    out += "# HELP " + *name + " " + escape_help(*help) + "\n";
    out += "# TYPE " + *name + " " + e->type + "\n";
    if (e->counter) {
      std::shared_lock<std::shared_mutex> fl(e->counter->mu_);
      for (const auto& [values, c] : e->counter->children_) {
        out += *name + label_set(e->counter->label_names_, values) + " " +
               format_value(c->value()) + "\n";
      }
    } else if (e->gauge) {
      // Copy the children out first: callbacks run without the family lock held.
      std::vector<std::pair<const std::vector<std::string>*, const Gauge*>> children;
      {
        std::shared_lock<std::shared_mutex> fl(e->gauge->mu_);
        for (const auto& [values, g] : e->gauge->children_) children.emplace_back(&values, g.get());
      }
      for (const auto& [values, g] : children) {
        out += *name + label_set(e->gauge->label_names_, *values) + " " + format_value(g->value()) +
               "\n";
      }
    } else {
      const HistogramFamily& f = *e->histogram;
      std::shared_lock<std::shared_mutex> fl(f.mu_);
      for (const auto& [values, h] : f.children_) {
        const Histogram::Snapshot s = h->snapshot();
        for (size_t i = 0; i < s.cumulative.size(); ++i) {
          const std::string le = i < f.bounds_.size() ? format_value(f.bounds_[i]) : "+Inf";
          out += *name + "_bucket" + label_set(f.label_names_, values, "le", le) + " " +
                 std::to_string(s.cumulative[i]) + "\n";
        }
        out +=
            *name + "_sum" + label_set(f.label_names_, values) + " " + format_value(s.sum) + "\n";
        out += *name + "_count" + label_set(f.label_names_, values) + " " +
               std::to_string(s.count) + "\n";
      }
    }
  }
  return out;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
  BIREF_CHECK_KIND(start > 0 && factor > 1 && count >= 1, ErrorKind::Internal,
                   "exponential_buckets(", start, ", ", factor, ", ", count,
                   "): needs start > 0, factor > 1, count >= 1");
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

double process_resident_bytes() {
  const char* path = "/proc/self/statm";
  FILE* f = std::fopen(path, "r");
  BIREF_CHECK_KIND(f != nullptr, ErrorKind::Internal, "cannot open ", path);
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  BIREF_CHECK_KIND(n == 2, ErrorKind::Internal, "cannot parse ", path);
  const long page = sysconf(_SC_PAGESIZE);
  BIREF_CHECK_KIND(page > 0, ErrorKind::Internal, "sysconf(_SC_PAGESIZE) failed");
  return double(resident) * double(page);
}

}  // namespace biref::serve
