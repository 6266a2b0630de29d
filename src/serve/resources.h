// Files the server answers with, compiled in from src/serve/ (see resources.cpp.in): the web
// page and the OpenAPI document.
#pragma once
#include <string_view>

namespace biref::serve {

std::string_view index_html();    // src/serve/web/index.html, GET /
std::string_view openapi_json();  // src/serve/openapi.json, GET /openapi.json

}  // namespace biref::serve
