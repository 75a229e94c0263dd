// libFuzzer target: the symbol trie. Input: 1 byte k (mod 8) = names interned before decoding (the
// trie continues a table, as in a file written in several sessions), then the trie bytes.
#include "pyroscope.hpp"

#include <cstdlib>
#include <string>

namespace {
void prefill(pyroscope::SymbolTable* table, uint32_t k) {
  for (uint32_t i = 0; i < k; ++i) table->intern("pre::name" + std::to_string(i));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint32_t k = data[0] % 8;
  pyroscope::SymbolTable table;
  prefill(&table, k);
  if (!table.decode_trie({data + 1, size - 1}).ok()) return 0;
  // Every id names a distinct name that finds its id again.
  for (uint32_t id = 0; id < table.size(); ++id)
    if (table.find(table.name(id)) != id) std::abort();

  std::string encoded;
  table.encode_trie(k, &encoded);
  pyroscope::SymbolTable again;
  prefill(&again, k);
  if (!again.decode_trie({reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size()}).ok()) std::abort();
  if (again.size() != table.size()) std::abort();
  for (uint32_t id = 0; id < table.size(); ++id)
    if (again.name(id) != table.name(id)) std::abort();
  return 0;
}
