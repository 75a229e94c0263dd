// bench_wall — the cost of wall-clock sampling (Config::wall_clock, issue 14) with N idle threads.
//
//   bench_wall [--seconds S] [--threads 10,100,1000]
//
// For each N: N threads block (half in a condition_variable::wait, half in a pipe read) while the
// profiler runs with wall_clock on for S seconds. Reported: the agent's CPU time spent in wall ticks
// per tick and per thread-tick (SamplerStats::wall_tick_ns, measured on the agent thread), as a share
// of one CPU, and how the thread-ticks were served (counted unchanged, unwound from outside,
// signalled). A second run with wall_clock off gives the agent's CPU time without wall ticks, in the
// same process, for the ratio.

#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Idle {
  std::mutex mutex;
  std::condition_variable cv;
  bool stop = false;
  int fds[2] = {-1, -1};
  std::vector<std::thread> threads;

  explicit Idle(int n) {
    if (pipe(fds) != 0) std::abort();
    for (int i = 0; i < n; i++) {
      if (i % 2 == 0) {
        threads.emplace_back([this] {
          std::unique_lock<std::mutex> lock(mutex);
          cv.wait(lock, [this] { return stop; });
        });
      } else {
        threads.emplace_back([this] {
          char c;
          while (read(fds[0], &c, 1) < 0) {
          }
        });
      }
    }
  }
  ~Idle() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    cv.notify_all();
    close(fds[1]);
    for (auto& t : threads) t.join();
    close(fds[0]);
  }
};

struct Run {
  double agent_ms = 0, wall_ms = 0;
  uint64_t ticks = 0, signals = 0, unwinds = 0, cached = 0;
};

Run run(int threads, double seconds, bool wall) {
  Idle idle(threads);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // all blocked
  pyroscope::Config config;
  config.application_name = "benchwall";
  config.output_path = "bench_wall.pyro";
  config.wall_clock = wall;
  std::remove(config.output_path.c_str());
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  if (!pyroscope::start(config).ok()) std::abort();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // start-up costs (tables, first unwinds)
  const uint64_t agent0 = pyroscope::detail::sampler_agent_cpu_ns();
  const pyroscope::detail::SamplerStats mid = pyroscope::detail::sampler_stats();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const uint64_t agent1 = pyroscope::detail::sampler_agent_cpu_ns();
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  pyroscope::stop();
  (void)before;
  Run r;
  r.agent_ms = double(agent1 - agent0) / 1e6;
  r.wall_ms = double(after.wall_tick_ns - mid.wall_tick_ns) / 1e6;
  r.ticks = after.wall_ticks - mid.wall_ticks;
  r.signals = after.wall_signals - mid.wall_signals;
  r.unwinds = after.wall_unwinds - mid.wall_unwinds;
  r.cached = after.wall_cached - mid.wall_cached;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 5;
  std::vector<int> counts{10, 100, 1000};
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      counts.clear();
      for (char* p = argv[++i]; *p;) {
        counts.push_back(int(std::strtol(p, &p, 10)));
        if (*p == ',') p++;
      }
    } else {
      std::fprintf(stderr, "usage: bench_wall [--seconds S] [--threads 10,100,1000]\n");
      return 2;
    }
  }
  std::printf("%-8s %12s %12s %12s %14s %10s %9s %9s %9s\n", "threads", "agent_off_ms", "agent_on_ms",
              "wall_ms", "us_per_tick", "ns_per_thr", "cpu_%", "unwinds", "signals");
  for (int n : counts) {
    const Run off = run(n, seconds, false);
    const Run on = run(n, seconds, true);
    const double per_tick_us = on.ticks ? on.wall_ms * 1000.0 / double(on.ticks) : 0;
    const double thread_ticks = double(on.cached + on.unwinds + on.signals);
    std::printf("%-8d %12.1f %12.1f %12.1f %14.1f %10.0f %9.2f %9llu %9llu\n", n, off.agent_ms, on.agent_ms,
                on.wall_ms, per_tick_us, thread_ticks > 0 ? on.wall_ms * 1e6 / thread_ticks : 0,
                100.0 * on.agent_ms / (seconds * 1000.0), (unsigned long long)on.unwinds,
                (unsigned long long)on.signals);
  }
  std::remove("bench_wall.pyro");
  return 0;
}
