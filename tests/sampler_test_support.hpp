// Helpers shared by the sampler tests (tests/test_sampler*.cpp): a CPU burner the optimizer keeps,
// fresh output paths, the common profiler configuration, and reading a file's samples back.
#pragma once

#include "pyroscope.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#if defined(__SANITIZE_THREAD__)
#define SAMPLER_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SAMPLER_TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SAMPLER_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SAMPLER_TEST_ASAN 1
#endif
#endif

namespace sampler_test {

inline double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

inline std::atomic<uint64_t> g_sink{0};  // keeps the work observable; atomic for TSan

// Burns `seconds` of this thread's CPU time in one frame the samples can be attributed to.
__attribute__((noinline)) inline void burn_cpu(double seconds) {
  const double end = thread_cpu_seconds() + seconds;
  uint64_t x = g_sink.load(std::memory_order_relaxed);
  while (thread_cpu_seconds() < end) {
    for (int i = 0; i < 2000; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  }
  g_sink.store(x, std::memory_order_relaxed);
}

// Runs slice() (a short piece of work on this thread) until the sampler has taken at least `signals`
// samples in the process since the call began, or this thread has used max_cpu_seconds of CPU.
// Returns the samples taken. Under CPU contention a thread's timer is checked only at the kernel ticks
// that find it running: a fixed amount of work can then get few samples, each carrying the weight of
// the periods it missed (and the periods after a thread's last sample are lost when it exits). A phase
// that must show up in a profile runs until it has been sampled, not for a fixed time.
template <class Slice>
uint64_t run_until_sampled(Slice&& slice, uint64_t signals, double max_cpu_seconds) {
  const uint64_t before = pyroscope::detail::sampler_stats().samples;
  const double end = thread_cpu_seconds() + max_cpu_seconds;
  uint64_t taken = 0;
  do {
    slice();
    taken = pyroscope::detail::sampler_stats().samples - before;
  } while (taken < signals && thread_cpu_seconds() < end);
  return taken;
}

// Samples under the outermost nodes whose name starts with prefix.
inline uint64_t total_under(const pyroscope::Tree& tree, std::string_view prefix) {
  uint64_t total = 0;
  for (uint32_t n = 1; n < tree.node_count(); n++) {
    if (tree.name(n).substr(0, prefix.size()) != prefix) continue;
    bool nested = false;
    for (uint32_t p = tree.parent(n); p != pyroscope::Tree::kRoot && p != pyroscope::Tree::kNoNode; p = tree.parent(p))
      nested = nested || tree.name(p).substr(0, prefix.size()) == prefix;
    if (!nested) total += tree.node_total(n);
  }
  return total;
}

inline std::string fresh_path(const char* name) {
  std::string path = std::string(name) + ".pyro";
  std::remove(path.c_str());
  return path;
}

inline pyroscope::Config test_config(const char* app, const std::string& path) {
  pyroscope::Config config;
  config.application_name = app;
  config.output_path = path;
  config.sample_rate_hz = 250;  // the kernel tick rate here: the most independent samples per CPU second
  config.log = [](pyroscope::LogLevel level, const std::string& message) {
    if (level >= pyroscope::LogLevel::warning) MESSAGE("profiler log: " << message);
  };
  return config;
}

// The samples of selector over the whole file; the test fails if the file does not open or query.
inline pyroscope::QueryResult query_file(const std::string& path, const std::string& selector) {
  pyroscope::Dataset data;
  pyroscope::Status status = data.add_file(path);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  const pyroscope::TimeRange span = data.time_span();
  int64_t first = span.from, end = span.until;
  pyroscope::QueryResult result;
  status = data.query(selector, first, end, &result);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  return result;
}

// A TCP socket listening on 127.0.0.1 at a port the kernel picks; the test fails if it cannot.
inline int listen_on_loopback(int backlog, sockaddr_in* address) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  *address = sockaddr_in{};
  address->sin_family = AF_INET;
  address->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(address), sizeof *address) == 0);
  socklen_t length = sizeof *address;
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(address), &length) == 0);
  REQUIRE(listen(listener, backlog) == 0);
  return listener;
}

}  // namespace sampler_test
