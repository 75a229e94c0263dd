// [SECTION] Implementation: helpers (varint, crc32, regex) ========================================

const char* status_string(StatusCode code) {
  switch (code) {
#define PYROSCOPE_X(name, text) \
  case StatusCode::name:        \
    return text;
    PYROSCOPE_STATUS_CODES(PYROSCOPE_X)
#undef PYROSCOPE_X
  }
  return "unknown status";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  std::string s = status_string(code_);
  if (!message_.empty()) s += ": " + message_;
  return s;
}

namespace detail {

inline Status error(StatusCode code, std::string message) { return Status(code, std::move(message)); }

inline void put_varint(std::string* out, uint64_t v) {
  char buf[10];
  int n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

inline void put_u32(std::string* out, uint32_t v) {
  char b[4] = {char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
  out->append(b, 4);
}
inline void put_u64(std::string* out, uint64_t v) {
  put_u32(out, uint32_t(v));
  put_u32(out, uint32_t(v >> 32));
}
inline uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) | uint64_t(get_u32(p + 4)) << 32; }

// Bounds-checked reader over untrusted bytes: every read either succeeds or sets failed.
struct ByteReader {
  const uint8_t* p;
  const uint8_t* end;
  bool failed = false;

  ByteReader(const uint8_t* data, size_t size) : p(data), end(data + size) {}
  size_t remaining() const { return size_t(end - p); }
  bool done() const { return p == end; }
  // Most fields of a tree fit in one byte: that case stays small enough to inline into the decoder's
  // loop, which reads millions of them when a viewer opens a big profile.
  uint64_t varint() {
    if (p != end && *p < 0x80) return *p++;
    return varint_slow();
  }
  uint64_t varint_slow() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p == end) break;
      uint8_t b = *p++;
      if (shift == 63 && b > 1) break;  // more than 64 bits
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    failed = true;
    p = end;
    return 0;
  }
  std::string_view bytes(uint64_t n) {
    if (n > remaining()) {
      failed = true;
      p = end;
      return {};
    }
    std::string_view s(reinterpret_cast<const char*>(p), size_t(n));
    p += n;
    return s;
  }
};

// Slicing-by-8 tables: entries[k][b] is the CRC of byte b followed by k zero bytes, so eight input
// bytes cost eight table lookups and no loop-carried byte chain. Opening a file checks every byte,
// and in the browser (before the engine has optimized the code) the byte-at-a-time loop was most
// of the time a 6 MB file took to open.
struct Crc32Table {
  uint32_t entries[8][256];
  Crc32Table() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      entries[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
      for (int k = 1; k < 8; k++) entries[k][i] = (entries[k - 1][i] >> 8) ^ entries[0][entries[k - 1][i] & 0xff];
  }
};

// ---- Packing: LZ77 with an adaptive binary range coder -------------------------------------------
//
// For the symbol table, whose trie shares prefixes but not what repeats inside names: a C++ profile's
// names are template instantiations that spell the same arguments again and again
// (`llvm::PatternMatch::BinaryOp_match<llvm::PatternMatch::bind_ty<llvm::Value>, ...`). Matches of 2
// to 273 bytes at distances up to 1 MiB, the last distance reusable in a bit; literals modelled by the
// previous byte; everything through LZMA's binary range coder (11-bit probabilities). Written here
// because the header has no dependencies; the output is checked when read like any other input.

class RangeEncoder {
 public:
  explicit RangeEncoder(std::string* out) : out_(out) {}
  void bit(uint16_t* probability, unsigned value) {
    const uint32_t bound = (range_ >> 11) * *probability;
    if (value == 0) {
      range_ = bound;
      *probability = uint16_t(*probability + ((2048 - *probability) >> 5));
    } else {
      low_ += bound;
      range_ -= bound;
      *probability = uint16_t(*probability - (*probability >> 5));
    }
    while (range_ < (1u << 24)) {
      range_ <<= 8;
      shift_low();
    }
  }
  void direct_bits(uint32_t value, int count) {
    for (int i = count; i-- > 0;) {
      range_ >>= 1;
      if ((value >> i) & 1) low_ += range_;
      while (range_ < (1u << 24)) {
        range_ <<= 8;
        shift_low();
      }
    }
  }
  void finish() {
    for (int i = 0; i < 5; i++) shift_low();
  }

 private:
  // LZMA's: a byte is held back while a carry could still reach it (a run of 0xff bytes waits too).
  void shift_low() {
    if (uint32_t(low_) < 0xff000000u || (low_ >> 32) != 0) {
      const uint8_t carry = uint8_t(low_ >> 32);
      uint8_t held = cache_;
      do {
        out_->push_back(char(uint8_t(held + carry)));
        held = 0xff;
      } while (--cache_size_ != 0);
      cache_ = uint8_t(low_ >> 24);
    }
    cache_size_++;
    low_ = (low_ & 0x00ffffffu) << 8;
  }
  std::string* out_;
  uint64_t low_ = 0;
  uint32_t range_ = 0xffffffffu;
  uint8_t cache_ = 0;
  uint64_t cache_size_ = 1;
};

// Reads what RangeEncoder wrote; past the end of its input it reads zeros and sets failed, so a
// damaged stream is noticed by its caller's checks, never read beyond.
class RangeDecoder {
 public:
  RangeDecoder(const uint8_t* data, size_t size) : p_(data), end_(data + size) {
    for (int i = 0; i < 5; i++) code_ = (code_ << 8) | next();
  }
  unsigned bit(uint16_t* probability) {
    const uint32_t bound = (range_ >> 11) * *probability;
    unsigned value;
    if (code_ < bound) {
      range_ = bound;
      *probability = uint16_t(*probability + ((2048 - *probability) >> 5));
      value = 0;
    } else {
      code_ -= bound;
      range_ -= bound;
      *probability = uint16_t(*probability - (*probability >> 5));
      value = 1;
    }
    while (range_ < (1u << 24)) {
      range_ <<= 8;
      code_ = (code_ << 8) | next();
    }
    return value;
  }
  uint32_t direct_bits(int count) {
    uint32_t value = 0;
    for (int i = 0; i < count; i++) {
      range_ >>= 1;
      const uint32_t one = code_ >= range_ ? 1u : 0u;
      if (one) code_ -= range_;
      value = (value << 1) | one;
      while (range_ < (1u << 24)) {
        range_ <<= 8;
        code_ = (code_ << 8) | next();
      }
    }
    return value;
  }
  bool failed() const { return failed_; }

 private:
  uint8_t next() {
    if (p_ == end_) {
      failed_ = true;
      return 0;
    }
    return *p_++;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  uint32_t range_ = 0xffffffffu;
  uint32_t code_ = 0;
  bool failed_ = false;
};

// The adaptive models of one packed stream, the same on both sides.
struct PackModels {
  static constexpr int kMinMatch = 2;
  static constexpr int kMaxMatch = 273;
  static constexpr int kDistanceBits = 20;  // window 1 MiB
  uint16_t is_match[2];                     // by "the last item was a match"
  uint16_t is_rep[2];
  uint16_t literal[256][256];               // bit tree per previous byte
  uint16_t length_choice[2];
  uint16_t length_low[8], length_mid[8], length_high[256];
  uint16_t slot[64];                        // distance's bit length (bit tree of 6 bits)
  PackModels() {
    uint16_t* all[] = {is_match, is_rep, length_choice};
    for (uint16_t* a : all) a[0] = a[1] = 1024;
    for (auto& row : literal)
      for (uint16_t& v : row) v = 1024;
    for (uint16_t& v : length_low) v = 1024;
    for (uint16_t& v : length_mid) v = 1024;
    for (uint16_t& v : length_high) v = 1024;
    for (uint16_t& v : slot) v = 1024;
  }
};

template <class Coder>
inline void pack_tree_bits(Coder& rc, uint16_t* probs, int bits, unsigned value) {
  unsigned node = 1;
  for (int i = bits; i-- > 0;) {
    const unsigned b = (value >> i) & 1;
    rc.bit(&probs[node], b);
    node = (node << 1) | b;
  }
}

inline unsigned unpack_tree_bits(RangeDecoder& rc, uint16_t* probs, int bits) {
  unsigned node = 1;
  for (int i = 0; i < bits; i++) node = (node << 1) | rc.bit(&probs[node]);
  return node - (1u << bits);
}

inline void pack_length(RangeEncoder& rc, PackModels& m, unsigned length) {
  unsigned v = length - PackModels::kMinMatch;  // 0..271
  if (v < 8) {
    rc.bit(&m.length_choice[0], 0);
    pack_tree_bits(rc, m.length_low, 3, v);
  } else if (v < 16) {
    rc.bit(&m.length_choice[0], 1);
    rc.bit(&m.length_choice[1], 0);
    pack_tree_bits(rc, m.length_mid, 3, v - 8);
  } else {
    rc.bit(&m.length_choice[0], 1);
    rc.bit(&m.length_choice[1], 1);
    pack_tree_bits(rc, m.length_high, 8, v - 16);
  }
}

inline unsigned unpack_length(RangeDecoder& rc, PackModels& m) {
  if (!rc.bit(&m.length_choice[0])) return PackModels::kMinMatch + unpack_tree_bits(rc, m.length_low, 3);
  if (!rc.bit(&m.length_choice[1])) return PackModels::kMinMatch + 8 + unpack_tree_bits(rc, m.length_mid, 3);
  return PackModels::kMinMatch + 16 + unpack_tree_bits(rc, m.length_high, 8);
}

// Compresses bytes; unpack() gives them back. Deterministic (the same input gives the same output).
inline std::string pack(const uint8_t* data, size_t size) {
  std::string out;
  RangeEncoder rc(&out);
  auto models = std::make_unique<PackModels>();
  PackModels& m = *models;
  const size_t window = size_t(1) << PackModels::kDistanceBits;
  constexpr int kHashBits = 16;
  constexpr int kChainDepth = 48;
  std::vector<int32_t> head(size_t(1) << kHashBits, -1), previous(size);
  auto hash3 = [&](size_t i) {
    const uint32_t v = uint32_t(data[i]) | uint32_t(data[i + 1]) << 8 | uint32_t(data[i + 2]) << 16;
    return (v * 2654435761u) >> (32 - kHashBits);
  };
  auto insert = [&](size_t i) {
    if (i + 2 >= size) return;
    const uint32_t h = hash3(i);
    previous[i] = head[h];
    head[h] = int32_t(i);
  };
  auto match_length = [&](size_t at, size_t from) {
    size_t n = 0;
    const size_t limit = std::min<size_t>(PackModels::kMaxMatch, size - at);
    while (n < limit && data[from + n] == data[at + n]) n++;
    return n;
  };
  // The longest match at i (at the last distance first: it costs a bit).
  auto best_match = [&](size_t i, size_t rep, size_t* distance, bool* is_rep) {
    size_t best = 0;
    *is_rep = false;
    if (rep > 0 && rep <= i && rep < window) {
      best = match_length(i, i - rep);
      if (best >= size_t(PackModels::kMinMatch)) {
        *distance = rep;
        *is_rep = true;
      } else {
        best = 0;
      }
    }
    if (i + 2 < size) {
      int depth = kChainDepth;
      for (int32_t c = head[hash3(i)]; c >= 0 && depth-- > 0 && i - size_t(c) < window; c = previous[size_t(c)]) {
        const size_t n = match_length(i, size_t(c));
        // A new distance costs ~20 bits more than the last one: worth it only when clearly longer.
        if (n > best + (*is_rep ? 2 : 0) && n >= 3) {
          best = n;
          *distance = i - size_t(c);
          *is_rep = *distance == rep;
        }
      }
    }
    return best >= size_t(PackModels::kMinMatch) ? best : size_t(0);
  };
  size_t i = 0, rep = 0;
  unsigned after_match = 0;
  uint8_t previous_byte = 0;
  while (i < size) {
    size_t distance = 0;
    bool is_rep = false;
    size_t length = best_match(i, rep, &distance, &is_rep);
    if (length > 0 && length < 32 && i + 1 < size) {
      // Lazy evaluation: a longer match one byte later is better than this one and a literal more.
      size_t next_distance = 0;
      bool next_rep = false;
      insert(i);
      const size_t next = best_match(i + 1, rep, &next_distance, &next_rep);
      if (next > length + 1) length = 0;
    } else {
      insert(i);
    }
    if (length == 0) {
      rc.bit(&m.is_match[after_match], 0);
      pack_tree_bits(rc, m.literal[previous_byte], 8, data[i]);
      previous_byte = data[i];
      after_match = 0;
      i++;
      continue;
    }
    rc.bit(&m.is_match[after_match], 1);
    rc.bit(&m.is_rep[after_match], is_rep ? 1 : 0);
    pack_length(rc, m, unsigned(length));
    if (!is_rep) {
      // distance >= 1: its bit length (1..20) in a bit tree, then the bits below its top bit.
      int bits = 0;
      while ((size_t(1) << bits) <= distance) bits++;
      pack_tree_bits(rc, m.slot, 6, unsigned(bits));
      if (bits > 1) rc.direct_bits(uint32_t(distance) & ((1u << (bits - 1)) - 1), bits - 1);
      rep = distance;
    }
    for (size_t k = 1; k < length; k++) insert(i + k);
    i += length;
    previous_byte = data[i - 1];
    after_match = 1;
  }
  rc.finish();
  return out;
}

// The bytes pack() made of exactly `size` bytes; corrupt_file when the stream does not give them.
inline Status unpack(ByteSpan packed, size_t size, std::string* out) {
  out->assign(size, '\0');
  RangeDecoder rc(packed.data, packed.size);
  auto models = std::make_unique<PackModels>();
  PackModels& m = *models;
  size_t i = 0, rep = 0;
  unsigned after_match = 0;
  uint8_t previous_byte = 0;
  char* o = &(*out)[0];
  while (i < size && !rc.failed()) {
    if (!rc.bit(&m.is_match[after_match])) {
      const uint8_t byte = uint8_t(unpack_tree_bits(rc, m.literal[previous_byte], 8));
      o[i++] = char(byte);
      previous_byte = byte;
      after_match = 0;
      continue;
    }
    const bool is_rep = rc.bit(&m.is_rep[after_match]) != 0;
    const size_t length = unpack_length(rc, m);
    if (!is_rep) {
      const unsigned bits = unpack_tree_bits(rc, m.slot, 6);
      if (bits == 0 || bits > unsigned(PackModels::kDistanceBits)) return error(StatusCode::corrupt_file, "packed data: bad distance");
      rep = (size_t(1) << (bits - 1)) | (bits > 1 ? rc.direct_bits(int(bits) - 1) : 0);
    }
    if (rep == 0 || rep > i || length > size - i)
      return error(StatusCode::corrupt_file, "packed data: a match outside the data");
    for (size_t k = 0; k < length; k++, i++) o[i] = o[i - rep];  // may overlap itself: byte by byte
    previous_byte = uint8_t(o[i - 1]);
    after_match = 1;
  }
  if (rc.failed() || i != size) return error(StatusCode::corrupt_file, "packed data: truncated");
  return {};
}

inline uint32_t crc32(const void* data, size_t size, uint32_t crc = 0) {
  static const Crc32Table table;
  const auto& t = table.entries;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (; size >= 8; size -= 8, p += 8) {
    const uint32_t low = crc ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    const uint32_t high = uint32_t(p[4]) | uint32_t(p[5]) << 8 | uint32_t(p[6]) << 16 | uint32_t(p[7]) << 24;
    crc = t[7][low & 0xff] ^ t[6][(low >> 8) & 0xff] ^ t[5][(low >> 16) & 0xff] ^ t[4][low >> 24] ^
          t[3][high & 0xff] ^ t[2][(high >> 8) & 0xff] ^ t[1][(high >> 16) & 0xff] ^ t[0][high >> 24];
  }
  for (; size > 0; size--, p++) crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(std::string_view s) {
  // FNV-1a over 8-byte words: fast enough, no dependency, stable across platforms.
  uint64_t h = 0xcbf29ce484222325ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < s.size(); i++) h = (h ^ uint8_t(s[i])) * 0x100000001b3ull;
  return mix64(h);
}

inline bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

inline std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  out += '"';
  return out;
}

// A small regular-expression engine (Thompson NFA, run as a Pike VM): linear time, no exceptions,
// so a bad pattern is a Status and a hostile one cannot blow up. Matches whole strings only, as
// Prometheus and Pyroscope tag matchers do.
class Regex {
 public:
  Status compile(std::string_view pattern) {
    pattern_.assign(pattern.data(), pattern.size());
    pos_ = 0;
    program_.clear();
    classes_.clear();
    Status st;
    Frag f = parse_alternation(&st, 0);
    if (!st.ok()) return st;
    if (pos_ != pattern_.size()) return fail("unexpected ')'");
    uint32_t match = emit({Op::match, 0, 0, 0});
    patch(f, match);
    start_ = f.start;
    if (program_.size() > 100000) return fail("pattern too large");
    return {};
  }

  const std::string& pattern() const { return pattern_; }

  bool full_match(std::string_view text) const {
    std::vector<uint32_t> current, next;
    std::vector<uint32_t> mark(program_.size(), UINT32_MAX);
    std::vector<uint32_t> stack;
    auto add = [&](std::vector<uint32_t>& list, uint32_t pc, uint32_t gen) {
      stack.push_back(pc);
      while (!stack.empty()) {
        uint32_t i = stack.back();
        stack.pop_back();
        if (mark[i] == gen) continue;
        mark[i] = gen;
        const Inst& in = program_[i];
        if (in.op == Op::jump) {
          stack.push_back(in.x);
        } else if (in.op == Op::split) {
          stack.push_back(in.y);
          stack.push_back(in.x);
        } else {
          list.push_back(i);
        }
      }
    };
    uint32_t gen = 0;
    add(current, start_, gen);
    for (size_t k = 0; k <= text.size(); k++) {
      if (current.empty()) return false;
      gen++;
      next.clear();
      for (uint32_t i : current) {
        const Inst& in = program_[i];
        if (in.op == Op::match) {
          if (k == text.size()) return true;
          continue;
        }
        if (k == text.size()) continue;
        unsigned char c = static_cast<unsigned char>(text[k]);
        bool ok = false;
        if (in.op == Op::byte) ok = c == in.x;
        else if (in.op == Op::any) ok = c != '\n';
        else if (in.op == Op::cls) ok = classes_[in.x].test(c);
        if (ok) add(next, i + 1, gen);
      }
      std::swap(current, next);
    }
    return false;
  }

 private:
  enum class Op : uint8_t { byte, any, cls, split, jump, match };
  struct Inst {
    Op op;
    uint32_t x, y, unused;
  };
  struct ByteSet {
    uint64_t bits[4] = {0, 0, 0, 0};
    void set(unsigned c) { bits[c >> 6] |= 1ull << (c & 63); }
    bool test(unsigned c) const { return (bits[c >> 6] >> (c & 63)) & 1; }
  };
  // A fragment: start instruction and the list of dangling exits to patch (instructions whose x or y
  // is still unset, encoded as index*2 + (0 for x, 1 for y)).
  struct Frag {
    uint32_t start;
    std::vector<uint32_t> exits;
  };

  std::string pattern_;  // owned: a compiled Regex outlives the text it was parsed from
  size_t pos_ = 0;
  std::vector<Inst> program_;
  std::vector<ByteSet> classes_;
  uint32_t start_ = 0;

  Status fail(const char* what) const {
    return error(StatusCode::invalid_argument,
                 std::string("bad regex '") + std::string(pattern_) + "' at " + std::to_string(pos_) + ": " + what);
  }
  uint32_t emit(Inst in) {
    program_.push_back(in);
    return uint32_t(program_.size() - 1);
  }
  void patch(const Frag& f, uint32_t target) {
    for (uint32_t e : f.exits) {
      if (e & 1) program_[e >> 1].y = target;
      else program_[e >> 1].x = target;
    }
  }
  // Copies a fragment's instructions (for {n,m} repetition) by re-parsing its source text.
  Frag parse_alternation(Status* st, int depth) {
    if (depth > 200) {
      *st = fail("nesting too deep");
      return {0, {}};
    }
    Frag left = parse_concat(st, depth);
    while (st->ok() && pos_ < pattern_.size() && pattern_[pos_] == '|') {
      pos_++;
      Frag right = parse_concat(st, depth);
      if (!st->ok()) break;
      uint32_t s = emit({Op::split, left.start, right.start, 0});
      Frag f{s, left.exits};
      f.exits.insert(f.exits.end(), right.exits.begin(), right.exits.end());
      left = std::move(f);
    }
    return left;
  }
  Frag empty_frag() {
    uint32_t j = emit({Op::jump, 0, 0, 0});
    return {j, {j * 2}};
  }
  Frag parse_concat(Status* st, int depth) {
    Frag result = empty_frag();
    while (st->ok() && pos_ < pattern_.size() && pattern_[pos_] != '|' && pattern_[pos_] != ')') {
      size_t atom_begin = pos_;
      Frag atom = parse_atom(st, depth);
      if (!st->ok()) break;
      size_t atom_end = pos_;
      atom = parse_quantifier(st, depth, std::move(atom), atom_begin, atom_end);
      if (!st->ok()) break;
      patch(result, atom.start);
      result.exits = std::move(atom.exits);
    }
    return result;
  }
  Frag reparse_atom(Status* st, int depth, size_t begin, size_t end) {
    size_t saved = pos_;
    pos_ = begin;
    Frag f = parse_atom(st, depth);
    (void)end;
    pos_ = saved;
    return f;
  }
  Frag star(Frag atom) {
    uint32_t s = emit({Op::split, atom.start, 0, 0});
    patch(atom, s);
    return {s, {s * 2 + 1}};
  }
  Frag optional(Frag atom) {
    uint32_t s = emit({Op::split, atom.start, 0, 0});
    Frag f{s, atom.exits};
    f.exits.push_back(s * 2 + 1);
    return f;
  }
  Frag parse_quantifier(Status* st, int depth, Frag atom, size_t atom_begin, size_t atom_end) {
    if (pos_ >= pattern_.size()) return atom;
    char q = pattern_[pos_];
    if (q == '*') {
      pos_++;
      return star(std::move(atom));
    }
    if (q == '+') {
      pos_++;
      uint32_t s = emit({Op::split, atom.start, 0, 0});
      patch(atom, s);
      return {atom.start, {s * 2 + 1}};
    }
    if (q == '?') {
      pos_++;
      return optional(std::move(atom));
    }
    if (q == '{') {
      size_t p = pos_ + 1;
      auto number = [&](int* out) {
        size_t b = p;
        long v = 0;
        while (p < pattern_.size() && pattern_[p] >= '0' && pattern_[p] <= '9' && v <= 1000) v = v * 10 + (pattern_[p++] - '0');
        *out = int(v);
        return p > b;
      };
      int lo = 0, hi = 0;
      if (!number(&lo)) return atom;  // a literal '{', as RE2 treats it
      bool unbounded = false;
      if (p < pattern_.size() && pattern_[p] == ',') {
        p++;
        if (!number(&hi)) unbounded = true;
      } else {
        hi = lo;
      }
      if (p >= pattern_.size() || pattern_[p] != '}') return atom;
      pos_ = p + 1;
      if (lo > 1000 || hi > 1000 || (!unbounded && hi < lo)) {
        *st = fail("bad repetition count");
        return atom;
      }
      // x{lo,hi} = x x ... x (lo times) then (x?){hi-lo} or x* when unbounded.
      Frag result = empty_frag();
      auto append = [&](Frag f) {
        patch(result, f.start);
        result.exits = std::move(f.exits);
      };
      bool first = true;
      auto next_copy = [&]() {
        if (first) {
          first = false;
          return std::move(atom);
        }
        return reparse_atom(st, depth, atom_begin, atom_end);
      };
      for (int i = 0; i < lo && st->ok(); i++) append(next_copy());
      if (unbounded) {
        append(star(next_copy()));
      } else {
        for (int i = lo; i < hi && st->ok(); i++) append(optional(next_copy()));
      }
      if (first) {  // x{0} or x{0,0}: the parsed atom is never entered
        (void)atom;
      }
      if (program_.size() > 100000) *st = fail("pattern too large");
      return result;
    }
    return atom;
  }
  Frag single(ByteSet set) {
    classes_.push_back(set);
    uint32_t i = emit({Op::cls, uint32_t(classes_.size() - 1), 0, 0});
    emit({Op::jump, 0, 0, 0});  // i + 1 continues; the jump's target is the fragment exit
    return {i, {(i + 1) * 2}};
  }
  static ByteSet perl_class(char c) {
    ByteSet s;
    char lower = char(c | 0x20);
    for (unsigned b = 0; b < 256; b++) {
      bool in = lower == 'd' ? (b >= '0' && b <= '9')
                : lower == 's' ? (b == ' ' || (b >= '\t' && b <= '\r'))
                               : ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b == '_');
      if (in != (c >= 'A' && c <= 'Z')) s.set(b);
    }
    return s;
  }
  bool escape_byte(char c, unsigned* out) {
    switch (c) {
      case 'n': *out = '\n'; return true;
      case 't': *out = '\t'; return true;
      case 'r': *out = '\r'; return true;
      case 'f': *out = '\f'; return true;
      case 'v': *out = '\v'; return true;
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return false;
        *out = static_cast<unsigned char>(c);
        return true;
    }
  }
  Frag parse_atom(Status* st, int depth) {
    char c = pattern_[pos_++];
    if (c == '(') {
      if (pattern_.substr(pos_, 2) == "?:") pos_ += 2;
      Frag inner = parse_alternation(st, depth + 1);
      if (!st->ok()) return inner;
      if (pos_ >= pattern_.size() || pattern_[pos_] != ')') {
        *st = fail("missing ')'");
        return inner;
      }
      pos_++;
      return inner;
    }
    if (c == '*' || c == '+' || c == '?') {
      pos_--;
      *st = fail("quantifier without anything to repeat");
      return {0, {}};
    }
    if (c == '.') {
      uint32_t i = emit({Op::any, 0, 0, 0});
      emit({Op::jump, 0, 0, 0});
      return {i, {(i + 1) * 2}};
    }
    if (c == '^' || c == '$') return empty_frag();  // matches are anchored anyway
    if (c == '[') return parse_class(st);
    if (c == '\\') {
      if (pos_ >= pattern_.size()) {
        *st = fail("trailing backslash");
        return {0, {}};
      }
      char e = pattern_[pos_++];
      if (e == 'd' || e == 'D' || e == 's' || e == 'S' || e == 'w' || e == 'W') return single(perl_class(e));
      unsigned b;
      if (!escape_byte(e, &b)) {
        *st = fail("unsupported escape");
        return {0, {}};
      }
      ByteSet s;
      s.set(b);
      return single(s);
    }
    uint32_t i = emit({Op::byte, static_cast<unsigned char>(c), 0, 0});
    emit({Op::jump, 0, 0, 0});
    return {i, {(i + 1) * 2}};
  }
  Frag parse_class(Status* st) {
    ByteSet s;
    bool negate = false;
    if (pos_ < pattern_.size() && pattern_[pos_] == '^') {
      negate = true;
      pos_++;
    }
    bool first = true;
    while (true) {
      if (pos_ >= pattern_.size()) {
        *st = fail("missing ']'");
        return {0, {}};
      }
      char c = pattern_[pos_++];
      if (c == ']' && !first) break;
      first = false;
      unsigned lo;
      if (c == '\\') {
        if (pos_ >= pattern_.size()) {
          *st = fail("trailing backslash");
          return {0, {}};
        }
        char e = pattern_[pos_++];
        if (e == 'd' || e == 'D' || e == 's' || e == 'S' || e == 'w' || e == 'W') {
          ByteSet p = perl_class(e);
          for (int k = 0; k < 4; k++) s.bits[k] |= p.bits[k];
          continue;
        }
        if (!escape_byte(e, &lo)) {
          *st = fail("unsupported escape in class");
          return {0, {}};
        }
      } else {
        lo = static_cast<unsigned char>(c);
      }
      unsigned hi = lo;
      if (pos_ + 1 < pattern_.size() && pattern_[pos_] == '-' && pattern_[pos_ + 1] != ']') {
        pos_++;
        char h = pattern_[pos_++];
        if (h == '\\') {
          if (pos_ >= pattern_.size() || !escape_byte(pattern_[pos_++], &hi)) {
            *st = fail("bad range end");
            return {0, {}};
          }
        } else {
          hi = static_cast<unsigned char>(h);
        }
        if (hi < lo) {
          *st = fail("range out of order");
          return {0, {}};
        }
      }
      for (unsigned b = lo; b <= hi; b++) s.set(b);
    }
    if (negate)
      for (int k = 0; k < 4; k++) s.bits[k] = ~s.bits[k];
    return single(s);
  }
};

}  // namespace detail

