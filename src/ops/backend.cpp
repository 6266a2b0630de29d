#include "core/check.h"
#include "ops/ops.h"

namespace biref {

WindowGeometry window_geometry(int h, int w, int window, int shift) {
  BIREF_CHECK(window > 0 && shift >= 0 && shift < window, "bad window ", window, " / shift ",
              shift);
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

const float* Conv2d::folded_weight(HugeBuffer& buffer) const {
  BIREF_CHECK(has_weight(), "layer '", name, "' has no weights (released before packing)");
  if (mapped_weight.empty() || mapped_scale.empty()) return weight_data();
  BIREF_CHECK(mapped_scale.size() == size_t(out), "layer '", name, "': ", mapped_scale.size(),
              " BatchNorm factors for ", out, " outputs");
  const size_t per_out = mapped_weight.size / size_t(out);
  float* dst = buffer.get(mapped_weight.size);
  for (int o = 0; o < out; ++o) {
    // the same arithmetic as folding in place at build time (WeightReader::fold_bn)
    const double s = mapped_scale[size_t(o)];
    const float* src = mapped_weight.data + size_t(o) * per_out;
    for (size_t i = 0; i < per_out; ++i) dst[size_t(o) * per_out + i] = float(src[i] * s);
  }
  return dst;
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

bool Backend::fused_mlp(const Linear&, const Linear&, const float*, int64_t, float*) {
  return false;
}

void Backend::conv_pair(const Conv2d& a, const Conv2d& b, const Tensor& x, Tensor& y) {
  Tensor mid = Tensor::empty({x.dim(0), (x.dim(1) + 2 * a.pad - a.k) / a.stride + 1,
                              (x.dim(2) + 2 * a.pad - a.k) / a.stride + 1, int64_t(a.out)});
  conv2d(a, x, mid);
  conv2d(b, mid, y);
}

}  // namespace biref
