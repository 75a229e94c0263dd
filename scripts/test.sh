#!/usr/bin/env bash
# Runs every test of the project (the README's test command; CI runs it through .ci/run):
#   release   RelWithDebInfo build (-O2 -g1) of everything; all CTest tests (unit, install/find_package, browser)
#   asan      AddressSanitizer + UndefinedBehaviorSanitizer (-O1 -g1); every test but those labelled sampler-tsan-only
#   tsan      ThreadSanitizer; the tests labelled sampler or tsan (skipped while there are no tests/test_sampler*)
#   noexcept  -fno-exceptions -fno-rtti; every test that does not declare needs-exceptions
#   fuzz      each libFuzzer target for PYROSCOPE_FUZZ_SECONDS (skipped while there is no fuzz/)
# Installs missing Debian packages first. Build trees go to build/test-<run>/ (git-ignored).
# Ends with the line "N passed, N failed" summed over the runs; exits non-zero if anything failed.
#
# Environment: PYROSCOPE_TEST_RUNS="release asan" picks runs; PYROSCOPE_JOBS (default 2);
#              PYROSCOPE_FUZZ_SECONDS (default 25 per target).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

bash scripts/install-deps.sh || { echo "test.sh: installing dependencies failed"; echo "0 passed, 1 failed"; exit 1; }

jobs=${PYROSCOPE_JOBS:-2}
runs=${PYROSCOPE_TEST_RUNS:-release asan tsan noexcept fuzz}
fuzz_seconds=${PYROSCOPE_FUZZ_SECONDS:-25}
total_passed=0
total_failed=0
report=()

note() { report+=("$(printf '%-9s %s' "$1" "$2")"); echo "=== $1: $2"; }

# configure_and_build RUN DIR [cmake args...]: a failed configure or build counts as one failure.
configure_and_build() {
  local run=$1 dir=$2
  shift 2
  local log="$dir.log"
  mkdir -p "$dir"
  echo "=== $run: configure and build in $dir (log: $log)"
  local started=$SECONDS
  if ! { cmake -S "$root" -B "$dir" "$@" && cmake --build "$dir" -j "$jobs"; } >"$log" 2>&1; then
    tail -n 80 "$log"
    total_failed=$((total_failed + 1))
    note "$run" "BUILD FAILED (see $log)"
    return 1
  fi
  echo "=== $run: built in $((SECONDS - started)) s"
}

# run_ctest RUN DIR [ctest args...]: adds the run's passed and failed test counts to the totals.
run_ctest() {
  local run=$1 dir=$2
  shift 2
  local log="$dir.ctest.log" started=$SECONDS
  (cd "$dir" && ctest --output-on-failure -j "$jobs" "$@") 2>&1 | tee "$log"
  local line passed=0 failed=0
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [[ -n $line ]]; then
    failed=$(sed -E 's/^.* ([0-9]+) tests? failed out of ([0-9]+).*$/\1/' <<<"$line")
    passed=$(( $(sed -E 's/^.* out of ([0-9]+).*$/\1/' <<<"$line") - failed ))
  elif ! grep -q "No tests were found" "$log"; then
    failed=1  # ctest itself failed before running anything
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  note "$run" "$passed passed, $failed failed ($((SECONDS - started)) s)"
}

has_run() { [[ " $runs " == *" $1 "* ]]; }

# CI builds carry line tables only (-g1: file:line in sanitizer reports, gdb backtraces and perf; no
# variable locations), which leaves the code as -g does and compiles faster: pyroscope.cpp, compiled by
# about a dozen translation units of each build, takes 123 s of CPU under ASan+UBSan at -O2 -g1
# against 169 s at -O2 -g.
common=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" -DPYROSCOPE_BUILD_TESTS=ON)
# The ASan+UBSan run compiles at -O1 (as sanitizer CI usually does): pyroscope.cpp then takes 80 s of
# CPU instead of 123 s. The tests of stacks of -O2 code without frame pointers run in the other builds
# (ASan keeps frame pointers anyway).
asan_flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" -DPYROSCOPE_BUILD_TESTS=ON)

if has_run release; then
  dir=build/test-release
  if configure_and_build release "$dir" "${common[@]}" -DPYROSCOPE_SANITIZE=none -DPYROSCOPE_NO_EXCEPTIONS=OFF \
       -DPYROSCOPE_BUILD_TOOLS=ON -DPYROSCOPE_BUILD_EXAMPLES=ON -DPYROSCOPE_BUILD_BENCH=ON -DPYROSCOPE_BUILD_VIEWER=ON; then
    run_ctest release "$dir"
  fi
fi

# The sanitizer and no-exceptions builds leave out what they would not run (viewer, bench, examples).
lean=(-DPYROSCOPE_BUILD_EXAMPLES=OFF -DPYROSCOPE_BUILD_BENCH=OFF -DPYROSCOPE_BUILD_VIEWER=OFF -DPYROSCOPE_BUILD_FUZZ=OFF)

if has_run asan; then
  dir=build/test-asan
  if configure_and_build asan "$dir" "${asan_flags[@]}" "${lean[@]}" -DPYROSCOPE_BUILD_TOOLS=ON \
       -DPYROSCOPE_SANITIZE=address,undefined -DPYROSCOPE_NO_EXCEPTIONS=OFF; then
    ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_string_checks=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      run_ctest asan "$dir" -LE 'sampler-tsan-only'
  fi
fi

if has_run tsan; then
  if compgen -G "tests/test_sampler*.cpp" >/dev/null; then
    dir=build/test-tsan
    if configure_and_build tsan "$dir" "${common[@]}" "${lean[@]}" -DPYROSCOPE_BUILD_TOOLS=OFF \
         -DPYROSCOPE_SANITIZE=thread -DPYROSCOPE_NO_EXCEPTIONS=OFF -DPYROSCOPE_TEST_FILTER='^test_(sampler|core_tree)'; then
      TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions="$root/tests/tsan.supp" \
        run_ctest tsan "$dir" -L '^(sampler|tsan)$'
    fi
  else
    note tsan "skipped: no tests/test_sampler*.cpp yet"
  fi
fi

if has_run noexcept; then
  dir=build/test-noexcept
  if configure_and_build noexcept "$dir" "${common[@]}" "${lean[@]}" -DPYROSCOPE_BUILD_TOOLS=ON \
       -DPYROSCOPE_SANITIZE=none -DPYROSCOPE_NO_EXCEPTIONS=ON; then
    run_ctest noexcept "$dir" -LE 'sampler-tsan-only'
  fi
fi

if has_run fuzz; then
  if [[ -f fuzz/CMakeLists.txt ]]; then
    dir=build/test-fuzz
    if CC=clang CXX=clang++ configure_and_build fuzz "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
         -DPYROSCOPE_BUILD_TESTS=OFF -DPYROSCOPE_BUILD_TOOLS=OFF "${lean[@]}" -DPYROSCOPE_BUILD_FUZZ=ON \
         -DPYROSCOPE_SANITIZE=none -DPYROSCOPE_NO_EXCEPTIONS=OFF; then
      fuzz_passed=0
      fuzz_failed=0
      # One target per core at a time: each still runs for fuzz_seconds, the stage takes half as long.
      fuzz_one() {
        local target=$1 corpus=$2 name work
        name=$(basename "$target")
        # Work on a copy: the run adds inputs to its corpus, and the checked-in seeds stay untouched.
        work="$dir/corpus-run/$name"
        rm -rf "$work" && mkdir -p "$work"
        [[ -n $corpus && -d $corpus ]] && cp -r "$corpus"/. "$work"/
        ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
          "$target" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 \
          -artifact_prefix="$dir/$name-" "$work" >"$dir/$name.log" 2>&1
        echo $? >"$dir/$name.status"
      }
      names=()
      while read -r target corpus; do
        [[ -n $target ]] || continue
        names+=("$(basename "$target")")
        echo "=== fuzz: $(basename "$target") for ${fuzz_seconds} s"
        while (($(jobs -rp | wc -l) >= jobs)); do wait -n; done
        fuzz_one "$target" "$corpus" &
      done <"$dir/fuzz_targets.txt"
      wait
      for name in "${names[@]}"; do
        if [[ $(cat "$dir/$name.status" 2>/dev/null) == 0 ]]; then
          fuzz_passed=$((fuzz_passed + 1))
          echo "=== fuzz: $name: $(tail -n 1 "$dir/$name.log")"
        else
          fuzz_failed=$((fuzz_failed + 1))
          tail -n 60 "$dir/$name.log"
          echo "=== fuzz: $name FAILED (log: $dir/$name.log, crash input under $dir/$name-*)"
        fi
      done
      total_passed=$((total_passed + fuzz_passed))
      total_failed=$((total_failed + fuzz_failed))
      note fuzz "$fuzz_passed passed, $fuzz_failed failed"
    fi
  else
    note fuzz "skipped: no fuzz/ yet"
  fi
fi

echo
echo "Summary:"
printf '  %s\n' "${report[@]}"
if ((total_passed == 0 && total_failed == 0)); then
  echo "test.sh: no test ran" >&2
  total_failed=1
fi
echo "$total_passed passed, $total_failed failed"
((total_failed == 0))
