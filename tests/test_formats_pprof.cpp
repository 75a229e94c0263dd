// pprof import and export: what maps to what (types, units, periods, labels, inlined frames, unsymbolized
// locations, time), round trips, gzip and its cap, and hostile input. The profiles here are written by a
// small protobuf encoder of the test's own, not by the exporter under test.
// pyroscope-test: link=z
#define PYROSCOPE_NO_SAMPLER 1
#define PYROSCOPE_WITH_ZLIB 1
#define PYROSCOPE_WITH_JSON 1
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <doctest/doctest.h>
#include <zlib.h>

#include <map>
#include <random>
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

// A protobuf encoder independent of the header's writer.
struct Message {
  std::string bytes;
  static void varint(std::string* out, uint64_t v) {
    while (v >= 0x80) {
      out->push_back(char(v | 0x80));
      v >>= 7;
    }
    out->push_back(char(v));
  }
  Message& u(uint32_t field, uint64_t v) {
    varint(&bytes, uint64_t(field) << 3);
    varint(&bytes, v);
    return *this;
  }
  Message& s(uint32_t field, const std::string& payload) {
    varint(&bytes, uint64_t(field) << 3 | 2);
    varint(&bytes, payload.size());
    bytes += payload;
    return *this;
  }
  Message& m(uint32_t field, const Message& sub) { return s(field, sub.bytes); }
  Message& packed(uint32_t field, const std::vector<uint64_t>& values) {
    std::string payload;
    for (uint64_t v : values) varint(&payload, v);
    return s(field, payload);
  }
};

// String table of the test profile.
enum Str : uint64_t {
  kEmpty, kSamples, kCount, kCpu, kNanoseconds, kMain, kWork, kInlinedHelper, kLibc, kThread, kWorker1,
  kBytes, kSpanId, kStrCount
};
const char* const kStrings[kStrCount] = {"", "samples", "count", "cpu", "nanoseconds", "main", "work",
                                         "inlined_helper", "/usr/lib/libc.so.6", "thread name", "worker-1",
                                         "bytes", "span id"};

// main -> work (with inlined_helper inlined into work at one location) -> an unsymbolized libc address.
std::string test_profile() {
  Message p;
  p.m(1, Message().u(1, kSamples).u(2, kCount));
  p.m(1, Message().u(1, kCpu).u(2, kNanoseconds));
  // sample 1: leaf first: libc address (loc 3), work+inlined (loc 2), main (loc 1); labels: a string
  // label (a tag) and a numeric one (ignored, counted).
  p.m(2, Message()
             .packed(1, {3, 2, 1})
             .packed(2, {2, 20000000})
             .m(3, Message().u(1, kThread).u(2, kWorker1))
             .m(3, Message().u(1, kSpanId).u(3, 77).u(4, kBytes)));
  // sample 2: main -> work only, no labels, values unpacked (one field per value).
  p.m(2, Message().packed(1, {2, 1}).u(2, 5).u(2, 50000000));
  // sample 3: only the second type has a value.
  p.m(2, Message().packed(1, {1}).packed(2, {0, 7}));
  p.m(3, Message().u(1, 1).u(2, 0x7f0000000000).u(3, 0x7f0000100000).u(4, 0x2000).u(5, kLibc));
  p.m(4, Message().u(1, 1).m(4, Message().u(1, 1).u(2, 10)));
  // Lines innermost first: inlined_helper was inlined into work.
  p.m(4, Message().u(1, 2).m(4, Message().u(1, 3).u(2, 40)).m(4, Message().u(1, 2).u(2, 30)));
  p.m(4, Message().u(1, 3).u(2, 1).u(3, 0x7f0000000123));
  p.m(5, Message().u(1, 1).u(2, kMain).u(3, kMain));
  p.m(5, Message().u(1, 2).u(2, kWork));
  p.m(5, Message().u(1, 3).u(2, kInlinedHelper));
  for (const char* s : kStrings) p.s(6, s);
  p.u(9, uint64_t(1800000005) * 1000000000u + 123);  // time_nanos
  p.u(10, uint64_t(10) * 1000000000u);
  p.m(11, Message().u(1, kCpu).u(2, kNanoseconds));
  p.u(12, 10000000);
  return p.bytes;
}

std::string gzip_of(const std::string& raw, int level = 6) {
  z_stream s{};
  REQUIRE(deflateInit2(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);  // +16: gzip wrapper
  std::string out(deflateBound(&s, raw.size()) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  s.avail_in = uInt(raw.size());
  s.next_out = reinterpret_cast<Bytef*>(&out[0]);
  s.avail_out = uInt(out.size());
  REQUIRE(deflate(&s, Z_FINISH) == Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

ImportOptions options_for(const std::string& app = "shop") {
  ImportOptions o;
  o.app = app;
  o.time = 1700000000;
  o.source_name = "test.pb";
  return o;
}

std::map<std::string, const ProfileBlock*> by_series(const std::vector<ProfileBlock>& blocks) {
  std::map<std::string, const ProfileBlock*> out;
  for (const ProfileBlock& b : blocks) out[b.series.to_string()] = &b;
  return out;
}

std::map<std::string, uint64_t> stacks_of(const Tree& tree) {
  std::map<std::string, uint64_t> out;
  const std::string folded = tree.to_folded();
  size_t pos = 0;
  while (pos < folded.size()) {
    const size_t eol = folded.find('\n', pos);
    const std::string line = folded.substr(pos, eol - pos);
    const size_t space = line.rfind(' ');
    out[line.substr(0, space)] += std::stoull(line.substr(space + 1));
    pos = eol + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("pprof import: types, units, period, labels as tags, inlined frames, unsymbolized locations, time") {
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  const std::string profile = test_profile();
  const Status st = pyroscope::import_profile(span_of(profile), options_for(), &blocks, &report);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  CHECK(report.format == pyroscope::Format::pprof);
  CHECK(report.imported == 3);
  CHECK(report.skipped == 0);
  CHECK(report.numeric_labels_ignored == 1);
  CHECK(report.summary() == "imported 3 samples; 1 numeric labels ignored");

  const auto series = by_series(blocks);
  REQUIRE(series.size() == 4);  // 2 types x (labelled, unlabelled)
  const ProfileBlock* cpu_tagged = series.at("shop.cpu{thread_name=\"worker-1\"}");
  const ProfileBlock* cpu_plain = series.at("shop.cpu{}");
  const ProfileBlock* samples_tagged = series.at("shop.samples{thread_name=\"worker-1\"}");
  const ProfileBlock* samples_plain = series.at("shop.samples{}");

  CHECK(cpu_tagged->info.unit == "nanoseconds");
  CHECK(cpu_tagged->info.aggregation == pyroscope::Aggregation::sum);
  CHECK(cpu_tagged->info.period == 10000000);
  CHECK(cpu_tagged->info.period_type == "cpu");
  CHECK(cpu_tagged->info.period_unit == "nanoseconds");
  CHECK(samples_plain->info.unit == "count");
  CHECK(cpu_tagged->block_start == 1800000005);  // time_nanos wins over options.time

  // Root first: main, work, then the function inlined into work, then libc by module and offset
  // (0x123 into the mapping, whose file offset is 0x2000).
  CHECK(stacks_of(cpu_tagged->tree) == std::map<std::string, uint64_t>{{"main;work;inlined_helper;libc.so.6+0x2123", 20000000}});
  CHECK(stacks_of(samples_tagged->tree) == std::map<std::string, uint64_t>{{"main;work;inlined_helper;libc.so.6+0x2123", 2}});
  CHECK(stacks_of(cpu_plain->tree) == std::map<std::string, uint64_t>{{"main;work;inlined_helper", 50000000}, {"main", 7}});
  CHECK(stacks_of(samples_plain->tree) == std::map<std::string, uint64_t>{{"main;work;inlined_helper", 5}});
  // One symbol table for every block of an import.
  CHECK(cpu_tagged->tree.shared_symbols() == samples_plain->tree.shared_symbols());
}

TEST_CASE("pprof import: the caller's tags win over labels, the type names are made valid, no time means options.time") {
  Message p;
  p.m(1, Message().u(1, 1).u(2, 2));  // "alloc/space" in "bytes"
  p.m(2, Message().packed(1, {1}).packed(2, {9}).m(3, Message().u(1, 3).u(2, 4)));
  p.m(4, Message().u(1, 1).m(4, Message().u(1, 1)));
  p.m(5, Message().u(1, 1).u(2, 5));
  for (const char* s : {"", "alloc/space", "bytes", "region", "from-label", "f"}) p.s(6, s);
  ImportOptions o = options_for();
  o.tags = {{"region", "eu-north"}};
  std::vector<ProfileBlock> blocks;
  REQUIRE(pyroscope::import_profile(span_of(p.bytes), o, &blocks).ok());
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].series.to_string() == "shop.alloc_space{region=\"eu-north\"}");
  CHECK(blocks[0].info.unit == "bytes");
  CHECK(blocks[0].block_start == 1700000000);
}

TEST_CASE("pprof export then import keeps every type's stacks, units and period (plain and gzip)") {
  std::mt19937 rng(7);
  auto symbols = std::make_shared<pyroscope::SymbolTable>();
  Tree cpu(symbols), alloc(symbols);
  const char* names[] = {"main", "a", "b", "c", "d", "name with spaces ", "x;y"};
  for (int i = 0; i < 300; i++) {
    std::vector<std::string_view> frames;
    const int depth = 1 + int(rng() % 6);
    for (int d = 0; d < depth; d++) frames.push_back(names[rng() % 7]);
    if (i % 3) cpu.insert(frames, 1 + rng() % 1000);
    if (i % 4) alloc.insert(frames, 1 + rng() % 100000);
  }
  pyroscope::SeriesInfo cpu_info = pyroscope::default_series_info("cpu");
  cpu_info.unit = "nanoseconds";
  cpu_info.period = 10000000;
  cpu_info.period_type = "cpu";
  cpu_info.period_unit = "nanoseconds";
  const pyroscope::SeriesInfo alloc_info = pyroscope::default_series_info("alloc_space");
  pyroscope::ExportOptions eo;
  eo.from = 1800000000;
  eo.until = 1800000060;
  for (bool gzip : {false, true}) {
    CAPTURE(gzip);
    eo.gzip = gzip;
    std::string bytes;
    REQUIRE(pyroscope::export_pprof({{"cpu", cpu_info, &cpu}, {"alloc_space", alloc_info, &alloc}}, eo, &bytes).ok());
    CHECK((bytes.size() > 2 && uint8_t(bytes[0]) == 0x1f && uint8_t(bytes[1]) == 0x8b) == gzip);
    pyroscope::Format format;
    REQUIRE(pyroscope::detect_format(span_of(bytes), &format).ok());
    CHECK(format == pyroscope::Format::pprof);
    std::vector<ProfileBlock> blocks;
    REQUIRE(pyroscope::import_profile(span_of(bytes), options_for(), &blocks).ok());
    const auto series = by_series(blocks);
    REQUIRE(series.size() == 2);
    CHECK(stacks_of(series.at("shop.cpu{}")->tree) == stacks_of(cpu));
    CHECK(stacks_of(series.at("shop.alloc_space{}")->tree) == stacks_of(alloc));
    CHECK(series.at("shop.cpu{}")->info == cpu_info);
    // pprof has one period for the whole profile: the first profile's is written.
    pyroscope::SeriesInfo alloc_with_period = alloc_info;
    alloc_with_period.period = cpu_info.period;
    alloc_with_period.period_type = "cpu";
    alloc_with_period.period_unit = "nanoseconds";
    CHECK(series.at("shop.alloc_space{}")->info == alloc_with_period);
    CHECK(series.at("shop.cpu{}")->block_start == 1800000000);
  }
}

TEST_CASE("pprof import reads gzip through zlib or through the inflate hook, and caps the inflated size") {
  const std::string gz = gzip_of(test_profile());
  std::vector<ProfileBlock> blocks;
  REQUIRE(pyroscope::import_profile(span_of(gz), options_for(), &blocks).ok());
  CHECK(blocks.size() == 4);

  int hook_calls = 0;
  ImportOptions o = options_for();
  o.inflate = [&](ByteSpan deflated, uint64_t max_output, std::string* out) {
    hook_calls++;
    return pyroscope::detail::zlib_inflate_raw(deflated, max_output, out);
  };
  blocks.clear();
  REQUIRE(pyroscope::import_profile(span_of(gz), o, &blocks).ok());
  CHECK(hook_calls == 1);
  CHECK(blocks.size() == 4);

  // A bomb: 64 MiB of zeros compress to ~64 KiB; the cap stops the inflation at 1 MiB.
  const std::string bomb = gzip_of(std::string(64u << 20, '\0'), 9);
  CHECK(bomb.size() < 200000);
  o = options_for();
  o.max_inflated_bytes = 1u << 20;
  blocks.clear();
  const Status st = pyroscope::import_profile(span_of(bomb), o, &blocks);
  CHECK(st.code() == StatusCode::too_large);
  CHECK_MESSAGE(st.message().find("more than 1048576 bytes") != std::string::npos, st.message());
  CHECK_MESSAGE(st.message().find("test.pb") == 0, st.message());
  CHECK(blocks.empty());

  // Cut or corrupt gzip: an error, never a crash or a partial import.
  for (size_t cut : {size_t(5), size_t(20), gz.size() / 2, gz.size() - 1}) {
    CAPTURE(cut);
    CHECK_FALSE(pyroscope::import_profile(span_of(gz.substr(0, cut)), options_for(), &blocks).ok());
  }
  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 6] ^= 1;
  const Status crc = pyroscope::import_profile(span_of(bad_crc), options_for(), &blocks);
  CHECK_MESSAGE(crc.message().find("CRC-32") != std::string::npos, crc.message());
  CHECK(pyroscope::import_profile(span_of(gzip_of(gz)), options_for(), &blocks).message().find("gzip inside gzip") != std::string::npos);
  CHECK(blocks.empty());
}

TEST_CASE("pprof import: hostile input is a clear error naming the problem") {
  const std::string good = test_profile();
  struct Case {
    const char* what;
    std::string bytes;
    const char* expected;
  };
  Message no_types;
  no_types.s(6, "");
  Message bad_string;
  bad_string.m(1, Message().u(1, 99).u(2, 0));
  bad_string.s(6, "");
  Message bad_location = Message();
  bad_location.m(1, Message().u(1, 1).u(2, 1));
  bad_location.m(2, Message().packed(1, {42}).packed(2, {1}));
  bad_location.s(6, "").s(6, "x");
  Message bad_function = Message();
  bad_function.m(1, Message().u(1, 1).u(2, 1));
  bad_function.m(4, Message().u(1, 1).m(4, Message().u(1, 9)));
  bad_function.s(6, "").s(6, "x");
  Message value_count = Message();
  value_count.m(1, Message().u(1, 1).u(2, 1));
  value_count.m(2, Message().packed(2, {1, 2}));
  value_count.s(6, "").s(6, "x");
  Message duplicate = Message();
  duplicate.m(1, Message().u(1, 1).u(2, 1));
  duplicate.m(5, Message().u(1, 1)).m(5, Message().u(1, 1));
  duplicate.s(6, "").s(6, "x");
  std::string past_end = std::string("\x0a\x7f", 2) + "abc";  // a ValueType claiming 127 bytes
  std::string group = std::string("\x0b", 1) + good;  // field 1, wire type 3 (a group)
  std::string long_varint = "\x48" + std::string(11, '\xff');  // time_nanos: an 11-byte varint
  const Case cases[] = {
      {"no sample types", no_types.bytes, "no sample types"},
      {"string index out of range", bad_string.bytes, "string index out of range"},
      {"location not defined", bad_location.bytes, "location 42 not defined"},
      {"function not defined", bad_function.bytes, "function 9 not defined"},
      {"values of the wrong count", value_count.bytes, "2 values for 1 sample types"},
      {"duplicate function id", duplicate.bytes, "function id 1 defined twice"},
      {"length past the end", past_end, "claims 127 bytes"},
      {"a group", group, "groups"},
      {"varint over 64 bits", long_varint, "varint"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    ImportOptions o = options_for();
    o.has_format = true;  // the detector would call most of these "not a profile"
    std::vector<ProfileBlock> blocks;
    const Status st = pyroscope::import_profile(span_of(c.bytes), o, &blocks);
    CHECK(st.code() == StatusCode::parse_error);
    CHECK_MESSAGE(st.message().find(c.expected) != std::string::npos, st.message());
    CHECK_MESSAGE(st.message().find("test.pb: pprof") == 0, st.message());
    CHECK(blocks.empty());
  }
}

TEST_CASE("pprof import: a profile cut at every offset or with flipped bytes never crashes") {
  const std::string good = test_profile();
  ImportOptions o = options_for();
  o.has_format = true;
  size_t accepted = 0;
  for (size_t cut = 0; cut < good.size(); cut++) {
    std::vector<ProfileBlock> blocks;
    if (pyroscope::import_profile(span_of(good.substr(0, cut)), o, &blocks).ok()) accepted++;
  }
  CHECK(accepted < good.size() / 4);  // a cut mostly lands inside a field: an error
  std::mt19937 rng(3);
  for (int round = 0; round < 3000; round++) {
    std::string bad = good;
    for (int k = 0; k < 3; k++) bad[rng() % bad.size()] = char(rng());
    std::vector<ProfileBlock> blocks;
    (void)pyroscope::import_profile(span_of(bad), o, &blocks);
  }
}

TEST_CASE("pprof import: negative values are skipped and counted, or an error when strict") {
  Message p;
  p.m(1, Message().u(1, 1).u(2, 1));
  p.m(2, Message().packed(1, {1}).packed(2, {uint64_t(-5)}));
  p.m(2, Message().packed(1, {1}).packed(2, {3}));
  p.m(4, Message().u(1, 1).m(4, Message().u(1, 1)));
  p.m(5, Message().u(1, 1).u(2, 1));
  p.s(6, "").s(6, "delta");
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  REQUIRE(pyroscope::import_profile(span_of(p.bytes), options_for(), &blocks, &report).ok());
  CHECK(report.summary() == "imported 1 samples, skipped 1: sample 0 negative or overflowing value");
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].tree.total() == 3);
  ImportOptions strict = options_for();
  strict.strict = true;
  blocks.clear();
  const Status st = pyroscope::import_profile(span_of(p.bytes), strict, &blocks);
  CHECK_MESSAGE(st.message().find("negative value -5") != std::string::npos, st.message());
  CHECK(blocks.empty());
}

TEST_CASE("pprof export: hooks, empty stacks, and errors") {
  Tree tree;
  tree.insert({"main", "work"}, 4);
  tree.insert({}, 2);  // samples without frames: a sample with no locations
  int deflate_calls = 0;
  pyroscope::ExportOptions eo;
  eo.deflate = [&](ByteSpan raw, std::string* out) {
    deflate_calls++;
    return pyroscope::detail::zlib_deflate_raw(raw, out);
  };
  std::string bytes;
  REQUIRE(pyroscope::export_pprof({{"cpu", pyroscope::SeriesInfo(), &tree}}, eo, &bytes).ok());
  CHECK(deflate_calls == 1);
  std::vector<ProfileBlock> blocks;
  REQUIRE(pyroscope::import_profile(span_of(bytes), options_for(), &blocks).ok());
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].tree.total() == 6);
  CHECK(blocks[0].tree.self(Tree::kRoot) == 2);
  CHECK(pyroscope::export_pprof({}, eo, &bytes).code() == StatusCode::invalid_argument);
  CHECK(pyroscope::export_pprof({{"cpu", pyroscope::SeriesInfo(), nullptr}}, eo, &bytes).code() == StatusCode::invalid_argument);
}

TEST_CASE("import options are checked") {
  const std::string profile = test_profile();
  std::vector<ProfileBlock> blocks;
  ImportOptions o = options_for("");
  CHECK(pyroscope::import_profile(span_of(profile), o, &blocks).code() == StatusCode::invalid_argument);
  o = options_for("bad app{");
  CHECK(pyroscope::import_profile(span_of(profile), o, &blocks).code() == StatusCode::invalid_argument);
  o = options_for();
  o.tags = {{"__reserved", "x"}};
  CHECK(pyroscope::import_profile(span_of(profile), o, &blocks).code() == StatusCode::invalid_argument);
  CHECK(blocks.empty());
}

TEST_CASE("pprof import: a small profile that expands into billions of frames is refused") {
  // One location with 1000 inlined lines, referenced 5000 times by one sample: 5 million frames from
  // about 10 KB.
  Message location;
  location.u(1, 1);
  for (int i = 0; i < 1000; i++) location.m(4, Message().u(1, 1));
  Message p;
  p.m(1, Message().u(1, 1).u(2, 1));
  p.m(2, Message().packed(1, std::vector<uint64_t>(5000, 1)).packed(2, {1}));
  p.m(4, location);
  p.m(5, Message().u(1, 1).u(2, 2));
  p.s(6, "").s(6, "x").s(6, "f");
  std::vector<ProfileBlock> blocks;
  const Status st = pyroscope::import_profile(span_of(p.bytes), options_for(), &blocks);
  CHECK_MESSAGE(st.message().find("refused as hostile") != std::string::npos, st.message());
  CHECK(blocks.empty());
}

TEST_CASE("pprof import: sample types that read the same, even at the 64-byte limit, stay apart (found by fuzz_pprof)") {
  // Three sample types named by one 70-byte string: its sanitized name is cut to 64 bytes, so a plain
  // "_2" after it would be cut again (the importer looped on that). The suffix replaces the end.
  const std::string long_name(70, 'x');
  Message p;
  for (int i = 0; i < 3; i++) p.m(1, Message().u(1, 1).u(2, 0));
  p.m(2, Message().packed(1, {1}).packed(2, {1, 2, 3}));
  p.m(4, Message().u(1, 1).m(4, Message().u(1, 1)));
  p.m(5, Message().u(1, 1).u(2, 2));
  p.s(6, "").s(6, long_name).s(6, "f");
  std::vector<ProfileBlock> blocks;
  REQUIRE(pyroscope::import_profile(span_of(p.bytes), options_for(), &blocks).ok());
  std::map<std::string, uint64_t> totals;
  for (const ProfileBlock& b : blocks) totals[b.series.type] = b.tree.total();
  CHECK(totals == std::map<std::string, uint64_t>{{std::string(64, 'x'), 1}, {std::string(62, 'x') + "_2", 2}, {std::string(62, 'x') + "_3", 3}});
}
