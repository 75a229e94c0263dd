// Shared by the format fuzz targets: checks that what an importer accepts survives an export and a
// second import with the same totals per series. The implementation, with zlib and the JSON parser
// switched on, is the build's pyroscope_impl (fuzz/CMakeLists.txt).
#pragma once
#include "pyroscope.hpp"

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace fuzz_formats {

inline pyroscope::ImportOptions options(pyroscope::Format format, bool strict = false) {
  pyroscope::ImportOptions o;
  o.app = "fuzz";
  o.time = 1800000000;
  o.strict = strict;
  o.has_format = true;
  o.format = format;
  o.max_inflated_bytes = 1 << 20;  // the fuzzer's memory is small; the cap must hold
  return o;
}

// Totals per (series, unit), blocks of a series added up.
inline std::map<std::string, uint64_t> totals(const std::vector<pyroscope::ProfileBlock>& blocks) {
  std::map<std::string, uint64_t> out;
  for (const pyroscope::ProfileBlock& b : blocks) out[b.series.type + " " + b.info.unit] += b.tree.total();
  return out;
}

// Every type exported as one pprof (or speedscope file) and imported again: the same totals per type.
inline void check_round_trip(const std::vector<pyroscope::ProfileBlock>& blocks, bool speedscope) {
  std::map<std::string, pyroscope::Tree> merged;
  std::map<std::string, pyroscope::SeriesInfo> info;
  for (const pyroscope::ProfileBlock& b : blocks) {
    merged[b.series.type].merge(b.tree);
    info[b.series.type] = b.info;
  }
  std::vector<pyroscope::ExportProfile> profiles;
  for (const auto& entry : merged) {
    if (entry.second.total() > (uint64_t(1) << 53)) return;  // JSON numbers and int64 stop being exact
    profiles.push_back({entry.first, info[entry.first], &entry.second});
  }
  if (profiles.empty()) return;
  std::string bytes;
  pyroscope::ExportOptions eo;
  const pyroscope::Status exported = speedscope ? pyroscope::export_speedscope(profiles, eo, &bytes)
                                                : pyroscope::export_pprof(profiles, eo, &bytes);
  if (!exported.ok()) std::abort();
  std::vector<pyroscope::ProfileBlock> again;
  pyroscope::ImportOptions o = options(speedscope ? pyroscope::Format::speedscope : pyroscope::Format::pprof);
  o.max_inflated_bytes = uint64_t(1) << 30;
  if (!pyroscope::import_profile({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, o, &again).ok())
    std::abort();  // our own output must import
  uint64_t before = 0, after = 0;
  for (const auto& entry : merged) before += entry.second.total();
  for (const pyroscope::ProfileBlock& b : again) after += b.tree.total();
  if (before != after) std::abort();
}

}  // namespace fuzz_formats
