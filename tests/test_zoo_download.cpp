// Model zoo downloads against a loopback HTTP server that the test runs itself (127.0.0.1,
// ephemeral port; BIREF_HF_ENDPOINT points there, so no test touches the real network):
// full download, redirect, resume after an interrupted transfer, a server that ignores Range,
// wrong checksum, 404, offline, cache hit, and the `biref models` command.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "biref/error.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/http.h"
#include "weights/safetensors.h"
#include "weights/sha256.h"
#include "weights/zoo.h"

namespace biref {
namespace {

namespace fs = std::filesystem;
using test::error_of;

// What the server answers for one path.
struct Route {
  int status = 200;
  std::string body;
  std::string linked_etag;    // sent as X-Linked-Etag: "<value>" when not empty
  std::string location;       // answer 302 to this path instead
  size_t cut_after = 0;       // with cuts > 0: send only this many body bytes, then close
  int cuts = 0;               // how many responses are cut short
  bool ignore_range = false;  // answer 200 with the whole body even to a Range request

  static Route file(std::string body, std::string etag = "") {
    Route r;
    r.body = std::move(body);
    r.linked_etag = std::move(etag);
    return r;
  }
  static Route redirect(std::string to, std::string etag) {
    Route r;
    r.location = std::move(to);
    r.linked_etag = std::move(etag);
    return r;
  }
  static Route error(int status, std::string body) {
    Route r;
    r.status = status;
    r.body = std::move(body);
    return r;
  }
  Route& cut(size_t after, int times) {
    cut_after = after, cuts = times;
    return *this;
  }
};

struct Seen {
  std::string path, range;  // range: the Range header, empty if none
};

// A one-connection-at-a-time HTTP/1.1 server on 127.0.0.1, just enough for GET with Range.
class LoopbackServer {
 public:
  LoopbackServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd_, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;  // the kernel picks a free port
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~LoopbackServer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);  // wakes the blocked accept()
    thread_.join();
    close(fd_);
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void route(const std::string& path, Route r) {
    std::lock_guard lock(mu_);
    routes_[path] = std::move(r);
  }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  static void send_all(int c, const std::string& s) {
    for (size_t off = 0; off < s.size();) {
      const ssize_t n = send(c, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += size_t(n);
    }
  }

  void serve() {
    while (!stop_) {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) {
        if (stop_ || errno != EINTR) return;
        continue;
      }
      handle(c);
      close(c);
    }
  }

  void handle(int c) {
    timeval tv{5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      req.append(buf, size_t(n));
    }
    const size_t sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
    const std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string range;
    std::string lower = req;
    for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (size_t r = lower.find("\r\nrange:"); r != std::string::npos) {
      const size_t b = r + 8, e = req.find("\r\n", b);
      range = req.substr(b, e - b);
      range.erase(0, range.find_first_not_of(' '));
    }
    Route rt;
    bool found = false, cut = false;
    {
      std::lock_guard lock(mu_);
      seen_.push_back({path, range});
      if (auto it = routes_.find(path); it != routes_.end()) {
        found = true;
        rt = it->second;
        if (it->second.cuts > 0) --it->second.cuts, cut = true;
      }
    }
    std::string head, body;
    if (!found) {
      head = "HTTP/1.1 404 Not Found\r\n";
      body = "Entry not found";
    } else if (!rt.location.empty()) {
      head = "HTTP/1.1 302 Found\r\nLocation: " + base() + rt.location + "\r\n";
    } else if (rt.status != 200) {
      head = "HTTP/1.1 " + std::to_string(rt.status) + " Error\r\n";
      body = rt.body;
    } else if (!range.empty() && !rt.ignore_range) {
      const size_t from = std::stoull(range.substr(range.find('=') + 1));  // "bytes=N-"
      if (from >= rt.body.size()) {
        head = "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */" +
               std::to_string(rt.body.size()) + "\r\n";
      } else {
        head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(from) +
               "-" + std::to_string(rt.body.size() - 1) + "/" + std::to_string(rt.body.size()) +
               "\r\n";
        body = rt.body.substr(from);
      }
    } else {
      head = "HTTP/1.1 200 OK\r\n";
      body = rt.body;
    }
    if (found && !rt.linked_etag.empty()) head += "X-Linked-Etag: \"" + rt.linked_etag + "\"\r\n";
    head += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    send_all(c, head);
    send_all(c, cut ? body.substr(0, rt.cut_after) : body);  // a cut: the peer sees a short body
  }

  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<std::string, Route> routes_;
  std::vector<Seen> seen_;
};

using test::ScopedEnv;

std::string pseudo_random_bytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : s) x = x * 1664525u + 1013904223u, c = char(x >> 24);
  return s;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out.push_back(e.path());
  }
  return out;
}

// A port on 127.0.0.1 that nothing listens on: bound, then closed.
int closed_port() {
  return test::free_port();
}

class ZooDownload : public testing::Test {
 protected:
  void SetUp() override {
    cache_ =
        fs::temp_directory_path() / ("biref_zoo_" + std::to_string(getpid()) + "_" +
                                     testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(cache_);
    env_cache_.emplace("BIREF_CACHE", cache_.string());
    env_endpoint_.emplace("BIREF_HF_ENDPOINT", server_.base());
    // random bytes that start like a safetensors file (an 8-byte header length, then '{'):
    // a download is checked to be a checkpoint before it is kept
    body_ = pseudo_random_bytes(300000, 7);
    body_.replace(0, 9, std::string("\x40\0\0\0\0\0\0\0{", 9));
    sha_ = sha256_hex(body_);
  }
  void TearDown() override { fs::remove_all(cache_); }

  static std::string url_path(const std::string& repo, const std::string& file) {
    return "/" + repo + "/resolve/main/" + file;
  }
  fs::path cached(const std::string& repo, const std::string& file = "model.safetensors") const {
    return cache_ / "models" / repo / file;
  }
  DownloadOptions quiet(int attempts = 3) const {
    DownloadOptions o;
    o.progress = false;
    o.max_attempts = attempts;
    return o;
  }

  LoopbackServer server_;
  fs::path cache_;
  std::optional<ScopedEnv> env_cache_, env_endpoint_;
  std::string body_, sha_;
};

TEST_F(ZooDownload, FullDownloadByHfSourceIsVerifiedAndCached) {
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, sha_));
  const std::string path = resolve_model_source("hf:Org/Repo");
  EXPECT_EQ(fs::path(path), cached("Org/Repo"));
  EXPECT_EQ(read_file(path), body_);
  EXPECT_FALSE(fs::exists(path + ".part"));
  ASSERT_EQ(server_.seen().size(), 1u);
  EXPECT_EQ(server_.seen()[0].range, "");
}

TEST_F(ZooDownload, SecondConcurrentDownloadOfTheSameFileIsRefused) {
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, sha_));
  const std::string lock = download_lock_path(cached("Org/Repo").string());
  const int fd = ::open(lock.c_str(), O_CREAT | O_RDWR, 0644);  // another process's download
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  try {
    resolve_model_source("hf:Org/Repo");
    ADD_FAILURE() << "no error while another download holds the lock";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another process is downloading"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(server_.seen().empty());
  ::unlink(lock.c_str());
  ::close(fd);
  EXPECT_EQ(read_file(resolve_model_source("hf:Org/Repo")), body_);  // and it works afterwards
  EXPECT_FALSE(fs::exists(lock));
}

TEST_F(ZooDownload, AnHtmlPageNeverEntersTheCache) {
  // A proxy's or the hub's error page served with 200: refused before the rename, deleted.
  const std::string page = "<!DOCTYPE html><html><body>Sign in to continue</body></html>";
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(page));
  const std::string e = error_of([&] { resolve_model_source("hf:Org/Repo"); });
  EXPECT_NE(e.find("neither a safetensors file nor a PyTorch checkpoint"), std::string::npos) << e;
  EXPECT_NE(e.find("<!DOCTYPE html>"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(cached("Org/Repo")));
  EXPECT_FALSE(fs::exists(cached("Org/Repo").string() + ".part"));
  // A page an older biref left in the cache is not reused: it is fetched again.
  fs::create_directories(cached("Org/Repo").parent_path());
  std::ofstream(cached("Org/Repo")) << page;
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, sha_));
  EXPECT_EQ(read_file(resolve_model_source("hf:Org/Repo")), body_);
  EXPECT_EQ(server_.seen().size(), 2u);
}

TEST_F(ZooDownload, ZooNameIsCaseInsensitiveAndUsesItsRepo) {
  server_.route(url_path("ZhengPeng7/BiRefNet_lite-2K", "model.safetensors"), Route::file(body_));
  const std::string path = resolve_model_source("LITE-2k");
  EXPECT_EQ(fs::path(path), cached("ZhengPeng7/BiRefNet_lite-2K"));
  EXPECT_EQ(read_file(path), body_);
}

TEST_F(ZooDownload, HfFileInAFolder) {
  server_.route(url_path("Org/Repo", "ckpt/BiRefNet-epoch_1.pth"), Route::file(body_));
  const std::string path = resolve_model_source("hf:Org/Repo:ckpt/BiRefNet-epoch_1.pth");
  EXPECT_EQ(fs::path(path), cached("Org/Repo", "ckpt/BiRefNet-epoch_1.pth"));
  EXPECT_EQ(read_file(path), body_);
}

TEST_F(ZooDownload, RedirectIsFollowedAndTheRedirectsEtagChecked) {
  // Like the hub: the resolve URL answers 302 to a CDN with the LFS sha256 in X-Linked-Etag.
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::redirect("/cdn/blob/123", sha_));
  server_.route("/cdn/blob/123", Route::file(body_));
  const auto r = download_file(server_.base() + url_path("Org/Repo", "model.safetensors"),
                               cached("Org/Repo").string(), quiet());
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(r.sha256, sha_);
  EXPECT_EQ(r.bytes, body_.size());
  EXPECT_EQ(read_file(cached("Org/Repo")), body_);
  ASSERT_EQ(server_.seen().size(), 2u);
  EXPECT_EQ(server_.seen()[1].path, "/cdn/blob/123");
}

TEST_F(ZooDownload, ResumeAfterAnInterruption) {
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, sha_).cut(100000, 1));
  const std::string url = server_.base() + url_path("Org/Repo", "model.safetensors");
  const fs::path dest = cached("Org/Repo");
  const std::string e = error_of([&] { download_file(url, dest.string(), quiet(1)); });
  EXPECT_NE(e.find("cannot download " + url), std::string::npos) << e;
  EXPECT_NE(e.find("curl error"), std::string::npos) << e;
  EXPECT_NE(e.find(".part"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dest));
  ASSERT_TRUE(fs::exists(dest.string() + ".part"));
  EXPECT_EQ(fs::file_size(dest.string() + ".part"), 100000u);

  const auto r = download_file(url, dest.string(), quiet(1));
  EXPECT_EQ(r.resumed_from, 100000u);
  EXPECT_TRUE(r.verified);  // the digest covers the part from the first call too
  EXPECT_EQ(read_file(dest), body_);
  EXPECT_FALSE(fs::exists(dest.string() + ".part"));
  const auto seen = server_.seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].range, "bytes=100000-");
}

TEST_F(ZooDownload, InterruptionsAreResumedWithinOneCall) {
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, sha_).cut(70000, 2));
  const std::string path = resolve_model_source("hf:Org/Repo");
  EXPECT_EQ(read_file(path), body_);
  const auto seen = server_.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].range, "");
  EXPECT_EQ(seen[1].range, "bytes=70000-");
  EXPECT_EQ(seen[2].range, "bytes=140000-");
}

TEST_F(ZooDownload, ServerIgnoringRangeRestartsCleanly) {
  Route whole = Route::file(body_, sha_);
  whole.ignore_range = true;
  server_.route(url_path("Org/Repo", "model.safetensors"), whole);
  const fs::path dest = cached("Org/Repo");
  fs::create_directories(dest.parent_path());
  std::ofstream(dest.string() + ".part", std::ios::binary) << pseudo_random_bytes(5000, 99);
  const auto r = download_file(server_.base() + url_path("Org/Repo", "model.safetensors"),
                               dest.string(), quiet());
  EXPECT_EQ(r.resumed_from, 0u);
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(read_file(dest), body_);
  EXPECT_EQ(server_.seen().at(0).range, "bytes=5000-");
}

TEST_F(ZooDownload, PartLongerThanTheFileStartsOver) {
  // 416 Range Not Satisfiable: the part cannot belong to this file.
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, sha_));
  const fs::path dest = cached("Org/Repo");
  fs::create_directories(dest.parent_path());
  std::ofstream(dest.string() + ".part", std::ios::binary) << std::string(body_.size() + 10, 'z');
  const auto r = download_file(server_.base() + url_path("Org/Repo", "model.safetensors"),
                               dest.string(), quiet());
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(read_file(dest), body_);
  ASSERT_EQ(server_.seen().size(), 2u);
  EXPECT_EQ(server_.seen()[1].range, "");
}

TEST_F(ZooDownload, WholePartNeverRenamedIsNotDownloadedAgain) {
  // A run killed between the last byte and the rename: the server answers 416 to the range, and
  // the part's sha256 matches the hub's.
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, sha_));
  const fs::path dest = cached("Org/Repo");
  fs::create_directories(dest.parent_path());
  std::ofstream(dest.string() + ".part", std::ios::binary) << body_;
  const auto r = download_file(server_.base() + url_path("Org/Repo", "model.safetensors"),
                               dest.string(), quiet());
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(read_file(dest), body_);
  ASSERT_EQ(server_.seen().size(), 1u);
  EXPECT_EQ(server_.seen()[0].range, "bytes=300000-");
}

TEST_F(ZooDownload, WrongChecksumDeletesTheFile) {
  const std::string wrong = sha256_hex("something else");
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::file(body_, wrong));
  const std::string e = error_of([] { resolve_model_source("hf:Org/Repo"); });
  EXPECT_NE(e.find("sha256 mismatch"), std::string::npos) << e;
  EXPECT_NE(e.find(wrong), std::string::npos) << e;
  EXPECT_NE(e.find(sha_), std::string::npos) << e;
  EXPECT_NE(e.find("deleted"), std::string::npos) << e;
  EXPECT_NE(e.find("--model /path/to/model.safetensors"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_TRUE(files_under(cache_).empty());
}

TEST_F(ZooDownload, NotFoundIsAClearErrorAndLeavesNothing) {
  const std::string e = error_of([] { resolve_model_source("hf:Org/Missing"); });
  const std::string url = server_.base() + url_path("Org/Missing", "model.safetensors");
  EXPECT_NE(e.find("cannot download " + url + ": HTTP 404"), std::string::npos) << e;
  EXPECT_NE(e.find("--model /path/to/model.safetensors"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_TRUE(files_under(cache_).empty());
}

TEST_F(ZooDownload, ServerErrorNamesTheStatus) {
  server_.route(url_path("Org/Repo", "model.safetensors"), Route::error(503, "busy"));
  const std::string e = error_of([] { resolve_model_source("hf:Org/Repo"); });
  EXPECT_NE(e.find("HTTP 503"), std::string::npos) << e;
  EXPECT_TRUE(files_under(cache_).empty());
}

TEST_F(ZooDownload, OfflineSaysWhatFailedAndHowToPassAFile) {
  ScopedEnv offline("BIREF_HF_ENDPOINT", "http://127.0.0.1:" + std::to_string(closed_port()));
  const std::string e = error_of([] { resolve_model_source("portrait"); });
  EXPECT_NE(e.find("cannot download http://127.0.0.1:"), std::string::npos) << e;
  EXPECT_NE(e.find("ZhengPeng7/BiRefNet-portrait/resolve/main/model.safetensors"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("curl error 7"), std::string::npos) << e;  // couldn't connect
  EXPECT_NE(e.find("--model /path/to/model.safetensors"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST_F(ZooDownload, CacheHitNeedsNoServer) {
  const fs::path dest = cached("ZhengPeng7/BiRefNet");
  fs::create_directories(dest.parent_path());
  std::ofstream(dest, std::ios::binary) << body_;
  ScopedEnv offline("BIREF_HF_ENDPOINT", "http://127.0.0.1:" + std::to_string(closed_port()));
  EXPECT_EQ(fs::path(resolve_model_source("General")), dest);
  EXPECT_EQ(fs::path(resolve_model_source("hf:ZhengPeng7/BiRefNet")), dest);
  // A folder that happens to have the model's name does not hide it.
  const auto cwd = fs::current_path();
  fs::create_directories(cache_ / "General");
  fs::current_path(cache_);
  const std::string in_folder = resolve_model_source("General");
  fs::current_path(cwd);
  EXPECT_EQ(fs::path(in_folder), dest);
  EXPECT_TRUE(server_.seen().empty());
}

TEST_F(ZooDownload, LoadCheckpointByName) {
  // load_checkpoint resolves the name, downloads, and reads the file like any local one.
  const fs::path local = cache_ / "local.safetensors";
  fs::create_directories(cache_);
  const std::vector<float> v = {1.f, 2.f, 3.f, 4.f};
  TensorData t;
  t.shape = {2, 2};
  t.data = v.data();
  save_safetensors(local.string(), {{"w", t}}, {});
  const std::string bytes = read_file(local);
  server_.route(url_path("Org/Tiny", "model.safetensors"), Route::file(bytes, sha256_hex(bytes)));
  const Checkpoint ck = load_checkpoint("hf:Org/Tiny");
  EXPECT_EQ(ck.path, cached("Org/Tiny").string());
  ASSERT_EQ(ck.tensors.count("w"), 1u);
  EXPECT_EQ(ck.tensors.at("w").to_f32(), v);
}

// `biref ARGS` with `env`; its stdout and stderr together.
struct CliResult {
  int code = -1;
  std::string out;
  std::string err;  // stderr alone
};
CliResult run_cli(const std::string& env, const std::string& args) {
  const test::CliResult r = test::run_cli(args, env);
  return {r.code, r.all(), r.err};
}

// An error while running: exit code 1 and one line "biref models: error: ..." on stderr, the
// last; only the download's progress line ("biref: downloading ...") may come before it.
void expect_models_error(const CliResult& r) {
  EXPECT_EQ(r.code, 1) << r.out;
  std::istringstream in(r.err);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_FALSE(lines.empty());
  EXPECT_TRUE(r.err.ends_with("\n")) << r.err;
  EXPECT_EQ(lines.back().rfind("biref models: error: ", 0), 0u) << r.err;
  for (size_t i = 0; i + 1 < lines.size(); ++i)
    EXPECT_EQ(lines[i].rfind("biref: downloading ", 0), 0u) << r.err;
}

TEST_F(ZooDownload, ModelsCommandListsAndDownloads) {
  server_.route(url_path("ZhengPeng7/BiRefNet_lite", "model.safetensors"),
                Route::file(body_, sha_));
  const std::string env =
      "BIREF_CACHE='" + cache_.string() + "' BIREF_HF_ENDPOINT='" + server_.base() + "'";
  CliResult list = run_cli(env, "models");
  ASSERT_EQ(list.code, 0) << list.out;
  for (const auto& e : zoo_entries()) EXPECT_NE(list.out.find(e.name), std::string::npos);
  EXPECT_NE(list.out.find("2560x1440"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find(cache_.string()), std::string::npos) << list.out;

  CliResult get = run_cli(env, "models --download Lite");
  ASSERT_EQ(get.code, 0) << get.out;
  EXPECT_NE(get.out.find(cached("ZhengPeng7/BiRefNet_lite").string()), std::string::npos)
      << get.out;
  EXPECT_NE(get.out.find("sha256 verified"), std::string::npos) << get.out;  // the one line
  EXPECT_EQ(read_file(cached("ZhengPeng7/BiRefNet_lite")), body_);

  list = run_cli(env, "models");
  bool lite_cached = false;
  std::istringstream lines(list.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("lite ", 0) == 0) lite_cached = line.ends_with("yes");
  }
  EXPECT_TRUE(lite_cached) << list.out;

  const CliResult bad = run_cli(env, "models --download nonsense");
  expect_models_error(bad);
  EXPECT_NE(bad.out.find("unknown model 'nonsense'"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("general, lite"), std::string::npos) << bad.out;

  const CliResult missing = run_cli(env, "models --download hf:Org/Nothing");
  expect_models_error(missing);
  EXPECT_NE(missing.out.find("HTTP 404"), std::string::npos) << missing.out;
}

}  // namespace
}  // namespace biref
