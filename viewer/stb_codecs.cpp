#include "stb_codecs.hpp"

#include <algorithm>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG  // the zlib decoder, nothing else
#define STBI_NO_STDIO
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>

namespace pyroscope::viewer {

InflateFunction stb_inflate() {
  return [](ByteSpan in, uint64_t max, std::string* out) -> Status {
    // stb decodes into a fixed buffer and cannot say "too small" apart from "corrupt": the buffer
    // grows by doubling (16 times the input to start) up to the cap, instead of taking the cap at once.
    if (in.size > size_t(INT32_MAX)) return Status(StatusCode::too_large, "gzip: the compressed data is over 2 GiB");
    const uint64_t limit = std::min<uint64_t>(max, INT32_MAX);
    uint64_t size = std::min<uint64_t>(limit, std::max<uint64_t>(uint64_t(in.size) * 16, 1 << 20));
    while (true) {
      out->resize(size_t(size));
      const int n = stbi_zlib_decode_noheader_buffer(&(*out)[0], int(size), reinterpret_cast<const char*>(in.data),
                                                     int(in.size));
      if (n >= 0) {
        out->resize(size_t(n));
        return Status();
      }
      if (size >= limit) {
        out->clear();
        return Status(StatusCode::too_large, "gzip: inflates past " + std::to_string(limit) + " bytes, or is corrupt");
      }
      size = std::min(limit, size * 2);
    }
  };
}

DeflateFunction stb_deflate() {
  return [](ByteSpan in, std::string* out) -> Status {
    if (in.size > size_t(INT32_MAX)) return Status(StatusCode::too_large, "deflate: input over 2 GiB");
    int n = 0;
    unsigned char* z = stbi_zlib_compress(const_cast<unsigned char*>(in.data), int(in.size), &n, 6);
    if (!z || n < 6) return Status(StatusCode::io_error, "deflate failed");
    out->assign(reinterpret_cast<const char*>(z) + 2, size_t(n) - 6);  // without the zlib header and Adler-32
    STBIW_FREE(z);
    return Status();
  };
}

}  // namespace pyroscope::viewer
