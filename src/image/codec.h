// Internal helpers of the image code shared with the pipeline.
#pragma once
#include "biref/image.h"

namespace biref {

// Throws biref::Error (prefixed by `what`) unless `image` has a positive size, 1, 3 or 4
// channels and exactly width x height x channels bytes of pixels.
void check_image(const Image& image, const char* what);

}  // namespace biref
