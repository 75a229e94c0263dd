// WebAssembly only, force-included (-include) into ImGui's OpenGL 3 backend and main_wasm.cpp.
//
// The backend saves and restores about twenty pieces of GL state around every frame with
// glGetIntegerv / glIsEnabled. In Chromium each of those WebGL getParameter calls is a synchronous
// round trip to the GPU process: profiled, they took 70 % of a frame. The viewer is the only GL user
// on its canvas, so the answers come from a shadow copy kept up to date by the setters below; the first
// query of each value still asks WebGL.
#pragma once

#define glGetIntegerv pv_glGetIntegerv
#define glIsEnabled pv_glIsEnabled
#define glActiveTexture pv_glActiveTexture
#define glUseProgram pv_glUseProgram
#define glBindTexture pv_glBindTexture
#define glBindSampler pv_glBindSampler
#define glBindBuffer pv_glBindBuffer
#define glBindVertexArray pv_glBindVertexArray
#define glViewport pv_glViewport
#define glScissor pv_glScissor
#define glBlendEquation pv_glBlendEquation
#define glBlendEquationSeparate pv_glBlendEquationSeparate
#define glBlendFunc pv_glBlendFunc
#define glBlendFuncSeparate pv_glBlendFuncSeparate
#define glEnable pv_glEnable
#define glDisable pv_glDisable
#define glDeleteTextures pv_glDeleteTextures
#define glDeleteBuffers pv_glDeleteBuffers
#define glDeleteVertexArrays pv_glDeleteVertexArrays
#define glDeleteProgram pv_glDeleteProgram
#define glDeleteSamplers pv_glDeleteSamplers
