// Export a BiRefNet checkpoint to an ONNX graph, written directly from biref's model (no Python,
// no PyTorch): standard ONNX ops that ONNX Runtime and TensorRT implement, the modulated
// deformable convolution decomposed into GridSample + a 1×1 Conv by default.
//
//   biref::OnnxExportOptions o;
//   o.height = o.width = 1024;
//   biref::OnnxExportReport r = biref::export_onnx("BiRefNet-general-epoch_244.pth",
//   "general.onnx", o);
//
// The graph: input "input_image" [batch, 3, H, W] float32, ImageNet-normalised RGB (the official
// export's names and layout); output "output_image" [batch, 1, H, W] float32 logits (the mask is
// sigmoid(logits)). The batch is always a symbolic axis; with `dynamic` so are H and W (multiples
// of 32): the window padding, the shift masks and every resize are computed from the runtime shape.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace biref {

enum class OnnxDtype {
  f32,  // float32 throughout
  f16,  // weights and activations in float16; LayerNorm, attention scores and softmax, the
        // sigmoids and the deformable sampling in float32; input and output float32
};

enum class OnnxDeform {
  decomposed,  // bilinear sampling by GridSample (opset 16), modulation, then a 1×1 Conv
  native,      // the opset-19 DeformConv op, for runtimes that implement it
};

struct OnnxExportOptions {
  int64_t height = 1024, width = 1024;  // multiples of 32; the example size with `dynamic`
  bool dynamic = false;                 // H and W symbolic ("height", "width")
  OnnxDtype dtype = OnnxDtype::f32;
  OnnxDeform deform = OnnxDeform::decomposed;
  int opset = 0;  // 0: 17 (decomposed), 19 (native)
  // Verify the written graph with the ONNX checker and strict shape inference (type checks,
  // node-level errors thrown); skipped only for opsets newer than the ONNX library knows.
  bool check = true;
};

struct OnnxExportReport {
  std::string backbone;  // "swin_v1_t", ...
  int opset = 0;
  int64_t nodes = 0, initializers = 0;
  int64_t bytes = 0;                            // size of the written file
  double seconds = 0;                           // load, build, write and check
  bool checked = false;                         // the checker and shape inference ran and passed
  std::string check_note;                       // why not, when not
  std::map<std::string, std::string> metadata;  // what the file's metadata_props carry
};

// Loads `source` (any form Model::load takes: a file, a zoo name, "synthetic:swin_v1_t") and
// writes the graph to `out_path` (atomically: a temporary file renamed into place). Throws
// biref::Error naming the bad option, the checkpoint or the check that failed.
OnnxExportReport export_onnx(const std::string& source, const std::string& out_path,
                             const OnnxExportOptions& options);

// The opset a build's ONNX library checks (17 with Debian 12's ONNX 1.12).
int onnx_max_checked_opset();

}  // namespace biref
