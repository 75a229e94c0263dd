// [SECTION] Implementation: symbol table ==========================================================

size_t SymbolTable::Hash::operator()(std::string_view s) const { return size_t(detail::hash_bytes(s)); }

std::string_view SymbolTable::store(std::string_view name) {
  if (name.size() > chunk_left_) {
    size_t size = std::max<size_t>(name.size(), 64 * 1024);
    storage_.emplace_back(new char[size]);
    chunk_ = storage_.back().get();
    chunk_left_ = size;
  }
  if (!name.empty()) std::memcpy(chunk_, name.data(), name.size());
  std::string_view stored(chunk_, name.size());
  chunk_ += name.size();
  chunk_left_ -= name.size();
  return stored;
}

void SymbolTable::grow() {
  size_t capacity = slots_.empty() ? 64 : slots_.size() * 2;
  std::vector<std::pair<std::string_view, uint32_t>> old;
  old.swap(slots_);
  slots_.assign(capacity, {std::string_view(), kNone});
  for (const auto& slot : old) {
    if (slot.second == kNone) continue;
    size_t i = Hash()(slot.first) & (capacity - 1);
    while (slots_[i].second != kNone) i = (i + 1) & (capacity - 1);
    slots_[i] = slot;
  }
}

uint32_t SymbolTable::find(std::string_view name) const {
  if (slots_.empty()) return kNone;
  size_t mask = slots_.size() - 1;
  for (size_t i = Hash()(name) & mask;; i = (i + 1) & mask) {
    if (slots_[i].second == kNone) return kNone;
    if (slots_[i].first == name) return slots_[i].second;
  }
}

uint32_t SymbolTable::intern(std::string_view name) {
  if ((used_ + 1) * 4 > slots_.size() * 3) grow();
  size_t mask = slots_.size() - 1;
  size_t i = Hash()(name) & mask;
  for (; slots_[i].second != kNone; i = (i + 1) & mask)
    if (slots_[i].first == name) return slots_[i].second;
  std::string_view stored = store(name);
  uint32_t id = uint32_t(names_.size());
  names_.push_back(stored);
  slots_[i] = {stored, id};
  used_++;
  return id;
}

std::string_view SymbolTable::name(uint32_t id) const {
  PYROSCOPE_ASSERT(id < names_.size());
  return names_[id];
}

// Trie encoding: varint first_id, varint count, then the nodes of a radix trie in preorder, each as
// varint label length, label bytes, varint (id - first_id + 1, or 0 when no name ends here),
// varint child count. Children are in byte order, so the traversal is deterministic.
void SymbolTable::encode_trie(uint32_t first_id, std::string* out) const {
  std::vector<uint32_t> order;
  for (uint32_t id = first_id; id < size(); id++) order.push_back(id);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return names_[a] < names_[b]; });
  detail::put_varint(out, first_id);
  detail::put_varint(out, order.size());
  struct Range {
    size_t lo, hi, depth;
  };
  std::vector<Range> stack;
  stack.push_back({0, order.size(), 0});
  bool root = true;
  while (!stack.empty()) {
    Range r = stack.back();
    stack.pop_back();
    size_t common = r.depth;
    if (root) {
      common = 0;
      root = false;
    } else if (r.hi > r.lo) {
      std::string_view a = names_[order[r.lo]], b = names_[order[r.hi - 1]];
      common = r.depth;
      while (common < a.size() && common < b.size() && a[common] == b[common]) common++;
    }
    std::string_view first = r.hi > r.lo ? names_[order[r.lo]] : std::string_view();
    detail::put_varint(out, common - r.depth);
    out->append(first.data() + r.depth, common - r.depth);
    size_t lo = r.lo;
    if (lo < r.hi && names_[order[lo]].size() == common) {
      detail::put_varint(out, uint64_t(order[lo]) - first_id + 1);
      lo++;
    } else {
      detail::put_varint(out, 0);
    }
    std::vector<Range> children;
    for (size_t i = lo; i < r.hi;) {
      char c = names_[order[i]][common];
      size_t j = i + 1;
      while (j < r.hi && names_[order[j]][common] == c) j++;
      children.push_back({i, j, common});
      i = j;
    }
    detail::put_varint(out, children.size());
    for (size_t k = children.size(); k-- > 0;) stack.push_back(children[k]);
  }
}

Status SymbolTable::decode_trie(ByteSpan bytes) {
  detail::ByteReader in(bytes.data, bytes.size);
  uint64_t first_id = in.varint();
  uint64_t count = in.varint();
  if (in.failed) return detail::error(StatusCode::corrupt_file, "symbol trie: truncated header");
  if (first_id != size())
    return detail::error(StatusCode::corrupt_file, "symbol trie: starts at id " + std::to_string(first_id) +
                                                       ", expected " + std::to_string(size()));
  if (count > bytes.size || count > (uint64_t(kNone) - first_id))
    return detail::error(StatusCode::corrupt_file, "symbol trie: impossible name count " + std::to_string(count));
  std::vector<std::string> decoded(count);
  std::vector<bool> seen(count, false);
  std::string current;
  struct Level {
    size_t prefix;
    uint64_t remaining;
    int last_first_byte;  // of the previous child's label; -1 before the first child
  };
  std::vector<Level> stack;
  uint64_t nodes = 0;
  // The encoder writes canonical tries only: every label but the root's is non-empty and siblings'
  // labels start with strictly increasing bytes. Holding a trie to that makes every path spell a
  // different name, so a crafted trie cannot give one name two ids (which would shift every later id).
  auto read_node = [&](Level* parent) -> bool {
    uint64_t label_len = in.varint();
    std::string_view label = in.bytes(label_len);
    uint64_t terminal = in.varint();
    uint64_t children = in.varint();
    if (in.failed || terminal > count || children > in.remaining() + 1) return false;
    if (++nodes > 2 * count + 1) return false;
    if (parent) {
      if (label.empty()) return false;
      int first_byte = uint8_t(label[0]);
      if (first_byte <= parent->last_first_byte) return false;
      parent->last_first_byte = first_byte;
    }
    current.append(label);
    if (terminal) {
      if (seen[terminal - 1]) return false;
      seen[terminal - 1] = true;
      decoded[terminal - 1] = current;
    }
    stack.push_back({current.size(), children, -1});
    return true;
  };
  if (!read_node(nullptr)) return detail::error(StatusCode::corrupt_file, "symbol trie: bad root node");
  while (!stack.empty()) {
    if (stack.back().remaining == 0) {
      stack.pop_back();
      continue;
    }
    stack.back().remaining--;
    current.resize(stack.back().prefix);
    // read_node may grow the stack: pass the parent by index, not by a pointer that could move.
    Level parent = stack.back();
    size_t parent_index = stack.size() - 1;
    bool ok = read_node(&parent);
    stack[parent_index].last_first_byte = parent.last_first_byte;
    if (!ok) return detail::error(StatusCode::corrupt_file, "symbol trie: bad node");
  }
  if (!in.done()) return detail::error(StatusCode::corrupt_file, "symbol trie: trailing bytes");
  for (uint64_t i = 0; i < count; i++) {
    if (!seen[i]) return detail::error(StatusCode::corrupt_file, "symbol trie: id " + std::to_string(first_id + i) + " missing");
    if (find(decoded[i]) != kNone)
      return detail::error(StatusCode::corrupt_file, "symbol trie: name of id " + std::to_string(first_id + i) +
                                                         " is already id " + std::to_string(find(decoded[i])));
  }
  for (uint64_t i = 0; i < count; i++) {
    uint32_t id = intern(decoded[i]);
    PYROSCOPE_ASSERT(id == first_id + i);  // the canonical form rules out a repeated name
    (void)id;
  }
  return {};
}

void SymbolTable::rank_by_name(std::vector<uint32_t>* rank) const {
  std::vector<uint32_t> ids(names_.size());
  for (uint32_t i = 0; i < ids.size(); i++) ids[i] = i;
  std::sort(ids.begin(), ids.end(), [&](uint32_t a, uint32_t b) { return names_[a] < names_[b]; });
  rank->assign(ids.size(), 0);
  for (uint32_t r = 0; r < ids.size(); r++) (*rank)[ids[r]] = r;
}

}  // namespace pyroscope

namespace pyroscope {

