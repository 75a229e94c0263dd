// libpyroscope-preload.so: profiles a program that was not built with pyroscope.hpp.
//
//   LD_PRELOAD=/path/to/libpyroscope-preload.so PYROSCOPE_OUTPUT=app.pyro ./app     (or: pyro record -- ./app)
//
// The library starts the sampler from its constructor, before the program's main(), and stops it
// (writing the last, partial block) from its destructor at exit(). Configured by environment variables
// (docs/record.md):
//   PYROSCOPE_APPLICATION_NAME  the series' app name (default: the program's name, e.g. "xz")
//   PYROSCOPE_OUTPUT            the .pyro file; "%p" is replaced by the process id, "%n" by the program's
//                               name, "%%" by "%" (default: "<app>.pyro")
//   PYROSCOPE_TAGS              static tags, "k=v,k2=v2"
//   PYROSCOPE_SERVER_ADDRESS    also push each block to a Pyroscope server (http://host:port)
//   PYROSCOPE_SAMPLE_RATE       samples per second of CPU time (default 100)
//   PYROSCOPE_WALL_CLOCK        "1": also sample wall-clock time, running or blocked, into the series
//                               <app>.wall (Config::wall_clock; pyro record --wall); "0" (default): not
//   PYROSCOPE_SHORT_LIVED_THREADS  "1": also sample threads younger than the agent's scan with the
//                               process-wide timer (Config::short_lived_threads; pyro record
//                               --short-threads); "0" (default): not
//   PYROSCOPE_CHILDREN          "0": profile only the first process that loads the library, not the
//                               programs it executes (default "1": they are profiled too)
//   PYROSCOPE_LOG_LEVEL         debug, info, warning (default), error or silent; messages go to stderr
//   PYROSCOPE_PRELOAD_DISABLE   "1": load, do nothing
//   PYROSCOPE_ALLOCATION_SAMPLE_BYTES  libpyroscope-preload-heap.so only (pyro record --heap): the mean
//                               bytes between sampled allocations (default 524288; 0: no allocations)
//
// libpyroscope-preload-heap.so is this file built with PYROSCOPE_ALLOCATION_PROFILING: it interposes
// malloc, free, operator new, ... as well (docs/memory.md). A separate library, so that plain
// `pyro record` never replaces a program's allocator functions.
//
// The library never changes what the program does: a bad setting is one line on stderr and no
// profiling; it does not exit, abort or throw. A program that links pyroscope.hpp itself and calls
// pyroscope::start() takes over: its start() calls pyroscope_preload_yield() (found with dlsym), which
// stops this library's sampler first, so the process is never profiled twice.
#define PYROSCOPE_IMPLEMENTATION
#define PYROSCOPE_PRELOAD_LIBRARY 1
#if defined(PYROSCOPE_PRELOAD_HEAP)
#define PYROSCOPE_ALLOCATION_PROFILING 1
#endif
#include "pyroscope.hpp"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

enum class Verbosity { debug, info, warning, error, silent };

// Decided once in the constructor; read by the log callback on the profiler's thread.
std::atomic<int> g_verbosity{int(Verbosity::warning)};
std::atomic<bool> g_started{false};

const char* program_name() {
  const char* name = program_invocation_short_name;  // glibc: argv[0] without its directory
  return name && *name ? name : "program";
}

void say(Verbosity level, const std::string& message) {
  if (int(level) < g_verbosity.load(std::memory_order_relaxed)) return;
  // One write per line, so lines of parallel processes do not interleave mid-line.
  std::string line = "pyroscope-preload[" + std::to_string(::getpid()) + " " + program_name() + "]: " + message + "\n";
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value && *value ? value : nullptr;
}

bool parse_verbosity(const char* text, Verbosity* out) {
  static const struct {
    const char* name;
    Verbosity level;
  } levels[] = {{"debug", Verbosity::debug}, {"info", Verbosity::info}, {"warning", Verbosity::warning},
                {"error", Verbosity::error}, {"silent", Verbosity::silent}};
  for (const auto& l : levels)
    if (std::strcmp(text, l.name) == 0) {
      *out = l.level;
      return true;
    }
  return false;
}

// "%p" -> pid, "%n" -> program name, "%%" -> "%"; any other "%" is an error (a typo would otherwise
// make every process of a build write to one file).
bool expand_output(const std::string& pattern, std::string* out, std::string* error) {
  out->clear();
  for (size_t i = 0; i < pattern.size(); i++) {
    if (pattern[i] != '%') {
      out->push_back(pattern[i]);
      continue;
    }
    const char next = i + 1 < pattern.size() ? pattern[i + 1] : '\0';
    if (next == 'p') *out += std::to_string(::getpid());
    else if (next == 'n') *out += program_name();
    else if (next == '%') out->push_back('%');
    else {
      *error = "PYROSCOPE_OUTPUT '" + pattern + "': '%' must be followed by p, n or % (at offset " + std::to_string(i) + ")";
      return false;
    }
    i++;
  }
  return true;
}

bool parse_tags(const std::string& text, pyroscope::Tags* tags, std::string* error) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(start, comma - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      *error = "PYROSCOPE_TAGS '" + text + "': '" + item + "' is not key=value";
      return false;
    }
    tags->push_back({item.substr(0, eq), item.substr(eq + 1)});
    start = comma + 1;
  }
  return true;
}

bool parse_rate(const char* text, int* rate, std::string* error) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 1 || v > 1000) {
    *error = std::string("PYROSCOPE_SAMPLE_RATE '") + text + "': expected a whole number of samples per second, 1 to 1000";
    return false;
  }
  *rate = int(v);
  return true;
}

// "1" or "0", as examples/rideshare reads the same variable; anything else is a mistake worth naming
// (a "yes" or "true" silently read as off would give a profile without the series the user asked for).
bool parse_switch(const char* name, const char* text, const char* meaning, bool* on, std::string* error) {
  if (std::strcmp(text, "1") == 0 || std::strcmp(text, "0") == 0) {
    *on = text[0] == '1';
    return true;
  }
  *error = std::string(name) + " '" + text + "': expected 1 (" + meaning + ") or 0";
  return false;
}

bool parse_sample_bytes(const char* text, size_t* bytes, std::string* error) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v > (1ull << 40)) {
    *error = std::string("PYROSCOPE_ALLOCATION_SAMPLE_BYTES '") + text +
             "': expected the mean bytes between sampled allocations, 0 to 2^40";
    return false;
  }
  *bytes = size_t(v);
  return true;
}

// Whether this process is one the user asked to profile. With PYROSCOPE_CHILDREN=0 the first process
// records its pid in PYROSCOPE_RECORD_PID (pyro record sets it before exec), and its descendants,
// which inherit the variable and the preload, stay quiet.
bool wanted_here() {
  const char* children = env("PYROSCOPE_CHILDREN");
  if (!children || std::strcmp(children, "0") != 0) return true;
  const std::string self = std::to_string(::getpid());
  if (const char* root = env("PYROSCOPE_RECORD_PID")) return self == root;
  ::setenv("PYROSCOPE_RECORD_PID", self.c_str(), 1);
  return true;
}

// At exit() the last, partial block is written. A process that ends with _exit() or a fatal signal
// loses the samples since its last full block, as with gperftools.
void preload_stop() {
  if (!g_started.exchange(false)) return;
  const pyroscope::Status st = pyroscope::stop();
  if (!st.ok()) say(Verbosity::error, "stop: " + st.to_string());
}

__attribute__((constructor)) void preload_start() {
  Verbosity verbosity = Verbosity::warning;
  if (const char* level = env("PYROSCOPE_LOG_LEVEL")) {
    if (!parse_verbosity(level, &verbosity)) {
      say(Verbosity::error, std::string("PYROSCOPE_LOG_LEVEL '") + level + "': expected debug, info, warning, error or silent");
      return;
    }
  }
  g_verbosity.store(int(verbosity));
  if (const char* disable = env("PYROSCOPE_PRELOAD_DISABLE"); disable && std::strcmp(disable, "0") != 0) return;
  if (!wanted_here()) return;

  pyroscope::Config config;
  std::string error;
  const char* app = env("PYROSCOPE_APPLICATION_NAME");
  config.application_name = app ? app : program_name();
  if (const char* output = env("PYROSCOPE_OUTPUT")) {
    if (!expand_output(output, &config.output_path, &error)) {
      say(Verbosity::error, error + "; not profiling");
      return;
    }
  }
  if (const char* tags = env("PYROSCOPE_TAGS")) {
    if (!parse_tags(tags, &config.tags, &error)) {
      say(Verbosity::error, error + "; not profiling");
      return;
    }
  }
  if (const char* server = env("PYROSCOPE_SERVER_ADDRESS")) config.server_address = server;
  if (const char* rate = env("PYROSCOPE_SAMPLE_RATE")) {
    if (!parse_rate(rate, &config.sample_rate_hz, &error)) {
      say(Verbosity::error, error + "; not profiling");
      return;
    }
  }
  if (const char* wall = env("PYROSCOPE_WALL_CLOCK")) {
    if (!parse_switch("PYROSCOPE_WALL_CLOCK", wall, "sample wall-clock time too", &config.wall_clock, &error)) {
      say(Verbosity::error, error + "; not profiling");
      return;
    }
  }
  if (const char* young = env("PYROSCOPE_SHORT_LIVED_THREADS")) {
    if (!parse_switch("PYROSCOPE_SHORT_LIVED_THREADS", young, "sample threads shorter than a thread scan too",
                      &config.short_lived_threads, &error)) {
      say(Verbosity::error, error + "; not profiling");
      return;
    }
  }
#if defined(PYROSCOPE_PRELOAD_HEAP)
  config.allocation_sample_bytes = 512 * 1024;
#else
  config.allocation_sample_bytes = 0;  // this library does not interpose the allocation functions
#endif
  if (const char* bytes = env("PYROSCOPE_ALLOCATION_SAMPLE_BYTES")) {
    if (!parse_sample_bytes(bytes, &config.allocation_sample_bytes, &error)) {
      say(Verbosity::error, error + "; not profiling");
      return;
    }
#if !defined(PYROSCOPE_PRELOAD_HEAP)
    if (config.allocation_sample_bytes != 0)
      say(Verbosity::warning, "PYROSCOPE_ALLOCATION_SAMPLE_BYTES is for libpyroscope-preload-heap.so (pyro record "
                              "--heap); this library samples CPU time only");
    config.allocation_sample_bytes = 0;
#endif
  }
  config.log = [](pyroscope::LogLevel level, const std::string& message) {
    const Verbosity v = level == pyroscope::LogLevel::debug  ? Verbosity::debug
                        : level == pyroscope::LogLevel::info ? Verbosity::info
                        : level == pyroscope::LogLevel::warning ? Verbosity::warning
                                                                : Verbosity::error;
    say(v, message);
  };
  const pyroscope::Status st = pyroscope::start(config);
  if (!st.ok()) {
    say(Verbosity::error, "not profiling: " + st.to_string());
    return;
  }
  g_started.store(true);
  // Registered after start(), so it runs at exit() before the destructors of anything start() made.
  std::atexit(preload_stop);
  // A forked child (a shell's subshell) does not inherit the running profiler, so its exit() has
  // nothing to stop. The handler only stores to an atomic: it must not allocate (docs/sampler.md).
  pthread_atfork(nullptr, nullptr, [] { g_started.store(false, std::memory_order_relaxed); });
  say(Verbosity::info, "profiling as " + config.application_name + " into " +
                           (config.output_path.empty() ? config.application_name + ".pyro" : config.output_path));
}


}  // namespace

// Called by pyroscope::start() of a program that links the header itself: that start() owns the
// process from then on. Returns 1 if this library was profiling (and has stopped), else 0.
extern "C" __attribute__((visibility("default"))) int pyroscope_preload_yield(void) {
  const bool was = g_started.load();
  if (was) say(Verbosity::info, "the program starts pyroscope itself: stopping the preloaded profiler");
  preload_stop();
  return was ? 1 : 0;
}
