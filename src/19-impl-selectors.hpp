// [SECTION] Implementation: selectors =============================================================

SeriesKey::SeriesKey(std::string app_name, Tags tag_list)
    : SeriesKey(std::move(app_name), kDefaultProfileType, std::move(tag_list)) {}

SeriesKey::SeriesKey(std::string app_name, std::string profile_type, Tags tag_list)
    : app(std::move(app_name)), type(std::move(profile_type)), tags(std::move(tag_list)) {
  // Last value wins for a repeated key: stable sort keeps the given order within a key.
  std::stable_sort(tags.begin(), tags.end(), [](const Tag& a, const Tag& b) { return a.key < b.key; });
  Tags unique;
  for (size_t i = 0; i < tags.size(); i++) {
    if (i + 1 < tags.size() && tags[i + 1].key == tags[i].key) continue;
    unique.push_back(std::move(tags[i]));
  }
  tags = std::move(unique);
}

std::string SeriesKey::to_string() const {
  std::string s = app + "." + type + "{";
  for (size_t i = 0; i < tags.size(); i++) {
    if (i) s += ',';
    s += tags[i].key + "=" + detail::quote(tags[i].value);
  }
  return s + "}";
}

namespace detail {
inline bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-' || c == ':' || c == '/';
}
}  // namespace detail

Status Selector::parse(std::string_view text, Selector* out) {
  *out = Selector();
  size_t p = 0;
  auto fail = [&](const std::string& what) {
    return detail::error(StatusCode::invalid_argument,
                         "selector '" + std::string(text) + "' at " + std::to_string(p) + ": " + what);
  };
  auto skip_space = [&] {
    while (p < text.size() && detail::is_space(text[p])) p++;
  };
  skip_space();
  size_t app_begin = p;
  while (p < text.size() && detail::is_name_char(text[p])) p++;
  std::string_view name = text.substr(app_begin, p - app_begin);
  if (!name.empty()) {
    const size_t dot = name.rfind('.');
    out->app = std::string(dot == std::string_view::npos ? name : name.substr(0, dot));
    out->type = dot == std::string_view::npos ? std::string(kDefaultProfileType) : std::string(name.substr(dot + 1));
    if (out->app.empty()) return fail("no application name before '.'");
    if (!is_valid_profile_type(out->type)) return fail("bad profile type '" + out->type + "'");
  }
  skip_space();
  if (p < text.size()) {
    if (text[p] != '{') return fail("expected '{' after the application name");
    p++;
    while (true) {
      skip_space();
      if (p < text.size() && text[p] == '}') {
        p++;
        break;
      }
      size_t key_begin = p;
      while (p < text.size() && detail::is_name_char(text[p])) p++;
      if (p == key_begin) return p >= text.size() ? fail("missing '}'") : fail("expected a tag key");
      Matcher m;
      m.key = std::string(text.substr(key_begin, p - key_begin));
      skip_space();
      if (text.substr(p, 2) == "=~") {
        m.op = Matcher::Op::regex;
        p += 2;
      } else if (text.substr(p, 2) == "!~") {
        m.op = Matcher::Op::not_regex;
        p += 2;
      } else if (text.substr(p, 2) == "!=") {
        m.op = Matcher::Op::not_equal;
        p += 2;
      } else if (text.substr(p, 1) == "=") {
        m.op = Matcher::Op::equal;
        p += 1;
      } else {
        return fail("expected one of = != =~ !~ after '" + m.key + "'");
      }
      skip_space();
      if (p >= text.size() || (text[p] != '"' && text[p] != '\'' && text[p] != '`'))
        return fail("expected a quoted value");
      char quote = text[p++];
      bool closed = false;
      while (p < text.size()) {
        char c = text[p++];
        if (c == quote) {
          closed = true;
          break;
        }
        if (c == '\\' && quote != '`' && p < text.size()) {
          char e = text[p++];
          m.value += e == 'n' ? '\n' : e == 't' ? '\t' : e;
          continue;
        }
        m.value += c;
      }
      if (!closed) return fail("unterminated string");
      if (m.op == Matcher::Op::regex || m.op == Matcher::Op::not_regex) {
        auto re = std::make_shared<detail::Regex>();
        Status st = re->compile(m.value);
        if (!st.ok()) return st;
        m.regex = std::move(re);
      }
      out->matchers.push_back(std::move(m));
      skip_space();
      if (p < text.size() && text[p] == ',') {
        p++;
        continue;
      }
      if (p < text.size() && text[p] == '}') {
        p++;
        break;
      }
      return p >= text.size() ? fail("missing '}'") : fail("expected ',' or '}'");
    }
    skip_space();
    if (p != text.size()) return fail("unexpected text after '}'");
  }
  return {};
}

bool Matcher::matches(std::string_view tag_value) const {
  switch (op) {
    case Op::equal:
      return tag_value == value;
    case Op::not_equal:
      return tag_value != value;
    case Op::regex:
    case Op::not_regex: {
      bool hit;
      if (regex && regex->pattern() == value) {
        hit = regex->full_match(tag_value);
      } else {  // built by hand, or changed after parsing: a pattern that does not compile matches nothing
        detail::Regex re;
        hit = re.compile(value).ok() && re.full_match(tag_value);
      }
      return hit == (op == Op::regex);
    }
  }
  return false;
}

bool Selector::matches(const SeriesKey& key) const {
  if (!app.empty() && app != key.app) return false;
  if (!type.empty() && type != key.type) return false;
  for (const Matcher& m : matchers) {
    std::string_view value;
    for (const Tag& t : key.tags)
      if (t.key == m.key) value = t.value;
    if (!m.matches(value)) return false;
  }
  return true;
}

std::string Selector::to_string() const {
  static const char* ops[] = {"=", "!=", "=~", "!~"};
  std::string s = app;
  if (!app.empty()) s += "." + (type.empty() ? std::string(kDefaultProfileType) : type);
  s += "{";
  for (size_t i = 0; i < matchers.size(); i++) {
    if (i) s += ',';
    s += matchers[i].key + ops[int(matchers[i].op)] + detail::quote(matchers[i].value);
  }
  return s + "}";
}

Status SeriesKey::parse(std::string_view text, SeriesKey* out) {
  Selector sel;
  Status st = Selector::parse(text, &sel);
  if (!st.ok()) return st;
  if (sel.app.empty()) return detail::error(StatusCode::invalid_argument, "series '" + std::string(text) + "': no application name");
  Tags tags;
  for (const Matcher& m : sel.matchers) {
    if (m.op != Matcher::Op::equal)
      return detail::error(StatusCode::invalid_argument, "series '" + std::string(text) + "': only key=\"value\" tags");
    tags.push_back({m.key, m.value});
  }
  *out = SeriesKey(sel.app, sel.type, std::move(tags));
  return {};
}

const char* aggregation_name(Aggregation aggregation) { return aggregation == Aggregation::average ? "average" : "sum"; }

std::string SeriesInfo::to_string() const {
  std::string s = unit + ", " + aggregation_name(aggregation);
  if (period > 0) s += ", period " + std::to_string(period) + (period_unit.empty() ? "" : " " + period_unit);
  return s;
}

bool is_valid_profile_type(std::string_view t) {
  if (t.empty() || t.size() > 64) return false;
  for (size_t i = 0; i < t.size(); i++) {
    const char c = t[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

SeriesInfo default_series_info(std::string_view t) {
  auto ends_with = [&](std::string_view suffix) {
    return t.size() >= suffix.size() && t.compare(t.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  SeriesInfo info;
  if (t == "cpu" || t == "wall" || t == "itimer") {
    info.unit = "samples";
  } else if (ends_with("_space")) {
    info.unit = "bytes";
  } else if (ends_with("_objects")) {
    info.unit = "objects";
  } else if (ends_with("_duration")) {
    info.unit = "nanoseconds";
  } else {
    info.unit = "count";
  }
  if (t.compare(0, 6, "inuse_") == 0 || t == "goroutines") info.aggregation = Aggregation::average;
  return info;
}

}  // namespace pyroscope

namespace pyroscope {

