// libFuzzer target: a .pyro file from arbitrary bytes, as given and with every checksum made to match.
// File::open_span must return an error or a file whose every listing and query works (never a crash,
// a hang or an unbounded allocation), and a query that succeeds must agree with its own timeline.
#include "pyroscope.hpp"

#include <cstdlib>

namespace {

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

uint32_t get_u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

// The input with the header's and every record's checksum made to match: random bytes almost never
// get past a CRC-32, and everything behind one (the records' structure, the persisted index's
// directory and chunks, the checks that only run on first read) would go unfuzzed.
std::string with_checksums_fixed(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  uint8_t* b = reinterpret_cast<uint8_t*>(&bytes[0]);
  if (size < 64) return bytes;
  put_u32(b + 60, crc32(b, 60));
  for (size_t pos = 64; size - pos >= 12;) {
    const uint32_t n = get_u32(b + pos);
    if (n > size - pos - 12) break;
    put_u32(b + pos + 8, crc32(b + pos + 12, n, crc32(b + pos + 4, 4)));
    pos += 12 + size_t(n);
  }
  return bytes;
}

// An average series' tree is the sum of its blocks' trees divided by n, the number of blocks in the
// range that hold a tree, each node's self rounded to the nearest (at most 1/2 off per node). Summed
// from a timeline of one point per block, S = every block's samples, and n lies between the points
// that hold samples and all points (a block may hold an empty tree), so
// S / n_max - k/2 <= total <= S / n_min + k/2 for a tree of k nodes. Checked on spans short enough
// for a point per block.
bool average_agrees(const pyroscope::Dataset& data_set, int64_t first, int64_t end, const pyroscope::Tree& tree) {
  const int64_t resolution = data_set.resolution_seconds();
  if (resolution <= 0 || (end - first) / resolution > 4096) return true;
  pyroscope::QueryOptions per_block;
  per_block.want_tree = false;
  pyroscope::QueryResult r;
  if (!data_set.query("{}", first, end, &r, per_block).ok()) return false;
  unsigned __int128 sum = 0;
  uint64_t n_min = 0;
  const uint64_t n_max = r.timeline.samples.size();
  for (uint64_t v : r.timeline.samples) {
    sum += v;
    n_min += v != 0;
  }
  const unsigned __int128 total = tree.total(), k = tree.node_count();
  if (n_min == 0) return total == 0;
  return 2 * total * n_max + k * n_max >= 2 * sum && 2 * total * n_min <= 2 * sum + k * n_min;
}

void exercise(const uint8_t* data, size_t size) {
  for (bool salvage : {false, true}) {
    pyroscope::File file;
    pyroscope::OpenOptions options;
    options.salvage = salvage;
    if (!file.open_span({data, size}, options).ok()) continue;
    const pyroscope::FileInfo info = file.info();
    const std::vector<pyroscope::SeriesKey> series = file.series();
    if (info.valid_bytes > size || info.file_bytes != size) std::abort();
    for (uint32_t i = 0; i < file.symbols().size(); ++i) (void)file.symbols().name(i);

    pyroscope::Dataset data_set;
    data_set.add(std::move(file));
    for (const std::string& app : data_set.apps())
      for (const std::string& key : data_set.tag_keys(app)) (void)data_set.tag_values(app, key);
    const pyroscope::TimeRange span = data_set.time_span();
    int64_t first = span.from, end = span.until;

    // Bounded timelines: a corrupt span must not turn into a huge allocation here.
    pyroscope::QueryOptions query_options;
    query_options.timeline_points = 64;
    pyroscope::QueryResult all;
    if (data_set.query("{}", first, end, &all, query_options).ok()) {
      uint64_t timeline_sum = 0;
      for (uint64_t v : all.timeline.samples) timeline_sum += v;
      if (all.merges > all.merge_bound) std::abort();
      // Every sample of the merged tree is on the timeline of the same range; an average series'
      // tree is its blocks' mean instead (found by this target: a summed check aborted on one).
      if (all.info.aggregation == pyroscope::Aggregation::sum ? timeline_sum != all.tree.total()
                                                              : !average_agrees(data_set, first, end, all.tree))
        std::abort();
      (void)all.tree.to_folded();
    }
    const int64_t middle = first + (end - first) / 2;
    for (size_t i = 0; i < series.size() && i < 4; ++i) {
      pyroscope::QueryResult r;
      (void)data_set.query(series[i].to_string(), first, middle + 1, &r, query_options);
      (void)data_set.query(series[i].to_string(), middle, end, &r, query_options);
    }
    pyroscope::QueryResult none;
    (void)data_set.query("{}", middle, middle + 1, &none, query_options);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  exercise(data, size);
  const std::string fixed = with_checksums_fixed(data, size);
  if (fixed.compare(0, fixed.size(), reinterpret_cast<const char*>(data), size) != 0)
    exercise(reinterpret_cast<const uint8_t*>(fixed.data()), fixed.size());
  return 0;
}
