// The packed-weight cache: the blob file format (core/blob_file.h) and Model::load reading the
// CPU backend's packed weights from it (LoadOptions::weight_cache), which must compute exactly
// what a load that packs computes, and fall back to packing on any cache it cannot trust.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "biref/biref.h"
#include "core/blob_file.h"
#include "core/check.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace biref {
namespace {

// Tests (and the programs they start) load without the cache unless a test asks for it, so no
// run writes into the user's cache folder.
const bool kCacheOffByDefault = [] {
  setenv("BIREF_WEIGHT_CACHE", "0", 1);
  return true;
}();

using test::TempDir;

std::vector<unsigned char> bytes_of(size_t n, uint32_t seed) {
  std::vector<unsigned char> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<unsigned char>(x >> 24);
  }
  return v;
}

void flip_byte(const fs::path& p, size_t offset) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(offset));
  char c = 0;
  f.read(&c, 1);
  c = char(c ^ 0x10);
  f.seekp(std::streamoff(offset));
  f.write(&c, 1);
}

TEST(BlobFile, WritesAndReadsBackEveryBlob) {
  TempDir dir("biref-blobs");
  // sizes around the 2 MiB write buffer and the 64-byte alignment, and an empty blob
  const std::vector<size_t> sizes = {
      0, 1, 63, 64, 65, (size_t(2) << 20) - 7, (size_t(3) << 20) + 5, 4096};
  std::vector<std::vector<unsigned char>> data;
  std::vector<Blob> blobs;
  for (size_t i = 0; i < sizes.size(); ++i) {
    data.push_back(bytes_of(sizes[i], uint32_t(i + 1)));
    blobs.push_back({str_cat("blob", i), str_cat("layout ", i), data.back().data(), sizes[i]});
  }
  const std::string path = (dir.path() / "sub" / "a.pack").string();  // the folder is created
  write_blob_file(path, "key 1", blobs);

  std::string why;
  auto f = BlobFile::open(path, "key 1", why);
  ASSERT_TRUE(f) << why;
  ASSERT_EQ(f->blobs().size(), blobs.size());
  EXPECT_EQ(f->data_bytes() % (size_t(2) << 20), 0u);
  for (size_t i = 0; i < blobs.size(); ++i) {
    const Blob& b = f->blobs()[i];
    EXPECT_EQ(b.name, blobs[i].name);
    EXPECT_EQ(b.layout, blobs[i].layout);
    ASSERT_EQ(b.bytes, sizes[i]);
    EXPECT_EQ(uintptr_t(b.data) % 64, 0u) << i;
    if (sizes[i] > 0) {
      EXPECT_EQ(std::memcmp(b.data, data[i].data(), sizes[i]), 0) << i;
    }
  }
  // mapped at a 2 MiB boundary (huge pages where the filesystem keeps large folios)
  EXPECT_EQ(uintptr_t(f->blobs()[0].data) % (size_t(2) << 20), 0u);
  std::printf("blob file mapped with huge pages: %s\n", f->huge_pages() ? "yes" : "no");

  // only complete files under their name: no temporary left beside it
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path() / "sub")) files += e.is_regular_file();
  EXPECT_EQ(files, 1);

  // no blobs at all is a valid file too
  write_blob_file((dir.path() / "empty.pack").string(), "k", {});
  auto e = BlobFile::open((dir.path() / "empty.pack").string(), "k", why);
  ASSERT_TRUE(e) << why;
  EXPECT_TRUE(e->blobs().empty());
}

TEST(BlobFile, RefusesAnotherKeyAndDamagedFiles) {
  TempDir dir("biref-blobs");
  const auto a = bytes_of(size_t(5) << 20, 7);
  const fs::path path = dir.path() / "a.pack";
  write_blob_file(path.string(), "the key", {{"w", "l", a.data(), a.size()}});
  std::string why;
  ASSERT_TRUE(BlobFile::open(path.string(), "the key", why)) << why;

  EXPECT_FALSE(BlobFile::open(path.string(), "another key", why));
  EXPECT_EQ(why, "written for other weights or by other code");
  EXPECT_FALSE(BlobFile::open((dir.path() / "none.pack").string(), "the key", why));
  EXPECT_EQ(why, "none yet");

  const auto size = fs::file_size(path);
  {
    const fs::path damaged = dir.path() / "damaged.pack";
    fs::copy_file(path, damaged);
    flip_byte(damaged, 3 << 20);  // one bit of the data
    EXPECT_FALSE(BlobFile::open(damaged.string(), "the key", why));
    EXPECT_EQ(why, "damaged (its checksum does not match)");
  }
  {
    const fs::path cut = dir.path() / "cut.pack";
    fs::copy_file(path, cut);
    fs::resize_file(cut, size - 100);
    EXPECT_FALSE(BlobFile::open(cut.string(), "the key", why));
    EXPECT_EQ(why, "not a blob file, or cut short");
    fs::resize_file(cut, 0);
    EXPECT_FALSE(BlobFile::open(cut.string(), "the key", why));
  }
  {
    const fs::path other = dir.path() / "other.pack";
    std::ofstream(other) << "not a blob file at all, but long enough to hold a trailer";
    EXPECT_FALSE(BlobFile::open(other.string(), "the key", why));
    EXPECT_EQ(why, "not a blob file, or cut short");
  }
  EXPECT_FALSE(BlobFile::open(dir.path().string(), "the key", why));  // a folder

  // an index whose blob lies past the data, and a trailer that points past the file
  auto raw = [&](const std::string& index, uint64_t index_offset, uint64_t index_bytes) {
    const fs::path p = dir.path() / "raw.pack";
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    const std::string data(size_t(2) << 20, '\0');
    f.write(data.data(), std::streamsize(data.size()));
    f.write(index.data(), std::streamsize(index.size()));
    const uint64_t t[4] = {0, 1, index_offset, index_bytes};
    f.write("BIREFBLB", 8);
    f.write(reinterpret_cast<const char*>(t + 1), 24);
    f.close();
    return p.string();
  };
  const std::string outside = nlohmann::json{
      {"key", "k"},
      {"blobs", {{{"name", "w"}, {"layout", "l"}, {"offset", 2 << 20}, {"bytes", 64}}}},
      {"checksum", "0"}}.dump();
  EXPECT_FALSE(BlobFile::open(raw(outside, 2 << 20, outside.size()), "k", why));
  EXPECT_EQ(why, "damaged (blob 'w' lies outside the data)");
  EXPECT_FALSE(BlobFile::open(raw(outside, 2 << 20, outside.size() + 1), "k", why));
  EXPECT_EQ(why, "damaged (its index is not where the trailer says)");
  EXPECT_FALSE(BlobFile::open(raw(outside, uint64_t(-1) / 2 * 2, outside.size()), "k", why));
  EXPECT_EQ(why, "damaged (its index is not where the trailer says)");
  const std::string not_json = "{\"key\": ";
  EXPECT_FALSE(BlobFile::open(raw(not_json, 2 << 20, not_json.size()), "k", why));
  EXPECT_EQ(why, "damaged (its index is not JSON)");

  // someone else may write it: refused
  fs::permissions(path, fs::perms::group_write, fs::perm_options::add);
  EXPECT_FALSE(BlobFile::open(path.string(), "the key", why));
  EXPECT_EQ(why, "not this user's, or writable by others");
}

TEST(BlobFile, ChecksumSeesOrderAndEveryBit) {
  auto a = bytes_of((size_t(4) << 20) + 24, 3);
  const uint64_t h = checksum64(a.data(), a.size());
  EXPECT_EQ(h, checksum64(a.data(), a.size()));
  std::swap(a[8], a[16 + 8]);  // two words swapped within one lane... and across lanes
  std::swap(a[0], a[64]);
  EXPECT_NE(checksum64(a.data(), a.size()), h);
  std::swap(a[0], a[64]);
  std::swap(a[8], a[16 + 8]);
  ASSERT_EQ(checksum64(a.data(), a.size()), h);
  for (size_t at : {size_t(0), size_t(1) << 20, a.size() - 1}) {
    a[at] ^= 1;
    EXPECT_NE(checksum64(a.data(), a.size()), h) << at;
    a[at] ^= 1;
  }
  // two 2 MiB blocks exchanged
  std::vector<unsigned char> b(a);
  std::swap_ranges(b.begin(), b.begin() + (2 << 20), b.begin() + (2 << 20));
  EXPECT_NE(checksum64(b.data(), b.size()), h);
  EXPECT_NE(checksum64(a.data(), a.size() - 1), h);  // the length counts
}

TEST(BlobFile, BuildIdOfThisBinary) {
  const std::string id = code_build_id();
  std::printf("build ID: %s\n", id.c_str());
  EXPECT_GE(id.size(), 16u);  // Debian's toolchain links one in
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
}

HostTensor input(int w, int h, uint32_t seed) {
  HostTensor x;
  x.shape = {1, 3, h, w};
  x.data = test::random_vector(size_t(3) * w * h, seed);
  return x;
}

// A swin_v1_t checkpoint file, and a cache folder with the cache on, for one test.
class WeightCache : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto r = test::run_cli("convert --synthetic swin_v1_t " + checkpoint().string());
    ASSERT_EQ(r.code, 0) << r.all();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove(checkpoint(), ec);
  }
  static fs::path checkpoint() {
    return fs::temp_directory_path() / str_cat("biref-cache-model-", getpid(), ".safetensors");
  }
  fs::path cache_file() const {
    for (const auto& e : fs::recursive_directory_iterator(dir_.path()))
      if (e.path().extension() == ".pack") return e.path();
    return {};
  }
  std::unique_ptr<Model> load(bool cache = true) {
    LoadOptions o;
    o.weight_cache = cache;
    // A fixed count: with automatic threads a pass beside a busy CPU may run another count,
    // whose primitives sum in another order.
    o.threads = 2;
    return Model::load(checkpoint().string(), o);
  }

  TempDir dir_{"biref-cache"};
  test::ScopedEnv env_cache_{"BIREF_CACHE", dir_.path().string()};
  test::ScopedEnv env_on_{"BIREF_WEIGHT_CACHE", nullptr};
  const HostTensor x_ = input(64, 96, 5);
};

TEST_F(WeightCache, SecondLoadReadsTheCacheAndComputesTheSame) {
  auto packed = load(/*cache=*/false);
  EXPECT_EQ(packed->info().weight_cache, "off (LoadOptions::weight_cache is false)");
  EXPECT_TRUE(cache_file().empty());
  const std::vector<float> want = packed->forward(x_).data;

  auto first = load();
  const std::string w = first->info().weight_cache;
  std::printf("first load: %s\n", w.c_str());
  EXPECT_EQ(w.rfind("written to " + (dir_.path() / "packed").string() + "/", 0), 0u) << w;
  EXPECT_NE(w.find("the cache was none yet"), std::string::npos) << w;
  ASSERT_FALSE(cache_file().empty());
  EXPECT_EQ(first->forward(x_).data, want);

  auto second = load();
  const std::string r = second->info().weight_cache;
  std::printf("second load: %s\n", r.c_str());
  EXPECT_EQ(r.rfind("read from " + cache_file().string() + " (131 packed weights, 170 MiB", 0), 0u)
      << r;
  const bool mapped = r.find(", mapped)") != std::string::npos;
  std::printf("the cache was used %s\n", mapped ? "in place (huge pages)" : "as a copy");
  EXPECT_EQ(second->forward(x_).data, want);  // bit for bit
  EXPECT_EQ(second->weight_bytes(), packed->weight_bytes());
  // a model from the cache serves forks (other threads) and other sizes like any other
  auto fork = second->fork();
  EXPECT_EQ(fork->forward(x_).data, want);
  const HostTensor y = input(96, 64, 6);
  EXPECT_EQ(second->forward(y).data, packed->forward(y).data);
}

TEST_F(WeightCache, DamagedOrStaleCachesArePackedAgain) {
  const std::vector<float> want = load(false)->forward(x_).data;
  ASSERT_EQ(load()->info().weight_cache.rfind("written to ", 0), 0u);
  const fs::path file = cache_file();

  // a bit of the packed data
  flip_byte(file, 5 << 20);
  auto m = load();
  EXPECT_NE(m->info().weight_cache.find("the cache was damaged (its checksum does not match)"),
            std::string::npos)
      << m->info().weight_cache;
  EXPECT_EQ(m->forward(x_).data, want);
  ASSERT_EQ(load()->info().weight_cache.rfind("read from ", 0), 0u);  // rewritten whole

  // cut short
  fs::resize_file(file, fs::file_size(file) / 2);
  m = load();
  EXPECT_NE(m->info().weight_cache.find("the cache was not a blob file, or cut short"),
            std::string::npos)
      << m->info().weight_cache;
  EXPECT_EQ(m->forward(x_).data, want);

  // the checkpoint touched (a modification time 1 ns later, so a new change time too): its old
  // packing is not used
  const auto t = fs::last_write_time(checkpoint());
  fs::last_write_time(checkpoint(), t + std::chrono::nanoseconds(1));
  m = load();
  EXPECT_NE(m->info().weight_cache.find("the cache was written for other weights or by other code"),
            std::string::npos)
      << m->info().weight_cache;
  EXPECT_EQ(m->forward(x_).data, want);
  EXPECT_EQ(load()->info().weight_cache.rfind("read from ", 0), 0u);
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir_.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);  // one entry per checkpoint path, replaced
}

// The cache's key, read back from its index (as a test that rewrites the file needs it).
std::string key_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  f.seekg(-24, std::ios::end);
  uint64_t t[3];
  f.read(reinterpret_cast<char*>(t), 24);
  std::string index(size_t(t[2]), '\0');
  f.seekg(std::streamoff(t[1]));
  f.read(index.data(), std::streamsize(index.size()));
  return nlohmann::json::parse(index).at("key").get<std::string>();
}

TEST_F(WeightCache, ACacheOutOfStepFromSomeBlobOnIsPackedFromThere) {
  const std::vector<float> want = load(false)->forward(x_).data;
  ASSERT_EQ(load()->info().weight_cache.rfind("written to ", 0), 0u);
  const fs::path file = cache_file();
  const std::string key = key_of(file);
  {
    std::string why;
    auto f = BlobFile::open(file.string(), key, why);
    ASSERT_TRUE(f) << why;
    std::vector<Blob> blobs = f->blobs();
    ASSERT_GT(blobs.size(), 60u);
    blobs[50].layout += " (another)";  // from the 51st on, the model packs
    write_blob_file(file.string(), key, blobs);
  }
  auto m = load();
  EXPECT_NE(m->info().weight_cache.find("the cache was out of step with this model"),
            std::string::npos)
      << m->info().weight_cache;
  EXPECT_EQ(m->forward(x_).data, want);
  auto again = load();
  EXPECT_EQ(again->info().weight_cache.rfind("read from ", 0), 0u) << again->info().weight_cache;
  EXPECT_EQ(again->forward(x_).data, want);
}

// A page cache without huge pages (tmpfs, which /dev/shm is by default): the packed weights are
// copied out of the mapping, not read in place.
TEST_F(WeightCache, WithoutHugePagesTheCacheIsCopied) {
  std::error_code ec;
  const fs::path shm = fs::path("/dev/shm") / str_cat("biref-cache-", getpid());
  if (!fs::create_directories(shm, ec) || ec) GTEST_SKIP() << "no /dev/shm here";
  struct Remove {
    fs::path p;
    ~Remove() {
      std::error_code e;
      fs::remove_all(p, e);
    }
  } remove{shm};
  test::ScopedEnv env("BIREF_CACHE", shm.string());
  const std::vector<float> want = load(false)->forward(x_).data;
  ASSERT_EQ(load()->info().weight_cache.rfind("written to ", 0), 0u);
  auto m = load();
  const std::string& s = m->info().weight_cache;
  std::printf("%s\n", s.c_str());
  EXPECT_EQ(s.rfind("read from ", 0), 0u) << s;
  std::ifstream shmem("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  std::string mode((std::istreambuf_iterator<char>(shmem)), {});
  if (mode.find("[never]") != std::string::npos || mode.find("[deny]") != std::string::npos) {
    EXPECT_NE(s.find(", copied: the mapping has no huge pages)"), std::string::npos) << s;
  }
  EXPECT_EQ(m->forward(x_).data, want);
}

TEST_F(WeightCache, AnUnwritableFolderOrTheEnvironmentTurnsItOff) {
  const std::vector<float> want = load(false)->forward(x_).data;
  {
    // the cache folder is a file: the model loads, the cache is not written
    const fs::path not_a_dir = dir_.path() / "file";
    std::ofstream(not_a_dir) << "x";
    test::ScopedEnv env("BIREF_CACHE", not_a_dir.string());
    auto m = load();
    EXPECT_EQ(m->info().weight_cache.rfind("not written (cannot write '", 0), 0u)
        << m->info().weight_cache;
    EXPECT_EQ(m->forward(x_).data, want);
  }
  for (const char* v : {"0", "off", "no", "false"}) {
    test::ScopedEnv env("BIREF_WEIGHT_CACHE", v);
    EXPECT_EQ(load()->info().weight_cache, str_cat("off (BIREF_WEIGHT_CACHE=", v, ")"));
  }
  EXPECT_TRUE(cache_file().empty());
  // synthetic weights have no file to key a cache on
  EXPECT_EQ(Model::load("synthetic:swin_v1_t")->info().weight_cache, "off (synthetic weights)");
  // BF16 makes its own bfloat16 copies at every load
  if (cpu_isa_supported() >= CpuIsa::avx512_bf16) {
    LoadOptions o;
    o.precision = Precision::bf16;
    EXPECT_EQ(Model::load(checkpoint().string(), o)->info().weight_cache,
              "off (bf16: the bfloat16 copies are made at every load)");
  }
}

TEST_F(WeightCache, LoadsAtOnceEachGetACompleteCache) {
  const std::vector<float> want = load(false)->forward(x_).data;
  std::vector<std::string> says(2);
  std::vector<std::vector<float>> got(2);
  {
    std::vector<std::jthread> loaders;
    for (int i = 0; i < 2; ++i)
      loaders.emplace_back([&, i] {
        auto m = load();
        says[size_t(i)] = m->info().weight_cache;
        got[size_t(i)] = m->forward(x_).data;
      });
  }
  // each wrote a cache, or (finding the other's already in place) read it
  for (int i = 0; i < 2; ++i) {
    const std::string& s = says[size_t(i)];
    EXPECT_TRUE(s.rfind("written to ", 0) == 0 || s.rfind("read from ", 0) == 0) << s;
    EXPECT_EQ(got[size_t(i)], want);
  }
  auto m = load();
  EXPECT_EQ(m->info().weight_cache.rfind("read from ", 0), 0u) << m->info().weight_cache;
  EXPECT_EQ(m->forward(x_).data, want);
}

TEST_F(WeightCache, BenchSaysWhereTheWeightsCameFrom) {
  const std::string cmd = "bench -m " + checkpoint().string() + " -s 64x64 -n 1 --warmup 0 --json";
  const std::string env = "BIREF_WEIGHT_CACHE= BIREF_CACHE=" + dir_.path().string();
  auto field = [&](const std::string& args) {
    const auto r = test::run_cli(args, env);
    EXPECT_EQ(r.code, 0) << r.all();
    return nlohmann::json::parse(r.out).at("weight_cache").get<std::string>();
  };
  EXPECT_EQ(field(cmd).rfind("written to ", 0), 0u);
  EXPECT_EQ(field(cmd).rfind("read from ", 0), 0u);
  EXPECT_EQ(field(cmd + " --no-weight-cache"), "off (LoadOptions::weight_cache is false)");
  // `biref models` says what the cache holds and where
  const auto r = test::run_cli("models", env);
  EXPECT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.out.find("packed weights: 1 file, 170 MiB in " + (dir_.path() / "packed").string()),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace biref
