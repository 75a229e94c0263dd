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

#define PYROSCOPE_VIEW_MODES(X) X(single, "single") X(comparison, "comparison") X(diff, "diff") X(sandwich, "sandwich")
#define PYROSCOPE_PANELS(X) X(both, "both") X(flame, "flamegraph") X(table, "table")
#define PYROSCOPE_THEMES(X) X(dark, "dark") X(light, "light")
#define PYROSCOPE_ORIENTATIONS(X) X(icicle, "icicle") X(flame, "flame")
#define PYROSCOPE_COLOUR_MODES(X) X(function, "function") X(package, "package")
#define PYROSCOPE_TABLE_SORTS(X)                                                                  \
  X(name, "name") X(self, "self") X(total, "total") X(left_total, "left_total")                 \
  X(right_total, "right_total") X(change, "change")
// How frames are named: in full, short (short_function_name: no parameters, template arguments
// collapsed), or short with the frames that became equal merged into one.
#define PYROSCOPE_NAME_MODES(X) X(full, "full") X(shortened, "short") X(merged, "merged")
// Recursion as the trees show it: kept, direct recursion collapsed (f;f -> f), or all of it (f;g;f -> f;g).
#define PYROSCOPE_RECURSION_MODES(X) X(keep, "keep") X(direct, "direct") X(all, "all")
// What a diff compares: each side's share of its own total (Pyroscope's diff), values per second of
// each range (ranges of different lengths), or the values themselves.
#define PYROSCOPE_DIFF_MODES(X) X(share, "share") X(per_second, "per_second") X(absolute, "absolute")

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
PYROSCOPE_DECLARE_NAMED_ENUM(NameMode, PYROSCOPE_NAME_MODES)
PYROSCOPE_DECLARE_NAMED_ENUM(RecursionMode, PYROSCOPE_RECURSION_MODES)
PYROSCOPE_DECLARE_NAMED_ENUM(DiffMode, PYROSCOPE_DIFF_MODES)

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

// [SECTION] Diff arithmetic =========================================================================

// How a diff's two sides compare (DiffMode), with what the modes need: each side's total and the
// length of its range.
struct DiffScale {
  DiffMode mode = DiffMode::share;
  uint64_t left_all = 0, right_all = 0;      // each side's total (share)
  double left_seconds = 1, right_seconds = 1;  // each side's range in seconds, whole blocks (per_second)
};
// The change from left to right: share: right/right_all - left/left_all (a fraction; x100 = points);
// per_second: right/right_seconds - left/left_seconds (the unit per second); absolute: right - left.
double diff_change(uint64_t left, uint64_t right, const DiffScale& scale);
// The change relative to the left side, in percent clamped to [-100, 100] (+100 for something only on
// the right): what diff colours show. In share mode, DiffTree::change_percent.
double diff_change_percent(uint64_t left, uint64_t right, const DiffScale& scale);
// A diff_change for people: "+1.25 pp", "-12.5 ms/s", "+1,234 samples".
std::string format_change(double change, const DiffScale& scale, const SeriesInfo& info);

// Orders rows (indices into rows) by a column; ties keep the order they had. The change column
// compares the sides as scale says (null: shares).
void sort_rows(const Tree& tree, const DiffTree* diff, const std::vector<FunctionRow>& rows, TableSort sort,
               bool ascending, std::vector<uint32_t>* order, const DiffScale* scale = nullptr);

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

// A data directory (what `pyro serve --data DIR` writes) stands for the .pyro files directly in it,
// sorted by name (hidden files, subdirectories and anything not a regular file left out); any other
// path stands for itself. pyro and the native viewer take directories wherever they take files.
std::vector<std::string> data_files(const std::string& path);
std::vector<std::string> data_files(const std::vector<std::string>& paths);
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
  // A tag value against the rest (pair views): the left side is compare_key!="compare_value", the
  // right side compare_key="compare_value"; both within the selection. Empty key: both sides are the
  // selection (two ranges of it).
  std::string compare_key, compare_value;

  bool pair() const { return view == ViewMode::comparison || view == ViewMode::diff; }
  bool comparing_tag() const { return !compare_key.empty(); }
  Selector selector() const;     // app.type{k="v",k2=~"a|b",...}
  std::string text() const;      // its text
  Selector side_selector(int side) const;  // selector() and, comparing a tag, that side's matcher
  // The ranges in time order, overlapping or touching ones joined: one range, or both in a pair view.
  std::vector<TimeRange> joined_ranges() const;
};

// Presentation settings that travel with a selection in URLs, share files and the command line.
struct ViewSettings {
  Panels panels = Panels::both;  // single view: flame graph, table or both
  std::string search;            // NameSearch's syntax
  bool focus_matches = false;    // dim what is not on a stack through a match
  Theme theme = Theme::dark;
  Orientation orientation = Orientation::icicle;
  ColourMode colour = ColourMode::function;
  bool embed = false;  // only the flame graph (URL embed=1)
  std::string function;          // the sandwich view's function, as its frames are named
  NameMode names = NameMode::full;
  RecursionMode recursion = RecursionMode::keep;
  DiffMode diff_mode = DiffMode::share;
  std::string breakdown;         // a tag key: the timeline shows a line per value ("" none)
  std::vector<std::string> focus;  // the focused frame of the view's main flame graph, root first
};

// How the frames of a session's view trees read (ViewSettings::names): a label to draw, and the full
// names a frame stands for, which tooltips show and the search matches. It works on names, so it
// serves every view tree: both sides, the diff and the sandwich.
class FrameNames {
 public:
  NameMode mode() const { return mode_; }
  // What a block shows for a frame named `name` in a view tree.
  std::string label(std::string_view name) const;
  // The full names behind it: the name itself, or in merged mode every name that became it.
  std::vector<std::string_view> full_names(std::string_view name) const;
  // The search selects a frame when any of its full names matches.
  bool matches(const NameSearch& search, std::string_view name) const;

 private:
  friend class Session;
  NameMode mode_ = NameMode::full;
  std::map<std::string, std::vector<std::string>, std::less<>> merged_;  // short name -> full names
};

// A tag key's values over time (the timeline's breakdown): the values with the most samples in the
// selected range, one line each, and the rest together; each with its share of the range.
struct TagBreakdown {
  struct Line {
    std::string value;             // the tag value ("" for the rest)
    bool rest = false;             // every other value, and series without the key
    uint64_t samples = 0;          // in the selected range
    double share = 0;              // of all the selection's samples in the selected range
    std::vector<uint64_t> points;  // samples per step of the window (timeline.start / step)
  };
  std::string key;
  Timeline timeline;         // the whole selection over the window (start, step, samples)
  std::vector<Line> lines;   // top values by samples, heaviest first; then the rest, if it has samples
  uint64_t range_samples = 0;
  size_t values = 0;         // values the key has
  double ms = 0;             // how long the queries took
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
  // One value of a tag against the rest, in the diff view on the main range (the key's own choice
  // in the tags is dropped); an empty key compares two ranges again.
  void compare_tag(const std::string& key, const std::string& value);
  // pyro: a selector as typed (any matchers; {} selects every app and type) and one range.
  Status select(const Selector& selector, TimeRange range);

  // ---- Results ----
  // Samples per point over window, at most `points` points (none when nothing is selected).
  const QueryResult& timeline(TimeRange window, size_t points);
  const QueryResult& last_timeline() const { return timeline_; }  // the last timeline() answer
  // The trees of the selection: left (the single view's), right in pair views, and the view trees
  // below. Non-zero when something changed since the last call (layouts must follow): a mask of
  // kTreesChanged and kSandwichChanged. Errors go to error().
  unsigned update_trees();
  const Tree& left_tree() const { return left_.tree; }
  const Tree& right_tree() const { return right_.tree; }
  const QueryResult& left() const { return left_; }
  const QueryResult& right() const { return right_; }
  // The trees the views draw: the queries' trees with recursion collapsed and names shortened as the
  // view settings say (the queries' own trees when they say neither), their diff, and the sandwich
  // of the view settings' function (sandwich view only; null when the function is not in the tree).
  // update_trees' result says which changed: kTreesChanged (trees, diff) and kSandwichChanged.
  static constexpr unsigned kTreesChanged = 1, kSandwichChanged = 2;
  const Tree& left_view() const { return left_view_ ? *left_view_ : left_.tree; }
  const Tree& right_view() const { return right_view_ ? *right_view_ : right_.tree; }
  const DiffTree* diff() const { return diff_.get(); }
  const Sandwich* sandwich() const { return sandwich_.get(); }
  // The next update_trees computes the sandwich anew (a UI lets go of the old one's layouts first,
  // so the memory serves the new one).
  bool sandwich_stale() const;
  double sandwich_ms() const { return sandwich_ms_; }  // how long the last sandwich took
  // The sandwich leaves out nodes below this share of the function's total (pyroscope::sandwich's
  // min_fraction): 2^-16, 0.02 px of a 1,400 px graph. A graph zoomed into a node holding far less than
  // the whole would show the gaps, so refine_sandwich(that node's total) makes the next update_trees
  // compute the sandwich again at a detail that many times finer (a new function starts coarse again).
  static constexpr double kSandwichDetail = 1.0 / 65536;
  void refine_sandwich(uint64_t focused_total);
  double sandwich_detail() const { return sandwich_detail_; }
  const FrameNames& frame_names() const { return frame_names_; }
  // How the diff compares the sides: the view settings' mode, the sides' totals and range lengths.
  DiffScale diff_scale() const;
  // The view settings' breakdown key over window, at most `points` points (empty key: no lines).
  const TagBreakdown& tag_breakdown(TimeRange window, size_t points);
  const TagBreakdown* last_breakdown() const { return breakdown_key_.empty() ? nullptr : &breakdown_; }
  // Samples per value of every tag key (at most 64 values a key) in the main range, each with the
  // other keys' current choices applied: the tag explorer's shares.
  const std::map<std::string, std::vector<uint64_t>>& tag_value_samples();

  // ---- Settings: URL parameters, command-line options, share files ----
  // view=flamegraph|table|both|comparison|diff|sandwich, query=app.type{k="v"}, app, type,
  // tags=k=v,k2=v2, compare=k=v, from, until, right_from, right_until (times as parse_time reads
  // them), function, search, focus_matches, names, recursion, diff_mode, breakdown, focus=a;b;c,
  // theme, orientation, colour, embed. Unknown keys and bad values are invalid_argument naming them.
  // Data settings wait for data: given before open(), they apply to what it opens.
  Status apply_setting(const std::string& key, const std::string& value);
  ViewSettings& view_settings() { return view_; }
  const ViewSettings& view_settings() const { return view_; }
  // The settings that show this selection and view, in a fixed order (defaults left out): what a
  // permalink and a share file carry. As pairs, as a JSON object of strings, as a URL query string.
  std::vector<std::pair<std::string, std::string>> settings() const;
  std::string settings_json() const;
  std::string settings_query() const;  // app=...&from=...&..., each value percent-encoded
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
  std::string trees_key() const;  // what the queries' trees depend on
  std::string view_key() const;   // ... and the view trees

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
  std::string trees_key_;
  std::unique_ptr<Tree> left_view_, right_view_;  // null: the query's tree is the view tree
  std::unique_ptr<DiffTree> diff_;
  FrameNames frame_names_;
  std::string view_key_;
  std::unique_ptr<Sandwich> sandwich_;
  std::string sandwich_key_;
  std::string sandwich_base_;  // the view and function the detail below was refined for
  double sandwich_detail_ = kSandwichDetail;
  std::string sandwich_key_for(const std::string& base) const;
  double sandwich_ms_ = 0;
  TagBreakdown breakdown_;
  std::string breakdown_key_;
  std::map<std::string, std::vector<uint64_t>> tag_samples_;
  std::string tag_samples_key_;
};

}  // namespace pyroscope::session
