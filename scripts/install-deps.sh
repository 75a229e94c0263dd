#!/usr/bin/env bash
# Installs the Debian (bookworm) packages that building, testing and running pyroscope.hpp need, and
# the viewer's npm packages. Idempotent: a machine that has everything does no network work.
# Runs as root (CI) or through sudo; needs no input.
#
# Usage: bash scripts/install-deps.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# package[:command] — when a command is given, having that command on PATH is enough (node and npm
# may come from another source than Debian's packages, e.g. NodeSource's nodejs, which bundles npm
# and conflicts with Debian's npm package).
packages=(
  # build
  build-essential cmake g++ clang dpkg-dev git
  # libFuzzer and the sanitizer runtimes for clang
  libclang-rt-14-dev
  # tests
  doctest-dev
  # formats: JSON import (speedscope, .cpuprofile) through nlohmann/json; perf for the perf script
  # checks (zlib1g-dev and google-perftools below serve gzip and the gperftools checks too)
  nlohmann-json3-dev linux-perf:perf
  # the sampler and benchmarks: unwinding, symbols, gzip baseline, the gperftools baseline
  zlib1g-dev libunwind-dev libdw-dev libgoogle-perftools-dev google-perftools
  # bench_alloc's comparisons (heaptrack; gperftools' HEAPPROFILE above) and its real program (jq)
  heaptrack jq:jq
  # the rideshare example's HTTP server (found through pkg-config) and the demo's static file server
  libcpp-httplib-dev pkgconf:pkg-config python3:python3
  # pyro serve's client test: a venv for pyroscope-io (Go comes with the machine: /usr/local/go)
  python3-venv
  # the viewer: native (Dear ImGui, GLFW, stb_image_write) and WebAssembly
  libimgui-dev libglfw3-dev libstb-dev emscripten
  # browser and screenshot tests; xdotool clicks the native viewer under Xvfb
  xvfb xdotool chromium imagemagick nodejs:node npm:npm
  # the viewer's UI font (both builds fall back to ImGui's built-in font without it)
  fonts-dejavu-core
)

missing=()
for entry in "${packages[@]}"; do
  package=${entry%%:*}
  command_name=""
  [[ $entry == *:* ]] && command_name=${entry#*:}
  if [[ -n $command_name ]] && command -v "$command_name" >/dev/null 2>&1; then
    continue
  fi
  if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    continue
  fi
  missing+=("$package")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "install-deps: missing packages (${missing[*]}) and not root; install them as root" >&2
      exit 1
    fi
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
else
  echo "install-deps: all Debian packages present"
fi

# npm packages of the viewer's browser tests (playwright-core drives the system chromium) and of the
# format checks (pprof-format, @datadog/pprof, speedscope, ajv): only when
# the repository pins them in package-lock.json, and only when node_modules was not installed from this
# very lock file already (npm ci deletes node_modules first, so the stamp goes with it).
if [[ -f package-lock.json ]]; then
  lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
  stamp=node_modules/.installed-from-lock-sha256
  if [[ ! -f $stamp || $(cat "$stamp") != "$lock_hash" ]]; then
    echo "install-deps: npm ci"
    npm ci --no-audit --no-fund </dev/null
    echo "$lock_hash" >"$stamp"
  else
    echo "install-deps: node_modules already installed from package-lock.json"
  fi
fi

# pyro serve's client tests (tools/tests/clients_test.py): the Python agent pyroscope-io in a venv of
# its own under build/ (pinned; made again only when missing or at another version), and the Go
# module github.com/grafana/pyroscope-go into Go's module cache (go.sum pins it). @pyroscope/nodejs
# comes with npm ci above.
python_clients=build/python-clients
if ! "$python_clients/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("pyroscope-io") != "1.4.0")' 2>/dev/null; then
  echo "install-deps: pyroscope-io into $python_clients"
  rm -rf "$python_clients"
  python3 -m venv "$python_clients"
  "$python_clients/bin/pip" install --quiet --disable-pip-version-check pyroscope-io==1.4.0 </dev/null
else
  echo "install-deps: pyroscope-io already in $python_clients"
fi
go=$(command -v go || echo /usr/local/go/bin/go)
if [[ -x $go ]]; then
  (cd tools/tests/clients/go && GOTOOLCHAIN=local GOFLAGS=-mod=readonly "$go" mod download)
  echo "install-deps: Go modules of tools/tests/clients/go present"
else
  echo "install-deps: no go command: pyro serve's client test (pyro_serve_clients) will fail" >&2
fi
