#include "viewer.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <sys/stat.h>
#include <unistd.h>

#include "imgui.h"
#include "imgui_internal.h"  // ImGuiWindow::Hidden: widgets of windows not shown yet are not reported
#include "json.hpp"
#include "share_page.hpp"

namespace pyroscope::viewer {

// [SECTION] Small helpers ===========================================================================

void FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

namespace {

std::vector<WidgetRect>* g_widgets = nullptr;

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (size_t i = 0; i < n; ++i) {
    char a = s[s.size() - n + i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (a != suffix[i]) return false;
  }
  return true;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of("/\\");
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Folded text has no application name: use the file name without extension, reduced to the
// characters a selector accepts unquoted.
std::string app_name_for(const std::string& file_name) {
  std::string stem = base_name(file_name);
  const size_t dot = stem.find('.');
  if (dot != std::string::npos && dot > 0) stem = stem.substr(0, dot);
  std::string out;
  for (char c : stem) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    out.push_back(ok ? c : '_');
  }
  return out.empty() ? std::string("folded") : out;
}

// Folded text by extension; otherwise by content: printable text whose first line ends in a count.
bool looks_folded(const std::string& name, const uint8_t* bytes, size_t size) {
  if (ends_with(name, ".folded") || ends_with(name, ".txt") || ends_with(name, ".collapsed") ||
      ends_with(name, ".stacks")) {
    return true;
  }
  if (ends_with(name, ".pyro")) return false;
  if (!bytes || size == 0) return false;
  const size_t n = std::min<size_t>(size, 4096);
  size_t line_end = n;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = bytes[i];
    if (c == '\n') {
      line_end = i;
      break;
    }
    if (c < 0x09 || (c > 0x0d && c < 0x20)) return false;  // binary
  }
  size_t i = line_end;
  while (i > 0 && (bytes[i - 1] == '\r' || bytes[i - 1] == ' ')) --i;
  const size_t digits_end = i;
  while (i > 0 && bytes[i - 1] >= '0' && bytes[i - 1] <= '9') --i;
  return digits_end > i && i > 0 && bytes[i - 1] == ' ';
}

// Minimal JSON writer: enough for the status object.
class Json {
 public:
  Json& begin_object() { comma(); out_ += '{'; first_ = true; return *this; }
  Json& end_object() { out_ += '}'; first_ = false; return *this; }
  Json& begin_array() { comma(); out_ += '['; first_ = true; return *this; }
  Json& end_array() { out_ += ']'; first_ = false; return *this; }
  Json& key(std::string_view k) {
    comma();
    out_ += '"';
    out_ += json::escape(k);
    out_ += "\":";
    first_ = true;
    return *this;
  }
  Json& str(std::string_view v) { comma(); out_ += '"'; out_ += json::escape(v); out_ += '"'; return *this; }
  Json& num(double v) {
    comma();
    char buf[40];
    if (!std::isfinite(v)) v = 0;
    std::snprintf(buf, sizeof buf, "%.10g", v);
    out_ += buf;
    return *this;
  }
  Json& integer(int64_t v) { comma(); out_ += std::to_string(v); return *this; }
  Json& boolean(bool v) { comma(); out_ += v ? "true" : "false"; return *this; }
  Json& null() { comma(); out_ += "null"; return *this; }
  const std::string& text() const { return out_; }

 private:
  void comma() {
    if (!first_) out_ += ',';
    first_ = false;
  }
  std::string out_;
  bool first_ = true;
};

std::string quote_value(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string regex_escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (std::strchr(".[]{}()*+?|^$\\", c)) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Times the viewer holds: the years 0000 to 9999, as it prints them. Times from settings (a URL, the
// command line) and from files (their span, a folded file's date) are clamped to these, so that no
// difference of two times, sum with a resolution or date conversion can overflow whatever they say.
constexpr int64_t kEarliestTime = -62167219200;  // 0000-01-01 00:00:00 UTC
constexpr int64_t kLatestTime = 253402300800;    // 10000-01-01 00:00:00 UTC
int64_t clamp_time(int64_t t) { return std::clamp(t, kEarliestTime, kLatestTime); }

std::string format_time(int64_t t, bool with_date) {
  const time_t tt = static_cast<time_t>(t);
  struct tm tm_utc;
  if (!gmtime_r(&tt, &tm_utc)) return std::to_string(t);
  char buf[40];
  if (with_date) {
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm_utc);
  } else {
    std::strftime(buf, sizeof buf, "%H:%M:%S", &tm_utc);
  }
  return buf;
}

std::string format_duration(int64_t seconds) {
  char buf[40];
  if (seconds < 120) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(seconds));
  } else if (seconds < 7200) {
    std::snprintf(buf, sizeof buf, "%.1f min", seconds / 60.0);
  } else if (seconds < 172800) {
    std::snprintf(buf, sizeof buf, "%.1f h", seconds / 3600.0);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f days", seconds / 86400.0);
  }
  return buf;
}

std::string format_range(const TimeRange& r) {
  const bool same_day = r.from / 86400 == (r.until - 1) / 86400;
  return format_time(r.from, true) + " - " + format_time(r.until, !same_day) + " (" +
         format_duration(r.until - r.from) + ")";
}

int64_t floor_to(int64_t t, int64_t step) {
  int64_t q = t / step;
  if (t % step != 0 && t < 0) --q;
  return q * step;
}
int64_t ceil_to(int64_t t, int64_t step) { return -floor_to(-t, step); }

const ImU32 kLeftColour = IM_COL32(232, 110, 160, 255);   // pink
const ImU32 kRightColour = IM_COL32(84, 150, 240, 255);   // blue

ImU32 with_alpha(ImU32 c, int alpha) { return (c & ~IM_COL32_A_MASK) | (static_cast<ImU32>(alpha) << IM_COL32_A_SHIFT); }

FlamePalette palette_for(Theme theme) {
  FlamePalette p;
  if (theme == Theme::dark) {
    p.dark = true;
    p.background = IM_COL32(28, 29, 34, 255);
    p.text_on_block = IM_COL32(16, 16, 16, 255);
    p.merged_block = IM_COL32(128, 128, 136, 255);
    p.diff_neutral = IM_COL32(168, 168, 172, 255);
    p.search_match = IM_COL32(70, 160, 255, 255);
  } else {
    p.dark = false;
    p.background = IM_COL32(252, 252, 252, 255);
    p.text_on_block = IM_COL32(16, 16, 16, 255);
    p.merged_block = IM_COL32(176, 176, 184, 255);
    p.diff_neutral = IM_COL32(206, 206, 210, 255);
    p.search_match = IM_COL32(30, 120, 230, 255);
  }
  return p;
}

const char* view_name(ViewMode v) {
  switch (v) {
    case ViewMode::single: return "single";
    case ViewMode::comparison: return "comparison";
    case ViewMode::diff: return "diff";
  }
  return "single";
}

void add_log(ViewerState& state, std::string line) {
  state.log.push_back(std::move(line));
  if (state.log.size() > 20) state.log.erase(state.log.begin());
}

}  // namespace

void record_item(std::string_view name) {
  // A popup's first frame lays it out off screen (hidden); its items are reported once it shows.
  if (!g_widgets || ImGui::GetCurrentWindowRead()->Hidden) return;
  const ImVec2 a = ImGui::GetItemRectMin(), b = ImGui::GetItemRectMax();
  g_widgets->push_back(WidgetRect{std::string(name), a.x, a.y, b.x, b.y});
}

// [SECTION] Loading =================================================================================

namespace {

// Reads a folded file in pieces into the parser.
Status parse_folded_file(const std::string& path, FoldedParser* parser) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status(StatusCode::io_error, "cannot open " + path + ": " + std::strerror(errno));
  std::vector<char> buffer(8u << 20);
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0 && parser->status().ok()) {
    parser->add(buffer.data(), n);
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status(StatusCode::io_error, "cannot read " + path);
  return parser->finish();
}

void reset_selection(ViewerState& state);

}  // namespace

FoldedParser::FoldedParser() : tree_(std::make_unique<Tree>()) {}

void FoldedParser::feed(std::string_view text) {
  Status status = tree_->add_folded(text);
  if (!status.ok()) {
    // add_folded counts lines from the start of this piece: make it the line of the whole file.
    std::string message = status.message();
    size_t number_end = 0;
    if (message.rfind("line ", 0) == 0 && (number_end = message.find(':')) != std::string::npos) {
      const unsigned long long line = std::strtoull(message.c_str() + 5, nullptr, 10);
      message = "line " + std::to_string(line + lines_done_) + message.substr(number_end);
    }
    status_ = Status(status.code(), message);
    return;
  }
  lines_done_ += static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

void FoldedParser::add(const char* data, size_t size) {
  if (!status_.ok() || size == 0) return;
  const char* last_newline = nullptr;
  for (const char* p = data + size; p > data;) {
    if (*--p == '\n') {
      last_newline = p;
      break;
    }
  }
  if (!last_newline) {
    carry_.append(data, size);
    return;
  }
  const char* rest = data;
  if (!carry_.empty()) {
    // Finish the line the previous piece cut.
    const char* first_newline = static_cast<const char*>(std::memchr(data, '\n', size));
    carry_.append(data, static_cast<size_t>(first_newline + 1 - data));
    feed(carry_);
    carry_.clear();
    rest = first_newline + 1;
  }
  if (status_.ok() && rest <= last_newline) feed(std::string_view(rest, static_cast<size_t>(last_newline + 1 - rest)));
  carry_.assign(last_newline + 1, static_cast<size_t>(data + size - (last_newline + 1)));
}

Status FoldedParser::finish() {
  if (status_.ok() && !carry_.empty()) feed(carry_);
  carry_.clear();
  carry_.shrink_to_fit();
  return status_;
}

void open_files(ViewerState& state, std::vector<LoadInput> inputs) {
  for (LoadInput& in : state.pending) std::free(in.bytes);
  state.pending = std::move(inputs);
  state.pending_announced = false;
  request_redraw(state);
}

void load_pending(ViewerState& state) {
  std::vector<LoadInput> inputs = std::move(state.pending);
  state.pending.clear();
  state.pending_announced = false;
  if (inputs.empty()) return;
  const double start = now_ms();
  Dataset dataset;
  std::vector<FoldedSource> folded;
  std::vector<LoadedFile> files;
  std::vector<std::unique_ptr<uint8_t, FreeDeleter>> buffers;
  std::vector<std::string> errors;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  for (LoadInput& in : inputs) {
    std::unique_ptr<uint8_t, FreeDeleter> owned(in.bytes);
    LoadedFile loaded;
    loaded.name = in.name.empty() ? base_name(in.path) : in.name;
    File file;
    Status status;
    const bool is_folded = in.folded != nullptr || looks_folded(loaded.name, in.bytes, in.size);
    int64_t at = in.modified_unix > 0 ? in.modified_unix : now;
    std::unique_ptr<Tree> tree;
    if (in.folded) {
      loaded.bytes = in.size;
      status = in.folded->finish();
      tree = in.folded->take_tree();
    } else if (!in.path.empty()) {
      struct stat st;
      if (::stat(in.path.c_str(), &st) == 0) {
        loaded.bytes = static_cast<uint64_t>(st.st_size);
        if (in.modified_unix <= 0) at = static_cast<int64_t>(st.st_mtime);
      }
      if (is_folded) {
        FoldedParser parser;
        status = parse_folded_file(in.path, &parser);
        tree = parser.take_tree();
      } else {
        status = file.open_path(in.path);
      }
    } else {
      loaded.bytes = in.size;
      if (is_folded) {
        FoldedParser parser;
        parser.add(reinterpret_cast<const char*>(in.bytes), in.size);
        status = parser.finish();
        tree = parser.take_tree();
        owned.reset();  // the text is not needed any more
      } else {
        status = file.open_span(ByteSpan{in.bytes, in.size});
        if (status.ok()) buffers.push_back(std::move(owned));
      }
    }
    if (status.ok() && is_folded && tree->total() == 0) {
      status = Status(StatusCode::parse_error, "no samples in the folded text");
    }
    if (!status.ok()) {
      errors.push_back(loaded.name + ": " + status.to_string());
      continue;
    }
    loaded.folded = is_folded;
    if (is_folded) {
      loaded.samples = tree->total();
      FoldedSource source;
      source.app = app_name_for(loaded.name);
      // Two folded files with the same name stay apart.
      for (int n = 2; std::any_of(folded.begin(), folded.end(), [&](const FoldedSource& f) { return f.app == source.app; }); ++n) {
        source.app = app_name_for(loaded.name) + "-" + std::to_string(n);
      }
      source.time = floor_to(clamp_time(at), kDefaultResolutionSeconds);
      // Numbered in drawing order once: the flame layout then takes two sequential passes, and the
      // parse's lookup index (as big as the nodes) is freed.
      tree->renumber_in_name_preorder();
      source.tree = std::move(tree);
      folded.push_back(std::move(source));
    } else {
      dataset.add(std::move(file));
    }
    files.push_back(std::move(loaded));
  }
  if (!folded.empty() && dataset.file_count() > 0) {
    const std::vector<std::string> pyro_apps = dataset.apps();
    for (FoldedSource& f : folded) {
      if (std::binary_search(pyro_apps.begin(), pyro_apps.end(), f.app)) f.app += "-folded";
    }
  }
  std::string error;
  for (const std::string& e : errors) error += (error.empty() ? "" : "\n") + e;
  state.last_load_ms = now_ms() - start;
  if (files.empty()) {
    state.error = error.empty() ? std::string("nothing to open") : error;
    request_redraw(state);
    return;  // keep what was shown before
  }
  state.flame_left.clear();  // the views point into the old trees
  state.flame_right.clear();
  state.flame_diff.clear();
  state.left_tree = state.right_tree = nullptr;
  state.diff.reset();
  state.dataset = std::move(dataset);  // the old data set lets go of its spans first...
  state.buffers = std::move(buffers);  // ...then the old buffers are freed
  state.folded = std::move(folded);
  state.files = std::move(files);
  state.error = state.settings_error + (state.settings_error.empty() || error.empty() ? "" : "\n") + error;
  char line[160];
  std::snprintf(line, sizeof line, "opened %zu file(s) in %.0f ms", state.files.size(), state.last_load_ms);
  add_log(state, line);
  reset_selection(state);
  request_redraw(state);
}

// [SECTION] Selection, queries and derived data =====================================================

namespace {

const FoldedSource* find_folded(const ViewerState& state, const std::string& app) {
  for (const FoldedSource& f : state.folded) {
    if (f.app == app) return &f;
  }
  return nullptr;
}

void rebuild_selector(ViewerState& state) {
  std::string s = state.app + "{";
  bool first = true;
  for (const auto& [key, values] : state.selected_tags) {
    if (values.empty()) continue;
    if (!first) s += ",";
    first = false;
    if (values.size() == 1) {
      s += key + "=" + quote_value(values[0]);
    } else {
      std::string alternatives;
      for (const std::string& v : values) alternatives += (alternatives.empty() ? "" : "|") + regex_escape(v);
      s += key + "=~" + quote_value(alternatives);
    }
  }
  s += "}";
  state.selector = s;
}

void load_tags(ViewerState& state) {
  state.tag_keys.clear();
  if (!find_folded(state, state.app)) state.tag_keys = state.dataset.tag_keys(state.app);  // folded: no tags
  state.tag_values.clear();
  for (const std::string& key : state.tag_keys) state.tag_values.push_back(state.dataset.tag_values(state.app, key));
  state.tag_value_samples.clear();
  state.tag_samples_key.clear();
}

void split_range_for_pair(ViewerState& state);

// The time the application has samples in, so a data set that spans months still opens on the data.
TimeRange data_extent(const ViewerState& state, const std::string& app) {
  if (const FoldedSource* f = find_folded(state, app)) return TimeRange{f->time, f->time + state.resolution};
  QueryOptions options;
  options.want_tree = false;
  options.timeline_points = 4096;
  TimeRange extent{state.span_from, state.span_until};
  // Coarse to fine: a data set spanning years gives steps of hours at first; each pass narrows the range
  // to the steps that hold samples, until a step is one block.
  for (int pass = 0; pass < 6; ++pass) {
    QueryResult result;
    if (!state.dataset.query(app + "{}", extent.from, extent.until, &result, options).ok()) break;
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
    if (tl.step <= state.resolution) break;
  }
  return extent;
}

void select_app(ViewerState& state, const std::string& app) {
  state.app = app;
  state.selected_tags.clear();
  load_tags(state);
  rebuild_selector(state);
  if (app.empty()) return;
  // Open on the application's own data: view and ranges fit it (a comparison then splits it again).
  const TimeRange extent = data_extent(state, app);
  state.timeline_view = extent;
  state.ranges[0] = extent;
  state.ranges[1] = extent;
  state.pair_ranges_chosen = false;
  if (state.view != ViewMode::single) split_range_for_pair(state);
}

bool parse_int64(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (!end || *end != '\0') return false;
  *out = v;
  return true;
}

// Unix seconds, or a time relative to now as Grafana and Pyroscope write it: now, now-90s, now-30m,
// now-1h, now-7d, now-2w.
bool parse_time_setting(const std::string& text, int64_t now, int64_t* out) {
  if (parse_int64(text, out)) return true;
  if (text.compare(0, 3, "now") != 0) return false;
  if (text.size() == 3) {
    *out = now;
    return true;
  }
  if (text[3] != '-' || text.size() < 6) return false;
  int64_t amount = 0;
  if (!parse_int64(text.substr(4, text.size() - 5), &amount) || amount < 0) return false;
  int64_t unit = 0;
  switch (text.back()) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    case 'w': unit = 7 * 86400; break;
    default: return false;
  }
  if (amount > now / unit) return false;
  *out = now - amount * unit;
  return true;
}

// Applies the settings that need a loaded data set (app, tags, from/until of both ranges).
void apply_requested(ViewerState& state) {
  auto it = state.requested.find("app");
  if (it != state.requested.end()) {
    if (std::find(state.apps.begin(), state.apps.end(), it->second) != state.apps.end()) {
      select_app(state, it->second);
    } else {
      std::string known;
      for (const std::string& app : state.apps) known += (known.empty() ? "" : ", ") + app;
      state.error = "no application '" + it->second + "' in the data (it has: " + known + ")";
    }
  }
  it = state.requested.find("tags");
  if (it != state.requested.end()) {
    state.selected_tags.clear();
    size_t pos = 0;
    const std::string& text = it->second;
    while (pos < text.size()) {
      size_t comma = text.find(',', pos);
      if (comma == std::string::npos) comma = text.size();
      const std::string pair = text.substr(pos, comma - pos);
      const size_t eq = pair.find('=');
      if (eq != std::string::npos) state.selected_tags[pair.substr(0, eq)].push_back(pair.substr(eq + 1));
      pos = comma + 1;
    }
    rebuild_selector(state);
  }
  int64_t v;
  const char* names[4] = {"from", "until", "right_from", "right_until"};
  int64_t* targets[4] = {&state.ranges[0].from, &state.ranges[0].until, &state.ranges[1].from, &state.ranges[1].until};
  for (int i = 0; i < 4; ++i) {
    it = state.requested.find(names[i]);
    if (it != state.requested.end() && parse_int64(it->second, &v)) *targets[i] = clamp_time(v);
  }
  for (TimeRange& r : state.ranges) {
    if (!r.valid()) r = TimeRange{state.span_from, state.span_until};
  }
}

// Until the user picks left and right, a comparison starts from the single view's range cut in two
// halves (whole blocks), as Pyroscope's comparison view does.
void split_range_for_pair(ViewerState& state) {
  if (state.pair_ranges_chosen) return;
  const TimeRange r = state.ranges[0];
  const int64_t blocks = (r.until - r.from) / state.resolution;
  if (blocks >= 2) {
    const int64_t middle = r.from + blocks / 2 * state.resolution;
    state.ranges[0] = TimeRange{r.from, middle};
    state.ranges[1] = TimeRange{middle, r.until};
  } else {
    state.ranges[1] = r;
  }
}

void reset_selection(ViewerState& state) {
  state.apps = state.dataset.apps();
  for (const FoldedSource& f : state.folded) state.apps.push_back(f.app);
  std::sort(state.apps.begin(), state.apps.end());
  const bool have_pyro = state.dataset.file_count() > 0;
  state.resolution = have_pyro ? std::max<int64_t>(1, state.dataset.resolution_seconds()) : kDefaultResolutionSeconds;
  if (have_pyro) {
    state.dataset.time_span(&state.span_from, &state.span_until);
  } else if (!state.folded.empty()) {
    state.span_from = state.folded.front().time;
    state.span_until = state.span_from;
  }
  for (const FoldedSource& f : state.folded) {
    state.span_from = std::min(state.span_from, f.time);
    state.span_until = std::max(state.span_until, f.time + state.resolution);
  }
  state.span_from = clamp_time(state.span_from);
  state.span_until = clamp_time(state.span_until);
  if (state.span_until <= state.span_from) state.span_until = state.span_from + state.resolution;
  const TimeRange full{state.span_from, state.span_until};
  state.timeline_view = full;
  state.ranges[0] = full;
  state.ranges[1] = full;
  state.pair_ranges_chosen = false;
  // Start with the application that has the most series: usually the one the files are about.
  std::string first_app;
  size_t most_series = 0;
  for (const std::string& app : state.apps) {
    size_t n = 1;  // a folded file is one series
    if (!find_folded(state, app)) {
      Selector selector;
      if (!Selector::parse(app + "{}", &selector).ok()) continue;
      n = state.dataset.series(selector).size();
    }
    if (first_app.empty() || n > most_series) {
      first_app = app;
      most_series = n;
    }
  }
  select_app(state, first_app);
  apply_requested(state);
  state.timeline_key.clear();
  state.trees_key.clear();
  state.table_rows.clear();
  state.table_order.clear();
  state.table_dirty = true;
  state.flame_left.clear();
  state.flame_right.clear();
  state.flame_diff.clear();
  state.flame_painted = false;
}

// The focused node as names (root first), to find it again in the tree of the next query.
void names_of_path(const FlameGraph& graph, std::vector<std::string>* names) {
  names->clear();
  if (!graph.tree()) return;
  for (uint32_t node : graph.focus_path()) {
    if (node != Tree::kRoot) names->emplace_back(graph.tree()->name(node));
  }
}

void refocus(FlameGraph& graph, const std::vector<std::string>& names) {
  if (names.empty() || !graph.tree()) return;
  std::vector<std::string_view> frames(names.begin(), names.end());
  const uint32_t node = graph.tree()->find_path(frames);
  if (node != Tree::kNoNode) graph.focus(node);
}

void update_timeline(ViewerState& state, float plot_width) {
  if (state.files.empty() || state.app.empty()) return;
  const size_t points = static_cast<size_t>(std::max(16.0f, plot_width / 3.0f));
  const std::string key = state.selector + "|" + std::to_string(state.timeline_view.from) + "|" +
                          std::to_string(state.timeline_view.until) + "|" + std::to_string(points);
  if (key == state.timeline_key) return;
  state.timeline_key = key;
  if (const FoldedSource* f = find_folded(state, state.app)) {
    // One block of samples: the same shape of timeline the query would give.
    const TimeRange v = state.timeline_view;
    const int64_t blocks = std::max<int64_t>(1, (v.until - v.from + state.resolution - 1) / state.resolution);
    const int64_t per_point = std::max<int64_t>(1, (blocks + static_cast<int64_t>(points) - 1) / static_cast<int64_t>(points));
    Timeline& tl = state.timeline.timeline;
    tl.step = per_point * state.resolution;
    tl.start = floor_to(v.from, tl.step);
    tl.samples.assign(static_cast<size_t>((v.until - tl.start + tl.step - 1) / tl.step), 0);
    if (f->time >= tl.start && f->time < v.until) tl.samples[static_cast<size_t>((f->time - tl.start) / tl.step)] = f->tree->total();
    return;
  }
  QueryOptions options;
  options.timeline_points = points;
  options.want_tree = false;
  QueryResult result;
  const Status status =
      state.dataset.query(state.selector, state.timeline_view.from, state.timeline_view.until, &result, options);
  if (!status.ok()) {
    state.error = "timeline query " + state.selector + ": " + status.to_string();
    state.timeline = QueryResult();
    return;
  }
  state.timeline = std::move(result);
}

void update_trees(ViewerState& state) {
  if (state.files.empty() || state.app.empty()) return;
  const bool pair = state.view != ViewMode::single;
  std::string key = state.selector + "|" + std::to_string(state.ranges[0].from) + "|" +
                    std::to_string(state.ranges[0].until);
  if (pair) key += "|" + std::to_string(state.ranges[1].from) + "|" + std::to_string(state.ranges[1].until);
  if (key == state.trees_key) return;
  state.trees_key = key;
  const double start = now_ms();

  std::vector<std::string> left_focus, right_focus, diff_focus;
  names_of_path(state.flame_left, &left_focus);
  names_of_path(state.flame_right, &right_focus);
  names_of_path(state.flame_diff, &diff_focus);
  state.flame_left.clear();
  state.flame_right.clear();
  state.flame_diff.clear();
  state.diff.reset();

  state.left = QueryResult();
  state.right = QueryResult();
  state.left_tree = &state.left.tree;
  state.right_tree = &state.right.tree;
  if (const FoldedSource* f = find_folded(state, state.app)) {
    // Its one block is in a range or not; no query needed.
    auto in_range = [&](const TimeRange& r) { return f->time < r.until && f->time + state.resolution > r.from; };
    state.left_tree = in_range(state.ranges[0]) ? f->tree.get() : &state.empty_tree;
    state.right_tree = pair && in_range(state.ranges[1]) ? f->tree.get() : &state.empty_tree;
  } else {
    QueryOptions options;
    options.timeline_points = 1;  // the timeline comes from its own query
    Status status = state.dataset.query(state.selector, state.ranges[0].from, state.ranges[0].until, &state.left, options);
    if (status.ok() && pair) {
      status = state.dataset.query(state.selector, state.ranges[1].from, state.ranges[1].until, &state.right, options);
    }
    if (!status.ok()) {
      state.error = "query " + state.selector + ": " + status.to_string();
      state.left = QueryResult();
      state.right = QueryResult();
    }
  }
  const double queried = now_ms();
  state.flame_left.set_tree(state.left_tree, nullptr);
  state.flame_left.set_search(state.search);
  refocus(state.flame_left, left_focus);
  if (pair) {
    state.diff = std::make_unique<DiffTree>(DiffTree::compute(*state.left_tree, *state.right_tree));
    state.flame_right.set_tree(state.right_tree, nullptr);
    state.flame_right.set_search(state.search);
    refocus(state.flame_right, right_focus);
    state.flame_diff.set_tree(&state.diff->shape(), state.diff.get());
    state.flame_diff.set_search(state.search);
    refocus(state.flame_diff, diff_focus);
  }
  state.table_dirty = true;
  state.table_rows.clear();
  state.table_order.clear();
  char line[200];
  std::snprintf(line, sizeof line, "query %.0f ms (%llu merges), layout %.0f ms, %u nodes", queried - start,
                static_cast<unsigned long long>(state.left.merges + state.right.merges), now_ms() - queried,
                state.left_tree->node_count());
  add_log(state, line);
}

// Samples per tag value for the tag explorer: the current filters of the other keys, this key = value.
void update_tag_samples(ViewerState& state) {
  if (state.app.empty() || find_folded(state, state.app)) return;
  const std::string key = state.selector + "|" + std::to_string(state.ranges[0].from) + "|" +
                          std::to_string(state.ranges[0].until);
  if (key == state.tag_samples_key) return;
  state.tag_samples_key = key;
  state.tag_value_samples.clear();
  constexpr size_t kMaxValues = 64;  // beyond that the explorer lists values without counts
  QueryOptions options;
  options.want_tree = false;
  options.timeline_points = 1;
  for (size_t k = 0; k < state.tag_keys.size(); ++k) {
    const std::string& tag = state.tag_keys[k];
    const auto& values = state.tag_values[k];
    if (values.size() > kMaxValues) continue;
    std::string others;
    for (const auto& [other, chosen] : state.selected_tags) {
      if (other == tag || chosen.empty()) continue;
      std::string alternatives;
      for (const std::string& v : chosen) alternatives += (alternatives.empty() ? "" : "|") + regex_escape(v);
      others += "," + other + "=~" + quote_value(alternatives);
    }
    std::vector<uint64_t>& counts = state.tag_value_samples[tag];
    for (const std::string& value : values) {
      const std::string selector = state.app + "{" + tag + "=" + quote_value(value) + others + "}";
      QueryResult result;
      uint64_t sum = 0;
      if (state.dataset.query(selector, state.ranges[0].from, state.ranges[0].until, &result, options).ok()) {
        for (uint64_t s : result.timeline.samples) sum += s;
      }
      counts.push_back(sum);
    }
  }
}

const Tree* table_tree(const ViewerState& state) {
  if (state.view == ViewMode::single) return state.flame_left.tree();
  return state.diff ? &state.diff->shape() : nullptr;
}

void update_table(ViewerState& state) {
  if (state.table_dirty) {
    state.table_dirty = false;
    state.table_order_dirty = true;
    state.table_rows.clear();
    if (state.view == ViewMode::single) {
      if (state.flame_left.tree()) {
        aggregate_functions(*state.flame_left.tree(), nullptr, &state.table_rows);
      }
    } else if (state.diff && state.flame_diff.tree()) {
      aggregate_functions(state.diff->shape(), state.diff.get(), &state.table_rows);
    }
  }
  if (!state.table_order_dirty) return;
  state.table_order_dirty = false;
  const Tree* tree = table_tree(state);
  state.table_order.clear();
  if (!tree) return;
  const SymbolTable& symbols = tree->symbols();
  for (uint32_t i = 0; i < state.table_rows.size(); ++i) {
    if (state.search.empty() || contains_ignore_case(symbols.name(state.table_rows[i].symbol), state.search)) {
      state.table_order.push_back(i);
    }
  }
  const auto& rows = state.table_rows;
  const double left_all = state.diff ? double(std::max<uint64_t>(1, state.diff->left_total(Tree::kRoot))) : 1.0;
  const double right_all = state.diff ? double(std::max<uint64_t>(1, state.diff->right_total(Tree::kRoot))) : 1.0;
  auto change = [&](const FunctionRow& r) { return double(r.right_total) / right_all - double(r.total) / left_all; };
  const TableSort sort = state.table_sort;
  const bool ascending = state.table_ascending;
  std::stable_sort(state.table_order.begin(), state.table_order.end(), [&](uint32_t a, uint32_t b) {
    const FunctionRow& x = rows[a];
    const FunctionRow& y = rows[b];
    bool less;
    switch (sort) {
      case TableSort::name: less = symbols.name(x.symbol) < symbols.name(y.symbol); break;
      case TableSort::self: less = x.self < y.self; break;
      case TableSort::total: less = x.total < y.total; break;
      case TableSort::left_total: less = x.total < y.total; break;
      case TableSort::right_total: less = x.right_total < y.right_total; break;
      case TableSort::change: less = change(x) < change(y); break;
      default: less = false;
    }
    if (ascending) return less;
    // Descending: b < a, computed the same way.
    switch (sort) {
      case TableSort::name: return symbols.name(y.symbol) < symbols.name(x.symbol);
      case TableSort::self: return y.self < x.self;
      case TableSort::total: case TableSort::left_total: return y.total < x.total;
      case TableSort::right_total: return y.right_total < x.right_total;
      case TableSort::change: return change(y) < change(x);
    }
    return false;
  });
}

void apply_search(ViewerState& state, const std::string& term) {
  if (term == state.search) return;
  state.search = term;
  std::snprintf(state.search_buffer, sizeof state.search_buffer, "%s", term.c_str());
  state.flame_left.set_search(term);
  state.flame_right.set_search(term);
  state.flame_diff.set_search(term);
  state.table_order_dirty = true;
}

void set_view(ViewerState& state, ViewMode view) {
  if (state.view == view) return;
  const bool was_pair = state.view != ViewMode::single;
  state.view = view;
  if (!was_pair && view != ViewMode::single) split_range_for_pair(state);
  state.table_dirty = true;
  if (view == ViewMode::single) state.drag_target = 0;
}

FlameGraph& primary_flame(ViewerState& state) {
  if (state.view == ViewMode::diff) return state.flame_diff;
  return state.flame_left;
}

}  // namespace

// [SECTION] Settings =================================================================================

Status apply_setting(ViewerState& state, const std::string& key, const std::string& value) {
  if (key == "view") {
    // single = both; flamegraph, table and both are the single view's panels (Pyroscope's names).
    if (value == "single" || value == "both" || value == "flamegraph" || value == "table") {
      set_view(state, ViewMode::single);
      state.panels = value == "flamegraph" ? Panels::flame : value == "table" ? Panels::table : Panels::both;
    } else if (value == "comparison") {
      set_view(state, ViewMode::comparison);
    } else if (value == "diff") {
      set_view(state, ViewMode::diff);
    } else {
      return Status(StatusCode::invalid_argument,
                    "view must be flamegraph, table, both, comparison or diff, not '" + value + "'");
    }
  } else if (key == "query") {
    // app{key="value",...}: the application and the tag values to select, as Pyroscope writes them.
    Selector selector;
    Status parsed = Selector::parse(value, &selector);
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
    state.requested["app"] = selector.app;
    state.requested["tags"] = tags;
    if (!state.files.empty()) {
      apply_requested(state);
      state.trees_key.clear();
      state.timeline_key.clear();
    }
  } else if (key == "search") {
    apply_search(state, value);
  } else if (key == "theme") {
    if (value == "dark") state.theme = Theme::dark;
    else if (value == "light") state.theme = Theme::light;
    else return Status(StatusCode::invalid_argument, "theme must be dark or light, not '" + value + "'");
    state.theme_applied = false;
  } else if (key == "orientation") {
    if (value == "icicle") state.orientation = Orientation::icicle;
    else if (value == "flame") state.orientation = Orientation::flame;
    else return Status(StatusCode::invalid_argument, "orientation must be icicle or flame, not '" + value + "'");
  } else if (key == "colour" || key == "color") {
    if (value == "function") state.colour_mode = ColourMode::function;
    else if (value == "package") state.colour_mode = ColourMode::package;
    else return Status(StatusCode::invalid_argument, "colour must be function or package, not '" + value + "'");
  } else if (key == "embed") {
    state.embed = value == "1" || value == "true";
  } else if (key == "app" || key == "tags" || key == "from" || key == "until" || key == "right_from" ||
             key == "right_until") {
    std::string stored = value;
    if (key != "app" && key != "tags") {
      int64_t v;
      if (!parse_time_setting(value, static_cast<int64_t>(std::time(nullptr)), &v)) {
        return Status(StatusCode::invalid_argument,
                      key + " must be unix seconds or now, now-30m, now-1h, now-7d (s, m, h, d, w), not '" + value + "'");
      }
      stored = std::to_string(clamp_time(v));
    }
    state.requested[key] = stored;
    if (!state.files.empty()) {
      apply_requested(state);
      state.trees_key.clear();
      state.timeline_key.clear();
    }
  } else {
    return Status(StatusCode::invalid_argument,
                  "unknown setting '" + key + "' (known: file, view, query, app, tags, from, until, right_from, "
                  "right_until, search, theme, orientation, colour, embed)");
  }
  request_redraw(state);
  return Status();
}

// [SECTION] Style =====================================================================================

void setup_style(ViewerState& state, float ui_scale, const std::string& font_path) {
  state.ui_scale = ui_scale;
  ImGuiIO& io = ImGui::GetIO();
  io.Fonts->Clear();
  bool loaded = false;
  if (!font_path.empty()) {
    FILE* f = std::fopen(font_path.c_str(), "rb");
    if (f) {
      std::fclose(f);
      ImFontConfig config;
      config.OversampleH = 2;
      config.OversampleV = 1;
      loaded = io.Fonts->AddFontFromFileTTF(font_path.c_str(), std::round(15.0f * ui_scale), &config) != nullptr;
    }
  }
  if (!loaded) {
    ImFontConfig config;
    config.SizePixels = std::round(13.0f * ui_scale);
    io.Fonts->AddFontDefault(&config);
  }
  state.theme_applied = false;
}

namespace {

void apply_theme(ViewerState& state) {
  ImGuiStyle& style = ImGui::GetStyle();
  style = ImGuiStyle();
  if (state.theme == Theme::dark) {
    ImGui::StyleColorsDark(&style);
    style.Colors[ImGuiCol_WindowBg] = ImVec4(0.09f, 0.09f, 0.11f, 1.0f);
    style.Colors[ImGuiCol_ChildBg] = ImVec4(0.11f, 0.11f, 0.13f, 1.0f);
  } else {
    ImGui::StyleColorsLight(&style);
    style.Colors[ImGuiCol_WindowBg] = ImVec4(0.96f, 0.96f, 0.97f, 1.0f);
    style.Colors[ImGuiCol_ChildBg] = ImVec4(1.0f, 1.0f, 1.0f, 1.0f);
  }
  style.WindowRounding = 0;
  style.ChildRounding = 3;
  style.FrameRounding = 3;
  style.GrabRounding = 3;
  style.PopupRounding = 3;
  style.FramePadding = ImVec2(6, 3);
  style.ItemSpacing = ImVec2(8, 5);
  style.ScaleAllSizes(state.ui_scale);
  state.theme_applied = true;
}

}  // namespace

// [SECTION] Redraw bookkeeping =======================================================================

void request_redraw(ViewerState& state, int frames) { state.redraw_frames = std::max(state.redraw_frames, frames); }

bool needs_frame(ViewerState& state) {
  if (!state.pending.empty() || state.bench_zoom_frames > 0) return true;
  if (state.redraw_frames <= 0) return false;
  --state.redraw_frames;
  return true;
}

void record_frame_time(ViewerState& state, double ms, double ui_ms) {
  state.last_frame_ms = ms;
  state.last_ui_ms = ui_ms;
  state.frame_ms[state.frame_ms_count % 240] = ms;
  ++state.frame_ms_count;
  if (state.bench_zoom_total > 0 && state.bench_frame_ms.size() < static_cast<size_t>(state.bench_zoom_total)) {
    state.bench_frame_ms.push_back(ms);
    state.bench_ui_ms.push_back(ui_ms);
  }
}

void start_zoom_benchmark(ViewerState& state, int frames) {
  state.bench_zoom_frames = frames;
  state.bench_zoom_total = frames;
  state.bench_frame_ms.clear();
  state.bench_ui_ms.clear();
  primary_flame(state).reset_zoom();
}

// [SECTION] Exports ==================================================================================

namespace {

// The selection's time ranges in time order, overlapping or touching ones joined: the single view's
// range, or both ranges in comparison and diff.
std::vector<TimeRange> selected_ranges(const ViewerState& state) {
  std::vector<TimeRange> ranges;
  for (int i = 0; i < (state.view == ViewMode::single ? 1 : 2); ++i)
    if (state.ranges[i].valid()) ranges.push_back(state.ranges[i]);
  std::sort(ranges.begin(), ranges.end(), [](const TimeRange& a, const TimeRange& b) { return a.from < b.from; });
  std::vector<TimeRange> joined;
  for (const TimeRange& r : ranges) {
    if (!joined.empty() && r.from <= joined.back().until) joined.back().until = std::max(joined.back().until, r.until);
    else joined.push_back(r);
  }
  return joined;
}

// "app-FROM-UNTIL.ext" over the whole selection.
std::string selection_file_name(const ViewerState& state, const char* extension) {
  const std::vector<TimeRange> ranges = selected_ranges(state);
  const int64_t from = ranges.empty() ? state.ranges[0].from : ranges.front().from;
  const int64_t until = ranges.empty() ? state.ranges[0].until : ranges.back().until;
  return state.app + "-" + std::to_string(from) + "-" + std::to_string(until) + extension;
}

// Runs fill on a Writer of a new file in a private temporary folder and returns the file's bytes: the
// writer creates files atomically by name, natively in /tmp and in the browser in Emscripten's
// in-memory file system.
Status write_temporary_pyro(const WriterOptions& options, const std::function<Status(Writer*)>& fill,
                            std::string* bytes) {
  char folder[] = "/tmp/pyroscope-viewer-XXXXXX";
  if (!::mkdtemp(folder)) return Status(StatusCode::io_error, std::string("cannot make a temporary folder: ") + std::strerror(errno));
  const std::string path = std::string(folder) + "/slice.pyro";
  Status status;
  {
    Writer writer;
    status = writer.open(path, options);
    if (status.ok()) status = fill(&writer);
    const Status closed = writer.close();
    if (status.ok()) status = closed;
  }
  if (status.ok()) {
    FILE* in = std::fopen(path.c_str(), "rb");
    if (!in) {
      status = Status(StatusCode::io_error, path + ": " + std::strerror(errno));
    } else {
      bytes->clear();
      char buffer[1 << 16];
      size_t n;
      while ((n = std::fread(buffer, 1, sizeof buffer, in)) > 0) bytes->append(buffer, n);
      if (std::ferror(in)) status = Status(StatusCode::io_error, path + ": read failed");
      std::fclose(in);
    }
  }
  ::unlink(path.c_str());
  ::rmdir(folder);
  return status;
}

// What Export > Share opens with: the settings a URL would carry (docs/viewer.md), as strings.
std::string share_settings(const ViewerState& state) {
  Json j;
  j.begin_object();
  j.key("app").str(state.app);
  std::string tags;
  bool representable = true;  // the tags setting separates values by commas
  for (const auto& [key, values] : state.selected_tags)
    for (const std::string& v : values) {
      representable = representable && v.find(',') == std::string::npos && key.find_first_of(",=") == std::string::npos;
      tags += (tags.empty() ? "" : ",") + key + "=" + v;
    }
  if (representable && !tags.empty()) j.key("tags").str(tags);
  j.key("from").str(std::to_string(state.ranges[0].from));
  j.key("until").str(std::to_string(state.ranges[0].until));
  if (state.view == ViewMode::single) {
    j.key("view").str(state.panels == Panels::flame ? "flamegraph" : state.panels == Panels::table ? "table" : "both");
  } else {
    j.key("view").str(state.view == ViewMode::diff ? "diff" : "comparison");
    j.key("right_from").str(std::to_string(state.ranges[1].from));
    j.key("right_until").str(std::to_string(state.ranges[1].until));
  }
  if (!state.search.empty()) j.key("search").str(state.search);
  j.key("theme").str(state.theme == Theme::dark ? "dark" : "light");
  j.key("orientation").str(state.orientation == Orientation::icicle ? "icicle" : "flame");
  j.key("colour").str(state.colour_mode == ColourMode::function ? "function" : "package");
  j.end_object();
  return j.text();
}

void finish_share(ViewerState& state) {
  if (!state.pending_share || !state.share_parts) return;
  const std::unique_ptr<ViewerState::PendingShare> share = std::move(state.pending_share);
  std::string html, error;
  if (!share::make_page(*state.share_parts, state.app + ".pyro", share->settings, share->pyro, &html, &error)) {
    state.error = "share: " + error;
    return;
  }
  const std::string where = state.save_file(share->name, html);
  if (!where.empty()) add_log(state, "exported " + where + " (" + std::to_string(html.size()) + " bytes)");
  request_redraw(state);
}

}  // namespace

Status slice_selection(const ViewerState& state, std::string* pyro, SliceStats* stats) {
  SliceStats counted;
  if (stats) *stats = counted;
  if (state.files.empty() || state.app.empty()) return Status(StatusCode::invalid_argument, "nothing is open");
  const std::vector<TimeRange> ranges = selected_ranges(state);
  WriterOptions options;
  options.resolution_seconds = state.resolution;
  if (state.dataset.file_count() > 0) options.multiplier = state.dataset.file(0).info().multiplier;
  const FoldedSource* folded = find_folded(state, state.app);
  Selector selector;
  if (!folded) {
    const Status parsed = Selector::parse(state.selector, &selector);
    if (!parsed.ok()) return Status(parsed.code(), "selector " + state.selector + ": " + parsed.message());
  }
  Status status = write_temporary_pyro(options, [&](Writer* writer) -> Status {
    if (folded) {
      // Folded text is one block of one series without tags.
      const bool in_range = std::any_of(ranges.begin(), ranges.end(), [&](const TimeRange& r) {
        return folded->time < r.until && folded->time + state.resolution > r.from;
      });
      if (!in_range || folded->tree->total() == 0) return Status();
      counted = SliceStats{1, 1, folded->tree->total()};
      return writer->append(SeriesKey(state.app, {}), folded->time, *folded->tree);
    }
    for (const TimeRange& r : ranges) {
      SliceStats part;
      const Status sliced = state.dataset.slice(selector, r.from, r.until, writer, &part);
      counted.series = std::max(counted.series, part.series);  // a series in both ranges counts once
      counted.blocks += part.blocks;
      counted.samples += part.samples;
      if (!sliced.ok()) return sliced;
    }
    return Status();
  }, pyro);
  if (stats) *stats = counted;
  if (status.ok() && counted.blocks == 0)
    status = Status(StatusCode::not_found, "no samples of " + state.selector + " in the selected range");
  return status;
}

void export_slice(ViewerState& state) {
  std::string pyro;
  SliceStats stats;
  const Status status = slice_selection(state, &pyro, &stats);
  if (!status.ok()) {
    state.error = "slice: " + status.message();
    return;
  }
  const std::string where = state.save_file(selection_file_name(state, ".pyro"), pyro);
  if (!where.empty()) {
    add_log(state, "exported " + where + " (" + std::to_string(stats.blocks) + " blocks, " +
                       std::to_string(stats.samples) + " samples, " + std::to_string(pyro.size()) + " bytes)");
  }
}

void export_share(ViewerState& state) {
  if (!state.share_unavailable.empty() || (!state.share_parts && !state.load_share_parts)) {
    state.error = "share: " + (state.share_unavailable.empty() ? std::string("not available here") : state.share_unavailable);
    return;
  }
  auto share = std::make_unique<ViewerState::PendingShare>();
  const Status status = slice_selection(state, &share->pyro, nullptr);
  if (!status.ok()) {
    state.error = "share: " + status.message();
    return;
  }
  share->name = selection_file_name(state, ".html");
  share->settings = share_settings(state);
  state.pending_share = std::move(share);
  if (state.share_parts) finish_share(state);
  else state.load_share_parts();  // answers through set_share_parts, now or later
}

void set_share_parts(ViewerState& state, Status status, share::PageParts parts) {
  if (!status.ok()) {
    state.error = "share: " + status.message();
    state.pending_share.reset();
    request_redraw(state);
    return;
  }
  state.share_parts = std::make_unique<share::PageParts>(std::move(parts));
  finish_share(state);
}

// [SECTION] UI pieces ================================================================================

namespace {

float button_width(const char* label) {  // Button and SmallButton: the same horizontal padding
  return ImGui::CalcTextSize(label).x + ImGui::GetStyle().FramePadding.x * 2;
}

float radio_width(const char* label) {
  return ImGui::GetFrameHeight() + ImGui::GetStyle().ItemInnerSpacing.x + ImGui::CalcTextSize(label).x;
}

// Continues the line with `width` worth of items flush right, or on the next line when the line is full.
void place_right(float width, float scale) {
  ImGui::SameLine();
  const float right = ImGui::GetWindowContentRegionMax().x;
  if (ImGui::GetCursorPosX() + 8 * scale + width > right) ImGui::NewLine();
  ImGui::SetCursorPosX(std::max(ImGui::GetCursorPosX(), right - width));
}

bool toggle_button(const char* label, bool active, const char* widget) {
  if (active) ImGui::PushStyleColor(ImGuiCol_Button, ImGui::GetStyleColorVec4(ImGuiCol_ButtonActive));
  const bool clicked = ImGui::Button(label);
  if (active) ImGui::PopStyleColor();
  record_item(widget);
  return clicked;
}

// The selection as folded text: the single view's tree, or both ranges' trees in the pair views.
void export_folded(ViewerState& state) {
  auto save = [&](const Tree* tree, const TimeRange& range, const char* side) {
    if (!tree || tree->total() == 0) return;
    const std::string name = state.app + "-" + std::to_string(range.from) + "-" + std::to_string(range.until) +
                             side + ".folded";
    const std::string where = state.save_file(name, tree->to_folded());
    if (!where.empty()) add_log(state, "exported " + where);
  };
  if (state.view == ViewMode::single) {
    save(state.left_tree, state.ranges[0], "");
  } else {
    save(state.left_tree, state.ranges[0], "-left");
    save(state.right_tree, state.ranges[1], "-right");
  }
}

void draw_toolbar(ViewerState& state) {
  const float s = state.ui_scale;
  if (state.open_dialog) {
    if (ImGui::Button("Open...")) state.open_dialog();
    record_item("open");
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("Open .pyro files or folded stacks (O)\nor drop them on the window");
    ImGui::SameLine();
  }
  // Application.
  ImGui::AlignTextToFramePadding();
  ImGui::TextUnformatted("App");
  ImGui::SameLine();
  ImGui::SetNextItemWidth(200 * s);
  if (ImGui::BeginCombo("##app", state.app.empty() ? "(none)" : state.app.c_str())) {
    for (const std::string& app : state.apps) {
      const bool selected = app == state.app;
      if (ImGui::Selectable(app.c_str(), selected) && !selected) {
        select_app(state, app);
      }
      record_item("app:" + app);
    }
    ImGui::EndCombo();
  }
  record_item("app");
  ImGui::SameLine(0, 16 * s);
  // View.
  if (toggle_button("Single", state.view == ViewMode::single, "view.single")) set_view(state, ViewMode::single);
  ImGui::SameLine(0, 2 * s);
  if (toggle_button("Comparison", state.view == ViewMode::comparison, "view.comparison")) {
    set_view(state, ViewMode::comparison);
  }
  ImGui::SameLine(0, 2 * s);
  if (toggle_button("Diff", state.view == ViewMode::diff, "view.diff")) set_view(state, ViewMode::diff);
  ImGui::SameLine(0, 16 * s);
  if (state.save_file && !state.files.empty()) {
    if (ImGui::Button("Export")) ImGui::OpenPopup("export-menu");
    record_item("export");
    if (ImGui::BeginPopup("export-menu")) {
      if (ImGui::Selectable(state.view == ViewMode::single ? "Folded text (.folded)"
                                                           : "Folded text, left and right (.folded)")) {
        export_folded(state);
      }
      record_item("export:folded");
      if (ImGui::Selectable("Flame graph image (.png)")) {
        state.image_request_frames = 2;
        state.image_request_name = state.app + "-" + std::to_string(state.ranges[0].from) + "-" +
                                   std::to_string(state.ranges[0].until) + ".png";
        request_redraw(state);
      }
      record_item("export:png");
      if (ImGui::Selectable("Slice of the selection (.pyro)")) export_slice(state);
      record_item("export:slice");
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("The selected series and range as a small .pyro file");
      const bool can_share = state.share_unavailable.empty() && (state.share_parts || state.load_share_parts);
      if (ImGui::Selectable("Share file (.html)", false, can_share ? 0 : ImGuiSelectableFlags_Disabled)) export_share(state);
      record_item("export:share");
      if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled)) {
        ImGui::SetTooltip("%s", can_share ? "One .html with the viewer and this selection: opens with no server"
                                          : state.share_unavailable.c_str());
      }
      ImGui::EndPopup();
    }
    ImGui::SameLine(0, 16 * s);
  }
  // Search.
  ImGui::SetNextItemWidth(220 * s);
  if (state.focus_search) {
    ImGui::SetKeyboardFocusHere();
    state.focus_search = false;
  }
  if (ImGui::InputTextWithHint("##search", "Search functions (/)", state.search_buffer, sizeof state.search_buffer)) {
    apply_search(state, state.search_buffer);
  }
  record_item("search");
  if (ImGui::IsItemActive() && ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape))) {
    apply_search(state, "");
  }
  if (!state.search.empty()) {
    ImGui::SameLine();
    const FlameGraph& graph = primary_flame(state);
    ImGui::TextColored(ImVec4(0.35f, 0.65f, 1.0f, 1.0f), "%s matched", format_share(graph.matched_share()).c_str());
    record_item("search.share");
  }
  // Right side: display toggles.
  const char* orientation = state.orientation == Orientation::icicle ? "Icicle" : "Flame";
  const char* colour = state.colour_mode == ColourMode::function ? "By function" : "By package";
  const char* theme = state.theme == Theme::dark ? "Dark" : "Light";
  place_right(button_width(orientation) + button_width(colour) + button_width(theme) + button_width("?") + 12 * s, s);
  if (ImGui::Button(orientation)) {
    state.orientation = state.orientation == Orientation::icicle ? Orientation::flame : Orientation::icicle;
    state.flame_left.scroll_to_focus();
    state.flame_right.scroll_to_focus();
    state.flame_diff.scroll_to_focus();
  }
  record_item("orientation");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("Root at the top (icicle) or bottom (flame)  [F]");
  ImGui::SameLine(0, 4 * s);
  if (ImGui::Button(colour)) {
    state.colour_mode = state.colour_mode == ColourMode::function ? ColourMode::package : ColourMode::function;
  }
  record_item("colour");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("Colour per function or per package  [C]");
  ImGui::SameLine(0, 4 * s);
  if (ImGui::Button(theme)) {
    state.theme = state.theme == Theme::dark ? Theme::light : Theme::dark;
    state.theme_applied = false;
  }
  record_item("theme");
  ImGui::SameLine(0, 4 * s);
  if (ImGui::Button("?")) state.show_help = true;
  record_item("help");
}

void draw_error_banner(ViewerState& state) {
  if (state.error.empty()) return;
  ImGui::PushStyleColor(ImGuiCol_ChildBg, ImVec4(0.55f, 0.12f, 0.12f, 1.0f));
  ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.0f, 0.95f, 0.95f, 1.0f));
  const float lines = 1.0f + static_cast<float>(std::count(state.error.begin(), state.error.end(), '\n'));
  const float height = ImGui::GetTextLineHeightWithSpacing() * std::min(lines, 6.0f) + ImGui::GetStyle().WindowPadding.y * 2;
  ImGui::BeginChild("error", ImVec2(0, height), false);
  ImGui::SetCursorPos(ImVec2(ImGui::GetStyle().WindowPadding.x, ImGui::GetStyle().WindowPadding.y));
  ImGui::TextWrapped("Error: %s", state.error.c_str());
  ImGui::SameLine(ImGui::GetWindowContentRegionMax().x - 70 * state.ui_scale);
  if (ImGui::SmallButton("Dismiss")) state.error.clear();
  record_item("error.dismiss");
  ImGui::EndChild();
  record_item("error");
  ImGui::PopStyleColor(2);
}

void draw_welcome(ViewerState& state) {
  const float s = state.ui_scale;
  ImGui::Dummy(ImVec2(0, 40 * s));
  ImGui::Indent(40 * s);
  ImGui::TextUnformatted("pyroscope.hpp viewer");
  ImGui::Spacing();
  ImGui::TextWrapped("Open a .pyro file written by pyroscope.hpp, or folded stacks (.folded / .txt as perf and "
                     "FlameGraph's stackcollapse write them). Several files open together as one data set.");
  ImGui::Spacing();
  if (state.open_dialog) {
    if (ImGui::Button("Open files...")) state.open_dialog();
    record_item("welcome.open");
    ImGui::SameLine();
    ImGui::TextDisabled("or drop files on this window, or load ?file=<url>");
  } else {
    ImGui::TextDisabled("Pass files on the command line or drop them on this window.");
  }
  ImGui::Unindent(40 * s);
}

void draw_loading(ViewerState& state) {
  const float s = state.ui_scale;
  ImGui::Dummy(ImVec2(0, 40 * s));
  ImGui::Indent(40 * s);
  ImGui::Text("Opening %zu file(s)...", state.pending.size());
  for (const LoadInput& in : state.pending) {
    ImGui::BulletText("%s (%s bytes)", (in.name.empty() ? in.path : in.name).c_str(), format_count(in.size).c_str());
  }
  ImGui::ProgressBar(-1.0f * static_cast<float>(ImGui::GetTime()), ImVec2(300 * s, 0), "parsing");
  ImGui::Unindent(40 * s);
}

void draw_tag_explorer(ViewerState& state) {
  const float s = state.ui_scale;
  update_tag_samples(state);
  ImGui::TextUnformatted("Tags");
  ImGui::SameLine();
  bool any = false;
  for (const auto& [k, v] : state.selected_tags) any |= !v.empty();
  if (!any) ImGui::BeginDisabled();
  if (ImGui::SmallButton("Clear all")) {
    state.selected_tags.clear();
    rebuild_selector(state);
  }
  record_item("tags.clear");
  if (!any) ImGui::EndDisabled();
  ImGui::Separator();
  if (state.tag_keys.empty()) {
    ImGui::TextDisabled("This application has no tags.");
    return;
  }
  for (size_t k = 0; k < state.tag_keys.size(); ++k) {
    const std::string& key = state.tag_keys[k];
    ImGui::PushID(key.c_str());
    if (ImGui::TreeNodeEx(key.c_str(), ImGuiTreeNodeFlags_DefaultOpen | ImGuiTreeNodeFlags_SpanAvailWidth)) {
      record_item("tagkey:" + key);
      std::vector<std::string>& chosen = state.selected_tags[key];
      const auto counts_it = state.tag_value_samples.find(key);
      const std::vector<uint64_t>* counts = counts_it == state.tag_value_samples.end() ? nullptr : &counts_it->second;
      uint64_t key_total = 0;
      if (counts) {
        for (uint64_t c : *counts) key_total += c;
      }
      const auto& values = state.tag_values[k];
      for (size_t v = 0; v < values.size(); ++v) {
        const std::string& value = values[v];
        bool on = std::find(chosen.begin(), chosen.end(), value) != chosen.end();
        ImGui::PushID(static_cast<int>(v));
        if (ImGui::Checkbox(value.c_str(), &on)) {
          if (on) {
            chosen.push_back(value);
            std::sort(chosen.begin(), chosen.end());
          } else {
            chosen.erase(std::remove(chosen.begin(), chosen.end(), value), chosen.end());
          }
          rebuild_selector(state);
        }
        record_item("tag:" + key + "=" + value);
        if (counts && v < counts->size()) {
          const double share = key_total ? double((*counts)[v]) / double(key_total) : 0.0;
          ImGui::SameLine(ImGui::GetWindowContentRegionMax().x - 64 * s);
          ImGui::TextDisabled("%6.1f%%", share * 100.0);
          if (ImGui::IsItemHovered()) {
            ImGui::SetTooltip("%s samples in the selected range", format_count((*counts)[v]).c_str());
          }
        }
        ImGui::PopID();
      }
      ImGui::TreePop();
    } else {
      record_item("tagkey:" + key);
    }
    ImGui::PopID();
  }
  // Keys whose values were all unchecked leave an empty entry behind; drop it.
  for (auto it = state.selected_tags.begin(); it != state.selected_tags.end();) {
    it = it->second.empty() ? state.selected_tags.erase(it) : std::next(it);
  }
}

int64_t choose_tick_step(double seconds_per_px, float min_px) {
  static const int64_t steps[] = {10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                                  172800, 604800, 2592000};
  for (int64_t step : steps) {
    if (static_cast<double>(step) / seconds_per_px >= min_px) return step;
  }
  return 31536000;
}

void clamp_timeline_view(ViewerState& state) {
  TimeRange& v = state.timeline_view;
  const int64_t full = state.span_until - state.span_from;
  int64_t width = v.until - v.from;
  width = std::clamp<int64_t>(width, std::min<int64_t>(full, 6 * state.resolution), full);
  int64_t from = std::clamp<int64_t>(v.from, state.span_from, state.span_until - width);
  v = TimeRange{from, from + width};
}

void zoom_timeline(ViewerState& state, double factor, double anchor_fraction) {
  TimeRange& v = state.timeline_view;
  const double width = static_cast<double>(v.until - v.from);
  const double anchor = static_cast<double>(v.from) + anchor_fraction * width;
  const double new_width = width / factor;
  v.from = static_cast<int64_t>(std::llround(anchor - anchor_fraction * new_width));
  v.until = v.from + static_cast<int64_t>(std::llround(new_width));
  clamp_timeline_view(state);
}

void draw_timeline(ViewerState& state) {
  const float s = state.ui_scale;
  const bool pair = state.view != ViewMode::single;
  // Header: ranges and controls.
  ImGui::AlignTextToFramePadding();
  if (pair) {
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kLeftColour), "Left: %s", format_range(state.ranges[0]).c_str());
    ImGui::SameLine(0, 14 * s);
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kRightColour), "Right: %s", format_range(state.ranges[1]).c_str());
  } else {
    ImGui::Text("Range: %s UTC", format_range(state.ranges[0]).c_str());
  }
  const float spacing = ImGui::GetStyle().ItemSpacing.x;
  float controls = button_width("-") + button_width("+") + button_width("Fit") + button_width("Select all") + 3 * spacing;
  if (pair) {
    controls += ImGui::CalcTextSize("drag selects").x + radio_width("left") + radio_width("right") + 2 * spacing + 12 * s;
  }
  place_right(controls, s);
  if (pair) {
    ImGui::TextDisabled("drag selects");
    ImGui::SameLine();
    if (ImGui::RadioButton("left", state.drag_target == 0)) state.drag_target = 0;
    record_item("drag.left");
    ImGui::SameLine();
    if (ImGui::RadioButton("right", state.drag_target == 1)) state.drag_target = 1;
    record_item("drag.right");
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("A right-button drag always selects the right range");
    ImGui::SameLine(0, 12 * s);
  }
  if (ImGui::SmallButton("-")) zoom_timeline(state, 0.5, 0.5);
  record_item("timeline.zoom_out");
  ImGui::SameLine();
  if (ImGui::SmallButton("+")) zoom_timeline(state, 2.0, 0.5);
  record_item("timeline.zoom_in");
  ImGui::SameLine();
  if (ImGui::SmallButton("Fit")) state.timeline_view = TimeRange{state.span_from, state.span_until};
  record_item("timeline.fit");
  ImGui::SameLine();
  if (ImGui::SmallButton("Select all")) {
    state.ranges[pair ? state.drag_target : 0] = state.timeline_view;
  }
  record_item("timeline.select_all");

  const ImVec2 p0 = ImGui::GetCursorScreenPos();
  const float width = std::max(50.0f, ImGui::GetContentRegionAvail().x);
  const float axis_h = ImGui::GetTextLineHeight() + 4 * s;
  const float plot_h = 70 * s;
  update_timeline(state, width);

  ImGui::InvisibleButton("timeline", ImVec2(width, plot_h + axis_h),
                         ImGuiButtonFlags_MouseButtonLeft | ImGuiButtonFlags_MouseButtonRight |
                             ImGuiButtonFlags_MouseButtonMiddle);
  record_item("timeline");
  const bool hovered = ImGui::IsItemHovered();
  const bool active = ImGui::IsItemActive();
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const ImU32 bg = ImGui::GetColorU32(ImGuiCol_FrameBg);
  dl->AddRectFilled(p0, ImVec2(p0.x + width, p0.y + plot_h), bg, 3 * s);

  const TimeRange view = state.timeline_view;
  const double span = static_cast<double>(std::max<int64_t>(1, view.until - view.from));
  auto t2x = [&](double t) { return p0.x + static_cast<float>((t - static_cast<double>(view.from)) / span * width); };
  auto x2t = [&](float x) { return static_cast<double>(view.from) + static_cast<double>(x - p0.x) / width * span; };

  // Interaction.
  ImGuiIO& io = ImGui::GetIO();
  if (hovered && io.MouseWheel != 0) {
    const double anchor = std::clamp(static_cast<double>((io.MousePos.x - p0.x) / width), 0.0, 1.0);
    if (io.KeyShift) {
      const int64_t shift = static_cast<int64_t>(-0.1 * io.MouseWheel * span);
      state.timeline_view.from += shift;
      state.timeline_view.until += shift;
      clamp_timeline_view(state);
    } else {
      zoom_timeline(state, std::pow(1.25, static_cast<double>(io.MouseWheel)), anchor);
    }
  }
  if (ImGui::IsItemActivated()) {
    if (ImGui::IsMouseClicked(ImGuiMouseButton_Middle)) {
      state.timeline_panning = true;
    } else {
      state.timeline_dragging = true;
      state.timeline_drag_button = ImGui::IsMouseClicked(ImGuiMouseButton_Right) ? 1 : 0;
      state.timeline_drag_anchor = static_cast<int64_t>(std::floor(x2t(io.MousePos.x)));
    }
  }
  if (active && state.timeline_panning) {
    const int64_t shift = static_cast<int64_t>(-static_cast<double>(io.MouseDelta.x) / width * span);
    state.timeline_view.from += shift;
    state.timeline_view.until += shift;
    clamp_timeline_view(state);
  }
  TimeRange preview{};
  int preview_target = -1;
  if (state.timeline_dragging) {
    const int target = state.timeline_drag_button == 1 ? 1 : (pair ? state.drag_target : 0);
    const int64_t t = static_cast<int64_t>(std::floor(x2t(std::clamp(io.MousePos.x, p0.x, p0.x + width))));
    const int64_t a = std::min(t, state.timeline_drag_anchor), b = std::max(t, state.timeline_drag_anchor);
    preview = TimeRange{floor_to(a, state.resolution), ceil_to(b + 1, state.resolution)};
    preview.from = std::max(preview.from, state.span_from);
    preview.until = std::min(preview.until, state.span_until);
    preview_target = target;
    const bool moved = std::fabs(io.MousePos.x - io.MouseClickedPos[state.timeline_drag_button == 1 ? 1 : 0].x) > 3;
    if (!active) {
      state.timeline_dragging = false;
      if (moved && preview.valid() && (target == 0 || pair)) {
        if (target == 1 && state.view == ViewMode::single) set_view(state, ViewMode::comparison);
        state.ranges[target] = preview;
        if (state.view != ViewMode::single) state.pair_ranges_chosen = true;
      }
      preview_target = -1;
    } else if (!moved) {
      preview_target = -1;
    }
  }
  if (!active) state.timeline_panning = false;

  // Bars.
  const Timeline& tl = state.timeline.timeline;
  uint64_t max_value = 1;
  for (uint64_t v : tl.samples) max_value = std::max(max_value, v);
  const ImU32 bar = state.theme == Theme::dark ? IM_COL32(120, 170, 120, 255) : IM_COL32(90, 150, 90, 255);
  dl->PushClipRect(p0, ImVec2(p0.x + width, p0.y + plot_h), true);
  for (size_t i = 0; i < tl.samples.size(); ++i) {
    if (tl.samples[i] == 0) continue;
    const double t0 = static_cast<double>(tl.start + static_cast<int64_t>(i) * tl.step);
    const float x0 = t2x(t0), x1 = std::max(t2x(t0 + static_cast<double>(tl.step)), x0 + 1.0f);
    const float h = static_cast<float>(static_cast<double>(tl.samples[i]) / static_cast<double>(max_value)) * (plot_h - 6 * s);
    dl->AddRectFilled(ImVec2(x0, p0.y + plot_h - h), ImVec2(x1, p0.y + plot_h), bar);
  }
  // Selected ranges.
  auto draw_range = [&](const TimeRange& r, ImU32 colour) {
    const float x0 = t2x(static_cast<double>(r.from)), x1 = t2x(static_cast<double>(r.until));
    dl->AddRectFilled(ImVec2(x0, p0.y), ImVec2(x1, p0.y + plot_h), with_alpha(colour, 60));
    dl->AddLine(ImVec2(x0, p0.y), ImVec2(x0, p0.y + plot_h), colour, 2 * s);
    dl->AddLine(ImVec2(x1, p0.y), ImVec2(x1, p0.y + plot_h), colour, 2 * s);
  };
  const ImU32 single_colour = state.theme == Theme::dark ? IM_COL32(240, 190, 80, 255) : IM_COL32(210, 140, 20, 255);
  if (pair) {
    draw_range(preview_target == 0 ? preview : state.ranges[0], kLeftColour);
    draw_range(preview_target == 1 ? preview : state.ranges[1], kRightColour);
  } else {
    draw_range(preview_target == 0 ? preview : state.ranges[0], single_colour);
  }
  dl->PopClipRect();

  // Axis.
  const double seconds_per_px = span / width;
  const int64_t step = choose_tick_step(seconds_per_px, 110 * s);
  const ImU32 text = ImGui::GetColorU32(ImGuiCol_TextDisabled);
  for (int64_t t = ceil_to(view.from, step); t <= view.until; t += step) {
    const float x = t2x(static_cast<double>(t));
    dl->AddLine(ImVec2(x, p0.y + plot_h), ImVec2(x, p0.y + plot_h + 4 * s), text);
    const std::string label = format_time(t, step >= 86400);
    const float label_w = ImGui::CalcTextSize(label.c_str()).x;
    if (x + 2 + label_w > p0.x + width) continue;
    dl->AddText(ImVec2(x + 2, p0.y + plot_h + 2 * s), text, label.c_str());
  }
  if (hovered && !state.timeline_dragging) {
    const double t = x2t(io.MousePos.x);
    uint64_t value = 0;
    if (tl.step > 0 && t >= tl.start) {
      const size_t i = static_cast<size_t>((t - static_cast<double>(tl.start)) / static_cast<double>(tl.step));
      if (i < tl.samples.size()) value = tl.samples[i];
    }
    ImGui::SetTooltip("%s UTC\n%s samples\ndrag: select a range   wheel: zoom   shift+wheel / middle drag: pan%s",
                      format_time(static_cast<int64_t>(t), true).c_str(), format_count(value).c_str(),
                      pair ? "\nright-drag: select the right range" : "");
  }
}

void draw_table(ViewerState& state, float height) {
  update_table(state);
  const bool pair = state.view != ViewMode::single;
  const Tree* tree = table_tree(state);
  ImGuiTableFlags flags = ImGuiTableFlags_Sortable | ImGuiTableFlags_Resizable | ImGuiTableFlags_RowBg |
                          ImGuiTableFlags_BordersInnerV | ImGuiTableFlags_BordersOuter | ImGuiTableFlags_ScrollY |
                          ImGuiTableFlags_SizingFixedFit;
  const int columns = pair ? 6 : 5;
  // Separate ids: the single and the pair tables have different columns (and sort specs).
  if (!ImGui::BeginTable(pair ? "functions-pair" : "functions", columns, flags, ImVec2(0, height))) return;
  const float num_w = ImGui::CalcTextSize("000,000,000,000").x;
  const float pct_w = ImGui::CalcTextSize("100.00%%").x;
  ImGui::TableSetupScrollFreeze(0, 1);
  ImGui::TableSetupColumn("Function", ImGuiTableColumnFlags_WidthStretch, 0.0f, static_cast<ImGuiID>(TableSort::name));
  if (pair) {
    ImGui::TableSetupColumn("Left total", ImGuiTableColumnFlags_WidthFixed, num_w, static_cast<ImGuiID>(TableSort::left_total));
    ImGui::TableSetupColumn("Left %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_NoSort, pct_w);
    ImGui::TableSetupColumn("Right total", ImGuiTableColumnFlags_WidthFixed, num_w, static_cast<ImGuiID>(TableSort::right_total));
    ImGui::TableSetupColumn("Right %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_NoSort, pct_w);
    ImGui::TableSetupColumn("Diff", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_DefaultSort |
                                        ImGuiTableColumnFlags_PreferSortDescending,
                            pct_w * 1.2f, static_cast<ImGuiID>(TableSort::change));
  } else {
    ImGui::TableSetupColumn("Self", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_PreferSortDescending, num_w,
                            static_cast<ImGuiID>(TableSort::self));
    ImGui::TableSetupColumn("Self %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_NoSort, pct_w);
    ImGui::TableSetupColumn("Total", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_DefaultSort |
                                         ImGuiTableColumnFlags_PreferSortDescending,
                            num_w, static_cast<ImGuiID>(TableSort::total));
    ImGui::TableSetupColumn("Total %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_NoSort, pct_w);
  }
  ImGui::TableNextRow(ImGuiTableRowFlags_Headers);
  for (int c = 0; c < columns; ++c) {
    ImGui::TableSetColumnIndex(c);
    const char* name = ImGui::TableGetColumnName(c);
    ImGui::PushID(c);
    ImGui::TableHeader(name);
    ImGui::PopID();
    record_item(std::string("table.header.") + name);
  }
  if (ImGuiTableSortSpecs* specs = ImGui::TableGetSortSpecs()) {
    if (specs->SpecsDirty && specs->SpecsCount > 0) {
      state.table_sort = static_cast<TableSort>(specs->Specs[0].ColumnUserID);
      state.table_ascending = specs->Specs[0].SortDirection == ImGuiSortDirection_Ascending;
      state.table_order_dirty = true;
      specs->SpecsDirty = false;
      update_table(state);
    }
  }
  if (!tree) {
    ImGui::EndTable();
    return;
  }
  const SymbolTable& symbols = tree->symbols();
  const double all = double(std::max<uint64_t>(1, tree->total()));
  const double left_all = state.diff ? double(std::max<uint64_t>(1, state.diff->left_total(Tree::kRoot))) : 1.0;
  const double right_all = state.diff ? double(std::max<uint64_t>(1, state.diff->right_total(Tree::kRoot))) : 1.0;
  ImGuiListClipper clipper;
  clipper.Begin(static_cast<int>(state.table_order.size()));
  while (clipper.Step()) {
    for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) {
      const FunctionRow& row = state.table_rows[state.table_order[static_cast<size_t>(i)]];
      const std::string_view name = symbols.name(row.symbol);
      ImGui::TableNextRow();
      ImGui::TableSetColumnIndex(0);
      ImGui::PushID(i);
      const std::string label(name);
      if (ImGui::Selectable(label.c_str(), state.search == label, ImGuiSelectableFlags_SpanAllColumns)) {
        apply_search(state, state.search == label ? std::string() : label);
      }
      if (i < 50) record_item("table.row." + std::to_string(i));
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s\nclick: highlight in the flame graph", label.c_str());
      ImGui::PopID();
      if (pair) {
        const double ls = double(row.total) / left_all, rs = double(row.right_total) / right_all;
        ImGui::TableSetColumnIndex(1);
        ImGui::TextUnformatted(format_count(row.total).c_str());
        ImGui::TableSetColumnIndex(2);
        ImGui::TextUnformatted(format_share(ls).c_str());
        ImGui::TableSetColumnIndex(3);
        ImGui::TextUnformatted(format_count(row.right_total).c_str());
        ImGui::TableSetColumnIndex(4);
        ImGui::TextUnformatted(format_share(rs).c_str());
        ImGui::TableSetColumnIndex(5);
        const double change = (rs - ls) * 100.0;
        const ImVec4 colour = change > 0.005 ? ImVec4(0.93f, 0.33f, 0.30f, 1) : change < -0.005 ? ImVec4(0.25f, 0.75f, 0.38f, 1)
                                                                                            : ImGui::GetStyleColorVec4(ImGuiCol_Text);
        ImGui::TextColored(colour, "%+.2f pp", change);
      } else {
        ImGui::TableSetColumnIndex(1);
        ImGui::TextUnformatted(format_count(row.self).c_str());
        ImGui::TableSetColumnIndex(2);
        ImGui::TextUnformatted(format_share(double(row.self) / all).c_str());
        ImGui::TableSetColumnIndex(3);
        ImGui::TextUnformatted(format_count(row.total).c_str());
        ImGui::TableSetColumnIndex(4);
        ImGui::TextUnformatted(format_share(double(row.total) / all).c_str());
      }
    }
  }
  ImGui::EndTable();
}

FlameDrawOptions flame_options(const ViewerState& state, const char* id) {
  FlameDrawOptions o;
  o.orientation = state.orientation;
  o.colour_mode = state.colour_mode;
  o.palette = palette_for(state.theme);
  o.row_height = std::round(ImGui::GetFontSize() + 6 * state.ui_scale);
  o.min_block_px = 3.0f * state.ui_scale;
  o.id = id;
  return o;
}

void draw_flame_header(ViewerState& state, FlameGraph& graph, const char* title, ImU32 title_colour) {
  if (title) {
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(title_colour), "%s", title);
    ImGui::SameLine();
    const uint64_t total = graph.tree() ? graph.tree()->total() : 0;
    ImGui::TextDisabled("%s samples", format_count(total).c_str());
  }
  graph.draw_breadcrumb(title ? title : "crumbs");
  (void)state;
}

void draw_splitter(ViewerState& state, float total_height) {
  const float s = state.ui_scale;
  ImGui::InvisibleButton("splitter", ImVec2(-1, 6 * s));
  record_item("splitter");
  if (ImGui::IsItemHovered() || ImGui::IsItemActive()) ImGui::SetMouseCursor(ImGuiMouseCursor_ResizeNS);
  if (ImGui::IsItemActive() && total_height > 0) {
    state.flame_fraction = std::clamp(state.flame_fraction + ImGui::GetIO().MouseDelta.y / total_height, 0.15f, 0.9f);
  }
  const ImVec2 a = ImGui::GetItemRectMin(), b = ImGui::GetItemRectMax();
  ImGui::GetWindowDrawList()->AddLine(ImVec2(a.x, (a.y + b.y) * 0.5f), ImVec2(b.x, (a.y + b.y) * 0.5f),
                                      ImGui::GetColorU32(ImGuiCol_Separator), 1.0f);
}

void draw_views(ViewerState& state) {
  const float s = state.ui_scale;
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float header_h = ImGui::GetFrameHeightWithSpacing() * (state.view == ViewMode::single ? 1.0f : 2.0f);
  const float splitter_h = 6 * s + ImGui::GetStyle().ItemSpacing.y * 2;
  const float body = std::max(100.0f, avail.y - header_h - splitter_h);
  float flame_h = std::floor(body * state.flame_fraction);
  float table_h = std::max(60.0f, body - flame_h);
  const bool single = state.view == ViewMode::single;
  if (single && state.panels == Panels::flame) flame_h = body + splitter_h;

  if (single && state.panels == Panels::table) {
    draw_table(state, body + header_h + splitter_h);
    return;
  }
  if (state.view == ViewMode::single) {
    draw_flame_header(state, state.flame_left, nullptr, 0);
    state.flame_left.draw(ImVec2(0, flame_h), flame_options(state, "flame.main"));
  } else if (state.view == ViewMode::comparison) {
    const float half = std::floor((avail.x - ImGui::GetStyle().ItemSpacing.x) * 0.5f);
    ImGui::BeginGroup();
    ImGui::PushID("L");
    ImGui::PushItemWidth(half);
    ImGui::BeginChild("left-pane", ImVec2(half, flame_h + header_h), false, ImGuiWindowFlags_NoScrollbar);
    draw_flame_header(state, state.flame_left, "Left", kLeftColour);
    state.flame_left.draw(ImVec2(0, 0), flame_options(state, "flame.left"));
    ImGui::EndChild();
    ImGui::PopItemWidth();
    ImGui::PopID();
    ImGui::EndGroup();
    ImGui::SameLine();
    ImGui::BeginGroup();
    ImGui::PushID("R");
    ImGui::BeginChild("right-pane", ImVec2(0, flame_h + header_h), false, ImGuiWindowFlags_NoScrollbar);
    draw_flame_header(state, state.flame_right, "Right", kRightColour);
    state.flame_right.draw(ImVec2(0, 0), flame_options(state, "flame.right"));
    ImGui::EndChild();
    ImGui::PopID();
    ImGui::EndGroup();
  } else {
    ImGui::TextUnformatted("Diff: left");
    ImGui::SameLine(0, 4 * s);
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kLeftColour), "%s", format_count(state.left_tree ? state.left_tree->total() : 0).c_str());
    ImGui::SameLine(0, 4 * s);
    ImGui::TextUnformatted("-> right");
    ImGui::SameLine(0, 4 * s);
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kRightColour), "%s", format_count(state.right_tree ? state.right_tree->total() : 0).c_str());
    ImGui::SameLine(0, 4 * s);
    ImGui::TextDisabled("samples.  Colour: change in share of the whole");
    ImGui::SameLine(0, 12 * s);
    // Legend: shrank (green) .. neutral .. grew (red).
    const ImVec2 p = ImGui::GetCursorScreenPos();
    const float lw = 160 * s, lh = ImGui::GetTextLineHeight();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const FlamePalette pal = palette_for(state.theme);
    dl->AddRectFilledMultiColor(p, ImVec2(p.x + lw * 0.5f, p.y + lh), IM_COL32(46, 180, 80, 255), pal.diff_neutral,
                                pal.diff_neutral, IM_COL32(46, 180, 80, 255));
    dl->AddRectFilledMultiColor(ImVec2(p.x + lw * 0.5f, p.y), ImVec2(p.x + lw, p.y + lh), pal.diff_neutral,
                                IM_COL32(228, 60, 56, 255), IM_COL32(228, 60, 56, 255), pal.diff_neutral);
    dl->AddText(ImVec2(p.x + 4 * s, p.y), IM_COL32(16, 16, 16, 255), "-100%");
    dl->AddText(ImVec2(p.x + lw - ImGui::CalcTextSize("+100%").x - 4 * s, p.y), IM_COL32(16, 16, 16, 255), "+100%");
    ImGui::Dummy(ImVec2(lw, lh));
    draw_flame_header(state, state.flame_diff, nullptr, 0);
    state.flame_diff.draw(ImVec2(0, flame_h), flame_options(state, "flame.diff"));
  }
  if (single && state.panels == Panels::flame) return;
  draw_splitter(state, body);
  // The flame graph paints first; the table waits one frame so the first paint is not delayed by it.
  if (state.flame_painted) {
    draw_table(state, table_h);
  } else {
    ImGui::TextDisabled("building the table...");
    request_redraw(state);
  }
}

void draw_status_bar(ViewerState& state) {
  const FlameGraph& graph = primary_flame(state);
  std::string files;
  uint64_t bytes = 0;
  for (const LoadedFile& f : state.files) {
    files += (files.empty() ? "" : ", ") + f.name;
    bytes += f.bytes;
  }
  ImGui::Separator();
  ImGui::TextDisabled("%s (%s bytes)  |  %s  |  %u nodes, %u blocks drawn (%u merged)  |  frame %.2f ms (UI %.2f ms)", files.c_str(),
                      format_count(bytes).c_str(), state.selector.c_str(), graph.tree() ? graph.tree()->node_count() : 0,
                      graph.drawn_blocks(), graph.merged_blocks(), state.last_frame_ms, state.last_ui_ms);
  record_item("statusbar");
}

void draw_help(ViewerState& state) {
  if (state.show_help) {
    ImGui::OpenPopup("Keyboard shortcuts");
    state.show_help = false;
  }
  if (ImGui::BeginPopupModal("Keyboard shortcuts", nullptr, ImGuiWindowFlags_AlwaysAutoResize)) {
    static const char* rows[][2] = {
        {"O / Ctrl+O", "open files"},
        {"1 / 2 / 3", "single / comparison / diff view"},
        {"/  or  Ctrl+F", "search"},
        {"Esc", "leave focus (then clear the search)"},
        {"Backspace", "focus the parent"},
        {"+ / - / 0", "zoom in / out / reset (also ctrl+wheel)"},
        {"Left / Right", "pan"},
        {"F", "flame / icicle orientation"},
        {"C", "colour by function / package"},
        {"T", "dark / light theme"},
        {"R", "select the whole time span"},
        {"?", "this help"},
    };
    if (ImGui::BeginTable("keys", 2, ImGuiTableFlags_SizingFixedFit)) {
      for (const auto& row : rows) {
        ImGui::TableNextRow();
        ImGui::TableSetColumnIndex(0);
        ImGui::TextUnformatted(row[0]);
        ImGui::TableSetColumnIndex(1);
        ImGui::TextUnformatted(row[1]);
      }
      ImGui::EndTable();
    }
    ImGui::Spacing();
    ImGui::TextDisabled("Mouse: click a block to focus it, drag to pan, wheel to scroll,\n"
                        "ctrl+wheel to zoom. Timeline: drag to select, wheel to zoom.");
    if (ImGui::Button("Close") || ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape))) ImGui::CloseCurrentPopup();
    record_item("help.close");
    ImGui::EndPopup();
  }
}

void handle_shortcuts(ViewerState& state) {
  ImGuiIO& io = ImGui::GetIO();
  if (io.WantTextInput || ImGui::IsPopupOpen(nullptr, ImGuiPopupFlags_AnyPopupId)) return;
  // Flame graph under the mouse first, else the view's main one.
  FlameGraph* graph = &primary_flame(state);
  if (state.view == ViewMode::comparison && state.flame_right.hovered() != Tree::kNoNode) graph = &state.flame_right;
  if (io.KeyCtrl && ImGui::IsKeyPressed('O') && state.open_dialog) state.open_dialog();
  if (io.KeyCtrl && ImGui::IsKeyPressed('F')) state.focus_search = true;
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape))) {
    if (graph->focused() != Tree::kRoot) {
      graph->focus(Tree::kRoot);
    } else if (!state.search.empty()) {
      apply_search(state, "");
    } else {
      state.error.clear();
    }
  }
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Backspace))) graph->focus_parent();
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_LeftArrow))) graph->pan(-0.1);
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_RightArrow))) graph->pan(0.1);
  if (io.KeyCtrl || io.KeyAlt || io.KeySuper) return;
  for (ImWchar c : io.InputQueueCharacters) {
    switch (c) {
      case '1': set_view(state, ViewMode::single); break;
      case '2': set_view(state, ViewMode::comparison); break;
      case '3': set_view(state, ViewMode::diff); break;
      case '/': state.focus_search = true; break;
      case '+': case '=': graph->zoom(1.5, 0.5); break;
      case '-': graph->zoom(1.0 / 1.5, 0.5); break;
      case '0': graph->reset_zoom(); break;
      case 'f': case 'F':
        state.orientation = state.orientation == Orientation::icicle ? Orientation::flame : Orientation::icicle;
        state.flame_left.scroll_to_focus();
        state.flame_right.scroll_to_focus();
        state.flame_diff.scroll_to_focus();
        break;
      case 'c': case 'C':
        state.colour_mode = state.colour_mode == ColourMode::function ? ColourMode::package : ColourMode::function;
        break;
      case 't': case 'T':
        state.theme = state.theme == Theme::dark ? Theme::light : Theme::dark;
        state.theme_applied = false;
        break;
      case 'r': case 'R':
        state.ranges[state.view == ViewMode::single ? 0 : state.drag_target] =
            TimeRange{state.span_from, state.span_until};
        break;
      case 'o': case 'O':
        if (state.open_dialog) state.open_dialog();
        break;
      case '?': state.show_help = true; break;
      default: break;
    }
  }
}

void step_zoom_benchmark(ViewerState& state) {
  if (state.bench_zoom_frames <= 0) return;
  FlameGraph& graph = primary_flame(state);
  // Zoom in for the first half, out for the second, around a point off-centre so the visible slice moves.
  const int done = state.bench_zoom_total - state.bench_zoom_frames;
  graph.zoom(done < state.bench_zoom_total / 2 ? 1.08 : 1.0 / 1.08, 0.37);
  --state.bench_zoom_frames;
  request_redraw(state);
}

}  // namespace

// [SECTION] Frame ====================================================================================

void frame(ViewerState& state) {
  state.widgets.clear();
  g_widgets = &state.widgets;
  ++state.frame_count;
  if (!state.theme_applied) apply_theme(state);

  const ImGuiViewport* viewport = ImGui::GetMainViewport();
  ImGui::SetNextWindowPos(viewport->WorkPos);
  ImGui::SetNextWindowSize(viewport->WorkSize);
  ImGui::Begin("pyroscope", nullptr,
               ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings |
                   ImGuiWindowFlags_NoBringToFrontOnFocus | ImGuiWindowFlags_NoScrollWithMouse);

  if (!state.pending.empty()) {
    if (state.pending_announced) {
      load_pending(state);
    } else {
      state.pending_announced = true;  // draw one "opening" frame before the work blocks
      draw_loading(state);
      ImGui::End();
      g_widgets = nullptr;
      return;
    }
  }

  handle_shortcuts(state);
  step_zoom_benchmark(state);
  if (state.image_request_frames > 1) {
    --state.image_request_frames;
    request_redraw(state);
  }
  const float s = state.ui_scale;

  if (state.embed && (!state.files.empty() || !state.error.empty())) {
    // Embedded: the flame graph, its breadcrumb and a search box; a bad parameter or file shows its
    // message here, inside the frame.
    draw_error_banner(state);
    if (!state.files.empty()) {
      update_trees(state);
      FlameGraph& graph = primary_flame(state);
      ImGui::SetNextItemWidth(std::min(260 * s, ImGui::GetContentRegionAvail().x * 0.4f));
      if (ImGui::InputTextWithHint("##embed-search", "Search (/)", state.search_buffer, sizeof state.search_buffer)) {
        apply_search(state, state.search_buffer);
      }
      record_item("embed.search");
      ImGui::SameLine();
      graph.draw_breadcrumb("crumbs");
      graph.draw(ImVec2(0, 0), flame_options(state, "flame.main"));
    }
  } else {
    draw_toolbar(state);
    draw_error_banner(state);
    if (state.files.empty()) {
      draw_welcome(state);
    } else {
      update_trees(state);
      const float status_h = ImGui::GetTextLineHeightWithSpacing() + ImGui::GetStyle().ItemSpacing.y * 2;
      const float body_h = std::max(100.0f, ImGui::GetContentRegionAvail().y - status_h);
      ImGui::BeginChild("sidebar", ImVec2(230 * s, body_h), true);
      draw_tag_explorer(state);
      ImGui::EndChild();
      record_item("sidebar");
      ImGui::SameLine();
      ImGui::BeginChild("main", ImVec2(0, body_h), false, ImGuiWindowFlags_NoScrollbar | ImGuiWindowFlags_NoScrollWithMouse);
      draw_timeline(state);
      ImGui::Spacing();
      draw_views(state);
      ImGui::EndChild();
      draw_status_bar(state);
    }
  }
  draw_help(state);
  ImGui::End();

  const FlameGraph& graph = primary_flame(state);
  if (graph.drawn_blocks() > 0) state.flame_painted = true;
  g_widgets = nullptr;
}

void prepare_views(ViewerState& state) {
  if (state.files.empty() || !state.pending.empty()) return;
  update_trees(state);  // the table waits for the frame after the first paint anyway
}

bool take_image_request(ViewerState& state, ImageRequest* out) {
  if (state.image_request_frames != 1) return false;
  state.image_request_frames = 0;
  const FlameGraph& graph = primary_flame(state);
  if (!state.save_file || graph.canvas_max().x <= graph.canvas_min().x || graph.canvas_max().y <= graph.canvas_min().y)
    return false;
  out->name = state.image_request_name;
  out->x0 = graph.canvas_min().x;
  out->y0 = graph.canvas_min().y;
  out->x1 = graph.canvas_max().x;
  out->y1 = graph.canvas_max().y;
  add_log(state, "exported " + out->name);
  return true;
}

// [SECTION] Status ===================================================================================

std::string status_json(const ViewerState& state) {
  Json j;
  j.begin_object();
  j.key("ready").boolean(state.pending.empty());
  j.key("loading").boolean(!state.pending.empty());
  j.key("files").begin_array();
  for (const LoadedFile& f : state.files) {
    j.begin_object();
    j.key("name").str(f.name);
    j.key("bytes").integer(static_cast<int64_t>(f.bytes));
    j.key("kind").str(f.folded ? "folded" : "pyro");
    j.end_object();
  }
  j.end_array();
  j.key("error").str(state.error);
  j.key("load_ms").num(state.last_load_ms);
  j.key("apps").begin_array();
  for (const std::string& a : state.apps) j.str(a);
  j.end_array();
  j.key("app").str(state.app);
  j.key("tags").begin_object();
  for (size_t k = 0; k < state.tag_keys.size(); ++k) {
    j.key(state.tag_keys[k]).begin_array();
    for (const std::string& v : state.tag_values[k]) j.str(v);
    j.end_array();
  }
  j.end_object();
  j.key("selected_tags").begin_object();
  for (const auto& [key, values] : state.selected_tags) {
    if (values.empty()) continue;
    j.key(key).begin_array();
    for (const std::string& v : values) j.str(v);
    j.end_array();
  }
  j.end_object();
  j.key("selector").str(state.selector);
  j.key("view").str(view_name(state.view));
  j.key("panels").str(state.panels == Panels::flame ? "flamegraph" : state.panels == Panels::table ? "table" : "both");
  j.key("theme").str(state.theme == Theme::dark ? "dark" : "light");
  j.key("orientation").str(state.orientation == Orientation::icicle ? "icicle" : "flame");
  j.key("colour").str(state.colour_mode == ColourMode::function ? "function" : "package");
  j.key("span").begin_object().key("from").integer(state.span_from).key("until").integer(state.span_until).end_object();
  j.key("timeline").begin_object();
  j.key("from").integer(state.timeline_view.from).key("until").integer(state.timeline_view.until);
  uint64_t timeline_sum = 0;
  for (uint64_t v : state.timeline.timeline.samples) timeline_sum += v;
  j.key("points").integer(static_cast<int64_t>(state.timeline.timeline.samples.size()));
  j.key("step").integer(state.timeline.timeline.step);
  j.key("samples").integer(static_cast<int64_t>(timeline_sum));
  j.end_object();
  j.key("ranges").begin_object();
  j.key("left").begin_object().key("from").integer(state.ranges[0].from).key("until").integer(state.ranges[0].until).end_object();
  j.key("right").begin_object().key("from").integer(state.ranges[1].from).key("until").integer(state.ranges[1].until).end_object();
  j.end_object();
  j.key("drag_target").str(state.drag_target == 0 ? "left" : "right");
  j.key("search").str(state.search);
  const FlameGraph& primary = state.view == ViewMode::diff ? state.flame_diff : state.flame_left;
  j.key("matched_share").num(primary.matched_share());
  j.key("matched_samples").integer(static_cast<int64_t>(primary.matched_total()));
  auto graph_json = [&](const char* name, const FlameGraph& g) {
    j.key(name).begin_object();
    const Tree* t = g.tree();
    j.key("total").integer(t ? static_cast<int64_t>(t->total()) : 0);
    j.key("nodes").integer(t ? t->node_count() : 0);
    j.key("depth").integer(g.layout().depth_count);
    j.key("focus_total").integer(t ? static_cast<int64_t>(g.node_width(g.focused())) : 0);
    j.key("focus_path").begin_array();
    if (t) {
      for (uint32_t n : g.focus_path()) {
        if (n != Tree::kRoot) j.str(t->name(n));
      }
    }
    j.end_array();
    j.key("view_left").num(g.view_left()).key("view_width").num(g.view_width());
    // Where rows are on screen (framebuffer pixels; the page converts widgets only): row d's top is
    // canvas_top + d * row_height - scroll in icicle mode.
    j.key("row_height").num(g.row_height());
    j.key("scroll_y").num(g.scroll_y());
    j.key("canvas").begin_array().num(g.canvas_min().x).num(g.canvas_min().y).num(g.canvas_max().x - g.canvas_min().x)
        .num(g.canvas_max().y - g.canvas_min().y).end_array();
    j.key("drawn_blocks").integer(g.drawn_blocks());
    j.key("merged_blocks").integer(g.merged_blocks());
    j.key("labelled_blocks").integer(g.labelled_blocks());
    j.key("visited_nodes").integer(g.visited_nodes());
    j.key("matched_share").num(g.matched_share());
    const uint32_t h = g.hovered();
    j.key("hovered").str(t && h != Tree::kNoNode ? (h == Tree::kRoot ? std::string_view("total") : t->name(h)) : "");
    if (g.diff()) {
      j.key("left_total").integer(static_cast<int64_t>(g.diff()->left_total(Tree::kRoot)));
      j.key("right_total").integer(static_cast<int64_t>(g.diff()->right_total(Tree::kRoot)));
    }
    j.end_object();
  };
  j.key("flame").begin_object();
  if (state.view == ViewMode::single) graph_json("main", state.flame_left);
  if (state.view == ViewMode::comparison) {
    graph_json("left", state.flame_left);
    graph_json("right", state.flame_right);
  }
  if (state.view == ViewMode::diff) graph_json("diff", state.flame_diff);
  j.end_object();
  j.key("table").begin_object();
  j.key("rows").integer(static_cast<int64_t>(state.table_dirty ? 0 : state.table_order.size()));
  const char* sort_names[] = {"name", "self", "total", "left_total", "right_total", "change"};
  j.key("sort").str(sort_names[static_cast<int>(state.table_sort)]);
  j.key("ascending").boolean(state.table_ascending);
  j.key("first").begin_array();
  const Tree* tt = state.table_dirty || state.table_order_dirty ? nullptr : table_tree(state);
  for (size_t i = 0; tt && i < std::min<size_t>(5, state.table_order.size()); ++i) {
    j.str(tt->symbols().name(state.table_rows[state.table_order[i]].symbol));
  }
  j.end_array();
  j.end_object();
  j.key("flame_painted").boolean(state.flame_painted);
  j.key("first_flame_paint_ms").num(state.first_flame_paint_ms);
  j.key("frames").integer(static_cast<int64_t>(state.frame_count));
  j.key("frame_ms").num(state.last_frame_ms);
  j.key("ui_ms").num(state.last_ui_ms);
  {
    const uint32_t n = std::min<uint32_t>(state.frame_ms_count, 240);
    double sum = 0, worst = 0;
    for (uint32_t i = 0; i < n; ++i) {
      sum += state.frame_ms[i];
      worst = std::max(worst, state.frame_ms[i]);
    }
    j.key("frame_ms_avg").num(n ? sum / n : 0).key("frame_ms_max").num(worst);
  }
  j.key("bench").begin_object();
  j.key("running").boolean(state.bench_zoom_frames > 0);
  j.key("frames").begin_array();
  for (double ms : state.bench_frame_ms) j.num(ms);
  j.end_array();
  j.key("ui_frames").begin_array();
  for (double ms : state.bench_ui_ms) j.num(ms);
  j.end_array();
  j.end_object();
  j.key("scale").num(state.ui_scale);
  j.key("log").begin_array();
  for (const std::string& line : state.log) j.str(line);
  j.end_array();
  // Export > Share: "" when it can be used, else why not.
  j.key("share_unavailable").str(!state.share_unavailable.empty() || state.share_parts || state.load_share_parts
                                      ? state.share_unavailable
                                      : std::string("no way to load the viewer's files"));
  j.key("widgets").begin_object();
  for (const WidgetRect& w : state.widgets) {
    j.key(w.name).begin_array().num(w.x0).num(w.y0).num(w.x1 - w.x0).num(w.y1 - w.y0).end_array();
  }
  j.end_object();
  j.end_object();
  return j.text();
}

}  // namespace pyroscope::viewer
