// The result cache of `biref serve`: a finished response body stored under a key made from the
// image's SHA-256, the model and the canonical request parameters (cache_key). Two backends:
// LruCache (in process, bounded in bytes) and RedisCache (shared between services, with a TTL).
//
// A cache failure never fails a request: get() and put() do not throw; a backend error is
// counted in errors() and get() then answers as a miss, put() does nothing.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct redisContext;
struct redisReply;

namespace biref::serve {

class ResultCache {
 public:
  virtual ~ResultCache() = default;

  // The value stored under `key`, or nullopt on a miss or a backend error.
  std::optional<std::string> get(const std::string& key) noexcept;
  // Stores `value` under `key` (replacing an older value); a backend error is only counted.
  void put(const std::string& key, const std::string& value) noexcept;
  // "lru", "redis": for logs and metric labels.
  virtual const char* name() const = 0;

  // hits + misses: lookups answered by the backend. errors: failed gets and puts (a get that
  // fails counts as an error only, not as a miss).
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }

 protected:
  // The backend: may throw, or return Failed; get()/put() count and swallow both.
  enum class Status { Hit, Miss, Failed };
  virtual Status do_get(const std::string& key, std::string& value) = 0;
  virtual bool do_put(const std::string& key, const std::string& value) = 0;  // false: failed

 private:
  std::atomic<uint64_t> hits_{0}, misses_{0}, errors_{0};
};

// In-process LRU, thread-safe (one mutex). Each entry is charged key size + value size +
// kEntryOverhead bytes, and the total charge never exceeds max_bytes. A value whose charge is
// above max_bytes is not stored (and drops an older value under the same key); max_bytes 0
// disables the cache (every get is a miss, every put a no-op).
class LruCache : public ResultCache {
 public:
  // About what an entry costs besides its key and value: a list node with two std::string
  // headers and a hash-table node with a string_view and an iterator, plus allocator slack.
  static constexpr size_t kEntryOverhead = 128;

  explicit LruCache(size_t max_bytes) : max_bytes_(max_bytes) {}
  const char* name() const override { return "lru"; }

  size_t max_bytes() const { return max_bytes_; }
  size_t bytes() const;        // the current total charge
  size_t entries() const;      // the number of entries
  uint64_t evictions() const;  // entries dropped to make room (not replacements)

 protected:
  Status do_get(const std::string& key, std::string& value) override;
  bool do_put(const std::string& key, const std::string& value) override;

 private:
  struct Entry {
    std::string key, value;
  };
  static size_t charge(size_t key_size, size_t value_size) {
    return key_size + value_size + kEntryOverhead;
  }

  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_;  // views into order_
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
};

// Where a RedisCache connects: parse_redis_url's result.
struct RedisAddress {
  std::string host;       // TCP host name or address (IPv6 without brackets); "" for a socket
  int port = 6379;        // TCP only
  std::string unix_path;  // unix socket path; "" for TCP
  std::string username;   // ACL user (Redis 6+); "" for the default user
  std::string password;   // "" for none
  int db = 0;             // SELECTed after connecting when not 0
};

// redis://[[user]:password@]host[:port][/db], with host a name, an IPv4 address or [IPv6], and
// unix:///path/to/socket[?db=N]. User and password may be percent-encoded. Throws biref::Error
// naming the URL (password masked) when it is malformed or uses another scheme (rediss: no TLS).
RedisAddress parse_redis_url(const std::string& url);

// Redis, through hiredis: GET, and SET key value EX ttl. One connection guarded by a mutex.
// `timeout_ms` bounds the connect and every command (a name lookup is not bounded: use an
// address for strict bounds). After any failure (refused, timeout, server gone, error reply)
// the connection is dropped and no new connect is tried for `retry_ms`: meanwhile calls fail at
// once (counted as errors), so a dead Redis does not add a timeout to every request.
// Keys are stored as key_prefix + key, so several services (and cache formats) share a Redis.
class RedisCache : public ResultCache {
 public:
  // Bump the "v1" when the format of cached values changes.
  static constexpr const char* kDefaultKeyPrefix = "biref:v1:";

  // ttl_s: seconds a value lives (0: no expiry); timeout_ms > 0; retry_ms >= 0. Throws
  // biref::Error for a malformed URL or a bad number. Connects lazily, on the first call.
  RedisCache(const std::string& url, int ttl_s, int timeout_ms, int retry_ms = 1000,
             std::string key_prefix = kDefaultKeyPrefix);
  ~RedisCache() override;
  RedisCache(const RedisCache&) = delete;
  RedisCache& operator=(const RedisCache&) = delete;

  const char* name() const override { return "redis"; }
  // True when Redis answers PING now (connecting if needed, ignoring the retry wait); for a
  // startup log or a readiness check. Counts nothing; never throws.
  bool ping() noexcept;
  // The Redis key under which `key` is stored.
  std::string redis_key(const std::string& key) const { return key_prefix_ + key; }
  // The URL with its password masked, for logs.
  const std::string& display_url() const { return display_url_; }
  // The last backend error message ("" before any), for logs.
  std::string last_error() const;

 protected:
  Status do_get(const std::string& key, std::string& value) override;
  bool do_put(const std::string& key, const std::string& value) override;

 private:
  bool connect_locked(bool ignore_retry_wait);  // under mu_
  void drop_locked(const std::string& why);     // under mu_: free the context, start the wait
  // Under mu_: the reply (free with freeReplyObject), or null after an I/O error and a drop.
  redisReply* command_locked(const std::vector<std::string_view>& args);

  const RedisAddress addr_;
  const std::string display_url_;
  const int ttl_s_, timeout_ms_, retry_ms_;
  const std::string key_prefix_;
  mutable std::mutex mu_;
  redisContext* ctx_ = nullptr;
  std::chrono::steady_clock::time_point retry_at_{};  // no connect before this
  std::string last_error_;
};

// The cache key of one request: SHA-256 (hex) over the length-prefixed parts, so no two
// different lists of parts share an encoding (("ab", "c") and ("a", "bc") differ).
std::string cache_key(std::string_view image_sha256_hex, std::string_view model_id,
                      std::string_view model_version, std::string_view canonical_params);

}  // namespace biref::serve
