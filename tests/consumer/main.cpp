// Uses an installed pyroscope: imports a folded profile, writes it as six 10 s blocks of two series
// into a .pyro file, reads the file back and prints what a query for one series returns.
// Usage: consumer PROFILE.folded OUT.pyro      (exit status 0 when the query returns what was written)
#include "pyroscope.hpp"

#include <cstdio>
#include <fstream>
#include <sstream>

std::string describe_hot_path(const pyroscope::Tree& tree, uint32_t node, int max_depth);  // other.cpp

static int fail(const char* what, const pyroscope::Status& status) {
  std::fprintf(stderr, "consumer: %s: %s\n", what, status.to_string().c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s PROFILE.folded OUT.pyro\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "consumer: cannot read %s\n", argv[1]);
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();

  pyroscope::Tree profile;
  pyroscope::Status status = pyroscope::Tree::from_folded(text.str(), &profile);
  if (!status.ok()) return fail(argv[1], status);

  const std::string out_path = argv[2];
  std::remove(out_path.c_str());  // a fresh file: appending the same blocks again would be out of order
  const int64_t start = 1700000000;
  const int blocks = 6;
  {
    pyroscope::Writer writer;
    status = writer.open(out_path);
    if (!status.ok()) return fail("open for writing", status);
    for (int i = 0; i < blocks; ++i) {
      for (const char* region : {"eu-north", "us-east"}) {
        pyroscope::SeriesKey series("ride-sharing-app", {{"region", region}});
        status = writer.append(series, start + i * pyroscope::kDefaultResolutionSeconds, profile);
        if (!status.ok()) return fail("append", status);
      }
    }
    status = writer.close();
    if (!status.ok()) return fail("close", status);
  }

  pyroscope::Dataset data;
  status = data.add_file(out_path);
  if (!status.ok()) return fail("open for reading", status);
  const std::string query = "ride-sharing-app{region=\"eu-north\"}";
  pyroscope::QueryResult result;
  status = data.query(query, start, start + blocks * pyroscope::kDefaultResolutionSeconds, &result);
  if (!status.ok()) return fail("query", status);

  std::printf("%s: %llu samples in %u series, %llu stored trees merged\n", query.c_str(),
              static_cast<unsigned long long>(result.tree.total()), result.series_matched,
              static_cast<unsigned long long>(result.merges));
  std::printf("%s", describe_hot_path(result.tree, pyroscope::Tree::kRoot, 8).c_str());

  const uint64_t expected = profile.total() * blocks;
  if (result.tree.total() != expected || result.series_matched != 1) {
    std::fprintf(stderr, "consumer: expected %llu samples in 1 series\n", static_cast<unsigned long long>(expected));
    return 1;
  }
  return 0;
}
