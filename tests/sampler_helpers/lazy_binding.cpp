// Linked with -Wl,-z,lazy (tests/CMakeLists.txt): each PLT slot of this program is bound by the dynamic
// linker on its first call. A signal handler that makes such a first call runs the dynamic linker
// inside the handler (rule 3 of the sampler's handler: no lazy loader work). This program takes one
// sample with every PLT slot recorded just before and just after it, and fails if the sample bound one.
// Run by tests/test_sampler_safety.cpp. x86-64 only (R_X86_64_JUMP_SLOT relocations).
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct PltSlot {
  const char* name;
  const uintptr_t* address;
};

uintptr_t g_program_start = 0, g_program_end = 0;  // the program's own mapping (its PLT is in it)

// The program's R_X86_64_JUMP_SLOT relocations: the GOT entries its PLT calls go through.
std::vector<PltSlot> plt_slots() {
  struct Found {
    std::vector<PltSlot> slots;
  } found;
  dl_iterate_phdr([](dl_phdr_info* info, size_t, void* arg) {
    Found* out = static_cast<Found*>(arg);
    const ElfW(Dyn)* dynamic = nullptr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
      if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
        dynamic = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    }
    if (dynamic == nullptr) return 1;
    for (int i = 0; i < info->dlpi_phnum; i++) {
      const ElfW(Phdr)& ph = info->dlpi_phdr[i];
      if (ph.p_type != PT_LOAD) continue;
      const uintptr_t start = info->dlpi_addr + ph.p_vaddr, end = start + ph.p_memsz;
      if (g_program_start == 0 || start < g_program_start) g_program_start = start;
      if (end > g_program_end) g_program_end = end;
    }
    uintptr_t jmprel = 0, symtab = 0, strtab = 0;
    size_t pltrelsz = 0;
    for (const ElfW(Dyn)* d = dynamic; d->d_tag != DT_NULL; d++) {
      if (d->d_tag == DT_JMPREL) jmprel = d->d_un.d_ptr;
      if (d->d_tag == DT_PLTRELSZ) pltrelsz = d->d_un.d_val;
      if (d->d_tag == DT_SYMTAB) symtab = d->d_un.d_ptr;
      if (d->d_tag == DT_STRTAB) strtab = d->d_un.d_ptr;
    }
    // The loader relocates these entries in place on x86-64; an unrelocated one is a file address.
    auto absolute = [&](uintptr_t p) { return p < info->dlpi_addr ? p + info->dlpi_addr : p; };
    jmprel = absolute(jmprel);
    symtab = absolute(symtab);
    strtab = absolute(strtab);
    const ElfW(Rela)* relocations = reinterpret_cast<const ElfW(Rela)*>(jmprel);
    for (size_t i = 0; i < pltrelsz / sizeof(ElfW(Rela)); i++) {
      if (ELF64_R_TYPE(relocations[i].r_info) != R_X86_64_JUMP_SLOT) continue;
      const ElfW(Sym)& symbol = reinterpret_cast<const ElfW(Sym)*>(symtab)[ELF64_R_SYM(relocations[i].r_info)];
      out->slots.push_back(PltSlot{reinterpret_cast<const char*>(strtab + symbol.st_name),
                                   reinterpret_cast<const uintptr_t*>(info->dlpi_addr + relocations[i].r_offset)});
    }
    return 1;  // the first entry is the program itself
  }, &found);
  return found.slots;
}

// Reads a small /proc file whole; empty if it cannot.
std::string read_proc_file(const char* path) {
  char buffer[4096];
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  const ssize_t n = read(fd, buffer, sizeof buffer - 1);
  close(fd);
  return n > 0 ? std::string(buffer, size_t(n)) : std::string();
}

// The value of a "Name:\tvalue" line of a /proc status file; empty if there is none.
std::string status_field(const std::string& status, const char* name) {
  const std::string key = std::string("\n") + name + ":";
  const size_t at = status.find(key);
  if (at == std::string::npos) return {};
  const size_t value = status.find_first_not_of(" \t", at + key.size());
  return value == std::string::npos ? std::string() : status.substr(value, status.find('\n', value) - value);
}

// What the other threads of this process have done, as far as the scheduler knows: each one's id, how
// many times it has left a CPU (context switches, voluntary and not), and whether it is on one now. Two
// equal readings with nobody running in either mean no other thread ran in between: one that did (the
// profiler's agent making its first call to poll, say) left a CPU at least once since. Such a thread
// binds slots of its own between the two snapshots, and the handler would be blamed for them.
std::string other_threads_activity() {
  std::string activity;
  const long self = syscall(SYS_gettid);
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return "unreadable";
  while (const dirent* entry = readdir(tasks)) {
    if (entry->d_name[0] == '.' || std::atol(entry->d_name) == self) continue;
    const std::string status = read_proc_file((std::string("/proc/self/task/") + entry->d_name + "/status").c_str());
    const std::string state = status_field(status, "State");
    const std::string voluntary = status_field(status, "voluntary_ctxt_switches");
    const std::string involuntary = status_field(status, "nonvoluntary_ctxt_switches");
    if (state.empty() || voluntary.empty() || involuntary.empty()) {
      activity += "unreadable";  // a thread that just ended: not a clean attempt
      continue;
    }
    if (state[0] == 'R') activity += "running";
    activity += std::string(entry->d_name) + ":" + voluntary + "/" + involuntary + ";";
  }
  closedir(tasks);
  return activity;
}

// Spins without calling anything: no PLT slot is touched by the work itself.
__attribute__((noinline)) void spin(long iterations) {
  for (long i = 0; i < iterations; i++) asm volatile("" ::: "memory");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::remove(argv[1]);
  const std::vector<PltSlot> slots = plt_slots();
  std::vector<uintptr_t> before(slots.size()), after(slots.size());
  // SIGPROF stays blocked on this thread until the moment of the sample (the profiler's own threads
  // block it too): no handler runs before the first snapshot.
  sigset_t prof, pending;
  sigemptyset(&prof);
  sigaddset(&prof, SIGPROF);
  pthread_sigmask(SIG_BLOCK, &prof, nullptr);
  sigemptyset(&pending);
  sigpending(&pending);
  pyroscope::Config config;
  config.application_name = "lazy";
  config.output_path = argv[1];
  config.sample_rate_hz = 250;
  config.flush_interval_seconds = 3600;
  if (!pyroscope::start(config).ok()) return 3;
  int unbound_at_start = 0, bound_by_sample = 0, attempts = 0;
  for (;;) {
    if (++attempts > 200) {
      std::fprintf(stderr, "no attempt in 200 without another thread running meanwhile\n");
      return 4;
    }
    // Wait for this thread's timer to expire: the signal is then pending (blocked).
    do {
      spin(200000);
      sigpending(&pending);
    } while (sigismember(&pending, SIGPROF) != 1);
    // The handler may wake the agent (to build a table); holding the loader guard keeps the agent
    // from doing anything that could bind a slot of its own before the second snapshot.
    pyroscope::detail::sampler_loader_guard().lock();
    const pyroscope::detail::SamplerStats stats_before = pyroscope::detail::sampler_stats();
    const std::string others_before = other_threads_activity();
    for (size_t i = 0; i < slots.size(); i++) before[i] = *slots[i].address;
    pthread_sigmask(SIG_UNBLOCK, &prof, nullptr);  // the handler runs as this call returns
    for (size_t i = 0; i < slots.size(); i++) after[i] = *slots[i].address;
    pthread_sigmask(SIG_BLOCK, &prof, nullptr);
    const std::string others_after = other_threads_activity();
    const pyroscope::detail::SamplerStats stats_after = pyroscope::detail::sampler_stats();
    pyroscope::detail::sampler_loader_guard().unlock();
    if (stats_after.samples == stats_before.samples) continue;  // no sample taken: again
    // Another thread ran between the snapshots (the agent scanning threads, say), or might have: a slot
    // bound meanwhile may be its own.
    if (others_before != others_after || others_before.find("running") != std::string::npos ||
        others_before.find("unreadable") != std::string::npos)
      continue;
    // A slot not bound yet points back into the program's own PLT.
    for (size_t i = 0; i < slots.size(); i++) unbound_at_start += before[i] >= g_program_start && before[i] < g_program_end;
    for (size_t i = 0; i < slots.size(); i++) {
      if (before[i] != after[i]) {
        std::fprintf(stderr, "the handler bound %s lazily\n", slots[i].name);
        bound_by_sample++;
      }
    }
    break;
  }
  pthread_sigmask(SIG_UNBLOCK, &prof, nullptr);
  pyroscope::stop();
  std::fprintf(stderr, "%zu PLT slots, %d not bound yet before the sample, %d bound by it (attempt %d)\n", slots.size(),
               unbound_at_start, bound_by_sample, attempts);
  if (bound_by_sample != 0) return 1;
  return unbound_at_start > 0 ? 0 : 77;  // 77: everything was bound already (not a lazy link): nothing shown
}
