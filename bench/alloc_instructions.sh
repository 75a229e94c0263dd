#!/usr/bin/env bash
# What allocation profiling costs bench_alloc's std::map workload in instructions executed, counted by
# valgrind's cachegrind (bench/README.md, "Allocations ... in instructions"). Instruction counts do not
# move with the machine's load the way CPU time does here (±15-30 % between rounds of one
# configuration), so they settle the "≤ 2 % slowdown" question that timing could not.
#
#   bench/alloc_instructions.sh BUILD_DIR [STRINGS] [WINDOW]     (defaults 200000 40000)
#
# BUILD_DIR holds bench/bench_alloc and bench/bench_alloc_ours (cmake --build BUILD --target bench_alloc).
# Configurations, each one process under cachegrind (all its threads counted, the agent's too):
#   none               the workload alone (bench_alloc: no interposers, no profiler)
#   linked, not started bench_alloc_ours without starting the profiler: the interposers' idle path
#   ours, sampling off  started with allocation_sample_bytes = 0
#   ours, 512 KiB       started with the default allocation sampling
# The CPU sampler runs at 1 Hz in the started rows: under valgrind a second of CPU time is ~50 times
# fewer instructions, so at 100 Hz it would take ~50 times its real share (its own cost is bench_sampler's).
# The last row shows that case anyway (ours as shipped, 100 Hz), for scale.
set -euo pipefail
build=${1:?usage: bench/alloc_instructions.sh BUILD_DIR [STRINGS] [WINDOW]}
strings=${2:-200000}
window=${3:-40000}
driver=$build/bench/bench_alloc
ours=$build/bench/bench_alloc_ours
for f in "$driver" "$ours"; do
  [[ -x $f ]] || { echo "alloc_instructions.sh: $f is missing (cmake --build $build --target bench_alloc)" >&2; exit 2; }
done
command -v valgrind >/dev/null || { echo "alloc_instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# instructions NAME CMD...: prints the I refs cachegrind counted (every thread of the process).
instructions() {
  local name=$1
  shift
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/$name.out" "$@" >"$work/$name.stdout" 2>"$work/$name.log" ||
    { cat "$work/$name.log" >&2; echo "alloc_instructions.sh: $name failed" >&2; exit 1; }
  grep -E 'I +refs:' "$work/$name.log" | sed -E 's/.*refs: *//; s/,//g'
}

echo "std::map workload: $strings strings inserted and erased, $window alive; valgrind $(valgrind --version)"
base=$(instructions none "$driver" --child map "$strings" "$window")
printf '%-34s %16s %10s\n' configuration instructions "vs none"
row() {
  local label=$1 count=$2
  awk -v l="$label" -v c="$count" -v b="$base" 'BEGIN { printf "%-34s %16s %+9.2f%%\n", l, c, (c - b) * 100 / b }'
}
row "none" "$base"
row "linked, not started" "$(instructions idle "$ours" --child map "$strings" "$window")"
row "ours, allocation sampling off" "$(instructions off "$ours" --child map "$strings" "$window" \
  --profile "$work/off.pyro" --sample-bytes 0 --cpu-hz 1)"
row "ours, 512 KiB (CPU at 1 Hz)" "$(instructions default "$ours" --child map "$strings" "$window" \
  --profile "$work/default.pyro" --cpu-hz 1)"
row "ours as shipped (CPU at 100 Hz)" "$(instructions shipped "$ours" --child map "$strings" "$window" \
  --profile "$work/shipped.pyro")"
for f in off default shipped; do
  [[ -s $work/$f.pyro ]] || { echo "alloc_instructions.sh: $f wrote no profile" >&2; exit 1; }
done
