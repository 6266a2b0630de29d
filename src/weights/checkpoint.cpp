#include "weights/checkpoint.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/half.h"
#include "weights/pth.h"
#include "weights/safetensors.h"
#include "weights/synthetic.h"
#include "weights/zoo.h"

namespace biref {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::Bool: return 1;
  }
  return 1;
}

DType dtype_from_name(const std::string& n) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::Bool}) {
    if (n == dtype_name(t)) return t;
  }
  fail("unsupported dtype '", n, "'");
}

int64_t TensorData::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> TensorData::to_f32() const {
  const int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  if (n == 0) return out;
  if (dtype == DType::F32) {
    std::memcpy(out.data(), data, size_t(n) * 4);
    return out;
  }
  // Element by element through memcpy: a memory-mapped file gives no alignment guarantee.
  const auto* bytes = static_cast<const unsigned char*>(data);
  auto convert = [&](auto zero, auto fn) {
    using T = decltype(zero);
    for (int64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, bytes + size_t(i) * sizeof(T), sizeof(T));
      out[size_t(i)] = fn(v);
    }
  };
  auto cast = [](auto v) { return float(v); };
  switch (dtype) {
    case DType::F32: break;
    case DType::F16: convert(uint16_t{}, [](uint16_t v) { return f16_to_f32(v); }); break;
    case DType::BF16: convert(uint16_t{}, [](uint16_t v) { return bf16_to_f32(v); }); break;
    case DType::F64: convert(double{}, cast); break;
    case DType::I64: convert(int64_t{}, cast); break;
    case DType::I32: convert(int32_t{}, cast); break;
    case DType::I16: convert(int16_t{}, cast); break;
    case DType::I8: convert(int8_t{}, cast); break;
    case DType::U8:
    case DType::Bool: convert(uint8_t{}, cast); break;
  }
  return out;
}

void release_tensor(Checkpoint& ck, const std::string& name) {
  auto it = ck.tensors.find(name);
  if (it == ck.tensors.end()) return;
  const TensorData& t = it->second;
  if (t.file_mapped && t.nbytes() > 0) {
    // The whole pages inside the tensor: a page shared with a neighbour is left alone.
    const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (uintptr_t(t.data) + page - 1) / page * page;
    const uintptr_t end = (uintptr_t(t.data) + t.nbytes()) / page * page;
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
  ck.tensors.erase(it);
}

std::string strip_wrapper_prefixes(std::string name) {
  for (bool changed = true; changed;) {
    changed = false;
    for (const char* p : {"module.", "_orig_mod."}) {
      const size_t len = std::strlen(p);
      if (name.compare(0, len, p) == 0) {
        name.erase(0, len);
        changed = true;
      }
    }
  }
  return name;
}

Checkpoint load_checkpoint(const std::string& source) {
  if (std::string p = resolve_model_source(source); p != source) return load_checkpoint(p);
  if (source.rfind("synthetic:", 0) == 0) return synthetic_checkpoint_from_spec(source);
  std::error_code ec;
  BIREF_CHECK(!std::filesystem::is_directory(source, ec), "checkpoint '", source,
              "' is a folder, not a file");
  std::ifstream f(source, std::ios::binary);
  BIREF_CHECK(f.good(), "cannot open checkpoint '", source, "'");
  unsigned char head[8] = {};
  f.read(reinterpret_cast<char*>(head), 8);
  const std::streamsize got = f.gcount();
  BIREF_CHECK(got > 0, "checkpoint '", source, "' is empty");
  // PyTorch checkpoints: zip (PK) or the legacy pickle stream (PROTO opcode 0x80).
  if (looks_like_pth(head, size_t(got))) return load_pth(source);
  return load_safetensors(source);
}

}  // namespace biref
