// Elementwise math that GCC vectorises inside `#pragma omp simd` loops (std::exp does not,
// without -ffast-math, and costs more than the whole attention matmul it serves).
#pragma once
#include <cstdint>
#include <type_traits>

namespace biref::cpu {

// 16 floats in one register (one AVX-512 register; two AVX2 ones elsewhere), GCC/Clang vector
// extensions. Loaded and stored through v16_at(p), an unaligned view of the 16 floats at p
// (*v16_at(p) reads them, *v16_at(p) = v writes them): a pointer, never a vector passed to or
// returned from a function, so each kernel keeps its own level's registers (clang refuses, and
// GCC warns about, 64-byte vectors across calls below AVX-512).
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
[[gnu::always_inline]] inline v16u* v16_at(float* p) {
  return reinterpret_cast<v16u*>(p);
}
[[gnu::always_inline]] inline const v16u* v16_at(const float* p) {
  return reinterpret_cast<const v16u*>(p);
}

// e^x for x already in [-87, 88], for a float (I: int32_t) or a vector of floats (I: the vector
// of int32_t of its width): n = round(x / ln 2) by the 1.5·2^23 trick (floorf would stop the
// loop from vectorising), r = x − n·ln 2 in two parts (Cody-Waite), e^r by a degree-6
// polynomial, 2^n into the exponent bits.
template <class T, class I>
[[gnu::always_inline]] inline T exp_clamped(T x) {
  const T n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  T r = x - n * 0.693359375f;   // ln 2, high part (exact product)
  r = r - n * -2.12194440e-4f;  // ln 2, low part
  T p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  I i;
  if constexpr (std::is_same_v<T, float>)
    i = I(n);
  else
    i = __builtin_convertvector(n, I);
  return p * __builtin_bit_cast(T, (i + 127) << 23);
}

// e^x for x in [-87, 88] (inputs below are clamped: result ~1e-38, not 0 — callers that need an
// exact zero select it themselves; a NaN stays NaN): relative error below 1e-7 (measured 8e-8 in
// tests/test_ops.cpp).
[[gnu::always_inline]] inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  return exp_clamped<float, int32_t>(x);
}

}  // namespace biref::cpu
