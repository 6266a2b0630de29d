// `biref segment IMAGE -o OUT --model CKPT [--size WxH|dynamic] [--output KINDS]`: one image in;
// its mask, RGBA cut-out, refined foreground and/or composite out.
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

namespace fs = std::filesystem;

struct SegmentOptions {
  std::string image, output, model, size, dump;
  bool size_given = false;  // else the model's native size
  std::string outputs = "mask", bg_color = "white", bg_image;
  int threshold = -1;                         // < 0: a soft mask
  int64_t max_pixels = int64_t(2048) * 2048;  // --size dynamic: the largest model input
  int threads = 0;
  int64_t max_image_pixels = 0;  // 0: the default limit
  bool quiet = false;
};

// The output kinds, in the order they are written.
const std::vector<std::string>& all_kinds() {
  static const std::vector<std::string> kinds = {"mask", "rgba", "foreground", "composite"};
  return kinds;
}

std::vector<std::string> parse_kinds(const std::string& list) {
  std::vector<std::string> kinds;
  size_t b = 0;
  while (b <= list.size()) {
    const size_t e = std::min(list.find(',', b), list.size());
    const std::string k = list.substr(b, e - b);
    BIREF_CHECK(std::find(all_kinds().begin(), all_kinds().end(), k) != all_kinds().end(),
                "--output '", k, "' is not an output kind (mask, rgba, foreground, composite)");
    if (std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
    b = e + 1;
  }
  return kinds;
}

// Where each kind goes. One kind: -o names the file, unless it is an existing folder. Several
// kinds (or a folder): OUT/<image stem>.<kind>.png.
std::vector<std::pair<std::string, std::string>> output_paths(
    const SegmentOptions& o, const std::vector<std::string>& kinds) {
  std::error_code ec;
  const bool folder = kinds.size() > 1 || fs::is_directory(o.output, ec);
  std::vector<std::pair<std::string, std::string>> paths;
  for (const std::string& k : kinds) {
    if (!folder) {
      paths.push_back({k, o.output});
      continue;
    }
    BIREF_CHECK(fs::path(o.output).extension().empty() || fs::is_directory(o.output, ec), "-o '",
                o.output, "' must be a folder with several --output kinds (e.g. -o out/)");
    if (!fs::exists(o.output, ec)) {  // made here, inside a folder that exists
      const fs::path parent = fs::absolute(o.output).parent_path();
      BIREF_CHECK(fs::is_directory(parent, ec), "cannot make the output folder '", o.output,
                  "': folder '", parent.string(), "' does not exist");
      fs::create_directory(o.output, ec);
      BIREF_CHECK(!ec, "cannot make the output folder '", o.output, "': ", ec.message());
    }
    paths.push_back(
        {k,
         (fs::path(o.output) / (fs::path(o.image).stem().string() + "." + k + ".png")).string()});
  }
  return paths;
}

int run_segment(const SegmentOptions& o) {
  BIREF_CHECK(!o.output.empty(), "no output: pass -o MASK.png");
  biref::check_threads(o.threads, "--threads");
  BIREF_CHECK(o.max_image_pixels >= 0, "--max-image-pixels must be positive");
  const std::vector<std::string> kinds = parse_kinds(o.outputs);
  const biref::Color bg = biref::parse_color(o.bg_color);
  BIREF_CHECK(o.threshold < 0 || o.threshold <= 254, "--threshold ", o.threshold,
              " is out of range: use 0..254 (255 where the mask is above it)");
  // The model size: dynamic (each image at its own size), --size, the zoo entry's native size
  // (2048x2048 for HR, 2560x1440 for lite-2K, ...), else 1024x1024.
  const bool dynamic = o.size_given && o.size == "dynamic";
  int W = 0, H = 0;
  std::string size = o.size;
  if (!o.size_given) {
    const auto entry = biref::zoo_find(o.model);
    size = entry ? std::to_string(entry->width) + "x" + std::to_string(entry->height) : "1024x1024";
  }
  if (!dynamic) {
    biref::cli::parse_size(size, "--size", W, H);
    biref::cli::check_model_size(W, H, "--size");
  }
  BIREF_CHECK(o.max_pixels >= 32 * 32, "--max-pixels ", o.max_pixels, " must be at least 1024");

  // Every output is checked before the model is loaded: format, folder, never an input.
  const auto paths = output_paths(o, kinds);
  std::vector<std::string> outs;
  for (const auto& p : paths) outs.push_back(p.second);
  if (!o.dump.empty()) outs.push_back(o.dump);
  for (size_t i = 0; i < outs.size(); ++i) {  // never an input, first of all
    biref::cli::check_not_an_input(outs[i], o.image, "the input image");
    biref::cli::check_not_an_input(outs[i], o.model, "the model checkpoint");
    if (!o.bg_image.empty())
      biref::cli::check_not_an_input(outs[i], o.bg_image, "the background image");
    for (size_t j = 0; j < i; ++j)
      BIREF_CHECK(!biref::cli::same_file(outs[i], outs[j]), "two outputs name the same file '",
                  outs[i], "'");
    const fs::path dir = fs::path(outs[i]).parent_path();
    std::error_code ec;
    BIREF_CHECK(dir.empty() || fs::is_directory(dir, ec), "cannot write '", outs[i], "': folder '",
                dir.string(), "' does not exist");
  }
  for (const auto& [kind, path] : paths) {
    const std::string ext = fs::path(path).extension().string();
    BIREF_CHECK(biref::can_write_image(path), "cannot write '", path,
                "': unknown image format (use .png, .jpg, .bmp, .tif or .webp)");
    BIREF_CHECK(!(kind == "rgba" || kind == "foreground") || ext == ".png" || ext == ".webp" ||
                    ext == ".tif" || ext == ".tiff",
                "cannot write the ", kind, " output to '", path,
                "': it has an alpha channel (use .png, .webp or .tif)");
  }
  biref::DecodeOptions decode;
  decode.max_pixels = o.max_image_pixels;
  const biref::Image image = biref::read_image(o.image, decode);
  biref::Image background;
  if (!o.bg_image.empty()) {
    background = biref::read_image(o.bg_image, decode);
    if (background.width != image.width || background.height != image.height)
      background = biref::resize_bicubic_antialiased(background, image.width, image.height);
  }
  if (dynamic) biref::dynamic_model_size(image.width, image.height, o.max_pixels, W, H);

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
  const biref::InputResize resize =
      dynamic ? biref::InputResize::PillowBicubic : biref::InputResize::OpenCvBilinear;
  const biref::HostTensor logits = model->forward(biref::preprocess(image, W, H, resize));
  biref::Image mask = biref::mask_from_probabilities(
      biref::probabilities(logits, image.width, image.height), image.width, image.height);
  if (o.threshold >= 0) mask = biref::threshold_mask(mask, o.threshold);
  const auto t2 = std::chrono::steady_clock::now();
  // The dump first and the images last: a failure never leaves an image without its dump, and
  // each file is written atomically (complete or absent).
  if (!o.dump.empty()) {
    std::vector<std::pair<std::string, biref::TensorData>> ts;
    for (const auto& [name, t] : dumped)
      ts.push_back({name, {biref::DType::F32, t.shape, t.data.data(), nullptr}});
    biref::save_safetensors(o.dump, ts,
                            {{"source", o.image},
                             {"model", o.model},
                             {"size", std::to_string(W) + "x" + std::to_string(H)}});
  }
  for (const auto& [kind, path] : paths) {
    if (kind == "mask") {
      biref::write_image(path, mask);
    } else if (kind == "rgba") {
      biref::write_image(path, biref::cutout_rgba(image, mask));
    } else if (kind == "foreground") {
      biref::write_image(path, biref::cutout_rgba(biref::refine_foreground(image, mask), mask));
    } else {
      biref::write_image(
          path, biref::composite(image, mask, bg, o.bg_image.empty() ? nullptr : &background));
    }
  }
  if (!o.quiet) {
    using ms = std::chrono::duration<double, std::milli>;
    std::fprintf(stderr, "%s: %dx%d -> %s (%s at %dx%d on %s; load %.0f ms, run %.0f ms)\n",
                 o.image.c_str(), image.width, image.height,
                 paths.size() == 1 ? paths[0].second.c_str() : o.output.c_str(),
                 model->info().backbone.c_str(), W, H, model->info().device.c_str(),
                 ms(t1 - t0).count(), ms(t2 - t1).count());
  }
  return 0;
}

}  // namespace

BIREF_COMMAND(
    segment, "Segment an image: its mask, cut-out, refined foreground or composite",
    [](CLI::App& app) -> biref::cli::RunFn {
      auto o = std::make_shared<SegmentOptions>();
      app.add_option("image", o->image, "input image (JPEG, PNG, WebP, TIFF, BMP, PNM)")
          ->required();
      app.add_option("-o,--out", o->output,
                     "output file (one kind), or folder: OUT/<stem>.<kind>.png")
          ->required();
      app.add_option("-m,--model", o->model,
                     "checkpoint (.safetensors / .pth), zoo name (see `biref models`), "
                     "hf:ORG/REPO[:FILE], or synthetic:BACKBONE[:SEED]")
          ->required();
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
                     "composite background image (resized to the image)");
      app.add_option("--max-pixels", o->max_pixels,
                     "--size dynamic: larger images are scaled down to this many model "
                     "input pixels, keeping the aspect ratio")
          ->capture_default_str();
      app.add_option("-t,--threads", o->threads, "threads (0: all cores)");
      biref::cli::add_max_image_pixels(app, o->max_image_pixels);
      app.add_flag("-q,--quiet", o->quiet, "print nothing on success");
      app.add_option("--dump", o->dump,
                     "also write the named intermediates (bb.full.x1 ... out) to this "
                     ".safetensors file, for debugging against the official model");
      return [o] { return run_segment(*o); };
    });
