// Writes the browser and screenshot tests' data with the header's Writer:
//   rideshare.pyro  ride-sharing-app{region, vehicle}, 60 blocks of 10 s from 2023-11-14 22:13:20 UTC;
//                   in the second half check_driver_availability grows and json::parse shrinks, so a
//                   diff of the halves has red and green; metrics::emit has 400 one-sample children
//                   (narrow nodes that merge into blocks); an overload, a recursive JSON parser, template
//                   and lambda frames for the analysis views. Plus a second app, "billing".
//   deep.pyro       deep-app: stacks 10,000 frames deep.
//   sample.folded   folded text (perf / FlameGraph style).
//   corrupt.pyro    rideshare.pyro with its header overwritten: must give a readable error.
//   month.pyro      (with --month, only it) 30 days of four regions, a block every 10 s: the viewer
//                   benchmark's tag breakdown.
//   hostile.pyro    names that try to end or derail a share file's <script> (security.test.js):
//                   hostile-app{env=...} with such tag values, a tag key and frame names, and an app
//                   whose name is one (the name rules forbid it, a file can still hold it).
//   heap.pb.gz      a gzipped pprof heap profile, as Go writes them: alloc_space / inuse_space in bytes
//                   (cache::fill holds 75 % of the bytes in use), for the formats and units.
// usage: make_test_data OUTDIR [--month]
// The implementation is the build's pyroscope_impl (with zlib: tests/browser/CMakeLists.txt).
#include "pyroscope.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace {

constexpr int64_t kStart = 1700000000;  // a multiple of 10
constexpr int kBlocks = 60;

bool check(const pyroscope::Status& status, const char* what) {
  if (status.ok()) return true;
  std::fprintf(stderr, "make_test_data: %s: %s\n", what, status.to_string().c_str());
  return false;
}

void add(pyroscope::Tree* tree, const std::string& folded_stack, uint64_t count) {
  std::vector<std::string_view> frames;
  size_t begin = 0;
  while (begin <= folded_stack.size()) {
    size_t end = folded_stack.find(';', begin);
    if (end == std::string::npos) end = folded_stack.size();
    frames.emplace_back(folded_stack.data() + begin, end - begin);
    begin = end + 1;
  }
  tree->insert(frames, count);
}

bool write_rideshare(const std::string& path) {
  pyroscope::Writer writer;
  if (!check(writer.open(path), path.c_str())) return false;
  const char* regions[] = {"eu-north", "us-east", "ap-south"};
  const char* vehicles[] = {"car", "bike", "scooter"};
  for (int block = 0; block < kBlocks; ++block) {
    const bool second_half = block >= kBlocks / 2;
    for (int r = 0; r < 3; ++r) {
      for (int v = 0; v < 3; ++v) {
        pyroscope::Tree tree;
        const std::string vehicle = vehicles[v];
        const std::string handle = "main;rideshare::Server::handle(Request const&)";
        const std::string order = handle + ";rideshare::order_" + vehicle + "(int)";
        add(&tree, order + ";rideshare::find_nearest_vehicle(Region, Vehicle);geo::distance(Point, Point)",
            200 + (r == 0 ? 300 : 0) + static_cast<uint64_t>(v) * 50);
        add(&tree, order + ";rideshare::check_driver_availability(Region);std::mutex::lock()",
            second_half ? 600 : 60);
        add(&tree, handle + ";rideshare::parse_request(Request const&);json::parse(std::string_view)",
            second_half ? 80 : 450);
        // For the analysis views: an overload (merged with the one above under short names), a
        // recursive descent parser (recursion collapsed), template and lambda frames (short names).
        add(&tree, handle + ";rideshare::parse_request(Request const&);json::parse(char const*, unsigned long)", 12);
        add(&tree, handle + ";rideshare::parse_request(Request const&);json::parse(std::string_view);"
                            "json::parse_value(json::Cursor&);json::parse_array(json::Cursor&);json::parse_value(json::Cursor&);"
                            "json::parse_object(json::Cursor&);json::parse_value(json::Cursor&);json::parse_string(json::Cursor&)",
            40);
        add(&tree, order + ";rideshare::find_nearest_vehicle(Region, Vehicle);"
                           "std::vector<rideshare::Vehicle, std::allocator<rideshare::Vehicle> >::operator[](unsigned long)",
            30);
        add(&tree, handle + ";rideshare::Server::handle(Request const&)::{lambda(Response&)#1}::operator()(Response&) const;"
                            "rideshare::write_response(Response&)",
            15);
        add(&tree, "main;runtime::background();gc::collect()", 100);
        add(&tree, handle + ";rideshare::write_response(Response&);zlib::deflate(Stream&)", 120 + static_cast<uint64_t>(r) * 10);
        for (int m = 0; m < 400; ++m) {
          add(&tree, handle + ";metrics::emit();metrics::counter_" + std::to_string(m) + "()", 1);
        }
        const pyroscope::SeriesKey key("ride-sharing-app", {{"region", regions[r]}, {"vehicle", vehicles[v]}});
        if (!check(writer.append(key, kStart + block * 10, tree), "append")) return false;
      }
    }
    pyroscope::Tree billing;
    add(&billing, "main;billing::Invoice::render();pdf::write()", 30);
    add(&billing, "main;billing::Invoice::total();decimal::mul()", 15);
    if (!check(writer.append(pyroscope::SeriesKey("billing", {{"region", "eu-north"}}), kStart + block * 10, billing),
               "append billing")) {
      return false;
    }
  }
  return check(writer.close(), "close");
}

bool write_deep(const std::string& path) {
  pyroscope::Writer writer;
  if (!check(writer.open(path), path.c_str())) return false;
  for (int block = 0; block < 6; ++block) {
    pyroscope::Tree tree;
    std::vector<std::string> names;
    for (int d = 0; d < 10000; ++d) names.push_back("recurse::level_" + std::to_string(d) + "()");
    std::vector<std::string_view> frames(names.begin(), names.end());
    tree.insert(frames, 50);
    frames.resize(5000);
    frames.push_back("leaf::halfway()");
    tree.insert(frames, 20);
    frames.resize(10);
    frames.push_back("leaf::shallow()");
    tree.insert(frames, 30);
    if (!check(writer.append(pyroscope::SeriesKey("deep-app", {}), kStart + block * 10, tree), "append deep")) {
      return false;
    }
  }
  return check(writer.close(), "close deep");
}

// The strings of docs/security.md's share file tests. Each would run a script, or stop the page, if a
// share file embedded it as it is.
const char* const kHostileValue = "</SCRIPT><SCRIPT>alert(location.href)</SCRIPT>";
const char* const kHostileComment = "<!--<script>";
const char* const kHostileKey = "k</ScRiPt><script>alert(4)</script>";
const char* const kHostileFrame = "</ScRiPt><!--<script>alert(2)//";
const char* const kHostileApp = "</SCRIPT><SCRIPT>alert(3)</SCRIPT>";

bool write_hostile(const std::string& path) {
  pyroscope::Writer writer;
  if (!check(writer.open(path), "open hostile")) return false;
  for (int b = 0; b < 6; ++b) {
    const int64_t t = kStart + b * 10;
    pyroscope::Tree tree;
    add(&tree, std::string("main;handle;") + kHostileFrame + ";work", 40);
    add(&tree, std::string("main;") + kHostileComment + ";" + kHostileValue, 25);
    add(&tree, "main;idle", 10);
    if (!check(writer.append(pyroscope::SeriesKey("hostile-app", {{"env", kHostileValue}, {kHostileKey, "v"}}), t, tree),
               "append hostile") ||
        !check(writer.append(pyroscope::SeriesKey("hostile-app", {{"env", kHostileComment}, {kHostileKey, "v"}}), t, tree),
               "append hostile") ||
        !check(writer.append(pyroscope::SeriesKey("hostile-app", {{"env", "plain"}}), t, tree), "append hostile") ||
        !check(writer.append(pyroscope::SeriesKey(kHostileApp, {}), t, tree), "append hostile"))
      return false;
  }
  return check(writer.close(), "close hostile");
}

bool write_text(const std::string& path, const std::string& text);

bool write_heap_pprof(const std::string& path) {
  pyroscope::Tree allocated, in_use;
  add(&allocated, "main;cache::fill(unsigned long);operator new(unsigned long)", 48ull << 20);
  add(&allocated, "main;request::parse(std::string_view);std::string::_M_create(unsigned long&, unsigned long)", 32ull << 20);
  add(&in_use, "main;cache::fill(unsigned long);operator new(unsigned long)", 3ull << 20);
  add(&in_use, "main;request::parse(std::string_view);std::string::_M_create(unsigned long&, unsigned long)", 1ull << 20);
  pyroscope::SeriesInfo bytes = pyroscope::default_series_info("alloc_space");
  bytes.period = 524288;
  bytes.period_type = "space";
  bytes.period_unit = "bytes";
  pyroscope::SeriesInfo gauge = pyroscope::default_series_info("inuse_space");
  gauge.period = bytes.period;
  gauge.period_type = bytes.period_type;
  gauge.period_unit = bytes.period_unit;
  pyroscope::ExportOptions options;
  options.from = kStart;
  options.until = kStart + 10;
  std::string out;
  if (!check(pyroscope::export_pprof({{"alloc_space", bytes, &allocated}, {"inuse_space", gauge, &in_use}}, options, &out),
             "heap pprof"))
    return false;
  return write_text(path, out);
}

bool write_text(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  return std::fclose(f) == 0 && ok;
}

bool write_corrupt(const std::string& from, const std::string& to) {
  FILE* in = std::fopen(from.c_str(), "rb");
  if (!in) return false;
  std::string bytes;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) bytes.append(buf, n);
  std::fclose(in);
  for (size_t i = 0; i < 64 && i < bytes.size(); ++i) bytes[i] = static_cast<char>(0xA5 ^ i);
  return write_text(to, bytes);
}

// 30 days of a rideshare-like app in four regions, a 10 s block per region all the way (what four
// processes profiling themselves for a month write): the viewer benchmark's tag breakdown data.
// eu-north doubles its checkout work on days 20 to 22.
bool write_month(const std::string& path) {
  pyroscope::Writer writer;
  if (!check(writer.open(path), path.c_str())) return false;
  const char* regions[] = {"eu-north", "us-east", "ap-south", "sa-east"};
  constexpr int64_t kDays = 30, kBlocksPerDay = 86400 / 10;
  for (int64_t block = 0; block < kDays * kBlocksPerDay; ++block) {
    const int64_t day = block / kBlocksPerDay;
    const int64_t hour = block % kBlocksPerDay / 360;
    const uint64_t load = 40 + static_cast<uint64_t>(hour >= 8 && hour < 20 ? 30 : 0);  // daytime traffic
    for (int r = 0; r < 4; ++r) {
      pyroscope::Tree tree;
      const std::string handle = "main;rideshare::Server::handle(Request const&)";
      add(&tree, handle + ";rideshare::order_car(int);rideshare::find_nearest_vehicle(Region, Vehicle)", load + static_cast<uint64_t>(r) * 5);
      add(&tree, handle + ";rideshare::checkout(Order&);payments::charge(Card const&)",
          r == 0 && day >= 20 && day < 23 ? 2 * load : load / 2);
      add(&tree, handle + ";rideshare::parse_request(Request const&);json::parse(std::string_view)", 10);
      add(&tree, "main;runtime::background();gc::collect()", 5);
      const pyroscope::SeriesKey key("ride-sharing-app", {{"region", regions[r]}});
      if (!check(writer.append(key, kStart + block * 10, tree), "append month")) return false;
    }
  }
  return check(writer.close(), "close month");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[2]) == "--month") {
    const std::string path = std::string(argv[1]) + "/month.pyro";
    std::remove(path.c_str());
    if (!write_month(path)) return 1;
    std::printf("make_test_data: wrote %s\n", path.c_str());
    return 0;
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_test_data OUTDIR [--month]   (--month: only month.pyro, the benchmark's 30 days)\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (const char* name : {"/rideshare.pyro", "/deep.pyro", "/hostile.pyro"}) std::remove((dir + name).c_str());
  if (!write_rideshare(dir + "/rideshare.pyro")) return 1;
  if (!write_deep(dir + "/deep.pyro")) return 1;
  if (!write_hostile(dir + "/hostile.pyro")) return 1;
  const std::string folded =
      "main;server::accept();server::handle();db::query(std::string const&) 120\n"
      "main;server::accept();server::handle();json::encode(Value const&) 45\n"
      "main;server::accept();server::handle() 10\n"
      "main;scheduler::tick();timer::fire() 30\n";
  if (!write_text(dir + "/sample.folded", folded)) return 1;
  if (!write_corrupt(dir + "/rideshare.pyro", dir + "/corrupt.pyro")) return 1;
  if (!write_heap_pprof(dir + "/heap.pb.gz")) return 1;
  std::printf("make_test_data: wrote rideshare.pyro deep.pyro hostile.pyro sample.folded corrupt.pyro heap.pb.gz to %s\n",
              dir.c_str());
  return 0;
}
