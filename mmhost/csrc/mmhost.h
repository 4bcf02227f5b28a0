// Declarations shared by the C++ kernels and bindings.cpp (the one file that binds them).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

// Input checks that name the offending tensor in the error (raised as RuntimeError in Python).
#define MMHOST_CHECK_CPU(t) \
  TORCH_CHECK((t).device().is_cpu(), #t " must be a CPU tensor, got ", (t).device())
#define MMHOST_CHECK_CONTIGUOUS(t) TORCH_CHECK((t).is_contiguous(), #t " must be contiguous")
#define MMHOST_CHECK_DTYPE(t, dtype) \
  TORCH_CHECK((t).scalar_type() == (dtype), #t " must be ", (dtype), ", got ", (t).scalar_type())
#define MMHOST_CHECK_DIM(t, n) \
  TORCH_CHECK((t).dim() == (n), #t " must have ", (n), " dims, got shape ", (t).sizes())
#define MMHOST_CHECK_INPUT(t, dtype, n) \
  do {                                  \
    MMHOST_CHECK_CPU(t);                \
    MMHOST_CHECK_DTYPE(t, dtype);       \
    MMHOST_CHECK_DIM(t, n);             \
    MMHOST_CHECK_CONTIGUOUS(t);         \
  } while (0)

#include <string>
#include <string_view>
#include <vector>

namespace mmhost {

// Link functions, as stored in a slab's int8 `link` column (mmhost/kernels/linear.py).
constexpr int8_t kLinkIdentity = 0;
constexpr int8_t kLinkSigmoid = 1;
constexpr int8_t kLinkSoftmax = 2;

// out[i] = link[s](weight[s] @ x[i] + bias[s]) with s = slots[i]; see linear_reference.
//   x (N, D) f32, slots (N,) i64, weight (S, K, D) f32, bias (S, K) f32, link (S,) i8
//   -> (N, K) f32. Every input must be contiguous and on the CPU.
at::Tensor linear_forward(const at::Tensor& x, const at::Tensor& slots, const at::Tensor& weight,
                          const at::Tensor& bias, const at::Tensor& link);

// Margins of every row under its model's trees; see trees_reference (mmhost/kernels/trees.py).
//   x (N, F) f32, row_model (N,) i64, nodes (M, 4) i32 records [feature, left (right = left + 1),
//   default_left, f32 bits of threshold | leaf value], tree_root (T,) i64, tree_group (T,) i32,
//   model_trees (S, 2) i64 [first, end), base (S, K) f32, num_features (S,) i32 -> (N, K) f32.
//   Every input must be contiguous and on the CPU.
at::Tensor trees_forward(const at::Tensor& x, const at::Tensor& row_model, const at::Tensor& nodes,
                         const at::Tensor& tree_root, const at::Tensor& tree_group,
                         const at::Tensor& model_trees, const at::Tensor& base,
                         const at::Tensor& num_features);

// Each row's k nearest points among its own model's; see knn_reference (mmhost/kernels/knn.py).
//   x (N, D) f32, row_model (N,) i64, points (P, D) f32, model_points (S, 2) i64 [start, end),
//   metric 0 = squared L2 (ascending), 1 = inner product (descending)
//   -> distances (N, k) f32 and point indices (N, k) i64, best first, padded with -1 / +-inf.
std::tuple<at::Tensor, at::Tensor> knn_forward(const at::Tensor& x, const at::Tensor& row_model,
                                               const at::Tensor& points,
                                               const at::Tensor& model_points, int64_t k,
                                               int64_t metric);

// What each row's k neighbours decide; see decide_reference (mmhost/kernels/knn.py).
//   dist (N, K) f32 and idx (N, K) i64 from knn_forward, labels (P,) f32, k (N,) i32,
//   flags (N, 4) i8 [distance, weights, normalize, task] -> (N, 1 + 2K) f32
//   [prediction, K reported distances, K labels], 0 past a row's k.
at::Tensor knn_decide(const at::Tensor& dist, const at::Tensor& idx, const at::Tensor& labels,
                      const at::Tensor& k, const at::Tensor& flags);

// Anomaly scores of every row under its own Random Cut Forest; see rcf_reference
// (mmhost/kernels/rcf.py). x (N, D) f32, row_model (N,) i64, nodes (M, 4) i32 records [left,
// right, cut_dim, f32 bits of cut] (-1 at a leaf), mass (M,) f32, box (M, 2, D) f32, range_sum (M,) f64,
// tree_root (T,) i64 (-1 empty), tree_mass (T,) f64, model_trees (S, 2) i64 -> (N,) f64.
at::Tensor rcf_forward(const at::Tensor& x, const at::Tensor& row_model, const at::Tensor& nodes,
                       const at::Tensor& mass,
                       const at::Tensor& box, const at::Tensor& range_sum,
                       const at::Tensor& tree_root, const at::Tensor& tree_mass,
                       const at::Tensor& model_trees);

// Each segment's Gram matrix of augmented encoded rows [z | 1 | label]; see gram_reference
// (mmhost/kernels/gram.py). numeric: columns (N,) f64 at num_pos, shifted by shift (NaN -> 0);
// categorical: codes (N,) i64 (-1: none) one-hot at cat_off (cat_size categories); label (N,)
// f64 less label_shift; order (M,) i64 rows; bounds (S, 2) i64 runs of order
// -> (S, width + 2, width + 2) f64.
at::Tensor entity_gram(const std::vector<at::Tensor>& numeric, const at::Tensor& num_pos,
                       const at::Tensor& shift, const std::vector<at::Tensor>& categorical,
                       const at::Tensor& cat_off, const at::Tensor& cat_size,
                       const at::Tensor& label, const at::Tensor& order, const at::Tensor& bounds,
                       int64_t width, double label_shift);

// Each segment's L2 logistic regression by Newton's method; see logistic_reference
// (mmhost/kernels/gram.py). The inputs of entity_gram, numeric columns scaled by scale after the
// shift -> theta (S, width + 1) f64 [weights | intercept], iterations (S,) i64 (-1: not fitted:
// no rows, over max_rows, or a singular Hessian), training accuracy (S,) f64.
std::tuple<at::Tensor, at::Tensor, at::Tensor> entity_logistic(
    const std::vector<at::Tensor>& numeric, const at::Tensor& num_pos, const at::Tensor& shift,
    const at::Tensor& scale, const std::vector<at::Tensor>& categorical,
    const at::Tensor& cat_off, const at::Tensor& cat_size, const at::Tensor& label,
    const at::Tensor& order, const at::Tensor& bounds, int64_t width, double wd,
    bool fit_intercept, bool normalize_data, int64_t max_iter, double tol, int64_t max_rows);

// (K, 3) f64 [count, mean, population variance] of each column (N,) f64 over rows order (M,)
// i64, NaN skipped (mean and variance NaN where a column has no value there).
at::Tensor column_moments(const std::vector<at::Tensor>& columns, const at::Tensor& order);

// An input schema as the native row encoders (CSV, JSON) take it (mmhost/codecs/table.py
// builds it): per column, kind 0 = number / 1 = category, its offset in the encoded row, a
// number's fill for a missing value (NaN: none) and whether NaN may pass (trees), a category
// column's categories, the index a missing value takes (-1: none) and whether an unknown one
// is ignored.
struct RowSchema {
  std::vector<int64_t> kinds, offsets, nan_ok, missing_index, ignore_unknown;
  std::vector<double> fills;
  std::vector<std::vector<std::string>> categories;
};

// A CSV body's lines as table.wrap counts them (a '\n' after the last row's bytes ends none),
// or -1 where it holds a '"' (not plain). The GIL is released by the binding.
int64_t csv_lines(std::string_view body);

// A plain CSV body -> (ok, (N, width) encoded rows, float32 or float64); ok = false where the
// per-row path must decide (see csv.cpp). The GIL is released by the binding.
std::tuple<bool, at::Tensor> csv_encode(std::string_view body, const RowSchema& schema,
                                        int64_t width, bool f64, int64_t max_rows);

// A large JSON / JSON Lines body of rows (see json.cpp): json_rows -> (its row count, its
// (n, width, 2) cells), or -1 where the Python path must decode it (another shape, a bad
// value, more than max_rows); json_encode: those cells -> (ok, (n, width) encoded rows) as
// csv_encode. The GIL is released by the bindings.
std::tuple<int64_t, at::Tensor> json_rows(std::string_view body, bool lines, int64_t max_rows);
std::tuple<bool, at::Tensor> json_encode(std::string_view body, const at::Tensor& rows,
                                         const RowSchema& schema, int64_t width, bool f64);

// The literal pieces of an answer's text around its values (see answers.cpp): head, then per
// row [row_sep] row_open list_open v (value_sep v)* list_close [label_mid label] row_close,
// then tail.
struct TextLayout {
  std::string head, row_open, list_open, value_sep, list_close, label_mid, row_close, row_sep,
      tail;
};

// (n, k) finite float64 values (and, unless empty, each row's index into labels, JSON text)
// -> the answer's bytes, each value as Python's repr writes it. The GIL is released by the
// binding.
std::string format_rows(const at::Tensor& values, const at::Tensor& label_index,
                        const std::vector<std::string>& labels, const TextLayout& layout);

}  // namespace mmhost
