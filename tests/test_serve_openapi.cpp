// src/serve/openapi.json: valid JSON, OpenAPI 3.0.3, every route of `biref serve` with its
// methods, and every $ref resolving inside the document.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

namespace {

std::string source_dir() {
#ifdef BIREF_SOURCE_DIR
  return BIREF_SOURCE_DIR;
#else
  const std::string file = __FILE__;  // .../tests/test_serve_openapi.cpp
  const size_t slash = file.find_last_of('/');
  return (slash == std::string::npos ? std::string(".") : file.substr(0, slash)) + "/..";
#endif
}

nlohmann::json load_openapi() {
  const std::string path = source_dir() + "/src/serve/openapi.json";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());  // throws, failing the test, on invalid JSON
}

// `node`, or what its "$ref" points at.
const nlohmann::json& resolve(const nlohmann::json& doc, const nlohmann::json& node) {
  if (!node.is_object() || !node.contains("$ref")) return node;
  return doc.at(nlohmann::json::json_pointer(node.at("$ref").get<std::string>().substr(1)));
}

// Every "$ref" under `node` (at `where`), collected as (where, ref).
void collect_refs(const nlohmann::json& node, const std::string& where,
                  std::vector<std::pair<std::string, std::string>>& refs) {
  if (node.is_object()) {
    for (const auto& [key, value] : node.items()) {
      if (key == "$ref" && value.is_string()) refs.emplace_back(where, value.get<std::string>());
      collect_refs(value, where + "/" + key, refs);
    }
  } else if (node.is_array()) {
    for (size_t i = 0; i < node.size(); ++i)
      collect_refs(node[i], where + "/" + std::to_string(i), refs);
  }
}

TEST(ServeOpenApi, IsOpenApi303) {
  const nlohmann::json doc = load_openapi();
  EXPECT_EQ(doc.value("openapi", ""), "3.0.3");
  ASSERT_TRUE(doc.contains("info"));
  EXPECT_TRUE(doc.at("info").contains("title"));
  EXPECT_TRUE(doc.at("info").contains("version"));
  const nlohmann::json& bearer = doc.at("components").at("securitySchemes").at("bearer");
  EXPECT_EQ(bearer.value("type", ""), "http");
  EXPECT_EQ(bearer.value("scheme", ""), "bearer");
}

TEST(ServeOpenApi, EveryRouteWithItsMethods) {
  const nlohmann::json doc = load_openapi();
  const std::vector<std::pair<std::string, std::set<std::string>>> routes = {
      {"/v1/segment", {"post"}},
      {"/api/remove", {"get", "post"}},
      {"/v1/models", {"get"}},
      {"/v1/models/{name}:load", {"post"}},
      {"/v1/models/{name}:unload", {"post"}},
      {"/v1/models/{name}:reload", {"post"}},
      {"/healthz", {"get"}},
      {"/readyz", {"get"}},
      {"/metrics", {"get"}},
      {"/openapi.json", {"get"}},
      {"/", {"get"}},
  };
  const std::set<std::string> http_methods = {"get",     "put",  "post",  "delete",
                                              "options", "head", "patch", "trace"};
  ASSERT_TRUE(doc.contains("paths") && doc.at("paths").is_object());
  EXPECT_EQ(doc.at("paths").size(), routes.size());
  for (const auto& [path, methods] : routes) {
    ASSERT_TRUE(doc.at("paths").contains(path)) << path;
    std::set<std::string> have;
    for (const auto& [key, op] : doc.at("paths").at(path).items())
      if (http_methods.count(key)) {
        have.insert(key);
        EXPECT_TRUE(op.contains("responses")) << path << " " << key;
        EXPECT_TRUE(op.contains("operationId")) << path << " " << key;
      }
    EXPECT_EQ(have, methods) << path;
  }
  // The segment route's parameters and answers as the service implements them (.at() throws,
  // failing the test, where a key is missing).
  const nlohmann::json& seg = doc.at("paths").at("/v1/segment").at("post");
  std::set<std::string> params;
  for (const auto& p : seg.at("parameters")) params.insert(resolve(doc, p).value("name", ""));
  for (const char* name : {"model", "output", "size", "bg_color", "threshold", "tile"})
    EXPECT_TRUE(params.count(name)) << name;
  const nlohmann::json& responses = seg.at("responses");
  for (const char* status : {"200", "400", "401", "404", "413", "500", "503"})
    EXPECT_TRUE(responses.contains(status)) << status;
  EXPECT_TRUE(resolve(doc, responses.at("503")).at("headers").contains("Retry-After"));
  const nlohmann::json& ok = resolve(doc, responses.at("200"));
  EXPECT_TRUE(ok.at("content").contains("image/png"));
  for (const char* h : {"X-Biref-Model", "X-Biref-Model-Version", "X-Biref-Cache"})
    EXPECT_TRUE(ok.at("headers").contains(h)) << h;
  const nlohmann::json& body = seg.at("requestBody").at("content");
  for (const char* type : {"image/*", "application/octet-stream", "multipart/form-data"})
    EXPECT_TRUE(body.contains(type)) << type;
  EXPECT_TRUE(
      resolve(doc, body.at("multipart/form-data").at("schema")).at("properties").contains("image"));
  // rembg's fields: the form of POST /api/remove, the query of GET.
  const nlohmann::json& form = resolve(doc, doc.at("paths")
                                                .at("/api/remove")
                                                .at("post")
                                                .at("requestBody")
                                                .at("content")
                                                .at("multipart/form-data")
                                                .at("schema"));
  std::set<std::string> get_params;
  for (const auto& p : doc.at("paths").at("/api/remove").at("get").at("parameters"))
    get_params.insert(resolve(doc, p).value("name", ""));
  for (const char* name : {"model", "a", "af", "ab", "ae", "om", "ppm"}) {
    EXPECT_TRUE(form.at("properties").contains(name)) << name;
    EXPECT_TRUE(get_params.count(name)) << name;
  }
  EXPECT_TRUE(form.at("properties").contains("file"));
  for (const char* name : {"url", "bgc", "extras"}) EXPECT_TRUE(get_params.count(name)) << name;
}

TEST(ServeOpenApi, EveryRefResolves) {
  const nlohmann::json doc = load_openapi();
  std::vector<std::pair<std::string, std::string>> refs;
  collect_refs(doc, "", refs);
  EXPECT_GT(refs.size(), 10u);
  for (const auto& [where, ref] : refs) {
    ASSERT_EQ(ref.rfind("#/", 0), 0u) << where << ": only local refs, got " << ref;
    // JSON pointer (RFC 6901), which nlohmann resolves with ~0 / ~1 escapes.
    const nlohmann::json::json_pointer pointer(ref.substr(1));
    EXPECT_TRUE(doc.contains(pointer)) << where << ": " << ref << " does not resolve";
  }
}

}  // namespace
