// [SECTION] Diff tree =============================================================================

// The union of two trees' shapes with both sides' values per node, for the diff flame graph.
class DiffTree {
 public:
  static DiffTree compute(const Tree& left, const Tree& right);

  const Tree& shape() const { return shape_; }  // node ids, names and parents (values: left+right)
  uint32_t node_count() const { return shape_.node_count(); }
  uint64_t left_self(uint32_t n) const { return left_[n].first; }
  uint64_t left_total(uint32_t n) const { return left_[n].second; }
  uint64_t right_self(uint32_t n) const { return right_[n].first; }
  uint64_t right_total(uint32_t n) const { return right_[n].second; }
  // Change in share of the whole, as Pyroscope colours it: (right% - left%) / left% * 100, clamped to
  // [-100, 100]; +100 for a node only on the right.
  double change_percent(uint32_t n) const;

 private:
  Tree shape_;
  std::vector<std::pair<uint64_t, uint64_t>> left_, right_;  // (self, total)
};

