// `biref segment INPUT... -o OUT --model CKPT [--model CKPT2 ...]`: images, folders or globs in;
// for each image its mask, RGBA cut-out, refined foreground and/or composite out. Decoding runs
// ahead of the model and writing behind it on their own threads.
#include <omp.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>

#include "biref/biref.h"
#include "biref/pipeline.h"
#include "command.h"
#include "common.h"
#include "core/check.h"
#include "core/pool.h"
#include "segment_files.h"
#include "weights/safetensors.h"
#include "weights/zoo.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct SegmentOptions {
  std::vector<std::string> inputs, models;
  std::string output, size, dump;
  std::string precision = "fp32";
  bool size_given = false;  // else the first model's native size
  std::string outputs = "mask", bg_color = "white", bg_image;
  int threshold = -1;                         // < 0: a soft mask
  int64_t max_pixels = int64_t(2048) * 2048;  // --size dynamic: the largest model input
  std::string tile = "off", tta = "none";
  int tile_size = 0, overlap = -1;
  int batch = 1;
  int threads = 0;
  int64_t max_image_pixels = 0;  // 0: the default limit
  bool recursive = false, skip_existing = false, quiet = false;
  std::string shard;  // "K/N": the K-th (0-based) of N slices of the inputs
};

// --shard K/N: 0 <= K < N. Image i of the sorted inputs belongs to shard i mod N, so the slices
// are deterministic, disjoint, cover every image, and mix the folders' images evenly.
void parse_shard(const std::string& text, size_t& k, size_t& n) {
  k = 0;
  n = 1;
  if (text.empty()) return;
  const size_t slash = text.find('/');
  auto number = [&](const std::string& s, size_t& v) {
    if (s.empty() || s.size() > 7 || s.find_first_not_of("0123456789") != std::string::npos)
      return false;
    v = std::stoul(s);
    return true;
  };
  const bool ok = slash != std::string::npos && number(text.substr(0, slash), k) &&
                  number(text.substr(slash + 1), n) && n >= 1 && k < n;
  BIREF_CHECK(ok, "--shard '", text,
              "' is not K/N with 0 <= K < N (e.g. 0/4 ... 3/4; a Kubernetes Indexed Job passes "
              "$JOB_COMPLETION_INDEX as K)");
}

std::vector<biref::OutputKind> parse_kinds(const std::string& list) {
  std::vector<biref::OutputKind> kinds;
  size_t b = 0;
  while (b <= list.size()) {
    const size_t e = std::min(list.find(',', b), list.size());
    const biref::OutputKind k = biref::parse_output_kind(list.substr(b, e - b));
    if (std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
    b = e + 1;
  }
  return kinds;
}

// One image as it moves through the run: decoded ahead of the model, or the reason it was not.
struct Decoded {
  std::optional<biref::Image> image;
  std::string error;
};

// Ctrl-C (SIGINT) or SIGTERM during a run: the images being written are finished, no new one
// is started, and the command ends with a summary and exit code 130. A second signal kills at
// once (the handler is reset to the default by the first).
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) {
  g_interrupted.store(true);
  static const char msg[] =
      "\nbiref segment: stopping after the images in progress (again to quit now)\n";
  [[maybe_unused]] const ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
}
struct Interrupted {};
class InterruptGuard {
 public:
  InterruptGuard() {
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

int run_segment(const SegmentOptions& o) {
  const InterruptGuard interrupt_guard;
  biref::check_threads(o.threads, "--threads");
  BIREF_CHECK(o.max_image_pixels >= 0, "--max-image-pixels must be positive");
  BIREF_CHECK(o.batch >= 1 && o.batch <= 64, "--batch ", o.batch, " is out of range (1..64)");
  BIREF_CHECK(o.tta == "none" || o.tta == "flip", "--tta '", o.tta, "' is not none or flip");
  const std::vector<biref::OutputKind> kinds = parse_kinds(o.outputs);
  std::vector<std::string> kind_names;
  for (biref::OutputKind k : kinds) kind_names.push_back(biref::output_kind_name(k));
  biref::OutputOptions render;
  render.background = biref::parse_color(o.bg_color);
  render.threshold = o.threshold;
  BIREF_CHECK(o.threshold < 0 || o.threshold <= 254, "--threshold ", o.threshold,
              " is out of range: use 0..254 (255 where the mask is above it)");

  // The model size: dynamic (each image at its own size), --size, the first model's zoo entry
  // (2048x2048 for HR, 2560x1440 for lite-2K, ...), else 1024x1024.
  biref::PredictOptions po;
  po.dynamic = o.size_given && o.size == "dynamic";
  po.max_pixels = o.max_pixels;
  po.flip = o.tta == "flip";
  po.tile.mode = biref::parse_tile_mode(o.tile);
  po.tile.tile_size = o.tile_size;
  po.tile.overlap = o.overlap;
  std::string size = o.size;
  if (!o.size_given) {
    const auto entry = biref::zoo_find(o.models[0]);
    size = entry ? std::to_string(entry->width) + "x" + std::to_string(entry->height) : "1024x1024";
  }
  if (!po.dynamic) {
    biref::cli::parse_size(size, "--size", po.width, po.height);
    biref::cli::check_model_size(po.width, po.height, "--size");
  }
  BIREF_CHECK(o.max_pixels >= 32 * 32, "--max-pixels ", o.max_pixels, " must be at least 1024");
  BIREF_CHECK(!(po.dynamic && po.tile.mode == biref::TileMode::On),
              "--tile on needs a fixed model size: it cannot be combined with --size dynamic");
  biref::tile_layout(po.width, po.height, po.width, po.height, po.tile);  // checks the flags

  // The inputs and every output path, checked before a model is loaded or a file written.
  size_t skipped_folders = 0;
  const std::vector<biref::cli::InputImage> inputs =
      biref::cli::expand_inputs(o.inputs, o.recursive, skipped_folders);
  std::error_code ec;
  const bool single = o.inputs.size() == 1 && inputs.size() == 1 &&
                      !fs::is_directory(o.inputs[0], ec) && fs::exists(o.inputs[0], ec);
  const biref::cli::OutputPlan plan =
      biref::cli::plan_outputs(inputs, single, o.output, kind_names);
  BIREF_CHECK(o.dump.empty() || (single && o.models.size() == 1),
              "--dump takes one input image and one model");
  for (const auto& paths : plan.paths)
    for (size_t k = 0; k < kinds.size(); ++k) {
      const std::string& path = paths[k];
      for (const std::string& m : o.models)
        biref::cli::check_not_an_input(path, m, "the model checkpoint");
      if (!o.bg_image.empty())
        biref::cli::check_not_an_input(path, o.bg_image, "the background image");
      BIREF_CHECK(biref::can_write_image(path), "cannot write '", path,
                  "': unknown image format (use .png, .jpg, .bmp, .tif or .webp)");
      const std::string ext = fs::path(path).extension().string();
      BIREF_CHECK(!biref::output_has_alpha(kinds[k]) || ext == ".png" || ext == ".webp" ||
                      ext == ".tif" || ext == ".tiff",
                  "cannot write the ", kind_names[k], " output to '", path,
                  "': it has an alpha channel (use .png, .webp or .tif)");
      if (!plan.folder) {
        const fs::path dir = fs::path(path).parent_path();
        BIREF_CHECK(dir.empty() || fs::is_directory(dir, ec), "cannot write '", path, "': folder '",
                    dir.string(), "' does not exist");
      }
    }
  if (!o.dump.empty()) {
    biref::cli::check_not_an_input(o.dump, inputs[0].path, "the input image");
    for (const std::string& m : o.models)
      biref::cli::check_not_an_input(o.dump, m, "the model checkpoint");
    BIREF_CHECK(!biref::cli::same_file(o.dump, plan.paths[0][0]),
                "two outputs name the same file '", o.dump, "'");
  }
  // --shard: this process's slice. Names were checked across every input above, so shards never
  // write the same file.
  size_t shard_k = 0, shard_n = 1;
  parse_shard(o.shard, shard_k, shard_n);
  size_t in_shard = 0;
  // --skip-existing: an image whose every output exists is done (outputs are written whole).
  std::vector<size_t> to_run;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i % shard_n != shard_k) continue;
    ++in_shard;
    bool done = o.skip_existing;
    for (const std::string& p : plan.paths[i]) done = done && fs::is_regular_file(p, ec);
    if (!done) to_run.push_back(i);
  }
  const size_t skipped = in_shard - to_run.size();
  if (plan.folder && !to_run.empty()) {
    fs::create_directories(o.output, ec);
    BIREF_CHECK(!ec, "cannot make the output folder '", o.output, "': ", ec.message());
  }

  biref::DecodeOptions decode;
  decode.max_pixels = o.max_image_pixels;
  biref::Image background, resized_background;  // the second: used by the writer thread only
  if (!o.bg_image.empty()) {
    background = biref::read_image(o.bg_image, decode);
    render.background_image = &background;
  }
  const bool tty = biref::cli::stderr_is_terminal();
  const bool chatty = !o.quiet && !single;
  if (chatty && skipped_folders > 0)
    std::fprintf(stderr, "note: %zu subfolder%s not searched (use --recursive)\n", skipped_folders,
                 skipped_folders == 1 ? "" : "s");
  if (to_run.empty()) {
    if (!o.quiet)
      std::fprintf(stderr, "nothing to do: the outputs of all %zu images%s exist\n", in_shard,
                   shard_n > 1 ? " of this shard" : "");
    return 0;
  }

  biref::LoadOptions lo;
  lo.threads = o.threads;
  lo.precision = biref::parse_precision(o.precision);
  const auto t_load = Clock::now();
  std::vector<std::unique_ptr<biref::Model>> models;
  std::vector<biref::Model*> model_ptrs;
  for (const std::string& m : o.models) {
    models.push_back(biref::Model::load(m, lo));
    model_ptrs.push_back(models.back().get());
  }
  const double load_s = seconds_since(t_load);
  // --dump: every named intermediate (bb.full.x1 ... out, NCHW float32) into one .safetensors
  std::vector<std::pair<std::string, biref::HostTensor>> dumped;
  if (!o.dump.empty()) {
    models[0]->set_dump([&](const std::string& name, const biref::HostTensor& t) {
      dumped.push_back({name, t});
    });
  }
  const biref::Predictor predictor(model_ptrs, po);
  const biref::ModelInfo info = models[0]->info();
  if (chatty) {
    std::string models_text = info.backbone;
    if (models.size() > 1) models_text += " ×" + std::to_string(models.size());
    std::fprintf(stderr, "%zu image%s", to_run.size(), to_run.size() == 1 ? "" : "s");
    if (skipped) std::fprintf(stderr, " (%zu skipped: their outputs exist)", skipped);
    std::fprintf(stderr, "; %s on %s, loaded in %.0f ms\n", models_text.c_str(),
                 info.device.c_str(), load_s * 1e3);
  }
  // The one-time cost of the packed-weight cache, or why it cannot be kept.
  if (const std::string& cache = info.weight_cache;
      !o.quiet && (cache.rfind("written to ", 0) == 0 || cache.rfind("not written", 0) == 0))
    std::fprintf(stderr, "packed weights %s\n", cache.c_str());
  // What one image's outputs are called in the progress lines: the file, or for several kinds
  // "out/name.{mask,rgba}.png".
  auto outputs_text = [&](size_t i) {
    if (kinds.size() == 1) return plan.paths[i][0];
    const std::string& first = plan.paths[i][0];
    std::string list;
    for (const std::string& k : kind_names) list += (list.empty() ? "" : ",") + k;
    return first.substr(0, first.size() - kind_names[0].size() - 4) + "{" + list + "}.png";
  };

  // Decoding ahead (one thread, one batch in flight), the model on this thread, rendering and
  // writing behind it (one thread, one batch queued): memory stays at a few images.
  std::mutex mu;  // guards the counters, the progress bar and stderr
  size_t done = 0, failed = 0;
  double infer_s = 0;
  biref::cli::ProgressBar bar(tty && chatty, to_run.size(), "img");
  auto report_failure = [&](const std::string& path, const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    ++failed;
    ++done;
    bar.clear();
    if (single) return;
    // "biref segment: PATH: why", without naming the file twice when the reason names it
    if (why.find(path) != std::string::npos)
      std::fprintf(stderr, "biref segment: %s\n", why.c_str());
    else
      std::fprintf(stderr, "biref segment: %s: %s\n", path.c_str(), why.c_str());
    bar.update(done);
  };
  std::string single_error;  // one input: its failure is the command's error
  int single_w = 0, single_h = 0;
  auto fail_image = [&](size_t i, const std::string& why) {
    if (single) single_error = why;
    report_failure(inputs[i].path, why);
  };
  auto write_outputs = [&](size_t i, const biref::Image& image, const biref::Image& mask,
                           double seconds) {
    // This thread's OpenMP regions (refine_foreground) on one thread: the model's threads
    // already fill the cores, and a second team of spinning threads would slow both.
    omp_set_num_threads(1);
    try {
      // --bg-image: resized once per image size, not once per image
      biref::OutputOptions writer_render = render;
      if (render.background_image &&
          (background.width != image.width || background.height != image.height)) {
        if (resized_background.width != image.width || resized_background.height != image.height)
          resized_background =
              biref::resize_bicubic_antialiased(background, image.width, image.height);
        writer_render.background_image = &resized_background;
      }
      for (size_t k = 0; k < kinds.size(); ++k) {
        const std::string& path = plan.paths[i][k];
        if (plan.folder) fs::create_directories(fs::path(path).parent_path());
        biref::write_image(path, biref::render_output(kinds[k], image, mask, writer_render));
      }
    } catch (const std::exception& e) {
      fail_image(i, dynamic_cast<const std::bad_alloc*>(&e) ? "out of memory" : e.what());
      return;
    }
    std::lock_guard<std::mutex> lock(mu);
    ++done;
    if (chatty && !tty)
      std::fprintf(stderr, "[%zu/%zu] %s: %dx%d -> %s (%.2f s)\n", done, to_run.size(),
                   inputs[i].path.c_str(), image.width, image.height, outputs_text(i).c_str(),
                   seconds);
    bar.update(done, inputs[i].path);
  };

  const auto t_run = Clock::now();
  bool interrupted = false;
  {
    biref::TaskQueue writer(1, 1);
    struct Pending {
      size_t index;
      std::shared_ptr<biref::Image> image;
    };
    std::vector<Pending> batch;
    auto run_batch = [&] {
      if (batch.empty()) return;
      std::vector<const biref::Image*> images;
      for (const Pending& p : batch) images.push_back(p.image.get());
      const auto t0 = Clock::now();
      std::vector<biref::Image> masks;
      try {
        masks = predictor.masks(images);
      } catch (const std::exception& e) {
        for (const Pending& p : batch)
          fail_image(p.index, dynamic_cast<const std::bad_alloc*>(&e) ? "out of memory" : e.what());
        batch.clear();
        return;
      }
      const double s = seconds_since(t0);
      infer_s += s;
      for (size_t b = 0; b < batch.size(); ++b) {
        auto mask = std::make_shared<biref::Image>(std::move(masks[b]));
        writer.push([&, p = batch[b], mask, s] { write_outputs(p.index, *p.image, *mask, s); });
      }
      batch.clear();
    };
    const size_t window = size_t(o.batch) + 1;
    try {
      biref::ordered_map<Decoded>(
          to_run.size(), 1, window,
          [&](size_t t) {
            Decoded d;
            try {
              d.image = biref::read_image(inputs[to_run[t]].path, decode);
            } catch (const std::exception& e) {
              d.error = dynamic_cast<const std::bad_alloc*>(&e) ? "out of memory" : e.what();
            }
            return d;
          },
          [&](size_t t, Decoded& d) {
            if (g_interrupted.load()) throw Interrupted{};
            if (!d.image) {
              fail_image(to_run[t], d.error);
            } else {
              single_w = d.image->width;
              single_h = d.image->height;
              batch.push_back({to_run[t], std::make_shared<biref::Image>(std::move(*d.image))});
              if (int(batch.size()) >= o.batch) run_batch();
            }
            if (t + 1 == to_run.size()) run_batch();
          });
    } catch (const Interrupted&) {
      interrupted = true;  // the writes queued so far still complete
    }
    writer.finish();
  }
  const double run_s = seconds_since(t_run);
  bar.finish();
  if (single && !single_error.empty()) biref::fail(single_error);
  if (!o.dump.empty()) {
    std::vector<std::pair<std::string, biref::TensorData>> ts;
    for (const auto& [name, t] : dumped)
      ts.push_back({name, {biref::DType::F32, t.shape, t.data.data(), nullptr}});
    int W = po.width, H = po.height;
    // (the dump is written after the image: both are written whole, each atomically)
    biref::save_safetensors(o.dump, ts,
                            {{"source", inputs[0].path},
                             {"model", o.models[0]},
                             {"size", std::to_string(W) + "x" + std::to_string(H)}});
  }
  if (!o.quiet) {
    if (single) {
      int W = 0, H = 0;
      const biref::ImageInfo in{"", single_w, single_h};
      predictor.model_size(in.width, in.height, W, H);
      std::fprintf(stderr, "%s: %dx%d -> %s (%s%s at %dx%d%s on %s; load %.0f ms, run %.0f ms)\n",
                   inputs[0].path.c_str(), in.width, in.height,
                   plan.folder ? o.output.c_str() : plan.paths[0][0].c_str(), info.backbone.c_str(),
                   models.size() > 1 ? (" ×" + std::to_string(models.size())).c_str() : "", W, H,
                   predictor.tiled(in.width, in.height) ? ", tiled" : "", info.device.c_str(),
                   load_s * 1e3, infer_s * 1e3);
    } else {
      const size_t ok = done - failed;
      std::fprintf(stderr, "segmented %zu of %zu images", ok, to_run.size());
      if (failed) std::fprintf(stderr, " (%zu failed)", failed);
      std::fprintf(stderr, " in %s: %.2f images/s (model %.2f s/image)",
                   biref::cli::format_duration(run_s).c_str(), double(done) / run_s,
                   ok ? infer_s / double(ok) : 0.0);
      if (skipped) std::fprintf(stderr, "; %zu skipped (outputs exist)", skipped);
      std::fprintf(stderr, "\n");
    }
  }
  if (interrupted) {
    std::fprintf(stderr,
                 "biref segment: interrupted after %zu of %zu images; the rest can be resumed "
                 "with --skip-existing\n",
                 done, to_run.size());
    return 130;
  }
  if (failed > 0 && !single) {
    std::fprintf(stderr, "biref segment: error: %zu of %zu images failed (listed above)\n", failed,
                 to_run.size());
    return 1;
  }
  return 0;
}

}  // namespace

BIREF_COMMAND(
    segment, "Segment images: masks, cut-outs, refined foregrounds or composites",
    [](CLI::App& app) -> biref::cli::RunFn {
      auto o = std::make_shared<SegmentOptions>();
      app.add_option("images", o->inputs,
                     "images (JPEG, PNG, WebP, TIFF, BMP, PNM), folders or quoted globs")
          ->required();
      app.add_option("-o,--out", o->output,
                     "output file (one image, one kind), or folder: OUT/<name>.<kind>.png")
          ->required();
      app.add_option("-m,--model", o->models,
                     "checkpoint (.safetensors / .pth), zoo name (see `biref models`), "
                     "hf:ORG/REPO[:FILE], or synthetic:BACKBONE[:SEED]; repeated: an ensemble "
                     "(the mean of their probabilities)")
          ->required()
          // one value per --model, so that `--model M image.jpg` leaves the image an image
          ->allow_extra_args(false);
      app.add_option("-s,--size", o->size,
                     "model input WIDTHxHEIGHT, multiples of 32, or 'dynamic' (each image "
                     "at its own size floored to 32; default: the zoo model's native "
                     "size, else 1024x1024)")
          ->each([o](const std::string&) { o->size_given = true; });
      app.add_option("--output", o->outputs,
                     "what to write, comma-separated: mask (8-bit), rgba (the image with "
                     "the mask as alpha), foreground (refined colours + alpha), composite "
                     "(on --bg-color / --bg-image)")
          ->capture_default_str();
      app.add_option("--threshold", o->threshold,
                     "binarise the mask: 255 above T (0..254), else 0");
      app.add_option("--bg-color", o->bg_color, "composite background: #RRGGBB, R,G,B or a name")
          ->capture_default_str();
      app.add_option("--bg-image", o->bg_image,
                     "composite background image (resized to each image)");
      app.add_option("--max-pixels", o->max_pixels,
                     "--size dynamic: larger images are scaled down to this many model "
                     "input pixels, keeping the aspect ratio")
          ->capture_default_str();
      app.add_option("--tile", o->tile,
                     "tiled inference for large images: auto (images over twice the tile), "
                     "on, off")
          ->capture_default_str();
      app.add_option("--tile-size", o->tile_size,
                     "a tile's width in image pixels (0: the model size)");
      app.add_option("--overlap", o->overlap,
                     "pixels shared by neighbouring tiles (default: a quarter of a tile)");
      app.add_option("--tta", o->tta, "test-time augmentation: none, or flip (2x the time)")
          ->capture_default_str();
      app.add_option("--batch", o->batch, "run up to N images of one model size as one batch")
          ->capture_default_str();
      app.add_flag("-r,--recursive", o->recursive, "search folders recursively");
      app.add_option("--shard", o->shard,
                     "K/N: only the K-th (0-based) of N slices of the inputs (image i goes to "
                     "shard i mod N), for N processes or an Indexed Job");
      app.add_flag("--skip-existing", o->skip_existing,
                   "skip images whose outputs all exist (resume an interrupted run)");
      app.add_option("-t,--threads", o->threads, "threads (0: all cores)");
      app.add_option("--precision", o->precision,
                     "fp32, or bf16: the matrix products in bfloat16 (AVX512_BF16; see "
                     "docs/performance.md for its accuracy)")
          ->check(CLI::IsMember({"fp32", "bf16"}))
          ->capture_default_str();
      biref::cli::add_max_image_pixels(app, o->max_image_pixels);
      app.add_flag("-q,--quiet", o->quiet, "print only errors");
      app.add_option("--dump", o->dump,
                     "also write the named intermediates (bb.full.x1 ... out) to this "
                     ".safetensors file, for debugging against the official model");
      return [o] { return run_segment(*o); };
    });
