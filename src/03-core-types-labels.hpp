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

