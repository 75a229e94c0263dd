// rideshare: one region of the ride-sharing service, profiled by pyroscope.hpp.
//
//   REGION=eu-north PORT=5002 ./rideshare            # writes rideshare-eu-north.pyro
//   ./rideshare --region us-east --port 5001 --output out/us-east.pyro
//
// Every setting is a flag or an environment variable (the flag wins), except the address to listen on,
// which is only a flag (default 127.0.0.1); --help lists them. SIGINT or
// SIGTERM stops the server, then the profiler writes the partial block and closes the file.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "pyroscope.hpp"
#include "rideshare.hpp"

namespace {

struct Options {
  RideshareSettings service;
  std::string host = "127.0.0.1";
  int port = 5000;
  std::string output_path;     // default rideshare-<region>.pyro
  std::string server_address;  // optional Pyroscope server to push each block to
};

const char kUsage[] =
    "usage: rideshare [options]\n"
    "  --region NAME        static tag region (env REGION; default us-east). eu-north has the\n"
    "                       check_driver_availability -> mutex_lock hot spot\n"
    "  --port N             port to listen on (env PORT; default 5000)\n"
    "  --host ADDR          address to bind (default 127.0.0.1; a flag only: shells and containers\n"
    "                       export HOST for other purposes, and it must not open the service)\n"
    "  --output PATH        profile file (env PYROSCOPE_OUTPUT; default rideshare-<region>.pyro)\n"
    "  --server-address URL also push every block to a Pyroscope server's /ingest\n"
    "                       (env PYROSCOPE_SERVER_ADDRESS; default none)\n"
    "  --mutex-period S     seconds of each heavy and each light mutex_lock period\n"
    "                       (env MUTEX_PERIOD_SECONDS; default 60)\n"
    "  --work-unit-us N     CPU microseconds per unit of search radius (env WORK_UNIT_US; default 1000)\n"
    "Environment: PYROSCOPE_WALL_CLOCK=1 also samples wall-clock time (series ride-sharing-app.wall).\n";

bool parse_int(const std::string& text, int64_t min, int64_t max, int64_t* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max) return false;
  *out = v;
  return true;
}

// Fills *options from the environment, then from argv. Returns false after printing what is wrong.
bool parse_options(int argc, char** argv, Options* options) {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  std::string region = env("REGION"), port = env("PORT"), host;
  std::string output = env("PYROSCOPE_OUTPUT"), server = env("PYROSCOPE_SERVER_ADDRESS");
  std::string period = env("MUTEX_PERIOD_SECONDS"), unit = env("WORK_UNIT_US");
  std::string port_source = "PORT", period_source = "MUTEX_PERIOD_SECONDS", unit_source = "WORK_UNIT_US";
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    struct Flag {
      const char* name;
      std::string* value;
      std::string* source;
    } flags[] = {{"--region", &region, nullptr},          {"--port", &port, &port_source},
                 {"--host", &host, nullptr},              {"--output", &output, nullptr},
                 {"--server-address", &server, nullptr},  {"--mutex-period", &period, &period_source},
                 {"--work-unit-us", &unit, &unit_source}};
    bool known = false;
    for (Flag& flag : flags) {
      if (arg != flag.name) continue;
      if (i + 1 >= argc) {
        std::fprintf(stderr, "rideshare: %s needs a value\n%s", flag.name, kUsage);
        return false;
      }
      *flag.value = argv[++i];
      if (flag.source) *flag.source = flag.name;
      known = true;
    }
    if (!known) {
      std::fprintf(stderr, "rideshare: unknown argument '%s'\n%s", arg.c_str(), kUsage);
      return false;
    }
  }
  if (!region.empty()) options->service.region = region;
  if (!host.empty()) options->host = host;
  int64_t v = 0;
  if (!port.empty()) {
    if (!parse_int(port, 1, 65535, &v)) {
      std::fprintf(stderr, "rideshare: %s '%s' is not a port number (1..65535)\n", port_source.c_str(), port.c_str());
      return false;
    }
    options->port = int(v);
  }
  if (!period.empty()) {
    if (!parse_int(period, 1, 86400, &v)) {
      std::fprintf(stderr, "rideshare: %s '%s' is not a number of seconds (1..86400)\n", period_source.c_str(),
                   period.c_str());
      return false;
    }
    options->service.mutex_period_seconds = v;
  }
  if (!unit.empty()) {
    if (!parse_int(unit, 1, 1000000, &v)) {
      std::fprintf(stderr, "rideshare: %s '%s' is not a number of microseconds (1..1000000)\n",
                   unit_source.c_str(), unit.c_str());
      return false;
    }
    options->service.work_unit_ns = v * 1000;
  }
  options->output_path = output.empty() ? "rideshare-" + options->service.region + ".pyro" : output;
  options->server_address = server;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parse_options(argc, argv, &options)) return 2;
  const std::string& region = options.service.region;
  configure_rideshare(options.service);

  // SIGINT and SIGTERM are blocked in every thread (threads inherit the mask, so block them before the
  // profiler and the server start theirs) and taken by one waiting thread, which can then call
  // Server::stop(), something a signal handler must not do.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  pyroscope::Config config;
  config.application_name = "ride-sharing-app";
  config.tags = {{"region", region}};
  config.output_path = options.output_path;
  config.server_address = options.server_address;
  const char* wall_clock = std::getenv("PYROSCOPE_WALL_CLOCK");
  config.wall_clock = wall_clock != nullptr && std::string(wall_clock) == "1";
  config.log = [region](pyroscope::LogLevel level, const std::string& message) {
    static const char* const names[] = {"debug", "info", "warning", "error"};
    std::fprintf(stderr, "rideshare %s: pyroscope %s: %s\n", region.c_str(), names[int(level)], message.c_str());
  };
  pyroscope::Profiler profiler(config);
  if (!profiler.status().ok()) {
    std::fprintf(stderr, "rideshare %s: cannot start the profiler: %s\n", region.c_str(),
                 profiler.status().to_string().c_str());
    return 1;
  }

  httplib::Server server;
  server.set_tcp_nodelay(true);  // small responses on kept-alive connections: no Nagle delay
  add_rideshare_routes(&server);
  if (!server.bind_to_port(options.host, options.port)) {
    std::fprintf(stderr, "rideshare %s: cannot listen on %s:%d: %s\n", region.c_str(), options.host.c_str(),
                 options.port, std::strerror(errno));
    return 1;
  }

  std::atomic<bool> listen_returned{false};
  std::thread stopper([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    // stop() is a no-op until listen_after_bind() has marked the server running, so a signal that
    // arrives right at start-up is retried until the server has really stopped.
    while (!listen_returned.load()) {
      server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  std::string no_allocations;
  const bool allocations = pyroscope::allocation_profiling_compiled(&no_allocations);
  std::printf("rideshare %s: listening on http://%s:%d, profiling to %s (mutex period %lld s; allocations: %s)\n",
              region.c_str(), options.host.c_str(), options.port, options.output_path.c_str(),
              static_cast<long long>(options.service.mutex_period_seconds),
              allocations ? "sampled" : ("off, " + no_allocations).c_str());
  std::fflush(stdout);
  const bool served = server.listen_after_bind();
  listen_returned.store(true);
  pthread_kill(stopper.native_handle(), SIGTERM);  // wakes the waiter if no signal came (listen failed)
  stopper.join();

  // Profiler's destructor would stop too; stopping here reports whether the last block was written.
  pyroscope::Status stopped = pyroscope::stop();
  if (!stopped.ok()) {
    std::fprintf(stderr, "rideshare %s: stopping the profiler: %s\n", region.c_str(), stopped.to_string().c_str());
    return 1;
  }
  std::printf("rideshare %s: stopped; profile in %s\n", region.c_str(), options.output_path.c_str());
  return served ? 0 : 1;
}
