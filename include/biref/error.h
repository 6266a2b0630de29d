// biref: the one exception type of the library.
#pragma once
#include <stdexcept>
#include <string>

namespace biref {

// Every failure the library reports to its users: a bad file, a tensor that does not fit,
// an input size the model cannot take. The message names the input (file, tensor, shape).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace biref
