// [SECTION] Implementation: tree and folded text ==================================================

Tree::Tree() : Tree(std::make_shared<SymbolTable>()) {}

Tree::Tree(std::shared_ptr<SymbolTable> symbols)
    : symbols_(symbols ? std::move(symbols) : std::make_shared<SymbolTable>()) {
  nodes_.push_back({SymbolTable::kNone, kNoNode, 0, 0});
}

// A copy shares the symbol table and rebuilds its index when first needed: copying the source's index
// could race with a lookup building it on another thread.
Tree::Tree(const Tree& other)
    : symbols_(other.symbols_), nodes_(other.nodes_), index_built_(false), name_preorder_(other.name_preorder_) {}

Tree& Tree::operator=(const Tree& other) {
  if (this != &other) {
    symbols_ = other.symbols_;
    nodes_ = other.nodes_;
    index_.clear();
    index_built_.store(false, std::memory_order_relaxed);
    name_preorder_ = other.name_preorder_;
  }
  return *this;
}

Tree::Tree(Tree&& other) noexcept
    : symbols_(std::move(other.symbols_)),
      nodes_(std::move(other.nodes_)),
      index_(std::move(other.index_)),
      index_built_(other.index_built_.load(std::memory_order_relaxed)),
      name_preorder_(other.name_preorder_) {
  other.index_built_.store(true, std::memory_order_relaxed);
}

Tree& Tree::operator=(Tree&& other) noexcept {
  if (this != &other) {
    symbols_ = std::move(other.symbols_);
    nodes_ = std::move(other.nodes_);
    index_ = std::move(other.index_);
    index_built_.store(other.index_built_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    other.index_built_.store(true, std::memory_order_relaxed);
    name_preorder_ = other.name_preorder_;
  }
  return *this;
}

void Tree::clear() {
  nodes_.clear();
  nodes_.push_back({SymbolTable::kNone, kNoNode, 0, 0});
  index_.clear();
  index_built_.store(true, std::memory_order_relaxed);
  name_preorder_ = true;
}

namespace detail {
inline std::mutex& tree_index_mutex() {
  static std::mutex* mutex = new std::mutex;  // never destroyed: trees may outlive static destructors
  return *mutex;
}
}  // namespace detail

// Const lookups may run on several threads at once, so the first one builds the index under a lock.
void Tree::ensure_index() const {
  if (index_built_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(detail::tree_index_mutex());
  if (index_built_.load(std::memory_order_relaxed)) return;
  size_t capacity = 64;
  while ((nodes_.size() + 1) * 4 > capacity * 3) capacity *= 2;
  index_.clear();
  rehash(capacity);
  const size_t mask = capacity - 1;
  for (uint32_t id = 1; id < nodes_.size(); id++) {
    const uint64_t key = uint64_t(nodes_[id].parent) << 32 | nodes_[id].symbol;
    size_t slot = detail::mix64(key) & mask;
    while (index_[slot].second != kNoNode) slot = (slot + 1) & mask;
    index_[slot] = {key, id};
  }
  index_built_.store(true, std::memory_order_release);
}

std::string_view Tree::name(uint32_t node) const {
  uint32_t s = nodes_[node].symbol;
  return s == SymbolTable::kNone ? std::string_view() : symbols_->name(s);
}

void Tree::grow_index() { rehash(index_.empty() ? 64 : index_.size() * 2); }

void Tree::reserve_nodes(size_t count) {
  ensure_index();
  nodes_.reserve(count);
  size_t capacity = index_.empty() ? 64 : index_.size();
  while ((count + 1) * 4 > capacity * 3) capacity *= 2;
  if (capacity != index_.size()) rehash(capacity);
}

void Tree::rehash(size_t capacity) const {
  std::vector<std::pair<uint64_t, uint32_t>> old;
  old.swap(index_);
  index_.assign(capacity, {0, kNoNode});
  for (const auto& e : old) {
    if (e.second == kNoNode) continue;
    size_t i = detail::mix64(e.first) & (capacity - 1);
    while (index_[i].second != kNoNode) i = (i + 1) & (capacity - 1);
    index_[i] = e;
  }
}

uint32_t Tree::child(uint32_t node, uint32_t symbol_id) const {
  ensure_index();
  if (index_.empty()) return kNoNode;
  uint64_t key = uint64_t(node) << 32 | symbol_id;
  size_t mask = index_.size() - 1;
  for (size_t i = detail::mix64(key) & mask;; i = (i + 1) & mask) {
    if (index_[i].second == kNoNode) return kNoNode;
    if (index_[i].first == key) return index_[i].second;
  }
}

uint32_t Tree::add_child(uint32_t parent, uint32_t symbol) {
  ensure_index();
  if ((nodes_.size() + 1) * 4 > index_.size() * 3) grow_index();
  uint64_t key = uint64_t(parent) << 32 | symbol;
  size_t mask = index_.size() - 1;
  size_t i = detail::mix64(key) & mask;
  for (; index_[i].second != kNoNode; i = (i + 1) & mask)
    if (index_[i].first == key) return index_[i].second;
  uint32_t id = uint32_t(nodes_.size());
  nodes_.push_back({symbol, parent, 0, 0});
  index_[i] = {key, id};
  name_preorder_ = false;
  return id;
}

void Tree::insert_ids(const uint32_t* symbol_ids, size_t n, uint64_t count) {
  if (count == 0) return;
  uint32_t node = kRoot;
  nodes_[kRoot].total += count;
  for (size_t i = 0; i < n; i++) {
    node = add_child(node, symbol_ids[i]);
    nodes_[node].total += count;
  }
  nodes_[node].self += count;
}

void Tree::insert(const std::vector<std::string_view>& frames, uint64_t count) {
  std::vector<uint32_t> ids;
  ids.reserve(frames.size());
  for (std::string_view f : frames) ids.push_back(symbols_->intern(f));
  insert_ids(ids.data(), ids.size(), count);
}

uint32_t Tree::find_path(const std::vector<std::string_view>& frames) const {
  uint32_t node = kRoot;
  for (std::string_view f : frames) {
    uint32_t s = symbols_->find(f);
    if (s == SymbolTable::kNone) return kNoNode;
    node = child(node, s);
    if (node == kNoNode) return kNoNode;
  }
  return node;
}

void Tree::merge(const Tree& other) {
  if (&other == this) {
    for (Node& n : nodes_) {
      n.self *= 2;
      n.total *= 2;
    }
    return;
  }
  bool same_table = other.symbols_ == symbols_;
  std::vector<uint32_t> remap;
  if (!same_table) remap.assign(other.symbols_->size(), SymbolTable::kNone);
  std::vector<uint32_t> mapped(other.nodes_.size());
  mapped[kRoot] = kRoot;
  nodes_[kRoot].self += other.nodes_[kRoot].self;
  nodes_[kRoot].total += other.nodes_[kRoot].total;
  // Nodes are created parent first, so one pass in index order sees every parent before its children.
  for (size_t i = 1; i < other.nodes_.size(); i++) {
    const Node& n = other.nodes_[i];
    uint32_t s = n.symbol;
    if (!same_table) {
      if (remap[s] == SymbolTable::kNone) remap[s] = symbols_->intern(other.symbols_->name(s));
      s = remap[s];
    }
    uint32_t m = add_child(mapped[n.parent], s);
    mapped[i] = m;
    nodes_[m].self += n.self;
    nodes_[m].total += n.total;
  }
}

Tree Tree::pruned(double min_share) const {
  Tree out(symbols_);
  uint64_t threshold = min_share <= 0 ? 0 : uint64_t(min_share * double(total()) + 0.999999);
  std::vector<uint32_t> mapped(nodes_.size(), kNoNode);
  mapped[kRoot] = kRoot;
  out.nodes_[kRoot] = nodes_[kRoot];
  out.nodes_[kRoot].parent = kNoNode;
  for (size_t i = 1; i < nodes_.size(); i++) {
    const Node& n = nodes_[i];
    if (mapped[n.parent] == kNoNode || n.total < threshold || n.total == 0) continue;
    uint32_t m = out.add_child(mapped[n.parent], n.symbol);
    out.nodes_[m].self = n.self;
    out.nodes_[m].total = n.total;
    mapped[i] = m;
  }
  return out;
}

void Tree::divide(uint64_t divisor) {
  PYROSCOPE_ASSERT(divisor > 0);
  if (divisor == 1) return;
  for (Node& n : nodes_) {
    n.self = n.self / divisor + (n.self % divisor >= divisor - divisor / 2 ? 1 : 0);  // to nearest, no overflow
    n.total = n.self;
  }
  // Every node is made after its parent (insert appends children; decoding is preorder), so one
  // backward pass adds each finished subtree to its parent.
  for (size_t i = nodes_.size(); i-- > 1;) {
    PYROSCOPE_ASSERT(nodes_[i].parent < i);
    nodes_[nodes_[i].parent].total += nodes_[i].total;
  }
}

void Tree::sorted_children(std::vector<uint32_t>* offsets, std::vector<uint32_t>* children) const {
  size_t n = nodes_.size();
  offsets->assign(n + 1, 0);
  for (size_t i = 1; i < n; i++) (*offsets)[nodes_[i].parent + 1]++;
  for (size_t i = 0; i < n; i++) (*offsets)[i + 1] += (*offsets)[i];
  children->assign(n > 0 ? n - 1 : 0, 0);
  std::vector<uint32_t> fill(offsets->begin(), offsets->end() - 1);
  for (size_t i = 1; i < n; i++) (*children)[fill[nodes_[i].parent]++] = uint32_t(i);
  std::vector<uint32_t> rank;
  rank_used_symbols(&rank);
  for (size_t i = 0; i < n; i++) {
    auto b = children->begin() + (*offsets)[i], e = children->begin() + (*offsets)[i + 1];
    if (e - b > 1)
      std::sort(b, e, [&](uint32_t x, uint32_t y) { return rank[nodes_[x].symbol] < rank[nodes_[y].symbol]; });
  }
}

// The table may hold far more names than the tree uses (a writer's trees share the file's whole
// dictionary), so only the used ones are sorted.
void Tree::rank_used_symbols(std::vector<uint32_t>* rank) const {
  rank->assign(symbols_->size(), 0);
  std::vector<uint32_t> used;
  for (size_t i = 1; i < nodes_.size(); i++) {
    uint32_t& seen = (*rank)[nodes_[i].symbol];
    if (seen == 0) {
      seen = 1;
      used.push_back(nodes_[i].symbol);
    }
  }
  std::sort(used.begin(), used.end(), [&](uint32_t a, uint32_t b) { return symbols_->name(a) < symbols_->name(b); });
  for (uint32_t r = 0; r < used.size(); r++) (*rank)[used[r]] = r;
}

void Tree::mark_outermost(std::vector<uint8_t>* outermost) const {
  const uint32_t n = node_count();
  outermost->assign(n, 0);
  std::vector<uint32_t> on_path(symbols_->size(), 0);  // ancestors calling each function
  // A tree numbered in preorder (a decoded one is) is walked in id order with its ancestors on a
  // stack, reading memory in order. Any other numbering is walked depth-first over child lists.
  std::vector<uint32_t> path{kRoot};
  bool preorder = true;
  for (uint32_t node = 1; node < n; node++) {
    const uint32_t parent = nodes_[node].parent;
    while (path.back() != parent && path.size() > 1) {
      on_path[nodes_[path.back()].symbol]--;
      path.pop_back();
    }
    if (path.back() != parent) {
      preorder = false;
      break;
    }
    uint32_t& count = on_path[nodes_[node].symbol];
    (*outermost)[node] = count == 0;
    count++;
    path.push_back(node);
  }
  if (preorder) return;
  std::fill(on_path.begin(), on_path.end(), 0u);
  std::vector<uint32_t> offsets(size_t(n) + 1, 0), children(n > 0 ? n - 1 : 0);
  for (uint32_t i = 1; i < n; i++) offsets[nodes_[i].parent + 1]++;
  for (uint32_t i = 0; i < n; i++) offsets[i + 1] += offsets[i];
  {
    std::vector<uint32_t> fill(offsets.begin(), offsets.end() - 1);
    for (uint32_t i = 1; i < n; i++) children[fill[nodes_[i].parent]++] = i;
  }
  constexpr uint64_t kLeave = uint64_t(1) << 32;  // "leave this node" entries of the iterative walk
  std::vector<uint64_t> stack(children.begin() + offsets[kRoot], children.begin() + offsets[kRoot + 1]);
  while (!stack.empty()) {
    const uint64_t entry = stack.back();
    stack.pop_back();
    const uint32_t node = uint32_t(entry);
    if (entry & kLeave) {
      on_path[nodes_[node].symbol]--;
      continue;
    }
    uint32_t& count = on_path[nodes_[node].symbol];
    (*outermost)[node] = count == 0;
    count++;
    stack.push_back(entry | kLeave);
    for (uint32_t c = offsets[node]; c < offsets[node + 1]; c++) stack.push_back(children[c]);
  }
}

void Tree::function_totals(std::vector<FunctionTotal>* out) const {
  std::vector<uint8_t> outermost;
  mark_outermost(&outermost);
  std::vector<FunctionTotal> by_symbol(symbols_->size(), FunctionTotal{0, 0, 0});
  std::vector<uint8_t> occurs(symbols_->size(), 0);
  for (uint32_t node = 1; node < node_count(); node++) {
    FunctionTotal& row = by_symbol[nodes_[node].symbol];
    row.self += nodes_[node].self;
    if (outermost[node]) row.total += nodes_[node].total;
    occurs[nodes_[node].symbol] = 1;
  }
  out->clear();
  for (uint32_t symbol = 0; symbol < by_symbol.size(); symbol++) {
    if (!occurs[symbol]) continue;
    by_symbol[symbol].symbol = symbol;
    out->push_back(by_symbol[symbol]);
  }
}

void Tree::renumber_in_name_preorder() {
  if (name_preorder_) return;
  index_ = std::vector<std::pair<uint64_t, uint32_t>>();  // freed before the new nodes are made
  index_built_.store(false, std::memory_order_relaxed);
  std::vector<uint32_t> offsets, children;
  sorted_children(&offsets, &children);
  std::vector<Node> renumbered;
  renumbered.reserve(nodes_.size());
  renumbered.push_back(nodes_[kRoot]);
  std::vector<uint32_t> new_id(nodes_.size());
  new_id[kRoot] = kRoot;
  std::vector<uint32_t> stack(children.begin() + offsets[kRoot], children.begin() + offsets[kRoot + 1]);
  std::reverse(stack.begin(), stack.end());  // the first child on top
  while (!stack.empty()) {
    const uint32_t old_id = stack.back();
    stack.pop_back();
    Node node = nodes_[old_id];
    node.parent = new_id[node.parent];
    new_id[old_id] = uint32_t(renumbered.size());
    renumbered.push_back(node);
    for (uint32_t k = offsets[old_id + 1]; k-- > offsets[old_id];) stack.push_back(children[k]);
  }
  nodes_ = std::move(renumbered);
  name_preorder_ = true;
}

std::string Tree::to_folded() const {
  std::vector<uint32_t> offsets, children;
  sorted_children(&offsets, &children);
  std::string out;
  std::vector<std::string_view> path;
  struct Item {
    uint32_t node;
    uint32_t depth;
  };
  std::vector<Item> stack;
  for (uint32_t k = offsets[kRoot + 1]; k-- > offsets[kRoot];) stack.push_back({children[k], 0});
  if (nodes_[kRoot].self > 0) {
    // Samples with an empty stack have no folded form but a frame-less line would not parse back;
    // they are written under a synthetic frame so no sample disappears.
    out += "[no frames] " + std::to_string(nodes_[kRoot].self) + "\n";
  }
  char number[24];
  while (!stack.empty()) {
    Item it = stack.back();
    stack.pop_back();
    path.resize(it.depth);
    path.push_back(symbols_->name(nodes_[it.node].symbol));
    if (nodes_[it.node].self > 0) {
      for (size_t i = 0; i < path.size(); i++) {
        if (i) out += ';';
        out.append(path[i].data(), path[i].size());
      }
      int len = std::snprintf(number, sizeof number, " %" PRIu64 "\n", nodes_[it.node].self);
      out.append(number, size_t(len));
    }
    for (uint32_t k = offsets[it.node + 1]; k-- > offsets[it.node];) stack.push_back({children[k], it.depth + 1});
  }
  return out;
}

namespace detail {
inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
}  // namespace detail

// Tree::add_folded and from_folded read lines as the folded importer does: see "Implementation: formats".

// Binary form: varint node count (root excluded), varint root self, then every node in preorder:
// varint (child_count << 1 | has_self), [varint self], varint symbol. Children sorted by symbol id
// store the first child's id and then id - previous id - 1; children sorted by name store the first
// child's id and then zigzag(id - previous id). Totals are derived.
void Tree::encode(std::string* out, Encoding encoding, const std::vector<uint32_t>* symbol_map,
                  const std::vector<uint32_t>* name_rank) const {
  size_t n = nodes_.size();
  const bool by_name = encoding == Encoding::children_by_name;
  auto id = [symbol_map](uint32_t symbol) { return symbol_map ? (*symbol_map)[symbol] : symbol; };
  std::vector<uint32_t> offsets(n + 1, 0), children(n > 0 ? n - 1 : 0);
  for (size_t i = 1; i < n; i++) offsets[nodes_[i].parent + 1]++;
  for (size_t i = 0; i < n; i++) offsets[i + 1] += offsets[i];
  std::vector<uint32_t> fill(offsets.begin(), offsets.end() - 1);
  for (size_t i = 1; i < n; i++) children[fill[nodes_[i].parent]++] = uint32_t(i);
  if (by_name) {
    PYROSCOPE_ASSERT(!name_rank || name_rank->size() >= symbols_->size());
    std::vector<uint32_t> own_rank;
    if (!name_rank) rank_used_symbols(&own_rank);
    const std::vector<uint32_t>& rank = name_rank ? *name_rank : own_rank;
    for (size_t i = 0; i < n; i++)
      if (offsets[i + 1] - offsets[i] > 1)
        std::sort(children.begin() + offsets[i], children.begin() + offsets[i + 1],
                  [&](uint32_t a, uint32_t b) { return rank[nodes_[a].symbol] < rank[nodes_[b].symbol]; });
  } else {
    for (size_t i = 0; i < n; i++)
      if (offsets[i + 1] - offsets[i] > 1)
        std::sort(children.begin() + offsets[i], children.begin() + offsets[i + 1],
                  [&](uint32_t a, uint32_t b) { return id(nodes_[a].symbol) < id(nodes_[b].symbol); });
  }
  auto symbol_field = [by_name](uint32_t symbol, uint32_t previous) -> uint64_t {
    if (previous == SymbolTable::kNone) return symbol;
    if (!by_name) return symbol - previous - 1;
    const int64_t delta = int64_t(symbol) - int64_t(previous);
    return (uint64_t(delta) << 1) ^ uint64_t(delta >> 63);
  };
  detail::put_varint(out, n - 1);
  detail::put_varint(out, nodes_[kRoot].self);
  detail::put_varint(out, offsets[kRoot + 1] - offsets[kRoot]);
  struct Item {
    uint32_t node;
    uint32_t previous_sibling_symbol;  // kNone for a first child
  };
  std::vector<Item> stack;
  for (uint32_t k = offsets[kRoot + 1]; k-- > offsets[kRoot];)
    stack.push_back({children[k], k == offsets[kRoot] ? SymbolTable::kNone : id(nodes_[children[k - 1]].symbol)});
  while (!stack.empty()) {
    Item it = stack.back();
    stack.pop_back();
    const Node& node = nodes_[it.node];
    uint64_t child_count = offsets[it.node + 1] - offsets[it.node];
    detail::put_varint(out, child_count << 1 | (node.self ? 1 : 0));
    if (node.self) detail::put_varint(out, node.self);
    detail::put_varint(out, symbol_field(id(node.symbol), it.previous_sibling_symbol));
    for (uint32_t k = offsets[it.node + 1]; k-- > offsets[it.node];)
      stack.push_back({children[k], k == offsets[it.node] ? SymbolTable::kNone : id(nodes_[children[k - 1]].symbol)});
  }
}

namespace detail {
// A rank table's address for decoding: never null, since null means "ordered by symbol id".
inline const uint32_t* rank_pointer(const std::vector<uint32_t>& rank) {
  static const uint32_t no_symbols = 0;
  return rank.empty() ? &no_symbols : rank.data();
}

// Decodes the binary tree form into flat preorder arrays after checking every field.
struct DecodedTree {
  uint64_t root_self = 0;
  std::vector<uint32_t> parent;  // index into these arrays; UINT32_MAX for root children
  std::vector<uint32_t> symbol;
  std::vector<uint64_t> self;
  std::vector<uint64_t> total;
};

// Reads the binary tree form, checking every field, and hands each node to emit(parent, symbol, self)
// in preorder: parent is the index of an earlier emitted node, or UINT32_MAX for a child of the root.
// reserve(node_count) comes first, with a count already checked against the input's size.
// name_rank is null for children sorted by symbol id; for children sorted by name it holds every
// encoded symbol id's rank by name, and siblings must come in strictly increasing rank (which also
// rules out a repeated sibling, as strictly increasing ids do in the other order).
template <class Reserve, class Emit>
Status decode_tree_nodes(ByteSpan bytes, uint32_t symbol_count, const uint32_t* name_rank, uint64_t* root_self,
                         Reserve&& reserve, Emit&& emit) {
  ByteReader in(bytes.data, bytes.size);
  uint64_t node_count = in.varint();
  *root_self = in.varint();
  uint64_t root_children = in.varint();
  if (in.failed) return error(StatusCode::corrupt_file, "tree: truncated header");
  // Every node takes at least two bytes, which bounds what a hostile count can make us allocate.
  if (node_count > bytes.size / 2 || root_children > node_count)
    return error(StatusCode::corrupt_file, "tree: impossible node count");
  reserve(size_t(node_count));
  constexpr uint32_t kFirst = UINT32_MAX;  // previous_symbol before a level's first child
  struct Level {
    uint32_t node;
    uint32_t previous_symbol;  // symbols are < symbol_count <= kFirst
    uint64_t remaining;
  };
  // The open levels, root first; top indexes the innermost. Grown by hand so that the loop's common
  // path has no call in it (this loop decodes millions of nodes when a viewer opens a big profile).
  std::vector<Level> stack(64);
  size_t top = 0;
  stack[0] = {UINT32_MAX, kFirst, root_children};
  // Every node emitted was declared by its parent's child count, and the declared total is kept
  // within node_count, so no separate bound on emitted nodes is needed.
  uint64_t declared = root_children;
  uint64_t emitted = 0;
  for (;;) {
    Level& level = stack[top];
    if (level.remaining == 0) {
      if (top == 0) break;
      --top;
      continue;
    }
    level.remaining--;
    const uint64_t tag = in.varint();
    const uint64_t self = (tag & 1) ? in.varint() : 0;
    const uint64_t delta = in.varint();
    if (in.failed) return error(StatusCode::corrupt_file, "tree: truncated node");
    uint64_t symbol;
    if (level.previous_symbol == kFirst) {
      symbol = delta;
    } else if (!name_rank) {
      symbol = delta >= symbol_count ? UINT64_MAX : level.previous_symbol + 1 + delta;
    } else {
      const int64_t signed_delta = int64_t(delta >> 1) ^ -int64_t(delta & 1);
      symbol = level.previous_symbol + uint64_t(signed_delta);  // below 0 wraps to a huge id
    }
    if (symbol >= symbol_count)
      return error(StatusCode::corrupt_file, "tree: symbol id " + std::to_string(int64_t(symbol)) + " out of range");
    if (name_rank && level.previous_symbol != kFirst && name_rank[symbol] <= name_rank[level.previous_symbol])
      return error(StatusCode::corrupt_file, "tree: children not in name order (symbol " + std::to_string(symbol) + ")");
    if ((tag & 1) && self == 0) return error(StatusCode::corrupt_file, "tree: zero self flagged");
    level.previous_symbol = uint32_t(symbol);
    uint64_t child_count = tag >> 1;
    declared += child_count;
    if (declared > node_count) return error(StatusCode::corrupt_file, "tree: child counts exceed node count");
    const uint32_t index = uint32_t(emitted++);
    emit(level.node, uint32_t(symbol), self);
    if (child_count) {
      if (top + 1 == stack.size()) stack.resize(stack.size() * 2);  // `level` is not used after this
      stack[++top] = {index, kFirst, child_count};
    }
  }
  if (emitted != node_count) return error(StatusCode::corrupt_file, "tree: fewer nodes than declared");
  if (!in.done()) return error(StatusCode::corrupt_file, "tree: trailing bytes");
  return {};
}

inline Status decode_tree(ByteSpan bytes, uint32_t symbol_count, const uint32_t* name_rank, DecodedTree* out) {
  out->parent.clear();
  out->symbol.clear();
  out->self.clear();
  out->total.clear();
  Status status = decode_tree_nodes(
      bytes, symbol_count, name_rank, &out->root_self,
      [&](size_t count) {
        out->parent.reserve(count);
        out->symbol.reserve(count);
        out->self.reserve(count);
      },
      [&](uint32_t parent, uint32_t symbol, uint64_t self) {
        out->parent.push_back(parent);
        out->symbol.push_back(symbol);
        out->self.push_back(self);
      });
  if (!status.ok()) return status;
  out->total = out->self;
  for (size_t i = out->parent.size(); i-- > 0;) {
    uint32_t p = out->parent[i];
    if (p != UINT32_MAX && add_overflows(out->total[p], out->total[i], &out->total[p]))
      return error(StatusCode::corrupt_file, "tree: sample count overflow");
  }
  return {};
}
}  // namespace detail

Status Tree::decode(ByteSpan bytes, Encoding encoding) {
  if (nodes_.size() != 1 || nodes_[kRoot].total != 0 || nodes_[kRoot].self != 0) {
    Tree fresh(symbols_);
    Status st = fresh.decode(bytes, encoding);
    if (!st.ok()) return st;
    clear();
    merge(fresh);
    return {};
  }
  if (encoding == Encoding::children_by_symbol_id) return decode_fresh(bytes, symbols_->size(), nullptr);
  std::vector<uint32_t> rank;
  symbols_->rank_by_name(&rank);
  return decode_fresh(bytes, symbols_->size(), detail::rank_pointer(rank));
}

// Decoded node i becomes node i + 1, in preorder, so parents come before children and totals add up
// in one backward pass. Symbol ids are only checked against symbol_limit: a caller passing another
// table's size (a query) maps them before anyone reads them, by name, so name order survives.
Status Tree::decode_fresh(ByteSpan bytes, uint32_t symbol_limit, const uint32_t* name_rank) {
  uint64_t root_self = 0;
  Status status = detail::decode_tree_nodes(
      bytes, symbol_limit, name_rank, &root_self, [&](size_t count) { nodes_.reserve(count + 1); },
      [&](uint32_t parent, uint32_t symbol, uint64_t self) {
        Node& node = nodes_.emplace_back();  // filled in place: no temporary to copy
        node.symbol = symbol;
        node.parent = parent == UINT32_MAX ? kRoot : parent + 1;
        node.self = self;
        node.total = self;
      });
  nodes_[kRoot].self = root_self;
  nodes_[kRoot].total = root_self;
  for (size_t i = nodes_.size(); status.ok() && i-- > 1;) {
    Node& parent = nodes_[nodes_[i].parent];
    if (detail::add_overflows(parent.total, nodes_[i].total, &parent.total))
      status = detail::error(StatusCode::corrupt_file, "tree: sample count overflow");
  }
  if (!status.ok()) {
    clear();
    return status;
  }
  index_.clear();
  index_built_.store(false, std::memory_order_relaxed);  // built on the first lookup
  name_preorder_ = name_rank != nullptr;
  return {};
}

Status Tree::merge_encoded(ByteSpan bytes, const std::vector<uint32_t>* remap, Encoding encoding) {
  if (encoding == Encoding::children_by_symbol_id) return merge_encoded_ranked(bytes, remap, nullptr);
  // The order is checked by name: remapped ids are ranked through the names they map to.
  std::vector<uint32_t> rank;
  symbols_->rank_by_name(&rank);
  if (remap) {
    std::vector<uint32_t> encoded_rank(remap->size(), 0);
    for (size_t s = 0; s < remap->size(); s++)
      encoded_rank[s] = (*remap)[s] < rank.size() ? rank[(*remap)[s]] : uint32_t(rank.size() + s);  // unmapped: refused later
    return merge_encoded_ranked(bytes, remap, detail::rank_pointer(encoded_rank));
  }
  return merge_encoded_ranked(bytes, remap, detail::rank_pointer(rank));
}

Status Tree::merge_encoded_ranked(ByteSpan bytes, const std::vector<uint32_t>* remap, const uint32_t* name_rank) {
  if (!remap && nodes_.size() == 1 && nodes_[kRoot].total == 0) return decode_fresh(bytes, symbols_->size(), name_rank);
  detail::DecodedTree d;
  uint32_t symbol_limit = remap ? uint32_t(std::min<size_t>(remap->size(), SymbolTable::kNone)) : symbols_->size();
  Status st = detail::decode_tree(bytes, symbol_limit, name_rank, &d);
  if (!st.ok()) return st;
  if (remap)
    for (uint32_t s : d.symbol)
      if ((*remap)[s] >= symbols_->size()) return detail::error(StatusCode::invalid_argument, "tree: remap incomplete");
  return add_decoded(d, remap);
}

Status Tree::add_decoded(const detail::DecodedTree& d, const std::vector<uint32_t>* remap) {
  uint64_t sum = d.root_self;
  for (size_t i = 0; i < d.parent.size(); i++)
    if (d.parent[i] == UINT32_MAX && detail::add_overflows(sum, d.total[i], &sum))
      return detail::error(StatusCode::corrupt_file, "tree: sample count overflow");
  uint64_t check;
  if (detail::add_overflows(nodes_[kRoot].total, sum, &check))
    return detail::error(StatusCode::corrupt_file, "tree: sample count overflow");
  // One allocation up front: a big query result grows by millions of nodes here.
  reserve_nodes(nodes_.size() + d.parent.size());
  nodes_[kRoot].self += d.root_self;
  nodes_[kRoot].total += sum;
  std::vector<uint32_t> mapped(d.parent.size());
  for (size_t i = 0; i < d.parent.size(); i++) {
    uint32_t parent = d.parent[i] == UINT32_MAX ? kRoot : mapped[d.parent[i]];
    uint32_t s = remap ? (*remap)[d.symbol[i]] : d.symbol[i];
    uint32_t m = add_child(parent, s);
    mapped[i] = m;
    nodes_[m].self += d.self[i];
    nodes_[m].total += d.total[i];
  }
  return {};
}

