// pyro serve: what a push means, without a socket. The HTTP layer (serve.cpp) hands over the path,
// the query string, the Content-Type and the body (Content-Encoding already undone, multipart parts
// already split); this file reads them as Grafana Pyroscope's handlers do (pkg/ingester/pyroscope,
// pkg/og/util/attime, api/model/labelset) and answers with the blocks to store or the HTTP status and
// message to refuse them with. docs/serve.md lists every rule and where we differ from Pyroscope.
//
// Thread safety: every function here is pure (any thread).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pyroscope.hpp"

namespace pyroscope::serve {

struct Limits {
  uint64_t max_body_bytes = uint64_t(16) << 20;      // a request body as sent (413 beyond)
  uint64_t max_inflated_bytes = uint64_t(64) << 20;  // any body or profile after gzip (413 beyond)
  int64_t max_span_seconds = 3600;     // a push may cover at most this much time (it is spread over its blocks)
  int64_t max_future_seconds = 600;    // pushes further ahead of the server's clock are refused
  int64_t retention_seconds = 0;       // pushes older than this are refused (0: any age)
  size_t max_tags = 30;                // per series, name tags and pprof labels together
  size_t max_series = 1000;            // per push (types x label sets)
};

// One part of a multipart/form-data body.
struct FormPart {
  std::string name;      // Content-Disposition's name: profile, prev_profile, sample_type_config
  std::string content;
};

struct Request {
  std::string path;          // "/ingest" or "/push.v1.PusherService/Push"
  std::string query;         // the raw query string (after '?'), still %-encoded
  std::string content_type;  // the Content-Type header
  std::string body;          // the body, Content-Encoding undone (empty for multipart)
  bool multipart = false;    // the body came as multipart/form-data: parts holds it
  std::vector<FormPart> parts;
};

struct Result {
  int status = 200;                  // HTTP status to answer: 200, or 400/413/415/422
  std::string message;               // why, when status is not 2xx
  std::string format;                // folded, lines, pprof, push (for the log)
  std::vector<ProfileBlock> blocks;  // what to store: one per series and 10 s block, samples > 0
  uint64_t samples = 0;              // the sum over blocks (the load test's "acknowledged")
  bool connect = false;              // a Connect call: errors go back as Connect JSON
  bool connect_json = false;         // its codec is JSON (else proto)
};

// Reads a request: /ingest (folded, lines, pprof; multipart), /push.v1.PusherService/Push (Connect,
// proto or JSON). now_ns is the server's clock (unix ns).
Result parse_request(const Request& request, const Limits& limits, int64_t now_ns);

// ---- The pieces, exposed for tests ----

// a=1&b=x%20y (also '+' for a space). A malformed %-escape is an error.
Status parse_query_string(std::string_view query, std::vector<std::pair<std::string, std::string>>* out);

// Pyroscope's from/until (attime.Parse): digits are unix seconds, or ms, µs, ns when 13, 16 or 19
// digits long (YYYYMMDD when 8 digits form a date); now, now-1h, now+30m, -15m (units s, m/min, h,
// d, w, mon/M, y). Anything else is an error (Pyroscope would read it as now). Result in unix ns.
Status parse_attime(std::string_view text, int64_t now_ns, int64_t* out_ns);

// name=app.type{k=v,...}: app [A-Za-z0-9_./-]+; the type is what follows the last dot and must be a
// profile type Pyroscope knows (no dot: cpu); tag keys [A-Za-z_][A-Za-z0-9_.]*, values without
// control characters or {}=," ; keys starting with __ are dropped, as Pyroscope drops them, and so
// are empty values (an empty value is no value). Spaces around keys and values are trimmed.
Status parse_series_name(std::string_view name, std::string* app, std::string* type, Tags* tags);
bool is_known_ingest_type(std::string_view type);

// Cuts a tree covering [from_ns, until_ns) into blocks of resolution_seconds, each node's self value
// shared in proportion to the time each block overlaps the range; the shares of a value add up to it
// exactly (cumulative rounding). until <= from: one block, at from.
void spread_tree(const Tree& tree, int64_t from_ns, int64_t until_ns, int64_t resolution_seconds,
                 std::vector<std::pair<int64_t, Tree>>* out);

// Undoes a Content-Encoding: gzip, x-gzip or deflate (zlib, or raw DEFLATE as some clients send it);
// identity or "" copies. The stream must end properly (a truncated body is an error, not a shorter
// body); output beyond max_output is too_large; other encodings (br, ...) are unsupported.
Status decode_content_encoding(std::string_view encoding, std::string_view in, uint64_t max_output, std::string* out);

// Inflates raw DEFLATE with zlib, refusing output beyond max_output (too_large): the importer's
// inflate hook (it reads the gzip wrapper itself), so pyro serve does not depend on how the header's
// implementation was compiled.
Status inflate_raw(ByteSpan deflated, uint64_t max_output, std::string* out);

}  // namespace pyroscope::serve
