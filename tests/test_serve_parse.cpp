// Query strings and multipart/form-data bodies: valid forms from browsers and curl, and every
// malformed or truncated body an error naming the bad part.
#include <gtest/gtest.h>

#include <string>

#include "biref/error.h"
#include "serve/http_parse.h"

namespace biref::serve {
namespace {

// The message of the biref::Error `f` throws, or "" (a failure) when it does not throw.
template <typename F>
std::string error_of(F f, ErrorKind kind = ErrorKind::InvalidInput) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no biref::Error thrown";
  return "";
}

TEST(ServePercentDecode, DecodesEscapesAndPlus) {
  EXPECT_EQ(percent_decode("a%20b%2Bc%2fd", false), "a b+c/d");
  EXPECT_EQ(percent_decode("a+b", true), "a b");
  EXPECT_EQ(percent_decode("a+b", false), "a+b");
  EXPECT_EQ(percent_decode("%00%ff", false), std::string("\0\xff", 2));
  EXPECT_EQ(percent_decode("", true), "");
}

TEST(ServePercentDecode, MalformedEscapesNameTheEscape) {
  EXPECT_NE(error_of([] { percent_decode("ab%zz", true); }).find("'%zz' at offset 2"),
            std::string::npos);
  EXPECT_NE(error_of([] { percent_decode("ab%4", true); }).find("'%4' at offset 2"),
            std::string::npos);
  EXPECT_NE(error_of([] { percent_decode("%", true); }).find("offset 0"), std::string::npos);
}

TEST(ServeQuery, ParsesPairs) {
  const auto q = parse_query("a=1&b=x%20y&c=+&&d&e=a=b&f%5B%5D=2&");
  ASSERT_EQ(q.size(), 6u);
  EXPECT_EQ(q.at("a"), "1");
  EXPECT_EQ(q.at("b"), "x y");
  EXPECT_EQ(q.at("c"), " ");
  EXPECT_EQ(q.at("d"), "");
  EXPECT_EQ(q.at("e"), "a=b");
  EXPECT_EQ(q.at("f[]"), "2");
  EXPECT_TRUE(parse_query("").empty());
  EXPECT_TRUE(parse_query("&&").empty());
}

TEST(ServeQuery, ErrorsNameTheParameter) {
  EXPECT_NE(error_of([] {
              parse_query("model=a&threshold=0.5%g1");
            }).find("query parameter 'threshold': malformed percent-escape '%g1'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_query("a=1&b=2&a=3");
            }).find("query parameter 'a' is given more than once"),
            std::string::npos);
  // The same key spelled two ways is still a repeat.
  EXPECT_NE(error_of([] { parse_query("a=1&%61=2"); }).find("'a'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_query("=5"); }).find("empty name"), std::string::npos);
  EXPECT_NE(error_of([] { parse_query("x%zz=1"); }).find("query parameter name 'x%zz'"),
            std::string::npos);
}

TEST(ServeMultipartBoundary, ParsesContentType) {
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=abc123"), "abc123");
  EXPECT_EQ(multipart_boundary("Multipart/Form-Data;BOUNDARY=\"a b:c\""), "a b:c");
  EXPECT_EQ(multipart_boundary("multipart/form-data; charset=utf-8; boundary=----WebKitForm"
                               "BoundaryX7z"),
            "----WebKitFormBoundaryX7z");
  EXPECT_EQ(
      multipart_boundary(std::string("multipart/form-data; boundary=") + std::string(70, 'b')),
      std::string(70, 'b'));
}

TEST(ServeMultipartBoundary, RejectsBadContentTypes) {
  EXPECT_NE(error_of([] {
              multipart_boundary("image/png");
            }).find("'image/png' is not multipart/form-data"),
            std::string::npos);
  EXPECT_NE(error_of([] { multipart_boundary("multipart/form-data"); }).find("no boundary"),
            std::string::npos);
  EXPECT_NE(error_of([] { multipart_boundary("multipart/form-data; boundary="); }).find("empty"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { multipart_boundary("multipart/form-data; boundary=\"\""); }).find("empty"),
      std::string::npos);
  EXPECT_NE(
      error_of([] {
        multipart_boundary(std::string("multipart/form-data; boundary=") + std::string(71, 'b'));
      }).find("71 characters"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              multipart_boundary("multipart/form-data; boundary=\"abc");
            }).find("no closing quote"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              multipart_boundary("multipart/form-data; boundary=a; boundary=b");
            }).find("more than once"),
            std::string::npos);
}

// A body as curl -F sends it: a text field and a file, no preamble.
const std::string kBody =
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"model\"\r\n"
    "\r\n"
    "general\r\n"
    "--XyZ\r\n"
    "content-disposition: form-data; name=\"image\"; filename=\"a \\\"b\\\".png\"\r\n"
    "CONTENT-TYPE: image/png\r\n"
    "\r\n"
    "\x89PNG\r\n\x1a\r\n--XyZ-not-a-delimiter\r\n\r\nend\r\n"
    "--XyZ--";

TEST(ServeMultipart, ParsesFieldsAndFiles) {
  const auto parts = parse_multipart(kBody, "XyZ");
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "model");
  EXPECT_EQ(parts[0].filename, "");
  EXPECT_EQ(parts[0].content_type, "");
  EXPECT_EQ(parts[0].data, "general");
  EXPECT_EQ(parts[1].name, "image");
  EXPECT_EQ(parts[1].filename, "a \"b\".png");
  EXPECT_EQ(parts[1].content_type, "image/png");
  // Data that only starts like a delimiter ("--XyZ-not...") stays data.
  EXPECT_EQ(parts[1].data, "\x89PNG\r\n\x1a\r\n--XyZ-not-a-delimiter\r\n\r\nend");
  // The data views into the body.
  EXPECT_GE(parts[1].data.data(), kBody.data());
  EXPECT_LE(parts[1].data.data() + parts[1].data.size(), kBody.data() + kBody.size());
  ASSERT_NE(find_part(parts, "image"), nullptr);
  EXPECT_EQ(find_part(parts, "image")->filename, "a \"b\".png");
  EXPECT_EQ(find_part(parts, "file"), nullptr);
}

TEST(ServeMultipart, PreambleEpilogueEmptyDataAndPadding) {
  const std::string body =
      "This is the preamble.\r\n--b1  \r\n"  // transport padding after the delimiter
      "Content-Disposition: form-data; name=empty\r\n\r\n"
      "\r\n--b1\r\n"
      "Content-Disposition: form-data; name=\"x\"\r\n\r\n"
      "1\r\n--b1--\r\nepilogue --b1\r\n garbage";
  const auto parts = parse_multipart(body, "b1");
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "empty");
  EXPECT_EQ(parts[0].data, "");
  EXPECT_EQ(parts[1].data, "1");
  EXPECT_TRUE(parse_multipart("--b1--\r\n", "b1").empty());
}

TEST(ServeMultipart, ErrorsNameThePart) {
  EXPECT_NE(error_of([] {
              parse_multipart("no delimiter here", "b");
            }).find("no opening boundary line '--b'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_multipart("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nxyz", "b");
            }).find("multipart part 1 has no closing boundary"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_multipart(
                  "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b\r\n"
                  "Content-Disposition: form-data; filename=\"x.png\"\r\n\r\n2\r\n--b--",
                  "b");
            }).find("multipart part 2 has no Content-Disposition form-data name"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_multipart("--b\r\nContent-Type: text/plain\r\n\r\n2\r\n--b--", "b");
            }).find("multipart part 1 has no Content-Disposition header"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_multipart("--b\r\nContent-Disposition: form-data; name=a\r\n--b--", "b");
            }).find("multipart part 1: the header block has no blank line"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_multipart("--b\r\nContent-Disposition form-data\r\n\r\n1\r\n--b--", "b");
            }).find("has no ':'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_multipart("--b\r\nContent-Disposition: attachment; name=a\r\n\r\n1\r\n--b--",
                              "b");
            }).find("'attachment', not form-data"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_multipart("--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--b--",
                              "b");
            }).find("no closing quote"),
            std::string::npos);
}

TEST(ServeMultipart, TooManyParts) {
  std::string body;
  for (int i = 0; i < 5; ++i)
    body += "--b\r\nContent-Disposition: form-data; name=p" + std::to_string(i) + "\r\n\r\nv\r\n";
  body += "--b--";
  EXPECT_EQ(parse_multipart(body, "b", 5).size(), 5u);
  EXPECT_NE(error_of([&] { parse_multipart(body, "b", 4); }, ErrorKind::TooLarge)
                .find("more than 4 parts"),
            std::string::npos);
}

// Every prefix of a valid body either parses (only those holding the whole closing delimiter)
// or throws biref::Error; so does every single-byte corruption. Run under ASan/UBSan this shows
// no read outside the body.
TEST(ServeMultipart, EveryTruncationAndCorruptionParsesOrThrows) {
  const std::string body = "preamble\r\n" + kBody + "\r\nepilogue";
  const size_t complete = body.find("--XyZ--") + 7;
  for (size_t n = 0; n <= body.size(); ++n) {
    // A copy of exactly n bytes, so that ASan sees any read past its end.
    const std::string cut = body.substr(0, n);
    try {
      const auto parts = parse_multipart(cut, "XyZ");
      EXPECT_GE(n, complete) << "a truncated body parsed at " << n;
      EXPECT_EQ(parts.size(), 2u);
    } catch (const Error& e) {
      EXPECT_LT(n, complete) << "the complete body failed at " << n << ": " << e.what();
    }
  }
  int parsed = 0, thrown = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    for (char c : {'\0', '\r', '\n', '-', '"', ';', ':', 'X', '\\'}) {
      std::string bad = body;
      bad[i] = c;
      try {
        const auto parts = parse_multipart(bad, "XyZ", 3);
        for (const FormPart& p : parts)
          EXPECT_TRUE(p.data.data() >= bad.data() &&
                      p.data.data() + p.data.size() <= bad.data() + bad.size());
        ++parsed;
      } catch (const Error&) {
        ++thrown;
      }
    }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(thrown, 0);
}

}  // namespace
}  // namespace biref::serve
