// bench_sandwich: the sandwich view (pyroscope::sandwich) of the heaviest functions of a large tree,
// against a straightforward merge measured in the same run, whose result must equal it node for node
// (bench/README.md, "Viewer: the analysis views").
//
//   bench_sandwich --folded FILE [--top K] [--runs R] [--detail F]   FILE: gen_folded.py 100000 1's output
//     (2.7M nodes); F: the min_fraction of the second measure, the viewer's (2^-16) by default
//   bench_sandwich --smoke                              random trees, correctness only (CTest)
//
// The tree is read from folded text, encoded and decoded: a tree in name preorder, as the viewer gets
// from a query of a .pyro file. For each of the K functions with the largest totals: the sandwich's wall
// and thread-CPU times (median of R runs, each computing into the same Sandwich, as the viewer does
// when it moves from one function to the next), its output sizes, and the reference: every stack of
// the tree (a node with self samples) inserted up to its outermost call of the function (callers, read
// upwards) and from it (callees), renumbered in name preorder. Exits non-zero if any result differs.
// The implementation is linked from pyroscope_impl_reader (CMakeLists.txt): without the sampler,
// with zlib and the JSON importers.
#include "pyroscope.hpp"

#ifdef __EMSCRIPTEN__
#include <emscripten.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

namespace {

using pyroscope::Tree;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_sandwich: %s\n", what.c_str());
  std::exit(1);
}

std::string read_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) die("cannot read " + path);
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

double wall_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
#ifdef __EMSCRIPTEN__
// Built with em++ and run by node (bench/README.md): the process's CPU time, as node counts it.
double cpu_ms() { return EM_ASM_DOUBLE({ const u = process.cpuUsage(); return (u.user + u.system) / 1000; }); }
#else
double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) / 1e6;
}
#endif
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// A tree whose node ids are a name-ordered preorder walk, as a query answered by one stored tree gives.
Tree decoded(const Tree& tree) {
  std::string bytes;
  tree.encode(&bytes);
  Tree out(tree.shared_symbols());
  const pyroscope::Status st = out.decode({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  if (!st.ok()) die("decode: " + st.to_string());
  return out;
}

// The reference: each stack of the tree inserted whole, one frame at a time.
void reference_sandwich(const Tree& tree, uint32_t symbol, Tree* callers, Tree* callees) {
  *callers = Tree(tree.shared_symbols());
  *callees = Tree(tree.shared_symbols());
  std::vector<uint32_t> path, up, down;
  for (uint32_t i = 1; i < tree.node_count(); i++) {
    if (tree.self(i) == 0) continue;
    path.clear();
    for (uint32_t at = i; at != Tree::kRoot; at = tree.parent(at)) path.push_back(tree.symbol(at));  // leaf first
    size_t first = path.size();  // the outermost call: the last one in leaf-first order
    for (size_t k = 0; k < path.size(); k++)
      if (path[k] == symbol) first = k;
    if (first == path.size()) continue;
    up.assign(path.begin() + long(first), path.end());                         // the call, its caller, ...
    down.assign(path.rend() - long(first) - 1, path.rend());                    // the call, its callees ...
    callers->insert_ids(up.data(), up.size(), tree.self(i));
    callees->insert_ids(down.data(), down.size(), tree.self(i));
  }
  callers->renumber_in_name_preorder();
  callees->renumber_in_name_preorder();
}

bool same_nodes(const Tree& a, const Tree& b) {
  if (a.node_count() != b.node_count()) return false;
  for (uint32_t i = 0; i < a.node_count(); i++) {
    if (a.symbol(i) != b.symbol(i) || (i > 0 && a.parent(i) != b.parent(i)) || a.self(i) != b.self(i) ||
        a.node_total(i) != b.node_total(i))
      return false;
  }
  return true;
}

// Checks one function's sandwich against the reference; returns the reference's CPU ms.
double check(const Tree& tree, uint32_t symbol, const pyroscope::Sandwich& s, bool* ok) {
  Tree callers, callees;
  const double started = cpu_ms();
  reference_sandwich(tree, symbol, &callers, &callees);
  const double ms = cpu_ms() - started;
  const bool same = s.callers.in_name_preorder() && s.callees.in_name_preorder() && same_nodes(s.callers, callers) &&
                    same_nodes(s.callees, callees);
  if (!same) {
    std::fprintf(stderr, "bench_sandwich: the sandwich of '%s' differs from the reference (callers %u/%u nodes, "
                 "callees %u/%u)\n", std::string(tree.symbols().name(symbol)).c_str(), s.callers.node_count(),
                 callers.node_count(), s.callees.node_count(), callees.node_count());
    *ok = false;
  }
  return ms;
}

int smoke() {
  std::mt19937 rng(15);
  bool ok = true;
  int checked = 0;
  for (int round = 0; round < 30; round++) {
    Tree tree;
    std::vector<std::string> names;
    for (int f = 0; f < 12; f++) names.push_back("f" + std::to_string(f));
    for (int k = 0; k < 300; k++) {
      std::vector<std::string_view> frames;
      const int depth = 1 + int(rng() % 14);
      for (int d = 0; d < depth; d++) frames.push_back(names[rng() % (round % 2 ? 4 : names.size())]);
      tree.insert(frames, 1 + rng() % 9);
    }
    const pyroscope::RecursionCollapse modes[] = {pyroscope::RecursionCollapse::direct, pyroscope::RecursionCollapse::all};
    for (const Tree& input : {decoded(tree), tree, pyroscope::collapse_recursion(tree, modes[round % 2]),
                              decoded(pyroscope::collapse_recursion(tree, modes[round % 2]))}) {
      std::vector<Tree::FunctionTotal> totals;
      input.function_totals(&totals);
      for (const Tree::FunctionTotal& t : totals) {
        pyroscope::Sandwich s;
        if (!pyroscope::sandwich(input, t.symbol, &s).ok()) die("no sandwich of a function of the tree");
        check(input, t.symbol, s, &ok);
        checked++;
      }
    }
  }
  std::printf("bench_sandwich --smoke: %d sandwiches equal to the reference: %s\n", checked, ok ? "yes" : "NO");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string folded;
  int top = 5, runs = 5;
  double detail = 1.0 / 65536;  // session::Session::kSandwichDetail
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--smoke") return smoke();
    if (i + 1 >= argc) die("usage: bench_sandwich --folded FILE [--top K] [--runs R] [--detail F] | --smoke");
    if (a == "--folded") folded = argv[++i];
    else if (a == "--top") top = std::atoi(argv[++i]);
    else if (a == "--runs") runs = std::atoi(argv[++i]);
    else if (a == "--detail") detail = std::atof(argv[++i]);
    else die("unknown argument " + a);
  }
  if (folded.empty() || top < 1 || runs < 1) die("usage: bench_sandwich --folded FILE [--top K] [--runs R] [--detail F] | --smoke");
  double started = wall_ms();
  Tree tree;
  {
    Tree read;
    const pyroscope::Status st = read.add_folded(read_file(folded));
    if (!st.ok()) die(folded + ": " + st.to_string());
    tree = decoded(read);
  }
  std::printf("tree: %u nodes, %llu samples, read in %.0f ms\n", tree.node_count(),
              static_cast<unsigned long long>(tree.total()), wall_ms() - started);
  std::vector<Tree::FunctionTotal> totals;
  tree.function_totals(&totals);
  std::stable_sort(totals.begin(), totals.end(),
                   [](const Tree::FunctionTotal& a, const Tree::FunctionTotal& b) { return a.total > b.total; });
  if (totals.size() > size_t(top)) totals.resize(size_t(top));
  bool ok = true;
  pyroscope::Sandwich s;  // reused from one function to the next, as the viewer's session does
  std::printf("| function | total | callers nodes | callees nodes | sandwich wall ms (median of %d) | CPU ms | "
              "reference CPU ms | speed-up | at detail %g: callers / callees nodes | CPU ms | vs exact |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", runs, detail);
  for (const Tree::FunctionTotal& t : totals) {
    std::vector<double> wall, cpu;
    for (int r = 0; r < runs; r++) {
      const double w = wall_ms(), c = cpu_ms();
      if (!pyroscope::sandwich(tree, t.symbol, &s).ok()) die("no sandwich of a function of the tree");
      cpu.push_back(cpu_ms() - c);
      wall.push_back(wall_ms() - w);
    }
    const double ref = check(tree, t.symbol, s, &ok);
    const uint32_t exact_callers = s.callers.node_count(), exact_callees = s.callees.node_count();
    // The viewer's sandwich: the same, without the nodes below `detail` of the function's total. Each
    // node kept must be the exact one (same path, self and total), and every exact node at or above
    // min_total must be kept.
    std::vector<double> pruned_cpu;
    pyroscope::Sandwich exact = s;
    for (int r = 0; r < runs; r++) {
      const double c = cpu_ms();
      if (!pyroscope::sandwich(tree, t.symbol, &s, detail).ok()) die("no sandwich of a function of the tree");
      pruned_cpu.push_back(cpu_ms() - c);
    }
    for (const auto& [whole, part] : {std::make_pair(&exact.callers, &s.callers), std::make_pair(&exact.callees, &s.callees)}) {
      uint32_t expected = 0;
      for (uint32_t n = 0; n < whole->node_count(); n++) expected += whole->node_total(n) >= s.min_total;
      bool same = part->node_count() == expected;
      for (uint32_t n = 1; same && n < part->node_count(); n++) {
        std::vector<std::string_view> path;
        for (uint32_t at = n; at != Tree::kRoot; at = part->parent(at)) path.insert(path.begin(), part->name(at));
        const uint32_t m = whole->find_path(path);
        same = m != Tree::kNoNode && whole->self(m) == part->self(n) && whole->node_total(m) == part->node_total(n) &&
               part->node_total(n) >= s.min_total;
      }
      if (!same) {
        std::fprintf(stderr, "bench_sandwich: the sandwich at detail %g is not the exact one without its small nodes\n", detail);
        ok = false;
      }
    }
    std::string name(tree.symbols().name(t.symbol));
    if (name.size() > 40) name = name.substr(0, 37) + "...";
    std::printf("| %s | %llu | %u | %u | %.1f | %.1f | %.0f | %.1fx | %u / %u | %.1f | %.1fx |\n", name.c_str(),
                static_cast<unsigned long long>(t.total), exact_callers, exact_callees, median(wall),
                median(cpu), ref, ref / median(cpu), s.callers.node_count(), s.callees.node_count(), median(pruned_cpu),
                median(cpu) / median(pruned_cpu));
    // Each run apart: the first sandwich of a process (in WebAssembly, code that V8 has not yet
    // optimised) is the one a user waits for.
    std::string each = "  CPU ms of each run, exact:";
    for (double c : cpu) each += " " + std::to_string(c).substr(0, std::to_string(c).find('.') + 2);
    each += "; at detail:";
    for (double c : pruned_cpu) each += " " + std::to_string(c).substr(0, std::to_string(c).find('.') + 2);
    std::printf("%s\n", each.c_str());
    std::fflush(stdout);
  }
  std::printf("results equal to the reference: %s\n", ok ? "yes" : "NO");
  return ok ? 0 : 1;
}
