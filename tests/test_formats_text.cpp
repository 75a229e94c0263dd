// Text formats: folded (lenient by default, exact, streaming) and `perf script`, and format detection.
// Links the build's implementation (pyroscope_impl), which has PYROSCOPE_WITH_ZLIB and
// PYROSCOPE_WITH_JSON wherever zlib and nlohmann-json are installed (scripts/install-deps.sh).
#include "pyroscope.hpp"

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

using pyroscope::ByteSpan;
using pyroscope::FoldedImporter;
using pyroscope::ImportOptions;
using pyroscope::ImportReport;
using pyroscope::ProfileBlock;
using pyroscope::Status;
using pyroscope::StatusCode;
using pyroscope::Tree;

namespace {

ByteSpan span_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

using Stacks = std::map<std::string, uint64_t>;

// Stacks with their counts, read without the header's folded parser: frames joined by ';'.
Stacks stacks_of(const Tree& tree) {
  Stacks out;
  for (uint32_t node = 1; node < tree.node_count(); node++) {
    if (tree.self(node) == 0) continue;
    std::string path;
    for (uint32_t n = node; n != Tree::kRoot; n = tree.parent(n))
      path = std::string(tree.name(n)) + (path.empty() ? "" : ";") + path;
    out[path] += tree.self(node);
  }
  return out;
}

ImportOptions options_for() {
  ImportOptions o;
  o.app = "app";
  o.time = 1800000000;
  return o;
}

}  // namespace

TEST_CASE("folded import is lenient by default: readable lines imported unchanged, the rest skipped and counted") {
  const std::string text =
      "main;work 3\n"
      "main;no_count\n"                          // line 2
      "perf;jit;;frame 2\r\n"                    // an empty frame (JIT'd code) gets a name
      "main;overflow 99999999999999999999999\n"  // line 4
      "main;std::vector<int>::push_back(int&&)  5\n"  // a frame that ends in a space keeps it
      " lead;ing 1\n"                            // nothing trimmed at the start either
      "trailing; 4\n"
      "\n"
      "main;work 1   \n";
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  ImportOptions o = options_for();
  o.has_format = true;
  o.format = pyroscope::Format::folded;
  REQUIRE(pyroscope::import_profile(span_of(text), o, &blocks, &report).ok());
  CHECK(report.summary() == "imported 6 lines, skipped 2: line 2 no count, line 4 count overflows");
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].series.to_string() == "app.cpu{}");
  CHECK(blocks[0].block_start == 1800000000);
  CHECK(stacks_of(blocks[0].tree) == Stacks{{"main;work", 4},
                                           {"perf;jit;[empty];frame", 2},
                                           {"main;std::vector<int>::push_back(int&&) ", 5},
                                           {" lead;ing", 1},
                                           {"trailing;[empty]", 4}});
  // What is exported reads back as the same stacks: the spaces survive the round trip.
  FoldedImporter again;
  const std::string exported = blocks[0].tree.to_folded();
  again.add(exported.data(), exported.size());
  REQUIRE(again.finish().ok());
  CHECK(again.report().skipped == 0);
  CHECK(stacks_of(again.tree()) == stacks_of(blocks[0].tree));
}

TEST_CASE("folded: to_folded -> from_folded keeps a frame's trailing space") {
  Tree tree;
  tree.insert({"main", "truncated template<int, "}, 3);
  tree.insert({"main", "x "}, 2);
  Tree again;
  REQUIRE(Tree::from_folded(tree.to_folded(), &again).ok());
  CHECK(stacks_of(again) == Stacks{{"main;truncated template<int, ", 3}, {"main;x ", 2}});
}

TEST_CASE("folded strict: the first bad line is the error and nothing is imported") {
  std::vector<ProfileBlock> blocks;
  ImportOptions o = options_for();
  o.strict = true;
  Status st = pyroscope::import_profile(span_of(std::string("a;b 1\na;;b 2\n")), o, &blocks);
  CHECK(st.code() == StatusCode::parse_error);
  CHECK_MESSAGE(st.message() == "line 2: empty frame name (frame 2)", st.message());
  st = pyroscope::import_profile(span_of(std::string("a;b 1\nx 1\nlast line without count")), o, &blocks);
  CHECK_MESSAGE(st.message() == "line 3: no count", st.message());
  CHECK(blocks.empty());
}

TEST_CASE("FoldedImporter: pieces cut at any byte give the same tree and the same line numbers") {
  const std::string text = "a;b 1\r\nbad\n\xEF\xBB\xBF" "c;d 22\nc;d 3\ne;f  x\ng 7";
  FoldedImporter whole;
  whole.add(text.data(), text.size());
  REQUIRE(whole.finish().ok());
  CHECK(whole.report().summary() == "imported 4 lines, skipped 2: line 2 no count, line 5 no count");
  const Stacks expected = stacks_of(whole.tree());
  CHECK(expected == Stacks{{"a;b", 1}, {"c;d", 25}, {"g", 7}});
  for (size_t cut1 = 0; cut1 <= text.size(); cut1++) {
    for (size_t cut2 = cut1; cut2 <= text.size(); cut2 += 3) {
      FoldedImporter pieces;
      pieces.add(text.data(), cut1);
      pieces.add(text.data() + cut1, cut2 - cut1);
      pieces.add(text.data() + cut2, text.size() - cut2);
      REQUIRE(pieces.finish().ok());
      REQUIRE(stacks_of(pieces.tree()) == expected);
      REQUIRE(pieces.report().summary() == whole.report().summary());
    }
  }
  FoldedImporter strict(true);
  strict.add(text.data(), text.size());
  CHECK(strict.finish().message() == "line 2: no count");
  CHECK(strict.tree().total() == 0);
  FoldedImporter nothing;
  const std::string prose = "this is\nnot folded\n";
  nothing.add(prose.data(), prose.size());
  CHECK(nothing.finish().code() == StatusCode::parse_error);
}

namespace {

// perf script's default output, as perf 6.1 prints it (the comm "my prog" has a space; the second
// sample is 25 s later, so it lands two blocks later; the third has no callchain; the fourth is
// another event; the fifth has a broken stack line).
const char* const kPerfScript =
    "# ========\n"
    "# captured on    : Mon Jan  1 00:00:00 2026\n"
    "# ========\n"
    "#\n"
    "my prog  7073 [001]  1827.480182:     250000 cpu-clock:ppp: \n"
    "\t           1462a handle_amd+0xa (/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2)\n"
    "\t               0 [unknown] ([unknown])\n"
    "\n"
    "sleep  7073  1852.480660:     250000 cpu-clock:ppp: \n"
    "\tffffffff82203249 _raw_spin_unlock_irqrestore+0x19 ([kernel.kallsyms])\n"
    "\tffffffff815e5630 do_wp_page+0x6e0 ([kernel.kallsyms])\n"
    "\t            ddcc std::vector<int, std::allocator<int> >::push_back(int const&)+0x1ac (/usr/bin/prog)\n"
    "\t           1ab78 main;with;semicolons+0x0 (/usr/bin/prog)\n"
    "\n"
    "sleep  7073  1853.0:     250000 cpu-clock:ppp:  55d5c0a0 leaf_only+0x10 (/usr/bin/prog)\n"
    "sleep 7073/7074 1853.5: 1 page-faults:u: \n"
    "\t55d5c0a0 fault_here+0x10 (/usr/bin/prog)\n"
    "\n"
    "sleep  7073  1854.0:     250000 cpu-clock:ppp: \n"
    "\tnot an address at all\n"
    "\n";

}  // namespace

TEST_CASE("perf script import: comm as the root frame, kernel and unknown frames, blocks by time, events as types") {
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  pyroscope::Format format;
  REQUIRE(pyroscope::detect_format(span_of(kPerfScript), &format).ok());
  CHECK(format == pyroscope::Format::perf_script);
  REQUIRE(pyroscope::import_profile(span_of(kPerfScript), options_for(), &blocks, &report).ok());
  CHECK(report.format == pyroscope::Format::perf_script);
  CHECK(report.summary() == "imported 4 samples, skipped 1: line 20 stack line is not 'address symbol (module)'");
  std::map<std::pair<std::string, int64_t>, Stacks> got;
  for (const ProfileBlock& b : blocks) {
    got[{b.series.to_string(), b.block_start}] = stacks_of(b.tree);
    CHECK(b.info.unit == "samples");
  }
  const std::map<std::pair<std::string, int64_t>, Stacks> expected = {
      {{"app.cpu{}", 1800000000}, {{"my_prog;[unknown];handle_amd", 1}}},
      {{"app.cpu{}", 1800000020},
       {{"sleep;main:with:semicolons;std::vector<int, std::allocator<int> >::push_back(int const&);do_wp_page;"
         "_raw_spin_unlock_irqrestore", 1},
        {"sleep;leaf_only", 1}}},
      {{"app.page_faults{}", 1800000020}, {{"sleep;fault_here", 1}}},
  };
  CHECK(got == expected);

  ImportOptions strict = options_for();
  strict.strict = true;
  blocks.clear();
  const Status st = pyroscope::import_profile(span_of(kPerfScript), strict, &blocks);
  CHECK_MESSAGE(st.message() == "perf script: line 20 stack line is not 'address symbol (module)'", st.message());
  CHECK(blocks.empty());
}

TEST_CASE("format detection from the content, and mixed formats") {
  struct Case {
    std::string bytes;
    pyroscope::Format format;
  };
  const Case cases[] = {
      {"main;a 1\n", pyroscope::Format::folded},
      {"\n\nmain;a b;c 12\n", pyroscope::Format::folded},
      {kPerfScript, pyroscope::Format::perf_script},
      {"{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\"}", pyroscope::Format::speedscope},
      {"  {\"nodes\":[],\"samples\":[],\"timeDeltas\":[]}", pyroscope::Format::chrome_cpuprofile},
      {std::string("\x89PYRO\r\n\x1a", 8) + std::string(56, '\0'), pyroscope::Format::pyro},
  };
  for (const Case& c : cases) {
    pyroscope::Format format;
    REQUIRE_MESSAGE(pyroscope::detect_format(span_of(c.bytes), &format).ok(), c.bytes);
    CHECK(format == c.format);
  }
  pyroscope::Format format;
  Status st = pyroscope::detect_format(span_of(std::string("hello world\n")), &format);
  CHECK(st.code() == StatusCode::parse_error);
  CHECK_MESSAGE(st.message().find("starts with \"hello world") != std::string::npos, st.message());
  st = pyroscope::detect_format(span_of(std::string("[{\"ph\":\"X\"}]")), &format);
  CHECK_MESSAGE(st.message().find("JSON array") != std::string::npos, st.message());

  // Folded text with perf script pasted into it: the perf lines are skipped and counted.
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  const std::string mixed = std::string("main;a 2\n") + kPerfScript;
  REQUIRE(pyroscope::import_profile(span_of(mixed), options_for(), &blocks, &report).ok());
  CHECK(report.format == pyroscope::Format::folded);
  // "main;a 2", and perf's "# captured on : Mon Jan  1 00:00:00 2026", which reads as a stack counted 2026.
  CHECK(report.imported == 2);
  CHECK(report.skipped > 10);
  ImportOptions strict = options_for();
  strict.strict = true;
  CHECK_FALSE(pyroscope::import_profile(span_of(mixed), strict, &blocks).ok());
  // A .pyro file is opened, not imported.
  CHECK(pyroscope::import_profile(span_of(cases[5].bytes), options_for(), &blocks).code() == StatusCode::invalid_argument);
}
