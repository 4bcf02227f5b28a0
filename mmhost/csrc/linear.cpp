// CPU kernel of the fused multi-model linear op (mmhost/kernels/linear.py holds the contract and
// the plain-torch oracle, linear_reference).
//
//   for i in range(N):
//       s = slots[i]
//       z = weight[s] @ x[i] + bias[s]                      # (K,)
//       out[i] = identity(z) | sigmoid(z) | softmax(z)        chosen by link[s]
//
// Models are small (K*D is often < 1k), so the op is bound by memory traffic and per-call
// overhead, not arithmetic:
// - The N*K outputs are a flat run of dot products (row i, output j), computed eight at a time:
//   eight dot products are reduced into one vector of eight outputs together, so a K = 1 slab
//   pays no horizontal sum per row.
// - The hot widths (D = 8, 16, 32, 64: the arena pads D to a power of two >= 8) get
//   compile-time-unrolled dot products; other widths take a runtime loop.
// - On x86-64 CPUs with AVX2 and FMA (checked at runtime, so the build stays portable) the loops
//   are AVX2 intrinsics, sigmoid and softmax included; elsewhere they are plain C++ that the
//   compiler vectorises for the baseline ISA (SSE2, NEON).
// - Nothing is allocated but the output, slots are validated inside the row loop (no pass of
//   their own), and batches too small to repay a second thread run inline on the calling thread.
//
// Accumulation is float32 throughout (with FMA on AVX2: one rounding per multiply-add), in an
// order other than torch.bmm's; the tests bound the difference (~u*sqrt(D)).

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "mmhost.h"
#include "simd.h"

namespace mmhost {
namespace {

// Rows per block: z of a block is computed first, then its links applied. Kept apart, the
// dot-product loop has no branch on the link, and consecutive rows with the same link are one
// vectorised sigmoid/exp call; a block's outputs stay in L1 between the two passes.
constexpr int64_t kBlockRows = 256;

// A call uses a second thread only when each thread gets at least this many multiply-adds
// (~40-60 us of one core on a D=16 slab). Below that, waking a helper (tens of us on a VM) buys
// nothing measurable (none at N=16k, D=16; 1.5x at N=40k), and every parallel call risks a stall
// while a helper preempted mid-chunk finishes it.
constexpr int64_t kMinMacsPerTask = 256 * 1024;

// Parallel calls are cut into chunks of about this many multiply-adds (~10-20 us of one core on
// a D=16 slab), claimed one at a time; see linear_rows_parallel.
constexpr int64_t kChunkMacs = 32 * 1024;

constexpr int64_t kNoBadSlot = std::numeric_limits<int64_t>::max();

// Flags returned by Kernels::z.
constexpr uint32_t kBadSlot = 1;
constexpr uint32_t kSomeLink = 2;

// One call's inputs; passed by reference to the row kernels.
struct Problem {
  const float* x;        // (N, D)
  const int64_t* slots;  // (N,)
  const float* weight;   // (S, K, D)
  const float* bias;     // (S, K)
  const int8_t* link;    // (S,)
  float* out;            // (N, K)
  int64_t s, k, d;
};

// Checks the slots of a block's rows as the kernels read them, and notes whether any row's link
// is not identity: a few scalar ops per row, instead of passes of their own over slots and links.
struct SlotCheck {
  const int8_t* link;
  uint64_t num_slots;
  uint64_t max_slot = 0;  // as unsigned: a negative slot is a huge one
  uint32_t links = 0;     // OR of the links seen (identity is 0)

  // s itself if it is a valid slot, else 0 (no read out of bounds; flags() reports it).
  inline int64_t operator()(int64_t s) {
    const uint64_t u = static_cast<uint64_t>(s);
    max_slot = u > max_slot ? u : max_slot;
    const int64_t safe = u < num_slots ? s : 0;
    links |= static_cast<uint8_t>(link[safe]);
    return safe;
  }

  uint32_t flags() const {
    static_assert(kLinkIdentity == 0, "links is the OR of the link codes");
    return (max_slot >= num_slots ? kBadSlot : 0u) | (links != 0 ? kSomeLink : 0u);
  }
};

// The kernels for one slab shape on this CPU.
struct Kernels {
  // z = weight[slot] @ x + bias[slot] for rows [b0, b1), written to out (no link applied).
  // Returns kBadSlot if a slot is outside [0, S) (the row is computed with slot 0 instead: no
  // read out of bounds; the caller raises), plus kSomeLink if a row's link is not identity.
  uint32_t (*z)(const Problem&, int64_t b0, int64_t b1);
  // z[i] = 1 / (1 + exp(-z[i])) for i < n, in place
  void (*sigmoid)(float* z, int64_t n);
  // z[i] = exp(z[i]) for i < n, in place
  void (*exp)(float* z, int64_t n);
};

// ---------------------------------------------------------------------------------------------
// Portable kernels (any CPU): plain C++ with a fixed number of independent partial sums, which
// the compiler vectorises without -ffast-math (it may not reassociate a single float sum).

// sum_j w[j] * x[j]; D > 0 is the width known at compile time, D == 0 reads it from d.
template <int D>
inline float dot_portable(const float* __restrict__ w, const float* __restrict__ x, int64_t d) {
  constexpr int64_t kLanes = 8;
  const int64_t n = D > 0 ? D : d;
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += w[j + l] * x[j + l];
  }
  float sum = 0.f;
  if constexpr (D == 0) {  // (compile-time widths are multiples of 8: no tail)
    for (; j < n; ++j) sum += w[j] * x[j];
  }
  for (int64_t l = 0; l < kLanes / 2; ++l) acc[l] += acc[l + kLanes / 2];
  return sum + ((acc[0] + acc[2]) + (acc[1] + acc[3]));
}

template <int D, bool K1>
uint32_t z_portable(const Problem& p, int64_t b0, int64_t b1) {
  const float* __restrict__ x = p.x;
  const int64_t* __restrict__ slots = p.slots;
  const float* __restrict__ weight = p.weight;
  const float* __restrict__ bias = p.bias;
  float* __restrict__ out = p.out;
  const int64_t k = K1 ? 1 : p.k, d = D > 0 ? D : p.d;
  SlotCheck check{p.link, static_cast<uint64_t>(p.s)};
  for (int64_t i = b0; i < b1; ++i) {
    const int64_t s = check(slots[i]);
    const float* xi = x + i * d;           // (D,)
    const float* ws = weight + s * k * d;  // (K, D)
    const float* bs = bias + s * k;        // (K,)
    float* zi = out + i * k;               // (K,)
    for (int64_t j = 0; j < k; ++j) zi[j] = dot_portable<D>(ws + j * d, xi, d) + bs[j];
  }
  return check.flags();
}

void sigmoid_portable(float* z, int64_t n) {
  for (int64_t i = 0; i < n; ++i) z[i] = 1.f / (1.f + std::exp(-z[i]));
}

void exp_portable(float* z, int64_t n) {
  for (int64_t i = 0; i < n; ++i) z[i] = std::exp(z[i]);
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA kernels (x86-64, chosen at runtime). Only these functions are compiled for AVX2, so
// the extension still loads and runs on an x86-64 CPU without it.

#if defined(__x86_64__)

// Eight lane-wise partial sums of w[j] * x[j] (their total is the dot product). D > 0: the width
// at compile time, 8 or a multiple of 16; D == 0: any width d, read at runtime.
template <int D>
MMHOST_AVX2 inline __m256 dot_avx2(const float* w, const float* x, int64_t d) {
  if constexpr (D == 8) {
    return _mm256_mul_ps(_mm256_loadu_ps(w), _mm256_loadu_ps(x));
  } else if constexpr (D > 0) {
    static_assert(D % 16 == 0, "compile-time widths are 8 or a multiple of 16");
    // two accumulators: half the FMA latency chain
    __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(w), _mm256_loadu_ps(x));
    __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(w + 8), _mm256_loadu_ps(x + 8));
#pragma GCC unroll 8
    for (int j = 16; j < D; j += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
    }
    return _mm256_add_ps(a0, a1);
  } else {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= d; j += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 16), _mm256_loadu_ps(x + j + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 24), _mm256_loadu_ps(x + j + 24), a3);
    }
    for (; j + 8 <= d; j += 8) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
    }
    if (j < d) {  // masked-off lanes are not read (no fault past the end of x) and add zero
      const __m256i m = first_lanes(d - j);
      a1 = _mm256_fmadd_ps(_mm256_maskload_ps(w + j, m), _mm256_maskload_ps(x + j, m), a1);
    }
    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  }
}

// Walks the dot products t = i*K + j (row i, output j) of a block of rows in order.
// K1: K == 1 at compile time.
template <int D, bool K1>
struct DotWalk {
  const float* __restrict__ x;
  const int64_t* __restrict__ slots;
  const float* __restrict__ weight;
  const float* __restrict__ bias;
  SlotCheck check;
  int64_t k, d;
  int64_t i, j = 0;  // the next dot product
  int64_t s = 0;     // slot of row i

  // The partial sums of the next dot product, and its bias in b.
  MMHOST_AVX2 inline __m256 next(float& b) {
    if (K1 || j == 0) s = check(slots[i]);
    const __m256 v = dot_avx2<D>(weight + (s * k + j) * d, x + i * d, d);
    b = bias[s * k + j];
    if (K1 || ++j == k) {
      j = 0;
      ++i;
    }
    return v;
  }
};

// The outputs of rows [b0, b1) are out[b0*K .. b1*K): a flat run of dot products, computed eight
// at a time and reduced together. Consecutive rows of one model (the usual batch layout) re-read
// its weights from L1.
template <int D, bool K1>
MMHOST_AVX2 uint32_t z_avx2(const Problem& p, int64_t b0, int64_t b1) {
  const int64_t k = K1 ? 1 : p.k, d = D > 0 ? D : p.d;
  DotWalk<D, K1> walk{p.x, p.slots, p.weight, p.bias, {p.link, static_cast<uint64_t>(p.s)}, k, d, b0};
  float* __restrict__ out = p.out;
  const int64_t t1 = b1 * k;
  int64_t t = b0 * k;
  for (; t + 8 <= t1; t += 8) {
    __m256 v[8];
    float b[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) v[r] = walk.next(b[r]);
    const __m256 bv = _mm256_setr_ps(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
    _mm256_storeu_ps(out + t, _mm256_add_ps(reduce8(v), bv));
  }
  if (t < t1) {  // the last 1..7 dot products; the padding lanes sum zeros and are not stored
    const int64_t n = t1 - t;
    __m256 v[8];
    float b[8] = {};
    for (int r = 0; r < 8; ++r) v[r] = r < n ? walk.next(b[r]) : _mm256_setzero_ps();
    const __m256 z = _mm256_add_ps(reduce8(v), _mm256_loadu_ps(b));
    _mm256_maskstore_ps(out + t, first_lanes(n), z);
  }
  return walk.check.flags();
}

// exp(x) lane-wise, within ~1 ulp of expf over the whole float range: Cody-Waite reduction
// x = n*ln2 + r (|r| <= ln2/2), the Cephes degree-7 polynomial for exp(r), then the result
// scaled by 2^n in two steps so that it overflows to inf and underflows through the subnormals
// to 0 like expf. NaN stays NaN, exp(-inf) = 0, exp(inf) = inf.
MMHOST_AVX2 inline __m256 exp_avx2(__m256 x) {
  // beyond these, exp(x) rounds to inf or 0 anyway; clamping keeps n small enough for 2^(n/2)
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.f)), _mm256_set1_ps(89.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n*ln2, ln2 split in a part exact in n*hi (|n| <= 150) and the rest
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.f));
  // y * 2^n as y * 2^n1 * 2^n2, n1 = floor(n/2), n2 = n - n1: both factors are normal floats
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  y = _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
  // NaN in, NaN out (the clamp above replaced it)
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

MMHOST_AVX2 inline __m256 sigmoid_avx2(__m256 z) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), z));
  return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

template <__m256 (*F)(__m256)>
MMHOST_AVX2 void map_avx2(float* z, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(z + i, F(_mm256_loadu_ps(z + i)));
  if (i < n) {
    const __m256i m = first_lanes(n - i);
    _mm256_maskstore_ps(z + i, m, F(_mm256_maskload_ps(z + i, m)));
  }
}
#endif  // __x86_64__

// ---------------------------------------------------------------------------------------------
// Kernel selection, once per call: a switch on D and K, and a CPU check made once per process.

template <int D, bool K1>
struct PickPortable {
  static constexpr auto z = &z_portable<D, K1>;
};

#if defined(__x86_64__)
template <int D, bool K1>
struct PickAvx2 {
  static constexpr auto z = &z_avx2<D, K1>;
};

#endif

template <template <int, bool> class Pick>
auto pick_z(int64_t d, bool k1) -> decltype(Pick<0, true>::z) {
  switch (d) {
    case 8:
      return k1 ? Pick<8, true>::z : Pick<8, false>::z;
    case 16:
      return k1 ? Pick<16, true>::z : Pick<16, false>::z;
    case 32:
      return k1 ? Pick<32, true>::z : Pick<32, false>::z;
    case 64:
      return k1 ? Pick<64, true>::z : Pick<64, false>::z;
    default:
      return k1 ? Pick<0, true>::z : Pick<0, false>::z;
  }
}

Kernels select_kernels(int64_t d, int64_t k) {
#if defined(__x86_64__)
  static const bool avx2 = cpu_has_avx2_fma();
  if (avx2) {
    return {pick_z<PickAvx2>(d, k == 1), &map_avx2<sigmoid_avx2>, &map_avx2<exp_avx2>};
  }
#endif
  return {pick_z<PickPortable>(d, k == 1), &sigmoid_portable, &exp_portable};
}

// ---------------------------------------------------------------------------------------------
// The op on a range of rows.

// Softmax, in place, of `rows` consecutive rows z (rows, K), K > 1.
void softmax_rows(float* __restrict__ z, int64_t rows, int64_t k, const Kernels& kern) {
  for (int64_t r = 0; r < rows; ++r) {  // subtract each row's max so exp can't overflow
    float* zr = z + r * k;
    float m = zr[0];
    for (int64_t j = 1; j < k; ++j) m = zr[j] > m ? zr[j] : m;
    for (int64_t j = 0; j < k; ++j) zr[j] -= m;
  }
  kern.exp(z, rows * k);
  for (int64_t r = 0; r < rows; ++r) {
    float* zr = z + r * k;
    float sum = 0.f;
    for (int64_t j = 0; j < k; ++j) sum += zr[j];
    const float inv = 1.f / sum;
    for (int64_t j = 0; j < k; ++j) zr[j] *= inv;
  }
}

// Applies each row's link to out, rows [b0, b1). Consecutive rows with the same link are one run
// of out, mapped by one call. Unknown link codes, and softmax with K == 1, are left as identity,
// like linear_reference.
void apply_links(const Problem& p, const Kernels& kern, int64_t b0, int64_t b1) {
  const int64_t* __restrict__ slots = p.slots;
  const int8_t* __restrict__ link = p.link;
  const int64_t k = p.k;
  for (int64_t i = b0; i < b1;) {
    const int8_t l = link[slots[i]];
    int64_t r = i + 1;
    while (r < b1 && link[slots[r]] == l) ++r;
    if (l == kLinkSigmoid) {
      kern.sigmoid(p.out + i * k, (r - i) * k);
    } else if (l == kLinkSoftmax && k > 1) {
      softmax_rows(p.out + i * k, r - i, k, kern);
    }
    i = r;
  }
}

// Rows [begin, end) of the op, a block at a time: z, then the links if any row needs one.
// Returns the first row in the range whose slot is outside [0, S) (the rest of the range is left
// uncomputed: the call raises), or kNoBadSlot.
int64_t linear_rows(const Problem& p, const Kernels& kern, int64_t begin, int64_t end) {
  for (int64_t b0 = begin; b0 < end; b0 += kBlockRows) {
    const int64_t b1 = std::min(end, b0 + kBlockRows);
    const uint32_t flags = kern.z(p, b0, b1);
    if (flags & kBadSlot) {
      for (int64_t i = b0; i < b1; ++i) {
        if (static_cast<uint64_t>(p.slots[i]) >= static_cast<uint64_t>(p.s)) return i;
      }
    }
    if (flags & kSomeLink) apply_links(p, kern, b0, b1);
  }
  return kNoBadSlot;
}

// ---------------------------------------------------------------------------------------------
// Parallel calls. Rows are cut into chunks of ~kChunkMacs multiply-adds, claimed one at a time
// from an atomic counter by the calling thread and by helper threads. The caller starts on the
// chunks at once and waits only for chunks a helper has already claimed: a helper slow to wake
// (its core busy with another process) simply gets no work. A fork-join split (at::parallel_for)
// instead waits for every thread of the team, which on a 2-core VM with the other core busy cost
// a whole scheduler slice (~4-8 ms) on most calls.

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// One parallel call, shared with the helpers it was offered to: a helper may pick it up after
// the call has returned, find no chunk left, and drop it (it then touches only this object).
struct Job {
  Problem p;
  Kernels kern;
  int64_t n, chunk_rows, nchunks;
  std::atomic<int64_t> next{0};  // next chunk to claim
  std::atomic<int64_t> done{0};  // chunks finished
  std::atomic<int64_t> bad{kNoBadSlot};

  // Claims and runs chunks until none is left.
  void run() {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= nchunks) return;
      const int64_t b = linear_rows(p, kern, c * chunk_rows, std::min(n, (c + 1) * chunk_rows));
      int64_t cur = bad.load(std::memory_order_relaxed);
      while (b < cur && !bad.compare_exchange_weak(cur, b, std::memory_order_relaxed)) {
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// Helper threads, started on first use and never stopped (idle, they sleep on a condition
// variable). Not torch's intra-op pool, whose fork-join calls wait for every thread (above), nor
// its inter-op pool (at::launch), which would freeze torch.set_num_interop_threads and is not
// rebuilt in a forked child.
class Helpers {
 public:
  // The process's pool; a forked child starts a fresh one (its parent's threads are gone).
  static Helpers& get() {
    static const bool registered = [] {
#if defined(__unix__) || defined(__APPLE__)
      pthread_atfork(nullptr, nullptr, [] { instance().store(nullptr); });  // the old one leaks
#endif
      return true;
    }();
    (void)registered;
    Helpers* h = instance().load(std::memory_order_acquire);
    if (h == nullptr) {
      Helpers* fresh = new Helpers();
      if (instance().compare_exchange_strong(h, fresh)) {
        h = fresh;
      } else {
        delete fresh;  // another caller won
      }
    }
    return *h;
  }

  // Offers job to `count` helpers (starting threads if the pool has fewer) and returns at once.
  void offer(const std::shared_ptr<Job>& job, int64_t count) {
    if (count <= 0) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      try {
        while (threads_ < count) {
          std::thread([this] { loop(); }).detach();
          ++threads_;
        }
      } catch (const std::system_error&) {  // no more threads to be had: fewer helpers
        count = threads_;
      }
      for (int64_t i = 0; i < count; ++i) queue_.push_back(job);
    }
    if (count == 1) {
      cv_.notify_one();
    } else {
      cv_.notify_all();
    }
  }

 private:
  static std::atomic<Helpers*>& instance() {
    static std::atomic<Helpers*> h{nullptr};
    return h;
  }

  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job->run();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  int64_t threads_ = 0;
};

// Runs the op on the calling thread plus up to `helpers` helper threads; returns the first row
// with a bad slot, or kNoBadSlot.
int64_t linear_rows_parallel(const Problem& p, const Kernels& kern, int64_t n, int64_t helpers) {
  auto job = std::make_shared<Job>();
  job->p = p;
  job->kern = kern;
  job->n = n;
  job->chunk_rows = std::max<int64_t>(1, kChunkMacs / std::max<int64_t>(1, p.k * p.d));
  job->nchunks = (n + job->chunk_rows - 1) / job->chunk_rows;
  Helpers::get().offer(job, std::min(helpers, job->nchunks - 1));
  job->run();
  // Every chunk is claimed; wait for those still running on a helper: about a chunk's time,
  // longer only if that helper was preempted mid-chunk, so yield the core to it after a while.
  for (int spin = 0; job->done.load(std::memory_order_acquire) < job->nchunks; ++spin) {
    if (spin < 1024) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  return job->bad.load(std::memory_order_relaxed);
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

  at::Tensor out = at::empty({n, k}, x.options());  // (N, K)
  if (n == 0) return out;

  const Problem p{x.data_ptr<float>(),    slots.data_ptr<int64_t>(), weight.data_ptr<float>(),
                  bias.data_ptr<float>(), link.data_ptr<int8_t>(),   out.data_ptr<float>(),
                  s,                      k,                         d};
  const Kernels kern = select_kernels(d, k);

  // Threads only pay off once each has kMinMacsPerTask multiply-adds; smaller batches (and calls
  // from inside a parallel region) run inline on the calling thread.
  const int64_t macs = n * std::max<int64_t>(1, k * d);
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), macs / kMinMacsPerTask);
  int64_t first_bad = kNoBadSlot;
  if (s == 0 || k == 0) {  // nothing to compute; the kernels would check no slot (or read one)
    for (int64_t i = n - 1; i >= 0; --i) {
      if (static_cast<uint64_t>(p.slots[i]) >= static_cast<uint64_t>(s)) first_bad = i;
    }
  } else if (threads > 1 && !at::in_parallel_region()) {
    first_bad = linear_rows_parallel(p, kern, n, threads - 1);
  } else {
    first_bad = linear_rows(p, kern, 0, n);
  }
  if (first_bad != kNoBadSlot) {
    TORCH_CHECK(false, "slots[", first_bad, "] = ", p.slots[first_bad],
                " is not a slot of this slab (valid slots: 0 <= slot < ", s, ")");
  }
  return out;
}

}  // namespace mmhost
