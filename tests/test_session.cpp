// The session layer under the viewer and pyro (session/session.hpp): time syntax, names, values,
// per-function rows, opening sources, the selection, settings, slices and share files.
// pyroscope-test: link=pyroscope_session
#include "session.hpp"
#include "test_core_support.hpp"

#include <cstdlib>
#include <cstring>

#include <sys/stat.h>

using pyroscope::StatusCode;
using pyroscope::TimeRange;
namespace session = pyroscope::session;

namespace {


int64_t time_of(const std::string& text, int64_t now = kStart) {
  int64_t t = 0;
  const Status st = session::parse_time(text, now, &t);
  REQUIRE_MESSAGE(st.ok(), text << ": " << st.to_string());
  return t;
}

// A malloc'd copy, as LoadInput wants its bytes.
uint8_t* malloc_copy(const std::string& s) {
  auto* p = static_cast<uint8_t*>(std::malloc(s.size() ? s.size() : 1));
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p;
}

session::LoadInput bytes_input(const std::string& name, const std::string& bytes, int64_t modified = 0) {
  session::LoadInput in;
  in.name = name;
  in.bytes = malloc_copy(bytes);
  in.size = bytes.size();
  in.modified_unix = modified;
  return in;
}

// ride{region, vehicle} over 20 blocks and db.alloc_space over 5, in memory.
std::string sample_pyro() {
  pyroscope::Writer writer;
  REQUIRE(writer.open_memory().ok());
  for (int block = 0; block < 20; ++block) {
    for (const char* region : {"eu-north", "us-east"}) {
      for (const char* vehicle : {"car", "bike"}) {
        pyroscope::Tree tree;
        core_test::insert_stack(&tree, std::string("main;order_") + vehicle, 10 + block);
        if (std::strcmp(region, "eu-north") == 0) core_test::insert_stack(&tree, "main;mutex_lock", 5);
        REQUIRE(writer.append(pyroscope::SeriesKey("ride", {{"region", region}, {"vehicle", vehicle}}),
                              kStart + block * 10, tree).ok());
      }
    }
    if (block < 5) {
      pyroscope::Tree heap;
      core_test::insert_stack(&heap, "main;alloc", 4096);
      REQUIRE(writer.append(pyroscope::SeriesKey("db", "alloc_space", {}), kStart + block * 10, heap).ok());
    }
  }
  return writer.take_bytes();
}

// A session with sample_pyro() open.
void open_sample(session::Session* s) {
  std::vector<session::LoadInput> inputs;
  inputs.push_back(bytes_input("data.pyro", sample_pyro()));
  REQUIRE(s->open(std::move(inputs)).empty());
}

}  // namespace

TEST_CASE("session: times as unix seconds, ISO 8601 and now-relative, overflow refused") {
  CHECK(time_of("1700000000") == 1700000000);
  CHECK(time_of("-5") == -5);
  CHECK(time_of("now") == kStart);
  CHECK(time_of("now-90s") == kStart - 90);
  CHECK(time_of("now-30m") == kStart - 1800);
  CHECK(time_of("now+1h") == kStart + 3600);
  CHECK(time_of("now-7d") == kStart - 7 * 86400);
  CHECK(time_of("now-2w") == kStart - 14 * 86400);
  CHECK(time_of("2026-11-22T10:00:00Z") == 1795341600);
  CHECK(time_of("2026-11-22 10:00") == 1795341600);
  CHECK(time_of("2026-11-22T12:00:00+02:00") == 1795341600);
  CHECK(time_of("2026-11-22T10:00:00.750Z") == 1795341600);
  CHECK(time_of("2026-11-22") == 1795305600);
  CHECK(time_of("1969-12-31T23:59:59Z") == -1);
  CHECK(time_of("9223372036854775807") == int64_t(1) << 60);  // any int64 is a time, clamped
  CHECK(time_of("-9223372036854775808") == -(int64_t(1) << 60));
  for (const char* bad : {"", " 12", "12 ", "now-", "now-h", "now-1", "now-1y", "now--1h", "now-+1h", "now - 1h",
                          "2026-02-30", "2026-13-01", "2026-11-22T25:00Z", "2026-11-22T10:00+24:00", "yesterday",
                          "1e9", "0x10", "99999999999999999999", "now-999999999999999999w", "now+1152921504606846976s"}) {
    CAPTURE(bad);
    int64_t t = 42;
    const Status st = session::parse_time(bad, kStart, &t);
    CHECK(st.code() == StatusCode::invalid_argument);
    CHECK(st.message().find(std::string("'") + bad + "'") != std::string::npos);  // names the text
    CHECK(t == 42);
  }
  // now itself may sit anywhere in int64: the result is clamped or refused, never undefined.
  int64_t t = 0;
  CHECK_FALSE(session::parse_time("now-1w", INT64_MIN, &t).ok());
  CHECK_FALSE(session::parse_time("now+1w", INT64_MAX, &t).ok());
  CHECK(session::format_utc(1795341600) == "2026-11-22T10:00:00Z");
  CHECK(session::format_utc(-1) == "1969-12-31T23:59:59Z");
  CHECK(session::format_clock(1795341600, false) == "10:00:00");
  CHECK(session::format_clock(1795341600, true) == "2026-11-22 10:00:00");
  CHECK(session::format_duration(3723) == "1h 2m 3s");
  CHECK(session::format_duration(90000) == "1d 1h 0m");
}

TEST_CASE("session: floor and ceiling saturate instead of overflowing") {
  CHECK(session::floor_to(25, 10) == 20);
  CHECK(session::floor_to(-25, 10) == -30);
  CHECK(session::ceil_to(25, 10) == 30);
  CHECK(session::ceil_to(-25, 10) == -20);
  CHECK(session::ceil_to(30, 10) == 30);
  CHECK(session::floor_to(INT64_MIN, 10) <= INT64_MIN + 9);  // no wrap to a large positive number
  CHECK(session::floor_to(INT64_MIN, 10) < 0);
  CHECK(session::ceil_to(INT64_MAX, 10) > 0);
  CHECK(session::ceil_to(INT64_MAX, 10) >= INT64_MAX - 9);
  const TimeRange extreme = session::clamped(TimeRange{INT64_MIN, INT64_MAX});
  CHECK(extreme == TimeRange{-62167219200, 253402300800});  // years 0000 to 9999
}

TEST_CASE("session: names come from one table per setting") {
  session::ViewMode view;
  CHECK(session::parse_name("diff", &view));
  CHECK(view == session::ViewMode::diff);
  CHECK_FALSE(session::parse_name("Diff", &view));
  CHECK(std::string(session::name_of(session::Panels::flame)) == "flamegraph");
  CHECK(session::choices(session::ViewMode()) == "single, comparison, diff or sandwich");
  CHECK(session::choices(session::NameMode()) == "full, short or merged");
  CHECK(session::choices(session::RecursionMode()) == "keep, direct or all");
  CHECK(session::choices(session::DiffMode()) == "share, per_second or absolute");
  CHECK(session::choices(session::Theme()) == "dark or light");
  session::TableSort sort;
  CHECK(session::parse_name("right_total", &sort));
  CHECK(sort == session::TableSort::right_total);
}

TEST_CASE("session: values in their units") {
  pyroscope::SeriesInfo samples;
  CHECK(session::format_value(1234567, samples) == "1,234,567 samples");
  pyroscope::SeriesInfo at_100hz;
  at_100hz.period = 10000000;
  at_100hz.period_unit = "nanoseconds";
  CHECK(session::format_value(250, at_100hz) == "2.50 s");
  pyroscope::SeriesInfo ns;
  ns.unit = "nanoseconds";
  CHECK(session::format_value(12500000, ns) == "12.5 ms");
  CHECK(session::format_value(90000000000ull, ns) == "1.50 min");
  pyroscope::SeriesInfo bytes;
  bytes.unit = "bytes";
  CHECK(session::format_value(512, bytes) == "512 B");
  CHECK(session::format_value(1536, bytes) == "1.50 KiB");
  CHECK(session::format_value(3435973837ull, bytes) == "3.20 GiB");
  pyroscope::SeriesInfo objects;
  objects.unit = "objects";
  CHECK(session::format_value(1234, objects) == "1,234 objects");
}

TEST_CASE("session: function rows count recursion once, for a tree and for a diff") {
  pyroscope::Tree left, right;
  core_test::insert_stack(&left, "main;parse;parse;lex", 4);
  core_test::insert_stack(&left, "main;eval", 6);
  core_test::insert_stack(&right, "main;lex", 8);
  core_test::insert_stack(&right, "main;eval", 1);
  std::vector<session::FunctionRow> rows;
  session::function_rows(left, nullptr, &rows);
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_name;
  for (const auto& r : rows) by_name[std::string(left.symbols().name(r.symbol))] = {r.self, r.total};
  CHECK(by_name["parse"] == std::make_pair(uint64_t(0), uint64_t(4)));
  CHECK(by_name["main"] == std::make_pair(uint64_t(0), uint64_t(10)));
  CHECK(by_name["lex"] == std::make_pair(uint64_t(4), uint64_t(4)));
  // Per function, the same totals Tree::function_totals gives.
  std::vector<pyroscope::Tree::FunctionTotal> totals;
  left.function_totals(&totals);
  REQUIRE(totals.size() == rows.size());
  for (size_t i = 0; i < rows.size(); ++i) CHECK(totals[i].total == rows[i].total);

  const pyroscope::DiffTree diff = pyroscope::DiffTree::compute(left, right);
  session::function_rows(diff.shape(), &diff, &rows);
  std::vector<uint32_t> order(rows.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  session::sort_rows(diff.shape(), &diff, rows, session::TableSort::change, false, &order);
  // lex grew from 40 % to 89 % of its side: the biggest change first; eval shrank most (60 % to 11 %).
  CHECK(diff.shape().symbols().name(rows[order.front()].symbol) == "lex");
  CHECK(diff.shape().symbols().name(rows[order.back()].symbol) == "eval");
  session::sort_rows(diff.shape(), &diff, rows, session::TableSort::name, true, &order);
  CHECK(diff.shape().symbols().name(rows[order.front()].symbol) == "eval");
}

TEST_CASE("session: flamebearer JSON as Pyroscope's /render writes it") {
  pyroscope::Tree tree;
  core_test::insert_stack(&tree, "a;b", 3);
  core_test::insert_stack(&tree, "a;c", 2);
  core_test::insert_stack(&tree, "d", 1);
  CHECK(session::flamebearer_json(tree) ==
        "{\"names\":[\"total\",\"a\",\"b\",\"c\",\"d\"],\"levels\":[[0,6,0,0],[0,5,0,1,0,1,1,4],[0,3,3,2,0,2,2,3]],"
        "\"numTicks\":6,\"maxSelf\":3}");
}

TEST_CASE("session: opening .pyro and folded text together; one query path for both") {
  session::Session s;
  std::vector<session::LoadInput> inputs;
  inputs.push_back(bytes_input("data.pyro", sample_pyro()));
  inputs.push_back(bytes_input("perf.folded", "main;work 7\nmain;idle 3\n", kStart + 55));
  inputs.push_back(bytes_input("ride.txt", "x;y 2\n", kStart + 55));  // app name clashes with the .pyro's
  inputs.push_back(bytes_input("broken.folded", "main;work seven\n"));
  const std::string problems = s.open(std::move(inputs));
  CHECK(problems.find("broken.folded") != std::string::npos);  // no line of it is folded text
  REQUIRE(s.sources().size() == 3);
  CHECK(s.apps() == std::vector<std::string>{"db", "perf", "ride", "ride-imported"});
  CHECK(s.selection().app == "ride");  // the app with the most series
  CHECK(s.types() == std::vector<std::string>{"cpu"});
  CHECK(s.tag_keys() == std::vector<std::string>{"region", "vehicle"});
  CHECK(s.selection().ranges[0] == TimeRange{kStart, kStart + 200});

  s.select_app("perf");
  REQUIRE(s.update_trees());
  CHECK(s.left_tree().total() == 10);
  CHECK(s.selection().ranges[0] == TimeRange{kStart + 50, kStart + 60});  // its block
  const pyroscope::QueryResult& tl = s.timeline(TimeRange{kStart, kStart + 200}, 20);
  REQUIRE(tl.timeline.samples.size() == 20);
  CHECK(tl.timeline.samples[5] == 10);
  std::string pyro;
  pyroscope::SliceStats stats;
  REQUIRE(s.slice(&pyro, &stats).ok());  // a folded source slices like any other
  CHECK(stats.samples == 10);
  const auto folded = s.folded();
  REQUIRE(folded.size() == 1);
  CHECK(folded[0].text == "main;idle 3\nmain;work 7\n");

  s.select_app("db");
  CHECK(s.selection().type == "alloc_space");
  CHECK(s.info().unit == "bytes");
  REQUIRE(s.update_trees());
  CHECK(s.left_tree().total() == 5 * 4096);
}

TEST_CASE("session: nothing opened keeps the data shown") {
  session::Session s;
  std::vector<session::LoadInput> first;
  first.push_back(bytes_input("data.pyro", sample_pyro()));
  CHECK(s.open(std::move(first)).empty());
  std::vector<session::LoadInput> bad;
  bad.push_back(bytes_input("junk.pyro", "not a profile at all"));
  const std::string problems = s.open(std::move(bad));
  CHECK(problems.find("junk.pyro") != std::string::npos);
  CHECK(s.sources().size() == 1);
  CHECK(s.apps().size() == 2);
}

TEST_CASE("session: tags, views and ranges make the selector and the trees") {
  session::Session s;
  open_sample(&s);
  s.set_tag_values("region", {"eu-north"});
  CHECK(s.selector_text() == "ride.cpu{region=\"eu-north\"}");
  s.set_tag_values("vehicle", {"car", "bike"});
  CHECK(s.selector_text() == "ride.cpu{region=\"eu-north\",vehicle=~\"bike|car\"}");
  REQUIRE(s.update_trees());
  CHECK_FALSE(s.update_trees());  // nothing changed
  uint64_t expected = 0;
  for (int block = 0; block < 20; ++block) expected += 2 * (10 + block + 5);
  CHECK(s.left_tree().total() == expected);

  // A pair view splits the range in halves until both are chosen.
  s.set_view(session::ViewMode::diff);
  CHECK(s.selection().ranges[0] == TimeRange{kStart, kStart + 100});
  CHECK(s.selection().ranges[1] == TimeRange{kStart + 100, kStart + 200});
  REQUIRE(s.update_trees());
  REQUIRE(s.diff() != nullptr);
  CHECK(s.diff()->left_total(pyroscope::Tree::kRoot) + s.diff()->right_total(pyroscope::Tree::kRoot) == expected);
  // Extreme ranges are clamped, never overflow.
  s.set_range(0, TimeRange{INT64_MIN, INT64_MAX});
  CHECK(s.selection().ranges[0].valid());
  REQUIRE(s.update_trees());
  CHECK(s.left_tree().total() == expected);
  s.set_range(1, TimeRange{5, 5});  // empty: ignored
  CHECK(s.selection().ranges[1] == TimeRange{kStart + 100, kStart + 200});

  const auto& shares = s.tag_value_samples();
  REQUIRE(shares.count("region"));
  REQUIRE(shares.at("region").size() == 2);  // eu-north, us-east with the vehicle choice applied
  CHECK(shares.at("region")[0] == expected);
  s.clear_tags();
  CHECK(s.selector_text() == "ride.cpu{}");
}

TEST_CASE("session: settings before and after data, errors name the setting") {
  session::Session s;
  REQUIRE(s.apply_setting("query", "ride{region=\"us-east\"}").ok());
  REQUIRE(s.apply_setting("from", std::to_string(kStart + 50)).ok());
  REQUIRE(s.apply_setting("until", std::to_string(kStart + 150)).ok());
  REQUIRE(s.apply_setting("view", "table").ok());
  REQUIRE(s.apply_setting("search", "order").ok());
  std::vector<session::LoadInput> inputs;
  inputs.push_back(bytes_input("data.pyro", sample_pyro()));
  REQUIRE(s.open(std::move(inputs)).empty());
  CHECK(s.selector_text() == "ride.cpu{region=\"us-east\"}");
  CHECK(s.selection().ranges[0] == TimeRange{kStart + 50, kStart + 150});
  CHECK(s.view_settings().panels == session::Panels::table);
  CHECK(s.view_settings().search == "order");

  REQUIRE(s.apply_setting("app", "db").ok());
  REQUIRE(s.apply_setting("type", "alloc_space").ok());
  CHECK(s.selector_text() == "db.alloc_space{}");
  REQUIRE(s.apply_setting("type", "inuse_space").ok());  // valid name, but db has no such type
  CHECK(s.error().find("no profile type 'inuse_space'") != std::string::npos);

  struct Bad {
    const char* key;
    const char* value;
    const char* says;
  } const bad[] = {{"view", "sideways", "view must be"}, {"theme", "pink", "theme must be dark or light"},
                   {"from", "yesterday", "from: time 'yesterday'"}, {"until", "now-1y", "until:"},
                   {"query", "ride{region=~\"e.*\"}", "other matchers are not supported"},
                   {"query", "{}", "names no application"}, {"tags", "region", "expected key=value"},
                   {"type", "in use", "not a profile type"}, {"zoom", "2", "unknown setting 'zoom'"}};
  for (const Bad& b : bad) {
    CAPTURE(b.key);
    const Status st = s.apply_setting(b.key, b.value);
    CHECK(st.code() == StatusCode::invalid_argument);
    CHECK(st.message().find(b.says) != std::string::npos);
  }
}

TEST_CASE("session: settings JSON round-trips the selection; share pages hold the slice") {
  session::Session s;
  open_sample(&s);
  s.set_tag_values("vehicle", {"car"});
  s.set_view(session::ViewMode::comparison);
  s.view_settings().search = "mutex";
  const std::string settings = s.settings_json();
  CHECK(settings.find("\"app\":\"ride\"") != std::string::npos);
  CHECK(settings.find("\"tags\":\"vehicle=car\"") != std::string::npos);
  CHECK(settings.find("\"view\":\"comparison\"") != std::string::npos);
  CHECK(settings.find("\"right_from\":\"" + std::to_string(kStart + 100) + "\"") != std::string::npos);
  CHECK(settings.find("\"search\":\"mutex\"") != std::string::npos);

  std::string pyro;
  pyroscope::SliceStats stats;
  REQUIRE(s.slice(&pyro, &stats).ok());
  CHECK(stats.series == 2);      // eu-north and us-east cars
  CHECK(stats.blocks == 2 * 20);  // both halves of the range
  pyroscope::File sliced;
  REQUIRE(sliced.open_bytes(pyro).ok());
  CHECK(sliced.info().block_count == 40);
  CHECK(s.file_name(".pyro") == "ride-" + std::to_string(kStart) + "-" + std::to_string(kStart + 200) + ".pyro");

  pyroscope::share::PageParts parts;
  parts.page = "<html><script src=\"viewer-page.js\"></script><script async src=\"viewer.js\"></script></html>";
  parts.page_script = "page();";
  parts.viewer_script = "viewer();";
  std::string html;
  REQUIRE(s.share_page(parts, &html).ok());
  CHECK(html.find(pyroscope::share::base64(pyro)) != std::string::npos);
  CHECK(html.find("page();") != std::string::npos);
  parts.page = "<html>no scripts</html>";
  CHECK(s.share_page(parts, &html).code() == StatusCode::invalid_argument);

  // An empty selection has nothing to slice.
  s.set_tag_values("vehicle", {"rocket"});
  CHECK(s.slice(&pyro, &stats).code() == StatusCode::not_found);
}

TEST_CASE("session: pyro's selectors select any matchers, or every app and type") {
  session::Session s;
  open_sample(&s);
  pyroscope::Selector selector;
  REQUIRE(pyroscope::Selector::parse("ride{region!=\"eu-north\",vehicle=~\"c.*\"}", &selector).ok());
  REQUIRE(s.select(selector, TimeRange{kStart, kStart + 200}).ok());
  CHECK(s.selector_text() == "ride.cpu{region!=\"eu-north\",vehicle=~\"c.*\"}");
  REQUIRE(s.update_trees());
  uint64_t expected = 0;
  for (int block = 0; block < 20; ++block) expected += 10 + block;
  CHECK(s.left_tree().total() == expected);
  CHECK(s.select(selector, TimeRange{5, 5}).code() == StatusCode::invalid_argument);
  std::string pyro;
  REQUIRE(pyroscope::Selector::parse("{}", &selector).ok());
  REQUIRE(s.select(selector, TimeRange{kStart, kStart + 200}).ok());
  pyroscope::SliceStats stats;
  REQUIRE(s.slice(&pyro, &stats).ok());  // every app and type: the whole file again
  CHECK(stats.series == 5);
}

TEST_CASE("session: folded text streamed in pieces opens like the whole; unreadable lines become a notice") {
  const std::string text = "a;b 1\na;c 2\r\nd;e;f 3\n\na;b x4\na;b 4";
  session::Session s;
  std::vector<session::LoadInput> inputs;
  session::LoadInput streamed;
  streamed.name = "streamed.folded";
  streamed.modified_unix = kStart;
  streamed.folded = std::make_unique<pyroscope::FoldedImporter>();
  for (size_t i = 0; i < text.size(); i += 3) {
    const size_t n = std::min<size_t>(3, text.size() - i);
    streamed.folded->add(text.data() + i, n);
    streamed.size += n;
  }
  inputs.push_back(std::move(streamed));
  REQUIRE(s.open(std::move(inputs)).empty());
  REQUIRE(s.update_trees());
  CHECK(s.left_tree().to_folded() == "a;b 5\na;c 2\nd;e;f 3\n");
  REQUIRE(s.notices().size() == 1);
  CHECK(s.notices()[0].find("streamed.folded: imported 4 lines, skipped 1: line 5") == 0);
  CHECK(s.sources()[0].kind == "folded");
}

TEST_CASE("session: pprof and speedscope open by their content and export again with their units") {
  // A pprof written by the header itself: alloc_space in bytes.
  pyroscope::Tree tree;
  core_test::insert_stack(&tree, "main;cache::fill", 4096);
  core_test::insert_stack(&tree, "main;parse", 1024);
  pyroscope::ExportProfile profile;
  profile.type = "alloc_space";
  profile.info = pyroscope::default_series_info("alloc_space");
  profile.tree = &tree;
  pyroscope::ExportOptions options;
  options.from = kStart;
  options.until = kStart + 10;
  options.gzip = false;
  std::string pprof;
  REQUIRE(pyroscope::export_pprof({profile}, options, &pprof).ok());
  std::string speedscope;
  REQUIRE(pyroscope::export_speedscope({profile}, options, &speedscope).ok());

  session::Session s;
  std::vector<session::LoadInput> inputs;
  inputs.push_back(bytes_input("heap.bin", pprof));             // no telling extension: the content says pprof
  inputs.push_back(bytes_input("trace.json", speedscope, kStart));
  inputs.push_back(bytes_input("junk.bin", "\x01\x02 not a profile"));
  const std::string problems = s.open(std::move(inputs));
  CHECK(problems.find("junk.bin") != std::string::npos);
  REQUIRE(s.sources().size() == 2);
  CHECK(s.sources()[0].kind == "pprof");
  CHECK(s.sources()[1].kind == "speedscope");
  CHECK(s.apps() == std::vector<std::string>{"heap", "trace"});
  s.select_app("heap");
  CHECK(s.selection().type == "alloc_space");
  CHECK(s.info().unit == "bytes");
  REQUIRE(s.update_trees());
  CHECK(s.left_tree().total() == 5120);
  session::Session::NamedText exported;
  REQUIRE(s.export_profile(pyroscope::Format::pprof, &exported).ok());
  CHECK(exported.name.find("heap.alloc_space-") == 0);
  // What it exported imports with the same type, unit and total.
  std::vector<pyroscope::ProfileBlock> blocks;
  pyroscope::ImportOptions import;
  import.app = "again";
  REQUIRE(pyroscope::import_profile(core_test::span_of(exported.text), import, &blocks).ok());
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].series.type == "alloc_space");
  CHECK(blocks[0].info.unit == "bytes");
  CHECK(blocks[0].tree.total() == 5120);
  REQUIRE(s.export_profile(pyroscope::Format::speedscope, &exported).ok());
  CHECK(exported.name.find(".speedscope.json") != std::string::npos);
  CHECK(s.export_profile(pyroscope::Format::perf_script, &exported).code() == StatusCode::invalid_argument);
}

TEST_CASE("session: a data directory stands for the .pyro files directly in it") {
  core_test::TempDir dir;
  const std::string pyro = sample_pyro();
  core_test::write_file(dir.file("2026-12-01T10.pyro"), pyro);
  core_test::write_file(dir.file("2026-12-01T09.late.pyro"), pyro);
  core_test::write_file(dir.file(".hidden.pyro"), pyro);
  core_test::write_file(dir.file("notes.txt"), "not a profile\n");
  REQUIRE(::mkdir(dir.file("sub.pyro").c_str(), 0755) == 0);  // a directory with the extension
  CHECK(session::data_files(dir.path()) ==
        std::vector<std::string>{dir.file("2026-12-01T09.late.pyro"), dir.file("2026-12-01T10.pyro")});
  CHECK(session::data_files(dir.path() + "/") ==
        std::vector<std::string>{dir.file("2026-12-01T09.late.pyro"), dir.file("2026-12-01T10.pyro")});
  CHECK(session::data_files(dir.file("notes.txt")) == std::vector<std::string>{dir.file("notes.txt")});
  CHECK(session::data_files(dir.file("missing")) == std::vector<std::string>{dir.file("missing")});
  CHECK(session::data_files(dir.file("sub.pyro")).empty());

  session::Session s;
  std::vector<session::LoadInput> inputs(1);
  inputs[0].path = dir.path();
  CHECK(s.open(std::move(inputs)).empty());
  REQUIRE(s.sources().size() == 2);  // both files of the directory, as one data set
  CHECK(s.apps() == std::vector<std::string>{"db", "ride"});
  s.select_app("db");
  REQUIRE(s.update_trees());
  CHECK(s.left_tree().total() == 2 * 5 * 4096);  // the blocks of both files add up

  session::Session empty;
  std::vector<session::LoadInput> none(1);
  none[0].path = dir.file("sub.pyro");
  CHECK(empty.open(std::move(none)).find("sub.pyro") != std::string::npos);  // named in the problems
}

namespace {

// A rideshare-like profile: region and vehicle tags over 30 blocks, a recursive JSON parser, 40
// one-sample metrics functions, and in eu-north's second half a mutex that grows.
std::string rideshare_pyro() {
  pyroscope::Writer writer;
  REQUIRE(writer.open_memory().ok());
  const char* regions[] = {"eu-north", "us-east", "ap-south"};
  const char* vehicles[] = {"car", "bike"};
  for (int block = 0; block < 30; ++block) {
    for (int r = 0; r < 3; ++r) {
      for (const char* vehicle : vehicles) {
        pyroscope::Tree tree;
        const std::string handle = "main;rideshare::Server::handle(Request const&)";
        const std::string order = handle + ";rideshare::order_" + vehicle + "(int)";
        core_test::insert_stack(&tree, order + ";rideshare::find_nearest_vehicle(Region, Vehicle)", 20 + r * 5);
        core_test::insert_stack(&tree, order + ";rideshare::check_driver_availability(Region);std::mutex::lock()",
                                r == 0 && block >= 15 ? 60 : 6);
        core_test::insert_stack(&tree, handle + ";json::parse(std::string_view);json::parse_value(Cursor&);"
                                                "json::parse_array(Cursor&);json::parse_value(Cursor&);json::parse_string(Cursor&)", 9);
        core_test::insert_stack(&tree, handle + ";json::parse(std::string_view);json::parse_value(Cursor&)", 3);
        core_test::insert_stack(&tree, "main;runtime::background();gc::collect()", 10);
        for (int m = 0; m < 40; ++m)
          core_test::insert_stack(&tree, handle + ";metrics::emit();metrics::counter_" + std::to_string(m) + "()", 1);
        REQUIRE(writer.append(pyroscope::SeriesKey("ride-sharing-app", {{"region", regions[r]}, {"vehicle", vehicle}}),
                              kStart + block * 10, tree).ok());
      }
    }
  }
  return writer.take_bytes();
}

void open_rideshare(session::Session* s) {
  std::vector<session::LoadInput> inputs;
  inputs.push_back(bytes_input("rideshare.pyro", rideshare_pyro()));
  REQUIRE(s->open(std::move(inputs)).empty());
}

}  // namespace

TEST_CASE("session: the sandwich of every function totals what pyro query --format table shows") {
  session::Session s;
  open_rideshare(&s);
  REQUIRE(s.apply_setting("view", "sandwich").ok());
  s.update_trees();
  CHECK(s.sandwich() == nullptr);  // no function yet
  std::vector<session::FunctionRow> rows;  // pyro query --format table's rows
  session::function_rows(s.left_tree(), nullptr, &rows);
  REQUIRE(rows.size() > 50);
  for (const session::FunctionRow& row : rows) {
    const std::string name(s.left_tree().symbols().name(row.symbol));
    CAPTURE(name);
    REQUIRE(s.apply_setting("function", name).ok());
    REQUIRE(s.update_trees() == session::Session::kSandwichChanged);  // the trees stay; only the sandwich
    REQUIRE(s.sandwich() != nullptr);
    CHECK(s.sandwich()->total == row.total);
    CHECK(s.sandwich()->self == row.self);
    CHECK(s.sandwich()->callers.total() == row.total);
    CHECK(s.sandwich()->callees.total() == row.total);
  }
  // json::parse_value calls itself through parse_array: counted once, as the table counts it.
  REQUIRE(s.apply_setting("function", "json::parse_value(Cursor&)").ok());
  s.update_trees();
  REQUIRE(s.sandwich());
  CHECK(s.sandwich()->total == 30 * 6 * 12);
  const pyroscope::Tree& callees = s.sandwich()->callees;
  CHECK(callees.find_path({"json::parse_value(Cursor&)", "json::parse_array(Cursor&)", "json::parse_value(Cursor&)"}) !=
        pyroscope::Tree::kNoNode);
  REQUIRE(s.apply_setting("function", "no::such()").ok());
  s.update_trees();
  CHECK(s.sandwich() == nullptr);
  CHECK(s.settings_json().find("\"function\":\"no::such()\"") != std::string::npos);
}

// The viewer's sandwich leaves out nodes below 2^-16 of the function's total (Session::kSandwichDetail);
// zooming far into a graph computes it again, finer, so the small nodes under the zoomed node are there.
TEST_CASE("session: the sandwich leaves out what cannot be drawn, and a deep zoom brings it back") {
  pyroscope::Writer writer;
  REQUIRE(writer.open_memory().ok());
  pyroscope::Tree tree;
  core_test::insert_stack(&tree, "main;serve;work;big_leaf", 2000000);
  core_test::insert_stack(&tree, "main;serve;work;mid;deeper", 3000);
  for (int i = 0; i < 50; ++i) core_test::insert_stack(&tree, "main;serve;work;mid;tiny_" + std::to_string(i), 1);
  REQUIRE(writer.append(pyroscope::SeriesKey("zoomed", {}), kStart, tree).ok());
  session::Session s;
  std::vector<session::LoadInput> inputs;
  inputs.push_back(bytes_input("zoomed.pyro", writer.take_bytes()));
  REQUIRE(s.open(std::move(inputs)).empty());
  REQUIRE(s.apply_setting("view", "sandwich").ok());
  REQUIRE(s.apply_setting("function", "work").ok());
  s.update_trees();
  REQUIRE(s.sandwich() != nullptr);
  const uint64_t total = 2000000 + 3000 + 50;
  CHECK(s.sandwich()->total == total);
  CHECK(s.sandwich()->min_total == (total + 65535) / 65536);  // 32 samples
  const pyroscope::Tree& coarse = s.sandwich()->callees;
  const uint32_t mid = coarse.find_path({"work", "mid"});
  REQUIRE(mid != pyroscope::Tree::kNoNode);
  CHECK(coarse.node_total(mid) == 3050);  // exact, with its left-out children
  CHECK(coarse.find_path({"work", "mid", "deeper"}) != pyroscope::Tree::kNoNode);
  CHECK(coarse.find_path({"work", "mid", "tiny_7"}) == pyroscope::Tree::kNoNode);
  CHECK(s.sandwich()->callers.total() == total);

  s.refine_sandwich(1500000);  // a zoom of less than 8 times: no new sandwich
  CHECK_FALSE(s.sandwich_stale());
  s.refine_sandwich(3050);  // zoomed into mid: 656 times
  CHECK(s.sandwich_stale());
  CHECK(s.update_trees() == session::Session::kSandwichChanged);
  CHECK(s.sandwich()->min_total == 1);
  CHECK(s.sandwich()->callees.find_path({"work", "mid", "tiny_7"}) != pyroscope::Tree::kNoNode);
  s.refine_sandwich(2000000);  // zooming out keeps the finer detail
  CHECK_FALSE(s.sandwich_stale());
  // Another function starts coarse again.
  REQUIRE(s.apply_setting("function", "serve").ok());
  s.update_trees();
  CHECK(s.sandwich()->min_total == (total + 65535) / 65536);
}

TEST_CASE("session: names and recursion make the view trees; the queries' trees stay for exports") {
  session::Session s;
  open_rideshare(&s);
  REQUIRE(s.update_trees() == session::Session::kTreesChanged);
  CHECK(&s.left_view() == &s.left_tree());  // nothing to change: no copy
  const uint64_t total = s.left_tree().total();

  REQUIRE(s.apply_setting("recursion", "all").ok());
  REQUIRE(s.update_trees() == session::Session::kTreesChanged);
  CHECK(s.left_view().total() == total);
  CHECK(s.left_view().find_path({"main", "rideshare::Server::handle(Request const&)", "json::parse(std::string_view)",
                                 "json::parse_value(Cursor&)", "json::parse_array(Cursor&)", "json::parse_string(Cursor&)"}) !=
        pyroscope::Tree::kNoNode);
  CHECK(s.folded()[0].text == s.left_tree().to_folded());  // exports keep the real stacks

  REQUIRE(s.apply_setting("names", "merged").ok());
  s.update_trees();
  const pyroscope::Tree& merged = s.left_view();
  CHECK(merged.find_path({"main", "rideshare::Server::handle", "rideshare::order_car"}) != pyroscope::Tree::kNoNode);
  const session::FrameNames& names = s.frame_names();
  CHECK(names.mode() == session::NameMode::merged);
  CHECK(names.full_names("rideshare::order_car") == std::vector<std::string_view>{"rideshare::order_car(int)"});
  CHECK(names.matches(pyroscope::NameSearch("order_car\\(int"), "rideshare::order_car"));  // full names are searched
  CHECK(names.label("rideshare::order_car") == "rideshare::order_car");

  REQUIRE(s.apply_setting("names", "short").ok());
  REQUIRE(s.apply_setting("recursion", "keep").ok());
  s.update_trees();
  CHECK(&s.left_view() == &s.left_tree());  // short labels only: the tree is the query's
  CHECK(s.frame_names().label("rideshare::order_car(int)") == "rideshare::order_car");
  CHECK(s.frame_names().full_names("rideshare::order_car(int)").size() == 1);
  CHECK(s.apply_setting("names", "tiny").message().find("names must be full, short or merged") != std::string::npos);
  CHECK(s.apply_setting("recursion", "some").message().find("recursion must be keep, direct or all") != std::string::npos);
}

TEST_CASE("session: diff modes: share, per second of ranges of different lengths, absolute") {
  session::DiffScale scale;
  scale.left_all = 100;
  scale.right_all = 400;
  scale.left_seconds = 10;
  scale.right_seconds = 40;
  // 10 of 100 on the left, 80 of 400 on the right.
  CHECK(session::diff_change(10, 80, scale) == doctest::Approx(0.10));
  CHECK(session::diff_change_percent(10, 80, scale) == doctest::Approx(100.0));  // 10 % -> 20 %, clamped
  scale.mode = session::DiffMode::per_second;
  CHECK(session::diff_change(10, 80, scale) == doctest::Approx(1.0));  // 1/s -> 2/s
  CHECK(session::diff_change_percent(10, 80, scale) == doctest::Approx(100.0));
  CHECK(session::diff_change(10, 20, scale) == doctest::Approx(-0.5));  // 1/s -> 0.5/s
  CHECK(session::diff_change_percent(10, 20, scale) == doctest::Approx(-50.0));
  scale.mode = session::DiffMode::absolute;
  CHECK(session::diff_change(10, 20, scale) == doctest::Approx(10.0));
  CHECK(session::diff_change_percent(10, 20, scale) == doctest::Approx(100.0));
  CHECK(session::diff_change_percent(0, 5, scale) == 100.0);
  CHECK(session::diff_change_percent(0, 0, scale) == 0.0);

  pyroscope::SeriesInfo samples;
  session::DiffScale share;
  CHECK(session::format_change(0.0125, share, samples) == "+1.25 pp");
  session::DiffScale rate;
  rate.mode = session::DiffMode::per_second;
  CHECK(session::format_change(-2.5, rate, samples) == "-2.50 samples/s");
  pyroscope::SeriesInfo cpu;
  cpu.period = 10000000;
  cpu.period_unit = "nanoseconds";
  CHECK(session::format_change(1.5, rate, cpu) == "+15.0 ms/s");
  session::DiffScale absolute;
  absolute.mode = session::DiffMode::absolute;
  CHECK(session::format_change(-1234, absolute, samples) == "-1,234 samples");

  // In a session: the table's change column follows the mode.
  session::Session s;
  open_rideshare(&s);
  REQUIRE(s.apply_setting("view", "diff").ok());
  REQUIRE(s.apply_setting("from", std::to_string(kStart)).ok());
  REQUIRE(s.apply_setting("until", std::to_string(kStart + 100)).ok());
  REQUIRE(s.apply_setting("right_from", std::to_string(kStart + 100)).ok());
  REQUIRE(s.apply_setting("right_until", std::to_string(kStart + 300)).ok());  // twice as long
  REQUIRE(s.apply_setting("diff_mode", "per_second").ok());
  s.update_trees();
  const session::DiffScale in_session = s.diff_scale();
  CHECK(in_session.mode == session::DiffMode::per_second);
  CHECK(in_session.left_seconds == 100);
  CHECK(in_session.right_seconds == 200);
  std::vector<session::FunctionRow> rows;
  session::function_rows(s.diff()->shape(), s.diff(), &rows);
  std::vector<uint32_t> order(rows.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  session::sort_rows(s.diff()->shape(), s.diff(), rows, session::TableSort::change, false, &order, &in_session);
  // Per second the whole profile grew (eu-north's mutex in the second half), and all of it is under
  // main: main changed most. In share mode main, 100 % on both sides, cannot change at all.
  CHECK(s.diff()->shape().symbols().name(rows[order[0]].symbol) == "main");
  CHECK(s.settings_json().find("\"diff_mode\":\"per_second\"") != std::string::npos);
  CHECK(s.apply_setting("diff_mode", "ratio").message().find("diff_mode must be share, per_second or absolute") !=
        std::string::npos);
}

TEST_CASE("session: tag breakdown over time and one click to a value against the rest") {
  session::Session s;
  open_rideshare(&s);
  REQUIRE(s.apply_setting("breakdown", "region").ok());
  const pyroscope::TimeRange window{kStart, kStart + 300};
  const session::TagBreakdown& b = s.tag_breakdown(window, 30);
  REQUIRE(b.key == "region");
  CHECK(b.values == 3);
  REQUIRE(b.lines.size() == 3);  // three values, no rest
  CHECK(b.lines[0].value == "eu-north");  // the most samples first
  double shares = 0;
  uint64_t samples = 0;
  for (const auto& line : b.lines) {
    shares += line.share;
    samples += line.samples;
    CHECK(line.points.size() == 30);
  }
  CHECK(shares == doctest::Approx(1.0));
  CHECK(samples == b.range_samples);
  // eu-north's mutex grows in the second half: its line rises, the others stay flat.
  CHECK(b.lines[0].points[20] > b.lines[0].points[5]);
  CHECK(b.lines[1].points[20] == b.lines[1].points[5]);
  uint64_t timeline_sum = 0;
  for (uint64_t v : b.timeline.samples) timeline_sum += v;
  CHECK(timeline_sum == b.range_samples);

  // The key's own choice does not hide the other lines; the other keys' choices apply.
  const uint64_t all_samples = b.range_samples;  // b is the session's: the next call replaces it
  s.set_tag_values("vehicle", {"car"});
  const session::TagBreakdown& cars = s.tag_breakdown(window, 30);
  REQUIRE(cars.lines.size() == 3);
  CHECK(cars.range_samples * 2 == all_samples);  // cars and bikes weigh the same here

  // "eu-north stands out": its diff against the rest, in one call.
  s.compare_tag("region", "eu-north");
  CHECK(s.selection().view == session::ViewMode::diff);
  CHECK(s.selection().ranges[1] == s.selection().ranges[0]);
  s.update_trees();
  REQUIRE(s.diff());
  CHECK(s.left().tree.total() + s.right().tree.total() == s.tag_breakdown(window, 30).range_samples);
  CHECK(s.right().series_matched == 1);  // eu-north cars
  CHECK(s.left().series_matched == 2);   // us-east and ap-south cars
  const std::string settings = s.settings_json();
  CHECK(settings.find("\"compare\":\"region=eu-north\"") != std::string::npos);

  // The same through settings, as a link carries them; choosing the key's values ends the comparison.
  session::Session t;
  REQUIRE(t.apply_setting("compare", "region=eu-north").ok());
  REQUIRE(t.apply_setting("view", "diff").ok());
  open_rideshare(&t);
  CHECK(t.selection().compare_key == "region");
  CHECK(t.selection().ranges[0] == t.selection().ranges[1]);
  t.set_tag_values("region", {"us-east"});
  CHECK_FALSE(t.selection().comparing_tag());
  CHECK(t.apply_setting("compare", "region").message().find("expected key=value") != std::string::npos);
  REQUIRE(s.apply_setting("breakdown", "no-such-key").ok());
  CHECK(s.tag_breakdown(window, 30).lines.empty());
}

TEST_CASE("session: every setting round-trips through settings(), JSON and a URL query") {
  session::Session s;
  open_rideshare(&s);
  const std::vector<std::pair<std::string, std::string>> given = {
      {"app", "ride-sharing-app"}, {"tags", "vehicle=car"}, {"compare", "region=eu-north"},
      {"from", std::to_string(kStart + 20)}, {"until", std::to_string(kStart + 200)}, {"view", "diff"},
      {"right_from", std::to_string(kStart + 100)}, {"right_until", std::to_string(kStart + 280)},
      {"function", "json::parse(std::string_view)"}, {"search", "json -\"parse_string\""}, {"focus_matches", "1"},
      {"names", "short"}, {"recursion", "direct"}, {"diff_mode", "absolute"}, {"breakdown", "region"},
      {"focus", "main;rideshare::Server::handle(Request const&)"}, {"theme", "light"}, {"orientation", "flame"},
      {"colour", "package"}};
  for (const auto& [key, value] : given) REQUIRE_MESSAGE(s.apply_setting(key, value).ok(), key);
  CHECK(s.settings() == given);
  const std::string query = s.settings_query();
  CHECK(query.find("search=json%20-%22parse_string%22") != std::string::npos);
  CHECK(query.find("focus=main%3Brideshare::Server::handle(Request%20const%26)") != std::string::npos);
  // Applied to a fresh session, the settings give the same settings back.
  session::Session t;
  for (const auto& [key, value] : s.settings()) REQUIRE(t.apply_setting(key, value).ok());
  open_rideshare(&t);
  CHECK(t.settings() == s.settings());
  CHECK(t.settings_json() == s.settings_json());
}
