// [SECTION] Configuration and platform detection ==================================================

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__EMSCRIPTEN__)
#define PYROSCOPE_PLATFORM_EMSCRIPTEN 1
#ifndef PYROSCOPE_NO_SAMPLER
#define PYROSCOPE_NO_SAMPLER 1
#endif
#elif defined(__linux__)
#define PYROSCOPE_PLATFORM_LINUX 1
#elif defined(__APPLE__) || defined(__unix__)
// Other POSIX systems: reading, writing and querying files (POSIX file calls); the sampler is
// Linux-only for now.
#define PYROSCOPE_PLATFORM_OTHER 1
#ifndef PYROSCOPE_NO_SAMPLER
#define PYROSCOPE_NO_SAMPLER 1
#endif
#else
// Windows has no open/ftruncate/flock as the writer uses them: not supported yet, rather than half-built.
#error "pyroscope.hpp: supported platforms are Linux, other POSIX systems (files only) and Emscripten"
#endif

#if !defined(__GNUC__)
// GCC and Clang (which defines __GNUC__ too): the implementation uses __builtin_*_overflow.
#error "pyroscope.hpp: needs GCC or Clang"
#endif

#ifndef PYROSCOPE_ASSERT
#include <cassert>
#define PYROSCOPE_ASSERT(c) assert(c)
#endif

#define PYROSCOPE_VERSION_MAJOR 0
#define PYROSCOPE_VERSION_MINOR 1
#define PYROSCOPE_VERSION_PATCH 0
#define PYROSCOPE_VERSION_STRING "0.1.0"

namespace pyroscope {

