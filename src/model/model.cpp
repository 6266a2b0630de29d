// The public Model: load a checkpoint, pick the backend, run forward passes.
#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <cstring>

#include "biref/biref.h"
#include "core/check.h"
#include "core/threads.h"
#include "core/blob_file.h"
#include "model/forward.h"
#include "weights/checkpoint.h"
#include "weights/synthetic.h"
#include "weights/zoo.h"

namespace biref {

struct Model::Impl {
  ModelInfo info;
  // The layers (biases, norms, attention tables; the plain weights when the backend does not
  // pack its own): shared by every fork, read-only after load.
  std::shared_ptr<const BiRefNet> shared_net;
  const BiRefNet& net() const { return *shared_net; }
  std::unique_ptr<Backend> backend;
  Arena pool;
  DumpFn dump;
  bool profiling = false;
  int fixed_threads = 0;  // 0: the governor chooses
  int max_threads = 1;
  std::unique_ptr<ThreadGovernor> governor;
  int last_threads = 0;
  int64_t band_tokens = 32768;
  std::vector<StageTiming> timings, op_profile;
  double flops = 0;

  void set_threads(int threads, const std::string& why) {
    fixed_threads = threads;
    governor.reset();
    if (threads > 0) {
      info.threads = str_cat("fixed: ", threads, " (", why, ")");
      return;
    }
    const CpuBudget b = cpu_budget();
    max_threads = b.threads;
    info.threads = describe_automatic_threads(b);
    if (b.omp_num_threads > 0) {
      fixed_threads = b.omp_num_threads;
      return;
    }
    governor = std::make_unique<ThreadGovernor>(b.threads, affinity_cpus());
  }

  // Runs `f` with this pass's thread count, and gives the caller's back.
  template <typename F>
  auto with_threads(F f) {
    const int n = fixed_threads > 0 ? fixed_threads : governor ? governor->choose() : max_threads;
    const int before = omp_get_max_threads();
    omp_set_num_threads(n);
    last_threads = n;
    struct Restore {
      int n;
      ~Restore() { omp_set_num_threads(n); }
    } restore{before};
    return f();
  }

  Tensor run(const Tensor& x_nhwc) {
    OpProfile prof;
    std::unique_ptr<Backend> profiled = profiling ? make_profiled_backend(*backend, prof) : nullptr;
    ForwardContext ctx{profiled ? *profiled : *backend, pool, {}, {}, 0, band_tokens};
    if (dump) {
      ctx.dump = [this](const std::string& name, const Tensor& t) {
        // NHWC -> NCHW for the caller
        HostTensor h;
        const int64_t B = t.dim(0), H = t.dim(1), W = t.dim(2), C = t.dim(3);
        h.shape = {B, C, H, W};
        h.data.resize(size_t(t.numel()));
        for (int64_t b = 0; b < B; ++b)
          for (int64_t p = 0; p < H * W; ++p)
            for (int64_t c = 0; c < C; ++c)
              h.data[(b * C + c) * H * W + p] = t.data[(b * H * W + p) * C + c];
        dump(name, h);
      };
    }
    Tensor out = birefnet_forward(net(), x_nhwc, ctx);
    timings = std::move(ctx.timings);
    flops = ctx.flops;
    op_profile.clear();
    for (const auto& [name, st] : prof)
      op_profile.push_back({str_cat(name, " (x", st.calls, ")"), st.ms});
    std::sort(op_profile.begin(), op_profile.end(), [](auto& a, auto& b) { return a.ms > b.ms; });
    return out;
  }

  // One pass inside an arena run: `make_input` builds the NHWC input (possibly in the arena);
  // the logits are copied out before the arena is reused.
  template <typename MakeInput>
  HostTensor run_in_arena(const Shape& key, const Shape& out_shape, MakeInput make_input) {
    return with_threads([&] { return run_in_arena_now(key, out_shape, make_input); });
  }
  template <typename MakeInput>
  HostTensor run_in_arena_now(const Shape& key, const Shape& out_shape, MakeInput make_input) {
    pool.begin_run(key);
    HostTensor r;
    r.shape = out_shape;
    try {
      Tensor x = make_input();
      Tensor out = run(x);
      r.data.assign(out.data, out.data + out.numel());
    } catch (...) {
      pool.abort_run();
      throw;
    }
    pool.end_run();
    return r;
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() {
  impl_.reset();
  // The weights' memory goes back to the C allocator; without a trim it stays resident (170 MB
  // of swin_v1_t's 190 measured after unloading), which a server unloading models to stay under
  // its memory budget cannot afford.
  malloc_trim(0);
}

const char* precision_name(Precision p) {
  return p == Precision::bf16 ? "bf16" : "fp32";
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  fail("precision '", name, "' is not fp32 or bf16");
}

namespace {

// Where the packed weights of `ck` are cached, and the key that says they are its weights (the
// identity of the file that was read: path, device, inode, size, modification and change times)
// packed by this code (its build ID). The file name is per checkpoint path, so a changed
// checkpoint replaces its entry.
Backend::PackCache pack_cache_for(const LoadOptions& options, const Checkpoint& ck,
                                  const std::string& config, std::string& off) {
  if (!options.weight_cache) {
    off = "off (LoadOptions::weight_cache is false)";
    return {};
  }
  if (const char* e = std::getenv("BIREF_WEIGHT_CACHE")) {
    const std::string v = e;
    if (v == "0" || v == "off" || v == "no" || v == "false") {
      off = str_cat("off (BIREF_WEIGHT_CACHE=", v, ")");
      return {};
    }
  }
  if (ck.format == "synthetic") {
    off = "off (synthetic weights)";
    return {};
  }
  if (ck.file_identity.empty()) {
    off = "off (the checkpoint file changed while it was read)";
    return {};
  }
  const std::string build = code_build_id();
  if (build.empty()) {
    off = "off (this build of biref has no build ID to tell its packing from another's)";
    return {};
  }
  std::string dir;
  try {
    dir = cache_dir();
  } catch (const Error& e) {
    off = str_cat("off (", e.what(), ")");
    return {};
  }
  char* real = ::realpath(ck.path.c_str(), nullptr);
  const std::string path = real ? real : ck.path;
  std::free(real);
  // The key is JSON text in the cache's index: the path's bytes as printable ASCII.
  std::string printable;
  for (unsigned char c : path) {
    if (c >= 0x20 && c < 0x7f && c != '%') {
      printable += char(c);
    } else {
      char esc[4];
      std::snprintf(esc, sizeof esc, "%%%02X", c);
      printable += esc;
    }
  }
  const uint64_t h = fnv1a64(path);
  std::string name = std::filesystem::path(path).stem().string();
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  char tag[24];
  std::snprintf(tag, sizeof tag, "-%016llx", static_cast<unsigned long long>(h));
  Backend::PackCache c;
  c.stem = str_cat(dir, "/packed/", name.substr(0, 80), tag);
  c.key = str_cat("biref ", BIREF_VERSION, " build ", build, "; checkpoint ", printable, " ",
                  ck.file_identity, "; ", config);
  return c;
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& source, const LoadOptions& options) {
  check_threads(options.threads, "threads");
  BIREF_CHECK(options.band_tokens > 0, "band_tokens must be positive");
  auto impl = std::make_unique<Impl>();
  // The governor's first window is the load itself.
  impl->set_threads(options.threads, "LoadOptions::threads");
  const int before = omp_get_max_threads();
  omp_set_num_threads(impl->fixed_threads > 0 ? impl->fixed_threads : impl->max_threads);
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{before};
  auto net = std::make_shared<BiRefNet>();
  if (options.device == Device::Reference) {
    BIREF_CHECK(options.precision == Precision::fp32,
                "precision bf16 runs on the CPU device only (the reference backend is double)");
    impl->backend = make_ref_backend();
  } else {
    const CpuIsa isa = options.isa.value_or(cpu_isa());
    impl->backend = make_cpu_backend(isa, options.precision);
    impl->info.isa = cpu_isa_name(isa);
  }
  impl->info.precision = precision_name(options.precision);
  Backend& be = *impl->backend;
  auto t0 = std::chrono::steady_clock::now();
  auto lap = [&](const char* stage) {
    const auto t = std::chrono::steady_clock::now();
    impl->info.load_stages.push_back(
        {stage, std::chrono::duration<double, std::milli>(t - t0).count()});
    t0 = t;
  };
  Backend::PackCache pack_cache;
  std::string cache_off;
  {
    Checkpoint ck = load_checkpoint(source);
    const ModelConfig cfg = detect_config(ck);
    validate_checkpoint(ck, cfg);
    if (be.owns_weights()) pack_cache = pack_cache_for(options, ck, describe(cfg), cache_off);
    lap("read");
    // A backend that packs its own copies reads the weights straight from the file mapping.
    *net = build_birefnet(ck, cfg, /*map_weights=*/be.owns_weights());
    lap("build");
    impl->info.source = source;
    impl->info.format = ck.format;
    impl->info.backbone = cfg.swin.name;
    impl->info.description = describe(cfg);
    impl->info.parameters = net->parameters;
  }  // the checkpoint (mapping or buffers) is released here; the model holds its own copy
  impl->band_tokens = options.band_tokens;
  impl->info.device = impl->backend->name();
  if (be.owns_weights()) {
    // Pack every weight once now; the backend keeps the packed copies, so the plain ones go
    // (the mapped ones hand their file pages back). Plain copies (weights converted from F16 or
    // read from a .pth, synthetic ones) are mostly freed into the C allocator's heap, which the
    // packed copies (in their own huge pages) do not reuse: trimmed every 16 MB, so the peak
    // stays near the plain weights alone instead of both.
    size_t freed = 0;
    auto release = [&freed](std::vector<float>& w, MappedFloats& mapped) {
      freed += w.capacity() * sizeof(float);
      std::vector<float>().swap(w);
      if (freed >= (size_t(16) << 20)) {
        malloc_trim(0);
        freed = 0;
      }
      if (!mapped.empty()) release_mapped_pages(mapped.data, mapped.size * sizeof(float));
      mapped = {};
    };
    be.begin_prepare(pack_cache);
    for_each_layer(*net, {[&](Linear& l) {
                            be.prepare(l);
                            release(l.weight, l.mapped_weight);
                          },
                          [&](Conv2d& c) {
                            be.prepare(c);
                            release(c.weight, c.mapped_weight);
                          },
                          [&](DeformConv& d) {
                            be.prepare(d);
                            release(d.offset_mask.weight, d.offset_mask.mapped_weight);
                            release(d.regular.weight, d.regular.mapped_weight);
                          }});
    const std::string cache = be.end_prepare();
    impl->info.weight_cache = cache.empty() ? cache_off : cache;
    lap("pack");
  }
  impl->shared_net = std::move(net);
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

std::unique_ptr<Model> Model::fork() const {
  auto impl = std::make_unique<Impl>();
  impl->info = impl_->info;
  if (impl_->fixed_threads > 0)
    impl->set_threads(impl_->fixed_threads, "as the model it was forked from");
  else
    impl->set_threads(0, "");
  impl->shared_net = impl_->shared_net;
  impl->backend = impl_->backend->fork();
  impl->band_tokens = impl_->band_tokens;
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

size_t Model::weight_bytes() const {
  return impl_->backend->owns_weights() ? impl_->backend->weight_bytes()
                                        : size_t(impl_->info.parameters) * sizeof(float);
}

void Model::set_threads(int threads) {
  check_threads(threads, "threads");
  impl_->set_threads(threads, "Model::set_threads");
}

int Model::last_threads() const {
  return impl_->last_threads;
}

ModelInfo Model::info() const {
  return impl_->info;
}

int64_t HostTensor::numel() const {
  return checked_numel(shape);
}

namespace {
void check_input(const HostTensor& input, int channel_axis, const char* layout) {
  BIREF_CHECK(input.shape.size() == 4 && input.shape[channel_axis] == 3, "model input must be ",
              layout, ", got ", shape_str(input.shape));
  BIREF_CHECK(int64_t(input.data.size()) == input.numel(), "model input has ", input.data.size(),
              " values for shape ", shape_str(input.shape));
}
}  // namespace

HostTensor Model::forward(const HostTensor& input) {
  check_input(input, 1, "[B, 3, H, W]");
  const int64_t B = input.shape[0], H = input.shape[2], W = input.shape[3];
  // one channel: [B, 1, H, W] and [B, H, W, 1] have the same memory order
  return impl_->run_in_arena(input.shape, {B, 1, H, W}, [&] {
    Tensor x = impl_->pool.empty({B, H, W, 3});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t p = 0; p < H * W; ++p)
          x.data[(b * H * W + p) * 3 + c] = input.data[(b * 3 + c) * H * W + p];
    return x;
  });
}

HostTensor Model::forward_nhwc(const HostTensor& input) {
  check_input(input, 3, "[B, H, W, 3]");
  const Shape& s = input.shape;
  return impl_->run_in_arena(s, {s[0], s[1], s[2], 1}, [&] {
    return Tensor::wrap(const_cast<float*>(input.data.data()), s);
  });
}

void Model::set_dump(DumpFn fn) {
  impl_->dump = std::move(fn);
}
const std::vector<StageTiming>& Model::last_timings() const {
  return impl_->timings;
}
void Model::set_profiling(bool on) {
  impl_->profiling = on;
}
const std::vector<StageTiming>& Model::last_op_profile() const {
  return impl_->op_profile;
}
double Model::last_flops() const {
  return impl_->flops;
}
size_t Model::activation_bytes() const {
  return impl_->pool.bytes_held();
}

}  // namespace biref
