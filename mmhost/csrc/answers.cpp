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

#include <charconv>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mmhost {
namespace {

constexpr size_t kMaxRepr = 24;  // "-1.2345678901234567e-308"

// Python's repr of a finite double, written at w (at most kMaxRepr bytes); w moves past it.
void put_repr(char*& w, double v) {
  char sci[40];
  auto [end, ec] = std::to_chars(sci, sci + sizeof sci, v, std::chars_format::scientific);
  if (ec != std::errc()) throw std::runtime_error("format_rows: to_chars failed");
  // sci: [-]d[.ddd]e(+|-)XX
  const char* p = sci;
  if (*p == '-') *w++ = *p++;
  char digits[24];
  int nd = 0;
  for (; *p != 'e'; ++p)
    if (*p != '.') digits[nd++] = *p;
  int exp = 0;
  std::from_chars(p[1] == '+' ? p + 2 : p + 1, end, exp);
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
