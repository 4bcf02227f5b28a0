// One cell of a row into the encoded row, as mmhost/codecs/rows.py's per-row path writes it;
// shared by the native row encoders (csv.cpp, json.cpp). Every function returns false where
// the per-row path must decide (it then names the row and the column).
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mmhost.h"

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

// s as a double, all of it, exactly as std::from_chars (and Python's float()) reads it; false:
// not a number from_chars takes whole. The common case, [-]digits[.digits][e[+-]digits] with
// a mantissa below 2^53 and a power of ten up to 22, is Clinger's fast path: both operands
// are exact, so one IEEE multiply or divide rounds the result correctly.
inline bool parse_double(std::string_view s, double& x) {
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
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
    x = scale < 0 ? m / kPow10[-scale] : m * kPow10[scale];
    if (negative) x = -x;
    return true;
  }
  auto [ptr, ec] = std::from_chars(s.data(), end, x);
  return ec == std::errc() && ptr == end;
}

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
    } else {
      for (size_t k = 0; k < cats.size(); ++k) many_.emplace(cats[k], static_cast<int64_t>(k));
    }
  }

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
