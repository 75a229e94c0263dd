// =================================================================================================
// IMPLEMENTATION
// =================================================================================================
#if defined(PYROSCOPE_IMPLEMENTATION) && !defined(PYROSCOPE_IMPLEMENTATION_INCLUDED)
#define PYROSCOPE_IMPLEMENTATION_INCLUDED

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

// Every supported platform is POSIX (Emscripten emulates it over its in-memory file system).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(PYROSCOPE_PLATFORM_LINUX)
#include <sys/file.h>
#include <sys/mman.h>
#endif

namespace pyroscope {

