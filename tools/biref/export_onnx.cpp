// `biref export-onnx`: any checkpoint biref loads to an ONNX graph (biref/onnx.h).
//
//   biref export-onnx --model M -o OUT.onnx [--size WxH] [--dynamic] [--dtype f32|f16]
//                     [--opset N] [--deform decomposed|native]
#include <cstdio>
#include <memory>

#include "biref/onnx.h"
#include "command.h"
#include "common.h"
#include "core/check.h"
#include "weights/zoo.h"

namespace biref::cli {
namespace {

struct ExportOnnxOptions {
  std::string model, out, size, dtype = "f32", deform = "decomposed";
  bool dynamic = false, no_check = false;
  int opset = 0;
};

int run_export_onnx(const ExportOnnxOptions& o) {
  OnnxExportOptions eo;
  // --size, else the zoo model's native size (2048x2048 for HR, ...), else 1024x1024
  std::string size = o.size;
  if (size.empty()) {
    const auto entry = zoo_find(o.model);
    size = entry ? str_cat(entry->width, "x", entry->height) : "1024x1024";
  }
  int w = 0, h = 0;
  parse_size(size, "--size", w, h);
  check_model_size(w, h, "--size");
  eo.width = w;
  eo.height = h;
  eo.dynamic = o.dynamic;
  eo.dtype = o.dtype == "f16" ? OnnxDtype::f16 : OnnxDtype::f32;
  eo.deform = o.deform == "native" ? OnnxDeform::native : OnnxDeform::decomposed;
  eo.opset = o.opset;
  eo.check = !o.no_check;
  check_not_an_input(o.out, o.model, "the model");
  const OnnxExportReport r = export_onnx(o.model, o.out, eo);
  std::printf(
      "wrote %s: BiRefNet %s, opset %d, %s, %s%s, %lld nodes, %lld initializers, %.1f MiB\n",
      o.out.c_str(), r.backbone.c_str(), r.opset, o.dtype.c_str(),
      o.dynamic ? "dynamic batch/height/width, example " : "dynamic batch, ", size.c_str(),
      static_cast<long long>(r.nodes), static_cast<long long>(r.initializers),
      double(r.bytes) / (1 << 20));
  std::printf("%s; %.2f s, peak RSS %.0f MiB\n",
              r.checked ? "ONNX checker and strict shape inference: passed" : r.check_note.c_str(),
              r.seconds, peak_rss_mb());
  return 0;
}

}  // namespace
}  // namespace biref::cli

static const bool biref_command_registered_export_onnx = biref::cli::register_command(
    "export-onnx", "Export a model to an ONNX graph (ONNX Runtime, TensorRT)",
    [](CLI::App& app) -> biref::cli::RunFn {
      auto o = std::make_shared<biref::cli::ExportOnnxOptions>();
      app.add_option("--model,-m", o->model,
                     "checkpoint (.safetensors / .pth), zoo name (see `biref models`), "
                     "hf:ORG/REPO[:FILE] or synthetic:BACKBONE")
          ->required();
      app.add_option("-o,--output", o->out, "the .onnx file to write")->required();
      app.add_option("--size", o->size,
                     "WxH, multiples of 32 (default: the zoo model's native size, else "
                     "1024x1024); with --dynamic the size the graph is checked at");
      app.add_flag("--dynamic", o->dynamic,
                   "height and width as symbolic axes (any multiple of 32); the batch is always "
                   "symbolic");
      app.add_option("--dtype", o->dtype,
                     "f32, or f16 (weights and activations; LayerNorm, softmax, sigmoids and "
                     "the deformable sampling in float32)")
          ->check(CLI::IsMember({"f32", "f16"}))
          ->capture_default_str();
      app.add_option("--opset", o->opset,
                     "ONNX opset, 17..21 (default 17; 19 with --deform native)");
      app.add_option("--deform", o->deform,
                     "decomposed (GridSample + 1x1 Conv, runs everywhere) or native (the "
                     "opset-19 DeformConv op)")
          ->check(CLI::IsMember({"decomposed", "native"}))
          ->capture_default_str();
      app.add_flag("--no-check", o->no_check,
                   "skip the ONNX checker and shape inference (large models export faster)");
      return [o] { return biref::cli::run_export_onnx(*o); };
    });
