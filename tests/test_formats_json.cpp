// JSON formats: speedscope (sampled and evented, units, several profiles) and Chrome/Node .cpuprofile
// import; speedscope export (escaping, round trip); JSON of the wrong shape.
// Links the build's implementation (pyroscope_impl), which has PYROSCOPE_WITH_ZLIB and
// PYROSCOPE_WITH_JSON wherever zlib and nlohmann-json are installed (scripts/install-deps.sh).
#include "pyroscope.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

using pyroscope::ByteSpan;
using pyroscope::ImportOptions;
using pyroscope::ImportReport;
using pyroscope::ProfileBlock;
using pyroscope::Status;
using pyroscope::StatusCode;
using pyroscope::Tree;

namespace {

ByteSpan span_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

using Stacks = std::map<std::string, uint64_t>;

Stacks stacks_of(const Tree& tree) {
  Stacks out;
  for (uint32_t node = 0; node < tree.node_count(); node++) {
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
  o.app = "web";
  o.time = 1800000000;
  o.source_name = "in.json";
  return o;
}

std::map<std::string, const ProfileBlock*> by_series(const std::vector<ProfileBlock>& blocks) {
  std::map<std::string, const ProfileBlock*> out;
  for (const ProfileBlock& b : blocks) out[b.series.to_string()] = &b;
  return out;
}

}  // namespace

TEST_CASE("speedscope import: sampled and evented profiles, units to nanoseconds, one series per profile") {
  // The profiles come before the frames (key order is free in JSON).
  const std::string doc = R"json({
    "profiles": [
      {"type": "sampled", "name": "Thread 1", "unit": "milliseconds", "startValue": 0, "endValue": 10,
       "samples": [[0, 1], [0, 1, 2], [0], []], "weights": [1.5, 2, 3, 0.25]},
      {"type": "evented", "name": "Thread 1", "unit": "microseconds", "startValue": 0, "endValue": 100,
       "events": [{"type": "O", "frame": 0, "at": 0}, {"type": "O", "frame": 2, "at": 10},
                  {"type": "C", "frame": 2, "at": 40}, {"type": "C", "frame": 0, "at": 100}]},
      {"type": "sampled", "name": "allocs", "unit": "bytes", "startValue": 0, "endValue": 64,
       "samples": [[1]], "weights": [64]},
      {"type": "sampled", "name": "ticks", "unit": "none", "startValue": 0, "endValue": 3,
       "samples": [[2, 2]], "weights": [3]}
    ],
    "shared": {"frames": [{"name": "main", "file": "main.c", "line": 1}, {"name": "work"}, {"name": "fn \"quoted\""}]},
    "$schema": "https://www.speedscope.app/file-format-schema.json"
  })json";
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  const Status st = pyroscope::import_profile(span_of(doc), options_for(), &blocks, &report);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  CHECK(report.format == pyroscope::Format::speedscope);
  CHECK(report.series == 4);
  const auto series = by_series(blocks);
  REQUIRE(series.size() == 4);
  const ProfileBlock* sampled = series.at("web.cpu{profile=\"Thread 1\"}");
  const ProfileBlock* evented = series.at("web.cpu{profile=\"Thread 1_1\"}");
  const ProfileBlock* allocs = series.at("web.alloc_space{profile=\"allocs\"}");
  const ProfileBlock* ticks = series.at("web.cpu{profile=\"ticks\"}");
  CHECK(sampled->info.unit == "nanoseconds");
  CHECK(stacks_of(sampled->tree) == Stacks{{"main;work", 1500000}, {"main;work;fn \"quoted\"", 2000000}, {"main", 3000000}, {"", 250000}});
  CHECK(stacks_of(evented->tree) == Stacks{{"main", 70000}, {"main;fn \"quoted\"", 30000}});
  CHECK(allocs->info.unit == "bytes");
  CHECK(stacks_of(allocs->tree) == Stacks{{"work", 64}});
  CHECK(ticks->info.unit == "samples");
  CHECK(stacks_of(ticks->tree) == Stacks{{"fn \"quoted\";fn \"quoted\"", 3}});
  CHECK(sampled->block_start == 1800000000);
}

TEST_CASE("speedscope export: valid JSON with hostile names, and it imports back with the same stacks and totals") {
  auto symbols = std::make_shared<pyroscope::SymbolTable>();
  Tree cpu(symbols), space(symbols);
  const std::string hostile[] = {"quote\"back\\slash", "ctl\x01\x1f", std::string("nul\0byte", 8), "bad utf8 \xff\xfe",
                                 "</script>", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\xa5", "over\xc0\xaflong"};
  for (size_t i = 0; i < 7; i++) {
    cpu.insert({"main", hostile[i]}, 10 + i);
    space.insert({hostile[i], "malloc"}, 1000 * (i + 1));
  }
  cpu.insert({}, 5);  // samples without frames
  pyroscope::SeriesInfo ns = pyroscope::default_series_info("cpu");
  ns.unit = "nanoseconds";
  std::string json;
  pyroscope::ExportOptions eo;
  eo.name = "app \"x\"";
  REQUIRE(pyroscope::export_speedscope({{"cpu", ns, &cpu}, {"alloc_space", pyroscope::default_series_info("alloc_space"), &space}},
                                       eo, &json).ok());
  const nlohmann::json parsed = nlohmann::json::parse(json, nullptr, false);  // a second, independent parser
  REQUIRE_FALSE(parsed.is_discarded());
  CHECK(parsed["profiles"].size() == 2);
  CHECK(parsed["profiles"][0]["unit"] == "nanoseconds");
  CHECK(parsed["profiles"][1]["unit"] == "bytes");
  CHECK(parsed["profiles"][0]["endValue"] == cpu.total());
  CHECK(parsed["shared"]["frames"][0]["name"] == "main");
  CHECK(parsed["name"] == "app \"x\"");

  std::vector<ProfileBlock> blocks;
  REQUIRE(pyroscope::import_profile(span_of(json), options_for(), &blocks).ok());
  const auto series = by_series(blocks);
  REQUIRE(series.size() == 2);
  const ProfileBlock* cpu_back = series.at("web.cpu{profile=\"app _x_ cpu\"}");
  const ProfileBlock* space_back = series.at("web.alloc_space{profile=\"app _x_ alloc_space\"}");
  CHECK(cpu_back->tree.total() == cpu.total());
  CHECK(space_back->tree.total() == space.total());
  // Names that are valid UTF-8 come back unchanged; bytes that are not become U+FFFD.
  Stacks expected;
  for (const auto& [stack, count] : stacks_of(cpu)) {
    std::string s = stack;
    if (s == "main;bad utf8 \xff\xfe") s = "main;bad utf8 \xEF\xBF\xBD\xEF\xBF\xBD";
    if (s == "main;over\xc0\xaflong") s = "main;over\xEF\xBF\xBD\xEF\xBF\xBDlong";
    expected[s] = count;
  }
  CHECK(stacks_of(cpu_back->tree) == expected);
}

TEST_CASE(".cpuprofile import: the (root) node dropped, a sample lasts until the next, anonymous functions named, blocks by time") {
  // Node's shape: ids, callFrame, children; timeDeltas in microseconds. Samples: 1 ms apart, one 12 s
  // later (another block), the last lasting until endTime.
  const std::string doc = R"json({"nodes":[
      {"id":1,"callFrame":{"functionName":"(root)","scriptId":"0","url":"","lineNumber":-1,"columnNumber":-1},"hitCount":0,"children":[2,4]},
      {"id":2,"callFrame":{"functionName":"main","scriptId":"1","url":"file:///app/main.js","lineNumber":0,"columnNumber":0},"hitCount":0,"children":[3]},
      {"id":3,"callFrame":{"functionName":"","scriptId":"1","url":"file:///app/lib/util.js","lineNumber":41,"columnNumber":3},"hitCount":2},
      {"id":4,"callFrame":{"functionName":"(idle)","scriptId":"0","url":"","lineNumber":-1,"columnNumber":-1},"hitCount":1}],
    "startTime":1000000,"endTime":13004000,
    "samples":[3,3,2,4],"timeDeltas":[1000,1000,1000,12000000]})json";
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  pyroscope::Format format;
  REQUIRE(pyroscope::detect_format(span_of(doc), &format).ok());
  CHECK(format == pyroscope::Format::chrome_cpuprofile);
  const Status st = pyroscope::import_profile(span_of(doc), options_for(), &blocks, &report);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  CHECK(report.imported == 4);
  std::map<int64_t, Stacks> got;
  for (const ProfileBlock& b : blocks) {
    CHECK(b.series.to_string() == "web.cpu{}");
    CHECK(b.info.unit == "nanoseconds");
    got[b.block_start] = stacks_of(b.tree);
  }
  // Sample times 1.001, 1.002, 1.003, 13.003 s; the last lasts until endTime (13.004 s).
  CHECK(got == std::map<int64_t, Stacks>{{1800000000, {{"main;(anonymous util.js:42)", 2000000}, {"main", 12000000000}}},
                                         {1800000010, {{"(idle)", 1000000}}}});
}

TEST_CASE("JSON of the wrong shape is a clear error naming where") {
  struct Case {
    const char* what;
    std::string doc;
    bool speedscope;
    const char* expected;
  };
  const Case cases[] = {
      {"not JSON", "{\"nodes\": [{\"id\": 1", false, "not valid JSON"},
      {"nodes not objects", "{\"nodes\": 5, \"samples\": [], \"timeDeltas\": [1]}", false, "no nodes"},
      {"id not an integer", "{\"nodes\":[{\"id\":\"one\"}],\"samples\":[],\"timeDeltas\":[]}", false, "nodes[0].id is not an integer"},
      {"child missing", "{\"nodes\":[{\"id\":1,\"children\":[7]}],\"samples\":[],\"timeDeltas\":[]}", false, "child 7 not defined"},
      {"parent cycle", "{\"nodes\":[{\"id\":1,\"parent\":2,\"callFrame\":{\"functionName\":\"a\"}},{\"id\":2,\"parent\":1}],\"samples\":[1],\"timeDeltas\":[5],\"startTime\":0,\"endTime\":100}",
       false, "cycle"},
      {"no frames", "{\"profiles\": []}", true, "no shared.frames"},
      {"frame index out of range", "{\"shared\":{\"frames\":[{\"name\":\"a\"}]},\"profiles\":[{\"type\":\"sampled\",\"unit\":\"none\",\"samples\":[[0,3]],\"weights\":[1]}]}",
       true, "frame 3 of 1 shared frames"},
      {"weights mismatch", "{\"shared\":{\"frames\":[]},\"profiles\":[{\"type\":\"sampled\",\"unit\":\"none\",\"samples\":[[],[]],\"weights\":[1]}]}",
       true, "1 weights for 2 samples"},
      {"sample not a number", "{\"shared\":{\"frames\":[]},\"profiles\":[{\"type\":\"sampled\",\"samples\":[[\"x\"]]}]}", true,
       "profiles[0].samples[0][0] is not a frame index"},
      {"bad unit", "{\"shared\":{\"frames\":[]},\"profiles\":[{\"type\":\"sampled\",\"unit\":\"parsecs\",\"samples\":[],\"weights\":[]}]}",
       true, "unknown unit 'parsecs'"},
      {"events misnested", "{\"shared\":{\"frames\":[{\"name\":\"a\"},{\"name\":\"b\"}]},\"profiles\":[{\"type\":\"evented\",\"unit\":\"none\",\"events\":["
                           "{\"type\":\"O\",\"frame\":0,\"at\":0},{\"type\":\"C\",\"frame\":1,\"at\":1}]}]}",
       true, "closes frame 1 but frame 0 is open"},
      {"document an array", "[1,2]", true, "array, not an object"},
      // Found by fuzz_speedscope: a frame that is not an object, followed by one that is, wrote past
      // the end of the frame table.
      {"frame not an object", "{\"shared\":{\"frames\":[{\"name\":\"a\"},6,{\"name\":\"b\"}]},\"profiles\":[]}", true,
       "shared.frames[1] is not an object"},
      {"profile not an object", "{\"shared\":{\"frames\":[]},\"profiles\":[[1]]}", true, "profiles[0] is not an object"},
      {"node not an object", "{\"nodes\":[{\"id\":1},\"x\"],\"samples\":[],\"timeDeltas\":[]}", false, "nodes[1] is not an object"},
      {"deep nesting", std::string(100, '[') + std::string(100, ']'), true, "array, not an object"},
      {"deep objects", "{\"shared\":" + std::string(80, '[') + std::string(80, ']') + "}", true, "64 levels"},
  };
  for (const Case& c : cases) {
    const std::string what = c.what;
    CAPTURE(what);
    ImportOptions o = options_for();
    o.has_format = true;
    o.format = c.speedscope ? pyroscope::Format::speedscope : pyroscope::Format::chrome_cpuprofile;
    std::vector<ProfileBlock> blocks;
    const Status st = pyroscope::import_profile(span_of(c.doc), o, &blocks);
    CHECK(st.code() == StatusCode::parse_error);
    CHECK_MESSAGE(st.message().find(c.expected) != std::string::npos, st.message());
    CHECK_MESSAGE(st.message().find("in.json: ") == 0, st.message());
    CHECK(blocks.empty());
  }
}

TEST_CASE("work is bounded by the input's size: deep evented nesting and long sampled chains are refused") {
  // 8000 nested opens then closes: every event would insert the whole open stack (the square of 8000).
  std::string events;
  for (int i = 0; i < 8000; i++) events += "{\"type\":\"O\",\"frame\":0,\"at\":" + std::to_string(i) + "},";
  for (int i = 0; i < 8000; i++) events += "{\"type\":\"C\",\"frame\":0,\"at\":" + std::to_string(8000 + i) + "},";
  events.pop_back();
  const std::string speedscope = "{\"shared\":{\"frames\":[{\"name\":\"f\"}]},\"profiles\":[{\"type\":\"evented\",\"unit\":\"none\",\"events\":[" + events + "]}]}";
  std::vector<ProfileBlock> blocks;
  Status st = pyroscope::import_profile(span_of(speedscope), options_for(), &blocks);
  CHECK_MESSAGE(st.message().find("refused as hostile") != std::string::npos, st.message());
  // A chain of 10 000 nodes, every one sampled: walking each stack up would cost the square.
  std::string nodes;
  std::string samples, deltas;
  for (int i = 1; i <= 10000; i++) {
    nodes += "{\"id\":" + std::to_string(i) + (i > 1 ? ",\"parent\":" + std::to_string(i - 1) : std::string()) +
             ",\"callFrame\":{\"functionName\":\"f\"}},";
    samples += std::to_string(i) + ",";
    deltas += "1,";
  }
  nodes.pop_back();
  samples.pop_back();
  deltas.pop_back();
  const std::string cpuprofile = "{\"nodes\":[" + nodes + "],\"samples\":[" + samples + "],\"timeDeltas\":[" + deltas + "],\"startTime\":0,\"endTime\":20000}";
  st = pyroscope::import_profile(span_of(cpuprofile), options_for(), &blocks);
  CHECK_MESSAGE(st.message().find("refused as hostile") != std::string::npos, st.message());
  CHECK(blocks.empty());
  // The same shapes at a sane size import.
  const std::string small_chain = "{\"nodes\":[{\"id\":1,\"callFrame\":{\"functionName\":\"a\"}},{\"id\":2,\"parent\":1,\"callFrame\":{\"functionName\":\"b\"}}],"
                                  "\"samples\":[1,2],\"timeDeltas\":[1,1],\"startTime\":0,\"endTime\":4}";
  REQUIRE(pyroscope::import_profile(span_of(small_chain), options_for(), &blocks).ok());
}
