#include "onnx_export/graph.h"

#include <cstring>

#include "core/check.h"
#include "core/half.h"

namespace biref::onnx_export {

std::string Graph::fresh(const std::string& op) {
  const int n = op_counts_[scope_ + "/" + op]++;
  return str_cat(scope_.empty() ? "" : scope_ + "/", op, "_", n);
}

std::string Graph::node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<Attr>& attrs) {
  onnx::NodeProto* n = g_.add_node();
  const std::string name = fresh(op);
  n->set_name(name);
  n->set_op_type(op);
  for (const std::string& in : inputs) n->add_input(in);
  n->add_output(name);
  for (const Attr& a : attrs) {
    onnx::AttributeProto* p = n->add_attribute();
    p->set_name(a.name);
    if (auto* i = std::get_if<int64_t>(&a.value)) {
      p->set_type(onnx::AttributeProto::INT);
      p->set_i(*i);
    } else if (auto* f = std::get_if<float>(&a.value)) {
      p->set_type(onnx::AttributeProto::FLOAT);
      p->set_f(*f);
    } else if (auto* s = std::get_if<std::string>(&a.value)) {
      p->set_type(onnx::AttributeProto::STRING);
      p->set_s(*s);
    } else {
      p->set_type(onnx::AttributeProto::INTS);
      for (int64_t v : std::get<std::vector<int64_t>>(a.value)) p->add_ints(v);
    }
  }
  return name;
}

std::string Graph::add_tensor(const std::string& name, const std::vector<int64_t>& shape,
                              const float* data, bool f16) {
  onnx::TensorProto* t = g_.add_initializer();
  t->set_name(name);
  size_t n = 1;
  for (int64_t d : shape) {
    t->add_dims(d);
    n *= size_t(d);
  }
  // raw_data is little-endian, as the x86-64 and ARM hosts biref runs on
  if (f16) {
    t->set_data_type(onnx::TensorProto::FLOAT16);
    std::string raw(n * 2, '\0');
    for (size_t i = 0; i < n; ++i) {
      const uint16_t h = f32_to_f16(data[i]);
      std::memcpy(&raw[i * 2], &h, 2);
    }
    t->set_raw_data(std::move(raw));
  } else {
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(data), n * sizeof(float)));
  }
  return name;
}

bool Graph::has_weight(const std::string& name) const {
  return weights_.count(name) > 0;
}

std::string Graph::weight(const std::string& name, const std::vector<int64_t>& shape,
                          const float* data) {
  if (!weights_.insert(name).second) return name;
  return add_tensor(name, shape, data, f16_);
}

std::string Graph::weight_f32(const std::string& name, const std::vector<int64_t>& shape,
                              const float* data) {
  if (!weights_.insert(name).second) return name;
  return add_tensor(name, shape, data, false);
}

// An int64 constant: a 1-D tensor of `values`, or with `scalar` a 0-D tensor of the one value.
std::string Graph::int_constant(const std::vector<int64_t>& values, bool scalar) {
  std::string key = scalar ? "s" : "i";
  for (int64_t v : values) key += str_cat(",", v);
  auto it = consts_.find(key);
  if (it != consts_.end()) return it->second;
  onnx::TensorProto* t = g_.add_initializer();
  const std::string name = str_cat(scalar ? "const.i64s." : "const.i64.", consts_.size());
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  if (!scalar) t->add_dims(int64_t(values.size()));
  for (int64_t v : values) t->add_int64_data(v);
  consts_[key] = name;
  return name;
}

std::string Graph::ints(const std::vector<int64_t>& values) {
  return int_constant(values, false);
}

std::string Graph::scalar_i64(int64_t v) {
  return int_constant({v}, true);
}

// Constants are cached by their exact bits (a decimal key would merge values that print alike).
static std::string bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return std::to_string(b);
}

std::string Graph::float_constant(float v, bool f16) {
  const std::string key = (f16 ? "h" : "f") + bits_of(v);
  auto it = consts_.find(key);
  if (it != consts_.end()) return it->second;
  const std::string name = str_cat(f16 ? "const.f16." : "const.f32.", consts_.size());
  add_tensor(name, {}, &v, f16);
  consts_[key] = name;
  return name;
}

std::string Graph::scalar(float v) {
  return float_constant(v, f16_);
}

std::string Graph::scalar_f32(float v) {
  return float_constant(v, false);
}

std::string Graph::to_f32(const std::string& x) {
  if (!f16_) return x;
  return node("Cast", {x}, {{"to", int64_t(onnx::TensorProto::FLOAT)}});
}

std::string Graph::from_f32(const std::string& x) {
  if (!f16_) return x;
  return node("Cast", {x}, {{"to", int64_t(onnx::TensorProto::FLOAT16)}});
}

std::string Graph::dim_tensor(const Dim& d) {
  return d.known() ? ints({d.value}) : d.tensor;
}

Dim Graph::binary(const char* op, const Dim& a, const Dim& b, int64_t folded) {
  if (a.known() && b.known()) return Dim::of(folded);
  return Dim{-1, node(op, {dim_tensor(a), dim_tensor(b)})};
}

Dim Graph::add(const Dim& a, const Dim& b) {
  return binary("Add", a, b, a.value + b.value);
}
Dim Graph::sub(const Dim& a, const Dim& b) {
  return binary("Sub", a, b, a.value - b.value);
}
Dim Graph::mul(const Dim& a, const Dim& b) {
  return binary("Mul", a, b, a.value * b.value);
}
Dim Graph::div(const Dim& a, const Dim& b) {
  return binary("Div", a, b, b.value != 0 ? a.value / b.value : 0);
}
Dim Graph::mod(const Dim& a, const Dim& b) {
  return binary("Mod", a, b, b.value != 0 ? a.value % b.value : 0);
}

Dim Graph::shape_dim(const std::string& x, int64_t axis) {
  return Dim{-1, node("Shape", {x}, {{"start", axis}, {"end", axis + 1}})};
}

std::string Graph::dims(const std::vector<Dim>& d) {
  // runs of known dimensions become one constant each; all known: one constant
  std::vector<std::string> parts;
  std::vector<int64_t> run;
  for (const Dim& x : d) {
    if (x.known()) {
      run.push_back(x.value);
      continue;
    }
    if (!run.empty()) parts.push_back(ints(run));
    run.clear();
    parts.push_back(x.tensor);
  }
  if (parts.empty()) return ints(run);
  if (!run.empty()) parts.push_back(ints(run));
  return node("Concat", parts, {{"axis", int64_t(0)}});
}

std::string Graph::dim_scalar(const Dim& d) {
  if (d.known()) return scalar_i64(d.value);
  return node("Squeeze", {d.tensor, ints({0})});
}

std::string Graph::dim_f32(const Dim& d) {
  if (d.known()) return scalar_f32(float(d.value));
  return node("Cast", {dim_scalar(d)}, {{"to", int64_t(onnx::TensorProto::FLOAT)}});
}

}  // namespace biref::onnx_export
