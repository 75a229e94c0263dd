// pyro — command-line tool for .pyro profile files, built on pyroscope.hpp and the session layer
// (session/session.hpp) that the viewer uses too: times, selections, per-function totals, slices and
// share files are the viewer's own.
//
//   pyro info FILE...                        what a file holds
//   pyro query FILE... SELECTOR [...]        merged profile of a selection (folded, table, json, timeline)
//   pyro import FILE... -o OUT.pyro          append profiles of any format (import-folded: the same)
//   pyro slice FILE... SELECTOR -o OUT       selected series and range as a new small file
//   pyro merge IN... -o OUT                  all series of several files in one file
//   pyro export FILE... SELECTOR -o OUT       pprof, speedscope or folded for other tools
//   pyro export-folded FILE... SELECTOR -o OUT.folded
//   pyro export-html FILE... SELECTOR --viewer DIR -o OUT.html
//   pyro serve --data DIR [--bind HOST:PORT]  Pyroscope-compatible ingest server with the live viewer
//
// Exit codes: 0 success, 1 runtime or data error (unreadable or corrupt file, ...), 2 usage error.
// Each command is one entry of commands(): adding one is a function plus a table row.

// The implementation is linked from pyroscope_impl_reader (CMakeLists.txt): without the sampler,
// with zlib and the JSON importers.
#include "pyroscope.hpp"
#include "json.hpp"
#include "serve.hpp"
#include "session.hpp"
#include "share_page.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

enum ExitCode : int { kExitOk = 0, kExitError = 1, kExitUsage = 2 };

// ------------------------------------------------------------------------------------------------
// Command table and argument parsing

struct Args;
using Handler = int (*)(const Args&);

struct OptionSpec {
  const char* name;        // "--from"
  const char* alias;       // "-o" or nullptr
  const char* value_name;  // "T" for "--from T"; nullptr for a flag
  const char* help;
};

struct Command {
  const char* name;
  const char* synopsis;  // arguments after the command name
  const char* summary;
  std::vector<OptionSpec> options;
  size_t min_positional;
  Handler run;
};

struct Args {
  const Command* command = nullptr;
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // option name ("--from") -> value
  std::set<std::string> flags;

  bool has(const char* name) const { return values.count(name) || flags.count(name); }
  const std::string* value(const char* name) const {
    auto it = values.find(name);
    return it == values.end() ? nullptr : &it->second;
  }
};

const std::vector<Command>& commands();

void print_command_usage(FILE* out, const Command& c) {
  std::fprintf(out, "usage: pyro %s %s\n  %s\n", c.name, c.synopsis, c.summary);
  if (!c.options.empty()) std::fprintf(out, "options:\n");
  for (const OptionSpec& o : c.options) {
    std::string left = o.name;
    if (o.alias) left = std::string(o.alias) + ", " + left;
    if (o.value_name) left += std::string(" ") + o.value_name;
    std::fprintf(out, "  %-22s %s\n", left.c_str(), o.help);
  }
}

void print_main_usage(FILE* out) {
  std::fprintf(out,
               "pyro %s — read, query and write .pyro profile files\n\n"
               "usage: pyro COMMAND [ARGS...]   (pyro help COMMAND for details)\n\ncommands:\n",
               PYROSCOPE_VERSION_STRING);
  for (const Command& c : commands()) std::fprintf(out, "  %-14s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\ntimes (--from, --until, --at): unix seconds, ISO 8601 UTC such as 2026-11-22T10:00:00Z,\n"
               "or relative to the current time: now, now-15m, now-1h, now-7d (units s m h d w)\n"
               "exit codes: 0 ok, 1 runtime or data error, 2 usage error\n");
}

int usage_error(const Command* c, const std::string& message) {
  if (c) {
    std::fprintf(stderr, "pyro %s: %s\n", c->name, message.c_str());
    std::fprintf(stderr, "usage: pyro %s %s\n(see 'pyro help %s')\n", c->name, c->synopsis, c->name);
  } else {
    std::fprintf(stderr, "pyro: %s\n(see 'pyro help')\n", message.c_str());
  }
  return kExitUsage;
}

int runtime_error(const Args& a, const std::string& message) {
  std::fprintf(stderr, "pyro %s: error: %s\n", a.command->name, message.c_str());
  return kExitError;
}

// Returns kExitOk or kExitUsage (after printing the problem).
int parse_args(const Command& c, int argc, char** argv, Args* out) {
  out->command = &c;
  bool options_done = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (options_done || arg == "-" || arg.size() < 2 || arg[0] != '-') {
      out->positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::string name = arg, inline_value;
    bool has_inline = false;
    size_t eq = arg.find('=');
    if (arg.compare(0, 2, "--") == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
      has_inline = true;
    }
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& o : c.options)
      if (name == o.name || (o.alias && name == o.alias)) spec = &o;
    if (!spec) {
      // A negative number or a selector that starts with '-' is never valid, so no ambiguity here.
      return usage_error(&c, "unknown option '" + name + "'");
    }
    if (!spec->value_name) {
      if (has_inline) return usage_error(&c, std::string("option ") + spec->name + " takes no value");
      out->flags.insert(spec->name);
      continue;
    }
    std::string value;
    if (has_inline) {
      value = inline_value;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return usage_error(&c, std::string("option ") + spec->name + " needs a value");
    }
    if (out->values.count(spec->name))
      return usage_error(&c, std::string("option ") + spec->name + " given twice");
    out->values[spec->name] = value;
  }
  if (out->positional.size() < c.min_positional)
    return usage_error(&c, "missing arguments");
  return kExitOk;
}

// ------------------------------------------------------------------------------------------------
// Times and numbers (the session's rules)

using pyroscope::session::format_duration;
using pyroscope::session::format_utc;
using pyroscope::session::floor_to;

bool parse_time(const std::string& text, int64_t now, int64_t* out, std::string* error) {
  const pyroscope::Status st = pyroscope::session::parse_time(text, now, out);
  if (!st.ok()) *error = st.message();
  return st.ok();
}

// A whole decimal number (for --top and --multiplier; times go through parse_time).
bool parse_int64(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  for (size_t k = (s[0] == '-' ? 1 : 0); k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') return false;
  if (s == "-") return false;
  *out = std::strtoll(s.c_str(), nullptr, 10);
  return true;
}

// ------------------------------------------------------------------------------------------------
// Files

bool read_input(const std::string& path, std::string* out, std::string* error) {
  FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (!f) {
    *error = "cannot open '" + path + "': " + std::strerror(errno);
    return false;
  }
  out->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  bool failed = std::ferror(f);
  if (f != stdin) std::fclose(f);
  if (failed) {
    *error = "cannot read '" + path + "'";
    return false;
  }
  return true;
}

bool write_output(const std::string& path, const std::string& data, std::string* error) {
  if (path == "-") {
    if (std::fwrite(data.data(), 1, data.size(), stdout) != data.size() || std::fflush(stdout) != 0) {
      *error = "cannot write to standard output";
      return false;
    }
    return true;
  }
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    *error = "cannot create '" + path + "': " + std::strerror(errno);
    return false;
  }
  bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) *error = "cannot write '" + path + "': " + std::strerror(errno);
  return ok;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

pyroscope::OpenOptions open_options(const Args& a) {
  pyroscope::OpenOptions o;
  o.salvage = a.has("--salvage");
  o.check_every_record = a.has("--check");
  return o;
}

// Opens every file into one dataset; on failure prints the problem and returns false.
bool open_dataset(const Args& a, const std::vector<std::string>& paths, pyroscope::Dataset* data) {
  for (const std::string& path : pyroscope::session::data_files(paths)) {
    pyroscope::Status st = data->add_file(path, open_options(a));
    if (!st.ok()) {
      runtime_error(a, path + ": " + st.to_string());
      return false;
    }
  }
  return true;
}

// ------------------------------------------------------------------------------------------------
// Selections: files + selector + time range, shared by query, slice and export

struct Selection {
  std::vector<std::string> files;
  std::string selector_text;
  pyroscope::Selector selector;
  int64_t from = 0, until = 0;
};

// Splits "FILE... SELECTOR", opens the files in the session, parses the selector and the range
// (default: all the data) and selects them. Returns kExitOk, or the exit code after printing the problem.
int parse_selection(const Args& a, pyroscope::session::Session* session, Selection* s, bool range_required) {
  s->files.assign(a.positional.begin(), a.positional.end() - 1);
  s->selector_text = a.positional.back();
  if (s->selector_text.find('{') == std::string::npos && s->selector_text.size() > 5 &&
      s->selector_text.compare(s->selector_text.size() - 5, 5, ".pyro") == 0)
    return usage_error(a.command, "missing selector: the last argument '" + s->selector_text +
                                      "' looks like a file (use '{}' to select every series)");
  pyroscope::Status st = pyroscope::Selector::parse(s->selector_text, &s->selector);
  if (!st.ok()) return usage_error(a.command, "selector '" + s->selector_text + "': " + st.to_string());
  if (range_required && (!a.has("--from") || !a.has("--until")))
    return usage_error(a.command, "--from and --until are required");

  const int64_t now = pyroscope::session::now_unix();
  std::string error;
  if (const std::string* v = a.value("--from"))
    if (!parse_time(*v, now, &s->from, &error)) return usage_error(a.command, "--from: " + error);
  if (const std::string* v = a.value("--until"))
    if (!parse_time(*v, now, &s->until, &error)) return usage_error(a.command, "--until: " + error);

  std::vector<pyroscope::session::LoadInput> inputs;
  for (const std::string& path : s->files) {
    pyroscope::session::LoadInput in;
    in.name = in.path = path;
    in.salvage = a.has("--salvage");
    inputs.push_back(std::move(in));
  }
  const std::string problems = session->open(std::move(inputs));
  if (!problems.empty()) return runtime_error(a, problems);
  const pyroscope::Dataset& data = session->dataset();
  const pyroscope::TimeRange span = data.time_span();
  int64_t first = span.from, end = span.until;
  if (end <= first && !a.has("--from") && !a.has("--until")) {
    // No blocks at all: an empty result over one block rather than an error about the range.
    std::fprintf(stderr, "pyro %s: warning: the input files hold no blocks\n", a.command->name);
    first = floor_to(now, data.resolution_seconds());
    end = first + data.resolution_seconds();
  }
  if (!a.has("--from")) s->from = first;
  if (!a.has("--until")) s->until = end;
  if (s->until <= s->from)
    return usage_error(a.command, "empty time range: --until (" + format_utc(s->until) +
                                      ") is not after --from (" + format_utc(s->from) + ")");
  st = session->select(s->selector, pyroscope::TimeRange{s->from, s->until});
  if (!st.ok()) return usage_error(a.command, st.message());
  return kExitOk;
}

// A selector that matches exactly one series: its own tags with `=`, and `key=""` (the key is absent)
// for every other tag key its app has, so app{} does not also pick up app{vehicle="car"}.
bool exact_selector(const pyroscope::Dataset& data, const pyroscope::SeriesKey& series,
                    pyroscope::Selector* out, std::string* error) {
  std::string text = series.to_string();
  std::string extra;
  for (const std::string& key : data.tag_keys(series.app)) {
    bool present = false;
    for (const pyroscope::Tag& t : series.tags) present = present || t.key == key;
    if (!present) extra += (extra.empty() ? "" : ",") + key + "=\"\"";
  }
  if (!extra.empty()) {
    PYROSCOPE_ASSERT(!text.empty() && text.back() == '}');
    text.insert(text.size() - 1, (text[text.size() - 2] == '{' ? "" : ",") + extra);
  }
  pyroscope::Status st = pyroscope::Selector::parse(text, out);
  if (!st.ok()) {
    *error = "cannot select series " + series.to_string() + " alone (" + text + "): " + st.to_string();
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------------------------
// Output formats

// The N heaviest stacks of folded text, heaviest first (N = 0: all, in the text's own order).
std::string top_folded(const std::string& folded, size_t top) {
  if (top == 0) return folded;
  std::vector<std::pair<uint64_t, std::string_view>> lines;
  std::string_view text(folded);
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos) continue;
    lines.emplace_back(std::strtoull(std::string(line.substr(sp + 1)).c_str(), nullptr, 10), line);
  }
  std::stable_sort(lines.begin(), lines.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
  if (lines.size() > top) lines.resize(top);
  std::string out;
  for (const auto& l : lines) out.append(l.second).push_back('\n');
  return out;
}

// Functions by self, then total, then name: the session's per-function rows (recursion counted once).
std::string format_table(const pyroscope::Tree& tree, size_t top) {
  namespace session = pyroscope::session;
  std::vector<session::FunctionRow> rows;
  session::function_rows(tree, nullptr, &rows);
  std::vector<uint32_t> order(rows.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  // Stable sorts from the last key to the first.
  session::sort_rows(tree, nullptr, rows, session::TableSort::name, true, &order);
  session::sort_rows(tree, nullptr, rows, session::TableSort::total, false, &order);
  session::sort_rows(tree, nullptr, rows, session::TableSort::self, false, &order);
  if (top && order.size() > top) order.resize(top);
  double all = tree.total() ? static_cast<double>(tree.total()) : 1.0;
  std::string out;
  char buf[128];
  std::snprintf(buf, sizeof buf, "%12s %7s %12s %7s  %s\n", "self", "self%", "total", "total%", "function");
  out += buf;
  for (uint32_t i : order) {
    const session::FunctionRow& r = rows[i];
    std::snprintf(buf, sizeof buf, "%12" PRIu64 " %6.2f%% %12" PRIu64 " %6.2f%%  ", r.self, 100.0 * r.self / all,
                  r.total, 100.0 * r.total / all);
    out += buf;
    out.append(tree.symbols().name(r.symbol)).push_back('\n');
  }
  return out;
}

std::string format_json(const Selection& s, const pyroscope::QueryResult& r, const pyroscope::Timeline& timeline,
                        int64_t resolution) {
  std::string out = "{\"version\":1,\"flamebearer\":" + pyroscope::session::flamebearer_json(r.tree);
  out += ",\"metadata\":{\"format\":\"single\",\"spyName\":\"pyroscope.hpp\",\"sampleRate\":100,\"units\":" +
         pyroscope::json::string(r.info.unit) + ",\"aggregationType\":" +
         pyroscope::json::string(pyroscope::aggregation_name(r.info.aggregation)) + ",\"name\":" +
         pyroscope::json::string(s.selector_text) + "}";
  out += ",\"timeline\":{\"startTime\":" + std::to_string(timeline.start) + ",\"durationDelta\":" +
         std::to_string(timeline.step ? timeline.step : resolution) + ",\"samples\":[";
  for (size_t i = 0; i < timeline.samples.size(); ++i) out += (i ? "," : "") + std::to_string(timeline.samples[i]);
  out += "]},\"query\":{\"selector\":" + pyroscope::json::string(s.selector_text) + ",\"from\":" + std::to_string(s.from) +
         ",\"until\":" + std::to_string(s.until) + ",\"merges\":" + std::to_string(r.merges) +
         ",\"mergeBound\":" + std::to_string(r.merge_bound) + ",\"seriesMatched\":" +
         std::to_string(r.series_matched) + "}}\n";
  return out;
}

std::string format_timeline(const pyroscope::Timeline& t) {
  std::string out;
  char buf[64];
  for (size_t i = 0; i < t.samples.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%" PRId64 " %" PRIu64 "\n", t.start + static_cast<int64_t>(i) * t.step,
                  t.samples[i]);
    out += buf;
  }
  return out;
}

bool parse_top(const Args& a, size_t* top) {
  *top = 0;
  const std::string* v = a.value("--top");
  if (!v) return true;
  int64_t n;
  if (!parse_int64(*v, &n) || n <= 0) {
    usage_error(a.command, "--top '" + *v + "': expected a positive integer");
    return false;
  }
  *top = static_cast<size_t>(n);
  return true;
}

// The total is in the series' unit (samples, bytes, objects, nanoseconds...), named as such.
void report_merges(const Selection& s, const pyroscope::QueryResult& r) {
  const std::string unit = r.info.unit.empty() ? "samples" : r.info.unit;
  std::fprintf(stderr, "%u series, %" PRIu64 " %s, %" PRIu64 " stored trees merged (bound %" PRIu64
               ") over %s .. %s\n",
               r.series_matched, r.tree.total(), unit.c_str(), r.merges, r.merge_bound, format_utc(s.from).c_str(),
               format_utc(s.until).c_str());
}

// ------------------------------------------------------------------------------------------------
// Commands

int cmd_info(const Args& a) {
  int rc = kExitOk;
  const std::vector<std::string> paths = pyroscope::session::data_files(a.positional);  // a directory: its .pyro files
  if (paths.empty()) return runtime_error(a, "no .pyro files in " + a.positional[0]);
  for (size_t fi = 0; fi < paths.size(); ++fi) {
    const std::string& path = paths[fi];
    pyroscope::File file;
    pyroscope::Status st = file.open_path(path, open_options(a));
    if (!st.ok()) {
      rc = runtime_error(a, path + ": " + st.to_string());
      continue;
    }
    if (fi) std::printf("\n");
    pyroscope::Dataset data;
    data.add(std::move(file));
    const pyroscope::FileInfo& info = data.file(0).info();
    std::printf("file          %s\n", path.c_str());
    std::printf("format        version %u, resolution %" PRId64 " s, multiplier %u\n", info.format_version,
                info.resolution_seconds, info.multiplier);
    std::printf("size          %" PRIu64 " bytes, %" PRIu64 " valid%s\n", info.file_bytes, info.valid_bytes,
                info.valid_bytes < info.file_bytes ? " (the rest is a torn tail of an interrupted write)" : "");
    if (info.block_count) {
      std::printf("time span     %s .. %s (%" PRId64 " .. %" PRId64 ", %s)\n", format_utc(info.first_time).c_str(),
                  format_utc(info.end_time).c_str(), info.first_time, info.end_time,
                  format_duration(info.end_time - info.first_time).c_str());
    } else {
      std::printf("time span     (no blocks)\n");
    }
    std::printf("blocks        %" PRIu64 "\n", info.block_count);
    std::printf("stored trees  %" PRIu64 " (%.3f per block, all levels)\n", info.stored_trees,
                info.block_count ? static_cast<double>(info.stored_trees) / info.block_count : 0.0);
    std::printf("symbols       %" PRIu64 "\n", info.symbol_count);
    if (info.opened_from_index)
      std::printf("index         %" PRIu64 " bytes at the end; opened from it, each record is checked when first read "
                  "(--check: every record now)\n",
                  info.index_bytes);
    else
      std::printf("index         %s\n", a.has("--check") ? "every record checked" : "none: every record was checked at open");
    if (!info.salvage_note.empty()) std::printf("salvage       %s\n", info.salvage_note.c_str());
    std::vector<std::string> apps = data.apps();
    std::printf("apps          %zu\n", apps.size());
    for (const std::string& app : apps) {
      std::string types;
      for (const std::string& t : data.types(app)) types += (types.empty() ? "" : ", ") + t;
      std::printf("  %s  (%s)\n", app.c_str(), types.c_str());
      for (const std::string& key : data.tag_keys(app)) {
        std::string values;
        for (const std::string& v : data.tag_values(app, key)) values += (values.empty() ? "" : ", ") + v;
        std::printf("    %s: %s\n", key.c_str(), values.c_str());
      }
    }
    const std::vector<pyroscope::SeriesKey>& series = data.file(0).series();
    std::printf("series        %zu\n", series.size());
    for (size_t si = 0; si < series.size(); ++si) {
      const pyroscope::SeriesKey& key = series[si];
      const pyroscope::SeriesInfo& values = data.file(0).series_info(si);
      pyroscope::Selector exact;
      std::string error;
      pyroscope::QueryResult r;
      pyroscope::QueryOptions timeline_only;
      timeline_only.want_tree = false;
      if (info.block_count && exact_selector(data, key, &exact, &error) &&
          data.query(exact, info.first_time, info.end_time, &r, timeline_only).ok()) {
        uint64_t samples = 0, blocks = 0;
        for (uint64_t v : r.timeline.samples) {
          samples += v;
          blocks += v != 0;
        }
        // An average series' timeline points are its blocks' values: their sum is no total, so it
        // is shown as the mean per block.
        const bool average = values.aggregation == pyroscope::Aggregation::average;
        std::printf("  %s  (%" PRIu64 " block%s, %" PRIu64 " %s%s)\n", key.to_string().c_str(), blocks,
                    blocks == 1 ? "" : "s", average && blocks ? samples / blocks : samples, values.unit.c_str(),
                    average ? " on average per block" : "");
      } else {
        std::printf("  %s\n", key.to_string().c_str());
      }
    }
  }
  return rc;
}

// The merged tree of the selection, and with `timeline` its samples per block: the session's queries.
int query_selection(const Args& a, pyroscope::session::Session* session, const Selection& s, bool want_tree,
                    bool want_timeline, const pyroscope::QueryResult** timeline) {
  if (want_timeline) *timeline = &session->timeline(pyroscope::TimeRange{s.from, s.until}, 0);
  if (want_tree) session->update_trees();
  if (!session->error().empty()) return runtime_error(a, session->error());
  const uint32_t matched = want_tree ? session->left().series_matched : (*timeline)->series_matched;
  if (matched == 0)
    std::fprintf(stderr, "pyro %s: warning: no series matches %s\n", a.command->name, s.selector_text.c_str());
  return kExitOk;
}

int cmd_query(const Args& a) {
  std::string format = a.value("--format") ? *a.value("--format") : "folded";
  if (format != "folded" && format != "table" && format != "json" && format != "timeline")
    return usage_error(a.command, "--format '" + format + "': expected folded, table, json or timeline");
  size_t top;
  if (!parse_top(a, &top)) return kExitUsage;
  if (top && format != "folded" && format != "table")
    return usage_error(a.command, "--top applies to --format folded and table only");

  pyroscope::session::Session session;
  Selection s;
  if (int rc = parse_selection(a, &session, &s, false)) return rc;
  const pyroscope::QueryResult* timeline = nullptr;
  if (int rc = query_selection(a, &session, s, format != "timeline", format == "timeline" || format == "json", &timeline))
    return rc;
  const pyroscope::QueryResult& r = session.left();
  std::string out;
  if (format == "folded") {
    out = top_folded(r.tree.to_folded(), top);
  } else if (format == "table") {
    report_merges(s, r);
    out = format_table(r.tree, top);
  } else if (format == "json") {
    report_merges(s, r);
    out = format_json(s, r, timeline->timeline, session.resolution());
  } else {
    out = format_timeline(timeline->timeline);
  }
  std::string error;
  const std::string* output = a.value("--output");
  if (!write_output(output ? *output : "-", out, &error)) return runtime_error(a, error);
  return kExitOk;
}

int cmd_export_folded(const Args& a) {
  const std::string* output = a.value("--output");
  if (!output) return usage_error(a.command, "-o OUT.folded is required");
  pyroscope::session::Session session;
  Selection s;
  if (int rc = parse_selection(a, &session, &s, false)) return rc;
  if (int rc = query_selection(a, &session, s, true, false, nullptr)) return rc;
  std::string error;
  if (!write_output(*output, session.left_tree().to_folded(), &error)) return runtime_error(a, error);
  report_merges(s, session.left());
  return kExitOk;
}

bool parse_tags(const std::string& text, pyroscope::Tags* tags, std::string* error) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      *error = "tag '" + item + "': expected key=value";
      return false;
    }
    tags->push_back({item.substr(0, eq), item.substr(eq + 1)});
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return true;
}

// Any format the header reads (told by its content, never by its name) appended to OUT.pyro: pprof,
// folded, perf script, speedscope, .cpuprofile. Lenient by default (lines or samples that cannot be
// read are skipped and counted); --strict refuses a whole input at its first problem.
int cmd_import(const Args& a) {
  const std::string* output = a.value("--output");
  if (!output) return usage_error(a.command, "-o OUT.pyro is required");
  if (std::count(a.positional.begin(), a.positional.end(), std::string("-")) > 1)
    return usage_error(a.command, "standard input (-) can be read once");
  pyroscope::Tags tags;
  std::string error;
  if (const std::string* t = a.value("--tags"))
    if (!parse_tags(*t, &tags, &error)) return usage_error(a.command, "--tags: " + error);
  const std::string* app = a.value("--app");
  if (app) {
    pyroscope::SeriesKey series(*app, tags), round_trip;
    if (app->empty() || !pyroscope::SeriesKey::parse(series.to_string(), &round_trip).ok() || !(round_trip == series))
      return usage_error(a.command, "app '" + *app + "' with these tags cannot be stored as a series name (" +
                                        series.to_string() + ")");
  }
  const int64_t now = pyroscope::session::now_unix();
  int64_t at = now;
  if (const std::string* v = a.value("--at"))
    if (!parse_time(*v, now, &at, &error)) return usage_error(a.command, "--at: " + error);
  pyroscope::Format forced = pyroscope::Format::pprof;
  const std::string* format_option = a.value("--format");
  if (format_option) {
    const pyroscope::Status st = pyroscope::parse_format_name(*format_option, &forced);
    if (!st.ok() || forced == pyroscope::Format::pyro) return usage_error(a.command, "--format: " + st.message());
  }

  // Every input is read and imported before the output is touched: a bad input leaves no trace.
  std::vector<pyroscope::ProfileBlock> blocks;
  std::vector<std::string> summaries;
  for (const std::string& path : a.positional) {
    std::string bytes;
    if (!read_input(path, &bytes, &error)) return runtime_error(a, error);
    const std::string name = path == "-" ? std::string("stdin") : path;
    pyroscope::ImportOptions options;
    options.source_name = name;
    options.app = app ? *app : pyroscope::session::app_name_for(name);
    options.tags = tags;
    options.time = at;
    options.strict = a.has("--strict");
    options.has_format = format_option != nullptr;
    options.format = forced;
    pyroscope::Format detected;
    if (!options.has_format &&
        pyroscope::detect_format({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, &detected).ok() &&
        detected == pyroscope::Format::pyro)
      return runtime_error(a, name + " is a .pyro file already (pyro merge IN.pyro... -o OUT.pyro copies its blocks)");
    pyroscope::ImportReport report;
    const size_t before = blocks.size();
    const pyroscope::Status st =
        pyroscope::import_profile({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, options, &blocks, &report);
    if (!st.ok()) return runtime_error(a, st.to_string());
    if (blocks.size() == before) return runtime_error(a, name + ": no samples in the input");
    summaries.push_back(name + " (" + pyroscope::format_name(report.format) + "): " + report.summary() + ", " +
                        std::to_string(report.series) + " series");
  }
  // The writer takes each series' blocks in time order.
  std::stable_sort(blocks.begin(), blocks.end(), [](const pyroscope::ProfileBlock& x, const pyroscope::ProfileBlock& y) {
    return x.block_start < y.block_start;
  });
  pyroscope::Writer writer;
  pyroscope::Status st = writer.open(*output);
  if (!st.ok()) return runtime_error(a, *output + ": " + st.to_string());
  const int64_t resolution = writer.resolution_seconds();
  uint64_t samples = 0;
  std::set<std::string> series;
  for (const pyroscope::ProfileBlock& b : blocks) {
    const int64_t block = floor_to(b.block_start, resolution);
    st = writer.append(b.series, block, b.tree, &b.info);
    if (!st.ok()) return runtime_error(a, *output + ": " + st.to_string());
    samples += b.tree.total();
    series.insert(b.series.to_string());
  }
  st = writer.close();
  if (!st.ok()) return runtime_error(a, *output + ": " + st.to_string());
  for (const std::string& line : summaries) std::fprintf(stderr, "%s\n", line.c_str());
  const int64_t first = floor_to(blocks.front().block_start, resolution);
  std::fprintf(stderr, "appended %zu block(s) of %zu series (%s), %" PRIu64 " in all, from %s (%" PRId64 "), to %s\n",
               blocks.size(), series.size(), series.size() == 1 ? series.begin()->c_str() : "...", samples,
               format_utc(first).c_str(), first, output->c_str());
  return kExitOk;
}

// The selection's profile in a format other tools read: pprof (gzipped; every type of the selection
// when its selector names no type: '{}' or --all-types), speedscope JSON, or folded text.
int cmd_export(const Args& a) {
  const std::string* output = a.value("--output");
  if (!output) return usage_error(a.command, "-o OUT is required");
  const std::string format_text = a.value("--format") ? *a.value("--format") : "pprof";
  pyroscope::Format format;
  if (!pyroscope::parse_format_name(format_text, &format).ok() ||
      (format != pyroscope::Format::pprof && format != pyroscope::Format::speedscope && format != pyroscope::Format::folded))
    return usage_error(a.command, "--format '" + format_text + "': expected pprof, speedscope or folded");
  pyroscope::session::Session session;
  Selection s;
  if (int rc = parse_selection(a, &session, &s, false)) return rc;
  // The types to export: the selector's, or every type of what it matches.
  std::vector<std::string> types;
  if (s.selector.type.empty() || a.has("--all-types")) {
    pyroscope::Selector any = s.selector;
    any.type.clear();
    std::set<std::string> found;
    for (const pyroscope::SeriesKey& k : session.dataset().series(any)) found.insert(k.type);
    types.assign(found.begin(), found.end());
  } else {
    types.push_back(s.selector.type);
  }
  if (types.empty()) return runtime_error(a, "no series matches " + s.selector_text);
  if (format == pyroscope::Format::folded && types.size() > 1)
    return usage_error(a.command, "folded text holds one type; the selection has " + std::to_string(types.size()) +
                                      " (choose one: app.type{...})");
  std::vector<pyroscope::QueryResult> results(types.size());
  for (size_t i = 0; i < types.size(); ++i) {
    pyroscope::Selector one = s.selector;
    one.type = types[i];
    const pyroscope::Status st = session.dataset().query(one, s.from, s.until, &results[i]);
    if (!st.ok()) return runtime_error(a, "query " + one.to_string() + ": " + st.to_string());
  }
  std::string out;
  if (format == pyroscope::Format::folded) {
    out = results[0].tree.to_folded();
  } else {
    std::vector<pyroscope::ExportProfile> profiles;
    for (size_t i = 0; i < types.size(); ++i) profiles.push_back({types[i], results[i].info, &results[i].tree});
    pyroscope::ExportOptions options;
    options.from = s.from;
    options.until = s.until;
    options.gzip = !a.has("--plain");
    options.name = s.selector.app.empty() ? std::string("profile") : s.selector.app;
    const pyroscope::Status st = format == pyroscope::Format::pprof ? pyroscope::export_pprof(profiles, options, &out)
                                                                    : pyroscope::export_speedscope(profiles, options, &out);
    if (!st.ok()) return runtime_error(a, st.to_string());
  }
  std::string error;
  if (!write_output(*output, out, &error)) return runtime_error(a, error);
  std::string summary;
  for (size_t i = 0; i < types.size(); ++i)
    summary += (i ? ", " : "") + types[i] + " " + pyroscope::session::format_count(results[i].tree.total()) + " " +
               results[i].info.unit;
  std::fprintf(stderr, "wrote %s (%s, %zu bytes): %s\n", output->c_str(), pyroscope::format_name(format), out.size(),
               summary.c_str());
  return kExitOk;
}

// Opens the output of slice/merge: refuses to overwrite an input or (without --force) any file.
int open_new_output(const Args& a, const std::vector<std::string>& inputs, const pyroscope::Dataset& data,
                    pyroscope::Writer* writer, std::string* path) {
  const std::string* output = a.value("--output");
  if (!output) return usage_error(a.command, "-o OUT.pyro is required");
  *path = *output;
  for (const std::string& in : inputs)
    if (same_file(in, *output)) return usage_error(a.command, "output '" + *output + "' is also an input");
  if (file_exists(*output)) {
    if (!a.has("--force"))
      return runtime_error(a, "'" + *output + "' already exists (pass --force to replace it)");
    if (::unlink(output->c_str()) != 0)
      return runtime_error(a, "cannot remove '" + *output + "': " + std::strerror(errno));
  }
  pyroscope::WriterOptions options;
  options.resolution_seconds = data.resolution_seconds();
  if (data.file_count()) options.multiplier = data.file(0).info().multiplier;
  if (const std::string* m = a.value("--multiplier")) {
    int64_t v;
    if (!parse_int64(*m, &v) || v < 2 || v > 1024)
      return usage_error(a.command, "--multiplier '" + *m + "': expected an integer from 2 to 1024");
    options.multiplier = static_cast<uint32_t>(v);
  }
  pyroscope::Status st = writer->open(*output, options);
  if (!st.ok()) return runtime_error(a, *output + ": " + st.to_string());
  return kExitOk;
}

using CopyStats = pyroscope::SliceStats;

// Copies the matching series over [from, until) block by block (Dataset::slice): blocks of the same
// series at the same time in several files become one block.
int copy_blocks(const Args& a, const pyroscope::Dataset& data, const pyroscope::Selector& selector, int64_t from,
                int64_t until, pyroscope::Writer* writer, CopyStats* stats) {
  const pyroscope::Status st = data.slice(selector, from, until, writer, stats);
  if (!st.ok()) return runtime_error(a, st.to_string());
  return kExitOk;
}

int finish_copy(const Args& a, pyroscope::Writer* writer, const std::string& path, const CopyStats& stats) {
  pyroscope::Status st = writer->close();
  if (!st.ok()) return runtime_error(a, path + ": " + st.to_string());
  std::fprintf(stderr, "wrote %" PRIu64 " series, %" PRIu64 " blocks, %" PRIu64 " samples to %s\n", stats.series,
               stats.blocks, stats.samples, path.c_str());
  return kExitOk;
}

int cmd_slice(const Args& a) {
  pyroscope::session::Session session;
  Selection s;
  if (int rc = parse_selection(a, &session, &s, true)) return rc;
  pyroscope::Writer writer;
  std::string path;
  if (int rc = open_new_output(a, s.files, session.dataset(), &writer, &path)) return rc;
  CopyStats stats;
  if (int rc = copy_blocks(a, session.dataset(), s.selector, s.from, s.until, &writer, &stats)) return rc;
  if (stats.blocks == 0) std::fprintf(stderr, "pyro slice: warning: nothing selected, %s is empty\n", path.c_str());
  return finish_copy(a, &writer, path, stats);
}

// Writes bytes to path through path.tmp and a rename, so a reader never sees half a file.
int write_atomically(const Args& a, const std::string& path, const std::string& bytes) {
  const std::string temporary = path + ".tmp";
  FILE* out = std::fopen(temporary.c_str(), "wb");
  if (!out) return runtime_error(a, "cannot create '" + temporary + "': " + std::strerror(errno));
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size();
  if (std::fclose(out) != 0 || !written) {
    ::unlink(temporary.c_str());
    return runtime_error(a, "cannot write '" + temporary + "'");
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    return runtime_error(a, "cannot rename '" + temporary + "' to '" + path + "': " + std::strerror(errno));
  }
  return kExitOk;
}

// One .html file: the browser viewer built as a single script (wasm and font inside), the page around
// it, and the selected series and range as a .pyro slice, which opens with the view it was saved with:
// the viewer's Export > Share file, made by the same session code.
int cmd_export_html(const Args& a) {
  const std::string* output = a.value("--output");
  if (!output) return usage_error(a.command, "-o OUT.html is required");
  std::string viewer_dir;
  if (const std::string* v = a.value("--viewer")) viewer_dir = *v;
  else if (const char* env = std::getenv("PYROSCOPE_VIEWER_DIR")) viewer_dir = env;
  if (viewer_dir.empty())
    return usage_error(a.command, "--viewer DIR is required: the browser viewer's folder, as viewer/build-wasm.sh "
                                  "DIR writes it (or set PYROSCOPE_VIEWER_DIR)");
  const std::string* view = a.value("--view");
  pyroscope::session::Panels panels;
  pyroscope::session::ViewMode pair_view;
  if (view && !pyroscope::session::parse_name(*view, &panels) &&
      !(pyroscope::session::parse_name(*view, &pair_view) && pair_view != pyroscope::session::ViewMode::single))
    return usage_error(a.command, "--view '" + *view + "': expected flamegraph, table, both, comparison or diff");
  pyroscope::session::Session session;

  Selection s;
  if (int rc = parse_selection(a, &session, &s, false)) return rc;
  for (const std::string& in : s.files)
    if (same_file(in, *output)) return usage_error(a.command, "output '" + *output + "' is also an input");
  if (file_exists(*output) && !a.has("--force"))
    return runtime_error(a, "'" + *output + "' already exists (pass --force to replace it)");
  if (view) session.apply_setting("view", *view);  // after the selection, which starts in the single view
  // A comparison or diff saves its second range; without one, the range is cut in halves as in the viewer.
  std::string error;
  if (session.selection().pair() && (a.has("--right-from") || a.has("--right-until"))) {
    pyroscope::TimeRange right{s.from, s.until};
    const int64_t now = pyroscope::session::now_unix();
    if (const std::string* v = a.value("--right-from"))
      if (!parse_time(*v, now, &right.from, &error)) return usage_error(a.command, "--right-from: " + error);
    if (const std::string* v = a.value("--right-until"))
      if (!parse_time(*v, now, &right.until, &error)) return usage_error(a.command, "--right-until: " + error);
    if (!right.valid()) return usage_error(a.command, "--right-until is not after --right-from");
    session.set_range(0, pyroscope::TimeRange{s.from, s.until});
    session.set_range(1, right);
  }

  pyroscope::share::PageParts parts;
  if (!read_input(viewer_dir + "/index.html", &parts.page, &error) ||
      !read_input(viewer_dir + "/viewer-page.js", &parts.page_script, &error) ||
      !read_input(viewer_dir + "/viewer-single.js", &parts.viewer_script, &error))
    return runtime_error(a, error + " (build the viewer with viewer/build-wasm.sh " + viewer_dir + ")");
  std::string html;
  CopyStats stats;
  const pyroscope::Status st = session.share_page(parts, &html, &stats);
  if (st.code() == pyroscope::StatusCode::not_found)
    return runtime_error(a, "nothing to share: no samples of " + s.selector_text + " between " + format_utc(s.from) +
                                " and " + format_utc(s.until));
  if (!st.ok()) return runtime_error(a, viewer_dir + "/" + st.message());
  if (int rc = write_atomically(a, *output, html)) return rc;
  std::fprintf(stderr,
               "wrote %s: %zu bytes (viewer %zu); %" PRIu64 " series, %" PRIu64 " blocks, %" PRIu64 " samples of %s\n",
               output->c_str(), html.size(), parts.viewer_script.size() + parts.page_script.size(), stats.series,
               stats.blocks, stats.samples, s.selector_text.c_str());
  return kExitOk;
}

int cmd_merge(const Args& a) {
  pyroscope::Dataset data;
  if (!open_dataset(a, a.positional, &data)) return kExitError;
  pyroscope::Selector everything;
  pyroscope::Status st = pyroscope::Selector::parse("{}", &everything);
  if (!st.ok()) return runtime_error(a, "selector {}: " + st.to_string());
  pyroscope::Writer writer;
  std::string path;
  if (int rc = open_new_output(a, a.positional, data, &writer, &path)) return rc;
  const pyroscope::TimeRange span = data.time_span();
  int64_t first = span.from, end = span.until;
  CopyStats stats;
  if (end > first)
    if (int rc = copy_blocks(a, data, everything, first, end, &writer, &stats)) return rc;
  return finish_copy(a, &writer, path, stats);
}

// ------------------------------------------------------------------------------------------------
// record: run a program under libpyroscope-preload.so (docs/record.md)

// The preload library: $PYROSCOPE_PRELOAD_LIBRARY, else beside pyro (the build tree), else where
// CMake installs it relative to pyro's bin directory.
// heap: libpyroscope-preload-heap.so (pyro record --heap), found the same way; its variable is
// PYROSCOPE_PRELOAD_HEAP_LIBRARY.
bool find_preload_library(std::string* path, std::string* tried, bool heap = false) {
  if (const char* given = std::getenv(heap ? "PYROSCOPE_PRELOAD_HEAP_LIBRARY" : "PYROSCOPE_PRELOAD_LIBRARY");
      given && *given) {
    *path = given;
    *tried = given;
    return file_exists(*path);
  }
#if defined(PYRO_PRELOAD_NAME) && defined(PYRO_PRELOAD_HEAP_NAME)
  const std::string name = heap ? PYRO_PRELOAD_HEAP_NAME : PYRO_PRELOAD_NAME;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return false;
  exe[n] = '\0';
  std::string dir(exe);
  dir.resize(dir.rfind('/'));
  for (const std::string& candidate : {dir + "/" + name, dir + "/" + PYRO_PRELOAD_FROM_BINDIR + "/" + name}) {
    *tried += (tried->empty() ? "" : ", ") + candidate;
    if (file_exists(candidate)) {
      *path = candidate;
      return true;
    }
  }
#endif
  return false;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// What the profiled processes wrote, one file per process, merged into OUT (then removed).
int merge_recorded(const Args& a, const std::string& dir, const std::string& out, bool* wrote) {
  *wrote = false;
  std::vector<std::string> files;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.size() > 5 && name.compare(name.size() - 5, 5, ".pyro") == 0) files.push_back(dir + "/" + name);
    }
    ::closedir(d);
  }
  std::sort(files.begin(), files.end());
  pyroscope::Dataset data;
  size_t opened = 0;
  for (const std::string& f : files) {
    pyroscope::OpenOptions options;
    options.salvage = true;  // a process killed mid-write: keep what it finished
    const pyroscope::Status st = data.add_file(f, options);
    if (st.ok()) opened++;
    else std::fprintf(stderr, "pyro record: warning: %s: %s (skipped)\n", f.c_str(), st.to_string().c_str());
  }
  int rc = kExitOk;
  if (opened == 0) {
    rc = runtime_error(a, "no process wrote a profile (a statically linked program cannot be preloaded; "
                          "PYROSCOPE_LOG_LEVEL=info shows what the library did)");
  } else {
    pyroscope::Selector everything;
    pyroscope::Status st = pyroscope::Selector::parse("{}", &everything);
    pyroscope::Writer writer;
    if (st.ok()) st = writer.open(out);
    const pyroscope::TimeRange span = data.time_span();
    CopyStats stats;
    if (st.ok() && span.until > span.from) st = data.slice(everything, span.from, span.until, &writer, &stats);
    if (st.ok()) st = writer.close();
    if (!st.ok()) {
      rc = runtime_error(a, out + ": " + st.to_string() + " (the per-process files are kept in " + dir + ")");
      return rc;
    }
    *wrote = true;
    std::set<std::string> app_names;
    for (const pyroscope::SeriesKey& key : data.series(everything)) app_names.insert(key.app);
    std::string apps;
    for (const std::string& name : app_names) apps += (apps.empty() ? "" : ", ") + name;
    std::fprintf(stderr, "pyro record: %zu process(es) profiled (%s): %" PRIu64 " series, %" PRIu64 " blocks, %" PRIu64
                         " samples written to %s\n",
                 opened, apps.c_str(), stats.series, stats.blocks, stats.samples, out.c_str());
  }
  for (const std::string& f : files) ::unlink(f.c_str());
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT)
    std::fprintf(stderr, "pyro record: warning: could not remove %s: %s\n", dir.c_str(), std::strerror(errno));
  return rc;
}

int cmd_record(const Args& a) {
  const std::vector<std::string>& command = a.positional;
  if (command.empty()) return usage_error(a.command, "the command to run is missing (pyro record [options] -- CMD ARGS...)");
  const std::string* app = a.value("--app");
  if (app && app->empty()) return usage_error(a.command, "--app needs a name");
  if (const std::string* tags = a.value("--tags")) {
    size_t start = 0;
    while (start <= tags->size()) {
      size_t comma = std::min(tags->find(',', start), tags->size());
      const std::string item = tags->substr(start, comma - start);
      if (item.find('=') == std::string::npos || item[0] == '=')
        return usage_error(a.command, "--tags '" + *tags + "': '" + item + "' is not key=value");
      start = comma + 1;
    }
  }
  if (const std::string* rate = a.value("--rate")) {
    char* end = nullptr;
    const long v = std::strtol(rate->c_str(), &end, 10);
    if (rate->empty() || *end != '\0' || v < 1 || v > 1000)
      return usage_error(a.command, "--rate '" + *rate + "': expected samples per second, 1 to 1000");
  }
  const std::string* heap_bytes = a.value("--heap-bytes");
  const bool heap = a.has("--heap") || heap_bytes != nullptr;
  if (heap_bytes) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(heap_bytes->c_str(), &end, 10);
    if (heap_bytes->empty() || *end != '\0' || (*heap_bytes)[0] == '-' || v < 1 || v > (1ull << 40))
      return usage_error(a.command, "--heap-bytes '" + *heap_bytes + "': expected the mean bytes between sampled "
                                    "allocations, 1 to 2^40");
  }
  std::string library, tried;
  if (!find_preload_library(&library, &tried, heap))
    return runtime_error(a, std::string(heap ? "libpyroscope-preload-heap.so" : "libpyroscope-preload.so") +
                                " not found (looked at: " + (tried.empty() ? "nothing" : tried) + "); set " +
                                (heap ? "PYROSCOPE_PRELOAD_HEAP_LIBRARY" : "PYROSCOPE_PRELOAD_LIBRARY") + " to its path");
  const std::string out = a.value("--output") ? *a.value("--output") : (app ? *app : base_name(command[0])) + ".pyro";
  if (file_exists(out)) {
    if (!a.has("--force")) return runtime_error(a, "'" + out + "' already exists (pass --force to replace it)");
  }
  // The processes write beside OUT, one file each, merged when the command ends.
  std::string dir_template = out + ".record-XXXXXX";
  if (!::mkdtemp(&dir_template[0])) return runtime_error(a, "cannot make a folder beside '" + out + "': " + std::strerror(errno));
  // Absolute, so a process that changes its working directory still writes there.
  char* absolute = ::realpath(dir_template.c_str(), nullptr);
  const std::string dir = absolute ? absolute : dir_template;
  std::free(absolute);

  const pid_t child = ::fork();
  if (child < 0) return runtime_error(a, std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    std::string preload = library;
    if (const char* existing = std::getenv("LD_PRELOAD"); existing && *existing) preload += std::string(" ") + existing;
    ::setenv("LD_PRELOAD", preload.c_str(), 1);
    ::setenv("PYROSCOPE_OUTPUT", (dir + "/%p.pyro").c_str(), 1);
    if (app) ::setenv("PYROSCOPE_APPLICATION_NAME", app->c_str(), 1);
    else ::unsetenv("PYROSCOPE_APPLICATION_NAME");  // each program under its own name
    if (const std::string* tags = a.value("--tags")) ::setenv("PYROSCOPE_TAGS", tags->c_str(), 1);
    if (const std::string* server = a.value("--server")) ::setenv("PYROSCOPE_SERVER_ADDRESS", server->c_str(), 1);
    if (const std::string* rate = a.value("--rate")) ::setenv("PYROSCOPE_SAMPLE_RATE", rate->c_str(), 1);
    ::setenv("PYROSCOPE_CHILDREN", a.has("--no-children") ? "0" : "1", 1);
    if (heap) ::setenv("PYROSCOPE_ALLOCATION_SAMPLE_BYTES", heap_bytes ? heap_bytes->c_str() : "524288", 1);
    else ::unsetenv("PYROSCOPE_ALLOCATION_SAMPLE_BYTES");
    // As with --heap, the flag alone decides: a PYROSCOPE_WALL_CLOCK left in the environment (for a
    // program that reads it itself, like examples/rideshare) does not turn it on.
    if (a.has("--wall")) ::setenv("PYROSCOPE_WALL_CLOCK", "1", 1);
    else ::unsetenv("PYROSCOPE_WALL_CLOCK");
    if (a.has("--short-threads")) ::setenv("PYROSCOPE_SHORT_LIVED_THREADS", "1", 1);
    else ::unsetenv("PYROSCOPE_SHORT_LIVED_THREADS");
    ::setenv("PYROSCOPE_RECORD_PID", std::to_string(::getpid()).c_str(), 1);
    std::vector<char*> argv;
    for (const std::string& word : command) argv.push_back(const_cast<char*>(word.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "pyro record: error: cannot run '%s': %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  // Like a shell running a foreground job: ^C and ^\ go to the command, which decides; pyro waits for
  // it and saves what was recorded.
  struct sigaction ignore {}, old_int {}, old_quit {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGINT, &ignore, &old_int);
  ::sigaction(SIGQUIT, &ignore, &old_quit);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGQUIT, &old_quit, nullptr);
  const int command_rc = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && ::rmdir(dir.c_str()) == 0) return 127;  // did not run
  if (WIFSIGNALED(status))
    std::fprintf(stderr, "pyro record: the command ended by signal %d (%s): samples since its last 10 s block are lost\n",
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
  if (file_exists(out) && a.has("--force") && ::unlink(out.c_str()) != 0)
    return runtime_error(a, "cannot remove '" + out + "': " + std::strerror(errno));
  bool wrote = false;
  const int merge_rc = merge_recorded(a, dir, out, &wrote);
  // The command's own exit status comes first (scripts test it); then whether saving worked.
  return command_rc != 0 ? command_rc : merge_rc;
}

int cmd_help(const Args& a) {
  if (a.positional.empty()) {
    print_main_usage(stdout);
    return kExitOk;
  }
  for (const Command& c : commands())
    if (a.positional[0] == c.name) {
      print_command_usage(stdout, c);
      return kExitOk;
    }
  return usage_error(nullptr, "unknown command '" + a.positional[0] + "'");
}

const OptionSpec kSalvage{"--salvage", nullptr, nullptr, "open damaged files: read the records before the damage"};
const OptionSpec kCheck{"--check", nullptr, nullptr,
                        "check every record now (a closed file is opened from its index and each record checked when read)"};
const OptionSpec kFrom{"--from", nullptr, "T", "start of the range (default: start of the data)"};
const OptionSpec kUntil{"--until", nullptr, "T", "end of the range, exclusive (default: end of the data)"};
const OptionSpec kForce{"--force", nullptr, nullptr, "replace OUT if it exists"};
const std::vector<OptionSpec> kImportOptions = {
    {"--output", "-o", "OUT", "the .pyro file to append to"},
    {"--app", nullptr, "NAME", "application of the series (default: the input's file name)"},
    {"--tags", nullptr, "K=V,...", "tags of the series, k=v pairs separated by commas"},
    {"--at", nullptr, "T", "where a profile without its own time goes (default: now)"},
    {"--strict", nullptr, nullptr, "refuse an input at its first unreadable line or sample"},
    {"--format", nullptr, "F", "pprof, folded, perf-script, speedscope or cpuprofile (default: from the content)"}};
const OptionSpec kMultiplier{"--multiplier", nullptr, "M", "segment-tree multiplier m of OUT (default: input's)"};

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"info", "FILE...", "apps, series, tags, time span, blocks, stored trees, symbols and size of each file",
       {kSalvage, kCheck}, 1, cmd_info},
      {"query", "FILE... SELECTOR [--from T] [--until T] [--format F] [--top N] [-o OUT]",
       "merged profile of the series matching SELECTOR, e.g. 'app{region=\"eu\",vehicle!=\"car\"}'",
       {kFrom, kUntil,
        {"--format", nullptr, "F", "folded (default), table, json (Pyroscope flamebearer) or timeline"},
        {"--top", nullptr, "N", "table: first N functions; folded: N heaviest stacks"},
        {"--output", "-o", "OUT", "write to this file instead of standard output"},
        kSalvage},
       2, cmd_query},
      {"import", "FILE... -o OUT.pyro [--app NAME] [--tags k=v,k2=v2] [--at T] [--strict] [--format F]",
       "append profiles (pprof, folded, perf script, speedscope, .cpuprofile; - reads standard input) to "
       "OUT.pyro (created if missing); the format is told by the content",
       kImportOptions, 1, cmd_import},
      {"import-folded", "IN -o OUT.pyro [--app NAME] [--tags k=v,k2=v2] [--at T] [--strict]",
       "the same as import (kept for scripts written before it)", kImportOptions, 1, cmd_import},
      {"export", "FILE... SELECTOR [--from T] [--until T] [--format pprof|speedscope|folded] [--all-types] -o OUT",
       "the selection's profile for other tools: gzipped pprof (go tool pprof, Grafana), speedscope JSON "
       "or folded text, with its types, units and period",
       {kFrom, kUntil, {"--format", nullptr, "F", "pprof (default), speedscope or folded"},
        {"--all-types", nullptr, nullptr, "every profile type the selector's series have (a '{}' selector: always)"},
        {"--plain", nullptr, nullptr, "pprof: the protobuf without gzip"},
        {"--output", "-o", "OUT", "the file to write (- for standard output)"}, kSalvage},
       2, cmd_export},
      {"slice", "FILE... SELECTOR --from T --until T -o OUT.pyro",
       "copy the matching series over a time range, block by block, into a new file",
       {kFrom, kUntil, {"--output", "-o", "OUT", "the new .pyro file"}, kForce, kMultiplier, kSalvage}, 2,
       cmd_slice},
      {"export-html", "FILE... SELECTOR [--from T] [--until T] [--view V] [--right-from T --right-until T] --viewer DIR -o OUT.html",
       "one .html file with the viewer and the selection inside: opens from file:// with no server",
       {kFrom, kUntil, {"--view", nullptr, "V", "flamegraph, table, both, comparison or diff"},
        {"--right-from", nullptr, "T", "comparison and diff: start of the right range"},
        {"--right-until", nullptr, "T", "comparison and diff: end of the right range"},
        {"--viewer", nullptr, "DIR", "the browser viewer's folder (viewer/build-wasm.sh DIR; or PYROSCOPE_VIEWER_DIR)"},
        {"--output", "-o", "OUT", "the .html file"}, kForce, kSalvage}, 2, cmd_export_html},
      {"merge", "IN.pyro... -o OUT.pyro",
       "all series of all inputs in one new file; blocks of a series at the same time are merged",
       {{"--output", "-o", "OUT", "the new .pyro file"}, kForce, kMultiplier, kSalvage}, 1, cmd_merge},
      {"export-folded", "FILE... SELECTOR [--from T] [--until T] -o OUT.folded",
       "merged profile of a selection as folded text (like query --format folded, to a file)",
       {kFrom, kUntil, {"--output", "-o", "OUT", "the folded file to write (- for standard output)"}, kSalvage},
       2, cmd_export_folded},
      {"serve", "--data DIR [--bind 127.0.0.1:4040] [--token TOKEN] [--retention 30d] [--viewer DIR]",
       "a Pyroscope-compatible ingest server (/ingest, Push) storing into DIR, with the live viewer (docs/serve.md)",
       [] {
         std::vector<OptionSpec> options;
         for (const auto& o : pyroscope::serve::serve_options()) options.push_back({o.name, nullptr, o.value_name, o.help});
         return options;
       }(),
       0, [](const Args& a) { return pyroscope::serve::serve_command(a.values, a.flags); }},
      {"record", "[-o OUT.pyro] [--app NAME] [--tags k=v,...] [--server URL] [--rate HZ] [--no-children] [--heap] [--wall] [--short-threads] -- CMD ARGS...",
       "run a program built without pyroscope.hpp under the sampler (libpyroscope-preload.so) and write its "
       "profile, and those of the programs it runs, to OUT.pyro",
       {{"--output", "-o", "OUT", "the .pyro file (default: <app or command name>.pyro)"},
        {"--app", nullptr, "NAME", "application name of every process (default: each program's own name)"},
        {"--tags", nullptr, "K=V,...", "static tags of the series"},
        {"--server", nullptr, "URL", "also push each 10 s block to a Pyroscope server"},
        {"--rate", nullptr, "HZ", "samples per second of CPU time per thread (default 100)"},
        {"--no-children", nullptr, nullptr, "profile only CMD, not the programs it executes"},
        {"--heap", nullptr, nullptr, "sample allocations too: alloc_space, alloc_objects, inuse_space, inuse_objects "
                                     "(libpyroscope-preload-heap.so; docs/memory.md)"},
        {"--heap-bytes", nullptr, "BYTES", "with --heap: mean bytes between sampled allocations (default 524288)"},
        {"--wall", nullptr, nullptr, "sample wall-clock time too: every thread, running or blocked, 100 times a "
                                     "second, into the series <app>.wall (where threads wait; docs/sampler.md)"},
        {"--short-threads", nullptr, nullptr, "sample threads that live less than the 100-200 ms thread scan too "
                                              "(Linux >= 6.3; Config::short_lived_threads in docs/sampler.md)"},
        kForce},
       0, cmd_record},
      {"help", "[COMMAND]", "this overview, or the options of one command", {}, 0, cmd_help},
  };
  return table;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_main_usage(stderr);
    return kExitUsage;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h") {
    print_main_usage(stdout);
    return kExitOk;
  }
  if (name == "--version") {
    std::printf("pyro %s\n", PYROSCOPE_VERSION_STRING);
    return kExitOk;
  }
  for (const Command& c : commands()) {
    if (name != c.name) continue;
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--") == 0) break;
      if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
        print_command_usage(stdout, c);
        return kExitOk;
      }
    }
    Args args;
    if (int rc = parse_args(c, argc - 2, argv + 2, &args)) return rc;
    return c.run(args);
  }
  return usage_error(nullptr, "unknown command '" + name + "'");
}
