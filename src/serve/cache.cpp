#include "serve/cache.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <climits>
#include <memory>

#include "core/check.h"
#include "weights/sha256.h"

namespace biref::serve {

// ---- ResultCache ----------------------------------------------------------------------------

std::optional<std::string> ResultCache::get(const std::string& key) noexcept {
  try {
    std::string value;
    switch (do_get(key, value)) {
      case Status::Hit:
        hits_.fetch_add(1, std::memory_order_relaxed);
        return std::optional<std::string>(std::move(value));
      case Status::Miss:
        misses_.fetch_add(1, std::memory_order_relaxed);
        return std::nullopt;
      case Status::Failed:
        break;
    }
  } catch (...) {  // bad_alloc, or a backend that throws: still only a miss for the caller
  }
  errors_.fetch_add(1, std::memory_order_relaxed);
  return std::nullopt;
}

void ResultCache::put(const std::string& key, const std::string& value) noexcept {
  try {
    if (do_put(key, value)) return;
  } catch (...) {
  }
  errors_.fetch_add(1, std::memory_order_relaxed);
}

// ---- LruCache -------------------------------------------------------------------------------

size_t LruCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

size_t LruCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_.size();
}

uint64_t LruCache::evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evictions_;
}

LruCache::Status LruCache::do_get(const std::string& key, std::string& value) {
  if (max_bytes_ == 0) return Status::Miss;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = index_.find(std::string_view(key));
  if (it == index_.end()) return Status::Miss;
  order_.splice(order_.begin(), order_, it->second);  // now the most recently used
  value = it->second->value;
  return Status::Hit;
}

bool LruCache::do_put(const std::string& key, const std::string& value) {
  if (max_bytes_ == 0) return true;
  const size_t c = charge(key.size(), value.size());
  std::lock_guard<std::mutex> lock(mu_);
  // An older value under this key goes first (a replacement, not an eviction).
  if (const auto it = index_.find(std::string_view(key)); it != index_.end()) {
    const auto node = it->second;
    bytes_ -= charge(node->key.size(), node->value.size());
    index_.erase(it);
    order_.erase(node);
  }
  if (c > max_bytes_) return true;  // larger than the whole cache: not stored
  while (bytes_ + c > max_bytes_) {
    const Entry& last = order_.back();
    bytes_ -= charge(last.key.size(), last.value.size());
    index_.erase(std::string_view(last.key));
    order_.pop_back();
    ++evictions_;
  }
  order_.push_front(Entry{key, value});
  try {
    index_.emplace(std::string_view(order_.front().key), order_.begin());
  } catch (...) {
    order_.pop_front();
    throw;
  }
  bytes_ += c;
  return true;
}

// ---- Redis URL ------------------------------------------------------------------------------

namespace {

// The URL with the password (what follows "user:" in the user info, or the whole user info
// without a colon, as redis-cli reads it) replaced by "***".
std::string mask_url(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const size_t start = scheme + 3;
  const size_t at = url.rfind('@');
  if (at == std::string::npos || at < start) return url;
  const size_t colon = url.find(':', start);
  const size_t pw = (colon != std::string::npos && colon < at) ? colon + 1 : start;
  return url.substr(0, pw) + "***" + url.substr(at);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, const std::string& shown) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    BIREF_CHECK(i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0,
                "bad Redis URL ", shown, ": a % not followed by two hex digits in the user info");
    out += char(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
    i += 2;
  }
  return out;
}

// A decimal in [lo, hi], or an error naming `what`.
int parse_int(std::string_view s, int lo, int hi, const char* what, const std::string& shown) {
  BIREF_CHECK(!s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == s.npos,
              "bad Redis URL ", shown, ": ", what, " \"", s, "\" is not a number");
  const int v = std::stoi(std::string(s));
  BIREF_CHECK(v >= lo && v <= hi, "bad Redis URL ", shown, ": ", what, " ", v, " is not in [", lo,
              ", ", hi, "]");
  return v;
}

void parse_user_info(std::string_view info, RedisAddress& a, const std::string& shown) {
  const size_t colon = info.find(':');
  if (colon == info.npos) {
    a.password = percent_decode(info, shown);  // "redis://secret@host", as redis-cli reads it
  } else {
    a.username = percent_decode(info.substr(0, colon), shown);
    a.password = percent_decode(info.substr(colon + 1), shown);
  }
}

}  // namespace

RedisAddress parse_redis_url(const std::string& url) {
  const std::string shown = mask_url(url);
  RedisAddress a;
  const std::string_view u(url);
  BIREF_CHECK(u.find_first_of(" \t\r\n") == u.npos, "bad Redis URL ", shown,
              ": it contains white space");
  if (u.substr(0, 7) == "unix://") {
    // unix://[[user]:password@]/path[?db=N]
    std::string_view rest = u.substr(7);
    if (const size_t at = rest.rfind('@'); at != rest.npos) {
      parse_user_info(rest.substr(0, at), a, shown);
      rest = rest.substr(at + 1);
    }
    if (const size_t q = rest.find('?'); q != rest.npos) {
      const std::string_view query = rest.substr(q + 1);
      BIREF_CHECK(query.substr(0, 3) == "db=", "bad Redis URL ", shown,
                  ": the only query a unix socket URL takes is ?db=N");
      a.db = parse_int(query.substr(3), 0, INT_MAX, "db", shown);
      rest = rest.substr(0, q);
    }
    BIREF_CHECK(rest.size() > 1 && rest[0] == '/' && rest.back() != '/', "bad Redis URL ", shown,
                ": expected unix:///path/to/socket");
    a.unix_path = std::string(rest);
    return a;
  }
  BIREF_CHECK(u.substr(0, 9) != "rediss://", "bad Redis URL ", shown,
              ": rediss (TLS) is not supported; use redis:// or a unix:// socket");
  BIREF_CHECK(u.substr(0, 8) == "redis://", "bad Redis URL ", shown,
              ": expected redis://[[user]:password@]host[:port][/db] or unix:///path");
  std::string_view rest = u.substr(8);
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  const std::string_view path = slash == rest.npos ? std::string_view() : rest.substr(slash + 1);
  if (const size_t at = authority.rfind('@'); at != authority.npos) {
    parse_user_info(authority.substr(0, at), a, shown);
    authority = authority.substr(at + 1);
  }
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {  // [IPv6]:port
    const size_t close = authority.find(']');
    BIREF_CHECK(close != authority.npos && close > 1, "bad Redis URL ", shown,
                ": an IPv6 host needs its closing ]");
    a.host = std::string(authority.substr(1, close - 1));
    BIREF_CHECK(a.host.find_first_not_of("0123456789abcdefABCDEF:.") == a.host.npos,
                "bad Redis URL ", shown, ": \"", a.host, "\" is not an IPv6 address");
    const std::string_view after = authority.substr(close + 1);
    BIREF_CHECK(after.empty() || after[0] == ':', "bad Redis URL ", shown,
                ": unexpected text after the IPv6 host");
    if (!after.empty()) port = after.substr(1);
    if (!after.empty()) BIREF_CHECK(!port.empty(), "bad Redis URL ", shown, ": empty port");
  } else {
    const size_t colon = authority.find(':');
    a.host = std::string(authority.substr(0, colon));
    if (colon != authority.npos) {
      port = authority.substr(colon + 1);
      BIREF_CHECK(!port.empty(), "bad Redis URL ", shown, ": empty port");
    }
    BIREF_CHECK(!a.host.empty(), "bad Redis URL ", shown, ": no host");
    BIREF_CHECK(a.host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789.-_") == a.host.npos,
                "bad Redis URL ", shown, ": \"", a.host, "\" is not a host name or address");
  }
  if (!port.empty()) a.port = parse_int(port, 1, 65535, "port", shown);
  if (!path.empty()) a.db = parse_int(path, 0, INT_MAX, "db", shown);
  return a;
}

// ---- RedisCache -----------------------------------------------------------------------------

namespace {

// Blocks SIGPIPE on this thread while hiredis writes to a socket the server has closed, and
// drops the SIGPIPE that write raised: the write fails with EPIPE instead of killing us.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{0, 0};
        while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

std::string reply_text(const redisReply* r) {
  if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ||
      r->type == REDIS_REPLY_STRING) {
    return std::string(r->str, r->len);
  }
  return str_cat("a reply of type ", r->type);
}

}  // namespace

RedisCache::RedisCache(const std::string& url, int ttl_s, int timeout_ms, int retry_ms,
                       std::string key_prefix)
    : addr_(parse_redis_url(url)),
      display_url_(mask_url(url)),
      ttl_s_(ttl_s),
      timeout_ms_(timeout_ms),
      retry_ms_(retry_ms),
      key_prefix_(std::move(key_prefix)) {
  BIREF_CHECK(ttl_s >= 0, "Redis cache TTL ", ttl_s, " s is negative (0: no expiry)");
  BIREF_CHECK(timeout_ms > 0, "Redis timeout ", timeout_ms, " ms must be positive");
  BIREF_CHECK(retry_ms >= 0, "Redis retry wait ", retry_ms, " ms is negative");
}

RedisCache::~RedisCache() {
  if (ctx_) redisFree(ctx_);
}

std::string RedisCache::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_error_;
}

void RedisCache::drop_locked(const std::string& why) {
  last_error_ = why;
  if (ctx_) redisFree(ctx_);
  ctx_ = nullptr;
  retry_at_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(retry_ms_);
}

redisReply* RedisCache::command_locked(const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r =
      static_cast<redisReply*>(redisCommandArgv(ctx_, int(argv.size()), argv.data(), lens.data()));
  const int err = errno;
  if (!r) {
    const bool timeout = ctx_->err == REDIS_ERR_IO && (err == EAGAIN || err == EWOULDBLOCK);
    drop_locked(str_cat(
        display_url_, ": ", args[0], ": ",
        timeout ? str_cat("no answer within ", timeout_ms_, " ms") : std::string(ctx_->errstr)));
  }
  return r;
}

bool RedisCache::connect_locked(bool ignore_retry_wait) {
  if (ctx_) return true;
  if (!ignore_retry_wait && std::chrono::steady_clock::now() < retry_at_) return false;
  const timeval tv{timeout_ms_ / 1000, (timeout_ms_ % 1000) * 1000};
  ctx_ = addr_.unix_path.empty() ? redisConnectWithTimeout(addr_.host.c_str(), addr_.port, tv)
                                 : redisConnectUnixWithTimeout(addr_.unix_path.c_str(), tv);
  if (!ctx_ || ctx_->err) {
    drop_locked(str_cat(display_url_, ": cannot connect: ",
                        ctx_ ? ctx_->errstr : "cannot allocate a hiredis context"));
    return false;
  }
  if (redisSetTimeout(ctx_, tv) != REDIS_OK) {
    drop_locked(str_cat(display_url_, ": cannot set the socket timeout"));
    return false;
  }
  std::vector<std::vector<std::string_view>> setup;
  if (!addr_.password.empty() && addr_.username.empty()) setup.push_back({"AUTH", addr_.password});
  if (!addr_.password.empty() && !addr_.username.empty()) {
    setup.push_back({"AUTH", addr_.username, addr_.password});
  }
  const std::string db = std::to_string(addr_.db);
  if (addr_.db != 0) setup.push_back({"SELECT", db});
  for (const auto& cmd : setup) {
    Reply r(command_locked(cmd));
    if (!r) return false;
    if (r->type == REDIS_REPLY_ERROR) {
      drop_locked(str_cat(display_url_, ": ", cmd[0], " failed: ", reply_text(r.get())));
      return false;
    }
  }
  return true;
}

RedisCache::Status RedisCache::do_get(const std::string& key, std::string& value) {
  SigpipeGuard no_sigpipe;
  std::lock_guard<std::mutex> lock(mu_);
  if (!connect_locked(false)) return Status::Failed;
  const std::string k = redis_key(key);
  Reply r(command_locked({"GET", k}));
  if (!r) return Status::Failed;
  if (r->type == REDIS_REPLY_NIL) return Status::Miss;
  if (r->type == REDIS_REPLY_STRING) {
    value.assign(r->str, r->len);
    return Status::Hit;
  }
  drop_locked(str_cat(display_url_, ": GET: ", reply_text(r.get())));
  return Status::Failed;
}

bool RedisCache::do_put(const std::string& key, const std::string& value) {
  SigpipeGuard no_sigpipe;
  std::lock_guard<std::mutex> lock(mu_);
  if (!connect_locked(false)) return false;
  const std::string k = redis_key(key), ttl = std::to_string(ttl_s_);
  Reply r(ttl_s_ > 0 ? command_locked({"SET", k, value, "EX", ttl})
                     : command_locked({"SET", k, value}));
  if (!r) return false;
  if (r->type == REDIS_REPLY_STATUS) return true;  // +OK
  drop_locked(str_cat(display_url_, ": SET: ", reply_text(r.get())));
  return false;
}

bool RedisCache::ping() noexcept {
  try {
    SigpipeGuard no_sigpipe;
    std::lock_guard<std::mutex> lock(mu_);
    if (!connect_locked(true)) return false;
    Reply r(command_locked({"PING"}));
    if (!r) return false;
    if (r->type == REDIS_REPLY_STATUS && reply_text(r.get()) == "PONG") return true;
    drop_locked(str_cat(display_url_, ": PING: ", reply_text(r.get())));
    return false;
  } catch (...) {
    return false;
  }
}

// ---- Keys -----------------------------------------------------------------------------------

std::string cache_key(std::string_view image_sha256_hex, std::string_view model_id,
                      std::string_view model_version, std::string_view canonical_params) {
  Sha256 h;
  auto part = [&](std::string_view s) {
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(s.size()) >> (8 * i));  // little endian
    h.update(len, sizeof(len));
    h.update(s);
  };
  part("biref.cache_key.v1");  // a domain tag: these hashes are not image hashes
  part(image_sha256_hex);
  part(model_id);
  part(model_version);
  part(canonical_params);
  return h.hex_digest();
}

}  // namespace biref::serve
