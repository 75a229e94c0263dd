// libbench-alloc-preload.so: bench_alloc's way into an unmodified program (jq) while
// libpyroscope-preload.so does not carry the allocation interposers: the implementation compiled with
// PYROSCOPE_ALLOCATION_PROFILING into a library that is LD_PRELOADed, so its malloc, free, operator new
// and delete come first in the program's symbol lookup, and a constructor that starts the profiler with
// the default Config (CPU at 100 Hz, allocations every 512 KiB on average). Settings: the output file
// in BENCH_ALLOC_OUTPUT (required), the application name is the program's. Not a product: the preload
// library (tools/preload.cpp, docs/record.md) is; this only measures the same code path in jq.
#define PYROSCOPE_IMPLEMENTATION
#define PYROSCOPE_ALLOCATION_PROFILING
#include "pyroscope.hpp"

#include <errno.h>

#include <cstdio>
#include <cstdlib>

namespace {

__attribute__((constructor)) void bench_alloc_preload_start() {
  const char* output = std::getenv("BENCH_ALLOC_OUTPUT");
  if (!output || !*output) return;
  pyroscope::Config config;
  config.application_name = program_invocation_short_name;
  config.output_path = output;
  // bench_alloc --smoke samples densely: its tiny run must hold samples, whatever the draw.
  const char* bytes = std::getenv("BENCH_ALLOC_SAMPLE_BYTES");
  if (bytes && *bytes) config.allocation_sample_bytes = std::strtoull(bytes, nullptr, 10);
  pyroscope::Status st = pyroscope::start(config);
  if (!st.ok()) std::fprintf(stderr, "bench-alloc-preload: %s\n", st.to_string().c_str());
}

__attribute__((destructor)) void bench_alloc_preload_stop() {
  if (pyroscope::is_running()) pyroscope::stop();
}

}  // namespace
