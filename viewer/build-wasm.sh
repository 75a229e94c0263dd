#!/bin/sh
# Builds the WebAssembly viewer into a static folder: index.html, viewer-page.js, viewer.js,
# viewer.wasm and viewer.data (the UI font). Any static file server can serve it.
# usage: viewer/build-wasm.sh [OUTDIR]        (default: build/wasm in the repository)
# Needs Debian's emscripten (3.1.6) and ImGui's sources, which viewer/fetch-imgui-source.sh fetches
# from Debian's source package into build/third_party (needs dpkg-dev and a deb-src entry).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$repo/build/wasm"}
mkdir -p "$out"
out=$(cd "$out" && pwd)
obj="$repo/build/wasm-obj"
mkdir -p "$obj"

imgui=$("$repo/viewer/fetch-imgui-source.sh" | tail -n 1)
# Debian's emcc runs its JS tools with the system node, which finds acorn only through NODE_PATH.
export NODE_PATH="${NODE_PATH:-/usr/share/nodejs}"
EMXX=${EMXX:-em++}
# PROFILING=1 keeps function names in viewer.wasm, for the browser's profiler.
link_extra=""
[ "${PROFILING:-0}" = 1 ] && link_extra="--profiling-funcs"
jobs=${JOBS:-2}

# Debian's header-only libraries (stb for gzip, nlohmann/json for speedscope and .cpuprofile) through a
# folder that holds only them: /usr/include itself would put the system's C headers before Emscripten's.
third="$obj/include"
mkdir -p "$third"
ln -sfn /usr/include/stb "$third/stb"
ln -sfn /usr/include/nlohmann "$third/nlohmann"
common="-O2 -std=c++17 -fno-exceptions -fno-rtti -DIMGUI_IMPL_OPENGL_ES3 -I$imgui -I$repo -I$repo/session -I$repo/viewer -I$third"

# ImGui itself changes only with the source package: compile it once and keep the objects.
compile() {  # source object [extra flags]
  if [ ! -f "$2" ] || [ "$1" -nt "$2" ] || [ "$repo/viewer/wasm_gl_cache.h" -nt "$2" ]; then
    echo "em++ $(basename "$1")"
    $EMXX $common $EXTRA_FLAGS ${3:-} -c "$1" -o "$2"
  fi
}
# ImGui's GL backend and our main answer GL state queries from a shadow copy (wasm_gl_cache.h).
gl_cache="-include $repo/viewer/wasm_gl_cache.h"
EXTRA_FLAGS=""
running=0
for src in imgui.cpp imgui_draw.cpp imgui_tables.cpp imgui_widgets.cpp backends/imgui_impl_glfw.cpp \
           backends/imgui_impl_opengl3.cpp; do
  flags=""
  [ "$src" = backends/imgui_impl_opengl3.cpp ] && flags="$gl_cache"
  compile "$imgui/$src" "$obj/imgui-$(basename "$src" .cpp).o" "$flags" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait; running=0; fi
done
wait

# The viewer (and the header's implementation) every time: they are what changes.
EXTRA_FLAGS="-Wall -Wextra"
for src in ../session/session.cpp viewer.cpp flame_graph.cpp pyroscope_impl.cpp main_wasm.cpp wasm_gl_cache.cpp \
           stb_codecs.cpp; do
  o="$obj/viewer-$(basename "$src" .cpp).o"
  rm -f "$o"
  flags=""
  [ "$src" = main_wasm.cpp ] && flags="$gl_cache"
  compile "$repo/viewer/$src" "$o" "$flags" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait; running=0; fi
done
wait
for src in ../session/session.cpp viewer.cpp flame_graph.cpp pyroscope_impl.cpp main_wasm.cpp wasm_gl_cache.cpp \
           stb_codecs.cpp; do
  [ -f "$obj/viewer-$(basename "$src" .cpp).o" ] || { echo "build-wasm: compiling $src failed" >&2; exit 1; }
done

font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
preload=""
if [ -f "$font" ]; then
  preload="--preload-file $font@/fonts/DejaVuSans.ttf"
else
  echo "build-wasm: $font not found (fonts-dejavu-core); the viewer uses ImGui's built-in font" >&2
fi

# Emscripten enables every WebGL extension when a context is made, one synchronous call to the GPU
# process each (~1 ms apiece here, on the way to the first frame); ImGui's OpenGL ES 3 renderer needs none.
gl_flags="-sGL_SUPPORT_AUTOMATIC_ENABLE_EXTENSIONS=0"

echo "em++ -o $out/viewer.js"
# shellcheck disable=SC2086
$EMXX -O2 -o "$out/viewer.js" "$obj"/imgui-*.o "$obj"/viewer-*.o \
  -sUSE_GLFW=3 -sMIN_WEBGL_VERSION=2 -sMAX_WEBGL_VERSION=2 $gl_flags \
  -sALLOW_MEMORY_GROWTH=1 -sINITIAL_MEMORY=33554432 -sMAXIMUM_MEMORY=2147483648 \
  -sENVIRONMENT=web -sEXIT_RUNTIME=0 \
  -sEXPORTED_FUNCTIONS=_main,_malloc,_free,_realloc \
  -sEXPORTED_RUNTIME_METHODS=UTF8ToString,stringToUTF8,lengthBytesUTF8 \
  $preload $link_extra

# The same viewer as one JavaScript file with the WebAssembly and the font inside (base64): what
# `pyro export-html` inlines into a share file that opens from file:// with no server.
embed=""
[ -f "$font" ] && embed="--embed-file $font@/fonts/DejaVuSans.ttf"
echo "em++ -o $out/viewer-single.js (-sSINGLE_FILE)"
# shellcheck disable=SC2086
$EMXX -O2 -o "$out/viewer-single.js" "$obj"/imgui-*.o "$obj"/viewer-*.o \
  -sUSE_GLFW=3 -sMIN_WEBGL_VERSION=2 -sMAX_WEBGL_VERSION=2 $gl_flags \
  -sALLOW_MEMORY_GROWTH=1 -sINITIAL_MEMORY=33554432 -sMAXIMUM_MEMORY=2147483648 \
  -sENVIRONMENT=web -sEXIT_RUNTIME=0 -sSINGLE_FILE=1 \
  -sEXPORTED_FUNCTIONS=_main,_malloc,_free,_realloc \
  -sEXPORTED_RUNTIME_METHODS=UTF8ToString,stringToUTF8,lengthBytesUTF8 \
  $embed

cp "$repo/wasm/index.html" "$repo/wasm/viewer-page.js" "$out/"
echo "build-wasm: $out"
ls -l "$out" | awk 'NR > 1 { total += $5; print "  " $9 " " $5 } END { print "  total " total " bytes" }'
