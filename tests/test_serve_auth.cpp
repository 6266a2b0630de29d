// Bearer tokens: the token file's format and its errors, and authorize().
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "biref/error.h"
#include "serve/auth.h"

namespace biref::serve {
namespace {

const std::string kUser = "user-token-0123456789";
const std::string kAdmin = "Admin.Token_~+/=-abcdef";

std::string error_of(const std::string& text) {
  try {
    parse_token_file(text, "tokens.txt");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidInput);
    return e.what();
  }
  ADD_FAILURE() << "no error for:\n" << text;
  return "";
}

TEST(ServeAuth, ParsesTokenFile) {
  const TokenSet set = parse_token_file(
      "# tokens\n\n  # indented comment\nuser " + kUser + "\r\n\tadmin\t" + kAdmin + "  \n",
      "tokens.txt");
  EXPECT_EQ(set.path, "tokens.txt");
  ASSERT_EQ(set.tokens.size(), 2u);
  EXPECT_EQ(set.tokens[0].role, Role::User);
  EXPECT_EQ(set.tokens[0].token, kUser);
  EXPECT_EQ(set.tokens[1].role, Role::Admin);
  EXPECT_EQ(set.tokens[1].token, kAdmin);
  // No newline at the end of the last line.
  EXPECT_EQ(parse_token_file("user " + kUser, "t").tokens.size(), 1u);
}

TEST(ServeAuth, TokenFileErrorsNameFileAndLine) {
  EXPECT_EQ(error_of("user " + kUser + "\nroot " + kAdmin + "\n"),
            "token file 'tokens.txt' line 2: unknown role 'root' (use user or admin)");
  EXPECT_NE(error_of("\n\nadmin short-token-15c\n")
                .find("token file 'tokens.txt' line 3: the token has 15 characters"),
            std::string::npos);
  EXPECT_NE(error_of("admin 0123456789abcde\n").find("15 characters, fewer than 16"),
            std::string::npos);
  EXPECT_NE(error_of("user " + kUser + "\nadmin " + kUser + "\n")
                .find("line 2: the token is a duplicate of the one on line 1"),
            std::string::npos);
  EXPECT_NE(error_of("user 0123456789abcdef!\n").find("at position 17"), std::string::npos);
  EXPECT_NE(error_of("user\n").find("line 1: expected 'user TOKEN' or 'admin TOKEN', got 1 field"),
            std::string::npos);
  EXPECT_NE(error_of("user " + kUser + " extra\n").find("got 3 fields"), std::string::npos);
  EXPECT_NE(error_of("User " + kUser + "\n").find("unknown role 'User'"), std::string::npos);
  EXPECT_EQ(error_of("# nothing\n\n"), "token file 'tokens.txt' has no tokens");
}

TEST(ServeAuth, LoadsFromDisk) {
  char name[] = "/tmp/biref_tokens_XXXXXX";
  const int fd = mkstemp(name);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(name) << "admin " << kAdmin << "\n";
  const TokenSet set = load_token_file(name);
  EXPECT_EQ(authorize(set, "Bearer " + kAdmin), Role::Admin);
  std::remove(name);
  try {
    load_token_file(name);
    ADD_FAILURE() << "a missing token file loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(ServeAuth, Authorize) {
  const TokenSet set = parse_token_file("user " + kUser + "\nadmin " + kAdmin + "\n", "t");
  EXPECT_EQ(authorize(set, "Bearer " + kUser), Role::User);
  EXPECT_EQ(authorize(set, "Bearer " + kAdmin), Role::Admin);
  EXPECT_EQ(authorize(set, "bearer " + kUser), Role::User);
  EXPECT_EQ(authorize(set, "BEARER   " + kAdmin + " "), Role::Admin);
  EXPECT_EQ(authorize(set, ""), Role::None);
  EXPECT_EQ(authorize(set, "Bearer"), Role::None);
  EXPECT_EQ(authorize(set, "Bearer "), Role::None);
  EXPECT_EQ(authorize(set, kUser), Role::None);
  EXPECT_EQ(authorize(set, "Basic " + kUser), Role::None);
  EXPECT_EQ(authorize(set, "Bearer" + kUser), Role::None);
  // Prefixes, extensions and one-character changes of a token are not the token.
  EXPECT_EQ(authorize(set, "Bearer " + kUser.substr(0, kUser.size() - 1)), Role::None);
  EXPECT_EQ(authorize(set, "Bearer " + kUser + "0"), Role::None);
  std::string changed = kAdmin;
  changed[5] ^= 1;
  EXPECT_EQ(authorize(set, "Bearer " + changed), Role::None);
  EXPECT_EQ(authorize(set, "Bearer " + kUser + " " + kUser), Role::None);
  EXPECT_EQ(authorize(TokenSet{}, "Bearer " + kUser), Role::None);
}

TEST(ServeAuth, AdminImpliesUser) {
  EXPECT_TRUE(role_allows(Role::Admin, Role::User));
  EXPECT_TRUE(role_allows(Role::Admin, Role::Admin));
  EXPECT_TRUE(role_allows(Role::User, Role::User));
  EXPECT_FALSE(role_allows(Role::User, Role::Admin));
  EXPECT_FALSE(role_allows(Role::None, Role::User));
  EXPECT_TRUE(role_allows(Role::None, Role::None));
  EXPECT_STREQ(role_name(Role::Admin), "admin");
}

}  // namespace
}  // namespace biref::serve
