// Folded-stack tree: insert, merge, prune, stable order, diff, folded text import/export, binary
// encoding. Expected values are computed independently (core_test::stacks_of walks the nodes).
// Also run under TSan: lookups on a decoded tree build its child index from several threads.
// pyroscope-test: label=tsan
#include "test_core_support.hpp"

#include <pthread.h>
#include <set>

#include <atomic>
#include <cctype>
#include <thread>

using core_test::stacks_of;
using pyroscope::Tree;

namespace {

Tree sample_tree() {
  Tree tree;
  core_test::insert_stack(&tree, "main;work;spin", 5);
  core_test::insert_stack(&tree, "main;work", 2);
  core_test::insert_stack(&tree, "main;idle", 1);
  return tree;
}

// Runs fn on a thread with a small stack, so an implementation that recurses once per frame of a
// 10,000-frame stack overflows it and the test crashes instead of passing by luck.
template <class Fn>
void run_on_small_stack(Fn fn) {
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setstacksize(&attributes, 256 * 1024);
  pthread_t thread;
  auto trampoline = [](void* arg) -> void* {
    (*static_cast<Fn*>(arg))();
    return nullptr;
  };
  REQUIRE(pthread_create(&thread, &attributes, trampoline, &fn) == 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attributes);
}

bool message_names_line(const pyroscope::Status& status, int line) {
  const std::string wanted = "line " + std::to_string(line);
  const std::string& message = status.message();
  const size_t at = message.find(wanted);
  // "line 3" must not be the start of "line 30".
  return at != std::string::npos && (at + wanted.size() == message.size() || !isdigit(message[at + wanted.size()]));
}

}  // namespace

TEST_CASE("tree: insert keeps self and total per node") {
  Tree tree = sample_tree();
  CHECK(tree.total() == 8);
  CHECK(tree.self(Tree::kRoot) == 0);
  CHECK(tree.name(Tree::kRoot).empty());
  CHECK(tree.node_count() == 5);  // root, main, work, spin, idle

  const uint32_t main = tree.find_path({"main"});
  const uint32_t work = tree.find_path({"main", "work"});
  const uint32_t spin = tree.find_path({"main", "work", "spin"});
  const uint32_t idle = tree.find_path({"main", "idle"});
  REQUIRE(main != Tree::kNoNode);
  REQUIRE(work != Tree::kNoNode);
  REQUIRE(spin != Tree::kNoNode);
  REQUIRE(idle != Tree::kNoNode);
  CHECK(tree.find_path({"main", "spin"}) == Tree::kNoNode);
  CHECK(tree.find_path({"work"}) == Tree::kNoNode);

  CHECK(tree.node_total(main) == 8);
  CHECK(tree.self(main) == 0);
  CHECK(tree.node_total(work) == 7);
  CHECK(tree.self(work) == 2);
  CHECK(tree.node_total(spin) == 5);
  CHECK(tree.self(spin) == 5);
  CHECK(tree.self(idle) == 1);
  CHECK(tree.parent(spin) == work);
  CHECK(tree.parent(work) == main);
  CHECK(tree.parent(main) == Tree::kRoot);
  CHECK(tree.name(spin) == "spin");
  CHECK(tree.child(work, tree.symbol(spin)) == spin);
  CHECK(tree.child(main, tree.symbol(spin)) == Tree::kNoNode);

  // The same stack again adds to the same nodes.
  core_test::insert_stack(&tree, "main;work;spin", 3);
  CHECK(tree.node_count() == 5);
  CHECK(tree.self(spin) == 8);
  CHECK(tree.node_total(main) == 11);
  CHECK(tree.total() == 11);
}

TEST_CASE("tree: insert_ids is insert by symbol id") {
  Tree by_name = sample_tree();
  Tree by_id;
  const uint32_t main = by_id.symbols().intern("main");
  const uint32_t work = by_id.symbols().intern("work");
  const uint32_t spin = by_id.symbols().intern("spin");
  const uint32_t idle = by_id.symbols().intern("idle");
  const uint32_t spin_stack[] = {main, work, spin};
  const uint32_t work_stack[] = {main, work};
  const uint32_t idle_stack[] = {main, idle};
  by_id.insert_ids(spin_stack, 3, 5);
  by_id.insert_ids(work_stack, 2, 2);
  by_id.insert_ids(idle_stack, 2, 1);
  CHECK(stacks_of(by_id) == stacks_of(by_name));
  CHECK(by_id.total() == 8);
}

TEST_CASE("tree: random trees keep total = self + children's totals") {
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    const StackCounts input = core_test::random_stacks(rng, 200, 12);
    Tree tree = core_test::tree_of(input);
    CHECK(core_test::totals_consistent(tree));
    CHECK(stacks_of(tree) == input);
    CHECK(tree.total() == core_test::sum_of(input));
  }
}

TEST_CASE("tree: clear empties the tree") {
  Tree tree = sample_tree();
  tree.clear();
  CHECK(tree.total() == 0);
  CHECK(tree.node_count() == 1);
  core_test::insert_stack(&tree, "x", 2);
  CHECK(tree.total() == 2);
}

TEST_CASE("tree: merge adds every sample, with the same or different symbol tables") {
  std::mt19937 rng(11);
  for (int round = 0; round < 10; ++round) {
    const StackCounts left_input = core_test::random_stacks(rng, 150, 10);
    const StackCounts right_input = core_test::random_stacks(rng, 150, 10);
    StackCounts expected = left_input;
    core_test::add_counts(&expected, right_input);

    SUBCASE("different tables") {
      Tree left = core_test::tree_of(left_input);
      Tree right = core_test::tree_of(right_input);
      left.merge(right);
      CHECK(stacks_of(left) == expected);
      CHECK(core_test::totals_consistent(left));
      CHECK(stacks_of(right) == right_input);  // the source is unchanged
    }
    SUBCASE("same table") {
      Tree left = core_test::tree_of(left_input);
      Tree right(left.shared_symbols());
      for (const auto& [stack, count] : right_input) core_test::insert_stack(&right, stack, count);
      left.merge(right);
      CHECK(stacks_of(left) == expected);
      CHECK(core_test::totals_consistent(left));
    }
    SUBCASE("into an empty tree") {
      Tree empty;
      empty.merge(core_test::tree_of(left_input));
      CHECK(stacks_of(empty) == left_input);
    }
  }
}

TEST_CASE("tree: merge of trees whose tables list the same names in different orders") {
  Tree left, right;
  core_test::insert_stack(&left, "a;b", 1);
  core_test::insert_stack(&right, "b;a", 10);  // right's table: b=0, a=1; left's: a=0, b=1
  core_test::insert_stack(&right, "a;b", 100);
  left.merge(right);
  CHECK(stacks_of(left) == StackCounts{{"a;b", 101}, {"b;a", 10}});
}

TEST_CASE("tree: pruned keeps nodes at or above the share, parents keep their totals") {
  Tree tree;
  core_test::insert_stack(&tree, "main;big", 50);
  core_test::insert_stack(&tree, "main;medium;leaf", 40);
  core_test::insert_stack(&tree, "main;medium", 5);
  core_test::insert_stack(&tree, "main;small;deeper", 5);

  Tree pruned = tree.pruned(0.10);
  CHECK(pruned.total() == 100);
  CHECK(pruned.node_total(pruned.find_path({"main"})) == 100);  // still includes the dropped 5
  CHECK(pruned.find_path({"main", "big"}) != Tree::kNoNode);
  CHECK(pruned.find_path({"main", "medium", "leaf"}) != Tree::kNoNode);
  CHECK(pruned.node_total(pruned.find_path({"main", "medium"})) == 45);
  CHECK(pruned.find_path({"main", "small"}) == Tree::kNoNode);
  CHECK(pruned.find_path({"main", "small", "deeper"}) == Tree::kNoNode);
  CHECK(pruned.node_count() == 5);  // root, main, big, medium, leaf

  // Exactly at the share is kept.
  CHECK(tree.pruned(0.05).find_path({"main", "small", "deeper"}) != Tree::kNoNode);
  CHECK(tree.pruned(0.0).node_count() == tree.node_count());
  CHECK(stacks_of(tree.pruned(0.0)) == stacks_of(tree));
  // The source is unchanged.
  CHECK(tree.find_path({"main", "small", "deeper"}) != Tree::kNoNode);
}

TEST_CASE("tree: sorted_children lists every node's children by name") {
  Tree tree;
  core_test::insert_stack(&tree, "main;zeta", 1);
  core_test::insert_stack(&tree, "main;alpha", 1);
  core_test::insert_stack(&tree, "main;mid;z", 1);
  core_test::insert_stack(&tree, "main;mid;b", 1);
  core_test::insert_stack(&tree, "main;Beta", 1);
  std::vector<uint32_t> offsets, children;
  tree.sorted_children(&offsets, &children);
  REQUIRE(offsets.size() == tree.node_count() + 1);
  REQUIRE(children.size() == tree.node_count() - 1);

  const uint32_t main = tree.find_path({"main"});
  std::vector<std::string> names;
  for (uint32_t i = offsets[main]; i < offsets[main + 1]; ++i) names.emplace_back(tree.name(children[i]));
  CHECK(names == std::vector<std::string>{"Beta", "alpha", "mid", "zeta"});

  std::mt19937 rng(3);
  Tree random = core_test::tree_of(core_test::random_stacks(rng, 300, 8));
  random.sorted_children(&offsets, &children);
  REQUIRE(offsets.size() == random.node_count() + 1);
  std::vector<int> seen(random.node_count(), 0);
  for (uint32_t node = 0; node < random.node_count(); ++node) {
    for (uint32_t i = offsets[node]; i < offsets[node + 1]; ++i) {
      CHECK(random.parent(children[i]) == node);
      ++seen[children[i]];
      if (i + 1 < offsets[node + 1]) CHECK(random.name(children[i]) < random.name(children[i + 1]));
    }
  }
  CHECK(seen[Tree::kRoot] == 0);
  for (uint32_t node = 1; node < random.node_count(); ++node) CHECK(seen[node] == 1);
}

TEST_CASE("diff: both sides per node and change in share") {
  Tree left, right;
  core_test::insert_stack(&left, "main;grows", 10);
  core_test::insert_stack(&left, "main;shrinks", 90);
  core_test::insert_stack(&left, "main;gone", 100);  // left only
  core_test::insert_stack(&right, "main;grows", 100);
  core_test::insert_stack(&right, "main;shrinks", 50);
  core_test::insert_stack(&right, "main;new;leaf", 50);  // right only
  // left total 200: grows 5%, shrinks 45%, gone 50%. right total 200: grows 50%, shrinks 25%, new 25%.

  const pyroscope::DiffTree diff = pyroscope::DiffTree::compute(left, right);
  const Tree& shape = diff.shape();
  CHECK(diff.node_count() == shape.node_count());
  CHECK(shape.node_count() == 7);  // root, main, grows, shrinks, gone, new, leaf

  const uint32_t root = Tree::kRoot;
  CHECK(diff.left_total(root) == 200);
  CHECK(diff.right_total(root) == 200);
  CHECK(diff.change_percent(root) == doctest::Approx(0.0));

  const uint32_t grows = shape.find_path({"main", "grows"});
  REQUIRE(grows != Tree::kNoNode);
  CHECK(diff.left_self(grows) == 10);
  CHECK(diff.left_total(grows) == 10);
  CHECK(diff.right_self(grows) == 100);
  CHECK(diff.right_total(grows) == 100);
  CHECK(diff.change_percent(grows) == doctest::Approx(100.0));  // (50 - 5) / 5 * 100 = 900, clamped

  const uint32_t shrinks = shape.find_path({"main", "shrinks"});
  REQUIRE(shrinks != Tree::kNoNode);
  CHECK(diff.change_percent(shrinks) == doctest::Approx((25.0 - 45.0) / 45.0 * 100.0));

  const uint32_t gone = shape.find_path({"main", "gone"});
  REQUIRE(gone != Tree::kNoNode);
  CHECK(diff.right_total(gone) == 0);
  CHECK(diff.left_total(gone) == 100);
  CHECK(diff.change_percent(gone) == doctest::Approx(-100.0));

  const uint32_t only_right = shape.find_path({"main", "new"});
  const uint32_t only_right_leaf = shape.find_path({"main", "new", "leaf"});
  REQUIRE(only_right != Tree::kNoNode);
  REQUIRE(only_right_leaf != Tree::kNoNode);
  CHECK(diff.left_total(only_right) == 0);
  CHECK(diff.right_total(only_right) == 50);
  CHECK(diff.right_self(only_right) == 0);
  CHECK(diff.right_self(only_right_leaf) == 50);
  CHECK(diff.change_percent(only_right) == doctest::Approx(100.0));
  CHECK(diff.change_percent(only_right_leaf) == doctest::Approx(100.0));

  const uint32_t main = shape.find_path({"main"});
  CHECK(diff.left_total(main) == 200);
  CHECK(diff.right_total(main) == 200);
}

TEST_CASE("diff: within the clamp, and random trees keep both sides exactly") {
  Tree left, right;
  core_test::insert_stack(&left, "a", 20);  // 20% -> 30%: +50%
  core_test::insert_stack(&left, "b", 80);
  core_test::insert_stack(&right, "a", 30);
  core_test::insert_stack(&right, "b", 70);
  pyroscope::DiffTree diff = pyroscope::DiffTree::compute(left, right);
  CHECK(diff.change_percent(diff.shape().find_path({"a"})) == doctest::Approx(50.0));
  CHECK(diff.change_percent(diff.shape().find_path({"b"})) == doctest::Approx(-12.5));

  std::mt19937 rng(5);
  const StackCounts left_input = core_test::random_stacks(rng, 200, 8);
  const StackCounts right_input = core_test::random_stacks(rng, 200, 8);
  diff = pyroscope::DiffTree::compute(core_test::tree_of(left_input), core_test::tree_of(right_input));
  StackCounts left_seen, right_seen;
  const Tree& shape = diff.shape();
  for (uint32_t node = 1; node < shape.node_count(); ++node) {
    std::string stack;
    std::vector<std::string> frames;
    for (uint32_t n = node; n != Tree::kRoot; n = shape.parent(n)) frames.emplace_back(shape.name(n));
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) stack += (stack.empty() ? "" : ";") + *it;
    if (diff.left_self(node)) left_seen[stack] += diff.left_self(node);
    if (diff.right_self(node)) right_seen[stack] += diff.right_self(node);
    CHECK(diff.change_percent(node) >= -100.0);
    CHECK(diff.change_percent(node) <= 100.0);
  }
  CHECK(left_seen == left_input);
  CHECK(right_seen == right_input);
  CHECK(diff.left_total(Tree::kRoot) == core_test::sum_of(left_input));
  CHECK(diff.right_total(Tree::kRoot) == core_test::sum_of(right_input));
}

TEST_CASE("folded: export lists each stack with self samples, sorted") {
  Tree tree = sample_tree();
  CHECK(tree.to_folded() == "main;idle 1\nmain;work 2\nmain;work;spin 5\n");
  CHECK(Tree().to_folded().empty());
}

TEST_CASE("folded: import then export is the same multiset of stacks") {
  std::mt19937 rng(13);
  for (int round = 0; round < 10; ++round) {
    const StackCounts input = core_test::random_stacks(rng, 300, 15);
    const Tree original = core_test::tree_of(input);
    const std::string folded = original.to_folded();
    CHECK(core_test::sorted_lines(folded) == core_test::sorted_lines(core_test::folded_of(input)));

    Tree imported;
    REQUIRE(Tree::from_folded(folded, &imported).ok());
    CHECK(stacks_of(imported) == input);
    CHECK(core_test::sorted_lines(imported.to_folded()) == core_test::sorted_lines(folded));
  }
}

TEST_CASE("folded: import accepts CRLF, trailing spaces, empty lines, spaces in frames") {
  const std::string text =
      "\n"
      "main;work 3\r\n"
      "main;work 2   \n"                      // trailing spaces; same stack adds up
      "\r\n"
      "   \n"                                 // a line of only spaces is empty
      "main;std::map<int, int>::find(int const&) 4\r\n"
      "main;operator new(unsigned long) 1 7\n"  // split at the LAST space: frame "...long) 1"
      "main;idle 5";                          // no final newline
  Tree tree;
  const pyroscope::Status status = Tree::from_folded(text, &tree);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  CHECK(stacks_of(tree) == StackCounts{{"main;work", 5},
                                       {"main;std::map<int, int>::find(int const&)", 4},
                                       {"main;operator new(unsigned long) 1", 7},
                                       {"main;idle", 5}});
  CHECK(tree.total() == 21);

  // add_folded adds to what is there.
  REQUIRE(tree.add_folded("main;idle 1\n").ok());
  CHECK(tree.self(tree.find_path({"main", "idle"})) == 6);
  REQUIRE(tree.add_folded("").ok());
  CHECK(tree.total() == 22);
}

TEST_CASE("folded: a malformed line is an error naming its line, and nothing is added") {
  struct Case {
    const char* what;
    std::string line;
  };
  const Case cases[] = {
      {"missing count", "main;work"},
      {"missing count after space", "main;work "},
      {"non-integer count", "main;work x12"},
      {"fractional count", "main;work 1.5"},
      {"count with trailing garbage", "main;work 12abc"},
      {"negative count", "main;work -3"},
      {"count overflows 64 bits", "main;work 99999999999999999999999"},
      {"empty frame in the middle", "a;;b 1"},
      {"empty first frame", ";a 1"},
      {"empty last frame", "a; 1"},
      {"empty stack", " 5"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const std::string text = "main;ok 1\r\nmain;ok;deeper 2\n\n" + c.line + "\nmain;after 3\n";  // bad line is line 4
    Tree tree;
    core_test::insert_stack(&tree, "before", 10);
    const pyroscope::Status status = tree.add_folded(text);
    CHECK(status.code() == pyroscope::StatusCode::parse_error);
    CHECK_MESSAGE(message_names_line(status, 4), status.message());
    CHECK(stacks_of(tree) == StackCounts{{"before", 10}});
    CHECK(tree.total() == 10);
    CHECK(tree.find_path({"main"}) == Tree::kNoNode);

    Tree fresh;
    CHECK_FALSE(Tree::from_folded(text, &fresh).ok());
  }

  // The line number counts every line, empty ones and CRLF ones included.
  std::string long_text;
  for (int i = 1; i < 30; ++i) long_text += (i % 3 == 0) ? "\r\n" : "a;b 1\r\n";
  long_text += "a;b x\n";
  Tree tree;
  const pyroscope::Status status = tree.add_folded(long_text);
  CHECK_FALSE(status.ok());
  CHECK_MESSAGE(message_names_line(status, 30), status.message());
  CHECK(tree.total() == 0);
}

TEST_CASE("folded: the largest 64-bit count is accepted") {
  Tree tree;
  REQUIRE(tree.add_folded("a 18446744073709551615\n").ok());
  CHECK(tree.total() == UINT64_MAX);
}

TEST_CASE("tree: stacks 10,000 frames deep work without recursion") {
  // Assertions run after the thread ends: the small stack is for the code under test.
  bool done = false, totals_ok = false, import_ok = false, decode_ok = false, merge_ok = false,
       prune_ok = false, diff_ok = false, sorted_ok = false, path_ok = false;
  run_on_small_stack([&] {
    const int depth = 10000;
    std::vector<std::string> names;
    for (int i = 0; i < depth; ++i) names.push_back("frame_" + std::to_string(i));
    std::vector<std::string_view> frames(names.begin(), names.end());

    Tree tree;
    tree.insert(frames, 3);
    std::vector<std::string_view> repeated(depth, "recurse");  // a deep recursion: one name
    tree.insert(repeated, 2);
    totals_ok = tree.total() == 5 && tree.node_count() == 2 * depth + 1;

    const std::string folded = tree.to_folded();
    Tree imported;
    import_ok = Tree::from_folded(folded, &imported).ok() && imported.total() == 5 &&
                           imported.node_count() == tree.node_count();

    std::string encoded;
    tree.encode(&encoded);
    Tree decoded(tree.shared_symbols());
    decode_ok = decoded.decode(core_test::span_of(encoded)).ok() && decoded.total() == 5 &&
                           decoded.node_count() == tree.node_count();

    Tree merged;
    merged.merge(tree);
    merged.merge(imported);
    merge_ok = merged.total() == 10 && merged.node_count() == tree.node_count();

    prune_ok = tree.pruned(0.5).node_count() == depth + 1;  // only the 3-sample chain
    const pyroscope::DiffTree diff = pyroscope::DiffTree::compute(tree, imported);
    diff_ok = diff.node_count() == tree.node_count();

    std::vector<uint32_t> offsets, children;
    tree.sorted_children(&offsets, &children);
    sorted_ok = children.size() == tree.node_count() - 1u;

    const uint32_t leaf = tree.find_path(frames);
    path_ok = leaf != Tree::kNoNode && tree.self(leaf) == 3;

    done = true;
    // The trees are destroyed here, on the small stack too.
  });
  CHECK(done);
  CHECK(totals_ok);
  CHECK(import_ok);
  CHECK(decode_ok);
  CHECK(merge_ok);
  CHECK(prune_ok);
  CHECK(diff_ok);
  CHECK(sorted_ok);
  CHECK(path_ok);
}

TEST_CASE("encode: decode and merge_encoded round trips, in both sibling orders") {
  std::mt19937 rng(17);
  for (int round = 0; round < 20; ++round) {
    const Tree::Encoding encoding = round % 2 ? Tree::Encoding::children_by_symbol_id : Tree::Encoding::children_by_name;
    CAPTURE(static_cast<int>(encoding));
    const StackCounts input = core_test::random_stacks(rng, 250, 12);
    const Tree tree = core_test::tree_of(input);
    std::string encoded;
    tree.encode(&encoded, encoding);
    REQUIRE_FALSE(encoded.empty());

    Tree decoded(tree.shared_symbols());
    REQUIRE(decoded.decode(core_test::span_of(encoded), encoding).ok());
    CHECK(stacks_of(decoded) == input);
    CHECK(core_test::totals_consistent(decoded));

    // merge_encoded without remap: ids are the same table's.
    const StackCounts other_input = core_test::random_stacks(rng, 100, 12);
    Tree target(tree.shared_symbols());
    for (const auto& [stack, count] : other_input) core_test::insert_stack(&target, stack, count);
    REQUIRE(target.merge_encoded(core_test::span_of(encoded), nullptr, encoding).ok());
    StackCounts expected = other_input;
    core_test::add_counts(&expected, input);
    CHECK(stacks_of(target) == expected);

    // merge_encoded with remap into a tree with its own table, interned in another order.
    Tree remapped;
    core_test::insert_stack(&remapped, "zz;Δ_unicode", 4);
    std::vector<uint32_t> remap(tree.symbols().size());
    for (uint32_t id = tree.symbols().size(); id-- > 0;) remap[id] = remapped.symbols().intern(tree.symbols().name(id));
    REQUIRE(remapped.merge_encoded(core_test::span_of(encoded), &remap, encoding).ok());
    StackCounts expected_remapped = input;
    expected_remapped["zz;Δ_unicode"] += 4;
    CHECK(stacks_of(remapped) == expected_remapped);
    CHECK(core_test::totals_consistent(remapped));
  }
}

// The preorder walk over sorted_children (the header's drawing order) visits ids 1, 2, 3, ...
bool numbered_in_name_preorder(const Tree& tree) {
  std::vector<uint32_t> offsets, children;
  tree.sorted_children(&offsets, &children);
  std::vector<uint32_t> stack(children.begin() + offsets[0], children.begin() + offsets[1]);
  std::reverse(stack.begin(), stack.end());
  uint32_t expected_id = 1;
  while (!stack.empty()) {
    const uint32_t node = stack.back();
    stack.pop_back();
    if (node != expected_id++) return false;
    for (uint32_t k = offsets[node + 1]; k-- > offsets[node];) stack.push_back(children[k]);
  }
  return expected_id == tree.node_count();
}

TEST_CASE("encode: a tree decoded from the name order is a left-to-right preorder walk") {
  std::mt19937 rng(31);
  const StackCounts input = core_test::random_stacks(rng, 300, 10);
  const Tree tree = core_test::tree_of(input);
  CHECK_FALSE(tree.in_name_preorder());  // built by inserts
  CHECK(Tree().in_name_preorder());      // nothing to order

  std::string by_name, by_id;
  tree.encode(&by_name, Tree::Encoding::children_by_name);
  tree.encode(&by_id, Tree::Encoding::children_by_symbol_id);
  Tree decoded(tree.shared_symbols()), decoded_by_id(tree.shared_symbols());
  REQUIRE(decoded.decode(core_test::span_of(by_name)).ok());
  REQUIRE(decoded_by_id.decode(core_test::span_of(by_id), Tree::Encoding::children_by_symbol_id).ok());
  CHECK(decoded.in_name_preorder());
  CHECK_FALSE(decoded_by_id.in_name_preorder());
  CHECK(stacks_of(decoded_by_id) == input);

  CHECK(numbered_in_name_preorder(decoded));

  Tree copy = decoded;
  CHECK(copy.in_name_preorder());
  core_test::insert_stack(&copy, input.begin()->first, 1);  // an existing path: no new node
  CHECK(copy.in_name_preorder());
  core_test::insert_stack(&copy, "a;new;path", 1);
  CHECK_FALSE(copy.in_name_preorder());
  copy.clear();
  CHECK(copy.in_name_preorder());
}

TEST_CASE("tree: renumbering in name preorder keeps every value and the lookups") {
  std::mt19937 rng(37);
  const StackCounts input = core_test::random_stacks(rng, 400, 12);
  std::vector<std::pair<std::string, uint64_t>> shuffled(input.begin(), input.end());
  std::shuffle(shuffled.begin(), shuffled.end(), rng);  // inserted in name order, ids would already be
  Tree tree;
  for (const auto& [stack, count] : shuffled) core_test::insert_stack(&tree, stack, count);
  REQUIRE_FALSE(numbered_in_name_preorder(tree));
  const std::string folded = tree.to_folded();
  std::string original_bytes;
  tree.encode(&original_bytes);
  tree.renumber_in_name_preorder();
  CHECK(tree.in_name_preorder());
  CHECK(numbered_in_name_preorder(tree));
  CHECK(stacks_of(tree) == input);
  CHECK(tree.to_folded() == folded);
  CHECK(core_test::totals_consistent(tree));
  for (uint32_t n = 1; n < tree.node_count(); ++n) REQUIRE(tree.child(tree.parent(n), tree.symbol(n)) == n);
  // The encoding (canonical for a symbol table) is unchanged, and the tree takes more samples.
  std::string renumbered_bytes;
  tree.encode(&renumbered_bytes);
  CHECK(renumbered_bytes == original_bytes);
  core_test::insert_stack(&tree, "after;renumbering", 5);
  CHECK_FALSE(tree.in_name_preorder());
  StackCounts expected = input;
  expected["after;renumbering"] = 5;
  CHECK(stacks_of(tree) == expected);
}

TEST_CASE("encode: name-ordered siblings out of order, repeated or out of range are refused") {
  Tree names;
  const uint32_t a = names.symbols().intern("b_second");  // id 0, second by name
  const uint32_t b = names.symbols().intern("a_first");   // id 1, first by name
  // Two root children, each with one self sample: [node count 2, root self 0, root children 2],
  // then per child (child_count 0 << 1 | has_self 1), self 1, symbol field.
  auto two_children = [](uint64_t first_symbol, uint64_t second_field) {
    std::string bytes;
    for (uint64_t v : {uint64_t(2), uint64_t(0), uint64_t(2), uint64_t(1), uint64_t(1), first_symbol, uint64_t(1),
                       uint64_t(1), second_field})
      bytes.push_back(static_cast<char>(v));
    return bytes;
  };
  auto decode = [&](const std::string& bytes) {
    Tree decoded(names.shared_symbols());
    return decoded.decode(core_test::span_of(bytes));
  };
  // In order: a_first (id 1), then b_second (id 0): delta -1, zigzag 1.
  const pyroscope::Status ordered = decode(two_children(b, 1));
  CHECK_MESSAGE(ordered.ok(), ordered.to_string());
  // Out of order: b_second (id 0), then a_first (id 1): delta +1, zigzag 2.
  const pyroscope::Status misordered = decode(two_children(a, 2));
  CHECK(misordered.code() == pyroscope::StatusCode::corrupt_file);
  CHECK(misordered.message().find("name order") != std::string::npos);
  // Repeated: delta 0.
  CHECK(decode(two_children(a, 0)).code() == pyroscope::StatusCode::corrupt_file);
  // Below id 0: from id 0, delta -1.
  const pyroscope::Status below = decode(two_children(a, 1));
  CHECK(below.code() == pyroscope::StatusCode::corrupt_file);
  CHECK(below.message().find("out of range") != std::string::npos);
  // The same bytes in the symbol-id order read the second field as id + 1 + field.
  Tree by_id(names.shared_symbols());
  CHECK(by_id.decode(core_test::span_of(two_children(a, 0)), Tree::Encoding::children_by_symbol_id).ok());
}

TEST_CASE("encode: a decoded tree answers lookups, also from several threads at once, and takes inserts") {
  // Decoding leaves the child index to be built by the first lookup; these are the lookups.
  std::mt19937 rng(23);
  const StackCounts input = core_test::random_stacks(rng, 400, 10);
  const Tree tree = core_test::tree_of(input);
  std::string encoded;
  tree.encode(&encoded);
  Tree decoded(tree.shared_symbols());
  REQUIRE(decoded.decode(core_test::span_of(encoded)).ok());

  std::atomic<int> wrong{0};
  auto look_up_every_node = [&] {
    for (uint32_t n = 1; n < decoded.node_count(); ++n) {
      if (decoded.child(decoded.parent(n), decoded.symbol(n)) != n) wrong++;
    }
  };
  std::thread first(look_up_every_node), second(look_up_every_node);
  look_up_every_node();
  first.join();
  second.join();
  CHECK(wrong.load() == 0);

  const Tree copy = decoded;  // a copy rebuilds its own index
  for (uint32_t n = 1; n < copy.node_count(); ++n) REQUIRE(copy.child(copy.parent(n), copy.symbol(n)) == n);

  Tree grown(tree.shared_symbols());
  REQUIRE(grown.decode(core_test::span_of(encoded)).ok());
  const std::string existing = input.begin()->first;
  core_test::insert_stack(&grown, existing, 3);         // found through the index, not duplicated
  core_test::insert_stack(&grown, "brand;new;stack", 2);
  StackCounts expected = input;
  expected[existing] += 3;
  expected["brand;new;stack"] += 2;
  CHECK(stacks_of(grown) == expected);
  CHECK(grown.node_count() == decoded.node_count() + 3);
  CHECK(core_test::totals_consistent(grown));
}

TEST_CASE("encode: a failed decode leaves the tree empty") {
  std::mt19937 rng(29);
  const Tree tree = core_test::tree_of(core_test::random_stacks(rng, 50, 6));
  std::string encoded;
  tree.encode(&encoded);
  Tree decoded(tree.shared_symbols());
  REQUIRE_FALSE(decoded.decode(core_test::span_of(encoded.substr(0, encoded.size() - 1))).ok());
  CHECK(decoded.node_count() == 1);
  CHECK(decoded.total() == 0);
  core_test::insert_stack(&decoded, "after;failure", 1);
  CHECK(stacks_of(decoded) == StackCounts{{"after;failure", 1}});
}

TEST_CASE("encode: an empty tree round trips") {
  Tree empty;
  std::string encoded;
  empty.encode(&encoded);
  Tree decoded;
  REQUIRE(decoded.decode(core_test::span_of(encoded)).ok());
  CHECK(decoded.total() == 0);
  CHECK(decoded.node_count() == 1);
}

TEST_CASE("encode: bad bytes give an error, never a crash") {
  std::mt19937 rng(19);
  const Tree tree = core_test::tree_of(core_test::random_stacks(rng, 60, 6));
  std::string encoded;
  tree.encode(&encoded);

  // Symbol ids beyond the table are refused.
  Tree small_table;
  small_table.symbols().intern("only");
  CHECK_FALSE(small_table.decode(core_test::span_of(encoded)).ok());

  // Every proper prefix is an error or a valid tree; the full encoding decodes.
  for (size_t length = 0; length < encoded.size(); ++length) {
    Tree decoded(tree.shared_symbols());
    const pyroscope::Status status = decoded.decode(core_test::span_of(encoded.substr(0, length)));
    if (status.ok()) CHECK(core_test::totals_consistent(decoded));
  }
  // Random byte flips.
  for (int variant = 0; variant < 2000; ++variant) {
    std::string damaged = encoded;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) damaged[rng() % damaged.size()] ^= static_cast<char>(1 + rng() % 255);
    Tree decoded(tree.shared_symbols());
    if (decoded.decode(core_test::span_of(damaged)).ok()) CHECK(core_test::totals_consistent(decoded));
    Tree merged(tree.shared_symbols());
    (void)merged.merge_encoded(core_test::span_of(damaged), nullptr);
  }
  // Remap tables too short for the ids are refused.
  std::vector<uint32_t> short_remap(1, 0);
  Tree target;
  CHECK_FALSE(target.merge_encoded(core_test::span_of(encoded), &short_remap).ok());
}

TEST_CASE("tree: function totals count a recursive function once, in any node order") {
  Tree tree;
  core_test::insert_stack(&tree, "main;parse;parse;parse;lex", 5);
  core_test::insert_stack(&tree, "main;parse;eval;parse", 3);
  core_test::insert_stack(&tree, "main;eval", 2);
  core_test::insert_stack(&tree, "main", 1);
  std::vector<Tree::FunctionTotal> rows;
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_name;
  auto collect = [&](const Tree& t) {
    by_name.clear();
    t.function_totals(&rows);
    for (const Tree::FunctionTotal& r : rows) by_name[std::string(t.symbols().name(r.symbol))] = {r.self, r.total};
  };
  const std::map<std::string, std::pair<uint64_t, uint64_t>> expected = {
      {"main", {1, 11}}, {"parse", {3, 8}}, {"lex", {5, 5}}, {"eval", {2, 5}}};
  collect(tree);  // built by insert: not in preorder
  CHECK(by_name == expected);
  Tree renumbered = tree;
  renumbered.renumber_in_name_preorder();
  collect(renumbered);
  CHECK(by_name == expected);
  std::vector<uint8_t> outermost;
  renumbered.mark_outermost(&outermost);
  REQUIRE(outermost.size() == renumbered.node_count());
  CHECK(outermost[Tree::kRoot] == 0);
  const uint32_t inner = renumbered.find_path({"main", "parse", "parse"});
  REQUIRE(inner != Tree::kNoNode);
  CHECK(outermost[inner] == 0);
  CHECK(outermost[renumbered.find_path({"main", "parse", "eval"})] == 1);

  // Random trees: totals from the rule, checked against the folded stacks directly.
  std::mt19937 rng(31);
  for (int round = 0; round < 20; ++round) {
    const core_test::StackCounts stacks = core_test::random_stacks(rng, 60, 8);
    std::map<std::string, std::pair<uint64_t, uint64_t>> want;
    for (const auto& [stack, count] : stacks) {
      std::vector<std::string_view> frames = core_test::split_frames(stack);
      std::set<std::string_view> seen;
      for (std::string_view f : frames)
        if (seen.insert(f).second) want[std::string(f)].second += count;
      want[std::string(frames.back())].first += count;
    }
    Tree random = core_test::tree_of(stacks);
    collect(random);
    CHECK(by_name == want);
  }
}
