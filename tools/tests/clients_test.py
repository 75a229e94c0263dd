#!/usr/bin/env python3
"""Real Pyroscope clients, none written here, push to `pyro serve` on 127.0.0.1 (Python's standard
library drives it; the clients come from their registries through scripts/install-deps.sh):

    clients_test.py PYRO WORK_DIR SECONDS --python PY --node NODE --node-root DIR --go GO --go-dir DIR --hpp-client EXE

  pyclient     pyroscope-io (PyPI), run by the interpreter PY that has it
  nodeclient   @pyroscope/nodejs (npm, installed under DIR/node_modules from package-lock.json)
  goclient     github.com/grafana/pyroscope-go (Go module; DIR holds go.mod and go.sum)
  cppclient    pyroscope.hpp's own push (Config::server_address)

Each profiles a workload whose time goes to one known function under the tag vehicle=car, with the
static tag region=eu-north, for SECONDS (all four at once). Then the test asks the server's JSON API
for each app, its tags and profile types, and the hot function on top of the self-time table.
Each check prints "ok - ..." or "FAIL - ..."; the run ends with "N passed, N failed".
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("pyro")
p.add_argument("work")
p.add_argument("seconds", type=int)
p.add_argument("--python", required=True)
p.add_argument("--node", default="node")
p.add_argument("--node-root", required=True)
p.add_argument("--go", default="go")
p.add_argument("--go-dir", required=True)
p.add_argument("--hpp-client", required=True)
args = p.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
passed = failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print("ok - " + name, flush=True)
    else:
        failed += 1
        print("FAIL - " + name + ("" if not detail else ": " + str(detail)[:600]), flush=True)
    return condition


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# app -> (profile types it must have, type to look for the hot function in, the hot function)
EXPECTED = {
    "pyclient": (["cpu"], "cpu", "hot_python_function"),
    "nodeclient": (["wall", "inuse_space"], "wall", "hotNodeFunction"),
    "goclient": (["cpu", "alloc_space", "inuse_space"], "cpu", "hotGoFunction"),
    "cppclient": (["cpu"], "cpu", "hot_cpp_function"),
}


def main():
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    data = os.path.join(args.work, "data")
    port = free_port()
    address = "http://127.0.0.1:%d" % port
    serve_log = open(os.path.join(args.work, "serve.log"), "wb")
    server = subprocess.Popen([args.pyro, "serve", "--data", data, "--bind", "127.0.0.1:%d" % port],
                              stdout=serve_log, stderr=serve_log)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                check("pyro serve starts", False, open(serve_log.name).read()[-2000:])
                return
            time.sleep(0.05)
    try:
        run_clients(address)
        query_server(port)
    finally:
        server.terminate()
        server.wait(15)
    check("pyro serve stops cleanly after the clients", server.returncode == 0, server.returncode)


def run_clients(address):
    seconds = str(args.seconds)
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=readonly")
    go_exe = os.path.join(args.work, "goclient")
    build = subprocess.run([args.go, "build", "-o", go_exe, "."], cwd=args.go_dir, env=env, capture_output=True, text=True)
    if not check("the Go client builds (github.com/grafana/pyroscope-go from the module cache)", build.returncode == 0,
                 build.stderr + " (scripts/install-deps.sh fetches the module)"):
        go_exe = None
    clients = {
        "pyclient": [args.python, os.path.join(here, "clients", "py_client.py"), address, seconds],
        "nodeclient": [args.node, os.path.join(here, "clients", "node_client.js"), address, seconds],
        "goclient": [go_exe, address, seconds] if go_exe else None,
        "cppclient": [args.hpp_client, address, seconds, os.path.join(args.work, "cppclient.pyro")],
    }
    node_env = dict(os.environ, NODE_PATH=os.path.join(args.node_root, "node_modules"))
    procs = {}
    for name, cmd in clients.items():
        if cmd is None:
            continue
        log = open(os.path.join(args.work, name + ".log"), "wb")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=log, env=node_env if name == "nodeclient" else os.environ), log)
    for name, (proc, log) in procs.items():
        try:
            proc.wait(args.seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        check("%s ran for %d s and exited 0" % (name, args.seconds), proc.returncode == 0,
              "exit %s: %s" % (proc.returncode, open(log.name, errors="replace").read()[-1500:]))


def get(port, path, **params):
    url = "http://127.0.0.1:%d%s?%s" % (port, path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


# Go's asynchronous preemption injects a call to runtime.asyncPreempt where a goroutine was stopped; on
# a loaded machine a busy loop is preempted often and the CPU samples taken there land in that frame
# (51 % of the hot function's time once, in the issue-18 campaign). They are the caller's time.
CHARGED_TO_CALLER = {"runtime.asyncPreempt"}


def self_table(flamebearer):
    """Self time per name from flamebearer levels ([x delta, total, self, name] per node), the self
    time of CHARGED_TO_CALLER frames given to their parent."""
    selfs = {}
    names = flamebearer["names"]
    previous = []  # the level above: (start, end, name) of each node
    for level in flamebearer["levels"]:
        current, x = [], 0
        for i in range(0, len(level), 4):
            start = x + level[i]
            x = start + level[i + 1]
            name = names[level[i + 3]]
            current.append((start, x, name))
            owner = name
            if name in CHARGED_TO_CALLER:
                owner = next((n for (s, e, n) in previous if s <= start < e), name)
            selfs[owner] = selfs.get(owner, 0) + level[i + 2]
        previous = current
    return sorted(selfs.items(), key=lambda kv: -kv[1])


def query_server(port):
    apps = {a["name"]: a for a in get(port, "/api/apps")["apps"]}
    for app, (types, hot_type, hot) in EXPECTED.items():
        if not check("%s: the app is listed by /api/apps" % app, app in apps, sorted(apps)):
            continue
        check("%s: profile types include %s" % (app, ", ".join(types)), all(t in apps[app]["types"] for t in types),
              apps[app]["types"])
        tags = get(port, "/api/tags", app=app)["tags"]
        check("%s: tags region=eu-north (static) and vehicle=car (dynamic)" % app,
              tags.get("region") == ["eu-north"] and tags.get("vehicle") == ["car"], tags)
        result = get(port, "/api/query", query='%s.%s{vehicle="car"}' % (app, hot_type), **{"from": "now-1h", "until": "now"})
        fb = result["flamebearer"]
        table = self_table(fb)
        top = table[0][0] if table else ""
        check("%s: %s on top of %s self time for vehicle=car (%.0f %% of %d %s)" % (
                  app, hot, hot_type, 100.0 * (table[0][1] if table else 0) / max(fb["numTicks"], 1), fb["numTicks"],
                  result["metadata"]["units"]),
              hot in top and fb["numTicks"] > 0, table[:5])


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash of the test is a failure, not a silent stop
        import traceback
        traceback.print_exc()
        check("the test ran to its end", False, repr(e))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
