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

