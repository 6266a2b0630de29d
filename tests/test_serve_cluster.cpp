// The cluster on real parts, on loopback: nginx (deploy/nginx/biref.conf) in front of two
// `biref serve` instances that share a Redis result cache. An answer through the balancer
// equals the CLI's bytes; a result computed by one instance is a cache hit on the other; an
// instance killed during a load loop costs no request (nginx retries it once on the other);
// Redis killed mid-run costs no request either. And a bounded wrk run: throughput, latency
// percentiles, and a resident memory that stays flat.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "serve_harness.h"
#include "test_util.h"

namespace biref {
namespace {

using test::http_request;
using test::HttpResult;
using test::ServeProcess;

const std::string kModel = "synthetic:swin_v1_t";

std::string describe(const HttpResult& r) {
  return "status " + std::to_string(r.status) + " " + r.curl_error + " " +
         (r.header("content-type") == "application/json" ? r.body : "");
}

// The value of an unlabelled (or fully given) series in a /metrics text; -1 when absent.
double metric(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(ServeCluster, NginxTwoInstancesAndASharedRedis) {
  const std::string dir = test::scratch_dir("cluster");
  test::RedisProcess redis(dir);
  const int pa = test::free_port(), pb = test::free_port();
  auto start = [&](const std::string& name, int port) {
    return std::make_unique<ServeProcess>(
        std::vector<std::string>{"--model", kModel, "--size", "256x256", "--port",
                                 std::to_string(port), "--redis", redis.url(), "--instance", name},
        120, name);
  };
  auto a = start("a", pa);
  auto b = start("b", pb);
  test::NginxProcess nginx(dir, {pa, pb});
  const std::string jpg = test::read_file(test::data_path("pipeline/astronaut.jpg"));

  // Through the balancer: the CLI's bytes.
  const HttpResult first = http_request(nginx.port(), "POST", "/v1/segment?output=rgba", jpg);
  ASSERT_EQ(first.status, 200) << describe(first);
  EXPECT_EQ(first.header("x-biref-cache"), "miss");
  const std::string cli_out = dir + "/cli.png";
  const auto cli =
      test::run_cli("segment " + test::data_path("pipeline/astronaut.jpg") + " --model " + kModel +
                    " --size 256x256 --output rgba -o " + cli_out);
  ASSERT_EQ(cli.code, 0) << cli.err;
  EXPECT_TRUE(test::read_file(cli_out) == first.body);

  // Computed by one instance, a hit on the other (the shared Redis).
  const std::string other = first.header("x-biref-instance") == "a" ? "b" : "a";
  const HttpResult hit =
      http_request(other == "a" ? pa : pb, "POST", "/v1/segment?output=rgba", jpg);
  ASSERT_EQ(hit.status, 200) << describe(hit);
  EXPECT_EQ(hit.header("x-biref-instance"), other);
  EXPECT_EQ(hit.header("x-biref-cache"), "hit");
  EXPECT_TRUE(hit.body == first.body);

  // A bounded load loop; instance b is killed (SIGKILL, mid-request) a third of the way in.
  const std::string png = test::read_file(test::data_path("pipeline/camera-gray.png"));
  constexpr int kClients = 3, kPerClient = 12;
  std::atomic<int> done{0}, failed{0}, after_kill_on_a{0};
  std::atomic<bool> killed{false};
  std::vector<std::string> failures;
  std::mutex mu;
  std::vector<std::thread> clients;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kPerClient; ++i) {
        // distinct parameters: every request runs the model (no cache answers)
        const int threshold = c * kPerClient + i;
        const HttpResult r =
            http_request(nginx.port(), "POST", "/v1/segment?threshold=" + std::to_string(threshold),
                         png, {}, 120);
        ++done;
        if (r.status != 200) {
          ++failed;
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back(describe(r));
        } else if (killed && r.header("x-biref-instance") == "a") {
          ++after_kill_on_a;
        }
      }
    });
  }
  while (done < kClients * kPerClient / 3 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  b->process().kill_now();
  killed = true;
  for (auto& t : clients) t.join();
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "load loop: %d requests through nginx in %.1f s, instance b killed after %d; "
      "%d failed\n",
      kClients * kPerClient, load_s, kClients * kPerClient / 3, failed.load());
  EXPECT_EQ(failed, 0) << failures.front();
  EXPECT_GT(after_kill_on_a, 0);

  // Redis killed mid-run: answers go on, the cache failures are counted.
  redis.process().kill_now();
  for (int i = 0; i < 3; ++i) {
    const HttpResult r = http_request(
        nginx.port(), "POST", "/v1/segment?threshold=" + std::to_string(200 + i), png, {}, 60);
    EXPECT_EQ(r.status, 200) << describe(r);
    EXPECT_EQ(r.header("x-biref-cache"), "miss");
  }
  const std::string m = http_request(pa, "GET", "/metrics").body;
  EXPECT_GT(metric(m, "biref_cache_errors"), 0) << m;
  EXPECT_EQ(http_request(pa, "GET", "/readyz").status, 200) << "a cache failure is not unreadiness";
}

// wrk for a bounded time against one instance without a cache (every request runs the model):
// throughput and latency percentiles, and the resident memory after a warm-up stays flat.
TEST(ServeLoad, WrkRunKeepsResidentMemoryFlat) {
  const std::string dir = test::scratch_dir("wrk");
  ASSERT_EQ(access("/usr/bin/wrk", X_OK), 0) << "wrk is missing: apt-get install wrk";
  ServeProcess s({"--model", kModel, "--size", "256x256", "--cache-mb", "0", "--queue", "64"});
  const std::string url =
      "http://127.0.0.1:" + std::to_string(s.port()) + "/v1/segment?output=rgba";
  auto wrk = [&](int seconds) {
    const std::string cmd = "BIREF_WRK_BODY=" + test::data_path("pipeline/chelsea.png") +
                            " timeout 120 wrk -t2 -c4 -d" + std::to_string(seconds) +
                            "s --latency -s " + std::string(BIREF_SOURCE_DIR) +
                            "/scripts/wrk-post.lua '" + url + "' 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (p && fgets(buf, sizeof buf, p)) out += buf;
    if (p) pclose(p);
    return out;
  };
  const std::string warm = wrk(4);
  const double rss_warm = s.process().rss_mb();
  const std::string run = wrk(12);
  const double rss_after = s.process().rss_mb();
  std::printf("%s\n", run.c_str());
  std::smatch m;
  ASSERT_TRUE(std::regex_search(run, m, std::regex("Requests/sec:\\s+([0-9.]+)"))) << run;
  const double rps = std::stod(m[1]);
  std::string p50, p99;
  if (std::regex_search(run, m, std::regex("50%\\s+(\\S+)"))) p50 = m[1];
  if (std::regex_search(run, m, std::regex("99%\\s+(\\S+)"))) p99 = m[1];
  std::printf(
      "wrk, 256x256 rgba, 4 connections, 12 s: %.2f requests/s, p50 %s, p99 %s; RSS "
      "%.1f MiB after warm-up, %.1f MiB after the run\n",
      rps, p50.c_str(), p99.c_str(), rss_warm, rss_after);
  EXPECT_GT(rps, 0);
  EXPECT_EQ(run.find("Non-2xx"), std::string::npos) << run;
  EXPECT_NE(run.find("statuses 200:"), std::string::npos) << run;
  EXPECT_LT(rss_after, rss_warm * 1.05 + 8) << "resident memory grew under load";
}

}  // namespace
}  // namespace biref
