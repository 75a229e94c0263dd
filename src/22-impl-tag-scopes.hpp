// [SECTION] Implementation: tag scopes ============================================================
//
// A tag set is a node in a tree: (parent set, key=value) -> id. A thread's current set is one 32-bit
// word in a thread_local, which the signal handler reads (Go's labels work the same way: an immutable
// value swapped per scope). Interning takes a mutex the first time a (parent, key, value) triple is
// seen; later lookups walk a bucket chain of immutable nodes with acquire loads and never allocate.

#if defined(__GNUC__) || defined(__clang__)
// initial-exec: the variable sits in static TLS, so reading it in the signal handler is a plain
// %fs-relative load even when the implementation lives in a shared library (the default dynamic model
// may call __tls_get_addr, which can allocate on a thread's first access).
#define PYROSCOPE_TLS_INITIAL_EXEC __attribute__((tls_model("initial-exec")))
#else
#define PYROSCOPE_TLS_INITIAL_EXEC
#endif

#if defined(PYROSCOPE_PLATFORM_LINUX) && !defined(PYROSCOPE_NO_SAMPLER)
#include <sys/syscall.h>  // SYS_gettid: a thread's tag-set word is registered by tid
#endif

namespace pyroscope {
namespace detail {

// The calling thread's tag-set id (0: no dynamic tags). Written by tag scopes, read by the handler.
thread_local std::atomic<uint32_t> g_thread_tag_set PYROSCOPE_TLS_INITIAL_EXEC{0};

struct TagSetNode {
  uint32_t id = 0;
  uint32_t parent = 0;
  uint64_t hash = 0;
  std::string key;
  std::string value;
  Tags tags;  // parent's tags with key=value added (a later value for a key replaces the earlier)
  std::atomic<TagSetNode*> next{nullptr};  // bucket chain; immutable once published
};

class TagSetRegistry {
 public:
  // Tag sets beyond this many are not created (the tag is ignored and counted): unbounded values such
  // as request ids would otherwise grow memory and the number of series without limit.
  static constexpr uint32_t kMaxTagSets = 1u << 16;

  uint32_t child(uint32_t parent, std::string_view key, std::string_view value) {
    const uint64_t h = hash(parent, key, value);
    std::atomic<TagSetNode*>& bucket = buckets_[h & (kBuckets - 1)];
    if (TagSetNode* found = find(bucket.load(std::memory_order_acquire), h, parent, key, value))
      return found->id;
    std::lock_guard<std::mutex> lock(mutex_);
    if (TagSetNode* found = find(bucket.load(std::memory_order_acquire), h, parent, key, value))
      return found->id;
    if (nodes_.size() >= kMaxTagSets || parent >= nodes_.size()) {
      overflowed_.fetch_add(1, std::memory_order_relaxed);
      return parent;
    }
    TagSetNode* node = new TagSetNode;
    node->id = static_cast<uint32_t>(nodes_.size());
    node->parent = parent;
    node->hash = h;
    node->key.assign(key.data(), key.size());
    node->value.assign(value.data(), value.size());
    if (parent != 0) node->tags = nodes_[parent]->tags;
    bool replaced = false;
    for (Tag& tag : node->tags) {
      if (tag.key == node->key) {
        tag.value = node->value;
        replaced = true;
      }
    }
    if (!replaced) {
      node->tags.push_back(Tag{node->key, node->value});
      std::sort(node->tags.begin(), node->tags.end());
    }
    node->next.store(bucket.load(std::memory_order_relaxed), std::memory_order_relaxed);
    nodes_.push_back(node);
    bucket.store(node, std::memory_order_release);
    return node->id;
  }

  // The resolved tags of a set (empty for 0 or an unknown id). Takes the mutex: background thread.
  Tags tags_of(uint32_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (id == 0 || id >= nodes_.size()) return Tags();
    return nodes_[id]->tags;
  }
  uint32_t size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<uint32_t>(nodes_.size());
  }
  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }
  std::mutex& mutex() { return mutex_; }  // held across fork() so the child gets a consistent copy

 private:
  static constexpr size_t kBuckets = 1024;
  std::mutex mutex_;
  std::vector<TagSetNode*> nodes_{nullptr};  // nodes_[id]; id 0 is the empty set
  std::atomic<TagSetNode*> buckets_[kBuckets] = {};
  std::atomic<uint64_t> overflowed_{0};

  static uint64_t hash(uint32_t parent, std::string_view key, std::string_view value) {
    uint64_t h = 0xcbf29ce484222325ull ^ parent;
    for (char c : key) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
    h = (h ^ 0xffu) * 0x100000001b3ull;  // separator: ("ab","c") != ("a","bc")
    for (char c : value) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
    return h ^ (h >> 31);
  }
  static TagSetNode* find(TagSetNode* node, uint64_t h, uint32_t parent, std::string_view key,
                          std::string_view value) {
    for (; node != nullptr; node = node->next.load(std::memory_order_acquire)) {
      if (node->hash == h && node->parent == parent && node->key == key && node->value == value) return node;
    }
    return nullptr;
  }
};

inline TagSetRegistry& tag_registry() {
  static TagSetRegistry* registry = new TagSetRegistry;  // never destroyed: tag scopes may outlive exit
  return *registry;
}

#if defined(PYROSCOPE_PLATFORM_LINUX) && !defined(PYROSCOPE_NO_SAMPLER)
// Where each thread that entered a tag scope keeps its tag-set word, by tid: the wall-clock sampler reads
// the tags of a thread blocked in a system call from outside (process_vm_readv, so a thread that exits
// meanwhile cannot fault the reader). Guarded by the tag registry's mutex (held across fork()).
inline std::unordered_map<pid_t, const std::atomic<uint32_t>*>& thread_tag_words() {
  static auto* words = new std::unordered_map<pid_t, const std::atomic<uint32_t>*>;  // never destroyed
  return *words;
}
// Registers the calling thread's word on its first scope and removes it when the thread exits, so a tid
// the kernel reuses never points at another thread's word.
struct ThreadTagWordRegistration {
  pid_t tid = 0;
  void ensure() {
    if (tid != 0) return;
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    std::lock_guard<std::mutex> lock(tag_registry().mutex());
    thread_tag_words()[tid] = &g_thread_tag_set;
  }
  ~ThreadTagWordRegistration() {
    if (tid == 0) return;
    std::lock_guard<std::mutex> lock(tag_registry().mutex());
    auto it = thread_tag_words().find(tid);
    if (it != thread_tag_words().end() && it->second == &g_thread_tag_set) thread_tag_words().erase(it);
  }
};
inline void publish_thread_tag_word() {
  static thread_local ThreadTagWordRegistration registration;
  registration.ensure();
}
#else
inline void publish_thread_tag_word() {}
#endif

uint32_t tag_push(std::string_view key, std::string_view value) {
  publish_thread_tag_word();
  const uint32_t previous = g_thread_tag_set.load(std::memory_order_relaxed);
  g_thread_tag_set.store(tag_registry().child(previous, key, value), std::memory_order_relaxed);
  return previous;
}

uint32_t tag_push_all(const Tags& tags) {
  publish_thread_tag_word();
  const uint32_t previous = g_thread_tag_set.load(std::memory_order_relaxed);
  uint32_t id = previous;
  for (const Tag& tag : tags) id = tag_registry().child(id, tag.key, tag.value);
  g_thread_tag_set.store(id, std::memory_order_relaxed);
  return previous;
}

void tag_restore(uint32_t previous_tag_set) {
  g_thread_tag_set.store(previous_tag_set, std::memory_order_relaxed);
}

// The calling thread's current dynamic tags (for tests and the log).
inline Tags current_thread_tags() {
  return tag_registry().tags_of(g_thread_tag_set.load(std::memory_order_relaxed));
}

// Names as Pyroscope accepts them in `app.cpu{key=value}`; checked at start() for the static tags and
// on the background thread for dynamic ones (a bad dynamic tag is logged once and left out).
inline bool is_valid_app_name(std::string_view name, std::string* why) {
  if (name.empty()) {
    *why = "is empty";
    return false;
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == '/' || c == ':';
    if (!ok) {
      *why = std::string("contains '") + c + "' (allowed: letters, digits and . _ - / :)";
      return false;
    }
  }
  return true;
}

inline bool is_valid_tag(std::string_view key, std::string_view value, std::string* why) {
  if (key.empty()) {
    *why = "has an empty key";
    return false;
  }
  for (size_t i = 0; i < key.size(); i++) {
    const char c = key[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && ((c >= '0' && c <= '9') || c == '.'));
    if (!ok) {
      *why = "key '" + std::string(key) + "' must match [A-Za-z_][A-Za-z0-9_.]*";
      return false;
    }
  }
  if (key.size() >= 2 && key[0] == '_' && key[1] == '_') {
    *why = "key '" + std::string(key) + "' starts with '__' (reserved)";
    return false;
  }
  if (value.empty()) {
    *why = "key '" + std::string(key) + "' has an empty value";
    return false;
  }
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '{' || c == '}' || c == ',' || c == '=' ||
        c == '"') {
      *why = "value of '" + std::string(key) + "' contains a control character or one of {}=,\"";
      return false;
    }
  }
  return true;
}

}  // namespace detail
}  // namespace pyroscope

