// [SECTION] Tree analysis: sandwich, recursion, short names, name search ==========================
//
// Views of one tree that the viewer and the command line both want. They are computed from the exact
// tree (no "other" node), so their numbers add up to Tree::function_totals' to the sample.
// Thread safety: every function here only reads its input tree (const), and may run beside other readers.

// One function's callers and callees, merged over every place it occurs: the sandwich view of
// Pyroscope and speedscope. Only the function's outermost calls count (those with no call of the same
// function above them), the rule of Tree::function_totals, so a recursive function's samples are
// counted once and both trees total exactly the function's total.
struct Sandwich {
  uint32_t symbol = 0xffffffffu;  // the function, in the tree's symbol table
  uint64_t self = 0;   // samples in which the function is the leaf (function_totals' self)
  uint64_t total = 0;  // samples with the function anywhere on the stack, counted once (function_totals' total)
  // root -> the function -> its callers -> their callers ...: an inverted tree. A caller's self is the
  // samples whose stack begins at it; the function's self is the samples in which it has no caller.
  Tree callers;
  // root -> the function -> what it calls -> ...: the subtrees under its outermost calls, merged. A
  // recursive call stays where it is inside them; the function's node holds its outermost calls' self.
  Tree callees;
  // Nodes whose total was below this were left out with their subtrees (min_fraction); 0: none.
  uint64_t min_total = 0;
};
// Both trees share tree's symbol table. not_found when no node of the tree calls the function.
// min_fraction > 0 leaves out the nodes (and their subtrees) whose total is below that fraction of the
// function's total: a flame graph cannot draw them (at 2^-16, a node of 1,400 px would be 0.02 px), and
// on millions of nodes they are most of the work. Every node kept still has its exact self and total
// (they are not estimates from a truncated tree); its children may add up to less than it holds.
Status sandwich(const Tree& tree, uint32_t symbol, Sandwich* out, double min_fraction = 0);
Status sandwich(const Tree& tree, std::string_view function, Sandwich* out, double min_fraction = 0);

// How collapse_recursion treats a function that calls itself.
enum class RecursionCollapse : uint8_t {
  direct,  // f;f;f;g -> f;g: a frame whose caller is the same function merges into that caller
  all,     // f;g;f;h -> f;g;h: a frame whose function is already on the stack is left out (speedscope's rule)
};
// A copy of tree with recursion collapsed (sharing its symbol table). Every function keeps its total:
// each stack still holds the same functions. With `all`, a sample whose leaf frame was left out counts
// as self of the frame its stack now ends in. A tree without such recursion comes back as a plain copy.
Tree collapse_recursion(const Tree& tree, RecursionCollapse mode);

// A C++ function name for reading: "std::vector<int, std::allocator<int> >::push_back(int const&)"
// -> "std::vector<…>::push_back". Leaves out the return type, parameter lists, const/volatile/&/&&/
// noexcept qualifiers and [abi:...] / [clone ...] tags; collapses template arguments to <…> (U+2026);
// shows std::__cxx11:: as std::. Operators (operator(), operator< <…>, operator new[]), lambdas
// (main::{lambda#1}::operator()), (anonymous namespace) and parameters that are function pointers
// are handled. Names that are not C++ (Go, Python, plain C) come back unchanged or nearly so.
std::string short_function_name(std::string_view name);
// A copy of tree with every function under its short name, in a symbol table of its own; frames under
// one parent whose short names are equal merge into one node (foo(int) and foo(double) become one foo).
// merged_from, if given, gets for each symbol of the copy the symbols of tree it stands for.
Tree with_short_names(const Tree& tree, std::vector<std::vector<uint32_t>>* merged_from = nullptr);

namespace detail {
class Regex;
}  // namespace detail

// Which function names a search selects (the viewer's search box and its search= setting). The text is
// terms separated by spaces ("..." quotes a term with spaces). Each term is a regular expression in
// Selector's syntax, found anywhere in the name (^ and $ anchor it at the name's start and end),
// ignoring ASCII case; a term that is not a valid expression (operator[]) is taken as plain text
// (push_back(int) is a valid one, and means what it means as an expression). A term starting with '-' excludes. A name matches when it matches a term without '-' (or there
// is none) and no term with '-'.
class NameSearch {
 public:
  struct Term {
    std::string text;      // as typed, without its '-' and quotes
    bool exclude = false;  // '-term'
    bool regex = false;    // compiled as a regular expression (else matched as plain text)
  };
  NameSearch() = default;
  explicit NameSearch(std::string_view text);
  bool empty() const { return terms_.empty(); }
  const std::vector<Term>& terms() const { return terms_; }
  bool matches(std::string_view name) const;
  // matched[s] = 1 for each symbol of the table whose name matches, else 0.
  void match_symbols(const SymbolTable& symbols, std::vector<uint8_t>* matched) const;
  // A term that finds `text` as it is (quoted, every special character escaped): a click on a name.
  static std::string literal(std::string_view text);

 private:
  std::vector<Term> terms_;
  std::vector<std::shared_ptr<const detail::Regex>> compiled_;  // per term; null for plain text
  std::vector<std::string> lowered_;                              // per term, for plain text
};

