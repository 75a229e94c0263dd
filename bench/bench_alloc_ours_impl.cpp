// bench_alloc_ours's implementation file: the profiler with PYROSCOPE_ALLOCATION_PROFILING in a
// translation unit of its own, as a program has it (docs/memory.md). The workloads of bench_alloc.cpp
// so compile to the same code in bench_alloc and bench_alloc_ours: with the implementation in their
// file, GCC inlined the map workload differently, and callgrind counted ~0.2 % more instructions in
// it that were not the profiler's.
#define PYROSCOPE_IMPLEMENTATION
#define PYROSCOPE_ALLOCATION_PROFILING
#include "pyroscope.hpp"
