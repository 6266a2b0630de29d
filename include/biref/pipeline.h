// The official image pipeline around the model: decode, resize the 8-bit image to the model
// size, normalise; and back: sigmoid, align_corners resize, 8-bit mask (docs in README.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "biref/biref.h"
#include "biref/image.h"

namespace biref {

// How an image is brought to the model size.
enum class InputResize {
  // cv::resize INTER_LINEAR on the 8-bit image: the official fixed-size inference.
  OpenCvBilinear,
  // Pillow's default resize (bicubic, antialiased), only when the size changes: the official
  // dynamic-size inference (`--resolution None`).
  PillowBicubic,
};

// RGB image -> model input [1, 3, height, width]: the 8-bit image resized, v/255, ImageNet
// mean/std.
HostTensor preprocess(const Image& rgb, int width, int height,
                      InputResize resize = InputResize::OpenCvBilinear);

// The model size of the dynamic-size inference for an image of width x height: each side floored
// to a multiple of 32 (w // 32 * 32, as the official code), at least 32; when that exceeds
// `max_pixels` (0: no cap), first scaled down keeping the aspect ratio.
void dynamic_model_size(int width, int height, int64_t max_pixels, int& model_w, int& model_h);

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

// ---- What a mask is turned into ----

// An sRGB colour: "#RRGGBB", "#RGB", "R,G,B" (0..255 each), or white, black, gray, red, green,
// blue. Throws biref::Error naming the text otherwise.
struct Color {
  uint8_t r = 255, g = 255, b = 255;
};
Color parse_color(const std::string& text);

// The mask binarised: 255 where mask > threshold (0..254), else 0.
Image threshold_mask(const Image& mask, int threshold);
// RGBA: the colours of `rgb` (the image, or its refined foreground) with `mask` as alpha.
Image cutout_rgba(const Image& rgb, const Image& mask);
// RGB: `rgb` over a background, blended by the mask: round(fg·a + bg·(1 − a)), a = mask/255.
// The background is a colour, or an image of the same size (`background` non-null).
Image composite(const Image& rgb, const Image& mask, Color color, const Image* background = nullptr);

// The whole path: image -> mask at the image's size, the model run at width × height.
Image segment(Model& model, const Image& rgb, int width, int height);

}  // namespace biref
