// `biref`: BiRefNet segmentation, evaluation, benchmarking and checkpoint tools.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>

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

namespace {

// One line: newlines of the argument parser's messages become spaces.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

// Exit codes: 0 success (and --help, --version); 1 an error while running (a bad file, a size the
// model cannot take, out of memory); 2 a usage error (unknown command or option, a missing or
// malformed argument). Every error is one line on stderr: "biref[ COMMAND]: error: MESSAGE".
int main(int argc, char** argv) {
  using namespace biref::cli;
  CLI::App app{"biref — BiRefNet (dichotomous image segmentation) in native C++"};
  app.name("biref");
  app.set_version_flag("--version", std::string("biref ") + BIREF_VERSION);
  app.require_subcommand(1);
  auto specs = command_registry();
  std::sort(specs.begin(), specs.end(), [](auto& a, auto& b) { return a.name < b.name; });
  std::map<CLI::App*, std::pair<std::string, RunFn>> runs;
  std::string names;
  for (auto& spec : specs) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.help);
    runs[sub] = {spec.name, spec.setup(*sub)};
    names += (names.empty() ? "" : ", ") + spec.name;
  }
  if (argc < 2) {
    std::fprintf(stderr, "%s", app.help().c_str());
    return 2;
  }
  const std::string first = argv[1];
  if (!first.empty() && first[0] != '-' &&
      std::none_of(specs.begin(), specs.end(), [&](auto& s) { return s.name == first; })) {
    std::fprintf(stderr,
                 "biref: error: unknown command '%s'; the commands are %s (see biref --help)\n",
                 first.c_str(), names.c_str());
    return 2;
  }
  if (first.size() > 1 && first[0] == '-' && first != "-h" && first != "--help" &&
      first != "--help-all" && first != "--version") {
    std::fprintf(stderr, "biref: error: unknown option '%s' (see biref --help)\n", first.c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string who = "biref";
    for (auto& [sub, named_run] : runs)
      if (sub->parsed()) who += " " + named_run.first;
    std::fprintf(stderr, "%s: error: %s (see %s --help)\n", who.c_str(), one_line(e.what()).c_str(),
                 who.c_str());
    return 2;
  }
  for (auto& [sub, named_run] : runs) {
    if (!sub->parsed()) continue;
    const char* name = named_run.first.c_str();
    try {
      return named_run.second();
    } catch (const biref::Error& e) {
      std::fprintf(stderr, "biref %s: error: %s\n", name, one_line(e.what()).c_str());
      return 1;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "biref %s: error: out of memory\n", name);
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "biref %s: error: %s\n", name, one_line(e.what()).c_str());
      return 1;
    }
  }
  return 0;
}
