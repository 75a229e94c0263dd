// The viewer's UI, shared by the native (main_native.cpp) and WebAssembly (main_wasm.cpp) builds.
//
// It draws a session (session/session.hpp), which holds the data, the selection, the queries, the
// settings and the exports; this layer adds only what is about drawing: flame graph layouts, the
// table's order, the timeline's zoom and drag, the theme, and the frame bookkeeping. Everything here
// is platform-free: one ViewerState, one frame(state) called between ImGui's NewFrame() and
// Render(). The mains own the window, the GL context and the event loop; they reach the UI through
// open_files(), apply_setting() and the Host interface (file picker, saving, the share files' parts),
// and ask needs_frame() whether anything changed since the last frame, so an idle viewer does not redraw.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flame_graph.hpp"
#include "pyroscope.hpp"
#include "session.hpp"
#include "share_page.hpp"

namespace pyroscope::viewer {

using session::LoadInput;
using session::Panels;
using session::TableSort;
using session::Theme;
using session::ViewMode;

// What a platform main does for the UI. The UI calls these; it never reaches the platform otherwise.
class Host {
 public:
  virtual ~Host() = default;
  // A file picker. can_open_files() false hides the Open buttons (files come from the command line).
  virtual bool can_open_files() const { return false; }
  virtual void open_files_dialog() {}
  // Saves a file the user exported (browser: a download; natively: the working directory). Returns
  // where it went, or "" with *error saying why not.
  virtual std::string save_file(const std::string& name, const std::string& bytes, std::string* error) = 0;
  // Share files need the browser viewer's page, page script and single-file build: "" when
  // request_share_parts() can get them, else why not (shown on the disabled menu item).
  virtual std::string share_unavailable() const = 0;
  // Asks for them; the answer comes through set_share_parts(), now or later.
  virtual void request_share_parts() {}
  // "Copy link": query is the view's settings as a URL query (Session::settings_query). The host
  // makes the link from it (the browser: this page's address with its file= parameters; natively: a
  // command line) and puts it on the clipboard. Returns the link, or "" when there is none.
  virtual std::string copy_link(const std::string& query) { (void)query; return std::string(); }
};

struct WidgetRect {
  std::string name;
  float x0, y0, x1, y1;  // framebuffer pixels, top-left origin
};

struct ViewerState {
  session::Session session;
  Host* host = nullptr;

  // --- Opening ------------------------------------------------------------------------------------
  std::vector<LoadInput> pending;       // opened on the next frame, after a "Loading" frame is shown
  bool pending_announced = false;
  std::string error;                    // shown in a banner until dismissed or the next load
  std::string settings_error;           // bad URL or command-line settings: shown again after each load

  // --- Timeline -----------------------------------------------------------------------------------
  TimeRange timeline_view;              // zoomed/panned window of the timeline
  int drag_target = 0;                  // which range a left-button drag on the timeline selects
  bool timeline_dragging = false;
  int timeline_drag_button = 0;
  int64_t timeline_drag_anchor = 0;
  bool timeline_panning = false;

  // --- Views --------------------------------------------------------------------------------------
  FlameGraph flame_left, flame_right, flame_diff;
  FlameGraph flame_callers, flame_callees;  // the sandwich view: callers above, callees below
  std::string sandwich_function;  // the function of the sandwich the two graphs show
  const FlameGraph* focus_synced_graph = nullptr;  // the graph whose focus the session's focus setting follows
  uint64_t focus_synced_changes = 0;
  double sandwich_layout_ms = 0;
  std::string last_link;                // what the last "Copy link" copied
  std::vector<session::FunctionRow> table_rows;
  std::vector<uint32_t> table_order;    // indices into table_rows, sorted and filtered
  bool table_dirty = true;
  uint64_t table_builds = 0;  // times the rows were built (status JSON: tests check what rebuilds them)
  bool table_order_dirty = true;
  TableSort table_sort = TableSort::total;
  bool table_ascending = false;
  float flame_fraction = 0.62f;         // share of the height the flame graph gets above the table

  // --- Options ------------------------------------------------------------------------------------
  char search_buffer[256] = {};
  bool focus_search = false;
  bool theme_applied = false;
  float ui_scale = 1.0f;
  bool show_help = false;
  int image_request_frames = 0;         // a PNG export waits one frame, so its menu is not in the image
  std::string image_request_name;
  std::unique_ptr<share::PageParts> share_parts;  // the host's answer, kept for later shares
  bool share_waiting = false;           // a share waits for share_parts

  // --- Frame bookkeeping --------------------------------------------------------------------------
  int redraw_frames = 6;                // frames still to draw before idling
  uint64_t frame_count = 0;
  double last_frame_ms = 0;             // CPU time of the last frame (UI + render submission)
  double last_ui_ms = 0;                // of which building the UI (frame() and ImGui::Render())
  double frame_ms[240] = {};
  uint32_t frame_ms_count = 0;
  bool flame_painted = false;           // a frame with flame graph blocks has been drawn
  double first_flame_paint_ms = -1;     // set by the main (page time) when flame_painted first holds
  double warm_up_ms = -1;               // warm_up_analysis ran, taking this long
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
// Export > Slice and Export > Share: hand a .pyro / a share .html of the selection to the host.
void export_slice(ViewerState& state);
void export_share(ViewerState& state);
// The host's answer to request_share_parts: the parts, or an error saying why there are none.
// Finishes a share that was waiting for them.
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
// Runs the analysis views' code once on a small made-up tree, so a JIT compiling WebAssembly (V8)
// has optimised it before a user first asks for a view (the browser main calls it on an idle page).
void warm_up_analysis(ViewerState& state);
// Starts the zoom benchmark: `frames` frames zooming the main flame graph in and out.
void start_zoom_benchmark(ViewerState& state, int frames);
// The page's / the tests' view of the state, as JSON (see docs/viewer.md).
std::string status_json(const ViewerState& state);

// A URL parameter or command-line option (Session::apply_setting lists them), applied to the session
// and to what the UI shows of it. Unknown keys and bad values are an error naming them.
Status apply_setting(ViewerState& state, const std::string& key, const std::string& value);

// A PNG export of the flame graph asked for in the UI. The mains call this after rendering a frame; when
// it returns true they read the rectangle (ImGui coordinates, top-left origin) from the framebuffer and
// hand the PNG to the host's save_file under `name`.
struct ImageRequest {
  std::string name;
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};
bool take_image_request(ViewerState& state, ImageRequest* out);

}  // namespace pyroscope::viewer
