// bench_core — storage, query and folded-import figures of pyroscope.hpp's core (issue 2).
//
//   bench_core [--quick | --smoke] [--query-only] [--dir /tmp] [--keep] [--seed N] [--deep-blocks N]
//
// Everything is measured in this one run, against baselines measured in the same run:
//   storage   bytes per 10 s block of a .pyro file, against the raw folded text of the same blocks and
//             against gzip -6 (zlib deflate, level 6, gzip framing) of each block's text and of the whole
//             run's text; for a rideshare-like workload (an hour) and a deep C++-like one (depth >= 30,
//             >= 10k distinct stacks per block, long templated names; 20 min, --deep-blocks 360 for an
//             hour); for multipliers m = 4, 8, 10, 16
//   query     one series with a year of 10 s blocks: random ranges, merges per query against the bound
//             2(m-1)*ceil(log_m n), median and p99 latency; against decoding and merging every block of
//             the range (the same encoded trees, in memory: the cheapest possible scan); opening the
//             file from its index against opening it with every record checked (--query-only: this alone)
//   import    folded lines per second into a Tree, against counting the same lines in a
//             std::unordered_map<std::string, uint64_t>
// Timing targets are printed as MET / MISSED; the exit code is non-zero only when a correctness check
// fails (a query that disagrees with the scan, merges above the bound, a file that does not reopen).
// --smoke runs tiny sizes for CTest (correctness only; the timings mean nothing there).

// The implementation is linked from pyroscope_impl_reader (CMakeLists.txt): without the sampler,
// with zlib and the JSON importers.
#include "pyroscope.hpp"

#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU time of the calling thread: the cost of an operation without the time other processes took the
// core (this machine is shared; wall times are printed too where they matter to a user).
double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

int g_failures = 0;
void check(bool ok, const char* what, const std::string& detail = "") {
  if (ok) return;
  ++g_failures;
  std::printf("  CHECK FAILED: %s %s\n", what, detail.c_str());
}
void must(const pyroscope::Status& st, const char* what) {
  if (st.ok()) return;
  std::fprintf(stderr, "bench_core: %s: %s\n", what, st.to_string().c_str());
  std::exit(1);
}

struct Options {
  enum class Size { full, quick, smoke } size = Size::full;
  std::string dir = "/tmp";
  bool keep = false;
  bool query_only = false;
  uint64_t seed = 20261122;
  uint64_t deep_blocks = 0;  // 0: the size's default
};

// splitmix64: small, fast, and the same sequence on every platform (std:: distributions are not).
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t below(uint64_t n) { return next() % n; }
  int64_t between(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo + 1))); }
  double pareto(double alpha) { return 1.0 / std::pow(1.0 - uniform(), 1.0 / alpha); }  // Python's paretovariate
};

std::string human_bytes(double b) {
  char buf[64];
  if (b >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof buf, "%.2f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

uint64_t file_size(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  return f ? static_cast<uint64_t>(f.tellg()) : 0;
}

// gzip -6: zlib deflate at level 6 with the gzip header and trailer (windowBits 15 + 16).
class Gzip {
 public:
  Gzip() {
    std::memset(&z_, 0, sizeof z_);
    if (deflateInit2(&z_, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  }
  ~Gzip() { deflateEnd(&z_); }
  Gzip(const Gzip&) = delete;
  Gzip& operator=(const Gzip&) = delete;
  void add(std::string_view data, bool finish) {
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z_.avail_in = static_cast<uInt>(data.size());
    int flush = finish ? Z_FINISH : Z_NO_FLUSH;
    int rc;
    do {
      z_.next_out = out_;
      z_.avail_out = sizeof out_;
      rc = deflate(&z_, flush);
      if (rc == Z_STREAM_ERROR) std::abort();
      bytes_ += sizeof out_ - z_.avail_out;
    } while (z_.avail_out == 0 || (finish && rc != Z_STREAM_END));
  }
  uint64_t bytes() const { return bytes_; }
  static uint64_t size_of(std::string_view data) {
    Gzip g;
    g.add(data, true);
    return g.bytes();
  }

 private:
  z_stream z_;
  unsigned char out_[1 << 16];
  uint64_t bytes_ = 0;
};

const std::vector<uint32_t> kMultipliers = {4, 8, 10, 16};

// Appends "frame;frame;... count\n".
void append_folded_line(const pyroscope::SymbolTable& symbols, const std::vector<uint32_t>& frames, uint64_t count,
                        std::string* text) {
  for (size_t i = 0; i < frames.size(); ++i) {
    if (i) text->push_back(';');
    text->append(symbols.name(frames[i]));
  }
  text->push_back(' ');
  text->append(std::to_string(count));
  text->push_back('\n');
}

uint64_t stacks_with_samples(const pyroscope::Tree& tree) {
  uint64_t n = 0;
  for (uint32_t i = 1; i < tree.node_count(); ++i) n += tree.self(i) != 0;
  return n;
}

// ------------------------------------------------------------------------------------------------
// Workload (a): rideshare-like. Few series (region x vehicle, plus the region's background work),
// shallow stacks, a few hundred samples per block with some variation.

class Rideshare {
 public:
  explicit Rideshare(std::shared_ptr<pyroscope::SymbolTable> symbols) : symbols_(std::move(symbols)) {
    const std::vector<std::string> handler = {"main", "ride_sharing::Server::run()",
                                              "httplib::Server::process_and_close_socket(int)",
                                              "httplib::Server::routing(httplib::Request&, httplib::Response&, httplib::Stream&)",
                                              "ride_sharing::handle_ride(httplib::Request const&, httplib::Response&)"};
    const char* vehicles[] = {"car", "bike", "scooter"};
    const double intensity[] = {1.0, 0.6, 0.3};  // the car path is the slow one, as in Pyroscope's demo
    for (int v = 0; v < 3; ++v) {
      std::string order = std::string("ride_sharing::order_") + vehicles[v] + "(int)";
      std::string find = "ride_sharing::find_nearest_vehicle(int, std::string_view)";
      auto h = [&](std::vector<std::string> rest) {
        std::vector<std::string> s = handler;
        s.push_back(order);
        s.insert(s.end(), rest.begin(), rest.end());
        return s;
      };
      Series series;
      series.key = pyroscope::SeriesKey("ride-sharing-app", {{"region", "eu-north"}, {"vehicle", vehicles[v]}});
      add(&series, h({find, "ride_sharing::check_driver_availability(int)", "std::mutex::lock()", "__lll_lock_wait"}),
          v == 0 ? 140 : 25, 1.0);
      add(&series, h({find, "ride_sharing::compute_distance(ride_sharing::Point const&, ride_sharing::Point const&)",
                       "sqrt"}),
          60 * intensity[v], 1.0);
      add(&series, h({find, "ride_sharing::compute_distance(ride_sharing::Point const&, ride_sharing::Point const&)"}),
          40 * intensity[v], 1.0);
      add(&series,
          h({find, "std::vector<ride_sharing::Vehicle, std::allocator<ride_sharing::Vehicle> >::operator[](unsigned long)"}),
          15 * intensity[v], 1.0);
      add(&series, h({find, "operator new(unsigned long)", "malloc"}), 8, 0.9);
      add(&series, h({"nlohmann::json_abi_v3_11_2::basic_json<>::dump(int, char, bool) const",
                      "operator new(unsigned long)", "malloc"}),
          10, 1.0);
      add(&series, h({"nlohmann::json_abi_v3_11_2::basic_json<>::dump(int, char, bool) const"}), 20, 1.0);
      add(&series,
          h({find, "std::__introsort_loop<__gnu_cxx::__normal_iterator<ride_sharing::Vehicle*, std::vector<ride_sharing::Vehicle> >, long>"}),
          12, 0.05);
      series_.push_back(std::move(series));
    }
    Series background;
    background.key = pyroscope::SeriesKey("ride-sharing-app", {{"region", "eu-north"}});
    add(&background, {"main", "ride_sharing::Server::run()", "httplib::Server::process_and_close_socket(int)", "recv"}, 12, 1.0);
    add(&background, {"main", "ride_sharing::Server::run()", "httplib::Server::process_and_close_socket(int)", "send"}, 9, 1.0);
    add(&background, {"main", "ride_sharing::Server::run()", "httplib::Server::listen_internal()", "accept4"}, 4, 1.0);
    add(&background, {"start_thread", "ride_sharing::metrics_loop()",
                      "nlohmann::json_abi_v3_11_2::basic_json<>::dump(int, char, bool) const"}, 6, 1.0);
    add(&background, {"start_thread", "ride_sharing::metrics_loop()", "free"}, 2, 0.5);
    series_.push_back(std::move(background));
  }

  size_t series_count() const { return series_.size(); }
  const pyroscope::SeriesKey& key(size_t s) const { return series_[s].key; }

  // One block of series s; load scales every stack (daily cycle). text may be null.
  void block(size_t s, Rng& rng, double load, pyroscope::Tree* tree, std::string* text) const {
    tree->clear();
    if (text) text->clear();
    for (const Stack& st : series_[s].stacks) {
      if (rng.uniform() >= st.probability) continue;
      uint64_t count = static_cast<uint64_t>(st.weight * load * (0.6 + 0.8 * rng.uniform()));
      if (count == 0) continue;
      tree->insert_ids(st.frames.data(), st.frames.size(), count);
      if (text) append_folded_line(*symbols_, st.frames, count, text);
    }
  }

 private:
  struct Stack {
    std::vector<uint32_t> frames;
    double weight;
    double probability;  // of appearing in a block at all
  };
  struct Series {
    pyroscope::SeriesKey key;
    std::vector<Stack> stacks;
  };
  void add(Series* s, const std::vector<std::string>& frames, double weight, double probability) {
    Stack st;
    for (const std::string& f : frames) st.frames.push_back(symbols_->intern(f));
    st.weight = weight;
    st.probability = probability;
    s->stacks.push_back(std::move(st));
  }
  std::shared_ptr<pyroscope::SymbolTable> symbols_;
  std::vector<Series> series_;
};

// ------------------------------------------------------------------------------------------------
// Workload (b): deep C++-like, the algorithm of shared/bench/gen_folded.py in C++: 4000 functions with
// long (often templated) names, three roots, a trunk shared per root, then 26..46 frames drawn mostly
// from a Pareto-skewed hot set. A pool of distinct stacks is made once; each block takes each stack
// with probability 1/2 and a Pareto count, so blocks differ but share most of their stacks.

class DeepCpp {
 public:
  DeepCpp(std::shared_ptr<pyroscope::SymbolTable> symbols, size_t pool_size, uint64_t seed)
      : symbols_(std::move(symbols)) {
    Rng rng(seed);
    const char* ns[] = {"std", "boost::asio", "app::core", "app::net", "app::db", "folly", "absl", "app::render",
                        "llvm", "grpc"};
    const char* words[] = {"Handler", "Dispatch", "Parse", "Encode", "Visit", "Merge", "Lookup",
                           "Flush", "Schedule", "Resolve", "Compute", "Allocate", "Serialize", "Transform",
                           "Index", "Query", "Render", "Compress", "Hash", "Sort"};
    const char* types[] = {"std::string", "int", "std::vector<int>", "Node*", "std::map<std::string, int>",
                           "Slice<char const>"};
    std::vector<uint32_t> funcs;
    for (int i = 0; i < 4000; ++i) {
      std::string name = std::string(ns[rng.below(10)]) + "::" + words[rng.below(20)] + words[rng.below(20)] +
                         std::to_string(i);
      if (rng.uniform() < 0.4) name += std::string("<") + types[rng.below(6)] + ", " + types[rng.below(6)] + ">";
      name += std::string("(") + types[rng.below(6)] + " const&)";
      funcs.push_back(symbols_->intern(name));
    }
    const std::vector<std::vector<const char*>> roots = {{"main", "app::Server::Run()"},
                                                         {"start_thread", "app::Worker::Loop()"},
                                                         {"start_thread", "grpc::Executor::Run()"}};
    std::vector<std::vector<uint32_t>> trunk_choice(roots.size());
    for (auto& t : trunk_choice)
      for (int d = 0; d < 6; ++d) t.push_back(funcs[rng.below(200)]);
    pool_.reserve(pool_size);
    while (pool_.size() < pool_size) {
      size_t r = rng.below(roots.size());
      std::vector<uint32_t> stack;
      for (const char* f : roots[r]) stack.push_back(symbols_->intern(f));
      int64_t trunk = rng.between(2, 6), depth = rng.between(26, 46);
      for (int64_t d = 0; d < trunk; ++d) stack.push_back(trunk_choice[r][static_cast<size_t>(d)]);
      for (int64_t d = 0; d < depth; ++d) {
        size_t f = rng.uniform() < 0.7 ? std::min<size_t>(static_cast<size_t>(rng.pareto(1.2) * 7) % 4000, 3999)
                                       : rng.below(4000);
        stack.push_back(funcs[f]);
      }
      pool_.push_back(std::move(stack));
    }
  }

  pyroscope::SeriesKey key() const { return pyroscope::SeriesKey("deep-cpp-app", {{"host", "build-07"}}); }

  void block(Rng& rng, pyroscope::Tree* tree, std::string* text) const {
    tree->clear();
    if (text) text->clear();
    for (const std::vector<uint32_t>& stack : pool_) {
      if (rng.uniform() >= 0.5) continue;
      uint64_t count = std::max<uint64_t>(1, static_cast<uint64_t>(rng.pareto(1.1)));
      tree->insert_ids(stack.data(), stack.size(), count);
      if (text) append_folded_line(*symbols_, stack, count, text);
    }
  }
  size_t min_depth() const {
    size_t d = SIZE_MAX;
    for (const auto& s : pool_) d = std::min(d, s.size());
    return d;
  }

 private:
  std::shared_ptr<pyroscope::SymbolTable> symbols_;
  std::vector<std::vector<uint32_t>> pool_;
};

// ------------------------------------------------------------------------------------------------
// Storage

struct WriterSet {
  std::vector<pyroscope::Writer> writers;
  std::vector<std::string> paths;
  std::vector<double> append_seconds;
  std::vector<double> close_seconds;

  void open(const Options& o, const std::string& name) {
    writers.resize(kMultipliers.size());
    append_seconds.assign(kMultipliers.size(), 0);
    close_seconds.assign(kMultipliers.size(), 0);
    for (size_t i = 0; i < kMultipliers.size(); ++i) {
      paths.push_back(o.dir + "/pyro-bench-" + std::to_string(::getpid()) + "-" + name + "-m" +
                      std::to_string(kMultipliers[i]) + ".pyro");
      std::remove(paths.back().c_str());
      pyroscope::WriterOptions wo;
      wo.multiplier = kMultipliers[i];
      must(writers[i].open(paths.back(), wo), paths.back().c_str());
    }
  }
  // Appends to writers [first, last); append_seconds is CPU time of this thread.
  void append(size_t first, size_t last, const pyroscope::SeriesKey& key, int64_t t, const pyroscope::Tree& tree) {
    for (size_t i = first; i < last; ++i) {
      double start = thread_cpu_seconds();
      must(writers[i].append(key, t, tree), "append");
      append_seconds[i] += thread_cpu_seconds() - start;
    }
  }
  // Two threads, two writers each: the writers are independent and the tree is only read.
  void append_all(const pyroscope::SeriesKey& key, int64_t t, const pyroscope::Tree& tree) {
    std::thread other([&] { append(writers.size() / 2, writers.size(), key, t, tree); });
    append(0, writers.size() / 2, key, t, tree);
    other.join();
  }
  void close() {
    for (size_t i = 0; i < writers.size(); ++i) {
      double start = thread_cpu_seconds();
      must(writers[i].close(), "close");
      close_seconds[i] = thread_cpu_seconds() - start;
    }
  }
  void remove_files() {
    for (const std::string& p : paths) std::remove(p.c_str());
  }
};

struct StorageFigures {
  std::string name;
  uint64_t intervals = 0, blocks = 0, series = 0;
  uint64_t raw_bytes = 0, gzip_block_bytes = 0, gzip_whole_bytes = 0, samples = 0;
  uint64_t min_stacks = UINT64_MAX, max_stacks = 0, total_stacks = 0, total_nodes = 0;
  uint64_t file_bytes[4] = {}, stored_trees[4] = {}, level0[4] = {};
  double append_seconds[4] = {};
  double seconds = 0;
};

// Per interval: gen(i, series, tree, text) fills one block. Per-block gzip and the whole-hour gzip
// stream run on a second thread while this one writes the block to the four files.
template <class Generate>
StorageFigures run_storage(const Options& o, const std::string& name, uint64_t intervals,
                           const std::vector<pyroscope::SeriesKey>& keys,
                           const std::shared_ptr<pyroscope::SymbolTable>& symbols, Generate gen) {
  auto started = Clock::now();
  StorageFigures f;
  f.name = name;
  f.intervals = intervals;
  f.series = keys.size();
  WriterSet writers;
  writers.open(o, name);
  const int64_t t0 = 1798761600;  // 2027-01-01T00:00:00Z
  Gzip whole;
  pyroscope::Tree tree(symbols);
  std::string text, compressing;
  std::thread gzip_thread;
  uint64_t gzip_block_bytes = 0;
  for (uint64_t i = 0; i < intervals; ++i) {
    for (size_t s = 0; s < keys.size(); ++s) {
      gen(i, s, &tree, &text);
      if (tree.total() == 0) continue;
      ++f.blocks;
      f.raw_bytes += text.size();
      f.samples += tree.total();
      uint64_t stacks = stacks_with_samples(tree);
      f.min_stacks = std::min(f.min_stacks, stacks);
      f.max_stacks = std::max(f.max_stacks, stacks);
      f.total_stacks += stacks;
      f.total_nodes += tree.node_count() - 1;
      if (gzip_thread.joinable()) gzip_thread.join();
      compressing.swap(text);
      gzip_thread = std::thread([&compressing, &whole, &gzip_block_bytes] {
        gzip_block_bytes += Gzip::size_of(compressing);
        whole.add(compressing, false);
      });
      writers.append_all(keys[s], t0 + static_cast<int64_t>(i) * pyroscope::kDefaultResolutionSeconds, tree);
    }
  }
  if (gzip_thread.joinable()) gzip_thread.join();
  whole.add("", true);
  f.gzip_block_bytes = gzip_block_bytes;
  f.gzip_whole_bytes = whole.bytes();
  writers.close();
  for (size_t i = 0; i < kMultipliers.size(); ++i) {
    pyroscope::File file;
    pyroscope::Status st = file.open_path(writers.paths[i]);
    check(st.ok(), "storage file reopens", st.to_string());
    if (!st.ok()) continue;
    f.file_bytes[i] = file_size(writers.paths[i]);
    f.stored_trees[i] = file.info().stored_trees;
    f.level0[i] = file.info().block_count;
    f.append_seconds[i] = writers.append_seconds[i] + writers.close_seconds[i];
    check(f.level0[i] == f.blocks, "file holds every written block",
          std::to_string(f.level0[i]) + " vs " + std::to_string(f.blocks));
    // The whole span's merged tree must hold every sample written.
    pyroscope::Dataset data;
    data.add(std::move(file));
    pyroscope::QueryResult r;
    const pyroscope::TimeRange span = data.time_span();
    int64_t first = span.from, end = span.until;
    must(data.query("{}", first, end, &r), "query whole file");
    check(r.tree.total() == f.samples, "whole-file query total equals samples written",
          std::to_string(r.tree.total()) + " vs " + std::to_string(f.samples));
  }
  if (!o.keep) writers.remove_files();
  f.seconds = seconds_since(started);
  return f;
}

void print_storage(const StorageFigures& f) {
  const size_t m10 = 2;
  double per_block_file = static_cast<double>(f.file_bytes[m10]) / f.blocks;
  double per_block_raw = static_cast<double>(f.raw_bytes) / f.blocks;
  double per_block_gzip = static_cast<double>(f.gzip_block_bytes) / f.blocks;
  double per_block_whole = static_cast<double>(f.gzip_whole_bytes) / f.blocks;
  std::printf("\n%s: %" PRIu64 " intervals of 10 s x %" PRIu64 " series = %" PRIu64 " blocks, %.0f samples/block, "
              "distinct stacks per block %" PRIu64 "..%" PRIu64 " (mean %.0f), %.0f tree nodes/block  [%.1f s]\n",
              f.name.c_str(), f.intervals, f.series, f.blocks, static_cast<double>(f.samples) / f.blocks,
              f.min_stacks, f.max_stacks, static_cast<double>(f.total_stacks) / f.blocks,
              static_cast<double>(f.total_nodes) / f.blocks, f.seconds);
  std::printf("  bytes per block:  .pyro (m=10) %10.0f | raw folded %12.0f | gzip -6 per block %10.0f | "
              "gzip -6 whole run %10.0f\n",
              per_block_file, per_block_raw, per_block_gzip, per_block_whole);
  std::printf("  ratios:           raw/.pyro %.1fx   gzip-per-block/.pyro %.2fx   gzip-whole-run/.pyro %.2fx\n",
              per_block_raw / per_block_file, per_block_gzip / per_block_file, per_block_whole / per_block_file);
  std::printf("  whole files:      .pyro %s, raw %s, gzip per block %s, gzip whole run %s\n",
              human_bytes(f.file_bytes[m10]).c_str(), human_bytes(f.raw_bytes).c_str(),
              human_bytes(f.gzip_block_bytes).c_str(), human_bytes(f.gzip_whole_bytes).c_str());
}

// ------------------------------------------------------------------------------------------------
// Query over a long series

uint64_t merge_bound(uint64_t m, uint64_t n) {
  if (n <= 1) return 1;
  uint64_t levels = 0;
  for (uint64_t span = 1; span < n; span *= m) ++levels;  // ceil(log_m n)
  return 2 * (m - 1) * levels;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) ;
  return v[idx == 0 ? 0 : std::min(idx - 1, v.size() - 1)];
}

struct QueryFigures {
  uint64_t file_bytes = 0, stored_trees = 0;
  double write_seconds = 0, open_seconds = 0;
  double close_seconds = 0, open_checked_seconds = 0, first_query_seconds = 0;
  uint64_t index_bytes = 0;
  uint64_t merges_min = 0, merges_max = 0;
  double merges_median = 0, lat_median = 0, lat_p99 = 0, lat_max = 0, cpu_median = 0, cpu_p99 = 0;
  uint64_t over_bound = 0, over_library_bound = 0, worst_bound_at_max = 0;
  uint64_t queries = 0;
};

struct Range {
  uint64_t first, count;  // in blocks
};

struct BaselineRow {
  std::string label;
  Range range;
  double query_seconds;     // segment-tree query, median of repeats
  double scan_seconds;      // decode + merge every block in the range
  uint64_t merges;
  bool same;
};

void run_query(const Options& o, uint64_t blocks, size_t query_count) {
  std::printf("\n== Query: one series, %" PRIu64 " blocks of 10 s (%.1f days) ==\n", blocks, blocks / 8640.0);
  auto symbols = std::make_shared<pyroscope::SymbolTable>();
  Rideshare workload(symbols);
  const size_t car = 0;
  const pyroscope::SeriesKey key = workload.key(car);
  const int64_t t0 = 1798761600;  // 2027-01-01T00:00:00Z
  const int64_t res = pyroscope::kDefaultResolutionSeconds;

  // Every block's encoded tree, kept in memory: the writers' input and the scan baseline's.
  std::string encoded;
  std::vector<uint64_t> offsets{0};
  offsets.reserve(blocks + 1);
  Rng rng(o.seed ^ 0x5eed);
  uint64_t samples = 0;
  auto gen_started = Clock::now();
  {
    pyroscope::Tree tree(symbols);
    for (uint64_t b = 0; b < blocks; ++b) {
      double hour = static_cast<double>((b * res) % 86400) / 3600.0;
      double load = 1.0 + 0.5 * std::sin((hour - 9.0) / 24.0 * 2 * M_PI);  // busy afternoons, quiet nights
      workload.block(car, rng, load, &tree, nullptr);
      samples += tree.total();
      tree.encode(&encoded);
      offsets.push_back(encoded.size());
    }
  }
  double gen_seconds = seconds_since(gen_started);

  // The four files are written on two threads (two multipliers each), each decoding the blocks itself.
  WriterSet writers;
  writers.open(o, "year");
  auto write_started = Clock::now();
  auto write_range = [&](size_t first, size_t last) {
    pyroscope::Tree tree(symbols);
    for (uint64_t b = 0; b < blocks; ++b) {
      tree.clear();
      must(tree.decode({reinterpret_cast<const uint8_t*>(encoded.data()) + offsets[b],
                        static_cast<size_t>(offsets[b + 1] - offsets[b])}),
           "decode");
      writers.append(first, last, key, t0 + static_cast<int64_t>(b) * res, tree);
    }
  };
  std::thread second_half(write_range, kMultipliers.size() / 2, kMultipliers.size());
  write_range(0, kMultipliers.size() / 2);
  second_half.join();
  writers.close();
  double write_wall = seconds_since(write_started);
  std::printf("generated %" PRIu64 " blocks (%.1f samples/block, %.0f bytes/encoded tree) in %.1f s; wrote them to "
              "%zu files (m = 4, 8, 10, 16) on 2 threads in %.1f s\n",
              blocks, static_cast<double>(samples) / blocks, static_cast<double>(encoded.size()) / blocks, gen_seconds,
              kMultipliers.size(), write_wall);

  // Random ranges, the same for every m: lengths log-uniform from one block to the whole series.
  std::vector<Range> ranges;
  Rng qrng(o.seed ^ 0xabcdef);
  for (size_t i = 0; i < query_count; ++i) {
    uint64_t len = static_cast<uint64_t>(std::exp(qrng.uniform() * std::log(static_cast<double>(blocks))));
    len = std::min<uint64_t>(std::max<uint64_t>(len, 1), blocks);
    ranges.push_back({qrng.below(blocks - len + 1), len});
  }
  pyroscope::QueryOptions qopt;
  qopt.timeline_points = 1000;  // what a viewer asks for: a timeline about 1000 px wide

  std::vector<QueryFigures> figures(kMultipliers.size());
  std::vector<pyroscope::Dataset> datasets(kMultipliers.size());
  for (size_t mi = 0; mi < kMultipliers.size(); ++mi) {
    QueryFigures& q = figures[mi];
    q.file_bytes = file_size(writers.paths[mi]);
    q.write_seconds = writers.append_seconds[mi] + writers.close_seconds[mi];
    q.close_seconds = writers.close_seconds[mi];
    // The baseline first: opening with every record checked (what every open did before the
    // persisted index), then the open a reader does, and its first query (which reads index chunks).
    {
      pyroscope::Dataset checked;
      pyroscope::OpenOptions every;
      every.check_every_record = true;
      auto started = Clock::now();
      must(checked.add_file(writers.paths[mi], every), writers.paths[mi].c_str());
      q.open_checked_seconds = seconds_since(started);
    }
    auto open_started = Clock::now();
    must(datasets[mi].add_file(writers.paths[mi]), writers.paths[mi].c_str());
    q.open_seconds = seconds_since(open_started);
    q.index_bytes = datasets[mi].file(0).info().index_bytes;
    check(datasets[mi].file(0).info().opened_from_index, "the closed file opens from its index");
    {
      pyroscope::QueryResult first;
      auto started = Clock::now();
      must(datasets[mi].query(key.to_string(), t0, t0 + static_cast<int64_t>(blocks) * res, &first, qopt), "first query");
      q.first_query_seconds = seconds_since(started);
    }
    q.stored_trees = datasets[mi].file(0).info().stored_trees;
    check(datasets[mi].file(0).info().block_count == blocks, "year file holds every block");
    pyroscope::Selector selector;
    must(pyroscope::Selector::parse(key.to_string(), &selector), "selector");
    std::vector<double> latency, cpu;
    std::vector<double> merges;
    for (const Range& r : ranges) {
      pyroscope::QueryResult result;
      int64_t from = t0 + static_cast<int64_t>(r.first) * res;
      int64_t until = from + static_cast<int64_t>(r.count) * res;
      auto started = Clock::now();
      double cpu_started = thread_cpu_seconds();
      must(datasets[mi].query(selector, from, until, &result, qopt), "query");
      cpu.push_back(thread_cpu_seconds() - cpu_started);
      latency.push_back(seconds_since(started));
      merges.push_back(static_cast<double>(result.merges));
      uint64_t bound = merge_bound(kMultipliers[mi], r.count);
      if (result.merges > bound) {
        ++q.over_bound;
        if (q.over_bound <= 3)
          std::printf("  m=%u: range [%" PRIu64 ", +%" PRIu64 ") merged %" PRIu64 " trees, bound %" PRIu64 "\n",
                      kMultipliers[mi], r.first, r.count, result.merges, bound);
      }
      if (result.merges > result.merge_bound) ++q.over_library_bound;
      if (result.merges > q.merges_max) {
        q.merges_max = result.merges;
        q.worst_bound_at_max = bound;
      }
    }
    q.queries = ranges.size();
    q.merges_min = static_cast<uint64_t>(*std::min_element(merges.begin(), merges.end()));
    q.merges_median = percentile(merges, 0.5);
    q.lat_median = percentile(latency, 0.5);
    q.lat_p99 = percentile(latency, 0.99);
    q.lat_max = *std::max_element(latency.begin(), latency.end());
    q.cpu_median = percentile(cpu, 0.5);
    q.cpu_p99 = percentile(cpu, 0.99);
    check(q.over_bound == 0, "merges within 2(m-1)*ceil(log_m n)", "m=" + std::to_string(kMultipliers[mi]));
    check(q.over_library_bound == 0, "merges within QueryResult::merge_bound", "m=" + std::to_string(kMultipliers[mi]));
  }

  // Scan baseline on m = 10's file: the same ranges' trees by decoding and merging every block.
  const size_t m10 = 2;
  pyroscope::Selector selector;
  must(pyroscope::Selector::parse(key.to_string(), &selector), "selector");
  auto scan = [&](const Range& r, pyroscope::Tree* out) {
    for (uint64_t b = r.first; b < r.first + r.count; ++b) {
      pyroscope::ByteSpan span{reinterpret_cast<const uint8_t*>(encoded.data()) + offsets[b],
                               static_cast<size_t>(offsets[b + 1] - offsets[b])};
      must(out->merge_encoded(span, nullptr), "merge_encoded");
    }
  };
  std::vector<std::pair<std::string, Range>> baseline_ranges;
  const uint64_t day = 8640, week = 7 * day, month = 30 * day;
  const char* span_label = blocks >= 365 * day ? "year" : "whole series";
  baseline_ranges.push_back({std::string(span_label) + " (all)", {0, blocks}});
  if (blocks > 2 * week) {
    baseline_ranges.push_back({std::string(span_label) + " minus first week", {week, blocks - week}});
    baseline_ranges.push_back({std::string(span_label) + " from block 1, minus 3 days", {1, blocks - 3 * day - 1}});
  }
  Rng brng(o.seed ^ 0xba5e);
  for (auto [label, len] : {std::pair<const char*, uint64_t>{"month", month}, {"week", week}, {"day", day},
                            {"hour", 360}}) {
    if (len >= blocks) continue;
    for (int k = 0; k < 2; ++k) baseline_ranges.push_back({label, {brng.below(blocks - len + 1), len}});
  }
  std::vector<BaselineRow> rows;
  for (const auto& [label, r] : baseline_ranges) {
    BaselineRow row{label, r, 0, 0, 0, false};
    int64_t from = t0 + static_cast<int64_t>(r.first) * res;
    int64_t until = from + static_cast<int64_t>(r.count) * res;
    std::vector<double> times;
    pyroscope::QueryResult result;
    for (int rep = 0; rep < 5; ++rep) {
      double started = thread_cpu_seconds();
      must(datasets[m10].query(selector, from, until, &result, qopt), "query");
      times.push_back(thread_cpu_seconds() - started);
    }
    row.query_seconds = percentile(times, 0.5);
    row.merges = result.merges;
    pyroscope::Tree scanned(symbols);
    double started = thread_cpu_seconds();
    scan(r, &scanned);
    row.scan_seconds = thread_cpu_seconds() - started;
    row.same = scanned.total() == result.tree.total() && scanned.to_folded() == result.tree.to_folded();
    check(row.same, "query tree equals the scan of every block", label);
    rows.push_back(row);
  }

  std::printf("file (m=10): %s, %" PRIu64 " stored trees (%.4f per block), Writer::append+close %.2f s CPU "
              "(%.2f us/block; close, which reads the file back and writes its index: %.2f s)\n",
              human_bytes(figures[m10].file_bytes).c_str(), figures[m10].stored_trees,
              static_cast<double>(figures[m10].stored_trees) / blocks, figures[m10].write_seconds,
              figures[m10].write_seconds / blocks * 1e6, figures[m10].close_seconds);
  std::printf("open (m=10, wall): %.1f ms from the index (%s of index, %.1f%% of the file), %.1f ms checking every "
              "record (%.0fx); the first whole-series query after the open %.1f ms\n",
              figures[m10].open_seconds * 1e3, human_bytes(figures[m10].index_bytes).c_str(),
              100.0 * static_cast<double>(figures[m10].index_bytes) / static_cast<double>(figures[m10].file_bytes),
              figures[m10].open_checked_seconds * 1e3, figures[m10].open_checked_seconds / figures[m10].open_seconds,
              figures[m10].first_query_seconds * 1e3);
  std::printf("%zu random ranges (log-uniform length 1..%" PRIu64 " blocks), with a %zu-point timeline:\n",
              ranges.size(), blocks, qopt.timeline_points);
  std::printf("  m=10: merges min %" PRIu64 " / median %.0f / max %" PRIu64 " (bound 2(m-1)*ceil(log_m n) at the "
              "max: %" PRIu64 "; for the whole series: %" PRIu64 "); over bound: %" PRIu64 "\n",
              figures[m10].merges_min, figures[m10].merges_median, figures[m10].merges_max,
              figures[m10].worst_bound_at_max, merge_bound(10, blocks), figures[m10].over_bound);
  std::printf("  m=10: latency median %.3f ms, p99 %.3f ms, max %.3f ms (wall); CPU median %.3f ms, p99 %.3f ms\n",
              figures[m10].lat_median * 1e3, figures[m10].lat_p99 * 1e3, figures[m10].lat_max * 1e3,
              figures[m10].cpu_median * 1e3, figures[m10].cpu_p99 * 1e3);
  std::printf("against decoding and merging every block of the range (in-memory encoded trees; CPU time, query:\n"
              "median of 5, scan: one run; m=10 file):\n");
  std::printf("  %-40s %10s %8s %12s %12s %10s\n", "range", "blocks", "merges", "query ms", "scan ms", "speedup");
  double min_year_speedup = 1e300;
  for (const BaselineRow& row : rows) {
    double speedup = row.scan_seconds / row.query_seconds;
    if (row.range.count >= blocks - 3 * 8640 - 1 && blocks >= 365 * 8640ull)
      min_year_speedup = std::min(min_year_speedup, speedup);
    std::printf("  %-40s %10" PRIu64 " %8" PRIu64 " %12.3f %12.1f %9.0fx%s\n", row.label.c_str(), row.range.count,
                row.merges, row.query_seconds * 1e3, row.scan_seconds * 1e3, speedup, row.same ? "" : "  MISMATCH");
  }

  std::printf("\nmultiplier m (same year of blocks, same %zu ranges):\n", ranges.size());
  std::printf("  %3s %12s %14s %11s %8s %7s %7s %7s %7s %8s %8s %8s %8s\n", "m", "file", "stored/blocks",
              "write cpu s", "open ms", "min", "median", "max", "bound", "med ms", "p99 ms", "cpu med", "cpu p99");
  for (size_t mi = 0; mi < kMultipliers.size(); ++mi) {
    const QueryFigures& q = figures[mi];
    std::printf("  %3u %12s %14.4f %11.2f %8.1f %7" PRIu64 " %7.0f %7" PRIu64 " %7" PRIu64
                " %8.3f %8.3f %8.3f %8.3f\n",
                kMultipliers[mi], human_bytes(q.file_bytes).c_str(), static_cast<double>(q.stored_trees) / blocks,
                q.write_seconds, q.open_seconds * 1e3, q.merges_min, q.merges_median, q.merges_max,
                merge_bound(kMultipliers[mi], blocks), q.lat_median * 1e3, q.lat_p99 * 1e3, q.cpu_median * 1e3,
                q.cpu_p99 * 1e3);
  }

  if (o.size != Options::Size::smoke) {
    std::printf("\ntargets (query):\n");
    std::printf("  median latency < 10 ms:                 %.3f ms  %s\n", figures[m10].lat_median * 1e3,
                figures[m10].lat_median < 0.010 ? "MET" : "MISSED");
    std::printf("  open < 50 ms:                           %.1f ms  %s\n", figures[m10].open_seconds * 1e3,
                figures[m10].open_seconds < 0.050 ? "MET" : "MISSED");
    std::printf("  merges within 2(m-1)*ceil(log_m n):     %" PRIu64 " over  %s\n", figures[m10].over_bound,
                figures[m10].over_bound == 0 ? "MET" : "MISSED");
    if (min_year_speedup < 1e300)
      std::printf("  >= 1000x faster than the scan (year):   %.0fx  %s\n", min_year_speedup,
                  min_year_speedup >= 1000 ? "MET" : "MISSED");
    else
      std::printf("  >= 1000x faster than the scan (year):   not measured (the series is shorter than a year: "
                  "run without --quick)\n");
  }
  if (!o.keep) writers.remove_files();
}

// ------------------------------------------------------------------------------------------------
// Folded import

size_t count_lines_in_map(std::string_view text, std::unordered_map<std::string, uint64_t>* counts) {
  size_t lines = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.remove_suffix(1);
    if (line.empty()) continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos) std::abort();
    uint64_t n = 0;
    for (char c : line.substr(sp + 1)) n = n * 10 + static_cast<uint64_t>(c - '0');
    (*counts)[std::string(line.substr(0, sp))] += n;
    ++lines;
  }
  return lines;
}

void run_import(const Options& o, const std::string& name, const std::string& text) {
  size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  double budget = o.size == Options::Size::full ? 1.0 : 0.2;
  // Median thread-CPU time of repeated runs (CPU time: other processes on the machine do not count).
  auto measure = [&](auto&& once) {
    std::vector<double> times;
    double started = thread_cpu_seconds();
    do {
      double t = thread_cpu_seconds();
      once();
      times.push_back(thread_cpu_seconds() - t);
    } while (thread_cpu_seconds() - started < budget || times.size() < 3);
    return percentile(times, 0.5);
  };
  uint64_t tree_total = 0, map_size = 0;
  double tree_s = measure([&] {
    pyroscope::Tree tree;
    must(tree.add_folded(text), "add_folded");
    tree_total = tree.total();
  });
  double map_s = measure([&] {
    std::unordered_map<std::string, uint64_t> counts;
    count_lines_in_map(text, &counts);
    map_size = counts.size();
  });
  uint64_t expected = 0;
  {
    std::unordered_map<std::string, uint64_t> counts;
    count_lines_in_map(text, &counts);
    for (auto& kv : counts) expected += kv.second;
  }
  check(tree_total == expected, "add_folded total equals the line counts");
  std::printf("  %-28s %8zu lines %9s: Tree::add_folded %6.2f M lines/s (%6.0f MB/s) | unordered_map %6.2f M lines/s "
              "(%6.0f MB/s) | tree/map %.2fx\n",
              name.c_str(), lines, human_bytes(static_cast<double>(text.size())).c_str(), lines / tree_s / 1e6,
              text.size() / tree_s / 1e6, lines / map_s / 1e6, text.size() / map_s / 1e6, map_s / tree_s);
  (void)map_size;
}

void print_machine() {
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  struct utsname u;
  ::uname(&u);
  std::string cpu = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.compare(0, 10, "model name") == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  std::printf("bench_core  pyroscope.hpp %s  %s  %s %s  %s, %u hardware threads\n", PYROSCOPE_VERSION_STRING, date,
              u.sysname, u.release, cpu.c_str(), std::thread::hardware_concurrency());
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when the output goes to a file
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") o.size = Options::Size::quick;
    else if (a == "--smoke") o.size = Options::Size::smoke;
    else if (a == "--keep") o.keep = true;
    else if (a == "--query-only") o.query_only = true;
    else if (a == "--dir" && i + 1 < argc) o.dir = argv[++i];
    else if (a == "--seed" && i + 1 < argc) o.seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--deep-blocks" && i + 1 < argc) o.deep_blocks = std::strtoull(argv[++i], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: bench_core [--quick | --smoke] [--query-only] [--dir DIR] [--keep] [--seed N] [--deep-blocks N]\n");
      return 2;
    }
  }
  const bool full = o.size == Options::Size::full, smoke = o.size == Options::Size::smoke;
  const uint64_t hour_intervals = full ? 360 : smoke ? 12 : 60;
  // A deep block is ~25 MB of folded text and a ~370k-node tree: 120 blocks (20 min) keep the full run
  // within minutes; --deep-blocks 360 writes the whole hour.
  const uint64_t deep_intervals = o.deep_blocks ? o.deep_blocks : full ? 120 : smoke ? 3 : 20;
  const size_t deep_pool = smoke ? 2400 : 21000;  // half of it per block: >= 10k distinct stacks
  const uint64_t year_blocks = full ? 3153600 : smoke ? 20000 : 259200;
  const size_t query_count = full ? 2000 : smoke ? 200 : 500;

  print_machine();
  std::printf("load average at start: %s\n", load_average().c_str());
  std::printf("mode: %s (storage: %" PRIu64 " + %" PRIu64 " intervals; query: %" PRIu64 " blocks, %zu queries)\n",
              full ? "full" : smoke ? "smoke" : "quick", hour_intervals, deep_intervals, year_blocks, query_count);
  auto started = Clock::now();

  if (o.query_only) {
    run_query(o, year_blocks, query_count);
    std::printf("\ntotal %.1f s; %d correctness check(s) failed\n", seconds_since(started), g_failures);
    return g_failures ? 1 : 0;
  }

  // --- storage ---
  std::printf("\n== Storage: bytes per 10 s block ==\n");
  auto ride_symbols = std::make_shared<pyroscope::SymbolTable>();
  Rideshare ride(ride_symbols);
  std::vector<pyroscope::SeriesKey> ride_keys;
  for (size_t s = 0; s < ride.series_count(); ++s) ride_keys.push_back(ride.key(s));
  Rng ride_rng(o.seed);
  std::string ride_all_text;  // kept for the import benchmark
  StorageFigures rf = run_storage(o, "rideshare", hour_intervals, ride_keys, ride_symbols,
                                  [&](uint64_t i, size_t s, pyroscope::Tree* t, std::string* text) {
                                    double load = 1.0 + 0.3 * std::sin(static_cast<double>(i) / 40.0);
                                    ride.block(s, ride_rng, load, t, text);
                                    ride_all_text += *text;
                                  });
  print_storage(rf);

  auto deep_symbols = std::make_shared<pyroscope::SymbolTable>();
  DeepCpp deep(deep_symbols, deep_pool, o.seed + 1);
  Rng deep_rng(o.seed + 2);
  std::string deep_first_text;
  StorageFigures df = run_storage(o, "deep C++", deep_intervals, {deep.key()}, deep_symbols,
                                  [&](uint64_t i, size_t, pyroscope::Tree* t, std::string* text) {
                                    deep.block(deep_rng, t, text);
                                    if (i == 0) deep_first_text = *text;
                                  });
  print_storage(df);
  std::printf("  (deep: minimum stack depth %zu, %u distinct function names)\n", deep.min_depth(),
              deep_symbols->size());

  std::printf("\nmultiplier m, storage (write amplification = stored trees / blocks):\n");
  std::printf("  %3s | %-44s | %-44s\n", "", "rideshare", "deep C++");
  std::printf("  %3s | %12s %14s %16s | %12s %14s %16s\n", "m", "bytes/block", "stored/blocks", "cpu us/append",
              "bytes/block", "stored/blocks", "cpu ms/append");
  for (size_t mi = 0; mi < kMultipliers.size(); ++mi)
    std::printf("  %3u | %12.0f %14.3f %16.1f | %12.0f %14.3f %16.2f\n", kMultipliers[mi],
                static_cast<double>(rf.file_bytes[mi]) / rf.blocks,
                static_cast<double>(rf.stored_trees[mi]) / rf.blocks, rf.append_seconds[mi] / rf.blocks * 1e6,
                static_cast<double>(df.file_bytes[mi]) / df.blocks,
                static_cast<double>(df.stored_trees[mi]) / df.blocks, df.append_seconds[mi] / df.blocks * 1e3);

  if (!smoke) {
    std::printf("\ntargets (storage, m=10):\n");
    for (const StorageFigures* f : {&rf, &df}) {
      double file = static_cast<double>(f->file_bytes[2]);
      std::printf("  %-10s >= 20x smaller than raw: %.1fx %s;  smaller than gzip -6 per block: %.2fx %s;  "
                  "than gzip -6 of the whole run: %.2fx %s\n",
                  f->name.c_str(), f->raw_bytes / file, f->raw_bytes / file >= 20 ? "MET" : "MISSED",
                  f->gzip_block_bytes / file, f->gzip_block_bytes > file ? "MET" : "MISSED", f->gzip_whole_bytes / file,
                  f->gzip_whole_bytes > file ? "MET" : "MISSED");
    }
  }

  // --- folded import ---
  std::printf("\n== Folded import: lines per CPU second into a Tree vs an unordered_map count ==\n");
  run_import(o, "rideshare (all blocks)", ride_all_text);
  run_import(o, "deep C++ (one block)", deep_first_text);

  // --- query ---
  run_query(o, year_blocks, query_count);

  std::printf("\ntotal %.1f s; load average at the end: %s; %d correctness check(s) failed\n", seconds_since(started),
              load_average().c_str(), g_failures);
  return g_failures ? 1 : 0;
}
