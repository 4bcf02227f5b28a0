// CPU kernel of the fused multi-forest Random Cut Forest op (mmhost/kernels/rcf.py holds the
// contract, the packer and the plain-torch oracle, rcf_reference).
//
//   for each row i, forest s = row_model[i], each tree t of model_trees[s]:
//       descend (left iff x[cut_dim] <= cut) to a leaf at depth D, recording the path
//       x == the leaf's point: s_t = (1 - m/(2M)) / (D + log2(1 + m))
//       else s_t = 1/(D + 1), then bottom up over the ancestors at depth k:
//           gap = sum_j max(0, x_j - max_j) + sum_j max(0, min_j - x_j)   (float32, in order)
//           p = gap / (range_sum + gap) (float64; 0 when gap is 0: stop)
//           s_t = (1 - p) s_t + p / (k + 1)
//       score += s_t * log2(1 + M)
//   out[i] = score / trees
//
// The arithmetic is the library's, operation for operation: the two gap sums in float32 in
// dimension order, the rest in float64, trees added in order. Rows are independent (one
// parallel task takes a run of rows). A walk is a chain of dependent loads, so eight trees of a
// row are walked in lockstep (eight chains in flight), each recording its path (depth <= 4,095,
// which the artifact reader guarantees by capping a tree at 8,191 nodes; a deeper walk is an
// error), and then each path is scored bottom up.
// Node records are trusted (the reader checked them); row_model, tree ranges and roots are
// checked here, as they are cheap.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "mmhost.h"

namespace mmhost {
namespace {

constexpr int64_t kMaxDepth = 4095;

struct Forests {
  const float* x;
  const int64_t* row_model;
  const int32_t* nodes;  // (M, 4) records [left, right, cut_dim, cut bits]
  const float* mass;
  const float* box;
  const double* range_sum;
  const int64_t* tree_root;
  const double* tree_mass;
  const int64_t* model_trees;
  int64_t n, d, m, t, s;
};

constexpr int kLanes = 8;  // trees of one row walked in lockstep

// The score of one tree (before the log2(1 + M) normalizer) from its walk: the path of internal
// nodes from the root and the leaf reached.
double from_walk(const Forests& f, const float* x, const int64_t* path, int64_t depth_n,
                 int64_t leaf, double big_m) {
  const double depth = static_cast<double>(depth_n);
  const float* point = f.box + leaf * 2 * f.d;  // a leaf's min is its point
  bool seen = true;
  for (int64_t j = 0; j < f.d && seen; ++j) seen = point[j] == x[j];
  if (seen) {
    const double lm = f.mass[leaf];
    return (1.0 - lm / (2.0 * big_m)) / (depth + std::log2(1.0 + lm));
  }
  double s = 1.0 / (depth + 1.0);
  for (int64_t k = depth_n - 1; k >= 0; --k) {
    const int64_t a = path[k];
    const float* lo = f.box + a * 2 * f.d;
    const float* hi = lo + f.d;
    float above = 0.0f, below = 0.0f;
    for (int64_t j = 0; j < f.d; ++j) {  // in order, as the library sums them
      const float up = x[j] - hi[j], down = lo[j] - x[j];
      above += up > 0.0f ? up : 0.0f;
      below += down > 0.0f ? down : 0.0f;
    }
    const float gap = above + below;
    if (gap == 0.0f) break;  // inside the box: nothing above changes s
    const double g = gap;
    const double p = g / (f.range_sum[a] + g);
    s = (1.0 - p) * s + p / static_cast<double>(k + 1);
  }
  return s;
}

// Trees t .. t + lanes - 1 of one row, their walks interleaved (kLanes independent chains of
// loads in flight instead of one: a walk is bound by memory latency, not arithmetic); the
// normalized scores into out[0 .. lanes).
void walk_lanes(const Forests& f, const float* x, int64_t t, int lanes, int64_t* paths,
                double* out) {
  int64_t node[kLanes], depth[kLanes];
  bool active[kLanes];
  for (int l = 0; l < lanes; ++l) {
    const int64_t root = f.tree_root[t + l];
    TORCH_CHECK(root < f.m, "tree ", t + l, "'s root is outside the ", f.m, " nodes");
    node[l] = root;
    depth[l] = 0;
    active[l] = root >= 0 && f.nodes[4 * root + 2] >= 0;
  }
  for (bool any = true; any;) {
    any = false;
    for (int l = 0; l < lanes; ++l) {
      if (!active[l]) continue;
      const int64_t n = node[l];
      TORCH_CHECK(depth[l] < kMaxDepth, "a tree walk passed ", kMaxDepth, " levels");
      paths[l * kMaxDepth + depth[l]++] = n;
      const int32_t* rec = f.nodes + 4 * n;
      float cut;
      std::memcpy(&cut, rec + 3, sizeof cut);
      const int64_t next = rec[x[rec[2]] <= cut ? 0 : 1];
      TORCH_CHECK(next >= 0 && next < f.m, "a child index is outside the ", f.m, " nodes");
      node[l] = next;
      active[l] = f.nodes[4 * next + 2] >= 0;
      any |= active[l];
    }
  }
  // the scoring below reads each path's boxes bottom up, stopping at the first that holds the
  // row (on average a few levels up): ask for the lowest ones of every lane at once
  for (int l = 0; l < lanes; ++l) {
    const int64_t* path = paths + l * kMaxDepth;
    for (int64_t k = depth[l] - 1; k >= 0 && k >= depth[l] - 4; --k) {
      __builtin_prefetch(f.box + path[k] * 2 * f.d);
      __builtin_prefetch(f.range_sum + path[k]);
    }
  }
  for (int l = 0; l < lanes; ++l) {
    if (node[l] < 0) {  // an empty tree scores 0
      out[l] = 0.0;
      continue;
    }
    const double big_m = f.tree_mass[t + l];
    out[l] = from_walk(f, x, paths + l * kMaxDepth, depth[l], node[l], big_m) *
             std::log2(1.0 + big_m);
  }
}

}  // namespace

at::Tensor rcf_forward(const at::Tensor& x, const at::Tensor& row_model, const at::Tensor& nodes,
                       const at::Tensor& mass,
                       const at::Tensor& box, const at::Tensor& range_sum,
                       const at::Tensor& tree_root, const at::Tensor& tree_mass,
                       const at::Tensor& model_trees) {
  MMHOST_CHECK_INPUT(x, at::kFloat, 2);
  MMHOST_CHECK_INPUT(row_model, at::kLong, 1);
  MMHOST_CHECK_INPUT(nodes, at::kInt, 2);
  MMHOST_CHECK_INPUT(mass, at::kFloat, 1);
  MMHOST_CHECK_INPUT(box, at::kFloat, 3);
  MMHOST_CHECK_INPUT(range_sum, at::kDouble, 1);
  MMHOST_CHECK_INPUT(tree_root, at::kLong, 1);
  MMHOST_CHECK_INPUT(tree_mass, at::kDouble, 1);
  MMHOST_CHECK_INPUT(model_trees, at::kLong, 2);
  Forests f{x.data_ptr<float>(),
            row_model.data_ptr<int64_t>(),
            nodes.data_ptr<int32_t>(),
            mass.data_ptr<float>(),
            box.data_ptr<float>(),
            range_sum.data_ptr<double>(),
            tree_root.data_ptr<int64_t>(),
            tree_mass.data_ptr<double>(),
            model_trees.data_ptr<int64_t>(),
            x.size(0),
            x.size(1),
            nodes.size(0),
            tree_root.size(0),
            model_trees.size(0)};
  TORCH_CHECK(nodes.size(1) == 4 && box.size(0) == f.m && box.size(1) == 2 && box.size(2) == f.d,
              "nodes must be (M, 4) and box (M, 2, D) for x of D = ", f.d);
  TORCH_CHECK(mass.size(0) == f.m && range_sum.size(0) == f.m,
              "mass and range_sum must have M = ", f.m, " entries");
  TORCH_CHECK(tree_mass.size(0) == f.t && model_trees.size(1) == 2 && row_model.size(0) == f.n,
              "tree_mass must be (T,), model_trees (S, 2) and row_model (N,)");
  at::Tensor out = at::zeros({f.n}, x.options().dtype(at::kDouble));
  double* op = out.data_ptr<double>();
  at::parallel_for(0, f.n, 4, [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> paths(kLanes * kMaxDepth);
    double scores[kLanes];
    for (int64_t i = r0; i < r1; ++i) {
      const int64_t s = f.row_model[i];
      TORCH_CHECK(s >= 0 && s < f.s, "row_model[", i, "] = ", s, " is outside [0, ", f.s, ")");
      const int64_t t0 = f.model_trees[2 * s], t1 = f.model_trees[2 * s + 1];
      TORCH_CHECK(0 <= t0 && t0 <= t1 && t1 <= f.t, "model_trees[", s, "] is not a tree range");
      double total = 0.0;
      for (int64_t t = t0; t < t1; t += kLanes) {
        const int lanes = static_cast<int>(std::min<int64_t>(kLanes, t1 - t));
        walk_lanes(f, f.x + i * f.d, t, lanes, paths.data(), scores);
        for (int l = 0; l < lanes; ++l) total += scores[l];  // trees added in order
      }
      op[i] = t1 > t0 ? total / static_cast<double>(t1 - t0) : 0.0;
    }
  });
  return out;
}

}  // namespace mmhost
