// The CPU backend's own kernels (the ones oneDNN does not run), one file per op family:
//   attention.cpp   Swin window attention
//   conv_gemm.cpp   convolutions as a GEMM: the weight layout and tile size (the BF16 path)
//   conv_small.cpp  the same-size convolution to one channel and the image-side pair before it
//   deform.cpp      the deformable convolution's sampling and its GEMM's weight layout
//   layout.cpp      window partition / reverse, patch merging, concat, broadcast, image patches
//   pointwise.cpp   LayerNorm, resize, global average pool, residual sum, gradient gate
// (and deform_tap.h: one deformable tap's bilinear corners, shared with the BF16 columns)
// Each is compiled once per instruction set and chosen at run time (kernel_list.h,
// isa_begin.h, dispatch.cpp), and tested at every level this CPU supports against its reference
// in tests/test_ops.cpp through CpuBackend (cpu_backend.cpp), which holds the weights and
// buffers and calls oneDNN for the rest.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "biref/isa.h"
#include "core/tensor.h"
#include "ops/layers.h"
#include "ops/ops.h"

namespace biref::cpu {

// Per-thread work buffers of the kernels, grown outside parallel regions only (an exception
// inside one would terminate the process) and reused, so steady-state runs allocate nothing.
struct Scratch {
  std::vector<std::vector<float>> f;
  std::vector<std::vector<int>> i;
  std::vector<float> shared;  // one buffer for all threads, filled before a parallel region
  void reserve(int threads, size_t floats, size_t ints) {
    if (f.size() < size_t(threads)) {
      f.resize(size_t(threads));
      i.resize(size_t(threads));
    }
    for (int t = 0; t < threads; ++t) {
      if (f[t].size() < floats) f[t].assign(floats, 0.f);
      if (i[t].size() < ints) i[t].assign(ints, 0);
    }
  }
  void reserve_shared(size_t floats) {
    if (shared.size() < floats) shared.assign(floats, 0.f);
  }
};

// What the kernels of conv_small.cpp take (used to choose them, defined at the baseline).
inline bool is_same_size(const Conv2d& c) {
  return c.stride == 1 && 2 * c.pad == c.k - 1 && c.k <= 15;
}
// What conv_single_output runs: a same-size convolution to one channel.
inline bool is_single_output(const Conv2d& c) {
  return c.out == 1 && c.in % 16 == 0 && is_same_size(c);
}
// What conv_pair's banded kernel handles as its first convolution: from the image's few
// channels, to at most 256, with no activation or ReLU.
inline bool is_input_conv(const Conv2d& c) {
  return is_same_size(c) && c.in <= 4 && c.out % 16 == 0 && c.out <= 256 &&
         (c.act == Act::None || c.act == Act::Relu);
}
// The kernels of one instruction set (kernel_list.h), compiled per level from the files of
// BIREF_KERNEL_SOURCES (CMakeLists.txt, isa_begin.h).
namespace generic {
#include "ops/cpu/kernel_list.h"
}
namespace avx2 {
#include "ops/cpu/kernel_list.h"
}
namespace avx512 {
#include "ops/cpu/kernel_list.h"
}

// One level's kernels, as a table the backend calls through (kernel_table.cpp fills one per
// level). Every entry has the signature of its declaration in kernel_list.h.
struct Kernels {
  CpuIsa isa;
#define BIREF_KERNEL(name) decltype(&generic::name) name;
#include "ops/cpu/kernel_names.h"
#undef BIREF_KERNEL
};
namespace generic {
extern const Kernels table;
}
namespace avx2 {
extern const Kernels table;
}
namespace avx512 {
extern const Kernels table;
}

// The table for `isa` (avx512_bf16 uses the AVX-512 kernels), and for cpu_isa().
const Kernels& kernels(CpuIsa isa);
const Kernels& kernels();
// Caps oneDNN at cpu_isa() when BIREF_ISA forces a lower level; once per process, before the
// first primitive (later calls change nothing).
void limit_onednn_isa();
// oneDNN's level after limit_onednn_isa(): "avx512_core_bf16", "avx2", ...
std::string onednn_isa_name();

}  // namespace biref::cpu
