// [SECTION] Implementation: tree analysis =========================================================

namespace detail {

// The tree analysis functions build trees node by node, as Tree's own merge does, or append nodes
// in name preorder directly (no lookup index, which is built when first needed).
struct TreeAccess {
  static uint32_t child(Tree& tree, uint32_t parent, uint32_t symbol) { return tree.add_child(parent, symbol); }
  static void add(Tree& tree, uint32_t node, uint64_t self, uint64_t total) {
    tree.nodes_[node].self += self;
    tree.nodes_[node].total += total;
  }
  static uint32_t append(Tree& tree, uint32_t symbol, uint32_t parent, uint64_t self, uint64_t total) {
    tree.nodes_.push_back({symbol, parent, self, total});
    return uint32_t(tree.nodes_.size() - 1);
  }
  // Appends source's nodes [first, end), a preorder range (a subtree), under parent: copied as they
  // are (no zeroing first), then their parents moved to the new ids while they are still in the cache.
  static void append_range(Tree& tree, const Tree& source, uint32_t first, uint32_t end, uint32_t parent) {
    const uint32_t base = uint32_t(tree.nodes_.size());
    tree.nodes_.insert(tree.nodes_.end(), source.nodes_.begin() + first, source.nodes_.begin() + end);
    Tree::Node* copied = tree.nodes_.data() + base;
    copied[0].parent = parent;
    const uint32_t shift = base - first;  // modulo 2^32: a parent id p in [first, end) becomes p + shift
    for (uint32_t k = 1; k < end - first; k++) copied[k].parent += shift;
  }
  // append_range without the nodes whose total is below min_total, nor their subtrees (subtree_end
  // gives where each subtree ends). A kept node's parent is always kept: the path of kept ancestors,
  // as (source id, new id) pairs, gives its new parent.
  template <class SubtreeEnd>
  static void append_range_pruned(Tree& tree, const Tree& source, uint32_t first, uint32_t end, uint32_t parent,
                                  uint64_t min_total, SubtreeEnd&& subtree_end, std::vector<std::pair<uint32_t, uint32_t>>* path) {
    path->clear();
    for (uint32_t i = first; i < end;) {
      const Tree::Node& node = source.nodes_[i];
      if (node.total < min_total) {
        i = subtree_end(i);
        continue;
      }
      while (!path->empty() && path->back().first != node.parent) path->pop_back();
      const uint32_t out_parent = path->empty() ? parent : path->back().second;
      tree.nodes_.push_back({node.symbol, out_parent, node.self, node.total});
      path->emplace_back(i, uint32_t(tree.nodes_.size() - 1));
      i++;
    }
  }
  // Room for count nodes, so appending does not move what is there (on millions of nodes a growing
  // vector copies everything about twice, and touches twice the memory). Room left by an earlier use
  // (reset) is kept unless it is more than four times what is asked for.
  static void reserve(Tree& tree, size_t count) {
    if (tree.nodes_.capacity() > 4 * count + 1024) tree.nodes_.shrink_to_fit();
    tree.nodes_.reserve(count);
  }
  // tree becomes an empty tree over symbols, as Tree(symbols) makes, but keeps its node array's room:
  // a tree made again and again of millions of nodes reuses memory that is already in place.
  static void reset(Tree& tree, std::shared_ptr<SymbolTable> symbols) {
    std::vector<Tree::Node> nodes = std::move(tree.nodes_);
    tree = Tree(std::move(symbols));
    nodes.assign(tree.nodes_.begin(), tree.nodes_.end());
    tree.nodes_ = std::move(nodes);
  }
  // The nodes were appended in name preorder: the layout's fast path may read them so.
  static void appended_in_name_preorder(Tree& tree) {
    tree.index_.clear();
    tree.index_built_.store(false, std::memory_order_relaxed);
    tree.name_preorder_ = true;
  }
};

// Every node's children in name order. A tree in name preorder needs only each subtree's end (its
// first child is the next id, its next sibling starts where its subtree ends); any other tree gets
// child lists sorted by name.
class SortedChildren {
 public:
  // A tree in name preorder, each node's subtree ending where subtree_end says.
  explicit SortedChildren(std::vector<uint32_t> subtree_end) : preorder_(true), end_(std::move(subtree_end)) {}
  // Any tree: child lists sorted by the names' ranks.
  SortedChildren(const Tree& tree, const std::vector<uint32_t>& rank) : preorder_(false) {
    const uint32_t n = tree.node_count();
    offsets_.assign(size_t(n) + 1, 0);
    for (uint32_t i = 1; i < n; i++) offsets_[tree.parent(i) + 1]++;
    for (uint32_t i = 0; i < n; i++) offsets_[i + 1] += offsets_[i];
    children_.resize(n > 0 ? n - 1 : 0);
    std::vector<uint32_t> fill(offsets_.begin(), offsets_.end() - 1);
    for (uint32_t i = 1; i < n; i++) children_[fill[tree.parent(i)]++] = i;
    for (uint32_t i = 0; i < n; i++) {
      auto b = children_.begin() + offsets_[i], e = children_.begin() + offsets_[i + 1];
      if (e - b > 1) std::sort(b, e, [&](uint32_t x, uint32_t y) { return rank[tree.symbol(x)] < rank[tree.symbol(y)]; });
    }
  }
  bool preorder() const { return preorder_; }
  uint32_t subtree_end(uint32_t node) const { return end_[node]; }  // preorder only
  template <class F>
  void for_each_child(uint32_t node, F&& f) const {
    if (preorder_) {
      for (uint32_t c = node + 1; c < end_[node]; c = end_[c]) f(c);
    } else {
      for (uint32_t k = offsets_[node]; k < offsets_[node + 1]; k++) f(children_[k]);
    }
  }

 private:
  bool preorder_;
  std::vector<uint32_t> end_, offsets_, children_;
};

// Work shared by the sandwich's two merges: groups of source nodes (or upward cursors) that become one
// output node, processed depth-first so the output comes out in name preorder. A group's members sit
// in `items`; the groups made from one group's children share an area of it, which is given back once
// they are all done, so the memory stays proportional to the depth, not to the tree.
struct MergeGroup {
  uint32_t out_parent;
  uint32_t symbol;
  uint32_t begin, end;  // its members in items
  uint32_t area_end;    // the end of the area its siblings share
};

// Orders a group's next members by their names' ranks (below `ranks`). The groups near the top of a
// sandwich of a hot function have tens of thousands of members, where a counting sort (stable: within
// a rank they keep their order, which no output depends on) costs O(n + ranks) instead of n log n:
// on the benchmark tree's heaviest function the sorts were a quarter of the sandwich in WebAssembly.
template <class T, class RankOf>
void sort_by_rank(std::vector<T>* items, size_t ranks, RankOf rank_of, std::vector<uint32_t>* counts,
                  std::vector<T>* scratch) {
  if (items->size() < 1024 || items->size() * 4 < ranks) {
    std::sort(items->begin(), items->end());
    return;
  }
  counts->assign(ranks + 1, 0);
  for (const T& item : *items) (*counts)[rank_of(item) + 1]++;
  for (size_t r = 0; r < ranks; r++) (*counts)[r + 1] += (*counts)[r];
  scratch->resize(items->size());
  for (const T& item : *items) (*scratch)[(*counts)[rank_of(item)]++] = item;
  items->swap(*scratch);
}

}  // namespace detail

Status sandwich(const Tree& tree, std::string_view function, Sandwich* out, double min_fraction) {
  const uint32_t symbol = tree.symbols().find(function);
  if (symbol == SymbolTable::kNone) {
    *out = Sandwich();
    return detail::error(StatusCode::not_found, "no function '" + std::string(function) + "' in the tree");
  }
  return sandwich(tree, symbol, out, min_fraction);
}

// Both trees are merges of many places of the tree. Hashing each merged node into its parent (as
// Tree::merge does) took ~1 s on 2.7 million nodes in the browser, and gave trees whose layout must
// sort. Instead each output node is a group of source nodes with the same path from the function,
// and its children are the members' children (callees) or callers (callers) grouped by name: the
// output comes out in name preorder. A group of one member is no merge any more: the callees copy
// its subtree as it is, and the callers write its one remaining path, a plain chain up to a root-level
// frame. Every output node is appended once, in order, into the arrays of the previous sandwich
// computed into `out` (no zeroing, and on millions of nodes no fresh pages to fault in). The walks
// upwards read a packed (parent, symbol) copy of the tree's nodes: a third of their memory, so a
// frame's callers, read one by one, mostly come from the cache.
Status sandwich(const Tree& tree, uint32_t symbol, Sandwich* out, double min_fraction) {
  using detail::MergeGroup;
  using detail::TreeAccess;
  {
    Tree callers = std::move(out->callers), callees = std::move(out->callees);
    *out = Sandwich();
    TreeAccess::reset(callers, tree.shared_symbols());
    TreeAccess::reset(callees, tree.shared_symbols());
    out->callers = std::move(callers);
    out->callees = std::move(callees);
  }
  out->symbol = symbol;
  const uint32_t n = tree.node_count();
  const bool preorder = tree.in_name_preorder();
  // One pass in id order (every node comes after its parent): the outermost calls (no call of the
  // function above them), the packed (parent, symbol) links, how many nodes lie under the outermost
  // calls (the callees' size at most) and their depths added up (the callers' size at most); in a tree
  // in preorder also each subtree's end (its nodes are the ids from it up to the end), from the stack
  // of the current node's ancestors.
  struct Link {
    uint32_t parent, symbol;
  };
  // The exact sandwich's millions of upward steps read a packed copy; a pruned one takes few and reads
  // the tree's own nodes (no 8 bytes a node to allocate and fill). Filled before any read.
  const bool exact = !(min_fraction > 0);
  std::unique_ptr<Link[]> packed_links(exact ? new Link[n] : nullptr);
  const auto link = [&](uint32_t i) { return exact ? packed_links[i] : Link{tree.parent(i), tree.symbol(i)}; };
  std::vector<uint32_t> outermost, end;
  std::vector<uint32_t> rank(tree.symbols().size(), 0), used;  // each used symbol's place in name order
  size_t inside_count = 0, callers_bound = 1;
  {
    // Depths only bound the callers' size for its reservation; a pruned sandwich is small and grows.
    std::unique_ptr<uint32_t[]> depth(exact ? new uint32_t[n] : nullptr);
    std::vector<uint8_t> inside(n, 0);
    std::vector<uint32_t> path;  // preorder: the current node's ancestors, the root first
    if (preorder) {
      end.resize(n);
      path.push_back(Tree::kRoot);
    }
    if (exact) packed_links[Tree::kRoot] = {Tree::kNoNode, tree.symbol(Tree::kRoot)};
    if (exact) depth[Tree::kRoot] = 0;
    for (uint32_t i = 1; i < n; i++) {
      const uint32_t parent = tree.parent(i), s = tree.symbol(i);
      if (exact) packed_links[i] = {parent, s};
      if (rank[s] == 0) {
        rank[s] = 1;
        used.push_back(s);
      }
      if (preorder) {
        while (path.size() > 1 && path.back() != parent) {
          end[path.back()] = i;
          path.pop_back();
        }
        path.push_back(i);
      }
      if (exact) depth[i] = depth[parent] + 1;
      const bool call = s == symbol;
      inside[i] = inside[parent] || call;
      inside_count += inside[i];
      if (!call) continue;
      out->self += tree.self(i);
      if (inside[parent]) continue;
      outermost.push_back(i);
      out->total += tree.node_total(i);
      if (exact) callers_bound += depth[i];
    }
    for (uint32_t node : path) end[node] = n;
  }
  if (outermost.empty())
    return detail::error(StatusCode::not_found, "no call of function #" + std::to_string(symbol) + " in the tree");
  // A group (an output node) below this is left out with everything under it.
  const uint64_t min_total =
      min_fraction > 0 ? std::max<uint64_t>(1, uint64_t(std::ceil(double(out->total) * std::min(min_fraction, 1.0)))) : 0;
  out->min_total = min_total;
  // The ranks Tree::rank_used_symbols gives, without its own pass over the nodes.
  std::sort(used.begin(), used.end(), [&](uint32_t a, uint32_t b) { return tree.symbols().name(a) < tree.symbols().name(b); });
  for (uint32_t r = 0; r < used.size(); r++) rank[used[r]] = r;

  // Callers: the members are cursors walking up from the outermost calls, each with its call's samples;
  // a cursor at a root-level frame ends there (its stack begins there).
  {
    Tree& callers = out->callers;
    if (min_total == 0) TreeAccess::reserve(callers, callers_bound);  // pruned: small, grows as needed
    TreeAccess::add(callers, Tree::kRoot, 0, out->total);
    std::vector<std::pair<uint32_t, uint64_t>> items;  // (source node, samples)
    items.reserve(outermost.size());
    for (uint32_t call : outermost) items.emplace_back(call, tree.node_total(call));
    std::vector<MergeGroup> stack{{Tree::kRoot, symbol, 0, uint32_t(items.size()), uint32_t(items.size())}};
    struct Step {
      uint32_t rank, node;
      uint64_t samples;
      bool operator<(const Step& o) const { return rank != o.rank ? rank < o.rank : node < o.node; }
    };
    std::vector<Step> up, up_scratch;
    std::vector<uint32_t> run_starts, counts;
    while (!stack.empty()) {
      const MergeGroup g = stack.back();
      stack.pop_back();
      items.resize(g.area_end);
      if (g.end - g.begin == 1) {
        // One path up to the root from here: the source node's frame, its caller, ..., the root-level
        // frame where the stack begins, each node the child of the one before.
        const auto [from, samples] = items[g.begin];
        uint32_t parent = g.out_parent;
        for (uint32_t at = from;;) {
          const Link l = link(at);
          const bool first_frame = l.parent == Tree::kRoot;
          parent = TreeAccess::append(callers, l.symbol, parent, first_frame ? samples : 0, samples);
          if (first_frame) break;
          at = l.parent;
        }
        continue;
      }
      uint64_t total = 0, self = 0;
      up.clear();
      for (uint32_t k = g.begin; k < g.end; k++) {
        const auto [at, samples] = items[k];
        total += samples;
        const uint32_t caller = link(at).parent;
        if (caller == Tree::kRoot) self += samples;
        else up.push_back({rank[link(caller).symbol], caller, samples});
      }
      const uint32_t node = TreeAccess::append(callers, g.symbol, g.out_parent, self, total);
      detail::sort_by_rank(&up, used.size(), [](const Step& step) { return step.rank; }, &counts, &up_scratch);
      run_starts.clear();
      for (size_t k = 0; k < up.size(); k++) {
        if (k == 0 || up[k].rank != up[k - 1].rank) run_starts.push_back(uint32_t(items.size()));
        items.emplace_back(up[k].node, up[k].samples);  // distinct nodes: siblings have distinct names
      }
      const uint32_t area_end = uint32_t(items.size());
      for (size_t r = run_starts.size(); r-- > 0;) {
        const uint32_t b = run_starts[r], e = r + 1 < run_starts.size() ? run_starts[r + 1] : area_end;
        if (min_total > 0) {
          uint64_t run_total = 0;
          for (uint32_t k = b; k < e; k++) run_total += items[k].second;
          if (run_total < min_total) continue;
        }
        stack.push_back({node, link(items[b].first).symbol, b, e, area_end});
      }
    }
    TreeAccess::appended_in_name_preorder(callers);
  }

  // Callees: the members of a group are source nodes; its children group the members' children by name.
  {
    const detail::SortedChildren children =
        preorder ? detail::SortedChildren(std::move(end)) : detail::SortedChildren(tree, rank);
    Tree& callees = out->callees;
    if (min_total == 0) TreeAccess::reserve(callees, inside_count + 1);
    TreeAccess::add(callees, Tree::kRoot, 0, out->total);
    std::vector<uint32_t> items(outermost);
    std::vector<MergeGroup> stack{{Tree::kRoot, symbol, 0, uint32_t(items.size()), uint32_t(items.size())}};
    std::vector<std::pair<uint32_t, uint32_t>> kids, kids_scratch;  // (name rank, source node)
    std::vector<uint32_t> counts;
    std::vector<std::pair<uint32_t, uint32_t>> kept_path;
    while (!stack.empty()) {
      const MergeGroup g = stack.back();
      stack.pop_back();
      items.resize(g.area_end);  // the subtrees of the groups before this one are done
      if (g.end - g.begin == 1 && children.preorder()) {
        const uint32_t only = items[g.begin];  // one place: its whole subtree, as it is
        if (min_total == 0) {
          TreeAccess::append_range(callees, tree, only, children.subtree_end(only), g.out_parent);
        } else {
          TreeAccess::append_range_pruned(callees, tree, only, children.subtree_end(only), g.out_parent, min_total,
                                          [&](uint32_t i) { return children.subtree_end(i); }, &kept_path);
        }
        continue;
      }
      uint64_t self = 0, total = 0;
      kids.clear();
      for (uint32_t k = g.begin; k < g.end; k++) {
        const uint32_t member = items[k];
        self += tree.self(member);
        total += tree.node_total(member);
        children.for_each_child(member, [&](uint32_t c) { kids.emplace_back(rank[link(c).symbol], c); });
      }
      const uint32_t node = TreeAccess::append(callees, g.symbol, g.out_parent, self, total);
      detail::sort_by_rank(&kids, used.size(), [](const std::pair<uint32_t, uint32_t>& kid) { return kid.first; }, &counts,
                           &kids_scratch);
      const uint32_t area = uint32_t(items.size());
      for (const auto& kid : kids) items.push_back(kid.second);
      const uint32_t area_end = uint32_t(items.size());
      // Runs of one name are the child groups; pushed last to first, so the first is done first.
      for (size_t run_end = kids.size(); run_end > 0;) {
        size_t run_begin = run_end - 1;
        while (run_begin > 0 && kids[run_begin - 1].first == kids[run_end - 1].first) run_begin--;
        uint64_t run_total = min_total;
        if (min_total > 0) {
          run_total = 0;
          for (size_t k = run_begin; k < run_end; k++) run_total += tree.node_total(kids[k].second);
        }
        if (run_total >= min_total)
          stack.push_back({node, link(kids[run_begin].second).symbol, area + uint32_t(run_begin),
                           area + uint32_t(run_end), area_end});
        run_end = run_begin;
      }
    }
    TreeAccess::appended_in_name_preorder(callees);
  }
  return {};
}

Tree collapse_recursion(const Tree& tree, RecursionCollapse mode) {
  const uint32_t n = tree.node_count();
  // Which frames go: with `all`, those with an ancestor of the same function (not outermost); with
  // `direct`, those whose parent is the same function.
  std::vector<uint8_t> keep;
  if (mode == RecursionCollapse::all) {
    tree.mark_outermost(&keep);
  } else {
    keep.assign(n, 1);
    for (uint32_t i = 1; i < n; i++) {
      const uint32_t parent = tree.parent(i);
      if (parent != Tree::kRoot && tree.symbol(parent) == tree.symbol(i)) keep[i] = 0;
    }
  }
  bool any = false;
  for (uint32_t i = 1; i < n && !any; i++) any = keep[i] == 0;
  if (!any) return tree;
  Tree out(tree.shared_symbols());
  detail::TreeAccess::add(out, Tree::kRoot, tree.self(Tree::kRoot), tree.total());
  std::vector<uint32_t> mapped(n);
  mapped[Tree::kRoot] = Tree::kRoot;
  for (uint32_t i = 1; i < n; i++) {
    const uint32_t parent = mapped[tree.parent(i)];
    if (keep[i]) {
      mapped[i] = detail::TreeAccess::child(out, parent, tree.symbol(i));
      detail::TreeAccess::add(out, mapped[i], tree.self(i), tree.node_total(i));
    } else {
      // Its samples are already in the kept frame above; only its self moves there.
      mapped[i] = parent;
      detail::TreeAccess::add(out, parent, tree.self(i), 0);
    }
  }
  return out;
}

namespace detail {

inline bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
}

// The end of the group opened at s[i] ('(' '<' '[' '{'): the index after its closing character, or npos.
// Only the group's own kind nests, except that a '>' inside parentheses does not close a '<'.
inline size_t group_end(std::string_view s, size_t i) {
  const char open = s[i];
  const char close = open == '(' ? ')' : open == '<' ? '>' : open == '[' ? ']' : '}';
  int depth = 0, parens = 0;
  for (size_t k = i; k < s.size(); k++) {
    const char c = s[k];
    if (open == '<' && c == '(') {
      parens++;
    } else if (open == '<' && c == ')') {
      parens--;
    } else if (c == open && parens == 0) {
      depth++;
    } else if (c == close && parens == 0 && --depth == 0) {
      return k + 1;
    }
  }
  return std::string_view::npos;
}

inline bool starts_word(std::string_view s, size_t i, std::string_view word) {
  return s.compare(i, word.size(), word) == 0 && (i + word.size() == s.size() || !name_char(s[i + word.size()]));
}

// After a parameter list: its qualifiers and tags (const, volatile, &, &&, noexcept, [clone .cold],
// [abi:cxx11]), which a short name leaves out. Returns where the name goes on.
inline size_t skip_qualifiers(std::string_view s, size_t i) {
  for (;;) {
    size_t k = i;
    while (k < s.size() && s[k] == ' ') k++;
    if (k >= s.size()) return k;
    size_t next = k;
    for (std::string_view word : {"const", "volatile", "noexcept"})
      if (starts_word(s, k, word)) next = k + word.size();
    if (next == k && s[k] == '&') next = k + (k + 1 < s.size() && s[k + 1] == '&' ? 2 : 1);
    if (next == k && (s.compare(k, 7, "[clone ") == 0 || s.compare(k, 5, "[abi:") == 0)) {
      const size_t end = group_end(s, k);
      next = end == std::string_view::npos ? s.size() : end;
    }
    if (next == k) return i;  // not a qualifier: keep the space(s) for what follows
    i = next;
  }
}

}  // namespace detail

std::string short_function_name(std::string_view name) {
  using detail::group_end;
  using detail::name_char;
  constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026
  constexpr size_t npos = std::string_view::npos;
  std::string out;
  out.reserve(name.size());
  bool callable = false;  // the last thing written names something that a '(' would call
  int braces = 0;         // inside {lambda...#1} or {unnamed type#1}
  size_t i = 0;
  auto copy_group = [&](size_t end) {
    out.append(name.substr(i, end - i));
    i = end;
  };
  while (i < name.size()) {
    const char c = name[i];
    if (name_char(c)) {
      size_t end = i;
      while (end < name.size() && name_char(name[end])) end++;
      const std::string_view word = name.substr(i, end - i);
      out.append(word);
      i = end;
      callable = true;
      if (word != "operator") continue;
      // The operator's own symbol is part of the name: operator(), operator[], operator< <T>,
      // operator<<=, operator->*, operator new[], operator bool, operator""_km.
      if (i < name.size() && name[i] == ' ' && i + 1 < name.size() && name_char(name[i + 1])) {
        out.push_back(' ');  // operator new, operator delete[], a conversion: operator std::string
        i++;
      } else if (name.compare(i, 2, "()") == 0 || name.compare(i, 2, "[]") == 0) {
        out.append(name.substr(i, 2));
        i += 2;
      } else if (name.compare(i, 2, "\"\"") == 0) {
        out.append("\"\"");
        i += 2;
      } else {
        // The longest operator spelled here: operator-<T> is operator- with template arguments.
        static constexpr std::string_view kOperators[] = {
            "->*", "<<=", ">>=", "<=>", "->", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "++", "--", "+=",
            "-=",  "*=",  "/=",  "%=",  "^=", "&=", "|=", "+",  "-",  "*",  "/",  "%",  "^",  "&",  "|",  "~",
            "!",   "=",   "<",   ">",   ","};
        for (std::string_view op : kOperators) {
          if (name.compare(i, op.size(), op) != 0) continue;
          out.append(op);
          i += op.size();
          break;
        }
        if (i + 1 < name.size() && name[i] == ' ' && name[i + 1] == '<') out.push_back(name[i++]);  // operator< <T>
      }
      continue;
    }
    if (c == '<') {
      const size_t end = group_end(name, i);
      if (end == npos) {
        copy_group(name.size());
      } else if (out.empty()) {
        copy_group(end);  // not C++: a Rust <T as Trait>::f or a Python <module>
      } else {
        out.append("<").append(kEllipsis).append(">");
        i = end;
      }
      callable = true;
      continue;
    }
    if (c == '(') {
      const size_t end = group_end(name, i);
      if (end == npos) {
        copy_group(name.size());
      } else if (callable) {
        i = detail::skip_qualifiers(name, end);  // a parameter list and its qualifiers
      } else {
        copy_group(end);  // (anonymous namespace), a Go receiver (*T), Python's (file.py:12)
      }
      callable = false;
      continue;
    }
    if (c == '[') {
      const size_t end = group_end(name, i);
      if (end != npos && name.compare(i, 5, "[abi:") == 0) {
        i = end;  // callable stays as it was: get_buffer[abi:cxx11]() is still a call
      } else {
        copy_group(end == npos ? name.size() : end);
        callable = true;
      }
      continue;
    }
    if (c == '{') braces++;
    if (c == '}' && braces > 0) braces--;
    if (c == ' ' && braces == 0 && i + 1 < name.size() && name[i + 1] != '(' && name[i + 1] != '[') {
      // A space between words outside any group: what came before was a return type
      // ("std::vector<int>& std::forward<...>(...)", "bool std::operator< <...>(...)").
      const size_t q = detail::skip_qualifiers(name, i);
      if (q != i) {  // "foo(int) const [clone .cold]" already skipped them; here: trailing tags only
        i = q;
        continue;
      }
      out.clear();
      callable = false;
      i++;
      continue;
    }
    out.push_back(c);
    callable = c == '}' || c == '>' || c == ']';
    i++;
  }
  // Inline namespaces say nothing to a reader: std::__cxx11::basic_string is std::basic_string.
  for (std::string_view inline_namespace : {"std::__cxx11::", "std::__1::"}) {
    for (size_t at; (at = out.find(inline_namespace)) != std::string::npos;) out.erase(at + 5, inline_namespace.size() - 5);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out.empty() ? std::string(name) : out;
}

Tree with_short_names(const Tree& tree, std::vector<std::vector<uint32_t>>* merged_from) {
  auto table = std::make_shared<SymbolTable>();
  const SymbolTable& source = tree.symbols();
  std::vector<uint32_t> renamed(source.size(), SymbolTable::kNone);
  if (merged_from) merged_from->clear();
  Tree out(table);
  detail::TreeAccess::add(out, Tree::kRoot, tree.self(Tree::kRoot), tree.total());
  std::vector<uint32_t> mapped(tree.node_count());
  mapped[Tree::kRoot] = Tree::kRoot;
  for (uint32_t i = 1; i < tree.node_count(); i++) {
    const uint32_t symbol = tree.symbol(i);
    uint32_t& to = renamed[symbol];
    if (to == SymbolTable::kNone) {
      to = table->intern(short_function_name(source.name(symbol)));
      if (merged_from) {
        if (merged_from->size() <= to) merged_from->resize(size_t(to) + 1);
        (*merged_from)[to].push_back(symbol);
      }
    }
    mapped[i] = detail::TreeAccess::child(out, mapped[tree.parent(i)], to);
    detail::TreeAccess::add(out, mapped[i], tree.self(i), tree.node_total(i));
  }
  return out;
}

namespace detail {

inline void lower_ascii(std::string_view in, std::string* out) {
  out->resize(in.size());
  for (size_t i = 0; i < in.size(); i++) {
    const char c = in[i];
    (*out)[i] = c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
  }
}

}  // namespace detail

NameSearch::NameSearch(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') i++;
    if (i >= text.size()) break;
    Term term;
    if (text[i] == '-' && i + 1 < text.size() && text[i + 1] != ' ') {
      term.exclude = true;
      i++;
    }
    if (text[i] == '"') {
      const size_t close = text.find('"', i + 1);
      const size_t end = close == std::string_view::npos ? text.size() : close;
      term.text = std::string(text.substr(i + 1, end - i - 1));
      i = close == std::string_view::npos ? text.size() : close + 1;
    } else {
      const size_t end = std::min(text.find(' ', i), text.size());
      term.text = std::string(text.substr(i, end - i));
      i = end;
    }
    if (term.text.empty()) continue;
    // Case is ignored by lowering both sides; an escape keeps its letter (\D is not \d).
    std::string pattern;
    for (size_t k = 0; k < term.text.size(); k++) {
      const char c = term.text[k];
      pattern.push_back(c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c);
      if (c == '\\' && k + 1 < term.text.size()) pattern.push_back(term.text[++k]);
    }
    // Found anywhere, unless the term anchors itself with ^ or $ (which Selector's full matches ignore).
    const bool at_start = !pattern.empty() && pattern.front() == '^';
    const bool at_end = pattern.size() > size_t(at_start) && pattern.back() == '$' &&
                        (pattern.size() < 2 || pattern[pattern.size() - 2] != '\\');
    const std::string body = pattern.substr(at_start, pattern.size() - at_start - at_end);
    std::shared_ptr<detail::Regex> compiled;
    detail::Regex alone;
    if (alone.compile(body).ok()) {
      compiled = std::make_shared<detail::Regex>();
      if (!compiled->compile((at_start ? "(" : ".*(") + body + (at_end ? ")" : ").*")).ok()) compiled.reset();
    }
    term.regex = compiled != nullptr;
    std::string lowered;
    detail::lower_ascii(term.text, &lowered);
    lowered_.push_back(std::move(lowered));
    compiled_.push_back(std::move(compiled));
    terms_.push_back(std::move(term));
  }
}

bool NameSearch::matches(std::string_view name) const {
  if (terms_.empty()) return false;
  std::string lowered;
  detail::lower_ascii(name, &lowered);
  bool any_positive = false, hit = false;
  for (size_t t = 0; t < terms_.size(); t++) {
    const bool found = compiled_[t] ? compiled_[t]->full_match(lowered) : lowered.find(lowered_[t]) != std::string::npos;
    if (terms_[t].exclude) {
      if (found) return false;
    } else {
      any_positive = true;
      hit = hit || found;
    }
  }
  return any_positive ? hit : true;
}

std::string NameSearch::literal(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') {
      out += '.';  // a quote would end the term: any character stands for it
      continue;
    }
    if (std::string_view(".[]{}()*+?|^$\\").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

void NameSearch::match_symbols(const SymbolTable& symbols, std::vector<uint8_t>* matched) const {
  matched->assign(symbols.size(), 0);
  if (terms_.empty()) return;
  for (uint32_t s = 0; s < symbols.size(); s++) (*matched)[s] = matches(symbols.name(s)) ? 1 : 0;
}

