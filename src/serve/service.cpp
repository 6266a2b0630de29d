#include "serve/service.h"

#include <omp.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "biref/image.h"
#include "biref/pipeline.h"
#include "core/check.h"
#include "serve/auth.h"
#include "serve/cache.h"
#include "serve/http_parse.h"
#include "serve/metrics.h"
#include "serve/rembg.h"
#include "serve/resources.h"
#include "weights/http.h"
#include "weights/sha256.h"
#include "weights/zoo.h"

namespace biref::serve {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

bool valid_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// "WxH", both multiples of 32 in 32..8192.
void parse_model_size(const std::string& text, const std::string& what, int& w, int& h) {
  const size_t x = text.find('x');
  int a = 0, b = 0;
  bool ok =
      x != std::string::npos && x > 0 && x + 1 < text.size() && x <= 5 && text.size() - x - 1 <= 5;
  for (size_t i = 0; ok && i < text.size(); ++i)
    if (i != x && (text[i] < '0' || text[i] > '9')) ok = false;
  if (ok) {
    a = std::stoi(text.substr(0, x));
    b = std::stoi(text.substr(x + 1));
  }
  BIREF_CHECK(ok, what, " '", text, "' is not WIDTHxHEIGHT (e.g. 1024x1024) or dynamic");
  BIREF_CHECK(a % 32 == 0 && b % 32 == 0 && a >= 32 && b >= 32 && a <= 8192 && b <= 8192, what, " ",
              text, ": width and height must be multiples of 32 in 32..8192");
  w = a;
  h = b;
}

http::status status_of(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidInput:
      return http::status::bad_request;
    case ErrorKind::TooLarge:
      return http::status::payload_too_large;
    case ErrorKind::NotFound:
      return http::status::not_found;
    case ErrorKind::Unavailable:
      return http::status::service_unavailable;
    case ErrorKind::Internal:
      return http::status::internal_server_error;
  }
  return http::status::internal_server_error;
}

std::string version_of(const std::string& source) {
  if (source.rfind("synthetic:", 0) == 0) return "synthetic";
  // The file's content names the version, so that servers on different machines loading the
  // same weights agree (their results share the cache).
  return sha256_file(source).substr(0, 16);
}

}  // namespace

void check_model_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && name[0] != '.' && name[0] != '-';
  for (char c : name) ok = ok && valid_name_char(c);
  BIREF_CHECK(ok, "model name '", name,
              "' is not valid: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' "
              "or '-'");
}

ModelSpec parse_model_spec(const std::string& text) {
  ModelSpec spec;
  const size_t eq = text.find('=');
  if (eq != std::string::npos && text.rfind("synthetic:", 0) != 0) {
    spec.name = text.substr(0, eq);
    spec.source = text.substr(eq + 1);
  } else {
    spec.source = text;
    if (text.rfind("synthetic:", 0) == 0) {
      spec.name = text.substr(10);
    } else if (text.rfind("hf:", 0) == 0) {
      spec.name = fs::path(text.substr(3)).filename().string();
    } else {
      spec.name = fs::path(text).stem().string();
    }
  }
  BIREF_CHECK(!spec.source.empty(), "--model '", text, "' names no checkpoint");
  check_model_name(spec.name);
  return spec;
}

// ---- Metrics of the service ----

struct ServiceMetrics {
  Registry registry;
  CounterFamily& requests;
  HistogramFamily& latency;
  HistogramFamily& stages;
  HistogramFamily& batch_sizes;
  CounterFamily& cache_lookups;
  CounterFamily& dropped;
  GaugeFamily& model_load_seconds;
  CounterFamily& reloads;
  CounterFamily& evictions;

  ServiceMetrics()
      : requests(registry.counter("biref_http_requests_total", "HTTP requests answered",
                                  {"route", "status"})),
        latency(registry.histogram(
            "biref_http_request_duration_seconds", "Time from the request read to its answer",
            {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}, {"route"})),
        stages(registry.histogram(
            "biref_stage_duration_seconds", "Time per stage of a segmentation request",
            {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
            {"stage"})),
        batch_sizes(registry.histogram("biref_batch_size", "Images per model batch",
                                       {1, 2, 4, 8, 16, 32, 64}, {"model"})),
        cache_lookups(registry.counter("biref_cache_lookups_total",
                                       "Result cache lookups by outcome", {"cache", "result"})),
        dropped(registry.counter("biref_jobs_dropped_total",
                                 "Images dropped before the model ran them, by reason",
                                 {"reason"})),
        model_load_seconds(registry.gauge("biref_model_load_seconds",
                                          "Time the last load of each model took", {"model"})),
        reloads(registry.counter("biref_model_reloads_total",
                                 "Reloads (a changed file, or on request) by result",
                                 {"model", "result"})),
        evictions(registry.counter("biref_model_evictions_total",
                                   "Models unloaded to stay within the memory budget")) {}
};

// ---- Models ----

struct LoadedModel {
  std::shared_ptr<Model> model;  // the weights; the batcher's workers run forks of it
  std::unique_ptr<Batcher> batcher;
  std::string version, backbone;
  double load_s = 0;
};

// A file's identity for change detection.
struct FileStamp {
  bool exists = false;
  uintmax_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

FileStamp stamp_of(const std::string& path) {
  FileStamp s;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return s;
  const auto mtime = fs::last_write_time(path, ec);
  if (ec) return s;
  s.exists = true;
  s.size = size;
  s.mtime_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(mtime.time_since_epoch()).count();
  return s;
}

struct ServedModel {
  ModelSpec spec;
  std::shared_ptr<LoadedModel> loaded;  // null while unloaded
  std::string last_error;               // of the last failed load
  bool from_dir = false;                // found in --models-dir
  bool auto_load = false;             // a request loads it (dir models, until an admin unloads one)
  std::string path;                   // the local file behind it, watched ("" for synthetic)
  FileStamp loaded_stamp;             // of the file when it was loaded
  FileStamp seen_stamp;               // at the previous check
  FileStamp failed_stamp;             // of a file that did not load: not retried until it changes
  std::atomic<int64_t> last_used{0};  // steady-clock ns of the last request
};

bool is_local_file(const std::string& source) {
  std::error_code ec;
  return source.rfind("synthetic:", 0) != 0 && fs::is_regular_file(source, ec);
}

// One segmentation request from admission to its answer, shared by the stages it passes
// through: decode pool (cache lookups, decode) -> model queue -> decode pool (render, encode).
struct SegmentCall {
  std::shared_ptr<std::string> body;  // the request body (or the fetched image)
  std::string_view image;             // the image bytes within it
  std::string fetch;                  // rembg's ?url=: fetched in the decode stage
  std::string image_name;             // what errors call the image
  OutputKind kind = OutputKind::Mask;
  OutputOptions out;
  std::optional<RembgRequest> rembg;
  PredictOptions po;
  // The parameters that make an answer (cache key of the output), and those that make the mask
  // (cache key of the mask: another output of the same image and model reuses it).
  std::string canonical, mask_canonical;
  std::string model_name, version;
  std::shared_ptr<LoadedModel> model;  // until the job is queued (never held by a job)
  std::shared_ptr<std::atomic<bool>> gone;
  Clock::time_point deadline;
  Respond respond;
  // filled on the way
  std::shared_ptr<const Image> rgb;
  std::string key, mask_key;
  double decode_ms = 0, queue_ms = 0, infer_ms = 0;
};

struct Service::Impl {
  ServiceOptions options;
  std::unique_ptr<ServiceMetrics> metrics = std::make_unique<ServiceMetrics>();
  std::unique_ptr<ResultCache> cache;
  std::string cache_name = "none";
  std::optional<TokenSet> tokens;
  std::unique_ptr<WorkPool> pool;    // decode, render, encode
  std::unique_ptr<WorkPool> loader;  // models loaded on demand
  mutable std::shared_mutex models_mu;
  std::vector<std::shared_ptr<ServedModel>> models;  // --model order, then the folder's
  std::recursive_mutex load_mu;                      // one load or unload at a time
  std::atomic<bool> stopping{false};
  std::mutex watch_mu;
  std::condition_variable watch_cv;
  std::thread watcher;
  std::set<std::string> gauged;  // models with a queue-depth gauge (watch_mu)
  CallbackGaugeFamily* depth_gauge = nullptr;
  std::optional<CallbackGaugeFamily> depth_family;

  // -- models --
  std::shared_ptr<ServedModel> find(const std::string& name) const {
    std::shared_lock lock(models_mu);
    for (const auto& m : models)
      if (m->spec.name == name) return m;
    return nullptr;
  }
  std::vector<std::string> names() const {
    std::shared_lock lock(models_mu);
    std::vector<std::string> out;
    for (const auto& m : models) out.push_back(m->spec.name);
    return out;
  }
  std::shared_ptr<LoadedModel> loaded(const ServedModel& m) const {
    std::shared_lock lock(models_mu);
    return m.loaded;
  }

  // Makes `m` current: the model `lm` replaces what it served (which answers what its queue
  // holds, then goes).
  void install(ServedModel& m, std::shared_ptr<LoadedModel> lm, const FileStamp& stamp) {
    std::shared_ptr<LoadedModel> old;
    {
      std::unique_lock lock(models_mu);
      old = std::move(m.loaded);
      m.loaded = std::move(lm);
      m.last_error.clear();
      m.loaded_stamp = stamp;
      m.failed_stamp = {};
    }
    if (old) old->batcher->stop();
  }
  void unload(ServedModel& m) {
    std::shared_ptr<LoadedModel> old;
    {
      std::unique_lock lock(models_mu);
      old.swap(m.loaded);
    }
    if (old) old->batcher->stop();  // answers what it holds, refuses the rest
  }

  // Unloads the least recently used other models until `needed` more bytes fit the budget.
  void make_room(size_t needed, const ServedModel* keep) {
    if (options.memory_budget_bytes == 0) return;
    for (;;) {
      size_t held = 0;
      std::shared_ptr<ServedModel> victim;
      {
        std::shared_lock lock(models_mu);
        for (const auto& m : models) {
          if (!m->loaded) continue;
          held += m->loaded->model->weight_bytes();
          if (m.get() != keep && (!victim || m->last_used < victim->last_used)) victim = m;
        }
      }
      if (held + needed <= options.memory_budget_bytes) return;
      if (!victim) {
        fail_kind(ErrorKind::Unavailable, "model '", keep ? keep->spec.name : "?", "' needs ",
                  needed >> 20, " MiB and ", held >> 20, " MiB are loaded; the memory budget is ",
                  options.memory_budget_bytes >> 20, " MiB");
      }
      std::fprintf(stderr,
                   "biref serve: unloading '%s' (least recently used) for the memory budget\n",
                   victim->spec.name.c_str());
      unload(*victim);
      metrics->evictions.get().inc();
    }
  }

  // Loads `m` if it is not loaded (within the memory budget); returns what serves it.
  std::shared_ptr<LoadedModel> ensure_loaded(ServedModel& m) {
    std::lock_guard<std::recursive_mutex> one_at_a_time(load_mu);
    if (auto lm = loaded(m)) return lm;
    const FileStamp stamp = m.path.empty() ? FileStamp{} : stamp_of(m.path);
    make_room(size_t(stamp.size), &m);
    std::shared_ptr<LoadedModel> lm;
    try {
      lm = load(m.spec);
    } catch (const Error& e) {
      std::unique_lock lock(models_mu);
      m.last_error = e.what();
      fail_kind(e.kind() == ErrorKind::NotFound ? ErrorKind::NotFound : ErrorKind::Internal,
                "model '", m.spec.name, "' did not load: ", e.what());
    }
    install(m, lm, stamp);
    make_room(0, &m);  // the packed size may exceed the file's
    return lm;
  }

  // One look at the model files (the watcher thread; tests call it through the interval).
  void check_files();
  void add_depth_gauge(const std::string& name);

  std::shared_ptr<LoadedModel> load(const ModelSpec& spec) {
    const auto t0 = Clock::now();
    auto lm = std::make_shared<LoadedModel>();
    const std::string path = resolve_model_source(spec.source);
    LoadOptions lo;
    lo.precision = options.precision;
    lm->model = std::shared_ptr<Model>(Model::load(path, lo).release());
    lm->version = version_of(path) + (options.precision == Precision::bf16 ? "+bf16" : "");
    lm->backbone = lm->model->info().backbone;
    const std::string name = spec.name;
    lm->batcher =
        std::make_unique<Batcher>(*lm->model, options.batcher, [this, name](int size, double) {
          metrics->batch_sizes.labels({name}).observe(double(size));
        });
    lm->load_s = std::chrono::duration<double>(Clock::now() - t0).count();
    metrics->model_load_seconds.labels({spec.name}).set(lm->load_s);
    return lm;
  }

  // -- answers --
  Response json_response(const json& j, http::status status = http::status::ok) const {
    Response r{status, 11};
    r.set(http::field::content_type, "application/json");
    r.set(http::field::cache_control, "no-store");
    r.body() = j.dump(2) + "\n";
    return r;
  }
  Response error(const Error& e) const {
    Response r = error_response(status_of(e.kind()), error_kind_name(e.kind()), e.what());
    if (e.kind() == ErrorKind::Unavailable)
      r.set(http::field::retry_after,
            std::to_string(std::max(1L, std::lround(options.retry_after_s))));
    return r;
  }

  json model_json(const ServedModel& m) const {
    const auto lm = loaded(m);
    int w = 0, h = 0;
    default_size(m.spec, w, h);
    json j = {{"name", m.spec.name},
              {"source", m.spec.source},
              {"loaded", lm != nullptr},
              {"size", str_cat(w, "x", h)}};
    if (lm) {
      j["version"] = lm->version;
      j["backbone"] = lm->backbone;
      j["load_seconds"] = lm->load_s;
      j["queue"] = lm->batcher->depth();
      j["weight_bytes"] = lm->model->weight_bytes();
    }
    if (!m.last_error.empty()) j["error"] = m.last_error;
    j["auto_load"] = m.auto_load;
    return j;
  }

  static void default_size(const ModelSpec& spec, int& w, int& h) {
    if (spec.width > 0) {
      w = spec.width;
      h = spec.height;
      return;
    }
    const auto entry = zoo_find(spec.source);
    w = entry ? entry->width : 1024;
    h = entry ? entry->height : 1024;
  }

  Role role_of(const Request& req) const {
    if (!tokens) return Role::Admin;
    return authorize(*tokens, std::string(req[http::field::authorization]));
  }

  void handle(Request&& req, const RequestContext& ctx, Respond respond);
  void segment(Request&& req, const RequestContext& ctx, const std::string& route, bool rembg,
               Respond respond);
  // The stages of a segmentation request (see SegmentCall).
  void admit(const std::shared_ptr<SegmentCall>& c, std::shared_ptr<LoadedModel> lm);
  void decode_stage(const std::shared_ptr<SegmentCall>& c);
  void mask_ready(const std::shared_ptr<SegmentCall>& c, JobOutcome&& o);
  void finish(const std::shared_ptr<SegmentCall>& c, const Image& mask, bool store_mask);
  void answer(const std::shared_ptr<SegmentCall>& c, std::string png, const char* cache_state,
              double encode_ms);
  void model_action(const std::string& name, const std::string& action, Respond& respond);
};

Service::Service(const ServiceOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.options = options;
  BIREF_CHECK(options.decode_threads >= 1 && options.decode_threads <= 256,
              "decode threads must be 1..256, got ", options.decode_threads);
  BIREF_CHECK(options.deadline_s > 0, "the request deadline must be positive");
  if (!options.token_file.empty()) s.tokens = load_token_file(options.token_file);
  if (!options.redis_url.empty()) {
    s.cache = std::make_unique<RedisCache>(options.redis_url, options.redis_ttl_s,
                                           options.redis_timeout_ms);
  } else if (options.cache_bytes > 0) {
    s.cache = std::make_unique<LruCache>(options.cache_bytes);
  }
  if (s.cache) s.cache_name = s.cache->name();
  s.pool = std::make_unique<WorkPool>(options.decode_threads, options.decode_queue,
                                      [] { omp_set_num_threads(1); });
  s.loader = std::make_unique<WorkPool>(1, 64, [] {});
  for (const auto& spec : options.models) {
    BIREF_CHECK(!s.find(spec.name), "two models are named '", spec.name, "'");
    auto m = std::make_shared<ServedModel>();
    m->spec = spec;
    if (is_local_file(spec.source)) m->path = spec.source;
    {
      std::unique_lock lock(s.models_mu);
      s.models.push_back(m);
    }
    try {
      s.ensure_loaded(*m);
    } catch (const Error& e) {
      fail_kind(e.kind(), e.what());
    }
  }
  auto& reg = s.metrics->registry;
  Impl* self = impl_.get();
  s.depth_family.emplace(
      reg.gauge_callback("biref_queue_depth", "Images waiting for each model", {"model"}));
  for (const auto& name : s.names()) s.add_depth_gauge(name);
  if (!options.models_dir.empty()) {
    std::error_code ec;
    BIREF_CHECK_KIND(fs::is_directory(options.models_dir, ec), ErrorKind::NotFound,
                     "--models-dir '", options.models_dir, "' is not a folder");
    s.check_files();
  }
  BIREF_CHECK(!s.names().empty(), "serve needs a --model, or a --models-dir with models in it");
  if (options.watch_interval_s > 0) {
    s.watcher = std::thread([self] {
      std::unique_lock<std::mutex> lock(self->watch_mu);
      while (!self->stopping) {
        self->watch_cv.wait_for(lock,
                                std::chrono::duration<double>(self->options.watch_interval_s));
        if (self->stopping) break;
        lock.unlock();
        try {
          self->check_files();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "biref serve: checking the model files failed: %s\n", e.what());
        }
        lock.lock();
      }
    });
  }
  reg.gauge_callback("biref_decode_queue_depth", "Requests waiting to be decoded or encoded", {},
                     [self] { return double(self->pool->depth()); });
  reg.gauge_callback("biref_models_loaded", "Models loaded and serving", {}, [self] {
    double n = 0;
    std::shared_lock lock(self->models_mu);
    for (const auto& m : self->models) n += m->loaded ? 1 : 0;
    return n;
  });
  if (s.cache) {
    reg.gauge_callback("biref_cache_errors",
                       "Result cache failures since start (the requests "
                       "were answered without the cache)",
                       {}, [self] { return double(self->cache->errors()); });
  }
  reg.gauge_callback("process_resident_memory_bytes", "Resident memory of the process", {},
                     [] { return process_resident_bytes(); });
}

Service::~Service() {
  stop();
}

void Service::stop() {
  if (impl_->stopping.exchange(true)) return;
  { std::lock_guard<std::mutex> lock(impl_->watch_mu); }
  impl_->watch_cv.notify_all();
  if (impl_->watcher.joinable()) impl_->watcher.join();
  impl_->loader->stop();
  std::vector<std::shared_ptr<ServedModel>> models;
  {
    std::shared_lock lock(impl_->models_mu);
    models = impl_->models;
  }
  for (auto& m : models)
    if (auto lm = impl_->loaded(*m)) lm->batcher->stop();
  impl_->pool->stop();
}

bool Service::ready() const {
  if (impl_->stopping) return false;
  std::shared_lock lock(impl_->models_mu);
  for (const auto& m : impl_->models) {
    if (!m->loaded) return false;
    if (m->loaded->batcher->depth() >= m->loaded->batcher->options().capacity) return false;
  }
  return true;
}

std::string Service::metrics_text() const {
  return impl_->metrics->registry.render();
}

void Service::handle(Request&& req, const RequestContext& ctx, Respond respond) {
  impl_->handle(std::move(req), ctx, std::move(respond));
}

void Service::Impl::handle(Request&& req, const RequestContext& ctx, Respond respond_raw) {
  const auto t0 = Clock::now();
  const std::string target(req.target());
  const size_t q = target.find('?');
  const std::string path = target.substr(0, q);
  const auto method = req.method();
  // The route label of the metrics: a fixed set, never the raw path.
  std::string route = "other";
  // Every answer is counted under its route (a fixed set, never the raw path) and timed.
  auto counted = [this, t0, respond_raw, instance = options.instance](std::string route) {
    return Respond([this, route = std::move(route), t0, respond_raw, instance](Response&& r) {
      if (!instance.empty()) r.set("X-Biref-Instance", instance);
      metrics->requests.labels({route, std::to_string(r.result_int())}).inc();
      metrics->latency.labels({route}).observe(ms_since(t0) / 1000.0);
      respond_raw(std::move(r));
    });
  };
  // Synchronous answers: `route` is read when the answer is sent.
  auto respond = [&](Response&& r) { counted(route)(std::move(r)); };
  try {
    if (path == "/healthz" && method == http::verb::get) {
      route = "/healthz";
      Response r{http::status::ok, 11};
      r.set(http::field::content_type, "text/plain");
      r.body() = "ok\n";
      return respond(std::move(r));
    }
    if (path == "/readyz" && method == http::verb::get) {
      route = "/readyz";
      json models_state = json::object();
      bool all = !stopping;
      for (const auto& name : names()) {
        const auto m = find(name);
        const auto lm = m ? loaded(*m) : nullptr;
        std::string state = "unloaded";
        if (lm) {
          const bool full = lm->batcher->depth() >= lm->batcher->options().capacity;
          state = full ? "queue full" : "ready";
          all = all && !full;
        } else {
          all = false;
        }
        models_state[name] = state;
      }
      return respond(
          json_response({{"ready", all}, {"stopping", stopping.load()}, {"models", models_state}},
                        all ? http::status::ok : http::status::service_unavailable));
    }
    if (path == "/metrics" && method == http::verb::get) {
      route = "/metrics";
      Response r{http::status::ok, 11};
      r.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      r.body() = metrics->registry.render();
      return respond(std::move(r));
    }
    if (path == "/openapi.json" && method == http::verb::get) {
      route = "/openapi.json";
      Response r{http::status::ok, 11};
      r.set(http::field::content_type, "application/json");
      r.body() = std::string(openapi_json());
      return respond(std::move(r));
    }
    if ((path == "/" || path == "/index.html") && method == http::verb::get) {
      route = "/";
      Response r{http::status::ok, 11};
      r.set(http::field::content_type, "text/html; charset=utf-8");
      r.body() = std::string(index_html());
      return respond(std::move(r));
    }
    if (path == "/v1/models" && method == http::verb::get) {
      route = "/v1/models";
      if (role_of(req) == Role::None) {
        Response r = error_response(http::status::unauthorized, "unauthorized",
                                    "this server needs an Authorization: Bearer token");
        r.set(http::field::www_authenticate, "Bearer");
        return respond(std::move(r));
      }
      json list = json::array();
      for (const auto& name : names())
        if (auto m = find(name)) list.push_back(model_json(*m));
      const auto all = names();
      return respond(json_response({{"models", list}, {"default", all.empty() ? "" : all[0]}}));
    }
    if (path.rfind("/v1/models/", 0) == 0 && method == http::verb::post) {
      route = "/v1/models/{name}";
      const std::string rest = path.substr(11);
      const size_t colon = rest.rfind(':');
      BIREF_CHECK_KIND(colon != std::string::npos, ErrorKind::NotFound, "no route ", path,
                       " (POST /v1/models/NAME:load or :unload)");
      if (role_of(req) != Role::Admin) {
        Response r = error_response(http::status::forbidden, "forbidden",
                                    "loading and unloading models needs the admin token");
        if (role_of(req) == Role::None) r.result(http::status::unauthorized);
        return respond(std::move(r));
      }
      const std::string name = percent_decode(rest.substr(0, colon), false);
      check_model_name(name);
      Respond r = respond;
      return model_action(name, rest.substr(colon + 1), r);
    }
    if (path == "/v1/segment" || path == "/api/remove") {
      route = path;
      const bool rembg = path == "/api/remove";
      BIREF_CHECK_KIND(method == http::verb::post || (rembg && method == http::verb::get),
                       ErrorKind::NotFound, "no route ", std::string(req.method_string()), " ",
                       path, rembg ? " (POST or GET)" : " (POST)");
      // the answer comes later, from another thread: hand over a respond that owns its route
      Respond later = counted(route);
      if (role_of(req) == Role::None) {
        Response r = error_response(http::status::unauthorized, "unauthorized",
                                    "this server needs an Authorization: Bearer token");
        r.set(http::field::www_authenticate, "Bearer");
        return later(std::move(r));
      }
      return segment(std::move(req), ctx, route, rembg, std::move(later));
    }
    return respond(error_response(
        http::status::not_found, "not found",
        str_cat("no route ", std::string(req.method_string()), " ", path, " (see /openapi.json)")));
  } catch (const Error& e) {
    return respond(error(e));
  } catch (const std::exception& e) {
    return respond(error_response(http::status::internal_server_error, "internal", e.what()));
  }
}

void Service::Impl::model_action(const std::string& name, const std::string& action,
                                 Respond& respond) {
  const auto m = find(name);
  BIREF_CHECK_KIND(m != nullptr, ErrorKind::NotFound, "no model named '", name,
                   "' (this server has ", names().size(), ": see GET /v1/models)");
  BIREF_CHECK_KIND(action == "load" || action == "unload" || action == "reload",
                   ErrorKind::NotFound, "unknown model action '", action,
                   "' (load, unload or reload)");
  std::lock_guard<std::recursive_mutex> one_at_a_time(load_mu);
  if (action == "unload") {
    m->auto_load = false;  // until an admin loads it again
    unload(*m);
    return respond(json_response(model_json(*m)));
  }
  m->auto_load = m->from_dir;
  if (action == "load") {
    ensure_loaded(*m);
    return respond(json_response(model_json(*m)));
  }
  // reload: the new weights replace the old only once they loaded; a failure keeps the old
  const FileStamp stamp = m->path.empty() ? FileStamp{} : stamp_of(m->path);
  make_room(size_t(stamp.size), m.get());
  std::shared_ptr<LoadedModel> fresh;
  try {
    fresh = load(m->spec);
  } catch (const Error& e) {
    {
      std::unique_lock lock(models_mu);
      m->last_error = e.what();
    }
    metrics->reloads.labels({name, "failed"}).inc();
    return respond(
        error_response(http::status::internal_server_error, "load failed",
                       str_cat("model '", name, "' did not load: ", e.what(),
                               loaded(*m) ? " (the previous version still serves)" : "")));
  }
  install(*m, fresh, stamp);
  metrics->reloads.labels({name, "ok"}).inc();
  respond(json_response(model_json(*m)));
}

void Service::Impl::add_depth_gauge(const std::string& name) {
  std::lock_guard<std::mutex> lock(watch_mu);
  if (!gauged.insert(name).second) return;
  depth_family->callback({name}, [this, name] {
    const auto m = find(name);
    const auto lm = m ? loaded(*m) : nullptr;
    return lm ? double(lm->batcher->depth()) : 0.0;
  });
}

void Service::Impl::check_files() {
  if (!options.models_dir.empty()) {
    std::map<std::string, std::string> found;  // name -> path
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(options.models_dir, ec)) {
      std::error_code ec2;
      const std::string ext = e.path().extension().string();
      if (!e.is_regular_file(ec2) || (ext != ".safetensors" && ext != ".pth")) continue;
      const std::string name = e.path().stem().string();
      try {
        check_model_name(name);
      } catch (const Error&) {
        continue;  // a file name that is no model name (spaces, ...) is not served
      }
      found[name] = e.path().string();
    }
    for (const auto& [name, path] : found) {
      if (find(name)) continue;
      auto m = std::make_shared<ServedModel>();
      m->spec = {name, path, options.dir_width, options.dir_height};
      m->from_dir = m->auto_load = true;
      m->path = path;
      m->seen_stamp = stamp_of(path);
      {
        std::unique_lock lock(models_mu);
        models.push_back(m);
      }
      add_depth_gauge(name);
      std::fprintf(stderr, "biref serve: new model '%s' (%s), loaded on its first request\n",
                   name.c_str(), path.c_str());
    }
    std::vector<std::shared_ptr<ServedModel>> gone;
    {
      std::unique_lock lock(models_mu);
      for (auto it = models.begin(); it != models.end();) {
        if ((*it)->from_dir && !found.count((*it)->spec.name)) {
          gone.push_back(*it);
          it = models.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& m : gone) {
      std::fprintf(stderr, "biref serve: model '%s' removed (its file is gone)\n",
                   m->spec.name.c_str());
      std::lock_guard<std::recursive_mutex> one_at_a_time(load_mu);
      unload(*m);
    }
  }
  std::vector<std::shared_ptr<ServedModel>> all;
  {
    std::shared_lock lock(models_mu);
    all = models;
  }
  for (auto& m : all) {
    if (m->path.empty()) continue;
    const FileStamp now = stamp_of(m->path);
    FileStamp before;
    {
      std::unique_lock lock(models_mu);
      before = m->seen_stamp;
      m->seen_stamp = now;
    }
    // reload a loaded model whose file changed and then stayed the same for a period
    if (!loaded(*m) || !now.exists || now == m->loaded_stamp || now == m->failed_stamp ||
        !(now == before))
      continue;
    std::lock_guard<std::recursive_mutex> one_at_a_time(load_mu);
    try {
      make_room(size_t(now.size), m.get());
      install(*m, load(m->spec), now);
      metrics->reloads.labels({m->spec.name, "ok"}).inc();
      std::fprintf(stderr, "biref serve: model '%s' reloaded (its file changed): version %s\n",
                   m->spec.name.c_str(), loaded(*m)->version.c_str());
    } catch (const Error& e) {
      {
        std::unique_lock lock(models_mu);
        m->last_error = e.what();
        m->failed_stamp = now;
      }
      metrics->reloads.labels({m->spec.name, "failed"}).inc();
      std::fprintf(stderr,
                   "biref serve: model '%s' changed but did not load; the previous version "
                   "still serves: %s\n",
                   m->spec.name.c_str(), e.what());
    }
  }
}

// POST /v1/segment and /api/remove: parameters and body here; decode, cache lookup, model and
// encode on the pools.
void Service::Impl::segment(Request&& req, const RequestContext& ctx, const std::string& route,
                            bool rembg, Respond respond) {
  const auto t0 = Clock::now();
  const std::string target(req.target());
  const size_t q = target.find('?');
  std::map<std::string, std::string> params =
      q == std::string::npos ? std::map<std::string, std::string>{}
                             : parse_query(std::string_view(target).substr(q + 1));
  // The body: raw image bytes, or multipart/form-data with the image in `image` (`file` for
  // rembg) and the parameters as fields.
  auto body = std::make_shared<std::string>(std::move(req.body()));
  std::string_view image_bytes = *body;
  const std::string content_type(req[http::field::content_type]);
  std::string lower = content_type;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower.rfind("multipart/form-data", 0) == 0) {
    const auto parts = parse_multipart(*body, multipart_boundary(content_type));
    const char* field = rembg ? "file" : "image";
    const FormPart* image = nullptr;
    for (const auto& p : parts) {
      if (p.name == field) {
        image = &p;
      } else if (p.filename.empty()) {
        BIREF_CHECK(!params.count(p.name), "parameter '", p.name,
                    "' is given both in the query and in the form");
        params[p.name] = std::string(p.data);
      }
    }
    BIREF_CHECK(image, "the form has no '", field, "' field with the image");
    image_bytes = image->data;
  }
  // rembg's GET form: the server fetches the image, from the allowed hosts only.
  std::string fetch;
  if (rembg && req.method() == http::verb::get) {
    BIREF_CHECK(params.count("url") && !params["url"].empty(),
                "GET /api/remove needs ?url=IMAGE_URL");
    fetch = params["url"];
    BIREF_CHECK(!options.url_hosts.empty(),
                "GET /api/remove?url= is refused: this server fetches no URLs (start it with "
                "--allow-url-host HOST)");
    const std::string host = url_host(fetch);
    bool allowed = false;
    for (const auto& h : options.url_hosts) {
      if (h == host) allowed = true;
      if (h.size() > 1 && h[0] == '.' && host.size() > h.size() &&
          host.compare(host.size() - h.size(), h.size(), h) == 0)
        allowed = true;
    }
    BIREF_CHECK(allowed, "host '", host, "' of ?url= is not one this server fetches from");
  } else {
    BIREF_CHECK(!image_bytes.empty(), "the request has no image (an empty body)");
  }

  // Parameters.
  const auto all_names = names();
  BIREF_CHECK_KIND(!all_names.empty(), ErrorKind::NotFound, "this server has no models");
  std::string model_name = all_names[0];
  OutputKind kind = OutputKind::Mask;
  OutputOptions out;
  PredictOptions po;
  std::optional<RembgRequest> rembg_request;
  if (rembg) {
    params.erase("url");
    rembg_request = parse_rembg_params(params, names());
    model_name = rembg_request->model;
  } else {
    for (const auto& [k, v] : params) {
      static const char* known[] = {"model", "output", "size", "bg_color", "threshold", "tile"};
      BIREF_CHECK(std::find_if(std::begin(known), std::end(known),
                               [&](const char* n) { return k == n; }) != std::end(known),
                  "unknown parameter '", k, "' (model, output, size, bg_color, threshold, tile)");
    }
    if (params.count("model")) model_name = params["model"];
    check_model_name(model_name);
    if (params.count("output")) kind = parse_output_kind(params["output"]);
    if (params.count("bg_color")) out.background = parse_color(params["bg_color"]);
    if (params.count("threshold")) {
      const std::string& t = params["threshold"];
      char* end = nullptr;
      const long v = std::strtol(t.c_str(), &end, 10);
      BIREF_CHECK(!t.empty() && end && *end == 0 && v >= 0 && v <= 254, "threshold '", t,
                  "' is not an integer 0..254 (the mask is 255 where it is above, else 0)");
      out.threshold = int(v);
    }
    if (params.count("tile")) po.tile.mode = parse_tile_mode(params["tile"]);
  }
  const auto m = find(model_name);
  BIREF_CHECK_KIND(m != nullptr, ErrorKind::NotFound, "no model named '", model_name,
                   "' (see GET /v1/models)");
  m->last_used = Clock::now().time_since_epoch().count();
  default_size(m->spec, po.width, po.height);
  std::string size_text = str_cat(po.width, "x", po.height);
  if (params.count("size") && !rembg) {
    size_text = params["size"];
    if (size_text == "dynamic") {
      po.dynamic = true;
      BIREF_CHECK(po.tile.mode != TileMode::On, "tile=on needs a fixed size, not size=dynamic");
    } else {
      parse_model_size(size_text, "size", po.width, po.height);
    }
  }
  std::string canonical =
      str_cat("output=", output_kind_name(kind), "&size=", size_text, "&tile=", int(po.tile.mode),
              "&threshold=", out.threshold, "&bg=", int(out.background.r), ",",
              int(out.background.g), ",", int(out.background.b));
  if (rembg_request) {
    const auto& r = *rembg_request;
    canonical += str_cat("&rembg=", r.only_mask ? "mask" : "cutout",
                         r.premultiplied ? ",premultiplied" : ",straight");
    if (r.bgcolor)
      canonical += str_cat(",bg=", int((*r.bgcolor)[0]), ",", int((*r.bgcolor)[1]), ",",
                           int((*r.bgcolor)[2]), ",", int((*r.bgcolor)[3]));
  }

  auto c = std::make_shared<SegmentCall>();
  c->body = body;
  c->image = image_bytes;
  c->fetch = fetch;
  c->image_name = route == "/api/remove" ? "the uploaded file" : "the request body";
  c->kind = kind;
  c->out = out;
  c->rembg = rembg_request;
  c->po = po;
  // The mask's entry is keyed by what makes the mask; a plain mask answer is that entry itself,
  // other outputs also store the mask they rendered from.
  c->mask_canonical = str_cat("mask&size=", size_text, "&tile=", int(po.tile.mode));
  const bool plain_mask = !rembg_request && kind == OutputKind::Mask && out.threshold < 0;
  c->canonical = plain_mask ? c->mask_canonical : canonical;
  c->model_name = model_name;
  c->gone = ctx.client_gone;
  c->deadline = t0 + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(options.deadline_s));
  c->respond = std::move(respond);
  if (auto lm = loaded(*m)) return admit(c, std::move(lm));
  BIREF_CHECK_KIND(m->auto_load, ErrorKind::Unavailable, "model '", model_name,
                   "' is not loaded (POST /v1/models/", model_name, ":load)");
  // A model of --models-dir loads on its first request, on the loader thread (seconds), so the
  // request threads go on.
  const bool queued = loader->try_submit([this, m, c] {
    try {
      admit(c, ensure_loaded(*m));
    } catch (const Error& e) {
      c->respond(error(e));
    } catch (const std::exception& e) {
      c->respond(error_response(http::status::internal_server_error, "internal", e.what()));
    }
  });
  BIREF_CHECK_KIND(queued, ErrorKind::Unavailable, "model '", model_name,
                   "' is loading and too many requests wait for it");
}

// Admission into the decode pool (bounded: a full pool is a 503) once the model is loaded.
void Service::Impl::admit(const std::shared_ptr<SegmentCall>& c, std::shared_ptr<LoadedModel> lm) {
  c->version = lm->version;
  c->model = std::move(lm);
  if (!pool->try_submit([this, c] { decode_stage(c); })) {
    c->model.reset();
    fail_kind(ErrorKind::Unavailable, "the server is busy: ", options.decode_queue,
              " requests are waiting to be decoded");
  }
}

// On the decode pool: the cache (the answer itself, else the mask of another output), the
// decode, and the model queue.
void Service::Impl::decode_stage(const std::shared_ptr<SegmentCall>& c) {
  auto model = std::move(c->model);  // released on this thread, never on a model worker's
  try {
    if (c->gone && c->gone->load()) return;
    if (!c->fetch.empty()) {
      *c->body = fetch_url(c->fetch, options.max_fetch_bytes, options.fetch_timeout_s);
      c->image = *c->body;
      c->image_name = c->fetch;
    }
    const auto td = Clock::now();
    const std::string sha = sha256_hex(c->image);
    c->key = cache_key(sha, c->model_name, c->version, c->canonical);
    c->mask_key = cache_key(sha, c->model_name, c->version, c->mask_canonical);
    std::optional<std::string> cached_mask;
    if (cache) {
      if (auto hit = cache->get(c->key)) {
        metrics->cache_lookups.labels({cache_name, "hit"}).inc();
        return answer(c, std::move(*hit), "hit", 0);
      }
      if (c->mask_key != c->key) cached_mask = cache->get(c->mask_key);
      metrics->cache_lookups.labels({cache_name, cached_mask ? "mask" : "miss"}).inc();
    }
    DecodeOptions d;
    d.max_pixels = options.max_image_pixels;
    c->rgb = std::make_shared<const Image>(decode_image(
        reinterpret_cast<const uint8_t*>(c->image.data()), c->image.size(), c->image_name, d));
    c->body.reset();  // the encoded bytes are not needed any more
    c->image = {};
    c->decode_ms = ms_since(td);
    metrics->stages.labels({"decode"}).observe(c->decode_ms / 1000.0);
    if (cached_mask) {
      DecodeOptions gray;
      gray.channels = 1;
      const Image mask = decode_image(reinterpret_cast<const uint8_t*>(cached_mask->data()),
                                      cached_mask->size(), "the cached mask", gray);
      if (mask.width == c->rgb->width && mask.height == c->rgb->height)
        return finish(c, mask, false);  // the model does not run
    }
    SegmentJob job;
    job.rgb = c->rgb;
    job.options = c->po;
    job.deadline = c->deadline;
    job.cancelled = c->gone;
    job.done = [this, c](JobOutcome&& o) { mask_ready(c, std::move(o)); };
    model->batcher->submit(std::move(job));
  } catch (const Error& e) {
    c->respond(error(e));
  } catch (const std::exception& e) {
    c->respond(error_response(http::status::internal_server_error, "internal", e.what()));
  }
}

// On a model worker: hand the mask to the decode pool for rendering.
void Service::Impl::mask_ready(const std::shared_ptr<SegmentCall>& c, JobOutcome&& o) {
  if (o.dropped) metrics->dropped.labels({o.dropped}).inc();
  if (o.error) {
    try {
      std::rethrow_exception(o.error);
    } catch (const Error& e) {
      return c->respond(error(e));
    } catch (const std::exception& e) {
      return c->respond(error_response(http::status::internal_server_error, "internal", e.what()));
    }
  }
  c->queue_ms = o.queue_ms;
  c->infer_ms = o.infer_ms;
  metrics->stages.labels({"queue"}).observe(o.queue_ms / 1000.0);
  metrics->stages.labels({"inference"}).observe(o.infer_ms / 1000.0);
  auto mask = std::make_shared<const Image>(std::move(o.mask));
  try {
    pool->submit([this, c, mask] { finish(c, *mask, true); });
  } catch (const Error& e) {
    c->respond(error(e));
  }
}

// On the decode pool: render the output as `biref segment` does, encode it, store it (and the
// mask, for the other outputs of this image), answer.
void Service::Impl::finish(const std::shared_ptr<SegmentCall>& c, const Image& mask,
                           bool store_mask) {
  try {
    const auto te = Clock::now();
    const Image img = c->rembg ? rembg_render(*c->rgb, mask, *c->rembg)
                               : render_output(c->kind, *c->rgb, mask, c->out);
    const auto png = encode_image(img, ".png");
    std::string bytes(png.begin(), png.end());
    if (cache && store_mask && c->mask_key != c->key) {
      const auto mask_png = encode_image(mask, ".png");
      cache->put(c->mask_key, std::string(mask_png.begin(), mask_png.end()));
    }
    const double encode_ms = ms_since(te);
    metrics->stages.labels({"encode"}).observe(encode_ms / 1000.0);
    if (cache) cache->put(c->key, bytes);
    answer(c, std::move(bytes), store_mask ? "miss" : "mask", encode_ms);
  } catch (const Error& e) {
    c->respond(error(e));
  } catch (const std::exception& e) {
    c->respond(error_response(http::status::internal_server_error, "internal", e.what()));
  }
}

void Service::Impl::answer(const std::shared_ptr<SegmentCall>& c, std::string png,
                           const char* cache_state, double encode_ms) {
  Response r{http::status::ok, 11};
  r.set(http::field::content_type, "image/png");
  r.set("X-Biref-Model", c->model_name);
  r.set("X-Biref-Model-Version", c->version);
  r.set("X-Biref-Cache", cache_state);
  r.set("Server-Timing", str_cat("decode;dur=", c->decode_ms, ", queue;dur=", c->queue_ms,
                                 ", inference;dur=", c->infer_ms, ", encode;dur=", encode_ms));
  r.body() = std::move(png);
  c->respond(std::move(r));
}

}  // namespace biref::serve
