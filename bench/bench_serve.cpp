// bench_serve: what parsing and storing a push costs in `pyro serve` (docs/serve.md, bench/README.md).
// The same load goes, in the same run, to pyro serve and to a cpp-httplib server that only reads and
// discards the body (this program, in a child process, with the same worker count and timeouts): the
// ratio of their rates is the price of parsing and storage. Two payloads: the rideshare profile as
// folded text (~1.8 KB, examples/data/rideshare.folded) and a ~50 KB gzipped pprof (made here with
// the header's exporter). Each run: C client threads on keep-alive connections push for S seconds;
// reported: pushes/s, samples/s, p50/p99 latency, the server's peak RSS (VmHWM).
//
//   bench_serve --pyro PATH [--seconds 10] [--clients 8] [--dir DIR] [--only folded|pprof]
//   bench_serve --smoke --pyro PATH --dir DIR     (CTest: 1 s each, checks only that every push is 200)
//
// The clients run on this machine too (2 cores here): both servers share the cores with them alike.
// The implementation is linked from pyroscope_impl_reader (CMakeLists.txt): without the sampler,
// with zlib and the JSON importers.
#include "pyroscope.hpp"

#include <httplib.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size) == 0)
    port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

bool wait_for_port(int port, double seconds) {
  const double end = now_s() + seconds;
  while (now_s() < end) {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(0, 200000);
    if (auto r = c.Get("/api/info")) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Peak and current resident memory of a process, in MiB (from /proc/PID/status).
double proc_kib(pid_t pid, const char* field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.compare(0, std::strlen(field), field) == 0) return std::atof(line.c_str() + std::strlen(field) + 1) / 1024.0;
  return 0;
}

// The baseline: reads each body whole and answers 200 with nothing, as pyro serve's worker pool would
// (16 threads, 5 s timeouts, keep-alive).
int discard_server(int port) {
  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(16); };
  server.set_read_timeout(5, 0);
  server.set_write_timeout(5, 0);
  server.set_keep_alive_max_count(1000);
  server.set_tcp_nodelay(true);  // as pyro serve
  server.set_payload_max_length(uint64_t(16) << 20);
  server.Post("/ingest", [](const httplib::Request& req, httplib::Response& res) {
    res.status = 200;
    res.set_header("X-Body-Bytes", std::to_string(req.body.size()));
  });
  server.Get("/api/info", [](const httplib::Request&, httplib::Response& res) { res.set_content("{}", "application/json"); });
  return server.listen("127.0.0.1", port) ? 0 : 1;
}

struct Payload {
  std::string name;          // for the report
  std::string body;
  std::string content_type;
  uint32_t nodes = 0;        // of the profile's tree
  std::string query;         // name=...&format=...; from/until added per push
  uint64_t samples = 0;      // per push, as stored (sampleRate=0 for folded)
};

struct RunResult {
  uint64_t pushes = 0, errors = 0;
  double seconds = 0, p50_ms = 0, p99_ms = 0, peak_rss_mib = 0;
};

RunResult run_load(int port, pid_t server_pid, const Payload& payload, int clients, double seconds) {
  std::vector<std::vector<double>> latencies(static_cast<size_t>(clients));
  std::atomic<uint64_t> pushes{0}, errors{0};
  std::vector<std::thread> threads;
  const double start = now_s();
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", port);
      c.set_keep_alive(true);
      c.set_tcp_nodelay(true);  // headers and body go in two writes: without it, Nagle waits for a delayed ACK (40 ms)
      c.set_read_timeout(10, 0);
      const std::string name_tag = "client%3Dc" + std::to_string(i);
      while (now_s() - start < seconds) {
        const int64_t t = int64_t(std::time(nullptr));
        std::string target = "/ingest?" + payload.query;
        if (payload.query.find("{}") != std::string::npos) target.replace(target.find("{}"), 2, "%7B" + name_tag + "%7D");
        target += "&from=" + std::to_string(t - 10) + "&until=" + std::to_string(t);
        const double t0 = now_s();
        auto r = c.Post(target.c_str(), payload.body, payload.content_type.c_str());
        const double t1 = now_s();
        if (r && r->status == 200) {
          pushes++;
          latencies[size_t(i)].push_back((t1 - t0) * 1000);
        } else {
          errors++;
          if (errors <= 3)
            std::fprintf(stderr, "bench_serve: push failed: %s\n",
                         r ? (std::to_string(r->status) + " " + r->body.substr(0, 200)).c_str() : httplib::to_string(r.error()).c_str());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  RunResult result;
  result.seconds = now_s() - start;
  result.pushes = pushes;
  result.errors = errors;
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  if (!all.empty()) {
    result.p50_ms = all[all.size() / 2];
    result.p99_ms = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  result.peak_rss_mib = proc_kib(server_pid, "VmHWM:");
  return result;
}

pid_t spawn(const std::vector<std::string>& argv) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::perror(args[0]);
    _exit(127);
  }
  return pid;
}

void stop(pid_t pid) {
  kill(pid, SIGTERM);
  int status;
  waitpid(pid, &status, 0);
}

// A pprof of many distinct stacks (a deep service's CPU profile), gzipped, grown until ~50 KB.
Payload pprof_payload() {
  std::mt19937 rng(13);
  const char* const parts[] = {"main", "serve", "handle", "parse", "json", "decode", "encode", "db", "query",
                               "index", "lookup", "hash", "alloc", "free", "lock", "unlock", "write", "read",
                               "compress", "checksum", "sort", "merge", "render", "template"};
  Payload p;
  p.name = "pprof ~50 KB gz";
  p.content_type = "application/octet-stream";
  p.query = "name=benchpprof{}&format=pprof";
  std::string folded;
  pyroscope::Tree tree;
  while (p.body.size() < 50 * 1024) {
    for (int s = 0; s < 50; ++s) {
      std::string line = "main";
      const int depth = 6 + int(rng() % 20);
      for (int d = 0; d < depth; ++d)
        line += ";pkg" + std::to_string(rng() % 40) + "." + parts[rng() % (sizeof parts / sizeof *parts)] + "_" +
                std::to_string(rng() % 7);
      folded += line + " " + std::to_string(1 + rng() % 50) + "\n";
    }
    if (!pyroscope::Tree::from_folded(folded, &tree).ok()) std::abort();
    pyroscope::SeriesInfo info = pyroscope::default_series_info("cpu");
    info.unit = "nanoseconds";
    info.period = 10000000;
    info.period_type = "cpu";
    info.period_unit = "nanoseconds";
    pyroscope::ExportOptions options;
    options.gzip = true;
    if (!pyroscope::export_pprof({{"cpu", info, &tree}}, options, &p.body).ok()) std::abort();
  }
  p.nodes = tree.node_count();
  p.samples = tree.total();  // the sample values as they are (nanoseconds), which the server stores
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::string pyro, dir = "bench-serve-work";
  double seconds = 10;
  int clients = 8;
  bool smoke = false;
  std::string only;  // "folded" or "pprof": one payload only
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--pyro") pyro = next();
    else if (a == "--dir") dir = next();
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--clients") clients = std::atoi(next().c_str());
    else if (a == "--smoke") smoke = true;
    else if (a == "--only") only = next();
    else if (a == "--discard-server") return discard_server(std::atoi(next().c_str()));
    else {
      std::fprintf(stderr, "usage: bench_serve --pyro PATH [--seconds S] [--clients C] [--dir DIR] [--only folded|pprof] [--smoke]\n");
      return 2;
    }
  }
  if (pyro.empty()) {
    std::fprintf(stderr, "bench_serve: --pyro PATH is required\n");
    return 2;
  }
  if (smoke) seconds = 1;
  signal(SIGPIPE, SIG_IGN);

  Payload folded;
  folded.name = "folded ~1.8 KB";
  {
    std::ifstream f(PYROSCOPE_SOURCE_DIR "/examples/data/rideshare.folded", std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    folded.body = ss.str();
    pyroscope::Tree tree;
    if (folded.body.empty() || !pyroscope::Tree::from_folded(folded.body, &tree).ok()) {
      std::fprintf(stderr, "bench_serve: cannot read examples/data/rideshare.folded\n");
      return 1;
    }
    folded.samples = tree.total();
    folded.nodes = tree.node_count();
  }
  folded.content_type = "text/plain";
  folded.query = "name=rideshare.cpu{}&sampleRate=0";
  const Payload pprof = pprof_payload();

  std::printf("bench_serve: %d clients, %.0f s per run; payloads: folded %zu bytes (%u tree nodes), pprof %zu bytes "
              "gzipped (%u tree nodes)\n", clients, seconds, folded.body.size(), folded.nodes, pprof.body.size(), pprof.nodes);
  std::printf("%-16s %-8s %10s %14s %8s %8s %9s %7s\n", "payload", "server", "pushes/s", "samples/s", "p50 ms",
              "p99 ms", "peak MiB", "errors");
  int failures = 0;
  for (const Payload* payload : std::vector<const Payload*>{&folded, &pprof}) {
    if (!only.empty() && payload->name.compare(0, only.size(), only) != 0) continue;
    double discard_rate = 0;
    for (const char* which : {"discard", "pyro"}) {
      const int port = free_port();
      const std::string data = dir + "/data-" + std::to_string(port);
      std::system(("rm -rf '" + data + "'").c_str());
      const pid_t pid = std::string(which) == "pyro"
                            ? spawn({pyro, "serve", "--data", data, "--bind", "127.0.0.1:" + std::to_string(port)})
                            : spawn({"/proc/self/exe", "--discard-server", std::to_string(port)});
      if (!wait_for_port(port, 20)) {
        std::fprintf(stderr, "bench_serve: the %s server did not start\n", which);
        stop(pid);
        return 1;
      }
      const RunResult r = run_load(port, pid, *payload, clients, seconds);
      const double rate = double(r.pushes) / r.seconds;
      if (std::string(which) == "discard") discard_rate = rate;
      std::printf("%-16s %-8s %10.0f %14.3g %8.2f %8.2f %9.1f %7llu", payload->name.c_str(), which, rate,
                  rate * double(payload->samples), r.p50_ms, r.p99_ms, r.peak_rss_mib, (unsigned long long)r.errors);
      if (std::string(which) == "pyro") std::printf("   %.2fx the discard server's rate", rate / std::max(discard_rate, 1e-9));
      std::printf("\n");
      std::fflush(stdout);
      if (std::string(which) == "pyro") {
        // Every acknowledged sample is stored: ask the server itself.
        httplib::Client c("127.0.0.1", port);
        auto info = c.Get("/api/info");
        const std::string want = "\"samples\":" + std::to_string(r.pushes * payload->samples);
        if (!info || info->body.find(want) == std::string::npos) {
          std::fprintf(stderr, "bench_serve: the server's sample count is not %s: %s\n", want.c_str(),
                       info ? info->body.c_str() : "no answer");
          failures++;
        }
      }
      stop(pid);
      if (r.errors || r.pushes == 0) failures++;
    }
  }
  if (smoke) std::printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
  return failures ? 1 : 0;
}
