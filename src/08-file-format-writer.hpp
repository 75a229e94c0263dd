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

