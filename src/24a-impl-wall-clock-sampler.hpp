// [SECTION] Implementation: wall-clock sampler (Linux) =============================================
//
// Config::wall_clock adds the series app.wall: every thread, running or blocked, sampled
// kWallSampleRateHz times per second of real time. A timer on the wall clock per thread would signal
// blocked threads, and a signal makes some blocking calls fail with EINTR even under SA_RESTART
// (signal(7): epoll_wait, poll, select, nanosleep, sem_timedwait, futex waits with a timeout, sockets
// with SO_RCVTIMEO, ...): the profiler would change the program's behaviour. So the agent ticks instead,
// and for each thread of the process (docs/sampler.md, "Wall-clock time"):
//   1. reads the thread's CPU time (its CPU-time clock). Unchanged since the last tick and the thread
//      was blocked then: it has not run since, so it is still blocked at the same place with the same
//      tags; the tick counts one more sample of the stack already known (no read, no unwind).
//   2. otherwise reads /proc/self/task/<tid>/syscall (proc(5)): "running" for a thread that is running
//      or runnable, "nr args... sp pc" for one blocked in a system call, "-1 sp pc" for one blocked
//      outside one (a page fault, a stop).
//   3. a running (runnable) thread is not signalled either: "running" includes a thread woken inside
//      poll() or epoll_wait() that has not returned yet, which a signal makes fail with EINTR (measured:
//      see the running branch of tick()). The tick is owed to the thread's next CPU sample: the cpu
//      sampler's SIGPROF fires only while the thread runs, and the program gets those with or without
//      wall-clock sampling. The agent drains the ring after every tick; slots carry the thread's tid.
//   4. a blocked thread is never signalled: the agent walks its stack from the sp and pc the file gives,
//      with the unwind tables, reading a copy of the stack made with process_vm_readv on our own pid (the
//      thread may wake and its frames change or its stack go away; the copy can be stale, never a
//      fault). The file gives no rbp: a frame whose CFA is rbp-based before any frame restored rbp ends
//      the walk, [incomplete]. The tags come from the thread's published tag-set word, read the same way.
// So the wall-clock sampler sends no signal at all. Samples of blocked threads are counted per thread and
// folded into the wall aggregator when the stack changes, the thread exits or the block is written (and
// before the first tick past a block's end); each carries the time of the latest tick it counts, which
// decides its block, as a CPU sample's time decides its own.
// Without the table unwinder (other architectures, ThreadSanitizer) a blocked thread's sample is its pc
// alone, under [incomplete].

namespace pyroscope {
namespace detail {

constexpr int kWallSampleRateHz = 100;
constexpr int64_t kWallIntervalNs = 1000000000 / kWallSampleRateHz;
constexpr int kWallListEveryTicks = 10;        // /proc/self/task is listed every 10th tick (100 ms)
constexpr size_t kWallStackChunk = 16384;      // bytes of a blocked thread's stack copied at a time
constexpr size_t kWallStackLimit = 1u << 20;   // and at most this far above its sp

// Test hook: when set, every thread is signalled at every tick, blocked or not: the naive design this
// section exists to avoid, so that a test can show its no-EINTR check fails on it. Tests only.
inline std::atomic<bool> g_wall_signal_every_thread{false};

// What /proc/self/task/<tid>/syscall says about a thread.
struct WallThreadState {
  enum Kind { running, in_syscall, blocked_outside_syscall, unknown } kind = unknown;
  long nr = -1;
  uint64_t args[6] = {};
  uintptr_t sp = 0, pc = 0;
};

// Parses the file's one line (proc(5)); unknown for anything else.
inline WallThreadState wall_parse_syscall_file(const char* text, size_t size) {
  WallThreadState state;
  std::string line(text, size);
  if (line.compare(0, 7, "running") == 0) {
    state.kind = WallThreadState::running;
    return state;
  }
  const char* p = line.c_str();
  char* end = nullptr;
  errno = 0;
  const long nr = std::strtol(p, &end, 10);
  if (end == p || errno != 0) return state;
  uint64_t fields[8];
  int count = 0;
  for (p = end; count < 8;) {
    while (*p == ' ') p++;
    if (*p == '\n' || *p == '\0') break;
    const uint64_t value = std::strtoull(p, &end, 16);  // "0x..." (strtoull takes the prefix in base 16)
    if (end == p) return state;
    fields[count++] = value;
    p = end;
  }
  if (nr < 0 && count == 2) {
    state.kind = WallThreadState::blocked_outside_syscall;
  } else if (nr >= 0 && count == 8) {
    state.kind = WallThreadState::in_syscall;
    for (int i = 0; i < 6; i++) state.args[i] = fields[i];
  } else {
    return state;
  }
  state.nr = nr;
  state.sp = uintptr_t(fields[count - 2]);
  state.pc = uintptr_t(fields[count - 1]);
  return state;
}

// Reads `size` bytes at `address` of this process through the kernel: a page that is not mapped (a
// thread's stack freed meanwhile) gives a short count, never a fault. Returns the bytes read.
inline size_t wall_read_own_memory(uintptr_t address, void* out, size_t size) {
  iovec local{out, size};
  iovec remote{reinterpret_cast<void*>(address), size};
  const ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  return n > 0 ? size_t(n) : 0;
}

#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
// A blocked thread's stack as the walk reads it: a copy made from sp upwards, chunk by chunk as the walk
// climbs, up to the end of the mapping that holds sp (or kWallStackLimit).
class RemoteStack {
 public:
  RemoteStack(std::vector<uint8_t>* buffer, uintptr_t sp) : buffer_(buffer) { moved_to(sp); }
  void moved_to(uintptr_t sp) {
    base_ = sp & ~uintptr_t(7);
    length_ = 0;
    limit_ = base_ + kWallStackLimit;
    if (const StackMappings* mappings = g_stack_mappings.load(std::memory_order_acquire)) {
      if (const std::pair<uintptr_t, uintptr_t>* range = mappings->find(sp)) limit_ = std::min(limit_, range->second);
    }
    failed_ = false;
  }
  bool read(uintptr_t a, uintptr_t* out) {
    if (a < base_ || a > limit_ - 8 || limit_ < 8) return false;
    while (a + 8 > base_ + length_) {
      if (failed_) return false;
      const size_t want = std::min<size_t>(kWallStackChunk, limit_ - (base_ + length_));
      if (want == 0) return false;
      if (buffer_->size() < length_ + want) buffer_->resize(length_ + want);
      const size_t got = wall_read_own_memory(base_ + length_, buffer_->data() + length_, want);
      length_ += got;
      if (got < want) failed_ = true;  // the rest is not mapped (or no longer)
    }
    std::memcpy(out, buffer_->data() + (a - base_), sizeof *out);
    return true;
  }

 private:
  std::vector<uint8_t>* buffer_;
  uintptr_t base_ = 0, limit_ = 0;
  size_t length_ = 0;
  bool failed_ = false;
};
#endif

class WallSampler {
 public:
  explicit WallSampler(uint32_t token) : token_(token), pid_(getpid()) {}
  ~WallSampler() {
    for (auto& entry : threads_) close_thread(entry.second);
    if (task_dir_ >= 0) close(task_dir_);
  }
  WallSampler(const WallSampler&) = delete;
  WallSampler& operator=(const WallSampler&) = delete;

  // One tick at monotonic time now_ns: every thread but skip_tids gets a sample, weighted with the
  // intervals since the previous tick (a late agent does not lose time; at most one second is counted).
  // emit(const SamplerSlot&) receives the samples of blocked threads (possibly later: see flush); those of
  // running threads wait for note_cpu_sample(). An emitted slot's time_ns is the latest tick it counts
  // (the caller puts it in that tick's block; flush() before a tick that crosses a block's end).
  // signal_ok() says whether SIGPROF's handler is still ours (the test hook's signals only).
  // False when the threads cannot be observed (then the log says why once, via *error).
  template <class Emit, class SignalOk>
  bool tick(int64_t now_ns, const std::vector<pid_t>& skip_tids, std::string* error, Emit&& emit,
            SignalOk&& signal_ok) {
    timespec cpu_start;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_start);
    // The intervals of real time since the previous tick: a wake early or late by a little moves a tick
    // into a neighbouring interval, and the next weight makes up for it (a tick in the same interval as
    // the previous one counts nothing).
    const int64_t index = now_ns / kWallIntervalNs;
    if (last_index_ != 0 && index <= last_index_) return true;
    const uint32_t weight =
        last_index_ == 0 ? 1u : uint32_t(std::min<int64_t>(index - last_index_, kWallSampleRateHz));
    last_index_ = index;
    if (ticks_++ % kWallListEveryTicks == 0 && !list_threads(skip_tids, error, emit)) return false;
    int signal_state = -1;  // -1: not checked yet this tick
    for (auto it = threads_.begin(); it != threads_.end();) {
      Thread& t = it->second;
      timespec cpu;
      if (clock_gettime(sampler_thread_cpu_clock(it->first), &cpu) != 0) {
        flush_thread(t, emit);  // exited since the listing
        close_thread(t);
        it = threads_.erase(it);
        continue;
      }
      const uint64_t cpu_ns = uint64_t(cpu.tv_sec) * 1000000000u + uint64_t(cpu.tv_nsec);
      if (g_wall_signal_every_thread.load(std::memory_order_relaxed)) {
        if (signal_state < 0) signal_state = signal_ok() ? 1 : 0;
        if (signal_state == 1 && send_signal(it->first, weight))
          g_sampler_counters.wall_signals.fetch_add(1, std::memory_order_relaxed);
        ++it;
        continue;
      }
      if (t.blocked && cpu_ns == t.cpu_ns) {
        t.pending += weight;
        t.pending_ns = now_ns;
        g_sampler_counters.wall_cached.fetch_add(1, std::memory_order_relaxed);
        ++it;
        continue;
      }
      // A late tick (weight > 1) stands for intervals in which the thread may have been blocked and
      // then run, or run and then blocked. The agent is late when the CPUs are busy, which is when a
      // woken thread waits longest to run, so giving them all to the state read now gave the running
      // side most of the waits (a thread that waited 46 % of a run showed 21 %). A late tick's intervals
      // are split by the time the thread was not blocked since the previous read, its CPU time plus its
      // wait on a run queue (schedstat): that many (rounded) to where it ran, the rest to the stack it
      // was blocked at (read then, or now). "Running" is runnable, as for an on-time tick, which goes to
      // the state read now: a tick at a random moment finds each state in proportion to its time.
      const bool was_blocked = t.blocked, was_read = t.cpu_ns != 0;
      const uint64_t run_delay_ns = read_run_delay(t, t.run_delay_ns);
      uint32_t ran = weight;  // intervals to give to where it ran, if it is running now
      if (weight > 1 && was_read) {
        // What rounding leaves over is carried to the thread's next late tick, so that the short runs
        // after wakeups, each less than half an interval, still add up.
        int64_t busy_ns = t.busy_carry_ns + (cpu_ns > t.cpu_ns ? int64_t(cpu_ns - t.cpu_ns) : 0);
        if (run_delay_ns > t.run_delay_ns) busy_ns += int64_t(run_delay_ns - t.run_delay_ns);
        const int64_t intervals = std::max<int64_t>(0, (busy_ns + kWallIntervalNs / 2) / kWallIntervalNs);
        ran = uint32_t(std::min<int64_t>(intervals, weight));
        t.busy_carry_ns = std::max(-kWallIntervalNs, std::min(kWallIntervalNs, busy_ns - int64_t(ran) * kWallIntervalNs));
      }
      t.cpu_ns = cpu_ns;
      t.run_delay_ns = run_delay_ns;
      const WallThreadState state = read_state(t);
      if (state.kind == WallThreadState::running) {
        uint32_t running_weight = weight;
        if (was_blocked && ran < weight) {
          running_weight = ran;
          t.pending += weight - ran;  // still at the stack it was blocked at, then woken
          t.pending_ns = now_ns;
        }
        flush_thread(t, emit);
        t.blocked = false;
        // Never signalled. "running" is any runnable thread, and one woken in a system call that has not
        // returned yet reads as "running" too, on a run queue or on a CPU in the kernel: a signal then
        // makes poll() or epoll_wait() fail with EINTR on its way out. Measured: signalling every
        // "running" thread gave 108 EINTR in 603 polls of a thread alternating 2 ms of CPU with a 3 ms
        // poll (5 s); signalling only threads whose CPU time moved between two reads microseconds apart
        // (on a CPU now) still gave 5 EINTR in 30 s (poll, epoll_wait: the thread was on a CPU in the
        // kernel, between its wakeup and its return). So the tick is owed, and given to the thread's
        // next CPU sample (the cpu sampler's own signal, which fires only while the thread runs and which
        // the program sees with or without wall-clock sampling): where it runs next.
        t.owed += running_weight;
        t.owed_ns = now_ns;
        g_sampler_counters.wall_running.fetch_add(1, std::memory_order_relaxed);
      } else if (state.kind != WallThreadState::unknown) {
        uint32_t blocked_weight = weight;
        if (weight > 1 && was_read && ran != 0) {  // it ran, then blocked here
          t.owed += ran;
          t.owed_ns = now_ns;
          blocked_weight = weight - ran;
        }
        // Ticks owed from while it was runnable go to where it last ran (its latest CPU sample); a
        // thread without one gets them on the stack it blocked at.
        if (t.owed != 0 && !t.cpu_pcs.empty()) {
          flush_thread(t, emit);
          emit_stack(t.cpu_tag_set, t.cpu_flags, t.cpu_pcs, t.owed, t.owed_ns, emit);
          t.owed = 0;
        }
        sample_blocked(it->first, t, state, t.owed + blocked_weight, now_ns, emit);
        t.owed = 0;
      }
      // unknown (the file could not be read: the thread is exiting): no sample, no signal.
      ++it;
    }
    g_sampler_counters.wall_ticks.fetch_add(1, std::memory_order_relaxed);
    timespec cpu_end;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_end);
    g_sampler_counters.wall_tick_ns.fetch_add(
        uint64_t((cpu_end.tv_sec - cpu_start.tv_sec) * 1000000000 + (cpu_end.tv_nsec - cpu_start.tv_nsec)),
        std::memory_order_relaxed);
    return true;
  }

  // A CPU sample drained from the ring (the agent drains after every tick): the ticks its thread was
  // found running since its previous one are given to this stack, and it is remembered as where the
  // thread last ran.
  template <class Emit>
  void note_cpu_sample(const SamplerSlot& slot, Emit&& emit) {
    auto it = threads_.find(static_cast<pid_t>(slot.tid));
    if (it == threads_.end()) return;
    Thread& t = it->second;
    t.cpu_pcs.assign(slot.pcs, slot.pcs + std::min<size_t>(slot.depth, kSamplerMaxFrames));
    t.cpu_tag_set = slot.tag_set;
    t.cpu_flags = static_cast<uint16_t>(slot.flags & (kSlotTruncated | kSlotIncomplete));
    if (t.owed != 0) {
      emit_stack(t.cpu_tag_set, t.cpu_flags, t.cpu_pcs, t.owed, t.owed_ns, emit);
      t.owed = 0;
    }
  }

  // Hands every thread's counted samples to emit (before a block is written). Ticks owed by a running
  // thread go to its latest CPU sample if it has one, else they wait for its next sample.
  template <class Emit>
  void flush(Emit&& emit) {
    for (auto& entry : threads_) {
      Thread& t = entry.second;
      flush_thread(t, emit);
      if (t.owed != 0 && !t.cpu_pcs.empty()) {
        emit_stack(t.cpu_tag_set, t.cpu_flags, t.cpu_pcs, t.owed, t.owed_ns, emit);
        t.owed = 0;
      }
    }
  }

 private:
  struct Thread {
    int syscall_fd = -1;
    int schedstat_fd = -1;  // -1 when the kernel has none: late ticks are then split by CPU time alone
    uint64_t cpu_ns = 0;
    uint64_t run_delay_ns = 0;  // its time on a run queue (schedstat's second field) at the last read
    int64_t busy_carry_ns = 0;  // running time a late tick's rounding left over
    bool blocked = false;  // the last read found it blocked: stack below is where
    uint64_t pending = 0;  // samples counted on that stack, not yet emitted
    int64_t pending_ns = 0;  // the latest tick counted in pending
    uint64_t owed = 0;     // ticks that found it running: given to its next CPU sample
    int64_t owed_ns = 0;   // the latest tick counted in owed
    // Its latest CPU sample (drained from the ring): where it last ran.
    std::vector<uintptr_t> cpu_pcs;
    uint32_t cpu_tag_set = 0;
    uint16_t cpu_flags = 0;
    uint32_t tag_set = 0;
    uint16_t flags = 0;
    std::vector<uintptr_t> pcs;  // leaf first, as a slot holds them
    uint64_t generation = 0;
  };
  uint32_t token_;
  pid_t pid_;
  std::unordered_map<pid_t, Thread> threads_;
  int task_dir_ = -1;
  std::vector<char> listing_;
  uint64_t generation_ = 0;
  uint64_t ticks_ = 0;
  int64_t last_index_ = 0;
  std::vector<uint8_t> stack_copy_;
  SamplerSlot slot_;  // scratch, for emit

  template <class Emit>
  bool list_threads(const std::vector<pid_t>& skip_tids, std::string* error, Emit& emit) {
    if (task_dir_ < 0) task_dir_ = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (task_dir_ < 0 || lseek(task_dir_, 0, SEEK_SET) != 0) {
      *error = std::string("wall-clock sampling: cannot list /proc/self/task: ") + std::strerror(errno);
      return false;
    }
    generation_++;
    if (listing_.size() < 16384) listing_.resize(16384);
    for (;;) {
      const long n = syscall(SYS_getdents64, task_dir_, listing_.data(), listing_.size());
      if (n <= 0) break;
      for (long offset = 0; offset < n;) {
        uint16_t record_length;  // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name
        std::memcpy(&record_length, listing_.data() + offset + 16, sizeof record_length);
        const char* name = listing_.data() + offset + 19;
        offset += record_length;
        if (name[0] < '0' || name[0] > '9') continue;
        const pid_t tid = static_cast<pid_t>(std::strtol(name, nullptr, 10));
        if (std::find(skip_tids.begin(), skip_tids.end(), tid) != skip_tids.end()) continue;
        Thread& t = threads_[tid];
        t.generation = generation_;
        if (t.syscall_fd >= 0) continue;
        const std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
        t.syscall_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (t.syscall_fd < 0 && errno != ENOENT && errno != ESRCH) {
          *error = "wall-clock sampling: cannot open " + path + ": " + std::strerror(errno) +
                   " (the kernel must provide /proc/<pid>/task/<tid>/syscall)";
          threads_.erase(tid);
          return false;
        }
        if (t.syscall_fd >= 0) {
          const std::string schedstat = "/proc/self/task/" + std::to_string(tid) + "/schedstat";
          t.schedstat_fd = open(schedstat.c_str(), O_RDONLY | O_CLOEXEC);
        }
      }
    }
    for (auto it = threads_.begin(); it != threads_.end();) {
      if (it->second.generation == generation_ && it->second.syscall_fd >= 0) {
        ++it;
        continue;
      }
      flush_thread(it->second, emit);
      close_thread(it->second);
      it = threads_.erase(it);
    }
    return true;
  }

  static void close_thread(Thread& t) {
    if (t.syscall_fd >= 0) close(t.syscall_fd);
    if (t.schedstat_fd >= 0) close(t.schedstat_fd);
    t.syscall_fd = -1;
    t.schedstat_fd = -1;
  }

  // "cpu_ns run_delay_ns timeslices" (the kernel's sched_info): the second field; `previous` when the
  // file cannot be read (no run-queue wait is counted then, rather than a thread's whole life's).
  static uint64_t read_run_delay(const Thread& t, uint64_t previous) {
    if (t.schedstat_fd < 0) return previous;
    char text[96];
    const ssize_t n = pread(t.schedstat_fd, text, sizeof text - 1, 0);
    if (n <= 0) return previous;
    text[n] = '\0';
    char* end = nullptr;
    std::strtoull(text, &end, 10);
    if (end == text) return previous;
    char* delay_end = nullptr;
    const uint64_t delay = std::strtoull(end, &delay_end, 10);
    return delay_end != end ? delay : previous;
  }

  static WallThreadState read_state(const Thread& t) {
    char text[256];
    const ssize_t n = pread(t.syscall_fd, text, sizeof text - 1, 0);
    if (n <= 0) return WallThreadState();
    return wall_parse_syscall_file(text, size_t(n));
  }

  bool send_signal(pid_t tid, uint32_t weight) {
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    info.si_signo = kSamplerSignal;
    info.si_code = SI_QUEUE;
    info.si_pid = pid_;
    info.si_uid = getuid();
    info.si_value.sival_int = static_cast<int>(token_ | (weight & kWallWeightMask));
    return syscall(SYS_rt_tgsigqueueinfo, pid_, tid, kSamplerSignal, &info) == 0;
  }

  template <class Emit>
  void flush_thread(Thread& t, Emit& emit) {
    if (t.pending == 0) return;
    emit_stack(t.tag_set, t.flags, t.pcs, t.pending, t.pending_ns, emit);
    t.pending = 0;
  }

  template <class Emit>
  void emit_stack(uint32_t tag_set, uint16_t flags, const std::vector<uintptr_t>& pcs, uint64_t weight,
                  int64_t time_ns, Emit& emit) {
    slot_.tag_set = tag_set;
    slot_.time_ns = time_ns;
    slot_.flags = static_cast<uint16_t>(flags | kSlotWall);
    slot_.depth = static_cast<uint16_t>(pcs.size());
    std::copy(pcs.begin(), pcs.end(), slot_.pcs);
    while (weight > 0) {  // a slot's weight is 32 bits
      const uint64_t part = std::min<uint64_t>(weight, UINT32_MAX);
      slot_.weight = static_cast<uint32_t>(part);
      emit(static_cast<const SamplerSlot&>(slot_));
      weight -= part;
    }
  }

  // The tag-set word the thread published (0 if it never entered a tag scope).
  static uint32_t read_tag_set(pid_t tid) {
    const std::atomic<uint32_t>* word = nullptr;
    {
      std::lock_guard<std::mutex> lock(tag_registry().mutex());
      auto it = thread_tag_words().find(tid);
      if (it != thread_tag_words().end()) word = it->second;
    }
    uint32_t value = 0;
    if (word != nullptr && wall_read_own_memory(reinterpret_cast<uintptr_t>(word), &value, sizeof value) != sizeof value)
      value = 0;
    return value;
  }

  template <class Emit>
  void sample_blocked(pid_t tid, Thread& t, const WallThreadState& state, uint64_t weight, int64_t now_ns,
                      Emit& emit) {
    uintptr_t pcs[kSamplerMaxFrames];
    int depth = 0;
    bool truncated = false;
    bool complete = false;
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
    for (int attempt = 0; attempt < 2; attempt++) {
      RemoteStack stack(&stack_copy_, state.sp);
      depth = 0;
      truncated = false;
      const UnwindEnd end = sampler_unwind_walk(stack, state.pc, state.sp, 0, false, pcs, kSamplerMaxFrames, &depth,
                                                &truncated);
      complete = end == UnwindEnd::complete;
      // A module the agent has no table for yet: build it now (we are the agent) and walk again.
      if (end != UnwindEnd::no_table || unwind_tables().serve_requests() == 0) break;
    }
#else
    pcs[0] = state.pc;
    depth = state.pc != 0 ? 1 : 0;
#endif
    g_sampler_counters.wall_unwinds.fetch_add(1, std::memory_order_relaxed);
    const uint32_t tag_set = read_tag_set(tid);
    const uint16_t flags = static_cast<uint16_t>((truncated ? kSlotTruncated : 0) | (complete ? 0 : kSlotIncomplete));
    const bool same = t.blocked && t.tag_set == tag_set && t.flags == flags && t.pcs.size() == size_t(depth) &&
                      std::equal(t.pcs.begin(), t.pcs.end(), pcs);
    if (!same) {
      flush_thread(t, emit);
      t.tag_set = tag_set;
      t.flags = flags;
      t.pcs.assign(pcs, pcs + depth);
    }
    t.blocked = true;
    t.pending += weight;
    t.pending_ns = now_ns;
  }
};

}  // namespace detail
}  // namespace pyroscope

