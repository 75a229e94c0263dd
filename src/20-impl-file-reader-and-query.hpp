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

