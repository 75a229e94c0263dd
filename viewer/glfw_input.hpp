// GLFW → ImGui input for both mains (native and WebAssembly). ImGui's GLFW backend is initialised
// with install_callbacks = false and these callbacks forward to it, which lets them:
//  - wake the viewer (an idle viewer draws nothing until input arrives),
//  - keep a key that is pressed and released between two frames visible for one frame (ImGui 1.86
//    reads key state once per frame, so a quick tap of Escape would otherwise be lost),
//  - fix the wheel of Emscripten 3.1.6's GLFW, which passes the DOM event's deltaY through (pixels,
//    positive = down) where GLFW and ImGui expect steps with positive = up.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include <GLFW/glfw3.h>

#include "backends/imgui_impl_glfw.h"
#include "viewer.hpp"

namespace pyroscope::viewer::glfw_input {

struct KeyEvent {
  int key, scancode, mods;
};

struct Input {
  ViewerState* state = nullptr;
  bool browser_wheel = false;
  std::vector<int> pressed_this_frame;
  std::vector<KeyEvent> deferred_releases;
};

inline Input& input() {
  static Input in;
  return in;
}

inline void wake() {
  if (input().state) request_redraw(*input().state);
}

inline void on_cursor(GLFWwindow*, double, double) { wake(); }
inline void on_button(GLFWwindow* w, int button, int action, int mods) {
  wake();
  ImGui_ImplGlfw_MouseButtonCallback(w, button, action, mods);
}
inline void on_scroll(GLFWwindow* w, double dx, double dy) {
  wake();
  if (input().browser_wheel) {
    // DOM_DELTA_PIXEL: about 100 pixels per wheel notch; DOM_DELTA_LINE: 3 lines per notch.
    auto steps = [](double delta) { return std::fabs(delta) >= 20 ? -delta / 100.0 : -delta / 3.0; };
    dx = steps(dx);
    dy = steps(dy);
  }
  ImGui_ImplGlfw_ScrollCallback(w, dx, dy);
}
inline void on_key(GLFWwindow* w, int key, int scancode, int action, int mods) {
  wake();
  Input& in = input();
  if (action == GLFW_PRESS) {
    in.pressed_this_frame.push_back(key);
  } else if (action == GLFW_RELEASE &&
             std::find(in.pressed_this_frame.begin(), in.pressed_this_frame.end(), key) != in.pressed_this_frame.end()) {
    in.deferred_releases.push_back(KeyEvent{key, scancode, mods});
    return;
  }
  ImGui_ImplGlfw_KeyCallback(w, key, scancode, action, mods);
}
inline void on_char(GLFWwindow* w, unsigned int c) {
  wake();
  ImGui_ImplGlfw_CharCallback(w, c);
}
inline void on_enter(GLFWwindow* w, int entered) {
  wake();
  ImGui_ImplGlfw_CursorEnterCallback(w, entered);
}
inline void on_focus(GLFWwindow* w, int focused) {
  wake();
  ImGui_ImplGlfw_WindowFocusCallback(w, focused);
}
inline void on_size(GLFWwindow*, int, int) { wake(); }

// Call before ImGui_ImplGlfw_InitForOpenGL(window, false).
inline void install(GLFWwindow* window, ViewerState* state, bool browser_wheel) {
  input().state = state;
  input().browser_wheel = browser_wheel;
  glfwSetCursorPosCallback(window, on_cursor);
  glfwSetMouseButtonCallback(window, on_button);
  glfwSetScrollCallback(window, on_scroll);
  glfwSetKeyCallback(window, on_key);
  glfwSetCharCallback(window, on_char);
  glfwSetCursorEnterCallback(window, on_enter);
  glfwSetWindowFocusCallback(window, on_focus);
  glfwSetWindowSizeCallback(window, on_size);
}

// Call after each frame: keys released during the frame they were pressed in are released now.
inline void end_frame(GLFWwindow* window) {
  Input& in = input();
  in.pressed_this_frame.clear();
  if (in.deferred_releases.empty()) return;
  std::vector<KeyEvent> releases;
  releases.swap(in.deferred_releases);
  for (const KeyEvent& k : releases) ImGui_ImplGlfw_KeyCallback(window, k.key, k.scancode, GLFW_RELEASE, k.mods);
  wake();
}

}  // namespace pyroscope::viewer::glfw_input
