// Fuzzes the safetensors reader, and the format sniffing of load_checkpoint in front of it, with
// the input as a checkpoint file. A biref::Error is the expected answer to a bad file; any other
// exception, a crash, a sanitizer report or a tensor outside the file is a finding.
#include <cstddef>
#include <cstdint>

#include "biref/error.h"
#include "fuzz_util.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = biref_fuzz::write_temp("fuzz-safetensors", data, size);
  try {
    biref_fuzz::touch_checkpoint(biref::load_safetensors(path), data, size);
  } catch (const biref::Error&) {
  }
  try {
    biref_fuzz::touch_checkpoint(biref::load_checkpoint(path), data, size);
  } catch (const biref::Error&) {
  }
  return 0;
}
