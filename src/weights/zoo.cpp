#include "weights/zoo.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "weights/checkpoint.h"
#include "weights/http.h"
#include "weights/zoo_table.h"  // generated from models/zoo.json

namespace biref {
namespace {

namespace fs = std::filesystem;

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<ZooEntry> parse_table() {
  std::vector<ZooEntry> out;
  try {
    const auto doc = nlohmann::json::parse(detail::kZooJson);
    for (const auto& m : doc.at("models")) {
      ZooEntry e;
      e.name = m.at("name").get<std::string>();
      e.repo = m.at("repo").get<std::string>();
      e.file = m.at("file").get<std::string>();
      e.width = m.at("width").get<int>();
      e.height = m.at("height").get<int>();
      e.backbone = m.at("backbone").get<std::string>();
      e.description = m.at("description").get<std::string>();
      out.push_back(std::move(e));
    }
  } catch (const nlohmann::json::exception& ex) {
    // Only a broken edit of models/zoo.json gets here; the tests parse the table.
    fail_kind(ErrorKind::Internal, "the built-in model table (models/zoo.json) is invalid: ", ex.what());
  }
  return out;
}

// Hub names: letters, digits, '.', '_', '-', and not "." or ".." (they become cache paths).
bool valid_part(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

const std::vector<ZooEntry>& zoo_entries() {
  static const std::vector<ZooEntry> entries = parse_table();
  return entries;
}

std::optional<ZooEntry> zoo_find(const std::string& name) {
  const std::string key = lower(name);
  for (const ZooEntry& e : zoo_entries()) {
    if (lower(e.name) == key) return e;
  }
  return std::nullopt;
}

std::string zoo_names() {
  std::string out;
  for (const ZooEntry& e : zoo_entries()) out += (out.empty() ? "" : ", ") + e.name;
  return out;
}

std::optional<HfFile> parse_hf_source(const std::string& source) {
  if (source.rfind("hf:", 0) != 0) return std::nullopt;
  const std::string rest = source.substr(3);
  const size_t colon = rest.find(':');
  HfFile f;
  f.repo = rest.substr(0, colon);
  f.file = colon == std::string::npos ? "model.safetensors" : rest.substr(colon + 1);
  const size_t slash = f.repo.find('/');
  const bool repo_ok = slash != std::string::npos && valid_part(f.repo.substr(0, slash)) &&
                       valid_part(f.repo.substr(slash + 1));
  BIREF_CHECK(repo_ok, "'", source, "' is not a Hugging Face model: use hf:ORG/REPO or ",
              "hf:ORG/REPO:FILE, e.g. hf:ZhengPeng7/BiRefNet_lite:model.safetensors");
  bool file_ok = !f.file.empty();
  for (size_t b = 0; file_ok && b <= f.file.size();) {  // each '/'-separated part
    size_t e = f.file.find('/', b);
    if (e == std::string::npos) e = f.file.size();
    file_ok = valid_part(f.file.substr(b, e - b));
    b = e + 1;
  }
  BIREF_CHECK(file_ok, "'", source, "': '", f.file, "' is not a file name in a Hugging Face ",
              "repo (letters, digits, '.', '_', '-', folders separated by '/')");
  return f;
}

std::string cache_dir() {
  if (std::string d = env("BIREF_CACHE"); !d.empty()) return d;
  if (std::string d = env("XDG_CACHE_HOME"); !d.empty()) return d + "/biref";
  const std::string home = env("HOME");
  BIREF_CHECK(!home.empty(), "no cache directory for downloaded models: set BIREF_CACHE ",
              "(or XDG_CACHE_HOME or HOME)");
  return home + "/.cache/biref";
}

std::string hf_endpoint() {
  std::string e = env("BIREF_HF_ENDPOINT");
  if (e.empty()) e = "https://huggingface.co";
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

std::string cached_path(const HfFile& f) {
  return cache_dir() + "/models/" + f.repo + "/" + f.file;
}

std::string hf_url(const HfFile& f) {
  return hf_endpoint() + "/" + f.repo + "/resolve/main/" + f.file;
}

std::string fetch_hf_file(const HfFile& f, const std::string& label) {
  const std::string path = cached_path(f);
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {  // complete files only: no network at all
    try {
      check_checkpoint_signature(path);
      return path;
    } catch (const Error& e) {
      // Left by an older biref that did not check downloads: not a model, so fetched again.
      std::fprintf(stderr, "biref: the cached %s is not a checkpoint (%s); downloading it again\n",
                   path.c_str(), e.what());
      fs::remove(path, ec);
    }
  }
  DownloadOptions options;
  options.label = label.empty() ? f.repo + "/" + f.file : label;
  options.check = [](const std::string& part) { check_checkpoint_signature(part); };
  try {
    download_file(hf_url(f), path, options);
  } catch (const Error& e) {
    // One line that says what failed and the way around the network.
    fail(e.what(), "; to use a file you already have, pass --model /path/to/", f.file,
         " (or copy it to ", path, ")");
  }
  return path;
}

std::string resolve_model_source(const std::string& source) {
  if (source.rfind("synthetic:", 0) == 0) return source;
  std::error_code ec;
  // Any existing file, but not a directory: a folder named like a model must not hide it.
  if (fs::exists(source, ec) && !fs::is_directory(source, ec)) return source;
  if (auto hf = parse_hf_source(source)) return fetch_hf_file(*hf);
  if (auto entry = zoo_find(source)) {
    return fetch_hf_file({entry->repo, entry->file}, str_cat(entry->name, " (", entry->repo, ")"));
  }
  // A bare word is meant as a model name, not a path: say which names exist.
  if (!source.empty() && source.find_first_of("/.") == std::string::npos) {
    fail_kind(ErrorKind::NotFound, "unknown model '", source, "' (and no such file): known models are ", zoo_names(),
         "; or pass hf:ORG/REPO[:FILE] or a path to a checkpoint");
  }
  return source;
}

}  // namespace biref
