// Writes the seed corpora of the fuzz targets: make_seed_corpus OUT_DIR creates OUT_DIR/<target>/ with
// a few small valid inputs each (made with the header itself, so they follow the current format).
#define PYROSCOPE_NO_SAMPLER 1
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

std::string g_out;

void fail(const std::string& what) {
  std::fprintf(stderr, "make_seed_corpus: %s\n", what.c_str());
  std::exit(1);
}

void must(const pyroscope::Status& st, const std::string& what) {
  if (!st.ok()) fail(what + ": " + st.to_string());
}

void write_seed(const std::string& target, const std::string& name, const std::string& bytes) {
  std::string dir = g_out + "/" + target;
  ::mkdir(g_out.c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0)
    fail("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot read " + path);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

const char* const kFolded[] = {
    "main;ride_sharing::order_car(int);find_nearest_vehicle;mutex_lock 12\n"
    "main;ride_sharing::order_bike(int);find_nearest_vehicle 5\nmain 1\n",
    "a;b;c 3\r\na;b 2\r\n\r\n  \na;b;c 4   \n",
    "start_thread;std::vector<std::pair<int, std::string> >::push_back(std::pair<int, std::string>&&) 7\n"
    "start_thread;operator new(unsigned long) 2\n",
    "x;x;x;x 1\nx;x 1\ny 4294967296\n",
};

pyroscope::Tree tree_of(const std::string& folded) {
  pyroscope::Tree tree;
  must(tree.add_folded(folded), "seed folded text");
  return tree;
}

// Small .pyro files: one series; several series with tags over enough blocks for upper levels (m=4);
// an empty file.
void file_seeds() {
  char tmpl[] = "/tmp/pyro-seed-XXXXXX";
  if (!::mkdtemp(tmpl)) fail("mkdtemp");
  std::string dir = tmpl;
  const int64_t t0 = 1800000000;
  {
    std::string path = dir + "/one.pyro";
    pyroscope::Writer w;
    must(w.open(path), path);
    for (int i = 0; i < 3; ++i)
      must(w.append(pyroscope::SeriesKey("app", {}), t0 + 10 * i, tree_of(kFolded[0])), "append");
    must(w.close(), "close");
    write_seed("fuzz_file", "one_series.pyro", read_file(path));
    std::remove(path.c_str());
  }
  {
    std::string path = dir + "/tags.pyro";
    pyroscope::WriterOptions options;
    options.multiplier = 4;
    pyroscope::Writer w;
    must(w.open(path, options), path);
    for (int i = 0; i < 18; ++i) {
      must(w.append(pyroscope::SeriesKey("ride-sharing-app", {{"region", "eu"}, {"vehicle", "car"}}), t0 + 10 * i,
                    tree_of(kFolded[i % 2])),
           "append");
      if (i % 3 == 0)
        must(w.append(pyroscope::SeriesKey("ride-sharing-app", {{"region", "us"}}), t0 + 10 * i,
                      tree_of(kFolded[2])),
             "append");
    }
    must(w.close(), "close");
    write_seed("fuzz_file", "tagged_m4.pyro", read_file(path));
    std::remove(path.c_str());
  }
  {
    // The same kind of file closed with its index (docs/format.md, "Persisted index"): the reader
    // opens it from the index and checks each record and chunk when a query first reads it.
    std::string path = dir + "/indexed.pyro";
    pyroscope::WriterOptions options;
    options.multiplier = 4;
    options.seal_delay_blocks = 1;
    options.index_min_trees = 1;
    pyroscope::Writer w;
    must(w.open(path, options), path);
    for (int i = 0; i < 40; ++i) {
      must(w.append(pyroscope::SeriesKey("ride-sharing-app", {{"vehicle", "car"}}), t0 + 10 * i, tree_of(kFolded[i % 3])),
           "append");
      if (i % 4 == 1)  // a late part of the block before
        must(w.append(pyroscope::SeriesKey("ride-sharing-app", {{"vehicle", "car"}}), t0 + 10 * (i - 1),
                      tree_of(kFolded[2])),
             "append");
    }
    must(w.close(), "close");
    std::string bytes = read_file(path);
    write_seed("fuzz_file", "indexed_m4.pyro", bytes);
    // Found by fuzz_file: the header's multiplier changed to 3 (its checksum made right) after the
    // index was written. It once opened from the index, whose upper nodes then named no span of the
    // blocks, and a query merged every block, over the merge bound.
    bytes[24] = 3;
    const uint32_t crc = pyroscope::detail::crc32(bytes.data(), 60);
    for (int b = 0; b < 4; ++b) bytes[size_t(60 + b)] = char(crc >> (8 * b));
    write_seed("fuzz_file", "indexed_m4_header_m3.pyro", bytes);
    std::remove(path.c_str());
  }
  {
    // Blocks 300 years apart, with upper levels written: a query over the whole span once walked every
    // empty node between them (250 M nodes at m = 4; fuzz_file's timeout catches that again).
    std::string path = dir + "/far_apart.pyro";
    pyroscope::WriterOptions options;
    options.multiplier = 4;
    pyroscope::Writer w;
    must(w.open(path, options), path);
    for (int i = 0; i < 10; ++i)
      must(w.append(pyroscope::SeriesKey("app", {}), t0 + 10 * i, tree_of(kFolded[i % 3])), "append");
    must(w.append(pyroscope::SeriesKey("app", {}), t0 + 10 * 1000000000LL, tree_of(kFolded[0])), "append");
    must(w.close(), "close");
    write_seed("fuzz_file", "far_apart.pyro", read_file(path));
    std::remove(path.c_str());
  }
  {
    // An average series (in-use memory): its query tree is the blocks' mean, not their sum. The
    // harness once checked every series as a sum, and aborted on a mutated file that held one.
    std::string path = dir + "/average.pyro";
    pyroscope::WriterOptions options;
    options.multiplier = 4;
    pyroscope::Writer w;
    must(w.open(path, options), path);
    const pyroscope::SeriesInfo inuse = pyroscope::default_series_info("inuse_space");
    for (int i = 0; i < 9; ++i)
      must(w.append(pyroscope::SeriesKey("app", "inuse_space", {}), t0 + 10 * i, tree_of(kFolded[i % 3]), &inuse),
           "append");
    must(w.close(), "close");
    write_seed("fuzz_file", "average_m4.pyro", read_file(path));
    std::remove(path.c_str());
  }
  {
    std::string path = dir + "/empty.pyro";
    pyroscope::Writer w;
    must(w.open(path), path);
    must(w.close(), "close");
    write_seed("fuzz_file", "empty.pyro", read_file(path));
    std::remove(path.c_str());
  }
  // A file of the old format version (the writer only makes new ones): its trees are ordered by id.
  write_seed("fuzz_file", "golden-v1.pyro", read_file(PYROSCOPE_GOLDEN_V1));
  ::rmdir(dir.c_str());
}

void folded_seeds() {
  int i = 0;
  for (const char* text : kFolded) write_seed("fuzz_folded", "seed" + std::to_string(i++) + ".folded", text);
  // Edge inputs: a line without a count (an error), and counts whose sum does not fit in 64 bits.
  write_seed("fuzz_folded", "no_count.folded", "a;b;c 1\nbad line without count\n");
  write_seed("fuzz_folded", "overflow.folded", "a 18446744073709551615\nb 1\n");
}

void tree_seeds() {
  for (int i = 0; i < 4; ++i) {
    auto symbols = std::make_shared<pyroscope::SymbolTable>();
    for (int k = 0; k < 50; ++k) symbols->intern("f" + std::to_string(k));  // the fuzz target's names
    pyroscope::Tree source = tree_of(kFolded[i]);
    pyroscope::Tree tree(symbols);
    tree.merge(source);  // the source's names get ids after f49: the target only needs ids < size
    for (bool by_id : {false, true}) {  // the target's header bit 15 picks the sibling order
      std::string bytes(2, '\0');
      bytes[0] = static_cast<char>(symbols->size() & 0xff);
      bytes[1] = static_cast<char>((symbols->size() >> 8) | (by_id ? 0x80 : 0));
      tree.encode(&bytes, by_id ? pyroscope::Tree::Encoding::children_by_symbol_id
                                : pyroscope::Tree::Encoding::children_by_name);
      write_seed("fuzz_tree_decode", "tree" + std::to_string(i) + (by_id ? "-by-id" : "-by-name") + ".bin", bytes);
    }
  }
}

void trie_seeds() {
  const std::vector<std::vector<std::string>> tables = {
      {"main", "main_loop", "std::vector<int>::push_back(int&&)", "std::vector<int>::reserve(unsigned long)"},
      {"a", "ab", "abc", "b", ""},
      {"app::net::Socket::read()", "app::net::Socket::write()", "app::db::Query::run()", "x"},
  };
  int i = 0;
  for (uint32_t k : {0u, 2u}) {
    for (const auto& names : tables) {
      pyroscope::SymbolTable table;
      for (uint32_t p = 0; p < k; ++p) table.intern("pre::name" + std::to_string(p));
      for (const std::string& n : names) table.intern(n);
      std::string bytes(1, static_cast<char>(k));
      table.encode_trie(k, &bytes);
      write_seed("fuzz_trie", "trie" + std::to_string(i++) + ".bin", bytes);
    }
  }
}

void selector_seeds() {
  const char* const selectors[] = {
      "app{}",
      "app",
      "{}",
      "ride-sharing-app.cpu{region=\"eu-north\",vehicle!=\"car\"}",
      "app{region=~\"eu-.*|us-(east|west)\", vehicle!~\"[bc]ar\\\\d?\"}",
      "app{k=\"va\\\"l\\\\ue\"}",
      "{region=~\"a{2,5}[^x]+?\"}",
  };
  int i = 0;
  for (const char* s : selectors) write_seed("fuzz_selector", "selector" + std::to_string(i++) + ".txt", s);
}

// The importers' targets: pprof and speedscope files written by the exporters (several types, labels
// are not written by them, so one more hand-made pprof has a label and an inlined frame), perf script
// and .cpuprofile text as the tools print them.
void format_seeds() {
  const pyroscope::Tree cpu = tree_of(kFolded[0]), alloc = tree_of(kFolded[2]);
  pyroscope::SeriesInfo ns = pyroscope::default_series_info("cpu");
  ns.unit = "nanoseconds";
  ns.period = 10000000;
  ns.period_type = "cpu";
  ns.period_unit = "nanoseconds";
  const std::vector<pyroscope::ExportProfile> profiles = {{"cpu", ns, &cpu},
                                                          {"alloc_space", pyroscope::default_series_info("alloc_space"), &alloc}};
  pyroscope::ExportOptions options;
  options.from = 1800000000;
  options.until = 1800000010;
  options.gzip = false;  // this program has no zlib; the target's own build inflates what the fuzzer makes
  std::string bytes;
  must(pyroscope::export_pprof(profiles, options, &bytes), "export pprof");
  write_seed("fuzz_pprof", "two_types.pb", bytes);
  must(pyroscope::export_pprof({profiles[0]}, options, &bytes), "export pprof");
  write_seed("fuzz_pprof", "cpu.pb", bytes);
  // sample_type {samples, count}; a sample with a string label at location 1, whose two lines are an
  // inlined function (function 2) inside function 1; string table "", samples, count, main, inl, k, v.
  const unsigned char labelled[] = {0x0a, 0x04, 0x08, 0x01, 0x10, 0x02, 0x12, 0x0c, 0x0a, 0x01, 0x01, 0x12, 0x01,
                                    0x03, 0x1a, 0x04, 0x08, 0x05, 0x10, 0x06, 0x22, 0x0a, 0x08, 0x01, 0x22, 0x02,
                                    0x08, 0x02, 0x22, 0x02, 0x08, 0x01, 0x2a, 0x04, 0x08, 0x01, 0x10, 0x03, 0x2a,
                                    0x04, 0x08, 0x02, 0x10, 0x04, 0x32, 0x00, 0x32, 0x07, 's',  'a',  'm',  'p',
                                    'l',  'e',  's',  0x32, 0x05, 'c',  'o',  'u',  'n',  't',  0x32, 0x04, 'm',
                                    'a',  'i',  'n',  0x32, 0x03, 'i',  'n',  'l',  0x32, 0x01, 'k',  0x32, 0x01,
                                    'v'};
  write_seed("fuzz_pprof", "labelled_inlined.pb", std::string(reinterpret_cast<const char*>(labelled), sizeof labelled));

  // fuzz_serve_request: a selector byte (bit 0 Connect Push, bits 1-3 the Content-Type, bit 4 multipart
  // parts split at "\n--\n"), the query string, '\n', the body (fuzz/fuzz_serve_request.cpp).
  const std::string pprof_cpu = bytes;
  write_seed("fuzz_serve_request", "folded.txt",
             std::string(1, char(0)) + "name=app.cpu%7Bregion%3Deu%7D&from=1799999990&until=1800000010&sampleRate=100"
             "&spyName=pyspy\nmain;work;hot 90\nmain;idle 10\n");
  write_seed("fuzz_serve_request", "lines.txt", std::string(1, char(0)) + "name=a.wall{k=v}&format=lines&from=now-1h\na;b\na;c\n");
  write_seed("fuzz_serve_request", "pprof.bin", std::string(1, char(1 << 1)) + "name=goapp{env=prod}&format=pprof\n" + pprof_cpu);
  write_seed("fuzz_serve_request", "multipart.bin",
             std::string(1, char(16 | (7 << 1))) + "name=mp.cpu&from=1800000000000&until=1800000010000\n" + pprof_cpu +
                 "\n--\n{\"samples\":{\"display-name\":\"cpu\",\"units\":\"samples\",\"aggregation\":\"average\"}}");
  write_seed("fuzz_serve_request", "push.json",
             std::string(1, char(1 | (2 << 1))) + "\n{\"series\":[{\"labels\":[{\"name\":\"__name__\",\"value\":\"process_cpu\"},"
             "{\"name\":\"service_name\",\"value\":\"x\"}],\"samples\":[{\"ID\":\"1\",\"rawProfile\":"
             "\"CgQIARACEgwKAQESAQMaBAgFEAYiCggBIgIIAiICCAEqBAgBEAMqBAgCEAQyADIHc2FtcGxlczIFY291bnQyBG1haW4yA2lubDIBazIBdg==\"}]}]}");

  must(pyroscope::export_speedscope(profiles, options, &bytes), "export speedscope");
  write_seed("fuzz_speedscope", "sampled.json", bytes);
  write_seed("fuzz_speedscope", "evented.json",
             "{\"shared\":{\"frames\":[{\"name\":\"main\"},{\"name\":\"work\"}]},\"profiles\":[{\"type\":\"evented\","
             "\"name\":\"t\",\"unit\":\"milliseconds\",\"startValue\":0,\"endValue\":9,\"events\":["
             "{\"type\":\"O\",\"frame\":0,\"at\":0},{\"type\":\"O\",\"frame\":1,\"at\":2},"
             "{\"type\":\"C\",\"frame\":1,\"at\":5},{\"type\":\"C\",\"frame\":0,\"at\":9}]}]}");

  write_seed("fuzz_cpuprofile", "node.cpuprofile",
             "{\"nodes\":[{\"id\":1,\"callFrame\":{\"functionName\":\"(root)\",\"url\":\"\",\"lineNumber\":-1},"
             "\"children\":[2,3]},{\"id\":2,\"callFrame\":{\"functionName\":\"main\",\"url\":\"file:///a.js\","
             "\"lineNumber\":3},\"children\":[4]},{\"id\":3,\"callFrame\":{\"functionName\":\"(idle)\"}},"
             "{\"id\":4,\"callFrame\":{\"functionName\":\"\",\"url\":\"file:///lib/u.js\",\"lineNumber\":9}}],"
             "\"startTime\":100,\"endTime\":20000000,\"samples\":[4,4,2,3],\"timeDeltas\":[10,1000,-5,12000000]}");
  write_seed("fuzz_cpuprofile", "parents.cpuprofile",
             "{\"nodes\":[{\"id\":5,\"callFrame\":{\"functionName\":\"a\"}},{\"id\":6,\"parent\":5,"
             "\"callFrame\":{\"functionName\":\"b\"}}],\"samples\":[6,5],\"timeDeltas\":[1,2],\"endTime\":9}");

  write_seed("fuzz_perf_script", "callchains.txt",
             "# header\n"
             "my prog  7073 [001]  1827.480182:     250000 cpu-clock:ppp: \n"
             "\t           1462a handle_amd+0xa (/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2)\n"
             "\t               0 [unknown] ([unknown])\n"
             "\n"
             "sleep  7073  1852.480660:     250000 cpu-clock:ppp: \n"
             "\tffffffff82203249 _raw_spin_unlock_irqrestore+0x19 ([kernel.kallsyms])\n"
             "\t            ddcc std::vector<int>::push_back(int const&)+0x1ac (/usr/bin/prog)\n"
             "\n");
  write_seed("fuzz_perf_script", "no_callchain.txt",
             "sleep 7073/7074 1853.5: 1 page-faults:u:  55d5c0a0 leaf_only+0x10 (/usr/bin/prog)\n"
             "sleep 7073 1854.0: sched:sched_switch: \n\tffff x (y)\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seed_corpus OUT_DIR\n");
    return 2;
  }
  g_out = argv[1];
  file_seeds();
  folded_seeds();
  tree_seeds();
  trie_seeds();
  selector_seeds();
  format_seeds();
  return 0;
}
