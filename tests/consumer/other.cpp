// A second translation unit that includes the header without the implementation: with main.cpp it
// shows that the installed header can be included from several files of one program.
#include "pyroscope.hpp"

#include <algorithm>
#include <cstdio>

// The hottest path below node, descending into the largest child at each level, as a small report.
std::string describe_hot_path(const pyroscope::Tree& tree, uint32_t node, int max_depth) {
  std::vector<uint32_t> offsets, children;
  tree.sorted_children(&offsets, &children);
  std::string report;
  const double whole = tree.total() ? static_cast<double>(tree.total()) : 1.0;
  for (int depth = 0; depth < max_depth && offsets[node] != offsets[node + 1]; ++depth) {
    auto first = children.begin() + offsets[node], last = children.begin() + offsets[node + 1];
    node = *std::max_element(first, last, [&](uint32_t a, uint32_t b) { return tree.node_total(a) < tree.node_total(b); });
    char line[64];
    std::snprintf(line, sizeof line, "%6.1f%%  ", 100.0 * static_cast<double>(tree.node_total(node)) / whole);
    report += line;
    report.append(static_cast<size_t>(depth) * 2, ' ');
    report += tree.name(node);
    report += '\n';
  }
  return report;
}
