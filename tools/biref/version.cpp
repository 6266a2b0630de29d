// `biref version`: what this build is and which backends it has.
#include <cstdio>
#include <oneapi/dnnl/dnnl.hpp>
#include <opencv2/core/version.hpp>

#include "biref/isa.h"
#include "biref/threads.h"
#include "command.h"
#include "ops/cpu/kernels.h"

BIREF_COMMAND(version, "Print the version, the backends and the libraries of this build",
              [](CLI::App&) -> biref::cli::RunFn {
                return [] {
                  const dnnl_version_t* v = dnnl_version();
                  std::printf("biref %s\nbackends: cpu (oneDNN %d.%d.%d, %s)\nOpenCV %s\n",
                              BIREF_VERSION, v->major, v->minor, v->patch,
                              v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime",
                              CV_VERSION);
                  std::printf("CPU kernels: %s; oneDNN: %s\n", biref::describe_cpu_isa().c_str(),
                              biref::cpu::onednn_isa_name().c_str());
                  const biref::CpuBudget b = biref::cpu_budget();
                  std::printf("threads: %s\nOpenMP wait: %s\n",
                              biref::describe_automatic_threads(b).c_str(),
                              biref::omp_wait_setting().c_str());
                  return 0;
                };
              });
