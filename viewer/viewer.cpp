#include "viewer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "imgui.h"
#include "imgui_internal.h"  // ImGuiWindow::Hidden: widgets of windows not shown yet are not reported
#include "json.hpp"

namespace pyroscope::viewer {

using session::format_clock;
using session::format_range;
using session::floor_to;
using session::ceil_to;

// [SECTION] Small helpers ===========================================================================

namespace {

std::vector<WidgetRect>* g_widgets = nullptr;

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

// Writer of the status object: nested objects and arrays of any value.
class Json {
 public:
  Json& begin_object() { comma(); out_ += '{'; first_ = true; return *this; }
  Json& end_object() { out_ += '}'; first_ = false; return *this; }
  Json& begin_array() { comma(); out_ += '['; first_ = true; return *this; }
  Json& end_array() { out_ += ']'; first_ = false; return *this; }
  Json& key(std::string_view k) {
    comma();
    out_ += json::string(k);
    out_ += ':';
    first_ = true;
    return *this;
  }
  Json& str(std::string_view v) { comma(); out_ += json::string(v); return *this; }
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
  Json& raw(std::string_view v) { comma(); out_ += v; return *this; }
  const std::string& text() const { return out_; }

 private:
  void comma() {
    if (!first_) out_ += ',';
    first_ = false;
  }
  std::string out_;
  bool first_ = true;
};

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

void add_log(ViewerState& state, std::string line) {
  state.log.push_back(std::move(line));
  if (state.log.size() > 20) state.log.erase(state.log.begin());
}

// Hands bytes to the host; logs where they went, or shows why not.
void save(ViewerState& state, const std::string& name, const std::string& bytes, const std::string& what) {
  if (!state.host) return;
  std::string error;
  const std::string where = state.host->save_file(name, bytes, &error);
  if (where.empty()) {
    state.error = error.empty() ? "cannot save " + name : error;
  } else {
    add_log(state, "exported " + where + (what.empty() ? "" : " (" + what + ")"));
  }
  request_redraw(state);
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

// The views show trees of the session's results: they let go of them before the results change.
void clear_views(ViewerState& state) {
  state.flame_left.clear();
  state.flame_right.clear();
  state.flame_diff.clear();
  state.flame_callers.clear();
  state.flame_callees.clear();
  state.table_rows.clear();
  state.table_order.clear();
  state.table_dirty = true;
}

}  // namespace

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
  clear_views(state);  // the session replaces the trees they point into
  const std::string problems = state.session.open(std::move(inputs));
  if (state.session.empty()) {
    state.error = problems;
    request_redraw(state);
    return;
  }
  state.error = state.settings_error;
  for (const std::string& more : {state.session.error(), problems})
    if (!more.empty()) state.error += (state.error.empty() ? "" : "\n") + more;
  char line[160];
  std::snprintf(line, sizeof line, "opened %zu file(s) in %.0f ms", state.session.sources().size(),
                state.session.last_open_ms());
  add_log(state, line);
  state.timeline_view = state.session.extent();
  state.flame_painted = false;
  request_redraw(state);
}

// [SECTION] Selection and derived data ==============================================================

namespace {

// The focused node as names (root first), to find it again in the tree of the next query.
void names_of_path(const FlameGraph& graph, std::vector<std::string>* names) { *names = graph.focus_names(); }

void refocus(FlameGraph& graph, const std::vector<std::string>& names) {
  if (!names.empty()) graph.focus_names(names);
}

FlameGraph& primary_flame(ViewerState& state) {
  switch (state.session.selection().view) {
    case ViewMode::diff: return state.flame_diff;
    case ViewMode::sandwich: return state.flame_callees;
    default: return state.flame_left;
  }
}

// The graph whose matched share the search reports: the whole profile's (in the diff view, the diff's),
// also in the sandwich view, whose graphs hold one function's samples only.
const FlameGraph& search_flame(const ViewerState& state) {
  return state.session.selection().view == ViewMode::diff ? state.flame_diff : state.flame_left;
}

// Every flame graph the current view shows.
std::vector<FlameGraph*> shown_graphs(ViewerState& state) {
  switch (state.session.selection().view) {
    case ViewMode::single: return {&state.flame_left};
    case ViewMode::comparison: return {&state.flame_left, &state.flame_right};
    case ViewMode::diff: return {&state.flame_diff};
    case ViewMode::sandwich: return {&state.flame_callers, &state.flame_callees};
  }
  return {};
}

std::vector<FlameGraph*> all_graphs(ViewerState& state) {
  return {&state.flame_left, &state.flame_right, &state.flame_diff, &state.flame_callers, &state.flame_callees};
}

// The session's focus setting (a link's focus=, or the last focus clicked) applied to the view's main
// graph; in the comparison view to both sides.
void apply_focus_setting(ViewerState& state) {
  const std::vector<std::string>& focus = state.session.view_settings().focus;
  FlameGraph& primary = primary_flame(state);
  primary.focus_names(focus);
  if (state.session.selection().view == ViewMode::comparison) state.flame_right.focus_names(focus);
  state.focus_synced_graph = &primary;
  state.focus_synced_changes = primary.focus_changes();
}

// The other way: a focus clicked or keyed in the main graph becomes the session's focus setting (what
// a link carries). A graph that just became the main one (another view) does not overwrite it.
void sync_focus_setting(ViewerState& state) {
  FlameGraph& primary = primary_flame(state);
  if (!primary.tree()) return;
  if (state.focus_synced_graph != &primary) {
    apply_focus_setting(state);
    return;
  }
  if (primary.focus_changes() == state.focus_synced_changes) return;
  state.focus_synced_changes = primary.focus_changes();
  state.session.view_settings().focus = primary.focus_names();
  if (state.session.selection().view == ViewMode::comparison) state.flame_right.focus_names(state.session.view_settings().focus);
}

void prepare_graph(ViewerState& state, FlameGraph& graph, const Tree* tree, const DiffTree* diff) {
  const session::Session& s = state.session;
  graph.set_tree(tree, diff);
  graph.set_units(s.info());
  graph.set_names(&s.frame_names());
  graph.set_diff_scale(s.diff_scale());
  graph.set_search(s.view_settings().search);
}

// Lays the session's trees out again when its results changed, keeping each graph's focus.
void update_trees(ViewerState& state) {
  if (state.session.empty()) return;
  // The focus paths are read before the session replaces the trees the graphs point into.
  std::vector<std::string> left_focus, right_focus, diff_focus;
  names_of_path(state.flame_left, &left_focus);
  names_of_path(state.flame_right, &right_focus);
  names_of_path(state.flame_diff, &diff_focus);
  // A sandwich computed again at a finer detail (Session::refine_sandwich) keeps both graphs' zoom.
  std::vector<std::string> callers_focus, callees_focus;
  const std::string sandwich_function = state.session.view_settings().function;
  const bool same_function = sandwich_function == state.sandwich_function;
  names_of_path(state.flame_callers, &callers_focus);
  names_of_path(state.flame_callees, &callees_focus);
  // The sandwich view does not show the main graph: its layout's memory (and the old sandwich's)
  // serves the new sandwich's trees and layouts instead of growing the heap, whose fresh pages are
  // slow in the browser (docs/viewer.md).
  if (state.session.selection().view == ViewMode::sandwich) {
    state.flame_left.release_layout();
    if (state.session.sandwich_stale()) {
      state.flame_callers.clear();
      state.flame_callees.clear();
      state.flame_callers.release_layout();
      state.flame_callees.release_layout();
    }
  }
  const double start = now_ms();
  const unsigned changed = state.session.update_trees();
  if (!changed) return;
  const double queried = now_ms();
  const session::Session& s = state.session;
  if (!s.error().empty()) state.error = s.error();
  if (changed & session::Session::kTreesChanged) {
    clear_views(state);
    prepare_graph(state, state.flame_left, &s.left_view(), nullptr);
    refocus(state.flame_left, left_focus);
    if (s.selection().pair() && s.diff()) {
      prepare_graph(state, state.flame_right, &s.right_view(), nullptr);
      refocus(state.flame_right, right_focus);
      prepare_graph(state, state.flame_diff, &s.diff()->shape(), s.diff());
      refocus(state.flame_diff, diff_focus);
    }
    char line[200];
    std::snprintf(line, sizeof line, "query %.0f ms (%llu merges), layout %.0f ms, %u nodes", queried - start,
                  static_cast<unsigned long long>(s.left().merges + s.right().merges), now_ms() - queried,
                  s.left_view().node_count());
    add_log(state, line);
  }
  if (s.selection().view == ViewMode::sandwich) {
    const double laid_out = now_ms();
    state.flame_callers.clear();
    state.flame_callees.clear();
    if (const Sandwich* sandwich = s.sandwich()) {
      prepare_graph(state, state.flame_callers, &sandwich->callers, nullptr);
      prepare_graph(state, state.flame_callees, &sandwich->callees, nullptr);
      state.flame_callers.set_whole_total(s.left_view().total());
      state.flame_callees.set_whole_total(s.left_view().total());
      if (same_function) {
        refocus(state.flame_callers, callers_focus);
        refocus(state.flame_callees, callees_focus);
      }
      state.sandwich_function = sandwich_function;
    }
    state.sandwich_layout_ms = now_ms() - laid_out;
    char line[240];
    std::snprintf(line, sizeof line, "sandwich %.0f ms (callers %u nodes, callees %u nodes), layout %.0f ms",
                  s.sandwich_ms(), s.sandwich() ? s.sandwich()->callers.node_count() : 0,
                  s.sandwich() ? s.sandwich()->callees.node_count() : 0, state.sandwich_layout_ms);
    add_log(state, line);
  }
  apply_focus_setting(state);
  // The table lists the functions of the view trees (clear_views marked it when they changed): a new
  // sandwich alone leaves it as it is. Building it again cost every sandwich a pass over the whole tree
  // (mark_outermost and the rows: 35 ms of the 2.7M-node tree's 160 in the browser).
}

const Tree* table_tree(const ViewerState& state) {
  if (!state.session.selection().pair()) return state.flame_left.tree();
  return state.session.diff() ? &state.session.diff()->shape() : nullptr;
}

void update_table(ViewerState& state) {
  const session::Session& s = state.session;
  const Tree* tree = table_tree(state);
  if (state.table_dirty) {
    state.table_dirty = false;
    state.table_order_dirty = true;
    state.table_builds++;
    state.table_rows.clear();
    if (tree) session::function_rows(*tree, s.selection().pair() ? s.diff() : nullptr, &state.table_rows);
  }
  if (!state.table_order_dirty) return;
  state.table_order_dirty = false;
  state.table_order.clear();
  if (!tree) return;
  const SymbolTable& symbols = tree->symbols();
  const NameSearch search(s.view_settings().search);
  for (uint32_t i = 0; i < state.table_rows.size(); ++i) {
    if (search.empty() || s.frame_names().matches(search, symbols.name(state.table_rows[i].symbol))) {
      state.table_order.push_back(i);
    }
  }
  const session::DiffScale scale = s.diff_scale();
  session::sort_rows(*tree, s.selection().pair() ? s.diff() : nullptr, state.table_rows, state.table_sort,
                     state.table_ascending, &state.table_order, &scale);
}

void apply_search(ViewerState& state, const std::string& term) {
  if (term == state.session.view_settings().search) return;
  state.session.view_settings().search = term;
  std::snprintf(state.search_buffer, sizeof state.search_buffer, "%s", term.c_str());
  for (FlameGraph* graph : all_graphs(state)) graph->set_search(term);
  state.table_order_dirty = true;
}

void set_view(ViewerState& state, ViewMode view) {
  if (state.session.selection().view == view) return;
  state.session.set_view(view);
  state.table_dirty = true;
  if (view == ViewMode::single) state.drag_target = 0;
}

// The sandwich view of a function, as its frames are named in the view trees.
void show_sandwich(ViewerState& state, const std::string& function) {
  state.session.view_settings().function = function;
  state.session.view_settings().focus.clear();  // a focus in another function's callees means nothing here
  set_view(state, ViewMode::sandwich);
  request_redraw(state);
}

void set_diff_mode(ViewerState& state, session::DiffMode mode) {
  state.session.view_settings().diff_mode = mode;
  const session::DiffScale scale = state.session.diff_scale();
  for (FlameGraph* graph : all_graphs(state)) graph->set_diff_scale(scale);
  state.table_order_dirty = true;
}

void select_app(ViewerState& state, const std::string& app) {
  state.session.select_app(app);
  state.timeline_view = state.session.extent();
}

}  // namespace

// [SECTION] Settings =================================================================================

Status apply_setting(ViewerState& state, const std::string& key, const std::string& value) {
  const std::string app_before = state.session.selection().app;
  const Status status = state.session.apply_setting(key, value);
  if (!status.ok()) return status;
  if (key == "search") {
    const std::string term = value;
    state.session.view_settings().search.clear();  // apply_search tells the graphs
    apply_search(state, term);
  } else if (key == "theme") {
    state.theme_applied = false;
  } else if (key == "view") {
    state.table_dirty = true;
    if (!state.session.selection().pair()) state.drag_target = 0;
  } else if (key == "diff_mode") {
    set_diff_mode(state, state.session.view_settings().diff_mode);
  } else if (key == "focus") {
    apply_focus_setting(state);
  } else if (key == "compare") {
    state.table_dirty = true;
  }
  if (state.session.selection().app != app_before) state.timeline_view = state.session.extent();
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
      // Latin-1 and the ellipsis of short names' collapsed template arguments (std::vector<…>).
      static const ImWchar kGlyphs[] = {0x0020, 0x00FF, 0x2026, 0x2026, 0};
      loaded = io.Fonts->AddFontFromFileTTF(font_path.c_str(), std::round(15.0f * ui_scale), &config, kGlyphs) != nullptr;
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
  if (state.session.view_settings().theme == Theme::dark) {
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

// V8 compiles a WebAssembly function with its baseline compiler at its first call and, once it has run
// a while, optimises it in the background for its later calls only. A sandwich is one call that walks
// millions of nodes: the page's first ran at baseline speed, ~50 ms slower than the next (node: 171 ms
// against 108-133 ms with the module optimised up front; bench/README.md). A tree of ~40,000 nodes in
// name preorder (as queries give) has both kinds of group a sandwich handles, places merged from many
// calls and single chains and subtrees copied as they are; three pruned sandwiches of it (as the viewer
// asks for them) take 15-42 ms once and leave that code optimised.
void warm_up_analysis(ViewerState& state) {
  if (state.warm_up_ms >= 0) return;
  const double started = now_ms();
  std::vector<std::string> names;
  for (int i = 0; i < 64; i++) names.push_back("warm_up_" + std::to_string(i));
  Tree tree;
  std::vector<std::string_view> frames;
  uint32_t seed = 1;
  const auto next = [&seed] { return seed = seed * 1664525u + 1013904223u, seed >> 8; };
  for (int stack = 0; stack < 3000; stack++) {
    frames.clear();
    const uint32_t depth = 4 + next() % 24;
    for (uint32_t d = 0; d < depth; d++) frames.push_back(names[next() % names.size()]);
    tree.insert(frames, 1 + next() % 8);
  }
  tree.renumber_in_name_preorder();
  Sandwich sandwich;
  for (int i = 0; i < 3; i++) (void)pyroscope::sandwich(tree, names[0], &sandwich, session::Session::kSandwichDetail);
  state.warm_up_ms = now_ms() - started;
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

void finish_share(ViewerState& state) {
  if (!state.share_waiting || !state.share_parts) return;
  state.share_waiting = false;
  std::string html;
  pyroscope::SliceStats stats;
  const Status status = state.session.share_page(*state.share_parts, &html, &stats);
  if (!status.ok()) {
    state.error = "share: " + status.message();
    request_redraw(state);
    return;
  }
  save(state, state.session.file_name(".html"), html, std::to_string(html.size()) + " bytes");
}

}  // namespace

void export_slice(ViewerState& state) {
  std::string pyro;
  SliceStats stats;
  const Status status = state.session.slice(&pyro, &stats);
  if (!status.ok()) {
    state.error = "slice: " + status.message();
    return;
  }
  save(state, state.session.file_name(".pyro"), pyro,
       std::to_string(stats.blocks) + " blocks, " + std::to_string(stats.samples) + " samples, " +
           std::to_string(pyro.size()) + " bytes");
}

void export_share(ViewerState& state) {
  const std::string unavailable = state.host ? state.host->share_unavailable() : std::string("not available here");
  if (!state.share_parts && !unavailable.empty()) {
    state.error = "share: " + unavailable;
    return;
  }
  state.share_waiting = true;
  if (state.share_parts) finish_share(state);
  else state.host->request_share_parts();  // answers through set_share_parts, now or later
}

void set_share_parts(ViewerState& state, Status status, share::PageParts parts) {
  if (!status.ok()) {
    state.error = "share: " + status.message();
    state.share_waiting = false;
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

// "Copy link": the view's settings to the host, which makes the link and copies it.
void copy_link(ViewerState& state) {
  const std::string query = state.session.settings_query();
  const std::string link = state.host ? state.host->copy_link(query) : std::string();
  state.last_link = link.empty() ? query : link;
  add_log(state, "link copied: " + state.last_link);
  request_redraw(state);
}

// The selection's tree (the left one in pair views) for other tools: pprof or speedscope.
void export_profile(ViewerState& state, Format format) {
  session::Session::NamedText file;
  const Status status = state.session.export_profile(format, &file);
  if (!status.ok()) {
    state.error = std::string(format_name(format)) + ": " + status.message();
    return;
  }
  save(state, file.name, file.text, std::to_string(file.text.size()) + " bytes");
}

// The selection as folded text: the single view's tree, or both ranges' trees in the pair views.
void export_folded(ViewerState& state) {
  for (const session::Session::NamedText& file : state.session.folded()) save(state, file.name, file.text, "");
}

void draw_toolbar(ViewerState& state) {
  const float s = state.ui_scale;
  if (state.host && state.host->can_open_files()) {
    if (ImGui::Button("Open...")) state.host->open_files_dialog();
    record_item("open");
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("Open .pyro files or other profiles: pprof, folded, perf script,\nspeedscope, .cpuprofile (O) - or drop them on the window");
    ImGui::SameLine();
  }
  // Application.
  ImGui::AlignTextToFramePadding();
  ImGui::TextUnformatted("App");
  ImGui::SameLine();
  ImGui::SetNextItemWidth(200 * s);
  if (ImGui::BeginCombo("##app", state.session.selection().app.empty() ? "(none)" : state.session.selection().app.c_str())) {
    for (const std::string& app : state.session.apps()) {
      const bool selected = app == state.session.selection().app;
      if (ImGui::Selectable(app.c_str(), selected) && !selected) {
        select_app(state, app);
      }
      record_item("app:" + app);
    }
    ImGui::EndCombo();
  }
  record_item("app");
  // Profile type: cpu, alloc_space, inuse_space, ... with the unit its values are in.
  const std::vector<std::string>& types = state.session.types();
  if (types.size() > 1 || (types.size() == 1 && types[0] != kDefaultProfileType)) {
    ImGui::SameLine(0, 8 * s);
    ImGui::SetNextItemWidth(150 * s);
    const std::string& type = state.session.selection().type;
    if (ImGui::BeginCombo("##type", type.c_str())) {
      for (const std::string& t : types) {
        const bool selected = t == type;
        if (ImGui::Selectable(t.c_str(), selected) && !selected) state.session.select_type(t);
        record_item("type:" + t);
      }
      ImGui::EndCombo();
    }
    record_item("type");
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("Profile type (values in %s)", state.session.info().unit.c_str());
  }
  ImGui::SameLine(0, 16 * s);
  // View.
  if (toggle_button("Single", state.session.selection().view == ViewMode::single, "view.single")) set_view(state, ViewMode::single);
  ImGui::SameLine(0, 2 * s);
  if (toggle_button("Comparison", state.session.selection().view == ViewMode::comparison, "view.comparison")) {
    set_view(state, ViewMode::comparison);
  }
  ImGui::SameLine(0, 2 * s);
  if (toggle_button("Diff", state.session.selection().view == ViewMode::diff, "view.diff")) set_view(state, ViewMode::diff);
  ImGui::SameLine(0, 2 * s);
  if (toggle_button("Sandwich", state.session.selection().view == ViewMode::sandwich, "view.sandwich")) {
    set_view(state, ViewMode::sandwich);
  }
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("Callers and callees of one function (4, or S on a frame)");
  ImGui::SameLine(0, 16 * s);
  if (state.host && !state.session.empty()) {
    if (ImGui::Button("Export")) ImGui::OpenPopup("export-menu");
    record_item("export");
    if (ImGui::BeginPopup("export-menu")) {
      if (ImGui::Selectable(state.session.selection().view == ViewMode::single ? "Folded text (.folded)"
                                                           : "Folded text, left and right (.folded)")) {
        export_folded(state);
      }
      record_item("export:folded");
      if (ImGui::Selectable("Flame graph image (.png)")) {
        state.image_request_frames = 2;
        state.image_request_name = state.session.selection().app + "-" + std::to_string(state.session.selection().ranges[0].from) + "-" +
                                   std::to_string(state.session.selection().ranges[0].until) + ".png";
        request_redraw(state);
      }
      record_item("export:png");
      if (ImGui::Selectable("Slice of the selection (.pyro)")) export_slice(state);
      record_item("export:slice");
      for (const auto& [format, label, widget] :
           {std::make_tuple(Format::pprof, "pprof, for go tool pprof and Grafana (.pb.gz)", "export:pprof"),
            std::make_tuple(Format::speedscope, "speedscope (.json)", "export:speedscope")}) {
        if (ImGui::Selectable(label)) export_profile(state, format);
        record_item(widget);
      }
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("The selected series and range as a small .pyro file");
      const std::string unavailable = state.share_parts ? std::string() : state.host->share_unavailable();
      const bool can_share = unavailable.empty();
      if (ImGui::Selectable("Share file (.html)", false, can_share ? 0 : ImGuiSelectableFlags_Disabled)) export_share(state);
      record_item("export:share");
      if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled)) {
        ImGui::SetTooltip("%s", can_share ? "One .html with the viewer and this selection: opens with no server"
                                          : unavailable.c_str());
      }
      ImGui::EndPopup();
    }
    ImGui::SameLine(0, 4 * s);
    if (ImGui::Button("Copy link")) copy_link(state);
    record_item("copy_link");
    if (ImGui::IsItemHovered()) {
      ImGui::SetTooltip("A link to exactly this view: data, tags, ranges, view, focus, function, search, names, diff mode%s",
                        state.last_link.empty() ? "" : ("\n\nCopied: " + state.last_link).c_str());
    }
    ImGui::SameLine(0, 16 * s);
  }
  // Search.
  ImGui::SetNextItemWidth(220 * s);
  if (state.focus_search) {
    ImGui::SetKeyboardFocusHere();
    state.focus_search = false;
  }
  if (ImGui::InputTextWithHint("##search", "Search: regex, -exclude (/)", state.search_buffer, sizeof state.search_buffer)) {
    apply_search(state, state.search_buffer);
  }
  record_item("search");
  if (ImGui::IsItemHovered()) {
    ImGui::SetTooltip("Terms separated by spaces, each a regular expression found anywhere in the full name\n"
                      "(any case; ^ and $ anchor it). -term leaves functions out; \"a b\" quotes a term with a space.\n"
                      "Example: json::(parse|dump) -string");
  }
  if (ImGui::IsItemActive() && ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape))) {
    apply_search(state, "");
  }
  ImGui::SameLine(0, 4 * s);
  ImGui::Checkbox("Focus", &state.session.view_settings().focus_matches);
  record_item("focus_matches");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("Focus on matches: dim every frame that is not on a stack through a match");
  if (!state.session.view_settings().search.empty()) {
    ImGui::SameLine();
    const FlameGraph& graph = search_flame(state);
    ImGui::TextColored(ImVec4(0.35f, 0.65f, 1.0f, 1.0f), "%s in %u functions", format_share(graph.matched_share()).c_str(),
                       graph.matched_functions());
    record_item("search.share");
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("Share of all samples with a matching function on the stack (each sample once)");
  }
  // Right side: display toggles.
  const char* orientation = state.session.view_settings().orientation == Orientation::icicle ? "Icicle" : "Flame";
  const char* colour = state.session.view_settings().colour == ColourMode::function ? "By function" : "By package";
  const char* theme = state.session.view_settings().theme == Theme::dark ? "Dark" : "Light";
  static const char* const kNameLabels[] = {"Names: full", "Names: short", "Names: merged"};
  static const char* const kRecursionLabels[] = {"Recursion: keep", "Recursion: direct", "Recursion: all"};
  const float names_w = ImGui::CalcTextSize("Names: merged").x + ImGui::GetFrameHeight() + 2 * ImGui::GetStyle().FramePadding.x;
  const float recursion_w = ImGui::CalcTextSize("Recursion: direct").x + ImGui::GetFrameHeight() +
                            2 * ImGui::GetStyle().FramePadding.x;
  place_right(names_w + recursion_w + button_width(orientation) + button_width(colour) + button_width(theme) +
                  button_width("?") + 24 * s, s);
  session::ViewSettings& view = state.session.view_settings();
  ImGui::SetNextItemWidth(names_w);
  if (ImGui::BeginCombo("##names", kNameLabels[static_cast<int>(view.names)])) {
    for (int m = 0; m < 3; ++m) {
      if (ImGui::Selectable(kNameLabels[m], static_cast<int>(view.names) == m)) view.names = static_cast<session::NameMode>(m);
      record_item(std::string("names:") + name_of(static_cast<session::NameMode>(m)));
    }
    ImGui::EndCombo();
  }
  record_item("names");
  if (ImGui::IsItemHovered()) {
    ImGui::SetTooltip("C++ names: full; short (no parameters, template arguments as <…>); or short with the\n"
                      "frames that became equal merged. Tooltips, search and exports keep the full names.  [N]");
  }
  ImGui::SameLine(0, 4 * s);
  ImGui::SetNextItemWidth(recursion_w);
  if (ImGui::BeginCombo("##recursion", kRecursionLabels[static_cast<int>(view.recursion)])) {
    for (int m = 0; m < 3; ++m) {
      if (ImGui::Selectable(kRecursionLabels[m], static_cast<int>(view.recursion) == m)) {
        view.recursion = static_cast<session::RecursionMode>(m);
      }
      record_item(std::string("recursion:") + name_of(static_cast<session::RecursionMode>(m)));
    }
    ImGui::EndCombo();
  }
  record_item("recursion");
  if (ImGui::IsItemHovered()) {
    ImGui::SetTooltip("Collapse recursion: direct (f;f;g -> f;g) or all of it (f;g;f;h -> f;g;h).\n"
                      "Every function keeps its total.  [R: select all time]");
  }
  ImGui::SameLine(0, 4 * s);
  if (ImGui::Button(orientation)) {
    state.session.view_settings().orientation = state.session.view_settings().orientation == Orientation::icicle ? Orientation::flame : Orientation::icicle;
    state.flame_left.scroll_to_focus();
    state.flame_right.scroll_to_focus();
    state.flame_diff.scroll_to_focus();
  }
  record_item("orientation");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("Root at the top (icicle) or bottom (flame)  [F]");
  ImGui::SameLine(0, 4 * s);
  if (ImGui::Button(colour)) {
    state.session.view_settings().colour = state.session.view_settings().colour == ColourMode::function ? ColourMode::package : ColourMode::function;
  }
  record_item("colour");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("Colour per function or per package  [C]");
  ImGui::SameLine(0, 4 * s);
  if (ImGui::Button(theme)) {
    state.session.view_settings().theme = state.session.view_settings().theme == Theme::dark ? Theme::light : Theme::dark;
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
  ImGui::TextWrapped("Open a .pyro file written by pyroscope.hpp, or a profile other tools write: pprof (Go, "
                     "gperftools, Pyroscope agents), folded stacks (perf + stackcollapse, FlameGraph), perf script "
                     "output, speedscope JSON or a Chrome/Node .cpuprofile. Several files open together as one data set.");
  ImGui::Spacing();
  if (state.host && state.host->can_open_files()) {
    if (ImGui::Button("Open files...")) state.host->open_files_dialog();
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
  const std::map<std::string, std::vector<uint64_t>>& tag_samples = state.session.tag_value_samples();
  ImGui::TextUnformatted("Tags");
  ImGui::SameLine();
  bool any = false;
  const session::Selection& selection = state.session.selection();
  for (const auto& [k, v] : selection.tags) any |= !v.empty();
  if (!any) ImGui::BeginDisabled();
  if (ImGui::SmallButton("Clear all")) {
    state.session.clear_tags();
  }
  record_item("tags.clear");
  if (!any) ImGui::EndDisabled();
  ImGui::Separator();
  if (state.session.tag_keys().empty()) {
    ImGui::TextDisabled("This application has no tags.");
    return;
  }
  for (size_t k = 0; k < state.session.tag_keys().size(); ++k) {
    const std::string& key = state.session.tag_keys()[k];
    ImGui::PushID(key.c_str());
    if (ImGui::TreeNodeEx(key.c_str(), ImGuiTreeNodeFlags_DefaultOpen | ImGuiTreeNodeFlags_SpanAvailWidth)) {
      record_item("tagkey:" + key);
      const auto chosen_it = selection.tags.find(key);
      std::vector<std::string> chosen = chosen_it == selection.tags.end() ? std::vector<std::string>() : chosen_it->second;
      const auto counts_it = tag_samples.find(key);
      const std::vector<uint64_t>* counts = counts_it == tag_samples.end() ? nullptr : &counts_it->second;
      uint64_t key_total = 0;
      if (counts) {
        for (uint64_t c : *counts) key_total += c;
      }
      const auto& values = state.session.tag_values()[k];
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
          state.session.set_tag_values(key, chosen);
        }
        record_item("tag:" + key + "=" + value);
        if (counts && v < counts->size()) {
          const double share = key_total ? double((*counts)[v]) / double(key_total) : 0.0;
          ImGui::SameLine(ImGui::GetWindowContentRegionMax().x - 64 * s);
          ImGui::TextDisabled("%6.1f%%", share * 100.0);
          if (ImGui::IsItemHovered()) {
            ImGui::SetTooltip("%s in the selected range", session::format_value((*counts)[v], state.session.info()).c_str());
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
  const int64_t full = state.session.span().until - state.session.span().from;
  int64_t width = v.until - v.from;
  width = std::clamp<int64_t>(width, std::min<int64_t>(full, 6 * state.session.resolution()), full);
  int64_t from = std::clamp<int64_t>(v.from, state.session.span().from, state.session.span().until - width);
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

// Line colours of a tag breakdown (Okabe and Ito's palette, told apart by most colour-blind readers);
// the rest is grey.
const ImU32 kBreakdownColours[] = {IM_COL32(86, 180, 233, 255), IM_COL32(230, 159, 0, 255),  IM_COL32(0, 158, 115, 255),
                                   IM_COL32(204, 121, 167, 255), IM_COL32(240, 228, 66, 255), IM_COL32(213, 94, 0, 255)};
const ImU32 kBreakdownRest = IM_COL32(150, 150, 156, 255);

ImU32 breakdown_colour(const session::TagBreakdown::Line& line, size_t index) {
  return line.rest ? kBreakdownRest : kBreakdownColours[index % (sizeof kBreakdownColours / sizeof kBreakdownColours[0])];
}

// Under the timeline: each line's value and share of the range. A click selects the value; "diff"
// shows the value against the rest.
void draw_breakdown_legend(ViewerState& state, const session::TagBreakdown& breakdown) {
  const float s = state.ui_scale;
  ImGui::AlignTextToFramePadding();
  ImGui::TextDisabled("%s:", breakdown.key.c_str());
  const auto chosen = state.session.selection().tags.find(breakdown.key);
  for (size_t i = 0; i < breakdown.lines.size(); ++i) {
    const session::TagBreakdown::Line& line = breakdown.lines[i];
    ImGui::SameLine(0, 12 * s);
    const ImVec2 p = ImGui::GetCursorScreenPos();
    const float box = ImGui::GetTextLineHeight() * 0.7f;
    const float y = p.y + (ImGui::GetFrameHeight() - box) * 0.5f;
    ImGui::GetWindowDrawList()->AddRectFilled(ImVec2(p.x, y), ImVec2(p.x + box, y + box), breakdown_colour(line, i), 2 * s);
    ImGui::Dummy(ImVec2(box, ImGui::GetFrameHeight()));
    ImGui::SameLine(0, 4 * s);
    char text[320];
    if (line.rest) {
      std::snprintf(text, sizeof text, "%zu other values %s", breakdown.values - (breakdown.lines.size() - 1),
                    format_share(line.share).c_str());
      ImGui::AlignTextToFramePadding();
      ImGui::TextUnformatted(text);
      record_item("legend.rest");
      continue;
    }
    const bool selected = chosen != state.session.selection().tags.end() && chosen->second.size() == 1 &&
                          chosen->second[0] == line.value;
    std::snprintf(text, sizeof text, "%s %s##legend%zu", line.value.c_str(), format_share(line.share).c_str(), i);
    if (toggle_button(text, selected, ("legend:" + line.value).c_str())) {
      if (selected) state.session.set_tag_values(breakdown.key, {});
      else state.session.set_tag_values(breakdown.key, {line.value});
    }
    if (ImGui::IsItemHovered()) {
      ImGui::SetTooltip("%s=%s: %s in the selected range (%s)\nclick: select it; again: all values", breakdown.key.c_str(),
                        line.value.c_str(), session::format_value(line.samples, state.session.info()).c_str(),
                        format_share(line.share).c_str());
    }
    ImGui::SameLine(0, 2 * s);
    ImGui::PushID(static_cast<int>(i));
    if (ImGui::SmallButton("diff")) {
      state.session.compare_tag(breakdown.key, line.value);
      state.table_dirty = true;
    }
    ImGui::PopID();
    record_item("legend.diff:" + line.value);
    if (ImGui::IsItemHovered()) {
      ImGui::SetTooltip("Diff of %s=%s against the rest over the selected range", breakdown.key.c_str(), line.value.c_str());
    }
  }
  if (breakdown.lines.empty()) {
    ImGui::SameLine();
    ImGui::TextDisabled("no samples in the selected range");
  }
}

void draw_timeline(ViewerState& state) {
  const float s = state.ui_scale;
  const bool pair = state.session.selection().pair();
  // Header: ranges and controls.
  ImGui::AlignTextToFramePadding();
  if (pair) {
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kLeftColour), "Left: %s", format_range(state.session.selection().ranges[0]).c_str());
    ImGui::SameLine(0, 14 * s);
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kRightColour), "Right: %s", format_range(state.session.selection().ranges[1]).c_str());
  } else {
    ImGui::Text("Range: %s UTC", format_range(state.session.selection().ranges[0]).c_str());
  }
  const float spacing = ImGui::GetStyle().ItemSpacing.x;
  const float breakdown_w = 150 * s;
  float controls = button_width("-") + button_width("+") + button_width("Fit") + button_width("Select all") + 3 * spacing +
                   breakdown_w + ImGui::CalcTextSize("Lines by").x + 2 * spacing + 12 * s;
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
  // Tag breakdown: one line per value of a key.
  ImGui::AlignTextToFramePadding();
  ImGui::TextDisabled("Lines by");
  ImGui::SameLine();
  ImGui::SetNextItemWidth(breakdown_w);
  std::string& breakdown_key = state.session.view_settings().breakdown;
  if (ImGui::BeginCombo("##breakdown", breakdown_key.empty() ? "(none)" : breakdown_key.c_str())) {
    if (ImGui::Selectable("(none)", breakdown_key.empty())) breakdown_key.clear();
    record_item("breakdown:");
    for (const std::string& key : state.session.tag_keys()) {
      if (ImGui::Selectable(key.c_str(), key == breakdown_key)) breakdown_key = key;
      record_item("breakdown:" + key);
    }
    ImGui::EndCombo();
  }
  record_item("breakdown");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("A line per value of a tag: the top values, the rest together  [B]");
  ImGui::SameLine(0, 12 * s);
  if (ImGui::SmallButton("-")) zoom_timeline(state, 0.5, 0.5);
  record_item("timeline.zoom_out");
  ImGui::SameLine();
  if (ImGui::SmallButton("+")) zoom_timeline(state, 2.0, 0.5);
  record_item("timeline.zoom_in");
  ImGui::SameLine();
  if (ImGui::SmallButton("Fit")) state.timeline_view = TimeRange{state.session.span().from, state.session.span().until};
  record_item("timeline.fit");
  ImGui::SameLine();
  if (ImGui::SmallButton("Select all")) {
    state.session.set_range(pair ? state.drag_target : 0, state.timeline_view);
  }
  record_item("timeline.select_all");

  const ImVec2 p0 = ImGui::GetCursorScreenPos();
  const float width = std::max(50.0f, ImGui::GetContentRegionAvail().x);
  const float axis_h = ImGui::GetTextLineHeight() + 4 * s;
  const float plot_h = 70 * s;
  const size_t points = static_cast<size_t>(std::max(16.0f, width / 3.0f));
  const Timeline& tl = state.session.timeline(state.timeline_view, points).timeline;

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
    preview = TimeRange{floor_to(a, state.session.resolution()), ceil_to(b + 1, state.session.resolution())};
    preview.from = std::max(preview.from, state.session.span().from);
    preview.until = std::min(preview.until, state.session.span().until);
    preview_target = target;
    const bool moved = std::fabs(io.MousePos.x - io.MouseClickedPos[state.timeline_drag_button == 1 ? 1 : 0].x) > 3;
    if (!active) {
      state.timeline_dragging = false;
      if (moved && preview.valid() && (target == 0 || pair)) {
        state.session.set_range(target, preview);  // in a pair view, the ranges now count as chosen
      }
      preview_target = -1;
    } else if (!moved) {
      preview_target = -1;
    }
  }
  if (!active) state.timeline_panning = false;

  // Bars of the selection; with a breakdown, a line per value instead, on the lines' own scale (values
  // of similar size would otherwise crowd the bottom third of the plot).
  const session::TagBreakdown* breakdown =
      state.session.view_settings().breakdown.empty() ? nullptr : &state.session.tag_breakdown(view, points);
  if (breakdown && breakdown->lines.empty()) breakdown = nullptr;
  uint64_t max_value = 1;
  for (uint64_t v : tl.samples) max_value = std::max(max_value, v);
  if (breakdown) {
    max_value = 1;
    for (const session::TagBreakdown::Line& line : breakdown->lines)
      for (uint64_t v : line.points) max_value = std::max(max_value, v);
  }
  const ImU32 bar = state.session.view_settings().theme == Theme::dark ? IM_COL32(120, 170, 120, 255) : IM_COL32(90, 150, 90, 255);
  dl->PushClipRect(p0, ImVec2(p0.x + width, p0.y + plot_h), true);
  for (size_t i = 0; i < tl.samples.size() && !breakdown; ++i) {
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
  const ImU32 single_colour = state.session.view_settings().theme == Theme::dark ? IM_COL32(240, 190, 80, 255) : IM_COL32(210, 140, 20, 255);
  if (pair) {
    draw_range(preview_target == 0 ? preview : state.session.selection().ranges[0], kLeftColour);
    draw_range(preview_target == 1 ? preview : state.session.selection().ranges[1], kRightColour);
  } else {
    draw_range(preview_target == 0 ? preview : state.session.selection().ranges[0], single_colour);
  }
  // The breakdown's lines over the ranges' tint.
  if (breakdown) {
    const Timeline& bt = breakdown->timeline;
    std::vector<ImVec2> polyline;
    for (size_t l = breakdown->lines.size(); l-- > 0;) {  // the heaviest value last: on top
      const session::TagBreakdown::Line& line = breakdown->lines[l];
      polyline.clear();
      for (size_t i = 0; i < line.points.size(); ++i) {
        const double t = static_cast<double>(bt.start + static_cast<int64_t>(i) * bt.step) + 0.5 * static_cast<double>(bt.step);
        const float h = static_cast<float>(static_cast<double>(line.points[i]) / static_cast<double>(max_value)) * (plot_h - 6 * s);
        polyline.push_back(ImVec2(t2x(t), p0.y + plot_h - 1 - h));
      }
      if (polyline.size() > 1) {
        dl->AddPolyline(polyline.data(), static_cast<int>(polyline.size()), breakdown_colour(line, l), 0, 2.0f * s);
      } else if (polyline.size() == 1) {  // one point (a profile of one block): a level across its step
        const float x0 = t2x(static_cast<double>(bt.start)), x1 = t2x(static_cast<double>(bt.start + bt.step));
        dl->AddLine(ImVec2(x0, polyline[0].y), ImVec2(x1, polyline[0].y), breakdown_colour(line, l), 2.0f * s);
      }
    }
  }
  dl->PopClipRect();

  // Axis.
  const double seconds_per_px = span / width;
  const int64_t step = choose_tick_step(seconds_per_px, 110 * s);
  const ImU32 text = ImGui::GetColorU32(ImGuiCol_TextDisabled);
  for (int64_t t = ceil_to(view.from, step); t <= view.until; t += step) {
    const float x = t2x(static_cast<double>(t));
    dl->AddLine(ImVec2(x, p0.y + plot_h), ImVec2(x, p0.y + plot_h + 4 * s), text);
    const std::string label = format_clock(t, step >= 86400);
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
    std::string lines;
    if (breakdown && breakdown->timeline.step > 0 && t >= breakdown->timeline.start) {
      const size_t i = static_cast<size_t>((t - static_cast<double>(breakdown->timeline.start)) /
                                           static_cast<double>(breakdown->timeline.step));
      for (const session::TagBreakdown::Line& line : breakdown->lines) {
        if (i >= line.points.size()) continue;
        lines += "\n  " + (line.rest ? std::string("other values") : breakdown->key + "=" + line.value) + ": " +
                 session::format_value(line.points[i], state.session.info());
      }
    }
    ImGui::SetTooltip("%s UTC\n%s%s\ndrag: select a range   wheel: zoom   shift+wheel / middle drag: pan%s",
                      format_clock(static_cast<int64_t>(t), true).c_str(),
                      session::format_value(value, state.session.info()).c_str(), lines.c_str(),
                      pair ? "\nright-drag: select the right range" : "");
  }
  if (breakdown) draw_breakdown_legend(state, *breakdown);
}

void draw_table(ViewerState& state, float height) {
  update_table(state);
  const bool pair = state.session.selection().pair();
  const bool sandwich = state.session.selection().view == ViewMode::sandwich;
  const Tree* tree = table_tree(state);
  ImGuiTableFlags flags = ImGuiTableFlags_Sortable | ImGuiTableFlags_Resizable | ImGuiTableFlags_RowBg |
                          ImGuiTableFlags_BordersInnerV | ImGuiTableFlags_BordersOuter | ImGuiTableFlags_ScrollY |
                          ImGuiTableFlags_SizingFixedFit;
  const int columns = pair ? 6 : sandwich ? 3 : 5;
  // Separate ids: the single, pair and sandwich tables have different columns (and sort specs).
  if (!ImGui::BeginTable(pair ? "functions-pair" : sandwich ? "functions-sandwich" : "functions", columns, flags,
                         ImVec2(0, height))) {
    return;
  }
  const float num_w = ImGui::CalcTextSize("000,000,000,000").x;
  const float pct_w = ImGui::CalcTextSize("100.00%%").x;
  ImGui::TableSetupScrollFreeze(0, 1);
  ImGui::TableSetupColumn("Function", ImGuiTableColumnFlags_WidthStretch, 0.0f, static_cast<ImGuiID>(TableSort::name));
  if (pair) {
    ImGui::TableSetupColumn("Left total", ImGuiTableColumnFlags_WidthFixed, num_w, static_cast<ImGuiID>(TableSort::left_total));
    ImGui::TableSetupColumn("Left %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_NoSort, pct_w);
    ImGui::TableSetupColumn("Right total", ImGuiTableColumnFlags_WidthFixed, num_w, static_cast<ImGuiID>(TableSort::right_total));
    ImGui::TableSetupColumn("Right %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_NoSort, pct_w);
    // The change column, as the diff mode compares the sides (its header names the mode).
    static const char* const kChangeHeaders[] = {"Diff (share)", "Diff (per s)", "Diff"};
    ImGui::TableSetupColumn(kChangeHeaders[static_cast<int>(state.session.view_settings().diff_mode)],
                            ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_DefaultSort |
                                ImGuiTableColumnFlags_PreferSortDescending,
                            pct_w * 1.6f, static_cast<ImGuiID>(TableSort::change));
  } else if (sandwich) {
    // Beside the sandwich's graphs: narrow, shares only.
    ImGui::TableSetupColumn("Self %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_PreferSortDescending,
                            pct_w, static_cast<ImGuiID>(TableSort::self));
    ImGui::TableSetupColumn("Total %", ImGuiTableColumnFlags_WidthFixed | ImGuiTableColumnFlags_DefaultSort |
                                           ImGuiTableColumnFlags_PreferSortDescending,
                            pct_w, static_cast<ImGuiID>(TableSort::total));
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
    record_item(std::string("table.header.") + (c == 5 ? "Diff" : name));
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
  const SeriesInfo& info = state.session.info();
  const DiffTree* diff = state.session.diff();
  const double left_all = diff ? double(std::max<uint64_t>(1, diff->left_total(Tree::kRoot))) : 1.0;
  const double right_all = diff ? double(std::max<uint64_t>(1, diff->right_total(Tree::kRoot))) : 1.0;
  const session::DiffScale scale = state.session.diff_scale();
  const session::FrameNames& names = state.session.frame_names();
  const std::string& function = state.session.view_settings().function;
  ImGuiListClipper clipper;
  clipper.Begin(static_cast<int>(state.table_order.size()));
  while (clipper.Step()) {
    for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) {
      const session::FunctionRow& row = state.table_rows[state.table_order[static_cast<size_t>(i)]];
      const std::string_view name = symbols.name(row.symbol);
      ImGui::TableNextRow();
      ImGui::TableSetColumnIndex(0);
      ImGui::PushID(i);
      const std::string full(name);
      const std::string label = names.label(name);
      // In the sandwich view a row picks the function; elsewhere it highlights it (a search for it).
      const std::string as_search = NameSearch::literal(full);
      const bool current = sandwich ? full == function : state.session.view_settings().search == as_search;
      if (ImGui::Selectable(label.c_str(), current, ImGuiSelectableFlags_SpanAllColumns)) {
        if (sandwich) {
          show_sandwich(state, full);
        } else {
          apply_search(state, current ? std::string() : as_search);
        }
      }
      if (i < 50) record_item("table.row." + std::to_string(i));
      if (ImGui::IsItemHovered()) {
        std::string all_names;
        for (std::string_view f : names.full_names(name)) all_names += std::string(f) + "\n";
        // The sandwich's table shows shares only (it is narrow): the values, in their unit, are here.
        const std::string values = sandwich ? "self " + session::format_value(row.self, info) + ", total " +
                                                  session::format_value(row.total, info) + "\n"
                                            : std::string();
        ImGui::SetTooltip("%s%s%s", all_names.c_str(), values.c_str(),
                          sandwich ? "click: its callers and callees" : "click: highlight in the flame graph\nright-click: sandwich view");
      }
      if (ImGui::BeginPopupContextItem("row-menu")) {
        if (ImGui::Selectable("Sandwich view: callers and callees")) show_sandwich(state, full);
        if (i < 50) record_item("table.row." + std::to_string(i) + ".sandwich");
        ImGui::EndPopup();
      }
      ImGui::PopID();
      if (pair) {
        const double ls = double(row.total) / left_all, rs = double(row.right_total) / right_all;
        ImGui::TableSetColumnIndex(1);
        ImGui::TextUnformatted(session::format_value(row.total, info).c_str());
        ImGui::TableSetColumnIndex(2);
        ImGui::TextUnformatted(format_share(ls).c_str());
        ImGui::TableSetColumnIndex(3);
        ImGui::TextUnformatted(session::format_value(row.right_total, info).c_str());
        ImGui::TableSetColumnIndex(4);
        ImGui::TextUnformatted(format_share(rs).c_str());
        ImGui::TableSetColumnIndex(5);
        const double change = session::diff_change(row.total, row.right_total, scale);
        const double percent = session::diff_change_percent(row.total, row.right_total, scale);
        const ImVec4 colour = percent > 0.5 ? ImVec4(0.93f, 0.33f, 0.30f, 1) : percent < -0.5 ? ImVec4(0.25f, 0.75f, 0.38f, 1)
                                                                                          : ImGui::GetStyleColorVec4(ImGuiCol_Text);
        ImGui::TextColored(colour, "%s", session::format_change(change, scale, state.session.info()).c_str());
      } else if (sandwich) {
        ImGui::TableSetColumnIndex(1);
        ImGui::TextUnformatted(format_share(double(row.self) / all).c_str());
        ImGui::TableSetColumnIndex(2);
        ImGui::TextUnformatted(format_share(double(row.total) / all).c_str());
      } else {
        ImGui::TableSetColumnIndex(1);
        ImGui::TextUnformatted(session::format_value(row.self, info).c_str());
        ImGui::TableSetColumnIndex(2);
        ImGui::TextUnformatted(format_share(double(row.self) / all).c_str());
        ImGui::TableSetColumnIndex(3);
        ImGui::TextUnformatted(session::format_value(row.total, info).c_str());
        ImGui::TableSetColumnIndex(4);
        ImGui::TextUnformatted(format_share(double(row.total) / all).c_str());
      }
    }
  }
  ImGui::EndTable();
}

FlameDrawOptions flame_options(const ViewerState& state, const char* id) {
  FlameDrawOptions o;
  o.orientation = state.session.view_settings().orientation;
  o.colour_mode = state.session.view_settings().colour;
  o.palette = palette_for(state.session.view_settings().theme);
  o.row_height = std::round(ImGui::GetFontSize() + 6 * state.ui_scale);
  o.min_block_px = 3.0f * state.ui_scale;
  o.focus_matches = state.session.view_settings().focus_matches;
  o.id = id;
  return o;
}

// The sandwich view: the function table on the left; on the right the function's callers above it
// (an inverted tree growing upwards, so the function sits in the middle) and its callees below.
void draw_sandwich(ViewerState& state, float height, bool with_table) {
  const float s = state.ui_scale;
  const float table_w = with_table ? std::floor(ImGui::GetContentRegionAvail().x * 0.36f) : 0.0f;
  if (with_table) {
    ImGui::BeginChild("sandwich-table", ImVec2(table_w, height), false);
    if (state.flame_left.tree()) {
      draw_table(state, height);
      state.flame_painted = true;  // the view's first paint: the table, until a function is picked
    }
    ImGui::EndChild();
    ImGui::SameLine();
  }
  ImGui::BeginChild("sandwich-graphs", ImVec2(0, height), false, ImGuiWindowFlags_NoScrollbar | ImGuiWindowFlags_NoScrollWithMouse);
  const session::Session& session = state.session;
  const Sandwich* sandwich = session.sandwich();
  const std::string& function = session.view_settings().function;
  if (!sandwich) {
    ImGui::Dummy(ImVec2(0, 20 * s));
    ImGui::Indent(20 * s);
    if (function.empty()) {
      ImGui::TextWrapped("Pick a function: click a row of the table, or right-click a block of any flame graph "
                         "(or press S on the frame the arrow keys selected).");
    } else {
      ImGui::TextWrapped("No function '%s' in this selection.", function.c_str());
    }
    record_item("sandwich.empty");
    ImGui::Unindent(20 * s);
    ImGui::EndChild();
    return;
  }
  const std::string label = session.frame_names().label(function);
  const float header_h = ImGui::GetFrameHeightWithSpacing();
  const float graph_h = std::max(60.0f, std::floor((height - 2 * header_h - ImGui::GetStyle().ItemSpacing.y * 2) * 0.5f));
  FlameDrawOptions callers = flame_options(state, "flame.callers");
  callers.orientation = Orientation::flame;  // root at the bottom: callers grow upwards
  callers.root_label = "all callers";
  ImGui::TextDisabled("Callers of");
  ImGui::SameLine();
  ImGui::TextUnformatted(label.c_str());
  record_item("sandwich.function");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", function.c_str());
  ImGui::SameLine(0, 12 * s);
  const uint64_t all = session.left_view().total();
  ImGui::TextDisabled("total %s (%s), self %s", session::format_value(sandwich->total, session.info()).c_str(),
                      format_share(all ? double(sandwich->total) / double(all) : 0.0).c_str(),
                      session::format_value(sandwich->self, session.info()).c_str());
  record_item("sandwich.totals");
  ImGui::SameLine(0, 12 * s);
  state.flame_callers.draw_breadcrumb("callers-crumbs");
  state.flame_callers.draw(ImVec2(0, graph_h), callers);
  ImGui::TextDisabled("Callees of");
  ImGui::SameLine();
  ImGui::TextUnformatted(label.c_str());
  ImGui::SameLine(0, 12 * s);
  state.flame_callees.draw_breadcrumb("callees-crumbs");
  FlameDrawOptions callees = flame_options(state, "flame.callees");
  callees.orientation = Orientation::icicle;
  callees.root_label = "all callees";
  state.flame_callees.draw(ImVec2(0, 0), callees);
  ImGui::EndChild();
  // Zoomed far into either graph: the sandwich again, with the nodes that zoom can show
  // (Session::refine_sandwich; computed before the next frame).
  uint64_t focused = 0;
  for (const FlameGraph* graph : {&state.flame_callers, &state.flame_callees}) {
    const Tree* tree = graph->tree();
    if (!tree || graph->focused() == Tree::kRoot || graph->focused() >= tree->node_count()) continue;
    const uint64_t total = tree->node_total(graph->focused());
    focused = focused ? std::min(focused, total) : total;
  }
  if (focused) {
    state.session.refine_sandwich(focused);
    if (state.session.sandwich_stale()) request_redraw(state);
  }
}

void draw_flame_header(ViewerState& state, FlameGraph& graph, const char* title, ImU32 title_colour) {
  if (title) {
    ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(title_colour), "%s", title);
    ImGui::SameLine();
    const uint64_t total = graph.tree() ? graph.tree()->total() : 0;
    ImGui::TextDisabled("%s", session::format_value(total, state.session.info()).c_str());
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
  const float header_h = ImGui::GetFrameHeightWithSpacing() * (state.session.selection().view == ViewMode::single ? 1.0f : 2.0f);
  const float splitter_h = 6 * s + ImGui::GetStyle().ItemSpacing.y * 2;
  const float body = std::max(100.0f, avail.y - header_h - splitter_h);
  float flame_h = std::floor(body * state.flame_fraction);
  float table_h = std::max(60.0f, body - flame_h);
  const bool single = state.session.selection().view == ViewMode::single;
  if (single && state.session.view_settings().panels == Panels::flame) flame_h = body + splitter_h;

  if (single && state.session.view_settings().panels == Panels::table) {
    draw_table(state, body + header_h + splitter_h);
    return;
  }
  if (state.session.selection().view == ViewMode::sandwich) {
    draw_sandwich(state, avail.y, true);
    return;
  }
  if (state.session.selection().view == ViewMode::single) {
    draw_flame_header(state, state.flame_left, nullptr, 0);
    state.flame_left.draw(ImVec2(0, flame_h), flame_options(state, "flame.main"));
  } else if (state.session.selection().view == ViewMode::comparison) {
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
    const session::Selection& selection = state.session.selection();
    if (selection.comparing_tag()) {
      ImGui::TextUnformatted("Diff:");
      ImGui::SameLine(0, 4 * s);
      ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kLeftColour), "%s != %s", selection.compare_key.c_str(),
                         selection.compare_value.c_str());
      ImGui::SameLine(0, 4 * s);
      ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kLeftColour), "%s",
                         session::format_value(state.session.left_tree().total(), state.session.info()).c_str());
      ImGui::SameLine(0, 4 * s);
      ImGui::TextUnformatted("->");
      ImGui::SameLine(0, 4 * s);
      ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kRightColour), "%s = %s", selection.compare_key.c_str(),
                         selection.compare_value.c_str());
      record_item("diff.compare");
      ImGui::SameLine(0, 4 * s);
      ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kRightColour), "%s",
                         session::format_value(state.session.right_tree().total(), state.session.info()).c_str());
      ImGui::SameLine(0, 4 * s);
      if (ImGui::SmallButton("x")) {
        state.session.compare_tag("", "");
        state.session.set_view(ViewMode::single);
        state.table_dirty = true;
      }
      record_item("diff.compare.clear");
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("Stop comparing the tag value with the rest");
    } else {
      ImGui::TextUnformatted("Diff: left");
      ImGui::SameLine(0, 4 * s);
      ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kLeftColour), "%s", session::format_value(state.session.left_tree().total(), state.session.info()).c_str());
      ImGui::SameLine(0, 4 * s);
      ImGui::TextUnformatted("-> right");
      ImGui::SameLine(0, 4 * s);
      ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(kRightColour), "%s", session::format_value(state.session.right_tree().total(), state.session.info()).c_str());
    }
    ImGui::SameLine(0, 12 * s);
    // The diff mode: what the colours and the table's change compare.
    static const char* const kModeLabels[] = {"Change: share of each side", "Change: per second of each range",
                                              "Change: absolute"};
    const session::DiffMode mode = state.session.view_settings().diff_mode;
    ImGui::SetNextItemWidth(ImGui::CalcTextSize(kModeLabels[1]).x + ImGui::GetFrameHeight() + 2 * ImGui::GetStyle().FramePadding.x);
    if (ImGui::BeginCombo("##diff_mode", kModeLabels[static_cast<int>(mode)])) {
      for (int m = 0; m < 3; ++m) {
        if (ImGui::Selectable(kModeLabels[m], static_cast<int>(mode) == m)) set_diff_mode(state, static_cast<session::DiffMode>(m));
        record_item(std::string("diff_mode:") + name_of(static_cast<session::DiffMode>(m)));
      }
      ImGui::EndCombo();
    }
    record_item("diff_mode");
    if (ImGui::IsItemHovered()) {
      ImGui::SetTooltip("share: each side's share of its own total (Pyroscope's diff)\n"
                        "per second: values per second of each range (ranges of different lengths)\n"
                        "absolute: the values themselves  [M]");
    }
    ImGui::SameLine(0, 12 * s);
    // Legend: shrank (green) .. neutral .. grew (red).
    const ImVec2 p = ImGui::GetCursorScreenPos();
    const float lw = 160 * s, lh = ImGui::GetTextLineHeight();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const FlamePalette pal = palette_for(state.session.view_settings().theme);
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
  if (single && state.session.view_settings().panels == Panels::flame) return;
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
  for (const session::LoadedSource& f : state.session.sources()) {
    files += (files.empty() ? "" : ", ") + f.name;
    bytes += f.bytes;
  }
  ImGui::Separator();
  std::string options;
  const session::ViewSettings& view = state.session.view_settings();
  if (view.names != session::NameMode::full) options += std::string("  |  names ") + name_of(view.names);
  if (view.recursion != session::RecursionMode::keep) options += std::string("  |  recursion ") + name_of(view.recursion);
  if (state.session.selection().comparing_tag() && state.session.selection().pair())
    options += "  |  " + state.session.selection().compare_key + "=" + state.session.selection().compare_value + " vs the rest";
  ImGui::TextDisabled("%s (%s bytes)  |  %s%s  |  %u nodes, %u blocks drawn (%u merged)  |  frame %.2f ms (UI %.2f ms)", files.c_str(),
                      format_count(bytes).c_str(), state.session.selector_text().c_str(), options.c_str(),
                      graph.tree() ? graph.tree()->node_count() : 0, graph.drawn_blocks(), graph.merged_blocks(),
                      state.last_frame_ms, state.last_ui_ms);
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
        {"1 / 2 / 3 / 4", "single / comparison / diff / sandwich view"},
        {"Arrows", "move between frames (up: caller, down: heaviest callee)"},
        {"Enter", "focus the frame the arrows selected"},
        {"Esc", "go up: focus the parent (at the top: clear the search)"},
        {"Backspace", "focus the parent"},
        {"S", "sandwich view of the selected (or hovered) frame's function"},
        {"/  or  Ctrl+F", "search: regex terms, -term excludes"},
        {"+ / - / 0", "zoom in / out / reset (also ctrl+wheel)"},
        {"Shift+Left / Right", "pan"},
        {"N", "names: full / short / merged"},
        {"M", "diff mode: share / per second / absolute"},
        {"B", "timeline lines by the next tag key"},
        {"L", "copy a link to this view"},
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
    ImGui::TextDisabled("Mouse: click a block to focus it, right-click for its sandwich view, drag to pan,\n"
                        "wheel to scroll, ctrl+wheel to zoom. Timeline: drag to select, wheel to zoom.");
    if (ImGui::Button("Close") || ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape))) ImGui::CloseCurrentPopup();
    record_item("help.close");
    ImGui::EndPopup();
  }
}

void handle_shortcuts(ViewerState& state) {
  ImGuiIO& io = ImGui::GetIO();
  if (io.WantTextInput || ImGui::IsPopupOpen(nullptr, ImGuiPopupFlags_AnyPopupId)) return;
  // The flame graph under the mouse first, else the view's main one.
  FlameGraph* graph = &primary_flame(state);
  for (FlameGraph* shown : shown_graphs(state))
    if (shown->hovered() != Tree::kNoNode) graph = shown;
  const bool can_open = state.host && state.host->can_open_files();
  auto pressed = [](ImGuiKey key) { return ImGui::IsKeyPressed(ImGui::GetKeyIndex(key)); };
  if (io.KeyCtrl && ImGui::IsKeyPressed('O') && can_open) state.host->open_files_dialog();
  if (io.KeyCtrl && ImGui::IsKeyPressed('F')) state.focus_search = true;
  // Esc goes up: the focus's parent; at the root it clears the search, then the error.
  if (pressed(ImGuiKey_Escape)) {
    if (graph->focused() != Tree::kRoot) {
      graph->focus_parent();
      graph->select(graph->focused());
    } else if (!state.session.view_settings().search.empty()) {
      apply_search(state, "");
    } else {
      state.error.clear();
    }
  }
  if (pressed(ImGuiKey_Backspace)) graph->focus_parent();
  // Arrows move the keyboard's frame (shift: pan); Enter focuses it.
  const bool flame = graph->flame_orientation();
  if (io.KeyShift) {
    if (pressed(ImGuiKey_LeftArrow)) graph->pan(-0.1);
    if (pressed(ImGuiKey_RightArrow)) graph->pan(0.1);
  } else {
    if (pressed(ImGuiKey_LeftArrow)) graph->move_selection(-1, 0);
    if (pressed(ImGuiKey_RightArrow)) graph->move_selection(1, 0);
    if (pressed(ImGuiKey_UpArrow)) graph->move_selection(0, flame ? 1 : -1);
    if (pressed(ImGuiKey_DownArrow)) graph->move_selection(0, flame ? -1 : 1);
  }
  if (pressed(ImGuiKey_Enter) || pressed(ImGuiKey_KeyPadEnter)) {
    if (graph->selected() != Tree::kNoNode) graph->focus(graph->selected());
  }
  if (io.KeyCtrl || io.KeyAlt || io.KeySuper) return;
  session::ViewSettings& view = state.session.view_settings();
  for (ImWchar c : io.InputQueueCharacters) {
    switch (c) {
      case '1': set_view(state, ViewMode::single); break;
      case '2': set_view(state, ViewMode::comparison); break;
      case '3': set_view(state, ViewMode::diff); break;
      case '4': set_view(state, ViewMode::sandwich); break;
      case '/': state.focus_search = true; break;
      case '+': case '=': graph->zoom(1.5, 0.5); break;
      case '-': graph->zoom(1.0 / 1.5, 0.5); break;
      case '0': graph->reset_zoom(); break;
      case 's': case 'S': {
        // The sandwich of the keyboard's frame, else of the frame under the mouse.
        const uint32_t node = graph->selected() != Tree::kNoNode ? graph->selected() : graph->hovered();
        if (graph->tree() && node != Tree::kNoNode && node != Tree::kRoot) show_sandwich(state, std::string(graph->tree()->name(node)));
        break;
      }
      case 'n': case 'N':
        view.names = static_cast<session::NameMode>((static_cast<int>(view.names) + 1) % 3);
        break;
      case 'm': case 'M':
        if (state.session.selection().pair()) set_diff_mode(state, static_cast<session::DiffMode>((static_cast<int>(view.diff_mode) + 1) % 3));
        break;
      case 'b': case 'B': {
        // The next tag key's breakdown, then none.
        const std::vector<std::string>& keys = state.session.tag_keys();
        auto at = std::find(keys.begin(), keys.end(), view.breakdown);
        view.breakdown = at == keys.end() ? (keys.empty() ? std::string() : keys.front())
                                          : (at + 1 == keys.end() ? std::string() : *(at + 1));
        break;
      }
      case 'f': case 'F':
        view.orientation = view.orientation == Orientation::icicle ? Orientation::flame : Orientation::icicle;
        for (FlameGraph* g : all_graphs(state)) g->scroll_to_focus();
        break;
      case 'c': case 'C':
        view.colour = view.colour == ColourMode::function ? ColourMode::package : ColourMode::function;
        break;
      case 't': case 'T':
        view.theme = view.theme == Theme::dark ? Theme::light : Theme::dark;
        state.theme_applied = false;
        break;
      case 'r': case 'R':
        state.session.select_all_time(state.session.selection().pair() ? state.drag_target : 0);
        break;
      case 'l': case 'L':
        if (!state.session.empty()) copy_link(state);
        break;
      case 'o': case 'O':
        if (can_open) state.host->open_files_dialog();
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

  if (state.session.view_settings().embed && (!state.session.empty() || !state.error.empty())) {
    // Embedded: the flame graph, its breadcrumb and a search box; a bad parameter or file shows its
    // message here, inside the frame.
    draw_error_banner(state);
    if (!state.session.empty()) {
      update_trees(state);
      FlameGraph& graph = primary_flame(state);
      ImGui::SetNextItemWidth(std::min(260 * s, ImGui::GetContentRegionAvail().x * 0.4f));
      if (ImGui::InputTextWithHint("##embed-search", "Search (/)", state.search_buffer, sizeof state.search_buffer)) {
        apply_search(state, state.search_buffer);
      }
      record_item("embed.search");
      if (state.session.selection().view == ViewMode::sandwich) {
        draw_sandwich(state, ImGui::GetContentRegionAvail().y, false);
      } else {
        ImGui::SameLine();
        graph.draw_breadcrumb("crumbs");
        const char* id = state.session.selection().view == ViewMode::diff ? "flame.diff" : "flame.main";
        graph.draw(ImVec2(0, 0), flame_options(state, id));
      }
    }
  } else {
    draw_toolbar(state);
    draw_error_banner(state);
    if (state.session.empty()) {
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
  // A right-click's "Sandwich view" on any graph; the focus clicked becomes the focus setting.
  std::string function;
  for (FlameGraph* g : all_graphs(state))
    if (g->take_sandwich_request(&function)) show_sandwich(state, function);
  sync_focus_setting(state);
  g_widgets = nullptr;
}

void prepare_views(ViewerState& state) {
  if (state.session.empty() || !state.pending.empty()) return;
  update_trees(state);  // the table waits for the frame after the first paint anyway
}

bool take_image_request(ViewerState& state, ImageRequest* out) {
  if (state.image_request_frames != 1) return false;
  state.image_request_frames = 0;
  const FlameGraph& graph = primary_flame(state);
  if (!state.host || graph.canvas_max().x <= graph.canvas_min().x || graph.canvas_max().y <= graph.canvas_min().y)
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
  const session::Session& session = state.session;
  const session::Selection& selection = session.selection();
  const session::ViewSettings& settings = session.view_settings();
  Json j;
  j.begin_object();
  j.key("ready").boolean(state.pending.empty());
  j.key("loading").boolean(!state.pending.empty());
  j.key("files").begin_array();
  for (const session::LoadedSource& f : session.sources()) {
    j.begin_object();
    j.key("name").str(f.name);
    j.key("bytes").integer(static_cast<int64_t>(f.bytes));
    j.key("kind").str(f.kind);
    j.end_object();
  }
  j.end_array();
  j.key("error").str(state.error);
  j.key("load_ms").num(session.last_open_ms());
  j.key("apps").begin_array();
  for (const std::string& a : session.apps()) j.str(a);
  j.end_array();
  j.key("app").str(selection.app);
  j.key("types").begin_array();
  for (const std::string& t : session.types()) j.str(t);
  j.end_array();
  j.key("type").str(selection.type);
  j.key("unit").str(session.info().unit);
  j.key("aggregation").str(aggregation_name(session.info().aggregation));
  j.key("tags").begin_object();
  for (size_t k = 0; k < session.tag_keys().size(); ++k) {
    j.key(session.tag_keys()[k]).begin_array();
    for (const std::string& v : session.tag_values()[k]) j.str(v);
    j.end_array();
  }
  j.end_object();
  j.key("selected_tags").begin_object();
  for (const auto& [key, values] : selection.tags) {
    j.key(key).begin_array();
    for (const std::string& v : values) j.str(v);
    j.end_array();
  }
  j.end_object();
  j.key("selector").str(session.selector_text());
  j.key("view").str(name_of(selection.view));
  j.key("panels").str(name_of(settings.panels));
  j.key("theme").str(name_of(settings.theme));
  j.key("orientation").str(name_of(settings.orientation));
  j.key("colour").str(name_of(settings.colour));
  j.key("span").begin_object().key("from").integer(session.span().from).key("until").integer(session.span().until).end_object();
  j.key("timeline").begin_object();
  j.key("from").integer(state.timeline_view.from).key("until").integer(state.timeline_view.until);
  const Timeline& timeline = session.last_timeline().timeline;
  uint64_t timeline_sum = 0;
  for (uint64_t v : timeline.samples) timeline_sum += v;
  j.key("points").integer(static_cast<int64_t>(timeline.samples.size()));
  j.key("step").integer(timeline.step);
  j.key("samples").integer(static_cast<int64_t>(timeline_sum));
  j.end_object();
  j.key("ranges").begin_object();
  j.key("left").begin_object().key("from").integer(selection.ranges[0].from).key("until").integer(selection.ranges[0].until).end_object();
  j.key("right").begin_object().key("from").integer(selection.ranges[1].from).key("until").integer(selection.ranges[1].until).end_object();
  j.end_object();
  j.key("drag_target").str(state.drag_target == 0 ? "left" : "right");
  j.key("search").str(settings.search);
  j.key("search_terms").begin_array();
  const NameSearch search(settings.search);
  for (const NameSearch::Term& term : search.terms()) {
    j.begin_object().key("text").str(term.text).key("exclude").boolean(term.exclude).key("regex").boolean(term.regex).end_object();
  }
  j.end_array();
  j.key("focus_matches").boolean(settings.focus_matches);
  const FlameGraph& primary = search_flame(state);
  j.key("matched_share").num(primary.matched_share());
  j.key("matched_samples").integer(static_cast<int64_t>(primary.matched_total()));
  j.key("matched_functions").integer(primary.matched_functions());
  j.key("names").str(name_of(settings.names));
  j.key("recursion").str(name_of(settings.recursion));
  j.key("diff_mode").str(name_of(settings.diff_mode));
  j.key("function").str(settings.function);
  j.key("focus").begin_array();
  for (const std::string& frame : settings.focus) j.str(frame);
  j.end_array();
  if (selection.comparing_tag() && selection.pair()) {
    j.key("compare").begin_object().key("key").str(selection.compare_key).key("value").str(selection.compare_value).end_object();
  } else {
    j.key("compare").raw("null");
  }
  // The link "Copy link" makes (the settings as a URL query) and the settings themselves.
  j.key("link").str(session.settings_query());
  j.key("last_link").str(state.last_link);
  j.key("settings").begin_object();
  for (const auto& [key, value] : session.settings()) j.key(key).str(value);
  j.end_object();
  {
    const Sandwich* sandwich = session.sandwich();
    j.key("sandwich").begin_object();
    j.key("function").str(settings.function);
    j.key("found").boolean(sandwich != nullptr);
    j.key("total").integer(sandwich ? static_cast<int64_t>(sandwich->total) : 0);
    j.key("self").integer(sandwich ? static_cast<int64_t>(sandwich->self) : 0);
    j.key("callers_nodes").integer(sandwich ? sandwich->callers.node_count() : 0);
    j.key("callees_nodes").integer(sandwich ? sandwich->callees.node_count() : 0);
    j.key("min_total").integer(sandwich ? static_cast<int64_t>(sandwich->min_total) : 0);
    j.key("detail").num(session.sandwich_detail());
    j.key("ms").num(session.sandwich_ms());
    j.key("layout_ms").num(state.sandwich_layout_ms);
    j.end_object();
  }
  {
    // The last breakdown the timeline drew (the session keeps it).
    j.key("breakdown").begin_object();
    j.key("key").str(settings.breakdown);
    const pyroscope::session::TagBreakdown* b = session.last_breakdown();
    const bool current = b && !settings.breakdown.empty() && b->key == settings.breakdown;
    j.key("values").integer(current ? static_cast<int64_t>(b->values) : 0);
    j.key("range_samples").integer(current ? static_cast<int64_t>(b->range_samples) : 0);
    j.key("ms").num(current ? b->ms : 0);
    j.key("lines").begin_array();
    for (size_t i = 0; current && i < b->lines.size(); ++i) {
      const pyroscope::session::TagBreakdown::Line& line = b->lines[i];
      uint64_t sum = 0;
      for (uint64_t v : line.points) sum += v;
      j.begin_object().key("value").str(line.value).key("rest").boolean(line.rest);
      j.key("samples").integer(static_cast<int64_t>(line.samples)).key("share").num(line.share);
      j.key("points").integer(static_cast<int64_t>(line.points.size())).key("window_samples").integer(static_cast<int64_t>(sum));
      j.end_object();
    }
    j.end_array();
    j.end_object();
  }
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
    const uint32_t sel = g.selected();
    j.key("selected").str(t && sel != Tree::kNoNode ? (sel == Tree::kRoot ? std::string_view("total") : t->name(sel)) : "");
    j.key("selected_label").str(t && sel != Tree::kNoNode && sel != Tree::kRoot ? g.label(sel) : std::string_view());
    j.key("matched_functions").integer(g.matched_functions());
    if (g.diff()) {
      j.key("left_total").integer(static_cast<int64_t>(g.diff()->left_total(Tree::kRoot)));
      j.key("right_total").integer(static_cast<int64_t>(g.diff()->right_total(Tree::kRoot)));
    }
    j.end_object();
  };
  j.key("flame").begin_object();
  if (state.session.selection().view == ViewMode::single) graph_json("main", state.flame_left);
  if (state.session.selection().view == ViewMode::comparison) {
    graph_json("left", state.flame_left);
    graph_json("right", state.flame_right);
  }
  if (state.session.selection().view == ViewMode::diff) graph_json("diff", state.flame_diff);
  if (state.session.selection().view == ViewMode::sandwich) {
    graph_json("callers", state.flame_callers);
    graph_json("callees", state.flame_callees);
  }
  j.end_object();
  j.key("table").begin_object();
  j.key("rows").integer(static_cast<int64_t>(state.table_dirty ? 0 : state.table_order.size()));
  j.key("builds").integer(static_cast<int64_t>(state.table_builds));
  const char* sort_names[] = {"name", "self", "total", "left_total", "right_total", "change"};
  j.key("sort").str(sort_names[static_cast<int>(state.table_sort)]);
  j.key("ascending").boolean(state.table_ascending);
  j.key("first").begin_array();
  const Tree* tt = state.table_dirty || state.table_order_dirty ? nullptr : table_tree(state);
  for (size_t i = 0; tt && i < std::min<size_t>(5, state.table_order.size()); ++i) {
    j.str(tt->symbols().name(state.table_rows[state.table_order[i]].symbol));
  }
  j.end_array();
  j.key("first_labels").begin_array();
  for (size_t i = 0; tt && i < std::min<size_t>(5, state.table_order.size()); ++i) {
    j.str(session.frame_names().label(tt->symbols().name(state.table_rows[state.table_order[i]].symbol)));
  }
  j.end_array();
  j.end_object();
  j.key("flame_painted").boolean(state.flame_painted);
  j.key("first_flame_paint_ms").num(state.first_flame_paint_ms);
  j.key("warm_up_ms").num(state.warm_up_ms);
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
  j.key("share_unavailable").str(state.share_parts ? std::string()
                                  : state.host ? state.host->share_unavailable() : std::string("no host"));
  j.key("widgets").begin_object();
  for (const WidgetRect& w : state.widgets) {
    j.key(w.name).begin_array().num(w.x0).num(w.y0).num(w.x1 - w.x0).num(w.y1 - w.y0).end_array();
  }
  j.end_object();
  j.end_object();
  return j.text();
}

}  // namespace pyroscope::viewer
