// Which instruction set biref's own CPU kernels use.
//
// The build targets a baseline x86-64; the hot kernels are compiled once per instruction set and
// the best one this CPU supports is chosen at run time from CPUID (oneDNN dispatches its own
// kernels the same way). BIREF_ISA=generic|avx2|avx512|avx512_bf16 in the environment forces a
// lower path, for oneDNN too: to measure it, or to rule it out.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace biref {

// In increasing order; each level includes the ones below it.
enum class CpuIsa {
  generic,      // baseline x86-64 (SSE2)
  avx2,         // AVX2, FMA, F16C
  avx512,       // AVX-512 F, BW, DQ, VL
  avx512_bf16,  // and AVX512_BF16 (vdpbf16ps)
};

// "generic", "avx2", "avx512", "avx512_bf16"
const char* cpu_isa_name(CpuIsa isa);
std::optional<CpuIsa> parse_cpu_isa(std::string_view name);

// The highest level this CPU and its operating system support (CPUID, XGETBV).
CpuIsa cpu_isa_supported();
// The level the kernels use: the supported one, or the one BIREF_ISA names. Throws biref::Error
// when BIREF_ISA is not a level's name or is above what this CPU supports. Read once.
CpuIsa cpu_isa();
// One line: "avx512_bf16 (the best this CPU supports)" or "avx2 (BIREF_ISA; this CPU:
// avx512_bf16)".
std::string describe_cpu_isa();

// The level `value` (BIREF_ISA's text, null when unset) selects on a CPU supporting
// `supported`; throws biref::Error naming the value when it is unknown or too high.
CpuIsa select_cpu_isa(const char* value, CpuIsa supported);

}  // namespace biref
