// A program that profiles itself, for trying the sampler on another architecture under qemu-user
// (scripts/aarch64-qemu.sh; docs/sampler.md, "Other architectures"). It alternates hot() and cold()
// (900000:100000 loop iterations by default) for SECONDS of CPU time, measures the CPU time of each with
// the thread's own clock, and with WALL=1 also sleeps 20 ms in wait_here() after each pair and samples
// wall-clock time (Config::wall_clock). Prints what it measured; the profile goes to OUT.pyro.
//
//   busy SECONDS OUT.pyro WALL [HOT_ITERATIONS COLD_ITERATIONS]
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <cstdio>
#include <cstdlib>
#include <ctime>

static int g_hot_n = 900000, g_cold_n = 100000;
__attribute__((noinline)) double hot(double x) { for (int i = 0; i < g_hot_n; i++) x = x * 1.0000001 + 0.5; return x; }
__attribute__((noinline)) double cold(double x) { for (int i = 0; i < g_cold_n; i++) x = x * 0.9999999 + 0.25; return x; }
__attribute__((noinline)) void wait_here() { timespec d{0, 20000000}; while (nanosleep(&d, &d) != 0) {} }

static double cpu_s() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double mono_s() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char** argv) {
  const double secs = argc > 1 ? std::atof(argv[1]) : 2.0;
  const bool wall = argc > 3 && argv[3][0] == '1';
  if (argc > 5) { g_hot_n = std::atoi(argv[4]); g_cold_n = std::atoi(argv[5]); }
  pyroscope::Config config;
  config.application_name = "busy";
  config.output_path = argc > 2 ? argv[2] : "busy.pyro";
  config.wall_clock = wall;
  pyroscope::Profiler profiler(config);
  if (!profiler.status().ok()) { std::fprintf(stderr, "start: %s\n", profiler.status().to_string().c_str()); return 1; }
  double x = 1, in_hot = 0, in_cold = 0, waited = 0, t;
  const double t0 = cpu_s(), m0 = mono_s();
  while ((t = cpu_s()) - t0 < secs) {
    x = hot(x);
    const double t1 = cpu_s();
    x = cold(x);
    const double t2 = cpu_s();
    in_hot += t1 - t;
    in_cold += t2 - t1;
    if (wall) { const double w = mono_s(); wait_here(); waited += mono_s() - w; }
  }
  const double elapsed = mono_s() - m0;
  const pyroscope::Status st = pyroscope::stop();
  std::printf("cpu %.2f s: hot %.1f %%, cold %.1f %%; waited %.1f %% of %.2f s; x %g; stop %s\n", cpu_s() - t0,
              100 * in_hot / (in_hot + in_cold), 100 * in_cold / (in_hot + in_cold), 100 * waited / elapsed, elapsed, x,
              st.to_string().c_str());
  return 0;
}
