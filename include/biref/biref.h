// biref — BiRefNet (Bilateral Reference Network) in native C++.
//
//   auto model = biref::Model::load("BiRefNet.safetensors");   // or "synthetic:swin_v1_t"
//   biref::HostTensor logits = model->forward(input);          // [B, 3, H, W] -> [B, 1, H, W]
//
// The configuration (backbone, window, widths) is detected from the checkpoint. H and W must be
// multiples of 32. Errors are thrown as biref::Error with a message naming the bad input.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "biref/error.h"
#include "biref/isa.h"

namespace biref {

// A dense row-major float tensor in host memory.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  // Throws biref::Error on a negative dimension or a product that overflows 64 bits.
  int64_t numel() const;
};

enum class Device {
  Cpu,        // oneDNN + biref's vectorised kernels (the default)
  Reference,  // naive loops in double: slow, the oracle the fast kernels are tested against
};

// The arithmetic of the CPU backend's matrix products.
enum class Precision {
  fp32,  // float32 throughout (the default): the official model to float precision
  bf16,  // linears, 1×1 convolutions and the deformable convolutions' GEMM with weights and
         // activations in bfloat16, products summed in float32 (AVX512_BF16 only); LayerNorm,
         // attention, softmax, the other convolutions and the residual sums in float32
};
// "fp32", "bf16"; parse_precision throws biref::Error naming an unknown value.
const char* precision_name(Precision p);
Precision parse_precision(const std::string& name);

struct LoadOptions {
  Device device = Device::Cpu;
  // bf16 needs a CPU with AVX512_BF16 (biref/isa.h: cpu_isa() == avx512_bf16) and the CPU
  // device; otherwise Model::load throws biref::Error saying so.
  Precision precision = Precision::fp32;
  // Threads for the CPU backend. 0: automatic (biref/threads.h): up to the CPUs the process may
  // use (affinity mask, cgroup quota; OMP_NUM_THREADS fixes it), and before each pass fewer when
  // other processes are using some of them. N: always N. The count applies to the thread that
  // calls forward() for the duration of the call.
  int threads = 0;
  // Swin blocks run their attention (in bands of window rows) and their MLP over about this many
  // tokens at a time: fewer is less memory at large inputs (the MLP's hidden layer holds 4·C
  // floats per token, qkv 3·C), more is larger matmuls.
  int64_t band_tokens = 32768;
  // The instruction set of biref's own CPU kernels (biref/isa.h): cpu_isa() when unset, else
  // this level (at most cpu_isa_supported()). oneDNN's level is the process's (BIREF_ISA).
  std::optional<CpuIsa> isa;
  // Keep the CPU backend's packed FP32 weights in a cache file (under biref's cache folder:
  // $BIREF_CACHE, else $XDG_CACHE_HOME/biref, else ~/.cache/biref; in packed/, one file per
  // checkpoint path and instruction set) and read them from there the next time this
  // checkpoint file is loaded by the same build of biref, instead of packing 170 MB
  // (swin_v1_t): mapped in place where the page cache has huge pages, else copied.
  // BIREF_WEIGHT_CACHE=0 (or off, no, false) in the environment turns it off as well.
  bool weight_cache = true;
};

struct StageTiming {
  std::string name;  // "backbone.full", "backbone.half", "squeeze", "decoder"
  double ms = 0;
};

struct ModelInfo {
  std::string source;       // path or "synthetic:..."
  std::string format;       // "safetensors", "pth", "synthetic"
  std::string backbone;     // "swin_v1_t", ...
  std::string description;  // the full detected configuration
  std::string device;       // the backend that runs it
  std::string isa;          // the CPU kernels' instruction set ("avx512"); "" on the reference
  std::string precision;    // "fp32" or "bf16"
  int64_t parameters = 0;   // parameters used at inference
  std::string threads;      // how the thread count is chosen, e.g. "automatic, up to 2: ..."
  // Where Model::load spent its time: "read" (open the file, parse its header or pickle, detect
  // the configuration, check every tensor), "build" (the module tree, BatchNorm folded), "pack"
  // (the backend's own copies of the weights).
  std::vector<StageTiming> load_stages;
  // What became of the packed-weight cache (LoadOptions::weight_cache): "read from PATH (...)",
  // "written to PATH (...)", "not written (...)", or "off (why)"; "" on the reference device.
  std::string weight_cache;
};

class Model {
 public:
  static std::unique_ptr<Model> load(const std::string& source, const LoadOptions& options = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  ModelInfo info() const;

  // Another model on the same weights, for another thread. The loaded and packed weights are
  // shared (read-only, one copy however many forks); the fork has its own activation memory,
  // primitive cache and scratch. A model runs one forward at a time; its forks run concurrently.
  // The weights are freed with the last model that uses them.
  std::unique_ptr<Model> fork() const;
  // Bytes of weights the model holds (shared with its forks).
  size_t weight_bytes() const;

  // Fixes the thread count of this model's passes (0: automatic, as LoadOptions::threads). A
  // fork starts with its parent's setting; concurrent forks should each get a fixed share, since
  // the automatic choice sees the other forks' threads as its own.
  void set_threads(int threads);
  // The threads the last forward pass ran (0 before the first).
  int last_threads() const;

  // input: [B, 3, H, W], ImageNet-normalised RGB (the PyTorch layout). Returns the logits
  // [B, 1, H, W]; the mask is sigmoid(logits).
  HostTensor forward(const HostTensor& input);
  // The same on channels-last input [B, H, W, 3]; returns logits [B, H, W, 1].
  HostTensor forward_nhwc(const HostTensor& input);

  // Called with each named intermediate (bb.full.x1..x4, bb.half.x1..x4, enc.x1..x4, squeeze,
  // dec.block4..dec.block1, out) in NCHW, for debugging and golden comparisons.
  using DumpFn = std::function<void(const std::string& name, const HostTensor& nchw)>;
  void set_dump(DumpFn fn);

  // Of the last forward call: wall time per stage, and the floating-point operations executed
  // (2 per multiply-accumulate of every convolution, linear, attention and deformable conv).
  const std::vector<StageTiming>& last_timings() const;
  double last_flops() const;
  // Per-op-kind wall time of the next forward calls (profiling adds a little overhead).
  void set_profiling(bool on);
  const std::vector<StageTiming>& last_op_profile() const;  // name "conv3x3 (x42)", ms
  // Bytes of activation memory the model keeps for reuse between calls.
  size_t activation_bytes() const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace biref
