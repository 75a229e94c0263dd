// [SECTION] Formats: import and export ============================================================
//
// The formats the ecosystem speaks, read into ProfileBlocks (which Dataset::add_blocks or a Writer
// take) and written from trees: pprof (gzipped or plain profile.proto), folded text, `perf script`
// text, speedscope JSON and Chrome/Node .cpuprofile. docs/formats.md says what maps to what.
//
// Parts need a library, switched on where the implementation is compiled (not where the API is used):
//   PYROSCOPE_WITH_ZLIB   gzip in and out through zlib (link -lz); else ImportOptions::inflate /
//                         ExportOptions::deflate hooks (the browser's stb zlib), else gzip is refused.
//   PYROSCOPE_WITH_JSON   speedscope and .cpuprofile import through nlohmann/json's SAX parser
//                         (<nlohmann/json.hpp>, header-only); works under -fno-exceptions.
// pprof's protobuf and every writer are hand-written and need neither.

enum class Format : uint8_t { pyro, pprof, folded, perf_script, speedscope, chrome_cpuprofile };
// "pyro", "pprof", "folded", "perf-script", "speedscope", "cpuprofile". Thread safety: any thread.
const char* format_name(Format format);
// The reverse of format_name (also "perf" and "chrome"); invalid_argument naming the choices.
Status parse_format_name(std::string_view name, Format* out);

// Inflates a raw DEFLATE stream (RFC 1951; the gzip wrapper around it is read by the caller) into
// *out. Output beyond max_output bytes is refused with StatusCode::too_large, leaving in *out the
// first max_output bytes if the inflater can give them (a streaming one can; a one-shot one may leave
// it empty): that is the guard against gzip bombs. stb_image.h's stbi_zlib_decode_noheader_buffer fits.
using InflateFunction = std::function<Status(ByteSpan deflated, uint64_t max_output, std::string* out)>;
// Compresses raw into a raw DEFLATE stream (stb_image_write.h's stbi_zlib_compress output without its
// 2-byte header and 4-byte Adler-32 trailer fits).
using DeflateFunction = std::function<Status(ByteSpan raw, std::string* out)>;
// What this build has: zlib (PYROSCOPE_WITH_ZLIB) and the JSON importers (PYROSCOPE_WITH_JSON).
bool formats_have_zlib();
bool formats_have_json();

// The format of bytes, from their content (never a file name). gzip is looked through with inflate
// (null: zlib when built in): a gzipped pprof is pprof. parse_error naming what the bytes start with
// when they are none of the formats; feature_disabled for gzip without an inflater.
// Thread safety: any thread.
Status detect_format(ByteSpan bytes, Format* out, const InflateFunction& inflate = nullptr);

struct ImportOptions {
  std::string source_name;  // starts every error: "cpu.pb.gz: pprof: offset 812: sample 12: location 99 not defined"
  std::string app;          // application of every series (required)
  Tags tags;                // added to every series; they win over tags a profile brings (pprof labels)
  // Unix seconds: where a profile without its own time is placed (folded, speedscope), and the base of
  // relative timestamps (perf script, .cpuprofile: samples spread over blocks by their time since the
  // first sample). 0: now. pprof's time_nanos, when set, places a pprof profile instead.
  int64_t time = 0;
  // Text formats are lenient by default: every line or sample that can be read is imported, those that
  // cannot are skipped and counted in the report. strict: the first such problem is the error and
  // nothing is imported (all or nothing).
  bool strict = false;
  // gzip input inflating past this many bytes is refused (too_large): a 1 MB gzip bomb inflates to
  // 1 GB. Raise it for larger real profiles.
  uint64_t max_inflated_bytes = uint64_t(1) << 30;
  InflateFunction inflate;  // null: zlib when built in
  // A forced format; leave unset to detect it from the content.
  bool has_format = false;
  Format format = Format::pprof;
};

struct ImportReport {
  Format format = Format::pprof;
  const char* items = "samples";                // what imported and skipped count: "lines" (folded) or "samples"
  uint64_t imported = 0;                         // lines or samples read
  uint64_t skipped = 0;                          // lines or samples that could not be read (lenient)
  std::vector<std::string> skipped_examples;     // the first few, "line 17 no count"
  uint64_t numeric_labels_ignored = 0;           // pprof labels with a number, which tags cannot hold
  uint64_t series = 0;                           // series made (types x label sets)
  // "imported 9,998 lines, skipped 2: line 17 no count, line 90 count overflows"
  std::string summary() const;
};

// Reads a profile of any of the formats above into blocks appended to *out (on error *out is left as
// it was): one series per profile type (and per pprof label set or speedscope profile), one block per
// 10 s of the profile's time. A .pyro file is not imported (open it: Dataset::add_bytes).
// Thread safety: any thread; the blocks' trees share one new symbol table.
Status import_profile(ByteSpan bytes, const ImportOptions& options, std::vector<ProfileBlock>* out,
                      ImportReport* report = nullptr);

// Folded text read in pieces cut anywhere (a download, a file read in chunks), lenient or strict as
// import_profile. A line is `frame;frame;...;frame COUNT`: the count is the digits at its end (after
// CR and trailing blanks), separated from the stack by one space or tab; every other byte is the
// stack's, so a frame that ends in a space keeps it. An empty frame (`a;;b`, `a; 1`) becomes
// kEmptyFrameName when lenient. Thread safety: one thread at a time.
constexpr const char* kEmptyFrameName = "[empty]";
class FoldedImporter {
 public:
  explicit FoldedImporter(bool strict = false, std::shared_ptr<SymbolTable> symbols = nullptr);
  void add(const char* data, size_t size);
  // Ends the text (a last line without a newline) and returns the status of the whole parse: strict,
  // the first bad line's error (and an empty tree); lenient, an error only when lines were skipped and
  // none could be read (the text is not folded at all).
  Status finish();
  Tree& tree() { return tree_; }
  const ImportReport& report() const { return report_; }

 private:
  void line(std::string_view text);
  Tree tree_;
  ImportReport report_;
  std::string carry_;
  uint64_t line_number_ = 0;
  bool strict_;
  Status status_;
  std::vector<uint32_t> ids_;
};

// One profile to export: a tree, its type and what its values mean (a query's tree, type and info).
struct ExportProfile {
  std::string type = kDefaultProfileType;
  SeriesInfo info;
  const Tree* tree = nullptr;
};

struct ExportOptions {
  int64_t from = 0;     // unix seconds the profile covers (pprof time_nanos, duration_nanos); 0: unset
  int64_t until = 0;
  bool gzip = true;     // pprof: gzip when a deflater is there (deflate, else zlib), else plain protobuf
  DeflateFunction deflate;
  std::string name;     // speedscope: the file's name (profiles are called "name type")
};

// pprof (profile.proto): one sample type per profile (type and unit), the union of their stacks with
// one value per type (0 where a stack is not in a profile), period and period type from the first
// profile that has a period, time and duration from options. Frames become functions and locations
// of their own; no addresses or mappings. Thread safety: any thread, the trees not being modified.
Status export_pprof(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out);
// speedscope's file format (https://www.speedscope.app/file-format-schema.json): one sampled profile
// per ExportProfile, frames shared; unit nanoseconds/microseconds/milliseconds/seconds/bytes kept,
// anything else written as "none". Weights are JSON numbers, exact up to 2^53.
Status export_speedscope(const std::vector<ExportProfile>& profiles, const ExportOptions& options, std::string* out);

