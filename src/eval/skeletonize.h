// 2-D skeletonisation equal to scikit-image's skeletonize() (its lookup-table variant of
// Zhang-Suen thinning), which the official HCE metric applies to the GT.
#pragma once
#include <cstdint>

namespace biref::eval {

// in: H×W row-major, nonzero = foreground. out: H×W, 1 on the skeleton, else 0 (may alias in).
void skeletonize(const uint8_t* in, int height, int width, uint8_t* out);

// The removal class scikit-image assigns to a 3×3 neighbourhood code (1·NW + 2·N + 4·NE + 8·E +
// 16·SE + 32·S + 64·SW + 128·W): 0 keep, 1 removable in the first sub-pass, 2 in the second,
// 3 in both.
int skeleton_removal_class(int code);

}  // namespace biref::eval
