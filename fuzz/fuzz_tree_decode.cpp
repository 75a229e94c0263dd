// libFuzzer target: the binary tree encoding. Input: 2 bytes, little-endian: bits 0-9 the size of the
// symbol table the tree refers to, bit 15 the sibling order (clear: by name, set: by symbol id), then
// the encoded tree. decode and merge_encoded must reject bad input with a status; what decode accepts
// must re-encode canonically and merge the same way, and a tree decoded from the name order must be
// numbered in that order's preorder.
#include "pyroscope.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint32_t header = data[0] | (static_cast<uint32_t>(data[1]) << 8);
  const uint32_t symbol_count = header % 1024;
  const auto encoding = header & 0x8000 ? pyroscope::Tree::Encoding::children_by_symbol_id
                                        : pyroscope::Tree::Encoding::children_by_name;
  const pyroscope::ByteSpan bytes{data + 2, size - 2};
  auto symbols = std::make_shared<pyroscope::SymbolTable>();
  auto reversed = std::make_shared<pyroscope::SymbolTable>();
  for (uint32_t i = 0; i < symbol_count; ++i) symbols->intern("f" + std::to_string(i));
  std::vector<uint32_t> remap(symbol_count);
  for (uint32_t i = symbol_count; i-- > 0;) remap[i] = reversed->intern("f" + std::to_string(i));

  pyroscope::Tree tree(symbols);
  const bool decoded = tree.decode(bytes, encoding).ok();
  pyroscope::Tree merged(symbols);
  const bool merged_ok = merged.merge_encoded(bytes, nullptr, encoding).ok();
  pyroscope::Tree remapped(reversed);
  const bool remapped_ok = remapped.merge_encoded(bytes, &remap, encoding).ok();
  if (!decoded) return 0;

  if (encoding == pyroscope::Tree::Encoding::children_by_name) {
    if (!tree.in_name_preorder()) std::abort();
    std::vector<uint32_t> offsets, children;
    tree.sorted_children(&offsets, &children);
    std::vector<uint32_t> stack(children.begin() + offsets[0], children.begin() + offsets[1]);  // the root's
    std::reverse(stack.begin(), stack.end());
    uint32_t expected = 1;
    while (!stack.empty()) {
      const uint32_t node = stack.back();
      stack.pop_back();
      if (node != expected++) std::abort();
      for (uint32_t k = offsets[node + 1]; k-- > offsets[node];) stack.push_back(children[k]);
    }
    if (expected != tree.node_count()) std::abort();
  }

  if (!merged_ok || !remapped_ok) std::abort();  // merge_encoded accepts what decode accepts
  const std::string folded = tree.to_folded();
  if (merged.total() != tree.total() || merged.to_folded() != folded) std::abort();
  if (remapped.total() != tree.total() || remapped.to_folded() != folded) std::abort();

  std::string once, twice;
  tree.encode(&once, encoding);
  pyroscope::Tree again(symbols);
  if (!again.decode({reinterpret_cast<const uint8_t*>(once.data()), once.size()}, encoding).ok()) std::abort();
  again.encode(&twice, encoding);
  if (once != twice || again.to_folded() != folded) std::abort();
  // Merging an encoding into a tree that has data adds exactly its samples, or is refused when the
  // sum would not fit 64 bits.
  uint64_t doubled = 0;
  const bool fits = !__builtin_add_overflow(tree.total(), tree.total(), &doubled);
  const bool again_ok =
      merged.merge_encoded({reinterpret_cast<const uint8_t*>(once.data()), once.size()}, nullptr, encoding).ok();
  if (again_ok != fits) std::abort();
  if (fits && merged.total() != doubled) std::abort();
  return 0;
}
