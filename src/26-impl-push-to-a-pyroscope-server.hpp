// [SECTION] Implementation: push to a Pyroscope server (Linux) ====================================
//
// A minimal HTTP/1.1 client over a non-blocking socket: every wait (connect, send, receive) is a
// poll() with a deadline, writes use MSG_NOSIGNAL, and each request is `Connection: close`. Batches
// wait in a bounded queue on their own thread ("pyroscope-push"); failures back off exponentially;
// a full queue drops its oldest batch. A down, slow or misbehaving server therefore costs the
// application nothing but that thread's memory (bounded) and an occasional log line.

namespace pyroscope {
namespace detail {

struct HttpEndpoint {
  std::string host;         // name or address, without brackets
  std::string port = "80";
  std::string base_path;    // "" or "/prefix" (no trailing slash)
  std::string host_header;  // as sent in Host:
};

inline Status parse_http_endpoint(std::string_view address, HttpEndpoint* out) {
  const std::string original(address);
  constexpr std::string_view kHttp = "http://";
  if (address.substr(0, 8) == "https://")
    return Status(StatusCode::unsupported, "server_address '" + original +
                                               "': https is not supported by the built-in client; use http:// "
                                               "(e.g. a local Grafana Alloy or Pyroscope instance)");
  if (address.substr(0, kHttp.size()) != kHttp)
    return Status(StatusCode::invalid_argument,
                  "server_address '" + original + "' must start with http:// (e.g. http://localhost:4040)");
  address.remove_prefix(kHttp.size());
  const size_t slash = address.find('/');
  std::string_view authority = address.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : address.substr(slash);
  if (authority.find('@') != std::string_view::npos)
    return Status(StatusCode::invalid_argument, "server_address '" + original + "': credentials in the URL are not supported");
  if (authority.empty()) return Status(StatusCode::invalid_argument, "server_address '" + original + "' has no host");
  HttpEndpoint endpoint;
  if (authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos)
      return Status(StatusCode::invalid_argument, "server_address '" + original + "': unterminated [IPv6 address]");
    endpoint.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return Status(StatusCode::invalid_argument, "server_address '" + original + "': junk after ]");
      endpoint.port = std::string(rest.substr(1));
    }
  } else {
    const size_t colon = authority.rfind(':');
    endpoint.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) endpoint.port = std::string(authority.substr(colon + 1));
  }
  if (endpoint.host.empty()) return Status(StatusCode::invalid_argument, "server_address '" + original + "' has no host");
  if (endpoint.port.empty() || endpoint.port.size() > 5 ||
      endpoint.port.find_first_not_of("0123456789") != std::string::npos || std::atoi(endpoint.port.c_str()) == 0 ||
      std::atoi(endpoint.port.c_str()) > 65535)
    return Status(StatusCode::invalid_argument,
                  "server_address '" + original + "': port '" + endpoint.port + "' is not a number in 1..65535");
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.find_first_of("?# ") != std::string_view::npos)
    return Status(StatusCode::invalid_argument, "server_address '" + original + "': the path may not contain ?, # or spaces");
  endpoint.base_path = std::string(path);
  endpoint.host_header = std::string(authority);
  *out = std::move(endpoint);
  return Status();
}

inline std::string url_encode(std::string_view text) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '-' || u == '.' ||
        u == '_' || u == '~') {
      out += c;
    } else {
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

// Pyroscope's series name: app.type{k=v,...} with the tags sorted (SeriesKey keeps them sorted).
inline std::string ingest_series_name(const SeriesKey& series) {
  std::string name = series.app + "." + series.type + "{";
  for (size_t i = 0; i < series.tags.size(); i++) {
    if (i > 0) name += ',';
    name += series.tags[i].key + "=" + series.tags[i].value;
  }
  return name + "}";
}

// The series' info gives the units and aggregationType the server is told: samples and sum for cpu,
// bytes or objects for the allocation types, average for inuse_* (as Pyroscope's Go heap profiles).
inline std::string ingest_target(const HttpEndpoint& endpoint, const SeriesKey& series, int64_t from, int64_t until,
                                 int sample_rate_hz, const SeriesInfo& info) {
  return endpoint.base_path + "/ingest?name=" + url_encode(ingest_series_name(series)) +
         "&from=" + std::to_string(from) + "&until=" + std::to_string(until) +
         "&format=folded&sampleRate=" + std::to_string(sample_rate_hz) +
         "&spyName=pyroscope-cpp&units=" + url_encode(info.unit) +
         "&aggregationType=" + aggregation_name(info.aggregation);
}

struct HttpResponse {
  int status = 0;     // 0: no response (the error says why)
  std::string error;  // connect/send/receive failure, or the status line of a non-2xx answer
};

// The time limits of one request: its own deadline, and one that stop() may pull in while the request
// is under way (monotonic ns).
struct HttpDeadline {
  int64_t own_ns;
  const std::atomic<int64_t>* abort_ns;
  int64_t now_limit() const { return std::min(own_ns, abort_ns->load(std::memory_order_acquire)); }
};

// Waits for events on fd until the deadline. False on timeout or error. Polls in slices of at most
// 100 ms so that a deadline pulled in by stop() takes effect quickly.
inline bool http_wait(int fd, short events, const HttpDeadline& deadline, std::string* error) {
  for (;;) {
    const int64_t left_ms = (deadline.now_limit() - sampler_monotonic_ns()) / 1000000;
    if (left_ms <= 0) {
      *error = "timed out";
      return false;
    }
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 100)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) {
      *error = std::string("poll: ") + std::strerror(errno);
      return false;
    }
  }
}

inline int http_connect(const HttpEndpoint& endpoint, const HttpDeadline& deadline, std::string* error) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* addresses = nullptr;
  const int gai = getaddrinfo(endpoint.host.c_str(), endpoint.port.c_str(), &hints, &addresses);
  if (gai != 0) {
    *error = "cannot resolve '" + endpoint.host + "': " + gai_strerror(gai);
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      *error = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        *error = "connect to " + endpoint.host_header + ": " + std::strerror(errno);
        close(fd);
        fd = -1;
        continue;
      }
      int so_error = 0;
      socklen_t length = sizeof so_error;
      if (!http_wait(fd, POLLOUT, deadline, error) ||
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length) != 0 || so_error != 0) {
        if (so_error != 0) *error = "connect to " + endpoint.host_header + ": " + std::strerror(so_error);
        else if (error->find("connect") == std::string::npos) *error = "connect to " + endpoint.host_header + ": " + *error;
        close(fd);
        fd = -1;
        continue;
      }
    }
  }
  freeaddrinfo(addresses);
  if (fd >= 0) {
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

inline HttpResponse http_post(const HttpEndpoint& endpoint, const std::string& target, const std::string& body,
                              const HttpDeadline& deadline) {
  HttpResponse response;
  const int fd = http_connect(endpoint, deadline, &response.error);
  if (fd < 0) return response;
  std::string request = "POST " + target + " HTTP/1.1\r\nHost: " + endpoint.host_header +
                        "\r\nUser-Agent: pyroscope-cpp/" PYROSCOPE_VERSION_STRING
                        "\r\nContent-Type: text/plain\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  request += body;
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!http_wait(fd, POLLOUT, deadline, &response.error)) {
        response.error = "sending: " + response.error;
        close(fd);
        return response;
      }
    } else {
      response.error = std::string("sending: ") + std::strerror(errno);
      close(fd);
      return response;
    }
  }
  // Only the status line matters; read until it is complete (or the headers end).
  std::string head;
  char buffer[1024];
  while (head.find("\r\n") == std::string::npos && head.size() < 8192) {
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      head.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (!http_wait(fd, POLLIN, deadline, &response.error)) {
        response.error = "waiting for the response: " + response.error;
        close(fd);
        return response;
      }
    } else {
      response.error = std::string("receiving: ") + std::strerror(errno);
      close(fd);
      return response;
    }
  }
  close(fd);
  const std::string status_line = head.substr(0, head.find("\r\n"));
  if (status_line.size() < 12 || status_line.compare(0, 7, "HTTP/1.") != 0 ||
      status_line.find_first_not_of("0123456789", 9) < 12) {
    response.error = "malformed response: '" + status_line.substr(0, 80) + "'";
    return response;
  }
  response.status = std::atoi(status_line.c_str() + 9);
  if (response.status < 200 || response.status >= 300) response.error = status_line.substr(0, 200);
  return response;
}

class PushClient {
 public:
  static constexpr size_t kMaxQueuedBatches = 256;
  static constexpr size_t kMaxQueuedBytes = 16u << 20;
  static constexpr int64_t kRequestTimeoutNs = 10000000000;   // one request, connect to status line
  static constexpr int64_t kFirstBackoffNs = 1000000000;
  static constexpr int64_t kMaxBackoffNs = 60000000000;

  using LogFn = std::function<void(LogLevel, const std::string&)>;

  PushClient(HttpEndpoint endpoint, LogFn log) : endpoint_(std::move(endpoint)), log_(std::move(log)) {}

  // Thread body; returns when finish() was called and the queue is empty or its deadline passed.
  void run() {
    tid_.store(sampler_gettid(), std::memory_order_release);
    int failures = 0;
    int64_t next_attempt = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (finishing_ && (queue_.empty() || sampler_monotonic_ns() >= finish_deadline_)) break;
      if (queue_.empty()) {
        wake_.wait(lock);
        continue;
      }
      const int64_t now = sampler_monotonic_ns();
      if (!finishing_ && now < next_attempt) {
        wake_.wait_for(lock, std::chrono::nanoseconds(next_attempt - now));
        continue;
      }
      Batch batch = queue_.front();
      lock.unlock();
      const HttpDeadline deadline{sampler_monotonic_ns() + kRequestTimeoutNs, &abort_deadline_};
      const HttpResponse response = http_post(endpoint_, batch.target, batch.body, deadline);
      lock.lock();
      const bool retryable = response.status == 0 || response.status == 408 || response.status == 429 ||
                             response.status >= 500;
      if (response.status >= 200 && response.status < 300) {
        g_sampler_counters.push_sent.fetch_add(1, std::memory_order_relaxed);
        pop_front_locked();
        failures = 0;
        next_attempt = 0;
        continue;
      }
      g_sampler_counters.push_failed.fetch_add(1, std::memory_order_relaxed);
      if (!retryable) {
        g_sampler_counters.push_dropped.fetch_add(1, std::memory_order_relaxed);
        pop_front_locked();
        log_locked(lock, LogLevel::error, "push to " + endpoint_.host_header + " rejected a batch (" + response.error +
                                              "); batch dropped");
        continue;
      }
      if (finishing_) break;  // stopping and the server is failing: do not spin until the deadline
      failures++;
      // 1 s, 2 s, 4 s ... 60 s, with +-25% jitter so a fleet does not retry in lockstep.
      int64_t backoff = kFirstBackoffNs << std::min(failures - 1, 6);
      backoff = std::min(backoff, kMaxBackoffNs);
      jitter_ = jitter_ * 6364136223846793005ull + 1442695040888963407ull;
      backoff = backoff * 3 / 4 + static_cast<int64_t>((jitter_ >> 33) % static_cast<uint64_t>(backoff / 2 + 1));
      next_attempt = sampler_monotonic_ns() + backoff;
      if (failures == 1 || failures % 10 == 0)
        log_locked(lock, LogLevel::warning, "push to " + endpoint_.host_header + " failed (" + response.error +
                                                "); retrying in " + std::to_string(backoff / 1000000) + " ms, " +
                                                std::to_string(queue_.size()) + " batch(es) queued");
    }
    if (!queue_.empty()) {
      g_sampler_counters.push_dropped.fetch_add(queue_.size(), std::memory_order_relaxed);
      log_locked(lock, LogLevel::warning, std::to_string(queue_.size()) + " batch(es) not delivered to " +
                                              endpoint_.host_header + " before stop");
      queue_.clear();
    }
    done_ = true;
    done_signal_.notify_all();
  }

  void enqueue(std::string target, std::string body) {
    std::unique_lock<std::mutex> lock(mutex_);
    queued_bytes_ += target.size() + body.size();
    queue_.push_back(Batch{std::move(target), std::move(body)});
    size_t dropped = 0;
    while (queue_.size() > 1 && (queue_.size() > kMaxQueuedBatches || queued_bytes_ > kMaxQueuedBytes)) {
      pop_front_locked();
      dropped++;
    }
    if (dropped > 0) {
      g_sampler_counters.push_dropped.fetch_add(dropped, std::memory_order_relaxed);
      log_locked(lock, LogLevel::warning, "push queue full (server " + endpoint_.host_header +
                                              " unreachable?): dropped the oldest " + std::to_string(dropped) +
                                              " batch(es)");
    }
    wake_.notify_all();
  }

  // Asks run() to deliver what is queued until deadline (monotonic ns) and return. Returns true if it
  // did within the deadline (plus a little), false if the thread is still busy (e.g. in a DNS lookup
  // without a timeout): the caller then detaches it.
  bool finish(int64_t deadline_ns) {
    std::unique_lock<std::mutex> lock(mutex_);
    finishing_ = true;
    finish_deadline_ = deadline_ns;
    abort_deadline_.store(deadline_ns, std::memory_order_release);  // also ends a request under way
    wake_.notify_all();
    return done_signal_.wait_for(lock, std::chrono::nanoseconds(deadline_ns - sampler_monotonic_ns()) +
                                           std::chrono::milliseconds(500),
                                 [this] { return done_; });
  }

  pid_t tid() const { return tid_.load(std::memory_order_acquire); }

 private:
  struct Batch {
    std::string target;
    std::string body;
  };
  HttpEndpoint endpoint_;
  LogFn log_;
  std::mutex mutex_;
  std::condition_variable wake_, done_signal_;
  std::deque<Batch> queue_;
  size_t queued_bytes_ = 0;
  bool finishing_ = false;
  bool done_ = false;
  int64_t finish_deadline_ = 0;
  std::atomic<int64_t> abort_deadline_{INT64_MAX};
  uint64_t jitter_ = 0x9e3779b97f4a7c15ull;
  std::atomic<pid_t> tid_{0};

  void pop_front_locked() {
    queued_bytes_ -= queue_.front().target.size() + queue_.front().body.size();
    queue_.pop_front();
  }
  // The log callback runs without our lock held (it may be slow or log synchronously).
  void log_locked(std::unique_lock<std::mutex>& lock, LogLevel level, const std::string& message) {
    lock.unlock();
    if (log_) log_(level, message);
    lock.lock();
  }
};

}  // namespace detail
}  // namespace pyroscope

