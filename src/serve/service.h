// `biref serve`'s request handling: the routes, the models it serves (load, unload, versions),
// the path of a segmentation request (decode pool -> result cache -> model queue -> encode),
// authentication and metrics. The HTTP transport is HttpServer's; the CLI (tools/biref/serve.cpp)
// parses flags into ServiceOptions.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "serve/batcher.h"
#include "serve/http_server.h"

namespace biref::serve {

class ResultCache;
class Registry;
struct ServiceMetrics;
struct TokenSet;

struct ModelSpec {
  std::string name;           // [A-Za-z0-9][A-Za-z0-9._-]{0,63}: a name, never a path
  std::string source;         // a checkpoint file, a zoo name or synthetic:...
  int width = 0, height = 0;  // the default model size; 0: the zoo entry's, else 1024x1024
};

// "NAME=SOURCE" or "SOURCE" (the name is then the file's stem, or the zoo/synthetic name).
ModelSpec parse_model_spec(const std::string& text);
// Throws biref::Error (InvalidInput) unless `name` is a valid model name.
void check_model_name(const std::string& name);

struct ServiceOptions {
  std::vector<ModelSpec> models;  // the first is the default; loaded at start
  // Every *.safetensors and *.pth in this folder is a model named by its file's stem (after the
  // --model ones; the first is the default when there is no --model). They load on their first
  // request, and are dropped when their file goes.
  std::string models_dir;
  int dir_width = 0, dir_height = 0;  // their model size (0: 1024x1024)
  // Model files are checked this often: a new file in models_dir is added, a changed file
  // (unchanged for one more period, so not mid-copy) reloaded; a reload that fails keeps the
  // model that was serving. 0: no watching.
  double watch_interval_s = 2;
  // The packed weights of all loaded models together stay under this (0: no bound): loading
  // one unloads the least recently used others first (the file's size is the estimate before
  // the load, the packed size after it).
  size_t memory_budget_bytes = 0;
  // The models' arithmetic (biref.h); bf16 models answer with "+bf16" after their version, so
  // caches shared with float32 instances never mix the two.
  Precision precision = Precision::fp32;
  BatcherOptions batcher;        // per model
  int decode_threads = 1;        // decode, render and encode (each with one OpenMP thread)
  size_t decode_queue = 64;      // requests waiting to be decoded; more: 503
  double deadline_s = 60;        // a request not started by the model within this: 503
  double retry_after_s = 1;      // the Retry-After of a 503
  int64_t max_image_pixels = 0;  // decoded pixels per image; 0: the library default
  size_t cache_bytes = size_t(256) << 20;  // the in-process result cache; 0: none
  std::string redis_url;                   // a shared cache instead: redis://host:port[/db]
  int redis_ttl_s = 86400;
  int redis_timeout_ms = 250;
  std::string token_file;  // bearer tokens (see serve/auth.h); empty: no authentication
  std::string instance;    // names this server in answers (X-Biref-Instance)
  // GET /api/remove?url= fetches only from these hosts (exact names, or ".example.com" for
  // its subdomains); none: the url= form is refused.
  std::vector<std::string> url_hosts;
  size_t max_fetch_bytes = size_t(64) << 20;
  double fetch_timeout_s = 20;
};

class Service {
 public:
  // Loads every model (a biref::Error naming the model on failure).
  explicit Service(const ServiceOptions& options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // The HttpServer handler.
  void handle(Request&& request, const RequestContext& context, Respond respond);
  // Stops the model queues after running what they hold, then the pools. Idempotent.
  void stop();
  // Whether every model is loaded and no queue is full (GET /readyz).
  bool ready() const;
  std::string metrics_text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace biref::serve
