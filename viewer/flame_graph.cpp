#include "flame_graph.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace pyroscope::viewer {

void record_item(std::string_view name);  // viewer.cpp: publishes the last item's rectangle

namespace {

constexpr uint32_t kExitMark = 0x80000000u;  // iterative DFS: "leave this node" entries

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

ImU32 hsv(float h, float s, float v) {
  float r, g, b;
  ImGui::ColorConvertHSVtoRGB(h, s, v, r, g, b);
  return ImGui::ColorConvertFloat4ToU32(ImVec4(r, g, b, 1.0f));
}

ImU32 lerp_colour(ImU32 a, ImU32 b, float t) {
  ImVec4 ca = ImGui::ColorConvertU32ToFloat4(a);
  ImVec4 cb = ImGui::ColorConvertU32ToFloat4(b);
  return ImGui::ColorConvertFloat4ToU32(ImVec4(ca.x + (cb.x - ca.x) * t, ca.y + (cb.y - ca.y) * t,
                                               ca.z + (cb.z - ca.z) * t, 1.0f));
}

// First index in [from, to) with values[i] >= value, for sorted values, searching outward from `from`:
// the merged runs' next target is usually a few slots away, so this stays in nearby memory.
uint32_t gallop_lower_bound(const double* values, uint32_t from, uint32_t to, double value) {
  uint32_t step = 1, low = from;
  while (from + step < to && values[from + step - 1] < value) {
    low = from + step;
    step *= 2;
  }
  const uint32_t high = std::min(to, from + step);
  return static_cast<uint32_t>(std::lower_bound(values + low, values + high, value) - values);
}

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

// ---------------------------------------------------------------------------------------------------

bool contains_ignore_case(std::string_view haystack, std::string_view needle) {
  if (needle.empty()) return true;
  if (needle.size() > haystack.size()) return false;
  const char first = lower_ascii(needle[0]);
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (lower_ascii(haystack[i]) != first) continue;
    size_t j = 1;
    while (j < needle.size() && lower_ascii(haystack[i + j]) == lower_ascii(needle[j])) ++j;
    if (j == needle.size()) return true;
  }
  return false;
}

std::string package_of(std::string_view name) {
  // Template arguments and parameter lists are not part of the package: drop what is inside <> and (),
  // except a Go receiver such as "(*T)" after a path, which ends the package anyway.
  std::string head;
  head.reserve(name.size());
  int angle = 0, paren = 0;
  for (char c : name) {
    if (c == '<') {
      ++angle;
    } else if (c == '>' && angle > 0) {
      --angle;
    } else if (c == '(') {
      if (angle == 0 && paren == 0 && head.find('/') != std::string::npos) break;
      ++paren;
    } else if (c == ')' && paren > 0) {
      --paren;
    } else if (angle == 0 && paren == 0) {
      head.push_back(c);
    }
  }
  // C++: everything before the last "::" (namespace and class).
  const size_t colons = head.rfind("::");
  if (colons != std::string::npos && colons > 0) return head.substr(0, colons);
  // Go / Python / Java: path up to the last '/', then the part before the first '.' after it.
  const size_t slash = head.rfind('/');
  const size_t from = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = head.find('.', from);
  if (dot != std::string::npos && dot > 0) return head.substr(0, dot);
  while (!head.empty() && (head.back() == '.' || head.back() == ' ')) head.pop_back();
  return head.empty() ? std::string(name) : head;
}

// ---------------------------------------------------------------------------------------------------

void FlameLayout::clear() {
  row_offsets.clear();
  row_nodes.clear();
  slot_of.clear();
  slot_left.clear();
  slot_right.clear();
  depth_count = 0;
}

uint32_t FlameLayout::depth(uint32_t node) const {
  const uint32_t slot = slot_of[node];
  return static_cast<uint32_t>(std::upper_bound(row_offsets.begin(), row_offsets.end(), slot) - row_offsets.begin()) - 1;
}

void FlameLayout::build(const Tree& tree) {
  clear();
  if (tree.in_name_preorder()) {
    build_from_name_preorder(tree);
    return;
  }
  const uint32_t n = tree.node_count();
  // Children in name order (Tree::sorted_children's order), sorted by each symbol's rank among the
  // names this tree uses: one string sort over the distinct names instead of string comparisons at
  // every node, which matters for trees of millions of nodes.
  std::vector<uint32_t> rank;
  tree.rank_used_symbols(&rank);
  // Each child gets a record with its sort key, its width and where its own children's records are,
  // all read while the nodes are read in memory order. The sort and the breadth-first pass below then
  // read only records, contiguous per parent: on millions of nodes the pass was bound by reading
  // nodes (and their children's offsets) scattered by id.
  struct ChildRecord {
    uint32_t rank;
    uint32_t node;
    uint32_t children_begin;
    uint32_t children_end;
    double width;
  };
  std::vector<uint32_t> offsets(static_cast<size_t>(n) + 1, 0);
  for (uint32_t i = 1; i < n; ++i) ++offsets[tree.parent(i) + 1];
  for (uint32_t i = 0; i < n; ++i) offsets[i + 1] += offsets[i];
  std::vector<ChildRecord> records(n > 0 ? n - 1 : 0);
  {
    std::vector<uint32_t> fill(offsets.begin(), offsets.end() - 1);
    for (uint32_t i = 1; i < n; ++i) {
      records[fill[tree.parent(i)]++] = {rank[tree.symbol(i)], i, offsets[i], offsets[i + 1],
                                         static_cast<double>(tree.node_total(i))};
    }
  }
  const uint32_t root_children_begin = offsets[Tree::kRoot], root_children_end = offsets[Tree::kRoot + 1];
  offsets = std::vector<uint32_t>();
  rank = std::vector<uint32_t>();
  auto sort_group = [&](uint32_t begin, uint32_t end) {
    auto by_rank = [](const ChildRecord& a, const ChildRecord& b) { return a.rank < b.rank; };
    if (end - begin > 1 && !std::is_sorted(records.begin() + begin, records.begin() + end, by_rank)) {
      std::sort(records.begin() + begin, records.begin() + end, by_rank);
    }
  };
  sort_group(root_children_begin, root_children_end);
  for (const ChildRecord& record : records) sort_group(record.children_begin, record.children_end);

  // Rows, breadth-first: each row comes out left to right, so it is sorted by left edge for free, and
  // the children of slot k take the next slots in order, so their edges are placed in the same pass.
  // (A depth-first walk scatters its writes over every row at once; measured slower.)
  row_nodes.resize(n);
  slot_left.resize(n);
  slot_right.resize(n);
  std::vector<uint32_t> slot_children(2 * static_cast<size_t>(n));  // [begin, end) of records, per slot
  row_nodes[0] = Tree::kRoot;
  slot_left[0] = 0.0;
  slot_right[0] = static_cast<double>(tree.total());
  slot_children[0] = root_children_begin;
  slot_children[1] = root_children_end;
  row_offsets.push_back(0);
  size_t written = 1;
  for (size_t begin = 0, end = 1; begin < end; begin = end, end = written) {
    for (size_t k = begin; k < end; ++k) {
      double x = slot_left[k];
      for (uint32_t c = slot_children[2 * k]; c < slot_children[2 * k + 1]; ++c) {
        const ChildRecord& child = records[c];
        row_nodes[written] = child.node;
        slot_left[written] = x;
        x += child.width;
        slot_right[written] = x;
        slot_children[2 * written] = child.children_begin;
        slot_children[2 * written + 1] = child.children_end;
        ++written;
      }
    }
    row_offsets.push_back(static_cast<uint32_t>(end));
  }
  slot_of.resize(n);
  for (uint32_t k = 0; k < n; ++k) slot_of[row_nodes[k]] = k;
  depth_count = static_cast<uint32_t>(row_offsets.size() - 1);
}

// A tree whose ids are a left-to-right preorder walk (a query answered by one stored tree) needs no
// sorting and no breadth-first pass. Walking ids in order, every node of depth d comes after its left
// sibling's whole subtree, so one cursor per depth says where it starts: placing a node sets the
// cursor below it to its own left edge, where its first child will start. Each depth's nodes also
// come left to right, so a node's slot is its row's start plus the nodes of that depth seen so far.
// Two sequential passes (depths and row sizes, then placement) without sorting or branching on the
// tree's shape: on millions of nodes about ten times faster than the general build.
void FlameLayout::build_from_name_preorder(const Tree& tree) {
  const uint32_t n = tree.node_count();
  // slot_of holds each node's depth until the second pass replaces it with the node's slot: one
  // array of fresh memory less (in the browser, first touches of new memory are a large part of
  // the cost).
  slot_of.resize(n);
  std::vector<uint32_t> row_sizes(1, 1);
  slot_of[Tree::kRoot] = 0;
  for (uint32_t i = 1; i < n; ++i) {
    const uint32_t depth = slot_of[tree.parent(i)] + 1;
    slot_of[i] = depth;
    if (depth == row_sizes.size()) row_sizes.push_back(0);
    ++row_sizes[depth];
  }
  depth_count = static_cast<uint32_t>(row_sizes.size());
  row_offsets.assign(depth_count + 1, 0);
  for (uint32_t d = 0; d < depth_count; ++d) row_offsets[d + 1] = row_offsets[d] + row_sizes[d];
  std::vector<uint32_t>& next_slot = row_sizes;  // reused: the next free slot of each row
  std::copy(row_offsets.begin(), row_offsets.end() - 1, next_slot.begin());
  std::vector<double> cursor(depth_count + 1, 0.0);

  row_nodes.resize(n);
  slot_left.resize(n);
  slot_right.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t depth = slot_of[i];
    const double left = cursor[depth];
    const double right = left + static_cast<double>(tree.node_total(i));
    cursor[depth] = right;
    cursor[depth + 1] = left;
    const uint32_t slot = next_slot[depth]++;
    row_nodes[slot] = i;
    slot_of[i] = slot;
    slot_left[slot] = left;
    slot_right[slot] = right;
  }
}

// ---------------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------------

void FlameGraph::clear() {
  tree_ = nullptr;
  diff_ = nullptr;
  layout_.clear();
  symbol_colour_.clear();
  diff_colour_.clear();
  colours_valid_ = false;
  search_.clear();
  symbol_match_.clear();
  match_prefix_.clear();
  matched_total_ = 0;
  focus_ = Tree::kRoot;
  view_left_ = 0;
  view_width_ = 1;
  hovered_ = Tree::kNoNode;
  drawn_blocks_ = merged_blocks_ = labelled_blocks_ = visited_nodes_ = 0;
}

void FlameGraph::set_tree(const Tree* tree, const DiffTree* diff) {
  const std::string search = search_;
  clear();
  tree_ = tree;
  diff_ = diff;
  if (!tree_) return;
  layout_.build(*tree_);
  reset_zoom();
  scroll_to_focus_ = true;
  set_search(search);
}

double FlameGraph::matched_share() const {
  if (!tree_ || tree_->total() == 0) return 0.0;
  return static_cast<double>(matched_total_) / static_cast<double>(tree_->total());
}

bool FlameGraph::symbol_matches(uint32_t symbol) const {
  return symbol < symbol_match_.size() && symbol_match_[symbol] != 0;
}

void FlameGraph::set_search(std::string_view term) {
  if (term == search_ && (term.empty() || !symbol_match_.empty() || !tree_)) return;
  search_ = std::string(term);
  symbol_match_.clear();
  match_prefix_.clear();
  matched_total_ = 0;
  if (!tree_ || search_.empty()) return;
  const SymbolTable& symbols = tree_->symbols();
  symbol_match_.assign(symbols.size(), 0);
  for (uint32_t s = 0; s < symbols.size(); ++s) {
    symbol_match_[s] = contains_ignore_case(symbols.name(s), search_) ? 1 : 0;
  }
  // Prefix counts over the rows let a merged run of narrow nodes know in O(1) whether it holds a match.
  const auto& rows = layout_.row_nodes;
  match_prefix_.assign(rows.size() + 1, 0);
  // Samples under a match, each counted once: a match inside another match adds nothing. Rows are in
  // breadth-first order, so a parent's "covered" flag is known before its children are visited.
  std::vector<uint8_t> covered(tree_->node_count(), 0);
  for (size_t k = 0; k < rows.size(); ++k) {
    const uint32_t node = rows[k];
    const bool match = node != Tree::kRoot && symbol_match_[tree_->symbol(node)] != 0;
    match_prefix_[k + 1] = match_prefix_[k] + (match ? 1u : 0u);
    const bool parent_covered = node != Tree::kRoot && covered[tree_->parent(node)] != 0;
    if (match && !parent_covered) matched_total_ += tree_->node_total(node);
    covered[node] = (match || parent_covered) ? 1 : 0;
  }
}

void FlameGraph::rebuild_colours(ColourMode mode, const FlamePalette& palette) {
  colour_mode_ = mode;
  colours_dark_ = palette.dark;
  colours_valid_ = true;
  if (!tree_) return;
  const SymbolTable& symbols = tree_->symbols();
  symbol_colour_.assign(symbols.size(), 0);
  // Warm "flame" hues per function; the whole hue circle per package, so packages stand apart.
  const float value_scale = palette.dark ? 0.88f : 1.0f;
  for (uint32_t s = 0; s < symbols.size(); ++s) {
    const std::string_view name = symbols.name(s);
    if (mode == ColourMode::function) {
      const uint64_t h = fnv1a(name);
      const float hue = static_cast<float>(h & 0xffff) / 65535.0f * 0.13f;            // red..orange-yellow
      const float sat = 0.50f + static_cast<float>((h >> 16) & 0xff) / 255.0f * 0.30f;
      const float val = (0.86f + static_cast<float>((h >> 24) & 0xff) / 255.0f * 0.12f) * value_scale;
      symbol_colour_[s] = hsv(hue, sat, val);
    } else {
      const uint64_t h = fnv1a(package_of(name));
      const float hue = static_cast<float>(h & 0xffff) / 65535.0f;
      const float sat = 0.38f + static_cast<float>((h >> 16) & 0xff) / 255.0f * 0.22f;
      const float val = (0.80f + static_cast<float>((h >> 24) & 0xff) / 255.0f * 0.15f) * value_scale;
      symbol_colour_[s] = hsv(hue, sat, val);
    }
  }
  diff_colour_.clear();
  if (diff_) {
    // Red grew, green shrank; the colour moves from neutral toward full red/green with |change|.
    const ImU32 grew = IM_COL32(228, 60, 56, 255);
    const ImU32 shrank = IM_COL32(46, 180, 80, 255);
    diff_colour_.resize(tree_->node_count());
    for (uint32_t n = 0; n < tree_->node_count(); ++n) {
      const double change = diff_->change_percent(n);
      const float t = static_cast<float>(std::min(1.0, std::fabs(change) / 100.0));
      diff_colour_[n] = lerp_colour(palette.diff_neutral, change >= 0 ? grew : shrank, t);
    }
  }
}

ImU32 FlameGraph::node_colour(uint32_t node) const {
  if (diff_) return diff_colour_[node];
  if (node == Tree::kRoot) return IM_COL32(190, 190, 196, 255);
  return symbol_colour_[tree_->symbol(node)];
}

uint32_t FlameGraph::node_at(uint32_t d, double x) const {
  if (!tree_ || d >= layout_.depth_count) return Tree::kNoNode;
  const double* begin = layout_.slot_left.data() + layout_.row_offsets[d];
  const double* end = layout_.slot_left.data() + layout_.row_offsets[d + 1];
  // Last slot whose left edge is <= x.
  const double* it = std::upper_bound(begin, end, x);
  if (it == begin) return Tree::kNoNode;
  const size_t slot = static_cast<size_t>(it - 1 - layout_.slot_left.data());
  if (x < layout_.slot_right[slot]) return layout_.row_nodes[slot];
  return Tree::kNoNode;
}

// ---------------------------------------------------------------------------------------------------

void FlameGraph::focus(uint32_t node) {
  if (!tree_ || node >= tree_->node_count()) return;
  focus_ = node;
  view_left_ = layout_.left(node);
  view_width_ = std::max(1.0, static_cast<double>(node_width(node)));
  scroll_to_focus_ = true;
}

void FlameGraph::focus_parent() {
  if (!tree_ || focus_ == Tree::kRoot) return;
  focus(tree_->parent(focus_));
}

std::vector<uint32_t> FlameGraph::focus_path() const {
  std::vector<uint32_t> path;
  if (!tree_) return path;
  for (uint32_t n = focus_;; n = tree_->parent(n)) {
    path.push_back(n);
    if (n == Tree::kRoot) break;
  }
  std::reverse(path.begin(), path.end());
  return path;
}

void FlameGraph::reset_zoom() {
  if (!tree_) return;
  view_left_ = layout_.left(focus_);
  view_width_ = std::max(1.0, static_cast<double>(node_width(focus_)));
}

void FlameGraph::clamp_view() {
  if (!tree_) return;
  const double focus_left = layout_.left(focus_);
  const double focus_width = std::max(1.0, static_cast<double>(node_width(focus_)));
  // Deep zoom stays meaningful down to a millionth of a sample per pixel row; beyond that doubles blur.
  const double min_width = focus_width * 1e-9;
  view_width_ = std::clamp(view_width_, min_width, focus_width);
  view_left_ = std::clamp(view_left_, focus_left, focus_left + focus_width - view_width_);
}

void FlameGraph::zoom(double factor, double anchor_fraction) {
  if (!tree_ || factor <= 0) return;
  const double anchor = view_left_ + anchor_fraction * view_width_;
  view_width_ /= factor;
  view_left_ = anchor - anchor_fraction * view_width_;
  clamp_view();
}

void FlameGraph::pan(double fraction_of_width) {
  view_left_ += fraction_of_width * view_width_;
  clamp_view();
}

// ---------------------------------------------------------------------------------------------------

void FlameGraph::draw_breadcrumb(const char* id) {
  ImGui::PushID(id);
  if (!tree_) {
    ImGui::TextDisabled("no data");
    ImGui::PopID();
    return;
  }
  const std::vector<uint32_t> path = focus_path();
  // Deep stacks: show the root, an ellipsis and the last few frames.
  constexpr size_t kShown = 5;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path.size() > kShown + 1 && i > 0 && i < path.size() - kShown) {
      if (i == 1) {
        ImGui::SameLine(0, 4);
        ImGui::TextDisabled("> ... (%zu frames) ", path.size() - kShown - 1);
      }
      continue;
    }
    if (i > 0) {
      ImGui::SameLine(0, 4);
      ImGui::TextDisabled(">");
      ImGui::SameLine(0, 4);
    }
    const uint32_t node = path[i];
    std::string label(node == Tree::kRoot ? std::string_view("total") : tree_->name(node));
    if (label.size() > 48) label = label.substr(0, 45) + "...";
    ImGui::PushID(static_cast<int>(i));
    const bool current = i + 1 == path.size();
    if (current) ImGui::PushStyleColor(ImGuiCol_Button, ImGui::GetStyleColorVec4(ImGuiCol_ButtonActive));
    if (ImGui::SmallButton(label.c_str())) focus(node);
    if (current) ImGui::PopStyleColor();
    record_item(std::string(id) + ".crumb." + std::to_string(i));
    ImGui::PopID();
  }
  ImGui::PopID();
}

void FlameGraph::draw(ImVec2 size, const FlameDrawOptions& o) {
  drawn_blocks_ = merged_blocks_ = labelled_blocks_ = visited_nodes_ = 0;
  hovered_ = Tree::kNoNode;
  if (!colours_valid_ || colour_mode_ != o.colour_mode || colours_dark_ != o.palette.dark) {
    rebuild_colours(o.colour_mode, o.palette);
  }

  ImGui::PushStyleVar(ImGuiStyleVar_WindowPadding, ImVec2(0, 0));
  ImGui::PushStyleColor(ImGuiCol_ChildBg, o.palette.background);
  ImGui::BeginChild(o.id, size, false, ImGuiWindowFlags_NoScrollWithMouse | ImGuiWindowFlags_NoMove);
  ImGui::PopStyleColor();
  ImGui::PopStyleVar();

  ImDrawList* draw_list = ImGui::GetWindowDrawList();
  const ImVec2 window_pos = ImGui::GetWindowPos();
  const float visible_height = ImGui::GetWindowHeight();
  const float width = std::max(1.0f, ImGui::GetContentRegionAvail().x);
  canvas_min_ = window_pos;
  canvas_max_ = ImVec2(window_pos.x + ImGui::GetWindowWidth(), window_pos.y + visible_height);

  if (empty()) {
    ImGui::SetCursorPos(ImVec2(12, 12));
    ImGui::TextDisabled(tree_ ? "No samples in this selection." : "No data.");
    ImGui::EndChild();
    record_item(o.id);
    return;
  }

  const float row_h = o.row_height;
  row_height_ = row_h;
  flame_orientation_ = o.orientation == Orientation::flame;
  scroll_y_ = ImGui::GetScrollY();
  const float content_h = std::max(static_cast<float>(layout_.depth_count) * row_h, visible_height);
  const ImVec2 origin = ImGui::GetCursorScreenPos();  // content top-left, scroll applied
  const bool flame = o.orientation == Orientation::flame;
  auto row_y = [&](uint32_t d) {
    return flame ? origin.y + content_h - static_cast<float>(d + 1) * row_h
                 : origin.y + static_cast<float>(d) * row_h;
  };

  // The canvas item: gives hover, click and drag, and makes the content as tall as the tree.
  ImGui::InvisibleButton("canvas", ImVec2(width, content_h));
  const bool canvas_hovered = ImGui::IsItemHovered();
  const bool canvas_active = ImGui::IsItemActive();
  const bool canvas_released = ImGui::IsItemDeactivated();

  if (scroll_to_focus_) {
    scroll_to_focus_ = false;
    const float focus_y = row_y(layout_.depth(focus_)) - origin.y;  // within the content
    const float target = flame ? focus_y - visible_height + 4 * row_h : focus_y - 2 * row_h;
    ImGui::SetScrollY(std::clamp(target, 0.0f, std::max(0.0f, content_h - visible_height)));
  }

  ImGuiIO& io = ImGui::GetIO();
  const double scale = static_cast<double>(width) / view_width_;  // pixels per sample
  auto to_px = [&](double x) { return origin.x + static_cast<float>((x - view_left_) * scale); };

  // Interaction: ctrl+wheel zooms around the cursor, shift+wheel pans, wheel scrolls; drag pans.
  if (canvas_hovered) {
    const double anchor = std::clamp(static_cast<double>((io.MousePos.x - origin.x) / width), 0.0, 1.0);
    if (io.MouseWheel != 0 && io.KeyCtrl) {
      zoom(std::pow(1.25, static_cast<double>(io.MouseWheel)), anchor);
    } else if (io.MouseWheel != 0 && io.KeyShift) {
      pan(-0.1 * static_cast<double>(io.MouseWheel));
    } else if (io.MouseWheel != 0) {
      ImGui::SetScrollY(ImGui::GetScrollY() - io.MouseWheel * row_h * 3);
    }
    if (io.MouseWheelH != 0) pan(-0.1 * static_cast<double>(io.MouseWheelH));
  }
  if (canvas_active && ImGui::IsMouseDragging(ImGuiMouseButton_Left, 4.0f)) {
    if (!dragging_) {
      dragging_ = true;
      drag_last_x_ = io.MouseClickedPos[0].x;
    }
    pan(-static_cast<double>(io.MousePos.x - drag_last_x_) / width);
    drag_last_x_ = io.MousePos.x;
    ImGui::SetScrollY(ImGui::GetScrollY() - io.MouseDelta.y);
  }

  const double view_right = view_left_ + view_width_;
  const double min_block = static_cast<double>(o.min_block_px) / scale;  // in samples
  const float gap = 1.0f;
  const ImVec4 clip = ImVec4(canvas_min_.x, canvas_min_.y, canvas_max_.x, canvas_max_.y);
  ImFont* font = ImGui::GetFont();
  const float font_size = ImGui::GetFontSize();
  const float text_pad = 4.0f;
  const float min_label_px = font_size * 1.5f;
  const bool searching = !search_.empty() && !symbol_match_.empty();
  const ImU32 dim_text = o.palette.dark ? IM_COL32(150, 150, 150, 255) : IM_COL32(110, 110, 110, 255);

  // Visible rows only.
  const float top = canvas_min_.y, bottom = canvas_max_.y;
  uint32_t first_row, last_row;  // inclusive range of depths on screen
  if (flame) {
    const float from_bottom_top = (origin.y + content_h - bottom) / row_h;
    const float from_bottom_bottom = (origin.y + content_h - top) / row_h;
    first_row = static_cast<uint32_t>(std::max(0.0f, std::floor(from_bottom_top)));
    last_row = static_cast<uint32_t>(std::max(0.0f, std::ceil(from_bottom_bottom)));
  } else {
    first_row = static_cast<uint32_t>(std::max(0.0f, std::floor((top - origin.y) / row_h)));
    last_row = static_cast<uint32_t>(std::max(0.0f, std::ceil((bottom - origin.y) / row_h)));
  }
  last_row = std::min(last_row, layout_.depth_count - 1);

  const double* left = layout_.slot_left.data();    // by slot
  const double* right = layout_.slot_right.data();  // by slot
  const uint32_t* rows = layout_.row_nodes.data();

  auto draw_label = [&](float x0, float x1, float y, std::string_view text, ImU32 colour) {
    const float visible_x0 = std::max(x0, canvas_min_.x);
    const float visible_x1 = std::min(x1, canvas_max_.x);
    const float room = visible_x1 - visible_x0 - 2 * text_pad;
    if (room < min_label_px) return;
    const char* begin = text.data();
    const char* end = text.data() + text.size();
    const char* fits = end;
    font->CalcTextSizeA(font_size, room, 0.0f, begin, end, &fits);
    if (fits == begin) return;
    draw_list->AddText(font, font_size, ImVec2(visible_x0 + text_pad, y + (row_h - gap - font_size) * 0.5f),
                       colour, begin, fits);
    ++labelled_blocks_;
  };

  for (uint32_t d = first_row; d <= last_row && first_row < layout_.depth_count; ++d) {
    const float y = row_y(d);
    const uint32_t row_begin = layout_.row_offsets[d];
    const uint32_t row_end = layout_.row_offsets[d + 1];
    // First slot whose right edge is past the view's left edge (right edges are sorted too).
    uint32_t k = static_cast<uint32_t>(std::upper_bound(right + row_begin, right + row_end, view_left_) - right);
    while (k < row_end) {
      const uint32_t node = rows[k];
      const double x0 = left[k];
      if (x0 >= view_right) break;
      ++visited_nodes_;
      const double w = right[k] - x0;
      if (w >= min_block) {
        const float px0 = to_px(x0), px1 = to_px(x0 + w);
        const bool match = searching && node != Tree::kRoot && symbol_match_[tree_->symbol(node)];
        ImU32 colour = node_colour(node);
        if (searching && !match) colour = lerp_colour(colour, o.palette.background, 0.72f);
        draw_list->AddRectFilled(ImVec2(std::max(px0, clip.x - 1), y),
                                 ImVec2(std::min(px1, clip.z + 1) - gap, y + row_h - gap), colour);
        if (match) {
          draw_list->AddRect(ImVec2(std::max(px0, clip.x - 1), y),
                             ImVec2(std::min(px1, clip.z + 1) - gap, y + row_h - gap), o.palette.search_match,
                             0.0f, 0, 2.0f);
        }
        const std::string_view name = node == Tree::kRoot ? std::string_view("total") : tree_->name(node);
        draw_label(px0, px1 - gap, y, name, searching && !match ? dim_text : o.palette.text_on_block);
        ++drawn_blocks_;
        ++k;
        continue;
      }
      // A run of narrow nodes becomes one block: extend while the next node ends within one more
      // block width, or is itself narrow and close. Each step covers >= min_block_px on screen, so a
      // row costs O(width / min_block_px * log n) however many nodes it holds.
      const uint32_t run_first = k;
      uint32_t last = k;        // last slot absorbed into the run
      double run_end = right[k];
      for (;;) {
        // Slots after `last` that end within one more block width start after run_end, so they are
        // narrow: they all join.
        const double next_end = run_end + min_block;
        const uint32_t j = gallop_lower_bound(right, last + 1, row_end, next_end);
        if (j > last + 1) {
          last = j - 1;
          run_end = right[last];
        }
        if (j >= row_end) break;
        const double next_w = right[j] - left[j];
        if (next_w >= min_block || left[j] - run_end >= min_block || left[j] >= view_right) break;
        last = j;
        run_end = right[j];
      }
      k = last + 1;
      const float px0 = to_px(x0);
      const float px1 = std::max(to_px(run_end), px0 + 1.0f);
      const bool any_match = searching && match_prefix_[k] - match_prefix_[run_first] > 0;
      ImU32 colour = o.palette.merged_block;
      if (searching) colour = any_match ? o.palette.search_match : lerp_colour(colour, o.palette.background, 0.72f);
      draw_list->AddRectFilled(ImVec2(px0, y), ImVec2(px1, y + row_h - gap), colour);
      ++drawn_blocks_;
      ++merged_blocks_;
    }
  }

  // Hover: the exact node under the cursor, even inside a merged block.
  if (canvas_hovered) {
    const float my = io.MousePos.y;
    const float rel = flame ? (origin.y + content_h - my) / row_h : (my - origin.y) / row_h;
    if (rel >= 0) {
      const uint32_t d = static_cast<uint32_t>(rel);
      const double mx = view_left_ + static_cast<double>(io.MousePos.x - origin.x) / scale;
      hovered_ = node_at(d, mx);
    }
  }
  if (hovered_ != Tree::kNoNode) {
    const uint32_t slot = layout_.slot_of[hovered_];
    const float y = row_y(layout_.depth(hovered_));
    const float px0 = to_px(left[slot]);
    const float px1 = std::max(to_px(right[slot]), px0 + 1.0f);
    draw_list->AddRect(ImVec2(std::max(px0, clip.x), y), ImVec2(std::min(px1, clip.z) - gap, y + row_h - gap),
                       o.palette.dark ? IM_COL32(255, 255, 255, 230) : IM_COL32(0, 0, 0, 230), 0.0f, 0, 1.5f);
    if (!dragging_) {
      const uint64_t all = tree_->total();
      const uint64_t focus_total = node_width(focus_);
      const std::string_view name = hovered_ == Tree::kRoot ? std::string_view("total") : tree_->name(hovered_);
      ImGui::BeginTooltip();
      ImGui::PushTextWrapPos(ImGui::GetFontSize() * 40.0f);
      ImGui::TextUnformatted(name.data(), name.data() + name.size());
      ImGui::PopTextWrapPos();
      ImGui::Separator();
      if (diff_) {
        const uint64_t left_all = diff_->left_total(Tree::kRoot), right_all = diff_->right_total(Tree::kRoot);
        const double left_share = left_all ? double(diff_->left_total(hovered_)) / double(left_all) : 0.0;
        const double right_share = right_all ? double(diff_->right_total(hovered_)) / double(right_all) : 0.0;
        ImGui::Text("Left:   total %s (%s), self %s", session::format_value(diff_->left_total(hovered_), units_).c_str(),
                    format_share(left_share).c_str(), session::format_value(diff_->left_self(hovered_), units_).c_str());
        ImGui::Text("Right:  total %s (%s), self %s", session::format_value(diff_->right_total(hovered_), units_).c_str(),
                    format_share(right_share).c_str(), session::format_value(diff_->right_self(hovered_), units_).c_str());
        ImGui::Text("Change: %+.2f points of share (%+.1f%%)", (right_share - left_share) * 100.0,
                    diff_->change_percent(hovered_));
      } else {
        const uint64_t total = node_width(hovered_);
        ImGui::Text("Total: %s, %s of all", session::format_value(total, units_).c_str(),
                    format_share(all ? double(total) / double(all) : 0.0).c_str());
        if (focus_ != Tree::kRoot) {
          ImGui::Text("       %s of the focused %s", format_share(focus_total ? double(total) / double(focus_total) : 0.0).c_str(),
                      session::format_value(focus_total, units_).c_str());
        }
        ImGui::Text("Self:  %s, %s of all", session::format_value(tree_->self(hovered_), units_).c_str(),
                    format_share(all ? double(tree_->self(hovered_)) / double(all) : 0.0).c_str());
      }
      ImGui::TextDisabled("click: focus   ctrl+wheel: zoom   drag: pan");
      ImGui::EndTooltip();
    }
  }

  if (canvas_released) {
    if (!dragging_ && hovered_ != Tree::kNoNode) focus(hovered_);
    dragging_ = false;
  }

  ImGui::EndChild();
  record_item(o.id);
}

}  // namespace pyroscope::viewer
