#!/usr/bin/env bash
# The rideshare demo, end to end, in one command:
#   1. installs what is missing (scripts/install-deps.sh) and builds the example (cmake, -j2);
#   2. starts three regions of the ride-sharing service (us-east, eu-north, ap-south) as three
#      processes, each profiling itself into its own .pyro file in the output folder;
#   3. runs the load generator against all three for --duration seconds;
#   4. stops the servers (each flushes its last, partial block);
#   5. builds the WebAssembly viewer, puts the three files next to it and serves the folder on
#      http://localhost:4040, printing the URL that opens them as one data set.
# Ctrl-C at any point stops everything cleanly and leaves the data in the output folder.
#
# Why three files and not one: each process writes its own file with its own writer, so no process
# depends on another to record its profile (a crashing region loses nothing of the others), and no
# writer process or socket protocol has to exist. The viewer and the query API open several files as
# one data set (pyroscope::Dataset), so the three regions show as one application with a region tag.
#
# Usage: bash scripts/demo.sh [options]
#   --duration S    seconds of load (default 180)
#   --period S      seconds of each heavy and each light mutex_lock period in eu-north (default 30;
#                   a multiple of 10 lines up with the profile's 10 s blocks)
#   --rate R        requests per second to each region (default 45)
#   --out DIR       output folder (default out/demo; its old .pyro files are replaced)
#   --port N        port of the viewer's web server (default 4040)
#   --base-port N   the regions listen on N, N+1, N+2 (default 5001)
#   --no-serve      stop after profiling: no viewer build, no web server
#   --serve-only    no profiling: serve the profiles an earlier run left in --out
#   --skip-install  do not run scripts/install-deps.sh
#   --bin-dir DIR   use rideshare and rideshare-load from DIR instead of building them
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

duration=180
period=30
rate=45
out=out/demo
http_port=4040
base_port=5001
serve=1
profile=1
install=1
bin_dir=""
regions=(us-east eu-north ap-south)

say() { echo "demo: $*"; }
die() {
  echo "demo: error: $*" >&2
  exit 1
}
usage() { sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

is_number() { [[ $1 =~ ^[0-9]+$ && $1 -ge $2 && $1 -le $3 ]]; }

while (($#)); do
  case $1 in
    --duration | --period | --rate | --out | --port | --base-port | --bin-dir)
      (($# >= 2)) || die "$1 needs a value"
      case $1 in
        --duration) is_number "$2" 1 604800 || die "--duration '$2' is not a number of seconds (1..604800)"; duration=$2 ;;
        --period) is_number "$2" 1 86400 || die "--period '$2' is not a number of seconds (1..86400)"; period=$2 ;;
        --rate) is_number "$2" 1 10000 || die "--rate '$2' is not a number of requests per second (1..10000)"; rate=$2 ;;
        --port) is_number "$2" 1 65535 || die "--port '$2' is not a port number"; http_port=$2 ;;
        --base-port) is_number "$2" 1 65533 || die "--base-port '$2' is not a port number"; base_port=$2 ;;
        --out) out=$2 ;;
        --bin-dir) bin_dir=$2 ;;
      esac
      shift 2
      ;;
    --no-serve) serve=0; shift ;;
    --serve-only) profile=0; shift ;;
    --skip-install) install=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

# --- Everything this script starts, and how Ctrl-C stops it -----------------------------------------

server_pids=()
load_pid=""
http_pid=""

# Stops the servers with SIGTERM (each writes its partial block and closes its file) and waits for them.
stop_servers() {
  local pid
  for pid in "${server_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local status=0 i
  for i in "${!server_pids[@]}"; do
    pid=${server_pids[$i]}
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 150)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "demo: error: ${regions[$i]} did not stop within 15 s; killing it (its last block is lost)" >&2
      kill -KILL "$pid" 2>/dev/null || true
      status=1
    fi
    local code=0
    wait "$pid" 2>/dev/null || code=$?
    if ((code != 0 && code != 143 && code != 130)); then
      echo "demo: error: ${regions[$i]} exited with status $code (log: $out/logs/${regions[$i]}.log)" >&2
      status=1
    fi
  done
  server_pids=()
  return $status
}

on_interrupt() {
  trap - INT TERM
  echo
  say "interrupted; stopping"
  local pid
  for pid in "$load_pid" "$http_pid"; do
    if [[ -n $pid ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  stop_servers || true
  if compgen -G "$out/*.pyro" >/dev/null; then
    local again="bash scripts/demo.sh --serve-only"
    [[ $out == out/demo ]] || again+=" --out $out"
    say "the profiles are in $out/ ($again shows them again)"
  fi
  exit 130
}
trap on_interrupt INT TERM

# --- 1. Dependencies and build ---------------------------------------------------------------------

if ((install)); then
  say "checking dependencies (scripts/install-deps.sh)"
  bash scripts/install-deps.sh
fi

((serve || profile)) || die "--no-serve and --serve-only together leave nothing to do"

if ((profile)) && [[ -z $bin_dir ]]; then
  bin_dir=build/demo/examples/rideshare
  say "building the example in build/demo"
  cmake -S "$root" -B build/demo -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYROSCOPE_BUILD_EXAMPLES=ON \
    -DPYROSCOPE_BUILD_TESTS=OFF -DPYROSCOPE_BUILD_TOOLS=OFF -DPYROSCOPE_BUILD_VIEWER=OFF >/dev/null
  cmake --build build/demo -j2 --target rideshare rideshare-load
fi
if ((profile)); then
  [[ -x $bin_dir/rideshare && -x $bin_dir/rideshare-load ]] || die "no rideshare and rideshare-load in $bin_dir"
  bin_dir=$(cd "$bin_dir" && pwd)
fi

# The viewer is built before the profiling starts, so the build does not compete with the profiled
# servers for the CPU.
site=""
if ((serve)); then
  site="$out/site"
  mkdir -p "$site"
  [[ -f viewer/build-wasm.sh ]] || die "the WebAssembly viewer's build script (viewer/build-wasm.sh) is missing; run with --no-serve to only record the profiles"
  # Rebuilt only when a source is newer than the last build in this folder.
  newer=""
  [[ -f $site/viewer.wasm ]] && newer=$(find viewer wasm pyroscope.hpp pyroscope*.inl -newer "$site/viewer.wasm" -print -quit 2>/dev/null || true)
  if [[ ! -f $site/viewer.wasm || -n $newer ]]; then
    say "building the WebAssembly viewer (viewer/build-wasm.sh $site)"
    sh viewer/build-wasm.sh "$site"
  else
    say "the WebAssembly viewer in $site is up to date"
  fi
  [[ -f $site/index.html ]] || die "viewer/build-wasm.sh did not produce $site/index.html"
fi

# Steps 2 to 4: the three regions under load, then stopped.
record_profiles() {
  # --- 2. The three regions ----------------------------------------------------------------------

  mkdir -p "$out/logs"
  rm -f "$out"/*.pyro
  addresses=()
  for i in "${!regions[@]}"; do
    region=${regions[$i]}
    port=$((base_port + i))
    # Loopback, given explicitly: the demo's servers are for this machine only.
    REGION=$region PORT=$port PYROSCOPE_OUTPUT="$out/rideshare-$region.pyro" MUTEX_PERIOD_SECONDS=$period \
      "$bin_dir/rideshare" --host 127.0.0.1 >"$out/logs/$region.log" 2>&1 &
    server_pids+=($!)
    addresses+=("127.0.0.1:$port")
  done
  for i in "${!regions[@]}"; do
    log="$out/logs/${regions[$i]}.log"
    for _ in $(seq 100); do
      grep -q "listening on" "$log" && break
      kill -0 "${server_pids[$i]}" 2>/dev/null || break
      sleep 0.1
    done
    if ! grep -q "listening on" "$log"; then
      cat "$log" >&2
      stop_servers || true
      die "${regions[$i]} did not start (port $((base_port + i)) taken? try --base-port)"
    fi
    say "$(grep -m 1 "listening on" "$log")"
  done

  # --- 3. The load -------------------------------------------------------------------------------

  say "load: $rate requests/s to each region for $duration s; eu-north's mutex_lock is heavy for $period s, light for $period s"
  "$bin_dir/rideshare-load" --duration "$duration" --rate "$rate" "${addresses[@]}" >"$out/logs/load.log" 2>&1 &
  load_pid=$!
  started=$SECONDS
  next_report=30
  while kill -0 "$load_pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS - started >= next_report)); then
      say "$((SECONDS - started)) of $duration s"
      next_report=$((next_report + 30))
    fi
  done
  load_status=0
  wait "$load_pid" || load_status=$?
  load_pid=""
  sed 's/^/demo: /' "$out/logs/load.log"

  # --- 4. Stop the servers: each writes its partial block ----------------------------------------

  say "stopping the servers"
  servers_status=0
  stop_servers || servers_status=$?
  ((load_status == 0)) || die "the load generator failed (status $load_status); see $out/logs/"
  ((servers_status == 0)) || die "a server did not stop cleanly; see $out/logs/"
}

if ((profile)); then
  record_profiles
fi

files=()
for region in "${regions[@]}"; do
  if [[ ! -s $out/rideshare-$region.pyro ]]; then
    ((profile)) && die "no profile from $region ($out/rideshare-$region.pyro); see $out/logs/$region.log"
    die "no $out/rideshare-$region.pyro: run the demo without --serve-only first"
  fi
  files+=("rideshare-$region.pyro")
done
say "profiles: $(cd "$out" && du -h "${files[@]}" | awk '{printf "%s (%s) ", $2, $1}')"

# --- 5. Serve the viewer with the data ---------------------------------------------------------------

if ((!serve)); then
  say "done; open the files with the viewer: ${files[*]/#/$out/}"
  exit 0
fi
cp "${files[@]/#/$out/}" "$site/"
query=""
for f in "${files[@]}"; do query+="${query:+&}file=$f"; done
url="http://localhost:$http_port/?$query"
mkdir -p "$out/logs"
command -v python3 >/dev/null || die "python3 is needed to serve $site (or serve that folder with any static file server)"
python3 -m http.server "$http_port" --bind 127.0.0.1 --directory "$site" >"$out/logs/http.log" 2>&1 &
http_pid=$!
sleep 0.5
kill -0 "$http_pid" 2>/dev/null || { cat "$out/logs/http.log" >&2; die "cannot serve on port $http_port (taken? try --port)"; }
echo
say "open $url"
say "(the folder $site is static: any web server can serve it). Ctrl-C stops the server."
wait "$http_pid"
