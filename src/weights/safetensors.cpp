#include "weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/check.h"
#include "core/file.h"

namespace biref {

namespace {

// The header of BiRefNet's 687 tensors takes about 70 KB; 16 MiB is room for 100k tensors.
constexpr uint64_t kMaxHeaderBytes = 16u << 20;
constexpr int kMaxHeaderDepth = 4;

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) munmap(addr, size);
  }
};

}  // namespace

Checkpoint load_safetensors(const std::string& path) {
  check_readable_file(path, "checkpoint");  // a FIFO or device would block or never end
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  BIREF_CHECK(fd >= 0, "cannot open checkpoint '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("checkpoint '", path, "' is not a regular file");
  }
  const size_t file_size = size_t(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail("checkpoint '", path, "' is truncated: ", file_size, " bytes, no safetensors header");
  }
  auto map = std::make_shared<Mapping>();
  map->size = file_size;
  map->addr = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  BIREF_CHECK(map->addr != MAP_FAILED, "cannot map checkpoint '", path, "'");
  const auto* bytes = static_cast<const unsigned char*>(map->addr);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | bytes[i];
  BIREF_CHECK(header_len > 1 && header_len <= file_size - 8, "checkpoint '", path,
              "' is not a valid safetensors file: header length ", header_len, " but the file has ",
              file_size, " bytes");
  BIREF_CHECK(header_len <= kMaxHeaderBytes, "checkpoint '", path, "': its safetensors header is ",
              header_len, " bytes, more than the ", kMaxHeaderBytes, " biref reads");
  nlohmann::json header;
  try {
    // The format nests three levels ({name: {shape: [...]}}): deeper input is refused as it is
    // read, before the parser builds it (20 MB of '[' would otherwise take gigabytes).
    const auto limit_depth = [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      if (depth > kMaxHeaderDepth)
        fail("checkpoint '", path, "': its safetensors header nests deeper than ", kMaxHeaderDepth,
             " levels");
      return true;
    };
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len, limit_depth);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("checkpoint '", path, "' has a corrupt safetensors header: ", e.what());
  }
  BIREF_CHECK(header.is_object(), "checkpoint '", path, "': safetensors header is not an object");
  const size_t data_begin = 8 + header_len;
  const size_t data_size = file_size - data_begin;

  Checkpoint ck;
  ck.path = path;
  ck.format = "safetensors";
  ck.file_identity = file_identity(st);
  std::shared_ptr<const void> owner(map, map->addr);
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& raw_name = it.key();
    const auto& v = it.value();
    if (raw_name == "__metadata__") {
      if (v.is_object()) {
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (m.value().is_string()) ck.metadata[m.key()] = m.value().get<std::string>();
        }
      }
      continue;
    }
    try {
      TensorData t;
      t.dtype = dtype_from_name(v.at("dtype").get<std::string>());
      // Sizes are checked for overflow before anything trusts them: a header may claim any shape.
      const auto& shape = v.at("shape");
      BIREF_CHECK(shape.is_array(), "shape must be a list of integers, got ", shape.dump());
      uint64_t elems = 1;
      for (const auto& d : shape) {
        BIREF_CHECK(d.is_number_integer(), "shape ", shape.dump(), " holds ", d.dump(),
                    ", not an integer");
        BIREF_CHECK(d.is_number_unsigned(), "shape ", shape.dump(), " has a negative dimension");
        const uint64_t dim = d.get<uint64_t>();
        BIREF_CHECK(dim == 0 || elems <= (uint64_t(1) << 50) / dim, "shape ", shape.dump(),
                    " is too large (more than 2^50 elements)");
        elems *= dim;
        t.shape.push_back(int64_t(dim));
      }
      const auto& offs = v.at("data_offsets");
      BIREF_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_integer() &&
                      offs[1].is_number_integer(),
                  "data_offsets must be [begin, end] (two integers), got ", offs.dump());
      BIREF_CHECK(offs[0].is_number_unsigned() && offs[1].is_number_unsigned(), "data_offsets ",
                  offs.dump(), " are negative");
      const uint64_t b = offs[0].get<uint64_t>(), e = offs[1].get<uint64_t>();
      BIREF_CHECK(b <= e, "data_offsets ", offs.dump(), " end before they begin");
      BIREF_CHECK(e <= data_size, "data [", b, ", ", e, ") lies outside the ", data_size,
                  " data bytes of the file (truncated?)");
      BIREF_CHECK(e - b == t.nbytes(), "data is ", e - b, " bytes but ", dtype_name(t.dtype), " ",
                  shape_str(t.shape), " needs ", t.nbytes());
      ranges.push_back({b, e, raw_name});
      t.data = bytes + data_begin + b;
      t.owner = owner;
      t.file_mapped = true;
      const std::string name = strip_wrapper_prefixes(raw_name);
      BIREF_CHECK(!ck.tensors.count(name), "duplicate tensor after stripping prefixes");
      ck.tensors.emplace(name, std::move(t));
    } catch (const Error& e) {
      fail("checkpoint '", path, "': tensor '", raw_name, "': ", e.what());
    } catch (const std::exception& e) {
      fail("checkpoint '", path, "': tensor '", raw_name,
           "' has a malformed header entry: ", e.what());
    }
  }
  // Tensors must not share bytes: an overlap would make two different weights one.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  const Range* reach = nullptr;  // of the ranges so far, the one that ends last
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;  // empty tensors hold no bytes
    BIREF_CHECK(!reach || r.begin >= reach->end, "checkpoint '", path, "': tensors '", reach->name,
                "' [", reach->begin, ", ", reach->end, ") and '", r.name, "' [", r.begin, ", ",
                r.end, ") overlap in the data");
    if (!reach || r.end > reach->end) reach = &r;
  }
  return ck;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, TensorData>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h.push_back(' ');  // keep the data 8-byte aligned

  AtomicFile out(path);
  std::ofstream f(out.temp_path(), std::ios::binary | std::ios::trunc);
  BIREF_CHECK(f.good(), "cannot write '", path, "'");
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (uint64_t(h.size()) >> (8 * i)) & 0xff;
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(h.data(), std::streamsize(h.size()));
  for (const auto& [name, t] : tensors)
    f.write(static_cast<const char*>(t.data), std::streamsize(t.nbytes()));
  f.flush();
  BIREF_CHECK(f.good(), "error writing '", path, "' (disk full?)");
  f.close();
  out.commit();
}

}  // namespace biref
