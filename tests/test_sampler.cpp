// Sampler, tags and symbolizer (issue 3): shares of a known workload, stacks of -O2 code without frame
// pointers, series per tag set, start/stop/start, SIGPROF coexistence, config errors, ELF robustness.
// pyroscope-test: serial timeout=240 group=internals
#define PYROSCOPE_IMPLEMENTATION
#include "sampler_test_support.hpp"

#include <doctest/doctest.h>

#include <dlfcn.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace sampler_test;

// Samples in nodes named `child...` whose parent is named `parent...`.
uint64_t total_of_edge(const pyroscope::Tree& tree, std::string_view parent, std::string_view child) {
  uint64_t total = 0;
  for (uint32_t n = 1; n < tree.node_count(); n++) {
    const uint32_t p = tree.parent(n);
    if (p == pyroscope::Tree::kRoot || p == pyroscope::Tree::kNoNode) continue;
    if (tree.name(n).substr(0, child.size()) == child && tree.name(p).substr(0, parent.size()) == parent)
      total += tree.node_total(n);
  }
  return total;
}

}  // namespace

// The workload. noinline + an empty asm after each call: no inlining and no tail calls, so foo and bar
// keep frames of their own at -O2. The file is built -O2 without frame pointers (RelWithDebInfo on
// x86-64 GCC); the rbp test below makes the absence of a usable frame-pointer chain certain.
extern "C++" {
std::atomic<uint64_t> g_sampler_test_sink{0};  // keeps the work observable; atomic for TSan

__attribute__((noinline)) void sampler_test_burn(long iterations) {
  uint64_t x = g_sampler_test_sink.load(std::memory_order_relaxed);
  for (long i = 0; i < iterations; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
  g_sampler_test_sink.store(x, std::memory_order_relaxed);
}
__attribute__((noinline)) void sampler_test_foo(long unit) {
  sampler_test_burn(3 * unit);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void sampler_test_bar(long unit) {
  sampler_test_burn(unit);
  asm volatile("" ::: "memory");
}
// foo does exactly three times bar's work. The unit varies randomly: the kernel checks CPU-time timers
// at its tick (4 ms here), so a loop with a fixed period would alias with the sampling and make the
// shares wander far more than counting noise.
__attribute__((noinline)) void sampler_test_foo_bar_until(double cpu_seconds) {
  const double end = thread_cpu_seconds() + cpu_seconds;
  uint64_t random = 0x9e3779b97f4a7c15ull ^ uint64_t(reinterpret_cast<uintptr_t>(&random));
  while (thread_cpu_seconds() < end) {
    for (int i = 0; i < 20; i++) {
      random ^= random << 13;
      random ^= random >> 7;
      random ^= random << 17;
      const long unit = 500 + long(random % 7500);
      sampler_test_foo(unit);
      sampler_test_bar(unit);
    }
  }
  asm volatile("" ::: "memory");
}
// A static (internal-linkage) function: only .symtab knows its name, dladdr cannot find it.
static __attribute__((noinline)) void sampler_test_static_worker(double cpu_seconds) {
  const double end = thread_cpu_seconds() + cpu_seconds;
  while (thread_cpu_seconds() < end) sampler_test_burn(8000);
  asm volatile("" ::: "memory");
}
}

#if defined(__x86_64__)
// Spins with rbp set to garbage, the CFI told about the push, so the stack is only recoverable from
// unwind tables (a frame-pointer walk would stop or wander here).
__attribute__((noinline)) void sampler_test_rbp_garbage_spin(long iterations) {
  asm volatile(
      "push %%rbp\n\t"
      ".cfi_adjust_cfa_offset 8\n\t"
      ".cfi_rel_offset %%rbp, 0\n\t"
      "mov $0x5a5a5a5a5a5a5a5a, %%rbp\n\t"
      "1:\n\t"
      "dec %0\n\t"
      "jnz 1b\n\t"
      "pop %%rbp\n\t"
      ".cfi_adjust_cfa_offset -8\n\t"
      ".cfi_restore %%rbp\n\t"
      : "+r"(iterations)
      :
      : "memory", "cc");
}
__attribute__((noinline)) void sampler_test_rbp_caller(double cpu_seconds) {
  const double end = thread_cpu_seconds() + cpu_seconds;
  while (thread_cpu_seconds() < end) sampler_test_rbp_garbage_spin(200000);
  asm volatile("" ::: "memory");
}
#endif

TEST_CASE("sampler: tag scopes nest, restore and reuse their tag-set ids") {
  using pyroscope::detail::current_thread_tags;
  using pyroscope::detail::g_thread_tag_set;
  CHECK(current_thread_tags().empty());
  uint32_t car_id = 0;
  {
    pyroscope::tag_scope vehicle("vehicle", "car");
    car_id = g_thread_tag_set.load();
    CHECK(current_thread_tags() == pyroscope::Tags{{"vehicle", "car"}});
    {
      pyroscope::tag_scope region("region", "eu");
      CHECK(current_thread_tags() == pyroscope::Tags{{"region", "eu"}, {"vehicle", "car"}});
      {
        pyroscope::tag_scope override_vehicle("vehicle", "bike");  // same key: the inner value wins
        CHECK(current_thread_tags() == pyroscope::Tags{{"region", "eu"}, {"vehicle", "bike"}});
      }
      CHECK(current_thread_tags() == pyroscope::Tags{{"region", "eu"}, {"vehicle", "car"}});
    }
    CHECK(current_thread_tags() == pyroscope::Tags{{"vehicle", "car"}});
  }
  CHECK(current_thread_tags().empty());
  CHECK(g_thread_tag_set.load() == 0);
  {
    pyroscope::tag_scope again("vehicle", "car");
    CHECK(g_thread_tag_set.load() == car_id);  // interned once, found again without allocating
  }
  const int result = pyroscope::tag_wrapper({{"k", "v"}, {"a", "b"}}, [] {
    CHECK(current_thread_tags() == pyroscope::Tags{{"a", "b"}, {"k", "v"}});
    return 42;
  });
  CHECK(result == 42);
  CHECK(current_thread_tags().empty());

  // Each thread has its own current set.
  pyroscope::tag_scope outer("thread", "main");
  std::thread other([] { CHECK(current_thread_tags().empty()); });
  other.join();
}

TEST_CASE("sampler: configuration errors name the problem") {
  pyroscope::Config config;
  pyroscope::Status status = pyroscope::start(config);
  CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(status.message().find("application_name") != std::string::npos);

  config.application_name = "bad name";
  status = pyroscope::start(config);
  CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(status.message().find("' '") != std::string::npos);

  config.application_name = "ok-app";
  config.tags = {{"region", "eu,north"}};
  status = pyroscope::start(config);
  CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(status.message().find("region") != std::string::npos);

  config.tags = {{"9lives", "x"}};
  CHECK(pyroscope::start(config).code() == pyroscope::StatusCode::invalid_argument);

  config.tags = {};
  config.sample_rate_hz = 0;
  status = pyroscope::start(config);
  CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(status.message().find("sample_rate_hz") != std::string::npos);

  config.sample_rate_hz = 100;
  config.server_address = "https://example.com";
  CHECK(pyroscope::start(config).code() == pyroscope::StatusCode::unsupported);
  config.server_address = "localhost:4040";
  status = pyroscope::start(config);
  CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(status.message().find("http://") != std::string::npos);

  config.server_address = "";
  config.output_path = "/nonexistent-dir/x.pyro";
  status = pyroscope::start(config);
  CHECK(status.code() == pyroscope::StatusCode::io_error);
  CHECK(!pyroscope::is_running());
  CHECK(pyroscope::stop().code() == pyroscope::StatusCode::not_running);
}

TEST_CASE("sampler: symbolizer resolves static functions, demangles and falls back to module+offset") {
  pyroscope::detail::Symbolizer symbolizer;
  // pcs as the handler records them: somewhere inside the function.
  CHECK(symbolizer.name_of(reinterpret_cast<uintptr_t>(&sampler_test_foo) + 1) == "sampler_test_foo(long)");
  CHECK(symbolizer.name_of(reinterpret_cast<uintptr_t>(&sampler_test_static_worker) + 2) ==
        "sampler_test_static_worker(double)");
  // A function of a shared library (libc).
  const std::string getpid_name = symbolizer.name_of(reinterpret_cast<uintptr_t>(&getpid) + 1);
  CHECK(getpid_name == "getpid");  // not its alias __getpid
  // A template member function of libstdc++ or the executable, demangled.
  CHECK(pyroscope::detail::sampler_demangle("_ZNSt6vectorIiSaIiEE9push_backERKi") ==
        "std::vector<int, std::allocator<int> >::push_back(int const&)");
  CHECK(pyroscope::detail::sampler_demangle("memcpy@@GLIBC_2.14") == "memcpy");
  CHECK(pyroscope::detail::sampler_demangle("plain_c") == "plain_c");

  // Inside the executable's mapping but in no function (its ELF header): module+offset.
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  REQUIRE(n > 0);
  std::string exe_name(exe, size_t(n));
  exe_name = exe_name.substr(exe_name.rfind('/') + 1);
  uintptr_t base = 0;
  dl_iterate_phdr([](dl_phdr_info* info, size_t, void* arg) {
    *static_cast<uintptr_t*>(arg) = info->dlpi_addr;  // the first entry is the main program
    return 1;
  }, &base);
  uintptr_t first_load = 0;
  dl_iterate_phdr([](dl_phdr_info* info, size_t, void* arg) {
    for (int i = 0; i < info->dlpi_phnum; i++) {
      if (info->dlpi_phdr[i].p_type == PT_LOAD) {
        *static_cast<uintptr_t*>(arg) = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
        break;
      }
    }
    return 1;
  }, &first_load);
  const uintptr_t header_pc = first_load + 0x10;
  char expected[64];
  std::snprintf(expected, sizeof expected, "+0x%llx", static_cast<unsigned long long>(header_pc - base));
  CHECK(symbolizer.name_of(header_pc) == exe_name + expected);
  CHECK(symbolizer.name_of(0x10).substr(0, 12) == "[unknown]+0x");
}

TEST_CASE("sampler: ELF reader survives damaged files") {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  REQUIRE(n > 0);
  std::ifstream in(std::string(exe, size_t(n)), std::ios::binary);
  std::string image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(image.size() > 4096);
  {
    pyroscope::detail::ElfFunctions whole;
    REQUIRE(whole.load_file(std::string(exe, size_t(n))));
    CHECK(whole.has_symtab());
    CHECK(whole.size() > 100);
  }
  const char* path = "damaged.elf";
  uint64_t state = 12345;
  for (int round = 0; round < 60; round++) {
    std::string damaged = image;
    if (round < 20) {
      damaged.resize(image.size() * size_t(round) / 20);  // truncated (section table cut off)
    } else {
      for (int k = 0; k < 64; k++) {  // random bytes overwritten, headers included
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const size_t at = (round % 2 == 0) ? size_t(state >> 33) % 256 : size_t(state >> 20) % damaged.size();
        damaged[at] = char(state >> 56);
      }
    }
    std::ofstream(path, std::ios::binary).write(damaged.data(), std::streamsize(damaged.size()));
    pyroscope::detail::ElfFunctions functions;
    functions.load_file(path);  // may or may not succeed; must not crash or read out of bounds
    if (functions.size() > 0) (void)functions.find(0x1000);
  }
  std::remove(path);
}

TEST_CASE("sampler: foo() 75% / bar() 25% measured within 4 standard errors, stacks right on -O2 code") {
  const std::string path = fresh_path("shares");
  pyroscope::Config config = test_config("shares", path);
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::start(config).ok());
  // Two threads work until the samples are worth 900 independent ones (about 2 s of CPU each on an idle
  // machine). Under CPU contention fewer signals carry larger weights (see
  // SamplerCounters::weight_squared), so the work goes on longer, up to 8 s of CPU per thread.
  auto effective_samples = [&] {
    const pyroscope::detail::SamplerStats now = pyroscope::detail::sampler_stats();
    const double w = double(now.weight - before.weight), w2 = double(now.weight_squared - before.weight_squared);
    return w2 > 0 ? w * w / w2 : 0.0;
  };
  std::atomic<bool> enough{false};
  std::atomic<int> finished{0};
  auto work = [&] {
    const double end = thread_cpu_seconds() + 8.0;
    while (!enough.load() && thread_cpu_seconds() < end) sampler_test_foo_bar_until(0.1);
    finished++;
  };
  std::thread a(work), b(work);
  while (!enough.load() && finished.load() < 2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (effective_samples() >= 900) enough = true;
  }
  a.join();
  b.join();
  REQUIRE(pyroscope::stop().ok());
  const double effective = effective_samples();

  const pyroscope::QueryResult result = query_file(path, "shares{}");
  const pyroscope::Tree& tree = result.tree;
  const uint64_t foo = total_under(tree, "sampler_test_foo(long)");
  const uint64_t bar = total_under(tree, "sampler_test_bar(long)");
  MESSAGE("samples: total " << tree.total() << ", foo " << foo << ", bar " << bar << ", worth " << effective
                            << " independent samples");
  REQUIRE(foo + bar > 600);
#if defined(SAMPLER_TEST_TSAN)
  // TSan delivers signals at its own interception points, not where the thread was: shares are not
  // measurable there. The sampler's machinery ran all the same.
  MESSAGE("TSan build: shares not checked");
#else
  // The weighted share's standard error is that of `effective` independent samples; four of them (5
  // points at least) leave a false failure once in 15,000 runs. The floor only makes sure the check
  // still means something: at 100 samples 4 errors are 17 points, which a wrong attribution (50/50,
  // all foo) exceeds. With two busy loops and a build beside the test, both threads used their 8 s and
  // the samples were worth 156 (issue-18 campaign; a floor of 200 failed there).
  CHECK(effective >= 100);
  const double tolerance = std::max(5.0, 4 * 100 * std::sqrt(0.75 * 0.25 / std::max(effective, 1.0)));
  const double foo_share = 100.0 * double(foo) / double(foo + bar);
  MESSAGE("foo share " << foo_share << " %, allowed 75 +- " << tolerance);
  CHECK(foo_share > 75.0 - tolerance);
  CHECK(foo_share < 75.0 + tolerance);
  // The stacks are whole: the loop function is the caller of foo and bar, which call burn.
  const uint64_t loop = total_under(tree, "sampler_test_foo_bar_until(double)");
  CHECK(loop >= (foo + bar) * 95 / 100);
  CHECK(total_of_edge(tree, "sampler_test_foo(long)", "sampler_test_burn(long)") >= foo * 90 / 100);
  CHECK(total_of_edge(tree, "sampler_test_foo_bar_until(double)", "sampler_test_foo(long)") == foo);
  // No frame of the handler or the signal trampoline is left in any stack.
  const std::string folded = tree.to_folded();
  CHECK(folded.find("sampler_on_signal") == std::string::npos);
  CHECK(folded.find("__restore_rt") == std::string::npos);
  CHECK(folded.find("_Unwind_") == std::string::npos);
#endif
}

TEST_CASE("sampler: static functions and garbage frame pointers unwind correctly") {
  const std::string path = fresh_path("unwind");
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::start(test_config("unwind", path)).ok());
  std::atomic<uint64_t> samples_in_spin{0};
  std::thread worker([&] {
    // A new thread is armed at the agent's next scan, which a starved agent makes late (issue 18: a
    // whole 0.3 s phase without a signal). What is tested here is the unwinding: first be sampled.
    run_until_sampled([] { sampler_test_static_worker(0.005); }, 2, 10.0);
    // Each phase lasts until 30 signals landed in it, not a fixed time: on a loaded machine the CPU
    // timer's signals come late and few, each weighing the CPU time since the last (issue 18: 11 signals
    // in 0.7 s gave the static phase 19 of 180 and the spin the rest).
    sampler_test_static_worker(0.1);
    run_until_sampled([] { sampler_test_static_worker(0.02); }, 30, 20.0);
#if defined(__x86_64__)
    const uint64_t at = pyroscope::detail::sampler_stats().samples;
    sampler_test_rbp_caller(0.1);
    run_until_sampled([] { sampler_test_rbp_caller(0.02); }, 30, 20.0);
    samples_in_spin = pyroscope::detail::sampler_stats().samples - at;
#endif
  });
  worker.join();
  REQUIRE(pyroscope::stop().ok());
  // For the log when a check below fails on a loaded machine (issue 18: once 0 spin samples in the file).
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  MESSAGE("samples taken " << after.samples - before.samples << " (" << samples_in_spin.load()
                           << " during the spin), drained " << after.drained - before.drained << ", dropped (ring full) "
                           << after.dropped_full - before.dropped_full << ", incomplete: no table "
                           << after.incomplete_no_table - before.incomplete_no_table << ", no rule "
                           << after.incomplete_no_rule - before.incomplete_no_rule << ", outside the stack "
                           << after.incomplete_stack - before.incomplete_stack << ", blocks written "
                           << after.blocks_written - before.blocks_written << ", weight "
                           << after.weight - before.weight << ", by the process-wide timer "
                           << after.process_samples - before.process_samples << " (skipped "
                           << after.process_skipped - before.process_skipped << ")");
  const pyroscope::Tree tree = query_file(path, "unwind{}").tree;
  const uint64_t static_worker = total_under(tree, "sampler_test_static_worker(double)");
  MESSAGE("static worker samples: " << static_worker);
  CHECK(static_worker > 20);
#if defined(__x86_64__) && !defined(SAMPLER_TEST_TSAN)
  const uint64_t spin = total_under(tree, "sampler_test_rbp_garbage_spin(long)");
  const uint64_t spin_under_caller = total_of_edge(tree, "sampler_test_rbp_caller(double)", "sampler_test_rbp_garbage_spin(long)");
  MESSAGE("rbp spin samples: " << spin << ", under its caller: " << spin_under_caller);
  CHECK(spin > 20);
  CHECK(spin_under_caller >= spin * 95 / 100);
  // And above the caller the thread's entry is still there (the walk went through the garbage rbp).
  uint64_t spin_from_thread_start = 0;
  for (uint32_t n = 1; n < tree.node_count(); n++) {
    if (tree.name(n) != "sampler_test_rbp_garbage_spin(long)") continue;
    for (uint32_t p = tree.parent(n); p != pyroscope::Tree::kRoot; p = tree.parent(p)) {
      if (tree.name(p) == "start_thread") {
        spin_from_thread_start += tree.node_total(n);
        break;
      }
    }
  }
  CHECK(spin_from_thread_start >= spin * 95 / 100);
#endif
}

#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
// Issue 18: on a loaded machine the agent can serve a handler's request for an unwind table late (seen:
// a whole 0.3 s phase of a thread in the executable unwound to its leaf only, and 0.4 s more stopped
// below libstdc++'s thread entry). start() builds the tables of the program, libc, libstdc++ and the
// vDSO before any timer is armed, so those frames unwind from the first sample whatever the agent does.
TEST_CASE("sampler: the program's, libc's and libstdc++'s frames unwind while the agent is held") {
  const std::string path = fresh_path("held");
  struct Release {
    ~Release() { pyroscope::detail::g_agent_test_stall.store(false); }
  } release;
  pyroscope::detail::g_agent_test_stall.store(true);  // held from its first wake on (the first 100 ms)
  const uint64_t built_before = pyroscope::detail::sampler_stats().tables_built;
  const auto start_began = std::chrono::steady_clock::now();
  REQUIRE(pyroscope::start(test_config("held", path)).ok());
  const double start_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_began).count();
  const uint64_t prebuilt = pyroscope::detail::sampler_stats().tables_built - built_before;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // no CPU time: no sample, no request
  const uint64_t built_at_burn = pyroscope::detail::sampler_stats().tables_built;
  sampler_test_static_worker(0.4);  // on the main thread: under doctest, main and libc's start code
  const uint64_t built_during_burn = pyroscope::detail::sampler_stats().tables_built - built_at_burn;
  pyroscope::detail::g_agent_test_stall.store(false);
  REQUIRE(pyroscope::stop().ok());
  const pyroscope::Tree tree = query_file(path, "held{}").tree;
  const uint64_t worker = total_under(tree, "sampler_test_static_worker(double)");
  uint64_t worker_from_libc = 0;
  for (uint32_t n = 1; n < tree.node_count(); n++) {
    if (tree.name(n) != "sampler_test_static_worker(double)") continue;
    for (uint32_t p = tree.parent(n); p != pyroscope::Tree::kRoot; p = tree.parent(p)) {
      if (tree.name(p) == "__libc_start_main" || tree.name(p).substr(0, 16) == "__libc_start_cal") {
        worker_from_libc += tree.node_total(n);
        break;
      }
    }
  }
  MESSAGE("start() took " << start_ms << " ms; tables built at start " << prebuilt << ", while held " << built_during_burn << "; samples "
                                   << tree.total() << ", in the static worker " << worker << ", from libc's start "
                                   << worker_from_libc << ", [incomplete] " << total_under(tree, "[incomplete]"));
  CHECK(prebuilt >= 2);
  CHECK(built_during_burn == 0);  // the agent was held: nothing was built on request
  CHECK(worker > 20);
  CHECK(worker_from_libc >= worker * 95 / 100);
  CHECK(total_under(tree, "[incomplete]") <= tree.total() / 20);
}
#endif

TEST_CASE("sampler: static tags, tag_scope and tag_wrapper put samples in the right series") {
  const std::string path = fresh_path("tagged");
  pyroscope::Config config = test_config("tagged", path);
  config.tags = {{"region", "eu-north"}, {"vehicle", "none"}};
  REQUIRE(pyroscope::start(config).ok());
  // Each phase runs until it has been sampled enough (see run_until_sampled), not for a fixed time.
  std::thread worker([] {
    {
      pyroscope::tag_scope vehicle("vehicle", "car");
      run_until_sampled([] { sampler_test_static_worker(0.02); }, 30, 4.0);
      {
        pyroscope::tag_scope driver("driver", "ann");
        run_until_sampled([] { sampler_test_static_worker(0.02); }, 30, 4.0);
      }
      run_until_sampled([] { sampler_test_foo_bar_until(0.02); }, 15, 2.0);  // back in vehicle=car only
    }
    pyroscope::tag_wrapper({{"vehicle", "bike"}}, [] {
      run_until_sampled([] { sampler_test_foo_bar_until(0.02); }, 30, 4.0);
    });
    run_until_sampled([] { sampler_test_foo_bar_until(0.02); }, 20, 3.0);  // static tags only
  });
  worker.join();
  REQUIRE(pyroscope::stop().ok());

  pyroscope::Dataset data;
  REQUIRE(data.add_file(path).ok());
  std::vector<std::string> names;
  for (const pyroscope::SeriesKey& key : data.series(pyroscope::Selector{})) names.push_back(key.to_string());
  for (const std::string& name : names) MESSAGE("series " << name);
  CHECK(std::find(names.begin(), names.end(), "tagged.cpu{region=\"eu-north\",vehicle=\"car\"}") != names.end());
  CHECK(std::find(names.begin(), names.end(), "tagged.cpu{driver=\"ann\",region=\"eu-north\",vehicle=\"car\"}") != names.end());
  CHECK(std::find(names.begin(), names.end(), "tagged.cpu{region=\"eu-north\",vehicle=\"bike\"}") != names.end());
  CHECK(std::find(names.begin(), names.end(), "tagged.cpu{region=\"eu-north\",vehicle=\"none\"}") != names.end());

  const pyroscope::Tree car = query_file(path, "tagged{vehicle=\"car\",driver=\"\"}").tree;
  const pyroscope::Tree ann = query_file(path, "tagged.cpu{driver=\"ann\"}").tree;
  const pyroscope::Tree bike = query_file(path, "tagged{vehicle=\"bike\"}").tree;
  const pyroscope::Tree none = query_file(path, "tagged{vehicle=\"none\"}").tree;
  MESSAGE("car " << car.total() << " ann " << ann.total() << " bike " << bike.total() << " none " << none.total());
#if !defined(SAMPLER_TEST_TSAN)
  // Each scope's work shows up in its own series only (a sample or two at the edges may fall either
  // side of a scope change).
  CHECK(total_under(car, "sampler_test_static_worker") > 20);
  CHECK(total_under(car, "sampler_test_foo_bar_until") > 5);
  CHECK(total_under(ann, "sampler_test_static_worker") > 20);
  CHECK(total_under(ann, "sampler_test_foo_bar_until") <= 2);
  CHECK(total_under(bike, "sampler_test_foo_bar_until") > 20);
  CHECK(total_under(bike, "sampler_test_static_worker") <= 2);
  CHECK(total_under(none, "sampler_test_foo_bar_until") > 10);
  CHECK(total_under(none, "sampler_test_static_worker") <= 2);
#endif
  CHECK(ann.total() > 0);
  CHECK(bike.total() > 0);
}

TEST_CASE("sampler: start/stop/start appends to one file, also within one block") {
  const std::string path = fresh_path("restart");
  pyroscope::Config config = test_config("restart", path);
  uint64_t previous_total = 0;
  for (int round = 0; round < 3; round++) {
    const uint64_t weight_before = pyroscope::detail::sampler_stats().weight;
    pyroscope::Status status = pyroscope::start(config);
    REQUIRE_MESSAGE(status.ok(), status.to_string());
    CHECK(pyroscope::is_running());
    CHECK(pyroscope::start(config).code() == pyroscope::StatusCode::already_running);
    std::thread worker([] { run_until_sampled([] { sampler_test_static_worker(0.02); }, 10, 3.0); });
    worker.join();
    status = pyroscope::stop();
    REQUIRE_MESSAGE(status.ok(), status.to_string());
    CHECK(!pyroscope::is_running());
    const uint64_t collected = pyroscope::detail::sampler_stats().weight - weight_before;
    const uint64_t total = query_file(path, "restart{}").tree.total();
    MESSAGE("round " << round << ": " << collected << " samples collected, " << total << " in the file");
    // Every session's samples were written (three sessions inside one or two 10 s blocks).
    CHECK(collected > 0);
    CHECK(total == previous_total + collected);
    previous_total = total;
  }
}

TEST_CASE("sampler: the file says what a sample is: cpu samples, summed, period 1e9/rate ns of cpu") {
  const std::string path = fresh_path("series-info");
  pyroscope::Config config = test_config("series-info", path);
  config.tags = {{"region", "eu"}};
  pyroscope::Status status = pyroscope::start(config);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  std::thread worker([] {
    run_until_sampled([] { sampler_test_static_worker(0.02); }, 10, 3.0);
    pyroscope::tag_scope scope("vehicle", "car");
    run_until_sampled([] { sampler_test_static_worker(0.02); }, 10, 3.0);
  });
  worker.join();
  status = pyroscope::stop();
  REQUIRE_MESSAGE(status.ok(), status.to_string());

  pyroscope::File file;
  status = file.open_path(path);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  CHECK(file.info().format_version >= 3);
  REQUIRE(file.series().size() == 2);
  for (size_t i = 0; i < file.series().size(); i++) {
    const pyroscope::SeriesInfo& info = file.series_info(i);
    MESSAGE(file.series()[i].to_string() << ": " << info.to_string());
    CHECK(file.series()[i].type == "cpu");
    CHECK(info.unit == "samples");
    CHECK(info.aggregation == pyroscope::Aggregation::sum);
    CHECK(info.period == 1000000000 / config.sample_rate_hz);
    CHECK(info.period_type == "cpu");
    CHECK(info.period_unit == "nanoseconds");
  }
  // A query says the same.
  const pyroscope::QueryResult result = query_file(path, "series-info{}");
  CHECK(result.tree.total() > 0);
  CHECK(result.info.period == 1000000000 / config.sample_rate_hz);
  CHECK(result.info.period_type == "cpu");

  // One series, one period: another rate on the same file is refused up front, the same rate appends.
  pyroscope::Config faster = config;
  faster.sample_rate_hz = 2 * config.sample_rate_hz;
  status = pyroscope::start(faster);
  CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
  CHECK_MESSAGE(status.message().find("sample_rate_hz") != std::string::npos, status.to_string());
  CHECK(!pyroscope::is_running());
  status = pyroscope::start(config);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  status = pyroscope::stop();
  CHECK_MESSAGE(status.ok(), status.to_string());
}

TEST_CASE("sampler: a version 2 file is appended to in its own version, without a period") {
  const std::string path = fresh_path("series-info-v2");
  {
    std::ifstream in(std::string(PYROSCOPE_TEST_DATA_DIR) + "/golden-v2.pyro", std::ios::binary);
    REQUIRE(in.good());
    std::ofstream out(path, std::ios::binary);
    out << in.rdbuf();
  }
  pyroscope::File before;
  REQUIRE(before.open_path(path).ok());
  REQUIRE(before.info().format_version == 2);
  pyroscope::Config config = test_config("series-info-v2", path);
  config.flush_interval_seconds = int(before.info().resolution_seconds);
  pyroscope::Status status = pyroscope::start(config);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  std::thread worker([] { run_until_sampled([] { sampler_test_static_worker(0.02); }, 10, 3.0); });
  worker.join();
  status = pyroscope::stop();
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  pyroscope::File after;
  REQUIRE(after.open_path(path).ok());
  CHECK(after.info().format_version == 2);
  bool found = false;
  for (size_t i = 0; i < after.series().size(); i++) {
    if (after.series()[i].app != "series-info-v2") continue;
    found = true;
    CHECK(after.series_info(i) == pyroscope::SeriesInfo());  // samples, summed, period unknown
  }
  CHECK(found);
  CHECK(query_file(path, "series-info-v2{}").tree.total() > 0);
}

namespace {
std::atomic<int> g_foreign_handler_calls{0};
void foreign_handler(int) { g_foreign_handler_calls++; }
}  // namespace

TEST_CASE("sampler: backs off when SIGPROF has another handler, restores the disposition on stop") {
  struct sigaction foreign;
  std::memset(&foreign, 0, sizeof foreign);
  foreign.sa_handler = foreign_handler;
  sigemptyset(&foreign.sa_mask);
  struct sigaction saved;
  REQUIRE(sigaction(SIGPROF, &foreign, &saved) == 0);
  const std::string path = fresh_path("backoff");
  pyroscope::Status status = pyroscope::start(test_config("backoff", path));
  CHECK(status.code() == pyroscope::StatusCode::already_running);
  CHECK(status.message().find("SIGPROF") != std::string::npos);
  CHECK(!pyroscope::is_running());
  // The other user's handler is untouched.
  struct sigaction now;
  sigaction(SIGPROF, nullptr, &now);
  CHECK((now.sa_handler == &foreign_handler));
  REQUIRE(sigaction(SIGPROF, &saved, nullptr) == 0);

  // With the default disposition it starts, and stop() puts the default back.
  struct sigaction deflt;
  std::memset(&deflt, 0, sizeof deflt);
  deflt.sa_handler = SIG_DFL;
  REQUIRE(sigaction(SIGPROF, &deflt, nullptr) == 0);
  REQUIRE(pyroscope::start(test_config("backoff", path)).ok());
  sigaction(SIGPROF, nullptr, &now);
  CHECK((now.sa_flags & SA_SIGINFO) != 0);
  sampler_test_static_worker(0.05);
  REQUIRE(pyroscope::stop().ok());
  sigaction(SIGPROF, nullptr, &now);
  CHECK((now.sa_flags & SA_SIGINFO) == 0);
  CHECK((now.sa_handler == SIG_DFL));

  // An ignored SIGPROF counts as free (gperftools leaves it so) and is restored as ignored.
  struct sigaction ignore = deflt;
  ignore.sa_handler = SIG_IGN;
  REQUIRE(sigaction(SIGPROF, &ignore, nullptr) == 0);
  REQUIRE(pyroscope::start(test_config("backoff", path)).ok());
  REQUIRE(pyroscope::stop().ok());
  sigaction(SIGPROF, nullptr, &now);
  CHECK((now.sa_handler == SIG_IGN));
  REQUIRE(sigaction(SIGPROF, &saved, nullptr) == 0);
  CHECK(g_foreign_handler_calls.load() == 0);
}

namespace {
int compare_ints(const void* a, const void* b) {
  const int x = *static_cast<const int*>(a), y = *static_cast<const int*>(b);
  return (x > y) - (x < y);
}
__attribute__((noinline)) int sampler_test_recurse(int depth) {
  if (depth == 0) {
    sampler_test_burn(20000);
    return 0;
  }
  const int r = sampler_test_recurse(depth - 1) + 1;
  asm volatile("" ::: "memory");
  return r;
}
// Burns CPU inside a signal handler: samples there unwind through the kernel's signal frame
// (__restore_rt) back into the interrupted code.
// It runs alone in the process and until 30 signals have landed (see run_until_sampled): a fixed 0.3 s
// beside three busy threads of its own process and two of another got no sample at all once.
__attribute__((noinline)) void sampler_test_burning_handler(int) {
  run_until_sampled([] { sampler_test_burn(20000); }, 30, 10.0);
  asm volatile("" ::: "memory");
}
using compress_bound_fn = unsigned long (*)(unsigned long);
using compress_fn = int (*)(unsigned char*, unsigned long*, const unsigned char*, unsigned long);
}  // namespace

TEST_CASE("sampler: the table unwinder gives libgcc's stacks, also across dlopen and dlclose") {
  const std::string path = fresh_path("verify");
  pyroscope::detail::g_sampler_verify_unwind.store(true);
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::start(test_config("verify", path)).ok());
  auto mixed = [](double seconds) {
    const double end = thread_cpu_seconds() + seconds;
    std::vector<int> values(4096);
    unsigned seed = 7;
    while (thread_cpu_seconds() < end) {
      sampler_test_recurse(30);                         // deep stacks in this executable
      for (int& v : values) v = int(rand_r(&seed));
      qsort(values.data(), values.size(), sizeof(int), compare_ints);  // libc calling back into us
      std::sort(values.begin(), values.end(), [](int a, int b) { return a > b; });
      std::string text;
      for (int i = 0; i < 500; i++) text += std::to_string(i);  // libstdc++ and malloc
      timespec ts;
      for (int i = 0; i < 500; i++) clock_gettime(CLOCK_MONOTONIC, &ts);  // the vDSO
#if defined(__x86_64__)
      sampler_test_rbp_garbage_spin(20000);
#endif
    }
  };
  std::thread first([&] { mixed(0.8); });
  mixed(0.8);
  first.join();
  // A library loaded, used and unloaded while sampling, then loaded again; between the rounds this
  // executable's and libc's frames are unwound again. Each step runs until sampled, alone: on a loaded
  // machine a fixed 0.3 s of compress() beside the other threads could end with no sample in zlib.
  for (int round = 0; round < 2; round++) {
    void* zlib = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    if (zlib == nullptr) {
      MESSAGE("libz.so.1 not available: " << std::string(dlerror()));
      break;
    }
    const auto bound = reinterpret_cast<compress_bound_fn>(dlsym(zlib, "compressBound"));
    const auto compress = reinterpret_cast<compress_fn>(dlsym(zlib, "compress"));
    REQUIRE((bound != nullptr));
    REQUIRE((compress != nullptr));
    std::vector<unsigned char> input(1 << 16);
    for (size_t i = 0; i < input.size(); i++) input[i] = static_cast<unsigned char>((i * 7919) >> 5);
    std::vector<unsigned char> output(bound(input.size()));
    run_until_sampled(
        [&] {
          unsigned long length = output.size();
          compress(output.data(), &length, input.data(), input.size());
        },
        15, 5.0);
    dlclose(zlib);
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // the agent notices the unload
    run_until_sampled([&] { mixed(0.02); }, 15, 5.0);
  }
  // A thread that spends its time in its own signal handler.
  std::thread handled([] {
    struct sigaction action;
    std::memset(&action, 0, sizeof action);
    action.sa_handler = sampler_test_burning_handler;
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR2, &action, nullptr);
    raise(SIGUSR2);
  });
  handled.join();
  REQUIRE(pyroscope::stop().ok());
  pyroscope::detail::g_sampler_verify_unwind.store(false);
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  const uint64_t samples = after.samples - before.samples;
  const uint64_t table = after.table_unwinds - before.table_unwinds;
  const uint64_t same = after.verify_same - before.verify_same;
  const uint64_t different = after.verify_different - before.verify_different;
  MESSAGE("samples " << samples << ", unwound with tables " << table << ", same as libgcc " << same
                     << ", different " << different);
#if defined(__x86_64__) && !defined(SAMPLER_TEST_TSAN)
  CHECK(different == 0);
  CHECK(same == table);
  CHECK(table * 2 > samples);  // most samples take the fast path (each module's first ones do not)
#endif
#if defined(__x86_64__) && !defined(SAMPLER_TEST_TSAN)
  // Through the signal frame: the samples in the handler reach the thread's start below it.
  const pyroscope::Tree verified = query_file(path, "verify{}").tree;
  uint64_t in_handler = 0, through_signal_frame = 0;
  for (uint32_t n = 1; n < verified.node_count(); n++) {
    if (verified.name(n).find("sampler_test_burning_handler(int)") == std::string_view::npos) continue;
    in_handler += verified.node_total(n);
    for (uint32_t p = verified.parent(n); p != pyroscope::Tree::kRoot; p = verified.parent(p)) {
      if (verified.name(p) == "start_thread") {
        through_signal_frame += verified.node_total(n);
        break;
      }
    }
  }
  MESSAGE("samples in the signal handler " << in_handler << ", through the signal frame to start_thread "
                                           << through_signal_frame);
  CHECK(in_handler > 10);
  CHECK(through_signal_frame * 10 >= in_handler * 9);
#endif
  // The dlopen'ed library's frames are named (it is stripped: its exported names come from .dynsym).
  const std::string folded = query_file(path, "verify{}").tree.to_folded();
  const bool zlib_named = folded.find("deflate") != std::string::npos || folded.find("compress") != std::string::npos;
  CHECK(zlib_named);
}
