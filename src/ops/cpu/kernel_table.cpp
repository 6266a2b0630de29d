// The table of this level's kernels (compiled once per level, like the kernels themselves).
#include "ops/cpu/kernels.h"

#if defined(BIREF_ISA_AVX512)
#define BIREF_ISA_LEVEL CpuIsa::avx512
#elif defined(BIREF_ISA_AVX2)
#define BIREF_ISA_LEVEL CpuIsa::avx2
#else
#define BIREF_ISA_LEVEL CpuIsa::generic
#endif

namespace biref::cpu::BIREF_ISA {

const Kernels table = {
    BIREF_ISA_LEVEL,
#define BIREF_KERNEL(name) &name,
#include "ops/cpu/kernel_names.h"
#undef BIREF_KERNEL
};

}  // namespace biref::cpu::BIREF_ISA
