// gzip for the browser build, which has no zlib (Emscripten's port is a download): stb's zlib from
// Debian's libstb-dev, nothing vendored. The native viewer has zlib compiled into the header instead.
#pragma once

#include "pyroscope.hpp"

namespace pyroscope::viewer {

// Raw DEFLATE in and out, as ImportOptions::inflate / ExportOptions::deflate take them.
InflateFunction stb_inflate();
DeflateFunction stb_deflate();

}  // namespace pyroscope::viewer
