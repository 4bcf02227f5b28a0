// CPU kernel of the fused multi-model k-NN search (mmhost/kernels/knn.py holds the contract and
// the plain-torch oracle, knn_reference).
//
//   for i in range(N):
//       s = row_model[i]
//       start, end = model_points[s]
//       d[j] = sum((x[i] - points[j])**2)   (metric 0, L2)  |  x[i] . points[j]   (metric 1, IP)
//       out[i] = the k best j in [start, end): smallest d (L2) or largest (IP), equal values in
//                point order; padded with index -1 and +inf (L2) / -inf (IP)
//
// A row reads its model's points once, in order, and keeps its k best in a binary heap whose
// root ranks last: a point goes in only when strictly better than the root (so an equidistant
// later point never displaces an earlier one: ties keep point order, as the reference's stable
// sort), in O(log k) whatever the order of the points; after the first few hundred points almost
// every point is refused by that one compare. The k are sorted once at the end.
// Distances are float32 sums of the differences themselves (not |x|^2 - 2 x.p + |p|^2), so an
// exact match is exactly 0 -- what scikit-learn's distance weighting tests for. The dimension
// loop is an OpenMP SIMD reduction: its order differs from torch's sum, so distances agree with
// the reference to rounding, and equal where every partial sum is exact (integer data).
// On x86-64 CPUs with AVX2 and FMA (checked at runtime) eight points are measured at once: the
// row's dimensions eight at a time against each of the eight points (vertical FMAs), the eight
// sums reduced together, and one compare of all eight against the current k-th best; a point
// is inserted only when that compare passes. Elsewhere the plain loop below, which the compiler
// vectorises over the dimensions.
// Rows are independent; runs of one model stay on one thread (its points stay in cache).

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "mmhost.h"
#include "simd.h"

namespace mmhost {
namespace {

// Rows per parallel task: a row of a 1,000-point, 16-dim model is ~16k multiply-adds.
constexpr int64_t kGrainRows = 16;

template <bool kInnerProduct>
inline float distance(const float* __restrict x, const float* __restrict p, int64_t d) {
  float acc = 0.0f;
  if constexpr (kInnerProduct) {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < d; ++j) acc += x[j] * p[j];
  } else {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < d; ++j) {
      const float diff = x[j] - p[j];
      acc += diff * diff;
    }
  }
  return acc;
}

// Strictly better: an equal value is not (ties keep the earlier point).
template <bool kInnerProduct>
inline bool better(float a, float b) {
  return kInnerProduct ? a > b : a < b;
}

// Whether candidate (a, i) ranks after (b, j): a worse value, or an equal one from a later point.
template <bool kInnerProduct>
inline bool after(float a, int64_t i, float b, int64_t j) {
  return better<kInnerProduct>(b, a) || (a == b && i > j);
}

// The row's k best so far as a binary heap whose root (bd[0], bi[0]) ranks last: v (point j)
// goes in while the heap has room, else only when strictly better than the root. O(log k) a
// point that gets in, so no input order (sorted training data) makes the search O(n k).
template <bool kInnerProduct>
inline void offer(float v, int64_t j, int64_t k, int64_t& held, float* bd, int64_t* bi) {
  int64_t at;
  if (held < k) {  // sift up from the new leaf
    at = held++;
    while (at > 0) {
      const int64_t up = (at - 1) / 2;
      if (!after<kInnerProduct>(v, j, bd[up], bi[up])) break;
      bd[at] = bd[up];
      bi[at] = bi[up];
      at = up;
    }
  } else {
    if (!better<kInnerProduct>(v, bd[0])) return;
    at = 0;  // replace the root, sift down
    for (;;) {
      int64_t c = 2 * at + 1;
      if (c >= k) break;
      if (c + 1 < k && after<kInnerProduct>(bd[c + 1], bi[c + 1], bd[c], bi[c])) ++c;
      if (!after<kInnerProduct>(bd[c], bi[c], v, j)) break;
      bd[at] = bd[c];
      bi[at] = bi[c];
      at = c;
    }
  }
  bd[at] = v;
  bi[at] = j;
}

// The heap's held entries best first (equal values in point order); the rest stay padding.
template <bool kInnerProduct>
void finish(int64_t held, float* bd, int64_t* bi, std::vector<std::pair<float, int64_t>>& tmp) {
  tmp.resize(held);
  for (int64_t j = 0; j < held; ++j) tmp[j] = {bd[j], bi[j]};
  std::sort(tmp.begin(), tmp.end(), [](const auto& a, const auto& b) {
    return after<kInnerProduct>(b.first, b.second, a.first, a.second);
  });
  for (int64_t j = 0; j < held; ++j) {
    bd[j] = tmp[j].first;
    bi[j] = tmp[j].second;
  }
}

#if defined(__x86_64__)
// The distances of points j .. j+7 (rows of d floats from p) to the row q, in one vector. D > 0:
// the width at compile time (a multiple of 8: fully unrolled, everything in registers); D == 0:
// any width d, read at runtime.
template <bool kInnerProduct, int D>
MMHOST_AVX2 inline __m256 distance8(const float* q, const float* p, int64_t d) {
  if constexpr (D > 0) d = D;
  __m256 acc[8];
  for (auto& a : acc) a = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= d; c += 8) {
    const __m256 xv = _mm256_loadu_ps(q + c);
    for (int r = 0; r < 8; ++r) {
      const __m256 pv = _mm256_loadu_ps(p + r * d + c);
      if constexpr (kInnerProduct) {
        acc[r] = _mm256_fmadd_ps(xv, pv, acc[r]);
      } else {
        const __m256 diff = _mm256_sub_ps(xv, pv);
        acc[r] = _mm256_fmadd_ps(diff, diff, acc[r]);
      }
    }
  }
  if (c < d) {  // the last d % 8 dimensions, masked
    const __m256i m = first_lanes(d - c);
    const __m256 xv = _mm256_maskload_ps(q + c, m);
    for (int r = 0; r < 8; ++r) {
      const __m256 pv = _mm256_maskload_ps(p + r * d + c, m);
      if constexpr (kInnerProduct) {
        acc[r] = _mm256_fmadd_ps(xv, pv, acc[r]);
      } else {
        const __m256 diff = _mm256_sub_ps(xv, pv);
        acc[r] = _mm256_fmadd_ps(diff, diff, acc[r]);
      }
    }
  }
  return reduce8(acc);
}

// [start, end) of one row, eight points at a time; the last end - start % 8 one by one.
template <bool kInnerProduct, int D>
MMHOST_AVX2 void search_avx2(const float* q, const float* points, int64_t start, int64_t end,
                             int64_t d, int64_t k, int64_t& held, float* bd, int64_t* bi) {
  int64_t j = start;
  alignas(32) float v[8];
  for (; j + 8 <= end; j += 8) {
    const __m256 dist = distance8<kInnerProduct, D>(q, points + j * d, d);
    if (held == k) {  // all eight refused by one compare, most of the time
      const __m256 worst = _mm256_set1_ps(bd[0]);  // the heap's root
      const __m256 ok = kInnerProduct ? _mm256_cmp_ps(dist, worst, _CMP_GT_OQ)
                                      : _mm256_cmp_ps(dist, worst, _CMP_LT_OQ);
      if (!_mm256_movemask_ps(ok)) continue;
    }
    _mm256_store_ps(v, dist);
    for (int r = 0; r < 8; ++r) offer<kInnerProduct>(v[r], j + r, k, held, bd, bi);
  }
  for (; j < end; ++j) {
    offer<kInnerProduct>(distance<kInnerProduct>(q, points + j * d, d), j, k, held, bd, bi);
  }
}
#endif

template <bool kInnerProduct>
void search_rows(const float* x, const int64_t* row_model, const float* points,
                 const int64_t* model_points, int64_t d, int64_t k, int64_t r0, int64_t r1,
                 float* out_dist, int64_t* out_idx) {
  const float worst = kInnerProduct ? -std::numeric_limits<float>::infinity()
                                    : std::numeric_limits<float>::infinity();
  std::vector<std::pair<float, int64_t>> tmp;
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t s = row_model[i];
    const int64_t start = model_points[2 * s], end = model_points[2 * s + 1];
    const float* q = x + i * d;
    float* bd = out_dist + i * k;  // the row's k best, best first
    int64_t* bi = out_idx + i * k;
    std::fill(bd, bd + k, worst);
    std::fill(bi, bi + k, int64_t{-1});
    int64_t held = 0;
#if defined(__x86_64__)
    static const bool avx2 = cpu_has_avx2_fma();
    if (avx2 && d > 0) {
      switch (d) {  // the hot widths unrolled at compile time
        case 8:
          search_avx2<kInnerProduct, 8>(q, points, start, end, d, k, held, bd, bi);
          break;
        case 16:
          search_avx2<kInnerProduct, 16>(q, points, start, end, d, k, held, bd, bi);
          break;
        case 32:
          search_avx2<kInnerProduct, 32>(q, points, start, end, d, k, held, bd, bi);
          break;
        default:
          search_avx2<kInnerProduct, 0>(q, points, start, end, d, k, held, bd, bi);
      }
      finish<kInnerProduct>(held, bd, bi, tmp);
      continue;
    }
#endif
    for (int64_t j = start; j < end; ++j) {
      offer<kInnerProduct>(distance<kInnerProduct>(q, points + j * d, d), j, k, held, bd, bi);
    }
    finish<kInnerProduct>(held, bd, bi, tmp);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> knn_forward(const at::Tensor& x, const at::Tensor& row_model,
                                               const at::Tensor& points,
                                               const at::Tensor& model_points, int64_t k,
                                               int64_t metric) {
  MMHOST_CHECK_INPUT(x, at::kFloat, 2);
  MMHOST_CHECK_INPUT(row_model, at::kLong, 1);
  MMHOST_CHECK_INPUT(points, at::kFloat, 2);
  MMHOST_CHECK_INPUT(model_points, at::kLong, 2);
  const int64_t n = x.size(0), d = x.size(1), p = points.size(0), s = model_points.size(0);
  TORCH_CHECK(points.size(1) == d, "points has ", points.size(1), " columns; x has ", d);
  TORCH_CHECK(row_model.size(0) == n, "row_model has ", row_model.size(0), " rows; x has ", n);
  TORCH_CHECK(model_points.size(1) == 2, "model_points must be (S, 2), got ",
              model_points.sizes());
  TORCH_CHECK(k >= 1, "k must be >= 1, got ", k);
  TORCH_CHECK(metric == 0 || metric == 1, "metric must be 0 (L2) or 1 (inner product), got ",
              metric);
  const int64_t* rm = row_model.data_ptr<int64_t>();
  const int64_t* mp = model_points.data_ptr<int64_t>();
  for (int64_t m = 0; m < s; ++m) {  // S ranges: cheap next to any search
    TORCH_CHECK(0 <= mp[2 * m] && mp[2 * m] <= mp[2 * m + 1] && mp[2 * m + 1] <= p,
                "model_points[", m, "] = [", mp[2 * m], ", ", mp[2 * m + 1],
                ") is not a range of the ", p, " points");
  }
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(static_cast<uint64_t>(rm[i]) < static_cast<uint64_t>(s), "row_model[", i,
                "] = ", rm[i], " is outside [0, ", s, ")");
  }
  at::Tensor dist = at::empty({n, k}, x.options());
  at::Tensor idx = at::empty({n, k}, row_model.options());
  const float* xp = x.data_ptr<float>();
  const float* pp = points.data_ptr<float>();
  float* dp = dist.data_ptr<float>();
  int64_t* ip = idx.data_ptr<int64_t>();
  at::parallel_for(0, n, kGrainRows, [&](int64_t r0, int64_t r1) {
    if (metric == 1) {
      search_rows<true>(xp, rm, pp, mp, d, k, r0, r1, dp, ip);
    } else {
      search_rows<false>(xp, rm, pp, mp, d, k, r0, r1, dp, ip);
    }
  });
  return {dist, idx};
}

// What each row's neighbours decide; see decide_reference (mmhost/kernels/knn.py) for the
// rules. One pass per row over its k neighbours: the reported distance, the weight, the
// weighted mean and the vote (labels sorted, equal runs summed, the first run of most weight:
// the smallest label on a tie).
at::Tensor knn_decide(const at::Tensor& dist, const at::Tensor& idx, const at::Tensor& labels,
                      const at::Tensor& k, const at::Tensor& flags) {
  MMHOST_CHECK_INPUT(dist, at::kFloat, 2);
  MMHOST_CHECK_INPUT(idx, at::kLong, 2);
  MMHOST_CHECK_INPUT(labels, at::kFloat, 1);
  MMHOST_CHECK_INPUT(k, at::kInt, 1);
  MMHOST_CHECK_INPUT(flags, at::kChar, 2);
  const int64_t n = dist.size(0), kk = dist.size(1), p = labels.size(0);
  TORCH_CHECK(idx.sizes() == dist.sizes(), "idx has shape ", idx.sizes(), "; dist ", dist.sizes());
  TORCH_CHECK(k.size(0) == n && flags.size(0) == n && flags.size(1) == 4,
              "k must be (N,) and flags (N, 4) for N = ", n);
  at::Tensor out = at::zeros({n, 1 + 2 * kk}, dist.options());
  const float* dp = dist.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const float* lp = labels.data_ptr<float>();
  const int32_t* kp = k.data_ptr<int32_t>();
  const int8_t* fp = flags.data_ptr<int8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 256, [&](int64_t r0, int64_t r1) {
    std::vector<float> w(kk), lab(kk), keyed(kk), kw(kk);
    std::vector<std::pair<float, float>> order;
    for (int64_t i = r0; i < r1; ++i) {
      const int8_t distance = fp[4 * i], by_distance = fp[4 * i + 1] == 1,
                   classifier = fp[4 * i + 3] == 1;
      float* row = op + i * (1 + 2 * kk);
      float* rep = row + 1;
      float* out_lab = row + 1 + kk;
      int64_t live = 0;
      bool exact = false;
      for (int64_t j = 0; j < kk && j < kp[i]; ++j) {
        const int64_t pt = ip[i * kk + j];
        if (pt < 0) break;
        TORCH_CHECK(pt < p, "idx[", i, ", ", j, "] = ", pt, " is past the ", p, " labels");
        float d = dp[i * kk + j];
        if (distance == 1) d = std::sqrt(std::max(d, 0.0f));                  // euclidean
        if (distance == 3) d = std::min(std::max(1.0f - d, 0.0f), 2.0f);      // cosine
        rep[j] = d;
        out_lab[j] = lab[j] = lp[pt];
        exact |= d == 0.0f;
        ++live;
      }
      TORCH_CHECK(live > 0, "row ", i, " has no neighbours");
      for (int64_t j = 0; j < live; ++j) {
        w[j] = !by_distance ? 1.0f : exact ? (rep[j] == 0.0f ? 1.0f : 0.0f) : 1.0f / rep[j];
      }
      if (!classifier) {
        float num = 0.0f, den = 0.0f;
        for (int64_t j = 0; j < live; ++j) {
          num += w[j] * lab[j];
          den += w[j];
        }
        row[0] = num / den;
        continue;
      }
      order.resize(live);  // neighbours by label, equal labels in neighbour order
      for (int64_t j = 0; j < live; ++j) order[j] = {lab[j], w[j]};
      std::stable_sort(order.begin(), order.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (int64_t j = 0; j < live; ++j) {
        keyed[j] = order[j].first;
        kw[j] = order[j].second;
      }
      float best = keyed[0], best_votes = -1.0f, votes = 0.0f;
      for (int64_t j = 0; j < live; ++j) {
        votes += kw[j];
        if (j + 1 == live || keyed[j + 1] != keyed[j]) {  // the end of a run of one label
          if (votes > best_votes) {
            best_votes = votes;
            best = keyed[j];
          }
          votes = 0.0f;
        }
      }
      row[0] = best;
    }
  });
  return out;
}

}  // namespace mmhost
