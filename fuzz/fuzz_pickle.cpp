// Fuzzes the restricted pickle reader directly on the input bytes. A biref::Error is the
// expected answer to a bad pickle; any other exception, a crash or a sanitizer report is a
// finding, and so is a result that breaks the reader's promises (see the checks below).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "biref/error.h"
#include "weights/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using biref::pickle::Object;
  biref::pickle::Result result;
  try {
    biref::pickle::load(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz",
                        result);
  } catch (const biref::Error&) {
    return 0;
  }
  // STOP was reached inside the input and returned a value.
  if (result.root == nullptr || result.consumed == 0 || result.consumed > size) std::abort();
  // The limits of weights/pickle.h: at most one object per input byte, nesting bounded.
  const biref::pickle::Limits limits;
  if (result.arena.size() > size || result.arena.size() > limits.max_objects) std::abort();
  // Every object (cycles built through the memo included) refers only to live objects and
  // payloads: reading them through the pointers lets ASan check that nothing dangles.
  for (const Object& o : result.arena) {
    if (o.depth > limits.max_depth) std::abort();
    for (const Object* item : o.items) {
      if (item == nullptr || biref::pickle::kind_name(item->kind) == nullptr) std::abort();
    }
    if (o.is(Object::Kind::Storage) && o.storage == nullptr) std::abort();
    if (o.is(Object::Kind::Tensor)) {
      // The rebuild call's arguments were checked: a storage, and a stride per dimension.
      if (o.tensor == nullptr || o.tensor->storage == nullptr) std::abort();
      if (o.tensor->shape.size() != o.tensor->stride.size()) std::abort();
    }
  }
  return 0;
}
