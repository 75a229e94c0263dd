// libFuzzer target: a .pyro file from arbitrary bytes. File::open_span must return an error or a file
// whose every listing and query works (never a crash, a hang or an unbounded allocation).
#include "pyroscope.hpp"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
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
      // Every sample of the merged tree is on the timeline of the same range.
      if (all.merges > all.merge_bound || timeline_sum != all.tree.total()) std::abort();
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
  return 0;
}
