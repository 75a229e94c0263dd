// The rideshare service in-process: its endpoints answer over real HTTP, each request costs CPU in
// proportion to its search radius, and eu-north's mutex_lock follows its heavy/light schedule.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <httplib.h>

#include <ctime>
#include <thread>

#include "pyroscope.hpp"
#include "rideshare.hpp"

namespace {

RideshareSettings settings_for(const char* region, int64_t work_unit_ns) {
  RideshareSettings settings;
  settings.region = region;
  settings.work_unit_ns = work_unit_ns;
  settings.mutex_period_seconds = 86400;  // the phase cannot change during a test
  return settings;
}

// CPU time one call of find_nearest_vehicle costs on this thread.
int64_t cpu_cost_ns(int search_radius) {
  const int64_t before = thread_cpu_time_ns();
  uint64_t result = find_nearest_vehicle(search_radius, "car");
  const int64_t cost = thread_cpu_time_ns() - before;
  CHECK(result != 0);  // the xorshift chain never reaches 0 from a non-zero seed
  return cost;
}

}  // namespace

TEST_CASE("the endpoints answer over HTTP with the vehicle and the region") {
  configure_rideshare(settings_for("ap-south", 200000));
  httplib::Server server;
  add_rideshare_routes(&server);
  const int port = server.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread serving([&] { server.listen_after_bind(); });

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  client.set_read_timeout(30);
  struct Case {
    const char* path;
    const char* vehicle;
  } cases[] = {{"/bike", "bike #"}, {"/car", "car #"}, {"/scooter", "scooter #"}};
  for (const Case& c : cases) {
    CAPTURE(c.path);
    httplib::Result result = client.Get(c.path);
    REQUIRE(result);
    CHECK(result->status == 200);
    CHECK(result->body.rfind(c.vehicle, 0) == 0);
    CHECK(result->body.find("found in ap-south") != std::string::npos);
  }
  // The rider's history: every receipt built (the same history each time: its content is a function of
  // the ride count and the region).
  httplib::Result history = client.Get("/history");
  REQUIRE(history);
  CHECK(history->status == 200);
  CHECK(history->body.rfind(std::to_string(kHistoryRides) + " rides in ap-south, ", 0) == 0);
  CHECK(build_ride_history(kHistoryRides) == build_ride_history(kHistoryRides));
  CHECK(build_ride_history(2 * kHistoryRides) > build_ride_history(kHistoryRides));
  httplib::Result hello = client.Get("/");
  REQUIRE(hello);
  CHECK(hello->body == "ride-sharing-app region=ap-south\n");
  httplib::Result missing = client.Get("/plane");
  REQUIRE(missing);
  CHECK(missing->status == 404);

  server.stop();
  serving.join();
}

TEST_CASE("CPU work is proportional to the search radius") {
  // The cost is thread CPU time, so it does not depend on how busy the machine is: at least the
  // radius' units, plus at most one spin round (~15 µs) and the clock reads.
  const int64_t unit = 4000000;
  configure_rideshare(settings_for("us-east", unit));
  for (int radius = 1; radius <= 3; radius++) {
    CAPTURE(radius);
    const int64_t cost = cpu_cost_ns(radius);
    CHECK(cost >= radius * unit);
    CHECK(cost < radius * unit + unit / 2);
  }
}

TEST_CASE("eu-north checks drivers, and mutex_lock follows the heavy/light schedule") {
  const int64_t unit = 2000000;
  configure_rideshare(settings_for("eu-north", unit));
  const int radius = 2;
  int64_t cost = 0;
  bool heavy = false;
  for (int attempt = 0; attempt < 3; attempt++) {  // a day boundary during the call: measure again
    heavy = is_mutex_heavy_period(std::time(nullptr), 86400);
    cost = cpu_cost_ns(radius);
    if (heavy == is_mutex_heavy_period(std::time(nullptr), 86400)) break;
  }
  const double units = 1.0 + kDriverCheckUnits + (heavy ? kMutexHeavyUnits : kMutexLightUnits);
  const int64_t expected = int64_t(units * radius * unit);
  CAPTURE(heavy);
  CHECK(cost >= expected);
  CHECK(cost < expected + unit / 2);

  // mutex_lock alone, both phases, through the period arithmetic the server uses.
  const int64_t mutex_cost_start = thread_cpu_time_ns();
  mutex_lock(1);
  const int64_t mutex_cost = thread_cpu_time_ns() - mutex_cost_start;
  const double mutex_units = is_mutex_heavy_period(std::time(nullptr), 86400) ? kMutexHeavyUnits : kMutexLightUnits;
  CHECK(mutex_cost >= int64_t(mutex_units * unit));
  CHECK(mutex_cost < int64_t(mutex_units * unit) + unit / 2);
}

TEST_CASE("the mutex_lock periods alternate on the unix clock") {
  // heavy during [0, p), light during [p, 2p), heavy again from 2p: every process agrees on the phase.
  CHECK(is_mutex_heavy_period(0, 20));
  CHECK(is_mutex_heavy_period(19, 20));
  CHECK_FALSE(is_mutex_heavy_period(20, 20));
  CHECK_FALSE(is_mutex_heavy_period(39, 20));
  CHECK(is_mutex_heavy_period(40, 20));
  CHECK(is_mutex_heavy_period(1700000040, 20) != is_mutex_heavy_period(1700000060, 20));
}
