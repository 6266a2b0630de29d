// The official image pipeline around the model: decode, resize the 8-bit image to the model
// size, normalise; and back: sigmoid, align_corners resize, 8-bit mask (docs in README.md).
#pragma once
#include <cstdint>
#include <functional>
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
Image composite(const Image& rgb, const Image& mask, Color color,
                const Image* background = nullptr);

// The whole path: image -> mask at the image's size, the model run at width × height.
Image segment(Model& model, const Image& rgb, int width, int height);

// The mask (8-bit, out_w × out_h) of probabilities at the model's resolution (row-major,
// h × w): bilinear align_corners=True as the official code, then round(255·p). Row by row:
// no float copy at the output size.
Image mask_from_model_probabilities(const float* prob, int w, int h, int out_w, int out_h);

// ---- Prediction: ensembles, flip TTA, resolution policy, tiling ----

// Probabilities at the model's resolution for a batch of preprocessed inputs: `input` is
// [B, 3, h, w]; `prob` receives B·h·w values (row-major per image).
using ProbabilityFn = std::function<void(const HostTensor& input, float* prob)>;

// sigmoid(logits) averaged over `models` (the official multi-checkpoint ensemble), and with
// `flip` also over the horizontally flipped input (flipped back): 2·models.size() passes.
ProbabilityFn ensemble_probabilities(std::vector<Model*> models, bool flip);

enum class TileMode {
  Off,   // the whole image at the model size
  Auto,  // tiled when the image is more than twice the tile in width or height
  On,    // always tiled (a global pass plus tiles, even when one tile covers the image)
};
// "off", "auto" or "on"; throws biref::Error otherwise.
TileMode parse_tile_mode(const std::string& text);

struct TileOptions {
  TileMode mode = TileMode::Off;
  // A tile's size in image pixels: tile_size × tile_size·h/w for a w × h model (the model's
  // aspect ratio, so a tile is never distorted); 0: the model size itself.
  int tile_size = 0;
  // Image pixels shared by neighbouring tiles, blended with smooth weights; -1: a quarter of
  // the tile.
  int overlap = -1;
  // Tiles refine the global pass only within this many model pixels of what it found: the
  // result is clamped between the global probabilities eroded and dilated by this radius, so a
  // tile cannot invent an object the whole image lacks, nor drop one larger than itself.
  // Negative: tiles unguided.
  int guide_radius = 4;
};

// Where the tiles of an image go along one axis: `extent` image pixels covered by tiles of
// `tile` pixels overlapping by at least `overlap`, evenly spaced, the first at 0 and the last at
// extent - tile. One tile (at 0, clipped to the image) when the image is not larger.
std::vector<int> tile_starts(int extent, int tile, int overlap);
struct TileLayout {
  int tile_w = 0, tile_h = 0, overlap_x = 0, overlap_y = 0;
  std::vector<int> xs, ys;
  size_t count() const { return xs.size() * ys.size(); }
};
TileLayout tile_layout(int width, int height, int model_w, int model_h, const TileOptions& o);

// The tiled mask of `rgb`: a global pass at model_w × model_h and every tile (cut from the image,
// resized to the model size as the fixed-size pipeline does) through `predict`, blended with
// separable smooth weights that sum to one at every pixel, clamped by the global pass (see
// guide_radius), and quantised row band by row band: memory beyond the image and the mask is
// one band of tile_h rows of floats.
Image tiled_mask(const Image& rgb, int model_w, int model_h, const TileOptions& options,
                 const ProbabilityFn& predict);

struct PredictOptions {
  int width = 1024, height = 1024;  // the model input size, multiples of 32
  // Each image at its own size floored to 32 (capped by max_pixels), resized with Pillow's
  // bicubic as the official dynamic-size inference; width and height are then ignored.
  bool dynamic = false;
  int64_t max_pixels = int64_t(2048) * 2048;
  bool flip = false;  // flip test-time augmentation
  TileOptions tile;   // not with dynamic
};

// The mask of images through one model or an ensemble: the library form of `biref segment`.
// Not thread-safe (the models are not); one Predictor per worker.
class Predictor {
 public:
  Predictor(std::vector<Model*> models, const PredictOptions& options);

  // The model input size used for an image of width × height.
  void model_size(int width, int height, int& model_w, int& model_h) const;
  // Whether an image of width × height is tiled.
  bool tiled(int width, int height) const;

  // The soft mask (8-bit, the image's size) of one RGB image.
  Image mask(const Image& rgb) const;
  // Several RGB images: those that share a model size and are not tiled run as one batch
  // [B, 3, h, w]; the masks come back in order.
  std::vector<Image> masks(const std::vector<const Image*>& rgbs) const;

  const PredictOptions& options() const { return options_; }

 private:
  std::vector<Model*> models_;
  PredictOptions options_;
  ProbabilityFn predict_;
};

// ---- Outputs ----

enum class OutputKind { Mask, Rgba, Foreground, Composite };
// "mask", "rgba", "foreground", "composite"; throws biref::Error naming the text otherwise.
OutputKind parse_output_kind(const std::string& text);
const char* output_kind_name(OutputKind kind);
// Whether the output has an alpha channel (rgba, foreground).
bool output_has_alpha(OutputKind kind);

struct OutputOptions {
  int threshold = -1;                       // >= 0: the mask binarised first (see threshold_mask)
  Color background;                         // composite: the colour ...
  const Image* background_image = nullptr;  // ... or an image (resized to each image's size)
};
// One output of an image and its soft mask: the mask itself, the RGBA cut-out, the refined
// foreground as RGBA, or the composite.
Image render_output(OutputKind kind, const Image& rgb, const Image& mask,
                    const OutputOptions& options);

}  // namespace biref
