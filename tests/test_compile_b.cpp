// The second translation unit of the test_compile executable (see test_compile_a.cpp). The header
// comes first so it must compile on its own, and without PYROSCOPE_IMPLEMENTATION it must not drag
// heavy or platform headers into every file that opens a tag scope.
#include "pyroscope.hpp"

#ifdef _GLIBCXX_IOSTREAM
constexpr bool kIostreamIncluded = true;
#else
constexpr bool kIostreamIncluded = false;
#endif
#ifdef _GLIBCXX_REGEX
constexpr bool kRegexIncluded = true;
#else
constexpr bool kRegexIncluded = false;
#endif
#if defined(_SYS_MMAN_H) || defined(_SIGNAL_H) || defined(_UNISTD_H) || defined(_FCNTL_H) || \
    defined(_DLFCN_H) || defined(_LINK_H) || defined(_ELF_H)
constexpr bool kPlatformHeadersIncluded = true;
#else
constexpr bool kPlatformHeadersIncluded = false;
#endif

#include <doctest/doctest.h>

uint64_t compile_b_total_of(const std::string& folded) {
  pyroscope::Tree tree;
  if (!pyroscope::Tree::from_folded(folded, &tree).ok()) return 0;
  return tree.total();
}

std::string compile_b_status_text(pyroscope::StatusCode code) { return pyroscope::status_string(code); }

TEST_CASE("compile: the header alone keeps heavy and platform headers out") {
  CHECK_FALSE(kIostreamIncluded);
  CHECK_FALSE(kRegexIncluded);
  CHECK_FALSE(kPlatformHeadersIncluded);
}

TEST_CASE("compile: inline parts of the API work from a file without the implementation") {
  pyroscope::Status status(pyroscope::StatusCode::parse_error, "line 3: missing count");
  CHECK_FALSE(status.ok());
  CHECK(status.code() == pyroscope::StatusCode::parse_error);
  CHECK(status.to_string().find("line 3: missing count") != std::string::npos);
  CHECK(pyroscope::Status().ok());

  int ran = pyroscope::tag_wrapper({{"vehicle", "bike"}}, [] { return 42; });
  CHECK(ran == 42);
  { pyroscope::tag_scope scope{"vehicle", "car"}; }

  pyroscope::SeriesKey key("app", {{"b", "2"}, {"a", "1"}});
  REQUIRE(key.tags.size() == 2);
  CHECK(key.tags[0].key == "a");  // sorted by key
}
