// pyro serve: the data directory (serve_store.hpp).
#include "serve_store.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace pyroscope::serve {

namespace {

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Every .pyro file directly in dir (no subdirectories, no symbolic links followed out of it).
std::vector<std::string> list_pyro_files(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name[0] == '.' || !ends_with(name, ".pyro")) continue;
    struct stat st;
    if (lstat((dir + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

struct Store::OpenWriter {
  std::mutex mutex;  // held by the thread appending (the group's leader) and by close
  Writer writer;
  std::string path;
  int64_t last_used = 0;  // unix seconds
  // Pushes between writer_for() and the end of their append (changed under the store's writers_mutex_
  // to go up, so maintain(), which looks under that lock, never closes a writer a push is about to use).
  std::atomic<int> users{0};
  // Group commit: blocks waiting for the writer. Whoever gets the writer next appends every block
  // queued by then, those of one series and block merged into one part, and records each block's
  // result; a thread whose block was appended by another finds it done once it has the writer.
  struct Pending {
    ProfileBlock* block;
    Status status;
    bool done = false;
  };
  std::mutex queue_mutex;
  std::vector<Pending*> queue;
};

Status Store::append_grouped(OpenWriter& w, ProfileBlock* block) {
  OpenWriter::Pending me{block, Status(), false};
  {
    std::lock_guard<std::mutex> q(w.queue_mutex);
    w.queue.push_back(&me);
  }
  std::lock_guard<std::mutex> lead(w.mutex);
  std::vector<OpenWriter::Pending*> batch;
  {
    std::lock_guard<std::mutex> q(w.queue_mutex);
    if (me.done) return me.status;  // a leader before us appended it
    batch.swap(w.queue);            // we lead: ours and every block queued so far
  }
  // Groups of one series and block, in queue order; each group becomes one part.
  std::map<std::pair<std::string, int64_t>, std::vector<OpenWriter::Pending*>> groups;
  std::vector<std::vector<OpenWriter::Pending*>*> order;
  for (OpenWriter::Pending* p : batch) {
    auto& g = groups[{p->block->series.to_string(), p->block->block_start}];
    if (g.empty()) order.push_back(&g);
    g.push_back(p);
  }
  for (std::vector<OpenWriter::Pending*>* g : order) {
    ProfileBlock* first = g->front()->block;
    Status st;
    if (g->size() == 1) {
      st = w.writer.append(first->series, first->block_start, first->tree, &first->info);
    } else {
      Tree merged = first->tree;
      for (size_t i = 1; i < g->size(); ++i) merged.merge((*g)[i]->block->tree);
      st = w.writer.append(first->series, first->block_start, merged, &first->info);
    }
    for (OpenWriter::Pending* p : *g) p->status = st;
  }
  std::lock_guard<std::mutex> q(w.queue_mutex);
  for (OpenWriter::Pending* p : batch) p->done = true;
  return me.status;
}

Status Store::append_to_hour(int64_t hour, bool late, int64_t now, ProfileBlock* block, std::string* path) {
  Status st;
  std::shared_ptr<OpenWriter> w = writer_for(hour, late, now, &st);  // counted as a user
  if (!w) {
    path->clear();
    return st;
  }
  *path = w->path;
  st = append_grouped(*w, block);
  w->users--;
  return st;
}

struct Store::CachedFile {
  File file;
  int64_t size = -1;
  int64_t opened_ms = 0;
};

Store::Store() = default;
Store::~Store() {
  std::lock_guard<std::mutex> lock(writers_mutex_);
  for (auto& [key, w] : writers_) {
    std::lock_guard<std::mutex> wl(w->mutex);
    w->writer.close();
  }
}

std::string Store::hour_file_name(int64_t hour_start, bool late) {
  const time_t t = static_cast<time_t>(hour_start);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d%s.pyro", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, late ? ".late" : "");
  return buf;
}

bool Store::parse_hour_file_name(const std::string& name, int64_t* hour_start, bool* late) {
  int year, month, day, hour;
  char rest[16] = {};
  if (name.size() < 18 || std::sscanf(name.c_str(), "%4d-%2d-%2dT%2d%15s", &year, &month, &day, &hour, rest) != 5)
    return false;
  const std::string tail = rest;
  if (tail != ".pyro" && tail != ".late.pyro") return false;
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 || year < 1970 || year > 9999) return false;
  struct tm tm = {};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  *hour_start = static_cast<int64_t>(timegm(&tm));
  *late = tail == ".late.pyro";
  return hour_file_name(*hour_start, *late) == name;  // canonical spelling only
}

Status Store::open(const StoreOptions& options, std::vector<std::string>* warnings) {
  options_ = options;
  if (options_.dir.empty()) return Status(StatusCode::invalid_argument, "no data directory");
  // Like `mkdir -p`: a fresh install's --data /var/lib/pyro/data need not exist up to its parent.
  for (size_t slash = options_.dir.find('/', 1);; slash = options_.dir.find('/', slash + 1)) {
    const std::string prefix = options_.dir.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST)
      return Status(StatusCode::io_error, prefix + ": " + std::strerror(errno));
    if (slash == std::string::npos) break;
  }
  struct stat st;
  if (::stat(options_.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status(StatusCode::invalid_argument, options_.dir + " is not a directory");
  if (::access(options_.dir.c_str(), W_OK) != 0)
    return Status(StatusCode::io_error, options_.dir + ": not writable: " + std::strerror(errno));
  // What each stored series is stored in, newest file last (it wins).
  Dataset all;
  Status ds = dataset(0, 0, &all, warnings);
  if (!ds.ok()) return ds;
  std::lock_guard<std::mutex> lock(infos_mutex_);
  for (size_t f = 0; f < all.file_count(); ++f) {
    const File& file = all.file(f);
    for (size_t i = 0; i < file.series().size(); ++i) infos_[file.series()[i].to_string()] = file.series_info(i);
  }
  return Status();
}

bool Store::live_window_open(int64_t hour, int64_t now) const {
  return now < hour + options_.file_seconds + int64_t(options_.seal_delay_blocks) * kDefaultResolutionSeconds + 60;
}

std::shared_ptr<Store::OpenWriter> Store::writer_for(int64_t hour, bool late, int64_t now, Status* error) {
  std::lock_guard<std::mutex> lock(writers_mutex_);
  auto& slot = writers_[{hour, late}];
  if (slot) {
    slot->last_used = now;
    slot->users++;
    return slot;
  }
  auto w = std::make_shared<OpenWriter>();
  w->path = options_.dir + "/" + hour_file_name(hour, late);
  WriterOptions wo;
  wo.fsync_each_block = options_.fsync;
  // The late file never seals a span within its hour: blocks come in any order.
  wo.seal_delay_blocks = late ? 1000000u : options_.seal_delay_blocks;
  Status st = w->writer.open(w->path, wo);
  if (!st.ok() && st.code() == StatusCode::corrupt_file) {
    // Damage before the file's tail (not a torn tail, which the writer cuts itself): keep the file for
    // `pyro info --salvage` under a name the server does not read, and start the hour afresh.
    const std::string aside = w->path + ".corrupt-" + std::to_string(now);
    if (std::rename(w->path.c_str(), aside.c_str()) == 0) {
      std::fprintf(stderr, "pyro serve: %s: %s; moved to %s\n", w->path.c_str(), st.to_string().c_str(), aside.c_str());
      st = w->writer.open(w->path, wo);
    }
  }
  if (!st.ok()) {
    writers_.erase({hour, late});
    *error = st;
    return nullptr;
  }
  w->last_used = now;
  w->users++;
  slot = w;
  return w;
}

Status Store::write(std::vector<ProfileBlock>* blocks, int64_t now) {
  // 1. Every series' unit and aggregation against what is stored, before anything is written.
  {
    std::lock_guard<std::mutex> lock(infos_mutex_);
    std::map<std::string, SeriesInfo> added;
    for (ProfileBlock& b : *blocks) {
      const std::string key = b.series.to_string();
      auto it = infos_.find(key);
      const SeriesInfo* known = it != infos_.end() ? &it->second : nullptr;
      if (!known) {
        auto a = added.find(key);
        if (a != added.end()) known = &a->second;
      }
      if (known) {
        if (known->unit != b.info.unit || known->aggregation != b.info.aggregation) {
          counters_.refused++;
          return Status(StatusCode::invalid_argument,
                        "series " + key + " is stored in " + known->unit + " (" + aggregation_name(known->aggregation) +
                            "); this push has " + b.info.unit + " (" + aggregation_name(b.info.aggregation) +
                            "): push it under another name or type");
        }
        b.info = *known;  // the period of the first push stays the series' own
      } else {
        added[key] = b.info;
      }
    }
    for (auto& [key, info] : added) infos_.emplace(key, info);
  }
  // 2. Each block into its hour's file, or that hour's late file once the span is sealed.
  uint64_t samples = 0;
  for (ProfileBlock& b : *blocks) {
    const int64_t hour = floor_div(b.block_start, options_.file_seconds) * options_.file_seconds;
    Status st;
    bool stored = false;
    if (live_window_open(hour, now)) {
      std::string path;
      st = append_to_hour(hour, false, now, &b, &path);
      if (st.ok()) stored = true;
      else if (st.code() != StatusCode::out_of_order) {
        counters_.refused++;
        return path.empty() ? st : Status(st.code(), path + ": " + st.message());
      }
    }
    if (!stored) {
      std::string path;
      st = append_to_hour(hour, true, now, &b, &path);
      if (!st.ok()) {
        counters_.refused++;
        return path.empty() ? st : Status(st.code(), path + ": " + st.message());
      }
      counters_.late_blocks++;
    }
    counters_.blocks++;
    samples += b.tree.total();
  }
  counters_.pushes++;
  counters_.samples += samples;
  return Status();
}

void Store::maintain(int64_t now) {
  // Writers of hours whose live window closed (and late writers idle for two minutes), unless a push is
  // using one. They are closed under the writers' lock: a push that wants the same hour meanwhile waits,
  // then opens a fresh writer on a file the old one has let go of.
  {
    std::lock_guard<std::mutex> lock(writers_mutex_);
    for (auto it = writers_.begin(); it != writers_.end();) {
      const bool idle = it->first.second ? now - it->second->last_used > 120 : !live_window_open(it->first.first, now);
      if (!idle || it->second->users.load() != 0) {
        ++it;
        continue;
      }
      OpenWriter& w = *it->second;
      {
        std::lock_guard<std::mutex> append(w.mutex);
        w.writer.close();
      }
      counters_.writers_closed++;
      it = writers_.erase(it);
    }
  }
  if (options_.retention_seconds <= 0) return;
  for (const std::string& name : list_pyro_files(options_.dir)) {
    int64_t hour;
    bool late;
    if (!parse_hour_file_name(name, &hour, &late)) continue;  // not ours: never deleted
    if (hour + options_.file_seconds > now - options_.retention_seconds) continue;
    if (live_window_open(hour, now)) continue;
    const std::string path = options_.dir + "/" + name;
    bool deleted;
    {
      // Under the writers' lock: a push that opens this hour's writer now either comes first (and the
      // file stays) or after the unlink (and starts a new file); none writes into an unlinked file.
      std::lock_guard<std::mutex> lock(writers_mutex_);
      if (writers_.count({hour, late})) continue;  // live: never deleted
      deleted = ::unlink(path.c_str()) == 0;
    }
    if (deleted) {
      counters_.files_deleted++;
      std::lock_guard<std::mutex> lock(cache_mutex_);
      cache_.erase(path);
    }
  }
}

size_t Store::open_writers() const {
  std::lock_guard<std::mutex> lock(writers_mutex_);
  return writers_.size();
}

Status Store::dataset(int64_t from, int64_t until, Dataset* out, std::vector<std::string>* warnings) {
  return dataset_with_paths(from, until, out, warnings, nullptr);
}

Status Store::read(int64_t from, int64_t until, const std::function<Status(const Dataset&)>& read,
                   std::vector<std::string>* warnings) {
  for (int attempt = 1;; attempt++) {
    Dataset data;
    std::vector<std::string> paths, attempt_warnings;
    dataset_with_paths(from, until, &data, &attempt_warnings, &paths);
    const Status st = read(data);
    // Only the answer's own warnings: a file that failed to open at every attempt is named once.
    if (st.ok() || st.code() != StatusCode::corrupt_file || attempt == 3) {
      if (warnings) warnings->insert(warnings->end(), attempt_warnings.begin(), attempt_warnings.end());
      return st;
    }
    // The files whose size is no longer the one they were opened at are opened again by the next
    // dataset(); a file damaged in place keeps its size and its error.
    bool changed = false;
    std::lock_guard<std::mutex> lock(cache_mutex_);
    for (size_t i = 0; i < paths.size() && i < data.file_count(); i++) {
      struct stat now;
      if (::stat(paths[i].c_str(), &now) == 0 && uint64_t(now.st_size) == data.file(i).info().file_bytes) continue;
      changed = true;
      auto it = cache_.find(paths[i]);
      if (it != cache_.end() && it->second->file.info().file_bytes == data.file(i).info().file_bytes) it->second->size = -1;
    }
    if (!changed) {
      if (warnings) warnings->insert(warnings->end(), attempt_warnings.begin(), attempt_warnings.end());
      return st;
    }
  }
}

Status Store::dataset_with_paths(int64_t from, int64_t until, Dataset* out, std::vector<std::string>* warnings,
                                 std::vector<std::string>* paths) {
  *out = Dataset();
  const std::vector<std::string> names = list_pyro_files(options_.dir);
  std::lock_guard<std::mutex> lock(cache_mutex_);
  // Forget files that are gone.
  for (auto it = cache_.begin(); it != cache_.end();) {
    const std::string name = it->first.substr(options_.dir.size() + 1);
    it = std::binary_search(names.begin(), names.end(), name) ? std::next(it) : cache_.erase(it);
  }
  const int64_t now_ms = steady_ms();
  for (const std::string& name : names) {
    int64_t hour;
    bool late;
    if (from < until && parse_hour_file_name(name, &hour, &late) &&
        (hour >= until || hour + options_.file_seconds <= from))
      continue;
    const std::string path = options_.dir + "/" + name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) continue;
    auto& entry = cache_[path];
    if (!entry) entry = std::make_shared<CachedFile>();
    // A file that changed size is opened again: a query sees every push answered before it.
    if (entry->size != int64_t(st.st_size)) {
      File file;
      const Status opened = file.open_path(path);
      if (!opened.ok()) {
        if (warnings) warnings->push_back(opened.to_string());
        if (entry->size < 0) {
          cache_.erase(path);
          continue;
        }
      } else {
        entry->file = file;
        // The valid part: a record being appended while the file was opened (a torn tail for now)
        // makes the next query open it again.
        entry->size = int64_t(file.info().valid_bytes);
        entry->opened_ms = now_ms;
      }
    }
    out->add(entry->file);
    if (paths) paths->push_back(path);
  }
  return Status();
}

// --- The served viewer's slices ------------------------------------------------------------------------

namespace {

// A selector matching exactly one series: its tags with =, and key="" for the app's other keys.
Status exact_selector(const Dataset& data, const SeriesKey& series, Selector* out) {
  out->app = series.app;
  out->type = series.type;
  out->matchers.clear();
  for (const std::string& key : data.tag_keys(series.app)) {
    Matcher m;
    m.key = key;
    m.op = Matcher::Op::equal;
    for (const Tag& t : series.tags)
      if (t.key == key) m.value = t.value;
    out->matchers.push_back(std::move(m));
  }
  return Status();
}

int64_t nice_step(int64_t minimum) {
  static const int64_t steps[] = {10,    20,    30,    60,    120,   300,    600,    900,    1800,
                                  3600,  7200,  10800, 21600, 43200, 86400,  172800, 604800, 2592000};
  for (int64_t s : steps)
    if (s >= minimum) return s;
  return (minimum + 86399) / 86400 * 86400;
}

}  // namespace

Status range_slice(const Dataset& data, const Selector& selector, int64_t from, int64_t until, size_t max_blocks,
                   std::string* pyro, int64_t* resolution, SliceStats* stats) {
  const int64_t base = std::max<int64_t>(1, data.resolution_seconds());
  from = floor_div(from, base) * base;
  until = -floor_div(-until, base) * base;
  if (until <= from) until = from + base;
  const int64_t blocks = (until - from) / base;
  int64_t step = base;
  if (max_blocks > 0 && blocks > int64_t(max_blocks)) step = nice_step((until - from + int64_t(max_blocks) - 1) / int64_t(max_blocks));
  step = (step + base - 1) / base * base;
  *resolution = step;
  WriterOptions options;
  options.resolution_seconds = step;
  Writer writer;
  Status st = writer.open_memory(options);
  if (!st.ok()) return st;
  SliceStats counted;
  if (step == base) {
    st = data.slice(selector, from, until, &writer, &counted);
    if (!st.ok()) return st;
  } else {
    from = floor_div(from, step) * step;
    until = -floor_div(-until, step) * step;
    for (const SeriesKey& series : data.series(selector)) {
      Selector exact;
      exact_selector(data, series, &exact);
      bool any = false;
      for (int64_t t = from; t < until; t += step) {
        QueryResult r;
        st = data.query(exact, t, t + step, &r);
        if (!st.ok()) return st;
        if (r.tree.total() == 0) continue;
        st = writer.append(series, t, r.tree, &r.info);
        if (!st.ok()) return st;
        any = true;
        counted.blocks++;
        counted.samples += r.tree.total();
      }
      counted.series += any;
    }
  }
  if (stats) *stats = counted;
  *pyro = writer.take_bytes();
  return Status();
}

}  // namespace pyroscope::serve
