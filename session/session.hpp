// The session: everything the viewer and `pyro` do with profiles that is not drawing.
//
// Layers (docs/architecture.md): pyroscope.hpp (sampler, file format, query, import/export) ->
// this session (sources, selection, queries, slices, exports, settings, share files; no UI, no
// platform) -> the ImGui viewer, which draws a session -> the platform mains (GLFW, Emscripten).
// `pyro`, the command-line tool, uses the session beside the viewer, so a concept such as "the
// time syntax", "per-function totals" or "what a share file holds" exists once.
//
// Thread safety: one thread at a time per Session; the free functions are pure.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pyroscope.hpp"
#include "share_page.hpp"

namespace pyroscope::session {

// [SECTION] Names ===================================================================================
//
// Each enumeration the settings carry comes from one table: the enum, its names in URLs, on the
// command line and in status JSON, and the list an error message offers.

#define PYROSCOPE_VIEW_MODES(X) X(single, "single") X(comparison, "comparison") X(diff, "diff")
#define PYROSCOPE_PANELS(X) X(both, "both") X(flame, "flamegraph") X(table, "table")
#define PYROSCOPE_THEMES(X) X(dark, "dark") X(light, "light")
#define PYROSCOPE_ORIENTATIONS(X) X(icicle, "icicle") X(flame, "flame")
#define PYROSCOPE_COLOUR_MODES(X) X(function, "function") X(package, "package")
#define PYROSCOPE_TABLE_SORTS(X)                                                                  \
  X(name, "name") X(self, "self") X(total, "total") X(left_total, "left_total")                 \
  X(right_total, "right_total") X(change, "change")

#define PYROSCOPE_ENUM_VALUE(value, text) value,
#define PYROSCOPE_DECLARE_NAMED_ENUM(Type, LIST)                                                  \
  enum class Type { LIST(PYROSCOPE_ENUM_VALUE) };                                               \
  const char* name_of(Type value);                                                               \
  bool parse_name(std::string_view text, Type* out);                                             \
  std::string choices(Type);  /* "single, comparison or diff" */

PYROSCOPE_DECLARE_NAMED_ENUM(ViewMode, PYROSCOPE_VIEW_MODES)
PYROSCOPE_DECLARE_NAMED_ENUM(Panels, PYROSCOPE_PANELS)
PYROSCOPE_DECLARE_NAMED_ENUM(Theme, PYROSCOPE_THEMES)
PYROSCOPE_DECLARE_NAMED_ENUM(Orientation, PYROSCOPE_ORIENTATIONS)
PYROSCOPE_DECLARE_NAMED_ENUM(ColourMode, PYROSCOPE_COLOUR_MODES)
PYROSCOPE_DECLARE_NAMED_ENUM(TableSort, PYROSCOPE_TABLE_SORTS)

// [SECTION] Time ====================================================================================

// Unix seconds (any int64, clamped to +-2^60); ISO 8601 (2026-11-22T10:00:00Z, 2026-11-22 10:00, an
// offset such as +02:00, UTC when none; fractions of a second dropped); now, now-30m, now+1h (units s
// m h d w). Every result is checked against overflow; anything else, digits beyond 64 bits included,
// is invalid_argument naming the text and the forms accepted.
Status parse_time(std::string_view text, int64_t now, int64_t* out);
int64_t now_unix();
std::string format_utc(int64_t t);                   // 2026-11-22T10:00:00Z
std::string format_clock(int64_t t, bool with_date);  // 10:00:00 or 2026-11-22 10:00:00 (UTC)
std::string format_duration(int64_t seconds);         // 45s, 12m 30s, 3h 0m 0s, 2d 4h 0m
std::string format_range(const TimeRange& r);        // for a range's label: start - end (duration)
// Floor and ceiling to a multiple of step (> 0), saturating instead of overflowing near the ends of
// int64, so a hostile from/until cannot make undefined behaviour.
int64_t floor_to(int64_t t, int64_t step);
int64_t ceil_to(int64_t t, int64_t step);
// A range as a session holds it: from/until clamped to the years 0000-9999 (as they print), so a
// hostile URL's times cannot overflow the arithmetic on ranges.
TimeRange clamped(TimeRange r);

// [SECTION] Values ==================================================================================

// A value in its unit for people: 1,234 samples; 12.5 ms, 3.20 s, 2.1 min; 512 B, 1.5 KiB, 3.2 GiB;
// 1,234 objects. Samples of a series with a known period in nanoseconds read as time.
std::string format_value(uint64_t value, const SeriesInfo& info);
std::string format_count(uint64_t value);  // 1,234,567
std::string format_share(double share);    // 12.34 %

// Per function: self and total (recursion counted once, Tree::function_totals), for one tree or for
// both sides of a diff (left in self/total, right in right_self/right_total).
struct FunctionRow {
  uint32_t symbol = 0;
  uint64_t self = 0;
  uint64_t total = 0;
  uint64_t right_self = 0;
  uint64_t right_total = 0;
};
void function_rows(const Tree& tree, const DiffTree* diff, std::vector<FunctionRow>* rows);
// Orders rows (indices into rows) by a column; ties keep the order they had.
void sort_rows(const Tree& tree, const DiffTree* diff, const std::vector<FunctionRow>& rows, TableSort sort,
               bool ascending, std::vector<uint32_t>* order);

// Pyroscope's flamebearer JSON of a tree: names[], levels[depth] = [x delta, total, self, name index]
// per node, numTicks, maxSelf (what Pyroscope's /render answers, and `pyro query --format json`).
std::string flamebearer_json(const Tree& tree);

// [SECTION] Sources =================================================================================

// One input to open: a path on disk (native), bytes in memory (browser), or folded text already
// parsed while it streamed in (FoldedImporter: a 200 MB download never sits in memory whole). Any
// format the header reads opens: .pyro, and pprof, folded, perf script, speedscope, .cpuprofile,
// told apart by their content. Bytes must come from malloc(); the session owns and frees them.
struct LoadInput {
  std::string name;           // shown to the user, and the application of a profile that names none
  std::string path;           // read from disk when non-empty
  bool salvage = false;       // a damaged .pyro opens with the records before the damage
  uint8_t* bytes = nullptr;   // otherwise these bytes
  size_t size = 0;
  int64_t modified_unix = 0;  // where a profile without its own time is placed (folded, speedscope)
  std::unique_ptr<FoldedImporter> folded;  // set: folded text streamed in (size = its byte count)
};

struct LoadedSource {
  std::string name;
  uint64_t bytes = 0;
  std::string kind;      // the format's name: "pyro", "pprof", "folded", "perf-script", ...
  uint64_t samples = 0;  // imported formats: samples or lines read (report.items says which)
};

// A profile that names no application is named after its file: the name without extension,
// reduced to the characters a selector accepts unquoted (dots too become '_', since a dot would
// start a profile type).
std::string app_name_for(const std::string& file_name);

// [SECTION] Selection ===============================================================================

// What is being looked at: an application and profile type, tag values (several values of one key
// are alternatives), any further matchers (pyro's selectors: !=, =~, !~), one range (single view) or
// two (comparison, diff).
struct Selection {
  std::string app;                                      // "" with pyro's {...}: every application
  std::string type = kDefaultProfileType;               // "" with pyro's {...}: every type
  std::map<std::string, std::vector<std::string>> tags;  // key -> chosen values (sorted)
  std::vector<Matcher> matchers;                        // more conditions, as parsed
  TimeRange ranges[2];                                  // [0] single view / left, [1] right
  ViewMode view = ViewMode::single;

  bool pair() const { return view != ViewMode::single; }
  Selector selector() const;     // app.type{k="v",k2=~"a|b",...}
  std::string text() const;      // its text
  // The ranges in time order, overlapping or touching ones joined: one range, or both in a pair view.
  std::vector<TimeRange> joined_ranges() const;
};

// Presentation settings that travel with a selection in URLs, share files and the command line.
struct ViewSettings {
  Panels panels = Panels::both;  // single view: flame graph, table or both
  std::string search;
  Theme theme = Theme::dark;
  Orientation orientation = Orientation::icicle;
  ColourMode colour = ColourMode::function;
  bool embed = false;  // only the flame graph (URL embed=1)
};

// [SECTION] Session =================================================================================

// One data set, what is selected in it, and the results of the selection. Results are computed when
// asked for and kept until the selection changes, so a UI can ask every frame.
class Session {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // ---- Sources ----
  // Opens inputs together as one data set in place of the current one: .pyro files (mapped natively,
  // or the given bytes) and profiles of the other formats (imported into an in-memory source;
  // lenient: lines or samples that cannot be read are skipped and reported in notices()). Returns
  // the problems of the inputs that did not open, one line each ("" when every input opened); when
  // none opened the current data set stays. Settings given before (apply_setting) are applied to the
  // new data. An imported profile whose app name clashes with another source's gets a suffix.
  std::string open(std::vector<LoadInput> inputs);
  // What the last open() has to say beside errors: "perf.folded: imported 9,998 lines, skipped 2: ...".
  const std::vector<std::string>& notices() const { return notices_; }
  // gzip for imports and exports where zlib is not compiled in (the browser: stb's zlib).
  void set_codecs(InflateFunction inflate, DeflateFunction deflate);
  bool empty() const { return sources_.empty(); }
  const std::vector<LoadedSource>& sources() const { return sources_; }
  const Dataset& dataset() const { return dataset_; }
  double last_open_ms() const { return last_open_ms_; }

  // ---- What there is to select ----
  const std::vector<std::string>& apps() const { return apps_; }
  const std::vector<std::string>& types() const { return types_; }  // of the selected app
  const std::vector<std::string>& tag_keys() const { return tag_keys_; }
  const std::vector<std::vector<std::string>>& tag_values() const { return tag_values_; }  // per key
  TimeRange span() const { return span_; }
  // Where the selected application has samples (a timeline opens on it); the span when none is selected.
  TimeRange extent() const { return extent_; }
  int64_t resolution() const { return resolution_; }
  // The value info of the selection's series (unit, aggregation); default (samples) when none match.
  const SeriesInfo& info() const { return info_; }

  // ---- The selection ----
  const Selection& selection() const { return selection_; }
  const std::string& selector_text() const { return selector_text_; }
  void select_app(const std::string& app);  // its types, tags and data extent; tag choices cleared
  void select_type(const std::string& type);
  void set_tag_values(const std::string& key, std::vector<std::string> values);
  void clear_tags();
  void set_range(int side, TimeRange range);  // clamped; an invalid range is ignored
  void set_view(ViewMode view);               // entering a pair view splits the range in two halves
  void select_all_time(int side);             // the whole span
  // pyro: a selector as typed (any matchers; {} selects every app and type) and one range.
  Status select(const Selector& selector, TimeRange range);

  // ---- Results ----
  // Samples per point over window, at most `points` points (none when nothing is selected).
  const QueryResult& timeline(TimeRange window, size_t points);
  const QueryResult& last_timeline() const { return timeline_; }  // the last timeline() answer
  // The trees of the selection: left (the single view's), right and their diff in pair views. True
  // when they changed since the last call (layouts must follow). Errors go to error().
  bool update_trees();
  const Tree& left_tree() const { return left_.tree; }
  const Tree& right_tree() const { return right_.tree; }
  const QueryResult& left() const { return left_; }
  const QueryResult& right() const { return right_; }
  const DiffTree* diff() const { return diff_.get(); }
  // Samples per value of every tag key (at most 64 values a key) in the main range, each with the
  // other keys' current choices applied: the tag explorer's shares.
  const std::map<std::string, std::vector<uint64_t>>& tag_value_samples();

  // ---- Settings: URL parameters, command-line options, share files ----
  // view=flamegraph|table|both|comparison|diff, query=app.type{k="v"}, app, type, tags=k=v,k2=v2,
  // from, until, right_from, right_until (times as parse_time reads them), search, theme,
  // orientation, colour, embed. Unknown keys and bad values are invalid_argument naming them.
  // Data settings wait for data: given before open(), they apply to what it opens.
  Status apply_setting(const std::string& key, const std::string& value);
  ViewSettings& view_settings() { return view_; }
  const ViewSettings& view_settings() const { return view_; }
  // The settings a URL would carry to show this selection, as a JSON object of strings.
  std::string settings_json() const;
  const std::string& error() const { return error_; }  // the last query's problem, "" if none
  void clear_error() { error_.clear(); }

  // ---- Exports ----
  // "app-FROM-UNTIL.ext" over the whole selection.
  std::string file_name(const char* extension) const;
  // The selection (series, and its range or both ranges) as the bytes of a small .pyro file.
  Status slice(std::string* pyro, SliceStats* stats) const;
  // The selection's trees as folded text: one file, or -left and -right in pair views.
  struct NamedText {
    std::string name;
    std::string text;
  };
  std::vector<NamedText> folded() const;
  // The selection's tree (the single view's range; the left range in pair views) as pprof (gzipped)
  // or speedscope JSON, with its type, unit and period: what `go tool pprof` and speedscope open.
  Status export_profile(Format format, NamedText* out) const;
  // A share file of the selection: one .html with the viewer (parts) and the slice, opening in this view.
  // not_found when the selection holds no samples.
  Status share_page(const share::PageParts& parts, std::string* html, SliceStats* stats = nullptr) const;

 private:
  void reset_selection();
  void load_lists();
  void apply_pending_settings();
  void selection_changed();
  TimeRange data_extent(const std::string& app, const std::string& type) const;
  void split_range_for_pair();

  struct Buffers;
  Dataset dataset_;
  std::unique_ptr<Buffers> buffers_;  // malloc'd bytes that files of dataset_ read from
  std::vector<LoadedSource> sources_;
  std::vector<std::string> notices_;
  InflateFunction inflate_;
  DeflateFunction deflate_;
  double last_open_ms_ = 0;
  std::vector<std::string> apps_, types_, tag_keys_;
  std::vector<std::vector<std::string>> tag_values_;
  TimeRange span_, extent_;
  int64_t resolution_ = kDefaultResolutionSeconds;
  SeriesInfo info_;

  Selection selection_;
  std::string selector_text_;
  bool pair_ranges_chosen_ = false;  // left/right were set (else entering a pair view splits the range)
  ViewSettings view_;
  std::map<std::string, std::string> pending_;  // data settings, applied to every data set opened
  std::string error_;

  // Results and the selection they were computed for.
  QueryResult timeline_;
  std::string timeline_key_;
  QueryResult left_, right_;
  std::unique_ptr<DiffTree> diff_;
  std::string trees_key_;
  std::map<std::string, std::vector<uint64_t>> tag_samples_;
  std::string tag_samples_key_;
};

}  // namespace pyroscope::session
