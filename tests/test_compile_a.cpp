// test_compile_a.cpp + test_compile_b.cpp form one executable: both include the header, only this file
// compiles the implementation. A function defined in the header without `inline`, or an
// implementation part outside its guard, then fails to link. Built in every CI configuration,
// including -fno-exceptions -fno-rtti, where this is the smoke test of the full implementation.
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"
#include "pyroscope.hpp"  // a second include must be harmless, implementation included

#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

// Defined in test_compile_b.cpp.
uint64_t compile_b_total_of(const std::string& folded);
std::string compile_b_status_text(pyroscope::StatusCode code);

TEST_CASE("compile: both translation units share one implementation") {
  CHECK(compile_b_total_of("a;b 2\na;c 3\n") == 5);
  CHECK(compile_b_status_text(pyroscope::StatusCode::corrupt_file) == "corrupt file");
  CHECK(std::string(pyroscope::status_string(pyroscope::StatusCode::ok)) == "ok");
}

TEST_CASE("compile: smoke test of writer, reader and query") {
  char path[] = "/tmp/pyroscope-compile-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::remove(path);  // the writer creates the file itself; mkstemp only picked a free name

  pyroscope::Tree tree;
  REQUIRE(pyroscope::Tree::from_folded("main;work;spin 7\nmain;idle 3\n", &tree).ok());
  const pyroscope::SeriesKey series("smoke", {{"host", "a"}});
  {
    pyroscope::Writer writer;
    REQUIRE(writer.open(path).ok());
    CHECK(writer.append(series, 1000, tree).ok());
    CHECK(writer.append(series, 1010, tree).ok());
    CHECK(writer.close().ok());
  }
  pyroscope::Dataset data;
  REQUIRE(data.add_file(path).ok());
  pyroscope::QueryResult result;
  REQUIRE(data.query("smoke{host=\"a\"}", 1000, 1020, &result).ok());
  CHECK(result.tree.total() == 20);
  CHECK(result.tree.find_path({"main", "work", "spin"}) != pyroscope::Tree::kNoNode);
  CHECK(result.series_matched == 1);
  std::remove(path);
}
