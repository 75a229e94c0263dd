#!/usr/bin/env bash
# The sampler on aarch64, under qemu-user: builds scripts/aarch64-qemu/busy.cpp (it includes
# pyroscope.hpp with PYROSCOPE_IMPLEMENTATION and profiles itself) with Debian's cross compiler, runs it
# under qemu-aarch64-static, and prints what the program measured beside what its profile says (read
# with the host's pyro). Manual, not in CI: qemu-user's timers and signals are not the hardware's
# (docs/sampler.md, "Other architectures").
#
#   bash scripts/aarch64-qemu.sh PATH/TO/pyro [WORK_DIR]      (default WORK_DIR: build/aarch64-qemu)
# Needs: apt-get install --no-install-recommends g++-aarch64-linux-gnu qemu-user-static (~120 MB download)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
pyro=$(realpath "${1:?usage: aarch64-qemu.sh PATH/TO/pyro [WORK_DIR]}")
work=$(realpath -m "${2:-build/aarch64-qemu}")
for tool in aarch64-linux-gnu-g++ qemu-aarch64-static; do
  command -v "$tool" >/dev/null || {
    echo "aarch64-qemu.sh: $tool is missing (apt-get install g++-aarch64-linux-gnu qemu-user-static)" >&2
    exit 1
  }
done
mkdir -p "$work" && cd "$work"
echo "== build: aarch64-linux-gnu-g++ -std=c++17 -O2 -g -Wall -Wextra (the header's implementation included)"
aarch64-linux-gnu-g++ -std=c++17 -O2 -g -Wall -Wextra -I"$root" "$root/scripts/aarch64-qemu/busy.cpp" -o busy -pthread
run() {  # run NAME SECONDS WALL [HOT COLD]
  local name=$1
  shift
  rm -f "$name.pyro"
  echo "== $name: qemu-aarch64-static -L /usr/aarch64-linux-gnu ./busy $1 $name.pyro ${*:2}"
  qemu-aarch64-static -L /usr/aarch64-linux-gnu ./busy "$1" "$name.pyro" "${@:2}"
  "$pyro" query "$name.pyro" 'busy.cpu{}' --format table 2>&1 | awk '$5 ~ /^(hot|cold)/ || /samples/'
  echo "   stacks of busy.cpu by outermost frame:"
  "$pyro" query "$name.pyro" 'busy.cpu{}' 2>/dev/null | awk '{ split($1, f, ";"); n[f[1]] += $NF } END { for (k in n) print "    ", k, n[k] }'
}
run split-9-1 3 0
run split-1-1 3 0 500000 500000
run wall 1 1
echo "== busy.wall (blocked samples come from the host's /proc/self/task/<tid>/syscall under qemu):"
"$pyro" query wall.pyro 'busy.wall{}'
