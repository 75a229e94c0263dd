// bench_alloc: what the allocation profiler and the wall-clock mode cost (issue 14), against no
// profiler, heaptrack and gperftools' heap profiler (HEAPPROFILE with tcmalloc), all in one run.
//
//   bench_alloc [--rounds 5] [--strings 500000] [--window 100000] [--json-mb 6] [--dir DIR]
//               [--only map,jq,wall] [--smoke]
//
// Every configuration runs as a child process (fork + exec), so its wall time, CPU time (user + sys)
// and peak RSS (wait4's ru_maxrss) are its own; the configurations are interleaved round by round, so
// a change of the machine's load hits all of them alike, and each figure is the median of the rounds
// with its spread (min..max). Slowdowns and RSS overheads are against the "none" row of the same run.
//
// Workloads:
//   map   this program: std::map<std::string, uint64_t>, N strings of 28 characters (each one heap block,
//         beyond the small-string buffer) inserted in a random order and each erased again WINDOW
//         insertions later, so N inserts and N erases with WINDOW strings alive (bench/README.md).
//   jq    Debian's jq, unmodified, on a JSON file this program writes (rides, --json-mb megabytes):
//         `jq -c 'map(.fare + .tip) | add'`. Ours reaches it through libbench-alloc-preload.so (the
//         implementation with PYROSCOPE_ALLOCATION_PROFILING, LD_PRELOADed; bench_alloc_preload.cpp),
//         and through libpyroscope-preload.so (allocations once it carries the interposers).
//   wall  this program: 64 threads that block (condition variables, sleep_for, pipe reads) for a fixed
//         number of round trips; wall_clock off against on.
//
// Built three times from this file: bench_alloc (the driver), and from one compile of its workloads
// (BENCH_ALLOC_CHILD_ONLY) bench_alloc_plain (linked with the build's pyroscope_impl: no interposers)
// and bench_alloc_ours (linked with bench_alloc_ours_impl.cpp: PYROSCOPE_ALLOCATION_PROFILING, started
// with the default Config). The driver execs both. The figures of record are in bench/README.md.
#include "pyroscope.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

// --- Config fields that come with issue 14 (detected, so the bench builds on either side of it) ----

template <class C, class = void>
struct HasAllocationSampleBytes : std::false_type {};
template <class C>
struct HasAllocationSampleBytes<C, std::void_t<decltype(std::declval<C&>().allocation_sample_bytes)>>
    : std::true_type {};
template <class C, class = void>
struct HasWallClock : std::false_type {};
template <class C>
struct HasWallClock<C, std::void_t<decltype(std::declval<C&>().wall_clock)>> : std::true_type {};

constexpr bool kHaveAllocationProfiling = HasAllocationSampleBytes<pyroscope::Config>::value;
constexpr bool kHaveWallClock = HasWallClock<pyroscope::Config>::value;

// Sets allocation_sample_bytes when the header has it; `bytes` < 0 leaves the default.
template <class C>
void set_allocation_sample_bytes(C& config, long long bytes) {
  if constexpr (HasAllocationSampleBytes<C>::value) {
    if (bytes >= 0) config.allocation_sample_bytes = static_cast<decltype(config.allocation_sample_bytes)>(bytes);
  } else {
    (void)config;
    (void)bytes;
  }
}
template <class C>
void set_wall_clock(C& config, bool on) {
  if constexpr (HasWallClock<C>::value) {
    config.wall_clock = on;
  } else {
    (void)config;
    (void)on;
  }
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_alloc: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// --- Workloads (run in the child) --------------------------------------------------------------------

// The key of string i: 28 characters, so every key is a heap block (libstdc++'s small-string buffer
// holds 15), and a hash of i, so consecutive insertions land all over the tree.
void make_key(uint64_t i, char out[29]) {
  uint64_t h = i * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  std::snprintf(out, 29, "rider-%016llx-%05u", static_cast<unsigned long long>(h), unsigned(i % 100000));
}

__attribute__((noinline)) uint64_t map_workload(uint64_t strings, uint64_t window) {
  std::map<std::string, uint64_t> map;
  uint64_t checksum = 0;
  char key[29];
  for (uint64_t i = 0; i < strings + window; i++) {
    if (i < strings) {
      make_key(i, key);
      map.emplace(std::string(key), i);
    }
    if (i >= window) {
      make_key(i - window, key);
      auto it = map.find(std::string(key));
      if (it == map.end()) {
        std::fprintf(stderr, "bench_alloc: key %llu missing\n", static_cast<unsigned long long>(i - window));
        std::exit(1);
      }
      checksum += it->second;
      map.erase(it);
    }
  }
  if (!map.empty()) {
    std::fprintf(stderr, "bench_alloc: %zu keys left\n", map.size());
    std::exit(1);
  }
  return checksum;
}

// Threads that spend their time blocked: pairs ping-ponging through a condition variable, sleepers,
// and pipe readers fed by writers. A fixed number of round trips, so the wall time is the figure.
__attribute__((noinline)) uint64_t wall_workload(int threads, int trips) {
  struct Pair {
    std::mutex mutex;
    std::condition_variable cv;
    int turn = 0;  // incremented by each side in turn
  };
  const int pairs = threads / 4, sleepers = threads / 4, pipes = threads / 4;
  std::vector<Pair> pair_state(pairs);
  std::vector<std::thread> all;
  std::atomic<uint64_t> done{0};
  for (int p = 0; p < pairs; p++) {
    for (int side = 0; side < 2; side++) {
      all.emplace_back([&, p, side] {
        Pair& pair = pair_state[p];
        for (int t = 0; t < trips; t++) {
          std::unique_lock<std::mutex> lock(pair.mutex);
          pair.cv.wait(lock, [&] { return pair.turn % 2 == side; });
          pair.turn++;
          pair.cv.notify_one();
        }
        done++;
      });
    }
  }
  for (int s = 0; s < sleepers; s++) {
    all.emplace_back([&] {
      for (int t = 0; t < trips; t++) std::this_thread::sleep_for(std::chrono::microseconds(500));
      done++;
    });
  }
  std::vector<int> fds(2 * pipes);
  for (int p = 0; p < pipes; p++) {
    if (::pipe(&fds[2 * p]) != 0) die("pipe");
    all.emplace_back([&, p] {  // reader: a blocking read per trip
      char byte;
      for (int t = 0; t < trips; t++) {
        ssize_t got;
        do got = ::read(fds[2 * p], &byte, 1);
        while (got < 0 && errno == EINTR);
        if (got != 1) {
          std::fprintf(stderr, "bench_alloc: pipe read returned %zd (%s)\n", got, std::strerror(errno));
          std::exit(1);
        }
      }
      done++;
    });
    all.emplace_back([&, p] {  // writer: a byte every 500 µs
      for (int t = 0; t < trips; t++) {
        std::this_thread::sleep_for(std::chrono::microseconds(500));
        ssize_t put;
        do put = ::write(fds[2 * p + 1], "x", 1);
        while (put < 0 && errno == EINTR);
        if (put != 1) die("pipe write");
      }
      done++;
    });
  }
  for (std::thread& t : all) t.join();
  for (int fd : fds) ::close(fd);
  return done.load();
}

// `bench_alloc[_ours] --child WORKLOAD ARGS... [--profile PATH --sample-bytes B --wall-clock 0|1 --cpu-hz N]
//                     [--cpu-report 1]`
// (--cpu-hz: the CPU sampler's rate, 100 by default; bench/alloc_instructions.sh lowers it under
// valgrind, whose slowed-down CPU time would otherwise take ~50 times the samples per instruction.
// --cpu-report: after stop(), prints `cpu MAIN OTHER` to stderr, the CPU seconds of the main thread and
// of every other thread the process had, the profiler's agent and push threads, exited, included.)
int child_main(int argc, char** argv) {
  std::string workload = argv[2];
  uint64_t a = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0;
  uint64_t b = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 0;
  std::string profile;
  long long sample_bytes = -1;
  int wall_clock = 0;
  int cpu_hz = 100;
  bool cpu_report = false;
  for (int i = 5; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--profile") == 0) profile = argv[i + 1];
    if (std::strcmp(argv[i], "--sample-bytes") == 0) sample_bytes = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--wall-clock") == 0) wall_clock = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--cpu-hz") == 0) cpu_hz = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--cpu-report") == 0) cpu_report = std::atoi(argv[i + 1]) != 0;
  }
  if (!profile.empty()) {
    pyroscope::Config config;
    config.application_name = "bench";
    config.output_path = profile;
    set_allocation_sample_bytes(config, sample_bytes);
    set_wall_clock(config, wall_clock != 0);
    config.sample_rate_hz = cpu_hz;
    pyroscope::Status st = pyroscope::start(config);
    if (!st.ok()) {
      std::fprintf(stderr, "bench_alloc: cannot start the profiler: %s\n", st.to_string().c_str());
      return 1;
    }
  }
  uint64_t result = 0;
  if (workload == "map") result = map_workload(a, b);
  else if (workload == "wall") result = wall_workload(int(a), int(b));
  else {
    std::fprintf(stderr, "bench_alloc: unknown workload %s\n", workload.c_str());
    return 2;
  }
  if (!profile.empty()) {
    pyroscope::Status st = pyroscope::stop();
    if (!st.ok()) {
      std::fprintf(stderr, "bench_alloc: stopping the profiler: %s\n", st.to_string().c_str());
      return 1;
    }
  }
  if (cpu_report) {
    // The process clock keeps the time of threads that have exited (the agent's, after stop()).
    timespec main_thread{}, process{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &main_thread);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &process);
    const double main_s = double(main_thread.tv_sec) + double(main_thread.tv_nsec) * 1e-9;
    const double process_s = double(process.tv_sec) + double(process.tv_nsec) * 1e-9;
    std::fprintf(stderr, "cpu %.6f %.6f\n", main_s, process_s - main_s);
  }
  std::printf("%llu\n", static_cast<unsigned long long>(result));
  return 0;
}

#ifndef BENCH_ALLOC_CHILD_ONLY

// --- The driver ----------------------------------------------------------------------------------------

// --smoke runs allocate ~1 MB: at the default 512 KiB mean a run gets no sample one time in ~12. The
// smoke checks that every configuration runs and writes samples, so ours samples every 4 KiB there.
constexpr const char* kSmokeSampleBytes = "4096";

struct Run {
  double wall = 0, cpu = 0, maxrss_mb = 0;
};

struct Command {
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;  // added to the environment
  std::string stdin_path;                                 // empty: /dev/null
};

// Runs one command as a child; its wall time, CPU time and peak RSS (of it and the children it waited
// for, e.g. heaptrack's interpreter). Exits when the command fails.
Run run(const Command& command, const std::string& log_path) {
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    for (const auto& [name, value] : command.env) ::setenv(name.c_str(), value.c_str(), 1);
    const int in = ::open(command.stdin_path.empty() ? "/dev/null" : command.stdin_path.c_str(), O_RDONLY);
    const int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) _exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    std::vector<char*> args;
    for (const std::string& a : command.args) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  if (::wait4(pid, &status, 0, &usage) != pid) die("wait4");
  Run r;
  r.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.cpu = double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
          double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  r.maxrss_mb = double(usage.ru_maxrss) / 1024.0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd;
    for (const std::string& a : command.args) cmd += " " + a;
    std::fprintf(stderr, "bench_alloc: command failed (status %d):%s\n  its output: %s\n", status, cmd.c_str(),
                 log_path.c_str());
    std::exit(1);
  }
  return r;
}

int g_failures = 0;

struct Config {
  std::string name;
  Command command;
  std::string check_profile;  // a .pyro our profiler wrote: checked for alloc_space samples after each run
  std::string check_type;     // the profile type it must hold ("alloc_space", "wall")
  bool must_have_samples = false;  // a missing type fails the run (exit 1), otherwise a note
  std::vector<Run> runs;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The samples of `APP.TYPE{}` over the whole file, summed over its apps; 0 when there is none.
uint64_t profile_samples(const std::string& path, const std::string& type, std::string* apps) {
  pyroscope::Dataset data;
  pyroscope::Status st = data.add_file(path);
  if (!st.ok()) {
    *apps = "cannot open: " + st.to_string();
    return 0;
  }
  uint64_t total = 0;
  const pyroscope::TimeRange span = data.time_span();
  for (const std::string& app : data.apps()) {
    *apps += (apps->empty() ? "" : ", ") + app;
    pyroscope::QueryResult result;
    if (data.query(app + "." + type + "{}", span.from, span.until, &result, pyroscope::QueryOptions()).ok())
      total += result.tree.total();
  }
  return total;
}

void run_rounds(const std::string& title, std::vector<Config>& configs, int rounds, const std::string& dir) {
  std::printf("\n== %s: %d rounds, configurations interleaved ==\n", title.c_str(), rounds);
  for (int round = 0; round < rounds; round++) {
    // Rotate the order every round so no configuration always follows the same one.
    for (size_t k = 0; k < configs.size(); k++) {
      Config& c = configs[(k + size_t(round)) % configs.size()];
      if (!c.check_profile.empty()) ::unlink(c.check_profile.c_str());
      Run r = run(c.command, dir + "/last-run.log");
      c.runs.push_back(r);
      std::printf("  round %d  %-34s wall %7.3f s  cpu %7.3f s  maxrss %8.1f MB\n", round + 1, c.name.c_str(), r.wall,
                  r.cpu, r.maxrss_mb);
      if (!c.check_profile.empty()) {
        std::string apps;
        const uint64_t samples = profile_samples(c.check_profile, c.check_type, &apps);
        if (samples == 0) {
          if (c.must_have_samples) g_failures++;
          std::printf("    %s %s: no %s samples in %s (series: %s)\n", c.must_have_samples ? "FAILED:" : "note:", c.name.c_str(), c.check_type.c_str(),
                      c.check_profile.c_str(), apps.empty() ? "none" : apps.c_str());
        }
      }
    }
  }
  const Config& base = configs[0];
  std::vector<double> bw, bc, br;
  for (const Run& r : base.runs) bw.push_back(r.wall), bc.push_back(r.cpu), br.push_back(r.maxrss_mb);
  const double base_wall = median(bw), base_cpu = median(bc), base_rss = median(br);
  std::printf("\n| %s | wall s, median (min..max) | slowdown | CPU s, median (min..max) | CPU slowdown | max RSS MB | RSS overhead |\n",
              title.c_str());
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Config& c : configs) {
    std::vector<double> w, cpu, rss;
    for (const Run& r : c.runs) w.push_back(r.wall), cpu.push_back(r.cpu), rss.push_back(r.maxrss_mb);
    const double mw = median(w), mc = median(cpu), mr = median(rss);
    std::printf("| %s | %.3f (%.3f..%.3f) | %+.1f %% | %.3f (%.3f..%.3f) | %+.1f %% | %.1f | %+.1f MB |\n",
                c.name.c_str(), mw, *std::min_element(w.begin(), w.end()), *std::max_element(w.begin(), w.end()),
                100 * (mw / base_wall - 1), mc, *std::min_element(cpu.begin(), cpu.end()),
                *std::max_element(cpu.begin(), cpu.end()), 100 * (mc / base_cpu - 1), mr, mr - base_rss);
  }
}

double slowdown_of(const std::vector<Config>& configs, const std::string& name, bool cpu) {
  std::vector<double> base, v;
  for (const Run& r : configs[0].runs) base.push_back(cpu ? r.cpu : r.wall);
  for (const Config& c : configs)
    if (c.name == name)
      for (const Run& r : c.runs) v.push_back(cpu ? r.cpu : r.wall);
  if (v.empty()) return 0;
  return median(v) / median(base) - 1;
}

double rss_overhead_of(const std::vector<Config>& configs, const std::string& name) {
  std::vector<double> base, v;
  for (const Run& r : configs[0].runs) base.push_back(r.maxrss_mb);
  for (const Config& c : configs)
    if (c.name == name)
      for (const Run& r : c.runs) v.push_back(r.maxrss_mb);
  return v.empty() ? 0 : median(v) - median(base);
}

void print_goals(const std::vector<Config>& configs, const std::string& ours, const std::string& heaptrack) {
  for (bool cpu : {false, true}) {
    const double o = slowdown_of(configs, ours, cpu), h = slowdown_of(configs, heaptrack, cpu);
    char ratio[96];
    if (h <= 0) std::snprintf(ratio, sizeof ratio, "n/a (heaptrack not slower than none in this measure)");
    else if (o <= 0) std::snprintf(ratio, sizeof ratio, "ours within noise of none (>= 10x: met)");
    else std::snprintf(ratio, sizeof ratio, "%.1fx (>= 10x: %s)", h / o, h / o >= 10 ? "met" : "NOT met");
    std::printf("goal (%s): ours %+.2f %% (<= 2 %%: %s); heaptrack %+.1f %%; heaptrack / ours = %s\n",
                cpu ? "CPU time" : "wall time", 100 * o, o <= 0.02 ? "met" : "NOT met", 100 * h, ratio);
  }
  const double rss = rss_overhead_of(configs, ours);
  std::printf("goal: ours' RSS overhead %+.1f MB (<= 10 MB: %s)\n", rss, rss <= 10 ? "met" : "NOT met");
}

std::string self_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) die("readlink /proc/self/exe");
  std::string path(buf, size_t(n));
  return path.substr(0, path.rfind('/'));
}

bool executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t at = 0;
  while (at <= p.size()) {
    size_t end = p.find(':', at);
    if (end == std::string::npos) end = p.size();
    const std::string candidate = p.substr(at, end - at) + "/" + name;
    if (executable(candidate)) return candidate;
    at = end + 1;
  }
  return "";
}

// Rides as JSON, about `bytes` bytes: many small objects and strings, what jq allocates a value for.
void write_rides_json(const std::string& path, long bytes) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) die("cannot write " + path);
  std::fputs("[", f);
  const char* const vehicles[] = {"car", "bike", "scooter"};
  const char* const regions[] = {"us-east", "eu-north", "ap-south"};
  uint64_t x = 88172645463325252ull;
  long written = 0;
  for (uint64_t i = 0; written < bytes; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    written += std::fprintf(f,
                            "%s{\"id\":\"ride-%llu\",\"vehicle\":\"%s\",\"region\":\"%s\",\"rider\":{\"name\":\"rider "
                            "%llu\",\"rating\":%.2f},\"fare\":%.2f,\"tip\":%.2f,\"route\":[[%.5f,%.5f],[%.5f,%.5f],[%.5f,%.5f]],"
                            "\"tags\":[\"t%llu\",\"t%llu\"]}\n",
                            i ? "," : "", static_cast<unsigned long long>(i), vehicles[x % 3], regions[(x >> 8) % 3],
                            static_cast<unsigned long long>(x % 100000), 3 + double(x % 200) / 100,
                            double(x % 10000) / 100, double((x >> 16) % 1000) / 100, double(x % 18000) / 100 - 90,
                            double((x >> 20) % 36000) / 100 - 180, double((x >> 3) % 18000) / 100 - 90,
                            double((x >> 5) % 36000) / 100 - 180, double((x >> 7) % 18000) / 100 - 90,
                            double((x >> 9) % 36000) / 100 - 180, static_cast<unsigned long long>(x % 97),
                            static_cast<unsigned long long>((x >> 12) % 89));
  }
  std::fputs("]\n", f);
  if (std::fclose(f) != 0) die("writing " + path);
}

int driver_main(int argc, char** argv) {
  int rounds = 5, wall_threads = 64, wall_trips = 1000;
  double json_mb = 6;
  uint64_t strings = 500000, window = 100000;
  std::string dir = "/tmp/bench_alloc", only = "map,jq,wall", skip;
  std::string ours_exe = self_dir() + "/bench_alloc_ours";
#ifdef PYROSCOPE_BENCH_PRELOAD_LIBRARY
  std::string preload = PYROSCOPE_BENCH_PRELOAD_LIBRARY;
#else
  std::string preload;
#endif
  std::string tcmalloc = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4";
  bool smoke = false;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--smoke") {
      smoke = true;
      rounds = 1, strings = 10000, window = 2000, json_mb = 0.2, wall_threads = 8, wall_trips = 50;
    } else if (arg == "--rounds" && has_value) rounds = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--strings" && has_value) strings = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--window" && has_value) window = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--json-mb" && has_value) json_mb = std::max(0.01, std::atof(argv[++i]));
    else if (arg == "--wall-threads" && has_value) wall_threads = std::max(4, std::atoi(argv[++i]));
    else if (arg == "--wall-trips" && has_value) wall_trips = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--dir" && has_value) dir = argv[++i];
    else if (arg == "--only" && has_value) only = argv[++i];
    else if (arg == "--skip" && has_value) skip = argv[++i];
    else if (arg == "--ours" && has_value) ours_exe = argv[++i];
    else if (arg == "--preload" && has_value) preload = argv[++i];
    else if (arg == "--tcmalloc" && has_value) tcmalloc = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_alloc [--rounds N] [--strings N] [--window N] [--json-mb MB] [--wall-threads N]\n"
                   "                   [--wall-trips N] [--dir DIR] [--only map,jq,wall] [--skip heaptrack,tcmalloc,gperftools]\n"
                   "                   [--ours PATH]\n"
                   "                   [--preload libpyroscope-preload.so] [--tcmalloc PATH] [--smoke]\n");
      return 2;
    }
  }
  if (window == 0 || window > strings) {
    std::fprintf(stderr, "bench_alloc: --window must be in 1..--strings\n");
    return 2;
  }
  ::mkdir(dir.c_str(), 0755);
  // The rows without our profiler run bench_alloc_plain: the workloads' object code is the one
  // bench_alloc_ours runs (one compile, bench/CMakeLists.txt), so a difference is the profiler's alone.
  const std::string plain_exe = self_dir() + "/bench_alloc_plain";
  const std::string self = executable(plain_exe) ? plain_exe : self_dir() + "/bench_alloc";
  const std::string heaptrack = skip.find("heaptrack") != std::string::npos ? "" : find_in_path("heaptrack");
  const std::string jq = find_in_path("jq");
  const bool have_tcmalloc = ::access(tcmalloc.c_str(), R_OK) == 0;
  const bool skip_tcmalloc = skip.find("tcmalloc") != std::string::npos;  // the row without HEAPPROFILE
  const bool skip_gperftools = skip.find("gperftools") != std::string::npos;
  const bool have_ours = executable(ours_exe);
  const std::string shim = self_dir() + "/libbench-alloc-preload.so";
  const bool have_shim = ::access(shim.c_str(), R_OK) == 0;
  std::printf("bench_alloc: header %s allocation profiling, %s wall-clock mode; ours: %s; heaptrack: %s; "
              "tcmalloc: %s; jq: %s; preload: %s\n",
              kHaveAllocationProfiling ? "with" : "WITHOUT", kHaveWallClock ? "with" : "WITHOUT",
              have_ours ? ours_exe.c_str() : "missing", heaptrack.empty() ? "missing" : heaptrack.c_str(),
              have_tcmalloc ? tcmalloc.c_str() : "missing", jq.empty() ? "missing" : jq.c_str(),
              preload.empty() ? "missing" : preload.c_str());
  unsigned hw = std::thread::hardware_concurrency();
  double load[3] = {0, 0, 0};
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
    std::fclose(f);
  }
  std::printf("machine: %u CPUs, load average %.2f %.2f %.2f\n", hw, load[0], load[1], load[2]);
  if (smoke)
    std::printf("smoke run: tiny sizes, one round, and ours samples every %s bytes (not 512 KiB) so that each run holds samples\n",
                kSmokeSampleBytes);

  auto want = [&](const char* name) { return only.find(name) != std::string::npos; };
  const std::string heap_prefix = dir + "/gperf";

  if (want("map")) {
    const std::string n = std::to_string(strings), w = std::to_string(window);
    std::vector<Config> configs;
    configs.push_back({"none", {{self, "--child", "map", n, w}, {}, ""}, "", "", false, {}});
    if (have_ours) {
      configs.push_back({"ours, allocation sampling off (0)",
                         {{ours_exe, "--child", "map", n, w, "--profile", dir + "/off.pyro", "--sample-bytes", "0"}, {}, ""},
                         "", "", false, {}});
      std::vector<std::string> ours_args = {ours_exe, "--child", "map", n, w, "--profile", dir + "/ours.pyro"};
      if (smoke) ours_args.insert(ours_args.end(), {"--sample-bytes", kSmokeSampleBytes});
      configs.push_back({"ours, default (512 KiB)", {ours_args, {}, ""},
                         kHaveAllocationProfiling ? dir + "/ours.pyro" : "", "alloc_space", true, {}});
    }
    if (!heaptrack.empty())
      configs.push_back({"heaptrack", {{heaptrack, "-o", dir + "/heaptrack", self, "--child", "map", n, w}, {}, ""}, "", "", false, {}});
    if (have_tcmalloc && !skip_tcmalloc)
      configs.push_back({"tcmalloc alone", {{self, "--child", "map", n, w}, {{"LD_PRELOAD", tcmalloc}}, ""}, "", "", false, {}});
    if (have_tcmalloc && !skip_gperftools) {
      configs.push_back({"gperftools HEAPPROFILE (tcmalloc)",
                         {{self, "--child", "map", n, w}, {{"LD_PRELOAD", tcmalloc}, {"HEAPPROFILE", heap_prefix}}, ""},
                         "", "", false, {}});
    }
    char title[128];
    std::snprintf(title, sizeof title, "std::map, %llu strings inserted and erased, %llu alive",
                  static_cast<unsigned long long>(strings), static_cast<unsigned long long>(window));
    run_rounds(title, configs, rounds, dir);
    if (have_ours && !heaptrack.empty()) print_goals(configs, "ours, default (512 KiB)", "heaptrack");
    if (!kHaveAllocationProfiling)
      std::printf("note: this header has no Config::allocation_sample_bytes: the 'ours' rows profile CPU only\n");
  }

  if (want("jq")) {
    if (jq.empty()) {
      std::printf("\n== jq: skipped, jq not found (Debian package jq) ==\n");
    } else {
      const long json_bytes = long(json_mb * 1e6);
      const std::string input = dir + "/rides-" + std::to_string(json_bytes) + ".json";
      if (::access(input.c_str(), R_OK) != 0) write_rides_json(input, json_bytes);
      const std::vector<std::string> args = {jq, "-c", "map(.fare + .tip) | add", input};
      std::vector<Config> configs;
      configs.push_back({"none", {args, {}, ""}, "", "", false, {}});
      if (!preload.empty()) {  // pyro record's library: allocations once it carries the interposers
        const std::string out = dir + "/jq-ours.pyro";
        configs.push_back({"ours (libpyroscope-preload)",
                           {args, {{"LD_PRELOAD", preload}, {"PYROSCOPE_OUTPUT", out}, {"PYROSCOPE_CHILDREN", "0"}}, ""},
                           out, "alloc_space", false, {}});
      }
      if (have_shim) {  // the implementation with PYROSCOPE_ALLOCATION_PROFILING, preloaded
        const std::string out = dir + "/jq-shim.pyro";
        configs.push_back({"ours (bench preload), default",
                           {args,
                            {{"LD_PRELOAD", shim}, {"BENCH_ALLOC_OUTPUT", out},
                             {"BENCH_ALLOC_SAMPLE_BYTES", smoke ? kSmokeSampleBytes : ""}},
                            ""},
                           kHaveAllocationProfiling ? out : "", "alloc_space", true, {}});
      }
      if (!heaptrack.empty()) {
        std::vector<std::string> h = {heaptrack, "-o", dir + "/heaptrack-jq"};
        h.insert(h.end(), args.begin(), args.end());
        configs.push_back({"heaptrack", {h, {}, ""}, "", "", false, {}});
      }
      if (have_tcmalloc && !skip_tcmalloc)
        configs.push_back({"tcmalloc alone", {args, {{"LD_PRELOAD", tcmalloc}}, ""}, "", "", false, {}});
      if (have_tcmalloc && !skip_gperftools) {
        configs.push_back({"gperftools HEAPPROFILE (tcmalloc)",
                           {args, {{"LD_PRELOAD", tcmalloc}, {"HEAPPROFILE", heap_prefix + "-jq"}}, ""}, "", "", false, {}});
      }
      struct stat st{};
      ::stat(input.c_str(), &st);
      char title[160];
      std::snprintf(title, sizeof title, "jq -c 'map(.fare + .tip) | add' on %.1f MB of JSON", double(st.st_size) / 1e6);
      run_rounds(title, configs, rounds, dir);
      if (have_shim && !heaptrack.empty()) print_goals(configs, "ours (bench preload), default", "heaptrack");
    }
  }

  if (want("wall")) {
    if (!have_ours) {
      std::printf("\n== wall: skipped, %s missing ==\n", ours_exe.c_str());
    } else {
      const std::string t = std::to_string(wall_threads), k = std::to_string(wall_trips);
      std::vector<Config> configs;
      configs.push_back({"none", {{self, "--child", "wall", t, k}, {}, ""}, "", "", false, {}});
      configs.push_back({"ours, wall_clock off",
                         {{ours_exe, "--child", "wall", t, k, "--profile", dir + "/wall-off.pyro", "--wall-clock", "0"}, {}, ""},
                         "", "", false, {}});
      configs.push_back({"ours, wall_clock on",
                         {{ours_exe, "--child", "wall", t, k, "--profile", dir + "/wall-on.pyro", "--wall-clock", "1"}, {}, ""},
                         kHaveWallClock ? dir + "/wall-on.pyro" : "", "wall", true, {}});
      char title[128];
      std::snprintf(title, sizeof title, "%d blocking threads, %d round trips each", wall_threads, wall_trips);
      run_rounds(title, configs, rounds, dir);
      const double off = slowdown_of(configs, "ours, wall_clock off", false);
      const double on = slowdown_of(configs, "ours, wall_clock on", false);
      std::printf("wall mode: wall time %+.2f %% with wall_clock on, %+.2f %% with it off (CPU time %+.1f %% / %+.1f %%)\n",
                  100 * on, 100 * off, 100 * slowdown_of(configs, "ours, wall_clock on", true),
                  100 * slowdown_of(configs, "ours, wall_clock off", true));
      if (!kHaveWallClock) std::printf("note: this header has no Config::wall_clock: both 'ours' rows are CPU-only\n");
    }
  }
  if (g_failures) std::printf("\nbench_alloc: %d run(s) of our profiler recorded nothing of what they profile\n", g_failures);
  return g_failures ? 1 : 0;
}

#endif  // BENCH_ALLOC_CHILD_ONLY

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--child") == 0) return child_main(argc, argv);
#ifdef BENCH_ALLOC_CHILD_ONLY
  std::fprintf(stderr, "%s: run by bench_alloc only (--child WORKLOAD ...)\n", argv[0]);
  return 2;
#else
  return driver_main(argc, argv);
#endif
}
