// libFuzzer target: folded text. Tree::from_folded must accept or reject without crashing; what it
// accepts must survive to_folded -> from_folded and encode -> decode unchanged.
#include "pyroscope.hpp"

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  pyroscope::Tree tree;
  if (!pyroscope::Tree::from_folded(text, &tree).ok()) return 0;
  const std::string folded = tree.to_folded();

  pyroscope::Tree again;
  if (!pyroscope::Tree::from_folded(folded, &again).ok()) std::abort();  // our own output must parse
  if (again.total() != tree.total() || again.to_folded() != folded) std::abort();

  std::string encoded;
  tree.encode(&encoded);
  pyroscope::Tree decoded(tree.shared_symbols());
  if (!decoded.decode({reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size()}).ok()) std::abort();
  if (decoded.to_folded() != folded) std::abort();

  pyroscope::Tree merged(tree.shared_symbols());
  merged.merge(tree);
  merged.merge(again);  // different symbol table: remapped by name
  if (merged.total() != 2 * tree.total()) std::abort();
  (void)tree.pruned(0.01);
  return 0;
}
