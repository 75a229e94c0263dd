// A plugin with 30,000 small functions, each with its own FDE, so that parsing its .eh_frame takes the
// agent milliseconds: long enough for a dlclose on another thread to land in the middle (issue 19.2).
// Loaded and unloaded in a loop by tests/test_sampler_safety.cpp.
#include <time.h>

#include <cstdint>

#define PLUGIN_FN(n) \
  extern "C" __attribute__((noinline, used)) unsigned plugin_fn_##n(unsigned x) { return x * (n##u | 1u) + 0x9e37u; }
#define PLUGIN_10(n)                                                                                       \
  PLUGIN_FN(n##0) PLUGIN_FN(n##1) PLUGIN_FN(n##2) PLUGIN_FN(n##3) PLUGIN_FN(n##4) PLUGIN_FN(n##5) PLUGIN_FN(n##6) \
      PLUGIN_FN(n##7) PLUGIN_FN(n##8) PLUGIN_FN(n##9)
#define PLUGIN_100(n)                                                                                              \
  PLUGIN_10(n##0) PLUGIN_10(n##1) PLUGIN_10(n##2) PLUGIN_10(n##3) PLUGIN_10(n##4) PLUGIN_10(n##5) PLUGIN_10(n##6) \
      PLUGIN_10(n##7) PLUGIN_10(n##8) PLUGIN_10(n##9)
#define PLUGIN_1000(n)                                                                                      \
  PLUGIN_100(n##0) PLUGIN_100(n##1) PLUGIN_100(n##2) PLUGIN_100(n##3) PLUGIN_100(n##4) PLUGIN_100(n##5) \
      PLUGIN_100(n##6) PLUGIN_100(n##7) PLUGIN_100(n##8) PLUGIN_100(n##9)
#define PLUGIN_10000(n)                                                                                           \
  PLUGIN_1000(n##0) PLUGIN_1000(n##1) PLUGIN_1000(n##2) PLUGIN_1000(n##3) PLUGIN_1000(n##4) PLUGIN_1000(n##5) \
      PLUGIN_1000(n##6) PLUGIN_1000(n##7) PLUGIN_1000(n##8) PLUGIN_1000(n##9)

PLUGIN_10000(1)
PLUGIN_10000(2)
PLUGIN_10000(3)

// Burns `cpu_seconds` of this thread's CPU time inside the plugin (so samples ask for its table).
extern "C" __attribute__((noinline)) uint64_t plugin_burn(double cpu_seconds) {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  const double end = double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9 + cpu_seconds;
  uint64_t x = 1;
  for (;;) {
    for (int i = 0; i < 20000; i++) x = x * 6364136223846793005ull + plugin_fn_10000(unsigned(x));
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    if (double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9 >= end) break;
  }
  return x;
}
