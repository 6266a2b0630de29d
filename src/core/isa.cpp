#include "biref/isa.h"

#include <cstdlib>

#include "core/check.h"

namespace biref {

namespace {

constexpr const char* kNames[] = {"generic", "avx2", "avx512", "avx512_bf16"};

CpuIsa detect() {
  // libgcc's CPUID reader also checks that the OS saves the AVX and AVX-512 registers (XGETBV).
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return CpuIsa::generic;
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")))
    return CpuIsa::avx2;
  if (!__builtin_cpu_supports("avx512bf16")) return CpuIsa::avx512;
  return CpuIsa::avx512_bf16;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  return kNames[int(isa)];
}

std::optional<CpuIsa> parse_cpu_isa(std::string_view name) {
  for (int i = 0; i < 4; ++i)
    if (name == kNames[i]) return CpuIsa(i);
  return std::nullopt;
}

CpuIsa cpu_isa_supported() {
  static const CpuIsa isa = detect();
  return isa;
}

CpuIsa select_cpu_isa(const char* value, CpuIsa supported) {
  if (value == nullptr || *value == '\0') return supported;
  const std::optional<CpuIsa> isa = parse_cpu_isa(value);
  BIREF_CHECK(isa.has_value(), "BIREF_ISA='", value,
              "' is not an instruction set biref knows: generic, avx2, avx512 or avx512_bf16");
  BIREF_CHECK(*isa <= supported, "BIREF_ISA='", value, "' is above what this CPU supports (",
              cpu_isa_name(supported), ")");
  return *isa;
}

CpuIsa cpu_isa() {
  static const CpuIsa isa = select_cpu_isa(std::getenv("BIREF_ISA"), cpu_isa_supported());
  return isa;
}

std::string describe_cpu_isa() {
  const CpuIsa isa = cpu_isa(), best = cpu_isa_supported();
  if (isa == best) return str_cat(cpu_isa_name(isa), " (the best this CPU supports)");
  return str_cat(cpu_isa_name(isa), " (BIREF_ISA; this CPU: ", cpu_isa_name(best), ")");
}

}  // namespace biref
