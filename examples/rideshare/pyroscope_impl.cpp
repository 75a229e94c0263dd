// The rideshare server's copy of the pyroscope.hpp implementation, with allocation profiling: the
// switch must be defined where the implementation is compiled, since the interposed malloc, free,
// operator new and delete live there (docs/memory.md). The server then records app.alloc_space,
// alloc_objects, inuse_space and inuse_objects beside app.cpu; under AddressSanitizer or
// ThreadSanitizer the header leaves the interposers out by itself (their runtimes own malloc).
#define PYROSCOPE_IMPLEMENTATION
#define PYROSCOPE_ALLOCATION_PROFILING
#include "pyroscope.hpp"
