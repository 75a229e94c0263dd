#!/usr/bin/env bash
# The load generator against a real rideshare process: requests to all three endpoints succeed, the
# server stops cleanly on SIGTERM and leaves its profile, and bad arguments are refused with exit 2.
# Usage: test_load.sh RIDESHARE_BINARY RIDESHARE_LOAD_BINARY
set -uo pipefail
server_bin=$1
load_bin=$2
work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_exit CODE COMMAND...: runs the command, checks its exit code.
expect_exit() {
  local want=$1
  shift
  "$@" >"$work/out" 2>&1
  local got=$?
  [[ $got == "$want" ]] || { fail "'$*' exited $got, expected $want"; cat "$work/out"; }
}

expect_exit 2 "$load_bin"
expect_exit 2 "$load_bin" localhost:notaport
expect_exit 2 "$load_bin" --rate -3 127.0.0.1:5000
expect_exit 2 "$load_bin" --frobnicate 127.0.0.1:5000
expect_exit 2 "$server_bin" --port 99999
expect_exit 2 env MUTEX_PERIOD_SECONDS=soon "$server_bin"
grep -q "MUTEX_PERIOD_SECONDS 'soon'" "$work/out" || fail "the bad MUTEX_PERIOD_SECONDS is not named: $(cat "$work/out")"

# A server on a free port (ports taken by someone else: try another). HOST is set as some shells and
# containers export it: the server must ignore it and listen on loopback.
port=""
for attempt in 1 2 3 4 5; do
  candidate=$((20000 + RANDOM % 30000))
  HOST=0.0.0.0 REGION=eu-north PORT=$candidate PYROSCOPE_OUTPUT="$work/eu-north.pyro" MUTEX_PERIOD_SECONDS=20 WORK_UNIT_US=200 \
    "$server_bin" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do
    grep -q "listening on" "$work/server.log" && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q "listening on" "$work/server.log"; then
    port=$candidate
    break
  fi
  wait "$server_pid" 2>/dev/null
  server_pid=""
done
[[ -n $port ]] || { fail "the server did not start: $(cat "$work/server.log")"; exit 1; }
grep -q "listening on http://127.0.0.1:$port," "$work/server.log" ||
  fail "the server does not listen on loopback with HOST=0.0.0.0 in its environment: $(cat "$work/server.log")"
if command -v ss >/dev/null; then
  listeners=$(ss -Hltn "sport = :$port" | awk '{print $4}')
  [[ $listeners == "127.0.0.1:$port" ]] || fail "sockets listening on port $port: '$listeners', expected 127.0.0.1:$port only"
fi

"$load_bin" --duration 3 --rate 30 "127.0.0.1:$port" >"$work/load.log" 2>&1
code=$?
cat "$work/load.log"
[[ $code == 0 ]] || fail "rideshare-load exited $code"
grep -q "eu-north (127.0.0.1:$port)" "$work/load.log" || fail "the load generator did not learn the region"
for endpoint in bike car scooter; do
  count=$(grep -o "/$endpoint [0-9]* ok" "$work/load.log" | grep -o "[0-9]*")
  [[ -n $count && $count -ge 5 ]] || fail "/$endpoint answered ${count:-no} requests in 3 s at 10/s"
done

# A server that is not there: the load generator gives up after --wait and says so.
"$load_bin" --duration 30 --wait 1 "127.0.0.1:1" >"$work/none.log" 2>&1
code=$?
[[ $code == 1 ]] || fail "rideshare-load against no server exited $code, expected 1"
grep -q "error: GET / failed" "$work/none.log" || fail "no error for the missing server: $(cat "$work/none.log")"

kill -TERM "$server_pid"
for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then
  fail "the server did not stop within 10 s of SIGTERM"
else
  wait "$server_pid"
  code=$?
  server_pid=""
  [[ $code == 0 ]] || fail "the server exited $code after SIGTERM: $(cat "$work/server.log")"
  grep -q "stopped; profile in" "$work/server.log" || fail "no stop message: $(cat "$work/server.log")"
  [[ -s $work/eu-north.pyro ]] || fail "no profile written to $work/eu-north.pyro"
fi

echo "test_load.sh: $failures failure(s)"
[[ $failures == 0 ]]
