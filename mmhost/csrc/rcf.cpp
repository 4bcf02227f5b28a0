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
// dimension order, the rest in float64, trees added in order. Rows are independent (a parallel
// task takes a run of rows). A walk is a chain of dependent loads (each record names the next),
// bound by memory latency once the forests outgrow the caches; a thread therefore keeps many
// walks in flight, each advanced one load at a time (Walker, below). A path is at most 4,095
// levels deep, which the artifact reader guarantees by capping a tree at 8,191 nodes; a deeper
// walk is an error.
// Node records are trusted (the reader checked them); row_model, tree ranges and roots are
// checked here, as they are cheap.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
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

// A walk is a chain of dependent loads: record, child's record, ... then, bottom up, the boxes
// of the path until one holds the row. One walk at a time leaves the core waiting on memory
// (every load misses the caches once forests outgrow them), so a thread keeps kSlots walks in
// flight and advances them in turn, one step each: a step uses what an earlier step asked for
// (a prefetch) and asks for what its walk needs next. With kSlots walks interleaved, kSlots
// misses are outstanding at once instead of one (memory-level parallelism), and a walk that
// ends early gives its slot to the next (row, tree) pair at once.
constexpr int kSlots = 16;
// A slot's path buffer: kMaxDepth entries and a cache line more, so that the slots' paths do not
// all fall in the same cache set (32 KiB apart).
constexpr int64_t kPathStride = kMaxDepth + 1 + 8;

// What a walk's next step reads (asked for by the step before it):
//   kDescend  the record of w.node
//   kLeaf     the leaf's point, and the box and range sum of its parent
//   kAscend   the box and range sum of path[w.k]
//   kSeen     the leaf's mass (only when the row is the leaf's point)
enum Phase : int32_t { kIdle, kDescend, kLeaf, kAscend, kSeen };

struct Walk {
  const float* x;     // the row
  int64_t* path;      // internal nodes from the root, kMaxDepth entries
  int64_t pair;       // index of this (row, tree) in the chunk's scores
  int64_t tree;
  int64_t node;       // descend: the node to read; then the leaf
  double s;           // the score so far
  int32_t depth;      // internal nodes on the path
  int32_t k;          // ascend: the depth of the ancestor to read
  Phase phase;
};

inline void ask_box(const Forests& f, int64_t a) {
  __builtin_prefetch(f.box + a * 2 * f.d);
  if (f.d > 8) __builtin_prefetch(f.box + a * 2 * f.d + 16);
  __builtin_prefetch(f.range_sum + a);
}

// gap = sum_j max(0, x_j - max_j) + sum_j max(0, min_j - x_j) for box a, each sum in float32 in
// dimension order, as the library sums them
inline float gap_to(const Forests& f, const float* x, int64_t a) {
  const float* lo = f.box + a * 2 * f.d;
  const float* hi = lo + f.d;
  float above = 0.0f, below = 0.0f;
  for (int64_t j = 0; j < f.d; ++j) {
    const float up = x[j] - hi[j], down = lo[j] - x[j];
    above += up > 0.0f ? up : 0.0f;
    below += down > 0.0f ? down : 0.0f;
  }
  return above + below;
}

// log2(1 + m), from a table for the whole numbers a mass takes (the same values std::log2 gives)
inline double log2_1p(double m) {
  constexpr int kTable = 4096;
  static const std::vector<double> table = [] {
    std::vector<double> t(kTable);
    for (int i = 0; i < kTable; ++i) t[i] = std::log2(1.0 + i);
    return t;
  }();
  const int64_t i = static_cast<int64_t>(m);
  return i >= 0 && i < kTable && static_cast<double>(i) == m ? table[i] : std::log2(1.0 + m);
}

class Walker {
 public:
  Walker(const Forests& f, int64_t* paths) : f_(f) {
    for (int l = 0; l < kSlots; ++l) {
      walks_[l].path = paths + l * kPathStride;
      walks_[l].phase = kIdle;
    }
  }

  // Scores every (row, tree) pair of rows [r0, r1) into scores[pair], a row's pairs together in
  // tree order (the caller sized scores), each normalized by log2(1 + M). Consecutive rows of
  // one forest (up to kGroup of them) are walked tree by tree, so that a tree's upper nodes are
  // read from the caches by every row of the group after the first.
  void run(int64_t r0, int64_t r1, double* scores) {
    scores_ = scores;
    last_ = r1;
    next_ = {};
    next_.g1 = r0;
    open_group();
    int live = 0;
    for (int l = 0; l < kSlots; ++l) live += start(walks_[l]);
    while (live > 0) {
      for (int l = 0; l < kSlots; ++l) {
        Walk& w = walks_[l];
        if (w.phase == kIdle || step(w)) continue;
        live -= 1 - start(w);
      }
    }
  }

 private:
  static constexpr int64_t kGroup = 64;

  // The pairs of rows [g0, g1), all of one forest with trees [t0, t1), tree by tree: the next
  // is (row, tree); base is the pair index of (g0, t0).
  struct Pairs {
    int64_t g0, g1, t0, t1, row, tree, base;
  };

  void open_group() {  // the next run of rows of one forest (run's caller checked the ranges)
    next_.base += (next_.g1 - next_.g0) * (next_.t1 - next_.t0);
    next_.g0 = next_.g1;
    while (next_.g0 < last_) {
      const int64_t s = f_.row_model[next_.g0];
      next_.t0 = f_.model_trees[2 * s];
      next_.t1 = f_.model_trees[2 * s + 1];
      next_.g1 = next_.g0 + 1;
      while (next_.g1 < last_ && next_.g1 - next_.g0 < kGroup && f_.row_model[next_.g1] == s) {
        ++next_.g1;
      }
      next_.row = next_.g0;
      next_.tree = next_.t0;
      if (next_.t0 < next_.t1) return;
      next_.g0 = next_.g1;  // a forest without trees: no pairs
    }
  }

  // Gives w the next pair (scoring empty trees at once); 1 if it got one, 0 if none is left.
  int start(Walk& w) {
    for (;;) {
      Pairs& p = next_;
      if (p.g0 >= last_) {
        w.phase = kIdle;
        return 0;
      }
      w.x = f_.x + p.row * f_.d;
      w.tree = p.tree;
      w.pair = p.base + (p.row - p.g0) * (p.t1 - p.t0) + (p.tree - p.t0);
      if (++p.row == p.g1) {
        p.row = p.g0;
        if (++p.tree == p.t1) open_group();
      }
      const int64_t root = f_.tree_root[w.tree];
      TORCH_CHECK(root < f_.m, "tree ", w.tree, "'s root is outside the ", f_.m, " nodes");
      if (root < 0) {  // an empty tree scores 0
        scores_[w.pair] = 0.0;
        continue;
      }
      w.node = root;
      w.depth = 0;
      w.phase = kDescend;
      __builtin_prefetch(f_.nodes + 4 * root);
      return 1;
    }
  }

  void finish(Walk& w, double s) { scores_[w.pair] = s * log2_1p(f_.tree_mass[w.tree]); }

  // Advances w by one step: false once its score is written.
  bool step(Walk& w) {
    switch (w.phase) {
      case kDescend: {
        const int64_t n = w.node;
        const int32_t* rec = f_.nodes + 4 * n;
        if (rec[2] < 0) {  // the leaf, at depth D: unseen, s = 1 / (D + 1) before the ancestors
          w.s = 1.0 / (static_cast<double>(w.depth) + 1.0);
          w.k = w.depth - 1;
          w.phase = kLeaf;
          __builtin_prefetch(f_.box + n * 2 * f_.d);  // a leaf's min is its point
          if (w.k >= 0) ask_box(f_, w.path[w.k]);
          return true;
        }
        TORCH_CHECK(w.depth < kMaxDepth, "a tree walk passed ", kMaxDepth, " levels");
        w.path[w.depth++] = n;
        float cut;
        std::memcpy(&cut, rec + 3, sizeof cut);
        const int64_t next = rec[w.x[rec[2]] <= cut ? 0 : 1];
        TORCH_CHECK(next >= 0 && next < f_.m, "a child index is outside the ", f_.m, " nodes");
        w.node = next;
        __builtin_prefetch(f_.nodes + 4 * next);
        return true;
      }
      case kLeaf: {
        const float* point = f_.box + w.node * 2 * f_.d;
        bool seen = true;
        for (int64_t j = 0; j < f_.d && seen; ++j) seen = point[j] == w.x[j];
        if (seen) {
          w.phase = kSeen;
          __builtin_prefetch(f_.mass + w.node);
          return true;
        }
        if (w.k < 0) break;
        w.phase = kAscend;  // the parent's box came with the point: on to it now
        [[fallthrough]];
      }
      case kAscend: {
        const int64_t a = w.path[w.k];
        const float gap = gap_to(f_, w.x, a);
        if (gap == 0.0f) break;  // inside the box: nothing above changes s
        const double g = gap;
        const double p = g / (f_.range_sum[a] + g);
        w.s = (1.0 - p) * w.s + p / static_cast<double>(w.k + 1);
        if (--w.k < 0) break;
        ask_box(f_, w.path[w.k]);
        return true;
      }
      case kSeen: {
        const double lm = f_.mass[w.node];
        const double big_m = f_.tree_mass[w.tree];
        w.s = (1.0 - lm / (2.0 * big_m)) / (static_cast<double>(w.depth) + log2_1p(lm));
        break;
      }
      case kIdle:
        return false;
    }
    finish(w, w.s);
    return false;
  }

  const Forests& f_;
  Walk walks_[kSlots];
  double* scores_ = nullptr;
  Pairs next_{};
  int64_t last_ = 0;
};

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
  // Rows are independent: a task takes a run of rows and scores them a chunk of rows at a time
  // (at most kChunk pairs unless one row has more trees), then adds each row's trees in order.
  constexpr int64_t kChunk = 8192;
  at::parallel_for(0, f.n, 16, [&](int64_t r0, int64_t r1) {
    // the walks' path buffers, left uninitialized (a walk writes a level before it reads it):
    // zeroing 0.5 MB a task would cost a small batch more than its walks
    std::unique_ptr<int64_t[]> paths(new int64_t[kSlots * kPathStride]);
    std::vector<double> scores;
    Walker walker(f, paths.get());
    for (int64_t c0 = r0; c0 < r1;) {
      int64_t c1 = c0, pairs = 0;
      while (c1 < r1) {
        const int64_t s = f.row_model[c1];
        TORCH_CHECK(s >= 0 && s < f.s, "row_model[", c1, "] = ", s, " is outside [0, ", f.s, ")");
        const int64_t t0 = f.model_trees[2 * s], t1 = f.model_trees[2 * s + 1];
        TORCH_CHECK(0 <= t0 && t0 <= t1 && t1 <= f.t, "model_trees[", s, "] is not a tree range");
        const int64_t trees = t1 - t0;
        if (c1 > c0 && pairs + trees > kChunk) break;
        pairs += trees;
        ++c1;
      }
      scores.resize(static_cast<size_t>(pairs));
      walker.run(c0, c1, scores.data());
      const double* sc = scores.data();
      for (int64_t i = c0; i < c1; ++i) {
        const int64_t s = f.row_model[i];
        const int64_t trees = f.model_trees[2 * s + 1] - f.model_trees[2 * s];
        double total = 0.0;
        for (int64_t t = 0; t < trees; ++t) total += sc[t];  // trees added in order
        sc += trees;
        op[i] = trees > 0 ? total / static_cast<double>(trees) : 0.0;
      }
      c0 = c1;
    }
  });
  return out;
}

}  // namespace mmhost
