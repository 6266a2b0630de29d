// `biref serve` end to end: the real binary on a loopback port, driven over HTTP. Answers equal
// the CLI's bytes; the cache answers repeats; every kind of bad request gets its 4xx and the
// server stays up; idle and slow connections do not hold up inference; a full queue answers 503
// with Retry-After; SIGTERM lets requests in flight finish.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve_harness.h"
#include "test_util.h"

namespace biref {
namespace {

namespace fs = std::filesystem;
using test::http_request;
using test::HttpResult;
using test::ServeProcess;

const std::string kModel = "synthetic:swin_v1_t";

std::string image_bytes(const std::string& name) {
  return test::read_file(test::data_path("pipeline/" + name));
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("biref-serve-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string describe(const HttpResult& r) {
  return "status " + std::to_string(r.status) + " " + r.curl_error + " " +
         r.body.substr(0, r.body.size() < 400 && r.body.find('\0') == std::string::npos ? 400 : 0);
}

// One server for the tests that do not need a server of their own.
class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServeProcess({"--model", "tiny=" + kModel, "--size", "256x256", "--max-body-mb",
                                "4", "--max-image-pixels", "4000000"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static int port() { return server_->port(); }
  static void expect_alive() {
    const HttpResult h = http_request(port(), "GET", "/healthz", "", {}, 10);
    EXPECT_EQ(h.status, 200) << describe(h) << "\n" << server_->log();
  }
  static ServeProcess* server_;
};
ServeProcess* Serve::server_ = nullptr;

TEST_F(Serve, AnswersEqualTheCliBytesAndRepeatsComeFromTheCache) {
  const fs::path dir = fresh_dir("cli");
  const std::string jpg = image_bytes("astronaut.jpg");
  for (const std::string kind : {"mask", "rgba", "composite"}) {
    SCOPED_TRACE(kind);
    const std::string extra = kind == "composite" ? "&bg_color=%2300ff00" : "";
    const HttpResult r = http_request(port(), "POST", "/v1/segment?output=" + kind + extra, jpg,
                                      {"Content-Type: image/jpeg"});
    ASSERT_EQ(r.status, 200) << describe(r);
    EXPECT_EQ(r.header("content-type"), "image/png");
    EXPECT_EQ(r.header("x-biref-model"), "tiny");
    EXPECT_EQ(r.header("x-biref-model-version"), "synthetic");
    // the first output runs the model; the others render from its cached mask
    EXPECT_EQ(r.header("x-biref-cache"), kind == "mask" ? "miss" : "mask");
    const fs::path out = dir / ("cli." + kind + ".png");
    const auto cli =
        test::run_cli("segment " + test::data_path("pipeline/astronaut.jpg") + " --model " +
                      kModel + " --size 256x256 --output " + kind +
                      (kind == "composite" ? " --bg-color '#00ff00'" : "") + " -o " + out.string());
    ASSERT_EQ(cli.code, 0) << cli.err;
    EXPECT_TRUE(test::read_file(out.string()) == r.body)
        << "the server's PNG differs from the CLI's";
    const HttpResult again = http_request(port(), "POST", "/v1/segment?output=" + kind + extra, jpg,
                                          {"Content-Type: image/jpeg"});
    ASSERT_EQ(again.status, 200);
    EXPECT_EQ(again.header("x-biref-cache"), "hit");
    EXPECT_TRUE(again.body == r.body);
  }
  // The same image as a multipart form, its parameters as fields.
  const std::string boundary = "biref-test-boundary-7";
  const HttpResult form =
      http_request(port(), "POST", "/v1/segment",
                   test::multipart_body(boundary, {{"output", "mask"}}, "image", jpg),
                   {"Content-Type: multipart/form-data; boundary=" + boundary});
  ASSERT_EQ(form.status, 200) << describe(form);
  EXPECT_TRUE(form.body == test::read_file((dir / "cli.mask.png").string()));
}

TEST_F(Serve, ServiceRoutes) {
  EXPECT_EQ(http_request(port(), "GET", "/healthz").body, "ok\n");
  const HttpResult ready = http_request(port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 200) << describe(ready);
  const HttpResult models = http_request(port(), "GET", "/v1/models");
  ASSERT_EQ(models.status, 200);
  const auto j = nlohmann::json::parse(models.body);
  EXPECT_EQ(j["default"], "tiny");
  EXPECT_EQ(j["models"][0]["backbone"], "swin_v1_t");
  EXPECT_EQ(j["models"][0]["size"], "256x256");
  EXPECT_EQ(j["models"][0]["loaded"], true);
  const HttpResult api = http_request(port(), "GET", "/openapi.json");
  ASSERT_EQ(api.status, 200);
  EXPECT_EQ(nlohmann::json::parse(api.body)["openapi"], "3.0.3");
  const HttpResult page = http_request(port(), "GET", "/");
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.header("content-type").find("text/html"), std::string::npos);
  EXPECT_NE(page.body.find("v1/segment"), std::string::npos);
  EXPECT_EQ(http_request(port(), "GET", "/nope").status, 404);
  EXPECT_EQ(http_request(port(), "DELETE", "/v1/segment").status, 404);
}

TEST_F(Serve, MetricsPassPromtoolAndCountRequests) {
  ASSERT_EQ(http_request(port(), "POST", "/v1/segment", image_bytes("camera-gray.png")).status,
            200);
  const HttpResult m = http_request(port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  for (const char* series :
       {"biref_http_requests_total{route=\"/v1/segment\",status=\"200\"}",
        "biref_stage_duration_seconds_bucket{stage=\"inference\"",
        "biref_stage_duration_seconds_bucket{stage=\"queue\"",
        "biref_stage_duration_seconds_bucket{stage=\"decode\"",
        "biref_stage_duration_seconds_bucket{stage=\"encode\"", "biref_queue_depth{model=\"tiny\"}",
        "biref_batch_size_bucket{model=\"tiny\"", "biref_cache_lookups_total{cache=\"",
        "biref_model_load_seconds{model=\"tiny\"}", "process_resident_memory_bytes"}) {
    EXPECT_NE(m.body.find(series), std::string::npos) << series << "\n" << m.body;
  }
  const fs::path file = fresh_dir("metrics") / "metrics.txt";
  test::write_file(file.string(), m.body);
  const std::string cmd = "promtool check metrics < " + file.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int status = pclose(p);
  EXPECT_EQ(status, 0) << "promtool check metrics:\n" << out;
}

TEST_F(Serve, BadRequestsGetA4xxAndTheServerStaysUp) {
  const std::string png = image_bytes("camera-gray.png");
  struct Case {
    std::string name, target, body;
    std::vector<std::string> headers;
    long status;
    std::string message;  // part of the error message
  };
  const std::string b = "bnd";
  std::vector<Case> cases = {
      {"empty body", "/v1/segment", "", {}, 400, "no image"},
      {"not an image", "/v1/segment", "hello, world", {}, 400, "the request body"},
      {"truncated png", "/v1/segment", png.substr(0, png.size() / 2), {}, 400, "truncated"},
      {"pixel bomb", "/v1/segment", test::png_declaring(30000, 30000), {}, 413, "above the limit"},
      {"malformed multipart",
       "/v1/segment",
       "--bnd\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc",
       {"Content-Type: multipart/form-data; boundary=bnd"},
       400,
       "multipart"},
      {"multipart without the image",
       "/v1/segment",
       test::multipart_body(b, {{"output", "mask"}}, "", ""),
       {"Content-Type: multipart/form-data; boundary=" + b},
       400,
       "'image'"},
      {"path as model name", "/v1/segment?model=../../etc/passwd", png, {}, 400, "model name"},
      {"unknown model", "/v1/segment?model=other", png, {}, 404, "no model named 'other'"},
      {"bad output", "/v1/segment?output=jpeg", png, {}, 400, "jpeg"},
      {"bad size", "/v1/segment?size=100x100", png, {}, 400, "multiples of 32"},
      {"bad threshold", "/v1/segment?threshold=0.5", png, {}, 400, "threshold"},
      {"unknown parameter", "/v1/segment?colour=red", png, {}, 400, "unknown parameter 'colour'"},
      {"bad escape", "/v1/segment?output=%zz", png, {}, 400, "%"},
      {"too large", "/v1/segment", std::string(5 << 20, 'x'), {}, 413, "limit"},
      {"rembg alpha matting",
       "/api/remove",
       test::multipart_body(b, {{"a", "true"}}, "file", png),
       {"Content-Type: multipart/form-data; boundary=" + b},
       400,
       ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const HttpResult r = http_request(port(), "POST", c.target, c.body, c.headers, 30);
    EXPECT_EQ(r.status, c.status) << describe(r);
    if (r.status >= 400) {
      const auto j = nlohmann::json::parse(r.body, nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << r.body;
      EXPECT_NE(j["error"]["message"].get<std::string>().find(c.message), std::string::npos)
          << r.body;
    }
    expect_alive();
  }
}

TEST_F(Serve, RawProtocolAbuseIsAnsweredOrClosed) {
  {  // not HTTP at all
    test::RawConnection c(port());
    ASSERT_TRUE(c.ok());
    c.send_all("\x16\x03\x01 this is not http\r\n\r\n");
    const std::string reply = c.read_until_close(5);
    EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
  }
  {  // a declared body far above the limit: refused before it is sent
    test::RawConnection c(port());
    c.send_all("POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n");
    const std::string reply = c.read_until_close(5);
    EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply;
  }
  {  // headers larger than the limit
    test::RawConnection c(port());
    c.send_all("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'a') +
               "\r\n\r\n");
    const std::string reply = c.read_until_close(5);
    EXPECT_EQ(reply.rfind("HTTP/1.1 431", 0), 0u) << reply.substr(0, 200);
  }
  {  // a client that leaves in the middle of its body
    test::RawConnection c(port());
    c.send_all("POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc");
    c.close_now();
  }
  expect_alive();
}

TEST_F(Serve, ManyIdleConnectionsDoNotBlockInference) {
  // 300 connections that never finish their headers: each costs a socket, not a thread.
  std::vector<std::unique_ptr<test::RawConnection>> idle;
  for (int i = 0; i < 300; ++i) {
    idle.push_back(std::make_unique<test::RawConnection>(port()));
    ASSERT_TRUE(idle.back()->ok()) << i;
    if (i % 2) idle.back()->send_all("POST /v1/segment HTTP/1.1\r\nHost: x\r\n");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const HttpResult r =
      http_request(port(), "POST", "/v1/segment?output=rgba", image_bytes("chelsea.png"), {}, 60);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status, 200) << describe(r);
  std::printf("with 300 idle connections open, a request took %.2f s\n", s);
}

// A server of its own per test below.

TEST(ServeProcess, SlowHeadersAreCutOffByTheHeaderTimeout) {
  ServeProcess s({"--model", kModel, "--size", "64x64", "--header-timeout", "1"});
  test::RawConnection c(s.port());
  c.send_all("GET /healthz HTTP/1.1\r\n");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string reply = c.read_until_close(10);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(waited, 5) << "the connection was not closed by the header timeout";
  EXPECT_EQ(reply, "") << "closed without an answer, as nginx does";
  EXPECT_EQ(http_request(s.port(), "GET", "/healthz").status, 200);
}

TEST(ServeProcess, AFullQueueAnswers503WithRetryAfter) {
  ServeProcess s({"--model", kModel, "--size", "512x512", "--queue", "1", "--workers", "1"});
  const std::string png = image_bytes("chelsea.png");
  std::vector<std::future<HttpResult>> calls;
  for (int i = 0; i < 6; ++i)
    calls.push_back(std::async(std::launch::async, [&, i] {
      // distinct bodies: the cache must not answer
      return http_request(s.port(), "POST", "/v1/segment?threshold=" + std::to_string(i), png, {},
                          120);
    }));
  int ok = 0, busy = 0;
  for (auto& c : calls) {
    const HttpResult r = c.get();
    if (r.status == 200) ++ok;
    if (r.status == 503) {
      ++busy;
      EXPECT_EQ(r.header("retry-after"), "1");
      EXPECT_NE(r.body.find("queue is full"), std::string::npos) << r.body;
    }
    EXPECT_TRUE(r.status == 200 || r.status == 503) << describe(r);
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(busy, 1);
  std::printf("6 requests at once on a queue of 1: %d answered, %d refused with 503\n", ok, busy);
  EXPECT_EQ(http_request(s.port(), "GET", "/healthz").status, 200);
}

TEST(ServeProcess, WorkForAClientThatHungUpIsDropped) {
  ServeProcess s({"--model", kModel, "--size", "512x512", "--workers", "1"});
  const std::string png = image_bytes("chelsea.png");
  // The first request keeps the worker busy; the second waits in the queue, and its client
  // gives up before the worker is free.
  auto first = std::async(std::launch::async, [&] {
    return http_request(s.port(), "POST", "/v1/segment?threshold=1", png, {}, 120);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const HttpResult gave_up =
      http_request(s.port(), "POST", "/v1/segment?threshold=2", png, {}, 0.3);
  EXPECT_EQ(gave_up.status, 0);
  EXPECT_EQ(first.get().status, 200);
  std::string metrics;
  for (int i = 0; i < 100; ++i) {  // the drop is counted once the worker reaches the job
    metrics = http_request(s.port(), "GET", "/metrics").body;
    if (metrics.find("biref_jobs_dropped_total{reason=\"cancelled\"} 1") != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(metrics.find("biref_jobs_dropped_total{reason=\"cancelled\"} 1"), std::string::npos)
      << metrics;
}

TEST(ServeProcess, SigtermAnswersTheRequestsInFlightThenExits) {
  ServeProcess s({"--model", kModel, "--size", "512x512"});
  auto call = std::async(std::launch::async, [&] {
    return http_request(s.port(), "POST", "/v1/segment", image_bytes("chelsea.png"), {}, 120);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  const int status = s.process().stop(SIGTERM, 60);
  const HttpResult r = call.get();
  EXPECT_EQ(r.status, 200) << describe(r) << "\n" << s.log();
  EXPECT_EQ(r.header("connection"), "close");
  ASSERT_TRUE(WIFEXITED(status)) << s.log();
  EXPECT_EQ(WEXITSTATUS(status), 0) << s.log();
  EXPECT_NE(s.log().find("draining"), std::string::npos) << s.log();
}

TEST(ServeProcess, TokensAndModelManagement) {
  const fs::path dir = fresh_dir("tokens");
  const std::string user = "user-token-0123456789abcdef", admin = "admin-token-0123456789abcdef";
  test::write_file((dir / "tokens").string(), "# tokens\nuser " + user + "\nadmin " + admin + "\n");
  ServeProcess s(
      {"--model", "a=" + kModel, "--size", "64x64", "--token-file", (dir / "tokens").string()});
  const std::string png = image_bytes("camera-gray.png");
  const std::string as_user = "Authorization: Bearer " + user;
  const std::string as_admin = "Authorization: Bearer " + admin;
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/segment", png).status, 401);
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/segment", png,
                         {"Authorization: Bearer wrong-token-0123456789"})
                .status,
            401);
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/segment", png, {as_user}).status, 200);
  EXPECT_EQ(http_request(s.port(), "GET", "/healthz").status, 200);  // probes need no token
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/models/a:unload", "", {as_user}).status, 403);
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/models/a:unload", "", {}).status, 401);
  const HttpResult un = http_request(s.port(), "POST", "/v1/models/a:unload", "", {as_admin});
  ASSERT_EQ(un.status, 200) << describe(un);
  EXPECT_EQ(nlohmann::json::parse(un.body)["loaded"], false);
  const HttpResult busy = http_request(s.port(), "POST", "/v1/segment", png, {as_user});
  EXPECT_EQ(busy.status, 503) << describe(busy);
  EXPECT_EQ(http_request(s.port(), "GET", "/readyz").status, 503);
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/models/b:load", "", {as_admin}).status, 404);
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/models/..%2Fx:load", "", {as_admin}).status, 400);
  const HttpResult load = http_request(s.port(), "POST", "/v1/models/a:load", "", {as_admin});
  ASSERT_EQ(load.status, 200) << describe(load);
  EXPECT_EQ(http_request(s.port(), "POST", "/v1/segment", png, {as_user}).status, 200);
  EXPECT_EQ(http_request(s.port(), "GET", "/readyz").status, 200);
}

TEST(ServeProcess, FourWorkersShareOneCopyOfTheWeights) {
  const std::string png = image_bytes("chelsea.png");
  double rss[2] = {0, 0};
  const int workers[2] = {1, 4};
  double weights_mb = 0;
  for (int k = 0; k < 2; ++k) {
    ServeProcess s({"--model", kModel, "--size", "256x256", "--workers", std::to_string(workers[k]),
                    "--cache-mb", "0"});
    // enough requests at once that every worker runs one
    std::vector<std::future<HttpResult>> calls;
    for (int i = 0; i < 8; ++i)
      calls.push_back(std::async(std::launch::async, [&] {
        return http_request(s.port(), "POST", "/v1/segment", png, {}, 120);
      }));
    for (auto& c : calls) EXPECT_EQ(c.get().status, 200);
    rss[k] = s.process().rss_mb();
    const auto j = nlohmann::json::parse(http_request(s.port(), "GET", "/v1/models").body);
    weights_mb = j["models"][0]["weight_bytes"].get<double>() / 1048576.0;
  }
  std::printf(
      "RSS after 8 requests at 256x256: 1 worker %.0f MiB, 4 workers %.0f MiB "
      "(weights %.0f MiB)\n",
      rss[0], rss[1], weights_mb);
  // Three more workers add their activations and primitives; three more copies of the weights
  // would add 3x the weights.
  EXPECT_LT(rss[1] - rss[0], weights_mb) << "4 workers must not hold 4 copies of the weights";
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

// Two checkpoint files (synthetic swin_v1_t weights of two seeds, half precision) for the model
// management tests.
class ServeModels : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = new fs::path(fresh_dir("model-files"));
    for (int seed : {1, 2}) {
      const auto r = test::run_cli("convert --synthetic swin_v1_t --seed " + std::to_string(seed) +
                                   " --dtype f16 " + checkpoint(seed));
      ASSERT_EQ(r.code, 0) << r.all();
    }
  }
  static void TearDownTestSuite() {
    fs::remove_all(*files_);
    delete files_;
  }
  static std::string checkpoint(int seed) {
    return (*files_ / ("seed" + std::to_string(seed) + ".safetensors")).string();
  }
  // Copies `from` to `to` the way a deployment should: a temporary name, then a rename.
  static void install(const std::string& from, const fs::path& to) {
    const fs::path tmp = to.parent_path() / ".incoming.tmp";
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, to);
  }
  static nlohmann::json model(int port, const std::string& name) {
    const auto j = nlohmann::json::parse(http_request(port, "GET", "/v1/models").body);
    for (const auto& m : j["models"])
      if (m["name"] == name) return m;
    return nullptr;
  }
  // Polls (at most 30 s) until `pred(model JSON)` holds.
  template <typename Pred>
  static bool wait_for(int port, const std::string& name, Pred pred) {
    for (int i = 0; i < 300; ++i) {
      if (pred(model(port, name))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  static fs::path* files_;
};
fs::path* ServeModels::files_ = nullptr;

TEST_F(ServeModels, FolderModelsLoadOnDemandReloadWhenChangedAndSurviveABadFile) {
  const fs::path dir = fresh_dir("models-dir");
  install(checkpoint(1), dir / "one.safetensors");
  test::write_file((dir / "notes.txt").string(), "not a model");
  ServeProcess s({"--models-dir", dir.string(), "--size", "64x64", "--watch-interval", "0.2"});
  auto m = model(s.port(), "one");
  ASSERT_FALSE(m.is_null());
  EXPECT_EQ(m["loaded"], false);
  EXPECT_TRUE(model(s.port(), "notes").is_null());
  const std::string png = image_bytes("camera-gray.png");
  const HttpResult r1 = http_request(s.port(), "POST", "/v1/segment?model=one", png);
  ASSERT_EQ(r1.status, 200) << describe(r1) << s.log();
  const std::string v1 = r1.header("x-biref-model-version");
  EXPECT_EQ(v1.size(), 16u);
  EXPECT_EQ(model(s.port(), "one")["loaded"], true);

  // The file changes: the model reloads, the version in answers follows.
  install(checkpoint(2), dir / "one.safetensors");
  ASSERT_TRUE(wait_for(s.port(), "one", [&](const nlohmann::json& j) {
    return !j.is_null() && j.value("version", "") != v1;
  })) << s.log();
  const HttpResult r2 = http_request(s.port(), "POST", "/v1/segment?model=one", png);
  ASSERT_EQ(r2.status, 200);
  const std::string v2 = r2.header("x-biref-model-version");
  EXPECT_NE(v2, v1);
  EXPECT_FALSE(r2.body == r1.body) << "other weights, another mask";

  // A broken file: the reload fails, the previous version keeps serving.
  test::write_file((dir / ".bad.tmp").string(), "this is not a checkpoint");
  fs::rename(dir / ".bad.tmp", dir / "one.safetensors");
  ASSERT_TRUE(wait_for(s.port(), "one", [](const nlohmann::json& j) {
    return !j.is_null() && j.contains("error");
  })) << s.log();
  const HttpResult r3 = http_request(s.port(), "POST", "/v1/segment?model=one", png);
  EXPECT_EQ(r3.status, 200);
  EXPECT_EQ(r3.header("x-biref-model-version"), v2);
  EXPECT_NE(s.log().find("still serves"), std::string::npos) << s.log();

  // Files that appear and go.
  install(checkpoint(1), dir / "two.safetensors");
  EXPECT_TRUE(wait_for(s.port(), "two", [](const nlohmann::json& j) { return !j.is_null(); }));
  fs::remove(dir / "two.safetensors");
  EXPECT_TRUE(wait_for(s.port(), "two", [](const nlohmann::json& j) { return j.is_null(); }));
  const std::string metrics = http_request(s.port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("biref_model_reloads_total{model=\"one\",result=\"ok\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("biref_model_reloads_total{model=\"one\",result=\"failed\"} 1"),
            std::string::npos)
      << metrics;
}

TEST_F(ServeModels, MemoryBudgetUnloadsTheLeastRecentlyUsedModel) {
  const fs::path dir = fresh_dir("models-budget");
  install(checkpoint(1), dir / "a.safetensors");
  install(checkpoint(2), dir / "b.safetensors");
  // swin_v1_t packs to ~172 MiB: one fits in 250 MiB, two do not
  ServeProcess s({"--models-dir", dir.string(), "--size", "64x64", "--memory-budget-mb", "250",
                  "--watch-interval", "0"});
  const std::string png = image_bytes("camera-gray.png");
  ASSERT_EQ(http_request(s.port(), "POST", "/v1/segment?model=a", png).status, 200);
  ASSERT_EQ(http_request(s.port(), "POST", "/v1/segment?model=b", png).status, 200);
  EXPECT_EQ(model(s.port(), "a")["loaded"], false);
  EXPECT_EQ(model(s.port(), "b")["loaded"], true);
  ASSERT_EQ(http_request(s.port(), "POST", "/v1/segment?model=a", png).status, 200);
  EXPECT_EQ(model(s.port(), "b")["loaded"], false);
  const std::string metrics = http_request(s.port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("biref_model_evictions_total 2"), std::string::npos) << metrics;

  // A budget that no model fits: a clear 503, the server stays up.
  ServeProcess tight({"--models-dir", dir.string(), "--size", "64x64", "--memory-budget-mb", "50",
                      "--watch-interval", "0"});
  const HttpResult r = http_request(tight.port(), "POST", "/v1/segment?model=a", png);
  EXPECT_EQ(r.status, 503) << describe(r);
  EXPECT_NE(r.body.find("memory budget"), std::string::npos) << r.body;
  EXPECT_EQ(http_request(tight.port(), "GET", "/healthz").status, 200);
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

// rembg's GET /api/remove?url=: fetched only from the hosts allowed, no redirects, bounded.
TEST(ServeProcess, RembgUrlFormFetchesOnlyFromAllowedHosts) {
  const fs::path site = fresh_dir("url-site");
  fs::copy_file(test::data_path("pipeline/camera-gray.png"), site / "cam.png");
  test::write_file((site / "big.bin").string(), std::string(3 << 20, 'x'));
  const int web_port = test::free_port();
  test::Process web({"/usr/bin/python3", "-m", "http.server", std::to_string(web_port), "--bind",
                     "127.0.0.1", "--directory", site.string()},
                    (site.parent_path() / "url-site-http.log").string());
  ASSERT_TRUE(test::wait_for_port(web_port, 20)) << "python3 -m http.server did not start";
  const std::string base = "http://127.0.0.1:" + std::to_string(web_port);

  ServeProcess closed({"--model", kModel, "--size", "64x64"});
  HttpResult r = http_request(closed.port(), "GET", "/api/remove?url=" + base + "/cam.png");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("--allow-url-host"), std::string::npos) << r.body;

  ServeProcess s({"--model", kModel, "--size", "64x64", "--allow-url-host", "127.0.0.1",
                  "--max-body-mb", "2"});
  r = http_request(s.port(), "GET", "/api/remove?om=true&url=" + base + "/cam.png");
  ASSERT_EQ(r.status, 200) << describe(r) << s.log();
  const std::string png = image_bytes("camera-gray.png");
  const std::string b = "bnd";
  const HttpResult posted = http_request(s.port(), "POST", "/api/remove",
                                         test::multipart_body(b, {{"om", "true"}}, "file", png),
                                         {"Content-Type: multipart/form-data; boundary=" + b});
  ASSERT_EQ(posted.status, 200) << describe(posted);
  EXPECT_TRUE(posted.body == r.body) << "the fetched image and the uploaded one: one answer";
  r = http_request(s.port(), "GET",
                   "/api/remove?url=http://localhost:" + std::to_string(web_port) + "/cam.png");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("host 'localhost'"), std::string::npos) << r.body;
  r = http_request(s.port(), "GET", "/api/remove?url=" + base + "/missing.png");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("404"), std::string::npos) << r.body;
  r = http_request(s.port(), "GET", "/api/remove?url=" + base + "/big.bin");
  EXPECT_EQ(r.status, 413) << r.body;
  r = http_request(s.port(), "GET", "/api/remove?url=file:///etc/passwd");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(http_request(s.port(), "GET", "/healthz").status, 200);
}

}  // namespace
}  // namespace biref

namespace biref {
namespace {

// --precision bf16: the answer equals the CLI's at the same precision, and its version says bf16
// (so a cache shared with float32 servers keeps the two apart).
TEST(ServeBf16, AnswersAtBf16AndSayWhichInTheVersion) {
  if (cpu_isa() < CpuIsa::avx512_bf16) GTEST_SKIP() << "no AVX512_BF16 kernels on this CPU";
  test::ServeProcess server(
      {"--model", "tiny=" + kModel, "--size", "256x256", "--precision", "bf16"});
  const HttpResult r = http_request(server.port(), "POST", "/v1/segment?output=mask",
                                    image_bytes("astronaut.jpg"), {"Content-Type: image/jpeg"});
  ASSERT_EQ(r.status, 200) << describe(r);
  EXPECT_EQ(r.header("x-biref-model-version"), "synthetic+bf16");
  const test::TempDir dir("biref-serve-bf16");
  const std::string out = dir / "mask.png";
  const auto cli =
      test::run_cli("segment " + test::data_path("pipeline/astronaut.jpg") + " --model " + kModel +
                    " --size 256x256 --precision bf16 -o " + out);
  ASSERT_EQ(cli.code, 0) << cli.err;
  EXPECT_TRUE(test::read_file(out) == r.body) << "the server's bf16 PNG differs from the CLI's";
}

}  // namespace
}  // namespace biref
