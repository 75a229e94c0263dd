// A statically linked program (tests/CMakeLists.txt links it with -static) that profiles itself at
// 1000 Hz while one thread throws and catches exceptions in a loop. In a -static executable crtbeginT.o
// registers the program's frames with __register_frame_info, so libgcc's _Unwind_Find_FDE takes
// object_mutex on every lookup: a handler that unwinds with libgcc deadlocks on a thread interrupted
// while throwing (issue 19.1). Run by tests/test_sampler_safety.cpp with a deadline.
// Exit 0: it finished, the samples are in the file, and the executable's own frames were unwound.
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <time.h>

#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

std::atomic<uint64_t> g_sink{0};

__attribute__((noinline)) void static_burn(double cpu_seconds) {
  const double end = thread_cpu_seconds() + cpu_seconds;
  uint64_t x = g_sink.load(std::memory_order_relaxed);
  while (thread_cpu_seconds() < end) {
    for (int i = 0; i < 2000; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  }
  g_sink.store(x, std::memory_order_relaxed);
  asm volatile("" ::: "memory");
}

__attribute__((noinline)) void static_throw(long round) {
  throw std::runtime_error("sampled while throwing " + std::to_string(round));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUTPUT.pyro\n", argv[0]);
    return 2;
  }
  std::remove(argv[1]);
  pyroscope::Config config;
  config.application_name = "static";
  config.output_path = argv[1];
  config.sample_rate_hz = 1000;
  config.flush_interval_seconds = 3600;
  config.log = [](pyroscope::LogLevel level, const std::string& message) {
    std::fprintf(stderr, "profiler log (%d): %s\n", int(level), message.c_str());
  };
  const pyroscope::Status started = pyroscope::start(config);
  if (!started.ok()) {
    std::fprintf(stderr, "start: %s\n", started.to_string().c_str());
    return 3;
  }
  std::atomic<bool> done{false};
  std::atomic<long> caught{0};
  std::thread thrower([&] {
    for (long round = 0; !done.load(std::memory_order_relaxed); round++) {
      try {
        static_throw(round);
      } catch (const std::exception&) {
        caught.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  static_burn(1.0);
  done = true;
  thrower.join();
  const pyroscope::Status stopped = pyroscope::stop();
  if (!stopped.ok()) {
    std::fprintf(stderr, "stop: %s\n", stopped.to_string().c_str());
    return 4;
  }
  pyroscope::Dataset data;
  if (!data.add_file(argv[1]).ok()) return 5;
  const pyroscope::TimeRange span = data.time_span();
  pyroscope::QueryResult result;
  if (!data.query("static{}", span.from, span.until, &result).ok()) return 6;
  const std::string folded = result.tree.to_folded();
  const pyroscope::detail::SamplerStats stats = pyroscope::detail::sampler_stats();
  std::fprintf(stderr, "%ld exceptions caught; samples %llu, %llu in the file\n", caught.load(),
               static_cast<unsigned long long>(stats.samples), static_cast<unsigned long long>(result.tree.total()));
  if (result.tree.total() == 0) return 7;
  // The executable's frames were walked: the burner's samples sit under main.
  if (folded.find("main;(anonymous namespace)::static_burn(double)") == std::string::npos) {
    std::fprintf(stderr, "no main;static_burn stack in:\n%s\n", folded.c_str());
    return 8;
  }
  return 0;
}
