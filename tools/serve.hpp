// pyro serve: a Pyroscope-compatible ingest server with the live viewer (docs/serve.md).
//
//   pyro serve --data DIR [--bind 127.0.0.1:4040] [--token TOKEN] [--retention 30d] [--viewer DIR]
//
// One process on cpp-httplib: POST /ingest and POST /push.v1.PusherService/Push as Grafana Pyroscope
// reads them (serve_ingest.hpp), hourly .pyro files in DIR (serve_store.hpp), a small JSON API and the
// browser viewer's files for the served viewer.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace pyroscope::serve {

// The `pyro serve` command: options by name ("--data" -> DIR) and flags ("--fsync"), as pyro's
// argument parser collects them. Returns the process exit code (0 after SIGINT/SIGTERM, 1 when the
// server cannot start, 2 for a usage error).
int serve_command(const std::map<std::string, std::string>& values, const std::set<std::string>& flags);

// pyro's option table rows for the command: {name, value name or nullptr, help}.
struct ServeOption {
  const char* name;
  const char* value_name;
  const char* help;
};
const std::vector<ServeOption>& serve_options();

}  // namespace pyroscope::serve
