// [SECTION] Folded-stack tree =====================================================================

namespace detail {
struct DecodedTree;
struct TreeAccess;  // lets the tree analysis section build trees node by node
}  // namespace detail

// A call tree: node = (function, self samples, total samples, children). Node 0 is the root
// (symbol kNone); its total is the number of samples in the tree. Stored exactly: no "other" node.
// Thread safety: one thread at a time; const functions may run concurrently with each other.
class Tree {
 public:
  static constexpr uint32_t kRoot = 0;
  static constexpr uint32_t kNoNode = 0xffffffffu;

  Tree();  // creates its own symbol table
  explicit Tree(std::shared_ptr<SymbolTable> symbols);  // null: a table of its own

  // Stack frames are root first, leaf last.
  void insert(const std::vector<std::string_view>& frames, uint64_t count);
  void insert_ids(const uint32_t* symbol_ids, size_t n, uint64_t count);
  // Adds every sample of other; symbols are remapped by name when the tables differ.
  void merge(const Tree& other);
  // Room for node_count nodes in all, so that growing to it copies nothing (an importer knows an
  // upper bound). Memory reserved and never used is address space, not resident memory.
  void reserve(size_t node_count) { nodes_.reserve(node_count); }
  // Copy keeping only nodes whose total is at least min_share of the root's total. Parents keep their
  // totals, so shares stay true; the dropped samples are simply not drawn.
  Tree pruned(double min_share) const;
  // Divides every value by divisor (> 0), rounding each node's self to the nearest integer; totals
  // are summed again from the selves, so they stay consistent. An average over blocks is a merge
  // divided by the number of blocks.
  void divide(uint64_t divisor);

  uint32_t node_count() const { return static_cast<uint32_t>(nodes_.size()); }
  uint64_t total() const { return nodes_[kRoot].total; }
  uint32_t symbol(uint32_t node) const { return nodes_[node].symbol; }
  std::string_view name(uint32_t node) const;  // "" for the root
  uint32_t parent(uint32_t node) const { return nodes_[node].parent; }
  uint64_t self(uint32_t node) const { return nodes_[node].self; }
  uint64_t node_total(uint32_t node) const { return nodes_[node].total; }
  uint32_t child(uint32_t node, uint32_t symbol_id) const;  // kNoNode if absent
  uint32_t find_path(const std::vector<std::string_view>& frames) const;  // kNoNode if absent
  // Children of every node sorted by function name: the stable order for drawing and export.
  // children_offsets has node_count()+1 entries; node n's children are
  // children[children_offsets[n] .. children_offsets[n+1]).
  void sorted_children(std::vector<uint32_t>* children_offsets, std::vector<uint32_t>* children) const;
  // rank[symbol] = position of its name among the names the nodes use, in byte order (other entries
  // of the table's size are 0): one string sort over those names, however big the table is.
  void rank_used_symbols(std::vector<uint32_t>* rank) const;

  // outermost[node] = 1 when no ancestor of node calls the same function, else 0 (the root: 0).
  // Summing node_total over outermost nodes counts a recursive function's samples once: the rule
  // behind per-function totals, here and in every front end that shows them.
  void mark_outermost(std::vector<uint8_t>* outermost) const;
  struct FunctionTotal {
    uint32_t symbol;
    uint64_t self;   // samples in which the function is the leaf
    uint64_t total;  // samples in which it is anywhere on the stack, recursion counted once
  };
  // One entry per function that occurs in the tree, by symbol id.
  void function_totals(std::vector<FunctionTotal>* out) const;

  const SymbolTable& symbols() const { return *symbols_; }
  SymbolTable& symbols() { return *symbols_; }
  const std::shared_ptr<SymbolTable>& shared_symbols() const { return symbols_; }

  // Folded text: one "a;b;c 12" line per node with self samples, in sorted order, '\n' endings.
  std::string to_folded() const;
  // Adds the stacks of folded text (perf/FlameGraph stackcollapse, py-spy, Pyroscope format=folded),
  // strictly: a malformed line (no count, an empty frame, ...) is an error naming its line number and
  // nothing of the text is added. Lines are read exactly as FoldedImporter reads them (the lenient,
  // streaming reader): CRLF, blank lines and trailing blanks after the count are fine, and every byte
  // before the count's one-space separator is the stack's, so a frame ending in a space keeps it.
  Status add_folded(std::string_view text);
  static Status from_folded(std::string_view text, Tree* out);

  // The order of siblings in the binary form: by symbol id (files of format version 1) or by name
  // (version 2). Name order makes a decoded tree's node ids a left-to-right preorder walk, the order a
  // flame graph is drawn and folded text is written in, so neither has to sort millions of nodes.
  enum class Encoding : uint8_t { children_by_symbol_id = 1, children_by_name = 2 };
  // Compact binary form used by the file format (symbol ids refer to symbols(), or, with symbol_map,
  // to symbol_map[id]: a tree written in another table's ids without being copied into it first).
  // name_rank, for children_by_name: any numbers of this tree's symbol ids in the order of their names
  // (a file writer keeps its whole table ranked); without it the used names are sorted here.
  void encode(std::string* out, Encoding encoding = Encoding::children_by_name,
              const std::vector<uint32_t>* symbol_map = nullptr,
              const std::vector<uint32_t>* name_rank = nullptr) const;
  // Decodes into *this (which must be empty) with symbol ids checked against symbols().size() and
  // the sibling order checked against the encoding (a repeated or misordered sibling is corrupt).
  Status decode(ByteSpan bytes, Encoding encoding = Encoding::children_by_name);
  // Decodes and adds into *this in one pass (the query's merge); symbol ids are remapped through
  // remap when it is non-null (remap[file id] = id in symbols()).
  Status merge_encoded(ByteSpan bytes, const std::vector<uint32_t>* remap,
                       Encoding encoding = Encoding::children_by_name);
  // True while node ids are a preorder walk that visits every node's children in name order: a tree
  // decoded from the name-ordered encoding, or an empty one. Any change that adds a node ends it.
  bool in_name_preorder() const { return name_preorder_; }
  // Renumbers the nodes into that order (a tree built from folded text, say, before it is drawn);
  // node ids change, values do not. The lookup index is freed first and rebuilt on the next lookup.
  void renumber_in_name_preorder();

  void clear();

  Tree(const Tree& other);
  Tree& operator=(const Tree& other);
  Tree(Tree&& other) noexcept;
  Tree& operator=(Tree&& other) noexcept;

 private:
  struct Node {
    uint32_t symbol;
    uint32_t parent;
    uint64_t self;
    uint64_t total;
  };
  std::shared_ptr<SymbolTable> symbols_;
  std::vector<Node> nodes_;
  // (parent << 32 | symbol) -> node, open addressing; kNoNode marks an empty slot. A decoded tree
  // leaves it unbuilt until the first lookup: drawing a flame graph needs no lookups, and on millions
  // of nodes the index is most of the cost of a decode (random writes into twice the nodes' memory).
  mutable std::vector<std::pair<uint64_t, uint32_t>> index_;
  mutable std::atomic<bool> index_built_{true};
  bool name_preorder_ = true;
  void ensure_index() const;
  uint32_t add_child(uint32_t parent, uint32_t symbol);
  void grow_index();
  void rehash(size_t capacity) const;
  void reserve_nodes(size_t count);
  // name_rank: null for the symbol-id order; else rank by name of every encoded symbol id.
  Status decode_fresh(ByteSpan bytes, uint32_t symbol_limit, const uint32_t* name_rank);
  Status merge_encoded_ranked(ByteSpan bytes, const std::vector<uint32_t>* remap, const uint32_t* name_rank);
  Status add_decoded(const detail::DecodedTree& decoded, const std::vector<uint32_t>* remap);
  friend class DiffTree;
  friend class Dataset;
  friend class Writer;
  friend struct detail::TreeAccess;
};

