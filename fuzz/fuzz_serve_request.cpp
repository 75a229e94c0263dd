// libFuzzer target: pyro serve's request parser (tools/serve_ingest.cpp), everything a push goes
// through after the HTTP layer: the query string (%-escapes, name=app.type{tags}, from/until in every
// form, sampleRate, units, aggregationType, format), and the body as folded, lines, pprof (plain or
// gzipped, alone or as multipart parts with sample_type_config) or a Connect PushRequest (proto or
// JSON). Input: one byte choosing the endpoint, Content-Type and multipart, then the query string up
// to the first '\n', then the body (for multipart: parts separated by "\n--\n", named profile,
// sample_type_config, prev_profile in that order). parse_request must answer without crashing with a
// status it documents; a 200 carries only blocks with samples, and they add up to its count; a refusal carries no blocks. Content-Encoding decoding is fuzzed on the body
// too (gzip and deflate, against the inflated cap).
// The implementation (with zlib and the JSON parser) is the build's pyroscope_impl (fuzz/CMakeLists.txt).
#include "pyroscope.hpp"

#include <cstdlib>
#include <string>
#include <string_view>

#include "serve_ingest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t newline = rest.find('\n');
  pyroscope::serve::Request request;
  static const char* const kContentTypes[] = {"text/plain", "application/octet-stream", "application/json",
                                              "application/proto", "binary/octet-stream+trie", "", "application/connect+proto",
                                              "multipart/form-data; boundary=x"};
  request.path = (selector & 1) ? "/push.v1.PusherService/Push" : "/ingest";
  request.content_type = kContentTypes[(selector >> 1) & 7];
  request.query = std::string(rest.substr(0, newline));
  const std::string_view body = newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
  if (selector & 16) {
    request.multipart = true;
    static const char* const kNames[] = {"profile", "sample_type_config", "prev_profile"};
    size_t start = 0;
    for (int i = 0; i < 3 && start <= body.size(); ++i) {
      const size_t end = body.find("\n--\n", start);
      request.parts.push_back({kNames[i], std::string(body.substr(start, end == std::string_view::npos ? body.npos : end - start))});
      if (end == std::string_view::npos) break;
      start = end + 4;
    }
  } else {
    request.body = std::string(body);
  }
  pyroscope::serve::Limits limits;
  limits.max_inflated_bytes = 1 << 20;  // the fuzzer's memory is small; the cap must hold
  limits.retention_seconds = 30 * 86400;
  const int64_t now_ns = int64_t(1800000000) * 1000000000;
  const pyroscope::serve::Result result = pyroscope::serve::parse_request(request, limits, now_ns);
  if (result.status == 200) {
    uint64_t samples = 0;
    for (const pyroscope::ProfileBlock& block : result.blocks) {
      if (block.tree.total() == 0) std::abort();
      samples += block.tree.total();
    }
    if (samples != result.samples) std::abort();
  } else {
    if (result.status != 400 && result.status != 404 && result.status != 413 && result.status != 415 && result.status != 422)
      std::abort();
    if (!result.blocks.empty() || result.message.empty()) std::abort();
  }
  if (selector & 32) {
    std::string out;
    const pyroscope::Status st =
        pyroscope::serve::decode_content_encoding((selector & 64) ? "deflate" : "gzip", body, limits.max_inflated_bytes, &out);
    if (st.ok() && out.size() > limits.max_inflated_bytes) std::abort();
  }
  return 0;
}
