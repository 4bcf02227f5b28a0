// A large JSON or JSON Lines body of rows -> the encoded rows of one input schema, straight
// from the bytes (mmhost/codecs/table.py holds the contract; mmhost/codecs/inputs.py and
// rows.py the Python path it must equal). The body is walked once, at decode, before the model
// is known: json_rows checks its shape, counts its rows (checked against the limits) and keeps
// each value as a 16-byte cell (a number read as it was walked, a string's place in the body);
// json_encode then writes every row from its cells with the model's schema.
//
// The shapes taken, the ones SageMaker's clients send for many rows:
//   {"instances": ROWS}   {"inputs": [[...], ...]}   ROWS          (JSON)
//   one row per line                                               (JSON Lines)
// where ROWS is [ROW, ...] and a ROW is [v, ...] or {"features": [v, ...]} (not in "inputs",
// whose objects are V2 tensors). A value is a JSON number or null in a numeric column, a JSON
// string or null in a categorical one.
//
// Anything else ends the call with "not taken", and the body goes the Python way, which
// names the row and the column or says what the JSON breaks: another key beside the rows, an
// empty list, a row of another length, a nested value, true/false, a string in a numeric
// column or a number in a categorical one, a string with an escape or a control character,
// bytes that are not UTF-8, a non-ASCII string that is no category, a number JSON does not
// allow (01, 1., .5, +1, NaN) or one past float32, one too small for a double (Python reads
// 1e-400 as 0.0, from_chars refuses it), a byte order mark, and every cell the per-row path
// would refuse or treat specially.

#include "cells.h"
#include "mmhost.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <string_view>

namespace mmhost {
namespace {

using Lookup = std::vector<cells::Categories>;

#define MMHOST_INLINE __attribute__((always_inline)) inline  // the walk's steps, in its loops

// A value as the walk keeps it for json_encode (16 bytes; the rows' cells one after another):
// a number read as it was walked, or else its token, a string's contents (offsets into the
// body), or null.
struct Cell {
  enum Kind : uint8_t { kNumber, kNumberText, kString, kNull };
  union {
    double x;          // kNumber
    uint32_t span[2];  // kNumberText, kString: offset and length in the body
  };
  Kind kind;
  bool integral;  // a number without fraction or exponent (JSON's int: -0 is 0)
  bool ascii;     // a string of ASCII characters only
};
static_assert(sizeof(Cell) == 16, "a cell is two int64 words of the cells tensor");

// The cells of a body of `size` bytes, in an int64 tensor of (cells, 2). A value and its
// separator take 2 bytes or more: at most size / 2 + 1 cells. Room for one every 4 bytes first
// (rows of numbers take 3 or more), doubled as needed: below glibc's largest mmap threshold,
// so a request's cells reuse the heap's pages instead of faulting in fresh zeroed ones.
class Cells {
 public:
  explicit Cells(size_t size)
      : most_(static_cast<int64_t>(size / 2 + 1)),
        store_(at::empty({std::min<int64_t>(most_, static_cast<int64_t>(size / 4) + 64), 2},
                         at::kLong)),
        data_(reinterpret_cast<Cell*>(store_.data_ptr<int64_t>())) {}

  int64_t used() const { return used_; }

  // the next cell, to fill in; nullptr past the most a body of that size can hold
  MMHOST_INLINE Cell* push() {
    if (used_ == store_.size(0) && !grow()) return nullptr;
    return data_ + used_++;
  }

  // the cells kept, as (rows, width, 2)
  at::Tensor rows(int64_t n, int64_t width) const {
    return store_.narrow(0, 0, used_).view({n, width, 2});
  }

 private:
  // twice the room (at most most_); false: full
  bool grow() {
    if (used_ == most_) return false;
    at::Tensor bigger = at::empty({std::min(most_, 2 * used_), 2}, at::kLong);
    std::memcpy(bigger.data_ptr<int64_t>(), data_, static_cast<size_t>(used_) * sizeof(Cell));
    store_ = std::move(bigger);
    data_ = reinterpret_cast<Cell*>(store_.data_ptr<int64_t>());
    return true;
  }

  int64_t most_;
  at::Tensor store_;
  Cell* data_;
  int64_t used_ = 0;
};

class Walk {
 public:
  Walk(std::string_view body, bool lines, Cells& out)
      : base_(body.data()), p_(body.data()), end_(body.data() + body.size()), lines_(lines),
        out_(out) {}

  // Every row of the document, its values pushed to the cells, then visit(n) with how many
  // it has (false: not taken).
  template <typename Visit>
  bool rows(Visit&& visit) {
    if (lines_) return each_line(visit);
    space();
    if (p_ < end_ && *p_ == '{') {
      ++p_;
      space();
      bool inputs = false;
      if (key("instances")) {
      } else if (key("inputs")) {
        inputs = true;
      } else {
        return false;
      }
      space();
      if (!eat(':')) return false;
      space();
      if (!row_list(visit, !inputs)) return false;
      space();
      if (!eat('}')) return false;
    } else if (!row_list(visit, true)) {
      return false;
    }
    space();
    return p_ == end_;
  }

 private:
  const char* base_;
  const char* p_;
  const char* end_;
  bool lines_;
  Cells& out_;

  // a cell for the value whose text is [start, p_) (a string's contents, a number's token);
  // nullptr: no room (more values than the body's bytes allow)
  MMHOST_INLINE Cell* put(Cell::Kind kind, const char* start, bool ascii) {
    Cell* c = out_.push();
    if (c == nullptr) return nullptr;
    c->kind = kind;
    c->span[0] = static_cast<uint32_t>(start - base_);
    c->span[1] = static_cast<uint32_t>(p_ - start);
    c->integral = false;
    c->ascii = ascii;
    return c;
  }

  // JSON's whitespace; in JSON Lines a line end separates rows and is no whitespace in one
  MMHOST_INLINE void space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || (*p_ == '\n' && !lines_)))
      ++p_;
  }

  MMHOST_INLINE bool eat(char c) {
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  bool key(std::string_view name) {
    const size_t n = name.size() + 2;
    if (static_cast<size_t>(end_ - p_) < n || p_[0] != '"' || p_[n - 1] != '"' ||
        std::string_view(p_ + 1, name.size()) != name)
      return false;
    p_ += n;
    return true;
  }

  template <typename Visit>
  bool each_line(Visit& visit) {
    bool any = false;
    while (true) {
      while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) ++p_;
      if (p_ == end_) return any;
      if (!row(visit, true)) return false;
      space();
      if (p_ < end_ && *p_ != '\n') return false;  // one row per line
      any = true;
    }
  }

  template <typename Visit>
  bool row_list(Visit& visit, bool objects) {
    if (!eat('[')) return false;
    space();
    if (p_ < end_ && *p_ == ']') return false;  // no rows: the Python path says so
    while (true) {
      if (!row(visit, objects)) return false;
      space();
      if (eat(']')) return true;
      if (!eat(',')) return false;
      space();
    }
  }

  template <typename Visit>
  bool row(Visit& visit, bool objects) {
    const int64_t first = out_.used();
    if (p_ < end_ && *p_ == '{') {
      if (!objects) return false;
      ++p_;
      space();
      if (!key("features")) return false;
      space();
      if (!eat(':')) return false;
      space();
      if (!value_list()) return false;
      space();
      if (!eat('}')) return false;
    } else if (!value_list()) {
      return false;
    }
    return visit(out_.used() - first);
  }

  MMHOST_INLINE bool value_list() {
    if (!eat('[')) return false;
    space();
    if (eat(']')) return true;
    while (true) {
      if (!value()) return false;
      space();
      if (eat(']')) return true;
      if (!eat(',')) return false;
      space();
    }
  }

  MMHOST_INLINE bool value() {
    if (p_ == end_) return false;
    const char c = *p_;
    if (c == '"') {
      const char* start = ++p_;
      bool ascii = true;
      while (p_ < end_ && *p_ != '"') {
        const unsigned char b = static_cast<unsigned char>(*p_);
        if (b < 0x20 || b == '\\') return false;
        if (b >= 0x80) {
          if (!utf8()) return false;
          ascii = false;
          continue;
        }
        ++p_;
      }
      if (p_ == end_ || !put(Cell::kString, start, ascii)) return false;
      ++p_;
      return true;
    }
    if (c == 'n') {
      if (end_ - p_ < 4 || std::string_view(p_, 4) != "null") return false;
      p_ += 4;
      return put(Cell::kNull, p_, true) != nullptr;
    }
    return number();
  }

  // one UTF-8 character from a lead byte >= 0x80 (cells::utf8_char); false: not UTF-8
  bool utf8() {
    const size_t n = cells::utf8_char(p_, end_);
    p_ += n;
    return n > 0;
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, its digits summed as they are walked: a
  // number of at most 15 digits and no exponent is read exactly there (Clinger's fast path,
  // as cells::parse_double reads it: the digits and the power of ten exact, one rounding)
  MMHOST_INLINE bool number() {
    const char* start = p_;
    auto digit = [this] { return p_ < end_ && *p_ >= '0' && *p_ <= '9'; };
    const bool negative = eat('-');
    if (!digit()) return false;
    uint64_t m = 0;  // the digits (wraps past 19 of them: then unused)
    int64_t digits = 0, frac = 0;  // (a count past 2^31 is no concern of an int)
    if (*p_ == '0') {
      ++p_;
    } else {
      for (; digit(); ++p_, ++digits) m = m * 10 + static_cast<uint64_t>(*p_ - '0');
    }
    bool integral = true;
    if (eat('.')) {
      integral = false;
      if (!digit()) return false;
      for (; digit(); ++p_, ++frac) m = m * 10 + static_cast<uint64_t>(*p_ - '0');
    }
    bool exponent = false;
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integral = false;
      exponent = true;
      ++p_;
      if (!eat('+')) eat('-');
      if (!digit()) return false;
      while (digit()) ++p_;
    }
    Cell* c = put(Cell::kNumberText, start, true);  // (parse_double reads it at encode)
    if (c == nullptr) return false;
    c->integral = integral;
    if (!exponent && digits + frac <= 15) {  // read here: the cell holds the number
      const double q = static_cast<double>(m);
      const double x = frac ? q / cells::kExactPow10[frac] : q;
      c->kind = Cell::kNumber;
      c->x = negative ? -x : x;
    }
    return true;
  }
};

// Cell c's text in the body (false: its span is not inside the body)
bool text_of(std::string_view body, const Cell& c, std::string_view& text) {
  if (static_cast<size_t>(c.span[0]) + c.span[1] > body.size()) return false;
  text = body.substr(c.span[0], c.span[1]);
  return true;
}

// Row values[0 .. n) (n: the schema's columns) encoded into dst.
template <typename T>
bool put_row(std::string_view body, const Cell* values, size_t n, const RowSchema& schema,
             const Lookup& lookup, T* dst) {
  for (size_t j = 0; j < n; ++j) {
    const Cell& v = values[j];
    if (schema.kinds[j] == 0) {  // a number
      double x = std::numeric_limits<double>::quiet_NaN();
      if (v.kind == Cell::kNumber) {
        x = v.x;
      } else if (v.kind == Cell::kNumberText) {
        std::string_view text;
        if (!text_of(body, v, text) || !cells::parse_double(text, x)) return false;
      } else if (v.kind != Cell::kNull) {
        return false;
      }
      if (v.integral && x == 0) x = 0.0;  // JSON's -0 is the int 0, as Python reads it
      if (!cells::put_number(schema, j, x, dst)) return false;
    } else {  // a category
      if (v.kind == Cell::kNumber || v.kind == Cell::kNumberText) return false;
      int64_t k = -1;
      std::string_view text;
      if (v.kind == Cell::kString) {
        if (!text_of(body, v, text)) return false;
        k = lookup[j].find(text);
        // Python's strip() trims more than ASCII whitespace (a no-break space): a non-ASCII
        // string that is no category is left to the Python path
        if (k < 0 && !v.ascii) return false;
      }
      const bool missing =
          k < 0 && (v.kind == Cell::kNull || cells::is_missing(cells::trim(text)));
      if (!cells::put_category(schema, j, k, missing, dst)) return false;
    }
  }
  return true;
}

bool starts_with_bom(std::string_view body) {
  return body.size() >= 3 && body.substr(0, 3) == "\xef\xbb\xbf";
}

}  // namespace

std::tuple<int64_t, at::Tensor> json_rows(std::string_view body, bool lines, int64_t max_rows) {
  const std::tuple<int64_t, at::Tensor> none{-1, at::Tensor()};
  if (starts_with_bom(body) || body.size() >= UINT32_MAX) return none;
  Cells cells(body.size());
  int64_t n = 0, width = 0;
  const bool ok = Walk(body, lines, cells).rows([&](int64_t count) {
    if (n == 0) width = count;
    return count == width && count > 0 && ++n <= max_rows;
  });
  if (!ok) return none;
  return {n, cells.rows(n, width)};
}

std::tuple<bool, at::Tensor> json_encode(std::string_view body, const at::Tensor& rows,
                                         const RowSchema& schema, int64_t width, bool f64) {
  const at::Tensor none;
  TORCH_CHECK(rows.dim() == 3 && rows.size(2) == 2 && rows.scalar_type() == at::kLong &&
                  rows.is_contiguous(),
              "json_encode: rows must be json_rows' (n, width, 2) cells");
  const int64_t n = rows.size(0);
  const size_t count = static_cast<size_t>(rows.size(1));
  const Cell* const values = reinterpret_cast<const Cell*>(rows.data_ptr<int64_t>());
  if (count != schema.kinds.size()) return {false, none};  // rows of another width
  const Lookup lookup = cells::categories_of(schema);
  at::Tensor out = cells::zeros(n, width, f64);
  auto encode = [&](auto* data) {
    for (int64_t i = 0; i < n; ++i)
      if (!put_row(body, values + i * static_cast<int64_t>(count), count, schema, lookup,
                   data + i * width))
        return false;
    return true;
  };
  const bool ok = f64 ? encode(out.data_ptr<double>()) : encode(out.data_ptr<float>());
  return {ok, ok ? out : none};
}

}  // namespace mmhost
