// Unit tests of the viewer's flame graph: layout, visible-slice drawing with merged narrow nodes,
// hit testing, search, the per-function table and the streaming folded parser. Drawing runs in an ImGui
// context without a window (no GL needed): the draw lists are built and counted, never rendered.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include <unistd.h>

#include "flame_graph.hpp"
#include "imgui.h"
#include "viewer.hpp"

using pyroscope::DiffTree;
using pyroscope::Tree;
using namespace pyroscope::viewer;

namespace {

Tree tree_from(const char* folded) {
  Tree tree;
  const pyroscope::Status status = Tree::from_folded(folded, &tree);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  return tree;
}

uint32_t node(const Tree& tree, std::vector<std::string_view> path) {
  const uint32_t n = tree.find_path(path);
  REQUIRE(n != Tree::kNoNode);
  return n;
}

// One ImGui frame around fn, in a window of the given size, without a renderer.
struct HeadlessImGui {
  HeadlessImGui() {
    ImGui::CreateContext();
    ImGuiIO& io = ImGui::GetIO();
    io.IniFilename = nullptr;
    io.DisplaySize = ImVec2(1200, 800);
    unsigned char* pixels;
    int w, h;
    io.Fonts->GetTexDataAsRGBA32(&pixels, &w, &h);
  }
  ~HeadlessImGui() { ImGui::DestroyContext(); }
  template <class Fn>
  void frame(Fn&& fn) {
    ImGui::GetIO().DeltaTime = 1.0f / 60.0f;
    ImGui::NewFrame();
    ImGui::SetNextWindowPos(ImVec2(0, 0));
    ImGui::SetNextWindowSize(ImGui::GetIO().DisplaySize);
    ImGui::Begin("test", nullptr, ImGuiWindowFlags_NoDecoration);
    fn();
    ImGui::End();
    ImGui::Render();
  }
};

FlameDrawOptions options(float row_height = 20) {
  FlameDrawOptions o;
  o.row_height = row_height;
  o.min_block_px = 3;
  return o;
}

}  // namespace

TEST_CASE("layout: rows are sorted by left edge and children come in name order") {
  const Tree tree = tree_from("main;zeta 3\nmain;alpha 5\nmain;mid;leaf 2\nother 1\n");
  FlameLayout layout;
  layout.build(tree);
  CHECK(layout.depth_count == 4);  // root, main/other, alpha/mid/zeta, leaf
  const uint32_t main_node = node(tree, {"main"});
  const uint32_t alpha = node(tree, {"main", "alpha"});
  const uint32_t mid = node(tree, {"main", "mid"});
  const uint32_t zeta = node(tree, {"main", "zeta"});
  CHECK(layout.left(main_node) == 0);
  CHECK(layout.left(alpha) == 0);
  CHECK(layout.left(mid) == 5);
  CHECK(layout.left(zeta) == 7);
  CHECK(layout.left(node(tree, {"other"})) == 10);
  CHECK(layout.depth(alpha) == 2);
  CHECK(layout.depth(node(tree, {"main", "mid", "leaf"})) == 3);
  for (uint32_t d = 0; d < layout.depth_count; ++d) {
    for (uint32_t k = layout.row_offsets[d] + 1; k < layout.row_offsets[d + 1]; ++k) {
      CHECK(layout.slot_left[k - 1] <= layout.slot_left[k]);
      CHECK(layout.slot_right[k - 1] <= layout.slot_left[k]);  // siblings never overlap
    }
  }
  // Each node's children sit in the next row in the header's name order (computed faster here).
  std::vector<uint32_t> offsets, children;
  tree.sorted_children(&offsets, &children);
  for (uint32_t node = 0; node < tree.node_count(); ++node) {
    std::vector<uint32_t> in_layout;
    const uint32_t d = layout.depth(node) + 1;
    for (uint32_t k = d < layout.depth_count ? layout.row_offsets[d] : 0; d < layout.depth_count && k < layout.row_offsets[d + 1]; ++k) {
      if (tree.parent(layout.row_nodes[k]) == node) in_layout.push_back(layout.row_nodes[k]);
    }
    CHECK(in_layout == std::vector<uint32_t>(children.begin() + offsets[node], children.begin() + offsets[node + 1]));
  }
}

TEST_CASE("layout and aggregation of a 10,000-frame stack need no recursion") {
  Tree tree;
  std::vector<std::string> names;
  for (int d = 0; d < 10000; ++d) names.push_back("f" + std::to_string(d));
  std::vector<std::string_view> frames(names.begin(), names.end());
  tree.insert(frames, 7);
  FlameLayout layout;
  layout.build(tree);
  CHECK(layout.depth_count == 10001);
  std::vector<pyroscope::session::FunctionRow> rows;
  pyroscope::session::function_rows(tree, nullptr, &rows);
  CHECK(rows.size() == 10000);
  HeadlessImGui imgui;
  FlameGraph graph;
  graph.set_tree(&tree, nullptr);
  graph.focus(tree.find_path(frames));
  CHECK(graph.focus_path().size() == 10001);
  imgui.frame([&] { graph.draw(ImVec2(800, 400), options()); });
  CHECK(graph.drawn_blocks() > 0);
}

TEST_CASE("narrow nodes merge into blocks: a row costs its width in pixels, not its node count") {
  // 20,000 one-sample siblings next to one wide node.
  std::string folded = "root;wide 20000\n";
  for (int i = 0; i < 20000; ++i) folded += "root;n" + std::to_string(100000 + i) + " 1\n";
  const Tree tree = tree_from(folded.c_str());
  HeadlessImGui imgui;
  FlameGraph graph;
  graph.set_tree(&tree, nullptr);
  const float width = 900;
  imgui.frame([&] { graph.draw(ImVec2(width, 400), options()); });
  // Rows: total, root, then "wide" plus the narrow ones merged.
  CHECK(graph.merged_blocks() >= 1);
  CHECK(graph.drawn_blocks() <= 3 + static_cast<uint32_t>(width / 3) + 2);
  CHECK(graph.visited_nodes() < 200);  // far fewer than the 20,002 nodes
  // Zoomed in on the narrow ones (they sort before "wide", so they fill the left half), they become
  // separate blocks.
  graph.zoom(2000, 0.25);
  imgui.frame([&] { graph.draw(ImVec2(width, 400), options()); });
  CHECK(graph.drawn_blocks() > 10);
  CHECK(graph.merged_blocks() == 0);
}

TEST_CASE("focus, zoom limits and hit testing") {
  const Tree tree = tree_from("main;a 30\nmain;b 10\n");
  HeadlessImGui imgui;
  FlameGraph graph;
  graph.set_tree(&tree, nullptr);
  const uint32_t b = node(tree, {"main", "b"});
  graph.focus(b);
  CHECK(graph.view_left() == 30);
  CHECK(graph.view_width() == 10);
  graph.zoom(0.01, 0.5);  // cannot zoom out past the focused node
  CHECK(graph.view_width() == 10);
  graph.focus_parent();
  CHECK(graph.focused() == node(tree, {"main"}));
  graph.focus(Tree::kRoot);
  CHECK(graph.focus_path().size() == 1);
}

TEST_CASE("search: share counts nested matches once, and is case-insensitive") {
  const Tree tree = tree_from("main;Parse;lex;parse 4\nmain;run 6\n");
  FlameGraph graph;
  graph.set_tree(&tree, nullptr);
  graph.set_search("parse");
  CHECK(graph.matched_total() == 4);  // the inner "parse" is inside the outer "Parse"
  CHECK(graph.matched_share() == doctest::Approx(0.4));
  graph.set_search("nothing-like-this");
  CHECK(graph.matched_total() == 0);
  graph.set_search("");
  CHECK(graph.matched_share() == 0);
}

TEST_CASE("table: a recursive function's total counts each stack once") {
  const Tree tree = tree_from("main;a;b;a 5\nmain;a 2\nmain;c 3\n");
  FlameLayout layout;
  layout.build(tree);
  std::vector<pyroscope::session::FunctionRow> rows;
  pyroscope::session::function_rows(tree, nullptr, &rows);
  auto row = [&](const char* name) {
    for (const pyroscope::session::FunctionRow& r : rows) {
      if (tree.symbols().name(r.symbol) == name) return r;
    }
    FAIL("no row for " << name);
    return pyroscope::session::FunctionRow{};
  };
  CHECK(row("a").total == 7);
  CHECK(row("a").self == 7);
  CHECK(row("b").total == 5);
  CHECK(row("main").total == 10);
  CHECK(row("c").self == 3);
}

TEST_CASE("diff: the table and the flame graph show both sides") {
  const Tree left = tree_from("main;grow 10\nmain;shrink 90\n");
  const Tree right = tree_from("main;grow 60\nmain;shrink 40\nmain;new 20\n");
  const DiffTree diff = DiffTree::compute(left, right);
  FlameGraph graph;
  graph.set_tree(&diff.shape(), &diff);
  std::vector<pyroscope::session::FunctionRow> rows;
  pyroscope::session::function_rows(diff.shape(), &diff, &rows);
  bool saw_new = false;
  for (const pyroscope::session::FunctionRow& r : rows) {
    const std::string_view name = diff.shape().symbols().name(r.symbol);
    if (name == "grow") {
      CHECK(r.total == 10);
      CHECK(r.right_total == 60);
    }
    if (name == "new") {
      CHECK(r.total == 0);
      CHECK(r.right_total == 20);
      saw_new = true;
    }
  }
  CHECK(saw_new);
  HeadlessImGui imgui;
  imgui.frame([&] { graph.draw(ImVec2(600, 300), options()); });
  CHECK(graph.drawn_blocks() == 5);  // total, main, grow, new, shrink
}

TEST_CASE("package of a function name") {
  CHECK(package_of("app::net::Conn::read(int)") == "app::net::Conn");
  CHECK(package_of("std::vector<std::pair<int, int>>::push_back(int const&)") == "std::vector");
  CHECK(package_of("github.com/x/y.(*T).F") == "github.com/x/y");
  CHECK(package_of("main") == "main");
  CHECK(package_of("net/http.(*conn).serve") == "net/http");
}

TEST_CASE("decoded trees (numbered in preorder) lay out and aggregate like the tree they were encoded from") {
  // Three ways in: a tree built by inserts (the general layout), decoded from the name order (the
  // preorder layout) and decoded from the symbol-id order (preorder ids, general layout). The table
  // walks a preorder-numbered tree in id order and any other tree depth-first. All must agree.
  std::string folded;
  unsigned seed = 7;
  auto next = [&](unsigned range) { return seed = seed * 1103515245u + 12345u, (seed >> 8) % range; };
  for (int line = 0; line < 600; ++line) {
    std::string stack = "main";
    const unsigned depth = 2 + next(9);
    for (unsigned d = 0; d < depth; ++d) stack += ";ns::f" + std::to_string(next(d < 2 ? 40 : 6));  // f0..f5 recurse
    folded += stack + " " + std::to_string(1 + next(6)) + "\n";
  }
  const Tree built = tree_from(folded.c_str());
  REQUIRE_FALSE(built.in_name_preorder());
  for (Tree::Encoding encoding : {Tree::Encoding::children_by_name, Tree::Encoding::children_by_symbol_id}) {
    CAPTURE(static_cast<int>(encoding));
    std::string encoded;
    built.encode(&encoded, encoding);
    Tree decoded(built.shared_symbols());
    REQUIRE(decoded.decode({reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size()}, encoding).ok());
    CHECK(decoded.in_name_preorder() == (encoding == Tree::Encoding::children_by_name));

    FlameLayout a, b;
    a.build(built);
    b.build(decoded);
    REQUIRE(a.depth_count == b.depth_count);
    REQUIRE(a.row_offsets == b.row_offsets);
    for (uint32_t d = 0; d < a.depth_count; ++d) {
      for (uint32_t k = a.row_offsets[d]; k < a.row_offsets[d + 1]; ++k) {
        CHECK(a.slot_left[k] == b.slot_left[k]);
        CHECK(a.slot_right[k] == b.slot_right[k]);
        CHECK(built.symbol(a.row_nodes[k]) == decoded.symbol(b.row_nodes[k]));
        CHECK(b.slot_of[b.row_nodes[k]] == k);
        CHECK(b.depth(b.row_nodes[k]) == d);
      }
    }
    std::vector<pyroscope::session::FunctionRow> rows_built, rows_decoded;
    pyroscope::session::function_rows(built, nullptr, &rows_built);
    pyroscope::session::function_rows(decoded, nullptr, &rows_decoded);
    REQUIRE(rows_built.size() == rows_decoded.size());
    for (size_t i = 0; i < rows_built.size(); ++i) {
      CHECK(rows_built[i].symbol == rows_decoded[i].symbol);
      CHECK(rows_built[i].self == rows_decoded[i].self);
      CHECK(rows_built[i].total == rows_decoded[i].total);
    }
  }
}

TEST_CASE("settings: the viewer applies the session's settings and what it shows of them") {
  // The settings themselves (time syntax, selectors, names) are the session's: tests/test_session.cpp.
  ViewerState state;
  CHECK(apply_setting(state, "query", "ride-sharing-app{region=\"eu-north\",vehicle=\"car\"}").ok());
  CHECK_FALSE(apply_setting(state, "query", "ride-sharing-app{region!=\"eu-north\"}").ok());
  REQUIRE(apply_setting(state, "search", "Mutex").ok());
  CHECK(state.session.view_settings().search == "Mutex");
  CHECK(std::string(state.search_buffer) == "Mutex");
  REQUIRE(apply_setting(state, "view", "flamegraph").ok());
  CHECK(state.session.view_settings().panels == Panels::flame);
  REQUIRE(apply_setting(state, "view", "diff").ok());
  CHECK(state.session.selection().view == ViewMode::diff);
  state.theme_applied = true;
  REQUIRE(apply_setting(state, "theme", "light").ok());
  CHECK_FALSE(state.theme_applied);  // restyled on the next frame
  const pyroscope::Status bad = apply_setting(state, "veiw", "diff");
  CHECK(bad.message().find("unknown setting 'veiw'") != std::string::npos);
  CHECK(apply_setting(state, "from", "now+1h").ok());  // pyro's time rules, everywhere
}

// from/until of any int64 (a URL can say anything) and a data set whose blocks lie at the ends of the
// times a file holds are clamped to the years 0000..9999: the ranges, the timeline, the range text,
// the comparison's split and the slice then work without overflowing (built with
// -DPYROSCOPE_SANITIZE=address,undefined, UBSan reports any overflow).
TEST_CASE("settings: extreme from/until and data at the ends of a file's times are clamped to years 0..9999") {
  constexpr int64_t kYear0 = -62167219200, kYear10000 = 253402300800;
  char folder[] = "/tmp/pyroscope-viewer-test-XXXXXX";
  REQUIRE(::mkdtemp(folder) != nullptr);
  const std::string path = std::string(folder) + "/far.pyro";
  {
    pyroscope::Writer writer;
    REQUIRE(writer.open(path).ok());
    const Tree tree = tree_from("main;work 3\n");
    const int64_t limit = (int64_t(1) << 61) / 10 * 10;
    REQUIRE(writer.append(pyroscope::SeriesKey("far", {}), -limit, tree).ok());
    REQUIRE(writer.append(pyroscope::SeriesKey("far", {}), 1700000000, tree).ok());
    REQUIRE(writer.append(pyroscope::SeriesKey("far", {}), limit - 10, tree).ok());
    REQUIRE(writer.close().ok());
  }
  ViewerState state;
  REQUIRE(apply_setting(state, "from", "-9223372036854775808").ok());
  REQUIRE(apply_setting(state, "until", "9223372036854775807").ok());
  REQUIRE(apply_setting(state, "right_from", "-9223372036854775807").ok());
  // Digits beyond int64 itself are not a time (the session's time rules, shared with pyro).
  CHECK(apply_setting(state, "right_until", "99999999999999999999").message().find("beyond 64 bits") != std::string::npos);
  REQUIRE(apply_setting(state, "right_until", "9223372036854775807").ok());

  std::vector<LoadInput> inputs(1);
  inputs[0].path = path;
  open_files(state, std::move(inputs));
  load_pending(state);
  REQUIRE_MESSAGE(state.error.empty(), state.error);
  const pyroscope::session::Session& session = state.session;
  CHECK(session.span() == pyroscope::TimeRange{kYear0, kYear10000});
  CHECK(session.selection().ranges[0] == pyroscope::TimeRange{kYear0, kYear10000});
  prepare_views(state);
  CHECK(session.left_tree().total() == 3);  // the block in 2023; the others lie beyond year 9999

  HeadlessImGui imgui;
  auto draw = [&] {
    ImGui::GetIO().DeltaTime = 1.0f / 60.0f;
    ImGui::NewFrame();
    frame(state);
    ImGui::Render();
  };
  draw();
  draw();
  REQUIRE(apply_setting(state, "view", "comparison").ok());
  prepare_views(state);
  draw();
  CHECK(session.selection().ranges[0].from == kYear0);
  CHECK(session.selection().ranges[1].until == kYear10000);
  std::string pyro;
  pyroscope::SliceStats stats;
  REQUIRE(session.slice(&pyro, &stats).ok());
  CHECK(stats.samples == 3);
  CHECK(status_json(state).find(std::to_string(kYear10000)) != std::string::npos);
  std::remove(path.c_str());
  ::rmdir(folder);
}
