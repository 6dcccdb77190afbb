// Few-row products for decoding on CPU: activations x [M, K] (M small) against a weight
// [N, K] that is streamed from memory once. oneDNN's bf16 GEMV and aten's int8 weight kernel
// leave much of the read bandwidth unused on these shapes; these loops keep four weight rows
// in flight and do nothing else. Built on first use with AVX-512 (F, BW, VL, BF16); see
// kernels/__init__.py for when they are used.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kRowsPerCall = 4;   // activation rows one pass over the weight serves
constexpr int64_t kTile = 4;          // weight rows read side by side
constexpr int64_t kGrain = 64;        // weight rows per parallel task, at least
constexpr int kPrefetchBytes = 512;   // how far ahead of the loads each weight row is prefetched

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

// out[m, n] = sum_k x[m, k] * w[n, k] for rows [n0, n1), bf16 in, fp32 sums (vdpbf16ps).
template <int M, int T>
void bf16_tile(const at::BFloat16* x, const at::BFloat16* w, float* out, int64_t K, int64_t N, int64_t n) {
  __m512 acc[M][T];
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) acc[m][t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    __mmask32 mask = tail32(K - k);
    __m512i xs[M];
    for (int m = 0; m < M; ++m) xs[m] = _mm512_maskz_loadu_epi16(mask, x + m * K + k);
    for (int t = 0; t < T; ++t) {
      _mm_prefetch((const char*)(w + (n + t) * K + k) + kPrefetchBytes, _MM_HINT_T0);
      __m512i wv = _mm512_maskz_loadu_epi16(mask, w + (n + t) * K + k);
      for (int m = 0; m < M; ++m) acc[m][t] = _mm512_dpbf16_ps(acc[m][t], (__m512bh)xs[m], (__m512bh)wv);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) out[m * N + n + t] = _mm512_reduce_add_ps(acc[m][t]);
}

// x quantized for VNNI: per block of 64 values, |round(x / scale)| as uint8, the signs as a
// mask and the scale (max |x| / 127). vpdpbusd multiplies uint8 by int8, so the signs move
// onto the weights.
struct QuantizedRow {
  const uint8_t* magnitude;  // [blocks * 64]
  const __mmask64* negative;  // [blocks]
  const float* scale;  // [blocks]
};

// Sums of x * q per weight row; the caller applies the row scale.
template <int M, int T>
void int8_tile(const QuantizedRow* x, const int8_t* q, float* out, int64_t K, int64_t N, int64_t n) {
  __m512 acc[M][T];
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) acc[m][t] = _mm512_setzero_ps();
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t k = 0, block = 0; k < K; k += 64, ++block) {
    __m512i w[T];
    for (int t = 0; t < T; ++t) {
      _mm_prefetch((const char*)(q + (n + t) * K + k) + kPrefetchBytes, _MM_HINT_T0);
      w[t] = _mm512_maskz_loadu_epi8(tail64(K - k), q + (n + t) * K + k);
    }
    for (int m = 0; m < M; ++m) {
      __m512i magnitude = _mm512_loadu_si512(x[m].magnitude + k);
      __mmask64 negative = x[m].negative[block];
      __m512 scale = _mm512_set1_ps(x[m].scale[block]);
      for (int t = 0; t < T; ++t) {
        __m512i signed_w = _mm512_mask_sub_epi8(w[t], negative, zero, w[t]);
        __m512i sums = _mm512_dpbusd_epi32(zero, magnitude, signed_w);
        acc[m][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[m][t]);
      }
    }
  }
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) out[m * N + n + t] = _mm512_reduce_add_ps(acc[m][t]);
}

// Buffers of one x row quantized for int8_tile (blocks past K are zero).
struct QuantizedRowBuffers {
  std::vector<uint8_t> magnitude;
  std::vector<__mmask64> negative;
  std::vector<float> scale;

  QuantizedRowBuffers(const at::BFloat16* x, int64_t K) {
    const int64_t blocks = (K + 63) / 64;
    magnitude.assign(blocks * 64, 0), negative.assign(blocks, 0), scale.assign(blocks, 0.f);
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t k0 = block * 64, k1 = std::min(K, k0 + 64);
      float amax = 0.f;
      for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::abs(static_cast<float>(x[k])));
      if (amax == 0.f) continue;
      scale[block] = amax / 127.f;
      const float inverse = 127.f / amax;
      for (int64_t k = k0; k < k1; ++k) {
        const float v = std::nearbyint(static_cast<float>(x[k]) * inverse);
        magnitude[k] = static_cast<uint8_t>(std::abs(v));
        if (v < 0) negative[block] |= 1ull << (k - k0);
      }
    }
  }
  QuantizedRow view() const { return {magnitude.data(), negative.data(), scale.data()}; }
};

// Rows [n0, n1) in tiles of kTile, the last few one by one.
template <int M, typename Tile>
void rows(Tile tile, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + kTile <= n1; n += kTile) tile(std::integral_constant<int, kTile>{}, n);
  for (; n < n1; ++n) tile(std::integral_constant<int, 1>{}, n);
}

template <int M>
void bf16_pass(const at::BFloat16* x, const at::BFloat16* w, float* out, int64_t K, int64_t N) {
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    rows<M>([&](auto t, int64_t n) { bf16_tile<M, decltype(t)::value>(x, w, out, K, N, n); }, n0, n1);
  });
}

template <int M>
void int8_pass(const QuantizedRow* x, const int8_t* q, float* out, int64_t K, int64_t N) {
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    rows<M>([&](auto t, int64_t n) { int8_tile<M, decltype(t)::value>(x, q, out, K, N, n); }, n0, n1);
  });
}

// Runs `pass<M>` over x in chunks of at most kRowsPerCall rows.
template <typename Pass>
void by_row_chunks(int64_t rows_total, Pass pass) {
  for (int64_t r = 0; r < rows_total; r += kRowsPerCall) {
    switch (std::min(kRowsPerCall, rows_total - r)) {
      case 1: pass(std::integral_constant<int, 1>{}, r); break;
      case 2: pass(std::integral_constant<int, 2>{}, r); break;
      case 3: pass(std::integral_constant<int, 3>{}, r); break;
      default: pass(std::integral_constant<int, 4>{}, r); break;
    }
  }
}

void check_input(const at::Tensor& x, int64_t K) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K && x.is_contiguous(), "x must be contiguous [rows, ", K, "]");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "x must be bfloat16");
}

// x [M, K] bf16, w [N, K] bf16 -> [M, N] bf16
at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && w.scalar_type() == at::kBFloat16, "w must be contiguous bf16 [N, K]");
  const int64_t N = w.size(0), K = w.size(1), M = x.size(0);
  check_input(x, K);
  at::Tensor out = at::empty({M, N}, x.options().dtype(at::kFloat));
  by_row_chunks(M, [&](auto m, int64_t r) {
    bf16_pass<decltype(m)::value>(x.data_ptr<at::BFloat16>() + r * K, w.data_ptr<at::BFloat16>(),
                                  out.data_ptr<float>() + r * N, K, N);
  });
  return out.to(at::kBFloat16);
}

// x [M, K] bf16, q [N, K] int8, scales [N] -> [M, N] bf16: (x @ q.T) * scales
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales) {
  TORCH_CHECK(q.dim() == 2 && q.is_contiguous() && q.scalar_type() == at::kChar, "q must be contiguous int8 [N, K]");
  const int64_t N = q.size(0), K = q.size(1), M = x.size(0);
  check_input(x, K);
  TORCH_CHECK(scales.numel() == N, "scales must have one value per output row");
  std::vector<QuantizedRowBuffers> buffers;
  std::vector<QuantizedRow> rows_q;
  for (int64_t m = 0; m < M; ++m) buffers.emplace_back(x.data_ptr<at::BFloat16>() + m * K, K);
  for (const auto& b : buffers) rows_q.push_back(b.view());
  at::Tensor out = at::empty({M, N}, x.options().dtype(at::kFloat));
  by_row_chunks(M, [&](auto m, int64_t r) {
    int8_pass<decltype(m)::value>(rows_q.data() + r, q.data_ptr<int8_t>(), out.data_ptr<float>() + r * N, K, N);
  });
  return out.mul_(scales.to(at::kFloat)).to(at::kBFloat16);
}

// q [N, K] int8, scales [N] bf16 -> bf16 [N, K]: q * scale rounded once, as int8.dequantize.
at::Tensor dequantize_int8(const at::Tensor& q, const at::Tensor& scales) {
  TORCH_CHECK(q.dim() == 2 && q.is_contiguous() && q.scalar_type() == at::kChar, "q must be contiguous int8 [N, K]");
  const int64_t N = q.size(0), K = q.size(1);
  at::Tensor s = scales.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({N, K}, q.options().dtype(at::kBFloat16));
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = s.data_ptr<float>();
  auto* op = out.data_ptr<at::BFloat16>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      __m512 scale = _mm512_set1_ps(sp[n]);
      for (int64_t k = 0; k < K; k += 16) {
        __mmask16 mask = tail16(K - k);
        __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, qp + n * K + k)));
        __m256bh b = _mm512_cvtneps_pbh(_mm512_mul_ps(v, scale));
        _mm256_mask_storeu_epi16(op + n * K + k, mask, (__m256i)b);
      }
    }
  });
  return out;
}

// aten's CPU int4 packing (uint8 [N, K/2]; in each block of 64 rows, byte [k, j] holds row j in
// its low nibble and row j + 32 in its high one) with scales_and_zeros [K/g, N, 2] -> the weight
// transposed, bf16 [K, N]: (q - 8) * scale + offset in fp32, rounded once. [K, N] makes each
// block's 64 rows of one column contiguous on both sides.
at::Tensor dequantize_int4_transposed(const at::Tensor& packed, const at::Tensor& scales_and_zeros, int64_t group_size) {
  TORCH_CHECK(packed.dim() == 2 && packed.is_contiguous() && packed.scalar_type() == at::kByte, "packed must be contiguous uint8");
  const int64_t N = packed.size(0), K = packed.size(1) * 2;
  TORCH_CHECK(N % 64 == 0 && K % group_size == 0, "int4 weight must be whole 64-row blocks and groups");
  at::Tensor sz = scales_and_zeros.to(at::kFloat).contiguous();  // [K/g, N, 2]
  at::Tensor out = at::empty({K, N}, sz.options().dtype(at::kBFloat16));
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const float* szp = sz.data_ptr<float>();
  auto* op = out.data_ptr<at::BFloat16>();
  at::parallel_for(0, N / 64, 1, [&](int64_t b0, int64_t b1) {
    alignas(64) float scale[64], offset[64];
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t k = 0; k < K; ++k) {
        if (k % group_size == 0) {
          const float* g = szp + ((k / group_size) * N + b * 64) * 2;
          for (int r = 0; r < 64; ++r) scale[r] = g[2 * r], offset[r] = g[2 * r + 1];
        }
        __m256i bytes = _mm256_loadu_si256((const __m256i*)(pp + (b * K + k) * 32));
        __m256i halves[2] = {_mm256_and_si256(bytes, _mm256_set1_epi8(0xF)),
                             _mm256_and_si256(_mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0xF))};
        for (int h = 0; h < 2; ++h) {
          for (int part = 0; part < 2; ++part) {
            __m128i lane = part ? _mm256_extracti128_si256(halves[h], 1) : _mm256_castsi256_si128(halves[h]);
            __m512 v = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lane)), _mm512_set1_ps(8.0f));
            int r = h * 32 + part * 16;
            __m512 w = _mm512_fmadd_ps(v, _mm512_load_ps(scale + r), _mm512_load_ps(offset + r));
            _mm256_storeu_si256((__m256i*)(op + k * N + b * 64 + r), (__m256i)_mm512_cvtneps_pbh(w));
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(qwen_vl_cpu, m) {
  m.def("linear_bf16(Tensor x, Tensor w) -> Tensor", &linear_bf16);
  m.def("linear_int8(Tensor x, Tensor q, Tensor scales) -> Tensor", &linear_int8);
  m.def("dequantize_int8(Tensor q, Tensor scales) -> Tensor", &dequantize_int8);
  m.def("dequantize_int4_transposed(Tensor packed, Tensor scales_and_zeros, int group_size) -> Tensor",
        &dequantize_int4_transposed);
}
