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
  SampleAggregator(std::string app, std::string type, Tags static_tags, std::shared_ptr<SessionLog> log)
      : app_(std::move(app)), type_(std::move(type)), static_tags_(std::move(static_tags)), log_(std::move(log)),
        symbols_(std::make_shared<SymbolTable>()) {}

  void add(const SamplerSlot& slot) {
    key_of(slot, &key_);  // the buffer keeps its capacity: no allocation for a stack seen before
    add_key(key_, slot.weight);
  }

  // A slot's key: tag set, flags and pcs, as raw bytes.
  static void key_of(const SamplerSlot& slot, std::string* key) {
    const size_t depth = std::min<size_t>(slot.depth, kSamplerMaxFrames);
    key->clear();
    const uint32_t header[2] = {slot.tag_set, uint32_t(slot.flags & (kSlotTruncated | kSlotIncomplete))};
    key->append(reinterpret_cast<const char*>(header), sizeof header);
    key->append(reinterpret_cast<const char*>(slot.pcs), depth * sizeof(uintptr_t));
  }

  // A stack in add()'s key layout (uint32 tag set, uint32 flags, then the pcs leaf first) with its
  // weight: how the allocation sampler hands over its stacks.
  void add_key(const std::string& key, uint64_t weight) {
    if (weight == 0 || key.size() < 2 * sizeof(uint32_t)) return;
    auto it = stacks_.find(key);
    if (it == stacks_.end()) {
      it = stacks_.emplace(key, 0).first;
      // Resolve a new stack's frames now: reading a module's symbols is a one-time cost best paid when
      // the module first shows up, not in the middle of a flush.
      const size_t depth = (key.size() - 2 * sizeof(uint32_t)) / sizeof(uintptr_t);
      for (size_t i = 0; i < depth; i++) {
        uintptr_t pc;
        std::memcpy(&pc, key.data() + 2 * sizeof(uint32_t) + i * sizeof(uintptr_t), sizeof pc);
        symbol_for(pc);
      }
    }
    it->second += weight;
  }

  // The loader's counters changed (a dlopen or dlclose). The block's stacks so far are folded now,
  // under the names they got when first seen; then names cached for addresses whose module went away
  // or was replaced are dropped, so that a library loaded where another was gets its own names.
  // Samples taken in the agent's last interval before the change may be named after the new library.
  void loader_changed() {
    fold_stacks();
    symbolizer_.refresh_if_changed();
    forget_stale_names();
  }

  // Folds the block's stacks into one tree per series and moves those trees out.
  void take(std::vector<std::pair<SeriesKey, Tree>>* out) {
    fold_stacks();
    out->clear();
    for (size_t i = 0; i < trees_.size(); i++) {
      if (!trees_[i] || trees_[i]->total() == 0) continue;
      out->emplace_back(series_[i], std::move(*trees_[i]));
      trees_[i].reset();
    }
  }

 private:
  std::string app_;
  std::string type_;  // the profile type of every series this aggregator makes
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

  // The stacks counted so far, into their series' trees.
  void fold_stacks() {
    for (const auto& entry : stacks_) {
      const std::string& key = entry.first;
      uint32_t header[2];
      std::memcpy(header, key.data(), sizeof header);
      const size_t depth = (key.size() - sizeof header) / sizeof(uintptr_t);
      const uint32_t series = series_for(header[0]);
      std::unique_ptr<Tree>& tree = trees_[series];
      if (!tree) tree.reset(new Tree(symbols_));
      frames_.clear();
      if (header[1] & kSlotTruncated) frames_.push_back(symbols_->intern("[truncated]"));
      else if (header[1] & kSlotIncomplete) frames_.push_back(symbols_->intern("[incomplete]"));
      for (size_t i = depth; i-- > 0;) {  // stored leaf first; trees want the root first
        uintptr_t pc;
        std::memcpy(&pc, key.data() + sizeof header + i * sizeof(uintptr_t), sizeof pc);
        frames_.push_back(symbol_for(pc));
      }
      if (frames_.empty()) frames_.push_back(symbols_->intern("[no stack]"));
      tree->insert_ids(frames_.data(), frames_.size(), entry.second);
    }
    stacks_.clear();
  }

  void forget_stale_names() {
    const std::vector<std::pair<uintptr_t, uintptr_t>> stale = symbolizer_.take_stale_ranges();
    if (stale.empty()) return;
    for (auto it = pc_symbols_.begin(); it != pc_symbols_.end();) {
      bool gone = false;
      for (const auto& range : stale) gone = gone || (it->first >= range.first && it->first < range.second);
      it = gone ? pc_symbols_.erase(it) : std::next(it);
    }
  }

  uint32_t symbol_for(uintptr_t pc) {
    auto it = pc_symbols_.find(pc);
    if (it != pc_symbols_.end()) return it->second;
    const uint32_t id = symbols_->intern(symbolizer_.name_of(pc));
    forget_stale_names();  // name_of may have reread the loaded objects
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
    SeriesKey key(app_, type_, std::move(tags));
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

// The info of a sampler series: values are samples (weights), summed over time, each standing for
// period_ns nanoseconds of one thread's time: CPU time for cpu (pprof's period type cpu), real time,
// running or not, for wall (Config::wall_clock).
inline SeriesInfo sampler_series_info(const char* type, int64_t period_ns) {
  SeriesInfo info = default_series_info(type);
  info.unit = "samples";
  info.aggregation = Aggregation::sum;
  info.period = period_ns;
  info.period_type = type;
  info.period_unit = "nanoseconds";
  return info;
}

inline bool sampler_handler_is_ours(const struct sigaction& action) {
  return (action.sa_flags & SA_SIGINFO) != 0 && action.sa_sigaction == sampler_on_signal;
}

// Test hook: while set, the agent waits at the top of each wake, before its tick, drain and flush (a
// starved agent, on demand); stop() still ends the wait. Tests only.
inline std::atomic<bool> g_agent_test_stall{false};

// The allocation sampler's four series (docs/memory.md), in the order ProfilerSession keeps them.
constexpr const char* kAllocationProfileTypes[4] = {"alloc_space", "alloc_objects", "inuse_space", "inuse_objects"};

struct ProfilerSession {
  Config config;
  std::string output_path;
  int64_t resolution = kDefaultResolutionSeconds;
  int64_t period_ns = 10000000;
  std::shared_ptr<SessionLog> log = std::make_shared<SessionLog>();
  Writer writer;
  // What the cpu series' values mean (format v3): samples, summed, each standing for period_ns of
  // CPU time. Null when appending to a version 1 or 2 file, which holds samples without a period.
  SeriesInfo series_info;
  const SeriesInfo* append_info = &series_info;
  std::unique_ptr<SampleAggregator> aggregator;
  // Allocation profiling: one aggregator and one SeriesInfo per type of kAllocationProfileTypes (all
  // null when the session does not sample allocations).
  bool alloc_enabled = false;
  std::unique_ptr<SampleAggregator> alloc_aggregators[4];
  SeriesInfo alloc_info[4];
  std::vector<AllocStackValues> alloc_values;
  // Config::wall_clock: the wall series, its info (null when appending to a version 1 or 2 file) and the
  // sampler that ticks on the agent thread.
  SeriesInfo wall_info;
  const SeriesInfo* wall_append_info = &wall_info;
  std::unique_ptr<SampleAggregator> wall_aggregator;
  std::unique_ptr<WallSampler> wall;
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
  // A sample goes to the block it was taken in (docs/sampler.md, "Blocks, stop, exit, crashes"): the
  // current block's end on the monotonic clock (the samples' clock), converted from the realtime
  // boundary at every drain, and the samples drained before that block was written but taken at or
  // after its end, held here (bounded) until it is.
  struct HeldSample {
    int64_t time_ns;
    SampleAggregator* aggregator;
    uint32_t weight;
    std::string key;  // SampleAggregator::key_of
  };
  static constexpr size_t kMaxHeldSamples = 4 * kSamplerRingSlots;
  std::vector<HeldSample> held;
  int64_t realtime_minus_monotonic_ns = 0;  // as of the last drain
  int64_t block_end_ns = INT64_MAX;         // monotonic
  int64_t last_wall_tick_ns = 0;
  uint64_t held_overflow = 0;  // samples put in the block being filled because `held` was full
  uint64_t reported_held_overflow = 0;
  std::pair<unsigned long long, unsigned long long> loader_counters{0, 0};
  uint64_t reported_drops = 0;
  uint64_t reported_tag_overflow = 0;
  uint64_t reported_skipped_slots = 0;
  std::string reported_timer_error;
  bool handler_replaced = false;  // SIGPROF got another handler while running: sampling stopped
  int64_t stack_mappings_read_ns = 0;
  std::vector<std::unique_ptr<StackMappings>> retired_mappings;  // freed once no handler runs

  // The current block's end on the monotonic clock, from the realtime clock read now (a clock set
  // forward or back moves it; a suspend, during which the monotonic clock stands still, too).
  void update_block_end() {
    const int64_t monotonic = sampler_monotonic_ns();
    realtime_minus_monotonic_ns = sampler_realtime_ns() - monotonic;
    set_block_end();
  }
  void set_block_end() { block_end_ns = (block_start + resolution) * 1000000000 - realtime_minus_monotonic_ns; }

  // Puts a sample where its time says: into the block being filled if it was taken before that block's
  // end (or before its start: a block already written takes nothing more), else held for a later block.
  void route(SampleAggregator& into, const SamplerSlot& slot) {
    if (slot.time_ns < block_end_ns) {
      into.add(slot);
    } else if (held.size() >= kMaxHeldSamples) {
      held_overflow++;
      into.add(slot);
    } else {
      held.push_back(HeldSample{slot.time_ns, &into, slot.weight, std::string()});
      SampleAggregator::key_of(slot, &held.back().key);
    }
  }
  void route_wall(const SamplerSlot& slot) { route(*wall_aggregator, slot); }

  // The held samples taken before the current block's end join it.
  void release_held() {
    size_t kept = 0;
    for (size_t i = 0; i < held.size(); i++) {
      if (held[i].time_ns < block_end_ns) {
        held[i].aggregator->add_key(held[i].key, held[i].weight);
      } else {
        if (kept != i) held[kept] = std::move(held[i]);
        kept++;
      }
    }
    held.resize(kept);
  }

  // Writes the block being filled if the realtime clock (now_s) is past its end, then every later block
  // a held sample was taken in (an agent starved for longer than a block), and goes on in the block of
  // now_s. Block starts only move forward, even if the wall clock is set back.
  void write_blocks(int64_t now_s) {
    bool first = true;
    while (now_s >= block_start + resolution) {
      flush(block_start, block_start + resolution, first);
      first = false;
      const int64_t next = block_start + resolution;
      int64_t open = std::max(now_s - now_s % resolution, next);
      for (const HeldSample& sample : held) {
        const int64_t after_ns = sample.time_ns + realtime_minus_monotonic_ns - next * 1000000000;
        const int64_t taken = after_ns <= 0 ? next : next + after_ns / (resolution * 1000000000) * resolution;
        open = std::min(open, taken);
      }
      block_start = open;
      set_block_end();
      release_held();
    }
  }

  void drain() {
    update_block_end();
    if (!held.empty()) release_held();
    SamplerRing* ring = g_sampler_ring.load(std::memory_order_acquire);
    uint64_t skipped = 0;
    ring->drain(sampler_monotonic_ns(), &skipped, [this](const SamplerSlot& slot) {
      if ((slot.flags & kSlotWall) == 0) {
        route(*aggregator, slot);
        if (wall) wall->note_cpu_sample(slot, [this](const SamplerSlot& sample) { route_wall(sample); });
      } else if (wall_aggregator) {
        route_wall(slot);
      }
      g_sampler_counters.drained.fetch_add(1, std::memory_order_relaxed);
      g_sampler_counters.weight.fetch_add(slot.weight, std::memory_order_relaxed);
      g_sampler_counters.weight_squared.fetch_add(uint64_t(slot.weight) * slot.weight, std::memory_order_relaxed);
    });
    if (skipped != 0) g_sampler_counters.skipped_slots.fetch_add(skipped, std::memory_order_relaxed);
    if (alloc_enabled) {
      alloc_drain(&alloc_values);
      for (const AllocStackValues& stack : alloc_values) {
        alloc_aggregators[0]->add_key(stack.key, stack.space);
        alloc_aggregators[1]->add_key(stack.key, stack.objects);
      }
    }
  }

  // Lists the mappings stacks can be in and publishes them for the handler (rule 4).
  void refresh_stack_mappings() {
    std::unique_ptr<StackMappings> mappings(new StackMappings);
    if (!sampler_read_stack_mappings(mappings.get())) return;  // the previous list stays
    sampler_publish_stack_mappings(std::move(mappings), &retired_mappings);
    stack_mappings_read_ns = sampler_monotonic_ns();
  }

  // After sampling was switched off: waits until no handler runs, at most kInFlightWaitNs. A handler
  // that does not return by then is given up on (logged; what it may read is never freed). False then.
  bool wait_for_handlers() {
    const int64_t deadline = sampler_monotonic_ns() + kInFlightWaitNs;
    for (int round = 0;; round++) {
      const int lost = g_sampler_lost_in_flight.load(std::memory_order_seq_cst);
      const int running = g_sampler_in_flight.load(std::memory_order_seq_cst);
      if (running <= lost) return lost == 0;
      if (sampler_monotonic_ns() >= deadline) {
        g_sampler_lost_in_flight.store(running, std::memory_order_seq_cst);
        g_sampler_counters.lost_handlers.fetch_add(uint64_t(running - lost), std::memory_order_relaxed);
        (*log)(LogLevel::warning, std::to_string(running - lost) +
                                      " signal handler(s) of the profiler still running 2 s after sampling "
                                      "stopped (an application signal handler may have left one with "
                                      "siglongjmp); not waiting for them: the memory they may read is kept");
        return false;
      }
      if (round < 1000) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // Sleeps until `until`, serving on the way what handlers ask for (unwind tables, a new list of
  // mappings) as soon as they wake the agent. False when stop() asked.
  bool sleep_until(std::chrono::steady_clock::time_point until) {
    const int fd = g_agent_wakeup_fd.load(std::memory_order_relaxed);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (stop_requested) return false;
      }
      const auto left = until - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) return true;
      pollfd wakeup{fd, POLLIN, 0};
      const int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(left).count()) + 1;
      if (poll(&wakeup, 1, ms) <= 0 || (wakeup.revents & POLLIN) == 0) continue;
      uint64_t count = 0;
      if (read(fd, &count, sizeof count) < 0) continue;
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
      unwind_tables().serve_requests();
#endif
      if (g_stack_mappings_wanted.load(std::memory_order_relaxed) &&
          sampler_monotonic_ns() - stack_mappings_read_ns > 1000000000) {
        g_stack_mappings_wanted.store(false, std::memory_order_relaxed);
        refresh_stack_mappings();
      }
    }
  }

  // The test hook g_agent_test_stall: waits while it is set. False when stop() asked meanwhile.
  bool stall_for_test() {
    while (g_agent_test_stall.load(std::memory_order_relaxed)) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (stop_requested) return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

  // Another handler took SIGPROF while we run (the application's, or a profiler loaded later): our
  // timers would feed it signals it does not expect, so they go; the session only drains and writes
  // from then on, and stop() leaves that handler in place.
  void check_disposition() {
    struct sigaction current;
    if (handler_replaced || sigaction(kSamplerSignal, nullptr, &current) != 0 || sampler_handler_is_ours(current))
      return;
    handler_replaced = true;
    timers.disarm_all();
    (*log)(LogLevel::warning,
           "SIGPROF's handler was replaced while profiling (by the application or another profiler): sampling "
           "stopped; stop() will leave that handler in place");
  }

  // Writes the block [block, until). inuse: with the allocation sampler's in-use snapshot (left out of a
  // block written late only for the samples held for it).
  void flush(int64_t block, int64_t until, bool inuse) {
    flush_series(*aggregator, append_info, config.sample_rate_hz, block, until);
    if (alloc_enabled) {
      // In use at the block's end: the sampled blocks still live.
      if (inuse) {
        alloc_inuse(&alloc_values);
        for (const AllocStackValues& stack : alloc_values) {
          alloc_aggregators[2]->add_key(stack.key, stack.space);
          alloc_aggregators[3]->add_key(stack.key, stack.objects);
        }
      }
      for (int i = 0; i < 4; i++)
        flush_series(*alloc_aggregators[i], append_info != nullptr ? &alloc_info[i] : nullptr, config.sample_rate_hz,
                     block, until);
    }
    if (wall_aggregator) {
      wall->flush([this](const SamplerSlot& slot) { route_wall(slot); });
      flush_series(*wall_aggregator, wall_append_info, kWallSampleRateHz, block, until);
    }
  }

  void flush_series(SampleAggregator& source, const SeriesInfo* info, int rate_hz, int64_t block, int64_t until) {
    std::vector<std::pair<SeriesKey, Tree>> trees;
    source.take(&trees);
    for (auto& entry : trees) {
      const Status status = writer.append(entry.first, block, entry.second, info);
      if (status.ok()) {
        g_sampler_counters.blocks_written.fetch_add(1, std::memory_order_relaxed);
      } else {
        (*log)(LogLevel::error, "writing block " + std::to_string(block) + " of " + entry.first.to_string() +
                                    " to '" + output_path + "': " + status.to_string());
        std::lock_guard<std::mutex> lock(mutex);
        if (agent_status.ok()) agent_status = status;
      }
      if (push) {
        push->enqueue(ingest_target(endpoint, entry.first, block, until, rate_hz,
                                    info != nullptr ? *info : default_series_info(entry.first.type)),
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
    const uint64_t skipped = g_sampler_counters.skipped_slots.load(std::memory_order_relaxed);
    if (skipped != reported_skipped_slots) {
      (*log)(LogLevel::warning, std::to_string(skipped - reported_skipped_slots) +
                                    " sample(s) lost: a signal handler claimed a slot of the sample ring and did "
                                    "not fill it within 1 s");
      reported_skipped_slots = skipped;
    }
    if (held_overflow != reported_held_overflow) {
      (*log)(LogLevel::warning, std::to_string(held_overflow - reported_held_overflow) +
                                    " sample(s) taken after a block's end put in that block: more than " +
                                    std::to_string(kMaxHeldSamples) + " were waiting for it to be written");
      reported_held_overflow = held_overflow;
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
    alloc_guard_enter();  // never sampled (the thread ends with the session)
    {
      std::lock_guard<std::mutex> lock(mutex);
      agent_tid = sampler_gettid();
    }
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
    // Before any timer is armed: the table of an executable _dl_find_object has no .eh_frame_hdr for.
    std::string problem;
    if (!unwind_tables().prepare_executable(&problem))
      (*log)(LogLevel::warning, "no unwind table for the executable (" + problem +
                                    "): stacks end at its frames, marked [incomplete]");
    // libc by a function no sanitizer intercepts; the vDSO holds clock_gettime, where many samples land;
    // malloc and clock_gettime as the program resolves them: an allocator library (tcmalloc, jemalloc)
    // or a sanitizer's runtime with its interceptors, when there is one.
    unwind_tables().prebuild({reinterpret_cast<const void*>(getauxval(AT_ENTRY)),
                              reinterpret_cast<const void*>(&gnu_get_libc_version),
                              reinterpret_cast<const void*>(&std::terminate),
                              reinterpret_cast<const void*>(getauxval(AT_SYSINFO_EHDR)),
                              reinterpret_cast<const void*>(&malloc), reinterpret_cast<const void*>(&clock_gettime)});
#endif
    loader_counters = sampler_loader_counters();
    std::string error;
    timers.rescan(agent_tids(), &error, [this] { refresh_stack_mappings(); });
    const std::string young_threads = timers.size() > 0 ? timers.arm_process_timer(config.short_lived_threads) : std::string();
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
                               std::to_string(config.sample_rate_hz) + " Hz of CPU time, writing '" + output_path +
                               "'; " + young_threads);

    if (wall) (*log)(LogLevel::info, "sampling every thread at " + std::to_string(kWallSampleRateHz) +
                                         " Hz of wall-clock time too (series " + config.application_name + ".wall)");

    // The agent wakes every kAgentWakeMs, or every wall interval when wall-clock sampling is on: then
    // each wake is a wall tick and a drain, and every kAgentWakeMs also the rest (rescan, flush).
    const auto step = std::chrono::nanoseconds(wall ? kWallIntervalNs : int64_t(kAgentWakeMs) * 1000000);
    auto next_wake = std::chrono::steady_clock::now();
    if (wall) {
      // Wall ticks in the middle of their intervals (steady_clock is CLOCK_MONOTONIC, as the sampler's
      // clock): a little jitter then never moves a tick into the neighbouring interval.
      const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next_wake.time_since_epoch()).count();
      next_wake += std::chrono::nanoseconds(kWallIntervalNs - now_ns % kWallIntervalNs + kWallIntervalNs / 2 - kWallIntervalNs);
    }
    auto next_chores = next_wake + std::chrono::milliseconds(kAgentWakeMs);
    bool wall_failed = false;
    for (;;) {
      next_wake += step;
      if (!sleep_until(next_wake)) break;  // stop() asked
      if (g_agent_test_stall.load(std::memory_order_relaxed) && !stall_for_test()) break;
      const auto now_steady = std::chrono::steady_clock::now();
      if (now_steady > next_wake + std::chrono::seconds(1)) next_wake = now_steady;  // suspended: no catch-up
      if (wall && !wall_failed) {
        // The first tick at or after the block's end: what the threads counted so far belongs to the block.
        const int64_t tick_ns = sampler_monotonic_ns();
        if (tick_ns >= block_end_ns && last_wall_tick_ns < block_end_ns)
          wall->flush([this](const SamplerSlot& slot) { route_wall(slot); });
        last_wall_tick_ns = tick_ns;
        std::string wall_error;
        wall_failed = !wall->tick(
            tick_ns, agent_tids(), &wall_error, [this](const SamplerSlot& slot) { route_wall(slot); },
            [this] {
              check_disposition();
              return !handler_replaced;
            });
        if (wall_failed) (*log)(LogLevel::warning, wall_error + ": wall-clock sampling stopped");
        drain();  // running threads' ticks go to their next CPU sample: keep that close to the tick
      }
      if (now_steady < next_chores) continue;
      next_chores += std::chrono::milliseconds(kAgentWakeMs);
      if (now_steady > next_chores + std::chrono::seconds(1)) next_chores = now_steady;
      // A dlopen or dlclose since the last wake: names and tables of modules that went away must not
      // serve the samples drained from now on.
      const auto counters = sampler_loader_counters();
      if (counters != loader_counters) {
        loader_counters = counters;
        aggregator->loader_changed();
        for (auto& alloc : alloc_aggregators)
          if (alloc) alloc->loader_changed();
        if (wall_aggregator) wall_aggregator->loader_changed();
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
        unwind_tables().forget_unloaded();
#endif
      }
      drain();
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
      unwind_tables().serve_requests();
      unwind_tables().free_retired();
#endif
      if (!retired_mappings.empty() && sampler_no_handler_running()) retired_mappings.clear();
      check_disposition();
      if (!handler_replaced) {
        error.clear();
        bool listed = false;
        timers.rescan(agent_tids(), &error, [&] {
          refresh_stack_mappings();
          listed = true;
        });
        // A handler met a stack in no listed mapping (a coroutine's, say): list again, once a second at most.
        if (!listed && g_stack_mappings_wanted.load(std::memory_order_relaxed) &&
            sampler_monotonic_ns() - stack_mappings_read_ns > 1000000000) {
          g_stack_mappings_wanted.store(false, std::memory_order_relaxed);
          refresh_stack_mappings();
        }
        if (!error.empty() && error != reported_timer_error) {
          reported_timer_error = error;
          (*log)(LogLevel::warning, error);
        }
      }
      write_blocks(sampler_realtime_s());
      report_problems();
    }

    // Stopping: no new samples, wait for handlers still running, then fold and write the rest.
    g_sampler_enabled.store(false, std::memory_order_seq_cst);
    alloc_end();  // sampled allocations unwinding now are counted as handlers: waited for below
    g_wall_token.store(0, std::memory_order_relaxed);
    timers.disarm_all();
    const bool all_returned = wait_for_handlers();
    drain();
    if (all_returned) {
      // No handler can read the tables or the mapping lists any more (a late one sees sampling off
      // before it looks at them).
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
      unwind_tables().clear();
#endif
      delete g_stack_mappings.exchange(nullptr, std::memory_order_seq_cst);
      retired_mappings.clear();
    } else {
      for (auto& retired : retired_mappings) retired.release();  // kept for a handler that never returned
      retired_mappings.clear();
    }
    // The blocks that ended meanwhile, then the partial one with everything still held (taken after its
    // end only if the realtime clock was set back).
    const int64_t now = sampler_realtime_s();
    write_blocks(now);
    block_end_ns = INT64_MAX;
    release_held();
    flush(block_start, std::min(block_start + resolution, std::max(block_start + 1, now + 1)), true);
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
  std::mutex control;  // guards the fields below; held briefly by start, stop, is_running and fork
  ProfilerSession* session = nullptr;   // the running session
  // The session stop() is finishing. stop() does not hold the control lock meanwhile (the agent it
  // joins calls the log callback, which may call is_running() or start(), and fork() must not wait for
  // a whole stop); start() refuses while it is set.
  ProfilerSession* stopping = nullptr;
  bool hooks_installed = false;
};

inline ProfilerGlobal& profiler_global() {
  static ProfilerGlobal* global = new ProfilerGlobal;  // never destroyed: used by the atexit hook
  return *global;
}

// Puts the disposition back if SIGPROF's handler is still ours, and returns false if it is not (then
// someone installed theirs meanwhile, and it stays). Passing through SIG_IGN discards SIGPROFs still
// pending on any thread (the kernel flushes them when a signal becomes ignored); our timers are
// deleted by then, so no new one is generated and restoring SIG_DFL cannot kill the process with a late
// signal. Async-signal-safe and allocation-free (the fork child calls it).
inline bool sampler_restore_disposition(const struct sigaction& previous) {
  struct sigaction current;
  if (sigaction(kSamplerSignal, nullptr, &current) != 0 || !sampler_handler_is_ours(current)) return false;
  struct sigaction ignore;
  std::memset(&ignore, 0, sizeof ignore);
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(kSamplerSignal, &ignore, nullptr);
  if (!sampler_handler_is_ours(previous)) sigaction(kSamplerSignal, &previous, nullptr);
  return true;
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
  sampler_loader_guard().lock();
  alloc_before_fork();
}
inline void sampler_after_fork_in_parent() {
  alloc_after_fork_in_parent();
  sampler_loader_guard().unlock();
  tag_registry().mutex().unlock();
  profiler_global().control.unlock();
}
// The child has one thread, no timers (POSIX timers are not inherited) and none of the agent's
// threads. Its copy of the session is abandoned (leaked: destroying it would join threads that do not
// exist and close the parent's file); the child is not profiled unless it calls start() again.
// Allocates nothing (a child that only execs must not meet an allocator lock another thread of the
// parent held at the fork): unlocks, atomics, sigaction.
inline void sampler_after_fork_in_child() {
  alloc_after_fork_in_child();
  g_sampler_thread_tid = 0;  // this thread has another tid in the child
  sampler_loader_guard().unlock();
  tag_registry().mutex().unlock();
  ProfilerGlobal& global = profiler_global();
  ProfilerSession* abandoned = global.session != nullptr ? global.session : global.stopping;
  if (abandoned != nullptr) {
    g_sampler_enabled.store(false, std::memory_order_seq_cst);
    sampler_restore_disposition(abandoned->previous_action);
    global.session = nullptr;
    global.stopping = nullptr;
  }
  // The parent's other threads, and any handler they were in, do not exist here.
  g_sampler_in_flight.store(0, std::memory_order_seq_cst);
  g_sampler_lost_in_flight.store(0, std::memory_order_seq_cst);
  if (SamplerRing* ring = g_sampler_ring.load(std::memory_order_acquire)) ring->reset_after_fork();
  // A wake-up file of its own, under the same number (the kernel object is shared with the parent).
  const int wakeup = g_agent_wakeup_fd.load(std::memory_order_relaxed);
  if (wakeup >= 0) {
    const int fresh = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fresh >= 0) {
      dup3(fresh, wakeup, O_CLOEXEC);
      close(fresh);
    }
  }
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
  if (uint64_t(config.allocation_sample_bytes) > kAllocationMaxSampleBytes)
    return Status(StatusCode::invalid_argument,
                  "Config.allocation_sample_bytes " + std::to_string(config.allocation_sample_bytes) +
                      " is above 2^40 (1 TiB): give the mean bytes between sampled allocations, or 0 to "
                      "switch allocation profiling off");
  return Status();
}

// Starts a thread with SIGPROF blocked (it inherits the mask), so no sample ever lands on our threads.
// Not with the process-wide timer (Config::short_lived_threads): a thread that blocks SIGPROF while it
// runs makes the kernel send that timer's signal to another thread, which may be blocked in a call the
// signal interrupts; there our threads take the signal and the handler drops it (they are marked timed).
template <class Fn>
std::thread sampler_spawn(bool block_sigprof, Fn&& fn) {
  sigset_t block, previous;
  sigemptyset(&block);
  if (block_sigprof) sigaddset(&block, kSamplerSignal);
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
#if !defined(PYROSCOPE_PRELOAD_LIBRARY)
  // Under libpyroscope-preload.so (pyro record) a program's own start() takes over: the preloaded
  // copy of the profiler stops first, so the process is never sampled twice (docs/record.md).
  using PreloadYield = int (*)();
  if (auto yield = reinterpret_cast<PreloadYield>(dlsym(RTLD_DEFAULT, "pyroscope_preload_yield"))) yield();
#endif
  AllocGuard not_sampled;  // the profiler's own allocations
  ProfilerGlobal& global = profiler_global();
  std::lock_guard<std::mutex> control(global.control);
  if (global.session != nullptr)
    return Status(StatusCode::already_running,
                  "start() while the profiler is running (writing '" + global.session->output_path + "')");
  if (global.stopping != nullptr)
    return Status(StatusCode::already_running, "start() while stop() is still finishing the previous session");
  Status status = validate_config(config);
  if (!status.ok()) return status;
#if !defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  // Here libgcc is the only unwinder, and in a statically linked program its FDE lookups take
  // object_mutex (the program registered its frames at startup): a handler interrupting a thread that
  // throws would wait for that thread forever (rule 1).
  if (sampler_executable_is_static())
    return Status(StatusCode::unsupported,
                  "statically linked program: this build unwinds with libgcc, which takes a lock there, and a "
                  "signal handler must not; link dynamically (or use the x86-64 build without ThreadSanitizer)");
#endif

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
  session->series_info = sampler_series_info(kDefaultProfileType, session->period_ns);
  session->wall_info = sampler_series_info("wall", kWallIntervalNs);
  if (file_existed) {
    // A series keeps the info it was created with: a file whose series of this application were
    // sampled at another rate would refuse every block, so start() refuses it now.
    File stored;
    if (stored.open_path(session->output_path).ok()) {
      if (stored.info().format_version < 3) session->append_info = nullptr;
      if (stored.info().format_version < 3) session->wall_append_info = nullptr;
      for (size_t i = 0; session->append_info != nullptr && i < stored.series().size(); i++) {
        const SeriesKey& key = stored.series()[i];
        if (config.wall_clock && key.app == config.application_name && key.type == "wall" &&
            !(stored.series_info(i) == session->wall_info)) {
          session->writer.close();
          return Status(StatusCode::invalid_argument,
                        "'" + session->output_path + "' holds " + key.to_string() + " as " +
                            stored.series_info(i).to_string() + ", but Config.wall_clock writes " +
                            session->wall_info.to_string() + ": write another file");
        }
        if (key.app != config.application_name || key.type != kDefaultProfileType) continue;
        if (stored.series_info(i) == session->series_info) continue;
        session->writer.close();
        return Status(StatusCode::invalid_argument,
                      "'" + session->output_path + "' holds " + key.to_string() + " as " +
                          stored.series_info(i).to_string() + ", but Config.sample_rate_hz " +
                          std::to_string(config.sample_rate_hz) + " writes " + session->series_info.to_string() +
                          ": write another file or sample at the same rate");
      }
    }
  }

  SamplerRing* ring = sampler_ring_instance();
  if (ring == nullptr) {
    session->writer.close();
    return Status(StatusCode::io_error, std::string("cannot allocate the sample ring: ") + std::strerror(errno));
  }
  if (g_agent_wakeup_fd.load(std::memory_order_relaxed) < 0) {
    const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
      session->writer.close();
      return Status(StatusCode::io_error, std::string("eventfd: ") + std::strerror(errno));
    }
    g_agent_wakeup_fd.store(fd, std::memory_order_relaxed);
  }
  sampler_bind_handler_calls();
#if defined(PYROSCOPE_SAMPLER_TABLE_UNWINDER)
  // A handler given up on by an earlier stop() may still read the old tables: then they stay.
  if (g_sampler_lost_in_flight.load(std::memory_order_seq_cst) == 0) unwind_tables().clear();
#endif
  session->aggregator.reset(
      new SampleAggregator(config.application_name, kDefaultProfileType, config.tags, session->log));
#if defined(PYROSCOPE_ALLOCATION_INTERPOSED)
  session->alloc_enabled = config.allocation_sample_bytes > 0;
#elif defined(PYROSCOPE_ALLOCATION_PROFILING)
  if (config.allocation_sample_bytes > 0) {
    std::string why;
    allocation_profiling_compiled(&why);
    (*session->log)(LogLevel::warning, "allocation profiling is off: " + why);
  }
#endif
  for (int i = 0; session->alloc_enabled && i < 4; i++) {
    session->alloc_aggregators[i].reset(
        new SampleAggregator(config.application_name, kAllocationProfileTypes[i], config.tags, session->log));
    session->alloc_info[i] = default_series_info(kAllocationProfileTypes[i]);
  }
  if (config.wall_clock) {
    // The token that tells the agent's wall signals from any other SIGPROF: nonzero, low 8 bits free for
    // the weight.
    uint64_t mix = uint64_t(sampler_monotonic_ns()) ^ (uint64_t(getpid()) << 29) ^ 0x9e3779b97f4a7c15ull;
    mix ^= mix >> 31;
    mix *= 0xbf58476d1ce4e5b9ull;
    mix ^= mix >> 29;
    uint32_t token = uint32_t(mix) & ~kWallWeightMask;
    if (token == 0) token = kWallWeightMask + 1;
    session->wall_aggregator.reset(new SampleAggregator(config.application_name, "wall", config.tags, session->log));
    session->wall.reset(new WallSampler(token));
    g_wall_pid.store(getpid(), std::memory_order_relaxed);
    g_wall_token.store(token, std::memory_order_relaxed);
  } else {
    g_wall_token.store(0, std::memory_order_relaxed);
  }
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
  session->reported_skipped_slots = g_sampler_counters.skipped_slots.load(std::memory_order_relaxed);

  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_sigaction = sampler_on_signal;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sampler_handler_mask(&action.sa_mask);
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
    s->push_thread = sampler_spawn(!config.short_lived_threads, [push] {
      pthread_setname_np(pthread_self(), "pyroscope-push");
      alloc_guard_enter();  // never sampled
      push->run();
    });
    while (s->push->tid() == 0) std::this_thread::yield();  // the agent must know it, to skip it
  }
  s->agent_thread = sampler_spawn(!config.short_lived_threads, [s] { s->run_agent(); });
  Status agent_status;
  {
    std::unique_lock<std::mutex> lock(s->mutex);
    s->wake.wait(lock, [s] { return s->agent_ready; });
    agent_status = s->agent_status;
  }
  if (!agent_status.ok()) {
    s->agent_thread.join();
    g_sampler_enabled.store(false, std::memory_order_seq_cst);
    sampler_restore_disposition(s->previous_action);  // only if it is still ours
    if (s->push) {
      if (s->push->finish(sampler_monotonic_ns())) s->push_thread.join();
      else s->push_thread.detach();
    }
    s->writer.close();
    return agent_status;
  }

  // Sampling allocations from here on: the agent is ready (the executable's unwind table, the stack
  // mappings). The agent reads alloc_enabled, which no one changes while it runs.
  if (s->alloc_enabled && !alloc_begin(config.allocation_sample_bytes))
    (*s->log)(LogLevel::warning, std::string("allocation profiling is off: cannot map its filter: ") +
                                     std::strerror(errno));
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
  AllocGuard not_sampled;  // the profiler's own allocations and frees
  ProfilerGlobal& global = profiler_global();
  ProfilerSession* s;
  {
    std::lock_guard<std::mutex> control(global.control);
    s = global.session;
    if (s == nullptr) {
      return Status(StatusCode::not_running, global.stopping != nullptr ? "stop() while another stop() is finishing"
                                                                         : "stop() without a running profiler");
    }
    // The agent (or the push thread) cannot join itself: a log callback that calls stop() gets a status.
    const std::thread::id self = std::this_thread::get_id();
    if (self == s->agent_thread.get_id() || (s->push && self == s->push_thread.get_id()))
      return Status(StatusCode::invalid_argument, "stop() from the profiler's own thread (a log callback): "
                                                  "call it from another thread");
    global.session = nullptr;
    global.stopping = s;
  }
  // From here on without the control lock: the agent calls the log callback while it finishes.
  {
    std::lock_guard<std::mutex> lock(s->mutex);
    s->stop_requested = true;
  }
  sampler_wake_agent();
  s->agent_thread.join();  // it disarms the timers, drains, writes the partial block, closes the file
  if (!sampler_restore_disposition(s->previous_action) && !s->handler_replaced)
    (*s->log)(LogLevel::warning, "SIGPROF's handler was replaced while profiling (by the application or another "
                                 "profiler): left in place");
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
  {
    std::lock_guard<std::mutex> control(global.control);
    global.stopping = nullptr;
  }
  delete s;
  return result;
}

bool is_running() {
  detail::ProfilerGlobal& global = detail::profiler_global();
  std::lock_guard<std::mutex> control(global.control);
  return global.session != nullptr;
}

}  // namespace pyroscope

#else  // PYROSCOPE_NO_SAMPLER or not Linux

