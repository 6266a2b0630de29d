// Elementwise math that GCC vectorises inside `#pragma omp simd` loops (std::exp does not,
// without -ffast-math, and costs more than the whole attention matmul it serves).
#pragma once
#include <bit>
#include <cstdint>

namespace biref::cpu {

// e^x for x in [-87, 88] (inputs below are clamped: result ~1e-38, not 0 — callers that need an
// exact zero select it themselves). Cody-Waite range reduction and a degree-6 polynomial:
// relative error < 2e-7 (tested against std::exp).
#pragma omp declare simd notinbranch
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;   // ln 2, high part (exact product)
  r = r - n * -2.12194440e-4f;      // ln 2, low part
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
