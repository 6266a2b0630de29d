// PyTorch checkpoints (`torch.save`) without Python or libtorch:
//  - the zip format (torch >= 1.6): ARCHIVE/data.pkl, ARCHIVE/data/KEY storages, optional
//    ARCHIVE/byteorder, under any top-level folder name;
//  - the legacy format (before 1.6): magic number, protocol version and system-info pickles,
//    the object pickle, the list of storage keys, then each storage as [int64 numel][data].
// The object pickle runs on the restricted reader of weights/pickle.h: only plain data and
// tensors, nothing executed.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weights/checkpoint.h"

namespace biref {

// True when the first bytes (at least 4) of a file are those of a PyTorch checkpoint: a zip
// local file header, or the legacy format's magic-number pickle.
bool looks_like_pth(const unsigned char* head, size_t n);

// Reads the state_dict of a .pth file. A checkpoint that wraps it (a dict with `state_dict`,
// `model`, `model_state_dict`, `ema`, `module`, ... next to `epoch` or an optimizer) is searched
// for it; entries that are not tensors are ignored; `module.` / `_orig_mod.` prefixes are
// stripped. Only the storages of the chosen state_dict are read, each once into one buffer;
// contiguous tensors point into it, non-contiguous views are copied out contiguous.
// Throws biref::Error naming the file (and the tensor) on any problem.
Checkpoint load_pth(const std::string& path);

// Writes a zip archive of uncompressed entries (name -> bytes), as torch.save lays them out
// ("ARCHIVE/data.pkl", "ARCHIVE/data/0", ...), or of deflated ones (fastest level) when
// `deflate` is set, as a re-zipped checkpoint would be. For tests and tools that need a .pth.
void write_zip(const std::string& path,
               const std::vector<std::pair<std::string, std::string>>& entries,
               bool deflate = false);

}  // namespace biref
