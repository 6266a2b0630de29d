// `biref`: BiRefNet segmentation, evaluation, benchmarking and checkpoint tools.
#include <cstdio>
#include <map>

#include "biref/error.h"
#include "command.h"

namespace biref::cli {

std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> registry;
  return registry;
}

bool register_command(const std::string& name, const std::string& help, SetupFn setup) {
  command_registry().push_back({name, help, std::move(setup)});
  return true;
}

}  // namespace biref::cli

int main(int argc, char** argv) {
  using namespace biref::cli;
  CLI::App app{"biref — BiRefNet (dichotomous image segmentation) in native C++"};
  app.set_version_flag("--version", std::string("biref ") + BIREF_VERSION);
  app.require_subcommand(1);
  auto specs = command_registry();
  std::sort(specs.begin(), specs.end(), [](auto& a, auto& b) { return a.name < b.name; });
  std::map<CLI::App*, std::pair<std::string, RunFn>> runs;
  for (auto& spec : specs) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.help);
    runs[sub] = {spec.name, spec.setup(*sub)};
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& [sub, named_run] : runs) {
    if (!sub->parsed()) continue;
    try {
      return named_run.second();
    } catch (const biref::Error& e) {
      std::fprintf(stderr, "biref %s: error: %s\n", named_run.first.c_str(), e.what());
      return 1;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "biref %s: error: out of memory\n", named_run.first.c_str());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "biref %s: error: %s\n", named_run.first.c_str(), e.what());
      return 1;
    }
  }
  return 0;
}
