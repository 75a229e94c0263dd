// [SECTION] Implementation: diff tree =============================================================

DiffTree DiffTree::compute(const Tree& left, const Tree& right) {
  DiffTree d;
  d.shape_.merge(left);
  d.shape_.merge(right);
  d.left_.assign(d.shape_.node_count(), {0, 0});
  d.right_.assign(d.shape_.node_count(), {0, 0});
  auto place = [&](const Tree& side, std::vector<std::pair<uint64_t, uint64_t>>* values) {
    std::vector<uint32_t> mapped(side.node_count());
    mapped[Tree::kRoot] = Tree::kRoot;
    (*values)[Tree::kRoot] = {side.self(Tree::kRoot), side.total()};
    std::vector<uint32_t> remap(side.symbols().size(), SymbolTable::kNone);
    for (uint32_t i = 1; i < side.node_count(); i++) {
      uint32_t s = side.symbol(i);
      if (remap[s] == SymbolTable::kNone) remap[s] = d.shape_.symbols().find(side.symbols().name(s));
      uint32_t m = d.shape_.child(mapped[side.parent(i)], remap[s]);
      mapped[i] = m;
      (*values)[m] = {side.self(i), side.node_total(i)};
    }
  };
  place(left, &d.left_);
  place(right, &d.right_);
  return d;
}

double DiffTree::change_percent(uint32_t n) const {
  double left_all = double(left_[Tree::kRoot].second), right_all = double(right_[Tree::kRoot].second);
  double l = left_all > 0 ? double(left_[n].second) / left_all : 0;
  double r = right_all > 0 ? double(right_[n].second) / right_all : 0;
  if (l == 0) return r > 0 ? 100.0 : 0.0;
  double change = (r - l) / l * 100.0;
  return change > 100 ? 100 : change < -100 ? -100 : change;
}

