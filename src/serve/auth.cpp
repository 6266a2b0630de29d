// Bearer tokens (see auth.h).
#include "serve/auth.h"

#include <cctype>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>

#include "core/check.h"
#include "core/file.h"

namespace biref::serve {

namespace {

constexpr size_t kMinTokenChars = 16;

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '~' ||
         c == '+' || c == '/' || c == '=' || c == '-';
}

// Role bits: admin holds the user bit too, so OR-ing the roles of matches gives the strongest.
constexpr uint32_t kUserBit = 1, kAdminBit = 2;

uint32_t role_bits(Role role) {
  switch (role) {
    case Role::User:
      return kUserBit;
    case Role::Admin:
      return kUserBit | kAdminBit;
    case Role::None:
      return 0;
  }
  return 0;
}

}  // namespace

const char* role_name(Role role) {
  switch (role) {
    case Role::None:
      return "none";
    case Role::User:
      return "user";
    case Role::Admin:
      return "admin";
  }
  return "none";
}

bool role_allows(Role granted, Role required) {
  return (role_bits(granted) & role_bits(required)) == role_bits(required);
}

TokenSet parse_token_file(std::string_view text, const std::string& path) {
  TokenSet set;
  set.path = path;
  std::map<std::string, size_t> line_of;  // token -> the line it was first seen on
  size_t line_no = 0, begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(begin, end - begin);
    begin = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::vector<std::string_view> fields;
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && is_blank(line[i])) ++i;
      const size_t f = i;
      while (i < line.size() && !is_blank(line[i])) ++i;
      if (i > f) fields.push_back(line.substr(f, i - f));
    }
    if (fields.empty() || fields[0][0] == '#') continue;
    const std::string where = str_cat("token file '", path, "' line ", line_no);
    BIREF_CHECK(fields.size() == 2, where, ": expected 'user TOKEN' or 'admin TOKEN', got ",
                fields.size(), " field", fields.size() == 1 ? "" : "s");
    TokenEntry entry;
    if (fields[0] == "user") {
      entry.role = Role::User;
    } else if (fields[0] == "admin") {
      entry.role = Role::Admin;
    } else {
      fail(where, ": unknown role '", fields[0], "' (use user or admin)");
    }
    const std::string_view token = fields[1];
    BIREF_CHECK(token.size() >= kMinTokenChars, where, ": the token has ", token.size(),
                " characters, fewer than ", kMinTokenChars);
    for (size_t i = 0; i < token.size(); ++i)
      BIREF_CHECK(is_token_char(token[i]), where, ": the token has a character other than ",
                  "A-Z a-z 0-9 . _ ~ + / = - at position ", i + 1);
    entry.token = std::string(token);
    const auto [it, inserted] = line_of.emplace(entry.token, line_no);
    BIREF_CHECK(inserted, where, ": the token is a duplicate of the one on line ", it->second);
    set.tokens.push_back(std::move(entry));
  }
  BIREF_CHECK(!set.tokens.empty(), "token file '", path, "' has no tokens");
  return set;
}

TokenSet load_token_file(const std::string& path) {
  check_readable_file(path, "token file");
  std::ifstream in(path, std::ios::binary);
  BIREF_CHECK(in, "token file '", path, "' cannot be opened");
  std::ostringstream text;
  text << in.rdbuf();
  BIREF_CHECK(!in.bad(), "token file '", path, "' cannot be read");
  return parse_token_file(text.str(), path);
}

Role authorize(const TokenSet& tokens, std::string_view value) {
  while (!value.empty() && is_blank(value.front())) value.remove_prefix(1);
  while (!value.empty() && is_blank(value.back())) value.remove_suffix(1);
  static constexpr std::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() || !is_blank(value[kScheme.size()])) return Role::None;
  for (size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(value[i])) != kScheme[i]) return Role::None;
  std::string_view guess = value.substr(kScheme.size());
  while (!guess.empty() && is_blank(guess.front())) guess.remove_prefix(1);
  if (guess.empty()) return Role::None;

  // Every byte of every token is compared: no early exit on the first differing byte or on the
  // first matching token. Lengths are not secret (all tokens are >= 16 characters).
  uint32_t granted = 0;
  for (const TokenEntry& t : tokens.tokens) {
    uint32_t diff = t.token.size() != guess.size() ? 1u : 0u;
    for (size_t i = 0; i < t.token.size(); ++i) {
      const unsigned char g = i < guess.size() ? static_cast<unsigned char>(guess[i]) : 0;
      diff |= uint32_t(static_cast<unsigned char>(t.token[i]) ^ g);
    }
    // all ones when diff == 0, else 0
    const uint32_t match = uint32_t(0) - uint32_t(((diff | (0u - diff)) >> 31) ^ 1u);
    granted |= match & role_bits(t.role);
  }
  if (granted & kAdminBit) return Role::Admin;
  if (granted & kUserBit) return Role::User;
  return Role::None;
}

}  // namespace biref::serve
