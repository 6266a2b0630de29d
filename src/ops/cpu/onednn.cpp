#include "ops/cpu/onednn.h"

#include <omp.h>

#include <cstring>

#include "core/check.h"

namespace biref::cpu {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

dnnl::post_ops make_post_ops(Act act, bool accumulate) {
  dnnl::post_ops po;
  switch (act) {
    case Act::None:
      break;
    case Act::Relu:
      po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      break;
    case Act::Gelu:
      po.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
      break;
    case Act::Sigmoid:
      po.append_eltwise(1.f, dnnl::algorithm::eltwise_logistic, 0.f, 0.f);
      break;
  }
  if (accumulate) po.append_sum(1.f);
  return po;
}

}  // namespace

PackedWeights::PackedWeights() : engine_(dnnl::engine::kind::cpu, 0) {}

const PackedWeights::Packed* PackedWeights::get(uint64_t layer, const std::string& name,
                                                const memory::desc& want,
                                                const memory::desc& user_desc,
                                                const std::function<const float*()>& user) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& list = packed_[layer];
  for (const auto& p : list) {
    if (p->desc == want) return p.get();
  }
  auto p = std::make_unique<Packed>();
  p->desc = want;
  const size_t bytes = want.get_size();
  const bool first = list.empty();
  std::string layout;
  if (loading_ && first) layout = layout_text(want);
  if (loading_ && first && cache_usable_) {
    const std::vector<Blob>& blobs = cache_->blobs();
    if (cache_next_ < blobs.size() && blobs[cache_next_].name == name &&
        blobs[cache_next_].layout == layout && blobs[cache_next_].bytes == bytes) {
      const Blob& b = blobs[cache_next_++];
      if (cache_->huge_pages()) {
        p->mem = memory(want, engine_, const_cast<void*>(b.data));
      } else {
        // 4 KiB pages would make every pass slower than huge pages (TLB misses): a copy.
        p->mem = memory(want, engine_, memory_.allocate(bytes));
        std::memcpy(p->mem.get_data_handle(), b.data, bytes);
        report_.copied = true;
      }
      ++report_.from_cache;
    } else {
      cache_usable_ = false;  // out of step with this model: pack the rest
    }
  }
  if (!p->mem) {
    p->mem = memory(want, engine_, memory_.allocate(bytes));
    // The first packing reads the layer's own weights; later layouts (another shape asked for
    // another blocking) are reordered from the first packed copy, so the plain weights may be
    // released after prepare().
    memory src;
    if (!first) {
      src = list.front()->mem;
    } else {
      const float* plain = user ? user() : nullptr;
      BIREF_CHECK(plain != nullptr, "layer '", name, "' has no weights (released before packing)");
      src = memory(user_desc, engine_, const_cast<float*>(plain));
    }
    dnnl::stream stream(engine_);
    dnnl::reorder(src, p->mem).execute(stream, src, p->mem);
    stream.wait();
    if (loading_ && first) ++report_.packed;
  }
  if (loading_ && first)
    loaded_.push_back({name, std::move(layout), p->mem.get_data_handle(), bytes});
  list.push_back(std::move(p));
  return list.back().get();
}

void PackedWeights::begin_load(std::unique_ptr<BlobFile> cache) {
  std::lock_guard<std::mutex> lock(mu_);
  loading_ = true;
  cache_ = std::move(cache);
  cache_usable_ = cache_ != nullptr;
  cache_next_ = 0;
  loaded_.clear();
  report_ = {};
  report_.cache_blobs = cache_ ? cache_->blobs().size() : 0;
}

std::vector<Blob> PackedWeights::end_load(LoadReport& report) {
  std::lock_guard<std::mutex> lock(mu_);
  loading_ = false;
  report = report_;
  // Kept mapped while a blob is used in place (oneDNN reads weights given by handle and never
  // writes them, so a read-only mapping holds them); otherwise the mapping goes.
  if (cache_ && !report_.copied && report_.from_cache > 0) mapped_.push_back(std::move(cache_));
  cache_.reset();
  return std::move(loaded_);
}

std::string layout_text(const memory::desc& d) {
  const dnnl_memory_desc_t& m = d.data;
  std::string s = str_cat("dt ", int(m.data_type), " format ", int(m.format_kind), " dims");
  auto list = [&](const char* what, const dnnl_dim_t* v, int n) {
    s += what;
    for (int i = 0; i < n; ++i) s += str_cat(i ? "x" : " ", v[i]);
  };
  list("", m.dims, m.ndims);
  list(" padded", m.padded_dims, m.ndims);
  list(" offsets", m.padded_offsets, m.ndims);
  s += str_cat(" offset0 ", m.offset0);
  if (m.format_kind == dnnl_blocked) {
    const dnnl_blocking_desc_t& b = m.format_desc.blocking;
    list(" strides", b.strides, m.ndims);
    s += " inner";
    for (int i = 0; i < b.inner_nblks; ++i)
      s += str_cat(" ", b.inner_blks[i], "@", b.inner_idxs[i]);
  }
  s += str_cat(" extra ", m.extra.flags, " ", m.extra.compensation_mask, " ", m.extra.scale_adjust,
               " bytes ", d.get_size());
  return s;
}

size_t PackedWeights::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [layer, list] : packed_)
    for (const auto& p : list) n += p->desc.get_size();
  return n;
}

OneDnn::OneDnn(std::shared_ptr<PackedWeights> weights)
    : weights_(weights ? std::move(weights) : std::make_shared<PackedWeights>()),
      engine_(weights_->engine()),
      stream_(engine_) {}

dnnl::matmul::primitive_desc OneDnn::matmul_pd(const Linear& l, int64_t rows, int64_t ldx,
                                               int64_t ldy, Act act, bool accumulate) const {
  const memory::desc src({rows, l.in}, dt::f32, memory::dims{ldx, 1});
  const memory::desc dst({rows, l.out}, dt::f32, memory::dims{ldy, 1});
  const memory::desc w_any({l.in, l.out}, dt::f32, tag::any);
  dnnl::primitive_attr attr;
  attr.set_post_ops(make_post_ops(act, accumulate));
  if (l.bias.empty())
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, w_any, dst), attr, engine_);
  const memory::desc b({1, l.out}, dt::f32, tag::ab);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, w_any, b, dst), attr, engine_);
}

const PackedWeights::Packed* OneDnn::pack(const Linear& l, const dnnl::matmul::primitive_desc& pd,
                                          const std::function<const float*()>& weights) {
  // PyTorch's [out, in] row-major is the matmul's [in, out] with strides (1, in): tag ba.
  return weights_->get(l.id.value, l.name, pd.weights_desc(),
                       memory::desc({l.in, l.out}, dt::f32, tag::ba), weights);
}

OneDnn::Prim& OneDnn::matmul_prim(const Linear& l, int64_t rows, int64_t ldx, int64_t ldy, Act act,
                                  bool accumulate) {
  // A primitive is built for the thread count of its creation (oneDNN runs it with that many),
  // and a model's count may change between passes: the count is part of the key.
  const auto key =
      std::make_tuple(l.id.value, rows, ldx, ldy, int(act), accumulate, omp_get_max_threads());
  auto it = matmuls_.find(key);
  if (it != matmuls_.end()) return it->second;
  const dnnl::matmul::primitive_desc pd = matmul_pd(l, rows, ldx, ldy, act, accumulate);
  Prim p;
  if (!l.bias.empty()) p.bias = memory(pd.bias_desc(), engine_, const_cast<float*>(l.bias.data()));
  p.weights = pack(l, pd, [&l]() { return l.has_weight() ? l.weight_data() : nullptr; });
  p.prim = dnnl::matmul(pd);
  p.src = pd.src_desc();
  p.dst = pd.dst_desc();
  trim_primitives();
  return matmuls_.emplace(key, std::move(p)).first->second;
}

// Primitives are cached per layer and shape. A process that sees many input sizes (a server,
// the dynamic model) would grow without end: past a bound, start over (the packed weights stay;
// a primitive costs about a millisecond to recreate).
void OneDnn::trim_primitives() {
  constexpr size_t kMaxPrimitives = 4096;
  if (matmuls_.size() + convs_.size() < kMaxPrimitives) return;
  matmuls_.clear();
  convs_.clear();
}

void OneDnn::linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y,
                    int64_t ldy, Act act, bool accumulate) {
  if (rows == 0) return;
  Prim& p = matmul_prim(l, rows, ldx, ldy, act, accumulate);
  memory src(p.src, engine_, const_cast<float*>(x));
  memory dst(p.dst, engine_, y);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, p.weights->mem}, {DNNL_ARG_DST, dst}};
  if (p.bias) args[DNNL_ARG_BIAS] = p.bias;
  p.prim.execute(stream_, args);
  stream_.wait();
}

OneDnn::Prim& OneDnn::conv_prim(const Conv2d& c, int64_t B, int64_t H, int64_t W) {
  const auto key = std::make_tuple(c.id.value, B, H, W, omp_get_max_threads());
  auto it = convs_.find(key);
  if (it != convs_.end()) return it->second;
  const dnnl::convolution_forward::primitive_desc pd = conv_pd(c, B, H, W);
  Prim p;
  p.weights = pack(c, pd, [&c]() { return c.weight.empty() ? nullptr : c.weight.data(); });
  p.bias = memory(pd.bias_desc(), engine_, const_cast<float*>(c.bias.data()));
  p.prim = dnnl::convolution_forward(pd);
  p.src = pd.src_desc();
  p.dst = pd.dst_desc();
  trim_primitives();
  return convs_.emplace(key, std::move(p)).first->second;
}

dnnl::convolution_forward::primitive_desc OneDnn::conv_pd(const Conv2d& c, int64_t B, int64_t H,
                                                          int64_t W) const {
  const int64_t Ho = (H + 2 * c.pad - c.k) / c.stride + 1,
                Wo = (W + 2 * c.pad - c.k) / c.stride + 1;
  const memory::desc src({B, c.in, H, W}, dt::f32, tag::nhwc);
  const memory::desc dst({B, c.out, Ho, Wo}, dt::f32, tag::nhwc);
  const memory::desc w_any({c.out, c.in, c.k, c.k}, dt::f32, tag::any);
  const memory::desc b({c.out}, dt::f32, tag::a);
  dnnl::primitive_attr attr;
  attr.set_post_ops(make_post_ops(c.act, false));
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference,
                                    dnnl::algorithm::convolution_direct, src, w_any, b, dst,
                                    {c.stride, c.stride}, {c.pad, c.pad}, {c.pad, c.pad});
  dnnl::convolution_forward::primitive_desc pd(d, attr, engine_);
  BIREF_CHECK(pd.src_desc() == src && pd.dst_desc() == dst, "conv2d '", c.name,
              "': oneDNN chose a blocked layout");
  return pd;
}

const PackedWeights::Packed* OneDnn::pack(const Conv2d& c,
                                          const dnnl::convolution_forward::primitive_desc& pd,
                                          const std::function<const float*()>& weights) {
  return weights_->get(c.id.value, c.name, pd.weights_desc(),
                       memory::desc({c.out, c.in, c.k, c.k}, dt::f32, tag::oihw), weights);
}

void OneDnn::conv2d(const Conv2d& c, const Tensor& x, Tensor& y) {
  Prim& p = conv_prim(c, x.dim(0), x.dim(1), x.dim(2));
  memory src(p.src, engine_, x.data);
  memory dst(p.dst, engine_, y.data);
  p.prim.execute(stream_, {{DNNL_ARG_SRC, src},
                           {DNNL_ARG_WEIGHTS, p.weights->mem},
                           {DNNL_ARG_BIAS, p.bias},
                           {DNNL_ARG_DST, dst}});
  stream_.wait();
}

// Packed for a typical shape: the layout oneDNN picks depends on the channels and the ISA,
// hardly on the number of rows or the spatial size; another shape that wants another layout
// reorders from this packed copy. Only the primitive descriptor is made here: the primitive (its
// JIT code) is created for the shapes that actually run.
void OneDnn::prepare(const Linear& l, const std::function<const float*()>& weights) {
  pack(l, matmul_pd(l, 1024, l.in, l.out, Act::None, false), weights);
}
void OneDnn::prepare(const Conv2d& c, const std::function<const float*()>& weights) {
  pack(c, conv_pd(c, 1, 64, 64), weights);
}

}  // namespace biref::cpu
