// One name -> tensor map, whatever file format it was read from. Each reader (safetensors,
// PyTorch .pth, synthetic weights) produces a Checkpoint; the model loads from it by name.
#pragma once
#include <sys/stat.h>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace biref {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

const char* dtype_name(DType t);  // safetensors spelling: "F32", "BF16", ...
size_t dtype_size(DType t);
DType dtype_from_name(const std::string& name);  // throws on an unknown name

// A dense, contiguous, row-major tensor of any dtype. `data` stays valid while `owner` lives
// (an mmap of the file, or a buffer the reader filled).
struct TensorData {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> owner;
  bool file_mapped = false;  // `data` lies in a read-only memory mapping of the file

  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  // The values as float32 (F32/F16/BF16/F64 and integer types converted).
  std::vector<float> to_f32() const;
};

struct Checkpoint {
  std::string path;                           // where it came from ("synthetic:..." for built-ins)
  std::string format;                         // "safetensors", "pth", "synthetic"
  std::map<std::string, TensorData> tensors;  // names with `module.` / `_orig_mod.` stripped
  std::map<std::string, std::string> metadata;  // safetensors __metadata__, or reader notes
  // The file that was read, as file_identity() describes it; "" for synthetic weights, or when
  // the file changed while it was read.
  std::string file_identity;
};

// A file's identity: device, inode, size, and the modification and change times to the
// nanosecond (the change time is set by the kernel on any write, rename or utime, never by a
// user), so that a different file, or the same file rewritten, has another identity.
std::string file_identity(const struct stat& st);

// Drops tensor `name` from `ck` once its values have been copied out: its memory is freed when
// nothing else holds it, and the pages of a memory-mapped file are handed back to the kernel, so
// loading a model never holds the whole checkpoint and the whole model at once.
void release_tensor(Checkpoint& ck, const std::string& name);
// Hands the pages of a read-only file mapping inside [data, data + bytes) back to the kernel.
void release_mapped_pages(const void* data, size_t bytes);

// Strips the prefixes that DataParallel and torch.compile add (`module.`, `_orig_mod.`),
// repeatedly, as the official check_state_dict does.
std::string strip_wrapper_prefixes(std::string name);

// Throws biref::Error naming `path` unless the file starts like a checkpoint biref reads
// (safetensors, or a PyTorch zip / legacy file): an HTML error page saved under a model's name,
// a truncated or empty file are refused with their first bytes shown.
void check_checkpoint_signature(const std::string& path);

// Opens a checkpoint by file content (safetensors or PyTorch .pth), or a built-in source
// "synthetic:BACKBONE[:SEED]". Throws biref::Error naming the file on any problem.
Checkpoint load_checkpoint(const std::string& source);

}  // namespace biref
