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
  return g;
}

}  // namespace biref
