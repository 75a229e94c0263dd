// format_tool: the formats API of pyroscope.hpp from the command line, for the tests under tests/formats/
// that check our imports and exports against other people's tools (go tool pprof, pprof-format,
// speedscope, perf). `pyro import` / `pyro export` are the user-facing commands; this is a test driver.
//
//   format_tool detect FILE                         prints the detected format
//   format_tool import IN... -o OUT.pyro [--app A] [--strict] [--at T] [--format F]
//                                                   imports into a new .pyro, prints each report's summary
//   format_tool totals FILE.pyro                    one line per type: TYPE UNIT TOTAL
//   format_tool top FILE.pyro TYPE N                the N functions with the most self: SELF<TAB>NAME
//   format_tool folded FILE.pyro TYPE               folded text of the type over the whole file
//   format_tool export FILE.pyro pprof|speedscope -o OUT [--type T] [--plain]
//                                                   every type (or one) over the whole file
// The implementation is the build's pyroscope_impl (with zlib and nlohmann/json: tests/formats/CMakeLists.txt).
#include "pyroscope.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "format_tool: %s\n", what.c_str());
  return 1;
}

bool read_file(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[1 << 16];
  size_t n;
  out->clear();
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  const bool ok = !std::ferror(f);
  std::fclose(f);
  return ok;
}

bool write_file(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

pyroscope::ByteSpan span_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// The whole file's tree of one type, summed over applications and tags.
pyroscope::Status query_type(const pyroscope::Dataset& data, const std::string& type, pyroscope::QueryResult* out) {
  const pyroscope::TimeRange span = data.time_span();
  const int64_t first = span.from, end = span.until;
  pyroscope::Selector selector;
  selector.type = type;
  return data.query(selector, first, end + 1, out);
}

std::vector<std::string> all_types(const pyroscope::Dataset& data) {
  std::vector<std::string> types;
  for (const std::string& app : data.apps())
    for (const std::string& t : data.types(app))
      if (std::find(types.begin(), types.end(), t) == types.end()) types.push_back(t);
  return types;
}

int cmd_import(const std::vector<std::string>& args) {
  pyroscope::ImportOptions options;
  options.app = "imported";
  std::string out_path;
  std::vector<std::string> inputs;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    auto value = [&]() { return i + 1 < args.size() ? args[++i] : std::string(); };
    if (a == "-o") out_path = value();
    else if (a == "--app") options.app = value();
    else if (a == "--strict") options.strict = true;
    else if (a == "--at") options.time = std::strtoll(value().c_str(), nullptr, 10);
    else if (a == "--format") {
      options.has_format = true;
      pyroscope::Status st = pyroscope::parse_format_name(value(), &options.format);
      if (!st.ok()) return fail(st.to_string());
    } else inputs.push_back(a);
  }
  if (out_path.empty() || inputs.empty()) return fail("usage: import IN... -o OUT.pyro");
  std::vector<pyroscope::ProfileBlock> blocks;
  for (const std::string& in : inputs) {
    std::string bytes;
    if (!read_file(in, &bytes)) return fail("cannot read " + in);
    options.source_name = in;
    pyroscope::ImportReport report;
    pyroscope::Status st = pyroscope::import_profile(span_of(bytes), options, &blocks, &report);
    if (!st.ok()) return fail(st.to_string());
    std::printf("%s: %s: %s\n", in.c_str(), pyroscope::format_name(report.format), report.summary().c_str());
  }
  // The writer takes each series' blocks in time order.
  std::stable_sort(blocks.begin(), blocks.end(), [](const pyroscope::ProfileBlock& a, const pyroscope::ProfileBlock& b) {
    return a.block_start < b.block_start;
  });
  pyroscope::Dataset merged;
  pyroscope::Status st = merged.add_blocks(blocks);
  if (!st.ok()) return fail(st.to_string());
  pyroscope::Writer writer;
  std::remove(out_path.c_str());  // a new file: Writer::open appends to an existing one
  st = writer.open(out_path);
  if (!st.ok()) return fail(st.to_string());
  const pyroscope::TimeRange span = merged.time_span();
  const int64_t first = span.from, end = span.until;
  st = merged.slice(pyroscope::Selector(), first, end + 1, &writer);
  if (!st.ok()) return fail(st.to_string());
  st = writer.close();
  return st.ok() ? 0 : fail(st.to_string());
}

int cmd_totals(const pyroscope::Dataset& data) {
  for (const std::string& type : all_types(data)) {
    pyroscope::QueryResult r;
    pyroscope::Status st = query_type(data, type, &r);
    if (!st.ok()) return fail(st.to_string());
    std::printf("%s %s %" PRIu64 "\n", type.c_str(), r.info.unit.c_str(), r.tree.total());
  }
  return 0;
}

int cmd_top(const pyroscope::Dataset& data, const std::string& type, size_t n) {
  pyroscope::QueryResult r;
  pyroscope::Status st = query_type(data, type, &r);
  if (!st.ok()) return fail(st.to_string());
  std::vector<pyroscope::Tree::FunctionTotal> totals;
  r.tree.function_totals(&totals);
  std::sort(totals.begin(), totals.end(), [&](const auto& a, const auto& b) {
    if (a.self != b.self) return a.self > b.self;
    return r.tree.symbols().name(a.symbol) < r.tree.symbols().name(b.symbol);
  });
  for (size_t i = 0; i < totals.size() && i < n; i++) {
    if (totals[i].self == 0) break;
    const std::string_view name = r.tree.symbols().name(totals[i].symbol);
    std::printf("%" PRIu64 "\t%.*s\n", totals[i].self, int(name.size()), name.data());
  }
  return 0;
}

int cmd_export(const pyroscope::Dataset& data, const std::vector<std::string>& args) {
  std::string format, out_path, only_type;
  bool plain = false;
  for (size_t i = 0; i < args.size(); i++) {
    if (args[i] == "-o" && i + 1 < args.size()) out_path = args[++i];
    else if (args[i] == "--type" && i + 1 < args.size()) only_type = args[++i];
    else if (args[i] == "--plain") plain = true;
    else format = args[i];
  }
  if (out_path.empty() || (format != "pprof" && format != "speedscope")) return fail("usage: export FILE pprof|speedscope -o OUT");
  std::vector<pyroscope::QueryResult> results;
  for (const std::string& type : all_types(data)) {
    if (!only_type.empty() && type != only_type) continue;
    results.emplace_back();
    pyroscope::Status st = query_type(data, type, &results.back());
    if (!st.ok()) return fail(st.to_string());
  }
  std::vector<pyroscope::ExportProfile> profiles;
  for (const pyroscope::QueryResult& r : results) profiles.push_back({r.type, r.info, &r.tree});
  pyroscope::ExportOptions options;
  options.from = data.time_span().from;
  options.until = data.time_span().until;
  options.gzip = !plain;
  options.name = "format_tool";
  std::string bytes;
  pyroscope::Status st = format == "pprof" ? pyroscope::export_pprof(profiles, options, &bytes)
                                           : pyroscope::export_speedscope(profiles, options, &bytes);
  if (!st.ok()) return fail(st.to_string());
  return write_file(out_path, bytes) ? 0 : fail("cannot write " + out_path);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 2) return fail("usage: detect|import|totals|top|folded|export ... (see the file's head)");
  const std::string command = args[0];
  if (command == "detect") {
    std::string bytes;
    if (!read_file(args[1], &bytes)) return fail("cannot read " + args[1]);
    pyroscope::Format format;
    pyroscope::Status st = pyroscope::detect_format(span_of(bytes), &format);
    if (!st.ok()) return fail(st.to_string());
    std::printf("%s\n", pyroscope::format_name(format));
    return 0;
  }
  if (command == "import") return cmd_import(std::vector<std::string>(args.begin() + 1, args.end()));
  pyroscope::Dataset data;
  pyroscope::Status st = data.add_file(args[1]);
  if (!st.ok()) return fail(st.to_string());
  if (command == "totals") return cmd_totals(data);
  if (command == "top" && args.size() == 4) return cmd_top(data, args[2], size_t(std::strtoul(args[3].c_str(), nullptr, 10)));
  if (command == "folded" && args.size() == 3) {
    pyroscope::QueryResult r;
    st = query_type(data, args[2], &r);
    if (!st.ok()) return fail(st.to_string());
    std::fputs(r.tree.to_folded().c_str(), stdout);
    return 0;
  }
  if (command == "export") return cmd_export(data, std::vector<std::string>(args.begin() + 2, args.end()));
  return fail("unknown command or arguments: " + command);
}
