// The one file that declares mmhost._C's Python bindings (imported only by
// mmhost/kernels/_native.py). Kernels live in their own .cpp files, declared in mmhost.h.

#include <torch/extension.h>

#include "mmhost.h"

namespace py = pybind11;

// setup.py and _native.py define MMHOST_SOURCE_HASH as the digest of these sources (a bare
// token: a quoted string does not survive every build tool's command line)
#define MMHOST_STRINGIFY2(x) #x
#define MMHOST_STRINGIFY(x) MMHOST_STRINGIFY2(x)
#ifdef MMHOST_SOURCE_HASH
#define MMHOST_SOURCE_DIGEST MMHOST_STRINGIFY(MMHOST_SOURCE_HASH)
#else
#define MMHOST_SOURCE_DIGEST ""
#endif

namespace {

std::string_view view(const py::bytes& body) {
  return {PyBytes_AS_STRING(body.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(body.ptr()))};
}

mmhost::RowSchema row_schema(std::vector<int64_t> kinds, std::vector<int64_t> offsets,
                             std::vector<double> fills, std::vector<int64_t> nan_ok,
                             std::vector<std::vector<std::string>> categories,
                             std::vector<int64_t> missing_index,
                             std::vector<int64_t> ignore_unknown) {
  mmhost::RowSchema s{std::move(kinds),          std::move(offsets), std::move(nan_ok),
                      std::move(missing_index), std::move(ignore_unknown), std::move(fills),
                      std::move(categories)};
  const size_t n = s.kinds.size();
  if (s.offsets.size() != n || s.fills.size() != n || s.nan_ok.size() != n ||
      s.categories.size() != n || s.missing_index.size() != n || s.ignore_unknown.size() != n)
    throw std::invalid_argument("row encoder: every schema list needs one entry a column");
  return s;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmhost C++ CPU kernels; see mmhost/kernels/*.py for each op's contract.";

  // The GIL is released for the whole call: kernels touch no Python objects, and other request
  // threads can keep decoding and batching while a batch is scored.
  m.def(
      "csv_encode",
      [](py::bytes body, std::vector<int64_t> kinds, std::vector<int64_t> offsets,
         std::vector<double> fills, std::vector<int64_t> nan_ok,
         std::vector<std::vector<std::string>> categories, std::vector<int64_t> missing_index,
         std::vector<int64_t> ignore_unknown, int64_t width, bool f64, int64_t max_rows) {
        const mmhost::RowSchema schema =
            row_schema(std::move(kinds), std::move(offsets), std::move(fills), std::move(nan_ok),
                       std::move(categories), std::move(missing_index), std::move(ignore_unknown));
        const std::string_view text = view(body);
        py::gil_scoped_release release;
        return mmhost::csv_encode(text, schema, width, f64, max_rows);
      },
      R"doc(A plain CSV body -> (ok, (N, width) encoded rows); see mmhost/codecs/table.py.)doc");

  m.def(
      "csv_lines",
      [](py::bytes body) {
        const std::string_view text = view(body);
        py::gil_scoped_release release;
        return mmhost::csv_lines(text);
      },
      R"doc(A CSV body -> its line count, or -1 where it holds a quote; see codecs/table.py.)doc");

  m.def(
      "json_rows",
      [](py::bytes body, bool lines, int64_t max_rows) {
        const std::string_view text = view(body);
        py::gil_scoped_release release;
        return mmhost::json_rows(text, lines, max_rows);
      },
      R"doc(A JSON / JSON Lines body -> (row count or -1, its cells); see codecs/table.py.)doc");

  m.def(
      "json_encode",
      [](py::bytes body, const at::Tensor& rows, std::vector<int64_t> kinds,
         std::vector<int64_t> offsets, std::vector<double> fills, std::vector<int64_t> nan_ok,
         std::vector<std::vector<std::string>> categories, std::vector<int64_t> missing_index,
         std::vector<int64_t> ignore_unknown, int64_t width, bool f64) {
        const mmhost::RowSchema schema =
            row_schema(std::move(kinds), std::move(offsets), std::move(fills), std::move(nan_ok),
                       std::move(categories), std::move(missing_index), std::move(ignore_unknown));
        const std::string_view text = view(body);
        py::gil_scoped_release release;
        return mmhost::json_encode(text, rows, schema, width, f64);
      },
      R"doc(json_rows' cells of a body -> (ok, (n, width) encoded rows); see codecs/table.py.)doc");

  m.def(
      "format_rows",
      [](const at::Tensor& values, const at::Tensor& label_index,
         const std::vector<std::string>& labels, std::vector<std::string> layout) {
        if (layout.size() != 9)
          throw std::invalid_argument("format_rows: the layout has 9 pieces");
        mmhost::TextLayout t{layout[0], layout[1], layout[2], layout[3], layout[4],
                             layout[5], layout[6], layout[7], layout[8]};
        std::string out;
        {
          py::gil_scoped_release release;
          out = mmhost::format_rows(values, label_index, labels, t);
        }
        return py::bytes(out);
      },
      R"doc((n, k) float64 scores -> an answer's bytes; see mmhost/codecs/text.py.)doc");

  m.def("linear_forward", &mmhost::linear_forward,
        R"doc(Score every row of x with the model in its slot (fused multi-model linear).

out[i] = link[s](weight[s] @ x[i] + bias[s]) with s = slots[i]; link 0 identity,
1 sigmoid (elementwise), 2 softmax over the K outputs.

Args:
    x: (N, D) float32, contiguous, CPU.
    slots: (N,) int64, each in [0, S).
    weight: (S, K, D) float32, contiguous.
    bias: (S, K) float32, contiguous.
    link: (S,) int8.

Returns:
    (N, K) float32.

Raises:
    RuntimeError: on a wrong dtype, device, layout or shape, or a slot outside [0, S).
)doc",
        py::arg("x"), py::arg("slots"), py::arg("weight"), py::arg("bias"), py::arg("link"),
        py::call_guard<py::gil_scoped_release>());

  // The trees op's argument layout: 2 = model_trees as (S, 2) ranges. mmhost/kernels/trees.py
  // runs the reference instead of a build whose layout differs (a stale build).
  // Which sources this build is of (mmhost/kernels/_sources.py): another digest is a stale
  // build, which _native.py replaces by compiling the current sources.
  m.attr("SOURCE_HASH") = MMHOST_SOURCE_DIGEST;
  m.attr("TREES_ABI") = 2;
  // The rcf op's argument layout: 2 = nodes as (M, 4) records. mmhost/kernels/rcf.py runs the
  // reference instead of a build whose layout differs (a stale build).
  m.attr("RCF_ABI") = 2;
  m.def("trees_forward", &mmhost::trees_forward,
        R"doc(Margins of every row under its model's trees (fused multi-model tree ensembles).

out[i] = base[s] + the leaf values of model s's trees reached by x[i], each added to output
tree_group[t], in tree order in float32; s = row_model[i]. At a split: NaN goes to
default_left, else x < threshold goes left; the right child is left + 1. No link is applied.

Args:
    x: (N, F) float32, contiguous, CPU; NaN = missing.
    row_model: (N,) int64, each in [0, S); runs of one model are walked tree-major.
    nodes: (M, 4) int32 records [feature (-1 = leaf), left (absolute), default_left,
        float32 bits of the threshold (split) or leaf value (leaf)], as pack() writes them.
    tree_root: (T,) int64, absolute root node of each tree.
    tree_group: (T,) int32, the output each tree adds to, in [0, K).
    model_trees: (S, 2) int64; model s owns trees model_trees[s, 0]:model_trees[s, 1].
    base: (S, K) float32 base margins.
    num_features: (S,) int32, each <= F.

Returns:
    (N, K) float32 margins.

Raises:
    RuntimeError: on a wrong dtype, device, layout or shape; a row_model outside [0, S); a row
    whose model reads more than F columns; a tree root or group out of range; a walk deeper
    than 64 levels. Node records are trusted (pack() validates them).
)doc",
        py::arg("x"), py::arg("row_model"), py::arg("nodes"), py::arg("tree_root"),
        py::arg("tree_group"), py::arg("model_trees"), py::arg("base"), py::arg("num_features"),
        py::call_guard<py::gil_scoped_release>());

  m.def("knn_forward", &mmhost::knn_forward,
        R"doc(Each row's k nearest points among its own model's (fused multi-model exact k-NN).

For row i with s = row_model[i], the points model_points[s, 0]:model_points[s, 1] of points
are ranked by squared L2 distance sum((x[i] - p)**2), ascending (metric 0), or by inner
product x[i] . p, descending (metric 1); equal values keep point order.

Args:
    x: (N, D) float32, contiguous, CPU.
    row_model: (N,) int64, each in [0, S).
    points: (P, D) float32, every model's points.
    model_points: (S, 2) int64; model s owns points [model_points[s, 0], model_points[s, 1]).
    k: neighbours per row, >= 1.
    metric: 0 (squared L2) or 1 (inner product).

Returns:
    (distances (N, k) float32, indices (N, k) int64 into points), best first; a model with
    fewer than k points pads with index -1 and distance +inf (L2) / -inf (inner product).

Raises:
    RuntimeError: on a wrong dtype, device, layout or shape; a row_model outside [0, S); a
    model range outside the points.
)doc",
        py::arg("x"), py::arg("row_model"), py::arg("points"), py::arg("model_points"),
        py::arg("k"), py::arg("metric"), py::call_guard<py::gil_scoped_release>());

  m.def("knn_decide", &mmhost::knn_decide,
        R"doc(What each row's k nearest neighbours decide (the k-NN family's vote and mean).

Args:
    dist: (N, K) float32 and idx: (N, K) int64, as knn_forward returns them.
    labels: (P,) float32, a label per point (a classifier's class indices).
    k: (N,) int32, the neighbours each row's model uses (<= K).
    flags: (N, 4) int8 per row: distance (0 squared L2, 1 euclidean, 2 inner product,
        3 cosine), weights (0 uniform, 1 distance), normalize (unused here), task
        (0 regressor, 1 classifier).

Returns:
    (N, 1 + 2K) float32: the prediction (the winning label, or the weighted mean), the K
    reported distances, the K labels; 0 past a row's k.

Raises:
    RuntimeError: on a wrong dtype, device, layout or shape, or an index past the labels.
)doc",
        py::arg("dist"), py::arg("idx"), py::arg("labels"), py::arg("k"), py::arg("flags"),
        py::call_guard<py::gil_scoped_release>());

  m.def("rcf_forward", &mmhost::rcf_forward,
        R"doc(Anomaly scores of every row under its own Random Cut Forest, as AWS's RCF library
scores them (see mmhost/kernels/rcf.py for the arithmetic).

Args:
    x: (N, D) float32, contiguous, CPU.
    row_model: (N,) int64, each in [0, S).
    nodes: (M, 4) int32 records [left, right, cut_dim, float32 bits of cut]; absolute
        children, -1 (and cut_dim -1) at a leaf.
    mass: (M,) float32.
    box: (M, 2, D) float32 [min, max]; a leaf's min is its point.
    range_sum: (M,) float64.
    tree_root: (T,) int64 absolute, -1 for an empty tree. tree_mass: (T,) float64.
    model_trees: (S, 2) int64 [first, end) trees of each forest.

Returns:
    (N,) float64 scores.

Raises:
    RuntimeError: on a wrong dtype, device, layout or shape; a row_model, tree range or root
    out of range; a walk deeper than 4,095 levels.
)doc",
        py::arg("x"), py::arg("row_model"), py::arg("nodes"), py::arg("mass"), py::arg("box"),
        py::arg("range_sum"),
        py::arg("tree_root"), py::arg("tree_mass"), py::arg("model_trees"),
        py::call_guard<py::gil_scoped_release>());

  m.def("entity_gram", &mmhost::entity_gram,
        R"doc(Each segment's Gram matrix of its augmented encoded rows (mmhost/kernels/gram.py).

Args:
    numeric: list of (N,) float64 columns; num_pos: (F_num,) int64 their features;
        shift: (F_num,) float64 subtracted from each (a NaN becomes 0).
    categorical: list of (N,) int64 codes (-1: none); cat_off, cat_size: (F_cat,) int64,
        the first feature and the number of categories of each.
    label: (N,) float64. order: (M,) int64 rows. bounds: (S, 2) int64 runs [start, end) of
        order, one per segment. width: the encoded features. label_shift: subtracted from
        the label (its mean: no cancellation in the label's sums of squares).

Returns:
    (S, width + 2, width + 2) float64: sum over each segment's rows of a a' with
    a = [features | 1 | label - label_shift].

Raises:
    RuntimeError: on a wrong dtype, layout or shape, overlapping features, a run outside
    order, an order entry outside the rows or a code outside its categories.
)doc",
        py::arg("numeric"), py::arg("num_pos"), py::arg("shift"), py::arg("categorical"),
        py::arg("cat_off"), py::arg("cat_size"), py::arg("label"), py::arg("order"),
        py::arg("bounds"), py::arg("width"), py::arg("label_shift") = 0.0,
        py::call_guard<py::gil_scoped_release>());

  m.def("column_moments", &mmhost::column_moments,
        R"doc((K, 3) float64 [count, mean, population variance] of each (N,) float64 column over
the rows order (M,) int64, NaN skipped (mmhost/kernels/gram.py).
)doc",
        py::arg("columns"), py::arg("order"), py::call_guard<py::gil_scoped_release>());

  m.def("entity_logistic", &mmhost::entity_logistic,
        R"doc(Each segment's L2 logistic regression, fitted by Newton's method on its encoded rows
(mmhost/kernels/gram.py; the objective of mmhost/train/solvers.py's logistic).

Args: entity_gram's, with scale (F_num,) float64 applied after each numeric column's shift;
    wd (L2), fit_intercept, normalize_data, max_iter, tol (the gradient's largest entry),
    max_rows (a larger segment is left to the caller).

Returns:
    theta (S, width + 1) float64 [weights | intercept], iterations (S,) int64 (-1: not fitted
    here), training accuracy (S,) float64.
)doc",
        py::arg("numeric"), py::arg("num_pos"), py::arg("shift"), py::arg("scale"),
        py::arg("categorical"), py::arg("cat_off"), py::arg("cat_size"), py::arg("label"),
        py::arg("order"), py::arg("bounds"), py::arg("width"), py::arg("wd"),
        py::arg("fit_intercept"), py::arg("normalize_data"), py::arg("max_iter"), py::arg("tol"),
        py::arg("max_rows"), py::call_guard<py::gil_scoped_release>());
}
