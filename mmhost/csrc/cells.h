// One cell of a row into the encoded row, as mmhost/codecs/rows.py's per-row path writes it;
// shared by the native row encoders (csv.cpp, json.cpp). Every function returns false where
// the per-row path must decide (it then names the row and the column).
#pragma once

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mmhost.h"
#include "simd.h"

namespace mmhost::cells {

constexpr double kF32Max = 3.4028234663852886e38;

// Python's str.strip() on ASCII: space, \t, \v, \f and \x1c-\x1f (line ends never get here)
inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1f);
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// the strings the per-row path reads as a missing value (after strip)
inline bool is_missing(std::string_view s) {
  return s.empty() || s == "nan" || s == "NaN" || s == "NA" || s == "null" || s == "None";
}

// (n, width) zeros, float32 or float64, filled on this thread (at::zeros would wake an
// OpenMP team for a few MB, on a server pinned to one core)
inline at::Tensor zeros(int64_t n, int64_t width, bool f64) {
  at::Tensor out = at::empty({n, width}, f64 ? at::kDouble : at::kFloat);
  std::memset(out.data_ptr(), 0, static_cast<size_t>(out.nbytes()));
  return out;
}

// The length of the UTF-8 character at p (a lead byte >= 0x80) as Python's strict decoder
// reads it (no overlong form, no surrogate, nothing past U+10FFFF); 0: not UTF-8
inline size_t utf8_char(const char* p, const char* end) {
  const auto b0 = static_cast<unsigned char>(*p);
  size_t n;
  unsigned lo = 0x80, hi = 0xBF;  // the second byte's range
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (static_cast<size_t>(end - p) <= n) return 0;
  for (size_t i = 1; i <= n; ++i) {
    const auto b = static_cast<unsigned char>(p[i]);
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return 0;
  }
  return n + 1;
}

// Whether s is UTF-8 text, as bytes.decode() (strict) takes it
inline bool is_utf8(std::string_view s) {
  const char* p = s.data();
  const char* const end = p + s.size();
  while (p < end) {
    if (static_cast<unsigned char>(*p) < 0x80) {
      ++p;
    } else if (const size_t n = utf8_char(p, end)) {
      p += n;
    } else {
      return false;
    }
  }
  return true;
}

// The powers of ten a double holds exactly
inline constexpr double kExactPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                         1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                         1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// s as a double, all of it, exactly as std::from_chars (and Python's float()) reads it; false:
// not a number from_chars takes whole. The common case, [-]digits[.digits][e[+-]digits] with
// a mantissa below 2^53 and a power of ten up to 22, is Clinger's fast path: both operands
// are exact, so one IEEE multiply or divide rounds the result correctly.
inline bool parse_double(std::string_view s, double& x) {
  const char* p = s.data();
  const char* end = p + s.size();
  const bool negative = p < end && *p == '-';
  if (negative) ++p;
  uint64_t mantissa = 0;
  int digits = 0, scale = 0;
  const char* first = p;
  for (; p < end && *p >= '0' && *p <= '9'; ++p) {
    mantissa = mantissa * 10 + static_cast<uint64_t>(*p - '0');
    digits += mantissa != 0;
  }
  bool fast = p > first;
  if (fast && p < end && *p == '.') {
    const char* frac = ++p;
    for (; p < end && *p >= '0' && *p <= '9'; ++p) {
      mantissa = mantissa * 10 + static_cast<uint64_t>(*p - '0');
      digits += mantissa != 0;
    }
    scale = -static_cast<int>(p - frac);
    fast = p > frac;
  }
  if (fast && p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    const bool minus = p < end && *p == '-';
    if (p < end && (*p == '-' || *p == '+')) ++p;
    int e = 0;
    const char* e0 = p;
    for (; p < end && *p >= '0' && *p <= '9' && e < 10000; ++p) e = e * 10 + (*p - '0');
    fast = p > e0;
    scale += minus ? -e : e;
  }
  if (fast && p == end && digits <= 15 && scale >= -22 && scale <= 22) {
    const double m = static_cast<double>(mantissa);  // exact: below 10^15 < 2^53
    x = scale < 0 ? m / kExactPow10[-scale] : m * kExactPow10[scale];
    if (negative) x = -x;
    return true;
  }
  auto [ptr, ec] = std::from_chars(s.data(), end, x);
  return ec == std::errc() && ptr == end;
}

#if defined(__x86_64__)
// The first n (0..15) bytes of v as the number they spell when they are in the plainest shape,
// -?digits(.digits)? with at most 15 digits: true, and x exactly as parse_double reads it
// (Clinger's fast path: the digits and the power of ten exact, one rounding); false for any
// other shape (parse_double decides). No branch on the digits: they are right-aligned by one
// shuffle (skipping the sign and the dot) and summed in lanes (2, 4, then 8 digits a lane).
MMHOST_AVX2 inline bool plain_number(__m128i v, int n, double& x) {
  const uint32_t in = (1u << n) - 1;
  const __m128i d = _mm_sub_epi8(v, _mm_set1_epi8('0'));
  const uint32_t digit = static_cast<uint32_t>(
      _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d)));
  const uint32_t dot =
      static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('.')))) & in;
  const int neg = n > 0 && static_cast<char>(_mm_cvtsi128_si32(v)) == '-';
  const int point = dot ? __builtin_ctz(dot) : n;  // the dot's place, or the end
  // every byte after the sign a digit but one dot at most, a digit before the dot and one after
  if (((digit | dot) & in) != (in & ~static_cast<uint32_t>(neg)) || (dot & (dot - 1)) ||
      point == neg || (dot && point == n - 1))
    return false;
  const int count = n - neg - (dot != 0);
  // lane i takes digit k = i - (16 - count) of the number (its byte neg + k, one more past the
  // dot); the lanes before the first digit are zero
  const __m128i iota = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m128i k = _mm_add_epi8(iota, _mm_set1_epi8(static_cast<char>(neg + count - 16)));
  const __m128i past = _mm_cmpgt_epi8(k, _mm_set1_epi8(static_cast<char>(point - 1)));
  const __m128i pad = _mm_cmpgt_epi8(_mm_set1_epi8(static_cast<char>(16 - count)), iota);
  const __m128i digits = _mm_shuffle_epi8(d, _mm_or_si128(_mm_sub_epi8(k, past), pad));
  const __m128i two = _mm_maddubs_epi16(digits, _mm_set1_epi16(0x010a));  // 8 x 0..99
  const __m128i four = _mm_madd_epi16(two, _mm_set1_epi32(0x00010064));   // 4 x 0..9999
  const __m128i eight = _mm_madd_epi16(_mm_packus_epi32(four, four), _mm_set1_epi32(0x00012710));
  const int64_t mantissa = static_cast<int64_t>(_mm_cvtsi128_si32(eight)) * 100000000 +
                           _mm_extract_epi32(eight, 1);
  const double m = static_cast<double>(mantissa);
  const double q = dot ? m / kExactPow10[n - 1 - point] : m;  // (no divide for an integer)
  x = neg ? -q : q;
  return true;
}

// The first n (0..16) bytes all ones, the rest zero
MMHOST_AVX2 inline __m128i first_bytes(int n) {
  static constexpr uint8_t kOnes[32] = {255, 255, 255, 255, 255, 255, 255, 255,
                                        255, 255, 255, 255, 255, 255, 255, 255};
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(kOnes + 16 - n));
}
#endif

// column j's number x (NaN: missing) at its offset: the fill for a missing value, NaN where
// the column passes it (trees); refused past float32's range
template <typename T>
inline bool put_number(const RowSchema& s, size_t j, double x, T* dst) {
  if (std::isnan(x)) {
    if (!std::isnan(s.fills[j])) {
      x = s.fills[j];
    } else if (!s.nan_ok[j]) {
      return false;
    }
  } else if (!(std::fabs(x) <= kF32Max)) {
    return false;
  }
  dst[s.offsets[j]] = static_cast<T>(x);
  return true;
}

// column j's category k (-1: not one of its categories; missing: the cell is a missing value):
// a 1 at offset + k; a missing value takes the column's missing category; an unknown one is
// ignored (all zeros) where the column allows it
template <typename T>
inline bool put_category(const RowSchema& s, size_t j, int64_t k, bool missing, T* dst) {
  if (k < 0 && missing) k = s.missing_index[j];
  if (k < 0) return s.ignore_unknown[j] != 0;
  dst[s.offsets[j] + k] = static_cast<T>(1);
  return true;
}

// A column's categories -> their index: a scan of a few (a couple of compares each, cheaper than
// hashing the cell) or a hash map of many.
class Categories {
 public:
  explicit Categories(const std::vector<std::string>& cats) {
    if (cats.size() <= kScan) {
      few_.assign(cats.begin(), cats.end());
      exact_ = true;
      for (const auto& c : cats) {
        // a cell's bytes equal to one of these is that category, whatever the per-row path
        // would trim: it is none of the trimmed bytes, nor a missing value's spelling
        exact_ = exact_ && !c.empty() && c.size() < 16 && trim(c) == c &&
                 static_cast<unsigned char>(c.front()) < 0x80 &&
                 static_cast<unsigned char>(c.back()) < 0x80;
        std::array<char, 16> pattern{};
        std::memcpy(pattern.data(), c.data(), std::min<size_t>(c.size(), 16));
        patterns_.push_back(pattern);
      }
    } else {
      for (size_t k = 0; k < cats.size(); ++k) many_.emplace(cats[k], static_cast<int64_t>(k));
    }
  }

  // Whether find16 may decide a cell of the column (a few categories, each short, trimmed and
  // ASCII at its ends)
  bool exact() const { return exact_; }

#if defined(__x86_64__)
  // The index of the n (< 16) bytes of v (the rest ignored) among the categories, -1 if none
  // of them: find() of a cell those bytes make, where exact()
  MMHOST_AVX2 int64_t find16(__m128i v, int n) const {
    const __m128i cell = _mm_and_si128(v, first_bytes(n));
    for (size_t k = 0; k < few_.size(); ++k) {
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(patterns_[k].data()));
      if (static_cast<int>(few_[k].size()) == n &&
          _mm_movemask_epi8(_mm_cmpeq_epi8(cell, c)) == 0xFFFF)
        return static_cast<int64_t>(k);
    }
    return -1;
  }
#endif

  // the index of cell (the first, should two be equal), -1 if it is none of them
  int64_t find(std::string_view cell) const {
    if (many_.empty()) {
      for (size_t k = 0; k < few_.size(); ++k)
        if (few_[k] == cell) return static_cast<int64_t>(k);
      return -1;
    }
    auto hit = many_.find(cell);
    return hit == many_.end() ? -1 : hit->second;
  }

 private:
  static constexpr size_t kScan = 16;
  std::vector<std::string_view> few_;
  std::vector<std::array<char, 16>> patterns_;  // few_, zero-padded to 16 bytes
  bool exact_ = false;
  std::unordered_map<std::string_view, int64_t> many_;
};

// every column's Categories (empty for a number column)
inline std::vector<Categories> categories_of(const RowSchema& schema) {
  std::vector<Categories> out;
  out.reserve(schema.categories.size());
  for (const auto& cats : schema.categories) out.emplace_back(cats);
  return out;
}

}  // namespace mmhost::cells
