// Golden files: tests/data/golden-v1.pyro, golden-v2.pyro and golden-v3.pyro were written by format
// versions 1 to 3 from the content below and are checked in (version 3 adds typed series). Reading them must keep giving that content, so a change
// to the format that breaks old files is noticed. When the format version changes on purpose, keep
// these files (old files must still open or be refused with unsupported_version) and add a golden
// file for the new version.
//
// Write the current version's file (only for a new format version, never to make this test pass):
//   PYROSCOPE_WRITE_GOLDEN=tests/data/golden-vN.pyro build/test-release/tests/test_core_golden
// golden-v3-indexed.pyro holds the same content closed with the persisted index (a name that ends in
// -indexed.pyro is written with it), so that index format keeps reading too.
#include "test_core_support.hpp"


namespace {

constexpr int kBlocks = 25;

constexpr int kNewestVersion = 3;

// Version 3 files also hold series of other profile types, with their units and aggregation.
std::vector<SeriesKey> golden_series(int version) {
  std::vector<SeriesKey> series = {SeriesKey("ride-sharing-app", {{"region", "eu-north"}, {"vehicle", "car"}}),
                                   SeriesKey("ride-sharing-app", {{"region", "us-east"}, {"vehicle", "bike"}}),
                                   SeriesKey("db", {{"host", "db-1"}})};
  if (version >= 3) {
    series.emplace_back("db", "alloc_space", pyroscope::Tags{{"host", "db-1"}});
    series.emplace_back("db", "inuse_space", pyroscope::Tags{{"host", "db-1"}});
  }
  return series;
}

pyroscope::SeriesInfo golden_info(const SeriesKey& key) {
  pyroscope::SeriesInfo info;
  if (key.type == "cpu") return info;  // samples, summed: all that versions 1 and 2 know
  info.unit = "bytes";
  info.aggregation = key.type == "inuse_space" ? pyroscope::Aggregation::average : pyroscope::Aggregation::sum;
  info.period = 524288;
  info.period_type = "space";
  info.period_unit = "bytes";
  return info;
}

// Series s has block b unless b % (s + 2) == 1: gaps that differ per series.
bool has_block(size_t s, int block) { return block % static_cast<int>(s + 2) != 1; }

StackCounts golden_stacks(size_t s, int block) {
  const uint64_t b = static_cast<uint64_t>(block), k = s + 1;
  StackCounts stacks;
  stacks["main;handler_" + std::to_string(s) + ";work_" + std::to_string(block % 5)] = (b + 1) * k;
  stacks["main;handler_" + std::to_string(s) + ";std::vector<int, std::allocator<int> >::push_back(int const&)"] = 3 + b % 4;
  stacks["main;idle"] = 2;
  if (block % 3 == 0) stacks["main;handler_" + std::to_string(s) + ";work_" + std::to_string(block % 5) + ";syscall"] = k;
  return stacks;
}

std::string golden_path(int version) {
  return std::string(PYROSCOPE_TEST_DATA_DIR) + "/golden-v" + std::to_string(version) + ".pyro";
}

// The golden content of series s over blocks [0, blocks), queried block by block and as a whole.
// A query answered by one stored tree of a version 2 file keeps the file's name order.
// An average series' query is the sum over the blocks with data divided by their number, each
// stack rounded to the nearest integer.
StackCounts averaged(StackCounts stacks, uint64_t blocks) {
  for (auto& [stack, count] : stacks) count = (2 * count + blocks) / (2 * blocks);
  for (auto it = stacks.begin(); it != stacks.end();) it = it->second == 0 ? stacks.erase(it) : std::next(it);
  return stacks;
}

void check_golden_content(const pyroscope::Dataset& data, int blocks, int version) {
  const std::vector<SeriesKey> series = golden_series(version);
  for (size_t s = 0; s < series.size(); ++s) {
    CAPTURE(series[s].to_string());
    const pyroscope::SeriesInfo info = golden_info(series[s]);
    StackCounts whole;
    std::vector<uint64_t> timeline;
    uint64_t blocks_with_data = 0;
    for (int block = 0; block < blocks; ++block) {
      const StackCounts stacks = has_block(s, block) ? golden_stacks(s, block) : StackCounts{};
      blocks_with_data += !stacks.empty();
      core_test::add_counts(&whole, stacks);
      timeline.push_back(core_test::sum_of(stacks));
      pyroscope::QueryResult one;
      REQUIRE(data.query(series[s].to_string(), kStart + block * kStep, kStart + (block + 1) * kStep, &one).ok());
      CHECK(core_test::stacks_of(one.tree) == stacks);
      if (one.merges == 1) CHECK(one.tree.in_name_preorder() == (version >= 2));
    }
    pyroscope::QueryResult result;
    REQUIRE(data.query(series[s].to_string(), kStart, kStart + blocks * kStep, &result).ok());
    if (info.aggregation == pyroscope::Aggregation::average) whole = averaged(whole, blocks_with_data);
    CHECK(core_test::stacks_of(result.tree) == whole);
    CHECK(result.timeline.samples == timeline);  // one point per block: an average of one block
    CHECK(result.series_matched == 1);
    CHECK(result.type == series[s].type);
    CHECK(result.info == info);
  }
}

}  // namespace

TEST_CASE("golden: write the golden file when asked to") {
  const char* target = std::getenv("PYROSCOPE_WRITE_GOLDEN");
  if (!target || !*target) return;
  std::remove(target);
  pyroscope::WriterOptions options;
  const std::string name = target;
  if (name.size() > 13 && name.compare(name.size() - 13, 13, "-indexed.pyro") == 0) options.index_min_trees = 1;
  pyroscope::Writer writer;
  REQUIRE(writer.open(target, options).ok());
  const std::vector<SeriesKey> series = golden_series(kNewestVersion);
  for (int block = 0; block < kBlocks; ++block)
    for (size_t s = 0; s < series.size(); ++s)
      if (has_block(s, block)) {
        const pyroscope::SeriesInfo info = golden_info(series[s]);
        REQUIRE(writer.append(series[s], kStart + block * kStep, core_test::tree_of(golden_stacks(s, block)), &info).ok());
      }
  REQUIRE(writer.close().ok());
  MESSAGE("wrote " << target);
}

TEST_CASE("golden: the files of every format version read back their content") {
  for (int variant = 1; variant <= kNewestVersion + 1; ++variant) {
    // The last variant: the newest version's file with its persisted index.
    const bool indexed = variant > kNewestVersion;
    const int version = indexed ? kNewestVersion : variant;
    const std::string path = indexed ? std::string(PYROSCOPE_TEST_DATA_DIR) + "/golden-v3-indexed.pyro" : golden_path(version);
    CAPTURE(path);
    const std::string bytes = core_test::read_file(path);
    REQUIRE_MESSAGE(!bytes.empty(), "missing " << path);
    CHECK(bytes.size() < 20 * 1024);

    pyroscope::File file;
    const Status status = file.open_path(path);
    REQUIRE_MESSAGE(status.ok(), status.to_string());
    CHECK(file.info().opened_from_index == indexed);
    const std::vector<SeriesKey> series = golden_series(version);
    size_t blocks = 0;
    for (size_t s = 0; s < series.size(); ++s)
      for (int block = 0; block < kBlocks; ++block) blocks += has_block(s, block);
    CHECK(file.info().format_version == static_cast<uint32_t>(version));
    CHECK(file.info().resolution_seconds == kStep);
    CHECK(file.info().multiplier == 10);
    CHECK(file.info().series_count == series.size());
    CHECK(file.info().block_count == blocks);
    CHECK(file.info().first_time == kStart);
    CHECK(file.info().end_time == kStart + kBlocks * kStep);
    CHECK(file.info().valid_bytes == bytes.size());

    pyroscope::Dataset data;
    REQUIRE(data.add_bytes(bytes).ok());
    CHECK(data.apps() == std::vector<std::string>{"db", "ride-sharing-app"});
    CHECK(data.tag_keys("ride-sharing-app") == std::vector<std::string>{"region", "vehicle"});
    CHECK(data.tag_values("ride-sharing-app", "region") == std::vector<std::string>{"eu-north", "us-east"});
    CHECK(data.tag_values("db", "host") == std::vector<std::string>{"db-1"});
    CHECK(data.types("db") == (version >= 3 ? std::vector<std::string>{"cpu", "alloc_space", "inuse_space"}
                                            : std::vector<std::string>{"cpu"}));
    for (size_t s = 0; s < series.size(); ++s) CHECK(file.series_info(s) == golden_info(file.series()[s]));
    check_golden_content(data, kBlocks, version);
  }
}

TEST_CASE("golden: a new file is written in the newest version") {
  core_test::TempDir dir;
  const std::string path = dir.path() + "/new.pyro";
  pyroscope::Writer writer;
  REQUIRE(writer.open(path).ok());
  REQUIRE(writer.append(golden_series(kNewestVersion)[0], kStart, core_test::tree_of(golden_stacks(0, 0))).ok());
  REQUIRE(writer.close().ok());
  pyroscope::File file;
  REQUIRE(file.open_path(path).ok());
  CHECK(file.info().format_version == kNewestVersion);
}

TEST_CASE("golden: appending to a version 1 file keeps it version 1 and readable") {
  // Old files stay appendable: the writer continues in their own tree encoding, so the upper levels it
  // seals (which merge stored version 1 trees) and the new blocks read back with the old ones.
  core_test::TempDir dir;
  const std::string path = dir.path() + "/old.pyro";
  core_test::write_file(path, core_test::read_file(golden_path(1)));
  const std::vector<SeriesKey> series = golden_series(1);
  constexpr int kMoreBlocks = 12;  // crosses the level-1 boundary at block 30
  {
    pyroscope::Writer writer;
    const Status status = writer.open(path);
    REQUIRE_MESSAGE(status.ok(), status.to_string());
    for (int block = kBlocks; block < kBlocks + kMoreBlocks; ++block)
      for (size_t s = 0; s < series.size(); ++s)
        if (has_block(s, block))
          REQUIRE(writer.append(series[s], kStart + block * kStep, core_test::tree_of(golden_stacks(s, block))).ok());
    REQUIRE(writer.close().ok());
  }
  pyroscope::File file;
  REQUIRE(file.open_path(path).ok());
  CHECK(file.info().format_version == 1);
  CHECK(file.info().end_time == kStart + (kBlocks + kMoreBlocks) * kStep);
  CHECK(file.info().stored_trees > file.info().block_count);  // sealed upper levels among them
  pyroscope::Dataset data;
  REQUIRE(data.add_file(path).ok());
  check_golden_content(data, kBlocks + kMoreBlocks, 1);
}

TEST_CASE("golden: version 1 and 2 files take cpu samples only; other series need a new file") {
  for (int version : {1, 2}) {
    CAPTURE(version);
    core_test::TempDir dir;
    const std::string path = dir.path() + "/old.pyro";
    core_test::write_file(path, core_test::read_file(golden_path(version)));
    pyroscope::Writer writer;
    REQUIRE(writer.open(path).ok());
    const pyroscope::Tree tree = core_test::tree_of(golden_stacks(0, 0));
    const SeriesKey heap("db", "alloc_space", {{"host", "db-1"}});
    const Status refused = writer.append(heap, kStart + 40 * kStep, tree);
    CHECK(refused.code() == pyroscope::StatusCode::invalid_argument);
    CHECK(refused.message().find("write a new file") != std::string::npos);
    pyroscope::SeriesInfo in_ns;
    in_ns.unit = "nanoseconds";
    CHECK(writer.append(SeriesKey("new-app", {}), kStart + 40 * kStep, tree, &in_ns).code() ==
          pyroscope::StatusCode::invalid_argument);
    CHECK(writer.append(SeriesKey("new-app", {}), kStart + 40 * kStep, tree).ok());  // cpu samples: fine
    REQUIRE(writer.close().ok());
    pyroscope::File file;
    REQUIRE(file.open_path(path).ok());
    CHECK(file.info().format_version == static_cast<uint32_t>(version));
  }
}
