// Samples go to the block they were taken in, not to the one in which the agent drained them (issue 17):
// a thread runs one function until a block boundary and another after it while the agent is held
// (the test hook g_agent_test_stall) from 200 ms before the boundary to 400 ms after it, as a loaded
// machine can starve it, or, in the second case, for longer than a whole block; each block must hold
// only its own function. The verdict rests on the samples'
// own times, not on how the threads were scheduled.
// pyroscope-test: timeout=120 serial group=internals
#define PYROSCOPE_IMPLEMENTATION
#include "sampler_test_support.hpp"

#include <doctest/doctest.h>

#include <time.h>

#include <atomic>
#include <cstdlib>
#include <cstdint>
#include <string>
#include <thread>

namespace {

using namespace sampler_test;

int64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void sleep_until_realtime(int64_t ns) {
  timespec ts{time_t(ns / 1000000000), long(ns % 1000000000)};
  while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr) != 0) {
  }
}

// Clears the stall however the case ends, so that stop() never waits on it.
struct StallGuard {
  ~StallGuard() { pyroscope::detail::g_agent_test_stall.store(false); }
};

}  // namespace

std::atomic<bool> g_phases_sleep{false};  // the phases sleep (wall-clock case) instead of burning CPU

// The worker's phases, in frames of their own (outside the anonymous namespace: plain names).
#define BLOCKTEST_PHASE(name)                                                                \
  __attribute__((noinline)) void name(int64_t until_ns) {                                    \
    if (g_phases_sleep.load()) {                                                             \
      /* clock_nanosleep right here: a walk from outside may end at the next frame (ASan) */ \
      const timespec ts{time_t(until_ns / 1000000000), long(until_ns % 1000000000)};          \
      while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr) != 0) {            \
      }                                                                                      \
    } else {                                                                                 \
      uint64_t x = sampler_test::g_sink.load(std::memory_order_relaxed);                     \
      while (realtime_ns() < until_ns) {                                                     \
        for (int i = 0; i < 200; i++) x = x * 6364136223846793005ull + 1442695040888963407ull; \
      }                                                                                      \
      sampler_test::g_sink.store(x, std::memory_order_relaxed);                              \
    }                                                                                        \
    asm volatile("" ::: "memory");                                                           \
  }
BLOCKTEST_PHASE(blocktest_phase_a)
BLOCKTEST_PHASE(blocktest_phase_b)
BLOCKTEST_PHASE(blocktest_phase_c)

namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kSecond = 1000000000;

struct PhaseSamples {
  uint64_t a = 0, b = 0, c = 0;
};

// Runs phase a until a whole second (the boundary between two 1 s blocks), then b until `b_ms` after
// it, then c until `c_ms` after it, with the agent held from `stall_from_ms` to `stall_until_ms` around
// the boundary. Returns the samples of each phase in the blocks starting 1 s before the boundary, at it
// and 1 s after it: of the cpu series, or with `wall` of the wall series, the phases sleeping.
// *a_late_ms: how long after the boundary phase a returned (a sleeping worker woken late by a loaded
// machine is still in a meanwhile).
void run_phases(const char* app, bool wall, int64_t b_ms, int64_t c_ms, int64_t stall_from_ms, int64_t stall_until_ms,
                PhaseSamples blocks[3], int64_t* a_late_ms = nullptr) {
  const std::string path = fresh_path(app);
  pyroscope::Config config = test_config(app, path);
  config.flush_interval_seconds = 1;
  config.wall_clock = wall;
  g_phases_sleep.store(wall);
  StallGuard guard;

  std::atomic<int64_t> boundary_ns{0};
  std::atomic<int64_t> a_returned_ns{0};
  std::thread worker([&] {
    while (boundary_ns.load() == 0) std::this_thread::yield();
    const int64_t boundary = boundary_ns.load();
    blocktest_phase_a(boundary);
    a_returned_ns.store(realtime_ns());
    blocktest_phase_b(boundary + b_ms * kMs);
    blocktest_phase_c(boundary + c_ms * kMs);
  });
  const pyroscope::Status started = pyroscope::start(config);
  if (!started.ok()) {
    boundary_ns.store(1);
    worker.join();
    FAIL("start: " << started.to_string());
  }
  // The boundary: the first whole second at least 400 ms away (the agent lists the worker within 100 ms).
  const int64_t now = realtime_ns();
  int64_t boundary = (now / kSecond + 1) * kSecond;
  if (boundary - now < 400 * kMs) boundary += kSecond;
  boundary_ns.store(boundary);

  sleep_until_realtime(boundary + stall_from_ms * kMs);
  pyroscope::detail::g_agent_test_stall.store(true);
  const int64_t stalled_at = realtime_ns();
  sleep_until_realtime(boundary + stall_until_ms * kMs);
  pyroscope::detail::g_agent_test_stall.store(false);
  const int64_t released_at = realtime_ns();
  worker.join();
  REQUIRE(pyroscope::stop().ok());
  MESSAGE("agent held from " << (stalled_at - boundary) / kMs << " ms to " << (released_at - boundary) / kMs
                             << " ms around the boundary; phase a returned " << (a_returned_ns - boundary) / kMs
                             << " ms after it");
  if (a_late_ms != nullptr) *a_late_ms = (a_returned_ns - boundary) / kMs;

  pyroscope::Dataset data;
  const pyroscope::Status opened = data.add_file(path);
  REQUIRE_MESSAGE(opened.ok(), opened.to_string());
  const std::string selector = std::string(app) + (wall ? ".wall{}" : ".cpu{}");
  for (int i = 0; i < 3; i++) {
    const int64_t second = boundary / kSecond - 1 + i;
    pyroscope::QueryResult result;
    REQUIRE(data.query(selector, second, second + 1, &result).ok());
    blocks[i].a = total_under(result.tree, "blocktest_phase_a");
    blocks[i].b = total_under(result.tree, "blocktest_phase_b");
    blocks[i].c = total_under(result.tree, "blocktest_phase_c");
    MESSAGE("block " << i - 1 << " s from the boundary: a " << blocks[i].a << ", b " << blocks[i].b << ", c "
                     << blocks[i].c << " samples (" << (wall ? 100 : config.sample_rate_hz) << " Hz)");
    if (std::getenv("PYROSCOPE_BLOCKS_SHOW")) MESSAGE(result.tree.to_folded());
  }
}

}  // namespace

// A sample's time is read by the handler while the thread is interrupted, and the worker switches
// functions within microseconds of the boundary: only a sample of those microseconds (a signal's weight,
// 1 + its overruns) can land on the other side. kStray allows a few; the agent's stall alone would move
// hundreds of milliseconds of a phase (tens of samples even on a loaded machine) into the wrong block.
constexpr uint64_t kStray = 3;

TEST_CASE("sampler: a sample goes to the block it was taken in, however late the agent drains it") {
  PhaseSamples blocks[3];
  run_phases("blocktest", false, 800, 800, -200, 400, blocks);  // no phase c
  CHECK(blocks[0].b <= kStray);
  CHECK(blocks[1].a <= kStray);
  // Enough of each phase to judge (the worker gets some CPU however loaded the machine is).
  CHECK(blocks[0].a >= 5);
  CHECK(blocks[1].b >= 5);
}

TEST_CASE("sampler: an agent starved for longer than a block writes each sample in its own block") {
  PhaseSamples blocks[3];
  run_phases("blockskip", false, 1000, 1600, -200, 1300, blocks);  // b fills the whole block the agent misses
  CHECK(blocks[0].b + blocks[0].c <= kStray);
  CHECK(blocks[1].a + blocks[1].c <= 2 * kStray);
  CHECK(blocks[2].a + blocks[2].b <= kStray);
  CHECK(blocks[0].a >= 5);
  CHECK(blocks[1].b >= 5);
  CHECK(blocks[2].c >= 5);
}

// The agent's own wall-clock ticks carry their time too: a thread asleep in a until the boundary and in
// b after it. The first tick after the stall counts the 60 intervals the agent missed (weight 60) on the
// stack it finds, b's, in the block of the tick; what was counted on a's stack before the stall stays in
// a's block.
TEST_CASE("wall: a tick goes to the block it was made in, and what was counted before it to the earlier block") {
  PhaseSamples blocks[3];
  int64_t a_late_ms = 0;
  run_phases("blockwall", true, 800, 800, -200, 400, blocks, &a_late_ms);
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  CHECK(blocks[0].b <= kStray);
  // Asleep in a until it actually woke: the ticks of those milliseconds rightly find it there (and the
  // first tick after the stall too, if it woke later than that: then there is nothing to check).
  if (a_late_ms < 300) CHECK(blocks[1].a <= kStray + uint64_t(a_late_ms / 10));
  else MESSAGE("the worker woke " << a_late_ms << " ms after the boundary: its block after holds a rightly");
  CHECK(blocks[0].a >= 5);
  CHECK(blocks[1].b >= 5);
#else
  MESSAGE("no table unwinder in this build: blocked stacks are their pc only; phases not told apart");
#endif
}
