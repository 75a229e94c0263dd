#!/usr/bin/env python3
"""Reads a pprof file with `go tool pprof -raw` (Go's own reader): sample types with units, period,
and per type the total and the self value of every function (the function of a sample's innermost
frame: the first line of its first location). The format tests compare this with what pyroscope.hpp
imported or exported.

    pprof_raw.py show FILE.pb.gz [BINARY]                   prints it as JSON
    pprof_raw.py compare FORMAT_TOOL FILE.pyro FILE.pb.gz [BINARY]
        every type of the pprof file is in the .pyro file with the same unit, total and per-function
        self values (so the same top functions), and no other type is; exit 1 naming any difference
"""
import json
import re
import subprocess
import sys


def read_raw(path, binary=None):
    cmd = ["go", "tool", "pprof", "-raw"]
    if binary:
        cmd.append(binary)
    cmd.append(path)
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = text.split("\n")
    out = {"types": [], "period_type": "", "period": 0, "totals": {}, "self": {}}
    samples = []
    locations = {}
    addresses = {}  # location -> (address, mapping id), to name unsymbolized ones
    mappings = {}   # id -> (start, file offset, file)
    section = None
    current_location = None
    for line in lines:
        if line.startswith("PeriodType:"):
            out["period_type"] = line.split(":", 1)[1].strip()
        elif line.startswith("Period:"):
            out["period"] = int(line.split(":", 1)[1].strip())
        elif line == "Samples:":
            section = "types"
        elif line == "Locations":
            section = "locations"
        elif line == "Mappings":
            section = "mappings"
        elif section == "types":
            out["types"] = [t.split("/", 1) for t in line.split()]
            section = "samples"
        elif section == "samples":
            m = re.match(r"^\s+(-?\d+(?:\s+-?\d+)*):\s*([\d ]*)$", line)
            if m:
                values = [int(v) for v in m.group(1).split()]
                locs = [int(v) for v in m.group(2).split()]
                samples.append((values, locs))
            # label lines (`key:[value]`) and blank lines are not needed here
        elif section == "locations":
            m = re.match(r"^\s+(\d+): 0x([0-9a-f]+)(?: M=(\d+))? ?(.*)$", line)
            if m:
                current_location = int(m.group(1))
                addresses[current_location] = (int(m.group(2), 16), int(m.group(3) or 0))
                locations[current_location] = [function_of(m.group(4))]
            elif line.startswith("             ") and current_location is not None and line.strip():
                locations[current_location].append(function_of(line.strip()))
        elif section == "mappings":
            m = re.match(r"^(\d+): 0x([0-9a-f]+)/0x[0-9a-f]+/0x([0-9a-f]+) (\S*)", line)
            if m:
                mappings[int(m.group(1))] = (int(m.group(2), 16), int(m.group(3), 16), m.group(4))
    # A frame Go could not name is named as pprof names it and docs/formats.md says we do:
    # module+0xoffset (the address within the mapped file), else the bare address.
    for loc, names in locations.items():
        address, mapping = addresses[loc]
        for i, name in enumerate(names):
            if name:
                continue
            start, offset, path = mappings.get(mapping, (0, 0, ""))
            base = path.rsplit("/", 1)[-1]
            names[i] = "%s+0x%x" % (base, address - start + offset) if base and address >= start else "0x%x" % address
    for k, (type_name, _unit) in enumerate(out["types"]):
        total = 0
        self_values = {}
        for values, locs in samples:
            total += values[k]
            if values[k] == 0:
                continue
            leaf = locations[locs[0]][0] if locs else "[no frames]"
            self_values[leaf] = self_values.get(leaf, 0) + values[k]
        out["totals"][type_name] = total
        out["self"][type_name] = {name: v for name, v in self_values.items() if v != 0}
    return out


def function_of(text):
    # "main.work /path/main.go:12:0 s=21" -> "main.work"; unsymbolized: "0x4a3b2c" or "" (no function)
    text = re.sub(r" s=\d+$", "", text)
    parts = text.rsplit(" ", 1)
    if len(parts) == 2 and re.search(r":\d+(:\d+)?$", parts[1]):
        return parts[0]
    return text


def ours(tool, pyro):
    """Types, units, totals and per-function self of a .pyro file, by pyroscope.hpp's own query."""
    result = {"units": {}, "totals": {}, "self": {}}
    totals = subprocess.run([tool, "totals", pyro], check=True, capture_output=True, text=True).stdout
    for line in totals.strip().split("\n"):
        type_name, unit, total = line.split(" ")
        result["units"][type_name] = unit
        result["totals"][type_name] = int(total)
        top = subprocess.run([tool, "top", pyro, type_name, "100000000"], check=True, capture_output=True).stdout
        self_values = {}
        for row in top.decode("utf-8", "surrogateescape").split("\n"):
            if row:
                value, name = row.split("\t", 1)
                self_values[name] = int(value)
        result["self"][type_name] = self_values
    return result


def compare(tool, pyro, pprof, binary=None):
    raw = read_raw(pprof, binary)
    mine = ours(tool, pyro)
    problems = []
    # Types whose values are all zero have no series in a .pyro file.
    raw_types = {t: u for t, u in raw["types"] if raw["totals"][t] != 0}
    if set(raw_types) != set(mine["units"]):
        problems.append("types: pprof %s, pyro %s" % (sorted(raw_types), sorted(mine["units"])))
    for type_name, unit in raw_types.items():
        if type_name not in mine["units"]:
            continue
        if unit != mine["units"][type_name]:
            problems.append("%s: unit %s in pprof, %s in pyro" % (type_name, unit, mine["units"][type_name]))
        if raw["totals"][type_name] != mine["totals"][type_name]:
            problems.append("%s: total %d in pprof, %d in pyro" % (type_name, raw["totals"][type_name], mine["totals"][type_name]))
        theirs_self, my_self = raw["self"][type_name], mine["self"][type_name]
        for name in sorted(set(theirs_self) | set(my_self)):
            if theirs_self.get(name, 0) != my_self.get(name, 0):
                problems.append("%s: self of %r: %d in pprof, %d in pyro" % (type_name, name, theirs_self.get(name, 0), my_self.get(name, 0)))
    if problems:
        print("MISMATCH %s vs %s:\n  %s" % (pprof, pyro, "\n  ".join(problems[:20])))
        return False
    summary = ", ".join("%s %d %s (%d functions)" % (t, mine["totals"][t], mine["units"][t], len(mine["self"][t])) for t in sorted(mine["totals"]))
    print("ok: %s = %s: %s" % (pprof, pyro, summary))
    return True


if __name__ == "__main__":
    if sys.argv[1] == "show":
        print(json.dumps(read_raw(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None), indent=1, sort_keys=True))
    elif sys.argv[1] == "compare":
        sys.exit(0 if compare(*sys.argv[2:]) else 1)
    else:
        sys.exit("usage: pprof_raw.py show|compare ...")
