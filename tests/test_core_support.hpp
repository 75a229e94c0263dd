// Helpers shared by the tests of the header core (tests/test_core_*.cpp). Expected results are
// computed here independently of the code under test: a tree is compared as the multiset of its
// stacks, read node by node through the plain accessors (parent, name, self).
#pragma once

#include "pyroscope.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace core_test {

// The block times the core tests write at: a multiple of the 10 s resolution, in 2023.
constexpr int64_t kStart = 1700000000;
constexpr int64_t kStep = pyroscope::kDefaultResolutionSeconds;

// stack "a;b;c" -> self samples, for every node with self samples.
using StackCounts = std::map<std::string, uint64_t>;

inline StackCounts stacks_of(const pyroscope::Tree& tree) {
  StackCounts counts;
  for (uint32_t node = 1; node < tree.node_count(); ++node) {
    if (tree.self(node) == 0) continue;
    std::vector<std::string> frames;
    for (uint32_t n = node; n != pyroscope::Tree::kRoot; n = tree.parent(n)) frames.emplace_back(tree.name(n));
    std::string stack;
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
      if (!stack.empty()) stack += ';';
      stack += *it;
    }
    counts[stack] += tree.self(node);
  }
  return counts;
}

inline void add_counts(StackCounts* into, const StackCounts& from) {
  for (const auto& [stack, count] : from) (*into)[stack] += count;
}

inline uint64_t sum_of(const StackCounts& counts) {
  uint64_t sum = 0;
  for (const auto& entry : counts) sum += entry.second;
  return sum;
}

// "a;b 3\n..." in sorted order, the form to_folded() must produce for these counts.
inline std::string folded_of(const StackCounts& counts) {
  std::string text;
  for (const auto& [stack, count] : counts) text += stack + " " + std::to_string(count) + "\n";
  return text;
}

inline std::vector<std::string> sorted_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  return lines;
}

inline std::vector<std::string_view> split_frames(std::string_view stack) {
  std::vector<std::string_view> frames;
  size_t start = 0;
  for (size_t i = 0; i <= stack.size(); ++i) {
    if (i == stack.size() || stack[i] == ';') {
      frames.push_back(stack.substr(start, i - start));
      start = i + 1;
    }
  }
  return frames;
}

inline void insert_stack(pyroscope::Tree* tree, std::string_view stack, uint64_t count) {
  tree->insert(split_frames(stack), count);
}

inline pyroscope::Tree tree_of(const StackCounts& counts) {
  pyroscope::Tree tree;
  for (const auto& [stack, count] : counts) insert_stack(&tree, stack, count);
  return tree;
}

// Random stacks over a small vocabulary (so stacks share prefixes, as real profiles do), names with
// spaces and template brackets included. Uses raw mt19937 output only: the same on every platform.
inline StackCounts random_stacks(std::mt19937& rng, int stacks, int max_depth) {
  static const char* const kNames[] = {
      "main", "run", "std::vector<int, std::allocator<int> >::push_back(int const&)", "parse", "a",
      "b", "handler::on_request", "operator new(unsigned long)", "memcpy", "[kernel.kallsyms]",
      "sort<long>", "x y z", "zz", "Δ_unicode", "spin"};
  const uint32_t vocabulary = sizeof kNames / sizeof kNames[0];
  StackCounts counts;
  for (int i = 0; i < stacks; ++i) {
    const int depth = 1 + static_cast<int>(rng() % static_cast<uint32_t>(max_depth));
    std::string stack;
    for (int d = 0; d < depth; ++d) {
      if (d) stack += ';';
      stack += kNames[rng() % vocabulary];
    }
    counts[stack] += 1 + rng() % 1000;
  }
  return counts;
}

// Every node's total is its self plus its children's totals.
inline bool totals_consistent(const pyroscope::Tree& tree) {
  std::vector<uint64_t> children_sum(tree.node_count(), 0);
  for (uint32_t node = 1; node < tree.node_count(); ++node) children_sum[tree.parent(node)] += tree.node_total(node);
  for (uint32_t node = 0; node < tree.node_count(); ++node)
    if (tree.node_total(node) != tree.self(node) + children_sum[node]) return false;
  return true;
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at the end of the scope.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/pyroscope-test-XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    REQUIRE(mkdtemp(buffer.data()) != nullptr);
    path_ = buffer.data();
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline pyroscope::ByteSpan span_of(const std::string& bytes) {
  return pyroscope::ByteSpan{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

}  // namespace core_test

// The names every core test uses.
using core_test::kStart;
using core_test::kStep;
using core_test::StackCounts;
using pyroscope::SeriesKey;
using pyroscope::Status;
