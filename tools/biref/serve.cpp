// `biref serve`: the HTTP inference service. Flags become ServiceOptions and ServerOptions;
// src/serve/ does the work. SIGINT/SIGTERM drain: no new connections, requests in flight are
// answered, then the process exits 0.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "common.h"
#include "core/check.h"
#include "serve/http_server.h"
#include "serve/service.h"

namespace biref::cli {
namespace {

struct ServeOptions {
  std::vector<std::string> models;
  std::string size, models_dir;
  double watch_s = 2, budget_mb = 0;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string precision = "fp32";
  int workers = 1, max_batch = 1, io_threads = 1, decode_threads = 1, threads = 0;
  double max_wait_ms = 5;
  size_t queue = 32;
  double cache_mb = 256;
  std::string redis, token_file, instance;
  std::vector<std::string> url_hosts;
  int redis_ttl = 86400;
  double max_body_mb = 64;
  int64_t max_image_pixels = 0;
  double deadline_s = 60, header_timeout_s = 10, idle_timeout_s = 30, drain_s = 30;
  size_t max_connections = 4096;
};

int run_serve(const ServeOptions& o) {
  serve::ServiceOptions so;
  for (const auto& m : o.models) {
    serve::ModelSpec spec = serve::parse_model_spec(m);
    if (!o.size.empty()) {
      parse_size(o.size, "--size", spec.width, spec.height);
      check_model_size(spec.width, spec.height, "--size");
    }
    so.models.push_back(spec);
  }
  BIREF_CHECK(!o.models.empty() || !o.models_dir.empty(), "serve needs --model or --models-dir");
  so.models_dir = o.models_dir;
  if (!o.size.empty()) {
    parse_size(o.size, "--size", so.dir_width, so.dir_height);
    check_model_size(so.dir_width, so.dir_height, "--size");
  }
  BIREF_CHECK(o.watch_s >= 0, "--watch-interval must not be negative");
  BIREF_CHECK(o.budget_mb >= 0, "--memory-budget-mb must not be negative");
  so.watch_interval_s = o.watch_s;
  so.memory_budget_bytes = size_t(o.budget_mb * 1048576.0);
  BIREF_CHECK(o.cache_mb >= 0, "--cache-mb ", o.cache_mb, " is negative");
  BIREF_CHECK(o.max_body_mb > 0, "--max-body-mb must be positive");
  BIREF_CHECK(o.queue >= 1, "--queue must be at least 1");
  so.precision = biref::parse_precision(o.precision);
  so.batcher.workers = o.workers;
  biref::check_threads(o.threads, "--threads");
  so.batcher.threads_per_worker = o.threads;
  so.batcher.max_batch = o.max_batch;
  so.batcher.max_wait_ms = o.max_wait_ms;
  so.batcher.capacity = o.queue;
  so.decode_threads = o.decode_threads;
  so.decode_queue = std::max<size_t>(o.queue * 2, 8);
  so.deadline_s = o.deadline_s;
  so.max_image_pixels = o.max_image_pixels;
  so.cache_bytes = size_t(o.cache_mb * 1048576.0);
  so.redis_url = o.redis;
  so.redis_ttl_s = o.redis_ttl;
  so.token_file = o.token_file;
  so.instance = o.instance;
  for (std::string h : o.url_hosts) {
    for (auto& c : h) c = char(std::tolower(static_cast<unsigned char>(c)));
    BIREF_CHECK(!h.empty() && h.find_first_of("/:@ ") == std::string::npos, "--allow-url-host '", h,
                "' is not a host name (e.g. images.example.com, or .example.com for its "
                "subdomains)");
    so.url_hosts.push_back(h);
  }
  so.max_fetch_bytes = size_t(o.max_body_mb * 1048576.0);
  const bool loopback = o.host == "127.0.0.1" || o.host == "::1" || o.host == "localhost";
  BIREF_CHECK(!o.token_file.empty() || loopback, "--host ", o.host,
              " is not loopback: serving other machines needs --token-file (or a proxy in front "
              "that authenticates, with biref on 127.0.0.1)");

  // The signals are taken by a thread of their own (sigwait), so block them everywhere first:
  // threads started below inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A write to a peer that has gone (a client, Redis) must be an error, not the end of the process.
  signal(SIGPIPE, SIG_IGN);

  const auto t0 = std::chrono::steady_clock::now();
  auto service = std::make_shared<serve::Service>(so);
  serve::ServerOptions http;
  http.host = o.host == "localhost" ? "127.0.0.1" : o.host;
  http.port = o.port;
  http.io_threads = o.io_threads;
  http.max_body_bytes = size_t(o.max_body_mb * 1048576.0);
  http.header_timeout_s = o.header_timeout_s;
  http.idle_timeout_s = o.idle_timeout_s;
  http.max_connections = o.max_connections;
  serve::HttpServer server(
      http, [service](serve::Request&& r, const serve::RequestContext& c, serve::Respond respond) {
        service->handle(std::move(r), c, std::move(respond));
      });
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "biref serve: %zu model%s loaded in %.1f s; listening on http://%s:%d/\n",
               so.models.size(), so.models.size() == 1 ? "" : "s", load_s, http.host.c_str(),
               server.port());
  std::fflush(stderr);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "biref serve: %s: draining (%zu request%s in flight)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM", server.in_flight(),
               server.in_flight() == 1 ? "" : "s");
  const bool clean = server.drain(o.drain_s);
  service->stop();
  std::fprintf(stderr, "biref serve: %s\n",
               clean ? "stopped" : "stopped; some requests were cut off by --drain-timeout");
  return 0;
}

}  // namespace

BIREF_COMMAND(
    serve, "The HTTP service: segment images over HTTP, with a result cache and metrics",
    [](CLI::App& app) -> biref::cli::RunFn {
      auto o = std::make_shared<ServeOptions>();
      app.add_option("-m,--model", o->models,
                     "[NAME=]CHECKPOINT, zoo name or synthetic:BACKBONE; repeat for several "
                     "(the first is the default)");
      app.add_option("--models-dir", o->models_dir,
                     "serve every .safetensors/.pth in this folder (named by the file's stem), "
                     "loaded on first use; files added, changed or removed are picked up");
      app.add_option("--watch-interval", o->watch_s,
                     "seconds between checks of the model files for changes (default 2; 0: off)");
      app.add_option("--memory-budget-mb", o->budget_mb,
                     "packed weights of all loaded models at most; the least recently used are "
                     "unloaded to load another (default 0: no bound)");
      app.add_option("--size", o->size,
                     "model input size WxH for every model (default: the zoo "
                     "model's native size, else 1024x1024)");
      app.add_option("--host", o->host, "address to listen on (default 127.0.0.1)");
      app.add_option("--port", o->port, "port (default 8080; 0: any free port)")
          ->check(CLI::Range(0, 65535));
      app.add_option("--workers", o->workers,
                     "model workers per model, sharing one copy of the weights (default 1)")
          ->check(CLI::Range(1, 256));
      app.add_option("--threads", o->threads,
                     "OpenMP threads of each worker (default: the cores / --workers; in a "
                     "container, its CPU limit / --workers)");
      app.add_option("--precision", o->precision,
                     "fp32 (default), or bf16: the matrix products in bfloat16 (AVX512_BF16)")
          ->check(CLI::IsMember({"fp32", "bf16"}));
      app.add_option("--max-batch", o->max_batch, "images per model batch at most (default 1)")
          ->check(CLI::Range(1, 64));
      app.add_option("--max-wait-ms", o->max_wait_ms,
                     "how long a batch waits for more images (default 5)")
          ->check(CLI::Range(0.0, 60000.0));
      app.add_option("--queue", o->queue,
                     "images waiting per model before 503 + Retry-After (default 32)");
      app.add_option("--decode-threads", o->decode_threads,
                     "threads decoding and encoding images (default 1)")
          ->check(CLI::Range(1, 256));
      app.add_option("--io-threads", o->io_threads, "HTTP I/O threads (default 1)")
          ->check(CLI::Range(1, 64));
      app.add_option("--cache-mb", o->cache_mb,
                     "in-process result cache in MiB (default 256; 0: none)");
      app.add_option("--redis", o->redis,
                     "a result cache shared by servers: redis://[:PASSWORD@]HOST[:PORT][/DB]");
      app.add_option("--redis-ttl", o->redis_ttl, "seconds a result stays in Redis (default 86400)")
          ->check(CLI::Range(1, 365 * 86400));
      app.add_option("--token-file", o->token_file,
                     "bearer tokens, one per line: 'user TOKEN' or 'admin TOKEN'");
      app.add_option("--instance", o->instance, "a name sent back as X-Biref-Instance");
      app.add_option("--allow-url-host", o->url_hosts,
                     "GET /api/remove?url= may fetch from this host (repeat; .example.com: its "
                     "subdomains); none: the url= form is refused");
      app.add_option("--max-body-mb", o->max_body_mb, "request body limit in MiB (default 64)");
      app.add_option("--max-image-pixels", o->max_image_pixels,
                     "decoded pixels per image at most (default 134217728)");
      app.add_option("--deadline", o->deadline_s,
                     "seconds a request may wait for a model before 503 (default 60)");
      app.add_option("--header-timeout", o->header_timeout_s,
                     "seconds to receive a request's headers (default 10)");
      app.add_option("--idle-timeout", o->idle_timeout_s,
                     "seconds an idle keep-alive connection stays open (default 30)");
      app.add_option("--drain-timeout", o->drain_s,
                     "seconds SIGTERM waits for requests in flight (default 30)");
      app.add_option("--max-connections", o->max_connections,
                     "open connections at most (default 4096)");
      return [o] { return run_serve(*o); };
    });

}  // namespace biref::cli
