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

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mmhost {
namespace {

constexpr size_t kMaxRepr = 24;  // "-1.2345678901234567e-308"

// v's shortest round-trip digits (no leading or trailing zeros) and the decimal exponent of the
// first: v = 0.d1d2d3... x 10^(exp + 1). Where v's exact value has at most 15 significant
// digits (every score a float32 price, count or small fraction has), those digits are the
// shortest: any other decimal of 15 digits or fewer differs from v by at least a unit in the
// 15th digit, more than half a unit in v's last place, so it reads back as another double.
// Such v are m x 2^e, exactly m x 5^-e / 10^-e: an integer and a shift, no search. Others
// (0.1's double, 17 digits) take std::to_chars's shortest, as Python's repr does.
int shortest(double v, char* digits, int& exp) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const int biased = static_cast<int>((bits >> 52) & 0x7ff);
  uint64_t m = bits & ((uint64_t{1} << 52) - 1);
  if (biased != 0) {  // normal (the caller checked v finite): exactly m x 2^e, m odd
    m |= uint64_t{1} << 52;
    int e = biased - 1075;
    const int tz = __builtin_ctzll(m);
    m >>= tz;
    e += tz;
    static constexpr uint64_t kP10_15 = 1000000000000000ull;
    uint64_t exact = 0;  // v x 10^frac, an integer of at most 15 digits
    int frac = 0;
    if (e >= 0 && e < 64 - 53 && (m << e) < kP10_15 * 10) {
      exact = m << e;
    } else if (e < 0 && e >= -21) {  // 5^22 x an odd m > 10^15: 16 digits or more
      static const auto kPow5 = [] {
        std::array<uint64_t, 22> t{};
        t[0] = 1;
        for (size_t i = 1; i < t.size(); ++i) t[i] = t[i - 1] * 5;
        return t;
      }();
      if (__builtin_mul_overflow(m, kPow5[static_cast<size_t>(-e)], &exact)) {
        exact = 0;
      } else {
        frac = -e;
      }
    }
    if (exact != 0) {
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

// Python's repr of a finite double, written at w (at most kMaxRepr bytes); w moves past it.
void put_repr(char*& w, double v) {
  if (std::signbit(v)) *w++ = '-';
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

void put_text(char*& w, const std::string& s) {
  std::memcpy(w, s.data(), s.size());
  w += s.size();
}

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
  out.resize(layout.head.size() + layout.tail.size() + static_cast<size_t>(n) * per_row);
  char* w = out.data();
  put_text(w, layout.head);
  for (int64_t i = 0; i < n; ++i) {
    if (i) put_text(w, layout.row_sep);
    put_text(w, layout.row_open);
    put_text(w, layout.list_open);
    for (int64_t j = 0; j < k; ++j) {
      if (j) put_text(w, layout.value_sep);
      put_repr(w, v[i * k + j]);
    }
    put_text(w, layout.list_close);
    if (labelled) {
      put_text(w, layout.label_mid);
      put_text(w, labels[static_cast<size_t>(li[i])]);
    }
    put_text(w, layout.row_close);
  }
  put_text(w, layout.tail);
  out.resize(static_cast<size_t>(w - out.data()));
  return out;
}

}  // namespace mmhost
