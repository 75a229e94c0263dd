// libFuzzer target: `perf script` text. Every imported sample counts 1, so the blocks' totals add up to
// the report's sample count; strict acceptance implies lenient acceptance with the same totals; what
// is accepted survives a pprof export and import.
#include "formats_fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pyroscope::ByteSpan bytes{data, size};
  std::vector<pyroscope::ProfileBlock> lenient, strict;
  pyroscope::ImportReport report;
  const bool lenient_ok =
      pyroscope::import_profile(bytes, fuzz_formats::options(pyroscope::Format::perf_script), &lenient, &report).ok();
  const bool strict_ok =
      pyroscope::import_profile(bytes, fuzz_formats::options(pyroscope::Format::perf_script, true), &strict).ok();
  if (strict_ok && (!lenient_ok || fuzz_formats::totals(strict) != fuzz_formats::totals(lenient))) std::abort();
  if (!lenient_ok) return 0;
  uint64_t samples = 0;
  for (const pyroscope::ProfileBlock& b : lenient) samples += b.tree.total();
  if (samples != report.imported) std::abort();
  if (report.skipped_examples.size() > report.skipped) std::abort();
  fuzz_formats::check_round_trip(lenient, false);
  return 0;
}
