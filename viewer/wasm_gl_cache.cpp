// The shadow GL state behind wasm_gl_cache.h (see there for why). Compiled without that header, so
// the calls below reach Emscripten's real WebGL bindings.
#include <GLES3/gl3.h>

#include <cstring>

namespace {

constexpr int kUnits = 16;

struct Value {
  bool known = false;
  GLint v[4] = {0, 0, 0, 0};
};

struct Shadow {
  Value active_texture, program, array_buffer, vertex_array, viewport, scissor;
  Value blend_src_rgb, blend_dst_rgb, blend_src_alpha, blend_dst_alpha, blend_eq_rgb, blend_eq_alpha;
  Value texture_2d[kUnits], sampler[kUnits];
  Value blend, cull_face, depth_test, stencil_test, scissor_test;
};

Shadow g;

void set(Value& value, GLint a, GLint b = 0, GLint c = 0, GLint d = 0) {
  value.known = true;
  value.v[0] = a;
  value.v[1] = b;
  value.v[2] = c;
  value.v[3] = d;
}

int active_unit() {
  if (!g.active_texture.known) {
    glGetIntegerv(GL_ACTIVE_TEXTURE, g.active_texture.v);
    g.active_texture.known = true;
  }
  const int unit = g.active_texture.v[0] - GL_TEXTURE0;
  return unit >= 0 && unit < kUnits ? unit : -1;
}

Value* value_for(GLenum pname) {
  switch (pname) {
    case GL_ACTIVE_TEXTURE: return &g.active_texture;
    case GL_CURRENT_PROGRAM: return &g.program;
    case GL_ARRAY_BUFFER_BINDING: return &g.array_buffer;
    case GL_VERTEX_ARRAY_BINDING: return &g.vertex_array;
    case GL_VIEWPORT: return &g.viewport;
    case GL_SCISSOR_BOX: return &g.scissor;
    case GL_BLEND_SRC_RGB: return &g.blend_src_rgb;
    case GL_BLEND_DST_RGB: return &g.blend_dst_rgb;
    case GL_BLEND_SRC_ALPHA: return &g.blend_src_alpha;
    case GL_BLEND_DST_ALPHA: return &g.blend_dst_alpha;
    case GL_BLEND_EQUATION_RGB: return &g.blend_eq_rgb;
    case GL_BLEND_EQUATION_ALPHA: return &g.blend_eq_alpha;
    case GL_TEXTURE_BINDING_2D: {
      const int unit = active_unit();
      return unit < 0 ? nullptr : &g.texture_2d[unit];
    }
    case GL_SAMPLER_BINDING: {
      const int unit = active_unit();
      return unit < 0 ? nullptr : &g.sampler[unit];
    }
    default: return nullptr;
  }
}

Value* capability(GLenum cap) {
  switch (cap) {
    case GL_BLEND: return &g.blend;
    case GL_CULL_FACE: return &g.cull_face;
    case GL_DEPTH_TEST: return &g.depth_test;
    case GL_STENCIL_TEST: return &g.stencil_test;
    case GL_SCISSOR_TEST: return &g.scissor_test;
    default: return nullptr;
  }
}

int components(GLenum pname) { return pname == GL_VIEWPORT || pname == GL_SCISSOR_BOX ? 4 : 1; }

void forget_deleted(Value* values, int count, GLsizei n, const GLuint* names) {
  for (GLsizei i = 0; i < n; ++i) {
    for (int k = 0; k < count; ++k) {
      if (values[k].known && values[k].v[0] == static_cast<GLint>(names[i])) set(values[k], 0);
    }
  }
}

}  // namespace

extern "C" {

void pv_glGetIntegerv(GLenum pname, GLint* data) {
  Value* value = value_for(pname);
  if (!value) {
    glGetIntegerv(pname, data);
    return;
  }
  if (!value->known) {
    glGetIntegerv(pname, value->v);
    value->known = true;
  }
  std::memcpy(data, value->v, sizeof(GLint) * static_cast<size_t>(components(pname)));
}

GLboolean pv_glIsEnabled(GLenum cap) {
  Value* value = capability(cap);
  if (!value) return glIsEnabled(cap);
  if (!value->known) set(*value, glIsEnabled(cap));
  return value->v[0] ? GL_TRUE : GL_FALSE;
}

void pv_glEnable(GLenum cap) {
  if (Value* value = capability(cap)) set(*value, 1);
  glEnable(cap);
}

void pv_glDisable(GLenum cap) {
  if (Value* value = capability(cap)) set(*value, 0);
  glDisable(cap);
}

void pv_glActiveTexture(GLenum texture) {
  set(g.active_texture, static_cast<GLint>(texture));
  glActiveTexture(texture);
}

void pv_glUseProgram(GLuint program) {
  set(g.program, static_cast<GLint>(program));
  glUseProgram(program);
}

void pv_glBindTexture(GLenum target, GLuint texture) {
  if (target == GL_TEXTURE_2D) {
    const int unit = active_unit();
    if (unit >= 0) set(g.texture_2d[unit], static_cast<GLint>(texture));
  }
  glBindTexture(target, texture);
}

void pv_glBindSampler(GLuint unit, GLuint sampler) {
  if (unit < static_cast<GLuint>(kUnits)) set(g.sampler[unit], static_cast<GLint>(sampler));
  glBindSampler(unit, sampler);
}

void pv_glBindBuffer(GLenum target, GLuint buffer) {
  if (target == GL_ARRAY_BUFFER) set(g.array_buffer, static_cast<GLint>(buffer));
  glBindBuffer(target, buffer);
}

void pv_glBindVertexArray(GLuint array) {
  set(g.vertex_array, static_cast<GLint>(array));
  glBindVertexArray(array);
}

void pv_glViewport(GLint x, GLint y, GLsizei width, GLsizei height) {
  set(g.viewport, x, y, width, height);
  glViewport(x, y, width, height);
}

void pv_glScissor(GLint x, GLint y, GLsizei width, GLsizei height) {
  set(g.scissor, x, y, width, height);
  glScissor(x, y, width, height);
}

void pv_glBlendEquation(GLenum mode) {
  set(g.blend_eq_rgb, static_cast<GLint>(mode));
  set(g.blend_eq_alpha, static_cast<GLint>(mode));
  glBlendEquation(mode);
}

void pv_glBlendEquationSeparate(GLenum rgb, GLenum alpha) {
  set(g.blend_eq_rgb, static_cast<GLint>(rgb));
  set(g.blend_eq_alpha, static_cast<GLint>(alpha));
  glBlendEquationSeparate(rgb, alpha);
}

void pv_glBlendFunc(GLenum src, GLenum dst) {
  set(g.blend_src_rgb, static_cast<GLint>(src));
  set(g.blend_src_alpha, static_cast<GLint>(src));
  set(g.blend_dst_rgb, static_cast<GLint>(dst));
  set(g.blend_dst_alpha, static_cast<GLint>(dst));
  glBlendFunc(src, dst);
}

void pv_glBlendFuncSeparate(GLenum src_rgb, GLenum dst_rgb, GLenum src_alpha, GLenum dst_alpha) {
  set(g.blend_src_rgb, static_cast<GLint>(src_rgb));
  set(g.blend_dst_rgb, static_cast<GLint>(dst_rgb));
  set(g.blend_src_alpha, static_cast<GLint>(src_alpha));
  set(g.blend_dst_alpha, static_cast<GLint>(dst_alpha));
  glBlendFuncSeparate(src_rgb, dst_rgb, src_alpha, dst_alpha);
}

// A deleted object is unbound wherever it was bound.
void pv_glDeleteTextures(GLsizei n, const GLuint* textures) {
  forget_deleted(g.texture_2d, kUnits, n, textures);
  glDeleteTextures(n, textures);
}

void pv_glDeleteBuffers(GLsizei n, const GLuint* buffers) {
  forget_deleted(&g.array_buffer, 1, n, buffers);
  glDeleteBuffers(n, buffers);
}

void pv_glDeleteVertexArrays(GLsizei n, const GLuint* arrays) {
  forget_deleted(&g.vertex_array, 1, n, arrays);
  glDeleteVertexArrays(n, arrays);
}

void pv_glDeleteProgram(GLuint program) {
  forget_deleted(&g.program, 1, 1, &program);
  glDeleteProgram(program);
}

void pv_glDeleteSamplers(GLsizei n, const GLuint* samplers) {
  forget_deleted(g.sampler, kUnits, n, samplers);
  glDeleteSamplers(n, samplers);
}

}  // extern "C"
