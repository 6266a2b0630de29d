#include "weights/http.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "core/check.h"
#include "weights/sha256.h"

namespace biref {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

void curl_init_once() {
  // curl_global_init is not thread-safe in older libcurl: do it once, before any handle.
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::string human_size(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

// What one attempt (one curl_easy_perform) learns and writes.
struct Transfer {
  std::string part;
  uint64_t offset = 0;  // bytes already in `part`; a Range request asks for the rest
  Sha256* hasher = nullptr;

  long status = 0;            // of the last response in the redirect chain
  std::string reason;         // its reason phrase
  int64_t range_start = -1;   // from its Content-Range
  std::string linked_sha256;  // X-Linked-Etag from any response (the hub sends it on the redirect)
  bool body_started = false;
  bool restarted = false;  // asked for a range, got the whole file: started over
  std::FILE* file = nullptr;
  uint64_t written = 0;
  std::string abort_reason;  // set by a callback that stops the transfer

  // Progress.
  bool show = false, tty = false;
  std::string label;
  Clock::time_point start = Clock::now(), last_draw{};
  uint64_t total = 0;  // whole file size, once the server has said (0: unknown)
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const std::string line = trim(std::string(data, size * n));
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (the first, or after a redirect)
    const size_t sp = line.find(' ');
    t.status = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
    const size_t sp2 = sp == std::string::npos ? sp : line.find(' ', sp + 1);
    t.reason = sp2 == std::string::npos ? "" : line.substr(sp2 + 1);
    t.range_start = -1;
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  const std::string name = lower(trim(line.substr(0, colon)));
  const std::string value = trim(line.substr(colon + 1));
  if (name == "x-linked-etag") {
    if (std::string sha = sha256_from_etag(value); !sha.empty()) t.linked_sha256 = sha;
  } else if (name == "content-range") {
    unsigned long long first = 0;  // "bytes FIRST-LAST/TOTAL"
    if (std::sscanf(value.c_str(), "bytes %llu-", &first) == 1) t.range_start = int64_t(first);
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  if (!t.body_started) {
    t.body_started = true;
    if (t.status == 206) {
      if (t.range_start != int64_t(t.offset)) {
        t.abort_reason = str_cat("the server sent a range starting at byte ", t.range_start,
                                 " instead of ", t.offset);
        return 0;
      }
      t.file = std::fopen(t.part.c_str(), "ab");
    } else if (t.status == 200) {
      // A whole file, even if we asked for the rest of one: start over cleanly.
      if (t.offset > 0) t.restarted = true;
      t.offset = 0;
      t.hasher->reset();
      std::error_code ec;
      fs::create_directories(fs::path(t.part).parent_path(), ec);
      t.file = std::fopen(t.part.c_str(), "wb");
    } else {
      return bytes;  // the body of an error response: not the file, discarded
    }
    if (!t.file) {
      t.abort_reason = str_cat("cannot write '", t.part, "'");
      return 0;
    }
  }
  if (!t.file) return bytes;
  if (std::fwrite(data, 1, bytes, t.file) != bytes) {
    t.abort_reason = str_cat("cannot write '", t.part, "' (disk full?)");
    return 0;
  }
  t.hasher->update(data, bytes);
  t.written += bytes;
  return bytes;
}

void draw(Transfer& t, uint64_t total_now, uint64_t total, bool final) {
  const double secs = std::chrono::duration<double>(Clock::now() - t.start).count();
  const double speed = secs > 0 ? double(t.written) / secs : 0;
  std::string line = str_cat("\r", t.label, "  ", human_size(double(total_now)));
  if (total > 0) {
    char pct[16];
    std::snprintf(pct, sizeof pct, "%5.1f%%", 100.0 * double(total_now) / double(total));
    line += str_cat(" / ", human_size(double(total)), "  ", pct);
  }
  line += str_cat("  ", human_size(speed), "/s   ");
  std::fputs(line.c_str(), stderr);
  if (final) std::fputc('\n', stderr);
  std::fflush(stderr);
}

int on_progress(void* user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto& t = *static_cast<Transfer*>(user);
  if (!t.show || !t.tty || !t.body_started || !t.file) return 0;
  const auto now = Clock::now();
  if (now - t.last_draw < std::chrono::milliseconds(100)) return 0;
  t.last_draw = now;
  if (dltotal > 0) t.total = t.offset + uint64_t(dltotal);
  draw(t, t.offset + uint64_t(dlnow), t.total, false);
  return 0;
}

bool transient(CURLcode rc) {
  switch (rc) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

uint64_t size_or_zero(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : uint64_t(n);
}

}  // namespace

std::string sha256_from_etag(std::string value) {
  value = trim(value);
  if (value.rfind("W/", 0) == 0) value = value.substr(2);
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    value = value.substr(1, value.size() - 2);
  }
  if (value.size() != 64) return {};
  for (char c : value) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return {};
  }
  return lower(value);
}

namespace {
// One download of a file at a time: two processes appending to one .part would corrupt it. The
// lock lives in the temporary folder (named by a hash of the destination), so a failed download
// leaves nothing in the cache, and it is removed when the download ends, whichever way it ends.
}  // namespace

std::string download_lock_path(const std::string& dest) {
  Sha256 h;
  const std::string abs = fs::absolute(dest).lexically_normal().string();
  h.update(abs.data(), abs.size());
  return (fs::temp_directory_path() / ("biref-download-" + h.hex_digest().substr(0, 24) + ".lock"))
      .string();
}

namespace {

class DownloadLock {
 public:
  explicit DownloadLock(const std::string& dest) : path_(download_lock_path(dest)) {
    fd_ = ::open(path_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    BIREF_CHECK(fd_ >= 0, "cannot create '", path_, "': ", std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      fail("another process is downloading '", dest, "' right now; wait for it to finish");
    }
  }
  ~DownloadLock() {
    ::unlink(path_.c_str());
    ::close(fd_);
  }
  DownloadLock(const DownloadLock&) = delete;
  DownloadLock& operator=(const DownloadLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};
}  // namespace

std::string url_host(const std::string& url) {
  curl_init_once();
  CURLU* u = curl_url();
  char* host = nullptr;
  char* scheme = nullptr;
  const bool ok = curl_url_set(u, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK &&
                  curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
                  curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
  std::string h = ok ? host : "", sc = ok ? scheme : "";
  curl_free(host);
  curl_free(scheme);
  curl_url_cleanup(u);
  for (auto& c : h) c = char(std::tolower(static_cast<unsigned char>(c)));
  BIREF_CHECK(ok && (sc == "http" || sc == "https") && !h.empty(), "'", url,
              "' is not an http:// or https:// URL");
  return h;
}

std::string fetch_url(const std::string& url, size_t max_bytes, double timeout_s) {
  curl_init_once();
  url_host(url);  // checks the scheme
  struct Sink {
    std::string data;
    size_t max;
    bool over = false;
  } sink{{}, max_bytes};
  CURL* curl = curl_easy_init();
  BIREF_CHECK_KIND(curl, ErrorKind::Internal, "cannot start a transfer of '", url, "'");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, long(std::min(timeout_s, 10.0) * 1000));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, long(timeout_s * 1000));
  curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(max_bytes));
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* u) {
        auto* s = static_cast<Sink*>(u);
        if (s->data.size() + size * n > s->max) {
          s->over = true;
          return size_t(0);  // aborts the transfer
        }
        s->data.append(p, size * n);
        return size * n;
      });
  const CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  char* location = nullptr;
  curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location);
  const std::string redirect = location ? location : "";
  curl_easy_cleanup(curl);
  BIREF_CHECK_KIND(!sink.over && rc != CURLE_FILESIZE_EXCEEDED, ErrorKind::TooLarge, "'", url,
                   "' is larger than the limit of ", max_bytes, " bytes");
  BIREF_CHECK(rc == CURLE_OK, "cannot fetch '", url, "': ", curl_easy_strerror(rc));
  BIREF_CHECK(status < 300 || status >= 400 || redirect.empty(), "'", url, "' redirects to '",
              redirect, "' (redirects are not followed: give the final URL)");
  BIREF_CHECK(status == 200, "fetching '", url, "' answered HTTP ", status);
  return std::move(sink.data);
}

DownloadResult download_file(const std::string& url, const std::string& dest,
                             const DownloadOptions& options) {
  curl_init_once();
  const DownloadLock lock(dest);
  const std::string part = dest + ".part";
  const std::string label = options.label.empty() ? url : options.label;
  const bool tty = isatty(STDERR_FILENO) == 1;
  const auto started = Clock::now();
  bool line_open = false;  // the one-line (non-terminal) report awaits its end
  if (options.progress && !tty) {
    std::fprintf(stderr, "biref: downloading %s ... ", label.c_str());
    std::fflush(stderr);
    line_open = true;
  }
  auto end_line = [&](const std::string& text) {
    if (line_open) std::fprintf(stderr, "%s\n", text.c_str());
    line_open = false;
  };

  DownloadResult result;
  Sha256 hasher;
  // A partial file from an earlier call is hashed first, so the digest covers the whole file.
  result.resumed_from = size_or_zero(part);
  if (result.resumed_from > 0) {
    std::FILE* f = std::fopen(part.c_str(), "rb");
    BIREF_CHECK(f, "cannot read the partial download '", part, "'");
    std::vector<char> buf(1 << 20);
    size_t got;
    while ((got = std::fread(buf.data(), 1, buf.size(), f)) > 0) hasher.update(buf.data(), got);
    std::fclose(f);
  }

  std::string linked_sha256;
  bool range_reset_done = false;
  for (int attempt = 1;; ++attempt) {
    Transfer t;
    t.part = part;
    t.offset = size_or_zero(part);
    t.hasher = &hasher;
    t.show = options.progress;
    t.tty = tty;
    t.label = label;

    CURL* curl = curl_easy_init();
    BIREF_CHECK(curl, "cannot download ", url, ": curl_easy_init failed");
    char errbuf[CURL_ERROR_SIZE] = {0};
    const std::string range = str_cat(t.offset, "-");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "biref/" BIREF_VERSION);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts: threads may run
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_s);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, options.stall_timeout_s);
    if (t.offset > 0) curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
    const CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);

    bool write_failed = false;
    if (t.file) write_failed = std::fclose(t.file) != 0;
    if (t.show && t.tty && t.file) {  // the bar's last state stays on screen
      draw(t, t.offset + t.written, t.total, true);
    }
    if (!t.linked_sha256.empty()) linked_sha256 = t.linked_sha256;
    if (t.restarted) result.resumed_from = 0;
    if (t.status == 200 && !t.body_started && rc == CURLE_OK) {  // an empty file: no body
      hasher.reset();
      std::error_code ec;
      fs::create_directories(fs::path(part).parent_path(), ec);
      std::FILE* f = std::fopen(part.c_str(), "wb");
      BIREF_CHECK(f, "cannot write '", part, "'");
      std::fclose(f);
    }

    std::string error;
    bool retry = false;
    if (!t.abort_reason.empty()) {
      error = t.abort_reason;
    } else if (write_failed) {
      error = str_cat("cannot write '", part, "' (disk full?)");
    } else if (t.status == 416 && t.offset > 0 && !range_reset_done) {
      // Nothing left to send: the part may be whole but never renamed (a run killed at the
      // end). If the hub's checksum says so, it is done; otherwise it does not belong to this
      // file (the file changed on the server): drop it and download from the start.
      if (!linked_sha256.empty() && Sha256(hasher).hex_digest() == linked_sha256) break;
      std::error_code ec;
      fs::remove(part, ec);
      hasher.reset();
      result.resumed_from = 0;
      range_reset_done = true;
      --attempt;
      continue;
    } else if (t.status >= 400 || (rc == CURLE_OK && t.status != 200 && t.status != 206)) {
      error = str_cat("HTTP ", t.status, t.reason.empty() ? "" : " ", t.reason);
    } else if (rc != CURLE_OK) {
      error = str_cat("curl error ", int(rc), ": ", errbuf[0] ? errbuf : curl_easy_strerror(rc));
      retry = transient(rc) && attempt < options.max_attempts;
      if (!retry && size_or_zero(part) > 0) {
        error += str_cat(" (", human_size(double(size_or_zero(part))), " kept in '", part,
                         "': the next try resumes from there)");
      }
    }
    if (retry) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250 * attempt));
      continue;
    }
    if (!error.empty()) {
      end_line("failed");
      fail("cannot download ", url, ": ", error);
    }
    break;
  }

  result.sha256 = hasher.hex_digest();
  result.bytes = size_or_zero(part);
  if (!linked_sha256.empty()) {
    if (linked_sha256 != result.sha256) {
      std::error_code ec;
      fs::remove(part, ec);
      end_line("failed");
      fail("cannot download ", url, ": sha256 mismatch, the hub says ", linked_sha256,
           " but the download is ", result.sha256, "; the file was deleted");
    }
    result.verified = true;
  }
  std::error_code ec;
  if (options.check) {
    try {
      options.check(part);
    } catch (const Error& e) {
      fs::remove(part, ec);
      end_line("failed");
      fail("cannot download ", url, ": ", e.what(), "; the file was deleted");
    }
  }
  fs::rename(part, dest, ec);  // same directory: atomic, readers never see a partial file
  if (ec) {
    end_line("failed");
    fail("cannot move '", part, "' to '", dest, "': ", ec.message());
  }
  const double secs = std::chrono::duration<double>(Clock::now() - started).count();
  char took[32];
  std::snprintf(took, sizeof took, "%.1f s", secs);
  end_line(str_cat("done, ", human_size(double(result.bytes)), " in ", took,
                   result.verified ? ", sha256 verified" : ""));
  return result;
}

}  // namespace biref
