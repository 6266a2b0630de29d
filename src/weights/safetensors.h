// The safetensors format: 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {str: str}}, then the data.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "weights/checkpoint.h"

namespace biref {

// Memory-maps the file; tensors point into the mapping. Validates the header strictly: every
// tensor's byte range must lie inside the file and match dtype x shape.
Checkpoint load_safetensors(const std::string& path);

// Writes tensors (in the given order) atomically: to PATH.tmp-XXXX first, renamed at the end,
// so an interrupted write never leaves a half-written file under the final name.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, TensorData>>& tensors,
                      const std::map<std::string, std::string>& metadata);

}  // namespace biref
