// biref: the one exception type of the library.
#pragma once
#include <stdexcept>
#include <string>

namespace biref {

// What went wrong, in the terms a caller acts on (a service maps them to HTTP statuses).
enum class ErrorKind {
  InvalidInput,  // a bad file, image, tensor or option: the caller's to fix (HTTP 400)
  TooLarge,      // an input above a configured limit: pixels, bytes (HTTP 413)
  NotFound,      // a model, file or name that does not exist (HTTP 404)
  Unavailable,   // overloaded or shutting down: try again later (HTTP 503)
  Internal,      // a broken invariant inside biref (HTTP 500)
};

// "invalid input", "too large", "not found", "unavailable", "internal"
const char* error_kind_name(ErrorKind kind);

// Every failure the library reports to its users: a bad file, a tensor that does not fit,
// an input size the model cannot take. The message names the input (file, tensor, shape).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorKind kind = ErrorKind::InvalidInput)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace biref
