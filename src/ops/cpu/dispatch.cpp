// The run-time choice of the CPU kernels' instruction set (kernels.h), and oneDNN's with it.
#include <oneapi/dnnl/dnnl.hpp>
#include <string>

#include "core/check.h"
#include "ops/cpu/kernels.h"

namespace biref::cpu {

const Kernels& kernels(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::generic:
      return generic::table;
    case CpuIsa::avx2:
      return avx2::table;
    case CpuIsa::avx512:
    case CpuIsa::avx512_bf16:
      break;
  }
  return avx512::table;
}

const Kernels& kernels() {
  static const Kernels& k = kernels(cpu_isa());
  return k;
}

void limit_onednn_isa() {
  static const bool done = [] {
    const CpuIsa isa = cpu_isa();
    if (isa == cpu_isa_supported()) return true;
    // Before oneDNN generates any code: it picks its kernels from its own CPUID reading.
    const dnnl::cpu_isa max = isa == CpuIsa::generic  ? dnnl::cpu_isa::sse41
                              : isa == CpuIsa::avx2   ? dnnl::cpu_isa::avx2
                              : isa == CpuIsa::avx512 ? dnnl::cpu_isa::avx512_core
                                                      : dnnl::cpu_isa::all;
    const dnnl_status_t st = dnnl_set_max_cpu_isa(static_cast<dnnl_cpu_isa_t>(max));
    // Refused once oneDNN has chosen (a model loaded before): it then keeps the ISA it has.
    return st == dnnl_success;
  }();
  (void)done;
}

std::string onednn_isa_name() {
  limit_onednn_isa();
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
      return "sse41";
    case dnnl_cpu_isa_avx:
      return "avx";
    case dnnl_cpu_isa_avx2:
      return "avx2";
    case dnnl_cpu_isa_avx2_vnni:
      return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core:
      return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other";
  }
}

}  // namespace biref::cpu
