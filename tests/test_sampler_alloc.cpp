// Allocation profiling (issue 14): sampled allocations in alloc_space/alloc_objects/inuse_space/
// inuse_objects, against known truth, and the interposers' safety rules (realloc, a free on another
// thread, thread exit, fork, no recursion, every entry point). Under ASan/TSan/MSan the switch is
// refused (their runtimes own malloc): each case checks that and says so.
// pyroscope-test: timeout=180
#define PYROSCOPE_IMPLEMENTATION
#define PYROSCOPE_ALLOCATION_PROFILING
#include "sampler_test_support.hpp"

#include <doctest/doctest.h>

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace sampler_test;

// Keeps a pointer observable, so the compiler cannot drop an allocation and its free.
inline void escape(void* p) { __asm__ volatile("" : : "r"(p) : "memory"); }
inline void* escape_ptr(void* p) {
  escape(p);
  return p;
}

// True (and the case goes on) when this build interposes the allocation functions; otherwise says why.
bool interposed() {
  std::string why;
  if (pyroscope::allocation_profiling_compiled(&why)) return true;
  MESSAGE("allocation profiling not compiled into this build (" << why << "): case skipped");
#if defined(SAMPLER_TEST_ASAN) || defined(SAMPLER_TEST_TSAN)
  CHECK(why.find("Sanitizer") != std::string::npos);
#else
  FAIL("PYROSCOPE_ALLOCATION_PROFILING is defined in this test and no sanitizer is on, yet: " << why);
#endif
  return false;
}

pyroscope::Config alloc_config(const char* app, const std::string& path, size_t sample_bytes) {
  pyroscope::Config config = test_config(app, path);
  config.allocation_sample_bytes = sample_bytes;
  config.flush_interval_seconds = 1;
  return config;
}

// Total of every function whose name contains `part`, in a tree.
uint64_t function_total(const pyroscope::Tree& tree, const char* part) {
  std::vector<pyroscope::Tree::FunctionTotal> totals;
  tree.function_totals(&totals);
  uint64_t sum = 0;
  for (const auto& f : totals) {
    if (std::string(tree.symbols().name(f.symbol)).find(part) != std::string::npos) sum += f.total;
  }
  return sum;
}

pyroscope::QueryResult query_range(const std::string& path, const std::string& selector, int64_t from, int64_t until) {
  pyroscope::Dataset data;
  pyroscope::Status status = data.add_file(path);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  pyroscope::QueryResult result;
  status = data.query(selector, from, until, &result);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  return result;
}

int64_t now_s() { return pyroscope::detail::sampler_realtime_s(); }

// Sleeps until `fraction` of the way into the next wall-clock second.
void sleep_into_next_second(double fraction) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const double left = 1.0 - double(ts.tv_nsec) * 1e-9 + fraction;
  std::this_thread::sleep_for(std::chrono::duration<double>(left));
}

// --- the known-truth workload ---

constexpr size_t kFooBlock = 256;         // foo: many small blocks
constexpr size_t kBarBlock = 64 * 1024;   // bar: few large ones
constexpr size_t kSampleBytes = 4096;

__attribute__((noinline)) void foo_allocates(size_t bytes, std::vector<void*>* keep) {
  for (size_t done = 0; done < bytes; done += kFooBlock) {
    void* p = std::malloc(kFooBlock);
    escape(p);
    if (keep != nullptr) keep->push_back(p);
    else std::free(p);
  }
}

__attribute__((noinline)) void bar_allocates(size_t bytes, std::vector<void*>* keep) {
  for (size_t done = 0; done < bytes; done += kBarBlock) {
    void* p = std::malloc(kBarBlock);
    escape(p);
    if (keep != nullptr) keep->push_back(p);
    else std::free(p);
  }
}

}  // namespace

TEST_CASE("alloc: Config.allocation_sample_bytes is validated") {
  pyroscope::Config config = test_config("allocconfig", fresh_path("alloc-config"));
  config.allocation_sample_bytes = (size_t(1) << 40) + 1;
  const pyroscope::Status status = pyroscope::start(config);
  CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(status.message().find("allocation_sample_bytes") != std::string::npos);
  CHECK_FALSE(pyroscope::is_running());
}

TEST_CASE("alloc: alloc_space and alloc_objects estimate the real bytes and objects (75 % foo, 25 % bar)") {
  if (!interposed()) return;
  const std::string path = fresh_path("alloc-truth");
  REQUIRE(pyroscope::start(alloc_config("alloctruth", path, kSampleBytes)).ok());
  const size_t foo_bytes = size_t(150) << 20, bar_bytes = size_t(50) << 20;
  // Interleaved in slices, so both see the same conditions.
  for (int slice = 0; slice < 50; slice++) {
    foo_allocates(foo_bytes / 50, nullptr);
    bar_allocates(bar_bytes / 50, nullptr);
  }
  REQUIRE(pyroscope::stop().ok());

  const pyroscope::QueryResult space = query_file(path, "alloctruth.alloc_space{}");
  const pyroscope::QueryResult objects = query_file(path, "alloctruth.alloc_objects{}");
  CHECK(space.info.unit == "bytes");
  CHECK(space.info.aggregation == pyroscope::Aggregation::sum);
  CHECK(objects.info.unit == "objects");
  const double foo_space = double(function_total(space.tree, "foo_allocates"));
  const double bar_space = double(function_total(space.tree, "bar_allocates"));
  const double foo_objects = double(function_total(objects.tree, "foo_allocates"));
  const double bar_objects = double(function_total(objects.tree, "bar_allocates"));
  const double real_foo_objects = double(foo_bytes / kFooBlock), real_bar_objects = double(bar_bytes / kBarBlock);
  const double foo_share = foo_space / (foo_space + bar_space);
  const double foo_object_share = foo_objects / (foo_objects + bar_objects);
  const double real_object_share = real_foo_objects / (real_foo_objects + real_bar_objects);
  MESSAGE("alloc_space: foo " << foo_space / double(1 << 20) << " MiB (real 150), bar " << bar_space / double(1 << 20)
                              << " MiB (real 50); foo's share " << 100 * foo_share << " % (real 75 %)");
  MESSAGE("alloc_objects: foo " << foo_objects << " (real " << real_foo_objects << "), bar " << bar_objects << " (real "
                                << real_bar_objects << "); foo's share " << 100 * foo_object_share << " % (real "
                                << 100 * real_object_share << " %)");
  // About (150 + 50) MiB / 4 KiB = 51200 samples: the share's standard deviation is ~0.2 points and a
  // count of foo's objects (~38400 samples) is within 0.5 % (1 sd); the bounds are > 5 sd.
  CHECK(std::fabs(foo_share - 0.75) <= 0.03);
  CHECK(std::fabs(foo_object_share - real_object_share) <= 0.03);
  CHECK(std::fabs(foo_objects / real_foo_objects - 1) <= 0.03);
  CHECK(std::fabs(foo_space / double(foo_bytes) - 1) <= 0.03);
  // bar's 64 KiB blocks are sampled with probability 1 - e^-16: every one, each counted once.
  CHECK(std::fabs(bar_objects / real_bar_objects - 1) <= 0.01);
  CHECK(std::fabs(bar_space / double(bar_bytes) - 1) <= 0.01);
}

TEST_CASE("alloc: each allocation is sampled with probability 1 - exp(-size/mean)") {
  if (!interposed()) return;
  REQUIRE(pyroscope::start(alloc_config("allocrate", fresh_path("alloc-rate"), kSampleBytes)).ok());
  const pyroscope::detail::AllocStats before = pyroscope::detail::alloc_stats();
  const size_t count = 400000;
  foo_allocates(count * kFooBlock, nullptr);
  const pyroscope::detail::AllocStats after = pyroscope::detail::alloc_stats();
  REQUIRE(pyroscope::stop().ok());
  const double p = -std::expm1(-double(kFooBlock) / double(kSampleBytes));
  const double expected = double(count) * p, sd = std::sqrt(double(count) * p * (1 - p));
  const double sampled = double(after.sampled - before.sampled);
  MESSAGE("sampled " << sampled << " of " << count << " allocations of " << kFooBlock << " bytes; expected "
                     << expected << " +- " << sd << " (1 sd)");
  CHECK(std::fabs(sampled - expected) <= 5 * sd);
}

TEST_CASE("alloc: static and dynamic tags apply as for cpu") {
  if (!interposed()) return;
  const std::string path = fresh_path("alloc-tags");
  pyroscope::Config config = alloc_config("alloctags", path, kSampleBytes);
  config.tags = {{"region", "eu-north"}};
  REQUIRE(pyroscope::start(config).ok());
  {
    pyroscope::tag_scope scope{"vehicle", "car"};
    bar_allocates(size_t(4) << 20, nullptr);
  }
  foo_allocates(size_t(4) << 20, nullptr);
  REQUIRE(pyroscope::stop().ok());
  const pyroscope::QueryResult car = query_file(path, "alloctags.alloc_space{vehicle=\"car\"}");
  CHECK(std::fabs(double(function_total(car.tree, "bar_allocates")) - double(4 << 20)) <= 2);  // p = 1 - e^-16
  CHECK(function_total(car.tree, "foo_allocates") == 0);
  const pyroscope::QueryResult region = query_file(path, "alloctags.alloc_space{region=\"eu-north\"}");
  CHECK(std::fabs(double(function_total(region.tree, "bar_allocates")) - double(4 << 20)) <= 2);  // p = 1 - e^-16
  CHECK(function_total(region.tree, "foo_allocates") > 0);
}

TEST_CASE("alloc: inuse_space follows frees (bar >= 95 % once foo's blocks are freed)") {
  if (!interposed()) return;
  const std::string path = fresh_path("alloc-inuse");
  REQUIRE(pyroscope::start(alloc_config("allocinuse", path, kSampleBytes)).ok());
  std::vector<void*> foo_blocks, bar_blocks;
  // Reserved: a vector growing inside foo_allocates or bar_allocates would be their allocation too.
  foo_blocks.reserve((size_t(16) << 20) / kFooBlock);
  bar_blocks.reserve((size_t(8) << 20) / kBarBlock);
  foo_allocates(size_t(16) << 20, &foo_blocks);
  bar_allocates(size_t(8) << 20, &bar_blocks);
  const int64_t both_live = now_s() + 1;  // a whole block with both sets live
  sleep_into_next_second(0.0);
  sleep_into_next_second(0.3);
  for (void* p : foo_blocks) std::free(p);
  const int64_t foo_freed = now_s() + 1;
  sleep_into_next_second(0.0);
  sleep_into_next_second(0.3);
  REQUIRE(pyroscope::stop().ok());

  const pyroscope::QueryResult before = query_range(path, "allocinuse.inuse_space{}", both_live, both_live + 1);
  CHECK(before.info.unit == "bytes");
  CHECK(before.info.aggregation == pyroscope::Aggregation::average);
  const double foo_before = double(function_total(before.tree, "foo_allocates"));
  const double bar_before = double(function_total(before.tree, "bar_allocates"));
  const pyroscope::QueryResult after = query_range(path, "allocinuse.inuse_space{}", foo_freed, foo_freed + 1);
  const double foo_after = double(function_total(after.tree, "foo_allocates"));
  const double bar_after = double(function_total(after.tree, "bar_allocates"));
  MESSAGE("inuse_space with both live: foo " << foo_before / double(1 << 20) << " MiB (real 16), bar "
                                            << bar_before / double(1 << 20) << " MiB (real 8); after foo's free: foo "
                                            << foo_after / double(1 << 20) << " MiB, bar " << bar_after / double(1 << 20)
                                            << " MiB");
  // 16 MiB / 4 KiB = 4096 samples: within ~1.6 % (1 sd).
  CHECK(std::fabs(foo_before / double(size_t(16) << 20) - 1) <= 0.08);
  CHECK(std::fabs(bar_before / double(size_t(8) << 20) - 1) <= 0.01);
  REQUIRE(bar_after + foo_after > 0);
  CHECK(bar_after / (bar_after + foo_after) >= 0.95);
  const pyroscope::QueryResult inuse_objects = query_range(path, "allocinuse.inuse_objects{}", foo_freed, foo_freed + 1);
  CHECK(inuse_objects.info.unit == "objects");
  CHECK(std::fabs(double(function_total(inuse_objects.tree, "bar_allocates")) - 128) <= 1);
  for (void* p : bar_blocks) std::free(p);
}

namespace {
std::vector<void*> g_leaked;
std::vector<void*> g_steady;

__attribute__((noinline)) void leaky_step() {  // keeps every block: 1 MiB more per step
  for (int i = 0; i < 256; i++) {
    void* p = std::malloc(4096);
    escape(p);
    g_leaked.push_back(p);
  }
}
__attribute__((noinline)) void steady_step() {  // replaces its 1 MiB each step
  for (void*& p : g_steady) {
    std::free(p);
    p = std::malloc(4096);
    escape(p);
  }
}
}  // namespace

TEST_CASE("alloc: a leak is a rising inuse_space line, a steady function a flat one") {
  if (!interposed()) return;
  const std::string path = fresh_path("alloc-leak");
  g_leaked.reserve(8 * 256);
  g_steady.assign(256, nullptr);
  REQUIRE(pyroscope::start(alloc_config("allocleak", path, kSampleBytes)).ok());
  // One step per block, the next one only after the agent wrote the block (on a loaded machine it can
  // be late by more than the rest of a second): block k's snapshot holds exactly k + 1 steps.
  const int steps = 5;
  std::vector<int64_t> blocks;
  for (int step = 0; step < steps; step++) {
    leaky_step();
    steady_step();
    blocks.push_back(now_s());  // read after the step: the block it is in, or a later one
    while (now_s() == blocks.back()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const uint64_t written = pyroscope::detail::sampler_stats().blocks_written;
    while (pyroscope::detail::sampler_stats().blocks_written == written)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(pyroscope::stop().ok());
  std::vector<double> leaky, steady;
  for (int64_t block : blocks) {
    const pyroscope::QueryResult r = query_range(path, "allocleak.inuse_space{}", block, block + 1);
    leaky.push_back(double(function_total(r.tree, "leaky_step")) / double(1 << 20));
    steady.push_back(double(function_total(r.tree, "steady_step")) / double(1 << 20));
  }
  std::string line;
  for (size_t i = 0; i < leaky.size(); i++)
    line += " [" + std::to_string(leaky[i]) + " / " + std::to_string(steady[i]) + "]";
  MESSAGE("inuse_space per block, MiB [leaky / steady]:" << line);
  // 1 MiB = 256 samples per step: each estimate within ~6 % (1 sd).
  for (size_t i = 0; i < leaky.size(); i++) {
    CHECK(std::fabs(leaky[i] - double(i + 1)) <= 0.35 * std::sqrt(double(i + 1)));
    if (i > 0) CHECK(leaky[i] > leaky[i - 1] + 0.5);
    CHECK(std::fabs(steady[i] - 1.0) <= 0.35);
  }
  for (void* p : g_leaked) std::free(p);
  for (void* p : g_steady) std::free(p);
  g_leaked.clear();
  g_steady.clear();
}

TEST_CASE("alloc: realloc moving a sampled block moves its record; a failed realloc keeps it") {
  if (!interposed()) return;
  using pyroscope::detail::alloc_is_live;
  REQUIRE(pyroscope::start(alloc_config("allocrealloc", fresh_path("alloc-realloc"), 1)).ok());
  for (int round = 0; round < 200; round++) {
    void* small = std::malloc(64);
    escape(small);
    REQUIRE(alloc_is_live(small));  // 64 bytes at a mean of 1 byte: sampled with probability 1 - e^-64
    void* guard = std::malloc(64);  // keeps the block from growing in place
    escape(guard);
    void* big = std::realloc(small, size_t(1) << 20);
    REQUIRE(big != nullptr);
    escape(big);
    CHECK(alloc_is_live(big));
    if (big != small) CHECK_FALSE(alloc_is_live(small));
    // A realloc that fails leaves the block, and its record, where they were.
    void* failed = std::realloc(big, ~size_t(0) / 2);
    CHECK(failed == nullptr);
    CHECK(alloc_is_live(big));
    std::free(big);
    CHECK_FALSE(alloc_is_live(big));
    std::free(guard);
  }
  REQUIRE(pyroscope::stop().ok());
}

TEST_CASE("alloc: a block freed on another thread, and threads that exit, leave no record behind") {
  if (!interposed()) return;
  using pyroscope::detail::alloc_is_live;
  REQUIRE(pyroscope::start(alloc_config("allocthreads", fresh_path("alloc-threads"), 1)).ok());
  const uint64_t live_before = pyroscope::detail::alloc_stats().live;
  std::vector<void*> handed;
  std::thread producer([&] {
    for (int i = 0; i < 2000; i++) {
      void* p = std::malloc(128);
      escape(p);
      handed.push_back(p);
    }
  });
  producer.join();  // it has exited: its blocks outlive it
  size_t live = 0;
  for (void* p : handed) live += alloc_is_live(p) ? 1 : 0;
  CHECK(live == handed.size());
  std::thread consumer([&] {
    for (void* p : handed) std::free(p);
  });
  consumer.join();
  for (void* p : handed) CHECK_FALSE(alloc_is_live(p));
  // Short-lived threads that allocate until the end, with thread_local destructors that free.
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; t++) {
    threads.emplace_back([] {
      thread_local std::vector<std::string> strings;
      for (int i = 0; i < 200; i++) strings.push_back(std::string(100 + i, 'x'));
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(pyroscope::detail::alloc_stats().live <= live_before + 16);  // the thread runtime's own blocks at most
  REQUIRE(pyroscope::stop().ok());
}

TEST_CASE("alloc: start() and stop() while other threads allocate and free") {
  if (!interposed()) return;
  std::atomic<bool> done{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; t++) {
    workers.emplace_back([&done, t] {
      std::vector<void*> ring(64, nullptr);
      size_t i = 0;
      while (!done.load(std::memory_order_relaxed)) {
        void*& slot = ring[i++ % ring.size()];
        std::free(slot);
        slot = (i % 3 == 0) ? ::operator new(100 + t) : std::malloc(200 + i % 1000);
        escape(slot);
        if (i % 3 == 0) {
          ::operator delete(slot);
          slot = nullptr;
        }
      }
      for (void* p : ring) std::free(p);
    });
  }
  for (int round = 0; round < 6; round++) {
    REQUIRE(pyroscope::start(alloc_config("allocstartstop", fresh_path("alloc-startstop"), 512)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    REQUIRE(pyroscope::stop().ok());
  }
  done = true;
  for (auto& worker : workers) worker.join();
  CHECK(pyroscope::detail::alloc_stats().sampled > 0);
}

TEST_CASE("alloc: fork while sampling: the child allocates and frees freely and may start its own profiler") {
  if (!interposed()) return;
  const std::string parent_path = fresh_path("alloc-fork-parent");
  const std::string child_path = fresh_path("alloc-fork-child");
  REQUIRE(pyroscope::start(alloc_config("allocforkparent", parent_path, 64)).ok());
  std::atomic<bool> done{false};
  std::thread busy([&] {  // another thread is inside malloc/free (and sampling) at the fork
    while (!done.load(std::memory_order_relaxed)) {
      void* p = std::malloc(1000);
      escape(p);
      std::free(p);
    }
  });
  std::vector<void*> parents(100);
  for (void*& p : parents) {
    p = std::malloc(4096);
    escape(p);
  }
  for (int child = 0; child < 5; child++) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Blocks the parent sampled, freed in the child; new ones; then a profiler of its own.
      for (void* p : parents) std::free(p);
      for (int i = 0; i < 1000; i++) {
        void* p = std::malloc(512);
        escape(p);
        std::free(p);
      }
#if defined(SAMPLER_TEST_TSAN)
      _exit(0);
#endif
      if (child == 0) {
        if (!pyroscope::start(alloc_config("allocforkchild", child_path, 64)).ok()) _exit(13);
        foo_allocates(size_t(1) << 20, nullptr);
        if (!pyroscope::stop().ok()) _exit(14);
        pyroscope::Dataset data;
        if (!data.add_file(child_path).ok()) _exit(15);
        pyroscope::QueryResult r;
        const pyroscope::TimeRange span = data.time_span();
        if (!data.query("allocforkchild.alloc_space{}", span.from, span.until, &r).ok()) _exit(16);
        if (function_total(r.tree, "foo_allocates") == 0) _exit(17);
      }
      _exit(0);
    }
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    pid_t waited = 0;
    while ((waited = waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (waited == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL("fork child " << child << " hung");
    }
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  done = true;
  busy.join();
  for (void* p : parents) std::free(p);
  REQUIRE(pyroscope::stop().ok());
}

namespace {
// Every allocation entry point, with sizes sampled for sure at a mean of 1 byte.
__attribute__((noinline)) void call_every_entry() {
  void* p;
  escape(p = std::malloc(64));
  std::free(p);
  escape(p = std::calloc(4, 16));
  std::free(p);
  escape(p = std::malloc(64));
  escape(p = std::realloc(p, 4096));
  std::free(p);
  REQUIRE(posix_memalign(&p, 64, 64) == 0);
  escape(p);
  std::free(p);
  escape(p = aligned_alloc(64, 128));
  std::free(p);
  escape(p = memalign(64, 64));
  std::free(p);
  escape(p = valloc(64));
  std::free(p);
  escape(p = pvalloc(64));
  std::free(p);
  const std::align_val_t a{64};
  escape(p = ::operator new(64));
  ::operator delete(p);
  escape(p = ::operator new[](64));
  ::operator delete[](p);
  escape(p = ::operator new(64, std::nothrow));
  ::operator delete(p, std::nothrow);
  escape(p = ::operator new[](64, std::nothrow));
  ::operator delete[](p, std::nothrow);
  escape(p = ::operator new(64));
  ::operator delete(p, size_t(64));
  escape(p = ::operator new[](64));
  ::operator delete[](p, size_t(64));
  escape(p = ::operator new(64, a));
  ::operator delete(p, a);
  escape(p = ::operator new[](64, a));
  ::operator delete[](p, a);
  escape(p = ::operator new(64, a, std::nothrow));
  ::operator delete(p, size_t(64), a);
  escape(p = ::operator new[](64, a, std::nothrow));
  ::operator delete[](p, size_t(64), a);
  escape(p = ::operator new(64, a));
  ::operator delete(p, a, std::nothrow);
  escape(p = ::operator new[](64, a));
  ::operator delete[](p, a, std::nothrow);
}
}  // namespace

// The allocation path reads nothing but the thread's countdown (docs/memory.md): a thread that was
// allocating before start() sees the session within kAllocationIdleRecheckBytes, the starting thread
// at once, and the profiler's own allocations leave the countdown where it was.
TEST_CASE("alloc: a session reaches the starting thread at once and the others within 64 KiB") {
  if (!interposed()) return;
  using namespace pyroscope::detail;
  REQUIRE(kAllocationIdleRecheckBytes == 64 * 1024);
  std::mutex mutex;
  std::condition_variable changed;
  int phase = 0;  // 1: the other thread allocated idle; 2: the session started; 3: it allocated again
  uint64_t other_sampled = 0;
  std::thread other([&] {
    for (int i = 0; i < 1000; i++) std::free(escape_ptr(std::malloc(1000)));  // idle: a recheck interval
    const int64_t idle_countdown = g_alloc_thread.countdown;
    CHECK(idle_countdown >= 0);
    CHECK(idle_countdown <= kAllocationIdleRecheckBytes);
    CHECK(g_alloc_thread.mean == 0);
    {
      std::unique_lock<std::mutex> lock(mutex);
      phase = 1;
      changed.notify_all();
      changed.wait(lock, [&] { return phase == 2; });
    }
    // A mean of 1 byte samples every allocation once the session is seen: at most 65 of these 200
    // blocks of 1 KiB go by before (64 KiB, and the one that crosses is sampled).
    const uint64_t before = alloc_stats().sampled;
    for (int i = 0; i < 200; i++) std::free(escape_ptr(std::malloc(1024)));
    other_sampled = alloc_stats().sampled - before;
    CHECK(g_alloc_thread.mean == 1);
    std::lock_guard<std::mutex> lock(mutex);
    phase = 3;
    changed.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return phase == 1; });
  }
  for (int i = 0; i < 1000; i++) std::free(escape_ptr(std::malloc(1000)));  // the main thread idle too
  const int64_t countdown_before_start = g_alloc_thread.countdown;
  CHECK(countdown_before_start <= kAllocationIdleRecheckBytes);
  REQUIRE(pyroscope::start(alloc_config("allocreach", fresh_path("alloc-reach"), 1)).ok());
  CHECK(g_alloc_thread.guard == 0);
  CHECK(g_alloc_thread.countdown == 0);  // start()'s own allocations (hundreds of KiB) moved nothing
  void* first = std::malloc(16);  // the starting thread's next allocation is sampled
  CHECK(alloc_is_live(first));
  std::free(first);
  {
    AllocGuard guard;  // the profiler's own code: its allocations neither sampled nor counted down
    const int64_t held = g_alloc_thread.countdown;
    CHECK(held == INT64_MAX);
    void* own = std::malloc(4096);
    CHECK(!alloc_is_live(own));
    std::free(own);
  }
  const int64_t after_guard = g_alloc_thread.countdown;
  CHECK(after_guard >= 0);
  CHECK(after_guard < INT64_MAX);
  {
    std::unique_lock<std::mutex> lock(mutex);
    phase = 2;
    changed.notify_all();
    changed.wait(lock, [&] { return phase == 3; });
  }
  other.join();
  REQUIRE(pyroscope::stop().ok());
  MESSAGE("the other thread's 200 allocations of 1 KiB after start(): " << other_sampled << " sampled");
  CHECK(other_sampled >= 200 - 65);
  CHECK(other_sampled <= 200);
  // After stop(), a thread's next crossing finds no session and goes back to the idle interval.
  for (int i = 0; i < 200; i++) std::free(escape_ptr(std::malloc(1024)));
  CHECK(g_alloc_thread.mean == 0);
  CHECK(g_alloc_thread.countdown <= kAllocationIdleRecheckBytes);
}

TEST_CASE("alloc: every interposed entry point is reached, and the profiler's own allocations are not sampled") {
  if (!interposed()) return;
  using namespace pyroscope::detail;
  const std::string path = fresh_path("alloc-entries");
  const AllocStats before = alloc_stats();
  REQUIRE(pyroscope::start(alloc_config("allocentries", path, 1)).ok());
  for (int i = 0; i < 20; i++) call_every_entry();
  // The agent allocates as it drains, symbolizes and writes (a 1 s block passes meanwhile).
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  REQUIRE(pyroscope::stop().ok());
  const AllocStats after = alloc_stats();
  static const char* const names[kAllocEntries] = {
      "malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc",
      "new", "new[]", "new nothrow", "new[] nothrow", "new aligned", "new[] aligned", "new aligned nothrow",
      "new[] aligned nothrow", "free", "delete", "delete[]", "delete nothrow", "delete[] nothrow", "delete sized",
      "delete[] sized", "delete aligned", "delete[] aligned", "delete sized aligned", "delete[] sized aligned",
      "delete aligned nothrow", "delete[] aligned nothrow"};
  for (int e = 0; e < kAllocEntries; e++) {
    CAPTURE(names[e]);
    CHECK(after.by_entry[e] - before.by_entry[e] >= 20);
  }
  // No sampled stack goes through the profiler (its threads and start/stop are not sampled) or shows
  // the interposers themselves (the stack starts at the allocation function's caller).
  const pyroscope::QueryResult r = query_file(path, "allocentries.alloc_objects{}");
  CHECK(function_total(r.tree, "call_every_entry") > 0);
  std::vector<pyroscope::Tree::FunctionTotal> totals;
  r.tree.function_totals(&totals);
  for (const auto& f : totals) {
    const std::string name(r.tree.symbols().name(f.symbol));
    CAPTURE(name);
    CHECK(name.find("pyroscope::") == std::string::npos);
    CHECK(name != "malloc");
    CHECK(name.rfind("operator new", 0) == std::string::npos);
  }
}
