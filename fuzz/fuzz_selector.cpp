// libFuzzer target: selectors (app{k="v", k2!="w", k3=~"re", k4!~"re"}). Parse must accept or reject;
// what it accepts prints (to_string) to a selector that parses to the same text and matches the same.
#include "pyroscope.hpp"

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  pyroscope::Selector selector;
  if (!pyroscope::Selector::parse(text, &selector).ok()) return 0;
  static const std::vector<pyroscope::SeriesKey> keys = {
      pyroscope::SeriesKey("app", {}),
      pyroscope::SeriesKey("app", {{"region", "eu-north"}}),
      pyroscope::SeriesKey("app", {{"region", "us-east"}, {"vehicle", "car"}}),
      pyroscope::SeriesKey("ride-sharing-app.cpu", {{"vehicle", "bike"}, {"x", ""}}),
      pyroscope::SeriesKey("a b", {{"k", "va\"l\\ue"}, {"region", "aaaaaaaaaaaaaaaa"}}),
  };
  const std::string printed = selector.to_string();
  pyroscope::Selector again;
  if (!pyroscope::Selector::parse(printed, &again).ok()) std::abort();
  if (again.to_string() != printed) std::abort();
  for (const pyroscope::SeriesKey& key : keys)
    if (selector.matches(key) != again.matches(key)) std::abort();
  return 0;
}
