// libFuzzer target: folded text. Tree::from_folded and FoldedImporter (lenient and strict, whole or in
// pieces) must accept or reject without crashing and agree with each other; what from_folded accepts
// must survive to_folded -> from_folded and encode -> decode unchanged.
#include "pyroscope.hpp"

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // The streaming importer: text cut into two pieces at a point the input chooses reads as it does whole.
  pyroscope::FoldedImporter whole, pieces, strict(true);
  whole.add(text.data(), text.size());
  const bool whole_ok = whole.finish().ok();
  const size_t cut = size ? data[0] % (size + 1) : 0;
  pieces.add(text.data(), cut);
  pieces.add(text.data() + cut, size - cut);
  const bool pieces_ok = pieces.finish().ok();
  if (whole_ok != pieces_ok || whole.tree().to_folded() != pieces.tree().to_folded() ||
      whole.report().summary() != pieces.report().summary())
    std::abort();
  strict.add(text.data(), text.size());
  const bool strict_ok = strict.finish().ok();

  pyroscope::Tree tree;
  const bool tree_ok = pyroscope::Tree::from_folded(text, &tree).ok();
  // Tree::add_folded and the strict importer read lines alike; strict success means lenient success.
  if (strict_ok != tree_ok || (strict_ok && (!whole_ok || strict.tree().to_folded() != tree.to_folded() ||
                                             whole.tree().to_folded() != tree.to_folded())))
    std::abort();
  if (!tree_ok) return 0;
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
