// Packing (LZ77 + range coder) of the symbol table: round trips, damaged streams that never crash or
// read past their input, and files whose packed SYMBOLS records read back the same names.
// pyroscope-test: group=internals
#define PYROSCOPE_IMPLEMENTATION
#include "test_core_support.hpp"

namespace {

std::string unpacked_or_error(const std::string& packed, size_t size, Status* status) {
  std::string out;
  *status = pyroscope::detail::unpack(core_test::span_of(packed), size, &out);
  return out;
}

std::string pack_string(const std::string& raw) {
  return pyroscope::detail::pack(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
}

// What a C++ profile's dictionary holds: template instantiations repeating their arguments.
std::string template_names(int count) {
  static const char* const kParts[] = {"llvm::PatternMatch::", "BinaryOp_match<", "bind_ty<llvm::Value>",
                                       "specific_intval<true>", ", ", "27u, false>", "std::vector<int, std::allocator<int> >",
                                       "::match(", "llvm::Value const*", ") const", "cstval_pred_ty<", "is_one"};
  std::mt19937 rng(3);
  std::string text;
  for (int i = 0; i < count; ++i) {
    const int parts = 3 + static_cast<int>(rng() % 12);
    for (int p = 0; p < parts; ++p) text += kParts[rng() % 12];
    text += '\n';
  }
  return text;
}

}  // namespace

TEST_CASE("pack: round trips text, binary, runs and the empty input") {
  std::mt19937 rng(11);
  std::vector<std::string> inputs = {"", "a", "ab", std::string(100000, 'x'), template_names(2000)};
  std::string random_bytes(50000, '\0');
  for (char& c : random_bytes) c = static_cast<char>(rng());
  inputs.push_back(random_bytes);
  std::string mixed;
  for (int i = 0; i < 3000; ++i) mixed += std::to_string(rng() % 1000) + (i % 7 ? ";" : "\n");
  inputs.push_back(mixed);
  for (const std::string& raw : inputs) {
    CAPTURE(raw.size());
    const std::string packed = pack_string(raw);
    Status status;
    CHECK(unpacked_or_error(packed, raw.size(), &status) == raw);
    CHECK(status.ok());
    CHECK(pack_string(raw) == packed);  // deterministic
  }
  // Template-heavy names pack to a fraction, random bytes stay about their size.
  const std::string names = template_names(2000);
  CHECK(pack_string(names).size() * 6 < names.size());
  CHECK(pack_string(random_bytes).size() < random_bytes.size() + random_bytes.size() / 50);
}

TEST_CASE("pack: damaged streams give an error or bytes of the stated size, never a crash") {
  const std::string raw = template_names(300);
  const std::string packed = pack_string(raw);
  Status status;
  for (size_t cut = 0; cut < packed.size(); cut += 1 + cut / 50) {
    const std::string out = unpacked_or_error(packed.substr(0, cut), raw.size(), &status);
    CHECK_FALSE(status.ok());  // a cut stream cannot give all the bytes
  }
  std::mt19937 rng(5);
  int failed = 0;
  for (int variant = 0; variant < 2000; ++variant) {
    std::string damaged = packed;
    damaged[rng() % damaged.size()] ^= static_cast<char>(1 + rng() % 255);
    const std::string out = unpacked_or_error(damaged, raw.size(), &status);
    if (status.ok()) CHECK(out.size() == raw.size());
    else ++failed;
  }
  CHECK(failed > 0);
  // A stated size the stream cannot fill, and arbitrary bytes.
  (void)unpacked_or_error(packed, raw.size() + 1000, &status);
  CHECK(status.code() == pyroscope::StatusCode::corrupt_file);
  for (int variant = 0; variant < 500; ++variant) {
    std::string junk(rng() % 200, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    (void)unpacked_or_error(junk, rng() % 5000, &status);
  }
}

TEST_CASE("pack: a file's long names are stored packed and read back the same; a damaged packed record is an error") {
  pyroscope::Writer writer;
  REQUIRE(writer.open_memory().ok());
  pyroscope::Tree tree;
  const std::string names = template_names(400);
  size_t start = 0;
  std::vector<std::string> frames;
  for (size_t nl = names.find('\n'); nl != std::string::npos; start = nl + 1, nl = names.find('\n', start))
    frames.push_back(names.substr(start, nl - start) + "#" + std::to_string(frames.size()));
  for (size_t i = 0; i + 3 < frames.size(); i += 3)
    tree.insert({frames[i], frames[i + 1], frames[i + 2]}, static_cast<uint64_t>(1 + i));
  REQUIRE(writer.append(SeriesKey("app", {}), kStart, tree).ok());
  const std::string file = writer.take_bytes();
  size_t raw_names = 0;
  for (const std::string& f : frames) raw_names += f.size();
  CHECK(file.size() * 3 < raw_names);  // packed: far below the names' own size
  // The one SYMBOLS record is the packed kind (type 4).
  uint32_t type = 0;
  std::memcpy(&type, file.data() + 64 + 4, 4);
  CHECK(type == 4);
  pyroscope::Dataset data;
  REQUIRE(data.add_bytes(file).ok());
  pyroscope::QueryResult result;
  REQUIRE(data.query("app{}", kStart, kStart + 10, &result).ok());
  CHECK(core_test::stacks_of(result.tree) == core_test::stacks_of(tree));

  // A flipped byte in the packed payload, checksum made right again: corrupt, not wrong names.
  uint32_t size = 0;
  std::memcpy(&size, file.data() + 64, 4);
  std::mt19937 rng(8);
  int refused = 0;
  for (int variant = 0; variant < 200; ++variant) {
    std::string damaged = file;
    const size_t at = 64 + 12 + 4 + rng() % (size - 4);  // past the raw-size varint
    damaged[at] ^= static_cast<char>(1 + rng() % 255);
    uint32_t crc = pyroscope::detail::crc32(damaged.data() + 64 + 4, 4);
    crc = pyroscope::detail::crc32(damaged.data() + 64 + 12, size, crc);
    std::memcpy(&damaged[64 + 8], &crc, 4);
    pyroscope::File opened;
    const Status status = opened.open_bytes(damaged);
    if (!status.ok()) {
      ++refused;
      CHECK(status.code() == pyroscope::StatusCode::corrupt_file);
    }
  }
  CHECK(refused > 150);  // most flips break the stream or the trie; the rest decode other valid names
}
