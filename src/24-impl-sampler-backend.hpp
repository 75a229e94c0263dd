// [SECTION] Implementation: sampler backend (Linux) ===============================================
//
// Every thread gets its own POSIX timer on its own CPU-time clock (timer_create with the thread's
// clock id, SIGEV_THREAD_ID): an idle thread produces no signals, and the rate scales with the number
// of busy threads (setitimer(ITIMER_PROF) is one process-wide timer, capped near the kernel tick rate).
// The background thread ("pyroscope-agent") arms timers for the threads it finds in /proc/self/task,
// rescans every kThreadScanMs for new ones and deletes the timers of threads that are gone.
//
// The SIGPROF handler unwinds into a slot of a bounded lock-free ring (Vyukov's MPMC sequence scheme,
// one consumer) and records the thread's tag-set id, its tid (for wall-clock sampling), the sample's
// weight, 1 + si_overrun, and its time (CLOCK_MONOTONIC, read as the handler starts): the agent drains
// every 100 ms, or later when it is starved, and puts each sample in the block it was taken in.
//
// What the handler may and may not do (docs/sampler.md names the test that holds each rule):
//   1. No lock anywhere it calls: atomics, clock_gettime, _dl_find_object, reads of its own tables,
//      write(2) to the agent's eventfd, and timer_gettime/timer_settime on the timer that sent the signal
//      (jitter; both plain system calls, async-signal-safe in POSIX).
//      On x86-64 it never calls libgcc's _Unwind_Backtrace: libgcc 12 takes object_mutex on every FDE
//      lookup once any frames were registered with __register_frame_info (a -static program registers
//      its own at startup, a JIT at run time), and the interrupted thread may be holding it.
//   2. No allocation: the ring, the unwind tables and the list of stack mappings are made by the agent.
//   3. No lazy loader work: start() calls every function the handler calls before installing it (with
//      lazy binding a first call through the PLT runs the dynamic linker), its TLS is initial-exec, it
//      has no function-local static.
//   4. Bounded memory reads: the walk reads only inside the mapping that holds the interrupted stack
//      pointer (from the agent's list of mappings), and only the tables of objects that
//      _dl_find_object says are loaded now.
//   5. It leaves the process's signal state as it found it: errno is saved and restored; every
//      asynchronous signal is blocked while it runs (an application handler that siglongjmp's away from
//      a nested signal would otherwise abandon ours half-way); SA_RESTART; and stop(), the fork child
//      and a failed start() give SIGPROF back only while the handler is still ours.
// Where the tables cannot go on (a module whose table the agent has not built yet, a rule they do not
// express, a frame outside the thread's stack) the sample keeps the frames walked so far under a
// synthetic [incomplete] root, and SamplerStats counts why.
//
// Unwinders, both correct on -O2 code without frame pointers:
//   - tables (x86-64, glibc >= 2.35): the agent turns each module's .eh_frame into sorted rows "from this
//     pc on, CFA = rsp|rbp + k, rbp saved at CFA + j" (plus the PLT's and the signal trampoline's
//     rules); the handler finds the module with _dl_find_object (lock-free, always current),
//     binary-searches the row and reads two words per frame: 4-6x cheaper per sample than libgcc, which
//     interprets the DWARF program of every frame.
//   - _Unwind_Backtrace (libgcc) is the only unwinder on other architectures and under ThreadSanitizer.
//     It is safe in the handler only where glibc >= 2.35 (libgcc then finds FDEs with _dl_find_object,
//     older glibc makes it call dl_iterate_phdr, which takes the loader's lock) and no frames are
//     registered at run time. start() refuses a statically linked program there; a JIT that registers
//     frames is a documented limitation of those builds.

namespace pyroscope {
namespace detail {

constexpr int kSamplerSignal = SIGPROF;
constexpr int kSamplerMaxFrames = 124;       // a slot is 1 KiB; deeper stacks keep their leaf side
constexpr size_t kSamplerRingSlots = 1024;   // ~10 s of 10 busy threads at 100 Hz between drains
constexpr int kAgentWakeMs = 100;            // drain the ring and rescan threads this often
constexpr int kPushStopBudgetMs = 3000;      // stop() waits at most this long for the push queue
constexpr uint64_t kHandlerPreemptedNs = 200000;  // a handler timed longer was descheduled meanwhile
// A handler still running this long after sampling was switched off is given up on (it can only have
// been left with siglongjmp by a signal the mask let through, or be stopped in a debugger): stop()
// logs it and goes on. Memory such a handler could still read (tables, mapping lists) is never freed.
constexpr int64_t kInFlightWaitNs = 2000000000;
// A ring slot claimed by a handler and not published for this long is skipped by the drain; if that
// handler publishes after all, its sample is dropped (counted) and the ring stays consistent.
constexpr int64_t kUnpublishedSlotNs = 1000000000;

// Everything the handler shares with other threads is a std::atomic; one that falls back to a lock
// (64-bit atomics on some 32-bit targets) would be rule 1 broken.
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free &&
                  std::atomic<bool>::is_always_lock_free && std::atomic<const void*>::is_always_lock_free,
              "pyroscope.hpp: the sampler's signal handler needs lock-free 32- and 64-bit atomics on this "
              "target; define PYROSCOPE_NO_SAMPLER to build without the sampler");

constexpr uint16_t kSlotTruncated = 1;   // deeper than kSamplerMaxFrames: the leaf side was kept
constexpr uint16_t kSlotIncomplete = 2;  // the unwinder stopped before the stack's end
constexpr uint16_t kSlotWall = 4;        // a wall-clock sample (the agent's signal), not a CPU-time one

struct SamplerSlot {
  std::atomic<uint64_t> sequence;
  uint32_t tag_set;
  uint32_t weight;
  uint16_t depth;
  uint16_t flags;  // kSlotTruncated, kSlotIncomplete, kSlotWall
  uint32_t tid;  // the sampled thread (the wall-clock sampler gives its deferred ticks the latest stack)
  int64_t time_ns;  // CLOCK_MONOTONIC when the sample was taken: decides its block (ProfilerSession::route)
  uintptr_t pcs[kSamplerMaxFrames];  // leaf first; callers' return addresses already minus one
};
static_assert(sizeof(void*) != 8 || sizeof(SamplerSlot) == 1024, "a ring slot is one KiB on 64-bit");

// Never freed, and reset only in a fork child: a handler given up on by stop() (kInFlightWaitNs) may
// still own a claimed slot, and positions only ever grow, so such a slot cannot be confused with a
// later one.
struct SamplerRing {
  SamplerSlot* slots = nullptr;
  uint64_t mask = 0;
  alignas(64) std::atomic<uint64_t> head{0};  // next position a producer claims
  alignas(64) uint64_t tail = 0;              // next position the consumer reads
  int64_t waiting_since_ns = 0;               // consumer: when the slot at tail was first seen claimed, unpublished

  // Handler side. Returns nullptr when the ring is full (the sample is dropped and counted).
  SamplerSlot* claim(uint64_t* position) {
    uint64_t pos = head.load(std::memory_order_relaxed);
    for (;;) {
      SamplerSlot* slot = &slots[pos & mask];
      const uint64_t seq = slot->sequence.load(std::memory_order_acquire);
      const int64_t diff = static_cast<int64_t>(seq - pos);
      if (diff == 0) {
        if (head.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed, std::memory_order_relaxed)) {
          *position = pos;
          return slot;
        }
      } else if (diff < 0) {
        return nullptr;
      } else {
        pos = head.load(std::memory_order_relaxed);
      }
    }
  }
  // Handler side. False if the drain gave up on the slot meanwhile: the sample is lost, the ring intact.
  bool publish(SamplerSlot* slot, uint64_t position) {
    uint64_t expected = position;
    return slot->sequence.compare_exchange_strong(expected, position + 1, std::memory_order_release,
                                                  std::memory_order_relaxed);
  }

  // In a fork child, where no other thread (and so no handler that claimed a slot) exists: every slot
  // free again, from the current tail on. Atomics only.
  void reset_after_fork() {
    for (uint64_t i = 0; i <= mask; i++) slots[(tail + i) & mask].sequence.store(tail + i, std::memory_order_relaxed);
    head.store(tail, std::memory_order_release);
    waiting_since_ns = 0;
  }

  // Consumer side (one thread at a time). Calls fn(const SamplerSlot&) for each published sample in
  // order and stops at the first slot a handler is still writing, unless that slot has been claimed
  // and unpublished for kUnpublishedSlotNs: then it is skipped (and counted in *skipped).
  template <class Fn>
  size_t drain(int64_t now_ns, uint64_t* skipped, Fn&& fn) {
    size_t n = 0;
    for (;;) {
      SamplerSlot* slot = &slots[tail & mask];
      uint64_t seq = slot->sequence.load(std::memory_order_acquire);
      if (seq != tail + 1) {
        // seq == tail: free, or claimed and not yet published.
        if (head.load(std::memory_order_acquire) == tail) {
          waiting_since_ns = 0;
          break;  // free: the ring is empty
        }
        if (waiting_since_ns == 0) waiting_since_ns = now_ns;
        if (now_ns - waiting_since_ns < kUnpublishedSlotNs) break;
        if (!slot->sequence.compare_exchange_strong(seq, tail + mask + 1, std::memory_order_acq_rel)) continue;
        ++*skipped;
        tail++;
        waiting_since_ns = 0;
        continue;
      }
      waiting_since_ns = 0;
      fn(static_cast<const SamplerSlot&>(*slot));
      slot->sequence.store(tail + mask + 1, std::memory_order_release);
      tail++;
      n++;
    }
    return n;
  }
};

// Counters shared by the handler and the agent (relaxed atomics; read by sampler_stats()).
struct SamplerCounters {
  std::atomic<uint64_t> samples{0};          // signals that produced a sample
  // Time in the handler, by the monotonic clock. A handler preempted by the scheduler reads as
  // milliseconds that are no CPU cost: timings above kHandlerPreemptedNs are left out of the sums
  // (the histogram keeps them).
  std::atomic<uint64_t> handler_ns{0};
  std::atomic<uint64_t> handler_timed{0};
  std::atomic<uint64_t> dropped_full{0};     // ring full
  std::atomic<uint64_t> drained{0};
  std::atomic<uint64_t> weight{0};           // sum of 1 + si_overrun over drained samples
  // Sum of the squared weights: weight^2 / weight_squared is the effective number of independent
  // samples. Under CPU contention a thread's timer is checked only at ticks that find it running, so
  // fewer signals carry larger weights (and the same totals).
  std::atomic<uint64_t> weight_squared{0};
  std::atomic<uint64_t> timers_armed{0};     // currently
  std::atomic<uint64_t> timers_created{0};
  std::atomic<uint64_t> timers_deleted{0};
  std::atomic<uint64_t> thread_scans{0};
  std::atomic<uint64_t> process_timer{0};      // 1 while the process-wide CPU-time timer is armed
  std::atomic<uint64_t> process_samples{0};    // its samples: threads without a timer of their own yet
  std::atomic<uint64_t> process_skipped{0};    // its signals that found a thread with its own timer
  std::atomic<uint64_t> blocks_written{0};
  std::atomic<uint64_t> push_sent{0};
  std::atomic<uint64_t> push_failed{0};      // attempts that failed (retried or dropped)
  std::atomic<uint64_t> push_dropped{0};     // batches given up
  std::atomic<uint64_t> agent_cpu_ns{0};     // CPU time of finished agent threads (drain, symbolize, write)
  std::atomic<uint64_t> table_unwinds{0};    // samples unwound to the stack's end with the tables
  std::atomic<uint64_t> table_handler_ns{0};  // handler time of those samples (below the cap)
  std::atomic<uint64_t> table_timed{0};
  // Samples whose walk stopped before the stack's end (x86-64), by reason:
  std::atomic<uint64_t> incomplete_no_table{0};  // a module the agent has not built a table for yet
  std::atomic<uint64_t> incomplete_no_rule{0};   // code without unwind data, or a rule the tables lack
  std::atomic<uint64_t> incomplete_stack{0};     // the next frame would be outside the stack's mapping
  std::atomic<uint64_t> handler_ns_log2[32] = {};  // samples by handler time: [2^i, 2^(i+1)) ns
  std::atomic<uint64_t> verify_same{0};      // test hook g_sampler_verify_unwind: both unwinders agreed
  std::atomic<uint64_t> verify_different{0};
  std::atomic<uint64_t> skipped_slots{0};    // ring slots the drain gave up waiting for
  std::atomic<uint64_t> lost_publishes{0};   // handlers that found their slot given up on
  std::atomic<uint64_t> lost_handlers{0};    // handlers stop() stopped waiting for
  std::atomic<uint64_t> tables_built{0};     // unwind tables built (each module once per load)
  std::atomic<uint64_t> tables_freed{0};     // tables of unloaded modules freed
  std::atomic<uint64_t> stack_maps_read{0};  // times the agent listed the stack mappings
  // Wall-clock sampling (Config::wall_clock), per thread and tick:
  std::atomic<uint64_t> wall_ticks{0};
  std::atomic<uint64_t> wall_signals{0};   // threads signalled: the test hook g_wall_signal_every_thread only
  std::atomic<uint64_t> wall_unwinds{0};   // blocked threads unwound from outside, without a signal
  std::atomic<uint64_t> wall_cached{0};    // blocked threads that had not run since: counted, not read
  std::atomic<uint64_t> wall_running{0};   // running threads: the tick goes to their next CPU sample
  std::atomic<uint64_t> wall_tick_ns{0};   // agent CPU time spent in wall ticks
};

inline SamplerCounters g_sampler_counters;
// Wall-clock sampling (Config::wall_clock): the agent's SIGPROFs carry this session token (0: off) in the
// upper 24 bits of their value and the sample's weight in the low 8; g_wall_pid is the sender's pid.
constexpr uint32_t kWallWeightMask = 0xffu;
inline std::atomic<uint32_t> g_wall_token{0};
inline std::atomic<pid_t> g_wall_pid{0};
inline std::atomic<SamplerRing*> g_sampler_ring{nullptr};
inline std::atomic<bool> g_sampler_enabled{false};
// The timers' period, and their cookies (sigev_value): the handler re-arms (jitter) only a timer that
// carries one, and tells the per-thread timers from the process-wide one. 0: none armed.
inline std::atomic<int64_t> g_sampler_period_ns{0};
inline std::atomic<int> g_thread_timer_cookie{0};
inline std::atomic<int> g_process_timer_cookie{0};
// Threads that have a CPU-time timer of their own, or are the profiler's: one bit per tid (pid_max is
// at most 2^22), set by the agent before it arms a thread's timer. Samples of the process-wide timer
// that land on such a thread are dropped: its own timer counts it. Never freed (handlers read it).
constexpr uint32_t kTimedThreadBits = 1u << 22;
inline std::atomic<std::atomic<uint64_t>*> g_timed_threads{nullptr};
// Test and benchmark hooks: g_sampler_jitter false gives fixed timer intervals (as before jitter);
// g_sampler_process_timer -1 = as Config::short_lived_threads says (where the kernel delivers its
// signal to the running thread), 0 = off, 1 = on whatever the kernel.
inline std::atomic<bool> g_sampler_jitter{true};
inline std::atomic<int> g_sampler_process_timer{-1};
inline std::atomic<int> g_sampler_in_flight{0};
// Handlers stop() gave up waiting for (kInFlightWaitNs). They stay counted in g_sampler_in_flight:
// later waits wait for it to come down to this, and nothing a handler reads is freed any more.
inline std::atomic<int> g_sampler_lost_in_flight{0};

// A snapshot of the counters, for tests, benchmarks and the log.
struct SamplerStats {
  uint64_t samples = 0, handler_ns = 0, handler_timed = 0, dropped_full = 0, drained = 0, weight = 0;
  uint64_t weight_squared = 0;
  uint64_t timers_armed = 0, timers_created = 0, timers_deleted = 0, thread_scans = 0;
  uint64_t process_timer = 0, process_samples = 0, process_skipped = 0;
  uint64_t blocks_written = 0, push_sent = 0, push_failed = 0, push_dropped = 0, agent_cpu_ns = 0;
  uint64_t table_unwinds = 0, table_handler_ns = 0, table_timed = 0, verify_same = 0, verify_different = 0;
  uint64_t incomplete_no_table = 0, incomplete_no_rule = 0, incomplete_stack = 0;
  uint64_t skipped_slots = 0, lost_publishes = 0, lost_handlers = 0;
  uint64_t tables_built = 0, tables_freed = 0, stack_maps_read = 0;
  uint64_t wall_ticks = 0, wall_signals = 0, wall_unwinds = 0, wall_cached = 0, wall_running = 0, wall_tick_ns = 0;
  uint64_t handler_ns_log2[32] = {};

  uint64_t incomplete() const { return incomplete_no_table + incomplete_no_rule + incomplete_stack; }

  // Handler time below which `fraction` of the samples fall (from the log2 histogram: the upper edge of
  // the bucket that crosses it, so an estimate within a factor of two).
  uint64_t handler_ns_quantile(double fraction) const {
    uint64_t total = 0, seen = 0;
    for (uint64_t n : handler_ns_log2) total += n;
    for (int i = 0; i < 32; i++) {
      seen += handler_ns_log2[i];
      if (total > 0 && double(seen) >= fraction * double(total)) return uint64_t(1) << (i + 1);
    }
    return 0;
  }
};

inline SamplerStats sampler_stats() {
  const SamplerCounters& c = g_sampler_counters;
  SamplerStats s;
  s.samples = c.samples.load(std::memory_order_relaxed);
  s.handler_ns = c.handler_ns.load(std::memory_order_relaxed);
  s.handler_timed = c.handler_timed.load(std::memory_order_relaxed);
  s.dropped_full = c.dropped_full.load(std::memory_order_relaxed);
  s.drained = c.drained.load(std::memory_order_relaxed);
  s.weight = c.weight.load(std::memory_order_relaxed);
  s.weight_squared = c.weight_squared.load(std::memory_order_relaxed);
  s.timers_armed = c.timers_armed.load(std::memory_order_relaxed);
  s.timers_created = c.timers_created.load(std::memory_order_relaxed);
  s.timers_deleted = c.timers_deleted.load(std::memory_order_relaxed);
  s.thread_scans = c.thread_scans.load(std::memory_order_relaxed);
  s.process_timer = c.process_timer.load(std::memory_order_relaxed);
  s.process_samples = c.process_samples.load(std::memory_order_relaxed);
  s.process_skipped = c.process_skipped.load(std::memory_order_relaxed);
  s.blocks_written = c.blocks_written.load(std::memory_order_relaxed);
  s.push_sent = c.push_sent.load(std::memory_order_relaxed);
  s.push_failed = c.push_failed.load(std::memory_order_relaxed);
  s.push_dropped = c.push_dropped.load(std::memory_order_relaxed);
  s.agent_cpu_ns = c.agent_cpu_ns.load(std::memory_order_relaxed);
  s.table_unwinds = c.table_unwinds.load(std::memory_order_relaxed);
  s.table_handler_ns = c.table_handler_ns.load(std::memory_order_relaxed);
  s.table_timed = c.table_timed.load(std::memory_order_relaxed);
  s.incomplete_no_table = c.incomplete_no_table.load(std::memory_order_relaxed);
  s.incomplete_no_rule = c.incomplete_no_rule.load(std::memory_order_relaxed);
  s.incomplete_stack = c.incomplete_stack.load(std::memory_order_relaxed);
  for (int i = 0; i < 32; i++) s.handler_ns_log2[i] = c.handler_ns_log2[i].load(std::memory_order_relaxed);
  s.verify_same = c.verify_same.load(std::memory_order_relaxed);
  s.verify_different = c.verify_different.load(std::memory_order_relaxed);
  s.skipped_slots = c.skipped_slots.load(std::memory_order_relaxed);
  s.lost_publishes = c.lost_publishes.load(std::memory_order_relaxed);
  s.lost_handlers = c.lost_handlers.load(std::memory_order_relaxed);
  s.tables_built = c.tables_built.load(std::memory_order_relaxed);
  s.tables_freed = c.tables_freed.load(std::memory_order_relaxed);
  s.stack_maps_read = c.stack_maps_read.load(std::memory_order_relaxed);
  s.wall_ticks = c.wall_ticks.load(std::memory_order_relaxed);
  s.wall_signals = c.wall_signals.load(std::memory_order_relaxed);
  s.wall_unwinds = c.wall_unwinds.load(std::memory_order_relaxed);
  s.wall_cached = c.wall_cached.load(std::memory_order_relaxed);
  s.wall_running = c.wall_running.load(std::memory_order_relaxed);
  s.wall_tick_ns = c.wall_tick_ns.load(std::memory_order_relaxed);
  return s;
}

inline pid_t sampler_gettid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

inline int64_t sampler_monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline int64_t sampler_realtime_s() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec);
}

inline int64_t sampler_realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Memory a handler may be reading (a replaced list of mappings, an unloaded module's table) is freed
// only after a moment at which no handler runs: any handler that could have seen it has returned by
// then. The handler raises g_sampler_in_flight and then issues a seq_cst fence before it loads such a
// pointer; the agent unpublishes, issues the same fence, and then reads the counter (the two fences
// order the two sides as in Dekker's algorithm).
inline bool sampler_no_handler_running() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return g_sampler_in_flight.load(std::memory_order_seq_cst) == 0;
}

// Held by the agent around every dl_iterate_phdr, and by the fork handlers. dl_iterate_phdr holds the
// loader's lock, which fork() does not reset: a fork while the agent is inside it would leave the
// child with that lock taken forever, and the child's first exception, dlopen or profiler start would
// hang (seen under ASan). The prepare handler waits for the agent to leave instead.
inline std::mutex& sampler_loader_guard() {
  static std::mutex* guard = new std::mutex;  // never destroyed: atexit and fork handlers may run late
  return *guard;
}

// The agent's wake-up: an eventfd that a handler writes to when it asks for something the agent makes
// (a module's unwind table, a new list of mappings), so that it comes within a millisecond instead of
// at the next 100 ms wake; stop() writes to it too. Made once and never closed: a handler that writes
// late must never reach another file that got the same number. A fork child gets its own (the kernel
// object would otherwise be shared with the parent).
inline std::atomic<int> g_agent_wakeup_fd{-1};

// Handler side (write(2) is async-signal-safe; errno is restored by the handler).
inline void sampler_wake_agent() {
  const int fd = g_agent_wakeup_fd.load(std::memory_order_relaxed);
  if (fd < 0) return;
  const uint64_t one = 1;
  ssize_t written = write(fd, &one, sizeof one);
  (void)written;  // a full counter (2^64 - 2 wake-ups pending) needs no more
}

// --- the threads' stacks: bounds for the walk (rule 4) ---------------------------------------------

// The mappings a thread's stack can be in (readable, writable, private, not backed by a file), sorted,
// as /proc/self/maps listed them when the agent last armed new threads (the new threads' stacks were
// mapped before they were listed). Immutable once published.
struct StackMappings {
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;  // [start, end)
  uint64_t generation = 0;

  const std::pair<uintptr_t, uintptr_t>* find(uintptr_t address) const {
    size_t lo = 0, hi = ranges.size();
    while (lo < hi) {  // first range with start > address
      const size_t mid = (lo + hi) / 2;
      if (ranges[mid].first <= address) lo = mid + 1;
      else hi = mid;
    }
    if (lo == 0 || address >= ranges[lo - 1].second) return nullptr;
    return &ranges[lo - 1];
  }
};

inline std::atomic<const StackMappings*> g_stack_mappings{nullptr};
// Set by a handler that met a stack pointer in no listed mapping (a new coroutine stack, say): the agent
// lists the mappings again on its next wake.
inline std::atomic<bool> g_stack_mappings_wanted{false};

// The mapping the calling thread's stack pointer was last found in (initial-exec TLS: plain %fs loads
// in the handler, no lookup for a thread that stays on its stack).
struct ThreadStackBounds {
  uintptr_t low, high;
  uint64_t generation;
};
thread_local ThreadStackBounds g_thread_stack_bounds PYROSCOPE_TLS_INITIAL_EXEC = {0, 0, 0};

// Handler side: the mapping that holds sp, or false (the walk then records the interrupted frame only).
inline bool sampler_stack_bounds(uintptr_t sp, uintptr_t* low, uintptr_t* high) {
  const StackMappings* mappings = g_stack_mappings.load(std::memory_order_seq_cst);
  if (mappings == nullptr) return false;
  ThreadStackBounds& cached = g_thread_stack_bounds;
  if (cached.generation != mappings->generation || sp < cached.low || sp >= cached.high) {
    const std::pair<uintptr_t, uintptr_t>* range = mappings->find(sp);
    if (range == nullptr) {
      if (!g_stack_mappings_wanted.exchange(true, std::memory_order_relaxed)) sampler_wake_agent();
      return false;
    }
    cached = ThreadStackBounds{range->first, range->second, mappings->generation};
  }
  *low = cached.low;
  *high = cached.high;
  return true;
}

// Agent side: lists the mappings a stack can be in. The main thread's "[stack]" grows down on demand:
// its range starts where the mapping below it ends (the stack may have grown since the listing; the
// kernel keeps it one contiguous mapping).
inline bool sampler_read_stack_mappings(StackMappings* out) {
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string text;
  char buffer[16384];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, size_t(n));
  }
  close(fd);
  out->ranges.clear();
  uintptr_t previous_end = 0;
  size_t line_start = 0;
  while (line_start < text.size()) {
    size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) line_end = text.size();
    text[line_end] = '\0';  // (the string's own terminator when it is the last line)
    // "start-end perms offset dev inode   path"
    const char* line = text.c_str() + line_start;
    char* cursor = nullptr;
    const uintptr_t start = std::strtoull(line, &cursor, 16);
    const uintptr_t end = *cursor == '-' ? std::strtoull(cursor + 1, &cursor, 16) : 0;
    char perms[5] = {0, 0, 0, 0, 0};
    char device[32] = {0};
    unsigned long long offset = 0, inode = 0;
    int consumed = 0;
    if (end > start && std::sscanf(cursor, " %4s %llx %31s %llu %n", perms, &offset, device, &inode, &consumed) >= 4) {
      const std::string_view path(consumed > 0 ? cursor + consumed : "");
      if (perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p' && inode == 0)
        out->ranges.emplace_back(path == "[stack]" ? previous_end : start, end);
      previous_end = end;
    }
    line_start = line_end + 1;
  }
  g_sampler_counters.stack_maps_read.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Agent side: publishes a new list; the lists a handler may still be reading wait in *retired until
// no handler runs. Only while no handler can run: clear_stack_mappings().
inline void sampler_publish_stack_mappings(std::unique_ptr<StackMappings> next,
                                           std::vector<std::unique_ptr<StackMappings>>* retired) {
  static std::atomic<uint64_t> generation{0};
  next->generation = generation.fetch_add(1, std::memory_order_relaxed) + 1;
  const StackMappings* previous = g_stack_mappings.exchange(next.release(), std::memory_order_seq_cst);
  if (previous != nullptr) retired->emplace_back(const_cast<StackMappings*>(previous));
}

// --- unwinding in the handler ------------------------------------------------------------------------

struct SamplerUnwindCursor {
  uintptr_t* pcs;
  int capacity;
  int count;
  int signal_frame;  // index of the interrupted function's frame, -1 until seen
  bool truncated;
};

inline _Unwind_Reason_Code sampler_unwind_step(_Unwind_Context* context, void* arg) {
  SamplerUnwindCursor* cursor = static_cast<SamplerUnwindCursor*>(arg);
  int ip_before_instruction = 0;
  uintptr_t ip = _Unwind_GetIPInfo(context, &ip_before_instruction);
  if (ip == 0) return _URC_END_OF_STACK;
  if (cursor->count == cursor->capacity) {
    cursor->truncated = true;
    return _URC_END_OF_STACK;
  }
  if (ip_before_instruction) {
    // The frame the kernel interrupted: its pc is the instruction itself, not a return address.
    if (cursor->signal_frame < 0) cursor->signal_frame = cursor->count;
  } else {
    ip -= 1;  // a return address: step back into the call instruction so the caller resolves right
  }
  cursor->pcs[cursor->count++] = ip;
  return _URC_NO_REASON;
}

inline uintptr_t sampler_context_pc(void* ucontext) {
  if (ucontext == nullptr) return 0;
  const ucontext_t* uc = static_cast<const ucontext_t*>(ucontext);
#if defined(__x86_64__)
  return static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__i386__)
  return static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_EIP]);
#elif defined(__aarch64__)
  return static_cast<uintptr_t>(uc->uc_mcontext.pc);
#else
  (void)uc;
  return 0;
#endif
}

// --- table-driven unwinding (x86-64) -----------------------------------------------------------------

// ThreadSanitizer delivers signals late, from its own code, with the ucontext of the moment the signal
// arrived: walking the stack from those registers would read frames that no longer exist. There only
// libgcc is used (it unwinds the current stack).
#if defined(__SANITIZE_THREAD__)
#define PYROSCOPE_SAMPLER_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PYROSCOPE_SAMPLER_UNDER_TSAN 1
#endif
#endif

#if defined(__x86_64__) && defined(DLFO_EH_SEGMENT_TYPE) && !defined(PYROSCOPE_SAMPLER_UNDER_TSAN)
#define PYROSCOPE_SAMPLER_TABLE_UNWINDER 1

// From row.pc (an offset from the module's map start) up to the next row: how to find the caller.
struct UnwindRow {
  uint32_t pc;
  int32_t cfa_offset;
  int16_t rbp_offset;    // rbp saved at CFA + rbp_offset, or kRbpKept; kCfaPlt: the entry's threshold
  uint8_t cfa_register;  // kCfaRsp, kCfaRbp, kCfaPlt, kCfaSignalFrame, kRuleUnsupported, kNoRule
  uint8_t outermost;     // return address undefined: the thread's first frame
};
static_assert(sizeof(UnwindRow) == 12, "unwind rows are 12 bytes");
constexpr int16_t kRbpKept = INT16_MIN;
constexpr uint8_t kCfaRsp = 0, kCfaRbp = 1, kRuleUnsupported = 2, kNoRule = 3;
// A PLT entry (binutils' CFI for .plt): CFA = rsp + cfa_offset + ((rip & 15) >= threshold ? 8 : 0).
constexpr uint8_t kCfaPlt = 4;
// The signal trampoline (__restore_rt): the interrupted registers are in the kernel's ucontext at rsp.
constexpr uint8_t kCfaSignalFrame = 5;
constexpr uintptr_t kUcontextRsp = offsetof(ucontext_t, uc_mcontext) + REG_RSP * sizeof(greg_t);
constexpr uintptr_t kUcontextRbp = offsetof(ucontext_t, uc_mcontext) + REG_RBP * sizeof(greg_t);
constexpr uintptr_t kUcontextRip = offsetof(ucontext_t, uc_mcontext) + REG_RIP * sizeof(greg_t);

// The rows of one loaded object. Immutable once published; freed only when no handler runs.
struct UnwindTable {
  const void* eh_frame_hdr = nullptr;  // identity, with the three fields below (_dl_find_object's)
  uintptr_t map_start = 0, map_end = 0;
  const void* link_map = nullptr;
  uint64_t fingerprint = 0;  // of the object's .eh_frame_hdr search table: another library loaded at the
                             // same place differs here
  bool usable = false;  // false: the object's .eh_frame_hdr has no search table; its stacks end there
  std::vector<UnwindRow> rows;
  // pages[k] = number of rows with pc < k * 4096. The handler runs with cold caches: a search confined
  // to one page's rows touches two or three cache lines instead of log2(rows).
  std::vector<uint32_t> pages;

  void index_pages() {
    const size_t page_count = ((map_end - map_start) >> 12) + 2;
    pages.assign(page_count, 0);
    size_t r = 0;
    for (size_t k = 0; k < page_count; k++) {
      while (r < rows.size() && (uintptr_t(rows[r].pc) >> 12) < k) r++;
      pages[k] = uint32_t(r);
    }
  }

  const UnwindRow* find(uintptr_t offset) const {
    const size_t page = offset >> 12;
    if (page + 1 >= pages.size()) return nullptr;
    // The row in force at offset is the last with pc <= offset: among this page's rows, or the last
    // row before the page.
    size_t lo = pages[page], hi = pages[page + 1];
    while (lo < hi) {  // first row with pc > offset
      const size_t mid = (lo + hi) / 2;
      if (rows[mid].pc <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo == 0 ? nullptr : &rows[lo - 1];
  }
};

// --- .eh_frame parsing (agent thread only) ---

struct DwarfCursor {
  const uint8_t* p;
  const uint8_t* end;
  bool ok = true;

  uint8_t u8() {
    if (p >= end) return fail();
    return *p++;
  }
  template <class T>
  T fixed() {
    if (end - p < static_cast<ptrdiff_t>(sizeof(T))) return T(fail());
    T v;
    std::memcpy(&v, p, sizeof v);
    p += sizeof v;
    return v;
  }
  uint64_t uleb() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const uint8_t b = u8();
      v |= uint64_t(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return fail();
  }
  int64_t sleb() {
    int64_t v = 0;
    int shift = 0;
    uint8_t b;
    do {
      b = u8();
      v |= int64_t(b & 0x7f) << shift;
      shift += 7;
    } while ((b & 0x80) && shift < 64);
    if (shift < 64 && (b & 0x40)) v |= -(int64_t(1) << shift);
    return v;
  }
  // A DW_EH_PE-encoded pointer. data_base: for datarel (.eh_frame_hdr's own address).
  uintptr_t encoded(uint8_t encoding, uintptr_t data_base) {
    if (encoding == 0xff) return 0;  // DW_EH_PE_omit
    const uintptr_t here = reinterpret_cast<uintptr_t>(p);
    uintptr_t value;
    switch (encoding & 0x0f) {
      case 0x00: value = fixed<uint64_t>(); break;
      case 0x01: value = uleb(); break;
      case 0x02: value = fixed<uint16_t>(); break;
      case 0x03: value = fixed<uint32_t>(); break;
      case 0x04: value = fixed<uint64_t>(); break;
      case 0x09: value = uintptr_t(sleb()); break;
      case 0x0a: value = uintptr_t(intptr_t(fixed<int16_t>())); break;
      case 0x0b: value = uintptr_t(intptr_t(fixed<int32_t>())); break;
      case 0x0c: value = uintptr_t(fixed<int64_t>()); break;
      default: return fail();
    }
    switch (encoding & 0x70) {
      case 0x00: break;
      case 0x10: value += here; break;       // pcrel
      case 0x30: value += data_base; break;  // datarel
      default: return fail();                // textrel, funcrel, aligned: not used on x86-64 Linux
    }
    if (encoding & 0x80) return fail();  // indirect: only for personality pointers, which we skip
    return value;
  }
  uint64_t fail() {
    ok = false;
    p = end;
    return 0;
  }
};

struct CieInfo {
  uint64_t code_align = 1;
  int64_t data_align = -8;
  uint64_t return_register = 16;
  uint8_t fde_encoding = 0;
  bool augmented = false;     // 'z': FDEs carry an augmentation length
  bool signal_frame = false;  // 'S': the kernel's signal trampoline
  const uint8_t* instructions = nullptr;
  const uint8_t* end = nullptr;
};

// limit: the end of the section the CIE must lie in (nullptr: trust its length, as libgcc does).
inline bool parse_cie(const uint8_t* cie, const uint8_t* limit, CieInfo* out) {
  uint32_t length32;
  std::memcpy(&length32, cie, 4);
  if (length32 == 0 || length32 == 0xffffffffu) return false;  // 64-bit DWARF: not produced for x86-64 code
  if (limit != nullptr && (limit - cie < 4 || uint64_t(limit - cie - 4) < length32)) return false;
  DwarfCursor c{cie + 4, cie + 4 + length32};
  if (c.fixed<uint32_t>() != 0) return false;  // a CIE has id 0 in .eh_frame
  const uint8_t version = c.u8();
  if (version != 1 && version != 3) return false;
  const char* augmentation = reinterpret_cast<const char*>(c.p);
  const void* nul = std::memchr(c.p, 0, size_t(c.end - c.p));
  if (nul == nullptr) return false;
  c.p = static_cast<const uint8_t*>(nul) + 1;
  if (augmentation[0] == 'e' && augmentation[1] == 'h') return false;  // pre-2000 GCC
  out->code_align = c.uleb();
  out->data_align = c.sleb();
  out->return_register = version == 1 ? c.u8() : c.uleb();
  if (augmentation[0] == 'z') {
    out->augmented = true;
    const uint64_t length = c.uleb();
    const uint8_t* after = c.p + length;
    for (const char* a = augmentation + 1; *a != '\0' && c.ok; a++) {
      if (*a == 'R') {
        out->fde_encoding = c.u8();
      } else if (*a == 'L') {
        c.u8();
      } else if (*a == 'P') {
        const uint8_t encoding = c.u8();
        c.encoded(encoding & 0x7f, 0);  // the personality routine: read past it
      } else if (*a == 'S') {
        out->signal_frame = true;
      } else if (*a != 'B') {
        break;  // unknown letter: the length field lets us skip the rest
      }
    }
    c.p = after;
  }
  if (!c.ok || c.p > c.end) return false;
  out->instructions = c.p;
  out->end = c.end;
  return true;
}

// The register rules the handler needs: CFA, rbp, return address (x86-64 DWARF numbers 7, 6, 16).
struct CfaRules {
  uint8_t cfa_register = kRuleUnsupported;
  int64_t cfa_offset = 0;
  int64_t rbp_offset = 0;
  int plt_threshold = 0;
  bool rbp_saved = false;
  bool rbp_unsupported = false;
  bool ra_undefined = false;
  bool ra_unsupported = false;
  bool cfa_expression = false;
  bool rbp_in_context = false;  // signal frame: rbp and the return address are the ucontext's
  bool ra_in_context = false;

  UnwindRow row(uint32_t pc) const {
    UnwindRow r{pc, 0, kRbpKept, kRuleUnsupported, 0};
    if (ra_undefined) {
      r.cfa_register = kCfaRsp;  // unused: the handler stops at an outermost frame
      r.outermost = 1;
      return r;
    }
    if (cfa_register == kCfaSignalFrame) {
      if (rbp_in_context && ra_in_context) r.cfa_register = kCfaSignalFrame;
      return r;
    }
    if (cfa_expression || ra_unsupported || rbp_unsupported || cfa_register == kRuleUnsupported) return r;
    if (cfa_offset < INT32_MIN || cfa_offset > INT32_MAX) return r;
    if (cfa_register == kCfaPlt) {
      if (rbp_saved) return r;  // a PLT entry never saves rbp; anything else is not the pattern we know
      r.cfa_register = kCfaPlt;
      r.cfa_offset = int32_t(cfa_offset);
      r.rbp_offset = int16_t(plt_threshold);
      return r;
    }
    if (rbp_saved && (rbp_offset <= INT16_MIN || rbp_offset > INT16_MAX)) return r;
    r.cfa_register = cfa_register;
    r.cfa_offset = int32_t(cfa_offset);
    r.rbp_offset = rbp_saved ? int16_t(rbp_offset) : kRbpKept;
    return r;
  }
};

// "DW_OP_breg7 k; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litN; DW_OP_ge; DW_OP_lit3; DW_OP_shl;
// DW_OP_plus": binutils' CFA expression for PLT entries, CFA = rsp + k + ((rip & 15) >= N ? 8 : 0).
inline bool match_plt_expression(const uint8_t* p, size_t n, int64_t* offset, int* threshold) {
  DwarfCursor c{p, p + n};
  if (c.u8() != 0x77) return false;  // DW_OP_breg7
  *offset = c.sleb();
  if (c.u8() != 0x80 || c.sleb() != 0) return false;  // DW_OP_breg16 0
  if (c.u8() != 0x3f || c.u8() != 0x1a) return false;  // DW_OP_lit15 DW_OP_and
  const uint8_t lit = c.u8();
  if (lit < 0x30 || lit > 0x4f) return false;  // DW_OP_lit0..31
  *threshold = lit - 0x30;
  if (c.u8() != 0x2a || c.u8() != 0x33 || c.u8() != 0x24 || c.u8() != 0x22) return false;  // ge lit3 shl plus
  return c.ok && c.p == c.end;
}

// "DW_OP_breg7 k" (with "; DW_OP_deref" when deref): an address k bytes above rsp, or the word there.
inline bool match_rsp_expression(const uint8_t* p, size_t n, bool deref, uintptr_t k) {
  DwarfCursor c{p, p + n};
  if (c.u8() != 0x77 || c.sleb() != int64_t(k)) return false;
  if (deref && c.u8() != 0x06) return false;
  return c.ok && c.p == c.end;
}

// Runs a CFA program from loc; appends a row whenever the rules change at a new address.
// Returns false on an instruction it does not know (the FDE's remaining range then falls back).
inline bool run_cfa_program(DwarfCursor c, const CieInfo& cie, const CfaRules& initial, CfaRules* rules,
                            uintptr_t* loc, uintptr_t map_start, std::vector<UnwindRow>* rows) {
  CfaRules stack[8];
  int depth = 0;
  auto advance = [&](uint64_t delta) {
    if (rows != nullptr) {
      const UnwindRow row = rules->row(uint32_t(*loc - map_start));
      if (rows->empty() || rows->back().pc != row.pc) {
        rows->push_back(row);
      } else {
        rows->back() = row;
      }
    }
    *loc += delta * cie.code_align;
  };
  auto set_offset = [&](uint64_t reg, int64_t offset) {
    if (reg == 6) {
      rules->rbp_saved = true;
      rules->rbp_unsupported = false;
      rules->rbp_offset = offset;
    } else if (reg == cie.return_register) {
      rules->ra_unsupported = offset != -8;  // the handler reads the return address at CFA - 8
      rules->ra_undefined = false;
    }
  };
  auto restore = [&](uint64_t reg) {
    if (reg == 6) {
      rules->rbp_saved = initial.rbp_saved;
      rules->rbp_offset = initial.rbp_offset;
      rules->rbp_unsupported = initial.rbp_unsupported;
    } else if (reg == cie.return_register) {
      rules->ra_undefined = initial.ra_undefined;
      rules->ra_unsupported = initial.ra_unsupported;
    }
  };
  auto unsupported_register = [&](uint64_t reg) {
    if (reg == 6) rules->rbp_unsupported = true;
    if (reg == cie.return_register) rules->ra_unsupported = true;
    if (reg == 7) rules->cfa_expression = true;  // rsp itself given by a rule: not a plain CFA
  };
  auto define_cfa_register = [&](uint64_t reg) {
    rules->cfa_register = reg == 7 ? kCfaRsp : reg == 6 ? kCfaRbp : kRuleUnsupported;
    rules->cfa_expression = false;
  };
  while (c.ok && c.p < c.end) {
    const uint8_t op = c.u8();
    switch (op & 0xc0) {
      case 0x40: advance(op & 0x3f); continue;
      case 0x80: set_offset(op & 0x3f, int64_t(c.uleb()) * cie.data_align); continue;
      case 0xc0: restore(op & 0x3f); continue;
      default: break;
    }
    switch (op) {
      case 0x00: break;  // nop
      case 0x01: {       // set_loc
        const uintptr_t target = c.encoded(cie.fde_encoding, 0);
        if (target < *loc) return false;
        advance(0);
        *loc = target;
        break;
      }
      case 0x02: advance(c.u8()); break;
      case 0x03: advance(c.fixed<uint16_t>()); break;
      case 0x04: advance(c.fixed<uint32_t>()); break;
      case 0x05: { const uint64_t reg = c.uleb(); set_offset(reg, int64_t(c.uleb()) * cie.data_align); break; }
      case 0x06: restore(c.uleb()); break;
      case 0x07: {  // undefined
        const uint64_t reg = c.uleb();
        if (reg == cie.return_register) rules->ra_undefined = true;
        else if (reg == 6) rules->rbp_unsupported = true;
        break;
      }
      case 0x08: {  // same_value
        const uint64_t reg = c.uleb();
        if (reg == 6) {
          rules->rbp_saved = false;
          rules->rbp_unsupported = false;
        } else if (reg == cie.return_register) {
          rules->ra_unsupported = true;
        }
        break;
      }
      case 0x09: { const uint64_t reg = c.uleb(); c.uleb(); unsupported_register(reg); break; }  // register
      case 0x0a:  // remember_state
        if (depth == 8) return false;
        stack[depth++] = *rules;
        break;
      case 0x0b:  // restore_state
        if (depth == 0) return false;
        *rules = stack[--depth];
        break;
      case 0x0c: { const uint64_t reg = c.uleb(); define_cfa_register(reg); rules->cfa_offset = int64_t(c.uleb()); break; }
      case 0x0d: define_cfa_register(c.uleb()); break;
      case 0x0e: rules->cfa_offset = int64_t(c.uleb()); break;
      case 0x0f: {  // def_cfa_expression: the PLT's and the signal trampoline's are understood
        const uint64_t n = c.uleb();
        const uint8_t* expression = c.p;
        const size_t length = size_t(std::min<uint64_t>(n, uint64_t(c.end - c.p)));
        c.p += length;
        int64_t offset = 0;
        int threshold = 0;
        if (match_plt_expression(expression, length, &offset, &threshold)) {
          rules->cfa_register = kCfaPlt;
          rules->cfa_offset = offset;
          rules->plt_threshold = threshold;
          rules->cfa_expression = false;
        } else if (cie.signal_frame && match_rsp_expression(expression, length, true, kUcontextRsp)) {
          rules->cfa_register = kCfaSignalFrame;
          rules->cfa_expression = false;
        } else {
          rules->cfa_expression = true;
        }
        break;
      }
      case 0x10: case 0x16: {  // expression, val_expression
        const uint64_t reg = c.uleb();
        const uint64_t n = c.uleb();
        const uint8_t* expression = c.p;
        const size_t length = size_t(std::min<uint64_t>(n, uint64_t(c.end - c.p)));
        c.p += length;
        if (op == 0x10 && cie.signal_frame && reg == 6 && match_rsp_expression(expression, length, false, kUcontextRbp)) {
          rules->rbp_in_context = true;
        } else if (op == 0x10 && cie.signal_frame && reg == cie.return_register &&
                   match_rsp_expression(expression, length, false, kUcontextRip)) {
          rules->ra_in_context = true;
        } else {
          unsupported_register(reg);
        }
        break;
      }
      case 0x11: { const uint64_t reg = c.uleb(); set_offset(reg, c.sleb() * cie.data_align); break; }
      case 0x12: { const uint64_t reg = c.uleb(); define_cfa_register(reg); rules->cfa_offset = c.sleb() * cie.data_align; break; }
      case 0x13: rules->cfa_offset = c.sleb() * cie.data_align; break;
      case 0x14: { const uint64_t reg = c.uleb(); c.uleb(); unsupported_register(reg); break; }  // val_offset
      case 0x15: { const uint64_t reg = c.uleb(); c.sleb(); unsupported_register(reg); break; }  // val_offset_sf
      case 0x2e: c.uleb(); break;  // GNU_args_size
      case 0x2f: { const uint64_t reg = c.uleb(); set_offset(reg, -int64_t(c.uleb()) * cie.data_align); break; }
      default: return false;
    }
  }
  return c.ok;
}

// One FDE of an object, by the first pc it covers.
struct FdeRef {
  uintptr_t begin;
  const uint8_t* fde;
};

// The FDEs listed in an .eh_frame_hdr's search table, already sorted. False without a usable table.
inline bool collect_fdes_from_hdr(const uint8_t* hdr, std::vector<FdeRef>* fdes) {
  // .eh_frame_hdr: version 1, encodings, .eh_frame pointer, then a sorted (pc, FDE) search table.
  if (hdr[0] != 1) return false;
  const uint8_t frame_encoding = hdr[1], count_encoding = hdr[2], table_encoding = hdr[3];
  DwarfCursor c{hdr + 4, hdr + 4 + 64};
  const uintptr_t data_base = reinterpret_cast<uintptr_t>(hdr);
  c.encoded(frame_encoding, data_base);
  const uint64_t count = c.encoded(count_encoding, data_base);
  if (!c.ok || count_encoding == 0xff || table_encoding != 0x3b) return false;  // datarel|sdata4 table
  const int32_t* table = reinterpret_cast<const int32_t*>(c.p);
  fdes->reserve(size_t(count));
  for (uint64_t i = 0; i < count; i++)
    fdes->push_back(FdeRef{uintptr_t(hdr + table[2 * i]), hdr + table[2 * i + 1]});
  return true;
}

// The FDEs of an .eh_frame section, read from its start to its zero terminator (or its end), sorted.
// For an executable linked without --eh-frame-hdr: gcc passes it to dynamic links only, so a -static
// executable has no search table.
inline bool collect_fdes_from_eh_frame(const uint8_t* section, size_t size, std::vector<FdeRef>* fdes) {
  const uint8_t* const end = section + size;
  std::unordered_map<const uint8_t*, CieInfo> cies;
  for (const uint8_t* entry = section; end - entry >= 8;) {
    uint32_t length;
    std::memcpy(&length, entry, 4);
    if (length == 0) break;                                  // the terminator crtend.o adds
    if (length == 0xffffffffu || uint64_t(end - entry - 4) < length) return false;
    const uint8_t* next = entry + 4 + length;
    uint32_t id;
    std::memcpy(&id, entry + 4, 4);
    if (id != 0) {  // an FDE: id is the distance back to its CIE
      const uint8_t* cie_address = entry + 4 - id;
      auto found = cies.find(cie_address);
      if (found == cies.end()) {
        CieInfo info;
        if (cie_address < section || !parse_cie(cie_address, end, &info)) info.instructions = nullptr;
        found = cies.emplace(cie_address, info).first;
      }
      if (found->second.instructions != nullptr) {
        DwarfCursor f{entry + 8, next};
        const uintptr_t begin = f.encoded(found->second.fde_encoding, 0);
        if (f.ok) fdes->push_back(FdeRef{begin, entry});
      }
    }
    entry = next;
  }
  std::sort(fdes->begin(), fdes->end(), [](const FdeRef& a, const FdeRef& b) { return a.begin < b.begin; });
  return true;
}

// The rows of the FDEs (sorted by begin) that lie inside [map_start, map_end).
inline bool build_unwind_rows(const std::vector<FdeRef>& fdes, uintptr_t map_start, uintptr_t map_end,
                              std::vector<UnwindRow>* rows) {
  if (map_end - map_start > UINT32_MAX) return false;  // row pcs are 32-bit offsets
  std::unordered_map<const uint8_t*, CieInfo> cies;
  rows->reserve(fdes.size() * 4);
  for (size_t i = 0; i < fdes.size(); i++) {
    const uint8_t* fde = fdes[i].fde;
    uint32_t length;
    std::memcpy(&length, fde, 4);
    if (length == 0 || length == 0xffffffffu) continue;
    DwarfCursor f{fde + 4, fde + 4 + length};
    const uint8_t* cie_field = f.p;
    const uint32_t cie_offset = f.fixed<uint32_t>();
    const uint8_t* cie_address = cie_field - cie_offset;
    auto found = cies.find(cie_address);
    if (found == cies.end()) {
      CieInfo info;
      if (!parse_cie(cie_address, nullptr, &info)) info.instructions = nullptr;
      found = cies.emplace(cie_address, info).first;
    }
    const CieInfo& cie = found->second;
    if (cie.instructions == nullptr) continue;  // its range stays uncovered: stacks end there
    const uintptr_t begin = f.encoded(cie.fde_encoding, 0);
    const uintptr_t range = f.encoded(cie.fde_encoding & 0x0f, 0);
    if (cie.augmented) {
      const uint64_t n = f.uleb();
      f.p += std::min<uint64_t>(n, uint64_t(f.end - f.p));
    }
    if (!f.ok || begin < map_start || begin + range > map_end || range == 0) continue;
    // The CIE's initial instructions give the rules at the function's entry.
    CfaRules initial;
    uintptr_t loc = begin;
    if (!run_cfa_program(DwarfCursor{cie.instructions, cie.end}, cie, initial, &initial, &loc, map_start, nullptr))
      continue;
    CfaRules rules = initial;
    loc = begin;
    const size_t first_row = rows->size();
    if (!rows->empty() && rows->back().pc > uint32_t(begin - map_start)) continue;  // overlapping FDE
    if (!run_cfa_program(f, cie, initial, &rules, &loc, map_start, rows)) {
      // Unknown instruction: what was decoded holds; the rest of the function has no rule.
      rules.cfa_expression = true;
    }
    if (loc < begin + range) {
      const UnwindRow row = rules.row(uint32_t(loc - map_start));
      if (rows->size() > first_row && rows->back().pc == row.pc) rows->back() = row;
      else rows->push_back(row);
    }
    // The end of the function: no rule until the next FDE begins.
    const uint32_t end_pc = uint32_t(begin + range - map_start);
    const uintptr_t next = i + 1 < fdes.size() ? fdes[i + 1].begin : UINTPTR_MAX;
    const uint32_t next_begin = next >= map_start && next - map_start < UINT32_MAX ? uint32_t(next - map_start) : UINT32_MAX;
    if (next_begin > end_pc) rows->push_back(UnwindRow{end_pc, 0, kRbpKept, kNoRule, 0});
  }
  // Drop rows that repeat their predecessor's rule.
  size_t out = 0;
  for (size_t i = 0; i < rows->size(); i++) {
    const UnwindRow& r = (*rows)[i];
    if (out > 0) {
      const UnwindRow& p = (*rows)[out - 1];
      if (p.cfa_offset == r.cfa_offset && p.rbp_offset == r.rbp_offset && p.cfa_register == r.cfa_register &&
          p.outermost == r.outermost)
        continue;
    }
    (*rows)[out++] = r;
  }
  rows->resize(out);
  return true;
}

// FNV-1a over an object's FDE list (every function start and FDE address): tells a library loaded
// anew at the same address from the one that was there, unless their unwind data is the same (and then
// so are the rows).
inline uint64_t fde_list_fingerprint(const std::vector<FdeRef>& fdes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const FdeRef& f : fdes) {
    const uint64_t words[2] = {uint64_t(f.begin), uint64_t(reinterpret_cast<uintptr_t>(f.fde))};
    for (uint64_t w : words) {
      for (int i = 0; i < 8; i++) h = (h ^ ((w >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    }
  }
  return h;
}

// The PT_GNU_EH_FRAME of an object as dl_iterate_phdr describes it, or nullptr.
inline const void* eh_frame_hdr_of(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; i++) {
    if (info->dlpi_phdr[i].p_type == PT_GNU_EH_FRAME)
      return reinterpret_cast<const void*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
  }
  return nullptr;
}

// Tables by .eh_frame_hdr address (open addressing). The agent is the only writer; handlers read. A
// handler that finds no table leaves a request the agent serves on its next wake.
class UnwindTables {
 public:
  const UnwindTable* find(const dl_find_object& object) const {
    const uintptr_t key = reinterpret_cast<uintptr_t>(object.dlfo_eh_frame);
    for (size_t i = 0; i < kSlots; i++) {
      const UnwindTable* table = slots_[(hash(key) + i) & (kSlots - 1)].load(std::memory_order_seq_cst);
      if (table == nullptr) return nullptr;
      if (table == tombstone()) continue;
      if (same_object(*table, object)) return table;
    }
    return nullptr;
  }
  // The executable's table when _dl_find_object has no .eh_frame_hdr for it (prepare_executable).
  const UnwindTable* executable() const { return executable_.load(std::memory_order_seq_cst); }
  // Handler side: ask for a table (dropped if the request slot is busy; asked again next sample).
  // True if this call placed the request.
  bool request(const void* eh_frame_hdr) {
    const void* expected = nullptr;
    return requests_[hash(reinterpret_cast<uintptr_t>(eh_frame_hdr)) & (kRequests - 1)].compare_exchange_strong(
        expected, eh_frame_hdr, std::memory_order_acq_rel);
  }

  // Agent side: builds the requested tables. Returns how many were added.
  size_t serve_requests() {
    std::vector<const void*> wanted;
    for (auto& slot : requests_) {
      if (const void* hdr = slot.exchange(nullptr, std::memory_order_acq_rel)) wanted.push_back(hdr);
    }
    return build_tables(wanted);
  }

  // Agent side, at start: builds the tables of the objects holding these code addresses now, so the
  // frames every stack passes through (the program, libc's thread entry, libstdc++'s) unwind from the
  // first sample, however late a loaded machine lets the agent serve the requests of handlers.
  size_t prebuild(const std::vector<const void*>& code_addresses) {
    std::vector<const void*> wanted;
    for (const void* address : code_addresses) {
      dl_find_object object;
      if (address != nullptr && _dl_find_object(const_cast<void*>(address), &object) == 0 &&
          object.dlfo_eh_frame != nullptr && find(object) == nullptr)
        wanted.push_back(object.dlfo_eh_frame);
    }
    return build_tables(wanted);
  }

  // Builds the tables of the objects whose .eh_frame_hdr is listed. Each is built inside a
  // dl_iterate_phdr callback: the loader holds its lock there, and glibc's dlclose unmaps under the same
  // lock, so no object can go away while its .eh_frame is read. Returns how many were added.
  size_t build_tables(const std::vector<const void*>& wanted) {
    if (wanted.empty()) return 0;
    struct Pass {
      UnwindTables* self;
      const std::vector<const void*>* wanted;
      size_t added;
    } pass{this, &wanted, 0};
    std::lock_guard<std::mutex> guard(sampler_loader_guard());
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* arg) {
          Pass* p = static_cast<Pass*>(arg);
          const void* hdr = eh_frame_hdr_of(info);
          if (hdr != nullptr && std::find(p->wanted->begin(), p->wanted->end(), hdr) != p->wanted->end() &&
              p->self->build_locked(hdr))
            p->added++;
          return 0;
        },
        &pass);
    return pass.added;
  }

  // Agent side, when the loader's counters changed: unpublishes the tables of objects that are gone,
  // or were replaced by another object at the same place (checked under the loader's lock). Their
  // memory waits in the retired list until no handler can be reading it (free_retired).
  void forget_unloaded() {
    std::vector<bool> alive(kSlots, false);
    struct Pass {
      UnwindTables* self;
      std::vector<bool>* alive;
    } pass{this, &alive};
    {
      std::lock_guard<std::mutex> guard(sampler_loader_guard());
      dl_iterate_phdr(
          [](dl_phdr_info* info, size_t, void* arg) {
            Pass* p = static_cast<Pass*>(arg);
            const void* hdr = eh_frame_hdr_of(info);
            if (hdr == nullptr) return 0;
            dl_find_object object;
            if (_dl_find_object(const_cast<void*>(hdr), &object) != 0 || object.dlfo_eh_frame != hdr) return 0;
            bool have_fingerprint = false;
            uint64_t fingerprint = 0;
            for (size_t i = 0; i < kSlots; i++) {
              const UnwindTable* table = p->self->slots_[i].load(std::memory_order_relaxed);
              if (table == nullptr || table == tombstone() || !same_object(*table, object)) continue;
              if (!have_fingerprint) {
                std::vector<FdeRef> fdes;
                collect_fdes_from_hdr(static_cast<const uint8_t*>(hdr), &fdes);
                fingerprint = fde_list_fingerprint(fdes);
                have_fingerprint = true;
              }
              if (table->fingerprint == fingerprint) (*p->alive)[i] = true;
            }
            return 0;
          },
          &pass);
    }
    for (size_t i = 0; i < kSlots; i++) {
      const UnwindTable* table = slots_[i].load(std::memory_order_relaxed);
      if (table == nullptr || table == tombstone() || alive[i]) continue;
      slots_[i].store(tombstone(), std::memory_order_seq_cst);
      auto owned = owned_.find(table);
      row_bytes_ -= bytes_of(*table);
      retired_.push_back(std::move(owned->second));
      owned_.erase(owned);
    }
  }

  // Agent side: frees the unpublished tables once no handler runs.
  void free_retired() {
    if (retired_.empty() || !sampler_no_handler_running()) return;
    g_sampler_counters.tables_freed.fetch_add(retired_.size(), std::memory_order_relaxed);
    retired_.clear();
  }

  // Agent side, before the first timer is armed: when _dl_find_object has no .eh_frame_hdr for the
  // executable (a -static one: gcc passes --eh-frame-hdr to dynamic links only), builds its table from
  // its PT_GNU_EH_FRAME or, without one, from the .eh_frame section that /proc/self/exe's section
  // headers name. False, with the reason, when its frames will have no table.
  bool prepare_executable(std::string* problem) {
    if (executable_.load(std::memory_order_relaxed) != nullptr) return true;
    const uintptr_t entry = static_cast<uintptr_t>(getauxval(AT_ENTRY));
    dl_find_object object;
    if (entry != 0 && _dl_find_object(reinterpret_cast<void*>(entry), &object) == 0 && object.dlfo_eh_frame != nullptr)
      return true;  // the usual case: looked up per sample like any library
    struct Program {
      uintptr_t bias = 0;
      const ElfW(Phdr)* phdr = nullptr;
      int phnum = 0;
    } program;
    {
      std::lock_guard<std::mutex> guard(sampler_loader_guard());
      dl_iterate_phdr(
          [](dl_phdr_info* info, size_t, void* arg) {
            Program* p = static_cast<Program*>(arg);
            p->bias = info->dlpi_addr;
            p->phdr = info->dlpi_phdr;
            p->phnum = info->dlpi_phnum;
            return 1;  // the program is listed first
          },
          &program);
    }
    if (program.phdr == nullptr) {
      *problem = "the executable is not listed by dl_iterate_phdr";
      return false;
    }
    std::unique_ptr<UnwindTable> table(new UnwindTable);
    table->map_start = UINTPTR_MAX;
    const uint8_t* hdr = nullptr;
    for (int i = 0; i < program.phnum; i++) {
      const ElfW(Phdr)& ph = program.phdr[i];
      if (ph.p_type == PT_GNU_EH_FRAME) hdr = reinterpret_cast<const uint8_t*>(program.bias + ph.p_vaddr);
      if (ph.p_type != PT_LOAD || (ph.p_flags & PF_X) == 0) continue;
      table->map_start = std::min<uintptr_t>(table->map_start, program.bias + ph.p_vaddr);
      table->map_end = std::max<uintptr_t>(table->map_end, program.bias + ph.p_vaddr + ph.p_memsz);
    }
    if (table->map_start >= table->map_end) {
      *problem = "the executable has no code segment";
      return false;
    }
    std::vector<FdeRef> fdes;
    if (hdr != nullptr) {
      table->usable = collect_fdes_from_hdr(hdr, &fdes);
      table->eh_frame_hdr = hdr;
    } else {
      uintptr_t section = 0;
      size_t size = 0;
      if (!find_executable_eh_frame(program.bias, &section, &size, problem)) return false;
      bool loaded = false;  // the section must be inside a loaded segment
      for (int i = 0; i < program.phnum; i++) {
        const ElfW(Phdr)& ph = program.phdr[i];
        const uintptr_t start = program.bias + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && section >= start && size <= ph.p_filesz && section - start <= ph.p_filesz - size)
          loaded = true;
      }
      if (!loaded) {
        *problem = "the executable's .eh_frame is not in a loaded segment";
        return false;
      }
      table->usable = collect_fdes_from_eh_frame(reinterpret_cast<const uint8_t*>(section), size, &fdes);
      table->eh_frame_hdr = reinterpret_cast<const void*>(section);
    }
    table->usable = table->usable && build_unwind_rows(fdes, table->map_start, table->map_end, &table->rows);
    if (!table->usable || table->rows.empty()) {
      *problem = "the executable's unwind data could not be read";
      return false;
    }
    table->rows.shrink_to_fit();
    table->index_pages();
    row_bytes_ += bytes_of(*table);
    g_sampler_counters.tables_built.fetch_add(1, std::memory_order_relaxed);
    executable_.store(table.get(), std::memory_order_seq_cst);
    executable_owned_ = std::move(table);
    return true;
  }

  // Only while no handler can run (between sessions).
  void clear() {
    for (auto& slot : slots_) slot.store(nullptr, std::memory_order_relaxed);
    for (auto& request : requests_) request.store(nullptr, std::memory_order_relaxed);
    executable_.store(nullptr, std::memory_order_relaxed);
    g_sampler_counters.tables_freed.fetch_add(owned_.size() + retired_.size() + (executable_owned_ ? 1 : 0),
                                              std::memory_order_relaxed);
    owned_.clear();
    retired_.clear();
    executable_owned_.reset();
    row_bytes_ = 0;
  }
  size_t table_count() const { return owned_.size() + (executable_owned_ ? 1 : 0); }
  size_t row_bytes() const { return row_bytes_; }

 private:
  static constexpr size_t kSlots = 512;
  static constexpr size_t kRequests = 64;
  std::atomic<const UnwindTable*> slots_[kSlots] = {};
  std::atomic<const void*> requests_[kRequests] = {};
  std::atomic<const UnwindTable*> executable_{nullptr};
  // Agent only: the published tables, those unpublished but perhaps still read, the executable's.
  std::unordered_map<const UnwindTable*, std::unique_ptr<UnwindTable>> owned_;
  std::vector<std::unique_ptr<UnwindTable>> retired_;
  std::unique_ptr<UnwindTable> executable_owned_;
  size_t row_bytes_ = 0;

  static size_t hash(uintptr_t key) { return size_t((key >> 4) * 0x9e3779b97f4a7c15ull >> 40); }
  // A removed table's slot (never dereferenced).
  static const UnwindTable* tombstone() { return reinterpret_cast<const UnwindTable*>(uintptr_t(1)); }
  static bool same_object(const UnwindTable& table, const dl_find_object& object) {
    return table.eh_frame_hdr == object.dlfo_eh_frame &&
           table.map_start == reinterpret_cast<uintptr_t>(object.dlfo_map_start) &&
           table.map_end == reinterpret_cast<uintptr_t>(object.dlfo_map_end) && table.link_map == object.dlfo_link_map;
  }
  static size_t bytes_of(const UnwindTable& table) {
    return table.rows.size() * sizeof(UnwindRow) + table.pages.size() * sizeof(uint32_t);
  }

  // Builds and publishes the table of the loaded object whose .eh_frame_hdr is hdr. Inside a
  // dl_iterate_phdr callback only (the object cannot be unloaded meanwhile).
  bool build_locked(const void* hdr) {
    dl_find_object object;
    if (_dl_find_object(const_cast<void*>(hdr), &object) != 0 || object.dlfo_eh_frame != hdr) return false;
    if (find(object) != nullptr) return false;
    std::unique_ptr<UnwindTable> table(new UnwindTable);
    table->eh_frame_hdr = hdr;
    table->map_start = reinterpret_cast<uintptr_t>(object.dlfo_map_start);
    table->map_end = reinterpret_cast<uintptr_t>(object.dlfo_map_end);
    table->link_map = object.dlfo_link_map;
    std::vector<FdeRef> fdes;
    table->usable = collect_fdes_from_hdr(static_cast<const uint8_t*>(hdr), &fdes) &&
                    build_unwind_rows(fdes, table->map_start, table->map_end, &table->rows);
    table->fingerprint = fde_list_fingerprint(fdes);
    if (!table->usable) table->rows.clear();
    table->rows.shrink_to_fit();
    if (table->usable) table->index_pages();
    if (!publish(table.get())) return false;  // 512 objects with samples at once: the rest end stacks
    row_bytes_ += bytes_of(*table);
    g_sampler_counters.tables_built.fetch_add(1, std::memory_order_relaxed);
    const UnwindTable* key = table.get();
    owned_.emplace(key, std::move(table));
    return true;
  }

  bool publish(const UnwindTable* table) {
    const uintptr_t key = reinterpret_cast<uintptr_t>(table->eh_frame_hdr);
    for (size_t i = 0; i < kSlots; i++) {
      std::atomic<const UnwindTable*>& slot = slots_[(hash(key) + i) & (kSlots - 1)];
      const UnwindTable* current = slot.load(std::memory_order_relaxed);
      // A tombstone is reused: a handler that passed it looking for another object still probes on
      // to the first empty slot, and one looking for this object finds it now or asks again.
      if (current == nullptr || current == tombstone()) {
        slot.store(table, std::memory_order_seq_cst);
        return true;
      }
    }
    return false;
  }

  // The address and size of the running executable's .eh_frame, from /proc/self/exe's section headers.
  static bool find_executable_eh_frame(uintptr_t bias, uintptr_t* address, size_t* size, std::string* problem) {
    const int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      *problem = std::string("cannot open /proc/self/exe: ") + std::strerror(errno);
      return false;
    }
    bool found = false;
    Elf64_Ehdr eh;
    std::vector<Elf64_Shdr> sections;
    if (pread(fd, &eh, sizeof eh, 0) == ssize_t(sizeof eh) && std::memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 &&
        eh.e_ident[EI_CLASS] == ELFCLASS64 && eh.e_shentsize == sizeof(Elf64_Shdr) && eh.e_shnum > 0 &&
        eh.e_shstrndx < eh.e_shnum) {
      sections.resize(eh.e_shnum);
      const size_t bytes = sections.size() * sizeof(Elf64_Shdr);
      if (pread(fd, sections.data(), bytes, off_t(eh.e_shoff)) == ssize_t(bytes)) {
        const Elf64_Shdr& names = sections[eh.e_shstrndx];
        std::vector<char> text(size_t(std::min<uint64_t>(names.sh_size, 1u << 20)) + 1, '\0');
        if (pread(fd, text.data(), text.size() - 1, off_t(names.sh_offset)) == ssize_t(text.size() - 1)) {
          for (const Elf64_Shdr& section : sections) {
            if (section.sh_name < text.size() - 1 && std::strcmp(text.data() + section.sh_name, ".eh_frame") == 0 &&
                section.sh_addr != 0 && section.sh_size != 0) {
              *address = bias + section.sh_addr;
              *size = size_t(section.sh_size);
              found = true;
            }
          }
        }
      }
    }
    close(fd);
    if (!found) *problem = "the executable has neither an .eh_frame_hdr nor a readable .eh_frame section";
    return found;
  }
};

// Created by start() before the handler is installed (so the handler never runs a static's first-use
// initialization) and never destroyed: handlers may still read it during exit.
inline UnwindTables& unwind_tables() {
  static UnwindTables* tables = new UnwindTables;
  return *tables;
}

// How a walk ended. Anything but complete leaves the sample marked kSlotIncomplete.
enum class UnwindEnd { complete, no_table, no_rule, outside_stack };

// How a walk reads the stack. The handler reads its own thread's stack directly, inside the mapping that
// holds the interrupted stack pointer (rule 4); the wall-clock sampler reads a blocked thread's stack
// from outside, through a copy (HandlerStack here, RemoteStack in the wall-clock section).
struct HandlerStack {
  uintptr_t low = 0, high = 0;
  bool known = false;
  explicit HandlerStack(uintptr_t sp) { known = sampler_stack_bounds(sp, &low, &high); }
  // A signal frame moved the walk to sp (possibly another stack: a handler on sigaltstack).
  void moved_to(uintptr_t sp) {
    if (sp < low || sp >= high) known = sampler_stack_bounds(sp, &low, &high);
  }
  // Reads other functions' frames on purpose (return addresses, saved rbp): not instrumented by ASan.
#if defined(__clang__) || defined(__GNUC__)
  __attribute__((no_sanitize("address")))
#endif
  bool read(uintptr_t a, uintptr_t* out) const {
    // An 8-byte read at address a stays inside the stack's mapping.
    if (!known || a < low || a >= high || high - a < 8) return false;
    *out = *reinterpret_cast<const uintptr_t*>(a);
    return true;
  }
};

// Walks a stack with the tables from pc, sp and (if bp_known) rbp, reading it through `stack`. pc is the
// instruction to resume at (the interrupted one, or the one after a system call). Without rbp the walk
// stops, [incomplete], at the first frame whose CFA is rbp-based before any frame restored rbp.
template <class Stack>
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("address")))
#endif
inline UnwindEnd sampler_unwind_walk(Stack& stack, uintptr_t pc, uintptr_t sp, uintptr_t bp, bool bp_known,
                                     uintptr_t* pcs, int capacity, int* depth, bool* truncated) {
  const UnwindTables& tables = unwind_tables();
  int n = 0;
  bool interrupted = true;  // pc is the interrupted instruction itself (the leaf, or above a signal frame)
  const UnwindTable* table = nullptr;
  UnwindEnd end = UnwindEnd::complete;
  for (;;) {
    const uintptr_t lookup = interrupted ? pc : pc - 1;  // a return address belongs to its call instruction
    if (n == capacity) {
      *truncated = true;
      break;
    }
    pcs[n++] = lookup;
    // Objects' mappings do not overlap: while the pc stays inside the current object, so does its table.
    if (table == nullptr || lookup < table->map_start || lookup >= table->map_end) {
      const UnwindTable* program = tables.executable();
      dl_find_object object;
      if (program != nullptr && lookup >= program->map_start && lookup < program->map_end) {
        table = program;
      } else if (_dl_find_object(reinterpret_cast<void*>(lookup), &object) != 0) {
        if (n == 1) end = UnwindEnd::no_rule;  // the leaf is in no object: JIT code, say
        break;  // a return address into no object: the stack's end
      } else if (object.dlfo_eh_frame == nullptr) {
        end = UnwindEnd::no_rule;  // an object without unwind data
        break;
      } else {
        table = tables.find(object);
        if (table == nullptr) {
          if (unwind_tables().request(object.dlfo_eh_frame)) sampler_wake_agent();
          end = UnwindEnd::no_table;
          break;
        }
      }
      if (!table->usable) {
        end = UnwindEnd::no_rule;
        break;
      }
    }
    const UnwindRow* row = table->find(lookup - table->map_start);
    if (row == nullptr || row->cfa_register == kNoRule || row->cfa_register == kRuleUnsupported ||
        (row->cfa_register == kCfaRbp && !bp_known)) {
      end = UnwindEnd::no_rule;
      break;
    }
    if (row->outermost) break;
    if (row->cfa_register == kCfaSignalFrame) {
      // __restore_rt: the frame below was interrupted by a signal; its registers are in the ucontext
      // at sp. It may have run on another stack (an application handler on sigaltstack).
      uintptr_t next_bp, next_pc, next_sp;
      if (!stack.read(sp + kUcontextRbp, &next_bp) || !stack.read(sp + kUcontextRsp, &next_sp) ||
          !stack.read(sp + kUcontextRip, &next_pc)) {
        end = UnwindEnd::outside_stack;
        break;
      }
      bp = next_bp;
      bp_known = true;
      pc = next_pc;
      sp = next_sp;
      interrupted = true;
      stack.moved_to(sp);
      if (pc == 0) break;
      continue;
    }
    uintptr_t cfa;
    if (row->cfa_register == kCfaRsp) cfa = sp + uintptr_t(intptr_t(row->cfa_offset));
    else if (row->cfa_register == kCfaRbp) cfa = bp + uintptr_t(intptr_t(row->cfa_offset));
    else cfa = sp + uintptr_t(intptr_t(row->cfa_offset)) + ((pc & 15) >= uintptr_t(row->rbp_offset) ? 8 : 0);  // PLT
    // The caller's frame is above this one, on the same stack.
    uintptr_t return_address;
    if (cfa <= sp || (cfa & 7) != 0 || !stack.read(cfa - 8, &return_address)) {
      end = UnwindEnd::outside_stack;
      break;
    }
    if (row->cfa_register != kCfaPlt && row->rbp_offset != kRbpKept) {
      if (!stack.read(cfa + uintptr_t(intptr_t(row->rbp_offset)), &bp)) {
        end = UnwindEnd::outside_stack;
        break;
      }
      bp_known = true;
    }
    sp = cfa;
    pc = return_address;
    interrupted = false;
    if (pc == 0) break;
  }
  *depth = n;
  return end;
}

// The handler's walk: the interrupted thread's own stack, from the registers in its ucontext.
inline UnwindEnd sampler_unwind_with_tables(const ucontext_t* uc, uintptr_t* pcs, int capacity, int* depth,
                                            bool* truncated) {
  const uintptr_t pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  const uintptr_t sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
  const uintptr_t bp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RBP]);
  HandlerStack stack(sp);
  return sampler_unwind_walk(stack, pc, sp, bp, true, pcs, capacity, depth, truncated);
}
#endif  // table unwinder

// Test hook: when set, each sample the tables unwound to its end is unwound with libgcc as well and
// differences are counted. Tests only: libgcc may take a lock (rule 1), which a test can rule out.
inline std::atomic<bool> g_sampler_verify_unwind{false};

inline int sampler_unwind_with_libgcc(void* ucontext, uintptr_t* pcs, int capacity, bool* truncated) {
  SamplerUnwindCursor cursor{pcs, capacity, 0, -1, false};
  _Unwind_Backtrace(sampler_unwind_step, &cursor);
  // Drop the handler's own frames (and the signal trampoline): the stack starts at the interrupted
  // function. Without a signal frame (sanitizer runtimes call handlers from their own code later) only
  // the handler's frame is dropped.
  const int first = cursor.signal_frame >= 0 ? cursor.signal_frame : (cursor.count > 0 ? 1 : 0);
  int depth = cursor.count - first;
  for (int i = 0; i < depth; i++) pcs[i] = pcs[first + i];
  if (depth <= 0) {
    const uintptr_t pc = sampler_context_pc(ucontext);
    depth = pc != 0 ? 1 : 0;
    if (pc != 0) pcs[0] = pc;
  }
  *truncated = cursor.truncated;
  return depth;
}

// The calling thread's tid, cached by the handler (initial-exec TLS; reset in a fork child's thread).
thread_local pid_t g_sampler_thread_tid PYROSCOPE_TLS_INITIAL_EXEC = 0;
// The handler's random state for timer jitter (initial-exec TLS; 0 until the thread's first sample).
thread_local uint64_t g_sampler_jitter_state PYROSCOPE_TLS_INITIAL_EXEC = 0;
// Where in its period the next expiry of the thread's own timer lies (sampler_rearm_with_jitter), for
// the timer id beside it. The process-wide timer's is shared (its signals go to any thread).
thread_local int g_sampler_jitter_timer PYROSCOPE_TLS_INITIAL_EXEC = -1;
thread_local int64_t g_sampler_jitter_offset_ns PYROSCOPE_TLS_INITIAL_EXEC = 0;
inline std::atomic<int64_t> g_process_jitter_offset_ns{0};

inline pid_t sampler_current_tid() {
  if (g_sampler_thread_tid == 0) g_sampler_thread_tid = static_cast<pid_t>(syscall(SYS_gettid));
  return g_sampler_thread_tid;
}

inline bool sampler_thread_is_timed(pid_t tid) {
  const std::atomic<uint64_t>* bits = g_timed_threads.load(std::memory_order_acquire);
  if (bits == nullptr || tid < 0 || uint32_t(tid) >= kTimedThreadBits) return true;  // unknown: never count twice
  return (bits[uint32_t(tid) / 64].load(std::memory_order_relaxed) >> (uint32_t(tid) % 64)) & 1u;
}

// Stratified jitter: the timer's schedule is a grid of periods, and each expiry is moved to a random
// point of its own period (the handler draws the next one when the signal arrives). The mean rate stays
// exactly one sample per period, but a workload that is itself periodic at the sampling rate is no
// longer sampled at the same phase every time (aliasing). Fixed intervals lock onto one phase;
// intervals drawn independently (a renewal process) would count a thread that lives a few periods
// short by about half a sample. The kernel re-armed the timer when it delivered the signal, to its last
// expiry plus the period (not to now plus the period: it checks CPU-time timers at ticks, and an
// interval counted from each late firing would lose a share of the samples); the handler moves that
// expiry within its period, so the grid stays anchored to the timer's own expiries. *offset_ns is where
// in its period the scheduled expiry lies (the first expiry, random within one period, counts as the
// middle); an expiry already in the past is set to "now" and the offset says so. The interval stays
// armed, so a signal skipped or lost never stops the timer. timer_gettime and timer_settime are
// async-signal-safe; for timers made with SIGEV_SIGNAL or SIGEV_THREAD_ID glibc's timer_t is the
// kernel's timer id the signal carries.
inline void sampler_rearm_with_jitter(const siginfo_t* info, int64_t* offset_ns) {
  const int64_t period = g_sampler_period_ns.load(std::memory_order_relaxed);
  if (period <= 0 || !g_sampler_jitter.load(std::memory_order_relaxed)) return;
  const timer_t timer = reinterpret_cast<timer_t>(static_cast<intptr_t>(info->si_timerid));
  itimerspec scheduled;
  if (timer_gettime(timer, &scheduled) != 0) return;
  const int64_t remaining = int64_t(scheduled.it_value.tv_sec) * 1000000000 + scheduled.it_value.tv_nsec;
  if (remaining <= 0) return;  // disarmed meanwhile
  uint64_t x = g_sampler_jitter_state;
  if (x == 0) x = (uint64_t(sampler_current_tid()) << 32 ^ uint64_t(sampler_monotonic_ns())) | 1u;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  g_sampler_jitter_state = x;
  constexpr int64_t kSoonestNs = 1000;
  int64_t next = remaining + static_cast<int64_t>(x % static_cast<uint64_t>(period)) - *offset_ns;
  if (next < kSoonestNs) next = kSoonestNs;
  *offset_ns += next - remaining;
  itimerspec spec;
  spec.it_interval.tv_sec = period / 1000000000;
  spec.it_interval.tv_nsec = period % 1000000000;
  spec.it_value.tv_sec = next / 1000000000;
  spec.it_value.tv_nsec = next % 1000000000;
  timer_settime(timer, 0, &spec, nullptr);
}

inline void sampler_take_sample(void* ucontext, uint32_t weight, uint16_t kind) {
  const int64_t started = sampler_monotonic_ns();
  SamplerRing* ring = g_sampler_ring.load(std::memory_order_acquire);
  uint64_t position = 0;
  SamplerSlot* slot = ring != nullptr ? ring->claim(&position) : nullptr;
  if (slot == nullptr) {
    g_sampler_counters.dropped_full.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  int depth = 0;
  bool truncated = false;
  bool complete = true;
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  UnwindEnd end = UnwindEnd::no_rule;
  if (ucontext != nullptr) {
    end = sampler_unwind_with_tables(static_cast<const ucontext_t*>(ucontext), slot->pcs, kSamplerMaxFrames, &depth,
                                     &truncated);
  }
  complete = end == UnwindEnd::complete;
  if (!complete) {
    (end == UnwindEnd::no_table      ? g_sampler_counters.incomplete_no_table
     : end == UnwindEnd::outside_stack ? g_sampler_counters.incomplete_stack
                                       : g_sampler_counters.incomplete_no_rule)
        .fetch_add(1, std::memory_order_relaxed);
  } else if (g_sampler_verify_unwind.load(std::memory_order_relaxed)) {
    uintptr_t check[kSamplerMaxFrames];
    bool check_truncated = false;
    const int check_depth = sampler_unwind_with_libgcc(ucontext, check, kSamplerMaxFrames, &check_truncated);
    bool same = check_depth == depth;
    for (int i = 0; same && i < depth; i++) same = check[i] == slot->pcs[i];
    (same ? g_sampler_counters.verify_same : g_sampler_counters.verify_different)
        .fetch_add(1, std::memory_order_relaxed);
  }
#else
  depth = sampler_unwind_with_libgcc(ucontext, slot->pcs, kSamplerMaxFrames, &truncated);
#endif
  slot->depth = static_cast<uint16_t>(depth);
  slot->flags = static_cast<uint16_t>((truncated ? kSlotTruncated : 0) | (complete ? 0 : kSlotIncomplete) | kind);
  slot->tag_set = g_thread_tag_set.load(std::memory_order_relaxed);
  slot->weight = weight;
  slot->tid = static_cast<uint32_t>(sampler_current_tid());
  slot->time_ns = started;
  if (!ring->publish(slot, position)) g_sampler_counters.lost_publishes.fetch_add(1, std::memory_order_relaxed);
  const uint64_t elapsed = static_cast<uint64_t>(sampler_monotonic_ns() - started);
  g_sampler_counters.samples.fetch_add(1, std::memory_order_relaxed);
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  const bool tables = complete;
#else
  const bool tables = false;
#endif
  if (tables) g_sampler_counters.table_unwinds.fetch_add(1, std::memory_order_relaxed);
  if (elapsed < kHandlerPreemptedNs) {
    g_sampler_counters.handler_ns.fetch_add(elapsed, std::memory_order_relaxed);
    g_sampler_counters.handler_timed.fetch_add(1, std::memory_order_relaxed);
    if (tables) {
      g_sampler_counters.table_handler_ns.fetch_add(elapsed, std::memory_order_relaxed);
      g_sampler_counters.table_timed.fetch_add(1, std::memory_order_relaxed);
    }
  }
  const int bucket = elapsed == 0 ? 0 : std::min(31, 63 - __builtin_clzll(elapsed));
  g_sampler_counters.handler_ns_log2[bucket].fetch_add(1, std::memory_order_relaxed);
}

// The SIGPROF handler (its rules are at the top of this section).
inline void sampler_on_signal(int, siginfo_t* info, void* ucontext) {
  const int saved_errno = errno;
  g_sampler_in_flight.fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see sampler_no_handler_running()
  // SI_TIMER: only our timers' signals are CPU samples (a kill(SIGPROF) or tgkill is ignored); a wall
  // sample is a SIGPROF the agent queued (SI_QUEUE from this process) whose value carries the session's
  // token in its upper 24 bits and the sample's weight in its low 8.
  if (g_sampler_enabled.load(std::memory_order_seq_cst) && info != nullptr) {
    if (info->si_code == SI_TIMER) {
      const uint32_t weight = 1u + static_cast<uint32_t>(info->si_overrun > 0 ? info->si_overrun : 0);
      const int cookie = info->si_value.sival_int;
      if (cookie != 0 && cookie == g_process_timer_cookie.load(std::memory_order_relaxed)) {
        // The process-wide timer: the kernel (>= 6.3) sends it to the thread that was running. It
        // counts only threads the agent has not given a timer yet (see ThreadTimers).
        int64_t offset = g_process_jitter_offset_ns.load(std::memory_order_relaxed);
        sampler_rearm_with_jitter(info, &offset);
        g_process_jitter_offset_ns.store(offset, std::memory_order_relaxed);
        if (sampler_thread_is_timed(sampler_current_tid())) {
          g_sampler_counters.process_skipped.fetch_add(1, std::memory_order_relaxed);
        } else {
          g_sampler_counters.process_samples.fetch_add(1, std::memory_order_relaxed);
          sampler_take_sample(ucontext, weight, 0);
        }
      } else {
        if (cookie != 0 && cookie == g_thread_timer_cookie.load(std::memory_order_relaxed)) {
          if (g_sampler_jitter_timer != info->si_timerid) {  // the thread's first signal from this timer
            g_sampler_jitter_timer = info->si_timerid;
            g_sampler_jitter_offset_ns = g_sampler_period_ns.load(std::memory_order_relaxed) / 2;
          }
          sampler_rearm_with_jitter(info, &g_sampler_jitter_offset_ns);
        }
        sampler_take_sample(ucontext, weight, 0);
      }
    } else if (info->si_code == SI_QUEUE) {
      const uint32_t value = static_cast<uint32_t>(info->si_value.sival_int);
      const uint32_t token = g_wall_token.load(std::memory_order_relaxed);
      if (token != 0 && (value & ~kWallWeightMask) == token &&
          info->si_pid == g_wall_pid.load(std::memory_order_relaxed))
        sampler_take_sample(ucontext, value & kWallWeightMask, kSlotWall);
    }
  }
  g_sampler_in_flight.fetch_sub(1, std::memory_order_release);
  errno = saved_errno;
}

// The signals the handler runs with blocked: every one but those the kernel raises for a fault in the
// handler itself (blocking those would turn a fault into a silent kill). glibc's sigfillset leaves out
// the signals it uses internally.
inline void sampler_handler_mask(sigset_t* mask) {
  sigfillset(mask);
  for (int synchronous : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) sigdelset(mask, synchronous);
}

// Calls, outside any handler, every function the handler calls (rule 3): with lazy binding a first
// call through the PLT runs the dynamic linker. The first _Unwind_Backtrace also initializes libgcc.
inline _Unwind_Reason_Code sampler_count_frame(_Unwind_Context* context, void* arg) {
  int ip_before_instruction = 0;
  if (_Unwind_GetIPInfo(context, &ip_before_instruction) != 0) ++*static_cast<int*>(arg);
  return _URC_NO_REASON;
}
inline void sampler_bind_handler_calls() {
  int frames = 0;
  _Unwind_Backtrace(sampler_count_frame, &frames);
  (void)sampler_monotonic_ns();
  (void)syscall(SYS_gettid);
  itimerspec no_timer{};
  (void)timer_gettime(reinterpret_cast<timer_t>(static_cast<intptr_t>(0x7fffffff)), &no_timer);  // EINVAL
  (void)timer_settime(reinterpret_cast<timer_t>(static_cast<intptr_t>(0x7fffffff)), 0, &no_timer, nullptr);  // EINVAL
#if defined(DLFO_EH_SEGMENT_TYPE)
  dl_find_object object;
  (void)_dl_find_object(reinterpret_cast<void*>(&sampler_bind_handler_calls), &object);
#endif
  const int wakeup = g_agent_wakeup_fd.load(std::memory_order_relaxed);
  if (wakeup >= 0) {
    const uint64_t zero = 0;  // adds nothing: binds write() without waking anyone
    ssize_t written = write(wakeup, &zero, sizeof zero);
    (void)written;
  }
  errno = errno;
}

// True if the executable has no PT_DYNAMIC: it is linked statically, so crtbeginT.o registered its
// frames with __register_frame_info and libgcc's FDE lookups take object_mutex.
inline bool sampler_executable_is_static() {
  const ElfW(Phdr)* phdr = reinterpret_cast<const ElfW(Phdr)*>(getauxval(AT_PHDR));
  const unsigned long count = getauxval(AT_PHNUM);
  if (phdr == nullptr) return false;
  for (unsigned long i = 0; i < count; i++) {
    if (phdr[i].p_type == PT_DYNAMIC) return false;
  }
  return true;
}

inline SamplerRing* sampler_ring_instance() {
  SamplerRing* ring = g_sampler_ring.load(std::memory_order_acquire);
  if (ring != nullptr) return ring;
  // Allocated once and never freed: a handler that is late by a few microseconds must never write
  // into freed memory. Only the pages the ring cycles through become resident (about 1 MiB).
  void* memory = mmap(nullptr, sizeof(SamplerSlot) * kSamplerRingSlots, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  ring = new SamplerRing;
  ring->slots = static_cast<SamplerSlot*>(memory);
  ring->mask = kSamplerRingSlots - 1;
  for (size_t i = 0; i < kSamplerRingSlots; i++) new (&ring->slots[i].sequence) std::atomic<uint64_t>(i);
  g_sampler_ring.store(ring, std::memory_order_release);
  return ring;
}

// --- per-thread CPU-time timers ----------------------------------------------------------------------

// The kernel's MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): the CPU-time clock of any thread of this
// process, as clock_getcpuclockid() would give for a pthread_t we do not have.
inline clockid_t sampler_thread_cpu_clock(pid_t tid) {
  return static_cast<clockid_t>((~static_cast<uint32_t>(tid) << 3) | 6u);
}

// The bit map of threads with a timer of their own (g_timed_threads), allocated once: 512 KiB of which
// only the pages of tids in use become resident.
inline std::atomic<uint64_t>* sampler_timed_threads_instance() {
  std::atomic<uint64_t>* bits = g_timed_threads.load(std::memory_order_acquire);
  if (bits != nullptr) return bits;
  void* memory = mmap(nullptr, kTimedThreadBits / 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  bits = static_cast<std::atomic<uint64_t>*>(memory);  // zero pages; lock-free atomics have no state
  g_timed_threads.store(bits, std::memory_order_release);
  return bits;
}

// Linux >= 6.3 sends a process-directed signal of a CPU-time timer to the thread that was running
// (commit bcb7ee79029d, "posix-timers: Prefer delivery of signals to the current thread"); older
// kernels prefer the main thread, which would charge other threads' time to its stack.
inline bool sampler_kernel_signals_running_thread(std::string* release) {
  utsname name;
  if (uname(&name) != 0) return false;
  *release = name.release;
  int major = 0, minor = 0;
  if (std::sscanf(name.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 3);
}

// Every thread gets a CPU-time timer of its own at the agent's rescan. A thread that lives less than a
// rescan (thread-per-request servers, parallel loops) would be missed: until its timer is armed, the
// process-wide CPU-time timer samples it. That timer's period is of the process's CPU time, and the
// kernel sends each expiry to the thread that was running, so each of its samples stands for a period
// of that thread's CPU time, as a per-thread timer's would; its samples of threads that have their own
// timer (or are the profiler's) are dropped, so nothing is counted twice. Where the kernel cannot do
// that (before 6.3) only the rescans run, and threads younger than kAgentWakeMs may be missed.
class ThreadTimers {
 public:
  void configure(int64_t period_ns, uint64_t seed) {
    period_ns_ = period_ns;
    random_ = seed | 1;
    g_sampler_period_ns.store(period_ns, std::memory_order_relaxed);
    g_thread_timer_cookie.store(int(next_random() % 0x3fffffffu) + 1, std::memory_order_relaxed);
    g_process_timer_cookie.store(int(next_random() % 0x3fffffffu) + 0x40000000, std::memory_order_relaxed);
    // Before the first rescan marks the threads it arms. A fork child inherits its parent's marks, for
    // tids it does not have: start from zero pages.
    if (std::atomic<uint64_t>* bits = g_timed_threads.load(std::memory_order_acquire))
      madvise(static_cast<void*>(bits), kTimedThreadBits / 8, MADV_DONTNEED);
    else
      sampler_timed_threads_instance();  // if it fails, arm_process_timer() says so and arms nothing
  }
  ~ThreadTimers() {
    disarm_all();
    if (task_dir_ >= 0) close(task_dir_);
  }

  // Arms a timer for every thread of the process not yet armed (except skip_tids), deletes the timers
  // of threads that have exited. before_arming() runs once, after the listing and before the first new
  // timer, when there is any to arm (the agent lists the stack mappings there: a thread's stack is
  // mapped before the thread is listed, and its handler may run as soon as its timer is armed).
  // Returns the number of threads newly armed.
  template <class BeforeArming>
  size_t rescan(const std::vector<pid_t>& skip_tids, std::string* error, BeforeArming&& before_arming) {
    g_sampler_counters.thread_scans.fetch_add(1, std::memory_order_relaxed);
    // The directory stays open between scans and is reread from its start: opening it each time (path
    // walk, fstat, close) cost most of the agent's steady CPU.
    if (task_dir_ < 0) task_dir_ = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (task_dir_ < 0 || lseek(task_dir_, 0, SEEK_SET) != 0) {
      *error = std::string("cannot list /proc/self/task: ") + std::strerror(errno);
      return 0;
    }
    tids_.clear();
    if (listing_.size() < 16384) listing_.resize(16384);
    for (;;) {
      const long n = syscall(SYS_getdents64, task_dir_, listing_.data(), listing_.size());
      if (n <= 0) break;
      for (long offset = 0; offset < n;) {
        // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
        uint16_t record_length;
        std::memcpy(&record_length, listing_.data() + offset + 16, sizeof record_length);
        const char* name = listing_.data() + offset + 19;
        if (name[0] >= '0' && name[0] <= '9') tids_.push_back(static_cast<pid_t>(std::strtol(name, nullptr, 10)));
        offset += record_length;
      }
    }
    scan_generation_++;
    // The profiler's own threads are never sampled, by the process-wide timer either.
    for (const pid_t tid : skip_tids) {
      if (std::find(skipped_.begin(), skipped_.end(), tid) == skipped_.end()) {
        mark(tid, true);
        skipped_.push_back(tid);
      }
    }
    // Every tenth scan (about once a second) also checks the timers of listed threads: a tid that is
    // listed but whose timer reads as disarmed belongs to a new thread that reused the number.
    const bool check_reuse = scan_generation_ % 10 == 0;
    to_arm_.clear();
    young_next_.clear();
    for (const pid_t tid : tids_) {
      if (std::find(skip_tids.begin(), skip_tids.end(), tid) != skip_tids.end()) continue;
      auto it = timers_.find(tid);
      if (it == timers_.end() && has_process_timer_ &&
          !std::binary_search(young_.begin(), young_.end(), tid)) {
        // First seen: the process-wide timer samples it until the next scan. A thread that ends
        // before then loses nothing at its exit (an expiry its own timer would have seen too late
        // goes to the next running thread instead), and costs no timer_create/timer_delete.
        young_next_.push_back(tid);
        continue;
      }
      if (it != timers_.end()) {
        it->second.generation = scan_generation_;
        if (!check_reuse) continue;
        // A CPU timer whose thread has exited reads as disarmed; the new thread needs a timer on its
        // own clock.
        itimerspec current;
        if (timer_gettime(it->second.timer, &current) == 0 &&
            (current.it_value.tv_sec != 0 || current.it_value.tv_nsec != 0))
          continue;
        delete_timer(it->second.timer);
        timers_.erase(it);
        mark(tid, false);
      }
      to_arm_.push_back(tid);
    }
    // New threads' stacks must be listed before a signal (their own timer's or the process-wide
    // timer's) can land on them: otherwise their samples end at the leaf, under [incomplete].
    const bool new_threads = !to_arm_.empty() || !young_next_.empty();
    young_.swap(young_next_);
    std::sort(young_.begin(), young_.end());
    if (new_threads) before_arming();
    size_t armed_now = 0;
    for (const pid_t tid : to_arm_) {
      // Marked first: a process-wide sample of this thread between the two would be counted twice.
      mark(tid, true);
      timer_t timer;
      if (arm(tid, &timer)) {
        timers_[tid] = Entry{timer, scan_generation_};
        armed_now++;
      } else {
        mark(tid, false);
      }
    }
    for (auto it = timers_.begin(); it != timers_.end();) {
      if (it->second.generation != scan_generation_) {
        delete_timer(it->second.timer);
        mark(it->first, false);
        it = timers_.erase(it);
      } else {
        ++it;
      }
    }
    g_sampler_counters.timers_armed.store(timers_.size(), std::memory_order_relaxed);
    return armed_now;
  }

  // Arms the process-wide timer for threads younger than a rescan, where the kernel sends its signal
  // to the running thread (or the test hook asks). Returns a sentence for the log.
  std::string arm_process_timer(bool wanted) {
    int mode = g_sampler_process_timer.load(std::memory_order_relaxed);
    if (mode < 0 && !wanted) mode = 0;
    std::string release;
    const bool kernel_ok = sampler_kernel_signals_running_thread(&release);
    if (mode == 0 || (mode < 0 && !kernel_ok)) {
      return mode == 0 ? "threads younger than " + std::to_string(kAgentWakeMs) +
                             " ms may be missed (Config::short_lived_threads is off)"
                       : "kernel " + release + " sends a process timer's signal to the main thread, not the running "
                         "one (Linux >= 6.3 does): threads that live less than " + std::to_string(kAgentWakeMs) +
                         " ms may be missed";
    }
    if (g_timed_threads.load(std::memory_order_acquire) == nullptr) return "threads younger than " + std::to_string(kAgentWakeMs) +
                                                            " ms may be missed (no memory for the map of timed threads)";
    sigevent event;
    std::memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_SIGNAL;
    event.sigev_signo = kSamplerSignal;
    event.sigev_value.sival_int = g_process_timer_cookie.load(std::memory_order_relaxed);
    g_process_jitter_offset_ns.store(period_ns_ / 2, std::memory_order_relaxed);  // its first expiry
    timer_t timer;
    if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &event, &timer) != 0)
      return std::string("threads younger than ") + std::to_string(kAgentWakeMs) +
             " ms may be missed: timer_create(CLOCK_PROCESS_CPUTIME_ID): " + std::strerror(errno);
    if (!start(timer)) {
      timer_delete(timer);
      return std::string("threads younger than ") + std::to_string(kAgentWakeMs) +
             " ms may be missed: timer_settime: " + std::strerror(errno);
    }
    process_timer_ = timer;
    has_process_timer_ = true;
    g_sampler_counters.process_timer.store(1, std::memory_order_relaxed);
    return "threads younger than a rescan are sampled by the process-wide CPU-time timer";
  }

  void disarm_all() {
    if (has_process_timer_) {  // first: its samples of the threads below would count from here on
      timer_delete(process_timer_);
      has_process_timer_ = false;
      g_sampler_counters.process_timer.store(0, std::memory_order_relaxed);
    }
    for (auto& entry : timers_) {
      delete_timer(entry.second.timer);
      mark(entry.first, false);
    }
    timers_.clear();
    for (const pid_t tid : skipped_) mark(tid, false);
    skipped_.clear();
    g_sampler_counters.timers_armed.store(0, std::memory_order_relaxed);
  }
  size_t size() const { return timers_.size(); }
  const std::string& last_error() const { return last_error_; }

 private:
  struct Entry {
    timer_t timer;
    uint64_t generation;
  };
  std::unordered_map<pid_t, Entry> timers_;
  std::vector<pid_t> skipped_;  // the profiler's threads, marked as timed
  timer_t process_timer_{};
  bool has_process_timer_ = false;
  int64_t period_ns_ = 10000000;
  uint64_t random_ = 1;
  uint64_t scan_generation_ = 0;
  std::string last_error_;
  int task_dir_ = -1;
  std::vector<char> listing_;
  std::vector<pid_t> tids_;
  std::vector<pid_t> to_arm_;
  std::vector<pid_t> young_, young_next_;  // listed for the first time by the last scan (sorted) / this one

  uint64_t next_random() {
    random_ ^= random_ << 13;
    random_ ^= random_ >> 7;
    random_ ^= random_ << 17;
    return random_;
  }

  static void mark(pid_t tid, bool timed) {
    std::atomic<uint64_t>* bits = g_timed_threads.load(std::memory_order_acquire);
    if (bits == nullptr || tid < 0 || uint32_t(tid) >= kTimedThreadBits) return;
    const uint64_t bit = uint64_t(1) << (uint32_t(tid) % 64);
    if (timed) bits[uint32_t(tid) / 64].fetch_or(bit, std::memory_order_seq_cst);
    else bits[uint32_t(tid) / 64].fetch_and(~bit, std::memory_order_seq_cst);
  }

  // The first expiry is random within one period (as Go does), so threads that live shorter than a
  // period are still sampled in proportion to their CPU time instead of never; the handler then
  // re-arms each expiry with jitter (sampler_rearm_with_jitter).
  bool start(timer_t timer) {
    const int64_t first = 1 + static_cast<int64_t>(next_random() % static_cast<uint64_t>(period_ns_));
    itimerspec spec;
    spec.it_interval.tv_sec = period_ns_ / 1000000000;
    spec.it_interval.tv_nsec = period_ns_ % 1000000000;
    spec.it_value.tv_sec = first / 1000000000;
    spec.it_value.tv_nsec = first % 1000000000;
    return timer_settime(timer, 0, &spec, nullptr) == 0;
  }

  bool arm(pid_t tid, timer_t* out) {
    sigevent event;
    std::memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = kSamplerSignal;
    event.sigev_value.sival_int = g_thread_timer_cookie.load(std::memory_order_relaxed);
    event._sigev_un._tid = tid;
    timer_t timer;
    if (timer_create(sampler_thread_cpu_clock(tid), &event, &timer) != 0) {
      // ESRCH/EINVAL: the thread exited between the listing and now. Anything else is worth a log.
      if (errno != ESRCH && errno != EINVAL)
        last_error_ = "timer_create for thread " + std::to_string(tid) + ": " + std::strerror(errno);
      return false;
    }
    if (!start(timer)) {
      delete_timer(timer);
      return false;
    }
    g_sampler_counters.timers_created.fetch_add(1, std::memory_order_relaxed);
    *out = timer;
    return true;
  }
  static void delete_timer(timer_t timer) {
    timer_delete(timer);
    g_sampler_counters.timers_deleted.fetch_add(1, std::memory_order_relaxed);
  }
};

}  // namespace detail
}  // namespace pyroscope

