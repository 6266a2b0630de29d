#include "core/half.h"

namespace biref {

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (a < 0x38800000u) {                        // below the smallest normal half: subnormal
    if (a < 0x33000000u) return sign;            // rounds to zero
    uint32_t man = (a & 0x7fffffu) | 0x800000u;
    int drop = 126 - int(a >> 23);  // value = man * 2^(exp-150); half subnormal unit = 2^-24
    uint32_t res = man >> drop;
    uint32_t rem = man & ((1u << drop) - 1);
    uint32_t half = 1u << (drop - 1);
    if (rem > half || (rem == half && (res & 1u))) ++res;
    return sign | uint16_t(res);
  }
  uint32_t res = ((a >> 23) - 112) << 10 | ((a >> 13) & 0x3ffu);
  uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (res & 1u))) ++res;
  return sign | uint16_t(res);
}

}  // namespace biref
