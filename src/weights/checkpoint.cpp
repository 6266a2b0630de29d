#include "weights/checkpoint.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/file.h"
#include "core/half.h"
#include "weights/pth.h"
#include "weights/safetensors.h"
#include "weights/synthetic.h"
#include "weights/zoo.h"

namespace biref {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::F64:
      return "F64";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::Bool:
      return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::Bool:
      return 1;
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

namespace {
// The 2 MiB-aligned part of [p, p + bytes) as transparent huge pages (madvise mode).
void advise_huge_pages(void* p, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = (uintptr_t(p) + kHuge - 1) / kHuge * kHuge;
  const uintptr_t end = (uintptr_t(p) + bytes) / kHuge * kHuge;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}
}  // namespace

int64_t TensorData::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> TensorData::to_f32() const {
  const int64_t n = numel();
  if (dtype == DType::F32 && n > 0 && uintptr_t(data) % alignof(float) == 0) {
    // Copied without zeroing first, into pages asked for as huge pages: a fresh 4 KiB page costs
    // a fault each (microseconds on a virtual machine), and a model is tens of thousands of them.
    std::vector<float> out;
    out.reserve(size_t(n));
    advise_huge_pages(out.data(), size_t(n) * sizeof(float));
    const auto* src = static_cast<const float*>(data);
    out.insert(out.end(), src, src + n);
    return out;
  }
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
    case DType::F32:
      break;
    case DType::F16:
      convert(uint16_t{}, [](uint16_t v) { return f16_to_f32(v); });
      break;
    case DType::BF16:
      convert(uint16_t{}, [](uint16_t v) { return bf16_to_f32(v); });
      break;
    case DType::F64:
      convert(double{}, cast);
      break;
    case DType::I64:
      convert(int64_t{}, cast);
      break;
    case DType::I32:
      convert(int32_t{}, cast);
      break;
    case DType::I16:
      convert(int16_t{}, cast);
      break;
    case DType::I8:
      convert(int8_t{}, cast);
      break;
    case DType::U8:
    case DType::Bool:
      convert(uint8_t{}, cast);
      break;
  }
  return out;
}

void release_mapped_pages(const void* data, size_t bytes) {
  // The whole pages inside the range: a page shared with a neighbour is left alone.
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(data) + page - 1) / page * page;
  const uintptr_t end = (uintptr_t(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void release_tensor(Checkpoint& ck, const std::string& name) {
  auto it = ck.tensors.find(name);
  if (it == ck.tensors.end()) return;
  const TensorData& t = it->second;
  if (t.file_mapped && t.nbytes() > 0) release_mapped_pages(t.data, t.nbytes());
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

namespace {

enum class Sniffed { Pth, Safetensors };

// The format of a checkpoint file from its first bytes. Only regular files: a FIFO or a device
// named by mistake would block or never end.
Sniffed sniff_checkpoint(const std::string& path) {
  check_readable_file(path, "checkpoint");
  std::ifstream f(path, std::ios::binary);
  BIREF_CHECK(f.good(), "cannot open checkpoint '", path, "'");
  unsigned char head[16] = {};
  f.read(reinterpret_cast<char*>(head), sizeof head);
  const size_t got = size_t(f.gcount());
  BIREF_CHECK(got > 0, "checkpoint '", path, "' is empty");
  // PyTorch checkpoints: zip (PK) or the legacy pickle stream (PROTO opcode 0x80).
  if (looks_like_pth(head, got)) return Sniffed::Pth;
  // safetensors: an 8-byte little-endian header length, then the JSON header's '{'.
  if (got >= 9 && head[8] == '{') return Sniffed::Safetensors;
  std::string shown;  // printable bytes as they are, the others as \xHH
  for (size_t i = 0; i < got; ++i) {
    const unsigned char c = head[i];
    shown += c >= 32 && c < 127 && c != '\\'
                 ? std::string(1, char(c))
                 : str_cat("\\x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
  }
  fail("checkpoint '", path, "' is neither a safetensors file nor a PyTorch checkpoint (zip or ",
       "legacy format): it starts with \"", shown, "\"");
}

}  // namespace

std::string file_identity(const struct stat& st) {
  return str_cat("device ", uint64_t(st.st_dev), " inode ", uint64_t(st.st_ino), " size ",
                 int64_t(st.st_size), " modified ", int64_t(st.st_mtim.tv_sec), ".",
                 int64_t(st.st_mtim.tv_nsec), " changed ", int64_t(st.st_ctim.tv_sec), ".",
                 int64_t(st.st_ctim.tv_nsec));
}

Checkpoint load_checkpoint(const std::string& source) {
  if (std::string p = resolve_model_source(source); p != source) return load_checkpoint(p);
  if (source.rfind("synthetic:", 0) == 0) return synthetic_checkpoint_from_spec(source);
  // The format is told by content, never by the file name.
  if (sniff_checkpoint(source) != Sniffed::Pth) return load_safetensors(source);  // fstat's
  // libzip opens the path itself: the identity is the file's when it is the same before and
  // after the read.
  struct stat before {}, after {};
  const bool known = ::stat(source.c_str(), &before) == 0;
  Checkpoint ck = load_pth(source);
  if (known && ::stat(source.c_str(), &after) == 0 &&
      file_identity(before) == file_identity(after))
    ck.file_identity = file_identity(after);
  return ck;
}

void check_checkpoint_signature(const std::string& path) {
  sniff_checkpoint(path);
}

}  // namespace biref
