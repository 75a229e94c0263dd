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
