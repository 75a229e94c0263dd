// [SECTION] Status codes ==========================================================================

// One table: the enum, its names and its descriptions all come from here.
#define PYROSCOPE_STATUS_CODES(X)                                          \
  X(ok, "ok")                                                             \
  X(invalid_argument, "invalid argument")                                 \
  X(parse_error, "parse error")                                           \
  X(io_error, "I/O error")                                                \
  X(corrupt_file, "corrupt file")                                         \
  X(unsupported_version, "unsupported file format version")               \
  X(not_found, "not found")                                               \
  X(out_of_order, "block is not after the series' last block")            \
  X(unsupported, "not supported on this platform")                        \
  X(already_running, "profiler already running")                          \
  X(not_running, "profiler not running")                                  \
  X(too_large, "input exceeds a size limit")                              \
  X(feature_disabled, "feature not compiled into this build")

enum class StatusCode : int {
#define PYROSCOPE_X(name, text) name,
  PYROSCOPE_STATUS_CODES(PYROSCOPE_X)
#undef PYROSCOPE_X
};

// Returns a static string such as "corrupt file". Thread safety: any thread.
const char* status_string(StatusCode code);

// Result of every fallible operation. Errors carry a message that names the problem
// (file, offset, line number), e.g. "line 17: count 'x12' is not an integer".
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  bool ok() const { return code_ == StatusCode::ok; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;  // "corrupt file: record at offset 4096: checksum mismatch"

 private:
  StatusCode code_ = StatusCode::ok;
  std::string message_;
};

