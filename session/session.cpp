#include "session.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <set>

#include <dirent.h>
#include <sys/stat.h>

#include "json.hpp"

namespace pyroscope::session {

// [SECTION] Names ===================================================================================

#define PYROSCOPE_ENUM_NAME_CASE(value, text) \
  case Enum::value:                           \
    return text;
#define PYROSCOPE_ENUM_PARSE(value, text) \
  if (text_in == text) {                  \
    *out = Enum::value;                   \
    return true;                          \
  }
#define PYROSCOPE_ENUM_CHOICE(value, text) names.push_back(text);
#define PYROSCOPE_DEFINE_NAMED_ENUM(Type, LIST)                   \
  const char* name_of(Type v) {                                   \
    using Enum = Type;                                            \
    switch (v) { LIST(PYROSCOPE_ENUM_NAME_CASE) }                 \
    return "";                                                    \
  }                                                               \
  bool parse_name(std::string_view text_in, Type* out) {          \
    using Enum = Type;                                            \
    LIST(PYROSCOPE_ENUM_PARSE)                                    \
    return false;                                                 \
  }                                                               \
  std::string choices(Type) {                                     \
    std::vector<const char*> names;                               \
    LIST(PYROSCOPE_ENUM_CHOICE)                                   \
    std::string out;                                              \
    for (size_t i = 0; i < names.size(); ++i) {                   \
      if (i) out += i + 1 == names.size() ? " or " : ", ";        \
      out += names[i];                                            \
    }                                                             \
    return out;                                                   \
  }

PYROSCOPE_DEFINE_NAMED_ENUM(ViewMode, PYROSCOPE_VIEW_MODES)
PYROSCOPE_DEFINE_NAMED_ENUM(Panels, PYROSCOPE_PANELS)
PYROSCOPE_DEFINE_NAMED_ENUM(Theme, PYROSCOPE_THEMES)
PYROSCOPE_DEFINE_NAMED_ENUM(Orientation, PYROSCOPE_ORIENTATIONS)
PYROSCOPE_DEFINE_NAMED_ENUM(ColourMode, PYROSCOPE_COLOUR_MODES)
PYROSCOPE_DEFINE_NAMED_ENUM(TableSort, PYROSCOPE_TABLE_SORTS)
PYROSCOPE_DEFINE_NAMED_ENUM(NameMode, PYROSCOPE_NAME_MODES)
PYROSCOPE_DEFINE_NAMED_ENUM(RecursionMode, PYROSCOPE_RECURSION_MODES)
PYROSCOPE_DEFINE_NAMED_ENUM(DiffMode, PYROSCOPE_DIFF_MODES)

// [SECTION] Time ====================================================================================

namespace {

constexpr int64_t kTimeLimit = int64_t(1) << 60;  // ~3.6e10 years: what parse_time gives at most
// The times a session holds (ranges, spans, timeline windows): the years 0000 to 9999, as it prints
// them, so no difference of two times, sum with a resolution or date conversion can overflow.
constexpr int64_t kEarliestTime = -62167219200;  // 0000-01-01 00:00:00 UTC
constexpr int64_t kLatestTime = 253402300800;    // 10000-01-01 00:00:00 UTC

Status time_error(std::string_view text, const char* what) {
  return Status(StatusCode::invalid_argument, "time '" + std::string(text) + "': " + what);
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void civil_from_days(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

// Reads exactly `digits` decimal digits at *pos.
bool read_digits(std::string_view s, size_t* pos, int digits, int64_t* out) {
  int64_t v = 0;
  for (int i = 0; i < digits; ++i) {
    if (*pos >= s.size() || s[*pos] < '0' || s[*pos] > '9') return false;
    v = v * 10 + (s[(*pos)++] - '0');
  }
  *out = v;
  return true;
}

bool parse_iso8601(std::string_view s, int64_t* out) {
  size_t p = 0;
  int64_t year, month, day, hour = 0, minute = 0, second = 0;
  if (!read_digits(s, &p, 4, &year) || p >= s.size() || s[p++] != '-' || !read_digits(s, &p, 2, &month) ||
      p >= s.size() || s[p++] != '-' || !read_digits(s, &p, 2, &day))
    return false;
  if (month < 1 || month > 12 || day < 1 || day > 31) return false;
  int64_t offset = 0;
  if (p < s.size()) {
    if (s[p] != 'T' && s[p] != 't' && s[p] != ' ') return false;
    ++p;
    if (!read_digits(s, &p, 2, &hour) || p >= s.size() || s[p++] != ':' || !read_digits(s, &p, 2, &minute))
      return false;
    if (p < s.size() && s[p] == ':') {
      ++p;
      if (!read_digits(s, &p, 2, &second)) return false;
    }
    if (hour > 23 || minute > 59 || second > 60) return false;
    if (p < s.size() && s[p] == '.') {  // fractions of a second are dropped
      ++p;
      while (p < s.size() && s[p] >= '0' && s[p] <= '9') ++p;
    }
    if (p < s.size() && (s[p] == 'Z' || s[p] == 'z')) {
      ++p;
    } else if (p < s.size() && (s[p] == '+' || s[p] == '-')) {
      const int sign = s[p++] == '-' ? -1 : 1;
      int64_t oh, om = 0;
      if (!read_digits(s, &p, 2, &oh) || oh > 23) return false;
      if (p < s.size() && s[p] == ':') ++p;
      if (p < s.size() && (!read_digits(s, &p, 2, &om) || om > 59)) return false;
      offset = sign * (oh * 3600 + om * 60);
    } else if (p < s.size()) {
      return false;
    }
  }
  if (p != s.size()) return false;
  // The day must exist in that month (2026-02-30 is an error, not March 2nd).
  int64_t y2;
  unsigned m2, d2;
  const int64_t days = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  civil_from_days(days, &y2, &m2, &d2);
  if (y2 != year || int64_t(m2) != month || int64_t(d2) != day) return false;
  *out = days * 86400 + hour * 3600 + minute * 60 + second - offset;
  return true;
}

// A whole decimal number, optionally signed. *overflow: it has only digits but does not fit int64.
bool parse_integer(std::string_view s, int64_t* out, bool* overflow) {
  *overflow = false;
  if (s.empty()) return false;
  const bool negative = s[0] == '-';
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  int64_t v = 0;  // accumulated negatively: -INT64_MIN does not fit
  for (size_t k = i; k < s.size(); ++k) {
    if (s[k] < '0' || s[k] > '9') return false;
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_sub_overflow(v, s[k] - '0', &v)) *overflow = true;
  }
  if (*overflow) return false;
  if (!negative && v == INT64_MIN) {
    *overflow = true;
    return false;
  }
  *out = negative ? v : -v;
  return true;
}

}  // namespace

Status parse_time(std::string_view text, int64_t now, int64_t* out) {
  now = std::clamp(now, -kTimeLimit, kTimeLimit);  // a caller's clock may say anything; offsets stay computable
  if (text.compare(0, 3, "now") == 0) {
    if (text.size() == 3) {
      *out = now;
      return Status();
    }
    const char sign = text[3];
    const std::string_view rest = text.substr(4);
    const char unit = rest.empty() ? '\0' : rest.back();
    const int64_t multiplier = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : unit == 'd' ? 86400
                             : unit == 'w' ? 7 * 86400 : 0;
    int64_t n = 0;
    bool overflow = false;
    if ((sign != '-' && sign != '+') || multiplier == 0 || rest.size() < 2 || rest[0] == '-' || rest[0] == '+' ||
        !parse_integer(rest.substr(0, rest.size() - 1), &n, &overflow)) {
      if (overflow) return time_error(text, "too far from now");
      return time_error(text, "expected now, now-<N><unit> or now+<N><unit> with a unit among s m h d w (now-1h)");
    }
    // Bounded before multiplying: n * multiplier could overflow.
    if (n > kTimeLimit / multiplier) return time_error(text, "too far from now");
    const int64_t t = sign == '-' ? now - n * multiplier : now + n * multiplier;
    if (t < -kTimeLimit || t > kTimeLimit) return time_error(text, "too far from now");
    *out = t;
    return Status();
  }
  int64_t v;
  bool overflow = false;
  if (parse_integer(text, &v, &overflow)) {
    *out = std::clamp(v, -kTimeLimit, kTimeLimit);  // any int64 (a URL may say anything), kept computable
    return Status();
  }
  if (overflow) return time_error(text, "beyond 64 bits");
  if (parse_iso8601(text, out)) return Status();
  return time_error(text, "neither unix seconds, ISO 8601 (2026-11-22T10:00:00Z) nor now-<N><unit> (now-30m)");
}

int64_t now_unix() { return static_cast<int64_t>(std::time(nullptr)); }

std::string format_utc(int64_t t) {
  const int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
  const int64_t secs = t - days * 86400;
  int64_t y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04" PRId64 "-%02u-%02uT%02d:%02d:%02dZ", y, m, d, static_cast<int>(secs / 3600),
                static_cast<int>(secs / 60 % 60), static_cast<int>(secs % 60));
  return buf;
}

std::string format_clock(int64_t t, bool with_date) {
  const std::string iso = format_utc(t);  // 2026-11-22T10:00:00Z
  const size_t tee = iso.find('T');
  const std::string clock = iso.substr(tee + 1, iso.size() - tee - 2);
  return with_date ? iso.substr(0, tee) + " " + clock : clock;
}

std::string format_duration(int64_t seconds) {
  if (seconds < 0) return "-" + format_duration(seconds == INT64_MIN ? INT64_MAX : -seconds);
  char buf[64];
  const int64_t d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60, s = seconds % 60;
  if (d) std::snprintf(buf, sizeof buf, "%" PRId64 "d %" PRId64 "h %" PRId64 "m", d, h, m);
  else if (h) std::snprintf(buf, sizeof buf, "%" PRId64 "h %" PRId64 "m %" PRId64 "s", h, m, s);
  else if (m) std::snprintf(buf, sizeof buf, "%" PRId64 "m %" PRId64 "s", m, s);
  else std::snprintf(buf, sizeof buf, "%" PRId64 "s", s);
  return buf;
}

std::string format_range(const TimeRange& r) {
  const bool same_day = floor_to(r.from, 86400) == floor_to(r.until - 1, 86400);
  return format_clock(r.from, true) + " - " + format_clock(r.until, !same_day) + " (" +
         format_duration(r.until - r.from) + ")";
}

int64_t floor_to(int64_t t, int64_t step) {
  if (step <= 0) return t;
  const int64_t r = t % step;
  if (r == 0) return t;
  const int64_t down = r < 0 ? r + step : r;  // distance to the multiple below
  return t < INT64_MIN + down ? INT64_MIN : t - down;  // saturate: the multiple below does not exist
}

int64_t ceil_to(int64_t t, int64_t step) {
  if (step <= 0) return t;
  const int64_t floor = floor_to(t, step);
  if (floor == t) return t;
  return floor > INT64_MAX - step ? floor : floor + step;  // saturate: the multiple above would overflow
}

TimeRange clamped(TimeRange r) {
  r.from = std::clamp(r.from, kEarliestTime, kLatestTime);
  r.until = std::clamp(r.until, kEarliestTime, kLatestTime);
  return r;
}

// [SECTION] Values ==================================================================================

std::string format_count(uint64_t n) {
  char digits[32];
  const int len = std::snprintf(digits, sizeof digits, "%llu", static_cast<unsigned long long>(n));
  std::string out;
  out.reserve(static_cast<size_t>(len) + static_cast<size_t>(len) / 3);
  for (int i = 0; i < len; ++i) {
    if (i > 0 && (len - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string format_share(double share) {
  char buf[32];
  const double percent = share * 100.0;
  if (percent != 0 && std::fabs(percent) < 0.01) {
    std::snprintf(buf, sizeof buf, "%.4f%%", percent);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f%%", percent);
  }
  return buf;
}

namespace {

std::string scaled(double value, const char* const* units, const double* factors, size_t n) {
  size_t i = 0;
  while (i + 1 < n && std::fabs(value) >= factors[i + 1]) ++i;
  const double v = value / factors[i];
  char buf[48];
  std::snprintf(buf, sizeof buf, v >= 100 || i == 0 ? "%.0f %s" : v >= 10 ? "%.1f %s" : "%.2f %s", v, units[i]);
  return buf;
}

std::string format_nanoseconds(double ns) {
  static const char* const units[] = {"ns", "µs", "ms", "s", "min", "h", "days"};
  static const double factors[] = {1, 1e3, 1e6, 1e9, 60e9, 3600e9, 86400e9};
  return scaled(ns, units, factors, 7);
}

}  // namespace

std::string format_value(uint64_t value, const SeriesInfo& info) {
  if (info.unit == "nanoseconds") return format_nanoseconds(double(value));
  if (info.unit == "samples" && info.period > 0 && info.period_unit == "nanoseconds")
    return format_nanoseconds(double(value) * double(info.period));
  if (info.unit == "bytes") {
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    static const double factors[] = {1, 1024.0, 1048576.0, 1073741824.0, 1099511627776.0, 1125899906842624.0};
    return value < 1024 ? format_count(value) + " B" : scaled(double(value), units, factors, 6);
  }
  return format_count(value) + " " + info.unit;
}

void function_rows(const Tree& tree, const DiffTree* diff, std::vector<FunctionRow>* rows) {
  rows->clear();
  std::vector<uint8_t> outermost;
  tree.mark_outermost(&outermost);
  std::vector<FunctionRow> by_symbol(tree.symbols().size());
  std::vector<uint8_t> occurs(tree.symbols().size(), 0);
  for (uint32_t node = 1; node < tree.node_count(); ++node) {
    const uint32_t symbol = tree.symbol(node);
    FunctionRow& row = by_symbol[symbol];
    occurs[symbol] = 1;
    if (diff) {
      row.self += diff->left_self(node);
      row.right_self += diff->right_self(node);
      if (outermost[node]) {
        row.total += diff->left_total(node);
        row.right_total += diff->right_total(node);
      }
    } else {
      row.self += tree.self(node);
      if (outermost[node]) row.total += tree.node_total(node);
    }
  }
  for (uint32_t s = 0; s < by_symbol.size(); ++s) {
    if (!occurs[s]) continue;
    by_symbol[s].symbol = s;
    rows->push_back(by_symbol[s]);
  }
}

// [SECTION] Diff arithmetic =========================================================================

double diff_change(uint64_t left, uint64_t right, const DiffScale& scale) {
  switch (scale.mode) {
    case DiffMode::share: {
      const double l = scale.left_all ? double(left) / double(scale.left_all) : 0.0;
      const double r = scale.right_all ? double(right) / double(scale.right_all) : 0.0;
      return r - l;
    }
    case DiffMode::per_second:
      return double(right) / std::max(1e-9, scale.right_seconds) - double(left) / std::max(1e-9, scale.left_seconds);
    case DiffMode::absolute:
      return double(right) - double(left);
  }
  return 0.0;
}

double diff_change_percent(uint64_t left, uint64_t right, const DiffScale& scale) {
  // Each side in the mode's terms, then (r - l) / l as Pyroscope colours diffs.
  double l = double(left), r = double(right);
  if (scale.mode == DiffMode::share) {
    l = scale.left_all ? l / double(scale.left_all) : 0.0;
    r = scale.right_all ? r / double(scale.right_all) : 0.0;
  } else if (scale.mode == DiffMode::per_second) {
    l /= std::max(1e-9, scale.left_seconds);
    r /= std::max(1e-9, scale.right_seconds);
  }
  if (l == 0) return r > 0 ? 100.0 : 0.0;
  return std::clamp((r - l) / l * 100.0, -100.0, 100.0);
}

std::string format_change(double change, const DiffScale& scale, const SeriesInfo& info) {
  const char* sign = change > 0 ? "+" : change < 0 ? "-" : "";
  const double magnitude = std::fabs(change);
  char buf[64];
  if (scale.mode == DiffMode::share) {
    std::snprintf(buf, sizeof buf, "%s%.2f pp", sign, magnitude * 100.0);
    return buf;
  }
  std::string amount;
  if (info.unit == "nanoseconds") {
    amount = format_nanoseconds(magnitude);
  } else if (info.unit == "samples" && info.period > 0 && info.period_unit == "nanoseconds") {
    amount = format_nanoseconds(magnitude * double(info.period));
  } else if (info.unit == "bytes") {
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    static const double factors[] = {1, 1024.0, 1048576.0, 1073741824.0, 1099511627776.0, 1125899906842624.0};
    amount = scaled(magnitude, units, factors, 6);
  } else if (magnitude >= 100 || magnitude == std::floor(magnitude)) {
    amount = format_count(uint64_t(std::llround(magnitude))) + " " + info.unit;
  } else {
    std::snprintf(buf, sizeof buf, magnitude >= 10 ? "%.1f %s" : "%.2f %s", magnitude, info.unit.c_str());
    amount = buf;
  }
  return sign + amount + (scale.mode == DiffMode::per_second ? "/s" : "");
}

void sort_rows(const Tree& tree, const DiffTree* diff, const std::vector<FunctionRow>& rows, TableSort sort,
               bool ascending, std::vector<uint32_t>* order, const DiffScale* given_scale) {
  const SymbolTable& symbols = tree.symbols();
  DiffScale scale;
  if (given_scale) scale = *given_scale;
  if (diff && (!given_scale || scale.left_all == 0)) {
    scale.left_all = diff->left_total(Tree::kRoot);
    scale.right_all = diff->right_total(Tree::kRoot);
  }
  auto change = [&](const FunctionRow& r) { return diff_change(r.total, r.right_total, scale); };
  // "a before b": a's key below b's when ascending, above when descending; equal keys keep their order.
  auto before = [&](const FunctionRow& a, const FunctionRow& b) {
    switch (sort) {
      case TableSort::name: return symbols.name(a.symbol) < symbols.name(b.symbol);
      case TableSort::self: return a.self < b.self;
      case TableSort::total:
      case TableSort::left_total: return a.total < b.total;
      case TableSort::right_total: return a.right_total < b.right_total;
      case TableSort::change: return change(a) < change(b);
    }
    return false;
  };
  std::stable_sort(order->begin(), order->end(), [&](uint32_t a, uint32_t b) {
    return ascending ? before(rows[a], rows[b]) : before(rows[b], rows[a]);
  });
}

std::string flamebearer_json(const Tree& tree) {
  std::vector<uint32_t> offsets, children;
  tree.sorted_children(&offsets, &children);
  std::vector<std::string_view> names{"total"};
  std::vector<uint32_t> name_index(tree.symbols().size(), UINT32_MAX);
  std::vector<std::vector<uint64_t>> levels;
  std::vector<uint64_t> level_end;
  uint64_t max_self = 0;
  struct Item {
    uint32_t node;
    uint32_t depth;
    uint64_t x;
  };
  std::vector<Item> stack{{Tree::kRoot, 0, 0}};
  std::vector<Item> kids;
  while (!stack.empty()) {
    const Item it = stack.back();
    stack.pop_back();
    if (levels.size() <= it.depth) {
      levels.emplace_back();
      level_end.push_back(0);
    }
    uint32_t name = 0;
    if (it.node != Tree::kRoot) {
      uint32_t& index = name_index[tree.symbol(it.node)];
      if (index == UINT32_MAX) {
        index = static_cast<uint32_t>(names.size());
        names.push_back(tree.name(it.node));
      }
      name = index;
    }
    const uint64_t total = tree.node_total(it.node), self = tree.self(it.node);
    std::vector<uint64_t>& level = levels[it.depth];
    level.insert(level.end(), {it.x - level_end[it.depth], total, self, name});
    level_end[it.depth] = it.x + total;
    if (it.node != Tree::kRoot) max_self = std::max(max_self, self);
    // Depth-first with children pushed in reverse, so each level is filled left to right.
    uint64_t child_x = it.x;
    kids.clear();
    for (uint32_t i = offsets[it.node]; i < offsets[it.node + 1]; ++i) {
      kids.push_back({children[i], it.depth + 1, child_x});
      child_x += tree.node_total(children[i]);
    }
    stack.insert(stack.end(), kids.rbegin(), kids.rend());
  }
  std::string out = "{\"names\":[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? "," : "") + json::string(names[i]);
  out += "],\"levels\":[";
  for (size_t d = 0; d < levels.size(); ++d) {
    out += d ? ",[" : "[";
    for (size_t i = 0; i < levels[d].size(); ++i) out += (i ? "," : "") + std::to_string(levels[d][i]);
    out += "]";
  }
  out += "],\"numTicks\":" + std::to_string(tree.total()) + ",\"maxSelf\":" + std::to_string(max_self) + "}";
  return out;
}

// [SECTION] Sources =================================================================================

namespace {

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of("/\\");
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

ByteSpan span_of(const std::string& bytes) { return ByteSpan{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}; }

// Reads a file whole (a format other than .pyro, which is mapped instead).
Status read_file(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status(StatusCode::io_error, "cannot open " + path + ": " + std::strerror(errno));
  out->clear();
  std::vector<char> buffer(1 << 20);
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0) out->append(buffer.data(), n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status(StatusCode::io_error, "cannot read " + path);
  return Status();
}

// Folded text is read in pieces, so a large file never sits in memory whole.
Status import_folded_file(const std::string& path, FoldedImporter* importer) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status(StatusCode::io_error, "cannot open " + path + ": " + std::strerror(errno));
  std::vector<char> buffer(8u << 20);
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0) importer->add(buffer.data(), n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status(StatusCode::io_error, "cannot read " + path);
  return importer->finish();
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

std::string regex_escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (std::strchr(".[]{}()*+?|^$\\", c)) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::string app_name_for(const std::string& file_name) {
  std::string stem = base_name(file_name);
  const size_t dot = stem.find('.');
  if (dot != std::string::npos && dot > 0) stem = stem.substr(0, dot);
  std::string out;
  for (char c : stem) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    out.push_back(ok ? c : '_');
  }
  return out.empty() ? std::string("folded") : out;
}

// [SECTION] Selection ===============================================================================

Selector Selection::selector() const {
  Selector s;
  s.app = app;
  s.type = type;
  for (const auto& [key, values] : tags) {
    if (values.empty()) continue;
    Matcher m;
    m.key = key;
    if (values.size() == 1) {
      m.op = Matcher::Op::equal;
      m.value = values[0];
    } else {
      m.op = Matcher::Op::regex;
      for (const std::string& v : values) m.value += (m.value.empty() ? "" : "|") + regex_escape(v);
    }
    s.matchers.push_back(std::move(m));
  }
  s.matchers.insert(s.matchers.end(), matchers.begin(), matchers.end());
  return s;
}

std::string Selection::text() const { return selector().to_string(); }

Selector Selection::side_selector(int side) const {
  Selector s = selector();
  if (!comparing_tag() || !pair()) return s;
  Matcher m;
  m.key = compare_key;
  m.op = side == 0 ? Matcher::Op::not_equal : Matcher::Op::equal;
  m.value = compare_value;
  s.matchers.push_back(std::move(m));
  return s;
}

// [SECTION] Frame names =============================================================================

std::string FrameNames::label(std::string_view name) const {
  return mode_ == NameMode::shortened ? short_function_name(name) : std::string(name);
}

std::vector<std::string_view> FrameNames::full_names(std::string_view name) const {
  if (mode_ == NameMode::merged) {
    const auto it = merged_.find(name);
    if (it != merged_.end()) return std::vector<std::string_view>(it->second.begin(), it->second.end());
  }
  return {name};
}

bool FrameNames::matches(const NameSearch& search, std::string_view name) const {
  if (mode_ == NameMode::merged) {
    const auto it = merged_.find(name);
    if (it != merged_.end()) {
      for (const std::string& full : it->second)
        if (search.matches(full)) return true;
      return false;
    }
  }
  return search.matches(name);
}

std::vector<TimeRange> Selection::joined_ranges() const {
  std::vector<TimeRange> sorted;
  for (int i = 0; i < (pair() ? 2 : 1); ++i)
    if (ranges[i].valid()) sorted.push_back(ranges[i]);
  std::sort(sorted.begin(), sorted.end(), [](const TimeRange& a, const TimeRange& b) { return a.from < b.from; });
  std::vector<TimeRange> joined;
  for (const TimeRange& r : sorted) {
    if (!joined.empty() && r.from <= joined.back().until) joined.back().until = std::max(joined.back().until, r.until);
    else joined.push_back(r);
  }
  return joined;
}

// [SECTION] Session: sources ========================================================================

struct Session::Buffers {
  std::vector<std::unique_ptr<uint8_t, FreeDeleter>> spans;  // bytes the dataset's files read from
};

Session::Session() : buffers_(std::make_unique<Buffers>()) {}
Session::~Session() = default;

void Session::set_codecs(InflateFunction inflate, DeflateFunction deflate) {
  inflate_ = std::move(inflate);
  deflate_ = std::move(deflate);
}

std::vector<std::string> data_files(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return {path};
  std::vector<std::string> files;
  if (DIR* dir = ::opendir(path.c_str())) {
    while (const dirent* entry = ::readdir(dir)) {
      const std::string name = entry->d_name;
      if (name.empty() || name[0] == '.' || name.size() < 6 || name.compare(name.size() - 5, 5, ".pyro") != 0) continue;
      const std::string full = path + (path.back() == '/' ? "" : "/") + name;
      struct stat file_stat;
      if (::lstat(full.c_str(), &file_stat) == 0 && S_ISREG(file_stat.st_mode)) files.push_back(full);
    }
    ::closedir(dir);
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> data_files(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& path : paths)
    for (std::string& f : data_files(path)) files.push_back(std::move(f));
  return files;
}

std::string Session::open(std::vector<LoadInput> inputs) {
  const double start = now_ms();
  // A directory opens as the .pyro files in it.
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].path.empty()) continue;
    std::vector<std::string> files = data_files(inputs[i].path);
    if (files.size() == 1 && files[0] == inputs[i].path) continue;
    if (files.empty()) {
      inputs[i].name = inputs[i].name.empty() ? inputs[i].path : inputs[i].name;
      continue;  // reported below: a directory does not open as a file
    }
    std::vector<LoadInput> expanded;
    for (std::string& f : files) {
      LoadInput in;
      in.name = in.path = std::move(f);
      in.salvage = inputs[i].salvage;
      expanded.push_back(std::move(in));
    }
    inputs.erase(inputs.begin() + long(i));
    for (LoadInput& in : expanded) inputs.insert(inputs.begin() + long(i++), std::move(in));
    --i;
  }
  Dataset dataset;
  auto buffers = std::make_unique<Buffers>();
  std::vector<LoadedSource> sources;
  std::vector<std::string> errors, notices;
  // Imported profiles, named after their files once every .pyro's applications are known.
  struct Imported {
    size_t source;          // index into sources
    std::string name;
    int64_t at;
    std::unique_ptr<Tree> folded;  // folded text parsed as it was read
    std::string bytes;             // any other format, imported when the names are settled
  };
  std::vector<Imported> imported;
  const int64_t now = now_unix();
  for (LoadInput& in : inputs) {
    std::unique_ptr<uint8_t, FreeDeleter> owned(in.bytes);
    LoadedSource loaded;
    loaded.name = in.name.empty() ? base_name(in.path) : in.name;
    int64_t at = in.modified_unix > 0 ? in.modified_unix : now;
    Status status;
    Imported import;
    Format format = Format::pyro;
    if (in.folded) {
      loaded.bytes = in.size;
      format = Format::folded;
      status = in.folded->finish();
      if (status.ok()) {
        import.folded = std::make_unique<Tree>(std::move(in.folded->tree()));
        loaded.samples = in.folded->report().imported;
        if (in.folded->report().skipped) notices.push_back(loaded.name + ": " + in.folded->report().summary());
      }
    } else {
      if (!in.path.empty()) {
        struct stat st;
        if (::stat(in.path.c_str(), &st) == 0) {
          loaded.bytes = static_cast<uint64_t>(st.st_size);
          if (in.modified_unix <= 0) at = static_cast<int64_t>(st.st_mtime);
        }
        // A file's first bytes tell its format; folded text is then read in pieces, .pyro mapped.
        uint8_t head[4096];
        size_t got = 0;
        if (FILE* f = std::fopen(in.path.c_str(), "rb")) {
          got = std::fread(head, 1, sizeof head, f);
          std::fclose(f);
          status = detect_format(ByteSpan{head, got}, &format, inflate_);
          if (!status.ok() && got == sizeof head) status = Status();  // a prefix may stop mid-token: read it all
        } else {
          status = Status(StatusCode::io_error, "cannot open " + in.path + ": " + std::strerror(errno));
        }
        if (status.ok() && format == Format::pyro) {
          OpenOptions options;
          options.salvage = in.salvage;
          File file;
          status = file.open_path(in.path, options);
          if (status.ok()) dataset.add(std::move(file));
        } else if (status.ok() && format == Format::folded) {
          FoldedImporter importer;
          status = import_folded_file(in.path, &importer);
          if (status.ok()) {
            import.folded = std::make_unique<Tree>(std::move(importer.tree()));
            loaded.samples = importer.report().imported;
            if (importer.report().skipped) notices.push_back(loaded.name + ": " + importer.report().summary());
          }
        } else if (status.ok() || got == sizeof head) {
          status = read_file(in.path, &import.bytes);
          if (status.ok()) status = detect_format(span_of(import.bytes), &format, inflate_);
        }
      } else {
        loaded.bytes = in.size;
        status = detect_format(ByteSpan{in.bytes, in.size}, &format, inflate_);
        if (status.ok() && format == Format::pyro) {
          File file;
          status = file.open_span(ByteSpan{in.bytes, in.size});
          if (status.ok()) {
            dataset.add(std::move(file));
            buffers->spans.push_back(std::move(owned));
          }
        } else if (status.ok()) {
          import.bytes.assign(reinterpret_cast<const char*>(in.bytes), in.size);
          owned.reset();  // the copy is imported below
        }
      }
    }
    if (!status.ok()) {
      errors.push_back(loaded.name + ": " + status.to_string());
      continue;
    }
    loaded.kind = format_name(format);
    if (format != Format::pyro) {
      import.source = sources.size();
      import.name = loaded.name;
      import.at = at;
      imported.push_back(std::move(import));
    }
    sources.push_back(std::move(loaded));
  }
  if (!imported.empty()) {
    // A profile names no application: each file is one, named after it, kept apart from the .pyro
    // files' applications and from each other.
    const std::vector<std::string> pyro_apps = dataset.apps();
    std::set<std::string> taken(pyro_apps.begin(), pyro_apps.end());
    std::vector<ProfileBlock> blocks;
    std::vector<size_t> failed_sources;
    for (Imported& f : imported) {
      std::string app = app_name_for(f.name);
      if (taken.count(app)) app += "-imported";
      const std::string base = app;
      for (int n = 2; taken.count(app); ++n) app = base + "-" + std::to_string(n);
      const int64_t at = clamped(TimeRange{f.at, f.at}).from;
      if (f.folded) {
        if (f.folded->total() == 0) {
          errors.push_back(f.name + ": no samples in the folded text");
          failed_sources.push_back(f.source);
          continue;
        }
        ProfileBlock block;
        block.series = SeriesKey(app, {});
        block.block_start = floor_to(at, kDefaultResolutionSeconds);
        block.tree = std::move(*f.folded);
        blocks.push_back(std::move(block));
      } else {
        ImportOptions options;
        options.source_name = f.name;
        options.app = app;
        options.time = at;
        options.inflate = inflate_;
        ImportReport report;
        const size_t before = blocks.size();
        const Status status = import_profile(span_of(f.bytes), options, &blocks, &report);
        f.bytes = std::string();
        if (!status.ok()) {
          errors.push_back(status.to_string());
          failed_sources.push_back(f.source);
          continue;
        }
        if (blocks.size() == before) {
          errors.push_back(f.name + ": no samples in the profile");
          failed_sources.push_back(f.source);
          continue;
        }
        sources[f.source].samples = report.imported;
        if (report.skipped || report.numeric_labels_ignored) notices.push_back(f.name + ": " + report.summary());
      }
      taken.insert(app);
    }
    const Status added = blocks.empty() ? Status() : dataset.add_blocks(blocks);
    if (!added.ok()) {
      errors.push_back("imported profiles: " + added.to_string());
      for (const Imported& f : imported) failed_sources.push_back(f.source);
    }
    std::sort(failed_sources.begin(), failed_sources.end());
    failed_sources.erase(std::unique(failed_sources.begin(), failed_sources.end()), failed_sources.end());
    for (size_t k = failed_sources.size(); k-- > 0;) sources.erase(sources.begin() + long(failed_sources[k]));
  }
  std::string problems;
  for (const std::string& e : errors) problems += (problems.empty() ? "" : "\n") + e;
  last_open_ms_ = now_ms() - start;
  if (sources.empty()) return problems.empty() ? std::string("nothing to open") : problems;  // keep what was shown
  left_ = QueryResult();
  right_ = QueryResult();
  left_view_.reset();
  right_view_.reset();
  diff_.reset();
  sandwich_.reset();
  timeline_ = QueryResult();
  breakdown_ = TagBreakdown();
  dataset_ = std::move(dataset);  // the old data set lets go of its spans first...
  buffers_ = std::move(buffers);  // ...then the old buffers are freed
  sources_ = std::move(sources);
  notices_ = std::move(notices);
  error_.clear();
  reset_selection();
  return problems;
}

// [SECTION] Session: selection ======================================================================

void Session::reset_selection() {
  apps_ = dataset_.apps();
  resolution_ = std::max<int64_t>(1, dataset_.resolution_seconds());
  span_ = clamped(dataset_.time_span());
  if (!span_.valid()) span_ = TimeRange{span_.from, span_.from + resolution_};
  const ViewMode view = selection_.view;  // the view outlives the data it shows
  selection_ = Selection();
  selection_.ranges[0] = selection_.ranges[1] = span_;
  selection_.view = view;
  pair_ranges_chosen_ = false;
  // Start with the application that has the most series: usually the one the files are about.
  std::string first_app;
  size_t most_series = 0;
  for (const std::string& app : apps_) {
    Selector selector;
    selector.app = app;
    const size_t n = dataset_.series(selector).size();
    if (first_app.empty() || n > most_series) {
      first_app = app;
      most_series = n;
    }
  }
  select_app(first_app);
  apply_pending_settings();
  timeline_key_.clear();
  trees_key_.clear();
  view_key_.clear();
  sandwich_key_.clear();
  tag_samples_key_.clear();
  breakdown_key_.clear();
}

void Session::load_lists() {
  tag_keys_.clear();
  tag_values_.clear();
  if (selection_.app.empty()) return;
  tag_keys_ = dataset_.tag_keys(selection_.app);
  for (const std::string& key : tag_keys_) tag_values_.push_back(dataset_.tag_values(selection_.app, key));
}

void Session::selection_changed() {
  selector_text_ = selection_.text();
  info_ = SeriesInfo();
  if (!dataset_.series_info(selection_.selector(), &info_).ok()) info_ = SeriesInfo();
}

// The time the selected series have samples in, so a data set that spans months opens on the data.
TimeRange Session::data_extent(const std::string& app, const std::string& type) const {
  QueryOptions options;
  options.want_tree = false;
  options.timeline_points = 4096;
  Selector selector;
  selector.app = app;
  selector.type = type;
  TimeRange extent = span_;
  // Coarse to fine: a data set spanning years gives steps of hours at first; each pass narrows the
  // range to the steps that hold samples, until a step is one block.
  for (int pass = 0; pass < 6; ++pass) {
    QueryResult result;
    if (!dataset_.query(selector, extent.from, extent.until, &result, options).ok()) break;
    const Timeline& tl = result.timeline;
    size_t first = tl.samples.size(), last = 0;
    for (size_t i = 0; i < tl.samples.size(); ++i) {
      if (tl.samples[i] == 0) continue;
      first = std::min(first, i);
      last = i;
    }
    if (first > last || tl.step <= 0) break;
    const TimeRange narrowed{std::max(extent.from, tl.start + static_cast<int64_t>(first) * tl.step),
                             std::min(extent.until, tl.start + static_cast<int64_t>(last + 1) * tl.step)};
    if (!narrowed.valid()) break;
    extent = narrowed;
    if (tl.step <= resolution_) break;
  }
  return extent;
}

void Session::select_app(const std::string& app) {
  selection_.app = app;
  selection_.tags.clear();
  selection_.compare_key.clear();
  selection_.matchers.clear();
  types_ = app.empty() ? std::vector<std::string>() : dataset_.types(app);
  selection_.type = types_.empty() ? std::string(kDefaultProfileType) : types_.front();
  load_lists();
  selection_changed();
  extent_ = span_;
  if (app.empty()) return;
  // Open on the application's own data: ranges fit it (a pair view then splits it again).
  extent_ = data_extent(app, selection_.type);
  selection_.ranges[0] = selection_.ranges[1] = extent_;
  pair_ranges_chosen_ = false;
  if (selection_.pair()) split_range_for_pair();
}

void Session::select_type(const std::string& type) {
  if (type == selection_.type) return;
  selection_.type = type;
  selection_changed();
}

void Session::set_tag_values(const std::string& key, std::vector<std::string> values) {
  if (key == selection_.compare_key) selection_.compare_key.clear();  // choosing its values ends the comparison
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  if (values.empty()) selection_.tags.erase(key);
  else selection_.tags[key] = std::move(values);
  selection_changed();
}

void Session::clear_tags() {
  selection_.tags.clear();
  selection_.compare_key.clear();
  selection_changed();
}

void Session::set_range(int side, TimeRange range) {
  range = clamped(range);
  if (!range.valid() || side < 0 || side > 1) return;
  if (side == 1 && !selection_.pair()) set_view(ViewMode::comparison);
  selection_.ranges[side] = range;
  if (selection_.pair()) pair_ranges_chosen_ = true;
}

void Session::select_all_time(int side) { set_range(side, span_); }

void Session::compare_tag(const std::string& key, const std::string& value) {
  selection_.compare_key = key;
  selection_.compare_value = key.empty() ? std::string() : value;
  if (!key.empty()) {
    selection_.tags.erase(key);  // the key's own choice would leave one side empty
    selection_changed();
    // Both sides over one range: the single view's, or the two halves a pair view split it into.
    if (selection_.pair() && !pair_ranges_chosen_ && selection_.ranges[0].until == selection_.ranges[1].from)
      selection_.ranges[0].until = selection_.ranges[1].until;
    if (!selection_.pair()) selection_.view = ViewMode::diff;
    selection_.ranges[1] = selection_.ranges[0];
    pair_ranges_chosen_ = true;
  }
}

void Session::set_view(ViewMode view) {
  if (selection_.view == view) return;
  const bool was_pair = selection_.pair();
  selection_.view = view;
  if (!was_pair && selection_.pair()) split_range_for_pair();
}

// Until the user picks left and right, a pair view starts from the single view's range cut in two
// halves (whole blocks), as Pyroscope's comparison view does.
void Session::split_range_for_pair() {
  if (pair_ranges_chosen_) return;
  const TimeRange r = selection_.ranges[0];
  if (selection_.comparing_tag()) {  // a tag value against the rest: the same range on both sides
    selection_.ranges[1] = r;
    return;
  }
  const int64_t blocks = (r.until - r.from) / resolution_;
  if (blocks >= 2) {
    const int64_t middle = r.from + blocks / 2 * resolution_;
    selection_.ranges[0] = TimeRange{r.from, middle};
    selection_.ranges[1] = TimeRange{middle, r.until};
  } else {
    selection_.ranges[1] = r;
  }
}

Status Session::select(const Selector& selector, TimeRange range) {
  range = clamped(range);
  if (!range.valid()) return Status(StatusCode::invalid_argument, "empty time range (until <= from)");
  selection_.app = selector.app;
  selection_.type = selector.type;
  selection_.tags.clear();
  selection_.matchers = selector.matchers;
  selection_.ranges[0] = selection_.ranges[1] = range;
  selection_.view = ViewMode::single;
  types_ = selector.app.empty() ? std::vector<std::string>() : dataset_.types(selector.app);
  load_lists();
  selection_changed();
  return Status();
}

// [SECTION] Session: results ========================================================================

const QueryResult& Session::timeline(TimeRange window, size_t points) {
  window = clamped(window);
  const std::string key = selector_text_ + "|" + std::to_string(window.from) + "|" + std::to_string(window.until) +
                          "|" + std::to_string(points);
  if (key == timeline_key_) return timeline_;
  timeline_key_ = key;
  timeline_ = QueryResult();
  if (empty() || !window.valid()) return timeline_;
  QueryOptions options;
  options.timeline_points = points;
  options.want_tree = false;
  const Status status = dataset_.query(selection_.selector(), window.from, window.until, &timeline_, options);
  if (!status.ok()) {
    error_ = "timeline " + selector_text_ + ": " + status.to_string();
    timeline_ = QueryResult();
  }
  return timeline_;
}

std::string Session::trees_key() const {
  std::string key = selector_text_ + "|" + std::to_string(selection_.ranges[0].from) + "|" +
                    std::to_string(selection_.ranges[0].until);
  if (selection_.pair()) {
    key += "|" + std::to_string(selection_.ranges[1].from) + "|" + std::to_string(selection_.ranges[1].until);
    if (selection_.comparing_tag()) key += "|" + selection_.compare_key + "=" + selection_.compare_value;
  }
  return key;
}

std::string Session::view_key() const {
  return trees_key() + "|" + name_of(view_.names) + "|" + name_of(view_.recursion);
}

// The key of the sandwich for this view and function: with the detail refined for them, else the first.
std::string Session::sandwich_key_for(const std::string& base) const {
  char detail[40];
  std::snprintf(detail, sizeof detail, "|%.17g", base == sandwich_base_ ? sandwich_detail_ : kSandwichDetail);
  return base + detail;
}

bool Session::sandwich_stale() const {
  return !empty() && selection_.view == ViewMode::sandwich &&
         sandwich_key_ != sandwich_key_for(view_key() + "|" + view_.function);
}

void Session::refine_sandwich(uint64_t focused_total) {
  if (!sandwich_ || sandwich_->min_total <= 1 || focused_total == 0 || sandwich_->total == 0) return;
  // Finer only when the focused node is 8 times smaller than the detail was made for: a zoom of a
  // few steps does not compute the sandwich again, a deep one does (and a zoom out keeps the detail).
  const double wanted = kSandwichDetail * double(focused_total) / double(sandwich_->total);
  if (wanted * 8 > sandwich_detail_) return;
  sandwich_base_ = view_key() + "|" + view_.function;
  sandwich_detail_ = wanted;
}

unsigned Session::update_trees() {
  if (empty()) return 0;
  unsigned changed = 0;
  const bool pair = selection_.pair();
  const std::string key = trees_key();
  if (key != trees_key_) {
    trees_key_ = key;
    view_key_.clear();
    left_view_.reset();
    right_view_.reset();
    diff_.reset();
    sandwich_.reset();
    left_ = QueryResult();
    right_ = QueryResult();
    QueryOptions options;
    options.timeline_points = 1;  // the timeline comes from its own query
    Status status = dataset_.query(selection_.side_selector(0), selection_.ranges[0].from, selection_.ranges[0].until,
                                   &left_, options);
    if (status.ok() && pair)
      status = dataset_.query(selection_.side_selector(1), selection_.ranges[1].from, selection_.ranges[1].until,
                              &right_, options);
    if (!status.ok()) {
      error_ = "query " + selector_text_ + ": " + status.to_string();
      left_ = QueryResult();
      right_ = QueryResult();
    }
  }

  // The view trees: recursion collapsed, then names shortened and merged, as the view settings say.
  const std::string view_key = this->view_key();
  if (view_key != view_key_) {
    view_key_ = view_key;
    sandwich_key_.clear();
    sandwich_.reset();
    diff_.reset();
    frame_names_ = FrameNames();
    frame_names_.mode_ = view_.names;
    auto make_view = [&](const Tree& tree, std::unique_ptr<Tree>* out) {
      out->reset();
      if (view_.recursion != RecursionMode::keep) {
        *out = std::make_unique<Tree>(collapse_recursion(
            tree, view_.recursion == RecursionMode::direct ? RecursionCollapse::direct : RecursionCollapse::all));
      }
      if (view_.names == NameMode::merged) {
        std::vector<std::vector<uint32_t>> merged_from;
        const Tree& source = *out ? **out : tree;
        auto renamed = std::make_unique<Tree>(with_short_names(source, &merged_from));
        for (uint32_t s = 0; s < merged_from.size(); ++s) {
          std::vector<std::string>& names = frame_names_.merged_[std::string(renamed->symbols().name(s))];
          for (uint32_t full : merged_from[s]) {
            const std::string_view name = source.symbols().name(full);
            if (std::find(names.begin(), names.end(), name) == names.end()) names.emplace_back(name);
          }
        }
        *out = std::move(renamed);
      }
    };
    make_view(left_.tree, &left_view_);
    if (pair) make_view(right_.tree, &right_view_);
    if (pair) diff_ = std::make_unique<DiffTree>(DiffTree::compute(left_view(), right_view()));
    changed |= kTreesChanged;
  }

  // The sandwich of the view's function, in the sandwich view.
  if (selection_.view == ViewMode::sandwich) {
    const std::string base = view_key + "|" + view_.function;
    if (base != sandwich_base_) {
      sandwich_base_ = base;
      sandwich_detail_ = kSandwichDetail;
    }
    const std::string sandwich_key = sandwich_key_for(base);
    if (sandwich_key != sandwich_key_) {
      sandwich_key_ = sandwich_key;
      // The sandwich before is computed over: its millions of nodes' memory is reused, not freed and
      // faulted in again (the graphs drawn from it are laid out again from the new one).
      std::unique_ptr<Sandwich> made = std::move(sandwich_);
      const double start = now_ms();
      if (!view_.function.empty()) {
        if (!made) made = std::make_unique<Sandwich>();
        const Tree& tree = left_view();
        Status status = pyroscope::sandwich(tree, view_.function, made.get(), sandwich_detail_);
        // A function named in full while the frames are short (a link made in another names mode).
        if (status.code() == StatusCode::not_found && view_.names == NameMode::merged)
          status = pyroscope::sandwich(tree, short_function_name(view_.function), made.get(), sandwich_detail_);
        if (status.ok()) sandwich_ = std::move(made);
      }
      sandwich_ms_ = now_ms() - start;
      changed |= kSandwichChanged;
    }
  }
  return changed;
}

DiffScale Session::diff_scale() const {
  DiffScale scale;
  scale.mode = view_.diff_mode;
  if (diff_) {
    scale.left_all = diff_->left_total(Tree::kRoot);
    scale.right_all = diff_->right_total(Tree::kRoot);
  }
  // The ranges as the queries read them: whole blocks.
  auto seconds = [&](const TimeRange& r) {
    return double(std::max<int64_t>(resolution_, ceil_to(r.until, resolution_) - floor_to(r.from, resolution_)));
  };
  scale.left_seconds = seconds(selection_.ranges[0]);
  scale.right_seconds = seconds(selection_.ranges[selection_.pair() ? 1 : 0]);
  return scale;
}

const TagBreakdown& Session::tag_breakdown(TimeRange window, size_t points) {
  window = clamped(window);
  const std::string& tag = view_.breakdown;
  const TimeRange range = selection_.ranges[0];
  const std::string key = selector_text_ + "|" + tag + "|" + std::to_string(range.from) + "|" +
                          std::to_string(range.until) + "|" + std::to_string(window.from) + "|" +
                          std::to_string(window.until) + "|" + std::to_string(points);
  if (key == breakdown_key_) return breakdown_;
  breakdown_key_ = key;
  breakdown_ = TagBreakdown();
  breakdown_.key = tag;
  const auto key_at = std::find(tag_keys_.begin(), tag_keys_.end(), tag);
  if (tag.empty() || empty() || key_at == tag_keys_.end() || !window.valid() || !range.valid()) return breakdown_;
  const double start = now_ms();
  constexpr size_t kLines = 6;  // values drawn as lines of their own; the others are "the rest"
  // The selection without this key's choice (the explorer's rule): every value of it, other keys as chosen.
  Selection base = selection_;
  base.tags.erase(tag);
  const std::vector<std::string>& values = tag_values_[size_t(key_at - tag_keys_.begin())];
  breakdown_.values = values.size();
  QueryOptions whole;
  whole.want_tree = false;
  whole.timeline_points = 1;
  QueryOptions over_window;
  over_window.want_tree = false;
  over_window.timeline_points = points;
  auto sum = [](const QueryResult& r) {
    uint64_t n = 0;
    for (uint64_t v : r.timeline.samples) n += v;
    return n;
  };
  QueryResult all;
  if (dataset_.query(base.selector(), range.from, range.until, &all, whole).ok()) breakdown_.range_samples = sum(all);
  std::vector<std::pair<uint64_t, size_t>> by_samples;  // (samples in the range, value index)
  for (size_t v = 0; v < values.size(); ++v) {
    Selection one = base;
    one.tags[tag] = {values[v]};
    QueryResult r;
    if (dataset_.query(one.selector(), range.from, range.until, &r, whole).ok() && sum(r) > 0)
      by_samples.emplace_back(sum(r), v);
  }
  std::stable_sort(by_samples.begin(), by_samples.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  if (!dataset_.query(base.selector(), window.from, window.until, &all, over_window).ok()) return breakdown_;
  breakdown_.timeline = all.timeline;
  const double range_all = double(std::max<uint64_t>(1, breakdown_.range_samples));
  TagBreakdown::Line rest;
  rest.rest = true;
  rest.points = all.timeline.samples;
  rest.samples = breakdown_.range_samples;
  for (size_t i = 0; i < by_samples.size() && i < kLines; ++i) {
    TagBreakdown::Line line;
    line.value = values[by_samples[i].second];
    line.samples = by_samples[i].first;
    line.share = double(line.samples) / range_all;
    Selection one = base;
    one.tags[tag] = {line.value};
    QueryResult r;
    if (dataset_.query(one.selector(), window.from, window.until, &r, over_window).ok()) line.points = r.timeline.samples;
    line.points.resize(rest.points.size(), 0);
    for (size_t p = 0; p < rest.points.size(); ++p) rest.points[p] -= std::min(rest.points[p], line.points[p]);
    rest.samples -= std::min(rest.samples, line.samples);
    breakdown_.lines.push_back(std::move(line));
  }
  rest.share = double(rest.samples) / range_all;
  if (rest.samples > 0) breakdown_.lines.push_back(std::move(rest));
  breakdown_.ms = now_ms() - start;
  return breakdown_;
}

const std::map<std::string, std::vector<uint64_t>>& Session::tag_value_samples() {
  const std::string key = selector_text_ + "|" + std::to_string(selection_.ranges[0].from) + "|" +
                          std::to_string(selection_.ranges[0].until);
  if (key == tag_samples_key_) return tag_samples_;
  tag_samples_key_ = key;
  tag_samples_.clear();
  if (selection_.app.empty()) return tag_samples_;
  constexpr size_t kMaxValues = 64;  // beyond that the explorer lists values without counts
  QueryOptions options;
  options.want_tree = false;
  options.timeline_points = 1;
  for (size_t k = 0; k < tag_keys_.size(); ++k) {
    const std::string& tag = tag_keys_[k];
    const std::vector<std::string>& values = tag_values_[k];
    if (values.size() > kMaxValues) continue;
    // The other keys' choices stay; this key takes each value in turn.
    Selection each = selection_;
    std::vector<uint64_t>& counts = tag_samples_[tag];
    for (const std::string& value : values) {
      each.tags[tag] = {value};
      QueryResult result;
      uint64_t sum = 0;
      if (dataset_.query(each.selector(), selection_.ranges[0].from, selection_.ranges[0].until, &result, options).ok())
        for (uint64_t s : result.timeline.samples) sum += s;
      counts.push_back(sum);
    }
  }
  return tag_samples_;
}

// [SECTION] Session: settings =======================================================================

namespace {

bool is_data_setting(const std::string& key) {
  return key == "app" || key == "type" || key == "tags" || key == "query" || key == "from" || key == "until" ||
         key == "right_from" || key == "right_until" || key == "compare";
}

bool parse_flag(const std::string& value, bool* out) {
  if (value == "1" || value == "true" || value == "on") *out = true;
  else if (value == "0" || value == "false" || value == "off" || value.empty()) *out = false;
  else return false;
  return true;
}

// The focused frame path in a URL: frames joined by ';' (folded text's separator).
std::vector<std::string> split_path(const std::string& text) {
  std::vector<std::string> frames;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t semi = text.find(';', pos);
    if (semi == std::string::npos) semi = text.size();
    frames.push_back(text.substr(pos, semi - pos));
    pos = semi + 1;
  }
  return frames;
}

// "k=v,k2=v2" -> key -> values; a key may repeat (several values).
Status parse_tag_list(const std::string& text, std::map<std::string, std::vector<std::string>>* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string pair = text.substr(pos, comma - pos);
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status(StatusCode::invalid_argument, "tags '" + text + "': expected key=value pairs separated by commas");
    (*out)[pair.substr(0, eq)].push_back(pair.substr(eq + 1));
    pos = comma + 1;
  }
  return Status();
}

}  // namespace

Status Session::apply_setting(const std::string& key, const std::string& value) {
  if (key == "view") {
    // single = both; flamegraph, table and both are the single view's panels (Pyroscope's names).
    Panels panels;
    ViewMode view;
    if (value == "single") {
      set_view(ViewMode::single);
      view_.panels = Panels::both;
    } else if (parse_name(value, &panels)) {
      set_view(ViewMode::single);
      view_.panels = panels;
    } else if (parse_name(value, &view) && view != ViewMode::single) {
      set_view(view);
    } else {
      return Status(StatusCode::invalid_argument,
                    "view must be flamegraph, table, both, comparison, diff or sandwich, not '" + value + "'");
    }
    return Status();
  }
  if (key == "search") {
    view_.search = value;
    return Status();
  }
  if (key == "theme") {
    if (!parse_name(value, &view_.theme))
      return Status(StatusCode::invalid_argument, "theme must be " + choices(Theme()) + ", not '" + value + "'");
    return Status();
  }
  if (key == "orientation") {
    if (!parse_name(value, &view_.orientation))
      return Status(StatusCode::invalid_argument,
                    "orientation must be " + choices(Orientation()) + ", not '" + value + "'");
    return Status();
  }
  if (key == "colour" || key == "color") {
    if (!parse_name(value, &view_.colour))
      return Status(StatusCode::invalid_argument, "colour must be " + choices(ColourMode()) + ", not '" + value + "'");
    return Status();
  }
  if (key == "embed") {
    view_.embed = value == "1" || value == "true";
    return Status();
  }
  if (key == "function") {
    view_.function = value;
    return Status();
  }
  if (key == "focus") {
    view_.focus = split_path(value);
    return Status();
  }
  if (key == "breakdown") {
    view_.breakdown = value;
    return Status();
  }
  if (key == "focus_matches") {
    if (!parse_flag(value, &view_.focus_matches))
      return Status(StatusCode::invalid_argument, "focus_matches must be 1 or 0, not '" + value + "'");
    return Status();
  }
  if (key == "names") {
    if (!parse_name(value, &view_.names))
      return Status(StatusCode::invalid_argument, "names must be " + choices(NameMode()) + ", not '" + value + "'");
    return Status();
  }
  if (key == "recursion") {
    if (!parse_name(value, &view_.recursion))
      return Status(StatusCode::invalid_argument,
                    "recursion must be " + choices(RecursionMode()) + ", not '" + value + "'");
    return Status();
  }
  if (key == "diff_mode") {
    if (!parse_name(value, &view_.diff_mode))
      return Status(StatusCode::invalid_argument, "diff_mode must be " + choices(DiffMode()) + ", not '" + value + "'");
    return Status();
  }
  if (!is_data_setting(key)) {
    return Status(StatusCode::invalid_argument,
                  "unknown setting '" + key + "' (known: file, view, query, app, type, tags, compare, from, until, "
                  "right_from, right_until, function, search, focus_matches, names, recursion, diff_mode, breakdown, "
                  "focus, theme, orientation, colour, embed)");
  }
  std::string stored = value;
  if (key == "query") {
    // app.type{key="value",...}: the application, its type and the tag values to select.
    Selector selector;
    const Status parsed = Selector::parse(value, &selector);
    if (!parsed.ok()) return Status(StatusCode::invalid_argument, "query '" + value + "': " + parsed.message());
    if (selector.app.empty())
      return Status(StatusCode::invalid_argument, "query '" + value + "' names no application (app{...})");
    std::string tags;
    for (const Matcher& m : selector.matchers) {
      if (m.op != Matcher::Op::equal)
        return Status(StatusCode::invalid_argument, "query '" + value + "': the viewer selects tag values with " +
                                                        m.key + "=\"value\"; other matchers are not supported");
      if (m.value.find(',') != std::string::npos)
        return Status(StatusCode::invalid_argument, "query '" + value + "': tag value '" + m.value + "' has a comma");
      tags += (tags.empty() ? "" : ",") + m.key + "=" + m.value;
    }
    pending_["app"] = selector.app;
    pending_["type"] = selector.type;
    pending_["tags"] = tags;
  } else if (key == "tags") {
    std::map<std::string, std::vector<std::string>> parsed;
    const Status st = parse_tag_list(value, &parsed);
    if (!st.ok()) return st;
    pending_[key] = value;
  } else if (key == "compare") {
    if (!value.empty() && (value.find('=') == std::string::npos || value[0] == '='))
      return Status(StatusCode::invalid_argument, "compare '" + value + "': expected key=value (a tag value against the rest)");
    pending_[key] = value;
  } else if (key == "type") {
    if (!is_valid_profile_type(value))
      return Status(StatusCode::invalid_argument, "type '" + value + "' is not a profile type name (letters, digits, _)");
    pending_[key] = value;
  } else if (key == "app") {
    // Another application once data is shown: its type and tags start afresh (in a URL, app, type
    // and tags come together and all apply).
    if (!empty() && value != selection_.app) {
      pending_.erase("type");
      pending_.erase("tags");
    }
    pending_[key] = value;
  } else {
    int64_t t;
    const Status parsed = parse_time(value, now_unix(), &t);
    if (!parsed.ok()) return Status(StatusCode::invalid_argument, key + ": " + parsed.message());
    pending_[key] = std::to_string(t);
  }
  if (!empty()) apply_pending_settings();
  return Status();
}

// Applies the settings that need data (app, type, tags, from/until of both ranges).
void Session::apply_pending_settings() {
  auto it = pending_.find("app");
  if (it != pending_.end()) {
    if (std::find(apps_.begin(), apps_.end(), it->second) != apps_.end()) {
      if (selection_.app != it->second) select_app(it->second);
    } else {
      std::string known;
      for (const std::string& app : apps_) known += (known.empty() ? "" : ", ") + app;
      error_ = "no application '" + it->second + "' in the data (it has: " + known + ")";
    }
  }
  it = pending_.find("type");
  if (it != pending_.end() && !selection_.app.empty()) {
    if (std::find(types_.begin(), types_.end(), it->second) != types_.end()) {
      select_type(it->second);
    } else {
      std::string known;
      for (const std::string& t : types_) known += (known.empty() ? "" : ", ") + t;
      error_ = "application '" + selection_.app + "' has no profile type '" + it->second + "' (it has: " + known + ")";
    }
  }
  it = pending_.find("tags");
  if (it != pending_.end()) {
    std::map<std::string, std::vector<std::string>> tags;
    if (parse_tag_list(it->second, &tags).ok()) {
      selection_.tags.clear();
      for (auto& [key, values] : tags) {
        std::sort(values.begin(), values.end());
        selection_.tags[key] = values;
      }
      selection_changed();
    }
  }
  const char* names[4] = {"from", "until", "right_from", "right_until"};
  int64_t* targets[4] = {&selection_.ranges[0].from, &selection_.ranges[0].until, &selection_.ranges[1].from,
                         &selection_.ranges[1].until};
  for (int i = 0; i < 4; ++i) {
    it = pending_.find(names[i]);
    if (it != pending_.end()) *targets[i] = std::strtoll(it->second.c_str(), nullptr, 10);
  }
  if (pending_.count("right_from") || pending_.count("right_until")) pair_ranges_chosen_ = true;
  for (TimeRange& r : selection_.ranges) {
    r = clamped(r);
    if (!r.valid()) r = span_;
  }
  it = pending_.find("compare");
  if (it != pending_.end()) {
    const size_t eq = it->second.find('=');
    const bool right_given = pending_.count("right_from") || pending_.count("right_until");
    const TimeRange right = selection_.ranges[1];
    if (eq == std::string::npos) compare_tag("", "");
    else compare_tag(it->second.substr(0, eq), it->second.substr(eq + 1));
    if (right_given) selection_.ranges[1] = right;  // a link's own right range wins
    pending_.erase(it);  // once: choosing other views or tags later is not undone by it
  }
}

std::vector<std::pair<std::string, std::string>> Session::settings() const {
  std::vector<std::pair<std::string, std::string>> out;
  auto add = [&](const char* key, std::string value) { out.emplace_back(key, std::move(value)); };
  if (!selection_.app.empty()) add("app", selection_.app);
  if (!selection_.app.empty() && selection_.type != kDefaultProfileType) add("type", selection_.type);
  std::string tags;
  bool representable = true;  // the tags setting separates values by commas
  for (const auto& [key, values] : selection_.tags)
    for (const std::string& v : values) {
      representable = representable && v.find(',') == std::string::npos && key.find_first_of(",=") == std::string::npos;
      tags += (tags.empty() ? "" : ",") + key + "=" + v;
    }
  if (representable && !tags.empty()) add("tags", tags);
  if (selection_.pair() && selection_.comparing_tag())
    add("compare", selection_.compare_key + "=" + selection_.compare_value);
  add("from", std::to_string(selection_.ranges[0].from));
  add("until", std::to_string(selection_.ranges[0].until));
  add("view", selection_.view == ViewMode::single ? name_of(view_.panels) : name_of(selection_.view));
  if (selection_.pair()) {
    add("right_from", std::to_string(selection_.ranges[1].from));
    add("right_until", std::to_string(selection_.ranges[1].until));
  }
  if (!view_.function.empty()) add("function", view_.function);
  if (!view_.search.empty()) add("search", view_.search);
  if (view_.focus_matches) add("focus_matches", "1");
  if (view_.names != NameMode::full) add("names", name_of(view_.names));
  if (view_.recursion != RecursionMode::keep) add("recursion", name_of(view_.recursion));
  if (view_.diff_mode != DiffMode::share) add("diff_mode", name_of(view_.diff_mode));
  if (!view_.breakdown.empty()) add("breakdown", view_.breakdown);
  if (!view_.focus.empty()) {
    std::string path;
    for (const std::string& frame : view_.focus) path += (path.empty() ? "" : ";") + frame;
    add("focus", path);
  }
  add("theme", name_of(view_.theme));
  add("orientation", name_of(view_.orientation));
  add("colour", name_of(view_.colour));
  return out;
}

std::string Session::settings_json() const {
  json::ObjectWriter j;
  for (const auto& [key, value] : settings()) j.add(key, value);
  return j.finish();
}

std::string Session::settings_query() const {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const auto& [key, value] : settings()) {
    out += (out.empty() ? "" : "&") + key + "=";
    for (unsigned char c : value) {
      const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                         std::strchr("-_.~,:()", c) != nullptr;
      if (plain && c != 0) {
        out.push_back(static_cast<char>(c));
      } else {
        out.push_back('%');
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
      }
    }
  }
  return out;
}

// [SECTION] Session: exports ========================================================================

std::string Session::file_name(const char* extension) const {
  const std::vector<TimeRange> ranges = selection_.joined_ranges();
  const int64_t from = ranges.empty() ? selection_.ranges[0].from : ranges.front().from;
  const int64_t until = ranges.empty() ? selection_.ranges[0].until : ranges.back().until;
  const std::string app = selection_.app.empty() ? std::string("profile") : selection_.app;
  const std::string type = selection_.type.empty() || selection_.type == kDefaultProfileType ? "" : "." + selection_.type;
  return app + type + "-" + std::to_string(from) + "-" + std::to_string(until) + extension;
}

Status Session::slice(std::string* pyro, SliceStats* stats) const {
  SliceStats counted;
  if (stats) *stats = counted;
  if (empty()) return Status(StatusCode::invalid_argument, "nothing is open");
  WriterOptions options;
  options.resolution_seconds = resolution_;
  if (dataset_.file_count() > 0) options.multiplier = dataset_.file(0).info().multiplier;
  Writer writer;
  Status status = writer.open_memory(options);
  if (!status.ok()) return status;
  const Selector selector = selection_.selector();
  for (const TimeRange& r : selection_.joined_ranges()) {
    SliceStats part;
    status = dataset_.slice(selector, r.from, r.until, &writer, &part);
    counted.series = std::max(counted.series, part.series);  // a series in both ranges counts once
    counted.blocks += part.blocks;
    counted.samples += part.samples;
    if (!status.ok()) break;
  }
  if (stats) *stats = counted;
  if (!status.ok()) return status;
  if (counted.blocks == 0)
    return Status(StatusCode::not_found, "no samples of " + selector_text_ + " in the selected range");
  *pyro = writer.take_bytes();
  return Status();
}

std::vector<Session::NamedText> Session::folded() const {
  std::vector<NamedText> out;
  auto add = [&](const Tree& tree, const TimeRange& range, const char* side) {
    if (tree.total() == 0) return;
    const std::string app = selection_.app.empty() ? std::string("profile") : selection_.app;
    out.push_back({app + "-" + std::to_string(range.from) + "-" + std::to_string(range.until) + side + ".folded",
                   tree.to_folded()});
  };
  if (!selection_.pair()) {
    add(left_.tree, selection_.ranges[0], "");
  } else {
    add(left_.tree, selection_.ranges[0], "-left");
    add(right_.tree, selection_.ranges[1], "-right");
  }
  return out;
}

Status Session::export_profile(Format format, NamedText* out) const {
  if (format != Format::pprof && format != Format::speedscope)
    return Status(StatusCode::invalid_argument, std::string("export to ") + format_name(format) +
                                                    " is not supported (pprof, speedscope; folded: folded())");
  if (left_.tree.total() == 0)
    return Status(StatusCode::not_found, "no samples of " + selector_text_ + " in the selected range");
  ExportProfile profile;
  profile.type = left_.type.empty() ? selection_.type : left_.type;
  profile.info = left_.info;
  profile.tree = &left_.tree;
  ExportOptions options;
  options.from = selection_.ranges[0].from;
  options.until = selection_.ranges[0].until;
  options.deflate = deflate_;
  options.name = selection_.app.empty() ? std::string("profile") : selection_.app;
  const std::string base = file_name("");
  const Status status = format == Format::pprof ? export_pprof({profile}, options, &out->text)
                                                : export_speedscope({profile}, options, &out->text);
  if (!status.ok()) return status;
  // gzip needs zlib or a deflate hook; without either the protobuf is written plain.
  const bool gzipped = format == Format::pprof && out->text.size() >= 2 && uint8_t(out->text[0]) == 0x1f &&
                       uint8_t(out->text[1]) == 0x8b;
  out->name = base + (format == Format::speedscope ? ".speedscope.json" : gzipped ? ".pb.gz" : ".pb");
  return Status();
}

Status Session::share_page(const share::PageParts& parts, std::string* html, SliceStats* stats) const {
  std::string pyro;
  const Status sliced = slice(&pyro, stats);
  if (!sliced.ok()) return sliced;
  std::string error;
  const std::string name = (selection_.app.empty() ? std::string("profile") : selection_.app) + ".pyro";
  if (!share::make_page(parts, name, settings_json(), pyro, html, &error))
    return Status(StatusCode::invalid_argument, error);
  return Status();
}

}  // namespace pyroscope::session
