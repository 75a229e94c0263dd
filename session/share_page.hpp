// A share file: one .html holding the browser viewer (built as a single script with its WebAssembly
// and font inside), the page around it, and a profile as a .pyro slice, which opens from file:// with
// no server and with the view it was saved with. `pyro export-html` and the viewer's Export menu both
// make it here, from the three files viewer/build-wasm.sh writes: index.html, viewer-page.js and
// viewer-single.js.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "json.hpp"

namespace pyroscope::share {

inline std::string base64(std::string_view bytes) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(bytes[i])) << 16 | uint32_t(uint8_t(bytes[i + 1])) << 8 | uint8_t(bytes[i + 2]);
    out += kDigits[v >> 18];
    out += kDigits[(v >> 12) & 63];
    out += kDigits[(v >> 6) & 63];
    out += kDigits[v & 63];
  }
  if (i < bytes.size()) {
    const bool two = i + 1 < bytes.size();
    const uint32_t v = uint32_t(uint8_t(bytes[i])) << 16 | (two ? uint32_t(uint8_t(bytes[i + 1])) << 8 : 0);
    out += kDigits[v >> 18];
    out += kDigits[(v >> 12) & 63];
    out += two ? kDigits[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// JSON text made safe to stand inside an HTML <script> element: `<`, `>` and `&` become \u003c, \u003e
// and \u0026, and U+2028 / U+2029 become \u2028 / \u2029 (line terminators in older JavaScript). In
// valid JSON these characters occur only inside strings, where the escape means the same character,
// so the value is unchanged; no `</script`, `<!--` or `<script` (in any case) is left for the HTML
// parser to see. This is the escaper of the script context: json::escape is the JSON one.
inline std::string script_json(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '<') {
      out += "\\u003c";
    } else if (c == '>') {
      out += "\\u003e";
    } else if (c == '&') {
      out += "\\u0026";
    } else if (c == '\xE2' && i + 2 < json.size() && json[i + 1] == '\x80' && (json[i + 2] == '\xA8' || json[i + 2] == '\xA9')) {
      out += json[i + 2] == '\xA8' ? "\\u2028" : "\\u2029";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

namespace detail {
inline bool starts_with_ignoring_case(std::string_view text, size_t at, std::string_view lower) {
  if (text.size() - at < lower.size()) return false;
  for (size_t i = 0; i < lower.size(); ++i) {
    char c = text[at + i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}
}  // namespace detail

// Script code (the page's and the viewer's) inlined into an HTML <script> element. The element ends at
// the first `</script` in any case, so each becomes `<\/script` (the same text in the string, regular
// expression or comment it can only stand in). `<!--` and `<script` (any case) switch the HTML parser
// into states where a later `</script>` no longer ends the element, which no rewrite undoes safely:
// code holding them is refused. Returns false with *error naming what was found.
inline bool inline_script(std::string_view code, std::string* out, std::string* error) {
  out->clear();
  out->reserve(code.size());
  for (size_t i = 0; i < code.size(); ++i) {
    if (code[i] == '<') {
      if (detail::starts_with_ignoring_case(code, i, "<!--") || detail::starts_with_ignoring_case(code, i, "<script")) {
        *error = "'" + std::string(code.substr(i, code[i + 1] == '!' ? 4 : 7)) + "' at byte " + std::to_string(i) +
                 ", which an inlined script must not contain";
        return false;
      }
      if (detail::starts_with_ignoring_case(code, i, "</script")) {
        *out += "<\\/";
        ++i;
        continue;
      }
    }
    *out += code[i];
  }
  return true;
}

struct PageParts {
  std::string page;           // index.html
  std::string page_script;    // viewer-page.js
  std::string viewer_script;  // viewer-single.js
};

// The share file's HTML: the page with its two scripts inlined and, before them, the data
// (`window.pyroscopeEmbedded`: a file name, the settings to apply as URL parameters would be, and
// the .pyro bytes as base64). settings_json is a JSON object of strings. Returns false, with *error
// naming the problem, when index.html does not load the two scripts as build-wasm.sh writes it or a
// script holds what inline_script refuses. Any name and settings are safe: the HTML parser sees none
// of their characters as markup (docs/security.md).
inline bool make_page(const PageParts& parts, std::string_view name, std::string_view settings_json,
                      std::string_view pyro_bytes, std::string* html, std::string* error) {
  const std::string page_tag = "<script src=\"viewer-page.js\"></script>";
  const size_t page_at = parts.page.find(page_tag);
  const size_t viewer_at = parts.page.find("<script async src=\"viewer.js\"");
  const size_t viewer_end = viewer_at == std::string::npos ? viewer_at : parts.page.find("</script>", viewer_at);
  if (page_at == std::string::npos || viewer_end == std::string::npos || viewer_at < page_at) {
    *error = "index.html does not load viewer-page.js and viewer.js as viewer/build-wasm.sh writes it";
    return false;
  }
  std::string page_script, viewer_script;
  if (!inline_script(parts.page_script, &page_script, error)) {
    *error = "viewer-page.js: " + *error;
    return false;
  }
  if (!inline_script(parts.viewer_script, &viewer_script, error)) {
    *error = "viewer-single.js: " + *error;
    return false;
  }
  // The data are JSON (names and settings from files and URLs: anything) escaped for the script
  // context; the .pyro bytes as base64.
  const std::string data_script = "window.pyroscopeEmbedded = " +
                                  script_json("{\"name\":" + json::string(name) + ",\"settings\":" +
                                              std::string(settings_json) + ",\"data\":\"" + base64(pyro_bytes) +
                                              "\"}") +
                                  ";";
  html->clear();
  html->reserve(parts.page.size() + page_script.size() + viewer_script.size() + data_script.size() + 64);
  *html += parts.page.substr(0, page_at);
  *html += "<script>" + data_script + "</script>\n";
  *html += "<script>" + page_script + "</script>\n";
  *html += parts.page.substr(page_at + page_tag.size(), viewer_at - page_at - page_tag.size());
  *html += "<script>" + viewer_script + "</script>";
  *html += parts.page.substr(viewer_end + std::string_view("</script>").size());
  return true;
}

}  // namespace pyroscope::share
