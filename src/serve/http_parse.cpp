// Query strings and multipart/form-data bodies (see http_parse.h).
#include "serve/http_parse.h"

#include <algorithm>
#include <cctype>

#include "core/check.h"

namespace biref::serve {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char lower(char c) {
  return char(std::tolower(static_cast<unsigned char>(c)));
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Printable form of untrusted bytes for a message: at most 40 characters, controls as \xNN.
std::string quoted(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  if (s.size() > 40) out += "...";
  return out + "'";
}

// One parameter of a header value: `name=token` or `name="quoted \"string\""`.
struct HeaderParam {
  std::string name, value;
};

// Splits `form-data; name="a"; filename="b.png"` into its first token ("form-data") and its
// parameters. `what` names the header in errors.
std::string split_params(std::string_view value, std::vector<HeaderParam>& params,
                         const std::string& what) {
  size_t at = 0;
  const auto skip_space = [&]() {
    while (at < value.size() && is_space(value[at])) ++at;
  };
  skip_space();
  const size_t type_begin = at;
  while (at < value.size() && value[at] != ';') ++at;
  const std::string type(trim(value.substr(type_begin, at - type_begin)));
  while (at < value.size()) {
    ++at;  // ';'
    skip_space();
    if (at >= value.size()) break;  // a trailing ';'
    const size_t name_begin = at;
    while (at < value.size() && value[at] != '=' && value[at] != ';') ++at;
    HeaderParam p;
    p.name = std::string(trim(value.substr(name_begin, at - name_begin)));
    std::transform(p.name.begin(), p.name.end(), p.name.begin(), lower);
    BIREF_CHECK(at < value.size() && value[at] == '=', what, ": parameter ", quoted(p.name),
                " has no '=value'");
    ++at;
    skip_space();
    if (at < value.size() && value[at] == '"') {
      ++at;
      bool closed = false;
      while (at < value.size()) {
        const char c = value[at++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && at < value.size()) {
          p.value += value[at++];
        } else {
          p.value += c;
        }
      }
      BIREF_CHECK(closed, what, ": the quoted value of parameter ", quoted(p.name),
                  " has no closing quote");
      skip_space();
      BIREF_CHECK(at >= value.size() || value[at] == ';', what, ": unexpected ",
                  quoted(value.substr(at)), " after the quoted value of parameter ",
                  quoted(p.name));
    } else {
      const size_t v_begin = at;
      while (at < value.size() && value[at] != ';') ++at;
      p.value = std::string(trim(value.substr(v_begin, at - v_begin)));
    }
    params.push_back(std::move(p));
  }
  return type;
}

// Appends the decoded `text` to `out`; returns the offset of a malformed escape, or npos.
size_t decode_into(std::string_view text, bool plus_as_space, std::string& out) {
  out.reserve(out.size() + text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return i;
      const int hi = hex_value(text[i + 1]), lo = hex_value(text[i + 2]);
      if (hi < 0 || lo < 0) return i;
      out += char(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return std::string_view::npos;
}

std::string bad_escape(std::string_view text, size_t at) {
  return str_cat("malformed percent-escape ", quoted(text.substr(at, 3)), " at offset ", at,
                 " (expected '%' and two hex digits)");
}

}  // namespace

std::string percent_decode(std::string_view text, bool plus_as_space) {
  std::string out;
  const size_t bad = decode_into(text, plus_as_space, out);
  BIREF_CHECK(bad == std::string_view::npos, bad_escape(text, bad));
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view target_query) {
  std::map<std::string, std::string> out;
  size_t begin = 0;
  while (begin <= target_query.size()) {
    size_t end = target_query.find('&', begin);
    if (end == std::string_view::npos) end = target_query.size();
    const std::string_view piece = target_query.substr(begin, end - begin);
    begin = end + 1;
    if (piece.empty()) continue;
    const size_t eq = piece.find('=');
    const std::string_view raw_key = piece.substr(0, eq);
    const std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view() : piece.substr(eq + 1);
    std::string key;
    size_t bad = decode_into(raw_key, true, key);
    BIREF_CHECK(bad == std::string_view::npos, "query parameter name ", quoted(raw_key), ": ",
                bad_escape(raw_key, bad));
    BIREF_CHECK(!key.empty(), "query parameter ", quoted(piece), " has an empty name");
    std::string value;
    bad = decode_into(raw_value, true, value);
    BIREF_CHECK(bad == std::string_view::npos, "query parameter '", key,
                "': ", bad_escape(raw_value, bad));
    const bool inserted = out.emplace(key, std::move(value)).second;
    BIREF_CHECK(inserted, "query parameter '", key, "' is given more than once");
  }
  return out;
}

std::string multipart_boundary(std::string_view content_type) {
  std::vector<HeaderParam> params;
  const std::string type = split_params(content_type, params, "Content-Type");
  BIREF_CHECK(iequals(type, "multipart/form-data"), "Content-Type ", quoted(type),
              " is not multipart/form-data");
  const HeaderParam* boundary = nullptr;
  for (const HeaderParam& p : params)
    if (p.name == "boundary") {
      BIREF_CHECK(!boundary, "Content-Type: the boundary parameter is given more than once");
      boundary = &p;
    }
  BIREF_CHECK(boundary, "Content-Type multipart/form-data has no boundary parameter");
  BIREF_CHECK(!boundary->value.empty(), "Content-Type: the multipart boundary is empty");
  BIREF_CHECK(boundary->value.size() <= 70, "Content-Type: the multipart boundary has ",
              boundary->value.size(), " characters, more than the 70 RFC 2046 allows");
  for (char c : boundary->value)
    BIREF_CHECK(c >= 0x20 && c < 0x7f, "Content-Type: the multipart boundary ",
                quoted(boundary->value), " has a control or non-ASCII character");
  return boundary->value;
}

std::vector<FormPart> parse_multipart(std::string_view body, std::string_view boundary,
                                      size_t max_parts) {
  BIREF_CHECK(!boundary.empty(), "multipart: the boundary is empty");
  const std::string dash = str_cat("--", boundary);
  const std::string delimiter = str_cat("\r\n", dash);

  // What follows "--boundary" at `at`: 1 a closing delimiter ("--"), 0 a delimiter line
  // (optional spaces, CRLF; `at` moved past it), -1 anything else (data that only starts
  // like a delimiter, or a body that ends here).
  const auto delimiter_end = [&](size_t& at) -> int {
    if (body.substr(at, 2) == "--") return 1;
    size_t i = at;
    while (i < body.size() && is_space(body[i])) ++i;
    if (body.substr(i, 2) != "\r\n") return -1;
    at = i + 2;
    return 0;
  };

  // The opening delimiter: at the start of the body, or at the start of a line of the preamble.
  size_t at = std::string_view::npos;
  int kind = -1;
  for (size_t candidate = body.substr(0, dash.size()) == dash ? 0 : body.find(delimiter);
       candidate != std::string_view::npos; candidate = body.find(delimiter, candidate + 1)) {
    size_t after =
        candidate +
        (candidate == 0 && body.substr(0, dash.size()) == dash ? dash.size() : delimiter.size());
    kind = delimiter_end(after);
    if (kind >= 0) {
      at = after;
      break;
    }
  }
  BIREF_CHECK(at != std::string_view::npos, "multipart: the body has no opening boundary line ",
              quoted(dash));

  std::vector<FormPart> parts;
  while (kind == 0) {
    const size_t index = parts.size() + 1;
    BIREF_CHECK_KIND(parts.size() < max_parts, ErrorKind::TooLarge, "multipart: more than ",
                     max_parts, " parts");
    // The end of this part: the next delimiter followed by CRLF or "--".
    size_t end = std::string_view::npos, next = 0;
    for (size_t c = body.find(delimiter, at); c != std::string_view::npos;
         c = body.find(delimiter, c + 1)) {
      next = c + delimiter.size();
      kind = delimiter_end(next);
      if (kind >= 0) {
        end = c;
        break;
      }
    }
    BIREF_CHECK(end != std::string_view::npos, "multipart part ", index,
                " has no closing boundary ", quoted(delimiter.substr(2)),
                " (is the body truncated?)");
    const std::string_view part = body.substr(at, end - at);
    std::string_view headers, data;
    if (part.substr(0, 2) == "\r\n") {
      data = part.substr(2);
    } else {
      const size_t blank = part.find("\r\n\r\n");
      BIREF_CHECK(blank != std::string_view::npos, "multipart part ", index,
                  ": the header block has no blank line before the data");
      headers = part.substr(0, blank);
      data = part.substr(blank + 4);
    }

    FormPart fp;
    fp.data = data;
    bool has_disposition = false;
    size_t line_begin = 0;
    while (line_begin < headers.size()) {
      size_t line_end = headers.find("\r\n", line_begin);
      if (line_end == std::string_view::npos) line_end = headers.size();
      const std::string_view line = headers.substr(line_begin, line_end - line_begin);
      line_begin = line_end + 2;
      const size_t colon = line.find(':');
      BIREF_CHECK(colon != std::string_view::npos, "multipart part ", index, ": header line ",
                  quoted(line), " has no ':'");
      const std::string_view name = trim(line.substr(0, colon));
      const std::string_view value = trim(line.substr(colon + 1));
      if (iequals(name, "Content-Disposition")) {
        const std::string what = str_cat("multipart part ", index, ": Content-Disposition");
        BIREF_CHECK(!has_disposition, "multipart part ", index,
                    " has more than one Content-Disposition header");
        has_disposition = true;
        std::vector<HeaderParam> params;
        const std::string type = split_params(value, params, what);
        BIREF_CHECK(iequals(type, "form-data"), what, " is ", quoted(type), ", not form-data");
        for (const HeaderParam& p : params) {
          if (p.name == "name") fp.name = p.value;
          if (p.name == "filename") fp.filename = p.value;
        }
      } else if (iequals(name, "Content-Type")) {
        fp.content_type = std::string(value);
      }
    }
    BIREF_CHECK(has_disposition, "multipart part ", index, " has no Content-Disposition header");
    BIREF_CHECK(!fp.name.empty(), "multipart part ", index,
                " has no Content-Disposition form-data name");
    parts.push_back(std::move(fp));
    at = next;
  }
  return parts;
}

const FormPart* find_part(const std::vector<FormPart>& parts, std::string_view name) {
  for (const FormPart& p : parts)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace biref::serve
