// CPU kernels of batched training (mmhost/kernels/gram.py holds the contracts and the
// plain-torch oracles): each entity's second moments in one pass over its rows.
//
// entity_gram: for each segment s (rows order[bounds[s,0] : bounds[s,1]]) the D x D Gram
// matrix sum_r a_r a_r' of the augmented encoded row a_r = [z_r (width) | 1 | y_r], where a
// numeric column j puts x - shift[j] at num_pos[j] (0 where x is NaN), a categorical column c
// puts 1 at cat_off[c] + code (nothing for code -1) and y is the label less label_shift.
//
// A segment is taken kTile rows at a time, each feature's values contiguous, so the products
// sum_t f_i[t] f_j[t] are dot products over contiguous memory: blocks of 2 x 4 outputs in eight
// AVX2 accumulators (four rows a step), the upper triangle only, mirrored at the end. Where
// the rows are the table's own run (order is the identity, the common case of a table
// grouped by entity), the numeric features are read straight from the columns and shifted as
// they are loaded; only one-hot features are written into a tile. Otherwise (rows gathered
// through order, the last 1-3 rows of a segment, a segment with a NaN, no AVX2) every feature
// is first copied into the tile. No encoded copy of the table is ever made. Segments are
// independent (a parallel task takes a run of them).

// column_moments: count, mean and (population) variance of each column over rows `order`,
// NaN skipped; one pass, the sums taken about the column's first value (shifted sums lose
// nothing to cancellation when the mean is large against the spread).

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <vector>

#include "mmhost.h"
#include "simd.h"

namespace mmhost {
namespace {

constexpr int64_t kTile = 64;  // rows of a tile

struct GramInputs {
  std::vector<const double*> num;
  const int64_t* num_pos;
  const double* shift;
  std::vector<const int64_t*> cat;
  const int64_t* cat_off;
  const int64_t* cat_size;
  const double* label;
  double label_shift;  // subtracted from the label (entity_gram; 0 for entity_logistic)
  const int64_t* order;
  bool identity;  // order[i] == i throughout: a tile's rows are a run of the columns (asked
                  // by entity_gram only; false for entity_logistic)
  int64_t n;      // rows of the table
  int64_t width;  // encoded features
  int64_t dp;     // width + 2, rounded up to a multiple of 4 (the tile's feature rows)
};

const double* constant_row(double v) {
  static const std::vector<double> ones(kTile, 1.0), zeros(kTile, 0.0);
  return v == 0.0 ? zeros.data() : ones.data();
}

// The one-hot rows of the tile for rows order[k0 .. k0 + len) (zeros to len4). False where a
// code is out of range.
bool fill_categories(const GramInputs& in, int64_t k0, int64_t len, int64_t len4, double* tile) {
  bool ok = true;
  const int64_t* rows = in.order + k0;
  for (size_t c = 0; c < in.cat.size(); ++c) {
    double* out = tile + in.cat_off[c] * kTile;
    const int64_t size = in.cat_size[c];
    for (int64_t k = 0; k < size; ++k) std::memset(out + k * kTile, 0, sizeof(double) * len4);
    const int64_t* codes = in.cat[c];
    for (int64_t t = 0; t < len; ++t) {
      const int64_t code = codes[in.identity ? k0 + t : rows[t]];
      ok &= code >= -1 && code < size;
      if (code >= 0 && code < size) out[code * kTile + t] = 1.0;
    }
  }
  return ok;
}

// Every feature of rows order[k0 .. k0 + len) into the tile, shifted (NaN -> 0); rows len ..
// len4 (the tail of the last 4-row step) are zeros. False where an order entry or a category
// code is out of range.
bool fill_tile(const GramInputs& in, int64_t k0, int64_t len, int64_t len4, double* tile) {
  bool ok = true;
  const int64_t* rows = in.order + k0;
  for (int64_t t = 0; t < len; ++t) ok &= static_cast<uint64_t>(rows[t]) < uint64_t(in.n);
  if (!ok) return false;
  for (size_t j = 0; j < in.num.size(); ++j) {
    double* out = tile + in.num_pos[j] * kTile;
    const double* col = in.num[j];
    const double s = in.shift[j];
    for (int64_t t = 0; t < len; ++t) {
      const double v = col[rows[t]] - s;
      out[t] = v == v ? v : 0.0;  // NaN: the column's fill, which the shift made 0
    }
    for (int64_t t = len; t < len4; ++t) out[t] = 0.0;
  }
  double* ones = tile + in.width * kTile;
  double* y = ones + kTile;
  for (int64_t t = 0; t < len; ++t) {
    ones[t] = 1.0;
    y[t] = in.label[rows[t]] - in.label_shift;
  }
  for (int64_t t = len; t < len4; ++t) ones[t] = y[t] = 0.0;
  return fill_categories(in, k0, len, len4, tile);
}

// A step's feature rows: row i's values are f[i][0 .. len4) - shift[i].
struct Features {
  std::vector<const double*> f;
  std::vector<double> shift;
};

// Every feature from the tile (unshifted: the tile holds them shifted).
void from_tile(const double* tile, int64_t dp, Features& rows) {
  for (int64_t i = 0; i < dp; ++i) {
    rows.f[i] = tile + i * kTile;
    rows.shift[i] = 0.0;
  }
}

// Numeric features straight from the columns at k0 (order is the identity), the rest from
// constants and the tile.
void from_columns(const GramInputs& in, int64_t k0, const double* tile, Features& rows) {
  for (int64_t i = 0; i < in.dp; ++i) {
    rows.f[i] = i < in.width ? tile + i * kTile : constant_row(0.0);
    rows.shift[i] = 0.0;
  }
  for (size_t j = 0; j < in.num.size(); ++j) {
    rows.f[in.num_pos[j]] = in.num[j] + k0;
    rows.shift[in.num_pos[j]] = in.shift[j];
  }
  rows.f[in.width] = constant_row(1.0);
  rows.f[in.width + 1] = in.label + k0;
  rows.shift[in.width + 1] = in.label_shift;
}

// acc (dp x dp, row-major; blocks on and above the diagonal) += f' f over len4 rows.
void gram_step_scalar(const Features& rows, int64_t dp, int64_t len4, double* acc) {
  for (int64_t i = 0; i < dp; ++i) {
    const double* a = rows.f[i];
    const double sa = rows.shift[i];
    for (int64_t j = i; j < dp; ++j) {
      const double* b = rows.f[j];
      const double sb = rows.shift[j];
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int64_t t = 0; t < len4; t += 4) {
        s0 += (a[t] - sa) * (b[t] - sb);
        s1 += (a[t + 1] - sa) * (b[t + 1] - sb);
        s2 += (a[t + 2] - sa) * (b[t + 2] - sb);
        s3 += (a[t + 3] - sa) * (b[t + 3] - sb);
      }
      acc[i * dp + j] += (s0 + s1) + (s2 + s3);
    }
  }
}

#if defined(__x86_64__)
// The four sums of c[0..3]'s lanes, as one vector.
MMHOST_AVX2 inline __m256d sum4(__m256d c0, __m256d c1, __m256d c2, __m256d c3) {
  const __m256d h01 = _mm256_hadd_pd(c0, c1);  // [c0 01, c1 01, c0 23, c1 23]
  const __m256d h23 = _mm256_hadd_pd(c2, c3);
  return _mm256_add_pd(_mm256_permute2f128_pd(h01, h23, 0x20),
                       _mm256_permute2f128_pd(h01, h23, 0x31));
}

MMHOST_AVX2 void gram_step_avx2(const Features& rows, int64_t dp, int64_t len4, double* acc) {
  for (int64_t i = 0; i < dp; i += 2) {
    const double* a0p = rows.f[i];
    const double* a1p = rows.f[i + 1];
    const __m256d sa0 = _mm256_set1_pd(rows.shift[i]), sa1 = _mm256_set1_pd(rows.shift[i + 1]);
    for (int64_t j = (i / 4) * 4; j < dp; j += 4) {
      const double *b0p = rows.f[j], *b1p = rows.f[j + 1], *b2p = rows.f[j + 2];
      const double* b3p = rows.f[j + 3];
      const __m256d sb0 = _mm256_set1_pd(rows.shift[j]), sb1 = _mm256_set1_pd(rows.shift[j + 1]);
      const __m256d sb2 = _mm256_set1_pd(rows.shift[j + 2]);
      const __m256d sb3 = _mm256_set1_pd(rows.shift[j + 3]);
      __m256d c00 = _mm256_setzero_pd(), c01 = c00, c02 = c00, c03 = c00;
      __m256d c10 = c00, c11 = c00, c12 = c00, c13 = c00;
      for (int64_t t = 0; t < len4; t += 4) {
        const __m256d a0 = _mm256_sub_pd(_mm256_loadu_pd(a0p + t), sa0);
        const __m256d a1 = _mm256_sub_pd(_mm256_loadu_pd(a1p + t), sa1);
        const __m256d b0 = _mm256_sub_pd(_mm256_loadu_pd(b0p + t), sb0);
        const __m256d b1 = _mm256_sub_pd(_mm256_loadu_pd(b1p + t), sb1);
        const __m256d b2 = _mm256_sub_pd(_mm256_loadu_pd(b2p + t), sb2);
        const __m256d b3 = _mm256_sub_pd(_mm256_loadu_pd(b3p + t), sb3);
        c00 = _mm256_fmadd_pd(a0, b0, c00);
        c01 = _mm256_fmadd_pd(a0, b1, c01);
        c02 = _mm256_fmadd_pd(a0, b2, c02);
        c03 = _mm256_fmadd_pd(a0, b3, c03);
        c10 = _mm256_fmadd_pd(a1, b0, c10);
        c11 = _mm256_fmadd_pd(a1, b1, c11);
        c12 = _mm256_fmadd_pd(a1, b2, c12);
        c13 = _mm256_fmadd_pd(a1, b3, c13);
      }
      double* r0 = acc + i * dp + j;
      double* r1 = r0 + dp;
      _mm256_storeu_pd(r0, _mm256_add_pd(_mm256_loadu_pd(r0), sum4(c00, c01, c02, c03)));
      _mm256_storeu_pd(r1, _mm256_add_pd(_mm256_loadu_pd(r1), sum4(c10, c11, c12, c13)));
    }
  }
}
#endif

#if defined(__x86_64__)
// The sum of a's eight float32 lanes, in float64.
MMHOST_AVX2 inline double lanes8(__m256 a) {
  const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
  const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
  alignas(32) double l[4];
  _mm256_store_pd(l, _mm256_add_pd(lo, hi));
  return (l[0] + l[1]) + (l[2] + l[3]);
}

// acc (dp x dp, row-major; blocks on and above the diagonal) = z' D z, the Gram of the float32
// feature rows z (row i at z + i * n) weighted by d, over n rows (a multiple of 8): eight rows
// a step, each run of kF32Rows rows summed in float32 and the runs' sums in float64 (so that
// an entity of a million rows sums as precisely as one of a thousand). With every = 2, over
// every other block of eight rows only (sampled_rows counts them).
constexpr int64_t kF32Rows = 512;
static_assert(kF32Rows % 16 == 0, "a run starts on an even block of eight rows");
MMHOST_AVX2 void hessian_f32_avx2(const float* d, const float* z, int64_t dp, int64_t n,
                                  int64_t every, double* acc) {
  std::fill_n(acc, dp * dp, 0.0);
  for (int64_t t0 = 0; t0 < n; t0 += kF32Rows) {  // a run's rows stay in the L1 cache
    const int64_t t1 = std::min(n, t0 + kF32Rows);
    for (int64_t i = 0; i < dp; i += 2) {
      const float *a0p = z + i * n, *a1p = a0p + n;
      for (int64_t j = (i / 4) * 4; j < dp; j += 4) {
        const float* bp = z + j * n;
        double* r0 = acc + i * dp + j;
        double* r1 = r0 + dp;
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
        __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        for (int64_t t = t0; t < t1; t += 8 * every) {
          __m256 dt = _mm256_loadu_ps(d + t);
          __m256 b0 = _mm256_loadu_ps(bp + t), b1 = _mm256_loadu_ps(bp + n + t);
          __m256 b2 = _mm256_loadu_ps(bp + 2 * n + t), b3 = _mm256_loadu_ps(bp + 3 * n + t);
          // each loaded once, into a register (the compiler would fold a load into each use)
          asm("" : "+x"(dt), "+x"(b0), "+x"(b1), "+x"(b2), "+x"(b3));
          const __m256 a0 = _mm256_mul_ps(dt, _mm256_loadu_ps(a0p + t));
          const __m256 a1 = _mm256_mul_ps(dt, _mm256_loadu_ps(a1p + t));
          c00 = _mm256_fmadd_ps(a0, b0, c00);
          c01 = _mm256_fmadd_ps(a0, b1, c01);
          c02 = _mm256_fmadd_ps(a0, b2, c02);
          c03 = _mm256_fmadd_ps(a0, b3, c03);
          c10 = _mm256_fmadd_ps(a1, b0, c10);
          c11 = _mm256_fmadd_ps(a1, b1, c11);
          c12 = _mm256_fmadd_ps(a1, b2, c12);
          c13 = _mm256_fmadd_ps(a1, b3, c13);
        }
        r0[0] += lanes8(c00), r0[1] += lanes8(c01), r0[2] += lanes8(c02), r0[3] += lanes8(c03);
        r1[0] += lanes8(c10), r1[1] += lanes8(c11), r1[2] += lanes8(c12), r1[3] += lanes8(c13);
      }
    }
  }
}
// exp(x) for x <= 0 in float32, two vectors of eight lanes, within ~2 ulp: x = k ln2 + r,
// e^r by its Taylor series to r^7, 2^k into the exponent bits; 0 below -87 (where e^x leaves
// float32's normal range).
MMHOST_AVX2 inline void exp_nonpositive_f32(const __m256* x, __m256* out) {
  static constexpr float kInvFactorial[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                                            1.0f / 6,    0.5f,       1.0f,       1.0f};
  __m256 k[2], r[2], p[2];
  for (int b = 0; b < 2; ++b) {
    k[b] = _mm256_round_ps(_mm256_mul_ps(x[b], _mm256_set1_ps(1.44269504f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r[b] = _mm256_fnmadd_ps(k[b], _mm256_set1_ps(0.693145752f), x[b]);  // ln2, high
    r[b] = _mm256_fnmadd_ps(k[b], _mm256_set1_ps(1.42860677e-6f), r[b]);  // the rest
    p[b] = _mm256_set1_ps(kInvFactorial[0]);
  }
  for (int i = 1; i < 8; ++i)
    for (int b = 0; b < 2; ++b)
      p[b] = _mm256_fmadd_ps(p[b], r[b], _mm256_set1_ps(kInvFactorial[i]));
  for (int b = 0; b < 2; ++b) {
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(k[b]), _mm256_set1_epi32(127)), 23);
    const __m256 v = _mm256_mul_ps(p[b], _mm256_castsi256_ps(bits));
    out[b] = _mm256_and_ps(v, _mm256_cmp_ps(x[b], _mm256_set1_ps(-87.0f), _CMP_GE_OQ));
  }
}

// evaluate_avx2 in float32, on the float32 rows zf and labels yf: the Hessian's weights d,
// and the gradient's sums g (runs of kF32Rows rows summed in float32, the runs in float64).
// Good to ~1e-6 of the gradient's scale: Newton's first steps, far from the optimum, take it.
MMHOST_AVX2 void evaluate_f32_avx2(const float* z, int64_t n4, int64_t k, const double* theta,
                                   const float* y, int64_t n, float* d, double* g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 lane = _mm256_set_ps(7, 6, 5, 4, 3, 2, 1, 0);
  std::vector<float> tf(theta, theta + k);
  std::vector<double> total(k, 0.0);
  std::vector<float> acc(8 * k);
  for (int64_t t0 = 0; t0 < n4; t0 += kF32Rows) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t t = t0; t < std::min(n4, t0 + kF32Rows); t += 16) {
      __m256 sv[2], neg[2], ev[2], resid[2];
      sv[0] = sv[1] = _mm256_setzero_ps();
      for (int64_t j = 0; j < k; ++j) {
        const __m256 tj = _mm256_set1_ps(tf[j]);
        for (int b = 0; b < 2; ++b)
          sv[b] = _mm256_fmadd_ps(tj, _mm256_loadu_ps(z + j * n4 + t + 8 * b), sv[b]);
      }
      for (int b = 0; b < 2; ++b) neg[b] = _mm256_or_ps(sv[b], sign);
      exp_nonpositive_f32(neg, ev);
      for (int b = 0; b < 2; ++b) {
        const int64_t at = t + 8 * b;
        const __m256 up = _mm256_cmp_ps(sv[b], _mm256_setzero_ps(), _CMP_GE_OQ);
        const __m256 p = _mm256_div_ps(_mm256_blendv_ps(ev[b], one, up), _mm256_add_ps(one, ev[b]));
        resid[b] = _mm256_sub_ps(p, _mm256_loadu_ps(y + at));
        __m256 weight = _mm256_mul_ps(p, _mm256_sub_ps(one, p));
        if (at + 8 > n) {  // the padding past n: no residual, no weight
          const __m256 real = _mm256_cmp_ps(lane, _mm256_set1_ps(float(n - at)), _CMP_LT_OQ);
          resid[b] = _mm256_and_ps(resid[b], real);
          weight = _mm256_and_ps(weight, real);
        }
        _mm256_storeu_ps(d + at, weight);
      }
      for (int64_t j = 0; j < k; ++j) {
        __m256 a = _mm256_loadu_ps(&acc[8 * j]);
        for (int b = 0; b < 2; ++b)
          a = _mm256_fmadd_ps(resid[b], _mm256_loadu_ps(z + j * n4 + t + 8 * b), a);
        _mm256_storeu_ps(&acc[8 * j], a);
      }
    }
    for (int64_t j = 0; j < k; ++j) total[j] += lanes8(_mm256_loadu_ps(&acc[8 * j]));
  }
  for (int64_t j = 0; j < k; ++j) g[j] = total[j];
}
#endif

// Whether this CPU runs the AVX2 + FMA paths (never off x86-64).
bool use_avx2() {
#if defined(__x86_64__)
  return cpu_has_avx2_fma();
#else
  return false;
#endif
}

// Whether order[i] == i for every i (and so every entry is a row).
bool is_identity(const at::Tensor& order, int64_t n) {
  const int64_t* o = order.data_ptr<int64_t>();
  const int64_t m = order.size(0);
  if (m > n) return false;
  int64_t off = 0;
  for (int64_t i = 0; i < m; ++i) off |= o[i] ^ i;
  return off == 0;
}

std::vector<const double*> f64_columns(const std::vector<at::Tensor>& cols, int64_t n,
                                       const char* what) {
  std::vector<const double*> out;
  for (const auto& c : cols) {
    TORCH_CHECK(c.device().is_cpu() && c.scalar_type() == at::kDouble && c.dim() == 1 &&
                    c.is_contiguous(),
                what, " columns must be contiguous 1-d float64 CPU tensors, got ",
                c.scalar_type(), " of shape ", c.sizes());
    TORCH_CHECK(c.size(0) == n, what, " columns must all have ", n, " rows, got ", c.size(0));
    out.push_back(c.data_ptr<double>());
  }
  return out;
}

// Count, sum and sum of squares of col[rows[i]] - pilot (col[i] - pilot without rows), NaN
// skipped; one body, compiled for each instruction set below.
struct Sums {
  double count, s1, s2;
};

template <bool kGather>
__attribute__((always_inline)) inline Sums sums_of(const double* col, const int64_t* rows,
                                                   int64_t m, double pilot) {
  double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = 0; i < m; ++i) {  // no NaN: plain sums (a NaN makes them NaN)
    const double v = (kGather ? col[rows[i]] : col[i]) - pilot;
    s1 += v;
    s2 += v * v;
  }
  if (s1 == s1 && s2 == s2) return {double(m), s1, s2};
  double count = 0;
  s1 = s2 = 0;
  for (int64_t i = 0; i < m; ++i) {
    const double v = (kGather ? col[rows[i]] : col[i]) - pilot;
    if (v == v) {
      count += 1;
      s1 += v;
      s2 += v * v;
    }
  }
  return {count, s1, s2};
}

Sums sums_generic(const double* col, const int64_t* rows, int64_t m, double pilot) {
  return rows ? sums_of<true>(col, rows, m, pilot) : sums_of<false>(col, rows, m, pilot);
}

#if defined(__x86_64__)
MMHOST_AVX2 Sums sums_avx2(const double* col, const int64_t* rows, int64_t m, double pilot) {
  return rows ? sums_of<true>(col, rows, m, pilot) : sums_of<false>(col, rows, m, pilot);
}
#endif

// The inputs of entity_gram and entity_logistic, every count, position and run checked.
GramInputs checked_inputs(const std::vector<at::Tensor>& numeric, const at::Tensor& num_pos,
                          const at::Tensor& shift, const std::vector<at::Tensor>& categorical,
                          const at::Tensor& cat_off, const at::Tensor& cat_size,
                          const at::Tensor& label, const at::Tensor& order,
                          const at::Tensor& bounds, int64_t width, double label_shift) {
  MMHOST_CHECK_INPUT(label, at::kDouble, 1);
  MMHOST_CHECK_INPUT(order, at::kLong, 1);
  MMHOST_CHECK_INPUT(bounds, at::kLong, 2);
  MMHOST_CHECK_INPUT(num_pos, at::kLong, 1);
  MMHOST_CHECK_INPUT(shift, at::kDouble, 1);
  MMHOST_CHECK_INPUT(cat_off, at::kLong, 1);
  MMHOST_CHECK_INPUT(cat_size, at::kLong, 1);
  const int64_t n = label.size(0);
  TORCH_CHECK(width >= 0, "width must be >= 0, got ", width);
  TORCH_CHECK(num_pos.size(0) == int64_t(numeric.size()) && shift.size(0) == num_pos.size(0),
              "num_pos and shift need one entry a numeric column");
  TORCH_CHECK(cat_off.size(0) == int64_t(categorical.size()) && cat_size.size(0) == cat_off.size(0),
              "cat_off and cat_size need one entry a categorical column");
  TORCH_CHECK(bounds.size(1) == 2, "bounds must be (S, 2), got ", bounds.sizes());
  GramInputs in{f64_columns(numeric, n, "numeric"),
                num_pos.data_ptr<int64_t>(),
                shift.data_ptr<double>(),
                {},
                cat_off.data_ptr<int64_t>(),
                cat_size.data_ptr<int64_t>(),
                label.data_ptr<double>(),
                label_shift,
                order.data_ptr<int64_t>(),
                false,  // entity_gram asks (entity_logistic looks at each entity's run)
                n,
                width,
                (width + 2 + 3) / 4 * 4};
  // every feature row of the tile written once: positions inside [0, width), disjoint
  std::vector<int> used(width, 0);
  for (int64_t j = 0; j < num_pos.size(0); ++j) {
    const int64_t p = in.num_pos[j];
    TORCH_CHECK(p >= 0 && p < width && !used[p]++, "num_pos[", j, "] = ", p,
                " is outside the width or taken");
  }
  for (int64_t c = 0; c < cat_off.size(0); ++c) {
    const at::Tensor& codes = categorical[c];
    TORCH_CHECK(codes.device().is_cpu() && codes.scalar_type() == at::kLong && codes.dim() == 1 &&
                    codes.is_contiguous(),
                "categorical codes must be contiguous 1-d int64 CPU tensors");
    TORCH_CHECK(codes.size(0) == n, "categorical columns must all have ", n, " rows");
    in.cat.push_back(codes.data_ptr<int64_t>());
    const int64_t off = in.cat_off[c], size = in.cat_size[c];
    TORCH_CHECK(size >= 1 && off >= 0 && off <= width - size, "categorical column ", c,
                " at ", off, " (", size, " categories) does not fit the width ", width);
    for (int64_t k = off; k < off + size; ++k)
      TORCH_CHECK(!used[k]++, "categorical column ", c, " overlaps another column");
  }
  const int64_t segs = bounds.size(0), m = order.size(0);
  const int64_t* b = bounds.data_ptr<int64_t>();
  for (int64_t s = 0; s < segs; ++s)
    TORCH_CHECK(b[2 * s] >= 0 && b[2 * s] <= b[2 * s + 1] && b[2 * s + 1] <= m, "bounds[", s,
                "] = [", b[2 * s], ", ", b[2 * s + 1], ") is not a run of the ", m, " rows");

  return in;
}

// --- entity_logistic -------------------------------------------------------------------------

constexpr double kRcond = 1e-10;  // solvers.RCOND: a pivot below this share of the largest

// The Cholesky factor of the k x k symmetric a (row-major, lower triangle written), or false
// where a is not positive definite to rounding, its smallest squared pivot below rcond of its
// largest (with kRcond, solvers.solve_psd then takes the pseudo-inverse: the caller hands the
// entity to it).
bool cholesky(double* a, int64_t k, double rcond) {
  double lo = INFINITY, hi = 0;
  for (int64_t j = 0; j < k; ++j) {
    double d = a[j * k + j];
    for (int64_t p = 0; p < j; ++p) d -= a[j * k + p] * a[j * k + p];
    if (!(d > 0)) return false;
    const double l = std::sqrt(d);
    a[j * k + j] = l;
    lo = std::min(lo, l);
    hi = std::max(hi, l);
    for (int64_t i = j + 1; i < k; ++i) {
      double v = a[i * k + j];
      for (int64_t p = 0; p < j; ++p) v -= a[i * k + p] * a[j * k + p];
      a[i * k + j] = v / l;
    }
  }
  return lo * lo > rcond * hi * hi;
}

// x = (L L')^-1 x.
void cholesky_solve(const double* l, int64_t k, double* x) {
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t p = 0; p < i; ++p) x[i] -= l[i * k + p] * x[p];
    x[i] /= l[i * k + i];
  }
  for (int64_t i = k - 1; i >= 0; --i) {
    for (int64_t p = i + 1; p < k; ++p) x[i] -= l[p * k + i] * x[p];
    x[i] /= l[i * k + i];
  }
}

struct LogisticOptions {
  double wd;
  bool intercept;
  bool normalize;
  int64_t max_iter;
  double tol;
};

// One entity's rows, feature-major (row j of z at z + j * n4; the intercept's ones after the
// features; zeros past n), and the buffers of its Newton iterations.
struct Entity {
  int64_t n = 0, n4 = 0, k = 0, dp = 0;  // rows, rows padded to 16, parameters, k padded to 4
  std::vector<double> z, y;
  std::vector<double> s, e, sc, ec;  // z' theta and exp(-|z' theta|), at theta and a candidate
  std::vector<double> w, r, q;       // the float64 Hessian rows and their scratch (rows_f64)
  std::vector<float> zf, yf, df;     // the AVX2 path's float32 z and y, the Hessian's weights

  // Buffers for rows x params (w, r and q are sized where they are used, rows_f64, as the
  // AVX2 path seldom needs them).
  void resize(int64_t rows, int64_t params) {
    n = rows;
    n4 = (rows + 15) / 16 * 16;  // whole steps of the passes (kRun blocks of four rows)
    k = params;
    dp = (params + 3) / 4 * 4;
    z.resize(dp * n4);
    df.resize(n4);
    for (auto* v : {&y, &s, &e, &sc, &ec}) v->resize(n4);  // the passes write all n4
    std::fill(y.begin() + n, y.end(), 0.0);                // load_entity the first n
  }
};

// The rows order[k0 .. k0 + n) of in, encoded ((x - shift) * scale, NaN -> 0; one-hot), into
// the entity's z and y (zeros past n and in the rows past k). False where an order entry or a
// code is out of range. Where the rows are a run of the table (an entity's rows together, as a
// table grouped by entity gives them), the columns are read in place rather than gathered.
__attribute__((always_inline)) inline bool load_entity(const GramInputs& in, const double* scale,
                                                       bool intercept, int64_t k0, Entity& ent) {
  const int64_t* rows = in.order + k0;
  const int64_t n = ent.n, n4 = ent.n4, first = n > 0 ? rows[0] : 0;
  bool ok = true, run = true;
  for (int64_t t = 0; t < n; ++t) {
    ok &= static_cast<uint64_t>(rows[t]) < uint64_t(in.n);
    run &= rows[t] == first + t;
  }
  if (!ok) return false;
  double* z = ent.z.data();
  const auto tail = [&](double* row) { std::fill(row + n, row + n4, 0.0); };
  for (size_t j = 0; j < in.num.size(); ++j) {
    double* __restrict out = z + in.num_pos[j] * n4;
    const double sh = in.shift[j], sc = scale[j];
    if (run) {
      const double* __restrict col = in.num[j] + first;
      for (int64_t t = 0; t < n; ++t) {
        const double v = (col[t] - sh) * sc;
        out[t] = v == v ? v : 0.0;
      }
    } else {
      const double* col = in.num[j];
      for (int64_t t = 0; t < n; ++t) {
        const double v = (col[rows[t]] - sh) * sc;
        out[t] = v == v ? v : 0.0;
      }
    }
    tail(out);
  }
  for (size_t c = 0; c < in.cat.size(); ++c) {
    double* out = z + in.cat_off[c] * n4;
    const int64_t size = in.cat_size[c];
    std::fill(out, out + size * n4, 0.0);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t code = in.cat[c][rows[t]];
      ok &= code >= -1 && code < size;
      if (code >= 0 && code < size) out[code * n4 + t] = 1.0;
    }
  }
  if (intercept) {
    std::fill_n(z + in.width * n4, n, 1.0);
    tail(z + in.width * n4);
  }
  std::fill(z + ent.k * n4, z + ent.dp * n4, 0.0);
  if (run) {
    std::copy(in.label + first, in.label + first + n, ent.y.data());
  } else {
    for (int64_t t = 0; t < n; ++t) ent.y[t] = in.label[rows[t]];
  }
  return ok;
}

// load_entity, compiled for each instruction set (its loops vectorized for AVX2 where it runs).
bool load_entity_generic(const GramInputs& in, const double* scale, bool intercept, int64_t k0,
                         Entity& ent) {
  return load_entity(in, scale, intercept, k0, ent);
}

#if defined(__x86_64__)
MMHOST_AVX2 bool load_entity_avx2(const GramInputs& in, const double* scale, bool intercept,
                                  int64_t k0, Entity& ent) {
  return load_entity(in, scale, intercept, k0, ent);
}
#endif

#if defined(__x86_64__)
// The passes' exp and the objective's log1p take kRun vectors of four rows at once, each step
// of their polynomials applied to every vector in turn: one vector's chain of dependent
// operations (~14 FMAs deep, ~70 cycles) would leave the core waiting, kRun of them interleaved
// keep it busy. Each lane's arithmetic is the same as one vector at a time.
constexpr int kRun = 4;

// exp(x) for x <= 0, kRun x four lanes, within 2 ulp of std::exp: x = k ln2 + r (|r| <= ln2 /
// 2), e^r by its Taylor series to r^13 (the next term is below 2^-53 of it), 2^k written into
// the exponent bits; 0 below -708 (where e^x leaves the normal range).
MMHOST_AVX2 inline void exp_nonpositive(const __m256d* x, __m256d* out) {
  static constexpr double kInvFactorial[] = {
      1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
      1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,      1.0 / 720.0,
      1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,         0.5,
      1.0,                1.0};
  __m256d k[kRun], r[kRun], p[kRun];
  for (int b = 0; b < kRun; ++b) {
    k[b] = _mm256_round_pd(_mm256_mul_pd(x[b], _mm256_set1_pd(1.4426950408889634)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r[b] = _mm256_fnmadd_pd(k[b], _mm256_set1_pd(0.6931471803691238), x[b]);  // ln2, high
    r[b] = _mm256_fnmadd_pd(k[b], _mm256_set1_pd(1.9082149292705877e-10), r[b]);  // the rest
    p[b] = _mm256_set1_pd(kInvFactorial[0]);
  }
  for (int i = 1; i < 14; ++i)
    for (int b = 0; b < kRun; ++b)
      p[b] = _mm256_fmadd_pd(p[b], r[b], _mm256_set1_pd(kInvFactorial[i]));
  for (int b = 0; b < kRun; ++b) {
    // 2^k: k + 1023 into the low bits of 2^52's mantissa, then shifted into the exponent
    const __m256d biased = _mm256_add_pd(k[b], _mm256_set1_pd(4503599627371519.0));
    const __m256i bits = _mm256_slli_epi64(_mm256_castpd_si256(biased), 52);
    const __m256d v = _mm256_mul_pd(p[b], _mm256_castsi256_pd(bits));
    out[b] = _mm256_and_pd(v, _mm256_cmp_pd(x[b], _mm256_set1_pd(-708.0), _CMP_GE_OQ));
  }
}

// log1p(e) for e in [0, 1], kRun x four lanes, within 2 ulp of std::log1p: u = 1 + e rounded,
// and log1p(e) = log(u) + (e - (u - 1)) / u; log(u) = j ln2 + 2 atanh(z), z = (m - 1) / (m +
// 1) with u = 2^j m, m within [sqrt(1/2), sqrt(2)] (|z| <= 0.172: the series to z^21
// suffices).
MMHOST_AVX2 inline void log1p_unit(const __m256d* e, __m256d* out) {
  const __m256d one = _mm256_set1_pd(1.0);
  __m256d fix[kRun], z[kRun], w[kRun], q[kRun], ln2[kRun];
  for (int b = 0; b < kRun; ++b) {
    const __m256d u = _mm256_add_pd(one, e[b]);
    fix[b] = _mm256_div_pd(_mm256_sub_pd(e[b], _mm256_sub_pd(u, one)), u);
    const __m256d big = _mm256_cmp_pd(u, _mm256_set1_pd(1.4142135623730951), _CMP_GT_OQ);
    const __m256d m = _mm256_blendv_pd(u, _mm256_mul_pd(u, _mm256_set1_pd(0.5)), big);
    z[b] = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
    w[b] = _mm256_mul_pd(z[b], z[b]);
    q[b] = _mm256_set1_pd(2.0 / 21);
    ln2[b] = _mm256_and_pd(_mm256_set1_pd(0.6931471805599453), big);
  }
  for (int i = 19; i >= 1; i -= 2)
    for (int b = 0; b < kRun; ++b) q[b] = _mm256_fmadd_pd(q[b], w[b], _mm256_set1_pd(2.0 / i));
  for (int b = 0; b < kRun; ++b)
    out[b] = _mm256_add_pd(_mm256_fmadd_pd(q[b], z[b], ln2[b]), fix[b]);
}


#endif

#if defined(__x86_64__)
// One pass over the rows at theta, kRun x four at a time: s = z' theta, e = exp(-|s|), p =
// sigmoid(s); g_j = sum (p - y) z_j over the n rows, row blocks in order; the Hessian's
// weights d = p (1 - p) in float32. Each block's rows are read from memory once, for s, and
// again from the L1 cache for g.
MMHOST_AVX2 void evaluate_avx2(const double* z, int64_t n4, int64_t k, const double* theta,
                               const double* y, int64_t n, double* s, double* e, float* d,
                               double* g) {
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d sign = _mm256_set1_pd(-0.0);
  const __m256d lane = _mm256_set_pd(3, 2, 1, 0);
  std::vector<double> acc(4 * k, 0.0);  // four lanes a parameter (no vector of __m256d: its
                                        // alignment is not the allocator's)
  for (int64_t t = 0; t < n4; t += 4 * kRun) {
    __m256d sv[kRun], neg[kRun], ev[kRun], resid[kRun];
    for (int b = 0; b < kRun; ++b) sv[b] = _mm256_setzero_pd();
    for (int64_t j = 0; j < k; ++j) {
      const __m256d tj = _mm256_set1_pd(theta[j]);
      for (int b = 0; b < kRun; ++b)
        sv[b] = _mm256_fmadd_pd(tj, _mm256_loadu_pd(z + j * n4 + t + 4 * b), sv[b]);
    }
    for (int b = 0; b < kRun; ++b) neg[b] = _mm256_or_pd(sv[b], sign);  // -|s|
    exp_nonpositive(neg, ev);
    for (int b = 0; b < kRun; ++b) {
      const int64_t at = t + 4 * b;
      _mm256_storeu_pd(s + at, sv[b]);
      _mm256_storeu_pd(e + at, ev[b]);
      const __m256d up = _mm256_cmp_pd(sv[b], _mm256_setzero_pd(), _CMP_GE_OQ);
      const __m256d p = _mm256_div_pd(_mm256_blendv_pd(ev[b], one, up), _mm256_add_pd(one, ev[b]));
      resid[b] = _mm256_sub_pd(p, _mm256_loadu_pd(y + at));
      __m256d weight = _mm256_mul_pd(p, _mm256_sub_pd(one, p));
      if (at + 4 > n) {  // the padding past n: no residual, no weight
        const __m256d real = _mm256_cmp_pd(lane, _mm256_set1_pd(double(n - at)), _CMP_LT_OQ);
        resid[b] = _mm256_and_pd(resid[b], real);
        weight = _mm256_and_pd(weight, real);
      }
      _mm_storeu_ps(d + at, _mm256_cvtpd_ps(weight));
    }
    for (int64_t j = 0; j < k; ++j) {
      __m256d a = _mm256_loadu_pd(&acc[4 * j]);
      for (int b = 0; b < kRun; ++b)  // row blocks in order, as one block a step adds them
        a = _mm256_fmadd_pd(resid[b], _mm256_loadu_pd(z + j * n4 + t + 4 * b), a);
      _mm256_storeu_pd(&acc[4 * j], a);
    }
  }
  for (int64_t j = 0; j < k; ++j) {
    const double* lanes = &acc[4 * j];
    g[j] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  }
}

// The sum of softplus(s) - y s over the n rows, from s and e = exp(-|s|), kRun x four at a time.
MMHOST_AVX2 double log_loss_avx2(const double* s, const double* e, const double* y, int64_t n4,
                                 int64_t n) {
  __m256d total = _mm256_setzero_pd();
  const __m256d lane = _mm256_set_pd(3, 2, 1, 0);
  for (int64_t t = 0; t < n4; t += 4 * kRun) {
    __m256d ev[kRun], lp[kRun];
    for (int b = 0; b < kRun; ++b) ev[b] = _mm256_loadu_pd(e + t + 4 * b);
    log1p_unit(ev, lp);
    for (int b = 0; b < kRun; ++b) {
      const int64_t at = t + 4 * b;
      const __m256d sv = _mm256_loadu_pd(s + at);
      __m256d loss = _mm256_add_pd(_mm256_max_pd(sv, _mm256_setzero_pd()), lp[b]);
      loss = _mm256_fnmadd_pd(_mm256_loadu_pd(y + at), sv, loss);
      if (at + 4 > n)  // the padding past n adds nothing
        loss = _mm256_and_pd(loss, _mm256_cmp_pd(lane, _mm256_set1_pd(double(n - at)), _CMP_LT_OQ));
      total = _mm256_add_pd(total, loss);
    }
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, total);
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}
#endif

// The Hessian's float64 rows w_j = sqrt(p (1 - p)) z_j (into ent.w) from s and e at a theta;
// the unpenalized gradient sum (p - y) z_j into g.
void rows_f64(Entity& ent, const double* s, const double* e, double* g) {
  ent.w.assign(ent.dp * ent.n4, 0.0);  // zero past n and past k
  ent.r.resize(ent.n4);
  ent.q.resize(ent.n4);
  double* resid = ent.r.data();
  double* root = ent.q.data();
  for (int64_t t = 0; t < ent.n; ++t) {
    const double p = (s[t] >= 0 ? 1.0 : e[t]) / (1 + e[t]);
    resid[t] = p - ent.y[t];
    root[t] = std::sqrt(p * (1 - p));
  }
  for (int64_t j = 0; j < ent.k; ++j) {
    const double* __restrict zj = ent.z.data() + j * ent.n4;
    double* __restrict wj = ent.w.data() + j * ent.n4;
    double dot = 0;
    for (int64_t t = 0; t < ent.n; ++t) {
      dot += resid[t] * zj[t];
      wj[t] = zj[t] * root[t];
    }
    g[j] = dot;
  }
}

// At theta: s = z' theta, e = exp(-|s|), the gradient's sums into g, and the Hessian's rows
// (their float32 weights into ent.df where AVX2 runs, float64 rows into ent.w where not).
__attribute__((always_inline)) inline void evaluate(Entity& ent, const double* theta, bool avx2,
                                                    double* s, double* e, double* g) {
#if defined(__x86_64__)
  if (avx2) {
    evaluate_avx2(ent.z.data(), ent.n4, ent.k, theta, ent.y.data(), ent.n, s, e, ent.df.data(),
                  g);
    return;
  }
#endif
  const int64_t n4 = ent.n4;
  double* __restrict out = s;
  std::fill_n(out, n4, 0.0);
  for (int64_t j = 0; j < ent.k; ++j) {
    const double tj = theta[j];
    const double* __restrict zj = ent.z.data() + j * n4;
    for (int64_t t = 0; t < n4; ++t) out[t] += tj * zj[t];
  }
  for (int64_t t = 0; t < n4; ++t) e[t] = std::exp(-std::fabs(s[t]));
  rows_f64(ent, s, e, g);
}

// The mean log-loss plus the penalty at theta, from s and e there.
__attribute__((always_inline)) inline double objective(const Entity& ent, const double* theta,
                                                       const double* pen, bool avx2,
                                                       const double* s, const double* e) {
  double loss = 0;
#if defined(__x86_64__)
  if (avx2) {
    loss = log_loss_avx2(s, e, ent.y.data(), ent.n4, ent.n);
  } else
#endif
  {
    for (int64_t t = 0; t < ent.n; ++t)  // softplus(s) - y s
      loss += std::max(s[t], 0.0) + std::log1p(e[t]) - ent.y[t] * s[t];
  }
  double penalty = 0;
  for (int64_t j = 0; j < ent.k; ++j) penalty += pen[j] * theta[j] * theta[j];
  return loss / double(ent.n) + 0.5 * penalty;
}

// The smallest squared pivot, against the largest, of a Hessian whose float32 sums (relative
// error ~1e-7 each) still give Newton steps good to a few digits: cholesky's rcond there.
constexpr double kF32Span = 1e-5;

// The gradient above which Newton's steps are taken from float32 passes (evaluate_f32_avx2):
// far from the optimum, where their ~1e-6 error is immaterial (a step from a gradient of 1e-3
// lands within ~1e-7 of where a float64 one would, and the float64 steps after it are
// quadratic again); the last steps, from the float64 passes, are exact.
constexpr double kRough = 1e-3;

// There too, an entity of kSampledRows rows or more sums its Hessian over every other block of
// eight rows (scaled to all of them): a step that far from the optimum needs only the Hessian's
// rough shape, and the steps near it take every row. Half the Hessian's cost, for the same
// iterations on the benchmark's entities (6 for 999 of 1,000). Only where it is well
// conditioned (its factor's squared pivots within kSampledSpan of each other): an
// ill-conditioned Hessian would magnify the sampling's error into the steps (and where the
// optimum is weakly pinned, their path shows in the last digits), so it is summed again over
// every row.
constexpr int64_t kSampledRows = 512;
constexpr double kSampledSpan = 1e-3;

// The rows hessian_f32_avx2 sums with every = 2: those of the even blocks of eight, each run
// of kF32Rows (a multiple of 16) starting on one.
int64_t sampled_rows(int64_t n) { return n / 16 * 8 + std::min<int64_t>(8, n % 16); }

// Newton's method from theta = 0, each step halved until the objective does not rise (as
// solvers.logistic); theta (k) out. The iterations taken, or -1 where a Hessian is singular.
//
// A step is tried by one pass at the candidate, which gives everything the next iteration needs
// (the gradient and the Hessian's weights) but not the objective, whose log1p would cost as much
// again. The objective is convex, so along the step it falls as long as its slope is negative:
// where the gradient at the candidate still points along the step (g_c' step >= 0), or is below
// the tolerance there, the candidate is taken without it; only otherwise are the objectives at
// theta and at the candidate summed (from s and e, kept for both) and compared. Where AVX2 runs,
// the passes are float32 while the gradient is above kRough (s and e are then not kept: a
// float64 pass at that point gives them where they are needed).
__attribute__((always_inline)) inline int64_t newton(Entity& ent, const LogisticOptions& opt,
                                                   bool avx2, double* theta) {
  const int64_t k = ent.k, n = ent.n;
  std::vector<double> pen(k, 2 * opt.wd), g(k), gc(k), spare(k), step(k), cand(k), h(k * k);
  std::vector<double> acc(ent.dp * ent.dp);
  if (opt.intercept) pen[k - 1] = 0;
  std::fill_n(theta, k, 0.0);
  if (avx2) {  // the rows and labels in float32
    ent.zf.assign(ent.z.begin(), ent.z.end());
    ent.yf.assign(ent.y.begin(), ent.y.end());
  }
  Features rows{std::vector<const double*>(ent.dp), std::vector<double>(ent.dp, 0.0)};
  // the full gradient from the sums at theta; its largest entry
  const auto gradient = [&](const double* at, double* sums) {
    double worst = 0;
    for (int64_t j = 0; j < k; ++j) {
      sums[j] = sums[j] / double(n) + pen[j] * at[j];
      worst = std::max(worst, std::fabs(sums[j]));
    }
    return worst;
  };
  // a pass at theta (float32 where rough and AVX2 runs): whether it kept s and e (float64)
  const auto pass = [&](const double* at, bool rough, double* s, double* e, double* sums) {
#if defined(__x86_64__)
    if (avx2 && rough) {
      evaluate_f32_avx2(ent.zf.data(), ent.n4, k, at, ent.yf.data(), n, ent.df.data(), sums);
      return false;
    }
#endif
    evaluate(ent, at, avx2, s, e, sums);
    return true;
  };
  bool exact = pass(theta, true, ent.s.data(), ent.e.data(), g.data());  // s, e kept at theta
  double worst = gradient(theta, g.data());
  const auto make_exact = [&] {  // s and e at theta
    if (!exact) exact = pass(theta, false, ent.s.data(), ent.e.data(), spare.data());
  };
  if (exact && worst < opt.tol) return 0;
  double f = NAN;  // the objective at theta, once summed
  for (int64_t it = 0; it < opt.max_iter; ++it) {
    // the Hessian z' D z + diag(pen), factored: from float32 sums where AVX2 runs, again from
    // float64 ones where those leave it ill-conditioned for their precision
    const auto factor = [&](double rcond) {
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j <= i; ++j)
          h[i * k + j] = h[j * k + i] = acc[j * ent.dp + i] / double(n) + (i == j ? pen[i] : 0);
      return cholesky(h.data(), k, rcond);
    };
    bool factored = false;
#if defined(__x86_64__)
    if (avx2) {
      if (worst > kRough && n >= kSampledRows) {  // sampled rows' sums, scaled to all n
        hessian_f32_avx2(ent.df.data(), ent.zf.data(), ent.dp, ent.n4, 2, acc.data());
        const double scale = double(n) / double(sampled_rows(n));
        for (double& v : acc) v *= scale;
        factored = factor(kSampledSpan);
      }
      if (!factored) {  // every row
        hessian_f32_avx2(ent.df.data(), ent.zf.data(), ent.dp, ent.n4, 1, acc.data());
        factored = factor(kF32Span);
      }
      if (!factored) {  // the float64 rows
        make_exact();
        rows_f64(ent, ent.s.data(), ent.e.data(), spare.data());
      }
    }
#endif
    if (!factored) {
      for (int64_t i = 0; i < ent.dp; ++i) rows.f[i] = ent.w.data() + i * ent.n4;
      std::fill(acc.begin(), acc.end(), 0.0);
#if defined(__x86_64__)
      if (avx2)
        gram_step_avx2(rows, ent.dp, ent.n4, acc.data());
      else
#endif
        gram_step_scalar(rows, ent.dp, ent.n4, acc.data());
      if (!factor(kRcond)) return -1;
    }
    step = g;
    cholesky_solve(h.data(), k, step.data());
    double t = 1;
    bool moved = false;
    for (int halvings = 0; halvings < 40 && !moved; ++halvings, t /= 2) {
      for (int64_t j = 0; j < k; ++j) cand[j] = theta[j] - t * step[j];
      bool kept = false;
      double worst_c = 0, slope = 0;  // slope: the objective's along -step at cand, negated
      double fc = NAN;
      for (bool rough = worst > kRough;; rough = false) {
        kept = pass(cand.data(), rough, ent.sc.data(), ent.ec.data(), gc.data());
        worst_c = gradient(cand.data(), gc.data());
        slope = 0;
        for (int64_t j = 0; j < k; ++j) slope += gc[j] * step[j];
        moved = slope >= 0 || (kept && worst_c < opt.tol);
        if (moved || kept) break;  // a float32 pass decides only where it takes the step
      }
      if (!moved) {
        make_exact();
        if (f != f) f = objective(ent, theta, pen.data(), avx2, ent.s.data(), ent.e.data());
        fc = objective(ent, cand.data(), pen.data(), avx2, ent.sc.data(), ent.ec.data());
        moved = !(fc > f + 1e-15 * std::max(std::fabs(f), 1.0));
      }
      if (moved) {
        std::copy(cand.begin(), cand.end(), theta);
        std::swap(ent.s, ent.sc);
        std::swap(ent.e, ent.ec);
        std::swap(g, gc);
        exact = kept;
        worst = worst_c;
        f = fc;
      }
    }
    if (!moved) break;  // no step lowers the objective any more
    if (exact && worst < opt.tol) return it + 1;
  }
  make_exact();  // s at theta, for the caller
  return opt.max_iter;
}

// An entity loaded into ent: normalized (normalize_data), fitted, the normalization folded
// back into out (width weights, the intercept), its training accuracy into accuracy. The
// iterations taken, or -1 (a singular Hessian). One body, compiled for each instruction set.
__attribute__((always_inline)) inline int64_t fit_entity(Entity& ent, const LogisticOptions& opt,
                                                        bool avx2, int64_t width, double* out,
                                                        double* accuracy) {
  const int64_t rows = ent.n;
  std::vector<double> w(ent.k), mu(width, 0.0), sd(width, 1.0);
  if (opt.normalize) {  // each feature to mean 0 (with an intercept) and deviation 1
    for (int64_t j = 0; j < width; ++j) {
      double* zj = ent.z.data() + j * ent.n4;
      double m = 0;
      if (opt.intercept) {
#pragma omp simd reduction(+ : m)
        for (int64_t t = 0; t < rows; ++t) m += zj[t];
        m /= double(rows);
      }
      double v = 0;
#pragma omp simd reduction(+ : v)
      for (int64_t t = 0; t < rows; ++t) v += (zj[t] - m) * (zj[t] - m);
      v /= double(rows);
      mu[j] = m;
      sd[j] = v > 0 ? std::sqrt(v) : 1.0;
      for (int64_t t = 0; t < rows; ++t) zj[t] = (zj[t] - m) / sd[j];
    }
  }
  const int64_t taken = newton(ent, opt, avx2, w.data());
  if (taken < 0) return taken;
  double bias = opt.intercept ? w[ent.k - 1] : 0.0;
  for (int64_t j = 0; j < width; ++j) {
    out[j] = w[j] / sd[j];
    bias -= out[j] * mu[j];
  }
  out[width] = bias;
  double right = 0;
  for (int64_t t = 0; t < rows; ++t) right += (ent.s[t] > 0) == (ent.y[t] > 0.5);
  *accuracy = right / double(rows);
  return taken;
}

int64_t fit_entity_generic(Entity& ent, const LogisticOptions& opt, int64_t width, double* out,
                           double* accuracy) {
  return fit_entity(ent, opt, false, width, out, accuracy);
}

#if defined(__x86_64__)
MMHOST_AVX2 int64_t fit_entity_avx2(Entity& ent, const LogisticOptions& opt, int64_t width,
                                    double* out, double* accuracy) {
  return fit_entity(ent, opt, true, width, out, accuracy);
}
#endif

}  // namespace

at::Tensor entity_gram(const std::vector<at::Tensor>& numeric, const at::Tensor& num_pos,
                       const at::Tensor& shift, const std::vector<at::Tensor>& categorical,
                       const at::Tensor& cat_off, const at::Tensor& cat_size,
                       const at::Tensor& label, const at::Tensor& order, const at::Tensor& bounds,
                       int64_t width, double label_shift) {
  GramInputs in = checked_inputs(numeric, num_pos, shift, categorical, cat_off, cat_size, label,
                                 order, bounds, width, label_shift);
  in.identity = is_identity(order, in.n);
  const int64_t segs = bounds.size(0);
  const int64_t* b = bounds.data_ptr<int64_t>();
  const int64_t d = width + 2, dp = in.dp;
  at::Tensor out = at::zeros({segs, d, d}, label.options());
  double* o = out.data_ptr<double>();
  const bool avx2 = use_avx2();
  std::atomic<bool> ok{true};
  at::parallel_for(0, segs, 16, [&](int64_t s0, int64_t s1) {
    // the tile's rows past width + 2 stay zero; every other row is written before it is read
    std::unique_ptr<double[]> tile(new double[dp * kTile]());
    std::unique_ptr<double[]> acc(new double[dp * dp]);
    Features rows{std::vector<const double*>(dp), std::vector<double>(dp)};
    auto step = [&](int64_t len4) {
#if defined(__x86_64__)
      if (avx2) return gram_step_avx2(rows, dp, len4, acc.get());
#endif
      gram_step_scalar(rows, dp, len4, acc.get());
    };
    // rows [k0, end) through the tile
    auto copied = [&](int64_t k0, int64_t end) {
      for (; k0 < end; k0 += kTile) {
        const int64_t len = std::min(kTile, end - k0), len4 = (len + 3) / 4 * 4;
        if (!fill_tile(in, k0, len, len4, tile.get())) return false;
        from_tile(tile.get(), dp, rows);
        step(len4);
      }
      return true;
    };
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t begin = b[2 * s], end = b[2 * s + 1];
      std::fill(acc.get(), acc.get() + dp * dp, 0.0);
      int64_t done = begin;
      if (in.identity && avx2) {  // whole 4-row steps read in place
        const int64_t whole = begin + (end - begin) / 4 * 4;
        for (; done < whole; done += kTile) {
          const int64_t len = std::min(kTile, whole - done);
          if (!fill_categories(in, done, len, len, tile.get())) {
            ok = false;
            return;
          }
          from_columns(in, done, tile.get(), rows);
          step(len);
        }
        done = whole;
        bool nan = false;
        for (int64_t i = 0; i < dp * dp; ++i) nan |= acc[i] != acc[i];
        if (nan) {  // a missing value: the tile's copy fills it
          std::fill(acc.get(), acc.get() + dp * dp, 0.0);
          done = begin;
        }
      }
      if (!copied(done, end)) {
        ok = false;
        return;
      }
      double* g = o + s * d * d;
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = i; j < d; ++j) g[i * d + j] = g[j * d + i] = acc[i * dp + j];
    }
  });
  TORCH_CHECK(ok.load(), "entity_gram: an order entry is outside the table's ", in.n,
              " rows, or a category code outside its column's categories");
  return out;
}

at::Tensor column_moments(const std::vector<at::Tensor>& columns, const at::Tensor& order) {
  MMHOST_CHECK_INPUT(order, at::kLong, 1);
  const int64_t k = int64_t(columns.size()), m = order.size(0);
  if (k == 0) return at::empty({0, 3}, order.options().dtype(at::kDouble));
  const int64_t n = columns[0].size(0);
  const std::vector<const double*> cols = f64_columns(columns, n, "the");
  const int64_t* rows = order.data_ptr<int64_t>();
  const bool identity = is_identity(order, n);
  const bool avx2 = use_avx2();
  for (int64_t i = 0; !identity && i < m; ++i)
    TORCH_CHECK(static_cast<uint64_t>(rows[i]) < uint64_t(n), "order[", i, "] = ", rows[i],
                " is outside the ", n, " rows");
  at::Tensor out = at::empty({k, 3}, order.options().dtype(at::kDouble));
  double* o = out.data_ptr<double>();
  at::parallel_for(0, k, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const double* col = cols[c];
      double pilot = 0.0;
      for (int64_t i = 0; i < m; ++i) {
        const double v = col[rows[i]];
        if (v == v) {
          pilot = v;
          break;
        }
      }
#if defined(__x86_64__)
      const Sums sums = avx2 ? sums_avx2(col, identity ? nullptr : rows, m, pilot)
                             : sums_generic(col, identity ? nullptr : rows, m, pilot);
#else
      const Sums sums = sums_generic(col, identity ? nullptr : rows, m, pilot);
#endif
      const double count = sums.count, s1 = sums.s1, s2 = sums.s2;
      const double a = s1 / (count > 0 ? count : 1);
      const double q = s2 / (count > 0 ? count : 1);
      o[3 * c + 0] = count;
      o[3 * c + 1] = count > 0 ? pilot + a : NAN;
      o[3 * c + 2] = count > 0 ? std::max(q - a * a, 0.0) : NAN;
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> entity_logistic(
    const std::vector<at::Tensor>& numeric, const at::Tensor& num_pos, const at::Tensor& shift,
    const at::Tensor& scale, const std::vector<at::Tensor>& categorical,
    const at::Tensor& cat_off, const at::Tensor& cat_size, const at::Tensor& label,
    const at::Tensor& order, const at::Tensor& bounds, int64_t width, double wd,
    bool fit_intercept, bool normalize_data, int64_t max_iter, double tol, int64_t max_rows) {
  const GramInputs in = checked_inputs(numeric, num_pos, shift, categorical, cat_off, cat_size,
                                       label, order, bounds, width, 0.0);
  MMHOST_CHECK_INPUT(scale, at::kDouble, 1);
  TORCH_CHECK(scale.size(0) == num_pos.size(0), "scale needs one entry a numeric column");
  TORCH_CHECK(wd >= 0 && max_iter >= 0 && tol >= 0, "wd, max_iter and tol must be >= 0");
  const LogisticOptions opt{wd, fit_intercept, normalize_data, max_iter, tol};
  const int64_t segs = bounds.size(0), k = width + (fit_intercept ? 1 : 0);
  const int64_t* b = bounds.data_ptr<int64_t>();
  at::Tensor theta = at::zeros({segs, width + 1}, label.options());
  at::Tensor iters = at::full({segs}, -1, order.options());
  at::Tensor accuracy = at::full({segs}, NAN, label.options());
  double* th = theta.data_ptr<double>();
  int64_t* its = iters.data_ptr<int64_t>();
  double* acc = accuracy.data_ptr<double>();
  const double* sc = scale.data_ptr<double>();
  const bool avx2 = use_avx2();
  std::atomic<bool> ok{true};
  at::parallel_for(0, segs, 1, [&](int64_t s0, int64_t s1) {
    Entity ent;
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t rows = b[2 * s + 1] - b[2 * s];
      if (rows < 1 || rows > max_rows) continue;  // iterations -1: not fitted here
      ent.resize(rows, k);
#if defined(__x86_64__)
      const bool loaded = avx2 ? load_entity_avx2(in, sc, fit_intercept, b[2 * s], ent)
                               : load_entity_generic(in, sc, fit_intercept, b[2 * s], ent);
#else
      const bool loaded = load_entity_generic(in, sc, fit_intercept, b[2 * s], ent);
#endif
      if (!loaded) {
        ok = false;
        return;
      }
      double* out = th + s * (width + 1);
#if defined(__x86_64__)
      its[s] = avx2 ? fit_entity_avx2(ent, opt, width, out, acc + s)
                    : fit_entity_generic(ent, opt, width, out, acc + s);
#else
      its[s] = fit_entity_generic(ent, opt, width, out, acc + s);
#endif
    }
  });
  TORCH_CHECK(ok.load(), "entity_logistic: an order entry is outside the table's ", in.n,
              " rows, or a category code outside its column's categories");
  return {theta, iters, accuracy};
}

}  // namespace mmhost
