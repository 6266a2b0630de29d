// Exact Euclidean feature transform, equal to scipy.ndimage.distance_transform_edt(input,
// return_indices=True) including its choice among equally near candidates.
#pragma once
#include <cstdint>

namespace biref::eval {

// For every pixel of an H×W row-major image, the linear index (row·W + col) of the nearest
// feature pixel (feature[i] != 0; scipy's features are the zero pixels of its input), or -1 when
// the image has no feature at all. With `dist2`, also the squared distance to it (-1 without;
// 32 bits: sides below 32768 px).
//
// The algorithm is scipy's (Maurer et al. 2003, two separable passes): first along each column,
// the nearest feature in that column (ties: the smaller row); then along each row, the lower
// envelope of the per-column candidates, keeping a dominated candidate on an exact tie and moving
// to a later candidate only when it is strictly nearer. So on ties the earlier column wins. All
// arithmetic is in 64-bit integers, which is exact where scipy's doubles are exact too.
void nearest_feature(const uint8_t* feature, int height, int width, int32_t* nearest,
                     int32_t* dist2 = nullptr);

}  // namespace biref::eval
