// pyro serve's store without the HTTP layer: the races between pushes and the maintenance tick.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <unistd.h>

#include "pyroscope.hpp"
#include "serve_store.hpp"

using namespace pyroscope;

namespace {

std::string fresh_dir(const char* name) {
  const std::string dir = std::string(name) + "-" + std::to_string(::getpid());
  std::string command = "rm -rf '" + dir + "'";
  REQUIRE(std::system(command.c_str()) == 0);
  return dir;
}

std::vector<ProfileBlock> one_block(int64_t block_start, uint64_t samples) {
  ProfileBlock block;
  block.series = SeriesKey("race", {{"region", "eu-north"}});
  block.info = default_series_info("cpu");
  block.block_start = block_start;
  block.tree.insert({"main", "work"}, samples);
  std::vector<ProfileBlock> blocks;
  blocks.push_back(std::move(block));
  return blocks;
}

uint64_t stored_samples(serve::Store& store, int64_t hour) {
  Dataset data;
  REQUIRE(store.dataset(0, 0, &data).ok());
  QueryResult result;
  const Status st = data.query("race{}", hour, hour + 3600, &result);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  return result.tree.total();
}

}  // namespace

// A push takes its hour's writer from the map; the maintenance tick may take the same writer out and
// close it before the push appends. The push must then write through a fresh writer, not fail (a
// client would see a 500 for a push the server could have stored) and not write into a closed one.
TEST_CASE("pushes racing the maintenance tick that closes their writer all succeed and all are stored") {
  const std::string dir = fresh_dir("store-race");
  serve::Store store;
  serve::StoreOptions options;
  options.dir = dir;
  options.retention_seconds = 0;
  std::vector<std::string> warnings;
  REQUIRE(store.open(options, &warnings).ok());

  // Blocks of an hour whose live window has closed go to that hour's late file; maintain() closes a late
  // writer idle for over 120 s, which it is whenever maintain's clock runs 200 s ahead of the pushes'.
  const int64_t hour = 1700000000 / 3600 * 3600;
  const int64_t push_now = hour + 2 * 3600;
  std::atomic<bool> pushing{true};
  std::atomic<uint64_t> ticks{0};
  std::thread maintenance([&] {
    while (pushing.load()) {
      store.maintain(push_now + 200);
      ticks++;
    }
  });
  uint64_t sent = 0, failed = 0;  // summed over the pushers below
  std::string first_error;
  std::vector<std::thread> pushers;
  std::atomic<uint64_t> sent_total{0}, failed_total{0};
  std::mutex error_mutex;
  for (int t = 0; t < 2; t++) {
    pushers.emplace_back([&, t] {
      for (int i = 0; i < 2000; i++) {
        // Now and then both pushers pause, so the tick finds the writer unused and closes it.
        if (i % 40 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::vector<ProfileBlock> blocks = one_block(hour + 10 * ((i + t) % 360), 1 + i % 7);
        const uint64_t samples = blocks[0].tree.total();
        const Status st = store.write(&blocks, push_now);
        if (st.ok()) {
          sent_total += samples;
        } else {
          failed_total++;
          std::lock_guard<std::mutex> lock(error_mutex);
          if (first_error.empty()) first_error = st.to_string();
        }
      }
    });
  }
  for (std::thread& t : pushers) t.join();
  pushing = false;
  maintenance.join();
  store.maintain(push_now + 200);
  sent = sent_total.load();
  failed = failed_total.load();
  MESSAGE("maintenance ticks during the pushes: " << ticks.load() << ", writers closed by them: "
                                                   << store.counters().writers_closed.load());
  CHECK(ticks.load() > 100);
  CHECK(store.counters().writers_closed.load() > 10);  // the late file was closed and reopened all along
  CHECK_MESSAGE(failed == 0, "first error: " << first_error);
  CHECK(stored_samples(store, hour) == sent);
  CHECK(store.counters().refused.load() == 0);
  CHECK(store.open_writers() == 0);
}

// `--data` is documented as "created if missing": a path whose parents do not exist yet either.
TEST_CASE("the data directory is created with its missing parents; a file in the way is an error") {
  const std::string root = fresh_dir("store-parents");
  serve::Store store;
  serve::StoreOptions options;
  options.dir = root + "/var/lib/pyro";
  options.retention_seconds = 0;
  std::vector<std::string> warnings;
  const Status st = store.open(options, &warnings);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  const int64_t hour = 1700000000 / 3600 * 3600;
  std::vector<ProfileBlock> blocks = one_block(hour, 5);
  REQUIRE(store.write(&blocks, hour + 30).ok());
  CHECK(stored_samples(store, hour) == 5);

  const std::string blocked = fresh_dir("store-blocked");
  REQUIRE(std::system(("touch '" + blocked + "'").c_str()) == 0);
  serve::Store refused;
  options.dir = blocked + "/data";
  const Status no = refused.open(options, &warnings);
  CHECK_FALSE(no.ok());
  CHECK_MESSAGE(no.to_string().find(blocked) != std::string::npos, no.to_string());
  std::system(("rm -rf '" + root + "' '" + blocked + "'").c_str());
}

// A query reads an indexed file's index chunks when it first needs them. A late block reopens the
// hour's late file, and its writer cuts the index: a data set taken before that fails with "the file
// changed since it was opened" (once a 500 for a dashboard's refresh). Store::read opens such files
// again and answers.
TEST_CASE("a read that races a late writer cutting a file's index is answered from the file opened again") {
  const std::string dir = fresh_dir("store-index-cut");
  serve::Store store;
  serve::StoreOptions options;
  options.dir = dir;
  options.retention_seconds = 0;
  std::vector<std::string> warnings;
  REQUIRE(store.open(options, &warnings).ok());
  const int64_t hour = 1700000000 / 3600 * 3600;
  const int64_t push_now = hour + 2 * 3600;  // the hour's live window has closed: its late file
  uint64_t sent = 0;
  // 12 series x 360 blocks: 4,320 trees, over the 4,096 from which a closing writer writes an index.
  for (int block = 0; block < 360; block++)
    for (int s = 0; s < 12; s++) {
      std::vector<ProfileBlock> blocks = one_block(hour + 10 * block, 1 + (block + s) % 5);
      blocks[0].series = SeriesKey("race", {{"region", "r" + std::to_string(s)}});
      sent += blocks[0].tree.total();
      REQUIRE(store.write(&blocks, push_now).ok());
    }
  store.maintain(push_now + 200);  // closes the idle late writer, which writes the index
  REQUIRE(store.open_writers() == 0);

  Dataset before;
  REQUIRE(store.dataset(0, 0, &before).ok());
  REQUIRE(before.file_count() == 1);
  REQUIRE(before.file(0).info().opened_from_index);
  // A file of the same hour that does not open: named in the answer's warnings once, however many
  // times the read runs.
  const std::string unreadable = dir + "/" + serve::Store::hour_file_name(hour, false);
  {
    FILE* f = std::fopen(unreadable.c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fputs("not a pyro file, but long enough to have a header of 64 bytes: ............", f);
    std::fclose(f);
  }
  // The late block arrives between the read's data set and its query, as it may between two threads.
  QueryResult fresh;
  int runs = 0;
  std::vector<std::string> read_warnings;
  const Status answered = store.read(hour, hour + 3600, [&](const Dataset& data) {
    if (++runs == 1) {
      std::vector<ProfileBlock> late = one_block(hour + 10 * 100, 7);  // reopens the late file: the index is cut
      sent += 7;
      REQUIRE(store.write(&late, push_now + 300).ok());
    }
    return data.query("race{}", hour, hour + 3600, &fresh);
  }, &read_warnings);
  REQUIRE_MESSAGE(answered.ok(), answered.to_string());
  CHECK(runs == 2);
  CHECK(fresh.tree.total() == sent);
  REQUIRE(read_warnings.size() == 1);
  CHECK(read_warnings[0].find(serve::Store::hour_file_name(hour, false)) != std::string::npos);
  std::remove(unreadable.c_str());
  // The data set taken before the cut fails, as the read's first run did: the race did happen.
  QueryResult stale;
  const Status st = before.query("race{}", hour, hour + 3600, &stale);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("changed since it was opened") != std::string::npos);

  // A file damaged in place keeps its size: its error is returned, after one run, not retried.
  store.maintain(push_now + 1000);
  const std::string path = dir + "/" + serve::Store::hour_file_name(hour, true);
  Dataset indexed;
  REQUIRE(store.dataset(0, 0, &indexed).ok());
  REQUIRE(indexed.file(0).info().opened_from_index);
  {
    // A byte inside the first INDEX CHUNK record (type 5), found by walking the records' sizes.
    FILE* f = std::fopen(path.c_str(), "r+b");
    REQUIRE(f != nullptr);
    long at = 64, chunk = -1;
    unsigned char head[12];
    while (chunk < 0 && std::fseek(f, at, SEEK_SET) == 0 && std::fread(head, 1, 12, f) == 12) {
      const uint32_t record_size = uint32_t(head[0]) | uint32_t(head[1]) << 8 | uint32_t(head[2]) << 16 | uint32_t(head[3]) << 24;
      if (head[4] == 5 && head[5] == 0 && head[6] == 0 && head[7] == 0) chunk = at;
      at += 12 + long(record_size);
    }
    REQUIRE(chunk > 0);
    REQUIRE(std::fseek(f, chunk + 14, SEEK_SET) == 0);
    const int c = std::fgetc(f);
    REQUIRE(std::fseek(f, chunk + 14, SEEK_SET) == 0);
    std::fputc(c ^ 0x55, f);
    std::fclose(f);
  }
  runs = 0;
  const Status damaged = store.read(hour, hour + 3600, [&](const Dataset& data) {
    runs++;
    QueryResult r;
    return data.query("race{}", hour, hour + 3600, &r);
  });
  CHECK(runs == 1);
  CHECK_FALSE(damaged.ok());
  CHECK(damaged.code() == StatusCode::corrupt_file);
  CHECK(damaged.message().find("index chunk") != std::string::npos);
}
