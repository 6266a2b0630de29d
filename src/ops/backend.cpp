#include "core/check.h"
#include "ops/ops.h"

namespace biref {

WindowGeometry window_geometry(int h, int w, int window, int shift) {
  BIREF_CHECK(window > 0 && shift >= 0 && shift < window, "bad window ", window, " / shift ", shift);
  WindowGeometry g;
  g.window = window;
  g.shift = shift;
  g.h = h;
  g.w = w;
  g.hp = (h + window - 1) / window * window;
  g.wp = (w + window - 1) / window * window;
  g.row0 = 0;
  g.rows = g.nwh();
  return g;
}

}  // namespace biref

namespace biref {

void Backend::aspp_deformable(const std::array<const DeformConv*, 4>& branches,
                              const std::array<const Tensor*, 4>& offset_masks, const Tensor& x,
                              const Tensor& pooled, const Conv2d& conv1, Tensor& y) {
  const int planes = branches[0]->regular.out;
  Tensor cat = Tensor::empty({x.dim(0), x.dim(1), x.dim(2), 5 * int64_t(planes)});
  for (int i = 0; i < 4; ++i) deform_conv(*branches[i], x, *offset_masks[i], cat, i * planes);
  broadcast_channels(pooled, cat, 4 * planes);
  conv2d(conv1, cat, y);
}

void Backend::conv_pair(const Conv2d& a, const Conv2d& b, const Tensor& x, Tensor& y) {
  Tensor mid = Tensor::empty({x.dim(0), (x.dim(1) + 2 * a.pad - a.k) / a.stride + 1,
                              (x.dim(2) + 2 * a.pad - a.k) / a.stride + 1, int64_t(a.out)});
  conv2d(a, x, mid);
  conv2d(b, mid, y);
}

}  // namespace biref
