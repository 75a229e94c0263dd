// Sampler and threads (issue 3): threads created after start() are sampled, short-lived threads do not
// leak timers, threads shorter than a rescan are accounted (issue 17), a workload periodic at the
// sampling rate is not aliased (issue 17), tag scopes race-free on many threads, blocking syscalls survive signals, start/stop
// while threads come and go. The concurrency test of the sampler: run under TSan too.
// pyroscope-test: timeout=240 group=internals
#define PYROSCOPE_IMPLEMENTATION
#include "sampler_test_support.hpp"

#include <doctest/doctest.h>

#include <pthread.h>
#include <sched.h>

#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace sampler_test;

size_t count_threads() {
  size_t n = 0;
  DIR* dir = opendir("/proc/self/task");
  while (dirent* e = readdir(dir)) n += e->d_name[0] >= '0' && e->d_name[0] <= '9';
  closedir(dir);
  return n;
}

// POSIX timers of the process as the kernel lists them (-1 if /proc/self/timers is not available).
long count_kernel_timers() {
  std::ifstream in("/proc/self/timers");
  if (!in) return -1;
  long n = 0;
  std::string line;
  while (std::getline(in, line)) n += line.compare(0, 3, "ID:") == 0;
  return n;
}

pid_t gettid_now() { return pid_t(syscall(SYS_gettid)); }

void wait_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

}  // namespace

// Distinct frames for the tests below (outside the anonymous namespace: plain names in the profile).
__attribute__((noinline)) void sampler_short_thread_work(double seconds) {
  burn_cpu(seconds);
  asm volatile("" ::: "memory");  // not a tail call: this frame stays on the stack
}
__attribute__((noinline)) void sampler_phase_a(double seconds) {
  burn_cpu(seconds);
  asm volatile("" ::: "memory");  // not a tail call: this frame stays on the stack
}
__attribute__((noinline)) void sampler_phase_b(double seconds) {
  burn_cpu(seconds);
  asm volatile("" ::: "memory");  // not a tail call: this frame stays on the stack
}

TEST_CASE("sampler threads: threads shorter than a rescan are accounted (Config::short_lived_threads)") {
  std::string release;
  if (!pyroscope::detail::sampler_kernel_signals_running_thread(&release)) {
    MESSAGE("skipped: kernel " << release << " sends a process timer's signal to the main thread (Linux >= 6.3 needed)");
    return;
  }
  const std::string path = fresh_path("short");
  pyroscope::Config config = test_config("short", path);
  config.sample_rate_hz = 100;
  config.short_lived_threads = true;
  REQUIRE(pyroscope::start(config).ok());
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  REQUIRE(before.process_timer == 1);
  // 200 threads of 20 ms of CPU each, two at a time: each lives far less than a rescan (100 ms), so
  // almost none gets a timer of its own.
  constexpr int kThreads = 200;
  std::atomic<uint64_t> cpu_ns{0};
  for (int i = 0; i < kThreads; i += 2) {
    std::thread pair[2];
    for (std::thread& t : pair) {
      t = std::thread([&] {
        const double start = thread_cpu_seconds();
        sampler_short_thread_work(0.020);
        cpu_ns += uint64_t((thread_cpu_seconds() - start) * 1e9);
      });
    }
    for (std::thread& t : pair) t.join();
  }
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::stop().ok());
  const pyroscope::Tree tree = query_file(path, "short{}").tree;
  const double accounted_s = double(total_under(tree, "sampler_short_thread_work(double)")) / config.sample_rate_hz;
  const double share = accounted_s / (double(cpu_ns.load()) * 1e-9);
  MESSAGE(kThreads << " threads of 20 ms: " << cpu_ns.load() / 1000000 << " ms of CPU, " << accounted_s * 1000
                   << " ms accounted (" << share * 100 << " %); process-wide timer samples "
                   << after.process_samples - before.process_samples << ", skipped "
                   << after.process_skipped - before.process_skipped << ", timers created "
                   << after.timers_created - before.timers_created << "; file total " << tree.total()
                   << " samples, incomplete " << total_under(tree, "[incomplete]"));
  // Without the process-wide timer this reads 17-25 % (bench_threads). On a loaded machine a thread
  // whose own timer the agent armed mid-life loses the periods after its last sample when it exits
  // (the kernel checks CPU timers at ticks that find the thread running): 83-93 % at load 7.
  CHECK(after.process_samples > before.process_samples);
  CHECK(share >= 0.70);
  CHECK(share <= 1.15);  // nothing counted twice
}

TEST_CASE("sampler threads: a thread with its own timer is not counted twice by the process-wide timer") {
  // The main thread exists before start(): the first rescan gives it a timer, and the process-wide
  // timer's signals that land on it are dropped. Counted twice, 1 s of CPU would read ~200 samples.
  const std::string path = fresh_path("once");
  pyroscope::Config config = test_config("once", path);
  config.sample_rate_hz = 100;
  config.short_lived_threads = true;
  REQUIRE(pyroscope::start(config).ok());
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  const double start = thread_cpu_seconds();
  sampler_short_thread_work(1.0);
  const double cpu = thread_cpu_seconds() - start;
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::stop().ok());
  const double samples = double(total_under(query_file(path, "once{}").tree, "sampler_short_thread_work(double)"));
  MESSAGE(cpu << " s of CPU: " << samples << " samples at 100 Hz; process-wide timer signals dropped "
              << after.process_skipped - before.process_skipped << ", taken "
              << after.process_samples - before.process_samples);
  CHECK(samples >= 70 * cpu);
  CHECK(samples <= 130 * cpu);
  if (after.process_timer == 1) CHECK(after.process_skipped > before.process_skipped);
}

TEST_CASE("sampler threads: a workload periodic at the sampling rate is not aliased (timer jitter)") {
  const std::string path = fresh_path("alias");
  pyroscope::Config config = test_config("alias", path);
  config.sample_rate_hz = 100;
  REQUIRE(pyroscope::start(config).ok());
  // A thread alternates 5 ms of CPU in phase A and 5 ms in phase B: a period of exactly the timers'
  // 10 ms. With fixed intervals every sample falls at the same phase, and the profile reads close to
  // all A or all B; jittered expiries read the true 50/50.
  //
  // The thread runs under SCHED_FIFO when the test may set it (root, or CAP_SYS_NICE; the kernel's RT
  // throttling still leaves other tasks 5 % of that CPU). Under contention a thread's CPU time grows in
  // slices that begin and end at the scheduler's ticks, so the phase a sample can see is fixed by the
  // tick grid whatever the timer does: with two busy loops beside a parallel test run this read 68.5 %
  // (issue 18). That is the kernel's CPU-time accounting (docs/sampler.md, "Timer"), not what jitter is
  // for; uncontended, the test sees what jitter does.
  std::atomic<uint64_t> a_ns{0}, b_ns{0};
  std::atomic<bool> realtime{false};
  std::thread worker([&] {
    sched_param param{};
    param.sched_priority = 1;
    realtime = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
    const double end = thread_cpu_seconds() + 10.0;
    double a = 0, b = 0;
    while (thread_cpu_seconds() < end) {
      double t0 = thread_cpu_seconds();
      sampler_phase_a(0.005);
      double t1 = thread_cpu_seconds();
      sampler_phase_b(0.005);
      a += t1 - t0;
      b += thread_cpu_seconds() - t1;
    }
    a_ns += uint64_t(a * 1e9);
    b_ns += uint64_t(b * 1e9);
  });
  worker.join();
  REQUIRE(pyroscope::stop().ok());
  const pyroscope::Tree tree = query_file(path, "alias{}").tree;
  const double a = double(total_under(tree, "sampler_phase_a(double)"));
  const double b = double(total_under(tree, "sampler_phase_b(double)"));
  const double truth = double(a_ns.load()) / double(a_ns.load() + b_ns.load());
  MESSAGE("phase A: " << a << " samples, B: " << b << " samples: A reads " << 100 * a / (a + b) << " %, truth "
                      << 100 * truth << " %; the thread ran " << std::string(realtime ? "under SCHED_FIFO" : "as any thread (SCHED_FIFO refused)"));
  REQUIRE(a + b > 700);
  // 1,000 samples: the binomial standard deviation is 1.6 points, and 7 points are 4.4 of them. With
  // 600 samples (6 s) a 7-point miss was 3.5 deviations, and one CI run of the ASan build read 57.2 %
  // (issue 18). The kernel fires CPU timers at its ticks (4 ms at CONFIG_HZ=250), which quantizes the
  // phase a sample can fall at: jittered expiries read 45-55 % here; fixed intervals read 17-67 %
  // (bench_threads).
  CHECK(std::abs(a / (a + b) - truth) < 0.07);
}

TEST_CASE("sampler threads: threads created after start() are sampled") {
  const std::string path = fresh_path("late");
  REQUIRE(pyroscope::start(test_config("late", path)).ok());
  wait_ms(300);  // several rescans happen before the thread exists
  std::thread late([] {
    pyroscope::tag_scope scope("thread", "late");
    burn_cpu(0.4);
  });
  late.join();
  REQUIRE(pyroscope::stop().ok());
  const uint64_t samples = query_file(path, "late{thread=\"late\"}").tree.total();
  MESSAGE("late thread samples: " << samples << " (0.4 s of CPU at 250 Hz: about 100)");
  CHECK(samples > 50);
}

TEST_CASE("sampler threads: short-lived threads do not leak timers") {
  const std::string path = fresh_path("churn");
  REQUIRE(pyroscope::start(test_config("churn", path)).ok());
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  const long kernel_timers_before = count_kernel_timers();
  constexpr int kRounds = 6, kThreads = 16;
  for (int round = 0; round < kRounds; round++) {
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++) {
      threads.emplace_back([] {
        burn_cpu(0.002);
        wait_ms(250);  // alive across at least one rescan, so it gets a timer
      });
    }
    for (std::thread& t : threads) t.join();
  }
  wait_ms(400);  // rescans notice the exited threads
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  const size_t live_threads = count_threads() - 1;  // minus the agent
  MESSAGE("timers created " << after.timers_created - before.timers_created << ", deleted "
                            << after.timers_deleted - before.timers_deleted << ", armed " << after.timers_armed
                            << ", live application threads " << live_threads << ", kernel timers "
                            << count_kernel_timers() << " (before the churn " << kernel_timers_before << ")");
  CHECK(after.timers_created - before.timers_created >= kRounds * kThreads / 2);
  CHECK(after.timers_armed == live_threads);
  // Plus the process-wide timer, where the kernel has it (threads younger than a rescan).
  if (count_kernel_timers() >= 0) CHECK(count_kernel_timers() == long(after.timers_armed + after.process_timer));
  REQUIRE(pyroscope::stop().ok());
  CHECK(pyroscope::detail::sampler_stats().timers_armed == 0);
  if (count_kernel_timers() >= 0) CHECK(count_kernel_timers() == 0);
}

TEST_CASE("sampler threads: tag scopes on many threads while sampling") {
  const std::string path = fresh_path("manytags");
  REQUIRE(pyroscope::start(test_config("manytags", path)).ok());
  std::vector<std::thread> threads;
  static const char* kValues[] = {"a", "b", "c", "d"};
  for (int t = 0; t < 6; t++) {
    threads.emplace_back([t] {
      const double end = thread_cpu_seconds() + 0.25;
      int i = 0;
      while (thread_cpu_seconds() < end) {
        pyroscope::tag_scope outer("worker", kValues[t % 4]);
        pyroscope::tag_scope inner("step", kValues[i++ % 4]);
        pyroscope::tag_wrapper({{"phase", kValues[(i / 4) % 4]}}, [] { burn_cpu(0.001); });
      }
    });
  }
  for (std::thread& t : threads) t.join();
  REQUIRE(pyroscope::stop().ok());
  pyroscope::Dataset data;
  REQUIRE(data.add_file(path).ok());
  const std::vector<pyroscope::SeriesKey> series = data.series(pyroscope::Selector{});
  MESSAGE(series.size() << " series");
  CHECK(series.size() > 4);
  CHECK(series.size() <= 4 * 4 * 4 + 4 * 4 + 4 + 1);
  for (const pyroscope::SeriesKey& key : series) {
    for (const pyroscope::Tag& tag : key.tags) {
      const bool known = tag.key == "worker" || tag.key == "step" || tag.key == "phase";
      CHECK_MESSAGE(known, key.to_string());
    }
  }
  CHECK(query_file(path, "manytags{phase=~\"[abcd]\"}").tree.total() > 50);
}

TEST_CASE("sampler threads: blocking syscalls survive signals (read, accept, condition variable, nanosleep)") {
  const std::string path = fresh_path("syscalls");
  REQUIRE(pyroscope::start(test_config("syscalls", path)).ok());
  std::atomic<bool> stop_burning{false};
  // Real timer samples meanwhile. The burner runs until it is told to stop AND the sampler has taken a
  // sample: on a loaded machine the agent may give a new thread its timer only after the blocking part
  // is over (the check below needs samples, not a fixed amount of work).
  const uint64_t samples_before = pyroscope::detail::sampler_stats().samples;
  std::thread burner([&] {
    const double cpu_limit = thread_cpu_seconds() + 30;
    while ((!stop_burning.load() || pyroscope::detail::sampler_stats().samples == samples_before) &&
           thread_cpu_seconds() < cpu_limit)
      burn_cpu(0.01);
  });

  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  sockaddr_in address;
  const int listener = listen_on_loopback(4, &address);

  std::atomic<pid_t> reader_tid{0}, acceptor_tid{0}, waiter_tid{0}, sleeper_tid{0};
  std::atomic<ssize_t> read_result{-2};
  std::atomic<int> read_errno{0}, accept_result{-2}, accept_errno{0};
  std::atomic<bool> waited_ok{false};
  std::atomic<double> slept_seconds{0};
  std::mutex mutex;
  std::condition_variable condition;
  bool ready = false;

  std::thread reader([&] {
    reader_tid = gettid_now();
    char buffer[16];
    const ssize_t n = read(pipe_fds[0], buffer, sizeof buffer);  // one call: no EINTR retry here
    read_errno = errno;
    read_result = n;
  });
  std::thread acceptor([&] {
    acceptor_tid = gettid_now();
    const int fd = accept(listener, nullptr, nullptr);  // one call: SA_RESTART must restart it
    accept_errno = errno;
    accept_result = fd;
    if (fd >= 0) close(fd);
  });
  std::thread waiter([&] {
    waiter_tid = gettid_now();
    std::unique_lock<std::mutex> lock(mutex);
    waited_ok = condition.wait_for(lock, std::chrono::seconds(30), [&] { return ready; });
  });
  std::thread sleeper([&] {
    sleeper_tid = gettid_now();
    const auto start = std::chrono::steady_clock::now();
    timespec request{0, 400000000}, remaining{};
    // nanosleep is never restarted (POSIX); the usual loop resumes it with the remaining time.
    while (nanosleep(&request, &remaining) == -1 && errno == EINTR) request = remaining;
    slept_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  while (!reader_tid || !acceptor_tid || !waiter_tid || !sleeper_tid) wait_ms(1);
  wait_ms(50);  // let them block

  // Signals land on the blocked threads while the profiler's handler is installed.
  const pid_t targets[] = {reader_tid, acceptor_tid, waiter_tid, sleeper_tid};
  int sent = 0;
  for (int i = 0; i < 200; i++) {
    for (pid_t tid : targets) sent += syscall(SYS_tgkill, getpid(), tid, SIGPROF) == 0;
    std::this_thread::sleep_for(std::chrono::microseconds(1000));
  }
  MESSAGE(sent << " SIGPROF signals sent to blocked threads");

  REQUIRE(write(pipe_fds[1], "hello", 5) == 5);
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  {
    std::lock_guard<std::mutex> lock(mutex);
    ready = true;
  }
  condition.notify_all();
  reader.join();
  acceptor.join();
  waiter.join();
  sleeper.join();
  stop_burning = true;
  burner.join();
  close(client);
  close(listener);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  REQUIRE(pyroscope::stop().ok());

  CHECK_MESSAGE(read_result.load() == 5, "read returned " << read_result.load() << ", errno " << read_errno.load());
  CHECK_MESSAGE(accept_result.load() >= 0, "accept returned " << accept_result.load() << ", errno " << accept_errno.load());
  CHECK(waited_ok.load());
  CHECK(slept_seconds.load() >= 0.4);
  CHECK(query_file(path, "syscalls{}").tree.total() > 0);
}

TEST_CASE("sampler threads: start/stop cycles while threads come and go") {
  const std::string path = fresh_path("cycles");
  std::atomic<bool> done{false};
  std::thread churn([&] {
    while (!done.load()) {
      std::thread t([] {
        pyroscope::tag_scope scope("kind", "churn");
        burn_cpu(0.003);
      });
      t.join();
    }
  });
  for (int cycle = 0; cycle < 5; cycle++) {
    pyroscope::Status status = pyroscope::start(test_config("cycles", path));
    REQUIRE_MESSAGE(status.ok(), status.to_string());
    burn_cpu(0.08);
    status = pyroscope::stop();
    REQUIRE_MESSAGE(status.ok(), status.to_string());
  }
  done = true;
  churn.join();
  CHECK(pyroscope::detail::sampler_stats().timers_armed == 0);
  CHECK(query_file(path, "cycles{}").tree.total() > 20);
}
