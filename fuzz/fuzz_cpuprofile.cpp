// libFuzzer target: Chrome/Node .cpuprofile JSON (nlohmann/json's SAX parser under our path matcher).
// Accept or reject without crashing; what is accepted survives a speedscope export and import (frame
// names of any bytes, escaped as JSON) with the same totals.
#include "formats_fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pyroscope::ByteSpan bytes{data, size};
  std::vector<pyroscope::ProfileBlock> blocks;
  pyroscope::ImportReport report;
  if (!pyroscope::import_profile(bytes, fuzz_formats::options(pyroscope::Format::chrome_cpuprofile), &blocks, &report).ok())
    return 0;
  fuzz_formats::check_round_trip(blocks, true);
  return 0;
}
