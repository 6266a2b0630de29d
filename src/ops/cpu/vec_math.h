// Elementwise math that GCC vectorises inside `#pragma omp simd` loops (std::exp does not,
// without -ffast-math, and costs more than the whole attention matmul it serves).
#pragma once
#include <bit>
#include <cstdint>

namespace biref::cpu {

// 16 floats in one register (one AVX-512 register; two AVX2 ones elsewhere), GCC/Clang vector
// extensions, loaded and stored without alignment requirements.
// These are defined at the baseline (outside any isa_begin.h region) and always inlined into the
// kernels, which vectorise them at their own level.
// (-Wpsabi: passing them would change the ABI below AVX-512; inlined, nothing is passed.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v16 __attribute__((vector_size(64)));
[[gnu::always_inline]] inline v16 load16(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
[[gnu::always_inline]] inline void store16(float* p, v16 v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// e^x for x in [-87, 88] (inputs below are clamped: result ~1e-38, not 0 — callers that need an
// exact zero select it themselves). Cody-Waite range reduction and a degree-6 polynomial:
// relative error below 1e-7 (measured 8e-8 in tests/test_ops.cpp).
[[gnu::always_inline]] inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // n = round(x / ln 2) by the 1.5·2^23 trick (floorf would stop the loop from vectorising)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;  // ln 2, high part (exact product)
  r = r - n * -2.12194440e-4f;     // ln 2, low part
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

}  // namespace biref::cpu
