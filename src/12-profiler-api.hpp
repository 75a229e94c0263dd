// [SECTION] Profiler API ==========================================================================

enum class LogLevel { debug, info, warning, error };

struct Config {
  std::string application_name;       // required; the series' app name
  Tags tags;                          // static tags, e.g. {{"region", "eu-north"}}
  int sample_rate_hz = 100;           // samples per second of CPU time, per thread
  std::string output_path;            // default "<application_name>.pyro" in the working directory
  int flush_interval_seconds = 10;    // one block per interval; must equal the file's resolution
  std::string server_address;         // e.g. "http://localhost:4040": also POST each block to /ingest
  // Allocation profiling (docs/memory.md): the mean number of allocated bytes between two sampled
  // allocations (a Poisson process over bytes, as in tcmalloc and Go), 1 .. 2^40; 0 switches it off for
  // the session. Only in a program whose implementation file defines PYROSCOPE_ALLOCATION_PROFILING
  // (see allocation_profiling_compiled()); the series are app.alloc_space, app.alloc_objects,
  // app.inuse_space and app.inuse_objects.
  size_t allocation_sample_bytes = 512 * 1024;
  // Opt-in: also sample every thread, running or blocked, 100 times a second of real time, into the
  // series "<application_name>.wall" (where threads wait, not only where they burn CPU). Blocked threads
  // are never signalled (docs/sampler.md, "Wall-clock time": how, what can still surface, the cost).
  bool wall_clock = false;
  // Opt-in (Linux >= 6.3): sample threads younger than the agent's thread scan (100 to 200 ms) with one
  // process-wide CPU-time timer, so thread-per-request servers and short parallel loops are counted
  // (1,000 threads of 20 ms: 98 % of their CPU time instead of ~25 %). Off by default because a thread
  // of the host that blocks SIGPROF while it burns CPU makes the kernel hand that timer's signal to
  // another thread, where it can interrupt a poll(), epoll_wait() or nanosleep() with EINTR
  // (docs/sampler.md, "Threads created after start()").
  bool short_lived_threads = false;
  // Called on the profiler's background threads (never inside the signal handler). It may call
  // is_running(), start() (refused while a session runs or stops) and fork(); stop() from it returns
  // invalid_argument.
  std::function<void(LogLevel, const std::string&)> log;
};

// Starts sampling every thread of the process (those that exist and those created later).
// Thread safety: any thread. Returns already_running if started, or while stop() is still finishing.
Status start(const Config& config);
// Stops sampling, writes the partial block and closes the file (and gives the push queue up to 3 s).
// Thread safety: any thread but the profiler's own; is_running(), start() and fork() on other threads
// do not wait for it to finish (is_running() is false from its start).
Status stop();
// Thread safety: any thread, including the log callback.
bool is_running();

// True if this program interposes the allocation functions: its implementation file defines
// PYROSCOPE_ALLOCATION_PROFILING and the build is not an AddressSanitizer, ThreadSanitizer or
// MemorySanitizer one (their runtimes own malloc), on Linux with the sampler. Otherwise false, and
// *why (if given) says which of these is missing. Thread safety: any thread.
bool allocation_profiling_compiled(std::string* why = nullptr);

// RAII form: starts in the constructor, stops in the destructor.
class Profiler {
 public:
  explicit Profiler(const Config& config) : status_(start(config)) {}
  ~Profiler() {
    if (status_.ok()) stop();
  }
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;
  const Status& status() const { return status_; }

 private:
  Status status_;
};

}  // namespace pyroscope

#endif  // PYROSCOPE_HPP_INCLUDED

