// AVX2 + FMA helpers shared by the CPU kernels (x86-64 only, chosen at runtime: only functions
// marked MMHOST_AVX2 are compiled for AVX2, so the extension still loads and runs without it).
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#define MMHOST_AVX2 __attribute__((target("avx2,fma")))

namespace mmhost {

// Whether this CPU runs the AVX2 + FMA paths.
inline bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// Lane r of the result is the sum of the eight lanes of v[r].
MMHOST_AVX2 inline __m256 reduce8(const __m256* v) {
  const __m256 a01 = _mm256_hadd_ps(v[0], v[1]);
  const __m256 a23 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 a45 = _mm256_hadd_ps(v[4], v[5]);
  const __m256 a67 = _mm256_hadd_ps(v[6], v[7]);
  // b0123: [partial sums of v0 v1 v2 v3 over the low 128 bits | the same over the high 128 bits]
  const __m256 b0123 = _mm256_hadd_ps(a01, a23);
  const __m256 b4567 = _mm256_hadd_ps(a45, a67);
  const __m256 lo = _mm256_permute2f128_ps(b0123, b4567, 0x20);
  const __m256 hi = _mm256_permute2f128_ps(b0123, b4567, 0x31);
  return _mm256_add_ps(lo, hi);
}

// Mask of the first n (0..8) lanes, for maskload/maskstore.
MMHOST_AVX2 inline __m256i first_lanes(int64_t n) {
  alignas(32) static const int32_t kMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMask + 8 - n));
}

}  // namespace mmhost
#endif
