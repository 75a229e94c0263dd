// A workload for tools/tests/clients_test.py: pyroscope.hpp's own sampler profiles it and pushes
// each 10 s block to the pyro serve given as the first argument (Config::server_address), for the
// seconds given as the second. Its CPU goes to hot_cpp_function, tagged vehicle=car (tag_scope).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "pyroscope.hpp"

volatile unsigned long sink;

__attribute__((noinline)) void hot_cpp_function(std::chrono::steady_clock::time_point until) {
  while (std::chrono::steady_clock::now() < until)
    for (unsigned long i = 0; i < 100000; ++i) sink = sink + i * i;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: hpp_client SERVER_ADDRESS SECONDS OUTPUT.pyro\n");
    return 2;
  }
  pyroscope::Config config;
  config.application_name = "cppclient";
  config.tags = {{"region", "eu-north"}};
  config.server_address = argv[1];
  config.output_path = argv[3];
  config.log = [](pyroscope::LogLevel, const std::string& message) { std::fprintf(stderr, "pyroscope: %s\n", message.c_str()); };
  const pyroscope::Status started = pyroscope::start(config);
  if (!started.ok()) {
    std::fprintf(stderr, "start: %s\n", started.to_string().c_str());
    return 1;
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(std::atoi(argv[2]));
  while (std::chrono::steady_clock::now() < end) {
    pyroscope::tag_scope vehicle{"vehicle", "car"};
    hot_cpp_function(std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
  }
  const pyroscope::Status stopped = pyroscope::stop();
  if (!stopped.ok()) {
    std::fprintf(stderr, "stop: %s\n", stopped.to_string().c_str());
    return 1;
  }
  return 0;
}
