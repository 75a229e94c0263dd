// The viewer's one copy of the pyroscope.hpp implementation (under Emscripten the header leaves the
// sampler out by itself; the viewer only reads, queries and imports). Natively gzip comes from zlib;
// the browser build has no zlib (Emscripten's port is a download) and gets stb's through
// Session::set_codecs (main_wasm.cpp). JSON formats through nlohmann/json, header-only, both builds.
#ifndef __EMSCRIPTEN__
#define PYROSCOPE_WITH_ZLIB 1
#endif
#define PYROSCOPE_WITH_JSON 1
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"
