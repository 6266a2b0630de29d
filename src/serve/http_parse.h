// Request parsing for `biref serve`: query strings (application/x-www-form-urlencoded) and
// multipart/form-data bodies (RFC 7578 over RFC 2046). Every malformed input is a biref::Error
// (InvalidInput, or TooLarge for too many parts) naming the bad part; nothing here asserts.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace biref::serve {

// "%41b+c" -> "Ab c" (with plus_as_space; '+' kept otherwise). A '%' not followed by two hex
// digits is an error naming the escape and its offset.
std::string percent_decode(std::string_view text, bool plus_as_space);

// The query string (the part of the target after '?'): "a=1&b=x%20y&c=+" -> {a: "1",
// b: "x y", c: " "}. Keys and values are percent-decoded with '+' as space; a piece without
// '=' is a key with an empty value; empty pieces ("a=1&&b=2", a trailing '&') are ignored.
// A repeated key, an empty key or a malformed escape is an error naming the parameter.
std::map<std::string, std::string> parse_query(std::string_view target_query);

// The boundary of a multipart/form-data Content-Type: `multipart/form-data; boundary=xyz` or
// `boundary="x y z"` (the media type and the parameter name are case-insensitive). Errors: a
// media type other than multipart/form-data, no boundary, an empty one or one longer than 70
// characters (RFC 2046).
std::string multipart_boundary(std::string_view content_type);

// One part of a multipart/form-data body.
struct FormPart {
  std::string name;          // Content-Disposition: form-data; name="..."
  std::string filename;      // its filename="..." parameter; empty when absent
  std::string content_type;  // the part's Content-Type; empty when absent
  std::string_view data;     // the part's bytes: a view into the body passed to parse_multipart
};

// Splits a multipart/form-data body at `boundary` (as multipart_boundary returns it). Bytes
// before the first delimiter (preamble) and after the closing `--boundary--` (epilogue) are
// ignored. Header lines end in CRLF, header names are case-insensitive, name and filename may
// be quoted with backslash escapes. Errors: no opening delimiter, no closing delimiter (a
// truncated body), a header block without its blank line, a header line without ':', a part
// without a Content-Disposition form-data name, more than `max_parts` parts (TooLarge).
std::vector<FormPart> parse_multipart(std::string_view body, std::string_view boundary,
                                      size_t max_parts = 64);

// The first part named `name`, or nullptr.
const FormPart* find_part(const std::vector<FormPart>& parts, std::string_view name);

}  // namespace biref::serve
