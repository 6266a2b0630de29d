// `biref version`: what this build is and which backends it has.
#include <oneapi/dnnl/dnnl.hpp>
#include <cstdio>
#include <opencv2/core/version.hpp>

#include "command.h"

BIREF_COMMAND(version, "Print the version, the backends and the libraries of this build",
              [](CLI::App&) -> biref::cli::RunFn {
                return [] {
                  const dnnl_version_t* v = dnnl_version();
                  std::printf("biref %s\nbackends: cpu (oneDNN %d.%d.%d, %s)\nOpenCV %s\n",
                              BIREF_VERSION, v->major, v->minor, v->patch,
                              v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime",
                              CV_VERSION);
                  return 0;
                };
              });
