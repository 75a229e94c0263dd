// bench_threads — sampler reach for short-lived threads and periodic workloads (issue 17).
//
//   bench_threads [--threads N] [--thread-ms MS] [--alias-seconds S] [--rounds R] [--only short|alias]
//
// Short threads: N threads of MS milliseconds of CPU each, two at a time, while the profiler samples at
// 100 Hz; reported: the share of their CPU time the profile accounts for (samples x 10 ms / measured
// CPU). Aliasing: two threads alternate 5 ms of CPU in phase A and 5 ms in phase B (a 100 Hz periodic
// workload with a 50/50 split), S seconds of CPU each; reported: the share the profile gives A.
// Each is run, interleaved, with the timers as before this change (fixed intervals, no process-wide
// timer) and as now (jittered expiries, the process-wide timer for threads younger than a rescan).
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

std::atomic<uint64_t> g_sink{0};

__attribute__((noinline)) void burn(double seconds) {
  const double end = thread_cpu_seconds() + seconds;
  uint64_t x = g_sink.load(std::memory_order_relaxed);
  while (thread_cpu_seconds() < end) {
    for (int i = 0; i < 2000; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  }
  g_sink.store(x, std::memory_order_relaxed);
}

uint64_t total_under(const pyroscope::Tree& tree, const std::string& prefix) {
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

pyroscope::Tree profile_of(const std::string& path, const std::string& app) {
  pyroscope::Dataset data;
  pyroscope::QueryResult result;
  if (!data.add_file(path).ok() ||
      !data.query(app + "{}", data.time_span().from, data.time_span().until, &result).ok()) {
    std::fprintf(stderr, "bench_threads: cannot read %s back\n", path.c_str());
    std::exit(1);
  }
  return result.tree;
}

struct Mode {
  const char* name;
  bool jitter;
  int process_timer;
};

void set_mode(const Mode& mode) {
  pyroscope::detail::g_sampler_jitter.store(mode.jitter);
  pyroscope::detail::g_sampler_process_timer.store(mode.process_timer);
}

pyroscope::Config config_for(const char* app, const std::string& path) {
  pyroscope::Config config;
  config.application_name = app;
  config.output_path = path;
  config.sample_rate_hz = 100;
  config.log = [](pyroscope::LogLevel level, const std::string& message) {
    if (level >= pyroscope::LogLevel::warning) std::fprintf(stderr, "profiler: %s\n", message.c_str());
  };
  return config;
}

}  // namespace

__attribute__((noinline)) void bench_short_thread(double seconds) {
  burn(seconds);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void bench_phase_a(double seconds) {
  burn(seconds);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void bench_phase_b(double seconds) {
  burn(seconds);
  asm volatile("" ::: "memory");
}

namespace {

double short_threads(const Mode& mode, int threads, double seconds, uint64_t* process_samples) {
  set_mode(mode);
  const std::string path = "bench_threads_short.pyro";
  std::remove(path.c_str());
  pyroscope::Config config = config_for("short", path);
  config.short_lived_threads = mode.process_timer != 0;
  if (!pyroscope::start(config).ok()) std::exit(1);
  const uint64_t before = pyroscope::detail::sampler_stats().process_samples;
  std::atomic<uint64_t> cpu_ns{0};
  for (int i = 0; i < threads; i += 2) {
    std::thread pair[2];
    for (std::thread& t : pair) {
      t = std::thread([&] {
        const double start = thread_cpu_seconds();
        bench_short_thread(seconds);
        cpu_ns += uint64_t((thread_cpu_seconds() - start) * 1e9);
      });
    }
    for (std::thread& t : pair) t.join();
  }
  *process_samples = pyroscope::detail::sampler_stats().process_samples - before;
  if (!pyroscope::stop().ok()) std::exit(1);
  const double accounted = double(total_under(profile_of(path, "short"), "bench_short_thread(double)")) / 100.0;
  std::remove(path.c_str());
  return accounted / (double(cpu_ns.load()) * 1e-9);
}

double alias(const Mode& mode, double seconds, double* truth) {
  set_mode(mode);
  const std::string path = "bench_threads_alias.pyro";
  std::remove(path.c_str());
  if (!pyroscope::start(config_for("alias", path)).ok()) std::exit(1);
  std::atomic<uint64_t> a_ns{0}, b_ns{0};
  auto worker = [&] {
    const double end = thread_cpu_seconds() + seconds;
    double a = 0, b = 0;
    while (thread_cpu_seconds() < end) {
      const double t0 = thread_cpu_seconds();
      bench_phase_a(0.005);
      const double t1 = thread_cpu_seconds();
      bench_phase_b(0.005);
      a += t1 - t0;
      b += thread_cpu_seconds() - t1;
    }
    a_ns += uint64_t(a * 1e9);
    b_ns += uint64_t(b * 1e9);
  };
  std::thread first(worker), second(worker);
  first.join();
  second.join();
  if (!pyroscope::stop().ok()) std::exit(1);
  const pyroscope::Tree tree = profile_of(path, "alias");
  std::remove(path.c_str());
  const double a = double(total_under(tree, "bench_phase_a(double)"));
  const double b = double(total_under(tree, "bench_phase_b(double)"));
  *truth = double(a_ns.load()) / double(a_ns.load() + b_ns.load());
  return a + b > 0 ? a / (a + b) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1000, rounds = 3;
  std::string only;
  double thread_ms = 20, alias_seconds = 5;
  for (int i = 1; i < argc; i++) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--threads") && has_value) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--thread-ms") && has_value) thread_ms = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--alias-seconds") && has_value) alias_seconds = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--rounds") && has_value) rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--only") && has_value) only = argv[++i];
    else {
      std::fprintf(stderr, "bench_threads: unknown or incomplete option '%s'\n"
                           "usage: bench_threads [--threads N] [--thread-ms MS] [--alias-seconds S] [--rounds R] [--only short|alias]\n", argv[i]);
      return 2;
    }
  }
  if (threads < 2 || thread_ms <= 0 || alias_seconds <= 0 || rounds < 1 ||
      (!only.empty() && only != "short" && only != "alias")) {
    std::fprintf(stderr, "bench_threads: --threads >= 2, --thread-ms > 0, --alias-seconds > 0, --rounds >= 1, "
                         "--only short or alias\n");
    return 2;
  }
  std::string release;
  const bool kernel_ok = pyroscope::detail::sampler_kernel_signals_running_thread(&release);
  std::printf("kernel %s (process-wide timer %s)\n", release.c_str(), kernel_ok ? "usable" : "not usable: needs >= 6.3");
  const Mode modes[] = {{"before (fixed intervals, rescans only)", false, 0},
                        {"jitter only", true, 0},
                        {"now (jitter + Config::short_lived_threads)", true, -1}};
  if (only != "alias") std::printf("\nshort threads: %d threads x %.0f ms of CPU, two at a time, 100 Hz\n", threads, thread_ms);
  for (int r = 0; r < rounds && only != "alias"; r++) {
    for (const Mode& mode : modes) {
      uint64_t process_samples = 0;
      const double share = short_threads(mode, threads, thread_ms / 1000, &process_samples);
      std::printf("  round %d  %-40s accounted %6.1f %%  (process-timer samples %llu)\n", r + 1, mode.name,
                  share * 100, (unsigned long long)process_samples);
    }
  }
  if (only != "short") std::printf("\naliasing: 2 threads alternating 5 ms A / 5 ms B of CPU for %.1f s each, 100 Hz\n", alias_seconds);
  for (int r = 0; r < rounds && only != "short"; r++) {
    for (const Mode& mode : modes) {
      if (mode.process_timer == 0 && mode.jitter) continue;  // the process timer plays no part here
      double truth = 0;
      const double a = alias(mode, alias_seconds, &truth);
      std::printf("  round %d  %-40s A reads %5.1f %%  (truth %.1f %%)\n", r + 1, mode.name, a * 100, truth * 100);
    }
  }
  return 0;
}
