// A restricted pickle reader for PyTorch checkpoints. It understands the data a state_dict is
// made of (dicts, OrderedDict, lists, tuples, ints, floats, strings, bytes, None, bools) and the
// handful of torch functions that rebuild tensors from storages; every other global and every
// opcode that could call into Python is rejected by name. Nothing in a checkpoint is executed:
// the "calls" it may make are interpreted here as building plain data.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "weights/checkpoint.h"

namespace biref::pickle {

struct Object;

// A storage named by a persistent id: ('storage', torch.XStorage, key, location, numel[, view]).
struct StorageRef {
  std::string key;  // record name: data/KEY in a zip, the storage's id in a legacy file
  DType dtype = DType::F32;
  int64_t numel = 0;  // elements the pickle says the storage holds
  // Legacy files may hand a tensor a view of the storage: its elements
  // [view_offset, view_offset + view_numel), under the view's own id `view_key`.
  bool is_view = false;
  std::string view_key;
  int64_t view_offset = 0, view_numel = 0;
};

// The arguments of torch._utils._rebuild_tensor_v2 and friends, checked only for their types
// here; bounds are checked against the storage when the tensor is materialised.
struct TensorRef {
  const StorageRef* storage = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;
};

// One pickled value. Kept small (the arena may hold up to Limits::max_objects of them): the
// rarer storage and tensor payloads live in their own arenas of the Result.
struct Object {
  enum class Kind : uint8_t {
    None,
    Bool,
    Int,
    BigInt,
    Float,
    Str,
    Bytes,
    Tuple,
    List,
    Dict,
    Global,
    Storage,
    Tensor
  };
  Kind kind = Kind::None;
  int32_t depth = 0;  // containers nested inside this one (1 for a flat tuple)
  int64_t i = 0;      // Bool, Int
  double f = 0;       // Float
  std::string s;      // Str, Bytes, BigInt (two's complement little-endian), Global "mod.name"
  // Tuple, List: the items. Dict: keys and values interleaved (k0, v0, k1, v1, ...), in the
  // order the pickle set them. A key set twice is kept twice (Python would keep only the last
  // value): get() returns the last one, and the state_dict reader reports a tensor name that
  // appears twice as an error rather than silently picking one.
  std::vector<Object*> items;
  const StorageRef* storage = nullptr;  // Storage
  const TensorRef* tensor = nullptr;    // Tensor

  bool is(Kind k) const { return kind == k; }
  // The value stored under string key `key` of a Dict (the last one if set twice), or nullptr.
  const Object* get(std::string_view key) const;
};

const char* kind_name(Object::Kind k);

// What one pickle may build, so that a small (or highly compressible) file cannot make the
// reader allocate gigabytes. Every opcode creates at most one object and pushes at most one
// value, so objects and stack values never exceed the pickle's length; container items are
// also held to the pickle's length (each one is a value pushed by an opcode of its own, or one
// of two per pair tuple that an old-style OrderedDict([(k, v), ...]) call unpacks), which
// stops a call from unpacking the same list of pairs again and again. On top of that, fixed
// caps: torch.save's pickle of a state_dict builds about 17 objects and 17 items from about
// 92 bytes per tensor (measured on tests/golden/checkpoints), plus a few per module for its
// `_metadata`: some 20k objects for BiRefNet's 687 tensors, 50 times below 2^20. At the caps
// the reader holds about 100 MB of objects (sizeof(Object) <= 96), 32 MB of item pointers and
// some 50 MB of memo, however the input was built.
struct Limits {
  int max_depth = 64;            // containers nested in containers
  size_t max_stack = 1 << 20;    // values on the stack
  size_t max_marks = 4096;       // open MARKs
  size_t max_memo = 1 << 20;     // memo entries
  size_t max_objects = 1 << 20;  // objects created in total (and at most one per input byte)
  size_t max_items = 1 << 22;    // items in all lists/tuples/dicts (and at most one per byte)
};

// The result of one pickle: every object lives in `arena` (so reference cycles built through
// the memo cannot leak and nothing is freed recursively); `root` is what STOP returned.
struct Result {
  std::deque<Object> arena;
  std::deque<StorageRef> storages;  // the payloads of the Storage objects
  std::deque<TensorRef> tensors;    // the payloads of the Tensor objects
  const Object* root = nullptr;
  size_t consumed = 0;  // bytes of the input used up to and including STOP
};

// Runs the pickle in `data`. `what` names the input in errors ("'x.pth' data.pkl").
// Throws biref::Error on anything outside the supported subset, on malformed or truncated
// input, and when a limit is exceeded.
void load(std::string_view data, const std::string& what, Result& out, const Limits& lim = {});

}  // namespace biref::pickle
