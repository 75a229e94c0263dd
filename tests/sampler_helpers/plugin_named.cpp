// One plugin, built twice with a different name for its function (PLUGIN_NAME: alpha_burn,
// bravo_burn, same length): the two have the same layout, so one loaded where the other was unloaded
// has its function at the same addresses. tests/test_sampler_safety.cpp checks that samples are named
// after the library loaded when they were taken (issue 19.2).
#include <time.h>

#include <cstdint>

#ifndef PLUGIN_NAME
#error "define PLUGIN_NAME"
#endif

extern "C" __attribute__((noinline)) uint64_t PLUGIN_NAME(double cpu_seconds) {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  const double end = double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9 + cpu_seconds;
  uint64_t x = 1;
  for (;;) {
    for (int i = 0; i < 20000; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    if (double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9 >= end) break;
  }
  return x;
}
