// Small AVX-512 helpers shared by our CPU kernels: bf16 loads and stores through fp32, masks for
// the tails of rows whose length is not a multiple of the vector.
#pragma once

#include <ATen/ATen.h>
#include <immintrin.h>

#include <cstdint>

namespace qwen_vl {

inline __m512 load_bf16x16(const at::BFloat16* p, __mmask16 mask) {
  // 16 bf16 -> 16 fp32: a bf16 is the upper half of its fp32.
  __m256i raw = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

inline __mmask16 tail16(int64_t left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }
inline __mmask64 tail64(int64_t left) { return left >= 64 ? ~0ull : (__mmask64)((1ull << left) - 1); }
inline __m128i extract128(__m512i v, int part) {
  switch (part) {
    case 0: return _mm512_castsi512_si128(v);
    case 1: return _mm512_extracti32x4_epi32(v, 1);
    case 2: return _mm512_extracti32x4_epi32(v, 2);
    default: return _mm512_extracti32x4_epi32(v, 3);
  }
}
inline __mmask32 tail32(int64_t left) { return left >= 32 ? 0xFFFFFFFFu : (__mmask32)((1ull << left) - 1); }

inline void store_bf16x16(at::BFloat16* p, __m512 v, __mmask16 mask) {
  _mm256_mask_storeu_epi16(p, mask, (__m256i)_mm512_cvtneps_pbh(v));
}

}  // namespace qwen_vl
