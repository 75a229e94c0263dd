// The viewer's one copy of the pyroscope.hpp implementation (under Emscripten the header leaves the
// sampler out by itself; the viewer only reads, queries and imports).
#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"
