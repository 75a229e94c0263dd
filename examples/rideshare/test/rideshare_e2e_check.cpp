// The walkthrough's findings, asserted from the demo's stored data through the header's query API.
// Run by test_e2e.sh after a shortened scripts/demo.sh:
//   RIDESHARE_E2E_DIR=<folder with rideshare-<region>.pyro>  RIDESHARE_E2E_PERIOD=<mutex period, s>
//
// What the walkthrough shows, and what is checked here:
//   1. order_car is the largest node below the frames every request shares (main, thread entry,
//      httplib), ahead of order_scooter and order_bike, in the ratio of the search radii 3:2:1;
//   2. eu-north's timeline alternates: mutex_lock's share of each 10 s block is high in the heavy
//      periods and low in the light ones, and the heavy share is far above the light one;
//   3. the diff of a light range (left) against a heavy range (right) has mutex_lock as its biggest
//      increase;
//   4. us-east and ap-south have no mutex_lock and no alternation;
//   5. the memory view: build_ride_history (GET /history) allocates most of the bytes of alloc_space,
//      and only its callers weigh more.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "pyroscope.hpp"

namespace {

const char* const kRegions[] = {"us-east", "eu-north", "ap-south"};

// "order_car(int)", "order_car[abi:cxx11](int)" and "order_car" are all the function order_car (the
// symbolizer may or may not keep the parameter list).
std::string_view function_name(std::string_view frame) {
  const size_t cut = frame.find_first_of("([", 1);
  if (cut != std::string_view::npos) frame = frame.substr(0, cut);
  return frame;
}

// Total samples of every node of the function `name`, over the whole tree (none of these functions
// recurses, so no sample is counted twice).
uint64_t total_of(const pyroscope::Tree& tree, std::string_view name) {
  uint64_t sum = 0;
  for (uint32_t n = 1; n < tree.node_count(); n++) {
    if (function_name(tree.name(n)) == name) sum += tree.node_total(n);
  }
  return sum;
}

std::vector<uint32_t> children_of(const pyroscope::Tree& tree, uint32_t node) {
  std::vector<uint32_t> offsets, children;
  tree.sorted_children(&offsets, &children);
  return std::vector<uint32_t>(children.begin() + offsets[node], children.begin() + offsets[node + 1]);
}

bool is_order_function(std::string_view name) { return function_name(name).rfind("order_", 0) == 0; }

// Walks down from the root through the frames all requests share (main or the thread entry, httplib's
// request handling, the route's lambda), always into the largest child, to the first node whose
// children include an order_* function: the level where the walkthrough's flame graph branches.
uint32_t find_order_level(const pyroscope::Tree& tree, std::vector<std::string>* path) {
  uint32_t node = pyroscope::Tree::kRoot;
  for (int depth = 0; depth < 256; depth++) {
    std::vector<uint32_t> children = children_of(tree, node);
    if (children.empty()) return pyroscope::Tree::kNoNode;
    for (uint32_t c : children) {
      if (is_order_function(tree.name(c))) return node;
    }
    node = *std::max_element(children.begin(), children.end(), [&](uint32_t a, uint32_t b) {
      return tree.node_total(a) < tree.node_total(b);
    });
    path->emplace_back(tree.name(node));
  }
  return pyroscope::Tree::kNoNode;
}

struct Demo {
  pyroscope::Dataset data;
  int64_t period = 0;
  int64_t first = 0, end = 0, resolution = 0;
  std::string error;
};

const Demo& demo() {
  static Demo* loaded = [] {
    Demo* d = new Demo;
    const char* dir = std::getenv("RIDESHARE_E2E_DIR");
    const char* period = std::getenv("RIDESHARE_E2E_PERIOD");
    if (!dir || !period) {
      d->error = "set RIDESHARE_E2E_DIR and RIDESHARE_E2E_PERIOD (test_e2e.sh does)";
      return d;
    }
    d->period = std::atoll(period);
    for (const char* region : kRegions) {
      const std::string path = std::string(dir) + "/rideshare-" + region + ".pyro";
      pyroscope::Status st = d->data.add_file(path);
      if (!st.ok()) d->error += path + ": " + st.to_string() + "\n";
    }
    const pyroscope::TimeRange span = d->data.time_span();
    d->first = span.from;
    d->end = span.until;
    d->resolution = d->data.resolution_seconds();
    return d;
  }();
  return *loaded;
}

pyroscope::QueryResult query(const std::string& selector, int64_t from, int64_t until, bool want_tree = true) {
  pyroscope::QueryResult result;
  pyroscope::QueryOptions options;
  options.want_tree = want_tree;
  pyroscope::Status st = demo().data.query(selector, from, until, &result, options);
  INFO(selector);
  REQUIRE_MESSAGE(st.ok(), st.to_string());
  return result;
}

// The blocks in which the load ran from start to end: those strictly between a region's first and
// last block with samples (the servers start before the load and stop after it).
struct Block {
  int64_t start = 0;
  uint64_t samples = 0;
  bool heavy_phase = false;  // the server's schedule: heavy during even periods of the unix clock
};

std::vector<Block> complete_blocks(const std::string& region) {
  const Demo& d = demo();
  pyroscope::QueryResult r = query("ride-sharing-app{region=\"" + region + "\"}", d.first, d.end, false);
  const std::vector<uint64_t>& samples = r.timeline.samples;
  size_t first = samples.size(), last = 0;
  for (size_t i = 0; i < samples.size(); i++) {
    if (samples[i] == 0) continue;
    first = std::min(first, i);
    last = i;
  }
  std::vector<Block> blocks;
  for (size_t i = first + 1; i < last; i++) {
    Block b;
    b.start = r.timeline.start + int64_t(i) * r.timeline.step;
    b.samples = samples[i];
    b.heavy_phase = (b.start / d.period) % 2 == 0;
    blocks.push_back(b);
  }
  return blocks;
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0 : sum / double(values.size());
}

}  // namespace

TEST_CASE("the three regions' files open as one data set") {
  const Demo& d = demo();
  REQUIRE_MESSAGE(d.error.empty(), d.error);
  CHECK(d.data.file_count() == 3);
  CHECK(d.data.apps() == std::vector<std::string>{"ride-sharing-app"});
  const std::vector<std::string> keys = d.data.tag_keys("ride-sharing-app");
  CHECK(std::find(keys.begin(), keys.end(), "region") != keys.end());
  CHECK(std::find(keys.begin(), keys.end(), "vehicle") != keys.end());
  CHECK(d.data.tag_values("ride-sharing-app", "region") == std::vector<std::string>{"ap-south", "eu-north", "us-east"});
  CHECK(d.data.tag_values("ride-sharing-app", "vehicle") == std::vector<std::string>{"bike", "car", "scooter"});
  CHECK(d.resolution == 10);
  CHECK(d.period % d.resolution == 0);  // each block lies within one heavy or light period
}

TEST_CASE("order_car is the largest node where the requests branch, then order_scooter, then order_bike") {
  const Demo& d = demo();
  REQUIRE(d.error.empty());
  pyroscope::QueryResult all = query("ride-sharing-app{}", d.first, d.end);
  const pyroscope::Tree& tree = all.tree;
  REQUIRE(tree.total() > 0);

  std::vector<std::string> path;
  const uint32_t level = find_order_level(tree, &path);
  std::string shown;
  for (const std::string& frame : path) shown += (shown.empty() ? "" : ";") + frame;
  MESSAGE("frames above the order_* functions: " << (shown.empty() ? "(none)" : shown));
  REQUIRE(level != pyroscope::Tree::kNoNode);

  std::vector<uint32_t> siblings = children_of(tree, level);
  const uint32_t largest = *std::max_element(siblings.begin(), siblings.end(), [&](uint32_t a, uint32_t b) {
    return tree.node_total(a) < tree.node_total(b);
  });
  CHECK(function_name(tree.name(largest)) == "order_car");

  // Over the whole tree (whatever path the stacks took), in the ratio of the radii 3 : 2 : 1.
  const double car = double(total_of(tree, "order_car"));
  const double scooter = double(total_of(tree, "order_scooter"));
  const double bike = double(total_of(tree, "order_bike"));
  MESSAGE("samples: order_car " << car << ", order_scooter " << scooter << ", order_bike " << bike << " of "
                                << tree.total());
  REQUIRE(bike > 0);
  CHECK(car > scooter);
  CHECK(scooter > bike);
  CHECK(car / bike == doctest::Approx(3.0).epsilon(0.25));
  CHECK(scooter / bike == doctest::Approx(2.0).epsilon(0.25));
  // Half of the order handlers' work. Not of the whole tree: the server's own share (accepting,
  // parsing, the load generator's threads) grows when the machine is busy, and took car to 0.396 of
  // the total in 2 of 5 rounds beside two busy loops (issue 18).
  CHECK(car / (car + scooter + bike) == doctest::Approx(0.5).epsilon(0.2));
  MESSAGE("order_car's share of the three order functions " << car / (car + scooter + bike) << ", of the tree "
                                                            << car / double(tree.total()));
}

TEST_CASE("the vehicle tag selects the samples of that vehicle's orders only") {
  const Demo& d = demo();
  REQUIRE(d.error.empty());
  pyroscope::QueryResult car = query("ride-sharing-app{vehicle=\"car\"}", d.first, d.end);
  CHECK(total_of(car.tree, "order_car") > 0);
  CHECK(total_of(car.tree, "order_bike") == 0);
  CHECK(total_of(car.tree, "order_scooter") == 0);
  // find_nearest_vehicle opens the tag scope first thing, so all of its work is tagged (a sample that
  // lands in its prologue, before the scope, is the only exception).
  pyroscope::QueryResult any = query("ride-sharing-app{}", d.first, d.end);
  pyroscope::QueryResult tagged = query("ride-sharing-app{vehicle=~\".+\"}", d.first, d.end);
  const double all_work = double(total_of(any.tree, "find_nearest_vehicle"));
  REQUIRE(all_work > 0);
  CHECK(double(total_of(tagged.tree, "find_nearest_vehicle")) / all_work > 0.99);
}

TEST_CASE("eu-north alternates: mutex_lock is heavy in one period and light in the next") {
  const Demo& d = demo();
  REQUIRE(d.error.empty());
  const std::vector<Block> blocks = complete_blocks("eu-north");
  std::vector<double> heavy_shares, light_shares, heavy_samples, light_samples, shares;
  std::string table;
  for (const Block& b : blocks) {
    pyroscope::QueryResult r = query("ride-sharing-app{region=\"eu-north\"}", b.start, b.start + d.resolution);
    const double share = r.tree.total() ? double(total_of(r.tree, "mutex_lock")) / double(r.tree.total()) : 0;
    shares.push_back(share);
    (b.heavy_phase ? heavy_shares : light_shares).push_back(share);
    (b.heavy_phase ? heavy_samples : light_samples).push_back(double(b.samples));
    char line[128];
    std::snprintf(line, sizeof line, "\n  %lld %-5s %5llu samples, mutex_lock %5.1f%%", static_cast<long long>(b.start),
                  b.heavy_phase ? "heavy" : "light", static_cast<unsigned long long>(b.samples), 100 * share);
    table += line;
  }
  MESSAGE("eu-north blocks:" << table);
  REQUIRE(heavy_shares.size() >= 2);
  REQUIRE(light_shares.size() >= 2);

  // Every block follows the schedule: ~70% in heavy periods, ~6% in light ones.
  for (double s : heavy_shares) CHECK(s > 0.45);
  for (double s : light_shares) CHECK(s < 0.25);
  // Far above: the heavy share is many times the light one.
  CHECK(mean(heavy_shares) > 5 * mean(light_shares));
  CHECK(mean(heavy_shares) == doctest::Approx(0.70).epsilon(0.2));

  // The alternation is in the data itself, without the schedule: split the blocks at the middle of
  // the range of shares and count the switches between high and low.
  const auto [low, high] = std::minmax_element(shares.begin(), shares.end());
  const double middle = (*low + *high) / 2;
  int switches = 0;
  for (size_t i = 1; i < shares.size(); i++) switches += (shares[i] > middle) != (shares[i - 1] > middle);
  const int periods_seen = int(blocks.size() * d.resolution / d.period);
  CHECK(switches >= std::max(2, periods_seen - 2));

  // The timeline itself (samples per block) rises in heavy periods: the same requests cost more CPU.
  CHECK(mean(heavy_samples) > 1.8 * mean(light_samples));
}

TEST_CASE("the diff of light (left) vs heavy (right) has mutex_lock as the biggest increase") {
  const Demo& d = demo();
  REQUIRE(d.error.empty());
  pyroscope::Tree light, heavy;
  for (const Block& b : complete_blocks("eu-north")) {
    pyroscope::QueryResult r = query("ride-sharing-app{region=\"eu-north\"}", b.start, b.start + d.resolution);
    (b.heavy_phase ? heavy : light).merge(r.tree);
  }
  REQUIRE(light.total() > 0);
  REQUIRE(heavy.total() > 0);
  const pyroscope::DiffTree diff = pyroscope::DiffTree::compute(light, heavy);
  const pyroscope::Tree& shape = diff.shape();

  // Change in each function's share of self samples, summed over its nodes: what the diff colours.
  std::map<std::string, double> change;
  for (uint32_t n = 1; n < diff.node_count(); n++) {
    change[std::string(function_name(shape.name(n)))] += double(diff.right_self(n)) / double(heavy.total()) -
                                                         double(diff.left_self(n)) / double(light.total());
  }
  const auto biggest = std::max_element(change.begin(), change.end(),
                                        [](const auto& a, const auto& b) { return a.second < b.second; });
  MESSAGE("biggest increase: " << biggest->first << " +" << 100 * biggest->second << " points of the total");
  CHECK(biggest->first == "mutex_lock");
  CHECK(biggest->second > 0.3);

  // And the diff view paints every mutex_lock node red (grew).
  int mutex_nodes = 0;
  for (uint32_t n = 1; n < diff.node_count(); n++) {
    if (function_name(shape.name(n)) != "mutex_lock") continue;
    mutex_nodes++;
    CHECK(diff.change_percent(n) > 50);
  }
  CHECK(mutex_nodes >= 3);  // under order_bike, order_car and order_scooter
}

TEST_CASE("us-east and ap-south have no mutex_lock and no alternation") {
  const Demo& d = demo();
  REQUIRE(d.error.empty());
  for (const std::string region : {"us-east", "ap-south"}) {
    CAPTURE(region);
    const std::string selector = "ride-sharing-app{region=\"" + region + "\"}";
    pyroscope::QueryResult all = query(selector, d.first, d.end);
    CHECK(total_of(all.tree, "find_nearest_vehicle") > 0);
    CHECK(total_of(all.tree, "mutex_lock") == 0);
    CHECK(total_of(all.tree, "check_driver_availability") == 0);

    std::vector<double> heavy_samples, light_samples;
    for (const Block& b : complete_blocks(region)) {
      (b.heavy_phase ? heavy_samples : light_samples).push_back(double(b.samples));
    }
    REQUIRE(heavy_samples.size() >= 2);
    REQUIRE(light_samples.size() >= 2);
    const double ratio = mean(heavy_samples) / mean(light_samples);
    MESSAGE(region << ": samples per block, heavy-phase blocks / light-phase blocks = " << ratio);
    CHECK(ratio > 0.75);
    CHECK(ratio < 1.33);
  }
}

TEST_CASE("the rider's history (GET /history) is on top of alloc_space") {
  const Demo& d = demo();
  REQUIRE(d.error.empty());
  // The servers compile the implementation with PYROSCOPE_ALLOCATION_PROFILING (pyroscope_impl.cpp).
  pyroscope::QueryResult space = query("ride-sharing-app.alloc_space{}", d.first, d.end);
  const pyroscope::Tree& tree = space.tree;
  REQUIRE(tree.total() > 0);

  // Per function: its total (over all its nodes) and whether it is a caller of build_ride_history.
  std::map<std::string, uint64_t> totals;
  std::map<std::string, bool> caller;
  for (uint32_t n = 1; n < tree.node_count(); n++) {
    totals[std::string(function_name(tree.name(n)))] += tree.node_total(n);
    if (function_name(tree.name(n)) != "build_ride_history") continue;
    for (uint32_t up = tree.parent(n); up != pyroscope::Tree::kRoot && up != pyroscope::Tree::kNoNode; up = tree.parent(up))
      caller[std::string(function_name(tree.name(up)))] = true;
  }
  const uint64_t history = totals["build_ride_history"];
  std::vector<std::pair<uint64_t, std::string>> ranked;
  for (const auto& [name, total] : totals) ranked.emplace_back(total, name);
  std::sort(ranked.rbegin(), ranked.rend());
  std::string top;
  for (size_t i = 0; i < ranked.size() && i < 8; i++)
    top += "\n  " + ranked[i].second + " " + std::to_string(100.0 * double(ranked[i].first) / double(tree.total())) + "%";
  MESSAGE("alloc_space: " << tree.total() << " bytes (estimated); functions by total:" << top);

  // Most of the allocated bytes, and every function that allocates more (in total) is one of its callers
  // (main or the thread's entry, httplib's request handling, handle_history): it is where the memory
  // view's flame graph branches into the endpoint, with nothing beside it weighing as much.
  CHECK(double(history) / double(tree.total()) > 0.5);
  for (const auto& [total, name] : ranked) {
    if (total <= history) break;
    CAPTURE(name);
    CHECK(caller[name]);
  }
  // The orders allocate next to nothing: their work is CPU.
  CHECK(total_of(tree, "order_car") < history / 10);

  // The objects follow the bytes.
  pyroscope::QueryResult objects = query("ride-sharing-app.alloc_objects{}", d.first, d.end);
  REQUIRE(objects.tree.total() > 0);
  CHECK(double(total_of(objects.tree, "build_ride_history")) / double(objects.tree.total()) > 0.5);
}
