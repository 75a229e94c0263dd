// A small program for gperftools' CPU profiler (run with CPUPROFILE=FILE, linked with -lprofiler): a few
// distinct call paths that each burn measurable CPU time.
#include <chrono>
#include <cstdint>
#include <cstdio>

// Named functions outside an anonymous namespace: go tool pprof's symbolizer leaves functions in one
// without a name, while google-pprof calls them "::mix", so the two would disagree on names.
volatile uint64_t g_sink;

__attribute__((noinline)) uint64_t mix(uint64_t rounds) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < rounds; i++) h = (h ^ i) * 1099511628211ull;
  return h;
}

__attribute__((noinline)) uint64_t parse_records() { return mix(2000000); }
__attribute__((noinline)) uint64_t render_page() { return mix(1000000) + parse_records(); }

int main() {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1200);
  while (std::chrono::steady_clock::now() < end) {
    g_sink = g_sink + render_page();
    g_sink = g_sink + parse_records();
  }
  std::printf("%llu\n", static_cast<unsigned long long>(g_sink % 7));
  return 0;
}
