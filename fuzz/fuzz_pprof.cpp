// libFuzzer target: pprof (profile.proto, plain or gzipped). detect_format and import_profile must
// accept or reject without crashing, within the inflated-size cap; what is accepted exports to pprof
// and imports again with the same totals; strict acceptance implies lenient acceptance with the same
// totals.
#include "formats_fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pyroscope::ByteSpan bytes{data, size};
  pyroscope::Format detected;
  (void)pyroscope::detect_format(bytes, &detected);
  std::vector<pyroscope::ProfileBlock> lenient, strict;
  pyroscope::ImportReport report;
  const bool lenient_ok = pyroscope::import_profile(bytes, fuzz_formats::options(pyroscope::Format::pprof), &lenient, &report).ok();
  const bool strict_ok = pyroscope::import_profile(bytes, fuzz_formats::options(pyroscope::Format::pprof, true), &strict).ok();
  if (strict_ok && (!lenient_ok || fuzz_formats::totals(strict) != fuzz_formats::totals(lenient))) std::abort();
  if (!lenient_ok) {
    if (!lenient.empty()) std::abort();  // an error leaves the output as it was
    return 0;
  }
  (void)report.summary();
  fuzz_formats::check_round_trip(lenient, false);
  return 0;
}
