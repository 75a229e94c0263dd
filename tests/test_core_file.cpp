// The .pyro file: writer, reader, data set, selectors and queries. Every expected query result is
// computed in the test by merging the trees that were written, not by reading the file.
#include "test_core_support.hpp"

#include <cmath>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>
#include <functional>
#include <set>

using core_test::stacks_of;
using pyroscope::Dataset;
using pyroscope::QueryResult;
using pyroscope::Tree;

namespace {


int64_t floor_block(int64_t t) { return t - (((t % kStep) + kStep) % kStep); }
int64_t ceil_block(int64_t t) { return floor_block(t + kStep - 1); }

// What was written: per series, per block start, the stacks of the block's tree.
struct Written {
  std::vector<SeriesKey> series;
  std::vector<std::map<int64_t, StackCounts>> blocks;  // parallel to series

  size_t block_count() const {
    size_t n = 0;
    for (const auto& per_series : blocks) n += per_series.size();
    return n;
  }
};

using TagPredicate = std::function<bool(const SeriesKey&)>;

std::string tag(const SeriesKey& key, const std::string& name) {
  for (const auto& t : key.tags)
    if (t.key == name) return t.value;
  return "";
}

// Merge of the written trees for the series the predicate selects over [from, until), rounded out to
// whole blocks; also the samples per block.
struct Expected {
  StackCounts stacks;
  std::vector<uint64_t> timeline;
  uint32_t series_matched = 0;
};

Expected expected_query(const Written& written, const TagPredicate& selects, int64_t from, int64_t until) {
  Expected expected;
  const int64_t first = floor_block(from), end = ceil_block(until);
  expected.timeline.assign(static_cast<size_t>((end - first) / kStep), 0);
  for (size_t s = 0; s < written.series.size(); ++s) {
    if (!selects(written.series[s])) continue;
    ++expected.series_matched;
    for (const auto& [start, stacks] : written.blocks[s]) {
      if (start < first || start >= end) continue;
      core_test::add_counts(&expected.stacks, stacks);
      expected.timeline[static_cast<size_t>((start - first) / kStep)] += core_test::sum_of(stacks);
    }
  }
  return expected;
}

// Six series over two apps, 100 blocks, with gaps that differ per series.
Written write_sample_file(const std::string& path) {
  Written written;
  written.series = {
      SeriesKey("ride", {{"region", "eu-north"}, {"vehicle", "car"}}),
      SeriesKey("ride", {{"region", "eu-north"}, {"vehicle", "bike"}}),
      SeriesKey("ride", {{"region", "us-east"}, {"vehicle", "car"}}),
      SeriesKey("ride", {{"region", "us-east"}, {"vehicle", "bike"}}),
      SeriesKey("ride", {{"region", "ap-south"}, {"vehicle", "scooter"}}),
      SeriesKey("other", {{"host", "x"}}),
  };
  written.blocks.resize(written.series.size());
  pyroscope::Writer writer;
  REQUIRE(writer.open(path).ok());
  for (int block = 0; block < 100; ++block) {
    for (size_t s = 0; s < written.series.size(); ++s) {
      if ((block + static_cast<int>(s)) % 7 == 3) continue;
      std::mt19937 rng(static_cast<uint32_t>(s * 1000 + static_cast<size_t>(block)));
      const StackCounts stacks = core_test::random_stacks(rng, 12, 6);
      const int64_t start = kStart + block * kStep;
      const Status status = writer.append(written.series[s], start, core_test::tree_of(stacks));
      REQUIRE_MESSAGE(status.ok(), status.to_string());
      written.blocks[s][start] = stacks;
    }
  }
  REQUIRE(writer.close().ok());
  return written;
}

void check_query(const Dataset& data, const Written& written, const std::string& selector,
                 const TagPredicate& selects, int64_t from, int64_t until) {
  CAPTURE(selector);
  CAPTURE(from - kStart);
  CAPTURE(until - kStart);
  QueryResult result;
  const Status status = data.query(selector, from, until, &result);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  const Expected expected = expected_query(written, selects, from, until);
  CHECK(stacks_of(result.tree) == expected.stacks);
  CHECK(result.tree.total() == core_test::sum_of(expected.stacks));
  CHECK(result.series_matched == expected.series_matched);
  CHECK(result.merges <= result.merge_bound);
  CHECK(result.timeline.step == kStep);
  CHECK(result.timeline.start == floor_block(from));
  CHECK(result.timeline.samples == expected.timeline);
}

// The bound the issue states: about 2(m-1)·log_m(n) merges for a range over n blocks.
uint64_t stated_bound(uint64_t multiplier, uint64_t blocks) {
  uint64_t levels = 1;
  for (uint64_t span = multiplier; span < blocks; span *= multiplier) ++levels;
  return 2 * (multiplier - 1) * (levels + 1);
}

}  // namespace

// A span is sealed, its upper tree written, only once a block its seal delay past its end arrives; a
// late file of pyro serve (a delay of 1,000,000 blocks) seals none. Its blocks are merged one by one,
// and the merge bound must say so rather than assume the segment tree.
TEST_CASE("file: blocks in spans not sealed yet are merged one by one, within the merge bound") {
  core_test::TempDir dir;
  const std::string path = dir.file("open-spans.pyro");
  pyroscope::WriterOptions options;
  options.multiplier = 4;
  options.seal_delay_blocks = 1000000;
  pyroscope::Writer writer;
  REQUIRE(writer.open(path, options).ok());
  for (int block = 0; block < 300; ++block)
    REQUIRE(writer.append(SeriesKey("late", {}), kStart + block * kStep, core_test::tree_of({{"main;work", 1}})).ok());
  REQUIRE(writer.close().ok());
  Dataset data;
  REQUIRE(data.add_file(path).ok());
  QueryResult whole;
  REQUIRE(data.query("late", kStart, kStart + 300 * kStep, &whole).ok());
  CHECK(whole.merges == 300);  // no upper tree was written
  CHECK(whole.merges <= whole.merge_bound);
  CHECK(whole.tree.total() == 300);
}

TEST_CASE("file: written blocks read back, with the index of apps, tag keys and values") {
  core_test::TempDir dir;
  const std::string path = dir.file("sample.pyro");
  const Written written = write_sample_file(path);

  pyroscope::File file;
  const Status status = file.open_path(path);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  const pyroscope::FileInfo& info = file.info();
  CHECK(info.format_version >= 1);
  CHECK(info.resolution_seconds == kStep);
  CHECK(info.multiplier == 10);
  CHECK(info.series_count == written.series.size());
  CHECK(info.block_count == written.block_count());
  CHECK(info.stored_trees >= info.block_count);
  CHECK(info.symbol_count == file.symbols().size());
  CHECK(info.symbol_count > 0);
  CHECK(info.first_time == kStart);
  CHECK(info.end_time == kStart + 100 * kStep);
  CHECK(info.file_bytes == core_test::read_file(path).size());
  CHECK(info.valid_bytes == info.file_bytes);
  const std::set<SeriesKey> stored(file.series().begin(), file.series().end());
  CHECK(stored == std::set<SeriesKey>(written.series.begin(), written.series.end()));

  Dataset data;
  REQUIRE(data.add_file(path).ok());
  CHECK(data.file_count() == 1);
  CHECK(data.resolution_seconds() == kStep);
  CHECK(data.apps() == std::vector<std::string>{"other", "ride"});
  CHECK(data.tag_keys("ride") == std::vector<std::string>{"region", "vehicle"});
  CHECK(data.tag_keys("other") == std::vector<std::string>{"host"});
  CHECK(data.tag_keys("missing").empty());
  CHECK(data.tag_values("ride", "region") == std::vector<std::string>{"ap-south", "eu-north", "us-east"});
  CHECK(data.tag_values("ride", "vehicle") == std::vector<std::string>{"bike", "car", "scooter"});
  CHECK(data.tag_values("ride", "host").empty());
  CHECK(data.tag_values("other", "host") == std::vector<std::string>{"x"});
  const pyroscope::TimeRange span = data.time_span();
  int64_t first = span.from, end = span.until;
  CHECK(first == kStart);
  CHECK(end == kStart + 100 * kStep);

  pyroscope::Selector selector;
  REQUIRE(pyroscope::Selector::parse("ride{vehicle=\"car\"}", &selector).ok());
  std::vector<SeriesKey> cars = data.series(selector);
  std::sort(cars.begin(), cars.end());
  CHECK(cars == std::vector<SeriesKey>{written.series[0], written.series[2]});
}

TEST_CASE("file: queries by selector and time range equal the merge of the written trees") {
  core_test::TempDir dir;
  const std::string path = dir.file("sample.pyro");
  const Written written = write_sample_file(path);
  Dataset data;
  REQUIRE(data.add_file(path).ok());

  const auto is_app = [](const char* app) { return [app](const SeriesKey& k) { return k.app == app; }; };
  struct Query {
    std::string selector;
    TagPredicate selects;
  };
  const std::vector<Query> queries = {
      {"ride{}", is_app("ride")},
      {"ride", is_app("ride")},
      {"ride{region=\"eu-north\"}", [](const SeriesKey& k) { return k.app == "ride" && tag(k, "region") == "eu-north"; }},
      {"ride{region!=\"eu-north\"}", [](const SeriesKey& k) { return k.app == "ride" && tag(k, "region") != "eu-north"; }},
      {"ride{region=~\"eu-.*|us-.*\"}",
       [](const SeriesKey& k) { return k.app == "ride" && tag(k, "region") != "ap-south"; }},
      {"ride{region=~\"eu\"}", [](const SeriesKey&) { return false; }},  // anchored: "eu" is not "eu-north"
      {"ride{region!~\"ap.*\"}", [](const SeriesKey& k) { return k.app == "ride" && tag(k, "region") != "ap-south"; }},
      {"ride{region=\"eu-north\", vehicle=\"car\"}",
       [](const SeriesKey& k) { return k.app == "ride" && tag(k, "region") == "eu-north" && tag(k, "vehicle") == "car"; }},
      {"ride{ vehicle =~ \"(car|bike)\" , region != \"us-east\" }",
       [](const SeriesKey& k) {
         return k.app == "ride" && (tag(k, "vehicle") == "car" || tag(k, "vehicle") == "bike") &&
                tag(k, "region") != "us-east";
       }},
      {"ride{vehicle=~\"[bs].*e\\\\w*\"}",  // bike, scooter; regex [bs].*e\w*
       [](const SeriesKey& k) { return k.app == "ride" && tag(k, "vehicle") != "car"; }},
      {"other{host=\"x\"}", is_app("other")},
      {"other{host=\"y\"}", [](const SeriesKey&) { return false; }},
      {"{region=\"us-east\"}", [](const SeriesKey& k) { return tag(k, "region") == "us-east"; }},
  };

  std::mt19937 rng(29);
  std::vector<std::pair<int64_t, int64_t>> ranges = {
      {kStart, kStart + 100 * kStep},               // everything
      {kStart - 1000, kStart + 2000 * kStep},       // beyond both ends
      {kStart + 30, kStart + 40},                   // one block
      {kStart + 33, kStart + 47},                   // unaligned: rounds out to two blocks
      {kStart + 10 * kStep, kStart + 80 * kStep},   // aligned to upper levels
      {kStart + 200 * kStep, kStart + 300 * kStep}, // after the data
  };
  for (int i = 0; i < 25; ++i) {
    const int64_t from = kStart - 50 + static_cast<int64_t>(rng() % 1100);
    ranges.emplace_back(from, from + 1 + static_cast<int64_t>(rng() % 1100));
  }
  for (const Query& query : queries)
    for (const auto& [from, until] : ranges) check_query(data, written, query.selector, query.selects, from, until);
}

TEST_CASE("file: add_bytes reads the same as add_file, and several files form one data set") {
  core_test::TempDir dir;
  const Written written = write_sample_file(dir.file("a.pyro"));

  Dataset from_bytes;
  REQUIRE(from_bytes.add_bytes(core_test::read_file(dir.file("a.pyro"))).ok());
  check_query(from_bytes, written, "ride{vehicle=\"bike\"}",
              [](const SeriesKey& k) { return k.app == "ride" && tag(k, "vehicle") == "bike"; }, kStart, kStart + 1000);

  // A second file: the same series later in time, plus one series of its own.
  Written second;
  second.series = {written.series[0], SeriesKey("third", {})};
  second.blocks.resize(2);
  {
    pyroscope::Writer writer;
    REQUIRE(writer.open(dir.file("b.pyro")).ok());
    for (int block = 100; block < 130; ++block) {
      for (size_t s = 0; s < 2; ++s) {
        std::mt19937 rng(static_cast<uint32_t>(77 + block * 3 + static_cast<int>(s)));
        const StackCounts stacks = core_test::random_stacks(rng, 8, 5);
        REQUIRE(writer.append(second.series[s], kStart + block * kStep, core_test::tree_of(stacks)).ok());
        second.blocks[s][kStart + block * kStep] = stacks;
      }
    }
    REQUIRE(writer.close().ok());
  }
  Written both = written;
  for (const auto& [start, stacks] : second.blocks[0]) both.blocks[0][start] = stacks;
  both.series.push_back(second.series[1]);
  both.blocks.push_back(second.blocks[1]);

  Dataset data;
  REQUIRE(data.add_file(dir.file("a.pyro")).ok());
  REQUIRE(data.add_file(dir.file("b.pyro")).ok());
  CHECK(data.file_count() == 2);
  CHECK(data.apps() == std::vector<std::string>{"other", "ride", "third"});
  const pyroscope::TimeRange span = data.time_span();
  int64_t first = span.from, end = span.until;
  CHECK(first == kStart);
  CHECK(end == kStart + 130 * kStep);
  const TagPredicate eu_cars = [](const SeriesKey& k) {
    return k.app == "ride" && tag(k, "region") == "eu-north" && tag(k, "vehicle") == "car";
  };
  check_query(data, both, "ride{region=\"eu-north\",vehicle=\"car\"}", eu_cars, kStart, kStart + 130 * kStep);
  check_query(data, both, "ride{region=\"eu-north\",vehicle=\"car\"}", eu_cars, kStart + 905, kStart + 1111);
  check_query(data, both, "third", [](const SeriesKey& k) { return k.app == "third"; }, kStart, kStart + 2000);
}

TEST_CASE("file: a long range merges far fewer trees than it has blocks") {
  for (const uint32_t multiplier : {10u, 4u}) {
    CAPTURE(multiplier);
    core_test::TempDir dir;
    const std::string path = dir.file("long.pyro");
    const int blocks = multiplier == 10 ? 3000 : 700;
    Written written;
    written.series = {SeriesKey("long", {{"k", "v"}})};
    written.blocks.resize(1);
    {
      pyroscope::WriterOptions options;
      options.multiplier = multiplier;
      pyroscope::Writer writer;
      REQUIRE(writer.open(path, options).ok());
      for (int block = 0; block < blocks; ++block) {
        const StackCounts stacks{{"main;f" + std::to_string(block % 13), 1 + static_cast<uint64_t>(block % 5)},
                                 {"main;g", 2}};
        REQUIRE(writer.append(written.series[0], kStart + block * kStep, core_test::tree_of(stacks)).ok());
        written.blocks[0][kStart + block * kStep] = stacks;
      }
      REQUIRE(writer.close().ok());
    }
    Dataset data;
    REQUIRE(data.add_file(path).ok());
    CHECK(data.file(0).info().multiplier == multiplier);
    const TagPredicate all = [](const SeriesKey&) { return true; };

    QueryResult whole;
    REQUIRE(data.query("long{k=\"v\"}", kStart, kStart + blocks * kStep, &whole).ok());
    MESSAGE("m=" << multiplier << ", " << blocks << " blocks: whole range merged " << whole.merges
                  << " trees (bound " << whole.merge_bound << ")");
    CHECK(whole.merges <= whole.merge_bound);
    CHECK(whole.merges * 10 <= static_cast<uint64_t>(blocks));
    CHECK(whole.merge_bound <= stated_bound(multiplier, static_cast<uint64_t>(blocks)));
    check_query(data, written, "long", all, kStart, kStart + blocks * kStep);

    std::mt19937 rng(31 + multiplier);
    uint64_t worst = 0;
    for (int i = 0; i < 40; ++i) {
      const int64_t from = kStart + static_cast<int64_t>(rng() % static_cast<uint32_t>(blocks * kStep));
      const int64_t until = from + 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(blocks * kStep));
      check_query(data, written, "long", all, from, until);
      QueryResult result;
      REQUIRE(data.query("long", from, until, &result).ok());
      const uint64_t range_blocks = static_cast<uint64_t>((ceil_block(until) - floor_block(from)) / kStep);
      CHECK(result.merge_bound <= stated_bound(multiplier, range_blocks));
      worst = std::max<uint64_t>(worst, result.merges);
    }
    MESSAGE("m=" << multiplier << ": most merges over 40 random ranges: " << worst);

    // A coarser timeline keeps the sum of the samples.
    pyroscope::QueryOptions options;
    options.timeline_points = 10;
    options.want_tree = false;
    QueryResult coarse;
    REQUIRE(data.query("long", kStart, kStart + blocks * kStep, &coarse, options).ok());
    CHECK(coarse.timeline.samples.size() <= 10);
    CHECK(coarse.timeline.step % kStep == 0);
    uint64_t sum = 0;
    for (uint64_t v : coarse.timeline.samples) sum += v;
    CHECK(sum == whole.tree.total());
  }
}

TEST_CASE("file: a block may come again or late while its span is open; a sealed span refuses it") {
  core_test::TempDir dir;
  const std::string path = dir.file("order.pyro");
  const SeriesKey a("app", {{"s", "a"}}), b("app", {{"s", "b"}});
  Tree tree;
  core_test::insert_stack(&tree, "main;x", 3);
  pyroscope::Writer writer;
  REQUIRE(writer.open(path).ok());
  CHECK(writer.is_open());
  CHECK(writer.resolution_seconds() == kStep);
  REQUIRE(writer.append(a, kStart + 20, tree).ok());
  CHECK(writer.append(a, kStart + 10, tree).ok());  // late, in the open span: stored
  CHECK(writer.append(a, kStart + 20, tree).ok());  // again: the parts add up
  CHECK(writer.append(b, kStart, tree).ok());
  CHECK_FALSE(writer.append(a, kStart + 35, tree).ok());  // not a block start
  CHECK(writer.append(a, kStart + 30, Tree()).ok());      // empty: skipped
  CHECK(writer.append(a, kStart + 40, tree).ok());
  // kStart is a multiple of 100 s: blocks 0..9 form a level-1 span, sealed once block 10 arrives.
  CHECK(writer.append(a, kStart + 100, tree).ok());
  const Status sealed = writer.append(a, kStart + 90, tree);
  CHECK(sealed.code() == pyroscope::StatusCode::out_of_order);
  CHECK(sealed.message().find("sealed") != std::string::npos);
  CHECK(writer.append(b, kStart + 90, tree).ok());  // the rule is per series
  REQUIRE(writer.close().ok());
  CHECK_FALSE(writer.is_open());

  pyroscope::File file;
  REQUIRE(file.open_path(path).ok());
  CHECK(file.info().block_count == 4 + 2);  // distinct blocks: a at 10, 20, 40, 100; b at 0, 90
  Dataset data;
  REQUIRE(data.add_file(path).ok());
  QueryResult result;
  REQUIRE(data.query("app{s=\"a\"}", kStart, kStart + 60, &result).ok());
  CHECK(result.tree.total() == 12);
  CHECK(result.timeline.samples == std::vector<uint64_t>{0, 3, 6, 0, 3, 0});
  // The sealed span's upper tree holds the late and repeated parts: one stored tree answers it.
  REQUIRE(data.query("app{s=\"a\"}", kStart, kStart + 100, &result).ok());
  CHECK(result.tree.total() == 12);
  CHECK(result.merges == 1);
}

TEST_CASE("file: with a seal delay, late pushes land in spans that would otherwise be sealed") {
  const SeriesKey key("svc", {});
  Tree tree;
  core_test::insert_stack(&tree, "main;handle", 5);
  pyroscope::WriterOptions options;
  options.seal_delay_blocks = 6;  // a minute of stragglers
  pyroscope::Writer writer;
  REQUIRE(writer.open_memory(options).ok());
  StackCounts expected;
  uint64_t total = 0;
  // Blocks arrive up to 5 blocks late, out of order, some in several parts.
  const int order[] = {0, 2, 1, 3, 9, 10, 5, 12, 11, 8, 14, 15, 13, 10, 16, 20, 21, 17, 25, 30, 26};
  for (int block : order) {
    REQUIRE_MESSAGE(writer.append(key, kStart + block * kStep, tree).ok(), block);
    total += 5;
  }
  // Block 9's level-1 span [0, 10) is sealed once block 16 (= 10 + 6) has arrived.
  CHECK(writer.append(key, kStart + 9 * kStep, tree).code() == pyroscope::StatusCode::out_of_order);
  CHECK(writer.append(key, kStart + 24 * kStep, tree).ok());  // [20, 30) stays open until block 36
  total += 5;
  pyroscope::File file;
  REQUIRE(file.open_bytes(writer.take_bytes()).ok());
  CHECK(file.info().block_count == 21);  // distinct blocks (block 10 came in two parts)
  Dataset data;
  data.add(std::move(file));
  QueryResult result;
  REQUIRE(data.query("svc{}", kStart, kStart + 400, &result).ok());
  CHECK(result.tree.total() == total);
  REQUIRE(data.query("svc{}", kStart, kStart + 100, &result).ok());
  CHECK(result.tree.total() == 7 * 5);  // blocks 0, 1, 2, 3, 5, 8 and 9
  CHECK(result.merges == 1);            // the sealed span's stored tree
}

TEST_CASE("file: a reopened file takes more blocks and keeps its open spans") {
  core_test::TempDir dir;
  const std::string path = dir.file("reopen.pyro");
  Written written;
  written.series = {SeriesKey("app", {{"s", "a"}}), SeriesKey("app", {{"s", "b"}})};
  written.blocks.resize(2);
  auto append = [&](pyroscope::Writer& writer, size_t s, int block) {
    const StackCounts stacks{{"main;s" + std::to_string(s) + ";b" + std::to_string(block % 4), 1 + static_cast<uint64_t>(block)}};
    const Status status = writer.append(written.series[s], kStart + block * kStep, core_test::tree_of(stacks));
    if (status.ok()) core_test::add_counts(&written.blocks[s][kStart + block * kStep], stacks);  // parts add up
    return status;
  };
  {
    pyroscope::Writer writer;
    REQUIRE(writer.open(path).ok());
    for (int block = 0; block < 10; ++block) REQUIRE(append(writer, 0, block).ok());
    REQUIRE(writer.close().ok());
  }
  for (int round = 0; round < 3; ++round) {
    pyroscope::Writer writer;
    REQUIRE(writer.open(path).ok());
    const int next = 10 + round * 10;
    // The open span comes back with the file: a late block in it is taken (and adds to the span's
    // upper tree when it is sealed), one in a sealed span is refused.
    CHECK(append(writer, 0, next - 15).code() == pyroscope::StatusCode::out_of_order);
    REQUIRE(append(writer, 0, next - 5).ok());
    for (int block = next; block < next + 10; ++block) REQUIRE(append(writer, 0, block).ok());
    for (int block = round * 5; block < round * 5 + 5; ++block) REQUIRE(append(writer, 1, block).ok());
    REQUIRE(writer.close().ok());
  }
  pyroscope::File file;
  REQUIRE(file.open_path(path).ok());
  CHECK(file.info().block_count == written.block_count());
  CHECK(file.info().series_count == 2);
  Dataset data;
  REQUIRE(data.add_file(path).ok());
  const auto only = [](const char* s) { return [s](const SeriesKey& k) { return tag(k, "s") == s; }; };
  check_query(data, written, "app{s=\"a\"}", only("a"), kStart, kStart + 400);
  check_query(data, written, "app{s=\"b\"}", only("b"), kStart, kStart + 400);
  check_query(data, written, "app", [](const SeriesKey&) { return true; }, kStart + 15, kStart + 215);
}

TEST_CASE("file: opening a missing file or a non-pyro file is an error") {
  core_test::TempDir dir;
  pyroscope::File file;
  CHECK_FALSE(file.open_path(dir.file("missing.pyro")).ok());
  core_test::write_file(dir.file("text.pyro"), "main;work 3\n");
  const Status status = file.open_path(dir.file("text.pyro"));
  CHECK_FALSE(status.ok());
  CHECK_FALSE(status.message().empty());
  CHECK_FALSE(file.open_span(pyroscope::ByteSpan{}).ok());
  // The writer refuses to append to a file that is not a .pyro file rather than overwrite it.
  pyroscope::Writer writer;
  CHECK_FALSE(writer.open(dir.file("text.pyro")).ok());
  CHECK(core_test::read_file(dir.file("text.pyro")) == "main;work 3\n");
}

TEST_CASE("selector: parse, print and match") {
  pyroscope::Selector selector;
  Status status = pyroscope::Selector::parse(
      "ride{region=\"eu-north\", vehicle!=\"car\",  k3=~\"a.*\",k4!~\"b|c\", quoted=\"say \\\"hi\\\"\"}", &selector);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  CHECK(selector.app == "ride");
  REQUIRE(selector.matchers.size() == 5);
  using Op = pyroscope::Matcher::Op;
  CHECK(selector.matchers[0].key == "region");
  CHECK(selector.matchers[0].op == Op::equal);
  CHECK(selector.matchers[0].value == "eu-north");
  CHECK(selector.matchers[1].op == Op::not_equal);
  CHECK(selector.matchers[2].op == Op::regex);
  CHECK(selector.matchers[2].value == "a.*");
  CHECK(selector.matchers[3].op == Op::not_regex);
  CHECK(selector.matchers[3].value == "b|c");
  CHECK(selector.matchers[4].value == "say \"hi\"");

  pyroscope::Selector reparsed;
  REQUIRE(pyroscope::Selector::parse(selector.to_string(), &reparsed).ok());
  CHECK(reparsed.app == selector.app);
  REQUIRE(reparsed.matchers.size() == selector.matchers.size());
  for (size_t i = 0; i < selector.matchers.size(); ++i) {
    CHECK(reparsed.matchers[i].key == selector.matchers[i].key);
    CHECK(reparsed.matchers[i].op == selector.matchers[i].op);
    CHECK(reparsed.matchers[i].value == selector.matchers[i].value);
  }

  REQUIRE(pyroscope::Selector::parse("ride{region=~\"eu-.*\", vehicle!=\"car\"}", &selector).ok());
  CHECK(selector.matches(SeriesKey("ride", {{"region", "eu-north"}, {"vehicle", "bike"}})));
  CHECK_FALSE(selector.matches(SeriesKey("ride", {{"region", "eu-north"}, {"vehicle", "car"}})));
  CHECK_FALSE(selector.matches(SeriesKey("ride", {{"region", "us-east"}, {"vehicle", "bike"}})));
  CHECK_FALSE(selector.matches(SeriesKey("other", {{"region", "eu-north"}, {"vehicle", "bike"}})));
  REQUIRE(pyroscope::Selector::parse("ride{region=~\"eu\"}", &selector).ok());
  CHECK_FALSE(selector.matches(SeriesKey("ride", {{"region", "eu-north"}})));  // anchored
  REQUIRE(pyroscope::Selector::parse("ride{id=~\"\\\\d+\"}", &selector).ok());
  CHECK(selector.matches(SeriesKey("ride", {{"id", "123"}})));
  CHECK_FALSE(selector.matches(SeriesKey("ride", {{"id", "12a"}})));
  REQUIRE(pyroscope::Selector::parse("ride{id=~\"[^0-9]{2,3}\"}", &selector).ok());
  CHECK(selector.matches(SeriesKey("ride", {{"id", "abc"}})));
  CHECK_FALSE(selector.matches(SeriesKey("ride", {{"id", "abcd"}})));
  CHECK_FALSE(selector.matches(SeriesKey("ride", {{"id", "a1"}})));
  REQUIRE(pyroscope::Selector::parse("{}", &selector).ok());
  CHECK(selector.app.empty());
  CHECK(selector.matches(SeriesKey("anything", {{"k", "v"}})));
}

TEST_CASE("selector: malformed selectors are errors with a message") {
  const char* const bad[] = {
      "ride{region=\"eu\"",        // unclosed brace
      "ride{region=\"eu}",         // unclosed quote
      "ride{region==\"eu\"}",      // bad operator
      "ride{region<\"eu\"}",       // bad operator
      "ride{region~\"eu\"}",       // bad operator
      "ride{region=eu}",           // value not quoted
      "ride{=\"eu\"}",             // no key
      "ride{region}",              // no operator
      "ride{region=~\"(eu\"}",     // bad regex: unclosed group
      "ride{region=~\"[a-\"}",     // bad regex: unclosed class
      "ride{region=~\"*eu\"}",     // bad regex: nothing to repeat
      "ride{region!~\"eu)\"}",     // bad regex: unmatched )
      "ride{region=\"eu\"} tail",  // text after the selector
      "ride}",
  };
  for (const char* text : bad) {
    CAPTURE(text);
    pyroscope::Selector selector;
    const Status status = pyroscope::Selector::parse(text, &selector);
    CHECK_FALSE(status.ok());
    CHECK_FALSE(status.message().empty());
  }

  core_test::TempDir dir;
  write_sample_file(dir.file("sample.pyro"));
  Dataset data;
  REQUIRE(data.add_file(dir.file("sample.pyro")).ok());
  QueryResult result;
  CHECK_FALSE(data.query("ride{region=~\"(\"}", kStart, kStart + 100, &result).ok());
}

TEST_CASE("series key: tags sorted, last value wins, text form round trips") {
  const SeriesKey key("app", {{"zone", "1"}, {"b", "x"}, {"zone", "2"}});
  REQUIRE(key.tags.size() == 2);
  CHECK(key.tags[0] == pyroscope::Tag{"b", "x"});
  CHECK(key.tags[1] == pyroscope::Tag{"zone", "2"});
  CHECK(key.to_string() == "app.cpu{b=\"x\",zone=\"2\"}");
  CHECK(SeriesKey("my.app", "inuse_space", {}).to_string() == "my.app.inuse_space{}");

  for (const SeriesKey& original :
       {key, SeriesKey("ride-sharing-app", {}), SeriesKey("a.cpu", {{"k", "with \"quotes\", commas and \\ slashes"}}),
        SeriesKey("app", {{"region", "eu-north"}, {"vehicle", "car"}}), SeriesKey("my.app", "alloc_objects", {}),
        SeriesKey("app", "custom_Type_2", {{"k", "v"}})}) {
    SeriesKey parsed;
    const Status status = SeriesKey::parse(original.to_string(), &parsed);
    CHECK_MESSAGE(status.ok(), original.to_string() << ": " << status.to_string());
    CHECK(parsed == original);
  }
  SeriesKey parsed;
  CHECK_FALSE(SeriesKey::parse("app{k=\"v\"", &parsed).ok());
  CHECK_FALSE(SeriesKey::parse("app{k!=\"v\"}", &parsed).ok());  // a key has no operators but =
}

TEST_CASE("file: slice copies the selected series and blocks, one block per series and time over files") {
  core_test::TempDir dir;
  const Written written = write_sample_file(dir.file("a.pyro"));
  // A second file holding one of the same series at overlapping times: its blocks add to the first's.
  std::map<int64_t, StackCounts> extra;
  {
    pyroscope::Writer writer;
    REQUIRE(writer.open(dir.file("b.pyro")).ok());
    for (int block = 40; block < 60; ++block) {
      std::mt19937 rng(static_cast<uint32_t>(500 + block));
      const StackCounts stacks = core_test::random_stacks(rng, 6, 5);
      REQUIRE(writer.append(written.series[0], kStart + block * kStep, core_test::tree_of(stacks)).ok());
      extra[kStart + block * kStep] = stacks;
    }
    REQUIRE(writer.close().ok());
  }
  Written both = written;
  for (const auto& [start, stacks] : extra) core_test::add_counts(&both.blocks[0][start], stacks);
  Dataset data;
  REQUIRE(data.add_file(dir.file("a.pyro")).ok());
  REQUIRE(data.add_file(dir.file("b.pyro")).ok());

  const TagPredicate eu = [](const SeriesKey& k) { return k.app == "ride" && tag(k, "region") == "eu-north"; };
  const int64_t from = kStart + 333, until = kStart + 777;  // not on block edges: rounded outward
  pyroscope::Selector selector;
  REQUIRE(pyroscope::Selector::parse("ride{region=\"eu-north\"}", &selector).ok());
  pyroscope::Writer writer;
  REQUIRE(writer.open(dir.file("slice.pyro")).ok());
  pyroscope::SliceStats stats;
  const Status status = data.slice(selector, from, until, &writer, &stats);
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  REQUIRE(writer.close().ok());

  size_t expected_blocks = 0;
  uint64_t expected_samples = 0;
  for (size_t s = 0; s < both.series.size(); ++s) {
    if (!eu(both.series[s])) continue;
    for (const auto& [start, stacks] : both.blocks[s]) {
      if (start < floor_block(from) || start >= ceil_block(until)) continue;
      ++expected_blocks;
      expected_samples += core_test::sum_of(stacks);
    }
  }
  CHECK(stats.series == 2);
  CHECK(stats.blocks == expected_blocks);
  CHECK(stats.samples == expected_samples);

  Dataset sliced;
  REQUIRE(sliced.add_file(dir.file("slice.pyro")).ok());
  CHECK(sliced.apps() == std::vector<std::string>{"ride"});
  CHECK(sliced.series(pyroscope::Selector()).size() == 2);
  CHECK(sliced.file(0).info().block_count == expected_blocks);  // one block per series and time
  // The slice answers like the data it came from, inside the range; outside it holds nothing.
  check_query(sliced, both, "ride", eu, from, until);
  check_query(sliced, both, "ride{vehicle=\"car\"}",
              [&](const SeriesKey& k) { return eu(k) && tag(k, "vehicle") == "car"; }, kStart + 500, until);
  QueryResult outside;
  REQUIRE(sliced.query("ride", kStart, floor_block(from), &outside).ok());
  CHECK(outside.tree.total() == 0);

  // Errors: a writer that is not open, an empty range, a writer of another resolution.
  pyroscope::Writer closed;
  CHECK(data.slice(selector, from, until, &closed).code() == pyroscope::StatusCode::invalid_argument);
  pyroscope::Writer other;
  REQUIRE(other.open(dir.file("other.pyro")).ok());
  CHECK(data.slice(selector, until, from, &other).code() == pyroscope::StatusCode::invalid_argument);
  REQUIRE(other.close().ok());
  pyroscope::WriterOptions minute;
  minute.resolution_seconds = 60;
  pyroscope::Writer coarse;
  REQUIRE(coarse.open(dir.file("coarse.pyro"), minute).ok());
  const Status mismatch = data.slice(selector, from, until, &coarse);
  CHECK(mismatch.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(mismatch.message().find("resolution") != std::string::npos);
}

TEST_CASE("selector: a regex stays with its matcher when matchers are inserted or reordered") {
  // The compiled regexes used to sit in a list beside the matchers, by position: a matcher inserted
  // in front made x's regex "foo" run against y's value.
  pyroscope::Selector selector;
  REQUIRE(pyroscope::Selector::parse("app{x=~\"fo+\"}", &selector).ok());
  pyroscope::Matcher y;
  y.key = "y";
  y.op = pyroscope::Matcher::Op::regex;
  y.value = "ba.";
  selector.matchers.insert(selector.matchers.begin(), y);  // built by hand: no compiled regex
  CHECK(selector.matches(SeriesKey("app", {{"x", "foo"}, {"y", "bar"}})));
  CHECK_FALSE(selector.matches(SeriesKey("app", {{"x", "bar"}, {"y", "bar"}})));
  std::reverse(selector.matchers.begin(), selector.matchers.end());
  CHECK(selector.matches(SeriesKey("app", {{"x", "foo"}, {"y", "bar"}})));
  // A value changed after parsing is matched as it is now, not as it was compiled.
  pyroscope::Selector changed;
  REQUIRE(pyroscope::Selector::parse("app{x=~\"a+\"}", &changed).ok());
  changed.matchers[0].value = "b+";
  CHECK(changed.matches(SeriesKey("app", {{"x", "bbb"}})));
  CHECK_FALSE(changed.matches(SeriesKey("app", {{"x", "aaa"}})));
  // A copy of a selector outlives the original and the text it was parsed from.
  pyroscope::Selector copy;
  {
    std::string text = "app{x!~\"(ab)*\"}";
    pyroscope::Selector original;
    REQUIRE(pyroscope::Selector::parse(text, &original).ok());
    copy = original;
    text.assign(text.size(), '#');
  }
  CHECK(copy.matches(SeriesKey("app", {{"x", "aba"}})));
  CHECK_FALSE(copy.matches(SeriesKey("app", {{"x", "abab"}})));
}

TEST_CASE("writer: to memory and through a function, the same bytes as a file") {
  core_test::TempDir dir;
  const SeriesKey key("ride", {{"region", "eu-north"}});
  std::mt19937 rng(5);
  std::vector<StackCounts> blocks;
  for (int i = 0; i < 25; ++i) blocks.push_back(core_test::random_stacks(rng, 8, 5));
  pyroscope::WriterOptions options;
  options.multiplier = 4;  // upper levels within 25 blocks

  pyroscope::Writer to_file, to_memory, to_function;
  std::string through_function;
  int calls = 0;
  REQUIRE(to_file.open(dir.file("a.pyro"), options).ok());
  REQUIRE(to_memory.open_memory(options).ok());
  REQUIRE(to_function.open_function(
      [&](const char* data, size_t size) {
        ++calls;
        through_function.append(data, size);
        return Status();
      },
      options).ok());
  CHECK(to_memory.is_open());
  CHECK(to_memory.bytes().size() == 64);  // a complete (empty) file from the start
  for (size_t i = 0; i < blocks.size(); ++i) {
    const pyroscope::Tree tree = core_test::tree_of(blocks[i]);
    const int64_t start = kStart + static_cast<int64_t>(i) * kStep;
    REQUIRE(to_file.append(key, start, tree).ok());
    REQUIRE(to_memory.append(key, start, tree).ok());
    REQUIRE(to_function.append(key, start, tree).ok());
    pyroscope::File partial;  // every prefix the writer leaves is a valid file
    REQUIRE(partial.open_span({reinterpret_cast<const uint8_t*>(to_memory.bytes().data()), to_memory.bytes().size()}).ok());
    CHECK(partial.info().block_count == i + 1);
  }
  REQUIRE(to_file.close().ok());
  REQUIRE(to_function.close().ok());
  const std::string in_memory = to_memory.take_bytes();
  CHECK_FALSE(to_memory.is_open());
  CHECK(calls == 1 + static_cast<int>(blocks.size()));  // the header, then one call per append
  std::ifstream in(dir.file("a.pyro"), std::ios::binary);
  const std::string on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Equal but for the creation time in the header (bytes 32..39) and the header's checksum.
  REQUIRE(in_memory.size() == on_disk.size());
  CHECK(in_memory.substr(64) == on_disk.substr(64));
  CHECK(through_function == in_memory);

  Dataset data;
  REQUIRE(data.add_bytes(in_memory).ok());
  QueryResult all;
  REQUIRE(data.query("ride", kStart, kStart + 25 * kStep, &all).ok());
  StackCounts expected;
  for (const StackCounts& b : blocks) core_test::add_counts(&expected, b);
  CHECK(stacks_of(all.tree) == expected);
  CHECK(all.merges < 25);  // the upper levels are there

  // A function that fails closes the writer and says where.
  pyroscope::Writer failing;
  int accepted = 1;
  REQUIRE(failing.open_function([&](const char*, size_t) {
                   return accepted-- > 0 ? Status() : Status(pyroscope::StatusCode::io_error, "disk full");
                 }).ok());
  const Status failed = failing.append(key, kStart, core_test::tree_of(blocks[0]));
  CHECK(failed.code() == pyroscope::StatusCode::io_error);
  CHECK(failed.message().find("disk full") != std::string::npos);
  CHECK_FALSE(failing.is_open());
  // Options are checked as for a file.
  pyroscope::WriterOptions bad;
  bad.multiplier = 1;
  CHECK(pyroscope::Writer().open_memory(bad).code() == pyroscope::StatusCode::invalid_argument);
}

TEST_CASE("dataset: in-memory blocks are a source like a file") {
  core_test::TempDir dir;
  const Written written = write_sample_file(dir.file("a.pyro"));
  std::vector<pyroscope::ProfileBlock> blocks;
  for (size_t s = 0; s < written.series.size(); ++s)
    for (const auto& [start, stacks] : written.blocks[s]) {
      // Two halves per block at times inside it: they merge into the one block.
      pyroscope::ProfileBlock first{written.series[s], {}, start + 3, core_test::tree_of(stacks)};
      pyroscope::ProfileBlock second{written.series[s], {}, start + 7, core_test::tree_of(stacks)};
      blocks.push_back(std::move(first));
      blocks.push_back(std::move(second));
    }
  Dataset from_memory, from_file;
  REQUIRE(from_memory.add_blocks(blocks).ok());
  REQUIRE(from_file.add_file(dir.file("a.pyro")).ok());
  CHECK(from_memory.apps() == from_file.apps());
  CHECK(from_memory.series(pyroscope::Selector()) == from_file.series(pyroscope::Selector()));
  for (const char* selector : {"ride", "ride{region=\"eu-north\"}", "other"}) {
    QueryResult memory, file;
    REQUIRE(from_memory.query(selector, kStart + 100, kStart + 900, &memory).ok());
    REQUIRE(from_file.query(selector, kStart + 100, kStart + 900, &file).ok());
    CHECK(memory.tree.total() == 2 * file.tree.total());
    std::vector<uint64_t> doubled = file.timeline.samples;
    for (uint64_t& v : doubled) v *= 2;
    CHECK(memory.timeline.samples == doubled);
  }
  pyroscope::ProfileBlock far{SeriesKey("x", {}), {}, int64_t(1) << 62, pyroscope::Tree()};
  std::vector<pyroscope::ProfileBlock> bad;
  bad.push_back(std::move(far));
  CHECK(from_memory.add_blocks(bad).code() == pyroscope::StatusCode::invalid_argument);
}

TEST_CASE("selector: the profile type after the application's last dot; app{} means app.cpu{}") {
  pyroscope::Selector selector;
  REQUIRE(pyroscope::Selector::parse("ride{region=\"eu\"}", &selector).ok());
  CHECK(selector.app == "ride");
  CHECK(selector.type == "cpu");
  CHECK(selector.matches(SeriesKey("ride", {{"region", "eu"}})));
  CHECK_FALSE(selector.matches(SeriesKey("ride", "alloc_space", {{"region", "eu"}})));
  REQUIRE(pyroscope::Selector::parse("my.ride.alloc_space{}", &selector).ok());
  CHECK(selector.app == "my.ride");
  CHECK(selector.type == "alloc_space");
  CHECK(selector.matches(SeriesKey("my.ride", "alloc_space", {})));
  CHECK(selector.to_string() == "my.ride.alloc_space{}");
  REQUIRE(pyroscope::Selector::parse("{region=\"eu\"}", &selector).ok());  // no application: any type
  CHECK(selector.type.empty());
  CHECK(selector.matches(SeriesKey("x", "wall", {{"region", "eu"}})));
  for (const char* bad : {".cpu{}", "app.{}", "app.9lives{}", "app.a-b{}"}) {
    CAPTURE(bad);
    CHECK(pyroscope::Selector::parse(bad, &selector).code() == pyroscope::StatusCode::invalid_argument);
  }
  CHECK(pyroscope::is_valid_profile_type("inuse_objects"));
  CHECK_FALSE(pyroscope::is_valid_profile_type(std::string(65, 'a')));
  CHECK(pyroscope::default_series_info("alloc_space").unit == "bytes");
  CHECK(pyroscope::default_series_info("inuse_objects").aggregation == pyroscope::Aggregation::average);
  CHECK(pyroscope::default_series_info("mutex_duration").unit == "nanoseconds");
  CHECK(pyroscope::default_series_info("cpu") == pyroscope::SeriesInfo());
}

TEST_CASE("dataset: series of one type keep their units; averages divide by the blocks with data") {
  pyroscope::SeriesInfo bytes_average;
  bytes_average.unit = "bytes";
  bytes_average.aggregation = pyroscope::Aggregation::average;
  const SeriesKey heap_a("svc", "inuse_space", {{"host", "a"}}), heap_b("svc", "inuse_space", {{"host", "b"}});
  pyroscope::Writer writer;
  REQUIRE(writer.open_memory().ok());
  // host a holds 100 bytes in leak() in blocks 0..3, host b 40 in blocks 2..3: averaged over the 4
  // blocks with data, 100 and 20; the timeline per block is a's plus b's.
  for (int block = 0; block < 4; ++block) {
    pyroscope::Tree a;
    core_test::insert_stack(&a, "main;leak", 100);
    REQUIRE(writer.append(heap_a, kStart + block * kStep, a, &bytes_average).ok());
    if (block >= 2) {
      pyroscope::Tree b;
      core_test::insert_stack(&b, "main;cache", 40);
      REQUIRE(writer.append(heap_b, kStart + block * kStep, b, &bytes_average).ok());
    }
  }
  // The same key with other units is refused.
  pyroscope::SeriesInfo objects = bytes_average;
  objects.unit = "objects";
  pyroscope::Tree one;
  core_test::insert_stack(&one, "x", 1);
  CHECK(writer.append(heap_a, kStart + 9 * kStep, one, &objects).code() == pyroscope::StatusCode::invalid_argument);
  REQUIRE(writer.append(SeriesKey("svc", {{"host", "a"}}), kStart, one).ok());  // cpu beside it
  Dataset data;
  REQUIRE(data.add_bytes(writer.take_bytes()).ok());
  CHECK(data.types("svc") == std::vector<std::string>{"cpu", "inuse_space"});

  QueryResult result;
  REQUIRE(data.query("svc.inuse_space{}", kStart, kStart + 4 * kStep, &result).ok());
  CHECK(result.type == "inuse_space");
  CHECK(result.info == bytes_average);
  CHECK(stacks_of(result.tree) == StackCounts{{"main;cache", 20}, {"main;leak", 100}});
  CHECK(result.tree.total() == 120);
  CHECK(core_test::totals_consistent(result.tree));
  CHECK(result.timeline.samples == std::vector<uint64_t>{100, 100, 140, 140});
  pyroscope::QueryOptions two_points;
  two_points.timeline_points = 2;
  REQUIRE(data.query("svc.inuse_space{}", kStart, kStart + 4 * kStep, &result, two_points).ok());
  CHECK(result.timeline.samples == std::vector<uint64_t>{100, 140});  // average of each point's blocks
  REQUIRE(data.query("svc{}", kStart, kStart + 4 * kStep, &result).ok());
  CHECK(result.type == "cpu");
  CHECK(result.tree.total() == 1);

  // Series that cannot be added up: a selector over every type of the app.
  pyroscope::Selector all;
  all.app = "svc";
  const Status mixed = data.query(all, kStart, kStart + 4 * kStep, &result);
  CHECK(mixed.code() == pyroscope::StatusCode::invalid_argument);
  CHECK(mixed.message().find("cannot be added up") != std::string::npos);
  pyroscope::SeriesInfo info;
  CHECK(data.series_info(all, &info).code() == pyroscope::StatusCode::invalid_argument);
  pyroscope::Selector heap_only;
  REQUIRE(pyroscope::Selector::parse("svc.inuse_space{}", &heap_only).ok());
  REQUIRE(data.series_info(heap_only, &info).ok());
  CHECK(info == bytes_average);
  REQUIRE(pyroscope::Selector::parse("nothing{}", &heap_only).ok());
  CHECK(data.series_info(heap_only, &info).code() == pyroscope::StatusCode::not_found);

  // A slice keeps each series' info.
  pyroscope::Writer slice;
  REQUIRE(slice.open_memory().ok());
  REQUIRE(pyroscope::Selector::parse("svc.inuse_space{}", &heap_only).ok());
  REQUIRE(data.slice(heap_only, kStart, kStart + 4 * kStep, &slice).ok());
  pyroscope::File sliced;
  REQUIRE(sliced.open_bytes(slice.take_bytes()).ok());
  REQUIRE(sliced.series().size() == 2);
  CHECK(sliced.series_info(0) == bytes_average);
  CHECK(sliced.series()[0].type == "inuse_space");
}

TEST_CASE("tree: divide rounds each self to the nearest integer and keeps totals consistent") {
  pyroscope::Tree tree;
  core_test::insert_stack(&tree, "a;b", 7);
  core_test::insert_stack(&tree, "a;c", 5);
  core_test::insert_stack(&tree, "a", 1);
  core_test::insert_stack(&tree, "d", UINT64_MAX / 2);
  tree.divide(2);
  CHECK(stacks_of(tree) == StackCounts{{"a", 1}, {"a;b", 4}, {"a;c", 3}, {"d", UINT64_MAX / 4 + 1}});
  CHECK(core_test::totals_consistent(tree));
}

TEST_CASE("query: an extreme range walks only the span that holds data") {
  core_test::TempDir dir;
  const Written written = write_sample_file(dir.file("a.pyro"));
  Dataset data;
  REQUIRE(data.add_file(dir.file("a.pyro")).ok());
  // Before the clamp, the whole int64 range made the query walk 2^57 empty segment-tree nodes (and
  // run out of memory), and its block arithmetic overflowed.
  for (const auto& [from, until] : {std::pair<int64_t, int64_t>{INT64_MIN, INT64_MAX},
                                    {INT64_MIN, kStart + 500}, {kStart + 500, INT64_MAX}}) {
    QueryResult result;
    pyroscope::QueryOptions options;
    options.timeline_points = 4;
    REQUIRE(data.query("ride", from, until, &result, options).ok());
    const Expected expected = expected_query(written, [](const SeriesKey& k) { return k.app == "ride"; },
                                             std::max<int64_t>(from, kStart - 1000000), std::min<int64_t>(until, kStart + 1000000));
    CHECK(stacks_of(result.tree) == expected.stacks);
    CHECK(result.merges <= 200);
  }
}

// Times at the ends of 64 bits: the writer refuses blocks beyond +-2^61 s, and queries and slices of
// any range (INT64_MIN to INT64_MAX included) clamp it, so their block arithmetic cannot overflow (UBSan
// in CI turns an overflow into a failure).
TEST_CASE("file: blocks beyond +-2^61 s are refused; queries and slices of any int64 range work") {
  core_test::TempDir dir;
  const std::string path = dir.file("times.pyro");
  Tree tree;
  core_test::insert_stack(&tree, "main;work", 3);
  const SeriesKey key("app", {});
  constexpr int64_t kLimit = int64_t(1) << 61;
  const int64_t last_block = (kLimit / kStep - 1) * kStep;  // the last block start a file holds
  {
    pyroscope::Writer writer;
    REQUIRE(writer.open(path).ok());
    for (int64_t bad : {INT64_MIN, -(kLimit / kStep + 1) * kStep, INT64_MAX / kStep * kStep, last_block + kStep}) {
      CAPTURE(bad);
      const Status status = writer.append(key, bad, tree);
      CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
      CHECK(status.message().find("outside the times a file holds") != std::string::npos);
    }
    REQUIRE(writer.append(key, -(kLimit / kStep) * kStep, tree).ok());
    REQUIRE(writer.append(key, kStart, tree).ok());
    REQUIRE(writer.append(key, last_block, tree).ok());
    REQUIRE(writer.close().ok());
  }
  Dataset data;
  REQUIRE(data.add_file(path).ok());
  const pyroscope::TimeRange span = data.time_span();
  const int64_t first = span.from, end = span.until;
  CHECK(first == -(kLimit / kStep) * kStep);
  CHECK(end == last_block + kStep);

  struct Range {
    int64_t from, until;
    uint64_t total;
  };
  for (const Range& r : {Range{INT64_MIN, INT64_MAX, 9}, Range{INT64_MIN, kStart + 1, 6}, Range{kStart, INT64_MAX, 6},
                         Range{INT64_MAX - 1, INT64_MAX, 0}, Range{INT64_MIN, INT64_MIN + 1, 0}}) {
    CAPTURE(r.from);
    CAPTURE(r.until);
    for (size_t points : {size_t(0), size_t(1), size_t(100)}) {
      pyroscope::QueryOptions options;
      options.timeline_points = points;
      QueryResult result;
      const Status status = data.query("app{}", r.from, r.until, &result, options);
      if (points == 0 && r.total > 0) {  // one point per block over 2^62 s: refused, with a reason
        CHECK(status.code() == pyroscope::StatusCode::invalid_argument);
        continue;
      }
      REQUIRE_MESSAGE(status.ok(), status.to_string());
      CHECK(result.tree.total() == r.total);
      uint64_t timeline = 0;
      for (uint64_t v : result.timeline.samples) timeline += v;
      CHECK(timeline == r.total);
    }
    pyroscope::Writer writer;
    REQUIRE(writer.open(dir.file("slice.pyro"), {}).ok());
    pyroscope::Selector selector;
    REQUIRE(pyroscope::Selector::parse("app{}", &selector).ok());
    pyroscope::SliceStats stats;
    REQUIRE(data.slice(selector, r.from, r.until, &writer, &stats).ok());
    CHECK(stats.samples == r.total);
    REQUIRE(writer.close().ok());
    std::remove(dir.file("slice.pyro").c_str());
  }
}

TEST_CASE("file: random late and repeated pushes, with reopens, read back exactly") {
  // What a receiver of many clients does: blocks of several series in parts, up to a few blocks
  // late, the writer reopened now and then. Every refusal must be one the seal rule predicts, and
  // the file must answer every range with exactly the accepted samples (its upper trees are checked
  // against their blocks when it opens).
  core_test::TempDir dir;
  const std::string path = dir.file("pushes.pyro");
  std::mt19937 rng(99);
  for (uint32_t delay : {0u, 3u, 12u}) {
    CAPTURE(delay);
    std::remove(path.c_str());
    Written written;
    written.series = {SeriesKey("svc", {{"host", "a"}}), SeriesKey("svc", {{"host", "b"}})};
    written.blocks.resize(2);
    std::vector<int64_t> last(2, -1);
    pyroscope::WriterOptions options;
    options.multiplier = 4;
    options.seal_delay_blocks = delay;
    auto writer = std::make_unique<pyroscope::Writer>();
    REQUIRE(writer->open(path, options).ok());
    int refused = 0;
    for (int step = 0; step < 400; ++step) {
      if (rng() % 60 == 0) {  // reopen: the open spans must come back as they were
        REQUIRE(writer->close().ok());
        writer = std::make_unique<pyroscope::Writer>();
        REQUIRE(writer->open(path, options).ok());
      }
      const size_t s = rng() % 2;
      const int64_t newest = last[s] < 0 ? 0 : last[s];
      // Half the pushes are the next block; the rest come up to delay + 5 blocks late.
      const int64_t block = rng() % 2 ? newest + 1 : std::max<int64_t>(0, newest - static_cast<int64_t>(rng() % (delay + 6)));
      std::mt19937 content(static_cast<uint32_t>(step));
      const StackCounts stacks = core_test::random_stacks(content, 3, 4);
      const Status status = writer->append(written.series[s], kStart + block * kStep, core_test::tree_of(stacks));
      // The rule: a block whose level-1 span ended at least `delay` blocks before the newest is refused.
      const bool sealed = last[s] >= 0 && (block / 4 + 1) * 4 + static_cast<int64_t>(delay) <= last[s];
      CHECK(status.ok() == !sealed);
      if (!status.ok()) {
        CHECK(status.code() == pyroscope::StatusCode::out_of_order);
        ++refused;
        continue;
      }
      core_test::add_counts(&written.blocks[s][kStart + block * kStep], stacks);
      last[s] = std::max(last[s], block);
    }
    REQUIRE(writer->close().ok());
    CHECK(refused > 0);
    Dataset data;
    const Status opened = data.add_file(path);
    REQUIRE_MESSAGE(opened.ok(), opened.to_string());
    const auto only = [](const char* h) { return [h](const SeriesKey& k) { return tag(k, "host") == h; }; };
    for (int64_t from : {int64_t(0), int64_t(37), int64_t(80)})
      for (int64_t until : {int64_t(90), int64_t(310), int64_t(5000)}) {
        check_query(data, written, "svc{host=\"a\"}", only("a"), kStart + from * kStep, kStart + until * kStep);
        check_query(data, written, "svc", [](const SeriesKey&) { return true; }, kStart + from * kStep,
                    kStart + until * kStep);
      }
  }
}

TEST_CASE("file: a vocabulary that grows block by block, one new name or hundreds at a time, reads back exactly") {
  // The writer keeps its table's names ranked as they arrive (a binary search each for a few, a sort
  // and merge for many) and puts siblings in that order; the reader checks the order of every tree.
  // New names land anywhere in name order: between old ones, before all, after all, sharing prefixes.
  core_test::TempDir dir;
  const std::string path = dir.file("vocabulary.pyro");
  std::mt19937 rng(7);
  std::vector<std::string> vocabulary = {"m", "main"};
  auto new_name = [&] {
    std::string name = vocabulary[rng() % vocabulary.size()];
    switch (rng() % 4) {
      case 0: name += char('a' + rng() % 26); break;
      case 1: name = char('A' + rng() % 60) + name; break;
      case 2: name = name.substr(0, name.size() / 2) + std::to_string(rng() % 1000); break;
      default: name += "::f<" + std::to_string(rng() % 100) + ">"; break;
    }
    return name;
  };
  Written written;
  written.series = {SeriesKey("grow", {})};
  written.blocks.resize(1);
  pyroscope::WriterOptions options;
  options.multiplier = 4;
  options.seal_delay_blocks = 2;
  auto writer = std::make_unique<pyroscope::Writer>();
  REQUIRE(writer->open(path, options).ok());
  for (int block = 0; block < 120; ++block) {
    if (block % 37 == 36) {  // a reopened writer ranks the names it reads back
      REQUIRE(writer->close().ok());
      writer = std::make_unique<pyroscope::Writer>();
      REQUIRE(writer->open(path, options).ok());
    }
    const size_t fresh = block % 10 == 0 ? 100 + rng() % 300 : rng() % 3;
    for (size_t i = 0; i < fresh; ++i) vocabulary.push_back(new_name());
    for (int part = 0; part < 1 + block % 3; ++part) {  // a block in parts: merged through decoded parts
      StackCounts stacks;
      for (int i = 0; i < 20; ++i) {
        std::string stack = "main";
        const int depth = 1 + int(rng() % 5);
        for (int d = 0; d < depth; ++d) {
          // Recent names half the time, so the new ones are used at once.
          const size_t pick = rng() % 2 ? vocabulary.size() - 1 - rng() % std::min<size_t>(vocabulary.size(), 8)
                                        : rng() % vocabulary.size();
          stack += ";" + vocabulary[pick];
        }
        stacks[stack] += 1 + rng() % 50;
      }
      const int64_t start = kStart + block * kStep;
      const Status status = writer->append(written.series[0], start, core_test::tree_of(stacks));
      REQUIRE_MESSAGE(status.ok(), status.to_string());
      core_test::add_counts(&written.blocks[0][start], stacks);
    }
  }
  REQUIRE(writer->close().ok());
  Dataset data;
  const Status opened = data.add_file(path);
  REQUIRE_MESSAGE(opened.ok(), opened.to_string());
  for (auto [from, until] : std::vector<std::pair<int64_t, int64_t>>{{0, 17}, {0, 120}, {13, 100}, {64, 120}, {37, 38}})
    check_query(data, written, "grow", [](const SeriesKey&) { return true; }, kStart + from * kStep,
                kStart + until * kStep);
}

// ---- The persisted index (WriterOptions::index_min_trees; docs/format.md, "Persisted index") ----

namespace {

// Opens path twice, from its index and reading every record, and checks that both answer every
// range the same: trees, timelines, merge counts. Returns the indexed file's info.
pyroscope::FileInfo check_index_agrees(const std::string& path, std::mt19937& rng, int ranges) {
  Dataset indexed, scanned;
  Status st = indexed.add_file(path);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  pyroscope::OpenOptions every;
  every.check_every_record = true;
  st = scanned.add_file(path, every);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  const pyroscope::FileInfo& a = indexed.file(0).info();
  const pyroscope::FileInfo& b = scanned.file(0).info();
  CHECK_FALSE(b.opened_from_index);
  CHECK(a.block_count == b.block_count);
  CHECK(a.stored_trees == b.stored_trees);
  CHECK(a.series_count == b.series_count);
  CHECK(a.symbol_count == b.symbol_count);
  CHECK(a.first_time == b.first_time);
  CHECK(a.end_time == b.end_time);
  CHECK(a.valid_bytes == a.file_bytes);
  CHECK(indexed.file(0).series() == scanned.file(0).series());
  const pyroscope::TimeRange span = scanned.time_span();
  const int64_t blocks = (span.until - span.from) / kStep;
  std::vector<std::string> selectors = {"{}"};
  for (const SeriesKey& key : scanned.file(0).series()) selectors.push_back(key.to_string());
  for (int i = 0; i < ranges; ++i) {
    // Lengths log-uniform from one block to beyond the whole file, as the benchmark asks.
    const int64_t length = std::max<int64_t>(1, static_cast<int64_t>(std::exp(std::uniform_real_distribution<double>(
                                                    0, std::log(static_cast<double>(blocks + 20)))(rng))));
    const int64_t from = span.from - 10 * kStep + static_cast<int64_t>(rng() % static_cast<uint64_t>(blocks + 20)) * kStep;
    const std::string& selector = selectors[rng() % selectors.size()];
    pyroscope::QueryOptions options;
    options.timeline_points = i % 3 == 0 ? 0 : 1 + rng() % 300;
    CAPTURE(selector);
    CAPTURE(from);
    CAPTURE(length);
    QueryResult x, y;
    st = indexed.query(selector, from, from + length * kStep, &x, options);
    REQUIRE_MESSAGE(st.ok(), st.to_string());
    st = scanned.query(selector, from, from + length * kStep, &y, options);
    REQUIRE_MESSAGE(st.ok(), st.to_string());
    CHECK(x.tree.to_folded() == y.tree.to_folded());
    CHECK(x.timeline.samples == y.timeline.samples);
    CHECK(x.merges == y.merges);
    CHECK(x.merge_bound == y.merge_bound);
  }
  return a;
}

// The record types of a file, in order (a scan that trusts the sizes: for files this test wrote).
std::vector<uint32_t> record_types(const std::string& bytes) {
  std::vector<uint32_t> types;
  for (size_t pos = 64; pos + 12 <= bytes.size();) {
    uint32_t size, type;
    std::memcpy(&size, bytes.data() + pos, 4);
    std::memcpy(&type, bytes.data() + pos + 4, 4);
    types.push_back(type);
    pos += 12 + size;
  }
  return types;
}

}  // namespace

TEST_CASE("index: a closed file opens from its index and answers every range as reading every record does") {
  // Three series, blocks in parts and late (a seal delay), gaps, and more than one chunk per level
  // (4,096 entries each), so chunk edges fall inside runs of a block's parts.
  core_test::TempDir dir;
  const std::string path = dir.file("indexed.pyro");
  std::mt19937 rng(7);
  pyroscope::WriterOptions options;
  options.multiplier = 4;
  options.seal_delay_blocks = 2;
  options.index_min_trees = 1;
  pyroscope::Writer writer;
  REQUIRE(writer.open(path, options).ok());
  const SeriesKey series[] = {SeriesKey("svc", {{"host", "a"}}), SeriesKey("svc", {{"host", "b"}}),
                              SeriesKey("db", {})};
  int64_t newest = 0;
  for (int step = 0; step < 9000; ++step) {
    const int64_t block = rng() % 3 ? newest++ : std::max<int64_t>(0, newest - 1 - static_cast<int64_t>(rng() % 3));
    if (rng() % 17 == 0) newest += 1 + rng() % 40;  // a gap
    std::mt19937 content(static_cast<uint32_t>(step));
    const Status st =
        writer.append(series[rng() % 3], kStart + block * kStep, core_test::tree_of(core_test::random_stacks(content, 3, 4)));
    REQUIRE((st.ok() || st.code() == pyroscope::StatusCode::out_of_order));
  }
  REQUIRE(writer.close().ok());
  const pyroscope::FileInfo info = check_index_agrees(path, rng, 400);
  CHECK(info.opened_from_index);
  MESSAGE(info.stored_trees << " stored trees, " << info.file_bytes << " bytes");
  const std::vector<uint32_t> types = record_types(core_test::read_file(path));
  REQUIRE_FALSE(types.empty());
  CHECK(types.back() == 6u);  // the directory ends the file
  CHECK(std::count(types.begin(), types.end(), 6u) == 1);

  SUBCASE("a writer appending cuts the index and writes a new one when it closes") {
    REQUIRE(writer.open(path, options).ok());
    for (int i = 0; i < 50; ++i) {
      std::mt19937 content(static_cast<uint32_t>(100000 + i));
      REQUIRE(writer.append(series[i % 3], kStart + (newest + i) * kStep, core_test::tree_of(core_test::random_stacks(content, 3, 4)))
                  .ok());
    }
    REQUIRE(writer.close().ok());
    const std::vector<uint32_t> after = record_types(core_test::read_file(path));
    CHECK(std::count(after.begin(), after.end(), 6u) == 1);
    CHECK(after.back() == 6u);
    CHECK(check_index_agrees(path, rng, 100).opened_from_index);
  }
  SUBCASE("slices of the indexed file equal slices of the file read record by record") {
    Dataset indexed, scanned;
    REQUIRE(indexed.add_file(path).ok());
    pyroscope::OpenOptions every;
    every.check_every_record = true;
    REQUIRE(scanned.add_file(path, every).ok());
    pyroscope::Selector all;
    REQUIRE(pyroscope::Selector::parse("svc{}", &all).ok());
    pyroscope::Writer x, y;
    REQUIRE(x.open_memory().ok());
    REQUIRE(y.open_memory().ok());
    REQUIRE(indexed.slice(all, kStart + 300 * kStep, kStart + 4700 * kStep, &x).ok());
    REQUIRE(scanned.slice(all, kStart + 300 * kStep, kStart + 4700 * kStep, &y).ok());
    CHECK(x.bytes().size() > 10000);
    CHECK(x.bytes().substr(64) == y.bytes().substr(64));  // the header holds the creation time
  }
  SUBCASE("a file cut anywhere inside its index reads every block, and a writer reopens it") {
    const std::string whole = core_test::read_file(path);
    size_t index_start = 64;
    {
      const std::vector<uint32_t> kinds = record_types(whole);
      size_t pos = 64;
      for (uint32_t type : kinds) {
        if (type == 5u) break;
        uint32_t size;
        std::memcpy(&size, whole.data() + pos, 4);
        pos += 12 + size;
      }
      index_start = pos;
    }
    REQUIRE(index_start < whole.size());
    Dataset reference;
    REQUIRE(reference.add_bytes(whole).ok());
    QueryResult expected;
    REQUIRE(reference.query("{}", kStart - kStep, kStart + (newest + 10) * kStep, &expected).ok());
    for (size_t cut : {index_start, index_start + 1, index_start + 13, (index_start + whole.size()) / 2, whole.size() - 17,
                       whole.size() - 1}) {
      CAPTURE(cut);
      Dataset data;
      pyroscope::File file;
      const Status st = file.open_bytes(whole.substr(0, cut));
      REQUIRE_MESSAGE(st.ok(), st.to_string());
      CHECK_FALSE(file.info().opened_from_index);
      data.add(file);
      QueryResult got;
      REQUIRE(data.query("{}", kStart - kStep, kStart + (newest + 10) * kStep, &got).ok());
      CHECK(got.tree.to_folded() == expected.tree.to_folded());
    }
    core_test::write_file(path, whole.substr(0, (index_start + whole.size()) / 2));
    REQUIRE(writer.open(path, options).ok());
    REQUIRE(writer.close().ok());
    CHECK(check_index_agrees(path, rng, 50).opened_from_index);
  }
}

TEST_CASE("index: damage is found when a record is first read, and is an error, never other data") {
  core_test::TempDir dir;
  const std::string path = dir.file("damaged.pyro");
  pyroscope::WriterOptions options;
  options.index_min_trees = 1;
  pyroscope::Writer writer;
  REQUIRE(writer.open(path, options).ok());
  std::mt19937 rng(11);
  for (int block = 0; block < 5000; ++block) {
    std::mt19937 content(static_cast<uint32_t>(block));
    REQUIRE(writer.append(SeriesKey("app", {}), kStart + block * kStep, core_test::tree_of(core_test::random_stacks(content, 4, 5)))
                .ok());
  }
  REQUIRE(writer.close().ok());
  const std::string whole = core_test::read_file(path);
  Dataset reference;
  REQUIRE(reference.add_bytes(whole).ok());
  REQUIRE(reference.file(0).info().opened_from_index);
  const int64_t until = kStart + 5000 * kStep;
  // Where each record starts, and its type.
  std::vector<std::pair<size_t, uint32_t>> records;
  for (size_t pos = 64; pos + 12 <= whole.size();) {
    uint32_t size, type;
    std::memcpy(&size, whole.data() + pos, 4);
    std::memcpy(&type, whole.data() + pos + 4, 4);
    records.push_back({pos, type});
    pos += 12 + size;
  }
  // The varints at the start of a payload: a TREE's series, level, zigzag index; a chunk's series, level.
  auto varints = [](const std::string& bytes, size_t pos, int count) {
    std::vector<uint64_t> out;
    for (int i = 0; i < count; ++i) {
      uint64_t v = 0;
      for (int shift = 0;; shift += 7) {
        const uint8_t b = static_cast<uint8_t>(bytes[pos++]);
        v |= uint64_t(b & 0x7f) << shift;
        if (!(b & 0x80)) break;
      }
      out.push_back(v);
    }
    return out;
  };
  int targeted = 0, errors = 0, equal = 0;
  for (int trial = 0; trial < 300; ++trial) {
    // Damage a TREE record or an index chunk, inside its payload.
    const auto& [at, type] = records[rng() % (records.size() - 1)];
    if (type != 3u && type != 5u) continue;
    std::string damaged = whole;
    uint32_t size;
    std::memcpy(&size, whole.data() + at, 4);
    damaged[at + 12 + rng() % size] ^= static_cast<char>(1 + rng() % 255);
    pyroscope::File file;
    Status st = file.open_bytes(damaged);
    REQUIRE_MESSAGE(st.ok(), st.to_string());  // nothing damaged is read at open
    CHECK(file.info().opened_from_index);
    Dataset data;
    data.add(file);
    // Random ranges: an error, or exactly the undamaged answer (the range did not need the record).
    for (int q = 0; q < 5; ++q) {
      const int64_t from = kStart + static_cast<int64_t>(rng() % 5000) * kStep;
      QueryResult got, expected;
      pyroscope::QueryOptions timeline;
      timeline.timeline_points = 100;
      st = data.query("app{}", from, until, &got, timeline);
      REQUIRE(reference.query("app{}", from, until, &expected, timeline).ok());
      if (!st.ok()) {
        CHECK(st.code() == pyroscope::StatusCode::corrupt_file);
        CHECK(st.message().find("offset") != std::string::npos);
        ++errors;
      } else {
        CHECK(got.tree.to_folded() == expected.tree.to_folded());
        CHECK(got.timeline.samples == expected.timeline.samples);
        ++equal;
      }
    }
    // A range that must read the damaged record fails.
    const std::vector<uint64_t> fields = varints(whole, at + 12, 3);
    QueryResult got;
    if (type == 3u) {
      const int64_t index = int64_t(fields[2] >> 1) ^ -int64_t(fields[2] & 1);
      int64_t span = 1;
      for (uint64_t k = 0; k < fields[1]; ++k) span *= 10;
      st = data.query("app{}", index * span * kStep, (index + 1) * span * kStep, &got);
      CHECK_FALSE(st.ok());
      ++targeted;
    } else if (fields[1] == 0) {  // a level-0 chunk: a timeline of every block reads them all
      st = data.query("app{}", kStart, until, &got);
      CHECK_FALSE(st.ok());
      CHECK(st.message().find("index chunk") != std::string::npos);
      ++targeted;
    }
    // Reading every record finds the damage at open.
    pyroscope::OpenOptions every;
    every.check_every_record = true;
    pyroscope::File checked;
    CHECK_FALSE(checked.open_bytes(damaged, every).ok());
  }
  // Every index chunk, damaged in turn: reading a timeline of every block and each level's nodes fails.
  for (const auto& [at, type] : records) {
    if (type != 5u) continue;
    std::string damaged = whole;
    damaged[at + 20] ^= 0x10;
    Dataset data;
    REQUIRE(data.add_bytes(damaged).ok());
    QueryResult got;
    Status st = data.query("app{}", kStart, until, &got);  // one timeline point per block
    for (int64_t span = 10; st.ok() && span <= 1000; span *= 10)
      for (int64_t node = kStart / kStep / span; st.ok() && node * span * kStep < until; ++node)
        st = data.query("app{}", node * span * kStep, (node + 1) * span * kStep, &got);
    CHECK_FALSE(st.ok());
    CHECK(st.message().find("index chunk") != std::string::npos);
    ++targeted;
  }
  MESSAGE(targeted << " damaged records read on purpose, all errors; random ranges: " << errors << " failed with corrupt_file, "
                   << equal << " did not need the damaged record");
  CHECK(targeted > 100);
}

TEST_CASE("index: a reader keeps working while a writer appends to its file and cuts the index") {
  core_test::TempDir dir;
  const std::string path = dir.file("shared.pyro");
  pyroscope::WriterOptions options;
  options.index_min_trees = 1;
  {
    pyroscope::Writer writer;
    REQUIRE(writer.open(path, options).ok());
    for (int block = 0; block < 9000; ++block) {
      std::mt19937 content(static_cast<uint32_t>(block));
      REQUIRE(writer.append(SeriesKey("app", {}), kStart + block * kStep, core_test::tree_of(core_test::random_stacks(content, 2, 3)))
                  .ok());
    }
    REQUIRE(writer.close().ok());
  }
  Dataset reader;
  REQUIRE(reader.add_file(path).ok());
  REQUIRE(reader.file(0).info().opened_from_index);
  // The writer reopens (cutting the index off the file the reader has mapped) and appends.
  pyroscope::Writer writer;
  REQUIRE(writer.open(path, options).ok());
  std::mt19937 content(1);
  REQUIRE(writer.append(SeriesKey("app", {}), kStart + 9000 * kStep, core_test::tree_of(core_test::random_stacks(content, 2, 3))).ok());
  // The reader's chunks are read with pread, not through the mapping: a chunk no longer in the file is
  // an error naming why (a mapped page past the end would have been SIGBUS), and its data is intact.
  QueryResult result;
  const Status st = reader.query("app{}", kStart, kStart + 9000 * kStep, &result);
  if (!st.ok()) {
    CHECK(st.code() == pyroscope::StatusCode::corrupt_file);
    CHECK_MESSAGE(st.message().find("a writer appending to it cut its index") != std::string::npos, st.to_string());
  } else {
    CHECK(result.tree.total() > 0);
  }
  REQUIRE(writer.close().ok());
  Dataset again;
  REQUIRE(again.add_file(path).ok());
  CHECK(again.file(0).info().opened_from_index);
  CHECK(again.file(0).info().block_count == 9001);
}

TEST_CASE("index: small files, memory writers and check_every_record read every record") {
  core_test::TempDir dir;
  const std::string path = dir.file("small.pyro");
  pyroscope::Writer writer;
  REQUIRE(writer.open(path).ok());  // index_min_trees 4096 by default
  std::mt19937 content(3);
  for (int block = 0; block < 100; ++block)
    REQUIRE(writer.append(SeriesKey("app", {}), kStart + block * kStep, core_test::tree_of(core_test::random_stacks(content, 2, 3))).ok());
  REQUIRE(writer.close().ok());
  const std::vector<uint32_t> types = record_types(core_test::read_file(path));
  CHECK(std::count(types.begin(), types.end(), 5u) == 0);
  CHECK(std::count(types.begin(), types.end(), 6u) == 0);
  pyroscope::File file;
  REQUIRE(file.open_path(path).ok());
  CHECK_FALSE(file.info().opened_from_index);
}

TEST_CASE("index: a forked child closing its copy of a writer leaves the parent's file alone") {
  core_test::TempDir dir;
  const std::string path = dir.file("forked.pyro");
  pyroscope::WriterOptions options;
  options.index_min_trees = 1;
  pyroscope::Writer writer;
  REQUIRE(writer.open(path, options).ok());
  std::mt19937 content(5);
  for (int block = 0; block < 20; ++block)
    REQUIRE(writer.append(SeriesKey("app", {}), kStart + block * kStep, core_test::tree_of(core_test::random_stacks(content, 2, 3))).ok());
  const std::string before = core_test::read_file(path);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(writer.close().ok() ? 0 : 1);  // what its destructors at exit would do
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK(core_test::read_file(path) == before);  // no index written by the child
  REQUIRE(writer.append(SeriesKey("app", {}), kStart + 20 * kStep, core_test::tree_of(core_test::random_stacks(content, 2, 3))).ok());
  REQUIRE(writer.close().ok());
  pyroscope::File file;
  REQUIRE(file.open_path(path).ok());
  CHECK(file.info().opened_from_index);
  CHECK(file.info().block_count == 21);
}
