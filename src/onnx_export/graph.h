// A small builder of ONNX graphs (the protobuf messages of Debian's libonnx): nodes named by the
// module they come from, initializers, int64 shape constants, and dimensions that are numbers
// when the export fixes them and int64 tensors computed from the input's shape when it does not.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <onnx/onnx_pb.h>

namespace biref::onnx_export {

// A dimension: a number known at export time, or a 1-element int64 tensor of the graph.
// Arithmetic on two known dimensions folds to a number; anything else becomes nodes.
struct Dim {
  int64_t value = -1;
  std::string tensor;  // empty: `value` is the dimension
  bool known() const { return tensor.empty(); }
  static Dim of(int64_t v) { return Dim{v, {}}; }
};

struct Attr {
  std::string name;
  std::variant<int64_t, float, std::string, std::vector<int64_t>> value;
};

class Graph {
 public:
  // `f16`: activations and weights in float16 (float32 where a caller asks for it).
  Graph(onnx::GraphProto& g, bool f16) : g_(g), f16_(f16) {}

  // Node names are "<scope>/<Op>_<n>"; outputs are named after their node.
  void set_scope(const std::string& scope) { scope_ = scope; }

  // Adds a node with one output, named after the node; returns it.
  std::string node(const std::string& op, const std::vector<std::string>& inputs,
                   const std::vector<Attr>& attrs = {});

  // A weight in the activation type (float16 in an f16 export), or always float32. The same
  // name added twice returns the first (the backbone's two passes share their weights).
  std::string weight(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  std::string weight_f32(const std::string& name, const std::vector<int64_t>& shape,
                         const float* data);
  // Whether a weight of that name was added (so a caller can skip re-laying it out).
  bool has_weight(const std::string& name) const;
  // Cached constants: int64 vectors, scalars in the activation type or float32, int64 scalars.
  std::string ints(const std::vector<int64_t>& values);
  std::string scalar(float v);
  std::string scalar_f32(float v);
  std::string scalar_i64(int64_t v);

  // Casts between the activation type and float32 (no node in a float32 export).
  std::string to_f32(const std::string& x);
  std::string from_f32(const std::string& x);

  // Dimension arithmetic (integer division and modulo of non-negative values).
  Dim add(const Dim& a, const Dim& b);
  Dim sub(const Dim& a, const Dim& b);
  Dim mul(const Dim& a, const Dim& b);
  Dim div(const Dim& a, const Dim& b);
  Dim mod(const Dim& a, const Dim& b);
  // Dimension `axis` of tensor x, read from the graph (Shape with start/end).
  Dim shape_dim(const std::string& x, int64_t axis);
  // A 1-D int64 tensor of the dimensions (a constant when all are known).
  std::string dims(const std::vector<Dim>& d);
  // A 0-D int64 tensor of one dimension (for Range).
  std::string dim_scalar(const Dim& d);
  // The dimension as a float32 scalar tensor.
  std::string dim_f32(const Dim& d);

 private:
  std::string fresh(const std::string& op);
  std::string add_tensor(const std::string& name, const std::vector<int64_t>& shape,
                         const float* data, bool f16);
  std::string int_constant(const std::vector<int64_t>& values, bool scalar);
  std::string float_constant(float v, bool f16);
  Dim binary(const char* op, const Dim& a, const Dim& b, int64_t folded);
  std::string dim_tensor(const Dim& d);

  onnx::GraphProto& g_;
  bool f16_;
  std::string scope_;
  std::map<std::string, int> op_counts_;
  std::map<std::string, std::string> consts_;  // key -> tensor name
  std::set<std::string> weights_;              // weight names already added
};

}  // namespace biref::onnx_export
