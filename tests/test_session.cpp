// The session layer under the viewer and pyro (session/session.hpp): time syntax, names, values,
// per-function rows, opening sources, the selection, settings, slices and share files.
// pyroscope-test: link=pyroscope_session
#include "session.hpp"
#include "test_core_support.hpp"

#include <cstdlib>
#include <cstring>

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
  CHECK(session::choices(session::ViewMode()) == "single, comparison or diff");
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
