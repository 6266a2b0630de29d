// The official image pipeline around the model: decode, resize the 8-bit image to the model
// size, normalise; and back: sigmoid, align_corners resize, 8-bit mask (docs in README.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "biref/biref.h"
#include "biref/image.h"

namespace biref {

// RGB image -> model input [1, 3, height, width]: cv::resize INTER_LINEAR on the 8-bit image,
// v/255, ImageNet mean/std.
HostTensor preprocess(const Image& rgb, int width, int height);

// Logits [1, 1, h, w] -> sigmoid -> bilinear align_corners=True to out_w × out_h ->
// probabilities in [0, 1] (row-major, out_h × out_w).
std::vector<float> probabilities(const HostTensor& logits, int out_w, int out_h);
// round(255·p), half away from zero, clamped: a 1-channel image.
Image mask_from_probabilities(const std::vector<float>& prob, int width, int height);

// The official refine_foreground ("blur fusion" foreground estimation, box blurs of r = 90 then
// r = 6): the colours of the foreground of `rgb` under `mask` (one channel, the image's size),
// with the background's colour bleeding removed at the edges. Returns RGB; paired with the mask
// as alpha it is the cut-out. O(pixels) whatever the radius, multi-threaded.
Image refine_foreground(const Image& rgb, const Image& mask);

// The whole path: image -> mask at the image's size, the model run at width × height.
Image segment(Model& model, const Image& rgb, int width, int height);

}  // namespace biref
