// [SECTION] Tag scopes ============================================================================

namespace detail {
// Makes {current tags of this thread} + {key=value} current and returns the previous tag-set id.
// Allocates only the first time a given tag set is seen; afterwards a lock-free lookup.
uint32_t tag_push(std::string_view key, std::string_view value);
uint32_t tag_push_all(const Tags& tags);
void tag_restore(uint32_t previous_tag_set);
}  // namespace detail

// Dynamic tags for the samples taken on this thread while the scope lives; nestable, restores the outer
// tags on exit. Thread safety: any thread; the scope must end on the thread that created it.
//     { pyroscope::tag_scope vehicle{"vehicle", "car"}; order_car(3); }
class tag_scope {
 public:
  tag_scope(std::string_view key, std::string_view value) : previous_(detail::tag_push(key, value)) {}
  explicit tag_scope(const Tags& tags) : previous_(detail::tag_push_all(tags)) {}
  ~tag_scope() { detail::tag_restore(previous_); }
  tag_scope(const tag_scope&) = delete;
  tag_scope& operator=(const tag_scope&) = delete;

 private:
  uint32_t previous_;
};

// The Pyroscope clients' form: runs fn with tags added, returns what fn returns.
//     pyroscope::tag_wrapper({{"vehicle", "bike"}}, [] { order_bike(1); });
template <class Fn>
decltype(auto) tag_wrapper(const Tags& tags, Fn&& fn) {
  tag_scope scope(tags);
  return std::forward<Fn>(fn)();
}

