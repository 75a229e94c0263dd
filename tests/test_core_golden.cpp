// Golden file: tests/data/golden-v1.pyro was written by format version 1 from the content below and
// is checked in. Reading it must keep giving that content, so a change to the format that breaks old
// files is noticed. When the format version changes on purpose, keep this file (old files must still
// open or be refused with unsupported_version) and add a golden file for the new version.
//
// Regenerate (only for a new format version, never to make this test pass):
//   PYROSCOPE_WRITE_GOLDEN=tests/data/golden-vN.pyro build/test-release/tests/test_core_golden
#include "test_core_support.hpp"

using core_test::StackCounts;
using pyroscope::SeriesKey;
using pyroscope::Status;

namespace {

constexpr int64_t kStart = 1700000000;
constexpr int64_t kStep = pyroscope::kDefaultResolutionSeconds;
constexpr int kBlocks = 25;
const char* const kGoldenName = "golden-v1.pyro";

std::vector<SeriesKey> golden_series() {
  return {SeriesKey("ride-sharing-app", {{"region", "eu-north"}, {"vehicle", "car"}}),
          SeriesKey("ride-sharing-app", {{"region", "us-east"}, {"vehicle", "bike"}}),
          SeriesKey("db", {{"host", "db-1"}})};
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

std::string golden_path() { return std::string(PYROSCOPE_TEST_DATA_DIR) + "/" + kGoldenName; }

}  // namespace

TEST_CASE("golden: write the golden file when asked to") {
  const char* target = std::getenv("PYROSCOPE_WRITE_GOLDEN");
  if (!target || !*target) return;
  std::remove(target);
  pyroscope::Writer writer;
  REQUIRE(writer.open(target).ok());
  const std::vector<SeriesKey> series = golden_series();
  for (int block = 0; block < kBlocks; ++block)
    for (size_t s = 0; s < series.size(); ++s)
      if (has_block(s, block))
        REQUIRE(writer.append(series[s], kStart + block * kStep, core_test::tree_of(golden_stacks(s, block))).ok());
  REQUIRE(writer.close().ok());
  MESSAGE("wrote " << target);
}

TEST_CASE("golden: the version 1 file still reads back its content") {
  const std::string bytes = core_test::read_file(golden_path());
  REQUIRE_MESSAGE(!bytes.empty(), "missing " << golden_path());
  CHECK(bytes.size() < 20 * 1024);

  pyroscope::File file;
  const Status status = file.open_path(golden_path());
  REQUIRE_MESSAGE(status.ok(), status.to_string());
  const std::vector<SeriesKey> series = golden_series();
  size_t blocks = 0;
  for (size_t s = 0; s < series.size(); ++s)
    for (int block = 0; block < kBlocks; ++block) blocks += has_block(s, block);
  CHECK(file.info().format_version == 1);
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

  for (size_t s = 0; s < series.size(); ++s) {
    CAPTURE(series[s].to_string());
    // Every block on its own, and the whole range with its timeline.
    StackCounts whole;
    std::vector<uint64_t> timeline;
    for (int block = 0; block < kBlocks; ++block) {
      const StackCounts stacks = has_block(s, block) ? golden_stacks(s, block) : StackCounts{};
      core_test::add_counts(&whole, stacks);
      timeline.push_back(core_test::sum_of(stacks));
      pyroscope::QueryResult one;
      REQUIRE(data.query(series[s].to_string(), kStart + block * kStep, kStart + (block + 1) * kStep, &one).ok());
      CHECK(core_test::stacks_of(one.tree) == stacks);
    }
    pyroscope::QueryResult result;
    REQUIRE(data.query(series[s].to_string(), kStart, kStart + kBlocks * kStep, &result).ok());
    CHECK(core_test::stacks_of(result.tree) == whole);
    CHECK(result.timeline.samples == timeline);
    CHECK(result.series_matched == 1);
  }
}
