#!/usr/bin/env bash
# Accuracy of pyro record against perf on a real multi-threaded program (one run; not in CI).
#
# zstd 1.5.4 built from Debian's source (`apt-get source zstd`, its own Makefile: -O3 -g, no frame
# pointers, as distributions build) compresses the same input with two worker threads (-T2) three ways:
# alone, under `pyro record --rate 100`, and under `perf record -F 999 -g` (frame-pointer call graphs,
# perf's default). Printed as a markdown table:
#   - self share of perf's top 10 functions in both profiles, and the difference in points;
#   - stack completeness: the share of samples whose stack reaches main() or a thread's start routine
#     (start_thread), i.e. the unwinder followed it to its end;
#   - CPU overhead: user+system seconds under each tool against the program alone (median of runs).
#
# usage: bash bench/accuracy/accuracy.sh [--pyro build/tools/pyro] [--work build/accuracy] [--runs 3] [--level 12]
# (level 12: ~6 s of CPU here, ~600 of our samples: the counting noise of a 10 % share is ~1.2 points)
# Needs: perf (linux-perf) that can record here, dpkg-dev (apt-get source) with a deb-src entry for
# bookworm, make and a C compiler.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
pyro=
work=$repo/build/accuracy
runs=3
level=12
while [[ $# -gt 0 ]]; do
  case $1 in
    --pyro) pyro=$(realpath "$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --level) level=$2; shift 2 ;;
    *) echo "usage: accuracy.sh [--pyro PATH] [--work DIR] [--runs N] (bad argument '$1')" >&2; exit 2 ;;
  esac
done
[[ -n $pyro ]] || pyro=$(ls -t "$repo"/build*/tools/pyro "$repo"/build*/*/tools/pyro 2>/dev/null | head -n 1)
[[ -x $pyro ]] || { echo "accuracy.sh: no pyro found under build*/ (build the pyro target or pass --pyro)" >&2; exit 1; }
command -v perf >/dev/null || { echo "accuracy.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$work" && cd "$work" || exit 1

# --- the program ---------------------------------------------------------------------------------
if [[ ! -x src/programs/zstd ]]; then
  rm -rf src src.tmp && mkdir src.tmp
  (cd src.tmp && apt-get source zstd >/dev/null 2>&1) || { echo "accuracy.sh: apt-get source zstd failed (a deb-src entry?)" >&2; exit 1; }
  mv src.tmp/libzstd-*/ src && rm -rf src.tmp
  make -C src/programs -j2 zstd MOREFLAGS=-g >build.log 2>&1 || { echo "accuracy.sh: building zstd failed (build.log)" >&2; exit 1; }
fi
zstd=$work/src/programs/zstd
# Input: the machine's shared libraries, 96 MiB (real, mixed-compressibility bytes).
if [[ ! -s input.bin ]]; then
  find /usr/lib/x86_64-linux-gnu -maxdepth 1 -name '*.so*' -type f -print0 | sort -z | xargs -0 cat 2>/dev/null | head -c 100663296 >input.bin
fi
cmd=("$zstd" -q -f -T2 -"$level" input.bin -o out.zst)

cpu_of() { awk '{ print $1 + $2 }' "$1"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
timed() {  # timed OUT_FILE COMMAND...: user and system seconds of the command and its children
  local out=$1
  shift
  /usr/bin/env time -f '%U %S' -o "$out" "$@" >/dev/null 2>>timed.err
}
[[ -x /usr/bin/time ]] || apt-get install -y time >/dev/null 2>&1

alone=() ours=() theirs=() dwarf=()
for ((r = 0; r < runs; r++)); do
  timed t.alone "${cmd[@]}" && alone+=("$(cpu_of t.alone)")
  rm -f ours.pyro
  timed t.ours "$pyro" record --rate 100 -o ours.pyro -- "${cmd[@]}" && ours+=("$(cpu_of t.ours)")
  timed t.perf perf record -q -F 999 -g -o perf.data -- "${cmd[@]}" && theirs+=("$(cpu_of t.perf)")
  timed t.dwarf perf record -q -F 999 --call-graph dwarf -o perf-dwarf.data -- "${cmd[@]}" && dwarf+=("$(cpu_of t.dwarf)")
done
cpu_alone=$(printf '%s\n' "${alone[@]}" | median)
cpu_ours=$(printf '%s\n' "${ours[@]}" | median)
cpu_perf=$(printf '%s\n' "${theirs[@]}" | median)
cpu_dwarf=$(printf '%s\n' "${dwarf[@]}" | median)

# --- self shares and completeness ----------------------------------------------------------------
# Ours: every sample of the zstd series. perf: each sample of zstd's threads goes to its first frame
# outside the kernel, because our CPU-time timers count system time to the user frame the kernel
# returns to (a page fault in ZSTD_count is ZSTD_count's time in both).
"$pyro" query ours.pyro 'zstd{}' --format table >ours.table 2>/dev/null
awk 'NR > 1 && $1 ~ /^[0-9]+$/ { s = $2; sub(/%/, "", s); print $5 "\t" s }' ours.table >ours.self
ours_samples=$(awk 'NR > 1 && $1 ~ /^[0-9]+$/ { n += $1 } END { print n + 0 }' ours.table)
ours_complete=$("$pyro" query ours.pyro 'zstd{}' 2>/dev/null |
  awk '{ n = $NF; total += n; stack = $0; sub(/ [0-9]+$/, "", stack); if (stack ~ /(^|;)(main|start_thread)(;|$)/) ok += n }
       END { if (total) printf "%.1f", 100 * ok / total }')
# One name per function: glibc's aliases at one address differ between symbol tables (perf picks
# __GI___libc_write where .dynsym has write; memcpy and memmove are one body).
canonical='function canonical(n) { sub(/^__GI_/, "", n); sub(/^__libc_/, "", n); sub(/^__/, "", n); sub(/^memcpy/, "memmove", n); return n }'
awk "$canonical"' { FS = OFS = "\t" } { s[canonical($1)] += $2 } END { for (n in s) print n, s[n] }' ours.self >ours.self.c && mv ours.self.c ours.self
# perf_stats DATA PREFIX: PREFIX.self (function \t share), PREFIX.stats ("samples complete%")
perf_stats() {
  perf script -i "$1" --comm zstd -F ip,sym,dso 2>/dev/null |
    awk -v self="$2.self" -v stats="$2.stats" "$canonical"'
      function finish() { if (!in_sample) return; total++; if (ok) good++; count[first == "" ? "[kernel]" : first]++; in_sample = 0; ok = 0; first = "" }
      NF == 0 { finish(); next }
      { in_sample = 1; sym = $2; if (sym == "main" || sym == "start_thread") ok = 1
        if (first == "" && $NF != "([kernel.kallsyms])") first = canonical(sym) }
      END { finish(); for (f in count) printf "%s\t%.2f\n", f, 100 * count[f] / total > self
            printf "%d %.1f\n", total, total ? 100 * good / total : 0 > stats }'
  sort -t$'\t' -k2 -nr -o "$2.self" "$2.self"
}
perf_stats perf.data perf
perf_stats perf-dwarf.data dwarf
read -r perf_samples perf_complete <perf.stats
read -r dwarf_samples dwarf_complete <dwarf.stats

echo
echo "zstd -T2 -$level of $(($(stat -c %s input.bin) / 1048576)) MiB, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%F)"
echo
echo "| function (perf's top 10 by self, first user frame) | perf -F 999 -g | pyro record (100 Hz) | difference (points) |"
echo "|---|---:|---:|---:|"
max_diff=0
while IFS=$'\t' read -r name share; do
  ours_share=$(awk -F'\t' -v n="$name" '$1 == n { print $2; exit }' ours.self)
  [[ -n $ours_share ]] || ours_share=0
  diff=$(awk -v a="$share" -v b="$ours_share" 'BEGIN { d = b - a; printf "%+.1f", d }')
  max_diff=$(awk -v m="$max_diff" -v d="$diff" 'BEGIN { d += 0; d = d < 0 ? -d : d; print (d > m ? d : m) }')
  printf '| `%s` | %.1f %% | %.1f %% | %s |\n' "$name" "$share" "$ours_share" "$diff"
done < <(head -n 10 perf.self)
echo
echo "| | perf -F 999 -g | perf -F 999 --call-graph dwarf | pyro record (100 Hz) | zstd alone |"
echo "|---|---:|---:|---:|---:|"
echo "| samples of zstd's threads | ${perf_samples:-?} | ${dwarf_samples:-?} | ${ours_samples:-?} | |"
echo "| stacks reaching main() or start_thread | ${perf_complete:-?} % | ${dwarf_complete:-?} % | ${ours_complete:-?} % | |"
awk -v a="$cpu_alone" -v o="$cpu_ours" -v p="$cpu_perf" -v d="$cpu_dwarf" 'BEGIN {
  printf "| CPU seconds (user+sys, median of runs) | %.2f (%+.1f %%) | %.2f (%+.1f %%) | %.2f (%+.1f %%) | %.2f |\n",
         p, 100 * (p - a) / a, d, 100 * (d - a) / a, o, 100 * (o - a) / a, a }'
echo
echo "largest difference in the top 10: $max_diff points (target: within 2)"
