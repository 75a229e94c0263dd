// [SECTION] Implementation: profiler API without a sampler ========================================
// Tag scopes still work as bookkeeping (code that uses them compiles and runs unchanged); there is
// nothing to sample with.

namespace pyroscope {

Status start(const Config&) {
  return Status(StatusCode::unsupported,
                "the sampler is not available in this build (PYROSCOPE_NO_SAMPLER, or not Linux); "
                "files can still be written with pyroscope::Writer and read back");
}

Status stop() { return Status(StatusCode::not_running, "stop() without a running profiler (no sampler in this build)"); }

bool is_running() { return false; }

bool allocation_profiling_compiled(std::string* why) {
  if (why != nullptr) *why = "the sampler is not available in this build (PYROSCOPE_NO_SAMPLER, or not Linux)";
  return false;
}

}  // namespace pyroscope

#endif  // sampler

#endif  // PYROSCOPE_IMPLEMENTATION

/*
