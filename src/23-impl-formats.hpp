// [SECTION] Implementation: formats (pprof, folded, perf script, speedscope, .cpuprofile) =========
//
// Every importer reads untrusted bytes: each length, count and index is checked against what is
// there before it is used, and every problem is a Status naming where it is (offset, line, sample).
// Importers build trees that share one symbol table and hand them out as ProfileBlocks.

#if defined(PYROSCOPE_WITH_ZLIB)
#include <zlib.h>
#endif
#if defined(PYROSCOPE_WITH_JSON)
#include <nlohmann/json.hpp>
#endif
#include <cmath>

namespace pyroscope {

const char* format_name(Format format) {
  switch (format) {
    case Format::pyro: return "pyro";
    case Format::pprof: return "pprof";
    case Format::folded: return "folded";
    case Format::perf_script: return "perf-script";
    case Format::speedscope: return "speedscope";
    case Format::chrome_cpuprofile: return "cpuprofile";
  }
  return "unknown";
}

Status parse_format_name(std::string_view name, Format* out) {
  static const std::pair<const char*, Format> kNames[] = {
      {"pyro", Format::pyro},           {"pprof", Format::pprof},
      {"folded", Format::folded},       {"perf-script", Format::perf_script},
      {"perf", Format::perf_script},    {"speedscope", Format::speedscope},
      {"cpuprofile", Format::chrome_cpuprofile}, {"chrome", Format::chrome_cpuprofile}};
  for (const auto& entry : kNames) {
    if (name == entry.first) {
      *out = entry.second;
      return {};
    }
  }
  return Status(StatusCode::invalid_argument, "unknown format '" + std::string(name) +
                                                  "' (pyro, pprof, folded, perf-script, speedscope, cpuprofile)");
}

bool formats_have_zlib() {
#if defined(PYROSCOPE_WITH_ZLIB)
  return true;
#else
  return false;
#endif
}

bool formats_have_json() {
#if defined(PYROSCOPE_WITH_JSON)
  return true;
#else
  return false;
#endif
}

std::string ImportReport::summary() const {
  auto with_commas = [](uint64_t v) {
    std::string digits = std::to_string(v), out;
    for (size_t i = 0; i < digits.size(); i++) {
      if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
      out += digits[i];
    }
    return out;
  };
  std::string s = "imported " + with_commas(imported) + " " + items;
  if (skipped > 0) {
    s += ", skipped " + with_commas(skipped);
    for (size_t i = 0; i < skipped_examples.size(); i++) s += (i == 0 ? ": " : ", ") + skipped_examples[i];
    if (skipped > skipped_examples.size()) s += ", ...";
  }
  if (numeric_labels_ignored > 0) s += "; " + with_commas(numeric_labels_ignored) + " numeric labels ignored";
  return s;
}

namespace detail {

constexpr size_t kSkippedExamples = 10;

inline void note_skipped(ImportReport* report, std::string what) {
  report->skipped++;
  if (report->skipped_examples.size() < kSkippedExamples) report->skipped_examples.push_back(std::move(what));
}

// "name: what" when the caller named the input, so a message from a batch says which file.
inline Status import_error(const ImportOptions& options, StatusCode code, const std::string& what) {
  return Status(code, options.source_name.empty() ? what : options.source_name + ": " + what);
}

inline int64_t import_base_time(const ImportOptions& options) {
  return options.time != 0 ? options.time : int64_t(std::time(nullptr));
}

// Profile types and tag keys come from other tools' strings ("alloc/space", "thread id"): characters
// that a series name cannot hold become '_', so every type still gets a series of its own.
inline std::string sanitized_type(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 64)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    out += ok ? c : '_';
  }
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out.insert(out.begin(), '_');
  if (out.size() > 64) out.resize(64);
  return out;
}

inline std::string sanitized_tag_key(std::string_view key) {
  std::string out;
  for (size_t i = 0; i < key.size(); i++) {
    const char c = key[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (c >= '0' && c <= '9') || c == '.';
    out += ok ? c : '_';
  }
  if (!out.empty() && ((out[0] >= '0' && out[0] <= '9') || out[0] == '.')) out.insert(out.begin(), '_');
  while (out.size() >= 2 && out[0] == '_' && out[1] == '_') out.erase(out.begin());  // "__" is reserved
  return out;
}

inline std::string sanitized_tag_value(std::string_view value) {
  std::string out(value);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '{' || c == '}' || c == ',' || c == '=' || c == '"')
      c = '_';
  }
  return out;
}

inline Status check_import_options(const ImportOptions& options) {
  std::string why;
  if (options.app.empty()) return import_error(options, StatusCode::invalid_argument, "no application name given");
  if (!is_valid_app_name(options.app, &why))
    return import_error(options, StatusCode::invalid_argument, "application name '" + options.app + "' " + why);
  for (const Tag& tag : options.tags)
    if (!is_valid_tag(tag.key, tag.value, &why)) return import_error(options, StatusCode::invalid_argument, "tag " + why);
  return {};
}

inline SeriesKey import_series_key(const ImportOptions& options, const std::string& type, Tags profile_tags) {
  // SeriesKey keeps the last value given for a key: the caller's tags go last so that they win.
  profile_tags.insert(profile_tags.end(), options.tags.begin(), options.tags.end());
  return SeriesKey(options.app, type, std::move(profile_tags));
}

inline std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

inline std::string_view base_name_of(std::string_view path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// --- gzip (RFC 1952) around DEFLATE, inflated by zlib or by the caller's function -----------------

inline bool is_gzip(ByteSpan b) { return b.size >= 2 && b.data[0] == 0x1f && b.data[1] == 0x8b; }

#if defined(PYROSCOPE_WITH_ZLIB)
inline Status zlib_inflate_raw(ByteSpan in, uint64_t max_output, std::string* out) {
  z_stream stream;
  std::memset(&stream, 0, sizeof stream);
  if (inflateInit2(&stream, -15) != Z_OK) return error(StatusCode::io_error, "zlib: inflateInit2 failed");
  out->clear();
  size_t fed = 0;
  std::vector<char> buffer(256 * 1024);
  Status result;
  while (true) {
    if (stream.avail_in == 0 && fed < in.size) {  // avail_in is 32 bits: feed >4 GiB inputs in parts
      const size_t part = std::min<size_t>(in.size - fed, size_t(1) << 30);
      stream.next_in = const_cast<Bytef*>(in.data + fed);
      stream.avail_in = uInt(part);
      fed += part;
    }
    stream.next_out = reinterpret_cast<Bytef*>(buffer.data());
    stream.avail_out = uInt(buffer.size());
    const int rc = inflate(&stream, Z_NO_FLUSH);
    const size_t produced = buffer.size() - stream.avail_out;
    if (produced > max_output - out->size()) {
      out->append(buffer.data(), size_t(max_output - out->size()));
      result = error(StatusCode::too_large, "inflates to more than " + std::to_string(max_output) +
                                                " bytes (the limit on inflated input; a gzip bomb?)");
      break;
    }
    out->append(buffer.data(), produced);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR || (rc == Z_OK && produced == 0 && stream.avail_in == 0 && fed == in.size)) {
      result = error(StatusCode::parse_error, "compressed data is truncated");
      break;
    }
    if (rc != Z_OK) {
      result = error(StatusCode::parse_error,
                     std::string("compressed data is corrupt (zlib: ") + (stream.msg ? stream.msg : "error") + ")");
      break;
    }
  }
  inflateEnd(&stream);
  return result;
}

inline Status zlib_deflate_raw(ByteSpan in, std::string* out) {
  z_stream stream;
  std::memset(&stream, 0, sizeof stream);
  if (deflateInit2(&stream, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return error(StatusCode::io_error, "zlib: deflateInit2 failed");
  out->clear();
  std::vector<char> buffer(256 * 1024);
  size_t fed = 0;
  int rc = Z_OK;
  do {
    if (stream.avail_in == 0 && fed < in.size) {
      const size_t part = std::min<size_t>(in.size - fed, size_t(1) << 30);
      stream.next_in = const_cast<Bytef*>(in.data + fed);
      stream.avail_in = uInt(part);
      fed += part;
    }
    stream.next_out = reinterpret_cast<Bytef*>(buffer.data());
    stream.avail_out = uInt(buffer.size());
    rc = deflate(&stream, fed == in.size ? Z_FINISH : Z_NO_FLUSH);
    out->append(buffer.data(), buffer.size() - stream.avail_out);
  } while (rc == Z_OK || rc == Z_BUF_ERROR);
  deflateEnd(&stream);
  if (rc != Z_STREAM_END) return error(StatusCode::io_error, "zlib: deflate failed");
  return {};
}
#endif

inline InflateFunction inflater_or_default(const InflateFunction& hook) {
  if (hook) return hook;
#if defined(PYROSCOPE_WITH_ZLIB)
  return zlib_inflate_raw;
#else
  return nullptr;
#endif
}

// Reads the gzip wrapper and inflates its single member. peek: only the first max_output bytes are
// wanted (format detection), so running past them is not an error and the trailer is not checked.
inline Status gunzip(ByteSpan in, const InflateFunction& hook, uint64_t max_output, std::string* out, bool peek) {
  const InflateFunction inflate = inflater_or_default(hook);
  if (!inflate)
    return error(StatusCode::feature_disabled,
                 "gzip-compressed input needs an inflater: compile the implementation with PYROSCOPE_WITH_ZLIB "
                 "(and link zlib, -lz) or set ImportOptions::inflate");
  if (in.size < 18) return error(StatusCode::parse_error, "gzip: truncated header (" + std::to_string(in.size) + " bytes)");
  if (in.data[2] != 8) return error(StatusCode::parse_error, "gzip: compression method " + std::to_string(in.data[2]) + " is not deflate");
  const uint8_t flags = in.data[3];
  if (flags & 0xe0) return error(StatusCode::parse_error, "gzip: reserved header flags set");
  size_t pos = 10;
  auto skip_zero_terminated = [&]() {
    while (pos < in.size && in.data[pos] != 0) pos++;
    pos++;
  };
  if (flags & 4) {  // FEXTRA
    if (pos + 2 > in.size) return error(StatusCode::parse_error, "gzip: truncated header");
    pos += 2 + (size_t(in.data[pos]) | size_t(in.data[pos + 1]) << 8);
  }
  if (flags & 8) skip_zero_terminated();   // FNAME
  if (flags & 16) skip_zero_terminated();  // FCOMMENT
  if (flags & 2) pos += 2;                 // FHCRC
  if (pos + 8 > in.size) return error(StatusCode::parse_error, "gzip: truncated header");
  const ByteSpan deflated{in.data + pos, in.size - pos - 8};
  const uint32_t stored_crc = get_u32(in.data + in.size - 8);
  const uint32_t stored_size = get_u32(in.data + in.size - 4);
  out->clear();
  Status st = inflate(deflated, max_output, out);
  if (!st.ok()) {
    if (peek && st.code() == StatusCode::too_large) return {};
    return Status(st.code(), "gzip: " + st.message());
  }
  if (peek) return {};
  if (uint32_t(out->size()) != stored_size)
    return error(StatusCode::parse_error, "gzip: inflated " + std::to_string(out->size()) +
                                              " bytes, the trailer says " + std::to_string(stored_size) +
                                              " (more than one gzip member, or corrupt)");
  if (crc32(out->data(), out->size()) != stored_crc) return error(StatusCode::parse_error, "gzip: CRC-32 mismatch");
  return {};
}

inline Status gzip(ByteSpan raw, const DeflateFunction& hook, std::string* out) {
  std::string deflated;
  Status st;
  if (hook) {
    st = hook(raw, &deflated);
  } else {
#if defined(PYROSCOPE_WITH_ZLIB)
    st = zlib_deflate_raw(raw, &deflated);
#else
    return error(StatusCode::feature_disabled, "gzip output needs PYROSCOPE_WITH_ZLIB or ExportOptions::deflate");
#endif
  }
  if (!st.ok()) return st;
  static const char kHeader[10] = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, 0, '\xff'};  // no name, no time, OS unknown
  out->assign(kHeader, sizeof kHeader);
  out->append(deflated);
  put_u32(out, crc32(raw.data, raw.size));
  put_u32(out, uint32_t(raw.size));
  return {};
}

// --- protobuf wire format (profile.proto), read and written by hand ---------------------------------

struct ProtoField {
  uint32_t number = 0;
  uint8_t wire = 0;      // 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
  uint64_t value = 0;    // varint and fixed values
  ByteSpan bytes;        // length-delimited payload
  size_t offset = 0;     // of the field's tag, from the start of the whole message
};

// Reads the fields of one message; a length past the end, a varint over 64 bits, a group or an unknown
// wire type stops it with failed() and a message naming the offset.
class ProtoReader {
 public:
  ProtoReader(ByteSpan bytes, size_t base_offset) : in_(bytes.data, bytes.size), begin_(bytes.data), base_(base_offset) {}
  bool next(ProtoField* f) {
    if (in_.done() || !error_.empty()) return false;
    f->offset = base_ + size_t(in_.p - begin_);
    const uint64_t tag = in_.varint();
    if (in_.failed) return fail(f->offset, "truncated field tag");
    f->number = uint32_t(tag >> 3);
    f->wire = uint8_t(tag & 7);
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return fail(f->offset, "field number " + std::to_string(tag >> 3) + " out of range");
    switch (f->wire) {
      case 0:
        f->value = in_.varint();
        if (in_.failed) return fail(f->offset, "truncated or over-long varint");
        return true;
      case 1:
      case 5: {
        const size_t n = f->wire == 1 ? 8 : 4;
        if (in_.remaining() < n) return fail(f->offset, "truncated fixed-size field");
        f->value = n == 8 ? get_u64(in_.p) : get_u32(in_.p);
        in_.p += n;
        return true;
      }
      case 2: {
        const uint64_t length = in_.varint();
        if (in_.failed) return fail(f->offset, "truncated length");
        if (length > in_.remaining())
          return fail(f->offset, "field " + std::to_string(f->number) + " claims " + std::to_string(length) +
                                     " bytes, only " + std::to_string(in_.remaining()) + " remain");
        f->bytes = ByteSpan{in_.p, size_t(length)};
        in_.p += length;
        return true;
      }
      default:
        return fail(f->offset, "wire type " + std::to_string(f->wire) + " (groups are not used by profile.proto)");
    }
  }
  const std::string& error() const { return error_; }
  size_t offset_of(const uint8_t* p) const { return base_ + size_t(p - begin_); }

 private:
  bool fail(size_t offset, const std::string& what) {
    error_ = "offset " + std::to_string(offset) + ": " + what;
    return false;
  }
  ByteReader in_;
  const uint8_t* begin_;
  size_t base_;
  std::string error_;
};

// A repeated integer field, packed (wire type 2) or one value per field (wire type 0).
inline bool read_repeated_varints(const ProtoField& f, std::vector<uint64_t>* out) {
  if (f.wire == 0) {
    out->push_back(f.value);
    return true;
  }
  if (f.wire != 2) return false;
  ByteReader in(f.bytes.data, f.bytes.size);
  while (!in.done()) {
    const uint64_t v = in.varint();
    if (in.failed) return false;
    out->push_back(v);
  }
  return true;
}

class ProtoWriter {
 public:
  explicit ProtoWriter(std::string* out) : out_(out) {}
  void varint_field(uint32_t number, uint64_t v) {
    put_varint(out_, uint64_t(number) << 3);
    put_varint(out_, v);
  }
  void bytes_field(uint32_t number, std::string_view bytes) {
    put_varint(out_, uint64_t(number) << 3 | 2);
    put_varint(out_, bytes.size());
    out_->append(bytes.data(), bytes.size());
  }
  void packed_field(uint32_t number, const uint64_t* values, size_t n, std::string* scratch) {
    scratch->clear();
    for (size_t i = 0; i < n; i++) put_varint(scratch, values[i]);
    bytes_field(number, *scratch);
  }

 private:
  std::string* out_;
};

// Maps the ids a profile uses (1, 2, 3, ... usually, anything up to 2^64 allowed) to dense indexes.
class IdIndex {
 public:
  static constexpr uint32_t kMissing = 0xffffffffu;
  // false: the id is 0 or already defined.
  bool add(uint64_t id, uint32_t index) {
    if (id == 0) return false;
    return map_.emplace(id, index).second;
  }
  // Dense ids (the common case) are looked up in a vector; the map stays the source of truth.
  void seal() {
    uint64_t max_id = 0;
    for (const auto& e : map_) max_id = std::max(max_id, e.first);
    if (max_id <= 4 * uint64_t(map_.size()) + 64) {
      dense_.assign(size_t(max_id) + 1, kMissing);
      for (const auto& e : map_) dense_[size_t(e.first)] = e.second;
    }
  }
  uint32_t find(uint64_t id) const {
    if (!dense_.empty() || map_.empty()) return id < dense_.size() ? dense_[size_t(id)] : kMissing;
    auto it = map_.find(id);
    return it == map_.end() ? kMissing : it->second;
  }

 private:
  std::unordered_map<uint64_t, uint32_t> map_;
  std::vector<uint32_t> dense_;
};

}  // namespace detail

// --- pprof import -----------------------------------------------------------------------------------

namespace detail {

struct PprofValueType {
  uint64_t type = 0;  // string table indexes
  uint64_t unit = 0;
};

struct PprofLocation {
  uint64_t id = 0;
  uint64_t mapping_id = 0;
  uint64_t address = 0;
  uint32_t first_line = 0;  // into PprofProfile::line_functions
  uint32_t line_count = 0;
  size_t offset = 0;
};

struct PprofFunction {
  uint64_t id = 0;
  uint64_t name = 0;
  uint64_t system_name = 0;
  size_t offset = 0;
};

struct PprofMapping {
  uint64_t id = 0;
  uint64_t memory_start = 0;
  uint64_t file_offset = 0;
  uint64_t filename = 0;
  size_t offset = 0;
};

// The parts of a profile.proto the importer uses. Samples stay as spans into the buffer until they are
// read one at a time, so a big profile is not held twice.
struct PprofProfile {
  std::vector<PprofValueType> sample_types;
  std::vector<ByteSpan> samples;
  std::vector<size_t> sample_offsets;
  std::vector<PprofMapping> mappings;
  std::vector<PprofLocation> locations;
  std::vector<uint64_t> line_functions;
  std::vector<PprofFunction> functions;
  std::vector<std::string_view> strings;
  int64_t time_nanos = 0;
  int64_t duration_nanos = 0;
  PprofValueType period_type;
  int64_t period = 0;
};

inline std::string field_error(const ProtoField& f, const char* message_name) {
  return "offset " + std::to_string(f.offset) + ": " + message_name + " field " + std::to_string(f.number) +
         " has wire type " + std::to_string(f.wire);
}

// Reads the message of f into a sub-reader; nested errors name their own offsets.
inline bool parse_value_type(const ProtoField& outer, PprofValueType* out, std::string* why) {
  ProtoReader r(outer.bytes, outer.offset);
  ProtoField f;
  while (r.next(&f)) {
    if (f.wire != 0) continue;  // unknown or misplaced fields of a nested message are skipped
    if (f.number == 1) out->type = f.value;
    if (f.number == 2) out->unit = f.value;
  }
  *why = r.error();
  return why->empty();
}

inline Status parse_pprof(ByteSpan bytes, PprofProfile* p) {
  ProtoReader reader(bytes, 0);
  ProtoField f;
  std::string why;
  auto corrupt = [](const std::string& what) { return error(StatusCode::parse_error, "pprof: " + what); };
  while (reader.next(&f)) {
    switch (f.number) {
      case 1:
      case 11: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofValueType vt;
        if (!parse_value_type(f, &vt, &why)) return corrupt(why);
        if (f.number == 1) p->sample_types.push_back(vt);
        else p->period_type = vt;
        break;
      }
      case 2:
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        p->samples.push_back(f.bytes);
        p->sample_offsets.push_back(f.offset);
        break;
      case 3: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofMapping m;
        m.offset = f.offset;
        ProtoReader r(f.bytes, f.offset);
        ProtoField g;
        while (r.next(&g)) {
          if (g.wire != 0) continue;
          if (g.number == 1) m.id = g.value;
          else if (g.number == 2) m.memory_start = g.value;
          else if (g.number == 4) m.file_offset = g.value;
          else if (g.number == 5) m.filename = g.value;
        }
        if (!r.error().empty()) return corrupt(r.error());
        p->mappings.push_back(m);
        break;
      }
      case 4: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofLocation loc;
        loc.offset = f.offset;
        loc.first_line = uint32_t(p->line_functions.size());
        ProtoReader r(f.bytes, f.offset);
        ProtoField g;
        while (r.next(&g)) {
          if (g.number == 1 && g.wire == 0) loc.id = g.value;
          else if (g.number == 2 && g.wire == 0) loc.mapping_id = g.value;
          else if (g.number == 3 && g.wire == 0) loc.address = g.value;
          else if (g.number == 4 && g.wire == 2) {
            uint64_t function_id = 0;
            ProtoReader lr(g.bytes, g.offset);
            ProtoField h;
            while (lr.next(&h))
              if (h.number == 1 && h.wire == 0) function_id = h.value;
            if (!lr.error().empty()) return corrupt(lr.error());
            if (p->line_functions.size() >= 0xffffffffu) return corrupt("too many lines");
            p->line_functions.push_back(function_id);
          }
        }
        if (!r.error().empty()) return corrupt(r.error());
        loc.line_count = uint32_t(p->line_functions.size() - loc.first_line);
        p->locations.push_back(loc);
        break;
      }
      case 5: {
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        PprofFunction fn;
        fn.offset = f.offset;
        ProtoReader r(f.bytes, f.offset);
        ProtoField g;
        while (r.next(&g)) {
          if (g.wire != 0) continue;
          if (g.number == 1) fn.id = g.value;
          else if (g.number == 2) fn.name = g.value;
          else if (g.number == 3) fn.system_name = g.value;
        }
        if (!r.error().empty()) return corrupt(r.error());
        p->functions.push_back(fn);
        break;
      }
      case 6:
        if (f.wire != 2) return corrupt(field_error(f, "Profile"));
        p->strings.emplace_back(reinterpret_cast<const char*>(f.bytes.data), f.bytes.size);
        break;
      case 9:
      case 10:
      case 12:
        if (f.wire != 0) return corrupt(field_error(f, "Profile"));
        if (f.number == 9) p->time_nanos = int64_t(f.value);
        else if (f.number == 10) p->duration_nanos = int64_t(f.value);
        else p->period = int64_t(f.value);
        break;
      default:
        break;  // drop_frames, keep_frames, comment, default_sample_type, and fields added later
    }
  }
  if (!reader.error().empty()) return corrupt(reader.error());
  if (p->sample_types.empty()) return corrupt("no sample types (not a profile.proto?)");
  if (p->strings.empty() || !p->strings[0].empty()) return corrupt("string table must start with \"\"");
  return {};
}

inline bool string_index_ok(const PprofProfile& p, uint64_t index) { return index < p.strings.size(); }

inline Status import_pprof(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                           ImportReport* report) {
  auto fail = [&](const std::string& what) { return import_error(options, StatusCode::parse_error, what); };
  PprofProfile p;
  Status st = parse_pprof(bytes, &p);
  if (!st.ok()) return import_error(options, st.code(), st.message());

  // Types and what their values mean.
  struct TypeInfo {
    std::string name;
    SeriesInfo info;
  };
  std::vector<TypeInfo> types;
  std::set<std::string> type_names;
  for (size_t i = 0; i < p.sample_types.size(); i++) {
    const PprofValueType& vt = p.sample_types[i];
    if (!string_index_ok(p, vt.type) || !string_index_ok(p, vt.unit))
      return fail("pprof: sample type " + std::to_string(i) + ": string index out of range");
    // Two sample types that read the same after sanitizing stay two series: name_2, name_3, ... (the
    // suffix replaces the end of a name already at the 64-byte limit, so it always makes a new name).
    const std::string base = sanitized_type(p.strings[vt.type]);
    std::string name = base;
    for (uint64_t k = 2; !type_names.insert(name).second; k++) {
      const std::string suffix = "_" + std::to_string(k);
      name = base.substr(0, 64 - suffix.size()) + suffix;
    }
    TypeInfo t;
    t.name = name;
    t.info = default_series_info(name);
    if (!p.strings[vt.unit].empty()) t.info.unit = std::string(p.strings[vt.unit]);
    if (p.period > 0) {
      if (!string_index_ok(p, p.period_type.type) || !string_index_ok(p, p.period_type.unit))
        return fail("pprof: period type: string index out of range");
      t.info.period = p.period;
      t.info.period_type = std::string(p.strings[p.period_type.type]);
      t.info.period_unit = std::string(p.strings[p.period_type.unit]);
    }
    types.push_back(std::move(t));
  }

  // Functions -> symbols of the shared table.
  auto symbols = std::make_shared<SymbolTable>();
  IdIndex function_index;
  std::vector<uint32_t> function_symbol(p.functions.size());
  for (size_t i = 0; i < p.functions.size(); i++) {
    const PprofFunction& fn = p.functions[i];
    if (!function_index.add(fn.id, uint32_t(i)))
      return fail("pprof: offset " + std::to_string(fn.offset) + ": function id " + std::to_string(fn.id) +
                  (fn.id == 0 ? " is 0" : " defined twice"));
    if (!string_index_ok(p, fn.name) || !string_index_ok(p, fn.system_name))
      return fail("pprof: offset " + std::to_string(fn.offset) + ": function " + std::to_string(fn.id) +
                  ": string index out of range");
    std::string_view name = p.strings[fn.name];
    if (name.empty()) name = p.strings[fn.system_name];
    // A function without a name is named by its location's address instead (below).
    function_symbol[i] = name.empty() ? SymbolTable::kNone : symbols->intern(name);
  }
  function_index.seal();

  IdIndex mapping_index;
  for (size_t i = 0; i < p.mappings.size(); i++) {
    const PprofMapping& m = p.mappings[i];
    if (!mapping_index.add(m.id, uint32_t(i)))
      return fail("pprof: offset " + std::to_string(m.offset) + ": mapping id " + std::to_string(m.id) +
                  (m.id == 0 ? " is 0" : " defined twice"));
    if (!string_index_ok(p, m.filename))
      return fail("pprof: offset " + std::to_string(m.offset) + ": mapping filename index out of range");
  }
  mapping_index.seal();

  // Locations -> their frames, root first. A location's lines are innermost first (an inlined
  // function, then the function it was inlined into): each becomes a frame of its own.
  IdIndex location_index;
  std::vector<uint32_t> location_first(p.locations.size() + 1, 0);
  std::vector<uint32_t> location_frames;
  for (size_t i = 0; i < p.locations.size(); i++) {
    const PprofLocation& loc = p.locations[i];
    auto where = [&]() { return "pprof: offset " + std::to_string(loc.offset) + ": location " + std::to_string(loc.id); };
    if (!location_index.add(loc.id, uint32_t(i))) return fail(where() + (loc.id == 0 ? ": id 0" : ": defined twice"));
    location_first[i] = uint32_t(location_frames.size());
    // Not symbolized: named by where it is, as `module+0xoffset` (pprof's own fallback).
    uint32_t address_symbol = SymbolTable::kNone;
    auto address_name = [&]() -> Status {
      if (address_symbol != SymbolTable::kNone) return {};
      std::string name = hex(loc.address);
      if (loc.mapping_id != 0) {
        const uint32_t m = mapping_index.find(loc.mapping_id);
        if (m == IdIndex::kMissing) return fail(where() + ": mapping " + std::to_string(loc.mapping_id) + " not defined");
        const PprofMapping& mapping = p.mappings[m];
        std::string_view file = base_name_of(p.strings[mapping.filename]);
        if (!file.empty() && loc.address >= mapping.memory_start)
          name = std::string(file) + "+" + hex(loc.address - mapping.memory_start + mapping.file_offset);
      }
      address_symbol = symbols->intern(name);
      return {};
    };
    if (loc.line_count == 0) {
      Status named = address_name();
      if (!named.ok()) return named;
      location_frames.push_back(address_symbol);
    }
    for (uint32_t k = loc.line_count; k-- > 0;) {
      const uint64_t function_id = p.line_functions[loc.first_line + k];
      const uint32_t fn = function_index.find(function_id);
      if (fn == IdIndex::kMissing)
        return fail(where() + ": line " + std::to_string(k) + ": function " + std::to_string(function_id) + " not defined");
      if (function_symbol[fn] == SymbolTable::kNone) {
        Status named = address_name();
        if (!named.ok()) return named;
        location_frames.push_back(address_symbol);
      } else {
        location_frames.push_back(function_symbol[fn]);
      }
    }
  }
  location_first[p.locations.size()] = uint32_t(location_frames.size());
  location_index.seal();

  // Samples -> one tree per (label set, type).
  struct Series {
    Tags tags;
    std::vector<std::unique_ptr<Tree>> trees;  // per type, made on first use
  };
  // Each node of a tree comes from a frame of some sample, so the frames of all samples bound the node
  // count: reserving it spares the copies of a growing node array (the peak memory of a big import:
  // 180 -> 148 MB on bench_formats), and the part never used is address space only. One count over the
  // packed location ids is cheap. Not under Emscripten, where reserved memory is real memory; and never
  // more nodes than the profile has bytes, whatever its inlined locations expand to.
  uint64_t frame_bound = 1;
#if !defined(PYROSCOPE_PLATFORM_EMSCRIPTEN)
  if (types.size() == 1 && !location_frames.empty()) {
    const uint64_t frames_per_location = (location_frames.size() + p.locations.size() - 1) / std::max<size_t>(p.locations.size(), 1);
    for (const ByteSpan& sample : p.samples) {
      ProtoReader r(sample, 0);
      ProtoField g;
      while (r.next(&g)) {
        if (g.number != 1) continue;
        if (g.wire == 0) frame_bound += frames_per_location;
        else if (g.wire == 2)
          for (size_t b = 0; b < g.bytes.size; b++) frame_bound += (g.bytes.data[b] < 0x80) ? frames_per_location : 0;
      }
    }
    frame_bound = std::min<uint64_t>(frame_bound, bytes.size);
  }
#endif
  std::vector<Series> series(1);  // series[0]: samples without string labels
  series[0].trees.resize(types.size());
  std::map<std::vector<std::pair<uint64_t, uint64_t>>, size_t> series_of_labels;
  std::vector<uint64_t> location_ids, values;
  std::vector<std::pair<uint64_t, uint64_t>> labels;
  std::vector<uint32_t> frames;
  uint64_t numeric_labels = 0;
  ImportReport local;
  // Work stays linear in the input: a location with many inlined lines, repeated many times in every
  // sample, could make a small file expand into billions of frames. Real profiles stay far below 64
  // frames per byte (each location id is at least a byte, and few locations have more than a few lines).
  const uint64_t frame_budget = 64 * uint64_t(bytes.size) + (uint64_t(1) << 20);
  uint64_t frames_so_far = 0;
  for (size_t s = 0; s < p.samples.size(); s++) {
    auto where = [&]() { return "pprof: offset " + std::to_string(p.sample_offsets[s]) + ": sample " + std::to_string(s); };
    location_ids.clear();
    values.clear();
    labels.clear();
    ProtoReader r(p.samples[s], p.sample_offsets[s]);
    ProtoField g;
    while (r.next(&g)) {
      if (g.number == 1 || g.number == 2) {
        if (!read_repeated_varints(g, g.number == 1 ? &location_ids : &values)) return fail(where() + ": bad packed field");
      } else if (g.number == 3 && g.wire == 2) {
        uint64_t key = 0, str = 0, num = 0;
        ProtoReader lr(g.bytes, g.offset);
        ProtoField h;
        while (lr.next(&h)) {
          if (h.wire != 0) continue;
          if (h.number == 1) key = h.value;
          else if (h.number == 2) str = h.value;
          else if (h.number == 3) num = h.value;
        }
        if (!lr.error().empty()) return fail("pprof: " + lr.error());
        if (!string_index_ok(p, key) || !string_index_ok(p, str)) return fail(where() + ": label string index out of range");
        if (str != 0) labels.emplace_back(key, str);
        else if (num != 0 || key != 0) numeric_labels++;
      }
    }
    if (!r.error().empty()) return fail("pprof: " + r.error());
    if (values.size() != types.size())
      return fail(where() + ": " + std::to_string(values.size()) + " values for " + std::to_string(types.size()) + " sample types");
    frames.clear();
    for (size_t k = location_ids.size(); k-- > 0;) {
      const uint32_t loc = location_index.find(location_ids[k]);
      if (loc == IdIndex::kMissing) return fail(where() + ": location " + std::to_string(location_ids[k]) + " not defined");
      frames_so_far += location_first[loc + 1] - location_first[loc];
      if (frames_so_far > frame_budget)
        return fail(where() + ": the samples expand to more than " + std::to_string(frame_budget) +
                    " frames (64 per byte of profile): refused as hostile");
      frames.insert(frames.end(), location_frames.begin() + location_first[loc], location_frames.begin() + location_first[loc + 1]);
    }
    size_t series_index = 0;
    if (!labels.empty()) {
      std::sort(labels.begin(), labels.end());
      auto it = series_of_labels.find(labels);
      if (it == series_of_labels.end()) {
        Series fresh;
        for (const auto& label : labels) {
          const std::string key = sanitized_tag_key(p.strings[label.first]);
          const std::string value = sanitized_tag_value(p.strings[label.second]);
          if (!key.empty() && !value.empty()) fresh.tags.push_back({key, value});
        }
        fresh.trees.resize(types.size());
        series.push_back(std::move(fresh));
        it = series_of_labels.emplace(labels, series.size() - 1).first;
      }
      series_index = it->second;
    }
    bool skipped = false;
    for (size_t t = 0; t < types.size(); t++) {
      const int64_t value = int64_t(values[t]);
      if (value < 0) {
        if (options.strict) return fail(where() + ": negative value " + std::to_string(value) + " of " + types[t].name);
        skipped = true;
        continue;
      }
      if (value == 0) continue;
      std::unique_ptr<Tree>& tree = series[series_index].trees[t];
      if (!tree) {
        tree = std::make_unique<Tree>(symbols);
        if (series_index == 0 && frame_bound > 1) tree->reserve(size_t(frame_bound));
      }
      uint64_t sum;
      if (add_overflows(tree->total(), uint64_t(value), &sum)) {
        if (options.strict) return fail(where() + ": total of " + types[t].name + " overflows 64 bits");
        skipped = true;
        continue;
      }
      tree->insert_ids(frames.data(), frames.size(), uint64_t(value));
    }
    if (skipped) note_skipped(&local, "sample " + std::to_string(s) + " negative or overflowing value");
    else local.imported++;
  }

  const int64_t block_start = p.time_nanos > 0 ? floor_div(p.time_nanos, 1000000000) : import_base_time(options);
  std::vector<ProfileBlock> blocks;
  for (Series& s : series) {
    for (size_t t = 0; t < types.size(); t++) {
      if (!s.trees[t] || s.trees[t]->total() == 0) continue;
      ProfileBlock block;
      block.series = import_series_key(options, types[t].name, s.tags);
      block.info = types[t].info;
      block.block_start = block_start;
      block.tree = std::move(*s.trees[t]);
      blocks.push_back(std::move(block));
      local.series++;
    }
  }
  local.numeric_labels_ignored = numeric_labels;
  for (ProfileBlock& b : blocks) out->push_back(std::move(b));
  if (report) {
    local.format = Format::pprof;
    local.items = "samples";
    *report = std::move(local);
  }
  return {};
}

}  // namespace detail

// --- folded text ------------------------------------------------------------------------------------

namespace detail {

// One line of folded text, read exactly: the count is the digits at the end (after CR and trailing
// blanks), separated by one space or tab; every byte before that separator is the stack's (flamegraph.pl
// reads lines the same way), so a frame that ends in a space keeps it. A UTF-8 byte-order mark at the
// start of a line is dropped: editors write one at the start of a file, and concatenated files carry it
// into later lines.
struct FoldedLine {
  std::string_view stack;
  uint64_t count = 0;
  std::string problem;  // empty when the line was read; "no count", "count overflows", ...
  bool blank = false;
};

inline FoldedLine read_folded_line(std::string_view line) {
  FoldedLine out;
  while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
  while (line.size() >= 3 && std::memcmp(line.data(), "\xEF\xBB\xBF", 3) == 0) line.remove_prefix(3);
  if (line.empty()) {
    out.blank = true;
    return out;
  }
  const size_t separator = line.find_last_of(" \t");
  if (separator == std::string_view::npos) {
    out.problem = "no count";
    return out;
  }
  const std::string_view count_text = line.substr(separator + 1);
  if (count_text.find_first_of("0123456789") == std::string_view::npos) {
    out.problem = "no count";
    return out;
  }
  for (char c : count_text) {
    if (c < '0' || c > '9') {
      out.problem = "count '" + std::string(count_text.substr(0, 40)) + "' is not a non-negative integer";
      return out;
    }
    if (out.count > (UINT64_MAX - uint64_t(c - '0')) / 10) {
      out.problem = "count overflows";
      return out;
    }
    out.count = out.count * 10 + uint64_t(c - '0');
  }
  out.stack = line.substr(0, separator);
  if (out.stack.empty()) out.problem = "no stack before the count";
  return out;
}

// Splits a stack at ';' into symbol ids. An empty frame is an error when strict (returns false), else
// it is named kEmptyFrameName.
inline bool folded_frames(std::string_view stack, SymbolTable* symbols, bool strict, std::vector<uint32_t>* ids,
                          std::string* problem) {
  ids->clear();
  size_t start = 0;
  while (true) {
    const size_t semi = stack.find(';', start);
    std::string_view frame = stack.substr(start, semi == std::string_view::npos ? std::string_view::npos : semi - start);
    if (frame.empty()) {
      if (strict) {
        *problem = "empty frame name (frame " + std::to_string(ids->size() + 1) + ")";
        return false;
      }
      frame = kEmptyFrameName;
    }
    ids->push_back(symbols->intern(frame));
    if (semi == std::string_view::npos) return true;
    start = semi + 1;
  }
}

}  // namespace detail

Status Tree::add_folded(std::string_view text) {
  Tree staged(symbols_);
  std::vector<uint32_t> ids;
  size_t line_number = 0;
  size_t pos = 0;
  auto fail = [&](const std::string& what) {
    return detail::error(StatusCode::parse_error, "line " + std::to_string(line_number) + ": " + what);
  };
  std::string problem;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const detail::FoldedLine line = detail::read_folded_line(text.substr(pos, eol - pos));
    pos = eol + 1;
    line_number++;
    if (line.blank) continue;
    if (!line.problem.empty()) return fail(line.problem);
    if (!detail::folded_frames(line.stack, symbols_.get(), true, &ids, &problem)) return fail(problem);
    uint64_t sum;
    if (detail::add_overflows(staged.total(), line.count, &sum)) return fail("total sample count overflows 64 bits");
    staged.insert_ids(ids.data(), ids.size(), line.count);
  }
  uint64_t sum;
  if (detail::add_overflows(total(), staged.total(), &sum))
    return detail::error(StatusCode::parse_error, "total sample count overflows 64 bits");
  merge(staged);
  return {};
}

Status Tree::from_folded(std::string_view text, Tree* out) {
  out->clear();
  return out->add_folded(text);
}

FoldedImporter::FoldedImporter(bool strict, std::shared_ptr<SymbolTable> symbols)
    : tree_(std::move(symbols)), strict_(strict) {
  report_.format = Format::folded;
  report_.items = "lines";
}

void FoldedImporter::line(std::string_view text) {
  line_number_++;
  if (!status_.ok()) return;
  const detail::FoldedLine line = detail::read_folded_line(text);
  if (line.blank) return;
  std::string problem = line.problem;
  if (problem.empty()) detail::folded_frames(line.stack, &tree_.symbols(), strict_, &ids_, &problem);
  uint64_t sum;
  if (problem.empty() && detail::add_overflows(tree_.total(), line.count, &sum)) problem = "total overflows 64 bits";
  if (!problem.empty()) {
    if (strict_) status_ = detail::error(StatusCode::parse_error, "line " + std::to_string(line_number_) + ": " + problem);
    else detail::note_skipped(&report_, "line " + std::to_string(line_number_) + " " + problem);
    return;
  }
  tree_.insert_ids(ids_.data(), ids_.size(), line.count);
  report_.imported++;
}

void FoldedImporter::add(const char* data, size_t size) {
  std::string_view rest(data, size);
  if (!carry_.empty()) {
    const size_t newline = rest.find('\n');
    if (newline == std::string_view::npos) {
      carry_.append(rest.data(), rest.size());
      return;
    }
    carry_.append(rest.data(), newline);
    line(carry_);
    carry_.clear();
    rest.remove_prefix(newline + 1);
  }
  while (true) {
    const size_t newline = rest.find('\n');
    if (newline == std::string_view::npos) break;
    line(rest.substr(0, newline));
    rest.remove_prefix(newline + 1);
  }
  carry_.assign(rest.data(), rest.size());
}

Status FoldedImporter::finish() {
  if (!carry_.empty()) line(carry_);
  carry_.clear();
  carry_.shrink_to_fit();
  if (!status_.ok()) {
    tree_.clear();
    report_.imported = 0;
    return status_;
  }
  if (report_.imported == 0 && report_.skipped > 0)
    return detail::error(StatusCode::parse_error, "not folded text: no line could be read (" + report_.skipped_examples[0] + ")");
  return {};
}

// --- perf script ------------------------------------------------------------------------------------

namespace detail {

inline bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

inline bool all_hex(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  return true;
}

// "12345.678901:" -> seconds.
inline bool perf_timestamp(std::string_view token, double* seconds) {
  if (token.size() < 4 || token.back() != ':') return false;
  token.remove_suffix(1);
  const size_t dot = token.find('.');
  if (dot == std::string_view::npos || !all_digits(token.substr(0, dot)) || !all_digits(token.substr(dot + 1)))
    return false;
  *seconds = std::strtod(std::string(token).c_str(), nullptr);
  return true;
}

struct PerfHeader {
  std::string comm;
  std::string event;
  bool has_time = false;
  double time = 0;
  std::string_view inline_frame;  // the sample's only frame, when perf script printed no callchain
};

inline void split_tokens(std::string_view line, std::vector<std::pair<size_t, std::string_view>>* tokens) {
  tokens->clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') i++;
    if (i > start) tokens->push_back({start, line.substr(start, i - start)});
  }
}

// `comm pid[/tid] [cpu] time: [period] event: [ip sym (dso)]`. The command may hold spaces, so the
// line is read around its timestamp; without one (perf script -F without time), the command ends at the
// first token that is a pid, as FlameGraph's stackcollapse-perf.pl reads it.
inline bool read_perf_header(std::string_view line, PerfHeader* out, std::string* problem) {
  std::vector<std::pair<size_t, std::string_view>> tokens;
  split_tokens(line, &tokens);
  size_t time_token = tokens.size();
  for (size_t i = 1; i < tokens.size(); i++) {
    if (perf_timestamp(tokens[i].second, &out->time)) {
      time_token = i;
      out->has_time = true;
      break;
    }
  }
  auto is_pid = [](std::string_view t) {
    const size_t slash = t.find('/');
    return slash == std::string_view::npos ? all_digits(t) : all_digits(t.substr(0, slash)) && all_digits(t.substr(slash + 1));
  };
  auto is_cpu = [](std::string_view t) { return t.size() >= 3 && t.front() == '[' && t.back() == ']' && all_digits(t.substr(1, t.size() - 2)); };
  size_t pid_token = tokens.size();
  if (out->has_time) {
    size_t k = time_token;
    if (k >= 2 && is_cpu(tokens[k - 1].second)) k--;
    if (k >= 2 && is_pid(tokens[k - 1].second)) pid_token = k - 1;
  } else {
    for (size_t i = 1; i < tokens.size(); i++) {
      if (is_pid(tokens[i].second)) {
        pid_token = i;
        break;
      }
    }
  }
  if (pid_token >= tokens.size()) {
    *problem = "sample header without a pid";
    return false;
  }
  std::string_view comm = line.substr(0, tokens[pid_token].first);
  while (!comm.empty() && (comm.back() == ' ' || comm.back() == '\t')) comm.remove_suffix(1);
  out->comm.assign(comm.data(), comm.size());
  for (char& c : out->comm)
    if (c == ' ') c = '_';  // as perf's stackcollapse writes the command
  size_t next = out->has_time ? time_token + 1 : pid_token + 1;
  if (!out->has_time && next < tokens.size() && is_cpu(tokens[next].second)) next++;
  if (next < tokens.size() && all_digits(tokens[next].second)) next++;  // the period
  if (next >= tokens.size() || tokens[next].second.back() != ':' || tokens[next].second.size() < 2) {
    *problem = "sample header without an event name";
    return false;
  }
  out->event.assign(tokens[next].second.data(), tokens[next].second.size() - 1);
  const size_t after = tokens[next].first + tokens[next].second.size();
  out->inline_frame = line.substr(after);
  while (!out->inline_frame.empty() && (out->inline_frame.front() == ' ' || out->inline_frame.front() == '\t'))
    out->inline_frame.remove_prefix(1);
  return true;
}

// `ffffffff810a9c85 native_write_msr+0x5 ([kernel.kallsyms])` -> the symbol, named as perf's own
// stackcollapse names it: the symbol without its offset, [unknown] when perf had none, ';' as ':'.
inline bool read_perf_frame(std::string_view line, std::string* name) {
  while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
  while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
  size_t space = line.find_first_of(" \t");
  if (!all_hex(line.substr(0, space))) return false;
  std::string_view rest = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  if (!rest.empty() && rest.back() == ')') {
    const size_t open = rest.rfind(" (");
    if (open != std::string_view::npos) rest = rest.substr(0, open);
    else if (rest.front() == '(') rest = {};  // only a dso
  }
  const size_t plus = rest.rfind("+0x");
  if (plus != std::string_view::npos && plus > 0 && all_hex(rest.substr(plus + 3))) rest = rest.substr(0, plus);
  if (rest.empty()) rest = "[unknown]";
  name->assign(rest.data(), rest.size());
  for (char& c : *name)
    if (c == ';') c = ':';
  return true;
}

// perf's event names carry modifiers after a colon (cycles:u, cpu-clock:ppp); tracepoints have a
// colon of their own (sched:sched_switch), kept.
inline std::string perf_event_type(std::string_view event) {
  const size_t colon = event.rfind(':');
  if (colon != std::string_view::npos) {
    const std::string_view modifiers = event.substr(colon + 1);
    if (!modifiers.empty() && modifiers.find_first_not_of("ukhGHpPSDIWe") == std::string_view::npos)
      event = event.substr(0, colon);
  }
  if (event == "cycles" || event == "cpu-clock" || event == "task-clock" || event == "cpu-cycles" ||
      event == "ref-cycles" || event == "cpu_clock" || event.empty())
    return "cpu";
  return sanitized_type(event);
}

inline Status import_perf_script(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                                 ImportReport* report) {
  const std::string_view text(reinterpret_cast<const char*>(bytes.data), bytes.size);
  auto symbols = std::make_shared<SymbolTable>();
  // (type, block index) -> tree; blocks are 10 s of the samples' own time, from the first sample.
  std::map<std::pair<std::string, int64_t>, Tree> trees;
  ImportReport local;
  local.format = Format::perf_script;
  local.items = "samples";
  PerfHeader header;
  bool in_sample = false, sample_bad = false;
  uint64_t sample_line = 0;
  std::string sample_problem, name;
  std::vector<std::string> frames;  // leaf first, as perf prints them
  std::vector<uint32_t> ids;
  bool have_first_time = false;
  double first_time = 0;
  const int64_t base = import_base_time(options);
  auto problem_at = [&](uint64_t line, const std::string& what) { return "line " + std::to_string(line) + " " + what; };
  auto end_sample = [&]() -> Status {
    if (!in_sample) return {};
    in_sample = false;
    if (!sample_bad && frames.empty() && !header.inline_frame.empty()) {
      if (read_perf_frame(header.inline_frame, &name)) frames.push_back(name);
    }
    if (sample_bad) {
      if (options.strict) return import_error(options, StatusCode::parse_error, "perf script: " + problem_at(sample_line, sample_problem));
      note_skipped(&local, problem_at(sample_line, sample_problem));
      return {};
    }
    if (header.has_time && !have_first_time) {
      have_first_time = true;
      first_time = header.time;
    }
    int64_t block = 0;
    if (header.has_time && header.time >= first_time) {
      const double since = header.time - first_time;
      block = since < 1e12 ? int64_t(since / double(kDefaultResolutionSeconds)) : 0;
    }
    ids.clear();
    ids.push_back(symbols->intern(header.comm));
    for (size_t k = frames.size(); k-- > 0;) ids.push_back(symbols->intern(frames[k]));
    auto it = trees.find({perf_event_type(header.event), block});
    if (it == trees.end()) it = trees.emplace(std::make_pair(perf_event_type(header.event), block), Tree(symbols)).first;
    it->second.insert_ids(ids.data(), ids.size(), 1);
    local.imported++;
    return {};
  };
  size_t pos = 0;
  uint64_t line_number = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    line_number++;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) {
      Status st = end_sample();
      if (!st.ok()) return st;
      continue;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      if (!in_sample) {
        if (options.strict) return import_error(options, StatusCode::parse_error, "perf script: " + problem_at(line_number, "stack line outside a sample"));
        note_skipped(&local, problem_at(line_number, "stack line outside a sample"));
        continue;
      }
      if (sample_bad) continue;
      if (!read_perf_frame(line, &name)) {
        sample_bad = true;
        sample_problem = "stack line is not 'address symbol (module)'";
        sample_line = line_number;
        continue;
      }
      frames.push_back(name);
      continue;
    }
    if (line[0] == '#' && !in_sample) continue;  // perf script --header
    Status st = end_sample();  // a sample without a callchain ends at the next header
    if (!st.ok()) return st;
    in_sample = true;
    sample_bad = false;
    sample_line = line_number;
    frames.clear();
    header = PerfHeader();
    if (!read_perf_header(line, &header, &sample_problem)) sample_bad = true;
  }
  Status st = end_sample();
  if (!st.ok()) return st;
  if (local.imported == 0 && local.skipped > 0)
    return import_error(options, StatusCode::parse_error, "perf script: no sample could be read (" + local.skipped_examples[0] + ")");
  std::set<std::string> types;
  for (auto& entry : trees) {
    ProfileBlock block;
    block.series = import_series_key(options, entry.first.first, {});
    block.info = default_series_info(entry.first.first);
    block.info.unit = "samples";
    block.block_start = base + entry.first.second * kDefaultResolutionSeconds;
    block.tree = std::move(entry.second);
    out->push_back(std::move(block));
    types.insert(entry.first.first);
  }
  local.series = types.size();
  if (report) *report = std::move(local);
  return {};
}

}  // namespace detail

// --- JSON formats: speedscope and Chrome/Node .cpuprofile (nlohmann/json's SAX parser) ---------------

#if defined(PYROSCOPE_WITH_JSON)
namespace detail {

struct JsonValue {
  enum class Kind { null, boolean, number, string } kind = Kind::null;
  double number = 0;
  bool integral = false;  // an integer in the text (exact as double up to 2^53)
  const std::string* text = nullptr;
};

// A SAX handler that knows where it is: each step of the path is an object (with its current key) or
// an array (with the index of its current element). Handlers match paths such as
// "profiles/#/samples/#/#" ('#' = any array index). SAX keeps memory to what the importer stores: a
// document tree of a 100 MB profile would take several times that. No exception is thrown on bad
// input (parse_error is a callback), so this works under -fno-exceptions too.
class JsonPathSax : public nlohmann::json_sax<nlohmann::json> {
 public:
  struct Step {
    bool array = false;
    size_t index = 0;
    std::string key;
  };
  using Pattern = std::vector<std::string>;
  static Pattern pattern(std::string_view text) {
    Pattern out;
    size_t start = 0;
    while (start <= text.size()) {
      size_t slash = text.find('/', start);
      if (slash == std::string_view::npos) slash = text.size();
      out.emplace_back(text.substr(start, slash - start));
      start = slash + 1;
    }
    return out;
  }
  bool at(const Pattern& p) const {
    if (p.size() != path_.size()) return false;
    for (size_t i = 0; i < p.size(); i++) {
      if (p[i] == "#" ? !path_[i].array : (path_[i].array || path_[i].key != p[i])) return false;
    }
    return true;
  }
  size_t index(size_t depth) const { return path_[depth].index; }
  std::string where() const {
    std::string out;
    for (size_t i = 0; i < path_.size(); i++) {
      if (path_[i].array) out += "[" + std::to_string(path_[i].index) + "]";
      else out += (i ? "." : "") + path_[i].key;
    }
    return out.empty() ? "the document" : out;
  }
  bool fail(const std::string& what) {
    if (error_.empty()) error_ = what;
    return false;
  }
  const std::string& error() const { return error_; }
  size_t depth() const { return path_.size(); }

  bool null() override { return scalar(JsonValue()); }
  bool boolean(bool) override {
    JsonValue v;
    v.kind = JsonValue::Kind::boolean;
    return scalar(v);
  }
  bool number_integer(number_integer_t n) override { return number(double(n), true); }
  bool number_unsigned(number_unsigned_t n) override { return number(double(n), true); }
  bool number_float(number_float_t n, const string_t&) override { return number(double(n), false); }
  bool string(string_t& s) override {
    JsonValue v;
    v.kind = JsonValue::Kind::string;
    v.text = &s;
    return scalar(v);
  }
  bool binary(binary_t&) override { return fail("binary value"); }
  bool start_object(std::size_t) override { return open(false); }
  bool key(string_t& k) override {
    path_.back().key = k;
    return true;
  }
  bool end_object() override { return close(false); }
  bool start_array(std::size_t) override { return open(true); }
  bool end_array() override { return close(true); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    std::string what = ex.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> after the id
    const size_t bracket = what.find("] ");
    if (bracket != std::string::npos) what = what.substr(bracket + 2);
    return fail("not valid JSON (byte " + std::to_string(position) + "): " + what);
  }

 protected:
  virtual bool on_value(const JsonValue& value) = 0;
  virtual bool on_begin(bool /*array*/) { return true; }
  virtual bool on_end(bool /*array*/) { return true; }

 private:
  bool number(double n, bool integral) {
    JsonValue v;
    v.kind = JsonValue::Kind::number;
    v.number = n;
    v.integral = integral;
    return scalar(v);
  }
  bool scalar(const JsonValue& v) {
    if (!on_value(v)) return false;
    advance();
    return true;
  }
  // on_begin and on_end see the path to the container (its key or index in its parent), not inside it.
  bool open(bool array) {
    if (path_.size() >= 64) return fail("JSON nested more than 64 levels deep");
    if (path_.empty() && array) return fail("the document is an array, not an object");
    if (!on_begin(array)) return false;
    path_.push_back(Step{array, 0, std::string()});
    return true;
  }
  bool close(bool array) {
    path_.pop_back();
    if (!on_end(array)) return false;
    advance();
    return true;
  }
  void advance() {
    if (!path_.empty() && path_.back().array) path_.back().index++;
  }
  std::vector<Step> path_;
  std::string error_;
};

inline Status run_json_sax(ByteSpan bytes, JsonPathSax* sax, const char* format) {
  const char* begin = reinterpret_cast<const char*>(bytes.data);
  const bool parsed = nlohmann::json::sax_parse(begin, begin + bytes.size, sax);
  if (!parsed || !sax->error().empty())
    return error(StatusCode::parse_error, std::string(format) + ": " + (sax->error().empty() ? "not valid JSON" : sax->error()));
  return {};
}

inline bool as_index(const JsonValue& v, uint64_t limit, uint64_t* out) {
  if (v.kind != JsonValue::Kind::number || !v.integral || v.number < 0 || v.number >= double(limit)) return false;
  *out = uint64_t(v.number);
  return true;
}

// Rounds a weight already in the series' unit; false for NaN, infinities and values past 2^63.
inline bool to_weight(double value, int64_t* out) {
  if (!std::isfinite(value) || std::fabs(value) >= 9.2e18) return false;
  *out = int64_t(std::llround(value));
  return true;
}

// --- speedscope -----------------------------------------------------------------------------------------

struct SpeedscopeProfile {
  std::string type, name, unit;
  std::vector<uint32_t> stack_frames;  // sampled: every stack's frame indexes, root first, one after another
  std::vector<size_t> stack_end;       // end of each stack in stack_frames
  std::vector<double> weights;
  struct Event {
    bool open;
    uint32_t frame;
    double at;
  };
  std::vector<Event> events;
  Event event{true, 0, 0};
  bool event_has_type = false, event_has_frame = false, event_has_at = false;
};

class SpeedscopeSax : public JsonPathSax {
 public:
  std::vector<std::string> frame_names;
  std::vector<SpeedscopeProfile> profiles;
  bool saw_shared_frames = false;

 protected:
  bool on_begin(bool array) override {
    if (array && at(frames_)) saw_shared_frames = true;
    if (!array && at(profile_)) {
      if (index(1) != profiles.size()) return fail("profiles out of order");
      profiles.emplace_back();
    }
    if (!array && at(event_)) {
      SpeedscopeProfile& p = profiles.back();
      p.event_has_type = p.event_has_frame = p.event_has_at = false;
    }
    // A frame without a name is "[unknown]"; the index is that of an element the document has.
    if (!array && at(frame_) && index(2) >= frame_names.size()) frame_names.resize(index(2) + 1, "[unknown]");
    if (array && (at(frame_) || at(profile_))) return fail(where() + " is not an object");
    return true;
  }
  bool on_end(bool array) override {
    if (array && at(sample_)) profiles.back().stack_end.push_back(profiles.back().stack_frames.size());
    if (!array && at(event_)) {
      SpeedscopeProfile& p = profiles.back();
      if (!p.event_has_type || !p.event_has_frame || !p.event_has_at)
        return fail(where() + ": an event needs type, frame and at");
      p.events.push_back(p.event);
    }
    return true;
  }
  bool on_value(const JsonValue& v) override {
    using Kind = JsonValue::Kind;
    if (at(frame_name_)) {
      if (v.kind != Kind::string) return fail(where() + " is not a string");
      frame_names[index(2)] = *v.text;
    } else if (at(sample_frame_)) {
      uint64_t frame;
      if (!as_index(v, 0xffffffffu, &frame)) return fail(where() + " is not a frame index");
      profiles.back().stack_frames.push_back(uint32_t(frame));
    } else if (at(weight_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      profiles.back().weights.push_back(v.number);
    } else if (at(profile_type_) || at(profile_name_) || at(profile_unit_)) {
      if (v.kind != Kind::string) return fail(where() + " is not a string");
      SpeedscopeProfile& p = profiles.back();
      (at(profile_type_) ? p.type : at(profile_name_) ? p.name : p.unit) = *v.text;
    } else if (at(event_type_)) {
      SpeedscopeProfile& p = profiles.back();
      if (v.kind != Kind::string || (*v.text != "O" && *v.text != "C")) return fail(where() + " is not \"O\" or \"C\"");
      p.event.open = *v.text == "O";
      p.event_has_type = true;
    } else if (at(event_frame_)) {
      uint64_t frame;
      if (!as_index(v, 0xffffffffu, &frame)) return fail(where() + " is not a frame index");
      profiles.back().event.frame = uint32_t(frame);
      profiles.back().event_has_frame = true;
    } else if (at(event_at_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      profiles.back().event.at = v.number;
      profiles.back().event_has_at = true;
    } else if (at(frame_) || at(profile_)) {
      return fail(where() + " is not an object");
    } else if (depth() == 0) {
      return fail("the document is not an object");
    }
    return true;
  }

 private:
  const Pattern frames_ = pattern("shared/frames");
  const Pattern frame_ = pattern("shared/frames/#");
  const Pattern frame_name_ = pattern("shared/frames/#/name");
  const Pattern profile_ = pattern("profiles/#");
  const Pattern profile_type_ = pattern("profiles/#/type");
  const Pattern profile_name_ = pattern("profiles/#/name");
  const Pattern profile_unit_ = pattern("profiles/#/unit");
  const Pattern sample_ = pattern("profiles/#/samples/#");
  const Pattern sample_frame_ = pattern("profiles/#/samples/#/#");
  const Pattern weight_ = pattern("profiles/#/weights/#");
  const Pattern event_ = pattern("profiles/#/events/#");
  const Pattern event_type_ = pattern("profiles/#/events/#/type");
  const Pattern event_frame_ = pattern("profiles/#/events/#/frame");
  const Pattern event_at_ = pattern("profiles/#/events/#/at");
};

// Units: time in nanoseconds, "none" as samples, bytes as bytes.
inline bool speedscope_unit(const std::string& unit, std::string* type, std::string* our_unit, double* scale) {
  static const std::pair<const char*, double> kTime[] = {
      {"nanoseconds", 1}, {"microseconds", 1e3}, {"milliseconds", 1e6}, {"seconds", 1e9}};
  for (const auto& t : kTime) {
    if (unit == t.first) {
      *type = "cpu";
      *our_unit = "nanoseconds";
      *scale = t.second;
      return true;
    }
  }
  *scale = 1;
  if (unit == "none" || unit.empty()) {
    *type = "cpu";
    *our_unit = "samples";
    return true;
  }
  if (unit == "bytes") {
    *type = "alloc_space";
    *our_unit = "bytes";
    return true;
  }
  return false;
}

inline Status import_speedscope(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                                ImportReport* report) {
  auto fail = [&](const std::string& what) { return import_error(options, StatusCode::parse_error, "speedscope: " + what); };
  SpeedscopeSax sax;
  Status st = run_json_sax(bytes, &sax, "speedscope");
  if (!st.ok()) return import_error(options, st.code(), st.message());
  if (!sax.saw_shared_frames) return fail("no shared.frames (not a speedscope file?)");
  if (sax.profiles.empty()) return fail("no profiles");
  auto symbols = std::make_shared<SymbolTable>();
  std::vector<uint32_t> frame_symbol(sax.frame_names.size());
  for (size_t i = 0; i < sax.frame_names.size(); i++) frame_symbol[i] = symbols->intern(sax.frame_names[i]);
  ImportReport local;
  local.format = Format::speedscope;
  local.items = "samples";
  std::vector<ProfileBlock> blocks;
  std::set<std::string> profile_tags;
  std::vector<uint32_t> ids;
  const int64_t base = import_base_time(options);
  // Evented profiles insert the whole open stack at every event: 100 000 nested opens would cost the
  // square of that. Work is bounded by the input's size (real profiles: far below).
  const uint64_t frame_budget = 64 * uint64_t(bytes.size) + (uint64_t(1) << 20);
  uint64_t frames_so_far = 0;
  for (size_t pi = 0; pi < sax.profiles.size(); pi++) {
    SpeedscopeProfile& p = sax.profiles[pi];
    const std::string where = "profiles[" + std::to_string(pi) + "]";
    std::string type, unit;
    double scale;
    if (!speedscope_unit(p.unit, &type, &unit, &scale)) return fail(where + ": unknown unit '" + p.unit + "'");
    Tree tree(symbols);
    auto add = [&](const uint32_t* frames, size_t n, double weight, const std::string& what) -> Status {
      int64_t w;
      if (!to_weight(weight * scale, &w)) return fail(where + ": " + what + ": weight out of range");
      if (w < 0) {
        if (options.strict) return fail(where + ": " + what + ": negative weight");
        note_skipped(&local, where + " " + what + " negative weight");
        return {};
      }
      uint64_t sum;
      if (add_overflows(tree.total(), uint64_t(w), &sum)) return fail(where + ": total weight overflows 64 bits");
      frames_so_far += n;
      if (frames_so_far > frame_budget)
        return fail(where + ": " + what + ": stacks deeper in all than 64 frames per byte of the file: refused as hostile");
      ids.clear();
      for (size_t k = 0; k < n; k++) {
        if (frames[k] >= frame_symbol.size())
          return fail(where + ": " + what + ": frame " + std::to_string(frames[k]) + " of " +
                      std::to_string(frame_symbol.size()) + " shared frames");
        ids.push_back(frame_symbol[frames[k]]);
      }
      tree.insert_ids(ids.data(), ids.size(), uint64_t(w));
      local.imported++;
      return {};
    };
    if (p.type == "sampled") {
      if (p.weights.size() != p.stack_end.size())
        return fail(where + ": " + std::to_string(p.weights.size()) + " weights for " + std::to_string(p.stack_end.size()) + " samples");
      size_t begin = 0;
      for (size_t s = 0; s < p.stack_end.size(); s++) {
        st = add(p.stack_frames.data() + begin, p.stack_end[s] - begin, p.weights[s], "sample " + std::to_string(s));
        if (!st.ok()) return st;
        begin = p.stack_end[s];
      }
    } else if (p.type == "evented") {
      std::vector<uint32_t> open;
      double last = 0;
      for (size_t e = 0; e < p.events.size(); e++) {
        const SpeedscopeProfile::Event& ev = p.events[e];
        if (e > 0 && ev.at < last) return fail(where + ": events[" + std::to_string(e) + "] is earlier than the one before");
        if (!open.empty() && ev.at > last) {
          st = add(open.data(), open.size(), ev.at - last, "events[" + std::to_string(e) + "]");
          if (!st.ok()) return st;
        }
        last = ev.at;
        if (ev.open) {
          open.push_back(ev.frame);
        } else {
          if (open.empty() || open.back() != ev.frame)
            return fail(where + ": events[" + std::to_string(e) + "] closes frame " + std::to_string(ev.frame) +
                        (open.empty() ? " but none is open" : " but frame " + std::to_string(open.back()) + " is open"));
          open.pop_back();
        }
      }
    } else {
      return fail(where + ": type '" + p.type + "' is neither sampled nor evented");
    }
    if (tree.total() == 0) continue;
    Tags tags;
    if (sax.profiles.size() > 1) {  // one series per profile, told apart by a tag naming it
      std::string name = sanitized_tag_value(p.name.empty() ? std::to_string(pi) : p.name);
      if (!profile_tags.insert(name).second) name += "_" + std::to_string(pi);
      profile_tags.insert(name);
      tags.push_back({"profile", name});
    }
    ProfileBlock block;
    block.series = import_series_key(options, type, tags);
    block.info = default_series_info(type);
    block.info.unit = unit;
    block.block_start = base;
    block.tree = std::move(tree);
    blocks.push_back(std::move(block));
    local.series++;
  }
  for (ProfileBlock& b : blocks) out->push_back(std::move(b));
  if (report) *report = std::move(local);
  return {};
}

// --- Chrome / Node .cpuprofile ----------------------------------------------------------------------------

class CpuprofileSax : public JsonPathSax {
 public:
  struct Node {
    int64_t id = 0;
    int64_t parent = INT64_MIN;  // from a "parent" field (newer files) or the children lists
    std::string function_name, url;
    int64_t line = -1;
    size_t first_child = 0, child_count = 0;  // into children
  };
  std::vector<Node> nodes;
  std::vector<int64_t> children;
  std::vector<int64_t> samples;
  std::vector<double> time_deltas;
  double start_time = 0, end_time = 0;
  bool has_start = false, has_end = false, saw_nodes = false;

 protected:
  bool on_begin(bool array) override {
    if (array && at(nodes_)) saw_nodes = true;
    if (!array && at(node_)) {
      nodes.emplace_back();
      nodes.back().first_child = children.size();
    }
    if (array && at(node_)) return fail(where() + " is not an object");
    return true;
  }
  bool on_value(const JsonValue& v) override {
    using Kind = JsonValue::Kind;
    auto integer = [&](int64_t* out) {
      if (v.kind != Kind::number || !v.integral || std::fabs(v.number) > 9.0e15) return fail(where() + " is not an integer");
      *out = int64_t(v.number);
      return true;
    };
    auto text = [&](std::string* out) {
      if (v.kind != Kind::string) return fail(where() + " is not a string");
      *out = *v.text;
      return true;
    };
    if (at(node_id_)) return integer(&nodes.back().id);
    if (at(node_parent_)) return integer(&nodes.back().parent);
    if (at(node_child_)) {
      int64_t child;
      if (!integer(&child)) return false;
      children.push_back(child);
      nodes.back().child_count++;
      return true;
    }
    if (at(function_name_)) return text(&nodes.back().function_name);
    if (at(url_)) return text(&nodes.back().url);
    if (at(line_)) return integer(&nodes.back().line);
    if (at(sample_)) {
      int64_t id;
      if (!integer(&id)) return false;
      samples.push_back(id);
      return true;
    }
    if (at(delta_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      time_deltas.push_back(v.number);
      return true;
    }
    if (at(start_) || at(end_)) {
      if (v.kind != Kind::number) return fail(where() + " is not a number");
      (at(start_) ? start_time : end_time) = v.number;
      (at(start_) ? has_start : has_end) = true;
      return true;
    }
    if (at(node_)) return fail(where() + " is not an object");
    if (depth() == 0) return fail("the document is not an object");
    return true;
  }

 private:
  const Pattern nodes_ = pattern("nodes");
  const Pattern node_ = pattern("nodes/#");
  const Pattern node_id_ = pattern("nodes/#/id");
  const Pattern node_parent_ = pattern("nodes/#/parent");
  const Pattern node_child_ = pattern("nodes/#/children/#");
  const Pattern function_name_ = pattern("nodes/#/callFrame/functionName");
  const Pattern url_ = pattern("nodes/#/callFrame/url");
  const Pattern line_ = pattern("nodes/#/callFrame/lineNumber");
  const Pattern sample_ = pattern("samples/#");
  const Pattern delta_ = pattern("timeDeltas/#");
  const Pattern start_ = pattern("startTime");
  const Pattern end_ = pattern("endTime");
};

inline Status import_cpuprofile(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                                ImportReport* report) {
  auto fail = [&](const std::string& what) { return import_error(options, StatusCode::parse_error, "cpuprofile: " + what); };
  CpuprofileSax sax;
  Status st = run_json_sax(bytes, &sax, "cpuprofile");
  if (!st.ok()) return import_error(options, st.code(), st.message());
  if (!sax.saw_nodes) return fail("no nodes (not a .cpuprofile?)");
  if (sax.samples.size() != sax.time_deltas.size())
    return fail(std::to_string(sax.samples.size()) + " samples but " + std::to_string(sax.time_deltas.size()) + " timeDeltas");
  const size_t n = sax.nodes.size();
  std::unordered_map<int64_t, uint32_t> index_of;
  for (size_t i = 0; i < n; i++)
    if (!index_of.emplace(sax.nodes[i].id, uint32_t(i)).second) return fail("node id " + std::to_string(sax.nodes[i].id) + " defined twice");
  std::vector<uint32_t> parent(n, IdIndex::kMissing);
  for (size_t i = 0; i < n; i++) {
    const CpuprofileSax::Node& node = sax.nodes[i];
    if (node.parent != INT64_MIN) {
      auto it = index_of.find(node.parent);
      if (it == index_of.end()) return fail("node " + std::to_string(node.id) + ": parent " + std::to_string(node.parent) + " not defined");
      parent[i] = it->second;
    }
  }
  for (size_t i = 0; i < n; i++) {
    const CpuprofileSax::Node& node = sax.nodes[i];
    for (size_t c = 0; c < node.child_count; c++) {
      const int64_t child_id = sax.children[node.first_child + c];
      auto it = index_of.find(child_id);
      if (it == index_of.end()) return fail("node " + std::to_string(node.id) + ": child " + std::to_string(child_id) + " not defined");
      if (parent[it->second] != IdIndex::kMissing && parent[it->second] != i)
        return fail("node " + std::to_string(child_id) + " has two parents");
      parent[it->second] = uint32_t(i);
    }
  }
  // Frame names as speedscope and DevTools show them; the "(root)" node above everything is no frame.
  auto symbols = std::make_shared<SymbolTable>();
  std::vector<uint32_t> symbol(n);
  std::vector<uint8_t> is_root_marker(n, 0);
  for (size_t i = 0; i < n; i++) {
    const CpuprofileSax::Node& node = sax.nodes[i];
    std::string name = node.function_name;
    if (name.empty()) {
      name = node.url.empty() ? "(anonymous)"
                              : "(anonymous " + std::string(base_name_of(node.url)) + ":" + std::to_string(node.line + 1) + ")";
    }
    is_root_marker[i] = parent[i] == IdIndex::kMissing && name == "(root)";
    symbol[i] = symbols->intern(name);
  }
  // A sample lasts until the next one (DevTools' reading); the last one until endTime. Time deltas can
  // be negative in Chrome's files: time is held to never run backwards, as speedscope does.
  std::unordered_map<uint64_t, uint64_t> weight_of;  // (block << 32 | node) -> nanoseconds
  ImportReport local;
  local.format = Format::chrome_cpuprofile;
  local.items = "samples";
  std::vector<double> times(sax.samples.size());
  double t = sax.start_time;
  for (size_t s = 0; s < sax.samples.size(); s++) {
    t += sax.time_deltas[s];
    times[s] = s == 0 ? t : std::max(times[s - 1], t);
  }
  for (size_t s = 0; s < sax.samples.size(); s++) {
    auto it = index_of.find(sax.samples[s]);
    if (it == index_of.end()) {
      if (options.strict) return fail("sample " + std::to_string(s) + ": node " + std::to_string(sax.samples[s]) + " not defined");
      note_skipped(&local, "sample " + std::to_string(s) + " unknown node");
      continue;
    }
    const double end = s + 1 < times.size() ? times[s + 1] : std::max(times[s], sax.has_end ? sax.end_time : times[s]);
    int64_t ns;
    if (!to_weight((end - times[s]) * 1000.0, &ns) || ns < 0) return fail("sample " + std::to_string(s) + ": time out of range");
    const double since = (times[s] - times[0]) / 1e6;
    if (!(since >= 0 && since < 1e12)) return fail("sample " + std::to_string(s) + ": time out of range");
    const uint64_t block = uint64_t(since / double(kDefaultResolutionSeconds));
    if (block > 0xffffffffu) return fail("sample " + std::to_string(s) + ": time out of range");
    uint64_t& w = weight_of[block << 32 | it->second];
    if (add_overflows(w, uint64_t(ns), &w)) return fail("total time overflows 64 bits");
    local.imported++;
  }
  std::map<uint64_t, Tree> trees;
  std::vector<uint32_t> path;
  // Each sampled node's stack is walked from the node up: a chain of nodes all sampled would cost the
  // square of its length, so the walking is bounded by the input's size (real profiles: far below).
  const uint64_t step_budget = 64 * uint64_t(bytes.size) + (uint64_t(1) << 20);
  uint64_t steps = 0;
  for (const auto& entry : weight_of) {
    if (entry.second == 0) continue;
    path.clear();
    for (uint32_t node = uint32_t(entry.first); node != IdIndex::kMissing; node = parent[node]) {
      if (path.size() > n) return fail("the nodes' parent links form a cycle");
      if (++steps > step_budget) return fail("stacks deeper in all than 64 frames per byte of the file: refused as hostile");
      if (!is_root_marker[node]) path.push_back(symbol[node]);
    }
    std::reverse(path.begin(), path.end());
    auto tree = trees.find(entry.first >> 32);
    if (tree == trees.end()) tree = trees.emplace(entry.first >> 32, Tree(symbols)).first;
    uint64_t sum;
    if (add_overflows(tree->second.total(), entry.second, &sum)) return fail("total time overflows 64 bits");
    tree->second.insert_ids(path.data(), path.size(), entry.second);
  }
  const int64_t base = import_base_time(options);
  for (auto& entry : trees) {
    ProfileBlock block;
    block.series = import_series_key(options, "cpu", {});
    block.info = default_series_info("cpu");
    block.info.unit = "nanoseconds";
    block.block_start = base + int64_t(entry.first) * kDefaultResolutionSeconds;
    block.tree = std::move(entry.second);
    out->push_back(std::move(block));
  }
  local.series = trees.empty() ? 0 : 1;
  if (report) *report = std::move(local);
  return {};
}

}  // namespace detail
#endif  // PYROSCOPE_WITH_JSON

// --- format detection and the import entry point -------------------------------------------------------

namespace detail {

// Every top-level field is one of profile.proto's with its wire type, and a sample type is there.
// truncated_ok: the bytes are the start of a longer profile (a peek into gzip), so running out is fine.
inline bool looks_like_pprof(ByteSpan bytes, bool truncated_ok) {
  static const int8_t kWire[15] = {-1, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 2, 0, 0, 0};
  ProtoReader reader(bytes, 0);
  ProtoField f;
  bool has_sample_type = false;
  size_t fields = 0;
  while (reader.next(&f)) {
    if (f.number > 14) return false;
    const bool packed_comment = f.number == 13 && f.wire == 2;
    if (f.wire != kWire[f.number] && !packed_comment) return false;
    has_sample_type = has_sample_type || f.number == 1;
    fields++;
  }
  if (!reader.error().empty() && !(truncated_ok && fields > 0)) return false;
  return has_sample_type;
}

inline std::string printable_start(ByteSpan bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size && i < 24; i++) {
    const uint8_t c = bytes.data[i];
    if (c >= 0x20 && c < 0x7f && c != '\\') out += char(c);
    else out += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
  }
  return out;
}

inline Status detect_plain_format(ByteSpan bytes, bool truncated, Format* out) {
  static const uint8_t kPyroMagic[8] = {0x89, 'P', 'Y', 'R', 'O', '\r', '\n', 0x1a};
  if (bytes.size >= 8 && std::memcmp(bytes.data, kPyroMagic, 8) == 0) {
    *out = Format::pyro;
    return {};
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data), bytes.size);
  size_t first = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") first = 3;
  while (first < text.size() && (is_space(text[first]) || text[first] == '\n')) first++;
  if (first < text.size() && (text[first] == '{' || text[first] == '[')) {
    if (text[first] == '[')
      return error(StatusCode::parse_error, "a JSON array (Chrome trace events?): not a format read here; "
                                            "a .cpuprofile or speedscope file is a JSON object");
    const std::string_view head = text.substr(first, 1 << 16);
    if (head.find("speedscope.app/file-format-schema") != std::string_view::npos) *out = Format::speedscope;
    else if (head.find("\"nodes\"") != std::string_view::npos) *out = Format::chrome_cpuprofile;
    else if (head.find("\"shared\"") != std::string_view::npos || head.find("\"profiles\"") != std::string_view::npos)
      *out = Format::speedscope;
    else
      return error(StatusCode::parse_error, "JSON, but neither a speedscope file nor a .cpuprofile (no \"nodes\", "
                                            "\"shared\" or \"profiles\" near the start)");
    return {};
  }
  if (looks_like_pprof(bytes, truncated)) {
    *out = Format::pprof;
    return {};
  }
  // Text: the first line that is neither blank nor a comment decides.
  size_t pos = first;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos || line[0] == '#') continue;
    PerfHeader header;
    std::string problem;
    if (line[0] != ' ' && line[0] != '\t' && read_perf_header(line, &header, &problem) && header.has_time) {
      *out = Format::perf_script;
      return {};
    }
    if (read_folded_line(line).problem.empty()) {
      *out = Format::folded;
      return {};
    }
    break;
  }
  return error(StatusCode::parse_error, "not a profile format read here (pprof, folded, perf script, speedscope, "
                                        ".cpuprofile); it starts with \"" + printable_start(bytes) + "\"");
}

}  // namespace detail

Status detect_format(ByteSpan bytes, Format* out, const InflateFunction& inflate) {
  if (!detail::is_gzip(bytes)) return detail::detect_plain_format(bytes, false, out);
  // A peek: the first 64 KiB of the inflated bytes tell the format. An inflater that gives no prefix
  // when stopped early is asked for the whole (up to the default cap) instead.
  std::string head;
  Status st = detail::gunzip(bytes, inflate, 1 << 16, &head, true);
  if (st.ok() && head.empty() && bytes.size > 18) st = detail::gunzip(bytes, inflate, ImportOptions().max_inflated_bytes, &head, true);
  if (!st.ok()) return st;
  if (detail::is_gzip({reinterpret_cast<const uint8_t*>(head.data()), head.size()}))
    return detail::error(StatusCode::parse_error, "gzip inside gzip");
  return detail::detect_plain_format({reinterpret_cast<const uint8_t*>(head.data()), head.size()}, true, out);
}

Status import_profile(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out, ImportReport* report) {
  Status st = detail::check_import_options(options);
  if (!st.ok()) return st;
  std::string inflated;
  ByteSpan data = bytes;
  if (detail::is_gzip(bytes)) {
    st = detail::gunzip(bytes, options.inflate, options.max_inflated_bytes, &inflated, false);
    if (!st.ok()) return detail::import_error(options, st.code(), st.message());
    data = ByteSpan{reinterpret_cast<const uint8_t*>(inflated.data()), inflated.size()};
    if (detail::is_gzip(data)) return detail::import_error(options, StatusCode::parse_error, "gzip inside gzip");
  }
  Format format = options.format;
  if (!options.has_format) {
    st = detail::detect_plain_format(data, false, &format);
    if (!st.ok()) return detail::import_error(options, st.code(), st.message());
  }
  ImportReport local;
  switch (format) {
    case Format::pyro:
      return detail::import_error(options, StatusCode::invalid_argument,
                                  "a .pyro file is opened (Dataset::add_file, add_bytes), not imported");
    case Format::pprof:
      st = detail::import_pprof(data, options, out, &local);
      break;
    case Format::perf_script:
      st = detail::import_perf_script(data, options, out, &local);
      break;
    case Format::folded: {
      FoldedImporter folded(options.strict);
      folded.add(reinterpret_cast<const char*>(data.data), data.size);
      st = folded.finish();
      if (!st.ok()) return detail::import_error(options, st.code(), st.message());
      local = folded.report();
      if (folded.tree().total() > 0) {
        ProfileBlock block;
        block.series = detail::import_series_key(options, kDefaultProfileType, {});
        block.info = default_series_info(kDefaultProfileType);
        block.block_start = detail::import_base_time(options);
        block.tree = std::move(folded.tree());
        out->push_back(std::move(block));
        local.series = 1;
      }
      break;
    }
    case Format::speedscope:
    case Format::chrome_cpuprofile:
#if defined(PYROSCOPE_WITH_JSON)
      st = format == Format::speedscope ? detail::import_speedscope(data, options, out, &local)
                                        : detail::import_cpuprofile(data, options, out, &local);
      break;
#else
      return detail::import_error(options, StatusCode::feature_disabled,
                                  std::string(format_name(format)) + " import needs the JSON parser: compile the "
                                  "implementation with PYROSCOPE_WITH_JSON (nlohmann/json; Debian's nlohmann-json3-dev)");
#endif
  }
  if (!st.ok()) return st;
  local.format = format;
  if (report) *report = std::move(local);
  return {};
}

// --- export -----------------------------------------------------------------------------------------------

namespace detail {

// The union of several trees' stacks, with one value per tree on every node: what a pprof of several
// sample types holds (one sample per stack, one value per type). One tree is its own union; several
// are merged into a tree of their shape (Tree's open-addressing index makes that fast), and each
// tree's nodes are found in it to place their values.
struct StackUnion {
  const Tree* shape = nullptr;
  Tree merged;
  std::vector<uint64_t> values;  // node * count + k
  size_t count = 0;

  explicit StackUnion(const std::vector<ExportProfile>& profiles) : count(profiles.size()) {
    if (count == 1) {
      shape = profiles[0].tree;
      values.resize(shape->node_count());
      for (uint32_t node = 0; node < shape->node_count(); node++) values[node] = shape->self(node);
      return;
    }
    for (const ExportProfile& p : profiles) merged.merge(*p.tree);
    shape = &merged;
    values.assign(size_t(merged.node_count()) * count, 0);
    for (size_t k = 0; k < count; k++) {
      const Tree& tree = *profiles[k].tree;
      std::vector<uint32_t> remap(tree.symbols().size(), SymbolTable::kNone);
      std::vector<uint32_t> mapped(tree.node_count(), Tree::kRoot);
      values[k] += tree.self(Tree::kRoot);
      for (uint32_t node = 1; node < tree.node_count(); node++) {
        // Every Tree makes a node after its parent, so the parent is mapped already.
        PYROSCOPE_ASSERT(tree.parent(node) < node);
        uint32_t& symbol = remap[tree.symbol(node)];
        if (symbol == SymbolTable::kNone) symbol = merged.symbols().find(tree.name(node));
        mapped[node] = merged.child(mapped[tree.parent(node)], symbol);
        PYROSCOPE_ASSERT(mapped[node] != Tree::kNoNode);  // the merge made every stack of every tree
        values[size_t(mapped[node]) * count + k] += tree.self(node);
      }
    }
  }
  uint32_t node_count() const { return shape->node_count(); }
  uint32_t symbol_count() const { return shape->symbols().size(); }
  std::string_view name(uint32_t symbol) const { return shape->symbols().name(symbol); }
  // Symbols from the node up to the root: leaf first.
  void leaf_first(uint32_t node, std::vector<uint64_t>* out) const {
    out->clear();
    for (; node != Tree::kRoot; node = shape->parent(node)) out->push_back(shape->symbol(node));
  }
};

inline Status check_export(const std::vector<ExportProfile>& profiles) {
  if (profiles.empty()) return error(StatusCode::invalid_argument, "nothing to export");
  for (const ExportProfile& p : profiles) {
    if (!p.tree) return error(StatusCode::invalid_argument, "export of " + p.type + ": no tree");
  }
  return {};
}

// JSON string with the characters JSON needs escaped, and bytes that are not UTF-8 replaced by U+FFFD
// (a JSON document must be UTF-8; perf and old compilers can leave other bytes in names).
inline void put_json_string(std::string* out, std::string_view s) {
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = uint8_t(s[i]);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(char(c));
      i++;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out->append(buf);
      i++;
    } else if (c < 0x80) {
      out->push_back(char(c));
      i++;
    } else {
      const size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
      bool valid = n > 0 && i + n <= s.size();
      for (size_t k = 1; valid && k < n; k++) valid = (uint8_t(s[i + k]) & 0xc0) == 0x80;
      if (valid && n == 3) {
        const uint8_t c1 = uint8_t(s[i + 1]);
        valid = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);  // overlong, surrogates
      }
      if (valid && n == 4) {
        const uint8_t c1 = uint8_t(s[i + 1]);
        valid = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
      }
      if (valid) {
        out->append(s.data() + i, n);
        i += n;
      } else {
        out->append("\xEF\xBF\xBD");
        i++;
      }
    }
  }
  out->push_back('"');
}

}  // namespace detail

Status export_pprof(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out) {
  Status st = detail::check_export(profiles);
  if (!st.ok()) return st;
  const detail::StackUnion stacks(profiles);
  // The string table: index 0 is "" as profile.proto requires.
  std::vector<std::string_view> strings{std::string_view()};
  std::unordered_map<std::string_view, uint64_t> string_index{{std::string_view(), 0}};
  auto intern = [&](std::string_view s) {
    auto it = string_index.emplace(s, strings.size());
    if (it.second) strings.push_back(s);
    return it.first->second;
  };
  std::string proto, message, scratch;
  detail::ProtoWriter profile(&proto);
  for (const ExportProfile& p : profiles) {
    message.clear();
    detail::ProtoWriter vt(&message);
    vt.varint_field(1, intern(p.type));
    vt.varint_field(2, intern(p.info.unit));
    profile.bytes_field(1, message);
  }
  std::vector<uint64_t> location_ids, values(stacks.count);
  std::vector<uint8_t> used(stacks.symbol_count(), 0);
  for (uint32_t node = 0; node < stacks.node_count(); node++) {
    bool any = false;
    for (size_t k = 0; k < stacks.count; k++) {
      values[k] = stacks.values[size_t(node) * stacks.count + k];
      if (values[k] > uint64_t(INT64_MAX))
        return detail::error(StatusCode::invalid_argument, "a value of " + profiles[k].type + " exceeds pprof's int64");
      any = any || values[k] != 0;
    }
    if (!any) continue;
    stacks.leaf_first(node, &location_ids);
    for (uint64_t& id : location_ids) {
      used[id] = 1;
      id += 1;  // location and function ids are symbol + 1: pprof ids are never 0
    }
    message.clear();
    detail::ProtoWriter sample(&message);
    if (!location_ids.empty()) sample.packed_field(1, location_ids.data(), location_ids.size(), &scratch);
    sample.packed_field(2, values.data(), values.size(), &scratch);
    profile.bytes_field(2, message);
  }
  std::string line;
  for (uint32_t symbol = 0; symbol < stacks.symbol_count(); symbol++) {
    if (!used[symbol]) continue;
    line.clear();
    detail::ProtoWriter(&line).varint_field(1, symbol + 1);
    message.clear();
    detail::ProtoWriter location(&message);
    location.varint_field(1, symbol + 1);
    location.bytes_field(4, line);
    profile.bytes_field(4, message);
  }
  for (uint32_t symbol = 0; symbol < stacks.symbol_count(); symbol++) {
    if (!used[symbol]) continue;
    message.clear();
    detail::ProtoWriter function(&message);
    function.varint_field(1, symbol + 1);
    const uint64_t name = intern(stacks.name(symbol));
    function.varint_field(2, name);
    function.varint_field(3, name);
    profile.bytes_field(5, message);
  }
  const ExportProfile* with_period = nullptr;
  for (const ExportProfile& p : profiles)
    if (!with_period && p.info.period > 0) with_period = &p;
  uint64_t period_type = 0, period_unit = 0;
  if (with_period) {
    period_type = intern(with_period->info.period_type);
    period_unit = intern(with_period->info.period_unit);
  }
  for (std::string_view s : strings) profile.bytes_field(6, s);
  if (options.from != 0) {
    profile.varint_field(9, uint64_t(options.from) * 1000000000u);
    if (options.until > options.from) profile.varint_field(10, uint64_t(options.until - options.from) * 1000000000u);
  }
  if (with_period) {
    message.clear();
    detail::ProtoWriter vt(&message);
    vt.varint_field(1, period_type);
    vt.varint_field(2, period_unit);
    profile.bytes_field(11, message);
    profile.varint_field(12, uint64_t(with_period->info.period));
  }
  bool can_gzip = bool(options.deflate);
#if defined(PYROSCOPE_WITH_ZLIB)
  can_gzip = true;
#endif
  if (options.gzip && can_gzip) return detail::gzip({reinterpret_cast<const uint8_t*>(proto.data()), proto.size()}, options.deflate, out);
  *out = std::move(proto);
  return {};
}

Status export_speedscope(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out) {
  Status st = detail::check_export(profiles);
  if (!st.ok()) return st;
  SymbolTable frames;  // shared by the profiles, by name
  std::vector<std::vector<uint32_t>> frame_of(profiles.size());
  for (size_t k = 0; k < profiles.size(); k++) {
    const Tree& tree = *profiles[k].tree;
    frame_of[k].assign(tree.symbols().size(), SymbolTable::kNone);
    for (uint32_t node = 1; node < tree.node_count(); node++) {
      uint32_t& frame = frame_of[k][tree.symbol(node)];
      if (frame == SymbolTable::kNone) frame = frames.intern(tree.name(node));
    }
  }
  std::string& json = *out;
  json.clear();
  json += "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",\"shared\":{\"frames\":[";
  for (uint32_t f = 0; f < frames.size(); f++) {
    json += f ? ",{\"name\":" : "{\"name\":";
    detail::put_json_string(&json, frames.name(f));
    json += '}';
  }
  json += "]},\"profiles\":[";
  std::vector<uint32_t> stack;
  char number[24];
  for (size_t k = 0; k < profiles.size(); k++) {
    const ExportProfile& p = profiles[k];
    const Tree& tree = *p.tree;
    const std::string& unit = p.info.unit;
    const bool known_unit = unit == "nanoseconds" || unit == "microseconds" || unit == "milliseconds" ||
                            unit == "seconds" || unit == "bytes";
    json += k ? ",{\"type\":\"sampled\",\"name\":" : "{\"type\":\"sampled\",\"name\":";
    detail::put_json_string(&json, options.name.empty() ? p.type : options.name + " " + p.type);
    json += ",\"unit\":";
    detail::put_json_string(&json, known_unit ? unit : std::string("none"));
    std::snprintf(number, sizeof number, "%" PRIu64, tree.total());
    json += ",\"startValue\":0,\"endValue\":";
    json += number;
    json += ",\"samples\":[";
    std::string weights;
    bool first = true;
    for (uint32_t node = 0; node < tree.node_count(); node++) {
      if (tree.self(node) == 0) continue;
      stack.clear();
      for (uint32_t n = node; n != Tree::kRoot; n = tree.parent(n)) stack.push_back(frame_of[k][tree.symbol(n)]);
      json += first ? "[" : ",[";
      for (size_t i = stack.size(); i-- > 0;) {
        std::snprintf(number, sizeof number, i + 1 == stack.size() ? "%u" : ",%u", stack[i]);
        json += number;
      }
      json += ']';
      std::snprintf(number, sizeof number, first ? "%" PRIu64 : ",%" PRIu64, tree.self(node));
      weights += number;
      first = false;
    }
    json += "],\"weights\":[";
    json += weights;
    json += "]}";
  }
  json += "],\"name\":";
  detail::put_json_string(&json, options.name.empty() ? std::string("profile") : options.name);
  json += ",\"activeProfileIndex\":0,\"exporter\":\"pyroscope.hpp " PYROSCOPE_VERSION_STRING "\"}";
  return {};
}

}  // namespace pyroscope

#if defined(PYROSCOPE_PLATFORM_LINUX) && !defined(PYROSCOPE_NO_SAMPLER)

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <link.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <map>
#include <thread>
#include <unordered_map>

