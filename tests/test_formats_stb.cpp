// The inflate/deflate hooks with stb's zlib (Debian's libstb-dev), as the WebAssembly viewer would plug
// it in (docs/formats.md, "Switches and hooks"): no zlib in this implementation, yet gzipped pprof
// imports and exports; the hooks' output interoperates with zlib's (checked with zlib from the test).
// pyroscope-test: link=z
#define PYROSCOPE_NO_SAMPLER 1
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include <doctest/doctest.h>
#include <zlib.h>

#include <string>
#include <vector>

namespace {

pyroscope::ByteSpan span_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// The hooks, as docs/formats.md shows them.
pyroscope::Status stb_inflate(pyroscope::ByteSpan in, uint64_t max, std::string* out) {
  out->resize(size_t(max));  // stb decodes into a fixed buffer: the cap is its size
  const int n = stbi_zlib_decode_noheader_buffer(&(*out)[0], int(max), reinterpret_cast<const char*>(in.data), int(in.size));
  if (n < 0) return pyroscope::Status(pyroscope::StatusCode::too_large, "inflated size over the cap, or corrupt");
  out->resize(size_t(n));
  return pyroscope::Status();
}

pyroscope::Status stb_deflate(pyroscope::ByteSpan in, std::string* out) {
  int n = 0;
  unsigned char* z = stbi_zlib_compress(const_cast<unsigned char*>(in.data), int(in.size), &n, 6);
  if (!z || n < 6) return pyroscope::Status(pyroscope::StatusCode::io_error, "stbi_zlib_compress failed");
  out->assign(reinterpret_cast<const char*>(z) + 2, size_t(n) - 6);  // drop the zlib header and Adler-32
  STBIW_FREE(z);
  return pyroscope::Status();
}

std::string zlib_gunzip(const std::string& gz) {
  z_stream s{};
  REQUIRE(inflateInit2(&s, 15 + 16) == Z_OK);
  std::string out(1 << 20, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  s.avail_in = uInt(gz.size());
  s.next_out = reinterpret_cast<Bytef*>(&out[0]);
  s.avail_out = uInt(out.size());
  REQUIRE(inflate(&s, Z_FINISH) == Z_STREAM_END);
  out.resize(s.total_out);
  inflateEnd(&s);
  return out;
}

}  // namespace

TEST_CASE("stb's zlib as the inflate and deflate hooks: gzipped pprof out and in, readable by zlib") {
  REQUIRE_FALSE(pyroscope::formats_have_zlib());
  pyroscope::Tree tree;
  for (int i = 0; i < 200; i++) tree.insert({"main", i % 2 ? "parse" : "render", "f" + std::to_string(i % 37)}, 1 + i);
  pyroscope::ExportOptions eo;
  eo.deflate = stb_deflate;
  std::string gz;
  REQUIRE(pyroscope::export_pprof({{"cpu", pyroscope::SeriesInfo(), &tree}}, eo, &gz).ok());
  REQUIRE(gz.size() > 18);
  CHECK(uint8_t(gz[0]) == 0x1f);
  CHECK(uint8_t(gz[1]) == 0x8b);

  // zlib (an independent inflater) reads the gzip stream: header, DEFLATE data, CRC-32 and length.
  std::string plain;
  REQUIRE(pyroscope::export_pprof({{"cpu", pyroscope::SeriesInfo(), &tree}}, pyroscope::ExportOptions{0, 0, false, nullptr, ""}, &plain).ok());
  CHECK(zlib_gunzip(gz) == plain);

  pyroscope::ImportOptions options;
  options.app = "app";
  options.inflate = stb_inflate;
  std::vector<pyroscope::ProfileBlock> blocks;
  pyroscope::Format format;
  REQUIRE(pyroscope::detect_format(span_of(gz), &format, stb_inflate).ok());
  CHECK(format == pyroscope::Format::pprof);
  REQUIRE(pyroscope::import_profile(span_of(gz), options, &blocks).ok());
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].tree.total() == tree.total());
  CHECK(blocks[0].tree.to_folded() == tree.to_folded());

  // The cap holds with stb too: a cap below the profile's size is an error, not a cut profile.
  options.max_inflated_bytes = plain.size() - 1;
  blocks.clear();
  CHECK(pyroscope::import_profile(span_of(gz), options, &blocks).code() == pyroscope::StatusCode::too_large);
  CHECK(blocks.empty());
}
