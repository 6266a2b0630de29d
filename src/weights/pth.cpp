#include "weights/pth.h"

#include <zip.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "core/atomic_file.h"
#include "core/check.h"
#include "core/file.h"
#include "weights/pickle.h"

namespace biref {

using pickle::Object;
using Kind = pickle::Object::Kind;

namespace {

// Where a state_dict may sit inside a training checkpoint, in the order we look. The plain
// model weights come before EMA copies, as the official loader and most trainers do.
constexpr const char* kStateDictKeys[] = {
    "state_dict", "model_state_dict", "model",          "module",
    "net",        "network",          "params",         "weights",
    "ema",        "model_ema",        "state_dict_ema", "ema_state_dict",
};
constexpr int kMaxNestedStateDict = 3;

// The legacy format's first pickle: 0x1950a86a20f9469cfc6c, as LONG1 writes it.
constexpr unsigned char kLegacyMagic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                            0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t kLegacyProtocol = 1001;

// The object pickle of a real state_dict is about 100 bytes per tensor (well under 1 MiB for
// BiRefNet). A larger one is refused before it is read (or inflated: torch.save stores its
// entries, but a re-zipped checkpoint may deflate them, and deflate expands up to ~1000x).
constexpr uint64_t kMaxPickleBytes = uint64_t(64) << 20;

// Non-contiguous views are copied out; what those copies may take in all, past the bytes of the
// storages themselves (see CopyBudget).
constexpr uint64_t kCopyAllowance = uint64_t(64) << 20;

// A storage's bytes, read once, shared by every tensor that lives in it.
struct Storage {
  std::shared_ptr<const void> owner;
  const unsigned char* bytes = nullptr;
  int64_t numel = 0;  // elements actually present
};

std::shared_ptr<unsigned char> alloc_bytes(size_t n, const std::string& what) {
  // 64-byte aligned so that every dtype (and SIMD loads) may read it in place.
  const size_t rounded = (std::max<size_t>(n, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  BIREF_CHECK(p, "out of memory reading ", what, " (", n, " bytes)");
  return std::shared_ptr<unsigned char>(static_cast<unsigned char*>(p),
                                        [](unsigned char* q) { std::free(q); });
}

void swap_bytes(unsigned char* p, int64_t numel, size_t esize) {
  if (esize == 1) return;
  for (int64_t i = 0; i < numel; ++i, p += esize) std::reverse(p, p + esize);
}

bool has_tensor(const Object* d) {
  for (size_t i = 1; i < d->items.size(); i += 2) {
    if (d->items[i]->is(Kind::Tensor)) return true;
  }
  return false;
}

// The dict that holds the weights: `root` itself if it has tensors, else the first of the
// well-known keys (recursively, a few levels deep) that leads to one.
const Object* find_state_dict(const Object* d, int level, std::string& where) {
  if (!d || !d->is(Kind::Dict)) return nullptr;
  if (has_tensor(d)) return d;
  if (level >= kMaxNestedStateDict) return nullptr;
  for (const char* key : kStateDictKeys) {
    std::string sub;
    if (const Object* found = find_state_dict(d->get(key), level + 1, sub)) {
      where = sub.empty() ? key : std::string(key) + "." + sub;
      return found;
    }
  }
  return nullptr;
}

std::string key_list(const Object* d) {
  std::string out;
  size_t n = 0;
  for (size_t i = 0; i + 1 < d->items.size(); i += 2, ++n) {
    if (n == 8) return out + ", ...";
    if (!out.empty()) out += ", ";
    const Object* k = d->items[i];
    out += k->is(Kind::Str) ? "'" + k->s.substr(0, 40) + "'" : pickle::kind_name(k->kind);
  }
  return out.empty() ? "none" : out;
}

struct Tensors {
  std::vector<std::pair<std::string, const pickle::TensorRef*>> list;
  std::string where;   // key path of the state_dict inside the checkpoint ("" at the top)
  size_t ignored = 0;  // non-tensor entries of the state_dict
};

Tensors select_tensors(const std::string& path, const Object* root) {
  if (!root->is(Kind::Dict)) {
    fail("checkpoint '", path, "' holds a ", pickle::kind_name(root->kind),
         ", not a state_dict (a dict of tensors)");
  }
  Tensors t;
  const Object* sd = find_state_dict(root, 0, t.where);
  if (!sd) {
    std::string looked;
    for (const char* k : kStateDictKeys) looked += std::string(looked.empty() ? "" : ", ") + k;
    fail("checkpoint '", path, "' has no state_dict: no tensors at the top level (keys ",
         key_list(root), ") nor under any of ", looked);
  }
  for (size_t i = 0; i + 1 < sd->items.size(); i += 2) {
    const Object* k = sd->items[i];
    const Object* v = sd->items[i + 1];
    if (!k->is(Kind::Str) || !v->is(Kind::Tensor)) {
      ++t.ignored;
      continue;
    }
    t.list.emplace_back(k->s, v->tensor);
  }
  return t;
}

bool mul_ok(int64_t a, int64_t b, int64_t& r) {
  return !__builtin_mul_overflow(a, b, &r);
}
bool add_ok(int64_t a, int64_t b, int64_t& r) {
  return !__builtin_add_overflow(a, b, &r);
}

// The bytes that copies of non-contiguous views may take, for the whole checkpoint: the bytes of
// all the storages read, plus kCopyAllowance. Copies of transposes and slices never need more
// than their storage holds, so a checkpoint made only of those always fits; the allowance
// covers expanded views (stride 0), which legitimately copy more than they read but are rare
// and small in state_dicts. An expanded view of a few bytes can otherwise ask for any size
// (shape [2^28], stride [0] over one float is 1 GiB from a 500-byte file), and each tensor may
// ask again: the budget bounds the loader's memory to at most twice what the file's storages
// hold, plus 64 MiB, whatever the views say.
struct CopyBudget {
  uint64_t limit = kCopyAllowance;  // storage bytes are added as they are read
  uint64_t used = 0;
};

// A TensorData for `ref` inside `st`: checked against the storage's real size, pointing into it
// when contiguous, else copied out in row-major order within `budget`.
TensorData materialise(const std::string& path, const std::string& name,
                       const pickle::TensorRef& ref, const Storage& st, CopyBudget& budget) {
  const pickle::StorageRef& sr = *ref.storage;
  auto where = [&] { return str_cat("checkpoint '", path, "': tensor '", name, "'"); };
  TensorData t;
  t.dtype = sr.dtype;
  t.shape = ref.shape;
  const size_t esize = dtype_size(sr.dtype);

  // The elements this tensor may address: the whole storage, or a legacy view of it.
  int64_t base = 0, avail = st.numel;
  if (sr.is_view) {
    BIREF_CHECK(sr.view_offset <= st.numel && sr.view_numel <= st.numel - sr.view_offset, where(),
                ": storage view [", sr.view_offset, ", +", sr.view_numel,
                ") lies outside its storage of ", st.numel, " elements");
    base = sr.view_offset;
    avail = sr.view_numel;
  }
  BIREF_CHECK(ref.offset >= 0, where(), ": negative storage offset ", ref.offset);
  int64_t numel = 1, last = ref.offset;
  for (size_t i = 0; i < ref.shape.size(); ++i) {
    const int64_t d = ref.shape[i], s = ref.stride[i];
    BIREF_CHECK(d >= 0, where(), ": negative dimension in shape ", shape_str(ref.shape));
    BIREF_CHECK(s >= 0, where(), ": negative stride in ", shape_str(ref.stride));
    BIREF_CHECK(mul_ok(numel, d, numel) && numel <= (int64_t(1) << 40), where(), ": shape ",
                shape_str(ref.shape), " is too large");
  }
  if (numel == 0) {
    t.data = st.bytes;  // never read; a valid pointer all the same
    t.owner = st.owner;
    return t;
  }
  // The last element addressed: offset + sum (shape[i] - 1) * stride[i], every step checked
  // (shape[i] >= 1 here, strides >= 0), so it is exact and then compared with the storage.
  for (size_t i = 0; i < ref.shape.size(); ++i) {
    int64_t span;
    BIREF_CHECK(mul_ok(ref.shape[i] - 1, ref.stride[i], span) && add_ok(last, span, last), where(),
                ": stride ", shape_str(ref.stride), " overflows");
  }
  BIREF_CHECK(last < avail, where(), " (", dtype_name(sr.dtype), " ", shape_str(ref.shape),
              ", offset ", ref.offset, ", stride ", shape_str(ref.stride), ") needs ",
              uint64_t(last) + 1, " elements but its storage '", sr.key, "' holds only ", avail,
              " (storage shorter than its tensor, or shape/stride out of bounds)");

  const unsigned char* src = st.bytes + size_t(base + ref.offset) * esize;
  bool contiguous = true;
  for (int64_t i = int64_t(ref.shape.size()) - 1, expect = 1; i >= 0; --i) {
    if (ref.shape[i] != 1 && ref.stride[i] != expect) contiguous = false;
    expect *= ref.shape[i];
  }
  if (contiguous) {
    t.data = src;
    t.owner = st.owner;
    return t;
  }
  const uint64_t nbytes = uint64_t(numel) * esize;  // numel <= 2^40, esize <= 8
  BIREF_CHECK(nbytes <= budget.limit - budget.used, where(), " (", dtype_name(sr.dtype), " ",
              shape_str(ref.shape), ", stride ", shape_str(ref.stride),
              ") is a non-contiguous view that would be copied out into ", nbytes,
              " bytes, past what copies of views may take in this checkpoint (", budget.limit,
              " bytes: the ", budget.limit - kCopyAllowance,
              " bytes of its storages plus 64 MiB, of which ", budget.used,
              " are used); an expanded view much larger than its storage?");
  budget.used += nbytes;
  auto buf = alloc_bytes(size_t(nbytes), "tensor '" + name + "'");
  const size_t rank = ref.shape.size();
  std::vector<int64_t> idx(rank, 0);
  int64_t off = 0;  // element offset of idx inside src
  unsigned char* dst = buf.get();
  for (int64_t n = 0; n < numel; ++n, dst += esize) {
    std::memcpy(dst, src + size_t(off) * esize, esize);
    for (size_t k = rank; k-- > 0;) {  // odometer step, last dimension fastest
      if (++idx[k] < ref.shape[k]) {
        off += ref.stride[k];
        break;
      }
      off -= (ref.shape[k] - 1) * ref.stride[k];
      idx[k] = 0;
    }
  }
  t.data = buf.get();
  t.owner = std::shared_ptr<const void>(buf, buf.get());
  return t;
}

// Reads one storage by key: the zip record or the legacy data block.
using StorageReader = std::function<Storage(const pickle::StorageRef&)>;

Checkpoint build(const std::string& path, const std::string& format_note, const Object* root,
                 const StorageReader& read_storage) {
  Tensors sel = select_tensors(path, root);
  Checkpoint ck;
  ck.path = path;
  ck.format = "pth";
  ck.metadata["pth.format"] = format_note;
  if (!sel.where.empty()) ck.metadata["pth.state_dict"] = sel.where;
  if (sel.ignored) ck.metadata["pth.ignored_entries"] = std::to_string(sel.ignored);

  // Every storage first, so that the copy budget knows what the file holds before any view
  // asks for a copy, whatever order the tensors come in.
  std::map<std::string, Storage> storages;
  std::map<std::string, DType> storage_dtype;
  CopyBudget budget;
  for (const auto& [raw, ref] : sel.list) {
    const pickle::StorageRef& sr = *ref->storage;
    auto [it, fresh] = storage_dtype.emplace(sr.key, sr.dtype);
    BIREF_CHECK(it->second == sr.dtype, "checkpoint '", path, "': storage '", sr.key,
                "' is used as both ", dtype_name(it->second), " and ", dtype_name(sr.dtype));
    if (fresh) {
      const Storage& st = storages.emplace(sr.key, read_storage(sr)).first->second;
      budget.limit += uint64_t(st.numel) * dtype_size(sr.dtype);
    }
  }
  for (const auto& [raw, ref] : sel.list) {
    const std::string name = strip_wrapper_prefixes(raw);
    BIREF_CHECK(!ck.tensors.count(name), "checkpoint '", path, "': tensor '", raw,
                "' appears twice",
                name == raw ? "" : " (after stripping module./_orig_mod. prefixes)");
    ck.tensors.emplace(name, materialise(path, raw, *ref, storages.at(ref->storage->key), budget));
  }
  return ck;
}

// ---- zip format --------------------------------------------------------------------------

struct ZipArchive {
  zip_t* z = nullptr;
  ~ZipArchive() {
    if (z) zip_discard(z);
  }
};

std::string zip_message(int code) {
  zip_error_t e;
  zip_error_init_with_code(&e, code);
  std::string msg = zip_error_strerror(&e);
  zip_error_fini(&e);
  return msg;
}

// Reads entry `index` whole into `dst` (exactly `size` bytes).
void read_entry(zip_t* z, zip_uint64_t index, unsigned char* dst, zip_uint64_t size,
                const std::string& what) {
  zip_file_t* f = zip_fopen_index(z, index, 0);
  BIREF_CHECK(f, what, ": cannot open: ", zip_strerror(z));
  zip_uint64_t done = 0;
  while (done < size) {
    const zip_uint64_t chunk = std::min<zip_uint64_t>(size - done, zip_uint64_t(1) << 26);
    const zip_int64_t got = zip_fread(f, dst + done, chunk);
    if (got <= 0) {
      const std::string err =
          got < 0 ? zip_error_strerror(zip_file_get_error(f)) : "unexpected end";
      zip_fclose(f);
      fail(what, ": read failed after ", done, " of ", size, " bytes (", err,
           "; truncated or corrupt file?)");
    }
    done += zip_uint64_t(got);
  }
  const int rc = zip_fclose(f);
  BIREF_CHECK(rc == 0, what, ": ", zip_message(rc), " (corrupt file?)");
}

struct ZipEntry {
  zip_uint64_t index = 0;
  zip_uint64_t size = 0;       // inflated
  zip_uint64_t comp_size = 0;  // as stored in the archive
  bool stored = true;          // not compressed
};

ZipEntry stat_entry(zip_t* z, const std::string& path, const std::string& name) {
  zip_stat_t st;
  zip_stat_init(&st);
  const zip_int64_t idx = zip_name_locate(z, name.c_str(), 0);
  BIREF_CHECK(idx >= 0, "checkpoint '", path, "': the zip has no record '", name, "'");
  BIREF_CHECK(zip_stat_index(z, zip_uint64_t(idx), 0, &st) == 0 && (st.valid & ZIP_STAT_SIZE) &&
                  (st.valid & ZIP_STAT_COMP_SIZE),
              "checkpoint '", path, "': cannot read the zip record '", name, "'");
  // A stored record holds exactly its size; a deflated one cannot expand more than ~1032x.
  // Anything else is a zip bomb or a corrupt directory, caught before allocating for it.
  const bool stored = (st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method == ZIP_CM_STORE;
  BIREF_CHECK(stored ? st.size == st.comp_size : st.size / 1100 <= st.comp_size + 1, "checkpoint '",
              path, "': zip record '", name, "' claims ", st.size, " bytes from ", st.comp_size,
              " compressed (corrupt file?)");
  return {zip_uint64_t(idx), st.size, st.comp_size, stored};
}

Checkpoint load_zip(const std::string& path) {
  int err = 0;
  ZipArchive za;
  za.z = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
  BIREF_CHECK(za.z, "checkpoint '", path, "' is not a readable zip archive: ", zip_message(err),
              " (truncated or corrupt file?)");
  zip_t* z = za.z;

  // torch.save puts everything under one folder named after the file it first wrote; any name
  // is fine, as long as exactly one folder has a data.pkl.
  std::string prefix;
  int found = 0;
  const zip_int64_t n = zip_get_num_entries(z, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* name = zip_get_name(z, zip_uint64_t(i), 0);
    if (!name) continue;
    const std::string s = name;
    const size_t slash = s.find('/');
    if (slash != std::string::npos && s.compare(slash + 1, std::string::npos, "data.pkl") == 0) {
      prefix = s.substr(0, slash + 1);
      ++found;
    }
  }
  BIREF_CHECK(found == 1, "checkpoint '", path,
              "' is a zip but not a PyTorch checkpoint: ", found ? "more than one" : "no",
              " ARCHIVE/data.pkl record");

  bool big_endian = false;
  if (zip_name_locate(z, (prefix + "byteorder").c_str(), 0) >= 0) {
    const ZipEntry e = stat_entry(z, path, prefix + "byteorder");
    BIREF_CHECK(e.size <= 16, "checkpoint '", path, "': malformed byteorder record");
    std::string order(e.size, '\0');
    read_entry(z, e.index, reinterpret_cast<unsigned char*>(order.data()), e.size,
               str_cat("checkpoint '", path, "': byteorder"));
    BIREF_CHECK(order == "little" || order == "big", "checkpoint '", path, "': byteorder is '",
                order, "', expected 'little' or 'big'");
    big_endian = order == "big";
  }

  const ZipEntry pe = stat_entry(z, path, prefix + "data.pkl");
  BIREF_CHECK(pe.size <= kMaxPickleBytes, "checkpoint '", path, "': ", prefix, "data.pkl is ",
              pe.size, " bytes (", pe.stored ? "" : "inflated, ",
              "at most 64 MiB for a state_dict's pickle; a zip bomb?)");
  std::string pkl(pe.size, '\0');
  read_entry(z, pe.index, reinterpret_cast<unsigned char*>(pkl.data()), pe.size,
             str_cat("checkpoint '", path, "': ", prefix, "data.pkl"));
  pickle::Result res;
  pickle::load(pkl, str_cat("checkpoint '", path, "': ", prefix, "data.pkl"), res);
  BIREF_CHECK(res.consumed == pkl.size(), "checkpoint '", path, "': data.pkl has ",
              pkl.size() - res.consumed, " bytes after its end");

  const std::string archive = prefix.substr(0, prefix.size() - 1);
  // torch.save stores its records; a re-zipped checkpoint may deflate them. Weights hardly
  // compress (~1.1x), so deflated storages together may expand at most 8x, plus 64 MiB for
  // the small, constant tensors that do: a zip of zeros cannot claim gigabytes.
  uint64_t deflated_in = 0, deflated_out = 0;
  return build(
      path, str_cat("zip (archive '", archive, "', ", big_endian ? "big" : "little", "-endian)"),
      res.root, [&](const pickle::StorageRef& sr) {
        const std::string rec = prefix + "data/" + sr.key;
        const ZipEntry e = stat_entry(z, path, rec);
        if (!e.stored) {
          deflated_in += e.comp_size;
          deflated_out += e.size;
          BIREF_CHECK(deflated_out <= 8 * deflated_in + (uint64_t(64) << 20), "checkpoint '", path,
                      "': deflated storages expand to ", deflated_out, " bytes from ", deflated_in,
                      " (more than 8x + 64 MiB; a zip bomb?)");
        }
        const size_t esize = dtype_size(sr.dtype);
        BIREF_CHECK(e.size % esize == 0, "checkpoint '", path, "': record '", rec, "' holds ",
                    e.size, " bytes, not a whole number of ", dtype_name(sr.dtype), " elements");
        auto buf = alloc_bytes(e.size, str_cat("'", path, "' ", rec));
        read_entry(z, e.index, buf.get(), e.size, str_cat("checkpoint '", path, "': ", rec));
        Storage st;
        st.numel = int64_t(e.size / esize);
        if (big_endian) swap_bytes(buf.get(), st.numel, esize);
        st.bytes = buf.get();
        st.owner = std::shared_ptr<const void>(buf, buf.get());
        return st;
      });
}

// ---- legacy format -----------------------------------------------------------------------

Checkpoint load_legacy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  BIREF_CHECK(f.good(), "cannot open checkpoint '", path, "'");
  f.seekg(0, std::ios::end);
  const uint64_t file_size = uint64_t(f.tellg());
  f.seekg(0);

  // The pickles come first and are small next to the storages, but their length is only known
  // once parsed: read a growing prefix until the five of them fit.
  std::string head;
  size_t want = std::min<uint64_t>(file_size, 1 << 20);
  pickle::Result magic, proto, sysinfo, obj, keys;
  for (;;) {
    head.resize(want);
    f.seekg(0);
    f.read(head.data(), std::streamsize(want));
    BIREF_CHECK(f.gcount() == std::streamsize(want), "cannot read checkpoint '", path, "'");
    try {
      size_t at = 0;
      auto next = [&](pickle::Result& r, const char* what) {
        r = pickle::Result{};
        pickle::load(std::string_view(head).substr(at), str_cat("checkpoint '", path, "': ", what),
                     r);
        at += r.consumed;
      };
      next(magic, "legacy magic number");
      BIREF_CHECK((magic.root->is(Kind::BigInt) && magic.root->s.size() == sizeof kLegacyMagic &&
                   std::memcmp(magic.root->s.data(), kLegacyMagic, sizeof kLegacyMagic) == 0),
                  "checkpoint '", path,
                  "' starts like a pickle but is not a PyTorch checkpoint "
                  "(no legacy magic number)");
      next(proto, "legacy protocol version");
      BIREF_CHECK(proto.root->is(Kind::Int) && proto.root->i == kLegacyProtocol, "checkpoint '",
                  path, "': unsupported legacy protocol version");
      next(sysinfo, "legacy system info");
      next(obj, "data pickle");
      next(keys, "storage key list");
      head.resize(at);
      break;
    } catch (const Error& e) {
      // A pickle cut off by our read window: read more and parse again. Anything else, or a
      // window that already covers the file, is the real error.
      if (want == file_size ||
          std::string(e.what()).find("truncated pickle") == std::string::npos) {
        throw;
      }
      BIREF_CHECK(want < kMaxPickleBytes, "checkpoint '", path,
                  "': the pickles of the legacy format take more than 64 MiB, too large for a "
                  "state_dict (corrupt file?)");
      want = std::min<uint64_t>({file_size, uint64_t(want) * 4, kMaxPickleBytes});
    }
  }

  bool little = true;
  if (sysinfo.root->is(Kind::Dict)) {
    if (const Object* le = sysinfo.root->get("little_endian")) little = le->i != 0;
  }
  const Object* key_list = keys.root;
  BIREF_CHECK(key_list->is(Kind::List), "checkpoint '", path,
              "': malformed legacy file (the storage key list is a ",
              pickle::kind_name(key_list->kind), ")");

  // Each storage block's element size comes from the storage type the pickle names for it.
  std::map<std::string, DType> dtypes;
  for (const pickle::StorageRef& sr : obj.storages) dtypes.emplace(sr.key, sr.dtype);
  struct Block {
    uint64_t offset;  // of the data, after the count
    int64_t numel;
  };
  std::map<std::string, Block> blocks;
  uint64_t at = head.size();
  for (const Object* k : key_list->items) {
    BIREF_CHECK(k->is(Kind::Str), "checkpoint '", path, "': malformed legacy storage key");
    auto dt = dtypes.find(k->s);
    BIREF_CHECK(dt != dtypes.end(), "checkpoint '", path, "': legacy storage '", k->s,
                "' is listed but never used, so its element size is unknown");
    unsigned char cnt[8];
    BIREF_CHECK(at + 8 <= file_size, "checkpoint '", path, "' is truncated: legacy storage '", k->s,
                "' starts past the end of the file");
    f.seekg(std::streamoff(at));
    f.read(reinterpret_cast<char*>(cnt), 8);
    BIREF_CHECK(f.gcount() == 8, "cannot read checkpoint '", path, "'");
    uint64_t numel = 0;
    for (int i = 0; i < 8; ++i) numel |= uint64_t(cnt[little ? i : 7 - i]) << (8 * i);
    const uint64_t esize = dtype_size(dt->second);
    BIREF_CHECK(numel <= (file_size - at - 8) / esize, "checkpoint '", path,
                "' is truncated: legacy storage '", k->s, "' has ", numel, " ",
                dtype_name(dt->second), " elements but only ", file_size - at - 8,
                " bytes remain (storage shorter than its tensor)");
    blocks[k->s] = {at + 8, int64_t(numel)};
    at += 8 + numel * esize;
  }

  return build(path, little ? "legacy (little-endian)" : "legacy (big-endian)", obj.root,
               [&](const pickle::StorageRef& sr) {
                 auto b = blocks.find(sr.key);
                 BIREF_CHECK(b != blocks.end(), "checkpoint '", path, "': storage '", sr.key,
                             "' is used but not in the file");
                 const size_t esize = dtype_size(sr.dtype);
                 const size_t nbytes = size_t(b->second.numel) * esize;
                 auto buf = alloc_bytes(nbytes, str_cat("'", path, "' storage ", sr.key));
                 f.seekg(std::streamoff(b->second.offset));
                 f.read(reinterpret_cast<char*>(buf.get()), std::streamsize(nbytes));
                 BIREF_CHECK(f.gcount() == std::streamsize(nbytes), "cannot read checkpoint '",
                             path, "' (storage ", sr.key, ")");
                 if (!little) swap_bytes(buf.get(), b->second.numel, esize);
                 Storage st;
                 st.numel = b->second.numel;
                 st.bytes = buf.get();
                 st.owner = std::shared_ptr<const void>(buf, buf.get());
                 return st;
               });
}

}  // namespace

bool looks_like_pth(const unsigned char* head, size_t n) {
  // Four bytes each, so that a safetensors file whose header length happens to start with 0x80
  // or "PK" is never taken for one: a zip local header "PK\3\4", or the legacy format's first
  // pickle PROTO n, LONG1 of 10 bytes (the magic number).
  if (n < 4) return false;
  const bool zip = head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
  const bool legacy =
      head[0] == 0x80 && head[1] >= 2 && head[1] <= 5 && head[2] == 0x8a && head[3] == 0x0a;
  return zip || legacy;
}

Checkpoint load_pth(const std::string& path) {
  check_readable_file(path, "checkpoint");  // a FIFO or device would block or never end
  unsigned char head[4] = {};
  {
    std::ifstream f(path, std::ios::binary);
    BIREF_CHECK(f.good(), "cannot open checkpoint '", path, "'");
    f.read(reinterpret_cast<char*>(head), 4);
    BIREF_CHECK(looks_like_pth(head, size_t(f.gcount())), "checkpoint '", path,
                "' is not a PyTorch checkpoint (neither a zip archive nor the legacy format)");
  }
  if (head[0] == 'P') return load_zip(path);
  return load_legacy(path);
}

void write_zip(const std::string& path,
               const std::vector<std::pair<std::string, std::string>>& entries, bool deflate) {
  AtomicFile out(path);
  const std::string& tmp = out.temp_path();
  int err = 0;
  zip_t* z = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  BIREF_CHECK(z, "cannot create '", tmp, "': ", zip_message(err));
  for (const auto& [name, bytes] : entries) {
    zip_source_t* src = zip_source_buffer(z, bytes.data(), bytes.size(), 0);
    const zip_int64_t idx = src ? zip_file_add(z, name.c_str(), src, ZIP_FL_OVERWRITE) : -1;
    if (idx < 0) {
      if (src) zip_source_free(src);
      const std::string msg = zip_strerror(z);
      zip_discard(z);
      fail("cannot add '", name, "' to '", path, "': ", msg);
    }
    zip_set_file_compression(z, zip_uint64_t(idx), deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE,
                             deflate ? 1 : 0);
  }
  if (zip_close(z) != 0) {
    const std::string msg = zip_strerror(z);
    zip_discard(z);
    fail("cannot write '", path, "': ", msg);
  }
  out.commit();
}

}  // namespace biref
