// BiRefNet's modules at inference, mirroring the PyTorch module tree: each struct holds its
// children under their attribute names; `name` fields carry the state_dict prefix.
#pragma once
#include <array>
#include <functional>
#include <vector>

#include "model/config.h"
#include "ops/layers.h"

namespace biref {

// bb.layers.i.blocks.j
struct SwinBlock {
  LayerNorm norm1, norm2;
  Linear qkv, proj;  // attn.qkv, attn.proj
  Linear fc1, fc2;   // mlp.fc1, mlp.fc2
  int heads = 0;
  std::vector<float> rel_bias;  // attn.relative_position_bias_table gathered to [heads, N, N]
};

// bb.layers.i
struct SwinStage {
  std::vector<SwinBlock> blocks;
  bool has_downsample = false;
  LayerNorm downsample_norm;    // downsample.norm
  Linear downsample_reduction;  // downsample.reduction (no bias)
};

// bb
struct SwinTransformer {
  SwinConfig cfg;
  Conv2d patch_embed_proj;  // patch_embed.proj, 4×4 stride 4
  LayerNorm patch_embed_norm;
  std::array<SwinStage, 4> layers;
  std::array<LayerNorm, 4> norms;  // norm0..norm3
};

// dec_att: ASPPDeformable(64)
struct ASPPDeformable {
  DeformConv aspp1;                        // 1×1
  std::array<DeformConv, 3> aspp_deforms;  // 1×1, 3×3, 7×7
  Conv2d global_avg_pool;                  // .1 conv 1×1 with .2 BN folded, ReLU
  Conv2d conv1;                            // conv1 with bn1 folded, ReLU
};

// decoder_block*, squeeze_module.0: BasicDecBlk
struct BasicDecBlk {
  Conv2d conv_in;  // with bn_in folded, ReLU
  ASPPDeformable dec_att;
  Conv2d conv_out;  // with bn_out folded, no activation
};

// ipt_blk*: SimpleConvs (no activation between)
struct SimpleConvs {
  Conv2d conv1, conv_out;
};

// decoder
struct Decoder {
  std::array<SimpleConvs, 6> ipt_blk;        // [1..5]
  std::array<BasicDecBlk, 5> decoder_block;  // [1..4]
  std::array<Conv2d, 5> lateral_block;       // [2..4] .conv
  std::array<Conv2d, 5> gdt_convs;           // [2..4] .0 conv with .1 BN folded, ReLU
  std::array<Conv2d, 5> gdt_convs_attn;      // [2..4] .0 conv 1×1 -> 1, sigmoid
  // conv_out1.0 (1×1, dec_out(1) + ipt_out(1) -> 1) split by its input channels. Both halves
  // are linear, so they are applied where they are cheapest, exactly:
  //   conv_out1(cat(interp(p1), ipt_blk1(x))) = interp(conv_out1_dec(p1)) +
  //   conv_out1_ipt(ipt_blk1(x))
  // (interp's weights sum to 1, so the bias passes through it), and conv_out1_ipt is composed
  // with ipt_blk1.conv_out (3×3 then 1×1, no activation between) into one 3×3 conv to 1 channel.
  // The full-resolution concat and the upsampled decoder features are never materialised.
  Conv2d conv_out1_dec;      // at stride 4, with conv_out1.0's bias
  Conv2d ipt_blk1_conv_out;  // ipt_blk1.conv_out ∘ conv_out1_ipt: 3×3, 64 -> 1
};

struct BiRefNet {
  ModelConfig cfg;
  SwinTransformer bb;
  BasicDecBlk squeeze_module;  // squeeze_module.0
  Decoder decoder;
  int64_t parameters = 0;  // used at inference, before folding
};

// Visits every layer with weights (the Swin linears, every convolution, every deformable conv),
// for backends that pack weights at load.
struct LayerVisitor {
  std::function<void(Linear&)> linear;
  std::function<void(Conv2d&)> conv;
  std::function<void(DeformConv&)> deform;
};
void for_each_layer(BiRefNet& net, const LayerVisitor& v);

// Builds the model from a checkpoint that validate_checkpoint() accepted: BatchNorm folded,
// the offset and modulator convolutions of each deformable conv fused, attention biases gathered.
// The tensors it reads are released from `ck` as they are consumed. With `map_weights` (for a
// backend that packs its own copies), the float32 weights of the linears and of the convolutions
// that are not combined with another, when they lie in the file mapping, are not copied:
// Linear::mapped_weight and Conv2d::mapped_weight (with its BatchNorm factors) point at them
// until the backend has packed them.
BiRefNet build_birefnet(Checkpoint& ck, const ModelConfig& cfg, bool map_weights = false);

}  // namespace biref
