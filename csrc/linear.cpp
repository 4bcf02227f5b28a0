// CPU kernel of the fused multi-model linear op (mmhost/kernels/linear.py holds the contract and
// the plain-torch oracle, linear_reference).
//
//   for i in range(N):
//       s = slots[i]
//       z = weight[s] @ x[i] + bias[s]                      # (K,)
//       out[i] = identity(z) | sigmoid(z) | softmax(z)        chosen by link[s]
//
// Rows are independent, so rows are split across threads; each row is K dot products of length
// D against its own model's weights. Models are small (K*D is often < 1k), so per-call overhead
// matters as much as the inner loop: nothing is allocated but the output, and a batch too small
// to repay waking the thread pool runs inline on the calling thread.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mmhost.h"

namespace mmhost {
namespace {

// Each parallel task does at least this many multiply-adds: waking an OpenMP team costs a few
// microseconds, about the time one core spends on ~16k multiply-adds.
constexpr int64_t kMinMacsPerTask = 16 * 1024;

// Rows per block: z of a block is computed first, then its links applied. Kept apart, the
// dot-product loop has no branch, and the exp calls of consecutive rows overlap in the pipeline
// (sigmoid rows measured ~25% cheaper than interleaved); a block's outputs stay in L1.
constexpr int64_t kBlockRows = 256;

// sum_d w[d] * x[d] in float. Eight independent partial sums (two SSE registers) hide the
// latency of the add chain, and let the compiler vectorise without -ffast-math: it may not
// reassociate a single float sum by itself.
inline float dot(const float* __restrict__ w, const float* __restrict__ x, int64_t d) {
  constexpr int64_t kLanes = 8;
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += w[j + l] * x[j + l];
  }
  float tail = 0.f;
  for (; j < d; ++j) tail += w[j] * x[j];
  for (int64_t l = 0; l < kLanes / 2; ++l) acc[l] += acc[l + kLanes / 2];
  return (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail;
}

// Applies the link in place to one row z (K,). Unknown link codes, and softmax with K == 1, are
// left as identity, like linear_reference.
inline void apply_link(float* __restrict__ z, int64_t k, int8_t link) {
  if (link == kLinkSigmoid) {
    for (int64_t j = 0; j < k; ++j) z[j] = 1.f / (1.f + std::exp(-z[j]));
  } else if (link == kLinkSoftmax && k > 1) {
    float m = z[0];
    // subtract the max so exp can't overflow
    for (int64_t j = 1; j < k; ++j) m = z[j] > m ? z[j] : m;
    float sum = 0.f;
    for (int64_t j = 0; j < k; ++j) {
      z[j] = std::exp(z[j] - m);
      sum += z[j];
    }
    const float inv = 1.f / sum;
    for (int64_t j = 0; j < k; ++j) z[j] *= inv;
  }
}

// Rows [begin, end) of the op. A plain function rather than the parallel_for lambda's body, so
// that the __restrict__ promises reach the loops (through a lambda's captures they are lost).
void linear_rows(const float* __restrict__ x, const int64_t* __restrict__ slots,
                 const float* __restrict__ weight, const float* __restrict__ bias,
                 const int8_t* __restrict__ link, float* __restrict__ out, int64_t begin,
                 int64_t end, int64_t k, int64_t d) {
  for (int64_t b0 = begin; b0 < end; b0 += kBlockRows) {
    const int64_t b1 = std::min(end, b0 + kBlockRows);
    for (int64_t i = b0; i < b1; ++i) {
      const int64_t s = slots[i];
      const float* xi = x + i * d;           // (D,)
      const float* ws = weight + s * k * d;  // (K, D)
      const float* bs = bias + s * k;        // (K,)
      float* zi = out + i * k;               // (K,)
      for (int64_t j = 0; j < k; ++j) zi[j] = dot(ws + j * d, xi, d) + bs[j];
    }
    for (int64_t i = b0; i < b1; ++i) {
      const int8_t l = link[slots[i]];
      if (l != kLinkIdentity) apply_link(out + i * k, k, l);
    }
  }
}

}  // namespace

at::Tensor linear_forward(const at::Tensor& x, const at::Tensor& slots, const at::Tensor& weight,
                          const at::Tensor& bias, const at::Tensor& link) {
  MMHOST_CHECK_INPUT(x, at::kFloat, 2);
  MMHOST_CHECK_INPUT(slots, at::kLong, 1);
  MMHOST_CHECK_INPUT(weight, at::kFloat, 3);
  MMHOST_CHECK_INPUT(bias, at::kFloat, 2);
  MMHOST_CHECK_INPUT(link, at::kChar, 1);

  const int64_t n = x.size(0), d = x.size(1);
  const int64_t s = weight.size(0), k = weight.size(1);
  TORCH_CHECK(weight.size(2) == d, "x has D=", d, " columns but weight is ", weight.sizes());
  TORCH_CHECK(slots.size(0) == n, "slots must be (", n, ",) to match x, got ", slots.sizes());
  TORCH_CHECK(bias.size(0) == s && bias.size(1) == k, "bias must be (", s, ", ", k,
              ") to match weight, got ", bias.sizes());
  TORCH_CHECK(link.size(0) == s, "link must be (", s, ",) to match weight, got ", link.sizes());

  const int64_t* sp = slots.data_ptr<int64_t>();
  // Pre-pass: one int64 read per row, negligible beside the K*D multiply-adds per row, and it
  // keeps exceptions out of the parallel region. The unsigned compare also catches negatives.
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(static_cast<uint64_t>(sp[i]) < static_cast<uint64_t>(s), "slots[", i, "] = ", sp[i],
                " is not a slot of this slab (valid slots: 0 <= slot < ", s, ")");
  }

  at::Tensor out = at::empty({n, k}, x.options());  // (N, K)

  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const int8_t* lp = link.data_ptr<int8_t>();
  float* op = out.data_ptr<float>();
  const int64_t macs_per_row = std::max<int64_t>(1, k * d);
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerTask / macs_per_row);
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    linear_rows(xp, sp, wp, bp, lp, op, begin, end, k, d);
  });
  return out;
}

}  // namespace mmhost
