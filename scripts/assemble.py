#!/usr/bin/env python3
"""pyroscope.hpp is generated from the parts in src/ (one per [SECTION] of the table of contents).

Edit the parts, then run `python3 scripts/assemble.py` to write pyroscope.hpp; CTest's header_assembled
runs `--check`, which fails when the committed header is not what the parts give. The header stays
committed at the top level, so users still drop in one file (doctest's scripts/assemble.py and
nlohmann/json's amalgamation work the same way).

    python3 scripts/assemble.py            write pyroscope.hpp from src/*.hpp (in name order)
    python3 scripts/assemble.py --check    exit 1 if pyroscope.hpp differs from what src/ gives
    python3 scripts/assemble.py --split    (once) cut pyroscope.hpp into src/ at its section banners
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "pyroscope.hpp")
PARTS = os.path.join(ROOT, "src")
BANNER = re.compile(r"^// \[SECTION\] (.+?) =+$")


def part_files():
    if not os.path.isdir(PARTS):
        sys.exit(f"assemble.py: no parts folder {PARTS}")
    names = sorted(n for n in os.listdir(PARTS) if n.endswith(".hpp"))
    if not names:
        sys.exit(f"assemble.py: no .hpp parts in {PARTS}")
    return [os.path.join(PARTS, n) for n in names]


def assembled():
    text = []
    for path in part_files():
        with open(path, encoding="utf-8") as f:
            part = f.read()
        if part and not part.endswith("\n"):
            sys.exit(f"assemble.py: {os.path.relpath(path, ROOT)} does not end with a newline")
        text.append(part)
    return "".join(text)


def slug(title):
    """'Implementation: formats (pprof, ...)' -> 'impl-formats'; 'File format: writer' -> 'file-format-writer'."""
    prefix = ""
    if title.startswith("Implementation: "):
        prefix, title = "impl-", title[len("Implementation: "):]
    title = re.split(r"[(,]", title)[0]
    return prefix + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def split():
    with open(HEADER, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    cuts = [(0, "preamble")]
    for i, line in enumerate(lines):
        m = BANNER.match(line.rstrip("\n"))
        if m:
            cuts.append((i, slug(m.group(1))))
        elif line.rstrip("\n") == "// IMPLEMENTATION" and i > 0 and lines[i - 1].startswith("// ====="):
            cuts.append((i - 1, "implementation-begin"))
    os.makedirs(PARTS, exist_ok=True)
    for old in os.listdir(PARTS):
        if old.endswith(".hpp"):
            os.remove(os.path.join(PARTS, old))
    for k, (start, name) in enumerate(cuts):
        end = cuts[k + 1][0] if k + 1 < len(cuts) else len(lines)
        with open(os.path.join(PARTS, f"{k:02d}-{name}.hpp"), "w", encoding="utf-8") as f:
            f.writelines(lines[start:end])
    print(f"assemble.py: {len(cuts)} parts in src/")


def main(argv):
    if argv == ["--split"]:
        split()
    elif argv == ["--check"]:
        with open(HEADER, encoding="utf-8") as f:
            current = f.read()
        if current != assembled():
            sys.exit("assemble.py: pyroscope.hpp is not what src/ gives: edit the parts in src/, then run "
                     "python3 scripts/assemble.py (do not edit pyroscope.hpp by hand)")
        print("assemble.py: pyroscope.hpp matches src/")
    elif argv == []:
        text = assembled()
        with open(HEADER, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"assemble.py: wrote pyroscope.hpp ({text.count(chr(10))} lines) from {len(part_files())} parts")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
