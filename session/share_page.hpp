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

// Script text inlined into HTML must not close its <script> element early.
inline std::string inline_script(std::string_view code) {
  std::string out;
  out.reserve(code.size());
  for (size_t i = 0; i < code.size(); ++i) {
    if (code[i] == '<' && i + 1 < code.size() && code[i + 1] == '/' && code.compare(i + 2, 6, "script") == 0) {
      out += "<\\/";
      ++i;
    } else {
      out += code[i];
    }
  }
  return out;
}

struct PageParts {
  std::string page;           // index.html
  std::string page_script;    // viewer-page.js
  std::string viewer_script;  // viewer-single.js
};

// The share file's HTML: the page with its two scripts inlined and, before them, the data
// (`window.pyroscopeEmbedded`: a file name, the settings to apply as URL parameters would be, and
// the .pyro bytes as base64). settings_json is a JSON object of strings. Returns false, with *error
// naming the problem, when index.html does not load the two scripts as build-wasm.sh writes it.
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
  const std::string data_script = "window.pyroscopeEmbedded = {\"name\":" + json::string(name) +
                                  ",\"settings\":" + std::string(settings_json) + ",\"data\":\"" +
                                  base64(pyro_bytes) + "\"};";
  html->clear();
  html->reserve(parts.page.size() + parts.page_script.size() + parts.viewer_script.size() + data_script.size() + 64);
  *html += parts.page.substr(0, page_at);
  *html += "<script>" + inline_script(data_script) + "</script>\n";
  *html += "<script>" + inline_script(parts.page_script) + "</script>\n";
  *html += parts.page.substr(page_at + page_tag.size(), viewer_at - page_at - page_tag.size());
  *html += "<script>" + inline_script(parts.viewer_script) + "</script>";
  *html += parts.page.substr(viewer_end + std::string_view("</script>").size());
  return true;
}

}  // namespace pyroscope::share
