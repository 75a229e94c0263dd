// Flame graph: layout, visible-slice drawing, search and the per-function table of one tree.
//
// The layout of a tree is computed once (when the tree changes) and then drawn every frame by
// visiting only what is on screen: each depth keeps its nodes sorted by left edge, so a frame
// binary-searches the visible slice of each visible row (Tracy's method) and merges runs of nodes
// narrower than a few pixels into one block. Focus and zoom only change the visible x range, never
// the layout. Every traversal is iterative, so stacks 10,000 frames deep need no recursion.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "imgui.h"
#include "pyroscope.hpp"
#include "session.hpp"

namespace pyroscope::viewer {

using session::ColourMode;   // stable colour per function name / per package
using session::Orientation;  // root at the top (icicle) / at the bottom (flame)
using session::format_count;
using session::format_share;

// Colours that depend on the theme; filled by the viewer from the active ImGui style.
struct FlamePalette {
  ImU32 background = IM_COL32(30, 30, 34, 255);
  ImU32 text_on_block = IM_COL32(20, 20, 20, 255);
  ImU32 merged_block = IM_COL32(120, 120, 128, 255);
  ImU32 diff_neutral = IM_COL32(160, 160, 165, 255);
  ImU32 search_match = IM_COL32(80, 170, 255, 255);
  bool dark = true;
};

// An allocator whose resize() leaves trivial elements uninitialized: the layout writes every element
// right after sizing its arrays, and zero-filling tens of megabytes first was a pass for nothing.
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible<U>::value) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <class T>
using LayoutArray = std::vector<T, UninitializedAllocator<T>>;

// Where each node of a tree sits, built once per tree. Nodes are numbered by "slot": depth by depth,
// each depth left to right (breadth-first order). The edges are stored by slot, so the binary searches
// of a frame run over contiguous memory; by node they are scattered over a tree of millions of nodes,
// and in WebAssembly, without huge pages, those scattered reads made a frame 8x slower.
struct FlameLayout {
  std::vector<uint32_t> row_offsets;       // depth d: slots [row_offsets[d], row_offsets[d+1])
  LayoutArray<uint32_t> row_nodes;         // slot -> node
  LayoutArray<uint32_t> slot_of;           // node -> slot
  LayoutArray<double> slot_left;           // slot -> left edge, in samples from the root's left edge
  LayoutArray<double> slot_right;          // slot -> right edge
  uint32_t depth_count = 0;

  void build(const Tree& tree);
  void clear();
  // build() for a tree in name preorder (Tree::in_name_preorder); exposed for the tests.
  void build_from_name_preorder(const Tree& tree);
  double left(uint32_t node) const { return slot_left[slot_of[node]]; }
  uint32_t depth(uint32_t node) const;
};

// Case-insensitive substring match, the search box's rule.
bool contains_ignore_case(std::string_view haystack, std::string_view needle);

// The part of a function name its package colour is taken from: "app::net::Conn::read(int)" ->
// "app::net::Conn", "std::vector<int>::push_back(int)" -> "std::vector",
// "github.com/x/y.(*T).F" -> "github.com/x/y", "main" -> "main".
std::string package_of(std::string_view function_name);

struct FlameDrawOptions {
  Orientation orientation = Orientation::icicle;
  ColourMode colour_mode = ColourMode::function;
  FlamePalette palette;
  float row_height = 18.0f;
  float min_block_px = 3.0f;   // narrower nodes merge with their neighbours into one block
  const char* id = "flame";    // ImGui id and widget name for the page's status()
};

// One flame graph on screen: its tree (or diff), layout, focus, zoom, scroll and search matches.
class FlameGraph {
 public:
  // Points at a tree owned elsewhere (the viewer's query result); diff, when given, must be the
  // DiffTree whose shape() is tree. Rebuilds the layout; resets focus and zoom.
  void set_tree(const Tree* tree, const DiffTree* diff);
  // What the values mean, for the tooltip (1.25 s, 3.2 MiB, 1,234 samples).
  void set_units(const SeriesInfo& info) { units_ = info; }
  void clear();
  bool empty() const { return tree_ == nullptr || tree_->total() == 0; }
  const Tree* tree() const { return tree_; }
  const DiffTree* diff() const { return diff_; }
  const FlameLayout& layout() const { return layout_; }

  // Recomputes matches when the term changed; empty term clears them.
  void set_search(std::string_view term);
  uint64_t matched_total() const { return matched_total_; }   // samples under matches, counted once
  double matched_share() const;                               // of the whole tree
  bool symbol_matches(uint32_t symbol) const;

  // Focus shows node's subtree across the full width (its ancestors stay above as full bars).
  void focus(uint32_t node);
  void focus_parent();
  uint32_t focused() const { return focus_; }
  std::vector<uint32_t> focus_path() const;                   // root .. focus
  // Horizontal zoom by factor (>1 zooms in) around a point given as a fraction of the width.
  void zoom(double factor, double anchor_fraction);
  void pan(double fraction_of_width);
  void reset_zoom();
  double view_left() const { return view_left_; }
  double view_width() const { return view_width_; }

  // Draws into a child region of the given size (breadcrumb above it is drawn by the caller with
  // draw_breadcrumb). Handles hover tooltip, click-to-focus, drag-to-pan, ctrl+wheel zoom.
  void draw(ImVec2 size, const FlameDrawOptions& options);
  void draw_breadcrumb(const char* id);

  // Last frame's figures, for the status object and the benchmark.
  uint32_t drawn_blocks() const { return drawn_blocks_; }
  uint32_t merged_blocks() const { return merged_blocks_; }
  uint32_t labelled_blocks() const { return labelled_blocks_; }
  uint32_t visited_nodes() const { return visited_nodes_; }
  uint32_t hovered() const { return hovered_; }
  float row_height() const { return row_height_; }
  float scroll_y() const { return scroll_y_; }
  bool flame_orientation() const { return flame_orientation_; }
  ImVec2 canvas_min() const { return canvas_min_; }
  ImVec2 canvas_max() const { return canvas_max_; }
  // Asks the next draw to scroll so the focused row is in view.
  void scroll_to_focus() { scroll_to_focus_ = true; }

  uint64_t node_width(uint32_t node) const { return tree_->node_total(node); }

 private:
  void rebuild_colours(ColourMode mode, const FlamePalette& palette);
  ImU32 node_colour(uint32_t node) const;
  uint32_t node_at(uint32_t depth, double x) const;   // kNoNode if none covers x
  void clamp_view();

  const Tree* tree_ = nullptr;
  const DiffTree* diff_ = nullptr;
  SeriesInfo units_;
  FlameLayout layout_;

  // Colours: per symbol (function/package mode) or per node (diff), rebuilt when mode/theme change.
  std::vector<ImU32> symbol_colour_;
  std::vector<ImU32> diff_colour_;
  ColourMode colour_mode_ = ColourMode::function;
  bool colours_dark_ = true;
  bool colours_valid_ = false;

  // Search.
  std::string search_;
  std::vector<uint8_t> symbol_match_;
  std::vector<uint32_t> match_prefix_;   // over row_nodes: matches before each slot
  uint64_t matched_total_ = 0;

  uint32_t focus_ = Tree::kRoot;
  double view_left_ = 0;
  double view_width_ = 1;
  bool scroll_to_focus_ = false;

  // Interaction.
  bool dragging_ = false;
  float drag_last_x_ = 0;

  uint32_t drawn_blocks_ = 0;
  uint32_t merged_blocks_ = 0;
  uint32_t labelled_blocks_ = 0;
  uint32_t visited_nodes_ = 0;
  uint32_t hovered_ = Tree::kNoNode;
  ImVec2 canvas_min_{0, 0};
  ImVec2 canvas_max_{0, 0};
  float row_height_ = 0;
  bool flame_orientation_ = false;
  float scroll_y_ = 0;
};

}  // namespace pyroscope::viewer
