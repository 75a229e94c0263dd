#!/usr/bin/env bash
# pprof written by Go's runtime/pprof and by gperftools (converted by go tool pprof -proto) imports with
# the totals and per-function self values go tool pprof reads from the same file; our pprof export of
# the imported .pyro reads in go tool pprof with the same types, units, period, totals and functions as
# our own query; pprof -> .pyro -> pprof -> .pyro keeps every type's totals exactly.
#
#   go_pprof_test.sh FORMAT_TOOL WORK_DIR
set -uo pipefail
tool=$(realpath "$1")
work=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
raw() { python3 "$here/pprof_raw.py" "$@"; }

export GOFLAGS=-mod=mod
# Without a home directory (some CI runners) Go has no default build cache: use one in the work directory.
if ! go env GOCACHE >/dev/null 2>&1 || [[ -z $(go env GOCACHE 2>/dev/null) ]]; then
  export GOCACHE="$work/go-cache" GOPATH="$work/go-path"
fi

if check "go build of a runtime/pprof program" bash -c "cd '$here/goprog' && go build -o '$work/goprog' ." &&
   check "goprog writes a CPU and a heap profile" ./goprog cpu.pb.gz heap.pb.gz; then
  for profile in cpu heap; do
    check "import Go $profile profile" "$tool" import $profile.pb.gz -o $profile.pyro
    check "Go $profile: imported totals and functions = go tool pprof -raw" raw compare "$tool" $profile.pyro $profile.pb.gz
    check "Go $profile: export pprof" "$tool" export $profile.pyro pprof -o $profile-export.pb.gz
    check "Go $profile: go tool pprof reads our export with our query's totals and functions" \
      raw compare "$tool" $profile.pyro $profile-export.pb.gz
    check "Go $profile: period and period type kept" \
      same_text "raw show $profile.pb.gz | grep -E '\"period(_type)?\"'" "raw show $profile-export.pb.gz | grep -E '\"period(_type)?\"'"
    check "Go $profile: pprof -> pyro -> pprof -> pyro keeps every type's total" \
      bash -c "'$tool' import $profile-export.pb.gz -o $profile-again.pyro >/dev/null &&
               diff <('$tool' totals $profile.pyro) <('$tool' totals $profile-again.pyro)"
    # go tool pprof prints values in their unit: seconds for nanoseconds, MB and kB for bytes.
    if [[ $profile == cpu ]]; then type=cpu total_re='of [0-9.]+m?s total'; else type=inuse_space total_re='of [0-9.]+[kMG]?B total'; fi
    check "Go $profile: go tool pprof -top shows $type in its unit" \
      bash -c "go tool pprof -top -sample_index=$type $profile-export.pb.gz 2>/dev/null | grep -E '^Type: $type|$total_re' | tr '\n' ' ' | grep -E 'Type: $type .*$total_re'"
  done
fi

if check "gperftools program built (-lprofiler)" \
     g++ -O1 -fno-omit-frame-pointer -g "$here/gperf_busy.cpp" -o gperf_busy -Wl,--no-as-needed -lprofiler -Wl,--as-needed &&
   check "gperftools CPUPROFILE run" env CPUPROFILE=gperf.prof CPUPROFILE_FREQUENCY=500 ./gperf_busy &&
   check "go tool pprof -proto converts it" bash -c "go tool pprof -proto gperf_busy gperf.prof > gperf.pb.gz 2>/dev/null"; then
  check "import gperftools profile" "$tool" import gperf.pb.gz -o gperf.pyro
  check "gperftools: total samples = google-pprof's Total" bash -c "
    expected=\$(google-pprof --text gperf_busy gperf.prof 2>/dev/null | sed -n 's/^Total: \([0-9]*\) samples\$/\1/p')
    ours=\$('$tool' totals gperf.pyro | awk '\$1 == \"samples\" { print \$3 }')
    echo \"google-pprof \$expected, ours \$ours\"; [ -n \"\$expected\" ] && [ \"\$expected\" = \"\$ours\" ]"
  check "gperftools: totals and functions = go tool pprof -raw" raw compare "$tool" gperf.pyro gperf.pb.gz
fi
finish
