#include "ops/cpu/onednn.h"

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
    case Act::None: break;
    case Act::Relu: po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f); break;
    case Act::Gelu: po.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f); break;
    case Act::Sigmoid: po.append_eltwise(1.f, dnnl::algorithm::eltwise_logistic, 0.f, 0.f); break;
  }
  if (accumulate) po.append_sum(1.f);
  return po;
}

}  // namespace

OneDnn::OneDnn() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

const OneDnn::Packed* OneDnn::packed(uint64_t layer, const memory::desc& want, const memory& user) {
  auto& list = packed_[layer];
  for (const auto& p : list) {
    if (p->desc == want) return p.get();
  }
  auto p = std::make_unique<Packed>();
  p->desc = want;
  if (user.get_desc() == want) {
    p->mem = memory(want, engine_);
    std::memcpy(p->mem.get_data_handle(), user.get_data_handle(), want.get_size());
  } else {
    p->mem = memory(want, engine_);
    dnnl::reorder(user, p->mem).execute(stream_, const_cast<memory&>(user), p->mem);
    stream_.wait();
  }
  list.push_back(std::move(p));
  return list.back().get();
}

void OneDnn::linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
                    Act act, bool accumulate) {
  if (rows == 0) return;
  const auto key = std::make_tuple(l.id.value, rows, ldx, ldy, int(act), accumulate);
  auto it = matmuls_.find(key);
  if (it == matmuls_.end()) {
    const memory::desc src({rows, l.in}, dt::f32, memory::dims{ldx, 1});
    const memory::desc dst({rows, l.out}, dt::f32, memory::dims{ldy, 1});
    const memory::desc w_any({l.in, l.out}, dt::f32, tag::any);
    dnnl::primitive_attr attr;
    attr.set_post_ops(make_post_ops(act, accumulate));
    dnnl::matmul::primitive_desc pd;
    Prim p;
    if (!l.bias.empty()) {
      const memory::desc b({1, l.out}, dt::f32, tag::ab);
      pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, w_any, b, dst), attr, engine_);
      p.bias = memory(b, engine_, const_cast<float*>(l.bias.data()));
    } else {
      pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, w_any, dst), attr, engine_);
    }
    // PyTorch's [out, in] row-major is the matmul's [in, out] with strides (1, in): tag ba.
    const memory user(memory::desc({l.in, l.out}, dt::f32, tag::ba), engine_,
                      const_cast<float*>(l.weight.data()));
    p.weights = packed(l.id.value, pd.weights_desc(), user);
    p.prim = dnnl::matmul(pd);
    p.src = src;
    p.dst = dst;
    it = matmuls_.emplace(key, std::move(p)).first;
  }
  Prim& p = it->second;
  memory src(p.src, engine_, const_cast<float*>(x));
  memory dst(p.dst, engine_, y);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, p.weights->mem}, {DNNL_ARG_DST, dst}};
  if (p.bias) args[DNNL_ARG_BIAS] = p.bias;
  p.prim.execute(stream_, args);
  stream_.wait();
}

void OneDnn::conv2d(const Conv2d& c, const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2);
  const auto key = std::make_tuple(c.id.value, B, H, W);
  auto it = convs_.find(key);
  if (it == convs_.end()) {
    const memory::desc src({B, c.in, H, W}, dt::f32, tag::nhwc);
    const memory::desc dst({B, c.out, y.dim(1), y.dim(2)}, dt::f32, tag::nhwc);
    const memory::desc w_any({c.out, c.in, c.k, c.k}, dt::f32, tag::any);
    const memory::desc b({c.out}, dt::f32, tag::a);
    dnnl::primitive_attr attr;
    attr.set_post_ops(make_post_ops(c.act, false));
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference,
                                      dnnl::algorithm::convolution_direct, src, w_any, b, dst,
                                      {c.stride, c.stride}, {c.pad, c.pad}, {c.pad, c.pad});
    dnnl::convolution_forward::primitive_desc pd(d, attr, engine_);
    Prim p;
    const memory user(memory::desc({c.out, c.in, c.k, c.k}, dt::f32, tag::oihw), engine_,
                      const_cast<float*>(c.weight.data()));
    p.weights = packed(c.id.value, pd.weights_desc(), user);
    p.bias = memory(b, engine_, const_cast<float*>(c.bias.data()));
    p.prim = dnnl::convolution_forward(pd);
    p.src = pd.src_desc();
    p.dst = pd.dst_desc();
    BIREF_CHECK(p.src == src && p.dst == dst, "conv2d '", c.name, "': oneDNN chose a blocked layout");
    it = convs_.emplace(key, std::move(p)).first;
  }
  Prim& p = it->second;
  memory src(p.src, engine_, x.data);
  memory dst(p.dst, engine_, y.data);
  p.prim.execute(stream_, {{DNNL_ARG_SRC, src},
                           {DNNL_ARG_WEIGHTS, p.weights->mem},
                           {DNNL_ARG_BIAS, p.bias},
                           {DNNL_ARG_DST, dst}});
  stream_.wait();
}

}  // namespace biref::cpu
