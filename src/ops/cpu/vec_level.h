// The vector of one instruction-set level: kLanes floats in one register (16 at AVX-512, 8 at
// AVX2, 4 at the SSE baseline), for register tiles sized to the level. Include after
// isa_begin.h: everything here lives in the level's namespace. (vec_math.h's v16 is 64 bytes at
// every level; below AVX-512 GCC lowers its operations piecewise, through memory.)
#pragma once
#if !defined(BIREF_ISA)
#error "vec_level.h belongs to a kernel source compiled per instruction set (isa_begin.h)"
#endif

#include <cstddef>
#include <utility>

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

// transpose(r): the kLanes×kLanes matrix of 4-byte lanes held in r[0..kLanes) transposed in
// registers, log2(kLanes) rounds of two-register shuffles. Bits are moved as they are, so the
// lanes may hold any 32-bit data (pairs of bfloat16 in attention_bf16.cpp). One step swaps bit T
// of the row index with bit T of the column index, for the row pair (a, b) that differ in that
// bit; after every bit, row i holds column i.
template <int T, size_t... I>
[[gnu::always_inline]] inline void swap_index_bit(vec& a, vec& b, std::index_sequence<I...>) {
  constexpr int s = 1 << T;
  const vec lo = __builtin_shufflevector(a, b, (((I >> T) & 1) ? int(kLanes + I - s) : int(I))...);
  const vec hi = __builtin_shufflevector(a, b, (((I >> T) & 1) ? int(kLanes + I) : int(I + s))...);
  a = lo;
  b = hi;
}

template <int T = 0>
[[gnu::always_inline]] inline void transpose(vec (&r)[kLanes]) {
  if constexpr ((1 << T) < kLanes) {
    for (int i = 0; i < kLanes; ++i)
      if (!(i & (1 << T)))
        swap_index_bit<T>(r[i], r[i | (1 << T)], std::make_index_sequence<kLanes>{});
    transpose<T + 1>(r);
  }
}

}  // namespace biref::cpu::BIREF_ISA
