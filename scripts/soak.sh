#!/usr/bin/env bash
# Long reliability campaigns: what is too long for CI (scripts/test.sh). Results go to docs/reliability.md
# by hand; this script prints them and writes them to build/soak/results.txt.
#
#   fuzz       every libFuzzer target under ASan+UBSan for SOAK_FUZZ_RUNS executions (10 million) or
#              SOAK_FUZZ_SECONDS (3600), whichever comes first, from the seed corpus plus real files:
#              a perf capture of a real C++ compile imported, exported and cut into inputs;
#              SOAK_FUZZ_TARGETS (names, default all) runs some of them, so a campaign of hours can be
#              split across runs
#   crash      SOAK_CRASH_TRIALS (1000) kill -9 trials of a writer, each followed by open, query and an
#              append by a new writer (test_core_crash with PYROSCOPE_CRASH_TRIALS), and the disk-full
#              test of the same file
#   diskfull   pyro import into a small tmpfs until it is full: a clear error, every earlier import
#              intact, appending again once there is room (needs root to mount; skipped otherwise)
#   readonly   the same file on a read-only mount: pyro import refuses with a clear error, pyro info and
#              query still read everything (needs root)
#   serve      pyro serve under load on 127.0.0.1: 8 clients for SOAK_SERVE_SECONDS (60), samples
#              acknowledged == samples stored exactly; then SOAK_SERVE_KILLS (100) kill -9 of the server
#              under load, each once it acknowledges pushes: the directory opens every time and holds
#              every acknowledged sample; after every fifth kill one more restart is stopped with SIGTERM
#              under load: exit 0, every acknowledged sample, the hour file it closed opens
#              from its index (CI runs 10 s and 3 kills, one clean stop: ctest -R pyro_serve_load)
#   wall       wall-clock sampling (Config::wall_clock) for SOAK_WALL_SECONDS (30) over nine kinds of
#              blocking calls (sleep_for, clock_nanosleep, condition_variable::wait_for, pipe read,
#              epoll_wait, poll, accept, thread::join, a busy thread's poll): zero EINTR and zero early
#              wakeups (test_sampler_wall with PYROSCOPE_WALL_SOAK_SECONDS; CI runs 5 s)
#
# usage: bash scripts/soak.sh [fuzz] [crash] [diskfull] [readonly] [serve] [wall]   (no argument: all)
# Environment: SOAK_FUZZ_RUNS, SOAK_FUZZ_SECONDS, SOAK_FUZZ_TARGETS, SOAK_CRASH_TRIALS, SOAK_SERVE_SECONDS, SOAK_SERVE_KILLS,
#              SOAK_WALL_SECONDS, PYROSCOPE_JOBS (default 2).
set -uo pipefail
# The whole script is one block, read before any of it runs: an edit of this file during a campaign
# of hours (a checkout, a pull) cannot change what the running campaign executes next.
{
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
jobs=${PYROSCOPE_JOBS:-2}
fuzz_runs=${SOAK_FUZZ_RUNS:-10000000}
fuzz_seconds=${SOAK_FUZZ_SECONDS:-3600}
fuzz_targets=${SOAK_FUZZ_TARGETS:-}
crash_trials=${SOAK_CRASH_TRIALS:-1000}
campaigns=${*:-fuzz crash diskfull readonly serve wall}
out=build/soak
mkdir -p "$out"
results="$out/results.txt"
: >"$results"
failures=0

say() { echo "$*" | tee -a "$results"; }
fail() { say "FAILED: $*"; failures=$((failures + 1)); }
wants() { [[ " $campaigns " == *" $1 "* ]]; }

bash scripts/install-deps.sh >/dev/null || { echo "soak.sh: installing dependencies failed"; exit 1; }
say "soak.sh $(date -u +%FT%TZ) on $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# A release build for the tools and the crash test.
rel=$out/rel
if ! { cmake -S . -B "$rel" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYROSCOPE_BUILD_TESTS=ON -DPYROSCOPE_BUILD_TOOLS=ON \
         -DPYROSCOPE_BUILD_VIEWER=OFF -DPYROSCOPE_BUILD_EXAMPLES=OFF -DPYROSCOPE_BUILD_BENCH=OFF \
         -DPYROSCOPE_BUILD_FUZZ=OFF -DPYROSCOPE_TEST_FILTER='^test_(core_crash|sampler_wall)$' &&
       cmake --build "$rel" -j "$jobs" --target pyro test_core_crash test_group_internals; } >"$rel.log" 2>&1; then
  tail -n 40 "$rel.log"
  echo "soak.sh: the release build failed (log: $rel.log)"
  exit 1
fi
pyro=$rel/tools/pyro

# Real inputs: perf of a real C++ compile (long template names, kernel frames), imported with our
# tools and written out in every format the fuzz targets read.
real=$out/real
make_real_inputs() {
  rm -rf "$real" && mkdir -p "$real"
  if command -v perf >/dev/null && perf record -q -g -o "$real/probe.data" -- true >/dev/null 2>&1; then
    # The header's whole implementation: a compile of half a minute, with long template names.
    perf record -q -g -F 499 -o "$real/perf.data" -- g++ -std=c++17 -O1 -I"$root" -c "$root/pyroscope.cpp" \
      -o "$real/pyroscope.o" >/dev/null 2>&1
    perf script -i "$real/perf.data" >"$real/perf.txt" 2>/dev/null
  fi
  if [[ -s $real/perf.txt ]]; then
    "$pyro" import "$real/perf.txt" -o "$real/compile.pyro" --app compile --at 1800000000 >/dev/null
  else
    # No perf here: a profile of the same shape from the benchmark generator.
    python3 ../shared/bench/gen_folded.py 2000 1 >"$real/gen.folded" 2>/dev/null ||
      printf 'main;a;b 3\nmain;c 2\n' >"$real/gen.folded"
    "$pyro" import "$real/gen.folded" -o "$real/compile.pyro" --app compile --at 1800000000 >/dev/null
  fi
  "$pyro" export "$real/compile.pyro" 'compile{}' --format pprof -o "$real/compile.pb.gz" >/dev/null
  "$pyro" export "$real/compile.pyro" 'compile{}' --format speedscope -o "$real/compile.speedscope.json" >/dev/null
  "$pyro" export "$real/compile.pyro" 'compile{}' --format folded -o "$real/compile.folded" >/dev/null
  gzip -dc "$real/compile.pb.gz" >"$real/compile.pb" 2>/dev/null
  if command -v node >/dev/null; then
    (cd "$real" && node --cpu-prof --cpu-prof-name=node.cpuprofile -e \
      'let s = 0; for (let i = 0; i < 3e7; i++) s += Math.sqrt(i); console.log(s)' >/dev/null 2>&1)
  fi
  cp "$root"/tests/data/*.pyro "$real"/ 2>/dev/null
}

# Inputs for one target: a real file cut to at most 256 KiB (libFuzzer's -max_len), several cuts of a
# long text so each starts at a line.
real_inputs_for() {
  local name=$1 dir=$2
  local files=()
  case $name in
    fuzz_file) files=("$real"/*.pyro) ;;
    fuzz_pprof) files=("$real"/compile.pb.gz "$real"/compile.pb) ;;
    fuzz_perf_script) files=("$real"/perf.txt) ;;
    fuzz_folded) files=("$real"/compile.folded) ;;
    fuzz_speedscope) files=("$real"/compile.speedscope.json) ;;
    fuzz_cpuprofile) files=("$real"/node.cpuprofile) ;;
    *) return 0 ;;
  esac
  local f i=0
  for f in "${files[@]}"; do
    [[ -s $f ]] || continue
    head -c 262144 "$f" >"$dir/real-$i-$(basename "$f")"
    i=$((i + 1))
  done
}

if wants fuzz; then
  fz=$out/fuzz
  if ! { CC=clang CXX=clang++ cmake -S . -B "$fz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYROSCOPE_BUILD_TESTS=OFF \
           -DPYROSCOPE_BUILD_TOOLS=OFF -DPYROSCOPE_BUILD_EXAMPLES=OFF -DPYROSCOPE_BUILD_BENCH=OFF \
           -DPYROSCOPE_BUILD_VIEWER=OFF -DPYROSCOPE_BUILD_FUZZ=ON -DPYROSCOPE_SANITIZE=none &&
         cmake --build "$fz" -j "$jobs"; } >"$fz.log" 2>&1; then
    tail -n 40 "$fz.log"
    fail "fuzz build (log: $fz.log)"
  else
    make_real_inputs
    while read -r target corpus; do
      [[ -n $target ]] || continue
      name=$(basename "$target")
      [[ -z $fuzz_targets || " $fuzz_targets " == *" $name "* ]] || continue
      work=$fz/corpus-soak/$name
      rm -rf "$work" && mkdir -p "$work"
      [[ -n $corpus && -d $corpus ]] && cp -r "$corpus"/. "$work"/
      real_inputs_for "$name" "$work"
      started=$SECONDS
      if ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
           "$target" -runs="$fuzz_runs" -max_total_time="$fuzz_seconds" -max_len=262144 -timeout=20 \
           -rss_limit_mb=4096 -artifact_prefix="$fz/$name-" "$work" >"$fz/$name.soak.log" 2>&1; then
        execs=$(grep -oE 'Done [0-9]+ runs' "$fz/$name.soak.log" | tail -n 1 | grep -oE '[0-9]+')
        say "fuzz $name: ${execs:-?} executions in $((SECONDS - started)) s, corpus $(ls "$work" | wc -l) inputs, no finding"
      else
        tail -n 60 "$fz/$name.soak.log"
        fail "fuzz $name: a finding after $((SECONDS - started)) s (log: $fz/$name.soak.log; input: $fz/$name-*)"
      fi
    done <"$fz/fuzz_targets.txt"
    for name in $fuzz_targets; do
      grep -q "/$name " "$fz/fuzz_targets.txt" || grep -q "/$name\$" "$fz/fuzz_targets.txt" ||
        fail "SOAK_FUZZ_TARGETS names $name, which is not a fuzz target (see $fz/fuzz_targets.txt)"
    done
  fi
fi

if wants crash; then
  started=$SECONDS
  log=$out/crash.log
  if (cd "$rel/tests" && mkdir -p work/soak && cd work/soak &&
      PYROSCOPE_CRASH_TRIALS=$crash_trials "$root/$rel/tests/test_core_crash" --success=false) >"$log" 2>&1; then
    say "crash: $(grep -oE '[0-9]+ kills: [^"]*' "$log" | head -n 1 | tr -d '"'); every file opened, every finished block read back, a new writer appended ($((SECONDS - started)) s)"
  else
    tail -n 40 "$log"
    fail "crash trials (log: $log)"
  fi
fi

# The tmpfs trials: a folded profile imported again and again into one file, block after block.
mnt=$out/mnt
folded=$out/one-block.folded
printf 'main;serve;handler_%d;work 7\n' $(seq 1 300) >"$folded"
import_at() { "$pyro" import "$folded" -o "$1" --app soak --at "$2" 2>&1; }
blocks_in() { "$pyro" info "$1" 2>/dev/null | awk '$1 == "blocks" { print $2 }'; }

if wants diskfull || wants readonly; then
  if [[ $(id -u) -ne 0 ]]; then
    say "diskfull/readonly: skipped (mounting a tmpfs needs root)"
    campaigns=${campaigns//diskfull/}
    campaigns=${campaigns//readonly/}
  else
    mkdir -p "$mnt"
    umount "$mnt" 2>/dev/null
    mount -t tmpfs -o size=256k tmpfs "$mnt" || { fail "mount a tmpfs on $mnt"; campaigns=; }
  fi
fi

if wants diskfull; then
  file=$mnt/full.pyro
  imported=0
  message=
  for i in $(seq 0 100000); do
    if ! message=$(import_at "$file" $((1800000000 + 10 * i))); then break; fi
    imported=$((i + 1))
  done
  stored=$(blocks_in "$file")
  if [[ $message != *"No space left on device"* ]]; then
    fail "diskfull: the error does not say the disk is full: $message"
  elif [[ $stored != "$imported" ]]; then
    fail "diskfull: $imported imports succeeded, the file holds ${stored:-no} blocks"
  elif ! "$pyro" query "$file" 'soak{}' --from 1800000000 --until $((1800000000 + 10 * imported)) >/dev/null; then
    fail "diskfull: the full file does not answer a query"
  else
    mount -o remount,size=1m "$mnt"
    if import_at "$file" $((1800000000 + 10 * imported)) >/dev/null && [[ $(blocks_in "$file") == $((imported + 1)) ]]; then
      say "diskfull: $imported imports fitted in 256 KiB, the next one said: ${message##*: error: }; all $imported blocks intact, and one more appended once there was room"
    else
      fail "diskfull: appending after making room failed"
    fi
  fi
fi

if wants readonly; then
  file=$mnt/full.pyro
  [[ -f $file ]] || import_at "$file" 1800000000 >/dev/null
  before=$(blocks_in "$file")
  mount -o remount,ro "$mnt"
  if message=$(import_at "$file" 1900000000); then
    fail "readonly: pyro import wrote to a read-only file system"
  elif [[ $message != *"Read-only file system"* ]]; then
    fail "readonly: the error does not say why: $message"
  elif [[ $(blocks_in "$file") != "$before" ]] || ! "$pyro" query "$file" 'soak{}' >/dev/null; then
    fail "readonly: the file does not read as before"
  else
    say "readonly: pyro import refused (${message##*: error: }); pyro info and query read all $before blocks"
  fi
  mount -o remount,rw "$mnt"
fi
mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"

if wants serve; then
  started=$SECONDS
  log=$out/serve.log
  python3 tools/tests/serve_test.py "$pyro" "$out/serve-work" load "${SOAK_SERVE_SECONDS:-60}" \
    "${SOAK_SERVE_KILLS:-100}" >"$log" 2>&1
  if grep -qE '^[0-9]+ passed, 0 failed' "$log"; then
    say "serve: $(grep -E '^# load' "$log" | sed 's/^# //'); $(grep -E '^# kill' "$log" | sed 's/^# //') ($((SECONDS - started)) s)"
  else
    grep -E '^(FAIL|#)' "$log"
    fail "serve load and kill -9 trials (log: $log)"
  fi
fi

if wants wall; then
  log=$out/wall.log
  seconds=${SOAK_WALL_SECONDS:-30}
  mkdir -p "$out/wall-work"
  if (cd "$out/wall-work" && PYROSCOPE_WALL_SOAK_SECONDS=$seconds "$root/$rel/tests/test_group_internals" \
        --source-file='*/test_sampler_wall.cpp' -tc='*no EINTR and no early*') >"$log" 2>&1; then
    say "wall: $seconds s with wall-clock sampling: $(grep -c ' 0 EINTR, 0 early' "$log") kinds of blocking call," \
        "0 EINTR, 0 early wakeups; $(grep -oE '[0-9]+ wall ticks.*' "$log" | head -1)"
  else
    grep -E 'MESSAGE|ERROR' "$log"
    fail "wall: blocking calls disturbed by wall-clock sampling (log: $log)"
  fi
fi

say "soak.sh: $failures failure(s); results in $results"
[[ $failures -eq 0 ]]
exit
}
