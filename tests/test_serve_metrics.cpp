// The Prometheus registry of `biref serve` (src/serve/metrics.h): exact text, escaping, buckets,
// threads, name checks, and promtool's verdict on the rendered text.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "biref/error.h"
#include "serve/metrics.h"

namespace biref::serve {
namespace {

TEST(ServeMetrics, RendersASmallRegistryExactly) {
  Registry r;
  auto& req = r.counter("biref_requests_total", "Requests served.", {"route", "code"});
  auto& busy = r.gauge("biref_busy_workers", "Workers running a request.");
  auto& lat = r.histogram("biref_request_seconds", "Request latency.", {0.1, 0.5, 2});
  req.labels({"POST /v1/segment", "200"}).inc();
  req.labels({"POST /v1/segment", "200"}).inc(2);
  req.labels({"GET /healthz", "200"}).inc();
  busy.get().set(3);
  busy.get().dec();
  lat.get().observe(0.05);
  lat.get().observe(0.5);
  lat.get().observe(7);
  EXPECT_EQ(r.render(),
            "# HELP biref_requests_total Requests served.\n"
            "# TYPE biref_requests_total counter\n"
            "biref_requests_total{route=\"GET /healthz\",code=\"200\"} 1\n"
            "biref_requests_total{route=\"POST /v1/segment\",code=\"200\"} 3\n"
            "# HELP biref_busy_workers Workers running a request.\n"
            "# TYPE biref_busy_workers gauge\n"
            "biref_busy_workers 2\n"
            "# HELP biref_request_seconds Request latency.\n"
            "# TYPE biref_request_seconds histogram\n"
            "biref_request_seconds_bucket{le=\"0.1\"} 1\n"
            "biref_request_seconds_bucket{le=\"0.5\"} 2\n"
            "biref_request_seconds_bucket{le=\"2\"} 2\n"
            "biref_request_seconds_bucket{le=\"+Inf\"} 3\n"
            "biref_request_seconds_sum 7.55\n"
            "biref_request_seconds_count 3\n");
}

TEST(ServeMetrics, UnlabelledFamiliesStartAtZeroAndLabelledOnesEmpty) {
  Registry r;
  r.counter("a_total", "A.");
  r.counter("b_total", "B.", {"x"});
  EXPECT_EQ(r.render(),
            "# HELP a_total A.\n# TYPE a_total counter\na_total 0\n"
            "# HELP b_total B.\n# TYPE b_total counter\n");
}

TEST(ServeMetrics, EscapesLabelValuesAndHelp) {
  Registry r;
  auto& c = r.counter("esc_total", "Help with \\ and\nnewline and \"quotes\".", {"v"});
  c.labels({"a\\b\"c\nd"}).inc();
  c.labels({"π ✓"}).inc();  // UTF-8 passes through
  EXPECT_EQ(r.render(),
            "# HELP esc_total Help with \\\\ and\\nnewline and \"quotes\".\n"
            "# TYPE esc_total counter\n"
            "esc_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"
            "esc_total{v=\"π ✓\"} 1\n");
  // Bytes that are not UTF-8 are refused when the child is made.
  EXPECT_THROW(c.labels({std::string("\xff\xfe")}), biref::Error);
  EXPECT_THROW(c.labels({std::string("\xc3")}), biref::Error);          // truncated
  EXPECT_THROW(c.labels({std::string("\xc0\xaf")}), biref::Error);      // overlong
  EXPECT_THROW(c.labels({std::string("\xed\xa0\x80")}), biref::Error);  // surrogate
  EXPECT_THROW(c.labels({"a", "b"}), biref::Error);                     // wrong arity
  EXPECT_THROW(c.labels({}), biref::Error);
}

TEST(ServeMetrics, FormatsValuesAsPrometheusReadsThem) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(-0.0), "0");
  EXPECT_EQ(format_value(1e6), "1000000");
  EXPECT_EQ(format_value(-12), "-12");
  EXPECT_EQ(format_value(123456789012345.0), "123456789012345");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(1e-7), "1e-07");
  EXPECT_EQ(format_value(1e300), "1e+300");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  for (double v : {0.1, 1.0 / 3, 2.5e-5, 6.02214076e23, -1e-300}) {
    EXPECT_EQ(std::strtod(format_value(v).c_str(), nullptr), v) << format_value(v);
  }
}

TEST(ServeMetrics, HistogramBucketsAreCumulative) {
  Registry r;
  const std::vector<double> bounds = {1, 2, 4, 8};
  auto& h = r.histogram("h_seconds", "H.", bounds, {"k"}).labels({"x"});
  // Values on a bound count in that bound's bucket (le means <=).
  const std::vector<double> values = {0, 1, 1.5, 2, 3, 4, 5, 8, 9, 100, -1, std::nan("")};
  for (double v : values) h.observe(v);
  const auto s = h.snapshot();
  ASSERT_EQ(s.cumulative.size(), bounds.size() + 1);
  for (size_t i = 0; i < bounds.size(); ++i) {
    uint64_t expect = 0;
    for (double v : values) expect += v <= bounds[i];  // NaN counts nowhere but +Inf
    EXPECT_EQ(s.cumulative[i], expect) << "le=" << bounds[i];
    if (i) {
      EXPECT_GE(s.cumulative[i], s.cumulative[i - 1]);
    }
  }
  EXPECT_EQ(s.cumulative.back(), values.size());
  EXPECT_EQ(s.count, values.size());
  EXPECT_TRUE(std::isnan(s.sum));
  const std::string text = r.render();
  EXPECT_NE(text.find("h_seconds_bucket{k=\"x\",le=\"1\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_seconds_bucket{k=\"x\",le=\"8\"} 9\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_seconds_bucket{k=\"x\",le=\"+Inf\"} 12\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_seconds_sum{k=\"x\"} NaN\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_seconds_count{k=\"x\"} 12\n"), std::string::npos) << text;
}

TEST(ServeMetrics, HistogramBoundsAreChecked) {
  Registry r;
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_THROW(r.histogram("h1", "H.", {1, 1}), biref::Error);
  EXPECT_THROW(r.histogram("h2", "H.", {2, 1}), biref::Error);
  EXPECT_THROW(r.histogram("h3", "H.", {1, std::nan("")}), biref::Error);
  EXPECT_THROW(r.histogram("h4", "H.", {-inf, 1}), biref::Error);
  try {
    r.histogram("h5", "H.", {0.5, 0.25});
    FAIL() << "decreasing bounds accepted";
  } catch (const biref::Error& e) {
    EXPECT_NE(std::string(e.what()).find("h5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("0.25"), std::string::npos) << e.what();
  }
  // A trailing +Inf is the implicit bucket; an empty list leaves only +Inf.
  r.histogram("h6", "H.", {1, inf}).get().observe(3);
  r.histogram("h7", "H.", {}).get().observe(3);
  const std::string text = r.render();
  EXPECT_NE(text.find("h6_bucket{le=\"1\"} 0\nh6_bucket{le=\"+Inf\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE h7 histogram\nh7_bucket{le=\"+Inf\"} 1\nh7_sum 3\nh7_count 1\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(exponential_buckets(0.01, 2, 4), (std::vector<double>{0.01, 0.02, 0.04, 0.08}));
  EXPECT_THROW(exponential_buckets(0, 2, 4), biref::Error);
  EXPECT_THROW(exponential_buckets(1, 1, 4), biref::Error);
}

TEST(ServeMetrics, ConcurrentUpdatesSumExactly) {
  Registry r;
  auto& c = r.counter("c_total", "C.", {"t"});
  auto& g = r.gauge("g", "G.");
  auto& h = r.histogram("h", "H.", {10, 100});
  const int threads = 8, n = 20000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < n; ++i) {
        c.labels({"shared"}).inc();  // the lookup, from every thread
        c.labels({std::to_string(t % 2)}).inc(0.5);
        g.get().inc();
        if (i % 2) g.get().dec(2);
        h.get().observe(i % 200);
        if (i % 1000 == 0) (void)r.render();  // scrapes during the updates
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(c.labels({"shared"}).value(), double(threads) * n);
  EXPECT_EQ(c.labels({"0"}).value() + c.labels({"1"}).value(), threads * n * 0.5);
  EXPECT_EQ(g.get().value(), 0);  // +1 on every step, -2 on every other
  const auto s = h.get().snapshot();
  EXPECT_EQ(s.count, uint64_t(threads) * n);
  EXPECT_EQ(s.cumulative[0], uint64_t(threads) * (n / 200) * 11);  // 0..10 of every 200
  EXPECT_EQ(s.cumulative[1], uint64_t(threads) * (n / 200) * 101);
  EXPECT_EQ(s.sum, double(threads) * (n / 200) * (199 * 200 / 2));
}

TEST(ServeMetrics, ChildrenKeepTheirAddress) {
  Registry r;
  auto& f = r.counter("k_total", "K.", {"i"});
  Counter* first = &f.labels({"0"});
  for (int i = 1; i < 1000; ++i) f.labels({std::to_string(i)});
  EXPECT_EQ(&f.labels({"0"}), first);
}

TEST(ServeMetrics, RejectsBadNames) {
  Registry r;
  auto expect_error = [](auto&& register_it, const std::string& fragment) {
    try {
      register_it();
      ADD_FAILURE() << "accepted; expected an error naming " << fragment;
    } catch (const biref::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error([&] { r.gauge("9lives", "x"); }, "9lives");
  expect_error([&] { r.gauge("has-dash", "x"); }, "has-dash");
  expect_error([&] { r.gauge("", "x"); }, "\"\"");
  expect_error([&] { r.gauge("sp ace", "x"); }, "sp ace");
  expect_error([&] { r.counter("requests", "x"); }, "requests");  // no _total
  expect_error([&] { r.counter("_total", "x"); }, "_total");
  expect_error([&] { r.gauge("g", "x", {"bad-label"}); }, "bad-label");
  expect_error([&] { r.gauge("g", "x", {"__reserved"}); }, "__reserved");
  expect_error([&] { r.gauge("g", "x", {"1a"}); }, "1a");
  expect_error([&] { r.gauge("g", "x", {"a", "a"}); }, "a given twice");
  expect_error([&] { r.histogram("h", "x", {1}, {"le"}); }, "le");
  r.gauge("g", "x");
  expect_error([&] { r.gauge("g", "x"); }, "g is already registered");
  r.histogram("lat", "x", {1});
  expect_error([&] { r.gauge("lat_count", "x"); }, "lat_count");      // a histogram's series
  expect_error([&] { r.histogram("g", "x", {1}); }, "g is already");  // any type
  // Nothing half-registered by the failures: the render holds only g and lat.
  EXPECT_EQ(r.render().find("9lives"), std::string::npos);
  r.counter("ok:name_total", "colons are allowed in metric names", {"_under", "a1"});
}

TEST(ServeMetrics, CallbackGaugesRunAtScrapeTime) {
  Registry r;
  double depth = 4;
  r.gauge_callback("queue_depth", "Queued requests.", {}, [&] { return depth; });
  auto per_model = r.gauge_callback("loaded", "Loaded.", {"model"});
  per_model.callback({"a"}, [] { return 1.0; });
  per_model.callback({"b"}, []() -> double { throw std::runtime_error("boom"); });
  EXPECT_THROW(per_model.callback({"a"}, [] { return 2.0; }), biref::Error);  // already set
  EXPECT_THROW(r.gauge_callback("nofn", "x", {}), biref::Error);
  EXPECT_THROW(r.gauge_callback("labelled_fn", "x", {"m"}, [] { return 0.0; }), biref::Error);
  r.gauge_callback("process_resident_memory_bytes", "RSS.", {}, process_resident_bytes);
  std::string text = r.render();
  EXPECT_NE(text.find("queue_depth 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("loaded{model=\"a\"} 1\nloaded{model=\"b\"} NaN\n"), std::string::npos)
      << text;
  depth = 9;
  text = r.render();
  EXPECT_NE(text.find("queue_depth 9\n"), std::string::npos) << text;
  const double rss = process_resident_bytes();
  EXPECT_GT(rss, 1 << 20);  // a gtest binary holds more than 1 MiB
  EXPECT_LT(rss, 64e9);     // and less than this machine's memory
  EXPECT_EQ(rss, std::floor(rss));
}

// `promtool check metrics` (Debian package prometheus) on the text of every kind of metric.
TEST(ServeMetrics, PromtoolAcceptsTheRenderedText) {
  const char* promtool = "/usr/bin/promtool";
  ASSERT_EQ(access(promtool, X_OK), 0)
      << promtool << " not found: install the `prometheus` package (apt-get install prometheus)";
  Registry r;
  auto& req = r.counter("biref_http_requests_total", "HTTP requests by route and status.",
                        {"route", "code"});
  req.labels({"POST /v1/segment", "200"}).inc(5);
  req.labels({"GET /metrics", "200"}).inc();
  req.labels({"weird \"route\"\\\n", "500"}).inc();
  r.counter("biref_cache_hits_total", "Result cache hits.").get().inc(2);
  auto& inflight = r.gauge("biref_inflight_requests", "Requests being served.", {"model"});
  inflight.labels({"swin_v1_t"}).set(2);
  inflight.labels({"swin_v1_l"}).set(-1.5);
  r.gauge_callback("process_resident_memory_bytes", "Resident memory in bytes.", {},
                   process_resident_bytes);
  r.gauge_callback("biref_queue_depth", "Queued requests per model.", {"model"})
      .callback({"swin_v1_t"}, [] { return 3.0; });
  r.gauge("biref_nan_level", "A gauge at NaN.").get().set(std::nan(""));
  r.gauge("biref_inf_level", "A gauge at +Inf.").get().set(std::numeric_limits<double>::infinity());
  auto& lat = r.histogram("biref_request_duration_seconds", "Request latency in seconds.",
                          exponential_buckets(0.005, 2, 12), {"route"});
  for (int i = 0; i < 100; ++i) lat.labels({"POST /v1/segment"}).observe(0.001 * i * i);
  lat.labels({"GET /healthz"});  // a child without observations
  r.histogram("biref_image_pixels", "Input image sizes in pixels.", {1e4, 1e6, 1e8})
      .get()
      .observe(1024 * 1024);
  r.counter("biref_unused_total", "A labelled counter with no child yet.", {"why"});
  const std::string text = r.render();

  const std::string path = (std::filesystem::temp_directory_path() /
                            ("biref_metrics_" + std::to_string(getpid()) + ".prom"))
                               .string();
  {
    std::ofstream f(path, std::ios::binary);
    f << text;
    ASSERT_TRUE(f.good()) << "cannot write " << path;
  }
  const std::string cmd = std::string(promtool) + " check metrics < '" + path + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr) << "popen failed: " << cmd;
  std::string output;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) output.append(buf, n);
  const int status = pclose(p);
  std::filesystem::remove(path);
  ASSERT_TRUE(WIFEXITED(status)) << cmd << " did not exit normally; output:\n" << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "promtool rejected the text:\n"
                                    << output << "\n--- text ---\n"
                                    << text;
}

}  // namespace
}  // namespace biref::serve
