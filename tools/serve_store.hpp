// pyro serve: the data directory. Pushes land in hourly .pyro files (one writer per hour with a
// seal delay for stragglers, and a late file per hour for blocks older than that); reads see every
// .pyro file in the directory through Files kept open and reopened when they grow. Retention deletes
// whole hour files once they are older than the retention period and no writer has them open.
// docs/serve.md ("Storage") describes the layout and its rules.
//
// Thread safety: every member function may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pyroscope.hpp"

namespace pyroscope::serve {

struct StoreOptions {
  std::string dir;
  int64_t retention_seconds = 30 * 86400;  // 0: keep everything
  uint32_t seal_delay_blocks = 30;         // 5 minutes of 10 s blocks: later blocks of a span go to the late file
  bool fsync = false;                      // fsync after every block (power loss; a crash loses nothing without it)
  int64_t file_seconds = 3600;             // one file per hour
};

struct StoreCounters {
  std::atomic<uint64_t> pushes{0};        // writes that succeeded
  std::atomic<uint64_t> samples{0};       // their samples
  std::atomic<uint64_t> blocks{0};        // block parts appended
  std::atomic<uint64_t> late_blocks{0};   // of which to a late file
  std::atomic<uint64_t> refused{0};       // writes refused (units that disagree, I/O errors)
  std::atomic<uint64_t> files_deleted{0}; // by retention
  std::atomic<uint64_t> writers_closed{0}; // by maintain(): hours whose window closed, idle late files
};

class Store {
 public:
  Store();
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Creates the directory if needed and reads what every .pyro file in it says about its series (their
  // units), so a series keeps its unit across restarts. Files that do not open are named in *warnings.
  Status open(const StoreOptions& options, std::vector<std::string>* warnings);

  // Appends every block (one push). All or nothing for what can be checked first: a series whose unit
  // or aggregation disagrees with what is stored refuses the whole push (invalid_argument) before a
  // byte is written. An I/O error (io_error) may leave the blocks before it written. On success every
  // block is in the kernel (and on disk with fsync): a crash of the server after this loses nothing.
  Status write(std::vector<ProfileBlock>* blocks, int64_t now);

  // Closes writers of hours that ended more than the seal delay ago and deletes hour files older than
  // the retention period. Called once a minute by the server; now is unix seconds.
  void maintain(int64_t now);

  // A data set of the files that can hold blocks in [from, until) (every file for from >= until):
  // hour files by their name, any other .pyro in the directory always. Files are shared with the
  // cache (File handles), opened again when their size changed, so a query sees every push answered before it.
  Status dataset(int64_t from, int64_t until, Dataset* out, std::vector<std::string>* warnings = nullptr);

  // Runs read on dataset(from, until) and returns what it returns, except in one case: a query reads
  // a file's index chunks when it first needs them, and a late writer reopening an indexed file cuts
  // that index, so a data set taken before the cut fails with corrupt_file ("the file changed since
  // it was opened"). Nothing is damaged: the files whose size changed are opened again and read runs
  // again, at most three times in all.
  Status read(int64_t from, int64_t until, const std::function<Status(const Dataset&)>& read,
              std::vector<std::string>* warnings = nullptr);

  const StoreCounters& counters() const { return counters_; }
  const StoreOptions& options() const { return options_; }
  size_t open_writers() const;
  // "2026-11-22T10.pyro" for the hour starting at t; with late, "2026-11-22T10.late.pyro".
  static std::string hour_file_name(int64_t hour_start, bool late);
  // The hour a file name stands for; false for names that are not hour files.
  static bool parse_hour_file_name(const std::string& name, int64_t* hour_start, bool* late);

 private:
  struct OpenWriter;
  // Appends one block through the writer's group commit: concurrent pushes into one block become
  // one part (one record) instead of one each, so a block gets a part per commit, not per push.
  static Status append_grouped(OpenWriter& w, ProfileBlock* block);
  // writer_for() + append_grouped(), the writer marked in use all along (maintain() leaves it open).
  // *path: the file written (empty when no writer could be opened).
  Status append_to_hour(int64_t hour, bool late, int64_t now, ProfileBlock* block, std::string* path);
  // The hour's writer, opened if needed, with its user count raised (the caller lowers it when done).
  std::shared_ptr<OpenWriter> writer_for(int64_t hour, bool late, int64_t now, Status* error);
  bool live_window_open(int64_t hour, int64_t now) const;

  StoreOptions options_;
  StoreCounters counters_;
  mutable std::mutex writers_mutex_;
  std::map<std::pair<int64_t, bool>, std::shared_ptr<OpenWriter>> writers_;
  std::mutex infos_mutex_;
  std::map<std::string, SeriesInfo> infos_;  // SeriesKey::to_string() -> what it is stored in
  struct CachedFile;
  // dataset(), with each file's path in the order of out's files.
  Status dataset_with_paths(int64_t from, int64_t until, Dataset* out, std::vector<std::string>* warnings,
                            std::vector<std::string>* paths);
  std::mutex cache_mutex_;
  std::map<std::string, std::shared_ptr<CachedFile>> cache_;
};

// The selection [from, until) of data as a small .pyro for the served viewer: the level-0 blocks when
// the range holds at most max_blocks of them, else every matching series re-cut into at most
// max_blocks blocks of a coarser resolution (a multiple of the data's; each block the merged tree of
// its span, averaged for average series). *resolution is the resolution written.
Status range_slice(const Dataset& data, const Selector& selector, int64_t from, int64_t until, size_t max_blocks,
                   std::string* pyro, int64_t* resolution, SliceStats* stats);

}  // namespace pyroscope::serve
