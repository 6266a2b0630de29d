// Loading from a file: a packing backend reads the linears' weights in place from the file
// mapping (no intermediate copy) and computes exactly what a model built from copies computes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "biref/biref.h"
#include "core/check.h"
#include "model/config.h"
#include "model/modules.h"
#include "test_util.h"
#include "weights/checkpoint.h"

namespace fs = std::filesystem;

namespace biref {
namespace {

HostTensor input(int w, int h, uint32_t seed) {
  HostTensor x;
  x.shape = {1, 3, h, w};
  x.data = test::random_vector(size_t(3) * w * h, seed);
  return x;
}

struct TempFile {
  fs::path path = fs::temp_directory_path() / str_cat("biref-load-", getpid(), ".safetensors");
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

TEST(Load, LinearsAreReadInPlaceFromTheFileMapping) {
  TempFile f;
  const auto r = test::run_cli("convert --synthetic swin_v1_t " + f.path.string());
  ASSERT_EQ(r.code, 0) << r.all();

  for (bool map : {true, false}) {
    Checkpoint ck = load_checkpoint(f.path.string());
    const ModelConfig cfg = detect_config(ck);
    validate_checkpoint(ck, cfg);
    BiRefNet net = build_birefnet(ck, cfg, map);
    int linears = 0, mapped = 0;
    for_each_layer(net, {[&](Linear& l) {
                           ++linears;
                           if (!l.mapped_weight.empty()) {
                             ++mapped;
                             EXPECT_TRUE(l.weight.empty()) << l.name;
                             EXPECT_EQ(l.mapped_weight.size, size_t(l.in) * l.out) << l.name;
                           }
                           EXPECT_TRUE(l.has_weight()) << l.name;
                         },
                         [](Conv2d&) {}, [](DeformConv&) {}});
    EXPECT_GT(linears, 40);
    EXPECT_EQ(mapped, map ? linears : 0);
  }

  // The model from the file (linears packed from the mapping) against the same weights built
  // in memory: the same logits, bit for bit.
  auto from_file = Model::load(f.path.string());
  auto from_memory = Model::load("synthetic:swin_v1_t");
  const HostTensor x = input(64, 96, 11);
  EXPECT_EQ(from_file->forward(x).data, from_memory->forward(x).data);
  EXPECT_EQ(from_file->weight_bytes(), from_memory->weight_bytes());
}

}  // namespace
}  // namespace biref
