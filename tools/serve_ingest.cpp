// pyro serve: reading pushes (serve_ingest.hpp). No sockets, no files: the fuzz target and the unit
// tests call parse_request() directly.
#include "serve_ingest.hpp"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

namespace pyroscope::serve {

namespace {

constexpr int64_t kNanos = 1000000000;

Result refuse(int status, std::string message) {
  Result r;
  r.status = status;
  r.message = std::move(message);
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// A printable rendering of text from outside for an error message: at most 80 bytes, control bytes
// as \xNN (messages go to logs and into JSON).
std::string shown(std::string_view s) {
  std::string out = "'";
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

bool is_app_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-' || c == '/';
}

// Tag rules: the sampler's (is_valid_tag in the header's implementation), which keep every stored
// name selectable: keys [A-Za-z_][A-Za-z0-9_.]*, values without control bytes or {}=,".
Status check_tag(std::string_view key, std::string_view value) {
  if (key.empty() || key.size() > 128) return Status(StatusCode::invalid_argument, "tag key " + shown(key) + " is empty or longer than 128 bytes");
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && ((c >= '0' && c <= '9') || c == '.'));
    if (!ok) return Status(StatusCode::invalid_argument, "tag key " + shown(key) + " must match [A-Za-z_][A-Za-z0-9_.]*");
  }
  if (value.size() > 1024) return Status(StatusCode::invalid_argument, "value of tag " + shown(key) + " is longer than 1024 bytes");
  for (char c : value) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '{' || c == '}' || c == ',' || c == '=' || c == '"')
      return Status(StatusCode::invalid_argument,
                    "value " + shown(value) + " of tag " + shown(key) + " holds a control character or one of {}=,\"");
  }
  return Status();
}

// Adds key=value unless Pyroscope would drop it (keys starting with __, empty values); the last
// value of a repeated key wins, as in Pyroscope's map.
Status add_tag(Tags* tags, std::string_view key, std::string_view value) {
  if (key.size() >= 2 && key[0] == '_' && key[1] == '_') return Status();
  if (value.empty()) return Status();
  Status st = check_tag(key, value);
  if (!st.ok()) return st;
  for (Tag& t : *tags)
    if (t.key == key) {
      t.value = std::string(value);
      return Status();
    }
  tags->push_back({std::string(key), std::string(value)});
  return Status();
}

// --- protobuf, as far as PushRequest needs it ------------------------------------------------------

struct ProtoReader {
  const uint8_t* p;
  const uint8_t* end;
  bool varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) return false;
      const uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  // Next field: number, wire type, and for length-delimited fields the bytes. False at the end or on
  // malformed input (error set).
  bool next(uint32_t* field, uint32_t* wire, std::string_view* bytes, std::string* error) {
    if (p >= end) return false;
    uint64_t key;
    if (!varint(&key)) return fail(error, "truncated field key");
    *field = uint32_t(key >> 3);
    *wire = uint32_t(key & 7);
    uint64_t v;
    switch (*wire) {
      case 0:
        if (!varint(&v)) return fail(error, "truncated varint");
        return true;
      case 1:
        if (end - p < 8) return fail(error, "truncated fixed64");
        p += 8;
        return true;
      case 5:
        if (end - p < 4) return fail(error, "truncated fixed32");
        p += 4;
        return true;
      case 2:
        if (!varint(&v)) return fail(error, "truncated length");
        if (v > uint64_t(end - p)) return fail(error, "field " + std::to_string(*field) + " claims " + std::to_string(v) +
                                                          " bytes, " + std::to_string(end - p) + " remain");
        *bytes = std::string_view(reinterpret_cast<const char*>(p), size_t(v));
        p += v;
        return true;
      default:
        return fail(error, "wire type " + std::to_string(*wire) + " is not supported");
    }
  }
  bool fail(std::string* error, std::string message) {
    *error = std::move(message);
    p = end;
    return false;
  }
};

ProtoReader reader_of(std::string_view bytes) {
  return ProtoReader{reinterpret_cast<const uint8_t*>(bytes.data()), reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size()};
}

struct PushSeries {
  std::vector<std::pair<std::string, std::string>> labels;
  std::vector<std::string> profiles;
};

bool decode_push_proto(std::string_view body, std::vector<PushSeries>* out, std::string* error) {
  ProtoReader r = reader_of(body);
  uint32_t field, wire;
  std::string_view bytes;
  error->clear();
  while (r.next(&field, &wire, &bytes, error)) {
    if (field != 1 || wire != 2) continue;  // series
    PushSeries series;
    ProtoReader s = reader_of(bytes);
    std::string_view inner;
    while (s.next(&field, &wire, &inner, error)) {
      if (wire != 2) continue;
      if (field == 1) {  // LabelPair
        std::pair<std::string, std::string> label;
        ProtoReader l = reader_of(inner);
        std::string_view text;
        while (l.next(&field, &wire, &text, error)) {
          if (wire != 2) continue;
          if (field == 1) label.first = std::string(text);
          if (field == 2) label.second = std::string(text);
        }
        if (!error->empty()) return false;
        series.labels.push_back(std::move(label));
      } else if (field == 2) {  // RawSample
        ProtoReader sample = reader_of(inner);
        std::string_view raw;
        std::string profile;
        while (sample.next(&field, &wire, &raw, error))
          if (field == 1 && wire == 2) profile = std::string(raw);
        if (!error->empty()) return false;
        series.profiles.push_back(std::move(profile));
      }
    }
    if (!error->empty()) return false;
    out->push_back(std::move(series));
  }
  return error->empty();
}

bool base64_decode(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') break;
    else return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

// Connect's JSON form of PushRequest (protojson): {"series": [{"labels": [{"name", "value"}],
// "samples": [{"rawProfile": base64, "ID"}]}]}. Parsed without exceptions: every type is checked.
bool decode_push_json(std::string_view body, std::vector<PushSeries>* out, std::string* error) {
  using nlohmann::json;
  const json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    *error = "the body is not a JSON object";
    return false;
  }
  const auto series_it = doc.find("series");
  if (series_it == doc.end() || series_it->is_null()) return true;
  if (!series_it->is_array()) {
    *error = "series is not an array";
    return false;
  }
  for (size_t i = 0; i < series_it->size(); ++i) {
    const json& s = (*series_it)[i];
    const std::string where = "series[" + std::to_string(i) + "]";
    if (!s.is_object()) {
      *error = where + " is not an object";
      return false;
    }
    PushSeries series;
    const auto labels = s.find("labels");
    if (labels != s.end() && !labels->is_null()) {
      if (!labels->is_array()) {
        *error = where + ".labels is not an array";
        return false;
      }
      for (const json& l : *labels) {
        if (!l.is_object()) {
          *error = where + ".labels holds a value that is not an object";
          return false;
        }
        const auto name = l.find("name");
        const auto value = l.find("value");
        if ((name != l.end() && !name->is_string()) || (value != l.end() && !value->is_string())) {
          *error = where + ".labels: name and value must be strings";
          return false;
        }
        series.labels.emplace_back(name == l.end() ? std::string() : name->get<std::string>(),
                                   value == l.end() ? std::string() : value->get<std::string>());
      }
    }
    const auto samples = s.find("samples");
    if (samples != s.end() && !samples->is_null()) {
      if (!samples->is_array()) {
        *error = where + ".samples is not an array";
        return false;
      }
      for (const json& sample : *samples) {
        if (!sample.is_object()) {
          *error = where + ".samples holds a value that is not an object";
          return false;
        }
        auto raw = sample.find("rawProfile");
        if (raw == sample.end()) raw = sample.find("raw_profile");
        if (raw == sample.end() || !raw->is_string()) {
          *error = where + ": a sample without rawProfile (base64)";
          return false;
        }
        std::string profile;
        if (!base64_decode(raw->get_ref<const std::string&>(), &profile)) {
          *error = where + ": rawProfile is not base64";
          return false;
        }
        series.profiles.push_back(std::move(profile));
      }
    }
    out->push_back(std::move(series));
  }
  return true;
}

// --- sample_type_config -----------------------------------------------------------------------------

struct SampleTypeConfig {
  std::string units;
  std::string display_name;
  std::string aggregation;
};

bool parse_sample_type_config(std::string_view text, std::map<std::string, SampleTypeConfig>* out, std::string* error) {
  using nlohmann::json;
  const json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    *error = "sample_type_config is not a JSON object";
    return false;
  }
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (!it.value().is_object()) {
      *error = "sample_type_config[" + shown(it.key()) + "] is not an object";
      return false;
    }
    SampleTypeConfig c;
    auto text_field = [&](const char* name, std::string* into) {
      const auto f = it.value().find(name);
      if (f == it.value().end() || f->is_null()) return true;
      if (!f->is_string()) return false;
      *into = f->get<std::string>();
      return true;
    };
    if (!text_field("units", &c.units) || !text_field("display-name", &c.display_name) ||
        !text_field("aggregation", &c.aggregation)) {
      *error = "sample_type_config[" + shown(it.key()) + "]: units, display-name and aggregation must be strings";
      return false;
    }
    (*out)[it.key()] = c;
  }
  return true;
}

// Pyroscope's units (pkg/og/storage/metadata) in ours; unknown names are kept when they are words.
bool map_units(std::string_view units, std::string* out) {
  if (units == "lock_nanoseconds") *out = "nanoseconds";
  else if (units == "lock_samples" || units == "exceptions") *out = "count";
  else if (units == "trace_samples") *out = "samples";
  else {
    if (units.empty() || units.size() > 64) return false;
    for (char c : units)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
    *out = std::string(units);
  }
  return true;
}

bool parse_aggregation(std::string_view text, Aggregation* out) {
  if (text == "sum") *out = Aggregation::sum;
  else if (text == "average" || text == "avg") *out = Aggregation::average;
  else return false;
  return true;
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Checks a push's time range against the server's clock and the retention, and spreads each tree
// over the blocks of [from, until) (for pprof pushes: of the profile's time), appending to result.
bool place(Result* result, const Limits& limits, int64_t now_ns, int64_t from_ns, int64_t until_ns,
           std::vector<ProfileBlock>* imported) {
  if (until_ns < from_ns) until_ns = from_ns;
  if (until_ns - from_ns > limits.max_span_seconds * kNanos) {
    *result = refuse(400, "the push covers " + std::to_string((until_ns - from_ns) / kNanos) +
                              " s (from .. until); at most " + std::to_string(limits.max_span_seconds) + " s are accepted");
    return false;
  }
  if (from_ns > now_ns + limits.max_future_seconds * kNanos) {
    *result = refuse(400, "the push starts " + std::to_string((from_ns - now_ns) / kNanos) +
                              " s after the server's clock (at most " + std::to_string(limits.max_future_seconds) +
                              " s ahead are accepted; is the client's clock right?)");
    return false;
  }
  if (limits.retention_seconds > 0 && until_ns < now_ns - limits.retention_seconds * kNanos) {
    *result = refuse(400, "the push ends " + std::to_string((now_ns - until_ns) / kNanos) +
                              " s ago, before the retention period (" + std::to_string(limits.retention_seconds) + " s)");
    return false;
  }
  for (ProfileBlock& block : *imported) {
    std::vector<std::pair<int64_t, Tree>> parts;
    spread_tree(block.tree, from_ns, until_ns, kDefaultResolutionSeconds, &parts);
    for (auto& [start, tree] : parts) {
      ProfileBlock out;
      out.series = block.series;
      out.info = block.info;
      out.block_start = start;
      out.tree = std::move(tree);
      result->samples += out.tree.total();
      result->blocks.push_back(std::move(out));
    }
  }
  return true;
}

// A pprof profile (plain or gzipped) into typed blocks: one per sample type and label set.
// sample_type_config renames types (display-name), sets their units and aggregation.
bool import_pprof(Result* result, const Limits& limits, std::string_view bytes, const std::string& app,
                  const Tags& tags, const std::map<std::string, SampleTypeConfig>* config, int64_t now_ns,
                  std::vector<ProfileBlock>* out, int64_t* time_ns, int64_t* duration_ns) {
  ImportOptions options;
  options.source_name = "profile";
  options.app = app;
  options.tags = tags;
  options.time = now_ns / kNanos;
  options.strict = true;
  options.has_format = true;
  options.format = Format::pprof;
  options.max_inflated_bytes = limits.max_inflated_bytes;
  // The inflated profile is read again below for its time fields: kept from the importer's one inflate.
  std::string inflated;
  bool was_inflated = false;
  options.inflate = [&inflated, &was_inflated](ByteSpan in, uint64_t max, std::string* out) {
    const Status st = inflate_raw(in, max, out);
    if (st.ok()) {
      inflated = *out;
      was_inflated = true;
    }
    return st;
  };
  std::vector<ProfileBlock> blocks;
  ImportReport report;
  const ByteSpan span{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
  const Status st = import_profile(span, options, &blocks, &report);
  if (!st.ok()) {
    *result = refuse(st.code() == StatusCode::too_large ? 413 : 400, st.message());
    return false;
  }
  // The profile's own time (time_nanos, duration_nanos) for pushes that say nothing else: read from
  // the protobuf's fields 9 and 10, as the importer placed the blocks by field 9.
  *time_ns = 0;
  *duration_ns = 0;
  {
    const std::string_view plain = was_inflated ? std::string_view(inflated) : bytes;
    ProtoReader r = reader_of(plain);
    uint32_t field, wire;
    std::string_view unused;
    std::string error;
    while (r.p < r.end) {
      const uint8_t* before = r.p;
      uint64_t key;
      if (!r.varint(&key)) break;
      if ((key >> 3) == 9 || (key >> 3) == 10) {
        uint64_t v;
        if ((key & 7) != 0 || !r.varint(&v)) break;
        ((key >> 3) == 9 ? *time_ns : *duration_ns) = int64_t(v);
        continue;
      }
      r.p = before;
      if (!r.next(&field, &wire, &unused, &error)) break;
    }
  }
  for (ProfileBlock& b : blocks) {
    const std::string original = b.series.type;
    if (config) {
      auto it = config->find(original);
      if (it != config->end()) {
        const SampleTypeConfig& c = it->second;
        if (!c.display_name.empty() && is_valid_profile_type(c.display_name)) {
          // A display name that another sample type of the profile already has keeps its own name.
          bool taken = false;
          for (const ProfileBlock& other : blocks) taken = taken || (other.series.type == c.display_name && &other != &b);
          if (!taken) b.series.type = c.display_name;
        }
        std::string unit;
        if (!c.units.empty() && map_units(c.units, &unit)) b.info.unit = unit;
        Aggregation aggregation;
        if (!c.aggregation.empty() && parse_aggregation(c.aggregation, &aggregation)) b.info.aggregation = aggregation;
      }
    } else if (original == "space" || original == "objects") {
      // Node's heap profile (@datadog/pprof): a snapshot of live memory, averaged like inuse_*.
      b.info.aggregation = Aggregation::average;
    }
    if (b.series.tags.size() > limits.max_tags) {
      *result = refuse(400, "series " + b.series.to_string() + " has " + std::to_string(b.series.tags.size()) +
                                " tags (name tags and pprof labels); at most " + std::to_string(limits.max_tags));
      return false;
    }
  }
  for (ProfileBlock& b : blocks) out->push_back(std::move(b));
  return true;
}

Result parse_connect(const Request& request, const Limits& limits, int64_t now_ns) {
  Result result;
  result.format = "push";
  result.connect = true;
  const std::string_view type = trim(std::string_view(request.content_type).substr(0, request.content_type.find(';')));
  if (type == "application/json") {
    result.connect_json = true;
  } else if (type != "application/proto" && type != "application/x-protobuf" && type != "application/protobuf") {
    Result r = refuse(415, "Content-Type " + shown(request.content_type) +
                               ": this Connect endpoint takes application/proto or application/json");
    r.connect = true;
    return r;
  }
  std::vector<PushSeries> series;
  std::string error;
  const bool decoded = result.connect_json ? decode_push_json(request.body, &series, &error)
                                           : decode_push_proto(request.body, &series, &error);
  if (!decoded) {
    Result r = refuse(400, "PushRequest: " + error);
    r.connect = true;
    r.connect_json = result.connect_json;
    return r;
  }
  for (size_t i = 0; i < series.size(); ++i) {
    const PushSeries& s = series[i];
    std::string app;
    Tags tags;
    for (const auto& [name, value] : s.labels)
      if (name == "service_name") app = value;
    auto fail = [&](int status, std::string message) {
      Result r = refuse(status, "series[" + std::to_string(i) + "]: " + message);
      r.connect = true;
      r.connect_json = result.connect_json;
      return r;
    };
    if (app.empty() || app.size() > 256 || !std::all_of(app.begin(), app.end(), is_app_char))
      return fail(400, "label service_name " + shown(app) + " must be a name of [A-Za-z0-9_./-]");
    for (const auto& [name, value] : s.labels) {
      if (name == "service_name") continue;
      const Status st = add_tag(&tags, name, value);
      if (!st.ok()) return fail(400, st.message());
    }
    for (const std::string& profile : s.profiles) {
      std::vector<ProfileBlock> blocks;
      int64_t time_ns = 0, duration_ns = 0;
      Result failure;
      if (!import_pprof(&failure, limits, profile, app, tags, nullptr, now_ns, &blocks, &time_ns, &duration_ns)) {
        failure.connect = true;
        failure.connect_json = result.connect_json;
        failure.message = "series[" + std::to_string(i) + "]: " + failure.message;
        return failure;
      }
      // Pyroscope's fixTime: a profile without a time (or from 1970) is now.
      if (time_ns < 365 * 24 * 3600 * kNanos) time_ns = now_ns;
      if (duration_ns < 0 || duration_ns > limits.max_span_seconds * kNanos) duration_ns = 0;
      if (!place(&result, limits, now_ns, time_ns, time_ns + duration_ns, &blocks)) {
        result.connect = true;
        return result;
      }
    }
  }
  return result;
}

}  // namespace

// ---- Query string, times, names ----------------------------------------------------------------------

Status parse_query_string(std::string_view query, std::vector<std::pair<std::string, std::string>>* out) {
  out->clear();
  auto decode = [](std::string_view in, std::string* to) {
    to->clear();
    for (size_t i = 0; i < in.size(); ++i) {
      const char c = in[i];
      if (c == '+') {
        to->push_back(' ');
      } else if (c == '%') {
        auto hex = [](char h) {
          if (h >= '0' && h <= '9') return h - '0';
          if (h >= 'a' && h <= 'f') return h - 'a' + 10;
          if (h >= 'A' && h <= 'F') return h - 'A' + 10;
          return -1;
        };
        if (i + 2 >= in.size()) return false;
        const int hi = hex(in[i + 1]);
        const int lo = hex(in[i + 2]);
        if (hi < 0 || lo < 0) return false;
        to->push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
      } else {
        to->push_back(c);
      }
    }
    return true;
  };
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    std::string key, value;
    if (!decode(item.substr(0, eq), &key) ||
        !decode(eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1), &value))
      return Status(StatusCode::invalid_argument, "query string: malformed %-escape in " + shown(item));
    out->emplace_back(std::move(key), std::move(value));
  }
  return Status();
}

Status parse_attime(std::string_view original, int64_t now_ns, int64_t* out_ns) {
  // attime.Parse drops spaces, underscores and commas before reading.
  std::string s;
  for (char c : trim(original))
    if (c != ' ' && c != '_' && c != ',') s.push_back(c);
  auto bad = [&](const std::string& why) {
    return Status(StatusCode::invalid_argument,
                  shown(original) + " is not a time (" + why +
                      "; expected unix seconds, or ms/us/ns as 13/16/19 digits, or now, now-1h, now+30m)");
  };
  if (all_digits(s)) {
    if (s.size() > 19) return bad("too many digits");
    if (s.size() == 8) {
      // YYYYMMDD, when it is a date after 1900 (attime's rule).
      const int year = std::stoi(s.substr(0, 4)), month = std::stoi(s.substr(4, 2)), day = std::stoi(s.substr(6, 2));
      if (year > 1900 && year < 2200 && month >= 1 && month <= 12 && day >= 1 && day <= 31) {  // < 2200: ns fit
        // days_from_civil (Howard Hinnant's algorithm), UTC midnight.
        const int y = year - (month <= 2);
        const int era = y / 400;
        const unsigned yoe = unsigned(y - era * 400);
        const unsigned doy = unsigned((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1);
        const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        const int64_t days = int64_t(era) * 146097 + int64_t(doe) - 719468;
        *out_ns = days * 86400 * kNanos;
        return Status();
      }
    }
    const uint64_t v = std::stoull(s);
    if (s.size() == 19) {
      if (v > uint64_t(INT64_MAX)) return bad("out of range");
      *out_ns = int64_t(v);
    } else if (s.size() == 16) {  // every time is at most 9e9 s (year 2255), so that ns fit in int64
      if (v > uint64_t(9000000000) * 1000000) return bad("microseconds out of range");
      *out_ns = int64_t(v) * 1000;
    } else if (s.size() == 13) {
      if (v > uint64_t(9000000000) * 1000) return bad("milliseconds out of range");
      *out_ns = int64_t(v) * 1000000;
    } else {
      if (v > uint64_t(9000000000)) return bad("seconds out of range");
      *out_ns = int64_t(v) * kNanos;
    }
    return Status();
  }
  // A reference (only "now" is meant; attime ignores it) and an offset: -1h, +30m, -1h30m.
  size_t sign_at = s.find_first_of("+-");
  const std::string reference = s.substr(0, sign_at);
  if (!reference.empty() && reference != "now") return bad("unknown reference " + shown(reference));
  if (sign_at == std::string::npos) {
    if (reference.empty()) return bad("empty");
    *out_ns = now_ns;
    return Status();
  }
  const int sign = s[sign_at] == '-' ? -1 : 1;
  std::string_view offset = std::string_view(s).substr(sign_at + 1);
  if (offset.empty()) return bad("no offset after the sign");
  int64_t seconds = 0;
  while (!offset.empty()) {
    size_t digits = 0;
    while (digits < offset.size() && offset[digits] >= '0' && offset[digits] <= '9') digits++;
    if (digits == 0 || digits > 9) return bad("offset " + shown(offset));
    const int64_t n = std::stoll(std::string(offset.substr(0, digits)));
    offset.remove_prefix(digits);
    size_t letters = 0;
    while (letters < offset.size() && !(offset[letters] >= '0' && offset[letters] <= '9')) letters++;
    const std::string_view unit = offset.substr(0, letters);
    offset.remove_prefix(letters);
    int64_t multiplier = 0;
    auto starts = [&](std::string_view prefix) { return unit.substr(0, prefix.size()) == prefix; };
    if (starts("s")) multiplier = 1;
    else if (starts("mon") || starts("M")) multiplier = 3600 * 24 * 30;
    else if (starts("min") || starts("m")) multiplier = 60;
    else if (starts("h")) multiplier = 3600;
    else if (starts("d")) multiplier = 3600 * 24;
    else if (starts("w")) multiplier = 3600 * 24 * 7;
    else if (starts("y")) multiplier = 3600 * 24 * 365;
    if (multiplier == 0) return bad("unit " + shown(unit) + " (s m h d w mon y)");
    seconds += n * multiplier;  // at most 1e9 x a year's seconds: no overflow before the check
    if (seconds > int64_t(100) * 365 * 86400) return bad("offset out of range (at most 100 years)");
  }
  *out_ns = now_ns + sign * seconds * kNanos;
  // Every time is in [1970, 2255]: differences of two times fit in int64 nanoseconds.
  if (*out_ns < 0 || *out_ns > int64_t(9000000000) * kNanos) return bad("out of range (1970 to 2255)");
  return Status();
}

bool is_known_ingest_type(std::string_view t) {
  // convertMetadata in Grafana Pyroscope's ingest adapter: every type it knows.
  static const char* const known[] = {
      "cpu", "wall", "itimer", "inuse_objects", "inuse_space", "alloc_objects", "alloc_space", "goroutines",
      "mutex_count", "mutex_duration", "block_count", "block_duration", "alloc_in_new_tlab_objects",
      "alloc_in_new_tlab_bytes", "alloc_outside_tlab_objects", "alloc_outside_tlab_bytes", "lock_count",
      "lock_duration", "live", "exceptions", "seconds", "nanoseconds", "microseconds", "milliseconds", "bytes"};
  for (const char* k : known)
    if (t == k) return true;
  return false;
}

Status parse_series_name(std::string_view name, std::string* app, std::string* type, Tags* tags) {
  tags->clear();
  if (name.size() > 65536) return Status(StatusCode::invalid_argument, "name is longer than 64 KiB");
  const size_t brace = name.find('{');
  const std::string_view service = trim(name.substr(0, brace));
  if (service.empty()) return Status(StatusCode::invalid_argument, "name " + shown(name) + ": the application name is empty");
  for (char c : service)
    if (!is_app_char(c))
      return Status(StatusCode::invalid_argument, "name " + shown(name) + ": the application name may hold only "
                                                  "letters, digits and _ . - / (found " + shown(std::string(1, c)) + ")");
  const size_t dot = service.rfind('.');
  if (dot == std::string_view::npos) {
    *app = std::string(service);
    *type = kDefaultProfileType;
  } else {
    *app = std::string(service.substr(0, dot));
    *type = std::string(service.substr(dot + 1));
    if (!is_known_ingest_type(*type))
      return Status(StatusCode::invalid_argument,
                    "name " + shown(name) + ": unknown profile type " + shown(*type) +
                        " (the part after the last dot; an application whose name has dots needs its type: my.app.cpu)");
    if (app->empty()) return Status(StatusCode::invalid_argument, "name " + shown(name) + ": the application name is empty");
  }
  if (app->size() > 256) return Status(StatusCode::invalid_argument, "the application name is longer than 256 bytes");
  if (brace == std::string_view::npos) return Status();
  // Tags: labelset.Parse reads key=value pairs separated by commas up to the first '}'.
  std::string_view rest = name.substr(brace + 1);
  const size_t close = rest.find('}');
  if (close != std::string_view::npos) rest = rest.substr(0, close);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (trim(item).empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return Status(StatusCode::invalid_argument, "name: tag " + shown(item) + " has no '='");
    const Status st = add_tag(tags, trim(item.substr(0, eq)), trim(item.substr(eq + 1)));
    if (!st.ok()) return Status(StatusCode::invalid_argument, "name: " + st.message());
  }
  std::sort(tags->begin(), tags->end());
  return Status();
}

// ---- Spreading a push over its blocks -----------------------------------------------------------------

void spread_tree(const Tree& tree, int64_t from_ns, int64_t until_ns, int64_t resolution_seconds,
                 std::vector<std::pair<int64_t, Tree>>* out) {
  out->clear();
  const int64_t step = resolution_seconds * kNanos;
  const int64_t first = floor_div(from_ns, step);
  if (until_ns <= from_ns || floor_div(until_ns - 1, step) == first) {
    out->emplace_back(first * resolution_seconds, tree);
    if (out->back().second.total() == 0) out->clear();
    return;
  }
  const int64_t last = floor_div(until_ns - 1, step);
  const size_t count = size_t(last - first + 1);
  const unsigned __int128 duration = static_cast<unsigned __int128>(until_ns - from_ns);
  // cut[k]: ns from `from` to the end of block k (the last one ends at until).
  std::vector<int64_t> cut(count);
  for (size_t k = 0; k < count; ++k) cut[k] = std::min(until_ns, (first + int64_t(k) + 1) * step) - from_ns;
  std::vector<Tree> parts;
  parts.reserve(count);
  for (size_t k = 0; k < count; ++k) parts.emplace_back(tree.shared_symbols());
  std::vector<uint32_t> path;
  for (uint32_t node = 1; node < tree.node_count(); ++node) {
    const uint64_t self = tree.self(node);
    if (self == 0) continue;
    path.clear();
    for (uint32_t n = node; n != Tree::kRoot; n = tree.parent(n)) path.push_back(tree.symbol(n));
    std::reverse(path.begin(), path.end());
    uint64_t before = 0;
    for (size_t k = 0; k < count; ++k) {
      const uint64_t upto = uint64_t(static_cast<unsigned __int128>(self) * static_cast<unsigned __int128>(cut[k]) / duration);
      if (upto > before) parts[k].insert_ids(path.data(), path.size(), upto - before);
      before = upto;
    }
  }
  // Samples with no frames at all (the root's self) go to the first block.
  if (tree.self(Tree::kRoot) > 0) parts[0].insert_ids(nullptr, 0, tree.self(Tree::kRoot));
  for (size_t k = 0; k < count; ++k)
    if (parts[k].total() > 0) out->emplace_back((first + int64_t(k)) * resolution_seconds, std::move(parts[k]));
}

namespace {

Status zlib_inflate(ByteSpan in, int window_bits, uint64_t max_output, std::string* out) {
  z_stream stream;
  std::memset(&stream, 0, sizeof stream);
  if (inflateInit2(&stream, window_bits) != Z_OK) return Status(StatusCode::io_error, "zlib: inflateInit2 failed");
  out->clear();
  std::vector<char> buffer(64 * 1024);
  stream.next_in = const_cast<Bytef*>(in.data);
  stream.avail_in = uInt(std::min<size_t>(in.size, size_t(1) << 31));
  Status result;
  for (;;) {
    stream.next_out = reinterpret_cast<Bytef*>(buffer.data());
    stream.avail_out = uInt(buffer.size());
    const int rc = inflate(&stream, Z_NO_FLUSH);
    const size_t produced = buffer.size() - stream.avail_out;
    if (produced > max_output - out->size()) {
      result = Status(StatusCode::too_large, "inflates to more than " + std::to_string(max_output) +
                                                 " bytes (the limit on inflated input; a gzip bomb?)");
      break;
    }
    out->append(buffer.data(), produced);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR || (rc == Z_OK && produced == 0 && stream.avail_in == 0)) {
      result = Status(StatusCode::parse_error, "compressed data is truncated");
      break;
    }
    if (rc != Z_OK) {
      result = Status(StatusCode::parse_error,
                      std::string("compressed data is corrupt (zlib: ") + (stream.msg ? stream.msg : "error") + ")");
      break;
    }
  }
  inflateEnd(&stream);
  return result;
}

}  // namespace

Status inflate_raw(ByteSpan in, uint64_t max_output, std::string* out) { return zlib_inflate(in, -15, max_output, out); }

Status decode_content_encoding(std::string_view encoding, std::string_view in, uint64_t max_output, std::string* out) {
  std::string e(trim(encoding));
  for (char& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (e.empty() || e == "identity") {
    if (in.size() > max_output) return Status(StatusCode::too_large, "the body is larger than " + std::to_string(max_output) + " bytes");
    out->assign(in.data(), in.size());
    return Status();
  }
  const ByteSpan span{reinterpret_cast<const uint8_t*>(in.data()), in.size()};
  if (e == "gzip" || e == "x-gzip") return zlib_inflate(span, 15 + 16, max_output, out);
  if (e == "deflate") {
    // RFC 9110's deflate is a zlib stream; some clients send raw DEFLATE: the zlib header tells them apart.
    const bool zlib_header = in.size() >= 2 && (uint8_t(in[0]) & 0x0f) == 8 && ((uint8_t(in[0]) << 8) | uint8_t(in[1])) % 31 == 0;
    return zlib_inflate(span, zlib_header ? 15 : -15, max_output, out);
  }
  return Status(StatusCode::unsupported, "Content-Encoding " + shown(encoding) + " is not supported (gzip and deflate are)");
}

// ---- /ingest -----------------------------------------------------------------------------------------

Result parse_request(const Request& request, const Limits& limits, int64_t now_ns) {
  if (request.path == "/push.v1.PusherService/Push") return parse_connect(request, limits, now_ns);
  if (request.path != "/ingest") return refuse(404, "no such endpoint: " + shown(request.path));

  std::vector<std::pair<std::string, std::string>> params;
  Status st = parse_query_string(request.query, &params);
  if (!st.ok()) return refuse(400, st.message());
  // Pyroscope reads each parameter with Query().Get: the first value of a key.
  std::map<std::string, std::string> q;
  for (auto& [k, v] : params) q.emplace(k, v);
  auto get = [&](const char* key) -> const std::string* {
    auto it = q.find(key);
    return it == q.end() ? nullptr : &it->second;
  };

  std::string app, type;
  Tags tags;
  const std::string* name = get("name");
  if (!name || name->empty()) return refuse(400, "name: missing (name=app.type{key=value,...})");
  st = parse_series_name(*name, &app, &type, &tags);
  if (!st.ok()) return refuse(400, st.message());

  int64_t from_ns = now_ns, until_ns = now_ns;
  const bool has_from = get("from") && !get("from")->empty();
  const bool has_until = get("until") && !get("until")->empty();
  if (has_from && !(st = parse_attime(*get("from"), now_ns, &from_ns)).ok()) return refuse(400, "from: " + st.message());
  if (has_until && !(st = parse_attime(*get("until"), now_ns, &until_ns)).ok()) return refuse(400, "until: " + st.message());

  int64_t sample_rate = 100;  // Pyroscope's types.DefaultSampleRate
  if (const std::string* v = get("sampleRate"); v && !v->empty()) {
    if (!all_digits(*v) || v->size() > 10 || std::stoll(*v) > 1000000000)
      return refuse(400, "sampleRate " + shown(*v) + " is not an integer from 0 to 1000000000 (samples per second)");
    sample_rate = std::stoll(*v);
  }
  std::string spy = "unknown";
  if (const std::string* v = get("spyName"); v && !v->empty()) spy = *v;
  st = add_tag(&tags, "pyroscope_spy", spy);
  if (!st.ok()) return refuse(400, "spyName: " + st.message());
  std::sort(tags.begin(), tags.end());
  if (tags.size() > limits.max_tags)
    return refuse(400, "name: " + std::to_string(tags.size()) + " tags; at most " + std::to_string(limits.max_tags));

  SeriesInfo info = default_series_info(type);
  if (const std::string* v = get("units"); v && !v->empty())
    if (!map_units(*v, &info.unit)) return refuse(400, "units " + shown(*v) + " is not a unit name (samples, objects, bytes, ...)");
  if (const std::string* v = get("aggregationType"); v && !v->empty())
    if (!parse_aggregation(*v, &info.aggregation)) return refuse(400, "aggregationType " + shown(*v) + " is not sum or average");

  // The format, as readInputRawDataFromRequest picks it.
  const std::string* format_param = get("format");
  const std::string format = format_param ? *format_param : "";
  const bool multipart = request.multipart || request.content_type.find("multipart/form-data") != std::string::npos;
  Result result;
  if (format == "trie" || format == "tree" || format == "jfr" || format == "speedscope" ||
      request.content_type == "binary/octet-stream+trie" || request.content_type == "binary/octet-stream+tree")
    return refuse(415, "format " + shown(format.empty() ? request.content_type : format) +
                           " is not supported by pyro serve (folded, lines and pprof are)");
  if (format == "pprof" || (format.empty() && multipart)) {
    result.format = "pprof";
    std::string_view profile = request.body;
    std::map<std::string, SampleTypeConfig> config;
    bool has_config = false;
    if (multipart) {
      const FormPart* profile_part = nullptr;
      for (const FormPart& part : request.parts) {
        if (part.name == "profile") profile_part = &part;
        if (part.name == "prev_profile" && !part.content.empty())
          return refuse(400, "prev_profile: cumulative profiles with a previous profile are not supported (Pyroscope "
                             "refuses them too: update github.com/grafana/pyroscope-go)");
        if (part.name == "sample_type_config") {
          std::string error;
          if (!parse_sample_type_config(part.content, &config, &error)) return refuse(400, error);
          has_config = true;
        }
      }
      if (!profile_part) return refuse(400, "multipart/form-data without a 'profile' part");
      profile = profile_part->content;
    }
    if (profile.empty()) return result;  // Pyroscope accepts an empty profile and stores nothing
    std::vector<ProfileBlock> blocks;
    int64_t time_ns = 0, duration_ns = 0;
    if (!import_pprof(&result, limits, profile, app, tags, has_config ? &config : nullptr, now_ns, &blocks, &time_ns,
                      &duration_ns))
      return result;
    if (!has_from && !has_until && time_ns >= 365 * 24 * 3600 * kNanos) {
      from_ns = time_ns;
      until_ns = time_ns + std::max<int64_t>(0, std::min(duration_ns, limits.max_span_seconds * kNanos));
    }
    if (blocks.size() > limits.max_series)
      return refuse(400, "the profile makes " + std::to_string(blocks.size()) + " series (types x label sets); at most " +
                             std::to_string(limits.max_series));
    place(&result, limits, now_ns, from_ns, until_ns, &blocks);
    return result;
  }
  if (!format.empty() && format != "folded" && format != "groups" && format != "lines")
    return refuse(400, "format " + shown(format) + " is not one of folded, lines, pprof");
  if (multipart) return refuse(400, "multipart/form-data bodies are pprof: pass format=pprof or none");

  // Folded ("groups") and lines: one tree of the name's type.
  Tree tree;
  if (format == "lines") {
    result.format = "lines";
    std::string_view body = request.body;
    uint64_t line_number = 0;
    std::vector<std::string_view> frames;
    while (!body.empty()) {
      const size_t nl = body.find('\n');
      std::string_view line = body.substr(0, nl);
      body = nl == std::string_view::npos ? std::string_view() : body.substr(nl + 1);
      ++line_number;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) continue;
      frames.clear();
      while (true) {
        const size_t semi = line.find(';');
        std::string_view frame = line.substr(0, semi);
        frames.push_back(frame.empty() ? std::string_view(kEmptyFrameName) : frame);
        if (semi == std::string_view::npos) break;
        line.remove_prefix(semi + 1);
      }
      tree.insert(frames, 1);
    }
  } else {
    result.format = "folded";
    FoldedImporter importer(/*strict=*/false, tree.shared_symbols());
    importer.add(request.body.data(), request.body.size());
    st = importer.finish();
    if (!st.ok() || importer.report().skipped > 0) {
      std::string why = st.message();
      if (st.ok())
        for (const std::string& example : importer.report().skipped_examples) why += (why.empty() ? "" : ", ") + example;
      return refuse(400, "folded body: " + why + " (nothing stored)");
    }
    tree = std::move(importer.tree());
  }
  if (tree.total() == 0) return result;
  // cpu, itimer and wall samples become nanoseconds, each worth 1e9 / sampleRate (Pyroscope's ingest adapter).
  if ((type == "cpu" || type == "itimer" || type == "wall") && sample_rate > 0) {
    const uint64_t period = uint64_t(kNanos / sample_rate);
    Tree scaled(tree.shared_symbols());
    std::vector<uint32_t> path;
    for (uint32_t node = 1; node < tree.node_count(); ++node) {
      if (tree.self(node) == 0) continue;
      if (tree.self(node) > UINT64_MAX / period)
        return refuse(400, "a count times 1e9/sampleRate overflows 64 bits");
      path.clear();
      for (uint32_t n = node; n != Tree::kRoot; n = tree.parent(n)) path.push_back(tree.symbol(n));
      std::reverse(path.begin(), path.end());
      scaled.insert_ids(path.data(), path.size(), tree.self(node) * period);
    }
    if (tree.total() > UINT64_MAX / period) return refuse(400, "the total times 1e9/sampleRate overflows 64 bits");
    tree = std::move(scaled);
    info.unit = "nanoseconds";
    info.period = int64_t(period);
    info.period_type = type == "wall" ? "wall" : "cpu";
    info.period_unit = "nanoseconds";
  }
  std::vector<ProfileBlock> blocks(1);
  blocks[0].series = SeriesKey(app, type, tags);
  blocks[0].info = info;
  blocks[0].tree = std::move(tree);
  place(&result, limits, now_ns, from_ns, until_ns, &blocks);
  return result;
}

}  // namespace pyroscope::serve
