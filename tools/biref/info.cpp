// `biref info CKPT`: what a checkpoint is — its format, the BiRefNet configuration detected from
// it, parameter count, dtypes, file size, and the tensors inference does not use.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "command.h"
#include "core/check.h"
#include "weights/zoo.h"
#include "model/config.h"
#include "weights/checkpoint.h"

namespace biref::cli {
namespace {

struct InfoOptions {
  std::string checkpoint;
  bool all = false;  // list every unused tensor, not only the first few
};

std::string human_bytes(uintmax_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

void print_names(const char* what, const std::vector<std::string>& names, bool all) {
  if (names.empty()) return;
  std::printf("%-14s%zu\n", what, names.size());
  const size_t shown = all ? names.size() : std::min<size_t>(names.size(), 4);
  for (size_t i = 0; i < shown; ++i) std::printf("                %s\n", names[i].c_str());
  if (shown < names.size()) {
    std::printf("                ... %zu more (--all lists them)\n", names.size() - shown);
  }
}

int run_info(const InfoOptions& o) {
  const Checkpoint ck = load_checkpoint(o.checkpoint);

  std::printf("checkpoint    %s\n", ck.path.c_str());
  std::error_code ec;
  const bool on_disk = std::filesystem::is_regular_file(o.checkpoint, ec);
  if (on_disk) {
    const uintmax_t size = std::filesystem::file_size(o.checkpoint, ec);
    std::printf("file size     %s (%ju bytes)\n", human_bytes(size).c_str(), size);
  }
  std::string format = ck.format;
  if (auto it = ck.metadata.find("pth.format"); it != ck.metadata.end()) {
    format = "PyTorch " + it->second;
  }
  if (auto it = ck.metadata.find("pth.state_dict"); it != ck.metadata.end()) {
    format += ", state_dict under '" + it->second + "'";
  }
  if (auto it = ck.metadata.find("pth.ignored_entries"); it != ck.metadata.end()) {
    format += ", " + it->second + " non-tensor entries ignored";
  }
  std::printf("format        %s\n", format.c_str());

  std::map<std::string, std::pair<size_t, int64_t>> by_dtype;  // tensors, elements
  int64_t total = 0;
  for (const auto& [name, t] : ck.tensors) {
    auto& [count, elems] = by_dtype[dtype_name(t.dtype)];
    ++count;
    elems += t.numel();
    total += t.numel();
  }
  std::printf("tensors       %zu (%.2fM values)\n", ck.tensors.size(), double(total) / 1e6);
  std::string dtypes;
  for (const auto& [name, ce] : by_dtype) {
    dtypes += str_cat(dtypes.empty() ? "" : ", ", name, " x", ce.first);
  }
  std::printf("dtypes        %s\n", dtypes.empty() ? "none" : dtypes.c_str());
  for (const char* key : {"backbone", "config", "source", "converted_by", "seed"}) {
    if (auto it = ck.metadata.find(key); it != ck.metadata.end()) {
      std::printf("metadata      %s = %s\n", key, it->second.c_str());
    }
  }

  // Detection and validation last: a file that is not BiRefNet still gets the summary above.
  ModelConfig cfg;
  try {
    cfg = detect_config(ck);
    validate_checkpoint(ck, cfg);
  } catch (const Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "biref info: error: %s\n", e.what());
    return 1;
  }
  const SwinConfig& s = cfg.swin;
  std::printf("model         BiRefNet, backbone %s\n", s.name.c_str());
  std::printf("configuration %s\n", describe(cfg).c_str());
  if (const auto entry = zoo_find(o.checkpoint)) {
    std::printf("zoo model     %s (%s): %s\n", entry->name.c_str(), entry->repo.c_str(),
                entry->description.c_str());
    std::printf("native size   %dx%d\n", entry->width, entry->height);
  } else {
    std::printf("native size   not recorded in the file (biref segment defaults to 1024x1024)\n");
  }

  int64_t used = 0, training = 0;
  std::vector<std::string> training_names, buffer_names;
  std::set<std::string> known;
  for (const ParamSpec& p : param_specs(cfg)) {
    known.insert(p.name);
    auto it = ck.tensors.find(p.name);
    if (it == ck.tensors.end()) continue;
    if (p.used) {
      used += it->second.numel();
    } else {
      training += it->second.numel();
      training_names.push_back(p.name);
    }
  }
  for (const auto& [name, t] : ck.tensors) {
    if (!known.count(name) && is_state_dict_buffer(name)) {
      buffer_names.push_back(name);
    }
  }
  std::printf("parameters    %.2fM used at inference (%lld)", double(used) / 1e6,
              static_cast<long long>(used));
  if (training) std::printf(", %.3fM in training-only heads", double(training) / 1e6);
  std::printf("\n");
  if (training_names.empty() && buffer_names.empty()) {
    std::printf("unused        none\n");
  } else {
    print_names("training-only", training_names, o.all);
    print_names("buffers", buffer_names, o.all);
  }
  return 0;
}

}  // namespace
}  // namespace biref::cli

BIREF_COMMAND(info, "Describe a checkpoint: format, BiRefNet configuration, parameters, dtypes",
              [](CLI::App& app) -> biref::cli::RunFn {
                auto o = std::make_shared<biref::cli::InfoOptions>();
                app.add_option("checkpoint", o->checkpoint,
                               "checkpoint file (.pth, .safetensors) or synthetic:BACKBONE[:SEED]")
                    ->required();
                app.add_flag("--all", o->all, "list every unused tensor");
                return [o] { return biref::cli::run_info(*o); };
              });
