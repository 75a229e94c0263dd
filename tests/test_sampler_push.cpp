// Push to a Pyroscope server (issue 3): exact /ingest requests seen by a local HTTP receiver
// (cpp-httplib, test only), retries with backoff, dropped rejects, and a down or silent server that
// never holds the application or stop() up for long.
// pyroscope-test: serial timeout=240 link=cpp-httplib group=internals
#define PYROSCOPE_IMPLEMENTATION
#include "sampler_test_support.hpp"

#include <doctest/doctest.h>
#include <httplib.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace sampler_test;

// Burns CPU on this thread until `seconds` of wall time have passed (so several 1 s blocks fill).
void burn_wall(double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) burn_cpu(0.01);
}

// Burns CPU until `seconds` of wall time have passed and the sampler has taken `signals` samples since
// the call (at most 30 s): under CPU contention a fixed time can pass with few samples (see
// run_until_sampled).
void burn_wall_sampled(double seconds, uint64_t signals) {
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  const auto cap = start + std::chrono::seconds(30);
  const uint64_t before = pyroscope::detail::sampler_stats().samples;
  while (std::chrono::steady_clock::now() < cap &&
         (std::chrono::steady_clock::now() < end || pyroscope::detail::sampler_stats().samples - before < signals))
    burn_cpu(0.01);
}

pyroscope::Config push_config(const char* app, const std::string& path, const std::string& server) {
  pyroscope::Config config = test_config(app, path);
  config.flush_interval_seconds = 1;
  config.server_address = server;
  return config;
}

struct Received {
  std::string target;
  std::string path;
  httplib::Params params;
  std::string body;
  std::string content_type;
  std::string host;
  std::string content_length;
  std::string user_agent;
};

// A local /ingest endpoint that records every request and answers with scripted status codes.
class Receiver {
 public:
  explicit Receiver(std::vector<int> scripted_statuses = {}) : scripted_(std::move(scripted_statuses)) {
    server_.Post("/ingest", [this](const httplib::Request& request, httplib::Response& response) {
      std::lock_guard<std::mutex> lock(mutex_);
      Received r;
      r.target = request.target;
      r.path = request.path;
      r.params = request.params;
      r.body = request.body;
      r.content_type = request.get_header_value("Content-Type");
      r.host = request.get_header_value("Host");
      r.content_length = request.get_header_value("Content-Length");
      r.user_agent = request.get_header_value("User-Agent");
      requests_.push_back(std::move(r));
      const size_t i = requests_.size() - 1;
      response.status = i < scripted_.size() ? scripted_[i] : 200;
      response.set_content("", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    // bind_to_any_port already listens: connections queue until the thread accepts them.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  std::string address() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  std::vector<Received> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mutex_;
  std::vector<Received> requests_;
  std::vector<int> scripted_;
};

std::string param(const httplib::Params& params, const std::string& key) {
  auto it = params.find(key);
  return it == params.end() ? std::string("<missing>") : it->second;
}

// Sum of the counts of Pyroscope's folded format (each line split at its last space).
long long folded_total(const std::string& body, bool* well_formed) {
  long long total = 0;
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find_first_not_of("0123456789", space + 1) != std::string::npos) {
      *well_formed = false;
      continue;
    }
    total += std::atoll(line.c_str() + space + 1);
  }
  return total;
}

// A port with nothing listening (bound, then closed).
int closed_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// Half the samples that cpu_seconds of this thread's CPU time should give at 250 Hz (at least 10): how
// much CPU the test gets depends on what else runs on the machine, the sampling rate does not.
uint64_t expected_samples(double cpu_seconds) {
  return std::max<uint64_t>(10, static_cast<uint64_t>(cpu_seconds * 250 / 2));
}

}  // namespace

TEST_CASE("push: server addresses and series names") {
  using pyroscope::detail::HttpEndpoint;
  using pyroscope::detail::parse_http_endpoint;
  HttpEndpoint e;
  REQUIRE(parse_http_endpoint("http://localhost:4040", &e).ok());
  CHECK(e.host == "localhost");
  CHECK(e.port == "4040");
  CHECK(e.base_path.empty());
  CHECK(e.host_header == "localhost:4040");
  REQUIRE(parse_http_endpoint("http://pyroscope.example/prefix/", &e).ok());
  CHECK(e.port == "80");
  CHECK(e.base_path == "/prefix");
  REQUIRE(parse_http_endpoint("http://[::1]:4040", &e).ok());
  CHECK(e.host == "::1");
  CHECK(e.port == "4040");
  CHECK(parse_http_endpoint("https://x", &e).code() == pyroscope::StatusCode::unsupported);
  CHECK(parse_http_endpoint("ftp://x", &e).code() == pyroscope::StatusCode::invalid_argument);
  CHECK(parse_http_endpoint("http://:4040", &e).code() == pyroscope::StatusCode::invalid_argument);
  CHECK(parse_http_endpoint("http://host:99999", &e).code() == pyroscope::StatusCode::invalid_argument);
  CHECK(parse_http_endpoint("http://host:port", &e).code() == pyroscope::StatusCode::invalid_argument);
  CHECK(parse_http_endpoint("http://user:pw@host", &e).code() == pyroscope::StatusCode::invalid_argument);

  CHECK(pyroscope::detail::url_encode("app.cpu{a=b,c=d}") == "app.cpu%7Ba%3Db%2Cc%3Dd%7D");
  const pyroscope::SeriesKey key("ride-sharing-app", {{"vehicle", "car"}, {"region", "eu-north"}});
  CHECK(pyroscope::detail::ingest_series_name(key) == "ride-sharing-app.cpu{region=eu-north,vehicle=car}");
  REQUIRE(parse_http_endpoint("http://localhost:4040", &e).ok());
  CHECK(pyroscope::detail::ingest_target(e, key, 1700000000, 1700000010, 100,
                                         pyroscope::detail::sampler_series_info("cpu", 10000000)) ==
        "/ingest?name=ride-sharing-app.cpu%7Bregion%3Deu-north%2Cvehicle%3Dcar%7D&from=1700000000&until=1700000010"
        "&format=folded&sampleRate=100&spyName=pyroscope-cpp&units=samples&aggregationType=sum");
  // The allocation types: bytes or objects, inuse_* averaged (Pyroscope's ingest API, as for Go heap profiles).
  const pyroscope::SeriesKey inuse("ride-sharing-app", "inuse_space", {{"region", "eu-north"}});
  CHECK(pyroscope::detail::ingest_target(e, inuse, 1700000000, 1700000010, 100,
                                         pyroscope::default_series_info("inuse_space")) ==
        "/ingest?name=ride-sharing-app.inuse_space%7Bregion%3Deu-north%7D&from=1700000000&until=1700000010"
        "&format=folded&sampleRate=100&spyName=pyroscope-cpp&units=bytes&aggregationType=average");
  const pyroscope::SeriesKey objects("ride-sharing-app", "alloc_objects", {});
  CHECK(pyroscope::detail::ingest_target(e, objects, 1700000000, 1700000010, 100,
                                         pyroscope::default_series_info("alloc_objects")) ==
        "/ingest?name=ride-sharing-app.alloc_objects%7B%7D&from=1700000000&until=1700000010"
        "&format=folded&sampleRate=100&spyName=pyroscope-cpp&units=objects&aggregationType=sum");
}

TEST_CASE("push: every block is POSTed to /ingest with the exact query, the same samples as the file") {
  Receiver receiver;
  const std::string path = fresh_path("push");
  pyroscope::Config config = push_config("push-test", path, receiver.address());
  config.tags = {{"region", "eu"}};
  REQUIRE(pyroscope::start(config).ok());
  std::thread worker([] {
    burn_wall_sampled(1.2, 5);
    pyroscope::tag_scope vehicle("vehicle", "car");
    burn_wall_sampled(1.2, 5);
  });
  worker.join();
  REQUIRE(pyroscope::stop().ok());

  const std::vector<Received> requests = receiver.requests();
  MESSAGE(requests.size() << " requests");
  REQUIRE(requests.size() >= 2);
  long long pushed = 0;
  std::set<std::string> names;
  std::set<std::pair<std::string, std::string>> blocks;  // (name, from): each block once
  for (const Received& r : requests) {
    CHECK(r.path == "/ingest");
    const std::string name = param(r.params, "name");
    names.insert(name);
    const long long from = std::atoll(param(r.params, "from").c_str());
    const long long until = std::atoll(param(r.params, "until").c_str());
    CHECK(from > 1600000000);
    CHECK(until > from);
    CHECK(until <= from + 1);  // one 1 s block per request
    CHECK(blocks.insert({name, param(r.params, "from")}).second);
    const std::string expected_target = "/ingest?name=" + pyroscope::detail::url_encode(name) +
                                        "&from=" + std::to_string(from) + "&until=" + std::to_string(until) +
                                        "&format=folded&sampleRate=250&spyName=pyroscope-cpp&units=samples"
                                        "&aggregationType=sum";
    CHECK(r.target == expected_target);
    CHECK(r.content_type == "text/plain");
    CHECK(r.host == "127.0.0.1:" + std::to_string(receiver.port()));
    CHECK(r.content_length == std::to_string(r.body.size()));
    CHECK(r.user_agent.rfind("pyroscope-cpp/", 0) == 0);
    bool well_formed = true;
    const long long total = folded_total(r.body, &well_formed);
    CHECK(well_formed);
    CHECK(total > 0);
    pushed += total;
  }
  CHECK(names == std::set<std::string>{"push-test.cpu{region=eu}", "push-test.cpu{region=eu,vehicle=car}"});
  const uint64_t stored = query_file(path, "push-test{}").tree.total();
  MESSAGE("pushed " << pushed << " samples, stored " << stored);
  CHECK(static_cast<uint64_t>(pushed) == stored);
  // The folded text names the workload's frames (the body is the block's tree).
  bool has_burn = false;
  for (const Received& r : requests) has_burn = has_burn || r.body.find("burn_cpu(double)") != std::string::npos;
  CHECK(has_burn);
}

TEST_CASE("push: a rejected batch is dropped, a failed one is retried with backoff") {
  Receiver receiver({400, 503});
  const std::string path = fresh_path("push-retry");
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::start(push_config("push-retry", path, receiver.address())).ok());
  // The retry comes 0.75-1.25 s after the failure. Work goes on until three requests came (at most
  // 30 s): under CPU contention a 1 s block can pass without a sample, and then without a request.
  const auto cap = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (receiver.requests().size() < 3 && std::chrono::steady_clock::now() < cap) burn_cpu(0.01);
  REQUIRE(pyroscope::stop().ok());
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  const std::vector<Received> requests = receiver.requests();
  REQUIRE(requests.size() >= 3);
  // The 503'd batch comes again as the next request; the 400'd one never does.
  CHECK(requests[2].target == requests[1].target);
  for (size_t i = 1; i < requests.size(); i++) CHECK(requests[i].target != requests[0].target);
  CHECK(after.push_failed - before.push_failed == 2);
  CHECK(after.push_dropped - before.push_dropped == 1);
  CHECK(after.push_sent - before.push_sent == requests.size() - 2);
}

TEST_CASE("push: an unreachable server costs the application nothing") {
  const std::string path = fresh_path("push-down");
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::start(push_config("push-down", path, "http://127.0.0.1:" + std::to_string(closed_port()))).ok());
  const double cpu_before = thread_cpu_seconds();
  burn_wall(2.5);
  const uint64_t samples_due = expected_samples(thread_cpu_seconds() - cpu_before);
  const auto stop_started = std::chrono::steady_clock::now();
  REQUIRE(pyroscope::stop().ok());
  const double stop_seconds = seconds_since(stop_started);
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  MESSAGE("stop() took " << stop_seconds << " s; failed attempts " << after.push_failed - before.push_failed);
  CHECK(stop_seconds < 4.0);
  CHECK(after.push_failed > before.push_failed);
  CHECK(after.push_sent == before.push_sent);
  CHECK(query_file(path, "push-down{}").tree.total() >= samples_due);  // the file is complete regardless
}

TEST_CASE("push: a server that accepts but never answers does not hold stop() up") {
  // Listening socket that never calls accept(): connections complete in the kernel's backlog, the
  // request is buffered, the answer never comes.
  sockaddr_in address;
  const int listener = listen_on_loopback(64, &address);
  const std::string path = fresh_path("push-silent");
  const pyroscope::detail::SamplerStats before = pyroscope::detail::sampler_stats();
  REQUIRE(pyroscope::start(push_config("push-silent", path,
                                       "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port))))
              .ok());
  const auto work_started = std::chrono::steady_clock::now();
  const double cpu_before = thread_cpu_seconds();
  burn_wall(2.5);
  const uint64_t samples_due = expected_samples(thread_cpu_seconds() - cpu_before);
  const double work_seconds = seconds_since(work_started);
  const auto stop_started = std::chrono::steady_clock::now();
  REQUIRE(pyroscope::stop().ok());
  const double stop_seconds = seconds_since(stop_started);
  const pyroscope::detail::SamplerStats after = pyroscope::detail::sampler_stats();
  MESSAGE("stop() took " << stop_seconds << " s; batches dropped " << after.push_dropped - before.push_dropped);
  CHECK(work_seconds < 3.5);
  CHECK(stop_seconds < 4.5);  // the push budget at stop is 3 s
  CHECK(after.push_sent == before.push_sent);
  CHECK(after.push_dropped > before.push_dropped);
  CHECK(query_file(path, "push-silent{}").tree.total() >= samples_due);
  close(listener);
}
