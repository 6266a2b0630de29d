// The model configuration, always read from the weights (never passed in by hand), and the
// complete list of state_dict entries that configuration implies.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "weights/checkpoint.h"

namespace biref {

struct SwinConfig {
  std::string name;              // swin_v1_t / _s / _b / _l, or "swin_custom"
  int embed_dim = 96;            // C
  std::array<int, 4> depths{};   // blocks per stage
  std::array<int, 4> heads{};    // attention heads per stage
  int window = 7;
  int patch = 4;

  int dim(int stage) const { return embed_dim << stage; }  // C·2^stage
};

struct ModelConfig {
  SwinConfig swin;
  // BatchNorm after the decoder convolutions. The official code builds these only when it was
  // trained with batch size > 1; every released checkpoint has them, but they are detected.
  bool decoder_bn = true;

  // Channel arithmetic (C = embed_dim), the official `channels` / `cxt` lists:
  //   encoder outputs after the multi-scale concat: x1 2C, x2 4C, x3 8C, x4 16C
  //   context: x4 += x1, x2, x3 resized -> 16C + 2C + 4C + 8C = 30C
  int enc_channels(int i) const { return 2 * swin.dim(i); }  // i = 0..3 for x1..x4
  int context_channels() const { return 30 * swin.embed_dim; }
  //   decoder block outputs (block4..block1): 8C, 4C, 2C, C
  int dec_out(int block) const { return swin.embed_dim << (block - 1); }  // block = 1..4
  //   input-patch branch outputs: ipt_blk5 2C, ipt_blk4 2C, ipt_blk3 C, ipt_blk2 C/2, ipt_blk1 C/4
  int ipt_out(int blk) const;
  //   grid of the patches fed to ipt_blk{5,4,3,2,1}: 32, 16, 8, 4, 1
  static int ipt_grid(int blk) { return blk == 1 ? 1 : 1 << blk; }
};

SwinConfig swin_preset(const std::string& name);  // throws for an unknown name
std::vector<std::string> swin_preset_names();

// Detects the configuration from names and shapes. A checkpoint that is not BiRefNet gets an
// error that says what was looked for and what the file holds instead.
ModelConfig detect_config(const Checkpoint& ck);

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool used = true;  // false: present in checkpoints, unused at inference (conv_ms_spvn_*, ...)
};
// Every state_dict entry of the official model for `cfg`, in state_dict order, without the
// buffers `relative_position_index` and `num_batches_tracked`.
std::vector<ParamSpec> param_specs(const ModelConfig& cfg);

// Buffers a state_dict carries beside the parameters (`num_batches_tracked`,
// `relative_position_index`): allowed in a checkpoint, never loaded (the index is recomputed).
bool is_state_dict_buffer(const std::string& name);

// Checks `ck` against param_specs(cfg): the first missing or wrongly shaped tensor, or the first
// unexpected one, is an error naming it (and both shapes). Buffers are allowed and ignored.
void validate_checkpoint(const Checkpoint& ck, const ModelConfig& cfg);

std::string describe(const ModelConfig& cfg);  // "swin_v1_t (C=96, depths 2-2-6-2, ...)"

}  // namespace biref
