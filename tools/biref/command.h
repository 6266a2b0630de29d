// Subcommand registry of the `biref` tool. Each subcommand lives in its own file and registers
// itself with a static BIREF_COMMAND(...) so main.cpp never lists them:
//
//   static int run_x(const XOptions& o) { ... }
//   BIREF_COMMAND(x, "one-line help", [](CLI::App& app) {
//     auto o = std::make_shared<XOptions>();
//     app.add_option("--in", o->in, "...")->required();
//     return [o] { return run_x(*o); };
//   });
//
// The run function returns the process exit code; a biref::Error thrown from it is printed as
// one line "biref NAME: error: MESSAGE" with exit code 1 by main.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace biref::cli {

using RunFn = std::function<int()>;
using SetupFn = std::function<RunFn(CLI::App&)>;

struct CommandSpec {
  std::string name, help;
  SetupFn setup;
};

std::vector<CommandSpec>& command_registry();
bool register_command(const std::string& name, const std::string& help, SetupFn setup);

}  // namespace biref::cli

#define BIREF_COMMAND(NAME, HELP, SETUP) \
  static const bool biref_command_registered_##NAME = ::biref::cli::register_command(#NAME, HELP, SETUP)
