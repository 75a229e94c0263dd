#!/usr/bin/env bash
# Long campaigns that do not fit CI's time (scripts/test.sh runs their short versions). Each campaign
# is bounded in time, runs on loopback only, and prints "N passed, N failed" like the tests.
#
# Usage: bash scripts/soak.sh [CAMPAIGN...]      (no campaign: all of them)
#   serve   pyro serve under load: 8 clients for 60 s (samples acknowledged == samples stored,
#           exactly), then 20 kill -9 of the server under load (the directory opens every time and
#           holds every acknowledged sample). CI runs 10 s and 3 kills (ctest -R pyro_serve_load).
#
# Environment: PYROSCOPE_JOBS (default 2); SOAK_SERVE_SECONDS (60), SOAK_SERVE_KILLS (20).
# Builds pyro in build/soak/ (RelWithDebInfo) first; work files go to build/soak/work/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
jobs=${PYROSCOPE_JOBS:-2}
campaigns=("$@")
((${#campaigns[@]})) || campaigns=(serve)
dir=build/soak
passed=0
failed=0

if ! { cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYROSCOPE_BUILD_TOOLS=ON -DPYROSCOPE_BUILD_TESTS=OFF \
         -DPYROSCOPE_BUILD_EXAMPLES=OFF -DPYROSCOPE_BUILD_BENCH=OFF -DPYROSCOPE_BUILD_VIEWER=OFF -DPYROSCOPE_BUILD_FUZZ=OFF &&
       cmake --build "$dir" -j "$jobs" --target pyro; } >"$dir.log" 2>&1; then
  tail -n 40 "$dir.log"
  echo "soak.sh: build failed (log: $dir.log)"
  echo "0 passed, 1 failed"
  exit 1
fi

# count_results LOG: adds the "N passed, N failed" line of a campaign's log to the totals.
count_results() {
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
  if [[ -z $line ]]; then
    failed=$((failed + 1))
    return
  fi
  passed=$((passed + $(cut -d' ' -f1 <<<"$line")))
  failed=$((failed + $(cut -d' ' -f3 <<<"$line")))
}

for campaign in "${campaigns[@]}"; do
  log="$dir/$campaign.log"
  case $campaign in
    serve)
      echo "=== soak serve: ${SOAK_SERVE_SECONDS:-60} s of load, ${SOAK_SERVE_KILLS:-20} kill -9 trials"
      python3 tools/tests/serve_test.py "$dir/tools/pyro" "$dir/work/serve" load \
        "${SOAK_SERVE_SECONDS:-60}" "${SOAK_SERVE_KILLS:-20}" 2>&1 | tee "$log"
      count_results "$log"
      ;;
    *)
      echo "soak.sh: unknown campaign '$campaign' (serve)"
      failed=$((failed + 1))
      ;;
  esac
done
echo "$passed passed, $failed failed"
((failed == 0))
