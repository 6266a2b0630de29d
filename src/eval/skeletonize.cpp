#include "eval/skeletonize.h"

#include <cstddef>
#include <vector>

#include "core/check.h"

namespace biref::eval {

namespace {

// scikit-image's removal table (skimage.morphology._skeletonize, versions 0.16 to 0.19), one digit
// per neighbourhood code 0..255. It is not plain Zhang-Suen (e.g. code 10 = N+E is removable,
// code 48 = SE+S is not) and not symmetric, so it is written out rather than derived: the HCE
// of the official evaluator depends on these exact skeletons.
constexpr char kRemovalTable[] =
    "00010013003110130000000020203033"
    "00000000300000000000000020003022"
    "00000000000000000000000000000000"
    "20000000200020003000000030003020"
    "00310013000000010000000000000001"
    "31000000000000002000000000000000"
    "23130013000000010000000000000000"
    "23010001000000003301000022002000";
static_assert(sizeof(kRemovalTable) == 257);

}  // namespace

int skeleton_removal_class(int code) {
  return kRemovalTable[code & 255] - '0';
}

void skeletonize(const uint8_t* in, int height, int width, uint8_t* out) {
  BIREF_CHECK(height >= 0 && width >= 0, "skeleton of a ", width, "x", height, " image");
  BIREF_CHECK((in && out) || int64_t(height) * width == 0, "skeleton without image or output");
  // A zero border of one pixel, as the reference pads, so every pixel has 8 neighbours.
  const int64_t W = width + 2, H = height + 2;
  std::vector<uint8_t> img(static_cast<size_t>(W * H), 0);
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) img[(y + 1) * W + x + 1] = in[y * width + x] ? 1 : 0;

  const int64_t off[8] = {-W - 1, -W, -W + 1, 1, W + 1, W, W - 1, -1};  // NW N NE E SE S SW W
  auto code_at = [&](int64_t i) {
    int c = 0;
    for (int k = 0; k < 8; ++k) c |= img[size_t(i + off[k])] << k;
    return c;
  };

  // Only foreground pixels with a background neighbour can be removed (the full neighbourhood,
  // code 255, is class 0), and a pixel's class changes only when a neighbour is removed. So each
  // sub-pass type t (0, 1) keeps a list of the pixels to decide: at first every boundary pixel;
  // after a sub-pass of type t only the neighbours of removed pixels are queued again (for both
  // types). A pixel off the list was already kept by a type-t sub-pass with the same
  // neighbourhood, so the result equals the reference's full scans: each sub-pass decides on a
  // snapshot, then removes.
  std::vector<int64_t> candidates[2], removed;
  std::vector<uint8_t> queued[2] = {std::vector<uint8_t>(img.size(), 0),
                                    std::vector<uint8_t>(img.size(), 0)};
  for (int64_t y = 1; y <= height; ++y)
    for (int64_t x = 1; x <= width; ++x) {
      const int64_t i = y * W + x;
      if (img[size_t(i)] && code_at(i) != 255)
        for (int t = 0; t < 2; ++t) {
          candidates[t].push_back(i);
          queued[t][size_t(i)] = 1;
        }
    }

  bool changed = true;
  while (changed) {
    changed = false;
    for (int pass = 0; pass < 2; ++pass) {
      removed.clear();
      for (int64_t i : candidates[pass]) {
        queued[pass][size_t(i)] = 0;
        if (!img[size_t(i)]) continue;  // removed by the other sub-pass type meanwhile
        const int cls = skeleton_removal_class(code_at(i));
        if (cls == 3 || (cls == 1 && pass == 0) || (cls == 2 && pass == 1)) removed.push_back(i);
      }
      candidates[pass].clear();
      if (removed.empty()) continue;
      changed = true;
      for (int64_t i : removed) img[size_t(i)] = 0;
      for (int64_t i : removed)
        for (int k = 0; k < 8; ++k) {
          const int64_t j = i + off[k];
          if (!img[size_t(j)]) continue;
          for (int t = 0; t < 2; ++t)
            if (!queued[t][size_t(j)]) {
              queued[t][size_t(j)] = 1;
              candidates[t].push_back(j);
            }
        }
    }
  }
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) out[y * width + x] = img[(y + 1) * W + x + 1];
}

}  // namespace biref::eval
