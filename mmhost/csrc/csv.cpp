// A large plain CSV body -> the encoded rows of one input schema (mmhost/codecs/table.py holds
// the contract; mmhost/codecs/rows.py the per-row path it must equal). Numbers are parsed as
// std::from_chars parses them (exact like Python's float(); see cells::parse_double),
// categories are looked up among the column's categories (cells::Categories: a scan of a few,
// a hash map of many) and written as a 1 at offset + index. Where the CPU has AVX2 a block's
// field ends are indexed first and each short cell is decided from one 16-byte load
// (encode_indexed); else, or for a body with a CR, one forward pass (encode_lines).
//
// "Plain" is checked as the bytes go: no quote, line ends \n or \r\n, every line the schema's
// number of fields, no blank line inside. A body that is not plain, and every cell the per-row
// path would refuse or treat specially (a number that does not parse whole, one past float32,
// a missing value the column has no fill for, an unknown category the column refuses, a cell
// with non-ASCII bytes at its ends, which Python's strip() may trim), ends the call with
// ok = false: the caller then takes the per-row path, which names the row and the column.

#include "cells.h"
#include "mmhost.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>

namespace mmhost {
namespace {

constexpr size_t kFieldLimit = 131072;  // Python's csv.field_size_limit() default

using cells::is_space;

bool ascii_ends(std::string_view s) {
  return s.empty() || (static_cast<unsigned char>(s.front()) < 0x80 &&
                       static_cast<unsigned char>(s.back()) < 0x80);
}

// The end of the field at p: the next ',', '\n' or '\r' (a plain loop: fields are a few bytes,
// where a memchr call per field costs more than its bytes)
inline const char* field_end(const char* p, const char* end) {
  while (p < end && *p != ',' && *p != '\n' && *p != '\r') ++p;
  return p;
}

// A field's separator check: the field [f, fe) is column j of ncol; p moves past its separator
// (false: too few fields, too many, or a CR inside a line: the caller leaves the body)
inline bool step(const char* fe, const char* end, size_t j, size_t ncol, const char*& p) {
  if (j + 1 < ncol) {  // a ',' ends it: else too few fields, or a CR inside a line
    if (fe == end || *fe != ',') return false;
    p = fe + 1;
  } else if (fe == end || *fe == '\n') {  // the line's end ends the last
    p = fe + (fe != end);
  } else if (*fe == '\r' && fe + 1 < end && fe[1] == '\n') {
    p = fe + 2;
  } else {
    return false;  // too many fields, or a lone CR (which ends a line too)
  }
  return true;
}

// Column j's cell [f, fe) into the encoded row dst
template <typename T>
inline bool put_cell(const RowSchema& schema, const std::vector<cells::Categories>& lookup,
                     size_t j, const char* f, const char* fe, T* dst) {
  if (static_cast<size_t>(fe - f) > kFieldLimit) return false;  // the csv module refuses it
  const std::string_view cell = cells::trim(std::string_view(f, static_cast<size_t>(fe - f)));
  if (!ascii_ends(cell)) return false;
  if (schema.kinds[j] == 0) {  // a number ("nan" parses as NaN, as a missing value reads)
    double x = 0.0;
    if (!cells::parse_double(cell, x)) {
      if (!cells::is_missing(cell)) return false;
      x = std::numeric_limits<double>::quiet_NaN();
    }
    return cells::put_number(schema, j, x, dst);
  }
  const int64_t k = lookup[j].find(cell);  // a category
  return cells::put_category(schema, j, k, k < 0 && cells::is_missing(cell), dst);
}

// One forward pass: each field is found, checked and written as the bytes go.
template <typename T>
bool encode_lines(std::string_view body, const RowSchema& schema,
                  const std::vector<cells::Categories>& lookup, int64_t n, int64_t width,
                  T* out) {
  const size_t ncol = schema.kinds.size();
  const char* p = body.data();
  const char* const end = p + body.size();
  for (int64_t row = 0; row < n; ++row) {
    T* dst = out + row * width;
    for (size_t j = 0; j < ncol; ++j) {
      const char* const f = p;
      const char* const fe = field_end(p, end);
      if (!step(fe, end, j, ncol, p) || !put_cell(schema, lookup, j, f, fe, dst)) return false;
    }
  }
  return p == end;
}

#if defined(__x86_64__)
constexpr size_t kBlock = 16384;  // bytes indexed at a time (their field ends stay in L1)

// The field ends (',' and '\n') among the 64 bytes at p, a bit each; cr gains any '\r'
MMHOST_AVX2 inline uint64_t field_ends64(const char* p, uint32_t& cr) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
  const __m256i comma = _mm256_set1_epi8(','), lf = _mm256_set1_epi8('\n');
  const __m256i ret = _mm256_set1_epi8('\r');
  cr |= static_cast<uint32_t>(_mm256_movemask_epi8(
      _mm256_or_si256(_mm256_cmpeq_epi8(a, ret), _mm256_cmpeq_epi8(b, ret))));
  const uint32_t lo = static_cast<uint32_t>(
      _mm256_movemask_epi8(_mm256_or_si256(_mm256_cmpeq_epi8(a, comma), _mm256_cmpeq_epi8(a, lf))));
  const uint32_t hi = static_cast<uint32_t>(
      _mm256_movemask_epi8(_mm256_or_si256(_mm256_cmpeq_epi8(b, comma), _mm256_cmpeq_epi8(b, lf))));
  return lo | static_cast<uint64_t>(hi) << 32;
}

// The offsets (base + each set bit of mask) into out, eight at a time without a branch on the
// count (out has room for 64 more than it keeps); returns how many
inline size_t flatten(uint64_t mask, uint32_t base, uint32_t* out) {
  const size_t count = static_cast<size_t>(__builtin_popcountll(mask));
  for (size_t i = 0; i < count; i += 8) {
    for (int k = 0; k < 8; ++k) {
      out[i + k] = base + static_cast<uint32_t>(__builtin_ctzll(mask | (1ull << 63)));
      mask &= mask - 1;
    }
  }
  return count;
}

// Two passes a block of 16 KB: one finds every field end (64 bytes a step); the other reads
// the fields between them, none waiting on the one before it, and a number in the plainest
// shape straight from one 16-byte load (cells::plain_number): no branch on a field's length or
// its digits, which mispredict in the byte loops. A body with a '\r' anywhere returns -1 (the
// one-pass encode_lines takes it); 0: not plain; 1: done.
template <typename T>
MMHOST_AVX2 int encode_indexed(std::string_view body, const RowSchema& schema,
                               const std::vector<cells::Categories>& lookup, int64_t n,
                               int64_t width, T* out) {
  const size_t ncol = schema.kinds.size();
  const char* const base = body.data();
  const size_t size = body.size();
  if (size >= UINT32_MAX) return -1;
  std::vector<uint32_t> ends(kBlock + ncol + 64);  // a block's ends, after the last row's
  size_t have = 0, q = 0;
  uint32_t first = 0;  // where the next row starts
  int64_t row = 0;
  while (q < size) {
    const size_t stop = std::min(size, q + kBlock);
    uint32_t cr = 0;
    for (; q + 64 <= stop; q += 64)
      have += flatten(field_ends64(base + q, cr), static_cast<uint32_t>(q), ends.data() + have);
    if (stop == size) {  // the last bytes, and the body's end, which ends its last field
      for (; q < size; ++q) {
        if (base[q] == ',' || base[q] == '\n') ends[have++] = static_cast<uint32_t>(q);
        cr |= base[q] == '\r';
      }
      ends[have++] = static_cast<uint32_t>(size);
    }
    q = stop;
    if (cr) return -1;
    const size_t rows = have / ncol;
    if (row + static_cast<int64_t>(rows) > n) return 0;
    const uint32_t* e = ends.data();
    for (size_t r = 0; r < rows; ++r, ++row, e += ncol) {
      T* dst = out + row * width;
      uint32_t f = first;
      for (size_t j = 0; j < ncol; f = e[j] + 1, ++j) {
        const uint32_t fe = e[j];
        // a ',' ends each field but the last; a '\n' (or the body's end) the last
        if (j + 1 < ncol ? base[fe] != ',' : fe != size && base[fe] != '\n') return 0;
        const uint32_t len = fe - f;
        if (len < 16 && size_t{f} + 16 <= size) {  // a short cell: one load may decide it
          const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + f));
          if (schema.kinds[j] == 0) {
            double x;
            if (cells::plain_number(v, static_cast<int>(len), x)) {
              dst[schema.offsets[j]] = static_cast<T>(x);  // finite, within float32's range
              continue;
            }
          } else if (lookup[j].exact()) {
            const int64_t k = lookup[j].find16(v, static_cast<int>(len));
            if (k >= 0) {
              dst[schema.offsets[j] + k] = static_cast<T>(1);
              continue;
            }
          }
        }
        if (!put_cell(schema, lookup, j, base + f, base + fe, dst)) return 0;
      }
      first = e[ncol - 1] + 1;
    }
    have -= rows * ncol;  // the ends of a row the next block completes
    std::memmove(ends.data(), e, have * sizeof(uint32_t));
  }
  return row == n && have == 0 ? 1 : 0;
}
#endif

template <typename T>
bool encode_body(std::string_view body, const RowSchema& schema,
                 const std::vector<cells::Categories>& lookup, int64_t n, int64_t width, T* out) {
#if defined(__x86_64__)
  static const bool avx2 = cpu_has_avx2_fma();
  if (avx2) {
    const int done = encode_indexed(body, schema, lookup, n, width, out);
    if (done >= 0) return done == 1;
  }
#endif
  return encode_lines(body, schema, lookup, n, width, out);
}

// The number of '\n' in s, whether it holds a '"', and whether a byte >= 0x80 (32 bytes a step
// where the CPU has AVX2)
#if defined(__x86_64__)
MMHOST_AVX2 int64_t count_lines_avx2(std::string_view s, bool& quote, bool& high) {
  const char* p = s.data();
  const char* const end = p + s.size();
  const __m256i lf = _mm256_set1_epi8('\n'), dq = _mm256_set1_epi8('"');
  int64_t n = 0;
  __m256i quotes = _mm256_setzero_si256(), bytes = _mm256_setzero_si256();
  for (; p + 32 <= end; p += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    n += __builtin_popcount(static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, lf))));
    quotes = _mm256_or_si256(quotes, _mm256_cmpeq_epi8(v, dq));
    bytes = _mm256_or_si256(bytes, v);
  }
  quote = !_mm256_testz_si256(quotes, quotes);
  high = _mm256_movemask_epi8(bytes) != 0;
  for (; p < end; ++p) {
    n += *p == '\n';
    quote = quote || *p == '"';
    high = high || static_cast<unsigned char>(*p) >= 0x80;
  }
  return n;
}
#endif

int64_t count_lines(std::string_view s, bool& quote, bool& high) {
#if defined(__x86_64__)
  static const bool avx2 = cpu_has_avx2_fma();
  if (avx2) return count_lines_avx2(s, quote, high);
#endif
  int64_t n = 0;
  high = false;
  for (char c : s) {
    n += c == '\n';
    high = high || static_cast<unsigned char>(c) >= 0x80;
  }
  quote = s.find('"') != std::string_view::npos;
  return n;
}

}  // namespace

int64_t csv_lines(std::string_view body) {
  size_t end = body.size();  // less what bytes.rstrip() strips
  while (end > 0 && std::memchr(" \t\n\r\v\f", body[end - 1], 6) != nullptr) --end;
  bool quote = false, high = false;
  const int64_t n = count_lines(body.substr(0, end), quote, high) + 1;
  return quote ? -1 : n;  // (what rstrip() strips holds no quote)
}

std::tuple<bool, at::Tensor> csv_encode(std::string_view body, const RowSchema& schema,
                                        int64_t width, bool f64, int64_t max_rows) {
  const at::Tensor none;
  if (body.size() >= 3 && std::memcmp(body.data(), "\xef\xbb\xbf", 3) == 0) body.remove_prefix(3);
  while (!body.empty() && (is_space(body.front()) || body.front() == '\n' || body.front() == '\r'))
    body.remove_prefix(1);
  while (!body.empty() && (is_space(body.back()) || body.back() == '\n' || body.back() == '\r'))
    body.remove_suffix(1);
  if (body.empty() || schema.kinds.size() < 2) return {false, none};
  bool quote = false, high = false;
  const int64_t n = count_lines(body, quote, high) + 1;
  // (a cell's bytes are checked at its ends only: the body's UTF-8 is checked whole, as the
  // per-row path decodes it, where it is not all ASCII)
  if (quote || n > max_rows || (high && !cells::is_utf8(body))) return {false, none};
  const std::vector<cells::Categories> lookup = cells::categories_of(schema);
  at::Tensor out = cells::zeros(n, width, f64);
  bool ok = f64 ? encode_body(body, schema, lookup, n, width, out.data_ptr<double>())
                : encode_body(body, schema, lookup, n, width, out.data_ptr<float>());
  return {ok, ok ? out : none};
}

}  // namespace mmhost
