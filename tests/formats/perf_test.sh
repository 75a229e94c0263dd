#!/usr/bin/env bash
# `perf record -g` of real programs, then `perf script`: our import gives exactly the stacks perf's own
# stackcollapse script folds from the same recording (comm as the root frame, kernel frames, [unknown]),
# and the sample total perf report counts. perf's collapsed output, with JIT-like empty frames and
# truncated names ending in a space added, imports leniently with every stack kept exactly.
# perf cannot record in some kernels and containers: then the checks are skipped with perf's reason.
#
#   perf_test.sh FORMAT_TOOL WORK_DIR
set -uo pipefail
tool=$(realpath "$1")
work=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/common.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

if ! command -v perf >/dev/null; then
  skip "perf record" "perf is not installed (Debian package linux-perf)"
  finish
fi
if ! probe=$(perf record -q -g -o probe.data -- true 2>&1); then
  skip "perf record" "perf cannot record here: ${probe//$'\n'/ }"
  finish
fi

check "workload built" g++ -O1 -fno-omit-frame-pointer -g "$here/gperf_busy.cpp" -o busy
# Several programs: ours (frame pointers), a shell, find (system calls: kernel frames), python3 (an
# interpreter: many [unknown] frames).
check "perf record -g of the workload" \
  perf record -q -g -o perf.data -- bash -c "./busy >/dev/null & find /usr/share/doc -type f >/dev/null; python3 -c 'print(sum(i*i for i in range(2000000)))' >/dev/null; wait"
check "perf script" bash -c "perf script -i perf.data > perf.txt 2>perf-script.err"
check "perf's own stackcollapse" bash -c "perf script -i perf.data report stackcollapse > collapsed.txt 2>collapse.err ||
                                          perf script -i perf.data -s \"\$(dirname \$(command -v perf))/../lib/perf-core/scripts/python/stackcollapse.py\" > collapsed.txt"
check "import perf script" "$tool" import perf.txt -o perf.pyro --at 1800000000
check "detected as perf script" bash -c "[ \"\$('$tool' detect perf.txt)\" = perf-script ]"
check "our stacks = perf's stackcollapse, line for line" \
  bash -c "diff <('$tool' folded perf.pyro cpu | sort) <(sort collapsed.txt) && echo \"\$(wc -l < collapsed.txt) distinct stacks\""
check "kernel frames and [unknown] are in it" bash -c "grep -q 'entry_SYSCALL_64\|do_syscall_64' collapsed.txt && grep -q '\[unknown\]' collapsed.txt"
check "total samples = perf report's" bash -c "
  expected=\$(perf report -i perf.data --stdio -n --sort comm -g none 2>/dev/null | awk '!/^#/ && NF >= 3 { n += \$3 } END { print n }')
  ours=\$('$tool' totals perf.pyro | awk '\$1 == \"cpu\" { print \$3 }')
  echo \"perf report \$expected, ours \$ours\"; [ -n \"\$expected\" ] && [ \"\$expected\" = \"\$ours\" ]"

# Issue 16's real-world collapsed files: JIT'd code leaves empty frames (a;;b, a;), perf truncates long
# template names so they end in a space. Every such line must import unchanged (empty -> [empty]).
check "variants of the collapsed file" python3 - <<'PY'
import re
lines = [l.rstrip("\n") for l in open("collapsed.txt") if l.strip()]
out, expected = [], {}
for i, line in enumerate(lines):
    stack, count = line.rsplit(" ", 1)
    frames = stack.split(";")
    if i % 3 == 0:
        frames = [f[:12] + " " if len(f) > 12 else f for f in frames]   # truncated, ending in a space
    if i % 3 == 1:
        frames.insert(1, "")                                           # a JIT frame without a name
    if i % 5 == 2:
        frames.append("")                                              # a stack that ends in ';'
    out.append(";".join(frames) + " " + count)
    key = ";".join(f if f else "[empty]" for f in frames)
    expected[key] = expected.get(key, 0) + int(count)
out.append("a line that cannot be read")
open("variants.folded", "w").write("\n".join(out) + "\n")
open("variants.expected", "w").write("".join("%s %d\n" % kv for kv in sorted(expected.items())))
PY
check "lenient import of the variants keeps every stack exactly" bash -c "
  '$tool' import variants.folded -o variants.pyro | grep -q 'skipped 1: line [0-9]* no count' &&
  diff <('$tool' folded variants.pyro cpu | LC_ALL=C sort) <(LC_ALL=C sort variants.expected)"
check "strict import of the variants fails naming a line" bash -c "
  ! '$tool' import --strict variants.folded -o strict.pyro 2> strict.err && grep -E 'line [0-9]+: ' strict.err"
finish
