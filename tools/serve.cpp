// pyro serve: the HTTP server (serve.hpp). cpp-httplib (Debian's libcpp-httplib, 0.11) carries the
// requests; this file adds what it lacks for a server that faces any client: a bounded worker pool,
// per-connection budgets for headers, bodies and responses, body caps before and after gzip, bearer
// tokens, and static files confined to the viewer's folder. docs/security.md ("pyro serve") lists them
// with their tests.
#include "serve.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include <httplib.h>

#include "json.hpp"
#include "pyroscope.hpp"
#include "serve_ingest.hpp"
#include "serve_store.hpp"
#include "session.hpp"

// ---- Connection budgets -----------------------------------------------------------------------------
//
// cpp-httplib 0.11 bounds each read by a timeout but not a request: a client that sends its headers a
// byte at a time (each within the read timeout), or header lines without end, would hold a worker
// forever and grow its memory. The library calls recv() and send() through the dynamic linker, so
// this program's own definitions below stand in for them (symbol interposition); on a thread serving
// a connection they check its budget first, everywhere else they are plain system calls.
namespace {

enum class Phase { headers, handler, response };

struct Connection {
  int fd = -1;  // the first descriptor a task reads from is its connection's
  Phase phase = Phase::headers;
  int64_t phase_start_ms = 0;
  uint64_t header_bytes = 0;
  bool reject = false;  // the pool was full: end the connection at its first read
};

thread_local Connection* t_connection = nullptr;

std::atomic<int64_t> g_header_budget_ms{10000};
std::atomic<int64_t> g_body_budget_ms{60000};
std::atomic<int64_t> g_response_budget_ms{60000};
constexpr uint64_t kMaxHeaderBytes = 64 * 1024;
std::atomic<uint64_t> g_cut_connections{0};

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// True when this connection may go on reading or writing now.
bool within_budget(Connection* c, int fd, bool reading) {
  if (!c) return true;
  if (c->fd < 0) c->fd = fd;
  if (c->fd != fd) return true;
  if (c->reject) return false;
  const int64_t now = steady_ms();
  if (reading && c->phase == Phase::response) {  // the response is out: the next request's headers begin
    c->phase = Phase::headers;
    c->phase_start_ms = now;
    c->header_bytes = 0;
  }
  const int64_t budget = c->phase == Phase::headers ? g_header_budget_ms.load()
                         : c->phase == Phase::handler ? g_body_budget_ms.load()
                                                      : g_response_budget_ms.load();
  if (now - c->phase_start_ms > budget || (c->phase == Phase::headers && c->header_bytes > kMaxHeaderBytes)) {
    g_cut_connections++;
    c->reject = true;  // every later call fails too
    return false;
  }
  return true;
}

}  // namespace

extern "C" ssize_t recv(int fd, void* buffer, size_t size, int flags) {
  Connection* c = t_connection;
  if (!within_budget(c, fd, true)) {
    errno = ETIMEDOUT;
    return -1;
  }
  const ssize_t n = static_cast<ssize_t>(syscall(SYS_recvfrom, fd, buffer, size, flags, nullptr, nullptr));
  if (c && n > 0 && c->fd == fd && c->phase == Phase::headers) c->header_bytes += uint64_t(n);
  return n;
}

extern "C" ssize_t send(int fd, const void* buffer, size_t size, int flags) {
  if (!within_budget(t_connection, fd, false)) {
    errno = EPIPE;
    return -1;
  }
  return static_cast<ssize_t>(syscall(SYS_sendto, fd, buffer, size, flags | MSG_NOSIGNAL, nullptr, 0));
}

namespace pyroscope::serve {

namespace {

constexpr int64_t kNanos = 1000000000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A fixed number of workers and a bounded queue. A connection that finds the queue full is handed
// to one overflow thread with its first read failing, so it is closed at once instead of waiting.
class Pool : public httplib::TaskQueue {
 public:
  Pool(size_t workers, size_t queue_limit) : queue_limit_(queue_limit) {
    for (size_t i = 0; i < workers; ++i) threads_.emplace_back([this] { work(false); });
    threads_.emplace_back([this] { work(true); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (queue_.size() < queue_limit_) {
      queue_.push_back(std::move(fn));
      wake_.notify_one();
    } else if (overflow_.size() < queue_limit_) {
      rejected_++;
      overflow_.push_back(std::move(fn));
      wake_overflow_.notify_one();
    } else {
      rejected_++;
      lock.unlock();
      run(fn, true);  // the listener itself: accepting slows down until the overflow drains
    }
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    wake_overflow_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  uint64_t rejected() const { return rejected_; }

 private:
  static void run(std::function<void()>& fn, bool reject) {
    Connection connection;
    connection.phase_start_ms = steady_ms();
    connection.reject = reject;
    t_connection = &connection;
    fn();
    t_connection = nullptr;
  }
  void work(bool overflow) {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        auto& q = overflow ? overflow_ : queue_;
        (overflow ? wake_overflow_ : wake_).wait(lock, [&] { return stopping_ || !q.empty(); });
        if (q.empty()) return;
        fn = std::move(q.front());
        q.pop_front();
      }
      run(fn, overflow);
    }
  }
  size_t queue_limit_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable wake_, wake_overflow_;
  std::deque<std::function<void()>> queue_, overflow_;
  bool stopping_ = false;
  std::atomic<uint64_t> rejected_{0};
};

struct Config {
  std::string data_dir;
  std::string host = "127.0.0.1";
  int port = 4040;
  std::string token;
  std::string viewer_dir;
  Limits limits;
  StoreOptions store;
  size_t workers = 16;
  size_t queue = 256;
};

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  return diff == 0;
}

// 16MiB, 512KiB, 1GiB, 4096 -> bytes.
bool parse_size(const std::string& text, uint64_t* out) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') digits++;
  if (digits == 0 || digits > 12) return false;
  uint64_t v = std::stoull(text.substr(0, digits));
  const std::string unit = text.substr(digits);
  int shift = 0;
  if (unit == "" || unit == "B") {
  } else if (unit == "KiB" || unit == "K" || unit == "KB") {
    shift = 10;
  } else if (unit == "MiB" || unit == "M" || unit == "MB") {
    shift = 20;
  } else if (unit == "GiB" || unit == "G" || unit == "GB") {
    shift = 30;
  } else {
    return false;
  }
  if (v > (uint64_t(1) << 40) >> shift) return false;  // at most 1 TiB (and no wrap-around)
  v <<= shift;
  *out = v;
  return v > 0;
}

// 30d, 12h, 90m, 3600s, 3600 -> seconds; "0" or "forever" -> 0 (keep everything).
bool parse_duration(const std::string& text, int64_t* out) {
  if (text == "forever" || text == "0") {
    *out = 0;
    return true;
  }
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') digits++;
  if (digits == 0 || digits > 9) return false;
  const int64_t v = std::stoll(text.substr(0, digits));
  const std::string unit = text.substr(digits);
  int64_t m = 0;
  if (unit == "" || unit == "s") m = 1;
  else if (unit == "m") m = 60;
  else if (unit == "h") m = 3600;
  else if (unit == "d") m = 86400;
  else if (unit == "w") m = 7 * 86400;
  if (m == 0) return false;
  *out = v * m;
  return *out > 0;
}

std::string content_type_of(const std::string& path) {
  static const std::pair<const char*, const char*> types[] = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
      {".wasm", "application/wasm"},         {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},         {".png", "image/png"},
      {".ttf", "font/ttf"},                  {".data", "application/octet-stream"},
      {".svg", "image/svg+xml"},             {".ico", "image/x-icon"}};
  for (const auto& [ext, type] : types) {
    const size_t n = std::strlen(ext);
    if (path.size() >= n && path.compare(path.size() - n, n, ext) == 0) return type;
  }
  return "application/octet-stream";
}

class Server {
 public:
  explicit Server(Config config) : config_(std::move(config)) {}

  int run() {
    std::vector<std::string> warnings;
    Status st = store_.open(config_.store, &warnings);
    for (const std::string& w : warnings) std::fprintf(stderr, "pyro serve: warning: %s\n", w.c_str());
    if (!st.ok()) {
      std::fprintf(stderr, "pyro serve: %s\n", st.to_string().c_str());
      return 1;
    }
    if (!config_.viewer_dir.empty()) {
      char resolved[PATH_MAX];
      if (!realpath(config_.viewer_dir.c_str(), resolved)) {
        std::fprintf(stderr, "pyro serve: --viewer %s: %s\n", config_.viewer_dir.c_str(), std::strerror(errno));
        return 1;
      }
      viewer_root_ = resolved;
    }
    const size_t workers = config_.workers, queue = config_.queue;
    pool_ = nullptr;
    http_.new_task_queue = [this, workers, queue] {
      pool_ = new Pool(workers, queue);
      return pool_;
    };
    http_.set_read_timeout(5, 0);
    http_.set_write_timeout(5, 0);
    http_.set_keep_alive_timeout(5);
    http_.set_keep_alive_max_count(1000);
    http_.set_payload_max_length(config_.limits.max_body_bytes);
    http_.set_tcp_nodelay(true);
    routes();

    // SIGINT/SIGTERM end the server from a thread of their own; SIGPIPE is never wanted.
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::atomic<bool> stopping{false};
    std::thread signals([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      if (sig == 0) return;
      stopping = true;
      http_.stop();
    });
    std::thread maintenance([&] {
      while (!stopping) {
        store_.maintain(now_ns() / kNanos);
        for (int i = 0; i < 50 && !stopping; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });

    if (!http_.bind_to_port(config_.host, config_.port)) {
      std::fprintf(stderr, "pyro serve: cannot listen on %s:%d: %s\n", config_.host.c_str(), config_.port,
                   std::strerror(errno));
      stopping = true;
      pthread_kill(signals.native_handle(), SIGTERM);
      signals.join();
      maintenance.join();
      return 1;
    }
    std::fprintf(stderr, "pyro serve: listening on http://%s:%d/ (data %s, retention %s, %s)\n",
                 config_.host.find(':') != std::string::npos ? ("[" + config_.host + "]").c_str() : config_.host.c_str(),
                 config_.port, config_.store.dir.c_str(),
                 config_.store.retention_seconds ? session::format_duration(config_.store.retention_seconds).c_str() : "forever",
                 config_.token.empty() ? "no token" : "bearer token required");
    std::fflush(stderr);
    http_.listen_after_bind();
    stopping = true;
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
    maintenance.join();
    store_.maintain(now_ns() / kNanos);
    std::fprintf(stderr, "pyro serve: stopped (%llu pushes, %llu samples stored)\n",
                 (unsigned long long)store_.counters().pushes.load(), (unsigned long long)store_.counters().samples.load());
    return 0;
  }

 private:
  Config config_;
  Store store_;
  httplib::Server http_;
  Pool* pool_ = nullptr;
  std::string viewer_root_;
  std::atomic<uint64_t> requests_{0}, refused_{0};
  std::atomic<int64_t> last_log_ms_{0};

  void log_refusal(const httplib::Request& req, int status, const std::string& message) {
    refused_++;
    const int64_t now = steady_ms();
    int64_t last = last_log_ms_.load();
    if (now - last < 100 || !last_log_ms_.compare_exchange_strong(last, now)) return;  // at most 10 lines a second
    std::fprintf(stderr, "pyro serve: %s %s from %s: %d %s\n", req.method.c_str(), req.path.c_str(),
                 req.remote_addr.c_str(), status, message.substr(0, 300).c_str());
  }

  void plain_error(const httplib::Request& req, httplib::Response& res, int status, const std::string& message) {
    res.status = status;
    res.set_content(message + "\n", "text/plain; charset=utf-8");
    log_refusal(req, status, message);
  }

  static const char* connect_code(int status) {
    switch (status) {
      case 400: return "invalid_argument";
      case 401: return "unauthenticated";
      case 413: return "resource_exhausted";
      case 415: return "invalid_argument";
      case 422: return "invalid_argument";
      case 503: return "unavailable";
      default: return "internal";
    }
  }

  void answer(const httplib::Request& req, httplib::Response& res, bool connect, int status, const std::string& message) {
    if (!connect) return plain_error(req, res, status, message);
    res.status = status;
    res.set_content("{\"code\":" + json::string(connect_code(status)) + ",\"message\":" + json::string(message) + "}",
                    "application/json");
    log_refusal(req, status, message);
  }

  bool authorized(const httplib::Request& req) const {
    if (config_.token.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    static const std::string kBearer = "Bearer ";
    return header.size() > kBearer.size() && header.compare(0, kBearer.size(), kBearer) == 0 &&
           constant_time_equal(header.substr(kBearer.size()), config_.token);
  }

  void routes() {
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (Connection* c = t_connection) {
        c->phase = Phase::handler;
        c->phase_start_ms = steady_ms();
      }
      requests_++;
      // Content-Encoding is undone by the handler (decode_content_encoding: bounded, and a truncated
      // stream is an error), not by cpp-httplib, which would inflate without bound and take a
      // truncated gzip for a shorter body. The Request is the library's own non-const object.
      auto& headers = const_cast<httplib::Request&>(req).headers;
      headers.erase("X-Pyro-Content-Encoding");
      if (req.method == "POST") {
        auto encoding = headers.find("Content-Encoding");
        if (encoding != headers.end()) {
          const std::string value = encoding->second;
          headers.erase(encoding);
          headers.emplace("X-Pyro-Content-Encoding", value);
        }
      }
      const bool is_static = req.method == "GET" && req.path.compare(0, 5, "/api/") != 0;
      if (!is_static && !authorized(req)) {
        res.set_header("WWW-Authenticate", "Bearer");
        answer(req, res, req.path.compare(0, 6, "/push.") == 0, 401,
               "this server needs 'Authorization: Bearer TOKEN' (pyro serve --token)");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http_.set_post_routing_handler([](const httplib::Request&, httplib::Response&) {
      if (Connection* c = t_connection) {
        c->phase = Phase::response;
        c->phase_start_ms = steady_ms();
      }
    });
    http_.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (res.body.empty()) {
        const int status = res.status;
        plain_error(req, res, status, status == 404 ? "not found: " + req.path : "HTTP " + std::to_string(status));
        res.status = status;
      }
    });
    auto ingest = [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      handle_push(req, res, reader);
    };
    http_.Post("/ingest", ingest);
    http_.Post("/push.v1.PusherService/Push", ingest);
    http_.Get("/api/info", [this](const httplib::Request& req, httplib::Response& res) { api_info(req, res); });
    http_.Get("/api/apps", [this](const httplib::Request& req, httplib::Response& res) { api_apps(req, res); });
    http_.Get("/api/tags", [this](const httplib::Request& req, httplib::Response& res) { api_tags(req, res); });
    http_.Get("/api/query", [this](const httplib::Request& req, httplib::Response& res) { api_query(req, res); });
    http_.Get("/api/.*", [this](const httplib::Request& req, httplib::Response& res) {
      plain_error(req, res, 404, "no such API: " + req.path + " (see docs/serve.md)");
    });
    http_.Get(".*", [this](const httplib::Request& req, httplib::Response& res) { static_file(req, res); });
  }

  // ---- Pushes ----

  void handle_push(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    const bool connect = req.path != "/ingest";
    const Limits& limits = config_.limits;
    // A claimed length beyond the cap is refused before a byte of the body is read.
    const std::string length = req.get_header_value("Content-Length");
    if (!length.empty()) {
      errno = 0;
      char* end = nullptr;
      const unsigned long long claimed = std::strtoull(length.c_str(), &end, 10);
      if (errno != 0 || !end || *end != '\0' || length[0] == '-') {
        res.set_header("Connection", "close");
        return answer(req, res, connect, 400, "Content-Length '" + length.substr(0, 40) + "' is not a number");
      }
      if (claimed > limits.max_body_bytes) {
        res.set_header("Connection", "close");
        return answer(req, res, connect, 413,
                      "the body (Content-Length " + length + ") is larger than the limit of " +
                          std::to_string(limits.max_body_bytes) + " bytes (pyro serve --max-body)");
      }
    }
    const std::string encoding = req.get_header_value("X-Pyro-Content-Encoding");
    const bool encoded = !encoding.empty() && encoding != "identity";
    // The body as sent is capped by --max-body; once Content-Encoding is undone, by --max-inflated.
    const uint64_t cap = limits.max_body_bytes;
    Request request;
    request.path = req.path;
    const size_t q = req.target.find('?');
    if (q != std::string::npos) request.query = req.target.substr(q + 1);
    request.content_type = req.get_header_value("Content-Type");
    bool over = false;
    uint64_t received = 0;
    bool read_ok;
    if (req.is_multipart_form_data()) {
      request.multipart = true;
      read_ok = reader(
          [&](const httplib::MultipartFormData& file) {
            request.parts.push_back(FormPart{file.name, std::string()});
            return request.parts.size() <= 16;
          },
          [&](const char* data, size_t size) {
            received += size;
            if (received > cap || request.parts.empty()) {
              over = received > cap;
              return false;
            }
            request.parts.back().content.append(data, size);
            return true;
          });
    } else {
      read_ok = reader([&](const char* data, size_t size) {
        received += size;
        if (received > cap) {
          over = true;
          return false;
        }
        request.body.append(data, size);
        return true;
      });
    }
    if (over) {
      res.set_header("Connection", "close");
      return answer(req, res, connect, 413, "the body is larger than " + std::to_string(cap) + " bytes (pyro serve --max-body)");
    }
    if (!read_ok) {
      res.set_header("Connection", "close");
      return answer(req, res, connect, 400,
                    "the body could not be read: the connection ended or timed out before the body (Content-Length) "
                    "was complete, or the multipart form is malformed");
    }
    if (encoded) {
      auto decode = [&](std::string* bytes) {
        std::string plain;
        const Status st = decode_content_encoding(encoding, *bytes, limits.max_inflated_bytes, &plain);
        if (st.ok()) *bytes = std::move(plain);
        return st;
      };
      Status st = decode(&request.body);
      for (FormPart& part : request.parts)
        if (st.ok()) st = decode(&part.content);
      if (!st.ok()) {
        const int status = st.code() == StatusCode::too_large ? 413 : st.code() == StatusCode::unsupported ? 415 : 400;
        return answer(req, res, connect, status,
                      "Content-Encoding " + encoding + ": " + st.message() +
                          (status == 413 ? " (pyro serve --max-inflated)" : ""));
      }
    }
    const int64_t now = now_ns();
    Result parsed = parse_request(request, limits, now);
    if (parsed.status != 200) return answer(req, res, connect, parsed.status, parsed.message);
    const Status stored = store_.write(&parsed.blocks, now / kNanos);
    if (!stored.ok()) {
      const int status = stored.code() == StatusCode::invalid_argument ? 422 : 500;
      return answer(req, res, connect, status, stored.message());
    }
    res.status = 200;
    res.set_header("X-Pyro-Samples", std::to_string(parsed.samples));
    if (connect) res.set_content(parsed.connect_json ? "{}" : "", parsed.connect_json ? "application/json" : "application/proto");
  }

  // ---- The JSON API ----

  static std::string param(const httplib::Request& req, const char* key, const std::string& fallback = "") {
    return req.has_param(key) ? req.get_param_value(key) : fallback;
  }

  bool range(const httplib::Request& req, httplib::Response& res, int64_t* from, int64_t* until) {
    const int64_t now = now_ns() / kNanos;
    Status st = session::parse_time(param(req, "from", "now-15m"), now, from);
    if (st.ok()) st = session::parse_time(param(req, "until", "now"), now, until);
    if (!st.ok()) {
      plain_error(req, res, 400, st.message());
      return false;
    }
    if (*until <= *from) {
      plain_error(req, res, 400, "until is not after from");
      return false;
    }
    return true;
  }

  void api_info(const httplib::Request&, httplib::Response& res) {
    Dataset data;
    store_.dataset(0, 0, &data);
    const TimeRange span = data.time_span();
    const StoreCounters& c = store_.counters();
    std::string body = "{\"server\":\"pyro serve\",\"version\":\"" PYROSCOPE_VERSION_STRING "\",\"now\":" +
                       std::to_string(now_ns() / kNanos) + ",\"resolution\":" + std::to_string(data.resolution_seconds()) +
                       ",\"retentionSeconds\":" + std::to_string(config_.store.retention_seconds) +
                       ",\"sealDelayBlocks\":" + std::to_string(config_.store.seal_delay_blocks) +
                       ",\"files\":" + std::to_string(data.file_count()) + ",\"writers\":" +
                       std::to_string(store_.open_writers()) + ",\"span\":{\"from\":" + std::to_string(span.from) +
                       ",\"until\":" + std::to_string(span.until) + "},\"counters\":{\"requests\":" +
                       std::to_string(requests_.load()) + ",\"refused\":" + std::to_string(refused_.load()) +
                       ",\"pushes\":" + std::to_string(c.pushes.load()) + ",\"samples\":" + std::to_string(c.samples.load()) +
                       ",\"blocks\":" + std::to_string(c.blocks.load()) + ",\"lateBlocks\":" +
                       std::to_string(c.late_blocks.load()) + ",\"storeRefused\":" + std::to_string(c.refused.load()) +
                       ",\"filesDeleted\":" + std::to_string(c.files_deleted.load()) + ",\"connectionsCut\":" +
                       std::to_string(g_cut_connections.load()) + ",\"connectionsRejected\":" +
                       std::to_string(pool_ ? pool_->rejected() : 0) + "}}\n";
    res.set_content(body, "application/json");
  }

  void api_apps(const httplib::Request&, httplib::Response& res) {
    Dataset data;
    store_.dataset(0, 0, &data);
    std::string body = "{\"apps\":[";
    bool first = true;
    for (const std::string& app : data.apps()) {
      body += (first ? "" : ",") + std::string("{\"name\":") + json::string(app) + ",\"types\":[";
      first = false;
      bool first_type = true;
      for (const std::string& t : data.types(app)) {
        body += (first_type ? "" : ",") + json::string(t);
        first_type = false;
      }
      body += "],\"tags\":[";
      bool first_key = true;
      for (const std::string& k : data.tag_keys(app)) {
        body += (first_key ? "" : ",") + json::string(k);
        first_key = false;
      }
      body += "]}";
    }
    body += "]}\n";
    res.set_content(body, "application/json");
  }

  void api_tags(const httplib::Request& req, httplib::Response& res) {
    const std::string app = param(req, "app");
    if (app.empty()) return plain_error(req, res, 400, "app is required: /api/tags?app=NAME");
    Dataset data;
    store_.dataset(0, 0, &data);
    std::string body = "{\"app\":" + json::string(app) + ",\"types\":[";
    bool first = true;
    for (const std::string& t : data.types(app)) {
      body += (first ? "" : ",") + json::string(t);
      first = false;
    }
    body += "],\"tags\":{";
    first = true;
    for (const std::string& key : data.tag_keys(app)) {
      body += (first ? "" : ",") + json::string(key) + ":[";
      first = false;
      bool first_value = true;
      for (const std::string& v : data.tag_values(app, key)) {
        body += (first_value ? "" : ",") + json::string(v);
        first_value = false;
      }
      body += "]";
    }
    body += "}}\n";
    res.set_content(body, "application/json");
  }

  void api_query(const httplib::Request& req, httplib::Response& res) {
    const std::string text = param(req, "query");
    if (text.empty()) return plain_error(req, res, 400, "query is required: /api/query?query=app.cpu{key=\"value\"}");
    Selector selector;
    Status st = Selector::parse(text, &selector);
    if (!st.ok()) return plain_error(req, res, 400, "query '" + text + "': " + st.message());
    int64_t from, until;
    if (!range(req, res, &from, &until)) return;
    const std::string format = param(req, "format", "flamebearer");
    if (format == "pyro") {
      size_t max_blocks = 720;
      if (req.has_param("max_blocks")) {
        const std::string v = param(req, "max_blocks");
        if (v.empty() || v.size() > 6 || v.find_first_not_of("0123456789") != std::string::npos || std::stoul(v) < 10)
          return plain_error(req, res, 400, "max_blocks must be an integer from 10 to 999999");
        max_blocks = std::stoul(v);
      }
      std::string pyro;
      int64_t resolution = 0;
      SliceStats stats;
      st = store_.read(from, until, [&](const Dataset& data) {
        return range_slice(data, selector, from, until, max_blocks, &pyro, &resolution, &stats);
      });
      if (!st.ok()) return plain_error(req, res, 500, st.to_string());
      res.set_header("X-Pyro-From", std::to_string(from));
      res.set_header("X-Pyro-Until", std::to_string(until));
      res.set_header("X-Pyro-Resolution", std::to_string(resolution));
      res.set_header("X-Pyro-Series", std::to_string(stats.series));
      res.set_header("X-Pyro-Samples", std::to_string(stats.samples));
      res.set_header("Cache-Control", "no-store");
      res.set_content(pyro, "application/octet-stream");
      return;
    }
    if (selector.app.empty() && format != "pyro")
      return plain_error(req, res, 400, "query '" + text + "' names no application (app.type{...})");
    QueryResult r;
    QueryOptions options;
    options.timeline_points = 720;
    st = store_.read(from, until, [&](const Dataset& data) { return data.query(selector, from, until, &r, options); });
    if (!st.ok()) return plain_error(req, res, st.code() == StatusCode::invalid_argument ? 400 : 500, st.to_string());
    if (format == "folded") {
      res.set_content(r.tree.to_folded(), "text/plain; charset=utf-8");
      return;
    }
    if (format != "flamebearer" && format != "json")
      return plain_error(req, res, 400, "format must be flamebearer, pyro or folded");
    std::string body = "{\"version\":1,\"flamebearer\":" + session::flamebearer_json(r.tree) +
                       ",\"metadata\":{\"format\":\"single\",\"name\":" + json::string(text) + ",\"type\":" +
                       json::string(r.type) + ",\"units\":" + json::string(r.info.unit) + ",\"aggregationType\":" +
                       json::string(aggregation_name(r.info.aggregation)) + ",\"period\":" + std::to_string(r.info.period) +
                       "},\"timeline\":{\"startTime\":" + std::to_string(r.timeline.start) + ",\"durationDelta\":" +
                       std::to_string(r.timeline.step) + ",\"samples\":[";
    for (size_t i = 0; i < r.timeline.samples.size(); ++i) body += (i ? "," : "") + std::to_string(r.timeline.samples[i]);
    body += "]},\"query\":{\"from\":" + std::to_string(from) + ",\"until\":" + std::to_string(until) +
            ",\"seriesMatched\":" + std::to_string(r.series_matched) + ",\"merges\":" + std::to_string(r.merges) +
            ",\"total\":" + std::to_string(r.tree.total()) + "}}\n";
    res.set_header("Cache-Control", "no-store");
    res.set_content(body, "application/json");
  }

  // ---- Static files: the viewer's folder only ----

  void static_file(const httplib::Request& req, httplib::Response& res) {
    if (viewer_root_.empty()) {
      res.set_content(
          "<!doctype html><meta charset=utf-8><title>pyro serve</title><p>pyro serve is running. The viewer is not "
          "installed here: start it with <code>--viewer DIR</code> (the folder viewer/build-wasm.sh DIR writes). "
          "API: <a href=api/info>api/info</a>, <a href=api/apps>api/apps</a>, api/tags?app=A, "
          "api/query?query=A.cpu{}&amp;from=now-15m&amp;until=now (docs/serve.md).</p>\n",
          "text/html; charset=utf-8");
      return;
    }
    std::string path = req.path;
    if (path.empty() || path.back() == '/') path += "index.html";
    // No "..", no NUL or backslash, no hidden files; then the resolved path must stay in the folder
    // (a symbolic link out of it is refused like a "..").
    if (path.find("..") != std::string::npos || path.find('\\') != std::string::npos ||
        path.find('\0') != std::string::npos || path.find("/.") != std::string::npos)
      return plain_error(req, res, 400, "bad path");
    char resolved[PATH_MAX];
    const std::string full = viewer_root_ + path;
    if (!realpath(full.c_str(), resolved)) return plain_error(req, res, 404, "not found: " + req.path);
    const std::string real = resolved;
    if (real.compare(0, viewer_root_.size() + 1, viewer_root_ + "/") != 0)
      return plain_error(req, res, 404, "not found: " + req.path);
    struct stat st;
    if (::stat(real.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (int64_t(256) << 20))
      return plain_error(req, res, 404, "not found: " + req.path);
    const int fd = ::open(real.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return plain_error(req, res, 404, "not found: " + req.path);
    std::string bytes(size_t(st.st_size), '\0');
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::read(fd, &bytes[done], bytes.size() - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    ::close(fd);
    bytes.resize(done);
    res.set_header("Cache-Control", "no-cache");
    // The viewer's page reads this from its own navigation timing: served by pyro serve, it goes live
    // (docs/serve.md); from any other server it asks for no /api/ address that would not be there.
    res.set_header("Server-Timing", "pyro-serve");
    res.set_content(bytes, content_type_of(real).c_str());
  }
};

}  // namespace

const std::vector<ServeOption>& serve_options() {
  static const std::vector<ServeOption> options = {
      {"--data", "DIR", "the data directory (created if missing): hourly .pyro files"},
      {"--bind", "HOST:PORT", "where to listen (default 127.0.0.1:4040; [::1]:4040 for IPv6)"},
      {"--token", "TOKEN", "require 'Authorization: Bearer TOKEN' on pushes and API calls"},
      {"--retention", "DURATION", "delete hour files older than this (default 30d; 0 keeps everything)"},
      {"--viewer", "DIR", "serve the browser viewer from this folder (viewer/build-wasm.sh DIR; or PYROSCOPE_VIEWER_DIR)"},
      {"--max-body", "SIZE", "largest request body as sent (default 16MiB; 413 beyond)"},
      {"--max-inflated", "SIZE", "largest body or profile after gzip (default 64MiB; 413 beyond)"},
      {"--workers", "N", "worker threads (default 16); connections beyond them and a queue of 256 are closed"},
      {"--fsync", nullptr, "fsync every block before answering (survives power loss; slower)"},
  };
  return options;
}

int serve_command(const std::map<std::string, std::string>& values, const std::set<std::string>& flags) {
  auto usage = [](const std::string& message) {
    std::fprintf(stderr, "pyro serve: %s\n(see 'pyro help serve')\n", message.c_str());
    return 2;
  };
  auto value = [&](const char* key) -> const std::string* {
    auto it = values.find(key);
    return it == values.end() ? nullptr : &it->second;
  };
  Config config;
  const std::string* data = value("--data");
  if (!data || data->empty()) return usage("--data DIR is required");
  config.store.dir = *data;
  while (config.store.dir.size() > 1 && config.store.dir.back() == '/') config.store.dir.pop_back();
  if (const std::string* bind = value("--bind")) {
    std::string host;
    std::string port;
    if (!bind->empty() && (*bind)[0] == '[') {
      const size_t close = bind->find(']');
      if (close == std::string::npos || close + 1 >= bind->size() || (*bind)[close + 1] != ':')
        return usage("--bind '" + *bind + "': expected HOST:PORT or [IPv6]:PORT");
      host = bind->substr(1, close - 1);
      port = bind->substr(close + 2);
    } else {
      const size_t colon = bind->rfind(':');
      if (colon == std::string::npos) return usage("--bind '" + *bind + "': expected HOST:PORT");
      host = bind->substr(0, colon);
      port = bind->substr(colon + 1);
    }
    if (host.empty() || port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) < 1 || std::stoi(port) > 65535)
      return usage("--bind '" + *bind + "': expected HOST:PORT with a port from 1 to 65535");
    config.host = host;
    config.port = std::stoi(port);
  }
  if (const std::string* token = value("--token")) {
    if (token->empty()) return usage("--token: empty");
    config.token = *token;
  }
  if (const std::string* retention = value("--retention"))
    if (!parse_duration(*retention, &config.store.retention_seconds))
      return usage("--retention '" + *retention + "': expected a duration such as 30d, 12h or 0 (keep everything)");
  config.limits.retention_seconds = config.store.retention_seconds;
  if (const std::string* viewer = value("--viewer")) config.viewer_dir = *viewer;
  else if (const char* env = std::getenv("PYROSCOPE_VIEWER_DIR")) config.viewer_dir = env;
  if (const std::string* v = value("--max-body"))
    if (!parse_size(*v, &config.limits.max_body_bytes)) return usage("--max-body '" + *v + "': expected a size such as 16MiB");
  if (const std::string* v = value("--max-inflated"))
    if (!parse_size(*v, &config.limits.max_inflated_bytes))
      return usage("--max-inflated '" + *v + "': expected a size such as 64MiB");
  if (const std::string* v = value("--workers")) {
    if (v->empty() || v->size() > 4 || v->find_first_not_of("0123456789") != std::string::npos || std::stoi(*v) < 1)
      return usage("--workers '" + *v + "': expected a number from 1 to 9999");
    config.workers = size_t(std::stoi(*v));
  }
  config.store.fsync = flags.count("--fsync") > 0;
  if (const char* budget = std::getenv("PYRO_SERVE_HEADER_BUDGET_MS")) g_header_budget_ms = std::atoll(budget);
  Server server(std::move(config));
  return server.run();
}

}  // namespace pyroscope::serve
