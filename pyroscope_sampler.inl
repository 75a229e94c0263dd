// pyroscope_sampler.inl — the sampler part of pyroscope.hpp's implementation (tag scopes, signal
// handler, per-thread timers, symbolizer, flushes, push). Included from the implementation part of
// pyroscope.hpp only; it is pasted into the header before landing, so it reads as header sections.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>

// [SECTION] Implementation: tag scopes ============================================================
//
// A tag set is a node in a tree: (parent set, key=value) -> id. A thread's current set is one 32-bit
// word in a thread_local, which the signal handler reads (Go's labels work the same way: an immutable
// value swapped per scope). Interning takes a mutex the first time a (parent, key, value) triple is
// seen; later lookups walk a bucket chain of immutable nodes with acquire loads and never allocate.

#if defined(__GNUC__) || defined(__clang__)
// initial-exec: the variable sits in static TLS, so reading it in the signal handler is a plain
// %fs-relative load even when the implementation lives in a shared library (the default dynamic model
// may call __tls_get_addr, which can allocate on a thread's first access).
#define PYROSCOPE_TLS_INITIAL_EXEC __attribute__((tls_model("initial-exec")))
#else
#define PYROSCOPE_TLS_INITIAL_EXEC
#endif

namespace pyroscope {
namespace detail {

// The calling thread's tag-set id (0: no dynamic tags). Written by tag scopes, read by the handler.
thread_local std::atomic<uint32_t> g_thread_tag_set PYROSCOPE_TLS_INITIAL_EXEC{0};

struct TagSetNode {
  uint32_t id = 0;
  uint32_t parent = 0;
  uint64_t hash = 0;
  std::string key;
  std::string value;
  Tags tags;  // parent's tags with key=value added (a later value for a key replaces the earlier)
  std::atomic<TagSetNode*> next{nullptr};  // bucket chain; immutable once published
};

class TagSetRegistry {
 public:
  // Tag sets beyond this many are not created (the tag is ignored and counted): unbounded values such
  // as request ids would otherwise grow memory and the number of series without limit.
  static constexpr uint32_t kMaxTagSets = 1u << 16;

  uint32_t child(uint32_t parent, std::string_view key, std::string_view value) {
    const uint64_t h = hash(parent, key, value);
    std::atomic<TagSetNode*>& bucket = buckets_[h & (kBuckets - 1)];
    if (TagSetNode* found = find(bucket.load(std::memory_order_acquire), h, parent, key, value))
      return found->id;
    std::lock_guard<std::mutex> lock(mutex_);
    if (TagSetNode* found = find(bucket.load(std::memory_order_acquire), h, parent, key, value))
      return found->id;
    if (nodes_.size() >= kMaxTagSets || parent >= nodes_.size()) {
      overflowed_.fetch_add(1, std::memory_order_relaxed);
      return parent;
    }
    TagSetNode* node = new TagSetNode;
    node->id = static_cast<uint32_t>(nodes_.size());
    node->parent = parent;
    node->hash = h;
    node->key.assign(key.data(), key.size());
    node->value.assign(value.data(), value.size());
    if (parent != 0) node->tags = nodes_[parent]->tags;
    bool replaced = false;
    for (Tag& tag : node->tags) {
      if (tag.key == node->key) {
        tag.value = node->value;
        replaced = true;
      }
    }
    if (!replaced) {
      node->tags.push_back(Tag{node->key, node->value});
      std::sort(node->tags.begin(), node->tags.end());
    }
    node->next.store(bucket.load(std::memory_order_relaxed), std::memory_order_relaxed);
    nodes_.push_back(node);
    bucket.store(node, std::memory_order_release);
    return node->id;
  }

  // The resolved tags of a set (empty for 0 or an unknown id). Takes the mutex: background thread.
  Tags tags_of(uint32_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (id == 0 || id >= nodes_.size()) return Tags();
    return nodes_[id]->tags;
  }
  uint32_t size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<uint32_t>(nodes_.size());
  }
  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }
  std::mutex& mutex() { return mutex_; }  // held across fork() so the child gets a consistent copy

 private:
  static constexpr size_t kBuckets = 1024;
  std::mutex mutex_;
  std::vector<TagSetNode*> nodes_{nullptr};  // nodes_[id]; id 0 is the empty set
  std::atomic<TagSetNode*> buckets_[kBuckets] = {};
  std::atomic<uint64_t> overflowed_{0};

  static uint64_t hash(uint32_t parent, std::string_view key, std::string_view value) {
    uint64_t h = 0xcbf29ce484222325ull ^ parent;
    for (char c : key) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
    h = (h ^ 0xffu) * 0x100000001b3ull;  // separator: ("ab","c") != ("a","bc")
    for (char c : value) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
    return h ^ (h >> 31);
  }
  static TagSetNode* find(TagSetNode* node, uint64_t h, uint32_t parent, std::string_view key,
                          std::string_view value) {
    for (; node != nullptr; node = node->next.load(std::memory_order_acquire)) {
      if (node->hash == h && node->parent == parent && node->key == key && node->value == value) return node;
    }
    return nullptr;
  }
};

inline TagSetRegistry& tag_registry() {
  static TagSetRegistry* registry = new TagSetRegistry;  // never destroyed: tag scopes may outlive exit
  return *registry;
}

uint32_t tag_push(std::string_view key, std::string_view value) {
  const uint32_t previous = g_thread_tag_set.load(std::memory_order_relaxed);
  g_thread_tag_set.store(tag_registry().child(previous, key, value), std::memory_order_relaxed);
  return previous;
}

uint32_t tag_push_all(const Tags& tags) {
  const uint32_t previous = g_thread_tag_set.load(std::memory_order_relaxed);
  uint32_t id = previous;
  for (const Tag& tag : tags) id = tag_registry().child(id, tag.key, tag.value);
  g_thread_tag_set.store(id, std::memory_order_relaxed);
  return previous;
}

void tag_restore(uint32_t previous_tag_set) {
  g_thread_tag_set.store(previous_tag_set, std::memory_order_relaxed);
}

// The calling thread's current dynamic tags (for tests and the log).
inline Tags current_thread_tags() {
  return tag_registry().tags_of(g_thread_tag_set.load(std::memory_order_relaxed));
}

// Names as Pyroscope accepts them in `app.cpu{key=value}`; checked at start() for the static tags and
// on the background thread for dynamic ones (a bad dynamic tag is logged once and left out).
inline bool is_valid_app_name(std::string_view name, std::string* why) {
  if (name.empty()) {
    *why = "is empty";
    return false;
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == '/' || c == ':';
    if (!ok) {
      *why = std::string("contains '") + c + "' (allowed: letters, digits and . _ - / :)";
      return false;
    }
  }
  return true;
}

inline bool is_valid_tag(std::string_view key, std::string_view value, std::string* why) {
  if (key.empty()) {
    *why = "has an empty key";
    return false;
  }
  for (size_t i = 0; i < key.size(); i++) {
    const char c = key[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && ((c >= '0' && c <= '9') || c == '.'));
    if (!ok) {
      *why = "key '" + std::string(key) + "' must match [A-Za-z_][A-Za-z0-9_.]*";
      return false;
    }
  }
  if (key.size() >= 2 && key[0] == '_' && key[1] == '_') {
    *why = "key '" + std::string(key) + "' starts with '__' (reserved)";
    return false;
  }
  if (value.empty()) {
    *why = "key '" + std::string(key) + "' has an empty value";
    return false;
  }
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '{' || c == '}' || c == ',' || c == '=' ||
        c == '"') {
      *why = "value of '" + std::string(key) + "' contains a control character or one of {}=,\"";
      return false;
    }
  }
  return true;
}

}  // namespace detail
}  // namespace pyroscope

#if defined(PYROSCOPE_PLATFORM_LINUX) && !defined(PYROSCOPE_NO_SAMPLER)

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <thread>
#include <unordered_map>

// [SECTION] Implementation: sampler backend (Linux) ===============================================
//
// Every thread gets its own POSIX timer on its own CPU-time clock (timer_create with the thread's
// clock id, SIGEV_THREAD_ID): an idle thread produces no signals, and the rate scales with the number
// of busy threads (setitimer(ITIMER_PROF) is one process-wide timer, capped near the kernel tick rate).
// The background thread ("pyroscope-agent") arms timers for the threads it finds in /proc/self/task,
// rescans every kThreadScanMs for new ones and deletes the timers of threads that are gone.
//
// The SIGPROF handler unwinds into a slot of a bounded lock-free ring (Vyukov's MPMC sequence scheme,
// one consumer) and records the thread's tag-set id and the sample's weight, 1 + si_overrun. No
// malloc, no locks, no stdio. Two unwinders, both correct on -O2 code without frame pointers:
//   - tables (x86-64, glibc >= 2.35): the agent turns each module's .eh_frame into sorted rows "from this
//     pc on, CFA = rsp|rbp + k, rbp saved at CFA + j"; the handler finds the module with
//     _dl_find_object (async-signal-safe, always current), binary-searches the row and reads two words
//     per frame: 4-6x cheaper per sample than libgcc, which interprets the DWARF program of every frame.
//   - _Unwind_Backtrace (libgcc; async-signal-safe with glibc >= 2.35, whose _dl_find_object it uses):
//     for a module without a table yet, rules the tables do not express (PLT stubs, signal
//     trampolines, DWARF expressions) and other architectures.

namespace pyroscope {
namespace detail {

constexpr int kSamplerSignal = SIGPROF;
constexpr int kSamplerMaxFrames = 125;       // a slot is 1 KiB; deeper stacks keep their leaf side
constexpr size_t kSamplerRingSlots = 1024;   // ~10 s of 10 busy threads at 100 Hz between drains
constexpr int kAgentWakeMs = 100;            // drain the ring and rescan threads this often
constexpr int kPushStopBudgetMs = 3000;      // stop() waits at most this long for the push queue
constexpr uint64_t kHandlerPreemptedNs = 200000;  // a handler timed longer was descheduled meanwhile

struct SamplerSlot {
  std::atomic<uint64_t> sequence;
  uint32_t tag_set;
  uint32_t weight;
  uint16_t depth;
  uint16_t truncated;
  uint32_t reserved;
  uintptr_t pcs[kSamplerMaxFrames];  // leaf first; callers' return addresses already minus one
};
static_assert(sizeof(void*) != 8 || sizeof(SamplerSlot) == 1024, "a ring slot is one KiB on 64-bit");

struct SamplerRing {
  SamplerSlot* slots = nullptr;
  uint64_t mask = 0;
  alignas(64) std::atomic<uint64_t> head{0};  // next position a producer claims
  alignas(64) uint64_t tail = 0;              // next position the consumer reads

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
  void publish(SamplerSlot* slot, uint64_t position) {
    slot->sequence.store(position + 1, std::memory_order_release);
  }

  // Consumer side (the agent thread only). Calls fn(const SamplerSlot&) for each published sample in
  // order and stops at the first slot a handler is still writing.
  template <class Fn>
  size_t drain(Fn&& fn) {
    size_t n = 0;
    for (;;) {
      SamplerSlot* slot = &slots[tail & mask];
      if (slot->sequence.load(std::memory_order_acquire) != tail + 1) break;
      fn(static_cast<const SamplerSlot&>(*slot));
      slot->sequence.store(tail + mask + 1, std::memory_order_release);
      tail++;
      n++;
    }
    return n;
  }
  // Only while no handler can run.
  void reset() {
    for (uint64_t i = 0; i <= mask; i++) slots[i].sequence.store(i, std::memory_order_relaxed);
    head.store(0, std::memory_order_relaxed);
    tail = 0;
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
  std::atomic<uint64_t> timers_armed{0};     // currently
  std::atomic<uint64_t> timers_created{0};
  std::atomic<uint64_t> timers_deleted{0};
  std::atomic<uint64_t> thread_scans{0};
  std::atomic<uint64_t> blocks_written{0};
  std::atomic<uint64_t> push_sent{0};
  std::atomic<uint64_t> push_failed{0};      // attempts that failed (retried or dropped)
  std::atomic<uint64_t> push_dropped{0};     // batches given up
  std::atomic<uint64_t> agent_cpu_ns{0};     // CPU time of finished agent threads (drain, symbolize, write)
  std::atomic<uint64_t> table_unwinds{0};    // samples unwound with the tables (the rest: libgcc)
  std::atomic<uint64_t> table_handler_ns{0};  // handler time of those samples (below the cap)
  std::atomic<uint64_t> table_timed{0};
  std::atomic<uint64_t> handler_ns_log2[32] = {};  // samples by handler time: [2^i, 2^(i+1)) ns
  std::atomic<uint64_t> verify_same{0};      // test hook g_sampler_verify_unwind: both unwinders agreed
  std::atomic<uint64_t> verify_different{0};
};

inline SamplerCounters g_sampler_counters;
inline std::atomic<SamplerRing*> g_sampler_ring{nullptr};
inline std::atomic<bool> g_sampler_enabled{false};
inline std::atomic<int> g_sampler_in_flight{0};

// A snapshot of the counters, for tests, benchmarks and the log.
struct SamplerStats {
  uint64_t samples = 0, handler_ns = 0, handler_timed = 0, dropped_full = 0, drained = 0, weight = 0;
  uint64_t timers_armed = 0, timers_created = 0, timers_deleted = 0, thread_scans = 0;
  uint64_t blocks_written = 0, push_sent = 0, push_failed = 0, push_dropped = 0, agent_cpu_ns = 0;
  uint64_t table_unwinds = 0, table_handler_ns = 0, table_timed = 0, verify_same = 0, verify_different = 0;
  uint64_t handler_ns_log2[32] = {};

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
  s.timers_armed = c.timers_armed.load(std::memory_order_relaxed);
  s.timers_created = c.timers_created.load(std::memory_order_relaxed);
  s.timers_deleted = c.timers_deleted.load(std::memory_order_relaxed);
  s.thread_scans = c.thread_scans.load(std::memory_order_relaxed);
  s.blocks_written = c.blocks_written.load(std::memory_order_relaxed);
  s.push_sent = c.push_sent.load(std::memory_order_relaxed);
  s.push_failed = c.push_failed.load(std::memory_order_relaxed);
  s.push_dropped = c.push_dropped.load(std::memory_order_relaxed);
  s.agent_cpu_ns = c.agent_cpu_ns.load(std::memory_order_relaxed);
  s.table_unwinds = c.table_unwinds.load(std::memory_order_relaxed);
  s.table_handler_ns = c.table_handler_ns.load(std::memory_order_relaxed);
  s.table_timed = c.table_timed.load(std::memory_order_relaxed);
  for (int i = 0; i < 32; i++) s.handler_ns_log2[i] = c.handler_ns_log2[i].load(std::memory_order_relaxed);
  s.verify_same = c.verify_same.load(std::memory_order_relaxed);
  s.verify_different = c.verify_different.load(std::memory_order_relaxed);
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
  int16_t rbp_offset;    // rbp saved at CFA + rbp_offset, or kRbpKept
  uint8_t cfa_register;  // kCfaRsp, kCfaRbp, kRuleUnsupported, kNoRule
  uint8_t outermost;     // return address undefined: the thread's first frame
};
static_assert(sizeof(UnwindRow) == 12, "unwind rows are 12 bytes");
constexpr int16_t kRbpKept = INT16_MIN;
constexpr uint8_t kCfaRsp = 0, kCfaRbp = 1, kRuleUnsupported = 2, kNoRule = 3;

// The rows of one loaded object. Immutable once published; freed only when no handler can run.
struct UnwindTable {
  const void* eh_frame_hdr = nullptr;  // identity, with the three fields below (_dl_find_object's)
  uintptr_t map_start = 0, map_end = 0;
  const void* link_map = nullptr;
  bool usable = false;  // false: the object's .eh_frame_hdr has no search table; always use libgcc
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

// Tables by .eh_frame_hdr address (open addressing). The agent is the only writer; handlers read with
// acquire loads. Handlers that find no table leave a request the agent serves on its next wake.
class UnwindTables {
 public:
  const UnwindTable* find(const dl_find_object& object) const {
    const uintptr_t key = reinterpret_cast<uintptr_t>(object.dlfo_eh_frame);
    for (size_t i = 0; i < kSlots; i++) {
      const UnwindTable* table = slots_[(hash(key) + i) & (kSlots - 1)].load(std::memory_order_acquire);
      if (table == nullptr) return nullptr;
      if (table == tombstone()) continue;
      if (table->eh_frame_hdr == object.dlfo_eh_frame &&
          table->map_start == reinterpret_cast<uintptr_t>(object.dlfo_map_start) &&
          table->map_end == reinterpret_cast<uintptr_t>(object.dlfo_map_end) &&
          table->link_map == object.dlfo_link_map)
        return table;
    }
    return nullptr;
  }
  // Handler side: ask for a table (dropped if the request slots are busy; asked again next sample).
  void request(const void* eh_frame_hdr) {
    const void* expected = nullptr;
    requests_[hash(reinterpret_cast<uintptr_t>(eh_frame_hdr)) & (kRequests - 1)].compare_exchange_strong(
        expected, eh_frame_hdr, std::memory_order_acq_rel);
  }

  // Agent side: builds the requested tables. Returns how many were added.
  size_t serve_requests() {
    size_t added = 0;
    for (auto& slot : requests_) {
      const void* wanted = slot.exchange(nullptr, std::memory_order_acq_rel);
      if (wanted == nullptr) continue;
      dl_find_object object;
      // The object's own header is inside its mapping: look the object up by that address.
      if (_dl_find_object(const_cast<void*>(wanted), &object) != 0 || object.dlfo_eh_frame != wanted) continue;
      if (find(object) != nullptr) continue;
      std::unique_ptr<UnwindTable> table(new UnwindTable);
      table->eh_frame_hdr = object.dlfo_eh_frame;
      table->map_start = reinterpret_cast<uintptr_t>(object.dlfo_map_start);
      table->map_end = reinterpret_cast<uintptr_t>(object.dlfo_map_end);
      table->link_map = object.dlfo_link_map;
      table->usable = build_unwind_rows(static_cast<const uint8_t*>(object.dlfo_eh_frame), table->map_start,
                                        table->map_end, &table->rows);
      if (!table->usable) table->rows.clear();
      table->rows.shrink_to_fit();
      if (table->usable) table->index_pages();
      if (publish(table.get())) {
        row_bytes_ += table->rows.size() * sizeof(UnwindRow) + table->pages.size() * sizeof(uint32_t);
        owned_.push_back(std::move(table));
        added++;
      }
    }
    return added;
  }
  // Agent side, after a dlclose: unpublishes tables whose object is gone.
  void forget_unloaded() {
    for (auto& slot : slots_) {
      const UnwindTable* table = slot.load(std::memory_order_relaxed);
      if (table == nullptr || table == tombstone()) continue;
      dl_find_object object;
      if (_dl_find_object(reinterpret_cast<void*>(table->map_start), &object) != 0 || find_matches(*table, object))
        continue;
      slot.store(tombstone(), std::memory_order_release);
    }
  }
  // Only while no handler can run (between sessions).
  void clear() {
    for (auto& slot : slots_) slot.store(nullptr, std::memory_order_relaxed);
    for (auto& request : requests_) request.store(nullptr, std::memory_order_relaxed);
    owned_.clear();
    row_bytes_ = 0;
  }
  size_t table_count() const { return owned_.size(); }
  size_t row_bytes() const { return row_bytes_; }

  static bool build_unwind_rows(const uint8_t* eh_frame_hdr, uintptr_t map_start, uintptr_t map_end,
                                std::vector<UnwindRow>* rows);

 private:
  static constexpr size_t kSlots = 512;
  static constexpr size_t kRequests = 64;
  std::atomic<const UnwindTable*> slots_[kSlots] = {};
  std::atomic<const void*> requests_[kRequests] = {};
  std::vector<std::unique_ptr<UnwindTable>> owned_;  // agent only
  size_t row_bytes_ = 0;

  static size_t hash(uintptr_t key) { return size_t((key >> 4) * 0x9e3779b97f4a7c15ull >> 40); }
  // A removed table's slot (never dereferenced).
  static const UnwindTable* tombstone() { return reinterpret_cast<const UnwindTable*>(uintptr_t(1)); }
  static bool find_matches(const UnwindTable& table, const dl_find_object& object) {
    return table.eh_frame_hdr == object.dlfo_eh_frame &&
           table.map_start == reinterpret_cast<uintptr_t>(object.dlfo_map_start) &&
           table.link_map == object.dlfo_link_map;
  }
  bool publish(const UnwindTable* table) {
    const uintptr_t key = reinterpret_cast<uintptr_t>(table->eh_frame_hdr);
    for (size_t i = 0; i < kSlots; i++) {
      std::atomic<const UnwindTable*>& slot = slots_[(hash(key) + i) & (kSlots - 1)];
      if (slot.load(std::memory_order_relaxed) == nullptr) {  // tombstones are not reused: readers may be past them
        slot.store(table, std::memory_order_release);
        return true;
      }
    }
    return false;  // full (thousands of dlopen/dlclose cycles): those objects use libgcc
  }
};

// Created by start() before the handler is installed (so the handler never runs a static's first-use
// initialization) and never destroyed: handlers may still read it during exit.
inline UnwindTables& unwind_tables() {
  static UnwindTables* tables = new UnwindTables;
  return *tables;
}

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
  bool augmented = false;  // 'z': FDEs carry an augmentation length
  const uint8_t* instructions = nullptr;
  const uint8_t* end = nullptr;
};

inline bool parse_cie(const uint8_t* cie, CieInfo* out) {
  uint32_t length32;
  std::memcpy(&length32, cie, 4);
  if (length32 == 0 || length32 == 0xffffffffu) return false;  // 64-bit DWARF: not produced for x86-64 code
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
      } else if (*a != 'S' && *a != 'B') {
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
  bool rbp_saved = false;
  bool rbp_unsupported = false;
  bool ra_undefined = false;
  bool ra_unsupported = false;
  bool cfa_expression = false;

  UnwindRow row(uint32_t pc) const {
    UnwindRow r{pc, 0, kRbpKept, kRuleUnsupported, 0};
    if (ra_undefined) {
      r.cfa_register = kCfaRsp;  // unused: the handler stops at an outermost frame
      r.outermost = 1;
      return r;
    }
    if (cfa_expression || ra_unsupported || rbp_unsupported || cfa_register == kRuleUnsupported) return r;
    if (cfa_offset < INT32_MIN || cfa_offset > INT32_MAX) return r;
    if (rbp_saved && (rbp_offset <= INT16_MIN || rbp_offset > INT16_MAX)) return r;
    r.cfa_register = cfa_register;
    r.cfa_offset = int32_t(cfa_offset);
    r.rbp_offset = rbp_saved ? int16_t(rbp_offset) : kRbpKept;
    return r;
  }
};

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
      case 0x0f: { const uint64_t n = c.uleb(); c.p += std::min<uint64_t>(n, uint64_t(c.end - c.p)); rules->cfa_expression = true; break; }
      case 0x10: case 0x16: {  // expression, val_expression
        const uint64_t reg = c.uleb();
        const uint64_t n = c.uleb();
        c.p += std::min<uint64_t>(n, uint64_t(c.end - c.p));
        unsupported_register(reg);
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

inline bool UnwindTables::build_unwind_rows(const uint8_t* hdr, uintptr_t map_start, uintptr_t map_end,
                                            std::vector<UnwindRow>* rows) {
  // .eh_frame_hdr: version 1, encodings, .eh_frame pointer, then a sorted (pc, FDE) search table.
  if (hdr[0] != 1) return false;
  const uint8_t frame_encoding = hdr[1], count_encoding = hdr[2], table_encoding = hdr[3];
  DwarfCursor c{hdr + 4, hdr + 4 + 64};
  const uintptr_t data_base = reinterpret_cast<uintptr_t>(hdr);
  c.encoded(frame_encoding, data_base);
  const uint64_t count = c.encoded(count_encoding, data_base);
  if (!c.ok || count_encoding == 0xff || table_encoding != 0x3b) return false;  // datarel|sdata4 table
  if (map_end - map_start > UINT32_MAX) return false;  // row pcs are 32-bit offsets
  const int32_t* table = reinterpret_cast<const int32_t*>(c.p);
  std::unordered_map<const uint8_t*, CieInfo> cies;
  rows->reserve(size_t(count) * 4);
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t* fde = hdr + table[2 * i + 1];
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
      if (!parse_cie(cie_address, &info)) info.instructions = nullptr;
      found = cies.emplace(cie_address, info).first;
    }
    const CieInfo& cie = found->second;
    if (cie.instructions == nullptr) continue;  // its range stays uncovered: the handler falls back
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
      // Unknown instruction: what was decoded holds; the rest of the function falls back.
      rules.cfa_expression = true;
    }
    if (loc < begin + range) {
      const UnwindRow row = rules.row(uint32_t(loc - map_start));
      if (rows->size() > first_row && rows->back().pc == row.pc) rows->back() = row;
      else rows->push_back(row);
    }
    // The end of the function: no rule until the next FDE begins.
    const uint32_t end_pc = uint32_t(begin + range - map_start);
    const uint32_t next_begin = i + 1 < count ? uint32_t(uintptr_t(hdr + table[2 * i + 2]) - map_start) : UINT32_MAX;
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

constexpr uintptr_t kMaxFrameBytes = uintptr_t(64) << 20;

// Walks the interrupted thread's stack with the tables. False when a frame needs libgcc (no table yet,
// an unsupported rule, a pc in no known object at the leaf): the caller then uses _Unwind_Backtrace.
// Reads other functions' frames on purpose (return addresses, saved rbp): not instrumented by ASan.
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("address")))
#endif
inline bool sampler_unwind_with_tables(const ucontext_t* uc, uintptr_t* pcs, int capacity, int* depth,
                                       bool* truncated) {
  const UnwindTables& tables = unwind_tables();
  uintptr_t pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  uintptr_t sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
  uintptr_t bp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RBP]);
  int n = 0;
  const UnwindTable* table = nullptr;
  for (;;) {
    const uintptr_t lookup = n == 0 ? pc : pc - 1;  // a return address belongs to its call instruction
    if (n == capacity) {
      *truncated = true;
      break;
    }
    pcs[n++] = lookup;
    // Objects' mappings do not overlap: while the pc stays inside the current object, so does its table.
    if (table == nullptr || lookup < table->map_start || lookup >= table->map_end) {
      dl_find_object object;
      if (_dl_find_object(reinterpret_cast<void*>(lookup), &object) != 0 || object.dlfo_eh_frame == nullptr) {
        if (n == 1) return false;
        break;  // left the known objects (the stack's end, or code without unwind data)
      }
      table = tables.find(object);
      if (table == nullptr) {
        unwind_tables().request(object.dlfo_eh_frame);
        return false;
      }
      if (!table->usable) return false;
    }
    const UnwindRow* row = table->find(lookup - table->map_start);
    if (row == nullptr || row->cfa_register == kNoRule || row->cfa_register == kRuleUnsupported) return false;
    if (row->outermost) break;
    const uintptr_t cfa = (row->cfa_register == kCfaRsp ? sp : bp) + uintptr_t(intptr_t(row->cfa_offset));
    // The caller's frame is above this one on the stack, by a sane amount.
    if (cfa <= sp || cfa - sp > kMaxFrameBytes || (cfa & 7) != 0) return false;
    const uintptr_t return_address = *reinterpret_cast<const uintptr_t*>(cfa - 8);
    if (row->rbp_offset != kRbpKept) bp = *reinterpret_cast<const uintptr_t*>(cfa + intptr_t(row->rbp_offset));
    sp = cfa;
    pc = return_address;
    if (pc == 0) break;
  }
  *depth = n;
  return true;
}
#endif  // table unwinder

// Test hook: when set, each sample is unwound both ways and differences are counted.
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

inline void sampler_take_sample(const siginfo_t* info, void* ucontext) {
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
  bool unwound = false;
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  if (ucontext != nullptr) {
    unwound = sampler_unwind_with_tables(static_cast<const ucontext_t*>(ucontext), slot->pcs, kSamplerMaxFrames,
                                         &depth, &truncated);
    if (unwound && g_sampler_verify_unwind.load(std::memory_order_relaxed)) {
      uintptr_t check[kSamplerMaxFrames];
      bool check_truncated = false;
      const int check_depth = sampler_unwind_with_libgcc(ucontext, check, kSamplerMaxFrames, &check_truncated);
      bool same = check_depth == depth;
      for (int i = 0; same && i < depth; i++) same = check[i] == slot->pcs[i];
      (same ? g_sampler_counters.verify_same : g_sampler_counters.verify_different)
          .fetch_add(1, std::memory_order_relaxed);
    }
  }
#endif
  if (!unwound) {
    depth = sampler_unwind_with_libgcc(ucontext, slot->pcs, kSamplerMaxFrames, &truncated);
  }
  slot->depth = static_cast<uint16_t>(depth);
  slot->truncated = truncated ? 1 : 0;
  slot->tag_set = g_thread_tag_set.load(std::memory_order_relaxed);
  slot->weight = 1u + static_cast<uint32_t>(info->si_overrun > 0 ? info->si_overrun : 0);
  ring->publish(slot, position);
  const uint64_t elapsed = static_cast<uint64_t>(sampler_monotonic_ns() - started);
  g_sampler_counters.samples.fetch_add(1, std::memory_order_relaxed);
  if (unwound) g_sampler_counters.table_unwinds.fetch_add(1, std::memory_order_relaxed);
  if (elapsed < kHandlerPreemptedNs) {
    g_sampler_counters.handler_ns.fetch_add(elapsed, std::memory_order_relaxed);
    g_sampler_counters.handler_timed.fetch_add(1, std::memory_order_relaxed);
    if (unwound) {
      g_sampler_counters.table_handler_ns.fetch_add(elapsed, std::memory_order_relaxed);
      g_sampler_counters.table_timed.fetch_add(1, std::memory_order_relaxed);
    }
  }
  const int bucket = elapsed == 0 ? 0 : std::min(31, 63 - __builtin_clzll(elapsed));
  g_sampler_counters.handler_ns_log2[bucket].fetch_add(1, std::memory_order_relaxed);
}

// The SIGPROF handler. Async-signal-safe: atomics, clock_gettime, _Unwind_Backtrace, no allocation.
inline void sampler_on_signal(int, siginfo_t* info, void* ucontext) {
  const int saved_errno = errno;
  g_sampler_in_flight.fetch_add(1, std::memory_order_seq_cst);
  // SI_TIMER: only our timers' signals are samples (a kill(SIGPROF) or tgkill is ignored).
  if (g_sampler_enabled.load(std::memory_order_seq_cst) && info != nullptr && info->si_code == SI_TIMER)
    sampler_take_sample(info, ucontext);
  g_sampler_in_flight.fetch_sub(1, std::memory_order_release);
  errno = saved_errno;
}

// The first _Unwind_Backtrace of a process binds the symbol lazily and initializes libgcc's state; do
// it outside any handler.
inline _Unwind_Reason_Code sampler_count_frame(_Unwind_Context*, void* arg) {
  ++*static_cast<int*>(arg);
  return _URC_NO_REASON;
}
inline void sampler_warm_up_unwinder() {
  int frames = 0;
  _Unwind_Backtrace(sampler_count_frame, &frames);
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

class ThreadTimers {
 public:
  void configure(int64_t period_ns, uint64_t seed) {
    period_ns_ = period_ns;
    random_ = seed | 1;
  }
  ~ThreadTimers() {
    disarm_all();
    if (task_dir_ >= 0) close(task_dir_);
  }

  // Arms a timer for every thread of the process not yet armed (except skip_tids), deletes the timers
  // of threads that have exited. Returns the number of threads newly armed.
  size_t rescan(const std::vector<pid_t>& skip_tids, std::string* error) {
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
    // Every tenth scan (about once a second) also checks the timers of listed threads: a tid that is
    // listed but whose timer reads as disarmed belongs to a new thread that reused the number.
    const bool check_reuse = scan_generation_ % 10 == 0;
    size_t armed_now = 0;
    for (const pid_t tid : tids_) {
      if (std::find(skip_tids.begin(), skip_tids.end(), tid) != skip_tids.end()) continue;
      auto it = timers_.find(tid);
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
      }
      timer_t timer;
      if (arm(tid, &timer)) {
        timers_[tid] = Entry{timer, scan_generation_};
        armed_now++;
      }
    }
    for (auto it = timers_.begin(); it != timers_.end();) {
      if (it->second.generation != scan_generation_) {
        delete_timer(it->second.timer);
        it = timers_.erase(it);
      } else {
        ++it;
      }
    }
    g_sampler_counters.timers_armed.store(timers_.size(), std::memory_order_relaxed);
    return armed_now;
  }

  void disarm_all() {
    for (auto& entry : timers_) delete_timer(entry.second.timer);
    timers_.clear();
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
  int64_t period_ns_ = 10000000;
  uint64_t random_ = 1;
  uint64_t scan_generation_ = 0;
  std::string last_error_;
  int task_dir_ = -1;
  std::vector<char> listing_;
  std::vector<pid_t> tids_;

  bool arm(pid_t tid, timer_t* out) {
    sigevent event;
    std::memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = kSamplerSignal;
    event._sigev_un._tid = tid;
    timer_t timer;
    if (timer_create(sampler_thread_cpu_clock(tid), &event, &timer) != 0) {
      // ESRCH/EINVAL: the thread exited between the listing and now. Anything else is worth a log.
      if (errno != ESRCH && errno != EINVAL)
        last_error_ = "timer_create for thread " + std::to_string(tid) + ": " + std::strerror(errno);
      return false;
    }
    // The first expiry is random within one period (as Go does), so threads that live shorter than a
    // period are still sampled in proportion to their CPU time instead of never.
    random_ ^= random_ << 13;
    random_ ^= random_ >> 7;
    random_ ^= random_ << 17;
    const int64_t first = 1 + static_cast<int64_t>(random_ % static_cast<uint64_t>(period_ns_));
    itimerspec spec;
    spec.it_interval.tv_sec = period_ns_ / 1000000000;
    spec.it_interval.tv_nsec = period_ns_ % 1000000000;
    spec.it_value.tv_sec = first / 1000000000;
    spec.it_value.tv_nsec = first % 1000000000;
    if (timer_settime(timer, 0, &spec, nullptr) != 0) {
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

// [SECTION] Implementation: symbolizer (Linux) ====================================================
//
// Runs on the agent thread only, never in the handler. Modules come from dl_iterate_phdr (load bias
// and segments, so PIE/ASLR and dlopen are handled); each module's function symbols come from its ELF
// file: .symtab (static functions included, which dladdr cannot see) and .dynsym, or from the
// separate debug file found by build id (/usr/lib/debug/.build-id/xx/yyyy.debug) when the library is
// stripped. The vDSO is read from memory. Names are demangled with abi::__cxa_demangle and cached per
// pc. A pc outside every known function shows as `module+0xoffset` (file address, what addr2line takes).

namespace pyroscope {
namespace detail {

// Function symbols of one ELF image: sorted start addresses (file virtual addresses) and names.
class ElfFunctions {
 public:
  ElfFunctions() = default;
  ElfFunctions(const ElfFunctions&) = delete;
  ElfFunctions& operator=(const ElfFunctions&) = delete;
  ~ElfFunctions() { unmap(); }

  // Maps path read-only and indexes its function symbols. False if it is not a readable 64-bit ELF.
  bool load_file(const std::string& path) {
    unmap();
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
      close(fd);
      return false;
    }
    void* mapping = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (mapping == MAP_FAILED) return false;
    data_ = static_cast<const uint8_t*>(mapping);
    size_ = static_cast<size_t>(st.st_size);
    owns_mapping_ = true;
    const bool ok = index();
    // The index is built; drop the pages we touched from our resident set (they are clean file
    // pages and come back on demand when a name is read).
    madvise(const_cast<uint8_t*>(data_), size_, MADV_DONTNEED);
    return ok;
  }

  // Indexes an ELF image already in memory (the vDSO).
  bool load_memory(const uint8_t* image) {
    unmap();
    const Elf64_Ehdr* eh = reinterpret_cast<const Elf64_Ehdr*>(image);
    if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64) return false;
    if (eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shnum == 0) return false;
    // The image's extent is not recorded anywhere; its section table and sections bound it.
    size_t extent = eh->e_shoff + size_t(eh->e_shnum) * sizeof(Elf64_Shdr);
    const Elf64_Shdr* sh = reinterpret_cast<const Elf64_Shdr*>(image + eh->e_shoff);
    for (unsigned i = 0; i < eh->e_shnum; i++) {
      if (sh[i].sh_type != SHT_NOBITS) extent = std::max<size_t>(extent, sh[i].sh_offset + sh[i].sh_size);
    }
    data_ = image;
    size_ = extent;
    owns_mapping_ = false;
    return index();
  }

  bool has_symtab() const { return has_symtab_; }
  size_t size() const { return functions_.size(); }
  const std::string& build_id() const { return build_id_; }

  // Name of the function containing the file address, or nullptr.
  const char* find(uint64_t address) const {
    auto it = std::upper_bound(functions_.begin(), functions_.end(), address,
                               [](uint64_t a, const Function& f) { return a < f.address; });
    if (it == functions_.begin()) return nullptr;
    --it;
    // A symbol without a size (hand-written assembly) covers up to the next symbol.
    const uint64_t end = it->size != 0 ? it->address + it->size
                                       : (it + 1 != functions_.end() ? (it + 1)->address : it->address + 1);
    if (address >= end) return nullptr;
    return reinterpret_cast<const char*>(data_ + it->name_offset);
  }

 private:
  struct Function {
    uint64_t address;
    uint32_t size;
    uint32_t name_offset;  // into data_
    uint8_t rank;          // among aliases at one address, the lowest rank names the function
  };
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owns_mapping_ = false;
  bool has_symtab_ = false;
  std::string build_id_;
  std::vector<Function> functions_;

  void unmap() {
    if (owns_mapping_ && data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
    owns_mapping_ = false;
    has_symtab_ = false;
    functions_.clear();
    build_id_.clear();
  }

  bool in_bounds(uint64_t offset, uint64_t length) const { return offset <= size_ && length <= size_ - offset; }

  // Every offset and length is checked: a damaged or truncated file gives no symbols, never a crash.
  bool index() {
    if (size_ < sizeof(Elf64_Ehdr)) return false;
    const Elf64_Ehdr* eh = reinterpret_cast<const Elf64_Ehdr*>(data_);
    if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64) return false;
    if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(Elf64_Shdr)) return false;
    if (!in_bounds(eh->e_shoff, sizeof(Elf64_Shdr))) return false;
    const Elf64_Shdr* sections = reinterpret_cast<const Elf64_Shdr*>(data_ + eh->e_shoff);
    uint64_t count = eh->e_shnum != 0 ? eh->e_shnum : sections[0].sh_size;  // extended numbering
    if (!in_bounds(eh->e_shoff, count * sizeof(Elf64_Shdr))) return false;
    for (uint64_t i = 0; i < count; i++) {
      const Elf64_Shdr& section = sections[i];
      if (section.sh_type == SHT_NOTE && build_id_.empty()) read_build_id(section);
      if (section.sh_type != SHT_SYMTAB && section.sh_type != SHT_DYNSYM) continue;
      if (section.sh_link >= count || section.sh_entsize != sizeof(Elf64_Sym)) continue;
      const Elf64_Shdr& strings = sections[section.sh_link];
      if (strings.sh_type != SHT_STRTAB || !in_bounds(strings.sh_offset, strings.sh_size)) continue;
      if (!in_bounds(section.sh_offset, section.sh_size)) continue;
      if (strings.sh_offset + strings.sh_size > UINT32_MAX) continue;  // name offsets are 32-bit
      if (section.sh_type == SHT_SYMTAB) has_symtab_ = true;
      const Elf64_Sym* symbols = reinterpret_cast<const Elf64_Sym*>(data_ + section.sh_offset);
      const uint64_t n = section.sh_size / sizeof(Elf64_Sym);
      const char* string_base = reinterpret_cast<const char*>(data_ + strings.sh_offset);
      for (uint64_t k = 0; k < n; k++) {
        const Elf64_Sym& sym = symbols[k];
        const unsigned type = ELF64_ST_TYPE(sym.st_info);
        if (type != STT_FUNC && type != STT_GNU_IFUNC) continue;
        if (sym.st_shndx == SHN_UNDEF || sym.st_value == 0 || sym.st_name == 0) continue;
        if (sym.st_name >= strings.sh_size) continue;
        // The name must end inside the string table.
        if (std::memchr(string_base + sym.st_name, 0, strings.sh_size - sym.st_name) == nullptr) continue;
        if (string_base[sym.st_name] == '\0') continue;
        // Among aliases, the name a programmer wrote wins: getpid over __getpid (even though getpid
        // is the weak alias), then global over weak over local.
        const unsigned bind = ELF64_ST_BIND(sym.st_info);
        uint8_t rank = bind == STB_GLOBAL ? 0 : bind == STB_WEAK ? 1 : 2;
        if (string_base[sym.st_name] == '_' && string_base[sym.st_name + 1] != 'Z') rank += 4;
        functions_.push_back(Function{sym.st_value,
                                      static_cast<uint32_t>(std::min<uint64_t>(sym.st_size, UINT32_MAX)),
                                      static_cast<uint32_t>(strings.sh_offset + sym.st_name), rank});
      }
    }
    std::sort(functions_.begin(), functions_.end(), [](const Function& a, const Function& b) {
      if (a.address != b.address) return a.address < b.address;
      if (a.rank != b.rank) return a.rank < b.rank;
      return a.size > b.size;
    });
    // One entry per address (the best-ranked alias); keep the largest size seen among aliases.
    size_t out = 0;
    for (size_t i = 0; i < functions_.size(); i++) {
      if (out > 0 && functions_[out - 1].address == functions_[i].address) {
        functions_[out - 1].size = std::max(functions_[out - 1].size, functions_[i].size);
        continue;
      }
      functions_[out++] = functions_[i];
    }
    functions_.resize(out);
    functions_.shrink_to_fit();
    return true;
  }

  void read_build_id(const Elf64_Shdr& section) {
    if (!in_bounds(section.sh_offset, section.sh_size)) return;
    const uint8_t* p = data_ + section.sh_offset;
    const uint8_t* end = p + section.sh_size;
    while (end - p >= static_cast<ptrdiff_t>(sizeof(Elf64_Nhdr))) {
      Elf64_Nhdr note;
      std::memcpy(&note, p, sizeof note);
      const uint64_t name_size = (uint64_t(note.n_namesz) + 3) & ~uint64_t(3);
      const uint64_t desc_size = (uint64_t(note.n_descsz) + 3) & ~uint64_t(3);
      p += sizeof note;
      if (uint64_t(end - p) < name_size + desc_size) return;
      if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 && std::memcmp(p, "GNU", 4) == 0) {
        static const char hex[] = "0123456789abcdef";
        for (uint32_t i = 0; i < note.n_descsz; i++) {
          build_id_ += hex[p[name_size + i] >> 4];
          build_id_ += hex[p[name_size + i] & 15];
        }
        return;
      }
      p += name_size + desc_size;
    }
  }
};

inline std::string sampler_demangle(const char* symbol) {
  // .symtab of debug files names versioned symbols "memcpy@@GLIBC_2.14"; the version is noise here.
  std::string name = symbol;
  const size_t at = name.find('@');
  if (at != std::string::npos && at > 0) name.resize(at);
  if (name.size() > 2 && name[0] == '_' && name[1] == 'Z') {
    int status = 0;
    char* demangled = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
    if (demangled != nullptr) {
      if (status == 0) name = demangled;
      std::free(demangled);
    }
  }
  return name;
}

// dl_iterate_phdr's counters of objects loaded and unloaded so far (they change on dlopen/dlclose).
inline std::pair<unsigned long long, unsigned long long> sampler_loader_counters() {
  std::pair<unsigned long long, unsigned long long> counters{0, 0};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* arg) {
        auto* c = static_cast<std::pair<unsigned long long, unsigned long long>*>(arg);
        c->first = info->dlpi_adds;
        c->second = info->dlpi_subs;
        return 1;  // the same in every entry: stop after the first
      },
      &counters);
  return counters;
}

class Symbolizer {
 public:
  // The frame name for pc: "demangled::function(args)" or "module+0xoffset".
  std::string name_of(uintptr_t pc) {
    const Module* module = find_module(pc);
    if (module == nullptr) {
      refresh_if_changed();
      module = find_module(pc);
    }
    if (module == nullptr) {
      char buffer[64];
      std::snprintf(buffer, sizeof buffer, "[unknown]+0x%llx", static_cast<unsigned long long>(pc));
      return buffer;
    }
    const uint64_t file_address = pc - module->bias;
    ElfFunctions& functions = load(*module_state_[module->index]);
    if (const char* name = functions.find(file_address)) return sampler_demangle(name);
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "+0x%llx", static_cast<unsigned long long>(file_address));
    return module_state_[module->index]->short_name + buffer;
  }

 private:
  struct ModuleState {
    std::string path;        // file to read ("" for the vDSO, read from memory)
    std::string short_name;  // basename, for unresolved frames
    const uint8_t* memory_image = nullptr;
    std::unique_ptr<ElfFunctions> functions;  // loaded on first lookup
  };
  struct Module {
    uintptr_t start, end;
    uintptr_t bias;
    size_t index;  // into module_state_
  };
  std::vector<Module> ranges_;  // sorted by start
  std::vector<std::unique_ptr<ModuleState>> module_state_;
  unsigned long long adds_ = ~0ull, subs_ = ~0ull;

  const Module* find_module(uintptr_t pc) const {
    auto it = std::upper_bound(ranges_.begin(), ranges_.end(), pc,
                               [](uintptr_t a, const Module& m) { return a < m.start; });
    if (it == ranges_.begin()) return nullptr;
    --it;
    return pc < it->end ? &*it : nullptr;
  }

  static std::string basename_of(const std::string& path) {
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
  }

  ElfFunctions& load(ModuleState& state) {
    if (state.functions) return *state.functions;
    state.functions.reset(new ElfFunctions);
    if (state.memory_image != nullptr) {
      state.functions->load_memory(state.memory_image);
      return *state.functions;
    }
    if (!state.functions->load_file(state.path)) return *state.functions;
    if (!state.functions->has_symtab() && !state.functions->build_id().empty()) {
      // Stripped: the debug package keeps .symtab in a separate file named by build id.
      const std::string& id = state.functions->build_id();
      const std::string debug_path = "/usr/lib/debug/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug";
      std::unique_ptr<ElfFunctions> debug(new ElfFunctions);
      if (access(debug_path.c_str(), R_OK) == 0 && debug->load_file(debug_path) && debug->has_symtab())
        state.functions = std::move(debug);
    }
    return *state.functions;
  }

  void refresh_if_changed() {
    const auto counters = sampler_loader_counters();
    if (counters.first == adds_ && counters.second == subs_) return;
    adds_ = counters.first;
    subs_ = counters.second;
    ranges_.clear();
    module_state_.clear();  // an unloaded library's address range may now belong to another one
    dl_iterate_phdr(add_module, this);
    std::sort(ranges_.begin(), ranges_.end(), [](const Module& a, const Module& b) { return a.start < b.start; });
  }

  static int add_module(dl_phdr_info* info, size_t, void* arg) {
    Symbolizer* self = static_cast<Symbolizer*>(arg);
    std::unique_ptr<ModuleState> state(new ModuleState);
    const char* name = info->dlpi_name != nullptr ? info->dlpi_name : "";
    const uintptr_t vdso = static_cast<uintptr_t>(getauxval(AT_SYSINFO_EHDR));
    bool is_vdso = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
      const ElfW(Phdr)& ph = info->dlpi_phdr[i];
      if (ph.p_type == PT_LOAD && ph.p_offset == 0 && vdso != 0 && info->dlpi_addr + ph.p_vaddr == vdso)
        is_vdso = true;
    }
    if (is_vdso) {
      state->memory_image = reinterpret_cast<const uint8_t*>(vdso);
      state->short_name = "[vdso]";
    } else if (name[0] == '\0') {
      // The main program: /proc/self/exe still opens it if the file was replaced or deleted.
      state->path = "/proc/self/exe";
      char link[4096];
      const ssize_t n = readlink("/proc/self/exe", link, sizeof link - 1);
      state->short_name = n > 0 ? basename_of(std::string(link, static_cast<size_t>(n))) : "[exe]";
    } else {
      state->path = name;
      state->short_name = basename_of(name);
    }
    const size_t index = self->module_state_.size();
    for (int i = 0; i < info->dlpi_phnum; i++) {
      const ElfW(Phdr)& ph = info->dlpi_phdr[i];
      if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
      const uintptr_t start = info->dlpi_addr + ph.p_vaddr;
      self->ranges_.push_back(Module{start, start + ph.p_memsz, info->dlpi_addr, index});
    }
    self->module_state_.push_back(std::move(state));
    return 0;
  }
};

}  // namespace detail
}  // namespace pyroscope

// [SECTION] Implementation: push to a Pyroscope server (Linux) ====================================
//
// A minimal HTTP/1.1 client over a non-blocking socket: every wait (connect, send, receive) is a
// poll() with a deadline, writes use MSG_NOSIGNAL, and each request is `Connection: close`. Batches
// wait in a bounded queue on their own thread ("pyroscope-push"); failures back off exponentially;
// a full queue drops its oldest batch. A down, slow or misbehaving server therefore costs the
// application nothing but that thread's memory (bounded) and an occasional log line.

namespace pyroscope {
namespace detail {

struct HttpEndpoint {
  std::string host;         // name or address, without brackets
  std::string port = "80";
  std::string base_path;    // "" or "/prefix" (no trailing slash)
  std::string host_header;  // as sent in Host:
};

inline Status parse_http_endpoint(std::string_view address, HttpEndpoint* out) {
  const std::string original(address);
  constexpr std::string_view kHttp = "http://";
  if (address.substr(0, 8) == "https://")
    return Status(StatusCode::unsupported, "server_address '" + original +
                                               "': https is not supported by the built-in client; use http:// "
                                               "(e.g. a local Grafana Alloy or Pyroscope instance)");
  if (address.substr(0, kHttp.size()) != kHttp)
    return Status(StatusCode::invalid_argument,
                  "server_address '" + original + "' must start with http:// (e.g. http://localhost:4040)");
  address.remove_prefix(kHttp.size());
  const size_t slash = address.find('/');
  std::string_view authority = address.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : address.substr(slash);
  if (authority.find('@') != std::string_view::npos)
    return Status(StatusCode::invalid_argument, "server_address '" + original + "': credentials in the URL are not supported");
  if (authority.empty()) return Status(StatusCode::invalid_argument, "server_address '" + original + "' has no host");
  HttpEndpoint endpoint;
  if (authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos)
      return Status(StatusCode::invalid_argument, "server_address '" + original + "': unterminated [IPv6 address]");
    endpoint.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return Status(StatusCode::invalid_argument, "server_address '" + original + "': junk after ]");
      endpoint.port = std::string(rest.substr(1));
    }
  } else {
    const size_t colon = authority.rfind(':');
    endpoint.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) endpoint.port = std::string(authority.substr(colon + 1));
  }
  if (endpoint.host.empty()) return Status(StatusCode::invalid_argument, "server_address '" + original + "' has no host");
  if (endpoint.port.empty() || endpoint.port.size() > 5 ||
      endpoint.port.find_first_not_of("0123456789") != std::string::npos || std::atoi(endpoint.port.c_str()) == 0 ||
      std::atoi(endpoint.port.c_str()) > 65535)
    return Status(StatusCode::invalid_argument,
                  "server_address '" + original + "': port '" + endpoint.port + "' is not a number in 1..65535");
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.find_first_of("?# ") != std::string_view::npos)
    return Status(StatusCode::invalid_argument, "server_address '" + original + "': the path may not contain ?, # or spaces");
  endpoint.base_path = std::string(path);
  endpoint.host_header = std::string(authority);
  *out = std::move(endpoint);
  return Status();
}

inline std::string url_encode(std::string_view text) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '-' || u == '.' ||
        u == '_' || u == '~') {
      out += c;
    } else {
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

// Pyroscope's series name: app.cpu{k=v,...} with the tags sorted (SeriesKey keeps them sorted).
inline std::string ingest_series_name(const SeriesKey& series) {
  std::string name = series.app + ".cpu{";
  for (size_t i = 0; i < series.tags.size(); i++) {
    if (i > 0) name += ',';
    name += series.tags[i].key + "=" + series.tags[i].value;
  }
  return name + "}";
}

inline std::string ingest_target(const HttpEndpoint& endpoint, const SeriesKey& series, int64_t from, int64_t until,
                                 int sample_rate_hz) {
  return endpoint.base_path + "/ingest?name=" + url_encode(ingest_series_name(series)) +
         "&from=" + std::to_string(from) + "&until=" + std::to_string(until) +
         "&format=folded&sampleRate=" + std::to_string(sample_rate_hz) +
         "&spyName=pyroscope-cpp&units=samples&aggregationType=sum";
}

struct HttpResponse {
  int status = 0;     // 0: no response (the error says why)
  std::string error;  // connect/send/receive failure, or the status line of a non-2xx answer
};

// The time limits of one request: its own deadline, and one that stop() may pull in while the request
// is under way (monotonic ns).
struct HttpDeadline {
  int64_t own_ns;
  const std::atomic<int64_t>* abort_ns;
  int64_t now_limit() const { return std::min(own_ns, abort_ns->load(std::memory_order_acquire)); }
};

// Waits for events on fd until the deadline. False on timeout or error. Polls in slices of at most
// 100 ms so that a deadline pulled in by stop() takes effect quickly.
inline bool http_wait(int fd, short events, const HttpDeadline& deadline, std::string* error) {
  for (;;) {
    const int64_t left_ms = (deadline.now_limit() - sampler_monotonic_ns()) / 1000000;
    if (left_ms <= 0) {
      *error = "timed out";
      return false;
    }
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 100)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) {
      *error = std::string("poll: ") + std::strerror(errno);
      return false;
    }
  }
}

inline int http_connect(const HttpEndpoint& endpoint, const HttpDeadline& deadline, std::string* error) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* addresses = nullptr;
  const int gai = getaddrinfo(endpoint.host.c_str(), endpoint.port.c_str(), &hints, &addresses);
  if (gai != 0) {
    *error = "cannot resolve '" + endpoint.host + "': " + gai_strerror(gai);
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      *error = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        *error = "connect to " + endpoint.host_header + ": " + std::strerror(errno);
        close(fd);
        fd = -1;
        continue;
      }
      int so_error = 0;
      socklen_t length = sizeof so_error;
      if (!http_wait(fd, POLLOUT, deadline, error) ||
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length) != 0 || so_error != 0) {
        if (so_error != 0) *error = "connect to " + endpoint.host_header + ": " + std::strerror(so_error);
        else if (error->find("connect") == std::string::npos) *error = "connect to " + endpoint.host_header + ": " + *error;
        close(fd);
        fd = -1;
        continue;
      }
    }
  }
  freeaddrinfo(addresses);
  if (fd >= 0) {
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

inline HttpResponse http_post(const HttpEndpoint& endpoint, const std::string& target, const std::string& body,
                              const HttpDeadline& deadline) {
  HttpResponse response;
  const int fd = http_connect(endpoint, deadline, &response.error);
  if (fd < 0) return response;
  std::string request = "POST " + target + " HTTP/1.1\r\nHost: " + endpoint.host_header +
                        "\r\nUser-Agent: pyroscope-cpp/" PYROSCOPE_VERSION_STRING
                        "\r\nContent-Type: text/plain\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  request += body;
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!http_wait(fd, POLLOUT, deadline, &response.error)) {
        response.error = "sending: " + response.error;
        close(fd);
        return response;
      }
    } else {
      response.error = std::string("sending: ") + std::strerror(errno);
      close(fd);
      return response;
    }
  }
  // Only the status line matters; read until it is complete (or the headers end).
  std::string head;
  char buffer[1024];
  while (head.find("\r\n") == std::string::npos && head.size() < 8192) {
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      head.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (!http_wait(fd, POLLIN, deadline, &response.error)) {
        response.error = "waiting for the response: " + response.error;
        close(fd);
        return response;
      }
    } else {
      response.error = std::string("receiving: ") + std::strerror(errno);
      close(fd);
      return response;
    }
  }
  close(fd);
  const std::string status_line = head.substr(0, head.find("\r\n"));
  if (status_line.size() < 12 || status_line.compare(0, 7, "HTTP/1.") != 0 ||
      status_line.find_first_not_of("0123456789", 9) < 12) {
    response.error = "malformed response: '" + status_line.substr(0, 80) + "'";
    return response;
  }
  response.status = std::atoi(status_line.c_str() + 9);
  if (response.status < 200 || response.status >= 300) response.error = status_line.substr(0, 200);
  return response;
}

class PushClient {
 public:
  static constexpr size_t kMaxQueuedBatches = 256;
  static constexpr size_t kMaxQueuedBytes = 16u << 20;
  static constexpr int64_t kRequestTimeoutNs = 10000000000;   // one request, connect to status line
  static constexpr int64_t kFirstBackoffNs = 1000000000;
  static constexpr int64_t kMaxBackoffNs = 60000000000;

  using LogFn = std::function<void(LogLevel, const std::string&)>;

  PushClient(HttpEndpoint endpoint, LogFn log) : endpoint_(std::move(endpoint)), log_(std::move(log)) {}

  // Thread body; returns when finish() was called and the queue is empty or its deadline passed.
  void run() {
    tid_.store(sampler_gettid(), std::memory_order_release);
    int failures = 0;
    int64_t next_attempt = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (finishing_ && (queue_.empty() || sampler_monotonic_ns() >= finish_deadline_)) break;
      if (queue_.empty()) {
        wake_.wait(lock);
        continue;
      }
      const int64_t now = sampler_monotonic_ns();
      if (!finishing_ && now < next_attempt) {
        wake_.wait_for(lock, std::chrono::nanoseconds(next_attempt - now));
        continue;
      }
      Batch batch = queue_.front();
      lock.unlock();
      const HttpDeadline deadline{sampler_monotonic_ns() + kRequestTimeoutNs, &abort_deadline_};
      const HttpResponse response = http_post(endpoint_, batch.target, batch.body, deadline);
      lock.lock();
      const bool retryable = response.status == 0 || response.status == 408 || response.status == 429 ||
                             response.status >= 500;
      if (response.status >= 200 && response.status < 300) {
        g_sampler_counters.push_sent.fetch_add(1, std::memory_order_relaxed);
        pop_front_locked();
        failures = 0;
        next_attempt = 0;
        continue;
      }
      g_sampler_counters.push_failed.fetch_add(1, std::memory_order_relaxed);
      if (!retryable) {
        g_sampler_counters.push_dropped.fetch_add(1, std::memory_order_relaxed);
        pop_front_locked();
        log_locked(lock, LogLevel::error, "push to " + endpoint_.host_header + " rejected a batch (" + response.error +
                                              "); batch dropped");
        continue;
      }
      if (finishing_) break;  // stopping and the server is failing: do not spin until the deadline
      failures++;
      // 1 s, 2 s, 4 s ... 60 s, with +-25% jitter so a fleet does not retry in lockstep.
      int64_t backoff = kFirstBackoffNs << std::min(failures - 1, 6);
      backoff = std::min(backoff, kMaxBackoffNs);
      jitter_ = jitter_ * 6364136223846793005ull + 1442695040888963407ull;
      backoff = backoff * 3 / 4 + static_cast<int64_t>((jitter_ >> 33) % static_cast<uint64_t>(backoff / 2 + 1));
      next_attempt = sampler_monotonic_ns() + backoff;
      if (failures == 1 || failures % 10 == 0)
        log_locked(lock, LogLevel::warning, "push to " + endpoint_.host_header + " failed (" + response.error +
                                                "); retrying in " + std::to_string(backoff / 1000000) + " ms, " +
                                                std::to_string(queue_.size()) + " batch(es) queued");
    }
    if (!queue_.empty()) {
      g_sampler_counters.push_dropped.fetch_add(queue_.size(), std::memory_order_relaxed);
      log_locked(lock, LogLevel::warning, std::to_string(queue_.size()) + " batch(es) not delivered to " +
                                              endpoint_.host_header + " before stop");
      queue_.clear();
    }
    done_ = true;
    done_signal_.notify_all();
  }

  void enqueue(std::string target, std::string body) {
    std::unique_lock<std::mutex> lock(mutex_);
    queued_bytes_ += target.size() + body.size();
    queue_.push_back(Batch{std::move(target), std::move(body)});
    size_t dropped = 0;
    while (queue_.size() > 1 && (queue_.size() > kMaxQueuedBatches || queued_bytes_ > kMaxQueuedBytes)) {
      pop_front_locked();
      dropped++;
    }
    if (dropped > 0) {
      g_sampler_counters.push_dropped.fetch_add(dropped, std::memory_order_relaxed);
      log_locked(lock, LogLevel::warning, "push queue full (server " + endpoint_.host_header +
                                              " unreachable?): dropped the oldest " + std::to_string(dropped) +
                                              " batch(es)");
    }
    wake_.notify_all();
  }

  // Asks run() to deliver what is queued until deadline (monotonic ns) and return. Returns true if it
  // did within the deadline (plus a little), false if the thread is still busy (e.g. in a DNS lookup
  // without a timeout): the caller then detaches it.
  bool finish(int64_t deadline_ns) {
    std::unique_lock<std::mutex> lock(mutex_);
    finishing_ = true;
    finish_deadline_ = deadline_ns;
    abort_deadline_.store(deadline_ns, std::memory_order_release);  // also ends a request under way
    wake_.notify_all();
    return done_signal_.wait_for(lock, std::chrono::nanoseconds(deadline_ns - sampler_monotonic_ns()) +
                                           std::chrono::milliseconds(500),
                                 [this] { return done_; });
  }

  pid_t tid() const { return tid_.load(std::memory_order_acquire); }

 private:
  struct Batch {
    std::string target;
    std::string body;
  };
  HttpEndpoint endpoint_;
  LogFn log_;
  std::mutex mutex_;
  std::condition_variable wake_, done_signal_;
  std::deque<Batch> queue_;
  size_t queued_bytes_ = 0;
  bool finishing_ = false;
  bool done_ = false;
  int64_t finish_deadline_ = 0;
  std::atomic<int64_t> abort_deadline_{INT64_MAX};
  uint64_t jitter_ = 0x9e3779b97f4a7c15ull;
  std::atomic<pid_t> tid_{0};

  void pop_front_locked() {
    queued_bytes_ -= queue_.front().target.size() + queue_.front().body.size();
    queue_.pop_front();
  }
  // The log callback runs without our lock held (it may be slow or log synchronously).
  void log_locked(std::unique_lock<std::mutex>& lock, LogLevel level, const std::string& message) {
    lock.unlock();
    if (log_) log_(level, message);
    lock.lock();
  }
};

}  // namespace detail
}  // namespace pyroscope

// [SECTION] Implementation: profiler API (Linux) ==================================================

namespace pyroscope {
namespace detail {

// The log callback and its lock, shared by the agent and the push thread (which may outlive the
// session by a few seconds if it is stuck in a DNS lookup).
struct SessionLog {
  std::function<void(LogLevel, const std::string&)> callback;
  std::mutex mutex;
  void operator()(LogLevel level, const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex);
    if (callback) {
      callback(level, message);
    } else if (level == LogLevel::warning || level == LogLevel::error) {
      std::fprintf(stderr, "pyroscope: %s: %s\n", level == LogLevel::error ? "error" : "warning", message.c_str());
    }
  }
};

// Counts drained samples by raw stack (tag set + pcs) during a block, then folds each distinct stack into
// its series' tree once, at flush time. A busy thread repeats a few stacks: per sample this is one hash
// of the slot's words; symbolization and tree insertion happen once per distinct stack and block.
class SampleAggregator {
 public:
  SampleAggregator(std::string app, Tags static_tags, std::shared_ptr<SessionLog> log)
      : app_(std::move(app)), static_tags_(std::move(static_tags)), log_(std::move(log)),
        symbols_(std::make_shared<SymbolTable>()) {}

  void add(const SamplerSlot& slot) {
    // Key: tag set, truncation flag and pcs, as raw bytes (the buffer keeps its capacity: no allocation
    // for a stack seen before).
    key_.clear();
    const uint32_t header[2] = {slot.tag_set, slot.truncated};
    key_.append(reinterpret_cast<const char*>(header), sizeof header);
    key_.append(reinterpret_cast<const char*>(slot.pcs), size_t(slot.depth) * sizeof(uintptr_t));
    auto it = stacks_.find(key_);
    if (it == stacks_.end()) {
      it = stacks_.emplace(key_, 0).first;
      // Resolve a new stack's frames now: reading a module's symbols is a one-time cost best paid when
      // the module first shows up, not in the middle of a flush.
      for (int i = 0; i < slot.depth; i++) symbol_for(slot.pcs[i]);
    }
    it->second += slot.weight;
  }

  // Folds the block's stacks into one tree per series and moves those trees out.
  void take(std::vector<std::pair<SeriesKey, Tree>>* out) {
    for (const auto& entry : stacks_) {
      const std::string& key = entry.first;
      uint32_t header[2];
      std::memcpy(header, key.data(), sizeof header);
      const size_t depth = (key.size() - sizeof header) / sizeof(uintptr_t);
      const uint32_t series = series_for(header[0]);
      std::unique_ptr<Tree>& tree = trees_[series];
      if (!tree) tree.reset(new Tree(symbols_));
      frames_.clear();
      if (header[1] != 0) frames_.push_back(symbols_->intern("[truncated]"));
      for (size_t i = depth; i-- > 0;) {  // stored leaf first; trees want the root first
        uintptr_t pc;
        std::memcpy(&pc, key.data() + sizeof header + i * sizeof(uintptr_t), sizeof pc);
        frames_.push_back(symbol_for(pc));
      }
      if (frames_.empty()) frames_.push_back(symbols_->intern("[no stack]"));
      tree->insert_ids(frames_.data(), frames_.size(), entry.second);
    }
    stacks_.clear();
    out->clear();
    for (size_t i = 0; i < trees_.size(); i++) {
      if (!trees_[i] || trees_[i]->total() == 0) continue;
      out->emplace_back(series_[i], std::move(*trees_[i]));
      trees_[i].reset();
    }
  }

 private:
  std::string app_;
  Tags static_tags_;
  std::shared_ptr<SessionLog> log_;
  std::shared_ptr<SymbolTable> symbols_;
  Symbolizer symbolizer_;
  std::unordered_map<std::string, uint64_t> stacks_;  // this block's samples by raw stack
  std::string key_;
  std::unordered_map<uintptr_t, uint32_t> pc_symbols_;
  std::unordered_map<uint32_t, uint32_t> tag_set_series_;
  std::vector<SeriesKey> series_;
  std::map<SeriesKey, uint32_t> series_index_;
  std::vector<std::unique_ptr<Tree>> trees_;  // per series, filled at flush
  std::vector<uint32_t> frames_;
  std::vector<std::string> rejected_tags_;  // logged once each

  uint32_t symbol_for(uintptr_t pc) {
    auto it = pc_symbols_.find(pc);
    if (it != pc_symbols_.end()) return it->second;
    const uint32_t id = symbols_->intern(symbolizer_.name_of(pc));
    pc_symbols_.emplace(pc, id);
    return id;
  }

  uint32_t series_for(uint32_t tag_set) {
    auto it = tag_set_series_.find(tag_set);
    if (it != tag_set_series_.end()) return it->second;
    // Static tags first, then the dynamic ones: SeriesKey keeps the last value of a key, so a scope's
    // tag overrides a static tag of the same key (as in the Pyroscope clients).
    Tags tags = static_tags_;
    for (const Tag& tag : tag_registry().tags_of(tag_set)) {
      std::string why;
      if (is_valid_tag(tag.key, tag.value, &why)) {
        tags.push_back(tag);
      } else if (std::find(rejected_tags_.begin(), rejected_tags_.end(), why) == rejected_tags_.end()) {
        rejected_tags_.push_back(why);
        (*log_)(LogLevel::warning, "dynamic tag left out: " + why);
      }
    }
    SeriesKey key(app_, std::move(tags));
    auto found = series_index_.find(key);
    uint32_t index;
    if (found != series_index_.end()) {
      index = found->second;
    } else {
      index = static_cast<uint32_t>(series_.size());
      series_index_.emplace(key, index);
      series_.push_back(std::move(key));
      trees_.emplace_back();
    }
    tag_set_series_.emplace(tag_set, index);
    return index;
  }
};

struct ProfilerSession {
  Config config;
  std::string output_path;
  int64_t resolution = kDefaultResolutionSeconds;
  int64_t period_ns = 10000000;
  std::shared_ptr<SessionLog> log = std::make_shared<SessionLog>();
  Writer writer;
  std::unique_ptr<SampleAggregator> aggregator;
  ThreadTimers timers;
  bool push_enabled = false;
  HttpEndpoint endpoint;
  std::shared_ptr<PushClient> push;
  std::thread push_thread;
  std::thread agent_thread;
  struct sigaction previous_action;

  std::mutex mutex;  // guards the fields below
  std::condition_variable wake;
  bool stop_requested = false;
  bool agent_ready = false;
  pid_t agent_tid = 0;
  Status agent_status;  // the first error the agent could not recover from, for stop()

  int64_t block_start = 0;
  unsigned long long loader_unloads = 0;
  uint64_t reported_drops = 0;
  uint64_t reported_tag_overflow = 0;
  std::string reported_timer_error;

  void drain() {
    SamplerRing* ring = g_sampler_ring.load(std::memory_order_acquire);
    ring->drain([this](const SamplerSlot& slot) {
      aggregator->add(slot);
      g_sampler_counters.drained.fetch_add(1, std::memory_order_relaxed);
      g_sampler_counters.weight.fetch_add(slot.weight, std::memory_order_relaxed);
    });
  }

  void flush(int64_t block, int64_t until) {
    std::vector<std::pair<SeriesKey, Tree>> trees;
    aggregator->take(&trees);
    for (auto& entry : trees) {
      const Status status = writer.append(entry.first, block, entry.second);
      if (status.ok()) {
        g_sampler_counters.blocks_written.fetch_add(1, std::memory_order_relaxed);
      } else {
        (*log)(LogLevel::error, "writing block " + std::to_string(block) + " of " + entry.first.to_string() +
                                    " to '" + output_path + "': " + status.to_string());
        std::lock_guard<std::mutex> lock(mutex);
        if (agent_status.ok()) agent_status = status;
      }
      if (push) {
        push->enqueue(ingest_target(endpoint, entry.first, block, until, config.sample_rate_hz),
                      entry.second.to_folded());
      }
    }
  }

  void report_problems() {
    const uint64_t drops = g_sampler_counters.dropped_full.load(std::memory_order_relaxed);
    if (drops != reported_drops) {
      (*log)(LogLevel::warning, std::to_string(drops - reported_drops) +
                                    " sample(s) dropped: the sample ring was full (too many busy threads for " +
                                    std::to_string(config.sample_rate_hz) + " Hz)");
      reported_drops = drops;
    }
    const uint64_t overflow = tag_registry().overflowed();
    if (overflow != reported_tag_overflow) {
      (*log)(LogLevel::warning, "more than " + std::to_string(TagSetRegistry::kMaxTagSets) +
                                    " distinct tag sets: new tag values are ignored (are tag values unbounded, "
                                    "like request ids?)");
      reported_tag_overflow = overflow;
    }
    if (timers.last_error() != reported_timer_error) {
      reported_timer_error = timers.last_error();
      (*log)(LogLevel::warning, reported_timer_error);
    }
  }

  std::vector<pid_t> agent_tids() const {
    std::vector<pid_t> tids{agent_tid};
    if (push) tids.push_back(push->tid());
    return tids;
  }

  void run_agent() {
    pthread_setname_np(pthread_self(), "pyroscope-agent");
    {
      std::lock_guard<std::mutex> lock(mutex);
      agent_tid = sampler_gettid();
    }
    std::string error;
    timers.rescan(agent_tids(), &error);
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (timers.size() == 0) {
        agent_status = Status(StatusCode::unsupported,
                              "could not arm a CPU-time timer for any thread: " +
                                  (error.empty() ? timers.last_error() : error));
      }
      agent_ready = true;
    }
    wake.notify_all();
    if (timers.size() == 0) return;
    (*log)(LogLevel::info, "sampling " + std::to_string(timers.size()) + " thread(s) at " +
                               std::to_string(config.sample_rate_hz) + " Hz of CPU time, writing '" + output_path + "'");

    auto next_wake = std::chrono::steady_clock::now();
    for (;;) {
      next_wake += std::chrono::milliseconds(kAgentWakeMs);
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait_until(lock, next_wake, [this] { return stop_requested; });
        if (stop_requested) break;
      }
      const auto now_steady = std::chrono::steady_clock::now();
      if (now_steady > next_wake + std::chrono::seconds(1)) next_wake = now_steady;  // suspended: no catch-up
      drain();
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
      unwind_tables().serve_requests();
      const unsigned long long unloaded = sampler_loader_counters().second;
      if (unloaded != loader_unloads) {
        loader_unloads = unloaded;
        unwind_tables().forget_unloaded();
      }
#endif
      error.clear();
      timers.rescan(agent_tids(), &error);
      if (!error.empty() && error != reported_timer_error) {
        reported_timer_error = error;
        (*log)(LogLevel::warning, error);
      }
      const int64_t now = sampler_realtime_s();
      if (now >= block_start + resolution) {
        flush(block_start, block_start + resolution);
        // Block starts only move forward, even if the wall clock is set back.
        block_start = std::max(now - now % resolution, block_start + resolution);
      }
      report_problems();
    }

    // Stopping: no new samples, wait for handlers still running, then fold and write the rest.
    g_sampler_enabled.store(false, std::memory_order_seq_cst);
    timers.disarm_all();
    while (g_sampler_in_flight.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
    drain();
    const int64_t now = sampler_realtime_s();
    flush(block_start, std::min(block_start + resolution, std::max(block_start + 1, now + 1)));
    report_problems();
    const Status closed = writer.close();
    if (!closed.ok()) {
      (*log)(LogLevel::error, "closing '" + output_path + "': " + closed.to_string());
      std::lock_guard<std::mutex> lock(mutex);
      if (agent_status.ok()) agent_status = closed;
    }
    timespec cpu;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    g_sampler_counters.agent_cpu_ns.fetch_add(uint64_t(cpu.tv_sec) * 1000000000u + uint64_t(cpu.tv_nsec),
                                              std::memory_order_relaxed);
  }
};

struct ProfilerGlobal {
  std::mutex control;  // serializes start/stop (and fork)
  ProfilerSession* session = nullptr;
  bool hooks_installed = false;
};

inline ProfilerGlobal& profiler_global() {
  static ProfilerGlobal* global = new ProfilerGlobal;  // never destroyed: used by the atexit hook
  return *global;
}

inline bool sampler_handler_is_ours(const struct sigaction& action) {
  return (action.sa_flags & SA_SIGINFO) != 0 && action.sa_sigaction == sampler_on_signal;
}

// Puts the disposition back. Passing through SIG_IGN discards SIGPROFs still pending on any thread
// (the kernel flushes them when a signal becomes ignored); our timers are deleted by then, so no new
// one is generated and restoring SIG_DFL cannot kill the process with a late signal.
inline void sampler_restore_disposition(const struct sigaction& previous) {
  struct sigaction ignore;
  std::memset(&ignore, 0, sizeof ignore);
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(kSamplerSignal, &ignore, nullptr);
  if (!sampler_handler_is_ours(previous)) sigaction(kSamplerSignal, &previous, nullptr);
}

inline void sampler_at_exit() {
  bool running;
  {
    std::lock_guard<std::mutex> lock(profiler_global().control);
    running = profiler_global().session != nullptr;
  }
  if (running) stop();  // writes the partial block, so a program that never calls stop() loses nothing
}

inline void sampler_before_fork() {
  profiler_global().control.lock();
  tag_registry().mutex().lock();
}
inline void sampler_after_fork_in_parent() {
  tag_registry().mutex().unlock();
  profiler_global().control.unlock();
}
// The child has one thread, no timers (POSIX timers are not inherited) and none of the agent's
// threads. Its copy of the session is abandoned (leaked: destroying it would join threads that do not
// exist and close the parent's file); the child is not profiled unless it calls start() again.
inline void sampler_after_fork_in_child() {
  tag_registry().mutex().unlock();
  ProfilerGlobal& global = profiler_global();
  if (global.session != nullptr) {
    g_sampler_enabled.store(false, std::memory_order_seq_cst);
    sampler_restore_disposition(global.session->previous_action);
    global.session = nullptr;
  }
  g_sampler_in_flight.store(0, std::memory_order_seq_cst);
  global.control.unlock();
}

inline Status validate_config(const Config& config) {
  std::string why;
  if (!is_valid_app_name(config.application_name, &why))
    return Status(StatusCode::invalid_argument, "Config.application_name '" + config.application_name + "' " + why);
  for (const Tag& tag : config.tags) {
    if (!is_valid_tag(tag.key, tag.value, &why))
      return Status(StatusCode::invalid_argument, "Config.tags: " + why);
  }
  if (config.sample_rate_hz < 1 || config.sample_rate_hz > 1000)
    return Status(StatusCode::invalid_argument,
                  "Config.sample_rate_hz " + std::to_string(config.sample_rate_hz) + " is outside 1..1000");
  if (config.flush_interval_seconds < 1 || config.flush_interval_seconds > 3600)
    return Status(StatusCode::invalid_argument, "Config.flush_interval_seconds " +
                                                    std::to_string(config.flush_interval_seconds) +
                                                    " is outside 1..3600");
  return Status();
}

// Starts a thread with SIGPROF blocked (it inherits the mask), so no sample ever lands on our threads.
template <class Fn>
std::thread sampler_spawn(Fn&& fn) {
  sigset_t block, previous;
  sigemptyset(&block);
  sigaddset(&block, kSamplerSignal);
  pthread_sigmask(SIG_BLOCK, &block, &previous);
  std::thread thread(std::forward<Fn>(fn));
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return thread;
}

// CPU time the running session's agent thread has used so far (0 when not running): lets a benchmark
// tell the one-time start cost (symbol indexes, unwind tables) from the steady rate.
inline uint64_t sampler_agent_cpu_ns() {
  ProfilerGlobal& global = profiler_global();
  std::lock_guard<std::mutex> control(global.control);
  if (global.session == nullptr) return 0;
  clockid_t clock;
  timespec ts;
  if (pthread_getcpuclockid(global.session->agent_thread.native_handle(), &clock) != 0 ||
      clock_gettime(clock, &ts) != 0)
    return 0;
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

}  // namespace detail

Status start(const Config& config) {
  using namespace detail;
  ProfilerGlobal& global = profiler_global();
  std::lock_guard<std::mutex> control(global.control);
  if (global.session != nullptr)
    return Status(StatusCode::already_running,
                  "start() while the profiler is running (writing '" + global.session->output_path + "')");
  Status status = validate_config(config);
  if (!status.ok()) return status;

  std::unique_ptr<ProfilerSession> session(new ProfilerSession);
  session->config = config;
  session->log->callback = config.log;
  session->output_path = config.output_path.empty() ? config.application_name + ".pyro" : config.output_path;
  session->resolution = config.flush_interval_seconds;
  session->period_ns = 1000000000 / config.sample_rate_hz;
  if (!config.server_address.empty()) {
    status = parse_http_endpoint(config.server_address, &session->endpoint);
    if (!status.ok()) return status;
    session->push_enabled = true;
  }

  // Back off if someone else owns SIGPROF (gperftools, another profiler, the application itself), as
  // gperftools does: two samplers on one signal would steal each other's samples.
  struct sigaction current;
  sigaction(kSamplerSignal, nullptr, &current);
  const bool is_free = (current.sa_flags & SA_SIGINFO) == 0 &&
                       (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN);
  if (!is_free && !sampler_handler_is_ours(current))
    return Status(StatusCode::already_running,
                  "SIGPROF already has a handler (another profiler such as gperftools, or the application's own); "
                  "not sampling");
  if (sampler_handler_is_ours(current)) {
    std::memset(&current, 0, sizeof current);
    current.sa_handler = SIG_DFL;
  }
  session->previous_action = current;

  struct stat existing;
  const bool file_existed = ::stat(session->output_path.c_str(), &existing) == 0;
  WriterOptions options;
  options.resolution_seconds = config.flush_interval_seconds;
  status = session->writer.open(session->output_path, options);
  if (!status.ok()) return status;
  if (session->writer.resolution_seconds() != config.flush_interval_seconds) {
    const int64_t file_resolution = session->writer.resolution_seconds();
    session->writer.close();
    return Status(StatusCode::invalid_argument,
                  "'" + session->output_path + "' has a resolution of " + std::to_string(file_resolution) +
                      " s but Config.flush_interval_seconds is " + std::to_string(config.flush_interval_seconds));
  }

  SamplerRing* ring = sampler_ring_instance();
  if (ring == nullptr) {
    session->writer.close();
    return Status(StatusCode::io_error, std::string("cannot allocate the sample ring: ") + std::strerror(errno));
  }
  ring->reset();  // no handler of ours can run now: the disposition is not ours yet
  sampler_warm_up_unwinder();
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  unwind_tables().clear();
  session->loader_unloads = sampler_loader_counters().second;
#endif
  session->aggregator.reset(new SampleAggregator(config.application_name, config.tags, session->log));
  const int64_t now = sampler_realtime_s();
  session->block_start = now - now % session->resolution;
  if (file_existed) {
    // A series accepts only blocks after its last one. When this process (or an earlier run) already
    // wrote the current block, this session's first block is the next one: its samples move later by
    // less than one resolution instead of being refused.
    File previous;
    if (previous.open_path(session->output_path).ok())
      session->block_start = std::max(session->block_start, previous.info().end_time);
  }
  session->timers.configure(session->period_ns,
                            static_cast<uint64_t>(sampler_monotonic_ns()) ^ (uint64_t(getpid()) << 32));
  session->reported_drops = g_sampler_counters.dropped_full.load(std::memory_order_relaxed);
  session->reported_tag_overflow = tag_registry().overflowed();

  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_sigaction = sampler_on_signal;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, kSamplerSignal);
  g_sampler_enabled.store(true, std::memory_order_seq_cst);
  if (sigaction(kSamplerSignal, &action, nullptr) != 0) {
    g_sampler_enabled.store(false, std::memory_order_seq_cst);
    session->writer.close();
    return Status(StatusCode::unsupported, std::string("sigaction(SIGPROF): ") + std::strerror(errno));
  }

  ProfilerSession* s = session.get();
  if (s->push_enabled) {
    s->push = std::make_shared<PushClient>(s->endpoint, [log = s->log](LogLevel level, const std::string& message) {
      (*log)(level, message);
    });
    std::shared_ptr<PushClient> push = s->push;
    s->push_thread = sampler_spawn([push] {
      pthread_setname_np(pthread_self(), "pyroscope-push");
      push->run();
    });
    while (s->push->tid() == 0) std::this_thread::yield();  // the agent must know it, to skip it
  }
  s->agent_thread = sampler_spawn([s] { s->run_agent(); });
  Status agent_status;
  {
    std::unique_lock<std::mutex> lock(s->mutex);
    s->wake.wait(lock, [s] { return s->agent_ready; });
    agent_status = s->agent_status;
  }
  if (!agent_status.ok()) {
    s->agent_thread.join();
    g_sampler_enabled.store(false, std::memory_order_seq_cst);
    sampler_restore_disposition(s->previous_action);
    if (s->push) {
      if (s->push->finish(sampler_monotonic_ns())) s->push_thread.join();
      else s->push_thread.detach();
    }
    s->writer.close();
    return agent_status;
  }

  if (!global.hooks_installed) {
    global.hooks_installed = true;
    pthread_atfork(sampler_before_fork, sampler_after_fork_in_parent, sampler_after_fork_in_child);
    std::atexit(sampler_at_exit);
  }
  global.session = session.release();
  return Status();
}

Status stop() {
  using namespace detail;
  ProfilerGlobal& global = profiler_global();
  std::lock_guard<std::mutex> control(global.control);
  ProfilerSession* s = global.session;
  if (s == nullptr) return Status(StatusCode::not_running, "stop() without a running profiler");
  {
    std::lock_guard<std::mutex> lock(s->mutex);
    s->stop_requested = true;
  }
  s->wake.notify_all();
  s->agent_thread.join();  // it disarms the timers, drains, writes the partial block, closes the file
  sampler_restore_disposition(s->previous_action);
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  unwind_tables().clear();  // no handler runs any more (the agent waited for the last one)
#endif
  if (s->push) {
    // Bounded: a slow or unreachable server delays stop() by at most kPushStopBudgetMs (+0.5 s).
    if (s->push->finish(sampler_monotonic_ns() + int64_t(kPushStopBudgetMs) * 1000000)) {
      s->push_thread.join();
    } else {
      // Only a name lookup without a timeout can keep it busy this long; it exits when that returns.
      (*s->log)(LogLevel::warning, "push thread still busy at stop; left to finish on its own");
      s->push_thread.detach();
    }
  }
  Status result;
  {
    std::lock_guard<std::mutex> lock(s->mutex);
    result = s->agent_status;
  }
  delete s;
  global.session = nullptr;
  return result;
}

bool is_running() {
  detail::ProfilerGlobal& global = detail::profiler_global();
  std::lock_guard<std::mutex> control(global.control);
  return global.session != nullptr;
}

}  // namespace pyroscope

#else  // PYROSCOPE_NO_SAMPLER or not Linux

// [SECTION] Implementation: profiler API without a sampler ========================================
// Tag scopes still work as bookkeeping (code that uses them compiles and runs unchanged); there is
// nothing to sample with.

namespace pyroscope {

Status start(const Config&) {
  return Status(StatusCode::unsupported,
                "the sampler is not available in this build (PYROSCOPE_NO_SAMPLER, or not Linux); "
                "files can still be written with pyroscope::Writer and read back");
}

Status stop() { return Status(StatusCode::not_running, "stop() without a running profiler (no sampler in this build)"); }

bool is_running() { return false; }

}  // namespace pyroscope

#endif  // sampler
