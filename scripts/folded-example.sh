#!/usr/bin/env bash
# The README's main-job command. Installs missing Debian packages, builds everything (library tests,
# tools, examples, benchmarks, viewer: whatever the checkout has), then writes a .pyro file from folded
# profiles and prints what a query over it returns.
#
# Usage: bash scripts/folded-example.sh   (outputs under build/main-job/)
# A tour of the file format and the pyro tool without the sampler; the main job is scripts/demo.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=${PYROSCOPE_JOBS:-2}
build=build/main
out=build/main-job
bash scripts/install-deps.sh

echo "=== main: building everything in $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYROSCOPE_BUILD_TESTS=ON -DPYROSCOPE_BUILD_TOOLS=ON \
  -DPYROSCOPE_BUILD_EXAMPLES=ON -DPYROSCOPE_BUILD_BENCH=ON -DPYROSCOPE_BUILD_VIEWER=ON \
  -DPYROSCOPE_SANITIZE=none -DPYROSCOPE_NO_EXCEPTIONS=OFF >/dev/null
cmake --build "$build" -j "$jobs"

# Two regions of the ride-sharing example, six 10 s blocks each, from the folded profile shipped in
# examples/data/ (eu-north has the mutex_lock hot spot, us-east does not).
rm -rf "$out" && mkdir -p "$out"
profile=examples/data/rideshare.folded
grep -v mutex_lock "$profile" >"$out/us-east.folded"
start=1700000000
blocks=6
pyro="$build/tools/pyro"
if [[ -x $pyro ]]; then
  echo "=== main: writing $out/rideshare.pyro with tools/pyro"
  for ((i = 0; i < blocks; i++)); do
    at=$((start + 10 * i))
    "$pyro" import-folded "$profile" --app ride-sharing-app --tags region=eu-north --at "$at" -o "$out/rideshare.pyro"
    "$pyro" import-folded "$out/us-east.folded" --app ride-sharing-app --tags region=us-east --at "$at" -o "$out/rideshare.pyro"
  done
  "$pyro" info "$out/rideshare.pyro"
  selector='ride-sharing-app{region="eu-north"}'
  echo
  echo "=== main: pyro query $out/rideshare.pyro '$selector' (heaviest stacks, folded)"
  "$pyro" query "$out/rideshare.pyro" "$selector" --from "$start" --until "$((start + 10 * blocks))" --format folded --top 5
  echo
  echo "=== main: the same query as a table"
  "$pyro" query "$out/rideshare.pyro" "$selector" --from "$start" --until "$((start + 10 * blocks))" --format table --top 8
else
  # Without the command-line tool, the find_package consumer from tests/ does the same job.
  echo "=== main: tools/pyro is not built; using the find_package consumer of tests/consumer"
  cmake --install "$build" --prefix "$out/prefix" --component pyroscope >/dev/null
  cmake -S tests/consumer -B "$out/consumer" -DCMAKE_PREFIX_PATH="$PWD/$out/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$out/consumer" -j "$jobs" >/dev/null
  "$out/consumer/consumer" "$profile" "$out/rideshare.pyro"
fi
echo
echo "=== main: done; the profile file is $out/rideshare.pyro"
