// A large plain CSV body -> the encoded rows of one input schema, in one pass over the bytes
// (mmhost/codecs/table.py holds the contract; mmhost/codecs/rows.py the per-row path it must
// equal). Numbers are parsed as std::from_chars parses them (exact like Python's float(); see
// cells::parse_double), categories are looked up among the column's categories (cells::
// Categories: a scan of a few, a hash map of many) and written as a 1 at offset + index.
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
      if (static_cast<size_t>(fe - f) > kFieldLimit) return false;  // the csv module refuses it
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
      const std::string_view cell = cells::trim(std::string_view(f, static_cast<size_t>(fe - f)));
      if (!ascii_ends(cell)) return false;
      if (schema.kinds[j] == 0) {  // a number ("nan" parses as NaN, as a missing value reads)
        double x = 0.0;
        if (!cells::parse_double(cell, x)) {
          if (!cells::is_missing(cell)) return false;
          x = std::numeric_limits<double>::quiet_NaN();
        }
        if (!cells::put_number(schema, j, x, dst)) return false;
      } else {  // a category
        const int64_t k = lookup[j].find(cell);
        if (!cells::put_category(schema, j, k, k < 0 && cells::is_missing(cell), dst))
          return false;
      }
    }
  }
  return p == end;
}

}  // namespace

std::tuple<bool, at::Tensor> csv_encode(std::string_view body, const RowSchema& schema,
                                        int64_t width, bool f64, int64_t max_rows) {
  const at::Tensor none;
  if (body.size() >= 3 && std::memcmp(body.data(), "\xef\xbb\xbf", 3) == 0) body.remove_prefix(3);
  while (!body.empty() && (is_space(body.front()) || body.front() == '\n' || body.front() == '\r'))
    body.remove_prefix(1);
  while (!body.empty() && (is_space(body.back()) || body.back() == '\n' || body.back() == '\r'))
    body.remove_suffix(1);
  if (body.empty() || schema.kinds.size() < 2 || body.find('"') != std::string_view::npos)
    return {false, none};
  int64_t n = 1;
  for (char c : body) n += c == '\n';
  if (n > max_rows) return {false, none};
  const std::vector<cells::Categories> lookup = cells::categories_of(schema);
  at::Tensor out = cells::zeros(n, width, f64);
  bool ok = f64 ? encode_lines(body, schema, lookup, n, width, out.data_ptr<double>())
                : encode_lines(body, schema, lookup, n, width, out.data_ptr<float>());
  return {ok, ok ? out : none};
}

}  // namespace mmhost
