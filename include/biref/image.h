// Images in memory and on disk: decoding with a pixel limit checked before any pixel is
// decoded, encoding, atomic writes. Used by `biref segment`, `biref eval` and the library.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace biref {

// 8-bit interleaved pixels: 3 channels RGB, 1 channel gray, or 4 channels RGBA; rows without
// padding.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// The formats biref decodes, by content (never by file name): JPEG, PNG, WebP, TIFF, BMP and
// the Netpbm family (PBM/PGM/PPM). Their headers are read by biref itself, so an image's size is
// known, and checked against the pixel limit, before the decoder allocates anything.
struct ImageInfo {
  std::string format;  // "JPEG", "PNG", "WebP", "TIFF", "BMP", "PNM"
  int width = 0, height = 0;
};

// The pixel limit used when DecodeOptions::max_pixels is 0: $BIREF_MAX_IMAGE_PIXELS when it is
// set to a positive integer, else kDefaultMaxImagePixels. A malformed variable is an error.
constexpr int64_t kDefaultMaxImagePixels = int64_t(1) << 27;  // 134 megapixels, e.g. 16384x8192
int64_t default_max_image_pixels();

struct DecodeOptions {
  int64_t max_pixels = 0;  // width x height above this is refused; 0: default_max_image_pixels()
  int channels = 3;        // 3: RGB (gray expanded, alpha dropped); 1: gray (as OpenCV's
                           // IMREAD_GRAYSCALE). 16-bit images are reduced to 8 bits.
};

// Reads the header only: format and size. Throws biref::Error naming `name` when the data is
// not one of the formats above, or its header is malformed or truncated.
ImageInfo probe_image(const uint8_t* data, size_t size, const std::string& name);

// Decodes an image held in memory (EXIF orientation applied, as the official cv2.imread does).
// Throws biref::Error naming `name`: unknown format, a size above the limit (with both numbers),
// a file that does not decode, or a truncated JPEG (its end-of-image marker missing).
Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                   const DecodeOptions& options = {});

// Reads a regular file and decodes it. A missing, unreadable (with the system's reason) or
// special file (FIFO, device, folder) is an error naming the path.
Image read_image(const std::string& path, const DecodeOptions& options = {});

// Pillow's Image.resize with its default filter (bicubic, antialiased when shrinking), bit for
// bit on 8-bit images: how the official dynamic-size inference resizes (1 or 3 channels).
Image resize_bicubic_antialiased(const Image& image, int width, int height);

// Whether `path`'s extension names a format write_image can encode (.png, .jpg, .bmp, .tif, ...).
bool can_write_image(const std::string& path);
// Encodes to the format named by `ext` (".png", ".jpg", ...).
std::vector<uint8_t> encode_image(const Image& image, const std::string& ext);
// Writes a PNG (or any format by extension) atomically: a temp file renamed at the end, so no
// half-written output is ever left under `path`.
void write_image(const std::string& path, const Image& image);

}  // namespace biref
