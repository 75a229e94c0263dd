// [SECTION] Symbol table (a trie on disk) =========================================================

// Function names ↔ dense ids. In memory a hash table; on disk a radix trie, so names that share a
// prefix (`std::vector<...>::`, `app::net::`) store it once.
// Thread safety: one thread at a time.
class SymbolTable {
 public:
  static constexpr uint32_t kNone = 0xffffffffu;

  uint32_t intern(std::string_view name);          // id of name, adding it if new
  uint32_t find(std::string_view name) const;      // kNone if absent
  std::string_view name(uint32_t id) const;        // id must be < size()
  uint32_t size() const { return static_cast<uint32_t>(names_.size()); }

  // Appends the trie encoding of the names with ids [first_id, size()) to out.
  void encode_trie(uint32_t first_id, std::string* out) const;
  // Decodes a trie written by encode_trie and interns its names; the ids in the encoding must equal
  // the ids they receive here (size() before the call == first id in the encoding). On success the
  // table has grown by exactly the encoded count, every new name distinct from all others; on error
  // (corrupt_file) it is unchanged.
  Status decode_trie(ByteSpan bytes);
  // rank[id] = position of name(id) among all names in byte order (std::string_view's <).
  void rank_by_name(std::vector<uint32_t>* rank) const;

 private:
  struct Hash {
    size_t operator()(std::string_view s) const;
  };
  std::vector<std::unique_ptr<char[]>> storage_;  // stable bytes behind the string_views
  std::vector<std::string_view> names_;
  std::vector<std::pair<std::string_view, uint32_t>> slots_;  // open addressing, power of two
  size_t used_ = 0;
  char* chunk_ = nullptr;
  size_t chunk_left_ = 0;
  std::string_view store(std::string_view name);
  void grow();
};

