/* pyroscope.hpp — continuous CPU profiling for C++ programs, in one header.
   (Generated from the parts in src/ by scripts/assemble.py: edit those, then run the script.)

   Samples every thread of the process ~100 times per second of CPU time, folds the stacks into trees
   per 10 s block and per tag set, and appends them to a crash-safe, memory-mappable segment-tree file
   (.pyro) that the viewer (viewer/, native and WebAssembly) and the query API read back.

   USAGE
     Do this in *one* C++ file (or add pyroscope.cpp to your build):
         #define PYROSCOPE_IMPLEMENTATION
         #include "pyroscope.hpp"
     Every other file just includes "pyroscope.hpp".

   QUICK START
         #include "pyroscope.hpp"
         int main() {
           pyroscope::Config config;
           config.application_name = "ride-sharing-app";
           config.tags = {{"region", "eu-north"}};
           pyroscope::Profiler profiler(config);           // writes ride-sharing-app.pyro
           if (!profiler.status().ok()) std::fprintf(stderr, "%s\n", profiler.status().to_string().c_str());
           { pyroscope::tag_scope vehicle{"vehicle", "car"}; order_car(3); }
           pyroscope::tag_wrapper({{"vehicle", "bike"}}, [] { order_bike(1); });
         }                                                 // stops and flushes the partial block

     Reading a file back:
         pyroscope::Dataset data;
         data.add_file("ride-sharing-app.pyro");
         pyroscope::QueryResult r;
         data.query("ride-sharing-app{vehicle=\"car\"}", from, until, &r);
         std::string folded = r.tree.to_folded();

     Another tool's profile (pprof, folded, perf script, speedscope, .cpuprofile; docs/formats.md):
         pyroscope::ImportOptions options;
         options.app = "checkout";
         std::vector<pyroscope::ProfileBlock> blocks;
         pyroscope::import_profile(bytes, options, &blocks);  // then data.add_blocks(blocks)

   SECTIONS (each marked in the code by a "// [SECTION] name" banner)
     [SECTION] Configuration and platform detection
     [SECTION] Status codes
     [SECTION] Core types: labels, series keys, byte spans
     [SECTION] Symbol table (a trie on disk)
     [SECTION] Folded-stack tree
     [SECTION] Diff tree
     [SECTION] Tree analysis: sandwich, recursion, short names, name search
     [SECTION] File format: writer
     [SECTION] File format: reader, dataset and query
     [SECTION] Formats: import and export
     [SECTION] Tag scopes
     [SECTION] Profiler API
     [SECTION] Implementation: helpers (varint, crc32, regex)
     [SECTION] Implementation: symbol table
     [SECTION] Implementation: tree and folded text
     [SECTION] Implementation: diff tree
     [SECTION] Implementation: tree analysis
     [SECTION] Implementation: selectors
     [SECTION] Implementation: file reader and query
     [SECTION] Implementation: file writer
     [SECTION] Implementation: tag scopes
     [SECTION] Implementation: formats (pprof, folded, perf script, speedscope, .cpuprofile)
     [SECTION] Implementation: sampler backend (Linux)
     [SECTION] Implementation: allocation sampler (Linux)
     [SECTION] Implementation: symbolizer (Linux)
     [SECTION] Implementation: push to a Pyroscope server (Linux)
     [SECTION] Implementation: profiler API (Linux)
     [SECTION] Implementation: profiler API without a sampler
     [SECTION] License

   CONFIGURATION SWITCHES (define before including)
     PYROSCOPE_IMPLEMENTATION   compile the implementation into this translation unit (exactly one)
     PYROSCOPE_NO_SAMPLER       leave the sampler out (read/write/query only); automatic under Emscripten
     PYROSCOPE_ASSERT(c)        replace the assert used for programmer errors (default: assert)
     PYROSCOPE_WITH_ZLIB        gzip for pprof import/export through zlib (<zlib.h>, link -lz)
     PYROSCOPE_WITH_JSON        speedscope and .cpuprofile import (nlohmann/json, <nlohmann/json.hpp>)
     PYROSCOPE_ALLOCATION_PROFILING  with PYROSCOPE_IMPLEMENTATION: interpose malloc, free, operator new,
                                ... in this program and sample allocations (docs/memory.md); ignored
                                under ASan/TSan/MSan (allocation_profiling_compiled() says why)

   THREAD SAFETY (each declaration says more)
     Tree, SymbolTable, Writer, File, Dataset: one thread at a time per object; distinct objects are
     independent. const member functions of File and Dataset may run concurrently.
     tag_scope / tag_wrapper: any thread, lock-free after a tag set's first use.
     start / stop / is_running: any thread (the log callback too, except stop); see each declaration.
*/
#ifndef PYROSCOPE_HPP_INCLUDED
#define PYROSCOPE_HPP_INCLUDED

