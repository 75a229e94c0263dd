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

