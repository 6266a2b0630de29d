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
  setenv("BIREF_WEIGHT_CACHE", "0", 0);
  return true;
}();

struct TempDir {
  fs::path path = fs::temp_directory_path() / str_cat("biref-cache-", getpid(), "-", counter()++);
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

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
  TempDir dir;
  // sizes around the 2 MiB write buffer and the 64-byte alignment, and an empty blob
  const std::vector<size_t> sizes = {
      0, 1, 63, 64, 65, (size_t(2) << 20) - 7, (size_t(3) << 20) + 5, 4096};
  std::vector<std::vector<unsigned char>> data;
  std::vector<Blob> blobs;
  for (size_t i = 0; i < sizes.size(); ++i) {
    data.push_back(bytes_of(sizes[i], uint32_t(i + 1)));
    blobs.push_back({str_cat("blob", i), str_cat("layout ", i), data.back().data(), sizes[i]});
  }
  const std::string path = (dir.path / "sub" / "a.pack").string();  // the folder is created
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
    EXPECT_EQ(std::memcmp(b.data, data[i].data(), sizes[i]), 0) << i;
  }
  // mapped at a 2 MiB boundary (huge pages where the filesystem keeps large folios)
  EXPECT_EQ(uintptr_t(f->blobs()[0].data) % (size_t(2) << 20), 0u);
  std::printf("blob file mapped with huge pages: %s\n", f->huge_pages() ? "yes" : "no");

  // only complete files under their name: no temporary left beside it
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path / "sub")) files += e.is_regular_file();
  EXPECT_EQ(files, 1);

  // no blobs at all is a valid file too
  write_blob_file((dir.path / "empty.pack").string(), "k", {});
  auto e = BlobFile::open((dir.path / "empty.pack").string(), "k", why);
  ASSERT_TRUE(e) << why;
  EXPECT_TRUE(e->blobs().empty());
}

TEST(BlobFile, RefusesAnotherKeyAndDamagedFiles) {
  TempDir dir;
  const auto a = bytes_of(size_t(5) << 20, 7);
  const fs::path path = dir.path / "a.pack";
  write_blob_file(path.string(), "the key", {{"w", "l", a.data(), a.size()}});
  std::string why;
  ASSERT_TRUE(BlobFile::open(path.string(), "the key", why)) << why;

  EXPECT_FALSE(BlobFile::open(path.string(), "another key", why));
  EXPECT_EQ(why, "written for other weights or by other code");
  EXPECT_FALSE(BlobFile::open((dir.path / "none.pack").string(), "the key", why));
  EXPECT_EQ(why, "none yet");

  const auto size = fs::file_size(path);
  {
    const fs::path damaged = dir.path / "damaged.pack";
    fs::copy_file(path, damaged);
    flip_byte(damaged, 3 << 20);  // one bit of the data
    EXPECT_FALSE(BlobFile::open(damaged.string(), "the key", why));
    EXPECT_EQ(why, "damaged (its checksum does not match)");
  }
  {
    const fs::path cut = dir.path / "cut.pack";
    fs::copy_file(path, cut);
    fs::resize_file(cut, size - 100);
    EXPECT_FALSE(BlobFile::open(cut.string(), "the key", why));
    EXPECT_EQ(why, "not a blob file, or cut short");
    fs::resize_file(cut, 0);
    EXPECT_FALSE(BlobFile::open(cut.string(), "the key", why));
  }
  {
    const fs::path other = dir.path / "other.pack";
    std::ofstream(other) << "not a blob file at all, but long enough to hold a trailer";
    EXPECT_FALSE(BlobFile::open(other.string(), "the key", why));
    EXPECT_EQ(why, "not a blob file, or cut short");
  }
  EXPECT_FALSE(BlobFile::open(dir.path.string(), "the key", why));  // a folder
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
    for (const auto& e : fs::recursive_directory_iterator(dir_.path))
      if (e.path().extension() == ".pack") return e.path();
    return {};
  }
  std::unique_ptr<Model> load(bool cache = true) {
    LoadOptions o;
    o.weight_cache = cache;
    return Model::load(checkpoint().string(), o);
  }

  TempDir dir_;
  test::ScopedEnv env_cache_{"BIREF_CACHE", dir_.path.string()};
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
  EXPECT_EQ(w.rfind("written to " + (dir_.path / "packed").string() + "/", 0), 0u) << w;
  EXPECT_NE(w.find("the cache was none yet"), std::string::npos) << w;
  ASSERT_FALSE(cache_file().empty());
  EXPECT_EQ(first->forward(x_).data, want);

  auto second = load();
  const std::string r = second->info().weight_cache;
  std::printf("second load: %s\n", r.c_str());
  EXPECT_EQ(r.rfind("read from " + cache_file().string() + " (131 packed weights, 170 MiB", 0), 0u)
      << r;
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

  // the checkpoint changed (a new modification time): its old packing is not used
  const auto t = fs::last_write_time(checkpoint());
  fs::last_write_time(checkpoint(), t + std::chrono::seconds(1));
  m = load();
  EXPECT_NE(m->info().weight_cache.find("the cache was written for other weights or by other code"),
            std::string::npos)
      << m->info().weight_cache;
  EXPECT_EQ(m->forward(x_).data, want);
  EXPECT_EQ(load()->info().weight_cache.rfind("read from ", 0), 0u);
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir_.path)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);  // one entry per checkpoint path, replaced
}

TEST_F(WeightCache, AnUnwritableFolderOrTheEnvironmentTurnsItOff) {
  const std::vector<float> want = load(false)->forward(x_).data;
  {
    // the cache folder is a file: the model loads, the cache is not written
    const fs::path not_a_dir = dir_.path / "file";
    std::ofstream(not_a_dir) << "x";
    test::ScopedEnv env("BIREF_CACHE", not_a_dir.string());
    auto m = load();
    EXPECT_EQ(m->info().weight_cache.rfind("not written (cannot write '", 0), 0u)
        << m->info().weight_cache;
    EXPECT_EQ(m->forward(x_).data, want);
  }
  {
    test::ScopedEnv env("BIREF_WEIGHT_CACHE", "0");
    EXPECT_EQ(load()->info().weight_cache, "off (BIREF_WEIGHT_CACHE=0)");
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
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(says[size_t(i)].rfind("written to ", 0), 0u) << says[size_t(i)];
    EXPECT_EQ(got[size_t(i)], want);
  }
  auto m = load();
  EXPECT_EQ(m->info().weight_cache.rfind("read from ", 0), 0u) << m->info().weight_cache;
  EXPECT_EQ(m->forward(x_).data, want);
}

TEST_F(WeightCache, BenchSaysWhereTheWeightsCameFrom) {
  const std::string cmd = "bench -m " + checkpoint().string() + " -s 64x64 -n 1 --warmup 0 --json";
  const std::string env = "BIREF_WEIGHT_CACHE= BIREF_CACHE=" + dir_.path.string();
  auto field = [&](const std::string& args) {
    const auto r = test::run_cli(args, env);
    EXPECT_EQ(r.code, 0) << r.all();
    return nlohmann::json::parse(r.out).at("weight_cache").get<std::string>();
  };
  EXPECT_EQ(field(cmd).rfind("written to ", 0), 0u);
  EXPECT_EQ(field(cmd).rfind("read from ", 0), 0u);
  EXPECT_EQ(field(cmd + " --no-weight-cache"), "off (LoadOptions::weight_cache is false)");
}

}  // namespace
}  // namespace biref
