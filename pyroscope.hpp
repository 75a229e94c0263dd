/* pyroscope.hpp — continuous CPU profiling for C++ programs, in one header.
   (Generated from the parts in src/ by scripts/assemble.py: edit those, then run the script.)

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

     Another tool's profile (pprof, folded, perf script, speedscope, .cpuprofile; docs/formats.md):
         pyroscope::ImportOptions options;
         options.app = "checkout";
         std::vector<pyroscope::ProfileBlock> blocks;
         pyroscope::import_profile(bytes, options, &blocks);  // then data.add_blocks(blocks)

   SECTIONS (each marked in the code by a "// [SECTION] name" banner)
     [SECTION] Configuration and platform detection
     [SECTION] Status codes
     [SECTION] Core types: labels, series keys, byte spans
     [SECTION] Symbol table (a trie on disk)
     [SECTION] Folded-stack tree
     [SECTION] Diff tree
     [SECTION] Tree analysis: sandwich, recursion, short names, name search
     [SECTION] File format: writer
     [SECTION] File format: reader, dataset and query
     [SECTION] Formats: import and export
     [SECTION] Tag scopes
     [SECTION] Profiler API
     [SECTION] Implementation: helpers (varint, crc32, regex)
     [SECTION] Implementation: symbol table
     [SECTION] Implementation: tree and folded text
     [SECTION] Implementation: diff tree
     [SECTION] Implementation: tree analysis
     [SECTION] Implementation: selectors
     [SECTION] Implementation: file reader and query
     [SECTION] Implementation: file writer
     [SECTION] Implementation: tag scopes
     [SECTION] Implementation: formats (pprof, folded, perf script, speedscope, .cpuprofile)
     [SECTION] Implementation: sampler backend (Linux)
     [SECTION] Implementation: allocation sampler (Linux)
     [SECTION] Implementation: wall-clock sampler (Linux)
     [SECTION] Implementation: symbolizer (Linux)
     [SECTION] Implementation: push to a Pyroscope server (Linux)
     [SECTION] Implementation: profiler API (Linux)
     [SECTION] Implementation: profiler API without a sampler
     [SECTION] License

   CONFIGURATION SWITCHES (define before including)
     PYROSCOPE_IMPLEMENTATION   compile the implementation into this translation unit (exactly one)
     PYROSCOPE_NO_SAMPLER       leave the sampler out (read/write/query only); automatic under Emscripten
     PYROSCOPE_ASSERT(c)        replace the assert used for programmer errors (default: assert)
     PYROSCOPE_WITH_ZLIB        gzip for pprof import/export through zlib (<zlib.h>, link -lz)
     PYROSCOPE_WITH_JSON        speedscope and .cpuprofile import (nlohmann/json, <nlohmann/json.hpp>)
     PYROSCOPE_ALLOCATION_PROFILING  with PYROSCOPE_IMPLEMENTATION: interpose malloc, free, operator new,
                                ... in this program and sample allocations (docs/memory.md); ignored
                                under ASan/TSan/MSan (allocation_profiling_compiled() says why)

   THREAD SAFETY (each declaration says more)
     Tree, SymbolTable, Writer, File, Dataset: one thread at a time per object; distinct objects are
     independent. const member functions of File and Dataset may run concurrently.
     tag_scope / tag_wrapper: any thread, lock-free after a tag set's first use.
     start / stop / is_running: any thread (the log callback too, except stop); see each declaration.
*/
#ifndef PYROSCOPE_HPP_INCLUDED
#define PYROSCOPE_HPP_INCLUDED

// [SECTION] Configuration and platform detection ==================================================

#include <atomic>
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
#elif defined(__APPLE__) || defined(__unix__)
// Other POSIX systems: reading, writing and querying files (POSIX file calls); the sampler is
// Linux-only for now.
#define PYROSCOPE_PLATFORM_OTHER 1
#ifndef PYROSCOPE_NO_SAMPLER
#define PYROSCOPE_NO_SAMPLER 1
#endif
#else
// Windows has no open/ftruncate/flock as the writer uses them: not supported yet, rather than half-built.
#error "pyroscope.hpp: supported platforms are Linux, other POSIX systems (files only) and Emscripten"
#endif

#if !defined(__GNUC__)
// GCC and Clang (which defines __GNUC__ too): the implementation uses __builtin_*_overflow.
#error "pyroscope.hpp: needs GCC or Clang"
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
  X(not_running, "profiler not running")                                  \
  X(too_large, "input exceeds a size limit")                              \
  X(feature_disabled, "feature not compiled into this build")

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

// The profile type of a series when none is given: CPU time, as in Pyroscope's `app{}` = `app.cpu{}`.
constexpr const char* kDefaultProfileType = "cpu";

// A series is an application name, a profile type and a set of tags: Pyroscope's
// `app.cpu{region=eu-north}`. Tags are kept sorted by key, with unique keys (the last value given for
// a key wins). Types are names such as cpu, wall, alloc_space, inuse_objects, or any other sample type
// a pprof profile carries ([A-Za-z_][A-Za-z0-9_]*).
struct SeriesKey {
  std::string app;
  std::string type = kDefaultProfileType;
  Tags tags;

  SeriesKey() = default;
  SeriesKey(std::string app_name, Tags tag_list);  // a cpu series
  SeriesKey(std::string app_name, std::string profile_type, Tags tag_list);
  // app.type{k1="v1",k2="v2"}: the selector form that matches exactly this series' type and tags.
  std::string to_string() const;
  // Parses the to_string() form back (used by the command line); without a type, cpu.
  static Status parse(std::string_view text, SeriesKey* out);
  bool operator==(const SeriesKey& o) const { return app == o.app && type == o.type && tags == o.tags; }
  bool operator<(const SeriesKey& o) const {
    if (app != o.app) return app < o.app;
    if (type != o.type) return type < o.type;
    return tags < o.tags;
  }
};

// How a series' values add up over time: CPU time and allocations are summed over a range; gauges
// such as in-use memory are averaged over the blocks that hold data (a 1-hour range of a process
// holding 100 MB shows 100 MB, not 360 times that).
enum class Aggregation : uint8_t { sum = 0, average = 1 };
const char* aggregation_name(Aggregation aggregation);  // "sum", "average"

// What a series' values mean, stored once per series (pprof's sample type unit and period).
struct SeriesInfo {
  std::string unit = "samples";  // samples, nanoseconds, bytes, objects, count, ...
  Aggregation aggregation = Aggregation::sum;
  int64_t period = 0;            // one sample stands for this much of period_unit (0: not known)
  std::string period_type;       // pprof's period type: "cpu", "space", ... ("" when period is 0)
  std::string period_unit;       // "nanoseconds", "bytes", ...
  bool operator==(const SeriesInfo& o) const {
    return unit == o.unit && aggregation == o.aggregation && period == o.period && period_type == o.period_type &&
           period_unit == o.period_unit;
  }
  bool operator!=(const SeriesInfo& o) const { return !(*this == o); }
  std::string to_string() const;  // "bytes, average", "samples, sum, period 10000000 nanoseconds"
};

// The unit and aggregation Pyroscope gives a profile type: cpu, wall, itimer -> samples; alloc_space,
// inuse_space -> bytes; alloc_objects, inuse_objects -> objects; inuse_* and goroutines averaged;
// *_duration -> nanoseconds; anything else -> count, summed.
SeriesInfo default_series_info(std::string_view profile_type);
// [A-Za-z_][A-Za-z0-9_]*, at most 64 bytes.
bool is_valid_profile_type(std::string_view profile_type);

// Time is cut into blocks of `resolution_seconds` (10 s). Timestamps are unix seconds.
constexpr int64_t kDefaultResolutionSeconds = 10;

// [from, until) in unix seconds.
struct TimeRange {
  int64_t from = 0;
  int64_t until = 0;
  bool valid() const { return until > from; }
  bool operator==(const TimeRange& o) const { return from == o.from && until == o.until; }
  bool operator!=(const TimeRange& o) const { return !(*this == o); }
};

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
  // the ids they receive here (size() before the call == first id in the encoding). On success the
  // table has grown by exactly the encoded count, every new name distinct from all others; on error
  // (corrupt_file) it is unchanged.
  Status decode_trie(ByteSpan bytes);
  // rank[id] = position of name(id) among all names in byte order (std::string_view's <).
  void rank_by_name(std::vector<uint32_t>* rank) const;

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
struct TreeAccess;  // lets the tree analysis section build trees node by node
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
  // Room for node_count nodes in all, so that growing to it copies nothing (an importer knows an
  // upper bound). Memory reserved and never used is address space, not resident memory.
  void reserve(size_t node_count) { nodes_.reserve(node_count); }
  // Copy keeping only nodes whose total is at least min_share of the root's total. Parents keep their
  // totals, so shares stay true; the dropped samples are simply not drawn.
  Tree pruned(double min_share) const;
  // Divides every value by divisor (> 0), rounding each node's self to the nearest integer; totals
  // are summed again from the selves, so they stay consistent. An average over blocks is a merge
  // divided by the number of blocks.
  void divide(uint64_t divisor);

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
  // rank[symbol] = position of its name among the names the nodes use, in byte order (other entries
  // of the table's size are 0): one string sort over those names, however big the table is.
  void rank_used_symbols(std::vector<uint32_t>* rank) const;

  // outermost[node] = 1 when no ancestor of node calls the same function, else 0 (the root: 0).
  // Summing node_total over outermost nodes counts a recursive function's samples once: the rule
  // behind per-function totals, here and in every front end that shows them.
  void mark_outermost(std::vector<uint8_t>* outermost) const;
  struct FunctionTotal {
    uint32_t symbol;
    uint64_t self;   // samples in which the function is the leaf
    uint64_t total;  // samples in which it is anywhere on the stack, recursion counted once
  };
  // One entry per function that occurs in the tree, by symbol id.
  void function_totals(std::vector<FunctionTotal>* out) const;

  const SymbolTable& symbols() const { return *symbols_; }
  SymbolTable& symbols() { return *symbols_; }
  const std::shared_ptr<SymbolTable>& shared_symbols() const { return symbols_; }

  // Folded text: one "a;b;c 12" line per node with self samples, in sorted order, '\n' endings.
  std::string to_folded() const;
  // Adds the stacks of folded text (perf/FlameGraph stackcollapse, py-spy, Pyroscope format=folded),
  // strictly: a malformed line (no count, an empty frame, ...) is an error naming its line number and
  // nothing of the text is added. Lines are read exactly as FoldedImporter reads them (the lenient,
  // streaming reader): CRLF, blank lines and trailing blanks after the count are fine, and every byte
  // before the count's one-space separator is the stack's, so a frame ending in a space keeps it.
  Status add_folded(std::string_view text);
  static Status from_folded(std::string_view text, Tree* out);

  // The order of siblings in the binary form: by symbol id (files of format version 1) or by name
  // (version 2). Name order makes a decoded tree's node ids a left-to-right preorder walk, the order a
  // flame graph is drawn and folded text is written in, so neither has to sort millions of nodes.
  enum class Encoding : uint8_t { children_by_symbol_id = 1, children_by_name = 2 };
  // Compact binary form used by the file format (symbol ids refer to symbols(), or, with symbol_map,
  // to symbol_map[id]: a tree written in another table's ids without being copied into it first).
  // name_rank, for children_by_name: any numbers of this tree's symbol ids in the order of their names
  // (a file writer keeps its whole table ranked); without it the used names are sorted here.
  void encode(std::string* out, Encoding encoding = Encoding::children_by_name,
              const std::vector<uint32_t>* symbol_map = nullptr,
              const std::vector<uint32_t>* name_rank = nullptr) const;
  // Decodes into *this (which must be empty) with symbol ids checked against symbols().size() and
  // the sibling order checked against the encoding (a repeated or misordered sibling is corrupt).
  Status decode(ByteSpan bytes, Encoding encoding = Encoding::children_by_name);
  // Decodes and adds into *this in one pass (the query's merge); symbol ids are remapped through
  // remap when it is non-null (remap[file id] = id in symbols()).
  Status merge_encoded(ByteSpan bytes, const std::vector<uint32_t>* remap,
                       Encoding encoding = Encoding::children_by_name);
  // True while node ids are a preorder walk that visits every node's children in name order: a tree
  // decoded from the name-ordered encoding, or an empty one. Any change that adds a node ends it.
  bool in_name_preorder() const { return name_preorder_; }
  // Renumbers the nodes into that order (a tree built from folded text, say, before it is drawn);
  // node ids change, values do not. The lookup index is freed first and rebuilt on the next lookup.
  void renumber_in_name_preorder();

  void clear();

  Tree(const Tree& other);
  Tree& operator=(const Tree& other);
  Tree(Tree&& other) noexcept;
  Tree& operator=(Tree&& other) noexcept;

 private:
  struct Node {
    uint32_t symbol;
    uint32_t parent;
    uint64_t self;
    uint64_t total;
  };
  std::shared_ptr<SymbolTable> symbols_;
  std::vector<Node> nodes_;
  // (parent << 32 | symbol) -> node, open addressing; kNoNode marks an empty slot. A decoded tree
  // leaves it unbuilt until the first lookup: drawing a flame graph needs no lookups, and on millions
  // of nodes the index is most of the cost of a decode (random writes into twice the nodes' memory).
  mutable std::vector<std::pair<uint64_t, uint32_t>> index_;
  mutable std::atomic<bool> index_built_{true};
  bool name_preorder_ = true;
  void ensure_index() const;
  uint32_t add_child(uint32_t parent, uint32_t symbol);
  void grow_index();
  void rehash(size_t capacity) const;
  void reserve_nodes(size_t count);
  // name_rank: null for the symbol-id order; else rank by name of every encoded symbol id.
  Status decode_fresh(ByteSpan bytes, uint32_t symbol_limit, const uint32_t* name_rank);
  Status merge_encoded_ranked(ByteSpan bytes, const std::vector<uint32_t>* remap, const uint32_t* name_rank);
  Status add_decoded(const detail::DecodedTree& decoded, const std::vector<uint32_t>* remap);
  friend class DiffTree;
  friend class Dataset;
  friend class Writer;
  friend struct detail::TreeAccess;
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

// [SECTION] Tree analysis: sandwich, recursion, short names, name search ==========================
//
// Views of one tree that the viewer and the command line both want. They are computed from the exact
// tree (no "other" node), so their numbers add up to Tree::function_totals' to the sample.
// Thread safety: every function here only reads its input tree (const), and may run beside other readers.

// One function's callers and callees, merged over every place it occurs: the sandwich view of
// Pyroscope and speedscope. Only the function's outermost calls count (those with no call of the same
// function above them), the rule of Tree::function_totals, so a recursive function's samples are
// counted once and both trees total exactly the function's total.
struct Sandwich {
  uint32_t symbol = 0xffffffffu;  // the function, in the tree's symbol table
  uint64_t self = 0;   // samples in which the function is the leaf (function_totals' self)
  uint64_t total = 0;  // samples with the function anywhere on the stack, counted once (function_totals' total)
  // root -> the function -> its callers -> their callers ...: an inverted tree. A caller's self is the
  // samples whose stack begins at it; the function's self is the samples in which it has no caller.
  Tree callers;
  // root -> the function -> what it calls -> ...: the subtrees under its outermost calls, merged. A
  // recursive call stays where it is inside them; the function's node holds its outermost calls' self.
  Tree callees;
  // Nodes whose total was below this were left out with their subtrees (min_fraction); 0: none.
  uint64_t min_total = 0;
};
// Both trees share tree's symbol table. not_found when no node of the tree calls the function.
// min_fraction > 0 leaves out the nodes (and their subtrees) whose total is below that fraction of the
// function's total: a flame graph cannot draw them (at 2^-16, a node of 1,400 px would be 0.02 px), and
// on millions of nodes they are most of the work. Every node kept still has its exact self and total
// (they are not estimates from a truncated tree); its children may add up to less than it holds.
Status sandwich(const Tree& tree, uint32_t symbol, Sandwich* out, double min_fraction = 0);
Status sandwich(const Tree& tree, std::string_view function, Sandwich* out, double min_fraction = 0);

// How collapse_recursion treats a function that calls itself.
enum class RecursionCollapse : uint8_t {
  direct,  // f;f;f;g -> f;g: a frame whose caller is the same function merges into that caller
  all,     // f;g;f;h -> f;g;h: a frame whose function is already on the stack is left out (speedscope's rule)
};
// A copy of tree with recursion collapsed (sharing its symbol table). Every function keeps its total:
// each stack still holds the same functions. With `all`, a sample whose leaf frame was left out counts
// as self of the frame its stack now ends in. A tree without such recursion comes back as a plain copy.
Tree collapse_recursion(const Tree& tree, RecursionCollapse mode);

// A C++ function name for reading: "std::vector<int, std::allocator<int> >::push_back(int const&)"
// -> "std::vector<…>::push_back". Leaves out the return type, parameter lists, const/volatile/&/&&/
// noexcept qualifiers and [abi:...] / [clone ...] tags; collapses template arguments to <…> (U+2026);
// shows std::__cxx11:: as std::. Operators (operator(), operator< <…>, operator new[]), lambdas
// (main::{lambda#1}::operator()), (anonymous namespace) and parameters that are function pointers
// are handled. Names that are not C++ (Go, Python, plain C) come back unchanged or nearly so.
std::string short_function_name(std::string_view name);
// A copy of tree with every function under its short name, in a symbol table of its own; frames under
// one parent whose short names are equal merge into one node (foo(int) and foo(double) become one foo).
// merged_from, if given, gets for each symbol of the copy the symbols of tree it stands for.
Tree with_short_names(const Tree& tree, std::vector<std::vector<uint32_t>>* merged_from = nullptr);

namespace detail {
class Regex;
}  // namespace detail

// Which function names a search selects (the viewer's search box and its search= setting). The text is
// terms separated by spaces ("..." quotes a term with spaces). Each term is a regular expression in
// Selector's syntax, found anywhere in the name (^ and $ anchor it at the name's start and end),
// ignoring ASCII case; a term that is not a valid expression (operator[]) is taken as plain text
// (push_back(int) is a valid one, and means what it means as an expression). A term starting with '-' excludes. A name matches when it matches a term without '-' (or there
// is none) and no term with '-'.
class NameSearch {
 public:
  struct Term {
    std::string text;      // as typed, without its '-' and quotes
    bool exclude = false;  // '-term'
    bool regex = false;    // compiled as a regular expression (else matched as plain text)
  };
  NameSearch() = default;
  explicit NameSearch(std::string_view text);
  bool empty() const { return terms_.empty(); }
  const std::vector<Term>& terms() const { return terms_; }
  bool matches(std::string_view name) const;
  // matched[s] = 1 for each symbol of the table whose name matches, else 0.
  void match_symbols(const SymbolTable& symbols, std::vector<uint8_t>* matched) const;
  // A term that finds `text` as it is (quoted, every special character escaped): a click on a name.
  static std::string literal(std::string_view text);

 private:
  std::vector<Term> terms_;
  std::vector<std::shared_ptr<const detail::Regex>> compiled_;  // per term; null for plain text
  std::vector<std::string> lowered_;                              // per term, for plain text
};

// [SECTION] File format: writer ===================================================================

struct WriterOptions {
  int64_t resolution_seconds = kDefaultResolutionSeconds;  // only used when creating a file
  uint32_t multiplier = 10;                                // m: level k node covers m^k blocks
  bool fsync_each_block = false;                           // also survive power loss, at a cost
  // How long a span stays open for late blocks, in blocks: a span (its level-1 span of m blocks and
  // every span above) is sealed, its tree written and no block accepted in it any more, once a block
  // at least this far past its end has arrived. 0 suits one producer writing its blocks in time
  // order (the sampler); a receiver of many clients' pushes keeps spans open for stragglers. Stored
  // in the file (only used when creating one); at most 1,000,000.
  uint32_t seal_delay_blocks = 0;
  // Closing a file of at least this many stored trees appends an index of them, so that a reader
  // opens it in milliseconds instead of reading every record (docs/format.md, "Persisted index").
  // The next writer to append cuts the index off and writes a new one when it closes.
  uint64_t index_min_trees = 4096;
};

// Where a Writer sends a file that is not on a path: first the 64-byte header, then each append's
// records, in order, one call each (stb_image_write's `_to_func`). An error return closes the writer.
using WriteFunction = std::function<Status(const char* data, size_t size)>;

// Appends 10 s blocks to a .pyro file. Creates the file (atomically: it appears with a complete
// header) or opens an existing one for appending; a torn tail left by a killed writer is cut off,
// but a file with corruption before its tail is refused, so stored data is never overwritten.
// A new file can also be written to memory or through a function (a slice for a download, an HTTP
// body): the same records, no temporary file.
// Thread safety: one thread at a time.
class Writer {
 public:
  Writer();
  ~Writer();
  Writer(Writer&&) noexcept;
  Writer& operator=(Writer&&) noexcept;

  Status open(const std::string& path, const WriterOptions& options = {});
  // A new file in memory: bytes() holds a complete .pyro after open and after every append.
  Status open_memory(const WriterOptions& options = {});
  // A new file handed to write piece by piece.
  Status open_function(WriteFunction write, const WriterOptions& options = {});
  const std::string& bytes() const;  // the file so far (open_memory; empty otherwise)
  std::string take_bytes();          // the file (open_memory), then closes
  // Appends the samples of tree as the block starting at block_start (unix seconds, a multiple of the
  // resolution, its block within +-2^61 s). A block may come again (its parts add up) or late, as
  // long as its span is still open (WriterOptions::seal_delay_blocks); a block in a sealed span is
  // StatusCode::out_of_order. Version 1 and 2 files take each series' blocks in increasing order
  // only. An empty tree is skipped. info says what the values mean; null:
  // default_series_info(series.type) for a new series, whatever is stored for a known one. A series
  // keeps the info it was created with: different info for it is invalid_argument. Files of format
  // version 1 and 2 (appended to in their own version) hold only cpu series in samples, summed.
  Status append(const SeriesKey& series, int64_t block_start, const Tree& tree, const SeriesInfo* info = nullptr);
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
  // Check every record now, as a file without an index is read, instead of each record when first
  // read (a file whose writer closed it carries an index that makes opening it take milliseconds).
  bool check_every_record = false;
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
  bool opened_from_index = false; // from the writer's index: records are checked when first read
  uint64_t index_bytes = 0;       // of the writer's index at the end of the file (0: none)
};

// One .pyro file over a read-only byte span. The span must outlive the File unless the File owns it
// (open_path maps the file and owns the mapping; open_bytes with a std::string copies).
// A File is a handle: copies share the open file (its mapping and index), which never changes once
// open, so one file can sit in several Datasets (a server builds one per query from the files it
// keeps open); an open_* call gives this handle a new file and leaves its copies as they were.
// Thread safety: const functions may run concurrently, on one handle or on copies.
class File {
 public:
  File();
  ~File();
  File(const File&);
  File& operator=(const File&);
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;

  Status open_span(ByteSpan bytes, const OpenOptions& options = {});
  Status open_bytes(std::string bytes, const OpenOptions& options = {});
  Status open_path(const std::string& path, const OpenOptions& options = {});  // mmap natively

  const FileInfo& info() const;
  const std::vector<SeriesKey>& series() const;
  const SeriesInfo& series_info(size_t i) const;  // of series()[i]
  const SymbolTable& symbols() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
  const Impl& impl() const { return *impl_; }
  friend class Dataset;  // queries and slices read the index and the bytes
  friend class Writer;   // appending rebuilds the open spans from what is stored
};

namespace detail {
class Regex;
}  // namespace detail

// A selector as Pyroscope writes it: app{key="v", key2!="w", key3=~"regex", key4!~"regex"}.
// Regexes are anchored at both ends (RE2 syntax subset: . [] [^] * + ? {n,m} | () \d \w \s escapes).
struct Matcher {
  enum class Op { equal, not_equal, regex, not_regex };
  std::string key;
  Op op = Op::equal;
  std::string value;
  // The compiled form of value for =~ and !~ (set by Selector::parse). It lives inside its matcher so
  // that reordering, inserting or copying matchers cannot pair a regex with another matcher; it
  // remembers its pattern, so a value changed after parsing is compiled afresh, never matched stale.
  std::shared_ptr<const detail::Regex> regex;
  bool matches(std::string_view tag_value) const;  // tag_value "" when the series lacks the key
};
// The application token may carry the profile type after its last dot, as Pyroscope writes it:
// `app.alloc_space{...}`; `app{...}` means `app.cpu{...}`. So an application whose name has dots is
// selected with its type: `my.app.cpu{}` (`my.app{}` is application "my", type "app").
struct Selector {
  std::string app;   // empty: any application
  std::string type;  // empty: any type (parse sets it whenever the text names an application)
  std::vector<Matcher> matchers;
  static Status parse(std::string_view text, Selector* out);
  bool matches(const SeriesKey& key) const;
  std::string to_string() const;  // app.type{...}; {...} when app is empty
};

// Samples per step for a selection; samples[i] covers [start + i*step, start + (i+1)*step).
struct Timeline {
  int64_t start = 0;
  int64_t step = 0;
  std::vector<uint64_t> samples;
};

struct QueryResult {
  Tree tree;                  // values in info.unit; an average series' blocks averaged, not summed
  SeriesInfo info;            // of the matched series (a query over series that disagree fails)
  std::string type;           // their profile type ("" when nothing matched)
  Timeline timeline;          // over [from, until) at the file resolution or coarser (timeline_points)
  uint64_t merges = 0;        // stored trees decoded and merged to answer the query
  uint64_t merge_bound = 0;   // the segment tree's worst case for this range (plus blocks' extra parts)
  uint32_t series_matched = 0;  // distinct series, however many files hold parts of them
};

struct QueryOptions {
  size_t timeline_points = 0;  // 0: one point per block; else at most this many (coarser step)
  bool want_tree = true;
};

// One block of a profile held in memory (what an importer or a folded-text parser produces).
struct ProfileBlock {
  SeriesKey series;
  SeriesInfo info;          // what the values mean (the same for every block of a series)
  int64_t block_start = 0;  // unix seconds; rounded down to the resolution when added
  Tree tree;
};

struct SliceStats {
  uint64_t series = 0;   // series with at least one block written
  uint64_t blocks = 0;
  uint64_t samples = 0;
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
  // In-memory profiles as a source like any file: the blocks are written once into an in-memory
  // .pyro (Writer::open_memory), so queries, slices and timelines take one path for every source.
  // Blocks of one series that fall into one block of the resolution are merged.
  Status add_blocks(const std::vector<ProfileBlock>& blocks, int64_t resolution_seconds = kDefaultResolutionSeconds);
  size_t file_count() const;
  const File& file(size_t i) const;

  std::vector<std::string> apps() const;                                          // sorted
  std::vector<std::string> types(std::string_view app) const;                     // sorted; cpu first
  std::vector<std::string> tag_keys(std::string_view app) const;                  // sorted
  std::vector<std::string> tag_values(std::string_view app, std::string_view key) const;  // sorted
  std::vector<SeriesKey> series(const Selector& selector) const;
  // What the values of the series matching selector mean; invalid_argument when they disagree (a
  // type stored in two units), not_found when nothing matches.
  Status series_info(const Selector& selector, SeriesInfo* out) const;
  TimeRange time_span() const;  // from the first block's start to the last block's end, over all files
  int64_t resolution_seconds() const;                   // of the first file (10 s by default)

  // Merged tree, timeline and merge count of the series matching selector over [from, until)
  // (unix seconds; rounded outward to whole blocks; clamped to +-2^61, the times a file holds).
  Status query(const Selector& selector, int64_t from, int64_t until, QueryResult* out,
               const QueryOptions& options = {}) const;
  Status query(std::string_view selector, int64_t from, int64_t until, QueryResult* out,
               const QueryOptions& options = {}) const;

  // Appends the level-0 blocks of the series matching selector over [from, until) (rounded outward
  // to whole blocks, clamped as query's) to an open writer, series by series in time order: the small .pyro a viewer
  // shares. A block of one series that several files hold becomes one block. Stops at the first
  // error (a corrupt stored tree, a write that fails), leaving the blocks appended so far.
  // Thread safety: like the other const functions; the writer is used by this call alone meanwhile.
  Status slice(const Selector& selector, int64_t from, int64_t until, Writer* writer,
               SliceStats* stats = nullptr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// [SECTION] Formats: import and export ============================================================
//
// The formats the ecosystem speaks, read into ProfileBlocks (which Dataset::add_blocks or a Writer
// take) and written from trees: pprof (gzipped or plain profile.proto), folded text, `perf script`
// text, speedscope JSON and Chrome/Node .cpuprofile. docs/formats.md says what maps to what.
//
// Parts need a library, switched on where the implementation is compiled (not where the API is used):
//   PYROSCOPE_WITH_ZLIB   gzip in and out through zlib (link -lz); else ImportOptions::inflate /
//                         ExportOptions::deflate hooks (the browser's stb zlib), else gzip is refused.
//   PYROSCOPE_WITH_JSON   speedscope and .cpuprofile import through nlohmann/json's SAX parser
//                         (<nlohmann/json.hpp>, header-only); works under -fno-exceptions.
// pprof's protobuf and every writer are hand-written and need neither.

enum class Format : uint8_t { pyro, pprof, folded, perf_script, speedscope, chrome_cpuprofile };
// "pyro", "pprof", "folded", "perf-script", "speedscope", "cpuprofile". Thread safety: any thread.
const char* format_name(Format format);
// The reverse of format_name (also "perf" and "chrome"); invalid_argument naming the choices.
Status parse_format_name(std::string_view name, Format* out);

// Inflates a raw DEFLATE stream (RFC 1951; the gzip wrapper around it is read by the caller) into
// *out. Output beyond max_output bytes is refused with StatusCode::too_large, leaving in *out the
// first max_output bytes if the inflater can give them (a streaming one can; a one-shot one may leave
// it empty): that is the guard against gzip bombs. stb_image.h's stbi_zlib_decode_noheader_buffer fits.
using InflateFunction = std::function<Status(ByteSpan deflated, uint64_t max_output, std::string* out)>;
// Compresses raw into a raw DEFLATE stream (stb_image_write.h's stbi_zlib_compress output without its
// 2-byte header and 4-byte Adler-32 trailer fits).
using DeflateFunction = std::function<Status(ByteSpan raw, std::string* out)>;
// What this build has: zlib (PYROSCOPE_WITH_ZLIB) and the JSON importers (PYROSCOPE_WITH_JSON).
bool formats_have_zlib();
bool formats_have_json();

// The format of bytes, from their content (never a file name). gzip is looked through with inflate
// (null: zlib when built in): a gzipped pprof is pprof. parse_error naming what the bytes start with
// when they are none of the formats; feature_disabled for gzip without an inflater.
// Thread safety: any thread.
Status detect_format(ByteSpan bytes, Format* out, const InflateFunction& inflate = nullptr);

struct ImportOptions {
  std::string source_name;  // starts every error: "cpu.pb.gz: pprof: offset 812: sample 12: location 99 not defined"
  std::string app;          // application of every series (required)
  Tags tags;                // added to every series; they win over tags a profile brings (pprof labels)
  // Unix seconds: where a profile without its own time is placed (folded, speedscope), and the base of
  // relative timestamps (perf script, .cpuprofile: samples spread over blocks by their time since the
  // first sample). 0: now. pprof's time_nanos, when set, places a pprof profile instead.
  int64_t time = 0;
  // Text formats are lenient by default: every line or sample that can be read is imported, those that
  // cannot are skipped and counted in the report. strict: the first such problem is the error and
  // nothing is imported (all or nothing).
  bool strict = false;
  // gzip input inflating past this many bytes is refused (too_large): a 1 MB gzip bomb inflates to
  // 1 GB. Raise it for larger real profiles.
  uint64_t max_inflated_bytes = uint64_t(1) << 30;
  InflateFunction inflate;  // null: zlib when built in
  // A forced format; leave unset to detect it from the content.
  bool has_format = false;
  Format format = Format::pprof;
};

struct ImportReport {
  Format format = Format::pprof;
  const char* items = "samples";                // what imported and skipped count: "lines" (folded) or "samples"
  uint64_t imported = 0;                         // lines or samples read
  uint64_t skipped = 0;                          // lines or samples that could not be read (lenient)
  std::vector<std::string> skipped_examples;     // the first few, "line 17 no count"
  uint64_t numeric_labels_ignored = 0;           // pprof labels with a number, which tags cannot hold
  uint64_t series = 0;                           // series made (types x label sets)
  // "imported 9,998 lines, skipped 2: line 17 no count, line 90 count overflows"
  std::string summary() const;
};

// Reads a profile of any of the formats above into blocks appended to *out (on error *out is left as
// it was): one series per profile type (and per pprof label set or speedscope profile), one block per
// 10 s of the profile's time. A .pyro file is not imported (open it: Dataset::add_bytes).
// Thread safety: any thread; the blocks' trees share one new symbol table.
Status import_profile(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                      ImportReport* report = nullptr);

// Folded text read in pieces cut anywhere (a download, a file read in chunks), lenient or strict as
// import_profile. A line is `frame;frame;...;frame COUNT`: the count is the digits at its end (after
// CR and trailing blanks), separated from the stack by one space or tab; every other byte is the
// stack's, so a frame that ends in a space keeps it. An empty frame (`a;;b`, `a; 1`) becomes
// kEmptyFrameName when lenient. Thread safety: one thread at a time.
constexpr const char* kEmptyFrameName = "[empty]";
class FoldedImporter {
 public:
  explicit FoldedImporter(bool strict = false, std::shared_ptr<SymbolTable> symbols = nullptr);
  void add(const char* data, size_t size);
  // Ends the text (a last line without a newline) and returns the status of the whole parse: strict,
  // the first bad line's error (and an empty tree); lenient, an error only when lines were skipped and
  // none could be read (the text is not folded at all).
  Status finish();
  Tree& tree() { return tree_; }
  const ImportReport& report() const { return report_; }

 private:
  void line(std::string_view text);
  Tree tree_;
  ImportReport report_;
  std::string carry_;
  uint64_t line_number_ = 0;
  bool strict_;
  Status status_;
  std::vector<uint32_t> ids_;
};

// One profile to export: a tree, its type and what its values mean (a query's tree, type and info).
struct ExportProfile {
  std::string type = kDefaultProfileType;
  SeriesInfo info;
  const Tree* tree = nullptr;
};

struct ExportOptions {
  int64_t from = 0;     // unix seconds the profile covers (pprof time_nanos, duration_nanos); 0: unset
  int64_t until = 0;
  bool gzip = true;     // pprof: gzip when a deflater is there (deflate, else zlib), else plain protobuf
  DeflateFunction deflate;
  std::string name;     // speedscope: the file's name (profiles are called "name type")
};

// pprof (profile.proto): one sample type per profile (type and unit), the union of their stacks with
// one value per type (0 where a stack is not in a profile), period and period type from the first
// profile that has a period, time and duration from options. Frames become functions and locations
// of their own; no addresses or mappings. Thread safety: any thread, the trees not being modified.
Status export_pprof(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out);
// speedscope's file format (https://www.speedscope.app/file-format-schema.json): one sampled profile
// per ExportProfile, frames shared; unit nanoseconds/microseconds/milliseconds/seconds/bytes kept,
// anything else written as "none". Weights are JSON numbers, exact up to 2^53.
Status export_speedscope(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out);

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

// =================================================================================================
// IMPLEMENTATION
// =================================================================================================
#if defined(PYROSCOPE_IMPLEMENTATION) && !defined(PYROSCOPE_IMPLEMENTATION_INCLUDED)
#define PYROSCOPE_IMPLEMENTATION_INCLUDED

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

// Every supported platform is POSIX (Emscripten emulates it over its in-memory file system).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
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
  // Most fields of a tree fit in one byte: that case stays small enough to inline into the decoder's
  // loop, which reads millions of them when a viewer opens a big profile.
  uint64_t varint() {
    if (p != end && *p < 0x80) return *p++;
    return varint_slow();
  }
  uint64_t varint_slow() {
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

// Slicing-by-8 tables: entries[k][b] is the CRC of byte b followed by k zero bytes, so eight input
// bytes cost eight table lookups and no loop-carried byte chain. Opening a file checks every byte,
// and in the browser (before the engine has optimized the code) the byte-at-a-time loop was most
// of the time a 6 MB file took to open.
struct Crc32Table {
  uint32_t entries[8][256];
  Crc32Table() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      entries[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
      for (int k = 1; k < 8; k++) entries[k][i] = (entries[k - 1][i] >> 8) ^ entries[0][entries[k - 1][i] & 0xff];
  }
};

// ---- Packing: LZ77 with an adaptive binary range coder -------------------------------------------
//
// For the symbol table, whose trie shares prefixes but not what repeats inside names: a C++ profile's
// names are template instantiations that spell the same arguments again and again
// (`llvm::PatternMatch::BinaryOp_match<llvm::PatternMatch::bind_ty<llvm::Value>, ...`). Matches of 2
// to 273 bytes at distances up to 1 MiB, the last distance reusable in a bit; literals modelled by the
// previous byte; everything through LZMA's binary range coder (11-bit probabilities). Written here
// because the header has no dependencies; the output is checked when read like any other input.

class RangeEncoder {
 public:
  explicit RangeEncoder(std::string* out) : out_(out) {}
  void bit(uint16_t* probability, unsigned value) {
    const uint32_t bound = (range_ >> 11) * *probability;
    if (value == 0) {
      range_ = bound;
      *probability = uint16_t(*probability + ((2048 - *probability) >> 5));
    } else {
      low_ += bound;
      range_ -= bound;
      *probability = uint16_t(*probability - (*probability >> 5));
    }
    while (range_ < (1u << 24)) {
      range_ <<= 8;
      shift_low();
    }
  }
  void direct_bits(uint32_t value, int count) {
    for (int i = count; i-- > 0;) {
      range_ >>= 1;
      if ((value >> i) & 1) low_ += range_;
      while (range_ < (1u << 24)) {
        range_ <<= 8;
        shift_low();
      }
    }
  }
  void finish() {
    for (int i = 0; i < 5; i++) shift_low();
  }

 private:
  // LZMA's: a byte is held back while a carry could still reach it (a run of 0xff bytes waits too).
  void shift_low() {
    if (uint32_t(low_) < 0xff000000u || (low_ >> 32) != 0) {
      const uint8_t carry = uint8_t(low_ >> 32);
      uint8_t held = cache_;
      do {
        out_->push_back(char(uint8_t(held + carry)));
        held = 0xff;
      } while (--cache_size_ != 0);
      cache_ = uint8_t(low_ >> 24);
    }
    cache_size_++;
    low_ = (low_ & 0x00ffffffu) << 8;
  }
  std::string* out_;
  uint64_t low_ = 0;
  uint32_t range_ = 0xffffffffu;
  uint8_t cache_ = 0;
  uint64_t cache_size_ = 1;
};

// Reads what RangeEncoder wrote; past the end of its input it reads zeros and sets failed, so a
// damaged stream is noticed by its caller's checks, never read beyond.
class RangeDecoder {
 public:
  RangeDecoder(const uint8_t* data, size_t size) : p_(data), end_(data + size) {
    for (int i = 0; i < 5; i++) code_ = (code_ << 8) | next();
  }
  unsigned bit(uint16_t* probability) {
    const uint32_t bound = (range_ >> 11) * *probability;
    unsigned value;
    if (code_ < bound) {
      range_ = bound;
      *probability = uint16_t(*probability + ((2048 - *probability) >> 5));
      value = 0;
    } else {
      code_ -= bound;
      range_ -= bound;
      *probability = uint16_t(*probability - (*probability >> 5));
      value = 1;
    }
    while (range_ < (1u << 24)) {
      range_ <<= 8;
      code_ = (code_ << 8) | next();
    }
    return value;
  }
  uint32_t direct_bits(int count) {
    uint32_t value = 0;
    for (int i = 0; i < count; i++) {
      range_ >>= 1;
      const uint32_t one = code_ >= range_ ? 1u : 0u;
      if (one) code_ -= range_;
      value = (value << 1) | one;
      while (range_ < (1u << 24)) {
        range_ <<= 8;
        code_ = (code_ << 8) | next();
      }
    }
    return value;
  }
  bool failed() const { return failed_; }

 private:
  uint8_t next() {
    if (p_ == end_) {
      failed_ = true;
      return 0;
    }
    return *p_++;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  uint32_t range_ = 0xffffffffu;
  uint32_t code_ = 0;
  bool failed_ = false;
};

// The adaptive models of one packed stream, the same on both sides.
struct PackModels {
  static constexpr int kMinMatch = 2;
  static constexpr int kMaxMatch = 273;
  static constexpr int kDistanceBits = 20;  // window 1 MiB
  uint16_t is_match[2];                     // by "the last item was a match"
  uint16_t is_rep[2];
  uint16_t literal[256][256];               // bit tree per previous byte
  uint16_t length_choice[2];
  uint16_t length_low[8], length_mid[8], length_high[256];
  uint16_t slot[64];                        // distance's bit length (bit tree of 6 bits)
  PackModels() {
    uint16_t* all[] = {is_match, is_rep, length_choice};
    for (uint16_t* a : all) a[0] = a[1] = 1024;
    for (auto& row : literal)
      for (uint16_t& v : row) v = 1024;
    for (uint16_t& v : length_low) v = 1024;
    for (uint16_t& v : length_mid) v = 1024;
    for (uint16_t& v : length_high) v = 1024;
    for (uint16_t& v : slot) v = 1024;
  }
};

template <class Coder>
inline void pack_tree_bits(Coder& rc, uint16_t* probs, int bits, unsigned value) {
  unsigned node = 1;
  for (int i = bits; i-- > 0;) {
    const unsigned b = (value >> i) & 1;
    rc.bit(&probs[node], b);
    node = (node << 1) | b;
  }
}

inline unsigned unpack_tree_bits(RangeDecoder& rc, uint16_t* probs, int bits) {
  unsigned node = 1;
  for (int i = 0; i < bits; i++) node = (node << 1) | rc.bit(&probs[node]);
  return node - (1u << bits);
}

inline void pack_length(RangeEncoder& rc, PackModels& m, unsigned length) {
  unsigned v = length - PackModels::kMinMatch;  // 0..271
  if (v < 8) {
    rc.bit(&m.length_choice[0], 0);
    pack_tree_bits(rc, m.length_low, 3, v);
  } else if (v < 16) {
    rc.bit(&m.length_choice[0], 1);
    rc.bit(&m.length_choice[1], 0);
    pack_tree_bits(rc, m.length_mid, 3, v - 8);
  } else {
    rc.bit(&m.length_choice[0], 1);
    rc.bit(&m.length_choice[1], 1);
    pack_tree_bits(rc, m.length_high, 8, v - 16);
  }
}

inline unsigned unpack_length(RangeDecoder& rc, PackModels& m) {
  if (!rc.bit(&m.length_choice[0])) return PackModels::kMinMatch + unpack_tree_bits(rc, m.length_low, 3);
  if (!rc.bit(&m.length_choice[1])) return PackModels::kMinMatch + 8 + unpack_tree_bits(rc, m.length_mid, 3);
  return PackModels::kMinMatch + 16 + unpack_tree_bits(rc, m.length_high, 8);
}

// Compresses bytes; unpack() gives them back. Deterministic (the same input gives the same output).
inline std::string pack(const uint8_t* data, size_t size) {
  std::string out;
  RangeEncoder rc(&out);
  auto models = std::make_unique<PackModels>();
  PackModels& m = *models;
  const size_t window = size_t(1) << PackModels::kDistanceBits;
  constexpr int kHashBits = 16;
  constexpr int kChainDepth = 48;
  std::vector<int32_t> head(size_t(1) << kHashBits, -1), previous(size);
  auto hash3 = [&](size_t i) {
    const uint32_t v = uint32_t(data[i]) | uint32_t(data[i + 1]) << 8 | uint32_t(data[i + 2]) << 16;
    return (v * 2654435761u) >> (32 - kHashBits);
  };
  auto insert = [&](size_t i) {
    if (i + 2 >= size) return;
    const uint32_t h = hash3(i);
    previous[i] = head[h];
    head[h] = int32_t(i);
  };
  auto match_length = [&](size_t at, size_t from) {
    size_t n = 0;
    const size_t limit = std::min<size_t>(PackModels::kMaxMatch, size - at);
    while (n < limit && data[from + n] == data[at + n]) n++;
    return n;
  };
  // The longest match at i (at the last distance first: it costs a bit).
  auto best_match = [&](size_t i, size_t rep, size_t* distance, bool* is_rep) {
    size_t best = 0;
    *is_rep = false;
    if (rep > 0 && rep <= i && rep < window) {
      best = match_length(i, i - rep);
      if (best >= size_t(PackModels::kMinMatch)) {
        *distance = rep;
        *is_rep = true;
      } else {
        best = 0;
      }
    }
    if (i + 2 < size) {
      int depth = kChainDepth;
      for (int32_t c = head[hash3(i)]; c >= 0 && depth-- > 0 && i - size_t(c) < window; c = previous[size_t(c)]) {
        const size_t n = match_length(i, size_t(c));
        // A new distance costs ~20 bits more than the last one: worth it only when clearly longer.
        if (n > best + (*is_rep ? 2 : 0) && n >= 3) {
          best = n;
          *distance = i - size_t(c);
          *is_rep = *distance == rep;
        }
      }
    }
    return best >= size_t(PackModels::kMinMatch) ? best : size_t(0);
  };
  size_t i = 0, rep = 0;
  unsigned after_match = 0;
  uint8_t previous_byte = 0;
  while (i < size) {
    size_t distance = 0;
    bool is_rep = false;
    size_t length = best_match(i, rep, &distance, &is_rep);
    if (length > 0 && length < 32 && i + 1 < size) {
      // Lazy evaluation: a longer match one byte later is better than this one and a literal more.
      size_t next_distance = 0;
      bool next_rep = false;
      insert(i);
      const size_t next = best_match(i + 1, rep, &next_distance, &next_rep);
      if (next > length + 1) length = 0;
    } else {
      insert(i);
    }
    if (length == 0) {
      rc.bit(&m.is_match[after_match], 0);
      pack_tree_bits(rc, m.literal[previous_byte], 8, data[i]);
      previous_byte = data[i];
      after_match = 0;
      i++;
      continue;
    }
    rc.bit(&m.is_match[after_match], 1);
    rc.bit(&m.is_rep[after_match], is_rep ? 1 : 0);
    pack_length(rc, m, unsigned(length));
    if (!is_rep) {
      // distance >= 1: its bit length (1..20) in a bit tree, then the bits below its top bit.
      int bits = 0;
      while ((size_t(1) << bits) <= distance) bits++;
      pack_tree_bits(rc, m.slot, 6, unsigned(bits));
      if (bits > 1) rc.direct_bits(uint32_t(distance) & ((1u << (bits - 1)) - 1), bits - 1);
      rep = distance;
    }
    for (size_t k = 1; k < length; k++) insert(i + k);
    i += length;
    previous_byte = data[i - 1];
    after_match = 1;
  }
  rc.finish();
  return out;
}

// The bytes pack() made of exactly `size` bytes; corrupt_file when the stream does not give them.
inline Status unpack(ByteSpan packed, size_t size, std::string* out) {
  out->assign(size, '\0');
  RangeDecoder rc(packed.data, packed.size);
  auto models = std::make_unique<PackModels>();
  PackModels& m = *models;
  size_t i = 0, rep = 0;
  unsigned after_match = 0;
  uint8_t previous_byte = 0;
  char* o = &(*out)[0];
  while (i < size && !rc.failed()) {
    if (!rc.bit(&m.is_match[after_match])) {
      const uint8_t byte = uint8_t(unpack_tree_bits(rc, m.literal[previous_byte], 8));
      o[i++] = char(byte);
      previous_byte = byte;
      after_match = 0;
      continue;
    }
    const bool is_rep = rc.bit(&m.is_rep[after_match]) != 0;
    const size_t length = unpack_length(rc, m);
    if (!is_rep) {
      const unsigned bits = unpack_tree_bits(rc, m.slot, 6);
      if (bits == 0 || bits > unsigned(PackModels::kDistanceBits)) return error(StatusCode::corrupt_file, "packed data: bad distance");
      rep = (size_t(1) << (bits - 1)) | (bits > 1 ? rc.direct_bits(int(bits) - 1) : 0);
    }
    if (rep == 0 || rep > i || length > size - i)
      return error(StatusCode::corrupt_file, "packed data: a match outside the data");
    for (size_t k = 0; k < length; k++, i++) o[i] = o[i - rep];  // may overlap itself: byte by byte
    previous_byte = uint8_t(o[i - 1]);
    after_match = 1;
  }
  if (rc.failed() || i != size) return error(StatusCode::corrupt_file, "packed data: truncated");
  return {};
}

inline uint32_t crc32(const void* data, size_t size, uint32_t crc = 0) {
  static const Crc32Table table;
  const auto& t = table.entries;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (; size >= 8; size -= 8, p += 8) {
    const uint32_t low = crc ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    const uint32_t high = uint32_t(p[4]) | uint32_t(p[5]) << 8 | uint32_t(p[6]) << 16 | uint32_t(p[7]) << 24;
    crc = t[7][low & 0xff] ^ t[6][(low >> 8) & 0xff] ^ t[5][(low >> 16) & 0xff] ^ t[4][low >> 24] ^
          t[3][high & 0xff] ^ t[2][(high >> 8) & 0xff] ^ t[1][(high >> 16) & 0xff] ^ t[0][high >> 24];
  }
  for (; size > 0; size--, p++) crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
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
    pattern_.assign(pattern.data(), pattern.size());
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

  const std::string& pattern() const { return pattern_; }

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

  std::string pattern_;  // owned: a compiled Regex outlives the text it was parsed from
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
    int last_first_byte;  // of the previous child's label; -1 before the first child
  };
  std::vector<Level> stack;
  uint64_t nodes = 0;
  // The encoder writes canonical tries only: every label but the root's is non-empty and siblings'
  // labels start with strictly increasing bytes. Holding a trie to that makes every path spell a
  // different name, so a crafted trie cannot give one name two ids (which would shift every later id).
  auto read_node = [&](Level* parent) -> bool {
    uint64_t label_len = in.varint();
    std::string_view label = in.bytes(label_len);
    uint64_t terminal = in.varint();
    uint64_t children = in.varint();
    if (in.failed || terminal > count || children > in.remaining() + 1) return false;
    if (++nodes > 2 * count + 1) return false;
    if (parent) {
      if (label.empty()) return false;
      int first_byte = uint8_t(label[0]);
      if (first_byte <= parent->last_first_byte) return false;
      parent->last_first_byte = first_byte;
    }
    current.append(label);
    if (terminal) {
      if (seen[terminal - 1]) return false;
      seen[terminal - 1] = true;
      decoded[terminal - 1] = current;
    }
    stack.push_back({current.size(), children, -1});
    return true;
  };
  if (!read_node(nullptr)) return detail::error(StatusCode::corrupt_file, "symbol trie: bad root node");
  while (!stack.empty()) {
    if (stack.back().remaining == 0) {
      stack.pop_back();
      continue;
    }
    stack.back().remaining--;
    current.resize(stack.back().prefix);
    // read_node may grow the stack: pass the parent by index, not by a pointer that could move.
    Level parent = stack.back();
    size_t parent_index = stack.size() - 1;
    bool ok = read_node(&parent);
    stack[parent_index].last_first_byte = parent.last_first_byte;
    if (!ok) return detail::error(StatusCode::corrupt_file, "symbol trie: bad node");
  }
  if (!in.done()) return detail::error(StatusCode::corrupt_file, "symbol trie: trailing bytes");
  for (uint64_t i = 0; i < count; i++) {
    if (!seen[i]) return detail::error(StatusCode::corrupt_file, "symbol trie: id " + std::to_string(first_id + i) + " missing");
    if (find(decoded[i]) != kNone)
      return detail::error(StatusCode::corrupt_file, "symbol trie: name of id " + std::to_string(first_id + i) +
                                                         " is already id " + std::to_string(find(decoded[i])));
  }
  for (uint64_t i = 0; i < count; i++) {
    uint32_t id = intern(decoded[i]);
    PYROSCOPE_ASSERT(id == first_id + i);  // the canonical form rules out a repeated name
    (void)id;
  }
  return {};
}

void SymbolTable::rank_by_name(std::vector<uint32_t>* rank) const {
  std::vector<uint32_t> ids(names_.size());
  for (uint32_t i = 0; i < ids.size(); i++) ids[i] = i;
  std::sort(ids.begin(), ids.end(), [&](uint32_t a, uint32_t b) { return names_[a] < names_[b]; });
  rank->assign(ids.size(), 0);
  for (uint32_t r = 0; r < ids.size(); r++) (*rank)[ids[r]] = r;
}

}  // namespace pyroscope

namespace pyroscope {

// [SECTION] Implementation: tree and folded text ==================================================

Tree::Tree() : Tree(std::make_shared<SymbolTable>()) {}

Tree::Tree(std::shared_ptr<SymbolTable> symbols)
    : symbols_(symbols ? std::move(symbols) : std::make_shared<SymbolTable>()) {
  nodes_.push_back({SymbolTable::kNone, kNoNode, 0, 0});
}

// A copy shares the symbol table and rebuilds its index when first needed: copying the source's index
// could race with a lookup building it on another thread.
Tree::Tree(const Tree& other)
    : symbols_(other.symbols_), nodes_(other.nodes_), index_built_(false), name_preorder_(other.name_preorder_) {}

Tree& Tree::operator=(const Tree& other) {
  if (this != &other) {
    symbols_ = other.symbols_;
    nodes_ = other.nodes_;
    index_.clear();
    index_built_.store(false, std::memory_order_relaxed);
    name_preorder_ = other.name_preorder_;
  }
  return *this;
}

Tree::Tree(Tree&& other) noexcept
    : symbols_(std::move(other.symbols_)),
      nodes_(std::move(other.nodes_)),
      index_(std::move(other.index_)),
      index_built_(other.index_built_.load(std::memory_order_relaxed)),
      name_preorder_(other.name_preorder_) {
  other.index_built_.store(true, std::memory_order_relaxed);
}

Tree& Tree::operator=(Tree&& other) noexcept {
  if (this != &other) {
    symbols_ = std::move(other.symbols_);
    nodes_ = std::move(other.nodes_);
    index_ = std::move(other.index_);
    index_built_.store(other.index_built_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    other.index_built_.store(true, std::memory_order_relaxed);
    name_preorder_ = other.name_preorder_;
  }
  return *this;
}

void Tree::clear() {
  nodes_.clear();
  nodes_.push_back({SymbolTable::kNone, kNoNode, 0, 0});
  index_.clear();
  index_built_.store(true, std::memory_order_relaxed);
  name_preorder_ = true;
}

namespace detail {
inline std::mutex& tree_index_mutex() {
  static std::mutex* mutex = new std::mutex;  // never destroyed: trees may outlive static destructors
  return *mutex;
}
}  // namespace detail

// Const lookups may run on several threads at once, so the first one builds the index under a lock.
void Tree::ensure_index() const {
  if (index_built_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(detail::tree_index_mutex());
  if (index_built_.load(std::memory_order_relaxed)) return;
  size_t capacity = 64;
  while ((nodes_.size() + 1) * 4 > capacity * 3) capacity *= 2;
  index_.clear();
  rehash(capacity);
  const size_t mask = capacity - 1;
  for (uint32_t id = 1; id < nodes_.size(); id++) {
    const uint64_t key = uint64_t(nodes_[id].parent) << 32 | nodes_[id].symbol;
    size_t slot = detail::mix64(key) & mask;
    while (index_[slot].second != kNoNode) slot = (slot + 1) & mask;
    index_[slot] = {key, id};
  }
  index_built_.store(true, std::memory_order_release);
}

std::string_view Tree::name(uint32_t node) const {
  uint32_t s = nodes_[node].symbol;
  return s == SymbolTable::kNone ? std::string_view() : symbols_->name(s);
}

void Tree::grow_index() { rehash(index_.empty() ? 64 : index_.size() * 2); }

void Tree::reserve_nodes(size_t count) {
  ensure_index();
  nodes_.reserve(count);
  size_t capacity = index_.empty() ? 64 : index_.size();
  while ((count + 1) * 4 > capacity * 3) capacity *= 2;
  if (capacity != index_.size()) rehash(capacity);
}

void Tree::rehash(size_t capacity) const {
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
  ensure_index();
  if (index_.empty()) return kNoNode;
  uint64_t key = uint64_t(node) << 32 | symbol_id;
  size_t mask = index_.size() - 1;
  for (size_t i = detail::mix64(key) & mask;; i = (i + 1) & mask) {
    if (index_[i].second == kNoNode) return kNoNode;
    if (index_[i].first == key) return index_[i].second;
  }
}

uint32_t Tree::add_child(uint32_t parent, uint32_t symbol) {
  ensure_index();
  if ((nodes_.size() + 1) * 4 > index_.size() * 3) grow_index();
  uint64_t key = uint64_t(parent) << 32 | symbol;
  size_t mask = index_.size() - 1;
  size_t i = detail::mix64(key) & mask;
  for (; index_[i].second != kNoNode; i = (i + 1) & mask)
    if (index_[i].first == key) return index_[i].second;
  uint32_t id = uint32_t(nodes_.size());
  nodes_.push_back({symbol, parent, 0, 0});
  index_[i] = {key, id};
  name_preorder_ = false;
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

void Tree::divide(uint64_t divisor) {
  PYROSCOPE_ASSERT(divisor > 0);
  if (divisor == 1) return;
  for (Node& n : nodes_) {
    n.self = n.self / divisor + (n.self % divisor >= divisor - divisor / 2 ? 1 : 0);  // to nearest, no overflow
    n.total = n.self;
  }
  // Every node is made after its parent (insert appends children; decoding is preorder), so one
  // backward pass adds each finished subtree to its parent.
  for (size_t i = nodes_.size(); i-- > 1;) {
    PYROSCOPE_ASSERT(nodes_[i].parent < i);
    nodes_[nodes_[i].parent].total += nodes_[i].total;
  }
}

void Tree::sorted_children(std::vector<uint32_t>* offsets, std::vector<uint32_t>* children) const {
  size_t n = nodes_.size();
  offsets->assign(n + 1, 0);
  for (size_t i = 1; i < n; i++) (*offsets)[nodes_[i].parent + 1]++;
  for (size_t i = 0; i < n; i++) (*offsets)[i + 1] += (*offsets)[i];
  children->assign(n > 0 ? n - 1 : 0, 0);
  std::vector<uint32_t> fill(offsets->begin(), offsets->end() - 1);
  for (size_t i = 1; i < n; i++) (*children)[fill[nodes_[i].parent]++] = uint32_t(i);
  std::vector<uint32_t> rank;
  rank_used_symbols(&rank);
  for (size_t i = 0; i < n; i++) {
    auto b = children->begin() + (*offsets)[i], e = children->begin() + (*offsets)[i + 1];
    if (e - b > 1)
      std::sort(b, e, [&](uint32_t x, uint32_t y) { return rank[nodes_[x].symbol] < rank[nodes_[y].symbol]; });
  }
}

// The table may hold far more names than the tree uses (a writer's trees share the file's whole
// dictionary), so only the used ones are sorted.
void Tree::rank_used_symbols(std::vector<uint32_t>* rank) const {
  rank->assign(symbols_->size(), 0);
  std::vector<uint32_t> used;
  for (size_t i = 1; i < nodes_.size(); i++) {
    uint32_t& seen = (*rank)[nodes_[i].symbol];
    if (seen == 0) {
      seen = 1;
      used.push_back(nodes_[i].symbol);
    }
  }
  std::sort(used.begin(), used.end(), [&](uint32_t a, uint32_t b) { return symbols_->name(a) < symbols_->name(b); });
  for (uint32_t r = 0; r < used.size(); r++) (*rank)[used[r]] = r;
}

void Tree::mark_outermost(std::vector<uint8_t>* outermost) const {
  const uint32_t n = node_count();
  outermost->assign(n, 0);
  std::vector<uint32_t> on_path(symbols_->size(), 0);  // ancestors calling each function
  // A tree numbered in preorder (a decoded one is) is walked in id order with its ancestors on a
  // stack, reading memory in order. Any other numbering is walked depth-first over child lists.
  std::vector<uint32_t> path{kRoot};
  bool preorder = true;
  for (uint32_t node = 1; node < n; node++) {
    const uint32_t parent = nodes_[node].parent;
    while (path.back() != parent && path.size() > 1) {
      on_path[nodes_[path.back()].symbol]--;
      path.pop_back();
    }
    if (path.back() != parent) {
      preorder = false;
      break;
    }
    uint32_t& count = on_path[nodes_[node].symbol];
    (*outermost)[node] = count == 0;
    count++;
    path.push_back(node);
  }
  if (preorder) return;
  std::fill(on_path.begin(), on_path.end(), 0u);
  std::vector<uint32_t> offsets(size_t(n) + 1, 0), children(n > 0 ? n - 1 : 0);
  for (uint32_t i = 1; i < n; i++) offsets[nodes_[i].parent + 1]++;
  for (uint32_t i = 0; i < n; i++) offsets[i + 1] += offsets[i];
  {
    std::vector<uint32_t> fill(offsets.begin(), offsets.end() - 1);
    for (uint32_t i = 1; i < n; i++) children[fill[nodes_[i].parent]++] = i;
  }
  constexpr uint64_t kLeave = uint64_t(1) << 32;  // "leave this node" entries of the iterative walk
  std::vector<uint64_t> stack(children.begin() + offsets[kRoot], children.begin() + offsets[kRoot + 1]);
  while (!stack.empty()) {
    const uint64_t entry = stack.back();
    stack.pop_back();
    const uint32_t node = uint32_t(entry);
    if (entry & kLeave) {
      on_path[nodes_[node].symbol]--;
      continue;
    }
    uint32_t& count = on_path[nodes_[node].symbol];
    (*outermost)[node] = count == 0;
    count++;
    stack.push_back(entry | kLeave);
    for (uint32_t c = offsets[node]; c < offsets[node + 1]; c++) stack.push_back(children[c]);
  }
}

void Tree::function_totals(std::vector<FunctionTotal>* out) const {
  std::vector<uint8_t> outermost;
  mark_outermost(&outermost);
  std::vector<FunctionTotal> by_symbol(symbols_->size(), FunctionTotal{0, 0, 0});
  std::vector<uint8_t> occurs(symbols_->size(), 0);
  for (uint32_t node = 1; node < node_count(); node++) {
    FunctionTotal& row = by_symbol[nodes_[node].symbol];
    row.self += nodes_[node].self;
    if (outermost[node]) row.total += nodes_[node].total;
    occurs[nodes_[node].symbol] = 1;
  }
  out->clear();
  for (uint32_t symbol = 0; symbol < by_symbol.size(); symbol++) {
    if (!occurs[symbol]) continue;
    by_symbol[symbol].symbol = symbol;
    out->push_back(by_symbol[symbol]);
  }
}

void Tree::renumber_in_name_preorder() {
  if (name_preorder_) return;
  index_ = std::vector<std::pair<uint64_t, uint32_t>>();  // freed before the new nodes are made
  index_built_.store(false, std::memory_order_relaxed);
  std::vector<uint32_t> offsets, children;
  sorted_children(&offsets, &children);
  std::vector<Node> renumbered;
  renumbered.reserve(nodes_.size());
  renumbered.push_back(nodes_[kRoot]);
  std::vector<uint32_t> new_id(nodes_.size());
  new_id[kRoot] = kRoot;
  std::vector<uint32_t> stack(children.begin() + offsets[kRoot], children.begin() + offsets[kRoot + 1]);
  std::reverse(stack.begin(), stack.end());  // the first child on top
  while (!stack.empty()) {
    const uint32_t old_id = stack.back();
    stack.pop_back();
    Node node = nodes_[old_id];
    node.parent = new_id[node.parent];
    new_id[old_id] = uint32_t(renumbered.size());
    renumbered.push_back(node);
    for (uint32_t k = offsets[old_id + 1]; k-- > offsets[old_id];) stack.push_back(children[k]);
  }
  nodes_ = std::move(renumbered);
  name_preorder_ = true;
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

// Tree::add_folded and from_folded read lines as the folded importer does: see "Implementation: formats".

// Binary form: varint node count (root excluded), varint root self, then every node in preorder:
// varint (child_count << 1 | has_self), [varint self], varint symbol. Children sorted by symbol id
// store the first child's id and then id - previous id - 1; children sorted by name store the first
// child's id and then zigzag(id - previous id). Totals are derived.
void Tree::encode(std::string* out, Encoding encoding, const std::vector<uint32_t>* symbol_map,
                  const std::vector<uint32_t>* name_rank) const {
  size_t n = nodes_.size();
  const bool by_name = encoding == Encoding::children_by_name;
  auto id = [symbol_map](uint32_t symbol) { return symbol_map ? (*symbol_map)[symbol] : symbol; };
  std::vector<uint32_t> offsets(n + 1, 0), children(n > 0 ? n - 1 : 0);
  for (size_t i = 1; i < n; i++) offsets[nodes_[i].parent + 1]++;
  for (size_t i = 0; i < n; i++) offsets[i + 1] += offsets[i];
  std::vector<uint32_t> fill(offsets.begin(), offsets.end() - 1);
  for (size_t i = 1; i < n; i++) children[fill[nodes_[i].parent]++] = uint32_t(i);
  if (by_name) {
    PYROSCOPE_ASSERT(!name_rank || name_rank->size() >= symbols_->size());
    std::vector<uint32_t> own_rank;
    if (!name_rank) rank_used_symbols(&own_rank);
    const std::vector<uint32_t>& rank = name_rank ? *name_rank : own_rank;
    for (size_t i = 0; i < n; i++)
      if (offsets[i + 1] - offsets[i] > 1)
        std::sort(children.begin() + offsets[i], children.begin() + offsets[i + 1],
                  [&](uint32_t a, uint32_t b) { return rank[nodes_[a].symbol] < rank[nodes_[b].symbol]; });
  } else {
    for (size_t i = 0; i < n; i++)
      if (offsets[i + 1] - offsets[i] > 1)
        std::sort(children.begin() + offsets[i], children.begin() + offsets[i + 1],
                  [&](uint32_t a, uint32_t b) { return id(nodes_[a].symbol) < id(nodes_[b].symbol); });
  }
  auto symbol_field = [by_name](uint32_t symbol, uint32_t previous) -> uint64_t {
    if (previous == SymbolTable::kNone) return symbol;
    if (!by_name) return symbol - previous - 1;
    const int64_t delta = int64_t(symbol) - int64_t(previous);
    return (uint64_t(delta) << 1) ^ uint64_t(delta >> 63);
  };
  detail::put_varint(out, n - 1);
  detail::put_varint(out, nodes_[kRoot].self);
  detail::put_varint(out, offsets[kRoot + 1] - offsets[kRoot]);
  struct Item {
    uint32_t node;
    uint32_t previous_sibling_symbol;  // kNone for a first child
  };
  std::vector<Item> stack;
  for (uint32_t k = offsets[kRoot + 1]; k-- > offsets[kRoot];)
    stack.push_back({children[k], k == offsets[kRoot] ? SymbolTable::kNone : id(nodes_[children[k - 1]].symbol)});
  while (!stack.empty()) {
    Item it = stack.back();
    stack.pop_back();
    const Node& node = nodes_[it.node];
    uint64_t child_count = offsets[it.node + 1] - offsets[it.node];
    detail::put_varint(out, child_count << 1 | (node.self ? 1 : 0));
    if (node.self) detail::put_varint(out, node.self);
    detail::put_varint(out, symbol_field(id(node.symbol), it.previous_sibling_symbol));
    for (uint32_t k = offsets[it.node + 1]; k-- > offsets[it.node];)
      stack.push_back({children[k], k == offsets[it.node] ? SymbolTable::kNone : id(nodes_[children[k - 1]].symbol)});
  }
}

namespace detail {
// A rank table's address for decoding: never null, since null means "ordered by symbol id".
inline const uint32_t* rank_pointer(const std::vector<uint32_t>& rank) {
  static const uint32_t no_symbols = 0;
  return rank.empty() ? &no_symbols : rank.data();
}

// Decodes the binary tree form into flat preorder arrays after checking every field.
struct DecodedTree {
  uint64_t root_self = 0;
  std::vector<uint32_t> parent;  // index into these arrays; UINT32_MAX for root children
  std::vector<uint32_t> symbol;
  std::vector<uint64_t> self;
  std::vector<uint64_t> total;
};

// Reads the binary tree form, checking every field, and hands each node to emit(parent, symbol, self)
// in preorder: parent is the index of an earlier emitted node, or UINT32_MAX for a child of the root.
// reserve(node_count) comes first, with a count already checked against the input's size.
// name_rank is null for children sorted by symbol id; for children sorted by name it holds every
// encoded symbol id's rank by name, and siblings must come in strictly increasing rank (which also
// rules out a repeated sibling, as strictly increasing ids do in the other order).
template <class Reserve, class Emit>
Status decode_tree_nodes(ByteSpan bytes, uint32_t symbol_count, const uint32_t* name_rank, uint64_t* root_self,
                         Reserve&& reserve, Emit&& emit) {
  ByteReader in(bytes.data, bytes.size);
  uint64_t node_count = in.varint();
  *root_self = in.varint();
  uint64_t root_children = in.varint();
  if (in.failed) return error(StatusCode::corrupt_file, "tree: truncated header");
  // Every node takes at least two bytes, which bounds what a hostile count can make us allocate.
  if (node_count > bytes.size / 2 || root_children > node_count)
    return error(StatusCode::corrupt_file, "tree: impossible node count");
  reserve(size_t(node_count));
  constexpr uint32_t kFirst = UINT32_MAX;  // previous_symbol before a level's first child
  struct Level {
    uint32_t node;
    uint32_t previous_symbol;  // symbols are < symbol_count <= kFirst
    uint64_t remaining;
  };
  // The open levels, root first; top indexes the innermost. Grown by hand so that the loop's common
  // path has no call in it (this loop decodes millions of nodes when a viewer opens a big profile).
  std::vector<Level> stack(64);
  size_t top = 0;
  stack[0] = {UINT32_MAX, kFirst, root_children};
  // Every node emitted was declared by its parent's child count, and the declared total is kept
  // within node_count, so no separate bound on emitted nodes is needed.
  uint64_t declared = root_children;
  uint64_t emitted = 0;
  for (;;) {
    Level& level = stack[top];
    if (level.remaining == 0) {
      if (top == 0) break;
      --top;
      continue;
    }
    level.remaining--;
    const uint64_t tag = in.varint();
    const uint64_t self = (tag & 1) ? in.varint() : 0;
    const uint64_t delta = in.varint();
    if (in.failed) return error(StatusCode::corrupt_file, "tree: truncated node");
    uint64_t symbol;
    if (level.previous_symbol == kFirst) {
      symbol = delta;
    } else if (!name_rank) {
      symbol = delta >= symbol_count ? UINT64_MAX : level.previous_symbol + 1 + delta;
    } else {
      const int64_t signed_delta = int64_t(delta >> 1) ^ -int64_t(delta & 1);
      symbol = level.previous_symbol + uint64_t(signed_delta);  // below 0 wraps to a huge id
    }
    if (symbol >= symbol_count)
      return error(StatusCode::corrupt_file, "tree: symbol id " + std::to_string(int64_t(symbol)) + " out of range");
    if (name_rank && level.previous_symbol != kFirst && name_rank[symbol] <= name_rank[level.previous_symbol])
      return error(StatusCode::corrupt_file, "tree: children not in name order (symbol " + std::to_string(symbol) + ")");
    if ((tag & 1) && self == 0) return error(StatusCode::corrupt_file, "tree: zero self flagged");
    level.previous_symbol = uint32_t(symbol);
    uint64_t child_count = tag >> 1;
    declared += child_count;
    if (declared > node_count) return error(StatusCode::corrupt_file, "tree: child counts exceed node count");
    const uint32_t index = uint32_t(emitted++);
    emit(level.node, uint32_t(symbol), self);
    if (child_count) {
      if (top + 1 == stack.size()) stack.resize(stack.size() * 2);  // `level` is not used after this
      stack[++top] = {index, kFirst, child_count};
    }
  }
  if (emitted != node_count) return error(StatusCode::corrupt_file, "tree: fewer nodes than declared");
  if (!in.done()) return error(StatusCode::corrupt_file, "tree: trailing bytes");
  return {};
}

inline Status decode_tree(ByteSpan bytes, uint32_t symbol_count, const uint32_t* name_rank, DecodedTree* out) {
  out->parent.clear();
  out->symbol.clear();
  out->self.clear();
  out->total.clear();
  Status status = decode_tree_nodes(
      bytes, symbol_count, name_rank, &out->root_self,
      [&](size_t count) {
        out->parent.reserve(count);
        out->symbol.reserve(count);
        out->self.reserve(count);
      },
      [&](uint32_t parent, uint32_t symbol, uint64_t self) {
        out->parent.push_back(parent);
        out->symbol.push_back(symbol);
        out->self.push_back(self);
      });
  if (!status.ok()) return status;
  out->total = out->self;
  for (size_t i = out->parent.size(); i-- > 0;) {
    uint32_t p = out->parent[i];
    if (p != UINT32_MAX && add_overflows(out->total[p], out->total[i], &out->total[p]))
      return error(StatusCode::corrupt_file, "tree: sample count overflow");
  }
  return {};
}
}  // namespace detail

Status Tree::decode(ByteSpan bytes, Encoding encoding) {
  if (nodes_.size() != 1 || nodes_[kRoot].total != 0 || nodes_[kRoot].self != 0) {
    Tree fresh(symbols_);
    Status st = fresh.decode(bytes, encoding);
    if (!st.ok()) return st;
    clear();
    merge(fresh);
    return {};
  }
  if (encoding == Encoding::children_by_symbol_id) return decode_fresh(bytes, symbols_->size(), nullptr);
  std::vector<uint32_t> rank;
  symbols_->rank_by_name(&rank);
  return decode_fresh(bytes, symbols_->size(), detail::rank_pointer(rank));
}

// Decoded node i becomes node i + 1, in preorder, so parents come before children and totals add up
// in one backward pass. Symbol ids are only checked against symbol_limit: a caller passing another
// table's size (a query) maps them before anyone reads them, by name, so name order survives.
Status Tree::decode_fresh(ByteSpan bytes, uint32_t symbol_limit, const uint32_t* name_rank) {
  uint64_t root_self = 0;
  Status status = detail::decode_tree_nodes(
      bytes, symbol_limit, name_rank, &root_self, [&](size_t count) { nodes_.reserve(count + 1); },
      [&](uint32_t parent, uint32_t symbol, uint64_t self) {
        Node& node = nodes_.emplace_back();  // filled in place: no temporary to copy
        node.symbol = symbol;
        node.parent = parent == UINT32_MAX ? kRoot : parent + 1;
        node.self = self;
        node.total = self;
      });
  nodes_[kRoot].self = root_self;
  nodes_[kRoot].total = root_self;
  for (size_t i = nodes_.size(); status.ok() && i-- > 1;) {
    Node& parent = nodes_[nodes_[i].parent];
    if (detail::add_overflows(parent.total, nodes_[i].total, &parent.total))
      status = detail::error(StatusCode::corrupt_file, "tree: sample count overflow");
  }
  if (!status.ok()) {
    clear();
    return status;
  }
  index_.clear();
  index_built_.store(false, std::memory_order_relaxed);  // built on the first lookup
  name_preorder_ = name_rank != nullptr;
  return {};
}

Status Tree::merge_encoded(ByteSpan bytes, const std::vector<uint32_t>* remap, Encoding encoding) {
  if (encoding == Encoding::children_by_symbol_id) return merge_encoded_ranked(bytes, remap, nullptr);
  // The order is checked by name: remapped ids are ranked through the names they map to.
  std::vector<uint32_t> rank;
  symbols_->rank_by_name(&rank);
  if (remap) {
    std::vector<uint32_t> encoded_rank(remap->size(), 0);
    for (size_t s = 0; s < remap->size(); s++)
      encoded_rank[s] = (*remap)[s] < rank.size() ? rank[(*remap)[s]] : uint32_t(rank.size() + s);  // unmapped: refused later
    return merge_encoded_ranked(bytes, remap, detail::rank_pointer(encoded_rank));
  }
  return merge_encoded_ranked(bytes, remap, detail::rank_pointer(rank));
}

Status Tree::merge_encoded_ranked(ByteSpan bytes, const std::vector<uint32_t>* remap, const uint32_t* name_rank) {
  if (!remap && nodes_.size() == 1 && nodes_[kRoot].total == 0) return decode_fresh(bytes, symbols_->size(), name_rank);
  detail::DecodedTree d;
  uint32_t symbol_limit = remap ? uint32_t(std::min<size_t>(remap->size(), SymbolTable::kNone)) : symbols_->size();
  Status st = detail::decode_tree(bytes, symbol_limit, name_rank, &d);
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
  // One allocation up front: a big query result grows by millions of nodes here.
  reserve_nodes(nodes_.size() + d.parent.size());
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

// [SECTION] Implementation: tree analysis =========================================================

namespace detail {

// The tree analysis functions build trees node by node, as Tree's own merge does, or append nodes
// in name preorder directly (no lookup index, which is built when first needed).
struct TreeAccess {
  static uint32_t child(Tree& tree, uint32_t parent, uint32_t symbol) { return tree.add_child(parent, symbol); }
  static void add(Tree& tree, uint32_t node, uint64_t self, uint64_t total) {
    tree.nodes_[node].self += self;
    tree.nodes_[node].total += total;
  }
  static uint32_t append(Tree& tree, uint32_t symbol, uint32_t parent, uint64_t self, uint64_t total) {
    tree.nodes_.push_back({symbol, parent, self, total});
    return uint32_t(tree.nodes_.size() - 1);
  }
  // Appends source's nodes [first, end), a preorder range (a subtree), under parent: copied as they
  // are (no zeroing first), then their parents moved to the new ids while they are still in the cache.
  static void append_range(Tree& tree, const Tree& source, uint32_t first, uint32_t end, uint32_t parent) {
    const uint32_t base = uint32_t(tree.nodes_.size());
    tree.nodes_.insert(tree.nodes_.end(), source.nodes_.begin() + first, source.nodes_.begin() + end);
    Tree::Node* copied = tree.nodes_.data() + base;
    copied[0].parent = parent;
    const uint32_t shift = base - first;  // modulo 2^32: a parent id p in [first, end) becomes p + shift
    for (uint32_t k = 1; k < end - first; k++) copied[k].parent += shift;
  }
  // append_range without the nodes whose total is below min_total, nor their subtrees (subtree_end
  // gives where each subtree ends). A kept node's parent is always kept: the path of kept ancestors,
  // as (source id, new id) pairs, gives its new parent.
  template <class SubtreeEnd>
  static void append_range_pruned(Tree& tree, const Tree& source, uint32_t first, uint32_t end, uint32_t parent,
                                  uint64_t min_total, SubtreeEnd&& subtree_end, std::vector<std::pair<uint32_t, uint32_t>>* path) {
    path->clear();
    for (uint32_t i = first; i < end;) {
      const Tree::Node& node = source.nodes_[i];
      if (node.total < min_total) {
        i = subtree_end(i);
        continue;
      }
      while (!path->empty() && path->back().first != node.parent) path->pop_back();
      const uint32_t out_parent = path->empty() ? parent : path->back().second;
      tree.nodes_.push_back({node.symbol, out_parent, node.self, node.total});
      path->emplace_back(i, uint32_t(tree.nodes_.size() - 1));
      i++;
    }
  }
  // Room for count nodes, so appending does not move what is there (on millions of nodes a growing
  // vector copies everything about twice, and touches twice the memory). Room left by an earlier use
  // (reset) is kept unless it is more than four times what is asked for.
  static void reserve(Tree& tree, size_t count) {
    if (tree.nodes_.capacity() > 4 * count + 1024) tree.nodes_.shrink_to_fit();
    tree.nodes_.reserve(count);
  }
  // tree becomes an empty tree over symbols, as Tree(symbols) makes, but keeps its node array's room:
  // a tree made again and again of millions of nodes reuses memory that is already in place.
  static void reset(Tree& tree, std::shared_ptr<SymbolTable> symbols) {
    std::vector<Tree::Node> nodes = std::move(tree.nodes_);
    tree = Tree(std::move(symbols));
    nodes.assign(tree.nodes_.begin(), tree.nodes_.end());
    tree.nodes_ = std::move(nodes);
  }
  // The nodes were appended in name preorder: the layout's fast path may read them so.
  static void appended_in_name_preorder(Tree& tree) {
    tree.index_.clear();
    tree.index_built_.store(false, std::memory_order_relaxed);
    tree.name_preorder_ = true;
  }
};

// Every node's children in name order. A tree in name preorder needs only each subtree's end (its
// first child is the next id, its next sibling starts where its subtree ends); any other tree gets
// child lists sorted by name.
class SortedChildren {
 public:
  // A tree in name preorder, each node's subtree ending where subtree_end says.
  explicit SortedChildren(std::vector<uint32_t> subtree_end) : preorder_(true), end_(std::move(subtree_end)) {}
  // Any tree: child lists sorted by the names' ranks.
  SortedChildren(const Tree& tree, const std::vector<uint32_t>& rank) : preorder_(false) {
    const uint32_t n = tree.node_count();
    offsets_.assign(size_t(n) + 1, 0);
    for (uint32_t i = 1; i < n; i++) offsets_[tree.parent(i) + 1]++;
    for (uint32_t i = 0; i < n; i++) offsets_[i + 1] += offsets_[i];
    children_.resize(n > 0 ? n - 1 : 0);
    std::vector<uint32_t> fill(offsets_.begin(), offsets_.end() - 1);
    for (uint32_t i = 1; i < n; i++) children_[fill[tree.parent(i)]++] = i;
    for (uint32_t i = 0; i < n; i++) {
      auto b = children_.begin() + offsets_[i], e = children_.begin() + offsets_[i + 1];
      if (e - b > 1) std::sort(b, e, [&](uint32_t x, uint32_t y) { return rank[tree.symbol(x)] < rank[tree.symbol(y)]; });
    }
  }
  bool preorder() const { return preorder_; }
  uint32_t subtree_end(uint32_t node) const { return end_[node]; }  // preorder only
  template <class F>
  void for_each_child(uint32_t node, F&& f) const {
    if (preorder_) {
      for (uint32_t c = node + 1; c < end_[node]; c = end_[c]) f(c);
    } else {
      for (uint32_t k = offsets_[node]; k < offsets_[node + 1]; k++) f(children_[k]);
    }
  }

 private:
  bool preorder_;
  std::vector<uint32_t> end_, offsets_, children_;
};

// Work shared by the sandwich's two merges: groups of source nodes (or upward cursors) that become one
// output node, processed depth-first so the output comes out in name preorder. A group's members sit
// in `items`; the groups made from one group's children share an area of it, which is given back once
// they are all done, so the memory stays proportional to the depth, not to the tree.
struct MergeGroup {
  uint32_t out_parent;
  uint32_t symbol;
  uint32_t begin, end;  // its members in items
  uint32_t area_end;    // the end of the area its siblings share
};

// Orders a group's next members by their names' ranks (below `ranks`). The groups near the top of a
// sandwich of a hot function have tens of thousands of members, where a counting sort (stable: within
// a rank they keep their order, which no output depends on) costs O(n + ranks) instead of n log n:
// on the benchmark tree's heaviest function the sorts were a quarter of the sandwich in WebAssembly.
template <class T, class RankOf>
void sort_by_rank(std::vector<T>* items, size_t ranks, RankOf rank_of, std::vector<uint32_t>* counts,
                  std::vector<T>* scratch) {
  if (items->size() < 1024 || items->size() * 4 < ranks) {
    std::sort(items->begin(), items->end());
    return;
  }
  counts->assign(ranks + 1, 0);
  for (const T& item : *items) (*counts)[rank_of(item) + 1]++;
  for (size_t r = 0; r < ranks; r++) (*counts)[r + 1] += (*counts)[r];
  scratch->resize(items->size());
  for (const T& item : *items) (*scratch)[(*counts)[rank_of(item)]++] = item;
  items->swap(*scratch);
}

}  // namespace detail

Status sandwich(const Tree& tree, std::string_view function, Sandwich* out, double min_fraction) {
  const uint32_t symbol = tree.symbols().find(function);
  if (symbol == SymbolTable::kNone) {
    *out = Sandwich();
    return detail::error(StatusCode::not_found, "no function '" + std::string(function) + "' in the tree");
  }
  return sandwich(tree, symbol, out, min_fraction);
}

// Both trees are merges of many places of the tree. Hashing each merged node into its parent (as
// Tree::merge does) took ~1 s on 2.7 million nodes in the browser, and gave trees whose layout must
// sort. Instead each output node is a group of source nodes with the same path from the function,
// and its children are the members' children (callees) or callers (callers) grouped by name: the
// output comes out in name preorder. A group of one member is no merge any more: the callees copy
// its subtree as it is, and the callers write its one remaining path, a plain chain up to a root-level
// frame. Every output node is appended once, in order, into the arrays of the previous sandwich
// computed into `out` (no zeroing, and on millions of nodes no fresh pages to fault in). The walks
// upwards read a packed (parent, symbol) copy of the tree's nodes: a third of their memory, so a
// frame's callers, read one by one, mostly come from the cache.
Status sandwich(const Tree& tree, uint32_t symbol, Sandwich* out, double min_fraction) {
  using detail::MergeGroup;
  using detail::TreeAccess;
  {
    Tree callers = std::move(out->callers), callees = std::move(out->callees);
    *out = Sandwich();
    TreeAccess::reset(callers, tree.shared_symbols());
    TreeAccess::reset(callees, tree.shared_symbols());
    out->callers = std::move(callers);
    out->callees = std::move(callees);
  }
  out->symbol = symbol;
  const uint32_t n = tree.node_count();
  const bool preorder = tree.in_name_preorder();
  // One pass in id order (every node comes after its parent): the outermost calls (no call of the
  // function above them), the packed (parent, symbol) links, how many nodes lie under the outermost
  // calls (the callees' size at most) and their depths added up (the callers' size at most); in a tree
  // in preorder also each subtree's end (its nodes are the ids from it up to the end), from the stack
  // of the current node's ancestors.
  struct Link {
    uint32_t parent, symbol;
  };
  // The exact sandwich's millions of upward steps read a packed copy; a pruned one takes few and reads
  // the tree's own nodes (no 8 bytes a node to allocate and fill). Filled before any read.
  const bool exact = !(min_fraction > 0);
  std::unique_ptr<Link[]> packed_links(exact ? new Link[n] : nullptr);
  const auto link = [&](uint32_t i) { return exact ? packed_links[i] : Link{tree.parent(i), tree.symbol(i)}; };
  std::vector<uint32_t> outermost, end;
  std::vector<uint32_t> rank(tree.symbols().size(), 0), used;  // each used symbol's place in name order
  size_t inside_count = 0, callers_bound = 1;
  {
    // Depths only bound the callers' size for its reservation; a pruned sandwich is small and grows.
    std::unique_ptr<uint32_t[]> depth(exact ? new uint32_t[n] : nullptr);
    std::vector<uint8_t> inside(n, 0);
    std::vector<uint32_t> path;  // preorder: the current node's ancestors, the root first
    if (preorder) {
      end.resize(n);
      path.push_back(Tree::kRoot);
    }
    if (exact) packed_links[Tree::kRoot] = {Tree::kNoNode, tree.symbol(Tree::kRoot)};
    if (exact) depth[Tree::kRoot] = 0;
    for (uint32_t i = 1; i < n; i++) {
      const uint32_t parent = tree.parent(i), s = tree.symbol(i);
      if (exact) packed_links[i] = {parent, s};
      if (rank[s] == 0) {
        rank[s] = 1;
        used.push_back(s);
      }
      if (preorder) {
        while (path.size() > 1 && path.back() != parent) {
          end[path.back()] = i;
          path.pop_back();
        }
        path.push_back(i);
      }
      if (exact) depth[i] = depth[parent] + 1;
      const bool call = s == symbol;
      inside[i] = inside[parent] || call;
      inside_count += inside[i];
      if (!call) continue;
      out->self += tree.self(i);
      if (inside[parent]) continue;
      outermost.push_back(i);
      out->total += tree.node_total(i);
      if (exact) callers_bound += depth[i];
    }
    for (uint32_t node : path) end[node] = n;
  }
  if (outermost.empty())
    return detail::error(StatusCode::not_found, "no call of function #" + std::to_string(symbol) + " in the tree");
  // A group (an output node) below this is left out with everything under it.
  const uint64_t min_total =
      min_fraction > 0 ? std::max<uint64_t>(1, uint64_t(std::ceil(double(out->total) * std::min(min_fraction, 1.0)))) : 0;
  out->min_total = min_total;
  // The ranks Tree::rank_used_symbols gives, without its own pass over the nodes.
  std::sort(used.begin(), used.end(), [&](uint32_t a, uint32_t b) { return tree.symbols().name(a) < tree.symbols().name(b); });
  for (uint32_t r = 0; r < used.size(); r++) rank[used[r]] = r;

  // Callers: the members are cursors walking up from the outermost calls, each with its call's samples;
  // a cursor at a root-level frame ends there (its stack begins there).
  {
    Tree& callers = out->callers;
    if (min_total == 0) TreeAccess::reserve(callers, callers_bound);  // pruned: small, grows as needed
    TreeAccess::add(callers, Tree::kRoot, 0, out->total);
    std::vector<std::pair<uint32_t, uint64_t>> items;  // (source node, samples)
    items.reserve(outermost.size());
    for (uint32_t call : outermost) items.emplace_back(call, tree.node_total(call));
    std::vector<MergeGroup> stack{{Tree::kRoot, symbol, 0, uint32_t(items.size()), uint32_t(items.size())}};
    struct Step {
      uint32_t rank, node;
      uint64_t samples;
      bool operator<(const Step& o) const { return rank != o.rank ? rank < o.rank : node < o.node; }
    };
    std::vector<Step> up, up_scratch;
    std::vector<uint32_t> run_starts, counts;
    while (!stack.empty()) {
      const MergeGroup g = stack.back();
      stack.pop_back();
      items.resize(g.area_end);
      if (g.end - g.begin == 1) {
        // One path up to the root from here: the source node's frame, its caller, ..., the root-level
        // frame where the stack begins, each node the child of the one before.
        const auto [from, samples] = items[g.begin];
        uint32_t parent = g.out_parent;
        for (uint32_t at = from;;) {
          const Link l = link(at);
          const bool first_frame = l.parent == Tree::kRoot;
          parent = TreeAccess::append(callers, l.symbol, parent, first_frame ? samples : 0, samples);
          if (first_frame) break;
          at = l.parent;
        }
        continue;
      }
      uint64_t total = 0, self = 0;
      up.clear();
      for (uint32_t k = g.begin; k < g.end; k++) {
        const auto [at, samples] = items[k];
        total += samples;
        const uint32_t caller = link(at).parent;
        if (caller == Tree::kRoot) self += samples;
        else up.push_back({rank[link(caller).symbol], caller, samples});
      }
      const uint32_t node = TreeAccess::append(callers, g.symbol, g.out_parent, self, total);
      detail::sort_by_rank(&up, used.size(), [](const Step& step) { return step.rank; }, &counts, &up_scratch);
      run_starts.clear();
      for (size_t k = 0; k < up.size(); k++) {
        if (k == 0 || up[k].rank != up[k - 1].rank) run_starts.push_back(uint32_t(items.size()));
        items.emplace_back(up[k].node, up[k].samples);  // distinct nodes: siblings have distinct names
      }
      const uint32_t area_end = uint32_t(items.size());
      for (size_t r = run_starts.size(); r-- > 0;) {
        const uint32_t b = run_starts[r], e = r + 1 < run_starts.size() ? run_starts[r + 1] : area_end;
        if (min_total > 0) {
          uint64_t run_total = 0;
          for (uint32_t k = b; k < e; k++) run_total += items[k].second;
          if (run_total < min_total) continue;
        }
        stack.push_back({node, link(items[b].first).symbol, b, e, area_end});
      }
    }
    TreeAccess::appended_in_name_preorder(callers);
  }

  // Callees: the members of a group are source nodes; its children group the members' children by name.
  {
    const detail::SortedChildren children =
        preorder ? detail::SortedChildren(std::move(end)) : detail::SortedChildren(tree, rank);
    Tree& callees = out->callees;
    if (min_total == 0) TreeAccess::reserve(callees, inside_count + 1);
    TreeAccess::add(callees, Tree::kRoot, 0, out->total);
    std::vector<uint32_t> items(outermost);
    std::vector<MergeGroup> stack{{Tree::kRoot, symbol, 0, uint32_t(items.size()), uint32_t(items.size())}};
    std::vector<std::pair<uint32_t, uint32_t>> kids, kids_scratch;  // (name rank, source node)
    std::vector<uint32_t> counts;
    std::vector<std::pair<uint32_t, uint32_t>> kept_path;
    while (!stack.empty()) {
      const MergeGroup g = stack.back();
      stack.pop_back();
      items.resize(g.area_end);  // the subtrees of the groups before this one are done
      if (g.end - g.begin == 1 && children.preorder()) {
        const uint32_t only = items[g.begin];  // one place: its whole subtree, as it is
        if (min_total == 0) {
          TreeAccess::append_range(callees, tree, only, children.subtree_end(only), g.out_parent);
        } else {
          TreeAccess::append_range_pruned(callees, tree, only, children.subtree_end(only), g.out_parent, min_total,
                                          [&](uint32_t i) { return children.subtree_end(i); }, &kept_path);
        }
        continue;
      }
      uint64_t self = 0, total = 0;
      kids.clear();
      for (uint32_t k = g.begin; k < g.end; k++) {
        const uint32_t member = items[k];
        self += tree.self(member);
        total += tree.node_total(member);
        children.for_each_child(member, [&](uint32_t c) { kids.emplace_back(rank[link(c).symbol], c); });
      }
      const uint32_t node = TreeAccess::append(callees, g.symbol, g.out_parent, self, total);
      detail::sort_by_rank(&kids, used.size(), [](const std::pair<uint32_t, uint32_t>& kid) { return kid.first; }, &counts,
                           &kids_scratch);
      const uint32_t area = uint32_t(items.size());
      for (const auto& kid : kids) items.push_back(kid.second);
      const uint32_t area_end = uint32_t(items.size());
      // Runs of one name are the child groups; pushed last to first, so the first is done first.
      for (size_t run_end = kids.size(); run_end > 0;) {
        size_t run_begin = run_end - 1;
        while (run_begin > 0 && kids[run_begin - 1].first == kids[run_end - 1].first) run_begin--;
        uint64_t run_total = min_total;
        if (min_total > 0) {
          run_total = 0;
          for (size_t k = run_begin; k < run_end; k++) run_total += tree.node_total(kids[k].second);
        }
        if (run_total >= min_total)
          stack.push_back({node, link(kids[run_begin].second).symbol, area + uint32_t(run_begin),
                           area + uint32_t(run_end), area_end});
        run_end = run_begin;
      }
    }
    TreeAccess::appended_in_name_preorder(callees);
  }
  return {};
}

Tree collapse_recursion(const Tree& tree, RecursionCollapse mode) {
  const uint32_t n = tree.node_count();
  // Which frames go: with `all`, those with an ancestor of the same function (not outermost); with
  // `direct`, those whose parent is the same function.
  std::vector<uint8_t> keep;
  if (mode == RecursionCollapse::all) {
    tree.mark_outermost(&keep);
  } else {
    keep.assign(n, 1);
    for (uint32_t i = 1; i < n; i++) {
      const uint32_t parent = tree.parent(i);
      if (parent != Tree::kRoot && tree.symbol(parent) == tree.symbol(i)) keep[i] = 0;
    }
  }
  bool any = false;
  for (uint32_t i = 1; i < n && !any; i++) any = keep[i] == 0;
  if (!any) return tree;
  Tree out(tree.shared_symbols());
  detail::TreeAccess::add(out, Tree::kRoot, tree.self(Tree::kRoot), tree.total());
  std::vector<uint32_t> mapped(n);
  mapped[Tree::kRoot] = Tree::kRoot;
  for (uint32_t i = 1; i < n; i++) {
    const uint32_t parent = mapped[tree.parent(i)];
    if (keep[i]) {
      mapped[i] = detail::TreeAccess::child(out, parent, tree.symbol(i));
      detail::TreeAccess::add(out, mapped[i], tree.self(i), tree.node_total(i));
    } else {
      // Its samples are already in the kept frame above; only its self moves there.
      mapped[i] = parent;
      detail::TreeAccess::add(out, parent, tree.self(i), 0);
    }
  }
  return out;
}

namespace detail {

inline bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
}

// The end of the group opened at s[i] ('(' '<' '[' '{'): the index after its closing character, or npos.
// Only the group's own kind nests, except that a '>' inside parentheses does not close a '<'.
inline size_t group_end(std::string_view s, size_t i) {
  const char open = s[i];
  const char close = open == '(' ? ')' : open == '<' ? '>' : open == '[' ? ']' : '}';
  int depth = 0, parens = 0;
  for (size_t k = i; k < s.size(); k++) {
    const char c = s[k];
    if (open == '<' && c == '(') {
      parens++;
    } else if (open == '<' && c == ')') {
      parens--;
    } else if (c == open && parens == 0) {
      depth++;
    } else if (c == close && parens == 0 && --depth == 0) {
      return k + 1;
    }
  }
  return std::string_view::npos;
}

inline bool starts_word(std::string_view s, size_t i, std::string_view word) {
  return s.compare(i, word.size(), word) == 0 && (i + word.size() == s.size() || !name_char(s[i + word.size()]));
}

// After a parameter list: its qualifiers and tags (const, volatile, &, &&, noexcept, [clone .cold],
// [abi:cxx11]), which a short name leaves out. Returns where the name goes on.
inline size_t skip_qualifiers(std::string_view s, size_t i) {
  for (;;) {
    size_t k = i;
    while (k < s.size() && s[k] == ' ') k++;
    if (k >= s.size()) return k;
    size_t next = k;
    for (std::string_view word : {"const", "volatile", "noexcept"})
      if (starts_word(s, k, word)) next = k + word.size();
    if (next == k && s[k] == '&') next = k + (k + 1 < s.size() && s[k + 1] == '&' ? 2 : 1);
    if (next == k && (s.compare(k, 7, "[clone ") == 0 || s.compare(k, 5, "[abi:") == 0)) {
      const size_t end = group_end(s, k);
      next = end == std::string_view::npos ? s.size() : end;
    }
    if (next == k) return i;  // not a qualifier: keep the space(s) for what follows
    i = next;
  }
}

}  // namespace detail

std::string short_function_name(std::string_view name) {
  using detail::group_end;
  using detail::name_char;
  constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026
  constexpr size_t npos = std::string_view::npos;
  std::string out;
  out.reserve(name.size());
  bool callable = false;  // the last thing written names something that a '(' would call
  int braces = 0;         // inside {lambda...#1} or {unnamed type#1}
  size_t i = 0;
  auto copy_group = [&](size_t end) {
    out.append(name.substr(i, end - i));
    i = end;
  };
  while (i < name.size()) {
    const char c = name[i];
    if (name_char(c)) {
      size_t end = i;
      while (end < name.size() && name_char(name[end])) end++;
      const std::string_view word = name.substr(i, end - i);
      out.append(word);
      i = end;
      callable = true;
      if (word != "operator") continue;
      // The operator's own symbol is part of the name: operator(), operator[], operator< <T>,
      // operator<<=, operator->*, operator new[], operator bool, operator""_km.
      if (i < name.size() && name[i] == ' ' && i + 1 < name.size() && name_char(name[i + 1])) {
        out.push_back(' ');  // operator new, operator delete[], a conversion: operator std::string
        i++;
      } else if (name.compare(i, 2, "()") == 0 || name.compare(i, 2, "[]") == 0) {
        out.append(name.substr(i, 2));
        i += 2;
      } else if (name.compare(i, 2, "\"\"") == 0) {
        out.append("\"\"");
        i += 2;
      } else {
        // The longest operator spelled here: operator-<T> is operator- with template arguments.
        static constexpr std::string_view kOperators[] = {
            "->*", "<<=", ">>=", "<=>", "->", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "++", "--", "+=",
            "-=",  "*=",  "/=",  "%=",  "^=", "&=", "|=", "+",  "-",  "*",  "/",  "%",  "^",  "&",  "|",  "~",
            "!",   "=",   "<",   ">",   ","};
        for (std::string_view op : kOperators) {
          if (name.compare(i, op.size(), op) != 0) continue;
          out.append(op);
          i += op.size();
          break;
        }
        if (i + 1 < name.size() && name[i] == ' ' && name[i + 1] == '<') out.push_back(name[i++]);  // operator< <T>
      }
      continue;
    }
    if (c == '<') {
      const size_t end = group_end(name, i);
      if (end == npos) {
        copy_group(name.size());
      } else if (out.empty()) {
        copy_group(end);  // not C++: a Rust <T as Trait>::f or a Python <module>
      } else {
        out.append("<").append(kEllipsis).append(">");
        i = end;
      }
      callable = true;
      continue;
    }
    if (c == '(') {
      const size_t end = group_end(name, i);
      if (end == npos) {
        copy_group(name.size());
      } else if (callable) {
        i = detail::skip_qualifiers(name, end);  // a parameter list and its qualifiers
      } else {
        copy_group(end);  // (anonymous namespace), a Go receiver (*T), Python's (file.py:12)
      }
      callable = false;
      continue;
    }
    if (c == '[') {
      const size_t end = group_end(name, i);
      if (end != npos && name.compare(i, 5, "[abi:") == 0) {
        i = end;  // callable stays as it was: get_buffer[abi:cxx11]() is still a call
      } else {
        copy_group(end == npos ? name.size() : end);
        callable = true;
      }
      continue;
    }
    if (c == '{') braces++;
    if (c == '}' && braces > 0) braces--;
    if (c == ' ' && braces == 0 && i + 1 < name.size() && name[i + 1] != '(' && name[i + 1] != '[') {
      // A space between words outside any group: what came before was a return type
      // ("std::vector<int>& std::forward<...>(...)", "bool std::operator< <...>(...)").
      const size_t q = detail::skip_qualifiers(name, i);
      if (q != i) {  // "foo(int) const [clone .cold]" already skipped them; here: trailing tags only
        i = q;
        continue;
      }
      out.clear();
      callable = false;
      i++;
      continue;
    }
    out.push_back(c);
    callable = c == '}' || c == '>' || c == ']';
    i++;
  }
  // Inline namespaces say nothing to a reader: std::__cxx11::basic_string is std::basic_string.
  for (std::string_view inline_namespace : {"std::__cxx11::", "std::__1::"}) {
    for (size_t at; (at = out.find(inline_namespace)) != std::string::npos;) out.erase(at + 5, inline_namespace.size() - 5);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out.empty() ? std::string(name) : out;
}

Tree with_short_names(const Tree& tree, std::vector<std::vector<uint32_t>>* merged_from) {
  auto table = std::make_shared<SymbolTable>();
  const SymbolTable& source = tree.symbols();
  std::vector<uint32_t> renamed(source.size(), SymbolTable::kNone);
  if (merged_from) merged_from->clear();
  Tree out(table);
  detail::TreeAccess::add(out, Tree::kRoot, tree.self(Tree::kRoot), tree.total());
  std::vector<uint32_t> mapped(tree.node_count());
  mapped[Tree::kRoot] = Tree::kRoot;
  for (uint32_t i = 1; i < tree.node_count(); i++) {
    const uint32_t symbol = tree.symbol(i);
    uint32_t& to = renamed[symbol];
    if (to == SymbolTable::kNone) {
      to = table->intern(short_function_name(source.name(symbol)));
      if (merged_from) {
        if (merged_from->size() <= to) merged_from->resize(size_t(to) + 1);
        (*merged_from)[to].push_back(symbol);
      }
    }
    mapped[i] = detail::TreeAccess::child(out, mapped[tree.parent(i)], to);
    detail::TreeAccess::add(out, mapped[i], tree.self(i), tree.node_total(i));
  }
  return out;
}

namespace detail {

inline void lower_ascii(std::string_view in, std::string* out) {
  out->resize(in.size());
  for (size_t i = 0; i < in.size(); i++) {
    const char c = in[i];
    (*out)[i] = c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
  }
}

}  // namespace detail

NameSearch::NameSearch(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') i++;
    if (i >= text.size()) break;
    Term term;
    if (text[i] == '-' && i + 1 < text.size() && text[i + 1] != ' ') {
      term.exclude = true;
      i++;
    }
    if (text[i] == '"') {
      const size_t close = text.find('"', i + 1);
      const size_t end = close == std::string_view::npos ? text.size() : close;
      term.text = std::string(text.substr(i + 1, end - i - 1));
      i = close == std::string_view::npos ? text.size() : close + 1;
    } else {
      const size_t end = std::min(text.find(' ', i), text.size());
      term.text = std::string(text.substr(i, end - i));
      i = end;
    }
    if (term.text.empty()) continue;
    // Case is ignored by lowering both sides; an escape keeps its letter (\D is not \d).
    std::string pattern;
    for (size_t k = 0; k < term.text.size(); k++) {
      const char c = term.text[k];
      pattern.push_back(c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c);
      if (c == '\\' && k + 1 < term.text.size()) pattern.push_back(term.text[++k]);
    }
    // Found anywhere, unless the term anchors itself with ^ or $ (which Selector's full matches ignore).
    const bool at_start = !pattern.empty() && pattern.front() == '^';
    const bool at_end = pattern.size() > size_t(at_start) && pattern.back() == '$' &&
                        (pattern.size() < 2 || pattern[pattern.size() - 2] != '\\');
    const std::string body = pattern.substr(at_start, pattern.size() - at_start - at_end);
    std::shared_ptr<detail::Regex> compiled;
    detail::Regex alone;
    if (alone.compile(body).ok()) {
      compiled = std::make_shared<detail::Regex>();
      if (!compiled->compile((at_start ? "(" : ".*(") + body + (at_end ? ")" : ").*")).ok()) compiled.reset();
    }
    term.regex = compiled != nullptr;
    std::string lowered;
    detail::lower_ascii(term.text, &lowered);
    lowered_.push_back(std::move(lowered));
    compiled_.push_back(std::move(compiled));
    terms_.push_back(std::move(term));
  }
}

bool NameSearch::matches(std::string_view name) const {
  if (terms_.empty()) return false;
  std::string lowered;
  detail::lower_ascii(name, &lowered);
  bool any_positive = false, hit = false;
  for (size_t t = 0; t < terms_.size(); t++) {
    const bool found = compiled_[t] ? compiled_[t]->full_match(lowered) : lowered.find(lowered_[t]) != std::string::npos;
    if (terms_[t].exclude) {
      if (found) return false;
    } else {
      any_positive = true;
      hit = hit || found;
    }
  }
  return any_positive ? hit : true;
}

std::string NameSearch::literal(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') {
      out += '.';  // a quote would end the term: any character stands for it
      continue;
    }
    if (std::string_view(".[]{}()*+?|^$\\").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

void NameSearch::match_symbols(const SymbolTable& symbols, std::vector<uint8_t>* matched) const {
  matched->assign(symbols.size(), 0);
  if (terms_.empty()) return;
  for (uint32_t s = 0; s < symbols.size(); s++) (*matched)[s] = matches(symbols.name(s)) ? 1 : 0;
}

// [SECTION] Implementation: selectors =============================================================

SeriesKey::SeriesKey(std::string app_name, Tags tag_list)
    : SeriesKey(std::move(app_name), kDefaultProfileType, std::move(tag_list)) {}

SeriesKey::SeriesKey(std::string app_name, std::string profile_type, Tags tag_list)
    : app(std::move(app_name)), type(std::move(profile_type)), tags(std::move(tag_list)) {
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
  std::string s = app + "." + type + "{";
  for (size_t i = 0; i < tags.size(); i++) {
    if (i) s += ',';
    s += tags[i].key + "=" + detail::quote(tags[i].value);
  }
  return s + "}";
}

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
  std::string_view name = text.substr(app_begin, p - app_begin);
  if (!name.empty()) {
    const size_t dot = name.rfind('.');
    out->app = std::string(dot == std::string_view::npos ? name : name.substr(0, dot));
    out->type = dot == std::string_view::npos ? std::string(kDefaultProfileType) : std::string(name.substr(dot + 1));
    if (out->app.empty()) return fail("no application name before '.'");
    if (!is_valid_profile_type(out->type)) return fail("bad profile type '" + out->type + "'");
  }
  skip_space();
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
      if (m.op == Matcher::Op::regex || m.op == Matcher::Op::not_regex) {
        auto re = std::make_shared<detail::Regex>();
        Status st = re->compile(m.value);
        if (!st.ok()) return st;
        m.regex = std::move(re);
      }
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
  return {};
}

bool Matcher::matches(std::string_view tag_value) const {
  switch (op) {
    case Op::equal:
      return tag_value == value;
    case Op::not_equal:
      return tag_value != value;
    case Op::regex:
    case Op::not_regex: {
      bool hit;
      if (regex && regex->pattern() == value) {
        hit = regex->full_match(tag_value);
      } else {  // built by hand, or changed after parsing: a pattern that does not compile matches nothing
        detail::Regex re;
        hit = re.compile(value).ok() && re.full_match(tag_value);
      }
      return hit == (op == Op::regex);
    }
  }
  return false;
}

bool Selector::matches(const SeriesKey& key) const {
  if (!app.empty() && app != key.app) return false;
  if (!type.empty() && type != key.type) return false;
  for (const Matcher& m : matchers) {
    std::string_view value;
    for (const Tag& t : key.tags)
      if (t.key == m.key) value = t.value;
    if (!m.matches(value)) return false;
  }
  return true;
}

std::string Selector::to_string() const {
  static const char* ops[] = {"=", "!=", "=~", "!~"};
  std::string s = app;
  if (!app.empty()) s += "." + (type.empty() ? std::string(kDefaultProfileType) : type);
  s += "{";
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
  *out = SeriesKey(sel.app, sel.type, std::move(tags));
  return {};
}

const char* aggregation_name(Aggregation aggregation) { return aggregation == Aggregation::average ? "average" : "sum"; }

std::string SeriesInfo::to_string() const {
  std::string s = unit + ", " + aggregation_name(aggregation);
  if (period > 0) s += ", period " + std::to_string(period) + (period_unit.empty() ? "" : " " + period_unit);
  return s;
}

bool is_valid_profile_type(std::string_view t) {
  if (t.empty() || t.size() > 64) return false;
  for (size_t i = 0; i < t.size(); i++) {
    const char c = t[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

SeriesInfo default_series_info(std::string_view t) {
  auto ends_with = [&](std::string_view suffix) {
    return t.size() >= suffix.size() && t.compare(t.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  SeriesInfo info;
  if (t == "cpu" || t == "wall" || t == "itimer") {
    info.unit = "samples";
  } else if (ends_with("_space")) {
    info.unit = "bytes";
  } else if (ends_with("_objects")) {
    info.unit = "objects";
  } else if (ends_with("_duration")) {
    info.unit = "nanoseconds";
  } else {
    info.unit = "count";
  }
  if (t.compare(0, 6, "inuse_") == 0 || t == "goroutines") info.aggregation = Aggregation::average;
  return info;
}

}  // namespace pyroscope

namespace pyroscope {

// [SECTION] Implementation: file reader and query =================================================
//
// Byte layout (docs/format.md has the full description):
//   file header, 64 bytes: magic "\x89PYRO\r\n\x1a" (8 bytes), u32 version, u32 header size, i64 resolution,
//     u32 multiplier, u32 flags, i64 creation time, 20 reserved bytes, u32 crc32 of bytes [0, 60)
//   records, back to back: u32 payload size, u32 type, u32 crc32 of (type, payload), payload
// All integers little-endian. Records only ever get appended.

namespace detail {

constexpr char kMagic[8] = {'\x89', 'P', 'Y', 'R', 'O', '\r', '\n', '\x1a'};
// Version 3 adds each series' profile type and value info (unit, aggregation, period) to its SERIES
// record. Version 2 stores siblings in name order (Tree::Encoding::children_by_name); version 1 by
// symbol id. New files are version 3; version 1 and 2 files are read (as cpu in samples, summed) and
// appended to in their own version.
constexpr uint32_t kFormatVersion = 3;
constexpr uint32_t kOldestFormatVersion = 1;
constexpr size_t kFileHeaderSize = 64;
constexpr size_t kRecordHeaderSize = 12;
constexpr uint32_t kMaxRecordPayload = 1u << 30;
constexpr int kMaxLevels = 40;

enum RecordType : uint32_t { kRecordSymbols = 1, kRecordSeries = 2, kRecordTree = 3, kRecordPackedSymbols = 4 };
// A packed SYMBOLS record expands at most this many times (the writer stores plain what packs more):
// a length from the file is checked against it before anything is allocated.
constexpr uint64_t kMaxUnpackRatio = 1024;

struct FileHeader {
  uint32_t version = kFormatVersion;
  int64_t resolution = kDefaultResolutionSeconds;
  uint32_t multiplier = 10;
  int64_t created = 0;
  uint32_t seal_delay = 0;  // version 3: WriterOptions::seal_delay_blocks of the file's writers
};
constexpr uint32_t kMaxSealDelay = 1000000;

inline Tree::Encoding tree_encoding(const FileHeader& h) {
  return h.version >= 2 ? Tree::Encoding::children_by_name : Tree::Encoding::children_by_symbol_id;
}

inline std::string encode_file_header(const FileHeader& h) {
  std::string out(kMagic, 8);
  put_u32(&out, h.version);
  put_u32(&out, uint32_t(kFileHeaderSize));
  put_u64(&out, uint64_t(h.resolution));
  put_u32(&out, h.multiplier);
  put_u32(&out, 0);
  put_u64(&out, uint64_t(h.created));
  put_u32(&out, h.version >= 3 ? h.seal_delay : 0);
  out.append(16, '\0');
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
  if (h->version < kOldestFormatVersion || h->version > kFormatVersion)
    return error(StatusCode::unsupported_version, "file format version " + std::to_string(h->version) +
                                                       ", this build reads versions " + std::to_string(kOldestFormatVersion) +
                                                       " to " + std::to_string(kFormatVersion));
  if (crc32(p, 60) != get_u32(p + 60)) return error(StatusCode::corrupt_file, "file header checksum mismatch");
  if (get_u32(p + 12) != kFileHeaderSize) return error(StatusCode::corrupt_file, "bad header size");
  // Flags and reserved bytes are zero in every version so far. A writer that sets a flag bit makes
  // the file unreadable by readers that do not know it (that is what flags are for); non-zero
  // reserved bytes are damage. Checking both now keeps them usable later.
  if (uint32_t flags = get_u32(p + 28); flags != 0) {
    char text[16];
    std::snprintf(text, sizeof text, "0x%08" PRIx32, flags);
    return error(StatusCode::unsupported_version, std::string("file header flags ") + text + " unknown to this build");
  }
  // Version 3 keeps the writers' seal delay in bytes 40..43; the rest is reserved.
  const size_t reserved_from = h->version >= 3 ? 44 : 40;
  for (size_t i = reserved_from; i < 60; i++)
    if (p[i] != 0) return error(StatusCode::corrupt_file, "file header reserved byte " + std::to_string(i) + " is not zero");
  h->seal_delay = h->version >= 3 ? get_u32(p + 40) : 0;
  if (h->seal_delay > kMaxSealDelay)
    return error(StatusCode::corrupt_file, "bad seal delay " + std::to_string(h->seal_delay));
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

inline void put_string(std::string* out, std::string_view s) {
  put_varint(out, s.size());
  out->append(s);
}

// Version 1 and 2 SERIES records end after the tags; version 3 adds the type and the value info.
inline void encode_series(uint32_t version, uint64_t id, const SeriesKey& key, const SeriesInfo& info,
                          std::string* out) {
  put_varint(out, id);
  put_string(out, key.app);
  put_varint(out, key.tags.size());
  for (const Tag& t : key.tags) {
    put_string(out, t.key);
    put_string(out, t.value);
  }
  if (version < 3) return;
  put_string(out, key.type);
  put_string(out, info.unit);
  put_varint(out, uint64_t(info.aggregation));
  put_varint(out, uint64_t(info.period));
  put_string(out, info.period_type);
  put_string(out, info.period_unit);
}

// What a version 1 or 2 file's series are: CPU samples, summed, period unknown.
inline bool storable_in_old_version(const SeriesKey& key, const SeriesInfo& info) {
  return key.type == kDefaultProfileType && info == SeriesInfo();
}

// One stored tree: level-0 blocks and the upper levels' aggregates alike. A file opened from its
// writer's index (below) has not read the record yet: `unchecked`, offset is where the record starts,
// and File::Impl::tree_bytes checks the record (checksum, header against this entry) when it is read.
struct TreeEntry {
  int64_t index;          // level k: covers blocks [index * m^k, (index + 1) * m^k)
  uint64_t offset;        // of the encoded tree inside the file (of the record when unchecked)
  uint32_t size;          // of the encoded tree (0 when unchecked)
  uint8_t header_bytes;   // the record's header and TREE fields before the tree: offset - this = record
  bool unchecked;
  uint64_t samples;       // the tree's total, kept here so timelines need no decoding
};

// The persisted index. A writer that closes a file of many stored trees appends INDEX_CHUNK records
// (runs of kIndexChunkEntries entries of one series and level) and, last, an INDEX_DIRECTORY record
// ending in a fixed trailer, so a reader opens the file by reading its last record instead of every
// record: checks move to first use (docs/format.md, "Persisted index").
enum : uint32_t { kRecordIndexChunk = 5, kRecordIndexDirectory = 6 };
constexpr size_t kIndexChunkEntries = 4096;
constexpr char kIndexTrailerMagic[8] = {'P', 'Y', 'R', 'O', '-', 'I', 'D', 'X'};
constexpr size_t kIndexTrailerSize = 16;  // u64 offset of the directory record, then the magic

// The stored trees of one series at one level, in index order (at level 0 a block that came in parts
// has several). Either read from the records at open (entries, prefix) or, for a file opened from
// its index, decoded chunk by chunk on first use; the chunk's record is checked then.
class LevelIndex {
 public:
  std::vector<TreeEntry> entries;  // read at open
  std::vector<uint64_t> prefix;    // level 0: prefix[i] = samples of entries [0, i), size() + 1 values

  struct Chunk {
    int64_t first_index = 0;
    uint64_t record = 0;         // offset of its INDEX_CHUNK record
    uint64_t prefix_before = 0;  // level 0: samples of the entries before it
    std::once_flag decoded;
    std::vector<TreeEntry> entries;
    std::vector<uint64_t> prefix;  // absolute, entries.size() + 1 values
  };
  std::unique_ptr<Chunk[]> chunks;  // set: opened from the index
  size_t chunk_count = 0;
  size_t indexed_size = 0;
  uint64_t indexed_total = 0;       // level 0: samples of every entry
  const File::Impl* file = nullptr;
  uint32_t series_id = 0, level = 0;

  bool indexed() const { return chunks != nullptr; }
  size_t size() const { return indexed() ? indexed_size : entries.size(); }
  bool empty() const { return size() == 0; }
  const TreeEntry& at(size_t i) const {
    if (!indexed()) return entries[i];
    return chunk(i / kIndexChunkEntries).entries[i % kIndexChunkEntries];
  }
  uint64_t samples_before(size_t i) const {
    if (!indexed()) return prefix[i];
    if (i == indexed_size) return chunk_count == 0 ? 0 : chunk(chunk_count - 1).prefix.back();  // checked against the total
    return chunk(i / kIndexChunkEntries).prefix[i % kIndexChunkEntries];
  }
  // The first position from `from` on whose entry's index is >= index.
  size_t lower_bound(int64_t index, size_t from = 0) const {
    if (!indexed()) {
      return size_t(std::lower_bound(entries.begin() + std::ptrdiff_t(from), entries.end(), index,
                                     [](const TreeEntry& e, int64_t i) { return e.index < i; }) -
                    entries.begin());
    }
    // The last chunk that starts below index holds the answer, or the answer is the next chunk's start.
    const Chunk* first = chunks.get() + from / kIndexChunkEntries;
    const Chunk* c = std::lower_bound(first, static_cast<const Chunk*>(chunks.get()) + chunk_count, index,
                                      [](const Chunk& x, int64_t i) { return x.first_index < i; });
    if (c == first) return from;
    const size_t n = size_t(c - chunks.get()) - 1;
    const Chunk& d = chunk(n);
    const size_t start = n * kIndexChunkEntries, skip = from > start ? from - start : 0;
    auto it = std::lower_bound(d.entries.begin() + std::ptrdiff_t(std::min(skip, d.entries.size())), d.entries.end(),
                               index, [](const TreeEntry& e, int64_t i) { return e.index < i; });
    return start + size_t(it - d.entries.begin());
  }
  const Chunk& chunk(size_t n) const;  // decoded (once; a damaged chunk marks the file damaged)
};

struct SeriesIndex {
  SeriesKey key;
  SeriesInfo info;
  int64_t sealed_end = INT64_MIN;  // blocks before this lie in spans whose upper trees are written
  uint64_t extra_parts = 0;        // level-0 trees beyond one per block (blocks that came in parts)
  std::vector<LevelIndex> levels;  // levels[k] sorted by index
};

inline int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// The times files and queries hold: unix seconds within +-2^61 (+-73 billion years). Writer::append
// refuses a block outside, a file holding one is corrupt, and query and slice clamp their range to it:
// inside it no sum or difference of two times and a resolution overflows.
constexpr int64_t kTimeLimit = int64_t(1) << 61;
inline int64_t clamp_time(int64_t t) { return t < -kTimeLimit ? -kTimeLimit : t > kTimeLimit ? kTimeLimit : t; }
// Whether block `index` of this resolution lies within the times above.
inline bool block_in_time_limit(int64_t index, int64_t resolution) {
  return index >= -(kTimeLimit / resolution) && index < kTimeLimit / resolution;
}

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
  // The open file behind a mapping, kept for reading index chunks with pread: a writer appending to
  // the file cuts its index off, and a mapped page past the new end would be SIGBUS, not an error.
  int fd = -1;
  ByteSpan bytes;
  FileInfo info;
  detail::FileHeader header;
  std::shared_ptr<SymbolTable> symbols = std::make_shared<SymbolTable>();
  std::vector<SeriesKey> series_keys;
  std::vector<detail::SeriesIndex> series;
  int levels = 1;  // 1 + highest level with an entry
  // Just past the last level-0 TREE record. An append writes its SYMBOLS, SERIES and sealed upper
  // TREEs before the block's TREE, so records after this point are an append that did not finish.
  uint64_t appends_end = detail::kFileHeaderSize;
  // Opened from the writer's index: records before covers_end are checked when first read.
  bool from_index = false;
  uint64_t covers_end = 0;
  uint64_t index_directory = 0;       // offset of the INDEX_DIRECTORY record
  std::vector<uint64_t> eager_records; // SYMBOLS and SERIES records (what a reader reads at open)
  // The first damage found after open (a chunk or record that fails its checks); queries that meet it
  // fail with it. Set once.
  mutable std::once_flag damage_once;
  mutable std::atomic<bool> damaged{false};
  mutable std::string damage;
  void mark_damaged(std::string what) const {
    std::call_once(damage_once, [&] {
      damage = std::move(what);
      damaged.store(true, std::memory_order_release);
    });
  }
  Status damage_status() const {
    if (!damaged.load(std::memory_order_acquire)) return {};
    return detail::error(StatusCode::corrupt_file, damage);
  }
  // Rank by name of every symbol, to check the sibling order of name-ordered trees; made by the
  // first query that needs it (concurrent queries share it).
  mutable std::once_flag name_rank_once;
  mutable std::vector<uint32_t> name_rank;

  ~Impl() {
    unmap();
#if defined(PYROSCOPE_PLATFORM_LINUX)
    if (fd >= 0) ::close(fd);
#endif
  }
  // What decoding this file's trees takes: null for version 1 files (ordered by symbol id).
  const uint32_t* tree_name_rank() const {
    if (detail::tree_encoding(header) == Tree::Encoding::children_by_symbol_id) return nullptr;
    std::call_once(name_rank_once, [this] { symbols->rank_by_name(&name_rank); });
    return detail::rank_pointer(name_rank);
  }
  void unmap() {
#if defined(PYROSCOPE_PLATFORM_LINUX)
    if (mapping) munmap(mapping, mapping_size);
#endif
    mapping = nullptr;
  }

  Status parse(const OpenOptions& options);
  Status parse_record(uint32_t type, const uint8_t* payload, uint32_t size, uint64_t payload_offset);
  // Opens from the persisted index when the file ends with one; false: it does not (read every record).
  bool open_from_index(Status* failed);
  // Whether the directory's upper levels of s lie where the header's multiplier puts its blocks and
  // seals. An index whose upper nodes name no span of its blocks (a header changed after the index
  // was written) would make every query fall back to level 0: exact, but over the merge bound. The
  // record-by-record read catches such a file; false sends it there. O(levels): the open stays fast.
  bool upper_levels_fit(const detail::SeriesIndex& s, int64_t end_time) const {
    const auto& lv = s.levels;
    if (end_time > detail::kTimeLimit) return false;
    const int64_t end_block = detail::floor_div(end_time, header.resolution) + 1;  // past every block
    bool any_upper = false;
    for (size_t k = 1; k < lv.size(); k++) {
      if (lv[k].indexed_size == 0) continue;
      if (lv[0].indexed_size == 0) return false;
      any_upper = true;
      const int64_t span = detail::power(header.multiplier, int(k));
      const int64_t first_block = lv[0].chunks[0].first_index;
      const int64_t first_node = lv[k].chunks[0].first_index, last_node = lv[k].chunks[lv[k].chunk_count - 1].first_index;
      int64_t first_start, first_end, last_end;
      if (span == INT64_MAX || __builtin_mul_overflow(first_node, span, &first_start) ||
          __builtin_add_overflow(first_start, span, &first_end) || __builtin_mul_overflow(last_node, span, &last_end) ||
          __builtin_add_overflow(last_end, span, &last_end))
        return false;
      // The first node holds one of the series' blocks; the last chunk's first node is sealed.
      if (first_end <= first_block || first_start >= end_block || last_end > s.sealed_end) return false;
    }
    return any_upper || s.sealed_end == INT64_MIN;
  }
  Status read_stored(uint64_t offset, size_t size, std::string* out) const;
  void decode_chunk(const detail::LevelIndex& level, size_t n, detail::LevelIndex::Chunk* c) const;
  // The encoded tree of entry e of series s at level k; for an unchecked entry its record is checked.
  Status tree_bytes(const detail::SeriesIndex& s, int level, const detail::TreeEntry& e, ByteSpan* out) const;

  const detail::TreeEntry* find_entry(const detail::SeriesIndex& s, int level, int64_t index) const {
    if (level >= int(s.levels.size())) return nullptr;
    const auto& v = s.levels[size_t(level)];
    size_t at = v.lower_bound(index);
    return at < v.size() && v.at(at).index == index ? &v.at(at) : nullptr;
  }
  // Samples of level-0 blocks in [a, b).
  uint64_t samples_in(const detail::SeriesIndex& s, int64_t a, int64_t b) const {
    if (s.levels.empty() || a >= b) return 0;
    const auto& v = s.levels[0];
    if (v.empty()) return 0;
    size_t lo = v.lower_bound(a), hi = v.lower_bound(b, lo);
    return v.samples_before(hi) - v.samples_before(lo);
  }
  bool has_blocks(const detail::SeriesIndex& s, int64_t a, int64_t b) const {
    if (s.levels.empty() || a >= b) return false;
    const auto& v = s.levels[0];
    size_t lo = v.lower_bound(a);
    return lo < v.size() && v.at(lo).index < b;
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
    std::vector<int64_t> nodes;  // whole nodes of one level that hold blocks
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
        for (size_t i = v.lower_bound(w.a); i < v.size() && v.at(i).index < w.b; ++i) visit(v.at(i), 0);
        continue;
      }
      int64_t span = detail::power(m, w.level);
      if (w.whole_node) {
        if (const detail::TreeEntry* e = find_entry(s, w.level, detail::floor_div(w.a, span))) {
          visit(*e, w.level);
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
      // Only the whole nodes that hold blocks, found from the blocks themselves: data years apart
      // must not walk every empty node between (found by fuzzing: 2 M nodes, 5 s for one query).
      const auto& blocks = s.levels[0];
      nodes.clear();
      for (size_t i = blocks.lower_bound(first_whole * span); i < blocks.size() && blocks.at(i).index < end_whole * span;) {
        const int64_t j = detail::floor_div(blocks.at(i).index, span);
        nodes.push_back(j);
        i = blocks.lower_bound((j + 1) * span, i);
      }
      for (size_t n = nodes.size(); n-- > 0;) stack.push_back({w.level, nodes[n] * span, (nodes[n] + 1) * span, true});
      stack.push_back({w.level - 1, w.a, first_whole * span, false});
    }
  }
};

Status File::Impl::parse_record(uint32_t type, const uint8_t* payload, uint32_t size, uint64_t payload_offset) {
  using detail::error;
  detail::ByteReader in(payload, size);
  switch (type) {
    case detail::kRecordSymbols:
      eager_records.push_back(payload_offset - detail::kRecordHeaderSize);
      return symbols->decode_trie({payload, size});
    case detail::kRecordPackedSymbols: {
      eager_records.push_back(payload_offset - detail::kRecordHeaderSize);
      const uint64_t raw_size = in.varint();
      if (in.failed || raw_size > uint64_t(in.remaining()) * detail::kMaxUnpackRatio || raw_size > detail::kMaxRecordPayload)
        return error(StatusCode::corrupt_file, "packed symbols: impossible size " + std::to_string(raw_size));
      std::string trie;
      Status st = detail::unpack({in.p, in.remaining()}, size_t(raw_size), &trie);
      if (!st.ok()) return Status(st.code(), "packed symbols: " + st.message());
      return symbols->decode_trie({reinterpret_cast<const uint8_t*>(trie.data()), trie.size()});
    }
    case detail::kRecordSeries: {
      eager_records.push_back(payload_offset - detail::kRecordHeaderSize);
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
      SeriesKey key(std::string(app), tags);
      SeriesInfo info;
      if (header.version >= 3) {
        key.type = std::string(in.bytes(in.varint()));
        info.unit = std::string(in.bytes(in.varint()));
        uint64_t aggregation = in.varint();
        uint64_t period = in.varint();
        info.period_type = std::string(in.bytes(in.varint()));
        info.period_unit = std::string(in.bytes(in.varint()));
        if (in.failed || aggregation > 1 || period > uint64_t(INT64_MAX) || !is_valid_profile_type(key.type) ||
            info.unit.empty())
          return error(StatusCode::corrupt_file, "bad series record (type or value info)");
        info.aggregation = Aggregation(aggregation);
        info.period = int64_t(period);
      }
      if (in.failed || !in.done() || app.empty()) return error(StatusCode::corrupt_file, "bad series record");
      if (key.tags.size() != tags.size()) return error(StatusCode::corrupt_file, "series record: repeated tag key");
      detail::SeriesIndex s;
      s.key = key;
      s.info = info;
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
      detail::SeriesIndex& si = series[id];
      auto& levels_of = si.levels;
      if (levels_of.size() <= level) levels_of.resize(level + 1);
      auto& entries = levels_of[level].entries;
      // Upper trees come in time order. A block may come again or late (version 3: a receiver of
      // pushes), but never inside a span already sealed: not in a span whose tree is written (it
      // would be stale), nor in a level-1 span the file's seal delay had closed (WriterOptions).
      const bool late_block = level == 0 && !entries.empty() && entries.back().index >= index;
      if ((level > 0 || header.version < 3) && !entries.empty() && entries.back().index >= index)
        return error(StatusCode::corrupt_file, "tree record out of order for " + si.key.to_string());
      if (level == 0 && index < si.sealed_end)
        return error(StatusCode::corrupt_file, "block " + std::to_string(index) + " of " + si.key.to_string() +
                                                   " lies in a span whose tree is already written");
      if (late_block && detail::floor_div(index, header.multiplier) <
                            detail::floor_div(entries.back().index - int64_t(header.seal_delay), header.multiplier))
        return error(StatusCode::corrupt_file, "block " + std::to_string(index) + " of " + si.key.to_string() +
                                                   " lies in a span the seal delay had closed");
      detail::TreeEntry e;
      e.index = index;
      e.offset = payload_offset + uint64_t(in.p - payload);
      e.size = uint32_t(in.remaining());
      e.header_bytes = uint8_t(detail::kRecordHeaderSize + size_t(in.p - payload));
      e.unchecked = false;
      e.samples = samples;
      if (level > 0) {
        // The writer seals a span only after all its blocks, so they are already indexed: an upper
        // tree must hold exactly their samples, or queries would disagree with their own timelines.
        int64_t span = detail::power(header.multiplier, int(level)), first, end;
        if (__builtin_mul_overflow(index, span, &first) || __builtin_add_overflow(first, span, &end))
          return error(StatusCode::corrupt_file, "tree record: node index out of range");
        uint64_t below = samples_in(si, first, end);
        if (below != samples)
          return error(StatusCode::corrupt_file, "level-" + std::to_string(level) + " node " + std::to_string(index) +
                                                     " of " + si.key.to_string() + " holds " + std::to_string(samples) +
                                                     " samples, its blocks " + std::to_string(below));
        si.sealed_end = std::max(si.sealed_end, end);
      }
      levels = std::max(levels, int(level) + 1);
      if (level > 0) {
        entries.push_back(e);
      } else {
        if (!detail::block_in_time_limit(index, header.resolution))
          return error(StatusCode::corrupt_file, "tree record: block " + std::to_string(index) + " is outside the times a file holds");
        // In index order, a late block after the blocks it precedes (parts of one block keep their
        // order); the prefix sums from there on are made again (late blocks land near the end).
        auto at = late_block ? std::upper_bound(entries.begin(), entries.end(), index,
                                                [](int64_t i, const detail::TreeEntry& x) { return i < x.index; })
                             : entries.end();
        const bool new_block = at == entries.begin() || std::prev(at)->index != index;
        const size_t position = size_t(at - entries.begin());
        entries.insert(at, e);
        auto& prefix = levels_of[0].prefix;
        if (prefix.empty()) prefix.push_back(0);
        prefix.resize(position + 1);
        for (size_t i = position; i < entries.size(); i++) {
          uint64_t sum;
          if (detail::add_overflows(prefix.back(), entries[i].samples, &sum))
            return error(StatusCode::corrupt_file, "sample count overflow");
          prefix.push_back(sum);
        }
        if (new_block) info.block_count++;
        else si.extra_parts++;
        appends_end = payload_offset + size;
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

namespace detail {
inline int64_t unzigzag(uint64_t v) { return int64_t(v >> 1) ^ -int64_t(v & 1); }
inline uint64_t zigzag(int64_t v) { return (uint64_t(v) << 1) ^ uint64_t(v >> 63); }

// A whole record at p with a matching checksum, within `available` bytes: its type and payload.
inline Status checked_record_at(const uint8_t* p, uint64_t available, uint64_t offset, uint32_t* type, ByteSpan* payload) {
  const uint32_t size = available < kRecordHeaderSize ? 0 : get_u32(p);
  if (available < kRecordHeaderSize || size > available - kRecordHeaderSize)
    return error(StatusCode::corrupt_file, "record at offset " + std::to_string(offset) + ": runs past its end");
  uint32_t crc = crc32(p + 4, 4);
  crc = crc32(p + kRecordHeaderSize, size, crc);
  if (crc != get_u32(p + 8))
    return error(StatusCode::corrupt_file, "record at offset " + std::to_string(offset) + ": checksum mismatch");
  *type = get_u32(p + 4);
  *payload = {p + kRecordHeaderSize, size};
  return {};
}
// The record at `offset` of bytes, ending by `end`.
inline Status checked_record(ByteSpan bytes, uint64_t offset, uint64_t end, uint32_t* type, ByteSpan* payload) {
  if (offset < kFileHeaderSize || offset > end || end > bytes.size)
    return error(StatusCode::corrupt_file, "record at offset " + std::to_string(offset) + ": outside the file");
  return checked_record_at(bytes.data + offset, end - offset, offset, type, payload);
}
}  // namespace detail

Status File::Impl::read_stored(uint64_t offset, size_t size, std::string* out) const {
  out->resize(size);
#if defined(PYROSCOPE_PLATFORM_LINUX)
  if (fd >= 0) {
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::pread(fd, &(*out)[done], size - done, off_t(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        return detail::error(StatusCode::corrupt_file, "no longer in the file");
      done += size_t(n);
    }
    return {};
  }
#endif
  if (offset > bytes.size || size > bytes.size - offset)
    return detail::error(StatusCode::corrupt_file, "index record at offset " + std::to_string(offset) + ": outside the file");
  std::memcpy(&(*out)[0], bytes.data + offset, size);
  return {};
}

// An INDEX_CHUNK record: varint series id, varint level, varint chunk number, varint count, zigzag
// first index, varint samples before it, then per entry varint index delta, zigzag record offset
// delta, varint samples. Checked against the directory, in itself (order, offsets before the index,
// sums), and against the next chunk's start.
void File::Impl::decode_chunk(const detail::LevelIndex& level, size_t n, detail::LevelIndex::Chunk* c) const {
  using detail::error;
  const size_t count = n + 1 < level.chunk_count ? detail::kIndexChunkEntries
                                                 : level.indexed_size - n * detail::kIndexChunkEntries;
  auto fail = [&](const std::string& why) {
    std::string cause;
#if defined(PYROSCOPE_PLATFORM_LINUX)
    struct stat now;
    if (fd >= 0 && fstat(fd, &now) == 0 && uint64_t(now.st_size) != bytes.size)
      cause = " (the file changed since it was opened: a writer appending to it cut its index; open it again)";
#endif
    mark_damaged("index chunk " + std::to_string(n) + " of series " + std::to_string(level.series_id) + " level " +
                 std::to_string(level.level) + " (record at offset " + std::to_string(c->record) + "): " + why + cause);
    // Entries that keep every loop finite; nothing is read through them (the file is damaged).
    detail::TreeEntry dead{c->first_index, 0, 0, 0, true, 0};
    c->entries.assign(count, dead);
    c->prefix.assign(count + 1, c->prefix_before);
  };
  std::string record;
  Status st = read_stored(c->record, detail::kRecordHeaderSize, &record);
  uint32_t payload_size = 0;
  if (st.ok()) {
    payload_size = detail::get_u32(reinterpret_cast<const uint8_t*>(record.data()));
    if (payload_size > index_directory - c->record - detail::kRecordHeaderSize) st = error(StatusCode::corrupt_file, "bad size");
  }
  if (st.ok()) st = read_stored(c->record, detail::kRecordHeaderSize + payload_size, &record);
  uint32_t type = 0;
  ByteSpan payload;
  if (st.ok()) {
    st = detail::checked_record_at(reinterpret_cast<const uint8_t*>(record.data()), record.size(), c->record, &type, &payload);
    if (st.ok() && type != detail::kRecordIndexChunk) st = error(StatusCode::corrupt_file, "not an index chunk");
    if (st.ok()) {
      detail::ByteReader in(payload.data, payload.size);
      const uint64_t id = in.varint(), lvl = in.varint(), number = in.varint(), cnt = in.varint();
      const int64_t first = detail::unzigzag(in.varint());
      const uint64_t before = in.varint();
      if (in.failed || id != level.series_id || lvl != level.level || number != n || cnt != count ||
          first != c->first_index || before != c->prefix_before) {
        fail("does not match the index directory");
        return;
      }
      c->entries.reserve(count);
      c->prefix.reserve(count + 1);
      c->prefix.push_back(before);
      int64_t index = first;
      uint64_t offset = 0, sum = before;
      for (size_t i = 0; i < count; i++) {
        const uint64_t delta = in.varint();
        const int64_t offset_delta = detail::unzigzag(in.varint());
        const uint64_t samples = in.varint();
        if (in.failed) break;
        if (i > 0 && (delta == 0 && level.level > 0)) { fail("stored trees out of order"); return; }
        if (delta > uint64_t(INT64_MAX) || __builtin_add_overflow(index, int64_t(delta), &index) ||
            (level.level == 0 && !detail::block_in_time_limit(index, header.resolution))) {
          fail("node index out of range");
          return;
        }
        if (i == 0 && delta != 0) { fail("first entry differs from the directory"); return; }
        offset += uint64_t(offset_delta);
        if (offset < detail::kFileHeaderSize || offset >= covers_end) { fail("record offset outside the indexed records"); return; }
        if (detail::add_overflows(sum, samples, &sum)) { fail("sample count overflow"); return; }
        c->entries.push_back({index, offset, 0, 0, true, samples});
        c->prefix.push_back(sum);
      }
      if (in.failed || !in.done() || c->entries.size() != count) { fail("bad entries"); return; }
      const bool last = n + 1 == level.chunk_count;
      if (level.level == 0 && sum != (last ? level.indexed_total : level.chunks[n + 1].prefix_before)) {
        fail("samples disagree with the directory");
        return;
      }
      if (!last && index > level.chunks[n + 1].first_index) { fail("overlaps the next chunk"); return; }
      if (!last && level.level > 0 && index == level.chunks[n + 1].first_index) { fail("overlaps the next chunk"); return; }
      return;
    }
  }
  fail(st.message());
}

const detail::LevelIndex::Chunk& detail::LevelIndex::chunk(size_t n) const {
  Chunk& c = chunks[n];
  std::call_once(c.decoded, [&] { file->decode_chunk(*this, n, &c); });
  return c;
}

Status File::Impl::tree_bytes(const detail::SeriesIndex& s, int level, const detail::TreeEntry& e, ByteSpan* out) const {
  using detail::error;
  if (!e.unchecked) {
    *out = {bytes.data + e.offset, e.size};
    return {};
  }
  if (Status damage = damage_status(); !damage.ok()) return damage;  // e may be a damaged chunk's stand-in
  uint32_t type = 0;
  ByteSpan payload;
  Status st = detail::checked_record(bytes, e.offset, covers_end, &type, &payload);
  if (!st.ok()) return st;
  detail::ByteReader in(payload.data, payload.size);
  const uint64_t id = in.varint(), lvl = in.varint();
  const int64_t index = detail::unzigzag(in.varint());
  const uint64_t samples = in.varint();
  if (type != detail::kRecordTree || in.failed || id != uint64_t(&s - series.data()) || lvl != uint64_t(level) ||
      index != e.index || samples != e.samples)
    return error(StatusCode::corrupt_file, "record at offset " + std::to_string(e.offset) + ": not the tree the index names");
  if (level > 0) {
    // As when every record is read at open: an upper tree holds exactly its blocks' samples, or a
    // query would disagree with its own timeline.
    const int64_t span = detail::power(header.multiplier, level);
    int64_t first, end;
    const bool in_range = !__builtin_mul_overflow(e.index, span, &first) && !__builtin_add_overflow(first, span, &end);
    const uint64_t below = in_range ? samples_in(s, first, end) : 0;
    if (Status damage = damage_status(); !damage.ok()) return damage;  // found by samples_in
    if (!in_range || below != e.samples)
      return error(StatusCode::corrupt_file, "record at offset " + std::to_string(e.offset) + ": level-" +
                                                 std::to_string(level) + " node " + std::to_string(e.index) +
                                                 " does not hold the samples of its blocks");
  }
  *out = {in.p, in.remaining()};
  return {};
}

// The directory: varint covers_end (the first index record), varint appends_end, varint block count,
// varint stored trees, zigzag first time, zigzag end time, varint levels, varint eager record count
// and their offsets (as increasing deltas), varint series count, and per series zigzag sealed_end
// (INT64_MIN: none), varint extra parts, varint level count, and per level varint entry count,
// varint total samples, and per chunk zigzag first index, varint record offset, varint samples
// before it; then the trailer. Anything that does not fit makes the reader read every record.
bool File::Impl::open_from_index(Status* failed) {
  using detail::error;
  const size_t end = bytes.size;
  if (header.version < 3 || end < detail::kFileHeaderSize + detail::kRecordHeaderSize + detail::kIndexTrailerSize) return false;
  const uint8_t* trailer = bytes.data + end - detail::kIndexTrailerSize;
  if (std::memcmp(trailer + 8, detail::kIndexTrailerMagic, 8) != 0) return false;
  const uint64_t at = detail::get_u64(trailer);
  uint32_t type = 0;
  ByteSpan payload;
  if (at >= end || !detail::checked_record(bytes, at, end, &type, &payload).ok() || type != detail::kRecordIndexDirectory ||
      payload.data + payload.size != bytes.data + end)
    return false;
  detail::ByteReader in(payload.data, payload.size - detail::kIndexTrailerSize);
  const uint64_t covers = in.varint(), appends = in.varint(), blocks = in.varint(), trees = in.varint();
  const int64_t first_time = detail::unzigzag(in.varint()), end_time = detail::unzigzag(in.varint());
  const uint64_t level_count = in.varint(), eager = in.varint();
  if (in.failed || covers > at || appends > covers || appends < detail::kFileHeaderSize || level_count > uint64_t(detail::kMaxLevels) ||
      eager > payload.size)
    return false;
  covers_end = covers;
  index_directory = at;
  uint64_t offset = 0;
  for (uint64_t i = 0; i < eager; i++) {
    const uint64_t delta = in.varint();
    if (in.failed || (i > 0 && delta == 0) || delta >= covers - offset) return false;
    offset += delta;
    ByteSpan record;
    Status st = detail::checked_record(bytes, offset, covers, &type, &record);
    if (!st.ok()) {
      *failed = st;  // a checksum that fails before the end of the file is damage, as when scanning
      return true;
    }
    if (type != detail::kRecordSymbols && type != detail::kRecordPackedSymbols && type != detail::kRecordSeries) return false;
    st = parse_record(type, record.data, uint32_t(record.size), offset + detail::kRecordHeaderSize);
    if (!st.ok()) {
      *failed = Status(st.code(), "record at offset " + std::to_string(offset) + ": " + st.message());
      return true;
    }
  }
  const uint64_t series_count = in.varint();
  if (in.failed || series_count != series.size()) return false;
  uint64_t level0_entries = 0, all_entries = 0;
  int max_levels = 1;
  for (uint32_t id = 0; id < series.size(); id++) {
    detail::SeriesIndex& si = series[id];
    si.sealed_end = detail::unzigzag(in.varint());
    si.extra_parts = in.varint();
    const uint64_t n_levels = in.varint();
    if (in.failed || n_levels == 0 || n_levels > level_count) return false;
    si.levels.resize(size_t(n_levels));
    for (uint32_t k = 0; k < n_levels; k++) {
      detail::LevelIndex& li = si.levels[k];
      const uint64_t n = in.varint(), total = in.varint();
      const uint64_t chunk_count = (n + detail::kIndexChunkEntries - 1) / detail::kIndexChunkEntries;
      if (in.failed || n > trees || chunk_count > in.remaining() || (n == 0 && total != 0)) return false;
      if (n > 0) max_levels = std::max(max_levels, int(k) + 1);
      li.file = this;
      li.series_id = id;
      li.level = k;
      li.indexed_size = size_t(n);
      li.indexed_total = k == 0 ? total : 0;
      li.chunk_count = size_t(chunk_count);
      li.chunks.reset(new detail::LevelIndex::Chunk[std::max<size_t>(1, li.chunk_count)]);
      uint64_t before = 0;
      for (size_t c = 0; c < li.chunk_count; c++) {
        detail::LevelIndex::Chunk& ch = li.chunks[c];
        ch.first_index = detail::unzigzag(in.varint());
        ch.record = in.varint();
        ch.prefix_before = in.varint();
        if (in.failed || ch.record < covers || ch.record > at - detail::kRecordHeaderSize || ch.prefix_before < before || (k == 0 && ch.prefix_before > total) ||
            (c > 0 && ch.first_index < li.chunks[c - 1].first_index))
          return false;
        before = ch.prefix_before;
      }
      (k == 0 ? level0_entries : all_entries) += n;
    }
    if (!upper_levels_fit(si, end_time)) return false;
  }
  if (in.failed || !in.done() || level0_entries < blocks || level0_entries + all_entries != trees ||
      first_time < -detail::kTimeLimit || end_time > detail::kTimeLimit || int64_t(level_count) != max_levels)
    return false;
  from_index = true;
  appends_end = appends;
  levels = max_levels;
  info.valid_bytes = end;
  info.series_count = series.size();
  info.symbol_count = symbols->size();
  info.block_count = blocks;
  info.stored_trees = trees;
  info.first_time = blocks > 0 ? first_time : 0;
  info.end_time = blocks > 0 ? end_time : 0;
  info.opened_from_index = true;
  info.index_bytes = end - covers;
  return true;
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
  if (!options.salvage && !options.check_every_record) {
    Status failed;
    if (open_from_index(&failed)) return failed;
    if (!failed.ok()) return failed;
    // No usable index: start again from the records.
    symbols = std::make_shared<SymbolTable>();
    series.clear();
    series_keys.clear();
    eager_records.clear();
  }
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
    if (s.levels[0].prefix.empty()) s.levels[0].prefix.push_back(0);
  }
  return {};
}

File::File() : impl_(std::make_shared<Impl>()) {}
File::~File() = default;
File::File(const File&) = default;
File& File::operator=(const File&) = default;
File::File(File&&) noexcept = default;
File& File::operator=(File&&) noexcept = default;

Status File::open_span(ByteSpan bytes, const OpenOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->bytes = bytes;
  Status s = impl->parse(options);
  impl_ = std::move(impl);
  return s;
}

Status File::open_bytes(std::string bytes, const OpenOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->owned = std::move(bytes);
  impl->bytes = {reinterpret_cast<const uint8_t*>(impl->owned.data()), impl->owned.size()};
  Status s = impl->parse(options);
  impl_ = std::move(impl);
  return s;
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
  auto impl = std::make_shared<Impl>();
  impl_ = impl;  // a failed open leaves this handle on an empty file, as before
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
    impl->mapping = m;
    impl->mapping_size = size;
    impl->bytes = {static_cast<const uint8_t*>(m), size};
  }
  impl->fd = fd;
#else
  Status rs = detail::read_whole_file(path, &impl->owned);
  if (!rs.ok()) return rs;
  impl->bytes = {reinterpret_cast<const uint8_t*>(impl->owned.data()), impl->owned.size()};
#endif
  Status s = impl->parse(options);
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  return s;
}

const FileInfo& File::info() const { return impl_->info; }
const std::vector<SeriesKey>& File::series() const { return impl_->series_keys; }
const SeriesInfo& File::series_info(size_t i) const { return impl_->series[i].info; }
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

Status Dataset::add_blocks(const std::vector<ProfileBlock>& blocks, int64_t resolution_seconds) {
  WriterOptions options;
  options.resolution_seconds = resolution_seconds;
  Writer writer;
  Status st = writer.open_memory(options);
  if (!st.ok()) return st;
  // The writer takes each series' blocks in time order, one tree per block.
  std::map<std::pair<SeriesKey, int64_t>, std::vector<const ProfileBlock*>> by_block;
  for (const ProfileBlock& b : blocks) {
    if (b.block_start < -(int64_t(1) << 60) || b.block_start > (int64_t(1) << 60))
      return detail::error(StatusCode::invalid_argument, "block time " + std::to_string(b.block_start) + " out of range");
    const int64_t start = detail::floor_div(b.block_start, resolution_seconds) * resolution_seconds;
    by_block[{SeriesKey(b.series.app, b.series.type, b.series.tags), start}].push_back(&b);
  }
  for (const auto& [key, parts] : by_block) {
    for (const ProfileBlock* part : parts)
      if (part->info != parts[0]->info)
        return detail::error(StatusCode::invalid_argument, key.first.to_string() + ": blocks in " + parts[0]->info.to_string() +
                                                               " and in " + part->info.to_string());
    if (parts.size() == 1) {
      st = writer.append(key.first, key.second, parts[0]->tree, &parts[0]->info);
    } else {
      Tree merged;
      for (const ProfileBlock* part : parts) merged.merge(part->tree);
      st = writer.append(key.first, key.second, merged, &parts[0]->info);
    }
    if (!st.ok()) return st;
  }
  return add_bytes(writer.take_bytes());
}
size_t Dataset::file_count() const { return impl_->files.size(); }
const File& Dataset::file(size_t i) const { return impl_->files[i]; }

std::vector<std::string> Dataset::apps() const {
  std::set<std::string> out;
  for (const File& f : impl_->files)
    for (const SeriesKey& k : f.series()) out.insert(k.app);
  return {out.begin(), out.end()};
}

std::vector<std::string> Dataset::types(std::string_view app) const {
  std::set<std::string> found;
  for (const File& f : impl_->files)
    for (const SeriesKey& k : f.series())
      if (app.empty() || k.app == app) found.insert(k.type);
  std::vector<std::string> out;
  if (found.erase(kDefaultProfileType)) out.push_back(kDefaultProfileType);
  out.insert(out.end(), found.begin(), found.end());
  return out;
}

Status Dataset::series_info(const Selector& selector, SeriesInfo* out) const {
  const SeriesKey* first = nullptr;
  for (const File& f : impl_->files) {
    const File::Impl& fi = f.impl();
    for (const detail::SeriesIndex& s : fi.series) {
      if (!selector.matches(s.key)) continue;
      if (!first) {
        first = &s.key;
        *out = s.info;
      } else if (s.info != *out) {
        return detail::error(StatusCode::invalid_argument,
                             selector.to_string() + " selects series of different units: " + first->to_string() + " (" +
                                 out->to_string() + ") and " + s.key.to_string() + " (" + s.info.to_string() + ")");
      }
    }
  }
  if (!first) return detail::error(StatusCode::not_found, "no series matches " + selector.to_string());
  return {};
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

TimeRange Dataset::time_span() const {
  TimeRange span;
  bool any = false;
  for (const File& f : impl_->files) {
    if (f.info().block_count == 0) continue;
    if (!any || f.info().first_time < span.from) span.from = f.info().first_time;
    if (!any || f.info().end_time > span.until) span.until = f.info().end_time;
    any = true;
  }
  return span;
}

int64_t Dataset::resolution_seconds() const {
  return impl_->files.empty() ? kDefaultResolutionSeconds : impl_->files[0].info().resolution_seconds;
}

Status Dataset::slice(const Selector& selector, int64_t from, int64_t until, Writer* writer,
                      SliceStats* stats) const {
  SliceStats counted;
  if (stats) *stats = counted;
  if (!writer || !writer->is_open()) return detail::error(StatusCode::invalid_argument, "slice: the writer is not open");
  if (until <= from) return detail::error(StatusCode::invalid_argument, "slice: empty time range (until <= from)");
  from = detail::clamp_time(from);
  until = detail::clamp_time(until);
  if (until <= from) return {};  // wholly outside the times a file holds: nothing to copy
  const int64_t resolution = resolution_seconds();
  for (const File& f : impl_->files)
    if (f.info().resolution_seconds != resolution)
      return detail::error(StatusCode::invalid_argument,
                           "slice: files with different resolutions (" + std::to_string(resolution) + " s and " +
                               std::to_string(f.info().resolution_seconds) + " s) cannot be sliced together");
  if (writer->resolution_seconds() != resolution)
    return detail::error(StatusCode::invalid_argument, "slice: the writer's resolution (" +
                                                           std::to_string(writer->resolution_seconds()) +
                                                           " s) differs from the data's (" + std::to_string(resolution) + " s)");
  const int64_t a = detail::floor_div(from, resolution);
  const int64_t b = detail::floor_div(until + resolution - 1, resolution);
  struct Stored {
    int64_t index;
    const File::Impl* file;
    const detail::SeriesIndex* series;
    const detail::TreeEntry* entry;
    int level;
  };
  // Each matching series with every stored level-0 tree of it in the range, over all files.
  std::map<SeriesKey, std::vector<Stored>> by_series;
  for (const File& f : impl_->files) {
    const File::Impl& fi = f.impl();
    for (const detail::SeriesIndex& si : fi.series) {
      if (!selector.matches(si.key) || si.levels.empty()) continue;
      std::vector<Stored>& stored = by_series[si.key];
      const auto& blocks = si.levels[0];
      for (size_t i = blocks.lower_bound(a); i < blocks.size() && blocks.at(i).index < b; ++i)
        stored.push_back({blocks.at(i).index, &fi, &si, &blocks.at(i), 0});
      if (Status damage = fi.damage_status(); !damage.ok()) return Status(damage.code(), "slice: " + damage.message());
    }
  }
  for (auto& [key, stored] : by_series) {
    for (const Stored& other : stored)
      if (other.series->info != stored[0].series->info)
        return detail::error(StatusCode::invalid_argument, "slice: " + key.to_string() + " is stored as " +
                                                               stored[0].series->info.to_string() + " in one file and as " +
                                                               other.series->info.to_string() + " in another");
    std::stable_sort(stored.begin(), stored.end(), [](const Stored& x, const Stored& y) { return x.index < y.index; });
    bool any = false;
    for (size_t i = 0; i < stored.size();) {
      const int64_t index = stored[i].index;
      const bool several = i + 1 < stored.size() && stored[i + 1].index == index;
      Tree block;  // several files' trees of one block, merged by name
      Tree decoded;
      for (; i < stored.size() && stored[i].index == index; ++i) {
        const File::Impl& fi = *stored[i].file;
        const detail::TreeEntry& e = *stored[i].entry;
        // Decoded against the file's own table, which is only read.
        decoded = Tree(fi.symbols);
        ByteSpan tree_bytes;
        Status st = fi.tree_bytes(*stored[i].series, stored[i].level, e, &tree_bytes);
        if (st.ok()) st = decoded.decode_fresh(tree_bytes, fi.symbols->size(), fi.tree_name_rank());
        if (st.ok() && decoded.total() != e.samples)
          st = detail::error(StatusCode::corrupt_file, "tree total differs from its record");
        if (!st.ok())
          return Status(st.code(), "slice: " + key.to_string() + " block " + std::to_string(index) + ": " + st.message());
        uint64_t sum;
        if (detail::add_overflows(block.total(), decoded.total(), &sum))
          return detail::error(StatusCode::corrupt_file, "slice: " + key.to_string() + " block " +
                                                             std::to_string(index) + ": sample count overflow");
        if (several) block.merge(decoded);
      }
      const Tree& whole = several ? block : decoded;
      if (whole.total() == 0) continue;
      Status st = writer->append(key, index * resolution, whole, &stored[0].series->info);
      if (!st.ok()) return Status(st.code(), "slice: writing " + key.to_string() + " block " + std::to_string(index) + ": " + st.message());
      any = true;
      counted.blocks++;
      counted.samples += whole.total();
      if (stats) *stats = counted;
    }
    if (any) counted.series++;
    if (stats) *stats = counted;
  }
  return {};
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
  from = detail::clamp_time(from);  // a range wholly outside gives an empty result
  until = detail::clamp_time(until);
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

  // One meaning for the whole result: the matched series must agree on type and value info.
  const detail::SeriesIndex* first_match = nullptr;
  for (const File& f : impl_->files)
    for (const detail::SeriesIndex& s : f.impl().series) {
      if (!selector.matches(s.key)) continue;
      if (!first_match) {
        first_match = &s;
        out->info = s.info;
        out->type = s.key.type;
        continue;
      }
      if (s.key.type != out->type || s.info != out->info)
        return detail::error(StatusCode::invalid_argument,
                             selector.to_string() + " selects series that cannot be added up: " +
                                 first_match->key.to_string() + " (" + first_match->info.to_string() + ") and " +
                                 s.key.to_string() + " (" + s.info.to_string() + "); choose a type (app.type{...})");
    }
  // An average series (a gauge such as in-use memory) is the sum over its blocks divided by the number
  // of blocks that hold data, in the whole range for the tree and per point for the timeline.
  const bool average = first_match && out->info.aggregation == Aggregation::average;
  std::vector<int64_t> blocks_with_data;

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
      // Blocks that came in parts cost a merge per part until their span's upper tree covers them.
      out->merge_bound += uint64_t(2 * (m - 1)) * uint64_t(levels_needed) + s.extra_parts;
      // Timeline without decoding trees: walk the level-0 entries in the range, or, when there are
      // many more entries than points, two binary searches in the prefix sums per point.
      const auto& blocks0 = s.levels[0];
      const size_t first = blocks0.lower_bound(a), last = blocks0.lower_bound(b, first);
      // Blocks after the series' last upper tree lie in spans not sealed yet (the file's tail; a late
      // file, whose seal delay keeps every span open; a header whose multiplier or seal delay no longer
      // matches its records), and are merged one by one (found by fuzz_file: such a file, salvaged,
      // merged 11 trees against a bound of 10 that assumed its spans were sealed).
      out->merge_bound += last - std::min(last, blocks0.lower_bound(std::max(a, s.sealed_end), first));
      if (average)
        for (size_t i = first; i < last; ++i) blocks_with_data.push_back(blocks0.at(i).index);
      if (last - first <= points * 32) {
        for (size_t i = first; i < last; ++i) {
          const detail::TreeEntry& e = blocks0.at(i);
          out->timeline.samples[size_t((e.index - a) / step_blocks)] += e.samples;
        }
      } else {
        for (size_t i = 0; i < points; i++) {
          int64_t pa = a + int64_t(i) * step_blocks;
          out->timeline.samples[i] += fi.samples_in(s, pa, std::min(b, pa + step_blocks));
        }
      }
      if (!options.want_tree || first == last) continue;
      // Cover only the span that holds data, widened to whole top-level nodes (so stored upper trees
      // are still used): a range of 2^60 seconds must not walk 2^57 empty nodes.
      const int top_level = std::max(0, std::min(fi.levels, int(s.levels.size())) - 1);
      const int64_t top_span = detail::power(m, top_level);
      int64_t cover_a = a, cover_b = b, edge;
      if (top_span < (int64_t(1) << 40)) {
        edge = detail::floor_div(blocks0.at(first).index, top_span) * top_span;
        cover_a = std::max(a, edge);
        edge = detail::floor_div(blocks0.at(last - 1).index, top_span) * top_span + top_span;
        cover_b = std::min(b, edge);
      }
      Status failed;
      fi.cover(s, cover_a, cover_b, [&](const detail::TreeEntry& e, int level) {
        if (!failed.ok()) return;
        ByteSpan tree_bytes;
        if (Status rs = fi.tree_bytes(s, level, e, &tree_bytes); !rs.ok()) {
          failed = Status(rs.code(), s.key.to_string() + " block " + std::to_string(e.index) + ": " + rs.message());
          return;
        }
        Tree& result = out->tree;
        if (result.nodes_.size() == 1 && result.nodes_[Tree::kRoot].total == 0) {
          // The first tree (often the only one): decoded in place, file symbol ids mapped afterwards.
          Status ds = result.decode_fresh(tree_bytes, fi.symbols->size(), fi.tree_name_rank());
          if (ds.ok() && result.total() != e.samples)
            ds = detail::error(StatusCode::corrupt_file, "tree total differs from its record");
          if (!ds.ok()) {
            result.clear();
            failed = Status(ds.code(), s.key.to_string() + " block " + std::to_string(e.index) + ": " + ds.message());
            return;
          }
          for (size_t i = 1; i < result.nodes_.size(); i++) {
            uint32_t& symbol = result.nodes_[i].symbol;
            if (remap[symbol] == SymbolTable::kNone) remap[symbol] = result.symbols().intern(fi.symbols->name(symbol));
            symbol = remap[symbol];
          }
          out->merges++;
          return;
        }
        // Map the file's ids to the result's lazily: only symbols that occur get interned.
        detail::DecodedTree d;
        Status ds = detail::decode_tree(tree_bytes, fi.symbols->size(), fi.tree_name_rank(), &d);
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
    // A damaged index chunk read on the way is an error, whatever the loops made of it.
    if (Status damage = fi.damage_status(); !damage.ok()) {
      *out = QueryResult();
      return damage;
    }
  }
  out->series_matched = uint32_t(matched_keys.size());
  if (average && !blocks_with_data.empty()) {
    std::sort(blocks_with_data.begin(), blocks_with_data.end());
    blocks_with_data.erase(std::unique(blocks_with_data.begin(), blocks_with_data.end()), blocks_with_data.end());
    if (options.want_tree) out->tree.divide(blocks_with_data.size());
    std::vector<uint64_t> per_point(points, 0);
    for (int64_t index : blocks_with_data) per_point[size_t((index - a) / step_blocks)]++;
    for (size_t i = 0; i < points; i++) {
      const uint64_t n = per_point[i], v = out->timeline.samples[i];
      if (n > 1) out->timeline.samples[i] = v / n + (v % n >= n - n / 2 ? 1 : 0);
    }
  }
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
  std::string path;  // or "memory" / "function" for messages
  int fd = -1;       // a file on a path
  bool in_memory = false;
  std::string memory;
  WriteFunction function;
  detail::FileHeader header;
  WriterOptions options;
  uint64_t file_size = 0;
  uint64_t stored_trees = 0;  // TREE records in the file, all levels
  bool failed = false;        // a write failed: closing leaves the file as it is
  // The process that opened the file: a forked child that closes its copy of the writer (its
  // destructors at exit) must not append an index to the file the parent is still writing.
  pid_t owner = ::getpid();
  std::shared_ptr<SymbolTable> symbols = std::make_shared<SymbolTable>();
  uint32_t symbols_written = 0;  // names [0, symbols_written) are in the file
  std::map<SeriesKey, uint32_t> series_ids;
  // One open span at one level: the completed children it holds so far.
  struct Accumulator {
    std::vector<int64_t> children;  // distinct child indexes with data (at most m); >= 2: written when sealed
    uint32_t parts = 0;             // pieces added: several per child when a block comes in parts
    // The merge of the pieces, made only when a second piece arrives: a span with one child is never
    // written, and copying a large first child into a merge it never needed was most of the cost of
    // writing a single block (a folded file opened in the viewer).
    std::unique_ptr<Tree> tree;
    std::unique_ptr<Tree> only_tree;  // the one piece so far, as a tree (a sealed lower span)...
    std::string only_encoded;         // ...or as its encoding in the file's ids (a block)
  };
  struct Series {
    SeriesInfo info;
    int64_t last_block = 0;  // the latest block so far
    bool has_blocks = false;
    std::vector<std::map<int64_t, Accumulator>> open;  // open[k]: open spans of level k >= 1, by index
  };
  std::vector<Series> series;
  int max_level = 1;
  // The file's names in name order, extended as names are added: sorting the whole table for every
  // block decoded and every tree encoded was a third of pyro serve's CPU on pprof pushes.
  std::vector<uint32_t> ids_by_name;
  std::vector<uint32_t> name_rank;  // name_rank[id]: position of the name in ids_by_name

  const std::vector<uint32_t>& file_name_rank() {
    const size_t known = ids_by_name.size(), n = symbols->size();
    if (known == n) return name_rank;
    auto by_name = [this](uint32_t a, uint32_t b) { return symbols->name(a) < symbols->name(b); };
    if ((n - known) * 16 < known) {
      // A few new names: a binary search each, then a move of the tail (no string compares).
      for (uint32_t id = uint32_t(known); id < n; id++)
        ids_by_name.insert(std::upper_bound(ids_by_name.begin(), ids_by_name.end(), id, by_name), id);
    } else {
      for (uint32_t id = uint32_t(known); id < n; id++) ids_by_name.push_back(id);
      std::sort(ids_by_name.begin() + std::ptrdiff_t(known), ids_by_name.end(), by_name);
      std::inplace_merge(ids_by_name.begin(), ids_by_name.begin() + std::ptrdiff_t(known), ids_by_name.end(), by_name);
    }
    name_rank.resize(n);
    for (uint32_t r = 0; r < n; r++) name_rank[ids_by_name[r]] = r;
    return name_rank;
  }
  bool by_name() const { return detail::tree_encoding(header) == Tree::Encoding::children_by_name; }

  ~State() {
    if (fd >= 0) ::close(fd);
  }

  bool is_open() const { return fd >= 0 || in_memory || function; }

  Status write_all(const std::string& bytes) {
    if (in_memory) {
      memory += bytes;
      file_size += bytes.size();
      return {};
    }
    if (function) {
      Status st = function(bytes.data(), bytes.size());
      if (!st.ok()) return Status(st.code(), path + ": " + st.message());
      file_size += bytes.size();
      return {};
    }
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

  void tree_record(uint32_t series_id, int level, int64_t index, uint64_t total, const std::string& encoded,
                   std::string* out) {
    std::string payload;
    detail::put_varint(&payload, series_id);
    detail::put_varint(&payload, uint64_t(level));
    detail::put_varint(&payload, (uint64_t(index) << 1) ^ uint64_t(index >> 63));
    detail::put_varint(&payload, total);
    payload += encoded;
    detail::append_record(out, detail::kRecordTree, payload);
    stored_trees++;
  }

  // A tree in the file's ids from its encoding (our own, so its order needs no other check).
  std::unique_ptr<Tree> decoded(const std::string& encoded) {
    auto tree = std::make_unique<Tree>(symbols);
    const uint32_t* rank = by_name() ? detail::rank_pointer(file_name_rank()) : nullptr;
    Status st = tree->merge_encoded_ranked({reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size()},
                                           nullptr, rank);
    PYROSCOPE_ASSERT(st.ok());  // bytes this writer encoded a moment ago
    (void)st;
    return tree;
  }

  // Adds a piece of child `child` to acc: a tree (moved in) or an encoded block.
  void add_piece(Accumulator& acc, int64_t child, std::unique_ptr<Tree> piece, std::string piece_encoded) {
    if (std::find(acc.children.begin(), acc.children.end(), child) == acc.children.end()) acc.children.push_back(child);
    if (acc.parts++ == 0) {
      acc.only_tree = std::move(piece);
      acc.only_encoded = std::move(piece_encoded);
      return;
    }
    if (!acc.tree) acc.tree = take_tree(acc);
    if (piece) acc.tree->merge(*piece);
    else acc.tree->merge(*decoded(piece_encoded));
  }

  // The merge of acc's pieces (acc's trees move out).
  std::unique_ptr<Tree> take_tree(Accumulator& acc) {
    if (acc.tree) return std::move(acc.tree);
    if (acc.only_tree) return std::move(acc.only_tree);
    std::unique_ptr<Tree> tree = decoded(acc.only_encoded);
    acc.only_encoded.clear();
    return tree;
  }

  // Whether the span `index` of level k is sealed once `last_block` has arrived.
  bool sealed(int k, int64_t index, int64_t last_block) const {
    const int64_t span = detail::power(header.multiplier, k);
    return (index + 1) * span + int64_t(header.seal_delay) <= last_block;
  }

  // Seals, bottom-up, every open span of series id that last_block has closed: writes its tree if
  // two or more children had data, and hands it to the span above.
  void seal_spans(uint32_t id, int64_t last_block, std::string* out) {
    Series& s = series[id];
    for (int k = 1; k <= max_level; k++) {
      auto& open = s.open[size_t(k)];
      while (!open.empty() && sealed(k, open.begin()->first, last_block)) {
        const int64_t index = open.begin()->first;
        Accumulator acc = std::move(open.begin()->second);
        open.erase(open.begin());
        if (acc.children.size() >= 2) {
          std::string encoded;
          acc.tree->encode(&encoded, detail::tree_encoding(header), nullptr, by_name() ? &file_name_rank() : nullptr);
          tree_record(id, k, index, acc.tree->total(), encoded, out);
        }
        if (k == max_level) continue;
        Accumulator& up = s.open[size_t(k + 1)][detail::floor_div(index, header.multiplier)];
        // Passed up as it is held: a merged tree (or one rebuilt when the file was reopened) moves,
        // a single block stays encoded.
        if (acc.tree || acc.only_tree) add_piece(up, index, take_tree(acc), std::string());
        else add_piece(up, index, nullptr, std::move(acc.only_encoded));
      }
    }
  }

  void add_block(uint32_t id, int64_t block, std::string encoded) {
    Accumulator& acc = series[id].open[1][detail::floor_div(block, header.multiplier)];
    add_piece(acc, block, nullptr, std::move(encoded));
  }
};

Writer::Writer() = default;
Writer::~Writer() { close(); }
Writer::Writer(Writer&&) noexcept = default;
Writer& Writer::operator=(Writer&&) noexcept = default;
bool Writer::is_open() const { return state_ && state_->is_open(); }
int64_t Writer::resolution_seconds() const { return state_ ? state_->header.resolution : 0; }

const std::string& Writer::bytes() const {
  static const std::string none;
  return state_ && state_->in_memory ? state_->memory : none;
}

std::string Writer::take_bytes() {
  std::string out;
  if (state_ && state_->in_memory) out = std::move(state_->memory);
  close();
  return out;
}

namespace detail {
inline Status check_writer_options(const WriterOptions& options) {
  if (options.multiplier < 2 || options.multiplier > 1024)
    return error(StatusCode::invalid_argument, "multiplier must be in [2, 1024]");
  if (options.resolution_seconds <= 0 || options.resolution_seconds > 86400 * 366)
    return error(StatusCode::invalid_argument, "resolution must be in [1, 31622400] seconds");
  if (options.seal_delay_blocks > kMaxSealDelay)
    return error(StatusCode::invalid_argument, "seal delay must be at most " + std::to_string(kMaxSealDelay) + " blocks");
  return {};
}

// The highest level a writer keeps: its span m^k stays within 2^34 blocks (5,000 years of 10 s).
inline int writer_max_level(uint32_t multiplier) {
  int max_level = 1;
  while (max_level + 1 < kMaxLevels && power(multiplier, max_level + 1) <= (int64_t(1) << 34)) max_level++;
  return max_level;
}
}  // namespace detail

Status Writer::open_memory(const WriterOptions& options) {
  return open_function(nullptr, options);
}

Status Writer::open_function(WriteFunction write, const WriterOptions& options) {
  close();
  Status valid = detail::check_writer_options(options);
  if (!valid.ok()) return valid;
  std::unique_ptr<State> s(new State);
  s->options = options;
  s->in_memory = !write;
  s->path = write ? "output" : "memory";
  s->function = std::move(write);
  s->header.resolution = options.resolution_seconds;
  s->header.multiplier = options.multiplier;
  s->header.created = int64_t(std::time(nullptr));
  s->header.seal_delay = options.seal_delay_blocks;
  s->max_level = detail::writer_max_level(options.multiplier);
  Status st = s->write_all(detail::encode_file_header(s->header));
  if (!st.ok()) return st;
  state_ = std::move(s);
  return {};
}

namespace detail {
// The persisted index of a file read record by record (format in File::Impl::open_from_index and
// decode_chunk): its INDEX_CHUNK records, then the INDEX_DIRECTORY record with its trailer, for a
// file whose records end at `at`.
inline std::string encode_index(const File::Impl& fi, uint64_t at) {
  std::string out, directory;
  put_varint(&directory, at);
  put_varint(&directory, fi.appends_end);
  put_varint(&directory, fi.info.block_count);
  put_varint(&directory, fi.info.stored_trees);
  put_varint(&directory, zigzag(fi.info.first_time));
  put_varint(&directory, zigzag(fi.info.end_time));
  put_varint(&directory, uint64_t(fi.levels));
  put_varint(&directory, fi.eager_records.size());
  uint64_t previous = 0;
  for (uint64_t offset : fi.eager_records) {
    put_varint(&directory, offset - previous);
    previous = offset;
  }
  put_varint(&directory, fi.series.size());
  std::string chunk;
  for (size_t id = 0; id < fi.series.size(); id++) {
    const SeriesIndex& si = fi.series[id];
    put_varint(&directory, zigzag(si.sealed_end));
    put_varint(&directory, si.extra_parts);
    put_varint(&directory, si.levels.size());
    for (size_t k = 0; k < si.levels.size(); k++) {
      const LevelIndex& li = si.levels[k];
      const size_t n = li.size();
      put_varint(&directory, n);
      put_varint(&directory, k == 0 ? li.samples_before(n) : 0);
      uint64_t before = 0;
      for (size_t c = 0; c * kIndexChunkEntries < n; c++) {
        const size_t from = c * kIndexChunkEntries, to = std::min(n, from + kIndexChunkEntries);
        const int64_t first = li.at(from).index;
        put_varint(&directory, zigzag(first));
        put_varint(&directory, at + out.size());
        put_varint(&directory, before);
        chunk.clear();
        put_varint(&chunk, id);
        put_varint(&chunk, k);
        put_varint(&chunk, c);
        put_varint(&chunk, to - from);
        put_varint(&chunk, zigzag(first));
        put_varint(&chunk, before);
        int64_t index = first;
        uint64_t offset = 0;
        for (size_t i = from; i < to; i++) {
          const TreeEntry& e = li.at(i);
          const uint64_t record = e.offset - e.header_bytes;
          put_varint(&chunk, uint64_t(e.index - index));
          put_varint(&chunk, zigzag(int64_t(record - offset)));
          put_varint(&chunk, e.samples);
          index = e.index;
          offset = record;
          if (k == 0) before += e.samples;
        }
        append_record(&out, kRecordIndexChunk, chunk);
      }
    }
  }
  const uint64_t directory_at = at + out.size();
  put_u64(&directory, directory_at);
  directory.append(kIndexTrailerMagic, sizeof kIndexTrailerMagic);
  append_record(&out, kRecordIndexDirectory, directory);
  return out;
}
}  // namespace detail

Status Writer::close() {
  if (!state_) return {};
  Status st;
  State& s = *state_;
  if (s.fd >= 0 && !s.failed && s.owner == ::getpid() && s.header.version >= 3 && s.stored_trees >= s.options.index_min_trees &&
      s.stored_trees > 0) {
    // Read back what this writer and the ones before it stored, every record checked, and index it.
    // A file that does not read back whole gets no index (its readers read every record, as before).
    File written;
    OpenOptions every;
    every.check_every_record = true;
    Status rs = written.open_path(s.path, every);
    const File::Impl& fi = written.impl();
    if (rs.ok() && fi.info.valid_bytes == s.file_size && fi.info.file_bytes == s.file_size && fi.appends_end == s.file_size)
      st = s.write_all(detail::encode_index(fi, s.file_size));
  }
  if (state_->fd >= 0 && ::close(state_->fd) != 0)
    st = detail::error(StatusCode::io_error, state_->path + ": close: " + std::strerror(errno));
  state_->fd = -1;
  state_.reset();
  return st;
}

Status Writer::open(const std::string& path, const WriterOptions& options) {
  using detail::error;
  close();
  Status valid = detail::check_writer_options(options);
  if (!valid.ok()) return valid;
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
    s->header.seal_delay = options.seal_delay_blocks;
    std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return error(StatusCode::io_error, tmp + ": " + std::strerror(errno));
    std::string header = detail::encode_file_header(s->header);
    // A short write is followed by another, so a full disk reports ENOSPC rather than a stale errno.
    size_t done = 0;
    bool ok = true;
    while (ok && done < header.size()) {
      ssize_t n = ::write(fd, header.data() + done, header.size() - done);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) done += size_t(n);
    }
    ok = ok && (!options.fsync_each_block || fsync(fd) == 0);
    int e = errno;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
      if (ok) e = errno;
      ::unlink(tmp.c_str());
      return error(StatusCode::io_error, path + ": write: " + std::strerror(e));
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
  if (existing.impl().appends_end < existing.impl().info.file_bytes) {
    // A writer killed mid-append left a torn record, or whole records of an append whose block never
    // followed (upper trees it sealed, names, series). Both are cut, and the new writer makes them
    // again: a sealed upper tree kept without its block would be written a second time.
    if (ftruncate(s->fd, off_t(existing.impl().appends_end)) != 0)
      return error(StatusCode::io_error, path + ": cutting an unfinished append: " + std::strerror(errno));
    rs = existing.open_path(path);
    if (!rs.ok()) return Status(rs.code(), "refusing to append: " + rs.message());
  }
  const File::Impl& fi = existing.impl();
  s->header = fi.header;
  uint32_t m = s->header.multiplier;
  s->max_level = detail::writer_max_level(m);
  s->file_size = fi.info.valid_bytes;
  s->stored_trees = fi.info.stored_trees;
  if (lseek(s->fd, off_t(s->file_size), SEEK_SET) < 0) return error(StatusCode::io_error, path + ": seek failed");
  for (uint32_t i = 0; i < fi.symbols->size(); i++) s->symbols->intern(fi.symbols->name(i));
  s->symbols_written = s->symbols->size();
  s->series.resize(fi.series.size());
  for (size_t id = 0; id < fi.series.size(); id++) {
    const detail::SeriesIndex& si = fi.series[id];
    s->series_ids[si.key] = uint32_t(id);
    State::Series& ws = s->series[id];
    ws.info = si.info;
    ws.open.resize(size_t(s->max_level) + 1);
    if (si.levels.empty() || si.levels[0].empty()) continue;
    ws.has_blocks = true;
    ws.last_block = si.levels[0].at(si.levels[0].size() - 1).index;
    // Rebuild the open spans' accumulators: at each level the spans the seal rule keeps open after
    // the last block, each holding its completed children (all its blocks at level 1; its sealed
    // children above). The same rule and the file's own seal delay made them, so they come back as
    // the writer that stopped held them.
    const int64_t last = ws.last_block, delay = int64_t(s->header.seal_delay);
    for (int k = 1; k <= s->max_level; k++) {
      const int64_t span = detail::power(m, k), child_span = span / m;
      for (int64_t node = detail::floor_div(last - delay, span); node <= detail::floor_div(last, span); node++) {
        if (s->sealed(k, node, last)) continue;
        const int64_t begin = node * span;
        // Children below `sealed_children_end` are complete: at level 1 every block is.
        const int64_t sealed_children_end =
            k == 1 ? begin + span : std::min(begin + span, detail::floor_div(last - delay, child_span) * child_span);
        if (sealed_children_end <= begin || !fi.has_blocks(si, begin, sealed_children_end)) continue;
        State::Accumulator& acc = ws.open[size_t(k)][node];
        for (int64_t c = begin; c < sealed_children_end; c += child_span)
          if (fi.has_blocks(si, c, c + child_span)) acc.children.push_back(detail::floor_div(c, child_span));
        acc.parts = uint32_t(acc.children.size()) + 1;  // held as a merged tree from here on
        acc.tree.reset(new Tree(s->symbols));
        Status failed;
        fi.cover(si, begin, sealed_children_end, [&](const detail::TreeEntry& e, int level) {
          ByteSpan tree_bytes;
          if (failed.ok()) failed = fi.tree_bytes(si, level, e, &tree_bytes);
          if (failed.ok()) failed = acc.tree->merge_encoded_ranked(tree_bytes, nullptr, fi.tree_name_rank());
        });
        if (!failed.ok()) return Status(failed.code(), "refusing to append: " + path + ": " + failed.message());
      }
    }
  }
  state_ = std::move(s);
  return {};
}

Status Writer::append(const SeriesKey& series_key, int64_t block_start, const Tree& tree, const SeriesInfo* info) {
  using detail::error;
  if (!is_open()) return error(StatusCode::invalid_argument, "writer is not open");
  State& s = *state_;
  if (block_start != detail::clamp_time(block_start) ||
      !detail::block_in_time_limit(detail::floor_div(block_start, s.header.resolution), s.header.resolution))
    return error(StatusCode::invalid_argument, "block start " + std::to_string(block_start) +
                                                   " is outside the times a file holds (+-2^61 s)");
  if (detail::floor_div(block_start, s.header.resolution) * s.header.resolution != block_start)
    return error(StatusCode::invalid_argument, "block start " + std::to_string(block_start) +
                                                   " is not a multiple of the resolution (" +
                                                   std::to_string(s.header.resolution) + " s)");
  if (series_key.app.empty()) return error(StatusCode::invalid_argument, "series without an application name");
  if (!is_valid_profile_type(series_key.type))
    return error(StatusCode::invalid_argument, "bad profile type '" + series_key.type + "' (letters, digits, _)");
  if (tree.total() == 0) return {};
  SeriesKey key(series_key.app, series_key.type, series_key.tags);  // normalizes tag order
  int64_t block = detail::floor_div(block_start, s.header.resolution);
  std::string out;
  uint32_t id;
  SeriesInfo new_info;
  auto found = s.series_ids.find(key);
  if (found == s.series_ids.end()) {
    new_info = info ? *info : default_series_info(key.type);
    if (new_info.unit.empty()) return error(StatusCode::invalid_argument, key.to_string() + ": no unit");
    if (s.header.version < 3 && !detail::storable_in_old_version(key, new_info))
      return error(StatusCode::invalid_argument,
                   key.to_string() + " (" + new_info.to_string() + ") cannot be stored in a version " +
                       std::to_string(s.header.version) + " file, which holds cpu samples only: write a new file");
    id = uint32_t(s.series.size());
    std::string payload;
    detail::encode_series(s.header.version, id, key, new_info, &payload);
    detail::append_record(&out, detail::kRecordSeries, payload);
  } else {
    id = found->second;
    const State::Series& existing = s.series[id];
    if (info && *info != existing.info)
      return error(StatusCode::invalid_argument, key.to_string() + " is stored as " + existing.info.to_string() +
                                                     ", not " + info->to_string());
    if (existing.has_blocks && block <= existing.last_block) {
      // Version 3 takes a block again or late while its span is open; older versions in order only.
      if (s.header.version < 3)
        return error(StatusCode::out_of_order, key.to_string() + ": block at " + std::to_string(block_start) +
                                                   " is not after the last block at " +
                                                   std::to_string(existing.last_block * s.header.resolution) +
                                                   " (a version " + std::to_string(s.header.version) + " file)");
      if (s.sealed(1, detail::floor_div(block, s.header.multiplier), existing.last_block))
        return error(StatusCode::out_of_order,
                     key.to_string() + ": block at " + std::to_string(block_start) + " lies in a span sealed after the block at " +
                         std::to_string(existing.last_block * s.header.resolution) + " (seal delay " +
                         std::to_string(s.header.seal_delay) + " blocks)");
    }
  }
  // The block in the file's symbol ids, encoded straight from the caller's tree through a map of the
  // names it uses; new names go out first so every record refers back only.
  std::vector<uint32_t> to_file_ids;
  if (tree.shared_symbols() != s.symbols) {
    to_file_ids.assign(tree.symbols().size(), SymbolTable::kNone);
    for (uint32_t node = 1; node < tree.node_count(); node++) {
      uint32_t& mapped = to_file_ids[tree.symbol(node)];
      if (mapped == SymbolTable::kNone) mapped = s.symbols->intern(tree.name(node));
    }
  }
  // Siblings go in name order: ranked through the file's table, kept sorted as it grows.
  std::vector<uint32_t> tree_name_rank;
  if (s.by_name() && !to_file_ids.empty()) {
    const std::vector<uint32_t>& file_rank = s.file_name_rank();
    tree_name_rank.assign(to_file_ids.size(), 0);
    for (size_t i = 0; i < to_file_ids.size(); i++)
      if (to_file_ids[i] != SymbolTable::kNone) tree_name_rank[i] = file_rank[to_file_ids[i]];
  }
  std::string block_encoded;
  tree.encode(&block_encoded, detail::tree_encoding(s.header), to_file_ids.empty() ? nullptr : &to_file_ids,
              !s.by_name() ? nullptr : to_file_ids.empty() ? &s.file_name_rank() : &tree_name_rank);
  if (s.symbols->size() > s.symbols_written) {
    std::string payload;
    s.symbols->encode_trie(s.symbols_written, &payload);
    std::string symbols_record;
    // Version 3 packs a large chunk of names (their trie shares prefixes, not what repeats inside
    // template names); a small one or one that does not pack stays plain.
    std::string packed;
    if (s.header.version >= 3 && payload.size() >= 256) {
      detail::put_varint(&packed, payload.size());
      packed += detail::pack(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
    }
    if (!packed.empty() && packed.size() < payload.size() - payload.size() / 16 &&
        payload.size() <= (packed.size() - 1) * detail::kMaxUnpackRatio) {
      detail::append_record(&symbols_record, detail::kRecordPackedSymbols, packed);
    } else {
      detail::append_record(&symbols_record, detail::kRecordSymbols, payload);
    }
    out.insert(0, symbols_record);
  }
  bool new_series = found == s.series_ids.end();
  if (new_series) {
    s.series.emplace_back();
    s.series.back().info = new_info;
    s.series.back().open.resize(size_t(s.max_level) + 1);
    s.series_ids[key] = id;
  }
  State::Series& series = s.series[id];
  const int64_t last_block = series.has_blocks ? std::max(series.last_block, block) : block;
  s.seal_spans(id, last_block, &out);
  s.tree_record(id, 0, block, tree.total(), block_encoded, &out);
  Status st = s.write_all(out);
  if (!st.ok()) {
    // The file was cut back to its last complete record, but the open spans already moved on: the
    // writer closes, and reopening the file rebuilds its state from what is stored.
    s.failed = true;
    close();
    return Status(st.code(), st.message() + " (writer closed; reopen to continue)");
  }
  s.symbols_written = s.symbols->size();
  s.add_block(id, block, std::move(block_encoded));
  series.has_blocks = true;
  series.last_block = last_block;
  return {};
}

}  // namespace pyroscope


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

#if defined(PYROSCOPE_PLATFORM_LINUX) && !defined(PYROSCOPE_NO_SAMPLER)
#include <sys/syscall.h>  // SYS_gettid: a thread's tag-set word is registered by tid
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

#if defined(PYROSCOPE_PLATFORM_LINUX) && !defined(PYROSCOPE_NO_SAMPLER)
// Where each thread that entered a tag scope keeps its tag-set word, by tid: the wall-clock sampler reads
// the tags of a thread blocked in a system call from outside (process_vm_readv, so a thread that exits
// meanwhile cannot fault the reader). Guarded by the tag registry's mutex (held across fork()).
inline std::unordered_map<pid_t, const std::atomic<uint32_t>*>& thread_tag_words() {
  static auto* words = new std::unordered_map<pid_t, const std::atomic<uint32_t>*>;  // never destroyed
  return *words;
}
// Registers the calling thread's word on its first scope and removes it when the thread exits, so a tid
// the kernel reuses never points at another thread's word.
struct ThreadTagWordRegistration {
  pid_t tid = 0;
  void ensure() {
    if (tid != 0) return;
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    std::lock_guard<std::mutex> lock(tag_registry().mutex());
    thread_tag_words()[tid] = &g_thread_tag_set;
  }
  ~ThreadTagWordRegistration() {
    if (tid == 0) return;
    std::lock_guard<std::mutex> lock(tag_registry().mutex());
    auto it = thread_tag_words().find(tid);
    if (it != thread_tag_words().end() && it->second == &g_thread_tag_set) thread_tag_words().erase(it);
  }
};
inline void publish_thread_tag_word() {
  static thread_local ThreadTagWordRegistration registration;
  registration.ensure();
}
#else
inline void publish_thread_tag_word() {}
#endif

uint32_t tag_push(std::string_view key, std::string_view value) {
  publish_thread_tag_word();
  const uint32_t previous = g_thread_tag_set.load(std::memory_order_relaxed);
  g_thread_tag_set.store(tag_registry().child(previous, key, value), std::memory_order_relaxed);
  return previous;
}

uint32_t tag_push_all(const Tags& tags) {
  publish_thread_tag_word();
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

// [SECTION] Implementation: formats (pprof, folded, perf script, speedscope, .cpuprofile) =========
//
// Every importer reads untrusted bytes: each length, count and index is checked against what is
// there before it is used, and every problem is a Status naming where it is (offset, line, sample).
// Importers build trees that share one symbol table and hand them out as ProfileBlocks.

#if defined(PYROSCOPE_WITH_ZLIB)
#include <zlib.h>
#endif
#if defined(PYROSCOPE_WITH_JSON)
#include <nlohmann/json.hpp>
#endif
#include <cmath>

namespace pyroscope {

const char* format_name(Format format) {
  switch (format) {
    case Format::pyro: return "pyro";
    case Format::pprof: return "pprof";
    case Format::folded: return "folded";
    case Format::perf_script: return "perf-script";
    case Format::speedscope: return "speedscope";
    case Format::chrome_cpuprofile: return "cpuprofile";
  }
  return "unknown";
}

Status parse_format_name(std::string_view name, Format* out) {
  static const std::pair<const char*, Format> kNames[] = {
      {"pyro", Format::pyro},           {"pprof", Format::pprof},
      {"folded", Format::folded},       {"perf-script", Format::perf_script},
      {"perf", Format::perf_script},    {"speedscope", Format::speedscope},
      {"cpuprofile", Format::chrome_cpuprofile}, {"chrome", Format::chrome_cpuprofile}};
  for (const auto& entry : kNames) {
    if (name == entry.first) {
      *out = entry.second;
      return {};
    }
  }
  return Status(StatusCode::invalid_argument, "unknown format '" + std::string(name) +
                                                  "' (pyro, pprof, folded, perf-script, speedscope, cpuprofile)");
}

bool formats_have_zlib() {
#if defined(PYROSCOPE_WITH_ZLIB)
  return true;
#else
  return false;
#endif
}

bool formats_have_json() {
#if defined(PYROSCOPE_WITH_JSON)
  return true;
#else
  return false;
#endif
}

std::string ImportReport::summary() const {
  auto with_commas = [](uint64_t v) {
    std::string digits = std::to_string(v), out;
    for (size_t i = 0; i < digits.size(); i++) {
      if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
      out += digits[i];
    }
    return out;
  };
  std::string s = "imported " + with_commas(imported) + " " + items;
  if (skipped > 0) {
    s += ", skipped " + with_commas(skipped);
    for (size_t i = 0; i < skipped_examples.size(); i++) s += (i == 0 ? ": " : ", ") + skipped_examples[i];
    if (skipped > skipped_examples.size()) s += ", ...";
  }
  if (numeric_labels_ignored > 0) s += "; " + with_commas(numeric_labels_ignored) + " numeric labels ignored";
  return s;
}

namespace detail {

constexpr size_t kSkippedExamples = 10;

inline void note_skipped(ImportReport* report, std::string what) {
  report->skipped++;
  if (report->skipped_examples.size() < kSkippedExamples) report->skipped_examples.push_back(std::move(what));
}

// "name: what" when the caller named the input, so a message from a batch says which file.
inline Status import_error(const ImportOptions& options, StatusCode code, const std::string& what) {
  return Status(code, options.source_name.empty() ? what : options.source_name + ": " + what);
}

inline int64_t import_base_time(const ImportOptions& options) {
  return options.time != 0 ? options.time : int64_t(std::time(nullptr));
}

// Profile types and tag keys come from other tools' strings ("alloc/space", "thread id"): characters
// that a series name cannot hold become '_', so every type still gets a series of its own.
inline std::string sanitized_type(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 64)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    out += ok ? c : '_';
  }
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out.insert(out.begin(), '_');
  if (out.size() > 64) out.resize(64);
  return out;
}

inline std::string sanitized_tag_key(std::string_view key) {
  std::string out;
  for (size_t i = 0; i < key.size(); i++) {
    const char c = key[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (c >= '0' && c <= '9') || c == '.';
    out += ok ? c : '_';
  }
  if (!out.empty() && ((out[0] >= '0' && out[0] <= '9') || out[0] == '.')) out.insert(out.begin(), '_');
  while (out.size() >= 2 && out[0] == '_' && out[1] == '_') out.erase(out.begin());  // "__" is reserved
  return out;
}

inline std::string sanitized_tag_value(std::string_view value) {
  std::string out(value);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '{' || c == '}' || c == ',' || c == '=' || c == '"')
      c = '_';
  }
  return out;
}

inline Status check_import_options(const ImportOptions& options) {
  std::string why;
  if (options.app.empty()) return import_error(options, StatusCode::invalid_argument, "no application name given");
  if (!is_valid_app_name(options.app, &why))
    return import_error(options, StatusCode::invalid_argument, "application name '" + options.app + "' " + why);
  for (const Tag& tag : options.tags)
    if (!is_valid_tag(tag.key, tag.value, &why)) return import_error(options, StatusCode::invalid_argument, "tag " + why);
  return {};
}

inline SeriesKey import_series_key(const ImportOptions& options, const std::string& type, Tags profile_tags) {
  // SeriesKey keeps the last value given for a key: the caller's tags go last so that they win.
  profile_tags.insert(profile_tags.end(), options.tags.begin(), options.tags.end());
  return SeriesKey(options.app, type, std::move(profile_tags));
}

inline std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

inline std::string_view base_name_of(std::string_view path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// --- gzip (RFC 1952) around DEFLATE, inflated by zlib or by the caller's function -----------------

inline bool is_gzip(ByteSpan b) { return b.size >= 2 && b.data[0] == 0x1f && b.data[1] == 0x8b; }

#if defined(PYROSCOPE_WITH_ZLIB)
inline Status zlib_inflate_raw(ByteSpan in, uint64_t max_output, std::string* out) {
  z_stream stream;
  std::memset(&stream, 0, sizeof stream);
  if (inflateInit2(&stream, -15) != Z_OK) return error(StatusCode::io_error, "zlib: inflateInit2 failed");
  out->clear();
  size_t fed = 0;
  std::vector<char> buffer(256 * 1024);
  Status result;
  while (true) {
    if (stream.avail_in == 0 && fed < in.size) {  // avail_in is 32 bits: feed >4 GiB inputs in parts
      const size_t part = std::min<size_t>(in.size - fed, size_t(1) << 30);
      stream.next_in = const_cast<Bytef*>(in.data + fed);
      stream.avail_in = uInt(part);
      fed += part;
    }
    stream.next_out = reinterpret_cast<Bytef*>(buffer.data());
    stream.avail_out = uInt(buffer.size());
    const int rc = inflate(&stream, Z_NO_FLUSH);
    const size_t produced = buffer.size() - stream.avail_out;
    if (produced > max_output - out->size()) {
      out->append(buffer.data(), size_t(max_output - out->size()));
      result = error(StatusCode::too_large, "inflates to more than " + std::to_string(max_output) +
                                                " bytes (the limit on inflated input; a gzip bomb?)");
      break;
    }
    out->append(buffer.data(), produced);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR || (rc == Z_OK && produced == 0 && stream.avail_in == 0 && fed == in.size)) {
      result = error(StatusCode::parse_error, "compressed data is truncated");
      break;
    }
    if (rc != Z_OK) {
      result = error(StatusCode::parse_error,
                     std::string("compressed data is corrupt (zlib: ") + (stream.msg ? stream.msg : "error") + ")");
      break;
    }
  }
  inflateEnd(&stream);
  return result;
}

inline Status zlib_deflate_raw(ByteSpan in, std::string* out) {
  z_stream stream;
  std::memset(&stream, 0, sizeof stream);
  if (deflateInit2(&stream, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return error(StatusCode::io_error, "zlib: deflateInit2 failed");
  out->clear();
  std::vector<char> buffer(256 * 1024);
  size_t fed = 0;
  int rc = Z_OK;
  do {
    if (stream.avail_in == 0 && fed < in.size) {
      const size_t part = std::min<size_t>(in.size - fed, size_t(1) << 30);
      stream.next_in = const_cast<Bytef*>(in.data + fed);
      stream.avail_in = uInt(part);
      fed += part;
    }
    stream.next_out = reinterpret_cast<Bytef*>(buffer.data());
    stream.avail_out = uInt(buffer.size());
    rc = deflate(&stream, fed == in.size ? Z_FINISH : Z_NO_FLUSH);
    out->append(buffer.data(), buffer.size() - stream.avail_out);
  } while (rc == Z_OK || rc == Z_BUF_ERROR);
  deflateEnd(&stream);
  if (rc != Z_STREAM_END) return error(StatusCode::io_error, "zlib: deflate failed");
  return {};
}
#endif

inline InflateFunction inflater_or_default(const InflateFunction& hook) {
  if (hook) return hook;
#if defined(PYROSCOPE_WITH_ZLIB)
  return zlib_inflate_raw;
#else
  return nullptr;
#endif
}

// Reads the gzip wrapper and inflates its single member. peek: only the first max_output bytes are
// wanted (format detection), so running past them is not an error and the trailer is not checked.
inline Status gunzip(ByteSpan in, const InflateFunction& hook, uint64_t max_output, std::string* out, bool peek) {
  const InflateFunction inflate = inflater_or_default(hook);
  if (!inflate)
    return error(StatusCode::feature_disabled,
                 "gzip-compressed input needs an inflater: compile the implementation with PYROSCOPE_WITH_ZLIB "
                 "(and link zlib, -lz) or set ImportOptions::inflate");
  if (in.size < 18) return error(StatusCode::parse_error, "gzip: truncated header (" + std::to_string(in.size) + " bytes)");
  if (in.data[2] != 8) return error(StatusCode::parse_error, "gzip: compression method " + std::to_string(in.data[2]) + " is not deflate");
  const uint8_t flags = in.data[3];
  if (flags & 0xe0) return error(StatusCode::parse_error, "gzip: reserved header flags set");
  size_t pos = 10;
  auto skip_zero_terminated = [&]() {
    while (pos < in.size && in.data[pos] != 0) pos++;
    pos++;
  };
  if (flags & 4) {  // FEXTRA
    if (pos + 2 > in.size) return error(StatusCode::parse_error, "gzip: truncated header");
    pos += 2 + (size_t(in.data[pos]) | size_t(in.data[pos + 1]) << 8);
  }
  if (flags & 8) skip_zero_terminated();   // FNAME
  if (flags & 16) skip_zero_terminated();  // FCOMMENT
  if (flags & 2) pos += 2;                 // FHCRC
  if (pos + 8 > in.size) return error(StatusCode::parse_error, "gzip: truncated header");
  const ByteSpan deflated{in.data + pos, in.size - pos - 8};
  const uint32_t stored_crc = get_u32(in.data + in.size - 8);
  const uint32_t stored_size = get_u32(in.data + in.size - 4);
  out->clear();
  Status st = inflate(deflated, max_output, out);
  if (!st.ok()) {
    if (peek && st.code() == StatusCode::too_large) return {};
    return Status(st.code(), "gzip: " + st.message());
  }
  if (peek) return {};
  if (uint32_t(out->size()) != stored_size)
    return error(StatusCode::parse_error, "gzip: inflated " + std::to_string(out->size()) +
                                              " bytes, the trailer says " + std::to_string(stored_size) +
                                              " (more than one gzip member, or corrupt)");
  if (crc32(out->data(), out->size()) != stored_crc) return error(StatusCode::parse_error, "gzip: CRC-32 mismatch");
  return {};
}

inline Status gzip(ByteSpan raw, const DeflateFunction& hook, std::string* out) {
  std::string deflated;
  Status st;
  if (hook) {
    st = hook(raw, &deflated);
  } else {
#if defined(PYROSCOPE_WITH_ZLIB)
    st = zlib_deflate_raw(raw, &deflated);
#else
    return error(StatusCode::feature_disabled, "gzip output needs PYROSCOPE_WITH_ZLIB or ExportOptions::deflate");
#endif
  }
  if (!st.ok()) return st;
  static const char kHeader[10] = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, 0, '\xff'};  // no name, no time, OS unknown
  out->assign(kHeader, sizeof kHeader);
  out->append(deflated);
  put_u32(out, crc32(raw.data, raw.size));
  put_u32(out, uint32_t(raw.size));
  return {};
}

// --- protobuf wire format (profile.proto), read and written by hand ---------------------------------

struct ProtoField {
  uint32_t number = 0;
  uint8_t wire = 0;      // 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
  uint64_t value = 0;    // varint and fixed values
  ByteSpan bytes;        // length-delimited payload
  size_t offset = 0;     // of the field's tag, from the start of the whole message
};

// Reads the fields of one message; a length past the end, a varint over 64 bits, a group or an unknown
// wire type stops it with failed() and a message naming the offset.
class ProtoReader {
 public:
  ProtoReader(ByteSpan bytes, size_t base_offset) : in_(bytes.data, bytes.size), begin_(bytes.data), base_(base_offset) {}
  bool next(ProtoField* f) {
    if (in_.done() || !error_.empty()) return false;
    f->offset = base_ + size_t(in_.p - begin_);
    const uint64_t tag = in_.varint();
    if (in_.failed) return fail(f->offset, "truncated field tag");
    f->number = uint32_t(tag >> 3);
    f->wire = uint8_t(tag & 7);
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return fail(f->offset, "field number " + std::to_string(tag >> 3) + " out of range");
    switch (f->wire) {
      case 0:
        f->value = in_.varint();
        if (in_.failed) return fail(f->offset, "truncated or over-long varint");
        return true;
      case 1:
      case 5: {
        const size_t n = f->wire == 1 ? 8 : 4;
        if (in_.remaining() < n) return fail(f->offset, "truncated fixed-size field");
        f->value = n == 8 ? get_u64(in_.p) : get_u32(in_.p);
        in_.p += n;
        return true;
      }
      case 2: {
        const uint64_t length = in_.varint();
        if (in_.failed) return fail(f->offset, "truncated length");
        if (length > in_.remaining())
          return fail(f->offset, "field " + std::to_string(f->number) + " claims " + std::to_string(length) +
                                     " bytes, only " + std::to_string(in_.remaining()) + " remain");
        f->bytes = ByteSpan{in_.p, size_t(length)};
        in_.p += length;
        return true;
      }
      default:
        return fail(f->offset, "wire type " + std::to_string(f->wire) + " (groups are not used by profile.proto)");
    }
  }
  const std::string& error() const { return error_; }
  size_t offset_of(const uint8_t* p) const { return base_ + size_t(p - begin_); }

 private:
  bool fail(size_t offset, const std::string& what) {
    error_ = "offset " + std::to_string(offset) + ": " + what;
    return false;
  }
  ByteReader in_;
  const uint8_t* begin_;
  size_t base_;
  std::string error_;
};

// A repeated integer field, packed (wire type 2) or one value per field (wire type 0).
inline bool read_repeated_varints(const ProtoField& f, std::vector<uint64_t>* out) {
  if (f.wire == 0) {
    out->push_back(f.value);
    return true;
  }
  if (f.wire != 2) return false;
  ByteReader in(f.bytes.data, f.bytes.size);
  while (!in.done()) {
    const uint64_t v = in.varint();
    if (in.failed) return false;
    out->push_back(v);
  }
  return true;
}

class ProtoWriter {
 public:
  explicit ProtoWriter(std::string* out) : out_(out) {}
  void varint_field(uint32_t number, uint64_t v) {
    put_varint(out_, uint64_t(number) << 3);
    put_varint(out_, v);
  }
  void bytes_field(uint32_t number, std::string_view bytes) {
    put_varint(out_, uint64_t(number) << 3 | 2);
    put_varint(out_, bytes.size());
    out_->append(bytes.data(), bytes.size());
  }
  void packed_field(uint32_t number, const uint64_t* values, size_t n, std::string* scratch) {
    scratch->clear();
    for (size_t i = 0; i < n; i++) put_varint(scratch, values[i]);
    bytes_field(number, *scratch);
  }

 private:
  std::string* out_;
};

// Maps the ids a profile uses (1, 2, 3, ... usually, anything up to 2^64 allowed) to dense indexes.
class IdIndex {
 public:
  static constexpr uint32_t kMissing = 0xffffffffu;
  // false: the id is 0 or already defined.
  bool add(uint64_t id, uint32_t index) {
    if (id == 0) return false;
    return map_.emplace(id, index).second;
  }
  // Dense ids (the common case) are looked up in a vector; the map stays the source of truth.
  void seal() {
    uint64_t max_id = 0;
    for (const auto& e : map_) max_id = std::max(max_id, e.first);
    if (max_id <= 4 * uint64_t(map_.size()) + 64) {
      dense_.assign(size_t(max_id) + 1, kMissing);
      for (const auto& e : map_) dense_[size_t(e.first)] = e.second;
    }
  }
  uint32_t find(uint64_t id) const {
    if (!dense_.empty() || map_.empty()) return id < dense_.size() ? dense_[size_t(id)] : kMissing;
    auto it = map_.find(id);
    return it == map_.end() ? kMissing : it->second;
  }

 private:
  std::unordered_map<uint64_t, uint32_t> map_;
  std::vector<uint32_t> dense_;
};

}  // namespace detail

// --- pprof import -----------------------------------------------------------------------------------

namespace detail {

struct PprofValueType {
  uint64_t type = 0;  // string table indexes
  uint64_t unit = 0;
};

struct PprofLocation {
  uint64_t id = 0;
  uint64_t mapping_id = 0;
  uint64_t address = 0;
  uint32_t first_line = 0;  // into PprofProfile::line_functions
  uint32_t line_count = 0;
  size_t offset = 0;
};

struct PprofFunction {
  uint64_t id = 0;
  uint64_t name = 0;
  uint64_t system_name = 0;
  size_t offset = 0;
};

struct PprofMapping {
  uint64_t id = 0;
  uint64_t memory_start = 0;
  uint64_t file_offset = 0;
  uint64_t filename = 0;
  size_t offset = 0;
};

// The parts of a profile.proto the importer uses. Samples stay as spans into the buffer until they are
// read one at a time, so a big profile is not held twice.
struct PprofProfile {
  std::vector<PprofValueType> sample_types;
  std::vector<ByteSpan> samples;
  std::vector<size_t> sample_offsets;
  std::vector<PprofMapping> mappings;
  std::vector<PprofLocation> locations;
  std::vector<uint64_t> line_functions;
  std::vector<PprofFunction> functions;
  std::vector<std::string_view> strings;
  int64_t time_nanos = 0;
  int64_t duration_nanos = 0;
  PprofValueType period_type;
  int64_t period = 0;
};

inline std::string field_error(const ProtoField& f, const char* message_name) {
  return "offset " + std::to_string(f.offset) + ": " + message_name + " field " + std::to_string(f.number) +
         " has wire type " + std::to_string(f.wire);
}

// Reads the message of f into a sub-reader; nested errors name their own offsets.
inline bool parse_value_type(const ProtoField& outer, PprofValueType* out, std::string* why) {
  ProtoReader r(outer.bytes, outer.offset);
  ProtoField f;
  while (r.next(&f)) {
    if (f.wire != 0) continue;  // unknown or misplaced fields of a nested message are skipped
    if (f.number == 1) out->type = f.value;
    if (f.number == 2) out->unit = f.value;
  }
  *why = r.error();
  return why->empty();
}

inline Status parse_pprof(ByteSpan bytes, PprofProfile* p) {
  ProtoReader reader(bytes, 0);
  ProtoField f;
  std::string why;
  auto corrupt = [](const std::string& what) { return error(StatusCode::parse_error, "pprof: " + what); };
  while (reader.next(&f)) {
    switch (f.number) {
      case 1:
      case 11: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofValueType vt;
        if (!parse_value_type(f, &vt, &why)) return corrupt(why);
        if (f.number == 1) p->sample_types.push_back(vt);
        else p->period_type = vt;
        break;
      }
      case 2:
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        p->samples.push_back(f.bytes);
        p->sample_offsets.push_back(f.offset);
        break;
      case 3: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofMapping m;
        m.offset = f.offset;
        ProtoReader r(f.bytes, f.offset);
        ProtoField g;
        while (r.next(&g)) {
          if (g.wire != 0) continue;
          if (g.number == 1) m.id = g.value;
          else if (g.number == 2) m.memory_start = g.value;
          else if (g.number == 4) m.file_offset = g.value;
          else if (g.number == 5) m.filename = g.value;
        }
        if (!r.error().empty()) return corrupt(r.error());
        p->mappings.push_back(m);
        break;
      }
      case 4: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofLocation loc;
        loc.offset = f.offset;
        loc.first_line = uint32_t(p->line_functions.size());
        ProtoReader r(f.bytes, f.offset);
        ProtoField g;
        while (r.next(&g)) {
          if (g.number == 1 && g.wire == 0) loc.id = g.value;
          else if (g.number == 2 && g.wire == 0) loc.mapping_id = g.value;
          else if (g.number == 3 && g.wire == 0) loc.address = g.value;
          else if (g.number == 4 && g.wire == 2) {
            uint64_t function_id = 0;
            ProtoReader lr(g.bytes, g.offset);
            ProtoField h;
            while (lr.next(&h))
              if (h.number == 1 && h.wire == 0) function_id = h.value;
            if (!lr.error().empty()) return corrupt(lr.error());
            if (p->line_functions.size() >= 0xffffffffu) return corrupt("too many lines");
            p->line_functions.push_back(function_id);
          }
        }
        if (!r.error().empty()) return corrupt(r.error());
        loc.line_count = uint32_t(p->line_functions.size() - loc.first_line);
        p->locations.push_back(loc);
        break;
      }
      case 5: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofFunction fn;
        fn.offset = f.offset;
        ProtoReader r(f.bytes, f.offset);
        ProtoField g;
        while (r.next(&g)) {
          if (g.wire != 0) continue;
          if (g.number == 1) fn.id = g.value;
          else if (g.number == 2) fn.name = g.value;
          else if (g.number == 3) fn.system_name = g.value;
        }
        if (!r.error().empty()) return corrupt(r.error());
        p->functions.push_back(fn);
        break;
      }
      case 6:
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        p->strings.emplace_back(reinterpret_cast<const char*>(f.bytes.data), f.bytes.size);
        break;
      case 9:
      case 10:
      case 12:
        if (f.wire != 0) return corrupt(field_error(f, "Profile"));
        if (f.number == 9) p->time_nanos = int64_t(f.value);
        else if (f.number == 10) p->duration_nanos = int64_t(f.value);
        else p->period = int64_t(f.value);
        break;
      default:
        break;  // drop_frames, keep_frames, comment, default_sample_type, and fields added later
    }
  }
  if (!reader.error().empty()) return corrupt(reader.error());
  if (p->sample_types.empty()) return corrupt("no sample types (not a profile.proto?)");
  if (p->strings.empty() || !p->strings[0].empty()) return corrupt("string table must start with \"\"");
  return {};
}

inline bool string_index_ok(const PprofProfile& p, uint64_t index) { return index < p.strings.size(); }

inline Status import_pprof(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                           ImportReport* report) {
  auto fail = [&](const std::string& what) { return import_error(options, StatusCode::parse_error, what); };
  PprofProfile p;
  Status st = parse_pprof(bytes, &p);
  if (!st.ok()) return import_error(options, st.code(), st.message());

  // Types and what their values mean.
  struct TypeInfo {
    std::string name;
    SeriesInfo info;
  };
  std::vector<TypeInfo> types;
  std::set<std::string> type_names;
  for (size_t i = 0; i < p.sample_types.size(); i++) {
    const PprofValueType& vt = p.sample_types[i];
    if (!string_index_ok(p, vt.type) || !string_index_ok(p, vt.unit))
      return fail("pprof: sample type " + std::to_string(i) + ": string index out of range");
    // Two sample types that read the same after sanitizing stay two series: name_2, name_3, ... (the
    // suffix replaces the end of a name already at the 64-byte limit, so it always makes a new name).
    const std::string base = sanitized_type(p.strings[vt.type]);
    std::string name = base;
    for (uint64_t k = 2; !type_names.insert(name).second; k++) {
      const std::string suffix = "_" + std::to_string(k);
      name = base.substr(0, 64 - suffix.size()) + suffix;
    }
    TypeInfo t;
    t.name = name;
    t.info = default_series_info(name);
    if (!p.strings[vt.unit].empty()) t.info.unit = std::string(p.strings[vt.unit]);
    if (p.period > 0) {
      if (!string_index_ok(p, p.period_type.type) || !string_index_ok(p, p.period_type.unit))
        return fail("pprof: period type: string index out of range");
      t.info.period = p.period;
      t.info.period_type = std::string(p.strings[p.period_type.type]);
      t.info.period_unit = std::string(p.strings[p.period_type.unit]);
    }
    types.push_back(std::move(t));
  }

  // Functions -> symbols of the shared table.
  auto symbols = std::make_shared<SymbolTable>();
  IdIndex function_index;
  std::vector<uint32_t> function_symbol(p.functions.size());
  for (size_t i = 0; i < p.functions.size(); i++) {
    const PprofFunction& fn = p.functions[i];
    if (!function_index.add(fn.id, uint32_t(i)))
      return fail("pprof: offset " + std::to_string(fn.offset) + ": function id " + std::to_string(fn.id) +
                  (fn.id == 0 ? " is 0" : " defined twice"));
    if (!string_index_ok(p, fn.name) || !string_index_ok(p, fn.system_name))
      return fail("pprof: offset " + std::to_string(fn.offset) + ": function " + std::to_string(fn.id) +
                  ": string index out of range");
    std::string_view name = p.strings[fn.name];
    if (name.empty()) name = p.strings[fn.system_name];
    // A function without a name is named by its location's address instead (below).
    function_symbol[i] = name.empty() ? SymbolTable::kNone : symbols->intern(name);
  }
  function_index.seal();

  IdIndex mapping_index;
  for (size_t i = 0; i < p.mappings.size(); i++) {
    const PprofMapping& m = p.mappings[i];
    if (!mapping_index.add(m.id, uint32_t(i)))
      return fail("pprof: offset " + std::to_string(m.offset) + ": mapping id " + std::to_string(m.id) +
                  (m.id == 0 ? " is 0" : " defined twice"));
    if (!string_index_ok(p, m.filename))
      return fail("pprof: offset " + std::to_string(m.offset) + ": mapping filename index out of range");
  }
  mapping_index.seal();

  // Locations -> their frames, root first. A location's lines are innermost first (an inlined
  // function, then the function it was inlined into): each becomes a frame of its own.
  IdIndex location_index;
  std::vector<uint32_t> location_first(p.locations.size() + 1, 0);
  std::vector<uint32_t> location_frames;
  for (size_t i = 0; i < p.locations.size(); i++) {
    const PprofLocation& loc = p.locations[i];
    auto where = [&]() { return "pprof: offset " + std::to_string(loc.offset) + ": location " + std::to_string(loc.id); };
    if (!location_index.add(loc.id, uint32_t(i))) return fail(where() + (loc.id == 0 ? ": id 0" : ": defined twice"));
    location_first[i] = uint32_t(location_frames.size());
    // Not symbolized: named by where it is, as `module+0xoffset` (pprof's own fallback).
    uint32_t address_symbol = SymbolTable::kNone;
    auto address_name = [&]() -> Status {
      if (address_symbol != SymbolTable::kNone) return {};
      std::string name = hex(loc.address);
      if (loc.mapping_id != 0) {
        const uint32_t m = mapping_index.find(loc.mapping_id);
        if (m == IdIndex::kMissing) return fail(where() + ": mapping " + std::to_string(loc.mapping_id) + " not defined");
        const PprofMapping& mapping = p.mappings[m];
        std::string_view file = base_name_of(p.strings[mapping.filename]);
        if (!file.empty() && loc.address >= mapping.memory_start)
          name = std::string(file) + "+" + hex(loc.address - mapping.memory_start + mapping.file_offset);
      }
      address_symbol = symbols->intern(name);
      return {};
    };
    if (loc.line_count == 0) {
      Status named = address_name();
      if (!named.ok()) return named;
      location_frames.push_back(address_symbol);
    }
    for (uint32_t k = loc.line_count; k-- > 0;) {
      const uint64_t function_id = p.line_functions[loc.first_line + k];
      const uint32_t fn = function_index.find(function_id);
      if (fn == IdIndex::kMissing)
        return fail(where() + ": line " + std::to_string(k) + ": function " + std::to_string(function_id) + " not defined");
      if (function_symbol[fn] == SymbolTable::kNone) {
        Status named = address_name();
        if (!named.ok()) return named;
        location_frames.push_back(address_symbol);
      } else {
        location_frames.push_back(function_symbol[fn]);
      }
    }
  }
  location_first[p.locations.size()] = uint32_t(location_frames.size());
  location_index.seal();

  // Samples -> one tree per (label set, type).
  struct Series {
    Tags tags;
    std::vector<std::unique_ptr<Tree>> trees;  // per type, made on first use
  };
  // Each node of a tree comes from a frame of some sample, so the frames of all samples bound the node
  // count: reserving it spares the copies of a growing node array (the peak memory of a big import:
  // 180 -> 148 MB on bench_formats), and the part never used is address space only. One count over the
  // packed location ids is cheap. Not under Emscripten, where reserved memory is real memory; and never
  // more nodes than the profile has bytes, whatever its inlined locations expand to.
  uint64_t frame_bound = 1;
#if !defined(PYROSCOPE_PLATFORM_EMSCRIPTEN)
  if (types.size() == 1 && !location_frames.empty()) {
    const uint64_t frames_per_location = (location_frames.size() + p.locations.size() - 1) / std::max<size_t>(p.locations.size(), 1);
    for (const ByteSpan& sample : p.samples) {
      ProtoReader r(sample, 0);
      ProtoField g;
      while (r.next(&g)) {
        if (g.number != 1) continue;
        if (g.wire == 0) frame_bound += frames_per_location;
        else if (g.wire == 2)
          for (size_t b = 0; b < g.bytes.size; b++) frame_bound += (g.bytes.data[b] < 0x80) ? frames_per_location : 0;
      }
    }
    frame_bound = std::min<uint64_t>(frame_bound, bytes.size);
  }
#endif
  std::vector<Series> series(1);  // series[0]: samples without string labels
  series[0].trees.resize(types.size());
  std::map<std::vector<std::pair<uint64_t, uint64_t>>, size_t> series_of_labels;
  std::vector<uint64_t> location_ids, values;
  std::vector<std::pair<uint64_t, uint64_t>> labels;
  std::vector<uint32_t> frames;
  uint64_t numeric_labels = 0;
  ImportReport local;
  // Work stays linear in the input: a location with many inlined lines, repeated many times in every
  // sample, could make a small file expand into billions of frames. Real profiles stay far below 64
  // frames per byte (each location id is at least a byte, and few locations have more than a few lines).
  const uint64_t frame_budget = 64 * uint64_t(bytes.size) + (uint64_t(1) << 20);
  uint64_t frames_so_far = 0;
  for (size_t s = 0; s < p.samples.size(); s++) {
    auto where = [&]() { return "pprof: offset " + std::to_string(p.sample_offsets[s]) + ": sample " + std::to_string(s); };
    location_ids.clear();
    values.clear();
    labels.clear();
    ProtoReader r(p.samples[s], p.sample_offsets[s]);
    ProtoField g;
    while (r.next(&g)) {
      if (g.number == 1 || g.number == 2) {
        if (!read_repeated_varints(g, g.number == 1 ? &location_ids : &values)) return fail(where() + ": bad packed field");
      } else if (g.number == 3 && g.wire == 2) {
        uint64_t key = 0, str = 0, num = 0;
        ProtoReader lr(g.bytes, g.offset);
        ProtoField h;
        while (lr.next(&h)) {
          if (h.wire != 0) continue;
          if (h.number == 1) key = h.value;
          else if (h.number == 2) str = h.value;
          else if (h.number == 3) num = h.value;
        }
        if (!lr.error().empty()) return fail("pprof: " + lr.error());
        if (!string_index_ok(p, key) || !string_index_ok(p, str)) return fail(where() + ": label string index out of range");
        if (str != 0) labels.emplace_back(key, str);
        else if (num != 0 || key != 0) numeric_labels++;
      }
    }
    if (!r.error().empty()) return fail("pprof: " + r.error());
    if (values.size() != types.size())
      return fail(where() + ": " + std::to_string(values.size()) + " values for " + std::to_string(types.size()) + " sample types");
    frames.clear();
    for (size_t k = location_ids.size(); k-- > 0;) {
      const uint32_t loc = location_index.find(location_ids[k]);
      if (loc == IdIndex::kMissing) return fail(where() + ": location " + std::to_string(location_ids[k]) + " not defined");
      frames_so_far += location_first[loc + 1] - location_first[loc];
      if (frames_so_far > frame_budget)
        return fail(where() + ": the samples expand to more than " + std::to_string(frame_budget) +
                    " frames (64 per byte of profile): refused as hostile");
      frames.insert(frames.end(), location_frames.begin() + location_first[loc], location_frames.begin() + location_first[loc + 1]);
    }
    size_t series_index = 0;
    if (!labels.empty()) {
      std::sort(labels.begin(), labels.end());
      auto it = series_of_labels.find(labels);
      if (it == series_of_labels.end()) {
        Series fresh;
        for (const auto& label : labels) {
          const std::string key = sanitized_tag_key(p.strings[label.first]);
          const std::string value = sanitized_tag_value(p.strings[label.second]);
          if (!key.empty() && !value.empty()) fresh.tags.push_back({key, value});
        }
        fresh.trees.resize(types.size());
        series.push_back(std::move(fresh));
        it = series_of_labels.emplace(labels, series.size() - 1).first;
      }
      series_index = it->second;
    }
    bool skipped = false;
    for (size_t t = 0; t < types.size(); t++) {
      const int64_t value = int64_t(values[t]);
      if (value < 0) {
        if (options.strict) return fail(where() + ": negative value " + std::to_string(value) + " of " + types[t].name);
        skipped = true;
        continue;
      }
      if (value == 0) continue;
      std::unique_ptr<Tree>& tree = series[series_index].trees[t];
      if (!tree) {
        tree = std::make_unique<Tree>(symbols);
        if (series_index == 0 && frame_bound > 1) tree->reserve(size_t(frame_bound));
      }
      uint64_t sum;
      if (add_overflows(tree->total(), uint64_t(value), &sum)) {
        if (options.strict) return fail(where() + ": total of " + types[t].name + " overflows 64 bits");
        skipped = true;
        continue;
      }
      tree->insert_ids(frames.data(), frames.size(), uint64_t(value));
    }
    if (skipped) note_skipped(&local, "sample " + std::to_string(s) + " negative or overflowing value");
    else local.imported++;
  }

  const int64_t block_start = p.time_nanos > 0 ? floor_div(p.time_nanos, 1000000000) : import_base_time(options);
  std::vector<ProfileBlock> blocks;
  for (Series& s : series) {
    for (size_t t = 0; t < types.size(); t++) {
      if (!s.trees[t] || s.trees[t]->total() == 0) continue;
      ProfileBlock block;
      block.series = import_series_key(options, types[t].name, s.tags);
      block.info = types[t].info;
      block.block_start = block_start;
      block.tree = std::move(*s.trees[t]);
      blocks.push_back(std::move(block));
      local.series++;
    }
  }
  local.numeric_labels_ignored = numeric_labels;
  for (ProfileBlock& b : blocks) out->push_back(std::move(b));
  if (report) {
    local.format = Format::pprof;
    local.items = "samples";
    *report = std::move(local);
  }
  return {};
}

}  // namespace detail

// --- folded text ------------------------------------------------------------------------------------

namespace detail {

// One line of folded text, read exactly: the count is the digits at the end (after CR and trailing
// blanks), separated by one space or tab; every byte before that separator is the stack's (flamegraph.pl
// reads lines the same way), so a frame that ends in a space keeps it. A UTF-8 byte-order mark at the
// start of a line is dropped: editors write one at the start of a file, and concatenated files carry it
// into later lines.
struct FoldedLine {
  std::string_view stack;
  uint64_t count = 0;
  std::string problem;  // empty when the line was read; "no count", "count overflows", ...
  bool blank = false;
};

inline FoldedLine read_folded_line(std::string_view line) {
  FoldedLine out;
  while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
  while (line.size() >= 3 && std::memcmp(line.data(), "\xEF\xBB\xBF", 3) == 0) line.remove_prefix(3);
  if (line.empty()) {
    out.blank = true;
    return out;
  }
  const size_t separator = line.find_last_of(" \t");
  if (separator == std::string_view::npos) {
    out.problem = "no count";
    return out;
  }
  const std::string_view count_text = line.substr(separator + 1);
  if (count_text.find_first_of("0123456789") == std::string_view::npos) {
    out.problem = "no count";
    return out;
  }
  for (char c : count_text) {
    if (c < '0' || c > '9') {
      out.problem = "count '" + std::string(count_text.substr(0, 40)) + "' is not a non-negative integer";
      return out;
    }
    if (out.count > (UINT64_MAX - uint64_t(c - '0')) / 10) {
      out.problem = "count overflows";
      return out;
    }
    out.count = out.count * 10 + uint64_t(c - '0');
  }
  out.stack = line.substr(0, separator);
  if (out.stack.empty()) out.problem = "no stack before the count";
  return out;
}

// Splits a stack at ';' into symbol ids. An empty frame is an error when strict (returns false), else
// it is named kEmptyFrameName.
inline bool folded_frames(std::string_view stack, SymbolTable* symbols, bool strict, std::vector<uint32_t>* ids,
                          std::string* problem) {
  ids->clear();
  size_t start = 0;
  while (true) {
    const size_t semi = stack.find(';', start);
    std::string_view frame = stack.substr(start, semi == std::string_view::npos ? std::string_view::npos : semi - start);
    if (frame.empty()) {
      if (strict) {
        *problem = "empty frame name (frame " + std::to_string(ids->size() + 1) + ")";
        return false;
      }
      frame = kEmptyFrameName;
    }
    ids->push_back(symbols->intern(frame));
    if (semi == std::string_view::npos) return true;
    start = semi + 1;
  }
}

}  // namespace detail

Status Tree::add_folded(std::string_view text) {
  Tree staged(symbols_);
  std::vector<uint32_t> ids;
  size_t line_number = 0;
  size_t pos = 0;
  auto fail = [&](const std::string& what) {
    return detail::error(StatusCode::parse_error, "line " + std::to_string(line_number) + ": " + what);
  };
  std::string problem;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const detail::FoldedLine line = detail::read_folded_line(text.substr(pos, eol - pos));
    pos = eol + 1;
    line_number++;
    if (line.blank) continue;
    if (!line.problem.empty()) return fail(line.problem);
    if (!detail::folded_frames(line.stack, symbols_.get(), true, &ids, &problem)) return fail(problem);
    uint64_t sum;
    if (detail::add_overflows(staged.total(), line.count, &sum)) return fail("total sample count overflows 64 bits");
    staged.insert_ids(ids.data(), ids.size(), line.count);
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

FoldedImporter::FoldedImporter(bool strict, std::shared_ptr<SymbolTable> symbols)
    : tree_(std::move(symbols)), strict_(strict) {
  report_.format = Format::folded;
  report_.items = "lines";
}

void FoldedImporter::line(std::string_view text) {
  line_number_++;
  if (!status_.ok()) return;
  const detail::FoldedLine line = detail::read_folded_line(text);
  if (line.blank) return;
  std::string problem = line.problem;
  if (problem.empty()) detail::folded_frames(line.stack, &tree_.symbols(), strict_, &ids_, &problem);
  uint64_t sum;
  if (problem.empty() && detail::add_overflows(tree_.total(), line.count, &sum)) problem = "total overflows 64 bits";
  if (!problem.empty()) {
    if (strict_) status_ = detail::error(StatusCode::parse_error, "line " + std::to_string(line_number_) + ": " + problem);
    else detail::note_skipped(&report_, "line " + std::to_string(line_number_) + " " + problem);
    return;
  }
  tree_.insert_ids(ids_.data(), ids_.size(), line.count);
  report_.imported++;
}

void FoldedImporter::add(const char* data, size_t size) {
  std::string_view rest(data, size);
  if (!carry_.empty()) {
    const size_t newline = rest.find('\n');
    if (newline == std::string_view::npos) {
      carry_.append(rest.data(), rest.size());
      return;
    }
    carry_.append(rest.data(), newline);
    line(carry_);
    carry_.clear();
    rest.remove_prefix(newline + 1);
  }
  while (true) {
    const size_t newline = rest.find('\n');
    if (newline == std::string_view::npos) break;
    line(rest.substr(0, newline));
    rest.remove_prefix(newline + 1);
  }
  carry_.assign(rest.data(), rest.size());
}

Status FoldedImporter::finish() {
  if (!carry_.empty()) line(carry_);
  carry_.clear();
  carry_.shrink_to_fit();
  if (!status_.ok()) {
    tree_.clear();
    report_.imported = 0;
    return status_;
  }
  if (report_.imported == 0 && report_.skipped > 0)
    return detail::error(StatusCode::parse_error, "not folded text: no line could be read (" + report_.skipped_examples[0] + ")");
  return {};
}

// --- perf script ------------------------------------------------------------------------------------

namespace detail {

inline bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

inline bool all_hex(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  return true;
}

// "12345.678901:" -> seconds.
inline bool perf_timestamp(std::string_view token, double* seconds) {
  if (token.size() < 4 || token.back() != ':') return false;
  token.remove_suffix(1);
  const size_t dot = token.find('.');
  if (dot == std::string_view::npos || !all_digits(token.substr(0, dot)) || !all_digits(token.substr(dot + 1)))
    return false;
  *seconds = std::strtod(std::string(token).c_str(), nullptr);
  return true;
}

struct PerfHeader {
  std::string comm;
  std::string event;
  bool has_time = false;
  double time = 0;
  std::string_view inline_frame;  // the sample's only frame, when perf script printed no callchain
};

inline void split_tokens(std::string_view line, std::vector<std::pair<size_t, std::string_view>>* tokens) {
  tokens->clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') i++;
    if (i > start) tokens->push_back({start, line.substr(start, i - start)});
  }
}

// `comm pid[/tid] [cpu] time: [period] event: [ip sym (dso)]`. The command may hold spaces, so the
// line is read around its timestamp; without one (perf script -F without time), the command ends at the
// first token that is a pid, as FlameGraph's stackcollapse-perf.pl reads it.
inline bool read_perf_header(std::string_view line, PerfHeader* out, std::string* problem) {
  std::vector<std::pair<size_t, std::string_view>> tokens;
  split_tokens(line, &tokens);
  size_t time_token = tokens.size();
  for (size_t i = 1; i < tokens.size(); i++) {
    if (perf_timestamp(tokens[i].second, &out->time)) {
      time_token = i;
      out->has_time = true;
      break;
    }
  }
  auto is_pid = [](std::string_view t) {
    const size_t slash = t.find('/');
    return slash == std::string_view::npos ? all_digits(t) : all_digits(t.substr(0, slash)) && all_digits(t.substr(slash + 1));
  };
  auto is_cpu = [](std::string_view t) { return t.size() >= 3 && t.front() == '[' && t.back() == ']' && all_digits(t.substr(1, t.size() - 2)); };
  size_t pid_token = tokens.size();
  if (out->has_time) {
    size_t k = time_token;
    if (k >= 2 && is_cpu(tokens[k - 1].second)) k--;
    if (k >= 2 && is_pid(tokens[k - 1].second)) pid_token = k - 1;
  } else {
    for (size_t i = 1; i < tokens.size(); i++) {
      if (is_pid(tokens[i].second)) {
        pid_token = i;
        break;
      }
    }
  }
  if (pid_token >= tokens.size()) {
    *problem = "sample header without a pid";
    return false;
  }
  std::string_view comm = line.substr(0, tokens[pid_token].first);
  while (!comm.empty() && (comm.back() == ' ' || comm.back() == '\t')) comm.remove_suffix(1);
  out->comm.assign(comm.data(), comm.size());
  for (char& c : out->comm)
    if (c == ' ') c = '_';  // as perf's stackcollapse writes the command
  size_t next = out->has_time ? time_token + 1 : pid_token + 1;
  if (!out->has_time && next < tokens.size() && is_cpu(tokens[next].second)) next++;
  if (next < tokens.size() && all_digits(tokens[next].second)) next++;  // the period
  if (next >= tokens.size() || tokens[next].second.back() != ':' || tokens[next].second.size() < 2) {
    *problem = "sample header without an event name";
    return false;
  }
  out->event.assign(tokens[next].second.data(), tokens[next].second.size() - 1);
  const size_t after = tokens[next].first + tokens[next].second.size();
  out->inline_frame = line.substr(after);
  while (!out->inline_frame.empty() && (out->inline_frame.front() == ' ' || out->inline_frame.front() == '\t'))
    out->inline_frame.remove_prefix(1);
  return true;
}

// `ffffffff810a9c85 native_write_msr+0x5 ([kernel.kallsyms])` -> the symbol, named as perf's own
// stackcollapse names it: the symbol without its offset, [unknown] when perf had none, ';' as ':'.
inline bool read_perf_frame(std::string_view line, std::string* name) {
  while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
  while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
  size_t space = line.find_first_of(" \t");
  if (!all_hex(line.substr(0, space))) return false;
  std::string_view rest = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  if (!rest.empty() && rest.back() == ')') {
    const size_t open = rest.rfind(" (");
    if (open != std::string_view::npos) rest = rest.substr(0, open);
    else if (rest.front() == '(') rest = {};  // only a dso
  }
  const size_t plus = rest.rfind("+0x");
  if (plus != std::string_view::npos && plus > 0 && all_hex(rest.substr(plus + 3))) rest = rest.substr(0, plus);
  if (rest.empty()) rest = "[unknown]";
  name->assign(rest.data(), rest.size());
  for (char& c : *name)
    if (c == ';') c = ':';
  return true;
}

// perf's event names carry modifiers after a colon (cycles:u, cpu-clock:ppp); tracepoints have a
// colon of their own (sched:sched_switch), kept.
inline std::string perf_event_type(std::string_view event) {
  const size_t colon = event.rfind(':');
  if (colon != std::string_view::npos) {
    const std::string_view modifiers = event.substr(colon + 1);
    if (!modifiers.empty() && modifiers.find_first_not_of("ukhGHpPSDIWe") == std::string_view::npos)
      event = event.substr(0, colon);
  }
  if (event == "cycles" || event == "cpu-clock" || event == "task-clock" || event == "cpu-cycles" ||
      event == "ref-cycles" || event == "cpu_clock" || event.empty())
    return "cpu";
  return sanitized_type(event);
}

inline Status import_perf_script(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                                 ImportReport* report) {
  const std::string_view text(reinterpret_cast<const char*>(bytes.data), bytes.size);
  auto symbols = std::make_shared<SymbolTable>();
  // (type, block index) -> tree; blocks are 10 s of the samples' own time, from the first sample.
  std::map<std::pair<std::string, int64_t>, Tree> trees;
  ImportReport local;
  local.format = Format::perf_script;
  local.items = "samples";
  PerfHeader header;
  bool in_sample = false, sample_bad = false;
  uint64_t sample_line = 0;
  std::string sample_problem, name;
  std::vector<std::string> frames;  // leaf first, as perf prints them
  std::vector<uint32_t> ids;
  bool have_first_time = false;
  double first_time = 0;
  const int64_t base = import_base_time(options);
  auto problem_at = [&](uint64_t line, const std::string& what) { return "line " + std::to_string(line) + " " + what; };
  auto end_sample = [&]() -> Status {
    if (!in_sample) return {};
    in_sample = false;
    if (!sample_bad && frames.empty() && !header.inline_frame.empty()) {
      if (read_perf_frame(header.inline_frame, &name)) frames.push_back(name);
    }
    if (sample_bad) {
      if (options.strict) return import_error(options, StatusCode::parse_error, "perf script: " + problem_at(sample_line, sample_problem));
      note_skipped(&local, problem_at(sample_line, sample_problem));
      return {};
    }
    if (header.has_time && !have_first_time) {
      have_first_time = true;
      first_time = header.time;
    }
    int64_t block = 0;
    if (header.has_time && header.time >= first_time) {
      const double since = header.time - first_time;
      block = since < 1e12 ? int64_t(since / double(kDefaultResolutionSeconds)) : 0;
    }
    ids.clear();
    ids.push_back(symbols->intern(header.comm));
    for (size_t k = frames.size(); k-- > 0;) ids.push_back(symbols->intern(frames[k]));
    auto it = trees.find({perf_event_type(header.event), block});
    if (it == trees.end()) it = trees.emplace(std::make_pair(perf_event_type(header.event), block), Tree(symbols)).first;
    it->second.insert_ids(ids.data(), ids.size(), 1);
    local.imported++;
    return {};
  };
  size_t pos = 0;
  uint64_t line_number = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    line_number++;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) {
      Status st = end_sample();
      if (!st.ok()) return st;
      continue;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      if (!in_sample) {
        if (options.strict) return import_error(options, StatusCode::parse_error, "perf script: " + problem_at(line_number, "stack line outside a sample"));
        note_skipped(&local, problem_at(line_number, "stack line outside a sample"));
        continue;
      }
      if (sample_bad) continue;
      if (!read_perf_frame(line, &name)) {
        sample_bad = true;
        sample_problem = "stack line is not 'address symbol (module)'";
        sample_line = line_number;
        continue;
      }
      frames.push_back(name);
      continue;
    }
    if (line[0] == '#' && !in_sample) continue;  // perf script --header
    Status st = end_sample();  // a sample without a callchain ends at the next header
    if (!st.ok()) return st;
    in_sample = true;
    sample_bad = false;
    sample_line = line_number;
    frames.clear();
    header = PerfHeader();
    if (!read_perf_header(line, &header, &sample_problem)) sample_bad = true;
  }
  Status st = end_sample();
  if (!st.ok()) return st;
  if (local.imported == 0 && local.skipped > 0)
    return import_error(options, StatusCode::parse_error, "perf script: no sample could be read (" + local.skipped_examples[0] + ")");
  std::set<std::string> types;
  for (auto& entry : trees) {
    ProfileBlock block;
    block.series = import_series_key(options, entry.first.first, {});
    block.info = default_series_info(entry.first.first);
    block.info.unit = "samples";
    block.block_start = base + entry.first.second * kDefaultResolutionSeconds;
    block.tree = std::move(entry.second);
    out->push_back(std::move(block));
    types.insert(entry.first.first);
  }
  local.series = types.size();
  if (report) *report = std::move(local);
  return {};
}

}  // namespace detail

// --- JSON formats: speedscope and Chrome/Node .cpuprofile (nlohmann/json's SAX parser) ---------------

#if defined(PYROSCOPE_WITH_JSON)
namespace detail {

struct JsonValue {
  enum class Kind { null, boolean, number, string } kind = Kind::null;
  double number = 0;
  bool integral = false;  // an integer in the text (exact as double up to 2^53)
  const std::string* text = nullptr;
};

// A SAX handler that knows where it is: each step of the path is an object (with its current key) or
// an array (with the index of its current element). Handlers match paths such as
// "profiles/#/samples/#/#" ('#' = any array index). SAX keeps memory to what the importer stores: a
// document tree of a 100 MB profile would take several times that. No exception is thrown on bad
// input (parse_error is a callback), so this works under -fno-exceptions too.
class JsonPathSax : public nlohmann::json_sax<nlohmann::json> {
 public:
  struct Step {
    bool array = false;
    size_t index = 0;
    std::string key;
  };
  using Pattern = std::vector<std::string>;
  static Pattern pattern(std::string_view text) {
    Pattern out;
    size_t start = 0;
    while (start <= text.size()) {
      size_t slash = text.find('/', start);
      if (slash == std::string_view::npos) slash = text.size();
      out.emplace_back(text.substr(start, slash - start));
      start = slash + 1;
    }
    return out;
  }
  bool at(const Pattern& p) const {
    if (p.size() != path_.size()) return false;
    for (size_t i = 0; i < p.size(); i++) {
      if (p[i] == "#" ? !path_[i].array : (path_[i].array || path_[i].key != p[i])) return false;
    }
    return true;
  }
  size_t index(size_t depth) const { return path_[depth].index; }
  std::string where() const {
    std::string out;
    for (size_t i = 0; i < path_.size(); i++) {
      if (path_[i].array) out += "[" + std::to_string(path_[i].index) + "]";
      else out += (i ? "." : "") + path_[i].key;
    }
    return out.empty() ? "the document" : out;
  }
  bool fail(const std::string& what) {
    if (error_.empty()) error_ = what;
    return false;
  }
  const std::string& error() const { return error_; }
  size_t depth() const { return path_.size(); }

  bool null() override { return scalar(JsonValue()); }
  bool boolean(bool) override {
    JsonValue v;
    v.kind = JsonValue::Kind::boolean;
    return scalar(v);
  }
  bool number_integer(number_integer_t n) override { return number(double(n), true); }
  bool number_unsigned(number_unsigned_t n) override { return number(double(n), true); }
  bool number_float(number_float_t n, const string_t&) override { return number(double(n), false); }
  bool string(string_t& s) override {
    JsonValue v;
    v.kind = JsonValue::Kind::string;
    v.text = &s;
    return scalar(v);
  }
  bool binary(binary_t&) override { return fail("binary value"); }
  bool start_object(std::size_t) override { return open(false); }
  bool key(string_t& k) override {
    path_.back().key = k;
    return true;
  }
  bool end_object() override { return close(false); }
  bool start_array(std::size_t) override { return open(true); }
  bool end_array() override { return close(true); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    std::string what = ex.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> after the id
    const size_t bracket = what.find("] ");
    if (bracket != std::string::npos) what = what.substr(bracket + 2);
    return fail("not valid JSON (byte " + std::to_string(position) + "): " + what);
  }

 protected:
  virtual bool on_value(const JsonValue& value) = 0;
  virtual bool on_begin(bool /*array*/) { return true; }
  virtual bool on_end(bool /*array*/) { return true; }

 private:
  bool number(double n, bool integral) {
    JsonValue v;
    v.kind = JsonValue::Kind::number;
    v.number = n;
    v.integral = integral;
    return scalar(v);
  }
  bool scalar(const JsonValue& v) {
    if (!on_value(v)) return false;
    advance();
    return true;
  }
  // on_begin and on_end see the path to the container (its key or index in its parent), not inside it.
  bool open(bool array) {
    if (path_.size() >= 64) return fail("JSON nested more than 64 levels deep");
    if (path_.empty() && array) return fail("the document is an array, not an object");
    if (!on_begin(array)) return false;
    path_.push_back(Step{array, 0, std::string()});
    return true;
  }
  bool close(bool array) {
    path_.pop_back();
    if (!on_end(array)) return false;
    advance();
    return true;
  }
  void advance() {
    if (!path_.empty() && path_.back().array) path_.back().index++;
  }
  std::vector<Step> path_;
  std::string error_;
};

inline Status run_json_sax(ByteSpan bytes, JsonPathSax* sax, const char* format) {
  const char* begin = reinterpret_cast<const char*>(bytes.data);
  const bool parsed = nlohmann::json::sax_parse(begin, begin + bytes.size, sax);
  if (!parsed || !sax->error().empty())
    return error(StatusCode::parse_error, std::string(format) + ": " + (sax->error().empty() ? "not valid JSON" : sax->error()));
  return {};
}

inline bool as_index(const JsonValue& v, uint64_t limit, uint64_t* out) {
  if (v.kind != JsonValue::Kind::number || !v.integral || v.number < 0 || v.number >= double(limit)) return false;
  *out = uint64_t(v.number);
  return true;
}

// Rounds a weight already in the series' unit; false for NaN, infinities and values past 2^63.
inline bool to_weight(double value, int64_t* out) {
  if (!std::isfinite(value) || std::fabs(value) >= 9.2e18) return false;
  *out = int64_t(std::llround(value));
  return true;
}

// --- speedscope -----------------------------------------------------------------------------------------

struct SpeedscopeProfile {
  std::string type, name, unit;
  std::vector<uint32_t> stack_frames;  // sampled: every stack's frame indexes, root first, one after another
  std::vector<size_t> stack_end;       // end of each stack in stack_frames
  std::vector<double> weights;
  struct Event {
    bool open;
    uint32_t frame;
    double at;
  };
  std::vector<Event> events;
  Event event{true, 0, 0};
  bool event_has_type = false, event_has_frame = false, event_has_at = false;
};

class SpeedscopeSax : public JsonPathSax {
 public:
  std::vector<std::string> frame_names;
  std::vector<SpeedscopeProfile> profiles;
  bool saw_shared_frames = false;

 protected:
  bool on_begin(bool array) override {
    if (array && at(frames_)) saw_shared_frames = true;
    if (!array && at(profile_)) {
      if (index(1) != profiles.size()) return fail("profiles out of order");
      profiles.emplace_back();
    }
    if (!array && at(event_)) {
      SpeedscopeProfile& p = profiles.back();
      p.event_has_type = p.event_has_frame = p.event_has_at = false;
    }
    // A frame without a name is "[unknown]"; the index is that of an element the document has.
    if (!array && at(frame_) && index(2) >= frame_names.size()) frame_names.resize(index(2) + 1, "[unknown]");
    if (array && (at(frame_) || at(profile_))) return fail(where() + " is not an object");
    return true;
  }
  bool on_end(bool array) override {
    if (array && at(sample_)) profiles.back().stack_end.push_back(profiles.back().stack_frames.size());
    if (!array && at(event_)) {
      SpeedscopeProfile& p = profiles.back();
      if (!p.event_has_type || !p.event_has_frame || !p.event_has_at)
        return fail(where() + ": an event needs type, frame and at");
      p.events.push_back(p.event);
    }
    return true;
  }
  bool on_value(const JsonValue& v) override {
    using Kind = JsonValue::Kind;
    if (at(frame_name_)) {
      if (v.kind != Kind::string) return fail(where() + " is not a string");
      frame_names[index(2)] = *v.text;
    } else if (at(sample_frame_)) {
      uint64_t frame;
      if (!as_index(v, 0xffffffffu, &frame)) return fail(where() + " is not a frame index");
      profiles.back().stack_frames.push_back(uint32_t(frame));
    } else if (at(weight_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      profiles.back().weights.push_back(v.number);
    } else if (at(profile_type_) || at(profile_name_) || at(profile_unit_)) {
      if (v.kind != Kind::string) return fail(where() + " is not a string");
      SpeedscopeProfile& p = profiles.back();
      (at(profile_type_) ? p.type : at(profile_name_) ? p.name : p.unit) = *v.text;
    } else if (at(event_type_)) {
      SpeedscopeProfile& p = profiles.back();
      if (v.kind != Kind::string || (*v.text != "O" && *v.text != "C")) return fail(where() + " is not \"O\" or \"C\"");
      p.event.open = *v.text == "O";
      p.event_has_type = true;
    } else if (at(event_frame_)) {
      uint64_t frame;
      if (!as_index(v, 0xffffffffu, &frame)) return fail(where() + " is not a frame index");
      profiles.back().event.frame = uint32_t(frame);
      profiles.back().event_has_frame = true;
    } else if (at(event_at_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      profiles.back().event.at = v.number;
      profiles.back().event_has_at = true;
    } else if (at(frame_) || at(profile_)) {
      return fail(where() + " is not an object");
    } else if (depth() == 0) {
      return fail("the document is not an object");
    }
    return true;
  }

 private:
  const Pattern frames_ = pattern("shared/frames");
  const Pattern frame_ = pattern("shared/frames/#");
  const Pattern frame_name_ = pattern("shared/frames/#/name");
  const Pattern profile_ = pattern("profiles/#");
  const Pattern profile_type_ = pattern("profiles/#/type");
  const Pattern profile_name_ = pattern("profiles/#/name");
  const Pattern profile_unit_ = pattern("profiles/#/unit");
  const Pattern sample_ = pattern("profiles/#/samples/#");
  const Pattern sample_frame_ = pattern("profiles/#/samples/#/#");
  const Pattern weight_ = pattern("profiles/#/weights/#");
  const Pattern event_ = pattern("profiles/#/events/#");
  const Pattern event_type_ = pattern("profiles/#/events/#/type");
  const Pattern event_frame_ = pattern("profiles/#/events/#/frame");
  const Pattern event_at_ = pattern("profiles/#/events/#/at");
};

// Units: time in nanoseconds, "none" as samples, bytes as bytes.
inline bool speedscope_unit(const std::string& unit, std::string* type, std::string* our_unit, double* scale) {
  static const std::pair<const char*, double> kTime[] = {
      {"nanoseconds", 1}, {"microseconds", 1e3}, {"milliseconds", 1e6}, {"seconds", 1e9}};
  for (const auto& t : kTime) {
    if (unit == t.first) {
      *type = "cpu";
      *our_unit = "nanoseconds";
      *scale = t.second;
      return true;
    }
  }
  *scale = 1;
  if (unit == "none" || unit.empty()) {
    *type = "cpu";
    *our_unit = "samples";
    return true;
  }
  if (unit == "bytes") {
    *type = "alloc_space";
    *our_unit = "bytes";
    return true;
  }
  return false;
}

inline Status import_speedscope(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                                ImportReport* report) {
  auto fail = [&](const std::string& what) { return import_error(options, StatusCode::parse_error, "speedscope: " + what); };
  SpeedscopeSax sax;
  Status st = run_json_sax(bytes, &sax, "speedscope");
  if (!st.ok()) return import_error(options, st.code(), st.message());
  if (!sax.saw_shared_frames) return fail("no shared.frames (not a speedscope file?)");
  if (sax.profiles.empty()) return fail("no profiles");
  auto symbols = std::make_shared<SymbolTable>();
  std::vector<uint32_t> frame_symbol(sax.frame_names.size());
  for (size_t i = 0; i < sax.frame_names.size(); i++) frame_symbol[i] = symbols->intern(sax.frame_names[i]);
  ImportReport local;
  local.format = Format::speedscope;
  local.items = "samples";
  std::vector<ProfileBlock> blocks;
  std::set<std::string> profile_tags;
  std::vector<uint32_t> ids;
  const int64_t base = import_base_time(options);
  // Evented profiles insert the whole open stack at every event: 100 000 nested opens would cost the
  // square of that. Work is bounded by the input's size (real profiles: far below).
  const uint64_t frame_budget = 64 * uint64_t(bytes.size) + (uint64_t(1) << 20);
  uint64_t frames_so_far = 0;
  for (size_t pi = 0; pi < sax.profiles.size(); pi++) {
    SpeedscopeProfile& p = sax.profiles[pi];
    const std::string where = "profiles[" + std::to_string(pi) + "]";
    std::string type, unit;
    double scale;
    if (!speedscope_unit(p.unit, &type, &unit, &scale)) return fail(where + ": unknown unit '" + p.unit + "'");
    Tree tree(symbols);
    auto add = [&](const uint32_t* frames, size_t n, double weight, const std::string& what) -> Status {
      int64_t w;
      if (!to_weight(weight * scale, &w)) return fail(where + ": " + what + ": weight out of range");
      if (w < 0) {
        if (options.strict) return fail(where + ": " + what + ": negative weight");
        note_skipped(&local, where + " " + what + " negative weight");
        return {};
      }
      uint64_t sum;
      if (add_overflows(tree.total(), uint64_t(w), &sum)) return fail(where + ": total weight overflows 64 bits");
      frames_so_far += n;
      if (frames_so_far > frame_budget)
        return fail(where + ": " + what + ": stacks deeper in all than 64 frames per byte of the file: refused as hostile");
      ids.clear();
      for (size_t k = 0; k < n; k++) {
        if (frames[k] >= frame_symbol.size())
          return fail(where + ": " + what + ": frame " + std::to_string(frames[k]) + " of " +
                      std::to_string(frame_symbol.size()) + " shared frames");
        ids.push_back(frame_symbol[frames[k]]);
      }
      tree.insert_ids(ids.data(), ids.size(), uint64_t(w));
      local.imported++;
      return {};
    };
    if (p.type == "sampled") {
      if (p.weights.size() != p.stack_end.size())
        return fail(where + ": " + std::to_string(p.weights.size()) + " weights for " + std::to_string(p.stack_end.size()) + " samples");
      size_t begin = 0;
      for (size_t s = 0; s < p.stack_end.size(); s++) {
        st = add(p.stack_frames.data() + begin, p.stack_end[s] - begin, p.weights[s], "sample " + std::to_string(s));
        if (!st.ok()) return st;
        begin = p.stack_end[s];
      }
    } else if (p.type == "evented") {
      std::vector<uint32_t> open;
      double last = 0;
      for (size_t e = 0; e < p.events.size(); e++) {
        const SpeedscopeProfile::Event& ev = p.events[e];
        if (e > 0 && ev.at < last) return fail(where + ": events[" + std::to_string(e) + "] is earlier than the one before");
        if (!open.empty() && ev.at > last) {
          st = add(open.data(), open.size(), ev.at - last, "events[" + std::to_string(e) + "]");
          if (!st.ok()) return st;
        }
        last = ev.at;
        if (ev.open) {
          open.push_back(ev.frame);
        } else {
          if (open.empty() || open.back() != ev.frame)
            return fail(where + ": events[" + std::to_string(e) + "] closes frame " + std::to_string(ev.frame) +
                        (open.empty() ? " but none is open" : " but frame " + std::to_string(open.back()) + " is open"));
          open.pop_back();
        }
      }
    } else {
      return fail(where + ": type '" + p.type + "' is neither sampled nor evented");
    }
    if (tree.total() == 0) continue;
    Tags tags;
    if (sax.profiles.size() > 1) {  // one series per profile, told apart by a tag naming it
      std::string name = sanitized_tag_value(p.name.empty() ? std::to_string(pi) : p.name);
      if (!profile_tags.insert(name).second) name += "_" + std::to_string(pi);
      profile_tags.insert(name);
      tags.push_back({"profile", name});
    }
    ProfileBlock block;
    block.series = import_series_key(options, type, tags);
    block.info = default_series_info(type);
    block.info.unit = unit;
    block.block_start = base;
    block.tree = std::move(tree);
    blocks.push_back(std::move(block));
    local.series++;
  }
  for (ProfileBlock& b : blocks) out->push_back(std::move(b));
  if (report) *report = std::move(local);
  return {};
}

// --- Chrome / Node .cpuprofile ----------------------------------------------------------------------------

class CpuprofileSax : public JsonPathSax {
 public:
  struct Node {
    int64_t id = 0;
    int64_t parent = INT64_MIN;  // from a "parent" field (newer files) or the children lists
    std::string function_name, url;
    int64_t line = -1;
    size_t first_child = 0, child_count = 0;  // into children
  };
  std::vector<Node> nodes;
  std::vector<int64_t> children;
  std::vector<int64_t> samples;
  std::vector<double> time_deltas;
  double start_time = 0, end_time = 0;
  bool has_start = false, has_end = false, saw_nodes = false;

 protected:
  bool on_begin(bool array) override {
    if (array && at(nodes_)) saw_nodes = true;
    if (!array && at(node_)) {
      nodes.emplace_back();
      nodes.back().first_child = children.size();
    }
    if (array && at(node_)) return fail(where() + " is not an object");
    return true;
  }
  bool on_value(const JsonValue& v) override {
    using Kind = JsonValue::Kind;
    auto integer = [&](int64_t* out) {
      if (v.kind != Kind::number || !v.integral || std::fabs(v.number) > 9.0e15) return fail(where() + " is not an integer");
      *out = int64_t(v.number);
      return true;
    };
    auto text = [&](std::string* out) {
      if (v.kind != Kind::string) return fail(where() + " is not a string");
      *out = *v.text;
      return true;
    };
    if (at(node_id_)) return integer(&nodes.back().id);
    if (at(node_parent_)) return integer(&nodes.back().parent);
    if (at(node_child_)) {
      int64_t child;
      if (!integer(&child)) return false;
      children.push_back(child);
      nodes.back().child_count++;
      return true;
    }
    if (at(function_name_)) return text(&nodes.back().function_name);
    if (at(url_)) return text(&nodes.back().url);
    if (at(line_)) return integer(&nodes.back().line);
    if (at(sample_)) {
      int64_t id;
      if (!integer(&id)) return false;
      samples.push_back(id);
      return true;
    }
    if (at(delta_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      time_deltas.push_back(v.number);
      return true;
    }
    if (at(start_) || at(end_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      (at(start_) ? start_time : end_time) = v.number;
      (at(start_) ? has_start : has_end) = true;
      return true;
    }
    if (at(node_)) return fail(where() + " is not an object");
    if (depth() == 0) return fail("the document is not an object");
    return true;
  }

 private:
  const Pattern nodes_ = pattern("nodes");
  const Pattern node_ = pattern("nodes/#");
  const Pattern node_id_ = pattern("nodes/#/id");
  const Pattern node_parent_ = pattern("nodes/#/parent");
  const Pattern node_child_ = pattern("nodes/#/children/#");
  const Pattern function_name_ = pattern("nodes/#/callFrame/functionName");
  const Pattern url_ = pattern("nodes/#/callFrame/url");
  const Pattern line_ = pattern("nodes/#/callFrame/lineNumber");
  const Pattern sample_ = pattern("samples/#");
  const Pattern delta_ = pattern("timeDeltas/#");
  const Pattern start_ = pattern("startTime");
  const Pattern end_ = pattern("endTime");
};

inline Status import_cpuprofile(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                                ImportReport* report) {
  auto fail = [&](const std::string& what) { return import_error(options, StatusCode::parse_error, "cpuprofile: " + what); };
  CpuprofileSax sax;
  Status st = run_json_sax(bytes, &sax, "cpuprofile");
  if (!st.ok()) return import_error(options, st.code(), st.message());
  if (!sax.saw_nodes) return fail("no nodes (not a .cpuprofile?)");
  if (sax.samples.size() != sax.time_deltas.size())
    return fail(std::to_string(sax.samples.size()) + " samples but " + std::to_string(sax.time_deltas.size()) + " timeDeltas");
  const size_t n = sax.nodes.size();
  std::unordered_map<int64_t, uint32_t> index_of;
  for (size_t i = 0; i < n; i++)
    if (!index_of.emplace(sax.nodes[i].id, uint32_t(i)).second) return fail("node id " + std::to_string(sax.nodes[i].id) + " defined twice");
  std::vector<uint32_t> parent(n, IdIndex::kMissing);
  for (size_t i = 0; i < n; i++) {
    const CpuprofileSax::Node& node = sax.nodes[i];
    if (node.parent != INT64_MIN) {
      auto it = index_of.find(node.parent);
      if (it == index_of.end()) return fail("node " + std::to_string(node.id) + ": parent " + std::to_string(node.parent) + " not defined");
      parent[i] = it->second;
    }
  }
  for (size_t i = 0; i < n; i++) {
    const CpuprofileSax::Node& node = sax.nodes[i];
    for (size_t c = 0; c < node.child_count; c++) {
      const int64_t child_id = sax.children[node.first_child + c];
      auto it = index_of.find(child_id);
      if (it == index_of.end()) return fail("node " + std::to_string(node.id) + ": child " + std::to_string(child_id) + " not defined");
      if (parent[it->second] != IdIndex::kMissing && parent[it->second] != i)
        return fail("node " + std::to_string(child_id) + " has two parents");
      parent[it->second] = uint32_t(i);
    }
  }
  // Frame names as speedscope and DevTools show them; the "(root)" node above everything is no frame.
  auto symbols = std::make_shared<SymbolTable>();
  std::vector<uint32_t> symbol(n);
  std::vector<uint8_t> is_root_marker(n, 0);
  for (size_t i = 0; i < n; i++) {
    const CpuprofileSax::Node& node = sax.nodes[i];
    std::string name = node.function_name;
    if (name.empty()) {
      name = node.url.empty() ? "(anonymous)"
                              : "(anonymous " + std::string(base_name_of(node.url)) + ":" + std::to_string(node.line + 1) + ")";
    }
    is_root_marker[i] = parent[i] == IdIndex::kMissing && name == "(root)";
    symbol[i] = symbols->intern(name);
  }
  // A sample lasts until the next one (DevTools' reading); the last one until endTime. Time deltas can
  // be negative in Chrome's files: time is held to never run backwards, as speedscope does.
  std::unordered_map<uint64_t, uint64_t> weight_of;  // (block << 32 | node) -> nanoseconds
  ImportReport local;
  local.format = Format::chrome_cpuprofile;
  local.items = "samples";
  std::vector<double> times(sax.samples.size());
  double t = sax.start_time;
  for (size_t s = 0; s < sax.samples.size(); s++) {
    t += sax.time_deltas[s];
    times[s] = s == 0 ? t : std::max(times[s - 1], t);
  }
  for (size_t s = 0; s < sax.samples.size(); s++) {
    auto it = index_of.find(sax.samples[s]);
    if (it == index_of.end()) {
      if (options.strict) return fail("sample " + std::to_string(s) + ": node " + std::to_string(sax.samples[s]) + " not defined");
      note_skipped(&local, "sample " + std::to_string(s) + " unknown node");
      continue;
    }
    const double end = s + 1 < times.size() ? times[s + 1] : std::max(times[s], sax.has_end ? sax.end_time : times[s]);
    int64_t ns;
    if (!to_weight((end - times[s]) * 1000.0, &ns) || ns < 0) return fail("sample " + std::to_string(s) + ": time out of range");
    const double since = (times[s] - times[0]) / 1e6;
    if (!(since >= 0 && since < 1e12)) return fail("sample " + std::to_string(s) + ": time out of range");
    const uint64_t block = uint64_t(since / double(kDefaultResolutionSeconds));
    if (block > 0xffffffffu) return fail("sample " + std::to_string(s) + ": time out of range");
    uint64_t& w = weight_of[block << 32 | it->second];
    if (add_overflows(w, uint64_t(ns), &w)) return fail("total time overflows 64 bits");
    local.imported++;
  }
  std::map<uint64_t, Tree> trees;
  std::vector<uint32_t> path;
  // Each sampled node's stack is walked from the node up: a chain of nodes all sampled would cost the
  // square of its length, so the walking is bounded by the input's size (real profiles: far below).
  const uint64_t step_budget = 64 * uint64_t(bytes.size) + (uint64_t(1) << 20);
  uint64_t steps = 0;
  for (const auto& entry : weight_of) {
    if (entry.second == 0) continue;
    path.clear();
    for (uint32_t node = uint32_t(entry.first); node != IdIndex::kMissing; node = parent[node]) {
      if (path.size() > n) return fail("the nodes' parent links form a cycle");
      if (++steps > step_budget) return fail("stacks deeper in all than 64 frames per byte of the file: refused as hostile");
      if (!is_root_marker[node]) path.push_back(symbol[node]);
    }
    std::reverse(path.begin(), path.end());
    auto tree = trees.find(entry.first >> 32);
    if (tree == trees.end()) tree = trees.emplace(entry.first >> 32, Tree(symbols)).first;
    uint64_t sum;
    if (add_overflows(tree->second.total(), entry.second, &sum)) return fail("total time overflows 64 bits");
    tree->second.insert_ids(path.data(), path.size(), entry.second);
  }
  const int64_t base = import_base_time(options);
  for (auto& entry : trees) {
    ProfileBlock block;
    block.series = import_series_key(options, "cpu", {});
    block.info = default_series_info("cpu");
    block.info.unit = "nanoseconds";
    block.block_start = base + int64_t(entry.first) * kDefaultResolutionSeconds;
    block.tree = std::move(entry.second);
    out->push_back(std::move(block));
  }
  local.series = trees.empty() ? 0 : 1;
  if (report) *report = std::move(local);
  return {};
}

}  // namespace detail
#endif  // PYROSCOPE_WITH_JSON

// --- format detection and the import entry point -------------------------------------------------------

namespace detail {

// Every top-level field is one of profile.proto's with its wire type, and a sample type is there.
// truncated_ok: the bytes are the start of a longer profile (a peek into gzip), so running out is fine.
inline bool looks_like_pprof(ByteSpan bytes, bool truncated_ok) {
  static const int8_t kWire[15] = {-1, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 0, 0, 0};
  ProtoReader reader(bytes, 0);
  ProtoField f;
  bool has_sample_type = false;
  size_t fields = 0;
  while (reader.next(&f)) {
    if (f.number > 14) return false;
    const bool packed_comment = f.number == 13 && f.wire == 2;
    if (f.wire != kWire[f.number] && !packed_comment) return false;
    has_sample_type = has_sample_type || f.number == 1;
    fields++;
  }
  if (!reader.error().empty() && !(truncated_ok && fields > 0)) return false;
  return has_sample_type;
}

inline std::string printable_start(ByteSpan bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size && i < 24; i++) {
    const uint8_t c = bytes.data[i];
    if (c >= 0x20 && c < 0x7f && c != '\\') out += char(c);
    else out += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
  }
  return out;
}

inline Status detect_plain_format(ByteSpan bytes, bool truncated, Format* out) {
  static const uint8_t kPyroMagic[8] = {0x89, 'P', 'Y', 'R', 'O', '\r', '\n', 0x1a};
  if (bytes.size >= 8 && std::memcmp(bytes.data, kPyroMagic, 8) == 0) {
    *out = Format::pyro;
    return {};
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data), bytes.size);
  size_t first = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") first = 3;
  while (first < text.size() && (is_space(text[first]) || text[first] == '\n')) first++;
  if (first < text.size() && (text[first] == '{' || text[first] == '[')) {
    if (text[first] == '[')
      return error(StatusCode::parse_error, "a JSON array (Chrome trace events?): not a format read here; "
                                            "a .cpuprofile or speedscope file is a JSON object");
    const std::string_view head = text.substr(first, 1 << 16);
    if (head.find("speedscope.app/file-format-schema") != std::string_view::npos) *out = Format::speedscope;
    else if (head.find("\"nodes\"") != std::string_view::npos) *out = Format::chrome_cpuprofile;
    else if (head.find("\"shared\"") != std::string_view::npos || head.find("\"profiles\"") != std::string_view::npos)
      *out = Format::speedscope;
    else
      return error(StatusCode::parse_error, "JSON, but neither a speedscope file nor a .cpuprofile (no \"nodes\", "
                                            "\"shared\" or \"profiles\" near the start)");
    return {};
  }
  if (looks_like_pprof(bytes, truncated)) {
    *out = Format::pprof;
    return {};
  }
  // Text: the first line that is neither blank nor a comment decides.
  size_t pos = first;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos || line[0] == '#') continue;
    PerfHeader header;
    std::string problem;
    if (line[0] != ' ' && line[0] != '\t' && read_perf_header(line, &header, &problem) && header.has_time) {
      *out = Format::perf_script;
      return {};
    }
    if (read_folded_line(line).problem.empty()) {
      *out = Format::folded;
      return {};
    }
    break;
  }
  return error(StatusCode::parse_error, "not a profile format read here (pprof, folded, perf script, speedscope, "
                                        ".cpuprofile); it starts with \"" + printable_start(bytes) + "\"");
}

}  // namespace detail

Status detect_format(ByteSpan bytes, Format* out, const InflateFunction& inflate) {
  if (!detail::is_gzip(bytes)) return detail::detect_plain_format(bytes, false, out);
  // A peek: the first 64 KiB of the inflated bytes tell the format. An inflater that gives no prefix
  // when stopped early is asked for the whole (up to the default cap) instead.
  std::string head;
  Status st = detail::gunzip(bytes, inflate, 1 << 16, &head, true);
  if (st.ok() && head.empty() && bytes.size > 18) st = detail::gunzip(bytes, inflate, ImportOptions().max_inflated_bytes, &head, true);
  if (!st.ok()) return st;
  if (detail::is_gzip({reinterpret_cast<const uint8_t*>(head.data()), head.size()}))
    return detail::error(StatusCode::parse_error, "gzip inside gzip");
  return detail::detect_plain_format({reinterpret_cast<const uint8_t*>(head.data()), head.size()}, true, out);
}

Status import_profile(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out, ImportReport* report) {
  Status st = detail::check_import_options(options);
  if (!st.ok()) return st;
  std::string inflated;
  ByteSpan data = bytes;
  if (detail::is_gzip(bytes)) {
    st = detail::gunzip(bytes, options.inflate, options.max_inflated_bytes, &inflated, false);
    if (!st.ok()) return detail::import_error(options, st.code(), st.message());
    data = ByteSpan{reinterpret_cast<const uint8_t*>(inflated.data()), inflated.size()};
    if (detail::is_gzip(data)) return detail::import_error(options, StatusCode::parse_error, "gzip inside gzip");
  }
  Format format = options.format;
  if (!options.has_format) {
    st = detail::detect_plain_format(data, false, &format);
    if (!st.ok()) return detail::import_error(options, st.code(), st.message());
  }
  ImportReport local;
  switch (format) {
    case Format::pyro:
      return detail::import_error(options, StatusCode::invalid_argument,
                                  "a .pyro file is opened (Dataset::add_file, add_bytes), not imported");
    case Format::pprof:
      st = detail::import_pprof(data, options, out, &local);
      break;
    case Format::perf_script:
      st = detail::import_perf_script(data, options, out, &local);
      break;
    case Format::folded: {
      FoldedImporter folded(options.strict);
      folded.add(reinterpret_cast<const char*>(data.data), data.size);
      st = folded.finish();
      if (!st.ok()) return detail::import_error(options, st.code(), st.message());
      local = folded.report();
      if (folded.tree().total() > 0) {
        ProfileBlock block;
        block.series = detail::import_series_key(options, kDefaultProfileType, {});
        block.info = default_series_info(kDefaultProfileType);
        block.block_start = detail::import_base_time(options);
        block.tree = std::move(folded.tree());
        out->push_back(std::move(block));
        local.series = 1;
      }
      break;
    }
    case Format::speedscope:
    case Format::chrome_cpuprofile:
#if defined(PYROSCOPE_WITH_JSON)
      st = format == Format::speedscope ? detail::import_speedscope(data, options, out, &local)
                                        : detail::import_cpuprofile(data, options, out, &local);
      break;
#else
      return detail::import_error(options, StatusCode::feature_disabled,
                                  std::string(format_name(format)) + " import needs the JSON parser: compile the "
                                  "implementation with PYROSCOPE_WITH_JSON (nlohmann/json; Debian's nlohmann-json3-dev)");
#endif
  }
  if (!st.ok()) return st;
  local.format = format;
  if (report) *report = std::move(local);
  return {};
}

// --- export -----------------------------------------------------------------------------------------------

namespace detail {

// The union of several trees' stacks, with one value per tree on every node: what a pprof of several
// sample types holds (one sample per stack, one value per type). One tree is its own union; several
// are merged into a tree of their shape (Tree's open-addressing index makes that fast), and each
// tree's nodes are found in it to place their values.
struct StackUnion {
  const Tree* shape = nullptr;
  Tree merged;
  std::vector<uint64_t> values;  // node * count + k
  size_t count = 0;

  explicit StackUnion(const std::vector<ExportProfile>& profiles) : count(profiles.size()) {
    if (count == 1) {
      shape = profiles[0].tree;
      values.resize(shape->node_count());
      for (uint32_t node = 0; node < shape->node_count(); node++) values[node] = shape->self(node);
      return;
    }
    for (const ExportProfile& p : profiles) merged.merge(*p.tree);
    shape = &merged;
    values.assign(size_t(merged.node_count()) * count, 0);
    for (size_t k = 0; k < count; k++) {
      const Tree& tree = *profiles[k].tree;
      std::vector<uint32_t> remap(tree.symbols().size(), SymbolTable::kNone);
      std::vector<uint32_t> mapped(tree.node_count(), Tree::kRoot);
      values[k] += tree.self(Tree::kRoot);
      for (uint32_t node = 1; node < tree.node_count(); node++) {
        // Every Tree makes a node after its parent, so the parent is mapped already.
        PYROSCOPE_ASSERT(tree.parent(node) < node);
        uint32_t& symbol = remap[tree.symbol(node)];
        if (symbol == SymbolTable::kNone) symbol = merged.symbols().find(tree.name(node));
        mapped[node] = merged.child(mapped[tree.parent(node)], symbol);
        PYROSCOPE_ASSERT(mapped[node] != Tree::kNoNode);  // the merge made every stack of every tree
        values[size_t(mapped[node]) * count + k] += tree.self(node);
      }
    }
  }
  uint32_t node_count() const { return shape->node_count(); }
  uint32_t symbol_count() const { return shape->symbols().size(); }
  std::string_view name(uint32_t symbol) const { return shape->symbols().name(symbol); }
  // Symbols from the node up to the root: leaf first.
  void leaf_first(uint32_t node, std::vector<uint64_t>* out) const {
    out->clear();
    for (; node != Tree::kRoot; node = shape->parent(node)) out->push_back(shape->symbol(node));
  }
};

inline Status check_export(const std::vector<ExportProfile>& profiles) {
  if (profiles.empty()) return error(StatusCode::invalid_argument, "nothing to export");
  for (const ExportProfile& p : profiles) {
    if (!p.tree) return error(StatusCode::invalid_argument, "export of " + p.type + ": no tree");
  }
  return {};
}

// JSON string with the characters JSON needs escaped, and bytes that are not UTF-8 replaced by U+FFFD
// (a JSON document must be UTF-8; perf and old compilers can leave other bytes in names).
inline void put_json_string(std::string* out, std::string_view s) {
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = uint8_t(s[i]);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(char(c));
      i++;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out->append(buf);
      i++;
    } else if (c < 0x80) {
      out->push_back(char(c));
      i++;
    } else {
      const size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
      bool valid = n > 0 && i + n <= s.size();
      for (size_t k = 1; valid && k < n; k++) valid = (uint8_t(s[i + k]) & 0xc0) == 0x80;
      if (valid && n == 3) {
        const uint8_t c1 = uint8_t(s[i + 1]);
        valid = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);  // overlong, surrogates
      }
      if (valid && n == 4) {
        const uint8_t c1 = uint8_t(s[i + 1]);
        valid = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
      }
      if (valid) {
        out->append(s.data() + i, n);
        i += n;
      } else {
        out->append("\xEF\xBF\xBD");
        i++;
      }
    }
  }
  out->push_back('"');
}

}  // namespace detail

Status export_pprof(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out) {
  Status st = detail::check_export(profiles);
  if (!st.ok()) return st;
  const detail::StackUnion stacks(profiles);
  // The string table: index 0 is "" as profile.proto requires.
  std::vector<std::string_view> strings{std::string_view()};
  std::unordered_map<std::string_view, uint64_t> string_index{{std::string_view(), 0}};
  auto intern = [&](std::string_view s) {
    auto it = string_index.emplace(s, strings.size());
    if (it.second) strings.push_back(s);
    return it.first->second;
  };
  std::string proto, message, scratch;
  detail::ProtoWriter profile(&proto);
  for (const ExportProfile& p : profiles) {
    message.clear();
    detail::ProtoWriter vt(&message);
    vt.varint_field(1, intern(p.type));
    vt.varint_field(2, intern(p.info.unit));
    profile.bytes_field(1, message);
  }
  std::vector<uint64_t> location_ids, values(stacks.count);
  std::vector<uint8_t> used(stacks.symbol_count(), 0);
  for (uint32_t node = 0; node < stacks.node_count(); node++) {
    bool any = false;
    for (size_t k = 0; k < stacks.count; k++) {
      values[k] = stacks.values[size_t(node) * stacks.count + k];
      if (values[k] > uint64_t(INT64_MAX))
        return detail::error(StatusCode::invalid_argument, "a value of " + profiles[k].type + " exceeds pprof's int64");
      any = any || values[k] != 0;
    }
    if (!any) continue;
    stacks.leaf_first(node, &location_ids);
    for (uint64_t& id : location_ids) {
      used[id] = 1;
      id += 1;  // location and function ids are symbol + 1: pprof ids are never 0
    }
    message.clear();
    detail::ProtoWriter sample(&message);
    if (!location_ids.empty()) sample.packed_field(1, location_ids.data(), location_ids.size(), &scratch);
    sample.packed_field(2, values.data(), values.size(), &scratch);
    profile.bytes_field(2, message);
  }
  std::string line;
  for (uint32_t symbol = 0; symbol < stacks.symbol_count(); symbol++) {
    if (!used[symbol]) continue;
    line.clear();
    detail::ProtoWriter(&line).varint_field(1, symbol + 1);
    message.clear();
    detail::ProtoWriter location(&message);
    location.varint_field(1, symbol + 1);
    location.bytes_field(4, line);
    profile.bytes_field(4, message);
  }
  for (uint32_t symbol = 0; symbol < stacks.symbol_count(); symbol++) {
    if (!used[symbol]) continue;
    message.clear();
    detail::ProtoWriter function(&message);
    function.varint_field(1, symbol + 1);
    const uint64_t name = intern(stacks.name(symbol));
    function.varint_field(2, name);
    function.varint_field(3, name);
    profile.bytes_field(5, message);
  }
  const ExportProfile* with_period = nullptr;
  for (const ExportProfile& p : profiles)
    if (!with_period && p.info.period > 0) with_period = &p;
  uint64_t period_type = 0, period_unit = 0;
  if (with_period) {
    period_type = intern(with_period->info.period_type);
    period_unit = intern(with_period->info.period_unit);
  }
  for (std::string_view s : strings) profile.bytes_field(6, s);
  if (options.from != 0) {
    profile.varint_field(9, uint64_t(options.from) * 1000000000u);
    if (options.until > options.from) profile.varint_field(10, uint64_t(options.until - options.from) * 1000000000u);
  }
  if (with_period) {
    message.clear();
    detail::ProtoWriter vt(&message);
    vt.varint_field(1, period_type);
    vt.varint_field(2, period_unit);
    profile.bytes_field(11, message);
    profile.varint_field(12, uint64_t(with_period->info.period));
  }
  bool can_gzip = bool(options.deflate);
#if defined(PYROSCOPE_WITH_ZLIB)
  can_gzip = true;
#endif
  if (options.gzip && can_gzip) return detail::gzip({reinterpret_cast<const uint8_t*>(proto.data()), proto.size()}, options.deflate, out);
  *out = std::move(proto);
  return {};
}

Status export_speedscope(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out) {
  Status st = detail::check_export(profiles);
  if (!st.ok()) return st;
  SymbolTable frames;  // shared by the profiles, by name
  std::vector<std::vector<uint32_t>> frame_of(profiles.size());
  for (size_t k = 0; k < profiles.size(); k++) {
    const Tree& tree = *profiles[k].tree;
    frame_of[k].assign(tree.symbols().size(), SymbolTable::kNone);
    for (uint32_t node = 1; node < tree.node_count(); node++) {
      uint32_t& frame = frame_of[k][tree.symbol(node)];
      if (frame == SymbolTable::kNone) frame = frames.intern(tree.name(node));
    }
  }
  std::string& json = *out;
  json.clear();
  json += "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",\"shared\":{\"frames\":[";
  for (uint32_t f = 0; f < frames.size(); f++) {
    json += f ? ",{\"name\":" : "{\"name\":";
    detail::put_json_string(&json, frames.name(f));
    json += '}';
  }
  json += "]},\"profiles\":[";
  std::vector<uint32_t> stack;
  char number[24];
  for (size_t k = 0; k < profiles.size(); k++) {
    const ExportProfile& p = profiles[k];
    const Tree& tree = *p.tree;
    const std::string& unit = p.info.unit;
    const bool known_unit = unit == "nanoseconds" || unit == "microseconds" || unit == "milliseconds" ||
                            unit == "seconds" || unit == "bytes";
    json += k ? ",{\"type\":\"sampled\",\"name\":" : "{\"type\":\"sampled\",\"name\":";
    detail::put_json_string(&json, options.name.empty() ? p.type : options.name + " " + p.type);
    json += ",\"unit\":";
    detail::put_json_string(&json, known_unit ? unit : std::string("none"));
    std::snprintf(number, sizeof number, "%" PRIu64, tree.total());
    json += ",\"startValue\":0,\"endValue\":";
    json += number;
    json += ",\"samples\":[";
    std::string weights;
    bool first = true;
    for (uint32_t node = 0; node < tree.node_count(); node++) {
      if (tree.self(node) == 0) continue;
      stack.clear();
      for (uint32_t n = node; n != Tree::kRoot; n = tree.parent(n)) stack.push_back(frame_of[k][tree.symbol(n)]);
      json += first ? "[" : ",[";
      for (size_t i = stack.size(); i-- > 0;) {
        std::snprintf(number, sizeof number, i + 1 == stack.size() ? "%u" : ",%u", stack[i]);
        json += number;
      }
      json += ']';
      std::snprintf(number, sizeof number, first ? "%" PRIu64 : ",%" PRIu64, tree.self(node));
      weights += number;
      first = false;
    }
    json += "],\"weights\":[";
    json += weights;
    json += "]}";
  }
  json += "],\"name\":";
  detail::put_json_string(&json, options.name.empty() ? std::string("profile") : options.name);
  json += ",\"activeProfileIndex\":0,\"exporter\":\"pyroscope.hpp " PYROSCOPE_VERSION_STRING "\"}";
  return {};
}

}  // namespace pyroscope

#if defined(PYROSCOPE_PLATFORM_LINUX) && !defined(PYROSCOPE_NO_SAMPLER)

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <link.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
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

// Pyroscope's series name: app.type{k=v,...} with the tags sorted (SeriesKey keeps them sorted).
inline std::string ingest_series_name(const SeriesKey& series) {
  std::string name = series.app + "." + series.type + "{";
  for (size_t i = 0; i < series.tags.size(); i++) {
    if (i > 0) name += ',';
    name += series.tags[i].key + "=" + series.tags[i].value;
  }
  return name + "}";
}

// The series' info gives the units and aggregationType the server is told: samples and sum for cpu,
// bytes or objects for the allocation types, average for inuse_* (as Pyroscope's Go heap profiles).
inline std::string ingest_target(const HttpEndpoint& endpoint, const SeriesKey& series, int64_t from, int64_t until,
                                 int sample_rate_hz, const SeriesInfo& info) {
  return endpoint.base_path + "/ingest?name=" + url_encode(ingest_series_name(series)) +
         "&from=" + std::to_string(from) + "&until=" + std::to_string(until) +
         "&format=folded&sampleRate=" + std::to_string(sample_rate_hz) +
         "&spyName=pyroscope-cpp&units=" + url_encode(info.unit) +
         "&aggregationType=" + aggregation_name(info.aggregation);
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

bool allocation_profiling_compiled(std::string* why) {
  if (why != nullptr) *why = "the sampler is not available in this build (PYROSCOPE_NO_SAMPLER, or not Linux)";
  return false;
}

}  // namespace pyroscope

#endif  // sampler

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
