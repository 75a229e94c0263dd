// Unit tests of share files (viewer/share_page.hpp) with hostile strings: names, settings, tag values,
// searches and frame names that try to end the page's <script> elements (`</SCRIPT>`, `</ScRiPt>`) or
// to put the HTML parser into its escaped script states (`<!--<script>`). Whatever they hold, the share
// page must keep exactly its own three scripts, and the strings must come back unchanged when the
// page's JavaScript reads its data. The browser test (tests/browser/security.test.js) opens such a
// page in Chromium.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "json.hpp"
#include "share_page.hpp"
#include "viewer.hpp"

using namespace pyroscope;

namespace {

const char* const kHostile[] = {
    "</SCRIPT><SCRIPT>alert(location.href)</SCRIPT>",
    "</ScRiPt ><sCrIpT>alert(1)</sCrIpT>",
    "<!--<script>",
    "<!--<SCRIPT>--></script>",
    "a & b > c < d",
    "line\xE2\x80\xA8separator\xE2\x80\xA9paragraph",
    "\"quoted\\\" </script",
};

size_t count_ignoring_case(const std::string& text, const std::string& lower) {
  size_t n = 0;
  for (size_t i = 0; i + lower.size() <= text.size(); ++i) {
    bool same = true;
    for (size_t k = 0; k < lower.size() && same; ++k) {
      char c = text[i + k];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      same = c == lower[k];
    }
    n += same;
  }
  return n;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), path);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// The value of a JSON string starting at text[at] (its opening quote), as JavaScript would read it
// (\uXXXX below U+0800 and U+2028/2029 are all these tests need).
std::string json_string_at(const std::string& text, size_t at) {
  REQUIRE(text[at] == '"');
  std::string out;
  for (size_t i = at + 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"') return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    const char e = text[++i];
    if (e == 'u') {
      const unsigned v = static_cast<unsigned>(std::strtoul(text.substr(i + 1, 4).c_str(), nullptr, 16));
      i += 4;
      if (v < 0x80) {
        out += static_cast<char>(v);
      } else if (v < 0x800) {
        out += static_cast<char>(0xC0 | (v >> 6));
        out += static_cast<char>(0x80 | (v & 0x3F));
      } else {
        out += static_cast<char>(0xE0 | (v >> 12));
        out += static_cast<char>(0x80 | ((v >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (v & 0x3F));
      }
    } else {
      out += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
    }
  }
  FAIL("unterminated JSON string");
  return out;
}

// The page's data script: what stands between `window.pyroscopeEmbedded = ` and its `;</script>`.
std::string embedded_json(const std::string& html) {
  const std::string start = "<script>window.pyroscopeEmbedded = ";
  const size_t at = html.find(start);
  REQUIRE(at != std::string::npos);
  const size_t end = html.find(";</script>", at);
  REQUIRE(end != std::string::npos);
  return html.substr(at + start.size(), end - at - start.size());
}

// The page parts viewer/build-wasm.sh writes: the real index.html and viewer-page.js, and a stand-in
// for the viewer that holds what Emscripten's output could (a closing tag in a string).
share::PageParts real_parts() {
  share::PageParts parts;
  parts.page = read_text(std::string(PYROSCOPE_SOURCE_DIR) + "/wasm/index.html");
  parts.page_script = read_text(std::string(PYROSCOPE_SOURCE_DIR) + "/wasm/viewer-page.js");
  parts.viewer_script = "var html = '</ScRiPt>'; var also = \"</script>\"; main();";
  return parts;
}

// The page has exactly its own three inline scripts, no comment, and no other script opening or end.
void check_three_scripts(const std::string& html) {
  CHECK(count_ignoring_case(html, "<script") == 3);
  CHECK(count_ignoring_case(html, "</script") == 3);
  CHECK(count_ignoring_case(html, "<!--") == 0);
}

}  // namespace

TEST_CASE("share page: JSON in a script has no <, >, & or line separators left, and means the same") {
  for (const char* hostile : kHostile) {
    CAPTURE(hostile);
    const std::string literal = share::script_json(json::string(hostile));
    CHECK(literal.find_first_of("<>&") == std::string::npos);
    CHECK(literal.find("\xE2\x80\xA8") == std::string::npos);
    CHECK(literal.find("\xE2\x80\xA9") == std::string::npos);
    CHECK(json_string_at(literal, 0) == hostile);
  }
  CHECK(share::script_json(json::string("</SCRIPT>")) == "\"\\u003c/SCRIPT\\u003e\"");
  CHECK(share::script_json("{\"a\":\"x&y\"}") == "{\"a\":\"x\\u0026y\"}");
}

TEST_CASE("share page: an inlined script's closing tags are rewritten in any case; <!-- and <script refused") {
  std::string out, error;
  REQUIRE(share::inline_script("a('</script>'); b('</SCRIPT>'); c('</ScRiPt >');", &out, &error));
  CHECK(out == "a('<\\/script>'); b('<\\/SCRIPT>'); c('<\\/ScRiPt >');");
  CHECK(count_ignoring_case(out, "</script") == 0);
  for (const char* refused : {"x = '<!--';", "x = '<script>';", "x = '<SCRIPT src=a>';", "x = '<sCrIpT';"}) {
    CAPTURE(refused);
    error.clear();
    CHECK_FALSE(share::inline_script(refused, &out, &error));
    CHECK(error.find("must not contain") != std::string::npos);
  }
  // Ends of the text: a lone '<' and a cut-off tag are just text.
  REQUIRE(share::inline_script("a < b; c = '</scr", &out, &error));
  CHECK(out == "a < b; c = '</scr");
}

TEST_CASE("share page: hostile names and settings stay data; the page keeps its three scripts") {
  const share::PageParts parts = real_parts();
  for (const char* hostile : kHostile) {
    CAPTURE(hostile);
    const std::string settings = "{\"search\":" + json::string(hostile) + ",\"tags\":" +
                                 json::string(std::string("env=") + hostile) + "}";
    std::string html, error;
    REQUIRE_MESSAGE(share::make_page(parts, std::string(hostile) + ".pyro", settings, "\x89PYRO<!--</script>", &html, &error),
                    error);
    check_three_scripts(html);
    const std::string data = embedded_json(html);
    CHECK(data.find_first_of("<>&") == std::string::npos);
    CHECK(json_string_at(data, data.find("\"name\":") + 7) == std::string(hostile) + ".pyro");
    CHECK(json_string_at(data, data.find("\"search\":") + 9) == hostile);
    CHECK(json_string_at(data, data.find("\"tags\":") + 7) == std::string("env=") + hostile);
  }
}

TEST_CASE("share page: a page or viewer script holding <!-- or <script is refused, naming the file") {
  share::PageParts parts = real_parts();
  std::string html, error;
  parts.viewer_script = "var s = '<!--';";
  CHECK_FALSE(share::make_page(parts, "a.pyro", "{}", "", &html, &error));
  CHECK(error.find("viewer-single.js") != std::string::npos);
  parts = real_parts();
  parts.page_script += "\n// <ScRiPt>\n";
  CHECK_FALSE(share::make_page(parts, "a.pyro", "{}", "", &html, &error));
  CHECK(error.find("viewer-page.js") != std::string::npos);
}

// The viewer's own Export > Share: a search and checked tag values from a URL or a file, and frame
// names in the data, go into the share file as data only.
TEST_CASE("share page: the viewer's Export > Share with a hostile search, tag value and frame names") {
  char folder[] = "/tmp/pyroscope-share-test-XXXXXX";
  REQUIRE(::mkdtemp(folder) != nullptr);
  const std::string path = std::string(folder) + "/hostile.pyro";
  const std::string value = "</SCRIPT><SCRIPT>alert(location.href)</SCRIPT>";
  const std::string frame = "</ScRiPt><!--<script>alert(2)";
  {
    Writer writer;
    REQUIRE(writer.open(path).ok());
    Tree tree;
    REQUIRE(Tree::from_folded("main;" + frame + ";leaf 5\nmain;other 2\n", &tree).ok());
    REQUIRE(writer.append(SeriesKey("hostile-app", {{"env", value}}), 1700000000, tree).ok());
    REQUIRE(writer.append(SeriesKey("hostile-app", {{"env", "<!--<script>"}}), 1700000000, tree).ok());
    REQUIRE(writer.close().ok());
  }
  viewer::ViewerState state;
  std::vector<viewer::LoadInput> inputs(1);
  inputs[0].path = path;
  viewer::open_files(state, std::move(inputs));
  viewer::load_pending(state);
  REQUIRE_MESSAGE(state.error.empty(), state.error);
  REQUIRE(viewer::apply_setting(state, "tags", "env=" + value).ok());
  REQUIRE(viewer::apply_setting(state, "search", "<!--<script>").ok());
  viewer::prepare_views(state);
  REQUIRE(state.session.selection().tags.at("env") == std::vector<std::string>{value});

  // A host that keeps what is saved (the mains write a file or start a download).
  struct KeepingHost : viewer::Host {
    std::string saved_name, html;
    std::string save_file(const std::string& name, const std::string& bytes, std::string*) override {
      saved_name = name;
      html = bytes;
      return name;
    }
    std::string share_unavailable() const override { return ""; }
  } host;
  state.host = &host;
  state.share_parts = std::make_unique<share::PageParts>(real_parts());
  viewer::export_share(state);
  REQUIRE_MESSAGE(state.error.empty(), state.error);
  const std::string& html = host.html;
  REQUIRE(!html.empty());
  check_three_scripts(html);
  const std::string data = embedded_json(html);
  CHECK(data.find_first_of("<>&") == std::string::npos);
  CHECK(json_string_at(data, data.find("\"search\":") + 9) == "<!--<script>");
  CHECK(json_string_at(data, data.find("\"tags\":") + 7) == "env=" + value);
  std::remove(path.c_str());
  ::rmdir(folder);
}
