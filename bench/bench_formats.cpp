// bench_formats: pprof import and export of a 100k-distinct-stack profile against `go tool pprof`
// reading (-raw) and rewriting (-proto) the same file in the same run. Each measured step runs as a
// child process, so its wall time and peak RSS (wait4's ru_maxrss) are its own.
//
//   bench_formats [--stacks N] [--runs R] [--dir DIR] [--gen PATH/gen_folded.py]
//   bench_formats --smoke            tiny profile, correctness only (CTest)
//
// The profile: shared/bench/gen_folded.py N 1 (deep C++-like stacks, long template names), imported
// as folded text and written as gzipped pprof by our exporter; go tool pprof must read it back with the
// same total (checked), so both sides parse one valid file. Internal child modes:
//   bench_formats --child-import FILE            read + import_profile (the result is checked)
//   bench_formats --child-export FILE.pyro OUT   open + query + export_pprof (gzip)
// The implementation is linked from pyroscope_impl_reader (CMakeLists.txt): without the sampler,
// with zlib and the JSON importers.
#include "pyroscope.hpp"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_formats: %s\n", what.c_str());
  std::exit(1);
}

void must(const pyroscope::Status& st, const std::string& what) {
  if (!st.ok()) die(what + ": " + st.to_string());
}

std::string read_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) die("cannot read " + path);
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

void write_file(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) die("cannot write " + path);
}

pyroscope::ByteSpan span_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

struct Measure {
  double seconds = 0;
  long max_rss_kb = 0;
  std::string out;  // the child's standard output
};

// Runs argv with stdout captured (or sent to out_path), returns wall time and peak RSS.
Measure run(const std::vector<std::string>& argv, const std::string& out_path = "", bool quiet_stderr = false) {
  int pipe_fds[2];
  if (out_path.empty() && ::pipe(pipe_fds) != 0) die("pipe");
  const auto start = std::chrono::steady_clock::now();
  std::fflush(stdout);  // a forked child must not print this process's buffered output again
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if (out_path.empty()) {
      ::dup2(pipe_fds[1], 1);
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
    } else {
      FILE* f = std::freopen(out_path.c_str(), "wb", stdout);
      if (!f) _exit(127);
    }
    // go tool pprof tells on stderr that the profile names no binary: not a figure, not an error.
    if (quiet_stderr)
      if (FILE* null = std::fopen("/dev/null", "w")) ::dup2(fileno(null), 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  Measure m;
  if (out_path.empty()) {
    ::close(pipe_fds[1]);
    char buf[1 << 16];
    ssize_t n;
    while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0) {
      if (m.out.size() < (1u << 20)) m.out.append(buf, size_t(n));  // -raw prints ~100 MB: keep the head
    }
    ::close(pipe_fds[0]);
  }
  int status = 0;
  struct rusage usage;
  if (::wait4(pid, &status, 0, &usage) != pid) die("wait4");
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.max_rss_kb = usage.ru_maxrss;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("'" + argv[0] + " " + (argv.size() > 1 ? argv[1] : "") + "' failed");
  return m;
}

int child_import(const std::string& path) {
  const std::string bytes = read_file(path);
  pyroscope::ImportOptions options;
  options.app = "bench";
  std::vector<pyroscope::ProfileBlock> blocks;
  pyroscope::ImportReport report;
  must(pyroscope::import_profile(span_of(bytes), options, &blocks, &report), "import " + path);
  uint64_t total = 0, nodes = 0;
  for (const pyroscope::ProfileBlock& b : blocks) {
    total += b.tree.total();
    nodes += b.tree.node_count();
  }
  std::printf("total %" PRIu64 " nodes %" PRIu64 "\n", total, nodes);
  return 0;
}

int child_export(const std::string& pyro, const std::string& out) {
  pyroscope::Dataset data;
  must(data.add_file(pyro), "open " + pyro);
  const pyroscope::TimeRange span = data.time_span();
  const int64_t first = span.from, end = span.until;
  pyroscope::QueryResult result;
  must(data.query("bench.cpu{}", first, end, &result), "query");
  std::string bytes;
  pyroscope::ExportOptions options;
  options.from = first;
  options.until = end;
  must(pyroscope::export_pprof({{result.type, result.info, &result.tree}}, options, &bytes), "export");
  write_file(out, bytes);
  std::printf("total %" PRIu64 "\n", result.tree.total());
  return 0;
}

int child_prepare(const std::string& dir, int stacks, std::string gen) {
  // The folded profile: gen_folded.py when it is there (shared/bench beside the repository), else the
  // same shape made here (smoke runs and machines without shared/).
  const std::string folded_path = dir + "/bench_formats.folded";
  if (gen.empty()) {
    const std::string repo = PYROSCOPE_SOURCE_DIR;
    const std::string candidate = repo + "/../shared/bench/gen_folded.py";
    if (::access(candidate.c_str(), R_OK) == 0) gen = candidate;
  }
  std::string folded;
  if (!gen.empty()) {
    run({"python3", gen, std::to_string(stacks), "1"}, folded_path);
    folded = read_file(folded_path);
  } else {
    for (int i = 0; i < stacks; i++) {
      folded += "main;app::Server::Run()";
      for (int d = 0; d < 8 + i % 24; d++) folded += ";app::core::Handler" + std::to_string((i * 7 + d * 13) % 997) + "<int>(std::string const&)";
      folded += " " + std::to_string(1 + i % 5) + "\n";
    }
    write_file(folded_path, folded);
  }
  pyroscope::Tree tree;
  must(pyroscope::Tree::from_folded(folded, &tree), "folded text");
  std::string pprof;
  pyroscope::ExportOptions options;
  options.from = 1800000000;
  options.until = 1800000010;
  must(pyroscope::export_pprof({{"cpu", pyroscope::default_series_info("cpu"), &tree}}, options, &pprof), "export");
  const std::string pprof_path = dir + "/bench_formats.pb.gz";
  write_file(pprof_path, pprof);
  std::printf("profile: %d distinct stacks, %" PRIu64 " samples, %u tree nodes, %zu symbols; folded %.1f MB, pprof.gz %.1f MB\n",
              stacks, tree.total(), tree.node_count(), size_t(tree.symbols().size()), folded.size() / 1e6, pprof.size() / 1e6);

  // A .pyro of the same profile for the export step.
  const std::string pyro_path = dir + "/bench_formats.pyro";
  std::remove(pyro_path.c_str());
  {
    pyroscope::Writer writer;
    must(writer.open(pyro_path), pyro_path);
    must(writer.append(pyroscope::SeriesKey("bench", {}), 1800000000, tree), "append");
    must(writer.close(), "close");
  }

  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--child-import") == 0) return child_import(argv[2]);
  if (argc >= 4 && std::strcmp(argv[1], "--child-export") == 0) return child_export(argv[2], argv[3]);
  if (argc >= 4 && std::strcmp(argv[1], "--child-prepare") == 0) return child_prepare(argv[2], std::atoi(argv[3]), argc > 4 ? argv[4] : "");
  int stacks = 100000, runs = 3;
  bool smoke = false;
  std::string dir = "/tmp", gen;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--stacks" && i + 1 < argc) stacks = std::atoi(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--gen" && i + 1 < argc) gen = argv[++i];
    else if (a == "--smoke") smoke = true;
    else die("unknown argument " + a);
  }
  if (smoke) {
    stacks = 500;
    runs = 1;
  }
  char self_path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n <= 0) die("readlink /proc/self/exe");
  self_path[n] = '\0';
  const std::string self = self_path;

  // The profile is made by a child process, so that this one stays small: a measured child starts as
  // a copy of its parent, and its peak RSS would count the parent's memory.
  const std::string pprof_path = dir + "/bench_formats.pb.gz";
  const std::string pyro_path = dir + "/bench_formats.pyro";
  Measure prepared = run({self, "--child-prepare", dir, std::to_string(stacks), gen});
  std::fputs(prepared.out.c_str(), stdout);
  const size_t total_at = prepared.out.find(", ");
  const std::string total_text = prepared.out.substr(prepared.out.find("stacks, ") + 8);
  const uint64_t total_samples = std::strtoull(total_text.c_str(), nullptr, 10);
  if (total_at == std::string::npos || total_samples == 0) die("prepare printed: " + prepared.out);

  // go tool pprof, called as the binary `go tool` runs (so the go command's own start-up is not counted).
  std::string go_pprof;
  if (!smoke) {
    Measure where = run({"go", "tool", "-n", "pprof"});
    go_pprof = where.out.substr(0, where.out.find('\n'));
    if (go_pprof.empty()) die("go tool -n pprof printed nothing");
  }

  const std::string total_line = "total " + std::to_string(total_samples);
  std::vector<double> ours_import_s, ours_import_kb, ours_export_s, ours_export_kb, go_raw_s, go_raw_kb, go_proto_s, go_proto_kb;
  for (int r = 0; r < runs; r++) {
    Measure imp = run({self, "--child-import", pprof_path});
    if (imp.out.compare(0, total_line.size(), total_line) != 0) die("import total: " + imp.out);
    ours_import_s.push_back(imp.seconds);
    ours_import_kb.push_back(double(imp.max_rss_kb));
    const std::string exported = dir + "/bench_formats.export.pb.gz";
    Measure exp = run({self, "--child-export", pyro_path, exported});
    if (exp.out.compare(0, total_line.size(), total_line) != 0) die("export total: " + exp.out);
    ours_export_s.push_back(exp.seconds);
    ours_export_kb.push_back(double(exp.max_rss_kb));
    if (smoke) {
      // The export imports back with the same total.
      Measure again = run({self, "--child-import", exported});
      if (again.out.compare(0, total_line.size(), total_line) != 0) die("re-import total: " + again.out);
      continue;
    }
    Measure raw = run({go_pprof, "-raw", pprof_path}, "", true);
    go_raw_s.push_back(raw.seconds);
    go_raw_kb.push_back(double(raw.max_rss_kb));
    Measure proto = run({go_pprof, "-proto", pprof_path}, dir + "/bench_formats.go.pb.gz", true);
    go_proto_s.push_back(proto.seconds);
    go_proto_kb.push_back(double(proto.max_rss_kb));
    // go tool pprof reads the same total from the file we measure: the two sides parse one valid profile.
    Measure top = run({go_pprof, "-top", "-nodecount=1", "-unit=samples", pprof_path}, "", true);
    const std::string expected = "of " + std::to_string(total_samples) + "samples total";
    if (r == 0 && top.out.find(expected) == std::string::npos) die("go tool pprof -top does not say '" + expected + "':\n" + top.out);
  }
  if (smoke) {
    std::printf("smoke: import and export totals checked (%s)\n", total_line.c_str());
    return 0;
  }
  std::printf("\nmedian of %d runs (wall time, peak RSS):\n", runs);
  std::printf("  %-44s %8.3f s %8.1f MB\n", "ours: import_profile (gunzip, parse, build)", median(ours_import_s), median(ours_import_kb) / 1024);
  std::printf("  %-44s %8.3f s %8.1f MB\n", "go tool pprof -raw (gunzip, parse, print)", median(go_raw_s), median(go_raw_kb) / 1024);
  std::printf("  %-44s %8.3f s %8.1f MB\n", "ours: open .pyro, query, export_pprof (gzip)", median(ours_export_s), median(ours_export_kb) / 1024);
  std::printf("  %-44s %8.3f s %8.1f MB\n", "go tool pprof -proto (read, write gzip)", median(go_proto_s), median(go_proto_kb) / 1024);
  std::printf("import: %.2fx the speed of go tool pprof -raw, %.2fx its peak memory\n",
              median(go_raw_s) / median(ours_import_s), median(ours_import_kb) / median(go_raw_kb));
  std::printf("export: %.2fx the speed of go tool pprof -proto, %.2fx its peak memory\n",
              median(go_proto_s) / median(ours_export_s), median(ours_export_kb) / median(go_proto_kb));
  return 0;
}
