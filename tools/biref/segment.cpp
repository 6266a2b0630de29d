// `biref segment IMAGE -o MASK.png --model CKPT [--size WxH]`: one image in, its mask out.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "biref/biref.h"
#include "biref/pipeline.h"
#include "command.h"
#include "common.h"
#include "core/check.h"
#include "weights/safetensors.h"
#include "weights/zoo.h"

namespace {

struct SegmentOptions {
  std::string image, output, model, size, dump;
  bool size_given = false;  // else the model's native size
  int threads = 0;
  int64_t max_image_pixels = 0;  // 0: the default limit
  bool quiet = false;
};

int run_segment(const SegmentOptions& o) {
  // The model's native size when --size is not given: the zoo's entry for a zoo name
  // (2048x2048 for HR, 2560x1440 for lite-2K, ...), 1024x1024 otherwise.
  std::string size = o.size;
  if (!o.size_given) {
    const auto entry = biref::zoo_find(o.model);
    size = entry ? std::to_string(entry->width) + "x" + std::to_string(entry->height) : "1024x1024";
  }
  int W = 0, H = 0;
  biref::cli::parse_size(size, "--size", W, H);
  biref::cli::check_model_size(W, H, "--size");
  BIREF_CHECK(!o.output.empty(), "no output: pass -o MASK.png");
  biref::check_threads(o.threads, "--threads");
  BIREF_CHECK(o.max_image_pixels >= 0, "--max-image-pixels must be positive");
  // An output must never replace an input (the image, or the checkpoint when it is a file).
  for (const std::string& out : {o.output, o.dump}) {
    if (out.empty()) continue;
    biref::cli::check_not_an_input(out, o.image, "the input image");
    biref::cli::check_not_an_input(out, o.model, "the model checkpoint");
  }
  BIREF_CHECK(o.dump.empty() || !biref::cli::same_file(o.output, o.dump),
              "-o and --dump name the same file '", o.output, "'");
  // Inputs and the output folder first, so a mistake fails before the model is loaded and run.
  biref::DecodeOptions decode;
  decode.max_pixels = o.max_image_pixels;
  const biref::Image image = biref::read_image(o.image, decode);
  BIREF_CHECK(biref::can_write_image(o.output), "cannot write '", o.output,
              "': unknown image format (use .png, .jpg, .bmp, .tif or .webp)");
  for (const std::string& out : {o.output, o.dump}) {
    if (out.empty()) continue;
    const std::filesystem::path dir = std::filesystem::path(out).parent_path();
    std::error_code ec;
    BIREF_CHECK(dir.empty() || std::filesystem::is_directory(dir, ec), "cannot write '", out,
                "': folder '", dir.string(), "' does not exist");
  }
  biref::LoadOptions lo;
  lo.threads = o.threads;
  const auto t0 = std::chrono::steady_clock::now();
  auto model = biref::Model::load(o.model, lo);
  // --dump: every named intermediate (bb.full.x1 ... out, NCHW float32) into one .safetensors
  std::vector<std::pair<std::string, biref::HostTensor>> dumped;
  if (!o.dump.empty()) {
    model->set_dump([&](const std::string& name, const biref::HostTensor& t) {
      dumped.push_back({name, t});
    });
  }
  const auto t1 = std::chrono::steady_clock::now();
  const biref::Image mask = biref::segment(*model, image, W, H);
  const auto t2 = std::chrono::steady_clock::now();
  // The dump first and the mask last: a failure never leaves a mask without its dump, and each
  // file is written atomically (complete or absent).
  if (!o.dump.empty()) {
    std::vector<std::pair<std::string, biref::TensorData>> ts;
    for (const auto& [name, t] : dumped)
      ts.push_back({name, {biref::DType::F32, t.shape, t.data.data(), nullptr}});
    biref::save_safetensors(o.dump, ts, {{"source", o.image}, {"model", o.model}, {"size", size}});
  }
  biref::write_image(o.output, mask);
  if (!o.quiet) {
    using ms = std::chrono::duration<double, std::milli>;
    std::fprintf(stderr, "%s: %dx%d -> %s (%s at %dx%d on %s; load %.0f ms, run %.0f ms)\n",
                 o.image.c_str(), image.width, image.height, o.output.c_str(),
                 model->info().backbone.c_str(), W, H, model->info().device.c_str(),
                 ms(t1 - t0).count(), ms(t2 - t1).count());
  }
  return 0;
}

}  // namespace

BIREF_COMMAND(
    segment, "Segment an image: write its foreground mask (8-bit PNG)",
    [](CLI::App& app) -> biref::cli::RunFn {
      auto o = std::make_shared<SegmentOptions>();
      app.add_option("image", o->image, "input image (any format OpenCV reads)")->required();
      app.add_option("-o,--output", o->output, "output mask, e.g. mask.png")->required();
      app.add_option("-m,--model", o->model,
                     "checkpoint (.safetensors / .pth), zoo name (see `biref models`), "
                     "hf:ORG/REPO[:FILE], or synthetic:BACKBONE[:SEED]")
          ->required();
      app.add_option("-s,--size", o->size,
                     "model input WIDTHxHEIGHT, multiples of 32 (default: the zoo "
                     "model's native size, else 1024x1024)")
          ->each([o](const std::string&) { o->size_given = true; });
      app.add_option("-t,--threads", o->threads, "threads (0: all cores)");
      biref::cli::add_max_image_pixels(app, o->max_image_pixels);
      app.add_flag("-q,--quiet", o->quiet, "print nothing on success");
      app.add_option("--dump", o->dump,
                     "also write the named intermediates (bb.full.x1 ... out) to this "
                     ".safetensors file, for debugging against the official model");
      return [o] { return run_segment(*o); };
    });
