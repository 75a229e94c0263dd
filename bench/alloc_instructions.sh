#!/usr/bin/env bash
# What allocation profiling costs bench_alloc's std::map workload in instructions executed on the
# program's own thread, counted by valgrind's callgrind (bench/README.md, "Allocations in instructions
# executed"). Those counts do not move with the machine's load the way CPU time does here (±15-30 %
# between rounds of one configuration), so they can settle the "≤ 2 % slowdown" question.
#
#   bench/alloc_instructions.sh BUILD_DIR [STRINGS] [WINDOW]     (defaults 200000 40000)
#
# BUILD_DIR holds bench/bench_alloc_plain and bench/bench_alloc_ours (cmake --build BUILD --target
# bench_alloc): one compile of the workload, linked without and with the interposers, so that a
# difference is the profiler's (two compiles of it differed by ~1 % in GCC's inlining).
# Each configuration runs twice, with STRINGS and WINDOW and with twice both: the difference is the
# marginal cost, without the one-time costs (start, the file, the first unwind tables and symbols).
#   none                the workload alone (bench_alloc_plain: no interposers, no profiler)
#   linked, not started bench_alloc_ours without starting the profiler: the interposers' idle path
#   ours, sampling off  started with allocation_sample_bytes = 0
#   ours, 512 KiB       started with the default allocation sampling
# Only the main thread's instructions are compared: the profiler's agent thread works per tick of real
# time, and valgrind runs the program ~50 times slower, so its count here says nothing about its real
# share (bench_sampler measures that); it is printed beside, for information. For the same reason the
# started rows run the CPU sampler at 1 Hz (bench_alloc --child --cpu-hz): its signals interrupt the
# main thread per second of CPU time, which under valgrind holds ~50 times fewer instructions.
set -euo pipefail
build=${1:?usage: bench/alloc_instructions.sh BUILD_DIR [STRINGS] [WINDOW]}
strings=${2:-200000}
window=${3:-40000}
plain=$build/bench/bench_alloc_plain
ours=$build/bench/bench_alloc_ours
for f in "$plain" "$ours"; do
  [[ -x $f ]] || { echo "alloc_instructions.sh: $f is missing (cmake --build $build --target bench_alloc)" >&2; exit 2; }
done
command -v valgrind >/dev/null || { echo "alloc_instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# instructions NAME CMD...: "MAIN OTHER": the instructions callgrind counted on the main thread and on
# every other thread of the process.
instructions() {
  local name=$1
  shift
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/$name.out" "$@" \
    >"$work/$name.stdout" 2>"$work/$name.log" ||
    { cat "$work/$name.log" >&2; echo "alloc_instructions.sh: $name failed" >&2; exit 1; }
  local main=0 other=0 f n
  for f in "$work/$name.out"-*; do
    n=$(grep -m1 -E '^(summary|totals):' "$f" | awk '{print $2}')
    if [[ $f == *-01 ]]; then main=$n; else other=$((other + n)); fi
  done
  echo "$main $other"
}

echo "std::map workload: $strings strings inserted and erased ($window alive), then twice both; $(valgrind --version)"
printf '%-30s %15s %9s %15s %9s %11s %13s\n' configuration "main, N" "vs none" "main, 2N" "vs none" marginal "other threads"
base1="" base2=""
# row LABEL NAME CMD...: CMD's @N@, @W@ and @P@ become the sizes and a profile path, for N and for 2N.
row() {
  local label=$1 name=$2 m1 o1 m2 o2 scale a
  shift 2
  for scale in 1 2; do
    local args=()
    for a in "$@"; do
      case $a in
        @N@) args+=("$((strings * scale))") ;;
        @W@) args+=("$((window * scale))") ;;
        @P@) args+=("$work/$name-$scale.pyro") ;;
        *) args+=("$a") ;;
      esac
    done
    if ((scale == 1)); then read -r m1 o1 <<<"$(instructions "$name-1" "${args[@]}")"
    else read -r m2 o2 <<<"$(instructions "$name-2" "${args[@]}")"; fi
  done
  [[ -n $base1 ]] || { base1=$m1; base2=$m2; }
  awk -v l="$label" -v m1="$m1" -v m2="$m2" -v b1="$base1" -v b2="$base2" -v o2="$o2" 'BEGIN {
    printf "%-30s %15.0f %+8.2f%% %15.0f %+8.2f%% %+10.2f%% %13.0f\n", l, m1, (m1 - b1) * 100 / b1, m2,
           (m2 - b2) * 100 / b2, ((m2 - m1) - (b2 - b1)) * 100 / (b2 - b1), o2 }'
}

row "none" none "$plain" --child map @N@ @W@
row "linked, not started" idle "$ours" --child map @N@ @W@
row "ours, allocation sampling off" off "$ours" --child map @N@ @W@ --profile @P@ --sample-bytes 0 --cpu-hz 1
row "ours, 512 KiB" default "$ours" --child map @N@ @W@ --profile @P@ --cpu-hz 1
for f in off default; do
  [[ -s $work/$f-2.pyro ]] || { echo "alloc_instructions.sh: $f wrote no profile" >&2; exit 1; }
done

# The profiler's other threads (agent, push), natively: valgrind's slowdown makes their count above
# meaningless, so their CPU time is measured in real runs against the main thread's, median of 5 runs
# at 10N (a few seconds, so that start()'s one-time work, the unwind tables, weighs less) with the CPU
# sampler at its default 100 Hz. What allocation sampling adds to them is the difference of the rows.
native() {
  local label=$1 i ratios=()
  shift
  for i in 1 2 3 4 5; do
    "$@" --cpu-report 1 >/dev/null 2>"$work/native.err" ||
      { cat "$work/native.err" >&2; echo "alloc_instructions.sh: $label failed natively" >&2; exit 1; }
    ratios+=("$(awk '$1 == "cpu" { printf "%.6f", $3 / $2 }' "$work/native.err")")
  done
  printf '%s\n' "${ratios[@]}" | sort -g | awk -v l="$label" '{ r[NR] = $1 } END {
    printf "%-30s other threads %6.3f %% of the main thread'"'"'s CPU (median; %.3f .. %.3f)\n", l, 100 * r[3], 100 * r[1], 100 * r[5] }'
}
echo
echo "natively, 10N, CPU sampler at 100 Hz: the profiler's own threads' CPU time"
native "ours, allocation sampling off" "$ours" --child map $((10 * strings)) $((10 * window)) --profile "$work/n-off.pyro" --sample-bytes 0
native "ours, 512 KiB" "$ours" --child map $((10 * strings)) $((10 * window)) --profile "$work/n-default.pyro"
