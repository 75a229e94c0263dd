// libFuzzer target: speedscope JSON (sampled and evented profiles). Accept or reject without crashing;
// strict acceptance implies lenient acceptance with the same totals; what is accepted survives a
// speedscope export and import with the same totals.
#include "formats_fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pyroscope::ByteSpan bytes{data, size};
  std::vector<pyroscope::ProfileBlock> lenient, strict;
  const bool lenient_ok =
      pyroscope::import_profile(bytes, fuzz_formats::options(pyroscope::Format::speedscope), &lenient).ok();
  const bool strict_ok =
      pyroscope::import_profile(bytes, fuzz_formats::options(pyroscope::Format::speedscope, true), &strict).ok();
  if (strict_ok && (!lenient_ok || fuzz_formats::totals(strict) != fuzz_formats::totals(lenient))) std::abort();
  if (!lenient_ok) return 0;
  fuzz_formats::check_round_trip(lenient, true);
  return 0;
}
