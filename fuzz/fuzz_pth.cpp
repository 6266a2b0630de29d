// Fuzzes the PyTorch .pth reader (zip and legacy formats, and the pickle reader under them) with
// the input as a checkpoint file. A biref::Error is the expected answer to a bad file; any other
// exception, a crash or a sanitizer report (a tensor view outside its storage, read back in full
// by touch_checkpoint) is a finding.
#include <cstddef>
#include <cstdint>

#include "biref/error.h"
#include "fuzz_util.h"
#include "weights/pth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = biref_fuzz::write_temp("fuzz-pth", data, size);
  try {
    biref_fuzz::touch_checkpoint(biref::load_pth(path), data, size);
  } catch (const biref::Error&) {
  }
  return 0;
}
