// The ride-sharing service of Pyroscope's classic walkthrough, in C++: what each endpoint does.
// The function names are the ones the walkthrough's flame graphs show (order_car, find_nearest_vehicle,
// check_driver_availability, mutex_lock), so the analysis in docs/walkthrough.md reads the same.
#ifndef RIDESHARE_HPP_INCLUDED
#define RIDESHARE_HPP_INCLUDED

#include <cstdint>
#include <string>

namespace httplib {
class Server;
}

struct RideshareSettings {
  std::string region = "us-east";
  // CPU time one unit of search radius costs. Thread CPU time, not wall time, so a request costs the
  // same however busy the machine is, and the profile's shares match the design below.
  int64_t work_unit_ns = 1000000;
  // eu-north's mutex_lock is heavy during [k*2p, k*2p + p) and light during the next p seconds of the
  // unix clock: every process agrees on the phase, and a period that is a multiple of 10 s fills
  // whole profile blocks.
  int64_t mutex_period_seconds = 60;
};

// Call once before serving; the request threads only read the settings.
void configure_rideshare(const RideshareSettings& settings);
const RideshareSettings& rideshare_settings();

// Per request, in units of work_unit_ns times the search radius r:
//   find_nearest_vehicle: r           (every region)
//   check_driver_availability: r / 2  (eu-north only)
//   mutex_lock: 3.5 r in heavy periods, r / 10 in light ones (eu-north only)
// so in eu-north mutex_lock is 3.5 / 5 = 70% of the CPU in heavy periods and 0.1 / 1.6 ≈ 6% in light.
constexpr double kMutexHeavyUnits = 3.5;
constexpr double kMutexLightUnits = 0.1;
constexpr double kDriverCheckUnits = 0.5;

// What an order found. (Not a std::string: a function returning one demangles as
// order_car[abi:cxx11](int), and an out-parameter would put std::__cxx11::basic_string<...>* into every
// flame graph label.)
struct Ride {
  const char* vehicle;
  uint64_t vehicle_id;
};
Ride order_bike(int search_radius);
Ride order_car(int search_radius);
Ride order_scooter(int search_radius);
// Each returns a value derived from its work, so the compiler has to do the work.
uint64_t find_nearest_vehicle(int search_radius, const char* vehicle);
uint64_t check_driver_availability(int search_radius);
uint64_t mutex_lock(int search_radius);

// GET /history: the rider's past rides, one receipt and route each, grouped by month. The memory view's
// endpoint: it allocates on purpose (std::map nodes, receipt strings grown piece by piece, a route
// vector per ride, the month index), about 0.5 MB per request for 500 rides, and costs little CPU
// (~0.3 ms), so the CPU walkthrough reads as before. Returns the length of the receipts and routes.
constexpr int kHistoryRides = 500;
uint64_t build_ride_history(int rides);

bool is_mutex_heavy_period(int64_t unix_seconds, int64_t period_seconds);
int64_t thread_cpu_time_ns();

// GET /bike, /car, /scooter (the orders), GET /history (the rider's past rides) and GET / (which region
// this is, for health checks).
void add_rideshare_routes(httplib::Server* server);

#endif  // RIDESHARE_HPP_INCLUDED
