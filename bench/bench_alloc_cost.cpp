// bench_alloc_cost: what PYROSCOPE_ALLOCATION_PROFILING adds to one malloc/free pair (bench/README.md,
// "Allocation profiling: per-call cost"). One run, one process: the baseline is glibc's allocator called
// directly (__libc_malloc/__libc_free: what a program without the switch runs), against the interposed
// malloc/free with no session, with a session that samples nothing in practice (mean 2^40 bytes: the
// unsampled path alone), and with the default mean (512 KiB, sampling included). The free's filter is
// populated with live sampled blocks first, as in a program that holds memory.
//
//   bench_alloc_cost [--pairs N] [--size BYTES]     (defaults: 20 M pairs of 64 bytes, best of 5)
#define PYROSCOPE_IMPLEMENTATION
#define PYROSCOPE_ALLOCATION_PROFILING
#include "pyroscope.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

inline void escape(void* p) { __asm__ volatile("" : : "r"(p) : "memory"); }

using Clock = std::chrono::steady_clock;

template <class Alloc, class Free>
double ns_per_pair(size_t pairs, size_t size, Alloc&& alloc, Free&& release) {
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    const auto start = Clock::now();
    for (size_t i = 0; i < pairs; i++) {
      void* p = alloc(size + (i & 7));
      escape(p);
      release(p);
    }
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count() / double(pairs);
    if (ns < best) best = ns;
  }
  return best;
}

__attribute__((noinline)) void* via_glibc(size_t n) { return __libc_malloc(n); }
__attribute__((noinline)) void free_via_glibc(void* p) { __libc_free(p); }
__attribute__((noinline)) void* via_interposer(size_t n) { return std::malloc(n); }
__attribute__((noinline)) void free_via_interposer(void* p) { std::free(p); }

}  // namespace

int main(int argc, char** argv) {
  size_t pairs = 20000000, size = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--pairs") == 0) pairs = std::strtoull(argv[i + 1], nullptr, 10);
    else if (std::strcmp(argv[i], "--size") == 0) size = std::strtoull(argv[i + 1], nullptr, 10);
  }
  std::string why;
  if (!pyroscope::allocation_profiling_compiled(&why)) {
    std::printf("allocation profiling not compiled in (%s): nothing to measure\n", why.c_str());
    return 0;
  }
  std::printf("malloc(%zu..%zu)/free pairs, %zu per run, best of 5 runs (ns per pair)\n", size, size + 7, pairs);
  const double glibc = ns_per_pair(pairs, size, via_glibc, free_via_glibc);
  std::printf("  glibc directly (switch off)              %7.2f\n", glibc);
  const double idle = ns_per_pair(pairs, size, via_interposer, free_via_interposer);
  std::printf("  interposed, no session                   %7.2f  (+%.2f)\n", idle, idle - glibc);

  pyroscope::Config config;
  config.application_name = "bench_alloc_cost";
  config.output_path = "bench_alloc_cost.pyro";
  std::remove(config.output_path.c_str());
  // Each session first holds 20000 blocks of 4 KiB sampled at a mean of 4 KiB (live sampled blocks in
  // the free's filter, as in a program holding memory), then runs at the mean measured (set directly).
  std::vector<void*> held;
  auto session = [&](uint64_t mean, uint64_t* samples, uint64_t* live) {
    config.allocation_sample_bytes = 4096;
    if (!pyroscope::start(config).ok()) std::exit(1);
    for (int i = 0; i < 20000; i++) held.push_back(std::malloc(4096));
    *live = pyroscope::detail::alloc_stats().live;
    pyroscope::detail::g_alloc_mean.store(mean);
    const uint64_t before = pyroscope::detail::alloc_stats().sampled;
    const double ns = ns_per_pair(pairs, size, via_interposer, free_via_interposer);
    *samples = pyroscope::detail::alloc_stats().sampled - before;
    pyroscope::stop();
      held.clear();
    return ns;
  };
  uint64_t samples = 0, live = 0;
  const double unsampled = session(uint64_t(1) << 40, &samples, &live);
  std::printf("  interposed, session, nothing sampled     %7.2f  (+%.2f; %llu live sampled blocks)\n", unsampled,
              unsampled - glibc, static_cast<unsigned long long>(live));
  const double sampled = session(512 * 1024, &samples, &live);
  std::printf("  interposed, session at 512 KiB           %7.2f  (+%.2f; %llu samples in %zu pairs)\n", sampled,
              sampled - glibc, static_cast<unsigned long long>(samples), 5 * pairs);
  std::remove(config.output_path.c_str());
  return 0;
}
