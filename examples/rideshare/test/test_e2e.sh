#!/usr/bin/env bash
# End-to-end proof of the rideshare demo: runs scripts/demo.sh in a shortened mode (20 s mutex periods,
# 100 s of load: at least four complete periods, two heavy and two light), then asserts the
# walkthrough's findings from the three .pyro files (rideshare_e2e_check).
# Usage: test_e2e.sh BIN_DIR CHECKER WORK_DIR
set -euo pipefail
bin_dir=$1
checker=$2
work=$3
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
period=20
duration=${RIDESHARE_E2E_DURATION:-100}

rm -rf "$work"
mkdir -p "$work"
# Ports in the user range, away from the demo's defaults, so a demo running beside the test is unharmed.
base_port=$((20000 + RANDOM % 20000))
bash "$repo/scripts/demo.sh" --no-serve --skip-install --bin-dir "$bin_dir" --out "$work" \
  --duration "$duration" --period "$period" --base-port "$base_port"
RIDESHARE_E2E_DIR=$work RIDESHARE_E2E_PERIOD=$period "$checker"
