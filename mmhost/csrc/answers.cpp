// Scores -> the text of an answer (CSV, JSON, JSON Lines, a V2 tensor's data), in one pass
// into one buffer (mmhost/codecs/text.py holds the contract; mmhost/codecs/outputs.py the
// Python path it must equal byte for byte).
//
// Each value is written as Python's repr(float(v)) writes it: the shortest digits that read
// back as the same double (std::to_chars, like repr), in fixed notation when the decimal
// exponent is in [-4, 16) ("412000.5", "0.0001", "3.0"), else in scientific notation with a
// sign and at least two exponent digits ("1e+16", "1.5e-05"). A layout of literal pieces puts
// them in place: head, then per row [row_sep] row_open list_open v (value_sep v)* list_close
// [label_mid label] row_close, then tail.

#include "mmhost.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mmhost {
namespace {

constexpr size_t kMaxRepr = 24;  // "-1.2345678901234567e-308"
constexpr size_t kSlack = 64;    // bytes past the text the fixed-size stores below may write
constexpr uint64_t kP10_8 = 100000000, kP10_16 = kP10_8 * kP10_8;

// v's shortest round-trip digits (no leading or trailing zeros) and the decimal exponent of the
// first: v = 0.d1d2d3... x 10^(exp + 1). Where v's exact value has at most 15 significant
// digits (every score a float32 price, count or small fraction has), those digits are the
// shortest: any other decimal of 15 digits or fewer differs from v by at least a unit in the
// 15th digit, more than half a unit in v's last place, so it reads back as another double.
// Such v are m x 2^e, exactly m x 5^-e / 10^-e: an integer and a shift, no search. Others
// (0.1's double, 17 digits) take std::to_chars's shortest, as Python's repr does.
// v (finite, > 0) exactly as exact / 10^frac with exact an integer, where that needs no search:
// v = m x 2^e is an integer below 10^16, or m x 5^-e fits 64 bits (then / 10^-e); false: else
bool exact_decimal(double v, uint64_t& exact, int& frac) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const int biased = static_cast<int>((bits >> 52) & 0x7ff);
  if (biased == 0) return false;  // zero or subnormal
  uint64_t m = (bits & ((uint64_t{1} << 52) - 1)) | uint64_t{1} << 52;
  int e = biased - 1075;
  const int tz = __builtin_ctzll(m);
  m >>= tz;  // exactly m x 2^e, m odd
  e += tz;
  if (e >= 0 && e < 64 - 53 && (m << e) < kP10_16) {
    exact = m << e;
    frac = 0;
    return true;
  }
  if (e < 0 && e >= -21) {  // 5^22 x an odd m > 10^15: 16 digits or more
    static const auto kPow5 = [] {
      std::array<uint64_t, 22> t{};
      t[0] = 1;
      for (size_t i = 1; i < t.size(); ++i) t[i] = t[i - 1] * 5;
      return t;
    }();
    frac = -e;
    return !__builtin_mul_overflow(m, kPow5[static_cast<size_t>(-e)], &exact);
  }
  return false;
}

int shortest(double v, char* digits, int& exp) {
  uint64_t exact = 0;  // v x 10^frac, an integer
  int frac = 0;
  if (exact_decimal(v, exact, frac)) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, exact);
    int nd = static_cast<int>(r.ptr - buf);
    const int point = nd - frac;  // digits before the decimal point
    while (nd > 1 && buf[nd - 1] == '0') --nd;  // (an integer's trailing zeros)
    if (nd <= 15) {
      std::memcpy(digits, buf, static_cast<size_t>(nd));
      exp = point - 1;
      return nd;
    }
  }
  char sci[40];
  auto [end, ec] = std::to_chars(sci, sci + sizeof sci, v, std::chars_format::scientific);
  if (ec != std::errc()) throw std::runtime_error("format_rows: to_chars failed");
  const char* p = sci;  // [-]d[.ddd]e(+|-)XX
  if (*p == '-') ++p;
  int nd = 0;
  for (; *p != 'e'; ++p)
    if (*p != '.') digits[nd++] = *p;
  std::from_chars(p[1] == '+' ? p + 2 : p + 1, end, exp);
  return nd;
}

// x (< 10^8) as its 8 decimal digits (leading zeros kept), 0..9 a byte, the first in the lowest
// byte: split in halves of 4 digits, then 2, then 1, all lanes at once in one word
inline uint64_t eight_digits(uint32_t x) {
  const uint64_t fours = x / 10000 | static_cast<uint64_t>(x % 10000) << 32;
  const uint64_t high2 = ((fours * 10486) >> 20) & 0x0000007F0000007Full;  // each / 100
  const uint64_t twos = ((fours - 100 * high2) << 16) + high2;
  const uint64_t high1 = ((twos * 103) >> 10) & 0x000F000F000F000Full;  // each / 10
  return high1 + ((twos - 10 * high1) << 8);
}

// v (> 0) in repr's fixed notation where its exact value has at most 15 significant digits
// and a decimal exponent in [-4, 16) (every float32 price, count or small fraction): true, and
// w past the text; false: the general path writes it. The digits come from eight_digits; each
// piece is one 16-byte store (w has kSlack bytes past the text).
inline bool put_fixed(char*& w, double v) {
  uint64_t exact = 0;
  int frac = 0;
  if (!exact_decimal(v, exact, frac) || exact >= kP10_16) return false;
  const uint64_t a = eight_digits(static_cast<uint32_t>(exact / kP10_8));
  const uint64_t b = eight_digits(static_cast<uint32_t>(exact % kP10_8));
  const int lead = a ? __builtin_ctzll(a) / 8 : 8 + __builtin_ctzll(b) / 8;  // (exact > 0)
  char buf[32];  // the 16 digits, then 16 bytes that only pad the fixed-size copies
  const uint64_t ascii = 0x3030303030303030ull;
  const uint64_t ta = a | ascii, tb = b | ascii;
  std::memcpy(buf, &ta, 8);
  std::memcpy(buf + 8, &tb, 8);
  std::memset(buf + 16, '0', 16);
  const char* const d = buf + lead;
  const int nd = 16 - lead;
  if (frac == 0) {  // an integer: its digits, ".0" (16 significant digits: shorter may exist)
    if (nd == 16 && exact % 10 != 0) return false;
    std::memcpy(w, d, 16);
    std::memcpy(w + nd, ".0", 2);
    w += nd + 2;
    return true;
  }
  const int point = nd - frac;  // digits before the point (odd m x 5^k ends in 5: none trail)
  if (nd == 16 || point < -3) return false;
  if (point > 0) {  // ddd.ddd
    std::memcpy(w, d, 16);
    w[point] = '.';
    std::memcpy(w + point + 1, d + point, 16);
    w += nd + 1;
  } else {  // 0.000ddd
    std::memcpy(w, "0.000000", 8);
    std::memcpy(w + 2 - point, d, 16);
    w += 2 - point + nd;
  }
  return true;
}

// Python's repr of a finite double, written at w (at most kMaxRepr bytes); w moves past it.
void put_repr(char*& w, double v) {
  if (std::signbit(v)) *w++ = '-';
  if (put_fixed(w, std::fabs(v))) return;
  char digits[24];
  int exp = 0;
  const int nd = shortest(std::fabs(v), digits, exp);
  auto put = [&w](const char* from, int n) {
    std::memcpy(w, from, static_cast<size_t>(n));
    w += n;
  };
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {  // 0.000ddd
      *w++ = '0';
      *w++ = '.';
      for (int i = 0; i < -exp - 1; ++i) *w++ = '0';
      put(digits, nd);
    } else if (nd <= exp + 1) {  // ddd000.0
      put(digits, nd);
      for (int i = 0; i < exp + 1 - nd; ++i) *w++ = '0';
      *w++ = '.';
      *w++ = '0';
    } else {  // ddd.ddd
      put(digits, exp + 1);
      *w++ = '.';
      put(digits + exp + 1, nd - exp - 1);
    }
    return;
  }
  *w++ = digits[0];  // d.ddde+XX
  if (nd > 1) {
    *w++ = '.';
    put(digits + 1, nd - 1);
  }
  *w++ = 'e';
  *w++ = exp < 0 ? '-' : '+';
  const int a = exp < 0 ? -exp : exp;
  if (a < 10) *w++ = '0';
  auto r = std::to_chars(w, w + 4, a);
  w = r.ptr;
}

// A literal piece of the layout, kept padded so that one fixed-size copy writes it
class Piece {
 public:
  explicit Piece(std::string text) : text_(std::move(text)) {
    std::memcpy(padded_.data(), text_.data(), std::min(text_.size(), padded_.size()));
  }
  void put(char*& w) const {
    if (text_.size() <= padded_.size()) {
      std::memcpy(w, padded_.data(), padded_.size());
    } else {
      std::memcpy(w, text_.data(), text_.size());
    }
    w += text_.size();
  }

 private:
  std::string text_;
  std::array<char, 32> padded_{};  // (kSlack covers it)
};

}  // namespace

std::string format_rows(const at::Tensor& values, const at::Tensor& label_index,
                        const std::vector<std::string>& labels, const TextLayout& layout) {
  TORCH_CHECK(values.dim() == 2 && values.scalar_type() == at::kDouble && values.is_contiguous(),
              "format_rows: values must be (n, k) contiguous float64");
  const int64_t n = values.size(0), k = values.size(1);
  const bool labelled = label_index.numel() > 0;
  TORCH_CHECK(!labelled || (label_index.dim() == 1 && label_index.size(0) == n &&
                            label_index.scalar_type() == at::kLong && label_index.is_contiguous()),
              "format_rows: label_index must be (n,) contiguous int64, or empty");
  const double* v = values.data_ptr<double>();
  const int64_t* li = labelled ? label_index.data_ptr<int64_t>() : nullptr;
  const int64_t nlabels = static_cast<int64_t>(labels.size());
  for (int64_t i = 0; i < n * k; ++i)
    TORCH_CHECK(std::isfinite(v[i]), "format_rows: value ", i, " is not finite");
  for (int64_t i = 0; labelled && i < n; ++i)
    TORCH_CHECK(li[i] >= 0 && li[i] < nlabels, "format_rows: label index out of range");

  size_t label_bytes = 0;
  for (const auto& s : labels) label_bytes = std::max(label_bytes, s.size());
  const size_t per_row = layout.row_sep.size() + layout.row_open.size() +
                         layout.list_open.size() + layout.list_close.size() +
                         layout.row_close.size() +
                         (labelled ? layout.label_mid.size() + label_bytes : 0) +
                         static_cast<size_t>(k) * (kMaxRepr + layout.value_sep.size());
  std::string out;
  out.resize(layout.head.size() + layout.tail.size() + static_cast<size_t>(n) * per_row + kSlack);
  char* w = out.data();
  const Piece value_sep(layout.value_sep);
  // the text between two rows' values, and around them: one piece each where no label comes
  const Piece open(layout.head + layout.row_open + layout.list_open);
  const Piece close(layout.list_close + layout.row_close + layout.tail);
  const Piece between(layout.list_close + layout.row_close + layout.row_sep + layout.row_open +
                      layout.list_open);
  const Piece list_close(layout.list_close), label_mid(layout.label_mid);
  const Piece row_next(layout.row_close + layout.row_sep + layout.row_open + layout.list_open);
  std::vector<Piece> label_text;
  for (const auto& label : labels) label_text.emplace_back(label);
  if (n == 0) {
    Piece(layout.head + layout.tail).put(w);
    out.resize(static_cast<size_t>(w - out.data()));
    return out;
  }
  open.put(w);
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0 && !labelled) between.put(w);
    if (i > 0 && labelled) row_next.put(w);
    for (int64_t j = 0; j < k; ++j) {
      if (j) value_sep.put(w);
      put_repr(w, v[i * k + j]);
    }
    if (labelled) {
      list_close.put(w);
      label_mid.put(w);
      label_text[static_cast<size_t>(li[i])].put(w);
    }
  }
  if (labelled) {
    Piece(layout.row_close + layout.tail).put(w);
  } else {
    close.put(w);
  }
  out.resize(static_cast<size_t>(w - out.data()));
  return out;
}

}  // namespace mmhost
