// The vector of one instruction-set level: kLanes floats in one register (16 at AVX-512, 8 at
// AVX2, 4 at the SSE baseline), for register tiles sized to the level. Include after
// isa_begin.h: everything here lives in the level's namespace. (vec_math.h's v16 is 64 bytes at
// every level; below AVX-512 GCC lowers its operations piecewise, through memory.)
#pragma once
#if !defined(BIREF_ISA)
#error "vec_level.h belongs to a kernel source compiled per instruction set (isa_begin.h)"
#endif

namespace biref::cpu::BIREF_ISA {

#if defined(BIREF_ISA_AVX512) || defined(BIREF_ISA_AVX512_BF16)
constexpr int kLanes = 16;
#elif defined(BIREF_ISA_AVX2)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float vec __attribute__((vector_size(4 * kLanes)));
typedef float vec_u __attribute__((vector_size(4 * kLanes), aligned(4), may_alias));
// *at(p) reads the kLanes floats at p, *at(p) = v writes them (no alignment needed).
[[gnu::always_inline]] inline vec_u* at(float* p) {
  return reinterpret_cast<vec_u*>(p);
}
[[gnu::always_inline]] inline const vec_u* at(const float* p) {
  return reinterpret_cast<const vec_u*>(p);
}

}  // namespace biref::cpu::BIREF_ISA
