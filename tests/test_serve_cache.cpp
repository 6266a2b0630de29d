// The result caches of `biref serve` (src/serve/cache.h): the LRU's byte bound and order, cache
// keys, Redis URLs, and RedisCache against a real redis-server that the test starts, stops,
// kills and restarts.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <list>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "biref/error.h"
#include "serve/cache.h"

namespace biref::serve {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// ---- LruCache -------------------------------------------------------------------------------

size_t charge(const std::string& k, const std::string& v) {
  return k.size() + v.size() + LruCache::kEntryOverhead;
}

TEST(ServeLruCache, StoresReplacesAndCounts) {
  LruCache c(10000);
  EXPECT_STREQ(c.name(), "lru");
  EXPECT_EQ(c.get("k"), std::nullopt);
  c.put("k", "v1");
  c.put("k", std::string("v\0two", 5));  // binary values, replaced in place
  EXPECT_EQ(c.get("k"), std::string("v\0two", 5));
  EXPECT_EQ(c.entries(), 1u);
  EXPECT_EQ(c.bytes(), charge("k", std::string(5, 'x')));
  EXPECT_EQ(c.hits(), 1u);
  EXPECT_EQ(c.misses(), 1u);
  EXPECT_EQ(c.errors(), 0u);
  EXPECT_EQ(c.evictions(), 0u);
}

TEST(ServeLruCache, EvictsTheLeastRecentlyUsed) {
  const std::string v(100, 'v');
  LruCache c(3 * charge("a", v));  // room for exactly three entries
  c.put("a", v);
  c.put("b", v);
  c.put("c", v);
  EXPECT_EQ(c.entries(), 3u);
  EXPECT_TRUE(c.get("a"));  // a is now the most recent; b the least
  c.put("d", v);
  EXPECT_EQ(c.entries(), 3u);
  EXPECT_EQ(c.evictions(), 1u);
  EXPECT_FALSE(c.get("b"));
  EXPECT_TRUE(c.get("a"));
  EXPECT_TRUE(c.get("c"));
  EXPECT_TRUE(c.get("d"));
  // A larger value evicts as many entries as it needs, oldest first: a, then c.
  c.put("e", std::string(150, 'v'));
  EXPECT_FALSE(c.get("a"));
  EXPECT_FALSE(c.get("c"));
  EXPECT_TRUE(c.get("d"));
  EXPECT_TRUE(c.get("e"));
  EXPECT_EQ(c.evictions(), 3u);
  EXPECT_LE(c.bytes(), c.max_bytes());
}

TEST(ServeLruCache, ValuesLargerThanTheCacheAreNotStored) {
  LruCache c(1000);
  c.put("small", "x");
  c.put("big", std::string(1000, 'x'));  // its charge passes the budget
  EXPECT_FALSE(c.get("big"));
  EXPECT_TRUE(c.get("small"));  // nothing evicted for it
  EXPECT_EQ(c.evictions(), 0u);
  // The largest value that fits exactly is stored (and evicts everything else).
  const std::string exact(1000 - LruCache::kEntryOverhead - 3, 'x');
  c.put("fit", exact);
  EXPECT_EQ(c.get("fit"), exact);
  EXPECT_EQ(c.bytes(), 1000u);
  EXPECT_FALSE(c.get("small"));
  // Replacing a value by an oversize one drops the old value: no stale answer.
  c.put("fit", std::string(2000, 'y'));
  EXPECT_FALSE(c.get("fit"));
  EXPECT_EQ(c.bytes(), 0u);
  EXPECT_EQ(c.entries(), 0u);
}

TEST(ServeLruCache, ZeroBytesDisablesIt) {
  LruCache c(0);
  c.put("k", "v");
  EXPECT_FALSE(c.get("k"));
  EXPECT_EQ(c.entries(), 0u);
  EXPECT_EQ(c.bytes(), 0u);
  EXPECT_EQ(c.misses(), 1u);
  EXPECT_EQ(c.errors(), 0u);
}

// Random puts and gets against a plain list model: same answers, and never above the budget.
TEST(ServeLruCache, MatchesAModelAndNeverPassesItsBudget) {
  for (size_t max_bytes : {size_t(300), size_t(2000), size_t(20000)}) {
    LruCache c(max_bytes);
    std::list<std::pair<std::string, std::string>> model;  // most recent first
    size_t model_bytes = 0;
    std::mt19937 rng{uint32_t(max_bytes)};
    for (int step = 0; step < 20000; ++step) {
      const std::string key = "k" + std::to_string(rng() % 40);
      auto it = model.begin();
      while (it != model.end() && it->first != key) ++it;
      if (rng() % 3 == 0) {
        const auto got = c.get(key);
        ASSERT_EQ(got.has_value(), it != model.end()) << key << " at step " << step;
        if (got) {
          ASSERT_EQ(*got, it->second);
          model.splice(model.begin(), model, it);
        }
      } else {
        const std::string value(rng() % (max_bytes / 2 + 64), char('a' + rng() % 26));
        if (it != model.end()) {
          model_bytes -= charge(it->first, it->second);
          model.erase(it);
        }
        const size_t ch = charge(key, value);
        if (ch <= max_bytes) {
          while (model_bytes + ch > max_bytes) {
            model_bytes -= charge(model.back().first, model.back().second);
            model.pop_back();
          }
          model.emplace_front(key, value);
          model_bytes += ch;
        }
        c.put(key, value);
      }
      ASSERT_LE(c.bytes(), max_bytes) << "step " << step;
      ASSERT_EQ(c.bytes(), model_bytes) << "step " << step;
      ASSERT_EQ(c.entries(), model.size()) << "step " << step;
    }
    EXPECT_GT(c.evictions(), 0u);
  }
}

TEST(ServeLruCache, ManyThreadsAtOnce) {
  LruCache c(50000);
  const int threads = 8, n = 20000;
  auto value_of = [](int k) { return std::string(size_t(50 + k * 7), char('a' + k % 26)); };
  std::vector<std::thread> pool;
  std::atomic<int> wrong{0}, gets{0};
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng{uint32_t(t)};
      for (int i = 0; i < n; ++i) {
        const int k = int(rng() % 100);
        const std::string key = "key" + std::to_string(k);
        if (rng() % 2) {
          c.put(key, value_of(k));
        } else {
          ++gets;
          const auto v = c.get(key);
          if (v && *v != value_of(k)) ++wrong;
        }
        if (c.bytes() > c.max_bytes()) ++wrong;
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(c.hits() + c.misses(), uint64_t(gets.load()));
  EXPECT_GT(c.hits(), 0u);
  EXPECT_GT(c.evictions(), 0u);
  EXPECT_EQ(c.errors(), 0u);
  EXPECT_LE(c.bytes(), c.max_bytes());
}

// A backend that fails or throws: the cache turns both into a counted error.
class BrokenCache : public ResultCache {
 public:
  const char* name() const override { return "broken"; }
  int mode = 0;  // 0: report failure, 1: throw biref::Error, 2: throw bad_alloc

 protected:
  Status do_get(const std::string&, std::string&) override {
    if (mode == 1) throw biref::Error("backend down");
    if (mode == 2) throw std::bad_alloc();
    return Status::Failed;
  }
  bool do_put(const std::string&, const std::string&) override {
    if (mode == 1) throw biref::Error("backend down");
    if (mode == 2) throw std::bad_alloc();
    return false;
  }
};

TEST(ServeResultCache, BackendFailuresAreCountedNeverThrown) {
  BrokenCache c;
  for (int mode : {0, 1, 2}) {
    c.mode = mode;
    EXPECT_EQ(c.get("k"), std::nullopt);
    c.put("k", "v");
  }
  EXPECT_EQ(c.errors(), 6u);
  EXPECT_EQ(c.misses(), 0u);
  EXPECT_EQ(c.hits(), 0u);
}

// ---- cache_key ------------------------------------------------------------------------------

TEST(ServeCacheKey, IsAPinnedHashOfLengthPrefixedParts) {
  const std::string img = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  // Pinned (Python: sha256 over 8-byte little-endian length + bytes of the tag and each part):
  // a change here invalidates every stored result, so it must be deliberate.
  EXPECT_EQ(cache_key(img, "BiRefNet", "abc123", "size=1024&output=mask"),
            "873762739c2b8b1310ef4d8a057eadbd4ff72833ba89a4343836e0f281d0777a");
  const std::string k = cache_key(img, "m", "v", "p");
  EXPECT_EQ(k.size(), 64u);
  EXPECT_EQ(k.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(k, cache_key(img, "m", "v", "p"));
  // Moving a boundary, swapping parts or emptying one gives another key.
  std::vector<std::string> keys = {cache_key("ab", "c", "", ""),
                                   cache_key("a", "bc", "", ""),
                                   cache_key("abc", "", "", ""),
                                   cache_key("", "abc", "", ""),
                                   cache_key("", "", "abc", ""),
                                   cache_key("", "", "", "abc"),
                                   cache_key("", "", "", ""),
                                   cache_key(img, "m", "v", "q"),
                                   cache_key(img, "m", "w", "p"),
                                   cache_key(img, "n", "v", "p"),
                                   k,
                                   cache_key(std::string_view("a\0b", 3), "", "", ""),
                                   cache_key("a", "", "", "")};
  for (size_t i = 0; i < keys.size(); ++i) {
    for (size_t j = 0; j < i; ++j) EXPECT_NE(keys[i], keys[j]) << i << " vs " << j;
  }
}

// ---- Redis URLs -----------------------------------------------------------------------------

TEST(ServeRedisUrl, ParsesTheForms) {
  RedisAddress a = parse_redis_url("redis://localhost");
  EXPECT_EQ(a.host, "localhost");
  EXPECT_EQ(a.port, 6379);
  EXPECT_EQ(a.db, 0);
  EXPECT_EQ(a.password, "");
  a = parse_redis_url("redis://:s%40cr%3At@10.0.0.5:6380/2");
  EXPECT_EQ(a.host, "10.0.0.5");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 2);
  EXPECT_EQ(a.username, "");
  EXPECT_EQ(a.password, "s@cr:t");
  a = parse_redis_url("redis://alice:pw@cache.internal:7000/");
  EXPECT_EQ(a.username, "alice");
  EXPECT_EQ(a.password, "pw");
  EXPECT_EQ(a.host, "cache.internal");
  EXPECT_EQ(a.db, 0);
  a = parse_redis_url("redis://secret@h");  // no colon: a password, as redis-cli reads it
  EXPECT_EQ(a.password, "secret");
  EXPECT_EQ(a.username, "");
  a = parse_redis_url("redis://[::1]:6390/1");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 6390);
  EXPECT_EQ(a.db, 1);
  a = parse_redis_url("unix:///run/redis/redis.sock");
  EXPECT_EQ(a.unix_path, "/run/redis/redis.sock");
  EXPECT_EQ(a.host, "");
  a = parse_redis_url("unix://:pw@/tmp/r.sock?db=4");
  EXPECT_EQ(a.unix_path, "/tmp/r.sock");
  EXPECT_EQ(a.password, "pw");
  EXPECT_EQ(a.db, 4);
}

TEST(ServeRedisUrl, RejectsMalformedUrlsNamingThemWithoutThePassword) {
  for (const std::string url : {"",
                                "localhost:6379",
                                "http://localhost",
                                "rediss://localhost",
                                "redis://",
                                "redis://:6379",
                                "redis://host:",
                                "redis://host:0",
                                "redis://host:65536",
                                "redis://host:12ab",
                                "redis://host/x",
                                "redis://host/1/2",
                                "redis://ho st",
                                "redis://host?db=1",
                                "redis://[::1",
                                "redis://[::1]x",
                                "redis://[]:1",
                                "unix://",
                                "unix:///",
                                "unix:///tmp/s?x=1",
                                "unix:///tmp/s?db=-1"}) {
    try {
      parse_redis_url(url);
      ADD_FAILURE() << "accepted: " << url;
    } catch (const biref::Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad Redis URL " + url), std::string::npos) << e.what();
    }
  }
  try {
    parse_redis_url("redis://:%4@host");
    ADD_FAILURE() << "a bad percent escape accepted";
  } catch (const biref::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad Redis URL redis://:***@host: a %"), std::string::npos)
        << e.what();
  }
  try {
    parse_redis_url("redis://bob:hunter2@host:99999");
    ADD_FAILURE() << "port 99999 accepted";
  } catch (const biref::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find("hunter2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("redis://bob:***@host:99999"), std::string::npos) << msg;
  }
  EXPECT_THROW(RedisCache("redis://h", -1, 200), biref::Error);
  EXPECT_THROW(RedisCache("redis://h", 60, 0), biref::Error);
  EXPECT_THROW(RedisCache("redis://h", 60, 200, -5), biref::Error);
  EXPECT_EQ(RedisCache("redis://u:pw@h", 60, 200).display_url(), "redis://u:***@h");
}

// ---- RedisCache against a real server --------------------------------------------------------

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  close(fd);
  return ntohs(a.sin_port);
}

// Our own connection, to look at what the cache wrote; nullptr when nothing answers.
redisContext* connect_direct(int port) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, timeval{0, 200000});
  if (!c || c->err) {
    if (c) redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, timeval{1, 0});
  return c;
}

// A redis-server child on 127.0.0.1:port, killed (SIGKILL) by kill() or the destructor. It also
// dies with the test process (PR_SET_PDEATHSIG), so a crashed test leaves no server behind.
class RedisServer {
 public:
  static constexpr const char* kBinary = "/usr/bin/redis-server";

  RedisServer(int port, const std::vector<std::string>& extra = {}) : port_(port) {
    dir_ = std::filesystem::temp_directory_path() /
           ("biref_redis_" + std::to_string(getpid()) + "_" + std::to_string(port));
    std::filesystem::create_directories(dir_);
    std::vector<std::string> args = {kBinary,
                                     "--port",
                                     std::to_string(port),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir_.string(),
                                     "--logfile",
                                     (dir_ / "redis.log").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(kBinary, argv.data());
      _exit(127);
    }
  }
  ~RedisServer() {
    kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Waits (at most ~5 s) until the server answers PING; false if it exits or never answers.
  bool wait_ready() {
    const auto start = Clock::now();
    while (seconds_since(start) < 5) {
      if (pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;  // it exited: port taken, bad option
      }
      if (redisContext* c = connect_direct(port_)) {
        auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        if (!ok && r && r->type == REDIS_REPLY_ERROR) ok = true;  // NOAUTH: it is up
        if (r) freeReplyObject(r);
        redisFree(c);
        if (ok) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  void stop() { ::kill(pid_, SIGSTOP); }  // alive, accepting, never answering
  void resume() { ::kill(pid_, SIGCONT); }
  std::string log() const {
    std::ifstream f(dir_ / "redis.log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

 private:
  int port_;
  pid_t pid_ = -1;
  std::filesystem::path dir_;
};

#define REQUIRE_REDIS_SERVER()                     \
  ASSERT_EQ(access(RedisServer::kBinary, X_OK), 0) \
      << RedisServer::kBinary                      \
      << " not found: install the `redis-server` package (apt-get install redis-server)"

// Runs f and checks it returned within `bound` seconds.
template <typename F>
auto timed(double bound, const char* what, F f) {
  const auto start = Clock::now();
  auto r = f();
  const double s = seconds_since(start);
  EXPECT_LT(s, bound) << what << " took " << s << " s";
  return r;
}

TEST(ServeRedisCache, RoundTripTtlMissesAndRecoveryAfterTheServerDies) {
  REQUIRE_REDIS_SERVER();
  const int port = free_port();
  auto server = std::make_unique<RedisServer>(port);
  ASSERT_TRUE(server->wait_ready()) << "redis-server did not start on port " << port << "\n"
                                    << server->log();
  const int retry_ms = 1000;
  RedisCache cache("redis://127.0.0.1:" + std::to_string(port), 60, 200, retry_ms);
  EXPECT_STREQ(cache.name(), "redis");
  EXPECT_TRUE(cache.ping()) << cache.last_error();

  // Miss, round trip (binary, and 2 MB), hit.
  EXPECT_EQ(cache.get("k1"), std::nullopt);
  EXPECT_EQ(cache.misses(), 1u);
  const std::string bin("mask\0\xff\x01png", 10);
  cache.put("k1", bin);
  EXPECT_EQ(cache.get("k1"), bin);
  std::string big(2 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = char(i / 4096);
  cache.put("big", big);
  EXPECT_EQ(cache.get("big"), big);
  EXPECT_EQ(cache.hits(), 2u);
  EXPECT_EQ(cache.errors(), 0u) << cache.last_error();

  // Stored under the prefix, with the TTL.
  {
    redisContext* c = connect_direct(port);
    ASSERT_NE(c, nullptr);
    const std::string key = cache.redis_key("k1");
    EXPECT_EQ(key, std::string(RedisCache::kDefaultKeyPrefix) + "k1");
    auto* ttl = static_cast<redisReply*>(redisCommand(c, "TTL %b", key.data(), key.size()));
    ASSERT_NE(ttl, nullptr);
    EXPECT_EQ(ttl->type, REDIS_REPLY_INTEGER);
    EXPECT_GT(ttl->integer, 0);
    EXPECT_LE(ttl->integer, 60);
    freeReplyObject(ttl);
    auto* raw = static_cast<redisReply*>(redisCommand(c, "GET %b", key.data(), key.size()));
    ASSERT_NE(raw, nullptr);
    ASSERT_EQ(raw->type, REDIS_REPLY_STRING);
    EXPECT_EQ(std::string(raw->str, raw->len), bin);
    freeReplyObject(raw);
    redisFree(c);
  }

  // Killed while connected: every call returns at once as a miss or no-op and counts one
  // error (the first finds the connection closed, the rest fall in the retry wait). The first
  // is a 2 MB put: writing it to the closed socket raises SIGPIPE, which must not kill us.
  server->kill();
  uint64_t errors = cache.errors();
  for (int i = 0; i < 5; ++i) {
    timed(2.0, "put to a dead server", [&] {
      cache.put("k2", big);
      return 0;
    });
    EXPECT_EQ(timed(2.0, "get from a dead server", [&] { return cache.get("k1"); }), std::nullopt);
  }
  EXPECT_EQ(cache.errors(), errors + 10);
  EXPECT_EQ(cache.misses(), 1u);  // failures are errors, not misses
  EXPECT_FALSE(timed(2.0, "ping a dead server", [&] { return cache.ping(); }));
  const auto last_failure = Clock::now();  // ping connected (refused): the wait starts here
  EXPECT_NE(cache.last_error().find("cannot connect"), std::string::npos) << cache.last_error();
  errors = cache.errors();

  // Restarted on the same port: within the retry wait no connect is tried (still an error),
  // after it the cache works again. The old keys are gone (nothing was saved).
  server.reset();  // its directory goes before the new server makes it again
  server = std::make_unique<RedisServer>(port);
  ASSERT_TRUE(server->wait_ready()) << "redis-server did not restart on port " << port << "\n"
                                    << server->log();
  if (seconds_since(last_failure) < 0.7 * retry_ms / 1000) {  // else the start took the wait
    EXPECT_EQ(cache.get("k1"), std::nullopt);
    EXPECT_EQ(cache.errors(), errors + 1) << "a call inside the retry wait reached Redis";
  }
  auto recover = [&](const std::string& key) {
    const auto start = Clock::now();
    while (seconds_since(start) < 5) {
      cache.put(key, "again");
      if (cache.get(key) == std::optional<std::string>("again")) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  ASSERT_TRUE(recover("k3")) << "no recovery within 5 s: " << cache.last_error();
  EXPECT_GE(seconds_since(last_failure), 0.95 * retry_ms / 1000);
  EXPECT_EQ(cache.get("k1"), std::nullopt);  // a miss now, not an error
  errors = cache.errors();
  const uint64_t misses = cache.misses();
  cache.put("k4", "v4");
  EXPECT_EQ(cache.get("k4"), "v4");
  EXPECT_EQ(cache.errors(), errors);

  // Stopped (the kernel still accepts, nobody answers): a call ends at the 200 ms timeout.
  server->stop();
  EXPECT_EQ(timed(2.0, "get from a stopped server", [&] { return cache.get("k4"); }), std::nullopt);
  EXPECT_EQ(cache.errors(), errors + 1);
  EXPECT_NE(cache.last_error().find("no answer within 200 ms"), std::string::npos)
      << cache.last_error();
  server->resume();
  ASSERT_TRUE(recover("k5")) << "no recovery within 5 s: " << cache.last_error();
  EXPECT_EQ(cache.get("k4"), "v4");
  EXPECT_EQ(cache.misses(), misses);
}

TEST(ServeRedisCache, NoServerMeansQuickCountedErrors) {
  REQUIRE_REDIS_SERVER();
  const int port = free_port();  // nothing listens there
  RedisCache cache("redis://127.0.0.1:" + std::to_string(port), 60, 200, 60000);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(timed(1.0, "get with no server", [&] { return cache.get("k"); }), std::nullopt);
    cache.put("k", "v");
  }
  EXPECT_EQ(cache.errors(), 40u);
  EXPECT_EQ(cache.misses(), 0u);
  EXPECT_NE(cache.last_error().find("cannot connect"), std::string::npos) << cache.last_error();
  EXPECT_NE(cache.last_error().find(std::to_string(port)), std::string::npos) << cache.last_error();
}

TEST(ServeRedisCache, PasswordDbAndTtlFromTheUrl) {
  REQUIRE_REDIS_SERVER();
  const int port = free_port();
  RedisServer server(port, {"--requirepass", "s3cret"});
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const std::string base = "127.0.0.1:" + std::to_string(port);

  RedisCache good("redis://:s3cret@" + base + "/3", 0, 200, 0);  // TTL 0: no expiry
  good.put("k", "v");
  EXPECT_EQ(good.get("k"), "v");
  EXPECT_EQ(good.errors(), 0u) << good.last_error();
  {
    redisContext* c = connect_direct(port);
    ASSERT_NE(c, nullptr);
    freeReplyObject(redisCommand(c, "AUTH s3cret"));
    freeReplyObject(redisCommand(c, "SELECT 3"));
    const std::string key = good.redis_key("k");
    auto* ttl = static_cast<redisReply*>(redisCommand(c, "TTL %b", key.data(), key.size()));
    ASSERT_NE(ttl, nullptr);
    EXPECT_EQ(ttl->integer, -1);  // exists, no expiry: in db 3
    freeReplyObject(ttl);
    freeReplyObject(redisCommand(c, "SELECT 0"));
    auto* n = static_cast<redisReply*>(redisCommand(c, "EXISTS %b", key.data(), key.size()));
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->integer, 0);  // not in db 0
    freeReplyObject(n);
    redisFree(c);
  }

  RedisCache wrong("redis://:nope@" + base, 60, 200, 0);
  EXPECT_EQ(wrong.get("k"), std::nullopt);
  wrong.put("k", "v");
  EXPECT_EQ(wrong.errors(), 2u);
  EXPECT_NE(wrong.last_error().find("AUTH failed"), std::string::npos) << wrong.last_error();
  EXPECT_EQ(wrong.last_error().find("nope"), std::string::npos) << wrong.last_error();

  RedisCache none("redis://" + base, 60, 200, 0);
  EXPECT_EQ(none.get("k"), std::nullopt);
  EXPECT_EQ(none.errors(), 1u);
  EXPECT_NE(none.last_error().find("NOAUTH"), std::string::npos) << none.last_error();
}

TEST(ServeRedisCache, ManyThreadsShareOneConnection) {
  REQUIRE_REDIS_SERVER();
  const int port = free_port();
  RedisServer server(port);
  ASSERT_TRUE(server.wait_ready()) << server.log();
  RedisCache cache("redis://127.0.0.1:" + std::to_string(port), 60, 1000);
  const int threads = 6, n = 300;
  std::atomic<int> wrong{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < n; ++i) {
        const std::string key = std::to_string(i % 20), value = "value of " + key;
        if ((i + t) % 3 == 0) {
          cache.put(key, value);
        } else if (auto v = cache.get(key); v && *v != value) {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(cache.errors(), 0u) << cache.last_error();
  EXPECT_GT(cache.hits(), 0u);
}

}  // namespace
}  // namespace biref::serve
