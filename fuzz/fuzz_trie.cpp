// libFuzzer target: the symbol trie. Input: 1 byte k (mod 8) = names interned before decoding (the
// trie continues a table, as in a file written in several sessions), then the trie bytes.
#include "pyroscope.hpp"

#include <cstdlib>
#include <string>

namespace {
void prefill(pyroscope::SymbolTable* table, uint32_t k) {
  for (uint32_t i = 0; i < k; ++i) table->intern("pre::name" + std::to_string(i));
}

// The second varint of the trie: the number of names it claims to add (0 if unreadable).
uint64_t claimed_count(const uint8_t* p, size_t n) {
  uint64_t values[2] = {0, 0};
  size_t pos = 0;
  for (uint64_t& v : values) {
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= n) return 0;
      const uint8_t b = p[pos++];
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
  }
  return values[1];
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint32_t k = data[0] % 8;
  pyroscope::SymbolTable table;
  prefill(&table, k);
  // The contract: an error leaves the table unchanged; success adds exactly the claimed count of
  // names, every one distinct (found again under its own id).
  if (!table.decode_trie({data + 1, size - 1}).ok()) {
    if (table.size() != k) std::abort();
    return 0;
  }
  if (table.size() != k + claimed_count(data + 1, size - 1)) std::abort();
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
