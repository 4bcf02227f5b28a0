// CPU kernel of the fused multi-model tree-ensemble op (mmhost/kernels/trees.py holds the
// contract, the packer and the plain-torch oracle, trees_reference).
//
//   for i in range(N):
//       s = row_model[i]
//       out[i] = base[s]
//       for t in range(model_trees[s, 0], model_trees[s, 1]):
//           n = tree_root[t]
//           while feature[n] >= 0:
//               v = x[i, feature[n]]
//               go_left = default_left[n] if isnan(v) else v < threshold[n]
//               n = left[n] if go_left else left[n] + 1
//           out[i, tree_group[t]] += value[n]
//
// A tree walk is a chain of dependent loads (a node, then x at its feature, then the child), so
// the kernel is bound by load latency, not arithmetic:
// - A node is one 16-byte record (feature, left, default_left, threshold|value bits) and its two
//   children are adjacent: one cache line per step, and the step is branch-free (child =
//   left + !go_left), so an unpredictable split costs no mispredicted branch.
// - kLanes (row, tree) pairs are walked in lockstep, a level at a time, so the CPU has kLanes
//   independent chains of loads in flight instead of one.
// - Consecutive rows of one model (a run; batches sorted by model make long ones) walk their
//   pairs tree-major: a tree's nodes are read from L1 by every row of the run. Short runs
//   prefetch the top levels of the trees ahead instead.
// - Leaves are added in tree order per row, in float32, exactly as the reference does: outputs
//   equal trees_reference's and XGBoost's margins bit for bit.
// Validation is what is cheap: row_model, num_features and each model's tree range per row, each
// walked tree's root and group, and a depth bound per walk (a corrupt pack cannot loop forever).
// Node records themselves are trusted: pack() validated them.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "mmhost.h"

namespace mmhost {
namespace {

// Deepest tree the walk follows (edges root -> leaf); mmhost.convert.xgboost.MAX_DEPTH.
constexpr int kMaxDepth = 64;

// Pairs walked in lockstep (8.6 M-node pack of 1,000 models): 16 was 5% slower on one row per
// model, 15% on one model's 1,000 rows and 40% on runs of 10 rows; 4 was ~1.5x slower on one row
// per model (a prototype), too few loads in flight.
constexpr int kLanes = 8;

// Runs shorter than kLanes rows (a lane group spans several trees) prefetch the first lines of
// the trees the next group will walk: 2 lines (128 B, 8 records) hold a tree's top three levels,
// as pack() numbers nodes breadth-first. On 1,000 models x 1 row (cold) this took 19 ms to 15;
// on runs of 10 rows it cost 30% (the trees are then read by many rows anyway), so it is off
// there.
constexpr int kPrefetchLines = 2;

// A call uses a second thread only when each thread gets at least this many tree walks (~0.15 ms
// of one core at depth 6): 8,200 walks took 290 us on one thread and 170 on two, 4,100 took the
// same on both.
constexpr int64_t kMinWalksPerTask = 4096;

// One node record of `nodes` (M, 4) int32.
struct Node {
  int32_t feature;       // -1 at a leaf
  int32_t left;          // absolute; the right child is left + 1
  int32_t default_left;  // 0/1: where a NaN goes
  float value;           // threshold at a split, leaf value at a leaf
};
static_assert(sizeof(Node) == 4 * sizeof(int32_t), "a node record is one row of nodes (M, 4)");

// One call's inputs.
struct Problem {
  const float* x;               // (N, F)
  const int64_t* row_model;     // (N,)
  const int32_t* nodes;         // (M, 4)
  const int64_t* tree_root;     // (T,)
  const int32_t* tree_group;    // (T,)
  const int64_t* model_trees;   // (S, 2): [first, end) tree of each model
  const float* base;            // (S, K)
  const int32_t* num_features;  // (S,)
  float* out;                   // (N, K)
  int64_t n, f, m, t, s, k;
};

inline Node load_node(const int32_t* nodes, int64_t i) {
  Node q;
  std::memcpy(&q, nodes + 4 * i, sizeof q);  // one 16-byte load; no aliasing of int32 as float
  return q;
}

// The first row whose model, model columns or model tree range is invalid, or -1; and the tree
// walks of rows [0, n) in *walks.
int64_t check_rows(const Problem& p, int64_t* walks) {
  int64_t total = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    const int64_t s = p.row_model[i];
    if (static_cast<uint64_t>(s) >= static_cast<uint64_t>(p.s)) return i;
    const int64_t t0 = p.model_trees[2 * s], t1 = p.model_trees[2 * s + 1];
    if (p.num_features[s] > p.f || t0 < 0 || t1 < t0 || t1 > p.t) return i;
    total += t1 - t0;
  }
  *walks = total;
  return -1;
}

[[noreturn]] void bad_row(const Problem& p, int64_t i) {
  const int64_t s = p.row_model[i];
  TORCH_CHECK(static_cast<uint64_t>(s) < static_cast<uint64_t>(p.s), "row_model[", i, "] = ", s,
              " is not a packed model (valid models: 0 <= model < ", p.s, ")");
  TORCH_CHECK(p.num_features[s] <= p.f, "row ", i, " (model ", s, ") reads ", p.num_features[s],
              " columns, x has F=", p.f);
  TORCH_CHECK(false, "model_trees[", s, "] = [", p.model_trees[2 * s], ", ",
              p.model_trees[2 * s + 1], "] is not a range of the ", p.t, " packed trees");
}

// Rows [r0, r1), all of model s: out = base[s], then every tree's leaf added, tree-major.
void score_run(const Problem& p, int64_t s, int64_t r0, int64_t r1) {
  static const float kNoColumns = 0.f;  // x row stand-in when F == 0 (then no tree splits)
  const int64_t k = p.k, f = p.f;
  const float* __restrict__ x = p.x;
  const int32_t* __restrict__ nodes = p.nodes;
  float* __restrict__ out = p.out;
  for (int64_t r = r0; r < r1; ++r) std::copy_n(p.base + s * k, k, out + r * k);

  const int64_t t0 = p.model_trees[2 * s], t1 = p.model_trees[2 * s + 1];
  const int64_t pairs = (r1 - r0) * (t1 - t0);
  int64_t t = t0, r = r0;  // the next pair, tree-major
  const bool prefetch = r1 - r0 < kLanes;
  int64_t prefetched = t0;  // trees [t0, prefetched) are prefetched
  for (int64_t q0 = 0; q0 < pairs; q0 += kLanes) {
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, pairs - q0));
    int64_t node[kLanes];
    const float* row[kLanes];
    float* acc[kLanes];  // out[r, tree_group[t]]
    for (int l = 0; l < kLanes; ++l) {
      if (l < lanes) {
        const int64_t root = p.tree_root[t], group = p.tree_group[t];
        TORCH_CHECK(root >= 0 && root < p.m && group >= 0 && group < k, "tree ", t,
                    " has root ", root, " and group ", group, ": not a tree of the ", p.m,
                    "-node pack with K=", k);
        node[l] = root;
        row[l] = f > 0 ? x + r * f : &kNoColumns;
        acc[l] = out + r * k + group;
        if (++r == r1) {
          r = r0;
          ++t;
        }
      } else {  // idle lanes repeat lane 0; their leaves are not added
        node[l] = node[0];
        row[l] = row[0];
        acc[l] = acc[0];
      }
    }

    for (const int64_t ahead = prefetch ? std::min(t + kLanes, t1) : 0; prefetched < ahead;
         ++prefetched) {
      const int32_t* top = nodes + 4 * p.tree_root[prefetched];  // checked when walked
      for (int c = 0; c < kPrefetchLines; ++c) __builtin_prefetch(top + 16 * c);
    }

    float leaf[kLanes];
    for (int level = 0;; ++level) {
      bool any = false;
      for (int l = 0; l < kLanes; ++l) {
        const Node q = load_node(nodes, node[l]);
        const bool split = q.feature >= 0;
        const float v = row[l][split ? q.feature : 0];
        const bool go_left = std::isnan(v) ? q.default_left != 0 : v < q.value;
        node[l] = split ? q.left + (go_left ? 0 : 1) : node[l];
        leaf[l] = q.value;  // the leaf's value once the walk has stopped
        any |= split;
      }
      if (!any) break;
      TORCH_CHECK(level < kMaxDepth, "a tree of model ", s, " (trees ", t0, ":", t1,
                  ") did not reach a leaf within ", kMaxDepth, " levels: a corrupt pack");
    }
    for (int l = 0; l < lanes; ++l) *acc[l] += leaf[l];
  }
}

// Rows [begin, end): each run of consecutive rows with one model is scored tree-major.
void score_rows(const Problem& p, int64_t begin, int64_t end) {
  for (int64_t r0 = begin; r0 < end;) {
    const int64_t s = p.row_model[r0];
    int64_t r1 = r0 + 1;
    while (r1 < end && p.row_model[r1] == s) ++r1;
    score_run(p, s, r0, r1);
    r0 = r1;
  }
}

}  // namespace

at::Tensor trees_forward(const at::Tensor& x, const at::Tensor& row_model, const at::Tensor& nodes,
                         const at::Tensor& tree_root, const at::Tensor& tree_group,
                         const at::Tensor& model_trees, const at::Tensor& base,
                         const at::Tensor& num_features) {
  MMHOST_CHECK_INPUT(x, at::kFloat, 2);
  MMHOST_CHECK_INPUT(row_model, at::kLong, 1);
  MMHOST_CHECK_INPUT(nodes, at::kInt, 2);
  MMHOST_CHECK_INPUT(tree_root, at::kLong, 1);
  MMHOST_CHECK_INPUT(tree_group, at::kInt, 1);
  MMHOST_CHECK_INPUT(model_trees, at::kLong, 2);
  MMHOST_CHECK_INPUT(base, at::kFloat, 2);
  MMHOST_CHECK_INPUT(num_features, at::kInt, 1);

  const int64_t n = x.size(0), f = x.size(1), m = nodes.size(0), t = tree_root.size(0);
  const int64_t s = base.size(0), k = base.size(1);
  TORCH_CHECK(row_model.size(0) == n, "row_model must be (", n, ",) to match x, got ",
              row_model.sizes());
  TORCH_CHECK(nodes.size(1) == 4, "nodes must be (M, 4) records, got ", nodes.sizes());
  TORCH_CHECK(tree_group.size(0) == t, "tree_group must be (", t, ",) like tree_root, got ",
              tree_group.sizes());
  TORCH_CHECK(model_trees.size(0) == s && model_trees.size(1) == 2, "model_trees must be (", s,
              ", 2) for the S=", s, " models of base, got ", model_trees.sizes());
  TORCH_CHECK(num_features.size(0) == s, "num_features must be (", s, ",) for the S=", s,
              " models of base, got ", num_features.sizes());

  at::Tensor out = at::empty({n, k}, x.options());  // (N, K)
  if (n == 0) return out;
  const Problem p{x.data_ptr<float>(),           row_model.data_ptr<int64_t>(),
                  nodes.data_ptr<int32_t>(),     tree_root.data_ptr<int64_t>(),
                  tree_group.data_ptr<int32_t>(), model_trees.data_ptr<int64_t>(),
                  base.data_ptr<float>(),        num_features.data_ptr<int32_t>(),
                  out.data_ptr<float>(),         n, f, m, t, s, k};

  int64_t walks = 0;
  const int64_t bad = check_rows(p, &walks);
  if (bad >= 0) bad_row(p, bad);

  // Threads only pay off once each has kMinWalksPerTask tree walks; smaller batches (and calls
  // from inside a parallel region) run inline on the calling thread.
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), walks / kMinWalksPerTask);
  if (threads <= 1 || at::in_parallel_region()) {
    score_rows(p, 0, n);
    return out;
  }
  // Cut rows into `threads` ranges of about equal walks (models differ in size, rows do not).
  std::vector<int64_t> cut(threads + 1, n);
  cut[0] = 0;
  int64_t done = 0;
  for (int64_t i = 0, c = 1; i < n && c < threads; ++i) {
    const int64_t si = p.row_model[i];
    done += p.model_trees[2 * si + 1] - p.model_trees[2 * si];
    if (done * threads >= walks * c) cut[c++] = i + 1;
  }
  at::parallel_for(0, threads, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) score_rows(p, cut[c], cut[c + 1]);
  });
  return out;
}

}  // namespace mmhost
