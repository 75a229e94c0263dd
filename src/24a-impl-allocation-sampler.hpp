// [SECTION] Implementation: allocation sampler (Linux) =============================================
//
// With PYROSCOPE_ALLOCATION_PROFILING defined next to PYROSCOPE_IMPLEMENTATION, this translation unit
// defines malloc, calloc, realloc, free, posix_memalign, aligned_alloc, memalign, valloc, pvalloc and
// every replaceable operator new/delete. The executable's definitions interpose on the whole process
// (shared libraries' calls included, glibc's own too); each forwards to glibc's allocator through its
// __libc_* entry points (no dlsym, so no recursion at startup) and, while a session samples
// allocations, notes what it did. docs/memory.md describes what is measured.
//
// Sampling is a Poisson process over allocated bytes (tcmalloc's and Go's): each thread counts down an
// exponentially distributed number of bytes (mean Config.allocation_sample_bytes); the allocation that
// crosses zero is sampled and a new countdown drawn. An allocation of n bytes is so sampled with
// probability p = 1 - exp(-n/mean), and counts as n/p bytes and 1/p objects (pprof's unbiased scaling),
// so totals estimate the real ones. The unsampled path compares the size with a thread-local countdown
// and subtracts it, before the allocation is made, and then tail-calls glibc (malloc: 7 instructions;
// operator new: 13, since it must check for null). Whatever else could stop a sample is folded into
// the countdown, as tcmalloc does:
//   - The profiler's own code (the guard of rule 1 below) sets the countdown out of reach (INT64_MAX)
//     and puts it back when it leaves.
//   - The session's mean is read only when a countdown runs out. With no session, a thread's countdown
//     is kAllocationIdleRecheckBytes, so a session that starts is seen within that many bytes of each
//     thread's allocations (those bytes are not sampled; docs/memory.md); a countdown drawn for another
//     mean is redrawn at its next crossing.
//
// A sampled allocation, on the allocating thread (not in a signal handler, but inside malloc):
//   1. Never recursive: a per-thread guard in initial-exec TLS (usable from a thread's first
//      instruction to its last, before and after its C++ thread_locals) is set while the sampler runs;
//      allocations and frees made meanwhile, and all of the agent's and push thread's, are not looked at
//      and do not move the countdown.
//   2. The stack is unwound with the sampler's unwinder (the tables on x86-64) before any lock is taken,
//      counted in g_sampler_in_flight like a handler, so the agent frees no table it may be reading.
//   3. One mutex guards the interned stacks, the block's totals and the table of live sampled blocks;
//      fork() takes it in the prepare handler (so the child's copy is consistent) and stops sampling
//      in the child, as for the CPU sampler.
// A free first looks at a counting filter on the address (lock-free, never freed): only an address
// that hashes to a non-zero counter takes the mutex. A sampled block is taken out of the table before
// glibc frees it (realloc: before it moves), so an address reused by another thread meanwhile can never
// lose its own record.

#if defined(__SANITIZE_ADDRESS__)
#define PYROSCOPE_ALLOCATION_SANITIZER "AddressSanitizer"
#elif defined(PYROSCOPE_SAMPLER_UNDER_TSAN)
#define PYROSCOPE_ALLOCATION_SANITIZER "ThreadSanitizer"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PYROSCOPE_ALLOCATION_SANITIZER "AddressSanitizer"
#elif __has_feature(memory_sanitizer)
#define PYROSCOPE_ALLOCATION_SANITIZER "MemorySanitizer"
#endif
#endif

#if defined(PYROSCOPE_ALLOCATION_PROFILING) && !defined(PYROSCOPE_ALLOCATION_SANITIZER) && defined(__GLIBC__)
#define PYROSCOPE_ALLOCATION_INTERPOSED 1
#endif

#include <cmath>
#include <new>

// noexcept, as glibc's functions are (__THROW): a noexcept interposer may then end in a tail call to
// them, where a call to a function that might throw needs a frame of its own for std::terminate.
extern "C" {
void* __libc_malloc(size_t size) noexcept;
void* __libc_calloc(size_t count, size_t size) noexcept;
void* __libc_realloc(void* pointer, size_t size) noexcept;
void __libc_free(void* pointer) noexcept;
void* __libc_memalign(size_t alignment, size_t size) noexcept;
void* __libc_valloc(size_t size) noexcept;
void* __libc_pvalloc(size_t size) noexcept;
}

namespace pyroscope {
namespace detail {

constexpr uint64_t kAllocationMaxSampleBytes = uint64_t(1) << 40;
constexpr size_t kAllocationFilterBits = 18;          // 256 Ki counters (1 MiB, pages touched on demand)
constexpr size_t kAllocationMaxLive = size_t(1) << 18;  // live sampled blocks tracked at most
// With no session, how many bytes a thread allocates between looks at whether one began: the bytes a
// started session misses per thread, at most, against a call out of line per that many bytes idle.
constexpr int64_t kAllocationIdleRecheckBytes = int64_t(64) << 10;

// Where an allocation or a free came in: for the statistics (and the test that each entry is reached).
enum AllocEntry : int {
  kAllocMalloc, kAllocCalloc, kAllocRealloc, kAllocPosixMemalign, kAllocAlignedAlloc, kAllocMemalign,
  kAllocValloc, kAllocPvalloc, kAllocNew, kAllocNewArray, kAllocNewNothrow, kAllocNewArrayNothrow,
  kAllocNewAligned, kAllocNewArrayAligned, kAllocNewAlignedNothrow, kAllocNewArrayAlignedNothrow,
  kAllocFree, kAllocDelete, kAllocDeleteArray, kAllocDeleteNothrow, kAllocDeleteArrayNothrow, kAllocDeleteSized,
  kAllocDeleteArraySized, kAllocDeleteAligned, kAllocDeleteArrayAligned, kAllocDeleteSizedAligned,
  kAllocDeleteArraySizedAligned, kAllocDeleteAlignedNothrow, kAllocDeleteArrayAlignedNothrow,
  kAllocEntries
};

// Per thread, in static TLS (zero until first use; never destroyed).
struct AllocThreadState {
  int64_t countdown;        // bytes until the slow path looks (a sample, or a check); never negative
  uint64_t mean;            // the mean the countdown was drawn with; 0: an idle recheck interval
  uint64_t random;          // xorshift64* state, 0 until seeded
  int64_t saved_countdown;  // the countdown while the guard holds it out of reach
  int guard;                // >0: the profiler itself is allocating on this thread (rule 1)
};
thread_local AllocThreadState g_alloc_thread PYROSCOPE_TLS_INITIAL_EXEC = {0, 0, 0, 0, 0};

// The session's mean interval in bytes; 0 when no session samples allocations.
inline std::atomic<uint64_t> g_alloc_mean{0};
// Counting filter over sampled live addresses; null until a first session sampled allocations.
inline std::atomic<std::atomic<uint32_t>*> g_alloc_filter{nullptr};

struct AllocCounters {
  std::atomic<uint64_t> sampled{0};        // allocations sampled
  std::atomic<uint64_t> freed_sampled{0};  // sampled blocks freed (or moved by realloc)
  std::atomic<uint64_t> live_dropped{0};   // sampled blocks not tracked for inuse: the table was full
  std::atomic<uint64_t> by_entry[kAllocEntries] = {};  // sampled allocations / sampled frees by entry
};
inline AllocCounters g_alloc_counters;

// Everything a sampled allocation or free shares, under one mutex. Made once, never destroyed (late
// threads of a stopped session, and frees after exit(), may still come).
struct AllocStack {
  std::string key;     // SampleAggregator's layout: {tag set, flags}, then the pcs leaf first
  double space = 0;    // estimated bytes allocated, not yet handed to the agent
  double objects = 0;  // estimated objects
  bool dirty = false;  // in AllocState::dirty
};
struct AllocLive {
  uint32_t stack;
  double space;
  double objects;
};
struct AllocState {
  std::mutex mutex;
  std::unordered_map<std::string, uint32_t> stack_ids;
  std::vector<AllocStack> stacks;
  std::vector<uint32_t> dirty;  // stacks with space/objects not yet drained
  std::unordered_map<uintptr_t, AllocLive> live;
  std::string key;  // scratch
};
inline std::atomic<AllocState*> g_alloc_state{nullptr};

// Blocks are 16-byte aligned: the address bits above that, as they are (a multiplicative hash cost two
// instructions more on every free, and spread nothing a counting filter needs spread: a collision
// only sends one more free to the table's lookup).
inline size_t alloc_filter_index(uintptr_t address) {
  return size_t(address >> 4) & ((size_t(1) << kAllocationFilterBits) - 1);
}

// The guard of the profiler's own threads and code paths (rule 1). Nestable; the outermost holds the
// countdown out of the allocation path's reach, so that path needs no test of its own.
inline void alloc_guard_enter() {
  AllocThreadState& t = g_alloc_thread;
  if (t.guard++ == 0) {
    t.saved_countdown = t.countdown;
    t.countdown = INT64_MAX;
  }
}
inline void alloc_guard_leave() {
  AllocThreadState& t = g_alloc_thread;
  if (--t.guard == 0) t.countdown = t.saved_countdown;
}
struct AllocGuard {
  AllocGuard() { alloc_guard_enter(); }
  ~AllocGuard() { alloc_guard_leave(); }
  AllocGuard(const AllocGuard&) = delete;
  AllocGuard& operator=(const AllocGuard&) = delete;
};

// An exponentially distributed interval with the given mean, at least 1 byte... or 0 (sample the next).
inline int64_t alloc_draw_interval(AllocThreadState& t, uint64_t mean) {
  if (t.random == 0) {
    t.random = (uint64_t(reinterpret_cast<uintptr_t>(&t)) * 0x9E3779B97F4A7C15ull) ^
               uint64_t(sampler_monotonic_ns()) ^ 0x2545F4914F6CDD1Dull;
    if (t.random == 0) t.random = 1;
  }
  t.random ^= t.random >> 12;
  t.random ^= t.random << 25;
  t.random ^= t.random >> 27;
  const uint64_t r = t.random * 0x2545F4914F6CDD1Dull;
  const double u = (double(r >> 11) + 1.0) * (1.0 / 9007199254740992.0);  // (0, 1]
  const double interval = -std::log(u) * double(mean);
  return interval >= 9.0e18 ? int64_t(9.0e18) : int64_t(interval);
}

// The calling thread's stack, leaf first, from the frame that called the allocation function
// (return_address) on: the sampler's unwinder from here, then our own frames dropped. Returns the depth;
// *flags gets kSlotTruncated / kSlotIncomplete.
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
__attribute__((noinline, no_sanitize("address")))
#else
__attribute__((noinline))
#endif
inline int alloc_unwind(uintptr_t return_address, uintptr_t* pcs, int capacity, uint16_t* flags) {
  int depth = 0;
  bool truncated = false;
  bool complete = true;
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  // A context as if this function were interrupted here: the tables give the CFA at this pc from rsp.
  ucontext_t context;
  uintptr_t rip, rsp, rbp;
  __asm__ volatile("leaq 0(%%rip), %0\n\tmovq %%rsp, %1\n\tmovq %%rbp, %2" : "=r"(rip), "=r"(rsp), "=r"(rbp));
  context.uc_mcontext.gregs[REG_RIP] = greg_t(rip);
  context.uc_mcontext.gregs[REG_RSP] = greg_t(rsp);
  context.uc_mcontext.gregs[REG_RBP] = greg_t(rbp);
  const UnwindEnd end = sampler_unwind_with_tables(&context, pcs, capacity, &depth, &truncated);
  complete = end == UnwindEnd::complete;
#else
  SamplerUnwindCursor cursor{pcs, capacity, 0, -1, false};
  _Unwind_Backtrace(sampler_unwind_step, &cursor);
  depth = cursor.count;
  truncated = cursor.truncated;
#endif
  // Drop the frames of the profiler and of the allocation function: the stack starts at its caller.
  const uintptr_t caller = return_address - 1;
  int first = -1;
  for (int i = 0; i < depth && i < 8; i++) {
    if (pcs[i] == caller) {
      first = i;
      break;
    }
  }
  if (first < 0) {
    // The walk did not reach the caller: keep the caller alone, marked.
    pcs[0] = caller;
    depth = 1;
    complete = false;
    truncated = false;
  } else {
    for (int i = first; i < depth; i++) pcs[i - first] = pcs[i];
    depth -= first;
  }
  *flags = uint16_t((truncated ? kSlotTruncated : 0) | (complete ? 0 : kSlotIncomplete));
  return depth;
}

inline void alloc_filter_add(uintptr_t address, int delta) {
  std::atomic<uint32_t>* filter = g_alloc_filter.load(std::memory_order_relaxed);
  if (delta > 0) filter[alloc_filter_index(address)].fetch_add(1, std::memory_order_relaxed);
  else filter[alloc_filter_index(address)].fetch_sub(1, std::memory_order_relaxed);
}

// Slow path of a sampled allocation (the guard is set by the caller).
inline void alloc_record(void* pointer, size_t size, uint64_t mean, AllocEntry entry, uintptr_t return_address) {
  uintptr_t pcs[kSamplerMaxFrames];
  uint16_t flags = 0;
  int depth = 0;
  // Counted like a signal handler: the agent frees no unwind table or mapping list this may read.
  g_sampler_in_flight.fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const bool sampling = g_alloc_mean.load(std::memory_order_seq_cst) != 0;
  if (sampling) depth = alloc_unwind(return_address, pcs, kSamplerMaxFrames, &flags);
  g_sampler_in_flight.fetch_sub(1, std::memory_order_release);
  AllocState* state = g_alloc_state.load(std::memory_order_acquire);
  if (!sampling || state == nullptr) return;

  const double n = double(size == 0 ? 1 : size);
  const double probability = -std::expm1(-n / double(mean));  // 1 - exp(-n/mean), exact for small n/mean
  const double objects = probability > 0 ? 1.0 / probability : 1.0;
  const double space = n * objects;
  const uint32_t header[2] = {g_thread_tag_set.load(std::memory_order_relaxed), flags};

  std::lock_guard<std::mutex> lock(state->mutex);
  std::string& key = state->key;
  key.clear();
  key.append(reinterpret_cast<const char*>(header), sizeof header);
  key.append(reinterpret_cast<const char*>(pcs), size_t(depth) * sizeof(uintptr_t));
  auto found = state->stack_ids.find(key);
  uint32_t id;
  if (found != state->stack_ids.end()) {
    id = found->second;
  } else {
    id = uint32_t(state->stacks.size());
    state->stack_ids.emplace(key, id);
    state->stacks.emplace_back();
    state->stacks.back().key = key;
  }
  AllocStack& stack = state->stacks[id];
  stack.space += space;
  stack.objects += objects;
  if (!stack.dirty) {
    stack.dirty = true;
    state->dirty.push_back(id);
  }
  g_alloc_counters.sampled.fetch_add(1, std::memory_order_relaxed);
  g_alloc_counters.by_entry[entry].fetch_add(1, std::memory_order_relaxed);
  if (pointer == nullptr) return;
  if (state->live.size() >= kAllocationMaxLive) {
    g_alloc_counters.live_dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto inserted = state->live.emplace(reinterpret_cast<uintptr_t>(pointer), AllocLive{id, space, objects});
  if (inserted.second) {
    alloc_filter_add(reinterpret_cast<uintptr_t>(pointer), +1);
  } else {
    // A record for a block freed without us seeing it (freed inside a guarded section): replaced.
    inserted.first->second = AllocLive{id, space, objects};
  }
}

// alloc_note's way past its fast path: the thread's countdown ran out. Out of line, so that the
// interposers' common path saves no registers (inlined, it made every operator new push and pop six).
__attribute__((noinline)) inline void alloc_note_slow(void* pointer, size_t size, AllocEntry entry,
                                                      uintptr_t return_address) {
  if (pointer == nullptr) return;  // failed: nothing allocated, nothing counted
  AllocThreadState& t = g_alloc_thread;
  // Guarded, the countdown starts at INT64_MAX: 2^63 bytes allocated meanwhile. Out of reach again.
  if (t.guard != 0) {
    t.countdown = INT64_MAX;
    return;
  }
  const uint64_t mean = g_alloc_mean.load(std::memory_order_relaxed);
  if (mean == 0) {
    t.mean = 0;  // a countdown for the next session is drawn when it is seen
    t.countdown = kAllocationIdleRecheckBytes;
    return;
  }
  // Successful allocations are at most PTRDIFF_MAX bytes: the subtractions cannot overflow.
  int64_t left;
  if (t.mean != mean) {
    // A session began, or one with another mean: a countdown drawn for none or the old one would bias
    // this allocation's chance; a fresh interval starts here (memoryless, so nothing is lost).
    t.mean = mean;
    left = alloc_draw_interval(t, mean) - int64_t(size);
  } else {
    left = t.countdown - int64_t(size);
  }
  if (left >= 0) {
    t.countdown = left;
    return;
  }
  // This allocation crossed the sampling point; the next one is a fresh exponential interval away.
  t.countdown = alloc_draw_interval(t, mean);
  alloc_guard_enter();
  const int saved_errno = errno;
  alloc_record(pointer, size, mean, entry, return_address);
  errno = saved_errno;
  alloc_guard_leave();
}

// Before an allocation of `size` bytes: true (almost always) when it crosses no sampling point, having
// counted it down; the interposer then makes it and is done (a tail call to glibc where it can be).
// False: the interposer makes it through its slow path, which calls alloc_note_slow. The bytes of an
// allocation that then fails stay counted (rare; it moves the next sample, it loses none).
__attribute__((always_inline)) inline bool alloc_count_down(size_t size) {
  AllocThreadState& t = g_alloc_thread;
  const int64_t countdown = t.countdown;
  if (__builtin_expect(size <= uint64_t(countdown), 1)) {
    t.countdown = countdown - int64_t(size);
    return true;
  }
  return false;
}

// After a successful allocation of `size` bytes at `pointer` (null: a failed one, not sampled), for
// the interposers that count after the fact (realloc, calloc, the aligned ones: rarer calls).
__attribute__((always_inline)) inline void alloc_note(void* pointer, size_t size, AllocEntry entry,
                                                       uintptr_t return_address) {
  if (__builtin_expect(pointer == nullptr, 0)) return;
  if (__builtin_expect(alloc_count_down(size), 1)) return;
  alloc_note_slow(pointer, size, entry, return_address);
}

// Takes the record of a sampled block out of the live table, if `pointer` is one. False otherwise.
inline bool alloc_take_live(uintptr_t address, AllocLive* out) {
  AllocState* state = g_alloc_state.load(std::memory_order_acquire);
  if (state == nullptr) return false;
  std::lock_guard<std::mutex> lock(state->mutex);
  auto it = state->live.find(address);
  if (it == state->live.end()) return false;
  *out = it->second;
  state->live.erase(it);
  alloc_filter_add(address, -1);
  return true;
}

// alloc_note_free's way past its fast path (out of line, as alloc_note_slow): the address may be a
// sampled block's.
__attribute__((noinline)) inline bool alloc_note_free_slow(uintptr_t address, AllocEntry entry, AllocLive* record) {
  AllocThreadState& t = g_alloc_thread;
  if (t.guard != 0) return false;  // the profiler's own memory (or a free inside a sampled allocation)
  alloc_guard_enter();
  const int saved_errno = errno;
  AllocLive taken;
  const bool found = alloc_take_live(address, &taken);
  if (found) {
    g_alloc_counters.freed_sampled.fetch_add(1, std::memory_order_relaxed);
    g_alloc_counters.by_entry[entry].fetch_add(1, std::memory_order_relaxed);
    if (record != nullptr) *record = taken;
  }
  errno = saved_errno;
  alloc_guard_leave();
  return found;
}

// Before `pointer` is freed or moved. True if it was a sampled block (then *record holds it, if given).
// Whether the block at `pointer` may be a sampled one: a session mapped the filter and the address's
// counter is not 0. A null pointer needs no test of its own (the table has no block at 0).
__attribute__((always_inline)) inline bool alloc_filter_may_hold(const void* pointer) {
  std::atomic<uint32_t>* filter = g_alloc_filter.load(std::memory_order_relaxed);
  return __builtin_expect(filter != nullptr, 0) &&
         __builtin_expect(filter[alloc_filter_index(reinterpret_cast<uintptr_t>(pointer))].load(std::memory_order_relaxed) != 0, 0);
}

__attribute__((always_inline)) inline bool alloc_note_free(void* pointer, AllocEntry entry,
                                                            AllocLive* record = nullptr) {
  if (__builtin_expect(!alloc_filter_may_hold(pointer), 1)) return false;
  return alloc_note_free_slow(reinterpret_cast<uintptr_t>(pointer), entry, record);
}

// realloc failed after its block's record was taken out: the block is still there.
inline void alloc_put_back(void* pointer, const AllocLive& record) {
  AllocState* state = g_alloc_state.load(std::memory_order_acquire);
  if (state == nullptr) return;
  AllocGuard guard;
  std::lock_guard<std::mutex> lock(state->mutex);
  if (state->live.emplace(reinterpret_cast<uintptr_t>(pointer), record).second)
    alloc_filter_add(reinterpret_cast<uintptr_t>(pointer), +1);
}

// --- the session's side (agent thread, start, stop, fork) ------------------------------------------

// A stack and its values, copied out of the state so the lock is not held while symbolizing.
struct AllocStackValues {
  std::string key;
  uint64_t space = 0;
  uint64_t objects = 0;
};

// The sampled allocations since the last call, per stack (whole bytes and objects; the fractions are
// carried to the next call, so nothing is lost to rounding).
inline void alloc_drain(std::vector<AllocStackValues>* out) {
  out->clear();
  AllocState* state = g_alloc_state.load(std::memory_order_acquire);
  if (state == nullptr) return;
  std::lock_guard<std::mutex> lock(state->mutex);
  for (uint32_t id : state->dirty) {
    AllocStack& stack = state->stacks[id];
    stack.dirty = false;
    const double space = std::floor(stack.space + 0.5), objects = std::floor(stack.objects + 0.5);
    stack.space -= space;
    stack.objects -= objects;
    if (space > 0 || objects > 0) out->push_back(AllocStackValues{stack.key, uint64_t(space), uint64_t(objects)});
  }
  state->dirty.clear();
}

// The sampled blocks live now, per stack.
inline void alloc_inuse(std::vector<AllocStackValues>* out) {
  out->clear();
  AllocState* state = g_alloc_state.load(std::memory_order_acquire);
  if (state == nullptr) return;
  std::vector<std::pair<double, double>> sums;
  std::vector<uint32_t> used;
  std::lock_guard<std::mutex> lock(state->mutex);
  sums.resize(state->stacks.size());
  for (const auto& entry : state->live) {
    std::pair<double, double>& sum = sums[entry.second.stack];
    if (sum.first == 0 && sum.second == 0) used.push_back(entry.second.stack);
    sum.first += entry.second.space;
    sum.second += entry.second.objects;
  }
  for (uint32_t id : used) {
    const double space = std::floor(sums[id].first + 0.5), objects = std::floor(sums[id].second + 0.5);
    if (space > 0 || objects > 0) out->push_back(AllocStackValues{state->stacks[id].key, uint64_t(space), uint64_t(objects)});
  }
}

// start(): an empty state (stacks, totals and live blocks of an earlier session are dropped), then
// sampling at `mean` bytes. Returns false if the filter cannot be mapped.
inline bool alloc_begin(uint64_t mean) {
  AllocGuard guard;
  if (g_alloc_filter.load(std::memory_order_acquire) == nullptr) {
    void* memory = mmap(nullptr, sizeof(std::atomic<uint32_t>) << kAllocationFilterBits, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return false;
    g_alloc_state.store(new AllocState, std::memory_order_release);
    g_alloc_filter.store(static_cast<std::atomic<uint32_t>*>(memory), std::memory_order_release);
  }
  AllocState* state = g_alloc_state.load(std::memory_order_acquire);
  {
    std::lock_guard<std::mutex> lock(state->mutex);
    for (const auto& entry : state->live) alloc_filter_add(entry.first, -1);
    std::unordered_map<uintptr_t, AllocLive>().swap(state->live);
    std::unordered_map<std::string, uint32_t>().swap(state->stack_ids);
    std::vector<AllocStack>().swap(state->stacks);
    state->dirty.clear();
  }
  g_alloc_mean.store(mean, std::memory_order_seq_cst);
  // The thread that starts the session samples from its next allocation on (the guard puts this back
  // as its countdown: the slow path then sees the new mean); the others within their idle interval.
  g_alloc_thread.saved_countdown = 0;
  return true;
}

// Stops sampling (the agent, before it waits for handlers: see alloc_record). Allocation-free.
inline void alloc_end() { g_alloc_mean.store(0, std::memory_order_seq_cst); }

// fork(): the prepare handler takes the state's lock, so that the child's copy is consistent.
inline void alloc_before_fork() {
  if (AllocState* state = g_alloc_state.load(std::memory_order_acquire)) state->mutex.lock();
}
inline void alloc_after_fork_in_parent() {
  if (AllocState* state = g_alloc_state.load(std::memory_order_acquire)) state->mutex.unlock();
}
// The child samples no allocations (its copy of the session is abandoned); its frees of blocks the
// parent sampled still find and drop their records, and a start() in the child begins afresh.
inline void alloc_after_fork_in_child() {
  g_alloc_mean.store(0, std::memory_order_seq_cst);
  if (AllocState* state = g_alloc_state.load(std::memory_order_acquire)) state->mutex.unlock();
}

// Test hook: whether the block at `pointer` is in the table of live sampled blocks.
inline bool alloc_is_live(const void* pointer) {
  AllocState* state = g_alloc_state.load(std::memory_order_acquire);
  if (state == nullptr) return false;
  AllocGuard guard;
  std::lock_guard<std::mutex> lock(state->mutex);
  return state->live.count(reinterpret_cast<uintptr_t>(pointer)) != 0;
}

// A snapshot of the counters (tests and benchmarks).
struct AllocStats {
  uint64_t sampled = 0, freed_sampled = 0, live_dropped = 0, live = 0;
  uint64_t by_entry[kAllocEntries] = {};
};
inline AllocStats alloc_stats() {
  AllocStats s;
  s.sampled = g_alloc_counters.sampled.load(std::memory_order_relaxed);
  s.freed_sampled = g_alloc_counters.freed_sampled.load(std::memory_order_relaxed);
  s.live_dropped = g_alloc_counters.live_dropped.load(std::memory_order_relaxed);
  for (int i = 0; i < kAllocEntries; i++) s.by_entry[i] = g_alloc_counters.by_entry[i].load(std::memory_order_relaxed);
  if (AllocState* state = g_alloc_state.load(std::memory_order_acquire)) {
    AllocGuard guard;
    std::lock_guard<std::mutex> lock(state->mutex);
    s.live = state->live.size();
  }
  return s;
}

}  // namespace detail

bool allocation_profiling_compiled(std::string* why) {
#if defined(PYROSCOPE_ALLOCATION_INTERPOSED)
  if (why != nullptr) why->clear();
  return true;
#else
  if (why != nullptr) {
#if !defined(PYROSCOPE_ALLOCATION_PROFILING)
    *why = "the implementation file does not define PYROSCOPE_ALLOCATION_PROFILING";
#elif defined(PYROSCOPE_ALLOCATION_SANITIZER)
    *why = "built with " PYROSCOPE_ALLOCATION_SANITIZER ", whose runtime owns malloc: the allocation functions "
           "are not interposed";
#else
    *why = "not a glibc system: the allocation functions forward to glibc's __libc_* entry points";
#endif
  }
  return false;
#endif
}

}  // namespace pyroscope

// --- the interposers ---------------------------------------------------------------------------------

#if defined(PYROSCOPE_ALLOCATION_INTERPOSED)

#define PYROSCOPE_ALLOC_CALLER reinterpret_cast<uintptr_t>(__builtin_return_address(0))
// Default visibility: in a shared library built with -fvisibility=hidden (libpyroscope-preload-heap.so)
// the definitions must still be exported to interpose. Never inlined: the caller's return address is
// where a sampled stack starts.
#define PYROSCOPE_ALLOC_EXPORT __attribute__((noinline, used, visibility("default")))

namespace pyroscope {
namespace detail {

// operator new's failure path: the new-handler loop, then std::bad_alloc (thrown by libstdc++, which
// works in a translation unit built with -fno-exceptions too), or null for the nothrow forms.
inline void* alloc_new_failed(size_t size, size_t alignment, bool nothrow) {
  for (;;) {
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) break;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    if (nothrow) {
      try {
        handler();
      } catch (...) {
        return nullptr;
      }
    } else {
      handler();
    }
#else
    handler();
#endif
    void* p = alignment != 0 ? __libc_memalign(alignment, size == 0 ? 1 : size) : __libc_malloc(size == 0 ? 1 : size);
    if (p != nullptr) return p;
  }
  if (nothrow) return nullptr;
#if defined(__GLIBCXX__)
  std::__throw_bad_alloc();
#else
  std::abort();
#endif
}

// operator new's way when its allocation crosses a sampling point (out of line: see alloc_note_slow).
__attribute__((noinline)) inline void* alloc_new_crossing(size_t size, size_t alignment, bool nothrow,
                                                          AllocEntry entry, uintptr_t caller) {
  void* p = alignment != 0 ? __libc_memalign(alignment, size) : __libc_malloc(size);
  if (p == nullptr) p = alloc_new_failed(size, alignment, nothrow);
  alloc_note_slow(p, size, entry, caller);
  return p;
}

// malloc's way when its allocation crosses a sampling point.
__attribute__((noinline)) inline void* alloc_malloc_crossing(size_t size, uintptr_t caller) {
  void* p = __libc_malloc(size);
  alloc_note_slow(p, size, kAllocMalloc, caller);
  return p;
}

// glibc's malloc(0) returns a block of its own, as operator new(0) must: no size 0 -> 1 here.
__attribute__((always_inline)) inline void* alloc_new(size_t size, size_t alignment, bool nothrow, AllocEntry entry,
                                                       uintptr_t caller) {
  if (__builtin_expect(!alloc_count_down(size), 0)) return alloc_new_crossing(size, alignment, nothrow, entry, caller);
  void* p = alignment != 0 ? __libc_memalign(alignment, size) : __libc_malloc(size);
  if (__builtin_expect(p == nullptr, 0)) return alloc_new_failed(size, alignment, nothrow);
  return p;
}

// free's way when the filter says the block may be a sampled one.
__attribute__((noinline)) inline void alloc_free_listed(void* p, AllocEntry entry) {
  alloc_note_free_slow(reinterpret_cast<uintptr_t>(p), entry, nullptr);
  __libc_free(p);
}

// A free and every operator delete: one load and, while a session samples, one filter counter, then a
// tail call to glibc.
__attribute__((always_inline)) inline void alloc_free(void* p, AllocEntry entry) {
  if (alloc_filter_may_hold(p)) return alloc_free_listed(p, entry);
  __libc_free(p);
}

}  // namespace detail
}  // namespace pyroscope

extern "C" {

PYROSCOPE_ALLOC_EXPORT void* malloc(size_t size) noexcept {
  if (__builtin_expect(pyroscope::detail::alloc_count_down(size), 1)) return __libc_malloc(size);
  return pyroscope::detail::alloc_malloc_crossing(size, PYROSCOPE_ALLOC_CALLER);
}

PYROSCOPE_ALLOC_EXPORT void free(void* pointer) noexcept {
  pyroscope::detail::alloc_free(pointer, pyroscope::detail::kAllocFree);
}

PYROSCOPE_ALLOC_EXPORT void* calloc(size_t count, size_t size) noexcept {
  void* p = __libc_calloc(count, size);
  size_t total = 0;
  if (!__builtin_mul_overflow(count, size, &total))
    pyroscope::detail::alloc_note(p, total, pyroscope::detail::kAllocCalloc, PYROSCOPE_ALLOC_CALLER);
  return p;
}

// A realloc is a free of the old block and an allocation of the new (as tcmalloc and jemalloc count
// it): the old block's record leaves the table before glibc may move or free it.
PYROSCOPE_ALLOC_EXPORT void* realloc(void* pointer, size_t size) noexcept {
  using namespace pyroscope::detail;
  AllocLive record;
  const bool sampled = alloc_note_free(pointer, kAllocRealloc, &record);
  void* p = __libc_realloc(pointer, size);
  if (p == nullptr && pointer != nullptr && size != 0) {
    if (sampled) alloc_put_back(pointer, record);  // failed: the old block is still there
    return p;
  }
  alloc_note(p, size, kAllocRealloc, PYROSCOPE_ALLOC_CALLER);
  return p;
}

PYROSCOPE_ALLOC_EXPORT int posix_memalign(void** out, size_t alignment, size_t size) noexcept {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  pyroscope::detail::alloc_note(p, size, pyroscope::detail::kAllocPosixMemalign, PYROSCOPE_ALLOC_CALLER);
  return 0;
}

PYROSCOPE_ALLOC_EXPORT void* aligned_alloc(size_t alignment, size_t size) noexcept {
  void* p = __libc_memalign(alignment, size);
  pyroscope::detail::alloc_note(p, size, pyroscope::detail::kAllocAlignedAlloc, PYROSCOPE_ALLOC_CALLER);
  return p;
}

PYROSCOPE_ALLOC_EXPORT void* memalign(size_t alignment, size_t size) noexcept {
  void* p = __libc_memalign(alignment, size);
  pyroscope::detail::alloc_note(p, size, pyroscope::detail::kAllocMemalign, PYROSCOPE_ALLOC_CALLER);
  return p;
}

PYROSCOPE_ALLOC_EXPORT void* valloc(size_t size) noexcept {
  void* p = __libc_valloc(size);
  pyroscope::detail::alloc_note(p, size, pyroscope::detail::kAllocValloc, PYROSCOPE_ALLOC_CALLER);
  return p;
}

PYROSCOPE_ALLOC_EXPORT void* pvalloc(size_t size) noexcept {
  void* p = __libc_pvalloc(size);
  pyroscope::detail::alloc_note(p, size, pyroscope::detail::kAllocPvalloc, PYROSCOPE_ALLOC_CALLER);
  return p;
}

}  // extern "C"

#define PYROSCOPE_NEW(signature, alignment, nothrow, entry)                                                \
  PYROSCOPE_ALLOC_EXPORT void* signature {                                                       \
    return pyroscope::detail::alloc_new(size, alignment, nothrow, pyroscope::detail::entry, PYROSCOPE_ALLOC_CALLER); \
  }
PYROSCOPE_NEW(operator new(size_t size), 0, false, kAllocNew)
PYROSCOPE_NEW(operator new[](size_t size), 0, false, kAllocNewArray)
PYROSCOPE_NEW(operator new(size_t size, const std::nothrow_t&) noexcept, 0, true, kAllocNewNothrow)
PYROSCOPE_NEW(operator new[](size_t size, const std::nothrow_t&) noexcept, 0, true, kAllocNewArrayNothrow)
PYROSCOPE_NEW(operator new(size_t size, std::align_val_t a), size_t(a), false, kAllocNewAligned)
PYROSCOPE_NEW(operator new[](size_t size, std::align_val_t a), size_t(a), false, kAllocNewArrayAligned)
PYROSCOPE_NEW(operator new(size_t size, std::align_val_t a, const std::nothrow_t&) noexcept, size_t(a), true,
              kAllocNewAlignedNothrow)
PYROSCOPE_NEW(operator new[](size_t size, std::align_val_t a, const std::nothrow_t&) noexcept, size_t(a), true,
              kAllocNewArrayAlignedNothrow)
#undef PYROSCOPE_NEW

#define PYROSCOPE_DELETE(signature, entry) \
  PYROSCOPE_ALLOC_EXPORT void signature noexcept { pyroscope::detail::alloc_free(p, pyroscope::detail::entry); }
PYROSCOPE_DELETE(operator delete(void* p), kAllocDelete)
PYROSCOPE_DELETE(operator delete[](void* p), kAllocDeleteArray)
PYROSCOPE_DELETE(operator delete(void* p, const std::nothrow_t&), kAllocDeleteNothrow)
PYROSCOPE_DELETE(operator delete[](void* p, const std::nothrow_t&), kAllocDeleteArrayNothrow)
PYROSCOPE_DELETE(operator delete(void* p, size_t), kAllocDeleteSized)
PYROSCOPE_DELETE(operator delete[](void* p, size_t), kAllocDeleteArraySized)
PYROSCOPE_DELETE(operator delete(void* p, std::align_val_t), kAllocDeleteAligned)
PYROSCOPE_DELETE(operator delete[](void* p, std::align_val_t), kAllocDeleteArrayAligned)
PYROSCOPE_DELETE(operator delete(void* p, size_t, std::align_val_t), kAllocDeleteSizedAligned)
PYROSCOPE_DELETE(operator delete[](void* p, size_t, std::align_val_t), kAllocDeleteArraySizedAligned)
PYROSCOPE_DELETE(operator delete(void* p, std::align_val_t, const std::nothrow_t&), kAllocDeleteAlignedNothrow)
PYROSCOPE_DELETE(operator delete[](void* p, std::align_val_t, const std::nothrow_t&), kAllocDeleteArrayAlignedNothrow)
#undef PYROSCOPE_DELETE

#undef PYROSCOPE_ALLOC_CALLER
#undef PYROSCOPE_ALLOC_EXPORT

#endif  // PYROSCOPE_ALLOCATION_INTERPOSED
