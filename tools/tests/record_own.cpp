// For tools/tests/record_test.sh: a program that links pyroscope.hpp and starts the profiler itself,
// run under pyro record. Burns ~0.5 s of CPU in own_hot and writes own-itself.pyro in its working
// directory; exits 9 if its own start() is refused.
#include "pyroscope.hpp"

#include <cstdio>
#include <ctime>

__attribute__((noinline)) double own_hot(double x) {
  for (int i = 0; i < 2000000; i++) x = x * 1.0000001 + 0.5;
  return x;
}

int main() {
  pyroscope::Config config;
  config.application_name = "own";
  config.output_path = "own-itself.pyro";
  const pyroscope::Status st = pyroscope::start(config);
  if (!st.ok()) {
    std::fprintf(stderr, "own start: %s\n", st.to_string().c_str());
    return 9;
  }
  double x = 1;
  const std::clock_t t0 = std::clock();
  while (std::clock() - t0 < CLOCKS_PER_SEC / 2) x = own_hot(x);
  pyroscope::stop();
  std::printf("%f\n", x);
}
