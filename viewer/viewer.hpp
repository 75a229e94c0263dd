// The viewer's UI, shared by the native (main_native.cpp) and WebAssembly (main_wasm.cpp) builds.
//
// Everything here is platform-free: one ViewerState, one frame(state) called between ImGui's
// NewFrame() and Render(). The mains own the window, the GL context and the event loop; they feed
// files in through open_files() and ask needs_frame() whether anything changed since the last frame,
// so an idle viewer does not redraw. All data comes from pyroscope.hpp (Dataset::query, DiffTree);
// the viewer never parses a file itself.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "flame_graph.hpp"
#include "share_page.hpp"
#include "pyroscope.hpp"

namespace pyroscope::viewer {

// Folded text parsed as it arrives, in pieces of whole lines, so a 200 MB file never sits in memory
// whole (the page streams its download into it; natively the file is read in pieces).
// Tree::add_folded does the parsing; errors name the line number in the whole file.
class FoldedParser {
 public:
  FoldedParser();
  void add(const char* data, size_t size);
  Status finish();  // a last line without a newline; returns the status of the whole parse
  const Status& status() const { return status_; }
  std::unique_ptr<Tree> take_tree() { return std::move(tree_); }

 private:
  void feed(std::string_view whole_lines);
  std::unique_ptr<Tree> tree_;
  std::string carry_;       // a line cut by the end of a piece
  size_t lines_done_ = 0;
  Status status_;
};

// One file to open: a path on disk (native), bytes in memory (browser), or folded text already parsed
// while it streamed in. Bytes must come from malloc(); the viewer owns and frees them.
struct LoadInput {
  std::string name;           // shown to the user; its extension picks the format (.pyro / folded text)
  std::string path;           // read from disk when non-empty
  uint8_t* bytes = nullptr;   // otherwise these bytes
  size_t size = 0;
  int64_t modified_unix = 0;  // folded text has no timestamps: its samples are placed at this time
  std::unique_ptr<FoldedParser> folded;  // set: folded text streamed in (size = its byte count)
};

struct LoadedFile {
  std::string name;
  uint64_t bytes = 0;
  bool folded = false;        // imported from folded text
  uint64_t samples = 0;       // folded: samples imported
};

// Folded text opened as one application: the tree Tree::from_folded built, kept as it is (the
// query of its single block would be the same tree), placed at one 10 s block.
struct FoldedSource {
  std::string app;
  int64_t time = 0;                 // start of its block, unix seconds
  std::unique_ptr<Tree> tree;
};

struct TimeRange {
  int64_t from = 0;   // unix seconds
  int64_t until = 0;  // exclusive
  bool valid() const { return until > from; }
  bool operator==(const TimeRange& o) const { return from == o.from && until == o.until; }
  bool operator!=(const TimeRange& o) const { return !(*this == o); }
};

enum class ViewMode { single, comparison, diff };
enum class Panels { both, flame, table };
enum class Theme { dark, light };
enum class TableSort { name, self, total, left_total, right_total, change };

struct WidgetRect {
  std::string name;
  float x0, y0, x1, y1;  // framebuffer pixels, top-left origin
};

struct FreeDeleter {
  void operator()(uint8_t* p) const;
};

struct ViewerState {
  // --- Data -------------------------------------------------------------------------------------
  Dataset dataset;                      // the .pyro files
  std::vector<FoldedSource> folded;     // the folded-text files, one application each
  std::vector<LoadedFile> files;
  std::vector<std::unique_ptr<uint8_t, FreeDeleter>> buffers;  // spans the dataset's Files read from
  std::vector<LoadInput> pending;       // opened on the next frame, after a "Loading" frame is shown
  bool pending_announced = false;
  std::string error;                    // shown in a banner until dismissed or the next load
  std::string settings_error;           // bad URL or command-line settings: shown again after each load
  double last_load_ms = 0;

  // --- Selection: application and tags -----------------------------------------------------------
  std::vector<std::string> apps;
  std::string app;
  std::vector<std::string> tag_keys;
  std::vector<std::vector<std::string>> tag_values;        // per tag key
  std::map<std::string, std::vector<std::string>> selected_tags;  // key -> chosen values
  std::string selector;                                    // Selector text of the above
  // Sample count per tag value (tag explorer), for the current selector and main range.
  std::map<std::string, std::vector<uint64_t>> tag_value_samples;
  std::string tag_samples_key;

  // --- Time ---------------------------------------------------------------------------------------
  int64_t span_from = 0, span_until = 0, resolution = 10;
  TimeRange timeline_view;              // zoomed/panned window of the timeline
  TimeRange ranges[2];                  // [0] single view / left, [1] right
  int drag_target = 0;                  // which range a left-button drag on the timeline selects
  bool pair_ranges_chosen = false;      // left/right were set (else entering comparison splits the range)
  QueryResult timeline;
  std::string timeline_key;
  bool timeline_dragging = false;
  int timeline_drag_button = 0;
  int64_t timeline_drag_anchor = 0;
  bool timeline_panning = false;

  // --- Trees and views ----------------------------------------------------------------------------
  ViewMode view = ViewMode::single;
  QueryResult left, right;
  const Tree* left_tree = nullptr;      // &left.tree, or a folded source's tree
  const Tree* right_tree = nullptr;
  Tree empty_tree;                      // a folded source outside the selected range
  std::unique_ptr<DiffTree> diff;
  std::string trees_key;
  FlameGraph flame_left, flame_right, flame_diff;
  std::vector<FunctionRow> table_rows;
  std::vector<uint32_t> table_order;    // indices into table_rows, sorted and filtered
  bool table_dirty = true;
  bool table_order_dirty = true;
  TableSort table_sort = TableSort::total;
  bool table_ascending = false;
  float flame_fraction = 0.62f;         // share of the height the flame graph gets above the table
  Panels panels = Panels::both;         // single view: flame graph, table or both (URL ?view=)

  // --- Options ------------------------------------------------------------------------------------
  std::string search;
  char search_buffer[256] = {};
  bool focus_search = false;
  Orientation orientation = Orientation::icicle;
  ColourMode colour_mode = ColourMode::function;
  Theme theme = Theme::dark;
  bool theme_applied = false;
  float ui_scale = 1.0f;
  bool show_help = false;
  bool embed = false;                   // only the flame graph (URL ?embed=1)
  // Settings that need data (app, tags, from, until, ...): applied whenever a data set is loaded.
  std::map<std::string, std::string> requested;
  std::function<void()> open_dialog;    // the main's file picker; null hides the Open button
  // The main's way to save a file the user exports (browser: a download; natively: the working
  // directory). Returns where it went, or "" after setting error; null hides the Export menu.
  std::function<std::string(const std::string& name, const std::string& bytes)> save_file;
  int image_request_frames = 0;         // a PNG export waits one frame, so its menu is not in the image
  std::string image_request_name;
  // Share files (Export > Share) need the browser viewer's page, page script and single-file build.
  // The main gets them into share_parts: natively read from a folder; the page fetches them, so it
  // answers later (set_share_parts). Null, or share_unavailable set: the item is disabled, and
  // share_unavailable says why.
  std::function<void()> load_share_parts;
  std::string share_unavailable;
  std::unique_ptr<share::PageParts> share_parts;
  struct PendingShare {
    std::string name;      // of the .html
    std::string settings;  // JSON object: the view to open with
    std::string pyro;      // the slice
  };
  std::unique_ptr<PendingShare> pending_share;  // waiting for share_parts

  // --- Frame bookkeeping --------------------------------------------------------------------------
  int redraw_frames = 6;                // frames still to draw before idling
  uint64_t frame_count = 0;
  double last_frame_ms = 0;             // CPU time of the last frame (UI + render submission)
  double last_ui_ms = 0;                // of which building the UI (frame() and ImGui::Render())
  double frame_ms[240] = {};
  uint32_t frame_ms_count = 0;
  bool flame_painted = false;           // a frame with flame graph blocks has been drawn
  double first_flame_paint_ms = -1;     // set by the main (page time) when flame_painted first holds
  int bench_zoom_frames = 0;            // > 0: zoom in/out automatically, one step per frame
  int bench_zoom_total = 0;
  std::vector<double> bench_frame_ms;
  std::vector<double> bench_ui_ms;
  std::vector<WidgetRect> widgets;
  std::vector<std::string> log;         // recent notices (load times, query times)
};

// Style and fonts for the given UI scale (HiDPI). font_path may be empty (built-in font). The caller
// recreates the renderer's font texture afterwards.
void setup_style(ViewerState& state, float ui_scale, const std::string& font_path);
// Builds one frame of UI. Call between ImGui::NewFrame() and ImGui::Render().
void frame(ViewerState& state);
// Replaces the data set by these files (opened together as one data set on the next frame).
void open_files(ViewerState& state, std::vector<LoadInput> inputs);
// Opens them now, synchronously (used by the mains' command line and the page's entry points).
void load_pending(ViewerState& state);
// The selection (series of the selector; the range, or both ranges in comparison and diff) as the
// bytes of a small .pyro file, through Dataset::slice (or the folded source's tree). stats may be null;
// with two ranges, stats->series is the larger of the two ranges' counts.
Status slice_selection(const ViewerState& state, std::string* pyro, SliceStats* stats);
// Export > Slice and Export > Share: hand a .pyro / a share .html of the selection to save_file.
void export_slice(ViewerState& state);
void export_share(ViewerState& state);
// The main's answer to load_share_parts: the parts, or an error saying why there are none. Finishes
// a share that was waiting for them.
void set_share_parts(ViewerState& state, Status status, share::PageParts parts);
// Does the data work the next frame would start with (the selection's trees and their layouts) now,
// so that a page can finish opening files in one task and its next animation frame only draws.
void prepare_views(ViewerState& state);
// Input arrived or something changed: draw a few more frames. Six, because ImGui needs some after
// an event: a click is seen on press and release frames, and a popup it opens is laid out in a hidden
// frame before the frame that shows it.
void request_redraw(ViewerState& state, int frames = 6);
// True when a frame should be drawn now; consumes one from the redraw budget.
bool needs_frame(ViewerState& state);
// Records the last frame's time (ms): all of it, and the part spent building the UI.
void record_frame_time(ViewerState& state, double ms, double ui_ms);
// Starts the zoom benchmark: `frames` frames zooming the main flame graph in and out.
void start_zoom_benchmark(ViewerState& state, int frames);
// The page's / the tests' view of the state, as JSON (see docs/viewer.md).
std::string status_json(const ViewerState& state);

// Command-line / URL style settings shared by both mains: view=single|comparison|diff, search=...,
// theme=dark|light, orientation=icicle|flame, colour=function|package, app=..., tags=k=v,k2=v2,
// from=unix, until=unix (clamped to the years 0000-9999), embed=1. Unknown keys are an error naming
// the key.
Status apply_setting(ViewerState& state, const std::string& key, const std::string& value);

// A PNG export of the flame graph asked for in the UI. The mains call this after rendering a frame; when
// it returns true they read the rectangle (ImGui coordinates, top-left origin) from the framebuffer and
// hand the PNG to save_file under `name`.
struct ImageRequest {
  std::string name;
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};
bool take_image_request(ViewerState& state, ImageRequest* out);

}  // namespace pyroscope::viewer
