// [SECTION] Implementation: symbolizer (Linux) ====================================================
//
// Runs on the agent thread only, never in the handler. Modules come from dl_iterate_phdr (load bias
// and segments, so PIE/ASLR and dlopen are handled); each module's function symbols come from its ELF
// file: .symtab (static functions included, which dladdr cannot see) and .dynsym, or from the
// separate debug file found by build id (/usr/lib/debug/.build-id/xx/yyyy.debug) or by .gnu_debuglink
// (beside the file, in its .debug folder, under /usr/lib/debug; CRC-checked) when the file is
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
  // The separate debug file named by .gnu_debuglink, and the CRC-32 of its contents; "" if none.
  const std::string& debuglink() const { return debuglink_; }
  uint32_t debuglink_crc() const { return debuglink_crc_; }

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
  std::string debuglink_;
  uint32_t debuglink_crc_ = 0;
  std::vector<Function> functions_;

  void unmap() {
    if (owns_mapping_ && data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
    owns_mapping_ = false;
    has_symtab_ = false;
    functions_.clear();
    build_id_.clear();
    debuglink_.clear();
    debuglink_crc_ = 0;
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
      if (section.sh_type == SHT_PROGBITS && section_named(sections, count, eh, section, ".gnu_debuglink"))
        read_debuglink(section);
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

  bool section_named(const Elf64_Shdr* sections, uint64_t count, const Elf64_Ehdr* eh, const Elf64_Shdr& section,
                     const char* wanted) const {
    const uint64_t names_index = eh->e_shstrndx == SHN_XINDEX ? sections[0].sh_link : eh->e_shstrndx;
    if (names_index >= count) return false;
    const Elf64_Shdr& names = sections[names_index];
    const size_t length = std::strlen(wanted) + 1;
    if (section.sh_name >= names.sh_size || names.sh_size - section.sh_name < length) return false;
    if (!in_bounds(names.sh_offset + section.sh_name, length)) return false;
    return std::memcmp(data_ + names.sh_offset + section.sh_name, wanted, length) == 0;
  }

  // .gnu_debuglink: a file name (no directory), NUL, padding to 4 bytes, then the CRC-32 of the file.
  void read_debuglink(const Elf64_Shdr& section) {
    if (!in_bounds(section.sh_offset, section.sh_size) || section.sh_size < 8) return;
    const char* p = reinterpret_cast<const char*>(data_ + section.sh_offset);
    const size_t length = strnlen(p, size_t(section.sh_size));
    const size_t crc_at = (length + 4) & ~size_t(3);
    if (length == 0 || crc_at + 4 > section.sh_size) return;
    std::string name(p, length);
    if (name.find('/') != std::string::npos || name == "." || name == "..") return;  // a name, not a path
    debuglink_ = std::move(name);
    std::memcpy(&debuglink_crc_, p + crc_at, 4);  // in the file's byte order: little-endian on x86-64
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
  std::lock_guard<std::mutex> guard(sampler_loader_guard());
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

  // Rereads the loaded objects if the loader's counters changed (a dlopen or dlclose since the last
  // look). A module still loaded at the same place from the same file keeps its symbol index; the
  // address ranges of the others (unloaded, or replaced by another file at the same place) are added
  // to the list take_stale_ranges() hands out, so names cached for them can be dropped. So are the
  // ranges of newly loaded modules: an address there may have been named "[unknown]" while nothing
  // was loaded at it (a sample of an unloaded library), and that name must not outlive the newcomer.
  void refresh_if_changed() {
    const auto counters = sampler_loader_counters();
    if (counters.first == adds_ && counters.second == subs_) return;
    adds_ = counters.first;
    subs_ = counters.second;
    std::vector<Found> found;
    {
      std::lock_guard<std::mutex> guard(sampler_loader_guard());
      dl_iterate_phdr(add_module, &found);
    }
    std::vector<std::unique_ptr<ModuleState>> previous = std::move(module_state_);
    std::vector<Module> previous_ranges = std::move(ranges_);
    std::vector<bool> kept(previous.size(), false);
    module_state_.clear();
    ranges_.clear();
    const bool first_listing = previous.empty();
    for (Found& f : found) {
      if (f.state->memory_image == nullptr) stat_identity(f.state.get());
      // The same module as before: same file (and the same file contents on disk), same place.
      bool known = false;
      for (size_t i = 0; i < previous.size(); i++) {
        if (!kept[i] && previous[i] && same_module(*previous[i], *f.state)) {
          f.state = std::move(previous[i]);
          kept[i] = known = true;
          break;
        }
      }
      const size_t index = module_state_.size();
      for (Module& m : f.ranges) {
        m.index = index;
        ranges_.push_back(m);
        if (!known && !first_listing) stale_ranges_.emplace_back(m.start, m.end);
      }
      module_state_.push_back(std::move(f.state));
    }
    for (const Module& m : previous_ranges) {
      if (!kept[m.index]) stale_ranges_.emplace_back(m.start, m.end);
    }
    std::sort(ranges_.begin(), ranges_.end(), [](const Module& a, const Module& b) { return a.start < b.start; });
  }

  // The address ranges whose module went away or was replaced since the last call.
  std::vector<std::pair<uintptr_t, uintptr_t>> take_stale_ranges() { return std::move(stale_ranges_); }

 private:
  struct ModuleState {
    std::string path;        // file to read ("" for the vDSO, read from memory)
    std::string short_name;  // basename, for unresolved frames
    const uint8_t* memory_image = nullptr;
    uintptr_t bias = 0;
    // The file as it was when the module was listed: a file replaced on disk and loaded again at the
    // same place is another module.
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    int64_t modified_ns = 0;
    std::unique_ptr<ElfFunctions> functions;  // loaded on first lookup
  };
  struct Module {
    uintptr_t start, end;
    uintptr_t bias;
    size_t index;  // into module_state_
  };
  struct Found {
    std::unique_ptr<ModuleState> state;
    std::vector<Module> ranges;
  };
  std::vector<Module> ranges_;  // sorted by start
  std::vector<std::unique_ptr<ModuleState>> module_state_;
  std::vector<std::pair<uintptr_t, uintptr_t>> stale_ranges_;
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

  static void stat_identity(ModuleState* state) {
    struct stat st;
    if (::stat(state->path.c_str(), &st) != 0) return;
    state->device = st.st_dev;
    state->inode = st.st_ino;
    state->size = st.st_size;
    state->modified_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  static bool same_module(const ModuleState& a, const ModuleState& b) {
    return a.path == b.path && a.memory_image == b.memory_image && a.bias == b.bias && a.device == b.device &&
           a.inode == b.inode && a.size == b.size && a.modified_ns == b.modified_ns;
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
    if (!state.functions->has_symtab() && !state.functions->debuglink().empty()) {
      // Or the one .gnu_debuglink names, where gdb looks for it: beside the file, in its .debug
      // folder, and under /usr/lib/debug; only a file whose CRC-32 matches is the right one.
      std::string file = state.path;
      if (file == "/proc/self/exe") {
        char link[4096];
        const ssize_t n = readlink("/proc/self/exe", link, sizeof link - 1);
        file = n > 0 ? std::string(link, static_cast<size_t>(n)) : std::string();
      }
      const size_t slash = file.rfind('/');
      if (slash != std::string::npos) {
        const std::string dir = file.substr(0, slash + 1);
        const std::string& name = state.functions->debuglink();
        for (const std::string& candidate : {dir + name, dir + ".debug/" + name, "/usr/lib/debug" + dir + name}) {
          if (candidate == file || access(candidate.c_str(), R_OK) != 0) continue;
          if (!file_crc32_is(candidate, state.functions->debuglink_crc())) continue;
          std::unique_ptr<ElfFunctions> debug(new ElfFunctions);
          if (debug->load_file(candidate) && debug->has_symtab()) {
            state.functions = std::move(debug);
            break;
          }
        }
      }
    }
    return *state.functions;
  }

  static bool file_crc32_is(const std::string& path, uint32_t expected) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st;
    bool same = false;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
      void* mapping = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
      if (mapping != MAP_FAILED) {
        same = crc32(mapping, static_cast<size_t>(st.st_size)) == expected;
        munmap(mapping, static_cast<size_t>(st.st_size));
      }
    }
    close(fd);
    return same;
  }

  // dl_iterate_phdr callback (under the loader's lock): records the object; no file I/O here.
  static int add_module(dl_phdr_info* info, size_t, void* arg) {
    std::vector<Found>* found = static_cast<std::vector<Found>*>(arg);
    Found f;
    f.state.reset(new ModuleState);
    ModuleState* state = f.state.get();
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
    state->bias = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; i++) {
      const ElfW(Phdr)& ph = info->dlpi_phdr[i];
      if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
      const uintptr_t start = info->dlpi_addr + ph.p_vaddr;
      f.ranges.push_back(Module{start, start + ph.p_memsz, info->dlpi_addr, 0});
    }
    found->push_back(std::move(f));
    return 0;
  }
};

}  // namespace detail
}  // namespace pyroscope

