// The model zoo: `--model NAME` for the released BiRefNet variants, and `hf:ORG/REPO[:FILE]` for
// any Hugging Face repo. The table is data (models/zoo.json, compiled in); files are downloaded
// once into a cache directory and used from there without any network access afterwards.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace biref {

struct ZooEntry {
  std::string name;           // "general", "lite-2K", ...
  std::string repo;           // Hugging Face repo id, "ZhengPeng7/BiRefNet"
  std::string file;           // file in the repo, "model.safetensors"
  int width = 0, height = 0;  // native input size (what the variant was trained at)
  std::string backbone;       // "swin_v1_l", "swin_v1_t"
  std::string description;    // one line
};

const std::vector<ZooEntry>& zoo_entries();
// Case-insensitive: "hr", "HR" and "Hr" all find HR.
std::optional<ZooEntry> zoo_find(const std::string& name);
// "general, lite, lite-2K, ..."
std::string zoo_names();

// A file on the hub: `hf:ORG/REPO` (model.safetensors) or `hf:ORG/REPO:PATH/IN/REPO`.
struct HfFile {
  std::string repo, file;
};
// Parses `hf:...`; std::nullopt if `source` does not start with "hf:", throws biref::Error if
// it does but is malformed (names may use letters, digits, '.', '_', '-'; no "..").
std::optional<HfFile> parse_hf_source(const std::string& source);

// $BIREF_CACHE, else $XDG_CACHE_HOME/biref, else ~/.cache/biref.
std::string cache_dir();
// $BIREF_HF_ENDPOINT, else https://huggingface.co (no trailing '/').
std::string hf_endpoint();
// Where a hub file lives in the cache: CACHE/models/ORG/REPO/FILE. Exists only once complete.
std::string cached_path(const HfFile& f);
// {endpoint}/{repo}/resolve/main/{file}
std::string hf_url(const HfFile& f);
// The cached file, downloaded first if it is not there (a cached file needs no network).
// Throws a one-line biref::Error naming the URL and how to pass a local file instead.
std::string fetch_hf_file(const HfFile& f, const std::string& label = "");

// What `--model SOURCE` means, as a local path: an existing file or `synthetic:...` unchanged; a
// zoo name or `hf:...` the cached file (downloaded if needed); a bare word that is neither a
// file nor a zoo name an error listing the names; anything else unchanged, so the loader's
// "cannot open" error names it.
std::string resolve_model_source(const std::string& source);

}  // namespace biref
