/* pyroscope.hpp — continuous CPU profiling for C++ programs, in one header.

   Samples every thread of the process ~100 times per second of CPU time, folds the stacks into trees
   per 10 s block and per tag set, and appends them to a crash-safe, memory-mappable segment-tree file
   (.pyro) that the viewer (viewer/, native and WebAssembly) and the query API read back.

   USAGE
     Do this in *one* C++ file (or add pyroscope.cpp to your build):
         #define PYROSCOPE_IMPLEMENTATION
         #include "pyroscope.hpp"
     Every other file just includes "pyroscope.hpp".

   QUICK START
         #include "pyroscope.hpp"
         int main() {
           pyroscope::Config config;
           config.application_name = "ride-sharing-app";
           config.tags = {{"region", "eu-north"}};
           pyroscope::Profiler profiler(config);           // writes ride-sharing-app.pyro
           if (!profiler.status().ok()) std::fprintf(stderr, "%s\n", profiler.status().to_string().c_str());
           { pyroscope::tag_scope vehicle{"vehicle", "car"}; order_car(3); }
           pyroscope::tag_wrapper({{"vehicle", "bike"}}, [] { order_bike(1); });
         }                                                 // stops and flushes the partial block

     Reading a file back:
         pyroscope::Dataset data;
         data.add_file("ride-sharing-app.pyro");
         pyroscope::QueryResult r;
         data.query("ride-sharing-app{vehicle=\"car\"}", from, until, &r);
         std::string folded = r.tree.to_folded();

   SECTIONS (each marked in the code by a "// [SECTION] name" banner)
     [SECTION] Configuration and platform detection
     [SECTION] Status codes
     [SECTION] Core types: labels, series keys, byte spans
     [SECTION] Symbol table (a trie on disk)
     [SECTION] Folded-stack tree
     [SECTION] Diff tree
     [SECTION] File format: writer
     [SECTION] File format: reader, dataset and query
     [SECTION] Tag scopes
     [SECTION] Profiler API
     [SECTION] Implementation: helpers (varint, crc32, regex)
     [SECTION] Implementation: symbol table
     [SECTION] Implementation: tree and folded text
     [SECTION] Implementation: diff tree
     [SECTION] Implementation: selectors
     [SECTION] Implementation: file reader and query
     [SECTION] Implementation: file writer
     [SECTION] Implementation: sampler backend (Linux)
     [SECTION] License

   CONFIGURATION SWITCHES (define before including)
     PYROSCOPE_IMPLEMENTATION   compile the implementation into this translation unit (exactly one)
     PYROSCOPE_NO_SAMPLER       leave the sampler out (read/write/query only); automatic under Emscripten
     PYROSCOPE_ASSERT(c)        replace the assert used for programmer errors (default: assert)

   THREAD SAFETY (each declaration says more)
     Tree, SymbolTable, Writer, File, Dataset: one thread at a time per object; distinct objects are
     independent. const member functions of File and Dataset may run concurrently.
     tag_scope / tag_wrapper: any thread, lock-free after a tag set's first use.
     start / stop: any thread, serialized internally.
*/
#ifndef PYROSCOPE_HPP_INCLUDED
#define PYROSCOPE_HPP_INCLUDED

// [SECTION] Configuration and platform detection ==================================================

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__EMSCRIPTEN__)
#define PYROSCOPE_PLATFORM_EMSCRIPTEN 1
#ifndef PYROSCOPE_NO_SAMPLER
#define PYROSCOPE_NO_SAMPLER 1
#endif
#elif defined(__linux__)
#define PYROSCOPE_PLATFORM_LINUX 1
#elif defined(__APPLE__) || defined(_WIN32) || defined(__unix__)
// Reading, writing and querying files works everywhere; the sampler is Linux-only for now.
#define PYROSCOPE_PLATFORM_OTHER 1
#ifndef PYROSCOPE_NO_SAMPLER
#define PYROSCOPE_NO_SAMPLER 1
#endif
#else
#error "pyroscope.hpp: unknown platform"
#endif

#ifndef PYROSCOPE_ASSERT
#include <cassert>
#define PYROSCOPE_ASSERT(c) assert(c)
#endif

#define PYROSCOPE_VERSION_MAJOR 0
#define PYROSCOPE_VERSION_MINOR 1
#define PYROSCOPE_VERSION_PATCH 0
#define PYROSCOPE_VERSION_STRING "0.1.0"

namespace pyroscope {

// [SECTION] Status codes ==========================================================================

// One table: the enum, its names and its descriptions all come from here.
#define PYROSCOPE_STATUS_CODES(X)                                          \
  X(ok, "ok")                                                             \
  X(invalid_argument, "invalid argument")                                 \
  X(parse_error, "parse error")                                           \
  X(io_error, "I/O error")                                                \
  X(corrupt_file, "corrupt file")                                         \
  X(unsupported_version, "unsupported file format version")               \
  X(not_found, "not found")                                               \
  X(out_of_order, "block is not after the series' last block")            \
  X(unsupported, "not supported on this platform")                        \
  X(already_running, "profiler already running")                          \
  X(not_running, "profiler not running")

enum class StatusCode : int {
#define PYROSCOPE_X(name, text) name,
  PYROSCOPE_STATUS_CODES(PYROSCOPE_X)
#undef PYROSCOPE_X
};

// Returns a static string such as "corrupt file". Thread safety: any thread.
const char* status_string(StatusCode code);

// Result of every fallible operation. Errors carry a message that names the problem
// (file, offset, line number), e.g. "line 17: count 'x12' is not an integer".
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  bool ok() const { return code_ == StatusCode::ok; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;  // "corrupt file: record at offset 4096: checksum mismatch"

 private:
  StatusCode code_ = StatusCode::ok;
  std::string message_;
};

// [SECTION] Core types: labels, series keys, byte spans =========================================

struct Tag {
  std::string key;
  std::string value;
  bool operator==(const Tag& o) const { return key == o.key && value == o.value; }
  bool operator<(const Tag& o) const { return key < o.key || (key == o.key && value < o.value); }
};
using Tags = std::vector<Tag>;

// A series is an application name plus a set of tags: Pyroscope's `app.cpu{region=eu-north}`.
// Tags are kept sorted by key, with unique keys (the last value given for a key wins).
struct SeriesKey {
  std::string app;
  Tags tags;

  SeriesKey() = default;
  SeriesKey(std::string app_name, Tags tag_list);
  std::string to_string() const;  // app{k1="v1",k2="v2"}, the selector form that matches exactly this
  // Parses the to_string() form back (used by the file format and the command line).
  static Status parse(std::string_view text, SeriesKey* out);
  bool operator==(const SeriesKey& o) const { return app == o.app && tags == o.tags; }
  bool operator<(const SeriesKey& o) const { return app < o.app || (app == o.app && tags < o.tags); }
};

// Time is cut into blocks of `resolution_seconds` (10 s). Timestamps are unix seconds.
constexpr int64_t kDefaultResolutionSeconds = 10;

// A read-only run of bytes: an mmap'd file natively, a downloaded ArrayBuffer in the browser.
struct ByteSpan {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// [SECTION] Symbol table (a trie on disk) =========================================================

// Function names ↔ dense ids. In memory a hash table; on disk a radix trie, so names that share a
// prefix (`std::vector<...>::`, `app::net::`) store it once.
// Thread safety: one thread at a time.
class SymbolTable {
 public:
  static constexpr uint32_t kNone = 0xffffffffu;

  uint32_t intern(std::string_view name);          // id of name, adding it if new
  uint32_t find(std::string_view name) const;      // kNone if absent
  std::string_view name(uint32_t id) const;        // id must be < size()
  uint32_t size() const { return static_cast<uint32_t>(names_.size()); }

  // Appends the trie encoding of the names with ids [first_id, size()) to out.
  void encode_trie(uint32_t first_id, std::string* out) const;
  // Decodes a trie written by encode_trie and interns its names; the ids in the encoding must equal
  // the ids they receive here (size() before the call == first id in the encoding).
  Status decode_trie(ByteSpan bytes);

 private:
  struct Hash {
    size_t operator()(std::string_view s) const;
  };
  std::vector<std::unique_ptr<char[]>> storage_;  // stable bytes behind the string_views
  std::vector<std::string_view> names_;
  std::vector<std::pair<std::string_view, uint32_t>> slots_;  // open addressing, power of two
  size_t used_ = 0;
  char* chunk_ = nullptr;
  size_t chunk_left_ = 0;
  std::string_view store(std::string_view name);
  void grow();
};

// [SECTION] Folded-stack tree =====================================================================

namespace detail {
struct DecodedTree;
}  // namespace detail

// A call tree: node = (function, self samples, total samples, children). Node 0 is the root
// (symbol kNone); its total is the number of samples in the tree. Stored exactly: no "other" node.
// Thread safety: one thread at a time; const functions may run concurrently with each other.
class Tree {
 public:
  static constexpr uint32_t kRoot = 0;
  static constexpr uint32_t kNoNode = 0xffffffffu;

  Tree();  // creates its own symbol table
  explicit Tree(std::shared_ptr<SymbolTable> symbols);  // null: a table of its own

  // Stack frames are root first, leaf last.
  void insert(const std::vector<std::string_view>& frames, uint64_t count);
  void insert_ids(const uint32_t* symbol_ids, size_t n, uint64_t count);
  // Adds every sample of other; symbols are remapped by name when the tables differ.
  void merge(const Tree& other);
  // Copy keeping only nodes whose total is at least min_share of the root's total. Parents keep their
  // totals, so shares stay true; the dropped samples are simply not drawn.
  Tree pruned(double min_share) const;

  uint32_t node_count() const { return static_cast<uint32_t>(nodes_.size()); }
  uint64_t total() const { return nodes_[kRoot].total; }
  uint32_t symbol(uint32_t node) const { return nodes_[node].symbol; }
  std::string_view name(uint32_t node) const;  // "" for the root
  uint32_t parent(uint32_t node) const { return nodes_[node].parent; }
  uint64_t self(uint32_t node) const { return nodes_[node].self; }
  uint64_t node_total(uint32_t node) const { return nodes_[node].total; }
  uint32_t child(uint32_t node, uint32_t symbol_id) const;  // kNoNode if absent
  uint32_t find_path(const std::vector<std::string_view>& frames) const;  // kNoNode if absent
  // Children of every node sorted by function name: the stable order for drawing and export.
  // children_offsets has node_count()+1 entries; node n's children are
  // children[children_offsets[n] .. children_offsets[n+1]).
  void sorted_children(std::vector<uint32_t>* children_offsets, std::vector<uint32_t>* children) const;

  const SymbolTable& symbols() const { return *symbols_; }
  SymbolTable& symbols() { return *symbols_; }
  const std::shared_ptr<SymbolTable>& shared_symbols() const { return symbols_; }

  // Folded text: one "a;b;c 12" line per node with self samples, in sorted order, '\n' endings.
  std::string to_folded() const;
  // Adds the stacks of folded text (perf/FlameGraph stackcollapse, py-spy, Pyroscope format=folded).
  // Accepts CRLF, trailing whitespace, empty lines and frames containing spaces. A malformed line is
  // an error naming its line number and nothing of the text is added.
  Status add_folded(std::string_view text);
  static Status from_folded(std::string_view text, Tree* out);

  // Compact binary form used by the file format (symbol ids refer to symbols()).
  void encode(std::string* out) const;
  // Decodes into *this (which must be empty) with symbol ids checked against symbols().size().
  Status decode(ByteSpan bytes);
  // Decodes and adds into *this in one pass (the query's merge); symbol ids are remapped through
  // remap when it is non-null (remap[file id] = id in symbols()).
  Status merge_encoded(ByteSpan bytes, const std::vector<uint32_t>* remap);

  void clear();

 private:
  struct Node {
    uint32_t symbol;
    uint32_t parent;
    uint64_t self;
    uint64_t total;
  };
  std::shared_ptr<SymbolTable> symbols_;
  std::vector<Node> nodes_;
  // (parent << 32 | symbol) -> node, open addressing; kNoNode marks an empty slot.
  std::vector<std::pair<uint64_t, uint32_t>> index_;
  uint32_t add_child(uint32_t parent, uint32_t symbol);
  void grow_index();
  Status add_decoded(const detail::DecodedTree& decoded, const std::vector<uint32_t>* remap);
  friend class DiffTree;
  friend class Dataset;
  friend class Writer;
};

// [SECTION] Diff tree =============================================================================

// The union of two trees' shapes with both sides' values per node, for the diff flame graph.
class DiffTree {
 public:
  static DiffTree compute(const Tree& left, const Tree& right);

  const Tree& shape() const { return shape_; }  // node ids, names and parents (values: left+right)
  uint32_t node_count() const { return shape_.node_count(); }
  uint64_t left_self(uint32_t n) const { return left_[n].first; }
  uint64_t left_total(uint32_t n) const { return left_[n].second; }
  uint64_t right_self(uint32_t n) const { return right_[n].first; }
  uint64_t right_total(uint32_t n) const { return right_[n].second; }
  // Change in share of the whole, as Pyroscope colours it: (right% - left%) / left% * 100, clamped to
  // [-100, 100]; +100 for a node only on the right.
  double change_percent(uint32_t n) const;

 private:
  Tree shape_;
  std::vector<std::pair<uint64_t, uint64_t>> left_, right_;  // (self, total)
};

// [SECTION] File format: writer ===================================================================

struct WriterOptions {
  int64_t resolution_seconds = kDefaultResolutionSeconds;  // only used when creating a file
  uint32_t multiplier = 10;                                // m: level k node covers m^k blocks
  bool fsync_each_block = false;                           // also survive power loss, at a cost
};

// Appends 10 s blocks to a .pyro file. Creates the file (atomically: it appears with a complete
// header) or opens an existing one for appending; a torn tail left by a killed writer is cut off,
// but a file with corruption before its tail is refused, so stored data is never overwritten.
// Thread safety: one thread at a time.
class Writer {
 public:
  Writer();
  ~Writer();
  Writer(Writer&&) noexcept;
  Writer& operator=(Writer&&) noexcept;

  Status open(const std::string& path, const WriterOptions& options = {});
  // Appends the samples of tree as the block starting at block_start (unix seconds, a multiple of the
  // resolution). Per series, blocks must come in increasing time order (StatusCode::out_of_order).
  // An empty tree is skipped.
  Status append(const SeriesKey& series, int64_t block_start, const Tree& tree);
  Status close();
  bool is_open() const;
  int64_t resolution_seconds() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// [SECTION] File format: reader, dataset and query ===============================================

struct OpenOptions {
  // Open the valid records before a corrupt one instead of failing (reading a damaged file).
  bool salvage = false;
};

struct FileInfo {
  uint32_t format_version = 0;
  int64_t resolution_seconds = 0;
  uint32_t multiplier = 0;
  uint64_t file_bytes = 0;
  uint64_t valid_bytes = 0;       // bytes of complete, checked records (the rest was a torn tail)
  uint64_t series_count = 0;
  uint64_t block_count = 0;       // level-0 blocks over all series
  uint64_t stored_trees = 0;      // all levels
  uint64_t symbol_count = 0;
  int64_t first_time = 0;         // unix seconds, start of the first block
  int64_t end_time = 0;           // unix seconds, end of the last block
  std::string salvage_note;       // what salvage skipped, if anything
};

// One .pyro file over a read-only byte span. The span must outlive the File unless the File owns it
// (open_path maps the file and owns the mapping; open_bytes with a std::string copies).
// Thread safety: const functions may run concurrently.
class File {
 public:
  File();
  ~File();
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;

  Status open_span(ByteSpan bytes, const OpenOptions& options = {});
  Status open_bytes(std::string bytes, const OpenOptions& options = {});
  Status open_path(const std::string& path, const OpenOptions& options = {});  // mmap natively

  const FileInfo& info() const;
  const std::vector<SeriesKey>& series() const;
  const SymbolTable& symbols() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// A selector as Pyroscope writes it: app{key="v", key2!="w", key3=~"regex", key4!~"regex"}.
// Regexes are anchored at both ends (RE2 syntax subset: . [] [^] * + ? {n,m} | () \d \w \s escapes).
struct Matcher {
  enum class Op { equal, not_equal, regex, not_regex };
  std::string key;
  Op op = Op::equal;
  std::string value;
};
struct Selector {
  std::string app;  // empty: any application
  std::vector<Matcher> matchers;
  static Status parse(std::string_view text, Selector* out);
  bool matches(const SeriesKey& key) const;
  std::string to_string() const;

  struct Compiled;
  std::shared_ptr<const Compiled> compiled;  // set by parse
};

// Samples per step for a selection; samples[i] covers [start + i*step, start + (i+1)*step).
struct Timeline {
  int64_t start = 0;
  int64_t step = 0;
  std::vector<uint64_t> samples;
};

struct QueryResult {
  Tree tree;
  Timeline timeline;          // over [from, until) at the file resolution or coarser (timeline_points)
  uint64_t merges = 0;        // stored trees decoded and merged to answer the query
  uint64_t merge_bound = 0;   // the segment tree's worst case for this range
  uint32_t series_matched = 0;  // distinct series, however many files hold parts of them
};

struct QueryOptions {
  size_t timeline_points = 0;  // 0: one point per block; else at most this many (coarser step)
  bool want_tree = true;
};

// Several files read as one data set (three processes' files, or yesterday's and today's).
// Thread safety: add_* one thread at a time; const functions may run concurrently.
class Dataset {
 public:
  Dataset();
  ~Dataset();
  Dataset(Dataset&&) noexcept;
  Dataset& operator=(Dataset&&) noexcept;

  Status add_file(const std::string& path, const OpenOptions& options = {});
  Status add_bytes(std::string bytes, const OpenOptions& options = {});
  void add(File file);
  size_t file_count() const;
  const File& file(size_t i) const;

  std::vector<std::string> apps() const;                                          // sorted
  std::vector<std::string> tag_keys(std::string_view app) const;                  // sorted
  std::vector<std::string> tag_values(std::string_view app, std::string_view key) const;  // sorted
  std::vector<SeriesKey> series(const Selector& selector) const;
  void time_span(int64_t* first, int64_t* end) const;  // unix seconds over all files
  int64_t resolution_seconds() const;                   // of the first file (10 s by default)

  // Merged tree, timeline and merge count of the series matching selector over [from, until)
  // (unix seconds; rounded outward to whole blocks).
  Status query(const Selector& selector, int64_t from, int64_t until, QueryResult* out,
               const QueryOptions& options = {}) const;
  Status query(std::string_view selector, int64_t from, int64_t until, QueryResult* out,
               const QueryOptions& options = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// [SECTION] Tag scopes ============================================================================

namespace detail {
// Makes {current tags of this thread} + {key=value} current and returns the previous tag-set id.
// Allocates only the first time a given tag set is seen; afterwards a lock-free lookup.
uint32_t tag_push(std::string_view key, std::string_view value);
uint32_t tag_push_all(const Tags& tags);
void tag_restore(uint32_t previous_tag_set);
}  // namespace detail

// Dynamic tags for the samples taken on this thread while the scope lives; nestable, restores the outer
// tags on exit. Thread safety: any thread; the scope must end on the thread that created it.
//     { pyroscope::tag_scope vehicle{"vehicle", "car"}; order_car(3); }
class tag_scope {
 public:
  tag_scope(std::string_view key, std::string_view value) : previous_(detail::tag_push(key, value)) {}
  explicit tag_scope(const Tags& tags) : previous_(detail::tag_push_all(tags)) {}
  ~tag_scope() { detail::tag_restore(previous_); }
  tag_scope(const tag_scope&) = delete;
  tag_scope& operator=(const tag_scope&) = delete;

 private:
  uint32_t previous_;
};

// The Pyroscope clients' form: runs fn with tags added, returns what fn returns.
//     pyroscope::tag_wrapper({{"vehicle", "bike"}}, [] { order_bike(1); });
template <class Fn>
decltype(auto) tag_wrapper(const Tags& tags, Fn&& fn) {
  tag_scope scope(tags);
  return std::forward<Fn>(fn)();
}

// [SECTION] Profiler API ==========================================================================

enum class LogLevel { debug, info, warning, error };

struct Config {
  std::string application_name;       // required; the series' app name
  Tags tags;                          // static tags, e.g. {{"region", "eu-north"}}
  int sample_rate_hz = 100;           // samples per second of CPU time, per thread
  std::string output_path;            // default "<application_name>.pyro" in the working directory
  int flush_interval_seconds = 10;    // one block per interval; must equal the file's resolution
  std::string server_address;         // e.g. "http://localhost:4040": also POST each block to /ingest
  // Called on the profiler's background thread (never inside the signal handler).
  std::function<void(LogLevel, const std::string&)> log;
};

// Starts sampling every thread of the process (those that exist and those created later).
// Thread safety: any thread; start/stop are serialized. Returns already_running if started.
Status start(const Config& config);
// Stops sampling, writes the partial block and closes the file.
Status stop();
bool is_running();

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

// =================================================================================================
// IMPLEMENTATION
// =================================================================================================
#if defined(PYROSCOPE_IMPLEMENTATION) && !defined(PYROSCOPE_IMPLEMENTATION_INCLUDED)
#define PYROSCOPE_IMPLEMENTATION_INCLUDED

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <set>
#include <unordered_map>

#if defined(PYROSCOPE_PLATFORM_LINUX) || defined(PYROSCOPE_PLATFORM_OTHER) || defined(PYROSCOPE_PLATFORM_EMSCRIPTEN)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#if defined(PYROSCOPE_PLATFORM_LINUX)
#include <sys/file.h>
#include <sys/mman.h>
#endif

namespace pyroscope {

// [SECTION] Implementation: helpers (varint, crc32, regex) ========================================

const char* status_string(StatusCode code) {
  switch (code) {
#define PYROSCOPE_X(name, text) \
  case StatusCode::name:        \
    return text;
    PYROSCOPE_STATUS_CODES(PYROSCOPE_X)
#undef PYROSCOPE_X
  }
  return "unknown status";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  std::string s = status_string(code_);
  if (!message_.empty()) s += ": " + message_;
  return s;
}

namespace detail {

inline Status error(StatusCode code, std::string message) { return Status(code, std::move(message)); }

inline void put_varint(std::string* out, uint64_t v) {
  char buf[10];
  int n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

inline void put_u32(std::string* out, uint32_t v) {
  char b[4] = {char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
  out->append(b, 4);
}
inline void put_u64(std::string* out, uint64_t v) {
  put_u32(out, uint32_t(v));
  put_u32(out, uint32_t(v >> 32));
}
inline uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) | uint64_t(get_u32(p + 4)) << 32; }

// Bounds-checked reader over untrusted bytes: every read either succeeds or sets failed.
struct ByteReader {
  const uint8_t* p;
  const uint8_t* end;
  bool failed = false;

  ByteReader(const uint8_t* data, size_t size) : p(data), end(data + size) {}
  size_t remaining() const { return size_t(end - p); }
  bool done() const { return p == end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p == end) break;
      uint8_t b = *p++;
      if (shift == 63 && b > 1) break;  // more than 64 bits
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    failed = true;
    p = end;
    return 0;
  }
  std::string_view bytes(uint64_t n) {
    if (n > remaining()) {
      failed = true;
      p = end;
      return {};
    }
    std::string_view s(reinterpret_cast<const char*>(p), size_t(n));
    p += n;
    return s;
  }
};

struct Crc32Table {
  uint32_t entries[256];
  Crc32Table() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      entries[i] = c;
    }
  }
};

inline uint32_t crc32(const void* data, size_t size, uint32_t crc = 0) {
  static const Crc32Table table;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; i++) crc = table.entries[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(std::string_view s) {
  // FNV-1a over 8-byte words: fast enough, no dependency, stable across platforms.
  uint64_t h = 0xcbf29ce484222325ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < s.size(); i++) h = (h ^ uint8_t(s[i])) * 0x100000001b3ull;
  return mix64(h);
}

inline bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

inline std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  out += '"';
  return out;
}

// A small regular-expression engine (Thompson NFA, run as a Pike VM): linear time, no exceptions,
// so a bad pattern is a Status and a hostile one cannot blow up. Matches whole strings only, as
// Prometheus and Pyroscope tag matchers do.
class Regex {
 public:
  Status compile(std::string_view pattern) {
    pattern_ = pattern;
    pos_ = 0;
    program_.clear();
    classes_.clear();
    Status st;
    Frag f = parse_alternation(&st, 0);
    if (!st.ok()) return st;
    if (pos_ != pattern_.size()) return fail("unexpected ')'");
    uint32_t match = emit({Op::match, 0, 0, 0});
    patch(f, match);
    start_ = f.start;
    if (program_.size() > 100000) return fail("pattern too large");
    return {};
  }

  bool full_match(std::string_view text) const {
    std::vector<uint32_t> current, next;
    std::vector<uint32_t> mark(program_.size(), UINT32_MAX);
    std::vector<uint32_t> stack;
    auto add = [&](std::vector<uint32_t>& list, uint32_t pc, uint32_t gen) {
      stack.push_back(pc);
      while (!stack.empty()) {
        uint32_t i = stack.back();
        stack.pop_back();
        if (mark[i] == gen) continue;
        mark[i] = gen;
        const Inst& in = program_[i];
        if (in.op == Op::jump) {
          stack.push_back(in.x);
        } else if (in.op == Op::split) {
          stack.push_back(in.y);
          stack.push_back(in.x);
        } else {
          list.push_back(i);
        }
      }
    };
    uint32_t gen = 0;
    add(current, start_, gen);
    for (size_t k = 0; k <= text.size(); k++) {
      if (current.empty()) return false;
      gen++;
      next.clear();
      for (uint32_t i : current) {
        const Inst& in = program_[i];
        if (in.op == Op::match) {
          if (k == text.size()) return true;
          continue;
        }
        if (k == text.size()) continue;
        unsigned char c = static_cast<unsigned char>(text[k]);
        bool ok = false;
        if (in.op == Op::byte) ok = c == in.x;
        else if (in.op == Op::any) ok = c != '\n';
        else if (in.op == Op::cls) ok = classes_[in.x].test(c);
        if (ok) add(next, i + 1, gen);
      }
      std::swap(current, next);
    }
    return false;
  }

 private:
  enum class Op : uint8_t { byte, any, cls, split, jump, match };
  struct Inst {
    Op op;
    uint32_t x, y, unused;
  };
  struct ByteSet {
    uint64_t bits[4] = {0, 0, 0, 0};
    void set(unsigned c) { bits[c >> 6] |= 1ull << (c & 63); }
    bool test(unsigned c) const { return (bits[c >> 6] >> (c & 63)) & 1; }
  };
  // A fragment: start instruction and the list of dangling exits to patch (instructions whose x or y
  // is still unset, encoded as index*2 + (0 for x, 1 for y)).
  struct Frag {
    uint32_t start;
    std::vector<uint32_t> exits;
  };

  std::string_view pattern_;
  size_t pos_ = 0;
  std::vector<Inst> program_;
  std::vector<ByteSet> classes_;
  uint32_t start_ = 0;

  Status fail(const char* what) const {
    return error(StatusCode::invalid_argument,
                 std::string("bad regex '") + std::string(pattern_) + "' at " + std::to_string(pos_) + ": " + what);
  }
  uint32_t emit(Inst in) {
    program_.push_back(in);
    return uint32_t(program_.size() - 1);
  }
  void patch(const Frag& f, uint32_t target) {
    for (uint32_t e : f.exits) {
      if (e & 1) program_[e >> 1].y = target;
      else program_[e >> 1].x = target;
    }
  }
  // Copies a fragment's instructions (for {n,m} repetition) by re-parsing its source text.
  Frag parse_alternation(Status* st, int depth) {
    if (depth > 200) {
      *st = fail("nesting too deep");
      return {0, {}};
    }
    Frag left = parse_concat(st, depth);
    while (st->ok() && pos_ < pattern_.size() && pattern_[pos_] == '|') {
      pos_++;
      Frag right = parse_concat(st, depth);
      if (!st->ok()) break;
      uint32_t s = emit({Op::split, left.start, right.start, 0});
      Frag f{s, left.exits};
      f.exits.insert(f.exits.end(), right.exits.begin(), right.exits.end());
      left = std::move(f);
    }
    return left;
  }
  Frag empty_frag() {
    uint32_t j = emit({Op::jump, 0, 0, 0});
    return {j, {j * 2}};
  }
  Frag parse_concat(Status* st, int depth) {
    Frag result = empty_frag();
    while (st->ok() && pos_ < pattern_.size() && pattern_[pos_] != '|' && pattern_[pos_] != ')') {
      size_t atom_begin = pos_;
      Frag atom = parse_atom(st, depth);
      if (!st->ok()) break;
      size_t atom_end = pos_;
      atom = parse_quantifier(st, depth, std::move(atom), atom_begin, atom_end);
      if (!st->ok()) break;
      patch(result, atom.start);
      result.exits = std::move(atom.exits);
    }
    return result;
  }
  Frag reparse_atom(Status* st, int depth, size_t begin, size_t end) {
    size_t saved = pos_;
    pos_ = begin;
    Frag f = parse_atom(st, depth);
    (void)end;
    pos_ = saved;
    return f;
  }
  Frag star(Frag atom) {
    uint32_t s = emit({Op::split, atom.start, 0, 0});
    patch(atom, s);
    return {s, {s * 2 + 1}};
  }
  Frag optional(Frag atom) {
    uint32_t s = emit({Op::split, atom.start, 0, 0});
    Frag f{s, atom.exits};
    f.exits.push_back(s * 2 + 1);
    return f;
  }
  Frag parse_quantifier(Status* st, int depth, Frag atom, size_t atom_begin, size_t atom_end) {
    if (pos_ >= pattern_.size()) return atom;
    char q = pattern_[pos_];
    if (q == '*') {
      pos_++;
      return star(std::move(atom));
    }
    if (q == '+') {
      pos_++;
      uint32_t s = emit({Op::split, atom.start, 0, 0});
      patch(atom, s);
      return {atom.start, {s * 2 + 1}};
    }
    if (q == '?') {
      pos_++;
      return optional(std::move(atom));
    }
    if (q == '{') {
      size_t p = pos_ + 1;
      auto number = [&](int* out) {
        size_t b = p;
        long v = 0;
        while (p < pattern_.size() && pattern_[p] >= '0' && pattern_[p] <= '9' && v <= 1000) v = v * 10 + (pattern_[p++] - '0');
        *out = int(v);
        return p > b;
      };
      int lo = 0, hi = 0;
      if (!number(&lo)) return atom;  // a literal '{', as RE2 treats it
      bool unbounded = false;
      if (p < pattern_.size() && pattern_[p] == ',') {
        p++;
        if (!number(&hi)) unbounded = true;
      } else {
        hi = lo;
      }
      if (p >= pattern_.size() || pattern_[p] != '}') return atom;
      pos_ = p + 1;
      if (lo > 1000 || hi > 1000 || (!unbounded && hi < lo)) {
        *st = fail("bad repetition count");
        return atom;
      }
      // x{lo,hi} = x x ... x (lo times) then (x?){hi-lo} or x* when unbounded.
      Frag result = empty_frag();
      auto append = [&](Frag f) {
        patch(result, f.start);
        result.exits = std::move(f.exits);
      };
      bool first = true;
      auto next_copy = [&]() {
        if (first) {
          first = false;
          return std::move(atom);
        }
        return reparse_atom(st, depth, atom_begin, atom_end);
      };
      for (int i = 0; i < lo && st->ok(); i++) append(next_copy());
      if (unbounded) {
        append(star(next_copy()));
      } else {
        for (int i = lo; i < hi && st->ok(); i++) append(optional(next_copy()));
      }
      if (first) {  // x{0} or x{0,0}: the parsed atom is never entered
        (void)atom;
      }
      if (program_.size() > 100000) *st = fail("pattern too large");
      return result;
    }
    return atom;
  }
  Frag single(ByteSet set) {
    classes_.push_back(set);
    uint32_t i = emit({Op::cls, uint32_t(classes_.size() - 1), 0, 0});
    emit({Op::jump, 0, 0, 0});  // i + 1 continues; the jump's target is the fragment exit
    return {i, {(i + 1) * 2}};
  }
  static ByteSet perl_class(char c) {
    ByteSet s;
    char lower = char(c | 0x20);
    for (unsigned b = 0; b < 256; b++) {
      bool in = lower == 'd' ? (b >= '0' && b <= '9')
                : lower == 's' ? (b == ' ' || (b >= '\t' && b <= '\r'))
                               : ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b == '_');
      if (in != (c >= 'A' && c <= 'Z')) s.set(b);
    }
    return s;
  }
  bool escape_byte(char c, unsigned* out) {
    switch (c) {
      case 'n': *out = '\n'; return true;
      case 't': *out = '\t'; return true;
      case 'r': *out = '\r'; return true;
      case 'f': *out = '\f'; return true;
      case 'v': *out = '\v'; return true;
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return false;
        *out = static_cast<unsigned char>(c);
        return true;
    }
  }
  Frag parse_atom(Status* st, int depth) {
    char c = pattern_[pos_++];
    if (c == '(') {
      if (pattern_.substr(pos_, 2) == "?:") pos_ += 2;
      Frag inner = parse_alternation(st, depth + 1);
      if (!st->ok()) return inner;
      if (pos_ >= pattern_.size() || pattern_[pos_] != ')') {
        *st = fail("missing ')'");
        return inner;
      }
      pos_++;
      return inner;
    }
    if (c == '*' || c == '+' || c == '?') {
      pos_--;
      *st = fail("quantifier without anything to repeat");
      return {0, {}};
    }
    if (c == '.') {
      uint32_t i = emit({Op::any, 0, 0, 0});
      emit({Op::jump, 0, 0, 0});
      return {i, {(i + 1) * 2}};
    }
    if (c == '^' || c == '$') return empty_frag();  // matches are anchored anyway
    if (c == '[') return parse_class(st);
    if (c == '\\') {
      if (pos_ >= pattern_.size()) {
        *st = fail("trailing backslash");
        return {0, {}};
      }
      char e = pattern_[pos_++];
      if (e == 'd' || e == 'D' || e == 's' || e == 'S' || e == 'w' || e == 'W') return single(perl_class(e));
      unsigned b;
      if (!escape_byte(e, &b)) {
        *st = fail("unsupported escape");
        return {0, {}};
      }
      ByteSet s;
      s.set(b);
      return single(s);
    }
    uint32_t i = emit({Op::byte, static_cast<unsigned char>(c), 0, 0});
    emit({Op::jump, 0, 0, 0});
    return {i, {(i + 1) * 2}};
  }
  Frag parse_class(Status* st) {
    ByteSet s;
    bool negate = false;
    if (pos_ < pattern_.size() && pattern_[pos_] == '^') {
      negate = true;
      pos_++;
    }
    bool first = true;
    while (true) {
      if (pos_ >= pattern_.size()) {
        *st = fail("missing ']'");
        return {0, {}};
      }
      char c = pattern_[pos_++];
      if (c == ']' && !first) break;
      first = false;
      unsigned lo;
      if (c == '\\') {
        if (pos_ >= pattern_.size()) {
          *st = fail("trailing backslash");
          return {0, {}};
        }
        char e = pattern_[pos_++];
        if (e == 'd' || e == 'D' || e == 's' || e == 'S' || e == 'w' || e == 'W') {
          ByteSet p = perl_class(e);
          for (int k = 0; k < 4; k++) s.bits[k] |= p.bits[k];
          continue;
        }
        if (!escape_byte(e, &lo)) {
          *st = fail("unsupported escape in class");
          return {0, {}};
        }
      } else {
        lo = static_cast<unsigned char>(c);
      }
      unsigned hi = lo;
      if (pos_ + 1 < pattern_.size() && pattern_[pos_] == '-' && pattern_[pos_ + 1] != ']') {
        pos_++;
        char h = pattern_[pos_++];
        if (h == '\\') {
          if (pos_ >= pattern_.size() || !escape_byte(pattern_[pos_++], &hi)) {
            *st = fail("bad range end");
            return {0, {}};
          }
        } else {
          hi = static_cast<unsigned char>(h);
        }
        if (hi < lo) {
          *st = fail("range out of order");
          return {0, {}};
        }
      }
      for (unsigned b = lo; b <= hi; b++) s.set(b);
    }
    if (negate)
      for (int k = 0; k < 4; k++) s.bits[k] = ~s.bits[k];
    return single(s);
  }
};

}  // namespace detail

// [SECTION] Implementation: symbol table ==========================================================

size_t SymbolTable::Hash::operator()(std::string_view s) const { return size_t(detail::hash_bytes(s)); }

std::string_view SymbolTable::store(std::string_view name) {
  if (name.size() > chunk_left_) {
    size_t size = std::max<size_t>(name.size(), 64 * 1024);
    storage_.emplace_back(new char[size]);
    chunk_ = storage_.back().get();
    chunk_left_ = size;
  }
  if (!name.empty()) std::memcpy(chunk_, name.data(), name.size());
  std::string_view stored(chunk_, name.size());
  chunk_ += name.size();
  chunk_left_ -= name.size();
  return stored;
}

void SymbolTable::grow() {
  size_t capacity = slots_.empty() ? 64 : slots_.size() * 2;
  std::vector<std::pair<std::string_view, uint32_t>> old;
  old.swap(slots_);
  slots_.assign(capacity, {std::string_view(), kNone});
  for (const auto& slot : old) {
    if (slot.second == kNone) continue;
    size_t i = Hash()(slot.first) & (capacity - 1);
    while (slots_[i].second != kNone) i = (i + 1) & (capacity - 1);
    slots_[i] = slot;
  }
}

uint32_t SymbolTable::find(std::string_view name) const {
  if (slots_.empty()) return kNone;
  size_t mask = slots_.size() - 1;
  for (size_t i = Hash()(name) & mask;; i = (i + 1) & mask) {
    if (slots_[i].second == kNone) return kNone;
    if (slots_[i].first == name) return slots_[i].second;
  }
}

uint32_t SymbolTable::intern(std::string_view name) {
  if ((used_ + 1) * 4 > slots_.size() * 3) grow();
  size_t mask = slots_.size() - 1;
  size_t i = Hash()(name) & mask;
  for (; slots_[i].second != kNone; i = (i + 1) & mask)
    if (slots_[i].first == name) return slots_[i].second;
  std::string_view stored = store(name);
  uint32_t id = uint32_t(names_.size());
  names_.push_back(stored);
  slots_[i] = {stored, id};
  used_++;
  return id;
}

std::string_view SymbolTable::name(uint32_t id) const {
  PYROSCOPE_ASSERT(id < names_.size());
  return names_[id];
}

// Trie encoding: varint first_id, varint count, then the nodes of a radix trie in preorder, each as
// varint label length, label bytes, varint (id - first_id + 1, or 0 when no name ends here),
// varint child count. Children are in byte order, so the traversal is deterministic.
void SymbolTable::encode_trie(uint32_t first_id, std::string* out) const {
  std::vector<uint32_t> order;
  for (uint32_t id = first_id; id < size(); id++) order.push_back(id);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return names_[a] < names_[b]; });
  detail::put_varint(out, first_id);
  detail::put_varint(out, order.size());
  struct Range {
    size_t lo, hi, depth;
  };
  std::vector<Range> stack;
  stack.push_back({0, order.size(), 0});
  bool root = true;
  while (!stack.empty()) {
    Range r = stack.back();
    stack.pop_back();
    size_t common = r.depth;
    if (root) {
      common = 0;
      root = false;
    } else if (r.hi > r.lo) {
      std::string_view a = names_[order[r.lo]], b = names_[order[r.hi - 1]];
      common = r.depth;
      while (common < a.size() && common < b.size() && a[common] == b[common]) common++;
    }
    std::string_view first = r.hi > r.lo ? names_[order[r.lo]] : std::string_view();
    detail::put_varint(out, common - r.depth);
    out->append(first.data() + r.depth, common - r.depth);
    size_t lo = r.lo;
    if (lo < r.hi && names_[order[lo]].size() == common) {
      detail::put_varint(out, uint64_t(order[lo]) - first_id + 1);
      lo++;
    } else {
      detail::put_varint(out, 0);
    }
    std::vector<Range> children;
    for (size_t i = lo; i < r.hi;) {
      char c = names_[order[i]][common];
      size_t j = i + 1;
      while (j < r.hi && names_[order[j]][common] == c) j++;
      children.push_back({i, j, common});
      i = j;
    }
    detail::put_varint(out, children.size());
    for (size_t k = children.size(); k-- > 0;) stack.push_back(children[k]);
  }
}

Status SymbolTable::decode_trie(ByteSpan bytes) {
  detail::ByteReader in(bytes.data, bytes.size);
  uint64_t first_id = in.varint();
  uint64_t count = in.varint();
  if (in.failed) return detail::error(StatusCode::corrupt_file, "symbol trie: truncated header");
  if (first_id != size())
    return detail::error(StatusCode::corrupt_file, "symbol trie: starts at id " + std::to_string(first_id) +
                                                       ", expected " + std::to_string(size()));
  if (count > bytes.size || count > (uint64_t(kNone) - first_id))
    return detail::error(StatusCode::corrupt_file, "symbol trie: impossible name count " + std::to_string(count));
  std::vector<std::string> decoded(count);
  std::vector<bool> seen(count, false);
  std::string current;
  struct Level {
    size_t prefix;
    uint64_t remaining;
  };
  std::vector<Level> stack;
  uint64_t nodes = 0;
  auto read_node = [&]() -> bool {
    uint64_t label_len = in.varint();
    std::string_view label = in.bytes(label_len);
    uint64_t terminal = in.varint();
    uint64_t children = in.varint();
    if (in.failed || terminal > count || children > in.remaining() + 1) return false;
    if (++nodes > 2 * count + 1) return false;
    current.append(label);
    if (terminal) {
      if (seen[terminal - 1]) return false;
      seen[terminal - 1] = true;
      decoded[terminal - 1] = current;
    }
    stack.push_back({current.size(), children});
    return true;
  };
  if (!read_node()) return detail::error(StatusCode::corrupt_file, "symbol trie: bad root node");
  while (!stack.empty()) {
    if (stack.back().remaining == 0) {
      stack.pop_back();
      continue;
    }
    stack.back().remaining--;
    current.resize(stack.back().prefix);
    if (!read_node()) return detail::error(StatusCode::corrupt_file, "symbol trie: bad node");
  }
  if (!in.done()) return detail::error(StatusCode::corrupt_file, "symbol trie: trailing bytes");
  for (uint64_t i = 0; i < count; i++) {
    if (!seen[i]) return detail::error(StatusCode::corrupt_file, "symbol trie: id " + std::to_string(first_id + i) + " missing");
    if (find(decoded[i]) != kNone) return detail::error(StatusCode::corrupt_file, "symbol trie: duplicate name");
  }
  for (uint64_t i = 0; i < count; i++) intern(decoded[i]);
  return {};
}

}  // namespace pyroscope

namespace pyroscope {

// [SECTION] Implementation: tree and folded text ==================================================

Tree::Tree() : Tree(std::make_shared<SymbolTable>()) {}

Tree::Tree(std::shared_ptr<SymbolTable> symbols)
    : symbols_(symbols ? std::move(symbols) : std::make_shared<SymbolTable>()) {
  nodes_.push_back({SymbolTable::kNone, kNoNode, 0, 0});
}

void Tree::clear() {
  nodes_.clear();
  nodes_.push_back({SymbolTable::kNone, kNoNode, 0, 0});
  index_.clear();
}

std::string_view Tree::name(uint32_t node) const {
  uint32_t s = nodes_[node].symbol;
  return s == SymbolTable::kNone ? std::string_view() : symbols_->name(s);
}

void Tree::grow_index() {
  size_t capacity = index_.empty() ? 64 : index_.size() * 2;
  std::vector<std::pair<uint64_t, uint32_t>> old;
  old.swap(index_);
  index_.assign(capacity, {0, kNoNode});
  for (const auto& e : old) {
    if (e.second == kNoNode) continue;
    size_t i = detail::mix64(e.first) & (capacity - 1);
    while (index_[i].second != kNoNode) i = (i + 1) & (capacity - 1);
    index_[i] = e;
  }
}

uint32_t Tree::child(uint32_t node, uint32_t symbol_id) const {
  if (index_.empty()) return kNoNode;
  uint64_t key = uint64_t(node) << 32 | symbol_id;
  size_t mask = index_.size() - 1;
  for (size_t i = detail::mix64(key) & mask;; i = (i + 1) & mask) {
    if (index_[i].second == kNoNode) return kNoNode;
    if (index_[i].first == key) return index_[i].second;
  }
}

uint32_t Tree::add_child(uint32_t parent, uint32_t symbol) {
  if ((nodes_.size() + 1) * 4 > index_.size() * 3) grow_index();
  uint64_t key = uint64_t(parent) << 32 | symbol;
  size_t mask = index_.size() - 1;
  size_t i = detail::mix64(key) & mask;
  for (; index_[i].second != kNoNode; i = (i + 1) & mask)
    if (index_[i].first == key) return index_[i].second;
  uint32_t id = uint32_t(nodes_.size());
  nodes_.push_back({symbol, parent, 0, 0});
  index_[i] = {key, id};
  return id;
}

void Tree::insert_ids(const uint32_t* symbol_ids, size_t n, uint64_t count) {
  if (count == 0) return;
  uint32_t node = kRoot;
  nodes_[kRoot].total += count;
  for (size_t i = 0; i < n; i++) {
    node = add_child(node, symbol_ids[i]);
    nodes_[node].total += count;
  }
  nodes_[node].self += count;
}

void Tree::insert(const std::vector<std::string_view>& frames, uint64_t count) {
  std::vector<uint32_t> ids;
  ids.reserve(frames.size());
  for (std::string_view f : frames) ids.push_back(symbols_->intern(f));
  insert_ids(ids.data(), ids.size(), count);
}

uint32_t Tree::find_path(const std::vector<std::string_view>& frames) const {
  uint32_t node = kRoot;
  for (std::string_view f : frames) {
    uint32_t s = symbols_->find(f);
    if (s == SymbolTable::kNone) return kNoNode;
    node = child(node, s);
    if (node == kNoNode) return kNoNode;
  }
  return node;
}

void Tree::merge(const Tree& other) {
  if (&other == this) {
    for (Node& n : nodes_) {
      n.self *= 2;
      n.total *= 2;
    }
    return;
  }
  bool same_table = other.symbols_ == symbols_;
  std::vector<uint32_t> remap;
  if (!same_table) remap.assign(other.symbols_->size(), SymbolTable::kNone);
  std::vector<uint32_t> mapped(other.nodes_.size());
  mapped[kRoot] = kRoot;
  nodes_[kRoot].self += other.nodes_[kRoot].self;
  nodes_[kRoot].total += other.nodes_[kRoot].total;
  // Nodes are created parent first, so one pass in index order sees every parent before its children.
  for (size_t i = 1; i < other.nodes_.size(); i++) {
    const Node& n = other.nodes_[i];
    uint32_t s = n.symbol;
    if (!same_table) {
      if (remap[s] == SymbolTable::kNone) remap[s] = symbols_->intern(other.symbols_->name(s));
      s = remap[s];
    }
    uint32_t m = add_child(mapped[n.parent], s);
    mapped[i] = m;
    nodes_[m].self += n.self;
    nodes_[m].total += n.total;
  }
}

Tree Tree::pruned(double min_share) const {
  Tree out(symbols_);
  uint64_t threshold = min_share <= 0 ? 0 : uint64_t(min_share * double(total()) + 0.999999);
  std::vector<uint32_t> mapped(nodes_.size(), kNoNode);
  mapped[kRoot] = kRoot;
  out.nodes_[kRoot] = nodes_[kRoot];
  out.nodes_[kRoot].parent = kNoNode;
  for (size_t i = 1; i < nodes_.size(); i++) {
    const Node& n = nodes_[i];
    if (mapped[n.parent] == kNoNode || n.total < threshold || n.total == 0) continue;
    uint32_t m = out.add_child(mapped[n.parent], n.symbol);
    out.nodes_[m].self = n.self;
    out.nodes_[m].total = n.total;
    mapped[i] = m;
  }
  return out;
}

void Tree::sorted_children(std::vector<uint32_t>* offsets, std::vector<uint32_t>* children) const {
  size_t n = nodes_.size();
  offsets->assign(n + 1, 0);
  for (size_t i = 1; i < n; i++) (*offsets)[nodes_[i].parent + 1]++;
  for (size_t i = 0; i < n; i++) (*offsets)[i + 1] += (*offsets)[i];
  children->assign(n > 0 ? n - 1 : 0, 0);
  std::vector<uint32_t> fill(offsets->begin(), offsets->end() - 1);
  for (size_t i = 1; i < n; i++) (*children)[fill[nodes_[i].parent]++] = uint32_t(i);
  for (size_t i = 0; i < n; i++) {
    auto b = children->begin() + (*offsets)[i], e = children->begin() + (*offsets)[i + 1];
    if (e - b > 1)
      std::sort(b, e, [&](uint32_t x, uint32_t y) {
        std::string_view a = symbols_->name(nodes_[x].symbol), c = symbols_->name(nodes_[y].symbol);
        return a < c;
      });
  }
}

std::string Tree::to_folded() const {
  std::vector<uint32_t> offsets, children;
  sorted_children(&offsets, &children);
  std::string out;
  std::vector<std::string_view> path;
  struct Item {
    uint32_t node;
    uint32_t depth;
  };
  std::vector<Item> stack;
  for (uint32_t k = offsets[kRoot + 1]; k-- > offsets[kRoot];) stack.push_back({children[k], 0});
  if (nodes_[kRoot].self > 0) {
    // Samples with an empty stack have no folded form but a frame-less line would not parse back;
    // they are written under a synthetic frame so no sample disappears.
    out += "[no frames] " + std::to_string(nodes_[kRoot].self) + "\n";
  }
  char number[24];
  while (!stack.empty()) {
    Item it = stack.back();
    stack.pop_back();
    path.resize(it.depth);
    path.push_back(symbols_->name(nodes_[it.node].symbol));
    if (nodes_[it.node].self > 0) {
      for (size_t i = 0; i < path.size(); i++) {
        if (i) out += ';';
        out.append(path[i].data(), path[i].size());
      }
      int len = std::snprintf(number, sizeof number, " %" PRIu64 "\n", nodes_[it.node].self);
      out.append(number, size_t(len));
    }
    for (uint32_t k = offsets[it.node + 1]; k-- > offsets[it.node];) stack.push_back({children[k], it.depth + 1});
  }
  return out;
}

namespace detail {
inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
}  // namespace detail

Status Tree::add_folded(std::string_view text) {
  Tree staged(symbols_);
  std::vector<uint32_t> ids;
  size_t line_number = 0;
  size_t pos = 0;
  auto fail = [&](const std::string& what) {
    return detail::error(StatusCode::parse_error, "line " + std::to_string(line_number) + ": " + what);
  };
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    line_number++;
    while (!line.empty() && detail::is_space(line.back())) line.remove_suffix(1);
    // A UTF-8 byte-order mark is never part of a frame name; editors put it at the start of files
    // (and concatenated files carry it into later lines).
    while (true) {
      while (!line.empty() && detail::is_space(line.front())) line.remove_prefix(1);
      if (line.size() < 3 || std::memcmp(line.data(), "\xEF\xBB\xBF", 3) != 0) break;
      line.remove_prefix(3);
    }
    if (line.empty()) continue;
    size_t space = line.find_last_of(" \t");
    if (space == std::string_view::npos)
      return fail("no sample count (expected 'frame;frame;... COUNT')");
    std::string_view count_text = line.substr(space + 1);
    std::string_view stack = line.substr(0, space);
    while (!stack.empty() && detail::is_space(stack.back())) stack.remove_suffix(1);
    uint64_t count = 0;
    for (char c : count_text) {
      if (c < '0' || c > '9')
        return fail("sample count '" + std::string(count_text) + "' is not a non-negative integer");
      if (count > (UINT64_MAX - uint64_t(c - '0')) / 10)
        return fail("sample count '" + std::string(count_text) + "' is too large");
      count = count * 10 + uint64_t(c - '0');
    }
    if (stack.empty()) return fail("empty stack before the count");
    ids.clear();
    size_t start = 0;
    while (true) {
      size_t semi = stack.find(';', start);
      std::string_view frame = stack.substr(start, semi == std::string_view::npos ? std::string_view::npos : semi - start);
      if (frame.empty()) return fail("empty frame name (frame " + std::to_string(ids.size() + 1) + ")");
      ids.push_back(symbols_->intern(frame));
      if (semi == std::string_view::npos) break;
      start = semi + 1;
    }
    uint64_t sum;
    if (detail::add_overflows(staged.total(), count, &sum)) return fail("total sample count overflows 64 bits");
    staged.insert_ids(ids.data(), ids.size(), count);
  }
  uint64_t sum;
  if (detail::add_overflows(total(), staged.total(), &sum))
    return detail::error(StatusCode::parse_error, "total sample count overflows 64 bits");
  merge(staged);
  return {};
}

Status Tree::from_folded(std::string_view text, Tree* out) {
  out->clear();
  return out->add_folded(text);
}

// Binary form: varint node count (root excluded), varint root self, then every node in preorder with
// children sorted by symbol id: varint (child_count << 1 | has_self), [varint self], varint symbol
// delta (the first child stores its id, later siblings id - previous id - 1). Totals are derived.
void Tree::encode(std::string* out) const {
  size_t n = nodes_.size();
  std::vector<uint32_t> offsets(n + 1, 0), children(n > 0 ? n - 1 : 0);
  for (size_t i = 1; i < n; i++) offsets[nodes_[i].parent + 1]++;
  for (size_t i = 0; i < n; i++) offsets[i + 1] += offsets[i];
  std::vector<uint32_t> fill(offsets.begin(), offsets.end() - 1);
  for (size_t i = 1; i < n; i++) children[fill[nodes_[i].parent]++] = uint32_t(i);
  for (size_t i = 0; i < n; i++)
    std::sort(children.begin() + offsets[i], children.begin() + offsets[i + 1],
              [&](uint32_t a, uint32_t b) { return nodes_[a].symbol < nodes_[b].symbol; });
  detail::put_varint(out, n - 1);
  detail::put_varint(out, nodes_[kRoot].self);
  detail::put_varint(out, offsets[kRoot + 1] - offsets[kRoot]);
  struct Item {
    uint32_t node;
    uint32_t previous_sibling_symbol;  // kNone for a first child
  };
  std::vector<Item> stack;
  for (uint32_t k = offsets[kRoot + 1]; k-- > offsets[kRoot];)
    stack.push_back({children[k], k == offsets[kRoot] ? SymbolTable::kNone : nodes_[children[k - 1]].symbol});
  while (!stack.empty()) {
    Item it = stack.back();
    stack.pop_back();
    const Node& node = nodes_[it.node];
    uint64_t child_count = offsets[it.node + 1] - offsets[it.node];
    detail::put_varint(out, child_count << 1 | (node.self ? 1 : 0));
    if (node.self) detail::put_varint(out, node.self);
    detail::put_varint(out, it.previous_sibling_symbol == SymbolTable::kNone
                                ? node.symbol
                                : node.symbol - it.previous_sibling_symbol - 1);
    for (uint32_t k = offsets[it.node + 1]; k-- > offsets[it.node];)
      stack.push_back({children[k], k == offsets[it.node] ? SymbolTable::kNone : nodes_[children[k - 1]].symbol});
  }
}

namespace detail {
// Decodes the binary tree form into flat preorder arrays after checking every field.
struct DecodedTree {
  uint64_t root_self = 0;
  std::vector<uint32_t> parent;  // index into these arrays; UINT32_MAX for root children
  std::vector<uint32_t> symbol;
  std::vector<uint64_t> self;
  std::vector<uint64_t> total;
};

inline Status decode_tree(ByteSpan bytes, uint32_t symbol_count, DecodedTree* out) {
  ByteReader in(bytes.data, bytes.size);
  uint64_t node_count = in.varint();
  out->root_self = in.varint();
  uint64_t root_children = in.varint();
  if (in.failed) return error(StatusCode::corrupt_file, "tree: truncated header");
  // Every node takes at least two bytes, which bounds what a hostile count can make us allocate.
  if (node_count > bytes.size / 2 || root_children > node_count)
    return error(StatusCode::corrupt_file, "tree: impossible node count");
  out->parent.clear();
  out->symbol.clear();
  out->self.clear();
  out->total.clear();
  out->parent.reserve(node_count);
  out->symbol.reserve(node_count);
  out->self.reserve(node_count);
  struct Level {
    uint32_t node;
    uint64_t remaining;
    uint64_t previous_symbol;  // UINT64_MAX before the first child
  };
  std::vector<Level> stack;
  stack.push_back({UINT32_MAX, root_children, UINT64_MAX});
  uint64_t declared = root_children;
  while (!stack.empty()) {
    Level& top = stack.back();
    if (top.remaining == 0) {
      stack.pop_back();
      continue;
    }
    top.remaining--;
    if (out->parent.size() >= node_count) return error(StatusCode::corrupt_file, "tree: more nodes than declared");
    uint64_t tag = in.varint();
    uint64_t self = (tag & 1) ? in.varint() : 0;
    uint64_t delta = in.varint();
    if (in.failed) return error(StatusCode::corrupt_file, "tree: truncated node");
    uint64_t symbol = top.previous_symbol == UINT64_MAX ? delta : top.previous_symbol + 1 + delta;
    if (delta >= symbol_count || symbol >= symbol_count)
      return error(StatusCode::corrupt_file, "tree: symbol id " + std::to_string(symbol) + " out of range");
    if ((tag & 1) && self == 0) return error(StatusCode::corrupt_file, "tree: zero self flagged");
    top.previous_symbol = symbol;
    uint64_t child_count = tag >> 1;
    declared += child_count;
    if (declared > node_count) return error(StatusCode::corrupt_file, "tree: child counts exceed node count");
    uint32_t index = uint32_t(out->parent.size());
    out->parent.push_back(top.node);
    out->symbol.push_back(uint32_t(symbol));
    out->self.push_back(self);
    if (child_count) stack.push_back({index, child_count, UINT64_MAX});
  }
  if (out->parent.size() != node_count) return error(StatusCode::corrupt_file, "tree: fewer nodes than declared");
  if (!in.done()) return error(StatusCode::corrupt_file, "tree: trailing bytes");
  out->total = out->self;
  for (size_t i = node_count; i-- > 0;) {
    uint32_t p = out->parent[i];
    if (p != UINT32_MAX && add_overflows(out->total[p], out->total[i], &out->total[p]))
      return error(StatusCode::corrupt_file, "tree: sample count overflow");
  }
  return {};
}
}  // namespace detail

Status Tree::decode(ByteSpan bytes) {
  if (nodes_.size() != 1 || nodes_[kRoot].total != 0) {
    Tree fresh(symbols_);
    Status st = fresh.decode(bytes);
    if (!st.ok()) return st;
    clear();
    merge(fresh);
    return {};
  }
  return merge_encoded(bytes, nullptr);
}

Status Tree::merge_encoded(ByteSpan bytes, const std::vector<uint32_t>* remap) {
  detail::DecodedTree d;
  uint32_t symbol_limit = remap ? uint32_t(std::min<size_t>(remap->size(), SymbolTable::kNone)) : symbols_->size();
  Status st = detail::decode_tree(bytes, symbol_limit, &d);
  if (!st.ok()) return st;
  if (remap)
    for (uint32_t s : d.symbol)
      if ((*remap)[s] >= symbols_->size()) return detail::error(StatusCode::invalid_argument, "tree: remap incomplete");
  return add_decoded(d, remap);
}

Status Tree::add_decoded(const detail::DecodedTree& d, const std::vector<uint32_t>* remap) {
  uint64_t sum = d.root_self;
  for (size_t i = 0; i < d.parent.size(); i++)
    if (d.parent[i] == UINT32_MAX && detail::add_overflows(sum, d.total[i], &sum))
      return detail::error(StatusCode::corrupt_file, "tree: sample count overflow");
  uint64_t check;
  if (detail::add_overflows(nodes_[kRoot].total, sum, &check))
    return detail::error(StatusCode::corrupt_file, "tree: sample count overflow");
  nodes_[kRoot].self += d.root_self;
  nodes_[kRoot].total += sum;
  std::vector<uint32_t> mapped(d.parent.size());
  for (size_t i = 0; i < d.parent.size(); i++) {
    uint32_t parent = d.parent[i] == UINT32_MAX ? kRoot : mapped[d.parent[i]];
    uint32_t s = remap ? (*remap)[d.symbol[i]] : d.symbol[i];
    uint32_t m = add_child(parent, s);
    mapped[i] = m;
    nodes_[m].self += d.self[i];
    nodes_[m].total += d.total[i];
  }
  return {};
}

// [SECTION] Implementation: diff tree =============================================================

DiffTree DiffTree::compute(const Tree& left, const Tree& right) {
  DiffTree d;
  d.shape_.merge(left);
  d.shape_.merge(right);
  d.left_.assign(d.shape_.node_count(), {0, 0});
  d.right_.assign(d.shape_.node_count(), {0, 0});
  auto place = [&](const Tree& side, std::vector<std::pair<uint64_t, uint64_t>>* values) {
    std::vector<uint32_t> mapped(side.node_count());
    mapped[Tree::kRoot] = Tree::kRoot;
    (*values)[Tree::kRoot] = {side.self(Tree::kRoot), side.total()};
    std::vector<uint32_t> remap(side.symbols().size(), SymbolTable::kNone);
    for (uint32_t i = 1; i < side.node_count(); i++) {
      uint32_t s = side.symbol(i);
      if (remap[s] == SymbolTable::kNone) remap[s] = d.shape_.symbols().find(side.symbols().name(s));
      uint32_t m = d.shape_.child(mapped[side.parent(i)], remap[s]);
      mapped[i] = m;
      (*values)[m] = {side.self(i), side.node_total(i)};
    }
  };
  place(left, &d.left_);
  place(right, &d.right_);
  return d;
}

double DiffTree::change_percent(uint32_t n) const {
  double left_all = double(left_[Tree::kRoot].second), right_all = double(right_[Tree::kRoot].second);
  double l = left_all > 0 ? double(left_[n].second) / left_all : 0;
  double r = right_all > 0 ? double(right_[n].second) / right_all : 0;
  if (l == 0) return r > 0 ? 100.0 : 0.0;
  double change = (r - l) / l * 100.0;
  return change > 100 ? 100 : change < -100 ? -100 : change;
}

// [SECTION] Implementation: selectors =============================================================

SeriesKey::SeriesKey(std::string app_name, Tags tag_list) : app(std::move(app_name)), tags(std::move(tag_list)) {
  // Last value wins for a repeated key: stable sort keeps the given order within a key.
  std::stable_sort(tags.begin(), tags.end(), [](const Tag& a, const Tag& b) { return a.key < b.key; });
  Tags unique;
  for (size_t i = 0; i < tags.size(); i++) {
    if (i + 1 < tags.size() && tags[i + 1].key == tags[i].key) continue;
    unique.push_back(std::move(tags[i]));
  }
  tags = std::move(unique);
}

std::string SeriesKey::to_string() const {
  std::string s = app + "{";
  for (size_t i = 0; i < tags.size(); i++) {
    if (i) s += ',';
    s += tags[i].key + "=" + detail::quote(tags[i].value);
  }
  return s + "}";
}

struct Selector::Compiled {
  std::vector<detail::Regex> regexes;  // one per matcher (unused for = and !=)
};

namespace detail {
inline bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-' || c == ':' || c == '/';
}
}  // namespace detail

Status Selector::parse(std::string_view text, Selector* out) {
  *out = Selector();
  size_t p = 0;
  auto fail = [&](const std::string& what) {
    return detail::error(StatusCode::invalid_argument,
                         "selector '" + std::string(text) + "' at " + std::to_string(p) + ": " + what);
  };
  auto skip_space = [&] {
    while (p < text.size() && detail::is_space(text[p])) p++;
  };
  skip_space();
  size_t app_begin = p;
  while (p < text.size() && detail::is_name_char(text[p])) p++;
  out->app = std::string(text.substr(app_begin, p - app_begin));
  skip_space();
  auto compiled = std::make_shared<Compiled>();
  if (p < text.size()) {
    if (text[p] != '{') return fail("expected '{' after the application name");
    p++;
    while (true) {
      skip_space();
      if (p < text.size() && text[p] == '}') {
        p++;
        break;
      }
      size_t key_begin = p;
      while (p < text.size() && detail::is_name_char(text[p])) p++;
      if (p == key_begin) return p >= text.size() ? fail("missing '}'") : fail("expected a tag key");
      Matcher m;
      m.key = std::string(text.substr(key_begin, p - key_begin));
      skip_space();
      if (text.substr(p, 2) == "=~") {
        m.op = Matcher::Op::regex;
        p += 2;
      } else if (text.substr(p, 2) == "!~") {
        m.op = Matcher::Op::not_regex;
        p += 2;
      } else if (text.substr(p, 2) == "!=") {
        m.op = Matcher::Op::not_equal;
        p += 2;
      } else if (text.substr(p, 1) == "=") {
        m.op = Matcher::Op::equal;
        p += 1;
      } else {
        return fail("expected one of = != =~ !~ after '" + m.key + "'");
      }
      skip_space();
      if (p >= text.size() || (text[p] != '"' && text[p] != '\'' && text[p] != '`'))
        return fail("expected a quoted value");
      char quote = text[p++];
      bool closed = false;
      while (p < text.size()) {
        char c = text[p++];
        if (c == quote) {
          closed = true;
          break;
        }
        if (c == '\\' && quote != '`' && p < text.size()) {
          char e = text[p++];
          m.value += e == 'n' ? '\n' : e == 't' ? '\t' : e;
          continue;
        }
        m.value += c;
      }
      if (!closed) return fail("unterminated string");
      detail::Regex re;
      if (m.op == Matcher::Op::regex || m.op == Matcher::Op::not_regex) {
        Status st = re.compile(m.value);
        if (!st.ok()) return st;
      }
      compiled->regexes.push_back(std::move(re));
      out->matchers.push_back(std::move(m));
      skip_space();
      if (p < text.size() && text[p] == ',') {
        p++;
        continue;
      }
      if (p < text.size() && text[p] == '}') {
        p++;
        break;
      }
      return p >= text.size() ? fail("missing '}'") : fail("expected ',' or '}'");
    }
    skip_space();
    if (p != text.size()) return fail("unexpected text after '}'");
  }
  out->compiled = std::move(compiled);
  return {};
}

bool Selector::matches(const SeriesKey& key) const {
  if (!app.empty() && app != key.app && !(app.size() == key.app.size() + 4 && app.compare(0, key.app.size(), key.app) == 0 &&
                                          app.compare(key.app.size(), 4, ".cpu") == 0))
    return false;
  for (size_t i = 0; i < matchers.size(); i++) {
    const Matcher& m = matchers[i];
    std::string_view value;
    for (const Tag& t : key.tags)
      if (t.key == m.key) value = t.value;
    switch (m.op) {
      case Matcher::Op::equal:
        if (value != m.value) return false;
        break;
      case Matcher::Op::not_equal:
        if (value == m.value) return false;
        break;
      case Matcher::Op::regex:
      case Matcher::Op::not_regex: {
        bool hit;
        if (compiled && i < compiled->regexes.size()) {
          hit = compiled->regexes[i].full_match(value);
        } else {
          detail::Regex re;
          hit = re.compile(m.value).ok() && re.full_match(value);
        }
        if (hit != (m.op == Matcher::Op::regex)) return false;
        break;
      }
    }
  }
  return true;
}

std::string Selector::to_string() const {
  static const char* ops[] = {"=", "!=", "=~", "!~"};
  std::string s = app + "{";
  for (size_t i = 0; i < matchers.size(); i++) {
    if (i) s += ',';
    s += matchers[i].key + ops[int(matchers[i].op)] + detail::quote(matchers[i].value);
  }
  return s + "}";
}

Status SeriesKey::parse(std::string_view text, SeriesKey* out) {
  Selector sel;
  Status st = Selector::parse(text, &sel);
  if (!st.ok()) return st;
  if (sel.app.empty()) return detail::error(StatusCode::invalid_argument, "series '" + std::string(text) + "': no application name");
  Tags tags;
  for (const Matcher& m : sel.matchers) {
    if (m.op != Matcher::Op::equal)
      return detail::error(StatusCode::invalid_argument, "series '" + std::string(text) + "': only key=\"value\" tags");
    tags.push_back({m.key, m.value});
  }
  *out = SeriesKey(sel.app, std::move(tags));
  return {};
}

}  // namespace pyroscope

namespace pyroscope {

// [SECTION] Implementation: file reader and query =================================================
//
// Byte layout (docs/format.md has the full description):
//   file header, 64 bytes: magic "\x89PYRO\r\n\x1a\n", u32 version, u32 header size, i64 resolution,
//     u32 multiplier, u32 flags, i64 creation time, 20 reserved bytes, u32 crc32 of bytes [0, 60)
//   records, back to back: u32 payload size, u32 type, u32 crc32 of (type, payload), payload
// All integers little-endian. Records only ever get appended.

namespace detail {

constexpr char kMagic[8] = {'\x89', 'P', 'Y', 'R', 'O', '\r', '\n', '\x1a'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kFileHeaderSize = 64;
constexpr size_t kRecordHeaderSize = 12;
constexpr uint32_t kMaxRecordPayload = 1u << 30;
constexpr int kMaxLevels = 40;

enum RecordType : uint32_t { kRecordSymbols = 1, kRecordSeries = 2, kRecordTree = 3 };

struct FileHeader {
  uint32_t version = kFormatVersion;
  int64_t resolution = kDefaultResolutionSeconds;
  uint32_t multiplier = 10;
  int64_t created = 0;
};

inline std::string encode_file_header(const FileHeader& h) {
  std::string out(kMagic, 8);
  put_u32(&out, h.version);
  put_u32(&out, uint32_t(kFileHeaderSize));
  put_u64(&out, uint64_t(h.resolution));
  put_u32(&out, h.multiplier);
  put_u32(&out, 0);
  put_u64(&out, uint64_t(h.created));
  out.append(20, '\0');
  put_u32(&out, crc32(out.data(), out.size()));
  return out;
}

inline Status decode_file_header(ByteSpan bytes, FileHeader* h) {
  if (bytes.size < kFileHeaderSize) {
    if (bytes.size >= 8 && std::memcmp(bytes.data, kMagic, 8) != 0)
      return error(StatusCode::corrupt_file, "not a .pyro file (bad magic bytes)");
    return error(StatusCode::corrupt_file, "file too short for a .pyro header (" + std::to_string(bytes.size) + " bytes)");
  }
  const uint8_t* p = bytes.data;
  if (std::memcmp(p, kMagic, 8) != 0) return error(StatusCode::corrupt_file, "not a .pyro file (bad magic bytes)");
  h->version = get_u32(p + 8);
  if (h->version != kFormatVersion)
    return error(StatusCode::unsupported_version, "file format version " + std::to_string(h->version) +
                                                       ", this build reads version " + std::to_string(kFormatVersion));
  if (crc32(p, 60) != get_u32(p + 60)) return error(StatusCode::corrupt_file, "file header checksum mismatch");
  if (get_u32(p + 12) != kFileHeaderSize) return error(StatusCode::corrupt_file, "bad header size");
  h->resolution = int64_t(get_u64(p + 16));
  h->multiplier = get_u32(p + 24);
  h->created = int64_t(get_u64(p + 32));
  if (h->resolution <= 0 || h->resolution > 86400 * 366)
    return error(StatusCode::corrupt_file, "bad resolution " + std::to_string(h->resolution));
  if (h->multiplier < 2 || h->multiplier > 1024)
    return error(StatusCode::corrupt_file, "bad multiplier " + std::to_string(h->multiplier));
  return {};
}

inline void append_record(std::string* out, uint32_t type, const std::string& payload) {
  put_u32(out, uint32_t(payload.size()));
  put_u32(out, type);
  char t[4] = {char(type), char(type >> 8), char(type >> 16), char(type >> 24)};
  uint32_t crc = crc32(t, 4);
  crc = crc32(payload.data(), payload.size(), crc);
  put_u32(out, crc);
  out->append(payload);
}

inline void encode_series(uint64_t id, const SeriesKey& key, std::string* out) {
  put_varint(out, id);
  put_varint(out, key.app.size());
  out->append(key.app);
  put_varint(out, key.tags.size());
  for (const Tag& t : key.tags) {
    put_varint(out, t.key.size());
    out->append(t.key);
    put_varint(out, t.value.size());
    out->append(t.value);
  }
}

// One stored tree: level-0 blocks and the upper levels' aggregates alike.
struct TreeEntry {
  int64_t index;     // level k: covers blocks [index * m^k, (index + 1) * m^k)
  uint64_t offset;   // of the encoded tree inside the file
  uint32_t size;
  uint64_t samples;  // the tree's total, kept here so timelines need no decoding
};

struct SeriesIndex {
  SeriesKey key;
  std::vector<std::vector<TreeEntry>> levels;  // levels[k] sorted by index
  std::vector<uint64_t> prefix_samples;        // prefix sums over levels[0]
};

inline int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

inline int64_t power(uint32_t m, int k) {
  int64_t v = 1;
  for (int i = 0; i < k; i++) {
    if (v > INT64_MAX / m) return INT64_MAX;
    v *= m;
  }
  return v;
}

}  // namespace detail

struct File::Impl {
  std::string owned;   // bytes when we own a copy
  void* mapping = nullptr;
  size_t mapping_size = 0;
  ByteSpan bytes;
  FileInfo info;
  detail::FileHeader header;
  std::shared_ptr<SymbolTable> symbols = std::make_shared<SymbolTable>();
  std::vector<SeriesKey> series_keys;
  std::vector<detail::SeriesIndex> series;
  int levels = 1;  // 1 + highest level with an entry

  ~Impl() { unmap(); }
  void unmap() {
#if defined(PYROSCOPE_PLATFORM_LINUX)
    if (mapping) munmap(mapping, mapping_size);
#endif
    mapping = nullptr;
  }

  Status parse(const OpenOptions& options);
  Status parse_record(uint32_t type, const uint8_t* payload, uint32_t size, uint64_t payload_offset);

  const detail::TreeEntry* find_entry(const detail::SeriesIndex& s, int level, int64_t index) const {
    if (level >= int(s.levels.size())) return nullptr;
    const auto& v = s.levels[size_t(level)];
    auto it = std::lower_bound(v.begin(), v.end(), index, [](const detail::TreeEntry& e, int64_t i) { return e.index < i; });
    return it != v.end() && it->index == index ? &*it : nullptr;
  }
  // Samples of level-0 blocks in [a, b).
  uint64_t samples_in(const detail::SeriesIndex& s, int64_t a, int64_t b) const {
    if (s.levels.empty() || s.prefix_samples.empty() || a >= b) return 0;
    const auto& v = s.levels[0];
    auto lo = std::lower_bound(v.begin(), v.end(), a, [](const detail::TreeEntry& e, int64_t i) { return e.index < i; });
    auto hi = std::lower_bound(lo, v.end(), b, [](const detail::TreeEntry& e, int64_t i) { return e.index < i; });
    return s.prefix_samples[size_t(hi - v.begin())] - s.prefix_samples[size_t(lo - v.begin())];
  }
  bool has_blocks(const detail::SeriesIndex& s, int64_t a, int64_t b) const {
    if (s.levels.empty() || a >= b) return false;
    const auto& v = s.levels[0];
    auto lo = std::lower_bound(v.begin(), v.end(), a, [](const detail::TreeEntry& e, int64_t i) { return e.index < i; });
    return lo != v.end() && lo->index < b;
  }

  // Calls visit(entry) for a minimal set of stored trees that together cover exactly the level-0
  // blocks of series s in [a, b): whole stored nodes inside the range, descending only at the edges
  // and where an upper node was not stored (its span had one non-empty child, or is not complete).
  template <class Visit>
  void cover(const detail::SeriesIndex& s, int64_t a, int64_t b, Visit&& visit) const {
    struct Work {
      int level;
      int64_t a, b;    // block range, inside one node of `level + 1` or the whole query
      bool whole_node; // [a, b) is exactly node (level, a / m^level)
    };
    uint32_t m = header.multiplier;
    std::vector<Work> stack;
    int top = std::max(0, std::min(levels, int(s.levels.size())) - 1);
    // Start at the highest level whose node span fits in the range.
    while (top > 0 && detail::power(m, top) > b - a) top--;
    stack.push_back({top, a, b, false});
    while (!stack.empty()) {
      Work w = stack.back();
      stack.pop_back();
      if (w.a >= w.b || !has_blocks(s, w.a, w.b)) continue;
      if (w.level == 0) {
        const auto& v = s.levels[0];
        auto it = std::lower_bound(v.begin(), v.end(), w.a, [](const detail::TreeEntry& e, int64_t i) { return e.index < i; });
        for (; it != v.end() && it->index < w.b; ++it) visit(*it);
        continue;
      }
      int64_t span = detail::power(m, w.level);
      if (w.whole_node) {
        if (const detail::TreeEntry* e = find_entry(s, w.level, detail::floor_div(w.a, span))) {
          visit(*e);
          continue;
        }
        int64_t child_span = span / m;
        for (int64_t c = w.b; c > w.a;) {  // pushed right to left so they pop in time order
          c -= child_span;
          stack.push_back({w.level - 1, c, c + child_span, true});
        }
        continue;
      }
      int64_t first_whole = detail::floor_div(w.a + span - 1, span);
      int64_t end_whole = detail::floor_div(w.b, span);
      if (first_whole >= end_whole) {
        stack.push_back({w.level - 1, w.a, w.b, false});
        continue;
      }
      stack.push_back({w.level - 1, end_whole * span, w.b, false});
      for (int64_t j = end_whole; j-- > first_whole;) stack.push_back({w.level, j * span, (j + 1) * span, true});
      stack.push_back({w.level - 1, w.a, first_whole * span, false});
    }
  }
};

Status File::Impl::parse_record(uint32_t type, const uint8_t* payload, uint32_t size, uint64_t payload_offset) {
  using detail::error;
  detail::ByteReader in(payload, size);
  switch (type) {
    case detail::kRecordSymbols:
      return symbols->decode_trie({payload, size});
    case detail::kRecordSeries: {
      uint64_t id = in.varint();
      std::string_view app = in.bytes(in.varint());
      uint64_t tag_count = in.varint();
      if (in.failed || id != series.size() || tag_count > size) return error(StatusCode::corrupt_file, "bad series record");
      Tags tags;
      for (uint64_t i = 0; i < tag_count && !in.failed; i++) {
        std::string_view k = in.bytes(in.varint());
        std::string_view v = in.bytes(in.varint());
        tags.push_back({std::string(k), std::string(v)});
      }
      if (in.failed || !in.done() || app.empty()) return error(StatusCode::corrupt_file, "bad series record");
      SeriesKey key(std::string(app), tags);
      if (key.tags.size() != tags.size()) return error(StatusCode::corrupt_file, "series record: repeated tag key");
      detail::SeriesIndex s;
      s.key = key;
      series.push_back(std::move(s));
      series_keys.push_back(std::move(key));
      return {};
    }
    case detail::kRecordTree: {
      uint64_t id = in.varint();
      uint64_t level = in.varint();
      uint64_t raw_index = in.varint();
      uint64_t samples = in.varint();
      if (in.failed || id >= series.size() || level >= uint64_t(detail::kMaxLevels))
        return error(StatusCode::corrupt_file, "bad tree record header");
      int64_t index = int64_t(raw_index >> 1) ^ -int64_t(raw_index & 1);  // zigzag: times before 1970 too
      auto& levels_of = series[id].levels;
      if (levels_of.size() <= level) levels_of.resize(level + 1);
      auto& entries = levels_of[level];
      if (!entries.empty() && entries.back().index >= index)
        return error(StatusCode::corrupt_file, "tree record out of order for " + series[id].key.to_string());
      detail::TreeEntry e;
      e.index = index;
      e.offset = payload_offset + uint64_t(in.p - payload);
      e.size = uint32_t(in.remaining());
      e.samples = samples;
      if (level > 0) {
        // The writer seals a span only after all its blocks, so they are already indexed: an upper
        // tree must hold exactly their samples, or queries would disagree with their own timelines.
        int64_t span = detail::power(header.multiplier, int(level)), first, end;
        if (__builtin_mul_overflow(index, span, &first) || __builtin_add_overflow(first, span, &end))
          return error(StatusCode::corrupt_file, "tree record: node index out of range");
        uint64_t below = samples_in(series[id], first, end);
        if (below != samples)
          return error(StatusCode::corrupt_file, "level-" + std::to_string(level) + " node " + std::to_string(index) +
                                                     " of " + series[id].key.to_string() + " holds " + std::to_string(samples) +
                                                     " samples, its blocks " + std::to_string(below));
      }
      entries.push_back(e);
      levels = std::max(levels, int(level) + 1);
      if (level == 0) {
        auto& prefix = series[id].prefix_samples;
        if (prefix.empty()) prefix.push_back(0);
        uint64_t sum;
        if (detail::add_overflows(prefix.back(), samples, &sum)) return error(StatusCode::corrupt_file, "sample count overflow");
        prefix.push_back(sum);
        info.block_count++;
        int64_t start = index * header.resolution;
        if (info.block_count == 1 || start < info.first_time) info.first_time = start;
        info.end_time = std::max(info.end_time, start + header.resolution);
      }
      info.stored_trees++;
      return {};
    }
    default:
      return {};  // unknown record types are skipped: later minor versions may add optional ones
  }
}

Status File::Impl::parse(const OpenOptions& options) {
  using detail::error;
  Status st = detail::decode_file_header(bytes, &header);
  if (!st.ok()) return st;
  info = FileInfo();
  info.format_version = header.version;
  info.resolution_seconds = header.resolution;
  info.multiplier = header.multiplier;
  info.file_bytes = bytes.size;
  size_t pos = detail::kFileHeaderSize;
  while (pos < bytes.size) {
    size_t left = bytes.size - pos;
    if (left < detail::kRecordHeaderSize) break;  // torn tail
    const uint8_t* p = bytes.data + pos;
    uint32_t size = detail::get_u32(p);
    uint32_t type = detail::get_u32(p + 4);
    uint32_t crc = detail::get_u32(p + 8);
    if (size > detail::kMaxRecordPayload || size > left - detail::kRecordHeaderSize) {
      if (size > detail::kMaxRecordPayload && left - detail::kRecordHeaderSize >= detail::kMaxRecordPayload) {
        st = error(StatusCode::corrupt_file, "record at offset " + std::to_string(pos) + ": impossible size");
      } else {
        break;  // torn tail: a record the writer did not finish
      }
    } else {
      uint32_t actual = detail::crc32(p + 4, 4);
      actual = detail::crc32(p + detail::kRecordHeaderSize, size, actual);
      if (actual != crc) {
        // A bad checksum on the very last record is a write that never completed; anywhere else
        // it is damage.
        if (pos + detail::kRecordHeaderSize + size == bytes.size) break;
        st = error(StatusCode::corrupt_file, "record at offset " + std::to_string(pos) + ": checksum mismatch");
      } else {
        st = parse_record(type, p + detail::kRecordHeaderSize, size, pos + detail::kRecordHeaderSize);
        if (!st.ok()) st = Status(st.code(), "record at offset " + std::to_string(pos) + ": " + st.message());
      }
    }
    if (!st.ok()) {
      if (!options.salvage) return st;
      info.salvage_note = st.to_string() + "; " + std::to_string(bytes.size - pos) + " bytes from there on were skipped";
      break;
    }
    pos += detail::kRecordHeaderSize + size;
  }
  info.valid_bytes = pos;
  info.series_count = series.size();
  info.symbol_count = symbols->size();
  for (auto& s : series) {
    if (s.levels.empty()) s.levels.resize(1);
    if (s.prefix_samples.empty()) s.prefix_samples.push_back(0);
  }
  return {};
}

File::File() : impl_(new Impl) {}
File::~File() = default;
File::File(File&&) noexcept = default;
File& File::operator=(File&&) noexcept = default;

Status File::open_span(ByteSpan bytes, const OpenOptions& options) {
  impl_.reset(new Impl);
  impl_->bytes = bytes;
  return impl_->parse(options);
}

Status File::open_bytes(std::string bytes, const OpenOptions& options) {
  impl_.reset(new Impl);
  impl_->owned = std::move(bytes);
  impl_->bytes = {reinterpret_cast<const uint8_t*>(impl_->owned.data()), impl_->owned.size()};
  return impl_->parse(options);
}

namespace detail {
inline Status read_whole_file(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return error(StatusCode::io_error, path + ": " + std::strerror(errno));
  out->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) return error(StatusCode::io_error, path + ": read error");
  return {};
}
}  // namespace detail

Status File::open_path(const std::string& path, const OpenOptions& options) {
  impl_.reset(new Impl);
#if defined(PYROSCOPE_PLATFORM_LINUX)
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return detail::error(StatusCode::io_error, path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return detail::error(StatusCode::io_error, path + ": " + std::strerror(e));
  }
  size_t size = size_t(st.st_size);
  if (size > 0) {
    void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      return detail::error(StatusCode::io_error, path + ": mmap: " + std::strerror(e));
    }
    impl_->mapping = m;
    impl_->mapping_size = size;
    impl_->bytes = {static_cast<const uint8_t*>(m), size};
  }
  ::close(fd);
#else
  Status rs = detail::read_whole_file(path, &impl_->owned);
  if (!rs.ok()) return rs;
  impl_->bytes = {reinterpret_cast<const uint8_t*>(impl_->owned.data()), impl_->owned.size()};
#endif
  Status s = impl_->parse(options);
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  return s;
}

const FileInfo& File::info() const { return impl_->info; }
const std::vector<SeriesKey>& File::series() const { return impl_->series_keys; }
const SymbolTable& File::symbols() const { return *impl_->symbols; }

// ---- Dataset ----

struct Dataset::Impl {
  std::vector<File> files;
};

Dataset::Dataset() : impl_(new Impl) {}
Dataset::~Dataset() = default;
Dataset::Dataset(Dataset&&) noexcept = default;
Dataset& Dataset::operator=(Dataset&&) noexcept = default;

Status Dataset::add_file(const std::string& path, const OpenOptions& options) {
  File f;
  Status st = f.open_path(path, options);
  if (!st.ok()) return st;
  add(std::move(f));
  return {};
}

Status Dataset::add_bytes(std::string bytes, const OpenOptions& options) {
  File f;
  Status st = f.open_bytes(std::move(bytes), options);
  if (!st.ok()) return st;
  add(std::move(f));
  return {};
}

void Dataset::add(File file) { impl_->files.push_back(std::move(file)); }
size_t Dataset::file_count() const { return impl_->files.size(); }
const File& Dataset::file(size_t i) const { return impl_->files[i]; }

std::vector<std::string> Dataset::apps() const {
  std::set<std::string> out;
  for (const File& f : impl_->files)
    for (const SeriesKey& k : f.series()) out.insert(k.app);
  return {out.begin(), out.end()};
}

std::vector<std::string> Dataset::tag_keys(std::string_view app) const {
  std::set<std::string> out;
  for (const File& f : impl_->files)
    for (const SeriesKey& k : f.series())
      if (app.empty() || k.app == app)
        for (const Tag& t : k.tags) out.insert(t.key);
  return {out.begin(), out.end()};
}

std::vector<std::string> Dataset::tag_values(std::string_view app, std::string_view key) const {
  std::set<std::string> out;
  for (const File& f : impl_->files)
    for (const SeriesKey& k : f.series())
      if (app.empty() || k.app == app)
        for (const Tag& t : k.tags)
          if (t.key == key) out.insert(t.value);
  return {out.begin(), out.end()};
}

std::vector<SeriesKey> Dataset::series(const Selector& selector) const {
  std::set<SeriesKey> out;
  for (const File& f : impl_->files)
    for (const SeriesKey& k : f.series())
      if (selector.matches(k)) out.insert(k);
  return {out.begin(), out.end()};
}

void Dataset::time_span(int64_t* first, int64_t* end) const {
  bool any = false;
  *first = *end = 0;
  for (const File& f : impl_->files) {
    if (f.info().block_count == 0) continue;
    if (!any || f.info().first_time < *first) *first = f.info().first_time;
    if (!any || f.info().end_time > *end) *end = f.info().end_time;
    any = true;
  }
}

int64_t Dataset::resolution_seconds() const {
  return impl_->files.empty() ? kDefaultResolutionSeconds : impl_->files[0].info().resolution_seconds;
}

Status Dataset::query(std::string_view selector, int64_t from, int64_t until, QueryResult* out,
                      const QueryOptions& options) const {
  Selector sel;
  Status st = Selector::parse(selector, &sel);
  if (!st.ok()) return st;
  return query(sel, from, until, out, options);
}

Status Dataset::query(const Selector& selector, int64_t from, int64_t until, QueryResult* out,
                      const QueryOptions& options) const {
  *out = QueryResult();
  if (until <= from) return detail::error(StatusCode::invalid_argument, "empty time range (until <= from)");
  int64_t resolution = resolution_seconds();
  for (const File& f : impl_->files)
    if (f.info().resolution_seconds != resolution)
      return detail::error(StatusCode::invalid_argument, "files with different resolutions cannot be queried together");
  int64_t a = detail::floor_div(from, resolution);
  int64_t b = detail::floor_div(until + resolution - 1, resolution);
  int64_t blocks = b - a;
  int64_t step_blocks = 1;
  if (options.timeline_points > 0 && uint64_t(blocks) > options.timeline_points)
    step_blocks = (blocks + int64_t(options.timeline_points) - 1) / int64_t(options.timeline_points);
  size_t points = size_t((blocks + step_blocks - 1) / step_blocks);
  if (points > (size_t(1) << 28)) return detail::error(StatusCode::invalid_argument, "time range too long for one-block timeline points");
  out->timeline.start = a * resolution;
  out->timeline.step = step_blocks * resolution;
  out->timeline.samples.assign(points, 0);

  std::set<SeriesKey> matched_keys;  // a series split over several files counts once
  for (const File& f : impl_->files) {
    const File::Impl& fi = f.impl();
    uint32_t m = fi.header.multiplier;
    std::vector<uint32_t> remap(fi.symbols->size(), SymbolTable::kNone);
    for (const detail::SeriesIndex& s : fi.series) {
      if (!selector.matches(s.key)) continue;
      matched_keys.insert(s.key);
      int levels_needed = 1;
      while (levels_needed < 64 && detail::power(m, levels_needed) < blocks) levels_needed++;
      out->merge_bound += uint64_t(2 * (m - 1)) * uint64_t(levels_needed);
      // Timeline without decoding trees: walk the level-0 entries in the range, or, when there are
      // many more entries than points, two binary searches in the prefix sums per point.
      const auto& blocks0 = s.levels[0];
      auto first = std::lower_bound(blocks0.begin(), blocks0.end(), a,
                                    [](const detail::TreeEntry& e, int64_t i) { return e.index < i; });
      auto last = std::lower_bound(first, blocks0.end(), b,
                                   [](const detail::TreeEntry& e, int64_t i) { return e.index < i; });
      if (size_t(last - first) <= points * 32) {
        for (auto it = first; it != last; ++it) out->timeline.samples[size_t((it->index - a) / step_blocks)] += it->samples;
      } else {
        for (size_t i = 0; i < points; i++) {
          int64_t pa = a + int64_t(i) * step_blocks;
          out->timeline.samples[i] += fi.samples_in(s, pa, std::min(b, pa + step_blocks));
        }
      }
      if (!options.want_tree) continue;
      Status failed;
      fi.cover(s, a, b, [&](const detail::TreeEntry& e) {
        if (!failed.ok()) return;
        ByteSpan tree_bytes{fi.bytes.data + e.offset, e.size};
        // Map the file's ids to the result's lazily: only symbols that occur get interned.
        detail::DecodedTree d;
        Status ds = detail::decode_tree(tree_bytes, fi.symbols->size(), &d);
        if (!ds.ok()) {
          failed = Status(ds.code(), s.key.to_string() + " block " + std::to_string(e.index) + ": " + ds.message());
          return;
        }
        uint64_t decoded_total = d.root_self;
        for (size_t i = 0; i < d.parent.size(); i++)
          if (d.parent[i] == UINT32_MAX) decoded_total += d.total[i];
        if (decoded_total != e.samples) {
          failed = detail::error(StatusCode::corrupt_file, s.key.to_string() + " block " + std::to_string(e.index) +
                                                               ": tree total differs from its record");
          return;
        }
        for (uint32_t sym : d.symbol)
          if (remap[sym] == SymbolTable::kNone) remap[sym] = out->tree.symbols().intern(fi.symbols->name(sym));
        Status ms = out->tree.add_decoded(d, &remap);
        if (!ms.ok()) failed = ms;
        out->merges++;
      });
      if (!failed.ok()) return failed;
    }
  }
  out->series_matched = uint32_t(matched_keys.size());
  return {};
}

}  // namespace pyroscope

namespace pyroscope {

// [SECTION] Implementation: file writer ===========================================================
//
// Upper levels are written once, when their span is complete (the first block after the span
// arrives), and only when at least two of their children hold data: a span with one non-empty child
// would store a copy of that child, so the reader descends to the child instead (Pyroscope's rule).
// Each level keeps one in-memory accumulator: the merge of the completed children of its open span.

struct Writer::State {
  std::string path;
  int fd = -1;
  detail::FileHeader header;
  WriterOptions options;
  uint64_t file_size = 0;
  std::shared_ptr<SymbolTable> symbols = std::make_shared<SymbolTable>();
  uint32_t symbols_written = 0;  // names [0, symbols_written) are in the file
  std::map<SeriesKey, uint32_t> series_ids;
  struct Accumulator {
    bool active = false;
    int64_t index = 0;  // node index at this level
    uint32_t nonempty_children = 0;
    std::unique_ptr<Tree> tree;
  };
  struct Series {
    int64_t last_block = 0;
    bool has_blocks = false;
    std::vector<Accumulator> levels;  // levels[k] for k >= 1; levels[0] unused
  };
  std::vector<Series> series;
  int max_level = 1;

  ~State() {
    if (fd >= 0) ::close(fd);
  }

  Status write_all(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        Status st = detail::error(StatusCode::io_error, path + ": write: " + std::strerror(errno));
        // Cut a partial record off so the file stays appendable.
        if (ftruncate(fd, off_t(file_size)) != 0) {
        }
        return st;
      }
      done += size_t(n);
    }
    file_size += bytes.size();
    if (options.fsync_each_block && fsync(fd) != 0)
      return detail::error(StatusCode::io_error, path + ": fsync: " + std::strerror(errno));
    return {};
  }

  void tree_record(uint32_t series_id, int level, int64_t index, const Tree& tree, std::string* out) {
    std::string payload;
    detail::put_varint(&payload, series_id);
    detail::put_varint(&payload, uint64_t(level));
    detail::put_varint(&payload, (uint64_t(index) << 1) ^ uint64_t(index >> 63));
    detail::put_varint(&payload, tree.total());
    tree.encode(&payload);
    detail::append_record(out, detail::kRecordTree, payload);
  }

  // Completes every open span of series s that does not contain block, bottom-up: writes it if two
  // or more children had data and hands its tree to the level above.
  void seal_spans(uint32_t id, int64_t block, std::string* out) {
    Series& s = series[id];
    for (int k = 1; k <= max_level; k++) {
      Accumulator& acc = s.levels[size_t(k)];
      int64_t span = detail::power(header.multiplier, k);
      if (!acc.active || acc.index == detail::floor_div(block, span)) continue;
      if (acc.nonempty_children >= 2) tree_record(id, k, acc.index, *acc.tree, out);
      if (k < max_level) {
        Accumulator& up = s.levels[size_t(k + 1)];
        if (!up.active) {
          up.active = true;
          up.index = detail::floor_div(acc.index, header.multiplier);
          up.nonempty_children = 0;
          up.tree.reset(new Tree(symbols));
        }
        up.tree->merge(*acc.tree);
        up.nonempty_children++;
      }
      acc.active = false;
      acc.tree.reset();
    }
  }

  void add_to_level1(uint32_t id, int64_t block, const Tree& tree) {
    Accumulator& acc = series[id].levels[1];
    if (!acc.active) {
      acc.active = true;
      acc.index = detail::floor_div(block, header.multiplier);
      acc.nonempty_children = 0;
      acc.tree.reset(new Tree(symbols));
    }
    acc.tree->merge(tree);
    acc.nonempty_children++;
  }
};

Writer::Writer() = default;
Writer::~Writer() { close(); }
Writer::Writer(Writer&&) noexcept = default;
Writer& Writer::operator=(Writer&&) noexcept = default;
bool Writer::is_open() const { return state_ && state_->fd >= 0; }
int64_t Writer::resolution_seconds() const { return state_ ? state_->header.resolution : 0; }

Status Writer::close() {
  if (!state_) return {};
  Status st;
  if (state_->fd >= 0 && ::close(state_->fd) != 0)
    st = detail::error(StatusCode::io_error, state_->path + ": close: " + std::strerror(errno));
  state_->fd = -1;
  state_.reset();
  return st;
}

Status Writer::open(const std::string& path, const WriterOptions& options) {
  using detail::error;
  close();
  if (options.multiplier < 2 || options.multiplier > 1024)
    return error(StatusCode::invalid_argument, "multiplier must be in [2, 1024]");
  if (options.resolution_seconds <= 0) return error(StatusCode::invalid_argument, "resolution must be positive");
  std::unique_ptr<State> s(new State);
  s->path = path;
  s->options = options;

  struct stat st;
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists) {
    // Create the file with its header under a temporary name and rename it into place, so a reader or
    // a crash never sees a file without a complete header.
    s->header.resolution = options.resolution_seconds;
    s->header.multiplier = options.multiplier;
    s->header.created = int64_t(std::time(nullptr));
    std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return error(StatusCode::io_error, tmp + ": " + std::strerror(errno));
    std::string header = detail::encode_file_header(s->header);
    bool ok = ::write(fd, header.data(), header.size()) == ssize_t(header.size());
    ok = ok && (!options.fsync_each_block || fsync(fd) == 0);
    int e = errno;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
      if (ok) e = errno;
      ::unlink(tmp.c_str());
      return error(StatusCode::io_error, path + ": " + std::strerror(e));
    }
  }
  s->fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (s->fd < 0) return error(StatusCode::io_error, path + ": " + std::strerror(errno));
#if defined(PYROSCOPE_PLATFORM_LINUX)
  if (flock(s->fd, LOCK_EX | LOCK_NB) != 0)
    return error(StatusCode::io_error, path + ": is being written by another process");
#endif
  // Read back what is there: the dictionary, the series, and the open spans' accumulators.
  File existing;
  Status rs = existing.open_path(path);
  if (!rs.ok()) return Status(rs.code(), "refusing to append: " + rs.message());
  const File::Impl& fi = existing.impl();
  s->header = fi.header;
  uint32_t m = s->header.multiplier;
  s->max_level = 1;
  while (s->max_level + 1 < detail::kMaxLevels && detail::power(m, s->max_level + 1) <= (int64_t(1) << 34)) s->max_level++;
  if (fi.info.valid_bytes < fi.info.file_bytes) {
    // A torn tail from a writer that was killed: cut it so new records follow valid ones.
    if (ftruncate(s->fd, off_t(fi.info.valid_bytes)) != 0)
      return error(StatusCode::io_error, path + ": cutting torn tail: " + std::strerror(errno));
  }
  s->file_size = fi.info.valid_bytes;
  if (lseek(s->fd, off_t(s->file_size), SEEK_SET) < 0) return error(StatusCode::io_error, path + ": seek failed");
  for (uint32_t i = 0; i < fi.symbols->size(); i++) s->symbols->intern(fi.symbols->name(i));
  s->symbols_written = s->symbols->size();
  s->series.resize(fi.series.size());
  for (size_t id = 0; id < fi.series.size(); id++) {
    const detail::SeriesIndex& si = fi.series[id];
    s->series_ids[si.key] = uint32_t(id);
    State::Series& ws = s->series[id];
    ws.levels.resize(size_t(s->max_level) + 1);
    if (si.levels.empty() || si.levels[0].empty()) continue;
    ws.has_blocks = true;
    ws.last_block = si.levels[0].back().index;
    // Rebuild each level's accumulator: the completed children of the span holding the last block.
    for (int k = 1; k <= s->max_level; k++) {
      int64_t span = detail::power(m, k), child_span = span / m;
      int64_t node = detail::floor_div(ws.last_block, span);
      int64_t begin = node * span;
      int64_t end = k == 1 ? ws.last_block + 1 : detail::floor_div(ws.last_block, child_span) * child_span;
      State::Accumulator& acc = ws.levels[size_t(k)];
      acc.nonempty_children = 0;
      for (int64_t c = begin; c < end; c += child_span)
        if (fi.has_blocks(si, c, std::min(end, c + child_span))) acc.nonempty_children++;
      if (acc.nonempty_children == 0) continue;
      acc.active = true;
      acc.index = node;
      acc.tree.reset(new Tree(s->symbols));
      Status failed;
      fi.cover(si, begin, end, [&](const detail::TreeEntry& e) {
        if (failed.ok()) failed = acc.tree->merge_encoded({fi.bytes.data + e.offset, e.size}, nullptr);
      });
      if (!failed.ok()) return Status(failed.code(), "refusing to append: " + path + ": " + failed.message());
    }
  }
  state_ = std::move(s);
  return {};
}

Status Writer::append(const SeriesKey& series_key, int64_t block_start, const Tree& tree) {
  using detail::error;
  if (!state_ || state_->fd < 0) return error(StatusCode::invalid_argument, "writer is not open");
  State& s = *state_;
  if (detail::floor_div(block_start, s.header.resolution) * s.header.resolution != block_start)
    return error(StatusCode::invalid_argument, "block start " + std::to_string(block_start) +
                                                   " is not a multiple of the resolution (" +
                                                   std::to_string(s.header.resolution) + " s)");
  if (series_key.app.empty()) return error(StatusCode::invalid_argument, "series without an application name");
  if (tree.total() == 0) return {};
  SeriesKey key(series_key.app, series_key.tags);  // normalizes tag order
  int64_t block = detail::floor_div(block_start, s.header.resolution);
  std::string out;
  uint32_t id;
  auto found = s.series_ids.find(key);
  if (found == s.series_ids.end()) {
    id = uint32_t(s.series.size());
    std::string payload;
    detail::encode_series(id, key, &payload);
    detail::append_record(&out, detail::kRecordSeries, payload);
  } else {
    id = found->second;
    const State::Series& existing = s.series[id];
    if (existing.has_blocks && block <= existing.last_block)
      return error(StatusCode::out_of_order, key.to_string() + ": block at " + std::to_string(block_start) +
                                                 " is not after the last block at " +
                                                 std::to_string(existing.last_block * s.header.resolution));
  }
  // The block in the file's symbol ids; new names go out first so every record refers back only.
  Tree block_tree(s.symbols);
  block_tree.merge(tree);
  if (s.symbols->size() > s.symbols_written) {
    std::string payload;
    s.symbols->encode_trie(s.symbols_written, &payload);
    std::string symbols_record;
    detail::append_record(&symbols_record, detail::kRecordSymbols, payload);
    out.insert(0, symbols_record);
  }
  bool new_series = found == s.series_ids.end();
  if (new_series) {
    s.series.emplace_back();
    s.series.back().levels.resize(size_t(s.max_level) + 1);
    s.series_ids[key] = id;
  }
  s.seal_spans(id, block, &out);
  s.tree_record(id, 0, block, block_tree, &out);
  Status st = s.write_all(out);
  if (!st.ok()) {
    // The file was cut back to its last complete record, but the open spans already moved on: the
    // writer closes, and reopening the file rebuilds its state from what is stored.
    close();
    return Status(st.code(), st.message() + " (writer closed; reopen to continue)");
  }
  s.symbols_written = s.symbols->size();
  s.add_to_level1(id, block, block_tree);
  s.series[id].has_blocks = true;
  s.series[id].last_block = block;
  return {};
}

}  // namespace pyroscope


// [SECTION] Implementation: sampler backend (Linux) ===============================================
// (During parallel development this part lives in pyroscope_sampler.inl; it is pasted here before
// landing so the library stays one file.)
#if __has_include("pyroscope_sampler.inl")
#include "pyroscope_sampler.inl"
#endif

#endif  // PYROSCOPE_IMPLEMENTATION

/*
// [SECTION] License ===============================================================================
MIT License

Copyright (c) 2026 the pyroscope.hpp authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense,
and/or sell copies of the Software, and to permit persons to whom the Software is furnished to do so,
subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN
NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY,
WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
