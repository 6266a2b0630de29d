// One-file HTTP(S) download with libcurl, for the model zoo: follows redirects, resumes a
// partial download (DEST.part + Range), renames atomically to DEST at the end, and checks the
// sha256 the Hugging Face hub publishes for LFS files (X-Linked-Etag) when the server sends it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace biref {

struct DownloadOptions {
  std::string label;     // what the progress line calls the file; the URL if empty
  bool progress = true;  // a bar on stderr if it is a terminal, else one line per file
  int max_attempts = 3;  // an interrupted transfer is resumed this many times in all
  long connect_timeout_s = 30;
  long stall_timeout_s = 60;  // abort a transfer that moves no byte for this long
  // Called with the path of the complete download before it is renamed into place; a
  // biref::Error it throws rejects the file (an error page instead of a model, ...), which is
  // then deleted so that it never enters the cache.
  std::function<void(const std::string& path)> check;
};

struct DownloadResult {
  uint64_t bytes = 0;         // size of the final file
  uint64_t resumed_from = 0;  // bytes that were already in DEST.part when the call started
  std::string sha256;         // digest of the final file
  bool verified = false;      // the server sent a sha256 (X-Linked-Etag) and it matched
};

// Downloads `url` to `dest` (its directory is created). Throws biref::Error with one line that
// names the URL and the HTTP status or curl error. A failed transfer leaves DEST.part behind for
// the next call to resume; an HTTP error response leaves nothing new; a checksum mismatch
// deletes the download.
// The lock file a download of `dest` holds (in the temporary folder): a second download of the
// same file while one runs fails at once instead of corrupting the shared .part.
std::string download_lock_path(const std::string& dest);

DownloadResult download_file(const std::string& url, const std::string& dest,
                             const DownloadOptions& options = {});

// An HTTP(S) GET into memory, for the service's `?url=` form: no redirects followed (a redirect
// is an error naming its target), at most `max_bytes` (a larger answer is an error of kind
// TooLarge, stopped as soon as it passes the limit), `timeout_s` in all. Errors name the URL and
// the HTTP status or curl's reason.
std::string fetch_url(const std::string& url, size_t max_bytes, double timeout_s);
// The host of an http(s) URL, lowercased; throws biref::Error naming the URL when it is not one.
std::string url_host(const std::string& url);

// The 64-hex sha256 in an X-Linked-Etag / ETag value ("\"<hex>\"", W/"<hex>"), lowercased;
// empty if the value is not a sha256 (git blobs have 40-hex sha1 etags).
std::string sha256_from_etag(std::string value);

}  // namespace biref
