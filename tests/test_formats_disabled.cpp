// The formats in a build without PYROSCOPE_WITH_ZLIB and PYROSCOPE_WITH_JSON: plain pprof and the text
// formats work; gzip and JSON are refused with an error that names the switch; pprof export falls back
// to plain protobuf. The test compiles the implementation itself, without the switches, because the
// shared one (pyroscope_impl) turns them on wherever zlib and nlohmann-json are installed.
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace {
pyroscope::ByteSpan span_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
}  // namespace

TEST_CASE("without the switches: gzip and JSON name the switch; plain pprof and text work") {
  REQUIRE_FALSE(pyroscope::formats_have_zlib());
  REQUIRE_FALSE(pyroscope::formats_have_json());
  pyroscope::Tree tree;
  tree.insert({"main", "work"}, 3);
  std::string pprof;
  REQUIRE(pyroscope::export_pprof({{"cpu", pyroscope::SeriesInfo(), &tree}}, pyroscope::ExportOptions(), &pprof).ok());
  CHECK(uint8_t(pprof[0]) == 0x0a);  // plain protobuf: field 1 (sample_type) first, no gzip header

  pyroscope::ImportOptions options;
  options.app = "app";
  std::vector<pyroscope::ProfileBlock> blocks;
  REQUIRE(pyroscope::import_profile(span_of(pprof), options, &blocks).ok());
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].tree.total() == 3);

  // A gzip stream (of anything): refused before inflating, naming the switch and the hook.
  const std::string gz("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  pyroscope::Status st = pyroscope::import_profile(span_of(gz), options, &blocks);
  CHECK(st.code() == pyroscope::StatusCode::feature_disabled);
  CHECK_MESSAGE(st.message().find("PYROSCOPE_WITH_ZLIB") != std::string::npos, st.message());
  CHECK_MESSAGE(st.message().find("ImportOptions::inflate") != std::string::npos, st.message());
  pyroscope::Format format;
  CHECK(pyroscope::detect_format(span_of(gz), &format).code() == pyroscope::StatusCode::feature_disabled);

  const std::string speedscope = "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",\"shared\":{\"frames\":[]},\"profiles\":[]}";
  st = pyroscope::import_profile(span_of(speedscope), options, &blocks);
  CHECK(st.code() == pyroscope::StatusCode::feature_disabled);
  CHECK_MESSAGE(st.message().find("PYROSCOPE_WITH_JSON") != std::string::npos, st.message());
  CHECK(blocks.size() == 1);

  REQUIRE(pyroscope::import_profile(span_of(std::string("a;b 2\n")), options, &blocks).ok());
  CHECK(blocks.size() == 2);
}
