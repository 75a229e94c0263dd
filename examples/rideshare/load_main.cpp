// rideshare-load: calls /bike, /car, /scooter and /history of every rideshare server given, at a steady rate,
// for a bounded time, then prints what each server answered.
//
//   ./rideshare-load --duration 180 127.0.0.1:5001 127.0.0.1:5002 127.0.0.1:5003
//
// One client thread per server, each sending one request at a time: a server never has more than one
// request of ours in flight, so the load stays within one core per server whatever the rate.
// SIGINT or SIGTERM ends the run early (and still prints the summary).
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

const char kUsage[] =
    "usage: rideshare-load [options] HOST:PORT...\n"
    "  --duration S   seconds to run (default 60)\n"
    "  --rate R       requests per second to each server, to /bike, /car or /scooter at random (3 in 10\n"
    "                 each) or /history (1 in 10) (default 45)\n"
    "  --wait S       seconds to wait for each server to answer GET / before giving up (default 15)\n";

const char* const kEndpoints[] = {"/bike", "/car", "/scooter", "/history"};
constexpr int kEndpointCount = 4;
// The orders equally often (the walkthrough's 3:2:1 CPU ratio of car, scooter and bike comes from
// their search radii), the rider's history (the memory view's allocations) one request in ten.
const double kEndpointWeights[kEndpointCount] = {3, 3, 3, 1};

struct Target {
  std::string host;
  int port = 0;
  std::string name;  // host:port, then the region the server reports
  uint64_t ok[kEndpointCount] = {};
  uint64_t failed[kEndpointCount] = {};
  double seconds[kEndpointCount] = {};
  std::string first_error;
  bool reached = false;
};

std::mutex g_mutex;
std::condition_variable g_wake;
bool g_stop = false;  // guarded by g_mutex

// Sleeps until `until` or until the run stops; returns false when it stopped.
bool sleep_until(Clock::time_point until) {
  std::unique_lock<std::mutex> lock(g_mutex);
  return !g_wake.wait_until(lock, until, [] { return g_stop; });
}

bool stopping() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_stop;
}

void drive(Target* target, double rate, double wait_seconds) {
  httplib::Client client(target->host, target->port);
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);  // small requests on a kept-alive connection: no Nagle delay
  client.set_connection_timeout(2);
  client.set_read_timeout(30);

  const Clock::time_point give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                        std::chrono::duration<double>(wait_seconds));
  while (true) {
    httplib::Result hello = client.Get("/");
    if (hello && hello->status == 200) {
      std::string body = hello->body;
      size_t at = body.find("region=");
      if (at != std::string::npos) {
        std::string region = body.substr(at + 7);
        while (!region.empty() && (region.back() == '\n' || region.back() == '\r')) region.pop_back();
        target->name = region + " (" + target->name + ")";
      }
      target->reached = true;
      break;
    }
    if (Clock::now() >= give_up) {
      target->first_error = hello ? "GET / answered " + std::to_string(hello->status)
                                  : "GET / failed: " + httplib::to_string(hello.error());
      return;
    }
    if (!sleep_until(Clock::now() + std::chrono::milliseconds(100))) return;
  }

  // Endpoints in random order, not round robin: the sampler takes a sample every 10 ms of a thread's
  // CPU time, and a fixed bike, car, scooter cycle whose CPU cost is close to a multiple of 10 ms would
  // be sampled at the same point of the cycle again and again (aliasing), skewing the shares.
  std::mt19937 random(std::random_device{}());
  std::discrete_distribution<int> pick(std::begin(kEndpointWeights), std::end(kEndpointWeights));
  const Clock::duration interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate));
  Clock::time_point next = Clock::now();
  while (!stopping()) {
    const int endpoint = pick(random);
    const Clock::time_point sent = Clock::now();
    httplib::Result result = client.Get(kEndpoints[endpoint]);
    const double took = std::chrono::duration<double>(Clock::now() - sent).count();
    if (result && result->status == 200) {
      target->ok[endpoint]++;
      target->seconds[endpoint] += took;
    } else {
      target->failed[endpoint]++;
      if (target->first_error.empty()) {
        target->first_error = std::string("GET ") + kEndpoints[endpoint] + ": " +
                              (result ? "status " + std::to_string(result->status)
                                      : httplib::to_string(result.error()));
      }
    }
    // A steady schedule; a server that falls behind is not flooded with a burst to catch up.
    next += interval;
    const Clock::time_point now = Clock::now();
    if (next < now - std::chrono::seconds(1)) next = now;
    if (!sleep_until(next)) break;
  }
}

bool parse_number(const char* text, double min, double max, double* out) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(v >= min && v <= max)) return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  double duration = 60, rate = 45, wait_seconds = 15;
  std::vector<Target> targets;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    double* value = arg == "--duration" ? &duration : arg == "--rate" ? &rate : arg == "--wait" ? &wait_seconds : nullptr;
    if (value) {
      const double max = arg == "--rate" ? 10000 : 7 * 86400;
      const double min = arg == "--wait" ? 0 : 0.001;
      if (i + 1 >= argc || !parse_number(argv[i + 1], min, max, value)) {
        std::fprintf(stderr, "rideshare-load: %s needs a number in [%g, %g]%s%s\n", arg.c_str(), min, max,
                     i + 1 < argc ? ", got " : "", i + 1 < argc ? argv[i + 1] : "");
        return 2;
      }
      i++;
      continue;
    }
    if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "rideshare-load: unknown option '%s'\n%s", arg.c_str(), kUsage);
      return 2;
    }
    const size_t colon = arg.rfind(':');
    double port = 0;
    if (colon == std::string::npos || colon == 0 || !parse_number(arg.c_str() + colon + 1, 1, 65535, &port) ||
        port != double(int(port))) {
      std::fprintf(stderr, "rideshare-load: '%s' is not HOST:PORT\n", arg.c_str());
      return 2;
    }
    Target target;
    target.host = arg.substr(0, colon);
    target.port = int(port);
    target.name = arg;
    targets.push_back(target);
  }
  if (targets.empty()) {
    std::fprintf(stderr, "rideshare-load: no server given\n%s", kUsage);
    return 2;
  }

  // The main thread takes SIGINT/SIGTERM with sigtimedwait; the clients (created after this) never see them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::printf("rideshare-load: %zu servers, %g requests/s each, for %g s\n", targets.size(), rate, duration);
  std::fflush(stdout);
  const Clock::time_point started = Clock::now();
  const Clock::time_point end =
      started + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration));
  std::vector<std::thread> clients;
  std::atomic<size_t> running{targets.size()};
  for (Target& target : targets) {
    clients.emplace_back([&running, &target, rate, wait_seconds] {
      drive(&target, rate, wait_seconds);
      running--;
    });
  }

  bool interrupted = false;
  // Wakes twice a second to notice clients that gave up (a server that never came up).
  for (Clock::time_point now = Clock::now(); now < end && running.load() > 0; now = Clock::now()) {
    const auto left = std::min<int64_t>(500000000, std::chrono::duration_cast<std::chrono::nanoseconds>(end - now).count());
    timespec timeout{time_t(left / 1000000000), long(left % 1000000000)};
    if (sigtimedwait(&stop_signals, nullptr, &timeout) > 0) {
      interrupted = true;
      break;
    }
  }
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_stop = true;
  }
  g_wake.notify_all();
  for (std::thread& client : clients) client.join();

  const double ran = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf("rideshare-load: %s after %.1f s\n", interrupted ? "interrupted" : "done", ran);
  bool all_good = true;
  for (const Target& target : targets) {
    std::printf("  %s:", target.name.c_str());
    uint64_t failures = 0;
    for (int e = 0; e < kEndpointCount; e++) {
      const double mean_ms = target.ok[e] ? 1000 * target.seconds[e] / double(target.ok[e]) : 0;
      std::printf("  %s %llu ok (%.1f ms)", kEndpoints[e], static_cast<unsigned long long>(target.ok[e]), mean_ms);
      if (target.failed[e]) std::printf(" %llu failed", static_cast<unsigned long long>(target.failed[e]));
      failures += target.failed[e];
    }
    std::printf("\n");
    if (!target.reached || failures > 0) {
      all_good = false;
      std::printf("    error: %s\n", target.first_error.empty() ? "never answered" : target.first_error.c_str());
    }
  }
  std::fflush(stdout);
  return all_good ? 0 : 1;
}
