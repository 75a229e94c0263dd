// Native viewer: a GLFW window with an OpenGL 3 context, the files to open on the command line or
// dropped on the window. An ordinary event loop that sleeps in glfwWaitEvents() when nothing changed.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <GLFW/glfw3.h>

#include "backends/imgui_impl_glfw.h"
#include "backends/imgui_impl_opengl3.h"
#include "imgui.h"
#include "glfw_input.hpp"
#include "viewer.hpp"

extern "C" int stbi_write_png(const char* filename, int w, int h, int comp, const void* data, int stride_in_bytes);
extern "C" int stbi_write_png_to_func(void (*func)(void* context, void* data, int size), void* context, int w, int h,
                                      int comp, const void* data, int stride_in_bytes);

namespace viewer = pyroscope::viewer;

namespace {

const char* kUsage =
    "usage: pyroscope-viewer [options] FILE...\n"
    "  Opens .pyro files (and folded stacks: .folded, .txt) as one data set.\n"
    "options:\n"
    "  --view flamegraph|table|both|comparison|diff   --search TERM   --theme dark|light\n"
    "  --orientation icicle|flame      --colour function|package\n"
    "  --query 'app.type{k=\"v\"}'  --app NAME  --type TYPE  --tags k=v,k2=v2\n"
    "  --from T --until T --right-from T --right-until T   (unix seconds, ISO 8601, now-1h, now+5m)\n"
    "  --size WxH          window size (default 1400x900)\n"
    "  --scale S           UI scale (default: the monitor's content scale)\n"
    "  --font PATH         TTF font (default DejaVu Sans if installed)\n"
    "  --screenshot PNG    draw --frames frames (default 12), save the last one, exit\n"
    "  --frames N\n"
    "  --bench-zoom N      zoom the flame graph in and out for N frames, print frame times, exit\n"
    "  --status-json PATH  write the viewer's status object there on exit\n"
    "  --live-status PATH  rewrite the status object there after every drawn frame (for tests that\n"
    "                      drive the window: it holds every widget's rectangle)\n"
    "  --viewer-dir DIR    the browser viewer's folder (viewer/build-wasm.sh DIR), for Export > Share\n"
    "                      (default: $PYROSCOPE_VIEWER_DIR, else ../wasm next to this program's folder)\n";

viewer::ViewerState* g_state = nullptr;

void on_drop(GLFWwindow*, int count, const char** paths) {
  if (!g_state) return;
  std::vector<viewer::LoadInput> inputs;
  for (int i = 0; i < count; ++i) {
    viewer::LoadInput in;
    in.path = paths[i];
    inputs.push_back(std::move(in));
  }
  viewer::open_files(*g_state, std::move(inputs));
}

// The framebuffer's pixels in [x, x+width) x [top, top+height) (top-left origin), top row first, opaque.
std::vector<unsigned char> read_pixels(int x, int top, int width, int height, int framebuffer_height) {
  std::vector<unsigned char> pixels(static_cast<size_t>(width) * height * 4);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadPixels(x, framebuffer_height - top - height, width, height, GL_RGBA, GL_UNSIGNED_BYTE, pixels.data());
  // OpenGL's rows go bottom-up; PNG's top-down.
  std::vector<unsigned char> flipped(pixels.size());
  const size_t row = static_cast<size_t>(width) * 4;
  for (int y = 0; y < height; ++y) {
    std::memcpy(&flipped[static_cast<size_t>(y) * row], &pixels[static_cast<size_t>(height - 1 - y) * row], row);
  }
  for (size_t i = 3; i < flipped.size(); i += 4) flipped[i] = 255;
  return flipped;
}

bool save_png(const std::string& path, int width, int height) {
  const std::vector<unsigned char> pixels = read_pixels(0, 0, width, height, height);
  return stbi_write_png(path.c_str(), width, height, 4, pixels.data(), width * 4) != 0;
}

void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

// The flame graph the user asked to export, as a PNG handed to the viewer's save_file.
void export_image(viewer::ViewerState& state, const viewer::ImageRequest& image, int fb_w, int fb_h) {
  const ImVec2 scale = ImGui::GetIO().DisplayFramebufferScale;
  const int x = std::max(0, static_cast<int>(image.x0 * scale.x));
  const int top = std::max(0, static_cast<int>(image.y0 * scale.y));
  const int width = std::min(fb_w - x, static_cast<int>((image.x1 - image.x0) * scale.x));
  const int height = std::min(fb_h - top, static_cast<int>((image.y1 - image.y0) * scale.y));
  if (width <= 0 || height <= 0) return;
  const std::vector<unsigned char> pixels = read_pixels(x, top, width, height, fb_h);
  std::string png;
  if (!stbi_write_png_to_func(append_bytes, &png, width, height, 4, pixels.data(), width * 4)) {
    state.error = "cannot encode " + image.name;
    return;
  }
  std::string error;
  if (state.host->save_file(image.name, png, &error).empty()) state.error = error;
}

bool read_whole_file(const std::string& path, std::string* out) {
  FILE* in = std::fopen(path.c_str(), "rb");
  if (!in) return false;
  out->clear();
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, in)) > 0) out->append(buffer, n);
  const bool ok = !std::ferror(in);
  std::fclose(in);
  return ok;
}

// The folder with the browser viewer's index.html, viewer-page.js and viewer-single.js, or "".
std::string find_viewer_dir(const std::string& given, const char* argv0) {
  auto complete = [](const std::string& dir) {
    return !dir.empty() && access((dir + "/index.html").c_str(), R_OK) == 0 &&
           access((dir + "/viewer-page.js").c_str(), R_OK) == 0 && access((dir + "/viewer-single.js").c_str(), R_OK) == 0;
  };
  if (!given.empty()) return given;
  if (const char* env = std::getenv("PYROSCOPE_VIEWER_DIR"); env && *env) return env;
  // A build tree: <build>/viewer/pyroscope-viewer beside <build>/wasm (CTest's viewer_wasm_build).
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  std::string program = n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string(argv0);
  const size_t slash = program.rfind('/');
  const std::string beside = (slash == std::string::npos ? std::string(".") : program.substr(0, slash)) + "/../wasm";
  return complete(beside) ? beside : std::string();
}

void write_status(const viewer::ViewerState& state, const std::string& path) {
  // Written beside and renamed, so a reader never sees half a file.
  const std::string temporary = path + ".tmp";
  FILE* f = std::fopen(temporary.c_str(), "wb");
  if (!f) return;
  const std::string json = viewer::status_json(state);
  const bool ok = std::fwrite(json.data(), 1, json.size(), f) == json.size();
  if (std::fclose(f) == 0 && ok) std::rename(temporary.c_str(), path.c_str());
}

// The native host: no file picker (files come from the command line and drag-and-drop), exports go
// to the working directory next to what was opened, share files are made from the browser viewer's
// files in a folder.
class NativeHost : public viewer::Host {
 public:
  NativeHost(viewer::ViewerState* state, std::string viewer_dir) : state_(state), viewer_dir_(std::move(viewer_dir)) {}

  // An existing file is never replaced: name-2.folded, name-3.folded, ...
  std::string save_file(const std::string& name, const std::string& bytes, std::string* error) override {
    std::string path = name;
    const size_t dot = name.rfind('.');
    for (int n = 2; access(path.c_str(), F_OK) == 0 && n < 1000; ++n)
      path = name.substr(0, dot) + "-" + std::to_string(n) + name.substr(dot);
    FILE* out = std::fopen(path.c_str(), "wbx");
    bool ok = out != nullptr && std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size();
    if (out != nullptr && std::fclose(out) != 0) ok = false;
    if (!ok) {
      *error = "cannot write '" + path + "': " + std::strerror(errno);
      return std::string();
    }
    return path;
  }

  std::string share_unavailable() const override {
    return viewer_dir_.empty() ? "Share files need the browser viewer: build it with viewer/build-wasm.sh DIR, then "
                                 "pass --viewer-dir DIR or set PYROSCOPE_VIEWER_DIR"
                               : std::string();
  }

  void request_share_parts() override {
    pyroscope::share::PageParts parts;
    const char* names[3] = {"index.html", "viewer-page.js", "viewer-single.js"};
    std::string* targets[3] = {&parts.page, &parts.page_script, &parts.viewer_script};
    for (int i = 0; i < 3; ++i) {
      const std::string path = viewer_dir_ + "/" + names[i];
      if (!read_whole_file(path, targets[i])) {
        viewer::set_share_parts(*state_, pyroscope::Status(pyroscope::StatusCode::io_error,
                                                           "cannot read " + path + ": " + std::strerror(errno) +
                                                               " (build it with viewer/build-wasm.sh " + viewer_dir_ + ")"),
                                {});
        return;
      }
    }
    viewer::set_share_parts(*state_, pyroscope::Status(), std::move(parts));
  }

 private:
  viewer::ViewerState* state_;
  std::string viewer_dir_;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<viewer::LoadInput> inputs;
  std::vector<std::pair<std::string, std::string>> settings;
  std::string screenshot, status_path, live_status_path, viewer_dir;
  std::string font = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
  int frames = 12, bench_zoom = 0, width = 1400, height = 900;
  float scale = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "pyroscope-viewer: %s needs a value\n%s", name, kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--screenshot") {
      screenshot = value("--screenshot");
    } else if (arg == "--frames") {
      frames = std::atoi(value("--frames").c_str());
    } else if (arg == "--bench-zoom") {
      bench_zoom = std::atoi(value("--bench-zoom").c_str());
    } else if (arg == "--status-json") {
      status_path = value("--status-json");
    } else if (arg == "--live-status") {
      live_status_path = value("--live-status");
    } else if (arg == "--viewer-dir") {
      viewer_dir = value("--viewer-dir");
    } else if (arg == "--size") {
      const std::string v = value("--size");
      if (std::sscanf(v.c_str(), "%dx%d", &width, &height) != 2 || width < 200 || height < 150) {
        std::fprintf(stderr, "pyroscope-viewer: --size wants WxH (at least 200x150), not '%s'\n", v.c_str());
        return 2;
      }
    } else if (arg == "--scale") {
      scale = static_cast<float>(std::atof(value("--scale").c_str()));
    } else if (arg == "--font") {
      font = value("--font");
    } else if (arg.rfind("--", 0) == 0) {
      // Viewer settings: --view diff, --right-from 123, ... (dashes become underscores).
      std::string key = arg.substr(2);
      for (char& c : key) c = c == '-' ? '_' : c;
      settings.emplace_back(key, value(arg.c_str()));
    } else {
      viewer::LoadInput in;
      in.path = arg;
      inputs.push_back(std::move(in));
    }
  }

  glfwSetErrorCallback([](int code, const char* text) { std::fprintf(stderr, "GLFW error %d: %s\n", code, text); });
  if (!glfwInit()) {
    std::fprintf(stderr, "pyroscope-viewer: cannot initialise GLFW (is DISPLAY set?)\n");
    return 1;
  }
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 2);
  glfwWindowHint(GLFW_OPENGL_PROFILE, GLFW_OPENGL_CORE_PROFILE);
  glfwWindowHint(GLFW_OPENGL_FORWARD_COMPAT, GL_TRUE);
  GLFWwindow* window = glfwCreateWindow(width, height, "pyroscope viewer", nullptr, nullptr);
  if (!window) {
    std::fprintf(stderr, "pyroscope-viewer: cannot create an OpenGL 3.2 window\n");
    glfwTerminate();
    return 1;
  }
  glfwMakeContextCurrent(window);
  const bool batch = !screenshot.empty() || bench_zoom > 0;
  glfwSwapInterval(batch ? 0 : 1);

  viewer::ViewerState state;
  g_state = &state;
  viewer::glfw_input::install(window, &state, /*browser_wheel=*/false);
  glfwSetDropCallback(window, on_drop);
  NativeHost host(&state, find_viewer_dir(viewer_dir, argv[0]));
  state.host = &host;

  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGui::GetIO().IniFilename = nullptr;
  ImGui_ImplGlfw_InitForOpenGL(window, false);
  ImGui_ImplOpenGL3_Init("#version 150");

  if (scale <= 0) {
    float xs = 1, ys = 1;
    glfwGetWindowContentScale(window, &xs, &ys);
    scale = xs > 0 ? xs : 1;
  }
  viewer::setup_style(state, scale, font);
  for (const auto& [key, v] : settings) {
    const pyroscope::Status status = viewer::apply_setting(state, key, v);
    if (!status.ok()) {
      std::fprintf(stderr, "pyroscope-viewer: --%s: %s\n%s", key.c_str(), status.message().c_str(), kUsage);
      return 2;
    }
  }
  if (!inputs.empty()) viewer::open_files(state, std::move(inputs));

  using clock = std::chrono::steady_clock;
  int frame_number = 0;
  bool bench_started = false;
  int exit_code = 0;
  while (!glfwWindowShouldClose(window)) {
    if (!batch && !viewer::needs_frame(state)) {
      glfwWaitEvents();  // idle: no redraw until something happens
      continue;
    }
    glfwPollEvents();
    const auto start = clock::now();
    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    ImGui::NewFrame();
    viewer::frame(state);
    ImGui::Render();
    const auto ui_done = clock::now();
    int fb_w, fb_h;
    glfwGetFramebufferSize(window, &fb_w, &fb_h);
    glViewport(0, 0, fb_w, fb_h);
    const ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg];
    glClearColor(bg.x, bg.y, bg.z, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
    viewer::ImageRequest image;
    if (viewer::take_image_request(state, &image)) export_image(state, image, fb_w, fb_h);
    if (batch) glFinish();  // measure the GPU's work too
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - start).count();
    viewer::record_frame_time(state, ms, std::chrono::duration<double, std::milli>(ui_done - start).count());
    viewer::glfw_input::end_frame(window);
    if (state.flame_painted && state.first_flame_paint_ms < 0) state.first_flame_paint_ms = ms;
    ++frame_number;
    if (!live_status_path.empty()) write_status(state, live_status_path);

    if (bench_zoom > 0 && state.flame_painted && !bench_started && state.pending.empty()) {
      viewer::start_zoom_benchmark(state, bench_zoom);
      bench_started = true;
    } else if (bench_zoom > 0 && bench_started && state.bench_zoom_frames == 0) {
      auto report = [&](const char* what, const std::vector<double>& t) {
        double sum = 0, worst = 0;
        for (double v : t) {
          sum += v;
          worst = std::max(worst, v);
        }
        std::printf("zoom benchmark, %s: %zu frames, mean %.2f ms, p50 %.2f ms, p95 %.2f ms, max %.2f ms\n", what,
                    t.size(), t.empty() ? 0 : sum / static_cast<double>(t.size()), percentile(t, 0.5),
                    percentile(t, 0.95), worst);
      };
      std::printf("zoom benchmark: %u nodes, %u rows deep, %dx%d pixels (60 fps budget: 16.7 ms)\n",
                  state.session.left_tree().node_count(), state.flame_left.layout().depth_count, fb_w, fb_h);
      report("whole frame incl. GL (glFinish)", state.bench_frame_ms);
      report("UI only (layout visit + ImGui)", state.bench_ui_ms);
      break;
    }
    if (!screenshot.empty() && frame_number >= frames && state.pending.empty()) {
      if (!save_png(screenshot, fb_w, fb_h)) {
        std::fprintf(stderr, "pyroscope-viewer: cannot write %s\n", screenshot.c_str());
        exit_code = 1;
      }
      break;
    }
    glfwSwapBuffers(window);
  }

  if (!status_path.empty()) {
    FILE* f = std::fopen(status_path.c_str(), "wb");
    if (f) {
      const std::string json = viewer::status_json(state);
      std::fwrite(json.data(), 1, json.size(), f);
      std::fclose(f);
    } else {
      std::fprintf(stderr, "pyroscope-viewer: cannot write %s\n", status_path.c_str());
      exit_code = 1;
    }
  }
  if (!state.error.empty()) std::fprintf(stderr, "pyroscope-viewer: %s\n", state.error.c_str());

  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window);
  glfwTerminate();
  return exit_code;
}
