// WebAssembly viewer: the same UI in a <canvas>, driven by the browser's animation frames
// (emscripten_set_main_loop_arg; never a blocking loop). The page (wasm/viewer-page.js) reads files
// (picker, drag-and-drop, ?file=<url> with progress) into malloc'd memory and hands them over through
// the pv_* functions below; several files handed over together open as one data set.
#include <emscripten.h>
#include <emscripten/heap.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <GLFW/glfw3.h>
#include <GLES3/gl3.h>

#include "backends/imgui_impl_glfw.h"
#include "backends/imgui_impl_opengl3.h"
#include "imgui.h"
#include "glfw_input.hpp"
#include "stb_codecs.hpp"
#include "viewer.hpp"

namespace viewer = pyroscope::viewer;

namespace {

const char* kFontPath = "/fonts/DejaVuSans.ttf";  // preloaded by build-wasm.sh (absent: built-in font)

// The browser host: the page's file picker, downloads, and the page's own files for share files.
class PageHost : public viewer::Host {
 public:
  bool can_open_files() const override { return true; }
  void open_files_dialog() override { EM_ASM({ if (Module.openFilePicker) Module.openFilePicker(); }); }
  std::string save_file(const std::string& name, const std::string& bytes, std::string*) override {
    EM_ASM({ Module.saveFile(UTF8ToString($0), HEAPU8.slice($1, $1 + $2)); }, name.c_str(), bytes.data(), bytes.size());
    return name + " (downloaded)";
  }
  // Share files are made from this very page's files, fetched when first needed. A share file opened
  // from disk has them only inlined in itself.
  std::string share_unavailable() const override {
    return EM_ASM_INT({ return window.pyroscopeEmbedded ? 1 : 0; })
               ? "This page is a share file itself: Slice (.pyro) passes the selection on, or open the data in the "
                 "served viewer to share it"
               : "";
  }
  void request_share_parts() override { EM_ASM({ Module.loadShareParts(); }); }
  // The page makes the link (its address, its file= URLs, the query) and copies it.
  std::string copy_link(const std::string& query) override {
    char* link = reinterpret_cast<char*>(EM_ASM_INT({
      const link = Module.copyLink(UTF8ToString($0));
      const size = lengthBytesUTF8(link) + 1;
      const ptr = _malloc(size);
      if (ptr) stringToUTF8(link, ptr, size);
      return ptr;
    }, query.c_str()));
    std::string out = link ? link : "";
    std::free(link);
    return out;
  }
};

struct App {
  GLFWwindow* window = nullptr;
  PageHost host;
  viewer::ViewerState state;
  std::vector<viewer::LoadInput> batch;
  float pixel_ratio = 1.0f;
  std::string status;
  double idle_since = -1;  // page time of the first frame not drawn since the last drawn one
};

constexpr double kWarmUpAfterIdleMs = 250;

App* g_app = nullptr;

void mark(const char* what) {
  EM_ASM({ if (Module.onStartupMark) Module.onStartupMark(UTF8ToString($0), performance.now()); }, what);
}

// The window, its WebGL context and ImGui's renderer. Made once the files the page is reading have
// opened (or after a while): the first call that needs the context waits until the browser's GPU
// process has made it (0.3 s here even in a running browser, up to 1 s in one just launched), and
// that wait then overlaps reading, opening and laying out the files instead of preceding it.
bool create_window(App& app) {
  const int width = EM_ASM_INT({ return Module.canvas.width; });
  const int height = EM_ASM_INT({ return Module.canvas.height; });
  app.window = glfwCreateWindow(width, height, "pyroscope viewer", nullptr, nullptr);
  if (!app.window) {
    EM_ASM({ if (Module.onFatal) Module.onFatal("WebGL 2 is not available in this browser"); });
    return false;
  }
  glfwMakeContextCurrent(app.window);
  mark("window");
  viewer::glfw_input::install(app.window, &app.state, /*browser_wheel=*/true);
  ImGui_ImplGlfw_InitForOpenGL(app.window, false);
  ImGui_ImplOpenGL3_Init("#version 300 es");
  ImGui_ImplOpenGL3_CreateDeviceObjects();  // shaders and the font texture now, not in the first frame
  mark("imgui");
  viewer::request_redraw(app.state);
  return true;
}

void main_loop(void* arg) {
  App& app = *static_cast<App*>(arg);
  if (!app.window) {
    if (EM_ASM_INT({ return Module.deferWindow && Module.deferWindow() ? 1 : 0; })) return;
    if (!create_window(app)) {
      emscripten_cancel_main_loop();
      return;
    }
  }
  // An idle page draws nothing: the canvas keeps showing the last frame. Once it has shown its first
  // flame graph and stayed idle a while (a user reading it), it runs the analysis code once so V8
  // optimises it before the first click on a function (viewer::warm_up_analysis). Not when embedded:
  // an embed's view is fixed by its URL, and a page may hold many.
  if (!viewer::needs_frame(app.state)) {
    const double now = emscripten_get_now();
    if (app.idle_since < 0) app.idle_since = now;
    if (app.state.first_flame_paint_ms >= 0 && app.state.warm_up_ms < 0 && now - app.idle_since > kWarmUpAfterIdleMs &&
        !app.state.session.view_settings().embed)
      viewer::warm_up_analysis(app.state);
    return;
  }
  app.idle_since = -1;
  const double start = emscripten_get_now();
  ImGui_ImplOpenGL3_NewFrame();
  ImGui_ImplGlfw_NewFrame();
  ImGui::NewFrame();
  viewer::frame(app.state);
  ImGui::Render();
  const double ui_done = emscripten_get_now();
  int width = 0, height = 0;
  glfwGetFramebufferSize(app.window, &width, &height);
  glViewport(0, 0, width, height);
  const ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg];
  glClearColor(bg.x, bg.y, bg.z, 1.0f);
  glClear(GL_COLOR_BUFFER_BIT);
  ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
  viewer::ImageRequest image;
  if (viewer::take_image_request(app.state, &image)) {
    // The drawing buffer is still this frame's until the task ends: copy the flame graph out now.
    EM_ASM({
      const name = UTF8ToString($0);
      const x = $1;
      const y = $2;
      const w = $3;
      const h = $4;
      const crop = document.createElement('canvas');
      crop.width = w;
      crop.height = h;
      crop.getContext('2d').drawImage(Module.canvas, x, y, w, h, 0, 0, w, h);
      crop.toBlob((blob) => blob.arrayBuffer().then((bytes) => Module.saveFile(name, new Uint8Array(bytes))), 'image/png');
    }, image.name.c_str(), static_cast<int>(image.x0), static_cast<int>(image.y0),
           static_cast<int>(image.x1 - image.x0), static_cast<int>(image.y1 - image.y0));
  }
  const double end = emscripten_get_now();
  viewer::record_frame_time(app.state, end - start, ui_done - start);
  viewer::glfw_input::end_frame(app.window);
  if (app.state.flame_painted && app.state.first_flame_paint_ms < 0) {
    app.state.first_flame_paint_ms = end;  // performance.now(): ms since the navigation started
    EM_ASM({ if (Module.onFirstFlamePaint) Module.onFirstFlamePaint($0); }, end);
  }
}

void rebuild_fonts(App& app) {
  viewer::setup_style(app.state, app.pixel_ratio, kFontPath);
  if (!app.window) return;  // the texture is made with the window
  ImGui_ImplOpenGL3_DestroyFontsTexture();
  ImGui_ImplOpenGL3_CreateFontsTexture();
}

}  // namespace

extern "C" {

// Starts a batch of files that open together as one data set.
EMSCRIPTEN_KEEPALIVE void pv_open_begin() {
  for (viewer::LoadInput& in : g_app->batch) std::free(in.bytes);
  g_app->batch.clear();
}

// Adds one file to the batch. bytes must come from malloc (the page's _malloc); the viewer owns them.
EMSCRIPTEN_KEEPALIVE void pv_open_add(const char* name, uint8_t* bytes, uint32_t size, double modified_unix) {
  viewer::LoadInput in;
  in.name = name;
  in.bytes = bytes;
  in.size = size;
  in.modified_unix = static_cast<int64_t>(modified_unix);
  g_app->batch.push_back(std::move(in));
}

// Folded text streamed in while it downloads: begin, chunks of any size, end. Returns the stream's id.
EMSCRIPTEN_KEEPALIVE int pv_stream_begin(const char* name, double modified_unix) {
  viewer::LoadInput in;
  in.name = name;
  in.modified_unix = static_cast<int64_t>(modified_unix);
  in.folded = std::make_unique<pyroscope::FoldedImporter>();
  g_app->batch.push_back(std::move(in));
  return static_cast<int>(g_app->batch.size() - 1);
}

// Parses the whole lines of a chunk (the page keeps ownership of the bytes). Always 1: the import is
// lenient, a line it cannot read is skipped and reported once the text ends (0 would stop the download).
EMSCRIPTEN_KEEPALIVE int pv_stream_chunk(int id, const char* bytes, uint32_t size) {
  viewer::LoadInput& in = g_app->batch[static_cast<size_t>(id)];
  in.folded->add(bytes, size);
  in.size += size;
  return 1;
}

// Opens the batch now. Returns 1 when everything opened, 0 when an error is shown (pv_status().error).
EMSCRIPTEN_KEEPALIVE int pv_open_end() {
  viewer::open_files(g_app->state, std::move(g_app->batch));
  g_app->batch.clear();
  viewer::load_pending(g_app->state);
  // The trees and layouts now, in this task: the next animation frame then only draws.
  viewer::prepare_views(g_app->state);
  viewer::request_redraw(g_app->state);
  return g_app->state.error.empty() ? 1 : 0;
}

// The status object as JSON (valid until the next call).
EMSCRIPTEN_KEEPALIVE const char* pv_status() {
  g_app->status = viewer::status_json(g_app->state);
  return g_app->status.c_str();
}

// The canvas' CSS size and the device pixel ratio: the framebuffer gets css * ratio pixels and the UI
// scales with the ratio, so text stays sharp on HiDPI screens.
EMSCRIPTEN_KEEPALIVE void pv_set_size(int css_width, int css_height, double pixel_ratio) {
  const float ratio = pixel_ratio > 0.5 ? static_cast<float>(pixel_ratio) : 1.0f;
  // Not glfwSetWindowSize: Emscripten's GLFW turns a size equal to the screen's into a fullscreen
  // request. Resizing the canvas reaches GLFW through the browser module's resize listeners.
  EM_ASM({ Browser.setCanvasSize($0, $1); }, static_cast<int>(css_width * ratio + 0.5f),
         static_cast<int>(css_height * ratio + 0.5f));
  if (ratio != g_app->pixel_ratio) {
    g_app->pixel_ratio = ratio;
    rebuild_fonts(*g_app);
  }
  viewer::request_redraw(g_app->state);
}

// A bad URL parameter: shown in the banner, and again after each load.
EMSCRIPTEN_KEEPALIVE void pv_setting_error(const char* message) {
  std::string& errors = g_app->state.settings_error;
  errors += (errors.empty() ? "" : "\n") + std::string(message);
  g_app->state.error = errors;
  viewer::request_redraw(g_app->state);
}

// A setting from the URL (view, search, theme, app, tags, from, until, ...). Returns 1 if accepted.
EMSCRIPTEN_KEEPALIVE int pv_setting(const char* key, const char* value) {
  const pyroscope::Status status = viewer::apply_setting(g_app->state, key, value);
  if (!status.ok()) pv_setting_error(status.message().c_str());
  viewer::request_redraw(g_app->state);
  return status.ok() ? 1 : 0;
}

// The most bytes the WebAssembly memory can grow to (the build's MAXIMUM_MEMORY): the page refuses
// any size above it before it reaches malloc.
EMSCRIPTEN_KEEPALIVE double pv_heap_max() { return static_cast<double>(emscripten_get_heap_max()); }

// An error the page ran into (download failed, file unreadable): shown like the viewer's own.
EMSCRIPTEN_KEEPALIVE void pv_set_error(const char* message) {
  g_app->state.error = message;
  viewer::request_redraw(g_app->state);
}

EMSCRIPTEN_KEEPALIVE void pv_redraw() { viewer::request_redraw(g_app->state); }

// The page's answer to load_share_parts: index.html, viewer-page.js and viewer-single.js as fetched
// (the page keeps ownership of the bytes), or why they could not be.
EMSCRIPTEN_KEEPALIVE void pv_share_parts(const char* page, uint32_t page_size, const char* page_script,
                                         uint32_t page_script_size, const char* viewer_script, uint32_t viewer_script_size) {
  pyroscope::share::PageParts parts;
  parts.page.assign(page, page_size);
  parts.page_script.assign(page_script, page_script_size);
  parts.viewer_script.assign(viewer_script, viewer_script_size);
  viewer::set_share_parts(g_app->state, pyroscope::Status(), std::move(parts));
}

EMSCRIPTEN_KEEPALIVE void pv_share_parts_failed(const char* message) {
  viewer::set_share_parts(g_app->state, pyroscope::Status(pyroscope::StatusCode::io_error, message), {});
}

// The data work the next frame would do (queries, layouts, the sandwich), done now.
EMSCRIPTEN_KEEPALIVE void pv_prepare() {
  viewer::prepare_views(g_app->state);
  viewer::request_redraw(g_app->state);
}

// Zooms the main flame graph in and out for `frames` frames; the frame times appear in status().bench.
EMSCRIPTEN_KEEPALIVE void pv_bench_zoom(int frames) { viewer::start_zoom_benchmark(g_app->state, frames); }

}  // extern "C"

int main() {
  mark("main");
  if (!glfwInit()) {
    EM_ASM({ if (Module.onFatal) Module.onFatal("GLFW failed to initialise"); });
    return 1;
  }
  // WebGL 2 is OpenGL ES 3.0; ImGui's backend then uses "#version 300 es" shaders.
  glfwWindowHint(GLFW_CLIENT_API, GLFW_OPENGL_ES_API);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  // ImGui needs neither depth nor stencil; an opaque canvas composites faster.
  glfwWindowHint(GLFW_DEPTH_BITS, 0);
  glfwWindowHint(GLFW_STENCIL_BITS, 0);
  glfwWindowHint(GLFW_ALPHA_BITS, 0);
  static App app;
  g_app = &app;
  app.pixel_ratio = static_cast<float>(EM_ASM_DOUBLE({ return window.devicePixelRatio || 1; }));
  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGui::GetIO().IniFilename = nullptr;
  viewer::setup_style(app.state, app.pixel_ratio, kFontPath);
  app.state.host = &app.host;
  app.state.session.set_codecs(viewer::stb_inflate(), viewer::stb_deflate());

  EM_ASM({ if (Module.onViewerReady) Module.onViewerReady(); });
  emscripten_set_main_loop_arg(main_loop, &app, 0, false);
  return 0;
}
