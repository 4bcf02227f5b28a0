// A large plain CSV body -> the encoded rows of one input schema, in one pass over the bytes
// (mmhost/codecs/table.py holds the contract; mmhost/codecs/rows.py the per-row path it must
// equal). Numbers are parsed as std::from_chars parses them (exact like Python's float(); see
// cells::parse_double), categories are looked up in a hash map of the column's categories and
// written as a 1 at offset + index.
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
#include <unordered_map>

namespace mmhost {
namespace {

constexpr size_t kFieldLimit = 131072;  // Python's csv.field_size_limit() default

using cells::is_space;

bool ascii_ends(std::string_view s) {
  return s.empty() || (static_cast<unsigned char>(s.front()) < 0x80 &&
                       static_cast<unsigned char>(s.back()) < 0x80);
}

template <typename T>
bool encode_lines(std::string_view body, const RowSchema& schema,
                  const std::vector<std::unordered_map<std::string_view, int64_t>>& lookup,
                  int64_t n, int64_t width, T* out) {
  const size_t ncol = schema.kinds.size();
  int64_t row = 0;
  size_t pos = 0;
  while (pos <= body.size() && row < n) {
    size_t end = body.find('\n', pos);
    if (end == std::string_view::npos) end = body.size();
    std::string_view line = body.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find('\r') != std::string_view::npos) return false;  // a lone CR ends a line too
    T* dst = out + row * width;
    size_t start = 0;
    for (size_t j = 0; j < ncol; ++j) {
      size_t comma = line.find(',', start);
      bool last = j + 1 == ncol;
      if (last != (comma == std::string_view::npos)) return false;  // too few or too many
      std::string_view field = line.substr(start, last ? line.size() - start : comma - start);
      if (field.size() > kFieldLimit) return false;  // the csv module refuses such a field
      std::string_view cell = cells::trim(field);
      start = comma + 1;
      if (!ascii_ends(cell)) return false;
      if (schema.kinds[j] == 0) {  // a number
        double x = std::numeric_limits<double>::quiet_NaN();
        if (!cells::is_missing(cell) && !cells::parse_double(cell, x)) return false;
        if (!cells::put_number(schema, j, x, dst)) return false;
      } else {  // a category
        auto hit = lookup[j].find(cell);
        const int64_t k = hit == lookup[j].end() ? -1 : hit->second;
        if (!cells::put_category(schema, j, k, cells::is_missing(cell), dst)) return false;
      }
    }
    ++row;
    pos = end + 1;
  }
  return row == n;
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
  std::vector<std::unordered_map<std::string_view, int64_t>> lookup(schema.kinds.size());
  for (size_t j = 0; j < schema.kinds.size(); ++j) {
    const auto& cats = schema.categories[j];
    for (size_t k = 0; k < cats.size(); ++k) lookup[j].emplace(cats[k], static_cast<int64_t>(k));
  }
  at::Tensor out = cells::zeros(n, width, f64);
  bool ok = f64 ? encode_lines(body, schema, lookup, n, width, out.data_ptr<double>())
                : encode_lines(body, schema, lookup, n, width, out.data_ptr<float>());
  return {ok, ok ? out : none};
}

}  // namespace mmhost
