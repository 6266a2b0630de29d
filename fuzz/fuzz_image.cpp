// Fuzzes image probing and decoding (biref/image.h) on the input bytes. The first byte chooses
// the decoded channels (odd: 1, gray; even: 3, RGB); the image is the rest. The pixel limit is
// 4 megapixels, so a header that announces a huge image is refused before any allocation and
// memory stays bounded. A biref::Error is the expected answer to a bad image; any other
// exception, a crash, a sanitizer report or a result that breaks the header's promises (see the
// checks below) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "biref/error.h"
#include "biref/image.h"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_image: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  biref::DecodeOptions options;
  options.max_pixels = int64_t(1) << 22;
  options.channels = data[0] & 1 ? 1 : 3;
  const uint8_t* image = data + 1;
  const size_t image_size = size - 1;

  biref::ImageInfo info;
  bool probed = false;
  try {
    info = biref::probe_image(image, image_size, "fuzz");
    probed = true;
  } catch (const biref::Error&) {
  }
  biref::Image decoded;
  try {
    decoded = biref::decode_image(image, image_size, "fuzz", options);
  } catch (const biref::Error&) {
    return 0;
  }
  // The limit is checked on the header's size, so a decoded image must have been probed, with
  // the decoded size (swapped by an EXIF rotation of 90 or 270 degrees) and within the limit.
  if (!probed) broken("decode_image accepted data that probe_image refused");
  const bool same = decoded.width == info.width && decoded.height == info.height;
  const bool swapped = decoded.width == info.height && decoded.height == info.width;
  if (!same && !swapped) broken("decoded size differs from the probed size");
  if (decoded.width <= 0 || decoded.height <= 0) broken("empty image decoded");
  if (int64_t(decoded.width) * decoded.height > options.max_pixels) broken("pixel limit exceeded");
  if (decoded.channels != options.channels) broken("wrong channel count");
  if (decoded.pixels.size() != size_t(decoded.width) * decoded.height * decoded.channels) {
    broken("pixel buffer size does not match width x height x channels");
  }
  return 0;
}
