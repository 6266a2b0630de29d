// The model zoo without any network: SHA-256 against known vectors, the zoo table (complete,
// the same as models/zoo.json), name lookup, hf: parsing, cache locations, and what
// resolve_model_source does with each kind of --model value.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "biref/error.h"
#include "model/config.h"
#include "test_util.h"
#include "weights/http.h"
#include "weights/sha256.h"
#include "weights/zoo.h"

namespace biref {
namespace {

namespace fs = std::filesystem;
using test::error_of;

using test::ScopedEnv;

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjk"
                       "lmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaries) {
  // Lengths around the 55/56/64-byte padding edges, against values from coreutils' sha256sum.
  EXPECT_EQ(sha256_hex(std::string(55, 'x')),
            "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072");
  EXPECT_EQ(sha256_hex(std::string(56, 'x')),
            "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e");
  EXPECT_EQ(sha256_hex(std::string(64, 'x')),
            "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c");
}

TEST(Sha256, StreamingMatchesOneShotAndFile) {
  std::string data;
  for (int i = 0; i < 5000; ++i) data += char(i * 131 + (i >> 3));
  const std::string whole = sha256_hex(data);
  for (size_t chunk : {1, 3, 63, 64, 65, 1000}) {
    Sha256 s;
    for (size_t i = 0; i < data.size(); i += chunk) s.update(data.substr(i, chunk));
    EXPECT_EQ(s.hex_digest(), whole) << "chunk " << chunk;
  }
  const fs::path file = fs::temp_directory_path() / "biref_sha256_test.bin";
  std::ofstream(file, std::ios::binary) << data;
  EXPECT_EQ(sha256_file(file.string()), whole);
  fs::remove(file);
}

TEST(HttpEtag, Sha256FromEtag) {
  const std::string hex = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
  const std::string low = sha256_hex("");
  EXPECT_EQ(sha256_from_etag("\"" + hex + "\""), low);
  EXPECT_EQ(sha256_from_etag("W/\"" + low + "\""), low);
  EXPECT_EQ(sha256_from_etag(" " + low + " "), low);
  EXPECT_EQ(sha256_from_etag("\"a94a8fe5ccb19ba61c4c0873d391e987982fbbd3\""), "");  // git sha1
  EXPECT_EQ(sha256_from_etag("\"" + std::string(64, 'g') + "\""), "");
  EXPECT_EQ(sha256_from_etag(""), "");
}

TEST(ZooTable, ParsesAndEveryEntryIsComplete) {
  const auto& entries = zoo_entries();
  ASSERT_EQ(entries.size(), 12u);
  const auto presets = swin_preset_names();
  std::set<std::string> names;
  for (const ZooEntry& e : entries) {
    SCOPED_TRACE(e.name);
    EXPECT_FALSE(e.name.empty());
    std::string key = e.name;
    for (char& c : key) c = char(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_TRUE(names.insert(key).second) << "duplicate name (case-insensitively)";
    const auto hf = parse_hf_source("hf:" + e.repo + ":" + e.file);  // throws if malformed
    ASSERT_TRUE(hf);
    EXPECT_EQ(e.repo.rfind("ZhengPeng7/", 0), 0u);
    EXPECT_EQ(e.file, "model.safetensors");
    EXPECT_GT(e.width, 0);
    EXPECT_GT(e.height, 0);
    EXPECT_EQ(e.width % 32, 0);  // the backbone downsamples by 32
    EXPECT_EQ(e.height % 32, 0);
    EXPECT_NE(std::find(presets.begin(), presets.end(), e.backbone), presets.end()) << e.backbone;
    EXPECT_FALSE(e.description.empty());
    EXPECT_EQ(e.description.find('\n'), std::string::npos);
  }
  struct Want {
    const char *name, *repo;
    int w, h;
  };
  for (const Want& w : {Want{"general", "ZhengPeng7/BiRefNet", 1024, 1024},
                        Want{"lite", "ZhengPeng7/BiRefNet_lite", 1024, 1024},
                        Want{"lite-2K", "ZhengPeng7/BiRefNet_lite-2K", 2560, 1440},
                        Want{"HR", "ZhengPeng7/BiRefNet_HR", 2048, 2048},
                        Want{"HR-matting", "ZhengPeng7/BiRefNet_HR-matting", 2048, 2048},
                        Want{"matting", "ZhengPeng7/BiRefNet-matting", 1024, 1024},
                        Want{"portrait", "ZhengPeng7/BiRefNet-portrait", 1024, 1024},
                        Want{"dynamic", "ZhengPeng7/BiRefNet_dynamic", 1024, 1024},
                        Want{"DIS5K", "ZhengPeng7/BiRefNet-DIS5K", 1024, 1024},
                        Want{"COD", "ZhengPeng7/BiRefNet-COD", 1024, 1024},
                        Want{"HRSOD", "ZhengPeng7/BiRefNet-HRSOD", 1024, 1024},
                        Want{"512x512", "ZhengPeng7/BiRefNet_512x512", 512, 512}}) {
    const auto e = zoo_find(w.name);
    ASSERT_TRUE(e) << w.name;
    EXPECT_EQ(e->name, w.name);
    EXPECT_EQ(e->repo, w.repo);
    EXPECT_EQ(e->width, w.w) << w.name;
    EXPECT_EQ(e->height, w.h) << w.name;
  }
  EXPECT_EQ(zoo_find("lite")->backbone, "swin_v1_t");
  EXPECT_EQ(zoo_find("general")->backbone, "swin_v1_l");
}

TEST(ZooTable, EmbeddedTableIsTheRepoFile) {
  // The library embeds models/zoo.json at configure time; a stale embed would show here.
  std::ifstream f(std::string(BIREF_TEST_DATA) + "/../../models/zoo.json");
  ASSERT_TRUE(f.good());
  const auto doc = nlohmann::json::parse(f);
  const auto& models = doc.at("models");
  ASSERT_EQ(models.size(), zoo_entries().size());
  for (size_t i = 0; i < models.size(); ++i) {
    EXPECT_EQ(models[i].at("name").get<std::string>(), zoo_entries()[i].name);
    EXPECT_EQ(models[i].at("repo").get<std::string>(), zoo_entries()[i].repo);
    EXPECT_EQ(models[i].at("width").get<int>(), zoo_entries()[i].width);
  }
}

TEST(ZooTable, FindIsCaseInsensitive) {
  for (const char* n : {"hr", "HR", "Hr", "hR"}) EXPECT_EQ(zoo_find(n)->name, "HR") << n;
  EXPECT_EQ(zoo_find("LITE-2k")->name, "lite-2K");
  EXPECT_EQ(zoo_find("dis5k")->name, "DIS5K");
  EXPECT_FALSE(zoo_find("generall"));
  EXPECT_FALSE(zoo_find(""));
}

TEST(ZooSource, HfParsing) {
  auto a = parse_hf_source("hf:ZhengPeng7/BiRefNet_lite");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->repo, "ZhengPeng7/BiRefNet_lite");
  EXPECT_EQ(a->file, "model.safetensors");
  auto b = parse_hf_source("hf:some-org/My.Repo_2:weights/BiRefNet-general-epoch_244.pth");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->repo, "some-org/My.Repo_2");
  EXPECT_EQ(b->file, "weights/BiRefNet-general-epoch_244.pth");
  EXPECT_FALSE(parse_hf_source("general"));
  EXPECT_FALSE(parse_hf_source("/models/hf:x"));
  for (const char* bad : {"hf:", "hf:Org", "hf:/Repo", "hf:Org/", "hf:Org/Repo:", "hf:Org/../x",
                          "hf:../Repo", "hf:Org/Repo:../x", "hf:Org/Repo:a//b", "hf:Org/Repo:/a",
                          "hf:Org/Re po", "hf:Org/Repo/extra", "hf:Org/Repo:a/"}) {
    EXPECT_THROW(parse_hf_source(bad), Error) << bad;
  }
  EXPECT_NE(error_of([] { parse_hf_source("hf:Org"); }).find("hf:ORG/REPO"), std::string::npos);
}

TEST(ZooSource, UnknownNameListsTheKnownOnes) {
  const std::string e = error_of([] { resolve_model_source("generall"); });
  EXPECT_NE(e.find("unknown model 'generall'"), std::string::npos) << e;
  EXPECT_NE(e.find("general, lite, lite-2K, HR, HR-matting, matting, portrait, dynamic, DIS5K, "
                   "COD, HRSOD, 512x512"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("hf:ORG/REPO"), std::string::npos) << e;
}

TEST(ZooSource, PathsAndSyntheticPassThrough) {
  EXPECT_EQ(resolve_model_source("synthetic:swin_v1_t:3"), "synthetic:swin_v1_t:3");
  const fs::path file = fs::temp_directory_path() / "biref_zoo_passthrough";  // a bare word
  std::ofstream(file) << "x";
  const auto cwd = fs::current_path();
  fs::current_path(file.parent_path());
  EXPECT_EQ(resolve_model_source("biref_zoo_passthrough"), "biref_zoo_passthrough");
  fs::current_path(cwd);
  EXPECT_EQ(resolve_model_source(file.string()), file.string());
  fs::remove(file);
  // A path that does not exist is the loader's to report ("cannot open ...").
  EXPECT_EQ(resolve_model_source("/no/such/dir/model.safetensors"),
            "/no/such/dir/model.safetensors");
  EXPECT_EQ(resolve_model_source("model.pth"), "model.pth");
}

TEST(ZooSource, CacheDirectoryAndUrl) {
  {
    ScopedEnv a("BIREF_CACHE", "/tmp/bc"), b("XDG_CACHE_HOME", "/tmp/xdg");
    EXPECT_EQ(cache_dir(), "/tmp/bc");
    EXPECT_EQ(cached_path({"Org/Repo", "sub/m.safetensors"}),
              "/tmp/bc/models/Org/Repo/sub/m.safetensors");
  }
  {
    ScopedEnv a("BIREF_CACHE", nullptr), b("XDG_CACHE_HOME", "/tmp/xdg");
    EXPECT_EQ(cache_dir(), "/tmp/xdg/biref");
  }
  {
    ScopedEnv a("BIREF_CACHE", nullptr), b("XDG_CACHE_HOME", nullptr), c("HOME", "/home/u");
    EXPECT_EQ(cache_dir(), "/home/u/.cache/biref");
  }
  {
    ScopedEnv a("BIREF_HF_ENDPOINT", nullptr);
    EXPECT_EQ(hf_url({"ZhengPeng7/BiRefNet", "model.safetensors"}),
              "https://huggingface.co/ZhengPeng7/BiRefNet/resolve/main/model.safetensors");
  }
  {
    ScopedEnv a("BIREF_HF_ENDPOINT", "http://127.0.0.1:9/mirror/");
    EXPECT_EQ(hf_url({"O/R", "f.bin"}), "http://127.0.0.1:9/mirror/O/R/resolve/main/f.bin");
  }
}

}  // namespace
}  // namespace biref
