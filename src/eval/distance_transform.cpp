#include "eval/distance_transform.h"

#include <cstddef>
#include <vector>

#include "core/check.h"

namespace biref::eval {

void nearest_feature(const uint8_t* feature, int height, int width, int32_t* nearest,
                     int32_t* dist2) {
  // Indices and squared distances are kept in 32 bits.
  BIREF_CHECK(height >= 0 && width >= 0 && height < 32768 && width < 32768,
              "distance transform of a ", width, "x", height,
              " image (sides from 0 to 32767 pixels)");
  BIREF_CHECK((feature && nearest) || int64_t(height) * width == 0,
              "distance transform without image or output");
  const int64_t H = height, W = width;
  // Pass 1 (along columns). below[y·W + x]: the smallest feature row >= y in column x, or -1.
  thread_local std::vector<int32_t> below;  // reused per thread: no fresh pages per image
  below.resize(size_t(H * W));
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
  std::vector<int32_t> above(static_cast<size_t>(W), -1);  // largest feature row <= y, per column
  std::vector<int32_t> cand(static_cast<size_t>(W));       // pass-1 result of this row: a row or -1
  // Pass 2: the lower envelope, as (column, squared row distance to y, row) per entry.
  std::vector<int64_t> env_col(static_cast<size_t>(W)), env_h(static_cast<size_t>(W));
  std::vector<int32_t> env_row(static_cast<size_t>(W));
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
        const int64_t a = env_col[l] - env_col[l - 1], bb = x - env_col[l], c = a + bb;
        // Drop the middle candidate only when it is strictly hidden by its two neighbours.
        if (c * env_h[l] - bb * env_h[l - 1] - a * wR - a * bb * c <= 0) break;
        --l;
      }
      ++l;
      env_col[l] = x;
      env_h[l] = wR;
      env_row[l] = cand[x];
    }
    int32_t* out = nearest + y * W;
    int32_t* out_d2 = dist2 ? dist2 + y * W : nullptr;
    if (l < 0) {
      for (int64_t x = 0; x < W; ++x) out[x] = -1;
      if (out_d2)
        for (int64_t x = 0; x < W; ++x) out_d2[x] = -1;
      continue;
    }
    const int64_t maxl = l;
    l = 0;
    for (int64_t i = 0; i < W; ++i) {
      int64_t d1 = env_h[l] + (env_col[l] - i) * (env_col[l] - i);
      while (l < maxl) {
        const int64_t d2 = env_h[l + 1] + (env_col[l + 1] - i) * (env_col[l + 1] - i);
        if (d1 <= d2) break;  // move on only when strictly nearer
        d1 = d2;
        ++l;
      }
      out[i] = int32_t(int64_t(env_row[l]) * W + env_col[l]);
      if (out_d2) out_d2[i] = int32_t(d1);
    }
  }
}

}  // namespace biref::eval
