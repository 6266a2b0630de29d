// Loading from a file: a packing backend reads the weights of the linears and convolutions in
// place from the file mapping (no intermediate copy; the BatchNorm folded in as they are packed)
// and computes exactly what a model built from copies computes.
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

TEST(Load, WeightsAreReadInPlaceFromTheFileMapping) {
  TempFile f;
  const auto r = test::run_cli("convert --synthetic swin_v1_t " + f.path.string());
  ASSERT_EQ(r.code, 0) << r.all();

  for (bool map : {true, false}) {
    Checkpoint ck = load_checkpoint(f.path.string());
    const ModelConfig cfg = detect_config(ck);
    validate_checkpoint(ck, cfg);
    BiRefNet net = build_birefnet(ck, cfg, map);
    int linears = 0, mapped_linears = 0, convs = 0, mapped_convs = 0, scaled = 0;
    auto conv = [&](Conv2d& c) {
      ++convs;
      EXPECT_TRUE(c.has_weight()) << c.name;
      if (c.mapped_weight.empty()) return;
      ++mapped_convs;
      EXPECT_TRUE(c.weight.empty()) << c.name;
      EXPECT_EQ(c.mapped_weight.size, size_t(c.out) * c.in * c.k * c.k) << c.name;
      if (!c.mapped_scale.empty()) {
        ++scaled;
        EXPECT_EQ(c.mapped_scale.size(), size_t(c.out)) << c.name;
      }
    };
    for_each_layer(net, {[&](Linear& l) {
                           ++linears;
                           if (!l.mapped_weight.empty()) {
                             ++mapped_linears;
                             EXPECT_TRUE(l.weight.empty()) << l.name;
                             EXPECT_EQ(l.mapped_weight.size, size_t(l.in) * l.out) << l.name;
                           }
                           EXPECT_TRUE(l.has_weight()) << l.name;
                         },
                         conv,
                         [&](DeformConv& d) {
                           // the fused offset+modulator conv is always a copy of the two
                           EXPECT_TRUE(d.offset_mask.mapped_weight.empty()) << d.name;
                           EXPECT_FALSE(d.offset_mask.weight.empty()) << d.name;
                           conv(d.regular);
                         }});
    EXPECT_GT(linears, 40);
    EXPECT_EQ(mapped_linears, map ? linears : 0);
    // every convolution but the two composed into the output head (the offset convs are
    // visited as the fused copy, above)
    EXPECT_GT(convs, 60);
    EXPECT_EQ(mapped_convs, map ? convs - 2 : 0);
    // the decoder's BatchNorms, folded in as they are packed
    EXPECT_EQ(scaled > 40, map) << scaled;
  }

  // The model from the file (weights packed from the mapping) against the same weights built
  // in memory: the same logits, bit for bit.
  auto from_file = Model::load(f.path.string());
  auto from_memory = Model::load("synthetic:swin_v1_t");
  const HostTensor x = input(64, 96, 11);
  EXPECT_EQ(from_file->forward(x).data, from_memory->forward(x).data);
  EXPECT_EQ(from_file->weight_bytes(), from_memory->weight_bytes());
}

}  // namespace
}  // namespace biref
