// Symbol table: dense ids both ways, and the trie encoding the file stores it in.
#include "test_core_support.hpp"

using pyroscope::SymbolTable;

namespace {

std::vector<std::string> names_of(const SymbolTable& table) {
  std::vector<std::string> names;
  for (uint32_t id = 0; id < table.size(); ++id) names.emplace_back(table.name(id));
  return names;
}

// Names as a C++ profile has them: long shared prefixes, names that are prefixes of other names.
std::vector<std::string> cpp_like_names(int count) {
  std::vector<std::string> names = {"std::", "std::vector<int, std::allocator<int> >",
                                    "std::vector<int, std::allocator<int> >::push_back(int const&)",
                                    "std::vector<int, std::allocator<int> >::size() const", "s", "st",
                                    "app::net::http::Server", "app::net::http::Server::listen()"};
  for (int i = 0; static_cast<int>(names.size()) < count; ++i) {
    names.push_back("app::net::http::Server::handle_request_" + std::to_string(i) + "(app::net::http::Request const&)");
    names.push_back("std::_Hashtable<std::__cxx11::basic_string<char>, app::Value" + std::to_string(i % 97) +
                    ">::_M_find_before_node(unsigned long, " + std::to_string(i) + ")");
  }
  names.resize(static_cast<size_t>(count));
  return names;
}

}  // namespace

TEST_CASE("symbols: intern, find and name both ways") {
  SymbolTable table;
  CHECK(table.size() == 0);
  CHECK(table.find("main") == SymbolTable::kNone);
  const uint32_t main = table.intern("main");
  const uint32_t work = table.intern("work");
  CHECK(main == 0);
  CHECK(work == 1);
  CHECK(table.intern("main") == main);  // existing names keep their id
  CHECK(table.size() == 2);
  CHECK(table.find("work") == work);
  CHECK(table.find("wor") == SymbolTable::kNone);
  CHECK(table.find("workk") == SymbolTable::kNone);
  CHECK(table.name(main) == "main");
  CHECK(table.name(work) == "work");

  // Names with spaces, semicolons' neighbours, bytes beyond ASCII.
  const uint32_t spaced = table.intern("operator new(unsigned long)");
  const uint32_t unicode = table.intern("Δ::λ");
  CHECK(table.name(spaced) == "operator new(unsigned long)");
  CHECK(table.name(unicode) == "Δ::λ");
}

TEST_CASE("symbols: many names keep their ids and their bytes") {
  SymbolTable table;
  const std::vector<std::string> names = cpp_like_names(50000);
  const std::string_view first_view = [&] {
    table.intern(names[0]);
    return table.name(0);
  }();
  for (const std::string& name : names) table.intern(name);
  REQUIRE(table.size() == names.size());
  for (uint32_t id = 0; id < table.size(); ++id) {
    if (table.name(id) != names[id] || table.find(names[id]) != id) {
      FAIL_CHECK("id " << id << " is '" << table.name(id) << "', expected '" << names[id] << "'");
      break;
    }
  }
  // The views handed out earlier stay valid while the table grows.
  CHECK(first_view == names[0]);
}

TEST_CASE("symbols: trie round trip, shared prefixes included") {
  SymbolTable table;
  for (const std::string& name : cpp_like_names(3000)) table.intern(name);
  std::string trie;
  table.encode_trie(0, &trie);

  SymbolTable decoded;
  const pyroscope::Status status = decoded.decode_trie(core_test::span_of(trie));
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  CHECK(names_of(decoded) == names_of(table));
  for (uint32_t id = 0; id < table.size(); id += 97) CHECK(decoded.find(table.name(id)) == id);
}

TEST_CASE("symbols: small tables and tricky names round trip") {
  const std::vector<std::vector<std::string>> tables = {
      {},
      {"a"},
      {"ab", "a"},                       // a name that is a prefix of an earlier one
      {"a", "ab", "abc", "abd", "b"},    // chains and a split
      {"x y", "x", "x y z", "x\ty"},     // spaces and tabs
      {"Δ", "Δλ", "Δμ"},                 // shared multi-byte prefix
      {std::string(300, 'p') + "1", std::string(300, 'p') + "2", std::string(300, 'p')},
  };
  for (const auto& names : tables) {
    SymbolTable table;
    for (const std::string& name : names) table.intern(name);
    std::string trie;
    table.encode_trie(0, &trie);
    SymbolTable decoded;
    REQUIRE(decoded.decode_trie(core_test::span_of(trie)).ok());
    CHECK(names_of(decoded) == names);
  }
}

TEST_CASE("symbols: incremental chunks (first_id > 0) decode in order") {
  const std::vector<std::string> names = cpp_like_names(600);
  SymbolTable table;
  std::vector<std::string> chunks;
  uint32_t written = 0;
  for (size_t end : {size_t(100), size_t(101), size_t(350), size_t(350), size_t(600)}) {
    while (table.size() < end) table.intern(names[table.size()]);
    chunks.emplace_back();
    table.encode_trie(written, &chunks.back());
    written = table.size();
  }

  SymbolTable decoded;
  for (const std::string& chunk : chunks) {
    const pyroscope::Status status = decoded.decode_trie(core_test::span_of(chunk));
    REQUIRE_MESSAGE(status.ok(), status.to_string());
  }
  CHECK(names_of(decoded) == names);

  // A later chunk alone does not fit an empty table: its ids start at 100, not 0.
  SymbolTable out_of_turn;
  CHECK_FALSE(out_of_turn.decode_trie(core_test::span_of(chunks[2])).ok());
  CHECK(out_of_turn.size() == 0);
}

TEST_CASE("symbols: the trie of names sharing prefixes is smaller than the names") {
  SymbolTable table;
  size_t name_bytes = 0;
  for (const std::string& name : cpp_like_names(5000)) {
    table.intern(name);
    name_bytes += name.size();
  }
  std::string trie;
  table.encode_trie(0, &trie);
  MESSAGE("5000 names: " << name_bytes << " bytes of names, trie " << trie.size() << " bytes");
  CHECK(trie.size() * 2 < name_bytes);
}

TEST_CASE("symbols: damaged tries give an error and leave the table unchanged, or add every name once") {
  // Encoded for ids from 1 on, after one name that is already in the decoding table.
  SymbolTable table;
  table.intern("already here");
  for (const std::string& name : cpp_like_names(200)) table.intern(name);
  const uint32_t encoded = table.size() - 1;
  std::string trie;
  table.encode_trie(1, &trie);
  for (size_t length = 0; length < trie.size(); ++length) {
    SymbolTable decoded;
    decoded.intern("already here");
    CHECK_FALSE(decoded.decode_trie(core_test::span_of(trie.substr(0, length))).ok());  // every cut is short
    CHECK(decoded.size() == 1);
  }
  std::mt19937 rng(23);
  for (int variant = 0; variant < 3000; ++variant) {
    std::string damaged = trie;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) damaged[rng() % damaged.size()] ^= static_cast<char>(1 + rng() % 255);
    SymbolTable decoded;
    decoded.intern("already here");  // a trie for ids from 1 on
    // The contract: an error leaves the table as it was; success adds exactly the encoded count
    // of names, all distinct (each found again under its own id).
    if (decoded.decode_trie(core_test::span_of(damaged)).ok()) {
      CHECK(decoded.size() == 1 + encoded);
    } else {
      CHECK(decoded.size() == 1);
    }
    for (uint32_t id = 0; id < decoded.size(); ++id) CHECK(decoded.find(decoded.name(id)) == id);
  }
}

namespace {
void put_varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
// A trie as docs/format.md writes it: varint first id, varint count, then the nodes in preorder, each
// string label, varint terminal, varint child count.
struct TrieNode {
  std::string label;
  uint64_t terminal;
  uint64_t children;
};
std::string trie_of(uint64_t first_id, uint64_t count, const std::vector<TrieNode>& nodes) {
  std::string out;
  put_varint(&out, first_id);
  put_varint(&out, count);
  for (const TrieNode& n : nodes) {
    put_varint(&out, n.label.size());
    out.append(n.label);
    put_varint(&out, n.terminal);
    put_varint(&out, n.children);
  }
  return out;
}
}  // namespace

TEST_CASE("symbols: a trie that spells one name twice is refused, and the table is unchanged") {
  // "ab" spelled directly and as "a" then "b": before the canonical-form check this decoded, the
  // table grew by one instead of two, and every later id pointed at the wrong name.
  const std::string trie = trie_of(0, 2, {{"", 0, 2}, {"a", 0, 1}, {"b", 1, 0}, {"ab", 2, 0}});
  SymbolTable table;
  const pyroscope::Status status = table.decode_trie(core_test::span_of(trie));
  CHECK(status.code() == pyroscope::StatusCode::corrupt_file);
  CHECK(table.size() == 0);

  // The same names in canonical form decode.
  const std::string canonical = trie_of(0, 2, {{"", 0, 1}, {"a", 0, 2}, {"b", 1, 0}, {"c", 2, 0}});
  REQUIRE(table.decode_trie(core_test::span_of(canonical)).ok());
  CHECK(table.size() == 2);
  CHECK(table.name(0) == "ab");
  CHECK(table.name(1) == "ac");

  // Other non-canonical forms: an empty label below the root, siblings out of byte order.
  const std::string empty_label = trie_of(0, 1, {{"", 0, 1}, {"", 1, 0}});
  SymbolTable other;
  CHECK(other.decode_trie(core_test::span_of(empty_label)).code() == pyroscope::StatusCode::corrupt_file);
  const std::string misordered = trie_of(0, 2, {{"", 0, 2}, {"b", 1, 0}, {"a", 2, 0}});
  CHECK(other.decode_trie(core_test::span_of(misordered)).code() == pyroscope::StatusCode::corrupt_file);
  CHECK(other.size() == 0);
  // A name already in the table is refused too.
  SymbolTable has_ab;
  has_ab.intern("ab");
  const std::string again = trie_of(1, 1, {{"", 0, 1}, {"ab", 1, 0}});
  CHECK(has_ab.decode_trie(core_test::span_of(again)).code() == pyroscope::StatusCode::corrupt_file);
  CHECK(has_ab.size() == 1);
}
