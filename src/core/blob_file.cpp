#include "core/blob_file.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/check.h"

namespace biref {

namespace {

namespace fs = std::filesystem;

constexpr size_t kHuge = size_t(2) << 20;
constexpr char kMagic[8] = {'B', 'I', 'R', 'E', 'F', 'B', 'L', 'B'};
constexpr uint64_t kFormat = 1;

struct Trailer {
  char magic[8];
  uint64_t format, index_offset, index_bytes;
};
static_assert(sizeof(Trailer) == 32);

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

// Sums of one block of at most 2 MiB: 8 lanes of (Σw, ΣΣw) over its 64-bit words, the last
// word zero-padded.
uint64_t block_sum(const unsigned char* p, size_t n) {
  uint64_t a[8] = {}, b[8] = {};
  const size_t words = n / 8, full = words / 8 * 8;
  for (size_t i = 0; i < full; i += 8) {
    for (int l = 0; l < 8; ++l) {
      uint64_t w;
      std::memcpy(&w, p + (i + l) * 8, 8);
      a[l] += w;
      b[l] += a[l];
    }
  }
  uint64_t tail[8] = {};
  std::memcpy(tail, p + full * 8, n - full * 8);
  for (int l = 0; l < 8; ++l) {
    a[l] += tail[l];
    b[l] += a[l];
  }
  uint64_t h = 0x243f6a8885a308d3ull;
  for (int l = 0; l < 8; ++l) {
    h = (h ^ a[l]) * 0x100000001b3ull;
    h = (h ^ b[l]) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
  }
  return h;
}

uint64_t combine(uint64_t h, uint64_t block) {
  h = (h ^ block) * 0x9e3779b97f4a7c15ull;
  return h ^ (h >> 31);
}

std::string hex64(uint64_t v) {
  char s[17];
  std::snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(v));
  return s;
}

// FilePmdMapped of the mapping that starts at `start`, in bytes (0 when not found).
size_t pmd_mapped_bytes(const void* start) {
  std::ifstream in("/proc/self/smaps");
  char head[32];
  std::snprintf(head, sizeof head, "%lx-", static_cast<unsigned long>(uintptr_t(start)));
  std::string line;
  bool inside = false;
  size_t pmd = 0;
  while (std::getline(in, line)) {
    // "start-end perms offset dev inode path" heads each mapping's fields ("Name:  N kB")
    const size_t dash = line.find('-'), space = line.find(' ');
    bool is_header =
        dash != std::string::npos && dash > 0 && space != std::string::npos && dash < space;
    for (size_t i = 0; is_header && i < dash; ++i)
      is_header = std::isxdigit(static_cast<unsigned char>(line[i])) != 0;
    if (is_header) {
      if (inside) return pmd;
      inside = line.rfind(head, 0) == 0;
    } else if (inside &&
               (line.rfind("FilePmdMapped:", 0) == 0 || line.rfind("ShmemPmdMapped:", 0) == 0)) {
      // (tmpfs mounted with huge=: ShmemPmdMapped)
      pmd += size_t(std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10)) * 1024;
    }
  }
  return pmd;
}

}  // namespace

uint64_t checksum64(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  const int64_t blocks = int64_t((bytes + kHuge - 1) / kHuge);
  std::vector<uint64_t> sums(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < blocks; ++i)
    sums[size_t(i)] = block_sum(p + size_t(i) * kHuge, std::min(kHuge, bytes - size_t(i) * kHuge));
  uint64_t h = bytes;
  for (uint64_t s : sums) h = combine(h, s);
  return h;
}

std::unique_ptr<BlobFile> BlobFile::open(const std::string& path, const std::string& key,
                                         std::string& why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    why = errno == ENOENT ? "none yet" : str_cat("cannot open it: ", std::strerror(errno));
    return nullptr;
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    why = "not a regular file";
    return nullptr;
  }
  // What is mapped runs as the model: only a file of this user that no one else may write.
  if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    why = "not this user's, or writable by others";
    return nullptr;
  }
  const size_t size = size_t(st.st_size);
  Trailer t{};
  if (size < sizeof t || pread(fd, &t, sizeof t, off_t(size - sizeof t)) != ssize_t(sizeof t) ||
      std::memcmp(t.magic, kMagic, sizeof kMagic) != 0) {
    why = "not a blob file, or cut short";
    return nullptr;
  }
  if (t.format != kFormat) {
    why = str_cat("format ", t.format, ", not ", kFormat);
    return nullptr;
  }
  if (t.index_offset % kHuge != 0 || t.index_offset > size || t.index_bytes > size ||
      t.index_offset + t.index_bytes + sizeof t != size || t.index_bytes > (size_t(64) << 20)) {
    why = "damaged (its index is not where the trailer says)";
    return nullptr;
  }
  std::string text(size_t(t.index_bytes), '\0');
  if (pread(fd, text.data(), text.size(), off_t(t.index_offset)) != ssize_t(text.size())) {
    why = "cut short";
    return nullptr;
  }
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const std::exception&) {
    why = "damaged (its index is not JSON)";
    return nullptr;
  }
  std::unique_ptr<BlobFile> f(new BlobFile);
  try {
    if (index.at("key").get<std::string>() != key) {
      why = "written for other weights or by other code";
      return nullptr;
    }
    f->data_bytes_ = size_t(t.index_offset);
    for (const auto& e : index.at("blobs")) {
      Blob b;
      b.name = e.at("name").get<std::string>();
      b.layout = e.at("layout").get<std::string>();
      const uint64_t offset = e.at("offset").get<uint64_t>();
      b.bytes = e.at("bytes").get<uint64_t>();
      if (offset % 64 != 0 || offset > f->data_bytes_ || b.bytes > f->data_bytes_ - offset) {
        why = str_cat("damaged (blob '", b.name, "' lies outside the data)");
        return nullptr;
      }
      b.data = reinterpret_cast<const void*>(uintptr_t(offset));  // relocated below
      f->blobs_.push_back(std::move(b));
    }
    const std::string sum = index.at("checksum").get<std::string>();
    // The data at a 2 MiB-aligned address, for huge pages.
    if (f->data_bytes_ > 0) {
      f->map_len_ = f->data_bytes_ + kHuge;
      f->map_ =
          mmap(nullptr, f->map_len_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (f->map_ == MAP_FAILED) {
        f->map_ = nullptr;
        why = "no address space to map it";
        return nullptr;
      }
      char* base = reinterpret_cast<char*>(round_up(uintptr_t(f->map_), kHuge));
      if (mmap(base, f->data_bytes_, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0) == MAP_FAILED) {
        why = str_cat("cannot map it: ", std::strerror(errno));
        return nullptr;
      }
      madvise(base, f->data_bytes_, MADV_HUGEPAGE);
      if (hex64(checksum64(base, f->data_bytes_)) != sum) {
        why = "damaged (its checksum does not match)";
        return nullptr;
      }
      f->huge_pages_ = pmd_mapped_bytes(base) >= f->data_bytes_ / 10 * 9;
      for (Blob& b : f->blobs_) b.data = base + uintptr_t(b.data);
    }
  } catch (const nlohmann::json::exception&) {
    why = "damaged (its index lacks a field)";
    return nullptr;
  }
  return f;
}

BlobFile::~BlobFile() {
  if (map_) munmap(map_, map_len_);
}

void write_blob_file(const std::string& path, const std::string& key,
                     const std::vector<Blob>& blobs) {
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  BIREF_CHECK(!ec, "cannot write '", path, "': cannot create folder '", dir.string(),
              "': ", ec.message());
  // Temporary files (AtomicFile's ".NAME.tmp-N") more than an hour old are from writers that
  // were killed: 170 MB each.
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(".", 0) != 0 || n.find(".tmp-") == std::string::npos) continue;
    std::error_code ec2;
    const auto t = fs::last_write_time(e.path(), ec2);
    if (!ec2 && fs::file_time_type::clock::now() - t > std::chrono::hours(1))
      fs::remove(e.path(), ec2);
  }
  AtomicFile out(path);
  const int fd = ::open(out.temp_path().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  BIREF_CHECK(fd >= 0, "cannot write '", path, "': ", std::strerror(errno));
  ::fchmod(fd, 0644);  // whatever the umask: open() refuses a file others may write
  struct Closer {
    int fd;
    ~Closer() {
      if (fd >= 0) ::close(fd);
    }
  } closer{fd};
  auto write_all = [&](const void* p, size_t n) {
    const auto* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      BIREF_CHECK(w > 0, "cannot write '", path, "': ", w < 0 ? std::strerror(errno) : "no space");
      c += w;
      n -= size_t(w);
    }
  };

  // The data through one 2 MiB buffer: each write() fills a whole 2 MiB-aligned part of the
  // file (see the header), and the checksum takes the same blocks as checksum64() would.
  std::vector<unsigned char> buffer(kHuge);
  size_t filled = 0, offset = 0;
  std::vector<uint64_t> block_sums;
  auto flush = [&] {
    std::memset(buffer.data() + filled, 0, kHuge - filled);
    block_sums.push_back(block_sum(buffer.data(), kHuge));
    write_all(buffer.data(), kHuge);
    filled = 0;
  };
  auto put = [&](const unsigned char* p, size_t n) {
    while (n > 0) {
      const size_t k = std::min(n, kHuge - filled);
      if (p)
        std::memcpy(buffer.data() + filled, p, k);
      else
        std::memset(buffer.data() + filled, 0, k);
      filled += k;
      offset += k;
      if (p) p += k;
      n -= k;
      if (filled == kHuge) flush();
    }
  };
  nlohmann::json entries = nlohmann::json::array();
  for (const Blob& b : blobs) {
    put(nullptr, round_up(offset, 64) - offset);
    entries.push_back(
        {{"name", b.name}, {"layout", b.layout}, {"offset", offset}, {"bytes", b.bytes}});
    put(static_cast<const unsigned char*>(b.data), b.bytes);
  }
  if (filled > 0) flush();
  const size_t data_bytes = block_sums.size() * kHuge;
  uint64_t sum = data_bytes;  // as checksum64() over the data
  for (uint64_t s : block_sums) sum = combine(sum, s);
  const std::string index =
      nlohmann::json{{"key", key}, {"blobs", entries}, {"checksum", hex64(sum)}}.dump();
  write_all(index.data(), index.size());
  Trailer t{};
  std::memcpy(t.magic, kMagic, sizeof kMagic);
  t.format = kFormat;
  t.index_offset = data_bytes;
  t.index_bytes = index.size();
  write_all(&t, sizeof t);
  const int err = ::close(fd) == 0 ? 0 : errno;
  closer.fd = -1;
  BIREF_CHECK(err == 0, "cannot write '", path, "': ", std::strerror(err));
  out.commit(/*durable=*/false);
}

std::string code_build_id() {
  struct Find {
    uintptr_t code;
    std::string id;
  } find{reinterpret_cast<uintptr_t>(&code_build_id), {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* arg) -> int {
        auto& f = *static_cast<Find*>(arg);
        bool holds = false;
        for (int i = 0; i < info->dlpi_phnum && !holds; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          const uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
          holds = ph.p_type == PT_LOAD && f.code >= begin && f.code < begin + ph.p_memsz;
        }
        if (!holds) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_NOTE) continue;
          const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
          const unsigned char* end = p + ph.p_memsz;
          while (p + sizeof(ElfW(Nhdr)) <= end) {
            const auto* n = reinterpret_cast<const ElfW(Nhdr)*>(p);
            const unsigned char* name = p + sizeof(ElfW(Nhdr));
            const unsigned char* desc = name + round_up(n->n_namesz, 4);
            if (desc + n->n_descsz > end) break;
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 &&
                std::memcmp(name, "GNU", 4) == 0) {
              static const char digits[] = "0123456789abcdef";
              for (size_t k = 0; k < n->n_descsz; ++k) {
                f.id.push_back(digits[desc[k] >> 4]);
                f.id.push_back(digits[desc[k] & 15]);
              }
              return 1;
            }
            p = desc + round_up(n->n_descsz, 4);
          }
        }
        return 1;
      },
      &find);
  return find.id;
}

}  // namespace biref
