// Bearer tokens for `biref serve --token-file PATH`.
//
// The token file: one token per line, `ROLE TOKEN`, ROLE `user` or `admin`, separated by
// spaces or tabs:
//   # who may call the service
//   user  3f9a0c1d2b4e5f60718293a4b5c6d7e8
//   admin Zm9yLWFkbWlucy1vbmx5LTIwMjY=
// Blank lines and lines whose first non-blank character is '#' are ignored; CRLF line ends are
// accepted. A token is at least 16 characters of [A-Za-z0-9._~+/=-] (RFC 6750's b64token). An
// unknown role, a short or malformed token, a line with other than two fields, a token listed
// twice, and a file without any token are errors naming the file and line. A `user` token may
// call the inference routes; an `admin` token may also load and unload models.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace biref::serve {

enum class Role { None, User, Admin };

// "none", "user", "admin"
const char* role_name(Role role);

// Whether a caller with `granted` may do what needs `required` (admin implies user).
bool role_allows(Role granted, Role required);

struct TokenEntry {
  Role role = Role::None;
  std::string token;
};

struct TokenSet {
  std::string path;  // the file it was read from
  std::vector<TokenEntry> tokens;
};

// Reads and checks a token file (format above); throws biref::Error naming the path and line.
TokenSet load_token_file(const std::string& path);
// The same for the file's text; `path` only names it in errors.
TokenSet parse_token_file(std::string_view text, const std::string& path);

// The role granted by an Authorization header value `Bearer <token>` (the scheme
// case-insensitive, spaces around the token ignored): the token's role, or Role::None when the
// header is empty, not a bearer credential, or its token is not in the set. The token is
// compared with every token of the set without early exit, so the time taken does not depend
// on how many leading characters of a guess are right.
Role authorize(const TokenSet& tokens, std::string_view authorization_header_value);

}  // namespace biref::serve
