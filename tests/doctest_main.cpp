// The one doctest main() shared by every test executable (compiled once as an object library).
//
// A run in which no test case passed the filters fails: the tests of a group share one executable and
// each selects its own with --source-file (tests/CMakeLists.txt), so a filter that matches nothing
// (a renamed file, a path pattern that no longer fits) must not pass as a test with nothing in it.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

namespace {

int g_test_cases_selected = -1;  // -1: the run did not get as far as running tests (--help, --list-*)

struct SelectedTestCases : doctest::IReporter {
  explicit SelectedTestCases(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& stats) override {
    g_test_cases_selected = int(stats.numTestCasesPassingFilters);
  }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("selected_test_cases", 1, SelectedTestCases);

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int result = context.run();
  if (context.shouldExit()) return result;
  if (g_test_cases_selected == 0) {
    std::fprintf(stderr, "doctest main: no test case passed the filters (a --source-file or --test-case that matches nothing)\n");
    return result != 0 ? result : 1;
  }
  return result;
}
