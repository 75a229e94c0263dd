// JSON string escaping, shared by the viewer's status object, share files and the pyro tool.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace pyroscope::json {

// The text of a JSON string literal without its quotes; UTF-8 passes through unchanged.
inline std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  return out;
}

// A JSON string literal, quotes included.
inline std::string string(std::string_view text) { return "\"" + escape(text) + "\""; }

}  // namespace pyroscope::json

namespace pyroscope::json {

// A JSON object of string values, written in the order added: {"app":"ride","from":"1700000000"}.
class ObjectWriter {
 public:
  void add(std::string_view key, std::string_view value) {
    text_ += text_.empty() ? "{" : ",";
    text_ += string(key) + ":" + string(value);
  }
  std::string finish() const { return text_.empty() ? "{}" : text_ + "}"; }

 private:
  std::string text_;
};

}  // namespace pyroscope::json
