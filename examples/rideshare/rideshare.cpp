#include "rideshare.hpp"

#include <httplib.h>
#include <time.h>

#include <map>
#include <vector>

#include "pyroscope.hpp"

// The walkthrough's premise: eu-north's mutex_lock is about 70% of the CPU in heavy periods and a
// small sliver in light ones.
static_assert(kMutexHeavyUnits / (1.0 + kDriverCheckUnits + kMutexHeavyUnits) > 0.69 &&
                  kMutexHeavyUnits / (1.0 + kDriverCheckUnits + kMutexHeavyUnits) < 0.71,
              "mutex_lock should be ~70% of an eu-north request in heavy periods");
static_assert(kMutexLightUnits / (1.0 + kDriverCheckUnits + kMutexLightUnits) < 0.1,
              "mutex_lock should be under 10% of an eu-north request in light periods");

namespace {

RideshareSettings g_settings;
bool g_checks_drivers = false;  // eu-north only

// Spins for cpu_ns of this thread's CPU time. The loop is an xorshift chain whose result the caller
// returns, so it cannot be optimized away; the CPU clock is read every ~15 µs, so the clock's own cost
// (a system call: there is no vDSO path for thread clocks) stays a few percent. always_inline keeps the
// spinning in the caller's own frame, as the walkthrough's flame graphs show it.
[[gnu::always_inline]] inline uint64_t spin_cpu(int64_t cpu_ns, uint64_t seed) {
  const int64_t deadline = thread_cpu_time_ns() + cpu_ns;
  uint64_t x = seed | 1;
  do {
    for (int i = 0; i < 16384; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    asm volatile("" : "+r"(x));  // the chain's value must exist here: no closed form, no vectorizing
  } while (thread_cpu_time_ns() < deadline);
  return x;
}

int64_t units_ns(int search_radius, double units) {
  return static_cast<int64_t>(static_cast<double>(g_settings.work_unit_ns) * units * search_radius);
}

}  // namespace

// static rather than in the anonymous namespace: the flame graph then says describe(...), not
// (anonymous namespace)::describe(...).
static std::string describe(const Ride& ride) {
  return std::string(ride.vehicle) + " #" + std::to_string(ride.vehicle_id % 1000) + " found in " + g_settings.region +
         "\n";
}

int64_t thread_cpu_time_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool is_mutex_heavy_period(int64_t unix_seconds, int64_t period_seconds) {
  return (unix_seconds / period_seconds) % 2 == 0;
}

void configure_rideshare(const RideshareSettings& settings) {
  g_settings = settings;
  g_checks_drivers = settings.region == "eu-north";
}

const RideshareSettings& rideshare_settings() { return g_settings; }

// noinline everywhere below: each function must stay a frame of its own in the profile. None of the
// calls is a tail call either (each caller does something with the result afterwards), so no frame is
// skipped.

__attribute__((noinline)) uint64_t mutex_lock(int search_radius) {
  const bool heavy = is_mutex_heavy_period(time(nullptr), g_settings.mutex_period_seconds);
  return spin_cpu(units_ns(search_radius, heavy ? kMutexHeavyUnits : kMutexLightUnits), 0x6d75746578ull);
}

__attribute__((noinline)) uint64_t check_driver_availability(int search_radius) {
  uint64_t drivers = spin_cpu(units_ns(search_radius, kDriverCheckUnits), 0x64726976ull);
  drivers ^= mutex_lock(search_radius);
  return drivers;
}

__attribute__((noinline)) uint64_t find_nearest_vehicle(int search_radius, const char* vehicle) {
  pyroscope::tag_scope vehicle_tag{"vehicle", vehicle};
  uint64_t nearest = spin_cpu(units_ns(search_radius, 1.0), reinterpret_cast<uintptr_t>(vehicle));
  if (g_checks_drivers) nearest ^= check_driver_availability(search_radius);
  return nearest;
}

__attribute__((noinline)) Ride order_bike(int search_radius) {
  return Ride{"bike", find_nearest_vehicle(search_radius, "bike")};
}

__attribute__((noinline)) Ride order_car(int search_radius) {
  return Ride{"car", find_nearest_vehicle(search_radius, "car")};
}

__attribute__((noinline)) Ride order_scooter(int search_radius) {
  return Ride{"scooter", find_nearest_vehicle(search_radius, "scooter")};
}

// Receipts keyed by ride id, then an index from month to ride ids: every ride costs a map node, its id,
// a receipt grown field by field (several reallocations), the route it took (48 GPS points, one 768-byte
// block) and the index's copy of the id.
struct HistoryEntry {
  std::string receipt;
  std::vector<std::pair<double, double>> route;
};

__attribute__((noinline)) uint64_t build_ride_history(int rides) {
  static const char* const kVehicles[] = {"car", "bike", "scooter"};
  std::map<std::string, HistoryEntry> history;
  std::map<std::string, std::vector<std::string>> by_month;
  uint64_t x = 0x72696465ull ^ uint64_t(rides);
  for (int i = 0; i < rides; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::string id = "ride-" + g_settings.region + "-" + std::to_string(1000000 + i);
    HistoryEntry entry;
    entry.receipt = "vehicle: " + std::string(kVehicles[x % 3]);
    entry.receipt += ", driver: driver-" + std::to_string(x % 5000);
    entry.receipt += ", fare: " + std::to_string(5 + x % 60) + "." + std::to_string(10 + (x >> 32) % 90) + " USD";
    entry.route.resize(48);
    for (size_t p = 0; p < entry.route.size(); p++)
      entry.route[p] = {double((x >> 8) % 90) + 0.001 * double(p), double((x >> 24) % 180) - 0.001 * double(p)};
    std::string month = "2026-" + std::to_string(1 + (x >> 40) % 12);
    by_month[month].push_back(id);
    history.emplace(std::move(id), std::move(entry));
  }
  uint64_t length = 0;
  for (const auto& [id, entry] : history) length += id.size() + entry.receipt.size() + entry.route.size();
  return length + by_month.size();
}

// Named handlers rather than lambdas: the flame graph shows handle_car(...) instead of
// std::_Function_handler<..., add_rideshare_routes(httplib::Server*)::{lambda(...)#2}>::_M_invoke.
__attribute__((noinline)) static void handle_bike(const httplib::Request&, httplib::Response& response) {
  response.set_content(describe(order_bike(1)), "text/plain");
}

__attribute__((noinline)) static void handle_car(const httplib::Request&, httplib::Response& response) {
  response.set_content(describe(order_car(3)), "text/plain");
}

__attribute__((noinline)) static void handle_scooter(const httplib::Request&, httplib::Response& response) {
  response.set_content(describe(order_scooter(2)), "text/plain");
}

__attribute__((noinline)) static void handle_history(const httplib::Request&, httplib::Response& response) {
  const uint64_t length = build_ride_history(kHistoryRides);
  response.set_content(std::to_string(kHistoryRides) + " rides in " + g_settings.region + ", " +
                           std::to_string(length) + " receipt bytes and route points\n",
                       "text/plain");
}

void add_rideshare_routes(httplib::Server* server) {
  server->Get("/bike", handle_bike);
  server->Get("/car", handle_car);
  server->Get("/scooter", handle_scooter);
  server->Get("/history", handle_history);
  server->Get("/", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ride-sharing-app region=" + g_settings.region + "\n", "text/plain");
  });
}
