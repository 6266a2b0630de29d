#include "eval/distance_transform.h"

#include <cstddef>
#include <vector>

namespace biref::eval {

void nearest_feature(const uint8_t* feature, int height, int width, int32_t* nearest) {
  const int64_t H = height, W = width;
  // Pass 1 (along columns). below[y·W + x]: the smallest feature row >= y in column x, or -1.
  std::vector<int32_t> below(static_cast<size_t>(H * W));
  {
    std::vector<int32_t> next(static_cast<size_t>(W), -1);
    for (int64_t y = H - 1; y >= 0; --y) {
      const uint8_t* f = feature + y * W;
      int32_t* b = below.data() + y * W;
      for (int64_t x = 0; x < W; ++x) {
        if (f[x]) next[x] = int32_t(y);
        b[x] = next[x];
      }
    }
  }
  std::vector<int32_t> above(static_cast<size_t>(W),
                             -1);  // the largest feature row <= y in column x
  std::vector<int32_t> cand(
      static_cast<size_t>(W));  // pass-1 result of the current row: a row or -1
  std::vector<int32_t> env(static_cast<size_t>(W));  // pass 2: the columns on the lower envelope
  for (int64_t y = 0; y < H; ++y) {
    const uint8_t* f = feature + y * W;
    const int32_t* b = below.data() + y * W;
    for (int64_t x = 0; x < W; ++x) {
      if (f[x]) above[x] = int32_t(y);
      const int32_t up = above[x], down = b[x];
      if (up < 0) {
        cand[x] = down;
      } else if (down < 0) {
        cand[x] = up;
      } else {
        cand[x] = (y - up <= down - y) ? up : down;  // the earlier (smaller) row on a tie
      }
    }
    // Pass 2 (along the row): candidate x is the point (cand[x], x); its squared distance to
    // (y, i) is (cand[x] - y)² + (x - i)².
    int64_t l = -1;
    for (int64_t x = 0; x < W; ++x) {
      if (cand[x] < 0) continue;
      const int64_t wR = (int64_t(cand[x]) - y) * (cand[x] - y);
      while (l >= 1) {
        const int64_t i1 = env[l], i2 = env[l - 1];
        const int64_t a = i1 - i2, bb = x - i1, c = a + bb;
        const int64_t uR = (int64_t(cand[i2]) - y) * (cand[i2] - y);
        const int64_t vR = (int64_t(cand[i1]) - y) * (cand[i1] - y);
        // Drop the middle candidate only when it is strictly hidden by its two neighbours.
        if (c * vR - bb * uR - a * wR - a * bb * c <= 0) break;
        --l;
      }
      env[++l] = int32_t(x);
    }
    int32_t* out = nearest + y * W;
    if (l < 0) {
      for (int64_t x = 0; x < W; ++x) out[x] = -1;
      continue;
    }
    const int64_t maxl = l;
    l = 0;
    for (int64_t i = 0; i < W; ++i) {
      auto dist2 = [&](int64_t k) {
        const int64_t col = env[k], dr = cand[col] - y, dc = col - i;
        return dr * dr + dc * dc;
      };
      int64_t d1 = dist2(l);
      while (l < maxl) {
        const int64_t d2 = dist2(l + 1);
        if (d1 <= d2) break;
        d1 = d2;
        ++l;
      }
      const int64_t col = env[l];
      out[i] = int32_t(int64_t(cand[col]) * W + col);
    }
  }
}

}  // namespace biref::eval
