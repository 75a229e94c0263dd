// Tree analysis (pyroscope.hpp, "Tree analysis"): the sandwich of a function, recursion collapsed,
// short C++ names and the name search. Expected results are computed from the stacks themselves
// (test_core_support.hpp), never through the code under test.
#include "test_core_support.hpp"

#include <cmath>
#include <set>

using pyroscope::Tree;

namespace {

// The function totals of a tree by name: (self, total).
std::map<std::string, std::pair<uint64_t, uint64_t>> totals_by_name(const Tree& tree) {
  std::vector<Tree::FunctionTotal> totals;
  tree.function_totals(&totals);
  std::map<std::string, std::pair<uint64_t, uint64_t>> out;
  for (const Tree::FunctionTotal& t : totals) out[std::string(tree.symbols().name(t.symbol))] = {t.self, t.total};
  return out;
}

std::vector<std::string> frames_of(const std::string& stack) {
  std::vector<std::string> frames;
  for (std::string_view f : core_test::split_frames(stack)) frames.emplace_back(f);
  return frames;
}

std::string joined(const std::vector<std::string>& frames) {
  std::string out;
  for (const std::string& f : frames) out += (out.empty() ? "" : ";") + f;
  return out;
}

// The sandwich of `function` read off the stacks: the stack up to its first (outermost) call, read
// upwards, and what follows that call.
void expected_sandwich(const StackCounts& stacks, const std::string& function, StackCounts* callers, StackCounts* callees) {
  for (const auto& [stack, count] : stacks) {
    const std::vector<std::string> frames = frames_of(stack);
    const auto first = std::find(frames.begin(), frames.end(), function);
    if (first == frames.end()) continue;
    std::vector<std::string> up{function}, down{function};
    for (auto it = std::make_reverse_iterator(first); it != frames.rend(); ++it) up.push_back(*it);
    down.insert(down.end(), first + 1, frames.end());
    (*callers)[joined(up)] += count;
    (*callees)[joined(down)] += count;
  }
}

// The stacks with recursion collapsed, read off the stacks themselves (collapse_recursion's rules).
StackCounts collapsed_stacks(const StackCounts& stacks, pyroscope::RecursionCollapse mode) {
  StackCounts expected;
  for (const auto& [stack, count] : stacks) {
    std::vector<std::string> kept;
    for (const std::string& f : frames_of(stack)) {
      const bool drop = mode == pyroscope::RecursionCollapse::direct ? !kept.empty() && kept.back() == f
                                                                      : std::find(kept.begin(), kept.end(), f) != kept.end();
      if (!drop) kept.push_back(f);
    }
    expected[joined(kept)] += count;
  }
  return expected;
}

// A tree whose node ids are a name-ordered preorder walk, as a query answered by one stored tree gives.
Tree decoded(const Tree& tree) {
  std::string bytes;
  tree.encode(&bytes);
  Tree out(tree.shared_symbols());
  REQUIRE(out.decode(core_test::span_of(bytes)).ok());
  REQUIRE(out.in_name_preorder());
  return out;
}

// Node ids are a preorder walk visiting each node's children in name order: what the flame graph's
// fast layout (FlameLayout::build_from_name_preorder) relies on when in_name_preorder() says so.
bool is_name_preorder(const Tree& tree) {
  std::vector<uint32_t> path{Tree::kRoot};
  std::vector<std::string_view> last_child{std::string_view()};
  for (uint32_t i = 1; i < tree.node_count(); ++i) {
    while (!path.empty() && path.back() != tree.parent(i)) {
      path.pop_back();
      last_child.pop_back();
    }
    if (path.empty()) return false;
    if (!last_child.back().empty() && !(last_child.back() < tree.name(i))) return false;
    last_child.back() = tree.name(i);
    path.push_back(i);
    last_child.push_back(std::string_view());
  }
  return true;
}

void check_sandwich(const Tree& tree, const StackCounts& stacks, const std::string& name,
                    std::pair<uint64_t, uint64_t> self_total) {
  CAPTURE(name);
  pyroscope::Sandwich s;
  REQUIRE(pyroscope::sandwich(tree, name, &s).ok());
  CHECK(s.self == self_total.first);
  CHECK(s.total == self_total.second);
  CHECK(s.callers.total() == s.total);  // recursion counted once: the table's total, to the sample
  CHECK(s.callees.total() == s.total);
  CHECK(core_test::totals_consistent(s.callers));
  CHECK(core_test::totals_consistent(s.callees));
  CHECK(s.callers.in_name_preorder());  // written in drawing order: laid out without sorting
  CHECK(s.callees.in_name_preorder());
  CHECK(is_name_preorder(s.callers));
  CHECK(is_name_preorder(s.callees));
  StackCounts callers, callees;
  expected_sandwich(stacks, name, &callers, &callees);
  CHECK(core_test::stacks_of(s.callers) == callers);
  CHECK(core_test::stacks_of(s.callees) == callees);
}

void check_sandwiches(const Tree& tree, const StackCounts& stacks) {
  const auto totals = totals_by_name(tree);
  REQUIRE_FALSE(totals.empty());
  for (const auto& [name, self_total] : totals) check_sandwich(tree, stacks, name, self_total);
}

}  // namespace

TEST_CASE("sandwich: callers and callees of every function, recursion counted once") {
  StackCounts stacks = {{"main;parse;parse;lex", 4},   {"main;parse;eval;parse;lex", 3}, {"main;eval", 6},
                        {"main;parse", 2},             {"worker;parse;lex", 5},           {"lex", 1},
                        {"main;eval;lex;eval;lex", 7}, {"worker;idle", 9}};
  const Tree tree = core_test::tree_of(stacks);
  check_sandwiches(tree, stacks);
  check_sandwiches(decoded(tree), stacks);

  // By hand: parse is called from main and worker; its callees hold the nested parse once.
  pyroscope::Sandwich s;
  REQUIRE(pyroscope::sandwich(tree, "parse", &s).ok());
  CHECK(s.total == 4 + 3 + 2 + 5);
  CHECK(s.self == 2);
  CHECK(core_test::stacks_of(s.callers) == StackCounts{{"parse;main", 9}, {"parse;worker", 5}});
  CHECK(core_test::stacks_of(s.callees) ==
        StackCounts{{"parse;parse;lex", 4}, {"parse;eval;parse;lex", 3}, {"parse", 2}, {"parse;lex", 5}});
  REQUIRE(pyroscope::sandwich(tree, "lex", &s).ok());
  CHECK(core_test::stacks_of(s.callers).at("lex") == 1);  // a stack that begins at lex: no caller
  CHECK(pyroscope::sandwich(tree, "absent", &s).code() == pyroscope::StatusCode::not_found);
}

TEST_CASE("sandwich: random trees, both the copied-subtree and the merged path") {
  std::mt19937 rng(15);
  for (int round = 0; round < 20; ++round) {
    const StackCounts stacks = core_test::random_stacks(rng, 60, 9);
    const Tree tree = core_test::tree_of(stacks);
    check_sandwiches(tree, stacks);
    check_sandwiches(decoded(tree), stacks);
  }
  // A function called in one place of a decoded tree: its callees are a copy of the subtree, still in
  // name preorder (laid out without sorting).
  const Tree tree = decoded(core_test::tree_of({{"main;run;b;c", 3}, {"main;run;a", 2}, {"other;x", 1}}));
  pyroscope::Sandwich s;
  REQUIRE(pyroscope::sandwich(tree, "run", &s).ok());
  CHECK(s.callees.in_name_preorder());
  CHECK(s.callees.find_path({"run", "b", "c"}) != Tree::kNoNode);  // the lookup index is built on demand
  CHECK(core_test::stacks_of(s.callees) == StackCounts{{"run;b;c", 3}, {"run;a", 2}});
}

// A hot function called from thousands of places: the groups at the top of its sandwich have thousands
// of members, which are ordered by a counting sort instead of std::sort (detail::sort_by_rank).
TEST_CASE("sandwich: groups of thousands of members") {
  StackCounts stacks;
  std::mt19937 rng(31);
  for (int i = 0; i < 3000; ++i) {
    const std::string caller = "caller" + std::to_string(rng() % 2500);
    stacks["root" + std::to_string(i % 40) + ";" + caller + ";hot;callee" + std::to_string(rng() % 1800) + ";leaf" +
           std::to_string(i % 7)] += 1 + rng() % 5;
    stacks["root" + std::to_string(i % 40) + ";" + caller + ";hot;hot;callee" + std::to_string(i % 3)] += 1;
    stacks["root" + std::to_string(i % 40) + ";other"] += 1;
  }
  const Tree tree = core_test::tree_of(stacks);
  const auto totals = totals_by_name(tree);
  for (const Tree& t : {tree, decoded(tree)}) {
    for (const char* name : {"hot", "root3", "leaf2", "callee1"}) check_sandwich(t, stacks, name, totals.at(name));
  }
}

// Every node of a tree by its path of names from the root's child: (self, total).
std::map<std::string, std::pair<uint64_t, uint64_t>> nodes_by_path(const Tree& tree) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> out;
  std::vector<std::string> path_of(tree.node_count());
  for (uint32_t n = 1; n < tree.node_count(); ++n) {
    const uint32_t parent = tree.parent(n);
    path_of[n] = (parent == Tree::kRoot ? std::string() : path_of[parent] + ";") + std::string(tree.name(n));
    out[path_of[n]] = {tree.self(n), tree.node_total(n)};
  }
  return out;
}

// The viewer's sandwich leaves out what a flame graph cannot draw: with min_fraction, exactly the nodes
// whose total is below that share of the function's total (and their subtrees) are gone, and every
// node kept has the exact sandwich's self and total.
TEST_CASE("sandwich: min_fraction leaves out exactly the small nodes and keeps the rest exact") {
  std::mt19937 rng(77);
  int checked = 0, pruned_some = 0;
  for (int round = 0; round < 16; ++round) {
    const StackCounts stacks = round % 2 ? core_test::random_stacks(rng, 80, 10) : [&] {
      StackCounts recursive;
      const char* const names[] = {"f", "g", "h", "main"};
      for (int k = 0; k < 120; ++k) {
        std::string stack;
        const int depth = 1 + int(rng() % 10);
        for (int d = 0; d < depth; ++d) stack += (d ? ";" : "") + std::string(names[rng() % 4]);
        recursive[stack] += 1 + rng() % 40;
      }
      return recursive;
    }();
    const Tree built = core_test::tree_of(stacks);
    for (const Tree& tree : {built, decoded(built)}) {
      std::vector<Tree::FunctionTotal> totals;
      tree.function_totals(&totals);
      for (const Tree::FunctionTotal& t : totals) {
        pyroscope::Sandwich exact, pruned;
        REQUIRE(pyroscope::sandwich(tree, t.symbol, &exact).ok());
        CHECK(exact.min_total == 0);
        for (const double fraction : {0.01, 0.05, 0.3}) {
          REQUIRE(pyroscope::sandwich(tree, t.symbol, &pruned, fraction).ok());
          const uint64_t min_total = std::max<uint64_t>(1, uint64_t(std::ceil(double(exact.total) * fraction)));
          CHECK(pruned.min_total == min_total);
          CHECK(pruned.total == exact.total);
          CHECK(pruned.self == exact.self);
          for (const auto& [whole, part] : {std::make_pair(&exact.callers, &pruned.callers),
                                            std::make_pair(&exact.callees, &pruned.callees)}) {
            CHECK(part->in_name_preorder());
            CHECK(is_name_preorder(*part));
            CHECK(part->total() == whole->total());
            auto expected = nodes_by_path(*whole);
            for (auto it = expected.begin(); it != expected.end();) it = it->second.second < min_total ? expected.erase(it) : std::next(it);
            const auto got = nodes_by_path(*part);
            CHECK(got == expected);
            pruned_some += got.size() < nodes_by_path(*whole).size();
            checked++;
          }
        }
      }
    }
  }
  MESSAGE(checked << " pruned trees checked, " << pruned_some << " of them smaller than the exact one");
  CHECK(pruned_some > checked / 4);
}

// Deep recursion over a few names, on the trees the viewer computes sandwiches of: as built, decoded
// (name preorder) and with recursion collapsed either way. Each sandwich is computed into a fresh
// Sandwich and into one reused from function to function (its node arrays kept); both must be the
// sandwich read off the stacks, node for node the same.
TEST_CASE("sandwich: recursive random trees, recursion collapsed, and a reused result") {
  std::mt19937 rng(2026);
  const char* const names[] = {"f", "g", "h", "main", "std::sort<int*>(int*, int*)"};
  for (int round = 0; round < 12; ++round) {
    StackCounts stacks;
    for (int k = 0; k < 40 + round * 10; ++k) {
      std::string stack;
      const int depth = 1 + int(rng() % 12);
      for (int d = 0; d < depth; ++d) stack += (d ? ";" : "") + std::string(names[rng() % (round % 3 ? 5 : 3)]);
      stacks[stack] += 1 + rng() % 50;
    }
    const Tree tree = core_test::tree_of(stacks);
    pyroscope::Sandwich reused;
    for (const auto mode : {pyroscope::RecursionCollapse::direct, pyroscope::RecursionCollapse::all}) {
      const StackCounts collapsed = collapsed_stacks(stacks, mode);
      const Tree collapsed_tree = pyroscope::collapse_recursion(tree, mode);
      REQUIRE(core_test::stacks_of(collapsed_tree) == collapsed);
      const std::pair<Tree, const StackCounts*> inputs[] = {
          {tree, &stacks}, {decoded(tree), &stacks}, {collapsed_tree, &collapsed}, {decoded(collapsed_tree), &collapsed}};
      for (const auto& [input, expected] : inputs) {
        check_sandwiches(input, *expected);
        std::vector<Tree::FunctionTotal> totals;
        input.function_totals(&totals);
        for (const Tree::FunctionTotal& t : totals) {
          pyroscope::Sandwich fresh;
          REQUIRE(pyroscope::sandwich(input, t.symbol, &fresh).ok());
          REQUIRE(pyroscope::sandwich(input, t.symbol, &reused).ok());
          CHECK(reused.symbol == fresh.symbol);
          CHECK(reused.self == fresh.self);
          CHECK(reused.total == fresh.total);
          for (const auto& [a, b] : {std::make_pair(&fresh.callers, &reused.callers), std::make_pair(&fresh.callees, &reused.callees)}) {
            REQUIRE(a->node_count() == b->node_count());
            CHECK(b->in_name_preorder());
            CHECK(&b->symbols() == &input.symbols());
            bool same = true;
            for (uint32_t i = 0; i < a->node_count(); ++i)
              same = same && a->symbol(i) == b->symbol(i) && a->parent(i) == b->parent(i) && a->self(i) == b->self(i) &&
                     a->node_total(i) == b->node_total(i);
            CHECK(same);
          }
        }
      }
    }
    // A function absent from the tree after a reused result: not_found, and nothing of the last one.
    CHECK(pyroscope::sandwich(tree, "absent", &reused).code() == pyroscope::StatusCode::not_found);
    CHECK(reused.total == 0);
    CHECK(reused.callers.node_count() <= 1);
  }
}

TEST_CASE("collapse recursion: direct and all, every function keeps its total") {
  std::mt19937 rng(37);
  for (int round = 0; round < 20; ++round) {
    StackCounts stacks = core_test::random_stacks(rng, 80, 10);
    stacks["parse;parse;parse;lex"] += 5;
    stacks["parse;eval;parse;eval;lex"] += 3;
    const Tree tree = core_test::tree_of(stacks);
    for (auto mode : {pyroscope::RecursionCollapse::direct, pyroscope::RecursionCollapse::all}) {
      const StackCounts expected = collapsed_stacks(stacks, mode);
      for (const Tree& input : {tree, decoded(tree)}) {
        const Tree collapsed = pyroscope::collapse_recursion(input, mode);
        CHECK(core_test::stacks_of(collapsed) == expected);
        CHECK(core_test::totals_consistent(collapsed));
        CHECK(collapsed.total() == tree.total());
        const auto before = totals_by_name(tree), after = totals_by_name(collapsed);
        for (const auto& [name, self_total] : before) CHECK(after.at(name).second == self_total.second);
      }
    }
  }
  // Nothing to collapse: the same tree, still in drawing order.
  const Tree plain = decoded(core_test::tree_of({{"a;b;c", 2}, {"a;c", 1}}));
  const Tree same = pyroscope::collapse_recursion(plain, pyroscope::RecursionCollapse::all);
  CHECK(same.in_name_preorder());
  CHECK(same.to_folded() == plain.to_folded());
  // direct keeps indirect recursion; all removes it.
  const Tree indirect = core_test::tree_of({{"f;g;f;h", 1}});
  CHECK(pyroscope::collapse_recursion(indirect, pyroscope::RecursionCollapse::direct).to_folded() == "f;g;f;h 1\n");
  CHECK(pyroscope::collapse_recursion(indirect, pyroscope::RecursionCollapse::all).to_folded() == "f;g;h 1\n");
}

TEST_CASE("short names of real demangled libstdc++ and cpp-httplib functions") {
  const std::string text = core_test::read_file(PYROSCOPE_TEST_DATA_DIR "/demangled-names.tsv");
  size_t pairs = 0;
  std::set<std::string> kinds;
  for (const std::string& line : core_test::sorted_lines(text)) {
    if (line[0] == '#') continue;
    const size_t tab = line.find('\t');
    REQUIRE(tab != std::string::npos);
    const std::string full = line.substr(0, tab), expected = line.substr(tab + 1);
    CAPTURE(full);
    CHECK(pyroscope::short_function_name(full) == expected);
    CHECK(pyroscope::short_function_name(expected) == expected);  // already short stays so
    ++pairs;
    if (full.find("{lambda") != std::string::npos) kinds.insert("lambda");
    if (full.find("operator") != std::string::npos) kinds.insert("operator");
    if (full.find("(anonymous namespace)") != std::string::npos) kinds.insert("anonymous namespace");
    if (full.find("(*)(") != std::string::npos) kinds.insert("function pointer");
    if (full.find("httplib::") == 0) kinds.insert("httplib");
    if (full.find("[clone ") != std::string::npos) kinds.insert("clone");
  }
  CHECK(pairs >= 50);
  CHECK(kinds == std::set<std::string>{"anonymous namespace", "clone", "function pointer", "httplib", "lambda", "operator"});
}

TEST_CASE("short names: the rules one at a time, and names that are not C++") {
  struct Case {
    const char* full;
    const char* short_name;
  } const cases[] = {
      {"std::vector<int, std::allocator<int> >::push_back(int const&)", "std::vector<…>::push_back"},
      {"foo::bar() const::{lambda()#1}::operator()() const", "foo::bar::{lambda#1}::operator()"},
      {"Foo::operator->*(int)", "Foo::operator->*"},
      {"Foo::operator<=>(Foo const&) const", "Foo::operator<=>"},
      {"operator new[](unsigned long)", "operator new[]"},
      {"operator\"\"_km(unsigned long long)", "operator\"\"_km"},
      {"std::basic_istream<char, std::char_traits<char> >& std::operator>><char, std::char_traits<char> >(std::basic_istream<char, std::char_traits<char> >&, char&)",
       "std::operator>><…>"},
      {"{unnamed type#1}::operator()() const", "{unnamed type#1}::operator()"},
      {"decltype (std::__declval<int>(0)) std::declval<int>()", "std::declval<…>"},
      {"compute(int) volatile && noexcept", "compute"},
      {"main", "main"},
      {"github.com/grafana/pyroscope/pkg.(*Server).Run", "github.com/grafana/pyroscope/pkg.(*Server).Run"},
      {"main.main.func1", "main.main.func1"},
      {"process_data (app.py:42)", "process_data (app.py:42)"},
      {"<module> (app.py:1)", "<module> (app.py:1)"},
      {"<alloc::vec::Vec<T> as core::ops::drop::Drop>::drop", "<alloc::vec::Vec<T> as core::ops::drop::Drop>::drop"},
      {"[kernel.kallsyms]", "[kernel.kallsyms]"},
      {"", ""},
      {"broken<template(", "broken<template("},
  };
  for (const Case& c : cases) {
    CAPTURE(c.full);
    CHECK(pyroscope::short_function_name(c.full) == c.short_name);
  }
}

TEST_CASE("short names on a tree: frames that become equal merge, each side keeps its samples") {
  const Tree tree = core_test::tree_of({{"main;foo(int);bar<int>(int)", 3},
                                        {"main;foo(double);bar<long>(long)", 4},
                                        {"main;foo(double)", 2},
                                        {"other;foo(int) [clone .cold]", 1}});
  std::vector<std::vector<uint32_t>> merged_from;
  const Tree renamed = pyroscope::with_short_names(tree, &merged_from);
  CHECK(renamed.to_folded() == "main;foo 2\nmain;foo;bar<…> 7\nother;foo 1\n");
  CHECK(core_test::totals_consistent(renamed));
  const uint32_t foo = renamed.symbols().find("foo");
  REQUIRE(foo != pyroscope::SymbolTable::kNone);
  std::set<std::string> names;
  for (uint32_t s : merged_from[foo]) names.insert(std::string(tree.symbols().name(s)));
  CHECK(names == std::set<std::string>{"foo(int)", "foo(double)", "foo(int) [clone .cold]"});
  CHECK(&renamed.symbols() != &tree.symbols());  // a table of its own: the input's names are untouched
}

TEST_CASE("name search: regular expressions anywhere in the name, any case, -exclusions, plain text fallback") {
  using pyroscope::NameSearch;
  CHECK(NameSearch("").empty());
  CHECK_FALSE(NameSearch("").matches("anything"));
  CHECK(NameSearch("json").matches("rideshare::JSON::parse(std::string_view)"));
  CHECK(NameSearch("json::(parse|dump)").matches("json::dump()"));
  CHECK_FALSE(NameSearch("json::(parse|dump)").matches("json::load()"));
  CHECK(NameSearch("^main$").matches("main"));  // ^ and $ anchor a term at the name's ends
  CHECK_FALSE(NameSearch("^main$").matches("xmainx"));
  CHECK(NameSearch("^ma").matches("main"));
  CHECK_FALSE(NameSearch("^ma").matches("xmain"));
  CHECK(NameSearch("order_\\w+").matches("rideshare::order_car(int)"));
  CHECK_FALSE(NameSearch("order_\\W").matches("order_car"));  // escapes keep their case: \W is not \w
  CHECK(NameSearch("ORDER_[a-c]").matches("order_bike"));
  // Several terms: any of them; -term excludes; only exclusions: everything else.
  const NameSearch search("rideshare:: -order -\"check_driver\"");
  CHECK(search.terms().size() == 3);
  CHECK(search.terms()[2].text == "check_driver");
  CHECK(search.terms()[2].exclude);
  CHECK(search.matches("rideshare::parse_request"));
  CHECK_FALSE(search.matches("rideshare::order_car(int)"));
  CHECK_FALSE(search.matches("rideshare::check_driver_availability"));
  CHECK_FALSE(search.matches("json::parse"));
  CHECK(NameSearch("-json").matches("main"));
  CHECK_FALSE(NameSearch("-json").matches("json::parse"));
  // Not a valid expression: plain text.
  const NameSearch brackets("operator[]");
  CHECK_FALSE(brackets.terms()[0].regex);
  CHECK(brackets.matches("std::vector<int>::operator[](unsigned long)"));
  CHECK(NameSearch("\"anonymous namespace\"").matches("(anonymous namespace)::helper(int)"));
  CHECK(NameSearch("-").matches("a-b"));  // a lone dash is text
  // A click on a name searches for exactly it, whatever characters it has.
  for (const char* name : {"std::vector<int, std::allocator<int> >::operator[](unsigned long)", "main::{lambda(int)#2}::operator()(int) const",
                           "operator\"\"_km(unsigned long long)", "a.b*c+d?e|f^g$h\\i"}) {
    CAPTURE(name);
    const NameSearch exact(NameSearch::literal(name));
    REQUIRE(exact.terms().size() == 1);
    CHECK(exact.terms()[0].regex);
    CHECK(exact.matches(name));
    CHECK(exact.matches(std::string("prefix ") + name));
    CHECK_FALSE(exact.matches(std::string(name).substr(1) + "x"));
  }
  pyroscope::SymbolTable table;
  table.intern("main");
  table.intern("json::parse");
  table.intern("JSON::dump");
  std::vector<uint8_t> matched;
  NameSearch("json").match_symbols(table, &matched);
  CHECK(matched == std::vector<uint8_t>{0, 1, 1});
}
