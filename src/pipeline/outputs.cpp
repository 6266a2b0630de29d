// What a mask is turned into: binary masks, RGBA cut-outs, composites on a colour or an image.
#include <cctype>
#include <cstdlib>
#include <map>

#include "biref/pipeline.h"
#include "core/check.h"
#include "image/codec.h"

namespace biref {

namespace {

void check_pair(const Image& rgb, const Image& mask, const char* what) {
  check_image(rgb, what);
  check_image(mask, what);
  BIREF_CHECK(rgb.channels == 3, what, ": the image must be RGB, got ", rgb.channels, " channels");
  BIREF_CHECK(mask.channels == 1 && mask.width == rgb.width && mask.height == rgb.height, what,
              ": the mask (", mask.width, "x", mask.height, ", ", mask.channels,
              " channels) must be one channel at the image's size ", rgb.width, "x", rgb.height);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = char(std::tolower(static_cast<unsigned char>(c)));
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

}  // namespace

Color parse_color(const std::string& text) {
  static const std::map<std::string, Color> names = {
      {"white", {255, 255, 255}}, {"black", {0, 0, 0}},   {"gray", {128, 128, 128}},
      {"red", {255, 0, 0}},       {"green", {0, 255, 0}}, {"blue", {0, 0, 255}}};
  const auto bad = [&]() {
    fail("colour '", text, "' is not one of #RRGGBB, #RGB, R,G,B (0-255) or a name (white, ",
         "black, gray, red, green, blue)");
  };
  if (auto it = names.find(text); it != names.end()) return it->second;
  uint8_t v[3] = {0, 0, 0};
  if (!text.empty() && text[0] == '#') {
    const size_t n = text.size() - 1;
    if (n != 3 && n != 6) bad();
    for (size_t i = 1; i < text.size(); ++i)
      if (hex_digit(text[i]) < 0) bad();
    for (int c = 0; c < 3; ++c)
      v[c] = n == 6 ? uint8_t(hex_digit(text[1 + 2 * c]) * 16 + hex_digit(text[2 + 2 * c]))
                    : uint8_t(hex_digit(text[1 + c]) * 17);
    return {v[0], v[1], v[2]};
  }
  size_t at = 0;
  for (int c = 0; c < 3; ++c) {
    size_t digits = 0;
    int x = 0;
    for (; at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])) && digits < 3;
         ++at, ++digits)
      x = x * 10 + (text[at] - '0');
    if (digits == 0 || x > 255) bad();
    v[c] = uint8_t(x);
    if (c < 2 && (at >= text.size() || text[at++] != ',')) bad();
  }
  if (at != text.size()) bad();
  return {v[0], v[1], v[2]};
}

Image threshold_mask(const Image& mask, int threshold) {
  check_image(mask, "threshold_mask");
  BIREF_CHECK(mask.channels == 1, "threshold_mask: the mask must have one channel");
  BIREF_CHECK(threshold >= 0 && threshold <= 254, "threshold ", threshold,
              " is out of range: use 0..254 (255 where mask > threshold)");
  Image out = mask;
  for (uint8_t& v : out.pixels) v = v > threshold ? 255 : 0;
  return out;
}

Image cutout_rgba(const Image& rgb, const Image& mask) {
  check_pair(rgb, mask, "cutout_rgba");
  Image out;
  out.width = rgb.width;
  out.height = rgb.height;
  out.channels = 4;
  const size_t n = size_t(rgb.width) * rgb.height;
  out.pixels.resize(n * 4);
  for (size_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) out.pixels[i * 4 + size_t(c)] = rgb.pixels[i * 3 + size_t(c)];
    out.pixels[i * 4 + 3] = mask.pixels[i];
  }
  return out;
}

Image composite(const Image& rgb, const Image& mask, Color color, const Image* background) {
  check_pair(rgb, mask, "composite");
  if (background) {
    check_image(*background, "composite background");
    BIREF_CHECK(background->channels == 3 && background->width == rgb.width &&
                    background->height == rgb.height,
                "composite: the background (", background->width, "x", background->height, ", ",
                background->channels, " channels) must be RGB at the image's size ", rgb.width, "x",
                rgb.height);
  }
  Image out = rgb;
  const uint8_t fill[3] = {color.r, color.g, color.b};
  const size_t n = size_t(rgb.width) * rgb.height;
  for (size_t i = 0; i < n; ++i) {
    const int a = mask.pixels[i];
    for (size_t c = 0; c < 3; ++c) {
      const int bg = background ? background->pixels[i * 3 + c] : fill[c];
      // round((fg·a + bg·(255 − a)) / 255), in integers
      out.pixels[i * 3 + c] = uint8_t((rgb.pixels[i * 3 + c] * a + bg * (255 - a) + 127) / 255);
    }
  }
  return out;
}

OutputKind parse_output_kind(const std::string& text) {
  for (OutputKind k :
       {OutputKind::Mask, OutputKind::Rgba, OutputKind::Foreground, OutputKind::Composite})
    if (text == output_kind_name(k)) return k;
  fail("output '", text, "' is not an output kind (mask, rgba, foreground, composite)");
}

const char* output_kind_name(OutputKind kind) {
  switch (kind) {
    case OutputKind::Mask:
      return "mask";
    case OutputKind::Rgba:
      return "rgba";
    case OutputKind::Foreground:
      return "foreground";
    case OutputKind::Composite:
      return "composite";
  }
  return "?";
}

bool output_has_alpha(OutputKind kind) {
  return kind == OutputKind::Rgba || kind == OutputKind::Foreground;
}

Image render_output(OutputKind kind, const Image& rgb, const Image& soft_mask,
                    const OutputOptions& options) {
  const Image thresholded =
      options.threshold >= 0 ? threshold_mask(soft_mask, options.threshold) : Image();
  const Image& mask = options.threshold >= 0 ? thresholded : soft_mask;
  switch (kind) {
    case OutputKind::Mask:
      return mask;
    case OutputKind::Rgba:
      return cutout_rgba(rgb, mask);
    case OutputKind::Foreground:
      return cutout_rgba(refine_foreground(rgb, mask), mask);
    case OutputKind::Composite: {
      const Image* bg = options.background_image;
      if (bg && (bg->width != rgb.width || bg->height != rgb.height)) {
        const Image resized = resize_bicubic_antialiased(*bg, rgb.width, rgb.height);
        return composite(rgb, mask, options.background, &resized);
      }
      return composite(rgb, mask, options.background, bg);
    }
  }
  fail("render_output: unknown output kind");
}

}  // namespace biref
