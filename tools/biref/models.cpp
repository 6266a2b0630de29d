// `biref models`: the model zoo — each released BiRefNet variant with its native size, backbone,
// Hugging Face repo and whether it is in the cache; `--download NAME` fetches one ahead of use
// (for a machine that will be offline later). It also says what the packed-weight cache holds.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "command.h"
#include "core/check.h"
#include "weights/zoo.h"

namespace biref::cli {
namespace {

struct ModelsOptions {
  std::string download;  // a zoo name or hf:ORG/REPO[:FILE]
};

int run_models(const ModelsOptions& o) {
  if (!o.download.empty()) {
    std::optional<HfFile> file = parse_hf_source(o.download);
    std::string label;
    if (!file) {
      const auto entry = zoo_find(o.download);
      BIREF_CHECK(entry, "unknown model '", o.download, "': known models are ", zoo_names(),
                  "; or pass hf:ORG/REPO[:FILE]");
      file = HfFile{entry->repo, entry->file};
      label = entry->name + " (" + entry->repo + ")";
    }
    std::error_code ec;
    const bool had = std::filesystem::is_regular_file(cached_path(*file), ec);
    const std::string path = fetch_hf_file(*file, label);
    std::printf("%s%s\n", path.c_str(), had ? " (already in the cache)" : "");
    return 0;
  }

  std::printf("%-12s %-10s %-10s %-32s %s\n", "NAME", "SIZE", "BACKBONE", "REPO", "CACHED");
  for (const ZooEntry& e : zoo_entries()) {
    std::error_code ec;
    const bool cached = std::filesystem::is_regular_file(cached_path({e.repo, e.file}), ec);
    const std::string size = std::to_string(e.width) + "x" + std::to_string(e.height);
    std::printf("%-12s %-10s %-10s %-32s %s\n", e.name.c_str(), size.c_str(), e.backbone.c_str(),
                e.repo.c_str(), cached ? "yes" : "no");
  }
  std::printf("\ncache: %s/models\n", cache_dir().c_str());
  // The packed-weight cache (LoadOptions::weight_cache) beside it: what it holds.
  size_t files = 0, bytes = 0;
  std::error_code ec;
  const std::filesystem::path packed = std::filesystem::path(cache_dir()) / "packed";
  for (const auto& e : std::filesystem::directory_iterator(packed, ec)) {
    std::error_code ec2;
    if (e.path().extension() != ".pack" || !e.is_regular_file(ec2)) continue;
    ++files;
    bytes += size_t(e.file_size(ec2));
  }
  std::printf("packed weights: %zu file%s, %zu MiB in %s (written by loads; remove it to "
              "reclaim the space)\n",
              files, files == 1 ? "" : "s", (bytes + (size_t(1) << 19)) >> 20,
              packed.string().c_str());
  std::printf("use: --model NAME (any case), hf:ORG/REPO[:FILE], or a local file\n");
  return 0;
}

}  // namespace
}  // namespace biref::cli

BIREF_COMMAND(models, "List the model zoo (native sizes, cache state) or download a model",
              [](CLI::App& app) -> biref::cli::RunFn {
                auto o = std::make_shared<biref::cli::ModelsOptions>();
                app.add_option("--download", o->download,
                               "Download NAME (or hf:ORG/REPO[:FILE]) into the cache");
                return [o] { return biref::cli::run_models(*o); };
              });
