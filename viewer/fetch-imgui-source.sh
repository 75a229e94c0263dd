#!/bin/sh
# Fetches Dear ImGui's sources from Debian's source package (the same 1.86 as libimgui-dev) into a
# git-ignored folder, for the WebAssembly build, which cannot link Debian's native libimgui.a.
# usage: viewer/fetch-imgui-source.sh [DEST]   (default: build/third_party, relative to the repo)
# Prints the path of the unpacked source tree (the folder holding imgui.cpp) on its last line.
# Needs: dpkg-dev (apt-get source), network access to deb.debian.org, root for the deb-src entry.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-"$repo/build/third_party"}
mkdir -p "$dest"

find_tree() { find "$dest" -maxdepth 2 -name imgui.cpp -path '*imgui-1.86*' 2>/dev/null | head -n 1; }

existing=$(find_tree)
if [ -n "$existing" ]; then
  dirname "$existing"
  exit 0
fi

# apt-get source needs a deb-src entry. This machine lists its archives in deb822 form
# (/etc/apt/sources.list.d/debian.sources); add the matching source archive once.
if ! grep -rqs '^\(deb-src\|Types:.*deb-src\)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if [ "$(id -u)" != 0 ]; then
    echo "fetch-imgui-source: no deb-src entry in /etc/apt and not root; add one for bookworm main" >&2
    exit 1
  fi
  cat > /etc/apt/sources.list.d/pyroscope-debsrc.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi

cd "$dest"
# --download-only + dpkg-source -x avoids needing the build dependencies; the version matches the
# native library so both builds draw the same widgets.
apt-get source -qq --download-only imgui=1.86+ds-1 >/dev/null 2>&1 || apt-get source -qq --download-only imgui >/dev/null
dsc=$(ls imgui_*.dsc | head -n 1)
dpkg-source --no-check -x "$dsc" >/dev/null
tree=$(find_tree)
if [ -z "$tree" ]; then
  echo "fetch-imgui-source: unpacked $dsc but found no imgui-1.86*/imgui.cpp under $dest" >&2
  exit 1
fi
dirname "$tree"
